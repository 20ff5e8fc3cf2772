//! What the access policy would decide, without anyone signing in: the explanation behind
//! `tessera policy explain` and `GET /api/v1/explain`, and the no-self-lockout preview of a change
//! (issue #4) used by the CLI and the admin API.

use std::net::IpAddr;

use super::{AdminRole, Directory, EntryKind, Error};
use crate::policy::{
    lockout, AccessRequest, Decision, PolicyData, PolicySet, SessionFacts, Subject,
};
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

    /// The super admins (with their groups and roles), for the checks that keep admins who are not
    /// super admins from changing what applies to one.
    pub async fn super_admin_subjects(&self) -> Result<Vec<Subject>, Error> {
        let mut names: Vec<String> = self
            .list_admin_grants()
            .await?
            .into_iter()
            .filter(|g| g.role == AdminRole::SuperAdmin)
            .map(|g| g.username)
            .collect();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            if let Some(subject) = self.subject_of(&name).await? {
                out.push(subject);
            }
        }
        Ok(out)
    }

    /// The super admins who may use the SP `entity_id` (directly assigned or granted by an enabled
    /// assignment rule): those whose decision for that SP a change to its access requirements changes.
    pub async fn super_admins_reaching_sp(&self, entity_id: &str) -> Result<Vec<String>, Error> {
        let rules = self.load_rule_set().await?;
        let mut hit = Vec::new();
        for subject in self.super_admin_subjects().await? {
            let Some(user) = self.get_user_by_username(&subject.username).await? else {
                continue;
            };
            if self.app_grant(&user, entity_id, &rules).await?.is_some() {
                hit.push(subject.username);
            }
        }
        Ok(hit)
    }

    /// The super admins for whom `proposed` (the whole declarations after a change) changes the IP
    /// rules that apply or the effective security policy (its name or any of its settings): whatever
    /// could change a decision about them. Errors: a change that does not compile ([`Error::Policy`]).
    pub async fn super_admins_affected(&self, proposed: PolicyData) -> Result<Vec<String>, Error> {
        let current = self.load_policy_set().await?;
        let proposed = PolicySet::build(proposed, current.generation())?;
        let mut hit = Vec::new();
        for subject in self.super_admin_subjects().await? {
            let rules = |set: &PolicySet| -> Vec<crate::policy::IpRule> {
                set.applicable_rules(&subject)
                    .into_iter()
                    .map(|(rule, _)| rule.clone())
                    .collect()
            };
            if rules(&current) != rules(&proposed)
                || current.effective_policy(&subject).0 != proposed.effective_policy(&subject).0
            {
                hit.push(subject.username.clone());
            }
        }
        Ok(hit)
    }
}
