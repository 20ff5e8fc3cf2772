//! HTTP bindings: how SAML messages travel in URLs and forms (saml-bindings 3.4, 3.5).
//!
//! `redirect` decodes and encodes the HTTP-Redirect (DEFLATE) binding, including its query-string
//! signature; `post` decodes form bodies and renders the auto-submitting form of the HTTP-POST binding.
//! This module only moves octets: it never parses the XML, does no IO and never reads the clock.
//! Size limits are enforced before and during decoding so that a hostile message costs at most
//! [`Limits`] worth of memory.

pub mod post;
pub mod redirect;
pub mod soap;

pub use post::{decode_post, post_form_html, PostMessage};
pub use redirect::{decode_redirect, encode_redirect, RedirectMessage, RedirectSignature};

use base64::Engine as _;

use crate::saml::xmldsig::algorithms::AlgorithmError;

/// The `RelayState` limit: "MUST NOT exceed 80 bytes in length" (saml-bindings 3.4.3, 3.5.3).
pub const MAX_RELAY_STATE: usize = 80;

/// Why a bound message was refused. Each variant is one rule, so callers can map them to precise
/// responses and tests can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Neither `SAMLRequest` nor `SAMLResponse` was present.
    #[error("no SAMLRequest or SAMLResponse parameter")]
    MissingMessage,
    /// Both `SAMLRequest` and `SAMLResponse` were present; a binding carries one message.
    #[error("both SAMLRequest and SAMLResponse present")]
    BothMessages,
    /// A parameter this binding reads appeared more than once; which one to trust would be a guess.
    #[error("parameter {0} appears more than once")]
    DuplicateParameter(&'static str),
    /// A `%` not followed by two hex digits in the named parameter.
    #[error("bad percent-encoding in {0}")]
    BadPercentEncoding(&'static str),
    /// The named parameter is not valid (padded, standard-alphabet) base64.
    #[error("bad base64 in {0}")]
    BadBase64(&'static str),
    /// The named parameter must be text (RelayState, SigAlg) but is not UTF-8.
    #[error("{0} is not UTF-8")]
    BadUtf8(&'static str),
    /// The encoded input or the decoded message exceeds the configured limit (bytes).
    #[error("message exceeds the size limit of {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded, so logs say which one.
        limit: usize,
    },
    /// The DEFLATE data is corrupt or truncated (saml-bindings 3.4.4.1 requires RFC 1951 DEFLATE).
    #[error("cannot inflate message: {0}")]
    Inflate(String),
    /// Compressing an outgoing message failed.
    #[error("cannot deflate message: {0}")]
    Deflate(String),
    /// A `SAMLEncoding` other than DEFLATE (saml-bindings 3.4.4), the only one defined.
    #[error("unsupported SAMLEncoding {0}")]
    UnsupportedEncoding(String),
    /// `Signature` without `SigAlg`: the signature cannot be checked (saml-bindings 3.4.4.1).
    #[error("Signature present without SigAlg")]
    MissingSigAlg,
    /// `SigAlg` without `Signature`: an inconsistent message, refused rather than treated as unsigned.
    #[error("SigAlg present without Signature")]
    MissingSignature,
    /// The signature algorithm is not on the allowlist (or is SHA-1 and SHA-1 is not allowed).
    #[error("signature algorithm not allowed: {0}")]
    DisallowedAlgorithm(String),
    /// No key verified the signature.
    #[error("signature does not verify")]
    BadSignature,
    /// None of the keys (or the signing key) is of the family the algorithm needs.
    #[error("no key of the type required by the signature algorithm")]
    KeyAlgorithmMismatch,
    /// Verification was asked for with an empty key list; metadata provided no signing key.
    #[error("no verification keys")]
    NoVerificationKeys,
    /// `RelayState` is longer than 80 bytes (saml-bindings 3.4.3, 3.5.3).
    #[error("RelayState is {len} bytes, over the 80-byte limit")]
    RelayStateTooLong {
        /// The decoded length, for the log line.
        len: usize,
    },
    /// The destination URL cannot carry a query string (it has a fragment, or is empty).
    #[error("unusable destination URL {0:?}")]
    BadDestination(String),
    /// OpenSSL failed while signing or verifying (not a wrong signature: an operational failure).
    #[error("crypto failure: {0}")]
    Crypto(String),
}

impl From<AlgorithmError> for Error {
    fn from(e: AlgorithmError) -> Self {
        match e {
            AlgorithmError::KeyMismatch(_) => Error::KeyAlgorithmMismatch,
            AlgorithmError::MalformedEcdsaSignature(_) => Error::BadSignature,
            AlgorithmError::Crypto(s) => Error::Crypto(s),
        }
    }
}

/// Size limits for received messages, so a hostile sender cannot make Tessera allocate without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decoded XML message accepted, in bytes: bounds the DEFLATE output (a deflate bomb
    /// stops here) and the base64 output of the POST binding.
    pub max_inflated: usize,
    /// Largest raw input accepted, in bytes: the whole query string (Redirect) or form body (POST),
    /// checked before any decoding starts.
    pub max_encoded: usize,
}

impl Limits {
    /// 256 KiB of XML and 128 KiB on the wire: far above any real AuthnRequest or LogoutRequest
    /// (a few KiB even with a certificate), far below anything that strains the server.
    pub const DEFAULT: Limits = Limits {
        max_inflated: 256 * 1024,
        max_encoded: 128 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Which kind of protocol message a binding carries; it decides the parameter name
/// (saml-bindings 3.4.4, 3.5.4: `SAMLRequest` or `SAMLResponse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A request (AuthnRequest, LogoutRequest...), sent as `SAMLRequest`.
    Request,
    /// A response (Response, LogoutResponse...), sent as `SAMLResponse`.
    Response,
}

impl MessageKind {
    /// The form or query parameter name for this kind.
    pub fn param_name(self) -> &'static str {
        match self {
            MessageKind::Request => "SAMLRequest",
            MessageKind::Response => "SAMLResponse",
        }
    }
}

/// The parameters both bindings read, each as the raw (still URL-encoded) octets received.
/// Raw octets are kept because the Redirect signature covers them exactly (saml-bindings 3.4.4.1).
#[derive(Debug, Default)]
pub(crate) struct RawParams<'a> {
    /// `SAMLRequest`, if present.
    pub(crate) saml_request: Option<&'a [u8]>,
    /// `SAMLResponse`, if present.
    pub(crate) saml_response: Option<&'a [u8]>,
    /// `RelayState`, if present (possibly empty).
    pub(crate) relay_state: Option<&'a [u8]>,
    /// `SigAlg` (Redirect only).
    pub(crate) sig_alg: Option<&'a [u8]>,
    /// `Signature` (Redirect only).
    pub(crate) signature: Option<&'a [u8]>,
    /// `SAMLEncoding` (Redirect only, saml-bindings 3.4.4).
    pub(crate) saml_encoding: Option<&'a [u8]>,
}

impl<'a> RawParams<'a> {
    /// Splits an `application/x-www-form-urlencoded` string on `&`, each pair on its first `=`
    /// (a pair without `=` has an empty value). Parameter names are matched exactly as received;
    /// unknown parameters are ignored, known ones must not repeat.
    pub(crate) fn parse(input: &'a [u8]) -> Result<Self, Error> {
        let mut params = RawParams::default();
        for pair in input.split(|&b| b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let (slot, label) = match name {
                b"SAMLRequest" => (&mut params.saml_request, "SAMLRequest"),
                b"SAMLResponse" => (&mut params.saml_response, "SAMLResponse"),
                b"RelayState" => (&mut params.relay_state, "RelayState"),
                b"SigAlg" => (&mut params.sig_alg, "SigAlg"),
                b"Signature" => (&mut params.signature, "Signature"),
                b"SAMLEncoding" => (&mut params.saml_encoding, "SAMLEncoding"),
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(Error::DuplicateParameter(label));
            }
        }
        Ok(params)
    }

    /// The message parameter and its kind: exactly one of `SAMLRequest` / `SAMLResponse`.
    pub(crate) fn message(&self) -> Result<(MessageKind, &'a [u8]), Error> {
        match (self.saml_request, self.saml_response) {
            (Some(v), None) => Ok((MessageKind::Request, v)),
            (None, Some(v)) => Ok((MessageKind::Response, v)),
            (Some(_), Some(_)) => Err(Error::BothMessages),
            (None, None) => Err(Error::MissingMessage),
        }
    }

    /// The decoded `RelayState`: UTF-8, at most 80 bytes (saml-bindings 3.4.3, 3.5.3). An empty
    /// value is treated as absent, since there is nothing to return to the SP.
    pub(crate) fn relay_state(&self) -> Result<Option<String>, Error> {
        let Some(raw) = self.relay_state else {
            return Ok(None);
        };
        let text = decode_text("RelayState", raw)?;
        check_relay_state(&text)?;
        Ok(if text.is_empty() { None } else { Some(text) })
    }
}

/// saml-bindings 3.4.3 / 3.5.3: RelayState "MUST NOT exceed 80 bytes in length".
pub(crate) fn check_relay_state(relay_state: &str) -> Result<(), Error> {
    if relay_state.len() > MAX_RELAY_STATE {
        return Err(Error::RelayStateTooLong {
            len: relay_state.len(),
        });
    }
    Ok(())
}

/// Strict URL-decoding (RFC 3986 2.1): every `%` must start two hex digits.
///
/// `plus_is_space` applies the form rule (`+` means space). Base64-valued parameters pass `false`:
/// base64 contains no spaces but does contain `+`, and senders that forget to escape it are common,
/// so keeping a literal `+` accepts them without ever changing a correctly encoded value.
pub(crate) fn url_decode(
    param: &'static str,
    raw: &[u8],
    plus_is_space: bool,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hi = raw.get(i + 1).and_then(|&b| hex_val(b));
                let lo = raw.get(i + 2).and_then(|&b| hex_val(b));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(Error::BadPercentEncoding(param)),
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// URL-decodes a text parameter (form rules) and requires UTF-8.
pub(crate) fn decode_text(param: &'static str, raw: &[u8]) -> Result<String, Error> {
    String::from_utf8(url_decode(param, raw, true)?).map_err(|_| Error::BadUtf8(param))
}

/// URL-decodes then base64-decodes a parameter. ASCII whitespace (line breaks from senders that wrap
/// base64 at 64 or 76 columns) is ignored; otherwise the standard alphabet with padding is required
/// (saml-bindings 3.4.4.1 and 3.5.4 both name RFC 2045 base64).
pub(crate) fn decode_base64_param(param: &'static str, raw: &[u8]) -> Result<Vec<u8>, Error> {
    let mut text = url_decode(param, raw, false)?;
    text.retain(|b| !b.is_ascii_whitespace());
    base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|_| Error::BadBase64(param))
}

/// Percent-encodes a value the way `application/x-www-form-urlencoded` serializers do (WHATWG URL
/// and Java's URLEncoder: space as `+`, only `*-._` and alphanumerics left bare). Matching them means a
/// receiver that re-encodes decoded values before checking a Redirect signature still gets our octets.
pub(crate) fn form_encode(value: &[u8]) -> String {
    url::form_urlencoded::byte_serialize(value).collect()
}

/// Base64 (standard alphabet, padded, no line breaks).
pub(crate) fn base64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn params_split_on_first_equals_and_ignore_unknown() {
        let p = RawParams::parse(b"SAMLRequest=a%3Db=c&foo=1&foo=2&RelayState&&SigAlg=").unwrap();
        assert_eq!(p.saml_request, Some(&b"a%3Db=c"[..]));
        assert_eq!(p.relay_state, Some(&b""[..]));
        assert_eq!(p.sig_alg, Some(&b""[..]));
        assert_eq!(p.signature, None);
    }

    #[test]
    fn duplicate_known_parameter_is_refused() {
        assert_eq!(
            RawParams::parse(b"RelayState=a&SAMLResponse=x&RelayState=b").unwrap_err(),
            Error::DuplicateParameter("RelayState")
        );
    }

    #[test]
    fn names_are_matched_exactly() {
        let p = RawParams::parse(b"samlrequest=x&SAML%52equest=y").unwrap();
        assert_eq!(p.message().unwrap_err(), Error::MissingMessage);
    }

    #[test]
    fn url_decode_is_strict() {
        assert_eq!(url_decode("x", b"a%2fb%2F+c", true).unwrap(), b"a/b/ c");
        assert_eq!(url_decode("x", b"a+b", false).unwrap(), b"a+b");
        for bad in [&b"%"[..], b"%2", b"%zz", b"a%g1"] {
            assert_eq!(
                url_decode("x", bad, true).unwrap_err(),
                Error::BadPercentEncoding("x")
            );
        }
    }

    #[test]
    fn base64_tolerates_line_breaks_but_not_truncation() {
        assert_eq!(
            decode_base64_param("p", b"QUJD%0D%0ARE%20VG").unwrap(),
            b"ABCDEF"
        );
        assert_eq!(
            decode_base64_param("p", b"QUJDRE").unwrap_err(),
            Error::BadBase64("p")
        );
    }

    #[test]
    fn relay_state_limit_is_80_bytes() {
        assert!(check_relay_state(&"a".repeat(80)).is_ok());
        assert_eq!(
            check_relay_state(&"a".repeat(81)).unwrap_err(),
            Error::RelayStateTooLong { len: 81 }
        );
    }

    #[test]
    fn form_encode_matches_form_serializers() {
        assert_eq!(form_encode(b"a b+c/=~*"), "a+b%2Bc%2F%3D%7E*");
    }
}
