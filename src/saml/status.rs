//! The `<samlp:Status>` of a SAML response (saml-core 3.2.2.1 - 3.2.2.3).
//!
//! Every response Tessera sends (a `Response` to an AuthnRequest, a `LogoutResponse`) carries one, and
//! every `LogoutResponse` an SP sends back is judged by one. Codes are enums rather than strings so that a
//! typo cannot produce a status URI no SP understands, and so that the top level, which saml-core
//! restricts to four values, cannot hold anything else.

use crate::saml::xml::{self, ns, Element};

/// The URI prefix shared by every status code saml-core defines (saml-core 3.2.2.2).
const STATUS_PREFIX: &str = "urn:oasis:names:tc:SAML:2.0:status:";

/// Why a `<samlp:Status>` element was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// The element handed in is not `samlp:Status`.
    #[error("expected <samlp:Status>, found <{0}>")]
    NotStatus(String),
    /// saml-core 3.2.2.1: `<StatusCode>` is required inside `<Status>`.
    #[error("<samlp:Status> has no <samlp:StatusCode>")]
    MissingStatusCode,
    /// saml-core 3.2.2.1: at most one `<StatusCode>`, `<StatusMessage>`, `<StatusDetail>`.
    #[error("<samlp:Status> holds more than one <samlp:{0}>")]
    Duplicate(&'static str),
    /// saml-core 3.2.2.2: `Value` is required on every `<StatusCode>`.
    #[error("<samlp:StatusCode> has no Value")]
    MissingValue,
    /// saml-core 3.2.2.2: the top-level code MUST be one of the four top-level values.
    #[error("`{0}` is not a top-level status code")]
    NotTopLevel(String),
    /// A child of `<Status>` or `<StatusCode>` that the schema does not allow there.
    #[error("unexpected <{0}> inside the status")]
    UnexpectedElement(String),
    /// A `<StatusMessage>` holding comments or child elements (see [`Element::text`]).
    #[error("status message: {0}")]
    Message(#[source] xml::Error),
}

/// A top-level status code (saml-core 3.2.2.2). Only these four may appear at the top level; anything
/// more precise goes into the second level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// The request succeeded.
    Success,
    /// The request could not be performed due to an error on the part of the requester.
    Requester,
    /// The request could not be performed due to an error on the part of the responder (us).
    Responder,
    /// The SAML responder could not process the request because its version was incorrect.
    VersionMismatch,
}

impl StatusCode {
    /// All top-level codes, for tests and exhaustive tables.
    pub const ALL: [StatusCode; 4] = [
        StatusCode::Success,
        StatusCode::Requester,
        StatusCode::Responder,
        StatusCode::VersionMismatch,
    ];

    /// The code's URI as written in `StatusCode/@Value`.
    pub fn uri(self) -> &'static str {
        match self {
            StatusCode::Success => "urn:oasis:names:tc:SAML:2.0:status:Success",
            StatusCode::Requester => "urn:oasis:names:tc:SAML:2.0:status:Requester",
            StatusCode::Responder => "urn:oasis:names:tc:SAML:2.0:status:Responder",
            StatusCode::VersionMismatch => "urn:oasis:names:tc:SAML:2.0:status:VersionMismatch",
        }
    }

    /// The top-level code with exactly this URI (URIs compare as strings), if it is one.
    pub fn from_uri(uri: &str) -> Option<StatusCode> {
        StatusCode::ALL.into_iter().find(|c| c.uri() == uri)
    }
}

/// A second-level status code (saml-core 3.2.2.2), refining the top-level one. saml-core lets other
/// specifications define more, so an unknown URI is kept as [`SubStatusCode::Other`] rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubStatusCode {
    /// The responding provider was unable to successfully authenticate the principal.
    AuthnFailed,
    /// Unexpected or invalid content was encountered within an `<Attribute>` or `<AttributeValue>`.
    InvalidAttrNameOrValue,
    /// The responding provider cannot or will not support the requested name identifier policy.
    InvalidNameIdPolicy,
    /// The specified authentication context requirements cannot be met by the responder.
    NoAuthnContext,
    /// Used by an intermediary to indicate that none of the supported identity providers are available.
    NoAvailableIdp,
    /// The responding provider cannot authenticate the principal passively, as requested.
    NoPassive,
    /// Used by an intermediary to indicate that none of the identity providers in an `<IDPList>` are
    /// supported by the intermediary.
    NoSupportedIdp,
    /// Used by a session authority to indicate that it was not able to propagate logout to all other
    /// session participants.
    PartialLogout,
    /// A provider cannot authenticate the principal directly and is not permitted to proxy the request.
    ProxyCountExceeded,
    /// The SAML responder or SAML authority is able to process the request but has chosen not to respond.
    RequestDenied,
    /// The SAML responder or SAML authority does not support the request.
    RequestUnsupported,
    /// The responder cannot process any requests with the protocol version specified in the request.
    RequestVersionDeprecated,
    /// The request's protocol version is too high for the responder.
    RequestVersionTooHigh,
    /// The request's protocol version is too low for the responder.
    RequestVersionTooLow,
    /// The resource value provided in the request message is invalid or unrecognized.
    ResourceNotRecognized,
    /// The response message would contain more elements than the SAML responder is able to return.
    TooManyResponses,
    /// An entity that has no knowledge of a particular attribute profile has been presented with an
    /// attribute drawn from that profile.
    UnknownAttrProfile,
    /// The responding provider does not recognize the principal specified or implied by the request.
    UnknownPrincipal,
    /// The SAML responder cannot properly fulfill the request using the protocol binding specified.
    UnsupportedBinding,
    /// A code saml-core does not define, kept verbatim (other specifications may define codes).
    Other(String),
}

/// The second-level codes saml-core 3.2.2.2 defines, in its order.
const KNOWN_SUB_CODES: [SubStatusCode; 19] = [
    SubStatusCode::AuthnFailed,
    SubStatusCode::InvalidAttrNameOrValue,
    SubStatusCode::InvalidNameIdPolicy,
    SubStatusCode::NoAuthnContext,
    SubStatusCode::NoAvailableIdp,
    SubStatusCode::NoPassive,
    SubStatusCode::NoSupportedIdp,
    SubStatusCode::PartialLogout,
    SubStatusCode::ProxyCountExceeded,
    SubStatusCode::RequestDenied,
    SubStatusCode::RequestUnsupported,
    SubStatusCode::RequestVersionDeprecated,
    SubStatusCode::RequestVersionTooHigh,
    SubStatusCode::RequestVersionTooLow,
    SubStatusCode::ResourceNotRecognized,
    SubStatusCode::TooManyResponses,
    SubStatusCode::UnknownAttrProfile,
    SubStatusCode::UnknownPrincipal,
    SubStatusCode::UnsupportedBinding,
];

impl SubStatusCode {
    /// The code's URI as written in `StatusCode/@Value`.
    pub fn uri(&self) -> &str {
        match self {
            SubStatusCode::AuthnFailed => "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed",
            SubStatusCode::InvalidAttrNameOrValue => {
                "urn:oasis:names:tc:SAML:2.0:status:InvalidAttrNameOrValue"
            }
            SubStatusCode::InvalidNameIdPolicy => {
                "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
            }
            SubStatusCode::NoAuthnContext => "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext",
            SubStatusCode::NoAvailableIdp => "urn:oasis:names:tc:SAML:2.0:status:NoAvailableIDP",
            SubStatusCode::NoPassive => "urn:oasis:names:tc:SAML:2.0:status:NoPassive",
            SubStatusCode::NoSupportedIdp => "urn:oasis:names:tc:SAML:2.0:status:NoSupportedIDP",
            SubStatusCode::PartialLogout => "urn:oasis:names:tc:SAML:2.0:status:PartialLogout",
            SubStatusCode::ProxyCountExceeded => {
                "urn:oasis:names:tc:SAML:2.0:status:ProxyCountExceeded"
            }
            SubStatusCode::RequestDenied => "urn:oasis:names:tc:SAML:2.0:status:RequestDenied",
            SubStatusCode::RequestUnsupported => {
                "urn:oasis:names:tc:SAML:2.0:status:RequestUnsupported"
            }
            SubStatusCode::RequestVersionDeprecated => {
                "urn:oasis:names:tc:SAML:2.0:status:RequestVersionDeprecated"
            }
            SubStatusCode::RequestVersionTooHigh => {
                "urn:oasis:names:tc:SAML:2.0:status:RequestVersionTooHigh"
            }
            SubStatusCode::RequestVersionTooLow => {
                "urn:oasis:names:tc:SAML:2.0:status:RequestVersionTooLow"
            }
            SubStatusCode::ResourceNotRecognized => {
                "urn:oasis:names:tc:SAML:2.0:status:ResourceNotRecognized"
            }
            SubStatusCode::TooManyResponses => {
                "urn:oasis:names:tc:SAML:2.0:status:TooManyResponses"
            }
            SubStatusCode::UnknownAttrProfile => {
                "urn:oasis:names:tc:SAML:2.0:status:UnknownAttrProfile"
            }
            SubStatusCode::UnknownPrincipal => {
                "urn:oasis:names:tc:SAML:2.0:status:UnknownPrincipal"
            }
            SubStatusCode::UnsupportedBinding => {
                "urn:oasis:names:tc:SAML:2.0:status:UnsupportedBinding"
            }
            SubStatusCode::Other(uri) => uri,
        }
    }

    /// The code for this URI: one saml-core defines, or [`SubStatusCode::Other`].
    pub fn from_uri(uri: &str) -> SubStatusCode {
        if uri.starts_with(STATUS_PREFIX) {
            if let Some(known) = KNOWN_SUB_CODES.iter().find(|c| c.uri() == uri) {
                return known.clone();
            }
        }
        SubStatusCode::Other(uri.to_owned())
    }
}

/// A protocol status: what a response says about the request it answers (saml-core 3.2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The top-level code, which every SP understands.
    pub top: StatusCode,
    /// The optional refinement, nested inside the top-level `<StatusCode>` (saml-core 3.2.2.2). Deeper
    /// levels are not modelled: no SP Tessera serves acts on them.
    pub second: Option<SubStatusCode>,
    /// saml-core 3.2.2.3: a message "which MAY be returned to an operator". Never put internal detail here,
    /// it travels through the user's browser.
    pub message: Option<String>,
}

impl Status {
    /// `Success` with nothing more.
    pub fn success() -> Status {
        Status {
            top: StatusCode::Success,
            second: None,
            message: None,
        }
    }

    /// A status with a top-level and a second-level code and no message.
    pub fn error(top: StatusCode, second: SubStatusCode) -> Status {
        Status {
            top,
            second: Some(second),
            message: None,
        }
    }

    /// The same status with an operator-facing message.
    pub fn with_message(mut self, message: impl Into<String>) -> Status {
        self.message = Some(message.into());
        self
    }

    /// True when the top-level code is `Success`.
    pub fn is_success(&self) -> bool {
        self.top == StatusCode::Success
    }

    /// The top-level and second-level code URIs, space-separated (nothing after the space when there
    /// is no second level), to say in a log or an error which status a peer answered.
    pub fn codes(&self) -> String {
        format!(
            "{} {}",
            self.top.uri(),
            self.second.as_ref().map(|s| s.uri()).unwrap_or_default()
        )
    }

    /// `<samlp:Status>` with the nested `<samlp:StatusCode>` and an optional `<samlp:StatusMessage>`.
    /// The `samlp` prefix is not declared here: the enclosing response declares it on its root.
    pub fn to_element(&self) -> Element {
        let mut code =
            Element::new("samlp", "StatusCode", ns::SAMLP).with_attr("Value", self.top.uri());
        if let Some(second) = &self.second {
            code = code.with_child(
                Element::new("samlp", "StatusCode", ns::SAMLP).with_attr("Value", second.uri()),
            );
        }
        let mut status = Element::new("samlp", "Status", ns::SAMLP).with_child(code);
        if let Some(message) = &self.message {
            status = status.with_child(
                Element::new("samlp", "StatusMessage", ns::SAMLP).with_text(message.clone()),
            );
        }
        status
    }

    /// Reads a `<samlp:Status>` element: `StatusCode`, then an optional `StatusMessage`, then an optional
    /// `StatusDetail` whose content is ignored (saml-core 3.2.2.4 leaves it to the application).
    pub fn from_element(element: &Element) -> Result<Status, StatusError> {
        if !element.is(ns::SAMLP, "Status") {
            return Err(StatusError::NotStatus(element.local.clone()));
        }
        let mut code: Option<&Element> = None;
        let mut message: Option<String> = None;
        let mut detail_seen = false;
        for child in element.elements() {
            // saml-core 3.2.2.1: the sequence is StatusCode, StatusMessage?, StatusDetail?.
            if child.is(ns::SAMLP, "StatusCode") {
                if code.is_some() {
                    return Err(StatusError::Duplicate("StatusCode"));
                }
                code = Some(child);
            } else if child.is(ns::SAMLP, "StatusMessage") && code.is_some() && !detail_seen {
                if message.is_some() {
                    return Err(StatusError::Duplicate("StatusMessage"));
                }
                message = Some(child.text().map_err(StatusError::Message)?);
            } else if child.is(ns::SAMLP, "StatusDetail") && code.is_some() {
                if detail_seen {
                    return Err(StatusError::Duplicate("StatusDetail"));
                }
                detail_seen = true;
            } else {
                return Err(StatusError::UnexpectedElement(child.local.clone()));
            }
        }
        let code = code.ok_or(StatusError::MissingStatusCode)?;
        let top_uri = code.attr("Value").ok_or(StatusError::MissingValue)?;
        let top = StatusCode::from_uri(top_uri)
            .ok_or_else(|| StatusError::NotTopLevel(top_uri.to_owned()))?;
        let mut second = None;
        for nested in code.elements() {
            if !nested.is(ns::SAMLP, "StatusCode") {
                return Err(StatusError::UnexpectedElement(nested.local.clone()));
            }
            if second.is_some() {
                return Err(StatusError::Duplicate("StatusCode"));
            }
            second = Some(SubStatusCode::from_uri(
                nested.attr("Value").ok_or(StatusError::MissingValue)?,
            ));
        }
        Ok(Status {
            top,
            second,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::saml::xml::{parse, Limits};

    fn parse_status(inner: &str) -> Result<Status, StatusError> {
        let xml = format!(
            r#"<samlp:Status xmlns:samlp="{}">{inner}</samlp:Status>"#,
            ns::SAMLP
        );
        Status::from_element(&parse(xml.as_bytes(), &Limits::default()).unwrap())
    }

    #[test]
    fn uris_follow_saml_core() {
        assert_eq!(
            StatusCode::Success.uri(),
            "urn:oasis:names:tc:SAML:2.0:status:Success"
        );
        assert_eq!(
            SubStatusCode::InvalidNameIdPolicy.uri(),
            "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
        );
        assert_eq!(
            SubStatusCode::NoAvailableIdp.uri(),
            "urn:oasis:names:tc:SAML:2.0:status:NoAvailableIDP"
        );
        for code in StatusCode::ALL {
            assert_eq!(StatusCode::from_uri(code.uri()), Some(code));
        }
        for code in KNOWN_SUB_CODES {
            assert!(code.uri().starts_with(STATUS_PREFIX));
            assert_eq!(SubStatusCode::from_uri(code.uri()), code);
        }
        assert_eq!(
            StatusCode::from_uri("urn:oasis:names:tc:SAML:2.0:status:NoPassive"),
            None
        );
        assert_eq!(
            SubStatusCode::from_uri("urn:example:custom"),
            SubStatusCode::Other("urn:example:custom".into())
        );
    }

    #[test]
    fn builds_nested_codes_and_message() {
        let status = Status::error(StatusCode::Responder, SubStatusCode::NoPassive)
            .with_message("login needed & <none> done");
        let root = Element::new("samlp", "LogoutResponse", ns::SAMLP)
            .declare("samlp", ns::SAMLP)
            .with_child(status.to_element());
        let xml = root.to_xml();
        assert!(xml.contains(
            r#"<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:NoPassive"/></samlp:StatusCode><samlp:StatusMessage>login needed &amp; &lt;none&gt; done</samlp:StatusMessage></samlp:Status>"#
        ));
        let back = parse(xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            Status::from_element(back.elements().next().unwrap()).unwrap(),
            status
        );
    }

    #[test]
    fn parses_success_and_custom_second_level() {
        let ok = parse_status(
            r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>"#,
        )
        .unwrap();
        assert!(ok.is_success());
        assert_eq!(ok, Status::success());
        let custom = parse_status(
            r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Requester"><samlp:StatusCode Value="urn:x:y"/></samlp:StatusCode><samlp:StatusDetail><any/></samlp:StatusDetail>"#,
        )
        .unwrap();
        assert_eq!(custom.second, Some(SubStatusCode::Other("urn:x:y".into())));
    }

    #[test]
    fn refuses_malformed_status() {
        assert_eq!(parse_status(""), Err(StatusError::MissingStatusCode));
        assert_eq!(
            parse_status("<samlp:StatusCode/>"),
            Err(StatusError::MissingValue)
        );
        assert_eq!(
            parse_status(
                r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:NoPassive"/>"#
            ),
            Err(StatusError::NotTopLevel(
                "urn:oasis:names:tc:SAML:2.0:status:NoPassive".into()
            ))
        );
        let success = r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>"#;
        assert_eq!(
            parse_status(&format!("{success}{success}")),
            Err(StatusError::Duplicate("StatusCode"))
        );
        assert_eq!(
            parse_status(&format!(
                "{success}<samlp:StatusMessage>a<!---->b</samlp:StatusMessage>"
            )),
            Err(StatusError::Message(xml::Error::MixedContent(
                "StatusMessage".into()
            )))
        );
        assert_eq!(
            parse_status(&format!(
                "<samlp:StatusMessage>x</samlp:StatusMessage>{success}"
            )),
            Err(StatusError::UnexpectedElement("StatusMessage".into()))
        );
        let not_status = parse(b"<Status/>", &Limits::default()).unwrap();
        assert_eq!(
            Status::from_element(&not_status),
            Err(StatusError::NotStatus("Status".into()))
        );
    }
}
