//! Conditional app assignment (issue #6): rules granting SPs by attribute, group and role.
//!
//! - the compiled rule set, table-driven against the reference semantics (attribute, group, role,
//!   any/all, disabled rules, case handling);
//! - the store on SQLite and PostgreSQL: validation, nothing half-applied, the generation counter;
//! - end to end over HTTP with samael as the SP: a matching user (and one created after the rule)
//!   reaches the SP, a non-matching one gets 403 "You don't have access to this app" and no
//!   SAMLResponse, a group change applies at the next SSO, /apps lists exactly the assigned apps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use reqwest::StatusCode;
use tempfile::TempDir;

use common::idp::{fetch_idp_metadata, Browser, Page, SpOptions, Store, TestIdp, TestSp};
use common::postgres::TestDatabase;
use tessera::directory::{Directory, EntryKind, Error, NewUser, PasswordHasher, SpSettings};
use tessera::directory::{NewServiceProvider, UserProfile};
use tessera::policy::{
    self, AssignmentRule, Clause, Combine, Condition, Predicate, RuleSet, TargetKind, UserFacts,
};

const NO_ACCESS: &str = "You don't have access to this app";

fn attr(name: &str, values: &[&str]) -> Predicate {
    Predicate::Attribute {
        name: name.to_owned(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn group(name: &str) -> Predicate {
    Predicate::Group(name.to_owned())
}

fn role(name: &str) -> Predicate {
    Predicate::Role(name.to_owned())
}

fn rule(name: &str, condition: Condition, targets: &[&str]) -> AssignmentRule {
    AssignmentRule {
        name: name.to_owned(),
        condition,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        enabled: true,
    }
}

/// A user's facts: `(attribute, value)` pairs (an attribute may repeat), groups, roles.
fn facts(attrs: &[(&str, &str)], groups: &[&str], roles: &[&str]) -> UserFacts {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, v) in attrs {
        by_name
            .entry(n.to_string())
            .or_default()
            .push(v.to_string());
    }
    UserFacts::new(
        by_name.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        groups.iter().map(|g| g.to_string()),
        roles.iter().map(|r| r.to_string()),
    )
}

#[test]
fn evaluation_table() {
    let rules = vec![
        // "department is Sales or group is sales-emea → CRM and Mail"
        rule(
            "sales",
            Condition::any(vec![attr("department", &["Sales"]), group("sales-emea")]),
            &["crm", "mail"],
        ),
        // all-of: an engineer who is also on call
        rule(
            "oncall",
            Condition::all(vec![attr("department", &["Engineering"]), role("oncall")]),
            &["pager"],
        ),
        // one-of values, and an extra attribute
        rule(
            "emea-offices",
            Condition::all(vec![attr("office", &["Paris", "Berlin", "Madrid"])]),
            &["mail", "travel"],
        ),
        // OR of ANDs
        rule(
            "finance",
            Condition {
                any: vec![
                    Clause {
                        all: vec![attr("department", &["Finance"]), role("manager")],
                    },
                    Clause {
                        all: vec![group("auditors")],
                    },
                ],
            },
            &["ledger"],
        ),
        // disabled: grants nothing
        AssignmentRule {
            enabled: false,
            ..rule("off", Condition::any(vec![group("everyone")]), &["secret"])
        },
    ];
    let set = RuleSet::build(&rules, 1).unwrap();
    assert_eq!(set.rule_counts(), (5, 4));

    struct Case {
        what: &'static str,
        facts: UserFacts,
        apps: &'static [&'static str],
    }
    let cases = [
        Case {
            what: "attribute match",
            facts: facts(&[("department", "Sales")], &[], &[]),
            apps: &["crm", "mail"],
        },
        Case {
            what: "attribute values are compared case-insensitively",
            facts: facts(&[("department", "sALES")], &[], &[]),
            apps: &["crm", "mail"],
        },
        Case {
            what: "values are not trimmed",
            facts: facts(&[("department", "Sales ")], &[], &[]),
            apps: &[],
        },
        Case {
            what: "attribute names are exact",
            facts: facts(&[("Department", "Sales")], &[], &[]),
            apps: &[],
        },
        Case {
            what: "group match (the other branch of the OR)",
            facts: facts(&[("department", "Support")], &["sales-emea"], &[]),
            apps: &["crm", "mail"],
        },
        Case {
            what: "group names are exact",
            facts: facts(&[], &["Sales-EMEA"], &[]),
            apps: &[],
        },
        Case {
            what: "all-of: both hold",
            facts: facts(&[("department", "engineering")], &[], &["oncall"]),
            apps: &["pager"],
        },
        Case {
            what: "all-of: the role alone is not enough",
            facts: facts(&[], &[], &["oncall"]),
            apps: &[],
        },
        Case {
            what: "all-of: the attribute alone is not enough",
            facts: facts(&[("department", "Engineering")], &[], &[]),
            apps: &[],
        },
        Case {
            what: "one of several values, a multi-valued attribute",
            facts: facts(&[("office", "Lyon"), ("office", "berlin")], &[], &[]),
            apps: &["mail", "travel"],
        },
        Case {
            what: "OR of ANDs: first clause",
            facts: facts(&[("department", "Finance")], &[], &["manager"]),
            apps: &["ledger"],
        },
        Case {
            what: "OR of ANDs: second clause",
            facts: facts(&[], &["auditors"], &[]),
            apps: &["ledger"],
        },
        Case {
            what: "OR of ANDs: half a clause",
            facts: facts(&[("department", "Finance")], &[], &[]),
            apps: &[],
        },
        Case {
            what: "a disabled rule grants nothing",
            facts: facts(&[], &["everyone"], &[]),
            apps: &[],
        },
        Case {
            what: "several rules, each SP once",
            facts: facts(
                &[("department", "Sales"), ("office", "Paris")],
                &["sales-emea"],
                &[],
            ),
            apps: &["crm", "mail", "travel"],
        },
        Case {
            what: "nothing",
            facts: facts(&[], &[], &[]),
            apps: &[],
        },
    ];
    for case in &cases {
        let grants = set.grants(&case.facts);
        let got: Vec<&str> = grants.keys().copied().collect();
        assert_eq!(got, case.apps, "{}", case.what);
        for sp in [
            "crm", "mail", "pager", "travel", "ledger", "secret", "unknown",
        ] {
            // The per-SP check (the SSO path) agrees with the full list and with the reference
            // semantics evaluated rule by rule.
            let by_reference = rules.iter().any(|r| {
                r.enabled && r.condition.matches(&case.facts) && r.targets.iter().any(|t| t == sp)
            });
            assert_eq!(
                set.grant_for(&case.facts, sp).is_some(),
                by_reference,
                "{}: {sp}",
                case.what
            );
            assert_eq!(grants.contains_key(sp), by_reference, "{}: {sp}", case.what);
        }
    }
    // The reasons: every rule granting an SP, once.
    let both = set.grants(&facts(
        &[("department", "Sales"), ("office", "Paris")],
        &["sales-emea"],
        &[],
    ));
    assert_eq!(both["mail"], vec!["emea-offices", "sales"]);
    assert_eq!(both["crm"], vec!["sales"]);
    assert_eq!(
        set.grant_for(&facts(&[], &["sales-emea"], &[]), "crm"),
        Some("sales")
    );
}

#[test]
fn the_condition_is_stored_as_this_json() {
    let c = Condition::from_when(
        &[
            "department=Sales|Support & role=manager".into(),
            "group=g".into(),
        ],
        Some(Combine::Any),
    )
    .unwrap();
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(
        json,
        r#"{"any":[{"all":[{"attribute":{"name":"department","values":["Sales","Support"]}},{"role":"manager"}]},{"all":[{"group":"g"}]}]}"#
    );
    let back: Condition = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    // Unknown fields are refused rather than ignored (a typo must not widen a rule).
    assert!(serde_json::from_str::<Condition>(r#"{"any":[],"al":[]}"#).is_err());
}

/// Creates the groups, roles and SPs the store scenario names.
async fn seed(dir: &Directory) {
    dir.create_group("sales-emea").await.unwrap();
    dir.create_role("manager").await.unwrap();
    for name in ["crm", "mail"] {
        dir.add_sp(NewServiceProvider {
            entity_id: format!("https://{name}.example"),
            metadata_xml: "<unused/>".into(),
            display_name: name.into(),
            settings: SpSettings::default(),
        })
        .await
        .unwrap();
    }
}

/// Validation and atomicity of the store, and the generation counter.
async fn store_scenario(dir: Directory) {
    seed(&dir).await;
    let crm = "https://crm.example";
    let mail = "https://mail.example";
    let g0 = dir.assignment_rule_generation().await.unwrap();

    let sales = rule(
        "sales",
        Condition::any(vec![attr("department", &["Sales"]), group("sales-emea")]),
        &[crm, mail],
    );
    dir.add_assignment_rule(&sales).await.unwrap();
    let g1 = dir.assignment_rule_generation().await.unwrap();
    assert!(g1 > g0);
    let mut stored = dir.get_assignment_rule("sales").await.unwrap().unwrap();
    stored.targets.sort();
    assert_eq!(stored, sales);

    // Refused, each with a clear error and nothing stored: unknown group, unknown role, unknown SP
    // (the second target, after the first was fine), an invalid rule, a duplicate name.
    let refused: Vec<(AssignmentRule, &str)> = vec![
        (
            rule("r1", Condition::any(vec![group("nope")]), &[crm]),
            "assignment rule \"r1\" names unknown group \"nope\"",
        ),
        (
            rule(
                "r2",
                Condition::all(vec![group("sales-emea"), role("boss")]),
                &[crm],
            ),
            "assignment rule \"r2\" names unknown role \"boss\"",
        ),
        (
            rule(
                "r3",
                Condition::any(vec![group("sales-emea")]),
                &[crm, "https://nope"],
            ),
            "assignment rule \"r3\": names unknown service provider \"https://nope\"",
        ),
        (
            rule("r4", Condition::any(vec![attr("roles", &["x"])]), &[crm]),
            "use role=NAME",
        ),
        (
            rule("sales", Condition::any(vec![role("manager")]), &[crm]),
            "assignment rule \"sales\" already exists",
        ),
    ];
    for (r, message) in &refused {
        let e = dir.add_assignment_rule(r).await.unwrap_err();
        assert!(e.to_string().contains(message), "{e} should say {message}");
    }
    let unknown_group = dir.add_assignment_rule(&refused[0].0).await.unwrap_err();
    assert!(matches!(
        unknown_group,
        Error::Policy(policy::Error::UnknownTarget {
            kind: TargetKind::Group,
            ..
        })
    ));
    let names: Vec<String> = dir
        .list_assignment_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, vec!["sales"]);
    assert_eq!(dir.assignment_rule_generation().await.unwrap(), g1);

    // An update naming an unknown SP leaves the rule as it was.
    let bad_update = rule(
        "sales",
        Condition::any(vec![role("manager")]),
        &["https://nope"],
    );
    assert!(dir.update_assignment_rule(&bad_update).await.is_err());
    let mut stored = dir.get_assignment_rule("sales").await.unwrap().unwrap();
    stored.targets.sort();
    assert_eq!(stored, sales);
    assert_eq!(dir.assignment_rule_generation().await.unwrap(), g1);

    // A good update replaces condition and targets.
    let narrowed = rule("sales", Condition::any(vec![role("manager")]), &[mail]);
    dir.update_assignment_rule(&narrowed).await.unwrap();
    assert_eq!(
        dir.get_assignment_rule("sales").await.unwrap().unwrap(),
        narrowed
    );

    // Enable / disable, remove, not found.
    assert!(dir
        .set_assignment_rule_enabled("sales", false)
        .await
        .unwrap());
    assert!(!dir
        .set_assignment_rule_enabled("sales", false)
        .await
        .unwrap());
    let set = dir.load_rule_set().await.unwrap();
    assert_eq!(set.rule_counts(), (1, 0));
    assert_eq!(
        set.generation(),
        dir.assignment_rule_generation().await.unwrap()
    );
    assert!(matches!(
        dir.set_assignment_rule_enabled("ghost", true).await,
        Err(Error::NotFound {
            kind: EntryKind::AssignmentRule,
            ..
        })
    ));
    dir.remove_assignment_rule("sales").await.unwrap();
    assert!(dir.get_assignment_rule("sales").await.unwrap().is_none());
    assert!(matches!(
        dir.remove_assignment_rule("sales").await,
        Err(Error::NotFound { .. })
    ));
    assert!(dir.list_assignment_rules().await.unwrap().is_empty());
}

async fn cheap_directory(url: &str) -> Directory {
    Directory::connect_with(url, PasswordHasher::new(256, 1, 1).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn store_validates_on_sqlite() {
    store_scenario(cheap_directory("sqlite::memory:").await).await;
}

#[tokio::test]
async fn store_validates_on_postgres() {
    let db = TestDatabase::create().await.unwrap();
    let dir = cheap_directory(&db.url).await;
    store_scenario(dir.clone()).await;
    dir.close().await;
}

/// A Tessera over HTTP with three samael SPs: crm and mail (granted by the rule), hr (direct only).
struct World {
    _dir: TempDir,
    idp: TestIdp,
    crm: TestSp,
    mail: TestSp,
    hr: TestSp,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let idp = TestIdp::start(dir.path(), &Store::Memory).await;
        let metadata = fetch_idp_metadata(&idp).await;
        let options = SpOptions {
            allow_idp_initiated: true,
            ..SpOptions::default()
        };
        let crm = TestSp::new("crm", &metadata, options);
        let mail = TestSp::new("mail", &metadata, options);
        let hr = TestSp::new("hr", &metadata, options);
        for sp in [&crm, &mail, &hr] {
            idp.register(sp, SpSettings::default(), &[]).await;
        }
        World {
            _dir: dir,
            idp,
            crm,
            mail,
            hr,
        }
    }

    fn dir(&self) -> &Directory {
        &self.idp.idp.directory
    }

    /// A user with a department.
    async fn add_user(&self, username: &str, department: Option<&str>) {
        self.dir()
            .create_user(NewUser {
                username: username.into(),
                password: common::idp::PASSWORD.into(),
                department: department.map(str::to_owned),
                ..NewUser::default()
            })
            .await
            .unwrap();
    }

    /// SP-initiated SSO to `sp` with the browser's session (signing in as `username` when asked).
    async fn sso(&self, browser: &Browser, sp: &TestSp, username: &str) -> (Page, String) {
        let request = sp.request(&self.idp.idp.config.sso_url());
        let url = TestSp::redirect_url(&request, "");
        let first = browser.get(&url).await;
        let page = if first.status == StatusCode::SEE_OTHER
            && first
                .location()
                .is_some_and(|l| l.starts_with("/login?request="))
        {
            browser.login_after(&self.idp, first, username).await
        } else {
            first
        };
        (page, request.id)
    }

    /// Asserts the SSO reached `sp` with an assertion for `username` that samael accepts.
    async fn assert_reaches(&self, browser: &Browser, sp: &TestSp, username: &str) {
        let (page, request_id) = self.sso(browser, sp, username).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.form_action().as_deref(), Some(sp.acs_url.as_str()));
        let assertion = sp
            .accept(&page.saml_response(), Some(&[request_id.as_str()]))
            .unwrap();
        let name_id = assertion
            .subject
            .and_then(|s| s.name_id)
            .map(|n| n.value)
            .unwrap();
        assert_eq!(name_id, username);
    }

    /// Asserts the SSO to `sp` is refused with 403 and the sentence, and no response is issued.
    async fn assert_refused(&self, browser: &Browser, sp: &TestSp, username: &str) {
        let (page, _) = self.sso(browser, sp, username).await;
        assert_no_access(&page);
    }

    /// The entityIDs linked from /apps.
    async fn portal(&self, browser: &Browser) -> Vec<String> {
        let page = browser.get(&self.idp.url("/apps")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let mut out: Vec<String> = page
            .body
            .split("href=\"/saml/init?sp=")
            .skip(1)
            .map(|rest| {
                let encoded = &rest[..rest.find('"').unwrap()];
                let encoded = common::idp::unescape_html(encoded);
                percent_decode(&encoded)
            })
            .collect();
        out.sort();
        out
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

fn assert_no_access(page: &Page) {
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.text().contains(NO_ACCESS), "{}", page.body);
    assert!(!page.body.contains("SAMLResponse"), "{}", page.body);
    assert!(!page.is_saml_post(), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_follows_the_rules_over_http() {
    let w = World::new().await;
    let dir = w.dir();
    dir.create_group("sales-emea").await.unwrap();
    w.add_user("alice", Some("sales")).await; // matches by attribute, in another case
    w.add_user("bob", Some("Engineering")).await; // matches nothing yet
    w.add_user("carol", None).await; // direct assignment only
    dir.assign_app("carol", &w.hr.entity_id).await.unwrap();
    dir.add_assignment_rule(&rule(
        "sales",
        Condition::any(vec![attr("department", &["Sales"]), group("sales-emea")]),
        &[&w.crm.entity_id, &w.mail.entity_id],
    ))
    .await
    .unwrap();

    // A user matching the rule reaches both SPs; not the directly assigned one.
    let alice = Browser::new();
    w.assert_reaches(&alice, &w.crm, "alice").await;
    w.assert_reaches(&alice, &w.mail, "alice").await;
    w.assert_refused(&alice, &w.hr, "alice").await;

    // A user created after the rule: no batch job, the rule applies at once.
    w.add_user("dave", None).await;
    dir.add_user_to_group("dave", "sales-emea").await.unwrap();
    let dave = Browser::new();
    w.assert_reaches(&dave, &w.mail, "dave").await;

    // A user matching nothing: refused right after the login, again with the live session, and from
    // the portal (IdP-initiated).
    let bob = Browser::new();
    w.assert_refused(&bob, &w.crm, "bob").await;
    w.assert_refused(&bob, &w.crm, "bob").await;
    let encoded: String =
        url::form_urlencoded::byte_serialize(w.crm.entity_id.as_bytes()).collect();
    let launch = bob
        .get(&w.idp.url(&format!("/saml/init?sp={encoded}")))
        .await;
    assert_no_access(&launch);

    // Changing bob's group takes effect at his next SSO, with the same session.
    dir.add_user_to_group("bob", "sales-emea").await.unwrap();
    w.assert_reaches(&bob, &w.crm, "bob").await;
    let launch = bob
        .get(&w.idp.url(&format!("/saml/init?sp={encoded}")))
        .await;
    assert_eq!(launch.status, StatusCode::OK, "{}", launch.body);
    let assertion = w.crm.accept(&launch.saml_response(), None).unwrap();
    assert_eq!(assertion.subject.unwrap().name_id.unwrap().value, "bob");
    // ... and taking it away too.
    dir.remove_user_from_group("bob", "sales-emea")
        .await
        .unwrap();
    w.assert_refused(&bob, &w.crm, "bob").await;

    // So does a changed attribute.
    dir.update_user(
        "alice",
        &UserProfile {
            department: Some("Legal".into()),
            ..UserProfile::default()
        },
    )
    .await
    .unwrap();
    w.assert_refused(&alice, &w.crm, "alice").await;

    // Disabling the rule (a new generation) refuses dave at his next SSO; enabling restores it.
    dir.set_assignment_rule_enabled("sales", false)
        .await
        .unwrap();
    w.assert_refused(&dave, &w.mail, "dave").await;
    dir.set_assignment_rule_enabled("sales", true)
        .await
        .unwrap();
    w.assert_reaches(&dave, &w.mail, "dave").await;

    // The direct assignment still works next to the rules.
    let carol = Browser::new();
    w.assert_reaches(&carol, &w.hr, "carol").await;
    w.assert_refused(&carol, &w.crm, "carol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_lists_exactly_the_assigned_apps() {
    let w = World::new().await;
    let dir = w.dir();
    dir.create_group("sales-emea").await.unwrap();
    dir.create_role("manager").await.unwrap();
    w.add_user("erin", Some("Sales")).await;
    dir.assign_app("erin", &w.hr.entity_id).await.unwrap();
    dir.add_assignment_rule(&rule(
        "sales",
        Condition::any(vec![attr("department", &["Sales"]), group("sales-emea")]),
        &[&w.crm.entity_id],
    ))
    .await
    .unwrap();
    dir.add_assignment_rule(&rule(
        "managers",
        Condition::all(vec![role("manager")]),
        &[&w.mail.entity_id, &w.crm.entity_id],
    ))
    .await
    .unwrap();

    let erin = Browser::new();
    erin.sign_in(&w.idp, "erin").await;
    let mut expected = vec![w.crm.entity_id.clone(), w.hr.entity_id.clone()];
    expected.sort();
    assert_eq!(w.portal(&erin).await, expected, "direct hr + rule crm");

    // The role grants mail (and crm again, listed once).
    dir.add_user_to_role("erin", "manager").await.unwrap();
    let mut expected = vec![
        w.crm.entity_id.clone(),
        w.hr.entity_id.clone(),
        w.mail.entity_id.clone(),
    ];
    expected.sort();
    assert_eq!(w.portal(&erin).await, expected);

    // Why, as `tessera assignment-rule apps` prints it.
    let user = dir.get_user_by_username("erin").await.unwrap().unwrap();
    let access = w.idp.idp.app_access(&user).await.unwrap();
    let why: BTreeMap<String, (bool, Vec<String>)> = access
        .into_iter()
        .map(|a| (a.entity_id, (a.direct, a.rules)))
        .collect();
    assert_eq!(
        why[&w.crm.entity_id],
        (false, vec!["managers".to_owned(), "sales".to_owned()])
    );
    assert_eq!(why[&w.hr.entity_id], (true, vec![]));
    assert_eq!(why[&w.mail.entity_id], (false, vec!["managers".to_owned()]));

    // Removing a rule removes its apps from the portal; a disabled SP is not offered.
    dir.remove_assignment_rule("managers").await.unwrap();
    let settings = SpSettings {
        enabled: false,
        ..SpSettings::default()
    };
    dir.update_sp_settings(&w.hr.entity_id, &settings)
        .await
        .unwrap();
    assert_eq!(w.portal(&erin).await, vec![w.crm.entity_id.clone()]);

    // A user with nothing sees nothing.
    w.add_user("frank", Some("Legal")).await;
    let frank = Browser::new();
    frank.sign_in(&w.idp, "frank").await;
    assert!(w.portal(&frank).await.is_empty());
}

/// Runs the `tessera` binary against the SQLite directory in `dir`.
fn tessera(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(dir)
        .env_remove("TESSERA_CONFIG")
        .env(
            "TESSERA_DATABASE_URL",
            format!("sqlite://{}", dir.join("t.db").display()),
        )
        .env("TESSERA_CERTS_DIR", dir.join("certs"))
        .env("TESSERA_METADATA_DIR", dir.join("metadata"))
        .env("TESSERA_DATA_DIR", dir.join("data"))
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let crm = "https://crm.example";
    let mail = "https://mail.example";
    {
        let dir = cheap_directory(&format!("sqlite://{}", d.join("t.db").display())).await;
        seed(&dir).await;
        for (name, department) in [("alice", "sales"), ("bob", "Legal")] {
            dir.create_user(NewUser {
                username: name.into(),
                password: common::idp::PASSWORD.into(),
                department: Some(department.into()),
                ..NewUser::default()
            })
            .await
            .unwrap();
        }
        dir.assign_app("bob", mail).await.unwrap();
        dir.close().await;
    }

    let (ok, out) = tessera(
        d,
        &[
            "assignment-rule",
            "add",
            "sales",
            "--when",
            "department=Sales",
            "--when",
            "group=sales-emea",
            "--any",
            "--sp",
            crm,
            "--sp",
            mail,
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("department=Sales OR group=sales-emea"),
        "{out}"
    );

    // Several --when without --any/--all, an unknown group, an unknown SP: refused, nothing stored.
    let (ok, out) = tessera(
        d,
        &[
            "assignment-rule",
            "add",
            "x",
            "--when",
            "department=A",
            "--when",
            "role=manager",
            "--sp",
            crm,
        ],
    );
    assert!(
        !ok && out.contains("--any") && out.contains("--all"),
        "{out}"
    );
    let (ok, out) = tessera(
        d,
        &[
            "assignment-rule",
            "add",
            "x",
            "--when",
            "group=nope",
            "--sp",
            crm,
        ],
    );
    assert!(!ok && out.contains("unknown group \"nope\""), "{out}");
    let (ok, out) = tessera(
        d,
        &[
            "assignment-rule",
            "add",
            "x",
            "--when",
            "role=manager",
            "--sp",
            "https://nope",
        ],
    );
    assert!(
        !ok && out.contains("unknown service provider \"https://nope\""),
        "{out}"
    );

    let (ok, out) = tessera(d, &["assignment-rule", "list"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        format!("sales\tenabled\tdepartment=Sales OR group=sales-emea\t{crm}, {mail}")
    );
    let (_, out) = tessera(d, &["assignment-rule", "apps", "alice"]);
    assert_eq!(out.trim(), format!("{crm}\trule sales\n{mail}\trule sales"));
    let (_, out) = tessera(d, &["assignment-rule", "apps", "bob"]);
    assert_eq!(out.trim(), format!("{mail}\tdirect"));

    let (ok, out) = tessera(d, &["assignment-rule", "disable", "sales"]);
    assert!(ok, "{out}");
    let (_, out) = tessera(d, &["assignment-rule", "show", "sales"]);
    assert!(out.contains("enabled:   false"), "{out}");
    let (_, out) = tessera(d, &["assignment-rule", "apps", "alice"]);
    assert_eq!(out.trim(), "");
    let (ok, out) = tessera(d, &["assignment-rule", "enable", "sales"]);
    assert!(ok, "{out}");
    let (ok, out) = tessera(d, &["assignment-rule", "remove", "sales"]);
    assert!(ok, "{out}");
    let (ok, out) = tessera(d, &["assignment-rule", "remove", "sales"]);
    assert!(
        !ok && out.contains("assignment rule \"sales\" not found"),
        "{out}"
    );
}

#[tokio::test]
async fn declared_rules_are_reconciled_and_kept_apart() {
    let dir = cheap_directory("sqlite::memory:").await;
    seed(&dir).await;
    let crm = "https://crm.example";
    let mail = "https://mail.example";
    let cli_rule = rule("by-cli", Condition::any(vec![role("manager")]), &[mail]);
    dir.add_assignment_rule(&cli_rule).await.unwrap();

    let decls: Vec<policy::AssignmentRuleDecl> = toml::from_str::<BTreeMap<String, Vec<_>>>(
        r#"
        [[assignment_rules]]
        name = "sales"
        when = ["department=Sales", "group=sales-emea"]
        match = "any"
        sps = ["https://crm.example"]
        "#,
    )
    .unwrap()
    .remove("assignment_rules")
    .unwrap();
    let declared = policy::rules_from_declarations(&decls).unwrap();
    dir.apply_assignment_declarations(&declared).await.unwrap();
    let sales = dir.get_assignment_rule("sales").await.unwrap().unwrap();
    assert_eq!(
        sales.condition.to_string(),
        "department=Sales OR group=sales-emea"
    );
    assert_eq!(
        dir.assignment_rule_owner("sales").await.unwrap(),
        Some(tessera::directory::ManagedBy::Config)
    );

    // Declared rules are changed in the file only; CLI-made ones are not taken over by the file.
    let e = dir.remove_assignment_rule("sales").await.unwrap_err();
    assert!(matches!(e, Error::ManagedByConfig(_)), "{e}");
    assert!(e.to_string().contains("tessera.toml"), "{e}");
    assert!(matches!(
        dir.set_assignment_rule_enabled("sales", false).await,
        Err(Error::ManagedByConfig(_))
    ));
    assert!(matches!(
        dir.update_assignment_rule(&sales).await,
        Err(Error::ManagedByConfig(_))
    ));
    let mut changed = declared.clone();
    changed[0].targets = vec![mail.to_owned()];
    let taking_over = vec![changed[0].clone(), cli_rule.clone()];
    assert!(matches!(
        dir.apply_assignment_declarations(&taking_over).await,
        Err(Error::ManagedByCli(_))
    ));
    // ... and that failed declaration changed nothing (all or nothing), nor does an unknown group.
    assert_eq!(
        dir.get_assignment_rule("sales").await.unwrap().unwrap(),
        sales
    );
    let unknown = vec![rule("sales", Condition::any(vec![group("nope")]), &[crm])];
    assert!(dir.apply_assignment_declarations(&unknown).await.is_err());
    assert_eq!(
        dir.get_assignment_rule("sales").await.unwrap().unwrap(),
        sales
    );

    // A changed declaration is applied; a removed one is removed; the CLI rule stays.
    dir.apply_assignment_declarations(&changed).await.unwrap();
    assert_eq!(
        dir.get_assignment_rule("sales")
            .await
            .unwrap()
            .unwrap()
            .targets,
        vec![mail.to_owned()]
    );
    dir.apply_assignment_declarations(&[]).await.unwrap();
    let names: Vec<String> = dir
        .list_assignment_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, vec!["by-cli"]);

    // Invalid declarations are refused when the configuration is read, naming the rule.
    let bad = [
        (
            r#"{ name = "x", when = ["a=b", "c=d"], sps = ["s"] }"#,
            "match = \"any\"",
        ),
        (
            r#"{ name = "x", when = ["group=g"], sps = [] }"#,
            "grants no",
        ),
        (r#"{ name = "x", when = ["a"], sps = ["s"] }"#, "KEY=VALUE"),
    ];
    for (decl, message) in bad {
        let doc = format!("assignment_rules = [{decl}]");
        let decls = toml::from_str::<BTreeMap<String, Vec<policy::AssignmentRuleDecl>>>(&doc)
            .unwrap()
            .remove("assignment_rules")
            .unwrap();
        let e = policy::rules_from_declarations(&decls)
            .unwrap_err()
            .to_string();
        assert!(e.contains(message) && e.contains("\"x\""), "{e}");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "[[assignment_rules]]\nname = \"x\"\nwhen = [\"a=b\", \"c=d\"]\nsps = [\"s\"]\n",
    )
    .unwrap();
    let e = tessera::config::Config::load(Some(file.path())).unwrap_err();
    assert!(e.to_string().contains("assignment rule \"x\""), "{e}");
}
