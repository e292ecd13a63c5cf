//! Money from LiteLLM's JSON without `f64`.
//!
//! LiteLLM writes dollars as JSON numbers (`0.024`, `0.07200000000000001`, `0`, sometimes
//! `1e-05`) and headers as strings. The serde helpers here deserialize the field as a
//! [`serde_json::value::RawValue`], i.e. the number's exact text as it appeared in the body,
//! and parse that text with [`Decimal::from_str`] (or [`Decimal::from_scientific`] for
//! exponents). No `f64` is involved, so `0.07200000000000001` stays exactly that.
//! They only work under `serde_json::from_slice`/`from_str` (not from a `Value`, nor behind
//! `#[serde(flatten)]` or untagged enums), which is how the client decodes every body.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Parses a decimal from a JSON number's text, a quoted decimal or a header value.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .trim();
    if text.is_empty() {
        return None;
    }
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()
    } else {
        Decimal::from_str(text).ok()
    }
}

fn from_raw<E: serde::de::Error>(raw: &RawValue) -> Result<Decimal, E> {
    parse_decimal(raw.get())
        .ok_or_else(|| E::custom(format_args!("`{}` is not a decimal amount", raw.get())))
}

/// `deserialize_with` for a required amount.
pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    from_raw(&raw)
}

/// `deserialize_with` for an amount that may be `null` or missing (with `#[serde(default)]`).
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    let raw = Option::<Box<RawValue>>::deserialize(d)?;
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => from_raw(&raw).map(Some),
    }
}

/// `deserialize_with` for an amount that defaults to zero when `null` or missing.
pub fn or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    optional(d).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[derive(Deserialize)]
    struct Row {
        #[serde(deserialize_with = "required")]
        spend: Decimal,
        #[serde(default, deserialize_with = "optional")]
        max_budget: Option<Decimal>,
    }

    #[test]
    fn keeps_the_exact_json_text() {
        let row: Row =
            serde_json::from_str(r#"{"spend": 0.07200000000000001, "max_budget": null}"#).unwrap();
        assert_eq!(row.spend, dec!(0.07200000000000001));
        assert_eq!(row.max_budget, None);
        let row: Row = serde_json::from_str(r#"{"spend": 0, "max_budget": 1e-05}"#).unwrap();
        assert_eq!(row.spend, Decimal::ZERO);
        assert_eq!(row.max_budget, Some(dec!(0.00001)));
        let row: Row = serde_json::from_str(r#"{"spend": "0.024"}"#).unwrap();
        assert_eq!(row.spend, dec!(0.024));
        assert!(serde_json::from_str::<Row>(r#"{"spend": "lots"}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"spend": true}"#).is_err());
    }

    #[test]
    fn parses_header_values() {
        assert_eq!(parse_decimal("0.024"), Some(dec!(0.024)));
        assert_eq!(parse_decimal(" 2.0 "), Some(dec!(2.0)));
        assert_eq!(parse_decimal("1.5E-3"), Some(dec!(0.0015)));
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("nan"), None);
    }
}
