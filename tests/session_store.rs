//! The session store: one conformance suite run against the memory store and against Redis, plus
//! Redis-only checks (what the keys hold, TTLs, corrupt records, outage and recovery).
//!
//! Redis tests use REDIS_URL when set, else one throwaway redis-server for this process; each test
//! keeps its keys under its own prefix. Expiry is tested with real sub-3-second timeouts so the very
//! same code runs against both stores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::{free_port, redis_url, unique_prefix, RedisServer};
use redis::AsyncCommands;
use tessera::session::{
    AuthnMethod, Error, MemoryStore, RedisStore, Session, SessionId, SessionKey, SessionStore,
    SpSession,
};
use tokio::task::JoinSet;

/// A user id above 2^53: catches any code path that squeezes ids through a double (Lua numbers).
const BIG_USER_ID: i64 = 9_007_199_254_740_993;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn sp(n: u32) -> SpSession {
    SpSession {
        sp_entity_id: format!("https://sp{n}.example.org/saml"),
        session_index: format!("_idx{n}"),
        name_id: format!("user{n}@example.org"),
        name_id_format: "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".to_owned(),
    }
}

fn sample(user_id: i64) -> Session {
    let mut s = Session::new(
        user_id,
        "alice",
        vec![AuthnMethod::Password, AuthnMethod::Totp],
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
        "Mozilla/5.0 (X11; Linux x86_64) \"quoted\" ünïcode",
        1_700_000_000,
    );
    s.sp_sessions.push(sp(0));
    s
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn sleep_until(start: Instant, ms: u64) {
    tokio::time::sleep_until((start + Duration::from_millis(ms)).into()).await;
}

// ---------------------------------------------------------------------------------------------
// The conformance suite: each function runs against both stores (see `conformance!` below).
// ---------------------------------------------------------------------------------------------

async fn conformance_create_then_get_round_trips(store: Arc<dyn SessionStore>) {
    let mut session = sample(BIG_USER_ID);
    session.last_seen = 0;
    let before = unix_now();
    let id = store.create(&session, MINUTE, HOUR).await.unwrap();
    let after = unix_now();

    // The cookie value parses back to the same id, and the store finds the session by it.
    let parsed = SessionId::from_cookie(&id.to_cookie()).unwrap();
    let got = store.get(&parsed).await.unwrap().expect("session missing");
    assert!(
        (before..=after + 1).contains(&got.last_seen),
        "last_seen {} not set to now",
        got.last_seen
    );
    let mut expected = session.clone();
    expected.last_seen = got.last_seen;
    assert_eq!(got, expected);

    // A different id finds nothing.
    let other = SessionId::generate().unwrap();
    assert!(store.get(&other).await.unwrap().is_none());
}

async fn conformance_update_replaces_the_session(store: Arc<dyn SessionStore>) {
    let id = store.create(&sample(7), MINUTE, HOUR).await.unwrap();
    let mut stepped_up = store.get(&id).await.unwrap().unwrap();
    stepped_up.authn_methods = vec![AuthnMethod::Password, AuthnMethod::WebAuthn];
    stepped_up.authn_instant += 100;
    stepped_up.sp_sessions.push(sp(1));
    assert!(store.update(&id, &stepped_up).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.authn_methods, stepped_up.authn_methods);
    assert_eq!(got.authn_instant, stepped_up.authn_instant);
    assert_eq!(got.sp_sessions, vec![sp(0), sp(1)]);

    // Moving a session to another user is refused and changes nothing.
    let mut hijack = got.clone();
    hijack.user_id = 8;
    hijack.username = "mallory".to_owned();
    assert!(matches!(
        store.update(&id, &hijack).await,
        Err(Error::UserChanged)
    ));
    assert_eq!(store.get(&id).await.unwrap().unwrap().username, "alice");
    assert!(store.list_user_sessions(8).await.unwrap().is_empty());

    // No session, nothing to update.
    let unknown = SessionId::generate().unwrap();
    assert!(!store.update(&unknown, &got).await.unwrap());
    assert!(store.get(&unknown).await.unwrap().is_none());
}

async fn conformance_add_sp_session_appends_once(store: Arc<dyn SessionStore>) {
    let id = store.create(&sample(7), MINUTE, HOUR).await.unwrap();
    let tricky = SpSession {
        sp_entity_id: "urn:x:\"quoted\"/slash\\back".to_owned(),
        session_index: "_ünï".to_owned(),
        name_id: "{\"sp_entity_id\":\"fake\"}".to_owned(),
        name_id_format: "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".to_owned(),
    };
    assert!(store.add_sp_session(&id, &sp(1)).await.unwrap());
    assert!(store.add_sp_session(&id, &tricky).await.unwrap());
    assert!(store.add_sp_session(&id, &sp(1)).await.unwrap());
    assert!(store.add_sp_session(&id, &sp(0)).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.sp_sessions, vec![sp(0), sp(1), tricky.clone()]);

    // Same SP, new session index: a distinct entry, single logout needs both.
    let mut again = sp(1);
    again.session_index = "_idx1-second".to_owned();
    assert!(store.add_sp_session(&id, &again).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.sp_sessions, vec![sp(0), sp(1), tricky, again]);

    assert!(!store
        .add_sp_session(&SessionId::generate().unwrap(), &sp(1))
        .await
        .unwrap());
}

async fn conformance_add_sp_session_is_atomic(store: Arc<dyn SessionStore>) {
    let mut session = sample(7);
    session.sp_sessions.clear();
    let id = store.create(&session, MINUTE, HOUR).await.unwrap();
    let mut tasks = JoinSet::new();
    for n in 1..=20 {
        let (store, id) = (store.clone(), id.clone());
        tasks.spawn(async move { store.add_sp_session(&id, &sp(n)).await.unwrap() });
    }
    while let Some(added) = tasks.join_next().await {
        assert!(added.unwrap());
    }
    let got = store.get(&id).await.unwrap().unwrap();
    let reached: BTreeSet<String> = got
        .sp_sessions
        .into_iter()
        .map(|s| s.sp_entity_id)
        .collect();
    let expected: BTreeSet<String> = (1..=20).map(|n| sp(n).sp_entity_id).collect();
    assert_eq!(reached, expected);
}

async fn conformance_delete_ends_the_session(store: Arc<dyn SessionStore>) {
    let id = store.create(&sample(7), MINUTE, HOUR).await.unwrap();
    let keep = store.create(&sample(7), MINUTE, HOUR).await.unwrap();
    assert!(store.delete(&id).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(!store.delete(&id).await.unwrap());
    assert!(!store.update(&id, &sample(7)).await.unwrap());
    let listed: Vec<SessionKey> = store
        .list_user_sessions(7)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(listed, vec![keep.key()]);
}

async fn conformance_idle_timeout_ends_untouched_sessions(store: Arc<dyn SessionStore>) {
    let idle = Duration::from_millis(1500);
    let start = Instant::now();
    let touched = store.create(&sample(7), idle, HOUR).await.unwrap();
    let untouched = store.create(&sample(7), idle, HOUR).await.unwrap();
    sleep_until(start, 700).await;
    assert!(store.get(&touched).await.unwrap().is_some());
    sleep_until(start, 1700).await;
    // 1.7 s after creation: the untouched one is past its idle timeout; the touched one was used
    // 1.0 s ago, so it lives on.
    assert!(store.get(&untouched).await.unwrap().is_none());
    assert!(store.get(&touched).await.unwrap().is_some());
    let listed = store.list_user_sessions(7).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, touched.key());
    tokio::time::sleep(idle + Duration::from_millis(300)).await;
    assert!(store.get(&touched).await.unwrap().is_none());
    assert!(store.list_user_sessions(7).await.unwrap().is_empty());
}

async fn conformance_absolute_lifetime_caps_touches(store: Arc<dyn SessionStore>) {
    let start = Instant::now();
    let id = store
        .create(
            &sample(7),
            Duration::from_millis(1200),
            Duration::from_millis(2000),
        )
        .await
        .unwrap();
    for at in [500, 1000, 1500] {
        sleep_until(start, at).await;
        assert!(
            store.get(&id).await.unwrap().is_some(),
            "touch at {at} ms failed"
        );
    }
    // 1.5 s is past the idle timeout: the touches kept it alive. At 2.3 s it was touched 0.8 s
    // ago (< idle) but the absolute 2 s lifetime is over.
    sleep_until(start, 2300).await;
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(store.list_user_sessions(7).await.unwrap().is_empty());
}

async fn conformance_lists_and_ends_sessions_of_a_user(store: Arc<dyn SessionStore>) {
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(store.create(&sample(1), MINUTE, HOUR).await.unwrap());
    }
    let theirs = store.create(&sample(2), MINUTE, HOUR).await.unwrap();

    let listed = store.list_user_sessions(1).await.unwrap();
    let mut keys: Vec<SessionKey> = mine.iter().map(SessionId::key).collect();
    keys.sort();
    assert_eq!(
        listed.iter().map(|s| s.key.clone()).collect::<Vec<_>>(),
        keys
    );
    assert!(listed.iter().all(|s| s.session.user_id == 1));
    assert_eq!(listed[0].session.sp_sessions, vec![sp(0)]);

    // Another user's key cannot end my session.
    assert!(!store.delete_for_user(2, &mine[0].key()).await.unwrap());
    assert!(store.get(&mine[0]).await.unwrap().is_some());
    assert!(store.delete_for_user(1, &mine[0].key()).await.unwrap());
    assert!(store.get(&mine[0]).await.unwrap().is_none());
    assert_eq!(store.list_user_sessions(1).await.unwrap().len(), 2);

    // Deactivation ends the rest at once, and nobody else's.
    assert_eq!(store.delete_user_sessions(1).await.unwrap(), 2);
    for id in &mine {
        assert!(store.get(id).await.unwrap().is_none());
    }
    assert!(store.list_user_sessions(1).await.unwrap().is_empty());
    assert_eq!(store.delete_user_sessions(1).await.unwrap(), 0);
    assert!(store.get(&theirs).await.unwrap().is_some());
    assert_eq!(store.list_user_sessions(2).await.unwrap().len(), 1);

    // A user can sign in again after deactivation was lifted.
    let fresh = store.create(&sample(1), MINUTE, HOUR).await.unwrap();
    assert_eq!(
        store.list_user_sessions(1).await.unwrap()[0].key,
        fresh.key()
    );
}

async fn conformance_list_does_not_touch(store: Arc<dyn SessionStore>) {
    let start = Instant::now();
    let id = store
        .create(&sample(3), Duration::from_millis(1000), HOUR)
        .await
        .unwrap();
    for at in [300, 600, 900] {
        sleep_until(start, at).await;
        assert_eq!(store.list_user_sessions(3).await.unwrap().len(), 1);
    }
    sleep_until(start, 1400).await;
    assert!(store.get(&id).await.unwrap().is_none());
}

async fn conformance_remember_once_is_true_only_the_first_time(store: Arc<dyn SessionStore>) {
    assert!(store
        .remember_once("authn-request", "_id1", MINUTE)
        .await
        .unwrap());
    assert!(!store
        .remember_once("authn-request", "_id1", MINUTE)
        .await
        .unwrap());
    assert!(store
        .remember_once("authn-request", "_id2", MINUTE)
        .await
        .unwrap());
    // Namespaces are separate replay caches.
    assert!(store.remember_once("totp", "_id1", MINUTE).await.unwrap());
    // Long attacker-chosen keys are fine (stored hashed).
    let long = "x".repeat(100_000);
    assert!(store.remember_once("totp", &long, MINUTE).await.unwrap());
    assert!(!store.remember_once("totp", &long, MINUTE).await.unwrap());

    // After the ttl the marker is gone.
    let short = Duration::from_millis(300);
    assert!(store.remember_once("totp", "123456", short).await.unwrap());
    assert!(!store.remember_once("totp", "123456", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(store.remember_once("totp", "123456", short).await.unwrap());

    for bad in ["", "Upper", "a:b", "a*"] {
        assert!(matches!(
            store.remember_once(bad, "k", MINUTE).await,
            Err(Error::InvalidNamespace(ns)) if ns == bad
        ));
    }
    assert!(matches!(
        store.remember_once("totp", "k", Duration::ZERO).await,
        Err(Error::InvalidDuration("ttl"))
    ));
}

async fn conformance_remember_once_concurrent_has_one_winner(store: Arc<dyn SessionStore>) {
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .remember_once("authn-request", "_same", MINUTE)
                .await
                .unwrap()
        });
    }
    let mut winners = 0;
    while let Some(first) = tasks.join_next().await {
        winners += usize::from(first.unwrap());
    }
    assert_eq!(winners, 1);
}

async fn conformance_counter_counts_and_resets(store: Arc<dyn SessionStore>) {
    for expected in 1..=3 {
        assert_eq!(
            store.incr_counter("login:alice", MINUTE).await.unwrap(),
            expected
        );
    }
    assert_eq!(store.incr_counter("login:bob", MINUTE).await.unwrap(), 1);
    store.reset_counter("login:alice").await.unwrap();
    store.reset_counter("never-used").await.unwrap();
    assert_eq!(store.incr_counter("login:alice", MINUTE).await.unwrap(), 1);
    assert_eq!(store.incr_counter("login:bob", MINUTE).await.unwrap(), 2);

    // The window starts at the first increment; later increments do not extend it.
    let window = Duration::from_millis(800);
    let start = Instant::now();
    assert_eq!(store.incr_counter("ip:192.0.2.1", window).await.unwrap(), 1);
    sleep_until(start, 500).await;
    assert_eq!(store.incr_counter("ip:192.0.2.1", window).await.unwrap(), 2);
    sleep_until(start, 1100).await;
    assert_eq!(store.incr_counter("ip:192.0.2.1", window).await.unwrap(), 1);

    assert!(matches!(
        store.incr_counter("k", Duration::ZERO).await,
        Err(Error::InvalidDuration("window"))
    ));
}

async fn conformance_counter_concurrent_increments_all_count(store: Arc<dyn SessionStore>) {
    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let store = store.clone();
        tasks.spawn(async move { store.incr_counter("login:carol", MINUTE).await.unwrap() });
    }
    let mut seen = BTreeSet::new();
    while let Some(value) = tasks.join_next().await {
        seen.insert(value.unwrap());
    }
    // Every increment saw a distinct value: none was lost or doubled.
    assert_eq!(seen, (1..=100).collect::<BTreeSet<u64>>());
    assert_eq!(
        store.incr_counter("login:carol", MINUTE).await.unwrap(),
        101
    );
}

async fn conformance_bad_durations_are_rejected(store: Arc<dyn SessionStore>) {
    assert!(matches!(
        store.create(&sample(7), Duration::ZERO, HOUR).await,
        Err(Error::InvalidDuration("idle"))
    ));
    assert!(matches!(
        store.create(&sample(7), MINUTE, Duration::ZERO).await,
        Err(Error::InvalidDuration("absolute"))
    ));
    assert!(matches!(
        store
            .create(&sample(7), MINUTE, Duration::from_secs(200 * 365 * 86_400))
            .await,
        Err(Error::InvalidDuration("absolute"))
    ));
    assert!(store.list_user_sessions(7).await.unwrap().is_empty());
}

async fn conformance_temp_values_expire_and_delete(store: Arc<dyn SessionStore>) {
    let ttl = Duration::from_millis(600);
    let start = Instant::now();
    store
        .put_temp("pending", "h1", "{\"a\":1}", ttl)
        .await
        .unwrap();
    store
        .put_temp("pending", "h2", "two", MINUTE)
        .await
        .unwrap();
    assert_eq!(
        store.get_temp("pending", "h1").await.unwrap().as_deref(),
        Some("{\"a\":1}")
    );
    assert_eq!(store.get_temp("other", "h1").await.unwrap(), None);
    store.delete_temp("pending", "h2").await.unwrap();
    assert_eq!(store.get_temp("pending", "h2").await.unwrap(), None);
    sleep_until(start, 900).await;
    assert_eq!(store.get_temp("pending", "h1").await.unwrap(), None);
    assert!(matches!(
        store.put_temp("Bad NS", "k", "v", MINUTE).await,
        Err(Error::InvalidNamespace(_))
    ));
}

fn memory() -> Arc<dyn SessionStore> {
    Arc::new(MemoryStore::new())
}

async fn redis_store(tag: &str) -> RedisStore {
    RedisStore::connect(&redis_url().await, &unique_prefix(tag))
        .await
        .unwrap()
}

async fn redis(tag: &str) -> Arc<dyn SessionStore> {
    Arc::new(redis_store(tag).await)
}

/// Generates one test per conformance function and store.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::memory()).await;
                }
            )+
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::redis(stringify!($name)).await).await;
                }
            )+
        }
    };
}

conformance!(
    conformance_create_then_get_round_trips,
    conformance_update_replaces_the_session,
    conformance_add_sp_session_appends_once,
    conformance_add_sp_session_is_atomic,
    conformance_delete_ends_the_session,
    conformance_idle_timeout_ends_untouched_sessions,
    conformance_absolute_lifetime_caps_touches,
    conformance_lists_and_ends_sessions_of_a_user,
    conformance_list_does_not_touch,
    conformance_remember_once_is_true_only_the_first_time,
    conformance_remember_once_concurrent_has_one_winner,
    conformance_counter_counts_and_resets,
    conformance_counter_concurrent_increments_all_count,
    conformance_bad_durations_are_rejected,
    conformance_temp_values_expire_and_delete,
);

// ---------------------------------------------------------------------------------------------
// Redis only.
// ---------------------------------------------------------------------------------------------

async fn raw_redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys_under(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut iter: redis::AsyncIter<String> = conn.scan_match(format!("{prefix}*")).await.unwrap();
    while let Some(key) = iter.next_item().await {
        keys.push(key);
    }
    keys.sort();
    keys
}

#[tokio::test]
async fn redis_keys_and_values_hold_the_hash_not_the_cookie() {
    let url = redis_url().await;
    let store = RedisStore::connect(&url, &unique_prefix("hash-keys"))
        .await
        .unwrap();
    let id = store.create(&sample(5), MINUTE, HOUR).await.unwrap();
    let cookie = id.to_cookie();
    let mut conn = raw_redis(&url).await;

    let keys = keys_under(&mut conn, store.prefix()).await;
    assert_eq!(
        keys,
        vec![
            store.session_redis_key(&id.key()),
            format!("{}user-sessions:5", store.prefix()),
        ]
    );
    assert!(keys[0].ends_with(id.key().as_str()));
    for key in &keys {
        assert!(!key.contains(&cookie), "{key} holds the cookie");
    }
    let record: Vec<(String, String)> = conn.hgetall(&keys[0]).await.unwrap();
    assert!(!record.is_empty());
    for (field, value) in &record {
        assert!(!value.contains(&cookie), "field {field} holds the cookie");
    }
    let members: Vec<String> = conn.smembers(&keys[1]).await.unwrap();
    assert_eq!(members, vec![id.key().as_str().to_owned()]);
}

#[tokio::test]
async fn redis_ttl_is_the_smaller_of_idle_and_absolute() {
    let url = redis_url().await;
    let store = redis_store("ttl").await;
    let mut conn = raw_redis(&url).await;

    let idle_bound = store.create(&sample(5), MINUTE, HOUR).await.unwrap();
    let ttl: i64 = conn
        .pttl(store.session_redis_key(&idle_bound.key()))
        .await
        .unwrap();
    assert!((50_000..=60_000).contains(&ttl), "ttl {ttl}");

    let absolute_bound = store
        .create(&sample(5), MINUTE, Duration::from_secs(30))
        .await
        .unwrap();
    let ttl: i64 = conn
        .pttl(store.session_redis_key(&absolute_bound.key()))
        .await
        .unwrap();
    assert!((20_000..=30_000).contains(&ttl), "ttl {ttl}");

    // The user index lives as long as the longest absolute lifetime among its sessions.
    let index_ttl: i64 = conn
        .pttl(format!("{}user-sessions:5", store.prefix()))
        .await
        .unwrap();
    assert!(
        (3_500_000..=3_600_000).contains(&index_ttl),
        "index ttl {index_ttl}"
    );

    // Replay markers and counters carry their TTLs too.
    assert!(store.remember_once("ns", "k", MINUTE).await.unwrap());
    assert_eq!(store.incr_counter("c", MINUTE).await.unwrap(), 1);
    for key in keys_under(&mut conn, store.prefix()).await {
        let ttl: i64 = conn.pttl(&key).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn redis_touch_never_sets_ttl_past_the_absolute_deadline() {
    let url = redis_url().await;
    let store = redis_store("ttl-cap").await;
    let mut conn = raw_redis(&url).await;
    let start = Instant::now();
    let id = store
        .create(
            &sample(5),
            Duration::from_millis(2000),
            Duration::from_millis(2500),
        )
        .await
        .unwrap();
    sleep_until(start, 1000).await;
    assert!(store.get(&id).await.unwrap().is_some());
    let ttl: i64 = conn.pttl(store.session_redis_key(&id.key())).await.unwrap();
    // Without the cap the touch would have set 2000 ms; at least 1000 ms of the 2500 are gone.
    assert!(ttl > 0 && ttl <= 1500, "ttl {ttl}");
}

#[tokio::test]
async fn redis_corrupt_records_are_reported_not_panicked_on() {
    let url = redis_url().await;
    let store = redis_store("corrupt").await;
    let mut conn = raw_redis(&url).await;

    let bad_json = store.create(&sample(5), MINUTE, HOUR).await.unwrap();
    let key = store.session_redis_key(&bad_json.key());
    let () = conn.hset(&key, "session", "{not json").await.unwrap();
    assert!(matches!(store.get(&bad_json).await, Err(Error::Corrupt(_))));
    assert!(matches!(
        store.list_user_sessions(5).await,
        Err(Error::Corrupt(_))
    ));

    let missing_field = store.create(&sample(6), MINUTE, HOUR).await.unwrap();
    let key = store.session_redis_key(&missing_field.key());
    let () = conn.hdel(&key, "deadline_ms").await.unwrap();
    assert!(matches!(
        store.get(&missing_field).await,
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        store.add_sp_session(&missing_field, &sp(1)).await,
        Err(Error::Corrupt(_))
    ));
    // A corrupt record can still be removed.
    assert!(store.delete(&missing_field).await.unwrap());
}

#[tokio::test]
async fn redis_connect_fails_cleanly() {
    let start = Instant::now();
    let port = free_port();
    let nothing = RedisStore::connect(&format!("redis://127.0.0.1:{port}/"), "x:").await;
    assert!(matches!(nothing, Err(Error::Unavailable(_))), "{nothing:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        RedisStore::connect("not a url", "x:").await,
        Err(Error::InvalidConfig(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_fast_and_recovers() {
    let mut server = RedisServer::start_on_free_port();
    let store = RedisStore::connect(&server.url(), &unique_prefix("outage"))
        .await
        .unwrap();
    let id = store.create(&sample(5), MINUTE, HOUR).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_some());

    server.stop();
    for attempt in 0..4 {
        let start = Instant::now();
        let outcome = store.get(&id).await;
        assert!(
            matches!(outcome, Err(Error::Unavailable(_))),
            "attempt {attempt}: {outcome:?}"
        );
        let more = store.incr_counter("c", MINUTE).await;
        assert!(
            matches!(more, Err(Error::Unavailable(_))),
            "attempt {attempt}: {more:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "attempt {attempt} took {:?}",
            start.elapsed()
        );
    }

    // Same port again: the store must find it without being rebuilt.
    let _restarted = RedisServer::start(server.port()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.remember_once("ns", "back", MINUTE).await {
            Ok(first) => {
                assert!(first);
                break;
            }
            Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("store did not recover: {e:?}"),
        }
    }
    // The restarted server kept nothing (no persistence); everything works again.
    assert!(store.get(&id).await.unwrap().is_none());
    let id = store.create(&sample(5), MINUTE, HOUR).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
    assert_eq!(store.incr_counter("c", MINUTE).await.unwrap(), 1);
}

/// Resumes a SIGSTOPped process on drop, so a failing assertion cannot leave Redis frozen.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-CONT")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_server_times_out_and_recovers() {
    let server = RedisServer::start_on_free_port();
    let store = RedisStore::connect(&server.url(), &unique_prefix("hung"))
        .await
        .unwrap();
    let id = store.create(&sample(5), MINUTE, HOUR).await.unwrap();
    let mut conn = raw_redis(&server.url()).await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_owned();

    // A frozen Redis accepts nothing and answers nothing: only the timeouts end the wait.
    assert!(std::process::Command::new("kill")
        .arg("-STOP")
        .arg(&pid)
        .status()
        .unwrap()
        .success());
    let resume = Resume(pid);
    let start = Instant::now();
    let outcome = store.get(&id).await;
    assert!(matches!(outcome, Err(Error::Unavailable(_))), "{outcome:?}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(4),
        "waited {waited:?}"
    );

    drop(resume);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.get(&id).await {
            Ok(found) => {
                assert!(found.is_some());
                break;
            }
            Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("store did not recover: {e:?}"),
        }
    }
}
