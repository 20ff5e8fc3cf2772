//! Sign-in and SSO events. For now the access policy's refusals; login monitoring extends it.

use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::Row;

use super::{db_error, new_id, Directory, Error};

/// The last timestamp this process handed out, so events recorded in the same millisecond still sort
/// in the order they happened.
static LAST_AT_MS: AtomicI64 = AtomicI64::new(0);

/// Unix milliseconds, strictly increasing within this process.
fn next_at_ms() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    let mut last = LAST_AT_MS.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_AT_MS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    /// Unix milliseconds (strictly increasing per process, so the order of events is kept).
    pub at: i64,
    /// The username as typed or as known from the session.
    pub username: String,
    /// The user's id, when the user exists.
    pub user_id: Option<i64>,
    /// The client address as Tessera believed it.
    pub ip: String,
    /// The SP's entityID, for an SSO.
    pub sp: Option<String>,
    /// What happened, e.g. `ip_denied`.
    pub outcome: String,
    /// Why: the rules that refused, or what is missing. Never a secret.
    pub reason: String,
}

impl Directory {
    /// Records an event. `at` is set here; the value passed in is ignored.
    pub async fn record_login_event(&self, event: &LoginEvent) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO login_events (id, at, username, user_id, ip, sp, outcome, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_id())
        .bind(next_at_ms())
        .bind(&event.username)
        .bind(event.user_id)
        .bind(&event.ip)
        .bind(event.sp.as_deref())
        .bind(&event.outcome)
        .bind(&event.reason)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The latest events of a user (or of every user with `None`), newest first.
    pub async fn login_events(
        &self,
        username: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LoginEvent>, Error> {
        let rows = match username {
            Some(u) => {
                sqlx::query(
                    "SELECT at, username, user_id, ip, sp, outcome, reason FROM login_events \
                     WHERE username = $1 ORDER BY at DESC, id DESC LIMIT $2",
                )
                .bind(u)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(
                    "SELECT at, username, user_id, ip, sp, outcome, reason FROM login_events \
                     ORDER BY at DESC, id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(LoginEvent {
                    at: row.try_get("at").map_err(db_error)?,
                    username: row.try_get("username").map_err(db_error)?,
                    user_id: row.try_get("user_id").map_err(db_error)?,
                    ip: row.try_get("ip").map_err(db_error)?,
                    sp: row.try_get("sp").map_err(db_error)?,
                    outcome: row.try_get("outcome").map_err(db_error)?,
                    reason: row.try_get("reason").map_err(db_error)?,
                })
            })
            .collect()
    }
}
