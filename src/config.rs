//! Configuration: `tessera.toml`, overridden key by key by `TESSERA_*` environment variables, validated
//! once into a [`Config`]. With no file at all every key has a working default (the embedded mode).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::{self, IpRangeSet, IpRuleDecl, PolicyDecl};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where SSO sessions live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBackend {
    /// In-process; the single-node default. Sessions end when the process does.
    Memory,
    /// Redis at `session.redis_url`; shared by every node, survives restarts.
    Redis,
}

/// The validated configuration. Field docs say what each key is for; `tessera.example.toml` mirrors them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Socket address to listen on.
    pub listen: SocketAddr,
    /// Public base URL; SAML endpoints and the entity ID derive from it, and `https` makes cookies Secure.
    pub base_url: String,
    /// Our SAML entity ID. Defaults to `<base_url>/saml/metadata`.
    pub entity_id: Option<String>,
    /// Directory URL: `sqlite://path` or `postgres://...`.
    pub database_url: String,
    /// Folder of the signing key and certificate (generated at first start when absent).
    pub certs_dir: PathBuf,
    /// Folder whose `*.xml` files are registered as SPs at start.
    pub metadata_dir: PathBuf,
    /// Folder for state Tessera creates itself (the SQLite file, the NameID secret).
    pub data_dir: PathBuf,
    pub session: SessionConfig,
    pub saml: SamlConfig,
    /// Create the demo user (and print its password) when the directory has no users.
    pub demo: bool,
    /// Reverse proxies (CIDRs, addresses or from-to ranges) whose `X-Forwarded-For` / `Forwarded`
    /// headers are believed when they connect; without it the TCP peer is the client address, which is
    /// what the IP allowlists check.
    pub trusted_proxies: Vec<String>,
    /// IP allowlist rules declared here (GitOps), reconciled into the directory at every start.
    pub ip_rules: Vec<IpRuleDecl>,
    /// Security policies declared here with their assignments, reconciled into the directory at every
    /// start.
    pub policies: Vec<PolicyDecl>,
    /// App assignment rules declared here (`[[assignment_rules]]`, docs/app-assignment.md), reconciled
    /// into the directory at every start.
    pub assignment_rules: Vec<policy::AssignmentRuleDecl>,
    /// Second factors: the key that protects them, the name apps show, WebAuthn settings.
    pub mfa: MfaConfig,
    /// How passwords are hashed (argon2id costs).
    pub passwords: PasswordConfig,
    /// Self-service account recovery: its brute-force lockout and reset links.
    pub recovery: RecoveryConfig,
    /// Login monitoring: the GeoIP database and how long events are kept.
    pub events: EventsConfig,
    /// Brute-force defence of the sign-in form.
    pub lockout: LockoutConfig,
    /// SP metadata fetched from URLs: fetch limits and how often the refresh schedule is looked at.
    pub sp_metadata: SpMetadataConfig,
}

/// SP metadata fetched from URLs (`[sp_metadata]`); see `sp_registration`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpMetadataConfig {
    /// A fetch taking longer than this many seconds (connect and body) is abandoned.
    pub fetch_timeout_secs: u64,
    /// A metadata document larger than this many bytes is refused (checked while it streams in).
    pub max_bytes: usize,
    /// How often, in seconds, the server looks for SPs whose refresh interval has elapsed.
    pub refresh_check_secs: u64,
}

impl Default for SpMetadataConfig {
    fn default() -> Self {
        SpMetadataConfig {
            fetch_timeout_secs: 10,
            max_bytes: 1024 * 1024,
            refresh_check_secs: 60,
        }
    }
}

/// Password hashing settings (`[passwords]`). Stored hashes keep the costs they were made with and
/// still verify; a successful sign-in rehashes with these when they differ.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// argon2id memory cost in KiB (RFC 9106 `m`). Default: OWASP's 19456 (19 MiB).
    pub argon2_memory_kib: u32,
    /// argon2id passes (RFC 9106 `t`). Default: 2.
    pub argon2_iterations: u32,
    /// argon2id lanes (RFC 9106 `p`). Default: 1.
    pub argon2_parallelism: u32,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            argon2_memory_kib: 19456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
        }
    }
}

/// Account recovery settings (`[recovery]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Failed recovery steps (wrong answers, wrong codes) allowed per user, and separately per client
    /// address, before recovery is locked for them.
    pub max_failures: u64,
    /// How long a lock lasts, counted from the first failure, in seconds (`tessera user
    /// unlock-recovery` lifts it earlier).
    pub lockout_secs: u64,
    /// Default validity of an administrator's reset link, in minutes.
    pub link_valid_minutes: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_failures: 5,
            lockout_secs: 900,
            link_valid_minutes: 60,
        }
    }
}

/// A configured secret: deserialized like a string, never printed by `Debug` (configurations are
/// logged and compared in tests).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps a secret value (tests, generated keys).
    pub fn new(text: impl Into<String>) -> Self {
        SecretText(text.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

/// Second-factor settings (`[mfa]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaConfig {
    /// 64 hex digits (32 bytes) that seal TOTP secrets and key recovery-code hashes. When absent, a
    /// key is generated once into `<data_dir>/mfa.key`; losing the key makes every TOTP factor and
    /// recovery code unusable, so several nodes must share one.
    pub key: Option<SecretText>,
    /// The issuer authenticator apps show next to the account name (otpauth `issuer`).
    pub issuer: String,
    /// The WebAuthn relying-party ID: the host name passkeys are bound to. Default: the host of
    /// `base_url`. WebAuthn is off when that host is an IP address (WebAuthn L3 5.1.2 needs a
    /// domain). Changing it orphans every registered passkey.
    pub webauthn_rp_id: Option<String>,
    /// Security policies (by name) whose users must verify themselves on the authenticator (PIN or
    /// biometric), not merely touch it: WebAuthn user verification "required" for them.
    pub user_verification_policies: Vec<String>,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            key: None,
            issuer: "Tessera".into(),
            webauthn_rp_id: None,
            user_verification_policies: Vec::new(),
        }
    }
}

/// Login monitoring settings (`[events]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// A MaxMind-format city database (GeoLite2 City, DB-IP City Lite, ...) that gives each event a
    /// country and city. Without it events carry only the private / loopback labels.
    pub geoip_database: Option<PathBuf>,
    /// Sign-in and SSO events older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            geoip_database: None,
            retention_days: 365,
        }
    }
}

/// Brute-force defence of the sign-in form (`[lockout]`); see `events::lockout`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Off only for troubleshooting.
    pub enabled: bool,
    /// Attempts per username counted within this many seconds (from the first one).
    pub window_secs: u64,
    /// Past this many attempts for a username, each further attempt waits first.
    pub slowdown_after: u64,
    /// The wait per attempt over `slowdown_after`, in milliseconds (at most ten times this).
    pub slowdown_ms: u64,
    /// Past this many attempts for a username the username is locked out.
    pub lockout_after: u64,
    /// Past this many attempts from one client address (any usernames, successes included) the
    /// address is locked out.
    pub address_lockout_after: u64,
    /// How long a lock lasts, in seconds (or until the window ends, if later).
    pub lockout_secs: u64,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            enabled: true,
            window_secs: 900,
            slowdown_after: 5,
            slowdown_ms: 500,
            lockout_after: 10,
            address_lockout_after: 100,
            lockout_secs: 900,
        }
    }
}

/// Session settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub backend: SessionBackend,
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// A session unused this long ends.
    pub idle_timeout_secs: u64,
    /// A session ends this long after sign-in, however active.
    pub absolute_lifetime_secs: u64,
}

/// Protocol settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamlConfig {
    /// How far clocks may disagree (IssueInstant checks, NotBefore backdating).
    pub clock_skew_secs: i64,
    /// The oldest AuthnRequest accepted, measured from its IssueInstant.
    pub max_request_age_secs: i64,
    /// How long an issued assertion may be presented.
    pub assertion_lifetime_secs: i64,
    /// Largest inbound SAML message, after decompression.
    pub max_message_bytes: usize,
    /// Single logout: how long each SP may take to answer a back-channel (SOAP) LogoutRequest before
    /// it counts as not signed out. All SPs are asked at once, so this bounds the whole propagation;
    /// the front-channel round (SPs told through the browser's iframes) gets the same time after it.
    pub slo_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            base_url: "http://127.0.0.1:8080".into(),
            entity_id: None,
            database_url: "sqlite://data/tessera.db".into(),
            certs_dir: "certs".into(),
            metadata_dir: "metadata".into(),
            data_dir: "data".into(),
            session: SessionConfig::default(),
            saml: SamlConfig::default(),
            demo: true,
            trusted_proxies: Vec::new(),
            ip_rules: Vec::new(),
            policies: Vec::new(),
            assignment_rules: Vec::new(),
            mfa: MfaConfig::default(),
            passwords: PasswordConfig::default(),
            recovery: RecoveryConfig::default(),
            events: EventsConfig::default(),
            lockout: LockoutConfig::default(),
            sp_metadata: SpMetadataConfig::default(),
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            backend: SessionBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "tessera:".into(),
            idle_timeout_secs: 30 * 60,
            absolute_lifetime_secs: 10 * 3600,
        }
    }
}

impl Default for SamlConfig {
    fn default() -> Self {
        SamlConfig {
            clock_skew_secs: 120,
            max_request_age_secs: 600,
            assertion_lifetime_secs: 300,
            max_message_bytes: 256 * 1024,
            slo_timeout_ms: 3000,
        }
    }
}

impl Config {
    /// Loads the file (when given) and applies environment overrides from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment passed in so tests control it. A variable is
    /// `TESSERA_` followed by the key path in capitals joined by `__`: `TESSERA_LISTEN`,
    /// `TESSERA_SESSION__BACKEND`, `TESSERA_SAML__CLOCK_SKEW_SECS`.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
                    path: p.into(),
                    source,
                })?;
                text.parse().map_err(|e: toml::de::Error| Error::Parse {
                    path: p.into(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        for (var, value) in env {
            let Some(key) = var.strip_prefix("TESSERA_") else {
                continue;
            };
            // TESSERA_CONFIG names the file itself (`--config`), it is not a setting.
            if key == "CONFIG" {
                continue;
            }
            let path: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut table, &path, &value).map_err(|message| Error::Env {
                var: var.clone(),
                message,
            })?;
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| Error::Parse {
                    path: path.unwrap_or(Path::new("<env>")).into(),
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration for tests: everything in `dir`, memory sessions, no demo user.
    pub fn for_test(dir: &Path) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: format!("sqlite://{}", dir.join("tessera.db").display()),
            certs_dir: dir.join("certs"),
            metadata_dir: dir.join("metadata"),
            data_dir: dir.to_path_buf(),
            demo: false,
            ..Config::default()
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let url = url::Url::parse(&self.base_url)
            .map_err(|e| Error::Invalid(format!("base_url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Invalid("base_url must be http or https".into()));
        }
        if self.session.idle_timeout_secs == 0 || self.session.absolute_lifetime_secs == 0 {
            return Err(Error::Invalid("session timeouts must be positive".into()));
        }
        if self.saml.clock_skew_secs < 0 || self.saml.assertion_lifetime_secs <= 0 {
            return Err(Error::Invalid("saml times must be positive".into()));
        }
        if self.sp_metadata.fetch_timeout_secs == 0
            || self.sp_metadata.max_bytes == 0
            || self.sp_metadata.refresh_check_secs == 0
        {
            return Err(Error::Invalid(
                "sp_metadata: fetch_timeout_secs, max_bytes and refresh_check_secs must be positive"
                    .into(),
            ));
        }
        if self.saml.slo_timeout_ms == 0 {
            return Err(Error::Invalid(
                "saml.slo_timeout_ms must be positive".into(),
            ));
        }
        self.trusted_proxy_set()?;
        crate::directory::PasswordHasher::check_params(
            self.passwords.argon2_memory_kib,
            self.passwords.argon2_iterations,
            self.passwords.argon2_parallelism,
        )
        .map_err(|e| Error::Invalid(format!("passwords: {e}")))?;
        if self.recovery.max_failures == 0
            || self.recovery.lockout_secs == 0
            || self.recovery.link_valid_minutes == 0
        {
            return Err(Error::Invalid(
                "recovery: max_failures, lockout_secs and link_valid_minutes must be positive"
                    .into(),
            ));
        }
        if let Some(key) = &self.mfa.key {
            crate::mfa::MfaKey::from_hex(key.expose())
                .map_err(|e| Error::Invalid(format!("mfa.key: {e}")))?;
        }
        crate::mfa::totp::check_issuer(&self.mfa.issuer)
            .map_err(|e| Error::Invalid(format!("mfa.issuer: {e}")))?;
        if let Some(rp_id) = &self.mfa.webauthn_rp_id {
            let host = url.host_str().unwrap_or_default();
            if rp_id.is_empty() || !(host == rp_id || host.ends_with(&format!(".{rp_id}"))) {
                return Err(Error::Invalid(format!(
                    "mfa.webauthn_rp_id {rp_id:?} must be the host of base_url ({host}) or a parent \
                     domain of it (WebAuthn L3 5.1.2)"
                )));
            }
        }
        policy::validate_declarations(&self.ip_rules, &self.policies)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        policy::rules_from_declarations(&self.assignment_rules)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(())
    }

    /// The compiled `trusted_proxies`, for [`crate::policy::client_address`]. The error names the
    /// offending entry.
    pub fn trusted_proxy_set(&self) -> Result<IpRangeSet, Error> {
        let mut ranges = Vec::with_capacity(self.trusted_proxies.len());
        for text in &self.trusted_proxies {
            let range = text.parse().map_err(|error| {
                Error::Invalid(
                    policy::Error::Range {
                        item: policy::Item::TrustedProxy(text.clone()),
                        error,
                    }
                    .to_string(),
                )
            })?;
            ranges.push(range);
        }
        Ok(IpRangeSet::from_ranges(&ranges))
    }

    /// The password hasher with the configured `[passwords]` costs.
    pub fn password_hasher(
        &self,
    ) -> Result<crate::directory::PasswordHasher, crate::directory::Error> {
        crate::directory::PasswordHasher::new(
            self.passwords.argon2_memory_kib,
            self.passwords.argon2_iterations,
            self.passwords.argon2_parallelism,
        )
    }

    /// The base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }

    pub fn entity_id(&self) -> String {
        self.entity_id
            .clone()
            .unwrap_or_else(|| format!("{}/saml/metadata", self.base()))
    }

    pub fn sso_url(&self) -> String {
        format!("{}/saml/sso", self.base())
    }

    pub fn slo_url(&self) -> String {
        format!("{}/saml/slo", self.base())
    }

    /// Cookies get `Secure` when the public URL is https.
    pub fn secure_cookies(&self) -> bool {
        self.base_url.starts_with("https://")
    }
}

/// Sets `path` in `table` to `value`, typed as an integer or boolean when it parses as one.
fn set_path(table: &mut toml::Table, path: &[String], value: &str) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a table"))?;
    }
    // A TOML array (`["10.0.0.0/8", "192.0.2.1"]`, or an array of inline tables) sets a list key.
    let array = value
        .trim_start()
        .starts_with('[')
        .then(|| format!("v = {value}").parse::<toml::Table>().ok())
        .flatten()
        .and_then(|mut t| t.remove("v"));
    let typed = if let Some(array) = array {
        array
    } else if let Ok(i) = value.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(b) = value.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(value.to_owned())
    };
    current.insert(last.clone(), typed);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.session.backend, SessionBackend::Memory);
        assert_eq!(c.entity_id(), "http://127.0.0.1:8080/saml/metadata");
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "base_url = \"https://idp.example\"\n[session]\nbackend = \"memory\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&file),
            env(&[
                ("TESSERA_SESSION__BACKEND", "redis"),
                ("TESSERA_SAML__CLOCK_SKEW_SECS", "30"),
                ("HOME", "/x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.session.backend, SessionBackend::Redis);
        assert_eq!(c.saml.clock_skew_secs, 30);
        assert!(c.secure_cookies());
    }

    #[test]
    fn the_config_file_variable_is_not_a_setting() {
        let c =
            Config::load_with_env(None, env(&[("TESSERA_CONFIG", "/etc/tessera.toml")])).unwrap();
        assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn the_annotated_example_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tessera.example.toml");
        let example = Config::load_with_env(Some(&path), env(&[])).unwrap();
        let defaults = Config::default();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn access_policy_declarations_are_read_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "trusted_proxies = [\"10.0.0.0/8\", \"2001:db8::1\"]\n\
             [[ip_rules]]\nname = \"office\"\nranges = [\"192.0.2.0/24\"]\nroles = [\"admin\"]\n\
             [[policies]]\nname = \"admin\"\nmfa_required = true\nmfa_methods = [\"totp\"]\n\
             reauth_interval_secs = 3600\nassign = [{ role = \"admin\", priority = 10 }]\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&file), env(&[])).unwrap();
        assert_eq!(c.ip_rules.len(), 1);
        assert_eq!(c.policies[0].assign.len(), 1);
        assert!(c
            .trusted_proxy_set()
            .unwrap()
            .contains("10.1.2.3".parse().unwrap()));

        for (text, expected) in [
            (
                "trusted_proxies = [\"10.0.0.1/8\"]\n",
                "trusted proxy \"10.0.0.1/8\": \"10.0.0.1/8\" has host bits set",
            ),
            (
                "[[ip_rules]]\nname = \"x\"\nranges = [\"10.0.0.300\"]\neveryone = true\n",
                "10.0.0.300",
            ),
            (
                "[[ip_rules]]\nname = \"x\"\nranges = [\"10.0.0.1\"]\neveryone = true\n\
                 [[ip_rules]]\nname = \"x\"\nranges = [\"10.0.0.2\"]\neveryone = true\n",
                "ip rule \"x\" is given more than once",
            ),
            (
                "[[policies]]\nname = \"a\"\ndefault = true\n[[policies]]\nname = \"b\"\ndefault = true\n",
                "both marked as the default",
            ),
            ("[[policies]]\nname = \"a\"\nmfa = true\n", "unknown field `mfa`"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Config::load_with_env(Some(&file), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn mfa_settings_are_validated_and_the_key_is_never_printed() {
        let key = "0f".repeat(32);
        let c = Config::load_with_env(
            None,
            env(&[
                ("TESSERA_MFA__KEY", key.as_str()),
                ("TESSERA_BASE_URL", "https://idp.example.org"),
                ("TESSERA_MFA__WEBAUTHN_RP_ID", "example.org"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.mfa.key.as_ref().map(SecretText::expose),
            Some(key.as_str())
        );
        assert!(
            !format!("{c:?}").contains(&key),
            "the key leaked into Debug"
        );
        for (var, value, expected) in [
            ("TESSERA_MFA__KEY", "abcd", "mfa.key"),
            ("TESSERA_MFA__ISSUER", "Acme:IdP", "mfa.issuer"),
            (
                "TESSERA_MFA__WEBAUTHN_RP_ID",
                "other.example",
                "mfa.webauthn_rp_id",
            ),
        ] {
            let err = Config::load_with_env(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{var}={value}: {err}");
        }
    }

    #[test]
    fn list_keys_can_be_set_from_the_environment() {
        let c = Config::load_with_env(
            None,
            env(&[(
                "TESSERA_TRUSTED_PROXIES",
                "[\"10.0.0.0/8\", \"2001:db8::1\"]",
            )]),
        )
        .unwrap();
        assert_eq!(
            c.trusted_proxies,
            vec!["10.0.0.0/8".to_owned(), "2001:db8::1".to_owned()]
        );
        let err = Config::load_with_env(
            None,
            env(&[("TESSERA_TRUSTED_PROXIES", "[\"10.0.0.1/8\"]")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("10.0.0.1/8"), "{err}");
    }

    #[test]
    fn password_costs_and_recovery_limits_are_read_and_checked() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("TESSERA_PASSWORDS__ARGON2_MEMORY_KIB", "65536"),
                ("TESSERA_PASSWORDS__ARGON2_ITERATIONS", "3"),
                ("TESSERA_RECOVERY__MAX_FAILURES", "4"),
            ]),
        )
        .unwrap();
        let hasher = c.password_hasher().unwrap();
        assert_eq!(
            (hasher.m_cost(), hasher.t_cost(), hasher.p_cost()),
            (65536, 3, 1)
        );
        assert_eq!(c.recovery.max_failures, 4);
        for (var, value, expected) in [
            ("TESSERA_PASSWORDS__ARGON2_MEMORY_KIB", "1", "passwords"),
            ("TESSERA_PASSWORDS__ARGON2_ITERATIONS", "0", "passwords"),
            ("TESSERA_RECOVERY__MAX_FAILURES", "0", "recovery"),
            ("TESSERA_RECOVERY__LOCKOUT_SECS", "0", "recovery"),
        ] {
            let err = Config::load_with_env(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{var}={value}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load_with_env(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = Config::load_with_env(None, env(&[("TESSERA_BASE_URL", "ftp://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http or https"), "{err}");
    }
}
