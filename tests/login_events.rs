//! Login monitoring (issue #7): every sign-in attempt and SSO recorded with its outcome, reason,
//! location and device, and nothing secret; batching and the flush at shutdown; retention; the
//! dashboard queries and CSV export; the brute-force lockout under parallel attempts (memory and
//! Redis stores) and its administrator unlock; the new-country / new-device flags and the policy that
//! asks a second factor for them.
//!
//! Locations come from a small MaxMind-format city database this file writes itself
//! ([`write_test_mmdb`]), over the documentation ranges: 203.0.113.0/24 is Paris (FR), 198.51.100.0/24
//! New York (US), both in MaxMind's GeoIP2 layout, and 2001:db8::/32 Berlin (DE) in the flat layout
//! of the ip-location-db packages. Requests come from 127.0.0.1, a trusted proxy, with
//! `X-Forwarded-For` naming those addresses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use tempfile::TempDir;

use common::idp::{
    releasing_settings, Browser, BrowserOptions, Page, SpOptions, Store, TestIdp, TestSp, PASSWORD,
};
use tessera::config::Config;
use tessera::directory::{Directory, MfaActor, UserStatus};
use tessera::events::query::{export_csv, Bucket, Dimension, EventFilter};
use tessera::events::{
    lockout, Enricher, Kind, LoginEvent, Outcome, Recorder, RecorderSettings, StoredEvent,
};
use tessera::policy::{AssignmentTarget, IpRule, PolicyAssignment, RuleScope, SecurityPolicy};

const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";

// ---------------------------------------------------------------------------------------------
// A minimal MaxMind DB writer (format spec: maxmind.github.io/MaxMind-DB, version 2.0): a binary
// trie over IPv6 addresses with 24-bit records, a data section, and the metadata map.

/// A value of the MMDB data section.
enum Val {
    Str(&'static str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'static str, Val)>),
    Array(Vec<Val>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (size_bits, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 285 {
        (29, vec![(size - 29) as u8])
    } else {
        let n = size - 285;
        (30, vec![(n >> 8) as u8, n as u8])
    };
    if kind <= 7 {
        out.push((kind << 5) | size_bits);
    } else {
        // Extended type: type 0 in the control byte, then the type minus 7.
        out.push(size_bits);
        out.push(kind - 7);
    }
    out.extend(extra);
}

fn encode(v: &Val, out: &mut Vec<u8>) {
    let uint = |out: &mut Vec<u8>, kind: u8, value: u64, width: usize| {
        let bytes = value.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count().min(8);
        let significant = &bytes[skip..];
        assert!(significant.len() <= width);
        control(out, kind, significant.len());
        out.extend_from_slice(significant);
    };
    match v {
        Val::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Val::U16(n) => uint(out, 5, u64::from(*n), 2),
        Val::U32(n) => uint(out, 6, u64::from(*n), 4),
        Val::U64(n) => uint(out, 9, *n, 8),
        Val::Map(entries) => {
            control(out, 7, entries.len());
            for (k, v) in entries {
                encode(&Val::Str(k), out);
                encode(v, out);
            }
        }
        Val::Array(items) => {
            control(out, 11, items.len());
            for item in items {
                encode(item, out);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// Writes a city database with the networks given (IPv4 networks are placed under ::/96, where
/// readers of an IPv6 database look IPv4 addresses up).
fn write_mmdb(path: &Path, networks: &[(ipnet::IpNet, Val)]) {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (net, value) in networks {
        let offset = data.len();
        encode(value, &mut data);
        let (bits, len) = match net {
            ipnet::IpNet::V4(v4) => (
                u128::from(u32::from(v4.network())),
                96 + usize::from(v4.prefix_len()),
            ),
            ipnet::IpNet::V6(v6) => (u128::from(v6.network()), usize::from(v6.prefix_len())),
        };
        let mut node = 0;
        for i in 0..len {
            let bit = ((bits >> (127 - i)) & 1) as usize;
            if i == len - 1 {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for rec in node {
            let value = match rec {
                Rec::Empty => count,
                Rec::Node(n) => *n,
                Rec::Data(offset) => count + 16 + offset,
            };
            out.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    encode(
        &Val::Map(vec![
            ("binary_format_major_version", Val::U16(2)),
            ("binary_format_minor_version", Val::U16(0)),
            ("build_epoch", Val::U64(1_700_000_000)),
            ("database_type", Val::Str("Tessera-Test-City")),
            (
                "description",
                Val::Map(vec![("en", Val::Str("Tessera's test city database"))]),
            ),
            ("ip_version", Val::U16(6)),
            ("languages", Val::Array(vec![Val::Str("en")])),
            ("node_count", Val::U32(count as u32)),
            ("record_size", Val::U16(24)),
        ]),
        &mut out,
    );
    std::fs::write(path, out).unwrap();
}

/// GeoIP2 City layout: `country.iso_code`, `city.names.en`.
fn geoip2_city(country: &'static str, city: &'static str) -> Val {
    Val::Map(vec![
        (
            "city",
            Val::Map(vec![("names", Val::Map(vec![("en", Val::Str(city))]))]),
        ),
        (
            "country",
            Val::Map(vec![
                ("iso_code", Val::Str(country)),
                ("names", Val::Map(vec![("en", Val::Str("-"))])),
            ]),
        ),
    ])
}

/// The project's test database (see the file's header).
fn write_test_mmdb(dir: &Path) -> PathBuf {
    let path = dir.join("test-city.mmdb");
    write_mmdb(
        &path,
        &[
            (
                "203.0.113.0/24".parse().unwrap(),
                geoip2_city("FR", "Paris"),
            ),
            (
                "198.51.100.0/24".parse().unwrap(),
                geoip2_city("US", "New York"),
            ),
            (
                "2001:db8::/32".parse().unwrap(),
                Val::Map(vec![
                    ("city", Val::Str("Berlin")),
                    ("country_code", Val::Str("DE")),
                ]),
            ),
        ],
    );
    path
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A browser whose requests say they come from `ip` (through the trusted proxy) with `agent`.
fn browser_at(ip: &str, agent: &str) -> Browser {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_str(ip).unwrap());
    headers.insert("user-agent", HeaderValue::from_str(agent).unwrap());
    Browser::with(BrowserOptions {
        headers,
        ..BrowserOptions::default()
    })
}

/// Starts Tessera with the test GeoIP database, 127.0.0.0/8 as trusted proxies, and `configure`.
async fn start(dir: &TempDir, store: &Store, configure: impl FnOnce(&mut Config)) -> TestIdp {
    let mmdb = write_test_mmdb(dir.path());
    TestIdp::start_configured(dir.path(), store, "127.0.0.1", |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
        c.events.geoip_database = Some(mmdb);
        configure(c);
    })
    .await
}

/// Posts the login form (fetching it first for the CSRF cookie).
async fn login(idp: &TestIdp, browser: &Browser, username: &str, password: &str) -> Page {
    let form = browser.get(&idp.url("/login")).await;
    browser.submit_login(idp, &form, username, password).await
}

/// Posts a code to an MFA endpoint with the page's CSRF token.
async fn post_code(idp: &TestIdp, browser: &Browser, path: &str, code: &str) -> Page {
    let page = browser.get(&idp.url("/mfa")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page.field("csrf_token").expect("csrf on the MFA page");
    browser
        .post(
            &idp.url(path),
            &[
                ("csrf_token".to_owned(), csrf),
                ("code".to_owned(), code.to_owned()),
            ],
        )
        .await
}

async fn all_events(idp: &TestIdp) -> Vec<StoredEvent> {
    idp.idp.events.flush().await;
    idp.idp
        .directory
        .latest_login_events(&EventFilter::default(), 10_000)
        .await
        .unwrap()
}

fn find<'a>(events: &'a [StoredEvent], username: &str, outcome: &str) -> &'a StoredEvent {
    events
        .iter()
        .find(|e| e.username == username && e.outcome == outcome)
        .unwrap_or_else(|| panic!("no {outcome} event for {username:?} in {events:#?}"))
}

/// Every text of a stored event, to search for secrets.
fn texts(e: &StoredEvent) -> Vec<String> {
    [
        Some(e.kind.clone()),
        Some(e.username.clone()),
        Some(e.ip.clone()),
        e.sp.clone(),
        Some(e.outcome.clone()),
        Some(e.reason.clone()),
        e.rule.clone(),
        e.country.clone(),
        e.city.clone(),
        e.browser.clone(),
        e.os.clone(),
        e.device.clone(),
        e.user_agent.clone(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

async fn user_id(idp: &TestIdp, username: &str) -> i64 {
    idp.idp
        .directory
        .get_user_by_username(username)
        .await
        .unwrap()
        .unwrap()
        .id
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Decodes the base32 TOTP secret of an enrolment.
fn base32(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut count, mut out) = (0u64, 0, Vec::new());
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let value = ALPHABET.iter().position(|a| *a == c).unwrap() as u64;
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// Enrols TOTP for `username` (confirming with the current code) and returns the secret and fresh
/// recovery codes.
async fn enrol(idp: &TestIdp, username: &str) -> (tessera::mfa::TotpSecret, Vec<String>) {
    let id = user_id(idp, username).await;
    let mfa = &idp.idp.mfa;
    let enrolment = mfa.begin_totp_enrolment(id, username).await.unwrap();
    let secret = tessera::mfa::TotpSecret::from_bytes(&base32(&enrolment.secret_base32)).unwrap();
    let now = unix_now();
    mfa.confirm_totp_enrolment(id, &secret.code_at(now).unwrap(), now)
        .await
        .unwrap();
    let codes = mfa
        .regenerate_recovery_codes(id, &MfaActor::SelfService)
        .await
        .unwrap();
    (secret, codes.iter().map(ToString::to_string).collect())
}

async fn assign(idp: &TestIdp, policy: SecurityPolicy, user: &str) {
    let name = policy.name.clone();
    idp.idp.directory.add_policy(&policy).await.unwrap();
    idp.idp
        .directory
        .assign_policy(&PolicyAssignment {
            policy: name,
            target: AssignmentTarget::User(user.to_owned()),
            priority: 0,
        })
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Every outcome, end to end.

#[tokio::test]
async fn every_outcome_is_recorded_with_its_reason_location_and_device_and_nothing_secret() {
    let dir = TempDir::new().unwrap();
    let idp = start(&dir, &Store::Memory, |_| {}).await;
    for user in ["alice", "bob", "carol", "erin", "frank", "kim", "lena"] {
        idp.add_user(user, &[]).await;
    }
    let sp = TestSp::new("app", &idp.idp.metadata_xml, SpOptions::default());
    idp.register(&sp, releasing_settings(), &["alice"]).await;
    idp.idp
        .directory
        .set_user_status("carol", UserStatus::Disabled)
        .await
        .unwrap();
    idp.idp
        .directory
        .add_ip_rule(&IpRule {
            name: "erin-office".into(),
            ranges: vec!["192.0.2.0/24".parse().unwrap()],
            scope: RuleScope::Users(vec!["erin".into()]),
        })
        .await
        .unwrap();
    assign(
        &idp,
        SecurityPolicy {
            mfa_required: true,
            ..SecurityPolicy::new("strict")
        },
        "frank",
    )
    .await;
    // Only security keys, which this server (its base URL is an IP address) cannot offer.
    assign(
        &idp,
        SecurityPolicy {
            mfa_required: true,
            mfa_methods: vec![tessera::policy::MfaMethod::WebAuthn],
            ..SecurityPolicy::new("keys-only")
        },
        "kim",
    )
    .await;
    // A second factor for a new device, of a kind that cannot be enrolled here.
    assign(
        &idp,
        SecurityPolicy {
            mfa_on_new_device_or_country: true,
            mfa_methods: vec![tessera::policy::MfaMethod::WebAuthn],
            ..SecurityPolicy::new("keys-when-new")
        },
        "lena",
    )
    .await;
    let (secret, recovery) = enrol(&idp, "frank").await;

    let paris = browser_at("203.0.113.7", CHROME_WINDOWS);
    // Success, then an SSO to an assigned app.
    let page = login(&idp, &paris, "alice", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let request = sp.request(&idp.idp.config.sso_url());
    let page = paris.get(&TestSp::redirect_url(&request, "rs")).await;
    assert!(page.is_saml_post(), "{}", page.body);
    // Wrong password and unknown user: the same answer to the client.
    // (A fresh browser for each sign-in: one with a session is sent to its apps, not to the form.)
    let at_paris = || browser_at("203.0.113.7", CHROME_WINDOWS);
    let wrong = login(&idp, &at_paris(), "alice", "not the password").await;
    let unknown = login(&idp, &at_paris(), "mallory", "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.text().contains("Incorrect username or password"));
    assert!(unknown.text().contains("Incorrect username or password"));
    assert!(!unknown.text().contains("mallory does not exist"));
    // Deactivated, IP denied (with the rule), policy not met.
    let page = login(&idp, &at_paris(), "carol", PASSWORD).await;
    assert!(page.status.is_client_error(), "{}", page.status);
    let page = login(&idp, &at_paris(), "erin", PASSWORD).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = login(&idp, &at_paris(), "kim", PASSWORD).await;
    assert!(page.status.is_client_error(), "{}", page.status);
    let page = login(&idp, &at_paris(), "lena", PASSWORD).await;
    assert!(page.status.is_client_error(), "{}", page.status);
    // App not assigned: bob is signed in, the app is not his.
    let new_york = browser_at("198.51.100.9", FIREFOX_LINUX);
    let page = login(&idp, &new_york, "bob", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = new_york
        .get(&TestSp::redirect_url(
            &sp.request(&idp.idp.config.sso_url()),
            "rs",
        ))
        .await;
    assert!(!page.is_saml_post());
    // A replayed request is an invalid one too.
    let page = new_york.get(&TestSp::redirect_url(&request, "rs")).await;
    assert!(!page.is_saml_post());
    // A request that is not one.
    let page = new_york
        .get(&idp.url("/saml/sso?SAMLRequest=not-a-request!"))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    // MFA failed, then success with a recovery code.
    let paris = at_paris();
    let page = login(&idp, &paris, "frank", PASSWORD).await;
    assert_eq!(page.location().as_deref(), Some("/mfa"), "{}", page.body);
    let right = secret.code_at(unix_now()).unwrap();
    let wrong_code: String = right
        .chars()
        .map(|c| char::from_digit((c.to_digit(10).unwrap() + 5) % 10, 10).unwrap())
        .collect();
    let page = post_code(&idp, &paris, "/mfa/totp", &wrong_code).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    let page = post_code(&idp, &paris, "/mfa/recovery", &recovery[0]).await;
    assert!(page.status.is_redirection(), "{}", page.body);

    let events = all_events(&idp).await;
    let e = events
        .iter()
        .find(|e| e.username == "alice" && e.outcome == "success" && e.kind == "sign_in")
        .expect("alice's sign-in");
    assert_eq!(e.ip, "203.0.113.7");
    assert_eq!(
        (e.country.as_deref(), e.city.as_deref()),
        (Some("FR"), Some("Paris"))
    );
    assert_eq!(
        (e.browser.as_deref(), e.os.as_deref(), e.device.as_deref()),
        (Some("Chrome"), Some("Windows 10"), Some("desktop"))
    );
    let sso = events
        .iter()
        .find(|e| e.kind == "sso" && e.outcome == "success")
        .expect("an SSO success");
    assert_eq!(sso.username, "alice");
    assert_eq!(sso.sp.as_deref(), Some(sp.entity_id.as_str()));
    assert_eq!(
        find(&events, "alice", "wrong_password").user_id,
        Some(user_id(&idp, "alice").await)
    );
    let e = find(&events, "mallory", "unknown_user");
    assert_eq!(e.user_id, None);
    find(&events, "carol", "deactivated");
    let e = find(&events, "erin", "ip_denied");
    assert_eq!(e.rule.as_deref(), Some("ip rule \"erin-office\""), "{e:?}");
    let e = find(&events, "kim", "policy_not_met");
    assert_eq!(e.rule.as_deref(), Some("keys-only"));
    let e = find(&events, "lena", "mfa_not_enrolled");
    assert_eq!(e.rule.as_deref(), Some("keys-when-new"));
    assert!(e.reason.contains("new country"), "{e:?}");
    assert!(events
        .iter()
        .all(|e| !(e.username == "lena" && e.outcome == "success")));
    let e = find(&events, "bob", "app_not_assigned");
    assert_eq!(e.kind, "sso");
    assert_eq!(
        (
            e.country.as_deref(),
            e.city.as_deref(),
            e.browser.as_deref(),
            e.os.as_deref()
        ),
        (Some("US"), Some("New York"), Some("Firefox"), Some("Linux"))
    );
    let invalid: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.outcome == "request_invalid")
        .collect();
    assert_eq!(invalid.len(), 2, "{invalid:?}");
    assert!(invalid
        .iter()
        .all(|e| e.ip == "198.51.100.9" && e.kind == "sso"));
    assert!(invalid.iter().any(|e| e.reason.contains("replayed")));
    assert!(invalid.iter().any(|e| e.reason.contains("SAMLRequest")));
    let e = find(&events, "frank", "mfa_failed");
    assert!(e.reason.contains("totp"), "{e:?}");
    let e = find(&events, "frank", "success");
    assert!(e.reason.contains("recovery_code"), "{e:?}");

    // Nothing secret in any column, nor in the export.
    let secrets = [
        PASSWORD,
        "not the password",
        right.as_str(),
        wrong_code.as_str(),
        recovery[0].as_str(),
    ];
    let csv = export_csv(&idp.idp.directory, &EventFilter::default(), 1000)
        .await
        .unwrap();
    for event in &events {
        for text in texts(event) {
            for secret in secrets {
                assert!(!text.contains(secret), "{secret:?} recorded in {event:?}");
            }
        }
    }
    for secret in secrets {
        assert!(!csv.contains(secret), "{secret:?} in the CSV export");
    }
    assert!(csv.lines().count() > events.len(), "{csv}");
    assert_eq!(idp.idp.events.dropped(), 0);
    idp.stop().await;
}

/// "My sessions" says where each session was started: the city and country of a public address from
/// the GeoIP database, the label of a private or loopback one, "unknown" for an address the database
/// does not cover.
#[tokio::test]
async fn my_sessions_shows_where_each_session_was_started() {
    let dir = TempDir::new().unwrap();
    let idp = start(&dir, &Store::Memory, |_| {}).await;
    idp.add_user("alice", &[]).await;
    let paris = browser_at("203.0.113.9", CHROME_WINDOWS);
    for (address, browser) in [
        ("203.0.113.9", &paris),
        ("2001:db8::5", &browser_at("2001:db8::5", FIREFOX_LINUX)),
        ("10.1.2.3", &browser_at("10.1.2.3", FIREFOX_LINUX)),
        ("192.0.2.1", &browser_at("192.0.2.1", FIREFOX_LINUX)),
        // No X-Forwarded-For: the address is the proxy's own, 127.0.0.1.
        ("127.0.0.1", &Browser::new()),
    ] {
        let page = login(&idp, browser, "alice", PASSWORD).await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "{address}: {}",
            page.body
        );
    }
    let page = paris.get(&idp.url("/sessions")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for (address, location) in [
        ("203.0.113.9", "Paris, FR"),
        ("2001:db8::5", "Berlin, DE"),
        ("10.1.2.3", "private network"),
        ("192.0.2.1", "unknown"),
        ("127.0.0.1", "loopback"),
    ] {
        let row = format!("<td>{address}</td>\n  <td>{location}</td>");
        assert!(page.body.contains(&row), "{row:?} not in {}", page.body);
    }
    idp.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The recorder and the queries, on a directory of their own.

async fn recorder_on(dir: &TempDir, settings: RecorderSettings) -> (Directory, Recorder) {
    let url = format!("sqlite://{}", dir.path().join("events.db").display());
    recorder_at(&url, dir, settings).await
}

async fn recorder_at(
    url: &str,
    dir: &TempDir,
    settings: RecorderSettings,
) -> (Directory, Recorder) {
    let directory = Directory::connect(url).await.unwrap();
    let enricher = Enricher::open(&write_test_mmdb(dir.path())).unwrap();
    let recorder = Recorder::start(directory.clone(), Arc::new(enricher), settings);
    (directory, recorder)
}

async fn count(directory: &Directory) -> usize {
    directory
        .latest_login_events(&EventFilter::default(), 1_000_000)
        .await
        .unwrap()
        .len()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn events_are_written_in_batches_and_all_of_them_at_shutdown() {
    let dir = TempDir::new().unwrap();
    let (directory, recorder) = recorder_on(
        &dir,
        RecorderSettings {
            batch_rows: 500,
            batch_interval: Duration::from_secs(3600),
            ..RecorderSettings::default()
        },
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..1200 {
        let recorder = recorder.clone();
        tasks.push(tokio::spawn(async move {
            recorder
                .record(LoginEvent::new(
                    Kind::SignIn,
                    Outcome::WrongPassword,
                    &format!("user{}", i % 7),
                    ip("203.0.113.1"),
                ))
                .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Two full batches are written by themselves; the rest waits for its interval (an hour here).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(&directory).await < 1000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&directory).await, 1000);
    recorder.shutdown().await;
    assert_eq!(count(&directory).await, 1200);
    assert_eq!((recorder.written(), recorder.dropped()), (1200, 0));
    // After the shutdown nothing is queued, and that is counted.
    recorder
        .record(LoginEvent::new(
            Kind::SignIn,
            Outcome::Success,
            "late",
            ip("203.0.113.1"),
        ))
        .await;
    assert_eq!(recorder.dropped(), 1);
}

#[tokio::test]
async fn a_burst_of_sign_ins_is_all_there_after_the_server_stops() {
    let dir = TempDir::new().unwrap();
    let idp = start(&dir, &Store::Memory, |c| c.lockout.enabled = false).await;
    idp.add_user("alice", &[]).await;
    let browser = browser_at("203.0.113.20", CHROME_WINDOWS);
    let form = browser.get(&idp.url("/login")).await;
    let csrf = form.field("csrf_token").unwrap();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (browser, csrf, url) = (browser.clone(), csrf.clone(), idp.url("/login"));
        tasks.push(tokio::spawn(async move {
            let form = [
                ("csrf_token".to_owned(), csrf),
                ("request".to_owned(), String::new()),
                ("username".to_owned(), "alice".to_owned()),
                ("password".to_owned(), format!("guess {i}")),
            ];
            browser.post(&url, &form).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let url = idp.idp.config.database_url.clone();
    idp.stop().await;
    let directory = Directory::connect(&url).await.unwrap();
    let events = directory
        .latest_login_events(
            &EventFilter {
                outcomes: vec![Outcome::WrongPassword],
                ..EventFilter::default()
            },
            1000,
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 60);
}

#[tokio::test]
async fn retention_deletes_old_events_only() {
    let dir = TempDir::new().unwrap();
    let (directory, recorder) = recorder_on(
        &dir,
        RecorderSettings {
            retention_days: 30,
            ..RecorderSettings::default()
        },
    )
    .await;
    let day = 86_400_000;
    let now = chrono::Utc::now().timestamp_millis();
    for (age_days, name) in [
        (40, "old"),
        (31, "older-than-30"),
        (29, "recent"),
        (0, "today"),
    ] {
        let mut event = LoginEvent::new(Kind::SignIn, Outcome::Success, name, ip("203.0.113.1"));
        event.at = now - age_days * day;
        recorder.record(event).await;
    }
    recorder.flush().await;
    assert_eq!(count(&directory).await, 4);
    assert_eq!(recorder.purge_expired().await.unwrap(), 2);
    let left: Vec<String> = directory
        .latest_login_events(&EventFilter::default(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.username)
        .collect();
    assert_eq!(left, vec!["today".to_owned(), "recent".to_owned()]);
    recorder.shutdown().await;
}

#[tokio::test]
async fn dashboard_queries_filter_and_export_on_sqlite() {
    let dir = TempDir::new().unwrap();
    let (directory, recorder) = recorder_on(&dir, RecorderSettings::default()).await;
    dashboard_queries_filter_and_export(directory, recorder).await;
}

#[tokio::test]
async fn dashboard_queries_filter_and_export_on_postgresql() {
    let dir = TempDir::new().unwrap();
    let db = common::postgres::TestDatabase::create().await.unwrap();
    let (directory, recorder) = recorder_at(&db.url, &dir, RecorderSettings::default()).await;
    dashboard_queries_filter_and_export(directory, recorder).await;
    drop(db);
}

async fn dashboard_queries_filter_and_export(directory: Directory, recorder: Recorder) {
    let base = 1_700_000_000_000i64 / 86_400_000 * 86_400_000;
    let hour = 3_600_000;
    let seed = [
        // (hours after base, user, outcome, address, sp, agent)
        (
            0,
            "alice",
            Outcome::Success,
            "203.0.113.5",
            None,
            CHROME_WINDOWS,
        ),
        (
            0,
            "alice",
            Outcome::Success,
            "203.0.113.5",
            Some("https://a.example"),
            CHROME_WINDOWS,
        ),
        (
            1,
            "alice",
            Outcome::WrongPassword,
            "198.51.100.1",
            None,
            FIREFOX_LINUX,
        ),
        (
            1,
            "bob",
            Outcome::WrongPassword,
            "198.51.100.1",
            None,
            FIREFOX_LINUX,
        ),
        (
            1,
            "bob",
            Outcome::WrongPassword,
            "198.51.100.2",
            None,
            FIREFOX_LINUX,
        ),
        (
            2,
            "bob",
            Outcome::LockedOut,
            "198.51.100.2",
            None,
            FIREFOX_LINUX,
        ),
        (2, "carol", Outcome::IpDenied, "2001:db8::7", None, ""),
        (
            25,
            "carol",
            Outcome::AppNotAssigned,
            "10.1.2.3",
            Some("https://b.example"),
            "",
        ),
        (
            26,
            "dave",
            Outcome::Success,
            "127.0.0.1",
            Some("https://b.example"),
            "",
        ),
    ];
    for (h, user, outcome, address, sp, agent) in seed {
        let mut event = LoginEvent::new(
            if sp.is_some() {
                Kind::Sso
            } else {
                Kind::SignIn
            },
            outcome,
            user,
            ip(address),
        )
        .sp(sp)
        .agent(agent);
        event.at = base + h * hour;
        event.user_id = Some(h + 1);
        recorder.record(event).await;
    }
    recorder.flush().await;
    let all = EventFilter::default();

    let by_day = directory
        .login_events_over_time(&all, Bucket::Day)
        .await
        .unwrap();
    let day0: i64 = by_day
        .iter()
        .filter(|(b, _, _)| *b == base)
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(day0, 7);
    assert!(
        by_day.contains(&(base, "wrong_password".to_owned(), 3)),
        "{by_day:?}"
    );
    assert!(by_day.contains(&(base + 86_400_000, "success".to_owned(), 1)));
    let by_hour = directory
        .login_events_over_time(&all, Bucket::Hour)
        .await
        .unwrap();
    assert!(by_hour.contains(&(base + hour, "wrong_password".to_owned(), 3)));

    let failing = directory.top_failing_users(&all, 10).await.unwrap();
    assert_eq!(failing[0], ("bob".to_owned(), 3));
    assert_eq!(failing[1], ("alice".to_owned(), 1));
    let denied = directory.top_denied_addresses(&all, 2).await.unwrap();
    assert_eq!(
        denied,
        vec![
            ("198.51.100.1".to_owned(), 2),
            ("198.51.100.2".to_owned(), 2)
        ]
    );

    let countries = directory
        .login_events_by(&all, Dimension::Country)
        .await
        .unwrap();
    assert!(
        countries.contains(&(Some("US".to_owned()), 4)),
        "{countries:?}"
    );
    assert!(countries.contains(&(Some("FR".to_owned()), 2)));
    assert!(countries.contains(&(Some("DE".to_owned()), 1)));
    assert!(countries.contains(&(Some("private".to_owned()), 1)));
    assert!(countries.contains(&(Some("loopback".to_owned()), 1)));
    let browsers = directory
        .login_events_by(&all, Dimension::Browser)
        .await
        .unwrap();
    assert_eq!(browsers[0], (Some("Firefox".to_owned()), 4));
    let devices = directory
        .login_events_by(&all, Dimension::Device)
        .await
        .unwrap();
    assert!(
        devices.contains(&(Some("desktop".to_owned()), 6)),
        "{devices:?}"
    );

    // The filterable table: each filter narrows.
    let names = |events: Vec<StoredEvent>| -> Vec<(String, String)> {
        events
            .into_iter()
            .map(|e| (e.username, e.outcome))
            .collect()
    };
    let latest = |filter: EventFilter| {
        let directory = directory.clone();
        async move { names(directory.latest_login_events(&filter, 100).await.unwrap()) }
    };
    assert_eq!(latest(all.clone()).await.len(), 9);
    assert_eq!(latest(all.clone()).await[0].0, "dave");
    assert_eq!(
        latest(EventFilter {
            username: Some("bob".into()),
            outcomes: vec![Outcome::LockedOut],
            ..all.clone()
        })
        .await,
        vec![("bob".to_owned(), "locked_out".to_owned())]
    );
    assert_eq!(
        latest(EventFilter {
            address: Some("198.51.100.0/31".parse().unwrap()),
            ..all.clone()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        latest(EventFilter {
            address: Some("2001:db8::7/128".parse().unwrap()),
            ..all.clone()
        })
        .await,
        vec![("carol".to_owned(), "ip_denied".to_owned())]
    );
    assert_eq!(
        latest(EventFilter {
            from_ms: Some(base + hour),
            to_ms: Some(base + 2 * hour),
            ..all.clone()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        latest(EventFilter {
            country: Some("FR".into()),
            kind: Some(Kind::Sso),
            ..all.clone()
        })
        .await,
        vec![("alice".to_owned(), "success".to_owned())]
    );
    // An app admin of b.example sees only its events, whatever else the filter says.
    let app_admin = EventFilter {
        visible_sps: Some(vec!["https://b.example".into()]),
        ..all.clone()
    };
    assert_eq!(latest(app_admin.clone()).await.len(), 2);
    assert_eq!(
        latest(EventFilter {
            sp: Some("https://a.example".into()),
            ..app_admin.clone()
        })
        .await
        .len(),
        0
    );
    assert!(directory
        .top_failing_users(&app_admin, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        directory
            .login_events_by(&app_admin, Dimension::Country)
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum::<i64>(),
        2
    );
    let nobody = EventFilter {
        visible_sps: Some(Vec::new()),
        ..all.clone()
    };
    assert!(latest(nobody).await.is_empty());

    let csv = export_csv(&directory, &app_admin, 100).await.unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][2], "dave");
    assert_eq!(&rows[0][7], "loopback");
    recorder.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Brute force.

/// 30 parallel wrong passwords with `lockout_after = 5`: exactly five reach the password check,
/// the rest are told "locked"; then the right password is refused too, until an administrator
/// unlocks (`unlock`), after which it works.
async fn parallel_guesses_cannot_slip_past_the_lockout(
    store: Store,
    unlock: impl AsyncFnOnce(&TestIdp),
) {
    let dir = TempDir::new().unwrap();
    let idp = start(&dir, &store, |c| {
        c.lockout.lockout_after = 5;
        c.lockout.slowdown_after = 3;
        c.lockout.slowdown_ms = 1;
        c.lockout.address_lockout_after = 1000;
    })
    .await;
    idp.add_user("alice", &[]).await;
    let hasher = idp.idp.directory.password_hasher().clone();
    let before = hasher.verifications();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let browser = browser_at(&format!("203.0.113.{}", 100 + i), CHROME_WINDOWS);
        let form = browser.get(&idp.url("/login")).await;
        let csrf = form.field("csrf_token").unwrap();
        let url = idp.url("/login");
        tasks.push(tokio::spawn(async move {
            let form = [
                ("csrf_token".to_owned(), csrf),
                ("request".to_owned(), String::new()),
                ("username".to_owned(), "alice".to_owned()),
                ("password".to_owned(), format!("guess {i}")),
            ];
            let page = browser.post(&url, &form).await;
            (page.status, page.text())
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, text) = t.await.unwrap();
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(text.contains("Too many sign-in attempts"), "{text}");
        }
        statuses.push(status);
    }
    assert_eq!(hasher.verifications() - before, 5, "{statuses:?}");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count(),
        5
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        25
    );
    // Locked: even the right password is refused, without being checked.
    let browser = browser_at("198.51.100.50", CHROME_WINDOWS);
    let page = login(&idp, &browser, "alice", PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(hasher.verifications() - before, 5);
    let events = all_events(&idp).await;
    let locked = events.iter().filter(|e| e.outcome == "locked_out").count();
    assert_eq!(locked, 26);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.outcome == "wrong_password")
            .count(),
        5
    );

    unlock(&idp).await;
    let page = login(&idp, &browser, "alice", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location().as_deref(), Some("/apps"));
    idp.stop().await;
}

#[tokio::test]
async fn parallel_guesses_cannot_slip_past_the_lockout_in_memory() {
    parallel_guesses_cannot_slip_past_the_lockout(Store::Memory, async |idp: &TestIdp| {
        assert!(lockout::user_locked(idp.idp.sessions.as_ref(), "alice")
            .await
            .unwrap());
        lockout::unlock_user(idp.idp.sessions.as_ref(), "alice")
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn parallel_guesses_cannot_slip_past_the_lockout_in_redis_and_the_cli_unlocks() {
    let store = Store::redis("lockout").await;
    let (url, prefix) = match &store {
        Store::Redis { url, prefix } => (url.clone(), prefix.clone()),
        Store::Memory => unreachable!(),
    };
    parallel_guesses_cannot_slip_past_the_lockout(store, async move |idp: &TestIdp| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["user", "unlock", "alice"])
            .env("TESSERA_DATABASE_URL", &idp.idp.config.database_url)
            .env("TESSERA_SESSION__BACKEND", "redis")
            .env("TESSERA_SESSION__REDIS_URL", &url)
            .env("TESSERA_SESSION__KEY_PREFIX", &prefix)
            .env("TESSERA_DATA_DIR", &idp.idp.config.data_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!lockout::user_locked(idp.idp.sessions.as_ref(), "alice")
            .await
            .unwrap());
    })
    .await;
}

#[tokio::test]
async fn an_address_trying_many_usernames_is_locked_out_and_can_be_unlocked() {
    let dir = TempDir::new().unwrap();
    let idp = start(&dir, &Store::Memory, |c| {
        c.lockout.address_lockout_after = 4;
    })
    .await;
    idp.add_user("alice", &[]).await;
    let sprayer = browser_at("198.51.100.66", CHROME_WINDOWS);
    for user in ["u1", "u2", "u3", "u4"] {
        let page = login(&idp, &sprayer, user, "Winter2024!").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let page = login(&idp, &sprayer, "alice", PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    // Another address is not affected.
    let other = browser_at("198.51.100.67", CHROME_WINDOWS);
    assert_eq!(
        login(&idp, &other, "alice", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    lockout::unlock_address(idp.idp.sessions.as_ref(), ip("198.51.100.66"))
        .await
        .unwrap();
    assert_eq!(
        login(&idp, &sprayer, "alice", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let events = all_events(&idp).await;
    let e = find(&events, "alice", "locked_out");
    assert!(e.reason.contains("198.51.100.66"), "{e:?}");
    idp.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Anomalies.

#[tokio::test]
async fn new_country_or_device_is_flagged_and_a_policy_can_require_mfa_for_it() {
    let dir = TempDir::new().unwrap();
    let idp = start(&dir, &Store::Memory, |_| {}).await;
    idp.add_user("gina", &[]).await;
    idp.add_user("hugo", &[]).await;
    let (_, codes) = enrol(&idp, "gina").await;
    assign(
        &idp,
        SecurityPolicy {
            mfa_on_new_device_or_country: true,
            ..SecurityPolicy::new("watchful")
        },
        "gina",
    )
    .await;
    let mut codes = codes.into_iter();

    // (address, agent, second factor expected, new country, new device)
    let steps = [
        ("203.0.113.7", CHROME_WINDOWS, true, true, true),
        ("203.0.113.8", CHROME_WINDOWS, false, false, false),
        ("198.51.100.7", CHROME_WINDOWS, true, true, false),
        ("203.0.113.9", FIREFOX_LINUX, true, false, true),
        ("198.51.100.8", FIREFOX_LINUX, false, false, false),
    ];
    for (address, agent, mfa, new_country, new_device) in steps {
        let browser = browser_at(address, agent);
        let page = login(&idp, &browser, "gina", PASSWORD).await;
        if mfa {
            assert_eq!(
                page.location().as_deref(),
                Some("/mfa"),
                "{address}: {}",
                page.body
            );
            let challenge = browser.get(&idp.url("/mfa")).await;
            assert!(challenge.text().contains("new"), "{}", challenge.body);
            let page = post_code(&idp, &browser, "/mfa/recovery", &codes.next().unwrap()).await;
            assert_eq!(page.location().as_deref(), Some("/apps"), "{}", page.body);
        } else {
            assert_eq!(
                page.location().as_deref(),
                Some("/apps"),
                "{address}: {}",
                page.body
            );
        }
        idp.idp.events.flush().await;
        let latest = idp
            .idp
            .directory
            .latest_login_events(
                &EventFilter {
                    username: Some("gina".into()),
                    outcomes: vec![Outcome::Success],
                    ..EventFilter::default()
                },
                1,
            )
            .await
            .unwrap();
        let e = &latest[0];
        assert_eq!(e.ip, address);
        assert_eq!(
            (e.new_country, e.new_device),
            (new_country, new_device),
            "{address} {agent}: {e:?}"
        );
    }

    // Without the policy the flags are still set, and nothing more is asked.
    let browser = browser_at("203.0.113.7", CHROME_WINDOWS);
    assert_eq!(
        login(&idp, &browser, "hugo", PASSWORD)
            .await
            .location()
            .as_deref(),
        Some("/apps")
    );
    let browser = browser_at("2001:db8::1", CHROME_WINDOWS);
    assert_eq!(
        login(&idp, &browser, "hugo", PASSWORD)
            .await
            .location()
            .as_deref(),
        Some("/apps")
    );
    let events = all_events(&idp).await;
    let hugo: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.username == "hugo" && e.outcome == "success")
        .collect();
    assert_eq!(hugo.len(), 2);
    assert_eq!(hugo[0].country.as_deref(), Some("DE"));
    assert_eq!(hugo[0].city.as_deref(), Some("Berlin"));
    assert_eq!((hugo[0].new_country, hugo[0].new_device), (true, false));
    assert_eq!((hugo[1].new_country, hugo[1].new_device), (true, true));
    idp.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The command line.

/// Runs `tessera` against the SQLite directory in `dir`; returns stdout, asserting success.
fn cli(dir: &TempDir, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env(
            "TESSERA_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("events.db").display()),
        )
        .env("TESSERA_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_cli_sets_the_new_context_switch_and_lists_and_exports_events() {
    let dir = TempDir::new().unwrap();
    let (directory, recorder) = recorder_on(&dir, RecorderSettings::default()).await;
    for (user, outcome, address) in [
        ("alice", Outcome::Success, "203.0.113.5"),
        ("bob", Outcome::WrongPassword, "198.51.100.1"),
        ("=cmd", Outcome::UnknownUser, "198.51.100.2"),
    ] {
        let mut event = LoginEvent::new(Kind::SignIn, outcome, user, ip(address));
        event.user_id = Some(1);
        recorder.record(event).await;
    }
    recorder.shutdown().await;

    cli(&dir, &["policy", "add", "watchful", "--mfa-on-new-context"]);
    let (policy, _) = directory.get_policy("watchful").await.unwrap().unwrap();
    assert!(policy.mfa_on_new_device_or_country);
    assert!(
        cli(&dir, &["policy", "list"]).contains("mfa for a sign-in from a new country or device")
    );
    cli(
        &dir,
        &["policy", "update", "watchful", "--no-mfa-on-new-context"],
    );
    let (policy, _) = directory.get_policy("watchful").await.unwrap().unwrap();
    assert!(!policy.mfa_on_new_device_or_country);

    let listed = cli(&dir, &["events", "list", "--address", "198.51.100.0/24"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("wrong_password") && listed.contains("US/New York"),
        "{listed}"
    );
    let csv = cli(
        &dir,
        &[
            "events",
            "export",
            "--outcome",
            "unknown_user",
            "--hours",
            "1",
        ],
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].contains(",\"'=cmd\","), "{csv}");
}
