//! The admin API (`/api/v1`) over real HTTP against a running Tessera: the permission matrix
//! (role x endpoint x status, for every endpoint of the OpenAPI document), the token lifecycle, the
//! IP allowlists of the token's owner, CSRF for session-authenticated changes, the audit trail,
//! self-escalation and self-lockout refusals, and an all-or-nothing change. Runs against SQLite, and
//! the matrix also against PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;

use common::idp::{fetch_idp_metadata, Browser, BrowserOptions, SpOptions, Store, TestIdp, TestSp};
use common::postgres::TestDatabase;
use tessera::directory::{AdminRole, AttributeRelease, SpSettings, TokenScope};
use tessera::policy::{IpRule, RuleScope};

/// The four admin roles as the matrix columns, with the user holding each.
const ROLES: [(&str, AdminRole); 4] = [
    ("super", AdminRole::SuperAdmin),
    ("org", AdminRole::OrgAdmin),
    ("app", AdminRole::AppAdmin),
    ("help", AdminRole::Helpdesk),
];

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A client whose connections come from `address`.
fn client_at(address: &str) -> reqwest::Client {
    Browser::from_address(ip(address)).client
}

/// One API call with a bearer token; the status and the JSON body (Null when empty).
async fn call(
    client: &reqwest::Client,
    idp: &TestIdp,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, idp.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request, path, body).await
}

/// A GET with a bearer token; the status and the JSON body.
async fn get(
    client: &reqwest::Client,
    idp: &TestIdp,
    token: &str,
    path: &str,
) -> (StatusCode, Value) {
    call(client, idp, Some(token), Method::GET, path, None).await
}

/// Sends `request` (with `body` as JSON, if any); the status and the JSON body (Null when empty).
async fn send(
    mut request: reqwest::RequestBuilder,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
    };
    (status, json)
}

/// A token for `username` made directly in the directory (as `tessera token create` does).
async fn token_for(idp: &TestIdp, username: &str, scope: TokenScope) -> String {
    let expires = chrono::Utc::now().timestamp() + 3600;
    idp.idp
        .directory
        .create_api_token(username, "test", scope, expires, None)
        .await
        .unwrap()
        .1
}

/// A new user `username` holding `role` (on `sp`), and a write token of theirs.
async fn admin_token(idp: &TestIdp, username: &str, role: AdminRole, sp: Option<&str>) -> String {
    idp.add_user(username, &[]).await;
    grant(idp, username, role, sp).await;
    token_for(idp, username, TokenScope::Write).await
}

async fn grant(idp: &TestIdp, username: &str, role: AdminRole, sp: Option<&str>) {
    idp.idp
        .directory
        .grant_admin(username, role, sp, "console")
        .await
        .unwrap();
}

/// A raw connection to the directory's database, to look at what is stored.
async fn db(idp: &TestIdp) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&idp.idp.config.database_url)
        .await
        .unwrap()
}

/// A minimal HTTP/1.1 server on 127.0.0.1 serving SP metadata documents by path (404 for any other
/// path); a test changes what a path answers at will (a body, or an error status).
struct MetadataServer {
    /// `http://127.0.0.1:<port>`.
    base: String,
    /// path -> (status, body).
    docs: Arc<Mutex<HashMap<String, (u16, String)>>>,
}

impl MetadataServer {
    async fn start() -> MetadataServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let docs: Arc<Mutex<HashMap<String, (u16, String)>>> = Arc::default();
        let shared = docs.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let docs = shared.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let (status, body) = docs
                        .lock()
                        .unwrap()
                        .get(&path)
                        .cloned()
                        .unwrap_or((404, String::new()));
                    let out = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/samlmetadata+xml\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(out.as_bytes()).await;
                });
            }
        });
        MetadataServer { base, docs }
    }

    /// Serves `body` at `path` from now on.
    fn serve(&self, path: &str, body: &str) {
        self.answer(path, 200, body);
    }

    fn answer(&self, path: &str, status: u16, body: &str) {
        self.docs
            .lock()
            .unwrap()
            .insert(path.to_owned(), (status, body.to_owned()));
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// The four admins, each with a token, and for each of them a set of items of their own to act on
/// (so every role runs every row without stepping on another's).
struct Fixture {
    idp: TestIdp,
    _dir: tempfile::TempDir,
    /// role key -> bearer token.
    tokens: Vec<(&'static str, String)>,
    /// role key -> (SP id, SP metadata, token id of the role's own spare token, grant id to revoke).
    items: Vec<(&'static str, i64, String, i64, i64)>,
    /// Metadata of a not-yet-registered SP per role, for the registration row.
    new_sps: Vec<(&'static str, String)>,
    /// Serves `/sp-{r}.xml` (the metadata of the role's SP) and `/url-{r}.xml` (an SP to register from
    /// its URL).
    metadata_server: MetadataServer,
}

async fn fixture(database_url: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let idp = match database_url {
        None => TestIdp::start(dir.path(), &Store::Memory).await,
        Some(url) => {
            let url = url.to_owned();
            TestIdp::start_configured(dir.path(), &Store::Memory, "127.0.0.1", move |c| {
                c.database_url = url
            })
            .await
        }
    };
    let metadata = fetch_idp_metadata(&idp).await;
    let d = &idp.idp.directory;
    let mut tokens = Vec::new();
    let mut items = Vec::new();
    let mut new_sps = Vec::new();
    let metadata_server = MetadataServer::start().await;
    for (r, _) in ROLES {
        let sp = TestSp::new(&format!("sp-{r}"), &metadata, SpOptions::default());
        idp.add_user(&format!("t-{r}"), &[]).await;
        idp.add_user(&format!("h-{r}"), &[]).await;
        idp.add_user(&format!("n-{r}"), &[]).await;
        idp.register(&sp, SpSettings::default(), &[&format!("t-{r}")])
            .await;
        d.create_group(&format!("g-{r}")).await.unwrap();
        d.create_role(&format!("r-{r}")).await.unwrap();
        let sp_id = d.get_sp(&sp.entity_id).await.unwrap().unwrap().id;
        let revocable = d
            .grant_admin(&format!("h-{r}"), AdminRole::Helpdesk, None, "console")
            .await
            .unwrap()
            .id;
        items.push((r, sp_id, sp.metadata_xml.clone(), 0, revocable));
        metadata_server.serve(&format!("/sp-{r}.xml"), &sp.metadata_xml);
        let by_url = TestSp::new(&format!("url-{r}"), &metadata, SpOptions::default());
        metadata_server.serve(&format!("/url-{r}.xml"), &by_url.metadata_xml);
        let fresh = TestSp::new(&format!("new-{r}"), &metadata, SpOptions::default());
        new_sps.push((r, fresh.metadata_xml));
    }
    for (i, (r, role)) in ROLES.into_iter().enumerate() {
        idp.add_user(r, &[]).await;
        let sp = (role == AdminRole::AppAdmin).then(|| format!("https://sp-{r}.sp.test/metadata"));
        grant(&idp, r, role, sp.as_deref()).await;
        tokens.push((r, token_for(&idp, r, TokenScope::Write).await));
        let spare = d
            .create_api_token(
                r,
                "spare",
                TokenScope::Read,
                chrono::Utc::now().timestamp() + 60,
                None,
            )
            .await
            .unwrap()
            .0
            .id;
        items[i].3 = spare;
    }
    Fixture {
        idp,
        _dir: dir,
        tokens,
        items,
        new_sps,
        metadata_server,
    }
}

/// One row of the matrix: the request (templates: `{r}` role key, `{sp}` the role's SP id,
/// `{tok}` a spare token of the role, `{grant}` a grant to revoke, `{meta}` / `{newmeta}` SP metadata
/// as a JSON string, `{md}` the base URL of the fixture's metadata server) and the expected status for super, org, app and helpdesk admins.
struct MatrixRow {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    expect: [u16; 4],
}

const fn row(
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    expect: [u16; 4],
) -> MatrixRow {
    MatrixRow {
        method,
        path,
        body,
        expect,
    }
}

/// A session key that is well-formed but names no session.
const NO_SESSION: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Every endpoint, in an order where each row finds what it needs (deletions last).
const MATRIX: &[MatrixRow] = &[
    //                                                                    super org  app  help
    row("GET", "/api/v1/users", None, [200, 200, 200, 200]),
    row(
        "POST",
        "/api/v1/users",
        Some(r#"{"username":"new-{r}","password":"correct horse battery staple"}"#),
        [201, 201, 403, 403],
    ),
    row("GET", "/api/v1/users/t-{r}", None, [200, 200, 200, 200]),
    row(
        "PUT",
        "/api/v1/users/t-{r}",
        Some(r#"{"email":"t@example.org"}"#),
        [200, 200, 403, 403],
    ),
    row(
        "POST",
        "/api/v1/users/t-{r}/disable",
        None,
        [200, 200, 403, 403],
    ),
    row(
        "POST",
        "/api/v1/users/t-{r}/enable",
        None,
        [200, 200, 403, 403],
    ),
    row(
        "POST",
        "/api/v1/users/t-{r}/password",
        Some("{}"),
        [200, 200, 403, 200],
    ),
    row(
        "POST",
        "/api/v1/users/t-{r}/mfa/reset",
        None,
        [200, 200, 403, 200],
    ),
    // Unlocking: the same admins as a password reset; an address, the admins who see every user.
    row(
        "POST",
        "/api/v1/users/t-{r}/unlock",
        None,
        [200, 200, 403, 200],
    ),
    row(
        "POST",
        "/api/v1/addresses/198.51.100.7/unlock",
        None,
        [200, 200, 403, 200],
    ),
    row(
        "GET",
        "/api/v1/users/t-{r}/sessions",
        None,
        [200, 200, 403, 200],
    ),
    row(
        "DELETE",
        "/api/v1/users/t-{r}/sessions/{nosession}",
        None,
        [404, 404, 403, 404],
    ),
    row(
        "DELETE",
        "/api/v1/users/t-{r}/sessions",
        None,
        [200, 200, 403, 200],
    ),
    row(
        "PUT",
        "/api/v1/users/t-{r}/groups/g-{r}",
        None,
        [204, 204, 403, 403],
    ),
    row(
        "DELETE",
        "/api/v1/users/t-{r}/groups/g-{r}",
        None,
        [204, 204, 403, 403],
    ),
    row(
        "PUT",
        "/api/v1/users/t-{r}/roles/r-{r}",
        None,
        [204, 204, 403, 403],
    ),
    row(
        "DELETE",
        "/api/v1/users/t-{r}/roles/r-{r}",
        None,
        [204, 204, 403, 403],
    ),
    row("GET", "/api/v1/groups", None, [200, 200, 403, 403]),
    row(
        "POST",
        "/api/v1/groups",
        Some(r#"{"name":"ng-{r}"}"#),
        [201, 201, 403, 403],
    ),
    row("DELETE", "/api/v1/groups/g-{r}", None, [204, 204, 403, 403]),
    row("GET", "/api/v1/roles", None, [200, 200, 403, 403]),
    row(
        "POST",
        "/api/v1/roles",
        Some(r#"{"name":"nr-{r}"}"#),
        [201, 201, 403, 403],
    ),
    row("DELETE", "/api/v1/roles/r-{r}", None, [204, 204, 403, 403]),
    row("GET", "/api/v1/tokens", None, [200, 200, 200, 200]),
    // The matrix runs with tokens, and a token cannot mint tokens (created from a session: see
    // tokens_cannot_mint_tokens).
    row(
        "POST",
        "/api/v1/tokens",
        Some(r#"{"name":"mine","scope":"read","expires_in_days":1}"#),
        [403, 403, 403, 403],
    ),
    row("DELETE", "/api/v1/tokens/{tok}", None, [204, 204, 204, 204]),
    row("GET", "/api/v1/admin-grants", None, [200, 200, 403, 403]),
    // n-app is not a user of the app admin's SP: to them it does not exist.
    row(
        "POST",
        "/api/v1/admin-grants",
        Some(r#"{"username":"n-{r}","role":"helpdesk"}"#),
        [201, 201, 404, 403],
    ),
    row(
        "DELETE",
        "/api/v1/admin-grants/{grant}",
        None,
        [204, 204, 403, 403],
    ),
    row("GET", "/api/v1/ip-rules", None, [200, 200, 403, 403]),
    row(
        "POST",
        "/api/v1/ip-rules",
        Some(r#"{"name":"rule-{r}","ranges":["10.0.0.0/8"],"users":["t-{r}"]}"#),
        [201, 201, 403, 403],
    ),
    row(
        "DELETE",
        "/api/v1/ip-rules/rule-{r}",
        None,
        [204, 204, 403, 403],
    ),
    row("GET", "/api/v1/policies", None, [200, 200, 403, 403]),
    row(
        "POST",
        "/api/v1/policies",
        Some(r#"{"name":"p-{r}"}"#),
        [201, 201, 403, 403],
    ),
    row(
        "PUT",
        "/api/v1/policies/p-{r}",
        Some(r#"{"session_idle_secs":600}"#),
        [200, 200, 403, 403],
    ),
    row(
        "GET",
        "/api/v1/policy-assignments",
        None,
        [200, 200, 403, 403],
    ),
    row(
        "PUT",
        "/api/v1/policy-assignments",
        Some(r#"{"policy":"p-{r}","target_kind":"user","target_name":"t-{r}"}"#),
        [200, 200, 403, 403],
    ),
    row(
        "DELETE",
        "/api/v1/policy-assignments/user/t-{r}",
        None,
        [204, 204, 403, 403],
    ),
    row(
        "DELETE",
        "/api/v1/policies/p-{r}",
        None,
        [204, 204, 403, 403],
    ),
    row(
        "GET",
        "/api/v1/assignment-rules",
        None,
        [200, 200, 403, 403],
    ),
    row(
        "POST",
        "/api/v1/assignment-rules",
        Some(
            r#"{"name":"ar-{r}","condition":{"any":[{"all":[{"attribute":{"name":"department","values":["Sales"]}}]}]},"targets":["https://sp-{r}.sp.test/metadata"]}"#,
        ),
        [201, 201, 403, 403],
    ),
    row(
        "PUT",
        "/api/v1/assignment-rules/ar-{r}",
        Some(
            r#"{"name":"ar-{r}","condition":{"any":[{"all":[{"attribute":{"name":"department","values":["Sales"]}}]}]},"targets":["https://sp-{r}.sp.test/metadata"],"enabled":false}"#,
        ),
        [200, 200, 403, 403],
    ),
    row(
        "DELETE",
        "/api/v1/assignment-rules/ar-{r}",
        None,
        [204, 204, 403, 403],
    ),
    row(
        "GET",
        "/api/v1/explain?user=t-{r}&ip=192.0.2.1&methods=totp",
        None,
        [200, 200, 403, 403],
    ),
    row("GET", "/api/v1/audit", None, [200, 200, 403, 403]),
    row("GET", "/api/v1/logins", None, [200, 200, 200, 403]),
    row(
        "GET",
        "/api/v1/logins/summary?outcome=success",
        None,
        [200, 200, 200, 403],
    ),
    row("GET", "/api/v1/sps", None, [200, 200, 200, 200]),
    row(
        "POST",
        "/api/v1/sps",
        Some(r#"{"metadata_xml":{newmeta}}"#),
        [201, 201, 403, 403],
    ),
    row(
        "POST",
        "/api/v1/sps/from-url",
        Some(r#"{"metadata_url":"{md}/url-{r}.xml","refresh_secs":3600}"#),
        [201, 201, 403, 403],
    ),
    row("GET", "/api/v1/sps/{sp}", None, [200, 200, 200, 403]),
    // Name and logo: the SP's app admin too; a new metadata source: org-wide admins only, so the app
    // admin's SP has no source to refresh from (409 no_source).
    row(
        "PUT",
        "/api/v1/sps/{sp}/profile",
        Some(r#"{"display_name":"SP {r}","logo_url":"https://cdn.example/{r}.png"}"#),
        [200, 200, 200, 403],
    ),
    row(
        "PUT",
        "/api/v1/sps/{sp}/profile",
        Some(
            r#"{"display_name":"SP {r}","logo_url":"https://cdn.example/{r}.png","source":{"metadata_url":"{md}/sp-{r}.xml","refresh_secs":600}}"#,
        ),
        [200, 200, 403, 403],
    ),
    row(
        "POST",
        "/api/v1/sps/{sp}/refresh",
        None,
        [200, 200, 409, 403],
    ),
    row(
        "PUT",
        "/api/v1/sps/{sp}/settings",
        Some(r#"{"nameid_attribute":"email"}"#),
        [200, 200, 200, 403],
    ),
    row(
        "PUT",
        "/api/v1/sps/{sp}/metadata",
        Some(r#"{"metadata_xml":{meta}}"#),
        [200, 200, 200, 403],
    ),
    row(
        "POST",
        "/api/v1/sps/{sp}/disable",
        None,
        [200, 200, 200, 403],
    ),
    row(
        "POST",
        "/api/v1/sps/{sp}/enable",
        None,
        [200, 200, 200, 403],
    ),
    row("GET", "/api/v1/sps/{sp}/users", None, [200, 200, 200, 403]),
    row("GET", "/api/v1/sps/{sp}/access", None, [200, 200, 200, 403]),
    row(
        "PUT",
        "/api/v1/sps/{sp}/access",
        Some(r#"{"require_mfa":true,"mfa_within_secs":3600}"#),
        [200, 200, 403, 403],
    ),
    row(
        "DELETE",
        "/api/v1/sps/{sp}/users/t-{r}",
        None,
        [204, 204, 204, 403],
    ),
    row(
        "PUT",
        "/api/v1/sps/{sp}/users/t-{r}",
        None,
        [204, 204, 204, 403],
    ),
    row("DELETE", "/api/v1/sps/{sp}", None, [204, 204, 403, 403]),
    row("DELETE", "/api/v1/users/t-{r}", None, [204, 204, 403, 403]),
];

impl Fixture {
    fn render(&self, template: &str, role: usize) -> String {
        let (r, sp, meta, tok, grant) = &self.items[role];
        template
            .replace("{r}", r)
            .replace("{sp}", &sp.to_string())
            .replace("{tok}", &tok.to_string())
            .replace("{grant}", &grant.to_string())
            .replace("{nosession}", NO_SESSION)
            .replace("{md}", &self.metadata_server.base)
            .replace("{meta}", &serde_json::to_string(meta).unwrap())
            .replace(
                "{newmeta}",
                &serde_json::to_string(&self.new_sps[role].1).unwrap(),
            )
    }
}

/// The operations of the OpenAPI document as (METHOD, path template).
async fn documented_operations(idp: &TestIdp) -> BTreeSet<(String, String)> {
    let (status, doc) = call(
        &client_at("127.0.0.1"),
        idp,
        None,
        Method::GET,
        "/api/v1/openapi.json",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Which documented operation a concrete request is.
fn operation_of(ops: &BTreeSet<(String, String)>, method: &str, path: &str) -> (String, String) {
    let path = path.split('?').next().unwrap();
    let segments: Vec<&str> = path.split('/').collect();
    let matching: Vec<_> = ops
        .iter()
        .filter(|(m, template)| {
            let t: Vec<&str> = template.split('/').collect();
            m == method
                && t.len() == segments.len()
                && t.iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
        .collect();
    // A literal segment beats a parameter (e.g. /sessions vs /sessions/{key} never clash in length,
    // but /users/{username}/disable vs /users/{username}/{x} would): take the most literal match.
    let best = matching
        .iter()
        .max_by_key(|(_, t)| t.split('/').filter(|s| !s.starts_with('{')).count())
        .unwrap_or_else(|| panic!("{method} {path} is not in the OpenAPI document"));
    (*best).clone()
}

/// Runs the whole matrix; also checks that it covers every documented operation, that every one of
/// them answers 401 JSON without credentials (so it is routed), and 403 `not_admin` for a user
/// holding no admin role.
async fn run_matrix(f: &Fixture) {
    let idp = &f.idp;
    let client = client_at("127.0.0.1");
    let ops = documented_operations(idp).await;
    let mut covered = BTreeSet::new();
    idp.add_user("plain", &[]).await;
    let plain = token_for(idp, "plain", TokenScope::Write).await;
    for row in MATRIX {
        let method: Method = row.method.parse().unwrap();
        covered.insert(operation_of(&ops, row.method, row.path));
        let path = f.render(row.path, 0);
        let body = row
            .body
            .map(|b| serde_json::from_str::<Value>(&f.render(b, 0)).unwrap());
        let (status, json) = call(&client, idp, None, method.clone(), &path, body.as_ref()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{} {path}: {json}",
            row.method
        );
        assert_eq!(json["code"], "unauthenticated");
        let (status, json) = call(&client, idp, Some(&plain), method, &path, body.as_ref()).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{} {path}: {json}",
            row.method
        );
        assert_eq!(json["code"], "not_admin");
    }
    let missing: Vec<_> = ops.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "endpoints without a matrix row: {missing:?}"
    );
    for (i, (r, token)) in f.tokens.iter().enumerate() {
        for row in MATRIX {
            let method: Method = row.method.parse().unwrap();
            let path = f.render(row.path, i);
            let body = row
                .body
                .map(|b| serde_json::from_str::<Value>(&f.render(b, i)).unwrap());
            let (status, json) =
                call(&client, idp, Some(token), method, &path, body.as_ref()).await;
            assert_eq!(
                status.as_u16(),
                row.expect[i],
                "{r}: {} {path}: {json}",
                row.method
            );
            if status.is_client_error() {
                assert!(
                    json["code"].is_string() && json["message"].is_string(),
                    "{json}"
                );
            }
        }
    }
}

#[tokio::test]
async fn permission_matrix_sqlite() {
    let f = fixture(None).await;
    run_matrix(&f).await;
    // The app admin's list views show only their SP and its users.
    let app = &f.tokens[2].1;
    let client = client_at("127.0.0.1");
    let (_, sps) = get(&client, &f.idp, app, "/api/v1/sps").await;
    let names: Vec<&str> = sps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["entity_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["https://sp-app.sp.test/metadata"]);
    // ... and no other SP, nor the users of other SPs.
    let d = &f.idp.idp.directory;
    let metadata = fetch_idp_metadata(&f.idp).await;
    let foreign = TestSp::new("foreign", &metadata, SpOptions::default());
    f.idp.add_user("stranger", &[]).await;
    f.idp
        .register(&foreign, SpSettings::default(), &["stranger"])
        .await;
    let foreign_id = d.get_sp(&foreign.entity_id).await.unwrap().unwrap().id;
    for (method, path) in [
        (Method::GET, format!("/api/v1/sps/{foreign_id}")),
        (Method::GET, format!("/api/v1/sps/{foreign_id}/users")),
        (Method::POST, format!("/api/v1/sps/{foreign_id}/disable")),
        (
            Method::PUT,
            format!("/api/v1/sps/{foreign_id}/users/stranger"),
        ),
        (Method::POST, format!("/api/v1/sps/{foreign_id}/refresh")),
    ] {
        let (status, json) = call(&client, &f.idp, Some(app), method, &path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {json}");
    }
    let (_, users) = get(&client, &f.idp, app, "/api/v1/users").await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["t-app"]);
    assert!(
        d.get_sp(&foreign.entity_id)
            .await
            .unwrap()
            .unwrap()
            .settings
            .enabled
    );
}

#[tokio::test]
async fn permission_matrix_postgres() {
    let database = TestDatabase::create().await.unwrap();
    let f = fixture(Some(&database.url)).await;
    assert_eq!(
        f.idp.idp.directory.backend_name().await.unwrap(),
        "PostgreSQL"
    );
    run_matrix(&f).await;
}

/// A browser signed in to Tessera, with the CSRF value its session-authenticated changes send.
struct Session {
    browser: Browser,
    csrf: String,
}

impl Session {
    async fn sign_in(idp: &TestIdp, username: &str) -> Session {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let browser = Browser::with(BrowserOptions {
            jar: Some(jar.clone()),
            ..BrowserOptions::default()
        });
        browser.sign_in(idp, username).await;
        let csrf = csrf_cookie(&jar, idp);
        Session { browser, csrf }
    }

    /// One API call with the session (and the CSRF header); the status and the JSON body.
    async fn call(
        &self,
        idp: &TestIdp,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let request = self
            .browser
            .client
            .request(method, idp.url(path))
            .header("X-CSRF-Token", &self.csrf);
        send(request, path, body).await
    }
}

/// The value of the `tessera_csrf` cookie that `jar` holds for `idp`.
fn csrf_cookie(jar: &reqwest::cookie::Jar, idp: &TestIdp) -> String {
    let url: reqwest::Url = idp.url("/").parse().unwrap();
    let cookies = reqwest::cookie::CookieStore::cookies(jar, &url).unwrap();
    cookies
        .to_str()
        .unwrap()
        .split("; ")
        .find_map(|c| c.strip_prefix("tessera_csrf="))
        .unwrap()
        .to_owned()
}

/// A started Tessera with one super admin `root` holding a write token.
async fn with_root() -> (TestIdp, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    let token = admin_token(&idp, "root", AdminRole::SuperAdmin, None).await;
    (idp, dir, token)
}

#[tokio::test]
async fn token_lifecycle_shown_once_hashed_expiring_revocable_and_ranged() {
    let (idp, _dir, root) = with_root().await;
    let here = client_at("127.0.0.1");
    let body = json!({"name": "deploy", "scope": "write", "expires_in_days": 7, "ip_ranges": ["127.0.0.2/32"]});
    let session = Session::sign_in(&idp, "root").await;
    let (status, created) = session
        .call(&idp, Method::POST, "/api/v1/tokens", Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tsr_") && token.len() > 40, "{token}");
    let id = created["info"]["id"].as_i64().unwrap();
    let expires = created["info"]["expires_at"].as_i64().unwrap();
    let week = chrono::Utc::now().timestamp() + 7 * 86_400;
    assert!((week - 5..=week + 5).contains(&expires), "{expires}");

    // Shown once: no listing contains it, and the database holds only its SHA-256.
    let (_, list) = get(&here, &idp, &root, "/api/v1/tokens").await;
    assert!(list.as_array().unwrap().iter().any(|t| t["id"] == id));
    assert!(!list.to_string().contains(&token));
    let pool = db(&idp).await;
    let row =
        sqlx::query("SELECT token_hash, name, scope, ip_ranges FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let stored: String = row.try_get("token_hash").unwrap();
    assert_eq!(stored, hex::encode(openssl::sha::sha256(token.as_bytes())));
    for column in ["token_hash", "name", "scope", "ip_ranges"] {
        let value: Option<String> = row.try_get(column).unwrap();
        assert!(
            !value.unwrap_or_default().contains(&token[4..]),
            "{column} holds the token"
        );
    }

    // Its own ranges: refused from 127.0.0.1 with the JSON refusal, admitted from 127.0.0.2.
    let (status, refusal) = get(&here, &idp, &token, "/api/v1/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        refusal,
        json!({"code": "ip_denied", "message": "Access denied from this IP address"})
    );
    let there = client_at("127.0.0.2");
    let (status, _) = get(&there, &idp, &token, "/api/v1/users").await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = get(&here, &idp, &root, "/api/v1/tokens").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()
        .clone();
    assert!(listed["last_used"].is_i64(), "{listed}");

    // Revoked: refused at once.
    let (status, _) = call(
        &here,
        &idp,
        Some(&root),
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, json) = get(&there, &idp, &token, "/api/v1/users").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["code"], "invalid_token");

    // Expired: refused.
    let (_, expired) = idp
        .idp
        .directory
        .create_api_token(
            "root",
            "old",
            TokenScope::Write,
            chrono::Utc::now().timestamp() - 1,
            None,
        )
        .await
        .unwrap();
    let (status, json) = get(&here, &idp, &expired, "/api/v1/users").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["code"], "token_expired");

    // Unknown, malformed: refused alike, without detail.
    for bad in ["tsr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nope"] {
        let (status, json) = get(&here, &idp, bad, "/api/v1/users").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
        assert_eq!(json["code"], "invalid_token");
    }

    // A read token reads and cannot change anything.
    let reader = token_for(&idp, "root", TokenScope::Read).await;
    let (status, _) = get(&here, &idp, &reader, "/api/v1/groups").await;
    assert_eq!(status, StatusCode::OK);
    let (status, json) = call(
        &here,
        &idp,
        Some(&reader),
        Method::POST,
        "/api/v1/groups",
        Some(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json["code"], "insufficient_scope");
    assert!(idp.idp.directory.list_groups().await.unwrap().is_empty());

    // A token stops working when its owner loses the admin role or is disabled.
    let ex = admin_token(&idp, "ex", AdminRole::OrgAdmin, None).await;
    let (status, _) = get(&here, &idp, &ex, "/api/v1/users").await;
    assert_eq!(status, StatusCode::OK);
    let grants = idp.idp.directory.list_admin_grants().await.unwrap();
    let g = grants.iter().find(|g| g.username == "ex").unwrap();
    idp.idp.directory.revoke_admin_grant(g.id).await.unwrap();
    let (status, json) = get(&here, &idp, &ex, "/api/v1/users").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_admin"))
    );
    grant(&idp, "ex", AdminRole::OrgAdmin, None).await;
    idp.idp
        .directory
        .set_user_status("ex", tessera::directory::UserStatus::Disabled)
        .await
        .unwrap();
    let (status, json) = get(&here, &idp, &ex, "/api/v1/users").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("account_disabled"))
    );
}

#[tokio::test]
async fn token_requests_obey_the_owners_ip_allowlist_and_refusals_are_recorded() {
    let (idp, _dir, root) = with_root().await;
    idp.idp
        .directory
        .add_ip_rule(&IpRule {
            name: "root-office".into(),
            ranges: vec!["127.0.0.2/32".parse().unwrap()],
            scope: RuleScope::Users(vec!["root".into()]),
        })
        .await
        .unwrap();
    let (status, json) = get(&client_at("127.0.0.1"), &idp, &root, "/api/v1/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        json,
        json!({"code": "ip_denied", "message": "Access denied from this IP address"})
    );
    let (status, _) = get(&client_at("127.0.0.2"), &idp, &root, "/api/v1/users").await;
    assert_eq!(status, StatusCode::OK);
    idp.idp.events.flush().await;
    let pool = db(&idp).await;
    let rows = sqlx::query(
        "SELECT username, ip, outcome, reason FROM login_events WHERE username = 'root'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let ip: String = rows[0].try_get("ip").unwrap();
    let outcome: String = rows[0].try_get("outcome").unwrap();
    let reason: String = rows[0].try_get("reason").unwrap();
    assert_eq!((ip.as_str(), outcome.as_str()), ("127.0.0.1", "ip_denied"));
    assert!(reason.contains("root-office"), "{reason}");
}

#[tokio::test]
async fn session_authenticated_changes_need_the_csrf_header() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    idp.add_user("admin", &[]).await;
    grant(&idp, "admin", AdminRole::OrgAdmin, None).await;
    idp.add_user("someone", &[]).await;
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = Browser::with(BrowserOptions {
        jar: Some(jar.clone()),
        ..BrowserOptions::default()
    });
    // Without a session: 401.
    let (status, _) = call(
        &browser.client,
        &idp,
        None,
        Method::GET,
        "/api/v1/users",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    browser.sign_in(&idp, "admin").await;
    let (status, users) = call(
        &browser.client,
        &idp,
        None,
        Method::GET,
        "/api/v1/users",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{users}");
    let csrf = csrf_cookie(&jar, &idp);
    let body = json!({"name": "staff"});
    let post = |header: Option<&str>| {
        let mut request = browser
            .client
            .post(idp.url("/api/v1/groups"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(h) = header {
            request = request.header("X-CSRF-Token", h);
        }
        request.send()
    };
    for header in [None, Some("wrong"), Some(&"x".repeat(43)[..])] {
        let response = post(header).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let json: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(json["code"], "csrf");
    }
    assert!(idp.idp.directory.list_groups().await.unwrap().is_empty());
    let response = post(Some(&csrf)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(idp.idp.directory.list_groups().await.unwrap().len(), 1);
    // A signed-in user without an admin role gets nothing.
    let other = Browser::new();
    other.sign_in(&idp, "someone").await;
    let (status, json) = call(
        &other.client,
        &idp,
        None,
        Method::GET,
        "/api/v1/users",
        None,
    )
    .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_admin"))
    );
}

#[tokio::test]
async fn changes_are_audited_with_actor_before_after_time_and_address() {
    let (idp, _dir, root) = with_root().await;
    idp.add_user("alice", &[]).await;
    let here = client_at("127.0.0.2");
    let started = chrono::Utc::now().timestamp_millis();
    let (status, _) = call(
        &here,
        &idp,
        Some(&root),
        Method::PUT,
        "/api/v1/users/alice",
        Some(&json!({"department": "Finance"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/admin-grants",
        Some(&json!({"username": "alice", "role": "helpdesk"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, audit) = get(&here, &idp, &root, "/api/v1/audit?limit=10").await;
    assert_eq!(status, StatusCode::OK);
    let entries = audit.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    let (grant, update) = (&entries[0], &entries[1]);
    assert_eq!(update["actor"], "user:root");
    assert_eq!(update["action"], "user.update");
    assert_eq!(update["target"], "user:alice");
    assert_eq!(update["client_ip"], "127.0.0.2");
    assert_eq!(update["before"]["department"], Value::Null);
    assert_eq!(update["after"]["department"], "Finance");
    assert!(update["at"].as_i64().unwrap() >= started);
    assert_eq!(grant["action"], "grant.create");
    assert_eq!(grant["before"], Value::Null);
    assert_eq!(grant["after"]["role"], "helpdesk");
    // A refused change is not recorded as a change.
    let (status, _) = call(
        &here,
        &idp,
        Some(&root),
        Method::PUT,
        "/api/v1/users/nobody",
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, audit) = get(&here, &idp, &root, "/api/v1/audit").await;
    assert_eq!(audit.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn no_admin_can_raise_their_own_rights_and_org_admins_cannot_touch_super_admins() {
    let (idp, _dir, root) = with_root().await;
    let here = client_at("127.0.0.1");
    let olga = admin_token(&idp, "olga", AdminRole::OrgAdmin, None).await;
    let hal = admin_token(&idp, "hal", AdminRole::Helpdesk, None).await;
    idp.add_user("bob", &[]).await;

    let grant_body = |user: &str, role: &str| json!({"username": user, "role": role});
    for (token, user, role) in [
        (&olga, "olga", "super_admin"),
        (&olga, "olga", "helpdesk"),
        (&hal, "hal", "org_admin"),
        (&root, "root", "org_admin"),
    ] {
        let (status, json) = call(
            &here,
            &idp,
            Some(token),
            Method::POST,
            "/api/v1/admin-grants",
            Some(&grant_body(user, role)),
        )
        .await;
        assert_eq!(
            (status, json["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("self_escalation")),
            "{user} {role}"
        );
    }
    // Org admins grant below super admin only, and leave super admins alone.
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::POST,
        "/api/v1/admin-grants",
        Some(&grant_body("bob", "super_admin")),
    )
    .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, _) = call(
        &here,
        &idp,
        Some(&olga),
        Method::POST,
        "/api/v1/admin-grants",
        Some(&grant_body("bob", "org_admin")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(
        &here,
        &idp,
        Some(&olga),
        Method::POST,
        "/api/v1/admin-grants",
        Some(&grant_body("root", "helpdesk")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (method, path) in [
        (Method::POST, "/api/v1/users/root/disable"),
        (Method::POST, "/api/v1/users/root/password"),
        (Method::DELETE, "/api/v1/users/root"),
        (Method::PUT, "/api/v1/users/root/groups/staff"),
    ] {
        let (status, json) = call(&here, &idp, Some(&olga), method, path, Some(&json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {json}");
    }
    let root_grant = idp
        .idp
        .directory
        .list_admin_grants()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.username == "root")
        .unwrap();
    let (status, _) = call(
        &here,
        &idp,
        Some(&olga),
        Method::DELETE,
        &format!("/api/v1/admin-grants/{}", root_grant.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Helpdesk: resets for plain users only.
    let (status, reset) = call(
        &here,
        &idp,
        Some(&hal),
        Method::POST,
        "/api/v1/users/bob/password",
        Some(&json!({})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "bob is an org admin now: {reset}"
    );
    idp.add_user("carol", &[]).await;
    let (status, reset) = call(
        &here,
        &idp,
        Some(&hal),
        Method::POST,
        "/api/v1/users/carol/password",
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let otp = reset["one_time_password"].as_str().unwrap();
    assert!(matches!(
        idp.idp
            .directory
            .verify_password("carol", otp)
            .await
            .unwrap(),
        tessera::directory::PasswordCheck::Authenticated(_)
    ));
    // The super admin still holds exactly what they held.
    let grants = idp.idp.directory.list_admin_grants().await.unwrap();
    assert_eq!(grants.iter().filter(|g| g.username == "root").count(), 1);
    assert!(!grants
        .iter()
        .any(|g| g.username == "olga" && g.role != AdminRole::OrgAdmin));
}

#[tokio::test]
async fn a_change_that_locks_the_admin_out_is_refused_unless_confirmed() {
    let (idp, _dir, root) = with_root().await;
    let here = client_at("127.0.0.1");
    let rule = json!({"name": "office", "ranges": ["10.0.0.0/8"], "everyone": true});
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/ip-rules",
        Some(&rule),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    assert_eq!(json["code"], "would_lock_out");
    assert!(
        json["message"].as_str().unwrap().contains("127.0.0.1"),
        "{json}"
    );
    assert!(idp.idp.directory.list_ip_rules().await.unwrap().is_empty());
    // A policy allowlist that excludes the admin: the same.
    let policy = json!({"name": "strict", "ip_ranges": ["10.0.0.0/8"], "is_default": true});
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/policies",
        Some(&policy),
    )
    .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::CONFLICT, Some("would_lock_out"))
    );
    assert!(idp.idp.directory.list_policies().await.unwrap().is_empty());
    // A rule that keeps the admin's address in is fine.
    let keep = json!({"name": "loopback", "ranges": ["127.0.0.0/8"], "everyone": true});
    let (status, _) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/ip-rules",
        Some(&keep),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Confirmed: applied, and from then on this admin is refused from here.
    let (status, _) = call(
        &here,
        &idp,
        Some(&root),
        Method::DELETE,
        "/api/v1/ip-rules/loopback",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/ip-rules?confirm=true",
        Some(&rule),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, json) = get(&here, &idp, &root, "/api/v1/ip-rules").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("ip_denied"))
    );
}

#[tokio::test]
async fn a_refused_change_leaves_nothing_half_applied() {
    let (idp, _dir, root) = with_root().await;
    let here = client_at("127.0.0.1");
    idp.idp.directory.create_group("staff").await.unwrap();
    let body = json!({"username": "dave", "password": "correct horse battery staple", "groups": ["staff", "missing"]});
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/users",
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    assert_eq!(json["code"], "not_found");
    assert!(json["message"].as_str().unwrap().contains("missing"));
    assert!(idp
        .idp
        .directory
        .get_user_by_username("dave")
        .await
        .unwrap()
        .is_none());
    let pool = db(&idp).await;
    let members: i64 = sqlx::query("SELECT COUNT(*) AS n FROM user_groups")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(members, 0);
    let (_, audit) = get(&here, &idp, &root, "/api/v1/audit").await;
    assert_eq!(audit, json!([]));
    // The same request with existing groups creates the user with the membership, and a one-time
    // password when none is given.
    let body = json!({"username": "dave", "groups": ["staff"]});
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/users",
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(json["user"]["groups"], json!(["staff"]));
    assert!(json["one_time_password"].as_str().unwrap().len() >= 20);
}

#[tokio::test]
async fn errors_are_json_and_the_openapi_document_is_served() {
    let (idp, _dir, root) = with_root().await;
    let here = client_at("127.0.0.1");
    let (status, doc) = call(&here, &idp, None, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/v1/users/{username}"]["put"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["token"].is_object());
    assert_eq!(doc["security"].as_array().unwrap().len(), 2);
    // Routes can only be added through utoipa-axum's `routes!` (documented); the only plain axum
    // routes are the document itself and the JSON 404s, in api/mod.rs.
    let api_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    for entry in std::fs::read_dir(&api_dir).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        let plain = source.matches(".route(").count() + source.matches(".route_service(").count();
        let allowed = if path.ends_with("mod.rs") { 3 } else { 0 };
        assert_eq!(
            plain,
            allowed,
            "{} adds routes outside the OpenAPI document",
            path.display()
        );
    }
    for (method, path, body, code) in [
        (
            Method::GET,
            "/api/v1/nothing-here",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/v1/users/ghost",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/api/v1/groups",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/groups",
            Some(r#"{"nom":"x"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/v1/users",
            Some(r#"{"username":"weak","password":"123"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/v1/groups",
            Some(r#"{"name":"dup"}"#),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/v1/groups",
            Some(r#"{"name":"dup"}"#),
            StatusCode::CONFLICT,
        ),
        (
            Method::DELETE,
            "/api/v1/tokens/not-a-number",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/sps",
            Some(r#"{"metadata_xml":"<x/>"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let mut request = here.request(method, idp.url(path)).bearer_auth(&root);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), code, "{path}");
        let text = response.text().await.unwrap();
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: {text}"));
        if code.is_client_error() {
            assert!(
                json["code"].is_string() && json["message"].is_string(),
                "{path}: {json}"
            );
            let lower = text.to_lowercase();
            assert!(
                !lower.contains("sqlx")
                    && !lower.contains("select ")
                    && !lower.contains("panicked"),
                "{text}"
            );
        }
    }
}

#[tokio::test]
async fn console_bootstraps_a_super_admin_and_a_token_printed_once() {
    let (idp, dir, _) = with_root().await;
    idp.add_user("eve", &[]).await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("TESSERA_CONFIG")
            .env("TESSERA_DATABASE_URL", &idp.idp.config.database_url)
            .env("TESSERA_CERTS_DIR", dir.path().join("certs"))
            .env("TESSERA_METADATA_DIR", dir.path().join("metadata"))
            .env("TESSERA_DATA_DIR", dir.path().join("data"))
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let out = run(&["admin", "grant", "eve", "super_admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["admin", "grant", "eve", "app_admin"]);
    assert!(!out.status.success(), "an app admin grant needs --sp");
    let out = run(&[
        "token",
        "create",
        "--owner",
        "eve",
        "--scope",
        "write",
        "--expires-days",
        "1",
        "--ip",
        "127.0.0.0/8",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("tsr_"), "{token}");
    let (status, _) = get(
        &client_at("127.0.0.1"),
        &idp,
        &token,
        "/api/v1/admin-grants",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let out = run(&["token", "list", "--owner", "eve"]);
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        listing.contains("127.0.0.0/8") && !listing.contains(&token),
        "{listing}"
    );
    let id = listing.split('\t').next().unwrap().trim().to_owned();
    let out = run(&["token", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = get(
        &client_at("127.0.0.1"),
        &idp,
        &token,
        "/api/v1/admin-grants",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let out = run(&["admin", "revoke", "eve", "super_admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(idp
        .idp
        .directory
        .list_admin_grants()
        .await
        .unwrap()
        .iter()
        .all(|g| g.username != "eve"));
}

/// The attributes of an assertion by SAML name.
fn attributes(assertion: &samael::schema::Assertion) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for statement in assertion.attribute_statements.iter().flatten() {
        for attribute in &statement.attributes {
            out.insert(
                attribute.name.clone().unwrap_or_default(),
                attribute
                    .values
                    .iter()
                    .map(|v| v.value.clone().unwrap_or_default())
                    .collect(),
            );
        }
    }
    out
}

#[tokio::test]
async fn settings_read_then_written_back_keep_static_values_and_they_are_still_released() {
    let (idp, _dir, root) = with_root().await;
    let here = client_at("127.0.0.1");
    idp.add_user("alice", &[]).await;
    let d = &idp.idp.directory;
    d.create_group("staff").await.unwrap();
    d.add_user_to_group("alice", "staff").await.unwrap();
    d.create_role("auditor").await.unwrap();
    d.add_user_to_role("alice", "auditor").await.unwrap();
    let metadata = fetch_idp_metadata(&idp).await;
    let sp = TestSp::new("wiki", &metadata, SpOptions::default());
    idp.register(&sp, SpSettings::default(), &["alice"]).await;
    let id = d.get_sp(&sp.entity_id).await.unwrap().unwrap().id;
    let path = format!("/api/v1/sps/{id}/settings");
    let settings = json!({"attribute_release": [
        {"user_attribute": "email", "saml_name": "mail"},
        {"saml_name": "tenant", "static_values": ["acme", "acme-eu"]},
        {"user_attribute": "groups", "saml_name": "groups"},
        {"user_attribute": "roles", "saml_name": "roles"},
    ]});
    let (status, set) = call(
        &here,
        &idp,
        Some(&root),
        Method::PUT,
        &path,
        Some(&settings),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(
        set["settings"]["attribute_release"][1]["static_values"],
        json!(["acme", "acme-eu"])
    );

    // Read, then write back unchanged: nothing changes, static values included.
    let (status, read) = get(&here, &idp, &root, &format!("/api/v1/sps/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, written) = call(
        &here,
        &idp,
        Some(&root),
        Method::PUT,
        &path,
        Some(&read["settings"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{written}");
    assert_eq!(written["settings"], read["settings"]);
    let stored = d.get_sp(&sp.entity_id).await.unwrap().unwrap().settings;
    assert_eq!(
        stored.attribute_release[1],
        AttributeRelease::fixed("tenant", vec!["acme".into(), "acme-eu".into()])
    );
    assert_eq!(stored.attribute_release[2].user_attribute, "groups");

    // ... and still released, next to the memberships, as samael's SP reads them.
    let browser = Browser::new();
    let request = sp.request(&idp.idp.config.sso_url());
    let form = browser
        .sso_with_login(&idp, &TestSp::redirect_url(&request, ""), "alice")
        .await;
    let assertion = sp
        .accept(&form.saml_response(), Some(&[request.id.as_str()]))
        .unwrap();
    let attrs = attributes(&assertion);
    assert_eq!(attrs["tenant"], ["acme", "acme-eu"]);
    assert_eq!(attrs["mail"], ["alice@example.org"]);
    assert_eq!(attrs["groups"], ["staff"]);
    assert_eq!(attrs["roles"], ["auditor"]);

    // A rule with both a user attribute and static values is refused, and nothing changes.
    let both = json!({"attribute_release": [
        {"user_attribute": "email", "saml_name": "tenant", "static_values": ["x"]},
    ]});
    let (status, json) = call(&here, &idp, Some(&root), Method::PUT, &path, Some(&both)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert_eq!(
        d.get_sp(&sp.entity_id).await.unwrap().unwrap().settings,
        stored
    );
}

/// SP metadata for `entity_id` with an ID (so it can carry an enveloped signature) and its ACS at
/// `acs`.
fn sp_metadata(entity_id: &str, acs: &str) -> String {
    format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" ID=\"_md1\" \
         entityID=\"{entity_id}\"><md:SPSSODescriptor \
         protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">\
         <md:AssertionConsumerService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" \
         Location=\"{acs}\" index=\"0\"/></md:SPSSODescriptor></md:EntityDescriptor>"
    )
}

/// A fresh signing key and its certificate (PEM).
fn metadata_key(name: &str) -> (tessera::saml::xmldsig::keys::SigningKey, String) {
    use tessera::saml::xmldsig::keys::{generate_self_signed, KeyKind};
    let (key, _, pem) = generate_self_signed(
        KeyKind::Rsa2048,
        name,
        chrono::Utc::now() - chrono::Duration::days(1),
        30,
    )
    .unwrap();
    (key, pem)
}

/// `xml` with an enveloped signature by `key` on its root (saml-metadata 3.1).
fn signed_by(xml: &str, key: &tessera::saml::xmldsig::keys::SigningKey) -> String {
    use tessera::saml::{metadata::METADATA_LIMITS, xml, xmldsig::sign};
    let mut root = xml::parse(xml.as_bytes(), &METADATA_LIMITS).unwrap();
    sign::sign_enveloped(&mut root, key).unwrap();
    root.to_xml()
}

#[tokio::test]
async fn sps_are_registered_from_a_url_edited_and_refreshed_through_the_api() {
    const WIKI: &str = "https://wiki.sp.test/metadata";
    let (idp, _dir, root) = with_root().await;
    let d = &idp.idp.directory;
    let here = client_at("127.0.0.1");
    let server = MetadataServer::start().await;
    server.serve(
        "/wiki.xml",
        &sp_metadata(WIKI, "https://wiki.sp.test/acs/1"),
    );
    let post = |token: &str, body: Value| {
        let (here, idp, token) = (here.clone(), &idp, token.to_owned());
        async move {
            call(
                &here,
                idp,
                Some(&token),
                Method::POST,
                "/api/v1/sps/from-url",
                Some(&body),
            )
            .await
        }
    };

    // Registered from the URL, with the source and the first refresh shown.
    let (status, created) = post(
        &root,
        json!({"metadata_url": server.url("/wiki.xml"), "display_name": "Wiki", "refresh_secs": 3600}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let wiki = &created.as_array().unwrap()[0];
    assert_eq!(created.as_array().unwrap().len(), 1);
    assert_eq!(wiki["entity_id"], WIKI);
    assert_eq!(wiki["display_name"], "Wiki");
    assert_eq!(wiki["source"]["metadata_url"], server.url("/wiki.xml"));
    assert_eq!(wiki["source"]["refresh_secs"], 3600);
    assert_eq!(wiki["source"]["pinned_cert_pem"], Value::Null);
    assert!(wiki["refresh"]["last_success_at"].is_i64(), "{wiki}");
    assert_eq!(wiki["refresh"]["last_error"], Value::Null);
    let id = wiki["id"].as_i64().unwrap();

    // Creating SPs is for org-wide admins: an app admin of this very SP may not.
    let app = admin_token(&idp, "appy", AdminRole::AppAdmin, Some(WIKI)).await;
    const OTHER: &str = "https://other.sp.test/metadata";
    server.serve(
        "/other.xml",
        &sp_metadata(OTHER, "https://other.sp.test/acs"),
    );
    let (status, json) = post(&app, json!({"metadata_url": server.url("/other.xml")})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert!(d.get_sp(OTHER).await.unwrap().is_none());

    // A pinned certificate must have signed the metadata (saml-metadata 3.1).
    const SIGNED: &str = "https://signed.sp.test/metadata";
    let (signer, signer_pem) = metadata_key("signer");
    let (_, other_pem) = metadata_key("someone-else");
    server.serve(
        "/signed.xml",
        &signed_by(&sp_metadata(SIGNED, "https://signed.sp.test/acs"), &signer),
    );
    let (status, json) = post(
        &root,
        json!({"metadata_url": server.url("/signed.xml"), "pinned_cert_pem": other_pem}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert_eq!(json["code"], "invalid");
    assert!(d.get_sp(SIGNED).await.unwrap().is_none());
    let (status, json) = post(
        &root,
        json!({"metadata_url": server.url("/signed.xml"), "pinned_cert_pem": signer_pem}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(json[0]["source"]["pinned_cert_pem"], signer_pem.as_str());

    // A URL that does not answer with metadata: 502 with the reason, nothing registered.
    let (status, json) = post(&root, json!({"metadata_url": server.url("/missing.xml")})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{json}");
    assert_eq!(json["code"], "fetch_failed");
    assert!(json["message"].as_str().unwrap().contains("404"), "{json}");

    // Where the metadata comes from is org-wide: the app admin of the SP may not point it elsewhere
    // (the server would fetch whatever they name), nor change the pin; nothing changes.
    server.serve(
        "/wiki-v2.xml",
        &sp_metadata(WIKI, "https://wiki.sp.test/acs/2"),
    );
    let profile_path = format!("/api/v1/sps/{id}/profile");
    let profile = json!({
        "display_name": "Team Wiki",
        "logo_url": "https://cdn.example/wiki.png",
        "source": {"metadata_url": server.url("/wiki-v2.xml"), "refresh_secs": 600},
    });
    for attempt in [
        profile.clone(),
        json!({"display_name": "Wiki", "source": {"metadata_url": server.url("/wiki.xml"), "refresh_secs": 3600, "pinned_cert_pem": signer_pem}}),
        json!({"display_name": "Wiki", "source": {"metadata_url": "http://127.0.0.1:1/internal", "refresh_secs": 3600}}),
    ] {
        let (status, json) = call(
            &here,
            &idp,
            Some(&app),
            Method::PUT,
            &profile_path,
            Some(&attempt),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{attempt}: {json}");
        assert_eq!(json["code"], "forbidden");
    }
    let unchanged = d.get_sp(WIKI).await.unwrap().unwrap();
    assert_eq!(
        unchanged.source.as_ref().unwrap().url,
        server.url("/wiki.xml")
    );
    assert_eq!(unchanged.display_name, "Wiki");

    // An org-wide admin changes name, logo and source at once; the new URL's metadata is stored with
    // them.
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::PUT,
        &profile_path,
        Some(&profile),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["display_name"], "Team Wiki");
    assert_eq!(json["logo_url"], "https://cdn.example/wiki.png");
    assert_eq!(json["source"]["metadata_url"], server.url("/wiki-v2.xml"));
    assert_eq!(json["source"]["refresh_secs"], 600);
    assert!(json["metadata_xml"].as_str().unwrap().contains("acs/2"));

    // A new source that cannot be fetched, or a logo that is not https, changes nothing at all.
    for (bad, code) in [
        (
            json!({"display_name": "Renamed", "source": {"metadata_url": server.url("/missing.xml")}}),
            StatusCode::BAD_GATEWAY,
        ),
        (
            json!({"display_name": "Renamed", "logo_url": "javascript:alert(1)", "source": profile["source"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"display_name": "Renamed", "source": {"metadata_url": server.url("/wiki-v2.xml"), "refresh_secs": 5}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, json) = call(
            &here,
            &idp,
            Some(&root),
            Method::PUT,
            &profile_path,
            Some(&bad),
        )
        .await;
        assert_eq!(status, code, "{bad}: {json}");
    }
    let stored = d.get_sp(WIKI).await.unwrap().unwrap();
    assert_eq!(stored.display_name, "Team Wiki");
    assert_eq!(
        stored.source.as_ref().unwrap().url,
        server.url("/wiki-v2.xml")
    );

    // Refresh on request: replaced, then unchanged, then failed with the reason while the last good
    // metadata stays.
    let refresh_path = format!("/api/v1/sps/{id}/refresh");
    server.serve(
        "/wiki-v2.xml",
        &sp_metadata(WIKI, "https://wiki.sp.test/acs/3"),
    );
    for expected in ["replaced", "unchanged"] {
        let (status, json) = call(&here, &idp, Some(&app), Method::POST, &refresh_path, None).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["outcome"], expected, "{json}");
        assert_eq!(json["last_error"], Value::Null);
        assert_eq!(json["sp"]["refresh"]["last_error"], Value::Null);
    }
    assert!(d
        .get_sp(WIKI)
        .await
        .unwrap()
        .unwrap()
        .metadata_xml
        .contains("acs/3"));
    // A failed refresh: the app admin learns only that it failed (the details would make the refresh
    // a probe of what the server can reach); an org-wide admin sees why.
    const GENERIC: &str =
        "the metadata could not be fetched; an org admin can see why in the SP's refresh status";
    server.answer("/wiki-v2.xml", 500, "");
    let (status, json) = call(&here, &idp, Some(&app), Method::POST, &refresh_path, None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["outcome"], "failed");
    assert_eq!(json["last_error"], GENERIC, "{json}");
    assert_eq!(json["sp"]["refresh"]["last_error"], GENERIC, "{json}");
    let sp_path = format!("/api/v1/sps/{id}");
    let (_, shown) = get(&here, &idp, &app, &sp_path).await;
    assert_eq!(shown["refresh"]["last_error"], GENERIC, "{shown}");
    assert!(shown["metadata_xml"].as_str().unwrap().contains("acs/3"));
    let (_, listed) = get(&here, &idp, &app, "/api/v1/sps").await;
    assert_eq!(listed[0]["refresh"]["last_error"], GENERIC, "{listed}");
    let (_, shown) = get(&here, &idp, &root, &sp_path).await;
    assert!(
        shown["refresh"]["last_error"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{shown}"
    );

    // An SP registered from a document has nothing to refresh from.
    let metadata = fetch_idp_metadata(&idp).await;
    let uploaded = TestSp::new("uploaded", &metadata, SpOptions::default());
    idp.register(&uploaded, SpSettings::default(), &[]).await;
    let uploaded_id = d.get_sp(&uploaded.entity_id).await.unwrap().unwrap().id;
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        &format!("/api/v1/sps/{uploaded_id}/refresh"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    assert_eq!(json["code"], "no_source");

    // Audited with before and after: two creations, one profile change, three refreshes; the refused
    // requests are not there.
    let (_, audit) = get(&here, &idp, &root, "/api/v1/audit?limit=50").await;
    let entries = audit.as_array().unwrap();
    let of = |action: &str| -> Vec<&Value> {
        entries.iter().filter(|e| e["action"] == action).collect()
    };
    assert_eq!(of("sp.create").len(), 2, "{audit}");
    let profile_changes = of("sp.profile");
    assert_eq!(profile_changes.len(), 1, "{audit}");
    assert_eq!(profile_changes[0]["actor"], "user:root");
    assert_eq!(profile_changes[0]["target"], format!("sp:{WIKI}"));
    assert_eq!(profile_changes[0]["before"]["display_name"], "Wiki");
    assert_eq!(profile_changes[0]["after"]["display_name"], "Team Wiki");
    let refreshes = of("sp.refresh");
    assert_eq!(refreshes.len(), 3, "{audit}");
    // Newest first: the failure is recorded in its "after".
    assert!(refreshes[0]["after"]["refresh"]["last_error"]
        .as_str()
        .unwrap()
        .contains("500"));
    assert_eq!(refreshes[0]["before"]["refresh"]["last_error"], Value::Null);

    // The app admin still edits name and logo, sending the source back as it is.
    let (_, current) = get(&here, &idp, &root, &sp_path).await;
    let (status, json) = call(
        &here,
        &idp,
        Some(&app),
        Method::PUT,
        &profile_path,
        Some(&json!({"display_name": "Wiki 2", "logo_url": "https://cdn.example/wiki.png", "source": current["source"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        d.get_sp(WIKI).await.unwrap().unwrap().display_name,
        "Wiki 2"
    );
}

#[tokio::test]
async fn app_admins_get_the_same_404_for_users_outside_their_sps_as_for_unknown_users() {
    let (idp, _dir, _root) = with_root().await;
    let here = client_at("127.0.0.1");
    let metadata = fetch_idp_metadata(&idp).await;
    let sp = TestSp::new("wiki", &metadata, SpOptions::default());
    idp.add_user("alice", &[]).await;
    idp.add_user("stranger", &[]).await;
    idp.register(&sp, SpSettings::default(), &["alice"]).await;
    idp.idp.directory.create_group("staff").await.unwrap();
    let app = admin_token(&idp, "appy", AdminRole::AppAdmin, Some(&sp.entity_id)).await;
    let session = format!("/api/v1/users/{{u}}/sessions/{NO_SESSION}");
    let requests: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/api/v1/users/{u}", None),
        (
            Method::PUT,
            "/api/v1/users/{u}",
            Some(json!({"email": "x@example.org"})),
        ),
        (Method::DELETE, "/api/v1/users/{u}", None),
        (Method::POST, "/api/v1/users/{u}/disable", None),
        (Method::POST, "/api/v1/users/{u}/enable", None),
        (Method::POST, "/api/v1/users/{u}/password", Some(json!({}))),
        (Method::POST, "/api/v1/users/{u}/mfa/reset", None),
        (Method::GET, "/api/v1/users/{u}/sessions", None),
        (Method::DELETE, "/api/v1/users/{u}/sessions", None),
        (Method::DELETE, &session, None),
        (Method::PUT, "/api/v1/users/{u}/groups/staff", None),
        (Method::DELETE, "/api/v1/users/{u}/roles/staff", None),
    ];
    for (method, template, body) in requests {
        let ask = |username: &str| {
            let path = template.replace("{u}", username);
            let (here, idp, app, method, body) = (
                here.clone(),
                &idp,
                app.clone(),
                method.clone(),
                body.clone(),
            );
            async move { call(&here, idp, Some(&app), method, &path, body.as_ref()).await }
        };
        let (hidden_status, hidden) = ask("stranger").await;
        let (unknown_status, unknown) = ask("nobody").await;
        assert_eq!(hidden_status, StatusCode::NOT_FOUND, "{template}: {hidden}");
        assert_eq!(
            unknown_status,
            StatusCode::NOT_FOUND,
            "{template}: {unknown}"
        );
        // The same body but for the name asked about.
        assert_eq!(
            hidden.to_string().replace("stranger", "nobody"),
            unknown.to_string(),
            "{template}"
        );
        // A user of their SP is visible: read allowed, anything else a plain 403.
        let (status, json) = ask("alice").await;
        let expected = if method == Method::GET && !template.ends_with("sessions") {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(status, expected, "{template}: {json}");
    }
    // The same for the username of a new admin grant.
    for (username, expected) in [
        ("stranger", StatusCode::NOT_FOUND),
        ("nobody", StatusCode::NOT_FOUND),
        ("alice", StatusCode::FORBIDDEN),
    ] {
        let body = json!({"username": username, "role": "helpdesk"});
        let (status, json) = call(
            &here,
            &idp,
            Some(&app),
            Method::POST,
            "/api/v1/admin-grants",
            Some(&body),
        )
        .await;
        assert_eq!(status, expected, "{username}: {json}");
    }
    // Nothing was changed along the way.
    let stranger = idp
        .idp
        .directory
        .get_user_by_username("stranger")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stranger.email.as_deref(), Some("stranger@example.org"));
    assert_eq!(stranger.status, tessera::directory::UserStatus::Active);
}

/// Signs in on the login form of `idp` from `browser` and returns the status (303: signed in, 401:
/// wrong password, 429: locked out).
async fn sign_in_status(idp: &TestIdp, browser: &Browser, username: &str, password: &str) -> u16 {
    let form = browser.get(&idp.url("/login")).await;
    browser
        .submit_login(idp, &form, username, password)
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn helpdesk_unlocks_a_locked_out_user_and_address_through_the_api_and_it_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    // A memory store: the CLI cannot reach it, the API can.
    let idp = TestIdp::start_configured(dir.path(), &Store::Memory, "127.0.0.1", |c| {
        c.lockout.lockout_after = 3;
        c.lockout.slowdown_after = 100;
        c.lockout.slowdown_ms = 1;
        c.lockout.address_lockout_after = 6;
    })
    .await;
    let password = common::idp::PASSWORD;
    for name in ["root", "help", "boss", "alice", "bob"] {
        idp.add_user(name, &[]).await;
    }
    grant(&idp, "root", AdminRole::SuperAdmin, None).await;
    grant(&idp, "help", AdminRole::Helpdesk, None).await;
    grant(&idp, "boss", AdminRole::OrgAdmin, None).await;
    let root = token_for(&idp, "root", TokenScope::Write).await;
    let help = token_for(&idp, "help", TokenScope::Write).await;
    let api = client_at("127.0.0.1");

    // Three wrong passwords, then even the right one is refused.
    let alice_browser = Browser::from_address(ip("127.0.0.3"));
    for _ in 0..3 {
        assert_eq!(
            sign_in_status(&idp, &alice_browser, "alice", "wrong").await,
            401
        );
    }
    assert_eq!(
        sign_in_status(&idp, &alice_browser, "alice", password).await,
        429
    );
    let (status, user) = get(&api, &idp, &help, "/api/v1/users/alice").await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["locked"], true, "{user}");

    let (status, out) = call(
        &api,
        &idp,
        Some(&help),
        Method::POST,
        "/api/v1/users/alice/unlock",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["sign_in_locked"], true, "{out}");
    assert_eq!(out["recovery_failures_cleared"], true, "{out}");
    let (_, user) = get(&api, &idp, &help, "/api/v1/users/alice").await;
    assert_eq!(user["locked"], false, "{user}");
    assert_eq!(
        sign_in_status(&idp, &alice_browser, "alice", password).await,
        303
    );
    // Unlocking again says nothing was locked.
    let (status, out) = call(
        &api,
        &idp,
        Some(&help),
        Method::POST,
        "/api/v1/users/alice/unlock",
        None,
    )
    .await;
    assert_eq!(
        (status, &out["sign_in_locked"]),
        (StatusCode::OK, &json!(false))
    );

    // Helpdesk may not unlock an admin (as for a password reset); a super admin may.
    let (status, out) = call(
        &api,
        &idp,
        Some(&help),
        Method::POST,
        "/api/v1/users/boss/unlock",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{out}");
    let (status, _) = call(
        &api,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/users/boss/unlock",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, out) = call(
        &api,
        &idp,
        Some(&help),
        Method::POST,
        "/api/v1/users/nobody/unlock",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{out}");

    // The console's Unlock button (the helpdesk's browser session, through the API in-process).
    // A fresh browser: the one above is signed in now.
    let alice_browser = Browser::from_address(ip("127.0.0.5"));
    for _ in 0..3 {
        assert_eq!(
            sign_in_status(&idp, &alice_browser, "alice", "wrong").await,
            401
        );
    }
    assert_eq!(
        sign_in_status(&idp, &alice_browser, "alice", password).await,
        429
    );
    let console = Browser::new();
    console.sign_in(&idp, "help").await;
    let page = console.get(&idp.url("/admin/users/alice")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("id=\"locked\""), "{}", page.body);
    let csrf = page.field("csrf_token").unwrap();
    let page = console
        .post(
            &idp.url("/admin/users/alice"),
            &[
                ("csrf_token".to_owned(), csrf),
                ("op".to_owned(), "unlock".to_owned()),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("alice unlocked"), "{}", page.body);
    assert!(!page.body.contains("id=\"locked\""), "{}", page.body);
    assert_eq!(
        sign_in_status(&idp, &alice_browser, "alice", password).await,
        303
    );

    // An address that tried six usernames is locked for everyone behind it, until unlocked.
    let sprayer = Browser::from_address(ip("127.0.0.4"));
    for n in 0..6 {
        assert_eq!(
            sign_in_status(&idp, &sprayer, &format!("u{n}"), "Winter2024!").await,
            401
        );
    }
    assert_eq!(sign_in_status(&idp, &sprayer, "bob", password).await, 429);
    let (status, out) = call(
        &api,
        &idp,
        Some(&help),
        Method::POST,
        "/api/v1/addresses/not-an-ip/unlock",
        None,
    )
    .await;
    assert_eq!(
        (status, out["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request")),
        "{out}"
    );
    let (status, out) = call(
        &api,
        &idp,
        Some(&help),
        Method::POST,
        "/api/v1/addresses/::ffff:127.0.0.4/unlock",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out, json!({"address": "127.0.0.4", "sign_in_locked": true}));
    assert_eq!(sign_in_status(&idp, &sprayer, "bob", password).await, 303);

    // Each unlock is in the audit trail, with who did it and what was locked; the refused one is not.
    let (status, audit) = get(&api, &idp, &root, "/api/v1/audit?limit=50").await;
    assert_eq!(status, StatusCode::OK);
    let entries = audit.as_array().unwrap();
    let of = |action: &str, target: &str| -> Vec<&Value> {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["target"] == target)
            .collect()
    };
    let alice = of("user.unlock", "user:alice");
    assert_eq!(alice.len(), 3, "{audit}");
    let first = alice
        .iter()
        .find(|e| e["before"]["sign_in_locked"] == true)
        .unwrap();
    assert_eq!(first["actor"], "user:help");
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert_eq!(first["after"]["sign_in_locked"], false);
    let boss = of("user.unlock", "user:boss");
    assert_eq!(boss.len(), 1, "{audit}");
    assert_eq!(boss[0]["actor"], "user:root");
    let address = of("address.unlock", "address:127.0.0.4");
    assert_eq!(address.len(), 1, "{audit}");
    assert_eq!(address[0]["before"]["sign_in_locked"], true);
    idp.stop().await;
}

#[tokio::test]
async fn admins_change_their_own_password_and_mfa_on_the_account_pages_not_through_the_api() {
    let (idp, _dir, root) = with_root().await;
    let d = &idp.idp.directory;
    let here = client_at("127.0.0.1");
    idp.add_user("olga", &[]).await;
    grant(&idp, "olga", AdminRole::OrgAdmin, None).await;
    let olga = Session::sign_in(&idp, "olga").await;
    // Neither a token nor a session resets, on oneself, what guards the account.
    for (method, path, body) in [
        (Method::POST, "/api/v1/users/root/password", Some(json!({}))),
        (Method::POST, "/api/v1/users/root/mfa/reset", None),
        (Method::GET, "/api/v1/users/root/sessions", None),
        (Method::DELETE, "/api/v1/users/root/sessions", None),
        (Method::POST, "/api/v1/users/root/unlock", None),
        (
            Method::PUT,
            "/api/v1/users/root",
            Some(json!({"email": "x@example.org"})),
        ),
        (Method::PUT, "/api/v1/users/root/groups/staff", None),
    ] {
        let (status, json) = call(
            &here,
            &idp,
            Some(&root),
            method.clone(),
            path,
            body.as_ref(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {json}");
        assert_eq!(json["code"], "self_service", "{path}: {json}");
        let message = json["message"].as_str().unwrap();
        for page in ["/password", "/mfa/manage", "/sessions"] {
            assert!(message.contains(page), "{message}");
        }
        let own = path.replace("/root", "/olga");
        let (status, json) = olga.call(&idp, method, &own, body.as_ref()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{own}: {json}");
        assert_eq!(json["code"], "self_service", "{own}: {json}");
    }
    // The password still works, and nothing was audited.
    for user in ["root", "olga"] {
        assert!(matches!(
            d.verify_password(user, common::idp::PASSWORD)
                .await
                .unwrap(),
            tessera::directory::PasswordCheck::Authenticated(_)
        ));
    }
    let (_, audit) = get(&here, &idp, &root, "/api/v1/audit").await;
    assert_eq!(audit.as_array().unwrap().len(), 0, "{audit}");
    // Still refused as before: disabling or deleting oneself.
    for (method, path) in [
        (Method::POST, "/api/v1/users/root/disable"),
        (Method::DELETE, "/api/v1/users/root"),
    ] {
        let (status, json) = call(&here, &idp, Some(&root), method, path, None).await;
        assert_eq!(
            (status, json["code"].as_str()),
            (StatusCode::CONFLICT, Some("self")),
            "{path}: {json}"
        );
    }
    // The console's page of oneself renders, without the support actions (which it offers for a
    // plain user).
    let page = olga.browser.get(&idp.url("/admin/users/olga")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("olga"));
    assert!(
        !page.body.contains("value=\"reset_password\""),
        "{}",
        page.body
    );
    idp.add_user("bob", &[]).await;
    let page = olga.browser.get(&idp.url("/admin/users/bob")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("value=\"reset_password\""),
        "{}",
        page.body
    );
    // Reading oneself is fine, and another admin still resets the password of an admin below them.
    let (status, json) = get(&here, &idp, &root, "/api/v1/users/root").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/users/olga/password",
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn tokens_cannot_mint_tokens() {
    let (idp, _dir, _root) = with_root().await;
    let d = &idp.idp.directory;
    let here = client_at("127.0.0.1");
    // A narrow token: one address range, one day.
    let expires = chrono::Utc::now().timestamp() + 86_400;
    let narrow = d
        .create_api_token(
            "root",
            "narrow",
            TokenScope::Write,
            expires,
            Some(&["127.0.0.0/8".parse::<tessera::policy::IpRange>().unwrap()][..]),
        )
        .await
        .unwrap()
        .1;
    let before = d.list_api_tokens(None).await.unwrap().len();
    let wide = json!({"name": "wide", "scope": "write", "expires_in_days": 365});
    let (status, json) = call(
        &here,
        &idp,
        Some(&narrow),
        Method::POST,
        "/api/v1/tokens",
        Some(&wide),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert_eq!(json["code"], "token_cannot_mint");
    assert!(json["message"]
        .as_str()
        .unwrap()
        .contains("browser session"));
    assert_eq!(d.list_api_tokens(None).await.unwrap().len(), before);
    // From a browser session it works.
    let session = Session::sign_in(&idp, "root").await;
    let (status, json) = session
        .call(&idp, Method::POST, "/api/v1/tokens", Some(&wide))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(d.list_api_tokens(None).await.unwrap().len(), before + 1);
}

#[tokio::test]
async fn org_admins_cannot_change_what_applies_to_super_admins() {
    let (idp, _dir, root) = with_root().await;
    let d = &idp.idp.directory;
    let here = client_at("127.0.0.1");
    let olga = admin_token(&idp, "olga", AdminRole::OrgAdmin, None).await;
    idp.add_user("bob", &[]).await;
    d.create_group("ops").await.unwrap();
    d.add_user_to_group("root", "ops").await.unwrap();
    d.create_group("staff").await.unwrap();
    d.add_user_to_group("bob", "staff").await.unwrap();
    let affects = |status: StatusCode, json: &Value| {
        assert_eq!(
            (status, json["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("affects_super_admin")),
            "{json}"
        );
        assert!(json["message"].as_str().unwrap().contains("root"), "{json}");
    };
    let rule_on = |scope: Value| {
        let mut rule = json!({"name": "office", "ranges": ["10.0.0.0/8"]});
        for (k, v) in scope.as_object().unwrap() {
            rule[k] = v.clone();
        }
        rule
    };
    // An IP rule on the super admin, their group, or everyone: refused, nothing stored.
    for scope in [
        json!({"users": ["root"]}),
        json!({"groups": ["ops"]}),
        json!({"everyone": true}),
    ] {
        let (status, json) = call(
            &here,
            &idp,
            Some(&olga),
            Method::POST,
            "/api/v1/ip-rules?confirm=true",
            Some(&rule_on(scope)),
        )
        .await;
        affects(status, &json);
    }
    assert!(d.list_ip_rules().await.unwrap().is_empty());
    // A policy assigned to the super admin, or their group: refused.
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::POST,
        "/api/v1/policies",
        Some(&json!({"name": "lax"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    for (kind, name) in [("user", "root"), ("group", "ops")] {
        let (status, json) = call(
            &here,
            &idp,
            Some(&olga),
            Method::PUT,
            "/api/v1/policy-assignments",
            Some(&json!({"policy": "lax", "target_kind": kind, "target_name": name})),
        )
        .await;
        affects(status, &json);
    }
    // Once a super admin assigned it, the org admin may neither weaken it nor remove the assignment.
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::PUT,
        "/api/v1/policy-assignments",
        Some(&json!({"policy": "lax", "target_kind": "user", "target_name": "root"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::PUT,
        "/api/v1/policies/lax",
        Some(&json!({"session_idle_secs": 600})),
    )
    .await;
    affects(status, &json);
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::DELETE,
        "/api/v1/policy-assignments/user/root",
        None,
    )
    .await;
    affects(status, &json);
    // Nor delete a group the super admin is in.
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::DELETE,
        "/api/v1/groups/ops",
        None,
    )
    .await;
    affects(status, &json);
    assert!(d
        .list_groups()
        .await
        .unwrap()
        .iter()
        .any(|g| g.name == "ops"));
    // What does not touch a super admin is still the org admin's to change.
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::POST,
        "/api/v1/ip-rules",
        Some(&rule_on(json!({"groups": ["staff"]}))),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::DELETE,
        "/api/v1/ip-rules/office",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{json}");
    // The super admin may restrict themselves, confirming the lockout from here.
    let body = rule_on(json!({"users": ["root"]}));
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/ip-rules",
        Some(&body),
    )
    .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::CONFLICT, Some("would_lock_out")),
        "{json}"
    );
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::POST,
        "/api/v1/ip-rules?confirm=true",
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(d.list_ip_rules().await.unwrap().len(), 1);
}

#[tokio::test]
async fn org_admins_cannot_change_sp_access_that_applies_to_super_admins() {
    let (idp, _dir, root) = with_root().await;
    let d = &idp.idp.directory;
    let here = client_at("127.0.0.1");
    let olga = admin_token(&idp, "olga", AdminRole::OrgAdmin, None).await;
    idp.add_user("bob", &[]).await;
    let metadata = fetch_idp_metadata(&idp).await;
    let wiki = TestSp::new("wiki", &metadata, SpOptions::default());
    idp.register(&wiki, SpSettings::default(), &["root", "bob"])
        .await;
    let crm = TestSp::new("crm", &metadata, SpOptions::default());
    idp.register(&crm, SpSettings::default(), &["bob"]).await;
    let wiki_id = d.get_sp(&wiki.entity_id).await.unwrap().unwrap().id;
    let crm_id = d.get_sp(&crm.entity_id).await.unwrap().unwrap().id;
    let allowlist = json!({"ip_ranges": ["10.0.0.0/8"]});
    // An allowlist on an SP the super admin is assigned to: refused, nothing stored.
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::PUT,
        &format!("/api/v1/sps/{wiki_id}/access"),
        Some(&allowlist),
    )
    .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("affects_super_admin")),
        "{json}"
    );
    assert!(json["message"].as_str().unwrap().contains("root"), "{json}");
    assert_eq!(d.get_sp_access(&wiki.entity_id).await.unwrap(), None);
    // ... an MFA minimum too.
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::PUT,
        &format!("/api/v1/sps/{wiki_id}/access"),
        Some(&json!({"require_mfa": true})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert_eq!(d.get_sp_access(&wiki.entity_id).await.unwrap(), None);
    // On an SP no super admin can reach: allowed.
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::PUT,
        &format!("/api/v1/sps/{crm_id}/access"),
        Some(&allowlist),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["ip_ranges"], json!(["10.0.0.0/8"]), "{json}");
    assert!(d.get_sp_access(&crm.entity_id).await.unwrap().is_some());
    // The super admin may set it on the SP they use.
    let (status, json) = call(
        &here,
        &idp,
        Some(&root),
        Method::PUT,
        &format!("/api/v1/sps/{wiki_id}/access"),
        Some(&allowlist),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert!(d.get_sp_access(&wiki.entity_id).await.unwrap().is_some());
    // Then the org admin may neither remove nor change it ...
    for body in [json!({}), json!({"ip_ranges": ["0.0.0.0/0"]})] {
        let (status, json) = call(
            &here,
            &idp,
            Some(&olga),
            Method::PUT,
            &format!("/api/v1/sps/{wiki_id}/access"),
            Some(&body),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    }
    let stored = d.get_sp_access(&wiki.entity_id).await.unwrap().unwrap();
    assert_eq!(stored.ip_ranges.unwrap().len(), 1);
    // ... but repeating it unchanged is no change.
    let (status, json) = call(
        &here,
        &idp,
        Some(&olga),
        Method::PUT,
        &format!("/api/v1/sps/{wiki_id}/access"),
        Some(&allowlist),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn app_admins_cannot_assign_admins_to_their_sp() {
    let (idp, _dir, _root) = with_root().await;
    let d = &idp.idp.directory;
    let here = client_at("127.0.0.1");
    let metadata = fetch_idp_metadata(&idp).await;
    let sp = TestSp::new("crm", &metadata, SpOptions::default());
    idp.register(&sp, SpSettings::default(), &[]).await;
    let id = d.get_sp(&sp.entity_id).await.unwrap().unwrap().id;
    let app = admin_token(&idp, "appy", AdminRole::AppAdmin, Some(&sp.entity_id)).await;
    idp.add_user("hal", &[]).await;
    grant(&idp, "hal", AdminRole::Helpdesk, None).await;
    idp.add_user("plain", &[]).await;
    let assign = |user: &str| {
        let (here, idp, app, path) = (
            here.clone(),
            &idp,
            app.clone(),
            format!("/api/v1/sps/{id}/users/{user}"),
        );
        async move { call(&here, idp, Some(&app), Method::PUT, &path, None).await }
    };
    let (status, unknown) = assign("nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
    for admin in ["root", "hal", "appy"] {
        let (status, json) = assign(admin).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{admin}: {json}");
        assert_eq!(
            json["message"].as_str().unwrap().replace(admin, "nobody"),
            unknown["message"].as_str().unwrap()
        );
        assert_eq!(json["code"], unknown["code"]);
        assert!(!d.is_assigned(admin, &sp.entity_id).await.unwrap());
    }
    let (status, json) = assign("plain").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{json}");
    assert!(d.is_assigned("plain", &sp.entity_id).await.unwrap());
}
