//! Assertion encryption: `saml:EncryptedAssertion` (saml-core 2.3.4, 6.2) with XML Encryption
//! (xmlenc-core, xmlenc-core1).
//!
//! An SP that lists an encryption key in its metadata gets assertions only it can read: the serialized
//! assertion is encrypted with a fresh AES key (`xenc:EncryptedData`, Type Element), and that key is
//! encrypted to the SP's RSA key with RSA-OAEP (`xenc:EncryptedKey` inside `ds:KeyInfo`, saml-core 6.2).
//! The AES key and IV come from a random source the caller may supply, so tests can pin them; the
//! OAEP seed is drawn by OpenSSL itself. Decryption exists for our own tests and for checking interop.

use base64::Engine as _;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::symm::{self, Cipher, Crypter, Mode};
use openssl::x509::X509;

use crate::saml::xml::{self, ns, Element, Limits, NsDecl, XML_NS};

/// xmlenc-core 3.1: EncryptedData Type for a whole element; saml-core 6.1 requires it.
pub const TYPE_ELEMENT: &str = "http://www.w3.org/2001/04/xmlenc#Element";
/// xmlenc-core 5.4.2: RSA-OAEP key transport with MGF1 over SHA-1.
pub const KEY_TRANSPORT_RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
/// xmldsig-core 6.2.1: SHA-1, the only digest rsa-oaep-mgf1p defines.
pub const DIGEST_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";

/// GCM nonce length (xmlenc-core1 5.2.4: 96 bits).
const GCM_IV_LEN: usize = 12;
/// GCM tag length (xmlenc-core1 5.2.4: 128 bits).
const GCM_TAG_LEN: usize = 16;
/// AES block and CBC IV length (xmlenc-core 5.2.2).
const AES_BLOCK: usize = 16;

/// Why an assertion could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    /// saml-core 2.3.4: only a `saml:Assertion` goes into an EncryptedAssertion.
    #[error("element <{0}> is not a saml:Assertion")]
    NotAnAssertion(String),
    /// The assertion uses a prefix it does not declare itself. Once encrypted it is parsed on its own,
    /// without the enclosing Response's declarations, so it would not parse or would change meaning.
    #[error(
        "prefix `{prefix}` on <{element}> is not declared inside the assertion with that namespace"
    )]
    UndeclaredPrefix {
        /// The prefix (empty for the default namespace).
        prefix: String,
        /// The element on which (or on whose attribute) it is used.
        element: String,
    },
    /// rsa-oaep-mgf1p needs an RSA key; the SP's encryption certificate has another kind.
    #[error("the SP encryption certificate does not hold an RSA key")]
    NotRsaKey,
    /// The random source failed; nothing may be encrypted with a predictable key.
    #[error("random source failed: {0}")]
    Random(String),
    /// OpenSSL refused an encryption step; the text is OpenSSL's own.
    #[error("openssl: {0}")]
    Crypto(String),
    /// The element given to decrypt is not a `saml:EncryptedAssertion`.
    #[error("element <{0}> is not a saml:EncryptedAssertion")]
    NotEncryptedAssertion(String),
    /// A required part of the encrypted structure is absent; the name says which.
    #[error("missing {0}")]
    Missing(&'static str),
    /// An algorithm URI we do not implement (or refuse); decryption stops rather than guesses.
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// EncryptedData whose Type is not Element (saml-core 6.1).
    #[error("unsupported EncryptedData Type {0}")]
    UnsupportedType(String),
    /// A CipherValue that is not base64; the name says which one.
    #[error("{0} CipherValue is not base64")]
    Base64(&'static str),
    /// RSA-OAEP decryption of the key failed: wrong private key or tampered CipherValue.
    #[error("cannot decrypt the content-encryption key")]
    KeyDecryption,
    /// The decrypted key does not have the length its algorithm needs.
    #[error("content-encryption key is {actual} bytes, the algorithm needs {expected}")]
    KeyLength {
        /// The length the data algorithm requires.
        expected: usize,
        /// The length found.
        actual: usize,
    },
    /// The content does not decrypt: too short, GCM tag mismatch, or bad CBC padding.
    #[error("cannot decrypt the assertion")]
    Decryption,
    /// The decrypted content is not acceptable XML or not an assertion.
    #[error("decrypted content is not an assertion: {0}")]
    Plaintext(String),
}

impl From<openssl::error::ErrorStack> for EncryptError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        EncryptError::Crypto(e.to_string())
    }
}

/// The block cipher that encrypts the assertion itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataEncryption {
    /// xmlenc-core1 5.2.4 AES-256-GCM: authenticated; the preferred choice when the SP supports it.
    Aes256Gcm,
    /// xmlenc-core1 5.2.4 AES-128-GCM: authenticated; the GCM variant older SP stacks (samael, Shibboleth
    /// SP 2.x+) understand.
    Aes128Gcm,
    /// xmlenc-core 5.2.2 AES-256-CBC: unauthenticated, for SPs that know no GCM.
    Aes256Cbc,
    /// xmlenc-core 5.2.2 AES-128-CBC: unauthenticated, the most widely supported.
    Aes128Cbc,
}

impl DataEncryption {
    /// Every supported algorithm, most preferred first.
    pub const ALL: [DataEncryption; 4] = [
        DataEncryption::Aes256Gcm,
        DataEncryption::Aes128Gcm,
        DataEncryption::Aes256Cbc,
        DataEncryption::Aes128Cbc,
    ];

    /// The algorithm URI written in `xenc:EncryptionMethod`.
    pub fn uri(self) -> &'static str {
        match self {
            DataEncryption::Aes256Gcm => "http://www.w3.org/2009/xmlenc11#aes256-gcm",
            DataEncryption::Aes128Gcm => "http://www.w3.org/2009/xmlenc11#aes128-gcm",
            DataEncryption::Aes256Cbc => "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
            DataEncryption::Aes128Cbc => "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
        }
    }

    /// Looks an algorithm up by its exact URI.
    pub fn from_uri(uri: &str) -> Option<DataEncryption> {
        DataEncryption::ALL.into_iter().find(|d| d.uri() == uri)
    }

    /// The first algorithm in `sp_methods` (an SP's metadata EncryptionMethod list, in its order of
    /// preference, saml-metadata 2.4.1.1) that we support; None when it lists none we know.
    pub fn preferred_from(sp_methods: &[String]) -> Option<DataEncryption> {
        sp_methods
            .iter()
            .find_map(|m| DataEncryption::from_uri(m.trim()))
    }

    fn key_len(self) -> usize {
        match self {
            DataEncryption::Aes256Gcm | DataEncryption::Aes256Cbc => 32,
            DataEncryption::Aes128Gcm | DataEncryption::Aes128Cbc => 16,
        }
    }

    fn cipher(self) -> Cipher {
        match self {
            DataEncryption::Aes256Gcm => Cipher::aes_256_gcm(),
            DataEncryption::Aes128Gcm => Cipher::aes_128_gcm(),
            DataEncryption::Aes256Cbc => Cipher::aes_256_cbc(),
            DataEncryption::Aes128Cbc => Cipher::aes_128_cbc(),
        }
    }

    fn is_gcm(self) -> bool {
        matches!(self, DataEncryption::Aes256Gcm | DataEncryption::Aes128Gcm)
    }

    fn iv_len(self) -> usize {
        if self.is_gcm() {
            GCM_IV_LEN
        } else {
            AES_BLOCK
        }
    }
}

/// A source of random bytes: fills the slice or fails. [`openssl_random`] is the production one.
pub type RandomSource<'a> = &'a mut dyn FnMut(&mut [u8]) -> Result<(), EncryptError>;

/// OpenSSL's CSPRNG as a [`RandomSource`].
pub fn openssl_random(buf: &mut [u8]) -> Result<(), EncryptError> {
    openssl::rand::rand_bytes(buf).map_err(|e| EncryptError::Random(e.to_string()))
}

/// Encrypts `assertion` for the holder of `sp_cert` with a fresh key from OpenSSL's CSPRNG.
/// See [`encrypt_assertion_with`].
pub fn encrypt_assertion(
    assertion: &Element,
    sp_cert: &X509,
    method: DataEncryption,
) -> Result<Element, EncryptError> {
    encrypt_assertion_with(assertion, sp_cert, method, &mut openssl_random)
}

/// Encrypts `assertion` (already signed, if it is to be signed: saml-core 6.2 signs before encrypting)
/// into a `saml:EncryptedAssertion`, drawing the AES key and IV from `random`.
///
/// The assertion must declare every namespace prefix it uses, since it is decrypted and parsed apart
/// from the document around it (xmlenc-core 4.1 serializes the element alone).
pub fn encrypt_assertion_with(
    assertion: &Element,
    sp_cert: &X509,
    method: DataEncryption,
    random: RandomSource<'_>,
) -> Result<Element, EncryptError> {
    if !assertion.is(ns::SAML, "Assertion") {
        return Err(EncryptError::NotAnAssertion(assertion.local.clone()));
    }
    check_self_contained(assertion, &mut Vec::new())?;
    let rsa = sp_cert
        .public_key()?
        .rsa()
        .map_err(|_| EncryptError::NotRsaKey)?;

    let mut key = vec![0u8; method.key_len()];
    random(&mut key)?;
    let mut iv = vec![0u8; method.iv_len()];
    random(&mut iv)?;

    // xmlenc-core 4.1 step 3.1: Type Element, so the octets are the element's UTF-8 serialization.
    let plaintext = assertion.to_xml();
    let mut cipher_octets = iv.clone();
    if method.is_gcm() {
        // xmlenc-core1 5.2.4: IV || ciphertext || 128-bit tag, no additional authenticated data.
        let mut tag = [0u8; GCM_TAG_LEN];
        let ciphertext = symm::encrypt_aead(
            method.cipher(),
            &key,
            Some(&iv),
            &[],
            plaintext.as_bytes(),
            &mut tag,
        )?;
        cipher_octets.extend_from_slice(&ciphertext);
        cipher_octets.extend_from_slice(&tag);
    } else {
        // xmlenc-core 5.2: IV || ciphertext; the padding's last octet counts the padding octets. OpenSSL's
        // PKCS#7 padding is one such padding (its other octets are not required to be random).
        let ciphertext = symm::encrypt(method.cipher(), &key, Some(&iv), plaintext.as_bytes())?;
        cipher_octets.extend_from_slice(&ciphertext);
    }

    // xmlenc-core 5.4.2: rsa-oaep-mgf1p, OAEP with SHA-1 and MGF1-SHA-1 (OpenSSL's PKCS1_OAEP), no label.
    let mut encrypted_key = vec![0u8; rsa.size() as usize];
    let written = rsa.public_encrypt(&key, &mut encrypted_key, Padding::PKCS1_OAEP)?;
    encrypted_key.truncate(written);

    let b64 = base64::engine::general_purpose::STANDARD;
    let xenc = |local: &str| Element::new("xenc", local, ns::XENC);
    let cipher_data = |octets: &[u8]| {
        xenc("CipherData").with_child(xenc("CipherValue").with_text(b64.encode(octets)))
    };

    // saml-core 6.2: the EncryptedKey sits in the EncryptedData's ds:KeyInfo. xmlns:ds is declared on
    // KeyInfo itself, where some SP libraries (samael) look for it.
    let key_info = Element::new("ds", "KeyInfo", ns::DS)
        .declare("ds", ns::DS)
        .with_child(
            xenc("EncryptedKey")
                .with_child(
                    xenc("EncryptionMethod")
                        .with_attr("Algorithm", KEY_TRANSPORT_RSA_OAEP_MGF1P)
                        .with_child(
                            Element::new("ds", "DigestMethod", ns::DS)
                                .with_attr("Algorithm", DIGEST_SHA1),
                        ),
                )
                .with_child(cipher_data(&encrypted_key)),
        );
    let encrypted_data = xenc("EncryptedData")
        .declare("xenc", ns::XENC)
        .with_attr("Type", TYPE_ELEMENT)
        .with_child(xenc("EncryptionMethod").with_attr("Algorithm", method.uri()))
        .with_child(key_info)
        .with_child(cipher_data(&cipher_octets));
    Ok(Element::new("saml", "EncryptedAssertion", ns::SAML)
        .declare("saml", ns::SAML)
        .with_child(encrypted_data))
}

/// Checks that every prefix used in `element`'s subtree (elements and attributes, and the default
/// namespace) is declared inside the subtree with the namespace the tree says it has.
fn check_self_contained(element: &Element, scope: &mut Vec<NsDecl>) -> Result<(), EncryptError> {
    let mark = scope.len();
    scope.extend(element.ns_decls.iter().cloned());
    let bound = |prefix: Option<&str>| -> Option<String> {
        if prefix == Some("xml") {
            return Some(XML_NS.to_owned());
        }
        scope
            .iter()
            .rev()
            .find(|d| d.prefix.as_deref() == prefix)
            .map(|d| d.uri.clone())
            .filter(|u| !u.is_empty())
    };
    let undeclared = |prefix: Option<&str>| EncryptError::UndeclaredPrefix {
        prefix: prefix.unwrap_or_default().to_owned(),
        element: element.local.clone(),
    };
    if bound(element.prefix.as_deref()) != element.namespace {
        return Err(undeclared(element.prefix.as_deref()));
    }
    for attr in &element.attributes {
        // Namespaces in XML 1.0, 6.2: an unprefixed attribute is in no namespace, whatever the default.
        if attr.prefix.is_some() && bound(attr.prefix.as_deref()) != attr.namespace {
            return Err(undeclared(attr.prefix.as_deref()));
        }
        if attr.prefix.is_none() && attr.namespace.is_some() {
            return Err(undeclared(None));
        }
        // saml-core 2.7.3.1.1: `xsi:type="xs:string"` names a type by QName, so its prefix must be in
        // scope inside the assertion too, or the SP reads an unknown type.
        if attr.namespace.as_deref() == Some(ns::XSI) && attr.local == "type" {
            let type_prefix = attr.value.split_once(':').map(|(p, _)| p);
            if bound(type_prefix).is_none() && type_prefix.is_some() {
                return Err(undeclared(type_prefix));
            }
        }
    }
    for child in element.elements() {
        check_self_contained(child, scope)?;
    }
    scope.truncate(mark);
    Ok(())
}

/// Decrypts a `saml:EncryptedAssertion` made by [`encrypt_assertion`] (or any producer using the same
/// algorithms) with the SP's private key, returning the parsed assertion.
///
/// Accepts the EncryptedKey inside `EncryptedData/ds:KeyInfo` or as a sibling of EncryptedData in the
/// EncryptedAssertion (saml-core 6.2). Only rsa-oaep-mgf1p with SHA-1 and the [`DataEncryption`]
/// algorithms are accepted.
pub fn decrypt_assertion(
    encrypted: &Element,
    key: &PKey<Private>,
) -> Result<Element, EncryptError> {
    if !encrypted.is(ns::SAML, "EncryptedAssertion") {
        return Err(EncryptError::NotEncryptedAssertion(encrypted.local.clone()));
    }
    let data = encrypted
        .child(ns::XENC, "EncryptedData")
        .ok_or(EncryptError::Missing("xenc:EncryptedData"))?;
    // saml-core 6.1: the EncryptedData is of Type Element.
    if let Some(ty) = data.attr("Type") {
        if ty != TYPE_ELEMENT {
            return Err(EncryptError::UnsupportedType(ty.to_owned()));
        }
    }
    let method_uri = algorithm_of(data, "xenc:EncryptedData/xenc:EncryptionMethod")?;
    let method = DataEncryption::from_uri(method_uri)
        .ok_or_else(|| EncryptError::UnsupportedAlgorithm(method_uri.to_owned()))?;

    let encrypted_key = data
        .child(ns::DS, "KeyInfo")
        .and_then(|k| k.child(ns::XENC, "EncryptedKey"))
        .or_else(|| encrypted.child(ns::XENC, "EncryptedKey"))
        .ok_or(EncryptError::Missing("xenc:EncryptedKey"))?;
    let transport = algorithm_of(encrypted_key, "xenc:EncryptedKey/xenc:EncryptionMethod")?;
    if transport != KEY_TRANSPORT_RSA_OAEP_MGF1P {
        return Err(EncryptError::UnsupportedAlgorithm(transport.to_owned()));
    }
    // xmlenc-core 5.4.2: rsa-oaep-mgf1p's DigestMethod, when given, can only be SHA-1.
    if let Some(digest) = encrypted_key
        .child(ns::XENC, "EncryptionMethod")
        .and_then(|m| m.child(ns::DS, "DigestMethod"))
        .map(|d| d.attr("Algorithm").unwrap_or_default())
    {
        if digest != DIGEST_SHA1 {
            return Err(EncryptError::UnsupportedAlgorithm(digest.to_owned()));
        }
    }

    let wrapped = cipher_value(encrypted_key, "EncryptedKey")?;
    let rsa = key.rsa().map_err(|_| EncryptError::KeyDecryption)?;
    let mut content_key = vec![0u8; rsa.size() as usize];
    let len = rsa
        .private_decrypt(&wrapped, &mut content_key, Padding::PKCS1_OAEP)
        .map_err(|_| EncryptError::KeyDecryption)?;
    content_key.truncate(len);
    if content_key.len() != method.key_len() {
        return Err(EncryptError::KeyLength {
            expected: method.key_len(),
            actual: content_key.len(),
        });
    }

    let octets = cipher_value(data, "EncryptedData")?;
    let iv_len = method.iv_len();
    let plaintext = if method.is_gcm() {
        if octets.len() < iv_len + GCM_TAG_LEN {
            return Err(EncryptError::Decryption);
        }
        let (iv, rest) = octets.split_at(iv_len);
        let (ciphertext, tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
        symm::decrypt_aead(
            method.cipher(),
            &content_key,
            Some(iv),
            &[],
            ciphertext,
            tag,
        )
        .map_err(|_| EncryptError::Decryption)?
    } else {
        let (iv, ciphertext) = octets.split_at(iv_len.min(octets.len()));
        if iv.len() < iv_len || ciphertext.is_empty() || ciphertext.len() % AES_BLOCK != 0 {
            return Err(EncryptError::Decryption);
        }
        decrypt_cbc(method.cipher(), &content_key, iv, ciphertext)?
    };

    let assertion = xml::parse(&plaintext, &Limits::default())
        .map_err(|e| EncryptError::Plaintext(e.to_string()))?;
    if !assertion.is(ns::SAML, "Assertion") {
        return Err(EncryptError::Plaintext(format!(
            "root is <{}>",
            assertion.local
        )));
    }
    Ok(assertion)
}

/// xmlenc-core 5.2: CBC without OpenSSL's padding check, because the padding octets other than the last
/// are arbitrary (ISO 10126 style, used by several producers); the last octet says how many to drop.
fn decrypt_cbc(
    cipher: Cipher,
    key: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    let mut crypter =
        Crypter::new(cipher, Mode::Decrypt, key, Some(iv)).map_err(|_| EncryptError::Decryption)?;
    crypter.pad(false);
    let mut out = vec![0u8; ciphertext.len() + AES_BLOCK];
    let mut n = crypter
        .update(ciphertext, &mut out)
        .map_err(|_| EncryptError::Decryption)?;
    n += crypter
        .finalize(&mut out[n..])
        .map_err(|_| EncryptError::Decryption)?;
    out.truncate(n);
    let pad = usize::from(out.last().copied().unwrap_or(0));
    if pad == 0 || pad > AES_BLOCK || pad > out.len() {
        return Err(EncryptError::Decryption);
    }
    out.truncate(out.len() - pad);
    Ok(out)
}

/// The `Algorithm` of an element's `xenc:EncryptionMethod`.
fn algorithm_of<'a>(element: &'a Element, what: &'static str) -> Result<&'a str, EncryptError> {
    element
        .child(ns::XENC, "EncryptionMethod")
        .and_then(|m| m.attr("Algorithm"))
        .ok_or(EncryptError::Missing(what))
}

/// The decoded `xenc:CipherData/xenc:CipherValue` of an element (base64 with whitespace allowed).
fn cipher_value(element: &Element, what: &'static str) -> Result<Vec<u8>, EncryptError> {
    let text = element
        .child(ns::XENC, "CipherData")
        .and_then(|c| c.child(ns::XENC, "CipherValue"))
        .ok_or(EncryptError::Missing(if what == "EncryptedKey" {
            "xenc:EncryptedKey/xenc:CipherData/xenc:CipherValue"
        } else {
            "xenc:EncryptedData/xenc:CipherData/xenc:CipherValue"
        }))?
        .text()
        .map_err(|_| EncryptError::Base64(what))?;
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| EncryptError::Base64(what))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const SP_KEY: &str = include_str!("../../tests/fixtures/metadata/sp-encryption.key");
    const SP_CRT: &str = include_str!("../../tests/fixtures/metadata/sp-encryption.crt");
    const OTHER_KEY: &str = include_str!("../../tests/fixtures/metadata/sp-signing.key");

    fn sp_cert() -> X509 {
        X509::from_pem(SP_CRT.as_bytes()).unwrap()
    }

    fn sp_key() -> PKey<Private> {
        PKey::private_key_from_pem(SP_KEY.as_bytes()).unwrap()
    }

    fn assertion() -> Element {
        let saml = |l: &str| Element::new("saml", l, ns::SAML);
        saml("Assertion")
            .declare("saml", ns::SAML)
            .declare("xs", ns::XS)
            .declare("xsi", ns::XSI)
            .with_attr("ID", "_a1")
            .with_attr("Version", "2.0")
            .with_attr("IssueInstant", "2026-01-01T00:00:00Z")
            .with_child(saml("Issuer").with_text("https://idp.example"))
            .with_child(
                saml("Subject").with_child(saml("NameID").with_text("alice & <bob> \u{e9}")),
            )
            .with_child(
                saml("AttributeStatement").with_child(
                    saml("Attribute").with_attr("Name", "mail").with_child(
                        saml("AttributeValue")
                            .with_ns_attr("xsi", "type", ns::XSI, "xs:string")
                            .with_text("a@example"),
                    ),
                ),
            )
    }

    /// A deterministic "random" source: counts up from `seed`.
    fn counter(seed: u8) -> impl FnMut(&mut [u8]) -> Result<(), EncryptError> {
        let mut next = seed;
        move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                *b = next;
                next = next.wrapping_add(1);
            }
            Ok(())
        }
    }

    fn cipher_value_of(encrypted: &Element) -> Vec<u8> {
        cipher_value(
            encrypted.child(ns::XENC, "EncryptedData").unwrap(),
            "EncryptedData",
        )
        .unwrap()
    }

    #[test]
    fn round_trips_with_every_method() {
        for method in DataEncryption::ALL {
            let original = assertion();
            let encrypted = encrypt_assertion(&original, &sp_cert(), method).unwrap();
            let xml_text = encrypted.to_xml();
            assert!(!xml_text.contains("alice"), "{method:?}: plaintext leaked");
            // Through serialization and our parser, as an SP would receive it.
            let reparsed = xml::parse(xml_text.as_bytes(), &Limits::default()).unwrap();
            let decrypted = decrypt_assertion(&reparsed, &sp_key()).unwrap();
            assert_eq!(decrypted, original, "{method:?}");
        }
    }

    #[test]
    fn structure_follows_saml_core_6_2_and_xmlenc() {
        let encrypted =
            encrypt_assertion(&assertion(), &sp_cert(), DataEncryption::Aes256Gcm).unwrap();
        assert!(encrypted.is(ns::SAML, "EncryptedAssertion"));
        let data = encrypted.child(ns::XENC, "EncryptedData").unwrap();
        assert_eq!(data.attr("Type"), Some(TYPE_ELEMENT));
        assert_eq!(
            data.child(ns::XENC, "EncryptionMethod")
                .unwrap()
                .attr("Algorithm"),
            Some("http://www.w3.org/2009/xmlenc11#aes256-gcm")
        );
        let ek = data
            .child(ns::DS, "KeyInfo")
            .unwrap()
            .child(ns::XENC, "EncryptedKey")
            .unwrap();
        let em = ek.child(ns::XENC, "EncryptionMethod").unwrap();
        assert_eq!(em.attr("Algorithm"), Some(KEY_TRANSPORT_RSA_OAEP_MGF1P));
        assert_eq!(
            em.child(ns::DS, "DigestMethod").unwrap().attr("Algorithm"),
            Some(DIGEST_SHA1)
        );
        // The RSA block is as long as the 2048-bit modulus.
        assert_eq!(cipher_value(ek, "EncryptedKey").unwrap().len(), 256);
        // Children in xmlenc-core 3.1 schema order.
        let order: Vec<&str> = data.elements().map(|e| e.local.as_str()).collect();
        assert_eq!(order, vec!["EncryptionMethod", "KeyInfo", "CipherData"]);
    }

    #[test]
    fn key_and_iv_come_from_the_random_source() {
        let a = encrypt_assertion_with(
            &assertion(),
            &sp_cert(),
            DataEncryption::Aes256Gcm,
            &mut counter(7),
        )
        .unwrap();
        let b = encrypt_assertion_with(
            &assertion(),
            &sp_cert(),
            DataEncryption::Aes256Gcm,
            &mut counter(7),
        )
        .unwrap();
        let c = encrypt_assertion_with(
            &assertion(),
            &sp_cert(),
            DataEncryption::Aes256Gcm,
            &mut counter(8),
        )
        .unwrap();
        let (va, vb, vc) = (
            cipher_value_of(&a),
            cipher_value_of(&b),
            cipher_value_of(&c),
        );
        assert_eq!(va, vb, "same key and IV give the same ciphertext");
        assert_ne!(va, vc);
        // xmlenc-core1 5.2.4: IV (the 12 bytes drawn after the 32-byte key) || ciphertext || 16-byte tag.
        let expected_iv: Vec<u8> = (7u8 + 32..7 + 32 + 12).collect();
        assert_eq!(&va[..12], expected_iv.as_slice());
        assert_eq!(va.len(), 12 + assertion().to_xml().len() + 16);
        // CBC: IV(16) || whole blocks, padded by 1..=16 octets.
        let cbc = encrypt_assertion_with(
            &assertion(),
            &sp_cert(),
            DataEncryption::Aes128Cbc,
            &mut counter(0),
        )
        .unwrap();
        let v = cipher_value_of(&cbc);
        let expected_iv: Vec<u8> = (16u8..32).collect();
        assert_eq!(&v[..16], expected_iv.as_slice());
        let plain = assertion().to_xml().len();
        assert_eq!(v.len() - 16, (plain / 16 + 1) * 16);
        assert_eq!(decrypt_assertion(&cbc, &sp_key()).unwrap(), assertion());
    }

    #[test]
    fn failing_random_source_stops_encryption() {
        let mut broken = |_: &mut [u8]| Err(EncryptError::Random("no entropy".into()));
        assert_eq!(
            encrypt_assertion_with(
                &assertion(),
                &sp_cert(),
                DataEncryption::Aes128Gcm,
                &mut broken
            )
            .unwrap_err(),
            EncryptError::Random("no entropy".into())
        );
    }

    #[test]
    fn refuses_assertions_that_depend_on_outer_declarations() {
        // saml prefix declared only on an enclosing Response.
        let bare = Element::new("saml", "Assertion", ns::SAML).with_attr("ID", "_a");
        assert_eq!(
            encrypt_assertion(&bare, &sp_cert(), DataEncryption::Aes256Gcm).unwrap_err(),
            EncryptError::UndeclaredPrefix {
                prefix: "saml".into(),
                element: "Assertion".into()
            }
        );
        // A child using an undeclared prefix.
        let child = Element::new("saml", "Assertion", ns::SAML)
            .declare("saml", ns::SAML)
            .with_child(Element::new("ds", "Signature", ns::DS));
        assert_eq!(
            encrypt_assertion(&child, &sp_cert(), DataEncryption::Aes256Gcm).unwrap_err(),
            EncryptError::UndeclaredPrefix {
                prefix: "ds".into(),
                element: "Signature".into()
            }
        );
        // A prefix bound to a different namespace than the element claims.
        let wrong = Element::new("saml", "Assertion", ns::SAML).declare("saml", ns::SAMLP);
        assert!(matches!(
            encrypt_assertion(&wrong, &sp_cert(), DataEncryption::Aes256Gcm),
            Err(EncryptError::UndeclaredPrefix { .. })
        ));
        // The xs prefix inside an xsi:type value.
        let saml = |l: &str| Element::new("saml", l, ns::SAML);
        let typed = saml("Assertion")
            .declare("saml", ns::SAML)
            .declare("xsi", ns::XSI)
            .with_child(
                saml("AttributeValue")
                    .with_ns_attr("xsi", "type", ns::XSI, "xs:string")
                    .with_text("v"),
            );
        assert_eq!(
            encrypt_assertion(&typed, &sp_cert(), DataEncryption::Aes256Gcm).unwrap_err(),
            EncryptError::UndeclaredPrefix {
                prefix: "xs".into(),
                element: "AttributeValue".into()
            }
        );
        // The default namespace counts too.
        let defaulted = Element::new("", "Assertion", ns::SAML);
        assert!(matches!(
            encrypt_assertion(&defaulted, &sp_cert(), DataEncryption::Aes256Gcm),
            Err(EncryptError::UndeclaredPrefix { prefix, .. }) if prefix.is_empty()
        ));
        let ok = Element::new("", "Assertion", ns::SAML)
            .declare("", ns::SAML)
            .with_child(Element::new("", "Issuer", ns::SAML));
        let round = decrypt_assertion(
            &encrypt_assertion(&ok, &sp_cert(), DataEncryption::Aes256Gcm).unwrap(),
            &sp_key(),
        );
        assert_eq!(round.unwrap(), ok);
    }

    #[test]
    fn refuses_non_assertions_and_non_rsa_keys() {
        let response = Element::new("samlp", "Response", ns::SAMLP).declare("samlp", ns::SAMLP);
        assert_eq!(
            encrypt_assertion(&response, &sp_cert(), DataEncryption::Aes256Gcm).unwrap_err(),
            EncryptError::NotAnAssertion("Response".into())
        );
        let ec = crate::saml::xmldsig::keys::generate_self_signed(
            crate::saml::xmldsig::keys::KeyKind::EcP256,
            "sp",
            chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
            1,
        )
        .unwrap()
        .0;
        assert_eq!(
            encrypt_assertion(&assertion(), ec.certificate(), DataEncryption::Aes256Gcm)
                .unwrap_err(),
            EncryptError::NotRsaKey
        );
    }

    #[test]
    fn decryption_failures_are_specific() {
        let encrypted =
            encrypt_assertion(&assertion(), &sp_cert(), DataEncryption::Aes256Gcm).unwrap();
        let other = PKey::private_key_from_pem(OTHER_KEY.as_bytes()).unwrap();
        assert_eq!(
            decrypt_assertion(&encrypted, &other).unwrap_err(),
            EncryptError::KeyDecryption
        );

        // Flip one ciphertext bit: the GCM tag no longer matches.
        let xml_text = encrypted.to_xml();
        let data_cv = cipher_value_of(&encrypted);
        let mut flipped = data_cv.clone();
        flipped[20] ^= 1;
        let b64 = base64::engine::general_purpose::STANDARD;
        let tampered = xml_text.replace(&b64.encode(&data_cv), &b64.encode(&flipped));
        let tampered = xml::parse(tampered.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            decrypt_assertion(&tampered, &sp_key()).unwrap_err(),
            EncryptError::Decryption
        );

        // Truncated below IV + tag.
        let short = xml_text.replace(&b64.encode(&data_cv), &b64.encode(&data_cv[..20]));
        let short = xml::parse(short.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            decrypt_assertion(&short, &sp_key()).unwrap_err(),
            EncryptError::Decryption
        );

        // A 16-byte key announced as AES-256.
        let small = encrypt_assertion(&assertion(), &sp_cert(), DataEncryption::Aes128Gcm)
            .unwrap()
            .to_xml();
        let relabelled = small.replace(
            DataEncryption::Aes128Gcm.uri(),
            DataEncryption::Aes256Gcm.uri(),
        );
        let relabelled = xml::parse(relabelled.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            decrypt_assertion(&relabelled, &sp_key()).unwrap_err(),
            EncryptError::KeyLength {
                expected: 32,
                actual: 16
            }
        );

        let unknown = xml_text.replace(
            DataEncryption::Aes256Gcm.uri(),
            "http://www.w3.org/2001/04/xmlenc#tripledes-cbc",
        );
        let unknown = xml::parse(unknown.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            decrypt_assertion(&unknown, &sp_key()).unwrap_err(),
            EncryptError::UnsupportedAlgorithm(
                "http://www.w3.org/2001/04/xmlenc#tripledes-cbc".into()
            )
        );
        let sha256 = xml_text.replace(DIGEST_SHA1, "http://www.w3.org/2001/04/xmlenc#sha256");
        let sha256 = xml::parse(sha256.as_bytes(), &Limits::default()).unwrap();
        assert!(matches!(
            decrypt_assertion(&sha256, &sp_key()),
            Err(EncryptError::UnsupportedAlgorithm(_))
        ));
        let content = xml_text.replace(TYPE_ELEMENT, "http://www.w3.org/2001/04/xmlenc#Content");
        let content = xml::parse(content.as_bytes(), &Limits::default()).unwrap();
        assert!(matches!(
            decrypt_assertion(&content, &sp_key()),
            Err(EncryptError::UnsupportedType(_))
        ));

        let not_b64 = xml_text.replace(&b64.encode(&data_cv), "!!!");
        let not_b64 = xml::parse(not_b64.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            decrypt_assertion(&not_b64, &sp_key()).unwrap_err(),
            EncryptError::Base64("EncryptedData")
        );

        let data = encrypted.child(ns::XENC, "EncryptedData").unwrap().clone();
        assert_eq!(
            decrypt_assertion(&data, &sp_key()).unwrap_err(),
            EncryptError::NotEncryptedAssertion("EncryptedData".into())
        );
        let empty = Element::new("saml", "EncryptedAssertion", ns::SAML);
        assert_eq!(
            decrypt_assertion(&empty, &sp_key()).unwrap_err(),
            EncryptError::Missing("xenc:EncryptedData")
        );
    }

    #[test]
    fn accepts_encrypted_key_as_sibling_of_encrypted_data() {
        // saml-core 6.2 allows the EncryptedKey next to EncryptedData inside EncryptedAssertion.
        let mut encrypted =
            encrypt_assertion(&assertion(), &sp_cert(), DataEncryption::Aes128Cbc).unwrap();
        let data = encrypted.elements_mut().next().unwrap();
        let position = data
            .children
            .iter()
            .position(|n| matches!(n, xml::Node::Element(e) if e.local == "KeyInfo"))
            .unwrap();
        let xml::Node::Element(key_info) = data.children.remove(position) else {
            panic!()
        };
        let ek = key_info
            .child(ns::XENC, "EncryptedKey")
            .unwrap()
            .clone()
            .declare("xenc", ns::XENC)
            .declare("ds", ns::DS);
        encrypted.children.push(xml::Node::Element(ek));
        let reparsed = xml::parse(encrypted.to_xml().as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            decrypt_assertion(&reparsed, &sp_key()).unwrap(),
            assertion()
        );
    }

    #[test]
    fn cbc_padding_octets_other_than_the_last_are_arbitrary() {
        // xmlenc-core 5.2: an ISO 10126 producer fills padding with random octets; only the last counts.
        let key = [9u8; 16];
        let iv = [3u8; 16];
        let mut padded = b"<x/>".to_vec();
        padded.extend_from_slice(&[0xAB; 11]);
        padded.push(12);
        let mut c = Crypter::new(Cipher::aes_128_cbc(), Mode::Encrypt, &key, Some(&iv)).unwrap();
        c.pad(false);
        let mut out = vec![0u8; 32];
        let n = c.update(&padded, &mut out).unwrap();
        out.truncate(n);
        assert_eq!(
            decrypt_cbc(Cipher::aes_128_cbc(), &key, &iv, &out).unwrap(),
            b"<x/>"
        );
        // A last octet of 0 or above the block size is not padding.
        for bad in [0u8, 17] {
            let mut p = padded.clone();
            p[15] = bad;
            let mut c =
                Crypter::new(Cipher::aes_128_cbc(), Mode::Encrypt, &key, Some(&iv)).unwrap();
            c.pad(false);
            let mut out = vec![0u8; 32];
            let n = c.update(&p, &mut out).unwrap();
            out.truncate(n);
            assert_eq!(
                decrypt_cbc(Cipher::aes_128_cbc(), &key, &iv, &out).unwrap_err(),
                EncryptError::Decryption
            );
        }
    }

    #[test]
    fn preferred_method_follows_the_sp_order() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            DataEncryption::preferred_from(&list(&[
                "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
                "http://www.w3.org/2009/xmlenc11#aes128-gcm",
                "http://www.w3.org/2009/xmlenc11#aes256-gcm",
            ])),
            Some(DataEncryption::Aes128Gcm)
        );
        assert_eq!(
            DataEncryption::preferred_from(&list(&["urn:unknown"])),
            None
        );
        for m in DataEncryption::ALL {
            assert_eq!(DataEncryption::from_uri(m.uri()), Some(m));
        }
    }
}
