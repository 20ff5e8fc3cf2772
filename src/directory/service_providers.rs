//! Service providers: their metadata as given, per-SP settings, and which users are assigned to them.
//!
//! The metadata XML is stored verbatim; parsing it (endpoints, certificates) belongs to the SAML module.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{
    db_error, is_unique_violation, new_id, now, touched, Directory, EntryKind, Error, ID_ATTEMPTS,
};

/// NameID format whose interpretation is left to the IdP and SP (saml-core 8.3.1).
pub const NAMEID_FORMAT_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
/// NameID format for an email address (saml-core 8.3.2).
pub const NAMEID_FORMAT_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
/// NameID format for a persistent pseudonymous identifier (saml-core 8.3.7).
pub const NAMEID_FORMAT_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
/// NameID format for a one-time identifier (saml-core 8.3.8).
pub const NAMEID_FORMAT_TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// Attribute NameFormat left to the parties (saml-core 8.2.1).
pub const ATTRNAME_FORMAT_UNSPECIFIED: &str =
    "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified";
/// Attribute NameFormat for URI names such as OIDs (saml-core 8.2.2).
pub const ATTRNAME_FORMAT_URI: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
/// Attribute NameFormat for simple names (saml-core 8.2.3).
pub const ATTRNAME_FORMAT_BASIC: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic";

/// An entity identifier must not exceed 1024 characters (saml-core 8.3.6).
pub const MAX_ENTITY_ID_CHARS: usize = 1024;

/// Columns selected for a [`ServiceProvider`], in the order [`sp_from_row`] reads them.
const SP_COLUMNS: &str = "id, entity_id, metadata_xml, display_name, nameid_format, \
     nameid_attribute, attribute_release, sign_assertion, sign_response, encrypt_assertion, enabled, \
     allow_sha1, created_at, updated_at";

/// One attribute released to an SP: which user attribute, under which SAML name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeRelease {
    /// The user attribute whose values are sent (see [`super::User::attribute_values`]; `groups` and
    /// `roles` name memberships).
    pub user_attribute: String,
    /// The `Name` of the `<saml:Attribute>` (saml-core 2.7.3.1), e.g. `urn:oid:0.9.2342.19200300.100.1.3`.
    pub saml_name: String,
    /// The `NameFormat` of the `<saml:Attribute>` (saml-core 2.7.3.1); one of the `ATTRNAME_FORMAT_*`.
    #[serde(default = "default_name_format")]
    pub name_format: String,
    /// The optional `FriendlyName` (saml-core 2.7.3.1), e.g. `mail`.
    #[serde(default)]
    pub friendly_name: Option<String>,
}

impl AttributeRelease {
    /// A release rule with the URI name format and no friendly name.
    pub fn new(user_attribute: impl Into<String>, saml_name: impl Into<String>) -> Self {
        Self {
            user_attribute: user_attribute.into(),
            saml_name: saml_name.into(),
            name_format: ATTRNAME_FORMAT_URI.to_owned(),
            friendly_name: None,
        }
    }
}

/// serde default for [`AttributeRelease::name_format`].
fn default_name_format() -> String {
    ATTRNAME_FORMAT_URI.to_owned()
}

/// How Tessera treats one SP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpSettings {
    /// The NameID `Format` sent (saml-core 2.2.2); one of the `NAMEID_FORMAT_*`.
    pub nameid_format: String,
    /// The user attribute the NameID value comes from (`username`, `email`, `id`, or an extra one).
    pub nameid_attribute: String,
    /// The attributes sent in the `<saml:AttributeStatement>`, in this order.
    pub attribute_release: Vec<AttributeRelease>,
    /// Whether the `<saml:Assertion>` is signed (saml-core 5.2).
    pub sign_assertion: bool,
    /// Whether the `<samlp:Response>` is signed (saml-core 5.2).
    pub sign_response: bool,
    /// Whether the assertion is sent as `<saml:EncryptedAssertion>` (saml-core 2.3.4, 6).
    pub encrypt_assertion: bool,
    /// Whether the SP may be used at all; a disabled SP is refused at the SSO endpoint.
    pub enabled: bool,
    /// Whether SHA-1 signatures from this SP are accepted; off by default, for legacy SPs only.
    pub allow_sha1: bool,
}

impl Default for SpSettings {
    /// Unspecified NameID taken from the username, nothing released, assertion and response signed,
    /// no encryption, enabled, no SHA-1.
    fn default() -> Self {
        Self {
            nameid_format: NAMEID_FORMAT_UNSPECIFIED.to_owned(),
            nameid_attribute: "username".to_owned(),
            attribute_release: Vec::new(),
            sign_assertion: true,
            sign_response: true,
            encrypt_assertion: false,
            enabled: true,
            allow_sha1: false,
        }
    }
}

impl SpSettings {
    /// Checks the settings; [`Error::InvalidSettings`] says what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if self.nameid_format.trim().is_empty() {
            return Err(Error::InvalidSettings("empty NameID format".to_owned()));
        }
        if self.nameid_attribute.trim().is_empty() {
            return Err(Error::InvalidSettings("empty NameID attribute".to_owned()));
        }
        for (i, rule) in self.attribute_release.iter().enumerate() {
            if rule.user_attribute.trim().is_empty() {
                return Err(Error::InvalidSettings(format!(
                    "release rule {i} has an empty user attribute"
                )));
            }
            // saml-core 2.7.3.1: Name is required; NameFormat, when present, is a URI reference.
            if rule.saml_name.trim().is_empty() {
                return Err(Error::InvalidSettings(format!(
                    "release rule {i} has an empty SAML name"
                )));
            }
            if rule.name_format.trim().is_empty() {
                return Err(Error::InvalidSettings(format!(
                    "release rule {i} has an empty name format"
                )));
            }
            // Two rules with the same Name and NameFormat would send two <saml:Attribute> elements the
            // SP cannot tell apart.
            let repeated = self.attribute_release[..i]
                .iter()
                .any(|r| r.saml_name == rule.saml_name && r.name_format == rule.name_format);
            if repeated {
                return Err(Error::InvalidSettings(format!(
                    "attribute {:?} is released twice",
                    rule.saml_name
                )));
            }
        }
        Ok(())
    }
}

/// An SP as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProvider {
    /// Stable id, keys app assignments.
    pub id: i64,
    /// The SP's entityID (saml-metadata 2.3.2), unique.
    pub entity_id: String,
    /// The SP's metadata document, verbatim as configured.
    pub metadata_xml: String,
    /// Name shown to users (app list, consent, errors).
    pub display_name: String,
    /// How Tessera treats this SP.
    pub settings: SpSettings,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Last change of metadata, name or settings, unix seconds.
    pub updated_at: i64,
}

/// What is needed to register an SP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServiceProvider {
    /// The SP's entityID; at most [`MAX_ENTITY_ID_CHARS`] characters.
    pub entity_id: String,
    /// The SP's metadata document, stored as given.
    pub metadata_xml: String,
    /// Name shown to users.
    pub display_name: String,
    /// How Tessera treats this SP.
    pub settings: SpSettings,
}

/// What [`Directory::upsert_sp_metadata`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataUpsert {
    /// The SP was unknown and was added with default settings.
    Inserted,
    /// The SP was known and its metadata differed; the metadata was replaced, settings kept.
    Updated,
    /// The SP was known with this exact metadata; nothing was written.
    Unchanged,
}

/// The rule for entityIDs: non-empty and at most 1024 characters (saml-core 8.3.6).
fn check_entity_id(entity_id: &str) -> Result<(), Error> {
    if entity_id.trim().is_empty() {
        return Err(Error::InvalidEntityId("empty".to_owned()));
    }
    if entity_id.chars().count() > MAX_ENTITY_ID_CHARS {
        return Err(Error::InvalidEntityId(format!(
            "longer than {MAX_ENTITY_ID_CHARS} characters"
        )));
    }
    Ok(())
}

/// Reads a 0/1 column as a bool; anything else is a corrupt row.
fn flag(row: &AnyRow, column: &str) -> Result<bool, Error> {
    match row.try_get::<i64, _>(column).map_err(db_error)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(Error::CorruptRow(format!(
            "{column} is {other}, not 0 or 1"
        ))),
    }
}

/// Reads a [`ServiceProvider`] from a row selected with [`SP_COLUMNS`].
fn sp_from_row(row: &AnyRow) -> Result<ServiceProvider, Error> {
    let release: String = row.try_get("attribute_release").map_err(db_error)?;
    Ok(ServiceProvider {
        id: row.try_get("id").map_err(db_error)?,
        entity_id: row.try_get("entity_id").map_err(db_error)?,
        metadata_xml: row.try_get("metadata_xml").map_err(db_error)?,
        display_name: row.try_get("display_name").map_err(db_error)?,
        settings: SpSettings {
            nameid_format: row.try_get("nameid_format").map_err(db_error)?,
            nameid_attribute: row.try_get("nameid_attribute").map_err(db_error)?,
            attribute_release: serde_json::from_str(&release)
                .map_err(|e| Error::CorruptRow(format!("attribute release: {e}")))?,
            sign_assertion: flag(row, "sign_assertion")?,
            sign_response: flag(row, "sign_response")?,
            encrypt_assertion: flag(row, "encrypt_assertion")?,
            enabled: flag(row, "enabled")?,
            allow_sha1: flag(row, "allow_sha1")?,
        },
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
    })
}

/// The error for an unknown entityID.
fn sp_not_found(entity_id: &str) -> Error {
    Error::NotFound {
        kind: EntryKind::ServiceProvider,
        name: entity_id.to_owned(),
    }
}

impl Directory {
    /// Registers an SP. Errors: [`Error::InvalidEntityId`], [`Error::InvalidSettings`],
    /// [`Error::DuplicateEntityId`].
    pub async fn add_sp(&self, new: NewServiceProvider) -> Result<ServiceProvider, Error> {
        check_entity_id(&new.entity_id)?;
        new.settings.validate()?;
        let release = serde_json::to_string(&new.settings.attribute_release)
            .map_err(|e| Error::InvalidSettings(e.to_string()))?;
        let at = now();
        let s = &new.settings;
        for _ in 0..ID_ATTEMPTS {
            let id = new_id();
            let inserted = sqlx::query(
                "INSERT INTO service_providers (id, entity_id, metadata_xml, display_name, \
                 nameid_format, nameid_attribute, attribute_release, sign_assertion, sign_response, \
                 encrypt_assertion, enabled, allow_sha1, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
            )
            .bind(id)
            .bind(&new.entity_id)
            .bind(&new.metadata_xml)
            .bind(&new.display_name)
            .bind(&s.nameid_format)
            .bind(&s.nameid_attribute)
            .bind(&release)
            .bind(i64::from(s.sign_assertion))
            .bind(i64::from(s.sign_response))
            .bind(i64::from(s.encrypt_assertion))
            .bind(i64::from(s.enabled))
            .bind(i64::from(s.allow_sha1))
            .bind(at)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {
                    return Ok(ServiceProvider {
                        id,
                        entity_id: new.entity_id,
                        metadata_xml: new.metadata_xml,
                        display_name: new.display_name,
                        settings: new.settings,
                        created_at: at,
                        updated_at: at,
                    })
                }
                Err(e) if is_unique_violation(&e) => {
                    if self.sp_id(&new.entity_id).await?.is_some() {
                        return Err(Error::DuplicateEntityId(new.entity_id));
                    }
                }
                Err(e) => return Err(db_error(e)),
            }
        }
        Err(Error::Database(sqlx::Error::Protocol(
            "could not find a free service provider id".to_owned(),
        )))
    }

    /// For metadata files read at startup: adds the SP with [`SpSettings::default`] and its entityID as
    /// display name when unknown, replaces the stored metadata when it differs (keeping name and
    /// settings), and does nothing when it is the same.
    pub async fn upsert_sp_metadata(
        &self,
        entity_id: &str,
        metadata_xml: &str,
    ) -> Result<MetadataUpsert, Error> {
        check_entity_id(entity_id)?;
        if let Some(existing) = self.get_sp(entity_id).await? {
            return self.replace_metadata(&existing, metadata_xml).await;
        }
        let added = self
            .add_sp(NewServiceProvider {
                entity_id: entity_id.to_owned(),
                metadata_xml: metadata_xml.to_owned(),
                display_name: entity_id.to_owned(),
                settings: SpSettings::default(),
            })
            .await;
        match added {
            Ok(_) => Ok(MetadataUpsert::Inserted),
            // Another node inserted it between our read and our insert.
            Err(Error::DuplicateEntityId(_)) => {
                let existing = self
                    .get_sp(entity_id)
                    .await?
                    .ok_or_else(|| sp_not_found(entity_id))?;
                self.replace_metadata(&existing, metadata_xml).await
            }
            Err(e) => Err(e),
        }
    }

    /// The update half of [`Directory::upsert_sp_metadata`].
    async fn replace_metadata(
        &self,
        existing: &ServiceProvider,
        metadata_xml: &str,
    ) -> Result<MetadataUpsert, Error> {
        if existing.metadata_xml == metadata_xml {
            return Ok(MetadataUpsert::Unchanged);
        }
        let result = sqlx::query(
            "UPDATE service_providers SET metadata_xml = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(metadata_xml)
        .bind(now())
        .bind(existing.id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if touched(&result) {
            Ok(MetadataUpsert::Updated)
        } else {
            Err(sp_not_found(&existing.entity_id))
        }
    }

    /// The SP with this entityID, if any.
    pub async fn get_sp(&self, entity_id: &str) -> Result<Option<ServiceProvider>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {SP_COLUMNS} FROM service_providers WHERE entity_id = $1"
        ))
        .bind(entity_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(sp_from_row).transpose()
    }

    /// All SPs, ordered by entityID.
    pub async fn list_sps(&self) -> Result<Vec<ServiceProvider>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {SP_COLUMNS} FROM service_providers ORDER BY entity_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(sp_from_row).collect()
    }

    /// Removes an SP and its app assignments. [`Error::NotFound`] when absent.
    pub async fn remove_sp(&self, entity_id: &str) -> Result<(), Error> {
        let result = sqlx::query("DELETE FROM service_providers WHERE entity_id = $1")
            .bind(entity_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if touched(&result) {
            Ok(())
        } else {
            Err(sp_not_found(entity_id))
        }
    }

    /// Replaces the settings of an SP and returns it. Errors: [`Error::InvalidSettings`],
    /// [`Error::NotFound`].
    pub async fn update_sp_settings(
        &self,
        entity_id: &str,
        settings: &SpSettings,
    ) -> Result<ServiceProvider, Error> {
        settings.validate()?;
        let release = serde_json::to_string(&settings.attribute_release)
            .map_err(|e| Error::InvalidSettings(e.to_string()))?;
        let result = sqlx::query(
            "UPDATE service_providers SET nameid_format = $1, nameid_attribute = $2, \
             attribute_release = $3, sign_assertion = $4, sign_response = $5, \
             encrypt_assertion = $6, enabled = $7, allow_sha1 = $8, updated_at = $9 \
             WHERE entity_id = $10",
        )
        .bind(&settings.nameid_format)
        .bind(&settings.nameid_attribute)
        .bind(&release)
        .bind(i64::from(settings.sign_assertion))
        .bind(i64::from(settings.sign_response))
        .bind(i64::from(settings.encrypt_assertion))
        .bind(i64::from(settings.enabled))
        .bind(i64::from(settings.allow_sha1))
        .bind(now())
        .bind(entity_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if !touched(&result) {
            return Err(sp_not_found(entity_id));
        }
        self.get_sp(entity_id)
            .await?
            .ok_or_else(|| sp_not_found(entity_id))
    }

    /// Renames an SP as shown to users. [`Error::NotFound`] when absent.
    pub async fn set_sp_display_name(
        &self,
        entity_id: &str,
        display_name: &str,
    ) -> Result<(), Error> {
        let result = sqlx::query(
            "UPDATE service_providers SET display_name = $1, updated_at = $2 WHERE entity_id = $3",
        )
        .bind(display_name)
        .bind(now())
        .bind(entity_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if touched(&result) {
            Ok(())
        } else {
            Err(sp_not_found(entity_id))
        }
    }

    /// Assigns an SP to a user directly; assigning again is a no-op. [`Error::NotFound`] when the user
    /// or the SP does not exist.
    pub async fn assign_app(&self, username: &str, entity_id: &str) -> Result<(), Error> {
        let user_id = self.user_id(username).await?;
        let sp_id = self
            .sp_id(entity_id)
            .await?
            .ok_or_else(|| sp_not_found(entity_id))?;
        sqlx::query(
            "INSERT INTO app_assignments (user_id, sp_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(sp_id)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Removes a direct assignment; returns whether there was one. [`Error::NotFound`] when the user or
    /// the SP does not exist.
    pub async fn unassign_app(&self, username: &str, entity_id: &str) -> Result<bool, Error> {
        let user_id = self.user_id(username).await?;
        let sp_id = self
            .sp_id(entity_id)
            .await?
            .ok_or_else(|| sp_not_found(entity_id))?;
        let result = sqlx::query("DELETE FROM app_assignments WHERE user_id = $1 AND sp_id = $2")
            .bind(user_id)
            .bind(sp_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(touched(&result))
    }

    /// Whether the SP is directly assigned to the user (false when either does not exist).
    pub async fn is_assigned(&self, username: &str, entity_id: &str) -> Result<bool, Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM app_assignments a \
             JOIN users u ON u.id = a.user_id \
             JOIN service_providers s ON s.id = a.sp_id \
             WHERE u.username = $1 AND s.entity_id = $2",
        )
        .bind(username)
        .bind(entity_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        let n: i64 = row.try_get("n").map_err(db_error)?;
        Ok(n > 0)
    }

    /// The SPs directly assigned to a user, ordered by entityID. [`Error::NotFound`] when the user does
    /// not exist.
    pub async fn apps_of(&self, username: &str) -> Result<Vec<ServiceProvider>, Error> {
        let user_id = self.user_id(username).await?;
        let columns = SP_COLUMNS
            .split(", ")
            .map(|c| format!("s.{} AS {}", c.trim(), c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM service_providers s \
             JOIN app_assignments a ON a.sp_id = s.id \
             WHERE a.user_id = $1 ORDER BY s.entity_id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(sp_from_row).collect()
    }

    /// The id of an SP by entityID, if it exists.
    async fn sp_id(&self, entity_id: &str) -> Result<Option<i64>, Error> {
        let row = sqlx::query("SELECT id FROM service_providers WHERE entity_id = $1")
            .bind(entity_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| r.try_get("id").map_err(db_error)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_are_valid_and_signed() -> Result<(), Error> {
        let s = SpSettings::default();
        s.validate()?;
        assert!(s.sign_assertion && s.sign_response && s.enabled);
        assert!(!s.encrypt_assertion && !s.allow_sha1);
        assert_eq!(s.nameid_format, NAMEID_FORMAT_UNSPECIFIED);
        assert_eq!(s.nameid_attribute, "username");
        Ok(())
    }

    #[test]
    fn invalid_settings_are_refused() {
        let mut s = SpSettings {
            nameid_attribute: " ".to_owned(),
            ..SpSettings::default()
        };
        assert!(matches!(s.validate(), Err(Error::InvalidSettings(_))));
        s.nameid_attribute = "email".to_owned();
        s.attribute_release = vec![
            AttributeRelease::new("email", "urn:oid:0.9.2342.19200300.100.1.3"),
            AttributeRelease::new("email", "urn:oid:0.9.2342.19200300.100.1.3"),
        ];
        assert!(matches!(s.validate(), Err(Error::InvalidSettings(_))));
        s.attribute_release.pop();
        assert!(s.validate().is_ok());
        s.attribute_release.push(AttributeRelease::new("", "mail"));
        assert!(matches!(s.validate(), Err(Error::InvalidSettings(_))));
    }

    #[test]
    fn entity_id_length_limit() {
        assert!(check_entity_id(&"a".repeat(MAX_ENTITY_ID_CHARS)).is_ok());
        assert!(matches!(
            check_entity_id(&"a".repeat(MAX_ENTITY_ID_CHARS + 1)),
            Err(Error::InvalidEntityId(_))
        ));
        assert!(matches!(
            check_entity_id(""),
            Err(Error::InvalidEntityId(_))
        ));
    }

    #[test]
    fn release_name_format_defaults_to_uri() -> Result<(), serde_json::Error> {
        let r: AttributeRelease =
            serde_json::from_str(r#"{"user_attribute":"email","saml_name":"mail"}"#)?;
        assert_eq!(r.name_format, ATTRNAME_FORMAT_URI);
        assert_eq!(r.friendly_name, None);
        Ok(())
    }
}
