//! The admin console under `/admin`: server-rendered pages (askama, `templates/admin_*.html`) over the
//! admin API.
//!
//! The console has no rules of its own. Who may see a page comes from [`authorize`], the API's
//! permission matrix; every read and every change is a request to the admin API's own router
//! ([`crate::api::api_router`]) made in-process with the admin's session, so a change from the console
//! runs the very handler the API runs (its validation, its no-self-lockout guard, its audit record with
//! before and after) and can never do more than the API allows. The page's CSRF token (checked by
//! [`CheckedForm`] or, for the metadata upload, by [`check_csrf`]) is what the inner request presents
//! as its `X-CSRF-Token`.
//!
//! A visit without a session goes to `/login?return=/admin`; a signed-in user without an admin role
//! gets a 403 page. Pages need no script: forms post and the answer is the page again, with what was
//! done or what was wrong written on it.

mod directory;
mod logins;
mod policy;
mod sps;

use std::net::SocketAddr;

use askama::Template;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::login::{check_csrf, csrf_token};
use super::pages::{html, ErrorPage};
use super::{set_cookie, AppState, CSRF_COOKIE};
use crate::api::auth::{authorize, Action, Actor, CSRF_HEADER};
use crate::api::PREFIX;
use crate::directory::AdminRole;

/// The largest API answer the console reads (lists of users, metadata documents).
const MAX_API_ANSWER: usize = 16 * 1024 * 1024;

/// The console's routes, merged into [`crate::web::router`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview))
        .route(
            "/admin/users",
            get(directory::users).post(directory::users_submit),
        )
        .route(
            "/admin/users/{username}",
            get(directory::user).post(directory::user_submit),
        )
        .route(
            "/admin/groups",
            get(directory::groups).post(directory::groups_submit),
        )
        .route(
            "/admin/roles",
            get(directory::roles).post(directory::roles_submit),
        )
        .route(
            "/admin/admins",
            get(directory::admins).post(directory::admins_submit),
        )
        .route("/admin/sps", get(sps::list).post(sps::register))
        .route("/admin/sps/{id}", get(sps::detail).post(sps::detail_submit))
        .route(
            "/admin/assignment-rules",
            get(sps::rules).post(sps::rules_submit),
        )
        .route(
            "/admin/ip-rules",
            get(policy::ip_rules).post(policy::ip_rules_submit),
        )
        .route(
            "/admin/policies",
            get(policy::policies).post(policy::policies_submit),
        )
        .route("/admin/logins", get(logins::page))
}

/// A part of the console, with the right it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Overview,
    Users,
    Groups,
    Roles,
    Sps,
    AssignmentRules,
    IpRules,
    Policies,
    Admins,
    Logins,
}

impl Section {
    const ALL: [Section; 10] = [
        Section::Overview,
        Section::Users,
        Section::Groups,
        Section::Roles,
        Section::Sps,
        Section::AssignmentRules,
        Section::IpRules,
        Section::Policies,
        Section::Admins,
        Section::Logins,
    ];

    fn href(self) -> &'static str {
        match self {
            Section::Overview => "/admin",
            Section::Users => "/admin/users",
            Section::Groups => "/admin/groups",
            Section::Roles => "/admin/roles",
            Section::Sps => "/admin/sps",
            Section::AssignmentRules => "/admin/assignment-rules",
            Section::IpRules => "/admin/ip-rules",
            Section::Policies => "/admin/policies",
            Section::Admins => "/admin/admins",
            Section::Logins => "/admin/logins",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Section::Overview => "Overview",
            Section::Users => "Users",
            Section::Groups => "Groups",
            Section::Roles => "Roles",
            Section::Sps => "Applications",
            Section::AssignmentRules => "Assignment rules",
            Section::IpRules => "IP rules",
            Section::Policies => "Security policies",
            Section::Admins => "Admins",
            Section::Logins => "Sign-ins",
        }
    }
}

/// One link of the navigation.
pub(super) struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    /// The page being shown.
    pub current: bool,
}

/// What every console page shows around its content.
pub(super) struct Layout {
    /// The signed-in admin.
    pub username: String,
    /// Their admin roles, in words.
    pub roles: String,
    /// Only the sections the admin's roles allow.
    pub nav: Vec<NavItem>,
    /// The double-submit token every form carries.
    pub csrf_token: String,
    /// What the last change did.
    pub notice: Option<String>,
    /// Why the last change was refused (nothing was changed).
    pub error: Option<String>,
}

/// The outcome of a form, shown on the page that follows.
#[derive(Debug, Default)]
pub(super) struct Flash {
    pub notice: Option<String>,
    pub error: Option<String>,
    /// The status of the page: 200, or the refusal's status.
    pub status: Option<StatusCode>,
}

impl Flash {
    pub fn done(notice: impl Into<String>) -> Flash {
        Flash {
            notice: Some(notice.into()),
            ..Flash::default()
        }
    }

    pub fn refused(failure: Failure) -> Flash {
        Flash {
            error: Some(failure.message),
            status: Some(failure.status),
            ..Flash::default()
        }
    }

    /// A form that could not be understood (nothing was sent to the API).
    pub fn invalid(message: impl Into<String>) -> Flash {
        Flash {
            error: Some(message.into()),
            status: Some(StatusCode::UNPROCESSABLE_ENTITY),
            ..Flash::default()
        }
    }

    /// The flash of an API answer: `notice` on success, the API's message on a refusal.
    pub fn of<T>(result: Result<T, Failure>, notice: impl FnOnce(T) -> String) -> Flash {
        match result {
            Ok(v) => Flash::done(notice(v)),
            Err(f) => Flash::refused(f),
        }
    }
}

/// A refused or failed API request, as the console shows it.
#[derive(Debug)]
pub(super) struct Failure {
    pub status: StatusCode,
    /// The API's message (never server internals: the API logs those under a reference).
    pub message: String,
}

/// The signed-in admin on a console request. Made by the admin API's own [`Actor`] extractor (active
/// user, IP allowlists, at least one admin role), so the console admits exactly whom the API admits.
pub(super) struct Console {
    pub idp: AppState,
    pub actor: Actor,
    /// The client's socket address, passed on to the API requests (the client address rules).
    peer: SocketAddr,
    /// The request's headers that the API looks at: cookies, forwarding headers, User-Agent.
    headers: HeaderMap,
    /// This browser's CSRF token, and whether the cookie must be set.
    csrf: (String, bool),
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, idp: &AppState) -> Result<Self, Response> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned()
        else {
            return Err(page_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server does not know the client address.",
            ));
        };
        let headers = forwarded_headers(&parts.headers);
        // The console is for browser sessions only: no Authorization header is passed on, and the
        // identity is read as a GET (a change's CSRF token is checked by the handler's form).
        let probe = api_request(Method::GET, "/", &headers, peer, None, None);
        let (mut probe, _) = probe.into_parts();
        let actor = match Actor::from_request_parts(&mut probe, idp).await {
            Ok(actor) => actor,
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                return Err(Redirect::to("/login?return=/admin").into_response())
            }
            Err(e) => return Err(page_error(e.status, &e.message)),
        };
        Ok(Console {
            idp: idp.clone(),
            actor,
            peer,
            csrf: csrf_token(&parts.headers),
            headers,
        })
    }
}

/// The headers of the browser's request that the API's [`Actor`] reads.
fn forwarded_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [
        header::COOKIE,
        header::USER_AGENT,
        header::FORWARDED,
        header::HeaderName::from_static("x-forwarded-for"),
    ] {
        for value in from.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// A request to the admin API at `path` (under [`PREFIX`]).
fn api_request(
    method: Method,
    path: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> Request<Body> {
    let mut request = Request::new(match body {
        Some(v) => Body::from(v.to_string()),
        None => Body::empty(),
    });
    *request.method_mut() = method;
    // The path is made by the console from percent-encoded segments; a bad one is a 404 from the API.
    *request.uri_mut() = format!("{PREFIX}{path}")
        .parse()
        .unwrap_or_else(|_| axum::http::Uri::from_static("/api/v1/invalid"));
    *request.headers_mut() = headers.clone();
    if body.is_some() {
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some(token) = csrf.and_then(|t| HeaderValue::from_str(t).ok()) {
        request.headers_mut().insert(CSRF_HEADER, token);
    }
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// One path segment, percent-encoded (usernames and entityIDs may hold `/`, `?`, spaces).
pub(super) fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Console {
    /// Whether the admin's roles allow `section` (the navigation shows only these).
    pub async fn allows(&self, section: Section) -> bool {
        let may = |action| authorize(&self.idp, &self.actor, action);
        match section {
            Section::Overview | Section::Users => may(Action::ListUsers).await.is_ok(),
            Section::Groups | Section::Roles => may(Action::ManageDirectory).await.is_ok(),
            // Every admin may list SPs, but only these roles see any: a helpdesk admin has no page.
            Section::Sps => {
                may(Action::CreateOrDeleteSp).await.is_ok() || !self.actor.app_sps().is_empty()
            }
            Section::AssignmentRules | Section::IpRules | Section::Policies => {
                may(Action::ManagePolicy).await.is_ok()
            }
            Section::Admins => may(Action::ReadGrants).await.is_ok(),
            Section::Logins => may(Action::ReadLogins).await.is_ok(),
        }
    }

    /// `Ok` when the admin may see `section`, else the 403 page.
    pub async fn require(&self, section: Section) -> Result<(), Response> {
        if self.allows(section).await {
            Ok(())
        } else {
            Err(page_error(
                StatusCode::FORBIDDEN,
                "Your admin role does not allow this",
            ))
        }
    }

    /// Whether `action` is allowed, for showing or hiding a form.
    pub async fn may(&self, action: Action<'_>) -> bool {
        authorize(&self.idp, &self.actor, action).await.is_ok()
    }

    /// A read from the admin API.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.call(Method::GET, path, None, None).await
    }

    /// The list a page shows, read from the admin API. When the API refuses, the page still renders:
    /// with an empty list and the refusal in place of `flash`.
    pub async fn list<T: DeserializeOwned>(&self, path: &str, flash: Flash) -> (Vec<T>, Flash) {
        match self.get::<Vec<T>>(path).await {
            Ok(items) => (items, flash),
            Err(f) => (Vec::new(), Flash::refused(f)),
        }
    }

    /// A change through the admin API; `csrf` is the page's token, already checked against the cookie.
    pub async fn change<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        csrf: &str,
        body: Option<Value>,
    ) -> Result<T, Failure> {
        self.call(method, path, Some(csrf), body.as_ref()).await
    }

    /// A change through the admin API (see [`Console::change`]), as the flash the page then shows:
    /// `notice` of the answer on success, the API's message on a refusal.
    pub async fn submit(
        &self,
        method: Method,
        path: &str,
        csrf: &str,
        body: Option<Value>,
        notice: impl FnOnce(Value) -> String,
    ) -> Flash {
        Flash::of(self.change::<Value>(method, path, csrf, body).await, notice)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        csrf: Option<&str>,
        body: Option<&Value>,
    ) -> Result<T, Failure> {
        use tower::ServiceExt as _;
        let request = api_request(method, path, &self.headers, self.peer, csrf, body);
        let (api, _) = crate::api::api_router().split_for_parts();
        let response = match api.with_state(self.idp.clone()).oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_API_ANSWER)
            .await
            .map_err(|e| internal(format!("cannot read the API answer: {e}")))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("The request was refused ({status})."));
            return Err(Failure { status, message });
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| internal(format!("unexpected API answer: {e}")))
    }

    /// The layout of a page of `current`, with the outcome of the last form.
    pub async fn layout(&self, current: Section, flash: &Flash) -> Layout {
        let mut nav = Vec::new();
        for section in Section::ALL {
            if self.allows(section).await {
                nav.push(NavItem {
                    href: section.href(),
                    label: section.label(),
                    current: section == current,
                });
            }
        }
        let roles = self
            .actor
            .grants
            .iter()
            .map(|g| match &g.sp {
                Some(sp) => format!("{} of {sp}", role_name(g.role)),
                None => role_name(g.role).to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        Layout {
            username: self.actor.user.username.clone(),
            roles,
            nav,
            csrf_token: self.csrf.0.clone(),
            notice: flash.notice.clone(),
            error: flash.error.clone(),
        }
    }

    /// The rendered page, with the status of `flash`, the page headers and the CSRF cookie if new.
    pub fn page(&self, template: &impl Template, flash: &Flash) -> Response {
        let body = match template.render() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot render an admin page");
                return page_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The page could not be rendered.",
                );
            }
        };
        let (mut headers, body) = html(body);
        if self.csrf.1 {
            headers.insert(
                header::SET_COOKIE,
                set_cookie(&self.idp, CSRF_COOKIE, &self.csrf.0, None, "Strict"),
            );
        }
        (flash.status.unwrap_or(StatusCode::OK), headers, body).into_response()
    }
}

/// A role as the pages name it.
pub(super) fn role_name(role: AdminRole) -> &'static str {
    match role {
        AdminRole::SuperAdmin => "super admin",
        AdminRole::OrgAdmin => "org admin",
        AdminRole::AppAdmin => "app admin",
        AdminRole::Helpdesk => "helpdesk",
    }
}

fn internal(detail: String) -> Failure {
    tracing::error!(%detail, "admin console");
    Failure {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "Something went wrong on the server; the details are in its log.".to_owned(),
    }
}

/// Tessera's error page with `status` and `message`.
pub(super) fn page_error(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        _ => "The admin console cannot show this",
    };
    let page = ErrorPage {
        title,
        message,
        hint: "Go back to the admin console overview at /admin.",
        reference: "",
    };
    match page.render() {
        Ok(body) => {
            let (headers, body) = html(body);
            (status, headers, body).into_response()
        }
        Err(_) => (status, message.to_owned()).into_response(),
    }
}

/// The CSRF check of a form that [`super::forms::CheckedForm`] cannot read (multipart): `Some`
/// refusal page when the token is missing or wrong.
pub(super) fn csrf_refused(headers: &HeaderMap, token: &str) -> Option<Response> {
    check_csrf(headers, token)
        .err()
        .map(IntoResponse::into_response)
}

/// One recent admin change, on the overview.
#[derive(serde::Deserialize)]
struct AuditRow {
    at: i64,
    actor: String,
    action: String,
    target: String,
}

/// The overview: who is signed in, with which roles, and what they can manage.
#[derive(Template)]
#[template(path = "admin_overview.html")]
struct OverviewPage {
    l: Layout,
    users: usize,
    sps: Option<usize>,
    audit: Vec<(String, String, String, String)>,
}

/// `GET /admin`.
async fn overview(console: Console) -> Response {
    let flash = Flash::default();
    let users = console
        .get::<Vec<Value>>("/users")
        .await
        .map(|v| v.len())
        .unwrap_or(0);
    let sps = if console.allows(Section::Sps).await {
        console
            .get::<Vec<Value>>("/sps")
            .await
            .ok()
            .map(|v| v.len())
    } else {
        None
    };
    let audit = if console.may(Action::ReadAudit).await {
        console
            .get::<Vec<AuditRow>>("/audit?limit=10")
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| (when_ms(a.at), a.actor, a.action, a.target))
            .collect()
    } else {
        Vec::new()
    };
    let page = OverviewPage {
        l: console.layout(Section::Overview, &flash).await,
        users,
        sps,
        audit,
    };
    console.page(&page, &flash)
}

/// Unix milliseconds as a UTC date and time.
fn when_ms(at: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Splits a list typed into one field (commas, spaces or new lines) into its items.
pub(super) fn items(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An optional text field: `None` when left empty.
pub(super) fn optional(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}
