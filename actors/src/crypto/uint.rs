//! 256-bit unsigned integers as big-endian bytes: parsing from JSON and minimal encoding.

use serde_json::Value;

/// Parses a JSON integer, a decimal string (optionally negative) or a `0x` hex string into a
/// sign and a 256-bit big-endian magnitude.
pub(crate) fn parse(value: &Value) -> Result<(bool, [u8; 32]), &'static str> {
    let text = match value {
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err("expected an integer (number, decimal string or 0x hex string)"),
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let magnitude = match digits.strip_prefix("0x") {
        Some(hex_digits) => parse_radix(hex_digits, 16),
        None => parse_radix(digits, 10),
    }
    .ok_or("not an integer below 2^256")?;
    Ok((negative, magnitude))
}

/// Parses a non-negative integer.
pub(crate) fn parse_unsigned(value: &Value) -> Result<[u8; 32], &'static str> {
    match parse(value)? {
        (true, m) if m != [0; 32] => Err("must not be negative"),
        (_, m) => Ok(m),
    }
}

fn parse_radix(digits: &str, radix: u32) -> Option<[u8; 32]> {
    if digits.is_empty() || digits.len() > 80 {
        return None;
    }
    let mut out = [0u8; 32];
    for c in digits.chars() {
        let mut carry = c.to_digit(radix)?;
        for byte in out.iter_mut().rev() {
            let v = u32::from(*byte) * radix + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(out)
}

/// Number of significant bits.
pub(crate) fn bit_length(n: &[u8; 32]) -> u32 {
    n.iter()
        .position(|b| *b != 0)
        .map_or(0, |i| (32 - i as u32) * 8 - n[i].leading_zeros())
}

/// The big-endian bytes without leading zeros (empty for zero), as RLP wants integers.
pub(crate) fn minimal(n: &[u8]) -> &[u8] {
    let start = n.iter().position(|b| *b != 0).unwrap_or(n.len());
    &n[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_numbers_decimal_and_hex() {
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(parse(&json!(1)), Ok((false, one)));
        assert_eq!(parse(&json!("1")), Ok((false, one)));
        assert_eq!(parse(&json!("0x01")), Ok((false, one)));
        assert_eq!(parse(&json!("-1")), Ok((true, one)));
        assert!(parse(&json!("1e3")).is_err());
        assert!(parse(&json!("")).is_err());
        assert!(parse(&json!(true)).is_err());
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(parse(&json!(max)), Ok((false, [0xff; 32])));
        assert!(parse(&json!(format!("{max}0"))).is_err());
        assert_eq!(bit_length(&one), 1);
        assert_eq!(bit_length(&[0xff; 32]), 256);
        assert_eq!(minimal(&one), &[1]);
        assert!(minimal(&[0; 32]).is_empty());
    }
}
