//! The admin console (`/admin`): in headless Chromium (chromedriver's WebDriver API), a super admin
//! signs in through `/login?return=/admin`, registers an SP by uploading its metadata file, puts a user
//! in a group and creates an assignment rule for that group; the user then signs in to the SP (samael
//! checks the assertion posted to its ACS). Every main page is photographed (PNG under
//! `target/screenshots/admin_console/`). Over plain HTTP: what each admin role sees and may reach, a
//! non-admin's 403, CSRF refusals, inline errors that change nothing, and the return-to-console
//! sign-in that cannot redirect elsewhere.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (scripts/bootstrap.sh installs them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use reqwest::StatusCode;

use common::idp::{fetch_idp_metadata, Browser, Page, SpOptions, Store, TestIdp, TestSp, PASSWORD};
use common::webdriver::{acs_server, next_response, Driver};
use tessera::directory::{AdminRole, SpSettings};
use tessera::mfa::TotpSecret;
use tessera::policy::{AssignmentTarget, PolicyAssignment, SecurityPolicy};

/// Where the screenshots go: `target/screenshots/admin_console/`.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/admin_console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn grant(idp: &TestIdp, username: &str, role: AdminRole, sp: Option<&str>) {
    idp.idp
        .directory
        .grant_admin(username, role, sp, "test")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_registers_an_sp_and_an_assignment_rule_in_chromium_and_the_user_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    let metadata = fetch_idp_metadata(&idp).await;
    let (acs_url, mut responses) = acs_server().await;
    let sp = TestSp::with_acs("console", &metadata, SpOptions::default(), &acs_url);
    let metadata_file = dir.path().join("sp-metadata.xml");
    std::fs::write(&metadata_file, &sp.metadata_xml).unwrap();
    idp.add_user("root", &[]).await;
    grant(&idp, "root", AdminRole::SuperAdmin, None).await;
    idp.add_user("alice", &[]).await;
    let shots = screenshot_dir();
    println!("screenshots in {}", shots.display());

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(profile.path()).await;
    browser.window_size(1280, 1000).await;

    // Not signed in: the console sends the browser to the sign-in page, which comes back to it.
    browser.goto(&idp.url("/admin")).await;
    browser.find("#username").await;
    assert!(browser.url().await.ends_with("/login?return=/admin"));
    browser.type_into("#username", "root").await;
    browser.type_into("#password", PASSWORD).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    browser.find("#admin-user").await;
    assert_eq!(browser.url().await, idp.url("/admin"));
    let nav = browser.source().await;
    for section in [
        "/admin/users",
        "/admin/sps",
        "/admin/assignment-rules",
        "/admin/admins",
    ] {
        assert!(nav.contains(&format!("href=\"{section}\"")), "{section}");
    }

    // A group for the rule, and alice in it.
    browser.goto(&idp.url("/admin/groups")).await;
    browser.type_into("#name", "sales").await;
    browser.click("#create").await;
    assert!(browser.find_text("#notice").await.contains("sales created"));
    browser.goto(&idp.url("/admin/users/alice")).await;
    browser.click("#add-group-button").await;
    assert!(browser
        .find_text("#notice")
        .await
        .contains("alice added to group sales"));
    browser.screenshot(&shots.join("user.png")).await;

    // The SP, from its metadata file.
    browser.goto(&idp.url("/admin/sps")).await;
    browser.send_file("#metadata", &metadata_file).await;
    browser.type_into("#display_name", "Console App").await;
    browser.click("#register").await;
    let notice = browser.find_text("#notice").await;
    assert!(notice.contains("Registered Console App"), "{notice}");
    assert!(browser.source().await.contains(&sp.entity_id));
    browser.screenshot(&shots.join("sps.png")).await;
    let registered = idp.idp.directory.list_sps().await.unwrap();
    let registered = registered
        .iter()
        .find(|s| s.entity_id == sp.entity_id)
        .expect("the SP is registered");
    assert_eq!(registered.display_name, "Console App");
    assert_eq!(registered.metadata_xml, sp.metadata_xml);
    browser
        .goto(&idp.url(&format!("/admin/sps/{}", registered.id)))
        .await;
    browser.click("#save-settings").await;
    assert!(browser
        .find_text("#notice")
        .await
        .contains("Settings saved"));
    browser.screenshot(&shots.join("sp.png")).await;
    // Nothing assigns the SP to alice yet.
    let alice = idp
        .idp
        .directory
        .get_user_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert!(idp.idp.app_access(&alice).await.unwrap().is_empty());

    // The rule: members of sales get the SP.
    browser.goto(&idp.url("/admin/assignment-rules")).await;
    browser.type_into("#rule-name", "sales-console").await;
    browser.type_into("#rule-subject", "sales").await;
    browser.click("#create-rule").await;
    let notice = browser.find_text("#notice").await;
    assert!(notice.contains("sales-console created"), "{notice}");
    assert!(browser.source().await.contains("group = sales"));
    browser
        .screenshot(&shots.join("assignment_rules.png"))
        .await;

    // The other main pages render for a super admin.
    for (path, name) in [
        ("/admin/users", "users"),
        ("/admin/roles", "roles"),
        ("/admin/ip-rules", "ip_rules"),
        ("/admin/policies", "policies"),
        ("/admin/admins", "admins"),
        ("/admin", "overview"),
    ] {
        browser.goto(&idp.url(path)).await;
        browser.find("main h1").await;
        browser.screenshot(&shots.join(format!("{name}.png"))).await;
    }
    assert!(browser.source().await.contains("assignment_rule.create"));
    browser.quit().await;

    // Every change is in the audit trail, by root, with what it changed.
    let audit = idp.idp.directory.admin_audit(100).await.unwrap();
    for action in [
        "group.create",
        "user.add_group",
        "sp.create",
        "sp.settings",
        "assignment_rule.create",
    ] {
        let entry = audit
            .iter()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("no {action} in {audit:?}"));
        assert_eq!(entry.actor, "user:root");
        assert!(entry.after.is_some(), "{action}");
    }

    // Alice, signing in at the SP, reaches it through the rule.
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(profile.path()).await;
    let request = sp.request(&idp.idp.config.sso_url());
    browser
        .goto(&TestSp::redirect_url(&request, "console"))
        .await;
    browser.type_into("#username", "alice").await;
    browser.type_into("#password", PASSWORD).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    let response = next_response(&mut responses, &browser).await;
    let assertion = sp.accept(&response, Some(&[request.id.as_str()])).unwrap();
    let subject = assertion.subject.unwrap().name_id.unwrap().value;
    assert_eq!(subject, "alice");
    browser.quit().await;
    idp.stop().await;
}

/// Signs `username` in at /login (no SSO pending).
async fn signed_in(idp: &TestIdp, username: &str) -> Browser {
    let browser = Browser::new();
    browser.sign_in(idp, username).await;
    browser
}

/// POSTs a `multipart/form-data` body of `(name, file name, content)` parts to `/admin/sps`.
async fn upload(browser: &Browser, idp: &TestIdp, parts: &[(&str, Option<&str>, &[u8])]) -> Page {
    let boundary = "tessera-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, file, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/xml\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let response = browser
        .raw()
        .post(idp.url("/admin/sps"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    Browser::page_of(response).await
}

/// The hidden `csrf_token` of a console page.
fn token(page: &Page) -> String {
    page.field("csrf_token").expect("a csrf_token field")
}

#[tokio::test]
async fn the_console_shows_each_admin_only_what_their_role_allows() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    let metadata = fetch_idp_metadata(&idp).await;
    let mine = TestSp::new("mine", &metadata, SpOptions::default());
    let other = TestSp::new("other", &metadata, SpOptions::default());
    for user in ["root", "appadm", "help", "plain", "bob", "carol"] {
        idp.add_user(user, &[]).await;
    }
    idp.register(&mine, SpSettings::default(), &["bob"]).await;
    idp.register(&other, SpSettings::default(), &["carol"])
        .await;
    grant(&idp, "root", AdminRole::SuperAdmin, None).await;
    grant(&idp, "appadm", AdminRole::AppAdmin, Some(&mine.entity_id)).await;
    grant(&idp, "help", AdminRole::Helpdesk, None).await;

    // No session: to the sign-in page, which comes back to the console and nowhere else.
    let anonymous = Browser::new();
    let page = anonymous.get(&idp.url("/admin/users")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location().as_deref(), Some("/login?return=/admin"));
    let login = anonymous.get(&idp.url("/login?return=/admin")).await;
    assert_eq!(login.field("return").as_deref(), Some("/admin"));
    let form = vec![
        ("csrf_token".to_owned(), token(&login)),
        ("request".to_owned(), String::new()),
        ("return".to_owned(), "/admin".to_owned()),
        ("username".to_owned(), "root".to_owned()),
        ("password".to_owned(), PASSWORD.to_owned()),
    ];
    let after = anonymous.post(&idp.url("/login"), &form).await;
    assert_eq!(
        after.location().as_deref(),
        Some("/admin"),
        "{}",
        after.body
    );
    let evil = Browser::new();
    let login = evil
        .get(&idp.url("/login?return=https://evil.example/"))
        .await;
    assert_eq!(login.field("return"), None);
    let form = vec![
        ("csrf_token".to_owned(), token(&login)),
        ("return".to_owned(), "https://evil.example/".to_owned()),
        ("username".to_owned(), "root".to_owned()),
        ("password".to_owned(), PASSWORD.to_owned()),
    ];
    let after = evil.post(&idp.url("/login"), &form).await;
    assert_eq!(after.location().as_deref(), Some("/apps"));

    // A signed-in user without an admin role: 403 everywhere.
    let plain = signed_in(&idp, "plain").await;
    for path in ["/admin", "/admin/users", "/admin/sps"] {
        let page = plain.get(&idp.url(path)).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("no admin role"), "{}", page.body);
    }

    // An app admin: only their SP, only its users, nothing org-wide.
    let app = signed_in(&idp, "appadm").await;
    let sps = app.get(&idp.url("/admin/sps")).await;
    assert_eq!(sps.status, StatusCode::OK);
    assert!(sps.body.contains(&mine.entity_id));
    assert!(!sps.body.contains(&other.entity_id));
    assert!(
        !sps.body.contains("id=\"register-sp\""),
        "no registration form"
    );
    for hidden in [
        "/admin/groups",
        "/admin/ip-rules",
        "/admin/policies",
        "/admin/admins",
    ] {
        assert!(
            !sps.body.contains(&format!("href=\"{hidden}\"")),
            "{hidden}"
        );
        let page = app.get(&idp.url(hidden)).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{hidden}");
    }
    let users = app.get(&idp.url("/admin/users")).await;
    assert!(users.body.contains("/admin/users/bob"));
    assert!(!users.body.contains("/admin/users/carol"));
    // A user outside the app admin's SPs is refused exactly like a user who does not exist (the API
    // does not tell which usernames exist), and cannot be changed either.
    let carol = app.get(&idp.url("/admin/users/carol")).await;
    let nobody = app.get(&idp.url("/admin/users/nobody")).await;
    assert_eq!(carol.status, StatusCode::NOT_FOUND);
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
    assert_eq!(
        carol.text().replace("carol", "X"),
        nobody.text().replace("nobody", "X")
    );
    let refused = app
        .post(
            &idp.url("/admin/users/carol"),
            &[
                ("csrf_token".to_owned(), token(&users)),
                ("op".to_owned(), "disable".to_owned()),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert!(refused.text().contains("not found"), "{}", refused.body);
    let carol_now = idp.idp.directory.get_user_by_username("carol").await;
    assert_eq!(
        carol_now.unwrap().unwrap().status,
        tessera::directory::UserStatus::Active
    );
    assert_eq!(
        app.get(&idp.url("/admin/users/bob")).await.status,
        StatusCode::OK
    );
    let other_id = idp
        .idp
        .directory
        .list_sps()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.entity_id == other.entity_id)
        .unwrap()
        .id;
    let page = app.get(&idp.url(&format!("/admin/sps/{other_id}"))).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Even a well-formed change to the other SP is refused by the API's matrix, and changes nothing.
    let csrf = token(&sps);
    let page = app
        .post(
            &idp.url(&format!("/admin/sps/{other_id}")),
            &[
                ("csrf_token".to_owned(), csrf.clone()),
                ("op".to_owned(), "disable".to_owned()),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        idp.idp
            .sp(&other.entity_id)
            .await
            .unwrap()
            .record
            .settings
            .enabled
    );

    // Helpdesk: users (and their support actions), no applications.
    let help = signed_in(&idp, "help").await;
    assert_eq!(
        help.get(&idp.url("/admin/sps")).await.status,
        StatusCode::FORBIDDEN
    );
    let carol = help.get(&idp.url("/admin/users/carol")).await;
    assert_eq!(carol.status, StatusCode::OK);
    assert!(carol.body.contains("value=\"reset_mfa\""));
    assert!(
        !carol.body.contains("value=\"disable\""),
        "helpdesk cannot disable"
    );
    assert!(!carol.body.contains("href=\"/admin/sps\""));

    // CSRF: a change without the page's token, or with another one, is refused and changes nothing.
    let root = signed_in(&idp, "root").await;
    let groups = root.get(&idp.url("/admin/groups")).await;
    assert_eq!(groups.status, StatusCode::OK);
    for csrf in [None, Some("A".repeat(43))] {
        let mut form = vec![
            ("op".to_owned(), "create".to_owned()),
            ("name".to_owned(), "forged".to_owned()),
        ];
        if let Some(t) = csrf {
            form.push(("csrf_token".to_owned(), t));
        }
        let page = root.post(&idp.url("/admin/groups"), &form).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    }
    let page = upload(
        &root,
        &idp,
        &[
            ("metadata_xml", None, mine.metadata_xml.as_bytes()),
            ("display_name", None, b"forged"),
        ],
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(idp
        .idp
        .directory
        .list_groups()
        .await
        .unwrap()
        .iter()
        .all(|g| g.name != "forged"));

    // Refusals are written on the page, and nothing is half-applied.
    let csrf = token(&groups);
    let page = root
        .post(
            &idp.url("/admin/users"),
            &[
                ("csrf_token".to_owned(), csrf.clone()),
                ("username".to_owned(), "dave".to_owned()),
                ("groups".to_owned(), "no-such-group".to_owned()),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("role=\"alert\""));
    assert!(page.body.contains("no-such-group"), "{}", page.body);
    assert!(idp
        .idp
        .directory
        .get_user_by_username("dave")
        .await
        .unwrap()
        .is_none());
    let page = upload(
        &root,
        &idp,
        &[
            ("csrf_token", None, csrf.as_bytes()),
            ("metadata", Some("sp.xml"), b"<not metadata"),
        ],
    )
    .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.body
    );
    assert!(page.body.contains("metadata refused"), "{}", page.body);
    assert_eq!(idp.idp.directory.list_sps().await.unwrap().len(), 2);

    // Edit forms: a policy is created, then replaced; a profile is saved with its extra attributes kept.
    let form = |fields: &[(&str, &str)]| {
        let mut form = vec![("csrf_token".to_owned(), csrf.clone())];
        form.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        form
    };
    let page = root
        .post(
            &idp.url("/admin/policies"),
            &form(&[
                ("op", "create"),
                ("name", "tier2"),
                ("password_min_length", "12"),
            ]),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Edit tier2"));
    let page = root
        .post(
            &idp.url("/admin/policies"),
            &form(&[
                ("op", "save"),
                ("name", "tier2"),
                ("password_min_length", "16"),
                ("session_absolute_secs", "3600"),
                ("session_idle_secs", "600"),
            ]),
        )
        .await;
    assert!(page.body.contains("tier2 saved"), "{}", page.body);
    let policies = idp.idp.directory.list_policies().await.unwrap();
    let tier2 = &policies.iter().find(|(p, _)| p.name == "tier2").unwrap().0;
    assert_eq!(
        (tier2.password_min_length, tier2.session_idle_secs),
        (16, 600)
    );
    let page = root
        .post(
            &idp.url("/admin/policies"),
            &form(&[
                ("op", "save"),
                ("name", "tier2"),
                ("session_absolute_secs", "soon"),
            ]),
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page
        .text()
        .contains("Session lifetime must be a whole number"));
    idp.add_user("erin", &[("title", "Engineer")]).await;
    let page = root
        .post(
            &idp.url("/admin/users/erin"),
            &form(&[
                ("op", "profile"),
                ("display_name", "Erin E."),
                ("email", "erin@example.org"),
            ]),
        )
        .await;
    assert!(page.body.contains("Profile of erin saved"), "{}", page.body);
    let erin = idp
        .idp
        .directory
        .get_user_by_username("erin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(erin.display_name.as_deref(), Some("Erin E."));
    assert_eq!(erin.attributes["title"], vec!["Engineer".to_owned()]);
    let audit = idp.idp.directory.admin_audit(100).await.unwrap();
    let update = audit.iter().find(|e| e.action == "policy.update").unwrap();
    assert!(update
        .before
        .as_deref()
        .unwrap()
        .contains("\"password_min_length\":12"));
    assert!(update
        .after
        .as_deref()
        .unwrap()
        .contains("\"password_min_length\":16"));

    // Fixed-value release rules survive the settings form, both ways.
    let id = idp
        .idp
        .directory
        .get_sp(&mine.entity_id)
        .await
        .unwrap()
        .unwrap()
        .id;
    let url = idp.url(&format!("/admin/sps/{id}"));
    let page = root
        .post(
            &url,
            &[
                ("csrf_token".to_owned(), csrf.clone()),
                ("op".to_owned(), "settings".to_owned()),
                ("sign_assertion".to_owned(), "on".to_owned()),
                (
                    "attribute_release".to_owned(),
                    "=acme,beta tenant Tenant\nmail urn:oid:0.9.2342.19200300.100.1.3".to_owned(),
                ),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let stored = idp
        .idp
        .directory
        .get_sp(&mine.entity_id)
        .await
        .unwrap()
        .unwrap()
        .settings
        .attribute_release;
    assert_eq!(stored[0].static_values, vec!["acme", "beta"]);
    assert_eq!(stored[1].user_attribute, "mail");
    let page = root.get(&url).await;
    assert!(
        page.body.contains("=acme,beta tenant Tenant"),
        "{}",
        page.body
    );

    // And a one-time password is shown once on creation.
    let page = root
        .post(
            &idp.url("/admin/users"),
            &[
                ("csrf_token".to_owned(), csrf),
                ("username".to_owned(), "dave".to_owned()),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("One-time password"));
    idp.stop().await;
}

/// RFC 4648 base32 (no padding) to a TOTP secret, as an authenticator app reads it.
fn secret_from_base32(text: &str) -> TotpSecret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut count, mut out) = (0u64, 0, Vec::new());
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let value = ALPHABET.iter().position(|a| *a == c).unwrap();
        bits = (bits << 5) | value as u64;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    TotpSecret::from_bytes(&out).unwrap()
}

#[tokio::test]
async fn an_admin_whose_policy_requires_mfa_reaches_the_console_only_after_the_second_factor() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    idp.add_user("root", &[]).await;
    grant(&idp, "root", AdminRole::SuperAdmin, None).await;
    let mut strict = SecurityPolicy::new("admins");
    strict.mfa_required = true;
    idp.idp.directory.add_policy(&strict).await.unwrap();
    idp.idp
        .directory
        .assign_policy(&PolicyAssignment {
            policy: "admins".into(),
            target: AssignmentTarget::User("root".into()),
            priority: 0,
        })
        .await
        .unwrap();
    let id = idp
        .idp
        .directory
        .get_user_by_username("root")
        .await
        .unwrap()
        .unwrap()
        .id;
    let enrolment = idp.idp.mfa.begin_totp_enrolment(id, "root").await.unwrap();
    let secret = secret_from_base32(&enrolment.secret_base32);
    let now = chrono::Utc::now().timestamp();
    idp.idp
        .mfa
        .confirm_totp_enrolment(id, &secret.code_at(now).unwrap(), now)
        .await
        .unwrap();

    let browser = Browser::new();
    let first = browser.get(&idp.url("/admin")).await;
    assert_eq!(first.location().as_deref(), Some("/login?return=/admin"));
    let login = browser.follow(&idp.url(""), &first).await;
    let form = vec![
        ("csrf_token".to_owned(), token(&login)),
        ("return".to_owned(), login.field("return").unwrap()),
        ("username".to_owned(), "root".to_owned()),
        ("password".to_owned(), PASSWORD.to_owned()),
    ];
    let after = browser.post(&idp.url("/login"), &form).await;
    assert_eq!(after.location().as_deref(), Some("/mfa"), "{}", after.body);
    // The password alone opens nothing.
    let console = browser.get(&idp.url("/admin")).await;
    assert_eq!(console.status, StatusCode::SEE_OTHER);
    let challenge = browser.follow(&idp.url(""), &after).await;
    // The enrolment used this step's code; the next step's is within the allowed drift.
    let code = secret
        .code_at(now + tessera::mfa::totp::STEP_SECONDS)
        .unwrap();
    let done = browser
        .post(
            &idp.url("/mfa/totp"),
            &[
                ("csrf_token".to_owned(), token(&challenge)),
                ("code".to_owned(), code),
            ],
        )
        .await;
    assert_eq!(done.location().as_deref(), Some("/admin"), "{}", done.body);
    let console = browser.get(&idp.url("/admin")).await;
    assert_eq!(console.status, StatusCode::OK, "{}", console.body);
    assert!(console.body.contains("id=\"admin-user\">root<"));
    idp.stop().await;
}
