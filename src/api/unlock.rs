//! Lifting lockouts: the brute-force sign-in lockout of a user or a client address
//! ([`crate::events::lockout`]) and the recovery lockout of a user ([`crate::web::unlock_recovery`]).
//! The counters and lock markers live in the session store, so the API (and the console, which calls
//! it) can lift them whatever the backend; the CLI can only when the store is Redis.

use std::net::IpAddr;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{authorize, Action, Actor};
use super::users::visible_user;
use super::{audit, ApiError, ApiJson, ApiPath, ErrorBody};
use crate::events::lockout;
use crate::web::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(unlock_user))
        .routes(routes!(unlock_address))
}

/// What a user unlock found and did.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserUnlockOut {
    /// Whether sign-in was locked (too many wrong passwords) before the unlock.
    pub sign_in_locked: bool,
    /// The count of failed recovery steps was cleared, so recovery works again if it was locked (the
    /// store cannot tell whether it was without counting an attempt).
    pub recovery_failures_cleared: bool,
}

/// What an address unlock found.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddressUnlockOut {
    /// The address, canonical (an IPv4-mapped IPv6 address is shown as IPv4).
    pub address: String,
    /// Whether sign-in from it was locked before the unlock.
    pub sign_in_locked: bool,
}

#[utoipa::path(post, path = "/api/v1/users/{username}/unlock", tag = "users",
    params(("username" = String, Path)),
    responses((status = 200, body = UserUnlockOut), (status = "4XX", body = ErrorBody)))]
/// Lifts a user's sign-in lockout (and clears their failed sign-in count) and their recovery lockout.
/// The same admins as a password reset may: super and org admins, and helpdesk for users who hold no
/// admin role.
async fn unlock_user(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<ApiJson<UserUnlockOut>, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    authorize(&idp, &actor, Action::SupportUser(&user)).await?;
    let store = idp.sessions.as_ref();
    let sign_in_locked = lockout::user_locked(store, &user.username).await?;
    lockout::unlock_user(store, &user.username).await?;
    crate::web::unlock_recovery(store, &user.username).await?;
    let out = UserUnlockOut {
        sign_in_locked,
        recovery_failures_cleared: true,
    };
    audit(
        &idp,
        &actor,
        "user.unlock",
        &format!("user:{}", user.username),
        Some(&serde_json::json!({ "sign_in_locked": sign_in_locked })),
        Some(&serde_json::json!({ "sign_in_locked": false, "recovery_failures": 0 })),
    )
    .await?;
    Ok(ApiJson(out))
}

#[utoipa::path(post, path = "/api/v1/addresses/{ip}/unlock", tag = "users",
    params(("ip" = String, Path, description = "An IPv4 or IPv6 address")),
    responses((status = 200, body = AddressUnlockOut), (status = "4XX", body = ErrorBody)))]
/// Lifts the sign-in lockout of a client address (too many failed sign-ins from it, whatever the
/// usernames) and clears its count. Super and org admins and helpdesk may.
async fn unlock_address(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(ip): ApiPath<String>,
) -> Result<ApiJson<AddressUnlockOut>, ApiError> {
    authorize(&idp, &actor, Action::UnlockAddress).await?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{ip:?} is not an IP address")))?;
    let ip = ip.to_canonical();
    let store = idp.sessions.as_ref();
    let sign_in_locked = lockout::address_locked(store, ip).await?;
    lockout::unlock_address(store, ip).await?;
    let out = AddressUnlockOut {
        address: ip.to_string(),
        sign_in_locked,
    };
    audit(
        &idp,
        &actor,
        "address.unlock",
        &format!("address:{ip}"),
        Some(&serde_json::json!({ "sign_in_locked": sign_in_locked })),
        Some(&serde_json::json!({ "sign_in_locked": false })),
    )
    .await?;
    Ok(ApiJson(out))
}
