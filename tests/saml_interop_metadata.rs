//! Interop: the IdP metadata Tessera publishes is read by samael 0.0.22 and its signature is accepted by
//! the `xmlsec1` CLI (libxmlsec1), an independent XML-DSig implementation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use chrono::{TimeZone, Utc};
use tessera::saml::metadata::{
    build_idp_metadata, IdpMetadata, BINDING_HTTP_POST, BINDING_HTTP_REDIRECT,
};
use tessera::saml::xmldsig::keys::{generate_self_signed, KeyKind, SigningKey};

const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

fn key(kind: KeyKind) -> (SigningKey, String) {
    let (key, _key_pem, cert_pem) = generate_self_signed(
        kind,
        "idp.tessera.example",
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        730,
    )
    .unwrap();
    (key, cert_pem)
}

fn metadata(current: &SigningKey, next: Option<&SigningKey>) -> IdpMetadata {
    let mut certs = vec![current.certificate_base64().unwrap()];
    if let Some(n) = next {
        certs.push(n.certificate_base64().unwrap());
    }
    IdpMetadata {
        entity_id: "https://idp.tessera.example/".into(),
        sso_url: "https://idp.tessera.example/saml/sso".into(),
        slo_url: Some("https://idp.tessera.example/saml/slo".into()),
        signing_certs: certs,
        name_id_formats: vec![PERSISTENT.into(), EMAIL.into()],
        want_authn_requests_signed: true,
        valid_until: Some(Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap()),
    }
}

fn xmlsec1_present() {
    match Command::new("xmlsec1").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("xmlsec1 --version failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!("xmlsec1 is required for this interop test but cannot be run ({e}); install it with `apt-get install xmlsec1`"),
    }
}

/// `xmlsec1 --verify --id-attr:ID urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor --pubkey-cert-pem cert.pem file.xml`
fn xmlsec1_verify(dir: &Path, xml: &str, cert_pem: &str) -> Result<(), String> {
    let file = dir.join("metadata.xml");
    let cert = dir.join("idp.crt");
    std::fs::write(&file, xml).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let out = Command::new("xmlsec1")
        .arg("--verify")
        .arg("--id-attr:ID")
        .arg("urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor")
        .arg("--pubkey-cert-pem")
        .arg(&cert)
        .arg(&file)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn xmlsec1_verifies_signed_idp_metadata() {
    xmlsec1_present();
    let dir = tempfile::tempdir().unwrap();
    for kind in [KeyKind::Rsa2048, KeyKind::EcP256] {
        let (signer, cert_pem) = key(kind);
        let xml =
            build_idp_metadata(&metadata(&signer, None), "_tessera-md-1", Some(&signer)).unwrap();
        xmlsec1_verify(dir.path(), &xml, &cert_pem)
            .unwrap_or_else(|e| panic!("{kind:?}: xmlsec1 refused: {e}\n{xml}"));

        // The same check fails on a changed endpoint and with another key, so the pass above means something.
        let tampered = xml.replacen(
            "https://idp.tessera.example/saml/sso",
            "https://evil.example/sso",
            1,
        );
        assert!(
            xmlsec1_verify(dir.path(), &tampered, &cert_pem).is_err(),
            "{kind:?}: tampered metadata verified"
        );
        let (_, other_pem) = key(kind);
        assert!(
            xmlsec1_verify(dir.path(), &xml, &other_pem).is_err(),
            "{kind:?}: verified with the wrong key"
        );
    }
}

#[test]
fn samael_reads_our_idp_metadata() {
    let (current, _) = key(KeyKind::Rsa2048);
    let (next, _) = key(KeyKind::Rsa2048);
    let meta = metadata(&current, Some(&next));
    let xml = build_idp_metadata(&meta, "_tessera-md-2", Some(&current)).unwrap();

    let entity = samael::metadata::EntityDescriptor::from_str(&xml)
        .unwrap_or_else(|e| panic!("samael: {e}\n{xml}"));
    assert_eq!(
        entity.entity_id.as_deref(),
        Some("https://idp.tessera.example/")
    );
    assert_eq!(entity.id.as_deref(), Some("_tessera-md-2"));
    assert_eq!(entity.valid_until, meta.valid_until);
    assert!(entity.signature.is_some());
    let idps = entity.idp_sso_descriptors.unwrap();
    assert_eq!(idps.len(), 1);
    let idp = &idps[0];
    assert_eq!(
        idp.protocol_support_enumeration.as_deref(),
        Some("urn:oasis:names:tc:SAML:2.0:protocol")
    );
    assert_eq!(idp.want_authn_requests_signed, Some(true));
    let sso: Vec<(&str, &str)> = idp
        .single_sign_on_services
        .iter()
        .map(|e| (e.binding.as_str(), e.location.as_str()))
        .collect();
    assert_eq!(
        sso,
        vec![
            (
                BINDING_HTTP_REDIRECT,
                "https://idp.tessera.example/saml/sso"
            ),
            (BINDING_HTTP_POST, "https://idp.tessera.example/saml/sso"),
        ]
    );
    let slo: Vec<&str> = idp
        .single_logout_services
        .iter()
        .map(|e| e.binding.as_str())
        .collect();
    assert_eq!(slo, vec![BINDING_HTTP_REDIRECT, BINDING_HTTP_POST]);
    assert_eq!(
        idp.name_id_formats,
        vec![PERSISTENT.to_owned(), EMAIL.to_owned()]
    );
    // Both certificates, current first, each in a signing KeyDescriptor.
    let certs: Vec<String> = idp
        .key_descriptors
        .iter()
        .map(|k| {
            assert!(k.is_signing());
            k.key_info.x509_data.as_ref().unwrap().certificates.concat()
        })
        .collect();
    assert_eq!(certs, meta.signing_certs);
}
