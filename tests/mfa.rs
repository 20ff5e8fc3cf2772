//! The MFA engine: TOTP (RFC 6238), sealing of secrets, recovery codes, rate limiting, replay
//! protection and administrative reset.
//!
//! Pure checks run once. Checks that touch the session store run against the memory store and
//! against Redis (a throwaway server or REDIS_URL, each test under its own key prefix). Checks that
//! touch the directory run on SQLite and PostgreSQL, each with both stores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sqlx::{AnyPool, Row};
use tessera::directory::{self, Directory, EntryKind, NewUser, PasswordHasher};
use tessera::mfa::webauthn::RequestChallengeResponse;
use tessera::mfa::{
    check_totp, recovery, seal::MfaKey, totp, AttemptLimit, Error, Mfa, MfaAction, MfaActor,
    RecoveryOutcome, TotpOutcome, TotpSecret, UserVerification, WebauthnOutcome, WebauthnSettings,
    RECOVERY_CODE_COUNT,
};
use tessera::session::{MemoryStore, RedisStore, SessionStore};
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

type TestResult = Result<(), Box<dyn StdError>>;

/// The RFC 6238 appendix B SHA-1 seed.
const RFC_SECRET: &[u8] = b"12345678901234567890";

/// A fixed "now" in the middle of a time step (1_800_000_000 is a step boundary).
const NOW: i64 = 1_800_000_015;

const KEY_HEX: &str = "8f3c1b2a9d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
const OTHER_KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn key() -> MfaKey {
    MfaKey::from_hex(KEY_HEX).unwrap()
}

fn rfc_secret() -> TotpSecret {
    TotpSecret::from_bytes(RFC_SECRET).unwrap()
}

/// RFC 4648 base32 decoding (upper case, no padding), to get the raw secret back from the page.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Pure: TOTP, otpauth URI, QR code, sealing, recovery-code forms.
// ---------------------------------------------------------------------------------------------

#[test]
fn rfc6238_sha1_vectors_truncated_to_six_digits() {
    // RFC 6238 appendix B, SHA-1 column; the 8-digit values reduced modulo 10^6.
    let secret = rfc_secret();
    for (time, eight_digits) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(secret.code_at(time).unwrap(), eight_digits[2..], "T={time}");
        let step = totp::step_of(time).unwrap();
        assert_eq!(
            totp::verify(&secret, &eight_digits[2..], time).unwrap(),
            Some(step)
        );
    }
}

#[test]
fn one_step_of_drift_is_accepted_two_are_not() {
    let secret = rfc_secret();
    let step = totp::step_of(NOW).unwrap();
    for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
        let other = NOW + offset * totp::STEP_SECONDS;
        let code = secret.code_at(other).unwrap();
        let expected = accepted.then(|| totp::step_of(other).unwrap());
        assert_eq!(
            totp::verify(&secret, &code, NOW).unwrap(),
            expected,
            "offset {offset} steps"
        );
        if accepted {
            assert_eq!(expected.unwrap() as i64 - step as i64, offset);
        }
    }
    // The last second of a step still accepts the next step's code, the first second of the step
    // after it no longer accepts the code of two steps back.
    let boundary = 1_800_000_000;
    let code = secret.code_at(boundary - 31).unwrap();
    assert!(totp::verify(&secret, &code, boundary - 1)
        .unwrap()
        .is_some());
    assert!(totp::verify(&secret, &code, boundary + 30)
        .unwrap()
        .is_none());
}

#[test]
fn malformed_codes_are_refused() {
    let secret = rfc_secret();
    let good = secret.code_at(NOW).unwrap();
    let spaced = format!("{} {}", &good[..3], &good[3..]);
    assert!(totp::verify(&secret, &spaced, NOW).unwrap().is_some());
    for bad in [
        String::new(),
        good[..5].to_owned(),
        format!("{good}0"),
        format!("0{good}"),
        format!("{}x", &good[..5]),
        format!("-{}", &good[1..]),
        format!("{good}\n"),
        "１２３４５６".to_owned(),
    ] {
        assert_eq!(totp::verify(&secret, &bad, NOW).unwrap(), None, "{bad:?}");
    }
    // No step exists before the epoch.
    assert_eq!(totp::verify(&secret, &good, -60).unwrap(), None);
    assert!(matches!(secret.code_at(-60), Err(Error::TimeBeforeEpoch)));
}

#[test]
fn secrets_are_random_twenty_bytes_and_bounded() {
    let a = TotpSecret::generate().unwrap();
    let b = TotpSecret::generate().unwrap();
    assert_eq!(a.as_bytes().len(), totp::SECRET_BYTES);
    assert_ne!(a, b);
    assert_eq!(base32_decode(&a.to_base32()), a.as_bytes());
    assert_eq!(rfc_secret().to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert!(!format!("{a:?}").contains(&a.to_base32()));
    assert!(matches!(
        TotpSecret::from_bytes(&[1u8; 15]),
        Err(Error::InvalidSecret(15))
    ));
    assert!(matches!(
        TotpSecret::from_bytes(&[1u8; 65]),
        Err(Error::InvalidSecret(65))
    ));
}

#[test]
fn otpauth_uri_follows_the_key_uri_format() {
    let uri = totp::otpauth_uri(&rfc_secret(), "Example Corp", "alice@example.org").unwrap();
    assert_eq!(
        uri,
        "otpauth://totp/Example%20Corp:alice%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
         &issuer=Example%20Corp&algorithm=SHA1&digits=6&period=30"
    );
    // A colon in the account is escaped so it cannot be read as the issuer separator.
    let uri = totp::otpauth_uri(&rfc_secret(), "Tessera", "dom:ain&x=1").unwrap();
    assert!(uri.starts_with("otpauth://totp/Tessera:dom%3Aain%26x%3D1?"));
    for (issuer, account) in [
        ("", "a"),
        ("Bad:Issuer", "a"),
        ("Tessera", ""),
        ("T\n", "a"),
    ] {
        assert!(
            matches!(
                totp::otpauth_uri(&rfc_secret(), issuer, account),
                Err(Error::InvalidLabel(_))
            ),
            "{issuer:?} {account:?}"
        );
    }
}

/// Rasterizes the SVG that `qr_svg` produces (rectangles `M x y h w v h H x V y`) and decodes it.
fn decode_qr_svg(svg: &str) -> String {
    let attr = |name: &str| -> usize {
        let start = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let end = start + svg[start..].find('"').unwrap();
        svg[start..end].parse().unwrap()
    };
    let (width, height) = (attr("width"), attr("height"));
    let path_start = svg.find("<path").unwrap();
    let d_start = path_start + svg[path_start..].find(" d=\"").unwrap() + 4;
    let d_end = d_start + svg[d_start..].find('"').unwrap();
    let mut dark = vec![false; width * height];
    for rect in svg[d_start..d_end].split('M').filter(|s| !s.is_empty()) {
        let numbers: Vec<usize> = rect
            .replace(['h', 'v', 'H', 'V'], " ")
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let (x, y, w, h) = (numbers[0], numbers[1], numbers[2], numbers[3]);
        for row in y..y + h {
            for col in x..x + w {
                dark[row * width + col] = true;
            }
        }
    }
    let mut image =
        rqrr::PreparedImage::prepare_from_bitmap(width, height, |x, y| dark[y * width + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "expected one QR code in the SVG");
    grids[0].decode().unwrap().1
}

#[test]
fn qr_code_is_inline_svg_that_decodes_to_the_uri() {
    let secret = TotpSecret::generate().unwrap();
    let uri = totp::otpauth_uri(&secret, "Tessera", "alice").unwrap();
    let svg = totp::qr_svg(&uri).unwrap();
    assert!(
        svg.starts_with("<svg role=\"img\" aria-label="),
        "{}",
        &svg[..60]
    );
    assert!(svg.ends_with("</svg>"));
    assert!(!svg.contains("<?xml"));
    assert!(!svg.contains("<script"));
    assert_eq!(decode_qr_svg(&svg), uri);
    // Far more than a QR code holds.
    assert!(matches!(
        totp::qr_svg(&"x".repeat(8000)),
        Err(Error::QrCode(_))
    ));
}

#[test]
fn sealing_round_trips_with_fresh_nonces() {
    let key = key();
    let a = key.seal(b"top secret", b"tessera:totp:1").unwrap();
    let b = key.seal(b"top secret", b"tessera:totp:1").unwrap();
    assert_ne!(a, b, "same plaintext must seal differently (random nonce)");
    assert!(a.starts_with(&format!("v1:{}:", key.key_id())));
    assert!(!a.contains("top secret"));
    assert_eq!(key.open(&a, b"tessera:totp:1").unwrap(), b"top secret");
    assert_eq!(key.open(&b, b"tessera:totp:1").unwrap(), b"top secret");
}

#[test]
fn tampered_moved_or_foreign_sealed_values_are_refused() {
    let key = key();
    let sealed = key.seal(b"top secret", b"tessera:totp:1").unwrap();
    let prefix_len = "v1:".len() + 9;
    let blob = STANDARD.decode(&sealed[prefix_len..]).unwrap();
    // Flip one bit in each region: nonce, ciphertext, tag.
    for index in [0, 12, blob.len() - 1] {
        let mut bad = blob.clone();
        bad[index] ^= 0x01;
        let tampered = format!("{}{}", &sealed[..prefix_len], STANDARD.encode(&bad));
        assert!(
            matches!(key.open(&tampered, b"tessera:totp:1"), Err(Error::Tampered)),
            "byte {index}"
        );
    }
    // Bound to its owner: another user's associated data does not open it.
    assert!(matches!(
        key.open(&sealed, b"tessera:totp:2"),
        Err(Error::Tampered)
    ));
    // Another key is recognised as such.
    let other = MfaKey::from_hex(OTHER_KEY_HEX).unwrap();
    match other.open(&sealed, b"tessera:totp:1") {
        Err(Error::WrongKey {
            sealed_with,
            configured,
        }) => {
            assert_eq!(sealed_with, key.key_id());
            assert_eq!(configured, other.key_id());
        }
        other => panic!("expected WrongKey, got {other:?}"),
    }
    // A forged key id does not help: authentication still fails.
    let forged = sealed.replacen(key.key_id(), other.key_id(), 1);
    assert!(matches!(
        other.open(&forged, b"tessera:totp:1"),
        Err(Error::Tampered)
    ));
    assert!(matches!(
        key.open(&sealed.replacen("v1:", "v2:", 1), b"tessera:totp:1"),
        Err(Error::UnsupportedSealVersion(v)) if v == "v2"
    ));
    for malformed in [
        "",
        "v1",
        "v1:abc",
        "plain text",
        &format!("v1:{}:!!!", key.key_id()),
        &format!("v1:{}:{}", key.key_id(), STANDARD.encode([0u8; 27])),
        &format!("v1:XYZ:{}", &sealed[prefix_len..]),
    ] {
        assert!(
            matches!(
                key.open(malformed, b"tessera:totp:1"),
                Err(Error::MalformedSealed)
            ),
            "{malformed:?}"
        );
    }
}

#[test]
fn recovery_code_hashes_are_keyed_per_user_and_forgiving_to_typing() {
    let key = key();
    let codes = recovery::generate_codes().unwrap();
    assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
    let distinct: BTreeSet<String> = codes.iter().map(|c| c.to_string()).collect();
    assert_eq!(distinct.len(), RECOVERY_CODE_COUNT);
    let shown = codes[0].to_string();
    let hash = recovery::code_hash(&key, 7, &shown).unwrap().unwrap();
    assert_eq!(hash.len(), 64);
    let typed = shown.to_lowercase().replace('-', " ");
    assert_eq!(
        recovery::code_hash(&key, 7, &typed).unwrap().as_ref(),
        Some(&hash)
    );
    assert_ne!(
        recovery::code_hash(&key, 8, &shown).unwrap().as_ref(),
        Some(&hash)
    );
    let other = MfaKey::from_hex(OTHER_KEY_HEX).unwrap();
    assert_ne!(
        recovery::code_hash(&other, 7, &shown).unwrap().as_ref(),
        Some(&hash)
    );
    assert_eq!(recovery::code_hash(&key, 7, "not a code").unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Session store: attempt counter and replay cache, on memory and Redis.
// ---------------------------------------------------------------------------------------------

async fn redis_store(prefix: &str) -> RedisStore {
    RedisStore::connect(&common::redis::redis_url().await, prefix)
        .await
        .unwrap()
}

fn random_user() -> i64 {
    (rand::random::<u64>() >> 2) as i64 + 1
}

async fn store_accepts_a_code_once(store: Arc<dyn SessionStore>) {
    let limit = AttemptLimit::default();
    let secret = rfc_secret();
    let user = random_user();
    let code = secret.code_at(NOW).unwrap();
    let step = totp::step_of(NOW).unwrap();
    let first = check_totp(&*store, &limit, user, &secret, &code, NOW)
        .await
        .unwrap();
    assert_eq!(first, TotpOutcome::Accepted { step });
    // Replayed within its window, also when the clock moved on a step (drift still matches it).
    let again = check_totp(&*store, &limit, user, &secret, &code, NOW)
        .await
        .unwrap();
    assert_eq!(again, TotpOutcome::Replayed);
    let later = check_totp(&*store, &limit, user, &secret, &code, NOW + 30)
        .await
        .unwrap();
    assert_eq!(later, TotpOutcome::Replayed);
    // The next step's code is new.
    let next = secret.code_at(NOW + 30).unwrap();
    assert_eq!(
        check_totp(&*store, &limit, user, &secret, &next, NOW + 30)
            .await
            .unwrap(),
        TotpOutcome::Accepted { step: step + 1 }
    );
    // The replay cache is per user: another user with the same secret is not affected.
    assert_eq!(
        check_totp(&*store, &limit, user + 1, &secret, &code, NOW)
            .await
            .unwrap(),
        TotpOutcome::Accepted { step }
    );
}

async fn store_rate_limits_failures_and_success_resets(store: Arc<dyn SessionStore>) {
    let limit = AttemptLimit::default();
    let secret = rfc_secret();
    let user = random_user();
    let wrong = secret.code_at(NOW + 300).unwrap();
    // Four failures, then a success: the counter starts again.
    for _ in 0..4 {
        assert_eq!(
            check_totp(&*store, &limit, user, &secret, &wrong, NOW)
                .await
                .unwrap(),
            TotpOutcome::Wrong
        );
    }
    let good = secret.code_at(NOW).unwrap();
    assert!(matches!(
        check_totp(&*store, &limit, user, &secret, &good, NOW)
            .await
            .unwrap(),
        TotpOutcome::Accepted { .. }
    ));
    // Had it not been reset, the second of these would already be refused.
    for _ in 0..5 {
        assert_eq!(
            check_totp(&*store, &limit, user, &secret, &wrong, NOW)
                .await
                .unwrap(),
            TotpOutcome::Wrong
        );
    }
    // Over the limit: refused without looking at the code, even a right one.
    let next = secret.code_at(NOW + 30).unwrap();
    assert_eq!(
        check_totp(&*store, &limit, user, &secret, &next, NOW + 30)
            .await
            .unwrap(),
        TotpOutcome::RateLimited
    );
    // Per user.
    assert_eq!(
        check_totp(&*store, &limit, user + 1, &secret, &next, NOW + 30)
            .await
            .unwrap(),
        TotpOutcome::Accepted {
            step: totp::step_of(NOW + 30).unwrap()
        }
    );
}

async fn store_rate_limit_window_ends(store: Arc<dyn SessionStore>) {
    let limit = AttemptLimit {
        max_attempts: 2,
        window: Duration::from_millis(800),
    };
    let secret = rfc_secret();
    let user = random_user();
    let wrong = secret.code_at(NOW + 300).unwrap();
    for _ in 0..2 {
        assert_eq!(
            check_totp(&*store, &limit, user, &secret, &wrong, NOW)
                .await
                .unwrap(),
            TotpOutcome::Wrong
        );
    }
    let good = secret.code_at(NOW).unwrap();
    assert_eq!(
        check_totp(&*store, &limit, user, &secret, &good, NOW)
            .await
            .unwrap(),
        TotpOutcome::RateLimited
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(matches!(
        check_totp(&*store, &limit, user, &secret, &good, NOW)
            .await
            .unwrap(),
        TotpOutcome::Accepted { .. }
    ));
}

/// Generates one test per store for each listed case.
macro_rules! on_both_stores {
    ($($case:ident),+ $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(std::sync::Arc::new(tessera::session::MemoryStore::new())).await;
                }
            )+
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let prefix = crate::common::redis::unique_prefix(stringify!($case));
                    super::$case(std::sync::Arc::new(super::redis_store(&prefix).await)).await;
                }
            )+
        }
    };
}

on_both_stores!(
    store_accepts_a_code_once,
    store_rate_limits_failures_and_success_resets,
    store_rate_limit_window_ends,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_refused_across_two_redis_nodes() {
    let prefix = common::redis::unique_prefix("totp-two-nodes");
    let node_a = redis_store(&prefix).await;
    let node_b = redis_store(&prefix).await;
    let limit = AttemptLimit::default();
    let secret = rfc_secret();
    let user = random_user();
    let code = secret.code_at(NOW).unwrap();
    assert!(matches!(
        check_totp(&node_a, &limit, user, &secret, &code, NOW)
            .await
            .unwrap(),
        TotpOutcome::Accepted { .. }
    ));
    assert_eq!(
        check_totp(&node_b, &limit, user, &secret, &code, NOW)
            .await
            .unwrap(),
        TotpOutcome::Replayed
    );
    // The attempt counter is shared too: failures on one node count on the other. The replay
    // above was the first failure.
    let wrong = secret.code_at(NOW + 300).unwrap();
    for node in [&node_a, &node_b, &node_a, &node_b] {
        assert_eq!(
            check_totp(node, &limit, user, &secret, &wrong, NOW)
                .await
                .unwrap(),
            TotpOutcome::Wrong
        );
    }
    let next = secret.code_at(NOW + 30).unwrap();
    assert_eq!(
        check_totp(&node_b, &limit, user, &secret, &next, NOW + 30)
            .await
            .unwrap(),
        TotpOutcome::RateLimited
    );
}

// ---------------------------------------------------------------------------------------------
// Directory + store: the Mfa service on SQLite and PostgreSQL, each with both stores.
// ---------------------------------------------------------------------------------------------

/// Keeps the database alive for the test: held only to be dropped at the end.
#[allow(dead_code)]
enum DbGuard {
    /// A SQLite file inside a temporary directory.
    Sqlite(tempfile::TempDir),
    /// A throwaway PostgreSQL database.
    Postgres(common::postgres::TestDatabase),
}

/// Which directory backend a test runs on.
#[derive(Clone, Copy)]
enum Db {
    /// A SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// Which session store a test runs on.
#[derive(Clone, Copy)]
enum Store {
    /// The in-process store.
    Memory,
    /// Redis, under a key prefix of the test's own.
    Redis,
}

/// One test's world: a directory with a user, a store, and the service.
struct Env {
    /// Keeps the database alive.
    _db: DbGuard,
    /// The database URL, for raw reads and writes.
    url: String,
    /// The directory the service uses.
    directory: Directory,
    /// The session store the service uses.
    store: Arc<dyn SessionStore>,
    /// The Redis key prefix, so a second "node" can share the store; `None` for the memory store.
    redis_prefix: Option<String>,
    /// The service under test.
    mfa: Mfa,
    /// The user "alice", created for the test.
    user_id: i64,
}

impl Env {
    async fn new(db: Db, store: Store, tag: &str) -> Result<Self, Box<dyn StdError>> {
        let (guard, url) = match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
                (DbGuard::Sqlite(dir), url)
            }
            Db::Postgres => {
                let database = common::postgres::TestDatabase::create().await?;
                let url = database.url.clone();
                (DbGuard::Postgres(database), url)
            }
        };
        let directory = Directory::connect_with(&url, PasswordHasher::new(256, 1, 1)?).await?;
        let redis_prefix = match store {
            Store::Memory => None,
            Store::Redis => Some(common::redis::unique_prefix(tag)),
        };
        let store: Arc<dyn SessionStore> = match &redis_prefix {
            None => Arc::new(MemoryStore::new()),
            Some(prefix) => Arc::new(redis_store(prefix).await),
        };
        let user_id = create_user(&directory, "alice").await?;
        let mfa = Mfa::new(directory.clone(), store.clone(), key(), "Tessera")?;
        Ok(Self {
            _db: guard,
            url,
            directory,
            store,
            redis_prefix,
            mfa,
            user_id,
        })
    }

    /// The store as another node sees it: a second Redis connection on the same prefix, or the
    /// same memory store (a memory store serves one node only).
    async fn second_node_store(&self) -> Arc<dyn SessionStore> {
        match &self.redis_prefix {
            Some(prefix) => Arc::new(redis_store(prefix).await),
            None => self.store.clone(),
        }
    }

    /// A second connection pool on the same database, to read and write raw rows.
    async fn raw(&self) -> Result<AnyPool, Box<dyn StdError>> {
        sqlx::any::install_default_drivers();
        Ok(AnyPool::connect(&self.url).await?)
    }
}

async fn create_user(directory: &Directory, name: &str) -> Result<i64, directory::Error> {
    let user = directory
        .create_user(NewUser {
            username: name.to_owned(),
            password: "correct horse battery".to_owned(),
            ..NewUser::default()
        })
        .await?;
    Ok(user.id)
}

/// Enrols and confirms TOTP for `user` at `at`; returns the secret.
async fn enrol_at(mfa: &Mfa, user: i64, at: i64) -> Result<TotpSecret, Box<dyn StdError>> {
    let enrolment = mfa.begin_totp_enrolment(user, "alice").await?;
    let secret = TotpSecret::from_bytes(&base32_decode(&enrolment.secret_base32))?;
    let outcome = mfa
        .confirm_totp_enrolment(user, &secret.code_at(at)?, at)
        .await?;
    assert!(matches!(outcome, TotpOutcome::Accepted { .. }));
    Ok(secret)
}

/// Enrols and confirms TOTP for `user` at NOW; returns the secret.
async fn enrol(mfa: &Mfa, user: i64) -> Result<TotpSecret, Box<dyn StdError>> {
    enrol_at(mfa, user, NOW).await
}

async fn enrolment_activates_only_after_a_correct_code(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let enrolment = mfa.begin_totp_enrolment(user, "alice").await?;
    assert!(enrolment
        .uri
        .starts_with("otpauth://totp/Tessera:alice?secret="));
    assert!(enrolment.uri.contains(&enrolment.secret_base32));
    assert_eq!(decode_qr_svg(&enrolment.qr_svg), enrolment.uri);
    let secret = TotpSecret::from_bytes(&base32_decode(&enrolment.secret_base32))?;
    assert_eq!(secret.as_bytes().len(), 20);

    let factors = mfa.factors(user).await?;
    assert!(!factors.totp && factors.totp_pending && !factors.has_second_factor());
    // Pending is not usable for signing in.
    let code = secret.code_at(NOW)?;
    assert!(matches!(
        mfa.verify_totp(user, &code, NOW).await,
        Err(Error::TotpNotEnrolled)
    ));
    // Wrong and malformed codes leave it pending.
    let wrong = secret.code_at(NOW + 600)?;
    assert_eq!(
        mfa.confirm_totp_enrolment(user, &wrong, NOW).await?,
        TotpOutcome::Wrong
    );
    assert_eq!(
        mfa.confirm_totp_enrolment(user, "12345", NOW).await?,
        TotpOutcome::Wrong
    );
    let factors = mfa.factors(user).await?;
    assert!(!factors.totp && factors.totp_pending);
    assert!(mfa.events(user).await?.is_empty());

    // The right code activates it.
    let step = totp::step_of(NOW).unwrap();
    assert_eq!(
        mfa.confirm_totp_enrolment(user, &code, NOW).await?,
        TotpOutcome::Accepted { step }
    );
    let factors = mfa.factors(user).await?;
    assert!(factors.totp && !factors.totp_pending && factors.has_second_factor());
    assert!(matches!(
        mfa.confirm_totp_enrolment(user, &code, NOW).await,
        Err(Error::NoPendingEnrolment)
    ));
    // The confirming code is spent; the next step's code signs in, once.
    assert_eq!(
        mfa.verify_totp(user, &code, NOW).await?,
        TotpOutcome::Replayed
    );
    let next = secret.code_at(NOW + 30)?;
    assert_eq!(
        mfa.verify_totp(user, &next, NOW + 30).await?,
        TotpOutcome::Accepted { step: step + 1 }
    );
    assert_eq!(
        mfa.verify_totp(user, &next, NOW + 30).await?,
        TotpOutcome::Replayed
    );

    let events = mfa.events(user).await?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, MfaAction::Enrolled);
    assert_eq!(events[0].actor, MfaActor::SelfService);
    assert_eq!(events[0].user_id, user);
    let detail: serde_json::Value = serde_json::from_str(&events[0].detail)?;
    assert_eq!(detail["factor"], "totp");
    Ok(())
}

async fn re_enrolment_keeps_the_old_factor_until_confirmed(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let old = enrol(mfa, user).await?;
    let enrolment = mfa.begin_totp_enrolment(user, "alice").await?;
    let new = TotpSecret::from_bytes(&base32_decode(&enrolment.secret_base32))?;
    assert_ne!(old, new);
    let t1 = NOW + 30;
    // The old factor still signs in; the old secret does not confirm the new enrolment.
    assert!(matches!(
        mfa.verify_totp(user, &old.code_at(t1)?, t1).await?,
        TotpOutcome::Accepted { .. }
    ));
    let t2 = NOW + 60;
    assert_eq!(
        mfa.confirm_totp_enrolment(user, &old.code_at(t2)?, t2)
            .await?,
        TotpOutcome::Wrong
    );
    assert!(matches!(
        mfa.confirm_totp_enrolment(user, &new.code_at(t2)?, t2)
            .await?,
        TotpOutcome::Accepted { .. }
    ));
    let t3 = NOW + 90;
    assert_eq!(
        mfa.verify_totp(user, &old.code_at(t3)?, t3).await?,
        TotpOutcome::Wrong
    );
    assert!(matches!(
        mfa.verify_totp(user, &new.code_at(t3)?, t3).await?,
        TotpOutcome::Accepted { .. }
    ));
    let factors = mfa.factors(user).await?;
    assert!(factors.totp && !factors.totp_pending);
    Ok(())
}

async fn restarted_enrolment_refuses_codes_of_the_first_secret(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let first = mfa.begin_totp_enrolment(user, "alice").await?;
    let first = TotpSecret::from_bytes(&base32_decode(&first.secret_base32))?;
    mfa.begin_totp_enrolment(user, "alice").await?;
    assert_eq!(
        mfa.confirm_totp_enrolment(user, &first.code_at(NOW)?, NOW)
            .await?,
        TotpOutcome::Wrong
    );
    // The directory's compare-and-swap refuses to activate a secret that is no longer pending.
    let pending = env.directory.pending_totp(user).await?.unwrap();
    let stale = key().seal(first.as_bytes(), format!("tessera:totp:{user}").as_bytes())?;
    assert!(
        !env.directory
            .activate_totp(user, &stale, 1, &MfaActor::SelfService)
            .await?
    );
    assert!(env.directory.active_totp(user).await?.is_none());
    assert!(
        env.directory
            .activate_totp(user, &pending.sealed_secret, 1, &MfaActor::SelfService)
            .await?
    );
    assert!(env.directory.active_totp(user).await?.is_some());
    Ok(())
}

async fn secrets_are_stored_sealed(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let enrolment = mfa.begin_totp_enrolment(user, "alice").await?;
    let raw_secret = base32_decode(&enrolment.secret_base32);
    let raw = env.raw().await?;
    let check = |stored: &str| {
        assert!(
            stored.starts_with(&format!("v1:{}:", key().key_id())),
            "{stored}"
        );
        for clear in [
            enrolment.secret_base32.clone(),
            enrolment.secret_base32.to_lowercase(),
            hex::encode(&raw_secret),
            STANDARD.encode(&raw_secret),
        ] {
            assert!(!stored.contains(&clear), "clear secret in {stored}");
        }
        assert!(!stored
            .as_bytes()
            .windows(raw_secret.len())
            .any(|w| w == raw_secret.as_slice()));
    };
    let pending: String = sqlx::query("SELECT secret FROM mfa_totp WHERE user_id = $1")
        .bind(user)
        .fetch_one(&raw)
        .await?
        .try_get(0)?;
    check(&pending);
    let secret = TotpSecret::from_bytes(&raw_secret)?;
    mfa.confirm_totp_enrolment(user, &secret.code_at(NOW)?, NOW)
        .await?;
    let rows = sqlx::query("SELECT state, secret FROM mfa_totp WHERE user_id = $1")
        .bind(user)
        .fetch_all(&raw)
        .await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].try_get::<String, _>(0)?, "active");
    check(&rows[0].try_get::<String, _>(1)?);
    raw.close().await;
    Ok(())
}

async fn tampered_moved_or_foreign_secrets_are_refused(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let secret = enrol(mfa, user).await?;
    let raw = env.raw().await?;
    let sealed: String = sqlx::query("SELECT secret FROM mfa_totp WHERE user_id = $1")
        .bind(user)
        .fetch_one(&raw)
        .await?
        .try_get(0)?;

    // Sealed under another key: the configured key changed.
    let foreign = Mfa::new(
        env.directory.clone(),
        env.store.clone(),
        MfaKey::from_hex(OTHER_KEY_HEX)?,
        "Tessera",
    )?;
    let t = NOW + 30;
    assert!(matches!(
        foreign.verify_totp(user, &secret.code_at(t)?, t).await,
        Err(Error::WrongKey { .. })
    ));

    // Copied into another user's row: bound to its owner, so it does not open.
    let mallory = create_user(&env.directory, "mallory").await?;
    sqlx::query(
        "INSERT INTO mfa_totp (user_id, state, secret, created_at) VALUES ($1, 'active', $2, 0)",
    )
    .bind(mallory)
    .bind(&sealed)
    .execute(&raw)
    .await?;
    assert!(matches!(
        mfa.verify_totp(mallory, &secret.code_at(t)?, t).await,
        Err(Error::Tampered)
    ));

    // One character of the ciphertext changed.
    let prefix_len = "v1:".len() + 9;
    let mut blob = STANDARD.decode(&sealed[prefix_len..])?;
    blob[15] ^= 0x40;
    let tampered = format!("{}{}", &sealed[..prefix_len], STANDARD.encode(&blob));
    sqlx::query("UPDATE mfa_totp SET secret = $2 WHERE user_id = $1")
        .bind(user)
        .bind(&tampered)
        .execute(&raw)
        .await?;
    assert!(matches!(
        mfa.verify_totp(user, &secret.code_at(t)?, t).await,
        Err(Error::Tampered)
    ));
    raw.close().await;
    Ok(())
}

async fn used_steps_stay_refused_when_the_replay_cache_is_lost(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let secret = enrol(mfa, user).await?;
    let t = NOW + 60;
    assert!(matches!(
        mfa.verify_totp(user, &secret.code_at(t)?, t).await?,
        TotpOutcome::Accepted { .. }
    ));
    // A node with an empty cache (e.g. Redis flushed) still refuses the code, and an older code
    // that drift would otherwise accept.
    let fresh = Mfa::new(
        env.directory.clone(),
        Arc::new(MemoryStore::new()),
        key(),
        "Tessera",
    )?;
    assert_eq!(
        fresh.verify_totp(user, &secret.code_at(t)?, t).await?,
        TotpOutcome::Replayed
    );
    assert_eq!(
        fresh.verify_totp(user, &secret.code_at(t - 30)?, t).await?,
        TotpOutcome::Replayed
    );
    assert!(matches!(
        fresh
            .verify_totp(user, &secret.code_at(t + 30)?, t + 30)
            .await?,
        TotpOutcome::Accepted { .. }
    ));
    Ok(())
}

async fn wrong_codes_are_rate_limited_per_user(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let secret = enrol(mfa, user).await?;
    let codes = mfa
        .regenerate_recovery_codes(user, &MfaActor::SelfService)
        .await?;
    let t = NOW + 30;
    let wrong = secret.code_at(t + 600)?;
    for _ in 0..AttemptLimit::default().max_attempts {
        assert_eq!(mfa.verify_totp(user, &wrong, t).await?, TotpOutcome::Wrong);
    }
    assert_eq!(
        mfa.verify_totp(user, &secret.code_at(t)?, t).await?,
        TotpOutcome::RateLimited
    );
    // Recovery codes share the limit.
    assert_eq!(
        mfa.use_recovery_code(user, &codes[0].to_string()).await?,
        RecoveryOutcome::RateLimited
    );
    // Another user is not affected.
    let bob = create_user(&env.directory, "bob").await?;
    let bob_secret = enrol(mfa, bob).await?;
    assert!(matches!(
        mfa.verify_totp(bob, &bob_secret.code_at(t)?, t).await?,
        TotpOutcome::Accepted { .. }
    ));
    // An administrator's reset clears the counter along with the factors.
    mfa.reset_factors(user, &MfaActor::Admin("root".to_owned()))
        .await?;
    let secret = enrol_at(mfa, user, t).await?;
    let t = t + 30;
    assert!(matches!(
        mfa.verify_totp(user, &secret.code_at(t)?, t).await?,
        TotpOutcome::Accepted { .. }
    ));
    Ok(())
}

async fn recovery_codes_work_once_each(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let codes = mfa
        .regenerate_recovery_codes(user, &MfaActor::SelfService)
        .await?;
    assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
    assert_eq!(mfa.factors(user).await?.recovery_codes_left, 10);
    assert!(!mfa.factors(user).await?.has_second_factor());
    // Another user's code is worthless here.
    let bob = create_user(&env.directory, "bob").await?;
    let bob_codes = mfa
        .regenerate_recovery_codes(bob, &MfaActor::SelfService)
        .await?;
    assert_eq!(
        mfa.use_recovery_code(user, &bob_codes[0].to_string())
            .await?,
        RecoveryOutcome::Wrong
    );
    assert_eq!(
        mfa.use_recovery_code(user, "no such code").await?,
        RecoveryOutcome::Wrong
    );
    for (i, code) in codes.iter().enumerate() {
        // Typed loosely: lower case, spaces instead of dashes.
        let typed = if i % 2 == 0 {
            code.to_string()
        } else {
            code.to_string().to_lowercase().replace('-', " ")
        };
        assert_eq!(
            mfa.use_recovery_code(user, &typed).await?,
            RecoveryOutcome::Accepted {
                remaining: RECOVERY_CODE_COUNT - 1 - i
            }
        );
        assert_eq!(
            mfa.use_recovery_code(user, &code.to_string()).await?,
            RecoveryOutcome::Wrong,
            "code {i} worked twice"
        );
    }
    assert_eq!(mfa.factors(user).await?.recovery_codes_left, 0);
    // Bob's codes were not touched.
    assert_eq!(mfa.factors(bob).await?.recovery_codes_left, 10);
    let used: Vec<_> = mfa
        .events(user)
        .await?
        .into_iter()
        .filter(|e| e.action == MfaAction::RecoveryUsed)
        .collect();
    assert_eq!(used.len(), RECOVERY_CODE_COUNT);
    let last: serde_json::Value = serde_json::from_str(&used[9].detail)?;
    assert_eq!(last["remaining"], 0);
    Ok(())
}

async fn regenerating_invalidates_old_recovery_codes(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let old = mfa
        .regenerate_recovery_codes(user, &MfaActor::SelfService)
        .await?;
    assert!(matches!(
        mfa.use_recovery_code(user, &old[0].to_string()).await?,
        RecoveryOutcome::Accepted { remaining: 9 }
    ));
    let new = mfa
        .regenerate_recovery_codes(user, &MfaActor::SelfService)
        .await?;
    let old_set: BTreeSet<String> = old.iter().map(|c| c.to_string()).collect();
    assert!(new.iter().all(|c| !old_set.contains(&c.to_string())));
    assert_eq!(mfa.factors(user).await?.recovery_codes_left, 10);
    for code in &old[1..4] {
        assert_eq!(
            mfa.use_recovery_code(user, &code.to_string()).await?,
            RecoveryOutcome::Wrong
        );
    }
    assert!(matches!(
        mfa.use_recovery_code(user, &new[0].to_string()).await?,
        RecoveryOutcome::Accepted { remaining: 9 }
    ));
    let actions: Vec<MfaAction> = mfa.events(user).await?.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            MfaAction::RecoveryRegenerated,
            MfaAction::RecoveryUsed,
            MfaAction::RecoveryRegenerated,
            MfaAction::RecoveryUsed,
        ]
    );
    Ok(())
}

async fn recovery_codes_are_never_stored_in_clear(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let codes = mfa
        .regenerate_recovery_codes(user, &MfaActor::SelfService)
        .await?;
    mfa.use_recovery_code(user, &codes[0].to_string()).await?;
    let raw = env.raw().await?;
    let mut stored = Vec::new();
    for row in sqlx::query("SELECT code_hash FROM mfa_recovery_codes WHERE user_id = $1")
        .bind(user)
        .fetch_all(&raw)
        .await?
    {
        stored.push(row.try_get::<String, _>(0)?);
    }
    for row in sqlx::query("SELECT actor, action, detail FROM mfa_events")
        .fetch_all(&raw)
        .await?
    {
        for i in 0..3 {
            stored.push(row.try_get::<String, _>(i)?);
        }
    }
    assert_eq!(
        stored
            .iter()
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .count(),
        RECOVERY_CODE_COUNT
    );
    for code in &codes {
        let shown = code.to_string();
        let compact = shown.replace('-', "");
        for value in &stored {
            let upper = value.to_uppercase();
            assert!(
                !upper.contains(&shown) && !upper.contains(&compact),
                "{value}"
            );
        }
    }
    raw.close().await;
    Ok(())
}

async fn admin_reset_removes_every_factor_and_is_recorded(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let secret = enrol(mfa, user).await?;
    let codes = mfa
        .regenerate_recovery_codes(user, &MfaActor::SelfService)
        .await?;
    env.directory
        .add_webauthn_credential(user, "YubiKey", "cred-1", "{}", &MfaActor::SelfService)
        .await?;
    mfa.begin_totp_enrolment(user, "alice").await?;
    let before = mfa.factors(user).await?;
    assert!(before.totp && before.totp_pending);
    assert_eq!(before.webauthn, ["YubiKey"]);

    let admin = MfaActor::Admin("root".to_owned());
    let reset = mfa.reset_factors(user, &admin).await?;
    assert!(reset.totp && reset.totp_pending);
    assert_eq!((reset.webauthn, reset.recovery_codes), (1, 10));

    assert_eq!(mfa.factors(user).await?, tessera::mfa::Factors::default());
    let t = NOW + 30;
    assert!(matches!(
        mfa.verify_totp(user, &secret.code_at(t)?, t).await,
        Err(Error::TotpNotEnrolled)
    ));
    assert_eq!(
        mfa.use_recovery_code(user, &codes[1].to_string()).await?,
        RecoveryOutcome::Wrong
    );
    let raw = env.raw().await?;
    for table in ["mfa_totp", "mfa_webauthn", "mfa_recovery_codes"] {
        let row = sqlx::query(&format!("SELECT COUNT(*) FROM {table} WHERE user_id = $1"))
            .bind(user)
            .fetch_one(&raw)
            .await?;
        assert_eq!(row.try_get::<i64, _>(0)?, 0, "{table}");
    }
    raw.close().await;

    let events = mfa.events(user).await?;
    let last = events.last().unwrap();
    assert_eq!(last.action, MfaAction::Reset);
    assert_eq!(last.actor, admin);
    let detail: serde_json::Value = serde_json::from_str(&last.detail)?;
    assert_eq!(detail["totp"], true);
    assert_eq!(detail["webauthn"], 1);
    assert_eq!(detail["recovery_codes"], 10);
    let actions: Vec<MfaAction> = events.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            MfaAction::Enrolled,
            MfaAction::RecoveryRegenerated,
            MfaAction::Enrolled,
            MfaAction::Reset
        ]
    );
    // The user can enrol again afterwards.
    enrol_at(mfa, user, t).await?;
    Ok(())
}

async fn removal_by_the_user_is_recorded(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    assert!(!mfa.remove_totp(user, &MfaActor::SelfService).await?);
    enrol(mfa, user).await?;
    assert!(mfa.remove_totp(user, &MfaActor::SelfService).await?);
    assert!(!mfa.factors(user).await?.totp);
    let actions: Vec<(MfaAction, MfaActor)> = mfa
        .events(user)
        .await?
        .into_iter()
        .map(|e| (e.action, e.actor))
        .collect();
    assert_eq!(
        actions,
        [
            (MfaAction::Enrolled, MfaActor::SelfService),
            (MfaAction::Removed, MfaActor::SelfService)
        ]
    );
    Ok(())
}

async fn webauthn_credentials_are_named_per_user(env: &Env) -> TestResult {
    let (dir, user) = (&env.directory, env.user_id);
    let me = MfaActor::SelfService;
    dir.add_webauthn_credential(user, "laptop", "cred-a", r#"{"a":1}"#, &me)
        .await?;
    dir.add_webauthn_credential(user, "YubiKey", "cred-b", r#"{"b":1}"#, &me)
        .await?;
    assert!(matches!(
        dir.add_webauthn_credential(user, "laptop", "cred-c", "{}", &me).await,
        Err(directory::Error::DuplicateCredential(name)) if name == "laptop"
    ));
    let bob = create_user(dir, "bob").await?;
    // The same name is fine for another user, the same credential id is not.
    dir.add_webauthn_credential(bob, "laptop", "cred-d", "{}", &me)
        .await?;
    assert!(matches!(
        dir.add_webauthn_credential(bob, "phone", "cred-a", "{}", &me)
            .await,
        Err(directory::Error::DuplicateCredential(_))
    ));
    for bad in ["", " padded", "tab\tname", &"x".repeat(65)] {
        assert!(matches!(
            dir.add_webauthn_credential(user, bad, "cred-x", "{}", &me)
                .await,
            Err(directory::Error::InvalidName(_))
        ));
    }
    assert_eq!(env.mfa.factors(user).await?.webauthn, ["YubiKey", "laptop"]);
    let creds = dir.webauthn_credentials(user).await?;
    let laptop = creds.iter().find(|c| c.name == "laptop").unwrap();
    assert!(
        dir.update_webauthn_credential(laptop.id, r#"{"a":2}"#, NOW)
            .await?
    );
    let creds = dir.webauthn_credentials(user).await?;
    let laptop = creds.iter().find(|c| c.name == "laptop").unwrap();
    assert_eq!(
        (laptop.credential.as_str(), laptop.last_used),
        (r#"{"a":2}"#, Some(NOW))
    );
    assert!(dir.remove_webauthn_credential(user, "laptop", &me).await?);
    assert!(!dir.remove_webauthn_credential(user, "laptop", &me).await?);
    assert_eq!(env.mfa.factors(user).await?.webauthn, ["YubiKey"]);
    let actions: Vec<MfaAction> = env
        .mfa
        .events(user)
        .await?
        .iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [MfaAction::Enrolled, MfaAction::Enrolled, MfaAction::Removed]
    );
    Ok(())
}

async fn unknown_users_and_deleted_users(env: &Env) -> TestResult {
    let (mfa, user) = (&env.mfa, env.user_id);
    let ghost = 4_242_424_242;
    assert!(matches!(
        mfa.begin_totp_enrolment(ghost, "ghost").await,
        Err(Error::Directory(directory::Error::NotFound {
            kind: EntryKind::User,
            ..
        }))
    ));
    assert!(matches!(
        mfa.regenerate_recovery_codes(ghost, &MfaActor::SelfService)
            .await,
        Err(Error::Directory(directory::Error::NotFound {
            kind: EntryKind::User,
            ..
        }))
    ));
    assert!(matches!(
        mfa.confirm_totp_enrolment(ghost, "123456", NOW).await,
        Err(Error::NoPendingEnrolment)
    ));
    // Deleting a user removes their factors; the audit trail stays.
    enrol(mfa, user).await?;
    mfa.regenerate_recovery_codes(user, &MfaActor::SelfService)
        .await?;
    env.directory.delete_user("alice").await?;
    assert_eq!(mfa.factors(user).await?, tessera::mfa::Factors::default());
    assert_eq!(mfa.events(user).await?.len(), 2);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// WebAuthn ceremonies with a software authenticator (webauthn-authenticator-rs SoftPasskey).
// ---------------------------------------------------------------------------------------------

const ORIGIN: &str = "https://idp.example.org";

fn webauthn_settings() -> WebauthnSettings {
    WebauthnSettings {
        rp_id: "idp.example.org".to_owned(),
        rp_origin: Url::parse(ORIGIN).unwrap(),
        rp_name: "Tessera".to_owned(),
    }
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

/// Registers `authenticator` for `user` under `name`.
async fn register(
    mfa: &Mfa,
    user: i64,
    name: &str,
    verification: UserVerification,
    authenticator: &mut SoftPasskey,
) -> Result<(), Box<dyn StdError>> {
    let options = mfa
        .start_webauthn_registration(user, "alice", "Alice", verification)
        .await?;
    let response = authenticator
        .do_registration(origin(), options)
        .map_err(|e| format!("authenticator refused to register: {e:?}"))?;
    mfa.finish_webauthn_registration(user, name, &response)
        .await?;
    Ok(())
}

/// Runs a sign-in ceremony and returns the outcome.
async fn sign_in(
    mfa: &Mfa,
    user: i64,
    verification: UserVerification,
    authenticator: &mut SoftPasskey,
) -> Result<WebauthnOutcome, Box<dyn StdError>> {
    let options = mfa
        .start_webauthn_authentication(user, verification)
        .await?;
    let response = authenticator
        .do_authentication(origin(), options)
        .map_err(|e| format!("authenticator refused to sign: {e:?}"))?;
    Ok(mfa
        .finish_webauthn_authentication(user, &response, NOW)
        .await?)
}

async fn webauthn_registers_and_signs_in_across_nodes(env: &Env) -> TestResult {
    let user = env.user_id;
    let node_a = env.mfa.clone().with_webauthn(&webauthn_settings())?;
    let node_b = Mfa::new(
        env.directory.clone(),
        env.second_node_store().await,
        key(),
        "Tessera",
    )?
    .with_webauthn(&webauthn_settings())?;
    let mut laptop = SoftPasskey::new(true);

    // Registration started on one node, finished on the other.
    let options = node_a
        .start_webauthn_registration(user, "alice", "Alice", UserVerification::Required)
        .await?;
    let response = laptop.do_registration(origin(), options).unwrap();
    let credential = node_b
        .finish_webauthn_registration(user, "laptop", &response)
        .await?;
    assert_eq!(credential.name, "laptop");
    assert!(credential.last_used.is_none());
    // The registration state is single-use.
    assert!(matches!(
        node_a
            .finish_webauthn_registration(user, "again", &response)
            .await,
        Err(Error::NoCeremony)
    ));
    let factors = node_a.factors(user).await?;
    assert_eq!(factors.webauthn, ["laptop"]);
    assert!(factors.has_second_factor());

    // Sign-in started on one node, finished on the other.
    let options = node_b
        .start_webauthn_authentication(user, UserVerification::Required)
        .await?;
    let assertion = laptop.do_authentication(origin(), options).unwrap();
    assert_eq!(
        node_a
            .finish_webauthn_authentication(user, &assertion, NOW)
            .await?,
        WebauthnOutcome::Accepted {
            name: "laptop".to_owned(),
            user_verified: true
        }
    );
    let stored = node_a.webauthn_credentials(user).await?;
    assert_eq!(stored[0].last_used, Some(NOW));
    assert_ne!(
        stored[0].credential, credential.credential,
        "counter not updated"
    );

    // The same assertion cannot be used again: its ceremony is finished, and a new ceremony has
    // a new challenge.
    assert!(matches!(
        node_b
            .finish_webauthn_authentication(user, &assertion, NOW)
            .await,
        Err(Error::NoCeremony)
    ));
    node_a
        .start_webauthn_authentication(user, UserVerification::Required)
        .await?;
    assert!(matches!(
        node_b
            .finish_webauthn_authentication(user, &assertion, NOW)
            .await?,
        WebauthnOutcome::Refused(_)
    ));
    let actions: Vec<MfaAction> = node_a
        .events(user)
        .await?
        .iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, [MfaAction::Enrolled]);
    Ok(())
}

async fn webauthn_keeps_several_named_authenticators(env: &Env) -> TestResult {
    let user = env.user_id;
    let mfa = env.mfa.clone().with_webauthn(&webauthn_settings())?;
    let mut laptop = SoftPasskey::new(true);
    let mut yubikey = SoftPasskey::new(false);
    register(
        &mfa,
        user,
        "laptop",
        UserVerification::Required,
        &mut laptop,
    )
    .await?;
    register(
        &mfa,
        user,
        "YubiKey",
        UserVerification::Preferred,
        &mut yubikey,
    )
    .await?;
    assert_eq!(mfa.factors(user).await?.webauthn, ["YubiKey", "laptop"]);
    // A name is unique per user.
    let mut third = SoftPasskey::new(true);
    let options = mfa
        .start_webauthn_registration(user, "alice", "Alice", UserVerification::Required)
        .await?;
    let response = third.do_registration(origin(), options).unwrap();
    assert!(matches!(
        mfa.finish_webauthn_registration(user, "laptop", &response)
            .await,
        Err(Error::Directory(directory::Error::DuplicateCredential(_)))
    ));

    // Either authenticator signs in; each is named in the outcome.
    assert_eq!(
        sign_in(&mfa, user, UserVerification::Preferred, &mut yubikey).await?,
        WebauthnOutcome::Accepted {
            name: "YubiKey".to_owned(),
            user_verified: false
        }
    );
    assert!(matches!(
        sign_in(&mfa, user, UserVerification::Required, &mut laptop).await?,
        WebauthnOutcome::Accepted { name, user_verified: true } if name == "laptop"
    ));

    // Removing one leaves the other; the removed one no longer signs in.
    assert!(
        mfa.remove_webauthn_credential(user, "laptop", &MfaActor::SelfService)
            .await?
    );
    assert_eq!(mfa.factors(user).await?.webauthn, ["YubiKey"]);
    let options = mfa
        .start_webauthn_authentication(user, UserVerification::Preferred)
        .await?;
    assert!(
        laptop.do_authentication(origin(), options).is_err(),
        "the removed credential must not be offered"
    );
    // Another user's authenticator is not accepted for this user.
    let bob = create_user(&env.directory, "bob").await?;
    let mut bobs = SoftPasskey::new(true);
    register(&mfa, bob, "phone", UserVerification::Required, &mut bobs).await?;
    let options = mfa
        .start_webauthn_authentication(user, UserVerification::Preferred)
        .await?;
    assert!(bobs.do_authentication(origin(), options).is_err());
    let actions: Vec<MfaAction> = mfa.events(user).await?.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [MfaAction::Enrolled, MfaAction::Enrolled, MfaAction::Removed]
    );
    Ok(())
}

/// The request options with user verification lowered to "preferred", as a tampering client
/// would send them to its authenticator.
fn lower_user_verification(options: RequestChallengeResponse) -> RequestChallengeResponse {
    let mut json = serde_json::to_value(options).unwrap();
    assert_eq!(json["publicKey"]["userVerification"], "required");
    json["publicKey"]["userVerification"] = "preferred".into();
    serde_json::from_value(json).unwrap()
}

async fn webauthn_user_verification_is_enforced_when_required(env: &Env) -> TestResult {
    let user = env.user_id;
    let mfa = env.mfa.clone().with_webauthn(&webauthn_settings())?;
    let mut key = SoftPasskey::new(false);
    // An authenticator that cannot verify the user cannot register when verification is required.
    let options = mfa
        .start_webauthn_registration(user, "alice", "Alice", UserVerification::Required)
        .await?;
    assert!(key.do_registration(origin(), options).is_err());
    register(&mfa, user, "key", UserVerification::Preferred, &mut key).await?;
    // Sign-in that requires verification: the server refuses an assertion without the UV flag,
    // even when the client dropped the requirement on the way to the authenticator.
    let options = mfa
        .start_webauthn_authentication(user, UserVerification::Required)
        .await?;
    let assertion = key
        .do_authentication(origin(), lower_user_verification(options))
        .unwrap();
    assert!(matches!(
        mfa.finish_webauthn_authentication(user, &assertion, NOW)
            .await?,
        WebauthnOutcome::Refused(_)
    ));
    // When verification is only preferred, the same authenticator signs in.
    assert!(matches!(
        sign_in(&mfa, user, UserVerification::Preferred, &mut key).await?,
        WebauthnOutcome::Accepted {
            user_verified: false,
            ..
        }
    ));
    Ok(())
}

async fn webauthn_failures_count_and_misuse_is_reported(env: &Env) -> TestResult {
    let user = env.user_id;
    // Not configured.
    assert!(matches!(
        env.mfa
            .start_webauthn_authentication(user, UserVerification::Required)
            .await,
        Err(Error::WebauthnNotConfigured)
    ));
    let bad_origin = WebauthnSettings {
        rp_origin: Url::parse("https://evil.example.net").unwrap(),
        ..webauthn_settings()
    };
    assert!(matches!(
        env.mfa.clone().with_webauthn(&bad_origin),
        Err(Error::WebauthnConfig(_))
    ));
    let mfa = env.mfa.clone().with_webauthn(&webauthn_settings())?;
    assert!(matches!(
        mfa.start_webauthn_authentication(user, UserVerification::Required)
            .await,
        Err(Error::WebauthnNotEnrolled)
    ));
    let mut key = SoftPasskey::new(true);
    register(&mfa, user, "key", UserVerification::Required, &mut key).await?;
    // Finishing what was never started.
    let options = mfa
        .start_webauthn_authentication(user, UserVerification::Required)
        .await?;
    let assertion = key.do_authentication(origin(), options).unwrap();
    mfa.finish_webauthn_authentication(user, &assertion, NOW)
        .await?;
    assert!(matches!(
        mfa.finish_webauthn_authentication(user, &assertion, NOW)
            .await,
        Err(Error::NoCeremony)
    ));
    // Refused assertions count against the shared limit, with TOTP codes.
    for _ in 0..4 {
        mfa.start_webauthn_authentication(user, UserVerification::Required)
            .await?;
        assert!(matches!(
            mfa.finish_webauthn_authentication(user, &assertion, NOW)
                .await?,
            WebauthnOutcome::Refused(_)
        ));
    }
    // (The NoCeremony attempt above counted as well: that is the fifth.)
    assert_eq!(
        sign_in(&mfa, user, UserVerification::Required, &mut key).await?,
        WebauthnOutcome::RateLimited
    );
    Ok(())
}

/// Generates one test per case for a database and store combination.
macro_rules! combination {
    ($module:ident, $db:expr, $store:expr, [$($case:ident),+ $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> super::TestResult {
                    let env = super::Env::new($db, $store, stringify!($case)).await?;
                    super::$case(&env).await
                }
            )+
        }
    };
}

/// Runs each case on SQLite and PostgreSQL, each with the memory store and Redis.
macro_rules! on_all_backends {
    ($($case:ident),+ $(,)?) => {
        combination!(sqlite_memory, super::Db::Sqlite, super::Store::Memory, [$($case),+]);
        combination!(sqlite_redis, super::Db::Sqlite, super::Store::Redis, [$($case),+]);
        combination!(postgres_memory, super::Db::Postgres, super::Store::Memory, [$($case),+]);
        combination!(postgres_redis, super::Db::Postgres, super::Store::Redis, [$($case),+]);
    };
}

on_all_backends!(
    enrolment_activates_only_after_a_correct_code,
    re_enrolment_keeps_the_old_factor_until_confirmed,
    restarted_enrolment_refuses_codes_of_the_first_secret,
    secrets_are_stored_sealed,
    tampered_moved_or_foreign_secrets_are_refused,
    used_steps_stay_refused_when_the_replay_cache_is_lost,
    wrong_codes_are_rate_limited_per_user,
    recovery_codes_work_once_each,
    regenerating_invalidates_old_recovery_codes,
    recovery_codes_are_never_stored_in_clear,
    admin_reset_removes_every_factor_and_is_recorded,
    removal_by_the_user_is_recorded,
    webauthn_credentials_are_named_per_user,
    unknown_users_and_deleted_users,
    webauthn_registers_and_signs_in_across_nodes,
    webauthn_keeps_several_named_authenticators,
    webauthn_user_verification_is_enforced_when_required,
    webauthn_failures_count_and_misuse_is_reported,
);
