//! What every protocol-message target shares: a fixed clock, our endpoint URLs and the SP's signing key
//! (the test fixture `tests/fixtures/metadata/sp-signing.crt`, whose private key signed the seeds), so
//! that seeded signatures are checked for real and runs are reproducible.

#![allow(dead_code)] // each target uses only part of it
use std::sync::OnceLock;

use chrono::{DateTime, Duration, TimeZone, Utc};
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use tessera::saml::envelope::RequestContext;
use tessera::saml::xml::Limits;

/// The SP certificate the seeds are signed for.
pub const SP_CERT: &[u8] = include_bytes!("../../tests/fixtures/metadata/sp-signing.crt");

/// The instant the seeds were issued around (their IssueInstant is 2024-03-01T11:59:30Z).
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

/// Our SSO and SLO URLs, the Destinations the seeds name.
pub fn destinations() -> &'static [String] {
    static D: OnceLock<Vec<String>> = OnceLock::new();
    D.get_or_init(|| {
        vec![
            "https://idp.tessera.example/saml/sso".to_owned(),
            "https://idp.tessera.example/saml/slo".to_owned(),
        ]
    })
}

pub fn context() -> RequestContext<'static> {
    RequestContext {
        now: now(),
        max_clock_skew: Duration::seconds(60),
        max_age: Duration::minutes(5),
        destinations: destinations(),
        limits: Limits::default(),
    }
}

/// The SP's signing key, from the fixture certificate.
pub fn sp_keys() -> &'static [PKey<Public>] {
    static K: OnceLock<Vec<PKey<Public>>> = OnceLock::new();
    K.get_or_init(|| {
        X509::from_pem(SP_CERT)
            .and_then(|c| c.public_key())
            .map(|k| vec![k])
            .unwrap_or_default()
    })
}
