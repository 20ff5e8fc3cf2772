//! Interoperability of Tessera's XML signatures with an independent implementation: the `xmlsec1` CLI
//! (libxmlsec1 over libxml2 and OpenSSL), which has its own parser, its own exclusive c14n and its own
//! signature code. If xmlsec1 verifies what we sign over tricky documents, our canonical form matches
//! libxml2's byte for byte; if we verify what xmlsec1 signs, our verifier accepts real-world input.
//!
//! xmlsec1 must be installed (CI installs it). Its absence fails the tests: a skipped interop test would
//! silently stop proving anything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, Utc};
use tessera::saml::xml::{ns, parse, Element, Limits};
use tessera::saml::xmldsig::algorithms::SignatureAlgorithm;
use tessera::saml::xmldsig::keys::{
    generate_self_signed, public_keys_from_certs, KeyKind, SigningKey,
};
use tessera::saml::xmldsig::sign::sign_enveloped;
use tessera::saml::xmldsig::verify::{
    verify_enveloped, verify_enveloped_element, Error, VerifyPolicy,
};

const STRICT: VerifyPolicy = VerifyPolicy { allow_sha1: false };

/// A key pair plus its PEM files on disk, for xmlsec1.
struct Fixture {
    key: SigningKey,
    dir: tempfile::TempDir,
    key_path: PathBuf,
    cert_path: PathBuf,
}

fn fixture(kind: KeyKind) -> Fixture {
    // The certificate must be valid now, because xmlsec1 checks dates of the certificates it trusts.
    let (key, key_pem, cert_pem) =
        generate_self_signed(kind, "idp.example", Utc::now() - Duration::days(1), 30).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key.pem");
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&key_path, key_pem).unwrap();
    std::fs::write(&cert_path, cert_pem).unwrap();
    Fixture {
        key,
        dir,
        key_path,
        cert_path,
    }
}

/// Runs xmlsec1, failing the test with a clear message when it is missing.
fn xmlsec1(args: &[&str]) -> std::process::Output {
    match Command::new("xmlsec1").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "xmlsec1 is required for the XML-DSig interop tests and could not be run ({e}); \
             install it (apt-get install xmlsec1)"
        ),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asks xmlsec1 to verify `xml`, whose signed element is `element` (`namespace:Local`, ID attribute
/// `ID`), trusting only the fixture's certificate. KeyInfo carries the same certificate, so xmlsec1 is
/// given it both as the key and as a trusted root.
fn xmlsec_verify(fx: &Fixture, xml: &str, element: &str) -> Result<(), String> {
    let file = fx.dir.path().join("signed.xml");
    std::fs::write(&file, xml).unwrap();
    let out = xmlsec1(&[
        "--verify",
        "--id-attr:ID",
        element,
        "--pubkey-cert-pem",
        path_str(&fx.cert_path),
        "--trusted-pem",
        path_str(&fx.cert_path),
        "--enabled-reference-uris",
        "same-doc",
        path_str(&file),
    ]);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Signs a template with xmlsec1 and returns the signed document.
fn xmlsec_sign(fx: &Fixture, template: &str, element: &str) -> String {
    let input = fx.dir.path().join("template.xml");
    let output = fx.dir.path().join("out.xml");
    std::fs::write(&input, template).unwrap();
    let key_arg = format!("{},{}", path_str(&fx.key_path), path_str(&fx.cert_path));
    let out = xmlsec1(&[
        "--sign",
        "--id-attr:ID",
        element,
        "--privkey-pem",
        &key_arg,
        "--output",
        path_str(&output),
        path_str(&input),
    ]);
    assert!(
        out.status.success(),
        "xmlsec1 --sign failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&output).unwrap()
}

fn parse_str(xml: &str) -> Element {
    parse(xml.as_bytes(), &Limits::default()).unwrap()
}

fn assertion_element() -> String {
    format!("{}:Assertion", ns::SAML)
}

/// An Assertion-like element with hostile attribute values and text, a nested subtree in other
/// namespaces (prefixed and default, with an undeclaration), xml:lang, attributes in several namespaces
/// whose canonical order differs from document order, a tab in an attribute and a CR in text.
const TRICKY_ASSERTION: &str = "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" \
xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
xmlns:unused=\"urn:unused\" ID=\"_a7f3\" Version=\"2.0\" IssueInstant=\"2024-05-01T10:00:00Z\">\
<saml:Issuer>https://idp.example/</saml:Issuer>\
<saml:Subject><saml:NameID Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\" \
SPNameQualifier=\"a&lt;b&gt;c&amp;d&quot;e'f\">o'brien&amp;&lt;x&gt;\"q\"@example.com</saml:NameID></saml:Subject>\
<saml:AttributeStatement>\
<saml:Attribute Name=\"urn:oid:1.3.6.1.4.1.5923.1.1.1.7\" FriendlyName=\"tab&#9;here and newline&#10;there\">\
<saml:AttributeValue xsi:type=\"xs:string\" xml:lang=\"en-GB\">line1&#13;\nline2\t&lt;&amp;&gt;</saml:AttributeValue>\
</saml:Attribute>\
<saml:Attribute Name=\"roles\">\
<saml:AttributeValue>\
<r:Roles xmlns:r=\"urn:example:roles\" xmlns=\"urn:example:default\" xmlns:b=\"urn:b\" xmlns:a=\"urn:a\" \
b:z=\"1\" a:z=\"2\" z=\"3\" a:y=\"4\">\
<Role level=\"&#9;high\">admin</Role>\
<plain xmlns=\"\"><inner>no namespace</inner></plain>\
<r:Empty/>\
<!-- a comment that c14n drops -->\
<Role><![CDATA[<not-markup> & ]]></Role>\
</r:Roles>\
</saml:AttributeValue>\
</saml:Attribute>\
</saml:AttributeStatement>\
</saml:Assertion>";

fn sign_and_check_with_xmlsec(kind: KeyKind, xml: &str, element: &str) {
    let fx = fixture(kind);
    let mut doc = parse_str(xml);
    sign_enveloped(&mut doc, &fx.key).unwrap();
    let signed = doc.to_xml();
    if let Err(e) = xmlsec_verify(&fx, &signed, element) {
        panic!("xmlsec1 rejected our {kind:?} signature: {e}\n--- document ---\n{signed}");
    }
    // And our own verifier agrees.
    let keys = public_keys_from_certs(&[fx.key.certificate().clone()]);
    verify_enveloped(&parse_str(&signed), &keys, &STRICT).unwrap();
}

#[test]
fn xmlsec1_verifies_our_rsa_signature_on_a_tricky_assertion() {
    sign_and_check_with_xmlsec(KeyKind::Rsa2048, TRICKY_ASSERTION, &assertion_element());
}

#[test]
fn xmlsec1_verifies_our_ecdsa_signature_on_a_tricky_assertion() {
    sign_and_check_with_xmlsec(KeyKind::EcP256, TRICKY_ASSERTION, &assertion_element());
}

#[test]
fn xmlsec1_rejects_a_tampered_document_we_signed() {
    // Guards the test harness itself: xmlsec1 must be able to say no.
    let fx = fixture(KeyKind::Rsa2048);
    let mut doc = parse_str(TRICKY_ASSERTION);
    sign_enveloped(&mut doc, &fx.key).unwrap();
    let tampered = doc.to_xml().replace("admin</Role>", "root</Role>");
    assert!(xmlsec_verify(&fx, &tampered, &assertion_element()).is_err());
}

#[test]
fn xmlsec1_verifies_a_signed_element_in_the_default_namespace() {
    // The signed element uses the default namespace; the Signature uses `ds`. Nothing may leak between
    // the two in either canonical form.
    let xml =
        "<Assertion xmlns=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_d1\" Version=\"2.0\">\
<Issuer>idp</Issuer><Subject><NameID xmlns=\"\" x=\"1\">n</NameID></Subject></Assertion>";
    sign_and_check_with_xmlsec(KeyKind::EcP256, xml, &assertion_element());
}

#[test]
fn xmlsec1_verifies_our_signature_on_an_assertion_inside_a_response() {
    // The Assertion is signed alone and then embedded in a Response that declares other namespaces
    // (including a default one): exclusive c14n must make the signature independent of that context.
    let fx = fixture(KeyKind::Rsa2048);
    let mut assertion = parse_str(TRICKY_ASSERTION);
    sign_enveloped(&mut assertion, &fx.key).unwrap();
    let response = Element::new("samlp", "Response", ns::SAMLP)
        .declare("samlp", ns::SAMLP)
        .declare("", "urn:example:outer-default")
        .declare("xs", "urn:not-xml-schema-here")
        .with_attr("ID", "_resp1")
        .with_attr("Version", "2.0")
        .with_child(Element::new("samlp", "Status", ns::SAMLP))
        .with_child(assertion);
    let xml = response.to_xml();
    if let Err(e) = xmlsec_verify(&fx, &xml, &assertion_element()) {
        panic!("xmlsec1 rejected the embedded assertion: {e}\n{xml}");
    }
    let doc = parse_str(&xml);
    let inner = doc.child(ns::SAML, "Assertion").unwrap();
    let keys = public_keys_from_certs(&[fx.key.certificate().clone()]);
    verify_enveloped_element(&doc, inner, &keys, &STRICT).unwrap();
}

#[test]
fn xmlsec1_verifies_our_signed_metadata() {
    let fx = fixture(KeyKind::Rsa2048);
    let xml = format!(
        "<md:EntityDescriptor xmlns:md=\"{}\" entityID=\"https://idp.example/?a=1&amp;b=2\" ID=\"_meta\">\
<md:IDPSSODescriptor protocolSupportEnumeration=\"{}\"><md:SingleSignOnService \
Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"https://idp.example/sso\"/>\
</md:IDPSSODescriptor></md:EntityDescriptor>",
        ns::MD,
        ns::SAMLP
    );
    let mut doc = parse_str(&xml);
    sign_enveloped(&mut doc, &fx.key).unwrap();
    assert!(doc.elements().next().unwrap().is(ns::DS, "Signature"));
    let signed = doc.to_xml();
    if let Err(e) = xmlsec_verify(&fx, &signed, &format!("{}:EntityDescriptor", ns::MD)) {
        panic!("xmlsec1 rejected our metadata signature: {e}\n{signed}");
    }
}

/// An xmlsec1 signing template for an AuthnRequest with hostile content, the signature after Issuer.
fn authn_request_template(signature_method: &str, c14n_params: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" \
ID=\"_req42\" Version=\"2.0\" IssueInstant=\"2024-05-01T10:00:00Z\" \
AssertionConsumerServiceURL=\"https://sp.example/acs?x=1&amp;y=&quot;2&quot;\" ProviderName=\"tab&#9;&lt;&amp;&gt;'\">\n\
  <saml:Issuer>https://sp.example/</saml:Issuer>\n\
  <ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">\n\
    <ds:SignedInfo>\n\
      <ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\n\
      <ds:SignatureMethod Algorithm=\"{signature_method}\"/>\n\
      <ds:Reference URI=\"#_req42\">\n\
        <ds:Transforms>\n\
          <ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\n\
          <ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\">{c14n_params}</ds:Transform>\n\
        </ds:Transforms>\n\
        <ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>\n\
        <ds:DigestValue/>\n\
      </ds:Reference>\n\
    </ds:SignedInfo>\n\
    <ds:SignatureValue/>\n\
    <ds:KeyInfo><ds:X509Data/></ds:KeyInfo>\n\
  </ds:Signature>\n\
  <samlp:Extensions><e:Ext xmlns:e=\"urn:ext\" xmlns=\"urn:ext:default\" e:b=\"1\" a=\"2\">\
<child xml:lang=\"fr\">caf\u{e9}&#13;\r\nend</child><bare xmlns=\"\"/></e:Ext></samlp:Extensions>\n\
  <samlp:NameIDPolicy Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified\" AllowCreate=\"true\"/>\n\
</samlp:AuthnRequest>\n"
    )
}

fn authn_request_element() -> String {
    format!("{}:AuthnRequest", ns::SAMLP)
}

fn verify_xmlsec_signed(
    kind: KeyKind,
    signature_method: &str,
    c14n_params: &str,
) -> SignatureAlgorithm {
    let fx = fixture(kind);
    let signed = xmlsec_sign(
        &fx,
        &authn_request_template(signature_method, c14n_params),
        &authn_request_element(),
    );
    let keys = public_keys_from_certs(&[fx.key.certificate().clone()]);
    let doc = parse_str(&signed);
    match verify_enveloped(&doc, &keys, &STRICT) {
        Ok(v) => {
            assert_eq!(v.key_index, 0);
            // Sanity: the document really carries xmlsec1's values, and tampering breaks it.
            let tampered = signed.replace(
                "https://sp.example/</saml:Issuer>",
                "https://evil.example/</saml:Issuer>",
            );
            assert_eq!(
                verify_enveloped(&parse_str(&tampered), &keys, &STRICT),
                Err(Error::DigestMismatch)
            );
            v.algorithm
        }
        Err(e) => panic!("we rejected xmlsec1's signature: {e}\n--- document ---\n{signed}"),
    }
}

#[test]
fn we_verify_an_xmlsec1_rsa_sha256_signature() {
    let alg = verify_xmlsec_signed(KeyKind::Rsa2048, SignatureAlgorithm::RsaSha256.uri(), "");
    assert_eq!(alg, SignatureAlgorithm::RsaSha256);
}

#[test]
fn we_verify_an_xmlsec1_ecdsa_sha256_signature() {
    let alg = verify_xmlsec_signed(KeyKind::EcP256, SignatureAlgorithm::EcdsaSha256.uri(), "");
    assert_eq!(alg, SignatureAlgorithm::EcdsaSha256);
}

#[test]
fn we_honour_an_inclusive_namespaces_prefix_list_from_xmlsec1() {
    // With `xs` inclusive, xmlsec1 renders xmlns:xs on the root in the digested form although nothing
    // uses it; ignoring the PrefixList would give a different digest.
    let list = "<ec:InclusiveNamespaces xmlns:ec=\"http://www.w3.org/2001/10/xml-exc-c14n#\" PrefixList=\"xs #default\"/>";
    let alg = verify_xmlsec_signed(KeyKind::Rsa2048, SignatureAlgorithm::RsaSha256.uri(), list);
    assert_eq!(alg, SignatureAlgorithm::RsaSha256);

    // Without the list the canonical form loses xmlns:xs, so the same document no longer verifies: the
    // list was really used by both sides.
    let fx = fixture(KeyKind::Rsa2048);
    let template = authn_request_template(SignatureAlgorithm::RsaSha256.uri(), list);
    let signed = xmlsec_sign(&fx, &template, &authn_request_element());
    let stripped = signed.replace(list, "");
    assert_ne!(stripped, signed);
    let keys = public_keys_from_certs(&[fx.key.certificate().clone()]);
    assert_eq!(
        verify_enveloped(&parse_str(&stripped), &keys, &STRICT),
        Err(Error::DigestMismatch)
    );
}

#[test]
fn xmlsec1_rsa_sha1_signature_needs_the_sha1_policy() {
    let fx = fixture(KeyKind::Rsa2048);
    let template = authn_request_template(SignatureAlgorithm::RsaSha1.uri(), "");
    let signed = xmlsec_sign(&fx, &template, &authn_request_element());
    let keys = public_keys_from_certs(&[fx.key.certificate().clone()]);
    let doc = parse_str(&signed);
    assert_eq!(
        verify_enveloped(&doc, &keys, &STRICT),
        Err(Error::DisallowedAlgorithm(
            SignatureAlgorithm::RsaSha1.uri().into()
        ))
    );
    let ok = verify_enveloped(&doc, &keys, &VerifyPolicy { allow_sha1: true }).unwrap();
    assert_eq!(ok.algorithm, SignatureAlgorithm::RsaSha1);
}
