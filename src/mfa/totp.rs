//! Time-based one-time passwords (RFC 6238) as authenticator apps compute them.
//!
//! Parameters are the RFC 6238 defaults every authenticator app supports: HMAC-SHA-1, a 30-second
//! step counted from the unix epoch (RFC 6238 4.1, 4.2), 6 digits (RFC 4226 5.3). Secrets are 20
//! random bytes, the HMAC-SHA-1 output length recommended by RFC 4226 4 (R6).
//!
//! Nothing here reads the clock or touches a store: time is passed in, and the replay cache and
//! attempt counter live in [`super::check_totp`].

use std::fmt;

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use super::Error;

/// Seconds per time step: RFC 6238 4.1 default X = 30, the only period all apps honour.
pub const STEP_SECONDS: i64 = 30;

/// Digits per code: RFC 4226 5.3 minimum and the authenticator-app default.
pub const DIGITS: usize = 6;

/// Bytes of a generated secret: 160 bits, the SHA-1 output size (RFC 4226 4, R6).
pub const SECRET_BYTES: usize = 20;

/// Shortest secret accepted from elsewhere (128 bits, RFC 4226 4, R6).
const MIN_SECRET_BYTES: usize = 16;

/// Longest secret accepted from elsewhere: more than any app generates, bounds memory.
const MAX_SECRET_BYTES: usize = 64;

/// Steps either side of the current one that are still accepted: one, for clock drift and for the
/// time it takes to type the code (RFC 6238 5.2 recommends at most one step of network delay).
pub const DRIFT_STEPS: u64 = 1;

/// Characters kept as-is in the otpauth label and parameters: RFC 3986 unreserved characters.
const URI_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// RFC 4648 6 base32 alphabet, the encoding of the `secret` parameter of otpauth URIs.
const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Smallest side of the rendered QR code in SVG user units, so it scans off a screen.
const QR_MIN_PIXELS: u32 = 200;

/// The shared secret of a TOTP factor. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// Draws a fresh 20-byte secret from the OpenSSL CSPRNG.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = vec![0u8; SECRET_BYTES];
        openssl::rand::rand_bytes(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Wraps raw secret bytes (16 to 64 bytes), e.g. an opened sealed secret or a test vector.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(Error::InvalidSecret(bytes.len()));
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The raw bytes, to seal them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// RFC 4648 base32 without padding: what the user types into an app that cannot scan.
    pub fn to_base32(&self) -> String {
        base32(&self.0)
    }

    /// The code for one time step (RFC 6238 4.2 with RFC 4226 5.3 truncation), as 6 digits.
    pub fn code_at_step(&self, step: u64) -> Result<String, Error> {
        let pkey = PKey::hmac(&self.0).map_err(|e| Error::Crypto(e.to_string()))?;
        let mut signer =
            Signer::new(MessageDigest::sha1(), &pkey).map_err(|e| Error::Crypto(e.to_string()))?;
        // RFC 4226 5.2: the counter is an 8-byte big-endian integer.
        signer
            .update(&step.to_be_bytes())
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let mac = signer
            .sign_to_vec()
            .map_err(|e| Error::Crypto(e.to_string()))?;
        // RFC 4226 5.3: dynamic truncation - the low nibble of the last byte picks 4 bytes, whose
        // value without its top bit is reduced modulo 10^digits.
        let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
        let window: [u8; 4] = mac
            .get(offset..offset + 4)
            .and_then(|w| w.try_into().ok())
            .ok_or_else(|| Error::Crypto("HMAC-SHA-1 output too short".to_owned()))?;
        let binary = u32::from_be_bytes(window) & 0x7fff_ffff;
        Ok(format!("{:06}", binary % 1_000_000))
    }

    /// The code valid at `unix_time` (seconds since the epoch, RFC 6238 4.2).
    pub fn code_at(&self, unix_time: i64) -> Result<String, Error> {
        let step = step_of(unix_time).ok_or(Error::TimeBeforeEpoch)?;
        self.code_at_step(step)
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TotpSecret({} bytes)", self.0.len())
    }
}

/// The time step of a unix time (RFC 6238 4.2: T = floor((now - T0) / X), T0 = 0). `None` before
/// the epoch.
pub fn step_of(unix_time: i64) -> Option<u64> {
    let seconds = u64::try_from(unix_time).ok()?;
    Some(seconds / STEP_SECONDS.unsigned_abs())
}

/// Checks `code` against the steps around `now` (one step either side, RFC 6238 5.2) and returns
/// the step it matched, for the replay cache.
///
/// The code must be exactly 6 ASCII digits once spaces are removed ("123 456", as apps show it,
/// is accepted); anything else is refused without computing a code. The three candidates are all
/// computed and compared in constant time, so timing reveals neither which step matched nor how
/// many leading digits were right.
pub fn verify(secret: &TotpSecret, code: &str, now: i64) -> Result<Option<u64>, Error> {
    let Some(code) = normalize_code(code) else {
        return Ok(None);
    };
    let Some(current) = step_of(now) else {
        return Ok(None);
    };
    let mut matched = None;
    let first = current.saturating_sub(DRIFT_STEPS);
    for step in first..=current.saturating_add(DRIFT_STEPS) {
        let expected = secret.code_at_step(step)?;
        if openssl::memcmp::eq(expected.as_bytes(), code.as_bytes()) && matched.is_none() {
            matched = Some(step);
        }
    }
    Ok(matched)
}

/// The code without spaces if it is then exactly [`DIGITS`] ASCII digits.
fn normalize_code(code: &str) -> Option<String> {
    let compact: String = code.chars().filter(|c| *c != ' ').collect();
    (compact.len() == DIGITS && compact.bytes().all(|b| b.is_ascii_digit())).then_some(compact)
}

/// The `otpauth://totp/` URI that authenticator apps scan (Google Authenticator Key Uri Format):
/// label `issuer:account`, `secret` in base32, `issuer` repeated as a parameter, and the
/// algorithm, digits and period spelled out.
///
/// The issuer must be non-empty and free of `:` (the label separator) and control characters; the
/// account must be non-empty and free of control characters (a `:` in it is percent-encoded).
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> Result<String, Error> {
    check_issuer(issuer)?;
    if account.is_empty() || account.chars().any(char::is_control) {
        return Err(Error::InvalidLabel(
            "the account name must be non-empty text without control characters".to_owned(),
        ));
    }
    let issuer_enc = utf8_percent_encode(issuer, URI_KEEP).to_string();
    let account_enc = utf8_percent_encode(account, URI_KEEP).to_string();
    Ok(format!(
        "otpauth://totp/{issuer_enc}:{account_enc}?secret={}&issuer={issuer_enc}\
         &algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        secret.to_base32()
    ))
}

/// Checks an issuer name for the otpauth label (no `:`, no control characters, not empty).
pub fn check_issuer(issuer: &str) -> Result<(), Error> {
    if issuer.trim().is_empty() || issuer.contains(':') || issuer.chars().any(char::is_control) {
        return Err(Error::InvalidLabel(
            "the issuer must be non-empty text without ':' or control characters".to_owned(),
        ));
    }
    Ok(())
}

/// Renders `uri` as a QR code in an inline `<svg>` element (no XML declaration), black on white
/// with the 4-module quiet zone, error correction level M. The markup holds only numbers and
/// fixed attributes, so it is safe to insert into a page unescaped.
pub fn qr_svg(uri: &str) -> Result<String, Error> {
    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)
        .map_err(|e| Error::QrCode(e.to_string()))?;
    let rendered = code
        .render::<svg::Color<'_>>()
        .min_dimensions(QR_MIN_PIXELS, QR_MIN_PIXELS)
        .quiet_zone(true)
        .build();
    let start = rendered
        .find("<svg ")
        .ok_or_else(|| Error::QrCode("the renderer produced no <svg> element".to_owned()))?;
    let svg = rendered.get(start + "<svg ".len()..).unwrap_or_default();
    Ok(format!(
        r#"<svg role="img" aria-label="QR code for the authenticator app" {svg}"#
    ))
}

/// RFC 4648 6 base32, upper case, without `=` padding (the otpauth convention).
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_ALPHABET[((buffer >> bits) & 31) as usize],
            ));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize],
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 10.
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), expected);
        }
    }

    #[test]
    fn codes_are_normalized_strictly() {
        assert_eq!(normalize_code("123 456").as_deref(), Some("123456"));
        for bad in [
            "",
            "12345",
            "1234567",
            "12a456",
            "１２３４５６",
            "-12345",
            "12345\n",
        ] {
            assert_eq!(normalize_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn steps_before_the_epoch_do_not_exist() {
        assert_eq!(step_of(-1), None);
        assert_eq!(step_of(0), Some(0));
        assert_eq!(step_of(59), Some(1));
    }
}
