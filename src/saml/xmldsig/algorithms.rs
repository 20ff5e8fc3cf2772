//! Signature and digest algorithm identifiers, and the one place that turns them into OpenSSL calls.
//!
//! Both the HTTP-Redirect binding (whose `SigAlg` parameter names an XML-DSig algorithm URI,
//! saml-bindings 3.4.4.1) and XML Signature itself (`SignatureMethod`, `DigestMethod`, xmldsig-core 4.4)
//! name algorithms by URI. Keeping the URI table, the key-type rule and the signature-value encoding here
//! means an algorithm is either supported everywhere or nowhere. URIs are those of xmldsig-core 6,
//! RFC 4051 and xmlenc-core 5.7 (collected in RFC 6931).

use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, Id, PKeyRef, Private};
use openssl::sign::{Signer, Verifier};

/// Why a signature could not be computed or checked (as opposed to "checked and wrong", which is
/// `Ok(false)` from [`SignatureAlgorithm::verify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    /// The key is not of the family the algorithm needs (an EC key for `rsa-sha256`, say).
    #[error("key type does not fit signature algorithm {0}")]
    KeyMismatch(&'static str),
    /// An ECDSA signature value that is neither `r || s` of the curve's size nor a DER `ECDSA-Sig-Value`.
    #[error("malformed ECDSA signature value ({0} bytes)")]
    MalformedEcdsaSignature(usize),
    /// OpenSSL refused an operation (bad key, allocation failure); the text is OpenSSL's own.
    #[error("openssl: {0}")]
    Crypto(String),
}

impl From<openssl::error::ErrorStack> for AlgorithmError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        AlgorithmError::Crypto(e.to_string())
    }
}

/// A signature algorithm Tessera knows. Anything else is refused by whoever calls [`Self::from_uri`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// xmldsig-core 6.4.2 RSA-SHA1: only accepted where the caller explicitly allows SHA-1.
    RsaSha1,
    /// RFC 4051 2.3.2 RSA-SHA256, the SAML default in practice.
    RsaSha256,
    /// RFC 4051 2.3.3 RSA-SHA384.
    RsaSha384,
    /// RFC 4051 2.3.4 RSA-SHA512.
    RsaSha512,
    /// RFC 4051 2.3.6 ECDSA-SHA256 (xmldsig-core1 6.4.3).
    EcdsaSha256,
    /// RFC 4051 2.3.6 ECDSA-SHA384.
    EcdsaSha384,
    /// RFC 4051 2.3.6 ECDSA-SHA512.
    EcdsaSha512,
}

impl SignatureAlgorithm {
    /// Every supported algorithm, for tests and for listing in metadata.
    pub const ALL: [SignatureAlgorithm; 7] = [
        SignatureAlgorithm::RsaSha1,
        SignatureAlgorithm::RsaSha256,
        SignatureAlgorithm::RsaSha384,
        SignatureAlgorithm::RsaSha512,
        SignatureAlgorithm::EcdsaSha256,
        SignatureAlgorithm::EcdsaSha384,
        SignatureAlgorithm::EcdsaSha512,
    ];

    /// Looks an algorithm up by its exact URI (no normalisation: URIs are compared as strings,
    /// xmldsig-core 6.1). `None` means "not on the allowlist".
    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.uri() == uri)
    }

    /// The algorithm's identifying URI.
    pub fn uri(self) -> &'static str {
        match self {
            SignatureAlgorithm::RsaSha1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            SignatureAlgorithm::RsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            SignatureAlgorithm::RsaSha384 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
            SignatureAlgorithm::RsaSha512 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
            SignatureAlgorithm::EcdsaSha256 => {
                "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
            }
            SignatureAlgorithm::EcdsaSha384 => {
                "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
            }
            SignatureAlgorithm::EcdsaSha512 => {
                "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"
            }
        }
    }

    /// The hash the signature is computed over.
    pub fn digest(self) -> MessageDigest {
        self.digest_algorithm().message_digest()
    }

    /// The same hash as a [`DigestAlgorithm`].
    pub fn digest_algorithm(self) -> DigestAlgorithm {
        match self {
            SignatureAlgorithm::RsaSha1 => DigestAlgorithm::Sha1,
            SignatureAlgorithm::RsaSha256 | SignatureAlgorithm::EcdsaSha256 => {
                DigestAlgorithm::Sha256
            }
            SignatureAlgorithm::RsaSha384 | SignatureAlgorithm::EcdsaSha384 => {
                DigestAlgorithm::Sha384
            }
            SignatureAlgorithm::RsaSha512 | SignatureAlgorithm::EcdsaSha512 => {
                DigestAlgorithm::Sha512
            }
        }
    }

    /// True for the ECDSA family, whose signature values need the `r || s` conversion.
    pub fn is_ecdsa(self) -> bool {
        matches!(
            self,
            SignatureAlgorithm::EcdsaSha256
                | SignatureAlgorithm::EcdsaSha384
                | SignatureAlgorithm::EcdsaSha512
        )
    }

    /// True when the algorithm hashes with SHA-1 (collision-broken; opt-in only).
    pub fn is_sha1(self) -> bool {
        self.digest_algorithm() == DigestAlgorithm::Sha1
    }

    /// Whether `key` is of the family this algorithm signs with (RSA or EC).
    pub fn key_fits<T>(self, key: &PKeyRef<T>) -> bool {
        let want = if self.is_ecdsa() { Id::EC } else { Id::RSA };
        key.id() == want
    }

    /// Signs `data`, returning the signature value as XML-DSig defines it: the PKCS#1 v1.5 octets for
    /// RSA (RFC 4051 2.3.2) and, for ECDSA, the concatenation `r || s`, each left-padded to the curve
    /// order's length (xmldsig-core1 6.4.3, RFC 4051 3.3), not OpenSSL's DER.
    pub fn sign(self, key: &PKeyRef<Private>, data: &[u8]) -> Result<Vec<u8>, AlgorithmError> {
        if !self.key_fits(key) {
            return Err(AlgorithmError::KeyMismatch(self.uri()));
        }
        let mut signer = Signer::new(self.digest(), key)?;
        signer.update(data)?;
        let value = signer.sign_to_vec()?;
        if !self.is_ecdsa() {
            return Ok(value);
        }
        let len = ec_scalar_len(key)?;
        let pad = i32::try_from(len).map_err(|e| AlgorithmError::Crypto(e.to_string()))?;
        let sig = EcdsaSig::from_der(&value)?;
        let mut out = sig.r().to_vec_padded(pad)?;
        out.extend_from_slice(&sig.s().to_vec_padded(pad)?);
        Ok(out)
    }

    /// Checks `signature` over `data` with `key`. `Ok(false)` means "does not verify"; `Err` means the
    /// check could not be made (wrong key family, malformed ECDSA value).
    ///
    /// For ECDSA the XML-DSig form `r || s` (xmldsig-core1 6.4.3) is expected. A DER `ECDSA-Sig-Value`
    /// is accepted as well because several HTTP-Redirect implementations (samael, OpenSAML via JCA) emit
    /// it; both encode the same pair (r, s), so accepting either verifies exactly the same statement.
    pub fn verify<T: HasPublic>(
        self,
        key: &PKeyRef<T>,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool, AlgorithmError> {
        if !self.key_fits(key) {
            return Err(AlgorithmError::KeyMismatch(self.uri()));
        }
        let der;
        let value = if self.is_ecdsa() {
            let len = ec_scalar_len(key)?;
            der = if signature.len() == 2 * len {
                let (r, s) = signature.split_at(len);
                EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?
                    .to_der()?
            } else {
                // Round-trip through the parser so that only well-formed DER reaches the verifier.
                EcdsaSig::from_der(signature)
                    .and_then(|sig| sig.to_der())
                    .map_err(|_| AlgorithmError::MalformedEcdsaSignature(signature.len()))?
            };
            der.as_slice()
        } else {
            signature
        };
        let mut verifier = Verifier::new(self.digest(), key)?;
        verifier.update(data)?;
        // OpenSSL reports a malformed (not merely wrong) signature as an error on some versions;
        // for the caller both mean "does not verify".
        Ok(verifier.verify(value).unwrap_or(false))
    }
}

/// Length in bytes of one ECDSA scalar (r or s) for the key's curve: the byte length of the group order.
fn ec_scalar_len<T: HasPublic>(key: &PKeyRef<T>) -> Result<usize, AlgorithmError> {
    let ec = key.ec_key()?;
    let bits = ec.group().order_bits();
    usize::try_from(bits.div_ceil(8)).map_err(|e| AlgorithmError::Crypto(e.to_string()))
}

/// A digest algorithm for `ds:DigestMethod` (xmldsig-core 6.2, xmlenc-core 5.7.2, RFC 4051 2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// xmldsig-core 6.2.1 SHA-1: only where SHA-1 is explicitly allowed.
    Sha1,
    /// xmlenc-core 5.7.2 SHA-256.
    Sha256,
    /// RFC 4051 2.1.2 SHA-384 (its URI is in xmldsig-more, not xmlenc).
    Sha384,
    /// xmlenc-core 5.7.4 SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// Every supported digest.
    pub const ALL: [DigestAlgorithm; 4] = [
        DigestAlgorithm::Sha1,
        DigestAlgorithm::Sha256,
        DigestAlgorithm::Sha384,
        DigestAlgorithm::Sha512,
    ];

    /// Looks a digest up by its exact URI; `None` means "not supported".
    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.uri() == uri)
    }

    /// The digest's identifying URI.
    pub fn uri(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha1 => "http://www.w3.org/2000/09/xmldsig#sha1",
            DigestAlgorithm::Sha256 => "http://www.w3.org/2001/04/xmlenc#sha256",
            DigestAlgorithm::Sha384 => "http://www.w3.org/2001/04/xmldsig-more#sha384",
            DigestAlgorithm::Sha512 => "http://www.w3.org/2001/04/xmlenc#sha512",
        }
    }

    /// The OpenSSL digest that computes it.
    pub fn message_digest(self) -> MessageDigest {
        match self {
            DigestAlgorithm::Sha1 => MessageDigest::sha1(),
            DigestAlgorithm::Sha256 => MessageDigest::sha256(),
            DigestAlgorithm::Sha384 => MessageDigest::sha384(),
            DigestAlgorithm::Sha512 => MessageDigest::sha512(),
        }
    }

    /// True for SHA-1.
    pub fn is_sha1(self) -> bool {
        self == DigestAlgorithm::Sha1
    }

    /// Hashes `data`.
    pub fn hash(self, data: &[u8]) -> Result<Vec<u8>, AlgorithmError> {
        Ok(openssl::hash::hash(self.message_digest(), data)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Public};
    use openssl::rsa::Rsa;

    fn rsa() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    fn ec(nid: Nid) -> PKey<Private> {
        let group = EcGroup::from_curve_name(nid).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    fn public(key: &PKey<Private>) -> PKey<Public> {
        PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap()
    }

    #[test]
    fn uris_round_trip_and_unknown_is_none() {
        for alg in SignatureAlgorithm::ALL {
            assert_eq!(SignatureAlgorithm::from_uri(alg.uri()), Some(alg));
        }
        for alg in DigestAlgorithm::ALL {
            assert_eq!(DigestAlgorithm::from_uri(alg.uri()), Some(alg));
        }
        assert_eq!(
            SignatureAlgorithm::from_uri("http://www.w3.org/2000/09/xmldsig#dsa-sha1"),
            None
        );
        assert_eq!(
            SignatureAlgorithm::from_uri("http://www.w3.org/2001/04/xmldsig-more#RSA-SHA256"),
            None
        );
        assert_eq!(
            DigestAlgorithm::from_uri("http://www.w3.org/2001/04/xmlenc#sha384"),
            None
        );
        assert!(SignatureAlgorithm::RsaSha1.is_sha1());
        assert!(!SignatureAlgorithm::RsaSha256.is_sha1());
    }

    #[test]
    fn digest_matches_openssl() {
        let out = DigestAlgorithm::Sha256.hash(b"abc").unwrap();
        assert_eq!(
            hex::encode(out),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn ecdsa_value_is_r_concat_s_and_verifies() {
        for (nid, alg, len) in [
            (Nid::X9_62_PRIME256V1, SignatureAlgorithm::EcdsaSha256, 32),
            (Nid::SECP384R1, SignatureAlgorithm::EcdsaSha384, 48),
            (Nid::SECP521R1, SignatureAlgorithm::EcdsaSha512, 66),
        ] {
            let key = ec(nid);
            let sig = alg.sign(&key, b"data").unwrap();
            assert_eq!(sig.len(), 2 * len);
            let pubkey = public(&key);
            assert!(alg.verify(&pubkey, b"data", &sig).unwrap());
            assert!(!alg.verify(&pubkey, b"datA", &sig).unwrap());
        }
    }

    #[test]
    fn ecdsa_der_value_is_accepted() {
        let key = ec(Nid::X9_62_PRIME256V1);
        let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
        signer.update(b"data").unwrap();
        let der = signer.sign_to_vec().unwrap();
        let alg = SignatureAlgorithm::EcdsaSha256;
        assert!(alg.verify(&public(&key), b"data", &der).unwrap());
        assert_eq!(
            alg.verify(&public(&key), b"data", &[0u8; 10]),
            Err(AlgorithmError::MalformedEcdsaSignature(10))
        );
    }

    #[test]
    fn key_family_must_match() {
        let key = rsa();
        assert_eq!(
            SignatureAlgorithm::EcdsaSha256.sign(&key, b"x"),
            Err(AlgorithmError::KeyMismatch(
                SignatureAlgorithm::EcdsaSha256.uri()
            ))
        );
        let sig = SignatureAlgorithm::RsaSha256.sign(&key, b"x").unwrap();
        assert!(SignatureAlgorithm::RsaSha256
            .verify(&public(&key), b"x", &sig)
            .unwrap());
        // Same key, different hash: does not verify.
        assert!(!SignatureAlgorithm::RsaSha512
            .verify(&public(&key), b"x", &sig)
            .unwrap());
        let eckey = public(&ec(Nid::X9_62_PRIME256V1));
        assert!(matches!(
            SignatureAlgorithm::RsaSha256.verify(&eckey, b"x", &sig),
            Err(AlgorithmError::KeyMismatch(_))
        ));
    }
}
