//! The login-monitoring dashboard (issue #7): after a scripted mix of good and bad sign-ins, the admin
//! API's summary, list and CSV export show exactly what happened, filter as asked, and show an app
//! admin only their SP's events; and in headless Chromium the console page `/admin/logins` shows the
//! same numbers (read from its data attributes) and is saved as a screenshot. Sign-ins from a new
//! country or device are counted, filtered (`anomaly=true`) and badged on their rows, on SQLite and
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;

use common::idp::{
    fetch_idp_metadata, Browser, BrowserOptions, SpOptions, Store, TestIdp, TestSp, PASSWORD,
};
use common::webdriver::Driver;
use tessera::directory::{AdminRole, SpSettings, TokenScope};
use tessera::policy::{IpRule, RuleScope};

/// The unknown username of the mix: a spreadsheet would run it as a formula.
const FORMULA_USER: &str = "=SUM(1+1)";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

async fn grant(idp: &TestIdp, username: &str, role: AdminRole, sp: Option<&str>) {
    idp.idp
        .directory
        .grant_admin(username, role, sp, "test")
        .await
        .unwrap();
}

async fn token_for(idp: &TestIdp, username: &str) -> String {
    let expires = chrono::Utc::now().timestamp() + 3600;
    idp.idp
        .directory
        .create_api_token(username, "test", TokenScope::Read, expires, None)
        .await
        .unwrap()
        .1
}

/// Users alice and bob; bob may sign in only from 127.0.0.1.
async fn setup(idp: &TestIdp) {
    idp.add_user("alice", &[]).await;
    idp.add_user("bob", &[]).await;
    idp.idp
        .directory
        .add_ip_rule(&IpRule {
            name: "bob-desk".into(),
            ranges: vec!["127.0.0.1/32".parse().unwrap()],
            scope: RuleScope::Users(vec!["bob".into()]),
        })
        .await
        .unwrap();
}

/// Posts the login form from `browser`; the status of the answer.
async fn attempt(idp: &TestIdp, browser: &Browser, username: &str, password: &str) -> StatusCode {
    let form = browser.get(&idp.url("/login")).await;
    browser
        .submit_login(idp, &form, username, password)
        .await
        .status
}

/// The mix: 3 successes for alice, 2 wrong passwords for alice, 1 unknown (formula-looking) user, all
/// from 127.0.0.1, and bob refused from 127.0.0.3 by his IP rule.
async fn scripted_mix(idp: &TestIdp) {
    for _ in 0..3 {
        Browser::new().sign_in(idp, "alice").await;
    }
    for _ in 0..2 {
        let status = attempt(idp, &Browser::new(), "alice", "not the password").await;
        assert!(status.is_client_error(), "{status}");
    }
    let status = attempt(idp, &Browser::new(), FORMULA_USER, PASSWORD).await;
    assert!(status.is_client_error(), "{status}");
    let status = attempt(
        idp,
        &Browser::from_address(ip("127.0.0.3")),
        "bob",
        PASSWORD,
    )
    .await;
    assert!(status.is_client_error(), "{status}");
    idp.idp.events.flush().await;
}

/// `GET path` with a bearer token: status and body text.
async fn get(idp: &TestIdp, token: Option<&str>, path: &str) -> (StatusCode, String) {
    let client = Browser::new().client;
    let mut request = client.get(idp.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn get_json(idp: &TestIdp, token: &str, path: &str) -> Value {
    let (status, text) = get(idp, Some(token), path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The count of `key` in a summary table.
fn count_of(table: &Value, key: &str) -> i64 {
    table
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == key)
        .map_or(0, |c| c["count"].as_i64().unwrap())
}

/// (key, count) pairs of a summary table, in order.
fn pairs(table: &Value) -> Vec<(String, i64)> {
    table
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap_or("unknown").to_owned(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_api_counts_filters_and_exports_exactly_what_happened_and_scopes_app_admins() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    setup(&idp).await;
    let metadata = fetch_idp_metadata(&idp).await;
    let shop = TestSp::new("shop", &metadata, SpOptions::default());
    let other = TestSp::new("other", &metadata, SpOptions::default());
    idp.register(&shop, SpSettings::default(), &["alice"]).await;
    idp.register(&other, SpSettings::default(), &["alice"])
        .await;
    for (user, role, sp) in [
        ("root", AdminRole::SuperAdmin, None),
        ("org", AdminRole::OrgAdmin, None),
        (
            "shopadmin",
            AdminRole::AppAdmin,
            Some(shop.entity_id.as_str()),
        ),
        ("help", AdminRole::Helpdesk, None),
    ] {
        idp.add_user(user, &[]).await;
        grant(&idp, user, role, sp).await;
    }
    idp.add_user("plain", &[]).await;
    let root = token_for(&idp, "root").await;
    let org = token_for(&idp, "org").await;
    let shopadmin = token_for(&idp, "shopadmin").await;
    let help = token_for(&idp, "help").await;
    let plain = token_for(&idp, "plain").await;

    scripted_mix(&idp).await;

    // The summary: exactly the mix, for super and org admins alike.
    for token in [&root, &org] {
        let s = get_json(&idp, token, "/api/v1/logins/summary").await;
        assert_eq!(s["total"], 7, "{s:#}");
        assert_eq!(
            pairs(&s["by_outcome"]),
            vec![
                ("success".to_owned(), 3),
                ("unknown_user".to_owned(), 1),
                ("wrong_password".to_owned(), 2),
                ("ip_denied".to_owned(), 1),
            ],
            "{s:#}"
        );
        assert_eq!(
            pairs(&s["top_failing_users"]),
            vec![("alice".to_owned(), 2), (FORMULA_USER.to_owned(), 1)]
        );
        assert_eq!(
            pairs(&s["top_denied_addresses"]),
            vec![("127.0.0.1".to_owned(), 3), ("127.0.0.3".to_owned(), 1)]
        );
        assert_eq!(pairs(&s["countries"]), vec![("loopback".to_owned(), 7)]);
        // Every bucket's counts add up to the totals.
        let mut over_time = 0;
        for bucket in s["over_time"].as_array().unwrap() {
            for c in bucket["counts"].as_array().unwrap() {
                over_time += c["count"].as_i64().unwrap();
            }
        }
        assert_eq!(over_time, 7);
        assert_eq!(s["bucket"], "day");
    }

    // Filters.
    let total = |s: &Value| s["total"].as_i64().unwrap();
    let summary = |q: &str| {
        let path = format!("/api/v1/logins/summary?{q}");
        let (idp, root) = (&idp, &root);
        async move { get_json(idp, root, &path).await }
    };
    assert_eq!(total(&summary("user=alice").await), 5);
    let failed = summary("outcome=wrong_password,unknown_user").await;
    assert_eq!(total(&failed), 3);
    assert_eq!(count_of(&failed["by_outcome"], "success"), 0);
    assert_eq!(total(&summary("address=127.0.0.3").await), 1);
    assert_eq!(total(&summary("address=127.0.0.2/31").await), 1);
    assert_eq!(total(&summary("address=127.0.0.0/30").await), 7);
    assert_eq!(total(&summary("country=loopback").await), 7);
    assert_eq!(total(&summary("country=FR").await), 0);
    assert_eq!(total(&summary("to=2000-01-01").await), 0);
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let recent = summary(&format!("from={hour_ago}")).await;
    assert_eq!(total(&recent), 7);
    assert_eq!(recent["bucket"], "hour");
    assert_eq!(total(&summary("sp=https://nowhere.example/").await), 0);
    for bad in [
        "outcome=nope",
        "address=not-an-address",
        "from=yesterday",
        "kind=login",
        "bucket=week",
    ] {
        let (status, text) = get(&idp, Some(&root), &format!("/api/v1/logins/summary?{bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert!(error["message"].is_string(), "{text}");
    }

    // The list: newest first, filtered.
    let list = get_json(&idp, &root, "/api/v1/logins?user=alice&outcome=success").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list
        .windows(2)
        .all(|w| w[0]["at"].as_i64() >= w[1]["at"].as_i64()));
    assert!(list.iter().all(|e| e["ip"] == "127.0.0.1"));
    let denied = get_json(&idp, &root, "/api/v1/logins?outcome=ip_denied").await;
    assert_eq!(denied[0]["username"], "bob");
    assert_eq!(denied[0]["ip"], "127.0.0.3");
    assert_eq!(denied[0]["rule"], "ip rule \"bob-desk\"");
    assert_eq!(
        get_json(&idp, &root, "/api/v1/logins?limit=2")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // CSV: every event, the formula-looking username defused, the filters applied.
    let response = Browser::new()
        .client
        .get(idp.url("/api/v1/logins?format=csv"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 7, "{text}");
    let usernames: Vec<&str> = rows.iter().map(|r| &r[column("username")]).collect();
    assert!(usernames.contains(&"'=SUM(1+1)"), "{usernames:?}");
    assert!(!text.contains(",=SUM"), "{text}");
    let unknown = rows
        .iter()
        .find(|r| &r[column("outcome")] == "unknown_user")
        .unwrap();
    assert_eq!(&unknown[column("username")], "'=SUM(1+1)");
    let (status, text) = get(&idp, Some(&root), "/api/v1/logins?format=csv&user=alice").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text.lines().count(), 1 + 5, "{text}");
    let (status, _) = get(&idp, Some(&root), "/api/v1/logins?format=xml").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Who may read: not helpdesk, not a user without an admin role, not without credentials.
    for path in [
        "/api/v1/logins/summary",
        "/api/v1/logins",
        "/api/v1/logins?format=csv",
    ] {
        let (status, text) = get(&idp, Some(&help), path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {text}");
        let (status, text) = get(&idp, Some(&plain), path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {text}");
        assert!(text.contains("not_admin"), "{text}");
        let (status, _) = get(&idp, None, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // The app admin sees only their SP's events: none of the login form's, none of the other SP's.
    let none = get_json(&idp, &shopadmin, "/api/v1/logins/summary").await;
    assert_eq!(none["total"], 0, "{none:#}");
    let sso_url = idp.idp.config.sso_url();
    for sp in [&shop, &other] {
        let request = sp.request(&sso_url);
        let form = Browser::new()
            .sso_with_login(&idp, &TestSp::redirect_url(&request, ""), "alice")
            .await;
        assert!(form.is_saml_post(), "{}", form.body);
    }
    idp.idp.events.flush().await;
    let all = get_json(&idp, &root, "/api/v1/logins?limit=1000").await;
    let shop_events = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sp"] == shop.entity_id.as_str())
        .count();
    assert!(shop_events >= 1, "{all:#}");
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["sp"] == other.entity_id.as_str()));
    let seen = get_json(&idp, &shopadmin, "/api/v1/logins?limit=1000").await;
    let seen = seen.as_array().unwrap();
    assert_eq!(seen.len(), shop_events, "{seen:#?}");
    assert!(seen.iter().all(|e| e["sp"] == shop.entity_id.as_str()));
    let s = get_json(&idp, &shopadmin, "/api/v1/logins/summary").await;
    assert_eq!(s["total"].as_i64().unwrap(), shop_events as i64);
    // Naming the other SP (or a user) does not widen the view.
    let s = get_json(
        &idp,
        &shopadmin,
        &format!("/api/v1/logins/summary?sp={}", urlencode(&other.entity_id)),
    )
    .await;
    assert_eq!(s["total"], 0);
    let (_, text) = get(&idp, Some(&shopadmin), "/api/v1/logins?format=csv").await;
    assert_eq!(text.lines().count(), 1 + shop_events, "{text}");
    assert!(!text.contains(&other.entity_id), "{text}");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Where the screenshot goes: `target/screenshots/login_dashboard/`.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/login_dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A number the page shows in an element's `data-count` (0 when there is no such element).
async fn shown(browser: &common::webdriver::Browser<'_>, css: &str) -> i64 {
    let script = format!(
        "const e = document.querySelector({}); return e ? Number(e.dataset.count) : 0;",
        serde_json::to_string(css).unwrap()
    );
    browser.eval(&script).await.as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_the_numbers_of_a_scripted_mix() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    setup(&idp).await;
    idp.add_user("root", &[]).await;
    grant(&idp, "root", AdminRole::SuperAdmin, None).await;

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(profile.path()).await;
    browser.window_size(1280, 1400).await;
    // The admin's own sign-in is one more success (root, from 127.0.0.1, in Chromium).
    browser.goto(&idp.url("/admin/logins")).await;
    browser.type_into("#username", "root").await;
    browser.type_into("#password", PASSWORD).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    browser.find("#admin-user").await;

    scripted_mix(&idp).await;
    browser.goto(&idp.url("/admin/logins")).await;
    browser.find("#total").await;
    assert_eq!(shown(&browser, "#total").await, 8);
    assert_eq!(shown(&browser, "#outcome-success").await, 4);
    assert_eq!(shown(&browser, "#outcome-wrong_password").await, 2);
    assert_eq!(shown(&browser, "#outcome-unknown_user").await, 1);
    assert_eq!(shown(&browser, "#outcome-ip_denied").await, 1);
    assert_eq!(shown(&browser, "#outcome-locked_out").await, 0);
    assert_eq!(shown(&browser, "#top-users tr[data-user='alice']").await, 2);
    assert_eq!(
        shown(&browser, "#top-addresses tr[data-address='127.0.0.3']").await,
        1
    );
    assert_eq!(
        shown(&browser, "#countries tr[data-country='loopback']").await,
        8
    );
    // The chart's bars add up to the same numbers, per outcome.
    let bars = browser
        .eval(
            "const t = {}; for (const r of document.querySelectorAll('#chart rect')) \
             { t[r.dataset.outcome] = (t[r.dataset.outcome] || 0) + Number(r.dataset.count); } \
             return t;",
        )
        .await;
    assert_eq!(bars["success"], 4, "{bars}");
    assert_eq!(bars["wrong_password"], 2, "{bars}");
    assert_eq!(bars["unknown_user"], 1, "{bars}");
    assert_eq!(bars["ip_denied"], 1, "{bars}");
    let rows = browser
        .eval("return document.querySelectorAll('#events tr[data-outcome]').length;")
        .await;
    assert_eq!(rows, 8);
    // Flagged: root's first sign-in and alice's first (the test client sends no User-Agent: a new
    // country, no device), each row with its badge.
    assert_eq!(shown(&browser, "#anomalies-flagged").await, 2);
    assert_eq!(shown(&browser, "#anomalies-new-country").await, 2);
    let flagged = browser
        .eval(
            "return Array.from(document.querySelectorAll('#events tr')) \
             .filter(r => r.querySelector('.flag-new-country')).map(r => r.dataset.user);",
        )
        .await;
    assert_eq!(flagged, serde_json::json!(["alice", "root"]), "{flagged}");
    let shot = screenshot_dir().join("dashboard.png");
    browser.screenshot(&shot).await;
    println!("screenshot: {}", shot.display());

    // The filter form narrows the page, and the CSV link carries the same filters.
    browser.type_into("#f-user", "alice").await;
    browser.click("#filters button[type=submit]").await;
    browser.find("#f-user[value='alice']").await;
    assert_eq!(shown(&browser, "#total").await, 5);
    assert_eq!(shown(&browser, "#outcome-ip_denied").await, 0);
    let rows = browser
        .eval("return document.querySelectorAll('#events tr[data-user=\"alice\"]').length;")
        .await;
    assert_eq!(rows, 5);
    let csv = browser
        .eval("return document.getElementById('csv').getAttribute('href');")
        .await;
    let csv = csv.as_str().unwrap();
    assert!(
        csv.starts_with("/api/v1/logins?")
            && csv.contains("user=alice")
            && csv.contains("format=csv"),
        "{csv}"
    );
    // The link downloads that CSV with the admin's browser session (fetched here with Chromium's
    // cookies: the page's Content-Security-Policy lets no script fetch anything).
    let cookies = browser
        .command(reqwest::Method::GET, "/cookie", None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}={}",
                c["name"].as_str().unwrap(),
                c["value"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let response = Browser::new()
        .client
        .get(idp.url(csv))
        .header(reqwest::header::COOKIE, cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("\"time_utc\","), "{text}");
    assert_eq!(text.lines().count(), 1 + 5, "{text}");
    assert_eq!(text.matches(",\"alice\",").count(), 5, "{text}");
    let shot = screenshot_dir().join("dashboard-filtered.png");
    browser.screenshot(&shot).await;
    browser.quit().await;
}

/// Two desktop browsers woothee tells apart (browser and OS both differ).
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 \
                          (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

/// A browser (a fresh cookie jar, from 127.0.0.1) sending `user_agent` on every request.
fn browser_as(user_agent: &str) -> Browser {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::USER_AGENT,
        reqwest::header::HeaderValue::from_str(user_agent).unwrap(),
    );
    Browser::with(BrowserOptions {
        headers,
        ..BrowserOptions::default()
    })
}

/// The `<tr>` of the events table whose `data-id` is `id`, as HTML.
fn event_row(html: &str, id: i64) -> &str {
    let start = html
        .find(&format!("<tr data-id=\"{id}\""))
        .unwrap_or_else(|| panic!("no row {id} in the events table"));
    let len = html[start..].find("</tr>").unwrap();
    &html[start..start + len]
}

/// `(new_country, new_device)` as the badges of a table row say.
fn badges(row: &str) -> (bool, bool) {
    (
        row.contains("data-flag=\"new_country\""),
        row.contains("data-flag=\"new_device\""),
    )
}

#[tokio::test]
async fn anomalies_are_counted_filtered_and_shown_as_badges_on_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    anomalies_are_counted_filtered_and_shown(&idp).await;
}

/// The same on PostgreSQL (the count and the filter are hand-written SQL for both backends).
#[tokio::test]
async fn anomalies_are_counted_filtered_and_shown_on_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::postgres::TestDatabase::create().await.unwrap();
    let url = db.url.clone();
    let idp = TestIdp::start_configured(dir.path(), &Store::Memory, "127.0.0.1", move |c| {
        c.database_url = url
    })
    .await;
    anomalies_are_counted_filtered_and_shown(&idp).await;
    drop(idp);
    drop(db);
}

/// carol's three sign-ins (new on both counts, nothing new, a new device), a failure and dave's
/// first sign-in without a User-Agent: the summary's counts, `anomaly=true` in the API and the
/// console, and the badges on the right rows of `/admin/logins`.
async fn anomalies_are_counted_filtered_and_shown(idp: &TestIdp) {
    for user in ["carol", "dave", "root"] {
        idp.add_user(user, &[]).await;
    }
    grant(idp, "root", AdminRole::SuperAdmin, None).await;
    let root = token_for(idp, "root").await;

    // carol: first sign-in (new country and new device), the same browser again (nothing new),
    // another browser (new device, same country), then a wrong password from a third one (a
    // failure is never flagged). dave signs in without a User-Agent: a new country, no device.
    browser_as(FIREFOX_LINUX).sign_in(idp, "carol").await;
    browser_as(FIREFOX_LINUX).sign_in(idp, "carol").await;
    browser_as(SAFARI_MAC).sign_in(idp, "carol").await;
    let status = attempt(idp, &browser_as("curl/8.5.0"), "carol", "not the password").await;
    assert!(status.is_client_error(), "{status}");
    Browser::new().sign_in(idp, "dave").await;
    idp.idp.events.flush().await;

    let flags = |e: &Value| {
        (
            e["new_country"].as_bool().unwrap(),
            e["new_device"].as_bool().unwrap(),
        )
    };
    let carol = get_json(idp, &root, "/api/v1/logins?user=carol&outcome=success").await;
    let carol = carol.as_array().unwrap();
    assert_eq!(
        carol.iter().map(flags).collect::<Vec<_>>(),
        vec![(false, true), (false, false), (true, true)],
        "newest first: {carol:#?}"
    );
    assert_eq!(carol[0]["browser"], "Safari", "{:#}", carol[0]);
    assert_eq!(carol[2]["browser"], "Firefox", "{:#}", carol[2]);

    // The summary counts each flagged sign-in once and each kind apart.
    let anomalies = |q: &str| {
        let path = format!("/api/v1/logins/summary?{q}");
        let (idp, root) = (idp, &root);
        async move {
            let s = get_json(idp, root, &path).await;
            let a = &s["anomalies"];
            (
                s["total"].as_i64().unwrap(),
                a["flagged"].as_i64().unwrap(),
                a["new_country"].as_i64().unwrap(),
                a["new_device"].as_i64().unwrap(),
            )
        }
    };
    assert_eq!(anomalies("").await, (5, 3, 2, 2));
    assert_eq!(anomalies("anomaly=false").await, (5, 3, 2, 2));
    assert_eq!(anomalies("user=carol").await, (4, 2, 1, 2));
    assert_eq!(anomalies("user=dave").await, (1, 1, 1, 0));
    // anomaly=true keeps only the flagged sign-ins, and combines with the other filters.
    assert_eq!(anomalies("anomaly=true").await, (3, 3, 2, 2));
    assert_eq!(anomalies("anomaly=true&user=carol").await, (2, 2, 1, 2));
    assert_eq!(
        anomalies("anomaly=true&outcome=wrong_password").await,
        (0, 0, 0, 0)
    );
    assert_eq!(anomalies("anomaly=true&to=2000-01-01").await, (0, 0, 0, 0));
    let s = get_json(idp, &root, "/api/v1/logins/summary?anomaly=true").await;
    assert_eq!(pairs(&s["by_outcome"]), vec![("success".to_owned(), 3)]);
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    assert_eq!(
        anomalies(&format!("anomaly=true&from={hour_ago}")).await,
        (3, 3, 2, 2)
    );

    let flagged = get_json(idp, &root, "/api/v1/logins?anomaly=true").await;
    let flagged = flagged.as_array().unwrap();
    assert_eq!(flagged.len(), 3, "{flagged:#?}");
    assert!(flagged.iter().all(|e| flags(e) != (false, false)));
    assert_eq!(flagged[0]["username"], "dave");
    assert_eq!(
        flagged.iter().map(|e| e["id"].clone()).collect::<Vec<_>>(),
        vec![
            flagged[0]["id"].clone(),
            carol[0]["id"].clone(),
            carol[2]["id"].clone()
        ]
    );
    let (status, text) = get(idp, Some(&root), "/api/v1/logins?anomaly=true&format=csv").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text.lines().count(), 1 + 3, "{text}");
    for bad in ["anomaly=yes", "anomaly=1"] {
        for path in ["/api/v1/logins", "/api/v1/logins/summary"] {
            let (status, text) = get(idp, Some(&root), &format!("{path}?{bad}")).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {text}");
            assert!(text.contains("anomaly must be true or false"), "{text}");
        }
    }

    // The console page: root's own sign-in (no User-Agent: a new country) is the 4th flagged one.
    let admin = Browser::new();
    admin.sign_in(idp, "root").await;
    idp.idp.events.flush().await;
    let page = admin.get(&idp.url("/admin/logins")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let html = &page.body;
    assert!(html.contains("<th>Flags</th>"), "{html}");
    assert!(
        html.contains("id=\"anomalies-flagged\" data-count=\"4\""),
        "{html}"
    );
    assert!(html.contains("id=\"anomalies-new-country\" data-count=\"3\""));
    assert!(html.contains("id=\"anomalies-new-device\" data-count=\"2\""));
    for (event, expected) in carol
        .iter()
        .zip([(false, true), (false, false), (true, true)])
    {
        let row = event_row(html, event["id"].as_i64().unwrap());
        assert_eq!(badges(row), expected, "{row}");
        assert_eq!(
            row.contains("data-new-country=\"true\""),
            expected.0,
            "{row}"
        );
        assert_eq!(
            row.contains("data-new-device=\"true\""),
            expected.1,
            "{row}"
        );
    }
    assert_eq!(
        badges(event_row(html, flagged[0]["id"].as_i64().unwrap())),
        (true, false)
    );
    let failure = get_json(idp, &root, "/api/v1/logins?outcome=wrong_password").await;
    assert_eq!(
        badges(event_row(html, failure[0]["id"].as_i64().unwrap())),
        (false, false)
    );
    assert_eq!(html.matches("<tr data-id=").count(), 6, "{html}");
    assert!(html.contains("id=\"f-anomaly\" name=\"anomaly\" value=\"true\">"));

    // The filter form's checkbox: only the flagged rows, the box ticked, the CSV link filtered too.
    let page = admin.get(&idp.url("/admin/logins?anomaly=true")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let html = &page.body;
    assert_eq!(html.matches("<tr data-id=").count(), 4, "{html}");
    assert_eq!(html.matches("data-flag=\"new_country\"").count(), 3);
    assert_eq!(html.matches("data-flag=\"new_device\"").count(), 2);
    assert!(html.contains("id=\"total\" data-count=\"4\""), "{html}");
    assert!(html.contains("value=\"true\" checked>"), "{html}");
    let at = html.find("id=\"csv\" href=\"").unwrap() + "id=\"csv\" href=\"".len();
    let csv = &html[at..at + html[at..].find('"').unwrap()];
    assert!(
        csv.contains("anomaly=true") && csv.contains("format=csv"),
        "{csv}"
    );
}
