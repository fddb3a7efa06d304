//! A source's `selector:` option, as written, and its checks against the source's `channels`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use sluice_channels::config::Problem;

/// How a source with several channels chooses the channels of each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectorKind {
    /// Every event to every channel (Flume's `replicating`).
    #[default]
    Replicating,
    /// The channels by the value of one header of each event (Flume's `multiplexing`).
    Multiplexing,
    /// All of one file's events to the same one of the channels, by a stable hash of the
    /// file's stream key.
    Partitioned,
}

/// The optional channels: a list (`replicating`), or lists by header value (`multiplexing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Optional {
    /// Channels every event goes to without holding the source back.
    List(Vec<String>),
    /// Per header value, channels its events go to without holding the source back.
    ByValue(BTreeMap<String, Vec<String>>),
}

impl Default for Optional {
    fn default() -> Self {
        Optional::List(Vec::new())
    }
}

impl Optional {
    /// True when no channel is optional.
    pub fn is_empty(&self) -> bool {
        match self {
            Optional::List(l) => l.is_empty(),
            Optional::ByValue(m) => m.values().all(Vec::is_empty),
        }
    }
}

/// A source's `selector:` option (without it: replicating, nothing optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// `type`: replicating (the default), multiplexing or partitioned.
    #[serde(rename = "type", default)]
    pub kind: SelectorKind,
    /// `multiplexing`: the header whose value chooses the channels.
    #[serde(default)]
    pub header: Option<String>,
    /// `multiplexing`: the required channels of each header value.
    #[serde(default, deserialize_with = "by_value")]
    pub mapping: BTreeMap<String, Vec<String>>,
    /// `multiplexing`: the required channels of an event whose value has no mapping (or that
    /// has no such header). Empty: such an event goes nowhere and is counted.
    #[serde(default)]
    pub default: Vec<String>,
    /// The optional channels: a list for `replicating`, lists by header value for
    /// `multiplexing`; `partitioned` has none.
    #[serde(default, deserialize_with = "optional")]
    pub optional: Optional,
}

impl SelectorConfig {
    /// Every problem of this selector for a source that puts into `channels` (as written
    /// under its `channels` or `channel` key, `list_key`), with keys relative to the source:
    /// a channel listed twice, a selector naming a channel the source does not list, an
    /// option its type does not take, a multiplexing selector without `header`, and a
    /// channel the selector never sends to.
    pub fn validate(&self, channels: &[String], list_key: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (i, c) in channels.iter().enumerate() {
            if channels[..i].contains(c) {
                problems.push(Problem::new(
                    format!("{list_key}[{i}]"),
                    format!("channel `{c}` is listed twice"),
                ));
            }
        }
        let listed = channels.join(", ");
        let mut check = |key: String, names: &[String]| {
            for (i, c) in names.iter().enumerate() {
                if !channels.contains(c) {
                    problems.push(Problem::new(
                        format!("{key}[{i}]"),
                        format!(
                            "channel `{c}` is not one of the source's channels ({listed}); \
                             add it to `channels`"
                        ),
                    ));
                } else if names[..i].contains(c) {
                    problems.push(Problem::new(
                        format!("{key}[{i}]"),
                        format!("channel `{c}` is listed twice"),
                    ));
                }
            }
        };
        match (&self.kind, &self.optional) {
            (_, Optional::List(l)) => check("selector.optional".into(), l),
            (_, Optional::ByValue(m)) => {
                for (v, l) in m {
                    check(format!("selector.optional.{v}"), l);
                }
            }
        }
        for (v, l) in &self.mapping {
            check(format!("selector.mapping.{v}"), l);
        }
        check("selector.default".into(), &self.default);
        let mut refuse = |key: &str, message: &str| {
            problems.push(Problem::new(format!("selector.{key}"), message));
        };
        if self.kind != SelectorKind::Multiplexing {
            for (key, set) in [
                ("header", self.header.is_some()),
                ("mapping", !self.mapping.is_empty()),
                ("default", !self.default.is_empty()),
            ] {
                if set {
                    refuse(key, "only a multiplexing selector takes this option");
                }
            }
        }
        match self.kind {
            SelectorKind::Replicating => {
                if matches!(self.optional, Optional::ByValue(_)) {
                    refuse(
                        "optional",
                        "a replicating selector takes a list of channels here",
                    );
                }
            }
            SelectorKind::Multiplexing => {
                if self.header.as_deref().is_none_or(str::is_empty) {
                    refuse(
                        "header",
                        "missing: a multiplexing selector chooses by the value of this header",
                    );
                }
                if matches!(&self.optional, Optional::List(l) if !l.is_empty()) {
                    refuse(
                        "optional",
                        "a multiplexing selector takes channels by header value here \
                         (`optional: {VALUE: [c3]}`)",
                    );
                }
                for (v, l) in &self.mapping {
                    if l.is_empty() {
                        problems.push(Problem::new(
                            format!("selector.mapping.{v}"),
                            "names no channel (leave the value out to use `default`)",
                        ));
                    }
                }
                for c in channels {
                    let named = self
                        .mapping
                        .values()
                        .chain(
                            match &self.optional {
                                Optional::ByValue(m) => Some(m.values()),
                                Optional::List(_) => None,
                            }
                            .into_iter()
                            .flatten(),
                        )
                        .chain(std::iter::once(&self.default))
                        .any(|l| l.contains(c));
                    if !named {
                        problems.push(Problem::new(
                            list_key,
                            format!(
                                "channel `{c}` is in no mapping, default or optional list of \
                                 the multiplexing selector: nothing would be put into it"
                            ),
                        ));
                    }
                }
            }
            SelectorKind::Partitioned => {
                if !self.optional.is_empty() {
                    refuse(
                        "optional",
                        "a partitioned selector sends each file to one channel, which must \
                         take all of it: no channel can be optional",
                    );
                }
            }
        }
        problems
    }
}

/// Header values as map keys: text, or a number or boolean written without quotes, taken as
/// its text.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a map of header values to channel lists.
struct ByValue;

impl<'de> Visitor<'de> for ByValue {
    type Value = BTreeMap<String, Vec<String>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of header values to lists of channels")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(Text(k)) = map.next_key()? {
            let v: Vec<String> = map.next_value()?;
            if out.insert(k.clone(), v).is_some() {
                return Err(de::Error::custom(format!("header value `{k}` given twice")));
            }
        }
        Ok(out)
    }
}

fn by_value<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    d.deserialize_map(ByValue)
}

/// `optional`: a list of channels, or a map of header values to lists of channels.
fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Optional, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Optional;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of channels, or a map of header values to lists of channels")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Optional, E> {
            Ok(Optional::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Optional, A::Error> {
            let mut out = Vec::new();
            while let Some(c) = seq.next_element()? {
                out.push(c);
            }
            Ok(Optional::List(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Optional, A::Error> {
            ByValue.visit_map(map).map(Optional::ByValue)
        }
    }
    d.deserialize_any(V)
}
