//! The SSO endpoints: SP-initiated by HTTP-Redirect and HTTP-POST, IdP-initiated from the portal, and
//! our metadata.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, RawQuery, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use openssl::pkey::{PKey, Public};
use serde::Deserialize;

use super::{client_ip, current_session, AppState, WebError};
use crate::idp::{Idp, PendingRequest, RegisteredSp, SsoOutcome};
use crate::saml::authn_request::{
    parse_authn_request, UnverifiedAuthnRequest, VerifiedAuthnRequest,
};
use crate::saml::binding::post::{auto_submit_script_csp_source, decode_post, post_form_html};
use crate::saml::binding::redirect::decode_redirect;
use crate::saml::binding::{Limits, MessageKind};
use crate::saml::envelope::{EnvelopeError, RequestContext};
use crate::saml::metadata::{Endpoint, BINDING_HTTP_POST};
use crate::saml::status::{Status, StatusCode as SamlStatus, SubStatusCode};
use crate::saml::xml;
use crate::saml::xmldsig::keys::public_keys_from_certs;
use crate::saml::xmldsig::verify::VerifyPolicy;

/// `GET /saml/metadata`: our signed EntityDescriptor (saml-metadata 2.3.2).
pub async fn metadata(State(idp): State<AppState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    (headers, idp.metadata_xml.clone()).into_response()
}

/// Size limits for decoding a message from either browser binding (SSO and SLO alike).
pub(super) fn binding_limits(idp: &Idp) -> Limits {
    Limits {
        max_inflated: idp.config.saml.max_message_bytes,
        max_encoded: idp.config.saml.max_message_bytes,
    }
}

fn bad(message: &'static str) -> impl Fn(String) -> WebError {
    move |detail| WebError::BadRequest { message, detail }
}

/// Maps a request-parsing failure to what the person is told.
fn request_error(e: &crate::saml::authn_request::RequestError) -> WebError {
    use crate::saml::authn_request::RequestError;
    let message = match e {
        RequestError::Envelope(EnvelopeError::IssueInstantTooOld { .. }) => {
            "The sign-in request has expired."
        }
        RequestError::Envelope(EnvelopeError::IssueInstantInFuture { .. }) => {
            "The sign-in request is dated in the future; a clock is wrong."
        }
        RequestError::Envelope(
            EnvelopeError::WrongDestination { .. } | EnvelopeError::DestinationRequired,
        ) => "The sign-in request was meant for another identity provider.",
        _ => "The application sent a sign-in request that Tessera cannot read.",
    };
    WebError::BadRequest {
        message,
        detail: e.to_string(),
    }
}

fn signature_error(e: EnvelopeError) -> WebError {
    WebError::Signature(e.to_string())
}

/// `GET /saml/sso`: an AuthnRequest by the HTTP-Redirect binding (saml-bindings 3.4).
pub async fn sso_redirect(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: RawQuery,
) -> Result<Response, WebError> {
    let result = sso_redirect_checked(
        State(idp.clone()),
        ConnectInfo(peer),
        headers.clone(),
        query,
    )
    .await;
    record_invalid(&idp, peer, &headers, result).await
}

/// `POST /saml/sso`: an AuthnRequest by the HTTP-POST binding (saml-bindings 3.5).
pub async fn sso_post(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let result =
        sso_post_checked(State(idp.clone()), ConnectInfo(peer), headers.clone(), body).await;
    record_invalid(&idp, peer, &headers, result).await
}

/// A request refused as malformed, unsigned, replayed, or from an unknown SP becomes a
/// `request_invalid` login event (login monitoring); the result passes through unchanged.
async fn record_invalid(
    idp: &Idp,
    peer: SocketAddr,
    headers: &HeaderMap,
    result: Result<Response, WebError>,
) -> Result<Response, WebError> {
    let sp = match &result {
        Err(
            WebError::BadRequest { .. }
            | WebError::Signature(_)
            | WebError::ForeignAcs(_)
            | WebError::Replay(_),
        ) => None,
        Err(WebError::Sso(
            crate::idp::SsoError::UnknownSp(sp)
            | crate::idp::SsoError::BadSpMetadata { entity_id: sp, .. },
        )) => Some(sp.clone()),
        _ => return result,
    };
    if let Err(e) = &result {
        let agent = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let event = crate::events::LoginEvent::new(
            crate::events::Kind::Sso,
            crate::events::Outcome::RequestInvalid,
            "",
            client_ip(idp, peer, headers),
        )
        .sp(sp.as_deref())
        .reason(e.to_string())
        .agent(agent);
        idp.events.record(event).await;
    }
    result
}

/// The body of [`sso_redirect`].
async fn sso_redirect_checked(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    // saml-bindings 3.4.4.1: the signature covers the octets as received, so decode the raw query.
    let query = query.unwrap_or_default();
    let message = decode_redirect(query.as_bytes(), &binding_limits(&idp))
        .map_err(|e| bad("The sign-in request could not be decoded.")(e.to_string()))?;
    let (unverified, sp, keys) = read_request(&idp, message.kind, &message.xml).await?;
    let verified = unverified
        .verify_redirect(
            message.signature.as_ref(),
            &keys,
            sp.record.settings.allow_sha1,
            sp.metadata.authn_requests_signed,
        )
        .map_err(signature_error)?;
    handle_request(&idp, peer, &headers, verified, message.relay_state).await
}

/// The body of [`sso_post`].
async fn sso_post_checked(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let message = decode_post(&body, &binding_limits(&idp))
        .map_err(|e| bad("The sign-in request could not be decoded.")(e.to_string()))?;
    let (unverified, sp, keys) = read_request(&idp, message.kind, &message.xml).await?;
    let policy = VerifyPolicy {
        allow_sha1: sp.record.settings.allow_sha1,
    };
    let verified = unverified
        .verify_post(&keys, &policy, sp.metadata.authn_requests_signed)
        .map_err(signature_error)?;
    handle_request(&idp, peer, &headers, verified, message.relay_state).await
}

/// Parses a decoded AuthnRequest and finds its SP and the SP's registered signing keys, which are the
/// only keys its signature may be checked with.
async fn read_request(
    idp: &Idp,
    kind: MessageKind,
    xml: &[u8],
) -> Result<(UnverifiedAuthnRequest, Arc<RegisteredSp>, Vec<PKey<Public>>), WebError> {
    if kind != MessageKind::Request {
        return Err(bad("Tessera expected a sign-in request.")(
            "SAMLResponse sent to the SSO endpoint".into(),
        ));
    }
    let destinations = [idp.config.sso_url()];
    let ctx = context(idp, &destinations, Utc::now());
    let unverified = parse_authn_request(xml, &ctx).map_err(|e| request_error(&e))?;
    let sp = idp.sp(unverified.issuer()).await?;
    let keys = public_keys_from_certs(&sp.metadata.signing_certs);
    Ok((unverified, sp, keys))
}

/// What a request (AuthnRequest or LogoutRequest) is checked against: the configured clock skew,
/// maximum age and message size, and the endpoints it may name as its Destination.
pub(super) fn context<'a>(
    idp: &Idp,
    destinations: &'a [String],
    now: chrono::DateTime<Utc>,
) -> RequestContext<'a> {
    RequestContext {
        now,
        max_clock_skew: chrono::Duration::seconds(idp.config.saml.clock_skew_secs),
        max_age: chrono::Duration::seconds(idp.config.saml.max_request_age_secs),
        destinations,
        limits: xml::Limits {
            max_bytes: idp.config.saml.max_message_bytes,
            ..xml::Limits::default()
        },
    }
}

/// The ACS endpoint for a request, always taken from the SP's metadata (saml-profiles 4.1.4.1: the IdP
/// must ensure the ACS location belongs to the requester).
fn choose_acs<'a>(
    sp: &'a crate::idp::RegisteredSp,
    request: &crate::saml::authn_request::AuthnRequest,
) -> Result<&'a Endpoint, WebError> {
    if let Some(url) = &request.acs_url {
        return sp
            .metadata
            .acs_by_url(url)
            .ok_or_else(|| WebError::ForeignAcs(url.clone()));
    }
    if let Some(index) = request.acs_index {
        return sp.metadata.acs_by_index(index).ok_or_else(|| {
            bad("The application asked for an unknown response address.")(format!(
                "ACS index {index}"
            ))
        });
    }
    sp.metadata
        .default_acs_with_binding(BINDING_HTTP_POST)
        .or_else(|| sp.metadata.default_acs())
        .ok_or_else(|| bad("The application has no response address.")("no ACS in metadata".into()))
}

async fn handle_request(
    idp: &Idp,
    peer: SocketAddr,
    headers: &HeaderMap,
    verified: VerifiedAuthnRequest,
    relay_state: Option<String>,
) -> Result<Response, WebError> {
    let request = verified.message();
    let sp = idp.sp(&request.issuer).await?;
    if !sp.record.settings.enabled {
        return Err(crate::idp::SsoError::SpDisabled(sp.record.entity_id.clone()).into());
    }
    let acs = choose_acs(&sp, request)?;
    let mut pending = PendingRequest {
        sp_entity_id: sp.record.entity_id.clone(),
        request_id: Some(request.id.clone()),
        acs_url: acs.location.clone(),
        relay_state,
        name_id_format: request
            .name_id_policy
            .as_ref()
            .and_then(|p| p.format.clone()),
        force_authn: request.force_authn,
        is_passive: request.is_passive,
        requested_context: request
            .requested_authn_context
            .as_ref()
            .map(|r| (r.comparison.as_str().to_owned(), r.class_refs.clone())),
    };
    // saml-bindings 3.4.5 / 3.5.5 and saml-profiles 4.1.2: Tessera answers with HTTP-POST only.
    let wants_other_binding = request
        .protocol_binding
        .as_deref()
        .is_some_and(|b| b != BINDING_HTTP_POST);
    if wants_other_binding || acs.binding != BINDING_HTTP_POST {
        match sp.metadata.default_acs_with_binding(BINDING_HTTP_POST) {
            Some(post_acs) => {
                pending.acs_url = post_acs.location.clone();
                let outcome = idp.error_outcome(
                    &pending,
                    Status::error(SamlStatus::Responder, SubStatusCode::UnsupportedBinding),
                )?;
                return Ok(respond(outcome));
            }
            None => {
                return Err(bad(
                    "The application asked for a response binding Tessera does not offer.",
                )(format!(
                    "binding {:?}",
                    request.protocol_binding
                )))
            }
        }
    }
    // saml-profiles 4.1.4.5: an AuthnRequest ID is used once.
    refuse_replay(idp, "authn-request", &sp.record.entity_id, &request.id).await?;
    let session = current_session(idp, headers).await?;
    tracing::debug!(%peer, sp = %sp.record.entity_id, has_session = session.is_some(), "authn request accepted");
    match &session {
        Some((id, s)) => match idp
            .complete_sso(&pending, Some((id, s)), client_ip(idp, peer, headers))
            .await?
        {
            SsoOutcome::Login => to_login(idp, &pending).await,
            outcome => Ok(respond(outcome)),
        },
        // No cookie seen: it may be a cross-site POST that SameSite=Lax kept the cookie from. The login
        // page (a same-site GET) decides, and answers at once if a session is there after all.
        None => to_login(idp, &pending).await,
    }
}

async fn to_login(idp: &Idp, pending: &PendingRequest) -> Result<Response, WebError> {
    let handle = idp.stash_pending(pending).await?;
    Ok(Redirect::to(&format!("/login?request={handle}")).into_response())
}

/// Query of `GET /saml/init`.
#[derive(Debug, Deserialize)]
pub struct InitQuery {
    #[serde(default)]
    sp: String,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

/// `GET /saml/init?sp=<entityID>`: IdP-initiated SSO (saml-profiles 4.1.5), an unsolicited response to
/// the SP's default ACS.
pub async fn idp_initiated(
    State(idp): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<InitQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(query) = query.map_err(super::login::malformed_query)?;
    let sp = idp.sp(&query.sp).await?;
    let acs = sp
        .metadata
        .default_acs_with_binding(BINDING_HTTP_POST)
        .ok_or_else(|| {
            bad("The application has no response address for HTTP-POST.")("no POST ACS".into())
        })?;
    // saml-bindings 3.4.3: RelayState is at most 80 bytes.
    let relay_state = query.relay_state.filter(|r| !r.is_empty() && r.len() <= 80);
    let pending = PendingRequest {
        sp_entity_id: sp.record.entity_id.clone(),
        request_id: None,
        acs_url: acs.location.clone(),
        relay_state,
        name_id_format: None,
        force_authn: false,
        is_passive: false,
        requested_context: None,
    };
    match current_session(&idp, &headers).await? {
        Some((id, s)) => match idp
            .complete_sso(&pending, Some((&id, &s)), client_ip(&idp, peer, &headers))
            .await?
        {
            SsoOutcome::Login => to_login(&idp, &pending).await,
            outcome => Ok(respond(outcome)),
        },
        None => to_login(&idp, &pending).await,
    }
}

/// Refuses a request whose ID its SP already used (saml-core 1.3.4: an ID is used once). The marker
/// outlives the request's whole acceptance window, so a replay is refused for as long as it could be
/// valid; `namespace` keeps the IDs of each kind of request apart.
pub(super) async fn refuse_replay(
    idp: &Idp,
    namespace: &str,
    sp_entity_id: &str,
    request_id: &str,
) -> Result<(), WebError> {
    let window = Duration::from_secs(
        (idp.config.saml.max_request_age_secs + 2 * idp.config.saml.clock_skew_secs).max(60) as u64,
    );
    let marker = format!("{sp_entity_id}\n{request_id}");
    if idp
        .sessions
        .remember_once(namespace, &marker, window)
        .await
        .map_err(|e| WebError::Sso(e.into()))?
    {
        Ok(())
    } else {
        Err(WebError::Replay(request_id.to_owned()))
    }
}

/// Turns an outcome into the auto-submitting form (saml-bindings 3.5.4), or a redirect to the login page.
pub fn respond(outcome: SsoOutcome) -> Response {
    match outcome {
        SsoOutcome::Post {
            acs_url,
            response_xml,
            relay_state,
        } => {
            let body = post_form_html(
                &acs_url,
                MessageKind::Response,
                response_xml.as_bytes(),
                relay_state.as_deref(),
            );
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // saml-bindings 3.5.5.1: the response must not be cached.
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store"),
            );
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            let form_action = if acs_url
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b';' || b == b',')
            {
                String::new()
            } else {
                format!(" form-action {acs_url};")
            };
            let csp = format!(
                "default-src 'none'; script-src {};{form_action} frame-ancestors 'none'; base-uri 'none'",
                auto_submit_script_csp_source()
            );
            if let Ok(value) = HeaderValue::from_str(&csp) {
                headers.insert(header::CONTENT_SECURITY_POLICY, value);
            }
            (StatusCode::OK, headers, body).into_response()
        }
        SsoOutcome::Login => Redirect::to("/login").into_response(),
    }
}
