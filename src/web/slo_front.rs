//! Front-channel logout pages ([`crate::slo::front`], docs/slo.md): the page with one hidden iframe per
//! SP that has only HTTP-Redirect / HTTP-POST SingleLogoutService endpoints, the iframe endpoint that
//! hands each SP its signed LogoutRequest, the status the page polls, the single-use finish step that
//! answers the initiator (or shows the portal's signed-out page), and the small page an SP's
//! LogoutResponse gets inside its iframe.
//!
//! Nothing here reads the session cookie: the iframes are cross-site (no `SameSite=Lax` cookie comes
//! with them) and the session ended before the round started. The unguessable handle in the URL
//! carries the state.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;

use super::slo::{answer, signed_out_page, Reply};
use super::{set_cookie, AppState, WebError, SESSION_COOKIE};
use crate::idp::{Idp, SsoError};
use crate::saml::binding::post::auto_submit_script_csp_source;
use crate::saml::binding::redirect::encode_redirect;
use crate::saml::binding::{base64_encode, post_form_html, MessageKind, RedirectSignature};
use crate::saml::logout::UnverifiedLogoutResponse;
use crate::saml::metadata::BINDING_HTTP_POST;
use crate::session::Session;
use crate::slo::front::{self, FrontAnswer, FrontRequest, Initiator, Transaction};
use crate::slo::{initiator_status, SpLogout};

/// The page's only script: polls the status and goes to the finish step when every SP answered or the
/// deadline passed. A constant, so the Content-Security-Policy allows exactly it by hash.
const POLL_SCRIPT: &str = r#"(function(){var e=document.getElementById("slo-front");var s=e.getAttribute("data-status"),f=e.getAttribute("data-finish"),end=Date.now()+Number(e.getAttribute("data-timeout"));var gone=false;function go(){if(!gone){gone=true;window.location.replace(f);}}function poll(){if(Date.now()>=end){go();return;}fetch(s,{cache:"no-store",credentials:"omit"}).then(function(r){return r.json();}).then(function(j){if(j.done){go();}else{setTimeout(poll,250);}},function(){setTimeout(poll,250);});}setTimeout(go,Math.max(0,end-Date.now())+100);setTimeout(poll,150);})();"#;

/// The CSP source expression that allows [`POLL_SCRIPT`].
fn poll_script_csp_source() -> String {
    let digest = openssl::sha::sha256(POLL_SCRIPT.as_bytes());
    format!("'sha256-{}'", base64_encode(&digest))
}

/// The page that runs the front-channel round.
#[derive(Template)]
#[template(path = "slo_front.html")]
struct FrontPage {
    /// The SPs being signed out through the browser, by display name.
    apps: Vec<String>,
    /// One iframe URL per SP.
    frames: Vec<String>,
    status_url: String,
    finish_url: String,
    /// The time left until the deadline, for the script.
    timeout_ms: i64,
    /// Whole seconds for the `<noscript>` refresh: the deadline, rounded up, plus one.
    refresh_secs: i64,
    script: &'static str,
}

/// The page an SP's LogoutResponse gets inside its iframe.
#[derive(Template)]
#[template(path = "slo_front_done.html")]
struct DonePage {
    /// The SP's name, when the answer was ours to take.
    app: Option<String>,
    signed_out: bool,
}

/// The origin (`scheme://host[:port]`) of an SLO location, for `frame-src`; None when it cannot be
/// written safely into the policy.
fn origin(location: &str) -> Option<String> {
    let url = url::Url::parse(location).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    let safe = origin != "null"
        && origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/-[]".contains(&b));
    safe.then_some(origin)
}

fn headers(csp: &str, frame_options: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static(frame_options),
    );
    // The frame page's URL holds the round handle: it goes nowhere in a Referer.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A policy that cannot be a header value (say, an SP location from metadata that is not ASCII)
    // is replaced by a fixed strict one: the page never goes out without a CSP (fail closed).
    // (HeaderValue takes non-ASCII bytes as obs-text, which browsers read as anything but the
    // intended policy: only plain ASCII is used as given.)
    let written = csp
        .is_ascii()
        .then(|| HeaderValue::from_str(csp).ok())
        .flatten();
    let csp = written.unwrap_or(if frame_options == "DENY" {
        HeaderValue::from_static(FALLBACK_CSP_DENY)
    } else {
        HeaderValue::from_static(FALLBACK_CSP_SAMEORIGIN)
    });
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers
}

/// The fixed policies used when a page's own cannot be written as a header value: nothing loads,
/// runs, submits or frames.
const FALLBACK_CSP_DENY: &str =
    "default-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";
const FALLBACK_CSP_SAMEORIGIN: &str =
    "default-src 'none'; form-action 'none'; frame-ancestors 'self'; base-uri 'none'";

fn render(template: &impl Template) -> Result<String, WebError> {
    template
        .render()
        .map_err(|e| WebError::Sso(SsoError::Build(e.to_string())))
}

/// Starts the round for `front` (the session already ended): stores the transaction and answers with
/// the iframe page, clearing the session cookie. None when the round cannot be stored: the caller then
/// answers at once, with these SPs reported as not signed out.
pub(super) async fn start(
    idp: &Idp,
    session: &Session,
    initiator: Option<Initiator>,
    reports: Vec<SpLogout>,
    front: Vec<FrontRequest>,
) -> Option<Result<Response, WebError>> {
    let timeout = i64::try_from(idp.config.saml.slo_timeout_ms).unwrap_or(i64::MAX);
    let tx = Transaction {
        initiator,
        reports,
        front,
        deadline_ms: Utc::now().timestamp_millis().saturating_add(timeout),
        username: session.username.clone(),
    };
    let handle = match front::begin(idp, &tx).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(error = %e, "front-channel logout could not start");
            return None;
        }
    };
    Some(page(idp, &handle, &tx, timeout))
}

fn page(idp: &Idp, handle: &str, tx: &Transaction, timeout: i64) -> Result<Response, WebError> {
    let base = format!("/saml/slo/front/{handle}");
    let apps = tx
        .front
        .iter()
        .map(|f| {
            tx.reports
                .get(f.slot)
                .map_or_else(|| f.entity_id.clone(), |r| r.display_name.clone())
        })
        .collect();
    let body = render(&FrontPage {
        apps,
        frames: (0..tx.front.len()).map(|n| format!("{base}/{n}")).collect(),
        status_url: format!("{base}/status"),
        finish_url: format!("{base}/finish"),
        timeout_ms: timeout,
        refresh_secs: (timeout + 999) / 1000 + 1,
        script: POLL_SCRIPT,
    })?;
    // Frames may show Tessera (the iframe endpoint, the SP's answer coming back) and the SPs' SLO
    // origins only; the one script is allowed by hash, it talks to Tessera only.
    let mut frame_src = vec!["'self'".to_owned()];
    for request in &tx.front {
        if let Some(origin) = origin(&request.location) {
            if !frame_src.contains(&origin) {
                frame_src.push(origin);
            }
        }
    }
    let csp = format!(
        "default-src 'none'; script-src {}; connect-src 'self'; frame-src {}; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        poll_script_csp_source(),
        frame_src.join(" ")
    );
    let mut out = headers(&csp, "DENY");
    out.insert(
        header::SET_COOKIE,
        set_cookie(idp, SESSION_COOKIE, "", Some(0), "Lax"),
    );
    Ok((StatusCode::OK, out, body).into_response())
}

/// A small page inside an iframe (Tessera frames it; nobody else may).
fn frame_page(status: StatusCode, page: DonePage) -> Response {
    let csp = "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'self'; base-uri 'none'";
    match render(&page) {
        Ok(body) => (status, headers(csp, "SAMEORIGIN"), body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn gone() -> Response {
    frame_page(
        StatusCode::NOT_FOUND,
        DonePage {
            app: None,
            signed_out: false,
        },
    )
}

/// `GET /saml/slo/front/{handle}/{n}`: the signed LogoutRequest for the n-th SP of the round, by the
/// binding of its SingleLogoutService: a redirect with the signed query (saml-bindings 3.4.4.1), or
/// the auto-submitting form (saml-bindings 3.5.4).
pub async fn frame(
    State(idp): State<AppState>,
    Path((handle, n)): Path<(String, String)>,
) -> Response {
    let Ok(n) = n.parse::<usize>() else {
        return gone();
    };
    let tx = match front::load(&idp, &handle).await {
        Ok(Some(tx)) => tx,
        Ok(None) => return gone(),
        Err(e) => return WebError::Sso(e).into_response(),
    };
    let Some(request) = tx.front.get(n) else {
        return gone();
    };
    if request.binding == BINDING_HTTP_POST {
        let body = post_form_html(
            &request.location,
            MessageKind::Request,
            request.request_xml.as_bytes(),
            None,
        );
        let form_action = if request
            .location
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b';' || b == b',')
        {
            String::new()
        } else {
            format!(" form-action {};", request.location)
        };
        let csp = format!(
            "default-src 'none'; script-src {};{form_action} frame-ancestors 'self'; base-uri 'none'",
            auto_submit_script_csp_source()
        );
        return (StatusCode::OK, headers(&csp, "SAMEORIGIN"), body).into_response();
    }
    let key = &idp.keys.current;
    match encode_redirect(
        MessageKind::Request,
        request.request_xml.as_bytes(),
        None,
        &request.location,
        Some((key.private_key(), key.algorithm())),
    ) {
        Ok(location) => {
            // The frame URL (with the round handle) is not sent on to the SP as a Referer.
            let mut out = HeaderMap::new();
            out.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            (out, Redirect::to(&location)).into_response()
        }
        Err(e) => WebError::Sso(SsoError::Build(e.to_string())).into_response(),
    }
}

/// `GET /saml/slo/front/{handle}/status`: `{"done":…,"answered":…,"total":…}` for the page's script.
/// An unknown or finished round is "done", so the page moves on to the finish step, which explains.
pub async fn status(State(idp): State<AppState>, Path(handle): Path<String>) -> Response {
    let (code, body) = match front::progress(&idp, &handle).await {
        Ok(Some(p)) => (
            StatusCode::OK,
            serde_json::json!({"done": p.done, "answered": p.answered, "total": p.total}),
        ),
        Ok(None) => (StatusCode::NOT_FOUND, serde_json::json!({"done": true})),
        Err(e) => {
            tracing::error!(error = %e, "front-channel logout status");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"done": false}),
            )
        }
    };
    let mut out = HeaderMap::new();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (code, out, axum::Json(body)).into_response()
}

/// `GET /saml/slo/front/{handle}/finish`: once per round, the initiator's LogoutResponse (top-level
/// Success, with PartialLogout unless every other SP confirmed: saml-core 3.7.3.2, saml-profiles
/// 4.4.3.4) or, for the portal, the signed-out page listing every app.
pub async fn finish(
    State(idp): State<AppState>,
    Path(handle): Path<String>,
) -> Result<Response, WebError> {
    let Some(tx) = front::finish(&idp, &handle).await? else {
        return Err(WebError::BadRequest {
            message:
                "This sign-out has already finished or has expired. Your Tessera session has ended.",
            detail: "unknown or finished front-channel SLO handle".into(),
        });
    };
    let Some(initiator) = tx.initiator else {
        return Ok(signed_out_page(&idp, tx.reports));
    };
    let sp = match idp.sp(&initiator.sp_entity_id).await {
        Ok(sp) => sp,
        Err(e) => {
            tracing::warn!(sp = %initiator.sp_entity_id, error = %e, "initiator gone");
            return Ok(signed_out_page(&idp, tx.reports));
        }
    };
    let reply = Reply {
        request_id: &initiator.request_id,
        status: initiator_status(&tx.reports),
        relay_state: initiator.relay_state.as_deref(),
        binding: &initiator.binding,
        clear_cookie: true,
    };
    answer(&idp, &sp, reply).unwrap_or_else(|| Ok(signed_out_page(&idp, tx.reports)))
}

/// A LogoutResponse at `/saml/slo`: the answer of an SP in its iframe. Recorded when it answers a
/// request of a running round, comes from that SP and carries its valid signature; otherwise it counts
/// for nothing. Either way the iframe gets a small page.
pub(super) async fn response_arrived(
    idp: &Idp,
    response: UnverifiedLogoutResponse,
    binding: &str,
    signature: Option<&RedirectSignature>,
) -> Response {
    let issuer = response.issuer().to_owned();
    let answer = FrontAnswer {
        response,
        binding,
        signature,
    };
    match front::record(idp, answer).await {
        Ok(recorded) => frame_page(
            StatusCode::OK,
            DonePage {
                app: Some(recorded.display_name),
                signed_out: recorded.signed_out,
            },
        ),
        Err(problem) => {
            tracing::warn!(sp = %issuer, %problem, "front-channel LogoutResponse refused");
            frame_page(
                StatusCode::BAD_REQUEST,
                DonePage {
                    app: None,
                    signed_out: false,
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn origins_for_frame_src() {
        assert_eq!(
            origin("https://sp.example/saml/slo?x=1").as_deref(),
            Some("https://sp.example")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/slo").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin("javascript:alert(1)"), None);
        assert_eq!(origin("not a url"), None);
    }

    #[test]
    fn a_policy_that_is_no_header_value_falls_back_to_a_strict_one() {
        let h = headers(
            "default-src 'none'; form-action https://sp\u{e9}.example/slo;",
            "SAMEORIGIN",
        );
        assert_eq!(
            h.get(header::CONTENT_SECURITY_POLICY).unwrap(),
            FALLBACK_CSP_SAMEORIGIN
        );
        let h = headers("default-src 'none'\n; frame-src x", "DENY");
        assert_eq!(
            h.get(header::CONTENT_SECURITY_POLICY).unwrap(),
            FALLBACK_CSP_DENY
        );
        assert_eq!(h.get(header::REFERRER_POLICY).unwrap(), "no-referrer");
        let h = headers("default-src 'none'", "DENY");
        assert_eq!(
            h.get(header::CONTENT_SECURITY_POLICY).unwrap(),
            "default-src 'none'"
        );
    }
}
