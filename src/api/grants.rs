//! Admin role grants, API tokens and the admin audit trail.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{authorize, Action, Actor};
use super::users::visible_user;
use super::{audit, no_content, ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, NOTHING};
use crate::directory::{AdminGrant, AdminRole, ApiToken, TokenScope};
use crate::policy::IpRange;
use crate::web::AppState;

/// Longest token lifetime, in days.
pub const MAX_TOKEN_DAYS: u32 = 366;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_grants, create_grant))
        .routes(routes!(revoke_grant))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_audit))
}

/// An admin role held by a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantOut {
    pub id: i64,
    pub username: String,
    /// `super_admin`, `org_admin`, `app_admin` or `helpdesk`.
    pub role: String,
    /// The SP's entityID, for `app_admin`.
    pub sp: Option<String>,
    pub granted_by: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<AdminGrant> for GrantOut {
    fn from(g: AdminGrant) -> Self {
        GrantOut {
            id: g.id,
            username: g.username,
            role: g.role.as_str().to_owned(),
            sp: g.sp,
            granted_by: g.granted_by,
            created_at: g.created_at,
        }
    }
}

/// A new grant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantIn {
    pub username: String,
    /// `super_admin`, `org_admin`, `app_admin` or `helpdesk`.
    pub role: String,
    /// The SP's entityID; required for `app_admin`, refused for the others.
    pub sp: Option<String>,
}

/// An API token as listed (never the token itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenOut {
    pub id: i64,
    pub owner: String,
    pub name: String,
    /// `read` or `write`.
    pub scope: String,
    /// Where it may be used from, besides the owner's allowlists; `null`: anywhere they allow.
    pub ip_ranges: Option<Vec<String>>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds.
    pub last_used: Option<i64>,
}

impl From<ApiToken> for TokenOut {
    fn from(t: ApiToken) -> Self {
        TokenOut {
            id: t.id,
            owner: t.owner,
            name: t.name,
            scope: t.scope.as_str().to_owned(),
            ip_ranges: t
                .ip_ranges
                .map(|r| r.iter().map(ToString::to_string).collect()),
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used: t.last_used,
        }
    }
}

/// A new token for the calling admin.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIn {
    pub name: String,
    /// `read` or `write`.
    pub scope: String,
    /// Lifetime in days, 1 to 366 (default 30).
    pub expires_in_days: Option<u32>,
    /// Ranges the token may be used from (CIDR, address, or from-to).
    pub ip_ranges: Option<Vec<String>>,
}

/// A created token: the token text is shown here once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub info: TokenOut,
}

/// One admin change.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditOut {
    /// Unix milliseconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The item before (JSON), `null` when it did not exist.
    #[schema(value_type = Object)]
    pub before: Option<serde_json::Value>,
    /// The item after (JSON), `null` when it no longer exists.
    #[schema(value_type = Object)]
    pub after: Option<serde_json::Value>,
    pub client_ip: String,
}

/// How many audit entries to return.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// 1 to 1000, default 100.
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/admin-grants", tag = "admin grants",
    responses((status = 200, body = [GrantOut]), (status = "4XX", body = ErrorBody)))]
/// Every admin grant.
async fn list_grants(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<GrantOut>>, ApiError> {
    authorize(&idp, &actor, Action::ReadGrants).await?;
    let grants = idp.directory.list_admin_grants().await?;
    Ok(ApiJson(grants.into_iter().map(GrantOut::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/admin-grants", tag = "admin grants", request_body = GrantIn,
    responses((status = 201, body = GrantOut), (status = "4XX", body = ErrorBody)))]
/// Grants an admin role. Nobody can grant a role to themselves; org admins cannot grant super admin
/// nor change super admins.
async fn create_grant(
    State(idp): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<GrantIn>,
) -> Result<(StatusCode, ApiJson<GrantOut>), ApiError> {
    let role: AdminRole = body.role.parse().map_err(ApiError::invalid)?;
    let target = visible_user(&idp, &actor, &body.username).await?;
    authorize(
        &idp,
        &actor,
        Action::Grant {
            target: &target,
            role,
        },
    )
    .await?;
    let grant = idp
        .directory
        .grant_admin(
            &target.username,
            role,
            body.sp.as_deref(),
            &actor.user.username,
        )
        .await?;
    let out = GrantOut::from(grant);
    audit(
        &idp,
        &actor,
        "grant.create",
        &format!("user:{}", out.username),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(out)))
}

#[utoipa::path(delete, path = "/api/v1/admin-grants/{id}", tag = "admin grants",
    params(("id" = i64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Revokes an admin grant.
async fn revoke_grant(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let grant = idp
        .directory
        .get_admin_grant(id)
        .await?
        .ok_or_else(|| ApiError::not_found("admin grant", &id.to_string()))?;
    authorize(&idp, &actor, Action::Revoke(&grant)).await?;
    idp.directory.revoke_admin_grant(id).await?;
    let target = format!("user:{}", grant.username);
    let before = GrantOut::from(grant);
    audit(
        &idp,
        &actor,
        "grant.revoke",
        &target,
        Some(&before),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = [TokenOut]), (status = "4XX", body = ErrorBody)))]
/// API tokens: one's own; super admins see everyone's, org admins everyone's but super admins'.
async fn list_tokens(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<TokenOut>>, ApiError> {
    authorize(&idp, &actor, Action::OwnTokens).await?;
    let owner = if actor.is_org_wide() {
        None
    } else {
        Some(actor.user.id)
    };
    let mut out = Vec::new();
    for token in idp.directory.list_api_tokens(owner).await? {
        if authorize(&idp, &actor, Action::OthersToken(&token))
            .await
            .is_ok()
        {
            out.push(TokenOut::from(token));
        }
    }
    Ok(ApiJson(out))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenIn,
    responses((status = 201, body = CreatedToken), (status = "4XX", body = ErrorBody)))]
/// Creates an API token owned by the caller. The token is in this answer only.
async fn create_token(
    State(idp): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<TokenIn>,
) -> Result<(StatusCode, ApiJson<CreatedToken>), ApiError> {
    authorize(&idp, &actor, Action::CreateToken).await?;
    let scope: TokenScope = body.scope.parse().map_err(ApiError::invalid)?;
    let days = body.expires_in_days.unwrap_or(30);
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(ApiError::invalid(format!(
            "expires_in_days must be 1 to {MAX_TOKEN_DAYS}"
        )));
    }
    let ranges = body
        .ip_ranges
        .map(|list| {
            list.iter()
                .map(|r| {
                    r.parse::<IpRange>()
                        .map_err(|e| ApiError::invalid(format!("range {r:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let expires_at = chrono::Utc::now().timestamp() + i64::from(days) * 86_400;
    let (token, secret) = idp
        .directory
        .create_api_token(
            &actor.user.username,
            &body.name,
            scope,
            expires_at,
            ranges.as_deref(),
        )
        .await?;
    let info = TokenOut::from(token);
    audit(
        &idp,
        &actor,
        "token.create",
        &format!("token:{}", info.id),
        NOTHING,
        Some(&info),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken {
            token: secret,
            info,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = i64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Revokes an API token: one's own, or (super and org admins) another admin's.
async fn revoke_token(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let token = idp
        .directory
        .get_api_token(id)
        .await?
        .ok_or_else(|| ApiError::not_found("token", &id.to_string()))?;
    if authorize(&idp, &actor, Action::OthersToken(&token))
        .await
        .is_err()
    {
        // Someone else's token that the caller may not see: as if it did not exist.
        return Err(ApiError::not_found("token", &id.to_string()));
    }
    idp.directory.revoke_api_token(id).await?;
    let before = TokenOut::from(token);
    audit(
        &idp,
        &actor,
        "token.revoke",
        &format!("token:{id}"),
        Some(&before),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = [AuditOut]), (status = "4XX", body = ErrorBody)))]
/// The newest admin changes first.
async fn list_audit(
    State(idp): State<AppState>,
    actor: Actor,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<ApiJson<Vec<AuditOut>>, ApiError> {
    authorize(&idp, &actor, Action::ReadAudit).await?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1 to 1000"));
    }
    let parse = |t: Option<String>| t.and_then(|t| serde_json::from_str(&t).ok());
    let entries = idp.directory.admin_audit(limit).await?;
    Ok(ApiJson(
        entries
            .into_iter()
            .map(|e| AuditOut {
                at: e.at,
                actor: e.actor,
                action: e.action,
                target: e.target,
                before: parse(e.before),
                after: parse(e.after),
                client_ip: e.client_ip,
            })
            .collect(),
    ))
}
