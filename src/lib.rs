//! # Tessera, a SAML 2.0 identity provider
//!
//! `saml` is the protocol engine: parsing what SPs send, building and signing what Tessera sends. It does
//! no IO and never reads the clock; time and randomness are passed in.
//!
//! `session` keeps SSO sessions behind the `SessionStore` trait (Redis for production, memory for a single
//! node). `directory` is the SQL store of users, groups, roles and service providers.
//!
//! `events` is login monitoring: every sign-in attempt and SSO recorded in batches off the request
//! path, the brute-force lockout fed by the same attempts, and the dashboard's queries.
//!
//! `slo` is single logout: telling every SP of an ending session, concurrently and with a deadline.
//!
//! `sp_registration` registers SPs from uploaded metadata or a URL (fetched with a timeout and a size
//! limit, checked against a pinned signing certificate) and refreshes URL metadata on a schedule.
//!
//! `config` turns tessera.toml plus environment overrides into a validated `Config`. `web` is the axum
//! application: routes, handlers, pages, and the mapping of every error to a status and a page.
//!
//! `api` is the admin API under `/api/v1` (JSON, OpenAPI generated from the handlers): API tokens or
//! admin sessions, the delegated-administration permission matrix (`api::auth::authorize`), and the
//! audit trail of every admin change.

pub mod api;
pub mod config;
pub mod directory;
pub mod events;
pub mod idp;
pub mod keyring;
pub mod mfa;
pub mod policy;
pub mod saml;
pub mod session;
pub mod slo;
pub mod sp_registration;
pub mod web;
