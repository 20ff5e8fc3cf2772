//! Account recovery (`/recover`) and the password steps that sign-in may insist on.
//!
//! One state machine serves four purposes: self-service recovery (username, then the security
//! questions, then — for a user with second factors — a TOTP code, a recovery code or a WebAuthn
//! passkey / security key, then a new password), an administrator's reset link (the second factor if any, then a new password), an expired password
//! at sign-in (the second factor if any, then a new password) and the security questions a policy
//! wants chosen at first sign-in (the second factor if any, then the questions). The state lives in
//! the session store under a random handle for [`FLOW_TTL`]; the browser holds the handle in the
//! `tessera_recovery` cookie, and the next step is always the server's, never the form's.
//!
//! The second-factor step offers a passkey only to a user who has one, and only after the questions
//! were answered (or the reset link spent, or the password given at sign-in), which an unknown user
//! never gets past, so the offer tells nothing about who exists. Its ceremony mirrors the sign-in
//! challenge (`/mfa/webauthn/options`, `/mfa/webauthn`) at `/recover/webauthn/options` and
//! `/recover/webauthn`, with the ceremony state bound to the flow's handle.
//!
//! Every step is recorded as a login event. Each answer, code or passkey answer submitted counts, before it is checked,
//! against two atomic counters in the session store, one per username and one per client address; past
//! `recovery.max_failures` within `recovery.lockout_secs` recovery is locked for them
//! (`tessera user unlock-recovery`, or `POST /api/v1/users/{username}/unlock`, lifts the user's lock). An unknown username gets questions from the
//! catalogue chosen by a keyed hash of the name, costs the same argon2 work, and always fails, so the
//! pages do not tell whether an account exists.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::forms::CheckedForm;
use super::login::{csrf_token, malformed_query};
use super::pages::{html, html_with_script};
use super::{client_ip, cookie, set_cookie, AppState, WebError, CSRF_COOKIE};
use crate::directory::{
    self, question_text, LoginEvent, PasswordRules, User, UserStatus, SECURITY_QUESTIONS,
};
use crate::idp::{Idp, SsoError};
use crate::mfa::webauthn::PublicKeyCredential;
use crate::mfa::{self, RecoveryOutcome, TotpOutcome, WebauthnOutcome};
use crate::policy::{Outcome, SecurityPolicy};
use crate::session::SessionStore;

/// The cookie naming the recovery (or sign-in password step) in progress.
pub const RECOVERY_COOKIE: &str = "tessera_recovery";

/// Store namespace of flow states.
const FLOW_NAMESPACE: &str = "recovery";

/// How long a flow waits between steps.
const FLOW_TTL: Duration = Duration::from_secs(15 * 60);

/// The fewest questions a recovery shows, when no policy asks for more.
const DECOY_QUESTIONS: usize = 2;

/// Most answer fields a form carries (the policy maximum).
const MAX_FIELDS: usize = crate::policy::MAX_SECURITY_QUESTIONS as usize;

/// Why the flow exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Purpose {
    /// Self-service recovery from `/recover`.
    Recover,
    /// An administrator's reset link.
    ResetLink,
    /// The password expired (or an administrator asked for a change): a new one before sign-in goes on.
    Expired,
    /// The policy wants security questions the user has not chosen yet.
    SetupQuestions,
}

/// What the flow waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Stage {
    /// Answers to `Flow::questions`.
    Answers,
    /// A TOTP or recovery code, or a WebAuthn assertion (`/recover/webauthn`).
    Code,
    /// The new password, twice.
    NewPassword,
    /// Questions chosen and answered.
    ChooseQuestions,
}

/// A flow in progress, as kept in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flow {
    /// Why.
    purpose: Purpose,
    /// The next step.
    stage: Stage,
    /// The username as typed (recovery) or as stored.
    username: String,
    /// The user, or `None` for a username that names nobody (the flow then always fails).
    user_id: Option<i64>,
    /// The catalogue ids of the questions asked, in the order of the form's fields.
    questions: Vec<String>,
    /// Those of `questions` that are decoys shown to a real user (so that every username gets the
    /// same number of questions): their answers are ignored.
    #[serde(default)]
    decoys: Vec<String>,
    /// The pending SSO request handle to go back to after a sign-in step, or empty.
    request: String,
    /// The address that began the flow; another address cannot continue it.
    ip: IpAddr,
}

/// Which form the page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverStep {
    /// The username form.
    Username,
    /// The security questions.
    Answers,
    /// The second-factor code.
    Code,
    /// The new password.
    NewPassword,
    /// Choosing and answering questions.
    ChooseQuestions,
    /// The button that spends a reset link.
    ConfirmLink,
    /// Finished: a link on.
    Done,
}

/// Every page of the flow.
#[derive(Template)]
#[template(path = "recover.html")]
pub struct RecoverPage<'a> {
    /// The double-submit token of the form.
    pub csrf_token: &'a str,
    /// The heading.
    pub title: &'a str,
    /// A sentence under it.
    pub intro: &'a str,
    /// Which form.
    pub step: RecoverStep,
    /// Why the last attempt failed.
    pub error: Option<&'a str>,
    /// What happened.
    pub notice: Option<&'a str>,
    /// The question texts of [`RecoverStep::Answers`].
    pub questions: Vec<&'static str>,
    /// The field indexes of [`RecoverStep::ChooseQuestions`].
    pub slots: Vec<usize>,
    /// The catalogue offered there.
    pub catalogue: &'static [(&'static str, &'static str)],
    /// The policy's minimum, beside the new password field.
    pub min_length: u32,
    /// The reset token of [`RecoverStep::ConfirmLink`].
    pub token: &'a str,
    /// Where [`RecoverStep::Done`] leads.
    pub next: &'a str,
    /// [`RecoverStep::Code`]: whether the code form is shown (the user has TOTP or recovery codes).
    pub code: bool,
    /// [`RecoverStep::Code`]: whether the passkey form (and its script) is shown: the user has a
    /// WebAuthn authenticator and WebAuthn is configured.
    pub webauthn: bool,
}

impl<'a> RecoverPage<'a> {
    /// A page with nothing but the form `step`.
    fn new(csrf_token: &'a str, title: &'a str, step: RecoverStep) -> Self {
        RecoverPage {
            csrf_token,
            title,
            intro: "",
            step,
            error: None,
            notice: None,
            questions: Vec::new(),
            slots: Vec::new(),
            catalogue: SECURITY_QUESTIONS,
            min_length: crate::directory::MIN_PASSWORD_CHARS as u32,
            token: "",
            next: "/login",
            code: true,
            webauthn: false,
        }
    }
}

/// Body of `POST /recover`.
#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    username: String,
}

/// Body of `POST /recover/step`: the fields of whichever step the flow is at.
#[derive(Deserialize)]
pub struct StepForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    answer_0: String,
    #[serde(default)]
    answer_1: String,
    #[serde(default)]
    answer_2: String,
    #[serde(default)]
    answer_3: String,
    #[serde(default)]
    answer_4: String,
    #[serde(default)]
    question_0: String,
    #[serde(default)]
    question_1: String,
    #[serde(default)]
    question_2: String,
    #[serde(default)]
    question_3: String,
    #[serde(default)]
    question_4: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

impl StepForm {
    /// The answer fields in order.
    fn answers(&self) -> [&str; MAX_FIELDS] {
        [
            &self.answer_0,
            &self.answer_1,
            &self.answer_2,
            &self.answer_3,
            &self.answer_4,
        ]
    }

    /// The question fields in order.
    fn questions(&self) -> [&str; MAX_FIELDS] {
        [
            &self.question_0,
            &self.question_1,
            &self.question_2,
            &self.question_3,
            &self.question_4,
        ]
    }
}

/// Query of `GET /recover/link`.
#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    token: String,
}

/// Body of `POST /recover/link`.
#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    token: String,
}

/// Body of `POST /recover/webauthn/options`.
#[derive(Deserialize)]
pub struct PasskeyOptionsForm {
    #[serde(default)]
    csrf_token: String,
}

/// Body of `POST /recover/webauthn`: the authenticator's answer as JSON, filled in by the page's
/// script (templates/webauthn.js).
#[derive(Deserialize)]
pub struct PasskeyForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    credential: String,
}

super::forms::csrf_protected!(
    StartForm,
    StepForm,
    LinkForm,
    PasskeyOptionsForm,
    PasskeyForm
);

/// The store counter of failed recovery steps for a username.
fn user_counter(username: &str) -> String {
    format!("recovery-fail:user:{username}")
}

/// The store counter of failed recovery steps from an address.
fn ip_counter(ip: IpAddr) -> String {
    format!("recovery-fail:ip:{ip}")
}

/// Lifts the recovery lock of `username` (an administrator: `tessera user unlock-recovery`, or the
/// admin API's user unlock).
pub async fn unlock_recovery(
    store: &dyn SessionStore,
    username: &str,
) -> Result<(), crate::session::Error> {
    store.reset_counter(&user_counter(username)).await
}

/// An error of the store.
fn store_error(e: crate::session::Error) -> WebError {
    WebError::Sso(e.into())
}

/// An error of the directory.
fn dir_error(e: directory::Error) -> WebError {
    WebError::Sso(e.into())
}

/// Records one step.
async fn record(
    idp: &Idp,
    username: &str,
    user_id: Option<i64>,
    ip: IpAddr,
    outcome: &str,
    reason: &str,
) -> Result<(), WebError> {
    idp.directory
        .record_login_event(&LoginEvent {
            at: 0,
            username: username.to_owned(),
            user_id,
            ip: ip.to_string(),
            sp: None,
            outcome: outcome.to_owned(),
            reason: reason.to_owned(),
        })
        .await
        .map_err(dir_error)
}

/// Renders `page` with `status`, setting the CSRF cookie when new and any `cookies`.
fn render(
    idp: &Idp,
    status: StatusCode,
    page: &RecoverPage<'_>,
    csrf: &(String, bool),
    cookies: Vec<HeaderValue>,
) -> Result<Response, WebError> {
    let body = page
        .render()
        .map_err(|e| WebError::Sso(SsoError::Build(e.to_string())))?;
    // Only the passkey form needs the WebAuthn script; every other page allows no script at all.
    let (mut headers, body) = if page.webauthn {
        html_with_script(body)
    } else {
        html(body)
    };
    if csrf.1 {
        headers.append(
            header::SET_COOKIE,
            set_cookie(idp, CSRF_COOKIE, &csrf.0, None, "Strict"),
        );
    }
    for c in cookies {
        headers.append(header::SET_COOKIE, c);
    }
    Ok((status, headers, body).into_response())
}

/// The effective security policy of `username` (the built-in one when nothing applies).
async fn policy_of(idp: &Idp, username: &str) -> Result<SecurityPolicy, WebError> {
    let name = idp.policy_of(username).await?;
    let set = idp.policy_set().await?;
    Ok(set
        .policy(&name)
        .cloned()
        .unwrap_or_else(SecurityPolicy::builtin_default))
}

/// The password rules of a policy.
pub(super) fn rules_of(policy: &SecurityPolicy) -> PasswordRules {
    PasswordRules {
        min_chars: policy.password_min_length as usize,
        history: policy.password_history as usize,
    }
}

/// Whether the user has a second factor that recovery must ask for (TOTP, WebAuthn or recovery codes).
async fn has_mfa(idp: &Idp, user_id: i64) -> Result<bool, WebError> {
    let factors = idp.mfa.factors(user_id).await?;
    Ok(factors.has_second_factor() || factors.recovery_codes_left > 0)
}

/// How many questions every recovery shows, whether the username names someone or not: the most any
/// policy asks for (the built-in one included), at least [`DECOY_QUESTIONS`], at most [`MAX_FIELDS`].
async fn questions_shown(idp: &Idp) -> Result<usize, WebError> {
    let set = idp.policy_set().await?;
    let most = set
        .data()
        .policies
        .iter()
        .map(|p| p.security_questions_required)
        .chain(std::iter::once(
            SecurityPolicy::builtin_default().security_questions_required,
        ))
        .max()
        .unwrap_or(0);
    Ok(usize::try_from(most)
        .unwrap_or(MAX_FIELDS)
        .clamp(DECOY_QUESTIONS, MAX_FIELDS))
}

/// Catalogue questions not in `exclude`: `count` of them, chosen by a keyed hash of the name so the
/// same name always gets the same ones, on every node, and nobody without the key can tell them from a
/// real user's choice. For a username that names nobody (`exclude` empty) they are all it is asked;
/// for a real user they pad their own questions up to the number every recovery shows.
fn decoy_questions(
    idp: &Idp,
    username: &str,
    count: usize,
    exclude: &[String],
) -> Result<Vec<String>, WebError> {
    let key = crate::idp::mfa_key(&idp.config)
        .map_err(|e| WebError::Sso(SsoError::Build(e.to_string())))?;
    let mac = key
        .recovery_mac(format!("recovery-decoy:{username}").as_bytes())
        .map_err(WebError::Mfa)?;
    let mut seed: u64 = mac.bytes().take(16).fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    let mut pool: Vec<&str> = SECURITY_QUESTIONS
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !exclude.iter().any(|e| e == id))
        .collect();
    let mut chosen = Vec::new();
    while chosen.len() < count && !pool.is_empty() {
        let len = pool.len() as u64;
        let at = usize::try_from(seed % len).unwrap_or(0);
        seed /= len.max(1);
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        chosen.push(pool.remove(at).to_owned());
    }
    // Shown in catalogue order, as a real user's are.
    chosen.sort_by_key(|id| SECURITY_QUESTIONS.iter().position(|(q, _)| q == id));
    Ok(chosen)
}

/// Stores `flow` under a new handle and returns the cookie that names it.
async fn save_new(idp: &Idp, flow: &Flow) -> Result<HeaderValue, WebError> {
    let handle = crate::idp::fresh_id()?;
    let handle = handle.trim_start_matches('_').to_owned();
    save(idp, &handle, flow).await?;
    Ok(set_cookie(
        idp,
        RECOVERY_COOKIE,
        &handle,
        Some(FLOW_TTL.as_secs()),
        "Strict",
    ))
}

/// Stores `flow` under `handle`.
async fn save(idp: &Idp, handle: &str, flow: &Flow) -> Result<(), WebError> {
    let value =
        serde_json::to_string(flow).map_err(|e| WebError::Sso(SsoError::Build(e.to_string())))?;
    idp.sessions
        .put_temp(FLOW_NAMESPACE, handle, &value, FLOW_TTL)
        .await
        .map_err(store_error)
}

/// The cookie that ends the flow in the browser.
fn clear_cookie(idp: &Idp) -> HeaderValue {
    set_cookie(idp, RECOVERY_COOKIE, "", Some(0), "Strict")
}

/// The flow named by the browser's cookie, if it is live and began at this address.
async fn load(
    idp: &Idp,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<Option<(String, Flow)>, WebError> {
    let Some(handle) = cookie(headers, RECOVERY_COOKIE) else {
        return Ok(None);
    };
    if handle.is_empty() || handle.len() > 64 || !handle.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Ok(None);
    }
    let Some(value) = idp
        .sessions
        .get_temp(FLOW_NAMESPACE, handle)
        .await
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let Ok(flow) = serde_json::from_str::<Flow>(&value) else {
        return Ok(None);
    };
    if flow.ip != ip {
        return Ok(None);
    }
    Ok(Some((handle.to_owned(), flow)))
}

/// The page for the stage `flow` is at.
async fn stage_page(
    idp: &Idp,
    headers: &HeaderMap,
    flow: &Flow,
    status: StatusCode,
    error: Option<&str>,
    cookies: Vec<HeaderValue>,
) -> Result<Response, WebError> {
    let csrf = csrf_token(headers);
    let title = match flow.purpose {
        Purpose::Recover | Purpose::ResetLink => "Reset your password",
        Purpose::Expired => "Your password must be changed",
        Purpose::SetupQuestions => "Choose your security questions",
    };
    let (step, intro) = match flow.stage {
        Stage::Answers => (
            RecoverStep::Answers,
            "Answer the security questions you chose.",
        ),
        Stage::Code => (RecoverStep::Code, ""),
        Stage::NewPassword => (
            RecoverStep::NewPassword,
            match flow.purpose {
                Purpose::Expired => "Your password has expired or must be replaced. Choose a new one to continue; you will then sign in with it.",
                _ => "Choose a new password. Every session of your account will be ended.",
            },
        ),
        Stage::ChooseQuestions => (
            RecoverStep::ChooseQuestions,
            "Your security policy asks for security questions. They let you recover your account if you forget your password. Choose different questions and give answers only you know.",
        ),
    };
    let mut page = RecoverPage::new(&csrf.0, title, step);
    page.intro = intro;
    page.error = error;
    page.questions = flow
        .questions
        .iter()
        .filter_map(|q| question_text(q))
        .collect();
    if flow.stage == Stage::Code {
        let (code, webauthn) = match flow.user_id {
            Some(id) => {
                let factors = idp.mfa.factors(id).await?;
                let webauthn = !factors.webauthn.is_empty() && idp.webauthn.is_some();
                let code = factors.totp || factors.recovery_codes_left > 0 || !webauthn;
                (code, webauthn)
            }
            None => (true, false),
        };
        page.code = code;
        page.webauthn = webauthn;
        page.intro = match (code, webauthn) {
            (true, true) => "Your account has a second factor: use your passkey or security key, or enter a code from your authenticator app or one of your recovery codes.",
            (false, true) => "Your account has a second factor: use your passkey or security key.",
            _ => "Your account has a second factor: enter a code from your authenticator app or one of your recovery codes.",
        };
    }
    let policy = policy_of(idp, &flow.username).await?;
    page.min_length = policy.password_min_length;
    if flow.stage == Stage::ChooseQuestions {
        let count = (policy.security_questions_required as usize).clamp(1, MAX_FIELDS);
        page.slots = (0..count).collect();
    }
    render(idp, status, &page, &csrf, cookies)
}

/// The "locked" page; the flow ends.
fn locked_page(idp: &Idp, headers: &HeaderMap) -> Result<Response, WebError> {
    let csrf = csrf_token(headers);
    let mut page = RecoverPage::new(&csrf.0, "Recovery is locked", RecoverStep::Done);
    page.error = Some(
        "Too many failed attempts. Account recovery is locked for a while; try again later or ask your administrator.",
    );
    render(
        idp,
        StatusCode::TOO_MANY_REQUESTS,
        &page,
        &csrf,
        vec![clear_cookie(idp)],
    )
}

/// Past the failure limit: records it, ends the flow and shows the locked page.
async fn lock(
    idp: &Idp,
    headers: &HeaderMap,
    handle: &str,
    flow: &Flow,
    ip: IpAddr,
) -> Result<Response, WebError> {
    record(
        idp,
        &flow.username,
        flow.user_id,
        ip,
        "recovery_locked",
        "too many failed attempts",
    )
    .await?;
    idp.sessions
        .delete_temp(FLOW_NAMESPACE, handle)
        .await
        .map_err(store_error)?;
    locked_page(idp, headers)
}

/// Counts one answer or code attempt for the flow's user and address (atomically, before the check,
/// so parallel attempts cannot slip past); true when either is over the limit.
async fn over_limit(idp: &Idp, flow: &Flow, ip: IpAddr) -> Result<bool, WebError> {
    let window = Duration::from_secs(idp.config.recovery.lockout_secs);
    let max = idp.config.recovery.max_failures;
    let by_user = idp
        .sessions
        .incr_counter(&user_counter(&flow.username), window)
        .await
        .map_err(store_error)?;
    let by_ip = idp
        .sessions
        .incr_counter(&ip_counter(ip), window)
        .await
        .map_err(store_error)?;
    Ok(by_user > max || by_ip > max)
}

/// `GET /recover`: the username form.
pub async fn start_form(
    State(idp): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let csrf = csrf_token(&headers);
    let mut page = RecoverPage::new(&csrf.0, "Reset your password", RecoverStep::Username);
    page.intro = "Enter your username. You will answer your security questions, then give your second factor if you have one.";
    render(&idp, StatusCode::OK, &page, &csrf, Vec::new())
}

/// `POST /recover`: begins a recovery for the username, after the same IP allowlist check as sign-in.
/// An unknown user, a disabled one or one without answers gets questions all the same.
pub async fn start_submit(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<StartForm>,
) -> Result<Response, WebError> {
    let ip = client_ip(&idp, peer, &headers);
    let username = form.username.trim().to_owned();
    if username.is_empty() || username.chars().count() > 255 {
        let csrf = csrf_token(&headers);
        let mut page = RecoverPage::new(&csrf.0, "Reset your password", RecoverStep::Username);
        page.error = Some("Enter your username.");
        return render(
            &idp,
            StatusCode::UNPROCESSABLE_ENTITY,
            &page,
            &csrf,
            Vec::new(),
        );
    }
    // The IP allowlists, before anything about the account is looked at (as at sign-in).
    let decision = idp.check_access(&username, ip, None, None).await?;
    if let Outcome::Deny { reason } = decision.outcome {
        return Err(SsoError::denied(reason, &username, ip).into());
    }
    let user = idp
        .directory
        .get_user_by_username(&username)
        .await
        .map_err(dir_error)?;
    let real = match &user {
        Some(u) if u.status == UserStatus::Active => {
            let questions = idp
                .directory
                .security_questions_of(u.id)
                .await
                .map_err(dir_error)?;
            (!questions.is_empty()).then_some((u.id, questions))
        }
        _ => None,
    };
    // Every username is shown the same number of questions, so the count does not tell whether the
    // account exists: a real user's own questions padded with decoys (whose answers are ignored), all
    // in catalogue order so the decoys do not stand out.
    let shown = questions_shown(&idp).await?;
    let (user_id, questions, decoys) = match real {
        Some((id, mut questions)) => {
            let decoys = decoy_questions(
                &idp,
                &username,
                shown.saturating_sub(questions.len()),
                &questions,
            )?;
            questions.extend(decoys.iter().cloned());
            questions.sort_by_key(|id| SECURITY_QUESTIONS.iter().position(|(q, _)| q == id));
            (Some(id), questions, decoys)
        }
        None => (
            None,
            decoy_questions(&idp, &username, shown, &[])?,
            Vec::new(),
        ),
    };
    let reason = match (&user, user_id) {
        (_, Some(_)) => "security questions asked",
        (None, None) => "unknown user",
        (Some(u), None) if u.status != UserStatus::Active => "account disabled",
        (Some(_), None) => "the user has no security answers",
    };
    record(
        &idp,
        &username,
        user.as_ref().map(|u| u.id),
        ip,
        "recovery_started",
        reason,
    )
    .await?;
    let flow = Flow {
        purpose: Purpose::Recover,
        stage: Stage::Answers,
        username,
        user_id,
        questions,
        decoys,
        request: String::new(),
        ip,
    };
    let cookie = save_new(&idp, &flow).await?;
    stage_page(&idp, &headers, &flow, StatusCode::OK, None, vec![cookie]).await
}

/// `GET /recover/link?token=...`: a button that spends the link (a GET alone, e.g. a mail scanner
/// following it, does not).
pub async fn link_form(
    State(idp): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(query) = query.map_err(malformed_query)?;
    let csrf = csrf_token(&headers);
    let usable = idp
        .directory
        .reset_token_usable(&query.token)
        .await
        .map_err(dir_error)?;
    let mut page = RecoverPage::new(&csrf.0, "Reset your password", RecoverStep::ConfirmLink);
    if usable {
        page.intro = "Your administrator sent you this link to choose a new password.";
        page.token = &query.token;
        render(&idp, StatusCode::OK, &page, &csrf, Vec::new())
    } else {
        page.step = RecoverStep::Done;
        page.error = Some("This link is not valid: it was already used, it expired, or it was mistyped. Ask your administrator for a new one.");
        render(&idp, StatusCode::GONE, &page, &csrf, Vec::new())
    }
}

/// `POST /recover/link`: spends the reset link (single use, atomically) and goes on to the second
/// factor, if the user has one, then the new password.
pub async fn link_submit(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<LinkForm>,
) -> Result<Response, WebError> {
    let ip = client_ip(&idp, peer, &headers);
    let csrf = csrf_token(&headers);
    let invalid = |idp: &Idp| {
        let mut page = RecoverPage::new(&csrf.0, "Reset your password", RecoverStep::Done);
        page.error = Some("This link is not valid: it was already used, it expired, or it was mistyped. Ask your administrator for a new one.");
        render(idp, StatusCode::GONE, &page, &csrf, Vec::new())
    };
    let token = form.token.trim();
    // Who the link is for, without spending it: the IP allowlists are checked first, so a refused
    // address does not burn the link.
    let peeked = idp
        .directory
        .reset_token_user(token)
        .await
        .map_err(dir_error)?;
    let Some(user) = peeked.filter(|u| u.status == UserStatus::Active) else {
        record(
            &idp,
            "",
            None,
            ip,
            "recovery_failed",
            "reset link not valid",
        )
        .await?;
        return invalid(&idp);
    };
    let decision = idp.check_access(&user.username, ip, None, None).await?;
    if let Outcome::Deny { reason } = decision.outcome {
        return Err(SsoError::denied(reason, &user.username, ip).into());
    }
    // Spent atomically: of two simultaneous uses, one wins.
    let spent = idp
        .directory
        .consume_reset_token(token)
        .await
        .map_err(dir_error)?;
    if spent.map(|u| u.id) != Some(user.id) {
        record(
            &idp,
            &user.username,
            Some(user.id),
            ip,
            "recovery_failed",
            "reset link already used",
        )
        .await?;
        return invalid(&idp);
    }
    record(
        &idp,
        &user.username,
        Some(user.id),
        ip,
        "recovery_started",
        "administrator's reset link used",
    )
    .await?;
    let stage = if has_mfa(&idp, user.id).await? {
        Stage::Code
    } else {
        Stage::NewPassword
    };
    let flow = Flow {
        purpose: Purpose::ResetLink,
        stage,
        username: user.username.clone(),
        user_id: Some(user.id),
        questions: Vec::new(),
        decoys: Vec::new(),
        request: String::new(),
        ip,
    };
    let cookie = save_new(&idp, &flow).await?;
    stage_page(&idp, &headers, &flow, StatusCode::OK, None, vec![cookie]).await
}

/// After a correct password at sign-in: the page of a password step the user owes first (an expired
/// password or one an administrator wants changed; security questions the policy wants and the user
/// has not chosen), or `None` to go on. `request` is the pending SSO handle to return to.
pub(super) async fn after_password(
    idp: &Idp,
    user: &User,
    request: &str,
    ip: IpAddr,
    headers: &HeaderMap,
) -> Result<Option<Response>, WebError> {
    let policy = policy_of(idp, &user.username).await?;
    let (changed_at, must_change) = idp
        .directory
        .password_status(user.id)
        .await
        .map_err(dir_error)?
        .unwrap_or((0, false));
    let now = chrono::Utc::now().timestamp();
    let expired = must_change
        || policy
            .password_max_age_days
            .is_some_and(|days| now.saturating_sub(changed_at) >= i64::from(days) * 86_400);
    let purpose = if expired {
        Purpose::Expired
    } else if policy.security_questions_required > 0
        && idp
            .directory
            .security_questions_of(user.id)
            .await
            .map_err(dir_error)?
            .len()
            < policy.security_questions_required as usize
    {
        Purpose::SetupQuestions
    } else {
        return Ok(None);
    };
    let stage = match (has_mfa(idp, user.id).await?, purpose) {
        (true, _) => Stage::Code,
        (false, Purpose::SetupQuestions) => Stage::ChooseQuestions,
        (false, _) => Stage::NewPassword,
    };
    let (outcome, reason) = match purpose {
        Purpose::Expired => (
            "password_expired",
            "a new password is required before sign-in",
        ),
        _ => (
            "security_questions_required",
            "the policy asks for security questions",
        ),
    };
    record(idp, &user.username, Some(user.id), ip, outcome, reason).await?;
    let flow = Flow {
        purpose,
        stage,
        username: user.username.clone(),
        user_id: Some(user.id),
        questions: Vec::new(),
        decoys: Vec::new(),
        request: request.to_owned(),
        ip,
    };
    let cookie = save_new(idp, &flow).await?;
    stage_page(idp, headers, &flow, StatusCode::OK, None, vec![cookie])
        .await
        .map(Some)
}

/// `POST /recover/step`: the next step of the flow the cookie names.
pub async fn step_submit(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<StepForm>,
) -> Result<Response, WebError> {
    let ip = client_ip(&idp, peer, &headers);
    let Some((handle, mut flow)) = load(&idp, &headers, ip).await? else {
        return gone_page(&idp, &headers);
    };
    forget_inactive(&idp, &mut flow).await?;
    match flow.stage {
        Stage::Answers => answers_step(&idp, &headers, &handle, flow, &form, ip).await,
        Stage::Code => code_step(&idp, &headers, &handle, flow, &form, ip).await,
        Stage::NewPassword => password_step(&idp, &headers, &handle, flow, &form, ip).await,
        Stage::ChooseQuestions => questions_step(&idp, &headers, &handle, flow, &form, ip).await,
    }
}

/// The account may have changed since the flow began: a disabled or deleted user goes no further.
async fn forget_inactive(idp: &Idp, flow: &mut Flow) -> Result<(), WebError> {
    if let Some(id) = flow.user_id {
        let active = idp
            .directory
            .get_user(id)
            .await
            .map_err(dir_error)?
            .is_some_and(|u| u.status == UserStatus::Active);
        if !active {
            flow.user_id = None;
        }
    }
    Ok(())
}

/// The page saying the flow is gone (expired, finished, or begun elsewhere).
fn gone_page(idp: &Idp, headers: &HeaderMap) -> Result<Response, WebError> {
    let csrf = csrf_token(headers);
    let mut page = RecoverPage::new(&csrf.0, "Reset your password", RecoverStep::Username);
    page.error = Some("That step expired or was already finished. Start again.");
    render(idp, StatusCode::GONE, &page, &csrf, vec![clear_cookie(idp)])
}

/// Checks the answers; on success, on to the code or the new password.
async fn answers_step(
    idp: &Idp,
    headers: &HeaderMap,
    handle: &str,
    mut flow: Flow,
    form: &StepForm,
    ip: IpAddr,
) -> Result<Response, WebError> {
    if over_limit(idp, &flow, ip).await? {
        return lock(idp, headers, handle, &flow, ip).await;
    }
    // The answers to decoys are dropped: only the user's own questions are checked (all of them).
    let given: Vec<(String, String)> = flow
        .questions
        .iter()
        .zip(form.answers())
        .filter(|(q, _)| !flow.decoys.contains(q))
        .map(|(q, a)| (q.clone(), a.to_owned()))
        .collect();
    let right = match flow.user_id {
        Some(id) => {
            let right = idp
                .directory
                .verify_security_answers(id, &given)
                .await
                .map_err(dir_error)?;
            // Each decoy costs what a checked answer does, as every question of an unknown user does.
            if !flow.decoys.is_empty() {
                idp.directory
                    .verify_answers_dummy(flow.decoys.len())
                    .await
                    .map_err(dir_error)?;
            }
            right
        }
        None => {
            idp.directory
                .verify_answers_dummy(flow.questions.len())
                .await
                .map_err(dir_error)?;
            false
        }
    };
    if !right {
        record(
            idp,
            &flow.username,
            flow.user_id,
            ip,
            "recovery_failed",
            "wrong security answers",
        )
        .await?;
        return stage_page(
            idp,
            headers,
            &flow,
            StatusCode::UNAUTHORIZED,
            Some("The answers do not match. Check them and try again."),
            Vec::new(),
        )
        .await;
    }
    let Some(user_id) = flow.user_id else {
        // Unreachable: an unknown user never has right answers.
        return Err(WebError::Sso(SsoError::Build(
            "answers of nobody".to_owned(),
        )));
    };
    flow.stage = if has_mfa(idp, user_id).await? {
        Stage::Code
    } else {
        Stage::NewPassword
    };
    record(
        idp,
        &flow.username,
        flow.user_id,
        ip,
        "recovery_answers_accepted",
        "security answers accepted",
    )
    .await?;
    save(idp, handle, &flow).await?;
    stage_page(idp, headers, &flow, StatusCode::OK, None, Vec::new()).await
}

/// Checks a TOTP or recovery code; on success, on to the new password or the questions.
async fn code_step(
    idp: &Idp,
    headers: &HeaderMap,
    handle: &str,
    mut flow: Flow,
    form: &StepForm,
    ip: IpAddr,
) -> Result<Response, WebError> {
    if over_limit(idp, &flow, ip).await? {
        return lock(idp, headers, handle, &flow, ip).await;
    }
    let Some(user_id) = flow.user_id else {
        return Err(WebError::MfaExpired);
    };
    let code = form.code.trim();
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let factors = idp.mfa.factors(user_id).await?;
    let now = chrono::Utc::now().timestamp();
    let (accepted, method) =
        if factors.totp && compact.len() == 6 && compact.bytes().all(|b| b.is_ascii_digit()) {
            let outcome = idp.mfa.verify_totp(user_id, &compact, now).await?;
            (matches!(outcome, TotpOutcome::Accepted { .. }), "totp")
        } else {
            let outcome = idp.mfa.use_recovery_code(user_id, code).await?;
            (
                matches!(outcome, RecoveryOutcome::Accepted { .. }),
                "recovery code",
            )
        };
    if !accepted {
        record(
            idp,
            &flow.username,
            flow.user_id,
            ip,
            "recovery_failed",
            &format!("wrong {method}"),
        )
        .await?;
        return stage_page(
            idp,
            headers,
            &flow,
            StatusCode::UNAUTHORIZED,
            Some("That code is not right (or was already used). Try again."),
            Vec::new(),
        )
        .await;
    }
    record(
        idp,
        &flow.username,
        flow.user_id,
        ip,
        "recovery_factor_accepted",
        method,
    )
    .await?;
    flow.stage = if flow.purpose == Purpose::SetupQuestions {
        Stage::ChooseQuestions
    } else {
        Stage::NewPassword
    };
    save(idp, handle, &flow).await?;
    stage_page(idp, headers, &flow, StatusCode::OK, None, Vec::new()).await
}

/// The key of the WebAuthn ceremony of the flow `handle`: the ceremony is bound to the flow, so only
/// the browser holding the flow's cookie can finish it, and it does not disturb a sign-in ceremony.
fn ceremony_key(handle: &str) -> String {
    format!("recovery:{handle}")
}

/// Refuses a WebAuthn request outside the second-factor step of a flow of a user with an
/// authenticator (a forged request, or a page from an older step).
fn not_this_step(flow: &Flow) -> WebError {
    WebError::BadRequest {
        message: "This step is not part of your account recovery.",
        detail: format!(
            "recovery WebAuthn request at stage {:?} of {}",
            flow.stage, flow.username
        ),
    }
}

/// `POST /recover/webauthn/options`: starts a WebAuthn authentication ceremony for the user of the
/// flow at its second-factor step, with the user verification the user's policy asks for at sign-in
/// ([`Idp::user_verification`]); the options go to `navigator.credentials.get`. Starting counts as
/// no attempt: the answer does, at `/recover/webauthn`.
pub async fn webauthn_options(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(_): CheckedForm<PasskeyOptionsForm>,
) -> Result<Response, WebError> {
    let ip = client_ip(&idp, peer, &headers);
    let Some((handle, mut flow)) = load(&idp, &headers, ip).await? else {
        return Err(WebError::MfaExpired);
    };
    forget_inactive(&idp, &mut flow).await?;
    let Some(user_id) = flow.user_id.filter(|_| flow.stage == Stage::Code) else {
        return Err(not_this_step(&flow));
    };
    let policy = idp.policy_of(&flow.username).await?;
    let options = match idp
        .mfa
        .start_webauthn_authentication_as(
            user_id,
            &ceremony_key(&handle),
            idp.user_verification(&policy),
        )
        .await
    {
        Err(mfa::Error::WebauthnNotEnrolled | mfa::Error::WebauthnNotConfigured) => {
            return Err(not_this_step(&flow))
        }
        other => other?,
    };
    let mut response = axum::Json(options).into_response();
    // The options hold a one-time challenge.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /recover/webauthn`: the authenticator's signed answer at the second-factor step. Counted,
/// before it is checked, against the same recovery lockout as answers and codes; on success, on to
/// the new password (or the questions), as after a code.
pub async fn webauthn_submit(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<PasskeyForm>,
) -> Result<Response, WebError> {
    let ip = client_ip(&idp, peer, &headers);
    let Some((handle, mut flow)) = load(&idp, &headers, ip).await? else {
        return gone_page(&idp, &headers);
    };
    forget_inactive(&idp, &mut flow).await?;
    if flow.stage != Stage::Code {
        return Err(not_this_step(&flow));
    }
    if over_limit(&idp, &flow, ip).await? {
        return lock(&idp, &headers, &handle, &flow, ip).await;
    }
    let Some(user_id) = flow.user_id else {
        return Err(WebError::MfaExpired);
    };
    let outcome = match serde_json::from_str::<PublicKeyCredential>(&form.credential) {
        Err(_) => Err((
            StatusCode::BAD_REQUEST,
            "No answer from a security key or passkey arrived. This step needs JavaScript; or use another way.",
            "webauthn: no readable answer".to_owned(),
        )),
        Ok(credential) => match idp
            .mfa
            .finish_webauthn_authentication_as(
                user_id,
                &ceremony_key(&handle),
                &credential,
                chrono::Utc::now().timestamp(),
            )
            .await
        {
            Err(mfa::Error::NoCeremony) => Err((
                StatusCode::BAD_REQUEST,
                "The security key step took too long or was already used. Please try again.",
                "webauthn: no ceremony pending".to_owned(),
            )),
            Err(e) => return Err(e.into()),
            Ok(WebauthnOutcome::Accepted {
                name,
                user_verified,
            }) => Ok((name, user_verified)),
            Ok(WebauthnOutcome::Refused(reason)) => Err((
                StatusCode::UNAUTHORIZED,
                "The security key or passkey was not accepted. Try again, or use another way.",
                format!("webauthn refused: {reason}"),
            )),
            Ok(WebauthnOutcome::RateLimited) => Err((
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts. Wait a few minutes, then try again.",
                "webauthn: rate limited".to_owned(),
            )),
        },
    };
    let (name, user_verified) = match outcome {
        Ok(accepted) => accepted,
        Err((status, message, why)) => {
            record(
                &idp,
                &flow.username,
                flow.user_id,
                ip,
                "recovery_failed",
                &why,
            )
            .await?;
            return stage_page(&idp, &headers, &flow, status, Some(message), Vec::new()).await;
        }
    };
    tracing::info!(user = %flow.username, authenticator = %name, user_verified, "WebAuthn accepted for recovery");
    record(
        &idp,
        &flow.username,
        flow.user_id,
        ip,
        "recovery_factor_accepted",
        "webauthn",
    )
    .await?;
    flow.stage = if flow.purpose == Purpose::SetupQuestions {
        Stage::ChooseQuestions
    } else {
        Stage::NewPassword
    };
    save(&idp, &handle, &flow).await?;
    stage_page(&idp, &headers, &flow, StatusCode::OK, None, Vec::new()).await
}

/// Where the flow ends: a "sign in" page, or back to the sign-in of the pending request.
fn finish(idp: &Idp, headers: &HeaderMap, flow: &Flow, notice: &str) -> Result<Response, WebError> {
    let next = if flow.request.is_empty() {
        "/login".to_owned()
    } else {
        format!("/login?request={}", flow.request)
    };
    let csrf = csrf_token(headers);
    let mut page = RecoverPage::new(&csrf.0, "Done", RecoverStep::Done);
    page.notice = Some(notice);
    page.next = &next;
    render(idp, StatusCode::OK, &page, &csrf, vec![clear_cookie(idp)])
}

/// Sets the new password under the user's policy; ends every session of the user.
async fn password_step(
    idp: &Idp,
    headers: &HeaderMap,
    handle: &str,
    flow: Flow,
    form: &StepForm,
    ip: IpAddr,
) -> Result<Response, WebError> {
    let Some(user_id) = flow.user_id else {
        return Err(WebError::MfaExpired);
    };
    if form.new != form.confirm {
        return stage_page(
            idp,
            headers,
            &flow,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("The two new passwords do not match."),
            Vec::new(),
        )
        .await;
    }
    let policy = policy_of(idp, &flow.username).await?;
    let mut rules = rules_of(&policy);
    if flow.purpose == Purpose::Expired {
        // An expired password must at least be replaced by a different one.
        rules.history = rules.history.max(1);
    }
    match idp
        .directory
        .change_password(&flow.username, &form.new, rules)
        .await
    {
        Ok(()) => {}
        Err(directory::Error::WeakPassword(reason)) => {
            let message = format!("The new password is refused: {reason}.");
            return stage_page(
                idp,
                headers,
                &flow,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&message),
                Vec::new(),
            )
            .await;
        }
        Err(e) => return Err(dir_error(e)),
    }
    idp.sessions
        .delete_temp(FLOW_NAMESPACE, handle)
        .await
        .map_err(store_error)?;
    let ended = idp
        .sessions
        .delete_user_sessions(user_id)
        .await
        .map_err(store_error)?;
    idp.sessions
        .reset_counter(&user_counter(&flow.username))
        .await
        .map_err(store_error)?;
    if flow.purpose != Purpose::Expired {
        idp.directory
            .revoke_reset_tokens(&flow.username)
            .await
            .map_err(dir_error)?;
    }
    let (outcome, reason) = match flow.purpose {
        Purpose::Expired => ("password_changed", "expired password replaced at sign-in"),
        Purpose::ResetLink => ("password_reset", "new password set with a reset link"),
        _ => (
            "password_reset",
            "new password set by self-service recovery",
        ),
    };
    record(idp, &flow.username, Some(user_id), ip, outcome, reason).await?;
    tracing::info!(user = %flow.username, ended, "password set by a recovery step; sessions ended");
    finish(
        idp,
        headers,
        &flow,
        "Your password was changed and every session of your account was ended. Sign in with the new password.",
    )
}

/// Stores the chosen questions and answers, then back to sign-in.
async fn questions_step(
    idp: &Idp,
    headers: &HeaderMap,
    handle: &str,
    flow: Flow,
    form: &StepForm,
    ip: IpAddr,
) -> Result<Response, WebError> {
    let Some(user_id) = flow.user_id else {
        return Err(WebError::MfaExpired);
    };
    let policy = policy_of(idp, &flow.username).await?;
    let count = (policy.security_questions_required as usize).clamp(1, MAX_FIELDS);
    let chosen: Vec<(String, String)> = form
        .questions()
        .iter()
        .zip(form.answers())
        .take(count)
        .map(|(q, a)| ((*q).to_owned(), a.to_owned()))
        .collect();
    match idp
        .directory
        .set_security_answers(&flow.username, &chosen)
        .await
    {
        Ok(()) => {}
        Err(directory::Error::InvalidAnswer(reason)) => {
            let message = format!("The questions cannot be saved: {reason}.");
            return stage_page(
                idp,
                headers,
                &flow,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&message),
                Vec::new(),
            )
            .await;
        }
        Err(e) => return Err(dir_error(e)),
    }
    idp.sessions
        .delete_temp(FLOW_NAMESPACE, handle)
        .await
        .map_err(store_error)?;
    record(
        idp,
        &flow.username,
        Some(user_id),
        ip,
        "security_questions_set",
        &format!("{count} question(s) chosen"),
    )
    .await?;
    finish(
        idp,
        headers,
        &flow,
        "Your security questions were saved. Sign in again to continue.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_per_user_and_per_address() {
        assert_eq!(user_counter("alice"), "recovery-fail:user:alice");
        assert_eq!(
            ip_counter("192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))),
            "recovery-fail:ip:192.0.2.1"
        );
    }
}
