//! The second-factor pages: the challenge after the password (or at a step-up), enrolment at sign-in
//! when the policy requires a factor the user does not have yet, the recovery codes shown once, the
//! WebAuthn ceremonies (the only part that needs JavaScript), and the signed-in user's security page.
//!
//! Between the password and the second factor the person is half signed in: no session exists. What
//! is known (user, policy, pending SSO request, acceptable factors) is kept server-side in the session
//! store for [`STATE_TTL`] under a random token; the browser holds only the token, in the `tessera_mfa`
//! cookie. A step-up of an existing session uses the same state, bound to that session's key; once the
//! factor is done the session records it (`authn_methods`, `mfa_instant`) and the pending SSO resumes
//! through [`Idp::advance_sso`].

use super::forms::CheckedForm;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::login::csrf_token;
use super::pages::{
    html, html_with_script, AuthenticatorRow, MfaChallengePage, MfaEnrolPage, MfaManagePage,
    RecoveryCodesPage,
};
use super::sso::respond;
use super::{
    client_ip, cookie, current_session, set_cookie, AppState, WebError, CSRF_COOKIE, SESSION_COOKIE,
};
use crate::directory::{self, UserStatus};
use crate::idp::{Idp, SecondFactorNeeded, SsoError, SsoOutcome, SsoStep};
use crate::mfa::webauthn::{PublicKeyCredential, RegisterPublicKeyCredential};
use crate::mfa::{self, MfaActor, RecoveryOutcome, TotpOutcome, WebauthnOutcome};
use crate::policy::MfaMethod;
use crate::session::{AuthnMethod, Session, SessionId};

/// Name of the cookie that carries the half-signed-in token.
pub const MFA_COOKIE: &str = "tessera_mfa";

/// Session-store namespace of half-signed-in states.
const STATE_NAMESPACE: &str = "mfa-signin";

/// How long the second factor (or the enrolment) may take after the password.
pub const STATE_TTL: Duration = Duration::from_secs(10 * 60);

/// How recent a second factor must be to change one's factors on the security page.
const MANAGE_FRESHNESS_SECS: i64 = 15 * 60;

/// Random bytes of a state token (256 bits), and the length of its base64url text.
const TOKEN_BYTES: usize = 32;
/// See [`TOKEN_BYTES`].
const TOKEN_LEN: usize = 43;

/// The WebAuthn glue script, served at `/mfa/webauthn.js` (the pages' CSP allows only this script).
const WEBAUTHN_JS: &str = include_str!("../../templates/webauthn.js");

/// Where the person goes once the factor is done and no SSO is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReturnTo {
    /// The portal.
    Apps,
    /// The security page (a step-up or TOTP set-up started there).
    Manage,
    /// The admin console (`/login?return=/admin`); a fixed place, so no open redirect.
    Admin,
}

impl ReturnTo {
    /// The path to redirect to.
    pub(super) fn path(self) -> &'static str {
        match self {
            ReturnTo::Apps => "/apps",
            ReturnTo::Manage => "/mfa/manage",
            ReturnTo::Admin => "/admin",
        }
    }
}

/// A sign-in (or step-up) waiting for its second factor, kept in the session store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaState {
    /// The user who passed the password (or owns the session being stepped up).
    user_id: i64,
    /// Their username, for the pages.
    username: String,
    /// The effective policy: the new session's lifetimes, WebAuthn user verification.
    policy: String,
    /// The factors that would do (held by the user, or to enrol with `enrol`).
    methods: Vec<MfaMethod>,
    /// The user holds none of `methods`: enrolment first.
    enrol: bool,
    /// Why a factor is asked for, for the page.
    reason: String,
    /// Handle of the pending SSO request; empty when none.
    request: String,
    /// `None`: signing in, no session yet. `Some(key)`: stepping up the session with this key.
    session_key: Option<String>,
    /// Client address at the password, recorded in the session opened at the end.
    client_ip: IpAddr,
    /// Client User-Agent at the password, recorded likewise.
    user_agent: String,
    /// A factor enrolled under this state; the recovery codes page came between, and Continue
    /// finishes with it.
    enrolled: Option<MfaMethod>,
    /// Where to go when no SSO is pending.
    return_to: ReturnTo,
}

impl MfaState {
    /// The state for `need`. `session` is the session being stepped up, `None` at sign-in.
    pub fn new(
        need: SecondFactorNeeded,
        request: &str,
        session: Option<&SessionId>,
        client_ip: IpAddr,
        user_agent: &str,
        return_to: ReturnTo,
    ) -> Self {
        let reason = if need.enrol {
            format!(
                "A second factor is required ({}). Set one up now to continue.",
                need.missing
            )
        } else {
            format!("One more step: {}.", need.missing)
        };
        MfaState {
            user_id: need.user_id,
            username: need.username,
            policy: need.policy,
            methods: need.methods,
            enrol: need.enrol,
            reason,
            request: request.to_owned(),
            session_key: session.map(|id| id.key().as_str().to_owned()),
            client_ip,
            user_agent: user_agent.to_owned(),
            enrolled: None,
            return_to,
        }
    }

    /// Whether `method` may be used (or enrolled) under this state.
    fn offers(&self, method: MfaMethod) -> bool {
        self.methods.contains(&method)
    }
}

/// Body of the code forms.
#[derive(Deserialize)]
pub struct CodeForm {
    /// Double-submit CSRF token.
    #[serde(default)]
    csrf_token: String,
    /// The code as typed.
    #[serde(default)]
    code: String,
}

/// Body of the forms with only the CSRF token (ceremony options, Continue, security actions).
#[derive(Deserialize)]
pub struct TokenForm {
    /// Double-submit CSRF token.
    #[serde(default)]
    csrf_token: String,
}

/// Body of the WebAuthn forms: the authenticator's answer as JSON and, when registering, a name.
#[derive(Deserialize)]
pub struct CredentialForm {
    /// Double-submit CSRF token.
    #[serde(default)]
    csrf_token: String,
    /// The authenticator's answer as JSON (binary fields base64url), filled in by the page's script.
    #[serde(default)]
    credential: String,
    /// The name for a new authenticator (registration only).
    #[serde(default)]
    name: String,
}

/// Body of the authenticator removal form.
#[derive(Deserialize)]
pub struct NameForm {
    /// Double-submit CSRF token.
    #[serde(default)]
    csrf_token: String,
    /// The authenticator to remove.
    #[serde(default)]
    name: String,
}

/// A fresh state token.
fn new_token() -> Result<String, WebError> {
    let mut raw = [0u8; TOKEN_BYTES];
    openssl::rand::rand_bytes(&mut raw).map_err(|e| SsoError::Build(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// Stores `state` under `token` (a new TTL each time).
async fn save(idp: &Idp, token: &str, state: &MfaState) -> Result<(), WebError> {
    let value = serde_json::to_string(state).map_err(|e| SsoError::Build(e.to_string()))?;
    idp.sessions
        .put_temp(STATE_NAMESPACE, token, &value, STATE_TTL)
        .await
        .map_err(SsoError::from)?;
    Ok(())
}

/// Keeps `state` and sends the browser to the MFA page with the token cookie.
pub async fn begin(idp: &Idp, state: &MfaState) -> Result<Response, WebError> {
    let token = new_token()?;
    save(idp, &token, state).await?;
    tracing::info!(user = %state.username, enrol = state.enrol, step_up = state.session_key.is_some(), "second factor required");
    let mut response = Redirect::to("/mfa").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            idp,
            MFA_COOKIE,
            &token,
            Some(STATE_TTL.as_secs()),
            // Lax, not Strict: the step-up starts in a redirect chain begun by the SP's site.
            "Lax",
        ),
    );
    Ok(response)
}

/// The state named by the cookie. A step-up state is only valid with the session it was made for.
async fn load(idp: &Idp, headers: &HeaderMap) -> Result<(String, MfaState), WebError> {
    let token = cookie(headers, MFA_COOKIE)
        .filter(|t| {
            t.len() == TOKEN_LEN
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or(WebError::MfaExpired)?;
    let value = idp
        .sessions
        .get_temp(STATE_NAMESPACE, token)
        .await
        .map_err(SsoError::from)?
        .ok_or(WebError::MfaExpired)?;
    let state: MfaState = serde_json::from_str(&value).map_err(|_| WebError::MfaExpired)?;
    if let Some(key) = &state.session_key {
        let current = current_session(idp, headers).await?;
        if current.is_none_or(|(id, _)| id.key().as_str() != key) {
            return Err(WebError::MfaExpired);
        }
    }
    Ok((token.to_owned(), state))
}

/// Renders a page with `status`, setting the CSRF cookie when it is new.
fn render(
    idp: &Idp,
    page: &impl Template,
    status: StatusCode,
    csrf: &(String, bool),
    with_script: bool,
) -> Result<Response, WebError> {
    let body = page.render().map_err(|e| SsoError::Build(e.to_string()))?;
    let (mut headers, body) = if with_script {
        html_with_script(body)
    } else {
        html(body)
    };
    if csrf.1 {
        headers.insert(
            header::SET_COOKIE,
            set_cookie(idp, CSRF_COOKIE, &csrf.0, None, "Strict"),
        );
    }
    Ok((status, headers, body).into_response())
}

/// The challenge page for `state`, with an error when an attempt failed.
fn challenge_page(
    idp: &Idp,
    state: &MfaState,
    csrf: &(String, bool),
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, WebError> {
    let webauthn = state.offers(MfaMethod::WebAuthn) && idp.webauthn.is_some();
    let page = MfaChallengePage {
        csrf_token: &csrf.0,
        username: &state.username,
        reason: &state.reason,
        totp: state.offers(MfaMethod::Totp),
        webauthn,
        recovery: state.offers(MfaMethod::RecoveryCode),
        error,
    };
    render(idp, &page, status, csrf, webauthn)
}

/// The base32 secret in groups of four, as apps that cannot scan want it typed.
fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The enrolment page. `fresh_totp` starts a new TOTP enrolment (a new secret and QR code); without
/// it the page only asks again for the code of the enrolment already shown.
async fn enrol_page(
    idp: &Idp,
    state: &MfaState,
    csrf: &(String, bool),
    status: StatusCode,
    error: Option<&str>,
    fresh_totp: bool,
) -> Result<Response, WebError> {
    let totp = state.offers(MfaMethod::Totp);
    let setup = if totp && fresh_totp {
        Some(
            idp.mfa
                .begin_totp_enrolment(state.user_id, &state.username)
                .await?,
        )
    } else {
        None
    };
    let secret = setup
        .as_ref()
        .map(|s| grouped(&s.secret_base32))
        .unwrap_or_default();
    let webauthn = state.offers(MfaMethod::WebAuthn) && idp.webauthn.is_some();
    let page = MfaEnrolPage {
        csrf_token: &csrf.0,
        username: &state.username,
        reason: &state.reason,
        totp,
        totp_qr: setup.as_ref().map(|s| s.qr_svg.as_str()),
        totp_secret: &secret,
        webauthn,
        error,
    };
    render(idp, &page, status, csrf, webauthn)
}

/// The "codes shown once" page, or the Continue page when they were shown already.
fn codes_page(
    idp: &Idp,
    csrf: &(String, bool),
    codes: Vec<String>,
    continue_action: &str,
    continue_label: &str,
) -> Result<Response, WebError> {
    let page = RecoveryCodesPage {
        csrf_token: &csrf.0,
        codes,
        continue_action,
        continue_label,
    };
    render(idp, &page, StatusCode::OK, csrf, false)
}

/// `GET /mfa`: the enrolment page, the challenge page, or (after an enrolment) the way on.
pub async fn page(State(idp): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    let (_, state) = load(&idp, &headers).await?;
    let csrf = csrf_token(&headers);
    if state.enrolled.is_some() {
        return codes_page(&idp, &csrf, Vec::new(), "/mfa/continue", "Continue");
    }
    if state.enrol {
        return enrol_page(&idp, &state, &csrf, StatusCode::OK, None, true).await;
    }
    challenge_page(&idp, &state, &csrf, StatusCode::OK, None)
}

/// Refuses a factor the state does not offer (a forged form, or a page from another state).
fn require(state: &MfaState, method: MfaMethod, enrol: bool) -> Result<(), WebError> {
    if state.offers(method) && state.enrol == enrol && state.enrolled.is_none() {
        Ok(())
    } else {
        Err(WebError::BadRequest {
            message: "This step is not part of your sign-in.",
            detail: format!(
                "{method} (enrol: {enrol}) not offered to {}",
                state.username
            ),
        })
    }
}

/// The message and status for a refused TOTP attempt.
fn totp_refusal(outcome: TotpOutcome) -> (StatusCode, &'static str) {
    match outcome {
        TotpOutcome::Replayed => (
            StatusCode::UNAUTHORIZED,
            "That code was used already. Wait for the app to show the next code, then enter it.",
        ),
        TotpOutcome::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts. Wait a few minutes, then try again.",
        ),
        TotpOutcome::Wrong | TotpOutcome::Accepted { .. } => (
            StatusCode::UNAUTHORIZED,
            "That code is not right. Check the app and enter the current code.",
        ),
    }
}

/// `POST /mfa/totp`: a code from the user's authenticator app.
pub async fn totp_submit(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<CodeForm>,
) -> Result<Response, WebError> {
    let (token, state) = load(&idp, &headers).await?;
    require(&state, MfaMethod::Totp, false)?;
    let outcome = idp
        .mfa
        .verify_totp(state.user_id, &form.code, Utc::now().timestamp())
        .await?;
    if let TotpOutcome::Accepted { .. } = outcome {
        return finish(&idp, &headers, peer, &token, state, MfaMethod::Totp).await;
    }
    tracing::info!(user = %state.username, ?outcome, "TOTP code refused");
    failed(&idp, &state, &format!("totp: {outcome:?}")).await;
    let (status, message) = totp_refusal(outcome);
    challenge_page(&idp, &state, &csrf_token(&headers), status, Some(message))
}

/// `POST /mfa/recovery`: one of the user's recovery codes.
pub async fn recovery_submit(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<CodeForm>,
) -> Result<Response, WebError> {
    let (token, state) = load(&idp, &headers).await?;
    require(&state, MfaMethod::RecoveryCode, false)?;
    let (status, message) = match idp.mfa.use_recovery_code(state.user_id, &form.code).await? {
        RecoveryOutcome::Accepted { remaining } => {
            tracing::info!(user = %state.username, remaining, "recovery code used");
            return finish(&idp, &headers, peer, &token, state, MfaMethod::RecoveryCode).await;
        }
        RecoveryOutcome::Wrong => (
            StatusCode::UNAUTHORIZED,
            "That recovery code is not right, or was used already.",
        ),
        RecoveryOutcome::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts. Wait a few minutes, then try again.",
        ),
    };
    let why = if status == StatusCode::TOO_MANY_REQUESTS {
        "recovery code: rate limited"
    } else {
        "recovery code: wrong or used already"
    };
    failed(&idp, &state, why).await;
    challenge_page(&idp, &state, &csrf_token(&headers), status, Some(message))
}

/// `POST /mfa/webauthn/options`: starts a sign-in ceremony; the options go to
/// `navigator.credentials.get`.
pub async fn webauthn_options(
    State(idp): State<AppState>,
    headers: HeaderMap,
    CheckedForm(_): CheckedForm<TokenForm>,
) -> Result<Response, WebError> {
    let (_, state) = load(&idp, &headers).await?;
    require(&state, MfaMethod::WebAuthn, false)?;
    let options = idp
        .mfa
        .start_webauthn_authentication(state.user_id, idp.user_verification(&state.policy))
        .await?;
    Ok(json_no_store(Json(options).into_response()))
}

/// `POST /mfa/webauthn`: the authenticator's signed answer.
pub async fn webauthn_submit(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<CredentialForm>,
) -> Result<Response, WebError> {
    let (token, state) = load(&idp, &headers).await?;
    require(&state, MfaMethod::WebAuthn, false)?;
    let csrf = csrf_token(&headers);
    let Ok(credential) = serde_json::from_str::<PublicKeyCredential>(&form.credential) else {
        return challenge_page(
            &idp,
            &state,
            &csrf,
            StatusCode::BAD_REQUEST,
            Some(NO_ANSWER),
        );
    };
    let outcome = match idp
        .mfa
        .finish_webauthn_authentication(state.user_id, &credential, Utc::now().timestamp())
        .await
    {
        Err(mfa::Error::NoCeremony) => {
            return challenge_page(
                &idp,
                &state,
                &csrf,
                StatusCode::BAD_REQUEST,
                Some(CEREMONY_EXPIRED),
            )
        }
        other => other?,
    };
    let (status, message) = match outcome {
        WebauthnOutcome::Accepted {
            name,
            user_verified,
        } => {
            tracing::info!(user = %state.username, authenticator = %name, user_verified, "WebAuthn accepted");
            return finish(&idp, &headers, peer, &token, state, MfaMethod::WebAuthn).await;
        }
        WebauthnOutcome::Refused(reason) => {
            tracing::info!(user = %state.username, %reason, "WebAuthn refused");
            failed(&idp, &state, &format!("webauthn: {reason}")).await;
            (
                StatusCode::UNAUTHORIZED,
                "The security key or passkey was not accepted. Try again, or use another way.",
            )
        }
        WebauthnOutcome::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts. Wait a few minutes, then try again.",
        ),
    };
    challenge_page(&idp, &state, &csrf, status, Some(message))
}

/// Records a refused second factor (at sign-in or at a step-up); `why` never carries the code.
async fn failed(idp: &Idp, state: &MfaState, why: &str) {
    idp.second_factor_failed(
        state.user_id,
        &state.username,
        state.client_ip,
        &state.user_agent,
        why,
    )
    .await;
}

/// Shown when the WebAuthn form arrives without a readable answer (e.g. no JavaScript).
const NO_ANSWER: &str =
    "No answer from a security key or passkey arrived. This step needs JavaScript; or use another way.";

/// Shown when a WebAuthn ceremony was not started or has expired.
const CEREMONY_EXPIRED: &str =
    "The security key step took too long or was already used. Please try again.";

/// `POST /mfa/enrol/totp`: the first code from the newly set-up app, which turns it on.
pub async fn enrol_totp(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<CodeForm>,
) -> Result<Response, WebError> {
    let (token, state) = load(&idp, &headers).await?;
    require(&state, MfaMethod::Totp, true)?;
    let csrf = csrf_token(&headers);
    let outcome = match idp
        .mfa
        .confirm_totp_enrolment(state.user_id, &form.code, Utc::now().timestamp())
        .await
    {
        Err(mfa::Error::NoPendingEnrolment | mfa::Error::EnrolmentChanged) => {
            return enrol_page(
                &idp,
                &state,
                &csrf,
                StatusCode::BAD_REQUEST,
                Some("The set-up was restarted elsewhere. Scan this new QR code."),
                true,
            )
            .await
        }
        other => other?,
    };
    if let TotpOutcome::Accepted { .. } = outcome {
        tracing::info!(user = %state.username, "TOTP enrolled at sign-in");
        return enrolled(&idp, &headers, peer, &token, state, MfaMethod::Totp).await;
    }
    let (status, message) = totp_refusal(outcome);
    enrol_page(&idp, &state, &csrf, status, Some(message), false).await
}

/// `POST /mfa/enrol/webauthn/options`: starts a registration ceremony; the options go to
/// `navigator.credentials.create`.
pub async fn enrol_webauthn_options(
    State(idp): State<AppState>,
    headers: HeaderMap,
    CheckedForm(_): CheckedForm<TokenForm>,
) -> Result<Response, WebError> {
    let (_, state) = load(&idp, &headers).await?;
    require(&state, MfaMethod::WebAuthn, true)?;
    registration_options(&idp, state.user_id, &state.policy).await
}

/// Starts a registration for `user_id` with the user verification of `policy`.
async fn registration_options(idp: &Idp, user_id: i64, policy: &str) -> Result<Response, WebError> {
    let user = idp
        .directory
        .get_user(user_id)
        .await
        .map_err(SsoError::from)?
        .ok_or(WebError::MfaExpired)?;
    let display = user
        .display_name
        .clone()
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| user.username.clone());
    let options = idp
        .mfa
        .start_webauthn_registration(
            user.id,
            &user.username,
            &display,
            idp.user_verification(policy),
        )
        .await?;
    Ok(json_no_store(Json(options).into_response()))
}

/// Why a registration failed, for the page; `None` for failures that are not the person's to fix.
fn registration_refusal(error: &mfa::Error) -> Option<&'static str> {
    match error {
        mfa::Error::WebauthnRegistration(_) => {
            Some("The security key or passkey could not be registered. Please try again.")
        }
        mfa::Error::NoCeremony => Some(CEREMONY_EXPIRED),
        mfa::Error::Directory(directory::Error::DuplicateCredential(_)) => {
            Some("You already have a security key or passkey with that name, or this one is registered already.")
        }
        mfa::Error::Directory(directory::Error::InvalidName(_)) => {
            Some("Give it a name of 1 to 64 characters.")
        }
        _ => None,
    }
}

/// `POST /mfa/enrol/webauthn`: the new authenticator's answer, and its name.
pub async fn enrol_webauthn(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<CredentialForm>,
) -> Result<Response, WebError> {
    let (token, state) = load(&idp, &headers).await?;
    require(&state, MfaMethod::WebAuthn, true)?;
    let csrf = csrf_token(&headers);
    let Ok(credential) = serde_json::from_str::<RegisterPublicKeyCredential>(&form.credential)
    else {
        return enrol_page(
            &idp,
            &state,
            &csrf,
            StatusCode::BAD_REQUEST,
            Some(NO_ANSWER),
            true,
        )
        .await;
    };
    match idp
        .mfa
        .finish_webauthn_registration(state.user_id, form.name.trim(), &credential)
        .await
    {
        Ok(added) => {
            tracing::info!(user = %state.username, authenticator = %added.name, "WebAuthn enrolled at sign-in");
            enrolled(&idp, &headers, peer, &token, state, MfaMethod::WebAuthn).await
        }
        Err(e) => match registration_refusal(&e) {
            Some(message) => {
                tracing::info!(user = %state.username, error = %e, "WebAuthn registration refused");
                enrol_page(
                    &idp,
                    &state,
                    &csrf,
                    StatusCode::BAD_REQUEST,
                    Some(message),
                    true,
                )
                .await
            }
            None => Err(e.into()),
        },
    }
}

/// After a first factor is enrolled: the recovery codes, shown once, when the user has none yet;
/// then on (Continue). A user who still has unused codes keeps them.
async fn enrolled(
    idp: &Idp,
    headers: &HeaderMap,
    peer: SocketAddr,
    token: &str,
    mut state: MfaState,
    method: MfaMethod,
) -> Result<Response, WebError> {
    let factors = idp.mfa.factors(state.user_id).await?;
    if factors.recovery_codes_left > 0 {
        return finish(idp, headers, peer, token, state, method).await;
    }
    let codes = idp
        .mfa
        .regenerate_recovery_codes(state.user_id, &MfaActor::SelfService)
        .await?;
    state.enrolled = Some(method);
    state.enrol = false;
    save(idp, token, &state).await?;
    codes_page(
        idp,
        &csrf_token(headers),
        codes.iter().map(ToString::to_string).collect(),
        "/mfa/continue",
        "I have saved them, continue",
    )
}

/// `POST /mfa/continue`: on from the recovery codes page.
pub async fn continue_after_codes(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(_): CheckedForm<TokenForm>,
) -> Result<Response, WebError> {
    let (token, state) = load(&idp, &headers).await?;
    match state.enrolled {
        Some(method) => finish(&idp, &headers, peer, &token, state, method).await,
        None => Ok(Redirect::to("/mfa").into_response()),
    }
}

/// The factor is done: open the session (sign-in) or record the factor in it (step-up), forget the
/// half-signed-in state, and resume the pending SSO.
async fn finish(
    idp: &Idp,
    headers: &HeaderMap,
    peer: SocketAddr,
    token: &str,
    state: MfaState,
    method: MfaMethod,
) -> Result<Response, WebError> {
    let now = Utc::now().timestamp();
    let ip = client_ip(idp, peer, headers);
    idp.sessions
        .delete_temp(STATE_NAMESPACE, token)
        .await
        .map_err(SsoError::from)?;
    let mut cookies = vec![set_cookie(idp, MFA_COOKIE, "", Some(0), "Lax")];
    let (id, session) = match &state.session_key {
        None => {
            // A new sign-in replaces whatever session this browser had.
            if let Some((old, _)) = current_session(idp, headers).await? {
                idp.sessions.delete(&old).await.map_err(SsoError::from)?;
            }
            let user = match idp
                .directory
                .get_user(state.user_id)
                .await
                .map_err(SsoError::from)?
            {
                Some(u) if u.status == UserStatus::Active => u,
                _ => return Err(SsoError::UserInactive(state.username.clone()).into()),
            };
            let lifetimes = idp.session_lifetimes(&state.policy).await?;
            let id = idp
                .open_session(
                    &user,
                    vec![AuthnMethod::Password, method.to_authn()],
                    state.client_ip,
                    &state.user_agent,
                    lifetimes,
                )
                .await?;
            let session = idp
                .sessions
                .get(&id)
                .await
                .map_err(SsoError::from)?
                .ok_or(WebError::NotSignedIn)?;
            cookies.push(set_cookie(
                idp,
                SESSION_COOKIE,
                &id.to_cookie(),
                None,
                "Lax",
            ));
            tracing::info!(user = %user.username, %ip, factor = %method, "signed in with a second factor");
            idp.signed_in(
                user.id,
                &user.username,
                state.client_ip,
                &state.user_agent,
                &format!("password + {method}"),
            )
            .await;
            (id, session)
        }
        Some(_) => {
            let (id, mut session) = current_session(idp, headers)
                .await?
                .ok_or(WebError::NotSignedIn)?;
            if !session.authn_methods.contains(&method.to_authn()) {
                session.authn_methods.push(method.to_authn());
            }
            session.mfa_instant = Some(now);
            if !idp
                .sessions
                .update(&id, &session)
                .await
                .map_err(SsoError::from)?
            {
                return Err(WebError::NotSignedIn);
            }
            tracing::info!(user = %session.username, %ip, factor = %method, "session stepped up");
            (id, session)
        }
    };
    let mut response = match resume(
        idp,
        &id,
        &session,
        &state.request,
        ip,
        &state.user_agent,
        state.return_to,
    )
    .await
    {
        Ok(r) => r,
        // The session exists now; even a refusal keeps the person signed in.
        Err(e) => e.into_response(),
    };
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

/// Resumes the pending SSO `handle` (if any) for a session that has just authenticated (password or
/// second factor): the response for the SP, the MFA page for a factor still owed, or `return_to`.
pub async fn resume(
    idp: &Idp,
    id: &SessionId,
    session: &Session,
    handle: &str,
    ip: IpAddr,
    user_agent: &str,
    return_to: ReturnTo,
) -> Result<Response, WebError> {
    let Some(mut pending) = idp.pending(handle).await? else {
        return Ok(Redirect::to(return_to.path()).into_response());
    };
    // The person has just authenticated: ForceAuthn is satisfied.
    pending.force_authn = false;
    match idp.advance_sso(&pending, Some((id, session)), ip).await? {
        SsoStep::Outcome(SsoOutcome::Login) => {
            Ok(Redirect::to(&format!("/login?request={handle}")).into_response())
        }
        SsoStep::Outcome(outcome) => {
            idp.forget_pending(handle).await?;
            Ok(respond(outcome))
        }
        SsoStep::SecondFactor(need) => {
            // Nothing new could help: asking again would go round in circles.
            if need
                .methods
                .iter()
                .all(|m| session.authn_methods.contains(&m.to_authn()))
            {
                return Err(SsoError::PolicyNotMet {
                    user: session.username.clone(),
                    missing: need.missing,
                }
                .into());
            }
            let state = MfaState::new(need, handle, Some(id), ip, user_agent, return_to);
            begin(idp, &state).await
        }
    }
}

/// `GET /mfa/webauthn.js`: the WebAuthn glue script.
pub async fn script() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    (StatusCode::OK, headers, WEBAUTHN_JS).into_response()
}

/// Marks a JSON answer (ceremony options hold a one-time challenge) as not cacheable.
fn json_no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// ---------------------------------------------------------------------------------------------
// The security page: the signed-in user's own factors.
// ---------------------------------------------------------------------------------------------

/// Who may change factors: the signed-in user, with a second factor done in the last
/// [`MANAGE_FRESHNESS_SECS`] when they have one. Otherwise the response to send instead: the login
/// page, or a step-up that comes back here.
async fn manager(
    idp: &Idp,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Result<(SessionId, Session), Response>, WebError> {
    let Some((id, session)) = current_session(idp, headers).await? else {
        return Ok(Err(Redirect::to("/login").into_response()));
    };
    let factors = idp.mfa.factors(session.user_id).await?;
    let now = Utc::now().timestamp();
    let fresh = session
        .mfa_instant
        .is_some_and(|t| now.saturating_sub(t) <= MANAGE_FRESHNESS_SECS);
    if !factors.has_second_factor() || fresh {
        return Ok(Ok((id, session)));
    }
    let available = idp
        .directory
        .mfa_available(&session.username)
        .await
        .map_err(SsoError::from)?;
    let need = SecondFactorNeeded {
        user_id: session.user_id,
        username: session.username.clone(),
        policy: idp.policy_of(&session.username).await?,
        methods: available,
        enrol: false,
        missing: "changing your security settings needs a recent second factor".to_owned(),
    };
    let ip = client_ip(idp, peer, headers);
    let state = MfaState::new(need, "", Some(&id), ip, "", ReturnTo::Manage);
    Ok(Err(begin(idp, &state).await?))
}

/// A unix time as a UTC date and time, for the page.
fn when(at: i64) -> String {
    chrono::DateTime::<Utc>::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// Renders the security page of `session`'s user.
async fn manage_page(
    idp: &Idp,
    headers: &HeaderMap,
    session: &Session,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response, WebError> {
    let factors = idp.mfa.factors(session.user_id).await?;
    let authenticators = idp
        .mfa
        .webauthn_credentials(session.user_id)
        .await?
        .into_iter()
        .map(|c| AuthenticatorRow {
            name: c.name,
            added: when(c.created_at),
            last_used: c.last_used.map(when).unwrap_or_else(|| "never".to_owned()),
        })
        .collect();
    let csrf = csrf_token(headers);
    let webauthn = idp.webauthn.is_some();
    let page = MfaManagePage {
        csrf_token: &csrf.0,
        username: &session.username,
        totp: factors.totp,
        authenticators,
        recovery_codes_left: factors.recovery_codes_left,
        webauthn,
        notice,
        error,
    };
    render(idp, &page, status, &csrf, webauthn)
}

/// `GET /mfa/manage`: the security page.
pub async fn manage(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    match manager(&idp, &headers, peer).await? {
        Ok((_, session)) => manage_page(&idp, &headers, &session, StatusCode::OK, None, None).await,
        Err(response) => Ok(response),
    }
}

/// `POST /mfa/manage`: back to the security page (the Continue button after new recovery codes).
pub async fn manage_return() -> Response {
    Redirect::to("/mfa/manage").into_response()
}

/// `POST /mfa/manage/totp`: sets up (or replaces) the authenticator app, through the enrolment page.
pub async fn manage_totp(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(_): CheckedForm<TokenForm>,
) -> Result<Response, WebError> {
    let (id, session) = match manager(&idp, &headers, peer).await? {
        Ok(s) => s,
        Err(response) => return Ok(response),
    };
    let need = SecondFactorNeeded {
        user_id: session.user_id,
        username: session.username.clone(),
        policy: idp.policy_of(&session.username).await?,
        methods: vec![MfaMethod::Totp],
        enrol: true,
        missing: "you asked to set up an authenticator app".to_owned(),
    };
    let ip = client_ip(&idp, peer, &headers);
    let state = MfaState::new(need, "", Some(&id), ip, "", ReturnTo::Manage);
    begin(&idp, &state).await
}

/// `POST /mfa/manage/webauthn/options`: starts registering another authenticator.
pub async fn manage_webauthn_options(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(_): CheckedForm<TokenForm>,
) -> Result<Response, WebError> {
    let (_, session) = match manager(&idp, &headers, peer).await? {
        Ok(s) => s,
        Err(_) => return Err(WebError::NotSignedIn),
    };
    let policy = idp.policy_of(&session.username).await?;
    registration_options(&idp, session.user_id, &policy).await
}

/// `POST /mfa/manage/webauthn`: registers another authenticator under a name.
pub async fn manage_webauthn(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<CredentialForm>,
) -> Result<Response, WebError> {
    let (_, session) = match manager(&idp, &headers, peer).await? {
        Ok(s) => s,
        Err(response) => return Ok(response),
    };
    let Ok(credential) = serde_json::from_str::<RegisterPublicKeyCredential>(&form.credential)
    else {
        return manage_page(
            &idp,
            &headers,
            &session,
            StatusCode::BAD_REQUEST,
            None,
            Some(NO_ANSWER),
        )
        .await;
    };
    match idp
        .mfa
        .finish_webauthn_registration(session.user_id, form.name.trim(), &credential)
        .await
    {
        Ok(added) => {
            tracing::info!(user = %session.username, authenticator = %added.name, "WebAuthn authenticator added");
            let notice = format!("Added {}.", added.name);
            manage_page(
                &idp,
                &headers,
                &session,
                StatusCode::OK,
                Some(&notice),
                None,
            )
            .await
        }
        Err(e) => match registration_refusal(&e) {
            Some(message) => {
                manage_page(
                    &idp,
                    &headers,
                    &session,
                    StatusCode::BAD_REQUEST,
                    None,
                    Some(message),
                )
                .await
            }
            None => Err(e.into()),
        },
    }
}

/// `POST /mfa/manage/webauthn/remove`: removes one of the user's authenticators (recorded).
pub async fn manage_webauthn_remove(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<NameForm>,
) -> Result<Response, WebError> {
    let (_, session) = match manager(&idp, &headers, peer).await? {
        Ok(s) => s,
        Err(response) => return Ok(response),
    };
    let removed = idp
        .mfa
        .remove_webauthn_credential(session.user_id, &form.name, &MfaActor::SelfService)
        .await?;
    if removed {
        tracing::info!(user = %session.username, authenticator = %form.name, "WebAuthn authenticator removed");
        let notice = format!("Removed {}.", form.name);
        manage_page(
            &idp,
            &headers,
            &session,
            StatusCode::OK,
            Some(&notice),
            None,
        )
        .await
    } else {
        manage_page(
            &idp,
            &headers,
            &session,
            StatusCode::NOT_FOUND,
            None,
            Some("There is no security key or passkey of that name."),
        )
        .await
    }
}

/// `POST /mfa/manage/recovery-codes`: replaces the recovery codes and shows the new ones once.
pub async fn manage_recovery_codes(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(_): CheckedForm<TokenForm>,
) -> Result<Response, WebError> {
    let (_, session) = match manager(&idp, &headers, peer).await? {
        Ok(s) => s,
        Err(response) => return Ok(response),
    };
    let codes = idp
        .mfa
        .regenerate_recovery_codes(session.user_id, &MfaActor::SelfService)
        .await?;
    tracing::info!(user = %session.username, "recovery codes regenerated");
    codes_page(
        &idp,
        &csrf_token(&headers),
        codes.iter().map(ToString::to_string).collect(),
        "/mfa/manage",
        "I have saved them, back to security",
    )
}

super::forms::csrf_protected!(CodeForm, CredentialForm, NameForm, TokenForm);
