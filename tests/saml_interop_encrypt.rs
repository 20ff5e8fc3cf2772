//! Interop: assertions encrypted by `tessera::saml::encrypt` are decrypted by independent
//! implementations: the `xmlsec1` CLI (libxmlsec1 over OpenSSL) and samael 0.0.22's `EncryptedAssertion`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use openssl::pkey::PKey;
use openssl::x509::X509;
use tessera::saml::encrypt::{encrypt_assertion, DataEncryption};
use tessera::saml::xml::{self, ns, Element, Limits};
use tessera::saml::xmldsig::c14n::{canonicalize, Options};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metadata");

fn sp_cert() -> X509 {
    X509::from_pem(&std::fs::read(format!("{FIXTURES}/sp-encryption.crt")).unwrap()).unwrap()
}

fn assertion() -> Element {
    assertion_for("a1b2c3 <&> \u{e9}t\u{e9}")
}

fn assertion_for(name_id: &str) -> Element {
    let saml = |l: &str| Element::new("saml", l, ns::SAML);
    saml("Assertion")
        .declare("saml", ns::SAML)
        .declare("xs", ns::XS)
        .declare("xsi", ns::XSI)
        .with_attr("ID", "_3f9a0c6e2b7d4e1f")
        .with_attr("Version", "2.0")
        .with_attr("IssueInstant", "2026-11-26T10:00:00Z")
        .with_child(saml("Issuer").with_text("https://idp.tessera.example/"))
        .with_child(
            saml("Subject").with_child(
                saml("NameID")
                    .with_attr(
                        "Format",
                        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
                    )
                    .with_text(name_id),
            ),
        )
        .with_child(
            saml("Conditions")
                .with_attr("NotBefore", "2026-11-26T09:59:00Z")
                .with_attr("NotOnOrAfter", "2026-11-26T10:05:00Z")
                .with_child(
                    saml("AudienceRestriction").with_child(
                        saml("Audience").with_text("https://sp.example.org/shibboleth"),
                    ),
                ),
        )
        .with_child(
            saml("AttributeStatement").with_child(
                saml("Attribute")
                    .with_attr("Name", "urn:oid:0.9.2342.19200300.100.1.3")
                    .with_attr(
                        "NameFormat",
                        "urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
                    )
                    .with_child(
                        saml("AttributeValue")
                            .with_ns_attr("xsi", "type", ns::XSI, "xs:string")
                            .with_text("alice@example.org"),
                    ),
            ),
        )
}

fn xmlsec1_present() {
    match Command::new("xmlsec1").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("xmlsec1 --version failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!("xmlsec1 is required for this interop test but cannot be run ({e}); install it with `apt-get install xmlsec1`"),
    }
}

/// `xmlsec1 --decrypt --privkey-pem sp.key file.xml`, returning the decrypted document.
fn xmlsec1_decrypt(dir: &Path, encrypted: &Element) -> Result<String, String> {
    let file = dir.join("encrypted.xml");
    std::fs::write(
        &file,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
            encrypted.to_xml()
        ),
    )
    .unwrap();
    let out = Command::new("xmlsec1")
        .arg("--decrypt")
        .arg("--privkey-pem")
        .arg(format!("{FIXTURES}/sp-encryption.key"))
        .arg(&file)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn exc_c14n(e: &Element) -> String {
    String::from_utf8(canonicalize(e, &Options::default())).unwrap()
}

#[test]
fn xmlsec1_decrypts_every_method() {
    xmlsec1_present();
    let dir = tempfile::tempdir().unwrap();
    let original = assertion();
    for method in [
        DataEncryption::Aes256Gcm,
        DataEncryption::Aes128Cbc,
        DataEncryption::Aes128Gcm,
        DataEncryption::Aes256Cbc,
    ] {
        let encrypted = encrypt_assertion(&original, &sp_cert(), method).unwrap();
        let output = xmlsec1_decrypt(dir.path(), &encrypted)
            .unwrap_or_else(|e| panic!("{method:?}: xmlsec1 refused: {e}"));
        // xmlsec1 replaces EncryptedData by the plaintext, which leaves Assertion inside EncryptedAssertion.
        let doc = xml::parse(output.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("{method:?}: {e}: {output}"));
        assert!(doc.is(ns::SAML, "EncryptedAssertion"), "{output}");
        let decrypted = doc
            .child(ns::SAML, "Assertion")
            .unwrap_or_else(|| panic!("{method:?}: no Assertion in {output}"));
        // Same element, compared in exclusive canonical form (where xmlsec1 leaves the declarations is its
        // business; their meaning must be unchanged).
        assert_eq!(exc_c14n(decrypted), exc_c14n(&original), "{method:?}");
        assert_eq!(decrypted.attr("ID"), Some("_3f9a0c6e2b7d4e1f"));
    }
}

#[test]
fn xmlsec1_refuses_a_tampered_gcm_ciphertext() {
    // Shows the check above can fail: a flipped bit makes xmlsec1's GCM tag check fail.
    xmlsec1_present();
    let dir = tempfile::tempdir().unwrap();
    let mut encrypted =
        encrypt_assertion(&assertion(), &sp_cert(), DataEncryption::Aes256Gcm).unwrap();
    let data = encrypted.elements_mut().next().unwrap();
    let cipher_value = data
        .elements_mut()
        .find(|e| e.local == "CipherData")
        .and_then(|c| c.elements_mut().next())
        .unwrap();
    let xml::Node::Text(b64) = &mut cipher_value.children[0] else {
        panic!("CipherValue text")
    };
    use base64::Engine as _;
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .unwrap();
    raw[30] ^= 0x40;
    *b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    assert!(xmlsec1_decrypt(dir.path(), &encrypted).is_err());
}

/// samael 0.0.22 (`crypto/xmlsec/mod.rs`, `decrypt_assertion_key_info` / `decrypt_assertion_value_info`)
/// supports key transport rsa-oaep-mgf1p and rsa-1_5, and content encryption aes128-cbc and
/// aes128-gcm only. It does not check CBC padding (it strips trailing bytes by re-reading the text).
#[test]
fn samael_decrypts_aes128_cbc_and_aes128_gcm() {
    let key = PKey::private_key_from_pem(
        &std::fs::read(format!("{FIXTURES}/sp-encryption.key")).unwrap(),
    )
    .unwrap();
    for method in [DataEncryption::Aes128Cbc, DataEncryption::Aes128Gcm] {
        // 16 lengths of NameID, so CBC padding takes every length from 1 to 16 octets.
        for extra in 0..16 {
            let name = format!("user{}", "x".repeat(extra));
            let encrypted = encrypt_assertion(&assertion_for(&name), &sp_cert(), method).unwrap();
            let parsed: samael::schema::EncryptedAssertion =
                samael::metadata::de::from_str(&encrypted.to_xml())
                    .unwrap_or_else(|e| panic!("{method:?}: {e}"));
            let decrypted = parsed
                .decrypt(&key)
                .unwrap_or_else(|e| panic!("{method:?}: samael: {e}"));
            assert_eq!(decrypted.id, "_3f9a0c6e2b7d4e1f");
            assert_eq!(
                decrypted.issuer.value.as_deref(),
                Some("https://idp.tessera.example/")
            );
            let name_id = decrypted.subject.unwrap().name_id.unwrap();
            assert_eq!(name_id.value, name);
        }
    }
}

#[test]
fn samael_cannot_decrypt_aes256() {
    // Why the method must follow the SP's metadata EncryptionMethod list: samael 0.0.22 refuses these.
    let key = PKey::private_key_from_pem(
        &std::fs::read(format!("{FIXTURES}/sp-encryption.key")).unwrap(),
    )
    .unwrap();
    for method in [DataEncryption::Aes256Gcm, DataEncryption::Aes256Cbc] {
        let encrypted = encrypt_assertion(&assertion(), &sp_cert(), method).unwrap();
        let parsed: samael::schema::EncryptedAssertion =
            samael::metadata::de::from_str(&encrypted.to_xml()).unwrap();
        assert!(
            parsed.decrypt(&key).is_err(),
            "{method:?}: samael now decrypts it; update the report"
        );
    }
}
