//! Strict verification of enveloped XML signatures on received SAML documents.
//!
//! Only the shape SAML uses is accepted (saml-core 5.4): one Signature, enveloped in the signed element,
//! one Reference to that element's ID, enveloped-signature plus exclusive c14n, allowlisted algorithms.
//! Everything else is refused with its own error rather than interpreted, because signature-wrapping
//! attacks live in the gap between "some signature verifies" and "the element we read is the element
//! that was signed". Here the signed element is fixed by the caller (the document root, or a given
//! element found by the caller) and its identity is checked against the Reference, on the same parsed
//! tree the caller reads afterwards.
//!
//! Keys come from the SP's metadata only. `ds:KeyInfo` in the message is ignored entirely: trusting a key
//! the message carries would let anyone sign anything (saml-metadata 2.4.1.1 makes metadata the key
//! source).

use base64::Engine;
use openssl::pkey::{PKey, Public};

use super::algorithms::{DigestAlgorithm, SignatureAlgorithm};
use super::c14n::{canonicalize, inherited_namespaces, Options};
use super::sign::{ENVELOPED_SIGNATURE_TRANSFORM, EXC_C14N_ALGORITHM};
use crate::saml::xml::{ns, Element, XML_NS};

/// What a verifier accepts beyond the fixed profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Accept rsa-sha1 and the sha1 digest. SHA-1 is collision-broken; some old SPs still sign with it,
    /// so this is a per-SP opt-in, off by default.
    pub allow_sha1: bool,
}

/// A signature that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The SignatureMethod used, for logging and for policies that want more than the allowlist.
    pub algorithm: SignatureAlgorithm,
    /// The Reference's DigestMethod.
    pub digest: DigestAlgorithm,
    /// Which of the caller's keys verified it, so the caller can tell a rolled-over key from the current.
    pub key_index: usize,
}

/// Why a signature was refused. Each variant is one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No keys to verify with: the SP's metadata has no signing certificate.
    #[error("no trusted keys to verify with")]
    NoTrustedKeys,
    /// The element to verify is not part of the given document.
    #[error("signed element is not inside the document")]
    TargetNotInDocument,
    /// saml-core 5.4.2: the signed element must have an ID for the Reference to point at.
    #[error("signed element has no ID attribute")]
    MissingId,
    /// Two elements share an ID value (xml 1.0 3.3.1 validity constraint "ID": values must be unique);
    /// a reference to it would be ambiguous, which is what wrapping attacks exploit.
    #[error("ID `{0}` appears more than once in the document")]
    DuplicateId(String),
    /// No `ds:Signature` at all.
    #[error("document is not signed")]
    NoSignature,
    /// More than one `ds:Signature` in the signed element's subtree.
    #[error("more than one Signature")]
    MultipleSignatures,
    /// saml-core 5.4.1 / xmldsig-core 3.1: the Signature must be a child of the element it signs.
    #[error("the Signature is not a child of the signed element")]
    SignatureNotEnveloped,
    /// The Signature's structure departs from the xmldsig-core 4 schema in a way we do not interpret.
    #[error("malformed Signature: {0}")]
    MalformedSignature(&'static str),
    /// saml-core 5.4.2: SignedInfo must hold exactly one Reference.
    #[error("SignedInfo holds {0} References, exactly one is required")]
    ReferenceCount(usize),
    /// saml-core 5.4.2: the Reference URI must be `#` + the signed element's ID. Anything else (another
    /// element, the empty URI, an XPointer) is refused.
    #[error("the Reference does not point at the signed element")]
    ReferenceNotRoot,
    /// saml-core 5.4.4: only enveloped-signature and exclusive c14n transforms are accepted.
    #[error("transform `{0}` is not allowed")]
    DisallowedTransform(String),
    /// The transforms are allowed ones but not in the one order we accept: enveloped-signature, then
    /// exclusive c14n (saml-core 5.4.3, 5.4.4).
    #[error("transforms must be enveloped-signature followed by exclusive c14n")]
    TransformChain,
    /// saml-core 5.4.3: SignedInfo must be canonicalized with exclusive c14n.
    #[error("canonicalization `{0}` is not allowed")]
    DisallowedCanonicalization(String),
    /// The SignatureMethod or DigestMethod is not on the allowlist (or is SHA-1 and SHA-1 is not allowed).
    #[error("algorithm `{0}` is not allowed")]
    DisallowedAlgorithm(String),
    /// DigestValue or SignatureValue is not base64 (xmldsig-core 4.4.3.3, 4.3).
    #[error("{0} is not valid base64")]
    Base64(&'static str),
    /// xmldsig-core 3.2.1: the digest of the signed element does not match DigestValue.
    #[error("digest does not match: the signed element was changed")]
    DigestMismatch,
    /// xmldsig-core 3.2.2: SignatureValue does not verify with any trusted key.
    #[error("signature does not verify with any trusted key")]
    BadSignature,
}

/// Verifies the enveloped signature on the root element of a received document (a POST-binding
/// AuthnRequest or LogoutRequest, or signed metadata). The whole document is the signed element, so
/// no `ds:Signature` may appear anywhere else in it.
pub fn verify_enveloped(
    root: &Element,
    keys: &[PKey<Public>],
    policy: &VerifyPolicy,
) -> Result<VerifiedSignature, Error> {
    verify_enveloped_element(root, root, keys, policy)
}

/// Verifies the enveloped signature on `target`, an element inside `root` (an Assertion inside a
/// Response, say). `target` must be a reference into `root`'s tree: the caller then reads exactly the
/// element that was verified. Signatures outside `target` are not looked at; inside it there must be
/// exactly one, as its direct child.
pub fn verify_enveloped_element(
    root: &Element,
    target: &Element,
    keys: &[PKey<Public>],
    policy: &VerifyPolicy,
) -> Result<VerifiedSignature, Error> {
    if keys.is_empty() {
        return Err(Error::NoTrustedKeys);
    }
    let target_scope = inherited_namespaces(root, target).ok_or(Error::TargetNotInDocument)?;
    check_unique_ids(root)?;
    let id = target.attr("ID").ok_or(Error::MissingId)?;

    // saml-core 5.4.1: one enveloped signature. A second Signature inside the signed element could only
    // serve to confuse whoever picks "the" signature, so it is refused rather than ignored.
    let signatures: Vec<&Element> = target
        .descendants()
        .into_iter()
        .filter(|e| e.is(ns::DS, "Signature"))
        .collect();
    let signature = match signatures.as_slice() {
        [] => return Err(Error::NoSignature),
        [one] => *one,
        _ => return Err(Error::MultipleSignatures),
    };
    if !target.elements().any(|e| std::ptr::eq(e, signature)) {
        return Err(Error::SignatureNotEnveloped);
    }

    // xmldsig-core 4.1: Signature = SignedInfo, SignatureValue, KeyInfo?, Object*. Object is not used by
    // SAML and is a favourite hiding place for wrapped content, so it is refused.
    let parts: Vec<&Element> = signature.elements().collect();
    let (signed_info, signature_value) = match parts.as_slice() {
        [si, sv, rest @ ..]
            if si.is(ns::DS, "SignedInfo")
                && sv.is(ns::DS, "SignatureValue")
                && rest.len() <= 1
                && rest.iter().all(|e| e.is(ns::DS, "KeyInfo")) =>
        {
            (*si, *sv)
        }
        _ => {
            return Err(Error::MalformedSignature(
                "Signature must hold SignedInfo, SignatureValue, KeyInfo?",
            ))
        }
    };
    // KeyInfo, if present, is deliberately never read: keys come from metadata only.

    // xmldsig-core 4.3: SignedInfo = CanonicalizationMethod, SignatureMethod, Reference+.
    let si_parts: Vec<&Element> = signed_info.elements().collect();
    let (c14n_method, signature_method, references) = match si_parts.as_slice() {
        [c, s, refs @ ..]
            if c.is(ns::DS, "CanonicalizationMethod") && s.is(ns::DS, "SignatureMethod") =>
        {
            (*c, *s, refs)
        }
        _ => {
            return Err(Error::MalformedSignature(
                "SignedInfo must start with CanonicalizationMethod, SignatureMethod",
            ))
        }
    };
    if references.iter().any(|r| !r.is(ns::DS, "Reference")) {
        return Err(Error::MalformedSignature(
            "SignedInfo holds something other than Reference",
        ));
    }
    // saml-core 5.4.2: exactly one Reference.
    let reference = match references {
        [one] => *one,
        _ => return Err(Error::ReferenceCount(references.len())),
    };

    // saml-core 5.4.3: exclusive canonicalization of SignedInfo (xml-exc-c14n, without comments).
    let c14n_uri = algorithm_uri(c14n_method)?;
    if c14n_uri != EXC_C14N_ALGORITHM {
        return Err(Error::DisallowedCanonicalization(c14n_uri.to_owned()));
    }
    let signed_info_prefixes = inclusive_prefixes(c14n_method)?;

    // xmldsig-core 4.3.2 / 6.4: the SignatureMethod must be on the allowlist. It has no parameters
    // here: HMACOutputLength (the truncation attack of CVE-2009-0217) is refused along with HMAC.
    let sig_uri = algorithm_uri(signature_method)?;
    let algorithm = SignatureAlgorithm::from_uri(sig_uri)
        .filter(|a| policy.allow_sha1 || !a.is_sha1())
        .ok_or_else(|| Error::DisallowedAlgorithm(sig_uri.to_owned()))?;
    if signature_method.elements().next().is_some() {
        return Err(Error::MalformedSignature("SignatureMethod must be empty"));
    }

    // saml-core 5.4.2: the Reference URI is "#" + the ID of the element the signature is enveloped in.
    // This, with the unique-ID check, is the signature-wrapping defence: a Reference to any other
    // element (one the attacker moved aside) is refused, however valid its digest.
    match reference.attr("URI") {
        Some(uri) if uri.strip_prefix('#') == Some(id) => {}
        _ => return Err(Error::ReferenceNotRoot),
    }

    // xmldsig-core 4.3.3: Reference = Transforms?, DigestMethod, DigestValue.
    let ref_parts: Vec<&Element> = reference.elements().collect();
    let (transforms, digest_method, digest_value) = match ref_parts.as_slice() {
        [t, m, v]
            if t.is(ns::DS, "Transforms")
                && m.is(ns::DS, "DigestMethod")
                && v.is(ns::DS, "DigestValue") =>
        {
            (Some(*t), *m, *v)
        }
        [m, v] if m.is(ns::DS, "DigestMethod") && v.is(ns::DS, "DigestValue") => (None, *m, *v),
        _ => {
            return Err(Error::MalformedSignature(
                "Reference must hold Transforms?, DigestMethod, DigestValue",
            ))
        }
    };
    let reference_prefixes = check_transforms(transforms)?;

    let digest_uri = algorithm_uri(digest_method)?;
    let digest = DigestAlgorithm::from_uri(digest_uri)
        .filter(|d| policy.allow_sha1 || !d.is_sha1())
        .ok_or_else(|| Error::DisallowedAlgorithm(digest_uri.to_owned()))?;
    let expected = decode_base64(digest_value, "DigestValue")?;

    // xmldsig-core 3.2.1 reference validation: enveloped-signature removes this Signature (6.6.4), then
    // exclusive c14n of the element, with its ancestors' namespaces available for InclusiveNamespaces.
    let octets = canonicalize(
        target,
        &Options {
            exclude: Some(signature),
            inclusive_prefixes: reference_prefixes,
            inherited: target_scope,
        },
    );
    let actual = digest.hash(&octets).map_err(|_| Error::DigestMismatch)?;
    if actual.len() != expected.len() || !openssl::memcmp::eq(&actual, &expected) {
        return Err(Error::DigestMismatch);
    }

    // xmldsig-core 3.2.2 signature validation over the canonical SignedInfo, canonicalized in its place
    // in the document (ancestors' namespaces matter for an InclusiveNamespaces list).
    let signed_info_scope =
        inherited_namespaces(root, signed_info).ok_or(Error::TargetNotInDocument)?;
    let canonical_signed_info = canonicalize(
        signed_info,
        &Options {
            exclude: None,
            inclusive_prefixes: signed_info_prefixes,
            inherited: signed_info_scope,
        },
    );
    let value = decode_base64(signature_value, "SignatureValue")?;
    for (key_index, key) in keys.iter().enumerate() {
        // A key of the wrong family, or an ECDSA value of the wrong size for this key's curve, simply
        // does not verify with this key; the next key may still.
        if algorithm.key_fits(key)
            && algorithm.verify(key, &canonical_signed_info, &value) == Ok(true)
        {
            return Ok(VerifiedSignature {
                algorithm,
                digest,
                key_index,
            });
        }
    }
    Err(Error::BadSignature)
}

/// Attribute names treated as IDs: SAML 2.0 `ID` (saml-core 1.3.4), SAML 1.x `AssertionID`,
/// `ResponseID` and `RequestID`, XML-DSig `Id` (xmldsig-core 4), and `xml:id` (xml:id 1.0).
fn is_id_attribute(namespace: Option<&str>, local: &str) -> bool {
    match namespace {
        None => matches!(
            local,
            "ID" | "Id" | "AssertionID" | "ResponseID" | "RequestID"
        ),
        Some(XML_NS) => local == "id",
        Some(_) => false,
    }
}

/// Every ID value in the document must be unique, whatever attribute carries it.
fn check_unique_ids(root: &Element) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for element in root.descendants() {
        for attr in &element.attributes {
            if is_id_attribute(attr.namespace.as_deref(), &attr.local)
                && !seen.insert(attr.value.as_str())
            {
                return Err(Error::DuplicateId(attr.value.clone()));
            }
        }
    }
    Ok(())
}

fn algorithm_uri(element: &Element) -> Result<&str, Error> {
    element
        .attr("Algorithm")
        .ok_or(Error::MalformedSignature("Algorithm attribute missing"))
}

/// The PrefixList of an exclusive-c14n `CanonicalizationMethod` or `Transform` (xml-exc-c14n 3): an
/// optional `ec:InclusiveNamespaces` child, whose whitespace-separated prefixes (`#default` for the
/// default namespace) are rendered as in inclusive c14n. Any other content is refused.
fn inclusive_prefixes(method: &Element) -> Result<Vec<String>, Error> {
    let children: Vec<&Element> = method.elements().collect();
    match children.as_slice() {
        [] => Ok(Vec::new()),
        [list]
            if list.is(ns::EXC_C14N, "InclusiveNamespaces") && list.elements().next().is_none() =>
        {
            Ok(list
                .attr("PrefixList")
                .unwrap_or("")
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect())
        }
        _ => Err(Error::MalformedSignature(
            "exclusive c14n takes only an InclusiveNamespaces parameter",
        )),
    }
}

/// saml-core 5.4.4: transforms limited to enveloped-signature and exclusive c14n. We require exactly that
/// pair, in that order: without exc-c14n the node-set would be serialized with inclusive c14n
/// (xmldsig-core 4.3.3.2), which we do not implement; without enveloped-signature the digest would cover
/// the signature itself and could never match. Returns the exc-c14n PrefixList.
fn check_transforms(transforms: Option<&Element>) -> Result<Vec<String>, Error> {
    let Some(transforms) = transforms else {
        return Err(Error::TransformChain);
    };
    let mut uris = Vec::new();
    for t in transforms.elements() {
        if !t.is(ns::DS, "Transform") {
            return Err(Error::MalformedSignature(
                "Transforms holds something other than Transform",
            ));
        }
        let uri = algorithm_uri(t)?;
        if uri != ENVELOPED_SIGNATURE_TRANSFORM && uri != EXC_C14N_ALGORITHM {
            return Err(Error::DisallowedTransform(uri.to_owned()));
        }
        uris.push((uri, t));
    }
    match uris.as_slice() {
        [(ENVELOPED_SIGNATURE_TRANSFORM, enveloped), (EXC_C14N_ALGORITHM, exc)] => {
            if enveloped.elements().next().is_some() {
                return Err(Error::MalformedSignature(
                    "enveloped-signature takes no parameters",
                ));
            }
            inclusive_prefixes(exc)
        }
        _ => Err(Error::TransformChain),
    }
}

/// xmldsig-core 4.3, 4.4.3.3: base64Binary, where XML whitespace (line breaks in particular) may appear
/// between characters. A comment or element inside the value is refused, not skipped.
fn decode_base64(element: &Element, what: &'static str) -> Result<Vec<u8>, Error> {
    let text = element
        .text()
        .map_err(|_| Error::MalformedSignature("value holds markup"))?;
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| Error::Base64(what))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::keys::{generate_self_signed, public_keys_from_certs, KeyKind, SigningKey};
    use super::super::sign::sign_enveloped;
    use super::*;
    use crate::saml::xml::{parse, Limits, Node};
    use chrono::{TimeZone, Utc};

    const STRICT: VerifyPolicy = VerifyPolicy { allow_sha1: false };

    fn key(kind: KeyKind) -> SigningKey {
        generate_self_signed(
            kind,
            "sp",
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            1,
        )
        .unwrap()
        .0
    }

    fn public(key: &SigningKey) -> Vec<PKey<Public>> {
        public_keys_from_certs(&[key.certificate().clone()])
    }

    const REQUEST: &str = r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r1" Version="2.0" IssueInstant="2024-01-01T00:00:00Z" AssertionConsumerServiceURL="https://sp.example/acs?a=1&amp;b=&quot;2&quot;">
  <saml:Issuer>https://sp.example</saml:Issuer>
  <samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified" AllowCreate="true"/>
</samlp:AuthnRequest>"#;

    /// Signs REQUEST and returns the serialized, signed document.
    fn signed_request(key: &SigningKey) -> String {
        let mut doc = parse(REQUEST.as_bytes(), &Limits::default()).unwrap();
        sign_enveloped(&mut doc, key).unwrap();
        doc.to_xml()
    }

    fn verify_str(
        xml: &str,
        keys: &[PKey<Public>],
        policy: &VerifyPolicy,
    ) -> Result<VerifiedSignature, Error> {
        let doc = parse(xml.as_bytes(), &Limits::default()).unwrap();
        verify_enveloped(&doc, keys, policy)
    }

    #[test]
    fn round_trip_rsa_and_ec() {
        for (kind, alg) in [
            (KeyKind::Rsa2048, SignatureAlgorithm::RsaSha256),
            (KeyKind::EcP256, SignatureAlgorithm::EcdsaSha256),
        ] {
            let k = key(kind);
            let xml = signed_request(&k);
            let mut keys = public(&key(KeyKind::EcP256));
            keys.extend(public(&k));
            let ok = verify_str(&xml, &keys, &STRICT).unwrap();
            assert_eq!(
                ok,
                VerifiedSignature {
                    algorithm: alg,
                    digest: DigestAlgorithm::Sha256,
                    key_index: 1
                }
            );
        }
    }

    #[test]
    fn tampering_is_a_digest_mismatch() {
        let k = key(KeyKind::EcP256);
        let xml = signed_request(&k);
        let tampered = xml.replace(
            "https://sp.example</saml:Issuer>",
            "https://evil.example</saml:Issuer>",
        );
        assert_ne!(tampered, xml);
        assert_eq!(
            verify_str(&tampered, &public(&k), &STRICT),
            Err(Error::DigestMismatch)
        );
        // An added attribute too.
        let tampered = xml.replace("Version=\"2.0\"", "Version=\"2.0\" ForceAuthn=\"true\"");
        assert_eq!(
            verify_str(&tampered, &public(&k), &STRICT),
            Err(Error::DigestMismatch)
        );
    }

    #[test]
    fn formatting_changes_that_c14n_removes_still_verify() {
        let k = key(KeyKind::Rsa2048);
        let xml = signed_request(&k);
        // Attribute order, quote style, empty-element form, comments, line-broken base64.
        let reformatted = xml
            .replace(r#"ID="_r1" Version="2.0""#, r#"Version='2.0' ID='_r1'"#)
            .replace(
                "AllowCreate=\"true\"/>",
                "AllowCreate=\"true\"></samlp:NameIDPolicy><!-- hi -->",
            );
        let doc = parse(reformatted.as_bytes(), &Limits::default()).unwrap();
        let value = doc
            .child(ns::DS, "Signature")
            .unwrap()
            .child(ns::DS, "SignatureValue")
            .unwrap();
        let text = value.text().unwrap();
        let wrapped: String = text
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n");
        let reformatted = reformatted.replace(&text, &format!("\n{wrapped}\n"));
        assert!(verify_str(&reformatted, &public(&k), &STRICT).is_ok());
    }

    #[test]
    fn wrong_key_is_bad_signature() {
        let k = key(KeyKind::Rsa2048);
        let xml = signed_request(&k);
        let others = [
            public(&key(KeyKind::Rsa2048)),
            public(&key(KeyKind::EcP256)),
        ]
        .concat();
        assert_eq!(verify_str(&xml, &others, &STRICT), Err(Error::BadSignature));
        assert_eq!(verify_str(&xml, &[], &STRICT), Err(Error::NoTrustedKeys));
    }

    #[test]
    fn key_info_in_the_message_is_ignored() {
        // The attacker signs with their own key and puts their own certificate in KeyInfo.
        let attacker = key(KeyKind::Rsa2048);
        let xml = signed_request(&attacker);
        let trusted = public(&key(KeyKind::Rsa2048));
        assert_eq!(
            verify_str(&xml, &trusted, &STRICT),
            Err(Error::BadSignature)
        );
    }

    /// Builds a document signed with rsa-sha1 / sha1 by hand, as an old SP would.
    fn sha1_signed(k: &SigningKey) -> String {
        let xml = signed_request(k);
        let mut doc = parse(xml.as_bytes(), &Limits::default()).unwrap();
        let sig_index = doc
            .children
            .iter()
            .position(|n| matches!(n, Node::Element(e) if e.is(ns::DS, "Signature")))
            .unwrap();
        let Node::Element(mut sig) = doc.children.remove(sig_index) else {
            unreachable!()
        };
        let digest = DigestAlgorithm::Sha1
            .hash(&canonicalize(&doc, &Options::default()))
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let si = sig.elements_mut().next().unwrap();
        for e in si.elements_mut() {
            if e.local == "SignatureMethod" {
                e.set_attr("Algorithm", SignatureAlgorithm::RsaSha1.uri());
            }
            if e.local == "Reference" {
                for r in e.elements_mut() {
                    if r.local == "DigestMethod" {
                        r.set_attr("Algorithm", DigestAlgorithm::Sha1.uri());
                    }
                    if r.local == "DigestValue" {
                        r.children = vec![Node::Text(b64.encode(&digest))];
                    }
                }
            }
        }
        let si = sig.elements().next().unwrap();
        let value = SignatureAlgorithm::RsaSha1
            .sign(k.private_key(), &canonicalize(si, &Options::default()))
            .unwrap();
        for e in sig.elements_mut() {
            if e.local == "SignatureValue" {
                e.children = vec![Node::Text(b64.encode(&value))];
            }
        }
        doc.children.insert(sig_index, Node::Element(sig));
        doc.to_xml()
    }

    #[test]
    fn sha1_only_when_allowed() {
        let k = key(KeyKind::Rsa2048);
        let xml = sha1_signed(&k);
        assert_eq!(
            verify_str(&xml, &public(&k), &STRICT),
            Err(Error::DisallowedAlgorithm(
                SignatureAlgorithm::RsaSha1.uri().into()
            ))
        );
        let ok = verify_str(&xml, &public(&k), &VerifyPolicy { allow_sha1: true }).unwrap();
        assert_eq!(ok.algorithm, SignatureAlgorithm::RsaSha1);
        assert_eq!(ok.digest, DigestAlgorithm::Sha1);
    }

    #[test]
    fn unknown_algorithms_are_refused() {
        let k = key(KeyKind::Rsa2048);
        let xml = signed_request(&k);
        let hmac = "http://www.w3.org/2000/09/xmldsig#hmac-sha1";
        let bad = xml.replace(SignatureAlgorithm::RsaSha256.uri(), hmac);
        assert_eq!(
            verify_str(&bad, &public(&k), &STRICT),
            Err(Error::DisallowedAlgorithm(hmac.into()))
        );
        let md5 = "http://www.w3.org/2001/04/xmldsig-more#md5";
        let bad = xml.replace(DigestAlgorithm::Sha256.uri(), md5);
        assert_eq!(
            verify_str(&bad, &public(&k), &STRICT),
            Err(Error::DisallowedAlgorithm(md5.into()))
        );
        let inclusive = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
        let bad = xml.replacen(EXC_C14N_ALGORITHM, inclusive, 1);
        assert_eq!(
            verify_str(&bad, &public(&k), &STRICT),
            Err(Error::DisallowedCanonicalization(inclusive.into()))
        );
    }

    /// Takes the signed request apart: (root without signature, signature).
    fn split(xml: &str) -> (Element, Element) {
        let mut doc = parse(xml.as_bytes(), &Limits::default()).unwrap();
        let i = doc
            .children
            .iter()
            .position(|n| matches!(n, Node::Element(e) if e.is(ns::DS, "Signature")))
            .unwrap();
        let Node::Element(sig) = doc.children.remove(i) else {
            unreachable!()
        };
        (doc, sig)
    }

    #[test]
    fn xsw_wrapping_the_signed_element_in_a_new_root() {
        let k = key(KeyKind::Rsa2048);
        let (original, sig) = split(&signed_request(&k));
        // The attacker's root, with its own ID, holding the untouched original and the moved Signature.
        let evil = Element::new("samlp", "AuthnRequest", ns::SAMLP)
            .declare("samlp", ns::SAMLP)
            .declare("saml", ns::SAML)
            .with_attr("ID", "_evil")
            .with_attr("Version", "2.0")
            .with_child(Element::new("saml", "Issuer", ns::SAML).with_text("https://evil.example"))
            .with_child(sig.clone())
            .with_child(
                Element::new("samlp", "Extensions", ns::SAMLP).with_child(original.clone()),
            );
        assert_eq!(
            verify_str(&evil.to_xml(), &public(&k), &STRICT),
            Err(Error::ReferenceNotRoot)
        );
        // Signature left inside the wrapped original: not enveloped in the root.
        let mut signed_original = original;
        signed_original.children.insert(0, Node::Element(sig));
        let evil = Element::new("samlp", "AuthnRequest", ns::SAMLP)
            .declare("samlp", ns::SAMLP)
            .with_attr("ID", "_evil")
            .with_child(Element::new("samlp", "Extensions", ns::SAMLP).with_child(signed_original));
        assert_eq!(
            verify_str(&evil.to_xml(), &public(&k), &STRICT),
            Err(Error::SignatureNotEnveloped)
        );
    }

    #[test]
    fn xsw_duplicate_id() {
        let k = key(KeyKind::Rsa2048);
        let xml = signed_request(&k);
        let evil = xml.replace(
            "<samlp:NameIDPolicy",
            r#"<samlp:Extensions><samlp:AuthnRequest ID="_r1"/></samlp:Extensions><samlp:NameIDPolicy"#,
        );
        assert_eq!(
            verify_str(&evil, &public(&k), &STRICT),
            Err(Error::DuplicateId("_r1".into()))
        );
        let evil = xml.replace(
            "<samlp:NameIDPolicy",
            r#"<x xml:id="_r1"/><samlp:NameIDPolicy"#,
        );
        assert_eq!(
            verify_str(&evil, &public(&k), &STRICT),
            Err(Error::DuplicateId("_r1".into()))
        );
    }

    #[test]
    fn xsw_reference_to_a_child() {
        // The SP signs only an inner element; that must not count as a signature on the request.
        let k = key(KeyKind::Rsa2048);
        let mut doc = parse(REQUEST.as_bytes(), &Limits::default()).unwrap();
        let mut inner = Element::new("samlp", "Extensions", ns::SAMLP).with_attr("ID", "_inner");
        sign_enveloped(&mut inner, &k).unwrap();
        let sig = inner.child(ns::DS, "Signature").unwrap().clone();
        inner.children.clear();
        doc.children.insert(0, Node::Element(sig));
        doc.children.push(Node::Element(inner));
        assert_eq!(
            verify_str(&doc.to_xml(), &public(&k), &STRICT),
            Err(Error::ReferenceNotRoot)
        );
        // Empty URI (whole document) is refused too.
        let xml = signed_request(&k).replace("URI=\"#_r1\"", "URI=\"\"");
        assert_eq!(
            verify_str(&xml, &public(&k), &STRICT),
            Err(Error::ReferenceNotRoot)
        );
    }

    #[test]
    fn xsw_two_signatures() {
        let k = key(KeyKind::Rsa2048);
        let xml = signed_request(&k);
        let (_, sig) = split(&xml);
        let mut doc = parse(xml.as_bytes(), &Limits::default()).unwrap();
        doc.children.push(Node::Element(
            Element::new("samlp", "Extensions", ns::SAMLP).with_child(sig.clone()),
        ));
        assert_eq!(
            verify_str(&doc.to_xml(), &public(&k), &STRICT),
            Err(Error::MultipleSignatures)
        );
        let mut doc = parse(xml.as_bytes(), &Limits::default()).unwrap();
        doc.children.push(Node::Element(sig));
        assert_eq!(
            verify_str(&doc.to_xml(), &public(&k), &STRICT),
            Err(Error::MultipleSignatures)
        );
    }

    #[test]
    fn xsw_extra_or_reordered_transforms() {
        let k = key(KeyKind::Rsa2048);
        let xml = signed_request(&k);
        let xpath = "http://www.w3.org/TR/1999/REC-xpath-19991116";
        let enveloped = format!(r#"<ds:Transform Algorithm="{ENVELOPED_SIGNATURE_TRANSFORM}"/>"#);
        let evil = xml.replace(
            &enveloped,
            &format!(r#"<ds:Transform Algorithm="{xpath}"><ds:XPath>not(ancestor-or-self::x)</ds:XPath></ds:Transform>{enveloped}"#),
        );
        assert_ne!(evil, xml);
        assert_eq!(
            verify_str(&evil, &public(&k), &STRICT),
            Err(Error::DisallowedTransform(xpath.into()))
        );
        let exc = format!(r#"<ds:Transform Algorithm="{EXC_C14N_ALGORITHM}"/>"#);
        let only_enveloped = xml.replace(&exc, "");
        assert_eq!(
            verify_str(&only_enveloped, &public(&k), &STRICT),
            Err(Error::TransformChain)
        );
        let doubled = xml.replace(&exc, &format!("{exc}{exc}"));
        assert_eq!(
            verify_str(&doubled, &public(&k), &STRICT),
            Err(Error::TransformChain)
        );
        let with_comments = format!("{EXC_C14N_ALGORITHM}WithComments");
        let evil = xml.replace(
            &exc,
            &format!(r#"<ds:Transform Algorithm="{with_comments}"/>"#),
        );
        assert_eq!(
            verify_str(&evil, &public(&k), &STRICT),
            Err(Error::DisallowedTransform(with_comments))
        );
    }

    #[test]
    fn structural_problems_have_their_own_errors() {
        let k = key(KeyKind::Rsa2048);
        let keys = public(&k);
        assert_eq!(verify_str(REQUEST, &keys, &STRICT), Err(Error::NoSignature));
        let xml = signed_request(&k);
        let no_id = xml.replace(" ID=\"_r1\"", "");
        assert_eq!(verify_str(&no_id, &keys, &STRICT), Err(Error::MissingId));
        let object = xml.replace("</ds:Signature>", "<ds:Object/></ds:Signature>");
        assert!(matches!(
            verify_str(&object, &keys, &STRICT),
            Err(Error::MalformedSignature(_))
        ));
        let (_, sig) = split(&xml);
        let reference = sig
            .elements()
            .next()
            .unwrap()
            .child(ns::DS, "Reference")
            .unwrap()
            .to_xml();
        let two = xml.replace(&reference, &format!("{reference}{reference}"));
        assert_ne!(two, xml);
        assert_eq!(
            verify_str(&two, &keys, &STRICT),
            Err(Error::ReferenceCount(2))
        );
        let junk = xml.replacen("<ds:DigestValue>", "<ds:DigestValue>!!", 1);
        assert_eq!(
            verify_str(&junk, &keys, &STRICT),
            Err(Error::Base64("DigestValue"))
        );
        let comment = xml.replacen("<ds:DigestValue>", "<ds:DigestValue><!---->", 1);
        assert!(matches!(
            verify_str(&comment, &keys, &STRICT),
            Err(Error::MalformedSignature(_))
        ));
    }

    #[test]
    fn inclusive_namespaces_are_honoured() {
        // A signer that lists `xs` as inclusive renders its declaration on the signed element even though
        // the element does not use it; the verifier must do the same or the digest cannot match.
        let k = key(KeyKind::Rsa2048);
        let mut doc = parse(
            br#"<r:Root xmlns:r="urn:r" xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="_x"><r:a>1</r:a></r:Root>"#,
            &Limits::default(),
        )
        .unwrap();
        let with_list = |prefixes: &str| {
            Element::new("ec", "InclusiveNamespaces", ns::EXC_C14N)
                .declare("ec", ns::EXC_C14N)
                .with_attr("PrefixList", prefixes)
        };
        let options = Options {
            inclusive_prefixes: vec!["xs".into()],
            ..Options::default()
        };
        let digest = DigestAlgorithm::Sha256
            .hash(&canonicalize(&doc, &options))
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let ds = |l: &str| Element::new("ds", l, ns::DS);
        let signed_info = ds("SignedInfo")
            .with_child(
                ds("CanonicalizationMethod")
                    .with_attr("Algorithm", EXC_C14N_ALGORITHM)
                    .with_child(with_list("xs #default")),
            )
            .with_child(
                ds("SignatureMethod").with_attr("Algorithm", SignatureAlgorithm::RsaSha256.uri()),
            )
            .with_child(
                ds("Reference")
                    .with_attr("URI", "#_x")
                    .with_child(
                        ds("Transforms")
                            .with_child(
                                ds("Transform")
                                    .with_attr("Algorithm", ENVELOPED_SIGNATURE_TRANSFORM),
                            )
                            .with_child(
                                ds("Transform")
                                    .with_attr("Algorithm", EXC_C14N_ALGORITHM)
                                    .with_child(with_list("xs")),
                            ),
                    )
                    .with_child(
                        ds("DigestMethod").with_attr("Algorithm", DigestAlgorithm::Sha256.uri()),
                    )
                    .with_child(ds("DigestValue").with_text(b64.encode(&digest))),
            );
        // SignedInfo in place sees xmlns:r and xmlns:xs from the root; with `xs` inclusive, xs is rendered.
        let si_scope = doc.ns_decls.clone();
        let si_options = Options {
            inclusive_prefixes: vec!["xs".into(), "#default".into()],
            inherited: si_scope,
            ..Options::default()
        };
        let si_c14n = canonicalize(&signed_info, &si_options);
        assert!(String::from_utf8(si_c14n.clone())
            .unwrap()
            .contains("xmlns:xs="));
        let value = SignatureAlgorithm::RsaSha256
            .sign(k.private_key(), &si_c14n)
            .unwrap();
        let sig = ds("Signature")
            .declare("ds", ns::DS)
            .with_child(signed_info)
            .with_child(ds("SignatureValue").with_text(b64.encode(value)));
        doc.children.insert(0, Node::Element(sig));
        let xml = doc.to_xml();
        assert!(verify_str(&xml, &public(&k), &STRICT).is_ok());
        // Dropping the list from the Reference's transform changes the canonical form: digest mismatch.
        let dropped = xml.replacen(r#"<ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="xs"/>"#, "", 1);
        assert_ne!(dropped, xml);
        assert_eq!(
            verify_str(&dropped, &public(&k), &STRICT),
            Err(Error::DigestMismatch)
        );
    }

    #[test]
    fn verifies_an_inner_element() {
        let k = key(KeyKind::EcP256);
        let mut assertion = Element::new("saml", "Assertion", ns::SAML)
            .declare("saml", ns::SAML)
            .with_attr("ID", "_a")
            .with_child(Element::new("saml", "Issuer", ns::SAML).with_text("idp"));
        sign_enveloped(&mut assertion, &k).unwrap();
        let response = Element::new("samlp", "Response", ns::SAMLP)
            .declare("samlp", ns::SAMLP)
            .with_attr("ID", "_resp")
            .with_child(assertion);
        let doc = parse(response.to_xml().as_bytes(), &Limits::default()).unwrap();
        let inner = doc.child(ns::SAML, "Assertion").unwrap();
        assert!(verify_enveloped_element(&doc, inner, &public(&k), &STRICT).is_ok());
        // The root itself carries no signature of its own.
        assert_eq!(
            verify_enveloped(&doc, &public(&k), &STRICT),
            Err(Error::SignatureNotEnveloped)
        );
        // An element from another tree is refused.
        let other = doc.clone();
        let stray = other.child(ns::SAML, "Assertion").unwrap();
        assert_eq!(
            verify_enveloped_element(&doc, stray, &public(&k), &STRICT),
            Err(Error::TargetNotInDocument)
        );
    }
}
