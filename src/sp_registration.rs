//! Registering service providers from their metadata, and keeping metadata fetched from a URL fresh.
//!
//! Metadata reaches Tessera three ways: as a document (an upload: `tessera sp add FILE`, the admin
//! API), from the `metadata/` folder at start (`idp::register_metadata_dir`), or from a URL. A URL is
//! fetched with a timeout and a size limit counted while the body streams in, and only over https
//! unless the host is the loopback or a pinned certificate protects the content. When a certificate is
//! pinned, the metadata must carry a valid enveloped signature by it (saml-metadata 3.1) and is read
//! from the very tree that was verified; expired metadata is refused (`validUntil`, saml-metadata
//! 2.3.1, 2.3.2).
//!
//! A refresh that fails changes nothing but the record of why ([`crate::directory::RefreshStatus`]):
//! the last good metadata stays in use. A refresh that succeeds replaces the stored metadata; `Idp::sp`
//! re-reads an SP whenever its record changed, so new SP certificates (a key rollover) apply at the
//! next request on every node, without a restart.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use openssl::x509::X509;

use crate::config::SpMetadataConfig;
use crate::directory::{
    self, Directory, MetadataSource, NewServiceProvider, ServiceProvider, SpSettings,
};
use crate::saml::metadata::{
    parse_signed_sp_metadata, parse_sp_metadata, MetadataError, SpMetadata,
};

/// Redirects followed when fetching metadata.
const MAX_REDIRECTS: usize = 5;

/// How a metadata fetch is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// The whole fetch (connect, headers, body) must finish within this.
    pub timeout: Duration,
    /// Largest body accepted, counted while it arrives: a hostile server cannot make us buffer more.
    pub max_bytes: usize,
}

impl Default for FetchLimits {
    /// The `[sp_metadata]` defaults: 10 seconds, 1 MiB.
    fn default() -> Self {
        Self::from_config(&SpMetadataConfig::default())
    }
}

impl FetchLimits {
    /// The limits configured in `[sp_metadata]`.
    pub fn from_config(config: &SpMetadataConfig) -> Self {
        Self {
            timeout: Duration::from_secs(config.fetch_timeout_secs),
            max_bytes: config.max_bytes,
        }
    }
}

/// Why metadata could not be fetched, trusted or registered. Every message names the URL or entity.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The URL is not one Tessera fetches from.
    #[error("metadata URL {url}: {problem}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No complete answer within the timeout.
    #[error("fetching {url}: no complete answer within {secs} s")]
    Timeout {
        /// The URL fetched.
        url: String,
        /// The timeout that expired.
        secs: u64,
    },
    /// The body (or its announced length) is over the limit.
    #[error("fetching {url}: metadata larger than {limit} bytes")]
    TooLarge {
        /// The URL fetched.
        url: String,
        /// The limit exceeded.
        limit: usize,
    },
    /// The server answered with a status other than 2xx.
    #[error("fetching {url}: HTTP status {status}")]
    Status {
        /// The URL fetched.
        url: String,
        /// The status received.
        status: u16,
    },
    /// Connection, TLS or protocol failure.
    #[error("fetching {url}: {message}")]
    Fetch {
        /// The URL fetched.
        url: String,
        /// What the HTTP client reported.
        message: String,
    },
    /// The document is not UTF-8 text.
    #[error("metadata is not UTF-8")]
    NotUtf8,
    /// The metadata does not parse, is expired, or its signature does not verify against the pin.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The pinned certificate is not a PEM certificate.
    #[error("pinned certificate is not a PEM certificate")]
    PinnedCertificate,
    /// The refreshed metadata no longer describes the SP.
    #[error("entity `{0}` is not in the fetched metadata")]
    EntityMissing(String),
    /// A refresh was asked for an SP that has no metadata URL.
    #[error("service provider `{0}` was not registered from a URL")]
    NoSource(String),
    /// The directory refused or failed.
    #[error(transparent)]
    Directory(#[from] directory::Error),
}

/// What a successful refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The fetched metadata differed and replaced the stored one.
    Replaced,
    /// The fetched metadata was the stored one.
    Unchanged,
}

/// An SP to register from a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlRegistration {
    /// The http(s) URL of the metadata.
    pub url: String,
    /// Name shown on the portal; default the entityID.
    pub display_name: Option<String>,
    /// Portal logo (an https URL).
    pub logo_url: Option<String>,
    /// PEM certificate the metadata must be signed with.
    pub pinned_cert: Option<String>,
    /// Seconds between scheduled refreshes; `None`: refreshed only on request.
    pub refresh_secs: Option<i64>,
}

/// Whether the URL's host is this machine, where plain http cannot be intercepted on the network.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether the URL's host is an address inside the network rather than on the internet: loopback,
/// private (RFC 1918, IPv6 unique local), link-local, shared (RFC 6598), unspecified or broadcast.
/// Only literal addresses (and `localhost`) are recognised; a name is not resolved here.
fn is_internal(url: &url::Url) -> bool {
    let v4 = |ip: std::net::Ipv4Addr| {
        ip.is_loopback()
            || ip.is_private()
            || ip.is_link_local()
            || ip.is_unspecified()
            || ip.is_broadcast()
            || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64)
    };
    match url.host() {
        Some(url::Host::Ipv4(ip)) => v4(ip),
        Some(url::Host::Ipv6(ip)) => match IpAddr::V6(ip).to_canonical() {
            IpAddr::V4(mapped) => v4(mapped),
            IpAddr::V6(ip) => {
                let first = ip.segments()[0];
                ip.is_loopback()
                    || ip.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
        },
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => false,
    }
}

/// The redirect rule on top of [`transport_allowed`]: a document asked for outside this machine may
/// not send the fetch to this machine or into the private network (a registration URL must not be a
/// way to make Tessera request internal services).
fn redirect_allowed(from: &url::Url, to: &url::Url, pinned: bool) -> Result<(), String> {
    transport_allowed(to, pinned)?;
    if !is_loopback(from) && is_internal(to) {
        return Err("a redirect from outside may not lead to a loopback or private address".into());
    }
    Ok(())
}

/// Parses the pinned certificate, if any, before anything is fetched: only a real certificate (whose
/// signature will then be required) may unlock plain http. Returns whether there is a pin.
fn pin_present(pinned_cert: Option<&str>) -> Result<bool, RegistrationError> {
    match pinned_cert {
        Some(pem) => {
            X509::from_pem(pem.as_bytes()).map_err(|_| RegistrationError::PinnedCertificate)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The fetch rule: https always; http only to the loopback or when a pinned signature protects the
/// content (then the transport adds nothing the signature does not already give).
fn transport_allowed(url: &url::Url, pinned: bool) -> Result<(), String> {
    if url.host_str().is_none() {
        return Err("has no host".to_owned());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if pinned || is_loopback(url) => Ok(()),
        "http" => Err(
            "plain http is only fetched from the loopback or with a pinned signing certificate; \
             use https"
                .to_owned(),
        ),
        other => Err(format!("scheme `{other}` is not fetched; use https")),
    }
}

/// Fetches a metadata document. `pinned` says whether its signature will be checked against a pinned
/// certificate (which allows plain http). Redirects are followed under the same rule, at most
/// [`MAX_REDIRECTS`].
pub async fn fetch_metadata(
    url: &str,
    pinned: bool,
    limits: &FetchLimits,
) -> Result<String, RegistrationError> {
    let bad = |problem: String| RegistrationError::BadUrl {
        url: url.to_owned(),
        problem,
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    transport_allowed(&parsed, pinned).map_err(bad)?;
    let origin = parsed.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match redirect_allowed(&origin, attempt.url(), pinned) {
            Ok(()) => attempt.follow(),
            Err(problem) => {
                let message = format!("redirected to {}: {problem}", attempt.url());
                attempt.error(message)
            }
        }
    });
    let fetch_error = |e: reqwest::Error| {
        if e.is_timeout() {
            RegistrationError::Timeout {
                url: url.to_owned(),
                secs: limits.timeout.as_secs(),
            }
        } else {
            RegistrationError::Fetch {
                url: url.to_owned(),
                message: error_chain(&e),
            }
        }
    };
    let client = reqwest::Client::builder()
        .timeout(limits.timeout)
        .redirect(redirects)
        .build()
        .map_err(fetch_error)?;
    let mut response = client.get(parsed).send().await.map_err(fetch_error)?;
    if !response.status().is_success() {
        return Err(RegistrationError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let too_large = || RegistrationError::TooLarge {
        url: url.to_owned(),
        limit: limits.max_bytes,
    };
    // An announced length over the limit is refused before reading; the count below holds either way
    // (the header may be absent or wrong).
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_bytes as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
        if body.len() + chunk.len() > limits.max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| RegistrationError::NotUtf8)
}

/// The error and its sources in one line (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Reads the SPs in `xml`; with a pinned certificate (PEM), only when the document carries a valid
/// enveloped signature by it (saml-metadata 3.1), reading the verified tree. Expired metadata is
/// refused either way (saml-metadata 2.3.1, 2.3.2 validUntil).
pub fn check_metadata(
    xml: &str,
    pinned_cert: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<SpMetadata>, RegistrationError> {
    match pinned_cert {
        Some(pem) => {
            let cert =
                X509::from_pem(pem.as_bytes()).map_err(|_| RegistrationError::PinnedCertificate)?;
            Ok(parse_signed_sp_metadata(xml.as_bytes(), now, &cert)?)
        }
        None => Ok(parse_sp_metadata(xml.as_bytes(), now)?),
    }
}

/// Registers every SP in an uploaded metadata document with default settings (the entityID as
/// display name unless `display_name` is given). Nothing is registered when the document is refused;
/// an SP already registered stops the registration with [`directory::Error::DuplicateEntityId`].
pub async fn register_from_xml(
    directory: &Directory,
    xml: &str,
    display_name: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<ServiceProvider>, RegistrationError> {
    let entities = check_metadata(xml, None, now)?;
    let mut out = Vec::new();
    for entity in entities {
        out.push(
            directory
                .add_sp(NewServiceProvider {
                    display_name: display_name.unwrap_or(&entity.entity_id).to_owned(),
                    entity_id: entity.entity_id,
                    metadata_xml: xml.to_owned(),
                    settings: SpSettings::default(),
                })
                .await?,
        );
    }
    Ok(out)
}

/// Fetches `registration.url`, checks the metadata (against the pinned certificate when there is
/// one) and registers every SP in it with default settings, remembering the URL so it can be
/// refreshed.
pub async fn register_from_url(
    directory: &Directory,
    registration: &UrlRegistration,
    limits: &FetchLimits,
    now: DateTime<Utc>,
) -> Result<Vec<ServiceProvider>, RegistrationError> {
    let source = MetadataSource {
        url: registration.url.clone(),
        pinned_cert: registration.pinned_cert.clone(),
        refresh_secs: registration.refresh_secs,
    };
    // The source is checked before anything is fetched: a bad URL, pin or interval is not worth a
    // request.
    let parsed = url::Url::parse(&source.url).map_err(|e| RegistrationError::BadUrl {
        url: source.url.clone(),
        problem: e.to_string(),
    })?;
    let pinned = pin_present(source.pinned_cert.as_deref())?;
    transport_allowed(&parsed, pinned).map_err(|problem| RegistrationError::BadUrl {
        url: source.url.clone(),
        problem,
    })?;
    directory::SpProfile {
        display_name: registration
            .display_name
            .clone()
            .unwrap_or_else(|| "-".to_owned()),
        logo_url: registration.logo_url.clone(),
        settings: SpSettings::default(),
        source: Some(source.clone()),
    }
    .validate()?;
    let xml = fetch_metadata(&source.url, pinned, limits).await?;
    let entities = check_metadata(&xml, source.pinned_cert.as_deref(), now)?;
    let mut out = Vec::new();
    for entity in entities {
        let entity_id = entity.entity_id;
        directory
            .add_sp_with(
                NewServiceProvider {
                    display_name: registration
                        .display_name
                        .clone()
                        .unwrap_or_else(|| entity_id.clone()),
                    entity_id: entity_id.clone(),
                    metadata_xml: xml.clone(),
                    settings: SpSettings::default(),
                },
                registration.logo_url.clone(),
                Some(source.clone()),
            )
            .await?;
        directory
            .record_refresh_success(&entity_id, &xml, now.timestamp())
            .await?;
        if let Some(sp) = directory.get_sp(&entity_id).await? {
            out.push(sp);
        }
    }
    Ok(out)
}

/// Applies an edited profile (name, logo, settings, metadata source) to a registered SP, all of it or
/// nothing. When the source changes (another URL or another pinned certificate), the metadata is
/// fetched and checked first and stored with the rest, so a wrong pin or an unreachable URL leaves the
/// SP as it was. Encryption can only be turned on for metadata that offers an encryption key.
pub async fn update_sp(
    directory: &Directory,
    entity_id: &str,
    profile: &directory::SpProfile,
    limits: &FetchLimits,
    now: DateTime<Utc>,
) -> Result<ServiceProvider, RegistrationError> {
    profile.validate()?;
    let current = directory
        .get_sp(entity_id)
        .await?
        .ok_or_else(|| not_found(entity_id))?;
    let fetched = match &profile.source {
        Some(source) => {
            let changed = current
                .source
                .as_ref()
                .is_none_or(|old| old.url != source.url || old.pinned_cert != source.pinned_cert);
            if changed {
                Some(fetch_checked(entity_id, source, limits, now).await?)
            } else {
                None
            }
        }
        None => None,
    };
    if profile.settings.encrypt_assertion {
        let xml = fetched.as_deref().unwrap_or(&current.metadata_xml);
        let offers_key = check_metadata(xml, None, now)?
            .iter()
            .any(|m| m.entity_id == entity_id && !m.encryption_certs.is_empty());
        if !offers_key {
            return Err(directory::Error::InvalidSettings(
                "encryption needs an encryption (or unqualified) KeyDescriptor in the SP's metadata"
                    .to_owned(),
            )
            .into());
        }
    }
    let updated = directory
        .update_sp_profile(entity_id, profile, fetched.as_deref())
        .await?;
    if let Some(xml) = &fetched {
        directory
            .record_refresh_success(entity_id, xml, now.timestamp())
            .await?;
        return directory
            .get_sp(entity_id)
            .await?
            .ok_or_else(|| not_found(entity_id).into());
    }
    Ok(updated)
}

fn not_found(entity_id: &str) -> directory::Error {
    directory::Error::NotFound {
        kind: directory::EntryKind::ServiceProvider,
        name: entity_id.to_owned(),
    }
}

/// Fetches and checks the metadata of a registered SP from `source`, returning the document when it
/// still describes `entity_id`.
pub async fn fetch_checked(
    entity_id: &str,
    source: &MetadataSource,
    limits: &FetchLimits,
    now: DateTime<Utc>,
) -> Result<String, RegistrationError> {
    let pinned = pin_present(source.pinned_cert.as_deref())?;
    let xml = fetch_metadata(&source.url, pinned, limits).await?;
    let entities = check_metadata(&xml, source.pinned_cert.as_deref(), now)?;
    if !entities.iter().any(|e| e.entity_id == entity_id) {
        return Err(RegistrationError::EntityMissing(entity_id.to_owned()));
    }
    Ok(xml)
}

/// Refreshes one SP's metadata from its URL. On success the stored metadata is replaced (when it
/// changed) and the last error cleared; on failure the last good metadata stays and the reason is
/// recorded and logged. Errors: [`RegistrationError::NoSource`], not-found from the directory, and
/// every fetch or check failure.
pub async fn refresh_sp(
    directory: &Directory,
    entity_id: &str,
    limits: &FetchLimits,
    now: DateTime<Utc>,
) -> Result<RefreshOutcome, RegistrationError> {
    let sp = directory
        .get_sp(entity_id)
        .await?
        .ok_or_else(|| not_found(entity_id))?;
    let source = sp
        .source
        .as_ref()
        .ok_or_else(|| RegistrationError::NoSource(entity_id.to_owned()))?;
    match fetch_checked(entity_id, source, limits, now).await {
        Ok(xml) => {
            let outcome = if xml == sp.metadata_xml {
                RefreshOutcome::Unchanged
            } else {
                RefreshOutcome::Replaced
            };
            directory
                .record_refresh_success(entity_id, &xml, now.timestamp())
                .await?;
            tracing::info!(entity_id, url = %source.url, ?outcome, "SP metadata refreshed");
            Ok(outcome)
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(
                entity_id,
                url = %source.url,
                error = %reason,
                "SP metadata refresh failed; keeping the last good metadata"
            );
            directory
                .record_refresh_failure(entity_id, &reason, now.timestamp())
                .await?;
            Err(e)
        }
    }
}

/// Whether the SP's refresh interval has elapsed at `now` (counted from the last attempt).
pub fn refresh_due(sp: &ServiceProvider, now: DateTime<Utc>) -> bool {
    let Some(secs) = sp.source.as_ref().and_then(|s| s.refresh_secs) else {
        return false;
    };
    sp.refresh
        .last_attempt_at
        .is_none_or(|at| at.saturating_add(secs) <= now.timestamp())
}

/// Refreshes every SP whose interval has elapsed, one after the other; returns what happened to each.
/// Errors of single SPs are in the list (and recorded on them); only a directory that cannot list SPs
/// fails the call.
pub async fn refresh_due_sps(
    directory: &Directory,
    limits: &FetchLimits,
    now: DateTime<Utc>,
) -> Result<Vec<(String, Result<RefreshOutcome, RegistrationError>)>, RegistrationError> {
    let mut out = Vec::new();
    for sp in directory.list_sps().await? {
        if refresh_due(&sp, now) {
            let result = refresh_sp(directory, &sp.entity_id, limits, now).await;
            out.push((sp.entity_id, result));
        }
    }
    Ok(out)
}

/// Starts the scheduled refresh: every `every`, [`refresh_due_sps`]. Runs until the returned task is
/// aborted (or the runtime stops). Several nodes may run it; they then refresh the same SPs, which is
/// harmless (the last writer stores the same document).
pub fn spawn_refresher(
    directory: Directory,
    limits: FetchLimits,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = refresh_due_sps(&directory, &limits, Utc::now()).await {
                tracing::warn!(error = %e, "scheduled SP metadata refresh could not run");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_rule() -> Result<(), url::ParseError> {
        let url = |s: &str| url::Url::parse(s);
        assert!(transport_allowed(&url("https://sp.example/md")?, false).is_ok());
        assert!(transport_allowed(&url("http://127.0.0.1:8080/md")?, false).is_ok());
        assert!(transport_allowed(&url("http://[::1]/md")?, false).is_ok());
        assert!(transport_allowed(&url("http://localhost/md")?, false).is_ok());
        assert!(transport_allowed(&url("http://sp.example/md")?, false).is_err());
        assert!(transport_allowed(&url("http://sp.example/md")?, true).is_ok());
        assert!(transport_allowed(&url("ftp://sp.example/md")?, true).is_err());
        assert!(transport_allowed(&url("file:///etc/passwd")?, true).is_err());
        Ok(())
    }

    #[test]
    fn redirects_from_outside_stay_outside() -> Result<(), url::ParseError> {
        let url = |s: &str| url::Url::parse(s);
        let outside = url("https://sp.example/md")?;
        for inside in [
            "http://127.0.0.1:8080/x",
            "https://10.1.2.3/x",
            "https://172.16.0.1/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[::1]/x",
            "https://[fd00::5]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "http://localhost/x",
            "https://a.localhost./x",
        ] {
            assert!(
                redirect_allowed(&outside, &url(inside)?, true).is_err(),
                "{inside}"
            );
        }
        assert!(redirect_allowed(&outside, &url("https://cdn.example/md")?, false).is_ok());
        assert!(redirect_allowed(&outside, &url("https://8.8.8.8/md")?, false).is_ok());
        // From the loopback (a local mirror), the loopback and private network stay reachable.
        let local = url("http://127.0.0.1:9000/md")?;
        assert!(redirect_allowed(&local, &url("http://127.0.0.1:9001/md")?, false).is_ok());
        assert!(redirect_allowed(&local, &url("https://10.0.0.1/md")?, false).is_ok());
        Ok(())
    }

    #[test]
    fn a_pin_must_be_a_certificate() {
        assert!(!pin_present(None).unwrap_or(true));
        assert!(matches!(
            pin_present(Some("x")),
            Err(RegistrationError::PinnedCertificate)
        ));
    }
}
