//! Recovery codes: ten single-use codes that stand in for a lost authenticator.
//!
//! A code is 12 symbols of Crockford's base32 (`0-9` and `A-Z` without `I L O U`), shown as
//! `XXXX-XXXX-XXXX`: 60 random bits each. Input is forgiving the way Crockford's alphabet intends:
//! case, dashes and spaces do not matter, and `O` reads as `0`, `I` and `L` as `1`.
//!
//! Storage: codes are kept as HMAC-SHA256 under a subkey of the configured MFA key, over
//! `<user id>:<normalized code>`. Not argon2: a code carries 60 random bits, so there is no
//! dictionary to slow down, and the key (which lives in the configuration, not the database)
//! means a database dump alone cannot test guesses at all. A deterministic hash also lets a code
//! be consumed with one conditional UPDATE, which is what makes "single use" atomic across nodes.
//! Binding the user id means one user's code is worthless for another account.

use std::fmt;

use super::seal::MfaKey;
use super::Error;

/// How many codes a user gets at once.
pub const RECOVERY_CODE_COUNT: usize = 10;

/// Symbols per code: 12 x 5 bits = 60 bits.
const SYMBOLS: usize = 12;

/// Symbols between dashes in the displayed form.
const GROUP: usize = 4;

/// Crockford's base32 alphabet: no I, L, O, U, so nothing reads as something else.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A recovery code in clear, as shown once to the user. `Display` gives `XXXX-XXXX-XXXX`.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(String);

impl RecoveryCode {
    /// Draws a fresh code: each symbol from 5 uniformly random bits (256 is a multiple of 32, so
    /// masking a random byte is unbiased).
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; SYMBOLS];
        openssl::rand::rand_bytes(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
        let symbols = bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
            .collect();
        Ok(Self(symbols))
    }

    /// The displayed form, `XXXX-XXXX-XXXX`.
    pub fn display(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        chars
            .chunks(GROUP)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("-")
    }
}

impl fmt::Display for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(..)")
    }
}

/// Draws [`RECOVERY_CODE_COUNT`] distinct codes.
pub fn generate_codes() -> Result<Vec<RecoveryCode>, Error> {
    let mut codes: Vec<RecoveryCode> = Vec::with_capacity(RECOVERY_CODE_COUNT);
    while codes.len() < RECOVERY_CODE_COUNT {
        let code = RecoveryCode::generate()?;
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(codes)
}

/// The canonical form of typed input: upper case, dashes and spaces dropped, `O`->`0`,
/// `I`/`L`->`1`. `None` unless that leaves exactly 12 alphabet symbols.
pub fn normalize(input: &str) -> Option<String> {
    let mut out = String::with_capacity(SYMBOLS);
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
        if out.len() > SYMBOLS {
            return None;
        }
    }
    (out.len() == SYMBOLS).then_some(out)
}

/// The stored form of a code for `user_id`: hex HMAC-SHA256 of `<user id>:<normalized code>`
/// under the recovery subkey of `key`. `None` if `input` is not a well-formed code.
pub fn code_hash(key: &MfaKey, user_id: i64, input: &str) -> Result<Option<String>, Error> {
    let Some(code) = normalize(input) else {
        return Ok(None);
    };
    key.recovery_mac(format!("{user_id}:{code}").as_bytes())
        .map(Some)
}

/// The stored form of a freshly generated code.
pub(crate) fn stored_hash(
    key: &MfaKey,
    user_id: i64,
    code: &RecoveryCode,
) -> Result<String, Error> {
    key.recovery_mac(format!("{user_id}:{}", code.0).as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_documented_shape() {
        let codes = generate_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        for code in &codes {
            let shown = code.to_string();
            assert_eq!(shown.len(), 14);
            assert_eq!(shown.matches('-').count(), 2);
            assert_eq!(normalize(&shown).as_deref(), Some(code.0.as_str()));
            assert!(!format!("{code:?}").contains(&code.0));
        }
    }

    #[test]
    fn typed_input_is_forgiving_but_exact() {
        assert_eq!(normalize("abcd-efgh-jk0l").as_deref(), Some("ABCDEFGHJK01"));
        assert_eq!(
            normalize(" oooo iiii 2345 ").as_deref(),
            Some("000011112345")
        );
        for bad in [
            "",
            "ABCD-EFGH-JK",
            "ABCD-EFGH-JKMNP",
            "ABCD-EFGH-JKU0",
            "ÄBCD-EFGH-JKM0",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }
}
