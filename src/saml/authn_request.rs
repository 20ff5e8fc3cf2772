//! `<samlp:AuthnRequest>`, the message with which an SP asks Tessera to authenticate someone
//! (saml-core 3.4.1), as received over HTTP-Redirect (saml-bindings 3.4) or HTTP-POST (saml-bindings 3.5).
//!
//! Parsing is strict and returns an [`UnverifiedAuthnRequest`]: the common checks (version, ID, time
//! window, issuer, destination, duplicate IDs) are in [`crate::saml::envelope`], the AuthnRequest-specific
//! ones here. Nothing in the request may be acted upon before it becomes a [`VerifiedAuthnRequest`].
//!
//! What the request asks for is not validated against the SP's metadata here (that needs the directory):
//! the caller must still check that `acs_url` / `acs_index` name an endpoint registered for the issuer
//! (saml-profiles 4.1.4.1) and remember `id` to refuse replays.

use chrono::{DateTime, Utc};

use crate::saml::envelope::{
    self, check_sequence, unexpected, EnvelopeError, RequestContext, Slot, Unverified, Verified,
};
use crate::saml::status::{Status, StatusCode, SubStatusCode};
use crate::saml::xml::{self, ns, Element};

/// An AuthnRequest as parsed, not yet trusted.
pub type UnverifiedAuthnRequest = Unverified<AuthnRequest>;

/// An AuthnRequest whose signature verified (or whose SP may send unsigned requests).
pub type VerifiedAuthnRequest = Verified<AuthnRequest>;

/// Why an AuthnRequest was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A rule common to all protocol messages (XML, version, ID, time, issuer, destination, signature).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// saml-core 3.4.1: `AssertionConsumerServiceIndex` is mutually exclusive with
    /// `AssertionConsumerServiceURL`.
    #[error("both AssertionConsumerServiceURL and AssertionConsumerServiceIndex present")]
    AcsUrlAndIndex,
    /// saml-core 3.4.1: `AssertionConsumerServiceIndex` is mutually exclusive with `ProtocolBinding`.
    #[error("both ProtocolBinding and AssertionConsumerServiceIndex present")]
    BindingAndIndex,
    /// An index attribute that is not an xs:unsignedShort (saml-core 3.4.1).
    #[error("{attribute} `{value}` is not an unsignedShort")]
    BadIndex {
        /// The attribute's name.
        attribute: &'static str,
        /// The value received.
        value: String,
    },
    /// A flag that is not an xs:boolean (`true`, `false`, `1`, `0`).
    #[error("{attribute} `{value}` is not a boolean")]
    BadBoolean {
        /// The attribute's name.
        attribute: &'static str,
        /// The value received.
        value: String,
    },
    /// saml-core 3.3.2.2.1: Comparison is one of exact, minimum, maximum, better.
    #[error("RequestedAuthnContext Comparison `{0}` is not exact, minimum, maximum or better")]
    BadComparison(String),
    /// saml-core 3.4.1.1: a `<Subject>` obliges the IdP to authenticate exactly that subject; Tessera does
    /// not support this, and ignoring it would issue an assertion about someone else.
    #[error("AuthnRequest with a Subject is not supported")]
    SubjectUnsupported,
    /// `AuthnContextDeclRef` requests (saml-core 3.3.2.2.1) name declarations Tessera does not publish.
    #[error("RequestedAuthnContext by AuthnContextDeclRef is not supported")]
    DeclRefUnsupported,
    /// saml-core 3.3.2.2.1: RequestedAuthnContext holds at least one reference.
    #[error("RequestedAuthnContext without AuthnContextClassRef")]
    EmptyRequestedAuthnContext,
    /// An `AuthnContextClassRef` with a comment or child element, or empty.
    #[error("bad AuthnContextClassRef: {0}")]
    BadClassRef(#[source] xml::Error),
}

impl RequestError {
    /// The status an answer to the refused request should carry (saml-core 3.2.2.2).
    pub fn status(&self) -> Status {
        match self {
            RequestError::Envelope(e) => e.status(),
            RequestError::SubjectUnsupported => {
                Status::error(StatusCode::Requester, SubStatusCode::RequestUnsupported)
            }
            RequestError::DeclRefUnsupported => {
                Status::error(StatusCode::Requester, SubStatusCode::NoAuthnContext)
            }
            _ => Status {
                top: StatusCode::Requester,
                second: None,
                message: None,
            },
        }
    }
}

/// An authentication request (saml-core 3.4.1), reduced to what Tessera acts upon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnRequest {
    /// The request ID: the `InResponseTo` of our answer, and the key for replay detection.
    pub id: String,
    /// Always "2.0" (anything else is refused); kept so logs show what was received.
    pub version: String,
    /// When the SP issued it; already inside the acceptance window.
    pub issue_instant: DateTime<Utc>,
    /// The SP's entity ID: which metadata (keys, endpoints, policy) applies.
    pub issuer: String,
    /// Where the SP sent it; one of our SSO URLs when present.
    pub destination: Option<String>,
    /// Where the SP wants the response; must be checked against its metadata before use.
    pub acs_url: Option<String>,
    /// Which of the SP's metadata endpoints wants the response, as an alternative to `acs_url`.
    pub acs_index: Option<u16>,
    /// The binding the SP wants the response by (normally HTTP-POST).
    pub protocol_binding: Option<String>,
    /// Which of the SP's AttributeConsumingService entries to honour (saml-core 3.4.1).
    pub attribute_consuming_service_index: Option<u16>,
    /// A human-readable SP name, for consent and error pages only (saml-core 3.2.1 via 3.4.1).
    pub provider_name: Option<String>,
    /// What kind of NameID the SP wants.
    pub name_id_policy: Option<NameIdPolicy>,
    /// saml-core 3.4.1: authenticate afresh even with a valid session.
    pub force_authn: bool,
    /// saml-core 3.4.1: do not interact with the user; answer NoPassive if that is impossible.
    pub is_passive: bool,
    /// Which authentication strength the SP asks for.
    pub requested_authn_context: Option<RequestedAuthnContext>,
}

/// `<samlp:NameIDPolicy>` (saml-core 3.4.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameIdPolicy {
    /// The NameID format wanted; None means "unspecified", our choice.
    pub format: Option<String>,
    /// Whether we may create a new identifier for the user (defaults to false, saml-core 3.4.1.1).
    pub allow_create: bool,
    /// The namespace in which the identifier should be returned (affiliations).
    pub sp_name_qualifier: Option<String>,
}

/// How the requested contexts are compared with ours (saml-core 3.3.2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Comparison {
    /// One of the listed classes exactly; the default when absent.
    #[default]
    Exact,
    /// At least as strong as one of them.
    Minimum,
    /// At most as strong as one of them, and as strong as possible.
    Maximum,
    /// Stronger than any of them.
    Better,
}

impl Comparison {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Exact => "exact",
            Comparison::Minimum => "minimum",
            Comparison::Maximum => "maximum",
            Comparison::Better => "better",
        }
    }
}

/// `<samlp:RequestedAuthnContext>` (saml-core 3.3.2.2.1), by class reference only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedAuthnContext {
    /// How to compare.
    pub comparison: Comparison,
    /// The `AuthnContextClassRef` URIs, in the SP's order of preference; never empty.
    pub class_refs: Vec<String>,
}

/// Parses an AuthnRequest received by either binding (the XML as decoded by `binding::redirect` or
/// `binding::post`). The result is untrusted until verified with the binding's method.
pub fn parse_authn_request(
    xml: &[u8],
    ctx: &RequestContext<'_>,
) -> Result<UnverifiedAuthnRequest, RequestError> {
    let (root, header) = envelope::parse_message(xml, ctx, "AuthnRequest")?;

    let acs_url = root.attr("AssertionConsumerServiceURL").map(str::to_owned);
    let acs_index = index_attr(&root, "AssertionConsumerServiceIndex")?;
    let protocol_binding = root.attr("ProtocolBinding").map(str::to_owned);
    // saml-core 3.4.1: the index excludes both the URL and the binding.
    if acs_index.is_some() && acs_url.is_some() {
        return Err(RequestError::AcsUrlAndIndex);
    }
    if acs_index.is_some() && protocol_binding.is_some() {
        return Err(RequestError::BindingAndIndex);
    }

    // saml-core 3.4.1: Subject?, NameIDPolicy?, Conditions?, RequestedAuthnContext?, Scoping?.
    let body: Vec<&Element> = root.elements().skip(header.body_start).collect();
    check_sequence(
        &root,
        &body,
        &[
            Slot {
                namespace: ns::SAML,
                local: "Subject",
                repeats: false,
            },
            Slot {
                namespace: ns::SAMLP,
                local: "NameIDPolicy",
                repeats: false,
            },
            Slot {
                namespace: ns::SAML,
                local: "Conditions",
                repeats: false,
            },
            Slot {
                namespace: ns::SAMLP,
                local: "RequestedAuthnContext",
                repeats: false,
            },
            Slot {
                namespace: ns::SAMLP,
                local: "Scoping",
                repeats: false,
            },
        ],
    )?;
    if root.child(ns::SAML, "Subject").is_some() {
        return Err(RequestError::SubjectUnsupported);
    }
    // Conditions (the SP's wishes on validity, which saml-core 3.4.1 lets the IdP modify) and Scoping
    // (proxying, which Tessera does not do, saml-core 3.4.1.2) are accepted and not acted upon.
    let name_id_policy = root
        .child(ns::SAMLP, "NameIDPolicy")
        .map(name_id_policy)
        .transpose()?;
    let requested_authn_context = root
        .child(ns::SAMLP, "RequestedAuthnContext")
        .map(requested_authn_context)
        .transpose()?;

    let request = AuthnRequest {
        id: header.id.clone(),
        version: envelope::SAML_VERSION.to_owned(),
        issue_instant: header.issue_instant,
        issuer: header.issuer.clone(),
        destination: header.destination.clone(),
        acs_url,
        acs_index,
        protocol_binding,
        attribute_consuming_service_index: index_attr(&root, "AttributeConsumingServiceIndex")?,
        provider_name: root.attr("ProviderName").map(str::to_owned),
        name_id_policy,
        force_authn: bool_attr(&root, "ForceAuthn")?,
        is_passive: bool_attr(&root, "IsPassive")?,
        requested_authn_context,
    };
    Ok(Unverified::new(request, root, header))
}

/// XML Schema 2 3.2.2: xs:boolean is `true`, `false`, `1` or `0`, whitespace collapsed. Absent is false
/// for every flag Tessera reads (saml-core 3.4.1, 3.4.1.1).
fn bool_attr(element: &Element, attribute: &'static str) -> Result<bool, RequestError> {
    match element
        .attr(attribute)
        .map(|v| v.trim_matches([' ', '\t', '\n', '\r']))
    {
        None => Ok(false),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(RequestError::BadBoolean {
            attribute,
            value: other.to_owned(),
        }),
    }
}

/// XML Schema 2 3.3.23: xs:unsignedShort, decimal digits only.
fn index_attr(element: &Element, attribute: &'static str) -> Result<Option<u16>, RequestError> {
    let Some(raw) = element.attr(attribute) else {
        return Ok(None);
    };
    let digits = raw.trim_matches([' ', '\t', '\n', '\r']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RequestError::BadIndex {
            attribute,
            value: raw.to_owned(),
        });
    }
    digits
        .parse::<u16>()
        .map(Some)
        .map_err(|_| RequestError::BadIndex {
            attribute,
            value: raw.to_owned(),
        })
}

/// saml-core 3.4.1.1: attributes only, no content.
fn name_id_policy(element: &Element) -> Result<NameIdPolicy, RequestError> {
    if let Some(child) = element.elements().next() {
        return Err(unexpected(element, child).into());
    }
    Ok(NameIdPolicy {
        format: element.attr("Format").map(str::to_owned),
        allow_create: bool_attr(element, "AllowCreate")?,
        sp_name_qualifier: element.attr("SPNameQualifier").map(str::to_owned),
    })
}

/// saml-core 3.3.2.2.1: `AuthnContextClassRef+` or `AuthnContextDeclRef+`, and a Comparison.
fn requested_authn_context(element: &Element) -> Result<RequestedAuthnContext, RequestError> {
    let comparison = match element.attr("Comparison") {
        None | Some("exact") => Comparison::Exact,
        Some("minimum") => Comparison::Minimum,
        Some("maximum") => Comparison::Maximum,
        Some("better") => Comparison::Better,
        Some(other) => return Err(RequestError::BadComparison(other.to_owned())),
    };
    let mut class_refs = Vec::new();
    for child in element.elements() {
        if child.is(ns::SAML, "AuthnContextDeclRef") {
            return Err(RequestError::DeclRefUnsupported);
        }
        if !child.is(ns::SAML, "AuthnContextClassRef") {
            return Err(unexpected(element, child).into());
        }
        let class_ref = child.trimmed_text().map_err(RequestError::BadClassRef)?;
        if class_ref.is_empty() {
            return Err(RequestError::EmptyRequestedAuthnContext);
        }
        class_refs.push(class_ref);
    }
    if class_refs.is_empty() {
        return Err(RequestError::EmptyRequestedAuthnContext);
    }
    Ok(RequestedAuthnContext {
        comparison,
        class_refs,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use chrono::{Duration, TimeZone};

    const SSO: &str = "https://idp.example.org/sso";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap()
    }

    fn parse_with(
        xml: &str,
        destinations: &[String],
    ) -> Result<UnverifiedAuthnRequest, RequestError> {
        let ctx = RequestContext {
            now: now(),
            max_clock_skew: Duration::seconds(60),
            max_age: Duration::minutes(5),
            destinations,
            limits: xml::Limits::default(),
        };
        parse_authn_request(xml.as_bytes(), &ctx)
    }

    fn parse(xml: &str) -> Result<UnverifiedAuthnRequest, RequestError> {
        parse_with(xml, &[SSO.to_owned()])
    }

    /// A request with `attrs` on the root and `body` after the Issuer.
    fn request(attrs: &str, body: &str) -> String {
        format!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" {attrs}><saml:Issuer>https://sp.example.com</saml:Issuer>{body}</samlp:AuthnRequest>"#
        )
    }

    const BASE: &str = r#"ID="_r1" Version="2.0" IssueInstant="2024-03-01T11:59:30Z""#;

    fn envelope_err(result: Result<UnverifiedAuthnRequest, RequestError>) -> EnvelopeError {
        match result {
            Err(RequestError::Envelope(e)) => e,
            other => panic!("expected an envelope error, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_field() {
        let xml = request(
            &format!(
                r#"{BASE} Destination="{SSO}" AssertionConsumerServiceURL="https://sp.example.com/acs" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" ForceAuthn="1" IsPassive="false" ProviderName="Example &amp; Co" AttributeConsumingServiceIndex="2""#
            ),
            r#"<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true" SPNameQualifier="urn:aff"/><saml:Conditions/><samlp:RequestedAuthnContext Comparison="minimum"><saml:AuthnContextClassRef> urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport </saml:AuthnContextClassRef><saml:AuthnContextClassRef>urn:x:mfa</saml:AuthnContextClassRef></samlp:RequestedAuthnContext><samlp:Scoping/>"#,
        );
        let unverified = parse(&xml).unwrap();
        assert_eq!(unverified.issuer(), "https://sp.example.com");
        assert_eq!(unverified.id(), "_r1");
        let request = unverified.accept_unsigned(false).unwrap().into_message();
        assert_eq!(
            request,
            AuthnRequest {
                id: "_r1".into(),
                version: "2.0".into(),
                issue_instant: now() - Duration::seconds(30),
                issuer: "https://sp.example.com".into(),
                destination: Some(SSO.into()),
                acs_url: Some("https://sp.example.com/acs".into()),
                acs_index: None,
                protocol_binding: Some("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST".into()),
                attribute_consuming_service_index: Some(2),
                provider_name: Some("Example & Co".into()),
                name_id_policy: Some(NameIdPolicy {
                    format: Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into()),
                    allow_create: true,
                    sp_name_qualifier: Some("urn:aff".into()),
                }),
                force_authn: true,
                is_passive: false,
                requested_authn_context: Some(RequestedAuthnContext {
                    comparison: Comparison::Minimum,
                    class_refs: vec![
                        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport".into(),
                        "urn:x:mfa".into()
                    ],
                }),
            }
        );
    }

    #[test]
    fn defaults_when_absent() {
        let request = parse(&request(BASE, "<samlp:RequestedAuthnContext><saml:AuthnContextClassRef>urn:c</saml:AuthnContextClassRef></samlp:RequestedAuthnContext>"))
            .unwrap()
            .accept_unsigned(false)
            .unwrap();
        assert!(!request.force_authn && !request.is_passive);
        assert_eq!(
            request.requested_authn_context.as_ref().unwrap().comparison,
            Comparison::Exact
        );
        assert!(request.name_id_policy.is_none() && request.destination.is_none());
        assert!(!request.trust().is_signed());
    }

    #[test]
    fn refuses_version_id_and_time_problems() {
        let v = request(
            r#"ID="_r1" Version="1.1" IssueInstant="2024-03-01T11:59:30Z""#,
            "",
        );
        assert!(
            matches!(envelope_err(parse(&v)), EnvelopeError::VersionMismatch(found) if found == "1.1")
        );
        let v = request(r#"ID="_r1" IssueInstant="2024-03-01T11:59:30Z""#, "");
        assert!(matches!(
            envelope_err(parse(&v)),
            EnvelopeError::MissingVersion
        ));
        let v = request(r#"Version="2.0" IssueInstant="2024-03-01T11:59:30Z""#, "");
        assert!(matches!(envelope_err(parse(&v)), EnvelopeError::MissingId));
        let v = request(
            r#"ID="1abc" Version="2.0" IssueInstant="2024-03-01T11:59:30Z""#,
            "",
        );
        assert!(matches!(envelope_err(parse(&v)), EnvelopeError::InvalidId(id) if id == "1abc"));
        let long = format!(
            r#"ID="_{}" Version="2.0" IssueInstant="2024-03-01T11:59:30Z""#,
            "a".repeat(300)
        );
        assert!(matches!(
            envelope_err(parse(&request(&long, ""))),
            EnvelopeError::IdTooLong(301)
        ));
        let v = request(r#"ID="_r1" Version="2.0""#, "");
        assert!(matches!(
            envelope_err(parse(&v)),
            EnvelopeError::MissingIssueInstant
        ));
        let v = request(r#"ID="_r1" Version="2.0" IssueInstant="1 March 2024""#, "");
        assert!(matches!(
            envelope_err(parse(&v)),
            EnvelopeError::BadIssueInstant(_)
        ));
        // Window: [now - 5min - 60s, now + 60s].
        let v = request(
            r#"ID="_r1" Version="2.0" IssueInstant="2024-03-01T11:53:59Z""#,
            "",
        );
        assert!(matches!(
            envelope_err(parse(&v)),
            EnvelopeError::IssueInstantTooOld { .. }
        ));
        let v = request(
            r#"ID="_r1" Version="2.0" IssueInstant="2024-03-01T11:54:00Z""#,
            "",
        );
        assert!(parse(&v).is_ok());
        let v = request(
            r#"ID="_r1" Version="2.0" IssueInstant="2024-03-01T12:01:01Z""#,
            "",
        );
        assert!(matches!(
            envelope_err(parse(&v)),
            EnvelopeError::IssueInstantInFuture { .. }
        ));
        let v = request(
            r#"ID="_r1" Version="2.0" IssueInstant="2024-03-01T12:01:00Z""#,
            "",
        );
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn refuses_issuer_problems() {
        let no_issuer = format!(
            r#"<samlp:AuthnRequest xmlns:samlp="{}" {BASE}/>"#,
            ns::SAMLP
        );
        assert!(matches!(
            envelope_err(parse(&no_issuer)),
            EnvelopeError::MissingIssuer
        ));
        let commented = request(BASE, "").replace(
            "<saml:Issuer>https://sp.example.com</saml:Issuer>",
            "<saml:Issuer>https://sp.example.com<!-- x -->.evil</saml:Issuer>",
        );
        assert!(matches!(
            envelope_err(parse(&commented)),
            EnvelopeError::Issuer(xml::Error::MixedContent(name)) if name == "Issuer"
        ));
        let nested = request(BASE, "").replace("https://sp.example.com", "<b>x</b>");
        assert!(matches!(
            envelope_err(parse(&nested)),
            EnvelopeError::Issuer(xml::Error::MixedContent(_))
        ));
        let empty = request(BASE, "").replace("https://sp.example.com", " ");
        assert!(matches!(
            envelope_err(parse(&empty)),
            EnvelopeError::EmptyIssuer
        ));
        let format = request(BASE, "").replace(
            "<saml:Issuer>",
            r#"<saml:Issuer Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">"#,
        );
        assert!(matches!(
            envelope_err(parse(&format)),
            EnvelopeError::IssuerFormat(_)
        ));
        let twice = request(BASE, "<saml:Issuer>https://other.example.com</saml:Issuer>");
        assert!(matches!(
            envelope_err(parse(&twice)),
            EnvelopeError::UnexpectedElement { element, .. } if element == "Issuer"
        ));
    }

    #[test]
    fn refuses_wrong_destination_and_root() {
        let wrong = request(
            &format!(r#"{BASE} Destination="https://evil.example/sso""#),
            "",
        );
        assert!(
            matches!(envelope_err(parse(&wrong)), EnvelopeError::WrongDestination(d) if d == "https://evil.example/sso")
        );
        // Exact comparison: a trailing slash is another URL.
        let slash = request(&format!(r#"{BASE} Destination="{SSO}/""#), "");
        assert!(matches!(
            envelope_err(parse(&slash)),
            EnvelopeError::WrongDestination(_)
        ));
        let logout = request(BASE, "").replace("AuthnRequest", "LogoutRequest");
        assert!(matches!(
            envelope_err(parse(&logout)),
            EnvelopeError::WrongRoot {
                expected: "AuthnRequest",
                ..
            }
        ));
        let no_ns = r#"<AuthnRequest ID="_r1" Version="2.0" IssueInstant="2024-03-01T11:59:30Z"/>"#;
        assert!(matches!(
            envelope_err(parse(no_ns)),
            EnvelopeError::WrongRoot { .. }
        ));
    }

    #[test]
    fn refuses_acs_conflicts() {
        let both = request(
            &format!(
                r#"{BASE} AssertionConsumerServiceURL="https://sp.example.com/acs" AssertionConsumerServiceIndex="1""#
            ),
            "",
        );
        assert!(matches!(parse(&both), Err(RequestError::AcsUrlAndIndex)));
        let binding = request(
            &format!(
                r#"{BASE} ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" AssertionConsumerServiceIndex="1""#
            ),
            "",
        );
        assert!(matches!(
            parse(&binding),
            Err(RequestError::BindingAndIndex)
        ));
        let index = request(
            &format!(r#"{BASE} AssertionConsumerServiceIndex="65535""#),
            "",
        );
        assert_eq!(
            parse(&index)
                .unwrap()
                .accept_unsigned(false)
                .unwrap()
                .acs_index,
            Some(65535)
        );
        for bad in ["65536", "-1", "", "1e2", "+1"] {
            let xml = request(
                &format!(r#"{BASE} AssertionConsumerServiceIndex="{bad}""#),
                "",
            );
            assert!(
                matches!(parse(&xml), Err(RequestError::BadIndex { .. })),
                "{bad}"
            );
        }
        let flag = request(&format!(r#"{BASE} ForceAuthn="yes""#), "");
        assert!(matches!(
            parse(&flag),
            Err(RequestError::BadBoolean {
                attribute: "ForceAuthn",
                ..
            })
        ));
    }

    #[test]
    fn refuses_duplicate_ids() {
        let dup = request(BASE, r#"<samlp:Extensions/><saml:Conditions ID="_r1"/>"#);
        assert!(matches!(envelope_err(parse(&dup)), EnvelopeError::DuplicateId(id) if id == "_r1"));
        let dup = request(
            BASE,
            r#"<samlp:Scoping><samlp:IDPList ID="_x"><a ID="_x"/></samlp:IDPList></samlp:Scoping>"#,
        );
        assert!(matches!(envelope_err(parse(&dup)), EnvelopeError::DuplicateId(id) if id == "_x"));
    }

    #[test]
    fn refuses_schema_violations_in_body() {
        let order = request(
            BASE,
            r#"<samlp:RequestedAuthnContext><saml:AuthnContextClassRef>urn:c</saml:AuthnContextClassRef></samlp:RequestedAuthnContext><samlp:NameIDPolicy/>"#,
        );
        assert!(
            matches!(envelope_err(parse(&order)), EnvelopeError::UnexpectedElement { element, .. } if element == "NameIDPolicy")
        );
        let twice = request(BASE, "<samlp:NameIDPolicy/><samlp:NameIDPolicy/>");
        assert!(matches!(
            envelope_err(parse(&twice)),
            EnvelopeError::UnexpectedElement { .. }
        ));
        let foreign = request(BASE, r#"<x:Evil xmlns:x="urn:x"/>"#);
        assert!(
            matches!(envelope_err(parse(&foreign)), EnvelopeError::UnexpectedElement { element, .. } if element == "Evil")
        );
        let subject = request(BASE, "<saml:Subject/>");
        assert!(matches!(
            parse(&subject),
            Err(RequestError::SubjectUnsupported)
        ));
        let decl = request(BASE, "<samlp:RequestedAuthnContext><saml:AuthnContextDeclRef>urn:d</saml:AuthnContextDeclRef></samlp:RequestedAuthnContext>");
        assert!(matches!(
            parse(&decl),
            Err(RequestError::DeclRefUnsupported)
        ));
        let empty = request(BASE, "<samlp:RequestedAuthnContext/>");
        assert!(matches!(
            parse(&empty),
            Err(RequestError::EmptyRequestedAuthnContext)
        ));
        let comparison = request(
            BASE,
            r#"<samlp:RequestedAuthnContext Comparison="Exact"><saml:AuthnContextClassRef>urn:c</saml:AuthnContextClassRef></samlp:RequestedAuthnContext>"#,
        );
        assert!(matches!(parse(&comparison), Err(RequestError::BadComparison(c)) if c == "Exact"));
        let class_comment = request(BASE, "<samlp:RequestedAuthnContext><saml:AuthnContextClassRef>urn:<!---->c</saml:AuthnContextClassRef></samlp:RequestedAuthnContext>");
        assert!(matches!(
            parse(&class_comment),
            Err(RequestError::BadClassRef(_))
        ));
    }

    #[test]
    fn refuses_hostile_xml() {
        let dtd = format!(r#"<!DOCTYPE r [<!ENTITY x "y">]>{}"#, request(BASE, ""));
        assert!(matches!(
            envelope_err(parse(&dtd)),
            EnvelopeError::Xml(xml::Error::Dtd)
        ));
        let pi = request(BASE, "<?evil?>");
        assert!(matches!(
            envelope_err(parse(&pi)),
            EnvelopeError::Xml(xml::Error::ProcessingInstruction)
        ));
        let entity = request(BASE, "").replace("https://sp.example.com", "&ext;");
        assert!(matches!(
            envelope_err(parse(&entity)),
            EnvelopeError::Xml(xml::Error::Malformed(_))
        ));
    }

    #[test]
    fn signature_rules_without_keys() {
        // An unsigned request when the SP requires signing fails through every door.
        let xml = request(&format!(r#"{BASE} Destination="{SSO}""#), "");
        assert!(matches!(
            parse(&xml).unwrap().accept_unsigned(true),
            Err(EnvelopeError::SignatureRequired)
        ));
        assert!(matches!(
            parse(&xml).unwrap().verify_redirect(None, &[], false, true),
            Err(EnvelopeError::SignatureRequired)
        ));
        // A signature element inside a Redirect message is refused, even when nothing requires signing.
        let signed = request(
            BASE,
            r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>"#,
        );
        let unverified = parse(&signed).unwrap();
        assert!(unverified.has_xml_signature());
        assert!(matches!(
            unverified.clone().verify_redirect(None, &[], false, false),
            Err(EnvelopeError::SignatureInRedirect)
        ));
        // A present signature cannot be skipped.
        assert!(matches!(
            unverified.accept_unsigned(false),
            Err(EnvelopeError::SignatureNotChecked)
        ));
        // Signature must follow Issuer directly; after Extensions it is misplaced.
        let late = request(
            BASE,
            r#"<samlp:Extensions/><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>"#,
        );
        assert!(
            matches!(envelope_err(parse(&late)), EnvelopeError::UnexpectedElement { element, .. } if element == "Signature")
        );
    }
}
