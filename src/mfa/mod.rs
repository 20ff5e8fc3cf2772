//! Second factors: TOTP authenticator apps, WebAuthn authenticators and single-use recovery codes.
//!
//! The pieces, from the bottom up:
//! - [`seal`]: the configured [`MfaKey`], which encrypts TOTP secrets at rest (AES-256-GCM) and
//!   keys the recovery-code hashes;
//! - [`totp`]: RFC 6238 codes, the otpauth URI and its QR code, no IO;
//! - [`recovery`]: generation, typed-input normalization and stored form of recovery codes;
//! - [`webauthn`]: registration and sign-in ceremonies with security keys and passkeys;
//! - [`check_totp`]: one TOTP attempt against the shared [`SessionStore`], which holds the per-user
//!   attempt counter and the replay cache, so both hold across nodes;
//! - [`Mfa`]: the service the web pages call, tying the directory (`crate::directory`, where the
//!   factors and their audit trail are stored), the session store and the key together.
//!
//! Time is passed in (`now`, unix seconds) so that tests and callers control it.
//!
//! Rate limiting: TOTP codes, recovery codes and WebAuthn assertions share one per-user counter of attempts
//! (`mfa-attempts:<user id>`) in a [`AttemptLimit::window`]; once it passes
//! [`AttemptLimit::max_attempts`] every attempt is refused unchecked until the window ends. A
//! success resets it, so only failures accumulate. Sharing the counter stops an attacker from
//! getting a full allowance of guesses for each kind of code.

pub mod recovery;
pub mod seal;
pub mod totp;
pub mod webauthn;

use std::sync::Arc;
use std::time::Duration;

use crate::directory::{self, Directory};
use crate::session::{self, SessionStore};

pub use crate::directory::{FactorReset, Factors, MfaAction, MfaActor, MfaEvent};
pub use recovery::{RecoveryCode, RECOVERY_CODE_COUNT};
pub use seal::MfaKey;
pub use totp::TotpSecret;
pub use webauthn::{UserVerification, WebauthnOutcome, WebauthnSettings};

/// Replay-cache namespace for accepted TOTP steps.
const REPLAY_NAMESPACE: &str = "totp";

/// How long an accepted step is remembered: a code of step s is accepted while the clock is in
/// steps s-1..=s+1, i.e. for at most 90 s after the first possible acceptance; one more step
/// covers clock differences between nodes.
const REPLAY_TTL: Duration = Duration::from_secs(120);

/// Everything that can go wrong in the MFA engine. A wrong, replayed or rate-limited code is not
/// an error: see [`TotpOutcome`] and [`RecoveryOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured MFA key is not 64 hex digits of a non-zero key.
    #[error("invalid MFA key: {0}")]
    InvalidKey(String),
    /// A sealed value is not `v1:<key id>:<base64>` of at least a nonce and a tag.
    #[error("malformed sealed secret")]
    MalformedSealed,
    /// A sealed value uses a layout this version does not know.
    #[error("sealed secret has unsupported version {0:?}")]
    UnsupportedSealVersion(String),
    /// A sealed value was made under another key (the configured key changed).
    #[error(
        "secret was sealed with MFA key {sealed_with}, but the configured key is {configured}"
    )]
    WrongKey {
        /// Key id found in the sealed value.
        sealed_with: String,
        /// Key id of the configured key.
        configured: String,
    },
    /// A sealed value fails authentication: ciphertext, tag or owner binding was altered.
    #[error("sealed secret failed authentication (tampered or moved to another user)")]
    Tampered,
    /// A TOTP secret has an unusable length (after opening, or from a caller).
    #[error("TOTP secret of {0} bytes: expected 16 to 64")]
    InvalidSecret(usize),
    /// A time before the unix epoch has no TOTP step.
    #[error("time before the unix epoch")]
    TimeBeforeEpoch,
    /// An otpauth issuer or account name cannot be put into the URI label.
    #[error("invalid otpauth label: {0}")]
    InvalidLabel(String),
    /// The otpauth URI does not fit in a QR code.
    #[error("cannot render QR code: {0}")]
    QrCode(String),
    /// The user has no pending TOTP enrolment to confirm.
    #[error("no TOTP enrolment is pending for this user")]
    NoPendingEnrolment,
    /// The pending enrolment was restarted (another tab) while this code was being checked.
    #[error("the TOTP enrolment was restarted; scan the new code")]
    EnrolmentChanged,
    /// The user has no active TOTP factor to check a code against.
    #[error("this user has no TOTP factor")]
    TotpNotEnrolled,
    /// The WebAuthn relying-party settings are unusable (origin not under the RP ID, not secure).
    #[error("invalid WebAuthn settings: {0}")]
    WebauthnConfig(String),
    /// A WebAuthn call was made on a service built without [`Mfa::with_webauthn`].
    #[error("WebAuthn is not configured")]
    WebauthnNotConfigured,
    /// The user has no WebAuthn authenticator to sign in with.
    #[error("this user has no WebAuthn authenticator")]
    WebauthnNotEnrolled,
    /// No WebAuthn ceremony is pending for the user: never started, expired, or already finished.
    #[error("no WebAuthn ceremony is pending; start again")]
    NoCeremony,
    /// The authenticator's registration response does not verify.
    #[error("the authenticator could not be registered: {0}")]
    WebauthnRegistration(String),
    /// A stored WebAuthn credential cannot be read back.
    #[error("corrupt WebAuthn credential: {0}")]
    CorruptCredential(String),
    /// webauthn-rs failed to start a ceremony or to (de)serialize its state.
    #[error("WebAuthn failure: {0}")]
    Webauthn(String),
    /// OpenSSL failed (HMAC or AES-GCM setup).
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
    /// The OpenSSL random generator failed.
    #[error("random generator failed: {0}")]
    Random(String),
    /// The directory failed.
    #[error(transparent)]
    Directory(#[from] directory::Error),
    /// The session store (attempt counter, replay cache) failed.
    #[error(transparent)]
    Session(#[from] session::Error),
}

/// The result of one TOTP attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpOutcome {
    /// The code is right and was not used before; `step` is the time step it matched.
    Accepted {
        /// The matched time step (RFC 6238 4.2), now remembered as used.
        step: u64,
    },
    /// The code is wrong (or malformed, or for a step outside the drift window).
    Wrong,
    /// The code is right but was already accepted once (RFC 6238 5.2).
    Replayed,
    /// Too many attempts for this user: refused without checking the code.
    RateLimited,
}

/// The result of one recovery-code attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// The code was unused and is now spent.
    Accepted {
        /// How many unused codes the user has left, to warn when they run low.
        remaining: usize,
    },
    /// Not one of the user's unused codes (wrong, malformed, or already used).
    Wrong,
    /// Too many attempts for this user: refused without checking the code.
    RateLimited,
}

/// The per-user brute-force limit on MFA codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimit {
    /// Attempts allowed per window; the next one is refused. 5 by default: with 3 accepted codes
    /// out of 10^6, 5 guesses per 5 minutes give an attacker about 0.4% per year.
    pub max_attempts: u64,
    /// The window, starting at the first failed attempt. 5 minutes by default.
    pub window: Duration,
}

impl Default for AttemptLimit {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            window: Duration::from_secs(300),
        }
    }
}

/// The store key of a user's attempt counter.
fn attempts_key(user_id: i64) -> String {
    format!("mfa-attempts:{user_id}")
}

/// Counts one attempt for `user_id`; true if it is over the limit.
async fn over_limit(
    store: &dyn SessionStore,
    limit: &AttemptLimit,
    user_id: i64,
) -> Result<bool, Error> {
    let attempts = store
        .incr_counter(&attempts_key(user_id), limit.window)
        .await?;
    Ok(attempts > limit.max_attempts)
}

/// One TOTP attempt: counts it against the user's limit, checks `code` against `secret` at `now`
/// (one step of drift either way), and refuses a step already accepted for this user, through
/// the store's replay cache, atomically across nodes. A success resets the attempt counter.
pub async fn check_totp(
    store: &dyn SessionStore,
    limit: &AttemptLimit,
    user_id: i64,
    secret: &TotpSecret,
    code: &str,
    now: i64,
) -> Result<TotpOutcome, Error> {
    if over_limit(store, limit, user_id).await? {
        return Ok(TotpOutcome::RateLimited);
    }
    let Some(step) = totp::verify(secret, code, now)? else {
        return Ok(TotpOutcome::Wrong);
    };
    let first_use = store
        .remember_once(REPLAY_NAMESPACE, &format!("{user_id}:{step}"), REPLAY_TTL)
        .await?;
    if !first_use {
        return Ok(TotpOutcome::Replayed);
    }
    store.reset_counter(&attempts_key(user_id)).await?;
    Ok(TotpOutcome::Accepted { step })
}

/// What the enrolment page shows: the QR code and, beside it, the same secret as text.
#[derive(Clone)]
pub struct TotpEnrolment {
    /// The secret in base32, for apps that cannot scan.
    pub secret_base32: String,
    /// The otpauth URI the QR code encodes.
    pub uri: String,
    /// The QR code as an inline `<svg>` element, safe to insert unescaped.
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolment(..)")
    }
}

/// The associated data that binds a sealed TOTP secret to its user.
fn totp_binding(user_id: i64) -> Vec<u8> {
    format!("tessera:totp:{user_id}").into_bytes()
}

/// The MFA service: enrolment, verification, recovery codes and administration of factors.
///
/// Cheap to clone; all clones share the directory pool and the session store.
#[derive(Clone)]
pub struct Mfa {
    /// Where factors and the audit trail are stored.
    directory: Directory,
    /// Holds the attempt counters and the TOTP replay cache, shared by all nodes.
    store: Arc<dyn SessionStore>,
    /// Seals TOTP secrets and keys recovery-code hashes.
    key: Arc<MfaKey>,
    /// The issuer shown in authenticator apps (the label prefix and `issuer=` of the URI).
    issuer: String,
    /// The per-user brute-force limit.
    limit: AttemptLimit,
    /// The WebAuthn relying party; `None` until [`Mfa::with_webauthn`].
    webauthn: Option<Arc<::webauthn_rs::Webauthn>>,
}

impl std::fmt::Debug for Mfa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mfa")
            .field("key", &self.key)
            .field("issuer", &self.issuer)
            .field("limit", &self.limit)
            .field("webauthn", &self.webauthn.is_some())
            .finish_non_exhaustive()
    }
}

impl Mfa {
    /// Builds the service with the default [`AttemptLimit`]. [`Error::InvalidLabel`] if `issuer`
    /// is empty or contains `:` or control characters.
    pub fn new(
        directory: Directory,
        store: Arc<dyn SessionStore>,
        key: MfaKey,
        issuer: impl Into<String>,
    ) -> Result<Self, Error> {
        let issuer = issuer.into();
        totp::check_issuer(&issuer)?;
        Ok(Self {
            directory,
            store,
            key: Arc::new(key),
            issuer,
            limit: AttemptLimit::default(),
            webauthn: None,
        })
    }

    /// Replaces the brute-force limit.
    pub fn with_attempt_limit(mut self, limit: AttemptLimit) -> Self {
        self.limit = limit;
        self
    }

    /// The user's factors.
    pub async fn factors(&self, user_id: i64) -> Result<Factors, Error> {
        Ok(self.directory.list_factors(user_id).await?)
    }

    /// Starts a TOTP enrolment: draws a secret, stores it sealed as pending (replacing an earlier
    /// pending one; an active factor keeps working), and returns what the page shows. `account`
    /// is the name the app lists under the issuer, usually the username.
    pub async fn begin_totp_enrolment(
        &self,
        user_id: i64,
        account: &str,
    ) -> Result<TotpEnrolment, Error> {
        let secret = TotpSecret::generate()?;
        let uri = totp::otpauth_uri(&secret, &self.issuer, account)?;
        let qr_svg = totp::qr_svg(&uri)?;
        let sealed = self.key.seal(secret.as_bytes(), &totp_binding(user_id))?;
        self.directory
            .begin_totp_enrolment(user_id, &sealed)
            .await?;
        Ok(TotpEnrolment {
            secret_base32: secret.to_base32(),
            uri,
            qr_svg,
        })
    }

    /// Confirms the pending enrolment with a code from the app. Only [`TotpOutcome::Accepted`]
    /// activates it (replacing an older active factor and recording `enrolled`); any other
    /// outcome leaves it pending. The confirming code counts as used.
    pub async fn confirm_totp_enrolment(
        &self,
        user_id: i64,
        code: &str,
        now: i64,
    ) -> Result<TotpOutcome, Error> {
        let pending = self
            .directory
            .pending_totp(user_id)
            .await?
            .ok_or(Error::NoPendingEnrolment)?;
        let secret = self.open_secret(user_id, &pending.sealed_secret)?;
        let outcome = check_totp(&*self.store, &self.limit, user_id, &secret, code, now).await?;
        if let TotpOutcome::Accepted { step } = outcome {
            let activated = self
                .directory
                .activate_totp(
                    user_id,
                    &pending.sealed_secret,
                    step,
                    &MfaActor::SelfService,
                )
                .await?;
            if !activated {
                return Err(Error::EnrolmentChanged);
            }
        }
        Ok(outcome)
    }

    /// Checks a sign-in code against the user's active TOTP factor.
    ///
    /// Besides the shared replay cache, the directory keeps the highest accepted step: a code
    /// of that step or an earlier one is [`TotpOutcome::Replayed`] even if the cache was lost.
    /// [`Error::TotpNotEnrolled`] if the user has no active factor.
    pub async fn verify_totp(
        &self,
        user_id: i64,
        code: &str,
        now: i64,
    ) -> Result<TotpOutcome, Error> {
        let factor = self
            .directory
            .active_totp(user_id)
            .await?
            .ok_or(Error::TotpNotEnrolled)?;
        let secret = self.open_secret(user_id, &factor.sealed_secret)?;
        let outcome = check_totp(&*self.store, &self.limit, user_id, &secret, code, now).await?;
        if let TotpOutcome::Accepted { step } = outcome {
            if !self.directory.record_totp_step(user_id, step).await? {
                return Ok(TotpOutcome::Replayed);
            }
        }
        Ok(outcome)
    }

    /// Removes the user's TOTP factor (and any pending enrolment). Returns whether an active
    /// factor was removed; that removal is recorded with `actor`.
    pub async fn remove_totp(&self, user_id: i64, actor: &MfaActor) -> Result<bool, Error> {
        Ok(self.directory.remove_totp(user_id, actor).await?)
    }

    /// Replaces the user's recovery codes with [`RECOVERY_CODE_COUNT`] new ones and returns them
    /// in clear: this is the only time they exist outside the user's hands.
    pub async fn regenerate_recovery_codes(
        &self,
        user_id: i64,
        actor: &MfaActor,
    ) -> Result<Vec<RecoveryCode>, Error> {
        let codes = recovery::generate_codes()?;
        let hashes = codes
            .iter()
            .map(|code| recovery::stored_hash(&self.key, user_id, code))
            .collect::<Result<Vec<_>, _>>()?;
        self.directory
            .replace_recovery_codes(user_id, &hashes, actor)
            .await?;
        Ok(codes)
    }

    /// Spends one of the user's recovery codes (typed input: case, dashes and spaces do not
    /// matter). Counts against the same attempt limit as TOTP codes; a success resets it and is
    /// recorded as `recovery_used`.
    pub async fn use_recovery_code(
        &self,
        user_id: i64,
        code: &str,
    ) -> Result<RecoveryOutcome, Error> {
        if over_limit(&*self.store, &self.limit, user_id).await? {
            return Ok(RecoveryOutcome::RateLimited);
        }
        let Some(hash) = recovery::code_hash(&self.key, user_id, code)? else {
            return Ok(RecoveryOutcome::Wrong);
        };
        if !self.directory.consume_recovery_code(user_id, &hash).await? {
            return Ok(RecoveryOutcome::Wrong);
        }
        self.store.reset_counter(&attempts_key(user_id)).await?;
        let remaining = self.directory.recovery_codes_left(user_id).await?;
        Ok(RecoveryOutcome::Accepted { remaining })
    }

    /// An administrator removes all of the user's factors (the user lost every device). Recorded
    /// as `reset` by `admin`; the user's attempt counter is cleared too.
    pub async fn reset_factors(
        &self,
        user_id: i64,
        admin: &MfaActor,
    ) -> Result<FactorReset, Error> {
        let reset = self.directory.reset_factors(user_id, admin).await?;
        self.store.reset_counter(&attempts_key(user_id)).await?;
        Ok(reset)
    }

    /// The user's MFA audit trail, oldest first.
    pub async fn events(&self, user_id: i64) -> Result<Vec<MfaEvent>, Error> {
        Ok(self.directory.mfa_events(user_id).await?)
    }

    /// Opens a stored TOTP secret of `user_id`.
    fn open_secret(&self, user_id: i64, sealed: &str) -> Result<TotpSecret, Error> {
        let bytes = self.key.open(sealed, &totp_binding(user_id))?;
        TotpSecret::from_bytes(&bytes)
    }
}
