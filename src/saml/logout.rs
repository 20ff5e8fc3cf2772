//! Single Logout messages (saml-core 3.7, saml-profiles 4.4): `<samlp:LogoutRequest>` and
//! `<samlp:LogoutResponse>`, both directions.
//!
//! Tessera receives LogoutRequests from SPs (a user logged out there) and answers with LogoutResponses;
//! it also sends LogoutRequests to the other SPs of the session and receives their LogoutResponses.
//! Received messages go through the same envelope checks and the same [`Unverified`] -> [`Verified`]
//! step as AuthnRequests ([`crate::saml::envelope`]). Built messages are [`Element`]s with
//! `saml:Issuer` first, ready for `xmldsig::sign::sign_enveloped`, which puts the signature after it.
//! Builders take IDs and times as values: nothing here reads a clock or draws randomness.

use chrono::{DateTime, Utc};

use crate::saml::envelope::{
    self, check_sequence, format_instant, parse_instant, unexpected, EnvelopeError, RequestContext,
    Slot, Unverified, Verified,
};
use crate::saml::status::{Status, StatusCode, StatusError, SubStatusCode};
use crate::saml::xml::{self, ns, Element};

/// saml-core 3.7.3: the user decided to log out.
pub const REASON_USER: &str = "urn:oasis:names:tc:SAML:2.0:logout:user";
/// saml-core 3.7.3: an administrator wished to end the session.
pub const REASON_ADMIN: &str = "urn:oasis:names:tc:SAML:2.0:logout:admin";

/// A LogoutRequest as parsed, not yet trusted.
pub type UnverifiedLogoutRequest = Unverified<LogoutRequest>;
/// A LogoutRequest from an SP whose signature verified (or which may send unsigned ones).
pub type VerifiedLogoutRequest = Verified<LogoutRequest>;
/// A LogoutResponse as parsed, not yet trusted.
pub type UnverifiedLogoutResponse = Unverified<LogoutResponse>;
/// A LogoutResponse from an SP whose signature verified (or which may send unsigned ones).
pub type VerifiedLogoutResponse = Verified<LogoutResponse>;

/// Why a logout message was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    /// A rule common to all protocol messages (XML, version, ID, time, issuer, destination, signature).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// saml-core 3.7.1: the request names the principal by BaseID, NameID or EncryptedID.
    #[error("LogoutRequest names no principal")]
    MissingNameId,
    /// BaseID and EncryptedID are valid (saml-core 3.7.1) but Tessera only issues plain NameIDs, so it
    /// cannot have a session for anything else.
    #[error("LogoutRequest identifies the principal by {0}, which is not supported")]
    UnsupportedIdentifier(String),
    /// The NameID holds a comment or a child element (see [`Element::text`]).
    #[error("NameID: {0}")]
    NameId(#[source] xml::Error),
    /// An empty NameID names nobody.
    #[error("NameID is empty")]
    EmptyNameId,
    /// A SessionIndex with a comment or child element.
    #[error("SessionIndex: {0}")]
    SessionIndex(#[source] xml::Error),
    /// saml-core 3.7.1: NotOnOrAfter is an xs:dateTime.
    #[error("NotOnOrAfter `{0}` is not an xs:dateTime with a time zone")]
    BadNotOnOrAfter(String),
    /// saml-core 3.7.1: the request expired; the recipient may discard it.
    #[error("LogoutRequest expired at {not_on_or_after}, now is {now}")]
    Expired {
        /// The request's NotOnOrAfter.
        not_on_or_after: DateTime<Utc>,
        /// Our clock at the check.
        now: DateTime<Utc>,
    },
    /// `InResponseTo` must be an xs:NCName like the ID it refers to (saml-core 3.2.2).
    #[error("InResponseTo `{0}` is not a valid ID")]
    BadInResponseTo(String),
    /// saml-core 3.2.2: `Status` is required in a response.
    #[error("LogoutResponse has no Status")]
    MissingStatus,
    /// The Status element is malformed.
    #[error(transparent)]
    Status(#[from] StatusError),
}

impl LogoutError {
    /// The status a LogoutResponse to the refused message should carry (saml-core 3.2.2.2), should the
    /// caller be able to answer at all.
    pub fn status(&self) -> Status {
        match self {
            LogoutError::Envelope(e) => e.status(),
            LogoutError::UnsupportedIdentifier(_) => {
                Status::error(StatusCode::Requester, SubStatusCode::RequestUnsupported)
            }
            LogoutError::Expired { .. } => {
                Status::error(StatusCode::Requester, SubStatusCode::RequestDenied)
            }
            _ => Status {
                top: StatusCode::Requester,
                second: None,
                message: None,
            },
        }
    }
}

/// A `<saml:NameID>` (saml-core 2.2.3): who is being logged out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameId {
    /// The identifier itself; must match the one in the session exactly.
    pub value: String,
    /// The NameID format URI; None means unspecified.
    pub format: Option<String>,
    /// The SP (or affiliation) the identifier was issued for, for persistent and transient IDs.
    pub sp_name_qualifier: Option<String>,
    /// The IdP that issued the identifier.
    pub name_qualifier: Option<String>,
}

impl NameId {
    /// `<saml:NameID>`; the `saml` prefix is declared by the enclosing message.
    pub fn to_element(&self) -> Element {
        Element::new("saml", "NameID", ns::SAML)
            .with_opt_attr("NameQualifier", self.name_qualifier.clone())
            .with_opt_attr("SPNameQualifier", self.sp_name_qualifier.clone())
            .with_opt_attr("Format", self.format.clone())
            .with_text(self.value.clone())
    }

    /// Reads a `<saml:NameID>`. The value must be text only: a comment inside would let two parsers
    /// read two different users.
    pub fn from_element(element: &Element) -> Result<NameId, LogoutError> {
        let value = element.trimmed_text().map_err(LogoutError::NameId)?;
        if value.is_empty() {
            return Err(LogoutError::EmptyNameId);
        }
        Ok(NameId {
            value,
            format: element.attr("Format").map(str::to_owned),
            sp_name_qualifier: element.attr("SPNameQualifier").map(str::to_owned),
            name_qualifier: element.attr("NameQualifier").map(str::to_owned),
        })
    }
}

/// A logout request (saml-core 3.7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// The request ID, answered by `InResponseTo`.
    pub id: String,
    /// When it was issued.
    pub issue_instant: DateTime<Utc>,
    /// The sender's entity ID.
    pub issuer: String,
    /// The receiver's SLO endpoint; required when signed (saml-bindings 3.4.5.2, 3.5.5.2).
    pub destination: Option<String>,
    /// The principal to log out.
    pub name_id: NameId,
    /// saml-core 3.7.1: the sessions to end; empty means all of the principal's sessions.
    pub session_indexes: Vec<String>,
    /// saml-core 3.7.1: when the request stops being valid.
    pub not_on_or_after: Option<DateTime<Utc>>,
    /// saml-core 3.7.3: why (user, admin, or another URI).
    pub reason: Option<String>,
}

/// A logout response (saml-core 3.7.2, StatusResponseType).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    /// The response ID.
    pub id: String,
    /// The ID of the LogoutRequest answered; the receiver matches it to a request it sent.
    pub in_response_to: Option<String>,
    /// When it was issued.
    pub issue_instant: DateTime<Utc>,
    /// The sender's entity ID.
    pub issuer: String,
    /// The receiver's SLO endpoint; required when signed (saml-bindings 3.4.5.2, 3.5.5.2).
    pub destination: Option<String>,
    /// Whether logout succeeded (saml-profiles 4.4.4.2: PartialLogout when not everywhere).
    pub status: Status,
}

/// The root element of a message we send, with both prefixes declared and the common attributes
/// (saml-core 3.2.1 / 3.2.2) in schema order.
fn message_root(
    local: &str,
    id: &str,
    issue_instant: DateTime<Utc>,
    destination: Option<&str>,
) -> Element {
    Element::new("samlp", local, ns::SAMLP)
        .declare("samlp", ns::SAMLP)
        .declare("saml", ns::SAML)
        .with_attr("ID", id)
        .with_attr("Version", envelope::SAML_VERSION)
        .with_attr("IssueInstant", format_instant(issue_instant))
        .with_opt_attr("Destination", destination)
}

/// `<saml:Issuer>` without Format, which saml-profiles 4.4.4.1 allows to be omitted (entity is implied).
fn issuer_element(issuer: &str) -> Element {
    Element::new("saml", "Issuer", ns::SAML).with_text(issuer)
}

impl LogoutRequest {
    /// `<samlp:LogoutRequest>`: Issuer, NameID, SessionIndex* (saml-core 3.7.1), unsigned. Sign it with
    /// `sign_enveloped` before sending by POST; send it unsigned by Redirect with a query signature.
    pub fn to_element(&self) -> Element {
        let mut root = message_root(
            "LogoutRequest",
            &self.id,
            self.issue_instant,
            self.destination.as_deref(),
        )
        .with_opt_attr("NotOnOrAfter", self.not_on_or_after.map(format_instant))
        .with_opt_attr("Reason", self.reason.clone())
        .with_child(issuer_element(&self.issuer))
        .with_child(self.name_id.to_element());
        for index in &self.session_indexes {
            root = root.with_child(
                Element::new("samlp", "SessionIndex", ns::SAMLP).with_text(index.clone()),
            );
        }
        root
    }
}

impl LogoutResponse {
    /// `<samlp:LogoutResponse>`: Issuer, Status (saml-core 3.2.2), unsigned. Sign it with `sign_enveloped`
    /// before sending by POST.
    pub fn to_element(&self) -> Element {
        message_root(
            "LogoutResponse",
            &self.id,
            self.issue_instant,
            self.destination.as_deref(),
        )
        .with_opt_attr("InResponseTo", self.in_response_to.clone())
        .with_child(issuer_element(&self.issuer))
        .with_child(self.status.to_element())
    }
}

/// Parses a LogoutRequest received by either binding. `ctx.destinations` are our SLO URLs.
pub fn parse_logout_request(
    xml: &[u8],
    ctx: &RequestContext<'_>,
) -> Result<UnverifiedLogoutRequest, LogoutError> {
    let (root, header) = envelope::parse_message(xml, ctx, "LogoutRequest")?;
    // saml-core 3.7.1: (BaseID | NameID | EncryptedID), SessionIndex*.
    let body: Vec<&Element> = root.elements().skip(header.body_start).collect();
    check_sequence(
        &root,
        &body,
        &[
            Slot {
                namespace: ns::SAML,
                local: "BaseID",
                repeats: false,
            },
            Slot {
                namespace: ns::SAML,
                local: "NameID",
                repeats: false,
            },
            Slot {
                namespace: ns::SAML,
                local: "EncryptedID",
                repeats: false,
            },
            Slot {
                namespace: ns::SAMLP,
                local: "SessionIndex",
                repeats: true,
            },
        ],
    )?;
    let mut identifiers = body
        .iter()
        .filter(|e| e.namespace.as_deref() == Some(ns::SAML));
    let identifier = identifiers.next().ok_or(LogoutError::MissingNameId)?;
    // The three are a choice: one of them, once.
    if let Some(second) = identifiers.next() {
        return Err(unexpected(&root, second).into());
    }
    if !identifier.is(ns::SAML, "NameID") {
        return Err(LogoutError::UnsupportedIdentifier(identifier.local.clone()));
    }
    let name_id = NameId::from_element(identifier)?;
    let session_indexes = root
        .children_named(ns::SAMLP, "SessionIndex")
        .map(|e| e.trimmed_text().map_err(LogoutError::SessionIndex))
        .collect::<Result<Vec<_>, _>>()?;

    let not_on_or_after = match root.attr("NotOnOrAfter") {
        None => None,
        Some(raw) => {
            Some(parse_instant(raw).ok_or_else(|| LogoutError::BadNotOnOrAfter(raw.to_owned()))?)
        }
    };
    if let Some(limit) = not_on_or_after {
        // saml-core 3.7.1: expired requests are discarded; the skew allowance applies as for IssueInstant.
        let expired = limit
            .checked_add_signed(ctx.max_clock_skew)
            .is_none_or(|limit| ctx.now >= limit);
        if expired {
            return Err(LogoutError::Expired {
                not_on_or_after: limit,
                now: ctx.now,
            });
        }
    }

    let request = LogoutRequest {
        id: header.id.clone(),
        issue_instant: header.issue_instant,
        issuer: header.issuer.clone(),
        destination: header.destination.clone(),
        name_id,
        session_indexes,
        not_on_or_after,
        reason: root.attr("Reason").map(str::to_owned),
    };
    Ok(Unverified::new(request, root, header))
}

/// Parses a LogoutResponse received by either binding. `ctx.destinations` are our SLO URLs. The caller
/// must match `in_response_to` against the LogoutRequests it sent.
pub fn parse_logout_response(
    xml: &[u8],
    ctx: &RequestContext<'_>,
) -> Result<UnverifiedLogoutResponse, LogoutError> {
    let (root, header) = envelope::parse_message(xml, ctx, "LogoutResponse")?;
    let in_response_to = root.attr("InResponseTo").map(str::to_owned);
    if let Some(irt) = &in_response_to {
        if envelope::check_id(irt).is_err() {
            return Err(LogoutError::BadInResponseTo(irt.clone()));
        }
    }
    // saml-core 3.2.2: after the common header comes exactly one Status.
    let body: Vec<&Element> = root.elements().skip(header.body_start).collect();
    check_sequence(
        &root,
        &body,
        &[Slot {
            namespace: ns::SAMLP,
            local: "Status",
            repeats: false,
        }],
    )?;
    let status = Status::from_element(body.first().ok_or(LogoutError::MissingStatus)?)?;

    let response = LogoutResponse {
        id: header.id.clone(),
        in_response_to,
        issue_instant: header.issue_instant,
        issuer: header.issuer.clone(),
        destination: header.destination.clone(),
        status,
    };
    Ok(Unverified::new(response, root, header))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use chrono::{Duration, TimeZone};

    const SLO: &str = "https://idp.example.org/slo";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap()
    }

    fn ctx(destinations: &[String]) -> RequestContext<'_> {
        RequestContext {
            now: now(),
            max_clock_skew: Duration::seconds(60),
            max_age: Duration::minutes(5),
            destinations,
            limits: xml::Limits::default(),
        }
    }

    fn sample_request() -> LogoutRequest {
        LogoutRequest {
            id: envelope::new_id([7; 20]),
            issue_instant: now() - Duration::milliseconds(1500),
            issuer: "https://idp.example.org".into(),
            destination: Some(SLO.into()),
            name_id: NameId {
                value: "alice@example.org".into(),
                format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
                sp_name_qualifier: Some("https://sp.example.com".into()),
                name_qualifier: Some("https://idp.example.org".into()),
            },
            session_indexes: vec!["_s1".into(), "_s2".into()],
            not_on_or_after: Some(now() + Duration::minutes(5)),
            reason: Some(REASON_USER.into()),
        }
    }

    #[test]
    fn request_round_trips() {
        let request = sample_request();
        let element = request.to_element();
        // saml:Issuer first, so sign_enveloped can put the Signature right after it.
        assert!(element.elements().next().unwrap().is(ns::SAML, "Issuer"));
        let xml = element.to_xml();
        assert!(xml.starts_with(r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_0707"#));
        assert!(xml.contains(r#"IssueInstant="2024-03-01T11:59:58.500Z""#));
        let parsed = parse_logout_request(xml.as_bytes(), &ctx(&[SLO.to_owned()])).unwrap();
        assert_eq!(parsed.issuer(), "https://idp.example.org");
        assert_eq!(
            parsed.accept_unsigned(false).unwrap().into_message(),
            request
        );
    }

    #[test]
    fn response_round_trips() {
        let response = LogoutResponse {
            id: "_resp".into(),
            in_response_to: Some("_req".into()),
            issue_instant: now(),
            issuer: "https://sp.example.com".into(),
            destination: None,
            status: Status::error(StatusCode::Success, SubStatusCode::PartialLogout)
                .with_message("one SP did not answer"),
        };
        let xml = response.to_element().to_xml();
        let parsed = parse_logout_response(xml.as_bytes(), &ctx(&[])).unwrap();
        assert_eq!(
            parsed.accept_unsigned(false).unwrap().into_message(),
            response
        );
    }

    #[test]
    fn refuses_bad_requests() {
        let slo = [SLO.to_owned()];
        let parse = |r: &LogoutRequest| {
            parse_logout_request(r.to_element().to_xml().as_bytes(), &ctx(&slo))
        };

        let mut expired = sample_request();
        expired.not_on_or_after = Some(now() - Duration::seconds(61));
        assert!(matches!(parse(&expired), Err(LogoutError::Expired { .. })));
        expired.not_on_or_after = Some(now() - Duration::seconds(59));
        assert!(parse(&expired).is_ok());

        let mut elsewhere = sample_request();
        elsewhere.destination = Some("https://idp.example.org/sso".into());
        assert!(matches!(
            parse(&elsewhere),
            Err(LogoutError::Envelope(EnvelopeError::WrongDestination(_)))
        ));

        let mut old = sample_request();
        old.issue_instant = now() - Duration::minutes(7);
        assert!(matches!(
            parse(&old),
            Err(LogoutError::Envelope(
                EnvelopeError::IssueInstantTooOld { .. }
            ))
        ));

        let mut empty = sample_request();
        empty.name_id.value = String::new();
        assert!(matches!(parse(&empty), Err(LogoutError::EmptyNameId)));

        let xml = sample_request().to_element().to_xml();
        let commented = xml.replace("alice@example.org", "alice<!---->@example.org");
        assert!(matches!(
            parse_logout_request(commented.as_bytes(), &ctx(&slo)),
            Err(LogoutError::NameId(xml::Error::MixedContent(_)))
        ));
        let no_name = xml.replace(
            r#"<saml:NameID NameQualifier="https://idp.example.org" SPNameQualifier="https://sp.example.com" Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">alice@example.org</saml:NameID>"#,
            "",
        );
        assert_ne!(no_name, xml);
        assert!(matches!(
            parse_logout_request(no_name.as_bytes(), &ctx(&slo)),
            Err(LogoutError::MissingNameId)
        ));
        let encrypted = no_name.replace(
            "<samlp:SessionIndex>_s1",
            "<saml:EncryptedID/><samlp:SessionIndex>_s1",
        );
        assert!(matches!(
            parse_logout_request(encrypted.as_bytes(), &ctx(&slo)),
            Err(LogoutError::UnsupportedIdentifier(name)) if name == "EncryptedID"
        ));
        let two = xml.replace(
            "<samlp:SessionIndex>_s1",
            "<saml:NameID>bob</saml:NameID><samlp:SessionIndex>_s1",
        );
        assert!(matches!(
            parse_logout_request(two.as_bytes(), &ctx(&slo)),
            Err(LogoutError::Envelope(
                EnvelopeError::UnexpectedElement { .. }
            ))
        ));
        let version = xml.replace(r#"Version="2.0""#, r#"Version="3.0""#);
        assert!(matches!(
            parse_logout_request(version.as_bytes(), &ctx(&slo)),
            Err(LogoutError::Envelope(EnvelopeError::VersionMismatch(_)))
        ));
        assert_eq!(
            LogoutError::UnsupportedIdentifier("EncryptedID".into())
                .status()
                .second,
            Some(SubStatusCode::RequestUnsupported)
        );
        let as_response = parse_logout_response(xml.as_bytes(), &ctx(&slo));
        assert!(matches!(
            as_response,
            Err(LogoutError::Envelope(EnvelopeError::WrongRoot { .. }))
        ));
    }

    #[test]
    fn refuses_bad_responses() {
        let response = LogoutResponse {
            id: "_resp".into(),
            in_response_to: Some("_req".into()),
            issue_instant: now(),
            issuer: "https://sp.example.com".into(),
            destination: None,
            status: Status::success(),
        };
        let xml = response.to_element().to_xml();
        let no_status = xml.replace(
            r#"<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>"#,
            "",
        );
        assert_ne!(no_status, xml);
        assert!(matches!(
            parse_logout_response(no_status.as_bytes(), &ctx(&[])),
            Err(LogoutError::MissingStatus)
        ));
        let bad_code = xml.replace("status:Success", "status:NoPassive");
        assert!(matches!(
            parse_logout_response(bad_code.as_bytes(), &ctx(&[])),
            Err(LogoutError::Status(StatusError::NotTopLevel(_)))
        ));
        let bad_irt = xml.replace(r#"InResponseTo="_req""#, r#"InResponseTo="1 2""#);
        assert!(matches!(
            parse_logout_response(bad_irt.as_bytes(), &ctx(&[])),
            Err(LogoutError::BadInResponseTo(_))
        ));
        let no_issuer = xml.replace("<saml:Issuer>https://sp.example.com</saml:Issuer>", "");
        assert!(matches!(
            parse_logout_response(no_issuer.as_bytes(), &ctx(&[])),
            Err(LogoutError::Envelope(EnvelopeError::MissingIssuer))
        ));
    }
}
