//! What every SAML protocol message shares, and how a received one becomes trusted.
//!
//! `RequestAbstractType` (saml-core 3.2.1) and `StatusResponseType` (saml-core 3.2.2) begin the same way:
//! `ID`, `Version`, `IssueInstant`, `Destination` attributes and the `Issuer`, `ds:Signature`, `Extensions`
//! children. AuthnRequest, LogoutRequest and LogoutResponse are checked here, once, so that the three
//! parsers cannot drift apart on a security rule.
//!
//! The second half is the trust type-state: parsers return [`Unverified`], which exposes only the issuer
//! (to find the sender's metadata keys) and a read-only view for logging. The only ways to a [`Verified`]
//! are the signature checks below and, where the SP does not require signed messages,
//! [`Unverified::accept_unsigned`]. Signatures are verified on the very tree the fields were read from.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use openssl::pkey::{PKey, Public};

use crate::saml::binding::{self, RedirectSignature};
use crate::saml::status::{Status, StatusCode, SubStatusCode};
use crate::saml::xml::{self, ns, Element, Limits};
use crate::saml::xmldsig::verify::{
    verify_enveloped, Error as SignatureError, VerifiedSignature, VerifyPolicy,
};

/// The only protocol version there is (saml-core 3.2.1, 3.2.2).
pub const SAML_VERSION: &str = "2.0";

/// saml-profiles 4.1.4.1, 4.4.4.1: the only `Format` an `Issuer` of a protocol message may carry.
pub const ENTITY_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";

/// The longest message ID accepted. saml-core 1.3.4 sets no bound; 256 is far above the 160-bit random
/// IDs real SPs send and keeps hostile IDs out of replay caches and logs.
pub const MAX_ID_LEN: usize = 256;

/// What a received message is judged against. Built by the caller per request, because `now` comes from
/// the caller's clock (this module never reads one).
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    /// The current time, for the IssueInstant window.
    pub now: DateTime<Utc>,
    /// How far the sender's clock may be off ours, in either direction.
    pub max_clock_skew: Duration,
    /// How old a message may be (before skew): a bound on how long a captured message can be replayed,
    /// and on how long the caller must remember seen IDs.
    pub max_age: Duration,
    /// Our endpoint URLs at which this message may arrive: the acceptable `Destination` values
    /// (saml-bindings 3.4.5.2, 3.5.5.2). SSO URLs for an AuthnRequest, SLO URLs for logout messages.
    pub destinations: &'a [String],
    /// Parser bounds on size, depth and element count.
    pub limits: Limits,
}

/// Why a message's common part, or its signature, was refused. One variant per rule.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The XML itself was refused (DTD, entity, processing instruction, size, malformed...).
    #[error("XML refused: {0}")]
    Xml(#[source] xml::Error),
    /// The root element is not the message expected at this endpoint.
    #[error("expected <samlp:{expected}>, found <{found}>")]
    WrongRoot {
        /// The local name in the protocol namespace we expected.
        expected: &'static str,
        /// `{namespace}local` of what arrived.
        found: String,
    },
    /// saml-core 3.2.1 / 3.2.2: `Version` is required.
    #[error("Version attribute missing")]
    MissingVersion,
    /// saml-core 3.2.1, 3.4.1: the version must be "2.0" (answered with `VersionMismatch`, 3.2.2.2).
    #[error("unsupported SAML version `{0}`")]
    VersionMismatch(String),
    /// saml-core 3.2.1: `ID` is required.
    #[error("ID attribute missing")]
    MissingId,
    /// saml-core 1.3.4: IDs are xs:ID, i.e. NCNames.
    #[error("ID `{0}` is not an NCName")]
    InvalidId(String),
    /// The ID is longer than [`MAX_ID_LEN`].
    #[error("ID is {0} characters, over the limit")]
    IdTooLong(usize),
    /// Two elements carry the same ID: xs:ID values are unique per document (XML Schema 2 3.3.8), and a
    /// duplicate is the mark of a signature-wrapping attempt.
    #[error("ID `{0}` appears on more than one element")]
    DuplicateId(String),
    /// saml-core 3.2.1: `IssueInstant` is required.
    #[error("IssueInstant attribute missing")]
    MissingIssueInstant,
    /// saml-core 1.3.3: times are xs:dateTime in UTC.
    #[error("IssueInstant `{0}` is not an xs:dateTime with a time zone")]
    BadIssueInstant(String),
    /// Issued earlier than `now - max_age - max_clock_skew`: stale or replayed.
    #[error("message issued at {issued}, too long before {now}")]
    IssueInstantTooOld {
        /// When the message says it was issued.
        issued: DateTime<Utc>,
        /// Our clock at the check.
        now: DateTime<Utc>,
    },
    /// Issued later than `now + max_clock_skew`.
    #[error("message issued at {issued}, in the future of {now}")]
    IssueInstantInFuture {
        /// When the message says it was issued.
        issued: DateTime<Utc>,
        /// Our clock at the check.
        now: DateTime<Utc>,
    },
    /// saml-profiles 4.1.4.1 (AuthnRequest), 4.4.4.1 / 4.4.4.2 (logout): `Issuer` MUST be present.
    #[error("Issuer element missing")]
    MissingIssuer,
    /// The Issuer holds a comment or a child element (see [`Element::text`]).
    #[error("Issuer: {0}")]
    Issuer(#[source] xml::Error),
    /// The Issuer is empty: there is no SP to look up.
    #[error("Issuer is empty")]
    EmptyIssuer,
    /// saml-profiles 4.1.4.1, 4.4.4.1: Issuer `Format` must be omitted or the entity format.
    #[error("Issuer Format `{0}` is not the entity format")]
    IssuerFormat(String),
    /// saml-bindings 3.4.5.2 / 3.5.5.2: `Destination`, when present, must be where the message arrived.
    #[error("Destination `{0}` is not one of our endpoints")]
    WrongDestination(String),
    /// saml-bindings 3.4.5.2 / 3.5.5.2: a signed message MUST carry `Destination`.
    #[error("signed message without Destination")]
    DestinationRequired,
    /// A child element the schema does not allow at this place (or a repeated one).
    #[error("unexpected <{element}> in <{parent}>")]
    UnexpectedElement {
        /// The enclosing element's local name.
        parent: String,
        /// The offending element's local name.
        element: String,
    },
    /// saml-bindings 3.4.4.1: in the Redirect binding the signature travels in the query string and any
    /// XML signature is removed before encoding, so one inside the message is refused.
    #[error("XML signature inside an HTTP-Redirect message")]
    SignatureInRedirect,
    /// The SP requires signed messages and this one is not signed.
    #[error("message is not signed, and the sender requires signing")]
    SignatureRequired,
    /// A signature is present but the caller asked to accept the message unsigned: a signature that is
    /// present must verify, so it cannot simply be ignored.
    #[error("message carries a signature that was not verified")]
    SignatureNotChecked,
    /// The HTTP-Redirect query-string signature did not verify.
    #[error("redirect signature: {0}")]
    RedirectSignature(#[source] binding::Error),
    /// The enveloped XML signature did not verify.
    #[error("XML signature: {0}")]
    Signature(#[source] SignatureError),
}

impl EnvelopeError {
    /// The status an answer to the refused message should carry (saml-core 3.2.2.2), should the caller
    /// be able to answer at all (it cannot answer an untrusted sender's endpoint).
    pub fn status(&self) -> Status {
        match self {
            EnvelopeError::VersionMismatch(found) => {
                // saml-core 3.2.2.2: say which way the version is off when it can be told.
                let second = match found
                    .split_once('.')
                    .and_then(|(major, _)| major.parse::<u32>().ok())
                {
                    Some(major) if major > 2 => SubStatusCode::RequestVersionTooHigh,
                    Some(_) => SubStatusCode::RequestVersionTooLow,
                    None => SubStatusCode::RequestUnsupported,
                };
                Status::error(StatusCode::VersionMismatch, second)
            }
            EnvelopeError::SignatureInRedirect
            | EnvelopeError::SignatureRequired
            | EnvelopeError::SignatureNotChecked
            | EnvelopeError::RedirectSignature(_)
            | EnvelopeError::Signature(_)
            | EnvelopeError::DestinationRequired => {
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

/// The common part of a received message, checked.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// `ID`, a valid NCName of bounded length.
    pub(crate) id: String,
    /// `IssueInstant`, inside the acceptance window.
    pub(crate) issue_instant: DateTime<Utc>,
    /// The sender's entity ID, from `Issuer`.
    pub(crate) issuer: String,
    /// `Destination`, one of ours when present.
    pub(crate) destination: Option<String>,
    /// Whether the root carries an enveloped `ds:Signature` (at its schema position).
    pub(crate) signed: bool,
    /// How many leading children of the root are header children (Issuer, Signature, Extensions); the
    /// message-specific content starts after them.
    pub(crate) body_start: usize,
}

/// Parses `xml` and checks everything `RequestAbstractType` / `StatusResponseType` define, for a root
/// `samlp:{root_local}`. Returns the tree, which the caller reads its own fields from and which must be
/// kept for signature verification.
pub(crate) fn parse_message(
    xml: &[u8],
    ctx: &RequestContext<'_>,
    root_local: &'static str,
) -> Result<(Element, Header), EnvelopeError> {
    let root = xml::parse(xml, &ctx.limits).map_err(EnvelopeError::Xml)?;
    if !root.is(ns::SAMLP, root_local) {
        return Err(EnvelopeError::WrongRoot {
            expected: root_local,
            found: format!(
                "{{{}}}{}",
                root.namespace.as_deref().unwrap_or(""),
                root.local
            ),
        });
    }
    // saml-core 3.2.1: Version first, since a message of another version may differ in everything else.
    match root.attr("Version") {
        None => return Err(EnvelopeError::MissingVersion),
        Some(SAML_VERSION) => {}
        Some(other) => return Err(EnvelopeError::VersionMismatch(other.to_owned())),
    }
    let id = root.attr("ID").ok_or(EnvelopeError::MissingId)?;
    check_id(id)?;
    check_unique_ids(&root)?;
    let raw_instant = root
        .attr("IssueInstant")
        .ok_or(EnvelopeError::MissingIssueInstant)?;
    let issue_instant = parse_instant(raw_instant)
        .ok_or_else(|| EnvelopeError::BadIssueInstant(raw_instant.to_owned()))?;
    check_window(issue_instant, ctx)?;

    // saml-core 3.2.1 / 3.2.2: the sequence starts with Issuer?, ds:Signature?, Extensions?.
    let children: Vec<&Element> = root.elements().collect();
    let mut at = 0;
    let issuer_element = children
        .first()
        .filter(|e| e.is(ns::SAML, "Issuer"))
        .copied();
    if issuer_element.is_some() {
        at += 1;
    }
    let signed = children.get(at).is_some_and(|e| e.is(ns::DS, "Signature"));
    if signed {
        at += 1;
    }
    if children
        .get(at)
        .is_some_and(|e| e.is(ns::SAMLP, "Extensions"))
    {
        at += 1;
    }
    // Any of the three later in the sequence is out of place (a second Signature above all).
    if let Some(misplaced) = children[at..].iter().find(|e| {
        e.is(ns::SAML, "Issuer") || e.is(ns::DS, "Signature") || e.is(ns::SAMLP, "Extensions")
    }) {
        return Err(unexpected(&root, misplaced));
    }
    let issuer_element = issuer_element.ok_or(EnvelopeError::MissingIssuer)?;
    let issuer = issuer_element
        .trimmed_text()
        .map_err(EnvelopeError::Issuer)?;
    if issuer.is_empty() {
        return Err(EnvelopeError::EmptyIssuer);
    }
    if let Some(format) = issuer_element.attr("Format") {
        if format != ENTITY_FORMAT {
            return Err(EnvelopeError::IssuerFormat(format.to_owned()));
        }
    }

    let destination = root.attr("Destination").map(str::to_owned);
    if let Some(destination) = &destination {
        // saml-bindings 3.4.5.2 / 3.5.5.2: compared as strings, exactly.
        if !ctx.destinations.iter().any(|d| d == destination) {
            return Err(EnvelopeError::WrongDestination(destination.clone()));
        }
    }

    let header = Header {
        id: id.to_owned(),
        issue_instant,
        issuer,
        destination,
        signed,
        body_start: at,
    };
    Ok((root, header))
}

/// The IssueInstant window: not before `now - max_age - max_clock_skew`, not after `now + max_clock_skew`.
/// Bounds that overflow the calendar are treated as open rather than panicking.
fn check_window(issued: DateTime<Utc>, ctx: &RequestContext<'_>) -> Result<(), EnvelopeError> {
    let oldest = ctx
        .max_age
        .checked_add(&ctx.max_clock_skew)
        .and_then(|d| ctx.now.checked_sub_signed(d));
    if oldest.is_some_and(|oldest| issued < oldest) {
        return Err(EnvelopeError::IssueInstantTooOld {
            issued,
            now: ctx.now,
        });
    }
    if ctx
        .now
        .checked_add_signed(ctx.max_clock_skew)
        .is_some_and(|latest| issued > latest)
    {
        return Err(EnvelopeError::IssueInstantInFuture {
            issued,
            now: ctx.now,
        });
    }
    Ok(())
}

/// The error for `child` standing where the schema does not allow it.
pub(crate) fn unexpected(parent: &Element, child: &Element) -> EnvelopeError {
    EnvelopeError::UnexpectedElement {
        parent: parent.local.clone(),
        element: child.local.clone(),
    }
}

/// One position in a schema sequence: an element name and whether it may repeat.
pub(crate) struct Slot {
    /// The element's namespace.
    pub(crate) namespace: &'static str,
    /// The element's local name.
    pub(crate) local: &'static str,
    /// `maxOccurs="unbounded"` when true, otherwise at most one.
    pub(crate) repeats: bool,
}

/// Checks that `children` follow the order of `slots` (each slot optional, repeated only if allowed) and
/// contain nothing else. Occurrence minimums are the caller's business.
pub(crate) fn check_sequence(
    parent: &Element,
    children: &[&Element],
    slots: &[Slot],
) -> Result<(), EnvelopeError> {
    let mut last: Option<usize> = None;
    for child in children {
        let from = last.unwrap_or(0);
        let found = slots
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, s)| child.is(s.namespace, s.local))
            .map(|(i, _)| i);
        match found {
            Some(i) if Some(i) == last && !slots[i].repeats => {
                return Err(unexpected(parent, child))
            }
            Some(i) => last = Some(i),
            None => return Err(unexpected(parent, child)),
        }
    }
    Ok(())
}

/// saml-core 1.3.4: an xs:ID is an NCName (Namespaces in XML 1.0, production 4): a name without colons,
/// starting with a letter or `_`.
pub fn is_ncname(value: &str) -> bool {
    let mut chars = value.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '\u{B7}'))
}

/// Checks a message ID (or InResponseTo) for syntax and length.
pub(crate) fn check_id(id: &str) -> Result<(), EnvelopeError> {
    if id.chars().count() > MAX_ID_LEN {
        return Err(EnvelopeError::IdTooLong(id.chars().count()));
    }
    if !is_ncname(id) {
        return Err(EnvelopeError::InvalidId(id.to_owned()));
    }
    Ok(())
}

/// XML Schema 2 3.3.8: an ID value identifies one element. `ID` (SAML) and `Id` (XML Signature) are
/// both identifiers a reference can resolve, so both are counted.
fn check_unique_ids(root: &Element) -> Result<(), EnvelopeError> {
    let mut seen = std::collections::HashSet::new();
    for element in root.descendants() {
        for attr in element
            .attributes
            .iter()
            .filter(|a| a.namespace.is_none() && (a.local == "ID" || a.local == "Id"))
        {
            if !seen.insert(attr.value.as_str()) {
                return Err(EnvelopeError::DuplicateId(attr.value.clone()));
            }
        }
    }
    Ok(())
}

/// saml-core 1.3.3: an xs:dateTime with a time zone (SAML requires UTC, written `Z`; an explicit offset
/// is converted). Returns None when the value is not such a time.
pub fn parse_instant(value: &str) -> Option<DateTime<Utc>> {
    // xs:dateTime separates date and time with `T` only; chrono's RFC 3339 parser also takes a space.
    if value.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Formats a time as SAML wants it (saml-core 1.3.3): UTC with `Z`, milliseconds only when non-zero
/// (no finer resolution, which receivers SHOULD NOT rely on).
pub fn format_instant(time: DateTime<Utc>) -> String {
    if time.timestamp_subsec_millis() == 0 {
        time.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        time.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

/// A fresh message ID from 160 random bits the caller supplies (saml-core 1.3.4 asks for at least 128).
/// The leading `_` makes it an NCName whatever the first hex digit is.
pub fn new_id(random: [u8; 20]) -> String {
    format!("_{}", hex::encode(random))
}

/// A message parsed and checked, whose signature has not been checked yet. It gives out only what is
/// needed to find the sender's keys and to log; everything else waits for [`Verified`].
#[derive(Debug, Clone)]
pub struct Unverified<T> {
    /// The message's fields, read from `root`.
    message: T,
    /// The tree the fields were read from; the signature is verified on this very tree.
    root: Element,
    /// The checked common part.
    header: Header,
}

/// How a [`Verified`] message came to be trusted, for the log and for policy decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Accepted without a signature because the sender does not require signing.
    Unsigned,
    /// The HTTP-Redirect query-string signature verified (saml-bindings 3.4.4.1).
    RedirectSignature,
    /// The enveloped XML signature on the root verified (saml-core 5.4, POST binding).
    XmlSignature(VerifiedSignature),
}

impl Trust {
    /// True when a signature was checked.
    pub fn is_signed(&self) -> bool {
        !matches!(self, Trust::Unsigned)
    }
}

/// A message whose origin has been checked against the sender's registered keys (or which the sender's
/// configuration allows unsigned). Only [`Unverified`] can make one.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    /// The message's fields.
    message: T,
    /// How the message was trusted.
    trust: Trust,
}

impl<T> Unverified<T> {
    pub(crate) fn new(message: T, root: Element, header: Header) -> Unverified<T> {
        Unverified {
            message,
            root,
            header,
        }
    }

    /// The sender's entity ID, to look up its metadata and signing keys. Not yet authenticated.
    pub fn issuer(&self) -> &str {
        &self.header.issuer
    }

    /// The message ID, for logging and correlation. Not yet authenticated.
    pub fn id(&self) -> &str {
        &self.header.id
    }

    /// Whether the message carries an enveloped XML signature.
    pub fn has_xml_signature(&self) -> bool {
        self.header.signed
    }

    /// A read-only view of the unverified fields, for logging only: nothing read here is authenticated.
    pub fn peek_for_logging(&self) -> &T {
        &self.message
    }

    /// Trusts a message received by HTTP-Redirect (saml-bindings 3.4.4.1).
    ///
    /// `signature` is the query-string signature decoded with this message. A signature that is present
    /// must verify with `keys` (the sender's metadata signing keys); an absent one is an error when
    /// `require_signed`. An XML signature inside the message is always refused.
    pub fn verify_redirect(
        self,
        signature: Option<&RedirectSignature>,
        keys: &[PKey<Public>],
        allow_sha1: bool,
        require_signed: bool,
    ) -> Result<Verified<T>, EnvelopeError> {
        if self.header.signed {
            return Err(EnvelopeError::SignatureInRedirect);
        }
        match signature {
            Some(signature) => {
                // saml-bindings 3.4.5.2: a signed message names its Destination.
                if self.header.destination.is_none() {
                    return Err(EnvelopeError::DestinationRequired);
                }
                signature
                    .verify(keys, allow_sha1)
                    .map_err(EnvelopeError::RedirectSignature)?;
                Ok(Verified {
                    message: self.message,
                    trust: Trust::RedirectSignature,
                })
            }
            None if require_signed => Err(EnvelopeError::SignatureRequired),
            None => Ok(Verified {
                message: self.message,
                trust: Trust::Unsigned,
            }),
        }
    }

    /// Trusts a message received by HTTP-POST (saml-bindings 3.5.5.2): the enveloped signature on the root
    /// element, if present, must verify with `keys`; an absent one is an error when `require_signed`.
    pub fn verify_post(
        self,
        keys: &[PKey<Public>],
        policy: &VerifyPolicy,
        require_signed: bool,
    ) -> Result<Verified<T>, EnvelopeError> {
        // saml-bindings 3.5.5.2: a signed message names its Destination.
        if self.header.signed && self.header.destination.is_none() {
            return Err(EnvelopeError::DestinationRequired);
        }
        self.check_enveloped(keys, policy, require_signed)
    }

    /// Trusts a message received by the SOAP binding as the answer to our own request (saml-bindings
    /// 3.2): the enveloped signature, if present, must verify with `keys`; an absent one is an error when
    /// `require_signed` (the caller allows it only when TLS authenticated the responder, saml-bindings
    /// 3.2.3.4 / saml-profiles 4.4.4.2). Unlike the browser bindings no `Destination` is required: the
    /// message travels on the very connection Tessera opened to the endpoint.
    pub fn verify_soap(
        self,
        keys: &[PKey<Public>],
        policy: &VerifyPolicy,
        require_signed: bool,
    ) -> Result<Verified<T>, EnvelopeError> {
        self.check_enveloped(keys, policy, require_signed)
    }

    /// What HTTP-POST and SOAP both require: the enveloped signature on the root element, if present,
    /// must verify with `keys`; an absent one is an error when `require_signed`.
    fn check_enveloped(
        self,
        keys: &[PKey<Public>],
        policy: &VerifyPolicy,
        require_signed: bool,
    ) -> Result<Verified<T>, EnvelopeError> {
        if !self.header.signed {
            return if require_signed {
                Err(EnvelopeError::SignatureRequired)
            } else {
                Ok(Verified {
                    message: self.message,
                    trust: Trust::Unsigned,
                })
            };
        }
        let verified =
            verify_enveloped(&self.root, keys, policy).map_err(EnvelopeError::Signature)?;
        Ok(Verified {
            message: self.message,
            trust: Trust::XmlSignature(verified),
        })
    }

    /// Trusts the message without a signature, which only an SP that does not require signed messages
    /// may send. A message that carries an XML signature is refused: a present signature must verify
    /// ([`Unverified::verify_post`]).
    pub fn accept_unsigned(self, require_signed: bool) -> Result<Verified<T>, EnvelopeError> {
        if require_signed {
            return Err(EnvelopeError::SignatureRequired);
        }
        if self.header.signed {
            return Err(EnvelopeError::SignatureNotChecked);
        }
        Ok(Verified {
            message: self.message,
            trust: Trust::Unsigned,
        })
    }
}

impl<T> Verified<T> {
    /// The trusted message.
    pub fn message(&self) -> &T {
        &self.message
    }

    /// The trusted message, by value.
    pub fn into_message(self) -> T {
        self.message
    }

    /// How the message was trusted.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ncname_rules() {
        for good in ["_abc", "id-123", "a.b_c-d", "\u{e9}t\u{e9}", "_0"] {
            assert!(is_ncname(good), "{good}");
        }
        for bad in ["", "1abc", "-a", "a:b", "a b", "a#b", ".a"] {
            assert!(!is_ncname(bad), "{bad}");
        }
        assert!(check_id(&format!("_{}", "a".repeat(255))).is_ok());
        assert!(matches!(
            check_id(&format!("_{}", "a".repeat(256))),
            Err(EnvelopeError::IdTooLong(257))
        ));
    }

    #[test]
    fn instants_parse_and_format() {
        let t = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap();
        assert_eq!(format_instant(t), "2024-05-06T07:08:09Z");
        assert_eq!(
            format_instant(t + Duration::milliseconds(120)),
            "2024-05-06T07:08:09.120Z"
        );
        assert_eq!(parse_instant("2024-05-06T07:08:09Z"), Some(t));
        assert_eq!(parse_instant("2024-05-06T09:08:09+02:00"), Some(t));
        assert_eq!(
            parse_instant("2024-05-06T07:08:09.5Z"),
            Some(t + Duration::milliseconds(500))
        );
        assert_eq!(parse_instant("2024-05-06 07:08:09Z"), None);
        assert_eq!(parse_instant("2024-05-06T07:08:09"), None);
        assert_eq!(parse_instant("yesterday"), None);
    }

    #[test]
    fn new_id_is_an_ncname_with_160_bits() {
        let id = new_id([0xab; 20]);
        assert_eq!(id, format!("_{}", "ab".repeat(20)));
        assert!(is_ncname(&new_id([0; 20])));
    }

    #[test]
    fn version_mismatch_status_says_which_way() {
        let high = EnvelopeError::VersionMismatch("3.0".into()).status();
        assert_eq!(high.top, StatusCode::VersionMismatch);
        assert_eq!(high.second, Some(SubStatusCode::RequestVersionTooHigh));
        let low = EnvelopeError::VersionMismatch("1.1".into()).status();
        assert_eq!(low.second, Some(SubStatusCode::RequestVersionTooLow));
        assert_eq!(
            EnvelopeError::SignatureRequired.status().second,
            Some(SubStatusCode::RequestDenied)
        );
    }
}
