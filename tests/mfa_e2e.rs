//! End to end: second factors in the sign-in flow of a running Tessera, with samael 0.0.22 as the
//! independent SP that parses (and checks the signature of) every assertion.
//!
//! TOTP codes are computed here with `tessera::mfa::totp` from the secret the enrolment page shows (or
//! that the test enrolled through the MFA engine); WebAuthn runs with webauthn-authenticator-rs's
//! software passkey over the same HTTP endpoints the page's script uses. The headless-Chromium test of
//! the same pages is in tests/mfa_browser.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;
use samael::schema::{
    Assertion, AuthnContextClassRef, AuthnContextComparison, AuthnRequest, RequestedAuthnContext,
};
use tempfile::TempDir;

use common::idp::{
    fetch_idp_metadata, status_codes, Browser, Page, SpOptions, Store, TestIdp, TestSp,
};
use tessera::config::Config;
use tessera::directory::{Directory, MfaAction, MfaActor, SpSettings};
use tessera::mfa::{totp, TotpSecret};
use tessera::policy::{
    AssignmentTarget, PolicyAssignment, Requirement, SecurityPolicy, SpRequirement,
};
use tessera::saml::response::class_ref;

const NO_AUTHN_CONTEXT: &str = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext";

/// A Tessera in a temp dir, reached at `base`.
struct World {
    /// Keeps the SQLite file, keys and MFA key alive for the test.
    dir: TempDir,
    /// The server under test.
    idp: TestIdp,
    /// Our metadata as fetched over HTTP, for the SPs.
    metadata: String,
    /// `http://127.0.0.1:<port>` or `http://localhost:<port>`: the origin of `base_url`.
    base: String,
}

impl World {
    /// Tessera on 127.0.0.1 (WebAuthn off: the host is an address).
    async fn new() -> World {
        Self::with(Store::Memory, "127.0.0.1", |_| {}).await
    }

    /// Tessera whose base URL has host `host`, configured by `configure`.
    async fn with(store: Store, host: &str, configure: impl FnOnce(&mut Config)) -> World {
        let dir = tempfile::tempdir().unwrap();
        let idp = TestIdp::start_configured(dir.path(), &store, host, configure).await;
        let metadata = fetch_idp_metadata(&idp).await;
        let base = format!("http://{host}:{}", idp.port);
        World {
            dir,
            idp,
            metadata,
            base,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn directory(&self) -> &Directory {
        &self.idp.idp.directory
    }

    /// An SP registered and assigned to `users`.
    async fn sp(&self, name: &str, users: &[&str]) -> TestSp {
        let sp = TestSp::new(name, &self.metadata, SpOptions::default());
        self.idp.register(&sp, SpSettings::default(), users).await;
        sp
    }

    /// A policy named `name` requiring MFA, assigned directly to `users`.
    async fn strict_policy(&self, name: &str, users: &[&str]) {
        let mut policy = SecurityPolicy::new(name);
        policy.mfa_required = true;
        self.directory().add_policy(&policy).await.unwrap();
        for user in users {
            self.directory()
                .assign_policy(&PolicyAssignment {
                    policy: name.to_owned(),
                    target: AssignmentTarget::User((*user).to_owned()),
                    priority: 0,
                })
                .await
                .unwrap();
        }
    }

    /// Makes `sp` require MFA (done at most `within` seconds ago, when given).
    async fn sp_requires_mfa(&self, sp: &TestSp, within: Option<u64>) {
        self.directory()
            .set_sp_access(
                &sp.entity_id,
                &SpRequirement {
                    ip_ranges: None,
                    min: Some(Requirement {
                        mfa: true,
                        mfa_within_secs: within,
                    }),
                },
            )
            .await
            .unwrap();
    }

    async fn user_id(&self, username: &str) -> i64 {
        self.directory()
            .get_user_by_username(username)
            .await
            .unwrap()
            .unwrap()
            .id
    }

    /// Enrols a TOTP factor for `username` through the MFA engine (as an earlier sign-in would have),
    /// confirming with the code of the current step, and returns the secret.
    async fn enrol_totp(&self, username: &str) -> TotpSecret {
        let id = self.user_id(username).await;
        let mfa = &self.idp.idp.mfa;
        let enrolment = mfa.begin_totp_enrolment(id, username).await.unwrap();
        let secret = secret_from_text(&enrolment.secret_base32);
        let now = unix_now();
        let outcome = mfa
            .confirm_totp_enrolment(id, &secret.code_at(now).unwrap(), now)
            .await
            .unwrap();
        assert!(
            matches!(outcome, tessera::mfa::TotpOutcome::Accepted { .. }),
            "{outcome:?}"
        );
        secret
    }

    /// An SP-initiated sign-in request from `sp`, with `context` as its RequestedAuthnContext.
    fn request(
        &self,
        sp: &TestSp,
        context: Option<(AuthnContextComparison, &[&str])>,
    ) -> AuthnRequest {
        let mut request = sp.request(&self.idp.idp.config.sso_url());
        request.requested_authn_context = context.map(|(comparison, refs)| RequestedAuthnContext {
            authn_context_class_refs: Some(
                refs.iter()
                    .map(|r| AuthnContextClassRef {
                        value: Some((*r).to_owned()),
                    })
                    .collect(),
            ),
            authn_context_decl_refs: None,
            comparison: Some(comparison),
        });
        request
    }

    /// Sends `request` through the browser (HTTP-Redirect binding) and returns Tessera's answer.
    async fn send(&self, browser: &Browser, request: &AuthnRequest) -> Page {
        browser.get(&TestSp::redirect_url(request, "relay-1")).await
    }

    /// From the 303 to /login after an SSO request: the form, the password; returns the answer.
    async fn password(&self, browser: &Browser, first: Page, username: &str) -> Page {
        browser.login_after_at(&self.base, first, username).await
    }

    /// Follows a redirect to the MFA page and returns it.
    async fn to_mfa_page(&self, browser: &Browser, redirect: &Page) -> Page {
        assert_eq!(redirect.status, StatusCode::SEE_OTHER, "{}", redirect.body);
        assert_eq!(
            redirect.location().as_deref(),
            Some("/mfa"),
            "{:?}",
            redirect.headers
        );
        let page = browser.follow(&self.base, redirect).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page
    }

    /// Posts `fields` plus the page's CSRF token to `path`.
    async fn post_form(
        &self,
        browser: &Browser,
        page: &Page,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Page {
        let mut form = vec![(
            "csrf_token".to_owned(),
            page.field("csrf_token").expect("csrf_token on the page"),
        )];
        form.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        browser.post(&self.url(path), &form).await
    }

    /// Whether `browser` has a Tessera session: /apps shows the portal rather than sending to /login.
    async fn signed_in(&self, browser: &Browser) -> bool {
        let apps = browser.get(&self.url("/apps")).await;
        apps.status == StatusCode::OK
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// RFC 4648 base32 (no padding, spaces ignored) to a TOTP secret, as an authenticator app reads the
/// text beside the QR code.
fn secret_from_text(text: &str) -> TotpSecret {
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
    TotpSecret::from_bytes(&out).unwrap()
}

/// The code of `secret` `steps` time steps from now (one step ahead is within the accepted drift).
fn code(secret: &TotpSecret, steps: i64) -> String {
    secret
        .code_at(unix_now() + steps * totp::STEP_SECONDS)
        .unwrap()
}

/// The text of the element with `id` on the page (simple markup: up to the next `<`).
fn element_text(page: &Page, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} on the page:\n{}", page.body));
    let start = page.body[at..].find('>').unwrap() + at + 1;
    let end = page.body[start..].find('<').unwrap() + start;
    page.body[start..end].to_owned()
}

/// The recovery codes shown on the page.
fn recovery_codes(page: &Page) -> Vec<String> {
    let list_at = page
        .body
        .find("id=\"recovery-codes\"")
        .unwrap_or_else(|| panic!("no recovery codes on the page:\n{}", page.body));
    page.body[list_at..]
        .split("<code>")
        .skip(1)
        .map(|chunk| chunk.split("</code>").next().unwrap().to_owned())
        .collect()
}

/// What samael makes of the SAML response on `page` for `request`.
fn accepted(sp: &TestSp, page: &Page, request: &AuthnRequest) -> Assertion {
    let response = page.saml_response();
    sp.accept(&response, Some(&[request.id.as_str()]))
        .unwrap_or_else(|e| {
            panic!(
                "samael refused the response: {e}\n{}",
                page.saml_response_xml()
            )
        })
}

/// The AuthnContextClassRef of a parsed assertion.
fn class_of(assertion: &Assertion) -> String {
    assertion
        .authn_statements
        .as_ref()
        .and_then(|s| s.first())
        .and_then(|s| s.authn_context.as_ref())
        .and_then(|c| c.value.as_ref())
        .and_then(|c| c.value.clone())
        .expect("an AuthnContextClassRef")
}

// ---------------------------------------------------------------------------------------------
// TOTP at sign-in: accepted, replayed, wrong and rate-limited.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn password_and_totp_code_sign_in_and_a_replayed_code_is_refused_memory() {
    password_and_totp_code_sign_in_and_a_replayed_code_is_refused(Store::Memory).await;
}

#[tokio::test]
async fn password_and_totp_code_sign_in_and_a_replayed_code_is_refused_redis() {
    password_and_totp_code_sign_in_and_a_replayed_code_is_refused(Store::redis("mfa-e2e").await)
        .await;
}

/// The half-signed-in state, the attempt counter and the replay cache live in `store`.
async fn password_and_totp_code_sign_in_and_a_replayed_code_is_refused(store: Store) {
    let w = World::with(store, "127.0.0.1", |_| {}).await;
    w.idp.add_user("alice", &[]).await;
    let sp = w.sp("crm", &["alice"]).await;
    w.strict_policy("strict", &["alice"]).await;
    let secret = w.enrol_totp("alice").await;

    let browser = Browser::new();
    let request = w.request(&sp, None);
    let first = w.send(&browser, &request).await;
    let after_password = w.password(&browser, first, "alice").await;
    // No session before the second factor.
    assert!(!w.signed_in(&browser).await, "a session exists before MFA");
    let challenge = w.to_mfa_page(&browser, &after_password).await;
    assert!(challenge.body.contains("autocomplete=\"one-time-code\""));
    assert!(challenge.body.contains("inputmode=\"numeric\""));
    assert!(challenge.body.contains("<label for=\"totp-code\">"));
    // The enrolment consumed the current step's code; the next step's is within the drift.
    let next = code(&secret, 1);
    let done = w
        .post_form(&browser, &challenge, "/mfa/totp", &[("code", &next)])
        .await;
    let assertion = accepted(&sp, &done, &request);
    assert_eq!(class_of(&assertion), class_ref::REFEDS_MFA);
    assert!(w.signed_in(&browser).await);

    // Another browser, the same (right) code again: refused as a replay.
    let thief = Browser::new();
    let request = w.request(&sp, None);
    let first = w.send(&thief, &request).await;
    let after_password = w.password(&thief, first, "alice").await;
    let challenge = w.to_mfa_page(&thief, &after_password).await;
    let replay = w
        .post_form(&thief, &challenge, "/mfa/totp", &[("code", &next)])
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
    assert!(replay.text().contains("used already"), "{}", replay.body);
    assert!(!replay.is_saml_post());
    assert!(!w.signed_in(&thief).await);
}

#[tokio::test]
async fn wrong_codes_are_refused_then_rate_limited() {
    let w = World::new().await;
    w.idp.add_user("bob", &[]).await;
    let sp = w.sp("crm", &["bob"]).await;
    w.strict_policy("strict", &["bob"]).await;
    let secret = w.enrol_totp("bob").await;
    let bob = w.user_id("bob").await;
    let codes = w
        .idp
        .idp
        .mfa
        .regenerate_recovery_codes(bob, &MfaActor::SelfService)
        .await
        .unwrap();
    let right = code(&secret, 1);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);

    let browser = Browser::new();
    let request = w.request(&sp, None);
    let first = w.send(&browser, &request).await;
    let after_password = w.password(&browser, first, "bob").await;
    let mut page = w.to_mfa_page(&browser, &after_password).await;
    for attempt in 1..=5 {
        page = w
            .post_form(&browser, &page, "/mfa/totp", &[("code", &wrong)])
            .await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}: {}",
            page.body
        );
        assert!(page.text().contains("not right"), "{}", page.body);
        assert!(page.body.contains("role=\"alert\""));
    }
    // Over the limit: even the right code is refused without being checked.
    let limited = w
        .post_form(&browser, &page, "/mfa/totp", &[("code", &right)])
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert!(limited.text().contains("Too many attempts"));
    assert!(!w.signed_in(&browser).await);

    // The limit is per user, across factors and browsers: a right recovery code from another
    // browser is refused unchecked too, and stays unused.
    let other = Browser::new();
    let first = w.send(&other, &w.request(&sp, None)).await;
    let after_password = w.password(&other, first, "bob").await;
    let challenge = w.to_mfa_page(&other, &after_password).await;
    let recovery = w
        .post_form(
            &other,
            &challenge,
            "/mfa/recovery",
            &[("code", &codes[0].to_string())],
        )
        .await;
    assert_eq!(
        recovery.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        recovery.body
    );
    assert_eq!(
        w.idp
            .idp
            .mfa
            .factors(bob)
            .await
            .unwrap()
            .recovery_codes_left,
        10
    );
    assert!(!w.signed_in(&other).await);
}

// ---------------------------------------------------------------------------------------------
// Forced enrolment, recovery codes, admin reset.
// ---------------------------------------------------------------------------------------------

/// Goes through the enrolment page: reads the secret beside the QR code, confirms with a code, and
/// returns the recovery codes page and the secret.
async fn enrol_through_pages(w: &World, browser: &Browser, enrol: &Page) -> (Page, TotpSecret) {
    assert!(
        enrol.text().contains("Set up a second factor"),
        "{}",
        enrol.body
    );
    assert!(enrol.body.contains("<svg"), "no QR code: {}", enrol.body);
    let secret = secret_from_text(&element_text(enrol, "totp-secret"));
    let codes_page = w
        .post_form(
            browser,
            enrol,
            "/mfa/enrol/totp",
            &[("code", &code(&secret, 0))],
        )
        .await;
    assert_eq!(codes_page.status, StatusCode::OK, "{}", codes_page.body);
    (codes_page, secret)
}

#[tokio::test]
async fn strict_tier_user_without_a_factor_enrols_before_any_assertion() {
    let w = World::new().await;
    w.idp.add_user("carol", &[]).await;
    let sp = w.sp("crm", &["carol"]).await;
    w.strict_policy("strict", &["carol"]).await;
    let carol = w.user_id("carol").await;

    let browser = Browser::new();
    let request = w.request(&sp, None);
    let first = w.send(&browser, &request).await;
    let after_password = w.password(&browser, first, "carol").await;
    assert!(!after_password.is_saml_post());
    let enrol = w.to_mfa_page(&browser, &after_password).await;
    assert!(
        !w.signed_in(&browser).await,
        "a session exists before enrolment"
    );

    // A wrong first code leaves the factor pending.
    let wrong = w
        .post_form(&browser, &enrol, "/mfa/enrol/totp", &[("code", "000000")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    assert!(!w.idp.idp.mfa.factors(carol).await.unwrap().totp);

    // Reloading the page starts over with a new secret; that one is confirmed.
    let enrol = browser.get(&w.url("/mfa")).await;
    let (codes_page, secret) = enrol_through_pages(&w, &browser, &enrol).await;
    let factors = w.idp.idp.mfa.factors(carol).await.unwrap();
    assert!(factors.totp);
    assert_eq!(factors.recovery_codes_left, 10);
    let codes = recovery_codes(&codes_page);
    assert_eq!(codes.len(), 10, "{}", codes_page.body);
    assert!(
        !w.signed_in(&browser).await,
        "a session before the codes were acknowledged"
    );

    let done = w
        .post_form(&browser, &codes_page, "/mfa/continue", &[])
        .await;
    let assertion = accepted(&sp, &done, &request);
    assert_eq!(class_of(&assertion), class_ref::REFEDS_MFA);

    // The codes are shown once: the page cannot be had again.
    let again = browser.get(&w.url("/mfa")).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert!(!again.body.contains(&codes[0]));

    // A recovery code signs in once.
    let other = Browser::new();
    let request = w.request(&sp, None);
    let first = w.send(&other, &request).await;
    let after_password = w.password(&other, first, "carol").await;
    let challenge = w.to_mfa_page(&other, &after_password).await;
    assert!(
        challenge.body.contains("id=\"recovery-code\""),
        "{}",
        challenge.body
    );
    let typed = codes[3].to_lowercase().replace('-', " ");
    let done = w
        .post_form(&other, &challenge, "/mfa/recovery", &[("code", &typed)])
        .await;
    assert_eq!(
        class_of(&accepted(&sp, &done, &request)),
        class_ref::REFEDS_MFA
    );
    assert_eq!(
        w.idp
            .idp
            .mfa
            .factors(carol)
            .await
            .unwrap()
            .recovery_codes_left,
        9
    );
    let third = Browser::new();
    let first = w.send(&third, &w.request(&sp, None)).await;
    let after_password = w.password(&third, first, "carol").await;
    let challenge = w.to_mfa_page(&third, &after_password).await;
    let reused = w
        .post_form(&third, &challenge, "/mfa/recovery", &[("code", &codes[3])])
        .await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED, "{}", reused.body);

    // The TOTP factor enrolled through the page works at the next sign-in.
    let totp_ok = w
        .post_form(&third, &reused, "/mfa/totp", &[("code", &code(&secret, 1))])
        .await;
    assert!(totp_ok.is_saml_post(), "{}", totp_ok.body);

    let actions: Vec<MfaAction> = w
        .idp
        .idp
        .mfa
        .events(carol)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            MfaAction::Enrolled,
            MfaAction::RecoveryRegenerated,
            MfaAction::RecoveryUsed
        ]
    );
}

/// Runs the `tessera` binary with `config`.
fn tessera(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TESSERA_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test]
async fn admin_reset_from_the_cli_is_recorded_and_forces_a_new_enrolment() {
    let w = World::new().await;
    w.idp.add_user("dave", &[]).await;
    let sp = w.sp("crm", &["dave"]).await;
    w.strict_policy("strict", &["dave"]).await;
    w.enrol_totp("dave").await;
    let dave = w.user_id("dave").await;
    w.idp
        .idp
        .mfa
        .regenerate_recovery_codes(dave, &MfaActor::SelfService)
        .await
        .unwrap();

    let config = w.dir.path().join("tessera.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\ndata_dir = \"{}\"\ndemo = false\n",
            w.idp.idp.config.database_url,
            w.dir.path().display()
        ),
    )
    .unwrap();
    let shown = tessera(&config, &["user", "mfa", "dave"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(text.contains("totp:           active"), "{text}");
    assert!(text.contains("recovery codes: 10 unused"), "{text}");

    let reset = tessera(&config, &["user", "reset-mfa", "dave", "--by", "root"]);
    let text = String::from_utf8_lossy(&reset.stdout);
    assert!(
        reset.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(text.contains("recorded as admin:root"), "{text}");
    let factors = w.idp.idp.mfa.factors(dave).await.unwrap();
    assert!(!factors.totp && factors.webauthn.is_empty() && factors.recovery_codes_left == 0);
    let last = w.idp.idp.mfa.events(dave).await.unwrap().pop().unwrap();
    assert_eq!(last.action, MfaAction::Reset);
    assert_eq!(last.actor, MfaActor::Admin("root".into()));
    assert!(
        last.detail.contains("\"recovery_codes\":10"),
        "{}",
        last.detail
    );

    let unknown = tessera(&config, &["user", "reset-mfa", "nobody"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));

    // Dave's next sign-in goes through enrolment again.
    let browser = Browser::new();
    let first = w.send(&browser, &w.request(&sp, None)).await;
    let after_password = w.password(&browser, first, "dave").await;
    let enrol = w.to_mfa_page(&browser, &after_password).await;
    assert!(
        enrol.text().contains("Set up a second factor"),
        "{}",
        enrol.body
    );
}

// ---------------------------------------------------------------------------------------------
// Step-up.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn moving_from_a_lenient_sp_to_a_strict_one_steps_up_the_same_session() {
    let w = World::new().await;
    w.idp.add_user("erin", &[]).await;
    let lenient = w.sp("wiki", &["erin"]).await;
    let strict = w.sp("payroll", &["erin"]).await;
    w.sp_requires_mfa(&strict, None).await;
    let secret = w.enrol_totp("erin").await;

    let browser = Browser::new();
    let request = w.request(&lenient, None);
    let first = w.send(&browser, &request).await;
    let done = w.password(&browser, first, "erin").await;
    let assertion = accepted(&lenient, &done, &request);
    assert_eq!(class_of(&assertion), class_ref::PASSWORD);
    let session_index = assertion.authn_statements.as_ref().unwrap()[0]
        .session_index
        .clone();

    // The strict SP: no password asked again, only the missing factor.
    let request = w.request(&strict, None);
    let first = w.send(&browser, &request).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    let login = browser.follow(&w.base, &first).await;
    let challenge = w.to_mfa_page(&browser, &login).await;
    assert!(!challenge.body.contains("name=\"password\""));
    assert!(
        challenge.text().contains("this app requires MFA"),
        "{}",
        challenge.body
    );
    let done = w
        .post_form(
            &browser,
            &challenge,
            "/mfa/totp",
            &[("code", &code(&secret, 1))],
        )
        .await;
    let assertion = accepted(&strict, &done, &request);
    assert_eq!(class_of(&assertion), class_ref::REFEDS_MFA);

    // The same session, now with MFA: the lenient SP gets the stronger context, no prompt, and the
    // session index it knows.
    let request = w.request(&lenient, None);
    let done = w.send(&browser, &request).await;
    let assertion = accepted(&lenient, &done, &request);
    assert_eq!(class_of(&assertion), class_ref::REFEDS_MFA);
    assert_eq!(
        assertion.authn_statements.as_ref().unwrap()[0].session_index,
        session_index
    );
}

#[tokio::test]
async fn an_mfa_older_than_the_sp_allows_is_asked_again() {
    let w = World::new().await;
    w.idp.add_user("fay", &[]).await;
    let strict = w.sp("payroll", &["fay"]).await;
    w.sp_requires_mfa(&strict, Some(1)).await;
    let secret = w.enrol_totp("fay").await;

    let browser = Browser::new();
    let request = w.request(&strict, None);
    let first = w.send(&browser, &request).await;
    let after_password = w.password(&browser, first, "fay").await;
    let challenge = w.to_mfa_page(&browser, &after_password).await;
    let done = w
        .post_form(
            &browser,
            &challenge,
            "/mfa/totp",
            &[("code", &code(&secret, 1))],
        )
        .await;
    assert_eq!(
        class_of(&accepted(&strict, &done, &request)),
        class_ref::REFEDS_MFA
    );

    let fay = w.user_id("fay").await;
    let codes = w
        .idp
        .idp
        .mfa
        .regenerate_recovery_codes(fay, &MfaActor::SelfService)
        .await
        .unwrap();

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let request = w.request(&strict, None);
    let first = w.send(&browser, &request).await;
    let login = browser.follow(&w.base, &first).await;
    let challenge = w.to_mfa_page(&browser, &login).await;
    assert!(!challenge.body.contains("name=\"password\""));
    assert!(
        challenge
            .text()
            .contains("this app requires MFA within the last second"),
        "{}",
        challenge.body
    );
    // The next step's code was used already; a recovery code does instead.
    let done = w
        .post_form(
            &browser,
            &challenge,
            "/mfa/recovery",
            &[("code", &codes[0].to_string())],
        )
        .await;
    assert_eq!(
        class_of(&accepted(&strict, &done, &request)),
        class_ref::REFEDS_MFA
    );
}

// ---------------------------------------------------------------------------------------------
// RequestedAuthnContext.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn requested_authn_context_is_honoured_or_refused_with_no_authn_context() {
    use AuthnContextComparison::{Better, Exact, Maximum, Minimum};
    let w = World::new().await;
    w.idp.add_user("gus", &[]).await;
    let sp = w.sp("portal", &["gus"]).await;
    let secret = w.enrol_totp("gus").await;

    // A password-only session...
    let browser = Browser::new();
    let request = w.request(&sp, Some((Minimum, &[class_ref::PASSWORD])));
    let first = w.send(&browser, &request).await;
    let done = w.password(&browser, first, "gus").await;
    assert_eq!(
        class_of(&accepted(&sp, &done, &request)),
        class_ref::PASSWORD
    );

    // ... that cannot give what is asked for without a second factor: better than Password over
    // http is impossible with a password alone, and the REFEDS MFA profile needs the factor.
    let request = w.request(&sp, Some((Minimum, &[class_ref::REFEDS_MFA])));
    let first = w.send(&browser, &request).await;
    let login = browser.follow(&w.base, &first).await;
    let challenge = w.to_mfa_page(&browser, &login).await;
    assert!(
        challenge.text().contains(class_ref::REFEDS_MFA),
        "{}",
        challenge.body
    );
    let done = w
        .post_form(
            &browser,
            &challenge,
            "/mfa/totp",
            &[("code", &code(&secret, 1))],
        )
        .await;
    assert_eq!(
        class_of(&accepted(&sp, &done, &request)),
        class_ref::REFEDS_MFA
    );

    // The session now has password + TOTP over http.
    for (comparison, refs, expected) in [
        (Exact, &[class_ref::REFEDS_MFA][..], class_ref::REFEDS_MFA),
        (
            Exact,
            &[class_ref::TIME_SYNC_TOKEN][..],
            class_ref::TIME_SYNC_TOKEN,
        ),
        (Exact, &[class_ref::PASSWORD][..], class_ref::PASSWORD),
        (Minimum, &[class_ref::PASSWORD][..], class_ref::PASSWORD),
        (Better, &[class_ref::PASSWORD][..], class_ref::REFEDS_MFA),
        (
            Maximum,
            &[class_ref::PASSWORD_PROTECTED_TRANSPORT][..],
            class_ref::PASSWORD,
        ),
    ] {
        let request = w.request(&sp, Some((comparison.clone(), refs)));
        let done = w.send(&browser, &request).await;
        assert_eq!(
            class_of(&accepted(&sp, &done, &request)),
            expected,
            "{comparison:?} {refs:?}"
        );
    }
    for (comparison, refs) in [
        (Better, &[class_ref::REFEDS_MFA][..]),
        (Exact, &["urn:example:unknown-context"][..]),
        // Password over protected transport is not what an http session did.
        (Exact, &[class_ref::PASSWORD_PROTECTED_TRANSPORT][..]),
    ] {
        let request = w.request(&sp, Some((comparison.clone(), refs)));
        let refused = w.send(&browser, &request).await;
        let xml = refused.saml_response_xml();
        assert_eq!(
            status_codes(&xml),
            [
                "urn:oasis:names:tc:SAML:2.0:status:Responder".to_owned(),
                NO_AUTHN_CONTEXT.to_owned()
            ],
            "{comparison:?} {refs:?}: {xml}"
        );
        assert!(
            !xml.contains("<saml:Assertion") && !xml.contains("Assertion "),
            "{xml}"
        );
    }
}

#[tokio::test]
async fn a_user_who_cannot_get_the_requested_context_gets_no_authn_context() {
    use AuthnContextComparison::Exact;
    let w = World::new().await;
    w.idp.add_user("hal", &[]).await;
    let sp = w.sp("portal", &["hal"]).await;
    // Hal's policy accepts only WebAuthn, which this server (on an IP address) cannot offer, and Hal
    // has no factor: the REFEDS MFA profile cannot be reached.
    let mut policy = SecurityPolicy::new("keys-only");
    policy.mfa_methods = vec![tessera::policy::MfaMethod::WebAuthn];
    w.directory().add_policy(&policy).await.unwrap();
    w.directory()
        .assign_policy(&PolicyAssignment {
            policy: "keys-only".into(),
            target: AssignmentTarget::User("hal".into()),
            priority: 0,
        })
        .await
        .unwrap();
    let browser = Browser::new();
    let request = w.request(&sp, Some((Exact, &[class_ref::REFEDS_MFA])));
    let first = w.send(&browser, &request).await;
    let refused = w.password(&browser, first, "hal").await;
    let xml = refused.saml_response_xml();
    assert!(
        status_codes(&xml).contains(&NO_AUTHN_CONTEXT.to_owned()),
        "{xml}"
    );
    // The person is signed in all the same (the password was right).
    assert!(w.signed_in(&browser).await);
}

// ---------------------------------------------------------------------------------------------
// WebAuthn with a software authenticator, over the endpoints the page's script uses.
// ---------------------------------------------------------------------------------------------

mod webauthn {
    use super::*;
    use tessera::mfa::webauthn::{CreationChallengeResponse, RequestChallengeResponse};
    use webauthn_authenticator_rs::prelude::Url;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_authenticator_rs::WebauthnAuthenticator;

    /// Tessera on `http://localhost:<port>`, where user verification is required for "strict".
    async fn world() -> World {
        World::with(Store::Memory, "localhost", |c| {
            c.mfa.user_verification_policies = vec!["strict".into()];
        })
        .await
    }

    /// Registers `authenticator` from `page` (a page with a registration form) through
    /// `options_path` and `finish_path`, under `name`.
    async fn register(
        w: &World,
        browser: &Browser,
        page: &Page,
        options_path: &str,
        finish_path: &str,
        authenticator: &mut SoftPasskey,
        name: &str,
    ) -> Page {
        let options = w.post_form(browser, page, options_path, &[]).await;
        assert_eq!(options.status, StatusCode::OK, "{}", options.body);
        assert_eq!(options.headers.get("cache-control").unwrap(), "no-store");
        let options: CreationChallengeResponse = serde_json::from_str(&options.body).unwrap();
        let response = authenticator
            .do_registration(Url::parse(&w.base).unwrap(), options)
            .unwrap();
        let credential = serde_json::to_string(&response).unwrap();
        w.post_form(
            browser,
            page,
            finish_path,
            &[("name", name), ("credential", &credential)],
        )
        .await
    }

    /// Signs in with `authenticator` from the challenge page.
    async fn authenticate(
        w: &World,
        browser: &Browser,
        challenge: &Page,
        authenticator: &mut SoftPasskey,
    ) -> Page {
        assert!(
            challenge.body.contains("data-webauthn=\"authenticate\""),
            "{}",
            challenge.body
        );
        let options = w
            .post_form(browser, challenge, "/mfa/webauthn/options", &[])
            .await;
        assert_eq!(options.status, StatusCode::OK, "{}", options.body);
        let options: RequestChallengeResponse = serde_json::from_str(&options.body).unwrap();
        let response = authenticator
            .do_authentication(Url::parse(&w.base).unwrap(), options)
            .unwrap();
        let credential = serde_json::to_string(&response).unwrap();
        w.post_form(
            browser,
            challenge,
            "/mfa/webauthn",
            &[("credential", &credential)],
        )
        .await
    }

    #[tokio::test]
    async fn passkeys_enrol_at_sign_in_sign_in_and_are_managed_by_name() {
        let w = world().await;
        assert_eq!(
            w.idp.idp.webauthn.as_ref().map(|s| s.rp_id.as_str()),
            Some("localhost")
        );
        w.idp.add_user("ivy", &[]).await;
        let sp = w.sp("crm", &["ivy"]).await;
        w.strict_policy("strict", &["ivy"]).await;
        let ivy = w.user_id("ivy").await;

        // Enrolment at sign-in with a passkey.
        let browser = Browser::new();
        let request = w.request(&sp, None);
        let first = w.send(&browser, &request).await;
        let after_password = w.password(&browser, first, "ivy").await;
        let enrol = w.to_mfa_page(&browser, &after_password).await;
        assert!(
            enrol.body.contains("data-webauthn=\"register\""),
            "{}",
            enrol.body
        );
        assert!(enrol.body.contains("<script src=\"/mfa/webauthn.js\">"));
        let csp = enrol
            .headers
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline'; script"),
            "{csp}"
        );
        let script = browser.get(&w.url("/mfa/webauthn.js")).await;
        assert_eq!(script.status, StatusCode::OK);
        assert!(script.body.contains("navigator.credentials.create"));

        let mut laptop = SoftPasskey::new(true);
        let codes_page = register(
            &w,
            &browser,
            &enrol,
            "/mfa/enrol/webauthn/options",
            "/mfa/enrol/webauthn",
            &mut laptop,
            "laptop",
        )
        .await;
        assert_eq!(recovery_codes(&codes_page).len(), 10, "{}", codes_page.body);
        let done = w
            .post_form(&browser, &codes_page, "/mfa/continue", &[])
            .await;
        assert_eq!(
            class_of(&accepted(&sp, &done, &request)),
            class_ref::REFEDS_MFA
        );
        assert_eq!(
            w.idp.idp.mfa.factors(ivy).await.unwrap().webauthn,
            ["laptop"]
        );

        // Sign-in with it.
        let second = Browser::new();
        let request = w.request(&sp, None);
        let first = w.send(&second, &request).await;
        let after_password = w.password(&second, first, "ivy").await;
        let challenge = w.to_mfa_page(&second, &after_password).await;
        assert!(
            !challenge.body.contains("id=\"totp-code\""),
            "ivy has no TOTP"
        );
        let done = authenticate(&w, &second, &challenge, &mut laptop).await;
        assert_eq!(
            class_of(&accepted(&sp, &done, &request)),
            class_ref::REFEDS_MFA
        );

        // A second, named authenticator from the security page; then the first is removed.
        let manage = second.get(&w.url("/mfa/manage")).await;
        assert_eq!(manage.status, StatusCode::OK, "{}", manage.body);
        let mut yubikey = SoftPasskey::new(true);
        let added = register(
            &w,
            &second,
            &manage,
            "/mfa/manage/webauthn/options",
            "/mfa/manage/webauthn",
            &mut yubikey,
            "yubikey",
        )
        .await;
        assert_eq!(added.status, StatusCode::OK, "{}", added.body);
        assert!(added.text().contains("Added yubikey."), "{}", added.body);
        let removed = w
            .post_form(
                &second,
                &added,
                "/mfa/manage/webauthn/remove",
                &[("name", "laptop")],
            )
            .await;
        assert!(
            removed.text().contains("Removed laptop."),
            "{}",
            removed.body
        );
        assert_eq!(
            w.idp.idp.mfa.factors(ivy).await.unwrap().webauthn,
            ["yubikey"]
        );

        // The removed authenticator no longer signs in; the remaining one does.
        let third = Browser::new();
        let request = w.request(&sp, None);
        let first = w.send(&third, &request).await;
        let after_password = w.password(&third, first, "ivy").await;
        let challenge = w.to_mfa_page(&third, &after_password).await;
        let options = w
            .post_form(&third, &challenge, "/mfa/webauthn/options", &[])
            .await;
        let options: RequestChallengeResponse = serde_json::from_str(&options.body).unwrap();
        assert!(
            laptop
                .do_authentication(Url::parse(&w.base).unwrap(), options)
                .is_err(),
            "the removed authenticator found a credential to sign with"
        );
        let done = authenticate(&w, &third, &challenge, &mut yubikey).await;
        assert_eq!(
            class_of(&accepted(&sp, &done, &request)),
            class_ref::REFEDS_MFA
        );

        let actions: Vec<(MfaAction, MfaActor)> = w
            .idp
            .idp
            .mfa
            .events(ivy)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.action, e.actor))
            .collect();
        assert!(
            actions.contains(&(MfaAction::Removed, MfaActor::SelfService)),
            "{actions:?}"
        );
    }

    #[tokio::test]
    async fn user_verification_is_required_where_the_policy_says_so() {
        let w = world().await;
        w.idp.add_user("jay", &[]).await;
        let sp = w.sp("crm", &["jay"]).await;
        w.strict_policy("strict", &["jay"]).await;

        // An authenticator that cannot verify the user is refused at registration under "strict".
        let browser = Browser::new();
        let first = w.send(&browser, &w.request(&sp, None)).await;
        let after_password = w.password(&browser, first, "jay").await;
        let enrol = w.to_mfa_page(&browser, &after_password).await;
        let options = w
            .post_form(&browser, &enrol, "/mfa/enrol/webauthn/options", &[])
            .await;
        let options: CreationChallengeResponse = serde_json::from_str(&options.body).unwrap();
        assert_eq!(
            format!(
                "{:?}",
                options
                    .public_key
                    .authenticator_selection
                    .as_ref()
                    .unwrap()
                    .user_verification
            ),
            "Required"
        );
        let mut no_uv = SoftPasskey::new(false);
        let response = no_uv.do_registration(Url::parse(&w.base).unwrap(), options);
        // The software key either refuses to run a UV-required ceremony, or Tessera refuses its
        // answer; either way nothing is registered.
        if let Ok(response) = response {
            let refused = w
                .post_form(
                    &browser,
                    &enrol,
                    "/mfa/enrol/webauthn",
                    &[
                        ("name", "no-uv"),
                        ("credential", &serde_json::to_string(&response).unwrap()),
                    ],
                )
                .await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        }
        let jay = w.user_id("jay").await;
        assert!(w
            .idp
            .idp
            .mfa
            .factors(jay)
            .await
            .unwrap()
            .webauthn
            .is_empty());
    }
}
