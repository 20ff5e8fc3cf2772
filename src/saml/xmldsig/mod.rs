//! XML Signature: exclusive canonicalization, signing and verification.
pub mod algorithms;
pub mod c14n;
pub mod keys;
pub mod sign;
pub mod verify;
