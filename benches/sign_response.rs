//! What building and signing a typical SSO Response costs next to the RSA signature it contains.
//!
//! The target (issue "sign_response benchmark"): all the XML work (tree building, exclusive c14n,
//! SHA-256 digest, SignedInfo, serialization) adds less than 25% to a bare RSA-2048 SHA-256
//! signature. Criterion measures four cases; afterwards a plain timed loop measures the same cases
//! again and prints one summary line per case, so the figures and their ratio are printed the same
//! way on every run (criterion's own output is per benchmark and has no ratio).
//!
//! Run with `cargo bench --bench sign_response`. `SIGN_BENCH_ITERS` sets the iterations per round
//! of the summary loop (default 200; five rounds, the median round is reported).

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use criterion::Criterion;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use tessera::saml::response::{
    build_assertion, build_response, class_ref, AssertionContent, Attribute, NameId, NameIdFormat,
    SignatureTarget,
};
use tessera::saml::xmldsig::c14n::{canonicalize, Options};
use tessera::saml::xmldsig::keys::{generate_self_signed, KeyKind, SigningKey};
use tessera::saml::xmldsig::sign::sign_enveloped;

/// saml-core 2.7.3.1: the URI NameFormat most SPs configure their attribute mappings with.
const URI_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";

/// Rounds of the summary loop; the median round is reported so one disturbed round (the machine is
/// shared with other builds) does not move the figure.
const ROUNDS: usize = 5;

/// The assertion content of an ordinary SP-initiated SSO: email NameID, five attributes as a
/// typical SP asks for (mail, given name, surname, display name, groups), solicited.
fn typical_content() -> Result<AssertionContent, Box<dyn Error>> {
    let at = |h, m, s| {
        Utc.with_ymd_and_hms(2025, 3, 14, h, m, s)
            .single()
            .ok_or("bad benchmark timestamp")
    };
    let attribute = |name: &str, friendly: &str, values: &[&str]| Attribute {
        name: name.to_owned(),
        name_format: Some(URI_FORMAT.to_owned()),
        friendly_name: Some(friendly.to_owned()),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    };
    Ok(AssertionContent {
        issuer: "https://idp.example.org/saml/metadata".into(),
        response_id: "_9f1c3a7e2b4d48a6b0e5c1d2f3a4b5c6d7e8f901".into(),
        assertion_id: "_0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3".into(),
        issue_instant: at(9, 26, 53)?,
        acs_url: "https://wiki.example.com/Shibboleth.sso/SAML2/POST".into(),
        in_response_to: Some("_5f2e8c1a9b7d4e3f8a6c2b1d0e9f8a7b".into()),
        audience: "https://wiki.example.com/shibboleth".into(),
        name_id: NameId {
            value: "ada.lovelace@example.org".into(),
            format: NameIdFormat::EmailAddress,
            sp_name_qualifier: None,
        },
        lifetime: chrono::Duration::seconds(300),
        clock_skew: chrono::Duration::seconds(120),
        authn_instant: at(9, 12, 4)?,
        session_index: "_b7e4c2a19f8d6e5c4b3a29180f7e6d5c".into(),
        session_not_on_or_after: Some(at(19, 12, 4)?),
        authn_context_class_ref: class_ref::PASSWORD_PROTECTED_TRANSPORT.into(),
        attributes: vec![
            attribute(
                "urn:oid:0.9.2342.19200300.100.1.3",
                "mail",
                &["ada.lovelace@example.org"],
            ),
            attribute("urn:oid:2.5.4.42", "givenName", &["Ada"]),
            attribute("urn:oid:2.5.4.4", "sn", &["Lovelace"]),
            attribute(
                "urn:oid:2.16.840.1.113730.3.1.241",
                "displayName",
                &["Ada Lovelace"],
            ),
            attribute(
                "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
                "isMemberOf",
                &["engineering", "analytical-engine", "staff"],
            ),
        ],
    })
}

/// One bare RSA-2048 PKCS#1 v1.5 SHA-256 signature over `data`: the floor the XML work is measured
/// against. A fresh `Signer` per call, exactly as `SignatureAlgorithm::sign` does.
fn bare_sign(key: &PKey<Private>, data: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut signer = Signer::new(MessageDigest::sha256(), key)?;
    signer.update(data)?;
    signer.sign_to_vec()
}

/// Everything the benchmark works with, made once.
struct Fixture {
    /// The IdP key, RSA-2048 as `KeyKind::Rsa2048` makes it.
    key: SigningKey,
    /// The assertion content every iteration builds and signs.
    content: AssertionContent,
    /// About 1 KB for the bare signature: the size of a canonical SignedInfo is under 1 KB, the
    /// digest makes the input size nearly irrelevant anyway.
    payload: Vec<u8>,
}

impl Fixture {
    fn new() -> Result<Fixture, Box<dyn Error>> {
        let not_before = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .ok_or("bad benchmark timestamp")?;
        let (key, _, _) = generate_self_signed(
            KeyKind::Rsa2048,
            "https://idp.example.org/saml/metadata",
            not_before,
            365,
        )?;
        let payload: Vec<u8> = (0..1024u32).map(|i| b'a' + (i % 26) as u8).collect();
        Ok(Fixture {
            key,
            content: typical_content()?,
            payload,
        })
    }

    fn response(&self, target: SignatureTarget) -> Result<String, Box<dyn Error>> {
        Ok(build_response(&self.content, &self.key, target, None)?)
    }

    fn bare(&self) -> Result<Vec<u8>, Box<dyn Error>> {
        Ok(bare_sign(self.key.private_key(), &self.payload)?)
    }
}

/// Mean time per call of `f` over `iters` calls.
fn mean_call<T>(
    iters: u32,
    mut f: impl FnMut() -> Result<T, Box<dyn Error>>,
) -> Result<Duration, Box<dyn Error>> {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f()?);
    }
    Ok(start.elapsed() / iters)
}

/// Mean time per call of `f` over `iters` calls, median of [`ROUNDS`] rounds.
fn time_per_call<T>(
    iters: u32,
    mut f: impl FnMut() -> Result<T, Box<dyn Error>>,
) -> Result<Duration, Box<dyn Error>> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        rounds.push(mean_call(iters, &mut f)?);
    }
    rounds.sort();
    Ok(rounds[ROUNDS / 2])
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn criterion_groups(c: &mut Criterion, fx: &Fixture) {
    let mut group = c.benchmark_group("assertion_signed");
    group.bench_function("build_response+sign", |b| {
        b.iter(|| {
            build_response(
                black_box(&fx.content),
                &fx.key,
                SignatureTarget::Assertion,
                None,
            )
        })
    });
    group.bench_function("bare_rsa2048_sha256_1KB", |b| {
        b.iter(|| bare_sign(fx.key.private_key(), black_box(&fx.payload)))
    });
    group.finish();

    let mut group = c.benchmark_group("both_signed");
    group.bench_function("build_response+2_signatures", |b| {
        b.iter(|| build_response(black_box(&fx.content), &fx.key, SignatureTarget::Both, None))
    });
    group.bench_function("2x_bare_rsa2048_sha256_1KB", |b| {
        b.iter(|| {
            (
                bare_sign(fx.key.private_key(), black_box(&fx.payload)),
                bare_sign(fx.key.private_key(), black_box(&fx.payload)),
            )
        })
    });
    group.finish();
}

/// The summary lines, plus where the XML time goes (each step timed on its own).
fn summary(fx: &Fixture, iters: u32) -> Result<(), Box<dyn Error>> {
    let one = fx.response(SignatureTarget::Assertion)?;
    let two = fx.response(SignatureTarget::Both)?;
    println!();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!(
        "== summary: {ROUNDS} rounds x {iters} iterations, median round (response sizes: {} B with \
         one signature, {} B with two; load average {load}) ==",
        one.len(),
        two.len()
    );

    // The four cases take turns within each round, so a burst of load from elsewhere on the machine
    // hits the XML case and its bare floor alike.
    let mut rounds: [Vec<Duration>; 4] = Default::default();
    for _ in 0..ROUNDS {
        rounds[0].push(mean_call(iters, || fx.bare())?);
        rounds[1].push(mean_call(iters, || {
            fx.response(SignatureTarget::Assertion)
        })?);
        rounds[2].push(mean_call(iters, || fx.response(SignatureTarget::Both))?);
        rounds[3].push(mean_call(iters, || Ok((fx.bare()?, fx.bare()?)))?);
    }
    let [bare, assertion, both, bare2] = rounds.map(|mut r| {
        r.sort();
        r[ROUNDS / 2]
    });

    let line = |case: &str, full: Duration, floor: Duration, floor_name: &str| {
        let overhead = (full.as_secs_f64() / floor.as_secs_f64() - 1.0) * 100.0;
        let verdict = if overhead < 25.0 { "within" } else { "OVER" };
        println!(
            "{case}: {:.1} µs, {floor_name}: {:.1} µs, overhead: {overhead:.1}% ({verdict} the 25% target)",
            micros(full),
            micros(floor),
        );
    };
    line(
        "response build+sign (assertion signed)",
        assertion,
        bare,
        "bare RSA-2048 sign",
    );
    line(
        "response build+sign (assertion and response signed)",
        both,
        bare2,
        "2x bare RSA-2048 sign",
    );

    // The XML steps without the RSA operation, so a regression can be placed.
    let tree = time_per_call(iters * 10, || Ok(build_assertion(&fx.content)))?;
    let assertion_tree = build_assertion(&fx.content);
    let c14n = time_per_call(iters * 10, || {
        Ok(canonicalize(&assertion_tree, &Options::default()))
    })?;
    let mut signed = build_assertion(&fx.content);
    sign_enveloped(&mut signed, &fx.key)?;
    let serialize = time_per_call(iters * 10, || Ok(signed.to_xml()))?;
    let cert = time_per_call(iters * 10, || Ok(fx.key.certificate_base64()?))?;
    let sign_only = time_per_call(iters, || {
        let mut a = assertion_tree.clone();
        sign_enveloped(&mut a, &fx.key)?;
        Ok(a)
    })?;
    println!(
        "breakdown (assertion signed): build assertion tree {:.2} µs, exc-c14n of assertion {:.2} µs, \
         sign_enveloped incl. RSA {:.1} µs, certificate DER+base64 {:.2} µs, serialize signed assertion \
         {:.2} µs",
        micros(tree),
        micros(c14n),
        micros(sign_only),
        micros(cert),
        micros(serialize),
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let fx = Fixture::new()?;
    // Fail before timing anything if a case does not work at all.
    fx.response(SignatureTarget::Assertion)?;
    fx.response(SignatureTarget::Both)?;
    fx.bare()?;

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    criterion_groups(&mut c, &fx);
    c.final_summary();

    let iters = match std::env::var("SIGN_BENCH_ITERS") {
        Ok(v) => v
            .parse()
            .map_err(|e| format!("SIGN_BENCH_ITERS={v:?}: {e}"))?,
        Err(_) => 200,
    };
    summary(&fx, iters)
}
