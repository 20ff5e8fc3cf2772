//! HTTP-Redirect decoding (saml-bindings 3.4.4.1) of an arbitrary query string: percent-decoding,
//! base64, bounded inflation, the signed-octets reconstruction and the signature check, then the
//! AuthnRequest / LogoutRequest parsers on whatever inflates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::saml::authn_request::parse_authn_request;
use tessera::saml::binding::redirect::decode_redirect;
use tessera::saml::binding::Limits;
use tessera::saml::logout::parse_logout_request;

#[path = "context.rs"]
mod context;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode_redirect(data, &Limits::DEFAULT) else {
        return;
    };
    assert!(message.xml.len() <= Limits::DEFAULT.max_inflated);
    if let Some(relay) = &message.relay_state {
        assert!(relay.len() <= 80);
    }
    let ctx = context::context();
    if let Ok(request) = parse_authn_request(&message.xml, &ctx) {
        let _ =
            request.verify_redirect(message.signature.as_ref(), context::sp_keys(), false, true);
    }
    if let Ok(request) = parse_logout_request(&message.xml, &ctx) {
        let _ =
            request.verify_redirect(message.signature.as_ref(), context::sp_keys(), true, false);
    }
});
