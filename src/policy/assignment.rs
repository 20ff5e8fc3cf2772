//! Conditional app assignment: rules that grant service providers to users by their attributes, groups
//! and roles ("department is Sales or group is sales-emea → CRM and Mail").
//!
//! A rule is evaluated against the user as they are at the moment of the check, so it applies to
//! existing and future users alike and a changed group takes effect at the next SSO; nothing is
//! materialised per user and there is no batch job.
//!
//! Semantics (also in `docs/app-assignment.md`):
//!
//! - A [`Condition`] is an OR of clauses, a [`Clause`] an AND of predicates, so any boolean condition
//!   over the predicates can be written (in disjunctive normal form).
//! - [`Predicate::Attribute`] holds when one of the user's values of the attribute equals one of the
//!   listed values. Attribute names are compared exactly; values case-insensitively (Unicode lower
//!   case), without trimming. `department=Sales` matches "sales" and "SALES", not "Sales ".
//! - [`Predicate::Group`] / [`Predicate::Role`] hold when the user is a member of the group / holds the
//!   role; names are compared exactly, as the directory stores them.
//! - A disabled rule grants nothing. Each SP is granted once however many rules grant it.
//!
//! [`RuleSet`] is the compiled, immutable form (shared behind an `Arc` and rebuilt when the directory's
//! assignment-rule generation moves). It indexes every clause under the keys of one of its predicates
//! (an "anchor"), so evaluating a user only looks at the clauses anchored on one of the user's own
//! facts instead of at every rule: the cost grows with what the user has and what matches, not with
//! the size of the rule set.
//!
//! Nothing here does IO.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Error, Item};

/// Most clauses (OR branches) in one condition.
pub const MAX_CLAUSES: usize = 64;
/// Most predicates in one clause.
pub const MAX_PREDICATES: usize = 32;
/// Most values one attribute predicate may list.
pub const MAX_VALUES: usize = 256;
/// Most SPs one rule may grant.
pub const MAX_TARGETS: usize = 256;
/// Longest attribute value a predicate may list, in characters.
pub const MAX_VALUE_CHARS: usize = 1024;

/// Attribute names that are not attributes in a condition: memberships have their own predicates.
const MEMBERSHIP_NAMES: &[&str] = &["groups", "roles"];

/// One rule: who (the condition) gets which apps (the target SPs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentRule {
    /// Unique name, how operators and the admin API refer to the rule.
    pub name: String,
    /// Whom the rule grants the targets to.
    pub condition: Condition,
    /// The SPs granted, by entityID; each exists when the rule is stored.
    pub targets: Vec<String>,
    /// A disabled rule is kept but grants nothing, so it can be switched off without losing it.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

/// Serde default of [`AssignmentRule::enabled`].
fn enabled_by_default() -> bool {
    true
}

/// An OR of clauses: the condition holds when at least one clause holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The alternatives; at least one.
    pub any: Vec<Clause>,
}

/// An AND of predicates: the clause holds when every predicate holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clause {
    /// What must all be true; at least one.
    pub all: Vec<Predicate>,
}

/// One fact about a user that a clause can require.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Predicate {
    /// One of the user's values of attribute `name` equals one of `values` (case-insensitively).
    Attribute {
        /// The attribute: a built-in one (`department`, `email`, `status`, ...) or an extra one.
        name: String,
        /// Accepted values; at least one.
        values: Vec<String>,
    },
    /// The user is a member of this group.
    Group(String),
    /// The user holds this role.
    Role(String),
}

impl Condition {
    /// A condition of a single clause (an AND of `predicates`).
    pub fn all(predicates: Vec<Predicate>) -> Self {
        Condition {
            any: vec![Clause { all: predicates }],
        }
    }

    /// A condition of one clause per predicate (an OR of `predicates`).
    pub fn any(predicates: Vec<Predicate>) -> Self {
        Condition {
            any: predicates
                .into_iter()
                .map(|p| Clause { all: vec![p] })
                .collect(),
        }
    }

    /// The groups this condition names, for checking that they exist.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.predicates().filter_map(|p| match p {
            Predicate::Group(g) => Some(g.as_str()),
            _ => None,
        })
    }

    /// The roles this condition names, for checking that they exist.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.predicates().filter_map(|p| match p {
            Predicate::Role(r) => Some(r.as_str()),
            _ => None,
        })
    }

    /// Every predicate of every clause.
    fn predicates(&self) -> impl Iterator<Item = &Predicate> {
        self.any.iter().flat_map(|c| c.all.iter())
    }

    /// Whether `facts` satisfy the condition, evaluated directly (no index): the reference semantics the
    /// compiled [`RuleSet`] must agree with, and enough for one rule.
    pub fn matches(&self, facts: &UserFacts) -> bool {
        self.any
            .iter()
            .any(|clause| clause.all.iter().all(|p| facts.satisfies(p)))
    }
}

impl Predicate {
    /// Parses the `--when` form of one predicate: `group=NAME`, `role=NAME`, `ATTRIBUTE=V1|V2|...`, or
    /// `attribute.NAME=...` for an extra attribute that is itself called `group` or `role`.
    pub fn parse(text: &str) -> Result<Predicate, String> {
        let (key, value) = text.split_once('=').ok_or_else(|| {
            format!("{text:?} is not KEY=VALUE (e.g. department=Sales, group=sales-emea)")
        })?;
        let key = key.trim();
        match key {
            "group" => Ok(Predicate::Group(value.to_owned())),
            "role" => Ok(Predicate::Role(value.to_owned())),
            _ => {
                let name = key.strip_prefix("attribute.").unwrap_or(key);
                Ok(Predicate::Attribute {
                    name: name.to_owned(),
                    values: value.split('|').map(str::to_owned).collect(),
                })
            }
        }
    }
}

/// How several `--when` conditions combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// Any one of them (OR): each `--when` is an alternative.
    Any,
    /// All of them (AND): the `--when` predicates form one clause.
    All,
}

impl Condition {
    /// The condition of the CLI's `--when` options: each text is a clause, predicates joined by `&`
    /// (`department=Sales & role=manager`, whitespace around each predicate ignored); several clauses
    /// combine as `combine` says, which must be given when there is more than one.
    pub fn from_when(whens: &[String], combine: Option<Combine>) -> Result<Condition, String> {
        if whens.is_empty() {
            return Err("give the condition with --when (e.g. --when department=Sales)".to_owned());
        }
        let clauses = whens
            .iter()
            .map(|w| {
                w.split('&')
                    .map(|p| Predicate::parse(p.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|all| Clause { all })
            })
            .collect::<Result<Vec<_>, _>>()?;
        match (clauses.len(), combine) {
            (1, _) | (_, Some(Combine::Any)) => Ok(Condition { any: clauses }),
            (_, Some(Combine::All)) => Ok(Condition::all(
                clauses.into_iter().flat_map(|c| c.all).collect(),
            )),
            (_, None) => Err(
                "several conditions given: say whether any one (--any, match = \"any\") or all \
                 (--all, match = \"all\") must hold"
                    .to_owned(),
            ),
        }
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::Attribute { name, values } => {
                if name == "group" || name == "role" {
                    write!(f, "attribute.")?;
                }
                write!(f, "{name}={}", values.join("|"))
            }
            Predicate::Group(g) => write!(f, "group={g}"),
            Predicate::Role(r) => write!(f, "role={r}"),
        }
    }
}

impl fmt::Display for Condition {
    /// `department=Sales & role=manager OR group=sales-emea`: the `--when` forms, `&` inside a clause,
    /// `OR` between clauses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, clause) in self.any.iter().enumerate() {
            if i > 0 {
                write!(f, " OR ")?;
            }
            for (j, p) in clause.all.iter().enumerate() {
                if j > 0 {
                    write!(f, " & ")?;
                }
                write!(f, "{p}")?;
            }
        }
        Ok(())
    }
}

/// A rule declared in tessera.toml (`[[assignment_rules]]`), in the CLI's terms:
///
/// ```toml
/// [[assignment_rules]]
/// name = "sales"
/// when = ["department=Sales", "group=sales-emea"]
/// match = "any"
/// sps = ["https://crm.example/metadata", "https://mail.example/metadata"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentRuleDecl {
    /// The rule's name.
    pub name: String,
    /// Conditions in the `--when` form; several need `match`.
    pub when: Vec<String>,
    /// How several `when` combine: `"any"` or `"all"`.
    #[serde(rename = "match", default)]
    pub combine: Option<Combine>,
    /// The SPs granted, by entityID.
    pub sps: Vec<String>,
    /// Whether the rule grants anything (default true).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

impl AssignmentRuleDecl {
    /// The rule declared, validated on its own (names that must exist are the directory's check).
    pub fn to_rule(&self) -> Result<AssignmentRule, Error> {
        let condition =
            Condition::from_when(&self.when, self.combine).map_err(|reason| Error::Invalid {
                item: Item::AssignmentRule(self.name.clone()),
                reason,
            })?;
        let rule = AssignmentRule {
            name: self.name.clone(),
            condition,
            targets: self.sps.clone(),
            enabled: self.enabled,
        };
        rule.validate()?;
        Ok(rule)
    }
}

/// Converts and checks tessera.toml's `[[assignment_rules]]`: each valid, no name twice.
pub fn rules_from_declarations(decls: &[AssignmentRuleDecl]) -> Result<Vec<AssignmentRule>, Error> {
    let mut names = HashSet::new();
    decls
        .iter()
        .map(|d| {
            if !names.insert(d.name.as_str()) {
                return Err(Error::Duplicate {
                    item: Item::AssignmentRule(d.name.clone()),
                });
            }
            d.to_rule()
        })
        .collect()
}

impl AssignmentRule {
    /// Checks the rule on its own: name, sizes, non-empty clauses and values, no control characters,
    /// no `groups`/`roles` attribute (use the group and role predicates), at least one target, no
    /// duplicate target. Whether the named groups, roles and SPs exist is the directory's check.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Error::Invalid {
            item: Item::AssignmentRule(self.name.clone()),
            reason,
        };
        super::model::check_name(&self.name).map_err(invalid)?;
        if self.condition.any.is_empty() {
            return Err(invalid("the condition is empty".to_owned()));
        }
        if self.condition.any.len() > MAX_CLAUSES {
            return Err(invalid(format!(
                "the condition has more than {MAX_CLAUSES} alternatives"
            )));
        }
        for clause in &self.condition.any {
            if clause.all.is_empty() {
                return Err(invalid("a clause of the condition is empty".to_owned()));
            }
            if clause.all.len() > MAX_PREDICATES {
                return Err(invalid(format!(
                    "a clause has more than {MAX_PREDICATES} predicates"
                )));
            }
            for p in &clause.all {
                check_predicate(p).map_err(invalid)?;
            }
        }
        if self.targets.is_empty() {
            return Err(invalid("the rule grants no service provider".to_owned()));
        }
        if self.targets.len() > MAX_TARGETS {
            return Err(invalid(format!(
                "the rule grants more than {MAX_TARGETS} service providers"
            )));
        }
        let mut seen = HashSet::new();
        for t in &self.targets {
            if t.is_empty() || t.chars().any(char::is_control) {
                return Err(invalid(format!("invalid service provider entityID {t:?}")));
            }
            if !seen.insert(t.as_str()) {
                return Err(invalid(format!("service provider {t:?} is listed twice")));
            }
        }
        Ok(())
    }
}

/// Checks one predicate; the reason for the operator.
fn check_predicate(p: &Predicate) -> Result<(), String> {
    match p {
        Predicate::Group(name) => {
            super::model::check_name(name).map_err(|e| format!("group name {name:?}: {e}"))
        }
        Predicate::Role(name) => {
            super::model::check_name(name).map_err(|e| format!("role name {name:?}: {e}"))
        }
        Predicate::Attribute { name, values } => {
            super::model::check_name(name).map_err(|e| format!("attribute name {name:?}: {e}"))?;
            if MEMBERSHIP_NAMES.contains(&name.as_str()) {
                let single = name.trim_end_matches('s');
                return Err(format!(
                    "{name:?} is not an attribute a condition can test; use {single}=NAME"
                ));
            }
            if values.is_empty() {
                return Err(format!("attribute {name:?} lists no value"));
            }
            if values.len() > MAX_VALUES {
                return Err(format!(
                    "attribute {name:?} lists more than {MAX_VALUES} values"
                ));
            }
            for v in values {
                if v.is_empty() {
                    return Err(format!("attribute {name:?} lists an empty value"));
                }
                if v.chars().count() > MAX_VALUE_CHARS || v.chars().any(char::is_control) {
                    return Err(format!(
                        "attribute {name:?}: a value is longer than {MAX_VALUE_CHARS} characters or \
                         contains control characters"
                    ));
                }
            }
            Ok(())
        }
    }
}

/// The comparison form of an attribute value.
fn fold(value: &str) -> String {
    value.to_lowercase()
}

/// What the rules can see of one user: attribute values, groups and roles. Built once per check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFacts {
    /// `(attribute name, folded value)` pairs.
    attributes: HashSet<(String, String)>,
    /// Group names.
    groups: HashSet<String>,
    /// Role names.
    roles: HashSet<String>,
}

impl UserFacts {
    /// Facts from the user's attribute values (`(name, values)`, built-in and extra ones alike), group
    /// names and role names.
    pub fn new<'a>(
        attributes: impl IntoIterator<Item = (&'a str, &'a [String])>,
        groups: impl IntoIterator<Item = String>,
        roles: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut facts = UserFacts {
            groups: groups.into_iter().collect(),
            roles: roles.into_iter().collect(),
            ..UserFacts::default()
        };
        for (name, values) in attributes {
            for v in values {
                facts.attributes.insert((name.to_owned(), fold(v)));
            }
        }
        facts
    }

    /// Whether the user has this fact.
    fn satisfies(&self, p: &Predicate) -> bool {
        match p {
            Predicate::Group(g) => self.groups.contains(g),
            Predicate::Role(r) => self.roles.contains(r),
            Predicate::Attribute { name, values } => values
                .iter()
                .any(|v| self.attributes.contains(&(name.clone(), fold(v)))),
        }
    }
}

/// The index key of a fact: one string per (kind, name[, value]).
fn key(kind: char, name: &str, value: Option<&str>, out: &mut String) {
    out.clear();
    out.push(kind);
    out.push('\u{0}');
    out.push_str(name);
    if let Some(v) = value {
        out.push('\u{0}');
        out.push_str(v);
    }
}

/// A clause, compiled: each predicate is the set of key ids any one of which satisfies it.
#[derive(Debug)]
struct CompiledClause {
    /// Index into [`RuleSet::rules`].
    rule: u32,
    /// One sorted key-id list per predicate.
    predicates: Box<[Box<[u32]>]>,
}

/// A rule, compiled.
#[derive(Debug)]
struct CompiledRule {
    /// The rule's name, reported as the reason for a grant.
    name: String,
    /// The SPs granted, as indexes into [`RuleSet::sps`].
    targets: Box<[u32]>,
}

/// The enabled rules, compiled for evaluation; immutable.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// The directory's assignment-rule generation this set was built from.
    generation: u64,
    /// Fact key → key id.
    keys: HashMap<String, u32>,
    /// Key id → the clauses anchored on that key.
    anchored: Vec<Vec<u32>>,
    /// Every clause of every enabled rule.
    clauses: Vec<CompiledClause>,
    /// The enabled rules.
    rules: Vec<CompiledRule>,
    /// EntityIDs named by the rules.
    sps: Vec<String>,
    /// EntityID → index into `sps`.
    sp_ids: HashMap<String, u32>,
    /// How many rules were given, enabled or not.
    total_rules: usize,
}

/// A 32-bit index (the set is bounded far below; saturating keeps this infallible).
fn idx(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl RuleSet {
    /// Validates and compiles `rules` (tagged with the directory `generation`). Disabled rules are
    /// checked but grant nothing. Errors name the offending rule; two rules with one name are refused.
    pub fn build(rules: &[AssignmentRule], generation: u64) -> Result<RuleSet, Error> {
        let mut set = RuleSet {
            generation,
            total_rules: rules.len(),
            ..RuleSet::default()
        };
        let mut names = HashSet::new();
        let mut buf = String::new();
        for rule in rules {
            rule.validate()?;
            if !names.insert(rule.name.as_str()) {
                return Err(Error::Duplicate {
                    item: Item::AssignmentRule(rule.name.clone()),
                });
            }
            if !rule.enabled {
                continue;
            }
            let rule_id = idx(set.rules.len());
            let targets = rule.targets.iter().map(|t| set.sp_id(t)).collect();
            set.rules.push(CompiledRule {
                name: rule.name.clone(),
                targets,
            });
            for clause in &rule.condition.any {
                let mut predicates = Vec::with_capacity(clause.all.len());
                for p in &clause.all {
                    let mut ids: Vec<u32> = match p {
                        Predicate::Group(g) => vec![set.key_id('g', g, None, &mut buf)],
                        Predicate::Role(r) => vec![set.key_id('r', r, None, &mut buf)],
                        Predicate::Attribute { name, values } => values
                            .iter()
                            .map(|v| set.key_id('a', name, Some(&fold(v)), &mut buf))
                            .collect(),
                    };
                    ids.sort_unstable();
                    ids.dedup();
                    predicates.push(ids.into_boxed_slice());
                }
                // Anchor on the predicate with the fewest keys: the clause is looked at only for users
                // who have one of them, and every other predicate is then checked.
                let clause_id = idx(set.clauses.len());
                if let Some(anchor) = predicates.iter().min_by_key(|ids| ids.len()) {
                    for &k in anchor.iter() {
                        if let Some(list) = set.anchored.get_mut(k as usize) {
                            list.push(clause_id);
                        }
                    }
                }
                set.clauses.push(CompiledClause {
                    rule: rule_id,
                    predicates: predicates.into_boxed_slice(),
                });
            }
        }
        Ok(set)
    }

    /// The generation this set was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many rules the set was built from, and how many of them are enabled.
    pub fn rule_counts(&self) -> (usize, usize) {
        (self.total_rules, self.rules.len())
    }

    /// The id of a key, interned.
    fn key_id(&mut self, kind: char, name: &str, value: Option<&str>, buf: &mut String) -> u32 {
        key(kind, name, value, buf);
        if let Some(&id) = self.keys.get(buf.as_str()) {
            return id;
        }
        let id = idx(self.anchored.len());
        self.keys.insert(buf.clone(), id);
        self.anchored.push(Vec::new());
        id
    }

    /// The index of an SP, interned.
    fn sp_id(&mut self, entity_id: &str) -> u32 {
        if let Some(&id) = self.sp_ids.get(entity_id) {
            return id;
        }
        let id = idx(self.sps.len());
        self.sp_ids.insert(entity_id.to_owned(), id);
        self.sps.push(entity_id.to_owned());
        id
    }

    /// The key ids of the user's facts that some rule mentions, sorted.
    fn present(&self, facts: &UserFacts) -> Vec<u32> {
        let mut buf = String::new();
        let mut out = Vec::new();
        let mut look = |kind, name: &str, value: Option<&str>| {
            key(kind, name, value, &mut buf);
            if let Some(&id) = self.keys.get(buf.as_str()) {
                out.push(id);
            }
        };
        for g in &facts.groups {
            look('g', g, None);
        }
        for r in &facts.roles {
            look('r', r, None);
        }
        for (name, value) in &facts.attributes {
            look('a', name, Some(value));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Calls `granted` with the rule of every clause the user satisfies (a rule may come more than
    /// once), stopping when it returns `false`.
    fn each_match<'s>(
        &'s self,
        facts: &UserFacts,
        mut granted: impl FnMut(&'s CompiledRule) -> bool,
    ) {
        if self.rules.is_empty() {
            return;
        }
        let present = self.present(facts);
        for &k in &present {
            let Some(candidates) = self.anchored.get(k as usize) else {
                continue;
            };
            for &c in candidates {
                let Some(clause) = self.clauses.get(c as usize) else {
                    continue;
                };
                let holds = clause
                    .predicates
                    .iter()
                    .all(|any| any.iter().any(|id| present.binary_search(id).is_ok()));
                if holds {
                    if let Some(rule) = self.rules.get(clause.rule as usize) {
                        if !granted(rule) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whether an enabled rule grants `entity_id` to anyone (when not, no user's facts are needed).
    pub fn names_sp(&self, entity_id: &str) -> bool {
        self.sp_ids.contains_key(entity_id)
    }

    /// The name of an enabled rule that grants `entity_id` to the user, if any. Cheap when no rule
    /// names the SP.
    pub fn grant_for(&self, facts: &UserFacts, entity_id: &str) -> Option<&str> {
        let &sp = self.sp_ids.get(entity_id)?;
        let mut found = None;
        self.each_match(facts, |rule| {
            if rule.targets.contains(&sp) {
                found = Some(rule.name.as_str());
                false
            } else {
                true
            }
        });
        found
    }

    /// Every SP the rules grant the user, by entityID, with the names of the rules granting it (sorted,
    /// each once).
    pub fn grants(&self, facts: &UserFacts) -> BTreeMap<&str, Vec<&str>> {
        let mut by_rule: Vec<&CompiledRule> = Vec::new();
        self.each_match(facts, |rule| {
            by_rule.push(rule);
            true
        });
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for rule in by_rule {
            for &sp in rule.targets.iter() {
                if let Some(entity_id) = self.sps.get(sp as usize) {
                    out.entry(entity_id.as_str())
                        .or_default()
                        .push(rule.name.as_str());
                }
            }
        }
        for rules in out.values_mut() {
            rules.sort_unstable();
            rules.dedup();
        }
        out
    }

    /// An estimate of the heap the compiled set holds, in bytes (for the benchmark and logs).
    pub fn approx_heap_bytes(&self) -> usize {
        let string = |s: &String| s.capacity() + std::mem::size_of::<String>();
        let keys: usize = self.keys.keys().map(|k| string(k) + 4 + 8).sum::<usize>();
        let anchored: usize = self
            .anchored
            .iter()
            .map(|v| v.capacity() * 4 + std::mem::size_of::<Vec<u32>>())
            .sum();
        let clauses: usize = self
            .clauses
            .iter()
            .map(|c| {
                std::mem::size_of::<CompiledClause>()
                    + c.predicates
                        .iter()
                        .map(|p| p.len() * 4 + std::mem::size_of::<Box<[u32]>>())
                        .sum::<usize>()
            })
            .sum();
        let rules: usize = self
            .rules
            .iter()
            .map(|r| std::mem::size_of::<CompiledRule>() + r.name.capacity() + r.targets.len() * 4)
            .sum();
        let sps: usize = self.sps.iter().map(|s| string(s) * 2 + 4).sum();
        keys + anchored + clauses + rules + sps
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(name: &str, condition: Condition, targets: &[&str]) -> AssignmentRule {
        AssignmentRule {
            name: name.to_owned(),
            condition,
            targets: targets.iter().map(|t| t.to_string()).collect(),
            enabled: true,
        }
    }

    fn attr(name: &str, values: &[&str]) -> Predicate {
        Predicate::Attribute {
            name: name.to_owned(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn facts(attrs: &[(&str, &str)], groups: &[&str], roles: &[&str]) -> UserFacts {
        let owned: Vec<(String, Vec<String>)> = attrs
            .iter()
            .map(|(n, v)| (n.to_string(), vec![v.to_string()]))
            .collect();
        UserFacts::new(
            owned.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            groups.iter().map(|g| g.to_string()),
            roles.iter().map(|r| r.to_string()),
        )
    }

    #[test]
    fn index_agrees_with_the_reference_semantics() -> Result<(), Error> {
        let rules = vec![
            rule(
                "sales",
                Condition::any(vec![
                    attr("department", &["Sales"]),
                    Predicate::Group("sales-emea".into()),
                ]),
                &["crm", "mail"],
            ),
            rule(
                "managers",
                Condition::all(vec![
                    attr("department", &["Sales", "Support"]),
                    Predicate::Role("manager".into()),
                ]),
                &["reports"],
            ),
        ];
        let set = RuleSet::build(&rules, 7)?;
        assert_eq!(set.generation(), 7);
        let cases = [
            facts(&[("department", "sales")], &[], &[]),
            facts(&[], &["sales-emea"], &[]),
            facts(&[("department", "Support")], &[], &["manager"]),
            facts(&[("department", "Support")], &[], &[]),
            facts(&[("department", "Sales")], &["x"], &["manager"]),
            facts(&[], &[], &[]),
        ];
        for f in &cases {
            let grants = set.grants(f);
            for r in &rules {
                for t in &r.targets {
                    let by_ref = rules
                        .iter()
                        .any(|r| r.condition.matches(f) && r.targets.contains(t));
                    assert_eq!(grants.contains_key(t.as_str()), by_ref, "{t} for {f:?}");
                    assert_eq!(set.grant_for(f, t).is_some(), by_ref, "{t} for {f:?}");
                }
            }
        }
        let both = set.grants(&cases[4]);
        assert_eq!(both.get("reports"), Some(&vec!["managers"]));
        assert_eq!(both.get("crm"), Some(&vec!["sales"]));
        Ok(())
    }

    #[test]
    fn parse_and_display_round_trip() -> Result<(), String> {
        let p = Predicate::parse("department=Sales|Support")?;
        assert_eq!(p, attr("department", &["Sales", "Support"]));
        assert_eq!(
            Predicate::parse("group=a=b")?,
            Predicate::Group("a=b".into())
        );
        assert_eq!(
            Predicate::parse("attribute.group=x")?,
            attr("group", &["x"])
        );
        assert_eq!(
            Predicate::parse("attribute.group=x")?.to_string(),
            "attribute.group=x"
        );
        assert!(Predicate::parse("department").is_err());
        let c = Condition {
            any: vec![
                Clause {
                    all: vec![p, Predicate::Role("m".into())],
                },
                Clause {
                    all: vec![Predicate::Group("g".into())],
                },
            ],
        };
        assert_eq!(
            c.to_string(),
            "department=Sales|Support & role=m OR group=g"
        );
        Ok(())
    }

    #[test]
    fn when_options_combine() -> Result<(), String> {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = Condition::from_when(
            &w(&["department=Sales", "group=sales-emea"]),
            Some(Combine::Any),
        )?;
        assert_eq!(c.to_string(), "department=Sales OR group=sales-emea");
        let c = Condition::from_when(&w(&["department=Sales", "role=m"]), Some(Combine::All))?;
        assert_eq!(c.to_string(), "department=Sales & role=m");
        let c = Condition::from_when(
            &w(&["department=Sales & role=m", "group=g"]),
            Some(Combine::Any),
        )?;
        assert_eq!(c.to_string(), "department=Sales & role=m OR group=g");
        assert!(Condition::from_when(&w(&["a=b", "c=d"]), None).is_err());
        assert!(Condition::from_when(&[], None).is_err());
        Ok(())
    }

    #[test]
    fn invalid_rules_are_refused_with_the_reason() {
        let ok = rule(
            "r",
            Condition::any(vec![attr("department", &["x"])]),
            &["sp"],
        );
        assert!(ok.validate().is_ok());
        let cases: Vec<(AssignmentRule, &str)> = vec![
            (rule("", ok.condition.clone(), &["sp"]), "empty"),
            (
                rule("r", Condition { any: vec![] }, &["sp"]),
                "condition is empty",
            ),
            (rule("r", Condition::all(vec![]), &["sp"]), "clause"),
            (rule("r", ok.condition.clone(), &[]), "grants no"),
            (rule("r", ok.condition.clone(), &["sp", "sp"]), "twice"),
            (
                rule("r", Condition::any(vec![attr("groups", &["x"])]), &["sp"]),
                "use group=NAME",
            ),
            (
                rule("r", Condition::any(vec![attr("department", &[])]), &["sp"]),
                "no value",
            ),
            (
                rule(
                    "r",
                    Condition::any(vec![attr("department", &[""])]),
                    &["sp"],
                ),
                "empty value",
            ),
        ];
        for (r, why) in cases {
            let e = r.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{e:?} should say {why:?}");
        }
        let dup = RuleSet::build(&[ok.clone(), ok], 0);
        assert!(matches!(dup, Err(Error::Duplicate { .. })));
    }
}
