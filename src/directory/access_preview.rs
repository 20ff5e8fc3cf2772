//! What the access policy would decide, without anyone signing in: the explanation behind
//! `tessera policy explain` and `GET /api/v1/explain`, and the no-self-lockout preview of a change
//! (issue #4) used by the CLI and the admin API.

use std::net::IpAddr;

use super::{Directory, EntryKind, Error};
use crate::policy::{lockout, AccessRequest, Decision, PolicyData, PolicySet, SessionFacts};
use crate::session::AuthnMethod;

impl Directory {
    /// The decision (with its trace) for `username` signing in now from `ip` with a password and
    /// `methods`, optionally to the SP `sp`. [`Error::NotFound`] for an unknown user or SP.
    pub async fn explain_access(
        &self,
        username: &str,
        ip: IpAddr,
        sp: Option<&str>,
        methods: &[AuthnMethod],
        now: i64,
    ) -> Result<Decision, Error> {
        let subject = self
            .subject_of(username)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: EntryKind::User,
                name: username.to_owned(),
            })?;
        if let Some(entity_id) = sp {
            if self.get_sp(entity_id).await?.is_none() {
                return Err(Error::NotFound {
                    kind: EntryKind::ServiceProvider,
                    name: entity_id.to_owned(),
                });
            }
        }
        let set = self.load_policy_set().await?;
        let mfa_available = self.mfa_available(username).await?;
        let mut all = vec![AuthnMethod::Password];
        all.extend(
            methods
                .iter()
                .copied()
                .filter(|m| *m != AuthnMethod::Password),
        );
        let session = SessionFacts::fresh(all, now);
        Ok(set.decide(&AccessRequest {
            subject: &subject,
            ip,
            sp,
            session: Some(&session),
            mfa_available: &mfa_available,
            now,
        }))
    }

    /// The no-self-lockout check: the decision that would deny `admin` a fresh password sign-in from
    /// `ip` once `change` is applied to the current declarations, where it is not denied now; `None`
    /// when the change does not lock the admin out. Errors: an unknown admin, or a change that does
    /// not compile ([`Error::Policy`]).
    pub async fn lockout_preview(
        &self,
        admin: &str,
        ip: IpAddr,
        now: i64,
        change: impl FnOnce(&mut PolicyData),
    ) -> Result<Option<Decision>, Error> {
        let subject = self
            .subject_of(admin)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: EntryKind::User,
                name: admin.to_owned(),
            })?;
        let mfa = self.mfa_available(admin).await?;
        let current = self.load_policy_set().await?;
        let mut data = current.data().clone();
        change(&mut data);
        let proposed = PolicySet::build(data, current.generation())?;
        Ok(lockout(&current, &proposed, &subject, ip, &mfa, now))
    }
}
