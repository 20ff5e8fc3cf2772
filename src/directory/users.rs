//! Users, their passwords, groups and roles.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::password::{weak_password_reason_with, PasswordRules, MAX_PASSWORD_HISTORY};
use super::{
    db_error, is_unique_violation, new_id, now, touched, touched_or, weak_password_reason,
    Directory, EntryKind, Error, ID_ATTEMPTS,
};

/// Longest username, group name or role name accepted, in characters.
const MAX_NAME_CHARS: usize = 255;

/// Attribute names that [`User::attribute_values`] resolves from the user's own columns (or, for
/// `groups` and `roles`, that the caller resolves from memberships); extra attributes may not reuse them
/// so a release mapping can never be ambiguous.
pub const BUILTIN_ATTRIBUTES: &[&str] = &[
    "id",
    "username",
    "status",
    "email",
    "display_name",
    "department",
    "groups",
    "roles",
];

/// Columns selected for a [`User`], in the order [`user_from_row`] reads them.
const USER_COLUMNS: &str =
    "id, username, status, email, display_name, department, attributes, created_at, updated_at, \
     sessions_not_before";

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserStatus {
    /// The user may sign in.
    Active,
    /// The user exists (and keeps group, role and app memberships) but may not sign in.
    Disabled,
}

impl UserStatus {
    /// The value stored in `users.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }
}

impl std::str::FromStr for UserStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "active" => Ok(UserStatus::Active),
            "disabled" => Ok(UserStatus::Disabled),
            other => Err(Error::CorruptRow(format!("unknown user status {other:?}"))),
        }
    }
}

impl std::fmt::Display for UserStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user as stored, without the password hash (which never leaves this module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id; survives renames of other fields and keys memberships.
    pub id: i64,
    /// The login name, unique and compared exactly (case-sensitive).
    pub username: String,
    /// Whether the user may sign in.
    pub status: UserStatus,
    /// Mail address, a common NameID source and released attribute.
    pub email: Option<String>,
    /// Human-readable name, for pages and for SPs that ask for it.
    pub display_name: Option<String>,
    /// Organisational unit, released to SPs that authorise by it.
    pub department: Option<String>,
    /// Further attributes an SP may be sent, by name, each possibly multi-valued.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Last change of profile, status or password, unix seconds.
    pub updated_at: i64,
    /// Sessions created before this time (unix milliseconds) are over: set by an administrator's reset
    /// of the password or second factors ([`Directory::revoke_sessions`]); 0 when never set.
    pub sessions_not_before: i64,
}

impl User {
    /// The values of the attribute `name` for release or NameID: `id`, `username`, `status`, `email`,
    /// `display_name`, `department` come from the user's columns, any other name from
    /// [`User::attributes`]. `groups` and `roles` are not stored on the user: use
    /// [`Directory::groups_of`] and [`Directory::roles_of`]. Empty when the user has no such value.
    pub fn attribute_values(&self, name: &str) -> Vec<String> {
        match name {
            "id" => vec![self.id.to_string()],
            "username" => vec![self.username.clone()],
            "status" => vec![self.status.as_str().to_owned()],
            "email" => self.email.iter().cloned().collect(),
            "display_name" => self.display_name.iter().cloned().collect(),
            "department" => self.department.iter().cloned().collect(),
            other => self.attributes.get(other).cloned().unwrap_or_default(),
        }
    }
}

/// What is needed to create a user.
#[derive(Clone, Default)]
pub struct NewUser {
    /// The login name; see [`Error::InvalidUsername`] for the rules.
    pub username: String,
    /// The initial password in clear; hashed before storage and checked against the policy.
    pub password: String,
    /// Mail address.
    pub email: Option<String>,
    /// Human-readable name.
    pub display_name: Option<String>,
    /// Organisational unit.
    pub department: Option<String>,
    /// Extra attributes; names in [`BUILTIN_ATTRIBUTES`] are refused ([`Error::InvalidAttribute`]).
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("department", &self.department)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// The editable profile of a user; [`Directory::update_user`] replaces all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserProfile {
    /// Mail address.
    pub email: Option<String>,
    /// Human-readable name.
    pub display_name: Option<String>,
    /// Organisational unit.
    pub department: Option<String>,
    /// Extra attributes; names in [`BUILTIN_ATTRIBUTES`] are refused ([`Error::InvalidAttribute`]).
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// The outcome of [`Directory::verify_password`].
///
/// An unknown username and a wrong password give the same `Rejected` after the same argon2 work, so
/// neither the answer nor its timing tells whether the user exists. `Disabled` is only returned when the
/// password is right, so it reveals nothing to someone who does not know the password; the caller decides
/// what to show (typically "account disabled") and must not start a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordCheck {
    /// Right password, active user: the caller may sign the user in.
    Authenticated(User),
    /// Right password but the user is disabled: no sign-in.
    Disabled(User),
    /// Unknown user or wrong password.
    Rejected,
}

/// A group (for authorisation at SPs and attribute release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Stable id, keys memberships.
    pub id: i64,
    /// Unique name, what SPs receive.
    pub name: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

/// A role (for authorisation at SPs and attribute release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Stable id, keys memberships.
    pub id: i64,
    /// Unique name, what SPs receive.
    pub name: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

/// Groups and roles have the same shape; this says which tables one call works on.
#[derive(Clone, Copy)]
enum Collection {
    /// `groups` / `user_groups`.
    Groups,
    /// `roles` / `user_roles`.
    Roles,
}

impl Collection {
    /// The entries table.
    fn table(self) -> &'static str {
        match self {
            Collection::Groups => "groups",
            Collection::Roles => "roles",
        }
    }

    /// The membership table.
    fn members(self) -> &'static str {
        match self {
            Collection::Groups => "user_groups",
            Collection::Roles => "user_roles",
        }
    }

    /// The membership column that points into [`Collection::table`].
    fn member_column(self) -> &'static str {
        match self {
            Collection::Groups => "group_id",
            Collection::Roles => "role_id",
        }
    }

    /// The kind named in [`Error::NotFound`].
    fn kind(self) -> EntryKind {
        match self {
            Collection::Groups => EntryKind::Group,
            Collection::Roles => EntryKind::Role,
        }
    }

    /// The error for a name already taken.
    fn duplicate(self, name: &str) -> Error {
        match self {
            Collection::Groups => Error::DuplicateGroup(name.to_owned()),
            Collection::Roles => Error::DuplicateRole(name.to_owned()),
        }
    }
}

/// Reads a [`User`] from a row selected with [`USER_COLUMNS`].
fn user_from_row(row: &AnyRow) -> Result<User, Error> {
    let status: String = row.try_get("status").map_err(db_error)?;
    let attributes: String = row.try_get("attributes").map_err(db_error)?;
    Ok(User {
        id: row.try_get("id").map_err(db_error)?,
        username: row.try_get("username").map_err(db_error)?,
        status: status.parse()?,
        email: row.try_get("email").map_err(db_error)?,
        display_name: row.try_get("display_name").map_err(db_error)?,
        department: row.try_get("department").map_err(db_error)?,
        attributes: serde_json::from_str(&attributes)
            .map_err(|e| Error::CorruptRow(format!("user attributes: {e}")))?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        sessions_not_before: row.try_get("sessions_not_before").map_err(db_error)?,
    })
}

/// Reads an (id, name, created_at) row.
fn named_from_row(row: &AnyRow) -> Result<(i64, String, i64), Error> {
    Ok((
        row.try_get("id").map_err(db_error)?,
        row.try_get("name").map_err(db_error)?,
        row.try_get("created_at").map_err(db_error)?,
    ))
}

/// Usernames: 1 to 255 characters, no control characters, no surrounding whitespace (which would make
/// two visually identical logins).
fn check_username(username: &str) -> Result<(), Error> {
    check_name(username).map_err(Error::InvalidUsername)
}

/// The rules shared by usernames, group names and role names; `Err` holds the reason.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("longer than {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("contains control characters".to_owned());
    }
    if name.trim() != name {
        return Err("starts or ends with whitespace".to_owned());
    }
    Ok(())
}

/// Extra attribute names must be non-empty and not shadow a built-in attribute.
fn check_attributes(attributes: &BTreeMap<String, Vec<String>>) -> Result<String, Error> {
    for name in attributes.keys() {
        if name.trim().is_empty() {
            return Err(Error::InvalidAttribute(
                "an extra user attribute has an empty name".to_owned(),
            ));
        }
        if BUILTIN_ATTRIBUTES.contains(&name.as_str()) {
            return Err(Error::InvalidAttribute(format!(
                "extra user attribute {name:?} shadows a built-in attribute"
            )));
        }
    }
    serde_json::to_string(attributes).map_err(|e| Error::CorruptRow(e.to_string()))
}

impl Directory {
    /// Creates a user after checking the username, the extra attribute names and the password policy
    /// ([`weak_password_reason`]). Errors: [`Error::InvalidUsername`], [`Error::WeakPassword`],
    /// [`Error::InvalidAttribute`], [`Error::DuplicateUser`].
    pub async fn create_user(&self, new: NewUser) -> Result<User, Error> {
        check_username(&new.username)?;
        if let Some(reason) = weak_password_reason(&new.username, &new.password) {
            return Err(Error::WeakPassword(reason));
        }
        let attributes = check_attributes(&new.attributes)?;
        if self.get_user_by_username(&new.username).await?.is_some() {
            return Err(Error::DuplicateUser(new.username));
        }
        let hash = self.hasher.hash(&new.password).await?;
        let at = now();
        for _ in 0..ID_ATTEMPTS {
            let id = new_id();
            let inserted = sqlx::query(
                "INSERT INTO users (id, username, password_hash, status, email, display_name, \
                 department, attributes, created_at, updated_at, password_changed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9)",
            )
            .bind(id)
            .bind(&new.username)
            .bind(&hash)
            .bind(UserStatus::Active.as_str())
            .bind(&new.email)
            .bind(&new.display_name)
            .bind(&new.department)
            .bind(&attributes)
            .bind(at)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {
                    return Ok(User {
                        id,
                        username: new.username,
                        status: UserStatus::Active,
                        email: new.email,
                        display_name: new.display_name,
                        department: new.department,
                        attributes: new.attributes,
                        created_at: at,
                        updated_at: at,
                        sessions_not_before: 0,
                    })
                }
                Err(e) if is_unique_violation(&e) => {
                    // Either the username was taken since the check above, or the id collided.
                    if self.get_user_by_username(&new.username).await?.is_some() {
                        return Err(Error::DuplicateUser(new.username));
                    }
                }
                Err(e) => return Err(db_error(e)),
            }
        }
        Err(Error::Database(sqlx::Error::Protocol(
            "could not find a free user id".to_owned(),
        )))
    }

    /// The user with this id, if any.
    pub async fn get_user(&self, id: i64) -> Result<Option<User>, Error> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The user with this username (exact, case-sensitive match), if any.
    pub async fn get_user_by_username(&self, username: &str) -> Result<Option<User>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// All users, ordered by username.
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(user_from_row).collect()
    }

    /// Replaces the profile (email, display name, department, extra attributes) of a user and returns
    /// the updated user. [`Error::NotFound`] when the user does not exist.
    pub async fn update_user(&self, username: &str, profile: &UserProfile) -> Result<User, Error> {
        let attributes = check_attributes(&profile.attributes)?;
        let result = sqlx::query(
            "UPDATE users SET email = $1, display_name = $2, department = $3, attributes = $4, \
             updated_at = $5 WHERE username = $6",
        )
        .bind(&profile.email)
        .bind(&profile.display_name)
        .bind(&profile.department)
        .bind(&attributes)
        .bind(now())
        .bind(username)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        touched_or(&result, || user_not_found(username))?;
        self.get_user_by_username(username)
            .await?
            .ok_or_else(|| user_not_found(username))
    }

    /// Enables or disables a user. [`Error::NotFound`] when the user does not exist.
    pub async fn set_user_status(&self, username: &str, status: UserStatus) -> Result<(), Error> {
        let result =
            sqlx::query("UPDATE users SET status = $1, updated_at = $2 WHERE username = $3")
                .bind(status.as_str())
                .bind(now())
                .bind(username)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
        touched_or(&result, || user_not_found(username))
    }

    /// Sets a new password after checking the global rules ([`weak_password_reason`]); no history
    /// check (an administrator's reset). Errors: [`Error::WeakPassword`], [`Error::NotFound`].
    pub async fn set_password(&self, username: &str, password: &str) -> Result<(), Error> {
        self.change_password(username, password, PasswordRules::default())
            .await
    }

    /// Sets a new password after checking the global rules, the policy's minimum and its history:
    /// the new password may not be any of the latest `rules.history` ones (the current one
    /// included), each checked by an argon2 verification. The replaced hash joins the history (the
    /// latest [`MAX_PASSWORD_HISTORY`] are kept whatever the policy, so a longer history applies at
    /// once), the change time is recorded for the maximum age, and a pending "must change" is
    /// cleared. Errors: [`Error::WeakPassword`] (the text may be shown to the user),
    /// [`Error::NotFound`].
    pub async fn change_password(
        &self,
        username: &str,
        password: &str,
        rules: PasswordRules,
    ) -> Result<(), Error> {
        if let Some(reason) = weak_password_reason_with(username, password, rules.min_chars) {
            return Err(Error::WeakPassword(reason));
        }
        let row = sqlx::query("SELECT id, password_hash FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or_else(|| user_not_found(username))?;
        let id: i64 = row.try_get("id").map_err(db_error)?;
        let current: String = row.try_get("password_hash").map_err(db_error)?;
        let history = rules.history.min(MAX_PASSWORD_HISTORY);
        if history > 0 {
            let mut recent = vec![current.clone()];
            let earlier = sqlx::query(
                "SELECT password_hash FROM password_history WHERE user_id = $1 \
                 ORDER BY seq DESC LIMIT $2",
            )
            .bind(id)
            .bind(i64::try_from(history - 1).unwrap_or(0))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
            for r in &earlier {
                recent.push(r.try_get("password_hash").map_err(db_error)?);
            }
            for old in &recent {
                // A corrupt old hash cannot match; it must not block the change.
                if self.hasher.verify(password, old).await.unwrap_or(false) {
                    return Err(Error::WeakPassword(format!(
                        "the password was used recently; your policy forbids reusing your last \
                         {history} password(s)"
                    )));
                }
            }
        }
        let hash = self.hasher.hash(password).await?;
        let at = now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let seq: i64 = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM password_history WHERE user_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?
        .try_get("next")
        .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO password_history (user_id, seq, password_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(seq)
        .bind(&current)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query("DELETE FROM password_history WHERE user_id = $1 AND seq <= $2")
            .bind(id)
            .bind(seq - MAX_PASSWORD_HISTORY as i64)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let result = sqlx::query(
            "UPDATE users SET password_hash = $1, updated_at = $2, password_changed_at = $2, \
             password_must_change = 0 WHERE id = $3",
        )
        .bind(&hash)
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        touched_or(&result, || user_not_found(username))?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    /// When the user's password was last set (unix seconds) and whether the next sign-in must set a
    /// new one; `None` for an unknown user.
    pub async fn password_status(&self, user_id: i64) -> Result<Option<(i64, bool)>, Error> {
        let row = sqlx::query(
            "SELECT password_changed_at, password_must_change FROM users WHERE id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| {
            Ok((
                r.try_get("password_changed_at").map_err(db_error)?,
                r.try_get::<i64, _>("password_must_change")
                    .map_err(db_error)?
                    != 0,
            ))
        })
        .transpose()
    }

    /// Makes the next sign-in of the user set a new password first (or stops doing so).
    /// [`Error::NotFound`] when the user does not exist.
    pub async fn set_password_must_change(&self, username: &str, must: bool) -> Result<(), Error> {
        let result = sqlx::query("UPDATE users SET password_must_change = $1 WHERE username = $2")
            .bind(i64::from(must))
            .bind(username)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        touched_or(&result, || user_not_found(username))
    }

    /// Ends every session of the user that began before now, at its next request, wherever sessions
    /// are kept (see [`User::sessions_not_before`]). [`Error::NotFound`] for an unknown user.
    pub async fn revoke_sessions(&self, username: &str) -> Result<(), Error> {
        let result = sqlx::query("UPDATE users SET sessions_not_before = $1 WHERE username = $2")
            .bind(chrono::Utc::now().timestamp_millis())
            .bind(username)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        touched_or(&result, || user_not_found(username))
    }

    /// Whether the stored hash of the user's password was made with other costs than the configured
    /// ones (it is upgraded at the next successful sign-in). [`Error::NotFound`] for an unknown user.
    pub async fn password_needs_rehash(&self, username: &str) -> Result<bool, Error> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or_else(|| user_not_found(username))?;
        let stored: String = row.try_get("password_hash").map_err(db_error)?;
        Ok(self.hasher.needs_rehash(&stored))
    }

    /// Deletes a user with its group, role and app memberships. [`Error::NotFound`] when absent.
    pub async fn delete_user(&self, username: &str) -> Result<(), Error> {
        let result = sqlx::query("DELETE FROM users WHERE username = $1")
            .bind(username)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        touched_or(&result, || user_not_found(username))
    }

    /// Checks a login. See [`PasswordCheck`] for what each outcome means and reveals.
    ///
    /// An unknown username still costs one argon2id verification (against the hasher's dummy hash made
    /// with the same costs), so timing does not reveal whether the user exists. After a successful
    /// verification of a hash made with other costs than the configured ones, the hash is replaced; a
    /// failure to store it is logged and does not fail the login.
    pub async fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<PasswordCheck, Error> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            self.hasher.verify_dummy(password).await?;
            return Ok(PasswordCheck::Rejected);
        };
        let user = user_from_row(&row)?;
        let stored: String = row.try_get("password_hash").map_err(db_error)?;
        if !self.hasher.verify(password, &stored).await? {
            return Ok(PasswordCheck::Rejected);
        }
        if self.hasher.needs_rehash(&stored) {
            if let Err(e) = self.rehash(user.id, &stored, password).await {
                tracing::warn!(user = %user.username, error = %e, "could not upgrade a password hash");
            }
        }
        Ok(match user.status {
            UserStatus::Active => PasswordCheck::Authenticated(user),
            UserStatus::Disabled => PasswordCheck::Disabled(user),
        })
    }

    /// Replaces `old` with a hash made with the current costs, unless the password changed meanwhile.
    async fn rehash(&self, id: i64, old: &str, password: &str) -> Result<(), Error> {
        let hash = self.hasher.hash(password).await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(&hash)
            .bind(id)
            .bind(old)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The id of a user, or [`Error::NotFound`].
    pub(super) async fn user_id(&self, username: &str) -> Result<i64, Error> {
        let row = sqlx::query("SELECT id FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => row.try_get("id").map_err(db_error),
            None => Err(user_not_found(username)),
        }
    }

    /// Creates a group. Errors: [`Error::InvalidName`], [`Error::DuplicateGroup`].
    pub async fn create_group(&self, name: &str) -> Result<Group, Error> {
        let (id, name, created_at) = self.create_named(Collection::Groups, name).await?;
        Ok(Group {
            id,
            name,
            created_at,
        })
    }

    /// All groups, ordered by name.
    pub async fn list_groups(&self) -> Result<Vec<Group>, Error> {
        Ok(self
            .list_named(Collection::Groups, None)
            .await?
            .into_iter()
            .map(|(id, name, created_at)| Group {
                id,
                name,
                created_at,
            })
            .collect())
    }

    /// Deletes a group and its memberships. [`Error::NotFound`] when absent.
    pub async fn delete_group(&self, name: &str) -> Result<(), Error> {
        self.delete_named(Collection::Groups, name).await
    }

    /// Makes a user a member of a group; adding an existing member is a no-op. [`Error::NotFound`]
    /// when the user or the group does not exist.
    pub async fn add_user_to_group(&self, username: &str, group: &str) -> Result<(), Error> {
        self.add_member(Collection::Groups, username, group).await
    }

    /// Removes a user from a group; returns whether the user was a member. [`Error::NotFound`] when the
    /// user or the group does not exist.
    pub async fn remove_user_from_group(&self, username: &str, group: &str) -> Result<bool, Error> {
        self.remove_member(Collection::Groups, username, group)
            .await
    }

    /// The groups a user belongs to, ordered by name. [`Error::NotFound`] when the user does not exist.
    pub async fn groups_of(&self, username: &str) -> Result<Vec<Group>, Error> {
        let user_id = self.user_id(username).await?;
        Ok(self
            .list_named(Collection::Groups, Some(user_id))
            .await?
            .into_iter()
            .map(|(id, name, created_at)| Group {
                id,
                name,
                created_at,
            })
            .collect())
    }

    /// Creates a role. Errors: [`Error::InvalidName`], [`Error::DuplicateRole`].
    pub async fn create_role(&self, name: &str) -> Result<Role, Error> {
        let (id, name, created_at) = self.create_named(Collection::Roles, name).await?;
        Ok(Role {
            id,
            name,
            created_at,
        })
    }

    /// All roles, ordered by name.
    pub async fn list_roles(&self) -> Result<Vec<Role>, Error> {
        Ok(self
            .list_named(Collection::Roles, None)
            .await?
            .into_iter()
            .map(|(id, name, created_at)| Role {
                id,
                name,
                created_at,
            })
            .collect())
    }

    /// Deletes a role and its memberships. [`Error::NotFound`] when absent.
    pub async fn delete_role(&self, name: &str) -> Result<(), Error> {
        self.delete_named(Collection::Roles, name).await
    }

    /// Grants a role to a user; granting it again is a no-op. [`Error::NotFound`] when the user or the
    /// role does not exist.
    pub async fn add_user_to_role(&self, username: &str, role: &str) -> Result<(), Error> {
        self.add_member(Collection::Roles, username, role).await
    }

    /// Takes a role from a user; returns whether the user had it. [`Error::NotFound`] when the user or
    /// the role does not exist.
    pub async fn remove_user_from_role(&self, username: &str, role: &str) -> Result<bool, Error> {
        self.remove_member(Collection::Roles, username, role).await
    }

    /// The roles a user has, ordered by name. [`Error::NotFound`] when the user does not exist.
    pub async fn roles_of(&self, username: &str) -> Result<Vec<Role>, Error> {
        let user_id = self.user_id(username).await?;
        Ok(self
            .list_named(Collection::Roles, Some(user_id))
            .await?
            .into_iter()
            .map(|(id, name, created_at)| Role {
                id,
                name,
                created_at,
            })
            .collect())
    }

    /// Inserts a group or role.
    async fn create_named(&self, c: Collection, name: &str) -> Result<(i64, String, i64), Error> {
        check_name(name).map_err(Error::InvalidName)?;
        let at = now();
        for _ in 0..ID_ATTEMPTS {
            let id = new_id();
            let inserted = sqlx::query(&format!(
                "INSERT INTO {} (id, name, created_at) VALUES ($1, $2, $3)",
                c.table()
            ))
            .bind(id)
            .bind(name)
            .bind(at)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => return Ok((id, name.to_owned(), at)),
                Err(e) if is_unique_violation(&e) => {
                    if self.named_id(c, name).await?.is_some() {
                        return Err(c.duplicate(name));
                    }
                }
                Err(e) => return Err(db_error(e)),
            }
        }
        Err(Error::Database(sqlx::Error::Protocol(
            "could not find a free id".to_owned(),
        )))
    }

    /// The id of a group or role by name, if it exists.
    async fn named_id(&self, c: Collection, name: &str) -> Result<Option<i64>, Error> {
        let row = sqlx::query(&format!("SELECT id FROM {} WHERE name = $1", c.table()))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| r.try_get("id").map_err(db_error)).transpose()
    }

    /// The id of a group or role by name, or [`Error::NotFound`].
    async fn require_named_id(&self, c: Collection, name: &str) -> Result<i64, Error> {
        self.named_id(c, name)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: c.kind(),
                name: name.to_owned(),
            })
    }

    /// All groups or roles, or only those of one user.
    async fn list_named(
        &self,
        c: Collection,
        member: Option<i64>,
    ) -> Result<Vec<(i64, String, i64)>, Error> {
        let rows = match member {
            None => {
                sqlx::query(&format!(
                    "SELECT id, name, created_at FROM {} ORDER BY name",
                    c.table()
                ))
                .fetch_all(&self.pool)
                .await
            }
            Some(user_id) => {
                sqlx::query(&format!(
                    "SELECT t.id AS id, t.name AS name, t.created_at AS created_at \
                     FROM {table} t JOIN {members} m ON m.{column} = t.id \
                     WHERE m.user_id = $1 ORDER BY t.name",
                    table = c.table(),
                    members = c.members(),
                    column = c.member_column()
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db_error)?;
        rows.iter().map(named_from_row).collect()
    }

    /// Deletes a group or role by name.
    async fn delete_named(&self, c: Collection, name: &str) -> Result<(), Error> {
        let result = sqlx::query(&format!("DELETE FROM {} WHERE name = $1", c.table()))
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        touched_or(&result, || Error::NotFound {
            kind: c.kind(),
            name: name.to_owned(),
        })
    }

    /// Adds a membership, idempotently.
    async fn add_member(&self, c: Collection, username: &str, name: &str) -> Result<(), Error> {
        let user_id = self.user_id(username).await?;
        let id = self.require_named_id(c, name).await?;
        sqlx::query(&format!(
            "INSERT INTO {} (user_id, {}) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            c.members(),
            c.member_column()
        ))
        .bind(user_id)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Removes a membership; whether there was one.
    async fn remove_member(
        &self,
        c: Collection,
        username: &str,
        name: &str,
    ) -> Result<bool, Error> {
        let user_id = self.user_id(username).await?;
        let id = self.require_named_id(c, name).await?;
        let result = sqlx::query(&format!(
            "DELETE FROM {} WHERE user_id = $1 AND {} = $2",
            c.members(),
            c.member_column()
        ))
        .bind(user_id)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(touched(&result))
    }
}

/// The error for an unknown username.
pub(super) fn user_not_found(username: &str) -> Error {
    Error::NotFound {
        kind: EntryKind::User,
        name: username.to_owned(),
    }
}
