//! Storage of conditional app assignment rules ([`AssignmentRule`]), the generation counter that tells
//! a server when to rebuild its compiled [`RuleSet`], and the combined answer to "may this user use
//! this app": directly assigned (`app_assignments`) OR granted by an enabled rule.
//!
//! Every change validates first (the rule itself, then inside the transaction that the groups, roles
//! and SPs it names exist) and writes rule, targets and generation in one transaction, so nothing is
//! half-applied.
//!
//! Rules declared in tessera.toml are kept apart from CLI-made ones ([`ManagedBy`]), as for the access
//! policy: [`Directory::apply_assignment_declarations`] reconciles the declared ones at start and
//! refuses to touch CLI-made ones; the other changes refuse to touch declared ones.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{
    db_error, generation, is_unique_violation, new_id, now, touched, touched_or, Directory,
    EntryKind, Error, ManagedBy, User,
};
use crate::policy::{self, AssignmentRule, Condition, Item, RuleSet, TargetKind, UserFacts};

/// Why a user may use an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppAccess {
    /// The SP's entityID.
    pub entity_id: String,
    /// The SP's name as shown to users.
    pub display_name: String,
    /// Whether the SP is enabled (a disabled SP is listed but reachable by no one).
    pub enabled: bool,
    /// Assigned to the user directly.
    pub direct: bool,
    /// The enabled rules granting it, by name (sorted).
    pub rules: Vec<String>,
}

/// Why one app is granted, for the SSO check and its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Assigned to the user directly.
    Direct,
    /// Granted by the enabled rule of this name.
    Rule(String),
}

/// The error for an unknown rule.
fn rule_not_found(name: &str) -> Error {
    Error::NotFound {
        kind: EntryKind::AssignmentRule,
        name: name.to_owned(),
    }
}

/// Refuses a rule naming a group, role or SP that does not exist (checked inside `tx`, so the rule
/// cannot be stored next to a concurrent removal that the check missed on another connection's view).
async fn check_references(
    tx: &mut Transaction<'_, Any>,
    rule: &AssignmentRule,
) -> Result<(), Error> {
    let item = || Item::AssignmentRule(rule.name.clone());
    let groups = rule.condition.groups().map(|g| {
        (
            TargetKind::Group,
            "SELECT 1 AS x FROM groups WHERE name = $1",
            g,
        )
    });
    let roles = rule.condition.roles().map(|r| {
        (
            TargetKind::Role,
            "SELECT 1 AS x FROM roles WHERE name = $1",
            r,
        )
    });
    let checks: Vec<_> = groups.chain(roles).collect();
    for (kind, sql, name) in checks {
        let row = sqlx::query(sql)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
        if row.is_none() {
            return Err(policy::Error::UnknownTarget {
                item: item(),
                kind,
                name: name.to_owned(),
            }
            .into());
        }
    }
    for entity_id in &rule.targets {
        let row = sqlx::query("SELECT 1 AS x FROM service_providers WHERE entity_id = $1")
            .bind(entity_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
        if row.is_none() {
            return Err(policy::Error::Invalid {
                item: item(),
                reason: format!("names unknown service provider {entity_id:?}"),
            }
            .into());
        }
    }
    Ok(())
}

/// Writes the targets of rule `rule_id` inside `tx`.
async fn insert_targets(
    tx: &mut Transaction<'_, Any>,
    rule_id: i64,
    targets: &[String],
) -> Result<(), Error> {
    for entity_id in targets {
        sqlx::query("INSERT INTO assignment_rule_targets (rule_id, entity_id) VALUES ($1, $2)")
            .bind(rule_id)
            .bind(entity_id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// Reads the stored owner of a rule.
fn managed_by(source: &str) -> Result<ManagedBy, Error> {
    match source {
        "cli" => Ok(ManagedBy::Cli),
        "config" => Ok(ManagedBy::Config),
        other => Err(Error::CorruptRow(format!(
            "unknown assignment rule source {other:?}"
        ))),
    }
}

/// The id of the CLI-made rule `name` inside `tx`. Errors: [`Error::NotFound`],
/// [`Error::ManagedByConfig`].
async fn cli_rule_id(tx: &mut Transaction<'_, Any>, name: &str) -> Result<i64, Error> {
    let row = sqlx::query("SELECT id, source FROM assignment_rules WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
    let Some(row) = row else {
        return Err(rule_not_found(name));
    };
    let source: String = row.try_get("source").map_err(db_error)?;
    match managed_by(&source)? {
        ManagedBy::Cli => row.try_get("id").map_err(db_error),
        ManagedBy::Config => Err(Error::ManagedByConfig(Item::AssignmentRule(
            name.to_owned(),
        ))),
    }
}

/// Replaces condition, enabled flag and targets of rule `id` inside `tx`.
async fn replace_rule(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    rule: &AssignmentRule,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE assignment_rules SET condition = $1, enabled = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(condition_json(&rule.condition)?)
    .bind(i64::from(rule.enabled))
    .bind(now())
    .bind(id)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    sqlx::query("DELETE FROM assignment_rule_targets WHERE rule_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    insert_targets(tx, id, &rule.targets).await
}

/// The JSON text of a condition.
fn condition_json(condition: &Condition) -> Result<String, Error> {
    serde_json::to_string(condition).map_err(|e| Error::CorruptRow(e.to_string()))
}

/// Reads a rule row (without its targets): id and rule.
fn rule_from_row(row: &AnyRow) -> Result<(i64, AssignmentRule), Error> {
    let id: i64 = row.try_get("id").map_err(db_error)?;
    let name: String = row.try_get("name").map_err(db_error)?;
    let condition: String = row.try_get("condition").map_err(db_error)?;
    let enabled: i64 = row.try_get("enabled").map_err(db_error)?;
    let condition = serde_json::from_str(&condition)
        .map_err(|e| Error::CorruptRow(format!("assignment rule {name:?}: {e}")))?;
    Ok((
        id,
        AssignmentRule {
            name,
            condition,
            targets: Vec::new(),
            enabled: enabled != 0,
        },
    ))
}

impl Directory {
    /// The assignment-rule generation: bumped by every change to the rules. Poll it and call
    /// [`Directory::load_rule_set`] when it moved.
    pub async fn assignment_rule_generation(&self) -> Result<u64, Error> {
        generation::ASSIGNMENT_RULE.read(&self.pool).await
    }

    /// Every rule compiled. The generation is read first, so a change racing the load shows up as a
    /// newer generation at the next poll rather than being missed.
    pub async fn load_rule_set(&self) -> Result<RuleSet, Error> {
        let generation = self.assignment_rule_generation().await?;
        let rules = self.list_assignment_rules().await?;
        RuleSet::build(&rules, generation)
            .map_err(|e| Error::CorruptRow(format!("stored assignment rules: {e}")))
    }

    /// All rules, by name, with their targets (sorted).
    pub async fn list_assignment_rules(&self) -> Result<Vec<AssignmentRule>, Error> {
        let rows =
            sqlx::query("SELECT id, name, condition, enabled FROM assignment_rules ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        let targets = sqlx::query(
            "SELECT rule_id, entity_id FROM assignment_rule_targets ORDER BY rule_id, entity_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut by_rule: HashMap<i64, Vec<String>> = HashMap::new();
        for t in &targets {
            let rule_id: i64 = t.try_get("rule_id").map_err(db_error)?;
            let entity_id: String = t.try_get("entity_id").map_err(db_error)?;
            by_rule.entry(rule_id).or_default().push(entity_id);
        }
        rows.iter()
            .map(|row| {
                let (id, mut rule) = rule_from_row(row)?;
                rule.targets = by_rule.remove(&id).unwrap_or_default();
                Ok(rule)
            })
            .collect()
    }

    /// One rule by name.
    pub async fn get_assignment_rule(&self, name: &str) -> Result<Option<AssignmentRule>, Error> {
        let row = sqlx::query(
            "SELECT id, name, condition, enabled FROM assignment_rules WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (id, mut rule) = rule_from_row(&row)?;
        let targets = sqlx::query(
            "SELECT entity_id FROM assignment_rule_targets WHERE rule_id = $1 ORDER BY entity_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rule.targets = targets
            .iter()
            .map(|t| t.try_get("entity_id").map_err(db_error))
            .collect::<Result<_, _>>()?;
        Ok(Some(rule))
    }

    /// Adds a rule. Errors: [`Error::Policy`] (invalid rule, or it names a group, role or SP that does
    /// not exist), [`Error::AlreadyExists`]. Nothing is stored on error.
    pub async fn add_assignment_rule(&self, rule: &AssignmentRule) -> Result<(), Error> {
        rule.validate()?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        check_references(&mut tx, rule).await?;
        let id = new_id();
        let at = now();
        sqlx::query(
            "INSERT INTO assignment_rules (id, name, condition, enabled, source, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, 'cli', $5, $5)",
        )
        .bind(id)
        .bind(&rule.name)
        .bind(condition_json(&rule.condition)?)
        .bind(i64::from(rule.enabled))
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::AlreadyExists(Item::AssignmentRule(rule.name.clone()))
            } else {
                db_error(e)
            }
        })?;
        insert_targets(&mut tx, id, &rule.targets).await?;
        generation::ASSIGNMENT_RULE.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// Replaces the condition, targets and enabled flag of the CLI-made rule named `rule.name`. Errors:
    /// [`Error::Policy`], [`Error::NotFound`], [`Error::ManagedByConfig`]. Nothing is changed on error.
    pub async fn update_assignment_rule(&self, rule: &AssignmentRule) -> Result<(), Error> {
        rule.validate()?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        check_references(&mut tx, rule).await?;
        let id = cli_rule_id(&mut tx, &rule.name).await?;
        replace_rule(&mut tx, id, rule).await?;
        generation::ASSIGNMENT_RULE.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// Who manages the rule named `name`, if it exists.
    pub async fn assignment_rule_owner(&self, name: &str) -> Result<Option<ManagedBy>, Error> {
        let row = sqlx::query("SELECT source FROM assignment_rules WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| {
            let source: String = r.try_get("source").map_err(db_error)?;
            managed_by(&source)
        })
        .transpose()
    }

    /// Makes the rules declared in tessera.toml exactly `rules`: creates and updates them, and removes
    /// declared rules no longer declared, in one transaction. Errors: [`Error::Policy`] (an invalid rule,
    /// an unknown group, role or SP), [`Error::ManagedByCli`] (the name is taken by a CLI-made rule).
    pub async fn apply_assignment_declarations(
        &self,
        rules: &[AssignmentRule],
    ) -> Result<(), Error> {
        for rule in rules {
            rule.validate()?;
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let rows = sqlx::query("SELECT id, name, source FROM assignment_rules")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let mut existing: HashMap<String, (i64, ManagedBy)> = HashMap::new();
        for row in &rows {
            let source: String = row.try_get("source").map_err(db_error)?;
            existing.insert(
                row.try_get("name").map_err(db_error)?,
                (row.try_get("id").map_err(db_error)?, managed_by(&source)?),
            );
        }
        for rule in rules {
            check_references(&mut tx, rule).await?;
            match existing.remove(&rule.name) {
                Some((_, ManagedBy::Cli)) => {
                    return Err(Error::ManagedByCli(Item::AssignmentRule(rule.name.clone())))
                }
                Some((id, ManagedBy::Config)) => replace_rule(&mut tx, id, rule).await?,
                None => {
                    let id = new_id();
                    let at = now();
                    sqlx::query(
                        "INSERT INTO assignment_rules (id, name, condition, enabled, source, \
                         created_at, updated_at) VALUES ($1, $2, $3, $4, 'config', $5, $5)",
                    )
                    .bind(id)
                    .bind(&rule.name)
                    .bind(condition_json(&rule.condition)?)
                    .bind(i64::from(rule.enabled))
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    insert_targets(&mut tx, id, &rule.targets).await?;
                }
            }
        }
        // What is left and declared is no longer in the file.
        for (id, source) in existing.into_values() {
            if source == ManagedBy::Config {
                sqlx::query("DELETE FROM assignment_rule_targets WHERE rule_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                sqlx::query("DELETE FROM assignment_rules WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
        }
        generation::ASSIGNMENT_RULE.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// Enables or disables a CLI-made rule; whether it changed. Errors: [`Error::NotFound`],
    /// [`Error::ManagedByConfig`].
    pub async fn set_assignment_rule_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let id = cli_rule_id(&mut tx, name).await?;
        let result = sqlx::query(
            "UPDATE assignment_rules SET enabled = $1, updated_at = $2 WHERE id = $3 \
             AND enabled <> $1",
        )
        .bind(i64::from(enabled))
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if !touched(&result) {
            return Ok(false);
        }
        generation::ASSIGNMENT_RULE.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Removes a CLI-made rule with its targets. Errors: [`Error::NotFound`],
    /// [`Error::ManagedByConfig`].
    pub async fn remove_assignment_rule(&self, name: &str) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let id = cli_rule_id(&mut tx, name).await?;
        // Explicitly, not only by ON DELETE CASCADE, so SQLite connections without foreign keys agree.
        sqlx::query("DELETE FROM assignment_rule_targets WHERE rule_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let result = sqlx::query("DELETE FROM assignment_rules WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        touched_or(&result, || rule_not_found(name))?;
        generation::ASSIGNMENT_RULE.bump(&mut tx).await?;
        tx.commit().await.map_err(db_error)
    }

    /// What assignment rules can see of `user`: every attribute value (built-in columns and extra
    /// attributes), group names and role names; two queries.
    pub async fn user_facts(&self, user: &User) -> Result<UserFacts, Error> {
        let names = |sql: &'static str| async move {
            let rows = sqlx::query(sql)
                .bind(user.id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
            rows.iter()
                .map(|r| r.try_get::<String, _>("name").map_err(db_error))
                .collect::<Result<Vec<_>, Error>>()
        };
        let groups = names(
            "SELECT g.name AS name FROM groups g JOIN user_groups m ON m.group_id = g.id \
             WHERE m.user_id = $1",
        )
        .await?;
        let roles = names(
            "SELECT r.name AS name FROM roles r JOIN user_roles m ON m.role_id = r.id \
             WHERE m.user_id = $1",
        )
        .await?;
        let builtin: Vec<(&str, Vec<String>)> =
            ["username", "status", "email", "display_name", "department"]
                .into_iter()
                .map(|n| (n, user.attribute_values(n)))
                .collect();
        let attributes = builtin.iter().map(|(n, v)| (*n, v.as_slice())).chain(
            user.attributes
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice())),
        );
        Ok(UserFacts::new(attributes, groups, roles))
    }

    /// Why `user` may use `entity_id`: a direct assignment (checked first, one query), else an enabled
    /// rule of `rules`; `None` when neither. Loads the user's facts only when some rule names the SP.
    pub async fn app_grant(
        &self,
        user: &User,
        entity_id: &str,
        rules: &RuleSet,
    ) -> Result<Option<Grant>, Error> {
        if self.is_assigned(&user.username, entity_id).await? {
            return Ok(Some(Grant::Direct));
        }
        if !rules.names_sp(entity_id) {
            return Ok(None);
        }
        let facts = self.user_facts(user).await?;
        Ok(rules
            .grant_for(&facts, entity_id)
            .map(|name| Grant::Rule(name.to_owned())))
    }

    /// Every SP `user` may use (directly assigned or granted by an enabled rule of `rules`), by entityID,
    /// with the reasons. SPs a rule names that no longer exist are left out.
    pub async fn app_access(&self, user: &User, rules: &RuleSet) -> Result<Vec<AppAccess>, Error> {
        let direct = self.apps_of(&user.username).await?;
        let facts = self.user_facts(user).await?;
        let granted = rules.grants(&facts);
        let mut out: BTreeMap<String, AppAccess> = BTreeMap::new();
        for sp in direct {
            out.insert(
                sp.entity_id.clone(),
                AppAccess {
                    entity_id: sp.entity_id,
                    display_name: sp.display_name,
                    enabled: sp.settings.enabled,
                    direct: true,
                    rules: Vec::new(),
                },
            );
        }
        for (entity_id, rule_names) in granted {
            let names = rule_names.into_iter().map(str::to_owned).collect();
            if let Some(access) = out.get_mut(entity_id) {
                access.rules = names;
                continue;
            }
            let Some(sp) = self.get_sp(entity_id).await? else {
                continue;
            };
            out.insert(
                sp.entity_id.clone(),
                AppAccess {
                    entity_id: sp.entity_id,
                    display_name: sp.display_name,
                    enabled: sp.settings.enabled,
                    direct: false,
                    rules: names,
                },
            );
        }
        Ok(out.into_values().collect())
    }
}
