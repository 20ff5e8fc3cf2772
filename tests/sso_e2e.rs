//! End to end: Tessera serving HTTP in-process, a browser with a cookie jar, and samael 0.0.22 as the
//! independent SP that makes the AuthnRequests and validates (signatures, audience, recipient,
//! InResponseTo) the responses Tessera's auto-submit forms carry.
//!
//! Scenarios marked "both stores" run once with the memory store and once with Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use base64::Engine as _;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tempfile::TempDir;

use common::idp::{
    fetch_idp_metadata, releasing_settings, status_codes, Browser, Page, SpOptions, Store, TestIdp,
    TestSp, PASSWORD,
};
use common::redis::{unique_prefix, RedisServer};
use tessera::directory::{SpSettings, UserStatus};

/// A value with markup and quotes: it must reach the SP as literal text.
const MARKUP: &str = r#"<Role>admin</Role> & "q""#;

const STATUS_RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
const STATUS_NO_PASSIVE: &str = "urn:oasis:names:tc:SAML:2.0:status:NoPassive";

/// A Tessera with its state in a temp dir, and its metadata as fetched over HTTP.
struct World {
    /// Keeps the SQLite file, keys and NameID secret alive for the test.
    _dir: TempDir,
    idp: TestIdp,
    /// GET /saml/metadata, what every SP is configured with.
    metadata: String,
}

impl World {
    async fn new(store: &Store) -> World {
        let dir = tempfile::tempdir().unwrap();
        let idp = TestIdp::start(dir.path(), store).await;
        let metadata = fetch_idp_metadata(&idp).await;
        World {
            _dir: dir,
            idp,
            metadata,
        }
    }

    fn sp(&self, name: &str, options: SpOptions) -> TestSp {
        TestSp::new(name, &self.metadata, options)
    }

    fn sso_url(&self) -> String {
        self.idp.idp.config.sso_url()
    }
}

/// Runs an async scenario once per session store.
macro_rules! both_stores {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$scenario(Store::Memory).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$scenario(Store::redis(stringify!($scenario)).await).await;
            }
        }
    };
}

/// The attributes of an assertion as name -> values.
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

/// The href of the portal link whose text is `label`.
fn app_link(page: &Page, label: &str) -> String {
    let end = page
        .body
        .find(&format!("\">{label}</a>"))
        .unwrap_or_else(|| panic!("no link {label:?} in {}", page.body));
    let start = page.body[..end].rfind("href=\"").unwrap() + "href=\"".len();
    common::idp::unescape_html(&page.body[start..end])
}

fn name_id(assertion: &samael::schema::Assertion) -> String {
    assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .map(|n| n.value.clone())
        .expect("assertion without NameID")
}

fn audiences(assertion: &samael::schema::Assertion) -> Vec<String> {
    assertion
        .conditions
        .iter()
        .flat_map(|c| c.audience_restrictions.iter().flatten())
        .flat_map(|r| r.audience.clone())
        .collect()
}

fn in_response_to(assertion: &samael::schema::Assertion) -> Vec<Option<String>> {
    assertion
        .subject
        .iter()
        .flat_map(|s| s.subject_confirmations.iter().flatten())
        .map(|c| {
            c.subject_confirmation_data
                .as_ref()
                .and_then(|d| d.in_response_to.clone())
        })
        .collect()
}

/// A refusal page: the status, the visible message, and certainly no SAML response anywhere.
fn assert_refused(page: &Page, status: StatusCode, text: &str) {
    assert_eq!(page.status, status, "{}", page.body);
    assert!(
        page.text().contains(text),
        "{text:?} not in the page:\n{}",
        page.body
    );
    assert!(!page.body.contains("SAMLResponse"), "{}", page.body);
    assert!(!page.body.contains("saml-post"), "{}", page.body);
}

// 1. SP-initiated SSO by HTTP-Redirect.
async fn sp_initiated_redirect(store: Store) {
    let w = World::new(&store).await;
    w.idp.add_user("alice", &[("title", MARKUP)]).await;
    let sp = w.sp("one", SpOptions::default());
    w.idp.register(&sp, releasing_settings(), &["alice"]).await;
    let browser = Browser::new();

    let health = browser.get(&w.idp.url("/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);

    let request = sp.request(&w.sso_url());
    let url = TestSp::redirect_url(&request, "rs-1");
    let first = browser.get(&url).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    assert!(first.location().unwrap().starts_with("/login?request="));
    let login = browser.follow(&w.idp.url(""), &first).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("name=\"password\""), "{}", login.body);
    assert!(login.text().contains("App one"), "{}", login.body);
    assert!(!login.is_saml_post());

    let form = browser
        .submit_login(&w.idp, &login, "alice", PASSWORD)
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    // saml-bindings 3.5.5.1: not cached. The session cookie is out of reach of scripts.
    let cache = form.headers.get("cache-control").unwrap().to_str().unwrap();
    assert!(cache.contains("no-store"), "{cache}");
    let cookies: Vec<&str> = form
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("tessera_session="))
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    assert!(session_cookie.contains("HttpOnly"), "{session_cookie}");
    assert!(session_cookie.contains("SameSite=Lax"), "{session_cookie}");
    assert_eq!(form.form_action().as_deref(), Some(sp.acs_url.as_str()));
    assert_eq!(form.field("RelayState").as_deref(), Some("rs-1"));
    let response = form.saml_response();
    let xml = form.saml_response_xml();
    assert!(
        xml.contains(&format!("InResponseTo=\"{}\"", request.id)),
        "{xml}"
    );
    // The markup travels escaped, never as elements.
    assert!(!xml.contains("<Role>"), "{xml}");

    let assertion = sp
        .accept(&response, Some(&[request.id.as_str()]))
        .unwrap_or_else(|e| panic!("samael refused the response: {e}\n{xml}"));
    assert_eq!(name_id(&assertion), "alice");
    assert_eq!(audiences(&assertion), vec![sp.entity_id.clone()]);
    assert_eq!(in_response_to(&assertion), vec![Some(request.id.clone())]);
    assert_eq!(
        assertion.issuer.value.as_deref(),
        Some(w.idp.entity_id().as_str())
    );
    let attrs = attributes(&assertion);
    assert_eq!(
        attrs.get("urn:oid:0.9.2342.19200300.100.1.3"),
        Some(&vec!["alice@example.org".to_owned()])
    );
    assert_eq!(
        attrs.get("urn:oid:2.16.840.1.113730.3.1.241"),
        Some(&vec!["User alice".to_owned()])
    );
    assert_eq!(
        attrs.get("urn:oid:2.5.4.12"),
        Some(&vec![MARKUP.to_owned()])
    );
    assert_eq!(attrs.len(), 3, "{attrs:?}");

    // samael really checks InResponseTo and the signatures: the same response for another request,
    // or with another NameID, is refused.
    assert!(sp.accept(&response, Some(&["id-other"])).is_err());
    assert!(xml.contains(">alice</"), "{xml}");
    let tampered =
        base64::engine::general_purpose::STANDARD.encode(xml.replace(">alice</", ">mallory</"));
    assert!(sp.accept(&tampered, Some(&[request.id.as_str()])).is_err());
}
both_stores!(sp_initiated_redirect);

// 2. A second SP in the same session: no login page.
async fn second_sp_without_login(store: Store) {
    let w = World::new(&store).await;
    w.idp.add_user("alice", &[]).await;
    let one = w.sp("one", SpOptions::default());
    let two = w.sp("two", SpOptions::default());
    w.idp
        .register(&one, SpSettings::default(), &["alice"])
        .await;
    w.idp.register(&two, releasing_settings(), &["alice"]).await;
    let browser = Browser::new();

    let first = one.request(&w.sso_url());
    let form = browser
        .sso_with_login(&w.idp, &TestSp::redirect_url(&first, ""), "alice")
        .await;
    one.accept(&form.saml_response(), Some(&[first.id.as_str()]))
        .unwrap();

    // The second SP asks for a persistent NameID (saml-core 3.4.1.1, 8.3.7).
    let persistent = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
    let with_policy = |mut request: samael::schema::AuthnRequest| {
        request.name_id_policy = Some(samael::schema::NameIdPolicy {
            format: Some(persistent.to_owned()),
            allow_create: Some(true),
            ..Default::default()
        });
        request
    };
    let second = with_policy(two.request(&w.sso_url()));
    let direct = browser.get(&TestSp::redirect_url(&second, "to-two")).await;
    assert_eq!(direct.status, StatusCode::OK, "{}", direct.body);
    assert!(!direct.body.contains("name=\"password\""));
    assert_eq!(direct.form_action().as_deref(), Some(two.acs_url.as_str()));
    assert_eq!(direct.field("RelayState").as_deref(), Some("to-two"));
    let assertion = two
        .accept(&direct.saml_response(), Some(&[second.id.as_str()]))
        .unwrap();
    let opaque = name_id(&assertion);
    assert_ne!(opaque, "alice");
    assert!(!opaque.is_empty());
    let format = assertion
        .subject
        .as_ref()
        .unwrap()
        .name_id
        .as_ref()
        .unwrap()
        .format
        .clone();
    assert_eq!(format.as_deref(), Some(persistent));
    assert_eq!(audiences(&assertion), vec![two.entity_id.clone()]);
    // Persistent means the same value next time.
    let again = with_policy(two.request(&w.sso_url()));
    let page = browser.get(&TestSp::redirect_url(&again, "")).await;
    let assertion = two
        .accept(&page.saml_response(), Some(&[again.id.as_str()]))
        .unwrap();
    assert_eq!(name_id(&assertion), opaque);
    // The first SP's samael does not take the second SP's response (wrong audience and recipient).
    assert!(one
        .accept(&direct.saml_response(), Some(&[second.id.as_str()]))
        .is_err());

    // Signing out ends the session for every SP: the next request needs the login page again.
    let apps = browser.get(&w.idp.url("/apps")).await;
    let csrf = apps.field("csrf_token").unwrap();
    let out = browser
        .post(&w.idp.url("/logout"), &[("csrf_token".to_owned(), csrf)])
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    let third = one.request(&w.sso_url());
    let page = browser.get(&TestSp::redirect_url(&third, "")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(page.location().unwrap().starts_with("/login?request="));
}
both_stores!(second_sp_without_login);

// 3. IdP-initiated SSO from the portal.
async fn idp_initiated(store: Store) {
    let w = World::new(&store).await;
    w.idp.add_user("alice", &[]).await;
    let options = SpOptions {
        allow_idp_initiated: true,
        ..SpOptions::default()
    };
    let portal = w.sp("portal", options);
    let other = w.sp("other", options);
    let hidden = w.sp("hidden", options);
    w.idp
        .register(&portal, releasing_settings(), &["alice"])
        .await;
    w.idp
        .register(&other, SpSettings::default(), &["alice"])
        .await;
    w.idp.register(&hidden, SpSettings::default(), &[]).await;
    let browser = Browser::new();

    let anonymous = browser.get(&w.idp.url("/apps")).await;
    assert!(anonymous.status.is_redirection(), "{}", anonymous.body);
    assert!(anonymous.location().unwrap().starts_with("/login"));

    browser.sign_in(&w.idp, "alice").await;
    let apps = browser.get(&w.idp.url("/apps")).await;
    assert_eq!(apps.status, StatusCode::OK, "{}", apps.body);
    let text = apps.text();
    assert!(text.contains("App portal"), "{text}");
    assert!(text.contains("App other"), "{text}");
    assert!(!text.contains("App hidden"), "{text}");
    assert!(!text.contains("hidden.sp.test"), "{text}");
    // The portal links to IdP-initiated SSO for the app; follow the link as a person would.
    let link = app_link(&apps, "App portal");
    let target: String = url::Url::parse(&w.idp.url(&link))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "sp")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(target, portal.entity_id);
    let form = browser
        .get(&w.idp.url(&format!("{link}&RelayState=deep-link")))
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert_eq!(form.form_action().as_deref(), Some(portal.acs_url.as_str()));
    assert_eq!(form.field("RelayState").as_deref(), Some("deep-link"));
    let xml = form.saml_response_xml();
    assert!(!xml.contains("InResponseTo"), "unsolicited, yet: {xml}");
    let assertion = portal.accept(&form.saml_response(), None).unwrap();
    assert_eq!(name_id(&assertion), "alice");
    assert_eq!(audiences(&assertion), vec![portal.entity_id.clone()]);
    assert_eq!(in_response_to(&assertion), vec![None]);

    // An app the user does not have is refused from the portal too.
    let encoded: String =
        url::form_urlencoded::byte_serialize(hidden.entity_id.as_bytes()).collect();
    let refused = browser
        .get(&w.idp.url(&format!("/saml/init?sp={encoded}")))
        .await;
    assert_refused(
        &refused,
        StatusCode::FORBIDDEN,
        "You don't have access to this app",
    );
}
both_stores!(idp_initiated);

// 4. HTTP-POST binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_binding_round_trips_relay_state() {
    let w = World::new(&Store::Memory).await;
    w.idp.add_user("alice", &[]).await;
    let sp = w.sp("poster", SpOptions::default());
    w.idp.register(&sp, SpSettings::default(), &["alice"]).await;
    let browser = Browser::new();
    let relay = r#"a b&c=d<e>"f"#;

    // Without a session: through the login page, RelayState kept with the pending request.
    let request = sp.request(&w.sso_url());
    let first = browser
        .post(&w.idp.url("/saml/sso"), &TestSp::post_body(&request, relay))
        .await;
    let form = browser.login_after(&w.idp, first, "alice").await;
    assert_eq!(form.field("RelayState").as_deref(), Some(relay));
    let assertion = sp
        .accept(&form.saml_response(), Some(&[request.id.as_str()]))
        .unwrap();
    assert_eq!(name_id(&assertion), "alice");

    // With the session: answered at once.
    let request = sp.request(&w.sso_url());
    let form = browser
        .post(
            &w.idp.url("/saml/sso"),
            &TestSp::post_body(&request, "second"),
        )
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert_eq!(form.field("RelayState").as_deref(), Some("second"));
    sp.accept(&form.saml_response(), Some(&[request.id.as_str()]))
        .unwrap();
}

// 5. ForceAuthn and IsPassive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_authn_and_is_passive() {
    let w = World::new(&Store::Memory).await;
    w.idp.add_user("alice", &[]).await;
    let sp = w.sp("strict", SpOptions::default());
    w.idp.register(&sp, SpSettings::default(), &["alice"]).await;
    let browser = Browser::new();
    let first = sp.request(&w.sso_url());
    let form = browser
        .sso_with_login(&w.idp, &TestSp::redirect_url(&first, ""), "alice")
        .await;
    sp.accept(&form.saml_response(), Some(&[first.id.as_str()]))
        .unwrap();

    // ForceAuthn with a live session: the login page again, then a response.
    let mut forced = sp.request(&w.sso_url());
    forced.force_authn = Some(true);
    let answer = browser.get(&TestSp::redirect_url(&forced, "")).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let login = browser.follow(&w.idp.url(""), &answer).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("name=\"password\""), "{}", login.body);
    assert!(!login.is_saml_post(), "ForceAuthn answered without a login");
    let form = browser
        .submit_login(&w.idp, &login, "alice", PASSWORD)
        .await;
    sp.accept(&form.saml_response(), Some(&[forced.id.as_str()]))
        .unwrap();

    // IsPassive with a live session: answered without interaction.
    let mut passive = sp.request(&w.sso_url());
    passive.is_passive = Some(true);
    let direct = browser.get(&TestSp::redirect_url(&passive, "")).await;
    sp.accept(&direct.saml_response(), Some(&[passive.id.as_str()]))
        .unwrap();

    // IsPassive without a session: a NoPassive error response, no login page.
    let stranger = Browser::new();
    let mut passive = sp.request(&w.sso_url());
    passive.is_passive = Some(true);
    let mut page = stranger.get(&TestSp::redirect_url(&passive, "p")).await;
    for _ in 0..3 {
        if !page.status.is_redirection() {
            break;
        }
        page = stranger.follow(&w.idp.url(""), &page).await;
    }
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains("name=\"password\""), "{}", page.body);
    assert_eq!(page.form_action().as_deref(), Some(sp.acs_url.as_str()));
    assert_eq!(page.field("RelayState").as_deref(), Some("p"));
    let xml = page.saml_response_xml();
    assert_eq!(
        status_codes(&xml),
        vec![STATUS_RESPONDER.to_owned(), STATUS_NO_PASSIVE.to_owned()],
        "{xml}"
    );
    assert!(
        xml.contains(&format!("InResponseTo=\"{}\"", passive.id)),
        "{xml}"
    );
    assert!(!xml.contains("Assertion"), "{xml}");
    assert!(sp
        .accept(&page.saml_response(), Some(&[passive.id.as_str()]))
        .is_err());
}

// 6. Refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_without_assertion() {
    let w = World::new(&Store::Memory).await;
    w.idp.add_user("alice", &[]).await;
    let sp = w.sp("refuse", SpOptions::default());
    w.idp.register(&sp, SpSettings::default(), &["alice"]).await;
    let browser = Browser::new();
    let first = sp.request(&w.sso_url());
    browser
        .sso_with_login(&w.idp, &TestSp::redirect_url(&first, ""), "alice")
        .await
        .saml_response();

    // A foreign ACS URL, with a live session that would otherwise get an assertion.
    let mut foreign = sp.request(&w.sso_url());
    foreign.assertion_consumer_service_url = Some("https://evil.example/acs".into());
    let page = browser.get(&TestSp::redirect_url(&foreign, "")).await;
    assert_refused(
        &page,
        StatusCode::BAD_REQUEST,
        "an address it has not registered",
    );
    assert!(!page.body.contains("evil.example"), "{}", page.body);

    // A replayed request.
    let once = sp.request(&w.sso_url());
    let url = TestSp::redirect_url(&once, "");
    let ok = browser.get(&url).await;
    sp.accept(&ok.saml_response(), Some(&[once.id.as_str()]))
        .unwrap();
    let again = browser.get(&url).await;
    assert_refused(&again, StatusCode::BAD_REQUEST, "already used");

    // An SP that is not registered.
    let ghost = w.sp("ghost", SpOptions::default());
    let page = browser
        .get(&TestSp::redirect_url(&ghost.request(&w.sso_url()), ""))
        .await;
    assert_refused(&page, StatusCode::BAD_REQUEST, "not registered");

    // Garbage.
    for query in [
        "SAMLRequest=garbage%21%21",
        "SAMLRequest=AAAA",
        "",
        "foo=bar",
    ] {
        let page = browser.get(&w.idp.url(&format!("/saml/sso?{query}"))).await;
        assert_refused(&page, StatusCode::BAD_REQUEST, "Invalid sign-in request");
    }
    let page = browser
        .post(
            &w.idp.url("/saml/sso"),
            &[("SAMLRequest".to_owned(), "bm90IHhtbA==".to_owned())],
        )
        .await;
    assert_refused(&page, StatusCode::BAD_REQUEST, "Invalid sign-in request");

    // Malformed input to the other endpoints gets Tessera's page too, not a framework's plain text.
    let page = browser.get(&w.idp.url("/saml/init")).await;
    assert_refused(&page, StatusCode::BAD_REQUEST, "not registered");
    let page = browser.get(&w.idp.url("/saml/init?sp=a&sp=b")).await;
    assert_refused(&page, StatusCode::BAD_REQUEST, "could not be read");
    let page = Browser::page_of(
        browser
            .raw()
            .post(w.idp.url("/login"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_refused(&page, StatusCode::BAD_REQUEST, "could not be read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_look_alike_and_need_csrf() {
    let w = World::new(&Store::Memory).await;
    w.idp.add_user("alice", &[]).await;
    let browser = Browser::new();
    let login = browser.get(&w.idp.url("/login")).await;
    let csrf = login.field("csrf_token").unwrap();
    assert_eq!(csrf.len(), 43, "{}", login.body);

    // No token, or a wrong one: 403 and no session.
    let form = |token: Option<&str>| {
        let mut f = vec![
            ("username".to_owned(), "alice".to_owned()),
            ("password".to_owned(), PASSWORD.to_owned()),
            ("request".to_owned(), String::new()),
        ];
        if let Some(t) = token {
            f.push(("csrf_token".to_owned(), t.to_owned()));
        }
        f
    };
    let hasher = w.idp.idp.directory.password_hasher().clone();
    let before = hasher.verifications();
    let page = browser.post(&w.idp.url("/login"), &form(None)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    let wrong = "A".repeat(43);
    let page = browser
        .post(&w.idp.url("/login"), &form(Some(&wrong)))
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert_eq!(
        hasher.verifications(),
        before,
        "CSRF failures must not reach the password check"
    );
    let apps = browser.get(&w.idp.url("/apps")).await;
    assert!(apps.status.is_redirection(), "signed in without CSRF token");

    // Wrong password and unknown user: same status, same page, one argon2 verification each.
    let before = hasher.verifications();
    let wrong_password = browser
        .submit_login(&w.idp, &login, "alice", "not the password at all")
        .await;
    assert_eq!(hasher.verifications(), before + 1);
    let before = hasher.verifications();
    let unknown_user = browser
        .submit_login(&w.idp, &login, "nobody", PASSWORD)
        .await;
    assert_eq!(hasher.verifications(), before + 1);
    assert_eq!(wrong_password.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password.status, unknown_user.status);
    for page in [&wrong_password, &unknown_user] {
        assert!(
            page.text().contains("Incorrect username or password."),
            "{}",
            page.body
        );
        assert!(page.body.contains("name=\"password\""));
    }
    // The pages differ only in the username typed back into the form.
    assert_eq!(
        wrong_password.body.replace("alice", "<user>"),
        unknown_user.body.replace("nobody", "<user>")
    );
    assert_eq!(
        wrong_password.headers.get("set-cookie"),
        unknown_user.headers.get("set-cookie")
    );
    let apps = browser.get(&w.idp.url("/apps")).await;
    assert!(
        apps.status.is_redirection(),
        "signed in with a wrong password"
    );

    // The right password works with the same form.
    let ok = browser
        .submit_login(&w.idp, &login, "alice", PASSWORD)
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_user_and_unassigned_app_get_no_assertion() {
    let w = World::new(&Store::Memory).await;
    w.idp.add_user("alice", &[]).await;
    w.idp.add_user("bob", &[]).await;
    let sp = w.sp("guarded", SpOptions::default());
    w.idp.register(&sp, SpSettings::default(), &["alice"]).await;

    // Disabled while signed in: the live session gets nothing.
    let alice = Browser::new();
    let first = sp.request(&w.sso_url());
    alice
        .sso_with_login(&w.idp, &TestSp::redirect_url(&first, ""), "alice")
        .await
        .saml_response();
    w.idp
        .idp
        .directory
        .set_user_status("alice", UserStatus::Disabled)
        .await
        .unwrap();
    let page = alice
        .get(&TestSp::redirect_url(&sp.request(&w.sso_url()), ""))
        .await;
    assert_refused(&page, StatusCode::FORBIDDEN, "Your account is disabled");
    // The session is gone with it: re-enabled, alice must sign in again.
    w.idp
        .idp
        .directory
        .set_user_status("alice", UserStatus::Active)
        .await
        .unwrap();
    let page = alice
        .get(&TestSp::redirect_url(&sp.request(&w.sso_url()), ""))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);

    // Not assigned: refused right after the login, and again with the live session.
    let bob = Browser::new();
    let page = bob
        .sso_with_login(
            &w.idp,
            &TestSp::redirect_url(&sp.request(&w.sso_url()), ""),
            "bob",
        )
        .await;
    assert_refused(
        &page,
        StatusCode::FORBIDDEN,
        "You don't have access to this app",
    );
    let page = bob
        .get(&TestSp::redirect_url(&sp.request(&w.sso_url()), ""))
        .await;
    assert_refused(
        &page,
        StatusCode::FORBIDDEN,
        "You don't have access to this app",
    );
}

// 7. A restart with the Redis store keeps the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_session_survives_restart() {
    let store = Store::redis("restart").await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestIdp::start(dir.path(), &store).await;
    let metadata = fetch_idp_metadata(&a).await;
    a.add_user("alice", &[]).await;
    let sp = TestSp::new("durable", &metadata, SpOptions::default());
    a.register(&sp, SpSettings::default(), &["alice"]).await;
    let browser = Browser::new();
    let first = sp.request(&a.idp.config.sso_url());
    let form = browser
        .sso_with_login(&a, &TestSp::redirect_url(&first, ""), "alice")
        .await;
    sp.accept(&form.saml_response(), Some(&[first.id.as_str()]))
        .unwrap();
    let port = a.port;
    let entity_id = a.entity_id();
    a.stop().await;

    let b = TestIdp::start_on(dir.path(), &store, port).await;
    // Same port, same certs dir: the SP's view of the IdP is still right.
    assert_eq!(b.entity_id(), entity_id);
    let again = sp.request(&b.idp.config.sso_url());
    let direct = browser.get(&TestSp::redirect_url(&again, "")).await;
    assert_eq!(
        direct.status,
        StatusCode::OK,
        "login asked again: {}",
        direct.body
    );
    let assertion = sp
        .accept(&direct.saml_response(), Some(&[again.id.as_str()]))
        .unwrap();
    assert_eq!(name_id(&assertion), "alice");

    // Control: the same restart with the memory store loses the session.
    let dir = tempfile::tempdir().unwrap();
    let m = TestIdp::start(dir.path(), &Store::Memory).await;
    let metadata = fetch_idp_metadata(&m).await;
    m.add_user("alice", &[]).await;
    let sp = TestSp::new("volatile", &metadata, SpOptions::default());
    m.register(&sp, SpSettings::default(), &["alice"]).await;
    let browser = Browser::new();
    let request = sp.request(&m.idp.config.sso_url());
    browser
        .sso_with_login(&m, &TestSp::redirect_url(&request, ""), "alice")
        .await
        .saml_response();
    let port = m.port;
    m.stop().await;
    let m2 = TestIdp::start_on(dir.path(), &Store::Memory, port).await;
    let page = browser
        .get(&TestSp::redirect_url(
            &sp.request(&m2.idp.config.sso_url()),
            "",
        ))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
}

// 8. Redis outage: an error page, no assertion, and recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_recovers() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start_on_free_port)
        .await
        .unwrap();
    let port = server.port();
    let store = Store::Redis {
        url: server.url(),
        prefix: unique_prefix("outage"),
    };
    let w = World::new(&store).await;
    w.idp.add_user("alice", &[]).await;
    let sp = w.sp("outage", SpOptions::default());
    w.idp.register(&sp, SpSettings::default(), &["alice"]).await;
    let browser = Browser::new();
    assert_eq!(
        browser.get(&w.idp.url("/healthz")).await.status,
        StatusCode::OK
    );
    let first = sp.request(&w.sso_url());
    browser
        .sso_with_login(&w.idp, &TestSp::redirect_url(&first, ""), "alice")
        .await
        .saml_response();

    server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let started = Instant::now();
    let health = browser.get(&w.idp.url("/healthz")).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    let page = browser
        .get(&TestSp::redirect_url(&sp.request(&w.sso_url()), ""))
        .await;
    assert_refused(
        &page,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily unavailable",
    );
    let login = browser.get(&w.idp.url("/login")).await;
    assert_eq!(
        login.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        login.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "outage answers are slow"
    );

    drop(server);
    let restarted = tokio::task::spawn_blocking(move || RedisServer::start(port))
        .await
        .unwrap()
        .expect("redis-server again on the same port");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if browser.get(&w.idp.url("/healthz")).await.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new Redis is empty: the old session is gone, a new sign-in works end to end.
    let request = sp.request(&w.sso_url());
    let form = browser
        .sso_with_login(&w.idp, &TestSp::redirect_url(&request, "back"), "alice")
        .await;
    sp.accept(&form.saml_response(), Some(&[request.id.as_str()]))
        .unwrap();
    drop(restarted);
}

// 9. Signed AuthnRequests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_required_when_metadata_says_so() {
    let w = World::new(&Store::Memory).await;
    w.idp.add_user("alice", &[]).await;
    let sp = w.sp(
        "signer",
        SpOptions {
            signs_requests: true,
            ..SpOptions::default()
        },
    );
    assert!(
        sp.metadata_xml.contains("AuthnRequestsSigned=\"true\""),
        "{}",
        sp.metadata_xml
    );
    w.idp.register(&sp, SpSettings::default(), &["alice"]).await;
    let browser = Browser::new();

    let request = sp.request(&w.sso_url());
    let signed = sp.signed_redirect_url(&request, "signed");
    assert!(signed.contains("Signature="));
    let form = browser.sso_with_login(&w.idp, &signed, "alice").await;
    assert_eq!(form.field("RelayState").as_deref(), Some("signed"));
    sp.accept(&form.saml_response(), Some(&[request.id.as_str()]))
        .unwrap();

    // The same request without its signature, and a fresh unsigned one, with a live session.
    let page = browser.get(&TestSp::redirect_url(&request, "signed")).await;
    assert_refused(
        &page,
        StatusCode::FORBIDDEN,
        "not signed by the application",
    );
    let fresh = sp.request(&w.sso_url());
    let page = browser.get(&TestSp::redirect_url(&fresh, "")).await;
    assert_refused(
        &page,
        StatusCode::FORBIDDEN,
        "not signed by the application",
    );
    // Signed by another key: refused as well.
    let impostor = w.sp(
        "signer-impostor",
        SpOptions {
            signs_requests: true,
            ..SpOptions::default()
        },
    );
    let forged = impostor.signed_redirect_url(&sp.request(&w.sso_url()), "");
    let page = browser.get(&forged).await;
    assert_refused(
        &page,
        StatusCode::FORBIDDEN,
        "not signed by the application",
    );
}
