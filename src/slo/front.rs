//! Front-channel logout propagation (saml-profiles 4.4.3.3, saml-bindings 3.4 / 3.5): the SPs of an
//! ended session that publish only HTTP-Redirect / HTTP-POST SingleLogoutService endpoints are told
//! through the person's browser, one hidden iframe each, all at once.
//!
//! The state of one such round is a [`Transaction`] kept in the session store under an unguessable
//! handle (the iframes are cross-site, so `SameSite=Lax` cookies do not come with them: the handle in
//! the URL carries the state). Each SP's verified answer is stored under its own key, so answers
//! arriving at the same time on different nodes never overwrite each other. [`finish`] is single-use
//! and turns the round into the final reports: an SP that did not answer by then counts as
//! [`SpLogoutResult::NoAnswer`]. The session itself was ended before the round started, so an SP that
//! hangs can never keep it alive. The web layer (`web/slo_front.rs`) renders the pages; docs/slo.md
//! explains the design.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{logout_request_for, SpLogout, SpLogoutResult};
use crate::idp::{Idp, SsoError};
use crate::saml::binding::RedirectSignature;
use crate::saml::logout::UnverifiedLogoutResponse;
use crate::saml::metadata::{BINDING_HTTP_POST, BINDING_HTTP_REDIRECT};
use crate::saml::xmldsig::keys::public_keys_from_certs;
use crate::saml::xmldsig::sign::sign_enveloped;
use crate::saml::xmldsig::verify::VerifyPolicy;
use crate::session::Session;

/// Session-store namespace of [`Transaction`]s, keyed by handle.
const TRANSACTION_NAMESPACE: &str = "slo-front";
/// Session-store namespace of one SP's recorded result, keyed by `<handle>.<n>`.
const RESULT_NAMESPACE: &str = "slo-front-result";
/// Session-store namespace mapping a LogoutRequest ID we sent to `<handle>.<n>`.
const REQUEST_NAMESPACE: &str = "slo-front-request";
/// One-time markers: the finish step and each SP's first verified answer.
const ONCE_NAMESPACE: &str = "slo-front-once";

/// How long a transaction outlives its deadline: time for the page to reach the finish step.
const GRACE: Duration = Duration::from_secs(120);

/// The SP whose LogoutRequest started the logout, to be answered when the round is over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initiator {
    /// The initiating SP (the verified Issuer of its request).
    pub sp_entity_id: String,
    /// Its request ID, answered by InResponseTo.
    pub request_id: String,
    /// Returned verbatim (saml-bindings 3.4.3, 3.5.3).
    pub relay_state: Option<String>,
    /// The binding its request came by, which the answer prefers.
    pub binding: String,
}

/// One LogoutRequest to be delivered through the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontRequest {
    /// Index of this SP in [`Transaction::reports`].
    pub slot: usize,
    /// The SP's entity ID: the only Issuer its LogoutResponse may name (saml-profiles 4.4.4.2).
    pub entity_id: String,
    /// The request's ID: the only InResponseTo its LogoutResponse may name (saml-core 3.2.2).
    pub request_id: String,
    /// The SP's SingleLogoutService Location from its registered metadata.
    pub location: String,
    /// HTTP-Redirect or HTTP-POST: how the iframe delivers the request.
    pub binding: String,
    /// The LogoutRequest: with its enveloped signature for HTTP-POST; unsigned for HTTP-Redirect,
    /// whose query-string signature is added when the iframe asks for it.
    pub request_xml: String,
}

/// One front-channel round, kept in the session store under its handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Who hears the outcome: an SP, or the portal's signed-out page when None.
    pub initiator: Option<Initiator>,
    /// Every other SP of the session, with the back channel's results; front-channel SPs are
    /// [`SpLogoutResult::NotSupported`] until [`finish`] fills in theirs.
    pub reports: Vec<SpLogout>,
    /// The requests the iframes deliver.
    pub front: Vec<FrontRequest>,
    /// After this instant (unix milliseconds) nobody waits for the SPs any more
    /// (`saml.slo_timeout_ms` from the start).
    pub deadline_ms: i64,
    /// For the log.
    pub username: String,
}

impl Transaction {
    /// How long the transaction and its records are kept.
    fn ttl(&self) -> Duration {
        let left = self
            .deadline_ms
            .saturating_sub(Utc::now().timestamp_millis());
        Duration::from_millis(u64::try_from(left).unwrap_or(0)) + GRACE
    }

    /// The deadline as an instant.
    pub fn deadline(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.deadline_ms).unwrap_or_else(Utc::now)
    }
}

/// What the browser round produced for the page: each front SP answered or not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// SPs whose verified answer was recorded.
    pub answered: usize,
    /// SPs of the round.
    pub total: usize,
    /// Every SP answered, or the deadline passed: the page may go to the finish step.
    pub done: bool,
}

/// The LogoutRequests for the SPs among `reports` that have no back channel but a front-channel
/// SingleLogoutService (HTTP-Redirect preferred: the request then travels in the URL, with no form
/// and no script in the SP's frame; else HTTP-POST). Endpoints come from registered metadata only.
pub async fn plan(idp: &Idp, session: &Session, reports: &[SpLogout]) -> Vec<FrontRequest> {
    let mut front = Vec::new();
    let ttl = Duration::from_millis(idp.config.saml.slo_timeout_ms) + GRACE;
    for (slot, report) in reports.iter().enumerate() {
        if report.result != SpLogoutResult::NotSupported {
            continue;
        }
        // saml-profiles 4.4.4.1: the NameID of the latest assertion to this SP.
        let Some(participant) = super::latest_participant(session, &report.entity_id) else {
            continue;
        };
        let Ok(sp) = idp.sp(&report.entity_id).await else {
            continue;
        };
        let Some(endpoint) = sp
            .metadata
            .slo_for_binding(BINDING_HTTP_REDIRECT)
            .or_else(|| sp.metadata.slo_for_binding(BINDING_HTTP_POST))
        else {
            continue;
        };
        let mut request = match logout_request_for(idp, participant, &endpoint.location) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(sp = %report.entity_id, error = %e, "front-channel LogoutRequest");
                continue;
            }
        };
        // saml-core 3.7.1: an iframe loaded after the round is over must not end anything.
        request.not_on_or_after = chrono::Duration::from_std(ttl)
            .ok()
            .map(|ttl| Utc::now() + ttl);
        let mut element = request.to_element();
        // saml-profiles 4.4.4.1: the LogoutRequest MUST be signed. HTTP-POST carries the signature in
        // the XML (saml-bindings 3.5.4); HTTP-Redirect over the query string, added when the iframe
        // asks for it (saml-bindings 3.4.4.1), so the XML itself stays unsigned.
        if endpoint.binding == BINDING_HTTP_POST {
            if let Err(e) = sign_enveloped(&mut element, &idp.keys.current) {
                tracing::error!(sp = %report.entity_id, error = %e, "signing a LogoutRequest");
                continue;
            }
        }
        front.push(FrontRequest {
            slot,
            entity_id: report.entity_id.clone(),
            request_id: request.id.clone(),
            location: endpoint.location.clone(),
            binding: endpoint.binding.clone(),
            request_xml: element.to_xml(),
        });
    }
    front
}

/// Whether `handle` looks like one [`begin`] made (32 hex digits): anything else is not looked up.
pub fn well_formed_handle(handle: &str) -> bool {
    handle.len() == 32 && handle.bytes().all(|b| b.is_ascii_hexdigit())
}

fn store_error(e: crate::session::Error) -> SsoError {
    e.into()
}

fn build_error(e: impl std::fmt::Display) -> SsoError {
    SsoError::Build(e.to_string())
}

/// Stores `tx` under a fresh random handle (128 bits) and returns the handle.
pub async fn begin(idp: &Idp, tx: &Transaction) -> Result<String, SsoError> {
    let mut raw = [0u8; 16];
    openssl::rand::rand_bytes(&mut raw).map_err(build_error)?;
    let handle = hex::encode(raw);
    let ttl = tx.ttl();
    let value = serde_json::to_string(tx).map_err(build_error)?;
    for (n, request) in tx.front.iter().enumerate() {
        idp.sessions
            .put_temp(
                REQUEST_NAMESPACE,
                &request.request_id,
                &format!("{handle}.{n}"),
                ttl,
            )
            .await
            .map_err(store_error)?;
    }
    idp.sessions
        .put_temp(TRANSACTION_NAMESPACE, &handle, &value, ttl)
        .await
        .map_err(store_error)?;
    Ok(handle)
}

/// The transaction under `handle`, if it exists and was not finished.
pub async fn load(idp: &Idp, handle: &str) -> Result<Option<Transaction>, SsoError> {
    if !well_formed_handle(handle) {
        return Ok(None);
    }
    let value = idp
        .sessions
        .get_temp(TRANSACTION_NAMESPACE, handle)
        .await
        .map_err(store_error)?;
    Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
}

/// The recorded result of each front SP of `tx`, in order; None where nothing verified arrived yet.
async fn results(
    idp: &Idp,
    handle: &str,
    tx: &Transaction,
) -> Result<Vec<Option<SpLogoutResult>>, SsoError> {
    let mut out = Vec::with_capacity(tx.front.len());
    for n in 0..tx.front.len() {
        let value = idp
            .sessions
            .get_temp(RESULT_NAMESPACE, &format!("{handle}.{n}"))
            .await
            .map_err(store_error)?;
        out.push(value.and_then(|v| serde_json::from_str(&v).ok()));
    }
    Ok(out)
}

/// How far the round under `handle` got; None when there is no such (unfinished) round.
pub async fn progress(idp: &Idp, handle: &str) -> Result<Option<Progress>, SsoError> {
    let Some(tx) = load(idp, handle).await? else {
        return Ok(None);
    };
    let results = results(idp, handle, &tx).await?;
    let answered = results.iter().filter(|r| r.is_some()).count();
    Ok(Some(Progress {
        answered,
        total: tx.front.len(),
        done: answered == tx.front.len() || Utc::now() >= tx.deadline(),
    }))
}

/// Ends the round under `handle`, once: the transaction with every SP's final result (no verified
/// answer by now is [`SpLogoutResult::NoAnswer`]). None when the handle is unknown, expired or was
/// finished already. Answers arriving later find no transaction and count for nothing.
pub async fn finish(idp: &Idp, handle: &str) -> Result<Option<Transaction>, SsoError> {
    let Some(mut tx) = load(idp, handle).await? else {
        return Ok(None);
    };
    // Single use across nodes: only the first caller gets the outcome.
    if !idp
        .sessions
        .remember_once(ONCE_NAMESPACE, &format!("finish.{handle}"), tx.ttl())
        .await
        .map_err(store_error)?
    {
        return Ok(None);
    }
    let results = results(idp, handle, &tx).await?;
    idp.sessions
        .delete_temp(TRANSACTION_NAMESPACE, handle)
        .await
        .map_err(store_error)?;
    for (n, request) in tx.front.iter().enumerate() {
        // Best effort: these expire with the transaction anyway.
        let _ = idp
            .sessions
            .delete_temp(REQUEST_NAMESPACE, &request.request_id)
            .await;
        let _ = idp
            .sessions
            .delete_temp(RESULT_NAMESPACE, &format!("{handle}.{n}"))
            .await;
    }
    for (request, result) in tx.front.iter().zip(results) {
        let result = result.unwrap_or(SpLogoutResult::NoAnswer);
        if result != SpLogoutResult::SignedOut {
            tracing::warn!(user = %tx.username, sp = %request.entity_id, ?result, "SP not signed out (front channel)");
        }
        if let Some(report) = tx.reports.get_mut(request.slot) {
            report.result = result;
        }
    }
    tracing::info!(
        user = %tx.username,
        initiator = ?tx.initiator.as_ref().map(|i| i.sp_entity_id.as_str()),
        confirmed = tx.reports.iter().filter(|s| s.signed_out()).count(),
        others = tx.reports.len(),
        "single logout (front channel) finished"
    );
    Ok(Some(tx))
}

/// A LogoutResponse to one of our front-channel requests, as it arrived at `/saml/slo`.
pub struct FrontAnswer<'a> {
    /// Parsed (envelope checks passed: Destination is our SLO URL, IssueInstant in the window).
    pub response: UnverifiedLogoutResponse,
    /// HTTP-Redirect or HTTP-POST.
    pub binding: &'a str,
    /// The query-string signature (HTTP-Redirect only).
    pub signature: Option<&'a RedirectSignature>,
}

/// What became of a front-channel LogoutResponse, for the page in the SP's iframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The SP's display name.
    pub display_name: String,
    /// True when it confirmed (verified, top-level Success).
    pub signed_out: bool,
}

/// Checks a LogoutResponse to a request of a running round and records its result (the first
/// verified answer per SP counts). Errors are words for the log: the message is not from the SP we
/// asked, or answers nothing we are waiting for, and counts for nothing.
pub async fn record(idp: &Idp, answer: FrontAnswer<'_>) -> Result<Recorded, String> {
    let response = answer.response;
    // saml-core 3.2.2: InResponseTo names a request we sent; nothing else is accepted here.
    let Some(in_response_to) = response.peek_for_logging().in_response_to.clone() else {
        return Err("LogoutResponse without InResponseTo".into());
    };
    let slot = idp
        .sessions
        .get_temp(REQUEST_NAMESPACE, &in_response_to)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("InResponseTo {in_response_to:?} answers no running logout"))?;
    let (handle, n) = slot
        .split_once('.')
        .ok_or_else(|| "bad request record".to_owned())?;
    let n: usize = n.parse().map_err(|_| "bad request record".to_owned())?;
    let tx = load(idp, handle)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the logout round is over".to_owned())?;
    let request = tx
        .front
        .get(n)
        .filter(|r| r.request_id == in_response_to)
        .ok_or_else(|| "InResponseTo does not match the round".to_owned())?;
    // saml-profiles 4.4.4.2: the Issuer is the SP we asked.
    if response.issuer() != request.entity_id {
        return Err(format!(
            "LogoutResponse for {} issued by {:?}",
            request.entity_id,
            response.issuer()
        ));
    }
    let sp = idp
        .sp(&request.entity_id)
        .await
        .map_err(|e| e.to_string())?;
    let keys = public_keys_from_certs(&sp.metadata.signing_certs);
    let allow_sha1 = sp.record.settings.allow_sha1;
    // saml-profiles 4.4.4.2: the LogoutResponse MUST be signed or otherwise authenticated; the browser
    // bindings authenticate nothing, so the signature is required: over the query string for
    // Redirect (saml-bindings 3.4.4.1), inside the XML for POST (saml-bindings 3.5.4).
    let verified = if answer.binding == BINDING_HTTP_REDIRECT {
        response.verify_redirect(answer.signature, &keys, allow_sha1, true)
    } else {
        response.verify_post(&keys, &VerifyPolicy { allow_sha1 }, true)
    }
    .map_err(|e| e.to_string())?;
    let result = if verified.status.is_success() {
        SpLogoutResult::SignedOut
    } else {
        SpLogoutResult::Failed(format!("status {}", verified.status.codes()))
    };
    let key = format!("{handle}.{n}");
    let ttl = tx.ttl();
    // The first verified answer counts; a replayed or second one changes nothing.
    if idp
        .sessions
        .remember_once(ONCE_NAMESPACE, &format!("answer.{key}"), ttl)
        .await
        .map_err(|e| e.to_string())?
    {
        let value = serde_json::to_string(&result).map_err(|e| e.to_string())?;
        idp.sessions
            .put_temp(RESULT_NAMESPACE, &key, &value, ttl)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(Recorded {
        display_name: sp.record.display_name.clone(),
        signed_out: result == SpLogoutResult::SignedOut,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn handles_are_32_hex_digits() {
        assert!(well_formed_handle(&"a1".repeat(16)));
        assert!(!well_formed_handle(&"a1".repeat(15)));
        assert!(!well_formed_handle(&format!("{}.0", "a1".repeat(16))));
        assert!(!well_formed_handle(&"zz".repeat(16)));
    }

    #[test]
    fn transaction_round_trips_through_json() {
        let tx = Transaction {
            initiator: Some(Initiator {
                sp_entity_id: "https://a.example".into(),
                request_id: "_r".into(),
                relay_state: None,
                binding: BINDING_HTTP_REDIRECT.into(),
            }),
            reports: vec![SpLogout {
                entity_id: "https://b.example".into(),
                display_name: "B".into(),
                result: SpLogoutResult::NotSupported,
            }],
            front: vec![FrontRequest {
                slot: 0,
                entity_id: "https://b.example".into(),
                request_id: "_q".into(),
                location: "https://b.example/slo".into(),
                binding: BINDING_HTTP_REDIRECT.into(),
                request_xml: "<x/>".into(),
            }],
            deadline_ms: Utc::now().timestamp_millis(),
            username: "alice".into(),
        };
        let json = serde_json::to_string(&tx).unwrap();
        assert_eq!(serde_json::from_str::<Transaction>(&json).unwrap(), tx);
        assert!(tx.ttl() >= GRACE - Duration::from_secs(1));
    }
}
