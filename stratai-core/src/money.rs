//! Money: US dollars as an exact, non-negative [`Decimal`].
//!
//! Money never passes through `f64`. Amounts are non-negative by construction: a cost,
//! a budget limit, a spend can not be below zero, so the type refuses it.

use std::fmt;
use std::iter::Sum;
use std::ops::Add;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// A non-negative amount of US dollars. Serialized as a decimal string (`"12.50"`); only a
/// string deserializes: a JSON number would have passed through `f64` on its way in, so it is
/// refused rather than silently rounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "Decimal")]
pub struct Money(Decimal);

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Money;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount as a decimal string such as \"12.50\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Money, E> {
                Money::parse(text).map_err(|e| E::custom(e.reason))
            }
        }
        de.deserialize_str(Text)
    }
}

impl Money {
    /// Zero dollars.
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// Wraps an amount, refusing negatives.
    pub fn new(amount: Decimal) -> Result<Self, ValidationError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            Err(ValidationError::new(
                "amount",
                format!("`{amount}` is negative"),
            ))
        } else {
            Ok(Self(amount.normalize()))
        }
    }

    /// Parses a decimal string such as `"12.50"`.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let amount: Decimal = text.trim().parse().map_err(|_| {
            ValidationError::new("amount", format!("`{text}` is not a decimal amount"))
        })?;
        Self::new(amount)
    }

    /// Whole dollars.
    #[must_use]
    pub fn dollars(amount: u32) -> Self {
        Self(Decimal::from(amount))
    }

    /// The amount as a decimal.
    #[must_use]
    pub const fn amount(&self) -> Decimal {
        self.0
    }

    /// `self - other`, or zero when `other` is larger.
    #[must_use]
    pub fn saturating_sub(self, other: Money) -> Money {
        if other.0 >= self.0 {
            Money::ZERO
        } else {
            Money(self.0 - other.0)
        }
    }

    /// `self + other`, or `None` on overflow (only for absurd amounts).
    #[must_use]
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// Rounds to `dp` decimal places, half away from zero (the one rounding rule of the project).
    #[must_use]
    pub fn round_dp(self, dp: u32) -> Money {
        Money(
            self.0
                .round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
                .normalize(),
        )
    }
}

impl Add for Money {
    type Output = Money;

    /// Saturates at `Decimal::MAX` rather than panicking.
    fn add(self, rhs: Money) -> Money {
        self.checked_add(rhs).unwrap_or(Money(Decimal::MAX))
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Self {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl TryFrom<Decimal> for Money {
    type Error = ValidationError;

    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Money> for Decimal {
    fn from(m: Money) -> Self {
        m.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn refuses_negative_amounts() {
        assert!(Money::new(dec!(-0.01)).is_err());
        assert_eq!(Money::new(dec!(0)).unwrap(), Money::ZERO);
        assert!(
            Money::parse("abc")
                .unwrap_err()
                .to_string()
                .contains("`abc`")
        );
    }

    #[test]
    fn arithmetic_is_exact() {
        let a = Money::parse("0.1").unwrap();
        let b = Money::parse("0.2").unwrap();
        assert_eq!(a + b, Money::parse("0.3").unwrap());
        assert_eq!(a.saturating_sub(b), Money::ZERO);
        assert_eq!(
            Money::parse("1.0000005").unwrap().round_dp(6),
            Money::parse("1.000001").unwrap()
        );
    }

    #[test]
    fn serializes_as_string_decimal() {
        let m = Money::parse("12.5").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"12.5\"");
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Money>("\"-1\"").is_err());
    }

    #[test]
    fn json_numbers_are_refused() {
        for number in ["12.5", "0.1", "1", "1e-5"] {
            let err = serde_json::from_str::<Money>(number)
                .unwrap_err()
                .to_string();
            assert!(err.contains("decimal string"), "{number}: {err}");
        }
    }
}
