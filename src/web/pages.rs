//! Server-rendered pages (askama templates under templates/) and the headers every page carries.

use askama::Template;
use axum::http::header::{self, HeaderMap, HeaderValue};

/// The sign-in form.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub csrf_token: &'a str,
    /// Handle of the pending SSO request, empty when the person came to /login directly.
    pub request: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
    pub sp_name: Option<&'a str>,
}

/// One app on the portal.
pub struct AppLink {
    pub entity_id: String,
    pub display_name: String,
}

/// The "My apps" portal.
#[derive(Template)]
#[template(path = "apps.html")]
pub struct AppsPage<'a> {
    pub username: &'a str,
    pub apps: Vec<AppLink>,
    pub csrf_token: &'a str,
}

/// Any refusal or failure.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub hint: &'a str,
    pub reference: &'a str,
}

/// After sign-out.
#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOutPage;

/// Headers for a Tessera page: HTML, never cached, never framed, no scripts.
pub fn html(body: String) -> (HeaderMap, String) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    (headers, body)
}
