//! The signed-in user's own account pages: the list of their sessions (with a way to end any other
//! one) and the password change, which ends every other session of the user.

use super::forms::CheckedForm;
use std::net::{IpAddr, SocketAddr};

use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::login::csrf_token;
use super::pages::html;
use super::{client_ip, current_session, set_cookie, AppState, WebError, CSRF_COOKIE};
use crate::directory::{self, PasswordCheck};
use crate::events::{Enricher, LOOPBACK, PRIVATE};
use crate::idp::{Idp, SsoError};
use crate::session::{Session, SessionId, SessionKey};

/// One session on the "My sessions" page.
pub struct SessionRow {
    /// The store key that names the session in the "End" form (not the cookie, which stays secret).
    pub key: String,
    /// Browser and operating system guessed from the User-Agent, so the person recognises the device.
    pub device: String,
    /// The client address at sign-in.
    pub address: String,
    /// Where the address is ("City, CC", "private network", "loopback" or "unknown"), from the events
    /// recorder's GeoIP lookup, so the person can spot a session started somewhere they have not been.
    pub location: String,
    /// Sign-in time (UTC).
    pub started: String,
    /// Last use (UTC).
    pub last_used: String,
    /// The applications this session reached, comma-separated, or "none".
    pub apps: String,
    /// Whether this is the session of the browser looking at the page (it cannot end itself here:
    /// that is "Sign out").
    pub current: bool,
}

/// The signed-in user's sessions.
#[derive(Template)]
#[template(path = "sessions.html")]
pub struct SessionsPage<'a> {
    /// The double-submit token of the "End" forms.
    pub csrf_token: &'a str,
    /// Whose sessions these are.
    pub username: &'a str,
    /// The live sessions, oldest first.
    pub rows: Vec<SessionRow>,
    /// What the last action did.
    pub notice: Option<&'a str>,
}

/// The password change form.
#[derive(Template)]
#[template(path = "password.html")]
pub struct PasswordPage<'a> {
    /// The double-submit token of the form.
    pub csrf_token: &'a str,
    /// Whose password changes.
    pub username: &'a str,
    /// The shortest password the user's security policy accepts, shown beside the field.
    pub min_length: u32,
    /// Why the last attempt failed.
    pub error: Option<&'a str>,
    /// What the last attempt did.
    pub notice: Option<&'a str>,
}

/// Body of `POST /sessions/end`.
#[derive(Deserialize)]
pub struct EndForm {
    /// The double-submit token.
    #[serde(default)]
    csrf_token: String,
    /// The [`SessionKey`] of the session to end, as listed on the page.
    #[serde(default)]
    key: String,
}

/// Body of `POST /password`.
#[derive(Deserialize)]
pub struct PasswordForm {
    /// The double-submit token.
    #[serde(default)]
    csrf_token: String,
    /// The current password: a stolen live cookie alone must not be enough to take the account.
    #[serde(default)]
    current: String,
    /// The new password.
    #[serde(default)]
    new: String,
    /// The new password again, to catch typing mistakes.
    #[serde(default)]
    confirm: String,
}

/// A page built from a template, with the CSRF cookie set when the browser had none.
fn render_page(
    idp: &Idp,
    status: StatusCode,
    body: Result<String, askama::Error>,
    csrf: &(String, bool),
) -> Result<Response, WebError> {
    let body = body.map_err(|e| WebError::Sso(SsoError::Build(e.to_string())))?;
    let (mut headers, body) = html(body);
    if csrf.1 {
        headers.insert(
            header::SET_COOKIE,
            set_cookie(idp, CSRF_COOKIE, &csrf.0, None, "Strict"),
        );
    }
    Ok((status, headers, body).into_response())
}

/// A unix time as `YYYY-MM-DD HH:MM UTC`.
fn format_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A short "Browser on OS" label from a User-Agent, by substring checks (order matters: Edge and
/// Chrome also say "Safari", Chrome on Android also says "Linux").
pub fn device_label(user_agent: &str) -> String {
    if user_agent.trim().is_empty() {
        return "Unknown device".to_owned();
    }
    let browser = if user_agent.contains("Edg/") || user_agent.contains("Edge/") {
        "Edge"
    } else if user_agent.contains("OPR/") || user_agent.contains("Opera") {
        "Opera"
    } else if user_agent.contains("Firefox/") {
        "Firefox"
    } else if user_agent.contains("Chrome/") || user_agent.contains("CriOS/") {
        "Chrome"
    } else if user_agent.contains("Safari/") {
        "Safari"
    } else if user_agent.starts_with("curl/") {
        "curl"
    } else {
        "Other browser"
    };
    let os = if user_agent.contains("Windows") {
        "Windows"
    } else if user_agent.contains("iPhone") || user_agent.contains("iPad") {
        "iOS"
    } else if user_agent.contains("Android") {
        "Android"
    } else if user_agent.contains("Mac OS X") || user_agent.contains("Macintosh") {
        "macOS"
    } else if user_agent.contains("CrOS") {
        "ChromeOS"
    } else if user_agent.contains("Linux") {
        "Linux"
    } else {
        "unknown system"
    };
    format!("{browser} on {os}")
}

/// The location of an address as the "My sessions" page shows it: loopback and private ranges are
/// named, a public address is "City, CC" (or whichever of the two the `[events] geoip_database`
/// knows), and anything else is "unknown".
pub fn location_of(enricher: &Enricher, ip: IpAddr) -> String {
    let location = enricher.locate(ip);
    match (location.city, location.country) {
        (_, Some(label)) if label == LOOPBACK => "loopback".to_owned(),
        (_, Some(label)) if label == PRIVATE => "private network".to_owned(),
        (Some(city), Some(country)) => format!("{city}, {country}"),
        (Some(place), None) | (None, Some(place)) => place,
        (None, None) => "unknown".to_owned(),
    }
}

/// The signed-in session, or the redirect to the login page.
async fn signed_in(
    idp: &Idp,
    headers: &HeaderMap,
) -> Result<Option<(SessionId, Session)>, WebError> {
    current_session(idp, headers).await
}

/// `GET /sessions`: the user's live sessions, the current one marked.
pub async fn sessions(
    State(idp): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let Some((id, session)) = signed_in(&idp, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    sessions_page(&idp, &headers, &id, &session, None).await
}

async fn sessions_page(
    idp: &Idp,
    headers: &HeaderMap,
    id: &SessionId,
    session: &Session,
    notice: Option<&str>,
) -> Result<Response, WebError> {
    let mut list = idp
        .sessions
        .list_user_sessions(session.user_id)
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    list.sort_by_key(|s| s.session.created_at);
    let current = id.key();
    let rows = list
        .into_iter()
        .map(|s| SessionRow {
            current: s.key == current,
            key: s.key.to_string(),
            device: device_label(&s.session.user_agent),
            address: s.session.client_ip.to_canonical().to_string(),
            location: location_of(idp.events.enricher(), s.session.client_ip),
            started: format_time(s.session.created_at),
            last_used: format_time(s.session.last_seen),
            apps: if s.session.sp_sessions.is_empty() {
                "none".to_owned()
            } else {
                s.session
                    .sp_sessions
                    .iter()
                    .map(|sp| sp.sp_entity_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
        .collect();
    let csrf = csrf_token(headers);
    let page = SessionsPage {
        csrf_token: &csrf.0,
        username: &session.username,
        rows,
        notice,
    };
    render_page(idp, StatusCode::OK, page.render(), &csrf)
}

/// `POST /sessions/end`: ends one session of the signed-in user. The store only deletes a key that
/// belongs to this user, so someone else's key does nothing.
pub async fn end_session(
    State(idp): State<AppState>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<EndForm>,
) -> Result<Response, WebError> {
    let Some((id, session)) = signed_in(&idp, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let key = SessionKey::parse(form.key.trim()).map_err(|e| WebError::BadRequest {
        message: "The session to end could not be read.",
        detail: e.to_string(),
    })?;
    let ended = idp
        .sessions
        .delete_for_user(session.user_id, &key)
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    let notice = if ended {
        tracing::info!(user = %session.username, key = %key.as_str().get(..8).unwrap_or(""), "session ended by its user");
        "The session was ended."
    } else {
        "No such session of yours; nothing was ended."
    };
    sessions_page(&idp, &headers, &id, &session, Some(notice)).await
}

/// The shortest password the user's security policy accepts.
async fn min_length(idp: &Idp, username: &str) -> Result<u32, WebError> {
    let name = idp.policy_of(username).await?;
    let set = idp.policy_set().await?;
    Ok(set.policy(&name).map_or(0, |p| p.password_min_length))
}

/// `GET /password`: the change form.
pub async fn password_form(
    State(idp): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let Some((_, session)) = signed_in(&idp, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    password_page(
        &idp,
        &headers,
        &session.username,
        StatusCode::OK,
        None,
        None,
    )
    .await
}

async fn password_page(
    idp: &Idp,
    headers: &HeaderMap,
    username: &str,
    status: StatusCode,
    error: Option<&str>,
    notice: Option<&str>,
) -> Result<Response, WebError> {
    let csrf = csrf_token(headers);
    let page = PasswordPage {
        csrf_token: &csrf.0,
        username,
        min_length: min_length(idp, username).await?,
        error,
        notice,
    };
    render_page(idp, status, page.render(), &csrf)
}

/// `POST /password`: checks the current password, sets the new one (global weak-password rules, the
/// user's policy minimum and password history), then ends every other session of the user; this one
/// stays.
pub async fn password_submit(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<PasswordForm>,
) -> Result<Response, WebError> {
    let Some((id, session)) = signed_in(&idp, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let username = session.username.clone();
    let refuse = |message: String| {
        let idp = idp.clone();
        let headers = headers.clone();
        let username = username.clone();
        async move {
            password_page(
                &idp,
                &headers,
                &username,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&message),
                None,
            )
            .await
        }
    };
    let check = idp
        .directory
        .verify_password(&username, &form.current)
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    match check {
        PasswordCheck::Authenticated(_) => {}
        PasswordCheck::Rejected => {
            tracing::info!(user = %username, "password change refused: wrong current password");
            return refuse("Your current password is not correct.".to_owned()).await;
        }
        PasswordCheck::Disabled(user) => {
            return Err(WebError::Sso(SsoError::UserInactive(user.username)));
        }
    }
    if form.new != form.confirm {
        return refuse("The two new passwords do not match.".to_owned()).await;
    }
    // The user's security policy: its minimum length and its history (no reuse of the last N).
    let name = idp.policy_of(&username).await?;
    let set = idp.policy_set().await?;
    let rules = set
        .policy(&name)
        .map(super::recovery::rules_of)
        .unwrap_or_default();
    match idp
        .directory
        .change_password(&username, &form.new, rules)
        .await
    {
        Ok(()) => {}
        Err(directory::Error::WeakPassword(reason)) => {
            return refuse(format!("The new password is too weak: {reason}.")).await;
        }
        Err(e) => return Err(WebError::Sso(e.into())),
    }
    let current = id.key();
    let others = idp
        .sessions
        .list_user_sessions(session.user_id)
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    let mut ended = 0usize;
    for other in others.iter().filter(|s| s.key != current) {
        if idp
            .sessions
            .delete_for_user(session.user_id, &other.key)
            .await
            .map_err(|e| WebError::Sso(e.into()))?
        {
            ended += 1;
        }
    }
    tracing::info!(user = %username, ended, "password changed; other sessions ended");
    idp.directory
        .record_login_event(&directory::LoginEvent {
            at: 0,
            username: username.clone(),
            user_id: Some(session.user_id),
            ip: client_ip(&idp, peer, &headers).to_string(),
            sp: None,
            outcome: "password_changed".to_owned(),
            reason: format!("changed by the user; {ended} other session(s) ended"),
        })
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    password_page(
        &idp,
        &headers,
        &username,
        StatusCode::OK,
        None,
        Some("Your password was changed. You were signed out everywhere else."),
    )
    .await
}

super::forms::csrf_protected!(EndForm, PasswordForm);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_from_the_user_agent() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
        assert_eq!(device_label(firefox), "Firefox on Linux");
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0";
        assert_eq!(device_label(edge), "Edge on Windows");
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(device_label(safari), "Safari on iOS");
        let android = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36";
        assert_eq!(device_label(android), "Chrome on Android");
        assert_eq!(device_label(""), "Unknown device");
    }

    #[test]
    fn private_addresses_are_located() {
        let enricher = Enricher::without_geo();
        for (local, label) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private network"),
            ("192.168.0.1", "private network"),
            ("fd00::1", "private network"),
            ("fe80::1", "private network"),
            ("::ffff:10.0.0.1", "private network"),
        ] {
            assert_eq!(
                location_of(&enricher, local.parse().unwrap()),
                label,
                "{local}"
            );
        }
        // Without a GeoIP database a public address is unknown.
        for public in ["8.8.8.8", "2001:db8::1", "::ffff:1.1.1.1"] {
            assert_eq!(
                location_of(&enricher, public.parse().unwrap()),
                "unknown",
                "{public}"
            );
        }
    }
}
