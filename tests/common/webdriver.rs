//! A headless Chromium driven through chromedriver's WebDriver HTTP API (W3C WebDriver), for the tests
//! that check pages in a real browser; and an ACS for a test SP that a browser can post to.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (scripts/bootstrap.sh installs them).
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Form, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// How long any one page may take to appear.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The element reference key of W3C WebDriver answers.
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebDriver answer as JSON.
pub async fn read_json(response: reqwest::Response) -> Result<Value, String> {
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

/// chromedriver, killed when dropped.
pub struct Driver {
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
    pub async fn start() -> Driver {
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
    pub async fn session(&self, profile: &std::path::Path) -> Browser<'_> {
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
pub struct Browser<'a> {
    /// The chromedriver it runs under.
    driver: &'a Driver,
    /// `<driver>/session/<id>`.
    session: String,
}

impl Browser<'_> {
    /// A WebDriver command; the answer's `value`, or a panic with the WebDriver error.
    pub async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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
    pub async fn try_command(&self, path: &str, body: Value) -> Option<Value> {
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
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits for the element matching `css` and returns its reference.
    pub async fn find(&self, css: &str) -> String {
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

    pub async fn type_into(&self, css: &str, text: &str) {
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

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Runs `script` in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Sets the window size, so screenshots show whole pages at a desktop width.
    pub async fn window_size(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// A PNG screenshot of the viewport, written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Waits for the element matching `css` and returns its text.
    pub async fn find_text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Chooses `file` in the file input matching `css` (WebDriver sends the path as the keys).
    pub async fn send_file(&self, css: &str, file: &std::path::Path) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": file.display().to_string() })),
        )
        .await;
    }

    /// The URL the browser shows now.
    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn quit(self) {
        let _ = self.driver.http.delete(&self.session).send().await;
    }
}

/// An ACS for the SP: every SAMLResponse posted to it goes into the channel.
pub async fn acs_server() -> (String, mpsc::UnboundedReceiver<String>) {
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
pub async fn next_response(
    rx: &mut mpsc::UnboundedReceiver<String>,
    browser: &Browser<'_>,
) -> String {
    match tokio::time::timeout(PAGE_TIMEOUT, rx.recv()).await {
        Ok(Some(response)) => response,
        _ => panic!(
            "no SAML response reached the ACS; the page:\n{}",
            browser.source().await
        ),
    }
}
