//! The HTTP-POST binding (saml-bindings 3.5): a base64-encoded message (no compression) in an HTML form
//! field, delivered by the browser as an `application/x-www-form-urlencoded` body.
//!
//! Signatures travel inside the XML in this binding (saml-bindings 3.5.4), so this module only decodes
//! the octets and renders the auto-submitting form.

use super::{base64_encode, decode_base64_param, Error, Limits, MessageKind, RawParams};

/// A message received by HTTP-POST, decoded but not yet parsed or trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostMessage {
    /// Whether it came as `SAMLRequest` or `SAMLResponse`, so the caller knows which parser to use.
    pub kind: MessageKind,
    /// The base64-decoded XML octets, at most `Limits::max_inflated` long; not yet parsed.
    pub xml: Vec<u8>,
    /// The decoded `RelayState`, to be returned verbatim with the answer (saml-bindings 3.5.3);
    /// `None` when absent or empty.
    pub relay_state: Option<String>,
}

/// Decodes an HTTP-POST form body (saml-bindings 3.5.4): `SAMLRequest` or `SAMLResponse`, base64 without
/// DEFLATE, plus an optional `RelayState` of at most 80 bytes (saml-bindings 3.5.3).
///
/// The body must fit `limits.max_encoded`, the decoded XML `limits.max_inflated`. Other fields are
/// ignored; a repeated SAML field is an error.
pub fn decode_post(body: &[u8], limits: &Limits) -> Result<PostMessage, Error> {
    if body.len() > limits.max_encoded {
        return Err(Error::TooLarge {
            limit: limits.max_encoded,
        });
    }
    let params = RawParams::parse(body)?;
    let (kind, raw_message) = params.message()?;
    let relay_state = params.relay_state()?;
    let xml = decode_base64_param(kind.param_name(), raw_message)?;
    if xml.len() > limits.max_inflated {
        return Err(Error::TooLarge {
            limit: limits.max_inflated,
        });
    }
    Ok(PostMessage {
        kind,
        xml,
        relay_state,
    })
}

/// The inline script that submits the form. It is a constant so that the web layer can allow exactly
/// it in a Content-Security-Policy by hash (see [`auto_submit_script_csp_source`]).
pub const AUTO_SUBMIT_SCRIPT: &str = r#"document.getElementById("saml-post").submit();"#;

/// The CSP source expression (`'sha256-…'`) that allows [`AUTO_SUBMIT_SCRIPT`] in a `script-src`.
pub fn auto_submit_script_csp_source() -> String {
    let digest = openssl::sha::sha256(AUTO_SUBMIT_SCRIPT.as_bytes());
    format!("'sha256-{}'", base64_encode(&digest))
}

/// Renders the HTML page of the HTTP-POST binding (saml-bindings 3.5.4): a form that POSTs the base64
/// message and `RelayState` to `action_url`, submitted by script on load, with a `<noscript>` submit
/// button so that it also works with JavaScript disabled. Every value is HTML-escaped.
///
/// `action_url` must be an endpoint taken from validated metadata (this function does not judge URLs);
/// `relay_state` should be the one received, which the decoders already limited to 80 bytes.
pub fn post_form_html(
    action_url: &str,
    kind: MessageKind,
    xml: &[u8],
    relay_state: Option<&str>,
) -> String {
    let relay_field = match relay_state.filter(|r| !r.is_empty()) {
        Some(relay) => format!(
            "<input type=\"hidden\" name=\"RelayState\" value=\"{}\">\n",
            html_escape(relay)
        ),
        None => String::new(),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Continue to the service</title>
</head>
<body>
<form method="post" action="{action}" id="saml-post">
<input type="hidden" name="{name}" value="{message}">
{relay_field}<noscript>
<p>JavaScript is turned off in your browser. Press Continue to go on to the service.</p>
<button type="submit">Continue</button>
</noscript>
</form>
<script>{script}</script>
</body>
</html>
"#,
        action = html_escape(action_url),
        name = kind.param_name(),
        message = html_escape(&base64_encode(xml)),
        script = AUTO_SUBMIT_SCRIPT,
    )
}

/// Escapes text for an HTML attribute value or text node (the five characters that can end either).
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::form_encode;
    use super::*;

    const XML: &[u8] = br#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_a&amp;" Version="2.0" IssueInstant="2024-01-01T00:00:00Z"/>"#;

    fn body(kind: MessageKind, xml: &[u8], relay: Option<&str>) -> String {
        let mut b = format!(
            "{}={}",
            kind.param_name(),
            form_encode(base64_encode(xml).as_bytes())
        );
        if let Some(r) = relay {
            b.push_str("&RelayState=");
            b.push_str(&form_encode(r.as_bytes()));
        }
        b
    }

    /// Pulls the value attribute of the named hidden input out of the rendered page and un-escapes it.
    fn field(html: &str, name: &str) -> Option<String> {
        let start = html.find(&format!("name=\"{name}\" value=\""))? + name.len() + 15;
        let end = start + html[start..].find('"')?;
        Some(
            html[start..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&"),
        )
    }

    #[test]
    fn decodes_form_body() {
        let msg = decode_post(
            body(MessageKind::Request, XML, Some("a b&c")).as_bytes(),
            &Limits::DEFAULT,
        )
        .unwrap();
        assert_eq!(msg.kind, MessageKind::Request);
        assert_eq!(msg.xml, XML);
        assert_eq!(msg.relay_state.as_deref(), Some("a b&c"));
        let msg = decode_post(
            body(MessageKind::Response, XML, None).as_bytes(),
            &Limits::DEFAULT,
        )
        .unwrap();
        assert_eq!(msg.kind, MessageKind::Response);
        assert_eq!(msg.relay_state, None);
    }

    #[test]
    fn tolerates_wrapped_base64() {
        let b64 = base64_encode(XML);
        let (a, b) = b64.split_at(40);
        let wrapped = format!("{a}\r\n{b}\n");
        let body = format!("SAMLResponse={}", form_encode(wrapped.as_bytes()));
        assert!(body.contains("%0D%0A"));
        assert_eq!(
            decode_post(body.as_bytes(), &Limits::DEFAULT).unwrap().xml,
            XML
        );
    }

    #[test]
    fn limits() {
        let body = body(MessageKind::Request, XML, None);
        let tight_body = Limits {
            max_inflated: 1_000_000,
            max_encoded: body.len() - 1,
        };
        assert_eq!(
            decode_post(body.as_bytes(), &tight_body).unwrap_err(),
            Error::TooLarge {
                limit: body.len() - 1
            }
        );
        let tight_xml = Limits {
            max_inflated: XML.len() - 1,
            max_encoded: 1_000_000,
        };
        assert_eq!(
            decode_post(body.as_bytes(), &tight_xml).unwrap_err(),
            Error::TooLarge {
                limit: XML.len() - 1
            }
        );
        let exact = Limits {
            max_inflated: XML.len(),
            max_encoded: body.len(),
        };
        assert_eq!(decode_post(body.as_bytes(), &exact).unwrap().xml, XML);
    }

    #[test]
    fn malformed_bodies_get_specific_errors() {
        let good = body(MessageKind::Request, XML, None);
        let l = Limits::DEFAULT;
        let b64 = base64_encode(XML);
        let truncated = format!(
            "SAMLRequest={}",
            form_encode(&b64.as_bytes()[..b64.len() - 2])
        );
        assert_eq!(
            decode_post(truncated.as_bytes(), &l).unwrap_err(),
            Error::BadBase64("SAMLRequest")
        );
        assert_eq!(
            decode_post(format!("{good}&{good}").as_bytes(), &l).unwrap_err(),
            Error::DuplicateParameter("SAMLRequest")
        );
        let resp = body(MessageKind::Response, XML, None);
        assert_eq!(
            decode_post(format!("{good}&{resp}").as_bytes(), &l).unwrap_err(),
            Error::BothMessages
        );
        assert_eq!(
            decode_post(b"RelayState=x&other=y", &l).unwrap_err(),
            Error::MissingMessage
        );
        assert_eq!(
            decode_post(
                body(MessageKind::Request, XML, Some(&"é".repeat(41))).as_bytes(),
                &l
            )
            .unwrap_err(),
            Error::RelayStateTooLong { len: 82 }
        );
        assert_eq!(
            decode_post(b"SAMLRequest=QUJD%zz", &l).unwrap_err(),
            Error::BadPercentEncoding("SAMLRequest")
        );
    }

    #[test]
    fn form_round_trips_and_escapes() {
        let relay = r#""><script>alert('x')</script>&"#;
        let html = post_form_html(
            "https://sp.example/acs?a=1&b=\"2\"",
            MessageKind::Response,
            XML,
            Some(relay),
        );
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("action=\"https://sp.example/acs?a=1&amp;b=&quot;2&quot;\""));
        assert_eq!(field(&html, "RelayState").as_deref(), Some(relay));
        // The rendered fields decode back to the message, as a browser would post them.
        let posted = format!(
            "SAMLResponse={}&RelayState={}",
            form_encode(field(&html, "SAMLResponse").unwrap().as_bytes()),
            form_encode(field(&html, "RelayState").unwrap().as_bytes())
        );
        let msg = decode_post(posted.as_bytes(), &Limits::DEFAULT).unwrap();
        assert_eq!(msg.xml, XML);
        assert_eq!(msg.relay_state.as_deref(), Some(relay));
        assert_eq!(field(&html, "SAMLRequest"), None);
    }

    #[test]
    fn form_works_without_javascript() {
        let html = post_form_html("https://sp.example/acs", MessageKind::Request, XML, None);
        assert!(!html.contains("RelayState"));
        let form_start = html.find("<form method=\"post\"").unwrap();
        let form_end = html.find("</form>").unwrap();
        let noscript = html.find("<noscript>").unwrap();
        let button = html.find("<button type=\"submit\">").unwrap();
        let noscript_end = html.find("</noscript>").unwrap();
        // The button is inside <noscript>, which is inside the form: without script it submits it.
        assert!(form_start < noscript && noscript < button && button < noscript_end);
        assert!(noscript_end < form_end);
        assert!(html.contains(&format!("<script>{AUTO_SUBMIT_SCRIPT}</script>")));
        assert!(AUTO_SUBMIT_SCRIPT.contains("\"saml-post\""));
        assert!(html.contains("id=\"saml-post\""));
    }

    #[test]
    fn csp_hash_is_of_the_script() {
        // echo -n 'document.getElementById("saml-post").submit();' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            auto_submit_script_csp_source(),
            "'sha256-ksB5vsbtOSDHP3+3MQXO5kgqYynnF2d2wynVl+zrIr4='"
        );
    }
}
