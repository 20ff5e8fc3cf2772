//! WebAuthn authenticators (security keys, platform authenticators, passkeys) as a second factor.
//!
//! The ceremonies are webauthn-rs's; this module keeps their state and the credentials:
//! - ceremony state (the challenge) lives in the session store for [`CEREMONY_TTL`], keyed by user
//!   (or, for account recovery, by the recovery flow's handle:
//!   [`Mfa::start_webauthn_authentication_as`]), so the node that finishes a ceremony need not be the one that started it; each state can finish
//!   one ceremony only (an atomic `remember_once` on it), so a captured response cannot be replayed
//!   (WebAuthn L3 13.4.3);
//! - credentials are stored in the directory as webauthn-rs's JSON, under a name unique per user,
//!   so a user can keep several authenticators and remove one;
//! - user verification (PIN or biometric on the authenticator) is required or merely preferred as
//!   the caller asks: `Required` runs the passkey ceremonies, which fail unless the authenticator
//!   reports UV (WebAuthn L3 7.2 step 17); `Preferred` runs the security-key ceremonies.
//!
//! Failed assertions count against the same per-user attempt limit as TOTP and recovery codes.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration, SecurityKey,
    SecurityKeyAuthentication, SecurityKeyRegistration, Url, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

pub use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};

use super::{attempts_key, over_limit, Error, Mfa, MfaActor};
use crate::directory::WebauthnCredential;

/// How long a started ceremony may take before it must be started again: the WebAuthn L3
/// recommended timeout for ceremonies with user verification (5 minutes) plus a margin.
pub const CEREMONY_TTL: Duration = Duration::from_secs(360);

/// Session-store namespace of pending registrations.
const REGISTRATION_NAMESPACE: &str = "webauthn-reg";

/// Session-store namespace of pending authentications.
const AUTHENTICATION_NAMESPACE: &str = "webauthn-auth";

/// Replay-cache namespace marking ceremony states as finished.
const FINISHED_NAMESPACE: &str = "webauthn-done";

/// High half of the WebAuthn user handle ("tessera\0"); the low half is the user id. A user handle
/// must not carry personal data (WebAuthn L3 14.6.1), and a number does not.
const USER_HANDLE_PREFIX: u64 = 0x7465_7373_6572_6100;

/// Where WebAuthn is served: the relying party, as the browser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnSettings {
    /// The RP ID: the host name credentials are scoped to (WebAuthn L3 5.1.2), e.g.
    /// `idp.example.org`. Changing it orphans every registered credential.
    pub rp_id: String,
    /// The origin of the pages that run the ceremonies, e.g. `https://idp.example.org`; its host
    /// must be the RP ID or under it.
    pub rp_origin: Url,
    /// The name authenticators may show during registration.
    pub rp_name: String,
}

/// Whether the authenticator must verify the user (PIN, biometric), as asked by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserVerification {
    /// The ceremony fails unless the authenticator reports user verification.
    Required,
    /// User presence (a touch) is enough; verification is used when the authenticator offers it.
    Preferred,
}

/// The result of one WebAuthn sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebauthnOutcome {
    /// A registered authenticator signed the challenge.
    Accepted {
        /// The name of the authenticator used, to show and to log.
        name: String,
        /// Whether the authenticator verified the user (PIN, biometric).
        user_verified: bool,
    },
    /// The response does not verify (wrong credential, bad signature, missing user verification,
    /// cloned authenticator, other origin...). The reason is for logs only.
    Refused(String),
    /// Too many attempts for this user: refused without checking the response.
    RateLimited,
}

/// A registration in progress, kept in the session store.
#[derive(Serialize, Deserialize)]
enum RegistrationState {
    /// User verification required.
    Passkey(PasskeyRegistration),
    /// User verification preferred.
    SecurityKey(SecurityKeyRegistration),
}

/// An authentication in progress, kept in the session store.
#[derive(Serialize, Deserialize)]
enum AuthenticationState {
    /// User verification required.
    Passkey(PasskeyAuthentication),
    /// User verification preferred.
    SecurityKey(SecurityKeyAuthentication),
}

/// Builds the webauthn-rs relying party from the settings.
pub(crate) fn build(settings: &WebauthnSettings) -> Result<Webauthn, Error> {
    WebauthnBuilder::new(&settings.rp_id, &settings.rp_origin)
        .map_err(|e| Error::WebauthnConfig(e.to_string()))?
        .rp_name(&settings.rp_name)
        .build()
        .map_err(|e| Error::WebauthnConfig(e.to_string()))
}

/// The WebAuthn user handle of a directory user.
fn user_handle(user_id: i64) -> Uuid {
    Uuid::from_u64_pair(USER_HANDLE_PREFIX, user_id as u64)
}

/// The text form of a credential id, as stored: base64url without padding.
fn credential_id_text(id: &CredentialID) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// Reads a stored credential. Passkey and SecurityKey share one JSON layout (`{"cred": ...}`), so
/// either ceremony can use any stored credential.
fn stored<T: for<'de> Deserialize<'de>>(credential: &WebauthnCredential) -> Result<T, Error> {
    serde_json::from_str(&credential.credential)
        .map_err(|e| Error::CorruptCredential(format!("authenticator {:?}: {e}", credential.name)))
}

/// Key of a finished-ceremony marker: the SHA-256 of the state, which holds the random challenge.
fn state_marker(state_json: &str) -> String {
    hex::encode(openssl::sha::sha256(state_json.as_bytes()))
}

impl Mfa {
    /// Enables WebAuthn with these relying-party settings. [`Error::WebauthnConfig`] if the
    /// origin does not match the RP ID or is not a secure origin.
    pub fn with_webauthn(mut self, settings: &WebauthnSettings) -> Result<Self, Error> {
        self.webauthn = Some(std::sync::Arc::new(build(settings)?));
        Ok(self)
    }

    /// The relying party, or [`Error::WebauthnNotConfigured`].
    fn relying_party(&self) -> Result<&Webauthn, Error> {
        self.webauthn.as_deref().ok_or(Error::WebauthnNotConfigured)
    }

    /// Starts registering a new authenticator for the user. The returned options go to the
    /// browser (`navigator.credentials.create`, as JSON); the ceremony state stays in the session
    /// store, replacing an unfinished registration of the same user. Authenticators the user
    /// already registered are excluded, so the same one is not registered twice.
    pub async fn start_webauthn_registration(
        &self,
        user_id: i64,
        username: &str,
        display_name: &str,
        verification: UserVerification,
    ) -> Result<CreationChallengeResponse, Error> {
        let webauthn = self.relying_party()?;
        let existing = self.directory.webauthn_credentials(user_id).await?;
        let exclude = existing
            .iter()
            .map(|c| stored::<Passkey>(c).map(|p| p.cred_id().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = (!exclude.is_empty()).then_some(exclude);
        let handle = user_handle(user_id);
        let (options, state) = match verification {
            UserVerification::Required => {
                let (options, state) = webauthn
                    .start_passkey_registration(handle, username, display_name, exclude)
                    .map_err(|e| Error::Webauthn(e.to_string()))?;
                (options, RegistrationState::Passkey(state))
            }
            UserVerification::Preferred => {
                let (options, state) = webauthn
                    .start_securitykey_registration(
                        handle,
                        username,
                        display_name,
                        exclude,
                        None,
                        None,
                    )
                    .map_err(|e| Error::Webauthn(e.to_string()))?;
                (options, RegistrationState::SecurityKey(state))
            }
        };
        let state = serde_json::to_string(&state).map_err(|e| Error::Webauthn(e.to_string()))?;
        self.store
            .put_temp(
                REGISTRATION_NAMESPACE,
                &user_id.to_string(),
                &state,
                CEREMONY_TTL,
            )
            .await?;
        Ok(options)
    }

    /// Finishes a registration with the browser's response and stores the credential under
    /// `name` (recorded as `enrolled`). [`Error::NoCeremony`] if no registration is pending (or
    /// it expired, or was finished already), [`Error::WebauthnRegistration`] if the response
    /// does not verify, [`crate::directory::Error::DuplicateCredential`] if the name is taken.
    pub async fn finish_webauthn_registration(
        &self,
        user_id: i64,
        name: &str,
        response: &RegisterPublicKeyCredential,
    ) -> Result<WebauthnCredential, Error> {
        let webauthn = self.relying_party()?;
        let key = user_id.to_string();
        let state_json = self
            .store
            .get_temp(REGISTRATION_NAMESPACE, &key)
            .await?
            .ok_or(Error::NoCeremony)?;
        if !self
            .store
            .remember_once(FINISHED_NAMESPACE, &state_marker(&state_json), CEREMONY_TTL)
            .await?
        {
            return Err(Error::NoCeremony);
        }
        self.store.delete_temp(REGISTRATION_NAMESPACE, &key).await?;
        let state: RegistrationState = serde_json::from_str(&state_json)
            .map_err(|e| Error::Webauthn(format!("unreadable ceremony state: {e}")))?;
        let (credential_id, json) = match state {
            RegistrationState::Passkey(state) => {
                let passkey = webauthn
                    .finish_passkey_registration(response, &state)
                    .map_err(|e| Error::WebauthnRegistration(e.to_string()))?;
                (
                    credential_id_text(passkey.cred_id()),
                    serde_json::to_string(&passkey),
                )
            }
            RegistrationState::SecurityKey(state) => {
                let key = webauthn
                    .finish_securitykey_registration(response, &state)
                    .map_err(|e| Error::WebauthnRegistration(e.to_string()))?;
                (
                    credential_id_text(key.cred_id()),
                    serde_json::to_string(&key),
                )
            }
        };
        let json = json.map_err(|e| Error::Webauthn(e.to_string()))?;
        Ok(self
            .directory
            .add_webauthn_credential(user_id, name, &credential_id, &json, &MfaActor::SelfService)
            .await?)
    }

    /// Starts a sign-in with any of the user's authenticators. The options go to the browser
    /// (`navigator.credentials.get`); the state stays in the session store.
    /// [`Error::WebauthnNotEnrolled`] if the user has no authenticator.
    pub async fn start_webauthn_authentication(
        &self,
        user_id: i64,
        verification: UserVerification,
    ) -> Result<RequestChallengeResponse, Error> {
        self.start_webauthn_authentication_as(user_id, &user_id.to_string(), verification)
            .await
    }

    /// As [`Mfa::start_webauthn_authentication`], with the ceremony state kept under `ceremony`
    /// instead of the user id: a flow other than sign-in (account recovery) binds the ceremony to
    /// its own handle, so it can be finished only through that flow and does not replace a sign-in
    /// ceremony of the same user. Finish it with [`Mfa::finish_webauthn_authentication_as`].
    pub async fn start_webauthn_authentication_as(
        &self,
        user_id: i64,
        ceremony: &str,
        verification: UserVerification,
    ) -> Result<RequestChallengeResponse, Error> {
        let webauthn = self.relying_party()?;
        let credentials = self.directory.webauthn_credentials(user_id).await?;
        if credentials.is_empty() {
            return Err(Error::WebauthnNotEnrolled);
        }
        let (options, state) = match verification {
            UserVerification::Required => {
                let keys = credentials
                    .iter()
                    .map(stored::<Passkey>)
                    .collect::<Result<Vec<_>, _>>()?;
                let (options, state) = webauthn
                    .start_passkey_authentication(&keys)
                    .map_err(|e| Error::Webauthn(e.to_string()))?;
                (options, AuthenticationState::Passkey(state))
            }
            UserVerification::Preferred => {
                let keys = credentials
                    .iter()
                    .map(stored::<SecurityKey>)
                    .collect::<Result<Vec<_>, _>>()?;
                let (options, state) = webauthn
                    .start_securitykey_authentication(&keys)
                    .map_err(|e| Error::Webauthn(e.to_string()))?;
                (options, AuthenticationState::SecurityKey(state))
            }
        };
        let state = serde_json::to_string(&state).map_err(|e| Error::Webauthn(e.to_string()))?;
        self.store
            .put_temp(AUTHENTICATION_NAMESPACE, ceremony, &state, CEREMONY_TTL)
            .await?;
        Ok(options)
    }

    /// Finishes a sign-in with the browser's response. On success the stored credential is
    /// updated (signature counter, backup state) and its last use set to `now`. Each started
    /// ceremony can be finished once. [`Error::NoCeremony`] if none is pending.
    pub async fn finish_webauthn_authentication(
        &self,
        user_id: i64,
        response: &PublicKeyCredential,
        now: i64,
    ) -> Result<WebauthnOutcome, Error> {
        self.finish_webauthn_authentication_as(user_id, &user_id.to_string(), response, now)
            .await
    }

    /// As [`Mfa::finish_webauthn_authentication`], for a ceremony started with
    /// [`Mfa::start_webauthn_authentication_as`] under `ceremony`.
    pub async fn finish_webauthn_authentication_as(
        &self,
        user_id: i64,
        ceremony: &str,
        response: &PublicKeyCredential,
        now: i64,
    ) -> Result<WebauthnOutcome, Error> {
        let webauthn = self.relying_party()?;
        if over_limit(&*self.store, &self.limit, user_id).await? {
            return Ok(WebauthnOutcome::RateLimited);
        }
        let key = ceremony;
        let state_json = self
            .store
            .get_temp(AUTHENTICATION_NAMESPACE, key)
            .await?
            .ok_or(Error::NoCeremony)?;
        if !self
            .store
            .remember_once(FINISHED_NAMESPACE, &state_marker(&state_json), CEREMONY_TTL)
            .await?
        {
            return Err(Error::NoCeremony);
        }
        self.store
            .delete_temp(AUTHENTICATION_NAMESPACE, key)
            .await?;
        let state: AuthenticationState = serde_json::from_str(&state_json)
            .map_err(|e| Error::Webauthn(format!("unreadable ceremony state: {e}")))?;
        let result = match &state {
            AuthenticationState::Passkey(state) => {
                webauthn.finish_passkey_authentication(response, state)
            }
            AuthenticationState::SecurityKey(state) => {
                webauthn.finish_securitykey_authentication(response, state)
            }
        };
        let result = match result {
            Ok(result) => result,
            Err(e) => return Ok(WebauthnOutcome::Refused(e.to_string())),
        };
        let used_id = credential_id_text(result.cred_id());
        let credentials = self.directory.webauthn_credentials(user_id).await?;
        let Some(credential) = credentials.iter().find(|c| c.credential_id == used_id) else {
            // Removed between start and finish.
            return Ok(WebauthnOutcome::Refused(
                "the authenticator was removed".to_owned(),
            ));
        };
        let mut passkey: Passkey = stored(credential)?;
        passkey.update_credential(&result);
        let json = serde_json::to_string(&passkey).map_err(|e| Error::Webauthn(e.to_string()))?;
        self.directory
            .update_webauthn_credential(credential.id, &json, now)
            .await?;
        self.store.reset_counter(&attempts_key(user_id)).await?;
        Ok(WebauthnOutcome::Accepted {
            name: credential.name.clone(),
            user_verified: result.user_verified(),
        })
    }

    /// The user's registered authenticators, sorted by name.
    pub async fn webauthn_credentials(
        &self,
        user_id: i64,
    ) -> Result<Vec<WebauthnCredential>, Error> {
        Ok(self.directory.webauthn_credentials(user_id).await?)
    }

    /// Removes the user's authenticator named `name` (recorded as `removed` by `actor`).
    pub async fn remove_webauthn_credential(
        &self,
        user_id: i64,
        name: &str,
        actor: &MfaActor,
    ) -> Result<bool, Error> {
        Ok(self
            .directory
            .remove_webauthn_credential(user_id, name, actor)
            .await?)
    }
}
