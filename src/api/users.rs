//! Users (profile, status, password and MFA resets, sessions, group and role memberships), groups and
//! roles.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{authorize, Action, Actor};
use super::{audit, no_content, ApiError, ApiJson, ApiPath, ErrorBody, NOTHING};
use crate::directory::{AdminRole, MfaActor, NewUser, User, UserProfile, UserStatus};
use crate::session::SessionKey;
use crate::web::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(reset_password))
        .routes(routes!(reset_mfa))
        .routes(routes!(list_sessions, end_sessions))
        .routes(routes!(end_session))
        .routes(routes!(add_to_group, remove_from_group))
        .routes(routes!(add_to_role, remove_from_role))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(delete_group))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(delete_role))
}

/// A user as the API shows it (never a password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    pub id: i64,
    pub username: String,
    /// `active` or `disabled`.
    pub status: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub department: Option<String>,
    pub attributes: BTreeMap<String, Vec<String>>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    /// Whether sign-in is locked out now (too many wrong passwords); `POST .../unlock` lifts it.
    pub locked: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserIn {
    pub username: String,
    /// The initial password; without it Tessera makes a one-time password and returns it once.
    pub password: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub department: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Groups to put the user in; all must exist, or nothing is created.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Roles to give the user; all must exist, or nothing is created.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A created user, with the one-time password when Tessera made one.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    pub user: UserOut,
    /// Shown once; give it to the user over a safe channel.
    pub one_time_password: Option<String>,
}

/// The editable profile; replaces all of it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileIn {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub department: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// A password reset: a given password, or none to get a one-time password back.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetIn {
    pub password: Option<String>,
}

/// The answer to a password reset: the one-time password when Tessera made one (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordResetOut {
    pub one_time_password: Option<String>,
}

/// What an MFA reset removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaResetOut {
    pub totp: bool,
    pub webauthn: usize,
    pub recovery_codes: usize,
}

/// One SSO session of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionOut {
    /// The handle to end it with (not the cookie).
    pub key: String,
    pub client_ip: String,
    pub user_agent: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_seen: i64,
}

/// How many sessions were ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndedOut {
    pub ended: usize,
}

/// A group or a role.
#[derive(Debug, Serialize, ToSchema)]
pub struct NamedOut {
    pub id: i64,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A new group or role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameIn {
    pub name: String,
}

/// Refuses (403 `affects_super_admin`) a directory change by an admin who is not a super admin when it
/// touches a super admin (`touches`: e.g. they are a member of the group being deleted): deleting it
/// would change which IP rules and policy apply to them.
async fn guard_super_admins(
    idp: &AppState,
    actor: &Actor,
    touches: impl Fn(&crate::policy::Subject) -> bool,
) -> Result<(), ApiError> {
    if actor.has(AdminRole::SuperAdmin) {
        return Ok(());
    }
    let hit: Vec<String> = idp
        .directory
        .super_admin_subjects()
        .await?
        .into_iter()
        .filter(|s| touches(s))
        .map(|s| s.username)
        .collect();
    if hit.is_empty() {
        Ok(())
    } else {
        Err(super::policy::affects_super_admin(&hit))
    }
}

/// The user named `username`, or 404.
pub(super) async fn user_named(idp: &AppState, username: &str) -> Result<User, ApiError> {
    idp.directory
        .get_user_by_username(username)
        .await?
        .ok_or_else(|| ApiError::not_found("user", username))
}

/// The user named `username` as `actor` may see them: for an admin who does not see every user (an
/// app admin), a user outside their SPs is answered exactly like a user who does not exist (404), so
/// the API does not tell which usernames exist. Handlers call this before [`authorize`], which then
/// decides what the actor may do to a user they can see.
pub(super) async fn visible_user(
    idp: &AppState,
    actor: &Actor,
    username: &str,
) -> Result<User, ApiError> {
    let hidden = || ApiError::not_found("user", username);
    let user = idp
        .directory
        .get_user_by_username(username)
        .await?
        .ok_or_else(hidden)?;
    if !actor.sees_all_users()
        && authorize(idp, actor, Action::ReadUser(&user))
            .await
            .is_err()
    {
        return Err(hidden());
    }
    Ok(user)
}

pub(super) async fn user_out(idp: &AppState, user: User) -> Result<UserOut, ApiError> {
    let groups = idp.directory.groups_of(&user.username).await?;
    let roles = idp.directory.roles_of(&user.username).await?;
    let locked = crate::events::lockout::user_locked(idp.sessions.as_ref(), &user.username).await?;
    Ok(UserOut {
        id: user.id,
        status: user.status.as_str().to_owned(),
        username: user.username,
        email: user.email,
        display_name: user.display_name,
        department: user.department,
        attributes: user.attributes,
        groups: groups.into_iter().map(|g| g.name).collect(),
        roles: roles.into_iter().map(|r| r.name).collect(),
        locked,
        created_at: user.created_at,
        updated_at: user.updated_at,
    })
}

/// A random one-time password: 20 characters of base64url (120 bits).
fn one_time_password() -> Result<String, ApiError> {
    use base64::Engine as _;
    let mut raw = [0u8; 15];
    openssl::rand::rand_bytes(&mut raw).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no randomness available",
        )
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

fn target(username: &str) -> String {
    format!("user:{username}")
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = [UserOut]), (status = "4XX", body = ErrorBody)))]
/// Lists users: all of them for super, org and helpdesk admins, those assigned to their SPs for app admins.
async fn list_users(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<UserOut>>, ApiError> {
    authorize(&idp, &actor, Action::ListUsers).await?;
    let mut out = Vec::new();
    for user in idp.directory.list_users().await? {
        if !actor.sees_all_users()
            && authorize(&idp, &actor, Action::ReadUser(&user))
                .await
                .is_err()
        {
            continue;
        }
        out.push(user_out(&idp, user).await?);
    }
    Ok(ApiJson(out))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUserIn,
    responses((status = 201, body = CreatedUser), (status = "4XX", body = ErrorBody)))]
/// Creates a user with its groups and roles, all or nothing.
async fn create_user(
    State(idp): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<NewUserIn>,
) -> Result<(StatusCode, ApiJson<CreatedUser>), ApiError> {
    authorize(&idp, &actor, Action::CreateUser).await?;
    // Everything is checked before the first write, so a refusal leaves nothing behind.
    let groups = idp.directory.list_groups().await?;
    for g in &body.groups {
        if !groups.iter().any(|x| &x.name == g) {
            return Err(ApiError::not_found("group", g));
        }
    }
    let roles = idp.directory.list_roles().await?;
    for r in &body.roles {
        if !roles.iter().any(|x| &x.name == r) {
            return Err(ApiError::not_found("role", r));
        }
    }
    let (password, one_time) = match body.password {
        Some(p) => (p, None),
        None => {
            let p = one_time_password()?;
            (p.clone(), Some(p))
        }
    };
    let user = idp
        .directory
        .create_user(NewUser {
            username: body.username.clone(),
            password,
            email: body.email,
            display_name: body.display_name,
            department: body.department,
            attributes: body.attributes,
        })
        .await?;
    let memberships = async {
        for g in &body.groups {
            idp.directory.add_user_to_group(&user.username, g).await?;
        }
        for r in &body.roles {
            idp.directory.add_user_to_role(&user.username, r).await?;
        }
        Ok::<(), crate::directory::Error>(())
    };
    if let Err(e) = memberships.await {
        // A group or role went away meanwhile: undo the creation (memberships cascade).
        if let Err(undo) = idp.directory.delete_user(&user.username).await {
            tracing::error!(user = %user.username, error = %undo, "could not undo a half-created user");
        }
        return Err(e.into());
    }
    let out = user_out(&idp, user).await?;
    audit(
        &idp,
        &actor,
        "user.create",
        &target(&out.username),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedUser {
            user: out,
            one_time_password: one_time,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path)),
    responses((status = 200, body = UserOut), (status = "4XX", body = ErrorBody)))]
/// One user.
async fn get_user(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<ApiJson<UserOut>, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    authorize(&idp, &actor, Action::ReadUser(&user)).await?;
    Ok(ApiJson(user_out(&idp, user).await?))
}

#[utoipa::path(put, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path)), request_body = ProfileIn,
    responses((status = 200, body = UserOut), (status = "4XX", body = ErrorBody)))]
/// Replaces a user's profile.
async fn update_user(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
    ApiJson(body): ApiJson<ProfileIn>,
) -> Result<ApiJson<UserOut>, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    authorize(&idp, &actor, Action::ManageUser(&user)).await?;
    let before = user_out(&idp, user).await?;
    let updated = idp
        .directory
        .update_user(
            &username,
            &UserProfile {
                email: body.email,
                display_name: body.display_name,
                department: body.department,
                attributes: body.attributes,
            },
        )
        .await?;
    let after = user_out(&idp, updated).await?;
    audit(
        &idp,
        &actor,
        "user.update",
        &target(&username),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(ApiJson(after))
}

#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Deletes a user with their memberships, grants and tokens, and ends their sessions.
async fn delete_user(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    if user.id == actor.user.id {
        return Err(ApiError::conflict(
            "self",
            "An admin cannot delete their own account",
        ));
    }
    authorize(&idp, &actor, Action::ManageUser(&user)).await?;
    let before = user_out(&idp, user.clone()).await?;
    idp.directory.delete_user(&username).await?;
    idp.sessions.delete_user_sessions(user.id).await?;
    audit(
        &idp,
        &actor,
        "user.delete",
        &target(&username),
        Some(&before),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}

async fn set_status(
    idp: AppState,
    actor: Actor,
    username: String,
    status: UserStatus,
) -> Result<ApiJson<UserOut>, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    if user.id == actor.user.id && status == UserStatus::Disabled {
        return Err(ApiError::conflict(
            "self",
            "An admin cannot disable their own account",
        ));
    }
    authorize(&idp, &actor, Action::ManageUser(&user)).await?;
    let before = user_out(&idp, user.clone()).await?;
    idp.directory.set_user_status(&username, status).await?;
    if status == UserStatus::Disabled {
        idp.sessions.delete_user_sessions(user.id).await?;
    }
    let after = user_out(&idp, user_named(&idp, &username).await?).await?;
    let action = match status {
        UserStatus::Active => "user.enable",
        UserStatus::Disabled => "user.disable",
    };
    audit(
        &idp,
        &actor,
        action,
        &target(&username),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(ApiJson(after))
}

#[utoipa::path(post, path = "/api/v1/users/{username}/disable", tag = "users",
    params(("username" = String, Path)),
    responses((status = 200, body = UserOut), (status = "4XX", body = ErrorBody)))]
/// Disables a user and ends their sessions.
async fn disable_user(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<ApiJson<UserOut>, ApiError> {
    set_status(idp, actor, username, UserStatus::Disabled).await
}

#[utoipa::path(post, path = "/api/v1/users/{username}/enable", tag = "users",
    params(("username" = String, Path)),
    responses((status = 200, body = UserOut), (status = "4XX", body = ErrorBody)))]
/// Enables a user.
async fn enable_user(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<ApiJson<UserOut>, ApiError> {
    set_status(idp, actor, username, UserStatus::Active).await
}

#[utoipa::path(post, path = "/api/v1/users/{username}/password", tag = "users",
    params(("username" = String, Path)), request_body = PasswordResetIn,
    responses((status = 200, body = PasswordResetOut), (status = "4XX", body = ErrorBody)))]
/// Resets a password (to the one given, or to a one-time password returned once) and ends the user's
/// sessions.
async fn reset_password(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
    ApiJson(body): ApiJson<PasswordResetIn>,
) -> Result<ApiJson<PasswordResetOut>, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    authorize(&idp, &actor, Action::SupportUser(&user)).await?;
    let (password, one_time) = match body.password {
        Some(p) => (p, None),
        None => {
            let p = one_time_password()?;
            (p.clone(), Some(p))
        }
    };
    idp.directory.set_password(&username, &password).await?;
    idp.sessions.delete_user_sessions(user.id).await?;
    audit(
        &idp,
        &actor,
        "user.reset_password",
        &target(&username),
        NOTHING,
        Some(&serde_json::json!({ "password": "reset", "one_time": one_time.is_some() })),
    )
    .await?;
    Ok(ApiJson(PasswordResetOut {
        one_time_password: one_time,
    }))
}

#[utoipa::path(post, path = "/api/v1/users/{username}/mfa/reset", tag = "users",
    params(("username" = String, Path)),
    responses((status = 200, body = MfaResetOut), (status = "4XX", body = ErrorBody)))]
/// Removes all of a user's second factors (lost devices); they enrol again at the next sign-in.
async fn reset_mfa(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<ApiJson<MfaResetOut>, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    authorize(&idp, &actor, Action::SupportUser(&user)).await?;
    let reset = idp
        .mfa
        .reset_factors(user.id, &MfaActor::Admin(actor.user.username.clone()))
        .await?;
    let out = MfaResetOut {
        totp: reset.totp || reset.totp_pending,
        webauthn: reset.webauthn,
        recovery_codes: reset.recovery_codes,
    };
    audit(
        &idp,
        &actor,
        "user.reset_mfa",
        &target(&username),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok(ApiJson(out))
}

#[utoipa::path(get, path = "/api/v1/users/{username}/sessions", tag = "users",
    params(("username" = String, Path)),
    responses((status = 200, body = [SessionOut]), (status = "4XX", body = ErrorBody)))]
/// The user's live SSO sessions.
async fn list_sessions(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<ApiJson<Vec<SessionOut>>, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    authorize(&idp, &actor, Action::SupportUser(&user)).await?;
    let sessions = idp.sessions.list_user_sessions(user.id).await?;
    Ok(ApiJson(
        sessions
            .into_iter()
            .map(|s| SessionOut {
                key: s.key.as_str().to_owned(),
                client_ip: s.session.client_ip.to_string(),
                user_agent: s.session.user_agent,
                created_at: s.session.created_at,
                last_seen: s.session.last_seen,
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/users/{username}/sessions", tag = "users",
    params(("username" = String, Path)),
    responses((status = 200, body = EndedOut), (status = "4XX", body = ErrorBody)))]
/// Ends all of the user's sessions.
async fn end_sessions(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<ApiJson<EndedOut>, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    authorize(&idp, &actor, Action::SupportUser(&user)).await?;
    let ended = idp.sessions.delete_user_sessions(user.id).await?;
    let out = EndedOut { ended };
    audit(
        &idp,
        &actor,
        "user.end_sessions",
        &target(&username),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok(ApiJson(out))
}

#[utoipa::path(delete, path = "/api/v1/users/{username}/sessions/{key}", tag = "users",
    params(("username" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Ends one of the user's sessions.
async fn end_session(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath((username, key)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    authorize(&idp, &actor, Action::SupportUser(&user)).await?;
    let key = SessionKey::parse(&key).map_err(|_| ApiError::not_found("session", &key))?;
    if !idp.sessions.delete_for_user(user.id, &key).await? {
        return Err(ApiError::not_found("session", key.as_str()));
    }
    audit(
        &idp,
        &actor,
        "user.end_session",
        &target(&username),
        Some(&key.as_str()),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}

/// Adds or removes a membership of `username` in a group (`role == false`) or role.
async fn membership(
    idp: AppState,
    actor: Actor,
    username: String,
    name: String,
    role: bool,
    add: bool,
) -> Result<StatusCode, ApiError> {
    let user = visible_user(&idp, &actor, &username).await?;
    authorize(&idp, &actor, Action::ManageUser(&user)).await?;
    let d = &idp.directory;
    let changed = match (role, add) {
        (false, true) => d.add_user_to_group(&username, &name).await.map(|()| true)?,
        (false, false) => d.remove_user_from_group(&username, &name).await?,
        (true, true) => d.add_user_to_role(&username, &name).await.map(|()| true)?,
        (true, false) => d.remove_user_from_role(&username, &name).await?,
    };
    if !changed {
        return Err(ApiError::not_found(
            if role {
                "role membership"
            } else {
                "group membership"
            },
            &name,
        ));
    }
    let kind = if role { "role" } else { "group" };
    let action = format!("user.{}_{kind}", if add { "add" } else { "remove" });
    let member = serde_json::json!({ kind: name });
    let (before, after) = if add {
        (None, Some(&member))
    } else {
        (Some(&member), None)
    };
    audit(&idp, &actor, &action, &target(&username), before, after).await?;
    Ok(no_content())
}

#[utoipa::path(put, path = "/api/v1/users/{username}/groups/{group}", tag = "users",
    params(("username" = String, Path), ("group" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Puts a user in a group.
async fn add_to_group(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath((username, group)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    membership(idp, actor, username, group, false, true).await
}

#[utoipa::path(delete, path = "/api/v1/users/{username}/groups/{group}", tag = "users",
    params(("username" = String, Path), ("group" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Takes a user out of a group.
async fn remove_from_group(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath((username, group)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    membership(idp, actor, username, group, false, false).await
}

#[utoipa::path(put, path = "/api/v1/users/{username}/roles/{role}", tag = "users",
    params(("username" = String, Path), ("role" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Gives a user a (directory, not admin) role.
async fn add_to_role(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath((username, role)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    membership(idp, actor, username, role, true, true).await
}

#[utoipa::path(delete, path = "/api/v1/users/{username}/roles/{role}", tag = "users",
    params(("username" = String, Path), ("role" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Takes a (directory) role from a user.
async fn remove_from_role(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath((username, role)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    membership(idp, actor, username, role, true, false).await
}

#[utoipa::path(get, path = "/api/v1/groups", tag = "groups",
    responses((status = 200, body = [NamedOut]), (status = "4XX", body = ErrorBody)))]
/// Lists groups.
async fn list_groups(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<NamedOut>>, ApiError> {
    authorize(&idp, &actor, Action::ManageDirectory).await?;
    let groups = idp.directory.list_groups().await?;
    Ok(ApiJson(
        groups
            .into_iter()
            .map(|g| NamedOut {
                id: g.id,
                name: g.name,
                created_at: g.created_at,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = NameIn,
    responses((status = 201, body = NamedOut), (status = "4XX", body = ErrorBody)))]
/// Creates a group.
async fn create_group(
    State(idp): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<NameIn>,
) -> Result<(StatusCode, ApiJson<NamedOut>), ApiError> {
    authorize(&idp, &actor, Action::ManageDirectory).await?;
    let g = idp.directory.create_group(&body.name).await?;
    let out = NamedOut {
        id: g.id,
        name: g.name,
        created_at: g.created_at,
    };
    audit(
        &idp,
        &actor,
        "group.create",
        &format!("group:{}", out.name),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(out)))
}

#[utoipa::path(delete, path = "/api/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Deletes a group and its memberships.
async fn delete_group(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&idp, &actor, Action::ManageDirectory).await?;
    guard_super_admins(&idp, &actor, |s| s.groups.contains(&name)).await?;
    idp.directory.delete_group(&name).await?;
    audit(
        &idp,
        &actor,
        "group.delete",
        &format!("group:{name}"),
        Some(&name),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}

#[utoipa::path(get, path = "/api/v1/roles", tag = "roles",
    responses((status = 200, body = [NamedOut]), (status = "4XX", body = ErrorBody)))]
/// Lists (directory) roles.
async fn list_roles(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<NamedOut>>, ApiError> {
    authorize(&idp, &actor, Action::ManageDirectory).await?;
    let roles = idp.directory.list_roles().await?;
    Ok(ApiJson(
        roles
            .into_iter()
            .map(|r| NamedOut {
                id: r.id,
                name: r.name,
                created_at: r.created_at,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", request_body = NameIn,
    responses((status = 201, body = NamedOut), (status = "4XX", body = ErrorBody)))]
/// Creates a (directory) role.
async fn create_role(
    State(idp): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<NameIn>,
) -> Result<(StatusCode, ApiJson<NamedOut>), ApiError> {
    authorize(&idp, &actor, Action::ManageDirectory).await?;
    let r = idp.directory.create_role(&body.name).await?;
    let out = NamedOut {
        id: r.id,
        name: r.name,
        created_at: r.created_at,
    };
    audit(
        &idp,
        &actor,
        "role.create",
        &format!("role:{}", out.name),
        NOTHING,
        Some(&out),
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(out)))
}

#[utoipa::path(delete, path = "/api/v1/roles/{name}", tag = "roles",
    params(("name" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Deletes a (directory) role and its memberships.
async fn delete_role(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&idp, &actor, Action::ManageDirectory).await?;
    guard_super_admins(&idp, &actor, |s| s.roles.contains(&name)).await?;
    idp.directory.delete_role(&name).await?;
    audit(
        &idp,
        &actor,
        "role.delete",
        &format!("role:{name}"),
        Some(&name),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}
