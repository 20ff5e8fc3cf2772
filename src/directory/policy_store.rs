//! Access-policy storage: IP rules, security policies, their assignments, per-SP access requirements,
//! and the generation counter that tells a server when to rebuild its compiled [`PolicySet`].
//!
//! Every change validates first and then writes in one transaction that also bumps the generation, so
//! nothing is half-applied. Rows made from the CLI and rows declared in tessera.toml are kept apart
//! ([`ManagedBy`]): [`Directory::apply_declarations`] reconciles the declared ones to exactly what the
//! file says and refuses to touch CLI-made ones; the CLI methods refuse to change declared ones.

use std::collections::{BTreeMap, HashSet};

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{
    db_error, generation, is_unique_violation, new_id, now, touched, touched_or, Directory,
    EntryKind, Error,
};
use crate::policy::{
    self, AssignmentTarget, IpRange, IpRule, IpRuleDecl, Item, MfaMethod, PolicyAssignment,
    PolicyData, PolicyDecl, PolicySet, Requirement, RuleScope, SecurityPolicy, SpRequirement,
    Subject, TargetKind,
};

/// Who owns a rule, policy or assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManagedBy {
    /// Made with `tessera ip-rule` / `tessera policy`; changed the same way.
    Cli,
    /// Declared in tessera.toml; reconciled at start, read-only elsewhere.
    Config,
}

impl ManagedBy {
    /// The stored value.
    fn as_str(self) -> &'static str {
        match self {
            ManagedBy::Cli => "cli",
            ManagedBy::Config => "config",
        }
    }

    /// Reads the stored value.
    fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "cli" => Ok(ManagedBy::Cli),
            "config" => Ok(ManagedBy::Config),
            other => Err(Error::CorruptRow(format!(
                "unknown policy source {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for ManagedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ManagedBy::Cli => "cli",
            ManagedBy::Config => "tessera.toml",
        })
    }
}

/// What [`Directory::apply_declarations`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclarationsApplied {
    /// Declared IP rules now stored (created or updated).
    pub ip_rules: usize,
    /// Declared policies now stored (created or updated).
    pub policies: usize,
    /// Declared assignments now stored.
    pub assignments: usize,
    /// Previously declared IP rules removed because the file no longer declares them.
    pub removed_ip_rules: Vec<String>,
    /// Previously declared policies removed because the file no longer declares them.
    pub removed_policies: Vec<String>,
}

/// Columns selected for an IP rule.
const RULE_COLUMNS: &str = "name, ranges, scope_kind, scope_names, source";

/// Columns selected for a policy.
const POLICY_COLUMNS: &str = "name, mfa_required, mfa_methods, session_absolute_secs, \
     session_idle_secs, reauth_interval_secs, password_min_length, password_history, \
     password_max_age_days, security_questions_required, mfa_on_new_device_or_country, ip_ranges, \
     is_default, source";

/// Seconds for a BIGINT column (validated values are far below the limit; saturates otherwise).
fn db_secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Seconds from a BIGINT column.
fn row_secs(v: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::CorruptRow(format!("{what} is negative")))
}

/// JSON text of a value stored as TEXT.
fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|e| Error::CorruptRow(e.to_string()))
}

/// A value from a JSON TEXT column.
fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::CorruptRow(format!("{what}: {e}")))
}

/// Ranges from a nullable JSON column.
fn ranges_from(text: Option<String>, what: &str) -> Result<Option<Vec<IpRange>>, Error> {
    text.map(|t| from_json(&t, what)).transpose()
}

/// Reads an IP rule row.
fn rule_from_row(row: &AnyRow) -> Result<(IpRule, ManagedBy), Error> {
    let name: String = row.try_get("name").map_err(db_error)?;
    let ranges: String = row.try_get("ranges").map_err(db_error)?;
    let kind: String = row.try_get("scope_kind").map_err(db_error)?;
    let names: String = row.try_get("scope_names").map_err(db_error)?;
    let source: String = row.try_get("source").map_err(db_error)?;
    let what = format!("ip rule {name:?}");
    let scope = RuleScope::from_parts(&kind, from_json(&names, &what)?)
        .ok_or_else(|| Error::CorruptRow(format!("{what}: unknown scope {kind:?}")))?;
    Ok((
        IpRule {
            ranges: from_json(&ranges, &what)?,
            name,
            scope,
        },
        ManagedBy::parse(&source)?,
    ))
}

/// Reads a policy row.
fn policy_from_row(row: &AnyRow) -> Result<(SecurityPolicy, ManagedBy), Error> {
    let name: String = row.try_get("name").map_err(db_error)?;
    let what = format!("policy {name:?}");
    let methods: String = row.try_get("mfa_methods").map_err(db_error)?;
    let reauth: Option<i64> = row.try_get("reauth_interval_secs").map_err(db_error)?;
    let min_len: i64 = row.try_get("password_min_length").map_err(db_error)?;
    let history: i64 = row.try_get("password_history").map_err(db_error)?;
    let max_age: Option<i64> = row.try_get("password_max_age_days").map_err(db_error)?;
    let questions: i64 = row
        .try_get("security_questions_required")
        .map_err(db_error)?;
    let small = |v: i64, setting: &str| {
        u32::try_from(v).map_err(|_| Error::CorruptRow(format!("{what}: bad {setting}")))
    };
    let source: String = row.try_get("source").map_err(db_error)?;
    let policy = SecurityPolicy {
        mfa_required: row.try_get::<i64, _>("mfa_required").map_err(db_error)? != 0,
        mfa_methods: from_json::<Vec<MfaMethod>>(&methods, &what)?,
        session_absolute_secs: row_secs(
            row.try_get("session_absolute_secs").map_err(db_error)?,
            &what,
        )?,
        session_idle_secs: row_secs(row.try_get("session_idle_secs").map_err(db_error)?, &what)?,
        reauth_interval_secs: reauth.map(|r| row_secs(r, &what)).transpose()?,
        password_min_length: u32::try_from(min_len)
            .map_err(|_| Error::CorruptRow(format!("{what}: bad password minimum")))?,
        password_history: small(history, "password history")?,
        password_max_age_days: max_age
            .map(|d| small(d, "maximum password age"))
            .transpose()?,
        security_questions_required: small(questions, "security question count")?,
        mfa_on_new_device_or_country: row
            .try_get::<i64, _>("mfa_on_new_device_or_country")
            .map_err(db_error)?
            != 0,
        ip_ranges: ranges_from(row.try_get("ip_ranges").map_err(db_error)?, &what)?,
        is_default: row.try_get::<i64, _>("is_default").map_err(db_error)? != 0,
        name,
    };
    Ok((policy, ManagedBy::parse(&source)?))
}

/// Reads an assignment row (joined with the policy name as `policy`).
fn assignment_from_row(row: &AnyRow) -> Result<(PolicyAssignment, ManagedBy), Error> {
    let kind: String = row.try_get("target_kind").map_err(db_error)?;
    let name: String = row.try_get("target_name").map_err(db_error)?;
    let source: String = row.try_get("source").map_err(db_error)?;
    let target = AssignmentTarget::from_parts(&kind, name)
        .ok_or_else(|| Error::CorruptRow(format!("unknown assignment target kind {kind:?}")))?;
    Ok((
        PolicyAssignment {
            policy: row.try_get("policy").map_err(db_error)?,
            target,
            priority: row.try_get("priority").map_err(db_error)?,
        },
        ManagedBy::parse(&source)?,
    ))
}

/// Reads an `sp_access` row.
fn sp_access_from_row(row: &AnyRow, entity_id: &str) -> Result<SpRequirement, Error> {
    let what = format!("access requirements of {entity_id:?}");
    let within: Option<i64> = row.try_get("mfa_within_secs").map_err(db_error)?;
    let mfa = row.try_get::<i64, _>("require_mfa").map_err(db_error)? != 0;
    Ok(SpRequirement {
        ip_ranges: ranges_from(row.try_get("ip_ranges").map_err(db_error)?, &what)?,
        min: mfa
            .then(|| -> Result<Requirement, Error> {
                Ok(Requirement {
                    mfa,
                    mfa_within_secs: within.map(|w| row_secs(w, &what)).transpose()?,
                })
            })
            .transpose()?,
    })
}

/// The error for an unknown rule.
fn rule_not_found(name: &str) -> Error {
    Error::NotFound {
        kind: EntryKind::IpRule,
        name: name.to_owned(),
    }
}

/// The error for an unknown policy.
fn policy_not_found(name: &str) -> Error {
    Error::NotFound {
        kind: EntryKind::Policy,
        name: name.to_owned(),
    }
}

/// Inserts an IP rule inside `tx`.
async fn insert_rule(
    tx: &mut Transaction<'_, Any>,
    rule: &IpRule,
    source: ManagedBy,
) -> Result<(), Error> {
    let at = now();
    sqlx::query(
        "INSERT INTO ip_rules (id, name, ranges, scope_kind, scope_names, source, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(new_id())
    .bind(&rule.name)
    .bind(to_json(&rule.ranges)?)
    .bind(rule.scope.kind())
    .bind(to_json(rule.scope.names())?)
    .bind(source.as_str())
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::AlreadyExists(Item::IpRule(rule.name.clone()))
        } else {
            db_error(e)
        }
    })?;
    Ok(())
}

/// Inserts a policy inside `tx`.
async fn insert_policy(
    tx: &mut Transaction<'_, Any>,
    p: &SecurityPolicy,
    source: ManagedBy,
) -> Result<(), Error> {
    let at = now();
    sqlx::query(
        "INSERT INTO security_policies (id, name, mfa_required, mfa_methods, session_absolute_secs, \
         session_idle_secs, reauth_interval_secs, password_min_length, ip_ranges, is_default, source, \
         created_at, updated_at, password_history, password_max_age_days, security_questions_required, \
         mfa_on_new_device_or_country) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15, $16)",
    )
    .bind(new_id())
    .bind(&p.name)
    .bind(i64::from(p.mfa_required))
    .bind(to_json(&p.mfa_methods)?)
    .bind(db_secs(p.session_absolute_secs))
    .bind(db_secs(p.session_idle_secs))
    .bind(p.reauth_interval_secs.map(db_secs))
    .bind(i64::from(p.password_min_length))
    .bind(p.ip_ranges.as_ref().map(to_json).transpose()?)
    .bind(i64::from(p.is_default))
    .bind(source.as_str())
    .bind(at)
    .bind(i64::from(p.password_history))
    .bind(p.password_max_age_days.map(i64::from))
    .bind(i64::from(p.security_questions_required))
    .bind(i64::from(p.mfa_on_new_device_or_country))
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::AlreadyExists(Item::Policy(p.name.clone()))
        } else {
            db_error(e)
        }
    })?;
    Ok(())
}

/// Replaces every setting of the policy named `p.name` inside `tx`; whether it existed.
async fn update_policy_row(
    tx: &mut Transaction<'_, Any>,
    p: &SecurityPolicy,
) -> Result<bool, Error> {
    let result = sqlx::query(
        "UPDATE security_policies SET mfa_required = $1, mfa_methods = $2, session_absolute_secs = $3, \
         session_idle_secs = $4, reauth_interval_secs = $5, password_min_length = $6, ip_ranges = $7, \
         is_default = $8, updated_at = $9, password_history = $11, password_max_age_days = $12, \
         security_questions_required = $13, mfa_on_new_device_or_country = $14 WHERE name = $10",
    )
    .bind(i64::from(p.mfa_required))
    .bind(to_json(&p.mfa_methods)?)
    .bind(db_secs(p.session_absolute_secs))
    .bind(db_secs(p.session_idle_secs))
    .bind(p.reauth_interval_secs.map(db_secs))
    .bind(i64::from(p.password_min_length))
    .bind(p.ip_ranges.as_ref().map(to_json).transpose()?)
    .bind(i64::from(p.is_default))
    .bind(now())
    .bind(&p.name)
    .bind(i64::from(p.password_history))
    .bind(p.password_max_age_days.map(i64::from))
    .bind(i64::from(p.security_questions_required))
    .bind(i64::from(p.mfa_on_new_device_or_country))
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(touched(&result))
}

/// Inserts or replaces the assignment of `a.target` inside `tx`.
async fn upsert_assignment(
    tx: &mut Transaction<'_, Any>,
    a: &PolicyAssignment,
    source: ManagedBy,
) -> Result<(), Error> {
    let row = sqlx::query("SELECT id FROM security_policies WHERE name = $1")
        .bind(&a.policy)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
    let policy_id: i64 = match row {
        Some(r) => r.try_get("id").map_err(db_error)?,
        None => return Err(policy_not_found(&a.policy)),
    };
    sqlx::query(
        "INSERT INTO policy_assignments (target_kind, target_name, policy_id, priority, source, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (target_kind, target_name) DO UPDATE \
         SET policy_id = excluded.policy_id, priority = excluded.priority, source = excluded.source",
    )
    .bind(a.target.kind())
    .bind(a.target.name())
    .bind(policy_id)
    .bind(a.priority)
    .bind(source.as_str())
    .bind(now())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

impl Directory {
    /// The user as the policy engine sees them: username, group names, role names. `Ok(None)` when the
    /// user does not exist.
    pub async fn subject_of(&self, username: &str) -> Result<Option<Subject>, Error> {
        if self.get_user_by_username(username).await?.is_none() {
            return Ok(None);
        }
        let groups = self.groups_of(username).await?;
        let roles = self.roles_of(username).await?;
        Ok(Some(Subject {
            username: username.to_owned(),
            groups: groups.into_iter().map(|g| g.name).collect(),
            roles: roles.into_iter().map(|r| r.name).collect(),
        }))
    }

    /// The second factors `username` can complete now, for [`crate::policy::AccessRequest`]'s
    /// `mfa_available`: an active TOTP, a WebAuthn authenticator, unused recovery codes (a fallback,
    /// counted only next to TOTP or WebAuthn). [`Error::NotFound`] for an unknown user.
    pub async fn mfa_available(&self, username: &str) -> Result<Vec<MfaMethod>, Error> {
        let user_id = self.user_id(username).await?;
        let factors = self.list_factors(user_id).await?;
        let mut methods = Vec::new();
        if factors.totp {
            methods.push(MfaMethod::Totp);
        }
        if !factors.webauthn.is_empty() {
            methods.push(MfaMethod::WebAuthn);
        }
        if factors.recovery_codes_left > 0 && factors.has_second_factor() {
            methods.push(MfaMethod::RecoveryCode);
        }
        Ok(methods)
    }

    /// The policy generation: bumped by every change to rules, policies, assignments or SP access
    /// requirements. Poll it and call [`Directory::load_policy_set`] when it moved.
    pub async fn policy_generation(&self) -> Result<u64, Error> {
        generation::POLICY.read(&self.pool).await
    }

    /// Everything the decision depends on, compiled. The generation is read first, so a change racing
    /// the load shows up as a newer generation at the next poll rather than being missed.
    pub async fn load_policy_set(&self) -> Result<PolicySet, Error> {
        let generation = self.policy_generation().await?;
        let data = PolicyData {
            ip_rules: self
                .list_ip_rules()
                .await?
                .into_iter()
                .map(|(r, _)| r)
                .collect(),
            policies: self
                .list_policies()
                .await?
                .into_iter()
                .map(|(p, _)| p)
                .collect(),
            assignments: self
                .list_policy_assignments()
                .await?
                .into_iter()
                .map(|(a, _)| a)
                .collect(),
            sp_requirements: self.list_sp_access().await?,
        };
        PolicySet::build(data, generation)
            .map_err(|e| Error::CorruptRow(format!("stored access policy: {e}")))
    }

    /// All IP rules, by name, with their owner.
    pub async fn list_ip_rules(&self) -> Result<Vec<(IpRule, ManagedBy)>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {RULE_COLUMNS} FROM ip_rules ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(rule_from_row).collect()
    }

    /// One IP rule by name.
    pub async fn get_ip_rule(&self, name: &str) -> Result<Option<(IpRule, ManagedBy)>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {RULE_COLUMNS} FROM ip_rules WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(rule_from_row).transpose()
    }

    /// Adds an IP rule made from the CLI. Errors: [`Error::Policy`] (invalid rule, or a role, group or
    /// user it names does not exist), [`Error::AlreadyExists`].
    pub async fn add_ip_rule(&self, rule: &IpRule) -> Result<(), Error> {
        rule.validate()?;
        self.check_rule_targets(rule).await?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        insert_rule(&mut tx, rule, ManagedBy::Cli).await?;
        generation::POLICY.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// Removes an IP rule made from the CLI. Errors: [`Error::NotFound`], [`Error::ManagedByConfig`].
    pub async fn remove_ip_rule(&self, name: &str) -> Result<(), Error> {
        match self.get_ip_rule(name).await? {
            None => return Err(rule_not_found(name)),
            Some((_, ManagedBy::Config)) => {
                return Err(Error::ManagedByConfig(Item::IpRule(name.to_owned())))
            }
            Some((_, ManagedBy::Cli)) => {}
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let result = sqlx::query("DELETE FROM ip_rules WHERE name = $1 AND source = 'cli'")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        touched_or(&result, || rule_not_found(name))?;
        generation::POLICY.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// All security policies, by name, with their owner.
    pub async fn list_policies(&self) -> Result<Vec<(SecurityPolicy, ManagedBy)>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM security_policies ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(policy_from_row).collect()
    }

    /// One policy by name.
    pub async fn get_policy(
        &self,
        name: &str,
    ) -> Result<Option<(SecurityPolicy, ManagedBy)>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM security_policies WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(policy_from_row).transpose()
    }

    /// Adds a policy made from the CLI. When it is marked default, the previous CLI-made default stops
    /// being one (in the same transaction). Errors: [`Error::Policy`], [`Error::AlreadyExists`],
    /// [`Error::ManagedByConfig`] (the current default is declared in tessera.toml).
    pub async fn add_policy(&self, policy: &SecurityPolicy) -> Result<(), Error> {
        policy.validate()?;
        if policy.is_default {
            self.check_default_is_ours(&policy.name).await?;
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        if policy.is_default {
            clear_default(&mut tx).await?;
        }
        insert_policy(&mut tx, policy, ManagedBy::Cli).await?;
        generation::POLICY.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// Replaces every setting of a CLI-made policy (found by `policy.name`); its assignments stay.
    /// Errors: [`Error::Policy`], [`Error::NotFound`], [`Error::ManagedByConfig`].
    pub async fn update_policy(&self, policy: &SecurityPolicy) -> Result<(), Error> {
        policy.validate()?;
        match self.get_policy(&policy.name).await? {
            None => return Err(policy_not_found(&policy.name)),
            Some((_, ManagedBy::Config)) => {
                return Err(Error::ManagedByConfig(Item::Policy(policy.name.clone())))
            }
            Some((_, ManagedBy::Cli)) => {}
        }
        if policy.is_default {
            self.check_default_is_ours(&policy.name).await?;
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        if policy.is_default {
            clear_default(&mut tx).await?;
        }
        if !update_policy_row(&mut tx, policy).await? {
            return Err(policy_not_found(&policy.name));
        }
        generation::POLICY.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// Removes a CLI-made policy with its assignments, which are returned (their users fall back to the
    /// next assignment or the default). Errors: [`Error::NotFound`], [`Error::ManagedByConfig`].
    pub async fn remove_policy(&self, name: &str) -> Result<Vec<PolicyAssignment>, Error> {
        match self.get_policy(name).await? {
            None => return Err(policy_not_found(name)),
            Some((_, ManagedBy::Config)) => {
                return Err(Error::ManagedByConfig(Item::Policy(name.to_owned())))
            }
            Some((_, ManagedBy::Cli)) => {}
        }
        let removed: Vec<PolicyAssignment> = self
            .list_policy_assignments()
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .filter(|a| a.policy == name)
            .collect();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Explicitly, not only by ON DELETE CASCADE, so SQLite connections without foreign keys agree.
        sqlx::query(
            "DELETE FROM policy_assignments WHERE policy_id IN \
             (SELECT id FROM security_policies WHERE name = $1)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let result =
            sqlx::query("DELETE FROM security_policies WHERE name = $1 AND source = 'cli'")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        touched_or(&result, || policy_not_found(name))?;
        generation::POLICY.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(removed)
    }

    /// All assignments with their owner, by target.
    pub async fn list_policy_assignments(
        &self,
    ) -> Result<Vec<(PolicyAssignment, ManagedBy)>, Error> {
        let rows = sqlx::query(
            "SELECT a.target_kind AS target_kind, a.target_name AS target_name, \
             a.priority AS priority, a.source AS source, p.name AS policy \
             FROM policy_assignments a JOIN security_policies p ON p.id = a.policy_id \
             ORDER BY a.target_kind, a.target_name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(assignment_from_row).collect()
    }

    /// Assigns a policy to a user, group or role from the CLI, replacing the target's CLI-made
    /// assignment if any. Errors: [`Error::Policy`] (unknown user, group or role), [`Error::NotFound`]
    /// (unknown policy), [`Error::ManagedByConfig`] (the target's assignment is declared).
    pub async fn assign_policy(&self, assignment: &PolicyAssignment) -> Result<(), Error> {
        let item = Item::Assignment(assignment.target.clone());
        policy::model::check_name(assignment.target.name()).map_err(|reason| {
            policy::Error::Invalid {
                item: item.clone(),
                reason,
            }
        })?;
        if self.get_policy(&assignment.policy).await?.is_none() {
            return Err(policy_not_found(&assignment.policy));
        }
        self.check_names_exist(
            &item,
            assignment.target.target_kind(),
            std::slice::from_ref(&assignment.target.name().to_owned()),
        )
        .await?;
        if self.assignment_owner(&assignment.target).await? == Some(ManagedBy::Config) {
            return Err(Error::ManagedByConfig(item));
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        upsert_assignment(&mut tx, assignment, ManagedBy::Cli).await?;
        generation::POLICY.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// Removes the CLI-made assignment of a target; whether there was one. Errors:
    /// [`Error::ManagedByConfig`].
    pub async fn unassign_policy(&self, target: &AssignmentTarget) -> Result<bool, Error> {
        match self.assignment_owner(target).await? {
            None => return Ok(false),
            Some(ManagedBy::Config) => {
                return Err(Error::ManagedByConfig(Item::Assignment(target.clone())))
            }
            Some(ManagedBy::Cli) => {}
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let result = sqlx::query(
            "DELETE FROM policy_assignments WHERE target_kind = $1 AND target_name = $2 \
             AND source = 'cli'",
        )
        .bind(target.kind())
        .bind(target.name())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        generation::POLICY.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(touched(&result))
    }

    /// Sets what an SP requires on top of the user's rules and policy; an empty requirement removes
    /// it. Errors: [`Error::Policy`], [`Error::NotFound`] (unknown SP).
    pub async fn set_sp_access(&self, entity_id: &str, req: &SpRequirement) -> Result<(), Error> {
        req.validate(entity_id)?;
        let sp_id = self
            .sp_id_of(entity_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: EntryKind::ServiceProvider,
                name: entity_id.to_owned(),
            })?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        if req.is_empty() {
            sqlx::query("DELETE FROM sp_access WHERE sp_id = $1")
                .bind(sp_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        } else {
            let min = req.min.unwrap_or_default();
            sqlx::query(
                "INSERT INTO sp_access (sp_id, ip_ranges, require_mfa, mfa_within_secs, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sp_id) DO UPDATE SET \
                 ip_ranges = excluded.ip_ranges, require_mfa = excluded.require_mfa, \
                 mfa_within_secs = excluded.mfa_within_secs, updated_at = excluded.updated_at",
            )
            .bind(sp_id)
            .bind(req.ip_ranges.as_ref().map(to_json).transpose()?)
            .bind(i64::from(min.mfa))
            .bind(min.mfa_within_secs.map(db_secs))
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        generation::POLICY.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// What an SP requires; `Ok(None)` when it requires nothing extra or does not exist.
    pub async fn get_sp_access(&self, entity_id: &str) -> Result<Option<SpRequirement>, Error> {
        let row = sqlx::query(
            "SELECT a.ip_ranges AS ip_ranges, a.require_mfa AS require_mfa, \
             a.mfa_within_secs AS mfa_within_secs FROM sp_access a \
             JOIN service_providers s ON s.id = a.sp_id WHERE s.entity_id = $1",
        )
        .bind(entity_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| sp_access_from_row(&r, entity_id)).transpose()
    }

    /// Every SP's access requirements, by entityID.
    async fn list_sp_access(&self) -> Result<BTreeMap<String, SpRequirement>, Error> {
        let rows = sqlx::query(
            "SELECT s.entity_id AS entity_id, a.ip_ranges AS ip_ranges, \
             a.require_mfa AS require_mfa, a.mfa_within_secs AS mfa_within_secs \
             FROM sp_access a JOIN service_providers s ON s.id = a.sp_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut out = BTreeMap::new();
        for row in &rows {
            let entity_id: String = row.try_get("entity_id").map_err(db_error)?;
            let req = sp_access_from_row(row, &entity_id)?;
            out.insert(entity_id, req);
        }
        Ok(out)
    }

    /// Reconciles the rules and policies declared in tessera.toml, in one transaction: declared items
    /// are created or updated, previously declared items no longer in the file are removed, CLI-made
    /// items are left alone. Validation comes first and nothing is written when it fails: invalid
    /// values, duplicate names, a name already used by a CLI-made rule or policy
    /// ([`Error::ManagedByCli`]), a role, group or user that does not exist, two defaults.
    pub async fn apply_declarations(
        &self,
        rules: &[IpRuleDecl],
        policies: &[PolicyDecl],
    ) -> Result<DeclarationsApplied, Error> {
        policy::validate_declarations(rules, policies)?;
        let existing_rules = self.list_ip_rules().await?;
        let existing_policies = self.list_policies().await?;
        let existing_assignments = self.list_policy_assignments().await?;
        let cli_rule_names: HashSet<&str> = existing_rules
            .iter()
            .filter(|(_, s)| *s == ManagedBy::Cli)
            .map(|(r, _)| r.name.as_str())
            .collect();
        let cli_policy_names: HashSet<&str> = existing_policies
            .iter()
            .filter(|(_, s)| *s == ManagedBy::Cli)
            .map(|(p, _)| p.name.as_str())
            .collect();
        let cli_targets: HashSet<&AssignmentTarget> = existing_assignments
            .iter()
            .filter(|(_, s)| *s == ManagedBy::Cli)
            .map(|(a, _)| &a.target)
            .collect();
        let declared_policies: Vec<SecurityPolicy> =
            policies.iter().map(PolicyDecl::policy).collect();
        let declared_assignments: Vec<PolicyAssignment> =
            policies.iter().flat_map(PolicyDecl::assignments).collect();
        for rule in rules {
            if cli_rule_names.contains(rule.name.as_str()) {
                return Err(Error::ManagedByCli(Item::IpRule(rule.name.clone())));
            }
            self.check_rule_targets(rule).await?;
        }
        for p in &declared_policies {
            if cli_policy_names.contains(p.name.as_str()) {
                return Err(Error::ManagedByCli(Item::Policy(p.name.clone())));
            }
        }
        for a in &declared_assignments {
            if cli_targets.contains(&a.target) {
                return Err(Error::ManagedByCli(Item::Assignment(a.target.clone())));
            }
            self.check_names_exist(
                &Item::Policy(a.policy.clone()),
                a.target.target_kind(),
                std::slice::from_ref(&a.target.name().to_owned()),
            )
            .await?;
        }
        // The whole result must be consistent too (e.g. a declared default next to a CLI-made one).
        let merged = PolicyData {
            ip_rules: existing_rules
                .iter()
                .filter(|(_, s)| *s == ManagedBy::Cli)
                .map(|(r, _)| r.clone())
                .chain(rules.iter().cloned())
                .collect(),
            policies: existing_policies
                .iter()
                .filter(|(_, s)| *s == ManagedBy::Cli)
                .map(|(p, _)| p.clone())
                .chain(declared_policies.iter().cloned())
                .collect(),
            assignments: existing_assignments
                .iter()
                .filter(|(a, s)| {
                    *s == ManagedBy::Cli
                        && (cli_policy_names.contains(a.policy.as_str())
                            || policies.iter().any(|p| p.name == a.policy))
                })
                .map(|(a, _)| a.clone())
                .chain(declared_assignments.iter().cloned())
                .collect(),
            sp_requirements: BTreeMap::new(),
        };
        merged.validate()?;

        let declared_rule_names: HashSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let declared_policy_names: HashSet<&str> =
            policies.iter().map(|p| p.name.as_str()).collect();
        let mut report = DeclarationsApplied {
            ip_rules: rules.len(),
            policies: declared_policies.len(),
            assignments: declared_assignments.len(),
            ..DeclarationsApplied::default()
        };
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for (rule, source) in &existing_rules {
            if *source == ManagedBy::Config && !declared_rule_names.contains(rule.name.as_str()) {
                sqlx::query("DELETE FROM ip_rules WHERE name = $1 AND source = 'config'")
                    .bind(&rule.name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                report.removed_ip_rules.push(rule.name.clone());
            }
        }
        for rule in rules {
            let updated = sqlx::query(
                "UPDATE ip_rules SET ranges = $1, scope_kind = $2, scope_names = $3, updated_at = $4 \
                 WHERE name = $5 AND source = 'config'",
            )
            .bind(to_json(&rule.ranges)?)
            .bind(rule.scope.kind())
            .bind(to_json(rule.scope.names())?)
            .bind(now())
            .bind(&rule.name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if !touched(&updated) {
                insert_rule(&mut tx, rule, ManagedBy::Config).await?;
            }
        }
        sqlx::query("DELETE FROM policy_assignments WHERE source = 'config'")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for (p, source) in &existing_policies {
            if *source == ManagedBy::Config && !declared_policy_names.contains(p.name.as_str()) {
                sqlx::query(
                    "DELETE FROM policy_assignments WHERE policy_id IN \
                     (SELECT id FROM security_policies WHERE name = $1)",
                )
                .bind(&p.name)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                sqlx::query("DELETE FROM security_policies WHERE name = $1 AND source = 'config'")
                    .bind(&p.name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                report.removed_policies.push(p.name.clone());
            }
        }
        // Clear declared defaults first so moving the default between policies never has two at once.
        sqlx::query("UPDATE security_policies SET is_default = 0 WHERE source = 'config'")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for p in &declared_policies {
            if !update_policy_config_row(&mut tx, p).await? {
                insert_policy(&mut tx, p, ManagedBy::Config).await?;
            }
        }
        for a in &declared_assignments {
            upsert_assignment(&mut tx, a, ManagedBy::Config).await?;
        }
        generation::POLICY.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(report)
    }

    /// Checks that every role, group or user an IP rule names exists.
    async fn check_rule_targets(&self, rule: &IpRule) -> Result<(), Error> {
        if let Some(kind) = rule.scope.target_kind() {
            self.check_names_exist(&Item::IpRule(rule.name.clone()), kind, rule.scope.names())
                .await?;
        }
        Ok(())
    }

    /// [`policy::Error::UnknownTarget`] for the first of `names` that is not a `kind` in the directory.
    async fn check_names_exist(
        &self,
        item: &Item,
        kind: TargetKind,
        names: &[String],
    ) -> Result<(), Error> {
        let (table, column) = match kind {
            TargetKind::User => ("users", "username"),
            TargetKind::Group => ("groups", "name"),
            TargetKind::Role => ("roles", "name"),
            TargetKind::Policy => ("security_policies", "name"),
        };
        for name in names {
            let row = sqlx::query(&format!("SELECT {column} FROM {table} WHERE {column} = $1"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
            if row.is_none() {
                return Err(policy::Error::UnknownTarget {
                    item: item.clone(),
                    kind,
                    name: name.clone(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Refuses to make `name` the default while a declared policy is the default.
    async fn check_default_is_ours(&self, name: &str) -> Result<(), Error> {
        let current = self
            .list_policies()
            .await?
            .into_iter()
            .find(|(p, _)| p.is_default && p.name != name);
        match current {
            Some((p, ManagedBy::Config)) => Err(Error::ManagedByConfig(Item::Policy(p.name))),
            _ => Ok(()),
        }
    }

    /// Who owns the assignment of `target`, if it has one.
    async fn assignment_owner(
        &self,
        target: &AssignmentTarget,
    ) -> Result<Option<ManagedBy>, Error> {
        let row = sqlx::query(
            "SELECT source FROM policy_assignments WHERE target_kind = $1 AND target_name = $2",
        )
        .bind(target.kind())
        .bind(target.name())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        match row {
            Some(r) => {
                let source: String = r.try_get("source").map_err(db_error)?;
                Ok(Some(ManagedBy::parse(&source)?))
            }
            None => Ok(None),
        }
    }

    /// The id of an SP by entityID.
    async fn sp_id_of(&self, entity_id: &str) -> Result<Option<i64>, Error> {
        let row = sqlx::query("SELECT id FROM service_providers WHERE entity_id = $1")
            .bind(entity_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| r.try_get("id").map_err(db_error)).transpose()
    }
}

/// Clears the default flag of every CLI-made policy inside `tx` (a new CLI default replaces it).
async fn clear_default(tx: &mut Transaction<'_, Any>) -> Result<(), Error> {
    sqlx::query("UPDATE security_policies SET is_default = 0 WHERE source = 'cli'")
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Replaces the settings of a declared policy inside `tx`; whether it existed as declared.
async fn update_policy_config_row(
    tx: &mut Transaction<'_, Any>,
    p: &SecurityPolicy,
) -> Result<bool, Error> {
    let exists =
        sqlx::query("SELECT id FROM security_policies WHERE name = $1 AND source = 'config'")
            .bind(&p.name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
    if exists.is_none() {
        return Ok(false);
    }
    update_policy_row(tx, p).await
}
