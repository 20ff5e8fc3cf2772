//! Single logout end to end (saml-profiles 4.4): Tessera serving HTTP in-process, a browser with a cookie
//! jar, and small SPs on 127.0.0.1 that receive the back-channel (SOAP) LogoutRequest and answer it.
//!
//! SP "alpha" is samael 0.0.22 on its own: xmlsec (libxmlsec1, through samael) verifies Tessera's
//! signature on the LogoutRequest, samael's schema types read it and build the LogoutResponse, and
//! samael's xmlsec signer signs it. The others use Tessera's own protocol code as the SP side, and are
//! told to answer Success, answer an error status, or hold the connection past the deadline. The
//! initiating SP's LogoutRequest is built with Tessera's types (samael 0.0.22 writes SessionIndex before
//! NameID, which the schema forbids) and signed with the SP's own key.
//!
//! Front-channel SPs (no SOAP endpoint) answer the Redirect-bound (or POST-bound) LogoutRequest Tessera's
//! iframe hands them with a signed LogoutResponse back to Tessera's `/saml/slo`, never answer, or sign
//! with a key not in their metadata. The iframes are driven hop by hop with reqwest, and once in a real
//! headless Chromium (chromedriver, as in tests/mfa_browser.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use chrono::Utc;
use reqwest::StatusCode;
use samael::crypto::{CertificateDer, Crypto, CryptoProvider};
use samael::traits::ToXml;
use tempfile::TempDir;

use common::idp::{status_codes, Browser, Page, Store, TestIdp, PASSWORD};
use common::webdriver::Driver;
use tessera::directory::{NewServiceProvider, SpSettings};
use tessera::saml::binding::post::{decode_post, post_form_html};
use tessera::saml::binding::redirect::{decode_redirect, encode_redirect};
use tessera::saml::binding::soap::{soap_envelope, unwrap_soap};
use tessera::saml::binding::{Limits, MessageKind};
use tessera::saml::envelope::{new_id, RequestContext};
use tessera::saml::logout::{
    parse_logout_request, parse_logout_response, LogoutRequest, LogoutResponse, NameId, REASON_USER,
};
use tessera::saml::status::{Status, StatusCode as SamlStatus, SubStatusCode};
use tessera::saml::xml;
use tessera::saml::xmldsig::keys::{generate_self_signed, KeyKind, SigningKey};
use tessera::saml::xmldsig::sign::sign_enveloped;
use tessera::saml::xmldsig::verify::VerifyPolicy;
use tessera::session::SpSession;

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const PARTIAL: &str = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout";
const REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
const REQUEST_DENIED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied";
const RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
const UNKNOWN_PRINCIPAL: &str = "urn:oasis:names:tc:SAML:2.0:status:UnknownPrincipal";
const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const SOAP_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP";
const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const POST_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// The per-SP deadline the tests configure: short, so the "never answers" SP costs little.
const SLO_TIMEOUT_MS: u64 = 2000;

/// How an SP answers the back-channel LogoutRequest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// samael verifies, parses, builds and signs: Success.
    Samael,
    /// Tessera's code as the SP: Success.
    Success,
    /// Tessera's code as the SP: a signed Responder status (it could not end its session).
    Error,
    /// Tessera's code as the SP: Success, but signed with a key that is not in the SP's metadata.
    WrongKey,
    /// Holds the connection far past the deadline.
    Hang,
    /// Publishes no SingleLogoutService at all: cannot be signed out from Tessera.
    NoSoap,
    /// Front channel only (HTTP-Redirect preferred, HTTP-POST too): answers the Redirect-bound
    /// LogoutRequest with a 302 back to Tessera carrying a signed Success LogoutResponse.
    FrontOk,
    /// Front channel only, HTTP-POST only: answers with an auto-submitting form back to Tessera.
    FrontPost,
    /// Front channel only: never answers the LogoutRequest.
    FrontHang,
    /// Front channel only: answers Success, signed with a key that is not in its metadata.
    FrontWrongKey,
}

impl Mode {
    fn soap(self) -> bool {
        matches!(
            self,
            Mode::Samael | Mode::Success | Mode::Error | Mode::WrongKey | Mode::Hang
        )
    }
}

/// What an SP received on its SOAP endpoint: (NameID, SessionIndexes) per LogoutRequest.
type Received = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// A test SP: an HTTP server on 127.0.0.1 with a SOAP SLO endpoint, and its metadata.
struct Sp {
    entity_id: String,
    display_name: String,
    /// `http://127.0.0.1:<port>`.
    base: String,
    /// Signs the SP's LogoutRequests and LogoutResponses; its certificate is in the metadata.
    key: SigningKey,
    metadata_xml: String,
    received: Received,
}

/// What the SP's handler needs.
#[derive(Clone)]
struct SpState {
    mode: Mode,
    entity_id: String,
    soap_url: String,
    /// The SP's front-channel SingleLogoutService.
    slo_url: String,
    /// Tessera's SLO endpoint, where front-channel answers go.
    idp_slo_url: String,
    key: SigningKey,
    /// Tessera's signing certificate, as the SP knows it from Tessera's metadata.
    idp_cert: openssl::x509::X509,
    received: Received,
}

fn key(name: &str) -> SigningKey {
    generate_self_signed(
        KeyKind::Rsa2048,
        name,
        Utc::now() - chrono::Duration::days(1),
        30,
    )
    .unwrap()
    .0
}

fn random_id() -> String {
    let mut raw = [0u8; 20];
    openssl::rand::rand_bytes(&mut raw).unwrap();
    new_id(raw)
}

impl Sp {
    async fn start(name: &str, mode: Mode, idp: &TestIdp) -> Sp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let entity_id = format!("https://{name}.slo.test/metadata");
        let key = key(&format!("{name}.slo.test"));
        let received: Received = Arc::default();
        let state = SpState {
            mode,
            entity_id: entity_id.clone(),
            soap_url: format!("{base}/slo/soap"),
            slo_url: format!("{base}/slo"),
            idp_slo_url: idp.idp.config.slo_url(),
            key: key.clone(),
            idp_cert: idp.idp.keys.current.certificate().clone(),
            received: received.clone(),
        };
        let app = Router::new()
            .route("/slo/soap", post(soap_endpoint))
            .route(
                "/slo",
                get(front_redirect_endpoint).post(front_post_endpoint),
            )
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let cert = key.certificate_base64().unwrap();
        let mut slo = String::new();
        if mode.soap() {
            slo.push_str(&format!(
                r#"<md:SingleLogoutService Binding="{SOAP_BINDING}" Location="{base}/slo/soap"/>"#
            ));
        }
        if !matches!(mode, Mode::NoSoap | Mode::FrontPost) {
            slo.push_str(&format!(
                r#"<md:SingleLogoutService Binding="{REDIRECT_BINDING}" Location="{base}/slo"/>"#
            ));
        }
        if mode != Mode::NoSoap {
            slo.push_str(&format!(
                r#"<md:SingleLogoutService Binding="{POST_BINDING}" Location="{base}/slo"/>"#
            ));
        }
        let metadata_xml = format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity_id}"><md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>{slo}<md:AssertionConsumerService Binding="{POST_BINDING}" Location="{base}/acs" index="0"/></md:SPSSODescriptor></md:EntityDescriptor>"#
        );
        Sp {
            entity_id,
            display_name: format!("App {name}"),
            base,
            key,
            metadata_xml,
            received,
        }
    }

    /// The LogoutRequests this SP received so far.
    fn received(&self) -> Vec<(String, Vec<String>)> {
        self.received.lock().unwrap().clone()
    }
}

/// The SP's SOAP SingleLogoutService.
async fn soap_endpoint(State(sp): State<SpState>, body: Bytes) -> (StatusCode, String) {
    match sp.mode {
        Mode::Hang => {
            // Far past the IdP's deadline; the IdP must not wait for this.
            tokio::time::sleep(Duration::from_secs(15)).await;
            (StatusCode::OK, String::new())
        }
        Mode::Samael => samael_answer(&sp, &body),
        _ => tessera_answer(&sp, &body),
    }
}

/// samael as the SP: xmlsec checks Tessera's signature, samael's schema types read the request and
/// write the response, xmlsec signs it with the SP's key.
fn samael_answer(sp: &SpState, body: &[u8]) -> (StatusCode, String) {
    let soap = String::from_utf8(body.to_vec()).unwrap();
    let start = soap.find("<samlp:LogoutRequest").expect("no LogoutRequest");
    let end = soap
        .find("</samlp:LogoutRequest>")
        .expect("no LogoutRequest end")
        + "</samlp:LogoutRequest>".len();
    let request_xml = &soap[start..end];
    let idp_cert = CertificateDer::from(sp.idp_cert.to_der().unwrap());
    if let Err(e) = Crypto::verify_signed_xml(request_xml, &idp_cert, Some("ID")) {
        return (StatusCode::FORBIDDEN, format!("signature: {e}"));
    }
    let request: samael::schema::LogoutRequest = request_xml.parse().unwrap();
    let name_id = request.name_id.as_ref().expect("NameID").value.clone();
    // samael 0.0.22 reads SessionIndex as an attribute, so it never sees the element.
    sp.received.lock().unwrap().push((name_id, Vec::new()));
    assert_eq!(request.destination.as_deref(), Some(sp.soap_url.as_str()));

    let id = random_id();
    let cert = CertificateDer::from(sp.key.certificate().to_der().unwrap());
    let mut signature = samael::signature::Signature::template(&id, &cert);
    // samael's template digests with SHA-1, which Tessera refuses unless an SP is allowed it.
    signature.signed_info.reference[0].digest_method.algorithm =
        samael::signature::DigestAlgorithm::Sha256;
    let response = samael::schema::LogoutResponse {
        id: Some(id),
        in_response_to: request.id.clone(),
        version: Some("2.0".into()),
        issue_instant: Some(Utc::now()),
        destination: None,
        consent: None,
        issuer: Some(samael::schema::Issuer {
            name_qualifier: None,
            sp_name_qualifier: None,
            format: None,
            sp_provided_id: None,
            value: Some(sp.entity_id.clone()),
        }),
        signature: Some(signature),
        status: Some(samael::schema::Status {
            status_code: samael::schema::StatusCode {
                value: Some(SUCCESS.into()),
            },
            status_message: None,
            status_detail: None,
        }),
    };
    let unsigned = response.to_string().unwrap();
    let signed = Crypto::sign_xml(
        unsigned,
        &sp.key.private_key().private_key_to_der().unwrap(),
    )
    .unwrap();
    let message = strip_declaration(&signed);
    (
        StatusCode::OK,
        format!(
            r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>{message}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#
        ),
    )
}

/// The SP's front-channel SingleLogoutService by HTTP-Redirect: checks Tessera's query signature and
/// answers with a 302 to Tessera's SLO endpoint carrying a signed LogoutResponse (saml-bindings
/// 3.4.4.1).
async fn front_redirect_endpoint(State(sp): State<SpState>, RawQuery(query): RawQuery) -> Response {
    if sp.mode == Mode::FrontHang {
        tokio::time::sleep(Duration::from_secs(15)).await;
        return (StatusCode::OK, "too late").into_response();
    }
    let message =
        decode_redirect(query.unwrap_or_default().as_bytes(), &Limits::default()).unwrap();
    assert_eq!(message.kind, MessageKind::Request);
    let request = sp_context(&sp.slo_url, |ctx| {
        parse_logout_request(&message.xml, ctx)
            .unwrap()
            .verify_redirect(
                message.signature.as_ref(),
                &[sp.idp_cert.public_key().unwrap()],
                false,
                true,
            )
            .expect("Tessera's query signature verifies")
            .into_message()
    });
    let element = front_response(&sp, &request).to_element();
    let signer = front_signer(&sp);
    let location = encode_redirect(
        MessageKind::Response,
        element.to_xml().as_bytes(),
        message.relay_state.as_deref(),
        &sp.idp_slo_url,
        Some((signer.private_key(), signer.algorithm())),
    )
    .unwrap();
    (StatusCode::FOUND, [(LOCATION, location)]).into_response()
}

/// The SP's front-channel SingleLogoutService by HTTP-POST: checks Tessera's XML signature and answers
/// with the auto-submitting form of a signed LogoutResponse (saml-bindings 3.5.4).
async fn front_post_endpoint(State(sp): State<SpState>, body: Bytes) -> Response {
    let message = decode_post(&body, &Limits::default()).unwrap();
    assert_eq!(message.kind, MessageKind::Request);
    let request = sp_context(&sp.slo_url, |ctx| {
        parse_logout_request(&message.xml, ctx)
            .unwrap()
            .verify_post(
                &[sp.idp_cert.public_key().unwrap()],
                &VerifyPolicy { allow_sha1: false },
                true,
            )
            .expect("Tessera's XML signature verifies")
            .into_message()
    });
    let mut element = front_response(&sp, &request).to_element();
    sign_enveloped(&mut element, &front_signer(&sp)).unwrap();
    let html = post_form_html(
        &sp.idp_slo_url,
        MessageKind::Response,
        element.to_xml().as_bytes(),
        message.relay_state.as_deref(),
    );
    (StatusCode::OK, [(CONTENT_TYPE, "text/html")], html).into_response()
}

fn sp_context<T>(destination: &str, f: impl FnOnce(&RequestContext<'_>) -> T) -> T {
    let destinations = [destination.to_owned()];
    let ctx = RequestContext {
        now: Utc::now(),
        max_clock_skew: chrono::Duration::seconds(60),
        max_age: chrono::Duration::minutes(5),
        destinations: &destinations,
        limits: xml::Limits::default(),
    };
    f(&ctx)
}

/// Records a front-channel LogoutRequest and builds the SP's Success answer to it.
fn front_response(sp: &SpState, request: &LogoutRequest) -> LogoutResponse {
    sp.received.lock().unwrap().push((
        request.name_id.value.clone(),
        request.session_indexes.clone(),
    ));
    LogoutResponse {
        id: random_id(),
        in_response_to: Some(request.id.clone()),
        issue_instant: Utc::now(),
        issuer: sp.entity_id.clone(),
        destination: Some(sp.idp_slo_url.clone()),
        status: Status::success(),
    }
}

fn front_signer(sp: &SpState) -> SigningKey {
    if sp.mode == Mode::FrontWrongKey {
        key("forger.test")
    } else {
        sp.key.clone()
    }
}

fn strip_declaration(xml: &str) -> &str {
    let xml = xml.trim_start();
    match xml.strip_prefix("<?xml") {
        Some(rest) => rest[rest.find("?>").unwrap() + 2..].trim_start(),
        None => xml,
    }
}

/// Tessera's protocol code as the SP: verifies and parses the request, answers Success or Responder.
fn tessera_answer(sp: &SpState, body: &[u8]) -> (StatusCode, String) {
    let message = unwrap_soap(body, &xml::Limits::default()).unwrap();
    let destinations = [sp.soap_url.clone()];
    let ctx = RequestContext {
        now: Utc::now(),
        max_clock_skew: chrono::Duration::seconds(60),
        max_age: chrono::Duration::minutes(5),
        destinations: &destinations,
        limits: xml::Limits::default(),
    };
    let unverified = parse_logout_request(&message, &ctx).unwrap();
    let idp_key = sp.idp_cert.public_key().unwrap();
    let request = unverified
        .verify_post(&[idp_key], &VerifyPolicy { allow_sha1: false }, true)
        .expect("the IdP's LogoutRequest verifies")
        .into_message();
    sp.received.lock().unwrap().push((
        request.name_id.value.clone(),
        request.session_indexes.clone(),
    ));
    let status = if sp.mode == Mode::Error {
        Status::error(SamlStatus::Responder, SubStatusCode::RequestDenied)
    } else {
        Status::success()
    };
    let response = LogoutResponse {
        id: random_id(),
        in_response_to: Some(request.id),
        issue_instant: Utc::now(),
        issuer: sp.entity_id.clone(),
        destination: None,
        status,
    };
    let mut element = response.to_element();
    let signer = if sp.mode == Mode::WrongKey {
        key("forger.test")
    } else {
        sp.key.clone()
    };
    sign_enveloped(&mut element, &signer).unwrap();
    (StatusCode::OK, soap_envelope(element))
}

/// A Tessera with a short SLO deadline, and a browser signed in as alice.
struct World {
    _dir: TempDir,
    idp: TestIdp,
}

impl World {
    async fn new(store: &Store) -> World {
        let dir = tempfile::tempdir().unwrap();
        let idp = TestIdp::start_configured(dir.path(), store, "127.0.0.1", |c| {
            c.saml.slo_timeout_ms = SLO_TIMEOUT_MS;
        })
        .await;
        idp.add_user("alice", &[]).await;
        idp.add_user("bob", &[]).await;
        World { _dir: dir, idp }
    }

    async fn sp(&self, name: &str, mode: Mode) -> Sp {
        let sp = Sp::start(name, mode, &self.idp).await;
        // samael's SP gets persistent NameIDs (with SPNameQualifier), the others the username.
        let settings = if mode == Mode::Samael {
            SpSettings {
                nameid_format: PERSISTENT.into(),
                ..SpSettings::default()
            }
        } else {
            SpSettings::default()
        };
        self.idp
            .idp
            .directory
            .add_sp(NewServiceProvider {
                entity_id: sp.entity_id.clone(),
                metadata_xml: sp.metadata_xml.clone(),
                display_name: sp.display_name.clone(),
                settings,
            })
            .await
            .unwrap();
        for user in ["alice", "bob"] {
            self.idp
                .idp
                .directory
                .assign_app(user, &sp.entity_id)
                .await
                .unwrap();
        }
        sp
    }

    fn slo_url(&self) -> String {
        self.idp.idp.config.slo_url()
    }

    /// IdP-initiated SSO to `sp` in `browser`'s session: the assertion is issued and recorded.
    async fn sso(&self, browser: &Browser, sp: &Sp) {
        let url = self.idp.url(&format!(
            "/saml/init?sp={}",
            url::form_urlencoded::byte_serialize(sp.entity_id.as_bytes()).collect::<String>()
        ));
        let page = browser.get(&url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.is_saml_post(), "{}", page.body);
        assert_eq!(page.form_action().unwrap(), format!("{}/acs", sp.base));
    }

    /// The live sessions of `username`, with the SPs each reached.
    async fn sessions(&self, username: &str) -> Vec<Vec<SpSession>> {
        let user = self
            .idp
            .idp
            .directory
            .get_user_by_username(username)
            .await
            .unwrap()
            .unwrap();
        self.idp
            .idp
            .sessions
            .list_user_sessions(user.id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.session.sp_sessions)
            .collect()
    }

    /// What `username`'s only session recorded for `sp`.
    async fn participant(&self, username: &str, sp: &Sp) -> SpSession {
        let sessions = self.sessions(username).await;
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        sessions[0]
            .iter()
            .find(|p| p.sp_entity_id == sp.entity_id)
            .unwrap()
            .clone()
    }

    /// A LogoutRequest from `sp` for `participant`'s NameID and `session_index`.
    fn logout_request(
        &self,
        sp: &Sp,
        participant: &SpSession,
        session_index: &str,
    ) -> LogoutRequest {
        LogoutRequest {
            id: random_id(),
            issue_instant: Utc::now(),
            issuer: sp.entity_id.clone(),
            destination: Some(self.slo_url()),
            name_id: NameId {
                value: participant.name_id.clone(),
                format: Some(participant.name_id_format.clone()),
                sp_name_qualifier: None,
                name_qualifier: None,
            },
            session_indexes: vec![session_index.to_owned()],
            not_on_or_after: None,
            reason: Some(REASON_USER.into()),
        }
    }

    /// The HTTP-Redirect URL of `request`, signed with `key` (saml-bindings 3.4.4.1).
    fn redirect_url(&self, request: &LogoutRequest, key: &SigningKey) -> String {
        encode_redirect(
            MessageKind::Request,
            request.to_element().to_xml().as_bytes(),
            Some("back-to-app"),
            &self.slo_url(),
            Some((key.private_key(), key.algorithm())),
        )
        .unwrap()
    }

    /// The HTTP-POST form of `request`, signed with `key` inside the XML (saml-bindings 3.5.4).
    fn post_form(&self, request: &LogoutRequest, key: &SigningKey) -> Vec<(String, String)> {
        let mut element = request.to_element();
        sign_enveloped(&mut element, key).unwrap();
        vec![
            (
                "SAMLRequest".into(),
                base64::engine::general_purpose::STANDARD.encode(element.to_xml()),
            ),
            ("RelayState".into(), "back-to-app".into()),
        ]
    }

    /// The LogoutResponse Tessera sent back by HTTP-Redirect (a 303 to the SP's SLO URL): its query
    /// signature verifies with Tessera's key, and the XML parses; returns the XML.
    fn redirect_response(&self, page: &Page, sp: &Sp, request_id: &str) -> String {
        self.redirect_response_relay(page, sp, request_id, Some("back-to-app"))
    }

    /// [`World::redirect_response`], with the RelayState expected back.
    fn redirect_response_relay(
        &self,
        page: &Page,
        sp: &Sp,
        request_id: &str,
        relay_state: Option<&str>,
    ) -> String {
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let location = page.location().unwrap();
        let (target, query) = location.split_once('?').unwrap();
        assert_eq!(target, format!("{}/slo", sp.base));
        let message = decode_redirect(query.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(message.kind, MessageKind::Response);
        assert_eq!(message.relay_state.as_deref(), relay_state);
        let idp_key = self
            .idp
            .idp
            .keys
            .current
            .certificate()
            .public_key()
            .unwrap();
        message
            .signature
            .as_ref()
            .unwrap()
            .verify(&[idp_key], false)
            .unwrap();
        self.check_response_xml(&message.xml, sp, request_id)
    }

    /// The LogoutResponse Tessera sent back by HTTP-POST: samael's xmlsec verifies its signature with
    /// Tessera's certificate; returns the XML.
    fn post_response(&self, page: &Page, sp: &Sp, request_id: &str) -> String {
        self.post_response_relay(page, sp, request_id, Some("back-to-app"))
    }

    /// [`World::post_response`], with the RelayState expected back.
    fn post_response_relay(
        &self,
        page: &Page,
        sp: &Sp,
        request_id: &str,
        relay_state: Option<&str>,
    ) -> String {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.form_action().unwrap(), format!("{}/slo", sp.base));
        assert_eq!(page.field("RelayState").as_deref(), relay_state);
        let xml = page.saml_response_xml();
        let idp_cert =
            CertificateDer::from(self.idp.idp.keys.current.certificate().to_der().unwrap());
        Crypto::verify_signed_xml(&xml, &idp_cert, Some("ID")).unwrap();
        self.check_response_xml(xml.as_bytes(), sp, request_id)
    }

    /// Common checks on Tessera's LogoutResponse, by Tessera's parser and by samael's.
    fn check_response_xml(&self, xml: &[u8], sp: &Sp, request_id: &str) -> String {
        let destinations = [format!("{}/slo", sp.base)];
        let ctx = RequestContext {
            now: Utc::now(),
            max_clock_skew: chrono::Duration::seconds(60),
            max_age: chrono::Duration::minutes(5),
            destinations: &destinations,
            limits: xml::Limits::default(),
        };
        let parsed = parse_logout_response(xml, &ctx).unwrap();
        assert_eq!(parsed.issuer(), self.idp.entity_id());
        assert_eq!(
            parsed.peek_for_logging().in_response_to.as_deref(),
            Some(request_id)
        );
        let text = String::from_utf8(xml.to_vec()).unwrap();
        let by_samael: samael::schema::LogoutResponse = text.parse().unwrap();
        assert_eq!(by_samael.in_response_to.as_deref(), Some(request_id));
        text
    }

    /// Whether `browser` still has a session: the portal shows the apps, or sends to the login page.
    async fn signed_in(&self, browser: &Browser) -> bool {
        let page = browser.get(&self.idp.url("/apps")).await;
        match page.status {
            StatusCode::OK => true,
            StatusCode::SEE_OTHER => {
                assert_eq!(page.location().as_deref(), Some("/login"));
                false
            }
            other => panic!("unexpected {other}: {}", page.body),
        }
    }

    /// The next SSO to `sp` needs the login page: no session is left to answer it.
    async fn sso_asks_to_log_in(&self, browser: &Browser, sp: &Sp) {
        let url = self.idp.url(&format!(
            "/saml/init?sp={}",
            url::form_urlencoded::byte_serialize(sp.entity_id.as_bytes()).collect::<String>()
        ));
        let page = browser.get(&url).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert!(page.location().unwrap().starts_with("/login?request="));
    }
}

/// Three SPs in one session; the third logs out by HTTP-Redirect and both others (samael's and ours)
/// confirm over SOAP: Success, the session is gone everywhere, and a replay ends nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_succeed_redirect_binding() {
    let w = World::new(&Store::redis("slo_all_succeed").await).await;
    let alpha = w.sp("alpha", Mode::Samael).await;
    let beta = w.sp("beta", Mode::Success).await;
    let gamma = w.sp("gamma", Mode::Success).await;

    // Our metadata publishes the SLO endpoint for both front-channel bindings, and samael reads it.
    let metadata = Browser::new().get(&w.idp.url("/saml/metadata")).await.body;
    let descriptor: samael::metadata::EntityDescriptor = metadata.parse().unwrap();
    let idp_sso = &descriptor.idp_sso_descriptors.as_ref().unwrap()[0];
    let slo: Vec<(String, String)> = idp_sso
        .single_logout_services
        .iter()
        .map(|e| (e.binding.clone(), e.location.clone()))
        .collect();
    assert_eq!(
        slo,
        vec![
            (REDIRECT_BINDING.to_owned(), w.slo_url()),
            (POST_BINDING.to_owned(), w.slo_url())
        ]
    );

    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    for sp in [&alpha, &beta, &gamma] {
        w.sso(&browser, sp).await;
    }
    let at_alpha = w.participant("alice", &alpha).await;
    let at_beta = w.participant("alice", &beta).await;
    let at_gamma = w.participant("alice", &gamma).await;
    assert_eq!(at_alpha.name_id_format, PERSISTENT);

    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let url = w.redirect_url(&request, &gamma.key);
    let page = browser.get(&url).await;
    let xml = w.redirect_response(&page, &gamma, &request.id);
    assert_eq!(status_codes(&xml), vec![SUCCESS.to_owned()], "{xml}");

    // Each other SP got exactly one LogoutRequest with the NameID (and SessionIndex) issued to it.
    assert_eq!(alpha.received(), vec![(at_alpha.name_id.clone(), vec![])]);
    assert_eq!(
        beta.received(),
        vec![(at_beta.name_id.clone(), vec![at_beta.session_index.clone()])]
    );
    // The initiator is not sent a LogoutRequest of its own.
    assert!(gamma.received().is_empty());
    assert!(w.sessions("alice").await.is_empty());
    assert!(!w.signed_in(&browser).await);
    w.sso_asks_to_log_in(&browser, &alpha).await;

    // The same request again is a replay: refused, nothing sent anywhere.
    let again = browser.get(&url).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert_eq!(alpha.received().len(), 1);
}

/// An SP reached twice in one session with transient NameIDs (new on every SSO) is sent the NameID of
/// the latest assertion, with the session's SessionIndex (saml-profiles 4.4.4.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_reached_twice_gets_latest_transient_name_id() {
    let w = World::new(&Store::Memory).await;
    let beta = Sp::start("beta", Mode::Success, &w.idp).await;
    w.idp
        .idp
        .directory
        .add_sp(NewServiceProvider {
            entity_id: beta.entity_id.clone(),
            metadata_xml: beta.metadata_xml.clone(),
            display_name: beta.display_name.clone(),
            settings: SpSettings {
                nameid_format: "urn:oasis:names:tc:SAML:2.0:nameid-format:transient".into(),
                ..SpSettings::default()
            },
        })
        .await
        .unwrap();
    w.idp
        .idp
        .directory
        .assign_app("alice", &beta.entity_id)
        .await
        .unwrap();
    let gamma = w.sp("gamma", Mode::Success).await;
    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    w.sso(&browser, &beta).await;
    w.sso(&browser, &gamma).await;
    w.sso(&browser, &beta).await;
    let sessions = w.sessions("alice").await;
    let at_beta: Vec<&SpSession> = sessions[0]
        .iter()
        .filter(|p| p.sp_entity_id == beta.entity_id)
        .collect();
    assert_eq!(at_beta.len(), 2, "{at_beta:?}");
    assert_ne!(at_beta[0].name_id, at_beta[1].name_id);
    assert_eq!(at_beta[0].session_index, at_beta[1].session_index);
    let latest = at_beta[1].clone();

    let at_gamma = w.participant("alice", &gamma).await;
    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let page = browser.get(&w.redirect_url(&request, &gamma.key)).await;
    let xml = w.redirect_response(&page, &gamma, &request.id);
    assert_eq!(status_codes(&xml), vec![SUCCESS.to_owned()], "{xml}");
    assert_eq!(
        beta.received(),
        vec![(latest.name_id.clone(), vec![latest.session_index.clone()])]
    );
    assert!(w.sessions("alice").await.is_empty());
}

/// By HTTP-POST, one SP answers with an error status: the others are still told, the session ends, and
/// the initiator hears Success with PartialLogout (saml-core 3.7.3.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sp_errors_post_binding() {
    let w = World::new(&Store::Memory).await;
    let alpha = w.sp("alpha", Mode::Samael).await;
    let broken = w.sp("broken", Mode::Error).await;
    let gamma = w.sp("gamma", Mode::Success).await;
    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    for sp in [&broken, &alpha, &gamma] {
        w.sso(&browser, sp).await;
    }
    let at_gamma = w.participant("alice", &gamma).await;
    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let page = browser
        .post(&w.slo_url(), &w.post_form(&request, &gamma.key))
        .await;
    let xml = w.post_response(&page, &gamma, &request.id);
    assert_eq!(
        status_codes(&xml),
        vec![SUCCESS.to_owned(), PARTIAL.to_owned()],
        "{xml}"
    );
    assert_eq!(broken.received().len(), 1);
    assert_eq!(alpha.received().len(), 1);
    assert!(w.sessions("alice").await.is_empty());
    w.sso_asks_to_log_in(&browser, &gamma).await;
}

/// One SP holds the connection: the others are told at once, the whole logout takes about the deadline
/// (not the SP's 15 s), and the initiator hears PartialLogout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sp_never_answers() {
    let w = World::new(&Store::Memory).await;
    let hanging = w.sp("hanging", Mode::Hang).await;
    let alpha = w.sp("alpha", Mode::Samael).await;
    let gamma = w.sp("gamma", Mode::Success).await;
    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    for sp in [&hanging, &alpha, &gamma] {
        w.sso(&browser, sp).await;
    }
    let at_gamma = w.participant("alice", &gamma).await;
    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let started = Instant::now();
    let page = browser.get(&w.redirect_url(&request, &gamma.key)).await;
    let took = started.elapsed();
    let xml = w.redirect_response(&page, &gamma, &request.id);
    assert_eq!(
        status_codes(&xml),
        vec![SUCCESS.to_owned(), PARTIAL.to_owned()],
        "{xml}"
    );
    assert!(
        took >= Duration::from_millis(SLO_TIMEOUT_MS - 50),
        "answered before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(SLO_TIMEOUT_MS + 3000),
        "{took:?}"
    );
    assert_eq!(alpha.received().len(), 1);
    assert!(w.sessions("alice").await.is_empty());
    assert!(!w.signed_in(&browser).await);
}

/// A LogoutRequest signed with a key that is not the SP's: Requester/RequestDenied, nothing ended and
/// nobody told. The same request unsigned is refused the same way (saml-profiles 4.4.4.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_signature_ends_nothing() {
    let w = World::new(&Store::Memory).await;
    let alpha = w.sp("alpha", Mode::Samael).await;
    let gamma = w.sp("gamma", Mode::Success).await;
    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    for sp in [&alpha, &gamma] {
        w.sso(&browser, sp).await;
    }
    let at_gamma = w.participant("alice", &gamma).await;
    let intruder = key("intruder.test");

    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let page = browser.get(&w.redirect_url(&request, &intruder)).await;
    // A refused request's RelayState is not echoed under our signature.
    let xml = w.redirect_response_relay(&page, &gamma, &request.id, None);
    assert_eq!(
        status_codes(&xml),
        vec![REQUESTER.to_owned(), REQUEST_DENIED.to_owned()],
        "{xml}"
    );

    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let page = browser
        .post(&w.slo_url(), &w.post_form(&request, &intruder))
        .await;
    let xml = w.post_response_relay(&page, &gamma, &request.id, None);
    assert_eq!(
        status_codes(&xml),
        vec![REQUESTER.to_owned(), REQUEST_DENIED.to_owned()],
        "{xml}"
    );

    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let unsigned = encode_redirect(
        MessageKind::Request,
        request.to_element().to_xml().as_bytes(),
        Some("back-to-app"),
        &w.slo_url(),
        None,
    )
    .unwrap();
    let page = browser.get(&unsigned).await;
    // A refused request's RelayState is not echoed under our signature.
    let xml = w.redirect_response_relay(&page, &gamma, &request.id, None);
    assert_eq!(
        status_codes(&xml),
        vec![REQUESTER.to_owned(), REQUEST_DENIED.to_owned()],
        "{xml}"
    );

    // An issuer that is not registered has no endpoint to answer at: an error page.
    let mut stranger = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    stranger.issuer = "https://stranger.slo.test/metadata".into();
    let page = browser.get(&w.redirect_url(&stranger, &intruder)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.text().contains("not registered"), "{}", page.body);

    // What cannot be read has no sender to answer: an error page. A LogoutResponse is never expected.
    let garbage = browser
        .get(&format!("{}?SAMLRequest=bm90IGRlZmxhdGU%3D", w.slo_url()))
        .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST, "{}", garbage.body);
    let unsolicited = browser
        .post(
            &w.slo_url(),
            &[(
                "SAMLResponse".to_owned(),
                base64::engine::general_purpose::STANDARD.encode("<x/>"),
            )],
        )
        .await;
    assert_eq!(
        unsolicited.status,
        StatusCode::BAD_REQUEST,
        "{}",
        unsolicited.body
    );

    assert!(alpha.received().is_empty());
    assert_eq!(w.sessions("alice").await.len(), 1);
    assert!(w.signed_in(&browser).await);
}

/// A SessionIndex Tessera never issued, and a valid request arriving in another person's browser:
/// Responder/UnknownPrincipal, and every session stays (saml-core 3.7.3.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_ends_nothing() {
    let w = World::new(&Store::Memory).await;
    let alpha = w.sp("alpha", Mode::Samael).await;
    let gamma = w.sp("gamma", Mode::Success).await;
    let alice = Browser::new();
    alice.sign_in(&w.idp, "alice").await;
    let bob = Browser::new();
    bob.sign_in(&w.idp, "bob").await;
    for sp in [&alpha, &gamma] {
        w.sso(&alice, sp).await;
        w.sso(&bob, sp).await;
    }
    let at_gamma = w.participant("alice", &gamma).await;

    let request = w.logout_request(&gamma, &at_gamma, "_not-a-session-we-issued");
    let page = alice.get(&w.redirect_url(&request, &gamma.key)).await;
    let xml = w.redirect_response(&page, &gamma, &request.id);
    assert_eq!(
        status_codes(&xml),
        vec![RESPONDER.to_owned(), UNKNOWN_PRINCIPAL.to_owned()],
        "{xml}"
    );

    // alice's own, valid request, but in bob's browser: bob's session is not alice's.
    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let page = bob.get(&w.redirect_url(&request, &gamma.key)).await;
    let xml = w.redirect_response(&page, &gamma, &request.id);
    assert_eq!(
        status_codes(&xml),
        vec![RESPONDER.to_owned(), UNKNOWN_PRINCIPAL.to_owned()],
        "{xml}"
    );

    assert!(alpha.received().is_empty());
    assert_eq!(w.sessions("alice").await.len(), 1);
    assert_eq!(w.sessions("bob").await.len(), 1);
    assert!(w.signed_in(&alice).await);
    assert!(w.signed_in(&bob).await);
}

/// A cross-site POST arrives without the session cookie: Tessera keeps the verified request and lets a
/// same-site GET bring the cookie, which then finds the session (docs/slo.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_without_cookie_continues_with_it() {
    let w = World::new(&Store::Memory).await;
    let alpha = w.sp("alpha", Mode::Samael).await;
    let gamma = w.sp("gamma", Mode::Success).await;
    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    for sp in [&alpha, &gamma] {
        w.sso(&browser, sp).await;
    }
    let at_gamma = w.participant("alice", &gamma).await;
    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    // The POST as SameSite=Lax makes it: no cookie.
    let cookieless = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let first = Browser::page_of(
        cookieless
            .post(w.slo_url())
            .form(&w.post_form(&request, &gamma.key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    assert!(first
        .location()
        .unwrap()
        .starts_with("/saml/slo/continue?request="));
    // Nothing happened yet.
    assert_eq!(w.sessions("alice").await.len(), 1);
    let page = browser.follow(&w.idp.url(""), &first).await;
    let xml = w.post_response(&page, &gamma, &request.id);
    assert_eq!(status_codes(&xml), vec![SUCCESS.to_owned()], "{xml}");
    assert_eq!(alpha.received().len(), 1);
    assert!(w.sessions("alice").await.is_empty());
    // The handle is used once.
    let again = browser.follow(&w.idp.url(""), &first).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);

    // Two uses racing with one handle: only one acts, the other is refused.
    browser.sign_in(&w.idp, "alice").await;
    w.sso(&browser, &gamma).await;
    let at_gamma = w.participant("alice", &gamma).await;
    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let first = Browser::page_of(
        cookieless
            .post(w.slo_url())
            .form(&w.post_form(&request, &gamma.key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    let base = w.idp.url("");
    let (a, b) = tokio::join!(browser.follow(&base, &first), browser.follow(&base, &first));
    let refused = [&a, &b]
        .iter()
        .filter(|p| p.status == StatusCode::BAD_REQUEST)
        .count();
    assert_eq!(refused, 1, "{} / {}", a.body, b.body);
}

/// Sign out from the portal: every app is told at once, and the page lists which confirmed, which
/// failed, and which cannot be signed out from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_logout_lists_every_app() {
    let w = World::new(&Store::Memory).await;
    let alpha = w.sp("alpha", Mode::Samael).await;
    let beta = w.sp("beta", Mode::Success).await;
    let broken = w.sp("broken", Mode::Error).await;
    let hanging = w.sp("hanging", Mode::Hang).await;
    let legacy = w.sp("legacy", Mode::NoSoap).await;
    let forged = w.sp("forged", Mode::WrongKey).await;
    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    for sp in [&alpha, &beta, &broken, &hanging, &legacy, &forged] {
        w.sso(&browser, sp).await;
    }
    let apps = browser.get(&w.idp.url("/apps")).await;
    let csrf = apps.field("csrf_token").unwrap();

    // Without the CSRF token nothing happens.
    let refused = browser
        .post(
            &w.idp.url("/logout"),
            &[("csrf_token".to_owned(), "x".repeat(43))],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(alpha.received().is_empty());

    let started = Instant::now();
    let page = browser
        .post(&w.idp.url("/logout"), &[("csrf_token".to_owned(), csrf)])
        .await;
    let took = started.elapsed();
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        took < Duration::from_millis(SLO_TIMEOUT_MS + 3000),
        "{took:?}"
    );
    let text = page.text();
    assert!(text.contains("You are signed out"), "{text}");
    for (sp, note) in [
        (&alpha, "signed out"),
        (&beta, "signed out"),
        (
            &broken,
            "sign-out failed: close your browser or sign out there",
        ),
        (
            &hanging,
            "sign-out failed: close your browser or sign out there",
        ),
        (
            &legacy,
            "not signed out: close your browser or sign out there",
        ),
        // A Success whose signature is not the SP's own does not count.
        (
            &forged,
            "sign-out failed: close your browser or sign out there",
        ),
    ] {
        let line = format!("<strong>{}</strong>: {note}</li>", sp.display_name);
        assert!(text.contains(&line), "missing {line:?} in {text}");
    }
    assert_eq!(alpha.received().len(), 1);
    assert_eq!(beta.received().len(), 1);
    assert_eq!(broken.received().len(), 1);
    assert_eq!(forged.received().len(), 1);
    assert!(legacy.received().is_empty());
    assert!(w.sessions("alice").await.is_empty());
    w.sso_asks_to_log_in(&browser, &alpha).await;
}

/// The iframe page of a front-channel round, as Tessera rendered it.
struct FrontRound {
    /// The iframes' URLs, absolute.
    frames: Vec<String>,
    status: String,
    finish: String,
    csp: String,
}

/// An attribute value as askama escapes it, unescaped.
fn attr(html: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(common::idp::unescape_html(&html[start..end]).replace("&#x2f;", "/"))
}

impl World {
    fn front_round(&self, page: &Page) -> FrontRound {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let frames = page
            .body
            .split("<iframe ")
            .skip(1)
            .map(|tag| self.idp.url(&attr(tag, "src").unwrap()))
            .collect();
        FrontRound {
            frames,
            status: self.idp.url(&attr(&page.body, "data-status").unwrap()),
            finish: self.idp.url(&attr(&page.body, "data-finish").unwrap()),
            csp: page.headers["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned(),
        }
    }

    /// What the page's script reads: (done, answered, total).
    async fn front_status(&self, round: &FrontRound) -> (bool, u64, u64) {
        let page = Browser::new().get(&round.status).await;
        let json: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        (
            json["done"].as_bool().unwrap(),
            json["answered"].as_u64().unwrap(),
            json["total"].as_u64().unwrap(),
        )
    }
}

/// Loads one iframe as the browser would, with no Tessera cookie (a cross-site frame has none):
/// Tessera's redirect or form to the SP, the SP's answer back to Tessera. Returns Tessera's page in the
/// frame.
async fn drive_frame(url: String) -> Page {
    let browser = Browser::new();
    let first = browser.get(&url).await;
    if first.status.is_redirection() {
        let at_sp = browser.get(&first.location().unwrap()).await;
        assert_eq!(at_sp.status, StatusCode::FOUND, "{}", at_sp.body);
        browser.get(&at_sp.location().unwrap()).await
    } else {
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        let to_sp = vec![(
            "SAMLRequest".to_owned(),
            first.field("SAMLRequest").unwrap(),
        )];
        let at_sp = browser.post(&first.form_action().unwrap(), &to_sp).await;
        assert_eq!(at_sp.status, StatusCode::OK, "{}", at_sp.body);
        let mut back = vec![(
            "SAMLResponse".to_owned(),
            at_sp.field("SAMLResponse").unwrap(),
        )];
        if let Some(relay) = at_sp.field("RelayState") {
            back.push(("RelayState".to_owned(), relay));
        }
        browser.post(&at_sp.form_action().unwrap(), &back).await
    }
}

/// Drives every frame at once, each cut off after the deadline plus a little (a hanging SP's frame
/// gives None), as the browser's page gives up on them.
async fn drive_frames(round: &FrontRound) -> Vec<Option<Page>> {
    let tasks: Vec<_> = round
        .frames
        .iter()
        .map(|url| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_millis(SLO_TIMEOUT_MS + 300),
                drive_frame(url.clone()),
            ))
        })
        .collect();
    let mut pages = Vec::new();
    for task in tasks {
        pages.push(task.await.unwrap().ok());
    }
    pages
}

/// Front channel: two SPs without SOAP (one by HTTP-Redirect, one by HTTP-POST) are told through iframes
/// after the back channel; the session ends before the round; when both confirm, the initiator hears
/// Success, and the finish step works once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_channel_all_confirm() {
    let w = World::new(&Store::redis("slo_front_all").await).await;
    let alpha = w.sp("alpha", Mode::Samael).await;
    let front = w.sp("front", Mode::FrontOk).await;
    let posty = w.sp("posty", Mode::FrontPost).await;
    let gamma = w.sp("gamma", Mode::Success).await;
    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    for sp in [&alpha, &front, &posty, &gamma] {
        w.sso(&browser, sp).await;
    }
    let at_front = w.participant("alice", &front).await;
    let at_posty = w.participant("alice", &posty).await;
    let at_gamma = w.participant("alice", &gamma).await;

    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let page = browser.get(&w.redirect_url(&request, &gamma.key)).await;
    let round = w.front_round(&page);
    // The session ended before the round, and the back channel is done.
    assert!(w.sessions("alice").await.is_empty());
    assert!(!w.signed_in(&browser).await);
    assert_eq!(alpha.received().len(), 1);
    assert!(front.received().is_empty());
    assert_eq!(round.frames.len(), 2);
    // Frames may show Tessera and the two front-channel SPs' origins, nothing else.
    assert!(
        round
            .csp
            .contains(&format!("frame-src 'self' {} {};", front.base, posty.base)),
        "{}",
        round.csp
    );
    assert!(!round.csp.contains(&alpha.base), "{}", round.csp);
    assert!(
        round.csp.contains("frame-ancestors 'none'"),
        "{}",
        round.csp
    );
    // Only the counts: on a loaded machine the deadline may already have passed (then `done` is true).
    let (_, answered, total) = w.front_status(&round).await;
    assert_eq!((answered, total), (0, 2));

    for done in drive_frames(&round).await {
        let done = done.expect("frame finished");
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert!(done.text().contains(": signed out"), "{}", done.body);
        assert!(done.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'self'"));
    }
    assert_eq!(
        front.received(),
        vec![(
            at_front.name_id.clone(),
            vec![at_front.session_index.clone()]
        )]
    );
    assert_eq!(
        posty.received(),
        vec![(
            at_posty.name_id.clone(),
            vec![at_posty.session_index.clone()]
        )]
    );
    assert_eq!(w.front_status(&round).await, (true, 2, 2));

    let finish = browser.get(&round.finish).await;
    let xml = w.redirect_response(&finish, &gamma, &request.id);
    assert_eq!(status_codes(&xml), vec![SUCCESS.to_owned()], "{xml}");
    // Single use: a second finish answers nothing, and the frames are gone.
    let again = browser.get(&round.finish).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    let frame = Browser::new().get(&round.frames[0]).await;
    assert_eq!(frame.status, StatusCode::NOT_FOUND, "{}", frame.body);
}

/// Front channel with one SP that never answers and one whose answer is signed with the wrong key, and
/// a LogoutResponse answering no request of ours: neither counts, the round ends at the deadline, and
/// the initiator (by HTTP-POST) hears Success + PartialLogout (saml-core 3.7.3.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_channel_hang_and_forgery_partial() {
    let w = World::new(&Store::Memory).await;
    let good = w.sp("good", Mode::FrontOk).await;
    let hanging = w.sp("hanging", Mode::FrontHang).await;
    let forged = w.sp("forged", Mode::FrontWrongKey).await;
    let gamma = w.sp("gamma", Mode::Success).await;
    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    for sp in [&good, &hanging, &forged, &gamma] {
        w.sso(&browser, sp).await;
    }
    let at_gamma = w.participant("alice", &gamma).await;
    let request = w.logout_request(&gamma, &at_gamma, &at_gamma.session_index);
    let started = Instant::now();
    let page = browser
        .post(&w.slo_url(), &w.post_form(&request, &gamma.key))
        .await;
    let round = w.front_round(&page);
    assert!(w.sessions("alice").await.is_empty());
    assert_eq!(round.frames.len(), 3);

    let pages = drive_frames(&round).await;
    let good_page = pages[0].as_ref().unwrap();
    assert!(
        good_page.text().contains("App good: signed out"),
        "{}",
        good_page.body
    );
    assert!(pages[1].is_none(), "the hanging SP answered");
    let forged_page = pages[2].as_ref().unwrap();
    assert_eq!(forged_page.status, StatusCode::BAD_REQUEST);
    assert!(
        forged_page.text().contains("not accepted"),
        "{}",
        forged_page.body
    );
    assert_eq!(forged.received().len(), 1);

    // A LogoutResponse with good's valid signature but an InResponseTo we never sent counts for nothing.
    let stray = LogoutResponse {
        id: random_id(),
        in_response_to: Some(random_id()),
        issue_instant: Utc::now(),
        issuer: good.entity_id.clone(),
        destination: Some(w.slo_url()),
        status: Status::success(),
    };
    let url = encode_redirect(
        MessageKind::Response,
        stray.to_element().to_xml().as_bytes(),
        None,
        &w.slo_url(),
        Some((good.key.private_key(), good.key.algorithm())),
    )
    .unwrap();
    let refused = Browser::new().get(&url).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    // Answers to the request sent to the hanging SP that are not the hanging SP's own signed one: one
    // naming good as Issuer (signed with the hanging SP's key even), and the right Issuer unsigned.
    let to_hanging = Browser::new().get(&round.frames[1]).await;
    let location = to_hanging.location().unwrap();
    let (_, query) = location.split_once('?').unwrap();
    let sent = decode_redirect(query.as_bytes(), &Limits::default()).unwrap();
    let hanging_request_id = sp_context(&format!("{}/slo", hanging.base), |ctx| {
        parse_logout_request(&sent.xml, ctx)
            .unwrap()
            .id()
            .to_owned()
    });
    let cross = LogoutResponse {
        in_response_to: Some(hanging_request_id),
        ..stray
    };
    let url = encode_redirect(
        MessageKind::Response,
        cross.to_element().to_xml().as_bytes(),
        None,
        &w.slo_url(),
        Some((hanging.key.private_key(), hanging.key.algorithm())),
    )
    .unwrap();
    let refused = Browser::new().get(&url).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let unsigned = LogoutResponse {
        id: random_id(),
        issuer: hanging.entity_id.clone(),
        ..cross
    };
    let url = encode_redirect(
        MessageKind::Response,
        unsigned.to_element().to_xml().as_bytes(),
        None,
        &w.slo_url(),
        None,
    )
    .unwrap();
    let refused = Browser::new().get(&url).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    // Only good's answer counts; the page may move on once the deadline passed.
    let (_, answered, total) = w.front_status(&round).await;
    assert_eq!((answered, total), (1, 3));
    let done_at = loop {
        let (done, _, _) = w.front_status(&round).await;
        if done {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_millis(SLO_TIMEOUT_MS + 3000));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        done_at >= Duration::from_millis(SLO_TIMEOUT_MS - 50),
        "{done_at:?}"
    );

    let finish = browser.get(&round.finish).await;
    let xml = w.post_response(&finish, &gamma, &request.id);
    assert_eq!(
        status_codes(&xml),
        vec![SUCCESS.to_owned(), PARTIAL.to_owned()],
        "{xml}"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(SLO_TIMEOUT_MS + 3000),
        "{took:?}"
    );
    let again = browser.get(&round.finish).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
}

/// Portal sign-out with front-channel SPs: the signed-out page (after the round) says which app
/// confirmed, which failed, and which has no SingleLogoutService at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_front_channel_lists_results() {
    let w = World::new(&Store::Memory).await;
    let good = w.sp("good", Mode::FrontOk).await;
    let forged = w.sp("forged", Mode::FrontWrongKey).await;
    let legacy = w.sp("legacy", Mode::NoSoap).await;
    let browser = Browser::new();
    browser.sign_in(&w.idp, "alice").await;
    for sp in [&good, &forged, &legacy] {
        w.sso(&browser, sp).await;
    }
    let apps = browser.get(&w.idp.url("/apps")).await;
    let csrf = apps.field("csrf_token").unwrap();
    let page = browser
        .post(&w.idp.url("/logout"), &[("csrf_token".to_owned(), csrf)])
        .await;
    let round = w.front_round(&page);
    assert_eq!(round.frames.len(), 2);
    assert!(w.sessions("alice").await.is_empty());
    drive_frames(&round).await;
    let (_, answered, total) = w.front_status(&round).await;
    assert_eq!((answered, total), (1, 2));

    let page = browser.get(&round.finish).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let text = page.text();
    for (sp, note) in [
        (&good, "signed out"),
        (
            &forged,
            "sign-out failed: close your browser or sign out there",
        ),
        (
            &legacy,
            "not signed out: close your browser or sign out there",
        ),
    ] {
        let line = format!("<strong>{}</strong>: {note}</li>", sp.display_name);
        assert!(text.contains(&line), "missing {line:?} in {text}");
    }
    w.sso_asks_to_log_in(&browser, &good).await;
}

/// The front-channel page in a real browser (headless Chromium): portal sign-out loads one iframe per
/// SP (by HTTP-Redirect and by HTTP-POST, the Content-Security-Policy allowing their origins), the
/// page's script notices the answers, stops waiting for the SP that never answers at the deadline, and
/// lands on the signed-out page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_channel_in_chromium() {
    let w = World::new(&Store::Memory).await;
    let good = w.sp("good", Mode::FrontOk).await;
    let posty = w.sp("posty", Mode::FrontPost).await;
    let hanging = w.sp("hanging", Mode::FrontHang).await;

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let chromium = driver.session(profile.path()).await;
    chromium.goto(&w.idp.url("/login")).await;
    chromium.type_into("#username", "alice").await;
    chromium.type_into("#password", PASSWORD).await;
    chromium
        .click("form[action='/login'] button[type=submit]")
        .await;
    chromium.find("form[action='/logout'] button").await;
    for sp in [&good, &posty, &hanging] {
        let url = w.idp.url(&format!(
            "/saml/init?sp={}",
            url::form_urlencoded::byte_serialize(sp.entity_id.as_bytes()).collect::<String>()
        ));
        chromium.goto(&url).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.sessions("alice").await.first().map_or(0, Vec::len) < 3 {
        assert!(Instant::now() < deadline, "SSO did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    chromium.goto(&w.idp.url("/apps")).await;
    let started = Instant::now();
    chromium.click("form[action='/logout'] button").await;
    chromium.find("ul.slo li.slo-open").await;
    let took = started.elapsed();
    assert!(chromium.url().await.ends_with("/finish"));
    let source = chromium.source().await;
    for (sp, note) in [
        (&good, "signed out"),
        (&posty, "signed out"),
        (
            &hanging,
            "sign-out failed: close your browser or sign out there",
        ),
    ] {
        let line = format!("<strong>{}</strong>: {note}</li>", sp.display_name);
        assert!(source.contains(&line), "missing {line:?} in {source}");
    }
    assert_eq!(good.received().len(), 1);
    assert_eq!(posty.received().len(), 1);
    assert!(w.sessions("alice").await.is_empty());
    assert!(
        took >= Duration::from_millis(SLO_TIMEOUT_MS - 50) && took < Duration::from_secs(10),
        "{took:?}"
    );
    chromium.quit().await;
}
