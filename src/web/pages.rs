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
    /// `/admin` when the sign-in should end in the admin console, else empty.
    pub return_to: &'a str,
}

/// One app on the portal.
pub struct AppLink {
    pub entity_id: String,
    pub display_name: String,
    /// The SP's logo (an https URL, checked when set), shown next to its name.
    pub logo_url: Option<String>,
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

/// The second-factor challenge after the password, or at a step-up: each factor the user may use here.
#[derive(Template)]
#[template(path = "mfa_challenge.html")]
pub struct MfaChallengePage<'a> {
    /// The double-submit token every form carries.
    pub csrf_token: &'a str,
    /// Who is signing in, so the person sees which account asks.
    pub username: &'a str,
    /// Why the factor is asked for (policy or application), as a sentence.
    pub reason: &'a str,
    /// Offer the TOTP code form.
    pub totp: bool,
    /// Offer the security key / passkey button (the one part that needs JavaScript).
    pub webauthn: bool,
    /// Offer the recovery-code form.
    pub recovery: bool,
    /// Why the last attempt failed, announced to screen readers.
    pub error: Option<&'a str>,
}

/// Enrolment of a first second factor at sign-in: TOTP (QR code and the secret as text) and/or a
/// passkey.
#[derive(Template)]
#[template(path = "mfa_enrol.html")]
pub struct MfaEnrolPage<'a> {
    /// The double-submit token every form carries.
    pub csrf_token: &'a str,
    /// Who is enrolling, so the person sees which account the factor is for.
    pub username: &'a str,
    /// Why a factor is being set up, as a sentence.
    pub reason: &'a str,
    /// Offer TOTP enrolment.
    pub totp: bool,
    /// The QR code (inline SVG made by `crate::mfa::totp::qr_svg`: numbers and fixed markup only), or
    /// `None` when the page only asks for the code again.
    pub totp_qr: Option<&'a str>,
    /// The same secret as text, in groups of four, beside the QR code.
    pub totp_secret: &'a str,
    /// Offer passkey registration.
    pub webauthn: bool,
    /// Why the last attempt failed, announced to screen readers.
    pub error: Option<&'a str>,
}

/// The recovery codes, shown exactly once, then the way on.
#[derive(Template)]
#[template(path = "mfa_recovery_codes.html")]
pub struct RecoveryCodesPage<'a> {
    /// The double-submit token of the Continue form.
    pub csrf_token: &'a str,
    /// The codes in `XXXX-XXXX-XXXX` form; empty when they were shown already.
    pub codes: Vec<String>,
    /// Where the Continue button posts.
    pub continue_action: &'a str,
    /// The label of that button.
    pub continue_label: &'a str,
}

/// One registered authenticator on the security page.
pub struct AuthenticatorRow {
    /// The name the user gave it, which also names it for removal.
    pub name: String,
    /// Registration date (UTC), for telling authenticators apart.
    pub added: String,
    /// Last use (UTC) or "never".
    pub last_used: String,
}

/// The signed-in user's second factors: add and remove passkeys, set up TOTP, new recovery codes.
#[derive(Template)]
#[template(path = "mfa_manage.html")]
pub struct MfaManagePage<'a> {
    /// The double-submit token every form carries.
    pub csrf_token: &'a str,
    /// Whose factors these are.
    pub username: &'a str,
    /// Whether an authenticator app is active (the button then replaces it).
    pub totp: bool,
    /// The registered security keys and passkeys, each removable.
    pub authenticators: Vec<AuthenticatorRow>,
    /// Unused recovery codes, so the person knows when to make new ones.
    pub recovery_codes_left: usize,
    /// Whether passkeys can be registered here (WebAuthn on).
    pub webauthn: bool,
    /// What the last action did.
    pub notice: Option<&'a str>,
    /// Why the last action failed.
    pub error: Option<&'a str>,
}

/// The Content-Security-Policy of every Tessera page: nothing loads, no script runs.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The Content-Security-Policy of the pages that run WebAuthn: as [`CSP`], plus Tessera's own
/// script file (`/mfa/webauthn.js`, no inline script) and `fetch` to Tessera for the ceremony options.
const CSP_WITH_SCRIPT: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers for a Tessera page: HTML, never cached, never framed, no scripts.
pub fn html(body: String) -> (HeaderMap, String) {
    page_headers(body, CSP)
}

/// The Content-Security-Policy of the portal: as [`CSP`], plus images over https (the SPs' logos).
const CSP_WITH_LOGOS: &str = "default-src 'none'; img-src https:; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers for the portal, which shows the SPs' logos; otherwise as [`html`].
pub fn html_with_logos(body: String) -> (HeaderMap, String) {
    page_headers(body, CSP_WITH_LOGOS)
}

/// Headers for a page that runs the WebAuthn script; otherwise as [`html`].
pub fn html_with_script(body: String) -> (HeaderMap, String) {
    page_headers(body, CSP_WITH_SCRIPT)
}

fn page_headers(body: String, csp: &'static str) -> (HeaderMap, String) {
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
        HeaderValue::from_static(csp),
    );
    (headers, body)
}
