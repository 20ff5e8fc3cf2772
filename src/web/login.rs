//! Sign-in, sign-out and the "My apps" portal.

use super::forms::CheckedForm;
use std::net::{IpAddr, SocketAddr};

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use super::mfa::{self, MfaState, ReturnTo};
use super::pages::{html, AppLink, AppsPage, LoginPage};
use super::sso::respond;
use super::{
    client_ip, cookie, current_session, set_cookie, AppState, WebError, CSRF_COOKIE, SESSION_COOKIE,
};
use crate::directory::PasswordCheck;
use crate::idp::{Idp, PendingRequest, SsoError, SsoOutcome, SsoStep};
use crate::policy::{Outcome, SessionFacts};
use crate::session::AuthnMethod;

/// The message for every failed password check: an unknown user and a wrong password look the same.
const BAD_CREDENTIALS: &str = "Incorrect username or password.";

/// The message for a locked-out username or address: the same whether or not the user exists.
const LOCKED_OUT: &str = "Too many sign-in attempts. Please try again later.";

/// Query of `GET /login`.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    request: String,
    /// Where to go after signing in when no SSO is pending: only `/admin` is honoured (see [`back`]).
    #[serde(default, rename = "return")]
    back: String,
}

/// Body of `POST /login`.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    request: String,
    /// As [`LoginQuery::back`], carried through the form.
    #[serde(default, rename = "return")]
    back: String,
}

/// Where a sign-in without a pending SSO ends: the admin console when the form says `/admin`, the
/// portal otherwise. Only this one fixed local path is accepted, so the parameter cannot redirect
/// anywhere else (no open redirect).
fn back(value: &str) -> ReturnTo {
    if value == "/admin" {
        ReturnTo::Admin
    } else {
        ReturnTo::Apps
    }
}

/// Body of `POST /logout`.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
}

/// A form body that is not a form: Tessera's page, not axum's plain text.
pub(super) fn malformed_form(e: FormRejection) -> WebError {
    WebError::BadRequest {
        message: "The form could not be read.",
        detail: e.body_text(),
    }
}

/// A query string that cannot be read.
pub fn malformed_query(e: QueryRejection) -> WebError {
    WebError::BadRequest {
        message: "The address could not be read.",
        detail: e.body_text(),
    }
}

/// The CSRF token of this browser: the cookie's value, or a new one to set.
pub(super) fn csrf_token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, CSRF_COOKIE) {
        Some(v) if v.len() == 43 => (v.to_owned(), false),
        _ => {
            let mut raw = [0u8; 32];
            // A failing RNG leaves an all-zero token that the POST check below refuses.
            let fresh = openssl::rand::rand_bytes(&mut raw).is_ok();
            (
                if fresh {
                    URL_SAFE_NO_PAD.encode(raw)
                } else {
                    String::new()
                },
                true,
            )
        }
    }
}

/// Double-submit check: the form field must equal the cookie, compared in constant time.
pub(super) fn check_csrf(headers: &HeaderMap, submitted: &str) -> Result<(), WebError> {
    match cookie(headers, CSRF_COOKIE) {
        Some(expected)
            if expected.len() == 43
                && expected.len() == submitted.len()
                && openssl::memcmp::eq(expected.as_bytes(), submitted.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(WebError::Csrf),
    }
}

// The page's parts are all distinct inputs of the one template; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn login_page(
    idp: &Idp,
    status: StatusCode,
    csrf: (String, bool),
    request: &str,
    username: &str,
    error: Option<&str>,
    sp_name: Option<&str>,
    return_to: ReturnTo,
) -> Response {
    let page = LoginPage {
        csrf_token: &csrf.0,
        request,
        return_to: if return_to == ReturnTo::Admin {
            return_to.path()
        } else {
            ""
        },
        username,
        error,
        sp_name,
    };
    let body = match page.render() {
        Ok(b) => b,
        Err(e) => return WebError::Sso(crate::idp::SsoError::Build(e.to_string())).into_response(),
    };
    let (mut headers, body) = html(body);
    if csrf.1 {
        headers.insert(
            header::SET_COOKIE,
            set_cookie(idp, CSRF_COOKIE, &csrf.0, None, "Strict"),
        );
    }
    (status, headers, body).into_response()
}

async fn sp_display_name(idp: &Idp, pending: Option<&PendingRequest>) -> Option<String> {
    let pending = pending?;
    idp.sp(&pending.sp_entity_id)
        .await
        .ok()
        .map(|sp| sp.record.display_name.clone())
}

/// `GET /login`: the form, unless a live session can answer the pending request at once (or only needs
/// a second factor for it: then the MFA page).
pub async fn login_form(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(query) = query.map_err(malformed_query)?;
    let session = current_session(&idp, &headers).await?;
    let pending = idp.pending(&query.request).await?;
    if let Some(pending) = &pending {
        if session.is_some() || pending.is_passive {
            let ip = client_ip(&idp, peer, &headers);
            let step = idp
                .advance_sso(pending, session.as_ref().map(|(id, s)| (id, s)), ip)
                .await?;
            match step {
                SsoStep::Outcome(SsoOutcome::Login) => {}
                SsoStep::Outcome(outcome) => {
                    idp.forget_pending(&query.request).await?;
                    return Ok(respond(outcome));
                }
                SsoStep::SecondFactor(need) => {
                    let session_id = session.as_ref().map(|(id, _)| id);
                    let state = MfaState::new(
                        need,
                        &query.request,
                        session_id,
                        ip,
                        user_agent(&headers),
                        back(&query.back),
                    );
                    return mfa::begin(&idp, &state).await;
                }
            }
        }
    } else if session.is_some() {
        return Ok(Redirect::to(back(&query.back).path()).into_response());
    }
    let request = if pending.is_some() {
        query.request.as_str()
    } else {
        ""
    };
    let sp_name = sp_display_name(&idp, pending.as_ref()).await;
    Ok(login_page(
        &idp,
        StatusCode::OK,
        csrf_token(&headers),
        request,
        "",
        None,
        sp_name.as_deref(),
        back(&query.back),
    ))
}

/// The client's User-Agent, recorded in the session.
fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `POST /login`: checks the password; then either asks for the second factor the user's policy
/// requires (no session yet), or opens a session and finishes the pending SSO, if any.
pub async fn login_submit(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<LoginForm>,
) -> Result<Response, WebError> {
    let pending = idp.pending(&form.request).await?;
    let request = if pending.is_some() {
        form.request.as_str()
    } else {
        ""
    };
    let sp_name = sp_display_name(&idp, pending.as_ref()).await;
    let csrf = csrf_token(&headers);
    let ip = client_ip(&idp, peer, &headers);
    let username = form.username.trim();
    let agent = user_agent(&headers);
    // The IP allowlists are checked before the password is even looked at.
    let decision = idp
        .check_access_from(username, ip, agent, None, None)
        .await?;
    if !matches!(decision.outcome, Outcome::Admit) {
        return Err(refusal(decision.outcome, username, ip));
    }
    // Brute-force defence: the attempt is counted before the password is checked (events::lockout).
    if !idp.password_attempt_allowed(username, ip, agent).await? {
        return Ok(login_page(
            &idp,
            StatusCode::TOO_MANY_REQUESTS,
            csrf,
            request,
            &form.username,
            Some(LOCKED_OUT),
            sp_name.as_deref(),
            back(&form.back),
        ));
    }
    let check = idp
        .directory
        .verify_password(username, &form.password)
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    let user = match check {
        PasswordCheck::Authenticated(user) => user,
        PasswordCheck::Rejected => {
            tracing::info!(username = %form.username, ip = %peer.ip(), "sign-in failed");
            idp.password_rejected(username, ip, agent).await;
            return Ok(login_page(
                &idp,
                StatusCode::UNAUTHORIZED,
                csrf,
                request,
                &form.username,
                Some(BAD_CREDENTIALS),
                sp_name.as_deref(),
                back(&form.back),
            ));
        }
        PasswordCheck::Disabled(user) => {
            tracing::info!(username = %user.username, "sign-in refused: account disabled");
            idp.sign_in_deactivated(&user, ip, agent).await;
            return Err(WebError::Sso(crate::idp::SsoError::UserInactive(
                user.username,
            )));
        }
    };
    idp.password_accepted(&user).await?;
    // A password step the user owes first: an expired password, security questions to choose.
    if let Some(page) = super::recovery::after_password(&idp, &user, request, ip, &headers).await? {
        return Ok(page);
    }
    // The user's security policy, now that we know who it is and how they signed in.
    let facts = SessionFacts::fresh(vec![AuthnMethod::Password], chrono::Utc::now().timestamp());
    let decision = idp
        .check_access_from(&user.username, ip, agent, None, Some(&facts))
        .await?;
    let policy = match decision.outcome {
        Outcome::Admit => decision.policy,
        // The policy requires a second factor: ask for it (or for its enrolment) before any session.
        Outcome::StepUp {
            reauthenticate: false,
            mfa_methods,
            missing,
        } if !mfa_methods.is_empty() => {
            let need = idp
                .second_factor(&user, &decision.policy, &mfa_methods, missing)
                .await?;
            if need.methods.is_empty() {
                idp.second_factor_missing(&user, ip, agent, &decision.policy, &need.missing)
                    .await;
                return Err(SsoError::PolicyNotMet {
                    user: user.username.clone(),
                    missing: need.missing,
                }
                .into());
            }
            tracing::info!(user = %user.username, ip = %peer.ip(), "password accepted; second factor next");
            let state = MfaState::new(
                need,
                request,
                None,
                ip,
                user_agent(&headers),
                back(&form.back),
            );
            return mfa::begin(&idp, &state).await;
        }
        other => return Err(refusal(other, &user.username, ip)),
    };
    // A policy may ask a second factor of a sign-in from a country or device not seen before.
    if let Some(need) = idp
        .second_factor_for_new_context(&user, &policy, ip, agent)
        .await?
    {
        let state = MfaState::new(need, request, None, ip, agent, back(&form.back));
        return mfa::begin(&idp, &state).await;
    }
    let lifetimes = idp.session_lifetimes(&policy).await?;
    // A new sign-in replaces whatever session this browser had (ForceAuthn, or another user).
    if let Some((old, _)) = current_session(&idp, &headers).await? {
        idp.sessions
            .delete(&old)
            .await
            .map_err(|e| WebError::Sso(e.into()))?;
    }
    let id = idp
        .open_session(
            &user,
            vec![AuthnMethod::Password],
            ip,
            user_agent(&headers),
            lifetimes,
        )
        .await?;
    let session_cookie = set_cookie(&idp, SESSION_COOKIE, &id.to_cookie(), None, "Lax");
    tracing::info!(user = %user.username, ip = %peer.ip(), "signed in");
    idp.signed_in(user.id, &user.username, ip, agent, "password")
        .await;
    let session = idp
        .sessions
        .get(&id)
        .await
        .map_err(|e| WebError::Sso(e.into()))?
        .ok_or(WebError::NotSignedIn)?;
    let mut response = match mfa::resume(
        &idp,
        &id,
        &session,
        request,
        ip,
        user_agent(&headers),
        back(&form.back),
    )
    .await
    {
        Ok(response) => response,
        // The session exists now; even a refusal keeps the person signed in.
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .append(header::SET_COOKIE, session_cookie);
    Ok(response)
}

/// The refusal for an access decision that is not an admit (a step-up that cannot be taken here
/// says what is missing).
fn refusal(outcome: Outcome, username: &str, ip: IpAddr) -> WebError {
    match outcome {
        Outcome::Deny { reason } => SsoError::denied(reason, username, ip).into(),
        Outcome::StepUp { missing, .. } => SsoError::PolicyNotMet {
            user: username.to_owned(),
            missing,
        }
        .into(),
        Outcome::Admit => SsoError::Build("an admitted access was refused".to_owned()).into(),
    }
}

/// `POST /logout`: single logout from the portal (saml-profiles 4.4): every app the session reached is
/// told, the session ends, and the page lists which apps confirmed (`web/slo.rs`).
pub async fn logout(
    State(idp): State<AppState>,
    headers: HeaderMap,
    CheckedForm(_): CheckedForm<LogoutForm>,
) -> Result<Response, WebError> {
    super::slo::portal_logout(&idp, &headers).await
}

/// `GET /apps`: the apps assigned to the signed-in user (directly or by rule), each launching
/// IdP-initiated SSO.
pub async fn apps(State(idp): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    let Some((_, session)) = current_session(&idp, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    // Directly assigned or granted by an assignment rule, as the user is now.
    let user = idp
        .directory
        .get_user(session.user_id)
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    let apps = match user {
        Some(user) => idp.app_access(&user).await?,
        None => Vec::new(),
    };
    let mut logos = idp
        .directory
        .sp_logos()
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    let apps = apps
        .into_iter()
        .filter(|sp| sp.enabled)
        .map(|sp| AppLink {
            logo_url: logos.remove(&sp.entity_id),
            entity_id: sp.entity_id,
            display_name: sp.display_name,
        })
        .collect();
    let csrf = csrf_token(&headers);
    let page = AppsPage {
        username: &session.username,
        apps,
        csrf_token: &csrf.0,
    };
    let body = page
        .render()
        .map_err(|e| WebError::Sso(crate::idp::SsoError::Build(e.to_string())))?;
    let (mut out, body) = super::pages::html_with_logos(body);
    if csrf.1 {
        out.insert(
            header::SET_COOKIE,
            set_cookie(&idp, CSRF_COOKIE, &csrf.0, None, "Strict"),
        );
    }
    Ok((StatusCode::OK, out, body).into_response())
}

super::forms::csrf_protected!(LoginForm, LogoutForm);
