//! The Response Tessera sends and the Assertion inside it (saml-core 2.3.3, 3.3.3; saml-profiles 4.1.4.2).
//!
//! Everything is built as an [`Element`] tree and serialized by one escaping writer, so no attribute or
//! NameID value can turn into markup. Signing and encryption happen on the tree, in the order saml-core
//! 6.2 prescribes: sign the assertion, then encrypt it, then sign the response around it.

use chrono::{DateTime, Duration, Utc};

use crate::saml::status::Status;
use crate::saml::xml::{ns, Element};
use crate::saml::xmldsig::keys::SigningKey;
use crate::saml::xmldsig::sign::sign_enveloped;

/// Why a response could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("encryption failed: {0}")]
    Encrypt(String),
    #[error("cryptographic failure: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// saml-core 1.3.3: times are UTC and written with a `Z`, without fractional seconds here.
pub fn format_instant(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// NameID formats Tessera issues (saml-core 8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameIdFormat {
    /// saml-core 8.3.2: an email address.
    EmailAddress,
    /// saml-core 8.3.7: an opaque identifier, stable per user and SP, different between SPs.
    Persistent,
    /// saml-core 8.3.8: a one-off identifier.
    Transient,
    /// saml-core 8.3.1: whatever the SP and the IdP agreed.
    Unspecified,
}

impl NameIdFormat {
    pub fn uri(self) -> &'static str {
        match self {
            NameIdFormat::EmailAddress => "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
            NameIdFormat::Persistent => "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
            NameIdFormat::Transient => "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
            NameIdFormat::Unspecified => "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
        }
    }

    pub fn from_uri(uri: &str) -> Option<NameIdFormat> {
        [
            Self::EmailAddress,
            Self::Persistent,
            Self::Transient,
            Self::Unspecified,
        ]
        .into_iter()
        .find(|f| f.uri() == uri)
    }
}

/// saml-core 8.3.7 asks for a persistent identifier that is opaque and differs per SP, so two SPs cannot
/// correlate a user. It is an HMAC of the user's immutable key and the SP's entity ID under a secret only
/// the IdP holds: stable across sessions, restarts and nodes, and useless to anyone else.
pub fn persistent_name_id(
    secret: &[u8],
    user_key: &str,
    sp_entity_id: &str,
) -> Result<String, Error> {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;
    let key = PKey::hmac(secret)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    signer.update(user_key.as_bytes())?;
    signer.update(&[0])?;
    signer.update(sp_entity_id.as_bytes())?;
    Ok(hex::encode(signer.sign_to_vec()?))
}

/// AuthnContext class references (saml-authn-context 3.4) and the REFEDS MFA profile.
pub mod class_ref {
    /// saml-authn-context 3.4.7: password over a protected transport.
    pub const PASSWORD_PROTECTED_TRANSPORT: &str =
        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
    /// saml-authn-context 3.4.7: password (the weakest class Tessera ever asserts).
    pub const PASSWORD: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:Password";
    /// saml-authn-context 3.4.20: a time-synchronised one-time code as second factor.
    pub const TIME_SYNC_TOKEN: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken";
    /// REFEDS MFA profile: more than one factor was used.
    pub const REFEDS_MFA: &str = "https://refeds.org/profile/mfa";
    /// saml-authn-context 3.4.1: the context is unknown.
    pub const UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified";
}

/// The subject's NameID as it goes into the assertion.
#[derive(Debug, Clone)]
pub struct NameId {
    pub value: String,
    pub format: NameIdFormat,
    /// saml-core 2.2.2: the SP the identifier is scoped to (persistent and transient identifiers).
    pub sp_name_qualifier: Option<String>,
}

/// One released attribute (saml-core 2.7.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    /// saml-core 2.7.3.1: defaults to `unspecified` when absent; the SP's configuration picks `uri` or
    /// `basic`.
    pub name_format: Option<String>,
    pub friendly_name: Option<String>,
    pub values: Vec<String>,
}

/// Which parts of the response carry a signature; a per-SP choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureTarget {
    Assertion,
    Response,
    Both,
}

impl SignatureTarget {
    pub fn from_flags(assertion: bool, response: bool) -> SignatureTarget {
        match (assertion, response) {
            (true, true) => SignatureTarget::Both,
            (false, true) => SignatureTarget::Response,
            // saml-profiles 4.1.3.5: the assertion must be signed when the response is not, so "neither"
            // is never allowed and falls back to signing the assertion.
            _ => SignatureTarget::Assertion,
        }
    }
    fn assertion(self) -> bool {
        matches!(self, SignatureTarget::Assertion | SignatureTarget::Both)
    }
    fn response(self) -> bool {
        matches!(self, SignatureTarget::Response | SignatureTarget::Both)
    }
}

/// A hook that turns a signed Assertion into an EncryptedAssertion for the SP's key (saml-core 2.3.4).
pub type Encryptor<'a> = &'a dyn Fn(&Element) -> Result<Element, Error>;

/// Everything an assertion says. Times, IDs and the session index are chosen by the caller: this module
/// reads no clock and draws no randomness.
#[derive(Debug, Clone)]
pub struct AssertionContent {
    /// Our entity ID, the Issuer of both the response and the assertion (saml-core 2.2.5).
    pub issuer: String,
    pub response_id: String,
    pub assertion_id: String,
    pub issue_instant: DateTime<Utc>,
    /// The ACS URL taken from the SP's metadata: Response Destination and SubjectConfirmationData
    /// Recipient (saml-profiles 4.1.4.2).
    pub acs_url: String,
    /// The AuthnRequest ID for SP-initiated SSO; absent for IdP-initiated SSO (saml-profiles 4.1.5).
    pub in_response_to: Option<String>,
    /// The SP's entity ID: the Audience (saml-profiles 4.1.4.2).
    pub audience: String,
    pub name_id: NameId,
    /// How long the bearer confirmation and the conditions stay valid after `issue_instant`.
    pub lifetime: Duration,
    /// How far NotBefore is backdated, so an SP whose clock runs a little behind still accepts.
    pub clock_skew: Duration,
    pub authn_instant: DateTime<Utc>,
    /// Identifies this SSO session to the SP; single logout names it back (saml-core 2.7.2).
    pub session_index: String,
    /// When the SP should consider the session over (the Tessera session's absolute end).
    pub session_not_on_or_after: Option<DateTime<Utc>>,
    pub authn_context_class_ref: String,
    pub attributes: Vec<Attribute>,
}

fn issuer(value: &str) -> Element {
    Element::new("saml", "Issuer", ns::SAML).with_text(value)
}

/// Builds the Assertion element (saml-core 2.3.3), declaring its own namespaces so it stays well-formed
/// when it is canonicalized, encrypted or extracted on its own.
pub fn build_assertion(c: &AssertionContent) -> Element {
    let not_on_or_after = format_instant(c.issue_instant + c.lifetime);
    let name_id = Element::new("saml", "NameID", ns::SAML)
        .with_attr("Format", c.name_id.format.uri())
        .with_opt_attr("SPNameQualifier", c.name_id.sp_name_qualifier.clone())
        .with_text(c.name_id.value.clone());
    // saml-profiles 4.1.4.2: a bearer SubjectConfirmation whose data carries Recipient, NotOnOrAfter and,
    // for a solicited response, InResponseTo; it must not carry NotBefore.
    let confirmation = Element::new("saml", "SubjectConfirmation", ns::SAML)
        .with_attr("Method", "urn:oasis:names:tc:SAML:2.0:cm:bearer")
        .with_child(
            Element::new("saml", "SubjectConfirmationData", ns::SAML)
                .with_opt_attr("InResponseTo", c.in_response_to.clone())
                .with_attr("NotOnOrAfter", not_on_or_after.clone())
                .with_attr("Recipient", c.acs_url.clone()),
        );
    let subject = Element::new("saml", "Subject", ns::SAML)
        .with_child(name_id)
        .with_child(confirmation);
    // saml-core 2.5.1 and saml-profiles 4.1.4.2: Conditions with an AudienceRestriction naming the SP.
    let conditions = Element::new("saml", "Conditions", ns::SAML)
        .with_attr("NotBefore", format_instant(c.issue_instant - c.clock_skew))
        .with_attr("NotOnOrAfter", not_on_or_after)
        .with_child(
            Element::new("saml", "AudienceRestriction", ns::SAML).with_child(
                Element::new("saml", "Audience", ns::SAML).with_text(c.audience.clone()),
            ),
        );
    // saml-core 2.7.2: AuthnStatement; saml-profiles 4.1.4.2 requires one in an SSO assertion.
    let authn = Element::new("saml", "AuthnStatement", ns::SAML)
        .with_attr("AuthnInstant", format_instant(c.authn_instant))
        .with_attr("SessionIndex", c.session_index.clone())
        .with_opt_attr(
            "SessionNotOnOrAfter",
            c.session_not_on_or_after.map(format_instant),
        )
        .with_child(
            Element::new("saml", "AuthnContext", ns::SAML).with_child(
                Element::new("saml", "AuthnContextClassRef", ns::SAML)
                    .with_text(c.authn_context_class_ref.clone()),
            ),
        );
    // saml-core 2.3.3: Issuer, Signature?, Subject, Conditions, Advice?, statements.
    let mut assertion = Element::new("saml", "Assertion", ns::SAML)
        .declare("saml", ns::SAML)
        .with_attr("ID", c.assertion_id.clone())
        .with_attr("IssueInstant", format_instant(c.issue_instant))
        .with_attr("Version", "2.0")
        .with_child(issuer(&c.issuer))
        .with_child(subject)
        .with_child(conditions)
        .with_child(authn);
    // saml-core 2.7.3: an AttributeStatement must hold at least one attribute, so it is left out when
    // nothing is released.
    if !c.attributes.is_empty() {
        let attributes =
            c.attributes.iter().map(|a| {
                Element::new("saml", "Attribute", ns::SAML)
                    .with_attr("Name", a.name.clone())
                    .with_opt_attr("NameFormat", a.name_format.clone())
                    .with_opt_attr("FriendlyName", a.friendly_name.clone())
                    .with_children(a.values.iter().map(|v| {
                        Element::new("saml", "AttributeValue", ns::SAML).with_text(v.clone())
                    }))
            });
        assertion = assertion.with_child(
            Element::new("saml", "AttributeStatement", ns::SAML).with_children(attributes),
        );
    }
    assertion
}

fn response_shell(
    issuer_id: &str,
    id: &str,
    issue_instant: DateTime<Utc>,
    destination: &str,
    in_response_to: Option<&str>,
    status: &Status,
) -> Element {
    // saml-core 3.2.2 (StatusResponseType): Issuer, Signature?, Extensions?, Status; then 3.3.3 assertions.
    Element::new("samlp", "Response", ns::SAMLP)
        .declare("samlp", ns::SAMLP)
        .declare("saml", ns::SAML)
        .with_attr("Destination", destination)
        .with_attr("ID", id)
        .with_opt_attr("InResponseTo", in_response_to)
        .with_attr("IssueInstant", format_instant(issue_instant))
        .with_attr("Version", "2.0")
        .with_child(issuer(issuer_id))
        .with_child(status.to_element())
}

/// Builds, signs and (when `encrypt` is given) encrypts a successful SSO response. Returns the XML text
/// to be base64-encoded into the POST form.
pub fn build_response(
    content: &AssertionContent,
    key: &SigningKey,
    target: SignatureTarget,
    encrypt: Option<Encryptor<'_>>,
) -> Result<String, Error> {
    let mut assertion = build_assertion(content);
    if target.assertion() {
        sign_enveloped(&mut assertion, key).map_err(|e| Error::Sign(e.to_string()))?;
    }
    // saml-core 6.2: encrypt the already signed assertion.
    let assertion = match encrypt {
        Some(encrypt) => encrypt(&assertion)?,
        None => assertion,
    };
    let mut response = response_shell(
        &content.issuer,
        &content.response_id,
        content.issue_instant,
        &content.acs_url,
        content.in_response_to.as_deref(),
        &Status::success(),
    )
    .with_child(assertion);
    if target.response() {
        sign_enveloped(&mut response, key).map_err(|e| Error::Sign(e.to_string()))?;
    }
    Ok(response.to_xml())
}

/// What an error response needs (saml-core 3.2.2.2).
#[derive(Debug, Clone)]
pub struct ErrorResponse {
    pub issuer: String,
    pub response_id: String,
    pub issue_instant: DateTime<Utc>,
    pub acs_url: String,
    pub in_response_to: Option<String>,
    pub status: Status,
}

/// Builds a signed response carrying only a non-success Status, such as NoPassive or RequestDenied.
pub fn build_error_response(e: &ErrorResponse, key: &SigningKey) -> Result<String, Error> {
    let mut response = response_shell(
        &e.issuer,
        &e.response_id,
        e.issue_instant,
        &e.acs_url,
        e.in_response_to.as_deref(),
        &e.status,
    );
    sign_enveloped(&mut response, key).map_err(|e| Error::Sign(e.to_string()))?;
    Ok(response.to_xml())
}
