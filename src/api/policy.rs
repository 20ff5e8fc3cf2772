//! The access policy: IP allowlist rules, security policies, their assignments, and the explanation of
//! a decision (the same code path as `tessera policy explain`).
//!
//! Every change here is previewed against the acting admin first (issue #4, no self-lockout): when the
//! change would deny the admin a fresh sign-in from the address of this very request, it is refused
//! with 409 `would_lock_out` unless `?confirm=true` is given.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{authorize, Action, Actor};
use super::{audit, no_content, ApiError, ApiJson, ApiPath, ApiQuery, Confirm, ErrorBody, NOTHING};
use crate::directory::{AdminRole, ManagedBy};
use crate::policy::{
    AssignmentTarget, IpRange, IpRule, MfaMethod, Outcome, PolicyAssignment, PolicyData, RuleScope,
    SecurityPolicy,
};
use crate::session::AuthnMethod;
use crate::web::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_ip_rules, create_ip_rule))
        .routes(routes!(delete_ip_rule))
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(update_policy, delete_policy))
        .routes(routes!(list_assignments, assign_policy))
        .routes(routes!(unassign_policy))
        .routes(routes!(explain))
}

/// An IP allowlist rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct IpRuleOut {
    pub name: String,
    pub ranges: Vec<String>,
    /// `everyone`, `roles`, `groups` or `users`.
    pub applies_to: String,
    /// The roles, groups or users (empty for everyone).
    pub names: Vec<String>,
    /// `cli` (changeable here) or `config` (declared in tessera.toml).
    pub managed_by: String,
}

fn rule_out(rule: &IpRule, managed_by: ManagedBy) -> IpRuleOut {
    IpRuleOut {
        name: rule.name.clone(),
        ranges: rule.ranges.iter().map(ToString::to_string).collect(),
        applies_to: rule.scope.kind().to_owned(),
        names: rule.scope.names().to_vec(),
        managed_by: managed_by.to_string(),
    }
}

/// A new IP rule: a name, ranges, and exactly one of `everyone`, `roles`, `groups`, `users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRuleIn {
    pub name: String,
    /// CIDR, single addresses, or `from-to`.
    pub ranges: Vec<String>,
    #[serde(default)]
    pub everyone: bool,
    pub roles: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub users: Option<Vec<String>>,
}

/// A security policy (risk tier).
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyOut {
    pub name: String,
    pub mfa_required: bool,
    pub mfa_methods: Vec<String>,
    pub session_absolute_secs: u64,
    pub session_idle_secs: u64,
    pub reauth_interval_secs: Option<u64>,
    pub password_min_length: u32,
    pub ip_ranges: Option<Vec<String>>,
    pub is_default: bool,
    /// `cli` or `config`.
    pub managed_by: String,
}

fn policy_out(p: &SecurityPolicy, managed_by: ManagedBy) -> PolicyOut {
    PolicyOut {
        name: p.name.clone(),
        mfa_required: p.mfa_required,
        mfa_methods: p
            .mfa_methods
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect(),
        session_absolute_secs: p.session_absolute_secs,
        session_idle_secs: p.session_idle_secs,
        reauth_interval_secs: p.reauth_interval_secs,
        password_min_length: p.password_min_length,
        ip_ranges: p
            .ip_ranges
            .as_ref()
            .map(|r| r.iter().map(ToString::to_string).collect()),
        is_default: p.is_default,
        managed_by: managed_by.to_string(),
    }
}

/// A security policy to create or replace; a setting left out gets the built-in default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    /// Required when creating; when replacing, absent or equal to the name in the path.
    pub name: Option<String>,
    #[serde(default)]
    pub mfa_required: bool,
    /// `totp`, `webauthn`, `recovery_code`; default all.
    pub mfa_methods: Option<Vec<String>>,
    pub session_absolute_secs: Option<u64>,
    pub session_idle_secs: Option<u64>,
    pub reauth_interval_secs: Option<u64>,
    pub password_min_length: Option<u32>,
    /// The policy's own allowlist.
    pub ip_ranges: Option<Vec<String>>,
    #[serde(default)]
    pub is_default: bool,
}

/// The assignment of a policy to a user, group or role.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentIo {
    pub policy: String,
    /// `user`, `group` or `role`.
    pub target_kind: String,
    pub target_name: String,
    /// Among group and role assignments reaching a user, the highest wins.
    #[serde(default)]
    pub priority: i64,
    /// `cli` or `config` (ignored in requests).
    #[serde(default, skip_deserializing)]
    pub managed_by: Option<String>,
}

/// What to explain.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ExplainQuery {
    /// The username.
    pub user: String,
    /// The address the user would come from.
    pub ip: String,
    /// The SP's entityID, for an SSO to it.
    pub sp: Option<String>,
    /// Second factors the session completed just now, comma-separated (`totp,webauthn`).
    pub methods: Option<String>,
}

/// A decision with the trace of every rule and policy that led to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainOut {
    /// `admit`, `step_up` or `deny`.
    pub decision: String,
    /// The decision in words, as `tessera policy explain` prints it.
    pub summary: String,
    /// The user's effective policy.
    pub policy: String,
    pub trace: Vec<String>,
}

fn parse_ranges(list: &[String]) -> Result<Vec<IpRange>, ApiError> {
    list.iter()
        .map(|r| {
            r.parse::<IpRange>()
                .map_err(|e| ApiError::invalid(format!("range {r:?}: {e}")))
        })
        .collect()
}

fn parse_target(kind: &str, name: &str) -> Result<AssignmentTarget, ApiError> {
    AssignmentTarget::from_parts(kind, name.to_owned()).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown target kind {kind:?}; one of user, group, role"
        ))
    })
}

/// Refuses (403) a change by an admin who is not a super admin that would change the IP rules or the
/// effective policy of any super admin (an org admin cannot restrict or weaken what applies to the
/// admins above them). Refuses (409) a change that would lock the acting admin out from this
/// request's address, unless confirmed. Also refuses (422) a change that does not compile with the
/// rest of the policy.
async fn guard_lockout(
    idp: &AppState,
    actor: &Actor,
    confirm: bool,
    change: impl FnOnce(&mut PolicyData),
) -> Result<(), ApiError> {
    let now = chrono::Utc::now().timestamp();
    let mut proposed = idp.directory.load_policy_set().await?.data().clone();
    change(&mut proposed);
    if !actor.has(AdminRole::SuperAdmin) {
        let affected = idp
            .directory
            .super_admins_affected(proposed.clone())
            .await?;
        if !affected.is_empty() {
            return Err(affects_super_admin(&affected));
        }
    }
    let decision = idp
        .directory
        .lockout_preview(&actor.user.username, actor.ip, now, move |d| *d = proposed)
        .await?;
    match decision {
        Some(decision) if confirm => {
            tracing::warn!(admin = %actor.user.username, ip = %actor.ip, %decision, "admin confirmed a change that locks them out");
            Ok(())
        }
        Some(decision) => Err(ApiError::conflict(
            "would_lock_out",
            format!(
                "This change would lock you out from {}: {}. Repeat it with ?confirm=true to apply it anyway",
                actor.ip, decision.outcome
            ),
        )),
        None => Ok(()),
    }
}

/// The refusal of a change that touches super admins, naming them.
pub(super) fn affects_super_admin(names: &[String]) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "affects_super_admin",
        format!(
            "This change would affect super admin(s) {}; only a super admin may make it",
            names.join(", ")
        ),
    )
}

#[utoipa::path(get, path = "/api/v1/ip-rules", tag = "access policy",
    responses((status = 200, body = [IpRuleOut]), (status = "4XX", body = ErrorBody)))]
/// Lists the IP allowlist rules.
async fn list_ip_rules(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<IpRuleOut>>, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let rules = idp.directory.list_ip_rules().await?;
    Ok(ApiJson(
        rules.iter().map(|(r, m)| rule_out(r, *m)).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/ip-rules", tag = "access policy", params(Confirm),
    request_body = IpRuleIn,
    responses((status = 201, body = IpRuleOut), (status = "4XX", body = ErrorBody)))]
/// Adds an IP allowlist rule.
async fn create_ip_rule(
    State(idp): State<AppState>,
    actor: Actor,
    ApiQuery(confirm): ApiQuery<Confirm>,
    ApiJson(body): ApiJson<IpRuleIn>,
) -> Result<(StatusCode, ApiJson<IpRuleOut>), ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let scope = match (body.everyone, body.roles, body.groups, body.users) {
        (true, None, None, None) => RuleScope::Everyone,
        (false, Some(r), None, None) => RuleScope::Roles(r),
        (false, None, Some(g), None) => RuleScope::Groups(g),
        (false, None, None, Some(u)) => RuleScope::Users(u),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of `everyone: true`, `roles`, `groups`, `users`",
            ))
        }
    };
    let rule = IpRule {
        name: body.name,
        ranges: parse_ranges(&body.ranges)?,
        scope,
    };
    rule.validate()?;
    let added = rule.clone();
    guard_lockout(&idp, &actor, confirm.confirm, move |d| {
        d.ip_rules.push(added)
    })
    .await?;
    idp.directory.add_ip_rule(&rule).await?;
    let out = rule_out(&rule, ManagedBy::Cli);
    audit(
        &idp,
        &actor,
        "ip_rule.create",
        &format!("ip_rule:{}", rule.name),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(out)))
}

#[utoipa::path(delete, path = "/api/v1/ip-rules/{name}", tag = "access policy",
    params(("name" = String, Path), Confirm),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Removes an IP allowlist rule.
async fn delete_ip_rule(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(name): ApiPath<String>,
    ApiQuery(confirm): ApiQuery<Confirm>,
) -> Result<StatusCode, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let (rule, managed_by) = idp
        .directory
        .get_ip_rule(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("ip rule", &name))?;
    let gone = name.clone();
    guard_lockout(&idp, &actor, confirm.confirm, move |d| {
        d.ip_rules.retain(|r| r.name != gone)
    })
    .await?;
    idp.directory.remove_ip_rule(&name).await?;
    let before = rule_out(&rule, managed_by);
    audit(
        &idp,
        &actor,
        "ip_rule.delete",
        &format!("ip_rule:{name}"),
        Some(&before),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}

#[utoipa::path(get, path = "/api/v1/policies", tag = "access policy",
    responses((status = 200, body = [PolicyOut]), (status = "4XX", body = ErrorBody)))]
/// Lists the security policies.
async fn list_policies(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<PolicyOut>>, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let policies = idp.directory.list_policies().await?;
    Ok(ApiJson(
        policies.iter().map(|(p, m)| policy_out(p, *m)).collect(),
    ))
}

/// A policy named `name` with the settings of `body` (built-in defaults for what it leaves out).
fn policy_from(name: String, body: PolicyIn) -> Result<SecurityPolicy, ApiError> {
    let mut p = SecurityPolicy::new(name);
    p.mfa_required = body.mfa_required;
    if let Some(methods) = body.mfa_methods {
        p.mfa_methods = methods
            .iter()
            .map(|m| {
                m.parse::<MfaMethod>()
                    .map_err(|e| ApiError::invalid(format!("mfa method {m:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = body.session_absolute_secs {
        p.session_absolute_secs = v;
    }
    if let Some(v) = body.session_idle_secs {
        p.session_idle_secs = v;
    }
    p.reauth_interval_secs = body.reauth_interval_secs;
    if let Some(v) = body.password_min_length {
        p.password_min_length = v;
    }
    p.ip_ranges = body.ip_ranges.as_deref().map(parse_ranges).transpose()?;
    p.is_default = body.is_default;
    p.validate()?;
    Ok(p)
}

/// The change to the declarations that puts `p` in place of any policy of its name.
fn put_policy(p: SecurityPolicy) -> impl FnOnce(&mut PolicyData) {
    move |d| {
        if p.is_default {
            d.policies.iter_mut().for_each(|x| x.is_default = false);
        }
        d.policies.retain(|x| x.name != p.name);
        d.policies.push(p);
    }
}

#[utoipa::path(post, path = "/api/v1/policies", tag = "access policy", params(Confirm),
    request_body = PolicyIn,
    responses((status = 201, body = PolicyOut), (status = "4XX", body = ErrorBody)))]
/// Adds a security policy.
async fn create_policy(
    State(idp): State<AppState>,
    actor: Actor,
    ApiQuery(confirm): ApiQuery<Confirm>,
    ApiJson(body): ApiJson<PolicyIn>,
) -> Result<(StatusCode, ApiJson<PolicyOut>), ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("a new policy needs a name"))?;
    let p = policy_from(name, body)?;
    guard_lockout(&idp, &actor, confirm.confirm, put_policy(p.clone())).await?;
    idp.directory.add_policy(&p).await?;
    let out = policy_out(&p, ManagedBy::Cli);
    audit(
        &idp,
        &actor,
        "policy.create",
        &format!("policy:{}", p.name),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(out)))
}

#[utoipa::path(put, path = "/api/v1/policies/{name}", tag = "access policy",
    params(("name" = String, Path), Confirm), request_body = PolicyIn,
    responses((status = 200, body = PolicyOut), (status = "4XX", body = ErrorBody)))]
/// Replaces the settings of a security policy.
async fn update_policy(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(name): ApiPath<String>,
    ApiQuery(confirm): ApiQuery<Confirm>,
    ApiJson(body): ApiJson<PolicyIn>,
) -> Result<ApiJson<PolicyOut>, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::invalid("a policy cannot be renamed"));
    }
    let (current, managed_by) = idp
        .directory
        .get_policy(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("policy", &name))?;
    let p = policy_from(name.clone(), body)?;
    guard_lockout(&idp, &actor, confirm.confirm, put_policy(p.clone())).await?;
    idp.directory.update_policy(&p).await?;
    let before = policy_out(&current, managed_by);
    let out = policy_out(&p, managed_by);
    audit(
        &idp,
        &actor,
        "policy.update",
        &format!("policy:{name}"),
        Some(&before),
        Some(&out),
    )
    .await?;
    Ok(ApiJson(out))
}

#[utoipa::path(delete, path = "/api/v1/policies/{name}", tag = "access policy",
    params(("name" = String, Path), Confirm),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Removes a security policy and its assignments.
async fn delete_policy(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(name): ApiPath<String>,
    ApiQuery(confirm): ApiQuery<Confirm>,
) -> Result<StatusCode, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let (current, managed_by) = idp
        .directory
        .get_policy(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("policy", &name))?;
    let gone = name.clone();
    guard_lockout(&idp, &actor, confirm.confirm, move |d| {
        d.policies.retain(|p| p.name != gone);
        d.assignments.retain(|a| a.policy != gone);
    })
    .await?;
    idp.directory.remove_policy(&name).await?;
    let before = policy_out(&current, managed_by);
    audit(
        &idp,
        &actor,
        "policy.delete",
        &format!("policy:{name}"),
        Some(&before),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}

#[utoipa::path(get, path = "/api/v1/policy-assignments", tag = "access policy",
    responses((status = 200, body = [AssignmentIo]), (status = "4XX", body = ErrorBody)))]
/// Lists the policy assignments.
async fn list_assignments(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<AssignmentIo>>, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let list = idp.directory.list_policy_assignments().await?;
    Ok(ApiJson(
        list.into_iter()
            .map(|(a, m)| AssignmentIo {
                policy: a.policy,
                target_kind: a.target.kind().to_owned(),
                target_name: a.target.name().to_owned(),
                priority: a.priority,
                managed_by: Some(m.to_string()),
            })
            .collect(),
    ))
}

#[utoipa::path(put, path = "/api/v1/policy-assignments", tag = "access policy", params(Confirm),
    request_body = AssignmentIo,
    responses((status = 200, body = AssignmentIo), (status = "4XX", body = ErrorBody)))]
/// Assigns a policy to a user, group or role (replacing that target's assignment).
async fn assign_policy(
    State(idp): State<AppState>,
    actor: Actor,
    ApiQuery(confirm): ApiQuery<Confirm>,
    ApiJson(body): ApiJson<AssignmentIo>,
) -> Result<ApiJson<AssignmentIo>, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let assignment = PolicyAssignment {
        policy: body.policy.clone(),
        target: parse_target(&body.target_kind, &body.target_name)?,
        priority: body.priority,
    };
    let added = assignment.clone();
    guard_lockout(&idp, &actor, confirm.confirm, move |d| {
        d.assignments.retain(|a| a.target != added.target);
        d.assignments.push(added);
    })
    .await?;
    idp.directory.assign_policy(&assignment).await?;
    let out = AssignmentIo {
        managed_by: Some(ManagedBy::Cli.to_string()),
        ..body
    };
    audit(
        &idp,
        &actor,
        "policy.assign",
        &format!("{}:{}", out.target_kind, out.target_name),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok(ApiJson(out))
}

#[utoipa::path(delete, path = "/api/v1/policy-assignments/{kind}/{name}", tag = "access policy",
    params(("kind" = String, Path, description = "user, group or role"), ("name" = String, Path), Confirm),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Removes the policy assignment of a user, group or role.
async fn unassign_policy(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath((kind, name)): ApiPath<(String, String)>,
    ApiQuery(confirm): ApiQuery<Confirm>,
) -> Result<StatusCode, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let target = parse_target(&kind, &name)?;
    let gone = target.clone();
    guard_lockout(&idp, &actor, confirm.confirm, move |d| {
        d.assignments.retain(|a| a.target != gone)
    })
    .await?;
    if !idp.directory.unassign_policy(&target).await? {
        return Err(ApiError::not_found(
            "policy assignment of",
            &target.to_string(),
        ));
    }
    audit(
        &idp,
        &actor,
        "policy.unassign",
        &format!("{kind}:{name}"),
        Some(&serde_json::json!({ "target_kind": kind, "target_name": name })),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}

#[utoipa::path(get, path = "/api/v1/explain", tag = "access policy", params(ExplainQuery),
    responses((status = 200, body = ExplainOut), (status = "4XX", body = ErrorBody)))]
/// What the access policy decides for a user signing in now from an address (optionally to an SP,
/// with second factors), and why: the same decision and trace as `tessera policy explain`.
async fn explain(
    State(idp): State<AppState>,
    actor: Actor,
    ApiQuery(query): ApiQuery<ExplainQuery>,
) -> Result<ApiJson<ExplainOut>, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let ip: IpAddr = query
        .ip
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid(format!("{:?} is not an IP address", query.ip)))?;
    let mut methods = Vec::new();
    for m in query.methods.iter().flat_map(|m| m.split(',')) {
        let m = m.trim();
        if m.is_empty() {
            continue;
        }
        methods.push(match m {
            "password" => AuthnMethod::Password,
            other => other
                .parse::<MfaMethod>()
                .map(MfaMethod::to_authn)
                .map_err(|e| ApiError::invalid(format!("method {other:?}: {e}")))?,
        });
    }
    let now = chrono::Utc::now().timestamp();
    let decision = idp
        .directory
        .explain_access(&query.user, ip, query.sp.as_deref(), &methods, now)
        .await?;
    Ok(ApiJson(ExplainOut {
        decision: match decision.outcome {
            Outcome::Admit => "admit",
            Outcome::StepUp { .. } => "step_up",
            Outcome::Deny { .. } => "deny",
        }
        .to_owned(),
        summary: decision.outcome.to_string(),
        policy: decision.policy,
        trace: decision.trace,
    }))
}
