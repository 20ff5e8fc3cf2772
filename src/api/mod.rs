//! The admin API: JSON over HTTP under `/api/v1`, described by the OpenAPI document at
//! `/api/v1/openapi.json`. Every route is registered through utoipa-axum's [`OpenApiRouter`] from a
//! handler carrying its `#[utoipa::path]`, so the document is generated from the very routes served and
//! cannot drift.
//!
//! Every handler takes an [`auth::Actor`] (token or admin session, IP allowlists, CSRF) and calls
//! [`auth::authorize`] before touching anything; every change is recorded in the admin audit trail
//! ([`audit`]). A request refused with a 4xx changes nothing: handlers validate everything (names
//! exist, settings valid, no self-lockout) before the first write, and a change spanning several
//! writes undoes the earlier ones when a later one fails.

mod assignment_rules;
pub mod auth;
pub mod error;
mod grants;
pub mod logins;
mod policy;
mod sps;
mod unlock;
mod users;

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa_axum::router::OpenApiRouter;

use crate::directory::AuditEntry;
use crate::web::AppState;
use auth::Actor;
pub use error::{ApiError, ErrorBody};

/// Where the API lives.
pub const PREFIX: &str = "/api/v1";

/// A JSON body whose rejection is an [`ApiError`] (JSON too).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters whose rejection is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters whose rejection is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The `confirm` query parameter of changes that could lock the acting admin out.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct Confirm {
    /// Apply the change even though it would lock the acting admin out from their current address.
    #[serde(default)]
    pub confirm: bool,
}

/// The routes with their OpenAPI operations, before the document route is added.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(users::routes())
        .merge(grants::routes())
        .merge(policy::routes())
        .merge(assignment_rules::routes())
        .merge(sps::routes())
        .merge(logins::routes())
        .merge(unlock::routes())
}

/// The OpenAPI document of every route of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_router().split_for_parts();
    doc.info.title = "Tessera admin API".to_owned();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.description = Some(
        "Administration of Tessera. Authenticate with `Authorization: Bearer tsr_...` or an admin's \
         browser session (changes then need the X-CSRF-Token header). Errors are \
         `{\"code\": ..., \"message\": ...}`."
            .to_owned(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::web::SESSION_COOKIE))),
    );
    // Either credential is accepted (OpenAPI lists alternatives as separate requirements).
    doc.security = Some(vec![
        SecurityRequirement::new("token", Vec::<String>::new()),
        SecurityRequirement::new("session", Vec::<String>::new()),
    ]);
    doc
}

/// The admin API routes (merged into [`crate::web::router`]), with `/api/v1/openapi.json` and a JSON
/// 404 for any other path under `/api/v1`.
pub fn router() -> Router<AppState> {
    let (routes, _) = api_router().split_for_parts();
    let document = openapi().to_pretty_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot serialize the OpenAPI document");
        "{}".to_owned()
    });
    let document = std::sync::Arc::new(document);
    routes
        .route(
            &format!("{PREFIX}/openapi.json"),
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document.as_str().to_owned(),
                    )
                }
            }),
        )
        .route(PREFIX, get(not_found))
        .route(
            &format!("{PREFIX}/{{*rest}}"),
            axum::routing::any(not_found),
        )
}

/// Any path under `/api/v1` that is not an endpoint.
async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "No such endpoint; see /api/v1/openapi.json",
    )
}

/// Records a change in the admin audit trail: who (`actor`), what (`action` on `target`), the item
/// before and after (`None`: it did not exist / no longer exists), when and from where.
pub async fn audit(
    idp: &AppState,
    actor: &Actor,
    action: &str,
    target: &str,
    before: Option<&impl Serialize>,
    after: Option<&impl Serialize>,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        at: 0,
        actor: actor.label(),
        action: action.to_owned(),
        target: target.to_owned(),
        before: before.map(to_json),
        after: after.map(to_json),
        client_ip: actor.ip.to_string(),
    };
    idp.directory.record_admin_change(&entry).await?;
    Ok(())
}

/// JSON text of an audit snapshot (`null` if it cannot be serialized, which our types always can).
fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// `None` for audit snapshots where the item did not exist (typed so `audit` can infer).
pub const NOTHING: Option<&()> = None;

/// 204 No Content.
pub fn no_content() -> StatusCode {
    StatusCode::NO_CONTENT
}
