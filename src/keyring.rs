//! Tessera's own signing keys on disk: the current key, and optionally the next one, published in our
//! metadata ahead of a rollover so SPs trust it before it signs anything.
//!
//! Files in the certs folder: `signing.key` / `signing.crt` (current) and `next.key` / `next.crt`. Keys
//! are written readable by the owner only and are never committed (.gitignore).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::saml::xmldsig::keys::{generate_self_signed, KeyKind, SigningKey};

/// Why the key files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("no signing key in {0}; run `tessera keys generate`")]
    Missing(PathBuf),
}

/// The loaded keys.
#[derive(Debug, Clone)]
pub struct KeyRing {
    /// Signs every response, assertion and metadata document.
    pub current: SigningKey,
    /// Announced in metadata only; becomes current at the next `keys rotate`.
    pub next: Option<SigningKey>,
}

/// Where a key and its certificate live.
struct Slot {
    key: PathBuf,
    cert: PathBuf,
}

fn slot(dir: &Path, name: &str) -> Slot {
    Slot {
        key: dir.join(format!("{name}.key")),
        cert: dir.join(format!("{name}.crt")),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })
}

fn load_slot(s: &Slot) -> Result<Option<SigningKey>, Error> {
    if !s.key.exists() {
        return Ok(None);
    }
    let key = read(&s.key)?;
    let cert = read(&s.cert)?;
    SigningKey::from_pem(&key, &cert)
        .map(Some)
        .map_err(|e| Error::Key {
            path: s.key.clone(),
            message: e.to_string(),
        })
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    file.write_all(contents.as_bytes())
        .map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
}

fn generate_into(
    s: &Slot,
    kind: KeyKind,
    common_name: &str,
    now: DateTime<Utc>,
) -> Result<SigningKey, Error> {
    let (key, key_pem, cert_pem) =
        generate_self_signed(kind, common_name, now, 3650).map_err(|e| Error::Key {
            path: s.key.clone(),
            message: e.to_string(),
        })?;
    write_private(&s.key, &key_pem)?;
    std::fs::write(&s.cert, cert_pem).map_err(|source| Error::Io {
        path: s.cert.clone(),
        source,
    })?;
    Ok(key)
}

fn ensure_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.into(),
        source,
    })
}

impl KeyRing {
    /// Loads the keys in `dir`.
    pub fn load(dir: &Path) -> Result<KeyRing, Error> {
        let current =
            load_slot(&slot(dir, "signing"))?.ok_or_else(|| Error::Missing(dir.into()))?;
        let next = load_slot(&slot(dir, "next"))?;
        Ok(KeyRing { current, next })
    }

    /// Loads the keys in `dir`, generating a current key first when there is none. Returns whether one
    /// was generated.
    pub fn load_or_generate(
        dir: &Path,
        common_name: &str,
        now: DateTime<Utc>,
    ) -> Result<(KeyRing, bool), Error> {
        let generated = Self::generate(dir, KeyKind::Rsa2048, common_name, now, false)?;
        Ok((Self::load(dir)?, generated))
    }

    /// Creates the current key unless one exists (or always, with `force`). Returns whether it wrote one.
    pub fn generate(
        dir: &Path,
        kind: KeyKind,
        common_name: &str,
        now: DateTime<Utc>,
        force: bool,
    ) -> Result<bool, Error> {
        ensure_dir(dir)?;
        let current = slot(dir, "signing");
        if current.key.exists() && !force {
            return Ok(false);
        }
        generate_into(&current, kind, common_name, now)?;
        Ok(true)
    }

    /// One rollover step. With no next key, creates one (to be published in metadata); with a next key,
    /// promotes it to current and keeps the old current as `previous.*` for reference.
    pub fn rotate(
        dir: &Path,
        kind: KeyKind,
        common_name: &str,
        now: DateTime<Utc>,
    ) -> Result<RotateStep, Error> {
        ensure_dir(dir)?;
        let next = slot(dir, "next");
        if !next.key.exists() {
            generate_into(&next, kind, common_name, now)?;
            return Ok(RotateStep::NextPublished);
        }
        let current = slot(dir, "signing");
        let previous = slot(dir, "previous");
        for (from, to) in [
            (&current.key, &previous.key),
            (&current.cert, &previous.cert),
            (&next.key, &current.key),
            (&next.cert, &current.cert),
        ] {
            if from.exists() {
                std::fs::rename(from, to).map_err(|source| Error::Io {
                    path: from.clone(),
                    source,
                })?;
            }
        }
        Ok(RotateStep::NextPromoted)
    }

    /// Base64 DER of the certificates to publish: current first, then next.
    pub fn published_certificates(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for key in std::iter::once(&self.current).chain(self.next.iter()) {
            out.push(key.certificate_base64().map_err(|e| Error::Key {
                path: PathBuf::new(),
                message: e.to_string(),
            })?);
        }
        Ok(out)
    }
}

/// What `keys rotate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateStep {
    /// A next key now exists and appears in metadata; run rotate again once SPs have refreshed.
    NextPublished,
    /// The next key now signs; the old one is kept as previous.*.
    NextPromoted,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generates_once_with_private_permissions_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let (ring, generated) = KeyRing::load_or_generate(dir.path(), "idp", now).unwrap();
        assert!(generated);
        assert!(ring.next.is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("signing.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (_, again) = KeyRing::load_or_generate(dir.path(), "idp", now).unwrap();
        assert!(!again);

        let first = ring.published_certificates().unwrap();
        assert_eq!(
            KeyRing::rotate(dir.path(), KeyKind::Rsa2048, "idp", now).unwrap(),
            RotateStep::NextPublished
        );
        let ring = KeyRing::load(dir.path()).unwrap();
        let published = ring.published_certificates().unwrap();
        assert_eq!(published.len(), 2);
        assert_eq!(published[0], first[0]);
        assert_eq!(
            KeyRing::rotate(dir.path(), KeyKind::Rsa2048, "idp", now).unwrap(),
            RotateStep::NextPromoted
        );
        let ring = KeyRing::load(dir.path()).unwrap();
        assert_eq!(
            ring.published_certificates().unwrap(),
            vec![published[1].clone()]
        );
    }
}
