//! Service provider registration and settings (issue #6): metadata from a URL (served by a raw HTTP
//! server on the loopback that can stall, stream without end, fail or change), pinned metadata
//! signatures, refresh failures that keep the last good metadata, a certificate rollover picked up
//! without restart, and the per-SP settings (attribute release, signing, portal name and logo, the
//! `tessera sp set` command) as samael's SP and the browser see them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::idp::{fetch_idp_metadata, Browser, SpOptions, Store, TestIdp, TestSp};
use tessera::directory::{
    AttributeRelease, Directory, PasswordHasher, SpProfile, SpSettings, ATTRNAME_FORMAT_BASIC,
};
use tessera::saml::metadata::{MetadataError, METADATA_LIMITS};
use tessera::saml::xml;
use tessera::saml::xmldsig::keys::{generate_self_signed, KeyKind, SigningKey};
use tessera::saml::xmldsig::{sign, verify};
use tessera::sp_registration::{
    self, FetchLimits, RefreshOutcome, RegistrationError, UrlRegistration,
};

const ENTITY: &str = "https://wiki.sp.test/metadata";

/// What the metadata server answers next.
#[derive(Debug, Clone)]
enum Answer {
    /// 200 with this body and its Content-Length.
    Body(String),
    /// This status, empty body.
    Status(u16),
    /// 200 without Content-Length, then bytes until the client hangs up.
    Endless,
    /// 200 with a Content-Length far over any limit (the body never comes).
    Announced(u64),
    /// Nothing at all, until the client gives up.
    Stall,
}

/// A minimal HTTP/1.1 server on 127.0.0.1 whose answer a test changes at will.
struct MetadataServer {
    url: String,
    answer: Arc<Mutex<Answer>>,
}

impl MetadataServer {
    async fn start(answer: Answer) -> MetadataServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/metadata.xml",
            listener.local_addr().unwrap().port()
        );
        let shared = Arc::new(Mutex::new(answer));
        let answer = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.lock().unwrap().clone();
                tokio::spawn(async move {
                    // Read the request head; its content does not matter.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = match answer {
                        Answer::Body(body) => {
                            let out = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/samlmetadata+xml\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            stream.write_all(out.as_bytes()).await
                        }
                        Answer::Status(code) => {
                            let out = format!(
                                "HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                            stream.write_all(out.as_bytes()).await
                        }
                        Answer::Announced(length) => {
                            let out = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                            );
                            let _ = stream.write_all(out.as_bytes()).await;
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            Ok(())
                        }
                        Answer::Endless => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n<x>")
                                .await;
                            let chunk = vec![b' '; 16 * 1024];
                            // Up to 256 MiB; the client must stop reading long before.
                            for _ in 0..16 * 1024 {
                                if stream.write_all(&chunk).await.is_err() {
                                    break;
                                }
                            }
                            Ok(())
                        }
                        Answer::Stall => {
                            tokio::time::sleep(Duration::from_secs(10)).await;
                            Ok(())
                        }
                    };
                });
            }
        });
        MetadataServer {
            url,
            answer: shared,
        }
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// A fresh SQLite directory (in `dir`), with a cheap password hasher.
async fn directory(dir: &Path) -> Directory {
    Directory::connect_with(
        &format!("sqlite://{}", dir.join("t.db").display()),
        PasswordHasher::new(256, 1, 1).unwrap(),
    )
    .await
    .unwrap()
}

fn key(name: &str) -> (SigningKey, String) {
    let (key, _, cert_pem) = generate_self_signed(
        KeyKind::Rsa2048,
        name,
        Utc::now() - chrono::Duration::days(1),
        30,
    )
    .unwrap();
    (key, cert_pem)
}

/// SP metadata for `entity_id` with its ACS at `acs` and one signing KeyDescriptor per key (requests
/// must then be signed); `extra` goes on the EntityDescriptor (e.g. a validUntil).
fn metadata(entity_id: &str, acs: &str, signing: &[&SigningKey], extra: &str) -> String {
    let mut keys = String::new();
    for key in signing {
        keys.push_str(&format!(
            "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}\
             </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
            key.certificate_base64().unwrap()
        ));
    }
    format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
         xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" ID=\"_md1\" entityID=\"{entity_id}\"{extra}>\
         <md:SPSSODescriptor AuthnRequestsSigned=\"{}\" \
         protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{keys}\
         <md:AssertionConsumerService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" \
         Location=\"{acs}\" index=\"0\"/></md:SPSSODescriptor></md:EntityDescriptor>",
        !signing.is_empty()
    )
}

/// `xml` with an enveloped signature by `key` on its root (saml-metadata 3.1).
fn signed(xml: &str, key: &SigningKey) -> String {
    let mut root = xml::parse(xml.as_bytes(), &METADATA_LIMITS).unwrap();
    sign::sign_enveloped(&mut root, key).unwrap();
    root.to_xml()
}

fn plain() -> String {
    metadata(ENTITY, "https://wiki.sp.test/acs", &[], "")
}

fn by_url(url: &str) -> UrlRegistration {
    UrlRegistration {
        url: url.to_owned(),
        display_name: Some("Wiki".into()),
        ..UrlRegistration::default()
    }
}

fn small_limits() -> FetchLimits {
    FetchLimits {
        timeout: Duration::from_secs(1),
        max_bytes: 64 * 1024,
    }
}

#[tokio::test]
async fn registers_from_a_url_within_time_and_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let d = directory(dir.path()).await;
    let server = MetadataServer::start(Answer::Body(plain())).await;
    let limits = small_limits();

    let sps = sp_registration::register_from_url(&d, &by_url(&server.url), &limits, Utc::now())
        .await
        .unwrap();
    assert_eq!(sps.len(), 1);
    let sp = d.get_sp(ENTITY).await.unwrap().unwrap();
    assert_eq!(sp.display_name, "Wiki");
    assert_eq!(sp.metadata_xml, plain());
    assert_eq!(sp.source.as_ref().unwrap().url, server.url);
    assert!(sp.refresh.last_success_at.is_some() && sp.refresh.last_error.is_none());

    // Each refusal registers nothing; the message says what went wrong.
    let other = |url: &str| UrlRegistration {
        url: url.to_owned(),
        ..UrlRegistration::default()
    };
    d.remove_sp(ENTITY).await.unwrap();

    // A body without Content-Length that never ends: refused once the limit is passed, not after
    // reading it all (256 MiB would take far longer than this bound).
    server.answer(Answer::Endless);
    let started = Instant::now();
    let err = sp_registration::register_from_url(&d, &other(&server.url), &limits, Utc::now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistrationError::TooLarge { limit, .. } if limit == 64 * 1024),
        "{err:?}"
    );
    assert!(err.to_string().contains("larger than 65536 bytes"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // An announced length over the limit: refused before any body.
    server.answer(Answer::Announced(1 << 30));
    let err = sp_registration::register_from_url(&d, &other(&server.url), &limits, Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistrationError::TooLarge { .. }), "{err:?}");

    // A server that never answers: refused at the timeout.
    server.answer(Answer::Stall);
    let started = Instant::now();
    let err = sp_registration::register_from_url(&d, &other(&server.url), &limits, Utc::now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistrationError::Timeout { secs: 1, .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    server.answer(Answer::Status(404));
    let err = sp_registration::register_from_url(&d, &other(&server.url), &limits, Utc::now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP status 404"), "{err}");

    // Plain http off the loopback, and other schemes, are not fetched at all.
    for url in [
        "http://sp.example/metadata",
        "file:///etc/passwd",
        "not a url",
    ] {
        let err = sp_registration::register_from_url(&d, &other(url), &limits, Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistrationError::BadUrl { .. }),
            "{url}: {err:?}"
        );
    }
    // Expired metadata (saml-metadata 2.3.2 validUntil) is refused.
    server.answer(Answer::Body(metadata(
        ENTITY,
        "https://wiki.sp.test/acs",
        &[],
        " validUntil=\"2001-01-01T00:00:00Z\"",
    )));
    let err = sp_registration::register_from_url(&d, &other(&server.url), &limits, Utc::now())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistrationError::Metadata(MetadataError::Expired { .. })
        ),
        "{err:?}"
    );
    assert!(d.list_sps().await.unwrap().is_empty());
}

#[tokio::test]
async fn pinned_certificate_requires_its_signature_on_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let d = directory(dir.path()).await;
    let (federation, federation_pem) = key("federation");
    let (impostor, _) = key("impostor");
    let server = MetadataServer::start(Answer::Body(plain())).await;
    let pinned = UrlRegistration {
        pinned_cert: Some(federation_pem.clone()),
        ..by_url(&server.url)
    };
    let limits = small_limits();
    let register = || sp_registration::register_from_url(&d, &pinned, &limits, Utc::now());

    // Unsigned: refused.
    let err = register().await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistrationError::Metadata(MetadataError::Signature(verify::Error::NoSignature))
        ),
        "{err:?}"
    );
    // Signed by another key: refused.
    server.answer(Answer::Body(signed(&plain(), &impostor)));
    let err = register().await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistrationError::Metadata(MetadataError::Signature(_))
        ),
        "{err:?}"
    );
    // Signed by the pinned key, then altered: refused.
    let altered = signed(&plain(), &federation)
        .replace("https://wiki.sp.test/acs", "https://evil.example/acs");
    server.answer(Answer::Body(altered));
    let err = register().await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistrationError::Metadata(MetadataError::Signature(verify::Error::DigestMismatch))
        ),
        "{err:?}"
    );
    assert!(d.list_sps().await.unwrap().is_empty());

    // Signed by the pinned key: accepted, and the pin is kept for refreshes.
    server.answer(Answer::Body(signed(&plain(), &federation)));
    register().await.unwrap();
    let sp = d.get_sp(ENTITY).await.unwrap().unwrap();
    assert_eq!(
        sp.source.unwrap().pinned_cert.as_deref(),
        Some(federation_pem.as_str())
    );
    // A refresh signed by someone else is refused like a registration.
    server.answer(Answer::Body(signed(
        &metadata(ENTITY, "https://evil.example/acs", &[], ""),
        &impostor,
    )));
    let err = sp_registration::refresh_sp(&d, ENTITY, &limits, Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RegistrationError::Metadata(MetadataError::Signature(_))
    ));
    let after = d.get_sp(ENTITY).await.unwrap().unwrap();
    assert!(after.metadata_xml.contains("https://wiki.sp.test/acs"));

    // With a pin, plain http is fetched from anywhere (the signature carries the trust); without one
    // it is refused before any connection (sp.invalid never resolves).
    let remote = UrlRegistration {
        url: "http://sp.invalid/metadata".into(),
        ..UrlRegistration::default()
    };
    let err = sp_registration::register_from_url(&d, &remote, &limits, Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistrationError::BadUrl { .. }), "{err:?}");
    let err = sp_registration::register_from_url(
        &d,
        &UrlRegistration {
            pinned_cert: Some(federation_pem),
            ..remote
        },
        &limits,
        Utc::now(),
    )
    .await
    .unwrap_err();
    // Allowed, so it is tried (and cannot connect).
    assert!(
        matches!(
            err,
            RegistrationError::Fetch { .. } | RegistrationError::Timeout { .. }
        ),
        "{err:?}"
    );
}

/// Runs the scenario against both directory backends: the migration and the refresh bookkeeping use
/// SQL both must accept.
async fn failed_refresh_keeps_last_good_metadata(d: Directory) {
    let server = MetadataServer::start(Answer::Body(plain())).await;
    let limits = small_limits();
    let registration = UrlRegistration {
        refresh_secs: Some(3600),
        ..by_url(&server.url)
    };
    let t0 = Utc::now();
    sp_registration::register_from_url(&d, &registration, &limits, t0)
        .await
        .unwrap();
    let good = d.get_sp(ENTITY).await.unwrap().unwrap();
    assert!(!sp_registration::refresh_due(&good, t0));
    assert!(sp_registration::refresh_due(
        &good,
        t0 + chrono::Duration::seconds(3600)
    ));

    // Due an hour later; the server now fails: the last good metadata stays, the error is recorded.
    server.answer(Answer::Status(500));
    let t1 = t0 + chrono::Duration::seconds(3600);
    let results = sp_registration::refresh_due_sps(&d, &limits, t1)
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert!(results[0].1.is_err());
    let after = d.get_sp(ENTITY).await.unwrap().unwrap();
    assert_eq!(after.metadata_xml, good.metadata_xml);
    assert_eq!(after.updated_at, good.updated_at);
    assert!(
        after
            .refresh
            .last_error
            .as_deref()
            .unwrap()
            .contains("HTTP status 500"),
        "{:?}",
        after.refresh
    );
    assert_eq!(after.refresh.last_attempt_at, Some(t1.timestamp()));
    assert_eq!(after.refresh.last_success_at, good.refresh.last_success_at);
    // Not due again right away: a failing URL is not hammered.
    assert!(sp_registration::refresh_due_sps(&d, &limits, t1)
        .await
        .unwrap()
        .is_empty());

    // Garbage and a document without the entity fail the same way.
    server.answer(Answer::Body("<not-metadata/>".into()));
    assert!(sp_registration::refresh_sp(&d, ENTITY, &limits, t1)
        .await
        .is_err());
    server.answer(Answer::Body(metadata(
        "https://other.sp.test/metadata",
        "https://other.sp.test/acs",
        &[],
        "",
    )));
    let err = sp_registration::refresh_sp(&d, ENTITY, &limits, t1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistrationError::EntityMissing(_)),
        "{err:?}"
    );
    assert_eq!(
        d.get_sp(ENTITY).await.unwrap().unwrap().metadata_xml,
        good.metadata_xml
    );

    // The server recovers with new content: replaced, error cleared.
    let moved = metadata(ENTITY, "https://wiki.sp.test/acs2", &[], "");
    server.answer(Answer::Body(moved.clone()));
    let t2 = t1 + chrono::Duration::seconds(10);
    assert_eq!(
        sp_registration::refresh_sp(&d, ENTITY, &limits, t2)
            .await
            .unwrap(),
        RefreshOutcome::Replaced
    );
    let fresh = d.get_sp(ENTITY).await.unwrap().unwrap();
    assert_eq!(fresh.metadata_xml, moved);
    assert_eq!(fresh.refresh.last_error, None);
    assert_eq!(fresh.refresh.last_success_at, Some(t2.timestamp()));
    assert_eq!(
        sp_registration::refresh_sp(&d, ENTITY, &limits, t2)
            .await
            .unwrap(),
        RefreshOutcome::Unchanged
    );

    // The scheduled refresher picks up an SP whose interval has elapsed (last attempt backdated).
    let newest = metadata(ENTITY, "https://wiki.sp.test/acs3", &[], "");
    server.answer(Answer::Body(newest.clone()));
    d.record_refresh_failure(ENTITY, "backdated", Utc::now().timestamp() - 7200)
        .await
        .unwrap();
    let task = sp_registration::spawn_refresher(d.clone(), limits, Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let sp = d.get_sp(ENTITY).await.unwrap().unwrap();
        if sp.metadata_xml == newest {
            assert_eq!(sp.refresh.last_error, None);
            break;
        }
        assert!(Instant::now() < deadline, "the refresher did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();

    // An uploaded SP has no URL to refresh from.
    d.remove_sp(ENTITY).await.unwrap();
    sp_registration::register_from_xml(&d, &plain(), None, Utc::now())
        .await
        .unwrap();
    let err = sp_registration::refresh_sp(&d, ENTITY, &limits, Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistrationError::NoSource(_)), "{err:?}");
}

#[tokio::test]
async fn failed_refresh_keeps_last_good_metadata_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    failed_refresh_keeps_last_good_metadata(directory(dir.path()).await).await;
}

#[tokio::test]
async fn failed_refresh_keeps_last_good_metadata_postgres() {
    let db = common::postgres::TestDatabase::create().await.unwrap();
    let d = Directory::connect_with(&db.url, PasswordHasher::new(256, 1, 1).unwrap())
        .await
        .unwrap();
    failed_refresh_keeps_last_good_metadata(d).await;
}

#[tokio::test]
async fn certificate_rollover_applies_at_the_next_request_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    let idp_metadata = fetch_idp_metadata(&idp).await;
    idp.add_user("alice", &[]).await;
    let signer = SpOptions {
        signs_requests: true,
        ..SpOptions::default()
    };
    // The same SP (entity ID, ACS) before and after it changes its request-signing key.
    let old = TestSp::new("roll", &idp_metadata, signer);
    let new = TestSp::new("roll", &idp_metadata, signer);
    let (old_key, new_key) = (old.key.as_ref().unwrap(), new.key.as_ref().unwrap());
    let v1 = metadata(&old.entity_id, &old.acs_url, &[old_key], "");
    let server = MetadataServer::start(Answer::Body(v1)).await;
    sp_registration::register_from_url(
        &idp.idp.directory,
        &by_url(&server.url),
        &small_limits(),
        Utc::now(),
    )
    .await
    .unwrap();
    idp.idp
        .directory
        .assign_app("alice", &old.entity_id)
        .await
        .unwrap();
    let sso = idp.idp.config.sso_url();
    let browser = Browser::new();

    let request = old.request(&sso);
    let form = browser
        .sso_with_login(&idp, &old.signed_redirect_url(&request, ""), "alice")
        .await;
    old.accept(&form.saml_response(), Some(&[request.id.as_str()]))
        .unwrap();
    // The new key is not known yet.
    let early = browser
        .get(&new.signed_redirect_url(&new.request(&sso), ""))
        .await;
    assert_eq!(early.status, StatusCode::FORBIDDEN, "{}", early.body);
    assert!(!early.is_saml_post());

    // Rollover, step 1: the metadata lists both keys. Served, refreshed: both are accepted.
    server.answer(Answer::Body(metadata(
        &old.entity_id,
        &old.acs_url,
        &[old_key, new_key],
        "",
    )));
    assert_eq!(
        idp.idp.refresh_sp_metadata(&old.entity_id).await.unwrap(),
        RefreshOutcome::Replaced
    );
    for sp in [&old, &new] {
        let request = sp.request(&sso);
        let form = browser.get(&sp.signed_redirect_url(&request, "")).await;
        sp.accept(&form.saml_response(), Some(&[request.id.as_str()]))
            .unwrap();
    }

    // Step 2: the old key is removed. Refreshed through the directory only (as the scheduled
    // refresher or another node would): the old key is refused at the next request.
    server.answer(Answer::Body(metadata(
        &old.entity_id,
        &old.acs_url,
        &[new_key],
        "",
    )));
    sp_registration::refresh_sp(
        &idp.idp.directory,
        &old.entity_id,
        &small_limits(),
        Utc::now(),
    )
    .await
    .unwrap();
    let refused = browser
        .get(&old.signed_redirect_url(&old.request(&sso), ""))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.text().contains("not signed by the application"));
    assert!(!refused.is_saml_post());
    let request = new.request(&sso);
    let form = browser.get(&new.signed_redirect_url(&request, "")).await;
    new.accept(&form.saml_response(), Some(&[request.id.as_str()]))
        .unwrap();
}

/// A pin that is not a certificate is refused before anything is fetched: it cannot unlock plain
/// http to a host outside this machine (the address here answers nothing: a fetch would time out).
#[tokio::test]
async fn a_pin_that_is_no_certificate_fetches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = directory(dir.path()).await;
    let registration = UrlRegistration {
        pinned_cert: Some("not a certificate".into()),
        ..by_url("http://198.51.100.1/metadata.xml")
    };
    let started = Instant::now();
    let err = sp_registration::register_from_url(&d, &registration, &small_limits(), Utc::now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistrationError::PinnedCertificate),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(d.list_sps().await.unwrap().is_empty());
}

/// Metadata whose validUntil passes while its parsed copy is cached: the SP is refused from then on,
/// as a node that never cached it would (saml-metadata 2.3.2).
#[tokio::test]
async fn a_cached_sp_is_refused_once_its_metadata_expires() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    let until = (Utc::now() + chrono::Duration::milliseconds(2000))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let xml = metadata(
        ENTITY,
        "https://wiki.sp.test/acs",
        &[],
        &format!(" validUntil=\"{until}\""),
    );
    sp_registration::register_from_xml(&idp.idp.directory, &xml, None, Utc::now())
        .await
        .unwrap();
    // Parsed and cached.
    assert!(idp.idp.sp(ENTITY).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let err = idp.idp.sp(ENTITY).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

/// The attributes of an assertion as name -> values.
fn attributes(assertion: &samael::schema::Assertion) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for statement in assertion.attribute_statements.iter().flatten() {
        for attribute in &statement.attributes {
            out.insert(
                attribute.name.clone().unwrap_or_default(),
                attribute
                    .values
                    .iter()
                    .map(|v| v.value.clone().unwrap_or_default())
                    .collect(),
            );
        }
    }
    out
}

/// Where the Signatures of a response are: (on the Response, on the Assertion).
fn signature_places(response_xml: &str) -> (bool, bool) {
    let root = xml::parse(response_xml.as_bytes(), &METADATA_LIMITS).unwrap();
    let has_signature = |e: &xml::Element| e.elements().any(|c| c.local == "Signature");
    let assertion = root
        .elements()
        .find(|c| c.local == "Assertion")
        .expect("an Assertion");
    (has_signature(&root), has_signature(assertion))
}

#[tokio::test]
async fn settings_release_static_group_and_role_values_and_choose_what_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start(dir.path(), &Store::Memory).await;
    let idp_metadata = fetch_idp_metadata(&idp).await;
    idp.add_user("alice", &[]).await;
    let d = &idp.idp.directory;
    for group in ["staff", "wiki-editors"] {
        d.create_group(group).await.unwrap();
        d.add_user_to_group("alice", group).await.unwrap();
    }
    d.create_role("auditor").await.unwrap();
    d.add_user_to_role("alice", "auditor").await.unwrap();

    let mut sp = TestSp::new("wiki", &idp_metadata, SpOptions::default());
    // saml-metadata 2.4.4: WantAssertionsSigned would force the assertion signature whatever the
    // settings say; without it the settings alone decide.
    assert!(sp.metadata_xml.contains("WantAssertionsSigned=\"true\""));
    sp.metadata_xml = sp.metadata_xml.replace(
        "WantAssertionsSigned=\"true\"",
        "WantAssertionsSigned=\"false\"",
    );
    let mut tenant = AttributeRelease::fixed("tenant", vec!["acme".into(), "acme-eu".into()]);
    tenant.name_format = ATTRNAME_FORMAT_BASIC.into();
    let settings = SpSettings {
        attribute_release: vec![
            AttributeRelease::new("email", "urn:oid:0.9.2342.19200300.100.1.3"),
            tenant,
            AttributeRelease::new("groups", "groups"),
            AttributeRelease::new("roles", "roles"),
        ],
        ..SpSettings::default()
    };
    idp.register(&sp, settings, &["alice"]).await;
    // Display name and logo through the profile, as `sp set` and the admin API do.
    let stored = d.get_sp(&sp.entity_id).await.unwrap().unwrap();
    let profile = SpProfile {
        display_name: "Team Wiki".into(),
        logo_url: Some("https://cdn.example/wiki.png?a=1&b=2".into()),
        settings: SpSettings {
            sign_assertion: true,
            sign_response: false,
            ..stored.settings.clone()
        },
        ..SpProfile::of(&stored)
    };
    d.update_sp_profile(&sp.entity_id, &profile, None)
        .await
        .unwrap();

    let browser = Browser::new();
    let sso = idp.idp.config.sso_url();
    let request = sp.request(&sso);
    let form = browser
        .sso_with_login(&idp, &TestSp::redirect_url(&request, ""), "alice")
        .await;
    let assertion = sp
        .accept(&form.saml_response(), Some(&[request.id.as_str()]))
        .unwrap();
    let attrs = attributes(&assertion);
    assert_eq!(
        attrs["urn:oid:0.9.2342.19200300.100.1.3"],
        ["alice@example.org"]
    );
    assert_eq!(attrs["tenant"], ["acme", "acme-eu"]);
    assert_eq!(attrs["groups"], ["staff", "wiki-editors"]);
    assert_eq!(attrs["roles"], ["auditor"]);
    assert_eq!(signature_places(&form.saml_response_xml()), (false, true));

    // Group membership is read at each SSO: a group left is no longer sent.
    d.remove_user_from_group("alice", "staff").await.unwrap();
    for (assertion_signed, response_signed) in [(false, true), (true, true)] {
        let current = d.get_sp(&sp.entity_id).await.unwrap().unwrap();
        let profile = SpProfile {
            settings: SpSettings {
                sign_assertion: assertion_signed,
                sign_response: response_signed,
                ..current.settings.clone()
            },
            ..SpProfile::of(&current)
        };
        d.update_sp_profile(&sp.entity_id, &profile, None)
            .await
            .unwrap();
        let request = sp.request(&sso);
        let form = browser.get(&TestSp::redirect_url(&request, "")).await;
        let assertion = sp
            .accept(&form.saml_response(), Some(&[request.id.as_str()]))
            .unwrap();
        assert_eq!(attributes(&assertion)["groups"], ["wiki-editors"]);
        assert_eq!(
            signature_places(&form.saml_response_xml()),
            (response_signed, assertion_signed)
        );
    }

    // The portal shows the display name and the logo (escaped), which its CSP lets load.
    let apps = browser.get(&idp.url("/apps")).await;
    assert_eq!(apps.status, StatusCode::OK);
    assert!(apps.body.contains("Team Wiki"), "{}", apps.body);
    assert!(
        apps.body
            .contains("<img src=\"https://cdn.example/wiki.png?a=1&amp;b=2\""),
        "{}",
        apps.body
    );
    let csp = apps.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("img-src https:"), "{csp}");

    // Bad settings are refused whole: nothing changes.
    let current = d.get_sp(&sp.entity_id).await.unwrap().unwrap();
    for bad in [
        SpProfile {
            logo_url: Some("javascript:alert(1)".into()),
            ..SpProfile::of(&current)
        },
        SpProfile {
            display_name: "Renamed".into(),
            settings: SpSettings {
                attribute_release: vec![AttributeRelease {
                    static_values: vec!["x".into()],
                    ..AttributeRelease::new("email", "mail")
                }],
                ..current.settings.clone()
            },
            ..SpProfile::of(&current)
        },
    ] {
        assert!(d
            .update_sp_profile(&sp.entity_id, &bad, None)
            .await
            .is_err());
    }
    assert_eq!(d.get_sp(&sp.entity_id).await.unwrap().unwrap(), current);
}

fn tessera(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
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
        .env("TESSERA_SP_METADATA__FETCH_TIMEOUT_SECS", "2")
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tessera");
    child.stdin.take().unwrap().write_all(b"").unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn cli_adds_from_a_url_sets_settings_whole_and_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let (federation, federation_pem) = key("federation");
    std::fs::write(path.join("federation.pem"), &federation_pem).unwrap();
    let server = MetadataServer::start(Answer::Body(signed(&plain(), &federation))).await;
    let url = server.url.clone();
    let run = |args: Vec<String>| {
        let path = path.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                tessera(&path, &args)
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let add = run(args(&[
        "sp",
        "add",
        &url,
        "--name",
        "Wiki",
        "--pin-cert",
        "federation.pem",
        "--refresh-secs",
        "3600",
    ]))
    .await;
    assert!(add.status.success(), "{}", text(&add));
    // An uploaded file can be checked against a pin as well.
    std::fs::write(path.join("unsigned.xml"), plain()).unwrap();
    let unsigned = run(args(&[
        "sp",
        "add",
        "unsigned.xml",
        "--pin-cert",
        "federation.pem",
    ]))
    .await;
    assert!(!unsigned.status.success());
    assert!(
        text(&unsigned).contains("metadata signature: document is not signed"),
        "{}",
        text(&unsigned)
    );

    let set = run(args(&[
        "sp",
        "set",
        ENTITY,
        "--display-name",
        "Team Wiki",
        "--logo-url",
        "https://cdn.example/wiki.png",
        "--nameid-format",
        "email",
        "--nameid-attribute",
        "email",
        "--sign",
        "response",
        "--release",
        "email=urn:oid:0.9.2342.19200300.100.1.3;friendly=mail",
        "--release-static",
        "tenant=acme",
        "--release-groups",
        "groups",
        "--release-roles",
        "roles",
        "--disable",
    ]))
    .await;
    assert!(set.status.success(), "{}", text(&set));
    let show = text(&run(args(&["sp", "show", ENTITY])).await);
    for expected in [
        "Team Wiki",
        "https://cdn.example/wiki.png",
        "emailAddress",
        "assertion=false response=true",
        "enabled:        false",
        "static [\"acme\"] as tenant",
        "groups as groups",
        "roles as roles",
        "pinned certificate",
        "3600s",
    ] {
        assert!(show.contains(expected), "{expected:?} not in:\n{show}");
    }

    // Bad input: a clear error and nothing applied (the display name stays).
    for (bad, message) in [
        (
            vec!["--release", "no-equals-sign"],
            "expected ATTR=SAML_NAME",
        ),
        (
            vec!["--logo-url", "javascript:alert(1)"],
            "not an absolute https URL",
        ),
        (vec!["--nameid-format", "bogus"], "NameID format"),
        (vec!["--encrypt", "on"], "encryption needs"),
        (vec!["--refresh-secs", "5"], "shorter than 60s"),
    ] {
        let mut a = vec!["sp", "set", ENTITY, "--display-name", "Renamed"];
        a.extend(bad);
        let out = run(args(&a)).await;
        assert!(!out.status.success(), "{a:?}: {}", text(&out));
        assert!(text(&out).contains(message), "{a:?}: {}", text(&out));
    }
    let show = text(&run(args(&["sp", "show", ENTITY])).await);
    assert!(
        show.contains("Team Wiki") && !show.contains("Renamed"),
        "{show}"
    );

    // A refresh that fails keeps the metadata and says why, in `sp refresh` and `sp show`.
    server.answer(Answer::Body(plain()));
    let refresh = run(args(&["sp", "refresh", ENTITY])).await;
    assert!(!refresh.status.success());
    assert!(
        text(&refresh).contains("keeping the last good metadata"),
        "{}",
        text(&refresh)
    );
    let show = text(&run(args(&["sp", "show", ENTITY])).await);
    assert!(
        show.contains("last error:     metadata signature"),
        "{show}"
    );
    server.answer(Answer::Body(signed(&plain(), &federation)));
    let refresh = run(args(&["sp", "refresh"])).await;
    assert!(refresh.status.success(), "{}", text(&refresh));
    assert!(!text(&run(args(&["sp", "show", ENTITY])).await).contains("last error"));
}
