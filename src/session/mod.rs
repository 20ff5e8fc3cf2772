//! SSO sessions behind one trait.
//!
//! An SSO session is what lets a user who signed in once reach further service providers without
//! signing in again, and what single logout walks to tell every SP that the user left. Tessera keeps
//! sessions behind [`SessionStore`] so that one node can keep them in memory ([`MemoryStore`]) and
//! several nodes can share them through Redis ([`RedisStore`]).
//!
//! The cookie carries a [`SessionId`]: 256 random bits, base64url without padding. Stores never see
//! or keep that secret in a form that could be replayed: they key every record on the SHA-256 of the
//! id ([`SessionKey`]), so a dump of the store holds no usable cookie.
//!
//! Both stores enforce two limits on every session: an idle timeout, pushed back by each use, and an
//! absolute lifetime that no use can extend. The same stores also keep the small shared state other
//! modules need across nodes: one-time markers for replay caches ([`SessionStore::remember_once`])
//! and windowed counters for brute-force defence ([`SessionStore::incr_counter`]).

pub mod memory;
pub mod redis;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub use self::memory::{ManualClock, MemoryStore};
pub use self::redis::RedisStore;

/// Number of random bytes in a session id: 256 bits, far beyond guessing.
const SESSION_ID_BYTES: usize = 32;

/// Length of the base64url (no padding) text of a session id: ceil(32 * 4 / 3).
const SESSION_ID_COOKIE_LEN: usize = 43;

/// Length of a [`SessionKey`]: the hex form of a SHA-256 digest.
const SESSION_KEY_LEN: usize = 64;

/// Longest accepted duration, 100 years in ms: far beyond any real timeout, and small enough that
/// "now + duration" stays exact in Redis Lua numbers (doubles, exact below 2^53).
const MAX_DURATION_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Everything that can go wrong in a session store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot be reached (down, timed out, loading, read-only replica). The caller may
    /// retry later; the store reconnects by itself.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// A stored record cannot be read back (bad JSON, missing field, unexpected type).
    #[error("corrupt session store record: {0}")]
    Corrupt(String),
    /// The backend answered but refused the command for a reason that is not an outage.
    #[error("session store backend refused the command: {0}")]
    Backend(String),
    /// The store cannot be built from the given settings (e.g. an unparsable Redis URL).
    #[error("invalid session store configuration: {0}")]
    InvalidConfig(String),
    /// A cookie value is not a well-formed session id.
    #[error("malformed session id")]
    MalformedId,
    /// A text is not a well-formed session key (64 lowercase hex digits).
    #[error("malformed session key")]
    MalformedKey,
    /// A duration argument is unusable (under 1 ms, or over 100 years).
    #[error("invalid duration for {0}: must be between 1 ms and 100 years")]
    InvalidDuration(&'static str),
    /// A replay-cache namespace is empty or holds characters other than `[a-z0-9_-]`.
    #[error("invalid namespace {0:?}: use 1-64 characters of [a-z0-9_-]")]
    InvalidNamespace(String),
    /// An update tried to move a session to another user, which would corrupt the per-user index.
    #[error("an update cannot change the user of a session")]
    UserChanged,
    /// The operating system's random generator failed, so no session id can be made.
    #[error("random generator failed: {0}")]
    Random(String),
}

/// The secret that the session cookie carries.
///
/// 256 bits from the OpenSSL CSPRNG. It is never stored: stores key on [`SessionId::key`]. `Debug`
/// prints only a short prefix of that key, so logging a `SessionId` by mistake leaks nothing usable.
#[derive(Clone)]
pub struct SessionId([u8; SESSION_ID_BYTES]);

impl SessionId {
    /// Draws a new random session id.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        openssl::rand::rand_bytes(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Parses the cookie value (base64url, no padding, exactly 32 bytes).
    pub fn from_cookie(value: &str) -> Result<Self, Error> {
        if value.len() != SESSION_ID_COOKIE_LEN {
            return Err(Error::MalformedId);
        }
        let decoded = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| Error::MalformedId)?;
        let bytes: [u8; SESSION_ID_BYTES] = decoded.try_into().map_err(|_| Error::MalformedId)?;
        Ok(Self(bytes))
    }

    /// The cookie value: base64url without padding (43 characters).
    pub fn to_cookie(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The storage key: hex SHA-256 of the id.
    pub fn key(&self) -> SessionKey {
        SessionKey(hex::encode(openssl::sha::sha256(&self.0)))
    }
}

impl PartialEq for SessionId {
    /// Constant-time, so comparing ids leaks no timing hint about the secret.
    fn eq(&self, other: &Self) -> bool {
        openssl::memcmp::eq(&self.0, &other.0)
    }
}

impl Eq for SessionId {}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key();
        let prefix = key.0.get(..8).unwrap_or("");
        write!(f, "SessionId(key={prefix}…)")
    }
}

/// The handle under which a store keeps a session: hex SHA-256 of the [`SessionId`].
///
/// Not a secret: it cannot be turned back into a cookie. It names a session in lists ("my sessions",
/// an administrator ending sessions) without exposing the cookie.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(String);

impl SessionKey {
    /// Parses a key as shown in a list (64 lowercase hex digits), e.g. from an "end this session" form.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let well_formed = value.len() == SESSION_KEY_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(Self(value.to_owned()))
        } else {
            Err(Error::MalformedKey)
        }
    }

    /// The hex text of the key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the user proved who they are. Kept so step-up can tell what was already done and so the
/// assertion can state an authentication context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthnMethod {
    /// Username and password.
    #[serde(rename = "password")]
    Password,
    /// A time-based one-time password (RFC 6238).
    #[serde(rename = "totp")]
    Totp,
    /// A WebAuthn authenticator (security key or platform passkey).
    #[serde(rename = "webauthn")]
    WebAuthn,
    /// A single-use recovery code.
    #[serde(rename = "recovery_code")]
    RecoveryCode,
}

/// One service provider the session reached: what single logout must send it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpSession {
    /// The SP's entity id, to find its SingleLogoutService endpoint (saml-core 3.7.1).
    pub sp_entity_id: String,
    /// The SessionIndex sent to that SP in the AuthnStatement, repeated in its LogoutRequest
    /// (saml-core 2.7.2, 3.7.1).
    pub session_index: String,
    /// The NameID value sent to that SP, repeated in its LogoutRequest (saml-core 3.7.1).
    pub name_id: String,
    /// The NameID Format URI that goes with `name_id` (saml-core 8.3).
    pub name_id_format: String,
}

/// An SSO session as the rest of Tessera sees it. Serialized as JSON in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The directory user id: the per-user index and deactivation key on it.
    pub user_id: i64,
    /// The username at sign-in, to show and to log without a directory lookup.
    pub username: String,
    /// When the user last authenticated (unix seconds): the AuthnInstant of assertions
    /// (saml-core 2.7.2) and the basis of ForceAuthn/max-age decisions.
    pub authn_instant: i64,
    /// The methods used, for step-up and for the authentication context.
    pub authn_methods: Vec<AuthnMethod>,
    /// The client address at sign-in, shown in "my sessions" and logged.
    pub client_ip: IpAddr,
    /// The client User-Agent at sign-in, shown in "my sessions".
    pub user_agent: String,
    /// When the session was created (unix seconds).
    pub created_at: i64,
    /// When the session was created, in unix milliseconds, to compare with an administrator's reset
    /// (`users.sessions_not_before`). Records written before this field existed read as 0, and
    /// [`Session::created_at_ms`] falls back to `created_at` for them.
    #[serde(default)]
    pub created_ms: i64,
    /// When the session was last used (unix seconds). The store sets it on create and on every
    /// touching call; a value passed in is ignored.
    pub last_seen: i64,
    /// Every SP the session reached, in order, for single logout (saml-core 3.7).
    pub sp_sessions: Vec<SpSession>,
    /// When a second factor was last completed in this session (unix seconds): policies and SPs
    /// that want a recent MFA measure from it. `None` until one is; records written before this
    /// field existed read as `None`.
    #[serde(default)]
    pub mfa_instant: Option<i64>,
}

impl Session {
    /// A fresh session for a user who just authenticated at `now` (unix seconds), with no SP yet.
    pub fn new(
        user_id: i64,
        username: impl Into<String>,
        authn_methods: Vec<AuthnMethod>,
        client_ip: IpAddr,
        user_agent: impl Into<String>,
        now: i64,
    ) -> Self {
        Self {
            user_id,
            username: username.into(),
            authn_instant: now,
            authn_methods,
            client_ip,
            user_agent: user_agent.into(),
            created_at: now,
            created_ms: now.saturating_mul(1000),
            last_seen: now,
            sp_sessions: Vec::new(),
            mfa_instant: None,
        }
    }

    /// When the session was created, in unix milliseconds.
    pub fn created_at_ms(&self) -> i64 {
        if self.created_ms > 0 {
            self.created_ms
        } else {
            self.created_at.saturating_mul(1000)
        }
    }
}

/// One entry of [`SessionStore::list_user_sessions`]: the handle and the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSummary {
    /// The handle to end this session with [`SessionStore::delete_for_user`].
    pub key: SessionKey,
    /// The session itself (its `last_seen` as last touched).
    pub session: Session,
}

/// Where Tessera keeps SSO sessions and the small shared state that goes with them.
///
/// Every method that takes a duration rejects zero with [`Error::InvalidDuration`]. Expired
/// sessions behave exactly like absent ones.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session under a fresh random id and returns that id (for the cookie).
    ///
    /// The session ends after `idle` without use, and in any case `absolute` after now. `last_seen`
    /// is set to now.
    async fn create(
        &self,
        session: &Session,
        idle: Duration,
        absolute: Duration,
    ) -> Result<SessionId, Error>;

    /// Returns the live session and touches it: `last_seen` becomes now and the idle timeout starts
    /// again, but never past the absolute deadline.
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, Error>;

    /// Replaces the stored session (e.g. new methods after step-up) and touches it. Returns false if
    /// no live session has this id. [`Error::UserChanged`] if `session.user_id` differs.
    ///
    /// Last writer wins: to record a reached SP use [`SessionStore::add_sp_session`], which is atomic.
    async fn update(&self, id: &SessionId, session: &Session) -> Result<bool, Error>;

    /// Atomically appends an SP reached (unless the identical entry is already there) and touches
    /// the session. Returns false if no live session has this id.
    async fn add_sp_session(&self, id: &SessionId, sp: &SpSession) -> Result<bool, Error>;

    /// Ends a session (logout). Returns whether a live session was removed.
    async fn delete(&self, id: &SessionId) -> Result<bool, Error>;

    /// Ends one session of `user_id` named by its key ("my sessions", an administrator). Does
    /// nothing and returns false if the key names no live session of that user.
    async fn delete_for_user(&self, user_id: i64, key: &SessionKey) -> Result<bool, Error>;

    /// The live sessions of a user, without touching them, sorted by key.
    async fn list_user_sessions(&self, user_id: i64) -> Result<Vec<SessionSummary>, Error>;

    /// Ends every session of a user at once (deactivation). Returns how many were live.
    async fn delete_user_sessions(&self, user_id: i64) -> Result<usize, Error>;

    /// One-time marker for replay caches: true the first time `key` is seen in `namespace` within
    /// `ttl`, false after that. Atomic across nodes. `namespace` is 1-64 of `[a-z0-9_-]`; `key` is
    /// any text (stored hashed).
    async fn remember_once(&self, namespace: &str, key: &str, ttl: Duration)
        -> Result<bool, Error>;

    /// Adds one to the counter `key` and returns the new value. The window starts at the first
    /// increment; when it ends the counter is gone and counting starts again at 1. Atomic.
    /// Keeps a short-lived value, such as a sign-in request waiting for the login form, under
    /// `namespace`/`key` for `ttl`. Values live in the store so that any node can pick them up.
    async fn put_temp(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), Error>;

    /// The value kept by [`SessionStore::put_temp`], if it has not expired or been deleted.
    async fn get_temp(&self, namespace: &str, key: &str) -> Result<Option<String>, Error>;

    /// Deletes a value kept by [`SessionStore::put_temp`].
    async fn delete_temp(&self, namespace: &str, key: &str) -> Result<(), Error>;

    async fn incr_counter(&self, key: &str, window: Duration) -> Result<u64, Error>;

    /// Removes the counter `key` (e.g. after a successful sign-in).
    async fn reset_counter(&self, key: &str) -> Result<(), Error>;
}

/// Milliseconds of a duration argument, rejecting zero and overflow. Both stores use it so they
/// reject the same inputs.
fn duration_ms(what: &'static str, duration: Duration) -> Result<u64, Error> {
    let ms = u64::try_from(duration.as_millis()).map_err(|_| Error::InvalidDuration(what))?;
    if ms == 0 || ms > MAX_DURATION_MS {
        return Err(Error::InvalidDuration(what));
    }
    Ok(ms)
}

/// Checks a replay-cache namespace: it becomes part of a key, so it must not contain separators.
fn check_namespace(namespace: &str) -> Result<(), Error> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 64
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidNamespace(namespace.to_owned()))
    }
}

/// Hex SHA-256 of an arbitrary caller key: bounds key length (AuthnRequest IDs come from outside)
/// and keeps user-supplied text out of store keys.
fn hashed(key: &str) -> String {
    hex::encode(openssl::sha::sha256(key.as_bytes()))
}

/// Current unix time in seconds, for `last_seen`.
fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn creation_time_in_ms_falls_back_to_seconds_for_older_records() {
        let mut session = Session::new(
            7,
            "alice",
            vec![],
            [127, 0, 0, 1].into(),
            "ua",
            1_700_000_000,
        );
        session.created_ms = 1_700_000_000_250;
        assert_eq!(session.created_at_ms(), 1_700_000_000_250);
        let mut json = serde_json::to_value(&session).unwrap();
        json.as_object_mut().unwrap().remove("created_ms");
        let old: Session = serde_json::from_value(json).unwrap();
        assert_eq!(old.created_at_ms(), 1_700_000_000_000);
    }

    #[test]
    fn session_id_round_trips_through_cookie() {
        let id = SessionId::generate().unwrap();
        let cookie = id.to_cookie();
        assert_eq!(cookie.len(), SESSION_ID_COOKIE_LEN);
        assert!(cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(SessionId::from_cookie(&cookie).unwrap(), id);
    }

    #[test]
    fn generated_ids_differ() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn malformed_cookies_are_rejected() {
        let good = SessionId::generate().unwrap().to_cookie();
        for bad in [
            String::new(),
            good[..42].to_owned(),
            format!("{good}A"),
            format!("{}=", &good[..42]),
            format!("{}+", &good[..42]),
            format!("{}/", &good[..42]),
            "!".repeat(43),
        ] {
            assert!(
                matches!(SessionId::from_cookie(&bad), Err(Error::MalformedId)),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn key_is_hex_sha256_of_the_raw_bytes() {
        let id = SessionId::from_cookie(&URL_SAFE_NO_PAD.encode([7u8; 32])).unwrap();
        assert_eq!(
            id.key().as_str(),
            hex::encode(openssl::sha::sha256(&[7u8; 32]))
        );
        assert_eq!(SessionKey::parse(id.key().as_str()).unwrap(), id.key());
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let id = SessionId::generate().unwrap();
        let shown = format!("{id:?}");
        assert!(!shown.contains(&id.to_cookie()));
        assert!(!shown.contains(&hex::encode(id.0)));
        assert!(!shown.contains(id.key().as_str()));
        assert!(shown.starts_with("SessionId(key="));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"a".repeat(65)] {
            assert!(matches!(SessionKey::parse(bad), Err(Error::MalformedKey)));
        }
    }

    #[test]
    fn authn_methods_serialize_to_stable_names() {
        let json = serde_json::to_string(&[
            AuthnMethod::Password,
            AuthnMethod::Totp,
            AuthnMethod::WebAuthn,
            AuthnMethod::RecoveryCode,
        ])
        .unwrap();
        assert_eq!(json, r#"["password","totp","webauthn","recovery_code"]"#);
    }

    #[test]
    fn durations_and_namespaces_are_checked() {
        assert!(matches!(
            duration_ms("idle", Duration::ZERO),
            Err(Error::InvalidDuration("idle"))
        ));
        assert!(matches!(
            duration_ms("idle", Duration::from_micros(999)),
            Err(Error::InvalidDuration("idle"))
        ));
        assert!(matches!(
            duration_ms("idle", Duration::MAX),
            Err(Error::InvalidDuration("idle"))
        ));
        assert!(matches!(
            duration_ms("idle", Duration::from_millis(MAX_DURATION_MS + 1)),
            Err(Error::InvalidDuration("idle"))
        ));
        assert_eq!(duration_ms("idle", Duration::from_secs(2)).unwrap(), 2000);
        assert!(check_namespace("authn-request_id2").is_ok());
        for bad in ["", "A", "a:b", "a b", &"a".repeat(65)] {
            assert!(matches!(
                check_namespace(bad),
                Err(Error::InvalidNamespace(_))
            ));
        }
    }
}
