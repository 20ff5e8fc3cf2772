//! Dashboard query times over a year of login events in SQLite (issue #7: under 500 ms each).
//!
//! Seeds `LOGIN_EVENTS` events (default 1,000,000; `--quick`: 50,000) spread over 365 days into a
//! fresh SQLite file with the real migrations, then times every dashboard query once warm and prints
//! the milliseconds. Not part of CI:
//!
//!     cargo bench --bench login_events            # full size, release build
//!     cargo bench --bench login_events -- --quick
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use tessera::directory::Directory;
use tessera::events::query::{export_csv, Bucket, Dimension, EventFilter};
use tessera::events::Outcome;

/// Seeds `events` rows spread over the year before `now_ms`, generated inside SQLite by one
/// `INSERT ... SELECT` over a recursive counter per chunk of 100,000, all in one transaction: binding a
/// million rows one by one would measure the driver, not the queries. The mix: 70 % successes, 15 %
/// wrong passwords, 5 % unknown users, the rest spread over the refusals; 5,000 users, 200,000
/// addresses, 20 SPs on half the events, 12 countries, 5 browsers, 5 systems, 3 device classes.
async fn seed(url: &str, events: u64, now_ms: i64) {
    use sqlx::Connection;
    let year_ms = 365 * 86_400_000i64;
    let step = (year_ms / events as i64).max(1);
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let chunk = 100_000u64;
    let mut first = 0u64;
    while first < events {
        let last = (first + chunk).min(events);
        let sql = format!(
            "WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {last}), \
             r AS (SELECT i, abs(random()) AS a, abs(random()) AS b, abs(random()) AS c FROM n) \
             INSERT INTO login_events (id, at, kind, username, user_id, ip, ip_hex, sp, outcome, reason, \
                 country, city, browser, os, device, user_agent, new_country, new_device) \
             SELECT i + 1, {start} + i * {step}, CASE WHEN a % 2 = 0 THEN 'sso' ELSE 'sign_in' END, \
                 'user' || (b % 5000), (b % 5000) + 1, \
                 '10.' || ((c % 200000) / 65536) || '.' || ((c % 200000) / 256 % 256) || '.' || (c % 256), \
                 printf('00000000000000000000ffff0a%06x', c % 200000), \
                 CASE WHEN a % 2 = 0 THEN 'https://app' || (a / 2 % 20) || '.example' END, \
                 CASE WHEN b / 5000 % 100 < 70 THEN 'success' WHEN b / 5000 % 100 < 85 THEN 'wrong_password' \
                      WHEN b / 5000 % 100 < 90 THEN 'unknown_user' WHEN b / 5000 % 100 < 93 THEN 'ip_denied' \
                      WHEN b / 5000 % 100 < 95 THEN 'mfa_failed' WHEN b / 5000 % 100 < 97 THEN 'locked_out' \
                      WHEN b / 5000 % 100 < 98 THEN 'app_not_assigned' WHEN b / 5000 % 100 < 99 THEN 'policy_not_met' \
                      ELSE 'request_invalid' END, \
                 'seeded', \
                 CASE c / 200000 % 12 WHEN 0 THEN 'FR' WHEN 1 THEN 'US' WHEN 2 THEN 'DE' WHEN 3 THEN 'GB' \
                      WHEN 4 THEN 'NL' WHEN 5 THEN 'ES' WHEN 6 THEN 'IT' WHEN 7 THEN 'BE' WHEN 8 THEN 'CH' \
                      WHEN 9 THEN 'CA' WHEN 10 THEN 'private' ELSE 'loopback' END, \
                 'Somewhere', \
                 CASE a / 40 % 5 WHEN 0 THEN 'Chrome' WHEN 1 THEN 'Firefox' WHEN 2 THEN 'Safari' \
                      WHEN 3 THEN 'Edge' ELSE 'Opera' END, \
                 CASE a / 200 % 5 WHEN 0 THEN 'Windows 10' WHEN 1 THEN 'Mac OSX' WHEN 2 THEN 'Linux' \
                      WHEN 3 THEN 'iPhone' ELSE 'Android' END, \
                 CASE a / 1000 % 3 WHEN 0 THEN 'desktop' WHEN 1 THEN 'mobile' ELSE 'phone' END, \
                 'Mozilla/5.0 (seeded)', 0, 0 \
             FROM r",
            start = now_ms - year_ms,
        );
        sqlx::query(&sql).execute(&mut *tx).await.unwrap();
        first = last;
    }
    tx.commit().await.unwrap();
    // What a long-running server's SQLite would have: statistics for the planner.
    sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
}

macro_rules! timed {
    ($results:ident, $name:expr, $body:expr) => {{
        // Once to warm the page cache, then measured.
        let _ = $body;
        let start = Instant::now();
        let out = $body;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        $results.push(($name.to_owned(), ms));
        out
    }};
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let events: u64 = std::env::var("LOGIN_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 50_000 } else { 1_000_000 });
    // LOGIN_EVENTS_DB=path keeps the database (seeded once) for a look with `sqlite3`.
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var("LOGIN_EVENTS_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("events.db"));
    let fresh = !path.exists();
    let url = format!("sqlite://{}", path.display());
    let directory = Directory::connect(&url).await.unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    if fresh {
        let start = Instant::now();
        seed(&url, events, now_ms).await;
        println!(
            "seeded {events} events in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }

    let day = 86_400_000i64;
    let year = EventFilter {
        from_ms: Some(now_ms - 365 * day),
        ..EventFilter::default()
    };
    let month = EventFilter {
        from_ms: Some(now_ms - 30 * day),
        ..EventFilter::default()
    };
    let week = EventFilter {
        from_ms: Some(now_ms - 7 * day),
        ..EventFilter::default()
    };
    let app_admin = EventFilter {
        visible_sps: Some(vec![
            "https://app1.example".into(),
            "https://app2.example".into(),
            "https://app3.example".into(),
        ]),
        ..month.clone()
    };
    let mut results: Vec<(String, f64)> = Vec::new();
    let d = &directory;
    timed!(
        results,
        "attempts per day, year",
        d.login_events_over_time(&year, Bucket::Day).await.unwrap()
    );
    timed!(
        results,
        "attempts per hour, week",
        d.login_events_over_time(&week, Bucket::Hour).await.unwrap()
    );
    timed!(
        results,
        "attempts per day, 30 days, app admin",
        d.login_events_over_time(&app_admin, Bucket::Day)
            .await
            .unwrap()
    );
    timed!(
        results,
        "top failing users, year",
        d.top_failing_users(&year, 20).await.unwrap()
    );
    timed!(
        results,
        "top failing users, 30 days",
        d.top_failing_users(&month, 20).await.unwrap()
    );
    timed!(
        results,
        "top denied addresses, year",
        d.top_denied_addresses(&year, 20).await.unwrap()
    );
    timed!(
        results,
        "top denied addresses, 30 days",
        d.top_denied_addresses(&month, 20).await.unwrap()
    );
    timed!(
        results,
        "countries, year",
        d.login_events_by(&year, Dimension::Country).await.unwrap()
    );
    timed!(
        results,
        "countries, 30 days",
        d.login_events_by(&month, Dimension::Country).await.unwrap()
    );
    timed!(
        results,
        "browsers, 30 days",
        d.login_events_by(&month, Dimension::Browser).await.unwrap()
    );
    timed!(
        results,
        "devices, 30 days",
        d.login_events_by(&month, Dimension::Device).await.unwrap()
    );
    timed!(
        results,
        "latest 100",
        d.latest_login_events(&EventFilter::default(), 100)
            .await
            .unwrap()
    );
    timed!(
        results,
        "latest 100 of a user",
        d.latest_login_events(
            &EventFilter {
                username: Some("user42".into()),
                ..EventFilter::default()
            },
            100
        )
        .await
        .unwrap()
    );
    timed!(
        results,
        "latest 100 wrong passwords, 30 days",
        d.latest_login_events(
            &EventFilter {
                outcomes: vec![Outcome::WrongPassword],
                ..month.clone()
            },
            100
        )
        .await
        .unwrap()
    );
    timed!(
        results,
        "latest 100 in 10.0.0.0/16",
        d.latest_login_events(
            &EventFilter {
                address: Some("10.0.0.0/16".parse().unwrap()),
                ..EventFilter::default()
            },
            100
        )
        .await
        .unwrap()
    );
    timed!(
        results,
        "latest 100 of an SP from FR",
        d.latest_login_events(
            &EventFilter {
                sp: Some("https://app7.example".into()),
                country: Some("FR".into()),
                ..EventFilter::default()
            },
            100
        )
        .await
        .unwrap()
    );
    timed!(
        results,
        "latest 100, app admin",
        d.latest_login_events(&app_admin, 100).await.unwrap()
    );
    timed!(
        results,
        "CSV export of 10000, 30 days",
        export_csv(d, &month, 10_000).await.unwrap()
    );

    println!("{:<45} {:>10}", "query", "ms");
    let mut worst: f64 = 0.0;
    for (name, ms) in &results {
        worst = worst.max(*ms);
        println!("{name:<45} {ms:>10.1}");
    }
    println!("slowest: {worst:.1} ms (target: under 500 ms each)");
}
