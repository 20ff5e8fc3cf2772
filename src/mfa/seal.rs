//! Encryption at rest for MFA secrets.
//!
//! A TOTP secret must be readable by Tessera (it recomputes codes), so it cannot be hashed like a
//! password. It is sealed instead: AES-256-GCM under a key that lives in the configuration, not in
//! the database, so a dump of the database alone yields no usable secret.
//!
//! Sealed text is `v1:<key id>:<base64 of nonce || ciphertext || tag>`:
//! - `v1` names this layout, so a later layout can be told apart and migrated;
//! - the key id (8 hex digits derived from the key) tells "sealed under another key" apart from
//!   "tampered with", which matters to an operator who changed the configured key;
//! - the 12-byte nonce is random per sealing (NIST SP 800-38D 8.2.2), the 16-byte tag authenticates
//!   the ciphertext and the associated data.
//!
//! The associated data binds a sealed value to its owner (e.g. `tessera:totp:<user id>`), so a
//! sealed secret copied into another user's row does not open.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

use super::Error;

/// Bytes of an MFA key: AES-256.
pub const MFA_KEY_BYTES: usize = 32;

/// Bytes of the random GCM nonce: the 96-bit size GCM is designed for (NIST SP 800-38D 5.2.1.1).
const NONCE_BYTES: usize = 12;

/// Bytes of the GCM authentication tag: the full 128 bits.
const TAG_BYTES: usize = 16;

/// The layout marker that starts every sealed value.
const VERSION: &str = "v1";

/// Domain labels for the subkeys derived from the configured key, so each use has its own key.
const LABEL_SEAL: &[u8] = b"tessera mfa seal v1";
/// See [`LABEL_SEAL`]: the subkey that keys recovery-code hashes.
const LABEL_RECOVERY: &[u8] = b"tessera mfa recovery-code hash v1";
/// See [`LABEL_SEAL`]: the input of the public key id.
const LABEL_KEY_ID: &[u8] = b"tessera mfa key id v1";

/// The configured MFA key and the subkeys derived from it.
///
/// Built from 64 hex digits in the configuration. `Debug` shows only the key id.
#[derive(Clone)]
pub struct MfaKey {
    /// AES-256-GCM key that seals TOTP secrets (derived, so the raw key is used for nothing else).
    seal_key: [u8; MFA_KEY_BYTES],
    /// HMAC-SHA256 key for recovery-code hashes: a database dump alone cannot test guesses.
    recovery_key: [u8; MFA_KEY_BYTES],
    /// Public 8-hex-digit id written into sealed values to recognise a different key.
    key_id: String,
}

impl MfaKey {
    /// Parses the configured key: exactly 64 hex digits (32 bytes), not all zero.
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.len() != MFA_KEY_BYTES * 2 {
            return Err(Error::InvalidKey(format!(
                "expected {} hex digits, got {}",
                MFA_KEY_BYTES * 2,
                text.len()
            )));
        }
        let bytes =
            hex::decode(text).map_err(|_| Error::InvalidKey("not hexadecimal".to_owned()))?;
        let raw: [u8; MFA_KEY_BYTES] = bytes
            .try_into()
            .map_err(|_| Error::InvalidKey("wrong length".to_owned()))?;
        if raw.iter().all(|b| *b == 0) {
            return Err(Error::InvalidKey("the key is all zeros".to_owned()));
        }
        Self::from_bytes(&raw)
    }

    /// Draws a fresh random key and returns it as 64 hex digits, for `tessera.toml`.
    pub fn generate_hex() -> Result<String, Error> {
        let mut raw = [0u8; MFA_KEY_BYTES];
        openssl::rand::rand_bytes(&mut raw).map_err(|e| Error::Random(e.to_string()))?;
        Ok(hex::encode(raw))
    }

    /// Derives the subkeys and the key id from the raw key.
    fn from_bytes(raw: &[u8; MFA_KEY_BYTES]) -> Result<Self, Error> {
        let seal_key = hmac_sha256(raw, LABEL_SEAL)?;
        let recovery_key = hmac_sha256(raw, LABEL_RECOVERY)?;
        let id = hmac_sha256(raw, LABEL_KEY_ID)?;
        let key_id = hex::encode(id.get(..4).unwrap_or_default());
        Ok(Self {
            seal_key,
            recovery_key,
            key_id,
        })
    }

    /// The public id of this key (8 hex digits), as written into sealed values.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypts `plaintext`, binding it to `associated_data`, into `v1:<key id>:<base64>`.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_BYTES];
        openssl::rand::rand_bytes(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;
        let mut tag = [0u8; TAG_BYTES];
        let ciphertext = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.seal_key,
            Some(&nonce),
            associated_data,
            plaintext,
            &mut tag,
        )
        .map_err(|e| Error::Crypto(e.to_string()))?;
        let mut blob = Vec::with_capacity(NONCE_BYTES + ciphertext.len() + TAG_BYTES);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        blob.extend_from_slice(&tag);
        Ok(format!(
            "{VERSION}:{}:{}",
            self.key_id,
            STANDARD.encode(blob)
        ))
    }

    /// Decrypts a value made by [`MfaKey::seal`] with the same associated data.
    ///
    /// [`Error::MalformedSealed`] if it is not `v1:<8 hex>:<base64>` of at least nonce + tag,
    /// [`Error::UnsupportedSealVersion`] for another layout, [`Error::WrongKey`] if another key
    /// sealed it, [`Error::Tampered`] if the ciphertext, tag or associated data do not match.
    pub fn open(&self, sealed: &str, associated_data: &[u8]) -> Result<Vec<u8>, Error> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(version), Some(key_id), Some(payload)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::MalformedSealed);
        };
        if version != VERSION {
            return Err(Error::UnsupportedSealVersion(
                version.chars().take(16).collect(),
            ));
        }
        let key_id_ok = key_id.len() == 8
            && key_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !key_id_ok {
            return Err(Error::MalformedSealed);
        }
        let blob = STANDARD
            .decode(payload)
            .map_err(|_| Error::MalformedSealed)?;
        if blob.len() < NONCE_BYTES + TAG_BYTES {
            return Err(Error::MalformedSealed);
        }
        if key_id != self.key_id {
            return Err(Error::WrongKey {
                sealed_with: key_id.to_owned(),
                configured: self.key_id.clone(),
            });
        }
        let (nonce, rest) = blob.split_at(NONCE_BYTES);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.seal_key,
            Some(nonce),
            associated_data,
            ciphertext,
            tag,
        )
        .map_err(|_| Error::Tampered)
    }

    /// HMAC-SHA256 under the recovery-code subkey, hex: the stored form of a recovery code.
    pub(crate) fn recovery_mac(&self, message: &[u8]) -> Result<String, Error> {
        Ok(hex::encode(hmac_sha256(&self.recovery_key, message)?))
    }
}

impl fmt::Debug for MfaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MfaKey(id={})", self.key_id)
    }
}

/// HMAC-SHA256 of `message` under `key` (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> Result<[u8; 32], Error> {
    let pkey = PKey::hmac(key).map_err(|e| Error::Crypto(e.to_string()))?;
    let mut signer =
        Signer::new(MessageDigest::sha256(), &pkey).map_err(|e| Error::Crypto(e.to_string()))?;
    signer
        .update(message)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    let mac = signer
        .sign_to_vec()
        .map_err(|e| Error::Crypto(e.to_string()))?;
    mac.try_into()
        .map_err(|_| Error::Crypto("HMAC-SHA256 output is not 32 bytes".to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn layout_is_version_key_id_and_base64() {
        let key = MfaKey::from_hex(KEY).unwrap();
        let sealed = key.seal(b"secret", b"ad").unwrap();
        let parts: Vec<&str> = sealed.splitn(3, ':').collect();
        assert_eq!(parts[0], "v1");
        assert_eq!(parts[1], key.key_id());
        let blob = STANDARD.decode(parts[2]).unwrap();
        assert_eq!(blob.len(), NONCE_BYTES + 6 + TAG_BYTES);
        assert!(format!("{key:?}").contains(key.key_id()));
        assert!(!format!("{key:?}").contains(KEY));
    }

    #[test]
    fn key_parsing_rejects_bad_text() {
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(64), &"ab".repeat(33)] {
            assert!(matches!(MfaKey::from_hex(bad), Err(Error::InvalidKey(_))));
        }
        let generated = MfaKey::generate_hex().unwrap();
        assert_eq!(generated.len(), 64);
        assert!(MfaKey::from_hex(&generated).is_ok());
    }
}
