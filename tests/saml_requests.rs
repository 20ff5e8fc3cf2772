//! Inbound and outbound SAML protocol messages other than the Response, end to end: requests produced by
//! an independent SP implementation (samael) travel through our bindings into our parsers, signed
//! requests verify (and tampered ones do not), and the logout messages we build are read back by both
//! our parser and samael's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use openssl::pkey::{PKey, Public};

use samael::schema::{
    AuthnContextClassRef, AuthnContextComparison, RequestedAuthnContext as SamaelRac,
};
use samael::service_provider::ServiceProviderBuilder;
use samael::traits::ToXml;

use tessera::saml::authn_request::{parse_authn_request, Comparison, RequestError};
use tessera::saml::binding::{self, decode_post, decode_redirect, encode_redirect, MessageKind};
use tessera::saml::envelope::{new_id, EnvelopeError, RequestContext, Trust};
use tessera::saml::logout::{
    parse_logout_request, parse_logout_response, LogoutError, LogoutRequest, LogoutResponse,
    NameId, REASON_ADMIN,
};
use tessera::saml::status::{Status, StatusCode, SubStatusCode};
use tessera::saml::xml::{self, ns, Element, Limits};
use tessera::saml::xmldsig::keys::{generate_self_signed, KeyKind, SigningKey};
use tessera::saml::xmldsig::sign::sign_enveloped;
use tessera::saml::xmldsig::verify::{Error as SignatureError, VerifyPolicy};

const SSO: &str = "https://idp.example.org/saml/sso";
const SLO: &str = "https://idp.example.org/saml/slo";
const SP: &str = "https://sp.example.com/metadata";
const ACS: &str = "https://sp.example.com/saml/acs";

fn context<'a>(now: DateTime<Utc>, destinations: &'a [String]) -> RequestContext<'a> {
    RequestContext {
        now,
        max_clock_skew: Duration::seconds(90),
        max_age: Duration::minutes(5),
        destinations,
        limits: Limits::default(),
    }
}

fn sso() -> Vec<String> {
    vec![SSO.to_owned()]
}

fn key(kind: KeyKind) -> (SigningKey, PKey<Public>) {
    let (key, _, _) =
        generate_self_signed(kind, "sp.example.com", Utc::now() - Duration::days(1), 30).unwrap();
    let public = key.certificate().public_key().unwrap();
    (key, public)
}

/// An AuthnRequest as samael's ServiceProvider makes it, with the optional parts samael's SP does not fill
/// in itself (RequestedAuthnContext, IsPassive) set on the request it returns.
fn samael_request() -> samael::schema::AuthnRequest {
    let sp = ServiceProviderBuilder::default()
        .entity_id(SP.to_string())
        .acs_url(ACS.to_string())
        .authn_name_id_format("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".to_string())
        .force_authn(true)
        .build()
        .unwrap();
    let mut request = sp.make_authentication_request(SSO).unwrap();
    request.is_passive = Some(false);
    request.requested_authn_context = Some(SamaelRac {
        authn_context_class_refs: Some(vec![AuthnContextClassRef {
            value: Some("urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport".into()),
        }]),
        authn_context_decl_refs: None,
        comparison: Some(AuthnContextComparison::Minimum),
    });
    request
}

fn query_of(url: &url::Url) -> String {
    url.query().unwrap().to_owned()
}

fn post_body(xml: &str, relay_state: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(xml);
    let encoded: String = url::form_urlencoded::byte_serialize(b64.as_bytes()).collect();
    format!("SAMLRequest={encoded}&RelayState={relay_state}")
}

fn assert_samael_fields(
    request: &tessera::saml::authn_request::AuthnRequest,
    samael: &samael::schema::AuthnRequest,
) {
    assert_eq!(request.id, samael.id);
    assert_eq!(request.version, "2.0");
    // samael writes milliseconds, which survive the round trip.
    assert_eq!(
        request.issue_instant.timestamp_millis(),
        samael.issue_instant.timestamp_millis()
    );
    assert_eq!(request.issuer, SP);
    assert_eq!(request.destination.as_deref(), Some(SSO));
    assert_eq!(request.acs_url.as_deref(), Some(ACS));
    assert_eq!(request.acs_index, None);
    assert_eq!(
        request.protocol_binding.as_deref(),
        Some("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")
    );
    let policy = request.name_id_policy.as_ref().unwrap();
    assert_eq!(
        policy.format.as_deref(),
        Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent")
    );
    assert!(policy.allow_create);
    assert_eq!(policy.sp_name_qualifier, None);
    assert!(request.force_authn);
    assert!(!request.is_passive);
    let rac = request.requested_authn_context.as_ref().unwrap();
    assert_eq!(rac.comparison, Comparison::Minimum);
    assert_eq!(
        rac.class_refs,
        vec!["urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport".to_string()]
    );
}

#[test]
fn samael_redirect_request_parses_with_all_fields() {
    let samael = samael_request();
    let url = samael.redirect("state-1").unwrap().unwrap();
    let message = decode_redirect(query_of(&url).as_bytes(), &binding::Limits::default()).unwrap();
    assert_eq!(message.kind, MessageKind::Request);
    assert_eq!(message.relay_state.as_deref(), Some("state-1"));
    let destinations = sso();
    let unverified =
        parse_authn_request(&message.xml, &context(Utc::now(), &destinations)).unwrap();
    assert_eq!(unverified.issuer(), SP);
    let verified = unverified
        .verify_redirect(message.signature.as_ref(), &[], false, false)
        .unwrap();
    assert_eq!(verified.trust(), &Trust::Unsigned);
    assert_samael_fields(&verified, &samael);
}

#[test]
fn samael_post_request_parses_with_all_fields() {
    let samael = samael_request();
    let body = post_body(&samael.to_string().unwrap(), "s2");
    let message = decode_post(body.as_bytes(), &binding::Limits::default()).unwrap();
    let destinations = sso();
    let unverified =
        parse_authn_request(&message.xml, &context(Utc::now(), &destinations)).unwrap();
    let verified = unverified
        .verify_post(&[], &VerifyPolicy::default(), false)
        .unwrap();
    assert!(!verified.trust().is_signed());
    assert_samael_fields(&verified, &samael);
}

#[test]
fn samael_signed_redirect_verifies_and_wrong_key_fails() {
    let (sp_key, sp_public) = key(KeyKind::Rsa2048);
    let (_, other_public) = key(KeyKind::Rsa2048);
    let url = samael_request()
        .signed_redirect("s3", sp_key.private_key())
        .unwrap()
        .unwrap();
    let destinations = sso();
    let now = Utc::now();

    let message = decode_redirect(query_of(&url).as_bytes(), &binding::Limits::default()).unwrap();
    assert!(message.signature.is_some());
    let verified = parse_authn_request(&message.xml, &context(now, &destinations))
        .unwrap()
        .verify_redirect(
            message.signature.as_ref(),
            std::slice::from_ref(&sp_public),
            false,
            true,
        )
        .unwrap();
    assert_eq!(verified.trust(), &Trust::RedirectSignature);
    assert_eq!(verified.issuer, SP);

    let wrong = parse_authn_request(&message.xml, &context(now, &destinations))
        .unwrap()
        .verify_redirect(message.signature.as_ref(), &[other_public], false, true);
    assert!(matches!(
        wrong,
        Err(EnvelopeError::RedirectSignature(
            binding::Error::BadSignature
        ))
    ));

    // The query signature belongs to the query: the same signature over another request fails.
    let mut other = samael_request();
    other.assertion_consumer_service_url = Some("https://evil.example/acs".into());
    let other_url = other.redirect("s3").unwrap().unwrap();
    let swapped = format!(
        "{}&SigAlg={}&Signature={}",
        query_of(&other_url),
        url.query_pairs()
            .find(|(k, _)| k == "SigAlg")
            .map(|(_, v)| form(&v))
            .unwrap(),
        url.query_pairs()
            .find(|(k, _)| k == "Signature")
            .map(|(_, v)| form(&v))
            .unwrap(),
    );
    let message = decode_redirect(swapped.as_bytes(), &binding::Limits::default()).unwrap();
    let swapped = parse_authn_request(&message.xml, &context(now, &destinations))
        .unwrap()
        .verify_redirect(message.signature.as_ref(), &[sp_public], false, true);
    assert!(matches!(
        swapped,
        Err(EnvelopeError::RedirectSignature(
            binding::Error::BadSignature
        ))
    ));
}

fn form(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// samael's request XML, signed with our enveloped signer.
fn signed_request_xml(
    key: &SigningKey,
    edit: impl FnOnce(&mut samael::schema::AuthnRequest),
) -> String {
    let mut samael = samael_request();
    edit(&mut samael);
    let mut element =
        xml::parse(samael.to_string().unwrap().as_bytes(), &Limits::default()).unwrap();
    sign_enveloped(&mut element, key).unwrap();
    element.to_xml()
}

#[test]
fn signed_post_request_verifies_and_tampering_fails() {
    let destinations = sso();
    let now = Utc::now();
    for kind in [KeyKind::Rsa2048, KeyKind::EcP256] {
        let (sp_key, sp_public) = key(kind);
        let signed = signed_request_xml(&sp_key, |_| {});
        let body = post_body(&signed, "");
        let message = decode_post(body.as_bytes(), &binding::Limits::default()).unwrap();
        let unverified = parse_authn_request(&message.xml, &context(now, &destinations)).unwrap();
        assert!(unverified.has_xml_signature());
        let verified = unverified
            .verify_post(
                std::slice::from_ref(&sp_public),
                &VerifyPolicy::default(),
                true,
            )
            .unwrap();
        assert!(matches!(verified.trust(), Trust::XmlSignature(_)));
        assert_eq!(verified.acs_url.as_deref(), Some(ACS));

        // Changing the ACS URL after signing breaks the digest.
        let tampered = signed.replace(ACS, "https://evil.example/acs");
        assert_ne!(tampered, signed);
        let result = parse_authn_request(tampered.as_bytes(), &context(now, &destinations))
            .unwrap()
            .verify_post(
                std::slice::from_ref(&sp_public),
                &VerifyPolicy::default(),
                true,
            );
        assert!(
            matches!(
                result,
                Err(EnvelopeError::Signature(SignatureError::DigestMismatch))
            ),
            "{result:?}"
        );

        // The right signature checked with a key that is not the SP's fails.
        let (_, other_public) = key(kind);
        let result = parse_authn_request(signed.as_bytes(), &context(now, &destinations))
            .unwrap()
            .verify_post(&[other_public], &VerifyPolicy::default(), false);
        assert!(
            matches!(
                result,
                Err(EnvelopeError::Signature(SignatureError::BadSignature))
            ),
            "{result:?}"
        );

        // A present signature can be neither skipped nor carried through the Redirect binding.
        let unverified =
            parse_authn_request(signed.as_bytes(), &context(now, &destinations)).unwrap();
        assert!(matches!(
            unverified.clone().accept_unsigned(false),
            Err(EnvelopeError::SignatureNotChecked)
        ));
        let url =
            encode_redirect(MessageKind::Request, signed.as_bytes(), None, SSO, None).unwrap();
        let query = url.split_once('?').unwrap().1;
        let message = decode_redirect(query.as_bytes(), &binding::Limits::default()).unwrap();
        let result = parse_authn_request(&message.xml, &context(now, &destinations))
            .unwrap()
            .verify_redirect(None, &[sp_public], false, false);
        assert!(matches!(result, Err(EnvelopeError::SignatureInRedirect)));
    }
}

#[test]
fn signed_request_without_destination_is_refused() {
    let (sp_key, sp_public) = key(KeyKind::Rsa2048);
    let signed = signed_request_xml(&sp_key, |r| r.destination = None);
    let destinations = sso();
    let result = parse_authn_request(signed.as_bytes(), &context(Utc::now(), &destinations))
        .unwrap()
        .verify_post(&[sp_public], &VerifyPolicy::default(), true);
    assert!(matches!(result, Err(EnvelopeError::DestinationRequired)));
}

#[test]
fn required_but_unsigned_is_refused() {
    let xml = samael_request().to_string().unwrap();
    let destinations = sso();
    let (_, sp_public) = key(KeyKind::EcP256);
    let now = Utc::now();
    let parse = || parse_authn_request(xml.as_bytes(), &context(now, &destinations)).unwrap();
    assert!(matches!(
        parse().verify_post(
            std::slice::from_ref(&sp_public),
            &VerifyPolicy::default(),
            true
        ),
        Err(EnvelopeError::SignatureRequired)
    ));
    assert!(matches!(
        parse().verify_redirect(None, &[sp_public], false, true),
        Err(EnvelopeError::SignatureRequired)
    ));
    assert!(matches!(
        parse().accept_unsigned(true),
        Err(EnvelopeError::SignatureRequired)
    ));
}

fn envelope_error(result: Result<impl std::fmt::Debug, RequestError>) -> EnvelopeError {
    match result {
        Err(RequestError::Envelope(e)) => e,
        other => panic!("expected an envelope error, got {other:?}"),
    }
}

#[test]
fn time_and_destination_are_enforced_on_samael_requests() {
    let samael = samael_request();
    let xml = samael.to_string().unwrap();
    let issued = samael.issue_instant;
    let destinations = sso();
    // Six minutes and a half later: past max_age (5 min) plus skew (90 s).
    let late = parse_authn_request(
        xml.as_bytes(),
        &context(issued + Duration::seconds(391), &destinations),
    );
    assert!(matches!(
        envelope_error(late),
        EnvelopeError::IssueInstantTooOld { .. }
    ));
    // Our clock two minutes behind the SP's: beyond the 90 s skew.
    let early = parse_authn_request(
        xml.as_bytes(),
        &context(issued - Duration::seconds(120), &destinations),
    );
    assert!(matches!(
        envelope_error(early),
        EnvelopeError::IssueInstantInFuture { .. }
    ));
    let elsewhere = vec!["https://idp.example.org/other".to_owned()];
    let wrong = parse_authn_request(xml.as_bytes(), &context(issued, &elsewhere));
    assert!(matches!(envelope_error(wrong), EnvelopeError::WrongDestination(d) if d == SSO));
}

#[test]
fn hostile_xml_is_refused_through_the_bindings() {
    let destinations = sso();
    let now = Utc::now();
    let request = samael_request().to_string().unwrap();
    let body = request.split_once("?>").unwrap().1.to_owned();
    let cases = [
        (
            format!(
                r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]>{}"#,
                body.replace(SP, "&lol2;")
            ),
            xml::Error::Dtd,
        ),
        (
            format!(
                r#"<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>{}"#,
                body.replace(SP, "&xxe;")
            ),
            xml::Error::Dtd,
        ),
        (
            body.replacen("><", "><?php evil ?><", 1),
            xml::Error::ProcessingInstruction,
        ),
    ];
    for (xml_text, expected) in cases {
        let message = decode_post(
            post_body(&xml_text, "").as_bytes(),
            &binding::Limits::default(),
        )
        .unwrap();
        let result = parse_authn_request(&message.xml, &context(now, &destinations));
        assert!(
            matches!(envelope_error(result), EnvelopeError::Xml(ref e) if *e == expected),
            "{expected:?}"
        );
    }
    // An undeclared entity without a DTD is malformed, not expanded.
    let undeclared = body.replace(SP, "&xxe;");
    let result = parse_authn_request(undeclared.as_bytes(), &context(now, &destinations));
    assert!(matches!(
        envelope_error(result),
        EnvelopeError::Xml(xml::Error::Malformed(_))
    ));
    // Oversized before parsing.
    let small = RequestContext {
        limits: Limits {
            max_bytes: 200,
            ..Limits::default()
        },
        ..context(now, &destinations)
    };
    let result = parse_authn_request(body.as_bytes(), &small);
    assert!(matches!(
        envelope_error(result),
        EnvelopeError::Xml(xml::Error::TooLarge { .. })
    ));
    // A comment inside the Issuer (the NameID-comment trick, aimed at SP lookup).
    let commented = body.replace(SP, "https://sp.example.com<!---->/metadata");
    let result = parse_authn_request(commented.as_bytes(), &context(now, &destinations));
    assert!(matches!(
        envelope_error(result),
        EnvelopeError::Issuer(xml::Error::MixedContent(_))
    ));
}

fn logout_request(now: DateTime<Utc>) -> LogoutRequest {
    LogoutRequest {
        id: new_id([0x5a; 20]),
        issue_instant: now,
        issuer: "https://idp.example.org".into(),
        destination: Some(SLO.into()),
        name_id: NameId {
            value: "7f3c9a".into(),
            format: Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into()),
            sp_name_qualifier: Some(SP.into()),
            name_qualifier: Some("https://idp.example.org".into()),
        },
        session_indexes: vec!["_sess1".into()],
        not_on_or_after: Some(now + Duration::minutes(2)),
        reason: Some(REASON_ADMIN.into()),
    }
}

#[test]
fn signed_logout_request_round_trips_and_samael_reads_it() {
    let now = Utc::now();
    let request = logout_request(now);
    let (idp_key, idp_public) = key(KeyKind::Rsa2048);
    let mut element = request.to_element();
    sign_enveloped(&mut element, &idp_key).unwrap();
    let names: Vec<&str> = element.elements().map(|e| e.local.as_str()).collect();
    assert_eq!(names, ["Issuer", "Signature", "NameID", "SessionIndex"]);
    let xml_text = element.to_xml();

    let slo = vec![SLO.to_owned()];
    let verified = parse_logout_request(xml_text.as_bytes(), &context(now, &slo))
        .unwrap()
        .verify_post(
            std::slice::from_ref(&idp_public),
            &VerifyPolicy::default(),
            true,
        )
        .unwrap();
    assert_eq!(verified.message().id, request.id);
    assert_eq!(verified.message().name_id, request.name_id);
    assert_eq!(verified.message().session_indexes, request.session_indexes);
    assert_eq!(
        verified.message().issue_instant.timestamp_millis(),
        now.timestamp_millis()
    );

    let tampered = xml_text.replace("7f3c9a", "00000a");
    let result = parse_logout_request(tampered.as_bytes(), &context(now, &slo))
        .unwrap()
        .verify_post(&[idp_public], &VerifyPolicy::default(), true);
    assert!(matches!(
        result,
        Err(EnvelopeError::Signature(SignatureError::DigestMismatch))
    ));

    // samael, an independent parser, reads the same message.
    let theirs: samael::schema::LogoutRequest = xml_text.parse().unwrap();
    assert_eq!(theirs.id.as_deref(), Some(request.id.as_str()));
    assert_eq!(theirs.version.as_deref(), Some("2.0"));
    assert_eq!(theirs.destination.as_deref(), Some(SLO));
    assert_eq!(
        theirs.issuer.and_then(|i| i.value).as_deref(),
        Some("https://idp.example.org")
    );
    let name_id = theirs.name_id.unwrap();
    assert_eq!(name_id.value, "7f3c9a");
    // (samael maps NameID's Format as a child element rather than an attribute, so it reads None there.)
    assert_eq!(
        theirs.issue_instant.map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    assert!(theirs.signature.is_some());
}

#[test]
fn samael_logout_request_parses() {
    let now = Utc::now();
    let theirs = samael::schema::LogoutRequest {
        id: Some("_samael-logout".into()),
        version: Some("2.0".into()),
        issue_instant: Some(now),
        destination: Some(SLO.into()),
        issuer: Some(samael::schema::Issuer {
            value: Some(SP.into()),
            ..Default::default()
        }),
        signature: None,
        session_index: None,
        name_id: Some(samael::schema::NameID {
            format: None,
            value: "alice".into(),
        }),
    };
    let slo = vec![SLO.to_owned()];
    let ours = parse_logout_request(theirs.to_string().unwrap().as_bytes(), &context(now, &slo))
        .unwrap()
        .verify_redirect(None, &[], false, false)
        .unwrap()
        .into_message();
    assert_eq!(ours.issuer, SP);
    assert_eq!(ours.name_id.value, "alice");
    assert!(ours.session_indexes.is_empty());
}

#[test]
fn logout_response_round_trips_signed_and_through_redirect() {
    let now = Utc::now();
    let response = LogoutResponse {
        id: new_id([1; 20]),
        in_response_to: Some("_samael-logout".into()),
        issue_instant: now,
        issuer: SP.into(),
        destination: Some(SLO.into()),
        status: Status::error(StatusCode::Success, SubStatusCode::PartialLogout),
    };
    let slo = vec![SLO.to_owned()];
    let (sp_key, sp_public) = key(KeyKind::EcP256);

    let mut element = response.to_element();
    assert!(element.elements().next().unwrap().is(ns::SAML, "Issuer"));
    sign_enveloped(&mut element, &sp_key).unwrap();
    let verified = parse_logout_response(element.to_xml().as_bytes(), &context(now, &slo))
        .unwrap()
        .verify_post(
            std::slice::from_ref(&sp_public),
            &VerifyPolicy::default(),
            true,
        )
        .unwrap();
    assert_eq!(verified.message().status, response.status);
    assert_eq!(verified.message().in_response_to, response.in_response_to);

    // Redirect: the unsigned XML, signed in the query string.
    let unsigned: Element = response.to_element();
    let url = encode_redirect(
        MessageKind::Response,
        unsigned.to_xml().as_bytes(),
        Some("rs"),
        SLO,
        Some((sp_key.private_key(), sp_key.algorithm())),
    )
    .unwrap();
    let message = decode_redirect(
        url.split_once('?').unwrap().1.as_bytes(),
        &binding::Limits::default(),
    )
    .unwrap();
    assert_eq!(message.kind, MessageKind::Response);
    let verified = parse_logout_response(&message.xml, &context(now, &slo))
        .unwrap()
        .verify_redirect(message.signature.as_ref(), &[sp_public], false, true)
        .unwrap();
    assert_eq!(verified.into_message().issuer, SP);

    let wrong_root = parse_logout_request(&message.xml, &context(now, &slo));
    assert!(matches!(
        wrong_root,
        Err(LogoutError::Envelope(EnvelopeError::WrongRoot { .. }))
    ));
}
