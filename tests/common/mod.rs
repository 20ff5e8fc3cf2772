//! Shared test fixtures. Each integration test binary uses only some of them, hence the allow.
#![allow(dead_code)]

pub mod idp;
pub mod postgres;
pub mod redis;
pub mod webdriver;
