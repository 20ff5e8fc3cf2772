//! Single logout (saml-profiles 4.4, saml-core 3.7): ending an SSO session everywhere it reached.
//!
//! Tessera is the session authority. When a session ends by logout (an SP's LogoutRequest, or the
//! portal's Sign out button), every other SP the session reached is sent a signed LogoutRequest over the
//! back channel (SOAP binding, saml-bindings 3.2), all at once, each with its own deadline
//! (`saml.slo_timeout_ms`). Their answers are collected into a [`SpLogout`] per SP; one SP that errors or
//! never answers costs at most the deadline and never keeps the others from being told. SPs that publish
//! no SOAP SingleLogoutService are not contacted here and are reported as such. The web layer
//! (`web/slo.rs`) turns the result into a LogoutResponse for the initiating SP or the portal's signed-out
//! page. docs/slo.md explains the choices.
//!
//! SPs with only front-channel (HTTP-Redirect / HTTP-POST) endpoints are told afterwards through the
//! browser, by [`front`].
//!
//! Outbound HTTP goes only to SingleLogoutService locations from the SP's registered metadata.

pub mod front;

use std::time::Duration;

use chrono::Utc;
use openssl::pkey::{PKey, Public};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::idp::{fresh_id, Idp, SsoError};
use crate::saml::binding::soap::{soap_envelope, unwrap_soap, BINDING_SOAP, SOAP_ACTION};
use crate::saml::envelope::RequestContext;
use crate::saml::logout::{parse_logout_response, LogoutRequest, NameId, REASON_USER};
use crate::saml::response::NameIdFormat;
use crate::saml::status::{Status, StatusCode, SubStatusCode};
use crate::saml::xml;
use crate::saml::xmldsig::keys::public_keys_from_certs;
use crate::saml::xmldsig::sign::sign_enveloped;
use crate::saml::xmldsig::verify::VerifyPolicy;
use crate::session::{Session, SessionId, SpSession};

/// What became of one SP when a session was logged out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpLogoutResult {
    /// The SP answered the LogoutRequest with a verified `Success` LogoutResponse.
    SignedOut,
    /// The SP answered, but not with a verified Success (an error status, a SOAP fault, a bad or unsigned
    /// response, an HTTP error, a refused connection). The text is for the log only.
    Failed(String),
    /// The SP did not answer within `saml.slo_timeout_ms`.
    NoAnswer,
    /// The SP's metadata has no back-channel (SOAP) SingleLogoutService, so it was not contacted over
    /// the back channel ([`front`] then tells it through the browser when it has a front-channel one).
    NotSupported,
}

/// One SP of the ended session and what happened to it, for the LogoutResponse and the signed-out page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpLogout {
    /// The SP's entity ID.
    pub entity_id: String,
    /// The name the portal shows for it (the entity ID when the SP is no longer registered).
    pub display_name: String,
    /// What happened.
    pub result: SpLogoutResult,
}

impl SpLogout {
    /// True when the SP confirmed the logout.
    pub fn signed_out(&self) -> bool {
        self.result == SpLogoutResult::SignedOut
    }
}

/// The status for the initiator once its own session ended (saml-core 3.7.3.2): top-level Success, with
/// the second-level PartialLogout when any other participant did not confirm or could not be contacted.
pub fn initiator_status(others: &[SpLogout]) -> Status {
    if others.iter().all(SpLogout::signed_out) {
        Status::success()
    } else {
        Status::error(StatusCode::Success, SubStatusCode::PartialLogout)
    }
}

/// saml-core 3.7.3.2: the session participant a LogoutRequest from `issuer` names, if the request
/// matches this session: the same SP, the NameID issued to it (and its Format, when the request gives
/// one other than unspecified), and, when SessionIndexes are listed, the one issued to it (saml-core
/// 3.7.1: no SessionIndex means every session of the principal, and this is one of them).
pub fn find_participant<'a>(
    session: &'a Session,
    issuer: &str,
    name_id: &NameId,
    session_indexes: &[String],
) -> Option<&'a SpSession> {
    session.sp_sessions.iter().find(|sp| {
        sp.sp_entity_id == issuer
            && sp.name_id == name_id.value
            && name_id
                .format
                .as_deref()
                .is_none_or(|f| f == sp.name_id_format || f == NameIdFormat::Unspecified.uri())
            && (session_indexes.is_empty() || session_indexes.contains(&sp.session_index))
    })
}

/// Logs `session` out everywhere except at `initiator` (the SP whose LogoutRequest started it, which
/// ends its own session itself), then ends it in the store (saml-core 3.7.3.2, in that order). The store
/// failing is an error: then the session may still be live, and the caller must not report success.
pub async fn logout_session(
    idp: &Idp,
    id: &SessionId,
    session: &Session,
    initiator: Option<&str>,
) -> Result<Vec<SpLogout>, SsoError> {
    let others = propagate(idp, session, initiator).await;
    idp.sessions.delete(id).await?;
    for sp in &others {
        match &sp.result {
            SpLogoutResult::SignedOut => {}
            result => {
                tracing::warn!(user = %session.username, sp = %sp.entity_id, ?result, "SP not signed out")
            }
        }
    }
    tracing::info!(
        user = %session.username,
        initiator = ?initiator,
        confirmed = others.iter().filter(|s| s.signed_out()).count(),
        others = others.len(),
        "single logout"
    );
    Ok(others)
}

/// The entry recorded last for `sp_entity_id` in `session`: the NameID of the latest assertion to
/// that SP (entries are appended in SSO order; saml-profiles 4.4.4.1).
pub fn latest_participant<'a>(session: &'a Session, sp_entity_id: &str) -> Option<&'a SpSession> {
    session
        .sp_sessions
        .iter()
        .rev()
        .find(|p| p.sp_entity_id == sp_entity_id)
}

/// One LogoutRequest ready to go to one SP's SOAP endpoint.
struct Outbound {
    /// Where the report goes in the result list.
    slot: usize,
    entity_id: String,
    endpoint: String,
    request_id: String,
    soap_body: String,
    /// The SP's signing keys from its metadata: the only keys its LogoutResponse may verify with.
    keys: Vec<PKey<Public>>,
    allow_sha1: bool,
}

/// Sends a LogoutRequest to every SP of `session` but `initiator` that has a SOAP SingleLogoutService,
/// concurrently, and reports on each SP of the session but `initiator`, in the session's order.
pub async fn propagate(idp: &Idp, session: &Session, initiator: Option<&str>) -> Vec<SpLogout> {
    let mut reports: Vec<SpLogout> = Vec::new();
    let mut outbound = Vec::new();
    for participant in &session.sp_sessions {
        if Some(participant.sp_entity_id.as_str()) == initiator
            || reports
                .iter()
                .any(|r| r.entity_id == participant.sp_entity_id)
        {
            continue;
        }
        let slot = reports.len();
        // saml-profiles 4.4.4.1: the NameID must strongly match the one in the SP's latest
        // assertion. A transient NameID is new on every SSO, so an SP reached twice has several
        // entries (all with the one SessionIndex): the last one is the current.
        let participant =
            latest_participant(session, &participant.sp_entity_id).unwrap_or(participant);
        let mut report = SpLogout {
            entity_id: participant.sp_entity_id.clone(),
            display_name: participant.sp_entity_id.clone(),
            result: SpLogoutResult::NotSupported,
        };
        match prepare(idp, participant, slot).await {
            Ok((name, Some(request))) => {
                report.display_name = name;
                // Overwritten by the SP's task; kept only if that task dies without reporting.
                report.result = SpLogoutResult::Failed("no result recorded".into());
                outbound.push(request);
            }
            Ok((name, None)) => report.display_name = name,
            Err(problem) => report.result = SpLogoutResult::Failed(problem),
        }
        reports.push(report);
    }
    if outbound.is_empty() {
        return reports;
    }

    let timeout = Duration::from_millis(idp.config.saml.slo_timeout_ms);
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            for request in &outbound {
                reports[request.slot].result = SpLogoutResult::Failed(format!("HTTP client: {e}"));
            }
            return reports;
        }
    };
    let check = Check {
        our_slo_url: idp.config.slo_url(),
        clock_skew: chrono::Duration::seconds(idp.config.saml.clock_skew_secs),
        max_age: chrono::Duration::seconds(idp.config.saml.max_request_age_secs),
        max_bytes: idp.config.saml.max_message_bytes,
    };
    let mut tasks = JoinSet::new();
    for request in outbound {
        let client = client.clone();
        let check = check.clone();
        tasks.spawn(async move {
            let slot = request.slot;
            // Each SP gets the same deadline, counted from now; none waits for another.
            let result =
                match tokio::time::timeout(timeout, exchange(&client, &request, &check)).await {
                    Ok(Ok(())) => SpLogoutResult::SignedOut,
                    Ok(Err(Problem::Timeout)) | Err(_) => SpLogoutResult::NoAnswer,
                    Ok(Err(Problem::Other(text))) => SpLogoutResult::Failed(text),
                };
            (slot, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((slot, result)) => {
                if let Some(report) = reports.get_mut(slot) {
                    report.result = result;
                }
            }
            // A panicked task: its SP keeps the "no result" failure set when it was queued.
            Err(e) => tracing::error!(error = %e, "SLO task failed"),
        }
    }
    reports
}

/// The SP's display name and, when it has a SOAP SingleLogoutService, the signed LogoutRequest for it.
async fn prepare(
    idp: &Idp,
    participant: &SpSession,
    slot: usize,
) -> Result<(String, Option<Outbound>), String> {
    let sp = idp
        .sp(&participant.sp_entity_id)
        .await
        .map_err(|e| e.to_string())?;
    let name = sp.record.display_name.clone();
    // saml-profiles 4.4.3.3: the back channel is the SOAP binding; the endpoint comes from metadata.
    let Some(endpoint) = sp.metadata.slo_for_binding(BINDING_SOAP) else {
        return Ok((name, None));
    };
    let request = logout_request_for(idp, participant, &endpoint.location)?;
    let mut element = request.to_element();
    // saml-profiles 4.4.4.1: the LogoutRequest MUST be signed or otherwise authenticated; the SOAP
    // binding over plain TLS does not authenticate us to the SP, so it is signed.
    sign_enveloped(&mut element, &idp.keys.current).map_err(|e| e.to_string())?;
    Ok((
        name,
        Some(Outbound {
            slot,
            entity_id: participant.sp_entity_id.clone(),
            endpoint: endpoint.location.clone(),
            request_id: request.id,
            soap_body: soap_envelope(element),
            keys: public_keys_from_certs(&sp.metadata.signing_certs),
            allow_sha1: sp.record.settings.allow_sha1,
        }),
    ))
}

/// The (unsigned) LogoutRequest telling `participant`'s SP, at `destination` (its SingleLogoutService
/// from metadata), that the session ended.
fn logout_request_for(
    idp: &Idp,
    participant: &SpSession,
    destination: &str,
) -> Result<LogoutRequest, String> {
    let format = NameIdFormat::from_uri(&participant.name_id_format);
    Ok(LogoutRequest {
        id: fresh_id().map_err(|e| e.to_string())?,
        issue_instant: Utc::now(),
        issuer: idp.config.entity_id(),
        destination: Some(destination.to_owned()),
        // saml-core 3.7.1: the NameID exactly as issued to this SP (saml-core 8.3.7: persistent and
        // transient identifiers carry the SP they were issued for).
        name_id: NameId {
            value: participant.name_id.clone(),
            format: Some(participant.name_id_format.clone()),
            sp_name_qualifier: matches!(
                format,
                Some(NameIdFormat::Persistent | NameIdFormat::Transient)
            )
            .then(|| participant.sp_entity_id.clone()),
            name_qualifier: None,
        },
        session_indexes: vec![participant.session_index.clone()],
        not_on_or_after: None,
        reason: Some(REASON_USER.to_owned()),
    })
}

/// What a LogoutResponse is judged against.
#[derive(Clone)]
struct Check {
    /// Our SLO URL: the only Destination a response may name.
    our_slo_url: String,
    clock_skew: chrono::Duration,
    max_age: chrono::Duration,
    max_bytes: usize,
}

/// Why an exchange did not confirm the logout.
enum Problem {
    /// The HTTP client gave up (its own timeout, as a backstop to the task's).
    Timeout,
    /// Anything else, in words for the log.
    Other(String),
}

/// POSTs the SOAP LogoutRequest and checks the LogoutResponse: SOAP envelope, the SP as Issuer, its
/// signature with the SP's metadata keys, InResponseTo our request, top-level Success.
async fn exchange(
    client: &reqwest::Client,
    request: &Outbound,
    check: &Check,
) -> Result<(), Problem> {
    let other = |s: String| Problem::Other(s);
    let sent = client
        .post(&request.endpoint)
        // saml-bindings 3.2.3.1 / SOAP 1.1 6.1.1: text/xml, with the SAML SOAPAction (3.2.3.3).
        .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .header("SOAPAction", SOAP_ACTION)
        .body(request.soap_body.clone())
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(Problem::Timeout),
        Err(e) => return Err(other(format!("request: {e}"))),
    };
    let http_status = response.status();
    // Read at most max_bytes: a hostile SP cannot make us buffer without bound.
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > check.max_bytes {
                    return Err(other("response too large".into()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(Problem::Timeout),
            Err(e) => return Err(other(format!("reading the response: {e}"))),
        }
    }
    let limits = xml::Limits {
        max_bytes: check.max_bytes,
        ..xml::Limits::default()
    };
    // saml-bindings 3.2.3.2: a SOAP fault (HTTP 500) carries no SAML answer.
    let message = match unwrap_soap(&body, &limits) {
        Ok(m) => m,
        Err(e) if http_status.is_success() => return Err(other(e.to_string())),
        Err(e) => return Err(other(format!("HTTP {http_status}: {e}"))),
    };
    let destinations = [check.our_slo_url.clone()];
    let ctx = RequestContext {
        now: Utc::now(),
        max_clock_skew: check.clock_skew,
        max_age: check.max_age,
        destinations: &destinations,
        limits,
    };
    let unverified = parse_logout_response(&message, &ctx).map_err(|e| other(e.to_string()))?;
    // saml-profiles 4.4.4.2: the Issuer is the SP we asked.
    if unverified.issuer() != request.entity_id {
        return Err(other(format!(
            "LogoutResponse issued by {:?}",
            unverified.issuer()
        )));
    }
    // saml-profiles 4.4.4.2: signed, or authenticated by the binding: only TLS to the metadata URL
    // authenticates the SP here, so over plain http an unsigned response is refused.
    let require_signed = !request.endpoint.starts_with("https://");
    let policy = VerifyPolicy {
        allow_sha1: request.allow_sha1,
    };
    let verified = unverified
        .verify_soap(&request.keys, &policy, require_signed)
        .map_err(|e| other(e.to_string()))?;
    // saml-core 3.2.2: InResponseTo names the request this answers.
    if verified.in_response_to.as_deref() != Some(request.request_id.as_str()) {
        return Err(other(format!(
            "InResponseTo {:?}, expected {}",
            verified.in_response_to, request.request_id
        )));
    }
    if !verified.status.is_success() {
        return Err(other(format!("status {}", verified.status.codes())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn session() -> Session {
        let mut session = Session::new(
            1,
            "alice",
            Vec::new(),
            std::net::IpAddr::from([127, 0, 0, 1]),
            "test",
            0,
        );
        session.sp_sessions = vec![
            SpSession {
                sp_entity_id: "https://a.example".into(),
                session_index: "_sa".into(),
                name_id: "alice".into(),
                name_id_format: NameIdFormat::Unspecified.uri().into(),
            },
            SpSession {
                sp_entity_id: "https://b.example".into(),
                session_index: "_sb".into(),
                name_id: "opaque-b".into(),
                name_id_format: NameIdFormat::Persistent.uri().into(),
            },
        ];
        session
    }

    fn name_id(value: &str, format: Option<&str>) -> NameId {
        NameId {
            value: value.into(),
            format: format.map(str::to_owned),
            sp_name_qualifier: None,
            name_qualifier: None,
        }
    }

    #[test]
    fn participant_must_match_sp_name_id_and_session_index() {
        let s = session();
        let persistent = Some(NameIdFormat::Persistent.uri());
        let b = "https://b.example";
        assert!(
            find_participant(&s, b, &name_id("opaque-b", persistent), &["_sb".into()]).is_some()
        );
        // saml-core 3.7.1: no SessionIndex names every session of the principal, this one included.
        assert!(find_participant(&s, b, &name_id("opaque-b", None), &[]).is_some());
        assert!(
            find_participant(&s, b, &name_id("opaque-b", persistent), &["_sa".into()]).is_none()
        );
        // The NameID issued to another SP, or another Format, names nobody here.
        assert!(find_participant(&s, b, &name_id("alice", None), &[]).is_none());
        let transient = Some(NameIdFormat::Transient.uri());
        assert!(find_participant(&s, b, &name_id("opaque-b", transient), &[]).is_none());
        assert!(find_participant(&s, "https://c.example", &name_id("alice", None), &[]).is_none());
    }

    #[test]
    fn initiator_hears_partial_logout_unless_everyone_confirmed() {
        let sp = |result| SpLogout {
            entity_id: "https://a.example".into(),
            display_name: "A".into(),
            result,
        };
        assert_eq!(initiator_status(&[]), Status::success());
        assert_eq!(
            initiator_status(&[sp(SpLogoutResult::SignedOut)]),
            Status::success()
        );
        for other in [
            SpLogoutResult::NoAnswer,
            SpLogoutResult::NotSupported,
            SpLogoutResult::Failed("x".into()),
        ] {
            let status = initiator_status(&[sp(SpLogoutResult::SignedOut), sp(other)]);
            assert_eq!(status.top, StatusCode::Success);
            assert_eq!(status.second, Some(SubStatusCode::PartialLogout));
        }
    }
}
