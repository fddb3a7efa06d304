//! Configuration units shared by every component: byte sizes (`64KiB`, `1GiB`) and durations
//! (`500ms`, `5s`), deserialized from YAML strings or plain numbers.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A size in bytes, written as a plain number of bytes or a number with a unit: `B`, `KB`,
/// `MB`, `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); `K`, `M`,
/// `G` are read as the binary units. Spaces between number and unit are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Why a byte size or duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

impl std::str::FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || {
            UnitError(format!(
                "`{s}` is not a byte size (write e.g. 65536, 64KiB, 1GiB)"
            ))
        };
        if num.is_empty() {
            return Err(bad());
        }
        let factor: u64 = match unit.trim() {
            "" | "B" | "b" => 1,
            "KB" | "kB" | "kb" => 1_000,
            "MB" | "mb" => 1_000_000,
            "GB" | "gb" => 1_000_000_000,
            "TB" | "tb" => 1_000_000_000_000,
            "K" | "k" | "KiB" | "kib" => 1 << 10,
            "M" | "m" | "MiB" | "mib" => 1 << 20,
            "G" | "g" | "GiB" | "gib" => 1 << 30,
            "T" | "t" | "TiB" | "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let value = if num.contains('.') {
            let f: f64 = num.parse().map_err(|_| bad())?;
            let bytes = f * factor as f64;
            if !bytes.is_finite() || bytes > u64::MAX as f64 {
                return Err(bad());
            }
            bytes as u64
        } else {
            let n: u64 = num.parse().map_err(|_| bad())?;
            n.checked_mul(factor).ok_or_else(bad)?
        };
        Ok(ByteSize(value))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size such as 65536, 64KiB or 1GiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a byte size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as a humantime string (`500ms`, `5s`, `1m 30s`) or a number of seconds
/// (`5`, `0.25`, also as text: `"5"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                UnitError(format!(
                    "`{s}` is not a duration ({e}; write e.g. 500ms, 5s, 1m)"
                ))
            })
    }
}

/// The longest duration an option takes: ten years. Longer ones overflow the clock
/// arithmetic of timers and deadlines, and mean "never" anyway.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `d`, if it is at most [`MAX_DURATION`].
fn bounded<E: de::Error>(d: Duration) -> Result<HumanDuration, E> {
    if d > MAX_DURATION {
        return Err(E::custom("a duration must be at most 10 years"));
    }
    Ok(HumanDuration(d))
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 500ms, 5s or 1m")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                bounded(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a duration cannot be negative"))
                    .and_then(|s| self.visit_u64(s))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Duration::try_from_secs_f64(v)
                    .map_err(|_| E::custom("a duration must be a non-negative number of seconds"))
                    .and_then(bounded)
            }
            /// A number of seconds written as text counts as the number.
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                let t = v.trim();
                if let Ok(n) = t.parse() {
                    self.visit_u64(n)
                } else if let Ok(n) = t.parse() {
                    self.visit_i64(n)
                } else if let Ok(x) = t.parse() {
                    self.visit_f64(x)
                } else {
                    v.parse()
                        .map_err(E::custom)
                        .and_then(|d: HumanDuration| bounded(d.0))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_and_without_units() {
        let cases = [
            ("0", 0),
            ("65536", 65536),
            ("64KiB", 65536),
            ("64 KiB", 65536),
            ("1MB", 1_000_000),
            ("1M", 1 << 20),
            ("1GiB", 1 << 30),
            ("1.5KiB", 1536),
            ("2TB", 2_000_000_000_000),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ByteSize>().unwrap(), ByteSize(want), "{text}");
        }
    }

    #[test]
    fn bad_byte_sizes_are_refused_with_the_text() {
        for text in ["", "KiB", "12 parsecs", "-1", "99999999999999999999", "1e3"] {
            let err = text.parse::<ByteSize>().unwrap_err();
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn byte_sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(1536).to_string(), "1536B");
        assert_eq!(ByteSize(3 << 20).to_string(), "3MiB");
    }

    #[test]
    fn yaml_numbers_and_strings_both_deserialize() {
        let v: Vec<ByteSize> = serde_yaml::from_str("[1024, '2KiB', 3MiB]").unwrap();
        assert_eq!(v, vec![ByteSize(1024), ByteSize(2048), ByteSize(3 << 20)]);
        let d: Vec<HumanDuration> = serde_yaml::from_str("[5, 500ms, '1m 30s', 0.25]").unwrap();
        let secs: Vec<f64> = d.iter().map(|d| d.0.as_secs_f64()).collect();
        assert_eq!(secs, vec![5.0, 0.5, 90.0, 0.25]);
        assert!(serde_yaml::from_str::<HumanDuration>("soon").is_err());
        let text: Vec<HumanDuration> = serde_yaml::from_str("['5', '0.25']").unwrap();
        assert_eq!(
            text,
            [5.0, 0.25].map(|s| HumanDuration(Duration::from_secs_f64(s)))
        );
        assert!(serde_yaml::from_str::<HumanDuration>("'-1'").is_err());
        assert!(serde_yaml::from_str::<ByteSize>("-5").is_err());
    }
}
