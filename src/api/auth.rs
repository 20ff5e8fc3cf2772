//! Who is calling the admin API, and what they may do.
//!
//! [`Actor`] is an extractor: a request gets one only with a valid, unexpired API token
//! (`Authorization: Bearer tsr_...`) or an admin's browser session (plus the CSRF header for changes),
//! from an address that the token's own ranges and the owner's IP allowlists admit, for an active user
//! who still holds an admin role. [`authorize`] is the permission matrix: every handler calls it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};

use super::error::ApiError;
use crate::directory::{AdminGrant, AdminRole, ApiToken, TokenScope, User, UserStatus};
use crate::events::{Kind, LoginEvent, Outcome as EventOutcome};
use crate::policy::{DenyReason, Outcome};
use crate::web::{client_ip, cookie, current_session, AppState, CSRF_COOKIE};

/// The header a browser session sends on every change, equal to the CSRF cookie (double submit).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A token's `last_used` is rewritten at most this often (a write per request would be wasted).
const TOUCH_INTERVAL_SECS: i64 = 60;

/// How the actor authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// An API token (by id) with its scope.
    Token { id: i64, scope: TokenScope },
    /// The admin's Tessera browser session.
    Session,
}

/// An authenticated admin making a request.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The admin (the token's owner, or the session's user), as in the directory now.
    pub user: User,
    /// The admin roles the user holds now; never empty.
    pub grants: Vec<AdminGrant>,
    /// The client address (trusted-proxy aware), recorded with every change.
    pub ip: IpAddr,
    /// Token or session.
    pub via: Via,
}

impl Actor {
    /// Whether the actor holds `role` (for any SP).
    pub fn has(&self, role: AdminRole) -> bool {
        self.grants.iter().any(|g| g.role == role)
    }

    /// Super admin or org admin: the roles that manage the whole organisation.
    pub fn is_org_wide(&self) -> bool {
        self.has(AdminRole::SuperAdmin) || self.has(AdminRole::OrgAdmin)
    }

    /// The entityIDs of the SPs the actor is app admin of.
    pub fn app_sps(&self) -> Vec<&str> {
        self.grants
            .iter()
            .filter(|g| g.role == AdminRole::AppAdmin)
            .filter_map(|g| g.sp.as_deref())
            .collect()
    }

    /// Whether the actor may see every user (not only those of their SPs).
    pub fn sees_all_users(&self) -> bool {
        self.is_org_wide() || self.has(AdminRole::Helpdesk)
    }

    /// How the audit trail names the actor.
    pub fn label(&self) -> String {
        format!("user:{}", self.user.username)
    }
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, idp: &AppState) -> Result<Self, ApiError> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned()
        else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server does not know the client address",
            ));
        };
        let ip = client_ip(idp, peer, &parts.headers);
        let reading = matches!(parts.method, Method::GET | Method::HEAD);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let user_agent = user_agent.as_str();
        // When the token was last used, so `last_used` is written at most once a minute.
        let mut last_used = None;
        let (user, via) = match parts.headers.get(header::AUTHORIZATION) {
            Some(value) => {
                let token = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim)
                    .ok_or_else(|| {
                        ApiError::unauthenticated(
                            "invalid_token",
                            "The Authorization header must be `Bearer <token>`",
                        )
                    })?;
                let token = token_of(idp, token, ip, user_agent).await?;
                last_used = Some(token.last_used.unwrap_or(0));
                if token.scope == TokenScope::Read && !reading {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "insufficient_scope",
                        "This token may only read",
                    ));
                }
                let user = idp
                    .directory
                    .get_user(token.owner_id)
                    .await?
                    .ok_or_else(|| {
                        ApiError::unauthenticated("invalid_token", "The token is not valid")
                    })?;
                (
                    user,
                    Via::Token {
                        id: token.id,
                        scope: token.scope,
                    },
                )
            }
            None => {
                let (_, session) = current_session(idp, &parts.headers)
                    .await
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "Tessera cannot reach its session store right now",
                        )
                    })?
                    .ok_or_else(|| {
                        ApiError::unauthenticated(
                            "unauthenticated",
                            "Sign in, or send an API token as `Authorization: Bearer <token>`",
                        )
                    })?;
                if !reading {
                    check_csrf_header(&parts.headers)?;
                }
                let user = idp
                    .directory
                    .get_user(session.user_id)
                    .await?
                    .ok_or_else(|| {
                        ApiError::unauthenticated("unauthenticated", "The session's user is gone")
                    })?;
                (user, Via::Session)
            }
        };
        if user.status != UserStatus::Active {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "account_disabled",
                "The account is disabled",
            ));
        }
        // The owner's IP allowlists (the IP part only: an API call reaches no SP). check_access records
        // the refusal with the user and the address.
        let decision = idp
            .check_access_from(&user.username, ip, user_agent, None, None)
            .await?;
        if let Outcome::Deny {
            reason: DenyReason::IpNotAllowed { .. },
        } = decision.outcome
        {
            return Err(ApiError::ip_denied());
        }
        let grants = idp.directory.admin_grants_of(user.id).await?;
        if grants.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_admin",
                "This account holds no admin role",
            ));
        }
        if let (Via::Token { id, .. }, Some(last)) = (&via, last_used) {
            if chrono::Utc::now().timestamp() - last >= TOUCH_INTERVAL_SECS {
                idp.directory.touch_api_token(*id).await?;
            }
        }
        Ok(Actor {
            user,
            grants,
            ip,
            via,
        })
    }
}

/// The stored token for `secret`, if it is valid now and may be used from `ip`.
async fn token_of(
    idp: &AppState,
    secret: &str,
    ip: IpAddr,
    user_agent: &str,
) -> Result<ApiToken, ApiError> {
    let invalid = || ApiError::unauthenticated("invalid_token", "The token is not valid");
    if !secret.starts_with(crate::directory::TOKEN_PREFIX) || secret.len() > 200 {
        return Err(invalid());
    }
    let token = idp
        .directory
        .api_token_by_secret(secret)
        .await?
        .ok_or_else(invalid)?;
    if token.expires_at <= chrono::Utc::now().timestamp() {
        return Err(ApiError::unauthenticated(
            "token_expired",
            "The token has expired",
        ));
    }
    if let Some(ranges) = &token.ip_ranges {
        if !ranges.iter().any(|r| r.contains(ip)) {
            tracing::warn!(token = token.id, owner = %token.owner, %ip, "API token used outside its ranges");
            idp.events
                .record(
                    LoginEvent::new(Kind::SignIn, EventOutcome::IpDenied, &token.owner, ip)
                        .user(token.owner_id)
                        .reason(format!("outside the ranges of API token {:?}", token.name))
                        .rule(format!("api token {}", token.id))
                        .agent(user_agent),
                )
                .await;
            return Err(ApiError::ip_denied());
        }
    }
    Ok(token)
}

/// A change made with a browser session must carry the CSRF cookie's value in [`CSRF_HEADER`]: a
/// cross-site form or script cannot read the cookie, so it cannot send the header.
fn check_csrf_header(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match (cookie(headers, CSRF_COOKIE), sent) {
        (Some(expected), Some(sent))
            if expected.len() == 43
                && expected.len() == sent.len()
                && openssl::memcmp::eq(expected.as_bytes(), sent.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "A change made with a browser session needs the X-CSRF-Token header equal to the tessera_csrf cookie",
        )),
    }
}

/// What an admin asks to do, with the item it is done to.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// List users (app admins then see only the users of their SPs).
    ListUsers,
    /// Read one user.
    ReadUser(&'a User),
    /// Create a user.
    CreateUser,
    /// Change, disable, enable or delete a user, or their group and role memberships.
    ManageUser(&'a User),
    /// Reset a password or the second factors, lift the sign-in and recovery lockouts, list or end
    /// sessions.
    SupportUser(&'a User),
    /// Lift the sign-in lockout of a client address (it affects whoever signs in from there, so only
    /// the admins who see every user may).
    UnlockAddress,
    /// Groups and roles: list, create, delete.
    ManageDirectory,
    /// IP rules, security policies, their assignments, and explanations of decisions.
    ManagePolicy,
    /// List SPs (app admins then see only theirs).
    ListSps,
    /// Read one SP (by entityID) and its assigned users.
    ReadSp(&'a str),
    /// Change one SP: settings, profile (name, logo, metadata source), metadata and its refresh,
    /// enabled, assignments.
    ManageSp(&'a str),
    /// Register (from metadata or a metadata URL) or delete SPs.
    CreateOrDeleteSp,
    /// List admin grants.
    ReadGrants,
    /// Grant `role` to `target`.
    Grant { target: &'a User, role: AdminRole },
    /// Revoke a grant.
    Revoke(&'a AdminGrant),
    /// List or revoke one's own API tokens.
    OwnTokens,
    /// Create an API token for oneself: only from a browser session (or the CLI), never with a
    /// token, so a token cannot mint a successor without its ranges and expiry.
    CreateToken,
    /// Revoke or see the token of another admin.
    OthersToken(&'a ApiToken),
    /// Read the admin audit trail.
    ReadAudit,
    /// Read the login events and the monitoring dashboard (app admins: only their SPs' events;
    /// helpdesk: not at all, the events show every user's addresses and devices).
    ReadLogins,
}

/// The permission matrix (docs/admin-api.md has it as a table). `Ok` when `actor` may do `action`.
pub async fn authorize(idp: &AppState, actor: &Actor, action: Action<'_>) -> Result<(), ApiError> {
    use AdminRole::*;
    let sup = actor.has(SuperAdmin);
    let org = actor.has(OrgAdmin);
    let helpdesk = actor.has(Helpdesk);
    let allowed = match action {
        Action::ListUsers => true,
        Action::ReadUser(u) => {
            actor.sees_all_users() || {
                let mut assigned = false;
                for sp in actor.app_sps() {
                    if idp.directory.is_assigned(&u.username, sp).await? {
                        assigned = true;
                        break;
                    }
                }
                assigned
            }
        }
        Action::CreateUser | Action::ManageDirectory | Action::ManagePolicy => sup || org,
        Action::ManageUser(u) | Action::SupportUser(u) if u.id == actor.user.id => {
            // A stolen cookie or token must not turn into a takeover: one's own password, second
            // factors and sessions are changed on the account pages, which ask for the password.
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "self_service",
                "An admin manages their own account on the account pages (/password, /mfa/manage, \
                 /sessions), not through the admin API",
            ));
        }
        Action::ManageUser(u) => sup || (org && !holds(idp, u.id, Some(SuperAdmin)).await?),
        Action::SupportUser(u) => {
            sup || (org && !holds(idp, u.id, Some(SuperAdmin)).await?)
                || (helpdesk && !holds(idp, u.id, None).await?)
        }
        Action::UnlockAddress => sup || org || helpdesk,
        Action::ListSps => true,
        Action::ReadSp(sp) | Action::ManageSp(sp) => sup || org || actor.app_sps().contains(&sp),
        Action::CreateOrDeleteSp | Action::ReadGrants | Action::ReadAudit => sup || org,
        Action::ReadLogins => sup || org || !actor.app_sps().is_empty(),
        Action::Grant { target, role } => {
            // An admin never changes their own rights upwards (nor sideways: any grant to oneself).
            if target.id == actor.user.id {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "self_escalation",
                    "An admin cannot grant admin roles to themselves",
                ));
            }
            sup || (org && role != SuperAdmin && !holds(idp, target.id, Some(SuperAdmin)).await?)
        }
        Action::Revoke(grant) => {
            sup || (org
                && grant.role != SuperAdmin
                && !holds(idp, grant.user_id, Some(SuperAdmin)).await?)
        }
        Action::OwnTokens => true,
        Action::CreateToken => {
            if matches!(actor.via, Via::Token { .. }) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "token_cannot_mint",
                    "An API token cannot create tokens: create them from a browser session or with \
                     the CLI (`tessera token create`)",
                ));
            }
            true
        }
        Action::OthersToken(token) => {
            token.owner_id == actor.user.id
                || sup
                || (org && !holds(idp, token.owner_id, Some(SuperAdmin)).await?)
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Whether user `user_id` holds `role` (`None`: any admin role).
async fn holds(idp: &AppState, user_id: i64, role: Option<AdminRole>) -> Result<bool, ApiError> {
    let grants = idp.directory.admin_grants_of(user_id).await?;
    Ok(match role {
        Some(role) => grants.iter().any(|g| g.role == role),
        None => !grants.is_empty(),
    })
}
