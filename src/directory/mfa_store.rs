//! Storage of second factors: TOTP secrets (sealed), WebAuthn credentials, recovery-code hashes,
//! and the audit trail of factor changes.
//!
//! This layer stores what it is given: sealing, hashing and code checks are done by `crate::mfa`,
//! which is the only intended caller. Every change to a user's factors that matters for an audit
//! (activation, removal, reset, new recovery codes, use of a recovery code) writes its
//! `mfa_events` row in the same transaction as the change, so the trail cannot miss one.

use sqlx::any::AnyRow;
use sqlx::error::ErrorKind;
use sqlx::{Any, Row, Transaction};

use super::{db_error, is_unique_violation, new_id, now, touched, Directory, EntryKind, Error};

/// Longest WebAuthn authenticator name, in characters.
const MAX_CREDENTIAL_NAME_CHARS: usize = 64;

/// Columns selected for a [`WebauthnCredential`], in the order [`credential_from_row`] reads them.
const CREDENTIAL_COLUMNS: &str =
    "id, user_id, name, credential_id, credential, created_at, last_used";

/// A user's TOTP factor as stored: the sealed secret and its replay floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpFactor {
    /// The secret, sealed by `crate::mfa` (never the secret itself).
    pub sealed_secret: String,
    /// When the enrolment started (unix seconds).
    pub created_at: i64,
    /// When a correct code activated it; `None` while pending.
    pub activated_at: Option<i64>,
    /// The highest time step accepted so far: a code of this step or an earlier one is a replay
    /// (RFC 6238 5.2) even if the shared replay cache was lost.
    pub last_used_step: Option<u64>,
}

/// Which second factors a user has, for the sign-in page and the account page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Factors {
    /// An active TOTP factor.
    pub totp: bool,
    /// A TOTP enrolment waiting for its first correct code (not usable to sign in).
    pub totp_pending: bool,
    /// The names of the user's WebAuthn authenticators, sorted.
    pub webauthn: Vec<String>,
    /// How many recovery codes are still unused.
    pub recovery_codes_left: usize,
}

impl Factors {
    /// Whether the user has a factor that proves possession of a device (TOTP or WebAuthn).
    /// Recovery codes alone do not count: they are a fallback for those.
    pub fn has_second_factor(&self) -> bool {
        self.totp || !self.webauthn.is_empty()
    }
}

/// What [`Directory::reset_factors`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactorReset {
    /// Whether an active TOTP factor was removed.
    pub totp: bool,
    /// Whether a pending TOTP enrolment was removed.
    pub totp_pending: bool,
    /// How many WebAuthn credentials were removed.
    pub webauthn: usize,
    /// How many recovery codes (used or not) were removed.
    pub recovery_codes: usize,
}

/// Who changed a user's factors, as written to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaActor {
    /// The user on their own account. Stored as `self`.
    SelfService,
    /// An administrator, by username. Stored as `admin:<username>`.
    Admin(String),
    /// An operator at the command line. Stored as `console`.
    Console,
}

impl MfaActor {
    /// The stored text.
    pub fn to_stored(&self) -> String {
        match self {
            MfaActor::SelfService => "self".to_owned(),
            MfaActor::Admin(name) => format!("admin:{name}"),
            MfaActor::Console => "console".to_owned(),
        }
    }

    /// Parses the stored text.
    fn from_stored(text: &str) -> Result<Self, Error> {
        match text {
            "self" => Ok(MfaActor::SelfService),
            "console" => Ok(MfaActor::Console),
            other => other
                .strip_prefix("admin:")
                .map(|name| MfaActor::Admin(name.to_owned()))
                .ok_or_else(|| Error::CorruptRow(format!("unknown MFA actor {other:?}"))),
        }
    }
}

/// What happened to a user's factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MfaAction {
    /// A factor became usable (TOTP activated by a correct code, WebAuthn credential registered).
    Enrolled,
    /// One factor was removed.
    Removed,
    /// An administrator removed all factors at once.
    Reset,
    /// A new set of recovery codes replaced the old one.
    RecoveryRegenerated,
    /// A recovery code was used to sign in.
    RecoveryUsed,
}

impl MfaAction {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaAction::Enrolled => "enrolled",
            MfaAction::Removed => "removed",
            MfaAction::Reset => "reset",
            MfaAction::RecoveryRegenerated => "recovery_regenerated",
            MfaAction::RecoveryUsed => "recovery_used",
        }
    }

    /// Parses the stored text.
    fn from_stored(text: &str) -> Result<Self, Error> {
        Ok(match text {
            "enrolled" => MfaAction::Enrolled,
            "removed" => MfaAction::Removed,
            "reset" => MfaAction::Reset,
            "recovery_regenerated" => MfaAction::RecoveryRegenerated,
            "recovery_used" => MfaAction::RecoveryUsed,
            other => return Err(Error::CorruptRow(format!("unknown MFA action {other:?}"))),
        })
    }
}

/// One entry of the MFA audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaEvent {
    /// When it happened (unix seconds).
    pub at: i64,
    /// Whose factors changed. Kept after the user is deleted (no foreign key), as audit data.
    pub user_id: i64,
    /// Who made the change.
    pub actor: MfaActor,
    /// What changed.
    pub action: MfaAction,
    /// Details as a JSON object (e.g. `{"factor":"totp"}`, `{"remaining":9}`).
    pub detail: String,
}

/// A registered WebAuthn authenticator as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnCredential {
    /// Row id, to update the stored credential after each use.
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    /// The name the user gave it ("YubiKey", "laptop"), unique per user.
    pub name: String,
    /// The credential id (base64url), unique across users: how an assertion names its credential.
    pub credential_id: String,
    /// The credential as serialized by the WebAuthn library (JSON).
    pub credential: String,
    /// When it was registered (unix seconds).
    pub created_at: i64,
    /// When it was last used to sign in (unix seconds).
    pub last_used: Option<i64>,
}

/// Step numbers are stored as BIGINT; a step from an `i64` unix time always fits.
fn step_to_db(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

/// Maps a foreign-key violation on `user_id` to "no such user"; other errors as usual.
fn user_error(e: sqlx::Error, user_id: i64) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.kind() == ErrorKind::ForeignKeyViolation => Error::NotFound {
            kind: EntryKind::User,
            name: format!("id {user_id}"),
        },
        _ => db_error(e),
    }
}

/// Reads a [`TotpFactor`] from `secret, created_at, activated_at, last_used_step`.
fn totp_from_row(row: &AnyRow) -> Result<TotpFactor, Error> {
    let last_used_step: Option<i64> = row.try_get(3).map_err(db_error)?;
    Ok(TotpFactor {
        sealed_secret: row.try_get(0).map_err(db_error)?,
        created_at: row.try_get(1).map_err(db_error)?,
        activated_at: row.try_get(2).map_err(db_error)?,
        last_used_step: last_used_step
            .map(|s| {
                u64::try_from(s).map_err(|_| Error::CorruptRow("negative TOTP step".to_owned()))
            })
            .transpose()?,
    })
}

/// Reads a [`WebauthnCredential`] from [`CREDENTIAL_COLUMNS`].
fn credential_from_row(row: &AnyRow) -> Result<WebauthnCredential, Error> {
    Ok(WebauthnCredential {
        id: row.try_get(0).map_err(db_error)?,
        user_id: row.try_get(1).map_err(db_error)?,
        name: row.try_get(2).map_err(db_error)?,
        credential_id: row.try_get(3).map_err(db_error)?,
        credential: row.try_get(4).map_err(db_error)?,
        created_at: row.try_get(5).map_err(db_error)?,
        last_used: row.try_get(6).map_err(db_error)?,
    })
}

/// Checks an authenticator name: non-empty, at most 64 characters, no control characters, no
/// surrounding whitespace.
fn check_credential_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.chars().count() > MAX_CREDENTIAL_NAME_CHARS
        || name.chars().any(char::is_control)
        || name.trim() != name
    {
        return Err(Error::InvalidName(format!(
            "an authenticator name must be 1-{MAX_CREDENTIAL_NAME_CHARS} characters without \
             control characters or surrounding spaces"
        )));
    }
    Ok(())
}

/// Appends an audit event inside `tx`. `seq` orders events that share a second.
async fn record_event(
    tx: &mut Transaction<'static, Any>,
    user_id: i64,
    actor: &MfaActor,
    action: MfaAction,
    detail: serde_json::Value,
    at: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO mfa_events (id, seq, at, user_id, actor, action, detail) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM mfa_events",
    )
    .bind(new_id())
    .bind(at)
    .bind(user_id)
    .bind(actor.to_stored())
    .bind(action.as_str())
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

impl Directory {
    /// Starts (or restarts) a TOTP enrolment: stores `sealed_secret` as the user's pending secret,
    /// replacing any earlier pending one. An active factor stays active until the new one is
    /// confirmed. [`Error::NotFound`] if the user does not exist.
    pub async fn begin_totp_enrolment(
        &self,
        user_id: i64,
        sealed_secret: &str,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1 AND state = 'pending'")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO mfa_totp (user_id, state, secret, created_at) \
             VALUES ($1, 'pending', $2, $3)",
        )
        .bind(user_id)
        .bind(sealed_secret)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| user_error(e, user_id))?;
        tx.commit().await.map_err(db_error)
    }

    /// The user's pending TOTP enrolment, if any.
    pub async fn pending_totp(&self, user_id: i64) -> Result<Option<TotpFactor>, Error> {
        self.totp_in_state(user_id, "pending").await
    }

    /// The user's active TOTP factor, if any.
    pub async fn active_totp(&self, user_id: i64) -> Result<Option<TotpFactor>, Error> {
        self.totp_in_state(user_id, "active").await
    }

    /// The TOTP row of a user in one state.
    async fn totp_in_state(&self, user_id: i64, state: &str) -> Result<Option<TotpFactor>, Error> {
        let row = sqlx::query(
            "SELECT secret, created_at, activated_at, last_used_step FROM mfa_totp \
             WHERE user_id = $1 AND state = $2",
        )
        .bind(user_id)
        .bind(state)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(totp_from_row).transpose()
    }

    /// Makes the pending enrolment the user's TOTP factor, replacing an active one, and records
    /// `enrolled`. The caller must have checked a code against this very secret: the switch
    /// happens only if the pending secret is still `sealed_secret` (compare-and-swap), so an
    /// enrolment restarted meanwhile (another tab) is not activated by a code for the old secret.
    /// `step` is the step of that code, the first replay floor. Returns whether it switched.
    pub async fn activate_totp(
        &self,
        user_id: i64,
        sealed_secret: &str,
        step: u64,
        actor: &MfaActor,
    ) -> Result<bool, Error> {
        let at = now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The compare-and-swap comes first: it is also a write, so a SQLite transaction takes
        // its write lock at once, and on PostgreSQL it locks the pending row until commit.
        let promoted = sqlx::query(
            "UPDATE mfa_totp SET activated_at = $3, last_used_step = $4 \
             WHERE user_id = $1 AND state = 'pending' AND secret = $2",
        )
        .bind(user_id)
        .bind(sealed_secret)
        .bind(at)
        .bind(step_to_db(step))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if !touched(&promoted) {
            tx.rollback().await.map_err(db_error)?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1 AND state = 'active'")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "UPDATE mfa_totp SET state = 'active' WHERE user_id = $1 AND state = 'pending'",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        record_event(
            &mut tx,
            user_id,
            actor,
            MfaAction::Enrolled,
            serde_json::json!({ "factor": "totp" }),
            at,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Raises the replay floor of the active TOTP factor to `step`, atomically: returns false
    /// (a replay) if a code of this step or a later one was already accepted, or if there is no
    /// active factor.
    pub async fn record_totp_step(&self, user_id: i64, step: u64) -> Result<bool, Error> {
        let result = sqlx::query(
            "UPDATE mfa_totp SET last_used_step = $2 WHERE user_id = $1 AND state = 'active' \
             AND (last_used_step IS NULL OR last_used_step < $2)",
        )
        .bind(user_id)
        .bind(step_to_db(step))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(touched(&result))
    }

    /// Removes the user's TOTP factor and any pending enrolment. Records `removed` when an active
    /// factor went. Returns whether an active factor was removed.
    pub async fn remove_totp(&self, user_id: i64, actor: &MfaActor) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1 AND state = 'pending'")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let removed = sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1 AND state = 'active'")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let removed = touched(&removed);
        if removed {
            record_event(
                &mut tx,
                user_id,
                actor,
                MfaAction::Removed,
                serde_json::json!({ "factor": "totp" }),
                now(),
            )
            .await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(removed)
    }

    /// Which factors the user has.
    pub async fn list_factors(&self, user_id: i64) -> Result<Factors, Error> {
        let mut factors = Factors::default();
        let states = sqlx::query("SELECT state FROM mfa_totp WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        for row in &states {
            let state: String = row.try_get(0).map_err(db_error)?;
            match state.as_str() {
                "active" => factors.totp = true,
                "pending" => factors.totp_pending = true,
                other => return Err(Error::CorruptRow(format!("unknown TOTP state {other:?}"))),
            }
        }
        let names = sqlx::query("SELECT name FROM mfa_webauthn WHERE user_id = $1 ORDER BY name")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        factors.webauthn = names
            .iter()
            .map(|row| row.try_get(0).map_err(db_error))
            .collect::<Result<_, _>>()?;
        factors.recovery_codes_left = self.recovery_codes_left(user_id).await?;
        Ok(factors)
    }

    /// Replaces all of the user's recovery codes by `hashes` (their stored forms) and records
    /// `recovery_regenerated`. [`Error::NotFound`] if the user does not exist.
    pub async fn replace_recovery_codes(
        &self,
        user_id: i64,
        hashes: &[String],
        actor: &MfaActor,
    ) -> Result<(), Error> {
        let at = now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for hash in hashes {
            sqlx::query(
                "INSERT INTO mfa_recovery_codes (user_id, code_hash, created_at) \
                 VALUES ($1, $2, $3)",
            )
            .bind(user_id)
            .bind(hash)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(|e| user_error(e, user_id))?;
        }
        record_event(
            &mut tx,
            user_id,
            actor,
            MfaAction::RecoveryRegenerated,
            serde_json::json!({ "count": hashes.len() }),
            at,
        )
        .await?;
        tx.commit().await.map_err(db_error)
    }

    /// Marks the unused recovery code with stored form `hash` as used and records
    /// `recovery_used`. One conditional UPDATE, so two nodes racing with the same code cannot
    /// both succeed. Returns whether a code was consumed.
    pub async fn consume_recovery_code(&self, user_id: i64, hash: &str) -> Result<bool, Error> {
        let at = now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let result = sqlx::query(
            "UPDATE mfa_recovery_codes SET used_at = $3 \
             WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        )
        .bind(user_id)
        .bind(hash)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if !touched(&result) {
            tx.rollback().await.map_err(db_error)?;
            return Ok(false);
        }
        let left = sqlx::query(
            "SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let left: i64 = left.try_get(0).map_err(db_error)?;
        record_event(
            &mut tx,
            user_id,
            &MfaActor::SelfService,
            MfaAction::RecoveryUsed,
            serde_json::json!({ "remaining": left }),
            at,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// How many of the user's recovery codes are unused.
    pub async fn recovery_codes_left(&self, user_id: i64) -> Result<usize, Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        let count: i64 = row.try_get(0).map_err(db_error)?;
        usize::try_from(count).map_err(|_| Error::CorruptRow("negative count".to_owned()))
    }

    /// Registers a WebAuthn credential under a name unique for the user and records `enrolled`.
    /// [`Error::DuplicateCredential`] if the name is taken or the credential is already
    /// registered, [`Error::InvalidName`] for a bad name, [`Error::NotFound`] without the user.
    pub async fn add_webauthn_credential(
        &self,
        user_id: i64,
        name: &str,
        credential_id: &str,
        credential: &str,
        actor: &MfaActor,
    ) -> Result<WebauthnCredential, Error> {
        check_credential_name(name)?;
        let at = now();
        let id = new_id();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let inserted = sqlx::query(
            "INSERT INTO mfa_webauthn (id, user_id, name, credential_id, credential, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(user_id)
        .bind(name)
        .bind(credential_id)
        .bind(credential)
        .bind(at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::DuplicateCredential(name.to_owned()))
            }
            Err(e) => return Err(user_error(e, user_id)),
        }
        record_event(
            &mut tx,
            user_id,
            actor,
            MfaAction::Enrolled,
            serde_json::json!({ "factor": "webauthn", "name": name }),
            at,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(WebauthnCredential {
            id,
            user_id,
            name: name.to_owned(),
            credential_id: credential_id.to_owned(),
            credential: credential.to_owned(),
            created_at: at,
            last_used: None,
        })
    }

    /// The user's WebAuthn credentials, sorted by name.
    pub async fn webauthn_credentials(
        &self,
        user_id: i64,
    ) -> Result<Vec<WebauthnCredential>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM mfa_webauthn WHERE user_id = $1 ORDER BY name"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(credential_from_row).collect()
    }

    /// Stores the credential as updated by a sign-in (signature counter, backup state) and when
    /// it was used. Returns false if the credential is gone.
    pub async fn update_webauthn_credential(
        &self,
        id: i64,
        credential: &str,
        used_at: i64,
    ) -> Result<bool, Error> {
        let result =
            sqlx::query("UPDATE mfa_webauthn SET credential = $2, last_used = $3 WHERE id = $1")
                .bind(id)
                .bind(credential)
                .bind(used_at)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(touched(&result))
    }

    /// Removes the user's credential named `name` and records `removed`. Returns whether one was.
    pub async fn remove_webauthn_credential(
        &self,
        user_id: i64,
        name: &str,
        actor: &MfaActor,
    ) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let result = sqlx::query("DELETE FROM mfa_webauthn WHERE user_id = $1 AND name = $2")
            .bind(user_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if !touched(&result) {
            tx.rollback().await.map_err(db_error)?;
            return Ok(false);
        }
        record_event(
            &mut tx,
            user_id,
            actor,
            MfaAction::Removed,
            serde_json::json!({ "factor": "webauthn", "name": name }),
            now(),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Removes every factor of the user (TOTP, pending enrolment, WebAuthn credentials, recovery
    /// codes) and records `reset` with what was removed, in one transaction. An event is recorded
    /// even when there was nothing to remove: the administrator's action is what is audited.
    pub async fn reset_factors(
        &self,
        user_id: i64,
        actor: &MfaActor,
    ) -> Result<FactorReset, Error> {
        let at = now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let active = sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1 AND state = 'active'")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let pending = sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let webauthn = sqlx::query("DELETE FROM mfa_webauthn WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let recovery = sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let reset = FactorReset {
            totp: touched(&active),
            totp_pending: touched(&pending),
            webauthn: count(webauthn.rows_affected()),
            recovery_codes: count(recovery.rows_affected()),
        };
        record_event(
            &mut tx,
            user_id,
            actor,
            MfaAction::Reset,
            serde_json::json!({
                "totp": reset.totp,
                "totp_pending": reset.totp_pending,
                "webauthn": reset.webauthn,
                "recovery_codes": reset.recovery_codes,
            }),
            at,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(reset)
    }

    /// The user's MFA audit trail, oldest first.
    pub async fn mfa_events(&self, user_id: i64) -> Result<Vec<MfaEvent>, Error> {
        let rows = sqlx::query(
            "SELECT at, user_id, actor, action, detail FROM mfa_events WHERE user_id = $1 \
             ORDER BY seq, at",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let actor: String = row.try_get(2).map_err(db_error)?;
                let action: String = row.try_get(3).map_err(db_error)?;
                Ok(MfaEvent {
                    at: row.try_get(0).map_err(db_error)?,
                    user_id: row.try_get(1).map_err(db_error)?,
                    actor: MfaActor::from_stored(&actor)?,
                    action: MfaAction::from_stored(&action)?,
                    detail: row.try_get(4).map_err(db_error)?,
                })
            })
            .collect()
    }
}
