//! One error type for every handler. It maps what went wrong to an HTTP status and a page a person
//! understands; the details go to the log under a short reference that the page shows, never to the
//! client.

use std::borrow::Cow;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::idp::SsoError;
use crate::web::pages::{html, ErrorPage};

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Sso(#[from] SsoError),
    /// The SAML message could not be decoded, parsed or trusted. `detail` is logged; `message` is shown.
    #[error("bad SAML request: {detail}")]
    BadRequest {
        message: &'static str,
        detail: String,
    },
    /// A signature on the request did not verify with the SP's registered keys.
    #[error("request signature refused: {0}")]
    Signature(String),
    /// The request named an ACS URL that the SP's metadata does not list.
    #[error("ACS URL not in metadata: {0}")]
    ForeignAcs(String),
    /// The AuthnRequest ID was seen before.
    #[error("replayed request ID {0}")]
    Replay(String),
    /// The login form came back without the CSRF token of its cookie.
    #[error("CSRF token missing or wrong")]
    Csrf,
    /// A page that needs a session was asked for without one.
    #[error("not signed in")]
    NotSignedIn,
    /// A second-factor page was reached without a live half-signed-in state (expired, finished, or
    /// made for another session).
    #[error("no second-factor step in progress")]
    MfaExpired,
    /// The MFA engine failed (store, directory, configuration); wrong codes are not errors.
    #[error("MFA: {0}")]
    Mfa(#[from] crate::mfa::Error),
}

impl WebError {
    fn parts(&self) -> (StatusCode, &'static str, Cow<'_, str>, &'static str) {
        use SsoError::*;
        let (status, title, message, hint) = match self {
            WebError::Sso(IpDenied { .. }) => (
                StatusCode::FORBIDDEN,
                "Access denied",
                "Access denied from this IP address",
                "Your organisation allows sign-in only from approved networks. Contact your administrator if you need access from here.",
            ),
            WebError::Sso(PolicyNotMet { missing, .. }) => {
                return (
                    StatusCode::FORBIDDEN,
                    "More verification needed",
                    Cow::Owned(format!("Your security policy is not met: {missing}.")),
                    "Contact your administrator to set up what your policy requires.",
                )
            }
            WebError::Sso(StoreUnavailable(_) | DirectoryUnavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is temporarily unavailable",
                "Tessera cannot reach its session store or directory right now, so no one can be signed in.",
                "Please try again in a minute. If this persists, contact your administrator.",
            ),
            WebError::Sso(UnknownSp(_)) => (
                StatusCode::BAD_REQUEST,
                "Unknown application",
                "The application that sent you here is not registered with Tessera.",
                "Ask your administrator to register it.",
            ),
            WebError::Sso(SpDisabled(_)) => (
                StatusCode::FORBIDDEN,
                "Application disabled",
                "Sign-in to this application is disabled.",
                "Contact your administrator if you need it.",
            ),
            WebError::Sso(BadSpMetadata { .. }) => (
                StatusCode::BAD_GATEWAY,
                "Application misconfigured",
                "The registered metadata of this application cannot be used.",
                "Your administrator can see the details in the log under the reference below.",
            ),
            WebError::Sso(UserInactive(_)) => (
                StatusCode::FORBIDDEN,
                "Account disabled",
                "Your account is disabled, so you cannot sign in to applications.",
                "Contact your administrator.",
            ),
            WebError::Sso(NotAssigned { .. }) => (
                StatusCode::FORBIDDEN,
                "No access",
                "You don't have access to this app.",
                "Ask your administrator to assign it to you.",
            ),
            WebError::Sso(Build(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Tessera could not complete the sign-in.",
                "Please try again; the reference below helps your administrator.",
            ),
            WebError::BadRequest { message, .. } => (
                StatusCode::BAD_REQUEST,
                "Invalid sign-in request",
                *message,
                "Go back to the application and start the sign-in again.",
            ),
            WebError::Signature(_) => (
                StatusCode::FORBIDDEN,
                "Invalid sign-in request",
                "The sign-in request is not signed by the application it claims to come from.",
                "Go back to the application and start again; if it persists, tell your administrator.",
            ),
            WebError::ForeignAcs(_) => (
                StatusCode::BAD_REQUEST,
                "Invalid sign-in request",
                "The application asked Tessera to send your sign-in to an address it has not registered.",
                "Tessera refused, to protect your account. Tell your administrator.",
            ),
            WebError::Replay(_) => (
                StatusCode::BAD_REQUEST,
                "Sign-in request already used",
                "This sign-in request was already used once and cannot be used again.",
                "Go back to the application and start the sign-in again.",
            ),
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "The form expired",
                "The form was not accepted because its security token is missing or wrong.",
                "Reload the page and try again.",
            ),
            WebError::NotSignedIn => (
                StatusCode::UNAUTHORIZED,
                "Not signed in",
                "You need to sign in first.",
                "Go to the sign-in page.",
            ),
            WebError::MfaExpired => (
                StatusCode::BAD_REQUEST,
                "Sign-in expired",
                "This verification step is no longer in progress: it took too long, was finished already, or belongs to another sign-in.",
                "Go back to the application, or to the sign-in page, and start again.",
            ),
            WebError::Mfa(crate::mfa::Error::Session(_) | crate::mfa::Error::Directory(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is temporarily unavailable",
                "Tessera cannot reach its session store or directory right now, so no one can be signed in.",
                "Please try again in a minute. If this persists, contact your administrator.",
            ),
            WebError::Mfa(crate::mfa::Error::WebauthnNotConfigured | crate::mfa::Error::WebauthnNotEnrolled) => (
                StatusCode::BAD_REQUEST,
                "Security keys are not available",
                "Security keys and passkeys cannot be used here.",
                "Use another way to verify, or contact your administrator.",
            ),
            WebError::Mfa(crate::mfa::Error::NoCeremony) => (
                StatusCode::BAD_REQUEST,
                "Please try again",
                "The security key step took too long or was already used.",
                "Go back and try again.",
            ),
            WebError::Mfa(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Tessera could not check your second factor.",
                "Please try again; the reference below helps your administrator.",
            ),
        };
        (status, title, Cow::Borrowed(message), hint)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message, hint) = self.parts();
        let mut raw = [0u8; 6];
        let reference = match openssl::rand::rand_bytes(&mut raw) {
            Ok(()) => hex::encode(raw),
            Err(_) => "unavailable".to_owned(),
        };
        if status.is_server_error() {
            tracing::error!(%reference, error = %self, "request failed");
        } else {
            tracing::warn!(%reference, error = %self, "request refused");
        }
        let page = ErrorPage {
            title,
            message: &message,
            hint,
            reference: &reference,
        };
        match page.render() {
            Ok(body) => (status, html(body)).into_response(),
            Err(_) => (status, title).into_response(),
        }
    }
}
