//! The single logout endpoints (saml-profiles 4.4): `/saml/slo` takes an SP's LogoutRequest by
//! HTTP-Redirect (GET) or HTTP-POST (POST), and the portal's Sign out button ends the session the same
//! way. Propagation to the other SPs is [`crate::slo`]; this module decodes, verifies, finds the session
//! and answers: a LogoutResponse to the initiating SP, or the signed-out page listing every app. When
//! some SPs can only be told through the browser, the answer waits for that round (`slo_front.rs`),
//! and their LogoutResponses arrive here too.

use std::time::Duration;

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, State};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::pages::html;
use super::sso::{binding_limits, context, refuse_replay, respond};
use super::{current_session, set_cookie, AppState, WebError, SESSION_COOKIE};
use crate::idp::{fresh_id, Idp, RegisteredSp, SsoError, SsoOutcome};
use crate::saml::binding::post::decode_post;
use crate::saml::binding::redirect::{decode_redirect, encode_redirect, RedirectSignature};
use crate::saml::binding::MessageKind;
use crate::saml::logout::{
    parse_logout_request, parse_logout_response, LogoutError, LogoutResponse, NameId,
};
use crate::saml::metadata::{BINDING_HTTP_POST, BINDING_HTTP_REDIRECT};
use crate::saml::status::{Status, StatusCode as SamlStatus, SubStatusCode};
use crate::saml::xmldsig::keys::public_keys_from_certs;
use crate::saml::xmldsig::sign::sign_enveloped;
use crate::saml::xmldsig::verify::VerifyPolicy;
use crate::session::Session;
use crate::slo::front::{self, Initiator};
use crate::slo::{find_participant, initiator_status, logout_session, SpLogout, SpLogoutResult};

/// How long a POSTed LogoutRequest waits for the same-site GET that brings the session cookie.
const PENDING_LOGOUT_TTL: Duration = Duration::from_secs(5 * 60);

/// Session-store namespace of [`PendingLogout`]s.
const PENDING_NAMESPACE: &str = "slo-pending";

/// A verified LogoutRequest, kept between a cross-site POST (which `SameSite=Lax` sends without the
/// session cookie) and the same-site GET that has it, exactly as SSO does (docs/sso-flow.md). Only the
/// verified fields are kept, so nothing is read from the request again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingLogout {
    /// The initiating SP (the verified Issuer).
    sp_entity_id: String,
    /// The request ID, answered by InResponseTo.
    request_id: String,
    /// The principal named (saml-core 3.7.1).
    name_id: String,
    /// Its Format, when given.
    name_id_format: Option<String>,
    /// The SessionIndexes named; empty means all of the principal's sessions.
    session_indexes: Vec<String>,
    /// Returned verbatim with the response (saml-bindings 3.4.3, 3.5.3).
    relay_state: Option<String>,
    /// The binding the request came by, which the response prefers.
    binding: String,
}

impl PendingLogout {
    fn name_id(&self) -> NameId {
        NameId {
            value: self.name_id.clone(),
            format: self.name_id_format.clone(),
            sp_name_qualifier: None,
            name_qualifier: None,
        }
    }
}

/// Query of `GET /saml/slo/continue`.
#[derive(Debug, Deserialize)]
pub struct ContinueQuery {
    #[serde(default)]
    request: String,
}

/// One app on the signed-out page.
pub struct AppLogoutRow {
    /// The app's display name.
    pub name: String,
    /// Whether the app confirmed the sign-out.
    pub signed_out: bool,
    /// What the person is told for this app.
    pub note: &'static str,
}

/// After sign-out from the portal: the session ended, and what became of each app it reached.
#[derive(Template)]
#[template(path = "signed_out_apps.html")]
pub struct SignedOutAppsPage {
    /// Every app the session reached, in the order it was reached.
    pub apps: Vec<AppLogoutRow>,
}

fn bad(detail: String) -> WebError {
    WebError::BadRequest {
        message: "The application sent a sign-out request that Tessera cannot read.",
        detail,
    }
}

/// The decoded message of either binding.
struct Inbound {
    kind: MessageKind,
    xml: Vec<u8>,
    relay_state: Option<String>,
    /// The query-string signature (HTTP-Redirect only).
    signature: Option<RedirectSignature>,
    binding: &'static str,
}

/// `GET /saml/slo`: a LogoutRequest by HTTP-Redirect (saml-bindings 3.4).
pub async fn slo_redirect(
    State(idp): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    // saml-bindings 3.4.4.1: the signature covers the octets as received.
    let query = query.unwrap_or_default();
    let message =
        decode_redirect(query.as_bytes(), &binding_limits(&idp)).map_err(|e| bad(e.to_string()))?;
    let inbound = Inbound {
        kind: message.kind,
        xml: message.xml,
        relay_state: message.relay_state,
        signature: message.signature,
        binding: BINDING_HTTP_REDIRECT,
    };
    handle(&idp, &headers, inbound).await
}

/// `POST /saml/slo`: a LogoutRequest by HTTP-POST (saml-bindings 3.5).
pub async fn slo_post(
    State(idp): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let message = decode_post(&body, &binding_limits(&idp)).map_err(|e| bad(e.to_string()))?;
    let inbound = Inbound {
        kind: message.kind,
        xml: message.xml,
        relay_state: message.relay_state,
        signature: None,
        binding: BINDING_HTTP_POST,
    };
    handle(&idp, &headers, inbound).await
}

async fn handle(idp: &Idp, headers: &HeaderMap, inbound: Inbound) -> Result<Response, WebError> {
    let destinations = [idp.config.slo_url()];
    let ctx = context(idp, &destinations, Utc::now());
    // A LogoutResponse answers one of our front-channel LogoutRequests, inside its iframe
    // (docs/slo.md); front::record accepts only what answers a running round.
    if inbound.kind == MessageKind::Response {
        let response = parse_logout_response(&inbound.xml, &ctx).map_err(|e| bad(e.to_string()))?;
        return Ok(super::slo_front::response_arrived(
            idp,
            response,
            inbound.binding,
            inbound.signature.as_ref(),
        )
        .await);
    }
    // A message that does not parse has no trustworthy sender to answer: the page explains.
    let unverified = parse_logout_request(&inbound.xml, &ctx).map_err(|e| bad(e.to_string()))?;
    let sp = idp.sp(unverified.issuer()).await?;
    let request_id = unverified.id().to_owned();
    let keys = public_keys_from_certs(&sp.metadata.signing_certs);
    let allow_sha1 = sp.record.settings.allow_sha1;
    // saml-profiles 4.4.4.1: a LogoutRequest MUST be signed or otherwise authenticated; the browser
    // bindings authenticate nothing, so a signature is always required here (saml-bindings 3.4.4.1
    // for the query-string signature, 3.5.4 / saml-core 5 for the XML one).
    let verified = match inbound.binding {
        BINDING_HTTP_REDIRECT => {
            unverified.verify_redirect(inbound.signature.as_ref(), &keys, allow_sha1, true)
        }
        _ => unverified.verify_post(&keys, &VerifyPolicy { allow_sha1 }, true),
    };
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(sp = %sp.record.entity_id, error = %e, "LogoutRequest refused");
            // The SP's endpoint comes from its metadata, so it may hear the refusal (saml-core 3.2.2.2:
            // Requester/RequestDenied); nothing was ended. InResponseTo still names the request
            // (saml-core 3.2.2), but the unauthenticated RelayState is not echoed: our signature must
            // not vouch for a value whoever forged the request chose (saml-bindings 3.4.3, 3.5.3).
            let reply = Reply {
                request_id: &request_id,
                status: LogoutError::Envelope(e).status(),
                relay_state: None,
                binding: inbound.binding,
                clear_cookie: false,
            };
            return answer(idp, &sp, reply)
                .ok_or_else(|| WebError::Signature("LogoutRequest signature refused".into()))?;
        }
    };
    let request = verified.into_message();
    // saml-core 1.3.4: a replayed LogoutRequest ends nothing.
    refuse_replay(idp, "logout-request", &sp.record.entity_id, &request.id).await?;
    let pending = PendingLogout {
        sp_entity_id: sp.record.entity_id.clone(),
        request_id: request.id,
        name_id: request.name_id.value,
        name_id_format: request.name_id.format,
        session_indexes: request.session_indexes,
        relay_state: inbound.relay_state,
        binding: inbound.binding.to_owned(),
    };
    if current_session(idp, headers).await?.is_none() && inbound.binding == BINDING_HTTP_POST {
        // A cross-site POST comes without the SameSite=Lax cookie: let a same-site GET bring it.
        let handle = stash(idp, &pending).await?;
        return Ok(Redirect::to(&format!("/saml/slo/continue?request={handle}")).into_response());
    }
    finish(idp, headers, &sp, &pending).await
}

/// `GET /saml/slo/continue?request=<handle>`: a POSTed LogoutRequest, now with the session cookie.
pub async fn slo_continue(
    State(idp): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ContinueQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(query) = query.map_err(super::login::malformed_query)?;
    let handle = query.request;
    let well_formed =
        !handle.is_empty() && handle.len() <= 64 && handle.bytes().all(|b| b.is_ascii_hexdigit());
    let pending = if well_formed {
        idp.sessions
            .get_temp(PENDING_NAMESPACE, &handle)
            .await
            .map_err(|e| WebError::Sso(e.into()))?
            .and_then(|v| serde_json::from_str::<PendingLogout>(&v).ok())
    } else {
        None
    };
    let used_up = || WebError::BadRequest {
        message: "This sign-out request has expired or was already used.",
        detail: "unknown SLO handle".into(),
    };
    let Some(pending) = pending else {
        return Err(used_up());
    };
    // Used once, atomically across nodes: of two requests racing with the handle only the first
    // acts (get_temp + delete_temp alone would let both through).
    if !idp
        .sessions
        .remember_once("slo-continue", &handle, PENDING_LOGOUT_TTL)
        .await
        .map_err(|e| WebError::Sso(e.into()))?
    {
        return Err(used_up());
    }
    idp.sessions
        .delete_temp(PENDING_NAMESPACE, &handle)
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    let sp = idp.sp(&pending.sp_entity_id).await?;
    finish(&idp, &headers, &sp, &pending).await
}

async fn stash(idp: &Idp, pending: &PendingLogout) -> Result<String, WebError> {
    let mut raw = [0u8; 16];
    openssl::rand::rand_bytes(&mut raw).map_err(|e| SsoError::Build(e.to_string()))?;
    let handle = hex::encode(raw);
    let value = serde_json::to_string(pending).map_err(|e| SsoError::Build(e.to_string()))?;
    idp.sessions
        .put_temp(PENDING_NAMESPACE, &handle, &value, PENDING_LOGOUT_TTL)
        .await
        .map_err(|e| WebError::Sso(e.into()))?;
    Ok(handle)
}

/// Matches the verified request to the browser's session, logs it out everywhere and answers the SP.
async fn finish(
    idp: &Idp,
    headers: &HeaderMap,
    sp: &RegisteredSp,
    pending: &PendingLogout,
) -> Result<Response, WebError> {
    let session = current_session(idp, headers).await?;
    let matched = session.as_ref().filter(|(_, s)| {
        find_participant(
            s,
            &pending.sp_entity_id,
            &pending.name_id(),
            &pending.session_indexes,
        )
        .is_some()
    });
    let Some((id, session)) = matched else {
        // saml-core 3.7.3.2: the principal or session is not known here; nothing is ended, and the
        // SP hears Responder/UnknownPrincipal (saml-core 3.2.2.2).
        tracing::info!(sp = %pending.sp_entity_id, has_session = session.is_some(), "LogoutRequest for an unknown session");
        let reply = Reply {
            request_id: &pending.request_id,
            status: Status::error(SamlStatus::Responder, SubStatusCode::UnknownPrincipal),
            relay_state: pending.relay_state.as_deref(),
            binding: &pending.binding,
            clear_cookie: false,
        };
        return answer(idp, sp, reply).ok_or_else(|| WebError::BadRequest {
            message: "There is no matching Tessera session to sign out of.",
            detail: "unknown session, and no front-channel SLO endpoint".into(),
        })?;
    };
    let (status, others) = match logout_session(idp, id, session, Some(&pending.sp_entity_id)).await
    {
        Ok(others) => {
            let initiator = Initiator {
                sp_entity_id: pending.sp_entity_id.clone(),
                request_id: pending.request_id.clone(),
                relay_state: pending.relay_state.clone(),
                binding: pending.binding.clone(),
            };
            // The answer waits for the browser round, if some SPs can only be told that way.
            if let Some(page) = front_round(idp, session, Some(initiator), &others).await {
                return page;
            }
            (initiator_status(&others), others)
        }
        // saml-core 3.7.3.2: our own session could not be ended: a top-level error.
        Err(e) => {
            tracing::error!(error = %e, "session could not be ended");
            let status = Status {
                top: SamlStatus::Responder,
                second: None,
                message: None,
            };
            (status, Vec::new())
        }
    };
    let reply = Reply {
        request_id: &pending.request_id,
        status,
        relay_state: pending.relay_state.as_deref(),
        binding: &pending.binding,
        clear_cookie: true,
    };
    // An SP without a front-channel endpoint cannot hear the answer: the person sees the page instead.
    answer(idp, sp, reply).unwrap_or_else(|| Ok(signed_out_page(idp, others)))
}

/// After the back channel (the session ended): the front-channel round's page when some of `others`
/// can only be told through the browser (docs/slo.md). None when there is no such SP, or the round
/// could not be stored: then the caller answers at once and those SPs count as not signed out.
async fn front_round(
    idp: &Idp,
    session: &Session,
    initiator: Option<Initiator>,
    others: &[SpLogout],
) -> Option<Result<Response, WebError>> {
    let requests = front::plan(idp, session, others).await;
    if requests.is_empty() {
        return None;
    }
    super::slo_front::start(idp, session, initiator, others.to_vec(), requests).await
}

/// What a LogoutResponse to an SP says, and how the SP's request came.
pub(super) struct Reply<'a> {
    /// The request answered (InResponseTo).
    pub(super) request_id: &'a str,
    /// The outcome for the initiator.
    pub(super) status: Status,
    /// Returned verbatim (saml-bindings 3.4.3, 3.5.3).
    pub(super) relay_state: Option<&'a str>,
    /// The binding the request came by, which the response prefers.
    pub(super) binding: &'a str,
    /// Whether the session cookie is cleared too (the session ended).
    pub(super) clear_cookie: bool,
}

/// A signed LogoutResponse to the SP's front-channel SingleLogoutService from its metadata
/// (saml-profiles 4.4.3.4, 4.4.4.2), by the binding the request came by when the SP offers it, else
/// HTTP-POST, else HTTP-Redirect. None when the SP has no such endpoint.
pub(super) fn answer(
    idp: &Idp,
    sp: &RegisteredSp,
    reply: Reply<'_>,
) -> Option<Result<Response, WebError>> {
    let endpoint = sp
        .metadata
        .slo_for_binding(reply.binding)
        .or_else(|| sp.metadata.slo_for_binding(BINDING_HTTP_POST))
        .or_else(|| sp.metadata.slo_for_binding(BINDING_HTTP_REDIRECT))?;
    // saml-metadata 2.2.2: responses go to ResponseLocation when there is one.
    let url = endpoint
        .response_location
        .as_deref()
        .unwrap_or(&endpoint.location);
    Some(send_response(idp, url, &endpoint.binding, reply))
}

fn send_response(
    idp: &Idp,
    url: &str,
    binding: &str,
    reply: Reply<'_>,
) -> Result<Response, WebError> {
    let response = LogoutResponse {
        id: fresh_id()?,
        in_response_to: Some(reply.request_id.to_owned()),
        issue_instant: Utc::now(),
        issuer: idp.config.entity_id(),
        destination: Some(url.to_owned()),
        status: reply.status,
    };
    let mut element = response.to_element();
    let key = &idp.keys.current;
    let mut out = if binding == BINDING_HTTP_POST {
        // saml-profiles 4.4.4.2: the LogoutResponse is signed; in HTTP-POST, inside the XML.
        sign_enveloped(&mut element, key).map_err(|e| SsoError::Build(e.to_string()))?;
        respond(SsoOutcome::Post {
            acs_url: url.to_owned(),
            response_xml: element.to_xml(),
            relay_state: reply.relay_state.map(str::to_owned),
        })
    } else {
        // saml-bindings 3.4.4.1: in HTTP-Redirect, over the query string.
        let location = encode_redirect(
            MessageKind::Response,
            element.to_xml().as_bytes(),
            reply.relay_state,
            url,
            Some((key.private_key(), key.algorithm())),
        )
        .map_err(|e| SsoError::Build(e.to_string()))?;
        Redirect::to(&location).into_response()
    };
    if reply.clear_cookie {
        out.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(idp, SESSION_COOKIE, "", Some(0), "Lax"),
        );
    }
    Ok(out)
}

/// Portal sign-out (`POST /logout`, CSRF already checked): logs the session out at every app it reached
/// and shows which apps confirmed.
pub async fn portal_logout(idp: &Idp, headers: &HeaderMap) -> Result<Response, WebError> {
    let reports = match current_session(idp, headers).await? {
        Some((id, session)) => {
            let reports = logout_session(idp, &id, &session, None).await?;
            if let Some(page) = front_round(idp, &session, None, &reports).await {
                return page;
            }
            reports
        }
        None => Vec::new(),
    };
    Ok(signed_out_page(idp, reports))
}

/// The portal's signed-out page: every app the session reached and what became of it.
pub(super) fn signed_out_page(idp: &Idp, reports: Vec<SpLogout>) -> Response {
    let apps = reports
        .into_iter()
        .map(|r| AppLogoutRow {
            signed_out: r.signed_out(),
            note: match r.result {
                SpLogoutResult::SignedOut => "signed out",
                SpLogoutResult::NotSupported => {
                    "not signed out: close your browser or sign out there"
                }
                SpLogoutResult::Failed(_) | SpLogoutResult::NoAnswer => {
                    "sign-out failed: close your browser or sign out there"
                }
            },
            name: r.display_name,
        })
        .collect();
    let body = match (SignedOutAppsPage { apps }).render() {
        Ok(b) => b,
        Err(e) => return WebError::Sso(SsoError::Build(e.to_string())).into_response(),
    };
    let (mut out, body) = html(body);
    out.insert(
        header::SET_COOKIE,
        set_cookie(idp, SESSION_COOKIE, "", Some(0), "Lax"),
    );
    (StatusCode::OK, out, body).into_response()
}
