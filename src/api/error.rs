//! The admin API's one error type: every failure is `{"code": "...", "message": "..."}` with a status.
//! Messages say what was wrong with the request; server-side details (SQL, driver, stack) go to the log
//! under a reference that the message carries, never to the client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::directory;
use crate::idp::SsoError;
use crate::sp_registration::RegistrationError;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code, e.g. `not_found`, `forbidden`, `ip_denied`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

/// A refused or failed API request.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// See [`ErrorBody::code`].
    pub code: &'static str,
    /// See [`ErrorBody::message`].
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request cannot be read.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no usable credentials.
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: the admin's roles do not allow this.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Your admin role does not allow this",
        )
    }

    /// 403: the client address is outside the allowlists of the acting admin.
    pub fn ip_denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "ip_denied",
            "Access denied from this IP address",
        )
    }

    /// 404 for an entry of `kind` named `name`.
    pub fn not_found(kind: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} {name:?} not found"),
        )
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422: the request is well-formed but its content is refused.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 500/503 with the details in the log only.
    fn internal(status: StatusCode, what: &dyn std::fmt::Display) -> Self {
        let mut raw = [0u8; 6];
        let reference = match openssl::rand::rand_bytes(&mut raw) {
            Ok(()) => hex::encode(raw),
            Err(_) => "unavailable".to_owned(),
        };
        tracing::error!(%reference, error = %what, "admin API request failed");
        let message = if status == StatusCode::SERVICE_UNAVAILABLE {
            "Tessera cannot reach its directory or session store right now"
        } else {
            "Internal error"
        };
        Self::new(
            status,
            if status == StatusCode::SERVICE_UNAVAILABLE {
                "unavailable"
            } else {
                "internal"
            },
            format!("{message} (reference {reference})"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::info!(status = %self.status, code = self.code, message = %self.message, "admin API request refused");
        }
        (
            self.status,
            Json(ErrorBody {
                code: self.code,
                message: self.message,
            }),
        )
            .into_response()
    }
}

impl From<directory::Error> for ApiError {
    fn from(e: directory::Error) -> Self {
        use directory::Error::*;
        match e {
            NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            DuplicateUser(_)
            | DuplicateGroup(_)
            | DuplicateRole(_)
            | DuplicateEntityId(_)
            | DuplicateCredential(_)
            | AlreadyExists(_)
            | DuplicateGrant(_) => Self::conflict("conflict", e.to_string()),
            ManagedByConfig(_) | ManagedByCli(_) => {
                Self::conflict("managed_elsewhere", e.to_string())
            }
            InvalidUsername(_) | InvalidName(_) | WeakPassword(_) | InvalidEntityId(_)
            | InvalidAttribute(_) | InvalidSettings(_) | Policy(_) | InvalidAdmin(_) => {
                Self::invalid(e.to_string())
            }
            Unavailable(_) => Self::internal(StatusCode::SERVICE_UNAVAILABLE, &e),
            _ => Self::internal(StatusCode::INTERNAL_SERVER_ERROR, &e),
        }
    }
}

impl From<SsoError> for ApiError {
    fn from(e: SsoError) -> Self {
        match e {
            SsoError::IpDenied { .. } => Self::ip_denied(),
            SsoError::DirectoryUnavailable(d) => d.into(),
            SsoError::StoreUnavailable(_) => Self::internal(StatusCode::SERVICE_UNAVAILABLE, &e),
            other => Self::internal(StatusCode::INTERNAL_SERVER_ERROR, &other),
        }
    }
}

impl From<crate::session::Error> for ApiError {
    fn from(e: crate::session::Error) -> Self {
        Self::internal(StatusCode::SERVICE_UNAVAILABLE, &e)
    }
}

impl From<crate::mfa::Error> for ApiError {
    fn from(e: crate::mfa::Error) -> Self {
        match e {
            crate::mfa::Error::Directory(d) => d.into(),
            other => Self::internal(StatusCode::SERVICE_UNAVAILABLE, &other),
        }
    }
}

impl From<crate::policy::Error> for ApiError {
    fn from(e: crate::policy::Error) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<RegistrationError> for ApiError {
    /// Metadata the admin pointed at: a URL that cannot be fetched is 502 (the SP's server failed, not
    /// the request); a URL, pin or document Tessera refuses is 422. The message names the URL and the
    /// reason, which the admin needs to fix it and which says nothing about Tessera's own internals.
    fn from(e: RegistrationError) -> Self {
        use RegistrationError::*;
        match e {
            Directory(d) => d.into(),
            NoSource(_) => Self::conflict("no_source", e.to_string()),
            Timeout { .. } | TooLarge { .. } | Status { .. } | Fetch { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "fetch_failed", e.to_string())
            }
            BadUrl { .. } | NotUtf8 | PinnedCertificate | EntityMissing(_) => {
                Self::invalid(e.to_string())
            }
            Metadata(_) => Self::invalid(format!("metadata refused: {e}")),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let status = e.status();
        let code = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "unsupported_media_type"
        } else if status == StatusCode::UNPROCESSABLE_ENTITY {
            "invalid"
        } else {
            "bad_request"
        };
        Self::new(status, code, e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}
