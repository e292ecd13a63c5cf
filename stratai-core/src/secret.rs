//! [`Secret`]: a credential that never shows itself.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A credential (LiteLLM's master key, a virtual key `sk-...`, an OIDC client secret, an SMTP
/// password). `Debug` and `Display` print `***`; the value is only reachable through
/// [`Secret::expose`], called where a request is built. It is deserializable (LiteLLM returns
/// new keys) but deliberately not serializable, so it cannot leak into logs through a derived
/// `Serialize`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into_boxed_str())
    }

    /// The credential itself: only for building requests.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the credential is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("sk-very-secret-value");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let wrapped = Some(secret.clone());
        assert!(!format!("{wrapped:?}").contains("very-secret"));
        assert_eq!(secret.expose(), "sk-very-secret-value");
    }
}
