//! A configuration as a tree of values, whatever format it was written in, and the one
//! deserializer that turns a part of it into a component's option struct.
//!
//! A front end (YAML today) only builds the tree. Everything after works on the tree: the
//! components are found in it, and each one's options are deserialized from it with
//! [`deserialize`], which tracks the key path as it goes, so that every error names the exact
//! key (`a1.sinks.k1.batch_size: ...`) without any front end knowing about it.
//!
//! A value written as text (a [`Scalar::Str`]) is taken as a number or a boolean where one
//! is expected and it reads as one, so that formats that only have text (Flume properties:
//! `batchSize = 100`) work; durations and byte sizes read text themselves. A typed value (a
//! YAML `100` or `true`) is taken as what it is, and refused where it does not fit.

use std::fmt;
use std::num::IntErrorKind;

use serde::Deserialize;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Expected, MapAccess, SeqAccess, Unexpected, Visitor};
use sluice_channels::config::Problem;

/// One value of a configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// No value (in YAML, `key:` with nothing after it): an absent option, an empty list or
    /// an empty map, whichever is expected.
    Null,
    /// A single value.
    Scalar(Scalar),
    /// Values in order.
    List(Vec<Node>),
    /// Keys and their values, in the order written.
    Map(Map),
}

/// A single value, and whether it was written as text or as a typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// Text; read as a number or a boolean where one is expected, if it reads as one.
    Str(String),
    /// A typed boolean.
    Bool(bool),
    /// A typed whole number, zero or more.
    UInt(u64),
    /// A typed negative whole number.
    Int(i64),
    /// A typed number with a fraction or an exponent.
    Float(f64),
    /// A typed whole number too large for any option, as written: refused wherever it is.
    TooLarge(String),
}

impl fmt::Display for Scalar {
    /// The value as it would be written: the text of a string, the digits of a number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) | Scalar::TooLarge(s) => f.write_str(s),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::UInt(n) => write!(f, "{n}"),
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Float(x) => write!(f, "{x}"),
        }
    }
}

/// Keys and their values, in the order written. A key is a node too: formats with typed
/// keys (YAML) keep their type, and a key that is not text is refused where a name is
/// expected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Map {
    entries: Vec<(Node, Node)>,
}

impl Map {
    /// Adds `key` with `value` at the end; a key already there keeps its place and takes the
    /// new value.
    pub fn insert(&mut self, key: Node, value: Node) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The value under the text key `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Takes out the value under the text key `key`.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(key))?;
        Some(self.entries.remove(i).1)
    }

    /// The text keys and their values, in order (keys of other types are left out).
    pub fn named(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
    }

    /// Keeps only the entries whose key `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&Node) -> bool) {
        self.entries.retain(|(k, _)| keep(k));
    }
}

impl FromIterator<(Node, Node)> for Map {
    fn from_iter<I: IntoIterator<Item = (Node, Node)>>(entries: I) -> Self {
        let mut map = Map::default();
        for (k, v) in entries {
            map.insert(k, v);
        }
        map
    }
}

impl Node {
    /// The text, if this is a text value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The map, if this is one.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Node::Map(m) => Some(m),
            _ => None,
        }
    }
}

/// Deserializes `node`, found at the key path `at`, into `T`. A problem names the key path
/// of the value at fault: `at` and the keys (`.key`) and list positions (`[0]`) below it.
pub fn deserialize<'a, T: Deserialize<'a>>(node: &'a Node, at: &str) -> Result<T, Problem> {
    let walker = Walker {
        node,
        path: at.to_owned(),
    };
    T::deserialize(walker).map_err(|e| {
        let e = e.at(at);
        Problem::new(e.key.unwrap_or_default(), e.message)
    })
}

/// Why a node does not fit: a message, and the key path it concerns once known.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Error {
    /// The key path, set where the value at fault was handed to its type: the innermost
    /// such place the error passes.
    key: Option<String>,
    /// A missing field, named below the map the error is raised for.
    missing: Option<&'static str>,
    message: String,
}

impl Error {
    /// The error at `path`, unless a node below already placed it.
    fn at(mut self, path: &str) -> Self {
        if self.key.is_none() {
            self.key = Some(match self.missing {
                Some(field) => format!("{path}.{field}"),
                None => path.to_owned(),
            });
        }
        self
    }

    fn too_large(number: &str) -> Self {
        de::Error::custom(format!(
            "`{number}` is out of range for this key (too large)"
        ))
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error {
            key: None,
            missing: None,
            message: message.to_string(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Error {
            missing: Some(field),
            ..Error::custom("missing")
        }
    }

    fn unknown_field(_field: &str, expected: &'static [&'static str]) -> Self {
        let expected = match expected {
            [] => "no options".to_owned(),
            [one] => format!("`{one}`"),
            [a, b] => format!("`{a}` or `{b}`"),
            many => format!("one of `{}`", many.join("`, `")),
        };
        Error::custom(format!("unknown key (expected {expected})"))
    }

    /// An integer outside its type's range says what the range is.
    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        let number = match unexpected {
            Unexpected::Signed(n) => Some(i128::from(n)),
            Unexpected::Unsigned(n) => Some(i128::from(n)),
            _ => None,
        };
        match number.zip(integer_range(&expected.to_string())) {
            Some((n, (lo, hi))) => Error::custom(format!(
                "invalid value `{n}`: out of range for this key ({lo} to {hi})"
            )),
            None => Error::custom(format!("invalid value: {unexpected}, expected {expected}")),
        }
    }
}

/// The range of the integer type serde names `name`.
fn integer_range(name: &str) -> Option<(i128, i128)> {
    Some(match name {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" => (0, u64::MAX.into()),
        "usize" => (0, usize::MAX as i128),
        "i8" => (i8::MIN.into(), i8::MAX.into()),
        "i16" => (i16::MIN.into(), i16::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

/// What the type being deserialized asked for.
#[derive(Clone, Copy)]
enum Want {
    /// Whatever the node holds.
    Any,
    Bool,
    Unsigned,
    Signed,
    Float,
    Option,
    Seq,
    Map,
    Enum,
    Newtype,
    Ignored,
}

/// A node and its key path, as a serde deserializer. The path goes into an error where a
/// node is handed to the type that asked for it (a key, a value, a list item, the root), so
/// that errors the type raises after reading the node (a template that does not compile, a
/// missing field) are placed too.
struct Walker<'a> {
    node: &'a Node,
    path: String,
}

impl<'de> Walker<'de> {
    /// Hands the node to `visitor` as `want` asks.
    fn walk<V: Visitor<'de>>(self, want: Want, visitor: V) -> Result<V::Value, Error> {
        let node = self.node;
        match (want, node) {
            (Want::Ignored, _) => visitor.visit_unit(),
            (Want::Option, Node::Null) => visitor.visit_none(),
            (Want::Option, _) => visitor.visit_some(self),
            (Want::Newtype, _) => visitor.visit_newtype_struct(self),
            (_, Node::Scalar(Scalar::TooLarge(n))) => Err(Error::too_large(n)),
            (Want::Seq | Want::Any, Node::List(items)) => {
                visitor.visit_seq(Items::new(items, self.path))
            }
            (Want::Seq, Node::Null) => visitor.visit_seq(Items::new(&[], self.path)),
            (Want::Map | Want::Any, Node::Map(map)) => {
                visitor.visit_map(Entries::new(&map.entries, self.path))
            }
            (Want::Map, Node::Null) => visitor.visit_map(Entries::new(&[], self.path)),
            (Want::Enum, Node::Scalar(Scalar::Str(s))) => {
                visitor.visit_enum(BorrowedStrDeserializer::new(s.as_str()))
            }
            (Want::Seq | Want::Map | Want::Enum, _) | (_, Node::List(_) | Node::Map(_)) => {
                Err(de::Error::invalid_type(unexpected(node), &visitor))
            }
            (_, Node::Null) => visitor.visit_unit(),
            (_, Node::Scalar(Scalar::Str(s))) => text(s, want, visitor),
            (_, Node::Scalar(Scalar::Bool(b))) => visitor.visit_bool(*b),
            (_, Node::Scalar(Scalar::UInt(n))) => visitor.visit_u64(*n),
            (_, Node::Scalar(Scalar::Int(n))) => visitor.visit_i64(*n),
            (_, Node::Scalar(Scalar::Float(x))) => visitor.visit_f64(*x),
        }
    }
}

/// Text where `want` is asked for: a number or a boolean if it reads as one (a whole number
/// beyond 64 bits is too large, as a typed one is), else the text, which the visitor takes
/// or refuses.
fn text<'de, V: Visitor<'de>>(s: &'de str, want: Want, visitor: V) -> Result<V::Value, Error> {
    match want {
        Want::Bool => match s {
            "true" | "True" | "TRUE" => return visitor.visit_bool(true),
            "false" | "False" | "FALSE" => return visitor.visit_bool(false),
            _ => {}
        },
        Want::Float => {
            if let Ok(x) = s.parse() {
                return visitor.visit_f64(x);
            }
        }
        Want::Unsigned | Want::Signed => {
            if let Ok(n) = s.parse() {
                return visitor.visit_u64(n);
            }
            match s.parse::<i64>() {
                Ok(n) => return visitor.visit_i64(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
                    ) =>
                {
                    return Err(Error::too_large(s));
                }
                Err(_) => {}
            }
        }
        _ => {}
    }
    visitor.visit_borrowed_str(s)
}

/// What a node is, for "invalid type" messages.
fn unexpected(node: &Node) -> Unexpected<'_> {
    match node {
        Node::Null => Unexpected::Unit,
        Node::Scalar(Scalar::Str(s) | Scalar::TooLarge(s)) => Unexpected::Str(s),
        Node::Scalar(Scalar::Bool(b)) => Unexpected::Bool(*b),
        Node::Scalar(Scalar::UInt(n)) => Unexpected::Unsigned(*n),
        Node::Scalar(Scalar::Int(n)) => Unexpected::Signed(*n),
        Node::Scalar(Scalar::Float(x)) => Unexpected::Float(*x),
        Node::List(_) => Unexpected::Seq,
        Node::Map(_) => Unexpected::Map,
    }
}

/// The key path of `key` below `path`: `path.key`, or `path.?` for a key that is not a
/// single value.
fn key_path(path: &str, key: &Node) -> String {
    match key {
        Node::Scalar(s) => format!("{path}.{s}"),
        _ => format!("{path}.?"),
    }
}

/// `deserialize_*` methods that hand the node over as `Want::X` asks.
macro_rules! wants {
    ($($method:ident => $want:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
                self.walk(Want::$want, v)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Walker<'de> {
    type Error = Error;

    wants! {
        deserialize_any => Any,
        deserialize_bool => Bool,
        deserialize_i8 => Signed,
        deserialize_i16 => Signed,
        deserialize_i32 => Signed,
        deserialize_i64 => Signed,
        deserialize_u8 => Unsigned,
        deserialize_u16 => Unsigned,
        deserialize_u32 => Unsigned,
        deserialize_u64 => Unsigned,
        deserialize_f32 => Float,
        deserialize_f64 => Float,
        deserialize_option => Option,
        deserialize_seq => Seq,
        deserialize_map => Map,
        deserialize_ignored_any => Ignored,
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        self.walk(Want::Newtype, v)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Error> {
        self.walk(Want::Seq, v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        self.walk(Want::Seq, v)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.walk(Want::Map, v)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.walk(Want::Enum, v)
    }

    /// A key naming a field is a name, whatever its type: `0:` is the unknown key `0`, never
    /// the first field.
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.node {
            Node::Scalar(Scalar::Str(s)) => v.visit_borrowed_str(s),
            Node::Scalar(other) => v.visit_string(other.to_string()),
            _ => self.walk(Want::Any, v),
        }
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct
    }
}

/// A list's items, each at `path[i]`.
struct Items<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: String,
}

impl<'a> Items<'a> {
    fn new(items: &'a [Node], path: String) -> Self {
        Items {
            items: items.iter().enumerate(),
            path,
        }
    }
}

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{i}]", self.path);
        let walker = Walker {
            node,
            path: path.clone(),
        };
        seed.deserialize(walker).map(Some).map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A map's entries, each value at `path.key`.
struct Entries<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    path: String,
    /// The value of the key just handed out, and its path.
    value: Option<(&'a Node, String)>,
}

impl<'a> Entries<'a> {
    fn new(entries: &'a [(Node, Node)], path: String) -> Self {
        Entries {
            entries: entries.iter(),
            path,
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let path = key_path(&self.path, key);
        self.value = Some((value, path.clone()));
        let walker = Walker {
            node: key,
            path: path.clone(),
        };
        seed.deserialize(walker).map(Some).map_err(|e| e.at(&path))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value asked for before its key"))?;
        let walker = Walker {
            node,
            path: path.clone(),
        };
        seed.deserialize(walker).map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
