//! RFC 3339 date-times (as EIP-4361 uses them) to and from milliseconds since the epoch, on
//! the `time` crate.

use std::sync::LazyLock;

use time::format_description::well_known::Rfc3339;
use time::format_description::{BorrowedFormatItem, parse_borrowed};
use time::{OffsetDateTime, UtcDateTime};

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: always UTC, always three fraction digits.
static MILLIS_UTC: LazyLock<Vec<BorrowedFormatItem<'static>>> = LazyLock::new(|| {
    parse_borrowed::<2>("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z")
        .expect("a valid format description")
});

/// Parses an RFC 3339 date-time (`T`/`t`, `Z`/`z` or `±HH:MM`) into milliseconds since the Unix
/// epoch (UTC). Fractions beyond milliseconds are truncated (toward the past).
pub fn parse(s: &str) -> Option<i64> {
    // The `time` crate also takes a space between date and time; RFC 3339's grammar does not.
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`; times past year 9999
/// are shown as its last millisecond.
pub fn format(ms: i64) -> String {
    let at =
        UtcDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(if ms < 0 {
            UtcDateTime::MIN
        } else {
            UtcDateTime::MAX
        });
    at.format(MILLIS_UTC.as_slice())
        .unwrap_or_else(|_| "9999-12-31T23:59:59.999Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2026-11-29T10:00:00.000Z"), Some(1_795_946_400_000));
        assert_eq!(
            parse("2026-11-29T12:00:00+02:00"),
            parse("2026-11-29T10:00:00Z")
        );
        assert_eq!(parse("2026-11-29T10:00:00.1234Z"), Some(1_795_946_400_123));
        assert_eq!(format(1_795_946_400_123), "2026-11-29T10:00:00.123Z");
        assert_eq!(
            parse("2024-02-29T00:00:00Z").map(format),
            Some("2024-02-29T00:00:00.000Z".into())
        );
        assert_eq!(parse("2026-11-29t10:00:00z"), Some(1_795_946_400_000));
        assert_eq!(format(i64::MAX), "9999-12-31T23:59:59.999Z");
        for bad in [
            "2026-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-11-29 10:00:00Z",
            "2026-11-29T10:00:00",
            "2026-11-29T10:00:00+2:00",
            "2026-11-29T10:00:00.Z",
            "x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
