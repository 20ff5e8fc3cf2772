//! Console pages for people: users (with their groups, roles, status, second factors and sessions),
//! groups, roles and admin grants.

use askama::Template;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{items, optional, segment, Console, Flash, Layout, Section};
use crate::api::auth::Action;
use crate::web::forms::CheckedForm;

/// A user as the API lists it (the fields the pages show).
#[derive(Debug, Deserialize)]
pub(super) struct UserRow {
    pub username: String,
    pub status: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub department: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Extra attributes, kept as they are when the profile form is saved.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, Vec<String>>,
    /// Sign-in is locked out (too many wrong passwords): the user page then says so by the Unlock
    /// button.
    #[serde(default)]
    pub locked: bool,
}

/// A group or a role.
#[derive(Debug, Deserialize)]
pub(super) struct Named {
    pub name: String,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    l: Layout,
    users: Vec<UserRow>,
    /// Show the new-user form.
    can_create: bool,
}

/// Body of `POST /admin/users`: a new user.
#[derive(Deserialize)]
pub struct NewUserForm {
    /// The page's double-submit token (missing: refused like a wrong one).
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    username: String,
    /// Empty: Tessera makes a one-time password and the page shows it once.
    #[serde(default)]
    password: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    department: String,
    /// Comma-separated.
    #[serde(default)]
    groups: String,
    /// Comma-separated.
    #[serde(default)]
    roles: String,
}

async fn users_page(console: Console, flash: Flash) -> Response {
    if let Err(denied) = console.require(Section::Users).await {
        return denied;
    }
    let (users, flash) = console.list::<UserRow>("/users", flash).await;
    let page = UsersPage {
        l: console.layout(Section::Users, &flash).await,
        users,
        can_create: console.may(Action::CreateUser).await,
    };
    console.page(&page, &flash)
}

/// `GET /admin/users`: the users the admin may see.
pub async fn users(console: Console) -> Response {
    users_page(console, Flash::default()).await
}

/// `POST /admin/users`: creates a user (all or nothing: unknown groups or roles create nothing).
pub async fn users_submit(
    console: Console,
    CheckedForm(form): CheckedForm<NewUserForm>,
) -> Response {
    let body = json!({
        "username": form.username.trim(),
        "password": optional(&form.password),
        "email": optional(&form.email),
        "display_name": optional(&form.display_name),
        "department": optional(&form.department),
        "groups": items(&form.groups),
        "roles": items(&form.roles),
    });
    let created = console
        .change::<Value>(Method::POST, "/users", &form.csrf_token, Some(body))
        .await;
    let flash = Flash::of(created, |v| {
        let name = v["user"]["username"].as_str().unwrap_or_default();
        match v["one_time_password"].as_str() {
            Some(p) => format!(
                "User {name} created. One-time password (shown once, give it over a safe channel): {p}"
            ),
            None => format!("User {name} created."),
        }
    });
    users_page(console, flash).await
}

#[derive(Template)]
#[template(path = "admin_user.html")]
struct UserPage {
    l: Layout,
    user: UserRow,
    /// Status, groups and roles can be changed.
    can_manage: bool,
    /// Password, second factors and sessions can be reset.
    can_support: bool,
    /// The groups and roles to pick from (org-wide admins only).
    all_groups: Vec<String>,
    all_roles: Vec<String>,
    /// Live sessions: (started, last seen, address, browser).
    sessions: Vec<(String, String, String, String)>,
}

/// One session as the API lists it.
#[derive(Deserialize)]
struct SessionRow {
    client_ip: String,
    user_agent: String,
    created_at: i64,
    last_seen: i64,
}

/// Body of `POST /admin/users/{username}`: one action on the user.
#[derive(Deserialize)]
pub struct UserActionForm {
    /// The page's double-submit token (missing: refused like a wrong one).
    #[serde(default)]
    csrf_token: String,
    /// `profile`, `disable`, `enable`, `reset_password`, `reset_mfa`, `unlock`, `end_sessions`,
    /// `add_group`, `remove_group`, `add_role`, `remove_role`.
    #[serde(default)]
    op: String,
    /// The group or role.
    #[serde(default)]
    name: String,
    /// The profile (`op=profile`).
    #[serde(default)]
    email: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    department: String,
}

async fn user_page(console: Console, username: &str, flash: Flash) -> Response {
    let path = format!("/users/{}", segment(username));
    let user = match console.get::<UserRow>(&path).await {
        Ok(u) => u,
        Err(f) => return super::page_error(f.status, &f.message),
    };
    let record = console
        .idp
        .directory
        .get_user_by_username(username)
        .await
        .ok()
        .flatten();
    let (can_manage, can_support) = match &record {
        Some(r) => (
            console.may(Action::ManageUser(r)).await,
            console.may(Action::SupportUser(r)).await,
        ),
        None => (false, false),
    };
    let names = |list: Result<Vec<Named>, _>| {
        list.map(|l| l.into_iter().map(|n| n.name).collect())
            .unwrap_or_default()
    };
    let (all_groups, all_roles) = if can_manage && console.may(Action::ManageDirectory).await {
        (
            names(console.get::<Vec<Named>>("/groups").await),
            names(console.get::<Vec<Named>>("/roles").await),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    // Offer only the groups and roles the user is not in yet.
    let all_groups = all_groups
        .into_iter()
        .filter(|g| !user.groups.contains(g))
        .collect();
    let all_roles = all_roles
        .into_iter()
        .filter(|r| !user.roles.contains(r))
        .collect();
    let sessions = if can_support {
        console
            .get::<Vec<SessionRow>>(&format!("{path}/sessions"))
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                (
                    when(s.created_at),
                    when(s.last_seen),
                    s.client_ip,
                    s.user_agent,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let page = UserPage {
        l: console.layout(Section::Users, &flash).await,
        user,
        can_manage,
        can_support,
        all_groups,
        all_roles,
        sessions,
    };
    console.page(&page, &flash)
}

/// Unix seconds as a UTC date and time.
fn when(at: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// `GET /admin/users/{username}`: one user, with what the admin may do to them.
pub async fn user(console: Console, Path(username): Path<String>) -> Response {
    user_page(console, &username, Flash::default()).await
}

/// `POST /admin/users/{username}`: one action, through the API.
pub async fn user_submit(
    console: Console,
    Path(username): Path<String>,
    CheckedForm(form): CheckedForm<UserActionForm>,
) -> Response {
    let base = format!("/users/{}", segment(&username));
    let name = form.name.trim();
    let token = form.csrf_token.as_str();
    let flash = match form.op.as_str() {
        "disable" | "enable" => {
            let done = console
                .change::<Value>(Method::POST, &format!("{base}/{}", form.op), token, None)
                .await;
            Flash::of(done, |_| format!("User {username}: {}d.", form.op))
        }
        "profile" => match console.get::<UserRow>(&base).await {
            Err(f) => Flash::refused(f),
            Ok(current) => {
                let body = json!({
                    "email": optional(&form.email),
                    "display_name": optional(&form.display_name),
                    "department": optional(&form.department),
                    "attributes": current.attributes,
                });
                let done = console
                    .change::<Value>(Method::PUT, &base, token, Some(body))
                    .await;
                Flash::of(done, |_| format!("Profile of {username} saved."))
            }
        },
        "reset_password" => {
            let done = console
                .change::<Value>(
                    Method::POST,
                    &format!("{base}/password"),
                    token,
                    Some(json!({})),
                )
                .await;
            Flash::of(done, |v| {
                format!(
                    "Password reset and sessions ended. One-time password (shown once): {}",
                    v["one_time_password"].as_str().unwrap_or("-")
                )
            })
        }
        "reset_mfa" => {
            let done = console
                .change::<Value>(Method::POST, &format!("{base}/mfa/reset"), token, None)
                .await;
            Flash::of(done, |v| {
                format!(
                    "Second factors removed (authenticator app: {}, security keys: {}, recovery codes: {}).",
                    if v["totp"] == json!(true) { "yes" } else { "no" },
                    v["webauthn"],
                    v["recovery_codes"]
                )
            })
        }
        "unlock" => {
            let done = console
                .change::<Value>(Method::POST, &format!("{base}/unlock"), token, None)
                .await;
            Flash::of(done, |v| {
                if v["sign_in_locked"] == json!(true) {
                    format!("{username} unlocked: sign-in and account recovery work again.")
                } else {
                    format!("{username} was not locked out of sign-in; failed recovery attempts cleared.")
                }
            })
        }
        "end_sessions" => {
            let done = console
                .change::<Value>(Method::DELETE, &format!("{base}/sessions"), token, None)
                .await;
            Flash::of(done, |v| format!("{} session(s) ended.", v["ended"]))
        }
        op @ ("add_group" | "remove_group" | "add_role" | "remove_role") => {
            if name.is_empty() {
                Flash::invalid("Choose a group or role.")
            } else {
                let (verb, kind) = op.split_once('_').unwrap_or(("add", "group"));
                let method = if verb == "add" {
                    Method::PUT
                } else {
                    Method::DELETE
                };
                let path = format!("{base}/{kind}s/{}", segment(name));
                let done = console.change::<Value>(method, &path, token, None).await;
                Flash::of(done, |_| {
                    if verb == "add" {
                        format!("{username} added to {kind} {name}.")
                    } else {
                        format!("{username} removed from {kind} {name}.")
                    }
                })
            }
        }
        _ => Flash::invalid("Unknown action."),
    };
    user_page(console, &username, flash).await
}

#[derive(Template)]
#[template(path = "admin_names.html")]
struct NamesPage {
    l: Layout,
    /// "group" or "role".
    kind: &'static str,
    /// "Groups" or "Roles".
    title: &'static str,
    /// Where the forms post.
    action: &'static str,
    names: Vec<String>,
}

/// Body of `POST /admin/groups` and `POST /admin/roles`.
#[derive(Deserialize)]
pub struct NameForm {
    /// The page's double-submit token (missing: refused like a wrong one).
    #[serde(default)]
    csrf_token: String,
    /// `create` or `delete`.
    #[serde(default)]
    op: String,
    #[serde(default)]
    name: String,
}

async fn names_page(console: Console, role: bool, flash: Flash) -> Response {
    let section = if role {
        Section::Roles
    } else {
        Section::Groups
    };
    if let Err(denied) = console.require(section).await {
        return denied;
    }
    let path = if role { "/roles" } else { "/groups" };
    let (named, flash) = console.list::<Named>(path, flash).await;
    let names = named.into_iter().map(|n| n.name).collect();
    let page = NamesPage {
        l: console.layout(section, &flash).await,
        kind: if role { "role" } else { "group" },
        title: if role { "Roles" } else { "Groups" },
        action: section.href(),
        names,
    };
    console.page(&page, &flash)
}

async fn names_submit(console: Console, role: bool, form: NameForm) -> Response {
    let (path, kind) = if role {
        ("/roles", "Role")
    } else {
        ("/groups", "Group")
    };
    let name = form.name.trim();
    let flash = if name.is_empty() {
        Flash::invalid("Give a name.")
    } else {
        match form.op.as_str() {
            "create" => {
                console
                    .submit(
                        Method::POST,
                        path,
                        &form.csrf_token,
                        Some(json!({ "name": name })),
                        |_| format!("{kind} {name} created."),
                    )
                    .await
            }
            "delete" => {
                console
                    .submit(
                        Method::DELETE,
                        &format!("{path}/{}", segment(name)),
                        &form.csrf_token,
                        None,
                        |_| format!("{kind} {name} deleted."),
                    )
                    .await
            }
            _ => Flash::invalid("Unknown action."),
        }
    };
    names_page(console, role, flash).await
}

/// `GET /admin/groups`.
pub async fn groups(console: Console) -> Response {
    names_page(console, false, Flash::default()).await
}

/// `POST /admin/groups`: create or delete a group.
pub async fn groups_submit(console: Console, CheckedForm(form): CheckedForm<NameForm>) -> Response {
    names_submit(console, false, form).await
}

/// `GET /admin/roles`.
pub async fn roles(console: Console) -> Response {
    names_page(console, true, Flash::default()).await
}

/// `POST /admin/roles`: create or delete a (directory) role.
pub async fn roles_submit(console: Console, CheckedForm(form): CheckedForm<NameForm>) -> Response {
    names_submit(console, true, form).await
}

/// An admin grant as the API lists it.
#[derive(Deserialize)]
struct GrantRow {
    id: i64,
    username: String,
    role: String,
    sp: Option<String>,
    granted_by: String,
}

#[derive(Template)]
#[template(path = "admin_admins.html")]
struct AdminsPage {
    l: Layout,
    grants: Vec<GrantRow>,
    /// The SPs an app admin role can be granted for (entityIDs).
    sps: Vec<String>,
}

/// Body of `POST /admin/admins`.
#[derive(Deserialize)]
pub struct GrantForm {
    /// The page's double-submit token (missing: refused like a wrong one).
    #[serde(default)]
    csrf_token: String,
    /// `grant` or `revoke`.
    #[serde(default)]
    op: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
    /// For `app_admin`.
    #[serde(default)]
    sp: String,
    /// The grant to revoke.
    #[serde(default)]
    id: String,
}

async fn admins_page(console: Console, flash: Flash) -> Response {
    if let Err(denied) = console.require(Section::Admins).await {
        return denied;
    }
    let (grants, flash) = console.list::<GrantRow>("/admin-grants", flash).await;
    let sps = console
        .get::<Vec<Value>>("/sps")
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|sp| sp["entity_id"].as_str().map(str::to_owned))
        .collect();
    let page = AdminsPage {
        l: console.layout(Section::Admins, &flash).await,
        grants,
        sps,
    };
    console.page(&page, &flash)
}

/// `GET /admin/admins`: who holds which admin role.
pub async fn admins(console: Console) -> Response {
    admins_page(console, Flash::default()).await
}

/// `POST /admin/admins`: grant or revoke an admin role (the API refuses self-grants and, for org
/// admins, anything about super admins).
pub async fn admins_submit(
    console: Console,
    CheckedForm(form): CheckedForm<GrantForm>,
) -> Response {
    let flash = match form.op.as_str() {
        "grant" => {
            let body = json!({
                "username": form.username.trim(),
                "role": form.role,
                "sp": if form.role == "app_admin" { optional(&form.sp) } else { None },
            });
            console
                .submit(
                    Method::POST,
                    "/admin-grants",
                    &form.csrf_token,
                    Some(body),
                    |v| {
                        format!(
                            "Granted {} to {}.",
                            v["role"].as_str().unwrap_or(""),
                            v["username"].as_str().unwrap_or("")
                        )
                    },
                )
                .await
        }
        "revoke" => match form.id.parse::<i64>() {
            Ok(id) => {
                console
                    .submit(
                        Method::DELETE,
                        &format!("/admin-grants/{id}"),
                        &form.csrf_token,
                        None,
                        |_| "Grant revoked.".to_owned(),
                    )
                    .await
            }
            Err(_) => Flash::invalid("Unknown grant."),
        },
        _ => Flash::invalid("Unknown action."),
    };
    let flash = Flash {
        status: flash.status.or(Some(StatusCode::OK)),
        ..flash
    };
    admins_page(console, flash).await
}

crate::web::forms::csrf_protected!(NewUserForm, UserActionForm, NameForm, GrantForm);
