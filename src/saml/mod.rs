//! The SAML 2.0 protocol, with no IO and no clock.

pub mod authn_request;
pub mod binding;
pub mod encrypt;
pub mod envelope;
pub mod logout;
pub mod metadata;
pub mod response;
pub mod status;
pub mod xml;
pub mod xmldsig;
