//! End-to-end tests of the account pages: "My sessions" (list, end another one), the password change
//! (ends the other sessions), and deactivation seen across two Tessera processes sharing Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;

use common::idp::{fetch_idp_metadata, Browser, SpOptions, Store, TestIdp, TestSp, PASSWORD};
use tessera::directory::{SpSettings, UserStatus};

/// A Tessera on Redis with `users` and one SP assigned to them.
async fn setup(tag: &str, dir: &std::path::Path, users: &[&str]) -> (TestIdp, TestSp, Store) {
    let store = Store::redis(tag).await;
    let idp = TestIdp::start(dir, &store).await;
    let metadata = fetch_idp_metadata(&idp).await;
    for user in users {
        idp.add_user(user, &[]).await;
    }
    let sp = TestSp::new(tag, &metadata, SpOptions::default());
    idp.register(&sp, SpSettings::default(), users).await;
    (idp, sp, store)
}

/// Asks for a sign-in at `sp` through `idp` with the browser's cookie, without logging in.
async fn sso(browser: &Browser, idp: &TestIdp, sp: &TestSp) -> common::idp::Page {
    let request = sp.request(&idp.idp.config.sso_url());
    browser.get(&TestSp::redirect_url(&request, "")).await
}

fn assert_sent_to_login(page: &common::idp::Page) {
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(
        page.location().unwrap().starts_with("/login?request="),
        "{:?}",
        page.location()
    );
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

#[tokio::test]
async fn user_sees_own_sessions_and_ends_the_other_one() {
    let dir = tempfile::tempdir().unwrap();
    let (idp, sp, _store) = setup("acct-list", dir.path(), &["alice"]).await;
    let laptop = Browser::new();
    let phone = Browser::new();
    laptop.sign_in(&idp, "alice").await;
    phone.sign_in(&idp, "alice").await;
    // The phone reaches the app, so its row names it.
    sso(&phone, &idp, &sp).await.saml_response();

    let page = laptop.get(&idp.url("/sessions")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body.matches("<tr>").count(), 3, "{}", page.body); // header + two sessions
    assert_eq!(page.body.matches("(this session)").count(), 1);
    assert!(page.body.contains("<td>loopback</td>"), "{}", page.body);
    assert!(page.text().contains("127.0.0.1"));
    assert!(page.text().contains(&sp.entity_id), "{}", page.body);
    // Only the other session has an End form; its key is the phone's.
    assert_eq!(page.body.matches("name=\"key\"").count(), 1);
    let key = page.field("key").unwrap();
    let csrf = page.field("csrf_token").unwrap();

    // Without the CSRF token nothing happens.
    let forged = laptop
        .post(
            &idp.url("/sessions/end"),
            &[("key".to_owned(), key.clone())],
        )
        .await;
    assert_ne!(forged.status, StatusCode::OK);
    sso(&phone, &idp, &sp).await.saml_response();

    let ended = laptop
        .post(
            &idp.url("/sessions/end"),
            &[("csrf_token".to_owned(), csrf), ("key".to_owned(), key)],
        )
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert!(ended.text().contains("The session was ended."));
    assert_eq!(ended.body.matches("(this session)").count(), 1);
    assert_eq!(ended.body.matches("name=\"key\"").count(), 0);

    assert_sent_to_login(&sso(&phone, &idp, &sp).await);
    sso(&laptop, &idp, &sp).await.saml_response();

    // Signed out: the page sends to the login form.
    let anonymous = Browser::new().get(&idp.url("/sessions")).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.location().as_deref(), Some("/login"));
}

#[tokio::test]
async fn a_user_cannot_end_another_users_session() {
    let dir = tempfile::tempdir().unwrap();
    let (idp, sp, _store) = setup("acct-other", dir.path(), &["alice", "bob"]).await;
    let alice = Browser::new();
    let bob = Browser::new();
    alice.sign_in(&idp, "alice").await;
    bob.sign_in(&idp, "bob").await;
    let bob_sessions = idp
        .idp
        .sessions
        .list_user_sessions(user_id(&idp, "bob").await)
        .await
        .unwrap();
    assert_eq!(bob_sessions.len(), 1);
    let bob_key = bob_sessions[0].key.to_string();

    let page = alice.get(&idp.url("/sessions")).await;
    assert!(
        !page.body.contains(&bob_key),
        "bob's session listed to alice"
    );
    // Only her current session is listed, so no End form: take the token from the password form.
    let csrf = alice
        .get(&idp.url("/password"))
        .await
        .field("csrf_token")
        .unwrap();
    let answer = alice
        .post(
            &idp.url("/sessions/end"),
            &[
                ("csrf_token".to_owned(), csrf.clone()),
                ("key".to_owned(), bob_key),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.text().contains("nothing was ended"),
        "{}",
        answer.body
    );
    sso(&bob, &idp, &sp).await.saml_response();

    // A key that is not a key is a clear refusal, not a crash.
    let bad = alice
        .post(
            &idp.url("/sessions/end"),
            &[
                ("csrf_token".to_owned(), csrf),
                ("key".to_owned(), "xyz".to_owned()),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    sso(&alice, &idp, &sp).await.saml_response();
}

#[tokio::test]
async fn password_change_ends_the_other_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (idp, sp, _store) = setup("acct-pw", dir.path(), &["alice"]).await;
    let here = Browser::new();
    let elsewhere = Browser::new();
    here.sign_in(&idp, "alice").await;
    elsewhere.sign_in(&idp, "alice").await;

    let form = here.get(&idp.url("/password")).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let csrf = form.field("csrf_token").unwrap();
    let submit = |current: &str, new: &str, confirm: &str| {
        vec![
            ("csrf_token".to_owned(), csrf.clone()),
            ("current".to_owned(), current.to_owned()),
            ("new".to_owned(), new.to_owned()),
            ("confirm".to_owned(), confirm.to_owned()),
        ]
    };
    // Not containing the username, which the password rules refuse.
    let new_password = "a much longer passphrase for her 42";

    let wrong = here
        .post(
            &idp.url("/password"),
            &submit("not my password", new_password, new_password),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.text().contains("current password is not correct"));

    let weak = here
        .post(&idp.url("/password"), &submit(PASSWORD, "short", "short"))
        .await;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(weak.text().contains("too weak"), "{}", weak.body);

    let mismatch = here
        .post(
            &idp.url("/password"),
            &submit(PASSWORD, new_password, "something else entirely 42"),
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(mismatch.text().contains("do not match"));
    // Nothing changed so far: the other session still works.
    sso(&elsewhere, &idp, &sp).await.saml_response();

    let done = here
        .post(
            &idp.url("/password"),
            &submit(PASSWORD, new_password, new_password),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.text().contains("Your password was changed"));

    assert_sent_to_login(&sso(&elsewhere, &idp, &sp).await);
    sso(&here, &idp, &sp).await.saml_response();

    let fresh = Browser::new();
    let login = fresh.get(&idp.url("/login")).await;
    let old = fresh.submit_login(&idp, &login, "alice", PASSWORD).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let login = fresh.get(&idp.url("/login")).await;
    let new = fresh
        .submit_login(&idp, &login, "alice", new_password)
        .await;
    assert_eq!(new.status, StatusCode::SEE_OTHER, "{}", new.body);
    assert_eq!(new.location().as_deref(), Some("/apps"));
}

#[tokio::test]
async fn deactivation_on_one_process_stops_assertions_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (a, sp, store) = setup("acct-two", dir.path(), &["alice"]).await;
    // A second Tessera process on the same Redis prefix, database and keys.
    let b = TestIdp::start(dir.path(), &store).await;
    let browser = Browser::new();
    browser.sign_in(&a, "alice").await;
    sso(&browser, &a, &sp).await.saml_response();

    // B sees the session A opened.
    let alice = user_id(&b, "alice").await;
    assert_eq!(
        b.idp
            .sessions
            .list_user_sessions(alice)
            .await
            .unwrap()
            .len(),
        1
    );

    b.idp
        .directory
        .set_user_status("alice", UserStatus::Disabled)
        .await
        .unwrap();
    let refused = sso(&browser, &a, &sp).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(!refused.is_saml_post());

    // Enabled again and signed in anew; a session ended from B's side no longer works on A.
    b.idp
        .directory
        .set_user_status("alice", UserStatus::Active)
        .await
        .unwrap();
    let browser = Browser::new();
    browser.sign_in(&a, "alice").await;
    sso(&browser, &a, &sp).await.saml_response();
    assert!(b.idp.sessions.delete_user_sessions(alice).await.unwrap() >= 1);
    assert_sent_to_login(&sso(&browser, &a, &sp).await);
}

/// Runs the `tessera` binary against the state of `idp`, with its sessions in `store`.
fn cli(idp: &TestIdp, store: &Store, args: &[&str]) -> (bool, String) {
    let config = &idp.idp.config;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .args(args)
        .env_remove("TESSERA_CONFIG")
        .env("TESSERA_DATABASE_URL", &config.database_url)
        .env("TESSERA_CERTS_DIR", &config.certs_dir)
        .env("TESSERA_METADATA_DIR", &config.metadata_dir)
        .env("TESSERA_DATA_DIR", &config.data_dir)
        .env("RUST_LOG", "error");
    match store {
        Store::Redis { url, prefix } => command
            .env("TESSERA_SESSION__BACKEND", "redis")
            .env("TESSERA_SESSION__REDIS_URL", url)
            .env("TESSERA_SESSION__KEY_PREFIX", prefix),
        Store::Memory => command.env("TESSERA_SESSION__BACKEND", "memory"),
    };
    let out = command.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn cli_lists_and_ends_sessions_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let (idp, sp, store) = setup("acct-cli", dir.path(), &["alice"]).await;
    let one = Browser::new();
    let two = Browser::new();
    one.sign_in(&idp, "alice").await;
    two.sign_in(&idp, "alice").await;
    sso(&two, &idp, &sp).await.saml_response();

    let (ok, listed) = cli(&idp, &store, &["session", "list", "alice"]);
    assert!(ok, "{listed}");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("127.0.0.1"), "{listed}");
    assert!(listed.contains(&sp.entity_id), "{listed}");

    // End the session of browser one, named by the key prefix the list printed.
    let alice = user_id(&idp, "alice").await;
    let keys = idp.idp.sessions.list_user_sessions(alice).await.unwrap();
    let two_key = keys
        .iter()
        .find(|s| !s.session.sp_sessions.is_empty())
        .unwrap()
        .key
        .to_string();
    let one_key = keys
        .iter()
        .find(|s| s.key.to_string() != two_key)
        .unwrap()
        .key
        .to_string();
    assert!(listed.contains(&one_key[..16]), "{listed}");
    let (ok, out) = cli(
        &idp,
        &store,
        &["session", "end", "alice", "--key", &one_key[..16]],
    );
    assert!(ok, "{out}");
    assert_sent_to_login(&sso(&one, &idp, &sp).await);
    sso(&two, &idp, &sp).await.saml_response();

    // An unknown key is a clear error; disabling ends the rest at once.
    let (ok, out) = cli(
        &idp,
        &store,
        &["session", "end", "alice", "--key", "ffff0000"],
    );
    assert!(!ok && out.contains("match key"), "{out}");
    let (ok, out) = cli(&idp, &store, &["user", "disable", "alice"]);
    assert!(ok && out.contains("ended 1 session"), "{out}");
    assert!(idp
        .idp
        .sessions
        .list_user_sessions(alice)
        .await
        .unwrap()
        .is_empty());

    // The memory backend cannot be reached from another process: said plainly.
    let (ok, out) = cli(&idp, &Store::Memory, &["session", "list", "alice"]);
    assert!(
        !ok && out.contains("sessions are in the server's memory"),
        "{out}"
    );
}
