//! The SAML SOAP binding (saml-bindings 3.2): a protocol message as the only child of a SOAP 1.1
//! `Body`, sent in an HTTP POST whose answer carries the response the same way.
//!
//! Tessera uses it for the back channel of single logout (saml-profiles 4.4.3.3): it sends a
//! LogoutRequest to each SP and reads the LogoutResponse from the HTTP answer. Like the rest of `binding`,
//! this module only moves octets: the IO is the caller's, the message itself is parsed and verified by
//! [`crate::saml::logout`].

use crate::saml::xml::{self, Element, Limits, NsDecl};

/// SOAP 1.1 envelope namespace (saml-bindings 3.2.3.1: SOAP 1.1 is the version SAML uses).
pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// saml-bindings 3.2.2.1: the binding URI, as SPs name it in metadata.
pub const BINDING_SOAP: &str = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP";

/// saml-bindings 3.2.3.3: the `SOAPAction` value a SAML requester may send.
pub const SOAP_ACTION: &str = "http://www.oasis-open.org/committees/security";

/// Why a SOAP answer could not be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    /// The body is not well-formed XML within the limits.
    #[error("SOAP envelope: {0}")]
    Xml(#[source] xml::Error),
    /// The root is not a SOAP 1.1 `Envelope`.
    #[error("not a SOAP 1.1 Envelope")]
    NotEnvelope,
    /// The envelope has no `Body`, or more than one.
    #[error("SOAP envelope without exactly one Body")]
    NoBody,
    /// saml-bindings 3.2.3.2: the responder answered with a SOAP fault instead of a SAML message.
    #[error("SOAP fault: {0}")]
    Fault(String),
    /// saml-bindings 3.2.3.1: the Body must hold exactly one SAML message element.
    #[error("SOAP Body holds {0} elements, not one SAML message")]
    BodyContent(usize),
}

/// A SOAP 1.1 envelope around `message` (saml-bindings 3.2.3.1: the SAML element is the only child of
/// `Body`, no SOAP headers are required). The message must be complete (signed, if it is signed).
pub fn soap_envelope(message: Element) -> String {
    let envelope = Element::new("soap", "Envelope", SOAP_ENV)
        .declare("soap", SOAP_ENV)
        .with_child(Element::new("soap", "Body", SOAP_ENV).with_child(message));
    envelope.to_xml()
}

/// The SAML message inside a SOAP 1.1 envelope, serialized on its own so it can go through the same
/// parser and signature check as a message from any other binding. Namespace declarations it inherits
/// from `Envelope` or `Body` are copied onto it, so the canonical form (and the signature) is unchanged.
pub fn unwrap_soap(body: &[u8], limits: &Limits) -> Result<Vec<u8>, SoapError> {
    let root = xml::parse(body, limits).map_err(SoapError::Xml)?;
    if !root.is(SOAP_ENV, "Envelope") {
        return Err(SoapError::NotEnvelope);
    }
    let mut bodies = root.children_named(SOAP_ENV, "Body");
    let soap_body = bodies.next().ok_or(SoapError::NoBody)?;
    if bodies.next().is_some() {
        return Err(SoapError::NoBody);
    }
    let children: Vec<&Element> = soap_body.elements().collect();
    if let Some(fault) = children.iter().find(|e| e.is(SOAP_ENV, "Fault")) {
        // SOAP 1.1 4.4: faultstring is the human-readable explanation.
        let text = fault
            .elements()
            .find(|e| e.local == "faultstring")
            .and_then(|e| e.text().ok())
            .unwrap_or_default();
        return Err(SoapError::Fault(text.chars().take(200).collect()));
    }
    let [message] = children.as_slice() else {
        return Err(SoapError::BodyContent(children.len()));
    };
    let mut message = (*message).clone();
    for inherited in root.ns_decls.iter().chain(soap_body.ns_decls.iter()).rev() {
        if !message
            .ns_decls
            .iter()
            .any(|d: &NsDecl| d.prefix == inherited.prefix)
        {
            message.ns_decls.push(inherited.clone());
        }
    }
    Ok(message.to_xml().into_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::saml::xml::ns;

    #[test]
    fn wraps_and_unwraps() {
        let message = Element::new("samlp", "LogoutResponse", ns::SAMLP)
            .declare("samlp", ns::SAMLP)
            .with_attr("ID", "_1");
        let soap = soap_envelope(message.clone());
        assert!(soap.starts_with(r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><samlp:LogoutResponse"#));
        let inner = unwrap_soap(soap.as_bytes(), &Limits::default()).unwrap();
        // The envelope's declaration comes along; exclusive c14n drops it again as unused.
        assert_eq!(
            String::from_utf8(inner).unwrap(),
            format!(
                r#"<samlp:LogoutResponse xmlns:samlp="{}" xmlns:soap="{SOAP_ENV}" ID="_1"/>"#,
                ns::SAMLP
            )
        );
    }

    #[test]
    fn copies_inherited_declarations() {
        let soap = format!(
            r#"<S:Envelope xmlns:S="{SOAP_ENV}" xmlns:p="{}"><S:Body><p:LogoutResponse ID="_1"/></S:Body></S:Envelope>"#,
            ns::SAMLP
        );
        let inner = unwrap_soap(soap.as_bytes(), &Limits::default()).unwrap();
        let parsed = xml::parse(&inner, &Limits::default()).unwrap();
        assert!(parsed.is(ns::SAMLP, "LogoutResponse"));
    }

    #[test]
    fn refuses_faults_and_odd_bodies() {
        let fault = format!(
            r#"<S:Envelope xmlns:S="{SOAP_ENV}"><S:Body><S:Fault><faultcode>S:Server</faultcode><faultstring>down</faultstring></S:Fault></S:Body></S:Envelope>"#
        );
        assert_eq!(
            unwrap_soap(fault.as_bytes(), &Limits::default()),
            Err(SoapError::Fault("down".into()))
        );
        let two =
            format!(r#"<S:Envelope xmlns:S="{SOAP_ENV}"><S:Body><a/><b/></S:Body></S:Envelope>"#);
        assert_eq!(
            unwrap_soap(two.as_bytes(), &Limits::default()),
            Err(SoapError::BodyContent(2))
        );
        assert_eq!(
            unwrap_soap(b"<Envelope/>", &Limits::default()),
            Err(SoapError::NotEnvelope)
        );
    }
}
