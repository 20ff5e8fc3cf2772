//! The SQL directory: users, groups, roles, service providers and which users may use which SP.
//!
//! One code path serves SQLite (the embedded default) and PostgreSQL: the pool is sqlx's `AnyPool`, the
//! queries use `$1` placeholders (SQLite accepts them too), and the migrations under `migrations/` are
//! written in the subset of SQL both accept (see the header of the first migration for the conventions:
//! application-chosen BIGINT ids, BIGINT unix-second times, BIGINT 0/1 booleans, JSON as TEXT).
//!
//! Getters (`get_user`, `get_sp`, ...) return `Ok(None)` for a missing entry; operations on a named entry
//! that does not exist return [`Error::NotFound`].

mod access_preview;
mod admin;
mod assignment_rules;
mod credentials;
mod generation;
mod login_events;
mod mfa_store;
mod password;
mod policy_store;
mod service_providers;
mod users;

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::error::ErrorKind;
use sqlx::{AnyPool, Executor};

pub use admin::{
    token_hash, AdminGrant, AdminRole, ApiToken, AuditEntry, TokenScope, TOKEN_PREFIX,
};
pub use assignment_rules::{AppAccess, Grant};
pub use credentials::{normalize_answer, question_text, SECURITY_QUESTIONS};
pub use login_events::LoginEvent;
pub use mfa_store::{
    FactorReset, Factors, MfaAction, MfaActor, MfaEvent, TotpFactor, WebauthnCredential,
};
pub use password::{
    is_common_password, weak_password_reason, weak_password_reason_with, PasswordHasher,
    PasswordRules, MAX_PASSWORD_BYTES, MAX_PASSWORD_HISTORY, MIN_PASSWORD_CHARS,
};
pub use policy_store::{DeclarationsApplied, ManagedBy};
pub use service_providers::{
    check_metadata_url, AttributeRelease, MetadataSource, MetadataUpsert, NewServiceProvider,
    RefreshStatus, ServiceProvider, SpProfile, SpSettings, ATTRNAME_FORMAT_BASIC,
    ATTRNAME_FORMAT_UNSPECIFIED, ATTRNAME_FORMAT_URI, MAX_ENTITY_ID_CHARS, MIN_REFRESH_SECS,
    NAMEID_FORMAT_EMAIL, NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT,
    NAMEID_FORMAT_UNSPECIFIED,
};
pub use users::{
    Group, NewUser, PasswordCheck, Role, User, UserProfile, UserStatus, BUILTIN_ATTRIBUTES,
};

/// How long a request waits for a pooled connection before the directory is reported unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations in `migrations/`, embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which kind of entry an [`Error::NotFound`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A user, named by username.
    User,
    /// A group, named by group name.
    Group,
    /// A role, named by role name.
    Role,
    /// A service provider, named by entityID.
    ServiceProvider,
    /// An IP allowlist rule, named by rule name.
    IpRule,
    /// A security policy, named by policy name.
    Policy,
    /// An app assignment rule, named by rule name.
    AssignmentRule,
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryKind::User => "user",
            EntryKind::Group => "group",
            EntryKind::Role => "role",
            EntryKind::ServiceProvider => "service provider",
            EntryKind::IpRule => "ip rule",
            EntryKind::Policy => "policy",
            EntryKind::AssignmentRule => "assignment rule",
        })
    }
}

/// Everything that can go wrong in the directory.
///
/// Display strings never include SQL or driver detail (they may reach logs shown to operators or
/// pages); the underlying `sqlx::Error` stays reachable through `source()`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL is neither `sqlite:` nor `postgres:`/`postgresql:`, or sqlx rejects it.
    #[error("invalid directory database URL: {0}")]
    InvalidUrl(String),
    /// The database cannot be reached (connect failure, pool timeout, IO error).
    #[error("the directory database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("the directory database schema could not be migrated")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Any other database failure.
    #[error("directory database error")]
    Database(#[source] sqlx::Error),
    /// A stored row cannot be turned into a value (bad status, bad JSON): the database was edited by
    /// hand or by a newer Tessera.
    #[error("corrupt directory row: {0}")]
    CorruptRow(String),
    /// A user with this username already exists.
    #[error("user {0:?} already exists")]
    DuplicateUser(String),
    /// A group with this name already exists.
    #[error("group {0:?} already exists")]
    DuplicateGroup(String),
    /// A role with this name already exists.
    #[error("role {0:?} already exists")]
    DuplicateRole(String),
    /// A service provider with this entityID already exists.
    #[error("service provider {0:?} already exists")]
    DuplicateEntityId(String),
    /// A WebAuthn authenticator with this name (or this credential) is already registered.
    #[error("authenticator {0:?} is already registered")]
    DuplicateCredential(String),
    /// The named entry does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What was looked for.
        kind: EntryKind,
        /// The name it was looked for by.
        name: String,
    },
    /// The username is empty, too long or contains control characters or surrounding whitespace.
    #[error("invalid username: {0}")]
    InvalidUsername(String),
    /// A group or role name is empty, too long or contains control characters.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The password fails the password policy; the text says why and may be shown to the user.
    #[error("password refused: {0}")]
    WeakPassword(String),
    /// A security question or answer cannot be stored; the text says why and may be shown.
    #[error("security answer refused: {0}")]
    InvalidAnswer(String),
    /// The entityID is empty or too long.
    #[error("invalid entityID: {0}")]
    InvalidEntityId(String),
    /// An extra user attribute has an empty name or the name of a built-in attribute.
    #[error("invalid user attribute: {0}")]
    InvalidAttribute(String),
    /// The per-SP settings are inconsistent (empty NameID attribute, duplicate released names, ...).
    #[error("invalid service provider settings: {0}")]
    InvalidSettings(String),
    /// The argon2 cost parameters are out of range.
    #[error("invalid argon2 parameters: {0}")]
    InvalidHashParams(String),
    /// A stored password hash is not an argon2 PHC string.
    #[error("a stored password hash is corrupt")]
    CorruptPasswordHash,
    /// An access-policy item is invalid, inconsistent, or names an unknown user, group or role.
    #[error(transparent)]
    Policy(#[from] crate::policy::Error),
    /// An access-policy item with this name already exists.
    #[error("{0} already exists")]
    AlreadyExists(crate::policy::Item),
    /// The access-policy item is declared in tessera.toml, which is its source of truth.
    #[error("{0} is declared in tessera.toml; change it there")]
    ManagedByConfig(crate::policy::Item),
    /// A tessera.toml declaration collides with an item managed from the CLI.
    #[error(
        "{0} already exists and is managed from the CLI; remove it there or rename the declaration"
    )]
    ManagedByCli(crate::policy::Item),
    /// An admin grant or API token request is inconsistent (e.g. an app admin grant without an SP).
    #[error("{0}")]
    InvalidAdmin(String),
    /// The user already holds this admin role.
    #[error("{0}")]
    DuplicateGrant(String),
    /// Hashing failed or the blocking task running it died.
    #[error("password hashing failed: {0}")]
    PasswordHashing(String),
}

/// Maps a sqlx error: connectivity problems become [`Error::Unavailable`], the rest [`Error::Database`].
fn db_error(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Error::Unavailable(e),
        sqlx::Error::Configuration(_) => Error::InvalidUrl(e.to_string()),
        other => Error::Database(other),
    }
}

/// Whether `e` is a UNIQUE or PRIMARY KEY violation (same kind on both backends).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == ErrorKind::UniqueViolation)
}

/// Current time as unix seconds, the representation of every time column.
fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A fresh positive 63-bit id. Ids are chosen here because SQLite and PostgreSQL share no
/// auto-increment syntax; a collision is astronomically unlikely and inserts retry on one anyway.
fn new_id() -> i64 {
    let id = (rand::random::<u64>() >> 1) as i64;
    if id == 0 {
        1
    } else {
        id
    }
}

/// How many times an insert retries with a new id after a primary-key collision.
const ID_ATTEMPTS: usize = 3;

/// Whether a statement changed at least one row.
fn touched(result: &AnyQueryResult) -> bool {
    result.rows_affected() > 0
}

/// `Ok(())` when a statement changed at least one row, else the error of `missing` (the statement
/// named an entry that does not exist).
fn touched_or(result: &AnyQueryResult, missing: impl FnOnce() -> Error) -> Result<(), Error> {
    if touched(result) {
        Ok(())
    } else {
        Err(missing())
    }
}

/// The directory: a connection pool plus the password hasher used for every password it stores or checks.
#[derive(Clone, Debug)]
pub struct Directory {
    /// The pool; `AnyPool` so SQLite and PostgreSQL share all code.
    pool: AnyPool,
    /// Hashes new passwords and verifies logins; shared so its counter covers all clones.
    hasher: PasswordHasher,
}

impl Directory {
    /// Connects with the OWASP default argon2id costs (see [`PasswordHasher::owasp_default`]) and
    /// applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, PasswordHasher::owasp_default()?).await
    }

    /// Connects to `url` (`sqlite://path`, `sqlite::memory:`, `postgres://...`), applies pending
    /// migrations, and hashes passwords with `hasher`.
    ///
    /// For a SQLite file the parent directory and the file are created when missing (`mode=rwc` unless
    /// the URL sets a mode), the journal is switched to WAL so readers do not block the writer, and
    /// foreign keys are enforced (sqlx's default). `sqlite::memory:` keeps one connection so the
    /// database lives as long as the pool.
    pub async fn connect_with(url: &str, hasher: PasswordHasher) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let (url, memory) = prepare_url(url)?;
        let mut options = AnyPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                    }
                    Ok(())
                })
            });
        if memory {
            options = options
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = options.connect(&url).await.map_err(|e| match e {
            sqlx::Error::Configuration(_) => Error::InvalidUrl(e.to_string()),
            other => Error::Unavailable(other),
        })?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, hasher })
    }

    /// The password hasher, for callers that need its costs or its verification counter.
    pub fn password_hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The name of the backend in use: `"SQLite"` or `"PostgreSQL"`.
    pub async fn backend_name(&self) -> Result<String, Error> {
        let conn = self.pool.acquire().await.map_err(db_error)?;
        Ok(conn.backend_name().to_owned())
    }

    /// Closes the pool; later calls fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Checks the scheme and, for a SQLite file, creates its parent directory and adds `mode=rwc`.
/// Returns the URL to hand to sqlx and whether it is an in-memory SQLite database.
fn prepare_url(url: &str) -> Result<(String, bool), Error> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_owned(), false));
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(Error::InvalidUrl(
            "expected a sqlite: or postgres:// URL".to_owned(),
        ));
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let memory =
        path == ":memory:" || query.is_some_and(|q| q.split('&').any(|kv| kv == "mode=memory"));
    if memory {
        return Ok((url.to_owned(), true));
    }
    if path.is_empty() {
        return Err(Error::InvalidUrl("the SQLite URL names no file".to_owned()));
    }
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| Error::InvalidUrl("the SQLite path is not UTF-8".to_owned()))?;
    if let Some(parent) = Path::new(decoded.as_ref()).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| Error::Unavailable(sqlx::Error::Io(e)))?;
        }
    }
    let has_mode = query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("mode=")));
    let url = match (query, has_mode) {
        (_, true) => url.to_owned(),
        (Some(q), false) if !q.is_empty() => format!("{url}&mode=rwc"),
        (Some(_), false) => format!("{url}mode=rwc"),
        (None, false) => format!("{url}?mode=rwc"),
    };
    Ok((url, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_url_adds_rwc_and_creates_parent() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("a/b/tessera.db");
        let url = format!("sqlite://{}", file.display());
        let (prepared, memory) = prepare_url(&url)?;
        assert!(!memory);
        assert_eq!(prepared, format!("{url}?mode=rwc"));
        assert!(dir.path().join("a/b").is_dir());
        let (prepared, _) = prepare_url(&format!("{url}?mode=ro"))?;
        assert_eq!(prepared, format!("{url}?mode=ro"));
        let (prepared, _) = prepare_url(&format!("{url}?cache=shared"))?;
        assert_eq!(prepared, format!("{url}?cache=shared&mode=rwc"));
        Ok(())
    }

    #[test]
    fn prepare_url_memory_and_schemes() -> Result<(), Error> {
        assert_eq!(
            prepare_url("sqlite::memory:")?,
            ("sqlite::memory:".to_owned(), true)
        );
        assert_eq!(
            prepare_url("postgres://u@h/db")?,
            ("postgres://u@h/db".to_owned(), false)
        );
        assert!(matches!(
            prepare_url("mysql://h/db"),
            Err(Error::InvalidUrl(_))
        ));
        assert!(matches!(
            prepare_url("sqlite://"),
            Err(Error::InvalidUrl(_))
        ));
        Ok(())
    }
}
