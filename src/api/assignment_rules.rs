//! Conditional app assignment rules (issue #6, "Assignment rules"): SPs granted to users by their
//! attributes, groups and roles. The rule format is the one of `crate::policy::AssignmentRule`
//! (docs/admin-api.md shows an example); the directory validates it and stores it in one transaction.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{authorize, Action, Actor};
use super::{audit, no_content, ApiError, ApiJson, ApiPath, ErrorBody, NOTHING};
use crate::policy::AssignmentRule;
use crate::web::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(replace_rule, delete_rule))
}

/// An assignment rule: `{"name": ..., "condition": {"any": [{"all": [{"group": "sales"},
/// {"attribute": {"name": "department", "values": ["Sales"]}}]}]}, "targets": [entityID...],
/// "enabled": true}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct RuleIo(pub serde_json::Value);

fn rule_of(value: serde_json::Value) -> Result<AssignmentRule, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("assignment rule: {e}")))
}

fn io_of(rule: &AssignmentRule) -> RuleIo {
    RuleIo(serde_json::to_value(rule).unwrap_or(serde_json::Value::Null))
}

#[utoipa::path(get, path = "/api/v1/assignment-rules", tag = "access policy",
    responses((status = 200, body = [RuleIo]), (status = "4XX", body = ErrorBody)))]
/// Lists the conditional assignment rules.
async fn list_rules(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<RuleIo>>, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let rules = idp.directory.list_assignment_rules().await?;
    Ok(ApiJson(rules.iter().map(io_of).collect()))
}

#[utoipa::path(post, path = "/api/v1/assignment-rules", tag = "access policy",
    request_body = RuleIo,
    responses((status = 201, body = RuleIo), (status = "4XX", body = ErrorBody)))]
/// Adds a conditional assignment rule.
async fn create_rule(
    State(idp): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<RuleIo>,
) -> Result<(StatusCode, ApiJson<RuleIo>), ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let rule = rule_of(body.0)?;
    idp.directory.add_assignment_rule(&rule).await?;
    let out = io_of(&rule);
    audit(
        &idp,
        &actor,
        "assignment_rule.create",
        &format!("assignment_rule:{}", rule.name),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(out)))
}

#[utoipa::path(put, path = "/api/v1/assignment-rules/{name}", tag = "access policy",
    params(("name" = String, Path)), request_body = RuleIo,
    responses((status = 200, body = RuleIo), (status = "4XX", body = ErrorBody)))]
/// Replaces the condition, targets and enabled flag of a rule.
async fn replace_rule(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<RuleIo>,
) -> Result<ApiJson<RuleIo>, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let rule = rule_of(body.0)?;
    if rule.name != name {
        return Err(ApiError::invalid("an assignment rule cannot be renamed"));
    }
    let before = idp
        .directory
        .get_assignment_rule(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("assignment rule", &name))?;
    idp.directory.update_assignment_rule(&rule).await?;
    let out = io_of(&rule);
    audit(
        &idp,
        &actor,
        "assignment_rule.update",
        &format!("assignment_rule:{name}"),
        Some(&io_of(&before)),
        Some(&out),
    )
    .await?;
    Ok(ApiJson(out))
}

#[utoipa::path(delete, path = "/api/v1/assignment-rules/{name}", tag = "access policy",
    params(("name" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Removes a rule.
async fn delete_rule(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let before = idp
        .directory
        .get_assignment_rule(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("assignment rule", &name))?;
    idp.directory.remove_assignment_rule(&name).await?;
    audit(
        &idp,
        &actor,
        "assignment_rule.delete",
        &format!("assignment_rule:{name}"),
        Some(&io_of(&before)),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}
