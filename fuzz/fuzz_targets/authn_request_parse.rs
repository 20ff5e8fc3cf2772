//! An AuthnRequest as it arrives by HTTP-POST: strict XML parsing, the envelope and AuthnRequest rules,
//! then the enveloped-signature check (exclusive c14n, digest, RSA) against the SP's key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::saml::authn_request::parse_authn_request;
use tessera::saml::xmldsig::verify::VerifyPolicy;

#[path = "context.rs"]
mod context;

fuzz_target!(|data: &[u8]| {
    let ctx = context::context();
    let Ok(request) = parse_authn_request(data, &ctx) else {
        return;
    };
    let _ = request.peek_for_logging();
    let _ = request
        .clone()
        .verify_post(context::sp_keys(), &VerifyPolicy::default(), true);
    let _ = request.verify_post(
        context::sp_keys(),
        &VerifyPolicy { allow_sha1: true },
        false,
    );
});
