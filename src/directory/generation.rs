//! Generation counters: one-row tables (`id = 1`, `generation`) whose number moves with every change
//! to a kind of declaration (policies, assignment rules), so every server learns by polling one row
//! when to rebuild what it compiled from them. The bump runs inside the transaction of the change, so
//! a server never sees the new number without the change.

use sqlx::{Any, AnyPool, Row, Transaction};

use super::{db_error, Error};

/// A counter table. The name is a constant of this crate, never input, so it may be spliced into SQL.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counter(&'static str);

/// Moved by every change to IP rules, policies, policy assignments or SP access requirements.
pub(super) const POLICY: Counter = Counter("policy_generation");

/// Moved by every change to the app assignment rules.
pub(super) const ASSIGNMENT_RULE: Counter = Counter("assignment_rule_generation");

impl Counter {
    /// Bumps the counter inside `tx`.
    pub(super) async fn bump(self, tx: &mut Transaction<'_, Any>) -> Result<(), Error> {
        sqlx::query(&format!(
            "UPDATE {} SET generation = generation + 1 WHERE id = 1",
            self.0
        ))
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The current number. A negative one is a corrupt row.
    pub(super) async fn read(self, pool: &AnyPool) -> Result<u64, Error> {
        let row = sqlx::query(&format!("SELECT generation FROM {} WHERE id = 1", self.0))
            .fetch_one(pool)
            .await
            .map_err(db_error)?;
        let g: i64 = row.try_get("generation").map_err(db_error)?;
        u64::try_from(g).map_err(|_| Error::CorruptRow(format!("{} is negative", self.0)))
    }
}
