//! End-to-end tests of the password policy (common passwords, username, policy minimum, history, maximum
//! age, hash upgrade at sign-in), security questions chosen at first sign-in, self-service recovery with
//! and without a second factor (including its lockout), the administrator's single-use reset link, and
//! administrator actions (password reset, MFA reset, deletion, a stricter policy) seen by a second
//! Tessera process sharing Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;

use common::idp::{fetch_idp_metadata, Browser, Page, SpOptions, Store, TestIdp, TestSp, PASSWORD};
use tessera::directory::{Directory, NewUser, PasswordHasher, SpSettings, SECURITY_QUESTIONS};
use tessera::mfa::MfaActor;
use tessera::policy::{AssignmentTarget, IpRule, PolicyAssignment, RuleScope, SecurityPolicy};

/// A second password that passes every rule.
const P2: &str = "tangerine kettle orbit 42";
/// A third one.
const P3: &str = "quiet lantern meadow 7";
/// A fourth one.
const P4: &str = "velvet compass harbour 19";
/// A recovery step's fields setting P2 as the new password.
const NEW_P2: [(&str, &str); 2] = [("new", P2), ("confirm", P2)];
/// The right answers to the security questions `set_answers` stores.
const ANSWERS: [(&str, &str); 2] = [("answer_0", "rex"), ("answer_1", "paris")];

async fn user_id(idp: &TestIdp, username: &str) -> i64 {
    idp.idp
        .directory
        .get_user_by_username(username)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Adds `policy` and assigns it to `user`.
async fn assign_policy(idp: &TestIdp, policy: SecurityPolicy, user: &str) {
    let name = policy.name.clone();
    let directory = &idp.idp.directory;
    if directory.get_policy(&name).await.unwrap().is_none() {
        directory.add_policy(&policy).await.unwrap();
    }
    directory
        .assign_policy(&PolicyAssignment {
            policy: name,
            target: AssignmentTarget::User(user.to_owned()),
            priority: 0,
        })
        .await
        .unwrap();
}

/// Signs in at /login with `password`, returning the answer.
async fn login(browser: &Browser, idp: &TestIdp, username: &str, password: &str) -> Page {
    let form = browser.get(&idp.url("/login")).await;
    browser.submit_login(idp, &form, username, password).await
}

/// Posts `fields` (plus the page's CSRF token) to `path`.
async fn post_form(
    browser: &Browser,
    idp: &TestIdp,
    page: &Page,
    path: &str,
    fields: &[(&str, &str)],
) -> Page {
    post_to(browser, &idp.url(path), page, fields).await
}

/// Posts `fields` (plus the page's CSRF token) to `url`.
async fn post_to(browser: &Browser, url: &str, page: &Page, fields: &[(&str, &str)]) -> Page {
    let csrf = page
        .field("csrf_token")
        .unwrap_or_else(|| panic!("no csrf_token on the page:\n{}", page.body));
    let mut form = vec![("csrf_token".to_owned(), csrf)];
    form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    browser.post(url, &form).await
}

/// The next recovery step.
async fn step(browser: &Browser, idp: &TestIdp, page: &Page, fields: &[(&str, &str)]) -> Page {
    post_form(browser, idp, page, "/recover/step", fields).await
}

/// `/recover`, then the username: the questions page.
async fn recover(browser: &Browser, idp: &TestIdp, username: &str) -> Page {
    let start = browser.get(&idp.url("/recover")).await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    post_form(browser, idp, &start, "/recover", &[("username", username)]).await
}

/// The outcomes of the login events recorded for `username`, oldest first (events may be written
/// asynchronously: waits up to 2 s for `expected` to appear).
async fn outcomes(idp: &TestIdp, username: &str, expected: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&idp.idp.config.database_url)
        .await
        .unwrap();
    let mut found = Vec::new();
    for _ in 0..20 {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT outcome FROM login_events WHERE username = $1 ORDER BY at, id")
                .bind(username)
                .fetch_all(&pool)
                .await
                .unwrap();
        found = rows.into_iter().map(|(o,)| o).collect();
        if found.iter().any(|o| o == expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    found
}

/// Runs SQL against the directory of `idp` (to move the clock of stored values).
async fn sql(idp: &TestIdp, statement: &str, username: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&idp.idp.config.database_url)
        .await
        .unwrap();
    sqlx::query(statement)
        .bind(username)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn password_change_applies_the_policy_and_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    idp.add_user("alice", &[]).await;
    assign_policy(
        &idp,
        SecurityPolicy {
            password_min_length: 16,
            password_history: 3,
            ..SecurityPolicy::new("strict")
        },
        "alice",
    )
    .await;
    let browser = Browser::new();
    browser.sign_in(&idp, "alice").await;
    let mut current = PASSWORD.to_owned();
    let change = |current: String, new: &'static str| {
        let browser = browser.clone();
        let idp = &idp;
        async move {
            let form = browser.get(&idp.url("/password")).await;
            assert_eq!(form.status, StatusCode::OK, "{}", form.body);
            post_form(
                &browser,
                idp,
                &form,
                "/password",
                &[("current", &current), ("new", new), ("confirm", new)],
            )
            .await
        }
    };
    for (new, why) in [
        // The seed documents' classic, and a long entry of the breach corpus.
        ("123456", "most common"),
        ("123456789987654321", "most common"),
        ("Alice-in-wonderland-24", "must not contain the username"),
        ("short but fine", "at least 16 characters"),
        (PASSWORD, "used recently"),
    ] {
        let refused = change(current.clone(), new).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{new}");
        assert!(refused.text().contains(why), "{new}: {}", refused.text());
    }
    // History 3: the current password and the two before it are refused; the fourth one back is not.
    for new in [P2, P3, P4] {
        let done = change(current.clone(), new).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert!(done.text().contains("Your password was changed"));
        current = new.to_owned();
    }
    for reused in [P2, P3, P4] {
        let refused = change(current.clone(), reused).await;
        assert!(refused.text().contains("used recently"), "{reused}");
    }
    let done = change(current.clone(), PASSWORD).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let fresh = login(&Browser::new(), &idp, "alice", PASSWORD).await;
    assert_eq!(fresh.status, StatusCode::SEE_OTHER, "{}", fresh.body);
    let events = outcomes(&idp, "alice", "password_changed").await;
    assert_eq!(
        events.iter().filter(|o| *o == "password_changed").count(),
        4,
        "{events:?}"
    );
}

#[tokio::test]
async fn hashes_are_upgraded_at_sign_in_when_the_costs_change() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    // A user whose hash was made with other (older, cheaper) costs than the server's.
    let old = Directory::connect_with(
        &idp.idp.config.database_url,
        PasswordHasher::new(128, 1, 1).unwrap(),
    )
    .await
    .unwrap();
    old.create_user(NewUser {
        username: "olduser".into(),
        password: PASSWORD.into(),
        ..NewUser::default()
    })
    .await
    .unwrap();
    assert!(idp
        .idp
        .directory
        .password_needs_rehash("olduser")
        .await
        .unwrap());
    // A wrong password changes nothing.
    let wrong = login(&Browser::new(), &idp, "olduser", "not the password at all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(idp
        .idp
        .directory
        .password_needs_rehash("olduser")
        .await
        .unwrap());
    Browser::new().sign_in(&idp, "olduser").await;
    assert!(!idp
        .idp
        .directory
        .password_needs_rehash("olduser")
        .await
        .unwrap());
    // The older hasher now sees a hash made with other costs, and the password still works.
    assert!(old.password_needs_rehash("olduser").await.unwrap());
    Browser::new().sign_in(&idp, "olduser").await;
    // The costs come from [passwords] in the configuration.
    let mut config = idp.idp.config.clone();
    config.passwords.argon2_memory_kib = 4096;
    config.passwords.argon2_iterations = 3;
    let hasher = config.password_hasher().unwrap();
    assert_eq!(
        (hasher.m_cost(), hasher.t_cost(), hasher.p_cost()),
        (4096, 3, 1)
    );
}

#[tokio::test]
async fn an_expired_password_is_changed_before_sign_in_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    idp.add_user("bob", &[]).await;
    assign_policy(
        &idp,
        SecurityPolicy {
            password_max_age_days: Some(30),
            ..SecurityPolicy::new("rotating")
        },
        "bob",
    )
    .await;
    // Fresh: no detour.
    Browser::new().sign_in(&idp, "bob").await;
    // 31 days later.
    sql(
        &idp,
        "UPDATE users SET password_changed_at = password_changed_at - 31 * 86400 WHERE username = $1",
        "bob",
    )
    .await;
    let browser = Browser::new();
    let page = login(&browser, &idp, "bob", PASSWORD).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.text().contains("Your password must be changed"),
        "{}",
        page.body
    );
    // No session yet.
    let apps = browser.get(&idp.url("/apps")).await;
    assert_eq!(apps.location().as_deref(), Some("/login"));
    let same = step(
        &browser,
        &idp,
        &page,
        &[("new", PASSWORD), ("confirm", PASSWORD)],
    )
    .await;
    assert_eq!(same.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(same.text().contains("used recently"), "{}", same.text());
    let done = step(&browser, &idp, &same, &NEW_P2).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.text().contains("href=\"/login\""), "{}", done.body);
    let again = login(&browser, &idp, "bob", P2).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert_eq!(again.location().as_deref(), Some("/apps"));
    let events = outcomes(&idp, "bob", "password_changed").await;
    assert!(
        events.contains(&"password_expired".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"password_changed".to_owned()),
        "{events:?}"
    );

    // An administrator's "must change" works the same way.
    idp.idp
        .directory
        .set_password_must_change("bob", true)
        .await
        .unwrap();
    let page = login(&Browser::new(), &idp, "bob", P2).await;
    assert!(page.text().contains("Your password must be changed"));
}

#[tokio::test]
async fn security_questions_are_chosen_at_first_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    idp.add_user("carol", &[]).await;
    assign_policy(
        &idp,
        SecurityPolicy {
            security_questions_required: 2,
            ..SecurityPolicy::new("questions")
        },
        "carol",
    )
    .await;
    let browser = Browser::new();
    let page = login(&browser, &idp, "carol", PASSWORD).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.text().contains("Choose your security questions"));
    assert!(page.body.contains("name=\"question_1\""));
    assert!(!page.body.contains("name=\"question_2\""));
    let twice = step(
        &browser,
        &idp,
        &page,
        &[
            ("question_0", "first_pet"),
            ("answer_0", "Rex"),
            ("question_1", "first_pet"),
            ("answer_1", "Rex"),
        ],
    )
    .await;
    assert_eq!(twice.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(twice.text().contains("chosen twice"), "{}", twice.text());
    let done = step(
        &browser,
        &idp,
        &twice,
        &[
            ("question_0", "first_pet"),
            ("answer_0", "Rex"),
            ("question_1", "birth_city"),
            ("answer_1", "Paris"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let carol = user_id(&idp, "carol").await;
    assert_eq!(
        idp.idp
            .directory
            .security_questions_of(carol)
            .await
            .unwrap(),
        vec!["first_pet".to_owned(), "birth_city".to_owned()]
    );
    // Answers are stored hashed, never as typed.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&idp.idp.config.database_url)
        .await
        .unwrap();
    let stored: Vec<(String,)> = sqlx::query_as("SELECT answer_hash FROM security_answers")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|(h,)| h.starts_with("$argon2id$")
        && !h.to_lowercase().contains("rex")
        && !h.to_lowercase().contains("paris")));
    pool.close().await;
    // Now sign-in goes straight on.
    browser.sign_in(&idp, "carol").await;
}

/// Gives `user` the answers Rex (first pet) and Paris (birth city).
async fn set_answers(idp: &TestIdp, user: &str) {
    idp.idp
        .directory
        .set_security_answers(
            user,
            &[
                ("first_pet".into(), "Rex".into()),
                ("birth_city".into(), "  PARIS ".into()),
            ],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn recovery_without_mfa_sets_a_new_password_and_ends_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    idp.add_user("dave", &[]).await;
    set_answers(&idp, "dave").await;
    let signed_in = Browser::new();
    signed_in.sign_in(&idp, "dave").await;

    let browser = Browser::new();
    let questions = recover(&browser, &idp, "dave").await;
    assert_eq!(questions.status, StatusCode::OK, "{}", questions.body);
    assert!(questions
        .text()
        .contains("What was the name of your first pet?"));
    assert!(questions.text().contains("In which city were you born?"));
    let wrong = step(
        &browser,
        &idp,
        &questions,
        &[("answer_0", "Max"), ("answer_1", "paris")],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.text().contains("The answers do not match"));
    // Case and spacing do not matter.
    let right = step(
        &browser,
        &idp,
        &wrong,
        &[("answer_0", " rex"), ("answer_1", "Paris")],
    )
    .await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
    assert!(right.body.contains("name=\"new\""), "{}", right.body);
    let weak = step(
        &browser,
        &idp,
        &right,
        &[("new", "123456"), ("confirm", "123456")],
    )
    .await;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(weak.text().contains("most common"));
    let done = step(&browser, &idp, &weak, &NEW_P2).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done
        .text()
        .contains("every session of your account was ended"));
    // The flow is over: the same cookie cannot set another password.
    let replay = step(&browser, &idp, &weak, &[("new", P3), ("confirm", P3)]).await;
    assert_eq!(replay.status, StatusCode::GONE);

    let apps = signed_in.get(&idp.url("/apps")).await;
    assert_eq!(apps.location().as_deref(), Some("/login"));
    assert_eq!(
        login(&Browser::new(), &idp, "dave", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&Browser::new(), &idp, "dave", P2).await.status,
        StatusCode::SEE_OTHER
    );
    let events = outcomes(&idp, "dave", "password_reset").await;
    for expected in ["recovery_started", "recovery_failed", "password_reset"] {
        assert!(
            events.contains(&expected.to_owned()),
            "{expected}: {events:?}"
        );
    }
}

#[tokio::test]
async fn recovery_with_mfa_asks_for_a_code_before_the_new_password() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    idp.add_user("emma", &[]).await;
    set_answers(&idp, "emma").await;
    let emma = user_id(&idp, "emma").await;
    let codes = idp
        .idp
        .mfa
        .regenerate_recovery_codes(emma, &MfaActor::SelfService)
        .await
        .unwrap();
    let browser = Browser::new();
    let questions = recover(&browser, &idp, "emma").await;
    let code_page = step(&browser, &idp, &questions, &ANSWERS).await;
    assert_eq!(code_page.status, StatusCode::OK, "{}", code_page.body);
    assert!(
        code_page.body.contains("name=\"code\""),
        "{}",
        code_page.body
    );
    assert!(!code_page.body.contains("name=\"new\""));
    let wrong = step(&browser, &idp, &code_page, &[("code", "AAAA-BBBB-CCCC")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // Skipping the code step is not possible: the server knows the stage.
    let skip = step(&browser, &idp, &wrong, &NEW_P2).await;
    assert_eq!(skip.status, StatusCode::UNAUTHORIZED);
    let new_password = step(&browser, &idp, &skip, &[("code", &codes[0].display())]).await;
    assert_eq!(new_password.status, StatusCode::OK, "{}", new_password.body);
    assert!(new_password.body.contains("name=\"new\""));
    let done = step(&browser, &idp, &new_password, &NEW_P2).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        login(&Browser::new(), &idp, "emma", P2).await.status,
        StatusCode::SEE_OTHER
    );
    // The recovery code is spent.
    assert_eq!(
        idp.idp.mfa.factors(emma).await.unwrap().recovery_codes_left,
        codes.len() - 1
    );
}

#[tokio::test]
async fn repeated_failures_lock_recovery_per_user_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start_configured(dir.path(), &Store::Memory, "127.0.0.1", |c| {
        c.recovery.max_failures = 3;
    })
    .await;
    idp.add_user("frank", &[]).await;
    idp.add_user("gina", &[]).await;
    set_answers(&idp, "frank").await;
    set_answers(&idp, "gina").await;
    let from = |last: u8| Browser::from_address(IpAddr::from([127, 0, 0, last]));

    // An unknown user gets a questions page of the same shape and fails the same way.
    let nobody = from(9);
    let fake = recover(&nobody, &idp, "nobody-here").await;
    assert_eq!(fake.status, StatusCode::OK);
    assert!(fake.body.contains("name=\"answer_1\""));
    assert!(!fake.body.contains("name=\"answer_2\""));
    let again = recover(&from(9), &idp, "nobody-here").await;
    let shown = |page: &Page| {
        SECURITY_QUESTIONS
            .iter()
            .filter(|(_, text)| page.text().contains(text))
            .count()
    };
    assert_eq!(shown(&fake), 2);
    for (_, text) in SECURITY_QUESTIONS {
        assert_eq!(
            fake.text().contains(text),
            again.text().contains(text),
            "the decoy questions are stable"
        );
    }
    let failed = step(&nobody, &idp, &fake, &ANSWERS).await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    assert!(failed.text().contains("The answers do not match"));

    // frank, from 127.0.0.2: three failures, then even the right answers are refused.
    let browser = from(2);
    let mut page = recover(&browser, &idp, "frank").await;
    for _ in 0..3 {
        page = step(
            &browser,
            &idp,
            &page,
            &[("answer_0", "x1"), ("answer_1", "y2")],
        )
        .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let locked = step(&browser, &idp, &page, &ANSWERS).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.text().contains("Recovery is locked"));
    // From another address too: the lock is on the user.
    let other = from(3);
    let page = recover(&other, &idp, "frank").await;
    let still = step(&other, &idp, &page, &ANSWERS).await;
    assert_eq!(still.status, StatusCode::TOO_MANY_REQUESTS);
    let events = outcomes(&idp, "frank", "recovery_locked").await;
    assert!(events.contains(&"recovery_locked".to_owned()), "{events:?}");

    // An administrator lifts the user's lock; 127.0.0.2 stays locked (per address), 127.0.0.4 works.
    tessera::web::unlock_recovery(&*idp.idp.sessions, "frank")
        .await
        .unwrap();
    let page = recover(&browser, &idp, "frank").await;
    let by_address = step(&browser, &idp, &page, &ANSWERS).await;
    assert_eq!(by_address.status, StatusCode::TOO_MANY_REQUESTS);
    tessera::web::unlock_recovery(&*idp.idp.sessions, "frank")
        .await
        .unwrap();
    let fresh = from(4);
    let page = recover(&fresh, &idp, "frank").await;
    let ok = step(&fresh, &idp, &page, &ANSWERS).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.contains("name=\"new\""));

    // gina, from 127.0.0.5: ten wrong attempts at once. Counting is atomic and comes before the
    // check, so no more than three are ever checked.
    let browser = from(5);
    let page = recover(&browser, &idp, "gina").await;
    let form = vec![
        ("csrf_token".to_owned(), page.field("csrf_token").unwrap()),
        ("answer_0".to_owned(), "no".to_owned()),
        ("answer_1".to_owned(), "no".to_owned()),
    ];
    let url = idp.url("/recover/step");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (browser, form, url) = (browser.clone(), form.clone(), url.clone());
            tokio::spawn(async move { browser.post(&url, &form).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        checked <= 3,
        "{checked} attempts were checked: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(
            *s,
            StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS | StatusCode::GONE
        )),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let browser = from(6);
    let page = recover(&browser, &idp, "gina").await;
    let locked = step(&browser, &idp, &page, &ANSWERS).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
}

/// Runs the `tessera` binary against the state of `idp`, with its sessions in `store`, feeding
/// `stdin`.
fn cli(idp: &TestIdp, store: &Store, args: &[&str], stdin: &str) -> (bool, String) {
    let config = &idp.idp.config;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .args(args)
        .env_remove("TESSERA_CONFIG")
        .env("TESSERA_DATABASE_URL", &config.database_url)
        .env("TESSERA_CERTS_DIR", &config.certs_dir)
        .env("TESSERA_METADATA_DIR", &config.metadata_dir)
        .env("TESSERA_DATA_DIR", &config.data_dir)
        .env("TESSERA_BASE_URL", &config.base_url)
        // Cheap hashes, as the test server uses.
        .env("TESSERA_PASSWORDS__ARGON2_MEMORY_KIB", "256")
        .env("TESSERA_PASSWORDS__ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    match store {
        Store::Redis { url, prefix } => command
            .env("TESSERA_SESSION__BACKEND", "redis")
            .env("TESSERA_SESSION__REDIS_URL", url)
            .env("TESSERA_SESSION__KEY_PREFIX", prefix),
        Store::Memory => command.env("TESSERA_SESSION__BACKEND", "memory"),
    };
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
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
async fn an_admin_reset_link_is_single_use_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    idp.add_user("hank", &[]).await;
    let hank = user_id(&idp, "hank").await;
    let codes = idp
        .idp
        .mfa
        .regenerate_recovery_codes(hank, &MfaActor::SelfService)
        .await
        .unwrap();
    let (ok, out) = cli(
        &idp,
        &Store::Memory,
        &[
            "user",
            "reset-link",
            "hank",
            "--valid-minutes",
            "5",
            "--by",
            "root",
        ],
        "",
    );
    assert!(ok, "{out}");
    let url = out
        .lines()
        .find(|l| l.contains("/recover/link?token="))
        .unwrap_or_else(|| panic!("no link in {out}"))
        .trim()
        .to_owned();
    assert!(url.starts_with(&idp.url("/recover/link?token=")), "{url}");

    let browser = Browser::new();
    let confirm = browser.get(&url).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    // Looking at the link does not spend it.
    assert_eq!(Browser::new().get(&url).await.status, StatusCode::OK);
    let token = confirm.field("token").unwrap();
    let code_page = post_form(
        &browser,
        &idp,
        &confirm,
        "/recover/link",
        &[("token", &token)],
    )
    .await;
    assert_eq!(code_page.status, StatusCode::OK, "{}", code_page.body);
    // hank has recovery codes: a second factor first.
    assert!(
        code_page.body.contains("name=\"code\""),
        "{}",
        code_page.body
    );
    let new_password = step(&browser, &idp, &code_page, &[("code", &codes[3].display())]).await;
    let done = step(&browser, &idp, &new_password, &NEW_P2).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        login(&Browser::new(), &idp, "hank", P2).await.status,
        StatusCode::SEE_OTHER
    );

    // Second use: refused, on the page and on the form.
    let again = Browser::new();
    let page = again.get(&url).await;
    assert_eq!(page.status, StatusCode::GONE);
    let spent = post_form(
        &browser,
        &idp,
        &confirm,
        "/recover/link",
        &[("token", &token)],
    )
    .await;
    assert_eq!(spent.status, StatusCode::GONE);

    // An expired link does nothing.
    let expired = idp
        .idp
        .directory
        .create_reset_token("hank", "root", Duration::ZERO)
        .await
        .unwrap();
    let page = Browser::new()
        .get(&idp.url(&format!("/recover/link?token={expired}")))
        .await;
    assert_eq!(page.status, StatusCode::GONE);
    let events = outcomes(&idp, "hank", "password_reset").await;
    for expected in ["reset_link_issued", "recovery_started", "password_reset"] {
        assert!(
            events.contains(&expected.to_owned()),
            "{expected}: {events:?}"
        );
    }

    // The IP allowlists apply before the link is spent: a refused address does not burn it.
    idp.idp
        .directory
        .add_ip_rule(&IpRule {
            name: "hank-office".into(),
            ranges: vec!["127.0.0.2/32".parse().unwrap()],
            scope: RuleScope::Users(vec!["hank".into()]),
        })
        .await
        .unwrap();
    let token = idp
        .idp
        .directory
        .create_reset_token("hank", "root", Duration::from_secs(300))
        .await
        .unwrap();
    let link = idp.url(&format!("/recover/link?token={token}"));
    let outside = Browser::new();
    let page = outside.get(&link).await;
    let refused = post_form(&outside, &idp, &page, "/recover/link", &[("token", &token)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(idp.idp.directory.reset_token_usable(&token).await.unwrap());
    let office = Browser::from_address(IpAddr::from([127, 0, 0, 2]));
    let page = office.get(&link).await;
    let accepted = post_form(&office, &idp, &page, "/recover/link", &[("token", &token)]).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert!(accepted.body.contains("name=\"code\""));
}

/// Asks for a sign-in at `sp` through `idp` with the browser's cookie, without logging in.
async fn sso(browser: &Browser, idp: &TestIdp, sp: &TestSp) -> Page {
    let request = sp.request(&idp.idp.config.sso_url());
    browser.get(&TestSp::redirect_url(&request, "")).await
}

#[tokio::test]
async fn admin_actions_on_one_process_stop_assertions_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::redis("pwrec-two").await;
    let a = TestIdp::start(dir.path(), &store).await;
    let b = TestIdp::start(dir.path(), &store).await;
    let metadata = fetch_idp_metadata(&a).await;
    let users = ["ivan", "judy", "ken", "leo"];
    for user in users {
        a.add_user(user, &[]).await;
    }
    let sp = TestSp::new("pwrec-two", &metadata, SpOptions::default());
    a.register(&sp, SpSettings::default(), &users).await;
    let judy = user_id(&a, "judy").await;
    a.idp
        .mfa
        .regenerate_recovery_codes(judy, &MfaActor::SelfService)
        .await
        .unwrap();

    let mut browsers = Vec::new();
    for user in users {
        let browser = Browser::new();
        browser.sign_in(&a, user).await;
        sso(&browser, &b, &sp).await.saml_response();
        browsers.push(browser);
    }
    let not_an_assertion = |page: &Page, who: &str| {
        assert!(!page.is_saml_post(), "{who} still got an assertion");
    };

    // An administrator resets ivan's password from the CLI: his live cookie gets nothing on B.
    let (ok, out) = cli(
        &a,
        &store,
        &["user", "set-password", "ivan"],
        &format!("{P2}\n"),
    );
    assert!(ok, "{out}");
    assert!(out.contains("ended 1 session(s) of ivan"), "{out}");
    let page = sso(&browsers[0], &b, &sp).await;
    not_an_assertion(&page, "ivan");
    assert!(page.location().unwrap().starts_with("/login?request="));

    // judy's second factors are reset.
    let (ok, out) = cli(&a, &store, &["user", "reset-mfa", "judy"], "");
    assert!(ok, "{out}");
    assert!(out.contains("ended 1 session(s) of judy"), "{out}");
    not_an_assertion(&sso(&browsers[1], &b, &sp).await, "judy");

    // ken is deleted.
    let (ok, out) = cli(&a, &store, &["user", "delete", "ken"], "");
    assert!(ok, "{out}");
    assert!(out.contains("deleted user ken"), "{out}");
    not_an_assertion(&sso(&browsers[2], &b, &sp).await, "ken");
    assert!(a
        .idp
        .directory
        .get_user_by_username("ken")
        .await
        .unwrap()
        .is_none());

    // leo is moved to a policy that requires MFA: his password-only session is not enough on B.
    assign_policy(
        &a,
        SecurityPolicy {
            mfa_required: true,
            ..SecurityPolicy::new("strict-mfa")
        },
        "leo",
    )
    .await;
    not_an_assertion(&sso(&browsers[3], &b, &sp).await, "leo");

    // The others were untouched by each action: a fresh sign-in of ivan with the new password works.
    let fresh = Browser::new();
    let page = login(&fresh, &b, "ivan", P2).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    sso(&fresh, &a, &sp).await.saml_response();
}

/// Password history, security answers and reset tokens through the directory, on `url`.
async fn credentials_in_the_directory(url: &str) {
    let dir = Directory::connect_with(url, PasswordHasher::new(256, 1, 1).unwrap())
        .await
        .unwrap();
    dir.create_user(NewUser {
        username: "nina".into(),
        password: PASSWORD.into(),
        ..NewUser::default()
    })
    .await
    .unwrap();
    let rules = tessera::directory::PasswordRules {
        min_chars: 12,
        history: 2,
    };
    // More changes than the history keeps: only the last 24 hashes stay, the check reads the last N.
    let passwords: Vec<String> = (0..26).map(|i| format!("{P2} round {i}")).collect();
    for p in &passwords {
        dir.change_password("nina", p, rules).await.unwrap();
    }
    let refused = dir
        .change_password("nina", &passwords[24], rules)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("used recently"), "{refused}");
    dir.change_password("nina", &passwords[23], rules)
        .await
        .unwrap();
    let nina = dir.get_user_by_username("nina").await.unwrap().unwrap();
    let (changed_at, must_change) = dir.password_status(nina.id).await.unwrap().unwrap();
    assert!(changed_at > 0 && !must_change);

    dir.set_security_answers(
        "nina",
        &[
            ("first_car".into(), "Fiat  Panda".into()),
            ("first_pet".into(), "Ｒｅｘ".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        dir.security_questions_of(nina.id).await.unwrap(),
        vec!["first_pet".to_owned(), "first_car".to_owned()]
    );
    let answers = |car: &str, pet: &str| {
        vec![
            ("first_car".to_owned(), car.to_owned()),
            ("first_pet".to_owned(), pet.to_owned()),
        ]
    };
    assert!(dir
        .verify_security_answers(nina.id, &answers("fiat panda", "rex"))
        .await
        .unwrap());
    assert!(!dir
        .verify_security_answers(nina.id, &answers("fiat", "rex"))
        .await
        .unwrap());
    assert!(dir
        .set_security_answers("nina", &[("nope".into(), "x y z".into())])
        .await
        .is_err());

    let token = dir
        .create_reset_token("nina", "root", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(dir.reset_token_usable(&token).await.unwrap());
    assert_eq!(
        dir.consume_reset_token(&token).await.unwrap().map(|u| u.id),
        Some(nina.id)
    );
    assert!(dir.consume_reset_token(&token).await.unwrap().is_none());
    let other = dir
        .create_reset_token("nina", "root", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(dir.revoke_reset_tokens("nina").await.unwrap(), 1);
    assert!(dir.consume_reset_token(&other).await.unwrap().is_none());
    // Deleting the user takes everything with it.
    dir.delete_user("nina").await.unwrap();
    dir.close().await;
}

#[tokio::test]
async fn credentials_are_stored_the_same_on_sqlite_and_postgres() {
    let sqlite = tempfile::tempdir().unwrap();
    credentials_in_the_directory(&format!(
        "sqlite://{}",
        sqlite.path().join("t.db").display()
    ))
    .await;
    let postgres = common::postgres::TestDatabase::create().await.unwrap();
    credentials_in_the_directory(&postgres.url).await;
}

#[tokio::test]
async fn admin_resets_reach_sessions_the_cli_cannot_see() {
    // Memory sessions live in the server; the CLI only reaches the directory, which every SSO reads.
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    let metadata = fetch_idp_metadata(&idp).await;
    idp.add_user("olga", &[]).await;
    idp.add_user("pete", &[]).await;
    let sp = TestSp::new("pwrec-mem", &metadata, SpOptions::default());
    idp.register(&sp, SpSettings::default(), &["olga", "pete"])
        .await;
    let olga = Browser::new();
    olga.sign_in(&idp, "olga").await;
    sso(&olga, &idp, &sp).await.saml_response();
    let pete = Browser::new();
    pete.sign_in(&idp, "pete").await;
    sso(&pete, &idp, &sp).await.saml_response();
    // Revocation is kept in whole seconds: start the resets in the second after the sign-ins.
    let ms = chrono::Utc::now().timestamp_subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1000 - ms.min(999)) + 20)).await;

    let (ok, out) = cli(
        &idp,
        &Store::Memory,
        &["user", "set-password", "olga", "--must-change"],
        &format!("{P2}\n"),
    );
    assert!(ok, "{out}");
    let page = sso(&olga, &idp, &sp).await;
    assert!(!page.is_saml_post(), "olga still got an assertion");
    assert!(page.location().unwrap().starts_with("/login?request="));
    let (ok, out) = cli(&idp, &Store::Memory, &["user", "reset-mfa", "pete"], "");
    assert!(ok, "{out}");
    assert!(!sso(&pete, &idp, &sp).await.is_saml_post());
    // olga must choose a new password at her next sign-in.
    let page = login(&Browser::new(), &idp, "olga", P2).await;
    assert!(page.text().contains("Your password must be changed"));
    // A new sign-in of pete is a new session and works.
    let fresh = Browser::new();
    fresh.sign_in(&idp, "pete").await;
    sso(&fresh, &idp, &sp).await.saml_response();
}

// ---------------------------------------------------------------------------------------------
// A passkey as the second factor of recovery, with webauthn-authenticator-rs's software
// authenticator over the endpoints the page's script uses (as in tests/mfa_e2e.rs).
// ---------------------------------------------------------------------------------------------

mod passkey {
    use super::*;
    use tessera::mfa::webauthn::RequestChallengeResponse;
    use tessera::mfa::UserVerification;
    use webauthn_authenticator_rs::prelude::Url;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_authenticator_rs::WebauthnAuthenticator;

    /// Tessera reached at `http://localhost:<port>` (WebAuthn needs a domain for its RP ID), with
    /// user verification required under the "strict" policy, and the origin the browser uses.
    async fn start(dir: &std::path::Path, max_failures: u64) -> (TestIdp, String) {
        let idp = TestIdp::start_configured(dir, &Store::Memory, "localhost", |c| {
            c.recovery.max_failures = max_failures;
            c.mfa.user_verification_policies = vec!["strict".into()];
        })
        .await;
        let base = format!("http://localhost:{}", idp.port);
        (idp, base)
    }

    /// Posts `fields` (plus the page's CSRF token) to `path` of the server at `base`.
    async fn post_at(
        browser: &Browser,
        base: &str,
        page: &Page,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Page {
        post_to(browser, &format!("{base}{path}"), page, fields).await
    }

    /// Posts the passkey's answer `credential` (as the page's script would) from `page`.
    async fn send_credential(browser: &Browser, base: &str, page: &Page, credential: &str) -> Page {
        post_at(
            browser,
            base,
            page,
            "/recover/webauthn",
            &[("credential", credential)],
        )
        .await
    }

    /// Signs in at `base` with `password` in a fresh browser, returning the answer.
    async fn sign_in_at(base: &str, username: &str, password: &str) -> Page {
        let fresh = Browser::new();
        let form = fresh.get(&format!("{base}/login")).await;
        fresh.submit_login_at(base, &form, username, password).await
    }

    /// `/recover`, then the username, at `base`: the questions page.
    async fn recover_at(browser: &Browser, base: &str, username: &str) -> Page {
        let start = browser.get(&format!("{base}/recover")).await;
        assert_eq!(start.status, StatusCode::OK, "{}", start.body);
        post_at(browser, base, &start, "/recover", &[("username", username)]).await
    }

    /// A user whose only factor is a passkey on `authenticator` (registered through the MFA engine):
    /// no TOTP, and recovery codes all spent. Returns the user id.
    async fn passkey_only_user(
        idp: &TestIdp,
        base: &str,
        username: &str,
        authenticator: &mut SoftPasskey,
    ) -> i64 {
        idp.add_user(username, &[]).await;
        set_answers(idp, username).await;
        let id = user_id(idp, username).await;
        let mfa = &idp.idp.mfa;
        let options = mfa
            .start_webauthn_registration(id, username, username, UserVerification::Required)
            .await
            .unwrap();
        let response = authenticator
            .do_registration(Url::parse(base).unwrap(), options)
            .unwrap();
        mfa.finish_webauthn_registration(id, "laptop", &response)
            .await
            .unwrap();
        for code in mfa
            .regenerate_recovery_codes(id, &MfaActor::SelfService)
            .await
            .unwrap()
        {
            mfa.use_recovery_code(id, &code.display()).await.unwrap();
        }
        let factors = mfa.factors(id).await.unwrap();
        assert!(!factors.totp && factors.recovery_codes_left == 0);
        assert_eq!(factors.webauthn, vec!["laptop".to_owned()]);
        id
    }

    /// Fetches ceremony options from the second-factor page and has `authenticator` sign them: the
    /// options and the answer as the page's script would post it.
    async fn assertion(
        browser: &Browser,
        base: &str,
        page: &Page,
        authenticator: &mut SoftPasskey,
    ) -> (RequestChallengeResponse, String) {
        let options = post_at(browser, base, page, "/recover/webauthn/options", &[]).await;
        assert_eq!(options.status, StatusCode::OK, "{}", options.body);
        assert_eq!(options.headers.get("cache-control").unwrap(), "no-store");
        let options: RequestChallengeResponse = serde_json::from_str(&options.body).unwrap();
        let response = authenticator
            .do_authentication(Url::parse(base).unwrap(), options.clone())
            .unwrap();
        (options, serde_json::to_string(&response).unwrap())
    }

    #[tokio::test]
    async fn a_passkey_only_user_recovers_with_the_passkey() {
        let dir = tempfile::tempdir().unwrap();
        let (idp, base) = start(dir.path(), 5).await;
        let mut laptop = SoftPasskey::new(true);
        passkey_only_user(&idp, &base, "zoe", &mut laptop).await;
        assign_policy(&idp, SecurityPolicy::new("strict"), "zoe").await;

        let browser = Browser::new();
        let questions = recover_at(&browser, &base, "zoe").await;
        assert_eq!(questions.status, StatusCode::OK, "{}", questions.body);
        // Nothing about factors before the questions are answered, so the page of a real user has
        // the same shape as an unknown user's; the passkey ceremony cannot start yet either.
        assert!(!questions.body.contains("webauthn"), "{}", questions.body);
        let early = post_at(
            &browser,
            &base,
            &questions,
            "/recover/webauthn/options",
            &[],
        )
        .await;
        assert_eq!(early.status, StatusCode::BAD_REQUEST, "{}", early.body);
        let factor = post_at(&browser, &base, &questions, "/recover/step", &ANSWERS).await;
        assert_eq!(factor.status, StatusCode::OK, "{}", factor.body);
        assert!(
            factor.body.contains("data-webauthn=\"authenticate\""),
            "{}",
            factor.body
        );
        assert!(factor
            .body
            .contains("data-options=\"/recover/webauthn/options\""));
        assert!(factor.body.contains("<script src=\"/mfa/webauthn.js\">"));
        // No TOTP and no recovery codes left: no code field to type into.
        assert!(!factor.body.contains("name=\"code\""), "{}", factor.body);
        assert!(!factor.body.contains("name=\"new\""));

        let (options, credential) = assertion(&browser, &base, &factor, &mut laptop).await;
        // As at sign-in (Idp::user_verification): "strict" requires user verification.
        assert_eq!(
            format!("{:?}", options.public_key.user_verification),
            "Required"
        );
        let new_password = send_credential(&browser, &base, &factor, &credential).await;
        assert_eq!(new_password.status, StatusCode::OK, "{}", new_password.body);
        assert!(
            new_password.body.contains("name=\"new\""),
            "{}",
            new_password.body
        );
        // Replayed, the answer is refused: the flow has moved on (and its ceremony is spent).
        let replay = send_credential(&browser, &base, &factor, &credential).await;
        assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.body);
        let done = post_at(&browser, &base, &new_password, "/recover/step", &NEW_P2).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert!(done.text().contains("Your password was changed"));

        let signed_in = sign_in_at(&base, "zoe", P2).await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "{}",
            signed_in.body
        );
        let events = outcomes(&idp, "zoe", "password_reset").await;
        for expected in [
            "recovery_started",
            "recovery_answers_accepted",
            "recovery_factor_accepted",
            "password_reset",
        ] {
            assert!(
                events.contains(&expected.to_owned()),
                "{expected}: {events:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_expired_password_is_replaced_after_the_passkey() {
        let dir = tempfile::tempdir().unwrap();
        let (idp, base) = start(dir.path(), 5).await;
        let mut laptop = SoftPasskey::new(true);
        passkey_only_user(&idp, &base, "xena", &mut laptop).await;
        assign_policy(
            &idp,
            SecurityPolicy {
                password_max_age_days: Some(30),
                ..SecurityPolicy::new("strict")
            },
            "xena",
        )
        .await;
        sql(
            &idp,
            "UPDATE users SET password_changed_at = password_changed_at - 31 * 86400 WHERE username = $1",
            "xena",
        )
        .await;
        let browser = Browser::new();
        let form = browser.get(&format!("{base}/login")).await;
        let factor = browser
            .submit_login_at(&base, &form, "xena", PASSWORD)
            .await;
        assert_eq!(factor.status, StatusCode::OK, "{}", factor.body);
        assert!(factor.text().contains("Your password must be changed"));
        assert!(
            factor.body.contains("data-webauthn=\"authenticate\""),
            "{}",
            factor.body
        );
        let (_, credential) = assertion(&browser, &base, &factor, &mut laptop).await;
        let new_password = send_credential(&browser, &base, &factor, &credential).await;
        assert_eq!(new_password.status, StatusCode::OK, "{}", new_password.body);
        assert!(
            new_password.body.contains("name=\"new\""),
            "{}",
            new_password.body
        );
        let done = post_at(&browser, &base, &new_password, "/recover/step", &NEW_P2).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        let events = outcomes(&idp, "xena", "password_changed").await;
        assert!(
            events.contains(&"recovery_factor_accepted".to_owned()),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn forged_passkey_answers_count_as_failures_and_lock_recovery() {
        let dir = tempfile::tempdir().unwrap();
        // The right answers count as one attempt; two bad passkey answers make three.
        let (idp, base) = start(dir.path(), 3).await;
        let mut laptop = SoftPasskey::new(true);
        passkey_only_user(&idp, &base, "yann", &mut laptop).await;

        let browser = Browser::new();
        let questions = recover_at(&browser, &base, "yann").await;
        let factor = post_at(&browser, &base, &questions, "/recover/step", &ANSWERS).await;
        assert_eq!(factor.status, StatusCode::OK, "{}", factor.body);

        // A real assertion with its signature altered.
        let (_, credential) = assertion(&browser, &base, &factor, &mut laptop).await;
        let mut forged: serde_json::Value = serde_json::from_str(&credential).unwrap();
        let signature = forged["response"]["signature"].as_str().unwrap().to_owned();
        let first = if signature.starts_with('M') { "N" } else { "M" };
        forged["response"]["signature"] = format!("{first}{}", &signature[1..]).into();
        let refused = send_credential(&browser, &base, &factor, &forged.to_string()).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
        assert!(refused.text().contains("was not accepted"));
        // Another authenticator's answer to a fresh ceremony: it holds no credential of the user.
        let options = post_at(&browser, &base, &refused, "/recover/webauthn/options", &[]).await;
        let options: RequestChallengeResponse = serde_json::from_str(&options.body).unwrap();
        assert!(SoftPasskey::new(true)
            .do_authentication(Url::parse(&base).unwrap(), options)
            .is_err());
        // No readable answer at all.
        let garbage = send_credential(&browser, &base, &refused, "{\"id\": \"forged\"}").await;
        assert_eq!(garbage.status, StatusCode::BAD_REQUEST, "{}", garbage.body);

        // Over the limit: even the real passkey is refused, unchecked, and the flow ends.
        let (_, credential) = assertion(&browser, &base, &garbage, &mut laptop).await;
        let locked = send_credential(&browser, &base, &garbage, &credential).await;
        assert_eq!(
            locked.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            locked.body
        );
        assert!(locked.text().contains("Recovery is locked"));
        let after = post_at(&browser, &base, &garbage, "/recover/step", &NEW_P2).await;
        assert_eq!(after.status, StatusCode::GONE, "{}", after.body);
        // A new flow from another address is locked too: the lock is on the user.
        let other = Browser::from_address(IpAddr::from([127, 0, 0, 7]));
        let questions = recover_at(&other, &base, "yann").await;
        let still = post_at(&other, &base, &questions, "/recover/step", &ANSWERS).await;
        assert_eq!(
            still.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            still.body
        );

        let events = outcomes(&idp, "yann", "recovery_locked").await;
        assert_eq!(
            events.iter().filter(|o| *o == "recovery_failed").count(),
            2,
            "{events:?}"
        );
        assert!(events.contains(&"recovery_locked".to_owned()), "{events:?}");
        assert!(!events.contains(&"recovery_factor_accepted".to_owned()));
        // The password is unchanged.
        let signed_in = sign_in_at(&base, "yann", PASSWORD).await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "{}",
            signed_in.body
        );
    }
}

/// The fields of a recovery questions page, each with the catalogue id of the question it answers,
/// in the order of the form.
fn asked(page: &Page) -> Vec<(String, &'static str)> {
    let mut found: Vec<(usize, &'static str)> = SECURITY_QUESTIONS
        .iter()
        .filter_map(|(id, text)| page.body.find(text).map(|at| (at, *id)))
        .collect();
    found.sort();
    found
        .into_iter()
        .enumerate()
        .map(|(i, (_, id))| (format!("answer_{i}"), id))
        .collect()
}

/// Fills every field of `page` from `answers` (by question id), with "nonsense" for the others.
fn fill(page: &Page, answers: &[(&str, &str)]) -> Vec<(String, String)> {
    asked(page)
        .into_iter()
        .map(|(field, id)| {
            let a = answers
                .iter()
                .find(|(q, _)| *q == id)
                .map_or("nonsense", |(_, a)| *a);
            (field, a.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn every_username_is_asked_the_same_number_of_questions() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    let d = &idp.idp.directory;
    d.create_group("vault").await.unwrap();
    let three = SecurityPolicy {
        security_questions_required: 3,
        ..SecurityPolicy::new("three-questions")
    };
    d.add_policy(&three).await.unwrap();
    d.assign_policy(&PolicyAssignment {
        policy: "three-questions".into(),
        target: AssignmentTarget::Group("vault".into()),
        priority: 0,
    })
    .await
    .unwrap();
    idp.add_user("hana", &[]).await;
    d.add_user_to_group("hana", "vault").await.unwrap();
    let hana_answers = [
        ("first_pet", "Rex"),
        ("first_school", "Hillside"),
        ("first_employer", "Acme"),
    ];
    let stored: Vec<(String, String)> = hana_answers
        .iter()
        .map(|(q, a)| ((*q).to_owned(), (*a).to_owned()))
        .collect();
    d.set_security_answers("hana", &stored).await.unwrap();
    // ivy is under the default policy, with two answers.
    idp.add_user("ivy", &[]).await;
    set_answers(&idp, "ivy").await;

    let real = recover(&Browser::new(), &idp, "hana").await;
    let unknown = recover(&Browser::new(), &idp, "nobody-here").await;
    let fewer = recover(&Browser::new(), &idp, "ivy").await;
    for page in [&real, &unknown, &fewer] {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(asked(page).len(), 3, "{}", page.body);
        assert!(page.body.contains("name=\"answer_2\""));
        assert!(!page.body.contains("name=\"answer_3\""));
    }
    // The same questions each time for the same name (decoys included).
    let again = recover(&Browser::new(), &idp, "ivy").await;
    assert_eq!(asked(&again), asked(&fewer));
    let hana_ids: Vec<&str> = asked(&real).into_iter().map(|(_, id)| id).collect();
    for (q, _) in hana_answers {
        assert!(hana_ids.contains(&q), "{hana_ids:?}");
    }

    // Wrong real answers fail, whatever the decoys get.
    let browser = Browser::new();
    let page = recover(&browser, &idp, "hana").await;
    let wrong = fill(
        &page,
        &[
            ("first_pet", "Rex"),
            ("first_school", "Hillside"),
            ("first_employer", "Initech"),
        ],
    );
    let wrong: Vec<(&str, &str)> = wrong
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let failed = step(&browser, &idp, &page, &wrong).await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED, "{}", failed.body);
    // All of hana's answers right: recovered.
    let right = fill(&failed, &hana_answers);
    let right: Vec<(&str, &str)> = right
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let next = step(&browser, &idp, &failed, &right).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    assert!(next.body.contains("name=\"new\""), "{}", next.body);

    // ivy answers her two real questions; the decoy may be left blank.
    let browser = Browser::new();
    let page = recover(&browser, &idp, "ivy").await;
    let ivy_real = [("first_pet", "rex"), ("birth_city", "paris")];
    let mut fields = fill(&page, &ivy_real);
    let decoy: Vec<usize> = asked(&page)
        .iter()
        .enumerate()
        .filter(|(_, (_, id))| !ivy_real.iter().any(|(q, _)| q == id))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(decoy.len(), 1, "{:?}", asked(&page));
    fields[decoy[0]].1 = String::new();
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let next = step(&browser, &idp, &page, &fields).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    let done = step(&browser, &idp, &next, &NEW_P2).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        login(&Browser::new(), &idp, "ivy", P2).await.status,
        StatusCode::SEE_OTHER
    );
    // An unknown name still fails, however it is answered.
    let browser = Browser::new();
    let page = recover(&browser, &idp, "nobody-here").await;
    let failed = step(&browser, &idp, &page, &ANSWERS).await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
}
