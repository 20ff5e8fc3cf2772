//! Tessera running in-process for end-to-end tests, a browser that talks to it, and an independent SAML
//! SP (samael 0.0.22) that asks it for sign-ins and checks what comes back.
//!
//! [`TestIdp::start`] binds 127.0.0.1 (port 0 or a given port), points `base_url` at that port BEFORE
//! `Idp::start` (so our entity ID and SSO URL are the ones the SP sees), swaps in a cheap argon2 hasher,
//! and serves `tessera::web::serve` in a task until [`TestIdp::stop`] or drop.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::StatusCode;
use samael::metadata::EntityDescriptor;
use samael::schema::{Assertion, AuthnRequest};
use samael::service_provider::{ServiceProvider, ServiceProviderBuilder};
use samael::traits::ToXml;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tessera::config::{Config, SessionBackend};
use tessera::directory::{
    AttributeRelease, Directory, NewServiceProvider, NewUser, PasswordHasher, SpSettings,
};
use tessera::idp::Idp;
use tessera::saml::xmldsig::keys::{generate_self_signed, KeyKind, SigningKey};

/// Where the IdP under test keeps its sessions.
#[derive(Debug, Clone)]
pub enum Store {
    /// In-process store; sessions die with the `Idp`.
    Memory,
    /// Redis at `url`, every key under `prefix` so parallel tests never meet.
    Redis {
        /// `redis://host:port/`.
        url: String,
        /// Key prefix; a restart test reuses it to find the sessions again.
        prefix: String,
    },
}

impl Store {
    /// A Redis store on the shared test Redis with a prefix of its own.
    pub async fn redis(tag: &str) -> Store {
        Store::Redis {
            url: super::redis::redis_url().await,
            prefix: super::redis::unique_prefix(tag),
        }
    }
}

/// A running Tessera.
pub struct TestIdp {
    /// The IdP state the server uses; tests reach the directory and stores through it.
    pub idp: Arc<Idp>,
    /// The port it listens on (kept so a restart can reuse it and keep the entity ID).
    pub port: u16,
    /// Fires the graceful shutdown.
    shutdown: Option<oneshot::Sender<()>>,
    /// The serving task.
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// How [`TestIdp::start_with`] listens and whose forwarding headers it believes.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    /// Listen on `[::]` (dual-stack) instead of 127.0.0.1, so clients on ::1 can connect too; IPv4
    /// clients then reach the server as IPv4-mapped peers (::ffff:127.0.0.x).
    pub dual_stack: bool,
    /// `trusted_proxies` of the configuration (ranges as written in tessera.toml).
    pub trusted_proxies: Vec<String>,
}

/// The password every test user gets (long enough for the policy).
pub const PASSWORD: &str = "correct horse battery staple";

impl TestIdp {
    /// Starts Tessera with its state in `dir` on a free port.
    pub async fn start(dir: &Path, store: &Store) -> TestIdp {
        Self::start_on(dir, store, 0).await
    }

    /// Starts Tessera with its state in `dir` on `port` (0: any free port).
    pub async fn start_on(dir: &Path, store: &Store, port: u16) -> TestIdp {
        Self::start_inner(dir, store, port, &Listen::default()).await
    }

    /// Starts Tessera on a free port, listening and trusting proxies as `listen` says. `base_url` stays
    /// `http://127.0.0.1:<port>` (the entity ID and SSO URL every SP is given).
    pub async fn start_with(dir: &Path, store: &Store, listen: &Listen) -> TestIdp {
        Self::start_inner(dir, store, 0, listen).await
    }

    async fn start_inner(dir: &Path, store: &Store, port: u16, listen: &Listen) -> TestIdp {
        let host = if listen.dual_stack { "::" } else { "127.0.0.1" };
        let listener = bind(host, port).await;
        let port = listener.local_addr().unwrap().port();
        let mut config = Config::for_test(dir);
        config.base_url = format!("http://127.0.0.1:{port}");
        config.listen = listener.local_addr().unwrap();
        config.trusted_proxies = listen.trusted_proxies.clone();
        match store {
            Store::Memory => config.session.backend = SessionBackend::Memory,
            Store::Redis { url, prefix } => {
                config.session.backend = SessionBackend::Redis;
                config.session.redis_url = url.clone();
                config.session.key_prefix = prefix.clone();
            }
        }
        let (mut idp, _report) = Idp::start(config).await.expect("Idp::start");
        // The OWASP costs (19 MiB, 2 passes) make each login ~50 ms in a debug build; the behaviour under
        // test does not depend on the costs, so use small ones.
        let cheap = Directory::connect_with(
            &idp.config.database_url,
            PasswordHasher::new(256, 1, 1).unwrap(),
        )
        .await
        .unwrap();
        idp.replace_directory(cheap).unwrap();
        let idp = Arc::new(idp);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tessera::web::serve(idp.clone(), listener, async move {
            let _ = rx.await;
        }));
        TestIdp {
            idp,
            port,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Starts Tessera on 127.0.0.1 (any free port) with base URL `http://{base_host}:<port>` after
    /// `configure` adjusted the configuration. `localhost` gives WebAuthn a domain for its RP ID; reach
    /// such a server at `http://localhost:<port>` (not [`TestIdp::url`]) so cookies match the origin.
    pub async fn start_configured(
        dir: &Path,
        store: &Store,
        base_host: &str,
        configure: impl FnOnce(&mut Config),
    ) -> TestIdp {
        let listener = bind("127.0.0.1", 0).await;
        let port = listener.local_addr().unwrap().port();
        let mut config = Config::for_test(dir);
        config.base_url = format!("http://{base_host}:{port}");
        config.listen = listener.local_addr().unwrap();
        match store {
            Store::Memory => config.session.backend = SessionBackend::Memory,
            Store::Redis { url, prefix } => {
                config.session.backend = SessionBackend::Redis;
                config.session.redis_url = url.clone();
                config.session.key_prefix = prefix.clone();
            }
        }
        configure(&mut config);
        let (mut idp, _report) = Idp::start(config).await.expect("Idp::start");
        let cheap = Directory::connect_with(
            &idp.config.database_url,
            PasswordHasher::new(256, 1, 1).unwrap(),
        )
        .await
        .unwrap();
        idp.replace_directory(cheap).unwrap();
        let idp = Arc::new(idp);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tessera::web::serve(idp.clone(), listener, async move {
            let _ = rx.await;
        }));
        TestIdp {
            idp,
            port,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://[::1]:<port><path>`, for IPv6 clients of a dual-stack server.
    pub fn url_v6(&self, path: &str) -> String {
        format!("http://[::1]:{}{path}", self.port)
    }

    /// Our entity ID as the SP knows it.
    pub fn entity_id(&self) -> String {
        self.idp.config.entity_id()
    }

    /// Stops serving and waits until the listener is closed (open keep-alive connections are cut after
    /// a grace period).
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Written by the server's own shutdown; again here in case the task had to be aborted.
        self.idp.events.shutdown().await;
    }

    /// Creates an active user `username` with [`PASSWORD`] and the given extra attributes.
    pub async fn add_user(&self, username: &str, attributes: &[(&str, &str)]) {
        let mut extra = BTreeMap::new();
        for (name, value) in attributes {
            extra
                .entry(name.to_string())
                .or_insert_with(Vec::new)
                .push(value.to_string());
        }
        self.idp
            .directory
            .create_user(NewUser {
                username: username.into(),
                password: PASSWORD.into(),
                email: Some(format!("{username}@example.org")),
                display_name: Some(format!("User {username}")),
                department: None,
                attributes: extra,
            })
            .await
            .unwrap();
    }

    /// Registers `sp` (its samael-made metadata) with `settings`, assigning it to `users`.
    pub async fn register(&self, sp: &TestSp, settings: SpSettings, users: &[&str]) {
        self.idp
            .directory
            .add_sp(NewServiceProvider {
                entity_id: sp.entity_id.clone(),
                metadata_xml: sp.metadata_xml.clone(),
                display_name: sp.display_name.clone(),
                settings,
            })
            .await
            .unwrap();
        for user in users {
            self.idp
                .directory
                .assign_app(user, &sp.entity_id)
                .await
                .unwrap();
        }
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `host`:`port`, retrying for a while when a just-closed listener still holds it. `[::]` is
/// dual-stack where the system default allows it (Linux `net.ipv6.bindv6only = 0`).
async fn bind(host: &str, port: u16) -> tokio::net::TcpListener {
    let mut last = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind((host, port)).await {
            Ok(listener) => return listener,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {host} port {port}: {last:?}");
}

/// Settings that release email, display name and the `title` attribute (which tests fill with markup).
pub fn releasing_settings() -> SpSettings {
    SpSettings {
        attribute_release: vec![
            AttributeRelease::new("email", "urn:oid:0.9.2342.19200300.100.1.3"),
            AttributeRelease::new("display_name", "urn:oid:2.16.840.1.113730.3.1.241"),
            AttributeRelease::new("title", "urn:oid:2.5.4.12"),
        ],
        ..SpSettings::default()
    }
}

/// An SP peer: samael's ServiceProvider, with the metadata it publishes.
pub struct TestSp {
    /// The samael SP that makes requests and validates responses.
    pub sp: ServiceProvider,
    /// Its entity ID.
    pub entity_id: String,
    /// Its ACS URL; nothing listens there, the browser hands the response to `sp` instead.
    pub acs_url: String,
    /// The metadata registered at the IdP.
    pub metadata_xml: String,
    /// Name shown on the portal.
    pub display_name: String,
    /// The request-signing key, when the SP signs its requests.
    pub key: Option<SigningKey>,
}

/// Options for [`TestSp::new`].
#[derive(Default, Clone, Copy)]
pub struct SpOptions {
    /// Publish a signing certificate and `AuthnRequestsSigned="true"`.
    pub signs_requests: bool,
    /// Accept unsolicited (IdP-initiated) responses.
    pub allow_idp_initiated: bool,
}

impl TestSp {
    /// An SP named `name` that trusts the IdP described by `idp_metadata_xml`.
    pub fn new(name: &str, idp_metadata_xml: &str, options: SpOptions) -> TestSp {
        // A port nothing listens on: the response is never posted there.
        Self::with_acs(
            name,
            idp_metadata_xml,
            options,
            &format!("http://127.0.0.1:9/{name}/acs"),
        )
    }

    /// As [`TestSp::new`], with the ACS at `acs_url` (a test that lets a real browser post there).
    pub fn with_acs(
        name: &str,
        idp_metadata_xml: &str,
        options: SpOptions,
        acs_url: &str,
    ) -> TestSp {
        let entity_id = format!("https://{name}.sp.test/metadata");
        let acs_url = acs_url.to_owned();
        let idp_metadata = EntityDescriptor::from_str(idp_metadata_xml)
            .unwrap_or_else(|e| panic!("samael cannot read our metadata: {e}\n{idp_metadata_xml}"));
        let key = options.signs_requests.then(|| {
            generate_self_signed(
                KeyKind::Rsa2048,
                &format!("{name}.sp.test"),
                Utc::now() - chrono::Duration::days(1),
                30,
            )
            .unwrap()
            .0
        });
        let mut builder = ServiceProviderBuilder::default();
        builder
            .entity_id(entity_id.clone())
            .acs_url(acs_url.clone())
            .slo_url(format!("http://127.0.0.1:9/{name}/slo"))
            .idp_metadata(idp_metadata)
            .allow_idp_initiated(options.allow_idp_initiated);
        if let Some(key) = &key {
            builder.key(key.private_key().clone()).certificate(
                samael::crypto::CertificateDer::from(key.certificate().to_der().unwrap()),
            );
        }
        let sp = builder.build().unwrap();
        let mut metadata = sp.metadata().unwrap();
        if options.signs_requests {
            for descriptor in metadata.sp_sso_descriptors.iter_mut().flatten() {
                descriptor.authn_requests_signed = Some(true);
            }
        }
        let metadata_xml = metadata.to_string().unwrap();
        TestSp {
            sp,
            entity_id,
            acs_url,
            metadata_xml,
            display_name: format!("App {name}"),
            key,
        }
    }

    /// A fresh AuthnRequest to `sso_url` as samael makes it.
    pub fn request(&self, sso_url: &str) -> AuthnRequest {
        self.sp.make_authentication_request(sso_url).unwrap()
    }

    /// The HTTP-Redirect URL for `request` (unsigned).
    pub fn redirect_url(request: &AuthnRequest, relay_state: &str) -> String {
        request.redirect(relay_state).unwrap().unwrap().to_string()
    }

    /// The HTTP-Redirect URL for `request`, signed with this SP's key.
    pub fn signed_redirect_url(&self, request: &AuthnRequest, relay_state: &str) -> String {
        let key = self.key.as_ref().expect("this SP has no key");
        request
            .signed_redirect(relay_state, key.private_key())
            .unwrap()
            .unwrap()
            .to_string()
    }

    /// The SAMLRequest form body of the HTTP-POST binding (saml-bindings 3.5.4).
    pub fn post_body(request: &AuthnRequest, relay_state: &str) -> Vec<(String, String)> {
        let xml = request.to_string().unwrap();
        vec![
            (
                "SAMLRequest".into(),
                base64::engine::general_purpose::STANDARD.encode(xml),
            ),
            ("RelayState".into(), relay_state.into()),
        ]
    }

    /// What samael makes of a base64 SAMLResponse, for a solicited (`Some`) or unsolicited response.
    pub fn accept(
        &self,
        saml_response: &str,
        request_ids: Option<&[&str]>,
    ) -> Result<Assertion, String> {
        self.sp
            .parse_base64_response(saml_response, request_ids)
            .map_err(|e| format!("{e} ({e:?})"))
    }
}

/// One HTTP answer, body read.
#[derive(Debug)]
pub struct Page {
    /// The HTTP status, asserted on every hop.
    pub status: StatusCode,
    /// Headers, for Location, Set-Cookie and Cache-Control checks.
    pub headers: HeaderMap,
    /// The body as text (pages and forms are HTML).
    pub body: String,
}

impl Page {
    /// The Location header of a redirect.
    pub fn location(&self) -> Option<String> {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The body with HTML character references replaced, for searching visible text.
    pub fn text(&self) -> String {
        unescape_html(&self.body)
    }

    /// The value of the hidden form field `name`, unescaped.
    pub fn field(&self, name: &str) -> Option<String> {
        hidden_field(&self.body, name)
    }

    /// Whether this is Tessera's auto-submitting SAML response form.
    pub fn is_saml_post(&self) -> bool {
        self.body.contains("SAMLResponse")
    }

    /// The SAMLResponse (base64) of the auto-submit form; panics with the page when there is none.
    pub fn saml_response(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self.field("SAMLResponse")
            .unwrap_or_else(|| panic!("no SAMLResponse in the page:\n{}", self.body))
    }

    /// The decoded XML of the SAMLResponse.
    pub fn saml_response_xml(&self) -> String {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.saml_response())
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    /// The form's action URL (where the browser would post the response).
    pub fn form_action(&self) -> Option<String> {
        let start = self.body.find("action=\"")? + "action=\"".len();
        let end = self.body[start..].find('"')? + start;
        Some(unescape_html(&self.body[start..end]))
    }
}

/// The value of `<input ... name="{name}" value="...">`.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let at = html.find(&marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = html[at..].find('>')? + at;
    let tag = &html[tag_start..tag_end];
    let value_at = tag.find("value=\"")? + "value=\"".len();
    let value_end = tag[value_at..].find('"')? + value_at;
    Some(unescape_html(&tag[value_at..value_end]))
}

/// Replaces the character references askama and our form writer produce.
pub fn unescape_html(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#x22;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

/// A browser: a cookie jar, no automatic redirects (each hop is asserted).
#[derive(Clone)]
pub struct Browser {
    /// The HTTP client carrying the cookie jar.
    pub client: reqwest::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

/// Options for [`Browser::with`].
#[derive(Default, Clone)]
pub struct BrowserOptions {
    /// The local address the client's sockets are bound to (127.0.0.2, ::1, ...): the peer address
    /// Tessera sees, with no header involved.
    pub local_address: Option<IpAddr>,
    /// A cookie jar shared with other browsers: the same person (same session cookie) moving to another
    /// address. `None`: a jar of its own.
    pub jar: Option<Arc<reqwest::cookie::Jar>>,
    /// Headers sent with every request (e.g. `X-Forwarded-For`), as a client or a proxy would add them.
    pub headers: HeaderMap,
}

impl Browser {
    pub fn new() -> Browser {
        Self::with(BrowserOptions::default())
    }

    /// A browser whose connections come from `local` (a loopback address of the matching family).
    pub fn from_address(local: IpAddr) -> Browser {
        Self::with(BrowserOptions {
            local_address: Some(local),
            ..BrowserOptions::default()
        })
    }

    /// A browser made as `options` say; no automatic redirects, a 20 s timeout.
    pub fn with(options: BrowserOptions) -> Browser {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .default_headers(options.headers)
            .local_address(options.local_address);
        builder = match options.jar {
            Some(jar) => builder.cookie_provider(jar),
            None => builder.cookie_store(true),
        };
        Browser {
            client: builder.build().unwrap(),
        }
    }

    async fn page(response: reqwest::Response) -> Page {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        Page {
            status,
            headers,
            body,
        }
    }

    /// The underlying client, for requests the helpers do not cover.
    pub fn raw(&self) -> &reqwest::Client {
        &self.client
    }

    /// Reads a response made with [`Browser::raw`].
    pub async fn page_of(response: reqwest::Response) -> Page {
        Self::page(response).await
    }

    pub async fn get(&self, url: &str) -> Page {
        Self::page(self.client.get(url).send().await.unwrap()).await
    }

    pub async fn post(&self, url: &str, form: &[(String, String)]) -> Page {
        Self::page(self.client.post(url).form(form).send().await.unwrap()).await
    }

    /// Follows one redirect from `page` (relative to `base`) with GET.
    pub async fn follow(&self, base: &str, page: &Page) -> Page {
        assert!(
            page.status.is_redirection(),
            "expected a redirect, got {}: {}",
            page.status,
            page.body
        );
        let location = page.location().expect("redirect without Location");
        let url = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location
        };
        self.get(&url).await
    }

    /// Submits the login form shown on `login_page` with these credentials.
    pub async fn submit_login(
        &self,
        idp: &TestIdp,
        login_page: &Page,
        username: &str,
        password: &str,
    ) -> Page {
        self.submit_login_at(&idp.url(""), login_page, username, password)
            .await
    }

    /// [`Browser::submit_login`] to the server at `base` (e.g. `http://[::1]:<port>`).
    pub async fn submit_login_at(
        &self,
        base: &str,
        login_page: &Page,
        username: &str,
        password: &str,
    ) -> Page {
        assert_eq!(login_page.status.as_u16() / 100, 2, "{}", login_page.body);
        assert!(
            login_page.body.contains("name=\"password\""),
            "not the login page: {}",
            login_page.body
        );
        let csrf = login_page.field("csrf_token").expect("csrf_token field");
        let request = login_page.field("request").unwrap_or_default();
        let form = vec![
            ("csrf_token".to_owned(), csrf),
            ("request".to_owned(), request),
            ("username".to_owned(), username.to_owned()),
            ("password".to_owned(), password.to_owned()),
        ];
        self.post(&format!("{base}/login"), &form).await
    }

    /// GET `url` (an SSO request), expect the redirect to the login page, sign in, and return the
    /// page that follows (normally the SAML response form).
    pub async fn sso_with_login(&self, idp: &TestIdp, url: &str, username: &str) -> Page {
        let first = self.get(url).await;
        self.login_after(idp, first, username).await
    }

    /// From the answer to an SSO request without a session: the 303 to /login, the form, the sign-in.
    pub async fn login_after(&self, idp: &TestIdp, first: Page, username: &str) -> Page {
        self.login_after_at(&idp.url(""), first, username).await
    }

    /// [`Browser::login_after`] with the server at `base` (e.g. `http://[::1]:<port>`).
    pub async fn login_after_at(&self, base: &str, first: Page, username: &str) -> Page {
        assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
        let location = first.location().unwrap();
        assert!(location.starts_with("/login?request="), "{location}");
        let login = self.follow(base, &first).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
        self.submit_login_at(base, &login, username, PASSWORD).await
    }

    /// Signs in at /login directly (no SSO pending).
    pub async fn sign_in(&self, idp: &TestIdp, username: &str) {
        let login = self.get(&idp.url("/login")).await;
        let after = self.submit_login(idp, &login, username, PASSWORD).await;
        assert_eq!(after.status, StatusCode::SEE_OTHER, "{}", after.body);
        assert_eq!(after.location().as_deref(), Some("/apps"));
    }
}

/// Our metadata as published, fetched over HTTP.
pub async fn fetch_idp_metadata(idp: &TestIdp) -> String {
    let page = Browser::new().get(&idp.url("/saml/metadata")).await;
    assert_eq!(page.status, StatusCode::OK);
    page.body
}

/// The `Value`s of the StatusCode elements of a SAML response XML, outermost first.
pub fn status_codes(xml: &str) -> Vec<String> {
    let mut codes = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find("StatusCode ") {
        let tail = &rest[at..];
        let tag_end = tail.find('>').unwrap_or(tail.len());
        let tag = &tail[..tag_end];
        if let Some(v) = tag.find("Value=\"") {
            let v = v + "Value=\"".len();
            if let Some(end) = tag[v..].find('"') {
                codes.push(tag[v..v + end].to_owned());
            }
        }
        rest = &tail[tag_end..];
    }
    codes
}
