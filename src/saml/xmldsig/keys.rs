//! The IdP's signing key and certificate, and the public keys of SP certificates.
//!
//! The signature algorithm follows from the key: an RSA key signs with rsa-sha256 and a P-256 key with
//! ecdsa-sha256 (RFC 4051 2.3.2, 2.3.6). Deriving it here, once, means metadata, HTTP-Redirect and XML
//! signatures can never disagree about which algorithm a key uses.

use base64::Engine;
use chrono::{DateTime, Utc};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509NameBuilder, X509};

use super::algorithms::SignatureAlgorithm;

/// Smallest RSA modulus accepted for signing (NIST SP 800-131A: 2048 bits since 2014).
pub const MIN_RSA_BITS: u32 = 2048;

/// Why a key or certificate could not be loaded or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The private key PEM did not parse (wrong format, encrypted, truncated).
    #[error("private key PEM does not parse: {0}")]
    KeyPem(String),
    /// The certificate PEM did not parse.
    #[error("certificate PEM does not parse: {0}")]
    CertificatePem(String),
    /// The key is neither RSA nor EC, so no XML-DSig algorithm we sign with fits it.
    #[error("unsupported key type (only RSA and EC P-256 keys can sign)")]
    UnsupportedKeyType,
    /// An EC key on a curve other than P-256.
    #[error("unsupported EC curve (only P-256 is supported)")]
    UnsupportedCurve,
    /// An RSA key shorter than [`MIN_RSA_BITS`].
    #[error("RSA key of {0} bits is too short (at least {MIN_RSA_BITS} required)")]
    RsaTooShort(u32),
    /// The certificate names a different public key than the private key's: SPs would reject every
    /// signature, so this is refused at load time instead.
    #[error("certificate does not match the private key")]
    CertificateKeyMismatch,
    /// A validity period that does not fit a certificate (zero days, or out of range).
    #[error("invalid certificate validity: {0}")]
    Validity(String),
    /// OpenSSL refused an operation; the text is OpenSSL's own.
    #[error("openssl: {0}")]
    Crypto(String),
}

impl From<openssl::error::ErrorStack> for Error {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Error::Crypto(e.to_string())
    }
}

/// Which kind of key [`generate_self_signed`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with a 2048-bit modulus, signing with rsa-sha256: what every SP understands.
    Rsa2048,
    /// EC on P-256, signing with ecdsa-sha256: smaller and faster, for SPs that support it.
    EcP256,
}

/// The IdP's private key with the certificate published for it in metadata and KeyInfo.
#[derive(Clone)]
pub struct SigningKey {
    /// The private key every signature is made with.
    pkey: PKey<Private>,
    /// The certificate carrying the matching public key; SPs learn it from metadata.
    cert: X509,
    /// The algorithm the key signs with, fixed by its type at load time.
    algorithm: SignatureAlgorithm,
}

impl std::fmt::Debug for SigningKey {
    // Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm.uri())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PEM private key (PKCS#8 or traditional) and its PEM certificate. The algorithm is chosen
    /// from the key type; the certificate must carry the key's public half.
    pub fn from_pem(key_pem: &[u8], cert_pem: &[u8]) -> Result<SigningKey, Error> {
        let pkey = PKey::private_key_from_pem(key_pem).map_err(|e| Error::KeyPem(e.to_string()))?;
        let cert = X509::from_pem(cert_pem).map_err(|e| Error::CertificatePem(e.to_string()))?;
        SigningKey::new(pkey, cert)
    }

    /// Builds a signing key from already-parsed parts, with the same checks as [`Self::from_pem`].
    pub fn new(pkey: PKey<Private>, cert: X509) -> Result<SigningKey, Error> {
        let algorithm = algorithm_for(&pkey)?;
        let cert_key = cert.public_key()?;
        if !cert_key.public_eq(&pkey) {
            return Err(Error::CertificateKeyMismatch);
        }
        Ok(SigningKey {
            pkey,
            cert,
            algorithm,
        })
    }

    /// The private key, for the signing code.
    pub fn private_key(&self) -> &PKey<Private> {
        &self.pkey
    }

    /// The certificate.
    pub fn certificate(&self) -> &X509 {
        &self.cert
    }

    /// The certificate's DER in base64 without line breaks, as `ds:X509Certificate` holds it
    /// (xmldsig-core 4.4.4) in KeyInfo and in metadata's KeyDescriptor (saml-metadata 2.4.1.1).
    pub fn certificate_base64(&self) -> Result<String, Error> {
        Ok(base64::engine::general_purpose::STANDARD.encode(self.cert.to_der()?))
    }

    /// The signature algorithm this key signs with.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

/// RSA -> rsa-sha256, EC P-256 -> ecdsa-sha256, anything else refused.
fn algorithm_for(pkey: &PKey<Private>) -> Result<SignatureAlgorithm, Error> {
    match pkey.id() {
        Id::RSA => {
            let bits = pkey.bits();
            if bits < MIN_RSA_BITS {
                return Err(Error::RsaTooShort(bits));
            }
            Ok(SignatureAlgorithm::RsaSha256)
        }
        Id::EC => {
            let ec = pkey.ec_key()?;
            if ec.group().curve_name() == Some(Nid::X9_62_PRIME256V1) {
                Ok(SignatureAlgorithm::EcdsaSha256)
            } else {
                Err(Error::UnsupportedCurve)
            }
        }
        _ => Err(Error::UnsupportedKeyType),
    }
}

/// Makes a new key and a self-signed certificate for it, valid from `not_before` for `days` days, with a
/// random 159-bit serial (RFC 5280 4.1.2.2: positive, at most 20 octets). Returns the key and both PEMs
/// (PKCS#8 key, certificate) so the caller can store them. The clock is not read: time is passed in.
pub fn generate_self_signed(
    kind: KeyKind,
    common_name: &str,
    not_before: DateTime<Utc>,
    days: u32,
) -> Result<(SigningKey, String, String), Error> {
    if days == 0 {
        return Err(Error::Validity("zero days".into()));
    }
    let pkey = match kind {
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
        KeyKind::EcP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&group)?)?
        }
    };
    let start = not_before.timestamp();
    let end = not_before
        .checked_add_signed(chrono::Duration::days(i64::from(days)))
        .ok_or_else(|| Error::Validity("end date out of range".into()))?
        .timestamp();

    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    let name = name.build();

    let mut serial = BigNum::new()?;
    serial.rand(159, MsbOption::MAYBE_ZERO, false)?;

    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(&pkey)?;
    let start = Asn1Time::from_unix(start)?;
    let end = Asn1Time::from_unix(end)?;
    builder.set_not_before(&start)?;
    builder.set_not_after(&end)?;
    builder.append_extension(BasicConstraints::new().critical().build()?)?;
    builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
    builder.append_extension(ski)?;
    builder.sign(&pkey, MessageDigest::sha256())?;
    let cert = builder.build();

    let key_pem = String::from_utf8(pkey.private_key_to_pem_pkcs8()?)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    let cert_pem = String::from_utf8(cert.to_pem()?).map_err(|e| Error::Crypto(e.to_string()))?;
    let key = SigningKey::new(pkey, cert)?;
    Ok((key, key_pem, cert_pem))
}

/// The public keys of `certs`, in order, for [`super::verify`]. The certificates come from SP metadata,
/// which is the trust anchor, so validity dates and issuers are deliberately not checked (saml-metadata
/// 2.4.1.1 treats KeyDescriptor certificates as key containers). A certificate whose key OpenSSL cannot
/// read is left out: it could not verify anything anyway.
pub fn public_keys_from_certs(certs: &[X509]) -> Vec<PKey<Public>> {
    certs.iter().filter_map(|c| c.public_key().ok()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()
    }

    #[test]
    fn generated_keys_pick_their_algorithm_and_reload() {
        for (kind, alg) in [
            (KeyKind::Rsa2048, SignatureAlgorithm::RsaSha256),
            (KeyKind::EcP256, SignatureAlgorithm::EcdsaSha256),
        ] {
            let (key, key_pem, cert_pem) =
                generate_self_signed(kind, "idp.example", t0(), 30).unwrap();
            assert_eq!(key.algorithm(), alg);
            let again = SigningKey::from_pem(key_pem.as_bytes(), cert_pem.as_bytes()).unwrap();
            assert_eq!(again.algorithm(), alg);
            assert_eq!(
                again.certificate().to_der().unwrap(),
                key.certificate().to_der().unwrap()
            );
            let der = base64::engine::general_purpose::STANDARD
                .decode(key.certificate_base64().unwrap())
                .unwrap();
            assert_eq!(der, key.certificate().to_der().unwrap());
        }
    }

    #[test]
    fn validity_and_subject_come_from_the_arguments() {
        let (key, _, _) = generate_self_signed(KeyKind::EcP256, "idp.example", t0(), 10).unwrap();
        let cert = key.certificate();
        assert_eq!(
            cert.not_before(),
            &*Asn1Time::from_unix(t0().timestamp()).unwrap()
        );
        let end = t0() + chrono::Duration::days(10);
        assert_eq!(
            cert.not_after(),
            &*Asn1Time::from_unix(end.timestamp()).unwrap()
        );
        let cn = cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .unwrap();
        assert_eq!(cn.data().as_slice(), b"idp.example");
        // Two certificates never share a serial.
        let (other, _, _) = generate_self_signed(KeyKind::EcP256, "idp.example", t0(), 10).unwrap();
        assert_ne!(
            cert.serial_number().to_bn().unwrap(),
            other.certificate().serial_number().to_bn().unwrap()
        );
        assert!(matches!(
            generate_self_signed(KeyKind::EcP256, "x", t0(), 0),
            Err(Error::Validity(_))
        ));
    }

    #[test]
    fn mismatched_certificate_is_refused() {
        let (_, key_pem, _) = generate_self_signed(KeyKind::EcP256, "a", t0(), 1).unwrap();
        let (_, _, cert_pem) = generate_self_signed(KeyKind::EcP256, "b", t0(), 1).unwrap();
        assert_eq!(
            SigningKey::from_pem(key_pem.as_bytes(), cert_pem.as_bytes()).unwrap_err(),
            Error::CertificateKeyMismatch
        );
        assert!(matches!(
            SigningKey::from_pem(b"junk", cert_pem.as_bytes()),
            Err(Error::KeyPem(_))
        ));
        assert!(matches!(
            SigningKey::from_pem(key_pem.as_bytes(), b"junk"),
            Err(Error::CertificatePem(_))
        ));
    }

    #[test]
    fn other_curves_and_short_rsa_are_refused() {
        let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let p384 = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        assert_eq!(algorithm_for(&p384), Err(Error::UnsupportedCurve));
        let short = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        assert_eq!(algorithm_for(&short), Err(Error::RsaTooShort(1024)));
        let ed = PKey::generate_ed25519().unwrap();
        assert_eq!(algorithm_for(&ed), Err(Error::UnsupportedKeyType));
    }

    #[test]
    fn public_keys_follow_certificates() {
        let (a, _, _) = generate_self_signed(KeyKind::EcP256, "a", t0(), 1).unwrap();
        let (b, _, _) = generate_self_signed(KeyKind::Rsa2048, "b", t0(), 1).unwrap();
        let keys = public_keys_from_certs(&[a.certificate().clone(), b.certificate().clone()]);
        assert_eq!(keys.len(), 2);
        assert!(keys[0].public_eq(a.private_key()));
        assert!(keys[1].public_eq(b.private_key()));
    }
}
