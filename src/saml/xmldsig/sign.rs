//! Enveloped XML signatures over SAML elements (xmldsig-core 3.1, profiled by saml-core 5.4).
//!
//! Tessera signs one element at a time (an Assertion, a Response, a LogoutRequest, its metadata): the
//! element gets an enveloped `ds:Signature` whose single Reference points at the element's `ID`. The
//! profile is fixed, not configurable: exclusive c14n, SHA-256 digest, the key's own signature algorithm,
//! and the certificate in KeyInfo. Fewer choices mean fewer ways to produce something an SP rejects.

use base64::Engine;

use super::algorithms::{AlgorithmError, DigestAlgorithm};
use super::c14n::{canonicalize, Options};
use super::keys::{self, SigningKey};
use crate::saml::xml::{ns, Element, Node};

/// xml-exc-c14n 3 (without comments): the canonicalization and transform we use and accept.
pub const EXC_C14N_ALGORITHM: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

/// xmldsig-core 6.6.4: the enveloped-signature transform.
pub const ENVELOPED_SIGNATURE_TRANSFORM: &str =
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// The digest every Reference we create uses (xmlenc-core 5.7.2 SHA-256).
pub const DIGEST: DigestAlgorithm = DigestAlgorithm::Sha256;

/// Why an element could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// saml-core 5.4.2: the Reference URI is `#` + the element's `ID`, so an element without one cannot
    /// be signed.
    #[error("element <{0}> has no ID attribute to reference")]
    MissingId(String),
    /// The ID is not an NCName (saml-core 1.3.4: xs:ID), so `#ID` would not be a valid same-document
    /// reference.
    #[error("ID `{0}` is not an XML NCName")]
    InvalidId(String),
    /// The element already carries a `ds:Signature`; a second one would make verification ambiguous.
    #[error("element is already signed")]
    AlreadySigned,
    /// The signature value could not be computed.
    #[error(transparent)]
    Algorithm(#[from] AlgorithmError),
    /// The certificate could not be encoded for KeyInfo.
    #[error(transparent)]
    Key(#[from] keys::Error),
}

/// Signs `element` in place with an enveloped signature (xmldsig-core 3.1) and inserts the `ds:Signature`
/// where the SAML schemas put it: right after `saml:Issuer` when there is one (saml-core 5.4.1, the
/// sequences of Assertion, StatusResponseType and RequestAbstractType), otherwise as the first child
/// (saml-metadata 2.3.2 for EntityDescriptor and EntitiesDescriptor, which have no Issuer).
///
/// The element must be complete: any change after signing breaks the digest.
pub fn sign_enveloped(element: &mut Element, key: &SigningKey) -> Result<(), Error> {
    let id = element
        .attr("ID")
        .ok_or_else(|| Error::MissingId(element.local.clone()))?
        .to_owned();
    if !is_ncname(&id) {
        return Err(Error::InvalidId(id));
    }
    if element.child(ns::DS, "Signature").is_some() {
        return Err(Error::AlreadySigned);
    }

    // xmldsig-core 4.4.3: the digest is over the transformed element. The enveloped-signature transform
    // removes the Signature, which is not inserted yet, and exclusive c14n (xml-exc-c14n 3) does not
    // depend on the element's ancestors, so the element may be placed in any document afterwards.
    let digest = DIGEST.hash(&canonicalize(element, &Options::default()))?;
    let b64 = base64::engine::general_purpose::STANDARD;

    let algorithm = key.algorithm();
    let signed_info = ds("SignedInfo")
        .with_child(ds("CanonicalizationMethod").with_attr("Algorithm", EXC_C14N_ALGORITHM))
        .with_child(ds("SignatureMethod").with_attr("Algorithm", algorithm.uri()))
        .with_child(
            ds("Reference")
                .with_attr("URI", format!("#{id}"))
                .with_child(
                    ds("Transforms")
                        .with_child(
                            ds("Transform").with_attr("Algorithm", ENVELOPED_SIGNATURE_TRANSFORM),
                        )
                        .with_child(ds("Transform").with_attr("Algorithm", EXC_C14N_ALGORITHM)),
                )
                .with_child(ds("DigestMethod").with_attr("Algorithm", DIGEST.uri()))
                .with_child(ds("DigestValue").with_text(b64.encode(digest))),
        );

    // xmldsig-core 3.1.2: the signature is over the canonical SignedInfo. Its c14n alone equals its c14n
    // inside the finished document because exclusive c14n renders only the `ds` binding it uses, which
    // the Signature element declares.
    // The algorithms module returns ECDSA values as r || s (xmldsig-core1 6.4.3, RFC 4051 3.3).
    let value = algorithm.sign(
        key.private_key(),
        &canonicalize(&signed_info, &Options::default()),
    )?;

    let signature = Element::new("ds", "Signature", ns::DS)
        .declare("ds", ns::DS)
        .with_child(signed_info)
        .with_child(ds("SignatureValue").with_text(b64.encode(value)))
        // xmldsig-core 4.4.4: the certificate, for SPs that pick keys by it. Verifiers must not trust it.
        .with_child(ds("KeyInfo").with_child(
            ds("X509Data").with_child(ds("X509Certificate").with_text(key.certificate_base64()?)),
        ));

    let position = element
        .children
        .iter()
        .position(|n| matches!(n, Node::Element(e) if e.is(ns::SAML, "Issuer")))
        .map_or(0, |i| i + 1);
    element.children.insert(position, Node::Element(signature));
    Ok(())
}

fn ds(local: &str) -> Element {
    Element::new("ds", local, ns::DS)
}

/// Namespaces in XML 1.0 production NCName, restricted to ASCII (IDs Tessera makes are ASCII; an
/// attacker-supplied ID is never signed by us).
fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::keys::{generate_self_signed, KeyKind};
    use super::*;
    use chrono::{TimeZone, Utc};

    fn key(kind: KeyKind) -> SigningKey {
        generate_self_signed(
            kind,
            "idp",
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            1,
        )
        .unwrap()
        .0
    }

    fn assertion() -> Element {
        Element::new("saml", "Assertion", ns::SAML)
            .declare("saml", ns::SAML)
            .with_attr("ID", "_a1")
            .with_child(Element::new("saml", "Issuer", ns::SAML).with_text("https://idp.example"))
            .with_child(Element::new("saml", "Subject", ns::SAML))
    }

    #[test]
    fn signature_goes_after_issuer_with_the_expected_profile() {
        let mut a = assertion();
        sign_enveloped(&mut a, &key(KeyKind::EcP256)).unwrap();
        let names: Vec<&str> = a.elements().map(|e| e.local.as_str()).collect();
        assert_eq!(names, ["Issuer", "Signature", "Subject"]);
        let sig = a.child(ns::DS, "Signature").unwrap();
        assert!(sig
            .ns_decls
            .iter()
            .any(|d| d.prefix.as_deref() == Some("ds") && d.uri == ns::DS));
        let si = sig.child(ns::DS, "SignedInfo").unwrap();
        let r = si.child(ns::DS, "Reference").unwrap();
        assert_eq!(r.attr("URI"), Some("#_a1"));
        assert_eq!(
            si.child(ns::DS, "SignatureMethod")
                .unwrap()
                .attr("Algorithm"),
            Some("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256")
        );
        let value = sig.child(ns::DS, "SignatureValue").unwrap().text().unwrap();
        // r || s for P-256 is 64 bytes, not a DER sequence.
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .unwrap()
                .len(),
            64
        );
        assert_eq!(
            sign_enveloped(&mut a, &key(KeyKind::EcP256)),
            Err(Error::AlreadySigned)
        );
    }

    #[test]
    fn without_issuer_the_signature_is_first() {
        let mut md = Element::new("md", "EntityDescriptor", ns::MD)
            .declare("md", ns::MD)
            .with_attr("ID", "_m")
            .with_child(Element::new("md", "IDPSSODescriptor", ns::MD));
        sign_enveloped(&mut md, &key(KeyKind::Rsa2048)).unwrap();
        let names: Vec<&str> = md.elements().map(|e| e.local.as_str()).collect();
        assert_eq!(names, ["Signature", "IDPSSODescriptor"]);
    }

    #[test]
    fn id_is_required_and_must_be_an_ncname() {
        let k = key(KeyKind::EcP256);
        let mut none = Element::new("", "R", "");
        assert_eq!(
            sign_enveloped(&mut none, &k),
            Err(Error::MissingId("R".into()))
        );
        for bad in ["", "1abc", "a b", "a#b", "x'y"] {
            let mut e = Element::new("", "R", "").with_attr("ID", bad);
            assert_eq!(
                sign_enveloped(&mut e, &k),
                Err(Error::InvalidId(bad.into()))
            );
        }
    }
}
