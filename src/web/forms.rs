//! Tessera's own forms: every POST from one of our pages carries the CSRF token of its page, and the
//! [`CheckedForm`] extractor checks it before the handler runs, so no handler can forget to.

use axum::extract::{FromRequest, Request};
use axum::Form;
use serde::de::DeserializeOwned;

use super::login::{check_csrf, malformed_form};
use super::WebError;

/// A form with a `csrf_token` field.
pub trait CsrfProtected {
    /// The token the page put in the form.
    fn csrf_token(&self) -> &str;
}

/// Implements [`CsrfProtected`] for form structs whose token field is `csrf_token`.
macro_rules! csrf_protected {
    ($($form:ty),+ $(,)?) => {
        $(impl $crate::web::forms::CsrfProtected for $form {
            fn csrf_token(&self) -> &str {
                &self.csrf_token
            }
        })+
    };
}
pub(crate) use csrf_protected;

/// An `application/x-www-form-urlencoded` body whose CSRF token matched the browser's cookie. A body
/// that is not a form gets Tessera's error page; a missing or wrong token gets the "form expired" page.
pub struct CheckedForm<T>(pub T);

impl<S, T> FromRequest<S> for CheckedForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned + CsrfProtected,
{
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let Form(form) = Form::<T>::from_request(req, state)
            .await
            .map_err(malformed_form)?;
        check_csrf(&headers, form.csrf_token())?;
        Ok(CheckedForm(form))
    }
}
