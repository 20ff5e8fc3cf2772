//! Service providers: their metadata as given, per-SP settings, and which users are assigned to them.
//!
//! The metadata XML is stored verbatim; parsing it (endpoints, certificates) belongs to the SAML module.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{
    db_error, is_unique_violation, new_id, now, touched, touched_or, Directory, EntryKind, Error,
    ID_ATTEMPTS,
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
     allow_sha1, created_at, updated_at, logo_url, metadata_url, metadata_pinned_cert, \
     metadata_refresh_secs, last_refresh_at, last_refresh_ok_at, last_refresh_error";

/// The shortest scheduled refresh interval: metadata changes in days, not seconds, and the SP's server
/// should not be polled harder than this.
pub const MIN_REFRESH_SECS: i64 = 60;

/// One attribute released to an SP: which user attribute (or which fixed values), under which SAML
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeRelease {
    /// The user attribute whose values are sent (see [`super::User::attribute_values`]; `groups` and
    /// `roles` name memberships). Empty when the rule sends [`AttributeRelease::static_values`].
    #[serde(default)]
    pub user_attribute: String,
    /// The `Name` of the `<saml:Attribute>` (saml-core 2.7.3.1), e.g. `urn:oid:0.9.2342.19200300.100.1.3`.
    pub saml_name: String,
    /// The `NameFormat` of the `<saml:Attribute>` (saml-core 2.7.3.1); one of the `ATTRNAME_FORMAT_*`.
    #[serde(default = "default_name_format")]
    pub name_format: String,
    /// The optional `FriendlyName` (saml-core 2.7.3.1), e.g. `mail`.
    #[serde(default)]
    pub friendly_name: Option<String>,
    /// Fixed values sent to every user of the SP (e.g. a tenant name) instead of a user attribute.
    /// Absent from rows written before it existed, which then load as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_values: Vec<String>,
}

impl AttributeRelease {
    /// A release rule with the URI name format and no friendly name.
    pub fn new(user_attribute: impl Into<String>, saml_name: impl Into<String>) -> Self {
        Self {
            user_attribute: user_attribute.into(),
            saml_name: saml_name.into(),
            name_format: ATTRNAME_FORMAT_URI.to_owned(),
            friendly_name: None,
            static_values: Vec::new(),
        }
    }

    /// A rule that sends `values` to every user under `saml_name` (URI name format, no friendly name).
    pub fn fixed(saml_name: impl Into<String>, values: Vec<String>) -> Self {
        Self {
            static_values: values,
            ..Self::new(String::new(), saml_name)
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
            // A rule sends either a user attribute or static values, never both or neither.
            match (
                rule.user_attribute.trim().is_empty(),
                rule.static_values.is_empty(),
            ) {
                (true, true) => {
                    return Err(Error::InvalidSettings(format!(
                        "release rule {i} has an empty user attribute"
                    )))
                }
                (false, false) => {
                    return Err(Error::InvalidSettings(format!(
                        "release rule {i} names a user attribute and static values; give one"
                    )))
                }
                _ => {}
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

/// Where the metadata of an SP registered from a URL comes from, and how it is checked and refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataSource {
    /// The http(s) URL the metadata is fetched from.
    pub url: String,
    /// PEM certificate whose key must have signed the metadata (saml-metadata 3.1); `None`: the
    /// metadata is taken unsigned, so the URL should then be https.
    pub pinned_cert: Option<String>,
    /// Seconds between scheduled refreshes (at least [`MIN_REFRESH_SECS`]); `None`: only on request.
    pub refresh_secs: Option<i64>,
}

/// What the last refreshes of an SP's metadata did. All `None` until the first refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshStatus {
    /// The last attempt, unix seconds; the schedule counts from it, so a failing URL is not hammered.
    pub last_attempt_at: Option<i64>,
    /// The last attempt that replaced (or confirmed) the metadata, unix seconds.
    pub last_success_at: Option<i64>,
    /// Why the last attempt failed; `None` when it succeeded. The metadata is then the last good one.
    pub last_error: Option<String>,
}

/// Everything about an SP an administrator edits in one go, applied by
/// [`Directory::update_sp_profile`] all at once or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpProfile {
    /// Name shown to users on the portal.
    pub display_name: String,
    /// Logo shown on the portal: an absolute https URL, or `None`.
    pub logo_url: Option<String>,
    /// How Tessera treats the SP.
    pub settings: SpSettings,
    /// Where its metadata comes from, for an SP registered from a URL.
    pub source: Option<MetadataSource>,
}

impl SpProfile {
    /// The profile of a stored SP, to edit and write back.
    pub fn of(sp: &ServiceProvider) -> Self {
        Self {
            display_name: sp.display_name.clone(),
            logo_url: sp.logo_url.clone(),
            settings: sp.settings.clone(),
            source: sp.source.clone(),
        }
    }

    /// Checks the profile; [`Error::InvalidSettings`] says what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if self.display_name.trim().is_empty() {
            return Err(Error::InvalidSettings("empty display name".to_owned()));
        }
        if let Some(logo) = &self.logo_url {
            // The portal loads it into an <img>: an absolute https URL only, so no script or data
            // scheme and no mixed content.
            match url::Url::parse(logo) {
                Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
                _ => {
                    return Err(Error::InvalidSettings(format!(
                        "logo URL {logo:?} is not an absolute https URL"
                    )))
                }
            }
        }
        if let Some(source) = &self.source {
            check_metadata_url(&source.url)?;
            if let Some(secs) = source.refresh_secs {
                if secs < MIN_REFRESH_SECS {
                    return Err(Error::InvalidSettings(format!(
                        "refresh interval {secs}s is shorter than {MIN_REFRESH_SECS}s"
                    )));
                }
            }
            if let Some(pem) = &source.pinned_cert {
                openssl::x509::X509::from_pem(pem.as_bytes()).map_err(|_| {
                    Error::InvalidSettings("pinned certificate is not a PEM certificate".to_owned())
                })?;
            }
        }
        self.settings.validate()
    }
}

/// A metadata URL must be an absolute http or https URL with a host.
pub fn check_metadata_url(url: &str) -> Result<(), Error> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err(Error::InvalidSettings(format!(
            "metadata URL {url:?} is not an absolute http(s) URL"
        ))),
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
    /// Logo shown on the portal (an https URL).
    pub logo_url: Option<String>,
    /// Where the metadata is fetched from, when it was registered from a URL.
    pub source: Option<MetadataSource>,
    /// What the last metadata refreshes did.
    pub refresh: RefreshStatus,
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
        logo_url: row.try_get("logo_url").map_err(db_error)?,
        source: row
            .try_get::<Option<String>, _>("metadata_url")
            .map_err(db_error)?
            .map(|url| -> Result<MetadataSource, Error> {
                Ok(MetadataSource {
                    url,
                    pinned_cert: row.try_get("metadata_pinned_cert").map_err(db_error)?,
                    refresh_secs: row.try_get("metadata_refresh_secs").map_err(db_error)?,
                })
            })
            .transpose()?,
        refresh: RefreshStatus {
            last_attempt_at: row.try_get("last_refresh_at").map_err(db_error)?,
            last_success_at: row.try_get("last_refresh_ok_at").map_err(db_error)?,
            last_error: row.try_get("last_refresh_error").map_err(db_error)?,
        },
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
        self.add_sp_with(new, None, None).await
    }

    /// [`Directory::add_sp`] with a portal logo and the metadata's source URL, written in the same
    /// insert. Errors as for `add_sp`, and [`Error::InvalidSettings`] for a bad logo or source.
    pub async fn add_sp_with(
        &self,
        new: NewServiceProvider,
        logo_url: Option<String>,
        source: Option<MetadataSource>,
    ) -> Result<ServiceProvider, Error> {
        check_entity_id(&new.entity_id)?;
        SpProfile {
            display_name: new.display_name.clone(),
            logo_url: logo_url.clone(),
            settings: new.settings.clone(),
            source: source.clone(),
        }
        .validate()?;
        let release = serde_json::to_string(&new.settings.attribute_release)
            .map_err(|e| Error::InvalidSettings(e.to_string()))?;
        let at = now();
        let s = &new.settings;
        for _ in 0..ID_ATTEMPTS {
            let id = new_id();
            let inserted = sqlx::query(
                "INSERT INTO service_providers (id, entity_id, metadata_xml, display_name, \
                 nameid_format, nameid_attribute, attribute_release, sign_assertion, sign_response, \
                 encrypt_assertion, enabled, allow_sha1, created_at, updated_at, logo_url, \
                 metadata_url, metadata_pinned_cert, metadata_refresh_secs) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14, $15, \
                 $16, $17)",
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
            .bind(logo_url.clone())
            .bind(source.as_ref().map(|s| s.url.clone()))
            .bind(source.as_ref().and_then(|s| s.pinned_cert.clone()))
            .bind(source.as_ref().and_then(|s| s.refresh_secs))
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
                        logo_url,
                        source,
                        refresh: RefreshStatus::default(),
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
        touched_or(&result, || sp_not_found(entity_id))
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
        touched_or(&result, || sp_not_found(entity_id))?;
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
        touched_or(&result, || sp_not_found(entity_id))
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

    /// Replaces name, logo, settings and metadata source of an SP in one statement, so nothing is
    /// half-applied, and with them the metadata when `metadata_xml` is given (already checked by the
    /// caller, e.g. fetched from the new source). Errors: [`Error::InvalidSettings`],
    /// [`Error::NotFound`].
    pub async fn update_sp_profile(
        &self,
        entity_id: &str,
        profile: &SpProfile,
        metadata_xml: Option<&str>,
    ) -> Result<ServiceProvider, Error> {
        profile.validate()?;
        let s = &profile.settings;
        let release = serde_json::to_string(&s.attribute_release)
            .map_err(|e| Error::InvalidSettings(e.to_string()))?;
        let source = profile.source.as_ref();
        let result = sqlx::query(
            "UPDATE service_providers SET display_name = $1, logo_url = $2, nameid_format = $3, \
             nameid_attribute = $4, attribute_release = $5, sign_assertion = $6, sign_response = $7, \
             encrypt_assertion = $8, enabled = $9, allow_sha1 = $10, metadata_url = $11, \
             metadata_pinned_cert = $12, metadata_refresh_secs = $13, \
             metadata_xml = COALESCE($14, metadata_xml), updated_at = $15 WHERE entity_id = $16",
        )
        .bind(&profile.display_name)
        .bind(profile.logo_url.clone())
        .bind(&s.nameid_format)
        .bind(&s.nameid_attribute)
        .bind(&release)
        .bind(i64::from(s.sign_assertion))
        .bind(i64::from(s.sign_response))
        .bind(i64::from(s.encrypt_assertion))
        .bind(i64::from(s.enabled))
        .bind(i64::from(s.allow_sha1))
        .bind(source.map(|s| s.url.clone()))
        .bind(source.and_then(|s| s.pinned_cert.clone()))
        .bind(source.and_then(|s| s.refresh_secs))
        .bind(metadata_xml.map(str::to_owned))
        .bind(now())
        .bind(entity_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        touched_or(&result, || sp_not_found(entity_id))?;
        self.get_sp(entity_id)
            .await?
            .ok_or_else(|| sp_not_found(entity_id))
    }

    /// Records a successful metadata refresh at `at`: the metadata is replaced when it changed
    /// (`updated_at` moves then, which is what makes every node re-read it) and the error is cleared.
    pub async fn record_refresh_success(
        &self,
        entity_id: &str,
        metadata_xml: &str,
        at: i64,
    ) -> Result<(), Error> {
        let result = sqlx::query(
            "UPDATE service_providers SET \
             updated_at = CASE WHEN metadata_xml = $1 THEN updated_at ELSE $2 END, \
             metadata_xml = $1, last_refresh_at = $2, last_refresh_ok_at = $2, \
             last_refresh_error = NULL WHERE entity_id = $3",
        )
        .bind(metadata_xml)
        .bind(at)
        .bind(entity_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        touched_or(&result, || sp_not_found(entity_id))
    }

    /// Records a failed metadata refresh at `at` and why; the metadata stays the last good one.
    pub async fn record_refresh_failure(
        &self,
        entity_id: &str,
        error: &str,
        at: i64,
    ) -> Result<(), Error> {
        let result = sqlx::query(
            "UPDATE service_providers SET last_refresh_at = $1, last_refresh_error = $2 \
             WHERE entity_id = $3",
        )
        .bind(at)
        .bind(error)
        .bind(entity_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        touched_or(&result, || sp_not_found(entity_id))
    }

    /// The portal logo of every SP that has one, by entityID.
    pub async fn sp_logos(&self) -> Result<std::collections::HashMap<String, String>, Error> {
        let rows = sqlx::query(
            "SELECT entity_id, logo_url FROM service_providers WHERE logo_url IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("entity_id").map_err(db_error)?,
                    r.try_get("logo_url").map_err(db_error)?,
                ))
            })
            .collect()
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
        // Rows written before static values existed load with none, and rules without static
        // values are written as before.
        assert!(r.static_values.is_empty());
        assert!(!serde_json::to_string(&r)?.contains("static_values"));
        let fixed: AttributeRelease =
            serde_json::from_str(r#"{"saml_name":"tenant","static_values":["acme"]}"#)?;
        assert_eq!(
            fixed,
            AttributeRelease::fixed("tenant", vec!["acme".into()])
        );
        Ok(())
    }

    #[test]
    fn a_rule_releases_a_user_attribute_or_static_values() {
        let with = |rule: AttributeRelease| SpSettings {
            attribute_release: vec![rule],
            ..SpSettings::default()
        };
        assert!(with(AttributeRelease::fixed("tenant", vec!["acme".into()]))
            .validate()
            .is_ok());
        assert!(matches!(
            with(AttributeRelease::fixed("tenant", Vec::new())).validate(),
            Err(Error::InvalidSettings(_))
        ));
        let both = AttributeRelease {
            static_values: vec!["acme".into()],
            ..AttributeRelease::new("email", "mail")
        };
        assert!(matches!(
            with(both).validate(),
            Err(Error::InvalidSettings(_))
        ));
    }

    #[test]
    fn profile_checks_logo_source_and_interval() {
        let profile = SpProfile {
            display_name: "Wiki".into(),
            logo_url: Some("https://cdn.example/logo.png".into()),
            settings: SpSettings::default(),
            source: Some(MetadataSource {
                url: "https://sp.example/metadata".into(),
                pinned_cert: None,
                refresh_secs: Some(MIN_REFRESH_SECS),
            }),
        };
        assert!(profile.validate().is_ok());
        let bad = [
            SpProfile {
                display_name: " ".into(),
                ..profile.clone()
            },
            SpProfile {
                logo_url: Some("http://cdn.example/logo.png".into()),
                ..profile.clone()
            },
            SpProfile {
                logo_url: Some("javascript:alert(1)".into()),
                ..profile.clone()
            },
            SpProfile {
                source: Some(MetadataSource {
                    url: "ftp://sp.example/metadata".into(),
                    pinned_cert: None,
                    refresh_secs: None,
                }),
                ..profile.clone()
            },
            SpProfile {
                source: Some(MetadataSource {
                    url: "https://sp.example/metadata".into(),
                    pinned_cert: None,
                    refresh_secs: Some(MIN_REFRESH_SECS - 1),
                }),
                ..profile.clone()
            },
            SpProfile {
                source: Some(MetadataSource {
                    url: "https://sp.example/metadata".into(),
                    pinned_cert: Some("not a certificate".into()),
                    refresh_secs: None,
                }),
                ..profile.clone()
            },
        ];
        for p in bad {
            assert!(
                matches!(p.validate(), Err(Error::InvalidSettings(_))),
                "{p:?}"
            );
        }
    }
}
