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
/// It deserializes from any single value as its text, so that an unquoted number is a
/// password too, and never from a serde error message that would quote it.
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
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
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
    fn a_number_is_a_secret_as_written_and_a_list_is_refused_without_its_items() {
        let s: Secret = serde_yaml::from_str("123456").unwrap();
        assert_eq!(s.expose(), "123456");
        let e = serde_yaml::from_str::<Secret>("[hunter2]")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
