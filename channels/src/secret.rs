//! A configuration value that must not be shown: a password or a key's passphrase.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// What a [`Secret`] prints as, wherever it is printed.
pub const MASK: &str = "***";

/// A secret configuration value. It prints (`Display` and `Debug`) as [`MASK`], so that a
/// configuration dump, a `{:?}` in a log line or an error message cannot show it; only
/// [`Secret::expose`] gives the value, for the one place that needs it (the client
/// configuration handed to librdkafka).
///
/// It deserializes from text only: an unquoted YAML number or boolean would not be kept as
/// written (`1.10` reads as 1.1), so it is refused with a message that asks for quotes and
/// never quotes the value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself: pass it only to what needs it, never to a log or a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Why a typed value is not taken as a secret.
const QUOTE_IT: &str = "a number or a boolean is not kept as written: put the value between quotes";

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value (text)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            // A typed number or boolean is not kept as written (`1.10` reads 1.1, `0x1F` 31):
            // refused, without the value, rather than changed.
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(QUOTE_IT))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(QUOTE_IT))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(QUOTE_IT))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(QUOTE_IT))
            }
        }
        d.deserialize_any(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s: Secret = serde_yaml::from_str("hunter2-xyz").unwrap();
        assert_eq!(s.expose(), "hunter2-xyz");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
    }

    #[test]
    fn a_number_is_refused_without_its_value_and_a_quoted_one_is_kept() {
        for typed in ["123456", "1.10", "0x1F", "true"] {
            let e = serde_yaml::from_str::<Secret>(typed)
                .unwrap_err()
                .to_string();
            assert!(e.contains("between quotes") && !e.contains(typed), "{e}");
        }
        let s: Secret = serde_yaml::from_str("'1.10'").unwrap();
        assert_eq!(s.expose(), "1.10");
        let e = serde_yaml::from_str::<Secret>("[hunter2]")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
