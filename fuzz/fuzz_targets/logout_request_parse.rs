//! LogoutRequest and LogoutResponse parsing (saml-core 3.7) and their signature checks, and the SOAP
//! envelope a back-channel LogoutResponse arrives in (saml-bindings 3.2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::saml::binding::soap::unwrap_soap;
use tessera::saml::logout::{parse_logout_request, parse_logout_response};
use tessera::saml::xmldsig::verify::VerifyPolicy;

#[path = "context.rs"]
mod context;

fuzz_target!(|data: &[u8]| {
    let ctx = context::context();
    if let Ok(request) = parse_logout_request(data, &ctx) {
        let _ = request.verify_post(context::sp_keys(), &VerifyPolicy::default(), true);
    }
    if let Ok(response) = parse_logout_response(data, &ctx) {
        let _ = response.verify_post(context::sp_keys(), &VerifyPolicy::default(), false);
    }
    if let Ok(inner) = unwrap_soap(data, &ctx.limits) {
        if let Ok(response) = parse_logout_response(&inner, &ctx) {
            let _ = response.verify_soap(context::sp_keys(), &VerifyPolicy::default(), true);
        }
    }
});
