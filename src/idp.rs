//! The identity provider itself: the state a running Tessera holds, and the single function that decides
//! whether an assertion leaves ([`Idp::advance_sso`], and [`Idp::complete_sso`] over it). The web layer
//! only translates HTTP to calls here.
//!
//! Architecture Invariant: every assertion is built inside `advance_sso`, after the user's account, the
//! SP's state, the access policy (with the session's second factors and their age), the requested
//! authentication context and the app assignment were checked against the directory *at that moment*,
//! not at login. A second factor owed is [`SsoStep::SecondFactor`]: the web layer asks for it (or for
//! its enrolment) and calls `advance_sso` again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, SessionBackend};
use crate::directory::{self, Directory, NewUser, ServiceProvider, User, UserStatus};
use crate::events::{self, Enricher, Kind, LoginEvent, Recorder, RecorderSettings};
use crate::keyring::{self, KeyRing};
use crate::mfa::{self, Mfa, MfaKey, WebauthnSettings};
use crate::policy::{
    AccessRequest, Decision, DenyReason, IpRangeSet, MfaMethod, Outcome, PolicySet, SessionFacts,
    Subject,
};
use crate::saml::authn_request::{Comparison, RequestedAuthnContext};
use crate::saml::encrypt::{encrypt_assertion, DataEncryption};
use crate::saml::envelope::new_id;
use crate::saml::metadata::{self, build_idp_metadata, parse_sp_metadata, IdpMetadata, SpMetadata};
use crate::saml::response::{
    build_error_response, build_response, class_ref, persistent_name_id, AssertionContent,
    Attribute, ErrorResponse, NameId, NameIdFormat, SignatureTarget,
};
use crate::saml::status::{Status, StatusCode, SubStatusCode};
use crate::session::{
    self, AuthnMethod, MemoryStore, RedisStore, Session, SessionId, SessionStore, SpSession,
};

/// Why Tessera could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("directory: {0}")]
    Directory(#[from] directory::Error),
    #[error("session store: {0}")]
    Session(#[from] session::Error),
    #[error("keys: {0}")]
    Keys(#[from] keyring::Error),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("metadata: {0}")]
    Metadata(String),
    /// The MFA key or WebAuthn settings are unusable.
    #[error("MFA: {0}")]
    Mfa(#[from] mfa::Error),
}

/// Why an SSO did not end with an assertion, in terms a page can explain. SAML-level refusals that the SP
/// should hear about are not errors: they come back as [`SsoOutcome::Post`] carrying an error status.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("session store unavailable: {0}")]
    StoreUnavailable(session::Error),
    #[error("directory unavailable: {0}")]
    DirectoryUnavailable(directory::Error),
    #[error("unknown service provider {0:?}")]
    UnknownSp(String),
    #[error("service provider {0:?} is disabled")]
    SpDisabled(String),
    #[error("service provider {entity_id:?} has unusable metadata: {message}")]
    BadSpMetadata { entity_id: String, message: String },
    #[error("user {0:?} is not active")]
    UserInactive(String),
    #[error("app {sp:?} is not assigned to {user:?}")]
    NotAssigned { user: String, sp: String },
    #[error("access denied from {ip} for {user:?}: {reason}")]
    IpDenied {
        user: String,
        ip: IpAddr,
        reason: String,
    },
    #[error("policy not met for {user:?}: {missing}")]
    PolicyNotMet { user: String, missing: String },
    #[error("could not build the response: {0}")]
    Build(String),
}

impl SsoError {
    /// The error for an access-policy denial of `user` at `ip`.
    pub fn denied(reason: DenyReason, user: &str, ip: IpAddr) -> SsoError {
        match reason {
            DenyReason::IpNotAllowed { refused_by } => SsoError::IpDenied {
                user: user.to_owned(),
                ip,
                reason: refused_by
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            DenyReason::PolicyNotMet { missing } => SsoError::PolicyNotMet {
                user: user.to_owned(),
                missing,
            },
        }
    }
}

impl From<session::Error> for SsoError {
    fn from(e: session::Error) -> Self {
        SsoError::StoreUnavailable(e)
    }
}

impl From<directory::Error> for SsoError {
    fn from(e: directory::Error) -> Self {
        SsoError::DirectoryUnavailable(e)
    }
}

/// An SP as Tessera uses it: its directory record and its parsed metadata.
#[derive(Debug)]
pub struct RegisteredSp {
    pub record: ServiceProvider,
    pub metadata: SpMetadata,
}

/// A sign-in request waiting for the person to authenticate, kept in the session store between the SSO
/// endpoint and the login form. Everything in it was validated already; the ACS URL came from metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRequest {
    pub sp_entity_id: String,
    /// The AuthnRequest ID; None for IdP-initiated SSO (saml-profiles 4.1.5).
    pub request_id: Option<String>,
    pub acs_url: String,
    pub relay_state: Option<String>,
    /// NameIDPolicy Format asked for (saml-core 3.4.1.1).
    pub name_id_format: Option<String>,
    pub force_authn: bool,
    pub is_passive: bool,
    /// RequestedAuthnContext as (comparison, class refs) (saml-core 3.3.2.2.1).
    pub requested_context: Option<(String, Vec<String>)>,
}

impl PendingRequest {
    fn requested(&self) -> Option<RequestedAuthnContext> {
        self.requested_context
            .as_ref()
            .map(|(comparison, class_refs)| RequestedAuthnContext {
                comparison: match comparison.as_str() {
                    "minimum" => Comparison::Minimum,
                    "maximum" => Comparison::Maximum,
                    "better" => Comparison::Better,
                    _ => Comparison::Exact,
                },
                class_refs: class_refs.clone(),
            })
    }
}

/// What to do after an SSO step.
#[derive(Debug)]
pub enum SsoOutcome {
    /// POST this SAML response to the SP's ACS (success or an error status).
    Post {
        acs_url: String,
        response_xml: String,
        relay_state: Option<String>,
    },
    /// The person must sign in first.
    Login,
}

/// A second factor the session owes before the SSO can go on: what the MFA page asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondFactorNeeded {
    /// The user, to run the factor ceremonies for.
    pub user_id: i64,
    /// The username, for the page and the logs.
    pub username: String,
    /// The user's effective policy: its name decides whether WebAuthn needs user verification.
    pub policy: String,
    /// Factors that would do: those the policy (and the SP's request) accepts that the user has, or,
    /// with `enrol`, those the user can enrol now. Never empty.
    pub methods: Vec<MfaMethod>,
    /// The user has none of the acceptable factors: enrolment comes first (at sign-in, before any
    /// assertion).
    pub enrol: bool,
    /// What is missing, in words, for the page.
    pub missing: String,
}

/// What [`Idp::advance_sso`] leads to.
#[derive(Debug)]
pub enum SsoStep {
    /// A response to post, or the login form.
    Outcome(SsoOutcome),
    /// The session must first complete (or enrol) a second factor; the pending request waits.
    SecondFactor(SecondFactorNeeded),
}

/// The running IdP.
pub struct Idp {
    pub config: Config,
    pub directory: Directory,
    pub sessions: Arc<dyn SessionStore>,
    pub keys: KeyRing,
    /// Keys the persistent NameIDs; losing it changes every persistent identifier.
    nameid_secret: Vec<u8>,
    /// Our signed metadata, built once at start.
    pub metadata_xml: String,
    /// Parsed SP metadata by entity ID, reused while the record's `updated_at` is unchanged.
    sp_cache: RwLock<HashMap<String, Arc<RegisteredSp>>>,
    /// The compiled access policy, rebuilt when the directory's policy generation moves.
    policies: RwLock<Arc<PolicySet>>,
    /// The compiled app assignment rules, rebuilt when the directory's rule generation moves.
    assignment_rules: RwLock<Arc<crate::policy::RuleSet>>,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` headers are believed.
    pub trusted_proxies: IpRangeSet,
    /// Second factors: enrolment, verification, recovery codes, WebAuthn ceremonies.
    pub mfa: Mfa,
    /// The key `mfa` was built with, so [`Idp::replace_directory`] can rebuild it.
    mfa_key: MfaKey,
    /// The WebAuthn relying party, when WebAuthn is on (the base URL's host is a name).
    pub webauthn: Option<WebauthnSettings>,
    /// Login monitoring: every sign-in attempt and SSO goes through it to the directory, in batches.
    pub events: Recorder,
}

/// What `Idp::start` prints for the person who started it.
#[derive(Debug, Default)]
pub struct StartReport {
    pub generated_key: bool,
    pub registered: Vec<String>,
    pub demo_user: Option<(String, String)>,
}

/// How long a pending sign-in request waits for the login form.
pub const PENDING_TTL: Duration = Duration::from_secs(15 * 60);

fn random_hex(bytes: usize) -> Result<String, SsoError> {
    let mut buf = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut buf).map_err(|e| SsoError::Build(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// A fresh SAML ID (saml-core 1.3.4: unique, with at least 128 bits of randomness).
pub fn fresh_id() -> Result<String, SsoError> {
    let mut buf = [0u8; 20];
    openssl::rand::rand_bytes(&mut buf).map_err(|e| SsoError::Build(e.to_string()))?;
    Ok(new_id(buf))
}

/// The configured MFA key, or the one kept in `<data_dir>/mfa.key` (created at first use).
pub fn mfa_key(config: &Config) -> Result<MfaKey, StartError> {
    match &config.mfa.key {
        Some(text) => Ok(MfaKey::from_hex(text.expose())?),
        None => {
            let raw = read_or_create_secret(&config.data_dir.join("mfa.key"))?;
            Ok(MfaKey::from_hex(&hex::encode(raw))?)
        }
    }
}

/// The WebAuthn relying party for this configuration: the RP ID is `mfa.webauthn_rp_id` or the host of
/// the base URL, the origin is the base URL's. `None` when the host is an IP address: an RP ID must be a
/// domain (WebAuthn L3 5.1.2).
pub fn webauthn_settings(config: &Config) -> Option<WebauthnSettings> {
    let url = webauthn_rs::prelude::Url::parse(config.base()).ok()?;
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_owned(),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => return None,
    };
    let rp_id = config.mfa.webauthn_rp_id.clone().unwrap_or(host);
    let origin = webauthn_rs::prelude::Url::parse(&url.origin().ascii_serialization()).ok()?;
    Some(WebauthnSettings {
        rp_id,
        rp_origin: origin,
        rp_name: config.mfa.issuer.clone(),
    })
}

/// Builds the MFA service over `directory` and `sessions`.
fn build_mfa(
    config: &Config,
    directory: &Directory,
    sessions: &Arc<dyn SessionStore>,
    key: &MfaKey,
    webauthn: Option<&WebauthnSettings>,
) -> Result<Mfa, StartError> {
    let service = Mfa::new(
        directory.clone(),
        sessions.clone(),
        key.clone(),
        config.mfa.issuer.clone(),
    )?;
    Ok(match webauthn {
        Some(settings) => service.with_webauthn(settings)?,
        None => service,
    })
}

fn read_or_create_secret(path: &Path) -> Result<Vec<u8>, StartError> {
    let file_error = |e: std::io::Error| StartError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if path.exists() {
        let hexed = std::fs::read_to_string(path).map_err(file_error)?;
        return hex::decode(hexed.trim()).map_err(|e| StartError::File {
            path: path.display().to_string(),
            message: format!("not hex: {e}"),
        });
    }
    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret).map_err(|e| StartError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(file_error)?;
    file.write_all(hex::encode(secret).as_bytes())
        .map_err(file_error)?;
    Ok(secret.to_vec())
}

impl Idp {
    /// Connects the directory and the session store, loads (or creates) keys, registers every
    /// `metadata/*.xml` and, in demo mode, creates the demo user.
    pub async fn start(config: Config) -> Result<(Idp, StartReport), StartError> {
        let now = Utc::now();
        let mut report = StartReport::default();
        std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::File {
            path: config.data_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let directory =
            Directory::connect_with(&config.database_url, config.password_hasher()?).await?;
        let sessions: Arc<dyn SessionStore> = match config.session.backend {
            SessionBackend::Memory => Arc::new(MemoryStore::new()),
            SessionBackend::Redis => Arc::new(
                RedisStore::connect(&config.session.redis_url, &config.session.key_prefix).await?,
            ),
        };
        let (keys, generated) =
            KeyRing::load_or_generate(&config.certs_dir, &config.entity_id(), now)?;
        report.generated_key = generated;
        let nameid_secret = read_or_create_secret(&config.data_dir.join("nameid.secret"))?;
        report.registered = register_metadata_dir(&directory, &config.metadata_dir, now).await?;
        if config.demo && directory.list_users().await?.is_empty() {
            report.demo_user = Some(create_demo_user(&directory).await?);
        }
        // Access rules and policies declared in tessera.toml; all or nothing (docs/access-policy.md).
        directory
            .apply_declarations(&config.ip_rules, &config.policies)
            .await?;
        let metadata_xml = idp_metadata(&config, &keys)?;
        let policies = RwLock::new(Arc::new(directory.load_policy_set().await?));
        // App assignment rules declared in tessera.toml; all or nothing (docs/app-assignment.md).
        let declared = crate::policy::rules_from_declarations(&config.assignment_rules)
            .map_err(directory::Error::from)?;
        directory.apply_assignment_declarations(&declared).await?;
        let assignment_rules = RwLock::new(Arc::new(directory.load_rule_set().await?));
        let trusted_proxies = config
            .trusted_proxy_set()
            .map_err(|e| StartError::Metadata(e.to_string()))?;
        let mfa_key = mfa_key(&config)?;
        let webauthn = webauthn_settings(&config);
        if webauthn.is_none() {
            tracing::info!(
                base_url = %config.base_url,
                "WebAuthn is off: the base URL's host is not a domain name"
            );
        }
        let mfa = build_mfa(&config, &directory, &sessions, &mfa_key, webauthn.as_ref())?;
        let events = start_recorder(&config, &directory)?;
        let idp = Idp {
            mfa,
            mfa_key,
            webauthn,
            policies,
            assignment_rules,
            trusted_proxies,
            config,
            directory,
            sessions,
            keys,
            nameid_secret,
            metadata_xml,
            sp_cache: RwLock::default(),
            events,
        };
        Ok((idp, report))
    }

    /// Swaps the directory (e.g. a test's cheaper password hasher) and rebuilds what holds it.
    pub fn replace_directory(&mut self, directory: Directory) -> Result<(), StartError> {
        self.mfa = build_mfa(
            &self.config,
            &directory,
            &self.sessions,
            &self.mfa_key,
            self.webauthn.as_ref(),
        )?;
        self.directory = directory;
        Ok(())
    }

    /// The second factors a user can enrol here: TOTP always, WebAuthn when it is on. Recovery codes
    /// come with an enrolment, never alone.
    pub fn enrollable_methods(&self) -> Vec<MfaMethod> {
        let mut methods = vec![MfaMethod::Totp];
        if self.webauthn.is_some() {
            methods.push(MfaMethod::WebAuthn);
        }
        methods
    }

    /// Whether WebAuthn ceremonies under `policy` require user verification (PIN, biometric).
    pub fn user_verification(&self, policy: &str) -> mfa::UserVerification {
        if self
            .config
            .mfa
            .user_verification_policies
            .iter()
            .any(|p| p == policy)
        {
            mfa::UserVerification::Required
        } else {
            mfa::UserVerification::Preferred
        }
    }

    /// What the MFA page must ask `user` for, given the factors that would do (`wanted`): those
    /// the user has, or else those the user can enrol. `methods` is empty when neither exists.
    pub async fn second_factor(
        &self,
        user: &User,
        policy: &str,
        wanted: &[MfaMethod],
        missing: String,
    ) -> Result<SecondFactorNeeded, SsoError> {
        let available = self.directory.mfa_available(&user.username).await?;
        let usable: Vec<MfaMethod> = wanted
            .iter()
            .copied()
            .filter(|m| available.contains(m))
            .collect();
        let enrol = usable.is_empty();
        let methods = if enrol {
            let enrollable = self.enrollable_methods();
            wanted
                .iter()
                .copied()
                .filter(|m| enrollable.contains(m))
                .collect()
        } else {
            usable
        };
        Ok(SecondFactorNeeded {
            user_id: user.id,
            username: user.username.clone(),
            policy: policy.to_owned(),
            methods,
            enrol,
            missing,
        })
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.config.session.idle_timeout_secs)
    }

    pub fn absolute_lifetime(&self) -> Duration {
        Duration::from_secs(self.config.session.absolute_lifetime_secs)
    }

    /// The SP with this entity ID, its metadata parsed (and cached until its record changes).
    pub async fn sp(&self, entity_id: &str) -> Result<Arc<RegisteredSp>, SsoError> {
        let record = self
            .directory
            .get_sp(entity_id)
            .await?
            .ok_or_else(|| SsoError::UnknownSp(entity_id.to_owned()))?;
        if let Ok(cache) = self.sp_cache.read() {
            if let Some(hit) = cache.get(entity_id) {
                // saml-metadata 2.3.1, 2.3.2, 2.4.1: validUntil is when the metadata (and all it
                // contains) expires. A cached copy past it is not served: the parse below refuses
                // it, as a node without the cache would.
                let fresh = hit.metadata.valid_until.is_none_or(|t| t > Utc::now());
                if hit.record == record && fresh {
                    return Ok(hit.clone());
                }
            }
        }
        let entities =
            parse_sp_metadata(record.metadata_xml.as_bytes(), Utc::now()).map_err(|e| {
                SsoError::BadSpMetadata {
                    entity_id: entity_id.to_owned(),
                    message: e.to_string(),
                }
            })?;
        let metadata = entities
            .into_iter()
            .find(|m| m.entity_id == entity_id)
            .ok_or_else(|| SsoError::BadSpMetadata {
                entity_id: entity_id.to_owned(),
                message: "entity not in its metadata".into(),
            })?;
        let sp = Arc::new(RegisteredSp { record, metadata });
        if let Ok(mut cache) = self.sp_cache.write() {
            cache.insert(entity_id.to_owned(), sp.clone());
        }
        Ok(sp)
    }

    /// Refreshes the SP's metadata from its URL now (`sp_registration::refresh_sp` with the configured
    /// limits). The parsed copy is dropped either way; [`Idp::sp`] would also notice the changed
    /// record, on every node, so new SP certificates apply at the next request.
    pub async fn refresh_sp_metadata(
        &self,
        entity_id: &str,
    ) -> Result<crate::sp_registration::RefreshOutcome, crate::sp_registration::RegistrationError>
    {
        let limits = crate::sp_registration::FetchLimits::from_config(&self.config.sp_metadata);
        let outcome =
            crate::sp_registration::refresh_sp(&self.directory, entity_id, &limits, Utc::now())
                .await;
        if let Ok(mut cache) = self.sp_cache.write() {
            cache.remove(entity_id);
        }
        outcome
    }

    /// The compiled access policy, rebuilt when the directory's policy generation has moved (one cheap
    /// query per check, so a change made by the CLI or another node applies at the next request).
    pub async fn policy_set(&self) -> Result<Arc<PolicySet>, SsoError> {
        let generation = self.directory.policy_generation().await?;
        if let Ok(current) = self.policies.read() {
            if current.generation() == generation {
                return Ok(current.clone());
            }
        }
        let fresh = Arc::new(self.directory.load_policy_set().await?);
        if let Ok(mut slot) = self.policies.write() {
            *slot = fresh.clone();
        }
        Ok(fresh)
    }

    /// The compiled app assignment rules, rebuilt when the directory's rule generation has moved (one
    /// cheap query per check, so a rule changed by the CLI or another node applies at the next request).
    pub async fn assignment_rules(&self) -> Result<Arc<crate::policy::RuleSet>, SsoError> {
        let generation = self.directory.assignment_rule_generation().await?;
        if let Ok(current) = self.assignment_rules.read() {
            if current.generation() == generation {
                return Ok(current.clone());
            }
        }
        let fresh = Arc::new(self.directory.load_rule_set().await?);
        if let Ok(mut slot) = self.assignment_rules.write() {
            *slot = fresh.clone();
        }
        Ok(fresh)
    }

    /// Why `user` may use the SP `entity_id` now: directly assigned, or granted by an enabled assignment
    /// rule (evaluated against the user's current attributes, groups and roles); `None` when neither.
    pub async fn app_grant(
        &self,
        user: &User,
        entity_id: &str,
    ) -> Result<Option<directory::Grant>, SsoError> {
        let rules = self.assignment_rules().await?;
        Ok(self.directory.app_grant(user, entity_id, &rules).await?)
    }

    /// Every app `user` may use (directly assigned or granted by a rule), with the reasons.
    pub async fn app_access(&self, user: &User) -> Result<Vec<directory::AppAccess>, SsoError> {
        let rules = self.assignment_rules().await?;
        Ok(self.directory.app_access(user, &rules).await?)
    }

    /// Decides whether `username` may proceed from `ip` (to `sp`, with `session`), per the IP allowlists
    /// and the user's security policy. Every denial is recorded with the user, the address, the SP and
    /// what refused it.
    pub async fn check_access(
        &self,
        username: &str,
        ip: IpAddr,
        sp: Option<&str>,
        session: Option<&SessionFacts>,
    ) -> Result<Decision, SsoError> {
        self.check_access_from(username, ip, "", sp, session).await
    }

    /// [`Idp::check_access`] for a client whose User-Agent is known (it goes into the event).
    pub async fn check_access_from(
        &self,
        username: &str,
        ip: IpAddr,
        user_agent: &str,
        sp: Option<&str>,
        session: Option<&SessionFacts>,
    ) -> Result<Decision, SsoError> {
        let policies = self.policy_set().await?;
        let (subject, user_id, mfa_available) = match self.directory.subject_of(username).await? {
            Some(subject) => {
                let user = self.directory.get_user_by_username(username).await?;
                (
                    subject,
                    user.map(|u| u.id),
                    self.directory.mfa_available(username).await?,
                )
            }
            // An unknown username gets the rules that apply to everyone, so a refusal looks the same.
            None => (
                Subject {
                    username: username.to_owned(),
                    ..Subject::default()
                },
                None,
                Vec::new(),
            ),
        };
        let now = Utc::now().timestamp();
        let mut decision = policies.decide(&AccessRequest {
            subject: &subject,
            ip,
            sp,
            session,
            mfa_available: &mfa_available,
            now,
        });
        // A second factor is required but the user has none the policy accepts: rather than refuse,
        // the user enrols one at sign-in, before any assertion. Decided again as if the factors that
        // can be enrolled here were available, so the step-up names them.
        let unmet = matches!(
            decision.outcome,
            Outcome::Deny {
                reason: DenyReason::PolicyNotMet { .. }
            }
        );
        if unmet && user_id.is_some() {
            let mut can_enrol = mfa_available.clone();
            for m in self.enrollable_methods() {
                if !can_enrol.contains(&m) {
                    can_enrol.push(m);
                }
            }
            let retry = policies.decide(&AccessRequest {
                subject: &subject,
                ip,
                sp,
                session,
                mfa_available: &can_enrol,
                now,
            });
            if matches!(retry.outcome, Outcome::StepUp { .. }) {
                decision = retry;
                decision.trace.push(
                    "the user has no second factor this policy accepts: enrolment at sign-in"
                        .to_owned(),
                );
            }
        }
        if let Outcome::Deny { reason } = &decision.outcome {
            let (outcome, rule) = match reason {
                DenyReason::IpNotAllowed { refused_by } => (
                    events::Outcome::IpDenied,
                    refused_by
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                DenyReason::PolicyNotMet { .. } => {
                    (events::Outcome::PolicyNotMet, decision.policy.clone())
                }
            };
            tracing::warn!(user = %username, %ip, sp = ?sp, %reason, "access refused");
            let kind = if sp.is_some() {
                Kind::Sso
            } else {
                Kind::SignIn
            };
            let mut event = LoginEvent::new(kind, outcome, username, ip)
                .sp(sp)
                .reason(reason.to_string())
                .rule(rule)
                .agent(user_agent);
            event.user_id = user_id;
            self.events.record(event).await;
        }
        Ok(decision)
    }

    /// The name of `username`'s effective security policy (the built-in one for an unknown user).
    pub async fn policy_of(&self, username: &str) -> Result<String, SsoError> {
        let policies = self.policy_set().await?;
        let subject = self
            .directory
            .subject_of(username)
            .await?
            .unwrap_or_else(|| Subject {
                username: username.to_owned(),
                ..Subject::default()
            });
        Ok(policies.effective_policy(&subject).0.name.clone())
    }

    /// Idle timeout and absolute lifetime for a new session under `policy`: the policy's values,
    /// capped by the configured ones.
    pub async fn session_lifetimes(&self, policy: &str) -> Result<(Duration, Duration), SsoError> {
        let set = self.policy_set().await?;
        let (mut idle, mut absolute) = (self.idle_timeout(), self.absolute_lifetime());
        if let Some(p) = set.policy(policy) {
            idle = idle.min(Duration::from_secs(p.session_idle_secs));
            absolute = absolute.min(Duration::from_secs(p.session_absolute_secs));
        }
        Ok((idle, absolute))
    }

    /// Keeps a pending request until the person has signed in; returns the handle for the login form.
    pub async fn stash_pending(&self, pending: &PendingRequest) -> Result<String, SsoError> {
        let handle = random_hex(16)?;
        let value = serde_json::to_string(pending).map_err(|e| SsoError::Build(e.to_string()))?;
        self.sessions
            .put_temp("pending", &handle, &value, PENDING_TTL)
            .await?;
        Ok(handle)
    }

    /// Reads a pending request without consuming it (the login form may be shown several times).
    pub async fn pending(&self, handle: &str) -> Result<Option<PendingRequest>, SsoError> {
        if handle.is_empty() || handle.len() > 64 || !handle.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(None);
        }
        Ok(self
            .sessions
            .get_temp("pending", handle)
            .await?
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Consumes a pending request once it has been answered.
    pub async fn forget_pending(&self, handle: &str) -> Result<(), SsoError> {
        self.sessions.delete_temp("pending", handle).await?;
        Ok(())
    }

    /// Finishes an SSO for `pending` with the session the browser presented (if any), for callers that
    /// only post responses or show the login form: a second factor owed is [`SsoOutcome::Login`], and the
    /// login page ([`Idp::advance_sso`]) then sends the person on to the MFA page.
    pub async fn complete_sso(
        &self,
        pending: &PendingRequest,
        session: Option<(&SessionId, &Session)>,
        client_ip: IpAddr,
    ) -> Result<SsoOutcome, SsoError> {
        Ok(match self.advance_sso(pending, session, client_ip).await? {
            SsoStep::Outcome(outcome) => outcome,
            SsoStep::SecondFactor(_) => SsoOutcome::Login,
        })
    }

    /// Takes an SSO for `pending` as far as the session allows: a response (the assertion, or a SAML
    /// error for the SP), the login form, or the second factor the session still owes. This is the
    /// only place an assertion is built.
    pub async fn advance_sso(
        &self,
        pending: &PendingRequest,
        session: Option<(&SessionId, &Session)>,
        client_ip: IpAddr,
    ) -> Result<SsoStep, SsoError> {
        let sp = self.sp(&pending.sp_entity_id).await?;
        if !sp.record.settings.enabled {
            return Err(SsoError::SpDisabled(sp.record.entity_id.clone()));
        }
        // saml-core 3.4.1: IsPassive forbids any visible interaction; NoPassive says we could not.
        let no_passive = || {
            self.error_outcome(
                pending,
                Status::error(StatusCode::Responder, SubStatusCode::NoPassive),
            )
            .map(SsoStep::Outcome)
        };
        let (id, session) = match session {
            Some(s) if !pending.force_authn => s,
            _ if pending.is_passive => return no_passive(),
            _ => return Ok(SsoStep::Outcome(SsoOutcome::Login)),
        };
        // Checked at every SSO, not only at login: a disabled user's live cookie gets nothing.
        let user = self.directory.get_user(session.user_id).await?;
        let sso_event = |outcome: events::Outcome| {
            LoginEvent::new(Kind::Sso, outcome, &session.username, client_ip)
                .user(session.user_id)
                .sp(Some(&sp.record.entity_id))
                .agent(&session.user_agent)
        };
        let user = match user {
            Some(u) if u.status == UserStatus::Active => u,
            _ => {
                self.events
                    .record(
                        sso_event(events::Outcome::Deactivated).reason("the account is disabled"),
                    )
                    .await;
                self.sessions.delete_user_sessions(session.user_id).await?;
                return Err(SsoError::UserInactive(session.username.clone()));
            }
        };
        // A session older than an administrator's password or MFA reset is over, whichever store keeps
        // it (the CLI cannot reach a node's memory store).
        if session.created_at_ms() < user.sessions_not_before {
            self.sessions.delete(id).await?;
            if pending.is_passive {
                return no_passive();
            }
            return Ok(SsoStep::Outcome(SsoOutcome::Login));
        }
        // The IP allowlists and the security policy of the user's tier, from where the request comes now
        // (an address change mid-session is checked again here).
        let facts = SessionFacts {
            methods: session.authn_methods.clone(),
            authn_instant: session.authn_instant,
            last_seen: session.last_seen,
            mfa_instant: session.mfa_instant,
        };
        let decision = self
            .check_access_from(
                &user.username,
                client_ip,
                &session.user_agent,
                Some(&sp.record.entity_id),
                Some(&facts),
            )
            .await?;
        match decision.outcome {
            Outcome::Admit => {}
            Outcome::Deny { reason } => {
                return Err(SsoError::denied(reason, &user.username, client_ip));
            }
            // A new password sign-in first; the login asks for any second factor after it.
            Outcome::StepUp {
                reauthenticate: true,
                ..
            } => {
                if pending.is_passive {
                    return no_passive();
                }
                return Ok(SsoStep::Outcome(SsoOutcome::Login));
            }
            // The session is missing a second factor (none yet, or too old for the policy or the SP).
            Outcome::StepUp {
                mfa_methods,
                missing,
                ..
            } => {
                if pending.is_passive {
                    return no_passive();
                }
                let need = self
                    .second_factor(&user, &decision.policy, &mfa_methods, missing)
                    .await?;
                if need.methods.is_empty() {
                    self.events
                        .record(
                            sso_event(events::Outcome::MfaNotEnrolled)
                                .reason(need.missing.clone())
                                .rule(decision.policy.clone()),
                        )
                        .await;
                    return Err(SsoError::PolicyNotMet {
                        user: user.username.clone(),
                        missing: need.missing,
                    });
                }
                return Ok(SsoStep::SecondFactor(need));
            }
        }
        // Directly assigned, or granted by an enabled assignment rule as the user is now.
        if self.app_grant(&user, &sp.record.entity_id).await?.is_none() {
            self.events
                .record(
                    sso_event(events::Outcome::AppNotAssigned)
                        .reason("the app is not assigned to the user"),
                )
                .await;
            return Err(SsoError::NotAssigned {
                user: user.username.clone(),
                sp: sp.record.entity_id.clone(),
            });
        }
        let protected = self.config.secure_cookies();
        let requested = pending.requested();
        let class_ref =
            match choose_class_ref(requested.as_ref(), &session.authn_methods, protected) {
                Some(class_ref) => class_ref,
                None => {
                    // saml-core 3.3.2.2.1: the requested context is not met by what the session did. A
                    // second factor the policy accepts may meet it (e.g. the REFEDS MFA profile asked of
                    // a password-only session); otherwise the request cannot be satisfied.
                    let policies = self.policy_set().await?;
                    let accepted = policies
                        .policy(&decision.policy)
                        .map(|p| p.mfa_methods.clone())
                        .unwrap_or_else(|| MfaMethod::ALL.to_vec());
                    let helpful: Vec<MfaMethod> = accepted
                        .into_iter()
                        .filter(|m| !session.authn_methods.contains(&m.to_authn()))
                        .filter(|m| {
                            let mut with = session.authn_methods.clone();
                            with.push(m.to_authn());
                            choose_class_ref(requested.as_ref(), &with, protected).is_some()
                        })
                        .collect();
                    let need = if helpful.is_empty() {
                        None
                    } else {
                        let asked = requested
                            .as_ref()
                            .map(|r| r.class_refs.join(", "))
                            .unwrap_or_default();
                        let need = self
                            .second_factor(
                                &user,
                                &decision.policy,
                                &helpful,
                                format!("the application asks for a stronger sign-in ({asked})"),
                            )
                            .await?;
                        (!need.methods.is_empty()).then_some(need)
                    };
                    return match need {
                        Some(_) if pending.is_passive => no_passive(),
                        Some(need) => Ok(SsoStep::SecondFactor(need)),
                        None => self
                            .error_outcome(
                                pending,
                                Status::error(StatusCode::Responder, SubStatusCode::NoAuthnContext),
                            )
                            .map(SsoStep::Outcome),
                    };
                }
            };
        let name_id = match self.name_id(&user, &sp, pending.name_id_format.as_deref())? {
            Some(n) => n,
            // saml-core 3.4.1.1: a Format we cannot produce for this user and SP.
            None => {
                return self
                    .error_outcome(
                        pending,
                        Status::error(StatusCode::Requester, SubStatusCode::InvalidNameIdPolicy),
                    )
                    .map(SsoStep::Outcome)
            }
        };
        let now = Utc::now();
        let session_index = match session
            .sp_sessions
            .iter()
            .find(|s| s.sp_entity_id == sp.record.entity_id)
        {
            Some(existing) => existing.session_index.clone(),
            None => format!("_{}", random_hex(16)?),
        };
        let absolute_end = DateTime::<Utc>::from_timestamp(session.created_at, 0).map(|t| {
            t + chrono::Duration::seconds(self.config.session.absolute_lifetime_secs as i64)
        });
        let content = AssertionContent {
            issuer: self.config.entity_id(),
            response_id: fresh_id()?,
            assertion_id: fresh_id()?,
            issue_instant: now,
            acs_url: pending.acs_url.clone(),
            in_response_to: pending.request_id.clone(),
            audience: sp.record.entity_id.clone(),
            name_id: name_id.clone(),
            lifetime: chrono::Duration::seconds(self.config.saml.assertion_lifetime_secs),
            clock_skew: chrono::Duration::seconds(self.config.saml.clock_skew_secs.min(300)),
            // saml-core 2.7.2: the latest authentication act, a step-up included.
            authn_instant: DateTime::<Utc>::from_timestamp(
                session
                    .mfa_instant
                    .map_or(session.authn_instant, |t| t.max(session.authn_instant)),
                0,
            )
            .unwrap_or(now),
            session_index: session_index.clone(),
            session_not_on_or_after: absolute_end,
            authn_context_class_ref: class_ref.to_owned(),
            attributes: released_attributes(
                &user,
                &sp.record,
                &self.release_memberships(&user, &sp.record).await?,
            ),
        };
        let settings = &sp.record.settings;
        // saml-profiles 4.1.3.5 / saml-metadata 2.4.4: WantAssertionsSigned forces the assertion signature.
        let target = SignatureTarget::from_flags(
            settings.sign_assertion || sp.metadata.want_assertions_signed,
            settings.sign_response,
        );
        let encryptor = |assertion: &crate::saml::xml::Element| {
            let cert = sp.metadata.encryption_certs.first().ok_or_else(|| {
                crate::saml::response::Error::Encrypt(
                    "no encryption certificate in the SP metadata".into(),
                )
            })?;
            let method = DataEncryption::preferred_from(&sp.metadata.encryption_methods)
                .unwrap_or(DataEncryption::Aes256Gcm);
            encrypt_assertion(assertion, cert, method)
                .map_err(|e| crate::saml::response::Error::Encrypt(e.to_string()))
        };
        let encrypt: Option<crate::saml::response::Encryptor<'_>> = if settings.encrypt_assertion {
            Some(&encryptor)
        } else {
            None
        };
        let response_xml = build_response(&content, &self.keys.current, target, encrypt)
            .map_err(|e| SsoError::Build(e.to_string()))?;
        // Single logout needs to know which SPs were reached, under which SessionIndex and NameID.
        self.sessions
            .add_sp_session(
                id,
                &SpSession {
                    sp_entity_id: sp.record.entity_id.clone(),
                    session_index,
                    name_id: name_id.value,
                    name_id_format: name_id.format.uri().to_owned(),
                },
            )
            .await?;
        tracing::info!(user = %user.username, sp = %sp.record.entity_id, class_ref, "assertion issued");
        self.events
            .record(
                sso_event(events::Outcome::Success)
                    .reason(format!("assertion issued ({class_ref})")),
            )
            .await;
        Ok(SsoStep::Outcome(SsoOutcome::Post {
            acs_url: pending.acs_url.clone(),
            response_xml,
            relay_state: pending.relay_state.clone(),
        }))
    }

    /// A signed SAML error response to the SP's (metadata) ACS URL.
    pub fn error_outcome(
        &self,
        pending: &PendingRequest,
        status: Status,
    ) -> Result<SsoOutcome, SsoError> {
        let response_xml = build_error_response(
            &ErrorResponse {
                issuer: self.config.entity_id(),
                response_id: fresh_id()?,
                issue_instant: Utc::now(),
                acs_url: pending.acs_url.clone(),
                in_response_to: pending.request_id.clone(),
                status,
            },
            &self.keys.current,
        )
        .map_err(|e| SsoError::Build(e.to_string()))?;
        Ok(SsoOutcome::Post {
            acs_url: pending.acs_url.clone(),
            response_xml,
            relay_state: pending.relay_state.clone(),
        })
    }

    /// The NameID for this user at this SP, in the requested format when one was asked for, else in the
    /// SP's configured format. None when that format cannot be produced.
    fn name_id(
        &self,
        user: &User,
        sp: &RegisteredSp,
        requested: Option<&str>,
    ) -> Result<Option<NameId>, SsoError> {
        let configured = sp.record.settings.nameid_format.as_str();
        let format_uri = match requested {
            Some(r) if r != NameIdFormat::Unspecified.uri() => r,
            _ => configured,
        };
        let Some(format) = NameIdFormat::from_uri(format_uri) else {
            return Ok(None);
        };
        let value = match format {
            NameIdFormat::Persistent => persistent_name_id(
                &self.nameid_secret,
                &user.id.to_string(),
                &sp.record.entity_id,
            )
            .map_err(|e| SsoError::Build(e.to_string()))?,
            NameIdFormat::Transient => format!("_{}", random_hex(16)?),
            NameIdFormat::EmailAddress => match &user.email {
                Some(e) if !e.is_empty() => e.clone(),
                _ => return Ok(None),
            },
            NameIdFormat::Unspecified => {
                match user
                    .attribute_values(&sp.record.settings.nameid_attribute)
                    .into_iter()
                    .next()
                {
                    Some(v) => v,
                    None => return Ok(None),
                }
            }
        };
        let sp_name_qualifier =
            matches!(format, NameIdFormat::Persistent | NameIdFormat::Transient)
                .then(|| sp.record.entity_id.clone());
        Ok(Some(NameId {
            value,
            format,
            sp_name_qualifier,
        }))
    }

    /// Creates a session after a successful sign-in and returns its id for the cookie. When `methods`
    /// include a second factor, it counts as completed now (the session's `mfa_instant`).
    pub async fn open_session(
        &self,
        user: &User,
        methods: Vec<AuthnMethod>,
        client_ip: std::net::IpAddr,
        user_agent: &str,
        lifetimes: (Duration, Duration),
    ) -> Result<SessionId, SsoError> {
        let now_ms = Utc::now().timestamp_millis();
        let now = now_ms.div_euclid(1000);
        let has_mfa = methods.iter().any(|m| *m != AuthnMethod::Password);
        let mut session = Session::new(
            user.id,
            user.username.clone(),
            methods,
            client_ip,
            user_agent,
            now,
        );
        session.created_ms = now_ms;
        session.mfa_instant = has_mfa.then_some(now);
        Ok(self
            .sessions
            .create(&session, lifetimes.0, lifetimes.1)
            .await?)
    }
}

/// Every AuthnContext class the session's methods truthfully describe, strongest first
/// (saml-authn-context 3.4): the REFEDS MFA profile when a password and a second factor were used;
/// TimeSyncToken (3.4.20) when that second factor was a TOTP code; PasswordProtectedTransport (3.4.7)
/// over https; Password (3.4.7). A session without a password describes none.
pub fn achieved_class_refs(
    methods: &[AuthnMethod],
    protected_transport: bool,
) -> Vec<&'static str> {
    let mut refs = Vec::new();
    if !methods.contains(&AuthnMethod::Password) {
        return refs;
    }
    if methods.iter().any(|m| *m != AuthnMethod::Password) {
        refs.push(class_ref::REFEDS_MFA);
    }
    if methods.contains(&AuthnMethod::Totp) {
        refs.push(class_ref::TIME_SYNC_TOKEN);
    }
    if protected_transport {
        refs.push(class_ref::PASSWORD_PROTECTED_TRANSPORT);
    }
    refs.push(class_ref::PASSWORD);
    refs
}

/// The AuthnContext class the session's methods achieved: the strongest of [`achieved_class_refs`].
pub fn achieved_class_ref(methods: &[AuthnMethod], protected_transport: bool) -> &'static str {
    achieved_class_refs(methods, protected_transport)
        .first()
        .copied()
        .unwrap_or(class_ref::PASSWORD)
}

/// The class to assert for a session with `methods`, given what the SP requested, or `None` when no
/// class the session achieved satisfies the request (saml-core 3.3.2.2.1):
/// - nothing requested: the strongest achieved class;
/// - `exact`: the first requested class (the SP's order of preference) that was achieved;
/// - `minimum`: a requested class that was achieved, else the strongest achieved class at least as
///   strong as one requested;
/// - `better`: the strongest achieved class stronger than one requested;
/// - `maximum`: the strongest achieved class not stronger than one requested.
pub fn choose_class_ref(
    requested: Option<&RequestedAuthnContext>,
    methods: &[AuthnMethod],
    protected_transport: bool,
) -> Option<&'static str> {
    let achieved = achieved_class_refs(methods, protected_transport);
    let Some(requested) = requested else {
        return achieved.first().copied();
    };
    let exact = || {
        requested
            .class_refs
            .iter()
            .find_map(|wanted| achieved.iter().find(|c| **c == wanted.as_str()).copied())
    };
    let one_satisfying = |comparison: Comparison| {
        let single = RequestedAuthnContext {
            comparison,
            class_refs: requested.class_refs.clone(),
        };
        achieved
            .iter()
            .find(|c| context_satisfied(&single, c))
            .copied()
    };
    match requested.comparison {
        Comparison::Exact => exact(),
        Comparison::Minimum => exact().or_else(|| one_satisfying(Comparison::Minimum)),
        Comparison::Better => one_satisfying(Comparison::Better),
        Comparison::Maximum => one_satisfying(Comparison::Maximum),
    }
}

/// Strength order of the classes Tessera can achieve; unknown classes rank above everything, so they can
/// only be satisfied by `exact` with the same URI (never, in practice).
fn strength(class: &str) -> u8 {
    match class {
        class_ref::UNSPECIFIED => 0,
        class_ref::PASSWORD => 1,
        class_ref::PASSWORD_PROTECTED_TRANSPORT => 2,
        class_ref::TIME_SYNC_TOKEN | class_ref::REFEDS_MFA => 3,
        _ => u8::MAX,
    }
}

/// saml-core 3.3.2.2.1: whether `achieved` satisfies the requested classes under the comparison.
pub fn context_satisfied(requested: &RequestedAuthnContext, achieved: &str) -> bool {
    let mine = strength(achieved);
    requested.class_refs.iter().any(|wanted| {
        let theirs = strength(wanted);
        match requested.comparison {
            Comparison::Exact => wanted == achieved,
            Comparison::Minimum => theirs != u8::MAX && mine >= theirs,
            Comparison::Better => theirs != u8::MAX && mine > theirs,
            Comparison::Maximum => mine <= theirs,
        }
    })
}

/// The user's group and role names, read only when the SP's release mapping sends them.
#[derive(Debug, Default)]
struct Memberships {
    groups: Vec<String>,
    roles: Vec<String>,
}

impl Idp {
    /// The memberships `sp` releases (the `groups` / `roles` user attributes), from the directory as it
    /// is now: a group left since sign-in is no longer sent.
    async fn release_memberships(
        &self,
        user: &User,
        sp: &ServiceProvider,
    ) -> Result<Memberships, SsoError> {
        let wants = |name: &str| {
            sp.settings
                .attribute_release
                .iter()
                .any(|r| r.static_values.is_empty() && r.user_attribute == name)
        };
        let mut out = Memberships::default();
        if wants("groups") {
            out.groups = self
                .directory
                .groups_of(&user.username)
                .await?
                .into_iter()
                .map(|g| g.name)
                .collect();
        }
        if wants("roles") {
            out.roles = self
                .directory
                .roles_of(&user.username)
                .await?
                .into_iter()
                .map(|r| r.name)
                .collect();
        }
        Ok(out)
    }
}

/// The attributes an SP receives, per its release mapping (saml-core 2.7.3.1: one `<saml:Attribute>`
/// per rule, one `<saml:AttributeValue>` per value). A rule whose user has no value is left out: an
/// Attribute with no value would tell the SP nothing.
fn released_attributes(
    user: &User,
    sp: &ServiceProvider,
    memberships: &Memberships,
) -> Vec<Attribute> {
    sp.settings
        .attribute_release
        .iter()
        .filter_map(|rule| {
            let values = if !rule.static_values.is_empty() {
                rule.static_values.clone()
            } else {
                match rule.user_attribute.as_str() {
                    "groups" => memberships.groups.clone(),
                    "roles" => memberships.roles.clone(),
                    other => user.attribute_values(other),
                }
            };
            (!values.is_empty()).then(|| Attribute {
                name: rule.saml_name.clone(),
                name_format: Some(rule.name_format.clone()),
                friendly_name: rule.friendly_name.clone(),
                values,
            })
        })
        .collect()
}

fn idp_metadata(config: &Config, keys: &KeyRing) -> Result<String, StartError> {
    let id = fresh_id().map_err(|e| StartError::Metadata(e.to_string()))?;
    build_idp_metadata(
        &IdpMetadata {
            entity_id: config.entity_id(),
            sso_url: config.sso_url(),
            // saml-metadata 2.4.2: /saml/slo takes LogoutRequests by HTTP-Redirect and HTTP-POST.
            slo_url: Some(config.slo_url()),
            signing_certs: keys.published_certificates()?,
            name_id_formats: [
                NameIdFormat::Persistent,
                NameIdFormat::Transient,
                NameIdFormat::EmailAddress,
                NameIdFormat::Unspecified,
            ]
            .iter()
            .map(|f| f.uri().to_owned())
            .collect(),
            want_authn_requests_signed: false,
            valid_until: None,
        },
        &id,
        Some(&keys.current),
    )
    .map_err(|e| StartError::Metadata(e.to_string()))
}

/// The event recorder for `config`: the GeoIP database opened (a configured one that cannot be read
/// stops the start) and the writer task started.
fn start_recorder(config: &Config, directory: &Directory) -> Result<Recorder, StartError> {
    let enricher = match &config.events.geoip_database {
        Some(path) => Enricher::open(path).map_err(|e| StartError::File {
            path: e.path.clone(),
            message: e.message.clone(),
        })?,
        None => Enricher::without_geo(),
    };
    Ok(Recorder::start(
        directory.clone(),
        Arc::new(enricher),
        RecorderSettings {
            retention_days: config.events.retention_days,
            ..RecorderSettings::default()
        },
    ))
}

/// Registers (or refreshes) every `*.xml` in `dir` as SP metadata. A file that does not parse stops the
/// start with its name and the problem, rather than leaving an SP silently missing.
pub async fn register_metadata_dir(
    directory: &Directory,
    dir: &Path,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StartError> {
    let mut registered = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(registered);
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    for path in files {
        let xml = std::fs::read_to_string(&path).map_err(|e| StartError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let entities =
            parse_sp_metadata(xml.as_bytes(), now).map_err(|e: metadata::MetadataError| {
                StartError::File {
                    path: path.display().to_string(),
                    message: e.to_string(),
                }
            })?;
        for entity in entities {
            directory
                .upsert_sp_metadata(&entity.entity_id, &xml)
                .await?;
            registered.push(entity.entity_id);
        }
    }
    Ok(registered)
}

/// The embedded-mode demo user, with a random password printed once, assigned to every registered SP.
async fn create_demo_user(directory: &Directory) -> Result<(String, String), StartError> {
    let mut raw = [0u8; 12];
    openssl::rand::rand_bytes(&mut raw).map_err(|e| StartError::Metadata(e.to_string()))?;
    // Not "demo-...": a password may not contain the username.
    let password = format!("tessera-{}", hex::encode(raw));
    directory
        .create_user(NewUser {
            username: "demo".into(),
            password: password.clone(),
            email: Some("demo@example.org".into()),
            display_name: Some("Demo User".into()),
            department: Some("Sales".into()),
            ..NewUser::default()
        })
        .await?;
    for sp in directory.list_sps().await? {
        directory.assign_app("demo", &sp.entity_id).await?;
    }
    Ok(("demo".into(), password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(comparison: Comparison, refs: &[&str]) -> RequestedAuthnContext {
        RequestedAuthnContext {
            comparison,
            class_refs: refs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn requested_context_comparisons() {
        let ppt = class_ref::PASSWORD_PROTECTED_TRANSPORT;
        let mfa = class_ref::REFEDS_MFA;
        let cases = [
            (req(Comparison::Exact, &[ppt]), ppt, true),
            (req(Comparison::Exact, &[mfa]), ppt, false),
            (req(Comparison::Minimum, &[ppt]), mfa, true),
            (req(Comparison::Minimum, &[mfa]), ppt, false),
            (req(Comparison::Better, &[ppt]), ppt, false),
            (req(Comparison::Better, &[ppt]), mfa, true),
            (req(Comparison::Maximum, &[ppt]), class_ref::PASSWORD, true),
            (req(Comparison::Maximum, &[ppt]), mfa, false),
            (
                req(Comparison::Minimum, &["urn:example:unknown"]),
                mfa,
                false,
            ),
        ];
        for (requested, achieved, expected) in cases {
            assert_eq!(
                context_satisfied(&requested, achieved),
                expected,
                "{requested:?} vs {achieved}"
            );
        }
    }

    #[test]
    fn chosen_class_ref_follows_the_comparison() {
        use AuthnMethod::{Password, RecoveryCode, Totp, WebAuthn};
        let mfa = class_ref::REFEDS_MFA;
        let tst = class_ref::TIME_SYNC_TOKEN;
        let ppt = class_ref::PASSWORD_PROTECTED_TRANSPORT;
        let pw = class_ref::PASSWORD;
        type Case = (
            Option<RequestedAuthnContext>,
            &'static [AuthnMethod],
            bool,
            Option<&'static str>,
        );
        let cases: [Case; 13] = [
            (None, &[Password], true, Some(ppt)),
            (None, &[Password, WebAuthn], true, Some(mfa)),
            (None, &[Password, RecoveryCode], false, Some(mfa)),
            (
                Some(req(Comparison::Exact, &[tst, mfa])),
                &[Password, Totp],
                true,
                Some(tst),
            ),
            (
                Some(req(Comparison::Exact, &[tst])),
                &[Password, WebAuthn],
                true,
                None,
            ),
            (
                Some(req(Comparison::Exact, &[ppt])),
                &[Password, Totp],
                true,
                Some(ppt),
            ),
            (
                Some(req(Comparison::Exact, &[ppt])),
                &[Password, Totp],
                false,
                None,
            ),
            (
                Some(req(Comparison::Minimum, &[pw])),
                &[Password],
                true,
                Some(pw),
            ),
            (
                Some(req(Comparison::Minimum, &[ppt])),
                &[Password, Totp],
                false,
                Some(mfa),
            ),
            (
                Some(req(Comparison::Minimum, &[mfa])),
                &[Password],
                true,
                None,
            ),
            (
                Some(req(Comparison::Better, &[ppt])),
                &[Password, WebAuthn],
                true,
                Some(mfa),
            ),
            (
                Some(req(Comparison::Better, &[mfa])),
                &[Password, WebAuthn],
                true,
                None,
            ),
            (
                Some(req(Comparison::Maximum, &[ppt])),
                &[Password, Totp],
                true,
                Some(ppt),
            ),
        ];
        for (requested, methods, protected, expected) in cases {
            assert_eq!(
                choose_class_ref(requested.as_ref(), methods, protected),
                expected,
                "{requested:?} {methods:?} protected={protected}"
            );
        }
        assert_eq!(choose_class_ref(None, &[Totp], true), None);
    }

    #[test]
    fn class_ref_reflects_factors() {
        assert_eq!(
            achieved_class_ref(&[AuthnMethod::Password], true),
            class_ref::PASSWORD_PROTECTED_TRANSPORT
        );
        assert_eq!(
            achieved_class_ref(&[AuthnMethod::Password], false),
            class_ref::PASSWORD
        );
        assert_eq!(
            achieved_class_ref(&[AuthnMethod::Password, AuthnMethod::Totp], true),
            class_ref::REFEDS_MFA
        );
    }
}
