//! Access policy: IP allowlist semantics, policy resolution, step-up decisions and self-lockout as
//! tables over the pure engine; storage and tessera.toml declarations on SQLite and PostgreSQL; and
//! `tessera policy explain` / the lockout refusal through the real binary.

mod common;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::net::IpAddr;

use tessera::directory::{
    Directory, EntryKind, Error, ManagedBy, NewServiceProvider, NewUser, PasswordHasher, SpSettings,
};
use tessera::policy::{
    self, lockout, would_lock_out, AccessRequest, AllowlistRef, AssignmentTarget, DenyReason,
    IpRange, IpRule, IpRuleDecl, Item, MfaMethod, Outcome, PolicyAssignment, PolicyData,
    PolicyDecl, PolicySet, Requirement, RuleScope, SecurityPolicy, SessionFacts, SpRequirement,
    Subject, TargetKind,
};
use tessera::session::AuthnMethod;

type TestResult = Result<(), Box<dyn StdError>>;

/// A fixed "now" for the pure tests (unix seconds).
const NOW: i64 = 1_800_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| unreachable!("bad test address {s}: {e}"))
}

fn ranges(list: &[&str]) -> Vec<IpRange> {
    list.iter()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|e| unreachable!("bad test range {s}: {e}"))
        })
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn subject(user: &str, groups: &[&str], roles: &[&str]) -> Subject {
    Subject {
        username: user.to_owned(),
        groups: names(groups),
        roles: names(roles),
    }
}

fn rule(name: &str, list: &[&str], scope: RuleScope) -> IpRule {
    IpRule {
        name: name.to_owned(),
        ranges: ranges(list),
        scope,
    }
}

fn build(data: PolicyData) -> PolicySet {
    PolicySet::build(data, 1).unwrap_or_else(|e| unreachable!("test data is valid: {e}"))
}

/// Login-time (no SP) or SSO-time IP decision with no session: only the IP gates.
fn ip_outcome(set: &PolicySet, who: &Subject, addr: &str, sp: Option<&str>) -> Outcome {
    set.decide(&AccessRequest {
        subject: who,
        ip: ip(addr),
        sp,
        session: None,
        mfa_available: &[],
        now: NOW,
    })
    .outcome
}

fn denied_by(refs: &[AllowlistRef]) -> Outcome {
    Outcome::Deny {
        reason: DenyReason::IpNotAllowed {
            refused_by: refs.to_vec(),
        },
    }
}

#[test]
fn ip_allowlist_semantics_table() {
    let office = || AllowlistRef::IpRule("office".into());
    let vpn = || AllowlistRef::IpRule("vpn".into());
    let alice = subject("alice", &["finance"], &["admin"]);
    let bob = subject("bob", &["sales"], &["staff"]);
    let with = |rules: Vec<IpRule>| {
        build(PolicyData {
            ip_rules: rules,
            ..PolicyData::default()
        })
    };
    let office_for = |scope: RuleScope| rule("office", &["192.0.2.0/24", "2001:db8::/32"], scope);
    let sp_list = |list: &[&str]| {
        BTreeMap::from([(
            "https://payroll.example/".to_owned(),
            SpRequirement {
                ip_ranges: Some(ranges(list)),
                min: None,
            },
        )])
    };
    let mut guarded_policy = SecurityPolicy::new("guarded");
    guarded_policy.ip_ranges = Some(ranges(&["192.0.2.0/25"]));
    guarded_policy.is_default = true;
    let payroll = Some("https://payroll.example/");

    /// Name, policy set, who, from where, to which SP, expected outcome.
    type Case<'a> = (
        &'a str,
        PolicySet,
        &'a Subject,
        &'a str,
        Option<&'a str>,
        Outcome,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("no rule: unrestricted", with(vec![]), &alice, "203.0.113.7", None, Outcome::Admit),
        ("everyone: inside", with(vec![office_for(RuleScope::Everyone)]), &bob, "192.0.2.9", None, Outcome::Admit),
        ("everyone: outside", with(vec![office_for(RuleScope::Everyone)]), &bob, "203.0.113.7", None, denied_by(&[office()])),
        ("everyone: IPv6 inside", with(vec![office_for(RuleScope::Everyone)]), &bob, "2001:db8::5", None, Outcome::Admit),
        ("everyone: IPv4-mapped inside", with(vec![office_for(RuleScope::Everyone)]), &bob, "::ffff:192.0.2.9", None, Outcome::Admit),
        ("role: member inside", with(vec![office_for(RuleScope::Roles(names(&["admin"])))]), &alice, "192.0.2.9", None, Outcome::Admit),
        ("role: member outside", with(vec![office_for(RuleScope::Roles(names(&["admin"])))]), &alice, "203.0.113.7", None, denied_by(&[office()])),
        ("role: non-member unrestricted", with(vec![office_for(RuleScope::Roles(names(&["admin"])))]), &bob, "203.0.113.7", None, Outcome::Admit),
        ("group: member inside", with(vec![office_for(RuleScope::Groups(names(&["finance"])))]), &alice, "192.0.2.9", None, Outcome::Admit),
        ("group: member outside", with(vec![office_for(RuleScope::Groups(names(&["finance"])))]), &alice, "198.51.100.1", None, denied_by(&[office()])),
        ("group: non-member unrestricted", with(vec![office_for(RuleScope::Groups(names(&["finance"])))]), &bob, "198.51.100.1", None, Outcome::Admit),
        ("user: named inside", with(vec![office_for(RuleScope::Users(names(&["alice"])))]), &alice, "192.0.2.9", None, Outcome::Admit),
        ("user: named outside", with(vec![office_for(RuleScope::Users(names(&["alice"])))]), &alice, "198.51.100.1", None, denied_by(&[office()])),
        ("user: other unrestricted", with(vec![office_for(RuleScope::Users(names(&["alice"])))]), &bob, "198.51.100.1", None, Outcome::Admit),
        ("two rules: inside the second suffices",
            with(vec![office_for(RuleScope::Everyone), rule("vpn", &["198.51.100.0/24"], RuleScope::Roles(names(&["admin"])))]),
            &alice, "198.51.100.1", None, Outcome::Admit),
        ("two rules: outside both names both",
            with(vec![office_for(RuleScope::Everyone), rule("vpn", &["198.51.100.0/24"], RuleScope::Roles(names(&["admin"])))]),
            &alice, "203.0.113.7", None, denied_by(&[office(), vpn()])),
        ("policy allowlist: rule admits, policy refuses",
            build(PolicyData { ip_rules: vec![office_for(RuleScope::Everyone)], policies: vec![guarded_policy.clone()], ..PolicyData::default() }),
            &bob, "192.0.2.200", None, denied_by(&[AllowlistRef::Policy("guarded".into())])),
        ("policy allowlist alone: inside",
            build(PolicyData { policies: vec![guarded_policy.clone()], ..PolicyData::default() }),
            &bob, "192.0.2.1", None, Outcome::Admit),
        ("SP allowlist: inside", build(PolicyData { sp_requirements: sp_list(&["10.0.0.0/8"]), ..PolicyData::default() }),
            &bob, "10.1.2.3", payroll, Outcome::Admit),
        ("SP allowlist: outside refuses that app", build(PolicyData { sp_requirements: sp_list(&["10.0.0.0/8"]), ..PolicyData::default() }),
            &bob, "203.0.113.7", payroll, denied_by(&[AllowlistRef::Sp("https://payroll.example/".into())])),
        ("SP allowlist: does not restrict login", build(PolicyData { sp_requirements: sp_list(&["10.0.0.0/8"]), ..PolicyData::default() }),
            &bob, "203.0.113.7", None, Outcome::Admit),
        ("SP allowlist: on top of an admitting rule",
            build(PolicyData { ip_rules: vec![office_for(RuleScope::Everyone)], sp_requirements: sp_list(&["192.0.2.0/28"]), ..PolicyData::default() }),
            &bob, "192.0.2.99", payroll, denied_by(&[AllowlistRef::Sp("https://payroll.example/".into())])),
        ("every gate refuses: all named",
            build(PolicyData { ip_rules: vec![office_for(RuleScope::Everyone)], policies: vec![guarded_policy.clone()], sp_requirements: sp_list(&["10.0.0.0/8"]), ..PolicyData::default() }),
            &bob, "203.0.113.7", payroll,
            denied_by(&[office(), AllowlistRef::Policy("guarded".into()), AllowlistRef::Sp("https://payroll.example/".into())])),
    ];
    for (name, set, who, addr, sp, expected) in cases {
        assert_eq!(ip_outcome(&set, who, addr, sp), expected, "case: {name}");
    }
}

fn policy(name: &str, edit: impl FnOnce(&mut SecurityPolicy)) -> SecurityPolicy {
    let mut p = SecurityPolicy::new(name);
    edit(&mut p);
    p
}

fn assign(policy: &str, target: AssignmentTarget, priority: i64) -> PolicyAssignment {
    PolicyAssignment {
        policy: policy.to_owned(),
        target,
        priority,
    }
}

#[test]
fn effective_policy_resolution_table() {
    let data = PolicyData {
        policies: vec![
            policy("standard", |p| p.is_default = true),
            policy("sensitive", |p| p.session_absolute_secs = 8 * 3600),
            policy("admin", |p| {
                p.mfa_required = true;
                p.reauth_interval_secs = Some(3600);
            }),
            policy("strict", |p| {
                p.mfa_required = true;
                p.reauth_interval_secs = Some(900);
            }),
            policy("alpha", |_| {}),
            policy("beta", |_| {}),
        ],
        assignments: vec![
            assign("sensitive", AssignmentTarget::Group("finance".into()), 10),
            assign("admin", AssignmentTarget::Role("admin".into()), 20),
            assign("strict", AssignmentTarget::Group("ops".into()), 20),
            assign("standard", AssignmentTarget::User("bob".into()), 0),
            assign("beta", AssignmentTarget::Group("b-team".into()), 5),
            assign("alpha", AssignmentTarget::Group("a-team".into()), 5),
            assign("sensitive", AssignmentTarget::Role("low".into()), -3),
        ],
        ..PolicyData::default()
    };
    let set = build(data.clone());
    #[rustfmt::skip]
    let cases: Vec<(&str, Subject, &str)> = vec![
        ("nothing assigned: the default", subject("carol", &[], &[]), "standard"),
        ("a group assignment", subject("dave", &["finance"], &[]), "sensitive"),
        ("higher priority role beats group", subject("erin", &["finance"], &["admin"]), "admin"),
        ("direct user assignment wins, even when weaker", subject("bob", &["finance", "ops"], &["admin"]), "standard"),
        ("priority tie: the stricter policy", subject("frank", &["ops"], &["admin"]), "strict"),
        ("priority tie, equally strict: by policy name", subject("gina", &["b-team", "a-team"], &[]), "alpha"),
        ("negative priority still beats the default", subject("hank", &[], &["low"]), "sensitive"),
        ("unknown memberships are ignored", subject("ivan", &["nobody"], &["none"]), "standard"),
    ];
    for (name, who, expected) in &cases {
        let (p, trace) = set.effective_policy(who);
        assert_eq!(p.name, *expected, "case: {name}; trace: {trace:?}");
        assert!(
            trace.iter().any(|l| l.contains(expected)),
            "case {name}: trace names the policy: {trace:?}"
        );
    }
    // Without a default, the built-in policy applies.
    let mut no_default = data;
    no_default.policies.retain(|p| !p.is_default);
    no_default.assignments.retain(|a| a.policy != "standard");
    let set = build(no_default);
    let (p, _) = set.effective_policy(&subject("carol", &[], &[]));
    assert_eq!(p.name, policy::BUILTIN_POLICY_NAME);
}

/// A session that signed in `ago` seconds before NOW with `methods`, MFA done `mfa_ago` seconds ago.
fn session(methods: &[AuthnMethod], ago: i64, mfa_ago: Option<i64>) -> SessionFacts {
    SessionFacts {
        methods: methods.to_vec(),
        authn_instant: NOW - ago,
        last_seen: NOW - 10,
        mfa_instant: mfa_ago.map(|a| NOW - a),
    }
}

#[test]
fn session_requirements_step_up_or_say_what_is_missing() {
    let payroll = "https://payroll.example/";
    let data = PolicyData {
        policies: vec![
            policy("standard", |p| p.is_default = true),
            policy("admin", |p| {
                p.mfa_required = true;
                p.mfa_methods = vec![MfaMethod::WebAuthn, MfaMethod::Totp];
                p.reauth_interval_secs = Some(900);
                p.session_absolute_secs = 8 * 3600;
            }),
        ],
        assignments: vec![assign("admin", AssignmentTarget::Role("admin".into()), 1)],
        sp_requirements: BTreeMap::from([(
            payroll.to_owned(),
            SpRequirement {
                ip_ranges: None,
                min: Some(Requirement {
                    mfa: true,
                    mfa_within_secs: Some(3600),
                }),
            },
        )]),
        ..PolicyData::default()
    };
    let set = build(data);
    let user = subject("alice", &[], &[]);
    let admin = subject("root", &[], &["admin"]);
    let password = [AuthnMethod::Password];
    let with_totp = [AuthnMethod::Password, AuthnMethod::Totp];
    let decide = |who: &Subject, sp: Option<&str>, s: &SessionFacts, available: &[MfaMethod]| {
        set.decide(&AccessRequest {
            subject: who,
            ip: ip("203.0.113.7"),
            sp,
            session: Some(s),
            mfa_available: available,
            now: NOW,
        })
    };

    // The SP minimum before MFA exists for the user: refused, saying what is missing.
    let d = decide(&user, Some(payroll), &session(&password, 60, None), &[]);
    assert_eq!(
        d.outcome,
        Outcome::Deny {
            reason: DenyReason::PolicyNotMet {
                missing: "this app requires MFA within the last hour; the session has: password"
                    .into()
            }
        }
    );
    // Once the user can do MFA: a step-up instead.
    let d = decide(
        &user,
        Some(payroll),
        &session(&password, 60, None),
        &[MfaMethod::Totp],
    );
    assert!(
        matches!(&d.outcome, Outcome::StepUp { reauthenticate: false, mfa_methods, .. } if mfa_methods == &[MfaMethod::Totp]),
        "{d}"
    );
    // MFA done two hours ago is too old for this app, fine for login.
    let old_mfa = session(&with_totp, 3 * 3600, Some(2 * 3600));
    assert!(matches!(
        decide(&user, Some(payroll), &old_mfa, &[MfaMethod::Totp]).outcome,
        Outcome::StepUp { .. }
    ));
    assert_eq!(
        decide(&user, None, &old_mfa, &[MfaMethod::Totp]).outcome,
        Outcome::Admit
    );
    // Recent MFA: admitted.
    let fresh_mfa = session(&with_totp, 3 * 3600, Some(600));
    assert_eq!(
        decide(&user, Some(payroll), &fresh_mfa, &[]).outcome,
        Outcome::Admit
    );

    // The admin policy: MFA within 15 minutes, with WebAuthn or TOTP only.
    assert_eq!(
        decide(&admin, None, &fresh_mfa, &[]).outcome,
        Outcome::Admit
    );
    let d = decide(
        &admin,
        None,
        &session(&with_totp, 3 * 3600, Some(1200)),
        &[MfaMethod::Totp, MfaMethod::RecoveryCode],
    );
    assert!(
        matches!(&d.outcome, Outcome::StepUp { mfa_methods, missing, .. }
            if mfa_methods == &[MfaMethod::Totp] && missing.contains("policy \"admin\" requires MFA within the last 15 minutes")),
        "{d}"
    );
    // A recovery code does not satisfy a policy that does not list it.
    let recovery = session(
        &[AuthnMethod::Password, AuthnMethod::RecoveryCode],
        60,
        Some(60),
    );
    assert!(matches!(
        decide(&admin, None, &recovery, &[]).outcome,
        Outcome::Deny {
            reason: DenyReason::PolicyNotMet { .. }
        }
    ));
    // Past the policy's absolute lifetime: a new sign-in, which needs no second factor to be possible.
    let d = decide(&admin, None, &session(&with_totp, 9 * 3600, Some(60)), &[]);
    assert!(
        matches!(&d.outcome, Outcome::StepUp { reauthenticate: true, mfa_methods, .. } if mfa_methods.is_empty()),
        "{d}"
    );
    // Idle too long under the default policy (30 minutes).
    let idle = SessionFacts {
        last_seen: NOW - 3600,
        ..session(&password, 4000, None)
    };
    assert!(matches!(
        decide(&user, None, &idle, &[]).outcome,
        Outcome::StepUp {
            reauthenticate: true,
            ..
        }
    ));
}

#[test]
fn a_user_moved_to_a_stricter_policy_meets_it_at_the_next_sso() {
    let before = build(PolicyData {
        policies: vec![
            policy("standard", |p| p.is_default = true),
            policy("sensitive", |p| p.mfa_required = true),
        ],
        ..PolicyData::default()
    });
    let mut data = before.data().clone();
    data.assignments.push(assign(
        "sensitive",
        AssignmentTarget::User("alice".into()),
        0,
    ));
    let after = build(data);
    let alice = subject("alice", &[], &[]);
    let s = session(&[AuthnMethod::Password], 60, None);
    let request = AccessRequest {
        subject: &alice,
        ip: ip("192.0.2.1"),
        sp: Some("https://wiki.example/"),
        session: Some(&s),
        mfa_available: &[MfaMethod::Totp],
        now: NOW,
    };
    assert_eq!(before.decide(&request).outcome, Outcome::Admit);
    let d = after.decide(&request);
    assert_eq!(d.policy, "sensitive");
    assert!(matches!(d.outcome, Outcome::StepUp { .. }), "{d}");
}

#[test]
fn self_lockout_is_detected() {
    let admin = subject("root", &["it"], &["admin"]);
    let current = build(PolicyData::default());
    let mut data = PolicyData::default();
    data.ip_rules
        .push(rule("office", &["10.0.0.0/8"], RuleScope::Everyone));
    let office_only = build(data);
    assert!(would_lock_out(
        &current,
        &office_only,
        &admin,
        ip("192.0.2.5"),
        &[],
        NOW
    ));
    assert!(!would_lock_out(
        &current,
        &office_only,
        &admin,
        ip("10.9.9.9"),
        &[],
        NOW
    ));
    // A rule for others does not lock this admin out.
    let mut data = PolicyData::default();
    data.ip_rules.push(rule(
        "staff",
        &["10.0.0.0/8"],
        RuleScope::Roles(names(&["staff"])),
    ));
    assert!(!would_lock_out(
        &current,
        &build(data),
        &admin,
        ip("192.0.2.5"),
        &[],
        NOW
    ));
    // Requiring MFA the admin cannot do yet locks them out; with a factor it is only a step-up.
    let mut data = PolicyData::default();
    data.policies.push(policy("strict", |p| {
        p.mfa_required = true;
        p.is_default = true;
    }));
    let strict = build(data);
    let decision = lockout(&current, &strict, &admin, ip("192.0.2.5"), &[], NOW);
    assert!(
        matches!(&decision, Some(d) if d.to_string().contains("policy \"strict\" requires MFA")),
        "{decision:?}"
    );
    assert!(!would_lock_out(
        &current,
        &strict,
        &admin,
        ip("192.0.2.5"),
        &[MfaMethod::Totp],
        NOW
    ));
    // Already locked out before the change: the change is not what locks them out.
    assert!(!would_lock_out(
        &office_only,
        &office_only,
        &admin,
        ip("192.0.2.5"),
        &[],
        NOW
    ));
}

#[test]
fn explain_names_every_rule_and_policy() {
    let mut data = PolicyData {
        ip_rules: vec![
            rule("office", &["192.0.2.0/24"], RuleScope::Everyone),
            rule(
                "vpn",
                &["198.51.100.0/24"],
                RuleScope::Groups(names(&["finance"])),
            ),
        ],
        policies: vec![policy("sensitive", |p| p.mfa_required = true)],
        assignments: vec![assign(
            "sensitive",
            AssignmentTarget::Group("finance".into()),
            10,
        )],
        ..PolicyData::default()
    };
    data.sp_requirements.insert(
        "https://payroll.example/".into(),
        SpRequirement {
            ip_ranges: Some(ranges(&["203.0.113.0/24"])),
            min: None,
        },
    );
    let set = build(data);
    let alice = subject("alice", &["finance"], &[]);
    let d = set.decide(&AccessRequest {
        subject: &alice,
        ip: ip("203.0.113.7"),
        sp: Some("https://payroll.example/"),
        session: None,
        mfa_available: &[],
        now: NOW,
    });
    let text = d.to_string();
    for needle in [
        "decision: deny",
        "ip rule \"office\"",
        "ip rule \"vpn\" (applies via group finance)",
        "policy \"sensitive\"",
        "group \"finance\"",
        "allowlist of SP \"https://payroll.example/\": 203.0.113.7 is inside",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn the_commented_example_declarations_parse() -> TestResult {
    // The access-policy section of tessera.example.toml is commented out; uncommented it must be valid.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tessera.example.toml");
    let text = std::fs::read_to_string(path)?;
    let start = text
        .find("# [[ip_rules]]")
        .ok_or("no ip_rules example in tessera.example.toml")?;
    // Uncomment the TOML lines; prose comment lines (no `=`, not a table header) are dropped.
    let section: String = text[start..]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('[') || l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    #[derive(serde::Deserialize)]
    struct Section {
        ip_rules: Vec<IpRuleDecl>,
        policies: Vec<PolicyDecl>,
    }
    let parsed: Section = toml::from_str(&section)?;
    policy::validate_declarations(&parsed.ip_rules, &parsed.policies)?;
    assert_eq!(parsed.ip_rules.len(), 1);
    assert_eq!(parsed.policies.len(), 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Storage, on both backends.

/// A database for one test; keeps the temporary directory or the PostgreSQL database alive.
enum Backend {
    /// A SQLite file inside a temporary directory.
    Sqlite(tempfile::TempDir),
    /// A throwaway PostgreSQL database.
    Postgres(common::postgres::TestDatabase),
}

impl Backend {
    fn url(&self) -> String {
        match self {
            Backend::Sqlite(dir) => format!("sqlite://{}", dir.path().join("tessera.db").display()),
            Backend::Postgres(db) => db.url.clone(),
        }
    }

    async fn directory(&self) -> Result<Directory, Error> {
        Directory::connect_with(&self.url(), PasswordHasher::new(256, 1, 1)?).await
    }
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() -> super::TestResult {
                    let backend = super::Backend::Sqlite(tempfile::tempdir()?);
                    super::$case(&backend).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() -> super::TestResult {
                    let backend =
                        super::Backend::Postgres(crate::common::postgres::TestDatabase::create().await?);
                    super::$case(&backend).await
                }
            )*
        }
    };
}

on_both_backends!(
    ip_rules_round_trip,
    policies_and_assignments_round_trip,
    sp_access_round_trip,
    loaded_policy_set_decides,
    declarations_apply_all_or_nothing,
    declarations_and_cli_items_stay_apart,
);

/// A directory with users alice (finance, admin), bob (sales), groups and roles, and one SP.
async fn populated(backend: &Backend) -> Result<Directory, Box<dyn StdError>> {
    let dir = backend.directory().await?;
    for user in ["alice", "bob", "root"] {
        dir.create_user(NewUser {
            username: user.to_owned(),
            password: "a long enough test passphrase".to_owned(),
            ..NewUser::default()
        })
        .await?;
    }
    for group in ["finance", "sales"] {
        dir.create_group(group).await?;
    }
    for role in ["admin", "staff"] {
        dir.create_role(role).await?;
    }
    dir.add_user_to_group("alice", "finance").await?;
    dir.add_user_to_role("alice", "admin").await?;
    dir.add_user_to_group("bob", "sales").await?;
    dir.add_user_to_role("root", "admin").await?;
    dir.add_sp(NewServiceProvider {
        entity_id: "https://payroll.example/".to_owned(),
        metadata_xml: "<EntityDescriptor/>".to_owned(),
        display_name: "Payroll".to_owned(),
        settings: SpSettings::default(),
    })
    .await?;
    Ok(dir)
}

async fn ip_rules_round_trip(backend: &Backend) -> TestResult {
    let dir = populated(backend).await?;
    let g0 = dir.policy_generation().await?;
    let rules = vec![
        rule("everyone", &["0.0.0.0/0", "::/0"], RuleScope::Everyone),
        rule(
            "finance",
            &["192.0.2.10-192.0.2.20", "2001:db8::1"],
            RuleScope::Groups(names(&["finance", "sales"])),
        ),
        rule("ops", &["10.0.0.0/8"], RuleScope::Roles(names(&["admin"]))),
        rule("solo", &["203.0.113.7"], RuleScope::Users(names(&["bob"]))),
    ];
    for r in &rules {
        dir.add_ip_rule(r).await?;
    }
    let listed: Vec<IpRule> = dir
        .list_ip_rules()
        .await?
        .into_iter()
        .map(|(r, source)| {
            assert_eq!(source, ManagedBy::Cli);
            r
        })
        .collect();
    assert_eq!(listed, rules, "listed by name, unchanged");
    assert_eq!(dir.policy_generation().await?, g0 + 4);

    let dup = dir.add_ip_rule(&rules[0]).await;
    assert!(
        matches!(&dup, Err(Error::AlreadyExists(Item::IpRule(n))) if n == "everyone"),
        "{dup:?}"
    );
    let unknown = dir
        .add_ip_rule(&rule(
            "x",
            &["10.0.0.0/8"],
            RuleScope::Groups(names(&["finance", "ghosts"])),
        ))
        .await;
    assert!(
        matches!(&unknown, Err(Error::Policy(policy::Error::UnknownTarget { kind: TargetKind::Group, name, .. })) if name == "ghosts"),
        "{unknown:?}"
    );
    assert_eq!(
        unknown.map_err(|e| e.to_string()).err().as_deref(),
        Some("ip rule \"x\" names unknown group \"ghosts\"")
    );
    let empty = dir
        .add_ip_rule(&rule("empty", &[], RuleScope::Everyone))
        .await;
    assert!(matches!(
        empty,
        Err(Error::Policy(policy::Error::Invalid { .. }))
    ));
    assert_eq!(
        dir.policy_generation().await?,
        g0 + 4,
        "refusals write nothing"
    );

    dir.remove_ip_rule("solo").await?;
    assert!(dir.get_ip_rule("solo").await?.is_none());
    assert!(matches!(
        dir.remove_ip_rule("solo").await,
        Err(Error::NotFound {
            kind: EntryKind::IpRule,
            ..
        })
    ));
    dir.close().await;
    Ok(())
}

async fn policies_and_assignments_round_trip(backend: &Backend) -> TestResult {
    let dir = populated(backend).await?;
    let full = SecurityPolicy {
        name: "admin".into(),
        mfa_required: true,
        mfa_methods: vec![
            MfaMethod::WebAuthn,
            MfaMethod::Totp,
            MfaMethod::RecoveryCode,
        ],
        session_absolute_secs: 8 * 3600,
        session_idle_secs: 900,
        reauth_interval_secs: Some(3600),
        password_min_length: 16,
        password_history: 5,
        password_max_age_days: Some(90),
        security_questions_required: 2,
        mfa_on_new_device_or_country: true,
        ip_ranges: Some(ranges(&["10.0.0.0/8", "2001:db8::/32"])),
        is_default: false,
    };
    dir.add_policy(&full).await?;
    assert_eq!(
        dir.get_policy("admin").await?,
        Some((full.clone(), ManagedBy::Cli))
    );
    let standard = policy("standard", |p| p.is_default = true);
    dir.add_policy(&standard).await?;
    // A new default replaces the old one.
    let other = policy("other", |p| p.is_default = true);
    dir.add_policy(&other).await?;
    let defaults: Vec<String> = dir
        .list_policies()
        .await?
        .into_iter()
        .filter(|(p, _)| p.is_default)
        .map(|(p, _)| p.name)
        .collect();
    assert_eq!(defaults, vec!["other".to_owned()]);

    let mut changed = full.clone();
    changed.reauth_interval_secs = None;
    changed.ip_ranges = None;
    changed.is_default = true;
    dir.update_policy(&changed).await?;
    assert_eq!(
        dir.get_policy("admin").await?.map(|(p, _)| p),
        Some(changed)
    );
    assert!(matches!(
        dir.update_policy(&policy("nope", |_| {})).await,
        Err(Error::NotFound {
            kind: EntryKind::Policy,
            ..
        })
    ));
    let bad = dir
        .add_policy(&policy("weak", |p| p.password_min_length = 4))
        .await;
    assert!(
        bad.as_ref()
            .is_err_and(|e| e.to_string().contains("policy \"weak\"")),
        "{bad:?}"
    );

    dir.assign_policy(&assign("admin", AssignmentTarget::Role("admin".into()), 20))
        .await?;
    dir.assign_policy(&assign(
        "standard",
        AssignmentTarget::Group("finance".into()),
        10,
    ))
    .await?;
    dir.assign_policy(&assign("standard", AssignmentTarget::User("bob".into()), 0))
        .await?;
    // Re-assigning a target replaces its assignment.
    dir.assign_policy(&assign(
        "other",
        AssignmentTarget::Group("finance".into()),
        11,
    ))
    .await?;
    let listed: Vec<PolicyAssignment> = dir
        .list_policy_assignments()
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(
        listed,
        vec![
            assign("other", AssignmentTarget::Group("finance".into()), 11),
            assign("admin", AssignmentTarget::Role("admin".into()), 20),
            assign("standard", AssignmentTarget::User("bob".into()), 0),
        ]
    );
    let unknown_group = dir
        .assign_policy(&assign(
            "admin",
            AssignmentTarget::Group("ghosts".into()),
            1,
        ))
        .await;
    assert!(
        unknown_group
            .as_ref()
            .is_err_and(|e| e.to_string().contains("unknown group \"ghosts\"")),
        "{unknown_group:?}"
    );
    assert!(matches!(
        dir.assign_policy(&assign("nope", AssignmentTarget::User("bob".into()), 1))
            .await,
        Err(Error::NotFound {
            kind: EntryKind::Policy,
            ..
        })
    ));
    assert!(
        dir.unassign_policy(&AssignmentTarget::User("bob".into()))
            .await?
    );
    assert!(
        !dir.unassign_policy(&AssignmentTarget::User("bob".into()))
            .await?
    );

    let removed = dir.remove_policy("admin").await?;
    assert_eq!(
        removed,
        vec![assign("admin", AssignmentTarget::Role("admin".into()), 20)]
    );
    assert_eq!(dir.list_policy_assignments().await?.len(), 1);
    dir.close().await;
    Ok(())
}

async fn sp_access_round_trip(backend: &Backend) -> TestResult {
    let dir = populated(backend).await?;
    let payroll = "https://payroll.example/";
    assert_eq!(dir.get_sp_access(payroll).await?, None);
    let req = SpRequirement {
        ip_ranges: Some(ranges(&["10.0.0.0/8", "192.0.2.1-192.0.2.9"])),
        min: Some(Requirement {
            mfa: true,
            mfa_within_secs: Some(3600),
        }),
    };
    dir.set_sp_access(payroll, &req).await?;
    assert_eq!(dir.get_sp_access(payroll).await?, Some(req));
    let only_mfa = SpRequirement {
        ip_ranges: None,
        min: Some(Requirement {
            mfa: true,
            mfa_within_secs: None,
        }),
    };
    dir.set_sp_access(payroll, &only_mfa).await?;
    assert_eq!(dir.get_sp_access(payroll).await?, Some(only_mfa));
    dir.set_sp_access(payroll, &SpRequirement::default())
        .await?;
    assert_eq!(dir.get_sp_access(payroll).await?, None);
    assert!(matches!(
        dir.set_sp_access("https://nope.example/", &SpRequirement::default())
            .await,
        Err(Error::NotFound {
            kind: EntryKind::ServiceProvider,
            ..
        })
    ));
    let bad = SpRequirement {
        ip_ranges: Some(Vec::new()),
        min: None,
    };
    assert!(matches!(
        dir.set_sp_access(payroll, &bad).await,
        Err(Error::Policy(policy::Error::Invalid { .. }))
    ));
    // Removing the SP removes its requirements.
    dir.set_sp_access(
        payroll,
        &SpRequirement {
            ip_ranges: Some(ranges(&["10.0.0.0/8"])),
            min: None,
        },
    )
    .await?;
    dir.remove_sp(payroll).await?;
    assert!(dir
        .load_policy_set()
        .await?
        .sp_requirement(payroll)
        .is_none());
    dir.close().await;
    Ok(())
}

async fn loaded_policy_set_decides(backend: &Backend) -> TestResult {
    let dir = populated(backend).await?;
    dir.add_ip_rule(&rule(
        "office",
        &["192.0.2.0/24"],
        RuleScope::Roles(names(&["admin"])),
    ))
    .await?;
    dir.add_policy(&policy("admin", |p| p.mfa_required = true))
        .await?;
    dir.assign_policy(&assign("admin", AssignmentTarget::Role("admin".into()), 1))
        .await?;
    let set = dir.load_policy_set().await?;
    assert_eq!(set.generation(), dir.policy_generation().await?);
    let alice = dir.subject_of("alice").await?.ok_or("alice exists")?;
    assert_eq!(alice, subject("alice", &["finance"], &["admin"]));
    assert!(dir.subject_of("nobody").await?.is_none());
    let outside = set.decide(&AccessRequest {
        subject: &alice,
        ip: ip("203.0.113.7"),
        sp: None,
        session: None,
        mfa_available: &[],
        now: NOW,
    });
    assert_eq!(
        outside.outcome,
        denied_by(&[AllowlistRef::IpRule("office".into())])
    );
    let bob = dir.subject_of("bob").await?.ok_or("bob exists")?;
    let (p, _) = set.effective_policy(&bob);
    assert_eq!(p.name, policy::BUILTIN_POLICY_NAME);
    assert_eq!(dir.mfa_available("alice").await?, Vec::<MfaMethod>::new());
    dir.close().await;
    Ok(())
}

fn decl_policy(name: &str, assign: &str) -> Result<PolicyDecl, toml::de::Error> {
    toml::from_str(&format!(
        "name = \"{name}\"\nmfa_required = true\nmfa_methods = [\"totp\"]\n\
         reauth_interval_secs = 3600\nassign = [{assign}]\n"
    ))
}

async fn declarations_apply_all_or_nothing(backend: &Backend) -> TestResult {
    let dir = populated(backend).await?;
    let rules = vec![
        rule("office", &["192.0.2.0/24"], RuleScope::Everyone),
        rule(
            "vpn",
            &["198.51.100.0/24"],
            RuleScope::Roles(names(&["admin"])),
        ),
    ];
    let policies = vec![
        decl_policy("admin", "{ role = \"admin\", priority = 20 }")?,
        decl_policy(
            "finance",
            "{ group = \"finance\", priority = 10 }, { user = \"bob\" }",
        )?,
    ];
    let report = dir.apply_declarations(&rules, &policies).await?;
    assert_eq!(
        (report.ip_rules, report.policies, report.assignments),
        (2, 2, 3)
    );
    let set = dir.load_policy_set().await?;
    assert_eq!(set.data().ip_rules, rules);
    assert_eq!(set.data().policies.len(), 2);
    assert!(dir
        .list_ip_rules()
        .await?
        .iter()
        .all(|(_, s)| *s == ManagedBy::Config));
    let generation = dir.policy_generation().await?;
    let snapshot = dir.load_policy_set().await?.data().clone();

    // Each bad batch is refused with a message naming the item, and nothing changes.
    let bad_batches: Vec<(Vec<IpRuleDecl>, Vec<PolicyDecl>, &str)> = vec![
        (
            vec![rules[0].clone()],
            vec![
                policies[0].clone(),
                decl_policy("broken", "{ group = \"ghosts\", priority = 1 }")?,
            ],
            "policy \"broken\" names unknown group \"ghosts\"",
        ),
        (
            vec![rules[0].clone(), rules[0].clone()],
            vec![],
            "ip rule \"office\" is given more than once",
        ),
        (
            vec![rule(
                "x",
                &["10.0.0.0/8"],
                RuleScope::Users(names(&["mallory"])),
            )],
            vec![],
            "ip rule \"x\" names unknown user \"mallory\"",
        ),
        (
            vec![],
            vec![
                decl_policy("p1", "{ role = \"admin\" }")?,
                decl_policy("p2", "{ role = \"admin\" }")?,
            ],
            "policy assignment to role \"admin\" is given more than once",
        ),
    ];
    for (bad_rules, bad_policies, message) in bad_batches {
        let err = dir
            .apply_declarations(&bad_rules, &bad_policies)
            .await
            .err()
            .ok_or("a bad batch must be refused")?;
        assert_eq!(err.to_string(), message);
        assert_eq!(dir.policy_generation().await?, generation);
        assert_eq!(dir.load_policy_set().await?.data(), &snapshot);
    }
    // A bad CIDR never reaches the directory: the declaration does not even parse.
    let bad_cidr =
        toml::from_str::<IpRuleDecl>("name = \"x\"\nranges = [\"10.0.0.0/33\"]\neveryone = true\n");
    assert!(bad_cidr.is_err_and(|e| e.to_string().contains("10.0.0.0/33")));

    // Re-applying a changed file updates, adds and removes only declared items.
    let mut changed = rules[1].clone();
    changed.ranges = ranges(&["198.51.100.0/25"]);
    let report = dir
        .apply_declarations(&[changed.clone()], &policies[..1])
        .await?;
    assert_eq!(report.removed_ip_rules, vec!["office".to_owned()]);
    assert_eq!(report.removed_policies, vec!["finance".to_owned()]);
    let set = dir.load_policy_set().await?;
    assert_eq!(set.data().ip_rules, vec![changed]);
    assert_eq!(set.data().assignments.len(), 1);
    // And an empty file removes everything it declared.
    dir.apply_declarations(&[], &[]).await?;
    let set = dir.load_policy_set().await?;
    assert!(set.data().ip_rules.is_empty() && set.data().policies.is_empty());
    dir.close().await;
    Ok(())
}

async fn declarations_and_cli_items_stay_apart(backend: &Backend) -> TestResult {
    let dir = populated(backend).await?;
    dir.add_ip_rule(&rule("office", &["192.0.2.0/24"], RuleScope::Everyone))
        .await?;
    dir.add_policy(&policy("cli-default", |p| p.is_default = true))
        .await?;
    // A declaration may not take over a CLI-made name.
    let clash = dir
        .apply_declarations(&[rule("office", &["10.0.0.0/8"], RuleScope::Everyone)], &[])
        .await;
    assert!(
        matches!(&clash, Err(Error::ManagedByCli(Item::IpRule(n))) if n == "office"),
        "{clash:?}"
    );
    // A declared default next to the CLI-made default is refused.
    let mut d: PolicyDecl = toml::from_str("name = \"declared\"\ndefault = true\n")?;
    let two = dir.apply_declarations(&[], &[d.clone()]).await;
    assert!(
        matches!(two, Err(Error::Policy(policy::Error::TwoDefaults { .. }))),
        "{two:?}"
    );
    d.default = false;
    dir.apply_declarations(&[], &[d]).await?;
    // The CLI cannot change declared items...
    assert!(matches!(
        dir.remove_policy("declared").await,
        Err(Error::ManagedByConfig(Item::Policy(_)))
    ));
    assert!(matches!(
        dir.update_policy(&policy("declared", |p| p.mfa_required = true))
            .await,
        Err(Error::ManagedByConfig(Item::Policy(_)))
    ));
    // ...but may assign them, and that assignment survives a re-apply.
    dir.assign_policy(&assign("declared", AssignmentTarget::User("bob".into()), 0))
        .await?;
    let d: PolicyDecl = toml::from_str("name = \"declared\"\nsession_idle_secs = 600\n")?;
    dir.apply_declarations(&[], &[d]).await?;
    let set = dir.load_policy_set().await?;
    let bob = dir.subject_of("bob").await?.ok_or("bob exists")?;
    let (p, _) = set.effective_policy(&bob);
    assert_eq!((p.name.as_str(), p.session_idle_secs), ("declared", 600));
    // CLI-made items are untouched by declarations.
    assert!(dir.get_ip_rule("office").await?.is_some());
    dir.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// The binary: `tessera policy explain` and the lockout refusal.

/// Runs the tessera binary with `args` against the configuration file `config`.
fn tessera(config: &std::path::Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
}

#[tokio::test]
async fn cli_explain_and_lockout_refusal() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let backend = Backend::Sqlite(tempfile::tempdir()?);
    let config = tmp.path().join("tessera.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\ndemo = false\ndata_dir = \"{}\"\n",
            backend.url(),
            tmp.path().display()
        ),
    )?;
    let dir = populated(&backend).await?;
    dir.add_ip_rule(&rule(
        "office",
        &["192.0.2.0/24"],
        RuleScope::Groups(names(&["finance"])),
    ))
    .await?;
    dir.set_sp_access(
        "https://payroll.example/",
        &SpRequirement {
            ip_ranges: None,
            min: Some(Requirement {
                mfa: true,
                mfa_within_secs: Some(3600),
            }),
        },
    )
    .await?;
    dir.close().await;

    let out = tessera(
        &config,
        &[
            "policy",
            "explain",
            "--user",
            "alice",
            "--ip",
            "203.0.113.7",
            "--sp",
            "https://payroll.example/",
        ],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("decision: deny"), "{stdout}");
    assert!(
        stdout.contains("ip rule \"office\" (applies via group finance)"),
        "{stdout}"
    );

    let out = tessera(
        &config,
        &[
            "policy",
            "explain",
            "--user",
            "alice",
            "--ip",
            "192.0.2.7",
            "--sp",
            "https://payroll.example/",
        ],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "decision: deny: this app requires MFA within the last hour; the session has: password"
        ),
        "{stdout}"
    );

    // An everyone-rule that leaves root's address out is refused, then applied with --confirm.
    let add = [
        "ip-rule",
        "add",
        "lab",
        "--range",
        "10.0.0.0/8",
        "--everyone",
        "--admin",
        "root",
        "--admin-ip",
        "203.0.113.9",
    ];
    let out = tessera(&config, &add)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("would lock root out from 203.0.113.9"),
        "{stderr}"
    );
    let dir = backend.directory().await?;
    assert!(dir.get_ip_rule("lab").await?.is_none(), "nothing applied");
    dir.close().await;
    let out = tessera(&config, &[&add[..], &["--confirm"][..]].concat())?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = backend.directory().await?;
    assert!(dir.get_ip_rule("lab").await?.is_some());
    dir.close().await;

    // Bad input is refused with a clear error.
    let out = tessera(
        &config,
        &[
            "ip-rule",
            "add",
            "bad",
            "--range",
            "10.0.0.1/8",
            "--everyone",
        ],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("has host bits set; the network is 10.0.0.0/8"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn the_documented_explain_output_is_what_explain_prints() -> TestResult {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/access-policy.md"
    ))?;
    let start = doc
        .find("```text\ndecision:")
        .ok_or("no explain example in docs/access-policy.md")?
        + "```text\n".len();
    let end = start
        + doc[start..]
            .find("```")
            .ok_or("unterminated explain example")?;
    let documented = &doc[start..end];

    // The state the commands of the "Managing" section build.
    let payroll = "https://payroll.example/";
    let set = build(PolicyData {
        ip_rules: vec![rule(
            "office",
            &["192.0.2.0/24", "2001:db8:10::/48"],
            RuleScope::Roles(names(&["admin"])),
        )],
        policies: vec![
            policy("admin", |p| {
                p.mfa_required = true;
                p.mfa_methods = vec![MfaMethod::WebAuthn, MfaMethod::Totp];
                p.reauth_interval_secs = Some(3600);
                p.session_absolute_secs = 28_800;
                p.session_idle_secs = 900;
                p.password_min_length = 14;
            }),
            policy("standard", |p| p.is_default = true),
        ],
        assignments: vec![assign("admin", AssignmentTarget::Role("admin".into()), 100)],
        sp_requirements: BTreeMap::from([(
            payroll.to_owned(),
            SpRequirement {
                ip_ranges: Some(ranges(&["10.0.0.0/8"])),
                min: Some(Requirement {
                    mfa: true,
                    mfa_within_secs: Some(3600),
                }),
            },
        )]),
    });
    let alice = subject("alice", &["finance"], &["admin"]);
    let fresh = SessionFacts::fresh(vec![AuthnMethod::Password], NOW);
    let decision = set.decide(&AccessRequest {
        subject: &alice,
        ip: ip("203.0.113.7"),
        sp: Some(payroll),
        session: Some(&fresh),
        mfa_available: &[],
        now: NOW,
    });
    assert_eq!(decision.to_string(), documented);
    Ok(())
}
