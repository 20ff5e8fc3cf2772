//! End to end: the access policy (IP allowlists and security policies) enforced by a running Tessera.
//!
//! The same user signs in from different client addresses. On loopback every test client binds its
//! socket to its own address (127.0.0.2, 127.0.0.3, ..., ::1), so the peer address Tessera sees is real
//! and no header needs to be trusted; the proxy tests bind the "proxy" to 127.0.0.9 and list it in
//! `trusted_proxies`. samael 0.0.22 is the independent SP: an admission is an assertion it accepts, a
//! refusal is a 403 page without any SAML response. Every refusal must also be in `login_events`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use samael::schema::AuthnRequest;
use tempfile::TempDir;

use common::idp::{
    fetch_idp_metadata, Browser, BrowserOptions, Listen, Page, SpOptions, Store, TestIdp, TestSp,
    PASSWORD,
};
use tessera::directory::{Directory, LoginEvent, SpSettings};
use tessera::policy::{
    AssignmentTarget, IpRange, IpRule, MfaMethod, PolicyAssignment, RuleScope, SecurityPolicy,
    SpRequirement,
};

/// The message of every IP refusal page.
const IP_DENIED: &str = "Access denied from this IP address";

/// A Tessera with its state in a temp dir, and its metadata as fetched over HTTP.
struct World {
    /// Keeps the SQLite file, keys and NameID secret alive for the test.
    _dir: TempDir,
    /// The server under test.
    idp: TestIdp,
    /// GET /saml/metadata, what every SP is configured with.
    metadata: String,
}

impl World {
    async fn new(store: &Store, listen: &Listen) -> World {
        let dir = tempfile::tempdir().unwrap();
        let idp = TestIdp::start_with(dir.path(), store, listen).await;
        let metadata = fetch_idp_metadata(&idp).await;
        World {
            _dir: dir,
            idp,
            metadata,
        }
    }

    /// An SP accepting both SP-initiated and IdP-initiated responses.
    fn sp(&self, name: &str) -> TestSp {
        TestSp::new(
            name,
            &self.metadata,
            SpOptions {
                allow_idp_initiated: true,
                ..SpOptions::default()
            },
        )
    }

    fn directory(&self) -> &Directory {
        &self.idp.idp.directory
    }

    /// `http://127.0.0.1:<port>`, the origin of `base_url`.
    fn v4(&self) -> String {
        self.idp.url("")
    }

    /// `http://[::1]:<port>`.
    fn v6(&self) -> String {
        self.idp.url_v6("")
    }

    /// Creates `users` and registers `sps`, each assigned to every one of them.
    async fn populate(&self, users: &[&str], sps: &[&TestSp]) {
        for user in users {
            self.idp.add_user(user, &[]).await;
        }
        for sp in sps {
            self.idp.register(sp, SpSettings::default(), users).await;
        }
    }

    async fn add_rule(&self, name: &str, scope: RuleScope, ranges: &[&str]) {
        self.directory()
            .add_ip_rule(&rule(name, scope, ranges))
            .await
            .unwrap();
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ranges(texts: &[&str]) -> Vec<IpRange> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

fn rule(name: &str, scope: RuleScope, texts: &[&str]) -> IpRule {
    IpRule {
        name: name.to_owned(),
        ranges: ranges(texts),
        scope,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A browser at `address` with its own cookie jar.
fn browser_at(address: &str) -> Browser {
    Browser::from_address(ip(address))
}

/// A browser at `address` sending `headers` with every request.
fn browser_with_headers(address: &str, headers: &[(&str, &str)]) -> Browser {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    Browser::with(BrowserOptions {
        local_address: Some(ip(address)),
        headers: map,
        ..BrowserOptions::default()
    })
}

/// `url` (made by samael against `base_url`) sent to the server at `base` instead.
fn rebase(w: &World, base: &str, url: &str) -> String {
    let v4 = w.v4();
    assert!(url.starts_with(&v4), "{url}");
    format!("{base}{}", &url[v4.len()..])
}

/// SP-initiated SSO by HTTP-Redirect without a session: the redirect to the login page, the form, the
/// sign-in with `password`. Returns the request and the page after the sign-in.
async fn sso_login(
    w: &World,
    browser: &Browser,
    base: &str,
    sp: &TestSp,
    user: &str,
    password: &str,
) -> (AuthnRequest, Page) {
    let request = sp.request(&w.idp.idp.config.sso_url());
    let first = browser
        .get(&rebase(w, base, &TestSp::redirect_url(&request, "rs")))
        .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    let location = first.location().unwrap();
    assert!(location.starts_with("/login?request="), "{location}");
    let login = browser.follow(base, &first).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let page = browser.submit_login_at(base, &login, user, password).await;
    (request, page)
}

/// [`sso_login`] with the right password.
async fn sso_fresh(
    w: &World,
    browser: &Browser,
    base: &str,
    sp: &TestSp,
    user: &str,
) -> (AuthnRequest, Page) {
    sso_login(w, browser, base, sp, user, PASSWORD).await
}

/// SP-initiated SSO by HTTP-Redirect with the session the browser already has: answered at once.
async fn sso_live(w: &World, browser: &Browser, base: &str, sp: &TestSp) -> (AuthnRequest, Page) {
    let request = sp.request(&w.idp.idp.config.sso_url());
    let page = browser
        .get(&rebase(w, base, &TestSp::redirect_url(&request, "live")))
        .await;
    (request, page)
}

/// IdP-initiated SSO to `sp` with the browser's session.
async fn sso_init(browser: &Browser, base: &str, sp: &TestSp) -> Page {
    let encoded: String = url::form_urlencoded::byte_serialize(sp.entity_id.as_bytes()).collect();
    browser.get(&format!("{base}/saml/init?sp={encoded}")).await
}

/// The page carries an assertion for `user` that samael accepts for `request`.
fn assert_admitted(sp: &TestSp, request: &AuthnRequest, page: &Page, user: &str) {
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let assertion = sp
        .accept(&page.saml_response(), Some(&[request.id.as_str()]))
        .unwrap_or_else(|e| panic!("samael refused the response: {e}"));
    let name_id = assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .map(|n| n.value.clone());
    assert_eq!(name_id.as_deref(), Some(user));
}

/// A refusal page: 403, `text` visible, and no SAML response of any kind.
fn assert_refused(page: &Page, text: &str) {
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(
        page.text().contains(text),
        "{text:?} not in the page:\n{}",
        page.body
    );
    assert!(!page.body.contains("SAMLResponse"), "{}", page.body);
    assert!(!page.body.contains("saml-post"), "{}", page.body);
}

fn assert_ip_denied(page: &Page) {
    assert_refused(page, IP_DENIED);
}

/// Whether the response sets a (non-empty) session cookie.
fn sets_session(page: &Page) -> bool {
    page.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| c.starts_with("tessera_session=") && !c.starts_with("tessera_session=;"))
}

/// One refusal expected in `login_events`.
struct Refusal {
    outcome: &'static str,
    ip: &'static str,
    sp: Option<String>,
    /// Substrings the reason must contain (the rule, policy or SP that refused).
    reason: Vec<String>,
}

fn ip_denied(ip: &'static str, sp: Option<&TestSp>, reason: &[&str]) -> Refusal {
    Refusal {
        outcome: "ip_denied",
        ip,
        sp: sp.map(|s| s.entity_id.clone()),
        reason: names(reason),
    }
}

fn policy_not_met(ip: &'static str, sp: Option<&TestSp>, reason: &[&str]) -> Refusal {
    Refusal {
        outcome: "policy_not_met",
        ip,
        sp: sp.map(|s| s.entity_id.clone()),
        reason: names(reason),
    }
}

/// The refusals recorded for `user` are exactly `expected` (in any order; see
/// `events_are_listed_newest_first` for the order).
async fn assert_refusals(w: &World, user: &str, expected: Vec<Refusal>) {
    // Events are written in batches by the recorder: wait for what is queued.
    w.idp.idp.events.flush().await;
    let mut events: Vec<LoginEvent> = w
        .directory()
        .login_events(Some(user), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.outcome == "ip_denied" || e.outcome == "policy_not_met")
        .collect();
    let all = format!("{events:#?}");
    for want in &expected {
        let at = events.iter().position(|e| {
            e.username == user
                && e.outcome == want.outcome
                && e.ip == want.ip
                && e.sp == want.sp
                && want.reason.iter().all(|r| e.reason.contains(r.as_str()))
        });
        match at {
            Some(i) => {
                events.remove(i);
            }
            None => panic!(
                "no {} event for {user} from {} at {:?} with a reason containing {:?} in\n{all}",
                want.outcome, want.ip, want.sp, want.reason
            ),
        }
    }
    assert!(
        events.is_empty(),
        "refusals of {user} recorded but not made: {events:#?}"
    );
}

// 1. The scopes of IP rules, and the SP allowlist.

/// Who an IP rule is for in a scope case.
#[derive(Clone, Copy)]
enum Scope {
    Everyone,
    Role,
    Group,
    User,
}

/// One row of the scope table: a rule, the addresses it admits and refuses, and who it restricts.
struct ScopeCase {
    scope: Scope,
    ranges: &'static [&'static str],
    inside: &'static [&'static str],
    outside: &'static [&'static str],
}

const SCOPE_CASES: &[ScopeCase] = &[
    ScopeCase {
        scope: Scope::Everyone,
        ranges: &["127.0.0.2/32"],
        inside: &["127.0.0.2"],
        outside: &["127.0.0.4"],
    },
    ScopeCase {
        scope: Scope::Role,
        ranges: &["127.0.0.2-127.0.0.3"],
        inside: &["127.0.0.2", "127.0.0.3"],
        outside: &["127.0.0.4"],
    },
    ScopeCase {
        scope: Scope::Group,
        ranges: &["127.0.0.0/30"],
        inside: &["127.0.0.2", "127.0.0.3"],
        outside: &["127.0.0.4", "127.0.0.5"],
    },
    ScopeCase {
        scope: Scope::User,
        ranges: &["127.0.0.2"],
        inside: &["127.0.0.2"],
        outside: &["127.0.0.3", "127.0.0.4"],
    },
];

/// Runs one scope case: alice is in group `finance` with role `admin`; bob has neither.
async fn scope_case(case: &ScopeCase, listen: &Listen) {
    let w = World::new(&Store::Memory, listen).await;
    let app = w.sp("app");
    w.populate(&["alice", "bob"], &[&app]).await;
    let dir = w.directory();
    dir.create_group("finance").await.unwrap();
    dir.add_user_to_group("alice", "finance").await.unwrap();
    dir.create_role("admin").await.unwrap();
    dir.add_user_to_role("alice", "admin").await.unwrap();
    let (rule_name, scope) = match case.scope {
        Scope::Everyone => ("everyone-office", RuleScope::Everyone),
        Scope::Role => ("admins-office", RuleScope::Roles(names(&["admin"]))),
        Scope::Group => ("finance-office", RuleScope::Groups(names(&["finance"]))),
        Scope::User => ("alice-desk", RuleScope::Users(names(&["alice"]))),
    };
    w.add_rule(rule_name, scope, case.ranges).await;
    let restricted: &[&str] = match case.scope {
        Scope::Everyone => &["alice", "bob"],
        _ => &["alice"],
    };
    let free: &[&str] = match case.scope {
        Scope::Everyone => &[],
        _ => &["bob"],
    };
    let base = w.v4();

    for user in restricted {
        for address in case.inside {
            let browser = browser_at(address);
            let (request, page) = sso_fresh(&w, &browser, &base, &app, user).await;
            assert_admitted(&app, &request, &page, user);
            // The session keeps working from there.
            let (request, page) = sso_live(&w, &browser, &base, &app).await;
            assert_admitted(&app, &request, &page, user);
        }
        for address in case.outside {
            let browser = browser_at(address);
            let (_, page) = sso_fresh(&w, &browser, &base, &app, user).await;
            assert_ip_denied(&page);
            assert!(!sets_session(&page), "{:?}", page.headers);
            // Refused before the password is looked at: a wrong one gets the same page.
            let (_, page) = sso_login(&w, &browser, &base, &app, user, "wrong password!").await;
            assert_ip_denied(&page);
            // No session was opened: the next SSO asks for the login page again.
            let (_, page) = sso_live(&w, &browser, &base, &app).await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        }
    }
    for user in free {
        for address in case.outside.iter().chain(case.inside) {
            let browser = browser_at(address);
            let (request, page) = sso_fresh(&w, &browser, &base, &app, user).await;
            assert_admitted(&app, &request, &page, user);
        }
    }

    // Every refusal is recorded: at the login (no SP yet), twice per outside address.
    for user in restricted {
        let expected = case
            .outside
            .iter()
            .flat_map(|a| [a, a])
            .map(|a| ip_denied(a, None, &[rule_name]))
            .collect();
        assert_refusals(&w, user, expected).await;
    }
    for user in free {
        assert_refusals(&w, user, Vec::new()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_scope_admits_inside_and_refuses_outside() {
    for case in SCOPE_CASES {
        scope_case(case, &Listen::default()).await;
    }
}

/// The same table on a dual-stack socket, where IPv4 clients arrive as ::ffff:127.0.0.x and must be
/// checked as the IPv4 address they carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_scope_on_a_dual_stack_listener() {
    let listen = Listen {
        dual_stack: true,
        ..Listen::default()
    };
    for case in SCOPE_CASES {
        scope_case(case, &listen).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_allowlist_restricts_only_that_sp() {
    let w = World::new(&Store::Memory, &Listen::default()).await;
    let guarded = w.sp("guarded");
    let open = w.sp("open");
    w.populate(&["alice", "bob"], &[&guarded, &open]).await;
    w.directory()
        .set_sp_access(
            &guarded.entity_id,
            &SpRequirement {
                ip_ranges: Some(ranges(&["127.0.0.2/32"])),
                min: None,
            },
        )
        .await
        .unwrap();
    let base = w.v4();

    // Signing in is not restricted by an SP's allowlist.
    let outside = browser_at("127.0.0.4");
    outside.sign_in(&w.idp, "alice").await;
    // That SP is refused from outside its range, by SP-initiated and by IdP-initiated SSO ...
    let (_, page) = sso_live(&w, &outside, &base, &guarded).await;
    assert_ip_denied(&page);
    let page = sso_init(&outside, &base, &guarded).await;
    assert_ip_denied(&page);
    // ... while another SP works from the same address, in the same session.
    let (request, page) = sso_live(&w, &outside, &base, &open).await;
    assert_admitted(&open, &request, &page, "alice");

    // A sign-in started by that SP from outside: the password is accepted, the assertion is not.
    let bob_outside = browser_at("127.0.0.4");
    let (_, page) = sso_fresh(&w, &bob_outside, &base, &guarded, "bob").await;
    assert_ip_denied(&page);
    let (request, page) = sso_live(&w, &bob_outside, &base, &open).await;
    assert_admitted(&open, &request, &page, "bob");

    // From inside its range the SP is reached.
    let inside = browser_at("127.0.0.2");
    let (request, page) = sso_fresh(&w, &inside, &base, &guarded, "alice").await;
    assert_admitted(&guarded, &request, &page, "alice");

    let reason = format!("SP {:?}", guarded.entity_id);
    assert_refusals(
        &w,
        "alice",
        vec![
            ip_denied("127.0.0.4", Some(&guarded), &[&reason]),
            ip_denied("127.0.0.4", Some(&guarded), &[&reason]),
        ],
    )
    .await;
    assert_refusals(
        &w,
        "bob",
        vec![ip_denied("127.0.0.4", Some(&guarded), &[&reason])],
    )
    .await;
}

// 2. IPv6.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_client_is_checked_by_its_ipv6_address() {
    let w = World::new(
        &Store::Memory,
        &Listen {
            dual_stack: true,
            ..Listen::default()
        },
    )
    .await;
    let app = w.sp("app");
    w.populate(&["alice", "bob"], &[&app]).await;
    w.add_rule("v6-loopback", RuleScope::Everyone, &["::1/128"])
        .await;
    // bob may also come from 127.0.0.2: rules that apply are alternatives.
    w.add_rule(
        "bob-v4",
        RuleScope::Users(names(&["bob"])),
        &["127.0.0.2/32"],
    )
    .await;

    let v6 = w.v6();
    let alice6 = browser_at("::1");
    let (request, page) = sso_fresh(&w, &alice6, &v6, &app, "alice").await;
    assert_admitted(&app, &request, &page, "alice");
    let (request, page) = sso_live(&w, &alice6, &v6, &app).await;
    assert_admitted(&app, &request, &page, "alice");

    let v4 = w.v4();
    for address in ["127.0.0.2", "127.0.0.1"] {
        let (_, page) = sso_fresh(&w, &browser_at(address), &v4, &app, "alice").await;
        assert_ip_denied(&page);
    }

    for (address, base) in [("::1", &v6), ("127.0.0.2", &v4)] {
        let (request, page) = sso_fresh(&w, &browser_at(address), base, &app, "bob").await;
        assert_admitted(&app, &request, &page, "bob");
    }
    let (_, page) = sso_fresh(&w, &browser_at("127.0.0.3"), &v4, &app, "bob").await;
    assert_ip_denied(&page);

    assert_refusals(
        &w,
        "alice",
        vec![
            ip_denied("127.0.0.2", None, &["v6-loopback"]),
            ip_denied("127.0.0.1", None, &["v6-loopback"]),
        ],
    )
    .await;
    assert_refusals(
        &w,
        "bob",
        vec![ip_denied("127.0.0.3", None, &["v6-loopback", "bob-v4"])],
    )
    .await;
}

// 3. Forwarding headers: ignored from anyone but a trusted proxy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_headers_from_untrusted_peers_are_ignored() {
    let w = World::new(&Store::Memory, &Listen::default()).await;
    let app = w.sp("app");
    w.populate(&["alice"], &[&app]).await;
    w.add_rule("office", RuleScope::Everyone, &["127.0.0.2/32"])
        .await;
    let base = w.v4();
    let spoofs: [&[(&str, &str)]; 4] = [
        &[("x-forwarded-for", "127.0.0.2")],
        &[("forwarded", "for=127.0.0.2")],
        &[
            ("x-forwarded-for", "127.0.0.2"),
            ("forwarded", "for=127.0.0.2"),
        ],
        &[
            ("x-real-ip", "127.0.0.2"),
            ("x-forwarded-for", "127.0.0.2, 127.0.0.2"),
        ],
    ];
    for headers in spoofs {
        let browser = browser_with_headers("127.0.0.4", headers);
        let (_, page) = sso_fresh(&w, &browser, &base, &app, "alice").await;
        assert_ip_denied(&page);
    }
    // The other way round: a header cannot get an admitted client refused either.
    let browser = browser_with_headers("127.0.0.2", &[("x-forwarded-for", "127.0.0.4")]);
    let (request, page) = sso_fresh(&w, &browser, &base, &app, "alice").await;
    assert_admitted(&app, &request, &page, "alice");
    // An unknown username is refused the same way, and recorded as typed.
    let browser = browser_with_headers("127.0.0.4", &[("x-forwarded-for", "127.0.0.2")]);
    let (_, page) = sso_fresh(&w, &browser, &base, &app, "ghost").await;
    assert_ip_denied(&page);

    assert_refusals(
        &w,
        "alice",
        (0..4)
            .map(|_| ip_denied("127.0.0.4", None, &["office"]))
            .collect(),
    )
    .await;
    w.idp.idp.events.flush().await;
    let ghost = w.directory().login_events(Some("ghost"), 10).await.unwrap();
    assert_eq!(ghost.len(), 1, "{ghost:#?}");
    assert_eq!(ghost[0].user_id, None);
    assert_eq!(ghost[0].ip, "127.0.0.4");
    assert_eq!(ghost[0].outcome, "ip_denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_headers_give_the_rightmost_untrusted_address() {
    // Dual-stack: the proxy arrives as ::ffff:127.0.0.9 and must still be recognised as trusted.
    let w = World::new(
        &Store::Memory,
        &Listen {
            dual_stack: true,
            trusted_proxies: vec!["127.0.0.9/32".into()],
        },
    )
    .await;
    let app = w.sp("app");
    w.populate(&["alice"], &[&app]).await;
    w.add_rule("office", RuleScope::Everyone, &["127.0.0.2/32"])
        .await;
    let base = w.v4();
    let proxy = "127.0.0.9";

    let admitted: [&[(&str, &str)]; 4] = [
        &[("x-forwarded-for", "127.0.0.4, 127.0.0.2")],
        // Trusted hops are skipped from the right.
        &[("x-forwarded-for", "127.0.0.4, 127.0.0.2, 127.0.0.9")],
        &[("forwarded", "for=127.0.0.4, for=\"127.0.0.2:4711\"")],
        &[("x-forwarded-for", "[::ffff:127.0.0.2]:443")],
    ];
    for headers in admitted {
        let browser = browser_with_headers(proxy, headers);
        let (request, page) = sso_fresh(&w, &browser, &base, &app, "alice").await;
        assert_admitted(&app, &request, &page, "alice");
    }
    // What the client wrote to the left of the address the proxy saw changes nothing.
    let browser = browser_with_headers(proxy, &[("x-forwarded-for", "127.0.0.2, 127.0.0.4")]);
    let (_, page) = sso_fresh(&w, &browser, &base, &app, "alice").await;
    assert_ip_denied(&page);
    // No header from the proxy: the proxy is the client.
    let (_, page) = sso_fresh(&w, &browser_at(proxy), &base, &app, "alice").await;
    assert_ip_denied(&page);
    // A malformed hop where the client should be: the peer, not a guess.
    let browser = browser_with_headers(proxy, &[("x-forwarded-for", "127.0.0.2, unknown")]);
    let (_, page) = sso_fresh(&w, &browser, &base, &app, "alice").await;
    assert_ip_denied(&page);
    // Proxies are trusted, not everyone: the same header from another peer is still ignored.
    let browser = browser_with_headers("127.0.0.4", &[("x-forwarded-for", "127.0.0.2")]);
    let (_, page) = sso_fresh(&w, &browser, &base, &app, "alice").await;
    assert_ip_denied(&page);

    assert_refusals(
        &w,
        "alice",
        vec![
            ip_denied("127.0.0.4", None, &["office"]),
            ip_denied("127.0.0.9", None, &["office"]),
            ip_denied("127.0.0.9", None, &["office"]),
            ip_denied("127.0.0.4", None, &["office"]),
        ],
    )
    .await;
}

// 4. A live session coming back from a banned address.

async fn live_session_from_banned_address(store: Store) {
    let w = World::new(&store, &Listen::default()).await;
    let app = w.sp("app");
    let portal = w.sp("portal");
    w.populate(&["alice"], &[&app, &portal]).await;
    w.add_rule("office", RuleScope::Everyone, &["127.0.0.2/32"])
        .await;
    let base = w.v4();
    // One person, one cookie jar, two addresses.
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let at = |address: &str| {
        Browser::with(BrowserOptions {
            local_address: Some(ip(address)),
            jar: Some(jar.clone()),
            ..BrowserOptions::default()
        })
    };
    let office = at("127.0.0.2");
    let cafe = at("127.0.0.5");

    let (request, page) = sso_fresh(&w, &office, &base, &app, "alice").await;
    assert_admitted(&app, &request, &page, "alice");

    // The session cookie travels; the address is checked again at every SSO, whatever the binding.
    let (_, page) = sso_live(&w, &cafe, &base, &app).await;
    assert_ip_denied(&page);
    let page = sso_init(&cafe, &base, &portal).await;
    assert_ip_denied(&page);
    let request = app.request(&w.idp.idp.config.sso_url());
    let page = cafe
        .post(
            &format!("{base}/saml/sso"),
            &TestSp::post_body(&request, "post"),
        )
        .await;
    assert_ip_denied(&page);

    // Back at the office, the same session works again.
    let (request, page) = sso_live(&w, &office, &base, &app).await;
    assert_admitted(&app, &request, &page, "alice");
    let page = sso_init(&office, &base, &portal).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    portal.accept(&page.saml_response(), None).unwrap();

    // The rule moves while the session is live: applied at the next SSO, without a restart.
    w.directory().remove_ip_rule("office").await.unwrap();
    w.add_rule("cafe-only", RuleScope::Everyone, &["127.0.0.5/32"])
        .await;
    let (_, page) = sso_live(&w, &office, &base, &app).await;
    assert_ip_denied(&page);
    let (request, page) = sso_live(&w, &cafe, &base, &app).await;
    assert_admitted(&app, &request, &page, "alice");

    // No rule at all: unrestricted again.
    w.directory().remove_ip_rule("cafe-only").await.unwrap();
    let (request, page) = sso_live(&w, &office, &base, &app).await;
    assert_admitted(&app, &request, &page, "alice");

    assert_refusals(
        &w,
        "alice",
        vec![
            ip_denied("127.0.0.5", Some(&app), &["office"]),
            ip_denied("127.0.0.5", Some(&portal), &["office"]),
            ip_denied("127.0.0.5", Some(&app), &["office"]),
            ip_denied("127.0.0.2", Some(&app), &["cafe-only"]),
        ],
    )
    .await;
}

mod live_session_from_banned_address {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory() {
        super::live_session_from_banned_address(Store::Memory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        super::live_session_from_banned_address(Store::redis("access_live").await).await;
    }
}

// 5. The record of refusals.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_listed_newest_first() {
    let w = World::new(&Store::Memory, &Listen::default()).await;
    let app = w.sp("app");
    w.populate(&["alice"], &[&app]).await;
    w.add_rule("office", RuleScope::Everyone, &["127.0.0.2/32"])
        .await;
    let base = w.v4();
    // Refusals in quick succession (usually within one second), each from its own address.
    let addresses: Vec<String> = (3..=10).map(|n| format!("127.0.0.{n}")).collect();
    for address in &addresses {
        let (_, page) = sso_fresh(&w, &browser_at(address), &base, &app, "alice").await;
        assert_ip_denied(&page);
    }
    w.idp.idp.events.flush().await;
    let listed: Vec<String> = w
        .directory()
        .login_events(Some("alice"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.ip)
        .collect();
    let newest_first: Vec<String> = addresses.iter().rev().cloned().collect();
    assert_eq!(
        listed, newest_first,
        "login_events is documented newest first"
    );
    let latest = w.directory().login_events(Some("alice"), 1).await.unwrap();
    assert_eq!(latest[0].ip, "127.0.0.10");
}

// 6. Security policies: resolved per user, evaluated at sign-in and at every SSO.

fn strict(name: &str) -> SecurityPolicy {
    SecurityPolicy {
        mfa_required: true,
        ..SecurityPolicy::new(name)
    }
}

async fn assign(w: &World, policy: &str, target: AssignmentTarget, priority: i64) {
    w.directory()
        .assign_policy(&PolicyAssignment {
            policy: policy.to_owned(),
            target,
            priority,
        })
        .await
        .unwrap();
}

/// How a sign-in or SSO short of a required second factor was answered.
#[derive(Debug, PartialEq, Eq)]
enum MfaAnswer {
    /// A 403 page saying what is missing: a refusal, which must be recorded.
    Refused,
    /// The person was asked for more (a second factor to complete or enrol, or a new sign-in): no
    /// refusal, nothing recorded.
    SteppedUp,
}

/// Follows the redirects from `page` (GET, at most 5) and checks that no SAML response appears on the
/// way. The end is either a 403 that names `policy` and says MFA is missing, or a page asking for a
/// second factor (saying MFA is required), or — when `login_form_ok` — the login form.
async fn expect_mfa_wall(
    browser: &Browser,
    base: &str,
    mut page: Page,
    policy: &str,
    login_form_ok: bool,
) -> MfaAnswer {
    for _ in 0..5 {
        assert!(!page.body.contains("SAMLResponse"), "{}", page.body);
        if !page.status.is_redirection() {
            break;
        }
        page = browser.follow(base, &page).await;
    }
    assert!(!page.body.contains("SAMLResponse"), "{}", page.body);
    assert!(!page.body.contains("saml-post"), "{}", page.body);
    let text = page.text();
    match page.status {
        StatusCode::FORBIDDEN => {
            assert!(
                text.contains("MFA") && text.contains(policy),
                "the refusal does not say what is missing:\n{}",
                page.body
            );
            MfaAnswer::Refused
        }
        StatusCode::OK if text.contains("MFA") && text.contains("second factor") => {
            assert!(!page.body.contains("name=\"password\""), "{}", page.body);
            MfaAnswer::SteppedUp
        }
        StatusCode::OK if login_form_ok && page.body.contains("name=\"password\"") => {
            MfaAnswer::SteppedUp
        }
        other => panic!("neither a refusal nor a step-up ({other}):\n{}", page.body),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_policy_is_enforced_at_sign_in_and_every_sso() {
    let w = World::new(&Store::Memory, &Listen::default()).await;
    let app = w.sp("app");
    w.populate(&["alice", "bob", "carol", "dave", "erin"], &[&app])
        .await;
    let dir = w.directory();
    dir.add_policy(&strict("strict")).await.unwrap();
    dir.add_policy(&SecurityPolicy::new("lenient"))
        .await
        .unwrap();
    dir.add_policy(&SecurityPolicy::new("relaxed"))
        .await
        .unwrap();
    dir.add_policy(&SecurityPolicy {
        ip_ranges: Some(ranges(&["127.0.0.2/32"])),
        ..SecurityPolicy::new("office-only")
    })
    .await
    .unwrap();
    // Only security keys, which this server (its base URL is an IP address) cannot offer.
    dir.add_policy(&SecurityPolicy {
        mfa_methods: vec![MfaMethod::WebAuthn],
        ..strict("keys-only")
    })
    .await
    .unwrap();
    dir.create_group("ops").await.unwrap();
    dir.add_user_to_group("bob", "ops").await.unwrap();
    dir.add_user_to_group("carol", "ops").await.unwrap();
    dir.create_role("contractor").await.unwrap();
    dir.add_user_to_role("dave", "contractor").await.unwrap();
    let base = w.v4();
    let mut alice_refusals = Vec::new();
    let mut bob_refusals = Vec::new();

    // MFA required, no second factor enrolled: no assertion with a password alone, and the page says
    // what is missing (a refusal, or the enrolment of a second factor).
    assign(&w, "strict", AssignmentTarget::User("alice".into()), 0).await;
    let browser = browser_at("127.0.0.2");
    let (_, page) = sso_fresh(&w, &browser, &base, &app, "alice").await;
    let refused = !sets_session(&page);
    if expect_mfa_wall(&browser, &base, page, "strict", false).await == MfaAnswer::Refused {
        assert!(refused, "a refused sign-in left a session");
        alice_refusals.push(policy_not_met("127.0.0.2", None, &["strict", "MFA"]));
    }

    // A requirement that cannot be met here at all: refused, saying what is missing, and recorded.
    assign(&w, "keys-only", AssignmentTarget::User("erin".into()), 0).await;
    let (_, page) = sso_fresh(&w, &browser_at("127.0.0.2"), &base, &app, "erin").await;
    assert_refused(&page, "MFA");
    assert!(page.text().contains("keys-only"), "{}", page.body);
    assert!(!sets_session(&page), "{:?}", page.headers);

    // Moved to a lenient policy, the same user signs in (a fresh browser: no half-done sign-in).
    assign(&w, "lenient", AssignmentTarget::User("alice".into()), 0).await;
    let browser = browser_at("127.0.0.2");
    let (request, page) = sso_fresh(&w, &browser, &base, &app, "alice").await;
    assert_admitted(&app, &request, &page, "alice");
    // The policy she is under becomes strict while her session is live: no assertion at the next SSO.
    dir.update_policy(&strict("lenient")).await.unwrap();
    let (_, page) = sso_live(&w, &browser, &base, &app).await;
    if expect_mfa_wall(&browser, &base, page, "lenient", true).await == MfaAnswer::Refused {
        alice_refusals.push(policy_not_met("127.0.0.2", Some(&app), &["lenient", "MFA"]));
    }

    // A group assignment made after sign-in; a direct assignment beats it.
    let bob = browser_at("127.0.0.2");
    let carol = browser_at("127.0.0.2");
    for (browser, user) in [(&bob, "bob"), (&carol, "carol")] {
        let (request, page) = sso_fresh(&w, browser, &base, &app, user).await;
        assert_admitted(&app, &request, &page, user);
    }
    assign(&w, "strict", AssignmentTarget::Group("ops".into()), 10).await;
    assign(&w, "relaxed", AssignmentTarget::User("carol".into()), 0).await;
    let (_, page) = sso_live(&w, &bob, &base, &app).await;
    if expect_mfa_wall(&bob, &base, page, "strict", true).await == MfaAnswer::Refused {
        bob_refusals.push(policy_not_met("127.0.0.2", Some(&app), &["strict", "MFA"]));
    }
    let (request, page) = sso_live(&w, &carol, &base, &app).await;
    assert_admitted(&app, &request, &page, "carol");

    // A policy's own allowlist, reaching dave through a role.
    assign(
        &w,
        "office-only",
        AssignmentTarget::Role("contractor".into()),
        5,
    )
    .await;
    let (request, page) = sso_fresh(&w, &browser_at("127.0.0.2"), &base, &app, "dave").await;
    assert_admitted(&app, &request, &page, "dave");
    let (_, page) = sso_fresh(&w, &browser_at("127.0.0.4"), &base, &app, "dave").await;
    assert_ip_denied(&page);

    // Every refusal shown is recorded; a step-up is not a refusal.
    assert_refusals(&w, "alice", alice_refusals).await;
    assert_refusals(&w, "bob", bob_refusals).await;
    assert_refusals(&w, "carol", Vec::new()).await;
    assert_refusals(
        &w,
        "erin",
        vec![policy_not_met("127.0.0.2", None, &["keys-only", "MFA"])],
    )
    .await;
    assert_refusals(
        &w,
        "dave",
        vec![ip_denied("127.0.0.4", None, &["office-only"])],
    )
    .await;
}
