//! The compiled policy set and the decision.
//!
//! Semantics (also in `docs/access-policy.md`):
//!
//! - IP rules. The rules that apply to a user are those for everyone plus those naming one of the
//!   user's roles, groups, or the user. No rule applies: not restricted by IP rules. Otherwise the
//!   address must be inside at least one of them.
//! - The user's effective policy may carry its own allowlist, and the SP may carry one: when set, the
//!   address must ALSO be inside each. All three gates are evaluated and every refusing one is reported.
//! - Effective policy: a direct user assignment wins; otherwise the group or role assignment with the
//!   highest priority; ties go to the stricter policy ([`SecurityPolicy::strictness`]), then to the
//!   policy name in alphabetical order; otherwise the policy marked default; otherwise the built-in one.
//! - With a session, the policy's lifetimes, its MFA requirement and its re-authentication interval, and
//!   the SP's minimum, are checked. What is missing but obtainable (a new sign-in, a second factor the
//!   user can complete) is a step-up; what cannot be obtained yet is a denial naming what is missing.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use super::model::{
    AssignmentTarget, IpRule, MfaMethod, PolicyData, RuleScope, SecurityPolicy, SpRequirement,
};
use super::{Error, IpRangeSet};
use crate::session::AuthnMethod;

/// Who is asking: a username with the names of their groups and roles.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    /// The username (matched by user-scoped rules and direct assignments).
    pub username: String,
    /// Names of the user's groups.
    pub groups: Vec<String>,
    /// Names of the user's roles.
    pub roles: Vec<String>,
}

/// What is known about the session being used, for the lifetime and MFA checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    /// Every method used in this session (password and any second factors).
    pub methods: Vec<AuthnMethod>,
    /// When the user last signed in with a password (unix seconds): the start of the absolute lifetime.
    pub authn_instant: i64,
    /// When the session was last used (unix seconds), for the idle timeout.
    pub last_seen: i64,
    /// When the last second factor was completed (unix seconds); `None` falls back to `authn_instant`
    /// when `methods` includes one.
    pub mfa_instant: Option<i64>,
}

impl SessionFacts {
    /// A session that has just signed in with `methods` at `now`.
    pub fn fresh(methods: Vec<AuthnMethod>, now: i64) -> Self {
        let has_mfa = methods.iter().any(|m| MfaMethod::from_authn(*m).is_some());
        SessionFacts {
            methods,
            authn_instant: now,
            last_seen: now,
            mfa_instant: has_mfa.then_some(now),
        }
    }
}

/// One access to decide: at login (`sp: None`), or at an SSO to an SP.
#[derive(Debug, Clone)]
pub struct AccessRequest<'a> {
    /// The user.
    pub subject: &'a Subject,
    /// The client address (see [`super::client_address`]).
    pub ip: IpAddr,
    /// The entityID of the SP being reached, if any.
    pub sp: Option<&'a str>,
    /// The session, if the user has authenticated. `None` checks only the IP gates (a pre-check before
    /// the password is even asked for).
    pub session: Option<&'a SessionFacts>,
    /// The second factors this user can complete right now (enrolled and supported). Empty until MFA
    /// exists: then a missing MFA is a denial saying what is missing instead of a step-up.
    pub mfa_available: &'a [MfaMethod],
    /// The current time, unix seconds.
    pub now: i64,
}

/// An allowlist that refused an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AllowlistRef {
    /// The applicable IP rules, by name (none of them admitted the address).
    IpRule(String),
    /// The effective policy's own allowlist, by policy name.
    Policy(String),
    /// The SP's allowlist, by entityID.
    Sp(String),
}

impl fmt::Display for AllowlistRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowlistRef::IpRule(n) => write!(f, "ip rule {n:?}"),
            AllowlistRef::Policy(n) => write!(f, "the allowlist of policy {n:?}"),
            AllowlistRef::Sp(e) => write!(f, "the allowlist of SP {e:?}"),
        }
    }
}

/// Why access is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The address is outside the allowlists listed.
    IpNotAllowed {
        /// Every allowlist that refused: all applicable IP rules (when none admitted), the policy's,
        /// the SP's.
        refused_by: Vec<AllowlistRef>,
    },
    /// A requirement cannot be met yet (typically: MFA is required but the user has none available).
    PolicyNotMet {
        /// What is missing, e.g. "this app requires MFA within the last hour; the session has: password".
        missing: String,
    },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::IpNotAllowed { refused_by } => {
                let list: Vec<String> = refused_by.iter().map(ToString::to_string).collect();
                write!(f, "the address is not allowed by {}", list.join(", "))
            }
            DenyReason::PolicyNotMet { missing } => f.write_str(missing),
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Go ahead.
    Admit,
    /// Ask for more, then decide again.
    StepUp {
        /// A new password sign-in is needed (session too old or idle, or re-authentication interval
        /// passed).
        reauthenticate: bool,
        /// A second factor is needed: any of these (those the policy accepts and the user can do).
        /// Empty when no second factor is needed.
        mfa_methods: Vec<MfaMethod>,
        /// What is missing, for the page.
        missing: String,
    },
    /// Refuse.
    Deny {
        /// Why.
        reason: DenyReason,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Admit => f.write_str("admit"),
            Outcome::StepUp { missing, .. } => write!(f, "step up: {missing}"),
            Outcome::Deny { reason } => write!(f, "deny: {reason}"),
        }
    }
}

/// A decision with the name of the effective policy and the trace of every rule and policy that led
/// to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Admit, step up or deny.
    pub outcome: Outcome,
    /// The user's effective policy (its session lifetimes govern the session).
    pub policy: String,
    /// Human-readable lines, in evaluation order.
    pub trace: Vec<String>,
}

impl fmt::Display for Decision {
    /// The `tessera policy explain` output: the outcome, then the trace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "decision: {}", self.outcome)?;
        writeln!(f, "effective policy: {}", self.policy)?;
        for line in &self.trace {
            writeln!(f, "  - {line}")?;
        }
        Ok(())
    }
}

/// A compiled IP rule.
#[derive(Debug, Clone)]
struct CompiledRule {
    /// Index into `PolicyData::ip_rules`.
    index: usize,
    /// The compiled ranges.
    set: IpRangeSet,
}

/// The compiled, immutable view of every rule, policy, assignment and SP requirement.
///
/// Build it once per change ([`PolicySet::build`]) and share it behind an `Arc`; the `generation` is
/// the directory's policy generation it was built from, so a server can poll the cheap counter and
/// rebuild only when it moved.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// The directory generation this was built from.
    generation: u64,
    /// The declarations, for listings and for previews of a change ([`PolicySet::data`]).
    data: PolicyData,
    /// Compiled rules, index-aligned with `data.ip_rules`.
    rules: Vec<CompiledRule>,
    /// Rules for everyone.
    everyone: Vec<usize>,
    /// Rules by role name.
    rules_by_role: HashMap<String, Vec<usize>>,
    /// Rules by group name.
    rules_by_group: HashMap<String, Vec<usize>>,
    /// Rules by username.
    rules_by_user: HashMap<String, Vec<usize>>,
    /// Compiled policy allowlists, index-aligned with `data.policies`.
    policy_sets: Vec<Option<IpRangeSet>>,
    /// Policy index by name.
    policy_by_name: HashMap<String, usize>,
    /// Assignment index (into `data.assignments`) by target.
    assignment_by_target: HashMap<AssignmentTarget, usize>,
    /// Index of the default policy.
    default_policy: Option<usize>,
    /// The policy used when nothing else applies.
    builtin: SecurityPolicy,
    /// Compiled SP allowlists by entityID.
    sp_sets: HashMap<String, Option<IpRangeSet>>,
}

/// Which policy a user got and why.
enum Resolved<'a> {
    /// Assigned to the user directly.
    Direct(usize),
    /// The winning group or role assignment; the others that reached the user follow.
    Membership(usize, Vec<usize>),
    /// The policy marked default.
    Default(usize),
    /// Nothing applies.
    Builtin(&'a SecurityPolicy),
}

impl PolicySet {
    /// An empty set: nobody restricted, everyone on the built-in default policy.
    pub fn empty() -> Self {
        PolicySet {
            generation: 0,
            data: PolicyData::default(),
            rules: Vec::new(),
            everyone: Vec::new(),
            rules_by_role: HashMap::new(),
            rules_by_group: HashMap::new(),
            rules_by_user: HashMap::new(),
            policy_sets: Vec::new(),
            policy_by_name: HashMap::new(),
            assignment_by_target: HashMap::new(),
            default_policy: None,
            builtin: SecurityPolicy::builtin_default(),
            sp_sets: HashMap::new(),
        }
    }

    /// Validates `data` ([`PolicyData::validate`]) and compiles it.
    pub fn build(data: PolicyData, generation: u64) -> Result<Self, Error> {
        data.validate()?;
        let mut set = PolicySet::empty();
        set.generation = generation;
        for (index, rule) in data.ip_rules.iter().enumerate() {
            set.rules.push(CompiledRule {
                index,
                set: IpRangeSet::from_ranges(&rule.ranges),
            });
            let slot = set.rules.len() - 1;
            let map = match &rule.scope {
                RuleScope::Everyone => {
                    set.everyone.push(slot);
                    continue;
                }
                RuleScope::Roles(_) => &mut set.rules_by_role,
                RuleScope::Groups(_) => &mut set.rules_by_group,
                RuleScope::Users(_) => &mut set.rules_by_user,
            };
            for name in rule.scope.names() {
                map.entry(name.clone()).or_default().push(slot);
            }
        }
        for (index, policy) in data.policies.iter().enumerate() {
            set.policy_sets
                .push(policy.ip_ranges.as_ref().map(IpRangeSet::from_ranges));
            set.policy_by_name.insert(policy.name.clone(), index);
            if policy.is_default {
                set.default_policy = Some(index);
            }
        }
        for (index, a) in data.assignments.iter().enumerate() {
            set.assignment_by_target.insert(a.target.clone(), index);
        }
        for (entity_id, req) in &data.sp_requirements {
            set.sp_sets.insert(
                entity_id.clone(),
                req.ip_ranges.as_ref().map(IpRangeSet::from_ranges),
            );
        }
        set.data = data;
        Ok(set)
    }

    /// The directory generation this set was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The declarations the set was built from; clone and change them to preview a change.
    pub fn data(&self) -> &PolicyData {
        &self.data
    }

    /// A policy by name (including the built-in default).
    pub fn policy(&self, name: &str) -> Option<&SecurityPolicy> {
        if name == self.builtin.name {
            return Some(&self.builtin);
        }
        self.policy_by_name
            .get(name)
            .and_then(|&i| self.data.policies.get(i))
    }

    /// The access requirements of an SP, if it has any.
    pub fn sp_requirement(&self, entity_id: &str) -> Option<&SpRequirement> {
        self.data.sp_requirements.get(entity_id)
    }

    /// The IP rules that apply to `subject`, each with why ("everyone", "role admin", ...), in the order
    /// they were declared.
    pub fn applicable_rules(&self, subject: &Subject) -> Vec<(&IpRule, String)> {
        self.applicable(subject)
            .into_iter()
            .map(|(rule, _, why)| (rule, why))
            .collect()
    }

    /// The applicable rules with their compiled sets and why they apply, in declaration order.
    fn applicable(&self, subject: &Subject) -> Vec<(&IpRule, &IpRangeSet, String)> {
        let mut hits: Vec<(usize, String)> = Vec::new();
        for &slot in &self.everyone {
            hits.push((slot, "everyone".to_owned()));
        }
        let lists = [
            (&self.rules_by_role, &subject.roles, "role"),
            (&self.rules_by_group, &subject.groups, "group"),
        ];
        for (map, names, kind) in lists {
            for name in names {
                for &slot in map.get(name).into_iter().flatten() {
                    hits.push((slot, format!("{kind} {name}")));
                }
            }
        }
        for &slot in self
            .rules_by_user
            .get(&subject.username)
            .into_iter()
            .flatten()
        {
            hits.push((slot, format!("user {}", subject.username)));
        }
        hits.sort_by_key(|(slot, _)| *slot);
        hits.dedup_by_key(|(slot, _)| *slot);
        hits.into_iter()
            .filter_map(|(slot, why)| {
                let compiled = self.rules.get(slot)?;
                let rule = self.data.ip_rules.get(compiled.index)?;
                Some((rule, &compiled.set, why))
            })
            .collect()
    }

    /// The one policy that applies to `subject`, and the trace of why.
    pub fn effective_policy(&self, subject: &Subject) -> (&SecurityPolicy, Vec<String>) {
        let mut trace = Vec::new();
        let resolved = self.resolve(subject);
        let policy = match &resolved {
            Resolved::Direct(a) | Resolved::Membership(a, _) => self
                .data
                .assignments
                .get(*a)
                .and_then(|a| self.policy(&a.policy)),
            Resolved::Default(p) => self.data.policies.get(*p),
            Resolved::Builtin(p) => Some(*p),
        }
        .unwrap_or(&self.builtin);
        let describe = |a: usize| -> String {
            match self.data.assignments.get(a) {
                Some(x) => format!("{} -> {:?} (priority {})", x.target, x.policy, x.priority),
                None => String::new(),
            }
        };
        match resolved {
            Resolved::Direct(_) => {
                trace.push(format!(
                    "policy {:?}: assigned directly to user {:?} (a direct assignment wins)",
                    policy.name, subject.username
                ));
                let others = self.membership_assignments(subject);
                if !others.is_empty() {
                    let list: Vec<String> = others.into_iter().map(describe).collect();
                    trace.push(format!("overridden: {}", list.join(", ")));
                }
            }
            Resolved::Membership(winner, others) => {
                let x = describe(winner);
                if others.is_empty() {
                    trace.push(format!("policy {:?}: assigned via {x}", policy.name));
                } else {
                    let list: Vec<String> = others.into_iter().map(describe).collect();
                    trace.push(format!(
                        "policy {:?}: assigned via {x}, the highest priority (ties: stricter policy, \
                         then name); also reaching the user: {}",
                        policy.name,
                        list.join(", ")
                    ));
                }
            }
            Resolved::Default(_) => trace.push(format!(
                "policy {:?}: the default policy (no assignment reaches user {:?})",
                policy.name, subject.username
            )),
            Resolved::Builtin(_) => trace.push(format!(
                "policy {:?}: no assignment reaches user {:?} and no policy is marked default",
                policy.name, subject.username
            )),
        }
        (policy, trace)
    }

    /// Group and role assignments reaching `subject`, best first.
    fn membership_assignments(&self, subject: &Subject) -> Vec<usize> {
        let mut found: Vec<usize> = subject
            .groups
            .iter()
            .map(|g| AssignmentTarget::Group(g.clone()))
            .chain(
                subject
                    .roles
                    .iter()
                    .map(|r| AssignmentTarget::Role(r.clone())),
            )
            .filter_map(|t| self.assignment_by_target.get(&t).copied())
            .collect();
        found.sort_unstable();
        found.dedup();
        // Highest priority, then the stricter policy, then policy name, then target: a total order.
        found.sort_by(|&a, &b| {
            let key = |i: usize| {
                let x = self.data.assignments.get(i);
                let strict = x
                    .and_then(|x| self.policy(&x.policy))
                    .map(SecurityPolicy::strictness);
                (x.map(|x| x.priority), strict)
            };
            key(b).cmp(&key(a)).then_with(|| {
                let name = |i: usize| self.data.assignments.get(i).map(|x| (&x.policy, &x.target));
                name(a).cmp(&name(b))
            })
        });
        found
    }

    /// Applies the resolution order.
    fn resolve(&self, subject: &Subject) -> Resolved<'_> {
        let direct = AssignmentTarget::User(subject.username.clone());
        if let Some(&a) = self.assignment_by_target.get(&direct) {
            return Resolved::Direct(a);
        }
        let mut found = self.membership_assignments(subject);
        if !found.is_empty() {
            let winner = found.remove(0);
            return Resolved::Membership(winner, found);
        }
        match self.default_policy {
            Some(p) => Resolved::Default(p),
            None => Resolved::Builtin(&self.builtin),
        }
    }

    /// Decides one access. See the module documentation for the semantics.
    pub fn decide(&self, req: &AccessRequest<'_>) -> Decision {
        let subject = req.subject;
        let mut trace = vec![format!(
            "user {:?}: groups [{}], roles [{}]; address {}",
            subject.username,
            subject.groups.join(", "),
            subject.roles.join(", "),
            req.ip
        )];
        let (policy, policy_trace) = self.effective_policy(subject);
        trace.extend(policy_trace);
        let done = |outcome: Outcome, trace: Vec<String>| Decision {
            outcome,
            policy: policy.name.clone(),
            trace,
        };

        // The IP gates: all evaluated, so the explanation names every allowlist that refused.
        let mut refused_by = Vec::new();
        let applicable = self.applicable(subject);
        if applicable.is_empty() {
            trace.push(format!(
                "no ip rule applies to user {:?}: not restricted by ip rules",
                subject.username
            ));
        } else {
            let mut admitted_by = None;
            for (rule, set, why) in &applicable {
                let inside = set.contains(req.ip);
                trace.push(format!(
                    "ip rule {:?} (applies via {why}): {} is {}",
                    rule.name,
                    req.ip,
                    if inside { "inside" } else { "outside" }
                ));
                if inside {
                    admitted_by = Some(rule.name.clone());
                    break;
                }
            }
            match admitted_by {
                Some(name) => trace.push(format!("ip rules: admitted by {name:?}")),
                None => {
                    trace.push(
                        "ip rules: the address is inside none of the rules that apply".into(),
                    );
                    refused_by.extend(
                        applicable
                            .iter()
                            .map(|(rule, _, _)| AllowlistRef::IpRule(rule.name.clone())),
                    );
                }
            }
        }
        if let Some(Some(set)) = self
            .policy_by_name
            .get(&policy.name)
            .and_then(|&i| self.policy_sets.get(i))
        {
            let inside = set.contains(req.ip);
            trace.push(format!(
                "allowlist of policy {:?}: {} is {}",
                policy.name,
                req.ip,
                if inside { "inside" } else { "outside" }
            ));
            if !inside {
                refused_by.push(AllowlistRef::Policy(policy.name.clone()));
            }
        }
        let sp_req = req.sp.and_then(|e| self.data.sp_requirements.get(e));
        if let Some(entity_id) = req.sp {
            match self.sp_sets.get(entity_id) {
                Some(Some(set)) => {
                    let inside = set.contains(req.ip);
                    trace.push(format!(
                        "allowlist of SP {entity_id:?}: {} is {}",
                        req.ip,
                        if inside { "inside" } else { "outside" }
                    ));
                    if !inside {
                        refused_by.push(AllowlistRef::Sp(entity_id.to_owned()));
                    }
                }
                _ => trace.push(format!("SP {entity_id:?} has no allowlist of its own")),
            }
        }
        if !refused_by.is_empty() {
            return done(
                Outcome::Deny {
                    reason: DenyReason::IpNotAllowed { refused_by },
                },
                trace,
            );
        }

        let Some(session) = req.session else {
            trace.push(
                "no session yet: the address is admitted; the policy's and the SP's session \
                 requirements apply once the user has signed in"
                    .to_owned(),
            );
            return done(Outcome::Admit, trace);
        };

        let now = req.now;
        let methods: Vec<&str> = session.methods.iter().map(|m| authn_name(*m)).collect();
        trace.push(format!(
            "session: signed in {} ago with {}; last used {} ago",
            ago(now - session.authn_instant),
            methods.join(", "),
            ago(now - session.last_seen)
        ));

        // Needs a new password sign-in.
        let mut reauth: Vec<String> = Vec::new();
        let age = now.saturating_sub(session.authn_instant);
        if age >= secs_i64(policy.session_absolute_secs) {
            reauth.push(format!(
                "policy {:?} ends sessions {} after sign-in; this one signed in {} ago",
                policy.name,
                span(policy.session_absolute_secs),
                ago(age)
            ));
        }
        let idle = now.saturating_sub(session.last_seen);
        if idle >= secs_i64(policy.session_idle_secs) {
            reauth.push(format!(
                "policy {:?} ends sessions unused for {}; this one was idle {}",
                policy.name,
                span(policy.session_idle_secs),
                ago(idle)
            ));
        }
        if !policy.mfa_required {
            if let Some(r) = policy.reauth_interval_secs {
                if age > secs_i64(r) {
                    reauth.push(format!(
                        "policy {:?} requires a sign-in within {}",
                        policy.name,
                        within(r)
                    ));
                }
            }
        }
        for line in &reauth {
            trace.push(format!("needs a new sign-in: {line}"));
        }

        // Needs a second factor: the policy's own requirement and the SP's minimum.
        let mut mfa_clauses: Vec<String> = Vec::new();
        let session_mfa: Vec<MfaMethod> = session
            .methods
            .iter()
            .filter_map(|m| MfaMethod::from_authn(*m))
            .filter(|m| policy.mfa_methods.contains(m))
            .collect();
        let mfa_at = session
            .mfa_instant
            .or_else(|| (!session_mfa.is_empty()).then_some(session.authn_instant));
        let mfa_ok = |window: Option<u64>| -> bool {
            !session_mfa.is_empty()
                && match (window, mfa_at) {
                    (None, _) => true,
                    (Some(w), Some(t)) => now.saturating_sub(t) <= secs_i64(w),
                    (Some(_), None) => false,
                }
        };
        if policy.mfa_required {
            let window = policy.reauth_interval_secs;
            let clause = match window {
                Some(w) => format!("policy {:?} requires MFA within {}", policy.name, within(w)),
                None => format!("policy {:?} requires MFA", policy.name),
            };
            if mfa_ok(window) {
                trace.push(format!("{clause}: met"));
            } else {
                trace.push(format!("{clause}: not met"));
                mfa_clauses.push(clause);
            }
        }
        if let (Some(entity_id), Some(req_sp)) = (req.sp, sp_req) {
            match req_sp.min {
                Some(min) if min.mfa || min.mfa_within_secs.is_some() => {
                    let clause = match min.mfa_within_secs {
                        Some(w) => format!("this app requires MFA within {}", within(w)),
                        None => "this app requires MFA".to_owned(),
                    };
                    if mfa_ok(min.mfa_within_secs) {
                        trace.push(format!("SP {entity_id:?}: {clause}: met"));
                    } else {
                        trace.push(format!("SP {entity_id:?}: {clause}: not met"));
                        mfa_clauses.push(clause);
                    }
                }
                _ => trace.push(format!("SP {entity_id:?} sets no minimum session strength")),
            }
        }

        if reauth.is_empty() && mfa_clauses.is_empty() {
            trace.push("every requirement is met".to_owned());
            return done(Outcome::Admit, trace);
        }

        let mut has = methods.join(", ");
        if let (false, Some(t)) = (session_mfa.is_empty(), mfa_at) {
            has.push_str(&format!(" (MFA {} ago)", ago(now.saturating_sub(t))));
        }
        let mut missing_parts: Vec<String> = Vec::new();
        if !reauth.is_empty() {
            missing_parts.push(reauth.join("; "));
        }
        if !mfa_clauses.is_empty() {
            missing_parts.push(format!(
                "{}; the session has: {has}",
                mfa_clauses.join(" and ")
            ));
        }
        let missing = missing_parts.join("; ");

        let usable: Vec<MfaMethod> = policy
            .mfa_methods
            .iter()
            .copied()
            .filter(|m| req.mfa_available.contains(m))
            .collect();
        if !mfa_clauses.is_empty() && usable.is_empty() {
            let allowed: Vec<&str> = policy.mfa_methods.iter().map(|m| m.as_str()).collect();
            trace.push(format!(
                "no second factor accepted by policy {:?} ({}) is available to user {:?}, so \
                 this cannot be stepped up",
                policy.name,
                allowed.join(", "),
                subject.username
            ));
            return done(
                Outcome::Deny {
                    reason: DenyReason::PolicyNotMet { missing },
                },
                trace,
            );
        }
        trace.push("what is missing can be obtained: step up".to_owned());
        done(
            Outcome::StepUp {
                reauthenticate: !reauth.is_empty(),
                mfa_methods: if mfa_clauses.is_empty() {
                    Vec::new()
                } else {
                    usable
                },
                missing,
            },
            trace,
        )
    }
}

/// Whether `proposed` would lock the admin out from `admin_ip` where `current` does not: a fresh
/// password sign-in from there is denied under `proposed` (a step-up is not a lockout). See [`lockout`].
pub fn would_lock_out(
    current: &PolicySet,
    proposed: &PolicySet,
    admin: &Subject,
    admin_ip: IpAddr,
    mfa_available: &[MfaMethod],
    now: i64,
) -> bool {
    lockout(current, proposed, admin, admin_ip, mfa_available, now).is_some()
}

/// The decision that locks the admin out under `proposed`, or `None` when the change does not (either
/// the admin can still get in, or was already denied under `current`).
pub fn lockout(
    current: &PolicySet,
    proposed: &PolicySet,
    admin: &Subject,
    admin_ip: IpAddr,
    mfa_available: &[MfaMethod],
    now: i64,
) -> Option<Decision> {
    let session = SessionFacts::fresh(vec![AuthnMethod::Password], now);
    let request = AccessRequest {
        subject: admin,
        ip: admin_ip,
        sp: None,
        session: Some(&session),
        mfa_available,
        now,
    };
    let before = current.decide(&request);
    let after = proposed.decide(&request);
    let denied = |d: &Decision| matches!(d.outcome, Outcome::Deny { .. });
    (denied(&after) && !denied(&before)).then_some(after)
}

/// The name of a session method, as stored.
fn authn_name(m: AuthnMethod) -> &'static str {
    match m {
        AuthnMethod::Password => "password",
        AuthnMethod::Totp => "totp",
        AuthnMethod::WebAuthn => "webauthn",
        AuthnMethod::RecoveryCode => "recovery_code",
    }
}

/// Seconds as i64 for comparisons with unix-time differences (saturating).
fn secs_i64(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// A configured duration in words: "1 hour", "15 minutes", "90 seconds".
fn span(secs: u64) -> String {
    let (n, unit) = if secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs.is_multiple_of(3_600) {
        (secs / 3_600, "hour")
    } else if secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// "the last hour", "the last 15 minutes".
fn within(secs: u64) -> String {
    let s = span(secs);
    match s.strip_prefix("1 ") {
        Some(unit) => format!("the last {unit}"),
        None => format!("the last {s}"),
    }
}

/// An elapsed time, roughly: "45 seconds", "12 minutes", "3 hours", "2 days".
fn ago(secs: i64) -> String {
    let secs = secs.max(0);
    let (n, unit) = if secs >= 2 * 86_400 {
        (secs / 86_400, "day")
    } else if secs >= 2 * 3_600 {
        (secs / 3_600, "hour")
    } else if secs >= 2 * 60 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(within(3600), "the last hour");
        assert_eq!(within(900), "the last 15 minutes");
        assert_eq!(within(90), "the last 90 seconds");
        assert_eq!(span(36_000), "10 hours");
        assert_eq!(ago(7_300), "2 hours");
        assert_eq!(ago(-5), "0 seconds");
    }
}
