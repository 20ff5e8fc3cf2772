//! Service providers: registration from metadata or from a metadata URL, settings, profile (name,
//! logo, metadata source), metadata replacement and refresh, enabling, removal and direct assignment
//! to users. App admins reach only the SPs granted to them.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{authorize, Action, Actor};
use super::users::{user_named, user_out, UserOut};
use super::{audit, no_content, ApiError, ApiJson, ApiPath, ErrorBody, NOTHING};
use crate::directory::{
    AdminRole, AttributeRelease, MetadataSource, NewServiceProvider, ServiceProvider, SpProfile,
    SpSettings,
};
use crate::policy::{IpRange, Requirement, SpRequirement};
use crate::saml::metadata::parse_sp_metadata;
use crate::sp_registration::{self, FetchLimits, RefreshOutcome, UrlRegistration};
use crate::web::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sps, register_sp))
        .routes(routes!(register_sp_from_url))
        .routes(routes!(get_sp, delete_sp))
        .routes(routes!(update_settings))
        .routes(routes!(replace_metadata))
        .routes(routes!(update_profile))
        .routes(routes!(refresh_metadata))
        .routes(routes!(enable_sp))
        .routes(routes!(disable_sp))
        .routes(routes!(list_sp_users))
        .routes(routes!(assign_user, unassign_user))
        .routes(routes!(get_access, set_access))
}

/// One attribute released to an SP: the values of a user attribute, or fixed values.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseIo {
    /// The user attribute (`email`, `display_name`, an extra attribute, ...); `groups` and `roles`
    /// send the names of the user's groups or roles as one multi-valued attribute. Empty (or left
    /// out) when the rule sends `static_values`.
    #[serde(default)]
    pub user_attribute: String,
    /// The SAML attribute Name.
    pub saml_name: String,
    /// The NameFormat URI; default `urn:oasis:names:tc:SAML:2.0:attrname-format:uri`.
    pub name_format: Option<String>,
    pub friendly_name: Option<String>,
    /// Fixed values sent to every user of the SP (e.g. a tenant name) instead of a user attribute.
    #[serde(default)]
    pub static_values: Vec<String>,
}

/// How Tessera treats an SP; a PUT replaces all of it (left-out settings get the defaults).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsIo {
    pub nameid_format: Option<String>,
    pub nameid_attribute: Option<String>,
    #[serde(default)]
    pub attribute_release: Vec<ReleaseIo>,
    pub sign_assertion: Option<bool>,
    pub sign_response: Option<bool>,
    pub encrypt_assertion: Option<bool>,
    pub enabled: Option<bool>,
    pub allow_sha1: Option<bool>,
}

impl SettingsIo {
    fn to_settings(&self) -> SpSettings {
        let d = SpSettings::default();
        SpSettings {
            nameid_format: self.nameid_format.clone().unwrap_or(d.nameid_format),
            nameid_attribute: self.nameid_attribute.clone().unwrap_or(d.nameid_attribute),
            attribute_release: self
                .attribute_release
                .iter()
                .map(|r| {
                    let mut a =
                        AttributeRelease::new(r.user_attribute.clone(), r.saml_name.clone());
                    if let Some(f) = &r.name_format {
                        a.name_format = f.clone();
                    }
                    a.friendly_name = r.friendly_name.clone();
                    a.static_values = r.static_values.clone();
                    a
                })
                .collect(),
            sign_assertion: self.sign_assertion.unwrap_or(d.sign_assertion),
            sign_response: self.sign_response.unwrap_or(d.sign_response),
            encrypt_assertion: self.encrypt_assertion.unwrap_or(d.encrypt_assertion),
            enabled: self.enabled.unwrap_or(d.enabled),
            allow_sha1: self.allow_sha1.unwrap_or(d.allow_sha1),
        }
    }

    fn of(s: &SpSettings) -> Self {
        SettingsIo {
            nameid_format: Some(s.nameid_format.clone()),
            nameid_attribute: Some(s.nameid_attribute.clone()),
            attribute_release: s
                .attribute_release
                .iter()
                .map(|r| ReleaseIo {
                    user_attribute: r.user_attribute.clone(),
                    saml_name: r.saml_name.clone(),
                    name_format: Some(r.name_format.clone()),
                    friendly_name: r.friendly_name.clone(),
                    static_values: r.static_values.clone(),
                })
                .collect(),
            sign_assertion: Some(s.sign_assertion),
            sign_response: Some(s.sign_response),
            encrypt_assertion: Some(s.encrypt_assertion),
            enabled: Some(s.enabled),
            allow_sha1: Some(s.allow_sha1),
        }
    }
}

/// Where the metadata of an SP registered from a URL comes from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceIo {
    /// The http(s) URL the metadata is fetched from (plain http only from the loopback, or with a
    /// pinned certificate).
    pub metadata_url: String,
    /// PEM certificate whose key must have signed the metadata (saml-metadata 3.1); `null`: the
    /// metadata is taken unsigned.
    pub pinned_cert_pem: Option<String>,
    /// Seconds between scheduled refreshes (at least 60); `null`: refreshed only on request.
    pub refresh_secs: Option<i64>,
}

impl SourceIo {
    fn of(s: &MetadataSource) -> Self {
        SourceIo {
            metadata_url: s.url.clone(),
            pinned_cert_pem: s.pinned_cert.clone(),
            refresh_secs: s.refresh_secs,
        }
    }

    fn to_source(&self) -> MetadataSource {
        MetadataSource {
            url: self.metadata_url.clone(),
            pinned_cert: self.pinned_cert_pem.clone(),
            refresh_secs: self.refresh_secs,
        }
    }
}

/// What the last metadata refreshes of an SP did (all `null` until the first one).
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshIo {
    /// The last attempt, unix seconds.
    pub last_attempt_at: Option<i64>,
    /// The last successful attempt, unix seconds.
    pub last_success_at: Option<i64>,
    /// Why the last attempt failed (`null` when it succeeded); the last good metadata stays in use.
    pub last_error: Option<String>,
}

/// A registered SP.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpOut {
    pub id: i64,
    pub entity_id: String,
    pub display_name: String,
    /// Logo shown on the portal (an https URL).
    pub logo_url: Option<String>,
    /// Where the metadata is fetched from; `null` for metadata given as a document.
    pub source: Option<SourceIo>,
    /// What the last refreshes from `source` did.
    pub refresh: RefreshIo,
    pub settings: SettingsIo,
    /// The metadata document (in single-SP answers only).
    pub metadata_xml: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// What a failed metadata refresh says to an admin who may not change where the metadata comes
/// from: the details of a fetch error (addresses, TLS and HTTP errors of the fetched host) would make
/// the refresh a probe of internal addresses.
const GENERIC_REFRESH_ERROR: &str =
    "the metadata could not be fetched; an org admin can see why in the SP's refresh status";

/// Whether `actor` may see and change an SP's metadata source (the org-wide SP action).
async fn org_wide(idp: &AppState, actor: &Actor) -> bool {
    authorize(idp, actor, Action::CreateOrDeleteSp)
        .await
        .is_ok()
}

/// `out` as `actor` may see it: without the reason of a failed refresh unless org-wide.
fn shown(mut out: SpOut, org_wide: bool) -> SpOut {
    if !org_wide && out.refresh.last_error.is_some() {
        out.refresh.last_error = Some(GENERIC_REFRESH_ERROR.to_owned());
    }
    out
}

fn sp_out(sp: &ServiceProvider, with_metadata: bool) -> SpOut {
    SpOut {
        id: sp.id,
        entity_id: sp.entity_id.clone(),
        display_name: sp.display_name.clone(),
        logo_url: sp.logo_url.clone(),
        source: sp.source.as_ref().map(SourceIo::of),
        refresh: RefreshIo {
            last_attempt_at: sp.refresh.last_attempt_at,
            last_success_at: sp.refresh.last_success_at,
            last_error: sp.refresh.last_error.clone(),
        },
        settings: SettingsIo::of(&sp.settings),
        metadata_xml: with_metadata.then(|| sp.metadata_xml.clone()),
        created_at: sp.created_at,
        updated_at: sp.updated_at,
    }
}

/// An SP to register from its metadata.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSpIn {
    /// The SP's SAML metadata (one EntityDescriptor).
    pub metadata_xml: String,
    /// Name shown to users; default the entityID.
    pub display_name: Option<String>,
    pub settings: Option<SettingsIo>,
}

/// An SP to register from its metadata URL (as `tessera sp add URL`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSpFromUrlIn {
    /// The http(s) URL of the metadata; plain http only from the loopback or with `pinned_cert_pem`.
    pub metadata_url: String,
    /// Name shown to users; default the entityID.
    pub display_name: Option<String>,
    /// Logo shown on the portal (an absolute https URL).
    pub logo_url: Option<String>,
    /// PEM certificate whose key must have signed the metadata (saml-metadata 3.1).
    pub pinned_cert_pem: Option<String>,
    /// Seconds between scheduled refreshes (at least 60); left out: refreshed only on request.
    pub refresh_secs: Option<i64>,
}

/// An SP's name, logo and metadata source; a PUT replaces all three (a left-out logo or source is
/// removed). Settings are changed with `PUT /sps/{id}/settings`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileIn {
    /// Name shown to users.
    pub display_name: String,
    /// Logo shown on the portal (an absolute https URL); `null` removes it.
    pub logo_url: Option<String>,
    /// Where the metadata is fetched from; `null` keeps the stored metadata and stops refreshing. A
    /// new URL or pinned certificate is fetched and checked before anything is stored.
    pub source: Option<SourceIo>,
}

/// What `POST /sps/{id}/refresh` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshOut {
    /// `replaced` (the metadata changed), `unchanged`, or `failed` (the last good metadata stays).
    pub outcome: &'static str,
    /// Why the refresh failed (`null` when it succeeded).
    pub last_error: Option<String>,
    /// The SP after the refresh.
    pub sp: SpOut,
}

/// Replacement metadata; its entityID must stay the same.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataIn {
    pub metadata_xml: String,
}

/// The entityID of the one SP described by `xml`, after a full parse (saml-metadata 2.3.2).
fn entity_of(xml: &str) -> Result<String, ApiError> {
    let entities = parse_sp_metadata(xml.as_bytes(), Utc::now())
        .map_err(|e| ApiError::invalid(format!("metadata refused: {e}")))?;
    match entities.as_slice() {
        [one] => Ok(one.entity_id.clone()),
        _ => Err(ApiError::invalid(
            "the metadata must describe exactly one SP",
        )),
    }
}

/// The SP with id `id`, or 404.
async fn sp_by_id(idp: &AppState, id: i64) -> Result<ServiceProvider, ApiError> {
    idp.directory
        .list_sps()
        .await?
        .into_iter()
        .find(|sp| sp.id == id)
        .ok_or_else(|| ApiError::not_found("service provider", &id.to_string()))
}

fn target(sp: &ServiceProvider) -> String {
    format!("sp:{}", sp.entity_id)
}

#[utoipa::path(get, path = "/api/v1/sps", tag = "service providers",
    responses((status = 200, body = [SpOut]), (status = "4XX", body = ErrorBody)))]
/// Lists SPs (app admins: theirs).
async fn list_sps(
    State(idp): State<AppState>,
    actor: Actor,
) -> Result<ApiJson<Vec<SpOut>>, ApiError> {
    authorize(&idp, &actor, Action::ListSps).await?;
    let wide = org_wide(&idp, &actor).await;
    let mut out = Vec::new();
    for sp in idp.directory.list_sps().await? {
        if authorize(&idp, &actor, Action::ReadSp(&sp.entity_id))
            .await
            .is_ok()
        {
            out.push(shown(sp_out(&sp, false), wide));
        }
    }
    Ok(ApiJson(out))
}

#[utoipa::path(post, path = "/api/v1/sps", tag = "service providers", request_body = NewSpIn,
    responses((status = 201, body = SpOut), (status = "4XX", body = ErrorBody)))]
/// Registers an SP from its metadata.
async fn register_sp(
    State(idp): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<NewSpIn>,
) -> Result<(StatusCode, ApiJson<SpOut>), ApiError> {
    authorize(&idp, &actor, Action::CreateOrDeleteSp).await?;
    let entity_id = entity_of(&body.metadata_xml)?;
    let settings = body
        .settings
        .as_ref()
        .map(SettingsIo::to_settings)
        .unwrap_or_default();
    let sp = idp
        .directory
        .add_sp(NewServiceProvider {
            display_name: body.display_name.unwrap_or_else(|| entity_id.clone()),
            entity_id,
            metadata_xml: body.metadata_xml,
            settings,
        })
        .await?;
    let out = sp_out(&sp, false);
    audit(&idp, &actor, "sp.create", &target(&sp), NOTHING, Some(&out)).await?;
    Ok((StatusCode::CREATED, ApiJson(sp_out(&sp, true))))
}

#[utoipa::path(post, path = "/api/v1/sps/from-url", tag = "service providers",
    request_body = NewSpFromUrlIn,
    responses((status = 201, body = [SpOut]), (status = 502, body = ErrorBody),
        (status = "4XX", body = ErrorBody)))]
/// Registers the SPs described by the metadata at a URL (checked against the pinned certificate when
/// one is given), remembering the URL for refreshes. 502 when the URL cannot be fetched.
async fn register_sp_from_url(
    State(idp): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<NewSpFromUrlIn>,
) -> Result<(StatusCode, ApiJson<Vec<SpOut>>), ApiError> {
    authorize(&idp, &actor, Action::CreateOrDeleteSp).await?;
    let registration = UrlRegistration {
        url: body.metadata_url,
        display_name: body.display_name,
        logo_url: body.logo_url,
        pinned_cert: body.pinned_cert_pem,
        refresh_secs: body.refresh_secs,
    };
    let sps = sp_registration::register_from_url(
        &idp.directory,
        &registration,
        &fetch_limits(&idp),
        Utc::now(),
    )
    .await?;
    let mut out = Vec::new();
    for sp in &sps {
        let created = sp_out(sp, false);
        audit(
            &idp,
            &actor,
            "sp.create",
            &target(sp),
            NOTHING,
            Some(&created),
        )
        .await?;
        out.push(created);
    }
    Ok((StatusCode::CREATED, ApiJson(out)))
}

/// The configured bounds of a metadata fetch (`[sp_metadata]`).
fn fetch_limits(idp: &AppState) -> FetchLimits {
    FetchLimits::from_config(&idp.config.sp_metadata)
}

#[utoipa::path(get, path = "/api/v1/sps/{id}", tag = "service providers",
    params(("id" = i64, Path)),
    responses((status = 200, body = SpOut), (status = "4XX", body = ErrorBody)))]
/// One SP with its metadata.
async fn get_sp(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<ApiJson<SpOut>, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ReadSp(&sp.entity_id)).await?;
    Ok(ApiJson(shown(
        sp_out(&sp, true),
        org_wide(&idp, &actor).await,
    )))
}

#[utoipa::path(delete, path = "/api/v1/sps/{id}", tag = "service providers",
    params(("id" = i64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Removes an SP with its assignments and app admin grants.
async fn delete_sp(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::CreateOrDeleteSp).await?;
    idp.directory.remove_sp(&sp.entity_id).await?;
    audit(
        &idp,
        &actor,
        "sp.delete",
        &target(&sp),
        Some(&sp_out(&sp, false)),
        NOTHING,
    )
    .await?;
    Ok(no_content())
}

/// Stores `settings` for `sp` and records the change as `action`.
async fn store_settings(
    idp: &AppState,
    actor: &Actor,
    sp: &ServiceProvider,
    settings: &SpSettings,
    action: &str,
) -> Result<ApiJson<SpOut>, ApiError> {
    let updated = idp
        .directory
        .update_sp_settings(&sp.entity_id, settings)
        .await?;
    let (before, after) = (sp_out(sp, false), sp_out(&updated, false));
    audit(idp, actor, action, &target(sp), Some(&before), Some(&after)).await?;
    Ok(ApiJson(after))
}

#[utoipa::path(put, path = "/api/v1/sps/{id}/settings", tag = "service providers",
    params(("id" = i64, Path)), request_body = SettingsIo,
    responses((status = 200, body = SpOut), (status = "4XX", body = ErrorBody)))]
/// Replaces an SP's settings.
async fn update_settings(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SettingsIo>,
) -> Result<ApiJson<SpOut>, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ManageSp(&sp.entity_id)).await?;
    store_settings(&idp, &actor, &sp, &body.to_settings(), "sp.settings").await
}

#[utoipa::path(put, path = "/api/v1/sps/{id}/metadata", tag = "service providers",
    params(("id" = i64, Path)), request_body = MetadataIn,
    responses((status = 200, body = SpOut), (status = "4XX", body = ErrorBody)))]
/// Replaces an SP's metadata (new certificates, endpoints); the entityID must stay the same.
async fn replace_metadata(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<MetadataIn>,
) -> Result<ApiJson<SpOut>, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ManageSp(&sp.entity_id)).await?;
    let entity_id = entity_of(&body.metadata_xml)?;
    if entity_id != sp.entity_id {
        return Err(ApiError::invalid(format!(
            "the metadata describes {entity_id:?}, not {:?}",
            sp.entity_id
        )));
    }
    idp.directory
        .upsert_sp_metadata(&sp.entity_id, &body.metadata_xml)
        .await?;
    let updated = sp_by_id(&idp, id).await?;
    let before = serde_json::json!({ "metadata_xml": sp.metadata_xml });
    let after = serde_json::json!({ "metadata_xml": updated.metadata_xml });
    audit(
        &idp,
        &actor,
        "sp.metadata",
        &target(&sp),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(ApiJson(sp_out(&updated, true)))
}

#[utoipa::path(put, path = "/api/v1/sps/{id}/profile", tag = "service providers",
    params(("id" = i64, Path)), request_body = ProfileIn,
    responses((status = 200, body = SpOut), (status = 502, body = ErrorBody),
        (status = "4XX", body = ErrorBody)))]
/// Replaces an SP's display name, logo and metadata source at once (`sp_registration::update_sp`):
/// a new URL or pinned certificate is fetched and checked first, and nothing changes when that fails.
async fn update_profile(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ProfileIn>,
) -> Result<ApiJson<SpOut>, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ManageSp(&sp.entity_id)).await?;
    let source = body.source.as_ref().map(SourceIo::to_source);
    // A new metadata URL or pinned certificate makes the server fetch what it names: org-wide
    // admins only (an app admin could otherwise probe internal addresses).
    if source != sp.source && !org_wide(&idp, &actor).await {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Only super and org admins may change where an SP's metadata comes from; send the \
             current `source` unchanged",
        ));
    }
    let profile = SpProfile {
        display_name: body.display_name,
        logo_url: body.logo_url,
        source,
        ..SpProfile::of(&sp)
    };
    let updated = sp_registration::update_sp(
        &idp.directory,
        &sp.entity_id,
        &profile,
        &fetch_limits(&idp),
        Utc::now(),
    )
    .await?;
    // The metadata is in the record only when the new source replaced it.
    let with_metadata = updated.metadata_xml != sp.metadata_xml;
    let (before, after) = (sp_out(&sp, with_metadata), sp_out(&updated, with_metadata));
    audit(
        &idp,
        &actor,
        "sp.profile",
        &target(&sp),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(ApiJson(shown(
        sp_out(&updated, true),
        org_wide(&idp, &actor).await,
    )))
}

#[utoipa::path(post, path = "/api/v1/sps/{id}/refresh", tag = "service providers",
    params(("id" = i64, Path)),
    responses((status = 200, body = RefreshOut), (status = "4XX", body = ErrorBody)))]
/// Refreshes an SP's metadata from its URL now. A failed fetch or check is an answer too (`outcome`
/// `failed` with the reason): it is recorded on the SP, whose last good metadata stays in use. 409
/// `no_source` for an SP whose metadata was not registered from a URL.
async fn refresh_metadata(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<ApiJson<RefreshOut>, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ManageSp(&sp.entity_id)).await?;
    let outcome = match idp.refresh_sp_metadata(&sp.entity_id).await {
        Ok(RefreshOutcome::Replaced) => "replaced",
        Ok(RefreshOutcome::Unchanged) => "unchanged",
        // Nothing was attempted or recorded: these are errors of the request, not of the refresh.
        Err(
            e @ (sp_registration::RegistrationError::NoSource(_)
            | sp_registration::RegistrationError::Directory(_)),
        ) => return Err(e.into()),
        // Recorded on the SP by `refresh_sp` (and logged there).
        Err(_) => "failed",
    };
    let updated = sp_by_id(&idp, id).await?;
    let with_metadata = updated.metadata_xml != sp.metadata_xml;
    let (before, after) = (sp_out(&sp, with_metadata), sp_out(&updated, with_metadata));
    audit(
        &idp,
        &actor,
        "sp.refresh",
        &target(&sp),
        Some(&before),
        Some(&after),
    )
    .await?;
    let wide = org_wide(&idp, &actor).await;
    let last_error = match &updated.refresh.last_error {
        Some(_) if !wide => Some(GENERIC_REFRESH_ERROR.to_owned()),
        other => other.clone(),
    };
    Ok(ApiJson(RefreshOut {
        outcome,
        last_error,
        sp: shown(sp_out(&updated, false), wide),
    }))
}

async fn set_enabled(
    idp: AppState,
    actor: Actor,
    id: i64,
    enabled: bool,
) -> Result<ApiJson<SpOut>, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ManageSp(&sp.entity_id)).await?;
    let mut settings = sp.settings.clone();
    settings.enabled = enabled;
    let action = if enabled { "sp.enable" } else { "sp.disable" };
    store_settings(&idp, &actor, &sp, &settings, action).await
}

#[utoipa::path(post, path = "/api/v1/sps/{id}/enable", tag = "service providers",
    params(("id" = i64, Path)),
    responses((status = 200, body = SpOut), (status = "4XX", body = ErrorBody)))]
/// Enables sign-in to an SP.
async fn enable_sp(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<ApiJson<SpOut>, ApiError> {
    set_enabled(idp, actor, id, true).await
}

#[utoipa::path(post, path = "/api/v1/sps/{id}/disable", tag = "service providers",
    params(("id" = i64, Path)),
    responses((status = 200, body = SpOut), (status = "4XX", body = ErrorBody)))]
/// Disables sign-in to an SP.
async fn disable_sp(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<ApiJson<SpOut>, ApiError> {
    set_enabled(idp, actor, id, false).await
}

#[utoipa::path(get, path = "/api/v1/sps/{id}/users", tag = "service providers",
    params(("id" = i64, Path)),
    responses((status = 200, body = [UserOut]), (status = "4XX", body = ErrorBody)))]
/// The users the SP is assigned to.
async fn list_sp_users(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<ApiJson<Vec<UserOut>>, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ReadSp(&sp.entity_id)).await?;
    let mut out = Vec::new();
    for user in idp.directory.list_users().await? {
        if idp
            .directory
            .is_assigned(&user.username, &sp.entity_id)
            .await?
        {
            out.push(user_out(&idp, user).await?);
        }
    }
    Ok(ApiJson(out))
}

/// Assigns (`add`) or unassigns the SP to a user.
async fn assignment(
    idp: AppState,
    actor: Actor,
    id: i64,
    username: String,
    add: bool,
) -> Result<StatusCode, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ManageSp(&sp.entity_id)).await?;
    let user = user_named(&idp, &username).await?;
    // An app admin assigning an admin would pull that admin (a super admin even) into what the app
    // admin sees and supports: admins are, to them, users that do not exist (the same 404).
    if add && !actor.is_org_wide() && !idp.directory.admin_grants_of(user.id).await?.is_empty() {
        return Err(ApiError::not_found("user", &username));
    }
    let record = serde_json::json!({ "user": username, "sp": sp.entity_id });
    if add {
        idp.directory.assign_app(&username, &sp.entity_id).await?;
        audit(
            &idp,
            &actor,
            "sp.assign",
            &target(&sp),
            NOTHING,
            Some(&record),
        )
        .await?;
    } else {
        if !idp.directory.unassign_app(&username, &sp.entity_id).await? {
            return Err(ApiError::not_found("assignment of user", &username));
        }
        audit(
            &idp,
            &actor,
            "sp.unassign",
            &target(&sp),
            Some(&record),
            NOTHING,
        )
        .await?;
    }
    Ok(no_content())
}

#[utoipa::path(put, path = "/api/v1/sps/{id}/users/{username}", tag = "service providers",
    params(("id" = i64, Path), ("username" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Assigns the SP to a user.
async fn assign_user(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath((id, username)): ApiPath<(i64, String)>,
) -> Result<StatusCode, ApiError> {
    assignment(idp, actor, id, username, true).await
}

#[utoipa::path(delete, path = "/api/v1/sps/{id}/users/{username}", tag = "service providers",
    params(("id" = i64, Path), ("username" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
/// Removes the SP's assignment to a user.
async fn unassign_user(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath((id, username)): ApiPath<(i64, String)>,
) -> Result<StatusCode, ApiError> {
    assignment(idp, actor, id, username, false).await
}

/// What an SP requires on top of its users' IP rules and policies. All fields empty: nothing extra.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessIo {
    /// The SP's own allowlist: the address must also be inside it.
    pub ip_ranges: Option<Vec<String>>,
    /// Sessions reaching the SP must include a second factor.
    #[serde(default)]
    pub require_mfa: bool,
    /// ... completed at most this many seconds ago (implies `require_mfa`).
    pub mfa_within_secs: Option<u64>,
}

fn access_io(req: Option<SpRequirement>) -> AccessIo {
    let req = req.unwrap_or_default();
    AccessIo {
        ip_ranges: req
            .ip_ranges
            .map(|r| r.iter().map(ToString::to_string).collect()),
        require_mfa: req.min.as_ref().is_some_and(|m| m.mfa),
        mfa_within_secs: req.min.and_then(|m| m.mfa_within_secs),
    }
}

#[utoipa::path(get, path = "/api/v1/sps/{id}/access", tag = "service providers",
    params(("id" = i64, Path)),
    responses((status = 200, body = AccessIo), (status = "4XX", body = ErrorBody)))]
/// What the SP requires on top of its users' rules and policies (`tessera sp-access show`).
async fn get_access(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<ApiJson<AccessIo>, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ReadSp(&sp.entity_id)).await?;
    Ok(ApiJson(access_io(
        idp.directory.get_sp_access(&sp.entity_id).await?,
    )))
}

#[utoipa::path(put, path = "/api/v1/sps/{id}/access", tag = "service providers",
    params(("id" = i64, Path)), request_body = AccessIo,
    responses((status = 200, body = AccessIo), (status = "4XX", body = ErrorBody)))]
/// Replaces the SP's access requirements (`{}` removes them). Part of the access policy: super and
/// org admins only.
async fn set_access(
    State(idp): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<AccessIo>,
) -> Result<ApiJson<AccessIo>, ApiError> {
    let sp = sp_by_id(&idp, id).await?;
    authorize(&idp, &actor, Action::ManagePolicy).await?;
    let ip_ranges = body
        .ip_ranges
        .as_ref()
        .map(|list| {
            list.iter()
                .map(|r| {
                    r.parse::<IpRange>()
                        .map_err(|e| ApiError::invalid(format!("range {r:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let min = (body.require_mfa || body.mfa_within_secs.is_some()).then_some(Requirement {
        mfa: true,
        mfa_within_secs: body.mfa_within_secs,
    });
    let req = SpRequirement { ip_ranges, min };
    req.validate(&sp.entity_id)?;
    let current = idp.directory.get_sp_access(&sp.entity_id).await?;
    // An admin who is not a super admin may not change what applies to a super admin who may use
    // this SP (the same protection as the other access-policy endpoints).
    if !actor.has(AdminRole::SuperAdmin) && current.clone().unwrap_or_default() != req {
        let affected = idp
            .directory
            .super_admins_reaching_sp(&sp.entity_id)
            .await?;
        if !affected.is_empty() {
            return Err(super::policy::affects_super_admin(&affected));
        }
    }
    let before = access_io(current);
    idp.directory.set_sp_access(&sp.entity_id, &req).await?;
    let after = access_io(idp.directory.get_sp_access(&sp.entity_id).await?);
    audit(
        &idp,
        &actor,
        "sp.access",
        &target(&sp),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(ApiJson(after))
}
