//! Lenient timestamps: LiteLLM mixes RFC 3339 forms, dates and `... UTC` strings.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::{Deserialize, Deserializer};

/// Parses every timestamp form LiteLLM 1.108 was seen to send, as UTC:
///
/// - RFC 3339 with `Z` or an offset, any fraction: `2026-11-28T15:10:14.226000Z`,
///   `2026-12-28T15:10:14.682000+00:00`, `2026-11-28T15:10:15.512+00:00`, `2026-12-01T00:00:00Z`
///   (a space instead of `T` is accepted too);
/// - `2026-11-28 15:11:27 UTC` (the `reset_at` header of a 429);
/// - a naive date-time without offset (`2026-11-28T15:10:14.226`, `2026-11-28 15:10:14`),
///   taken as UTC;
/// - a date `2026-11-28`, taken as midnight UTC.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let without_utc = text
        .strip_suffix(" UTC")
        .or_else(|| text.strip_suffix(" GMT"))
        .or_else(|| text.strip_suffix('Z'))
        .unwrap_or(text)
        .trim_end();
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(without_utc, format) {
            return Some(naive.and_utc());
        }
    }
    // "+00:00" offsets after a space separator and other variants chrono's RFC 3339 misses.
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_time(NaiveTime::MIN).and_utc())
}

/// `deserialize_with` for an optional timestamp: `null`, missing, empty or unparseable text
/// give `None` (a timestamp LiteLLM garbles must not fail a whole listing).
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    Ok(text.as_deref().and_then(parse_timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
            + chrono::Duration::milliseconds(i64::from(ms))
    }

    #[test]
    fn every_form_from_the_kit_readme() {
        assert_eq!(
            parse_timestamp("2026-11-28T15:10:14.226000Z"),
            Some(at(2026, 11, 28, 15, 10, 14, 226))
        );
        assert_eq!(
            parse_timestamp("2026-12-28T15:10:14.682000+00:00"),
            Some(at(2026, 12, 28, 15, 10, 14, 682))
        );
        assert_eq!(
            parse_timestamp("2026-11-28T15:10:15.512+00:00"),
            Some(at(2026, 11, 28, 15, 10, 15, 512))
        );
        assert_eq!(
            parse_timestamp("2026-12-01T00:00:00Z"),
            Some(at(2026, 12, 1, 0, 0, 0, 0))
        );
        assert_eq!(
            parse_timestamp("2026-11-28"),
            Some(at(2026, 11, 28, 0, 0, 0, 0))
        );
        assert_eq!(
            parse_timestamp("2026-11-28 15:11:27 UTC"),
            Some(at(2026, 11, 28, 15, 11, 27, 0))
        );
    }

    #[test]
    fn other_lenient_forms() {
        assert_eq!(
            parse_timestamp("2026-11-28T15:10:14.226"),
            Some(at(2026, 11, 28, 15, 10, 14, 226))
        );
        assert_eq!(
            parse_timestamp("2026-11-28 15:10:14"),
            Some(at(2026, 11, 28, 15, 10, 14, 0))
        );
        assert_eq!(
            parse_timestamp("2026-11-28 15:10:14+00:00"),
            Some(at(2026, 11, 28, 15, 10, 14, 0))
        );
        assert_eq!(
            parse_timestamp("2026-11-28T17:10:14+02:00"),
            Some(at(2026, 11, 28, 15, 10, 14, 0))
        );
        assert_eq!(parse_timestamp("not a time"), None);
        assert_eq!(parse_timestamp(""), None);
    }
}
