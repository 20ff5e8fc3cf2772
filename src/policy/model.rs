//! What an administrator declares: IP rules, security policies, their assignments, and per-SP access
//! requirements; their validation; and the forms they take in tessera.toml.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Error, IpRange, Item, TargetKind};
use crate::directory::MIN_PASSWORD_CHARS;
use crate::session::AuthnMethod;

/// Name of the policy that applies when no policy is assigned and none is marked default. Reserved: no
/// stored policy may take it.
pub const BUILTIN_POLICY_NAME: &str = "built-in";

/// Longest rule or policy name, in characters.
const MAX_NAME_CHARS: usize = 255;

/// Longest password minimum a policy may set; the directory refuses passwords over 1024 bytes anyway.
const MAX_PASSWORD_MIN_LENGTH: u32 = 256;

/// Most earlier passwords a policy may forbid reusing (each costs one argon2 verification at a change).
pub const MAX_PASSWORD_HISTORY: u32 = crate::directory::MAX_PASSWORD_HISTORY as u32;

/// Longest maximum password age a policy may set, in days (ten years).
const MAX_PASSWORD_AGE_DAYS: u32 = 3650;

/// Most security questions a policy may require; the catalogue has a few more.
pub const MAX_SECURITY_QUESTIONS: u32 = 5;

/// Built-in absolute session lifetime, the same as `session.absolute_lifetime_secs` by default.
const DEFAULT_ABSOLUTE_SECS: u64 = 10 * 3600;

/// Built-in idle timeout, the same as `session.idle_timeout_secs` by default.
const DEFAULT_IDLE_SECS: u64 = 30 * 60;

/// A second factor a policy may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MfaMethod {
    /// A time-based one-time password (RFC 6238).
    #[serde(rename = "totp")]
    Totp,
    /// A WebAuthn authenticator.
    #[serde(rename = "webauthn")]
    WebAuthn,
    /// A single-use recovery code: a fallback, never a policy's only method.
    #[serde(rename = "recovery_code")]
    RecoveryCode,
}

impl MfaMethod {
    /// Every method, the default of a policy.
    pub const ALL: [MfaMethod; 3] = [
        MfaMethod::Totp,
        MfaMethod::WebAuthn,
        MfaMethod::RecoveryCode,
    ];

    /// The name used in tessera.toml, the CLI and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaMethod::Totp => "totp",
            MfaMethod::WebAuthn => "webauthn",
            MfaMethod::RecoveryCode => "recovery_code",
        }
    }

    /// The MFA method a session's authentication method is, if it is one (a password is not).
    pub fn from_authn(method: AuthnMethod) -> Option<MfaMethod> {
        match method {
            AuthnMethod::Password => None,
            AuthnMethod::Totp => Some(MfaMethod::Totp),
            AuthnMethod::WebAuthn => Some(MfaMethod::WebAuthn),
            AuthnMethod::RecoveryCode => Some(MfaMethod::RecoveryCode),
        }
    }

    /// The session's record of this method.
    pub fn to_authn(self) -> AuthnMethod {
        match self {
            MfaMethod::Totp => AuthnMethod::Totp,
            MfaMethod::WebAuthn => AuthnMethod::WebAuthn,
            MfaMethod::RecoveryCode => AuthnMethod::RecoveryCode,
        }
    }
}

impl fmt::Display for MfaMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MfaMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "totp" => Ok(MfaMethod::Totp),
            "webauthn" => Ok(MfaMethod::WebAuthn),
            "recovery_code" => Ok(MfaMethod::RecoveryCode),
            other => Err(format!(
                "unknown MFA method {other:?} (expected totp, webauthn or recovery_code)"
            )),
        }
    }
}

/// Whom an IP rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleScope {
    /// Every user.
    Everyone,
    /// Users having at least one of these roles.
    Roles(Vec<String>),
    /// Users in at least one of these groups.
    Groups(Vec<String>),
    /// These users.
    Users(Vec<String>),
}

impl RuleScope {
    /// The stored kind: `everyone`, `roles`, `groups` or `users`.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleScope::Everyone => "everyone",
            RuleScope::Roles(_) => "roles",
            RuleScope::Groups(_) => "groups",
            RuleScope::Users(_) => "users",
        }
    }

    /// The names listed (empty for everyone).
    pub fn names(&self) -> &[String] {
        match self {
            RuleScope::Everyone => &[],
            RuleScope::Roles(n) | RuleScope::Groups(n) | RuleScope::Users(n) => n,
        }
    }

    /// Rebuilds a scope from its stored kind and names; `None` for an unknown kind.
    pub fn from_parts(kind: &str, names: Vec<String>) -> Option<RuleScope> {
        match kind {
            "everyone" => Some(RuleScope::Everyone),
            "roles" => Some(RuleScope::Roles(names)),
            "groups" => Some(RuleScope::Groups(names)),
            "users" => Some(RuleScope::Users(names)),
            _ => None,
        }
    }

    /// What kind of directory entry the names are.
    pub fn target_kind(&self) -> Option<TargetKind> {
        match self {
            RuleScope::Everyone => None,
            RuleScope::Roles(_) => Some(TargetKind::Role),
            RuleScope::Groups(_) => Some(TargetKind::Group),
            RuleScope::Users(_) => Some(TargetKind::User),
        }
    }
}

impl fmt::Display for RuleScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleScope::Everyone => f.write_str("everyone"),
            other => write!(f, "{} {}", other.kind(), other.names().join(", ")),
        }
    }
}

/// An allowed-IP rule: a named set of ranges and whom it applies to.
///
/// In tessera.toml (`[[ip_rules]]`) the scope is exactly one of `everyone = true`, `roles = [...]`,
/// `groups = [...]` or `users = [...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "IpRuleToml", into = "IpRuleToml")]
pub struct IpRule {
    /// Unique name, shown in explanations and refusals.
    pub name: String,
    /// The allowed ranges; at least one.
    pub ranges: Vec<IpRange>,
    /// Whom the rule restricts.
    pub scope: RuleScope,
}

/// An IP rule as declared in tessera.toml; the same type as [`IpRule`].
pub type IpRuleDecl = IpRule;

/// The tessera.toml shape of an [`IpRule`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpRuleToml {
    /// See [`IpRule::name`].
    name: String,
    /// See [`IpRule::ranges`].
    ranges: Vec<IpRange>,
    /// The rule applies to everyone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    everyone: bool,
    /// The rule applies to these roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    /// The rule applies to these groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<String>>,
    /// The rule applies to these users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    users: Option<Vec<String>>,
}

impl TryFrom<IpRuleToml> for IpRule {
    type Error = String;

    fn try_from(t: IpRuleToml) -> Result<Self, String> {
        let scope = match (t.everyone, t.roles, t.groups, t.users) {
            (true, None, None, None) => RuleScope::Everyone,
            (false, Some(r), None, None) => RuleScope::Roles(r),
            (false, None, Some(g), None) => RuleScope::Groups(g),
            (false, None, None, Some(u)) => RuleScope::Users(u),
            _ => {
                return Err(format!(
                "ip rule {:?}: give exactly one of `everyone = true`, `roles`, `groups`, `users`",
                t.name
            ))
            }
        };
        Ok(IpRule {
            name: t.name,
            ranges: t.ranges,
            scope,
        })
    }
}

impl From<IpRule> for IpRuleToml {
    fn from(r: IpRule) -> Self {
        let mut t = IpRuleToml {
            name: r.name,
            ranges: r.ranges,
            everyone: false,
            roles: None,
            groups: None,
            users: None,
        };
        match r.scope {
            RuleScope::Everyone => t.everyone = true,
            RuleScope::Roles(n) => t.roles = Some(n),
            RuleScope::Groups(n) => t.groups = Some(n),
            RuleScope::Users(n) => t.users = Some(n),
        }
        t
    }
}

impl IpRule {
    /// Checks the name, that there is at least one range, and that a scope other than everyone lists
    /// at least one valid, distinct name. Does not check that the names exist (the directory does).
    pub fn validate(&self) -> Result<(), Error> {
        let item = || Item::IpRule(self.name.clone());
        check_name(&self.name).map_err(|reason| Error::Invalid {
            item: item(),
            reason,
        })?;
        if self.ranges.is_empty() {
            return Err(Error::Invalid {
                item: item(),
                reason: "no ranges given; a rule without ranges would admit nobody".to_owned(),
            });
        }
        if !matches!(self.scope, RuleScope::Everyone) {
            let names = self.scope.names();
            if names.is_empty() {
                return Err(Error::Invalid {
                    item: item(),
                    reason: format!("applies to {} but lists none", self.scope.kind()),
                });
            }
            let mut seen = HashSet::new();
            for name in names {
                check_name(name).map_err(|reason| Error::Invalid {
                    item: item(),
                    reason: format!("{} name {name:?}: {reason}", self.scope.kind()),
                })?;
                if !seen.insert(name) {
                    return Err(Error::Invalid {
                        item: item(),
                        reason: format!("{} {name:?} is listed twice", self.scope.kind()),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A security policy (a risk tier such as "standard", "sensitive", "admin").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityPolicy {
    /// Unique name, shown in explanations.
    pub name: String,
    /// Whether a second factor is needed to sign in and to reach any SP.
    pub mfa_required: bool,
    /// Which second factors satisfy MFA under this policy (for its own requirement and for an SP's
    /// minimum); never empty, never only `recovery_code`.
    pub mfa_methods: Vec<MfaMethod>,
    /// A session ends this long after sign-in (capped by `session.absolute_lifetime_secs`).
    pub session_absolute_secs: u64,
    /// A session unused this long ends (capped by `session.idle_timeout_secs`).
    pub session_idle_secs: u64,
    /// How recent the MFA (or, without MFA, the sign-in) must be for a new SSO; `None` = any time
    /// during the session.
    pub reauth_interval_secs: Option<u64>,
    /// Minimum password length in characters for users under this policy (at least the global minimum).
    pub password_min_length: u32,
    /// How many of the user's latest passwords (the current one included) a new one may not repeat;
    /// 0 = no history check. At most [`MAX_PASSWORD_HISTORY`].
    #[serde(default)]
    pub password_history: u32,
    /// Days after which a password must be changed at the next sign-in; `None` = never expires.
    #[serde(default)]
    pub password_max_age_days: Option<u32>,
    /// How many security questions users under this policy answer (chosen at their first sign-in, asked
    /// by self-service recovery); 0 = none asked, and recovery then needs an administrator's link.
    #[serde(default)]
    pub security_questions_required: u32,
    /// A second factor (from `mfa_methods`) for a sign-in from a country or a device never seen on
    /// the user's earlier successful sign-ins (login monitoring's anomaly flags).
    #[serde(default)]
    pub mfa_on_new_device_or_country: bool,
    /// The policy's own allowlist: when set, the address must ALSO be inside it.
    pub ip_ranges: Option<Vec<IpRange>>,
    /// Whether this is the default policy, for users no assignment reaches. At most one.
    pub is_default: bool,
}

impl SecurityPolicy {
    /// A policy named `name` with the built-in settings: no MFA (any method accepted when an SP asks for
    /// it), the default session lifetimes, the global password minimum, no allowlist, not the default.
    pub fn new(name: impl Into<String>) -> Self {
        SecurityPolicy {
            name: name.into(),
            mfa_required: false,
            mfa_methods: MfaMethod::ALL.to_vec(),
            session_absolute_secs: DEFAULT_ABSOLUTE_SECS,
            session_idle_secs: DEFAULT_IDLE_SECS,
            reauth_interval_secs: None,
            password_min_length: MIN_PASSWORD_CHARS as u32,
            password_history: 0,
            password_max_age_days: None,
            security_questions_required: 0,
            mfa_on_new_device_or_country: false,
            ip_ranges: None,
            is_default: false,
        }
    }

    /// The policy that applies when nothing is assigned and no policy is the default.
    pub fn builtin_default() -> Self {
        SecurityPolicy::new(BUILTIN_POLICY_NAME)
    }

    /// Checks every setting; the error names the policy and the setting.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Error::Invalid {
            item: Item::Policy(self.name.clone()),
            reason,
        };
        check_name(&self.name).map_err(invalid)?;
        if self.name == BUILTIN_POLICY_NAME {
            return Err(invalid(format!(
                "the name {BUILTIN_POLICY_NAME:?} is reserved for the built-in default"
            )));
        }
        if self.mfa_methods.is_empty() {
            return Err(invalid("mfa_methods is empty".to_owned()));
        }
        let mut seen = HashSet::new();
        for m in &self.mfa_methods {
            if !seen.insert(m) {
                return Err(invalid(format!("MFA method {m} is listed twice")));
            }
        }
        if self.mfa_methods == [MfaMethod::RecoveryCode] {
            return Err(invalid(
                "recovery_code is only a fallback; also allow totp or webauthn".to_owned(),
            ));
        }
        if self.session_absolute_secs == 0 || self.session_idle_secs == 0 {
            return Err(invalid("session lifetimes must be positive".to_owned()));
        }
        if self.session_idle_secs > self.session_absolute_secs {
            return Err(invalid(format!(
                "idle timeout ({}s) is longer than the absolute lifetime ({}s)",
                self.session_idle_secs, self.session_absolute_secs
            )));
        }
        if self.reauth_interval_secs == Some(0) {
            return Err(invalid(
                "the re-authentication interval must be positive".to_owned(),
            ));
        }
        if (self.password_min_length as usize) < MIN_PASSWORD_CHARS {
            return Err(invalid(format!(
                "password minimum {} is below the global minimum of {MIN_PASSWORD_CHARS}",
                self.password_min_length
            )));
        }
        if self.password_min_length > MAX_PASSWORD_MIN_LENGTH {
            return Err(invalid(format!(
                "password minimum {} is above {MAX_PASSWORD_MIN_LENGTH}",
                self.password_min_length
            )));
        }
        if self.password_history > MAX_PASSWORD_HISTORY {
            return Err(invalid(format!(
                "password history {} is above {MAX_PASSWORD_HISTORY}",
                self.password_history
            )));
        }
        match self.password_max_age_days {
            Some(0) => {
                return Err(invalid(
                    "the maximum password age must be positive".to_owned(),
                ))
            }
            Some(days) if days > MAX_PASSWORD_AGE_DAYS => {
                return Err(invalid(format!(
                    "maximum password age {days} days is above {MAX_PASSWORD_AGE_DAYS}"
                )))
            }
            _ => {}
        }
        if self.security_questions_required > MAX_SECURITY_QUESTIONS {
            return Err(invalid(format!(
                "{} security questions required; at most {MAX_SECURITY_QUESTIONS}",
                self.security_questions_required
            )));
        }
        if self.ip_ranges.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                "ip_ranges is set but empty; it would admit nobody (omit it for no allowlist)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// The order used to break priority ties: greater is stricter. Compared in turn: MFA required,
    /// shorter re-authentication interval, has an allowlist, shorter absolute lifetime, shorter idle
    /// timeout, longer password minimum.
    pub(crate) fn strictness(
        &self,
    ) -> (
        bool,
        std::cmp::Reverse<u64>,
        bool,
        std::cmp::Reverse<u64>,
        std::cmp::Reverse<u64>,
        u32,
    ) {
        use std::cmp::Reverse;
        (
            self.mfa_required,
            Reverse(self.reauth_interval_secs.unwrap_or(u64::MAX)),
            self.ip_ranges.is_some(),
            Reverse(self.session_absolute_secs),
            Reverse(self.session_idle_secs),
            self.password_min_length,
        )
    }
}

/// Who a policy is assigned to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssignmentTarget {
    /// One user, by username: always wins.
    User(String),
    /// Members of a group.
    Group(String),
    /// Holders of a role.
    Role(String),
}

impl AssignmentTarget {
    /// The stored kind: `user`, `group` or `role`.
    pub fn kind(&self) -> &'static str {
        match self {
            AssignmentTarget::User(_) => "user",
            AssignmentTarget::Group(_) => "group",
            AssignmentTarget::Role(_) => "role",
        }
    }

    /// The username, group name or role name.
    pub fn name(&self) -> &str {
        match self {
            AssignmentTarget::User(n) | AssignmentTarget::Group(n) | AssignmentTarget::Role(n) => n,
        }
    }

    /// Rebuilds a target from its stored kind and name; `None` for an unknown kind.
    pub fn from_parts(kind: &str, name: String) -> Option<AssignmentTarget> {
        match kind {
            "user" => Some(AssignmentTarget::User(name)),
            "group" => Some(AssignmentTarget::Group(name)),
            "role" => Some(AssignmentTarget::Role(name)),
            _ => None,
        }
    }

    /// The directory kind of the name.
    pub fn target_kind(&self) -> TargetKind {
        match self {
            AssignmentTarget::User(_) => TargetKind::User,
            AssignmentTarget::Group(_) => TargetKind::Group,
            AssignmentTarget::Role(_) => TargetKind::Role,
        }
    }
}

impl fmt::Display for AssignmentTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind(), self.name())
    }
}

/// A policy assigned to a user, group or role. Each target has at most one assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAssignment {
    /// The policy's name.
    pub policy: String,
    /// Who gets it.
    pub target: AssignmentTarget,
    /// Among group and role assignments reaching a user, the highest wins (ignored for users).
    pub priority: i64,
}

/// An assignment as listed under a `[[policies]]` entry: `{ group = "finance", priority = 10 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AssignmentToml", into = "AssignmentToml")]
pub struct DeclaredAssignment {
    /// Who gets the policy.
    pub target: AssignmentTarget,
    /// See [`PolicyAssignment::priority`].
    pub priority: i64,
}

/// The tessera.toml shape of a [`DeclaredAssignment`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentToml {
    /// Assign to this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// Assign to this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// Assign to this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    /// See [`PolicyAssignment::priority`].
    #[serde(default)]
    priority: i64,
}

impl TryFrom<AssignmentToml> for DeclaredAssignment {
    type Error = String;

    fn try_from(t: AssignmentToml) -> Result<Self, String> {
        let target = match (t.user, t.group, t.role) {
            (Some(u), None, None) => AssignmentTarget::User(u),
            (None, Some(g), None) => AssignmentTarget::Group(g),
            (None, None, Some(r)) => AssignmentTarget::Role(r),
            _ => {
                return Err("an assignment names exactly one of `user`, `group`, `role`".to_owned())
            }
        };
        Ok(DeclaredAssignment {
            target,
            priority: t.priority,
        })
    }
}

impl From<DeclaredAssignment> for AssignmentToml {
    fn from(a: DeclaredAssignment) -> Self {
        let (mut user, mut group, mut role) = (None, None, None);
        match a.target {
            AssignmentTarget::User(n) => user = Some(n),
            AssignmentTarget::Group(n) => group = Some(n),
            AssignmentTarget::Role(n) => role = Some(n),
        }
        AssignmentToml {
            user,
            group,
            role,
            priority: a.priority,
        }
    }
}

/// A security policy as declared in tessera.toml (`[[policies]]`), with its assignments. Omitted
/// settings take the values of [`SecurityPolicy::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDecl {
    /// See [`SecurityPolicy::name`].
    pub name: String,
    /// See [`SecurityPolicy::mfa_required`].
    #[serde(default)]
    pub mfa_required: bool,
    /// See [`SecurityPolicy::mfa_methods`].
    #[serde(default = "all_mfa_methods")]
    pub mfa_methods: Vec<MfaMethod>,
    /// See [`SecurityPolicy::session_absolute_secs`].
    #[serde(default = "default_absolute_secs")]
    pub session_absolute_secs: u64,
    /// See [`SecurityPolicy::session_idle_secs`].
    #[serde(default = "default_idle_secs")]
    pub session_idle_secs: u64,
    /// See [`SecurityPolicy::reauth_interval_secs`].
    #[serde(default)]
    pub reauth_interval_secs: Option<u64>,
    /// See [`SecurityPolicy::password_min_length`].
    #[serde(default = "default_password_min_length")]
    pub password_min_length: u32,
    /// See [`SecurityPolicy::password_history`].
    #[serde(default)]
    pub password_history: u32,
    /// See [`SecurityPolicy::password_max_age_days`].
    #[serde(default)]
    pub password_max_age_days: Option<u32>,
    /// See [`SecurityPolicy::security_questions_required`].
    #[serde(default)]
    pub security_questions_required: u32,
    /// See [`SecurityPolicy::mfa_on_new_device_or_country`].
    #[serde(default)]
    pub mfa_on_new_device_or_country: bool,
    /// See [`SecurityPolicy::ip_ranges`].
    #[serde(default)]
    pub ip_ranges: Option<Vec<IpRange>>,
    /// See [`SecurityPolicy::is_default`].
    #[serde(default)]
    pub default: bool,
    /// Users, groups and roles that get this policy.
    #[serde(default)]
    pub assign: Vec<DeclaredAssignment>,
}

/// Serde default of [`PolicyDecl::mfa_methods`].
fn all_mfa_methods() -> Vec<MfaMethod> {
    MfaMethod::ALL.to_vec()
}

/// Serde default of [`PolicyDecl::session_absolute_secs`].
fn default_absolute_secs() -> u64 {
    DEFAULT_ABSOLUTE_SECS
}

/// Serde default of [`PolicyDecl::session_idle_secs`].
fn default_idle_secs() -> u64 {
    DEFAULT_IDLE_SECS
}

/// Serde default of [`PolicyDecl::password_min_length`].
fn default_password_min_length() -> u32 {
    MIN_PASSWORD_CHARS as u32
}

impl PolicyDecl {
    /// The policy this declares.
    pub fn policy(&self) -> SecurityPolicy {
        SecurityPolicy {
            name: self.name.clone(),
            mfa_required: self.mfa_required,
            mfa_methods: self.mfa_methods.clone(),
            session_absolute_secs: self.session_absolute_secs,
            session_idle_secs: self.session_idle_secs,
            reauth_interval_secs: self.reauth_interval_secs,
            password_min_length: self.password_min_length,
            password_history: self.password_history,
            password_max_age_days: self.password_max_age_days,
            security_questions_required: self.security_questions_required,
            mfa_on_new_device_or_country: self.mfa_on_new_device_or_country,
            ip_ranges: self.ip_ranges.clone(),
            is_default: self.default,
        }
    }

    /// The assignments this declares.
    pub fn assignments(&self) -> Vec<PolicyAssignment> {
        self.assign
            .iter()
            .map(|a| PolicyAssignment {
                policy: self.name.clone(),
                target: a.target.clone(),
                priority: a.priority,
            })
            .collect()
    }
}

/// A minimum an SP sets on the sessions that reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Requirement {
    /// The session must include a second factor the user's policy accepts.
    pub mfa: bool,
    /// ... done at most this long ago ("MFA within the last hour" = 3600). Implies `mfa`.
    pub mfa_within_secs: Option<u64>,
}

/// What an SP requires on top of the user's own rules and policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpRequirement {
    /// The SP's own allowlist: when set, the address must ALSO be inside it.
    pub ip_ranges: Option<Vec<IpRange>>,
    /// The minimum strength of the session.
    pub min: Option<Requirement>,
}

impl SpRequirement {
    /// Whether the SP requires nothing beyond the user's rules and policy.
    pub fn is_empty(&self) -> bool {
        self.ip_ranges.is_none() && self.min.is_none()
    }

    /// Checks that a set allowlist is not empty and that an MFA window is positive.
    pub fn validate(&self, entity_id: &str) -> Result<(), Error> {
        let invalid = |reason: &str| Error::Invalid {
            item: Item::Sp(entity_id.to_owned()),
            reason: reason.to_owned(),
        };
        if self.ip_ranges.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                "the allowlist is set but empty; it would admit nobody",
            ));
        }
        if let Some(min) = &self.min {
            if min.mfa_within_secs == Some(0) {
                return Err(invalid("the MFA window must be positive"));
            }
            if min.mfa_within_secs.is_some() && !min.mfa {
                return Err(invalid("an MFA window needs `mfa` to be required"));
            }
        }
        Ok(())
    }
}

/// Everything the decision depends on, as stored: the input of [`super::PolicySet::build`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyData {
    /// All IP rules.
    pub ip_rules: Vec<IpRule>,
    /// All security policies (the built-in default is not among them).
    pub policies: Vec<SecurityPolicy>,
    /// All policy assignments.
    pub assignments: Vec<PolicyAssignment>,
    /// Access requirements by SP entityID.
    pub sp_requirements: BTreeMap<String, SpRequirement>,
}

impl PolicyData {
    /// Validates every item and their consistency: unique rule and policy names, at most one default,
    /// at most one assignment per target, assignments naming existing policies. The existence of users,
    /// groups and roles is the directory's to check.
    pub fn validate(&self) -> Result<(), Error> {
        let mut rule_names = HashSet::new();
        for rule in &self.ip_rules {
            rule.validate()?;
            if !rule_names.insert(rule.name.as_str()) {
                return Err(Error::Duplicate {
                    item: Item::IpRule(rule.name.clone()),
                });
            }
        }
        let mut policy_names = HashSet::new();
        let mut default: Option<&str> = None;
        for policy in &self.policies {
            policy.validate()?;
            if !policy_names.insert(policy.name.as_str()) {
                return Err(Error::Duplicate {
                    item: Item::Policy(policy.name.clone()),
                });
            }
            if policy.is_default {
                if let Some(first) = default {
                    return Err(Error::TwoDefaults {
                        first: first.to_owned(),
                        second: policy.name.clone(),
                    });
                }
                default = Some(&policy.name);
            }
        }
        let mut targets = HashSet::new();
        for a in &self.assignments {
            let item = || Item::Assignment(a.target.clone());
            check_name(a.target.name()).map_err(|reason| Error::Invalid {
                item: item(),
                reason,
            })?;
            if !policy_names.contains(a.policy.as_str()) {
                return Err(Error::UnknownTarget {
                    item: item(),
                    kind: TargetKind::Policy,
                    name: a.policy.clone(),
                });
            }
            if !targets.insert(&a.target) {
                return Err(Error::Duplicate { item: item() });
            }
        }
        for (entity_id, req) in &self.sp_requirements {
            req.validate(entity_id)?;
        }
        Ok(())
    }
}

/// Validates the declarations of tessera.toml on their own (names, values, duplicates, one default,
/// assignments). Run at configuration load; the directory checks names against users, groups and roles
/// when it applies them.
pub fn validate_declarations(rules: &[IpRuleDecl], policies: &[PolicyDecl]) -> Result<(), Error> {
    PolicyData {
        ip_rules: rules.to_vec(),
        policies: policies.iter().map(PolicyDecl::policy).collect(),
        assignments: policies.iter().flat_map(PolicyDecl::assignments).collect(),
        sp_requirements: BTreeMap::new(),
    }
    .validate()
}

/// Rule, policy, user, group and role names: 1 to 255 characters, no control characters, no
/// surrounding whitespace. `Err` holds the reason.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "the name is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the name contains control characters".to_owned());
    }
    if name.trim() != name {
        return Err("the name starts or ends with whitespace".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn toml_rule_needs_exactly_one_scope() {
        let ok: IpRule = toml::from_str(
            "name = \"office\"\nranges = [\"10.0.0.0/8\"]\ngroups = [\"finance\"]\n",
        )
        .unwrap();
        assert_eq!(ok.scope, RuleScope::Groups(vec!["finance".into()]));
        let both = toml::from_str::<IpRule>(
            "name = \"x\"\nranges = [\"10.0.0.0/8\"]\neveryone = true\nusers = [\"a\"]\n",
        )
        .unwrap_err();
        assert!(both.to_string().contains("exactly one"), "{both}");
        let bad = toml::from_str::<IpRule>(
            "name = \"x\"\nranges = [\"10.0.0.300/8\"]\neveryone = true\n",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("10.0.0.300"), "{bad}");
        let round = toml::to_string(&ok).unwrap();
        assert_eq!(toml::from_str::<IpRule>(&round).unwrap(), ok);
    }

    #[test]
    fn policy_validation_names_the_setting() {
        let mut p = SecurityPolicy::new("admin");
        p.validate().unwrap();
        p.mfa_methods = vec![MfaMethod::RecoveryCode];
        assert!(p.validate().unwrap_err().to_string().contains("fallback"));
        p.mfa_methods = vec![MfaMethod::Totp];
        p.password_min_length = 8;
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("policy \"admin\"") && e.contains("below"), "{e}");
        p.password_min_length = 12;
        p.password_history = MAX_PASSWORD_HISTORY + 1;
        assert!(p.validate().unwrap_err().to_string().contains("history"));
        p.password_history = 5;
        p.password_max_age_days = Some(0);
        assert!(p.validate().unwrap_err().to_string().contains("age"));
        p.password_max_age_days = Some(90);
        p.security_questions_required = MAX_SECURITY_QUESTIONS + 1;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("security questions"));
        p.security_questions_required = 2;
        p.validate().unwrap();
        p.session_idle_secs = p.session_absolute_secs + 1;
        assert!(p.validate().unwrap_err().to_string().contains("idle"));
        let reserved = SecurityPolicy::new(BUILTIN_POLICY_NAME);
        assert!(reserved
            .validate()
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }

    #[test]
    fn data_validation_finds_duplicates_defaults_and_unknown_policies() {
        let mut a = SecurityPolicy::new("a");
        a.is_default = true;
        let mut b = SecurityPolicy::new("b");
        b.is_default = true;
        let data = PolicyData {
            policies: vec![a.clone(), b],
            ..PolicyData::default()
        };
        assert!(matches!(data.validate(), Err(Error::TwoDefaults { .. })));
        let data = PolicyData {
            policies: vec![a.clone()],
            assignments: vec![PolicyAssignment {
                policy: "nope".into(),
                target: AssignmentTarget::Group("g".into()),
                priority: 1,
            }],
            ..PolicyData::default()
        };
        assert_eq!(
            data.validate().unwrap_err().to_string(),
            "policy assignment to group \"g\" names unknown policy \"nope\""
        );
        let data = PolicyData {
            policies: vec![a.clone(), a],
            ..PolicyData::default()
        };
        assert_eq!(
            data.validate().unwrap_err().to_string(),
            "policy \"a\" is given more than once"
        );
    }
}
