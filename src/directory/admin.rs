//! Delegated administration: admin role grants, API tokens and the audit trail of admin changes
//! (migration 0006). The rules of who may do what live in `crate::api::authz`; this is only storage.
//!
//! API tokens are random 256-bit values shown once; only their SHA-256 is stored. A fast hash is right
//! for a high-entropy secret: nobody can guess one, so there is nothing for a slow hash to slow down.

use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{
    db_error, is_unique_violation, new_id, now, touched, Directory, EntryKind, Error, ID_ATTEMPTS,
};
use crate::policy::IpRange;

/// The prefix of every API token, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "tsr_";

/// An administrative role. See docs/admin-api.md for what each may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdminRole {
    /// Everything, including granting admin roles.
    SuperAdmin,
    /// Users, groups, roles, policies, IP rules and all SPs; never super admins.
    OrgAdmin,
    /// One SP: its settings, metadata and assignments, and read access to its users.
    AppAdmin,
    /// Password and MFA resets and ending sessions, for non-admin users.
    Helpdesk,
}

impl AdminRole {
    /// Every role, most powerful first.
    pub const ALL: [AdminRole; 4] = [
        AdminRole::SuperAdmin,
        AdminRole::OrgAdmin,
        AdminRole::AppAdmin,
        AdminRole::Helpdesk,
    ];

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::SuperAdmin => "super_admin",
            AdminRole::OrgAdmin => "org_admin",
            AdminRole::AppAdmin => "app_admin",
            AdminRole::Helpdesk => "helpdesk",
        }
    }
}

impl std::str::FromStr for AdminRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        AdminRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown admin role {s:?}; one of super_admin, org_admin, app_admin, helpdesk"
                )
            })
    }
}

impl std::fmt::Display for AdminRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One admin role held by one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminGrant {
    /// Stable id, to revoke it by.
    pub id: i64,
    /// The holder's user id.
    pub user_id: i64,
    /// The holder's username.
    pub username: String,
    /// The role.
    pub role: AdminRole,
    /// The SP's entityID for an app admin, `None` for the other roles.
    pub sp: Option<String>,
    /// Who granted it: `console` or an admin's username.
    pub granted_by: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    /// Reads only (GET).
    Read,
    /// Reads and changes, within what the owner may do.
    Write,
}

impl TokenScope {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Write => "write",
        }
    }
}

impl std::str::FromStr for TokenScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(TokenScope::Read),
            "write" => Ok(TokenScope::Write),
            other => Err(format!("unknown token scope {other:?}; one of read, write")),
        }
    }
}

/// An API token as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Stable id, to list and revoke it by.
    pub id: i64,
    /// The owner's user id: the token acts with the owner's admin roles, from where the owner may.
    pub owner_id: i64,
    /// The owner's username.
    pub owner: String,
    /// A label chosen at creation.
    pub name: String,
    /// Read or write.
    pub scope: TokenScope,
    /// Where the token may be used from, on top of the owner's allowlists; `None`: no own restriction.
    pub ip_ranges: Option<Vec<IpRange>>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the token is refused from then on.
    pub expires_at: i64,
    /// Last successful use, unix seconds.
    pub last_used: Option<i64>,
}

/// One admin change, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix milliseconds (set when recorded).
    pub at: i64,
    /// `user:<username>` or `console`.
    pub actor: String,
    /// What was done, e.g. `user.create`.
    pub action: String,
    /// What it was done to, e.g. `user:alice`.
    pub target: String,
    /// JSON of the item before (None: it did not exist).
    pub before: Option<String>,
    /// JSON of the item after (None: it no longer exists).
    pub after: Option<String>,
    /// The client address of the request ('' at the console).
    pub client_ip: String,
}

/// The last audit timestamp handed out, so entries of the same millisecond keep their order.
static LAST_AUDIT_MS: AtomicI64 = AtomicI64::new(0);

/// Unix milliseconds, strictly increasing within this process.
fn next_audit_ms() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    let mut last = LAST_AUDIT_MS.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_AUDIT_MS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// The stored form of a token: hex SHA-256 of its text.
pub fn token_hash(token: &str) -> String {
    hex::encode(openssl::sha::sha256(token.as_bytes()))
}

/// A fresh token: the prefix and 32 random bytes, base64url.
fn generate_token() -> Result<String, Error> {
    use base64::Engine as _;
    let mut raw = [0u8; 32];
    openssl::rand::rand_bytes(&mut raw)
        .map_err(|e| Error::Database(sqlx::Error::Protocol(format!("no randomness: {e}"))))?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    ))
}

const GRANT_SELECT: &str =
    "SELECT g.id, g.user_id, u.username, g.role, s.entity_id, g.granted_by, \
     g.created_at FROM admin_grants g JOIN users u ON u.id = g.user_id \
     LEFT JOIN service_providers s ON s.id = g.sp_id";

fn grant_from_row(row: &AnyRow) -> Result<AdminGrant, Error> {
    let role: String = row.try_get("role").map_err(db_error)?;
    Ok(AdminGrant {
        id: row.try_get("id").map_err(db_error)?,
        user_id: row.try_get("user_id").map_err(db_error)?,
        username: row.try_get("username").map_err(db_error)?,
        role: role.parse().map_err(Error::CorruptRow)?,
        sp: row.try_get("entity_id").map_err(db_error)?,
        granted_by: row.try_get("granted_by").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
    })
}

const TOKEN_SELECT: &str = "SELECT t.id, t.owner_id, u.username, t.name, t.scope, t.ip_ranges, \
     t.created_at, t.expires_at, t.last_used FROM api_tokens t JOIN users u ON u.id = t.owner_id";

fn token_from_row(row: &AnyRow) -> Result<ApiToken, Error> {
    let scope: String = row.try_get("scope").map_err(db_error)?;
    let ranges: Option<String> = row.try_get("ip_ranges").map_err(db_error)?;
    Ok(ApiToken {
        id: row.try_get("id").map_err(db_error)?,
        owner_id: row.try_get("owner_id").map_err(db_error)?,
        owner: row.try_get("username").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        scope: scope.parse().map_err(Error::CorruptRow)?,
        ip_ranges: ranges
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| Error::CorruptRow(format!("token ranges: {e}")))?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        expires_at: row.try_get("expires_at").map_err(db_error)?,
        last_used: row.try_get("last_used").map_err(db_error)?,
    })
}

impl Directory {
    /// Every admin grant, by username then role.
    pub async fn list_admin_grants(&self) -> Result<Vec<AdminGrant>, Error> {
        let rows = sqlx::query(&format!(
            "{GRANT_SELECT} ORDER BY u.username, g.role, s.entity_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(grant_from_row).collect()
    }

    /// The grants of one user (empty: not an admin).
    pub async fn admin_grants_of(&self, user_id: i64) -> Result<Vec<AdminGrant>, Error> {
        let rows = sqlx::query(&format!(
            "{GRANT_SELECT} WHERE g.user_id = $1 ORDER BY g.role, s.entity_id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(grant_from_row).collect()
    }

    /// One grant by id.
    pub async fn get_admin_grant(&self, id: i64) -> Result<Option<AdminGrant>, Error> {
        let row = sqlx::query(&format!("{GRANT_SELECT} WHERE g.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    /// Grants `role` to `username` (for an app admin, on the SP `sp`). Errors: [`Error::NotFound`] for
    /// the user or SP, [`Error::InvalidAdmin`] when `sp` is given for another role or missing for an
    /// app admin, [`Error::DuplicateGrant`] when the user already holds it.
    pub async fn grant_admin(
        &self,
        username: &str,
        role: AdminRole,
        sp: Option<&str>,
        granted_by: &str,
    ) -> Result<AdminGrant, Error> {
        let user_id = self.user_id(username).await?;
        let sp_id = match (role, sp) {
            (AdminRole::AppAdmin, Some(entity_id)) => Some(
                self.get_sp(entity_id)
                    .await?
                    .ok_or_else(|| Error::NotFound {
                        kind: EntryKind::ServiceProvider,
                        name: entity_id.to_owned(),
                    })?
                    .id,
            ),
            (AdminRole::AppAdmin, None) => {
                return Err(Error::InvalidAdmin(
                    "an app admin grant names the SP it is for".to_owned(),
                ))
            }
            (_, Some(_)) => {
                return Err(Error::InvalidAdmin(format!(
                    "only app_admin is granted for one SP, not {role}"
                )))
            }
            (_, None) => None,
        };
        let duplicate = || {
            Error::DuplicateGrant(match sp {
                Some(sp) => format!("{username} already holds {role} for {sp}"),
                None => format!("{username} already holds {role}"),
            })
        };
        for _ in 0..ID_ATTEMPTS {
            let id = new_id();
            let inserted = sqlx::query(
                "INSERT INTO admin_grants (id, user_id, role, sp_id, granted_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(user_id)
            .bind(role.as_str())
            .bind(sp_id)
            .bind(granted_by)
            .bind(now())
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {
                    return self
                        .get_admin_grant(id)
                        .await?
                        .ok_or_else(|| Error::CorruptRow("grant vanished".to_owned()))
                }
                Err(e) if is_unique_violation(&e) => {
                    let held = self.admin_grants_of(user_id).await?;
                    if held.iter().any(|g| g.role == role && g.sp.as_deref() == sp) {
                        return Err(duplicate());
                    }
                }
                Err(e) => return Err(db_error(e)),
            }
        }
        Err(Error::Database(sqlx::Error::Protocol(
            "could not find a free grant id".to_owned(),
        )))
    }

    /// Removes a grant by id; whether it existed.
    pub async fn revoke_admin_grant(&self, id: i64) -> Result<bool, Error> {
        let result = sqlx::query("DELETE FROM admin_grants WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(touched(&result))
    }

    /// Creates a token for `owner` and returns it with the token text, which is not stored and cannot
    /// be shown again. `expires_at` is unix seconds.
    pub async fn create_api_token(
        &self,
        owner: &str,
        name: &str,
        scope: TokenScope,
        expires_at: i64,
        ip_ranges: Option<&[IpRange]>,
    ) -> Result<(ApiToken, String), Error> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
            return Err(Error::InvalidName(
                "a token name is 1 to 255 characters without control characters".to_owned(),
            ));
        }
        if ip_ranges.is_some_and(<[IpRange]>::is_empty) {
            return Err(Error::InvalidAdmin(
                "an empty list of token ranges would admit nothing; omit it instead".to_owned(),
            ));
        }
        let owner_id = self.user_id(owner).await?;
        let ranges = ip_ranges
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::CorruptRow(e.to_string()))?;
        for _ in 0..ID_ATTEMPTS {
            let id = new_id();
            let token = generate_token()?;
            let inserted = sqlx::query(
                "INSERT INTO api_tokens (id, token_hash, owner_id, name, scope, ip_ranges, \
                 created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(token_hash(&token))
            .bind(owner_id)
            .bind(name)
            .bind(scope.as_str())
            .bind(&ranges)
            .bind(now())
            .bind(expires_at)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {
                    let stored = self
                        .get_api_token(id)
                        .await?
                        .ok_or_else(|| Error::CorruptRow("token vanished".to_owned()))?;
                    return Ok((stored, token));
                }
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(db_error(e)),
            }
        }
        Err(Error::Database(sqlx::Error::Protocol(
            "could not find a free token id".to_owned(),
        )))
    }

    /// The token whose text is `token`, if any (expired ones too: the caller checks the expiry).
    pub async fn api_token_by_secret(&self, token: &str) -> Result<Option<ApiToken>, Error> {
        let row = sqlx::query(&format!("{TOKEN_SELECT} WHERE t.token_hash = $1"))
            .bind(token_hash(token))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// One token by id.
    pub async fn get_api_token(&self, id: i64) -> Result<Option<ApiToken>, Error> {
        let row = sqlx::query(&format!("{TOKEN_SELECT} WHERE t.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// Tokens of one owner, or of everyone, newest first.
    pub async fn list_api_tokens(&self, owner_id: Option<i64>) -> Result<Vec<ApiToken>, Error> {
        let rows = match owner_id {
            Some(owner) => {
                sqlx::query(&format!(
                    "{TOKEN_SELECT} WHERE t.owner_id = $1 ORDER BY t.created_at DESC, t.id"
                ))
                .bind(owner)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!("{TOKEN_SELECT} ORDER BY t.created_at DESC, t.id"))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(db_error)?;
        rows.iter().map(token_from_row).collect()
    }

    /// Records a successful use of a token.
    pub async fn touch_api_token(&self, id: i64) -> Result<(), Error> {
        sqlx::query("UPDATE api_tokens SET last_used = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Revokes (deletes) a token; whether it existed.
    pub async fn revoke_api_token(&self, id: i64) -> Result<bool, Error> {
        let result = sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(touched(&result))
    }

    /// Appends an entry to the admin audit trail; `at` is set here.
    pub async fn record_admin_change(&self, entry: &AuditEntry) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO admin_audit (id, at, actor, action, target, before_json, after_json, \
             client_ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_id())
        .bind(next_audit_ms())
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.before)
        .bind(&entry.after)
        .bind(&entry.client_ip)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn admin_audit(&self, limit: i64) -> Result<Vec<AuditEntry>, Error> {
        let rows = sqlx::query(
            "SELECT at, actor, action, target, before_json, after_json, client_ip FROM admin_audit \
             ORDER BY at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    at: row.try_get("at").map_err(db_error)?,
                    actor: row.try_get("actor").map_err(db_error)?,
                    action: row.try_get("action").map_err(db_error)?,
                    target: row.try_get("target").map_err(db_error)?,
                    before: row.try_get("before_json").map_err(db_error)?,
                    after: row.try_get("after_json").map_err(db_error)?,
                    client_ip: row.try_get("client_ip").map_err(db_error)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_scopes_round_trip() {
        for role in AdminRole::ALL {
            assert_eq!(role.as_str().parse::<AdminRole>(), Ok(role));
        }
        assert!("root".parse::<AdminRole>().is_err());
        assert_eq!("read".parse::<TokenScope>(), Ok(TokenScope::Read));
        assert!("admin".parse::<TokenScope>().is_err());
    }

    #[test]
    fn tokens_are_prefixed_random_and_hashed() -> Result<(), Error> {
        let a = generate_token()?;
        let b = generate_token()?;
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
        Ok(())
    }
}
