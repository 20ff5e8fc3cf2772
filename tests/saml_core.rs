//! The proof suite of the SAML 2.0 protocol core (issue "SAML 2.0 protocol core"), in one place.
//!
//! A. What Tessera signs is accepted by two independent implementations: the `xmlsec1` CLI (libxmlsec1
//!    over libxml2 and OpenSSL) verifies every signature, and samael 0.0.22's `ServiceProvider`, set up
//!    from the IdP metadata Tessera publishes, accepts the Response and reads back exactly what the
//!    assertion says. RSA-2048 and ECDSA P-256, every `SignatureTarget`, plain and encrypted assertions,
//!    every NameID format, error responses.
//! B. Hostile input: each attack from the issue's list is refused with its own error variant (asserted,
//!    not just `is_err`), without a panic. Static attack documents live in `tests/fixtures/hostile/`
//!    (see `tests/fixtures/README.md` for how each was made); signature-wrapping documents are built here
//!    from requests signed by Tessera's signer and by xmlsec1.
//! C. The samael flaws listed in the issue, one test each showing Tessera does not have them.
//!
//! `xmlsec1` must be installed; its absence fails the tests (a skipped interop test proves nothing).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::OnceLock;

use base64::Engine as _;
use chrono::{DateTime, Duration, TimeZone, Utc};
use openssl::pkey::{PKey, Private, Public};
use openssl::x509::X509;

use tessera::saml::authn_request::{parse_authn_request, RequestError, UnverifiedAuthnRequest};
use tessera::saml::binding::{self, decode_post, decode_redirect, encode_redirect, MessageKind};
use tessera::saml::encrypt::{encrypt_assertion, DataEncryption};
use tessera::saml::envelope::{EnvelopeError, RequestContext, Trust};
use tessera::saml::logout::{parse_logout_request, LogoutError};
use tessera::saml::metadata::{
    build_idp_metadata, parse_sp_metadata, verify_metadata_signature, IdpMetadata, MetadataError,
};
use tessera::saml::response::{
    self, build_error_response, build_response, class_ref, persistent_name_id, AssertionContent,
    Attribute, ErrorResponse, NameId, NameIdFormat, SignatureTarget,
};
use tessera::saml::status::{Status, StatusCode, SubStatusCode};
use tessera::saml::xml::{self, ns, Element, Limits, Node};
use tessera::saml::xmldsig::algorithms::SignatureAlgorithm;
use tessera::saml::xmldsig::c14n::{canonicalize, Options};
use tessera::saml::xmldsig::keys::{generate_self_signed, KeyKind, SigningKey};
use tessera::saml::xmldsig::sign::sign_enveloped;
use tessera::saml::xmldsig::verify::{Error as SigError, VerifyPolicy};

// ---------------------------------------------------------------------------------------------------
// Shared setup
// ---------------------------------------------------------------------------------------------------

const IDP: &str = "https://idp.tessera.example/";
const SSO: &str = "https://idp.tessera.example/saml/sso";
const SLO: &str = "https://idp.tessera.example/saml/slo";
const SP: &str = "https://sp.example.org/shibboleth";
const OTHER_SP: &str = "https://wiki.example.com/sp";
const ACS: &str = "https://sp.example.org/Shibboleth.sso/SAML2/POST";
const REQUEST_ID: &str = "_5d1c8b1e0f3a4e6b9c2d7a8e";
const POST_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

// The URIs below are spelled out rather than taken from the code under test, so that a typo there fails.
const EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
const UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
const URI_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
const BASIC_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic";
const PPT: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
const MFA: &str = "https://refeds.org/profile/mfa";
const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const HMAC_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#hmac-sha1";

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The instant the hostile fixtures were issued around (their IssueInstant is 30 s before it).
fn fixture_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap()
}
const FIXTURE_INSTANT: &str = "2024-03-01T11:59:30Z";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/hostile/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn fixture_str(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

/// The IdP's key and certificate PEM. The certificate must be valid now: xmlsec1 checks the dates of
/// the certificates it is told to trust.
struct IdpKey {
    key: SigningKey,
    cert_pem: String,
}

fn idp_key(kind: KeyKind) -> &'static IdpKey {
    static RSA: OnceLock<IdpKey> = OnceLock::new();
    static EC: OnceLock<IdpKey> = OnceLock::new();
    let cell = match kind {
        KeyKind::Rsa2048 => &RSA,
        KeyKind::EcP256 => &EC,
    };
    cell.get_or_init(|| {
        let (key, _, cert_pem) = generate_self_signed(
            kind,
            "idp.tessera.example",
            Utc::now() - Duration::days(1),
            30,
        )
        .unwrap();
        IdpKey { key, cert_pem }
    })
}

/// A key of the SP's own, for the requests it signs.
fn sp_key(kind: KeyKind) -> &'static SigningKey {
    static RSA: OnceLock<SigningKey> = OnceLock::new();
    static EC: OnceLock<SigningKey> = OnceLock::new();
    let cell = match kind {
        KeyKind::Rsa2048 => &RSA,
        KeyKind::EcP256 => &EC,
    };
    cell.get_or_init(|| {
        generate_self_signed(
            kind,
            "sp.example.org",
            fixture_now() - Duration::days(1),
            365,
        )
        .unwrap()
        .0
    })
}

fn public(key: &SigningKey) -> Vec<PKey<Public>> {
    vec![key.certificate().public_key().unwrap()]
}

/// The key of `tests/fixtures/metadata/sp-signing.crt`, which signed the static fixtures.
fn fixture_sp_keys() -> Vec<PKey<Public>> {
    let pem = std::fs::read(format!("{FIXTURES}/metadata/sp-signing.crt")).unwrap();
    vec![X509::from_pem(&pem).unwrap().public_key().unwrap()]
}

fn sp_encryption_cert() -> X509 {
    X509::from_pem(&std::fs::read(format!("{FIXTURES}/metadata/sp-encryption.crt")).unwrap())
        .unwrap()
}

fn sp_encryption_key() -> PKey<Private> {
    PKey::private_key_from_pem(
        &std::fs::read(format!("{FIXTURES}/metadata/sp-encryption.key")).unwrap(),
    )
    .unwrap()
}

fn fresh_id() -> String {
    let mut random = [0u8; 20];
    openssl::rand::rand_bytes(&mut random).unwrap();
    tessera::saml::envelope::new_id(random)
}

/// Now, to the second: samael checks every time against its own clock, so responses are issued now.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

fn name_id(value: &str, format: NameIdFormat) -> NameId {
    let scoped = matches!(format, NameIdFormat::Persistent | NameIdFormat::Transient);
    NameId {
        value: value.to_owned(),
        format,
        sp_name_qualifier: scoped.then(|| SP.to_owned()),
    }
}

fn attributes() -> Vec<Attribute> {
    vec![
        Attribute {
            name: "urn:oid:0.9.2342.19200300.100.1.3".into(),
            name_format: Some(URI_FORMAT.into()),
            friendly_name: Some("mail".into()),
            values: vec!["alice@example.org".into()],
        },
        Attribute {
            name: "eduPersonAffiliation".into(),
            name_format: Some(BASIC_FORMAT.into()),
            friendly_name: None,
            values: vec!["member".into(), "staff".into()],
        },
    ]
}

const LIFETIME_SECS: i64 = 300;
const SKEW_SECS: i64 = 120;

fn content(name: NameId, class: &str, attrs: Vec<Attribute>) -> AssertionContent {
    let t = now();
    AssertionContent {
        issuer: IDP.into(),
        response_id: fresh_id(),
        assertion_id: fresh_id(),
        issue_instant: t,
        acs_url: ACS.into(),
        in_response_to: Some(REQUEST_ID.into()),
        audience: SP.into(),
        name_id: name,
        lifetime: Duration::seconds(LIFETIME_SECS),
        clock_skew: Duration::seconds(SKEW_SECS),
        authn_instant: t - Duration::seconds(20),
        session_index: "_sess-4f1e2d3c".into(),
        session_not_on_or_after: Some(t + Duration::hours(8)),
        authn_context_class_ref: class.into(),
        attributes: attrs,
    }
}

fn default_content() -> AssertionContent {
    content(
        name_id("alice@example.org", NameIdFormat::EmailAddress),
        class_ref::PASSWORD_PROTECTED_TRANSPORT,
        attributes(),
    )
}

const TARGETS: [SignatureTarget; 3] = [
    SignatureTarget::Assertion,
    SignatureTarget::Response,
    SignatureTarget::Both,
];
const KINDS: [KeyKind; 2] = [KeyKind::Rsa2048, KeyKind::EcP256];

fn signs_assertion(t: SignatureTarget) -> bool {
    matches!(t, SignatureTarget::Assertion | SignatureTarget::Both)
}
fn signs_response(t: SignatureTarget) -> bool {
    matches!(t, SignatureTarget::Response | SignatureTarget::Both)
}

fn parse_doc(xml: &str) -> Element {
    xml::parse(xml.as_bytes(), &Limits::default()).unwrap_or_else(|e| panic!("{e}\n{xml}"))
}

fn local_names(e: &Element) -> Vec<&str> {
    e.elements().map(|c| c.local.as_str()).collect()
}

/// Asserts an `Err` matching the pattern, printing what came instead.
macro_rules! assert_refused {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!(
                "expected Err({}), got {:?}",
                stringify!($pattern),
                other
            ),
        }
    };
}

// ---------------------------------------------------------------------------------------------------
// Independent checkers
// ---------------------------------------------------------------------------------------------------

fn xmlsec1_present() {
    match Command::new("xmlsec1").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "xmlsec1 --version failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "xmlsec1 is required by the SAML interop tests and cannot be run ({e}); \
             install it with `apt-get install xmlsec1`"
        ),
    }
}

/// The Response's own signature (a direct child of the root).
const XPATH_RESPONSE_SIG: &str = "/*[local-name()='Response']/*[local-name()='Signature']";
/// The Assertion's signature, wherever the Assertion is.
const XPATH_ASSERTION_SIG: &str = "//*[local-name()='Assertion']/*[local-name()='Signature']";

/// `xmlsec1 --verify --id-attr:ID <Response> --id-attr:ID <Assertion> --pubkey-cert-pem idp.crt
/// --node-xpath <which signature> file.xml`: xmlsec1 verifies the one Signature node the XPath selects.
fn xmlsec1_verify(dir: &Path, xml: &str, cert_pem: &str, xpath: &str) -> Result<(), String> {
    xmlsec1_present();
    let file = dir.join("doc.xml");
    let cert = dir.join("idp.crt");
    std::fs::write(&file, xml).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let out = Command::new("xmlsec1")
        .arg("--verify")
        .args([
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:protocol:Response",
        ])
        .args([
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
        ])
        .args([
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
        ])
        .arg("--pubkey-cert-pem")
        .arg(&cert)
        .args(["--node-xpath", xpath])
        .arg(&file)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `xmlsec1 --decrypt --privkey-pem sp-encryption.key file.xml`, returning the decrypted document.
fn xmlsec1_decrypt(dir: &Path, xml: &str) -> Result<String, String> {
    xmlsec1_present();
    let file = dir.join("encrypted.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmlsec1")
        .arg("--decrypt")
        .arg("--privkey-pem")
        .arg(format!("{FIXTURES}/metadata/sp-encryption.key"))
        .arg(&file)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn idp_metadata(key: &SigningKey) -> IdpMetadata {
    IdpMetadata {
        entity_id: IDP.into(),
        sso_url: SSO.into(),
        slo_url: Some(SLO.into()),
        signing_certs: vec![key.certificate_base64().unwrap()],
        name_id_formats: vec![PERSISTENT.into(), EMAIL.into(), TRANSIENT.into()],
        want_authn_requests_signed: true,
        valid_until: Some(Utc::now() + Duration::days(7)),
    }
}

/// samael's SP, configured from the metadata Tessera publishes (so it trusts exactly the certificate
/// in it), with the signature algorithms restricted to the two Tessera signs with.
fn samael_sp(key: &SigningKey) -> samael::service_provider::ServiceProvider {
    let md = build_idp_metadata(&idp_metadata(key), "_tessera-md", Some(key)).unwrap();
    let entity = samael::metadata::EntityDescriptor::from_str(&md)
        .unwrap_or_else(|e| panic!("samael cannot read our metadata: {e}\n{md}"));
    samael::service_provider::ServiceProviderBuilder::default()
        .entity_id(SP.to_string())
        .acs_url(ACS.to_string())
        .idp_metadata(entity)
        .key(sp_encryption_key())
        .allowed_signature_algorithms(vec![
            samael::crypto::AllowedSignatureAlgorithm::RsaSha256,
            samael::crypto::AllowedSignatureAlgorithm::EcdsaSha256,
        ])
        .build()
        .unwrap()
}

/// samael's view of a response, through the base64 entry point an ACS uses.
fn samael_accepts(key: &SigningKey, xml: &str) -> samael::schema::Assertion {
    let sp = samael_sp(key);
    let b64 = base64::engine::general_purpose::STANDARD.encode(xml);
    sp.parse_base64_response(&b64, Some(&[REQUEST_ID]))
        .unwrap_or_else(|e| panic!("samael refused the response: {e}\n{xml}"))
}

/// An attribute as (Name, NameFormat, FriendlyName, values), for comparing samael's view with ours.
type AttributeView<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Vec<&'a str>,
);

/// Everything samael read must be what the assertion content said.
fn check_samael_assertion(a: &samael::schema::Assertion, c: &AssertionContent) {
    assert_eq!(a.id, c.assertion_id);
    assert_eq!(a.issuer.value.as_deref(), Some(IDP));
    assert_eq!(a.issue_instant, c.issue_instant);
    let subject = a.subject.as_ref().unwrap();
    let nid = subject.name_id.as_ref().unwrap();
    assert_eq!(nid.value, c.name_id.value);
    assert_eq!(nid.format.as_deref(), Some(c.name_id.format.uri()));
    let confirmations = subject.subject_confirmations.as_ref().unwrap();
    assert_eq!(confirmations.len(), 1);
    assert_eq!(
        confirmations[0].method.as_deref(),
        Some("urn:oasis:names:tc:SAML:2.0:cm:bearer")
    );
    let data = confirmations[0].subject_confirmation_data.as_ref().unwrap();
    assert_eq!(data.recipient.as_deref(), Some(ACS));
    assert_eq!(data.in_response_to.as_deref(), Some(REQUEST_ID));
    assert_eq!(
        data.not_on_or_after,
        Some(c.issue_instant + Duration::seconds(LIFETIME_SECS))
    );
    // saml-profiles 4.1.4.2: a bearer confirmation carries no NotBefore.
    assert_eq!(data.not_before, None);
    let conditions = a.conditions.as_ref().unwrap();
    // NotBefore is backdated by the clock skew; NotOnOrAfter is the lifetime.
    assert_eq!(
        conditions.not_before,
        Some(c.issue_instant - Duration::seconds(SKEW_SECS))
    );
    assert_eq!(
        conditions.not_on_or_after,
        Some(c.issue_instant + Duration::seconds(LIFETIME_SECS))
    );
    let audiences: Vec<&str> = conditions
        .audience_restrictions
        .as_ref()
        .unwrap()
        .iter()
        .flat_map(|r| r.audience.iter().map(String::as_str))
        .collect();
    assert_eq!(audiences, [SP]);
    let statements = a.authn_statements.as_ref().unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(
        statements[0].session_index.as_deref(),
        Some(c.session_index.as_str())
    );
    assert_eq!(statements[0].authn_instant, Some(c.authn_instant));
    assert_eq!(
        statements[0].session_not_on_or_after,
        c.session_not_on_or_after
    );
    let class = statements[0]
        .authn_context
        .as_ref()
        .and_then(|ctx| ctx.value.as_ref())
        .and_then(|r| r.value.as_deref());
    assert_eq!(class, Some(c.authn_context_class_ref.as_str()));
    let got: Vec<AttributeView<'_>> = a
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| s.attributes.iter())
        .map(|attr| {
            (
                attr.name.as_deref(),
                attr.name_format.as_deref(),
                attr.friendly_name.as_deref(),
                attr.values
                    .iter()
                    .map(|v| v.value.as_deref().unwrap_or(""))
                    .collect(),
            )
        })
        .collect();
    let want: Vec<AttributeView<'_>> = c
        .attributes
        .iter()
        .map(|attr| {
            (
                Some(attr.name.as_str()),
                attr.name_format.as_deref(),
                attr.friendly_name.as_deref(),
                attr.values.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
}

/// saml-core 5.4.1 and the schema sequences (2.3.3 Assertion, 3.2.2 StatusResponseType): the Signature
/// follows Issuer directly, and is there exactly when that element is signed.
fn check_signature_placement(doc: &Element, target: SignatureTarget, encrypted: bool) {
    let names = local_names(doc);
    let want: &[&str] = match (signs_response(target), encrypted) {
        (true, false) => &["Issuer", "Signature", "Status", "Assertion"],
        (true, true) => &["Issuer", "Signature", "Status", "EncryptedAssertion"],
        (false, false) => &["Issuer", "Status", "Assertion"],
        (false, true) => &["Issuer", "Status", "EncryptedAssertion"],
    };
    assert_eq!(names, want, "{target:?} Response children");
    if let Some(assertion) = doc.child(ns::SAML, "Assertion") {
        check_assertion_placement(assertion, target);
    }
}

fn check_assertion_placement(assertion: &Element, target: SignatureTarget) {
    let names = local_names(assertion);
    let mut want = vec!["Issuer"];
    if signs_assertion(target) {
        want.push("Signature");
    }
    want.extend([
        "Subject",
        "Conditions",
        "AuthnStatement",
        "AttributeStatement",
    ]);
    assert_eq!(names, want, "{target:?} Assertion children");
}

/// Checks the SignedInfo profile of every signature in `doc`: exclusive c14n, SHA-256 digest, the
/// key's own algorithm, the Reference at the enclosing element's ID.
fn check_signature_profile(doc: &Element, algorithm: &str) -> usize {
    let mut count = 0;
    for e in doc.descendants() {
        let Some(sig) = e.child(ns::DS, "Signature") else {
            continue;
        };
        count += 1;
        let si = sig.child(ns::DS, "SignedInfo").unwrap();
        assert_eq!(
            si.child(ns::DS, "SignatureMethod")
                .unwrap()
                .attr("Algorithm"),
            Some(algorithm)
        );
        let reference = si.child(ns::DS, "Reference").unwrap();
        assert_eq!(
            reference.attr("URI").map(str::to_owned),
            Some(format!("#{}", e.attr("ID").unwrap()))
        );
        assert_eq!(
            reference
                .child(ns::DS, "DigestMethod")
                .unwrap()
                .attr("Algorithm"),
            Some(SHA256)
        );
    }
    count
}

fn algorithm_uri(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Rsa2048 => RSA_SHA256,
        KeyKind::EcP256 => ECDSA_SHA256,
    }
}

// ---------------------------------------------------------------------------------------------------
// A. Interop of what Tessera signs
// ---------------------------------------------------------------------------------------------------

fn signed_responses_interoperate(kind: KeyKind) {
    let idp = idp_key(kind);
    let dir = tempfile::tempdir().unwrap();
    for target in TARGETS {
        let c = default_content();
        let xml = build_response(&c, &idp.key, target, None).unwrap();
        let doc = parse_doc(&xml);
        check_signature_placement(&doc, target, false);
        let expected_signatures =
            usize::from(signs_assertion(target)) + usize::from(signs_response(target));
        assert_eq!(
            check_signature_profile(&doc, algorithm_uri(kind)),
            expected_signatures
        );
        if signs_response(target) {
            xmlsec1_verify(dir.path(), &xml, &idp.cert_pem, XPATH_RESPONSE_SIG).unwrap_or_else(
                |e| {
                    panic!(
                        "{kind:?} {target:?}: xmlsec1 refused the Response signature: {e}\n{xml}"
                    )
                },
            );
        }
        if signs_assertion(target) {
            xmlsec1_verify(dir.path(), &xml, &idp.cert_pem, XPATH_ASSERTION_SIG).unwrap_or_else(
                |e| {
                    panic!(
                        "{kind:?} {target:?}: xmlsec1 refused the Assertion signature: {e}\n{xml}"
                    )
                },
            );
        }
        let assertion = samael_accepts(&idp.key, &xml);
        check_samael_assertion(&assertion, &c);
        // The XML entry point agrees with the base64 one.
        let again = samael_sp(&idp.key)
            .parse_xml_response(&xml, Some(&[REQUEST_ID]))
            .unwrap_or_else(|e| panic!("{kind:?} {target:?}: samael parse_xml_response: {e}"));
        assert_eq!(again.id, c.assertion_id);
    }
}

#[test]
fn rsa_signed_responses_are_accepted_by_xmlsec1_and_samael() {
    signed_responses_interoperate(KeyKind::Rsa2048);
}

#[test]
fn ecdsa_signed_responses_are_accepted_by_xmlsec1_and_samael() {
    signed_responses_interoperate(KeyKind::EcP256);
}

#[test]
fn the_interop_checks_can_fail() {
    // Without this, "xmlsec1 and samael accept" could mean "they accept anything".
    for (kind, other_kind) in [
        (KeyKind::Rsa2048, KeyKind::EcP256),
        (KeyKind::EcP256, KeyKind::Rsa2048),
    ] {
        interop_checks_can_fail(idp_key(kind), idp_key(other_kind));
    }
}

fn interop_checks_can_fail(idp: &IdpKey, other: &IdpKey) {
    let dir = tempfile::tempdir().unwrap();
    let c = default_content();
    let xml = build_response(&c, &idp.key, SignatureTarget::Both, None).unwrap();

    // A changed Destination (Response only): the Response signature breaks, the Assertion's does not,
    // which also shows that each XPath picks its own signature.
    let moved = xml.replacen(
        &format!("Destination=\"{ACS}\""),
        "Destination=\"https://evil.example/acs\"",
        1,
    );
    assert_ne!(moved, xml);
    assert!(xmlsec1_verify(dir.path(), &moved, &idp.cert_pem, XPATH_RESPONSE_SIG).is_err());
    xmlsec1_verify(dir.path(), &moved, &idp.cert_pem, XPATH_ASSERTION_SIG).unwrap();

    // A changed attribute value: both signatures cover it.
    let changed = xml.replacen(
        "alice@example.org</saml:AttributeValue>",
        "mallory@example.org</saml:AttributeValue>",
        1,
    );
    assert_ne!(changed, xml);
    assert!(xmlsec1_verify(dir.path(), &changed, &idp.cert_pem, XPATH_ASSERTION_SIG).is_err());
    assert!(xmlsec1_verify(dir.path(), &changed, &idp.cert_pem, XPATH_RESPONSE_SIG).is_err());
    assert!(samael_sp(&idp.key)
        .parse_xml_response(&changed, Some(&[REQUEST_ID]))
        .is_err());

    // Another IdP key: neither checker trusts it.
    assert!(xmlsec1_verify(dir.path(), &xml, &other.cert_pem, XPATH_RESPONSE_SIG).is_err());
    assert!(xmlsec1_verify(dir.path(), &xml, &other.cert_pem, XPATH_ASSERTION_SIG).is_err());
    assert!(samael_sp(&other.key)
        .parse_xml_response(&xml, Some(&[REQUEST_ID]))
        .is_err());

    // samael checks InResponseTo, Audience and Recipient, so the field checks above are meaningful.
    assert!(samael_sp(&idp.key)
        .parse_xml_response(&xml, Some(&["_someOtherRequest"]))
        .is_err());
    let mut wrong_audience = default_content();
    wrong_audience.audience = OTHER_SP.into();
    let xml = build_response(&wrong_audience, &idp.key, SignatureTarget::Both, None).unwrap();
    assert!(samael_sp(&idp.key)
        .parse_xml_response(&xml, Some(&[REQUEST_ID]))
        .is_err());
    let mut wrong_recipient = default_content();
    wrong_recipient.acs_url = "https://sp.example.org/other-acs".into();
    let xml = build_response(&wrong_recipient, &idp.key, SignatureTarget::Assertion, None).unwrap();
    assert!(samael_sp(&idp.key)
        .parse_xml_response(&xml, Some(&[REQUEST_ID]))
        .is_err());
}

#[test]
fn encrypted_assertions_are_decrypted_and_verified_by_xmlsec1_and_samael() {
    let dir = tempfile::tempdir().unwrap();
    let cert = sp_encryption_cert();
    for kind in KINDS {
        let idp = idp_key(kind);
        for target in TARGETS {
            for method in [
                DataEncryption::Aes128Cbc,
                DataEncryption::Aes128Gcm,
                DataEncryption::Aes256Gcm,
            ] {
                let label = format!("{kind:?} {target:?} {method:?}");
                let c = default_content();
                let encrypt = |a: &Element| {
                    encrypt_assertion(a, &cert, method)
                        .map_err(|e| response::Error::Encrypt(e.to_string()))
                };
                let xml = build_response(&c, &idp.key, target, Some(&encrypt)).unwrap();
                let doc = parse_doc(&xml);
                check_signature_placement(&doc, target, true);
                assert!(
                    !xml.contains("alice@example.org"),
                    "{label}: plaintext leaked"
                );
                let encrypted = doc.child(ns::SAML, "EncryptedAssertion").unwrap();
                let data = encrypted.child(ns::XENC, "EncryptedData").unwrap();
                assert_eq!(
                    data.child(ns::XENC, "EncryptionMethod")
                        .unwrap()
                        .attr("Algorithm"),
                    Some(method.uri())
                );
                if signs_response(target) {
                    xmlsec1_verify(dir.path(), &xml, &idp.cert_pem, XPATH_RESPONSE_SIG)
                        .unwrap_or_else(|e| {
                            panic!("{label}: xmlsec1 refused the Response signature: {e}")
                        });
                }
                // xmlsec1 decrypts (replacing EncryptedData by the Assertion), then verifies the
                // assertion's own signature, made before encryption (saml-core 6.2).
                let decrypted = xmlsec1_decrypt(dir.path(), &xml)
                    .unwrap_or_else(|e| panic!("{label}: xmlsec1 cannot decrypt: {e}"));
                let decrypted_doc = parse_doc(&decrypted);
                let assertion = decrypted_doc
                    .child(ns::SAML, "EncryptedAssertion")
                    .and_then(|e| e.child(ns::SAML, "Assertion"))
                    .unwrap_or_else(|| {
                        panic!("{label}: no Assertion after decryption: {decrypted}")
                    });
                assert_eq!(assertion.attr("ID"), Some(c.assertion_id.as_str()));
                check_assertion_placement(assertion, target);
                if signs_assertion(target) {
                    xmlsec1_verify(dir.path(), &decrypted, &idp.cert_pem, XPATH_ASSERTION_SIG)
                        .unwrap_or_else(|e| {
                            panic!(
                                "{label}: xmlsec1 refused the decrypted Assertion's signature: {e}"
                            )
                        });
                }
                // samael 0.0.22 decrypts aes128-cbc and aes128-gcm only, and checks signatures before it
                // decrypts, so it can only accept an encrypted assertion inside a signed Response.
                let samael_can = method != DataEncryption::Aes256Gcm && signs_response(target);
                if samael_can {
                    let a = samael_accepts(&idp.key, &xml);
                    check_samael_assertion(&a, &c);
                }
            }
        }
    }
}

#[test]
fn every_name_id_format_arrives_as_issued() {
    let idp = idp_key(KeyKind::EcP256);
    let secret = b"tessera test persistent-id secret, 32+ bytes long";

    // saml-core 8.3.7: persistent identifiers are opaque, stable per user and SP, different per SP.
    let alice_here = persistent_name_id(secret, "user-42", SP).unwrap();
    assert_eq!(
        alice_here,
        persistent_name_id(secret, "user-42", SP).unwrap()
    );
    assert_ne!(
        alice_here,
        persistent_name_id(secret, "user-42", OTHER_SP).unwrap()
    );
    assert_ne!(
        alice_here,
        persistent_name_id(secret, "user-43", SP).unwrap()
    );
    assert_ne!(
        alice_here,
        persistent_name_id(b"another secret", "user-42", SP).unwrap()
    );
    assert!(!alice_here.contains("user-42") && !alice_here.contains("example"));
    assert_eq!(alice_here.len(), 64);

    let cases = [
        (
            NameIdFormat::EmailAddress,
            EMAIL,
            "alice@example.org".to_owned(),
        ),
        (NameIdFormat::Persistent, PERSISTENT, alice_here.clone()),
        (NameIdFormat::Transient, TRANSIENT, fresh_id()),
        (NameIdFormat::Unspecified, UNSPECIFIED, "alice".to_owned()),
    ];
    for (format, uri, value) in cases {
        assert_eq!(format.uri(), uri);
        assert_eq!(NameIdFormat::from_uri(uri), Some(format));
        let c = content(name_id(&value, format), PPT, attributes());
        let xml = build_response(&c, &idp.key, SignatureTarget::Both, None).unwrap();
        let a = samael_accepts(&idp.key, &xml);
        check_samael_assertion(&a, &c);
        let nid = a.subject.unwrap().name_id.unwrap();
        assert_eq!(
            (nid.format.as_deref(), nid.value.as_str()),
            (Some(uri), value.as_str())
        );
        // SPNameQualifier names the SP for the identifiers scoped to it (saml-core 2.2.2, 8.3.7).
        let doc = parse_doc(&xml);
        let our_nid = doc
            .child(ns::SAML, "Assertion")
            .and_then(|a| a.child(ns::SAML, "Subject"))
            .and_then(|s| s.child(ns::SAML, "NameID"))
            .unwrap();
        let scoped = matches!(format, NameIdFormat::Persistent | NameIdFormat::Transient);
        assert_eq!(our_nid.attr("SPNameQualifier"), scoped.then_some(SP));
    }
    // The same user seen by the other SP gets the other identifier, end to end.
    let mut other = content(
        NameId {
            value: persistent_name_id(secret, "user-42", OTHER_SP).unwrap(),
            format: NameIdFormat::Persistent,
            sp_name_qualifier: Some(OTHER_SP.into()),
        },
        PPT,
        attributes(),
    );
    other.audience = OTHER_SP.into();
    let xml = build_response(&other, &idp.key, SignatureTarget::Both, None).unwrap();
    assert!(!xml.contains(&alice_here));
}

#[test]
fn authn_context_class_refs_for_password_and_mfa() {
    assert_eq!(class_ref::PASSWORD_PROTECTED_TRANSPORT, PPT);
    assert_eq!(class_ref::REFEDS_MFA, MFA);
    let idp = idp_key(KeyKind::Rsa2048);
    for class in [PPT, MFA] {
        let c = content(
            name_id("alice@example.org", NameIdFormat::EmailAddress),
            class,
            attributes(),
        );
        let xml = build_response(&c, &idp.key, SignatureTarget::Assertion, None).unwrap();
        let a = samael_accepts(&idp.key, &xml);
        check_samael_assertion(&a, &c);
    }
}

#[test]
fn without_attributes_there_is_no_empty_attribute_statement() {
    // saml-core 2.7.3: an AttributeStatement holds at least one Attribute.
    let idp = idp_key(KeyKind::EcP256);
    let c = content(name_id("alice", NameIdFormat::Unspecified), PPT, Vec::new());
    let xml = build_response(&c, &idp.key, SignatureTarget::Both, None).unwrap();
    let doc = parse_doc(&xml);
    assert_eq!(
        local_names(doc.child(ns::SAML, "Assertion").unwrap()),
        [
            "Issuer",
            "Signature",
            "Subject",
            "Conditions",
            "AuthnStatement"
        ]
    );
    let a = samael_accepts(&idp.key, &xml);
    assert!(a.attribute_statements.is_none());
}

#[test]
fn idp_initiated_response_has_no_in_response_to() {
    // saml-profiles 4.1.5: an unsolicited response names no request.
    let idp = idp_key(KeyKind::Rsa2048);
    let mut c = default_content();
    c.in_response_to = None;
    let xml = build_response(&c, &idp.key, SignatureTarget::Both, None).unwrap();
    assert!(!xml.contains("InResponseTo"));
    let mut sp = samael_sp(&idp.key);
    // samael refuses it unless told to accept IdP-initiated SSO, and then it verifies and reads it.
    assert!(sp.parse_xml_response(&xml, Some(&[REQUEST_ID])).is_err());
    sp.allow_idp_initiated = true;
    let a = sp.parse_xml_response(&xml, None).unwrap();
    assert_eq!(a.id, c.assertion_id);
}

/// The error statuses Tessera sends, with the top-level code each goes under (saml-core 3.2.2.2).
fn error_statuses() -> Vec<(Status, &'static str, &'static str)> {
    let requester = "urn:oasis:names:tc:SAML:2.0:status:Requester";
    let responder = "urn:oasis:names:tc:SAML:2.0:status:Responder";
    vec![
        (
            Status::error(StatusCode::Responder, SubStatusCode::NoPassive),
            responder,
            "urn:oasis:names:tc:SAML:2.0:status:NoPassive",
        ),
        (
            Status::error(StatusCode::Requester, SubStatusCode::RequestDenied),
            requester,
            "urn:oasis:names:tc:SAML:2.0:status:RequestDenied",
        ),
        (
            Status::error(StatusCode::Responder, SubStatusCode::AuthnFailed),
            responder,
            "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed",
        ),
        (
            Status::error(StatusCode::Responder, SubStatusCode::NoAuthnContext),
            responder,
            "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext",
        ),
        (
            Status::error(StatusCode::Responder, SubStatusCode::UnsupportedBinding),
            responder,
            "urn:oasis:names:tc:SAML:2.0:status:UnsupportedBinding",
        ),
        (
            Status::error(StatusCode::Requester, SubStatusCode::InvalidNameIdPolicy),
            requester,
            "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy",
        ),
    ]
}

#[test]
fn error_responses_carry_both_status_levels_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    for kind in KINDS {
        let idp = idp_key(kind);
        for (status, top, second) in error_statuses() {
            let e = ErrorResponse {
                issuer: IDP.into(),
                response_id: fresh_id(),
                issue_instant: now(),
                acs_url: ACS.into(),
                in_response_to: Some(REQUEST_ID.into()),
                status: status.with_message("Sign-in could not be completed"),
            };
            let xml = build_error_response(&e, &idp.key).unwrap();
            let doc = parse_doc(&xml);
            // StatusResponseType: Issuer, Signature, Status, and no assertion.
            assert_eq!(local_names(&doc), ["Issuer", "Signature", "Status"]);
            assert_eq!(doc.attr("InResponseTo"), Some(REQUEST_ID));
            assert_eq!(doc.attr("Destination"), Some(ACS));
            let status_el = doc.child(ns::SAMLP, "Status").unwrap();
            let code = status_el.child(ns::SAMLP, "StatusCode").unwrap();
            assert_eq!(code.attr("Value"), Some(top));
            let nested: Vec<&Element> = code.elements().collect();
            assert_eq!(nested.len(), 1);
            assert!(nested[0].is(ns::SAMLP, "StatusCode"));
            assert_eq!(nested[0].attr("Value"), Some(second));
            assert_eq!(
                status_el
                    .child(ns::SAMLP, "StatusMessage")
                    .unwrap()
                    .text()
                    .unwrap(),
                "Sign-in could not be completed"
            );
            assert_eq!(check_signature_profile(&doc, algorithm_uri(kind)), 1);
            xmlsec1_verify(dir.path(), &xml, &idp.cert_pem, XPATH_RESPONSE_SIG)
                .unwrap_or_else(|e| panic!("{kind:?} {second}: xmlsec1 refused: {e}\n{xml}"));
            // samael verifies the signature, then reports the top-level code as the failure.
            let parsed = samael::schema::Response::from_str(&xml).unwrap();
            assert_eq!(
                parsed.status.as_ref().unwrap().status_code.value.as_deref(),
                Some(top)
            );
            match samael_sp(&idp.key).parse_xml_response(&xml, Some(&[REQUEST_ID])) {
                Err(samael::service_provider::Error::ResponseBadStatusCode { code }) => {
                    assert_eq!(code, top)
                }
                other => panic!("{second}: samael said {other:?}"),
            }
            // And our own reader of statuses reads back what was written.
            assert_eq!(
                Status::from_element(status_el)
                    .unwrap()
                    .second
                    .unwrap()
                    .uri(),
                second
            );
        }
    }
}

#[test]
fn idp_metadata_signature_verifies_and_samael_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    for kind in KINDS {
        let idp = idp_key(kind);
        let md =
            build_idp_metadata(&idp_metadata(&idp.key), "_tessera-md-1", Some(&idp.key)).unwrap();
        let doc = parse_doc(&md);
        // saml-metadata 2.3.2: the Signature is the EntityDescriptor's first child.
        assert_eq!(local_names(&doc), ["Signature", "IDPSSODescriptor"]);
        assert_eq!(check_signature_profile(&doc, algorithm_uri(kind)), 1);
        xmlsec1_verify(
            dir.path(),
            &md,
            &idp.cert_pem,
            "/*[local-name()='EntityDescriptor']/*[local-name()='Signature']",
        )
        .unwrap_or_else(|e| panic!("{kind:?}: xmlsec1 refused our metadata: {e}\n{md}"));
        verify_metadata_signature(md.as_bytes(), idp.key.certificate()).unwrap();
        let entity = samael::metadata::EntityDescriptor::from_str(&md).unwrap();
        assert_eq!(entity.entity_id.as_deref(), Some(IDP));
        let sp = samael_sp(&idp.key);
        let certs = sp.idp_signing_certs().unwrap().unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].der_data(), idp.key.certificate().to_der().unwrap());
    }
}

// ---------------------------------------------------------------------------------------------------
// B. Hostile input
// ---------------------------------------------------------------------------------------------------

fn destinations() -> &'static [String] {
    static D: OnceLock<Vec<String>> = OnceLock::new();
    D.get_or_init(|| vec![SSO.to_owned(), SLO.to_owned()])
}

fn ctx() -> RequestContext<'static> {
    RequestContext {
        now: fixture_now(),
        max_clock_skew: Duration::seconds(60),
        max_age: Duration::minutes(5),
        destinations: destinations(),
        limits: Limits::default(),
    }
}

fn parse_request(xml: &str) -> Result<UnverifiedAuthnRequest, RequestError> {
    parse_authn_request(xml.as_bytes(), &ctx())
}

/// What an SP sends: a POST AuthnRequest, unsigned.
fn sp_request(id: &str) -> Element {
    Element::new("samlp", "AuthnRequest", ns::SAMLP)
        .declare("samlp", ns::SAMLP)
        .declare("saml", ns::SAML)
        .with_attr("ID", id)
        .with_attr("Version", "2.0")
        .with_attr("IssueInstant", FIXTURE_INSTANT)
        .with_attr("Destination", SSO)
        .with_attr("AssertionConsumerServiceURL", ACS)
        .with_attr("ProtocolBinding", POST_BINDING)
        .with_child(Element::new("saml", "Issuer", ns::SAML).with_text(SP))
        .with_child(
            Element::new("samlp", "NameIDPolicy", ns::SAMLP)
                .with_attr("Format", PERSISTENT)
                .with_attr("AllowCreate", "true"),
        )
}

fn signed_request(key: &SigningKey) -> String {
    let mut request = sp_request("_r1");
    sign_enveloped(&mut request, key).unwrap();
    request.to_xml()
}

/// The attacker's root: its own ID and ACS, the SP's Issuer.
fn evil_root(id: &str) -> Element {
    Element::new("samlp", "AuthnRequest", ns::SAMLP)
        .declare("samlp", ns::SAMLP)
        .declare("saml", ns::SAML)
        .with_attr("ID", id)
        .with_attr("Version", "2.0")
        .with_attr("IssueInstant", FIXTURE_INSTANT)
        .with_attr("Destination", SSO)
        .with_attr("AssertionConsumerServiceURL", "https://evil.example/acs")
        .with_child(Element::new("saml", "Issuer", ns::SAML).with_text(SP))
}

fn extensions(child: Element) -> Element {
    Element::new("samlp", "Extensions", ns::SAMLP).with_child(child)
}

/// Splits a signed request into (request without its Signature, the Signature).
fn take_signature(xml: &str) -> (Element, Element) {
    let mut root = parse_doc(xml);
    let at = root
        .children
        .iter()
        .position(|n| matches!(n, Node::Element(e) if e.is(ns::DS, "Signature")))
        .unwrap();
    let Node::Element(sig) = root.children.remove(at) else {
        unreachable!()
    };
    (root, sig)
}

fn verify_post(xml: &str, keys: &[PKey<Public>]) -> Result<Trust, EnvelopeError> {
    let unverified = parse_request(xml).unwrap_or_else(|e| panic!("parse: {e}\n{xml}"));
    unverified
        .verify_post(keys, &VerifyPolicy::default(), true)
        .map(|v| v.trust().clone())
}

/// Every signature-wrapping and reference trick on one signed request (from any signer).
fn xsw_suite(signed: &str, keys: &[PKey<Public>]) {
    // The control: the untouched request verifies, on the very tree its fields are read from.
    assert!(matches!(
        verify_post(signed, keys),
        Ok(Trust::XmlSignature(_))
    ));
    let (original, sig) = take_signature(signed);
    let id = original.attr("ID").unwrap().to_owned();

    // XSW: wrapped root. The attacker's request carries the genuine Signature, whose Reference still
    // names the original, now tucked away in Extensions.
    let wrapped = evil_root("_evil")
        .with_child(sig.clone())
        .with_child(extensions(original.clone()));
    assert_refused!(
        verify_post(&wrapped.to_xml(), keys),
        EnvelopeError::Signature(SigError::ReferenceNotRoot)
    );

    // XSW: the original inside the Signature's ds:Object (the classic XSW #1 shape).
    let object = Element::new("ds", "Object", ns::DS).with_child(original.clone());
    let wrapped = evil_root("_evil")
        .with_child(sig.clone().with_child(object))
        .with_child(Element::new("samlp", "NameIDPolicy", ns::SAMLP));
    assert_refused!(
        verify_post(&wrapped.to_xml(), keys),
        EnvelopeError::Signature(SigError::MalformedSignature(_))
    );

    // Moved signature: to the end of the request, out of its schema place after Issuer.
    let mut moved = original.clone();
    moved.children.push(Node::Element(sig.clone()));
    assert_refused!(
        parse_request(&moved.to_xml()),
        RequestError::Envelope(EnvelopeError::UnexpectedElement { element, .. }) if element == "Signature"
    );
    // Moved signature: the intact signed original wrapped whole; the new root is not signed at all.
    let wrapped = evil_root("_evil").with_child(extensions(parse_doc(signed)));
    assert_refused!(
        verify_post(&wrapped.to_xml(), keys),
        EnvelopeError::SignatureRequired
    );

    // Duplicate IDs: the attacker's root takes the original's ID so the Reference seems to fit.
    let same_id = evil_root(&id)
        .with_child(sig.clone())
        .with_child(extensions(original.clone()));
    assert_refused!(
        parse_request(&same_id.to_xml()),
        RequestError::Envelope(EnvelopeError::DuplicateId(dup)) if dup == id
    );
    // ... or an element with the root's ID appears inside the signed request.
    let decoy = signed.replacen(
        "<samlp:NameIDPolicy",
        &format!(r#"<samlp:Extensions><samlp:AuthnRequest ID="{id}"/></samlp:Extensions><samlp:NameIDPolicy"#),
        1,
    );
    assert_ne!(decoy, signed);
    assert_refused!(
        parse_request(&decoy),
        RequestError::Envelope(EnvelopeError::DuplicateId(dup)) if dup == id
    );

    // Reference to a child: a signature that really covers only an inner element does not sign the
    // request around it.
    let signer = sp_key(KeyKind::Rsa2048);
    let mut inner = Element::new("samlp", "Extensions", ns::SAMLP).with_attr("ID", "_inner");
    sign_enveloped(&mut inner, signer).unwrap();
    let inner_sig = inner.child(ns::DS, "Signature").unwrap().clone();
    inner.children.clear();
    let mut child_signed = original.clone();
    child_signed.children.insert(1, Node::Element(inner_sig));
    child_signed.children.insert(2, Node::Element(inner));
    assert_refused!(
        verify_post(&child_signed.to_xml(), &public(signer)),
        EnvelopeError::Signature(SigError::ReferenceNotRoot)
    );

    // A Reference pointing elsewhere: another ID, or the whole document.
    let elsewhere = signed.replacen(&format!("URI=\"#{id}\""), "URI=\"#_elsewhere\"", 1);
    assert_ne!(elsewhere, signed);
    assert_refused!(
        verify_post(&elsewhere, keys),
        EnvelopeError::Signature(SigError::ReferenceNotRoot)
    );
    let whole = signed.replacen(&format!("URI=\"#{id}\""), "URI=\"\"", 1);
    assert_refused!(
        verify_post(&whole, keys),
        EnvelopeError::Signature(SigError::ReferenceNotRoot)
    );

    // And a plain change after signing breaks the digest.
    let changed = signed.replacen(PERSISTENT, TRANSIENT, 1);
    assert_ne!(changed, signed);
    assert_refused!(
        verify_post(&changed, keys),
        EnvelopeError::Signature(SigError::DigestMismatch)
    );
}

#[test]
fn xsw_variants_on_requests_signed_by_tessera_are_refused() {
    for kind in KINDS {
        let key = sp_key(kind);
        xsw_suite(&signed_request(key), &public(key));
    }
}

#[test]
fn xsw_variants_on_a_request_signed_by_xmlsec1_are_refused() {
    // The same attacks on a request whose signature an independent signer made.
    xsw_suite(
        &fixture_str("authn-request-xmlsec1-signed.xml"),
        &fixture_sp_keys(),
    );
}

#[test]
fn wrong_key_is_refused() {
    let xml = signed_request(sp_key(KeyKind::Rsa2048));
    let (other, _, _) =
        generate_self_signed(KeyKind::Rsa2048, "someone-else", fixture_now(), 1).unwrap();
    assert_refused!(
        verify_post(&xml, &public(&other)),
        EnvelopeError::Signature(SigError::BadSignature)
    );
    // A key of the other family cannot verify an RSA signature either.
    assert_refused!(
        verify_post(&xml, &public(sp_key(KeyKind::EcP256))),
        EnvelopeError::Signature(SigError::BadSignature)
    );
    // No key at all (metadata without a signing certificate).
    assert_refused!(
        verify_post(&xml, &[]),
        EnvelopeError::Signature(SigError::NoTrustedKeys)
    );
}

/// The request signed with rsa-sha1 instead (digest unchanged), by re-signing the SignedInfo.
fn sha1_signed_request(key: &SigningKey) -> String {
    let xml = signed_request(key).replacen(RSA_SHA256, RSA_SHA1, 1);
    let mut doc = parse_doc(&xml);
    let sig = doc
        .elements_mut()
        .find(|e| e.is(ns::DS, "Signature"))
        .unwrap();
    let signed_info = sig.child(ns::DS, "SignedInfo").unwrap().clone();
    let value = SignatureAlgorithm::RsaSha1
        .sign(
            key.private_key(),
            &canonicalize(&signed_info, &Options::default()),
        )
        .unwrap();
    let sv = sig
        .elements_mut()
        .find(|e| e.is(ns::DS, "SignatureValue"))
        .unwrap();
    sv.children = vec![Node::Text(
        base64::engine::general_purpose::STANDARD.encode(value),
    )];
    doc.to_xml()
}

#[test]
fn disallowed_signature_algorithms_are_refused() {
    let key = sp_key(KeyKind::Rsa2048);
    let keys = public(key);
    let sha1 = sha1_signed_request(key);
    assert_refused!(
        verify_post(&sha1, &keys),
        EnvelopeError::Signature(SigError::DisallowedAlgorithm(uri)) if uri == RSA_SHA1
    );
    // The signature itself is sound: with SHA-1 allowed for this SP it verifies.
    let allowed = parse_request(&sha1)
        .unwrap()
        .verify_post(&keys, &VerifyPolicy { allow_sha1: true }, true)
        .unwrap();
    assert!(
        matches!(allowed.trust(), Trust::XmlSignature(v) if v.algorithm == SignatureAlgorithm::RsaSha1)
    );

    // HMAC (a shared-secret "signature", and CVE-2009-0217's HMACOutputLength) is never accepted.
    let hmac = signed_request(key).replacen(RSA_SHA256, HMAC_SHA1, 1);
    assert_refused!(
        verify_post(&hmac, &keys),
        EnvelopeError::Signature(SigError::DisallowedAlgorithm(uri)) if uri == HMAC_SHA1
    );
    let truncated = signed_request(key).replacen(
        &format!(r#"<ds:SignatureMethod Algorithm="{RSA_SHA256}"/>"#),
        &format!(r#"<ds:SignatureMethod Algorithm="{HMAC_SHA1}"><ds:HMACOutputLength>8</ds:HMACOutputLength></ds:SignatureMethod>"#),
        1,
    );
    assert_refused!(
        verify_post(&truncated, &keys),
        EnvelopeError::Signature(SigError::DisallowedAlgorithm(uri)) if uri == HMAC_SHA1
    );

    // The same rules for HTTP-Redirect: rsa-sha1 decodes but does not verify unless allowed...
    let unsigned = encode_redirect(
        MessageKind::Request,
        sp_request("_rd1").to_xml().as_bytes(),
        None,
        SSO,
        None,
    )
    .unwrap();
    let query = unsigned.split_once('?').unwrap().1;
    let alg: String = url::form_urlencoded::byte_serialize(RSA_SHA1.as_bytes()).collect();
    let signed_part = format!("{query}&SigAlg={alg}");
    let value = SignatureAlgorithm::RsaSha1
        .sign(key.private_key(), signed_part.as_bytes())
        .unwrap();
    let b64: String = url::form_urlencoded::byte_serialize(
        base64::engine::general_purpose::STANDARD
            .encode(value)
            .as_bytes(),
    )
    .collect();
    let sha1_query = format!("{signed_part}&Signature={b64}");
    let message = decode_redirect(sha1_query.as_bytes(), &binding::Limits::DEFAULT).unwrap();
    let request = parse_authn_request(&message.xml, &ctx()).unwrap();
    assert_refused!(
        request.clone().verify_redirect(message.signature.as_ref(), &keys, false, true),
        EnvelopeError::RedirectSignature(binding::Error::DisallowedAlgorithm(uri)) if uri == RSA_SHA1
    );
    assert!(request
        .verify_redirect(message.signature.as_ref(), &keys, true, true)
        .is_ok());
    // ... and an algorithm off the list is refused while decoding.
    let hmac_alg: String = url::form_urlencoded::byte_serialize(HMAC_SHA1.as_bytes()).collect();
    let hmac_query = sha1_query.replacen(&alg, &hmac_alg, 1);
    assert_eq!(
        decode_redirect(hmac_query.as_bytes(), &binding::Limits::DEFAULT),
        Err(binding::Error::DisallowedAlgorithm(HMAC_SHA1.into()))
    );
}

#[test]
fn comment_inside_issuer_is_refused() {
    // `https://sp.example.org<!-- -->.evil.example/shibboleth`: one parser reads the text before the
    // comment, another all of it. We read neither.
    assert_refused!(
        parse_request(&fixture_str("issuer-comment.xml")),
        RequestError::Envelope(EnvelopeError::Issuer(xml::Error::MixedContent(name))) if name == "Issuer"
    );
}

#[test]
fn comment_inside_name_id_is_refused() {
    assert_refused!(
        parse_logout_request(&fixture("nameid-comment.xml"), &ctx()),
        LogoutError::NameId(xml::Error::MixedContent(name)) if name == "NameID"
    );
    // The same LogoutRequest without the comment is fine, so the comment is what is refused.
    let clean = fixture_str("nameid-comment.xml").replace("<!---->", "");
    let request = parse_logout_request(clean.as_bytes(), &ctx()).unwrap();
    assert_eq!(
        request.peek_for_logging().name_id.value,
        "admin@example.org.evil.example"
    );
}

#[test]
fn dtd_external_entities_and_billion_laughs_are_refused_by_every_parser() {
    for name in [
        "dtd-internal-entity.xml",
        "xxe-external-entity.xml",
        "billion-laughs.xml",
    ] {
        let doc = fixture(name);
        assert_refused!(
            parse_authn_request(&doc, &ctx()),
            RequestError::Envelope(EnvelopeError::Xml(xml::Error::Dtd))
        );
        assert_refused!(
            parse_logout_request(&doc, &ctx()),
            LogoutError::Envelope(EnvelopeError::Xml(xml::Error::Dtd))
        );
        assert_refused!(
            parse_sp_metadata(&doc, fixture_now()),
            MetadataError::Xml(xml::Error::Dtd)
        );
        assert_eq!(xml::parse(&doc, &Limits::default()), Err(xml::Error::Dtd));
    }
    // Without a DTD an entity reference has nothing to expand to.
    assert_refused!(
        parse_request(&fixture_str("undeclared-entity.xml")),
        RequestError::Envelope(EnvelopeError::Xml(xml::Error::Malformed(_)))
    );
}

#[test]
fn deflate_bomb_is_cut_off_at_the_limit() {
    let query = fixture("deflate-bomb.query");
    let limits = binding::Limits::DEFAULT;
    // Small on the wire, so the wire limit does not catch it; inflation stops one byte past the limit.
    assert!(query.len() < limits.max_encoded);
    assert_eq!(
        decode_redirect(&query, &limits),
        Err(binding::Error::TooLarge {
            limit: limits.max_inflated
        })
    );
}

#[test]
fn truncated_payloads_are_refused() {
    let limits = binding::Limits::DEFAULT;
    assert_eq!(
        decode_redirect(&fixture("truncated-base64.query"), &limits),
        Err(binding::Error::BadBase64("SAMLRequest"))
    );
    assert_refused!(
        decode_redirect(&fixture("truncated-deflate.query"), &limits),
        binding::Error::Inflate(_)
    );
    // HTTP-POST carries base64 without DEFLATE.
    let full = base64::engine::general_purpose::STANDARD.encode(sp_request("_p1").to_xml());
    let truncated: String =
        url::form_urlencoded::byte_serialize(&full.as_bytes()[..full.len() - 3]).collect();
    assert_eq!(
        decode_post(format!("SAMLRequest={truncated}").as_bytes(), &limits),
        Err(binding::Error::BadBase64("SAMLRequest"))
    );
    // Base64 that decodes to a cut-off document is malformed XML.
    let half = sp_request("_p2").to_xml();
    let half = &half[..half.len() / 2];
    assert_refused!(
        parse_request(half),
        RequestError::Envelope(EnvelopeError::Xml(xml::Error::Malformed(_)))
    );
}

/// Decodes a signed Redirect query, parses its AuthnRequest and checks the query signature against
/// the key of the fixtures' signer.
fn verify_redirect_fixture(query: &[u8]) -> Result<(String, Option<String>), EnvelopeError> {
    let message = decode_redirect(query, &binding::Limits::DEFAULT).unwrap();
    let request = parse_authn_request(&message.xml, &ctx()).unwrap();
    let verified =
        request.verify_redirect(message.signature.as_ref(), &fixture_sp_keys(), false, true)?;
    assert_eq!(verified.trust(), &Trust::RedirectSignature);
    Ok((verified.id.clone(), message.relay_state))
}

#[test]
fn redirect_signatures_over_lowercase_percent_encoding_and_pct20_spaces_verify() {
    // Signed by the openssl CLI over octets with lowercase hex (RFC 3986 2.1 allows either case).
    let (id, relay) =
        verify_redirect_fixture(&fixture("redirect-lowercase-percent.query")).unwrap();
    assert_eq!(id, "_lower1");
    assert_eq!(relay.as_deref(), Some("a b/c"));
    // Spaces written `%20` rather than `+`.
    let (id, relay) = verify_redirect_fixture(&fixture("redirect-space-pct20.query")).unwrap();
    assert_eq!(id, "_space1");
    assert_eq!(relay.as_deref(), Some("a b/c"));
}

#[test]
fn redirect_signature_without_sig_alg_is_refused() {
    assert_eq!(
        decode_redirect(
            &fixture("redirect-missing-sigalg.query"),
            &binding::Limits::DEFAULT
        ),
        Err(binding::Error::MissingSigAlg)
    );
}

// ---------------------------------------------------------------------------------------------------
// C. The samael flaws of the issue, one test each: Tessera does it right
// ---------------------------------------------------------------------------------------------------

#[test]
fn samael_flaw_xsw_accepted_tessera_refuses_a_signature_wrapped_authn_request() {
    // samael's check of an XML-signed AuthnRequest accepts a signature-wrapped document. The textbook
    // wrap: the genuine signed request hidden in the attacker's, the Signature moved to the attacker's.
    let key = sp_key(KeyKind::Rsa2048);
    let signed = signed_request(key);
    let (original, sig) = take_signature(&signed);
    let attack = evil_root("_evil")
        .with_child(sig)
        .with_child(extensions(original))
        .to_xml();
    let unverified = parse_request(&attack).unwrap();
    // What the attacker wants us to act on ...
    assert_eq!(
        unverified.peek_for_logging().acs_url.as_deref(),
        Some("https://evil.example/acs")
    );
    // ... is never trusted, whichever door is tried.
    assert_refused!(
        unverified
            .clone()
            .verify_post(&public(key), &VerifyPolicy::default(), true),
        EnvelopeError::Signature(SigError::ReferenceNotRoot)
    );
    assert_refused!(
        unverified
            .clone()
            .verify_post(&public(key), &VerifyPolicy::default(), false),
        EnvelopeError::Signature(SigError::ReferenceNotRoot)
    );
    assert_refused!(
        unverified.accept_unsigned(false),
        EnvelopeError::SignatureNotChecked
    );
}

#[test]
fn samael_flaw_unescaped_output_tessera_escapes_markup_in_name_id_and_attributes() {
    // samael's builder writes element text and attribute values without escaping. A user-controlled
    // NameID or attribute value with markup would become elements; ours arrive exactly as stored.
    let idp = idp_key(KeyKind::Rsa2048);
    let nasty_name =
        r#"x</saml:NameID><saml:NameID>admin@example.org</saml:NameID><!-- & "q" 'a' <&>"'"#;
    let nasty_value = r#"<saml:AttributeValue>admin</saml:AttributeValue> & "q" 'a' <&>"' ]]>"#;
    let nasty_attr_name = r#"role"<evil a='1'>&amp;"#;
    let c = content(
        name_id(nasty_name, NameIdFormat::Unspecified),
        PPT,
        vec![Attribute {
            name: nasty_attr_name.into(),
            name_format: Some(BASIC_FORMAT.into()),
            friendly_name: Some(r#"<&>"'"#.into()),
            values: vec![nasty_value.into(), "plain".into()],
        }],
    );
    let xml = build_response(&c, &idp.key, SignatureTarget::Both, None).unwrap();
    assert!(!xml.contains("<saml:NameID>admin"));
    assert!(!xml.contains("<saml:AttributeValue>admin"));
    assert!(!xml.contains("<evil"));
    assert!(!xml.contains("]]>"));

    // Structure is intact: one NameID, one Attribute with two values.
    let doc = parse_doc(&xml);
    let assertion = doc.child(ns::SAML, "Assertion").unwrap();
    let subject = assertion.child(ns::SAML, "Subject").unwrap();
    assert_eq!(subject.children_named(ns::SAML, "NameID").count(), 1);
    assert_eq!(
        subject.child(ns::SAML, "NameID").unwrap().text().unwrap(),
        nasty_name
    );

    // Signatures still verify with xmlsec1, and samael reads every value exactly as stored.
    let dir = tempfile::tempdir().unwrap();
    xmlsec1_verify(dir.path(), &xml, &idp.cert_pem, XPATH_RESPONSE_SIG).unwrap();
    xmlsec1_verify(dir.path(), &xml, &idp.cert_pem, XPATH_ASSERTION_SIG).unwrap();
    let a = samael_accepts(&idp.key, &xml);
    check_samael_assertion(&a, &c);
    let nid = a.subject.unwrap().name_id.unwrap();
    assert_eq!(nid.value, nasty_name);
    let attrs: Vec<_> = a
        .attribute_statements
        .unwrap()
        .into_iter()
        .flat_map(|s| s.attributes)
        .collect();
    assert_eq!(attrs.len(), 1);
    assert_eq!(attrs[0].name.as_deref(), Some(nasty_attr_name));
    assert_eq!(attrs[0].friendly_name.as_deref(), Some(r#"<&>"'"#));
    let values: Vec<Option<&str>> = attrs[0].values.iter().map(|v| v.value.as_deref()).collect();
    assert_eq!(values, [Some(nasty_value), Some("plain")]);
}

#[test]
fn samael_flaw_reencoded_redirect_tessera_verifies_the_octets_received() {
    // samael's redirect-binding verifier re-encodes the decoded parameters, so a signature over any
    // other (valid) encoding fails there. Tessera verifies the octets as received ...
    let lower = fixture_str("redirect-lowercase-percent.query");
    assert!(
        lower.contains("%2f") && !lower.contains("%2F"),
        "fixture is lowercase"
    );
    verify_redirect_fixture(lower.as_bytes()).unwrap();
    // ... and exactly those: the same values re-encoded (uppercase hex, `+` for space) decode to the
    // same message but are not what was signed.
    let reencoded = lower
        .replacen("RelayState=a%20b%2fc", "RelayState=a+b%2Fc", 1)
        .replacen("%3a%2f%2f", "%3A%2F%2F", 1);
    assert_ne!(reencoded, lower);
    assert_refused!(
        verify_redirect_fixture(reencoded.as_bytes()),
        EnvelopeError::RedirectSignature(binding::Error::BadSignature)
    );
}

#[test]
fn samael_flaw_sha1_fixed_format_no_expiry_tessera_response_profile() {
    // samael's response builder digests with SHA-1, hard-codes the NameID format and leaves out the
    // bearer confirmation's NotOnOrAfter. Ours: SHA-256 digests and the key's SHA-256 signature method,
    // the NameID Format that was asked for, NotOnOrAfter = IssueInstant + lifetime.
    for kind in KINDS {
        let idp = idp_key(kind);
        for (format, uri) in [
            (NameIdFormat::EmailAddress, EMAIL),
            (NameIdFormat::Persistent, PERSISTENT),
            (NameIdFormat::Transient, TRANSIENT),
            (NameIdFormat::Unspecified, UNSPECIFIED),
        ] {
            let c = content(name_id("someone", format), PPT, attributes());
            let xml = build_response(&c, &idp.key, SignatureTarget::Both, None).unwrap();
            assert!(!xml.contains("xmldsig#sha1") && !xml.contains("rsa-sha1"));
            let doc = parse_doc(&xml);
            assert_eq!(check_signature_profile(&doc, algorithm_uri(kind)), 2);
            let subject = doc
                .child(ns::SAML, "Assertion")
                .and_then(|a| a.child(ns::SAML, "Subject"))
                .unwrap();
            assert_eq!(
                subject.child(ns::SAML, "NameID").unwrap().attr("Format"),
                Some(uri)
            );
            let data = subject
                .child(ns::SAML, "SubjectConfirmation")
                .and_then(|s| s.child(ns::SAML, "SubjectConfirmationData"))
                .unwrap();
            let expected =
                response::format_instant(c.issue_instant + Duration::seconds(LIFETIME_SECS));
            assert_eq!(data.attr("NotOnOrAfter"), Some(expected.as_str()));
            assert_eq!(data.attr("Recipient"), Some(ACS));
            assert_eq!(data.attr("InResponseTo"), Some(REQUEST_ID));
            assert_eq!(data.attr("NotBefore"), None);
        }
    }
}

/// Where this suite's fixtures are, for the report when one is missing.
#[test]
fn every_hostile_fixture_is_documented() {
    let readme = std::fs::read_to_string(format!("{FIXTURES}/README.md")).unwrap();
    let dir = PathBuf::from(format!("{FIXTURES}/hostile"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            readme.contains(&format!("hostile/{name}")),
            "{name} is not described in tests/fixtures/README.md"
        );
        seen += 1;
    }
    assert!(seen >= 14);
}

// ---------------------------------------------------------------------------------------------------
// Regressions: bugs this suite and the fuzz targets (fuzz/) found, one test each
// ---------------------------------------------------------------------------------------------------

#[test]
fn redirect_signature_is_tried_with_every_key_of_the_family() {
    // Found while writing this suite: `RedirectSignature::verify` returned BadSignature as soon as one
    // EC key of another curve could not parse the value, so an SP that lists a P-384 key before the
    // P-256 key it signs with (a curve rollover) had every Redirect request refused.
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    let signer = sp_key(KeyKind::EcP256);
    let url = encode_redirect(
        MessageKind::Request,
        sp_request("_ec1").to_xml().as_bytes(),
        Some("rs"),
        SSO,
        Some((signer.private_key(), SignatureAlgorithm::EcdsaSha256)),
    )
    .unwrap();
    let message = decode_redirect(
        url.split_once('?').unwrap().1.as_bytes(),
        &binding::Limits::DEFAULT,
    )
    .unwrap();
    let signature = message.signature.unwrap();
    let p384 = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
    let p384 = PKey::public_key_from_der(
        &PKey::from_ec_key(p384)
            .unwrap()
            .public_key_to_der()
            .unwrap(),
    )
    .unwrap();
    let p256 = public(signer).remove(0);
    assert_eq!(
        signature.verify(&[p384.clone(), p256.clone()], false),
        Ok(())
    );
    assert_eq!(signature.verify(&[p256, p384.clone()], false), Ok(()));
    assert_eq!(
        signature.verify(&[p384], false),
        Err(binding::Error::BadSignature)
    );
}
