//! Date-time parsing and formatting (SPEC 2): input with any offset and up to 9 fractional
//! digits, kept to the millisecond; output in UTC with `Z` and whole seconds.

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, UtcOffset};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Parses an RFC 3339 date-time into epoch milliseconds (sub-millisecond digits truncated).
pub fn parse_datetime(s: &str) -> Option<Millis> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let nanos = dt.unix_timestamp_nanos();
    Some(nanos.div_euclid(1_000_000) as i64)
}

/// Parses a `yyyy-mm-dd` date into the epoch milliseconds of that day's 00:00:00Z.
pub fn parse_date(s: &str) -> Option<Millis> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if s.len() != 10 {
        return None;
    }
    let d = Date::parse(s, &fmt).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp() * 1000)
}

/// A `from`/`to` bound (SPEC 2.1): a date or a date-time. A date `to` means the next day.
pub fn parse_bound(s: &str, is_to: bool) -> Option<Millis> {
    if let Some(day) = parse_date(s) {
        return Some(if is_to { day + 86_400_000 } else { day });
    }
    parse_datetime(s)
}

/// Formats epoch milliseconds as `2024-01-15T10:30:00Z` (whole seconds, floor).
pub fn format_ms(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let dt = OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(UtcOffset::UTC);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    dt.format(&fmt).unwrap_or_default()
}

/// Formats epoch milliseconds as `2024-01-15T10:30:00.123Z`, for input to ingest, where
/// idempotency keys count milliseconds (output of the API keeps whole seconds).
pub fn format_ms_precise(ms: Millis) -> String {
    let seconds = format_ms(ms);
    format!(
        "{}.{:03}Z",
        seconds.trim_end_matches('Z'),
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_nanoseconds_are_accepted() {
        let a = parse_datetime("2024-01-15T10:30:00.123456789Z").unwrap();
        let b = parse_datetime("2024-01-15T12:30:00.123+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a % 1000, 123);
        assert_eq!(format_ms(a), "2024-01-15T10:30:00Z");
        assert_eq!(format_ms_precise(a), "2024-01-15T10:30:00.123Z");
    }

    #[test]
    fn dates_are_whole_days() {
        let from = parse_bound("2024-01-15", false).unwrap();
        let to = parse_bound("2024-01-15", true).unwrap();
        assert_eq!(to - from, 86_400_000);
        assert_eq!(format_ms(from), "2024-01-15T00:00:00Z");
        assert!(parse_bound("2024-13-01", false).is_none());
        assert!(parse_bound("yesterday", false).is_none());
    }
}
