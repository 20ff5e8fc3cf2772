//! The HTTP face of Tessera (axum). Handlers decode HTTP, call [`crate::idp::Idp`], and render the
//! result; no SAML decision is taken here.

mod account;
mod admin;
mod error;
mod forms;
mod login;
mod mfa;
mod pages;
mod recovery;
mod slo;
mod slo_front;
mod sso;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use error::WebError;
pub use recovery::{unlock_recovery, RECOVERY_COOKIE};

use crate::idp::Idp;
use crate::session::{Session, SessionId};

/// The state every handler receives.
pub type AppState = Arc<Idp>;

/// Name of the session cookie; its value is the random session id, never stored server-side.
pub const SESSION_COOKIE: &str = "tessera_session";
/// Name of the double-submit CSRF cookie for Tessera's own forms.
pub const CSRF_COOKIE: &str = "tessera_csrf";
/// Name of the cookie of a sign-in waiting for its second factor.
pub use mfa::MFA_COOKIE;

/// Every route of Tessera.
pub fn router(idp: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/saml/metadata", get(sso::metadata))
        .route("/saml/sso", get(sso::sso_redirect).post(sso::sso_post))
        .route("/saml/init", get(sso::idp_initiated))
        .route("/saml/slo", get(slo::slo_redirect).post(slo::slo_post))
        .route("/saml/slo/continue", get(slo::slo_continue))
        .route("/saml/slo/front/{handle}/status", get(slo_front::status))
        .route("/saml/slo/front/{handle}/finish", get(slo_front::finish))
        .route("/saml/slo/front/{handle}/{n}", get(slo_front::frame))
        .route("/login", get(login::login_form).post(login::login_submit))
        .route("/logout", post(login::logout))
        .route("/apps", get(login::apps))
        .route("/sessions", get(account::sessions))
        .route("/sessions/end", post(account::end_session))
        .route(
            "/password",
            get(account::password_form).post(account::password_submit),
        )
        .route(
            "/recover",
            get(recovery::start_form).post(recovery::start_submit),
        )
        .route("/recover/step", post(recovery::step_submit))
        .route(
            "/recover/webauthn/options",
            post(recovery::webauthn_options),
        )
        .route("/recover/webauthn", post(recovery::webauthn_submit))
        .route(
            "/recover/link",
            get(recovery::link_form).post(recovery::link_submit),
        )
        .route("/mfa", get(mfa::page))
        .route("/mfa/totp", post(mfa::totp_submit))
        .route("/mfa/recovery", post(mfa::recovery_submit))
        .route("/mfa/webauthn/options", post(mfa::webauthn_options))
        .route("/mfa/webauthn", post(mfa::webauthn_submit))
        .route("/mfa/enrol/totp", post(mfa::enrol_totp))
        .route(
            "/mfa/enrol/webauthn/options",
            post(mfa::enrol_webauthn_options),
        )
        .route("/mfa/enrol/webauthn", post(mfa::enrol_webauthn))
        .route("/mfa/continue", post(mfa::continue_after_codes))
        .route("/mfa/webauthn.js", get(mfa::script))
        .route("/mfa/manage", get(mfa::manage).post(mfa::manage_return))
        .route("/mfa/manage/totp", post(mfa::manage_totp))
        .route(
            "/mfa/manage/webauthn/options",
            post(mfa::manage_webauthn_options),
        )
        .route("/mfa/manage/webauthn", post(mfa::manage_webauthn))
        .route(
            "/mfa/manage/webauthn/remove",
            post(mfa::manage_webauthn_remove),
        )
        .route(
            "/mfa/manage/recovery-codes",
            post(mfa::manage_recovery_codes),
        )
        .route("/", get(|| async { axum::response::Redirect::to("/apps") }))
        .merge(admin::routes())
        .merge(crate::api::router())
        .with_state(idp)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    idp: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = axum::serve(
        listener,
        router(idp.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    // The last requests are answered: write every login event they queued before reporting the stop.
    idp.events.shutdown().await;
    served
}

/// Liveness and readiness: 200 only when the directory and the session store both answer.
async fn healthz(State(idp): State<AppState>) -> Response {
    let probe = match SessionId::generate() {
        Ok(id) => idp
            .sessions
            .get(&id)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let directory = idp
        .directory
        .backend_name()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    match (probe, directory) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        (store, dir) => {
            tracing::warn!(?store, ?dir, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n").into_response()
        }
    }
}

/// The client's address: the socket's peer, unless the peer is a configured trusted proxy, in which
/// case the right-most address of `Forwarded` / `X-Forwarded-For` that is not a trusted proxy. A header
/// from anyone else changes nothing.
pub fn client_ip(idp: &Idp, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    crate::policy::client_address(
        peer.ip(),
        header("forwarded"),
        header("x-forwarded-for"),
        &idp.trusted_proxies,
    )
    .to_canonical()
}

/// The value of cookie `name` in the request, if present exactly once.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == name {
                    if found.is_some() {
                        // Two cookies of the same name: an injection attempt or a mess; trust neither.
                        return None;
                    }
                    found = Some(v);
                }
            }
        }
    }
    found
}

/// The live session named by the cookie, if any. A store failure is an error (fail closed), a missing or
/// malformed cookie is simply no session.
pub async fn current_session(
    idp: &Idp,
    headers: &HeaderMap,
) -> Result<Option<(SessionId, Session)>, WebError> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Ok(id) = SessionId::from_cookie(value) else {
        return Ok(None);
    };
    match idp.sessions.get(&id).await {
        Ok(Some(session)) => Ok(Some((id, session))),
        Ok(None) => Ok(None),
        Err(e) => Err(WebError::Sso(e.into())),
    }
}

/// A `Set-Cookie` value with the attributes every Tessera cookie has.
pub fn set_cookie(
    idp: &Idp,
    name: &str,
    value: &str,
    max_age: Option<u64>,
    same_site: &str,
) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
    if idp.config.secure_cookies() {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    // The value is base64url or empty, the name a constant: always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}
