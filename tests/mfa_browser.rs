//! The sign-in, enrolment and MFA pages in a real browser: headless Chromium, driven through
//! chromedriver's WebDriver HTTP API, with a DevTools virtual authenticator
//! (`WebAuthn.addVirtualAuthenticator`, sent through chromedriver's `goog/cdp/execute`) standing in for
//! a platform passkey. The pages' own script runs the WebAuthn calls; the auto-submitting SAML form
//! posts to an ACS served by this test, and samael checks the assertion it receives.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (scripts/bootstrap.sh installs them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Form, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use common::idp::{fetch_idp_metadata, SpOptions, Store, TestIdp, TestSp, PASSWORD};
use samael::schema::Assertion;
use tessera::directory::SpSettings;
use tessera::policy::{AssignmentTarget, PolicyAssignment, SecurityPolicy};
use tessera::saml::response::class_ref;

/// How long any one page may take to appear.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The element reference key of W3C WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebDriver answer as JSON.
async fn read_json(response: reqwest::Response) -> Result<Value, String> {
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

/// chromedriver, killed when dropped.
struct Driver {
    /// The chromedriver process this test started.
    child: Child,
    /// `http://127.0.0.1:<port>`.
    base: String,
    /// The WebDriver HTTP client.
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts chromedriver and waits until it is ready.
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromedriver ({e}): install chromium and chromium-driver")
            });
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
            {
                if let Ok(v) = read_json(r).await {
                    if v["value"]["ready"] == json!(true) {
                        return driver;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a headless Chromium with its profile in `profile`.
    async fn session(&self, profile: &std::path::Path) -> Browser<'_> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let mut options = json!({ "args": args });
        if std::path::Path::new("/usr/lib/chromium/chromium").exists() {
            options["binary"] = json!("/usr/lib/chromium/chromium");
        }
        let answer: Value = self
            .http
            .post(format!("{}/session", self.base))
            .header("content-type", "application/json")
            .body(
                serde_json::to_vec(&json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": options,
                    }}
                }))
                .unwrap(),
            )
            .send()
            .await
            .map(read_json)
            .unwrap()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        Browser {
            driver: self,
            session: format!("{}/session/{id}", self.base),
        }
    }
}

/// One WebDriver session: a headless Chromium.
struct Browser<'a> {
    /// The chromedriver it runs under.
    driver: &'a Driver,
    /// `<driver>/session/<id>`.
    session: String,
}

impl Browser<'_> {
    /// A WebDriver command; the answer's `value`, or a panic with the WebDriver error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .driver
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let answer = read_json(response).await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer["value"].clone()
    }

    /// A WebDriver command that may fail (finding an element that is not there yet).
    async fn try_command(&self, path: &str, body: Value) -> Option<Value> {
        let response = self
            .driver
            .http
            .post(format!("{}{path}", self.session))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        let ok = response.status().is_success();
        let answer = read_json(response).await.unwrap();
        ok.then(|| answer["value"].clone())
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits for the element matching `css` and returns its reference.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            if let Some(found) = self
                .try_command("/element", json!({ "using": "css selector", "value": css }))
                .await
            {
                return found[ELEMENT_KEY].as_str().unwrap().to_owned();
            }
            if Instant::now() > deadline {
                panic!("no {css} on the page:\n{}", self.source().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Runs `script` in the page and returns its result.
    async fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    async fn quit(self) {
        let _ = self.driver.http.delete(&self.session).send().await;
    }
}

/// An ACS for the SP: every SAMLResponse posted to it goes into the channel.
async fn acs_server() -> (String, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    async fn receive(
        State(tx): State<mpsc::UnboundedSender<String>>,
        Form(form): Form<HashMap<String, String>>,
    ) -> &'static str {
        if let Some(response) = form.get("SAMLResponse") {
            let _ = tx.send(response.clone());
        }
        "received"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/acs",
        listener.local_addr().unwrap().port()
    );
    let app = Router::new().route("/acs", post(receive)).with_state(tx);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx)
}

/// The next SAMLResponse the ACS receives.
async fn next_response(rx: &mut mpsc::UnboundedReceiver<String>, browser: &Browser<'_>) -> String {
    match tokio::time::timeout(PAGE_TIMEOUT, rx.recv()).await {
        Ok(Some(response)) => response,
        _ => panic!(
            "no SAML response reached the ACS; the page:\n{}",
            browser.source().await
        ),
    }
}

fn class_of(assertion: &Assertion) -> String {
    assertion.authn_statements.as_ref().unwrap()[0]
        .authn_context
        .as_ref()
        .unwrap()
        .value
        .as_ref()
        .unwrap()
        .value
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_is_enrolled_and_used_in_headless_chromium() {
    // Tessera on http://localhost (a secure context, and a domain for the RP ID), a policy that
    // requires MFA with user verification, and a user without any factor yet.
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start_configured(dir.path(), &Store::Memory, "localhost", |c| {
        c.mfa.user_verification_policies = vec!["strict".into()];
    })
    .await;
    let metadata = fetch_idp_metadata(&idp).await;
    let (acs_url, mut responses) = acs_server().await;
    let sp = TestSp::with_acs("crm", &metadata, SpOptions::default(), &acs_url);
    idp.add_user("kim", &[]).await;
    idp.register(&sp, SpSettings::default(), &["kim"]).await;
    let kim = idp
        .idp
        .directory
        .get_user_by_username("kim")
        .await
        .unwrap()
        .unwrap()
        .id;
    let mut strict = SecurityPolicy::new("strict");
    strict.mfa_required = true;
    idp.idp.directory.add_policy(&strict).await.unwrap();
    idp.idp
        .directory
        .assign_policy(&PolicyAssignment {
            policy: "strict".into(),
            target: AssignmentTarget::User("kim".into()),
            priority: 0,
        })
        .await
        .unwrap();

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(profile.path()).await;
    browser.cdp("WebAuthn.enable", json!({})).await;
    let authenticator = browser
        .cdp(
            "WebAuthn.addVirtualAuthenticator",
            json!({ "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
                "automaticPresenceSimulation": true,
            }}),
        )
        .await["authenticatorId"]
        .as_str()
        .unwrap()
        .to_owned();

    // 1. SP-initiated sign-in: password, then enrolment of a passkey, then the recovery codes.
    let request = sp.request(&idp.idp.config.sso_url());
    browser.goto(&TestSp::redirect_url(&request, "first")).await;
    browser.type_into("#username", "kim").await;
    browser.type_into("#password", PASSWORD).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    browser.find("#passkey-name").await;
    // Plain, labelled HTML: every input of the page has a label.
    let unlabelled = browser
        .eval(
            "return Array.from(document.querySelectorAll('input:not([type=hidden])'))\
             .filter(i => i.labels.length === 0).map(i => i.id);",
        )
        .await;
    assert_eq!(unlabelled, json!([]), "inputs without a label");
    assert!(
        idp.idp
            .sessions
            .list_user_sessions(kim)
            .await
            .unwrap()
            .is_empty(),
        "a session exists before the second factor"
    );
    browser.type_into("#passkey-name", "Virtual passkey").await;
    browser.click("#webauthn-button").await;
    browser.find("#recovery-codes").await;
    let shown = browser
        .eval("return document.querySelectorAll('#recovery-codes code').length;")
        .await;
    assert_eq!(shown, json!(10));
    browser.click("form[action='/mfa/continue'] button").await;
    let response = next_response(&mut responses, &browser).await;
    let assertion = sp
        .accept(&response, Some(&[request.id.as_str()]))
        .unwrap_or_else(|e| panic!("samael refused the response: {e}"));
    assert_eq!(class_of(&assertion), class_ref::REFEDS_MFA);
    let credentials = browser
        .cdp(
            "WebAuthn.getCredentials",
            json!({ "authenticatorId": authenticator }),
        )
        .await;
    assert_eq!(
        credentials["credentials"].as_array().unwrap().len(),
        1,
        "{credentials}"
    );
    assert_eq!(credentials["credentials"][0]["rpId"], json!("localhost"));
    assert_eq!(
        idp.idp.mfa.factors(kim).await.unwrap().webauthn,
        ["Virtual passkey"]
    );

    // 2. A new sign-in (cookies cleared): password, then the passkey on the challenge page.
    browser.cdp("Network.clearBrowserCookies", json!({})).await;
    let request = sp.request(&idp.idp.config.sso_url());
    browser
        .goto(&TestSp::redirect_url(&request, "second"))
        .await;
    browser.type_into("#username", "kim").await;
    browser.type_into("#password", PASSWORD).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    browser.find("form[data-webauthn='authenticate']").await;
    assert!(browser.source().await.contains("Verify it"));
    browser.click("#webauthn-button").await;
    let response = next_response(&mut responses, &browser).await;
    let assertion = sp
        .accept(&response, Some(&[request.id.as_str()]))
        .unwrap_or_else(|e| panic!("samael refused the response: {e}"));
    assert_eq!(class_of(&assertion), class_ref::REFEDS_MFA);
    assert_eq!(
        idp.idp
            .sessions
            .list_user_sessions(kim)
            .await
            .unwrap()
            .len(),
        2
    );
    browser.quit().await;
    idp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_enrolment_and_sign_in_work_in_chromium_without_javascript() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start_configured(dir.path(), &Store::Memory, "localhost", |_| {}).await;
    let metadata = fetch_idp_metadata(&idp).await;
    let (acs_url, mut responses) = acs_server().await;
    let sp = TestSp::with_acs("crm", &metadata, SpOptions::default(), &acs_url);
    idp.add_user("lee", &[]).await;
    idp.register(&sp, SpSettings::default(), &["lee"]).await;
    let mut strict = SecurityPolicy::new("strict");
    strict.mfa_required = true;
    idp.idp.directory.add_policy(&strict).await.unwrap();
    idp.idp
        .directory
        .assign_policy(&PolicyAssignment {
            policy: "strict".into(),
            target: AssignmentTarget::User("lee".into()),
            priority: 0,
        })
        .await
        .unwrap();

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(profile.path()).await;
    // No script runs on Tessera's pages (nor the SAML auto-submit): every step is a plain form.
    browser
        .cdp(
            "Emulation.setScriptExecutionDisabled",
            json!({ "value": true }),
        )
        .await;

    let request = sp.request(&idp.idp.config.sso_url());
    browser.goto(&TestSp::redirect_url(&request, "nojs")).await;
    browser.type_into("#username", "lee").await;
    browser.type_into("#password", PASSWORD).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    // The enrolment page: the QR code, and the secret as text beside it.
    browser.find("#totp-secret").await;
    let source = browser.source().await;
    assert!(source.contains("<svg"), "no QR code:\n{source}");
    let start = source.find("id=\"totp-secret\">").unwrap() + "id=\"totp-secret\">".len();
    let end = source[start..].find('<').unwrap() + start;
    let secret = secret_from_text(&source[start..end]);
    let now = chrono::Utc::now().timestamp();
    browser
        .type_into("#totp-code", &secret.code_at(now).unwrap())
        .await;
    browser.click("form[action='/mfa/enrol/totp'] button").await;
    browser.find("#recovery-codes").await;
    browser.click("form[action='/mfa/continue'] button").await;
    // Without script the SAML form waits for its button (saml-bindings 3.5.4 noscript fallback).
    browser.click("#saml-post button").await;
    let response = next_response(&mut responses, &browser).await;
    let assertion = sp
        .accept(&response, Some(&[request.id.as_str()]))
        .unwrap_or_else(|e| panic!("samael refused the response: {e}"));
    assert_eq!(class_of(&assertion), class_ref::REFEDS_MFA);

    // Next sign-in: the code form of the challenge page.
    browser.cdp("Network.clearBrowserCookies", json!({})).await;
    let request = sp.request(&idp.idp.config.sso_url());
    browser.goto(&TestSp::redirect_url(&request, "nojs2")).await;
    browser.type_into("#username", "lee").await;
    browser.type_into("#password", PASSWORD).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    let label = browser.find("label[for='totp-code']").await;
    assert!(!label.is_empty());
    let next = secret.code_at(now + 30).unwrap();
    browser.type_into("#totp-code", &next).await;
    browser.click("form[action='/mfa/totp'] button").await;
    browser.click("#saml-post button").await;
    let response = next_response(&mut responses, &browser).await;
    let assertion = sp
        .accept(&response, Some(&[request.id.as_str()]))
        .unwrap_or_else(|e| panic!("samael refused the response: {e}"));
    assert_eq!(class_of(&assertion), class_ref::REFEDS_MFA);
    browser.quit().await;
    idp.stop().await;
}

/// RFC 4648 base32 (spaces ignored) to a TOTP secret, as an authenticator app reads it.
fn secret_from_text(text: &str) -> tessera::mfa::TotpSecret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u64 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let value = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap_or_else(|| panic!("not base32: {text}"));
        bits = (bits << 5) | value as u64;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    tessera::mfa::TotpSecret::from_bytes(&out).unwrap()
}
