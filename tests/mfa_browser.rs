//! The sign-in, enrolment and MFA pages in a real browser: headless Chromium, driven through
//! chromedriver's WebDriver HTTP API, with a DevTools virtual authenticator
//! (`WebAuthn.addVirtualAuthenticator`, sent through chromedriver's `goog/cdp/execute`) standing in for
//! a platform passkey. The pages' own script runs the WebAuthn calls; the auto-submitting SAML form
//! posts to an ACS served by this test, and samael checks the assertion it receives.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (scripts/bootstrap.sh installs them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::json;

use common::idp::{fetch_idp_metadata, SpOptions, Store, TestIdp, TestSp, PASSWORD};
use common::webdriver::{acs_server, next_response, Driver};
use samael::schema::Assertion;
use tessera::directory::SpSettings;
use tessera::policy::{AssignmentTarget, PolicyAssignment, SecurityPolicy};
use tessera::saml::response::class_ref;

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
