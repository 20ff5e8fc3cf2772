//! Conditional app assignment speed and memory: 10,000 rules over 500 departments, 5,000 groups, 100
//! roles, 200 offices and 1,000 SPs (any-of, all-of, OR of ANDs, one-of values, 5% disabled), and
//! 100,000 users with a department, an office, 3-10 groups and 1-3 roles.
//!
//! Run with `cargo bench --bench assignment_rules` (`-- --quick` for 10,000 users). Prints the time to
//! compile the rule set and the memory it takes, the time per user to compute all their apps (the
//! /apps portal) and to check one SP (the SSO path), and, for scale, the same without the index
//! (every rule's condition evaluated for the user).

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use tessera::policy::{AssignmentRule, Clause, Condition, Predicate, RuleSet, UserFacts};

/// Rules in the set.
const RULES: usize = 10_000;
/// Users evaluated (a tenth with `--quick`).
const USERS: usize = 100_000;
const DEPARTMENTS: usize = 500;
const GROUPS: usize = 5_000;
const ROLES: usize = 100;
const OFFICES: usize = 200;
const SPS: usize = 1_000;
/// Users evaluated against every rule without the index.
const NAIVE_USERS: usize = 1_000;

fn department(i: usize) -> String {
    format!("Dept-{i}")
}

fn attr(name: &str, values: Vec<String>) -> Predicate {
    Predicate::Attribute {
        name: name.to_owned(),
        values,
    }
}

/// One random rule.
fn random_rule(rng: &mut StdRng, i: usize) -> AssignmentRule {
    let dept = |rng: &mut StdRng| department(rng.gen_range(0..DEPARTMENTS));
    let group = |rng: &mut StdRng| Predicate::Group(format!("group-{}", rng.gen_range(0..GROUPS)));
    let role = |rng: &mut StdRng| Predicate::Role(format!("role-{}", rng.gen_range(0..ROLES)));
    let office = |rng: &mut StdRng| format!("office-{}", rng.gen_range(0..OFFICES));
    let condition = match rng.gen_range(0..100) {
        // department one of 1-3 values
        0..=29 => {
            let n = rng.gen_range(1..=3);
            Condition::all(vec![attr(
                "department",
                (0..n).map(|_| dept(rng)).collect(),
            )])
        }
        // a group, or a group OR a department
        30..=59 => {
            if rng.gen_bool(0.5) {
                Condition::any(vec![group(rng)])
            } else {
                Condition::any(vec![group(rng), attr("department", vec![dept(rng)])])
            }
        }
        // all-of: department and role
        60..=74 => Condition::all(vec![attr("department", vec![dept(rng)]), role(rng)]),
        // OR of ANDs: (group and role) or office one-of
        75..=89 => Condition {
            any: vec![
                Clause {
                    all: vec![group(rng), role(rng)],
                },
                Clause {
                    all: vec![attr("office", vec![office(rng), office(rng)])],
                },
            ],
        },
        // all-of: office and group
        _ => Condition::all(vec![attr("office", vec![office(rng)]), group(rng)]),
    };
    let n = rng.gen_range(1..=3);
    let mut targets: Vec<String> = (0..n)
        .map(|_| format!("https://sp-{}.example/metadata", rng.gen_range(0..SPS)))
        .collect();
    targets.sort();
    targets.dedup();
    AssignmentRule {
        name: format!("rule-{i}"),
        condition,
        targets,
        enabled: rng.gen_range(0..100) >= 5,
    }
}

/// One random user's facts, as `Directory::user_facts` builds them (built-in attributes included).
fn random_user(rng: &mut StdRng, i: usize) -> UserFacts {
    let attributes = [
        ("username".to_owned(), vec![format!("user{i}")]),
        ("email".to_owned(), vec![format!("user{i}@example.org")]),
        ("status".to_owned(), vec!["active".to_owned()]),
        (
            "department".to_owned(),
            vec![department(rng.gen_range(0..DEPARTMENTS))],
        ),
        (
            "office".to_owned(),
            vec![format!("office-{}", rng.gen_range(0..OFFICES))],
        ),
    ];
    let groups: Vec<String> = (0..rng.gen_range(3..=10))
        .map(|_| format!("group-{}", rng.gen_range(0..GROUPS)))
        .collect();
    let roles: Vec<String> = (0..rng.gen_range(1..=3))
        .map(|_| format!("role-{}", rng.gen_range(0..ROLES)))
        .collect();
    UserFacts::new(
        attributes.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        groups,
        roles,
    )
}

/// Resident memory of this process in bytes (Linux), for the set's real footprint.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let users = if quick { USERS / 10 } else { USERS };
    let mut rng = StdRng::seed_from_u64(6);
    let rules: Vec<AssignmentRule> = (0..RULES).map(|i| random_rule(&mut rng, i)).collect();

    let rss_before = rss_bytes();
    let start = Instant::now();
    let set = RuleSet::build(&rules, 1)?;
    let compile = start.elapsed();
    let rss_after = rss_bytes();
    let (total, enabled) = set.rule_counts();

    let start = Instant::now();
    let people: Vec<UserFacts> = (0..users).map(|i| random_user(&mut rng, i)).collect();
    let facts_time = start.elapsed();

    // All apps of every user (the portal).
    let mut granted = 0usize;
    let mut worst = Duration::ZERO;
    let mut samples = Vec::with_capacity(users);
    let start = Instant::now();
    for person in &people {
        let t = Instant::now();
        let apps = black_box(set.grants(black_box(person)));
        let took = t.elapsed();
        samples.push(took);
        worst = worst.max(took);
        granted += apps.len();
    }
    let all_apps = start.elapsed();
    samples.sort_unstable();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };

    // One SP per user (the SSO path): an SP the rules name, granted or not.
    let sps: Vec<String> = (0..users)
        .map(|_| format!("https://sp-{}.example/metadata", rng.gen_range(0..SPS)))
        .collect();
    let mut hits = 0usize;
    let start = Instant::now();
    for (person, sp) in people.iter().zip(&sps) {
        if black_box(set.grant_for(black_box(person), sp)).is_some() {
            hits += 1;
        }
    }
    let one_sp = start.elapsed();

    // Without the index: every enabled rule's condition, for a sample of users.
    let mut sample: Vec<&UserFacts> = people.iter().take(NAIVE_USERS).collect();
    sample.shuffle(&mut rng);
    let mut naive_granted = 0usize;
    let start = Instant::now();
    for person in &sample {
        let mut apps: Vec<&str> = rules
            .iter()
            .filter(|r| r.enabled && r.condition.matches(person))
            .flat_map(|r| r.targets.iter().map(String::as_str))
            .collect();
        apps.sort_unstable();
        apps.dedup();
        naive_granted += black_box(apps).len();
    }
    let naive = start.elapsed();
    let indexed_sample: usize = sample.iter().map(|p| set.grants(p).len()).sum();
    assert_eq!(
        indexed_sample, naive_granted,
        "the index disagrees with the rules"
    );

    println!("assignment rules: {total} rules ({enabled} enabled), {users} users, {SPS} SPs");
    println!(
        "  compile the rule set:         {:>9.1} ms",
        ns(compile) / 1e6
    );
    println!(
        "  memory of the set:            {:>9.2} MiB estimated{}",
        set.approx_heap_bytes() as f64 / (1024.0 * 1024.0),
        match (rss_before, rss_after) {
            (Some(b), Some(a)) => format!(
                ", {:.2} MiB resident growth",
                a.saturating_sub(b) as f64 / (1024.0 * 1024.0)
            ),
            _ => String::new(),
        }
    );
    println!(
        "  build one user's facts:       {:>9.0} ns per user",
        ns(facts_time) / users as f64
    );
    println!(
        "  all apps of a user (/apps):   {:>9.0} ns per user  (p50 {:.0} ns, p99 {:.0} ns, max {:.0} us)",
        ns(all_apps) / users as f64,
        ns(pct(0.50)),
        ns(pct(0.99)),
        ns(worst) / 1e3
    );
    println!(
        "  one SP for a user (SSO):      {:>9.0} ns per check ({:.1}% granted)",
        ns(one_sp) / users as f64,
        100.0 * hits as f64 / users as f64
    );
    println!(
        "  apps per user:                {:>9.2} on average",
        granted as f64 / users as f64
    );
    println!(
        "  without the index:            {:>9.0} ns per user ({} users, every rule evaluated)",
        ns(naive) / sample.len() as f64,
        sample.len()
    );
    Ok(())
}
