//! Codes people type: Crockford base32 (no `I`, `L`, `O`, `U`), shared by link codes, pairing
//! codes and email confirm codes.

use super::error::ApiError;

/// The 32 symbols, 5 bits each.
pub const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `chars` random symbols (each from 5 random bits: unbiased, since 256 is a multiple of 32).
pub fn random(chars: usize) -> Result<String, ApiError> {
    let mut bytes = vec![0u8; chars];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("random generator failed"))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect())
}

/// A typed code in its canonical form: case, dashes, spaces and tabs ignored, `I`/`L` read as
/// `1` and `O` as `0`. Symbols outside the alphabet are kept (so the caller's check fails).
pub fn normalize(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\t'))
        .map(|c| match c.to_ascii_uppercase() {
            'I' | 'L' => '1',
            'O' => '0',
            other => other,
        })
        .collect()
}

/// Whether `code` is exactly `chars` symbols of the alphabet.
pub fn is_code(code: &str, chars: usize) -> bool {
    code.len() == chars && code.bytes().all(|b| ALPHABET.contains(&b))
}

/// A code as shown: dashed groups of four.
pub fn dashed(code: &str) -> String {
    code.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}
