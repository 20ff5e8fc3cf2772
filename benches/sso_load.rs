//! SP-initiated SSO throughput of a whole Tessera over HTTP on loopback (issue "sso_load benchmark").
//!
//! Tessera runs in this process (`Idp::start` + `tessera::web::serve` on 127.0.0.1:0). One SP is
//! registered, one user is created and assigned the app. Each client signs in once (GET
//! /saml/sso -> /login -> POST /login, like a browser), then loops: a fresh AuthnRequest by the
//! HTTP-Redirect binding, GET /saml/sso, expect 200 with a `SAMLResponse` form. Printed per session
//! backend (Redis, then memory): responses/s, p50/p90/p99 latency, session-store round trips per SSO
//! (counted client-side by wrapping the store) and, for Redis, the commands the server executed
//! per SSO (`INFO` delta). Before the load runs, the bare RSA-2048 SHA-256 signing rate is
//! measured in the same process, on one thread and on N threads, as the ceiling to compare with.
//!
//! Clients and server share the machine's cores, as they would on a one-box deployment behind a
//! local proxy; the figures are a lower bound for a server with the cores to itself.
//!
//! Environment (defaults keep the whole run around 25 s):
//! - `SSO_LOAD_SECS` (8): measured seconds per backend.
//! - `SSO_LOAD_CLIENTS` (8): concurrent clients, each with its own session and connection.
//! - `SSO_LOAD_BACKENDS` (`redis,memory`): which session stores to run, in order.
//! - `REDIS_URL` (`redis://127.0.0.1:6379`): the Redis for the `redis` backend; keys go under a
//!   unique prefix and are deleted afterwards.
//! - `SSO_LOAD_SIGN` (`both`): which elements Tessera signs: `both` (the SP default), `assertion`,
//!   `response`.
//! - `SSO_LOAD_RSA_SECS` (1.5) and `SSO_LOAD_RSA_THREADS` (available cores): the bare signing rate
//!   measurement.
//!
//! Run with `cargo bench --bench sso_load`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use tessera::config::{Config, SessionBackend};
use tessera::directory::{AttributeRelease, NewServiceProvider, NewUser, SpSettings};
use tessera::idp::Idp;
use tessera::saml::binding::redirect::encode_redirect;
use tessera::saml::binding::MessageKind;
use tessera::saml::xml::{escape_attr, escape_text};
use tessera::saml::xmldsig::keys::{generate_self_signed, KeyKind};
use tessera::session::{
    Error as StoreError, Session, SessionId, SessionKey, SessionStore, SessionSummary, SpSession,
};
use tokio::sync::{watch, Barrier};

/// Errors cross task boundaries, so they must be `Send`.
type BenchError = Box<dyn std::error::Error + Send + Sync>;
type BenchResult<T> = Result<T, BenchError>;

/// The SP the clients play. Its ACS uses HTTP-POST, the only binding Tessera answers with
/// (saml-profiles 4.1.2).
const SP_ENTITY_ID: &str = "https://sp.bench.example/shibboleth";
const SP_ACS_URL: &str = "https://sp.bench.example/Shibboleth.sso/SAML2/POST";
/// saml-bindings 3.5: the binding the AuthnRequest asks the response to come by.
const BINDING_HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

const USERNAME: &str = "ada.lovelace";
/// Long and random-looking so the password policy accepts it.
const PASSWORD: &str = "Analytical-Engine-1843-notes-G";

/// SSOs each client makes after signing in and before the measurement starts, so the SP cache, the
/// Redis script cache and the connections are warm when the clock starts.
const WARMUP_SSOS_PER_CLIENT: u32 = 5;

/// How long the idle sample of foreign Redis traffic lasts (other processes may share the server).
const IDLE_SAMPLE: Duration = Duration::from_millis(500);

/// What the run was asked to do, from the environment.
#[derive(Debug, Clone)]
struct Settings {
    /// Length of the measured phase per backend.
    duration: Duration,
    /// Concurrent clients.
    clients: usize,
    /// Session stores to run, in order.
    backends: Vec<SessionBackend>,
    /// Where the Redis backend connects (also where `INFO` is read).
    redis_url: String,
    /// Which elements Tessera signs for the SP.
    sign_assertion: bool,
    /// See `sign_assertion`.
    sign_response: bool,
    /// Length of each bare-signing measurement.
    rsa_duration: Duration,
    /// Threads for the parallel bare-signing measurement.
    rsa_threads: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> BenchResult<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|e| format!("{name}={v:?}: {e}").into()),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> BenchResult<Settings> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let backends = env_or("SSO_LOAD_BACKENDS", "redis,memory".to_owned())?
            .split(',')
            .map(|b| match b.trim() {
                "redis" => Ok(SessionBackend::Redis),
                "memory" => Ok(SessionBackend::Memory),
                other => Err(format!("SSO_LOAD_BACKENDS: unknown backend {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (sign_assertion, sign_response) =
            match env_or("SSO_LOAD_SIGN", "both".to_owned())?.as_str() {
                "both" => (true, true),
                "assertion" => (true, false),
                "response" => (false, true),
                other => {
                    return Err(format!(
                        "SSO_LOAD_SIGN: expected both|assertion|response, got {other:?}"
                    )
                    .into())
                }
            };
        let clients: usize = env_or("SSO_LOAD_CLIENTS", 8)?;
        if clients == 0 {
            return Err("SSO_LOAD_CLIENTS must be at least 1".into());
        }
        Ok(Settings {
            duration: Duration::from_secs_f64(env_or("SSO_LOAD_SECS", 8.0)?),
            clients,
            backends,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned())?,
            sign_assertion,
            sign_response,
            rsa_duration: Duration::from_secs_f64(env_or("SSO_LOAD_RSA_SECS", 1.5)?),
            rsa_threads: env_or("SSO_LOAD_RSA_THREADS", cores)?.max(1),
        })
    }

    fn signatures_per_response(&self) -> u32 {
        u32::from(self.sign_assertion) + u32::from(self.sign_response)
    }
}

// ---------------------------------------------------------------------------------------------
// Bare RSA signing rate.

/// Signs ~1 KB with RSA-2048 PKCS#1 v1.5 SHA-256 until `until`; returns the number of signatures.
fn sign_until(key: &PKey<Private>, until: Instant) -> BenchResult<u64> {
    let data: Vec<u8> = (0..1024u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut n = 0u64;
    while Instant::now() < until {
        let mut signer = Signer::new(MessageDigest::sha256(), key)?;
        signer.update(&data)?;
        std::hint::black_box(signer.sign_to_vec()?);
        n += 1;
    }
    Ok(n)
}

/// Signatures per second on `threads` threads, each with its own handle on the same key.
fn rsa_rate(key: &PKey<Private>, threads: usize, duration: Duration) -> BenchResult<f64> {
    let start = Instant::now();
    let until = start + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let key = key.clone();
            std::thread::spawn(move || sign_until(&key, until))
        })
        .collect();
    let mut total = 0u64;
    for h in handles {
        total += h.join().map_err(|_| "signing thread panicked")??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Counting the session store's calls: each call of the Redis store is exactly one request/response
// on its connection (the scripts are EVALSHA; NOSCRIPT reloads happen during the warm-up), so the
// count is the number of Redis round trips, unaffected by anyone else using the same server.

/// One counter per [`SessionStore`] method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Get,
    Update,
    AddSpSession,
    Delete,
    DeleteForUser,
    ListUserSessions,
    DeleteUserSessions,
    RememberOnce,
    PutTemp,
    GetTemp,
    DeleteTemp,
    IncrCounter,
    ResetCounter,
}

impl Op {
    const ALL: [Op; 14] = [
        Op::Create,
        Op::Get,
        Op::Update,
        Op::AddSpSession,
        Op::Delete,
        Op::DeleteForUser,
        Op::ListUserSessions,
        Op::DeleteUserSessions,
        Op::RememberOnce,
        Op::PutTemp,
        Op::GetTemp,
        Op::DeleteTemp,
        Op::IncrCounter,
        Op::ResetCounter,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Get => "get",
            Op::Update => "update",
            Op::AddSpSession => "add_sp_session",
            Op::Delete => "delete",
            Op::DeleteForUser => "delete_for_user",
            Op::ListUserSessions => "list_user_sessions",
            Op::DeleteUserSessions => "delete_user_sessions",
            Op::RememberOnce => "remember_once",
            Op::PutTemp => "put_temp",
            Op::GetTemp => "get_temp",
            Op::DeleteTemp => "delete_temp",
            Op::IncrCounter => "incr_counter",
            Op::ResetCounter => "reset_counter",
        }
    }
}

/// Calls per store method, shared between the wrapper inside Tessera and the reporting code.
#[derive(Debug, Default)]
struct StoreCalls {
    /// Indexed by `Op as usize`.
    counts: [AtomicU64; 14],
}

impl StoreCalls {
    fn hit(&self, op: Op) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; 14] {
        let mut out = [0u64; 14];
        for (o, c) in out.iter_mut().zip(&self.counts) {
            *o = c.load(Ordering::Relaxed);
        }
        out
    }
}

/// The store Tessera was started with, counting every call before passing it on.
struct CountingStore {
    /// The real store (Redis or memory).
    inner: Arc<dyn SessionStore>,
    /// Where the calls are counted.
    calls: Arc<StoreCalls>,
}

#[async_trait]
impl SessionStore for CountingStore {
    async fn create(
        &self,
        session: &Session,
        idle: Duration,
        absolute: Duration,
    ) -> Result<SessionId, StoreError> {
        self.calls.hit(Op::Create);
        self.inner.create(session, idle, absolute).await
    }
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.calls.hit(Op::Get);
        self.inner.get(id).await
    }
    async fn update(&self, id: &SessionId, session: &Session) -> Result<bool, StoreError> {
        self.calls.hit(Op::Update);
        self.inner.update(id, session).await
    }
    async fn add_sp_session(&self, id: &SessionId, sp: &SpSession) -> Result<bool, StoreError> {
        self.calls.hit(Op::AddSpSession);
        self.inner.add_sp_session(id, sp).await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.calls.hit(Op::Delete);
        self.inner.delete(id).await
    }
    async fn delete_for_user(&self, user_id: i64, key: &SessionKey) -> Result<bool, StoreError> {
        self.calls.hit(Op::DeleteForUser);
        self.inner.delete_for_user(user_id, key).await
    }
    async fn list_user_sessions(&self, user_id: i64) -> Result<Vec<SessionSummary>, StoreError> {
        self.calls.hit(Op::ListUserSessions);
        self.inner.list_user_sessions(user_id).await
    }
    async fn delete_user_sessions(&self, user_id: i64) -> Result<usize, StoreError> {
        self.calls.hit(Op::DeleteUserSessions);
        self.inner.delete_user_sessions(user_id).await
    }
    async fn remember_once(
        &self,
        namespace: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.calls.hit(Op::RememberOnce);
        self.inner.remember_once(namespace, key, ttl).await
    }
    async fn put_temp(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.calls.hit(Op::PutTemp);
        self.inner.put_temp(namespace, key, value, ttl).await
    }
    async fn get_temp(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.calls.hit(Op::GetTemp);
        self.inner.get_temp(namespace, key).await
    }
    async fn delete_temp(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        self.calls.hit(Op::DeleteTemp);
        self.inner.delete_temp(namespace, key).await
    }
    async fn incr_counter(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        self.calls.hit(Op::IncrCounter);
        self.inner.incr_counter(key, window).await
    }
    async fn reset_counter(&self, key: &str) -> Result<(), StoreError> {
        self.calls.hit(Op::ResetCounter);
        self.inner.reset_counter(key).await
    }
}

// ---------------------------------------------------------------------------------------------
// Redis server statistics.

/// What the Redis server reports about the commands it ran.
#[derive(Debug, Default, Clone)]
struct RedisStats {
    /// `total_commands_processed` (INFO stats).
    total: u64,
    /// `calls` per command (INFO commandstats), which also counts commands run inside Lua scripts.
    per_command: BTreeMap<String, u64>,
}

impl RedisStats {
    async fn read(conn: &mut redis::aio::MultiplexedConnection) -> BenchResult<RedisStats> {
        // One INFO per snapshot, so each delta contains exactly the snapshot's own INFO (counted
        // after it ran) and the `info` line can be subtracted.
        let text: String = redis::cmd("INFO").arg("all").query_async(conn).await?;
        let mut stats = RedisStats::default();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("total_commands_processed:") {
                stats.total = v.trim().parse()?;
            } else if let Some(rest) = line.strip_prefix("cmdstat_") {
                let Some((name, fields)) = rest.split_once(':') else {
                    continue;
                };
                let calls = fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .ok_or("commandstats line without calls=")?;
                stats.per_command.insert(name.to_owned(), calls.parse()?);
            }
        }
        Ok(stats)
    }

    /// `self - before`, without the INFO commands themselves.
    fn since(&self, before: &RedisStats) -> RedisStats {
        let mut per_command = BTreeMap::new();
        for (name, &after) in &self.per_command {
            let delta = after.saturating_sub(before.per_command.get(name).copied().unwrap_or(0));
            if delta > 0 {
                per_command.insert(name.clone(), delta);
            }
        }
        let info = per_command.remove("info").unwrap_or(0);
        RedisStats {
            total: self.total.saturating_sub(before.total).saturating_sub(info),
            per_command,
        }
    }

    /// Commands a client sends itself: the script calls and the plain commands `RedisStore` issues
    /// outside scripts. The scripts' own calls (TIME, HMGET, HSET, PEXPIRE, ...) are left out; a
    /// DEL run inside a script (expired session, logout) would be counted, but the SSO loop runs none.
    fn sent_by_clients(&self) -> u64 {
        const DIRECT: [&str; 8] = [
            "evalsha",
            "eval",
            "evalsha_ro",
            "eval_ro",
            "script|load",
            "set",
            "get",
            "del",
        ];
        DIRECT.iter().filter_map(|c| self.per_command.get(*c)).sum()
    }
}

/// Deletes every key under `prefix` (the benchmark's own).
async fn delete_prefix(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> BenchResult<u64> {
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("DEL").arg(&keys).query_async(conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

// ---------------------------------------------------------------------------------------------
// The SP side: metadata and AuthnRequests.

/// saml-metadata 2.4.4: an SPSSODescriptor with one HTTP-POST AssertionConsumerService; no
/// KeyDescriptor, so requests are unsigned and assertions unencrypted.
fn sp_metadata() -> String {
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{SP_ENTITY_ID}"><md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="false" WantAssertionsSigned="true"><md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat><md:AssertionConsumerService Binding="{BINDING_HTTP_POST}" Location="{SP_ACS_URL}" index="0" isDefault="true"/></md:SPSSODescriptor></md:EntityDescriptor>"#
    )
}

/// A fresh AuthnRequest (saml-core 3.4.1): unique ID, current IssueInstant, Destination (required
/// by saml-bindings 3.4.5.2 only for signed requests, sent anyway as SPs do), HTTP-POST response.
fn authn_request(id: &str, destination: &str) -> String {
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let mut dest = String::new();
    escape_attr(&mut dest, destination);
    let mut issuer = String::new();
    escape_text(&mut issuer, SP_ENTITY_ID);
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{dest}" AssertionConsumerServiceURL="{SP_ACS_URL}" ProtocolBinding="{BINDING_HTTP_POST}"><saml:Issuer>{issuer}</saml:Issuer><samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress" AllowCreate="true"/></samlp:AuthnRequest>"#
    )
}

/// saml-core 1.3.4: an xs:ID with 128 random bits (plus the client and sequence for readability).
fn request_id(client: usize, seq: u64) -> String {
    format!("_r{:032x}c{client}n{seq}", rand::random::<u128>())
}

/// The HTTP-Redirect URL (saml-bindings 3.4.4.1: DEFLATE, base64, URL-encode) of a fresh request.
fn sso_url(sso_endpoint: &str, client: usize, seq: u64) -> BenchResult<String> {
    let xml = authn_request(&request_id(client, seq), sso_endpoint);
    Ok(encode_redirect(
        MessageKind::Request,
        xml.as_bytes(),
        None,
        sso_endpoint,
        None,
    )?)
}

// ---------------------------------------------------------------------------------------------
// The clients.

/// The value of `name="{field}" value="..."` in the login form.
fn hidden_field<'a>(html: &'a str, field: &str) -> BenchResult<&'a str> {
    let marker = format!("name=\"{field}\" value=\"");
    let start = html
        .find(&marker)
        .ok_or_else(|| format!("login form has no {field} field"))?
        + marker.len();
    let len = html[start..]
        .find('"')
        .ok_or("unterminated value attribute")?;
    Ok(&html[start..start + len])
}

/// `name=value` of the cookie `name` among the response's Set-Cookie headers.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let pair = v.to_str().ok()?.split(';').next()?.trim();
        (pair.split_once('=')?.0 == name).then(|| pair.to_owned())
    })
}

/// One simulated browser: its HTTP connection and its session cookie.
struct Client {
    /// Keeps one keep-alive connection to Tessera; redirects are followed by hand.
    http: reqwest::Client,
    /// `tessera_session=...`, sent with every SSO request.
    session_cookie: String,
    /// Which client this is, for unique request IDs.
    index: usize,
    /// Requests made so far, for unique request IDs.
    seq: u64,
}

impl Client {
    /// Signs in like a browser: GET /saml/sso (no session) -> 303 /login?request=..., GET the form
    /// (CSRF cookie), POST the credentials -> 200 SAMLResponse form and the session cookie.
    async fn sign_in(base: &str, sso_endpoint: &str, index: usize) -> BenchResult<Client> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1)
            .build()?;
        let first = http.get(sso_url(sso_endpoint, index, 0)?).send().await?;
        if first.status() != StatusCode::SEE_OTHER && first.status() != StatusCode::FOUND {
            return Err(format!(
                "GET /saml/sso without a session: expected a redirect, got {}",
                first.status()
            )
            .into());
        }
        let location = first
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or("redirect without Location")?
            .to_owned();
        let form_page = http.get(format!("{base}{location}")).send().await?;
        let csrf_cookie =
            set_cookie(&form_page, "tessera_csrf").ok_or("login form set no CSRF cookie")?;
        if form_page.status() != StatusCode::OK {
            return Err(format!("GET {location}: {}", form_page.status()).into());
        }
        let html = form_page.text().await?;
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("username", USERNAME)
            .append_pair("password", PASSWORD)
            .append_pair("csrf_token", hidden_field(&html, "csrf_token")?)
            .append_pair("request", hidden_field(&html, "request")?)
            .finish();
        let posted = http
            .post(format!("{base}/login"))
            .header(COOKIE, &csrf_cookie)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await?;
        let status = posted.status();
        let session_cookie =
            set_cookie(&posted, "tessera_session").ok_or("sign-in set no session cookie")?;
        let text = posted.text().await?;
        if status != StatusCode::OK || !text.contains("SAMLResponse") {
            return Err(format!(
                "POST /login: {status}, body starts {:?}",
                text.chars().take(200).collect::<String>()
            )
            .into());
        }
        Ok(Client {
            http,
            session_cookie,
            index,
            seq: 1,
        })
    }

    /// One SP-initiated SSO with the live session: Ok(latency) on a 200 carrying a SAMLResponse.
    async fn sso(&mut self, sso_endpoint: &str) -> BenchResult<Duration> {
        self.seq += 1;
        let url = sso_url(sso_endpoint, self.index, self.seq)?;
        let start = Instant::now();
        let resp = self
            .http
            .get(url)
            .header(COOKIE, &self.session_cookie)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        let elapsed = start.elapsed();
        if status != StatusCode::OK || !body.contains("name=\"SAMLResponse\"") {
            return Err(format!(
                "GET /saml/sso: {status}, body starts {:?}",
                body.chars().take(200).collect::<String>()
            )
            .into());
        }
        Ok(elapsed)
    }
}

/// What one client measured.
#[derive(Debug, Default)]
struct ClientReport {
    /// Latency of every successful SSO in the measured window.
    latencies: Vec<Duration>,
    /// Failed SSOs in the measured window.
    errors: u64,
    /// The first failure, to show what went wrong.
    first_error: Option<String>,
}

/// Signs in, warms up, waits for the common start, then loops until the deadline.
async fn run_client(
    base: String,
    sso_endpoint: String,
    index: usize,
    ready: Arc<Barrier>,
    mut go: watch::Receiver<Option<Instant>>,
) -> BenchResult<ClientReport> {
    let signed_in = Client::sign_in(&base, &sso_endpoint, index).await;
    // Reach the barrier even after a failure, so the others are not left waiting.
    let mut client = match signed_in {
        Ok(mut c) => {
            let mut warm = Ok(());
            for _ in 0..WARMUP_SSOS_PER_CLIENT {
                if let Err(e) = c.sso(&sso_endpoint).await {
                    warm = Err(e);
                    break;
                }
            }
            ready.wait().await;
            warm?;
            c
        }
        Err(e) => {
            ready.wait().await;
            return Err(e);
        }
    };
    let deadline = loop {
        if let Some(deadline) = *go.borrow_and_update() {
            break deadline;
        }
        go.changed().await?;
    };
    let mut report = ClientReport::default();
    while Instant::now() < deadline {
        match client.sso(&sso_endpoint).await {
            Ok(latency) => report.latencies.push(latency),
            Err(e) => {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// One backend.

/// The `q` quantile (nearest rank) of sorted `v`.
fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A key prefix no other process uses, so the run can share a Redis and clean up after itself.
fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench:sso_load:{}:{nanos}:", std::process::id())
}

async fn run_backend(
    settings: &Settings,
    backend: SessionBackend,
    bare_rate: (f64, f64),
) -> BenchResult<()> {
    let name = match backend {
        SessionBackend::Redis => "redis",
        SessionBackend::Memory => "memory",
    };
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let mut config = Config::for_test(dir.path());
    config.listen = addr;
    config.base_url = base.clone();
    config.session.backend = backend.clone();
    config.session.redis_url = settings.redis_url.clone();
    let prefix = unique_prefix();
    config.session.key_prefix = prefix.clone();
    let sso_endpoint = config.sso_url();

    let mut redis_conn = match backend {
        SessionBackend::Redis => Some(
            redis::Client::open(settings.redis_url.as_str())?
                .get_multiplexed_async_connection()
                .await?,
        ),
        SessionBackend::Memory => None,
    };

    let (mut idp, _report) = Idp::start(config).await?;
    let calls = Arc::new(StoreCalls::default());
    idp.sessions = Arc::new(CountingStore {
        inner: idp.sessions.clone(),
        calls: calls.clone(),
    });
    let key_algorithm = idp.keys.current.algorithm().uri();

    // A typical SP: email NameID, five attributes released.
    let release = |user_attribute: &str, oid: &str, friendly: &str| AttributeRelease {
        friendly_name: Some(friendly.to_owned()),
        ..AttributeRelease::new(user_attribute, oid)
    };
    idp.directory
        .add_sp(NewServiceProvider {
            entity_id: SP_ENTITY_ID.into(),
            metadata_xml: sp_metadata(),
            display_name: "Bench Wiki".into(),
            settings: SpSettings {
                nameid_format: tessera::directory::NAMEID_FORMAT_EMAIL.into(),
                nameid_attribute: "email".into(),
                attribute_release: vec![
                    release("email", "urn:oid:0.9.2342.19200300.100.1.3", "mail"),
                    release(
                        "display_name",
                        "urn:oid:2.16.840.1.113730.3.1.241",
                        "displayName",
                    ),
                    release("department", "urn:oid:2.5.4.11", "ou"),
                    release("given_name", "urn:oid:2.5.4.42", "givenName"),
                    release("surname", "urn:oid:2.5.4.4", "sn"),
                ],
                sign_assertion: settings.sign_assertion,
                sign_response: settings.sign_response,
                ..SpSettings::default()
            },
        })
        .await?;
    idp.directory
        .create_user(NewUser {
            username: USERNAME.into(),
            password: PASSWORD.into(),
            email: Some("ada.lovelace@example.org".into()),
            display_name: Some("Ada Lovelace".into()),
            department: Some("Analytical Engines".into()),
            attributes: [
                ("given_name".to_owned(), vec!["Ada".to_owned()]),
                ("surname".to_owned(), vec!["Lovelace".to_owned()]),
            ]
            .into_iter()
            .collect(),
        })
        .await?;
    idp.directory.assign_app(USERNAME, SP_ENTITY_ID).await?;

    let idp = Arc::new(idp);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tessera::web::serve(idp.clone(), listener, async move {
        let _ = stop_rx.await;
    }));

    // Clients sign in and warm up, then all start together.
    let ready = Arc::new(Barrier::new(settings.clients + 1));
    let (go_tx, go_rx) = watch::channel(None);
    let setup_start = Instant::now();
    let tasks: Vec<_> = (0..settings.clients)
        .map(|i| {
            tokio::spawn(run_client(
                base.clone(),
                sso_endpoint.clone(),
                i,
                ready.clone(),
                go_rx.clone(),
            ))
        })
        .collect();
    ready.wait().await;
    let setup = setup_start.elapsed();

    // Foreign Redis traffic (other processes on the same server) while our clients are idle.
    let idle = match redis_conn.as_mut() {
        Some(conn) => {
            let a = RedisStats::read(conn).await?;
            tokio::time::sleep(IDLE_SAMPLE).await;
            Some(RedisStats::read(conn).await?.since(&a))
        }
        None => None,
    };
    let redis_before = match redis_conn.as_mut() {
        Some(conn) => Some(RedisStats::read(conn).await?),
        None => None,
    };
    let calls_before = calls.snapshot();
    let start = Instant::now();
    go_tx.send(Some(start + settings.duration))?;
    let mut reports = Vec::with_capacity(tasks.len());
    for t in tasks {
        reports.push(t.await??);
    }
    let elapsed = start.elapsed();
    let calls_after = calls.snapshot();
    let redis_delta = match (redis_conn.as_mut(), &redis_before) {
        (Some(conn), Some(before)) => Some(RedisStats::read(conn).await?.since(before)),
        _ => None,
    };

    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(joined) => joined??,
        Err(_) => eprintln!("warning: server did not stop within 5 s"),
    }
    let cleaned = match redis_conn.as_mut() {
        Some(conn) => Some(delete_prefix(conn, &prefix).await?),
        None => None,
    };

    let mut latencies: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    latencies.sort();
    let ok = latencies.len() as u64;
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    let rate = ok as f64 / elapsed.as_secs_f64();
    let mean = latencies
        .iter()
        .sum::<Duration>()
        .checked_div(ok.max(1) as u32)
        .unwrap_or_default();

    println!();
    println!(
        "== {name} session store: {} clients, {:.1} s measured (setup incl. {} sign-ins: {:.2} s), key {key_algorithm}, \
         {} signature(s) per response ==",
        settings.clients,
        elapsed.as_secs_f64(),
        settings.clients,
        setup.as_secs_f64(),
        settings.signatures_per_response(),
    );
    println!("responses: {ok} ok, {errors} failed");
    if let Some(e) = reports.iter().find_map(|r| r.first_error.as_ref()) {
        println!("first failure: {e}");
    }
    println!("throughput: {rate:.1} responses/s");
    println!(
        "latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {:.2} ms",
        ms(quantile(&latencies, 0.50)),
        ms(quantile(&latencies, 0.90)),
        ms(quantile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        ms(mean),
    );
    let sigs = f64::from(settings.signatures_per_response());
    if sigs > 0.0 {
        println!(
            "signing ceiling: {:.1} responses/s on 1 thread, {:.1} on {} threads (bare rate / {} signatures); \
             achieved {:.0}% of the {}-thread ceiling",
            bare_rate.0 / sigs,
            bare_rate.1 / sigs,
            settings.rsa_threads,
            settings.signatures_per_response(),
            rate / (bare_rate.1 / sigs) * 100.0,
            settings.rsa_threads,
        );
    }
    let store_calls: Vec<(Op, u64)> = Op::ALL
        .iter()
        .map(|&op| (op, calls_after[op as usize] - calls_before[op as usize]))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total_calls: u64 = store_calls.iter().map(|(_, n)| n).sum();
    let per_sso = |n: u64| n as f64 / ok.max(1) as f64;
    let breakdown: Vec<String> = store_calls
        .iter()
        .map(|(op, n)| format!("{} {:.2}", op.name(), per_sso(*n)))
        .collect();
    let label = match backend {
        SessionBackend::Redis => {
            "Redis round trips per SSO (session-store calls, counted in Tessera)"
        }
        SessionBackend::Memory => "session-store calls per SSO (in memory, no round trips)",
    };
    println!(
        "{label}: {:.2} ({})",
        per_sso(total_calls),
        breakdown.join(", ")
    );
    if let (Some(delta), Some(idle)) = (redis_delta, idle) {
        let commands: Vec<String> = delta
            .per_command
            .iter()
            .map(|(c, n)| format!("{c} {:.2}", per_sso(*n)))
            .collect();
        println!(
            "Redis server, INFO delta per SSO: {:.2} commands executed (total_commands_processed; Redis counts the \
             commands run inside Lua scripts too), commandstats: {}",
            per_sso(delta.total),
            commands.join(", "),
        );
        println!(
            "Redis server, commands that arrived over the wire per SSO (EVALSHA/EVAL/SCRIPT and plain SET/GET/DEL): \
             {:.2}",
            per_sso(delta.sent_by_clients()),
        );
        println!(
            "Redis foreign traffic check: {} commands from other clients during a {} ms idle sample \
             (0 means the INFO figures are ours alone)",
            idle.total,
            IDLE_SAMPLE.as_millis(),
        );
        if let Some(n) = cleaned {
            println!("Redis cleanup: deleted {n} keys under {prefix}");
        }
    }
    Ok(())
}

/// The 1-minute load average, to judge whether other work on the machine skewed the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let not_before = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .ok_or("bad timestamp")?;
    let (key, _, _) = generate_self_signed(KeyKind::Rsa2048, "bench", not_before, 365)?;

    println!(
        "sso_load: {} clients, {:.1} s per backend, backends {:?}, Redis {}, {} cores, load average at start {}",
        settings.clients,
        settings.duration.as_secs_f64(),
        settings.backends,
        settings.redis_url,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
    );
    // Measured first, with nothing else running in this process.
    let single = rsa_rate(key.private_key(), 1, settings.rsa_duration)?;
    let parallel = rsa_rate(
        key.private_key(),
        settings.rsa_threads,
        settings.rsa_duration,
    )?;
    println!(
        "bare RSA-2048 SHA-256 signing (1 KB): {single:.1} signatures/s on 1 thread, {parallel:.1} signatures/s on {} threads",
        settings.rsa_threads
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for backend in &settings.backends {
            run_backend(&settings, backend.clone(), (single, parallel)).await?;
        }
        Ok(())
    })
}
