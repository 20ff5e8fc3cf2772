//! SP metadata (saml-metadata): a lone EntityDescriptor or an aggregate, plus the pinned-certificate
//! signature check on the same input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openssl::x509::X509;
use tessera::saml::metadata::{parse_sp_metadata, verify_metadata_signature};

#[path = "context.rs"]
mod context;

fuzz_target!(|data: &[u8]| {
    if let Ok(sps) = parse_sp_metadata(data, context::now()) {
        for sp in &sps {
            let _ = sp.default_acs();
            let _ = sp.acs_by_index(1);
        }
    }
    if let Ok(pinned) = X509::from_pem(context::SP_CERT) {
        let _ = verify_metadata_signature(data, &pinned);
    }
});
