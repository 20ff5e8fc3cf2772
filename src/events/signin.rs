//! The sign-in path's side of login monitoring, as methods of [`Idp`] so the handlers stay short:
//! the brute-force gate before the password, the events of each way a sign-in ends, and the
//! security policy's second factor for a new country or device.

use std::net::IpAddr;

use super::{lockout, Kind, LoginEvent, Outcome};
use crate::directory::User;
use crate::idp::{Idp, SecondFactorNeeded, SsoError};

impl Idp {
    /// Counts a password attempt for `username` from `ip` (before the password is looked at) and
    /// waits the slow-down when one applies. `Ok(false)`: locked out; the attempt is recorded and
    /// must be refused without checking the password.
    pub async fn password_attempt_allowed(
        &self,
        username: &str,
        ip: IpAddr,
        user_agent: &str,
    ) -> Result<bool, SsoError> {
        let gate =
            lockout::before_password(self.sessions.as_ref(), &self.config.lockout, username, ip)
                .await?;
        match gate {
            lockout::Gate::Proceed { delay } => {
                if !delay.is_zero() {
                    tracing::info!(%username, %ip, delay_ms = delay.as_millis() as u64, "sign-in slowed down");
                    tokio::time::sleep(delay).await;
                }
                Ok(true)
            }
            lockout::Gate::Locked { reason } => {
                tracing::warn!(%username, %ip, %reason, "sign-in refused: locked out");
                self.events
                    .record(
                        LoginEvent::new(Kind::SignIn, Outcome::LockedOut, username, ip)
                            .reason(reason)
                            .agent(user_agent),
                    )
                    .await;
                Ok(false)
            }
        }
    }

    /// The password was wrong, or the user does not exist: one event, told apart by the recorder.
    pub async fn password_rejected(&self, username: &str, ip: IpAddr, user_agent: &str) {
        self.events
            .record(
                LoginEvent::new(Kind::SignIn, Outcome::WrongPassword, username, ip)
                    .reason("the password was not accepted")
                    .agent(user_agent),
            )
            .await;
    }

    /// The password was right: the user's failure count starts again.
    pub async fn password_accepted(&self, user: &User) -> Result<(), SsoError> {
        Ok(lockout::succeeded(self.sessions.as_ref(), &user.username).await?)
    }

    /// The account is disabled.
    pub async fn sign_in_deactivated(&self, user: &User, ip: IpAddr, user_agent: &str) {
        self.events
            .record(
                LoginEvent::new(Kind::SignIn, Outcome::Deactivated, &user.username, ip)
                    .user(user.id)
                    .reason("the account is disabled")
                    .agent(user_agent),
            )
            .await;
    }

    /// A sign-in ended with a session; `how` names the factors (e.g. "password", "password + totp").
    pub async fn signed_in(
        &self,
        user_id: i64,
        username: &str,
        ip: IpAddr,
        user_agent: &str,
        how: &str,
    ) {
        self.events
            .record(
                LoginEvent::new(Kind::SignIn, Outcome::Success, username, ip)
                    .user(user_id)
                    .reason(format!("signed in with {how}"))
                    .agent(user_agent),
            )
            .await;
    }

    /// A second factor was refused (`why`: wrong code, replayed, rate limited, ...).
    pub async fn second_factor_failed(
        &self,
        user_id: i64,
        username: &str,
        ip: IpAddr,
        user_agent: &str,
        why: &str,
    ) {
        self.events
            .record(
                LoginEvent::new(Kind::SignIn, Outcome::MfaFailed, username, ip)
                    .user(user_id)
                    .reason(why)
                    .agent(user_agent),
            )
            .await;
    }

    /// A second factor is required and the user has none that can be used or enrolled here.
    pub async fn second_factor_missing(
        &self,
        user: &User,
        ip: IpAddr,
        user_agent: &str,
        policy: &str,
        missing: &str,
    ) {
        self.events
            .record(
                LoginEvent::new(Kind::SignIn, Outcome::MfaNotEnrolled, &user.username, ip)
                    .user(user.id)
                    .reason(missing)
                    .rule(policy)
                    .agent(user_agent),
            )
            .await;
    }

    /// Under a policy with `mfa_on_new_device_or_country`, the second factor a password-only
    /// sign-in from a country or device never seen on the user's earlier successes owes; `None` when
    /// the policy does not ask for it or nothing is new.
    pub async fn second_factor_for_new_context(
        &self,
        user: &User,
        policy: &str,
        ip: IpAddr,
        user_agent: &str,
    ) -> Result<Option<SecondFactorNeeded>, SsoError> {
        let set = self.policy_set().await?;
        let Some(p) = set.policy(policy) else {
            return Ok(None);
        };
        if !p.mfa_on_new_device_or_country {
            return Ok(None);
        }
        let enricher = self.events.enricher();
        let (location, device) = (enricher.locate(ip), enricher.device(user_agent));
        let history = self.directory.sign_in_history(user.id).await?;
        let (new_country, new_device) = history.is_new(&location, &device);
        if !new_country && !new_device {
            return Ok(None);
        }
        let what = match (new_country, new_device) {
            (true, true) => "a new country and device",
            (true, false) => "a new country",
            _ => "a new device",
        };
        tracing::info!(user = %user.username, %ip, what, "second factor for a sign-in from a new context");
        let need = self
            .second_factor(
                user,
                policy,
                &p.mfa_methods,
                format!("a second factor for a sign-in from {what}"),
            )
            .await?;
        if need.methods.is_empty() {
            self.second_factor_missing(user, ip, user_agent, policy, &need.missing)
                .await;
            return Err(SsoError::PolicyNotMet {
                user: user.username.clone(),
                missing: need.missing,
            });
        }
        Ok(Some(need))
    }
}
