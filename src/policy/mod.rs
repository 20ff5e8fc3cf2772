//! Access policy: IP allowlists and security policies (risk tiers), and the one pure function that turns
//! them into a decision — admit, step up, or deny — with a human-readable trace of every rule and policy
//! that led to it.
//!
//! - [`ip`]: ranges as written (`10.0.0.0/8`, `2001:db8::/32`, `203.0.113.7`, `192.0.2.10-192.0.2.20`),
//!   the compiled [`IpRangeSet`] (one binary search per lookup), and [`client_address`] behind trusted
//!   reverse proxies.
//! - [`model`]: what an administrator declares — [`IpRule`], [`SecurityPolicy`], [`PolicyAssignment`],
//!   [`SpRequirement`] — with validation, and the tessera.toml forms [`IpRuleDecl`] and [`PolicyDecl`].
//! - [`engine`]: [`PolicySet`], the compiled immutable view of all of it (shared behind an `Arc`, rebuilt
//!   when the directory's policy generation changes), with [`PolicySet::effective_policy`],
//!   [`PolicySet::decide`] and [`lockout`].
//! - [`assignment`]: conditional app assignment, rules granting SPs by attributes, groups and roles,
//!   compiled into an indexed [`RuleSet`] (`docs/app-assignment.md`).
//!
//! Nothing here does IO or reads the clock: the directory stores the declarations
//! (`directory::policy_store`), the web layer supplies the request, the session facts and `now`.
//! The semantics are documented for operators in `docs/access-policy.md`.

pub mod assignment;
pub mod engine;
pub mod ip;
pub mod model;

pub use assignment::{
    rules_from_declarations, AssignmentRule, AssignmentRuleDecl, Clause, Combine, Condition,
    Predicate, RuleSet, UserFacts,
};
pub use engine::{
    lockout, would_lock_out, AccessRequest, AllowlistRef, Decision, DenyReason, Outcome, PolicySet,
    SessionFacts, Subject,
};
pub use ip::{client_address, IpRange, IpRangeSet, RangeError};
pub use model::{
    validate_declarations, AssignmentTarget, DeclaredAssignment, IpRule, IpRuleDecl, MfaMethod,
    PolicyAssignment, PolicyData, PolicyDecl, Requirement, RuleScope, SecurityPolicy,
    SpRequirement, BUILTIN_POLICY_NAME, MAX_PASSWORD_HISTORY, MAX_SECURITY_QUESTIONS,
};

/// What a validation error is about, so every message names the offending item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Item {
    /// An IP rule, by name.
    IpRule(String),
    /// A security policy, by name.
    Policy(String),
    /// The assignment of a policy to a user, group or role.
    Assignment(AssignmentTarget),
    /// The access requirements of an SP, by entityID.
    Sp(String),
    /// An entry of `trusted_proxies` in tessera.toml, as written.
    TrustedProxy(String),
    /// An app assignment rule, by name.
    AssignmentRule(String),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::IpRule(name) => write!(f, "ip rule {name:?}"),
            Item::Policy(name) => write!(f, "policy {name:?}"),
            Item::Assignment(target) => write!(f, "policy assignment to {target}"),
            Item::Sp(entity_id) => write!(f, "access requirements of SP {entity_id:?}"),
            Item::TrustedProxy(text) => write!(f, "trusted proxy {text:?}"),
            Item::AssignmentRule(name) => write!(f, "assignment rule {name:?}"),
        }
    }
}

/// What an unknown name was supposed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// A directory user.
    User,
    /// A directory group.
    Group,
    /// A directory role.
    Role,
    /// A security policy.
    Policy,
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetKind::User => "user",
            TargetKind::Group => "group",
            TargetKind::Role => "role",
            TargetKind::Policy => "policy",
        })
    }
}

/// Why rules, policies or assignments were refused. Every variant names the offending item; nothing is
/// applied when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A range of the item does not parse.
    #[error("{item}: {error}")]
    Range {
        /// The rule, policy, SP or proxy entry the range belongs to.
        item: Item,
        /// What is wrong with the range.
        error: RangeError,
    },
    /// A value of the item is out of range or inconsistent; the text says which and why.
    #[error("{item}: {reason}")]
    Invalid {
        /// The offending item.
        item: Item,
        /// What is wrong, for the operator.
        reason: String,
    },
    /// Two items of one batch (tessera.toml, or the set being built) share a name or target.
    #[error("{item} is given more than once")]
    Duplicate {
        /// The item named twice.
        item: Item,
    },
    /// The item refers to a user, group, role or policy that does not exist.
    #[error("{item} names unknown {kind} {name:?}")]
    UnknownTarget {
        /// The item holding the reference.
        item: Item,
        /// What the name should have been.
        kind: TargetKind,
        /// The unknown name.
        name: String,
    },
    /// More than one policy is marked as the default.
    #[error("policies {first:?} and {second:?} are both marked as the default; only one may be")]
    TwoDefaults {
        /// One default policy.
        first: String,
        /// Another.
        second: String,
    },
}
