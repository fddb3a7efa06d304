//! The YAML front end: configuration text to the [`Map`] of agents that
//! [`from_tree`](super::from_tree) validates.
//!
//! `${VAR}` references are substituted into the parsed values (never into the text, see
//! [`envsubst`]), merge keys (`<<: *anchor`) are applied, and top-level keys starting with
//! `x-` (which hold the anchors) are left out. An integer too large for serde_yaml's 64 bits
//! still parses: it becomes a [`Scalar::TooLarge`] that every option refuses under its key.

use std::path::Path;

use serde_yaml::Value;

use super::ConfigError;
use super::tree::{Map, Node, Scalar};
use crate::envsubst;

/// Top-level keys with this prefix hold anchors to merge, not agents.
const TEMPLATE_PREFIX: &str = "x-";

/// How many levels of merge keys within merged mappings are applied.
const MAX_MERGE_DEPTH: usize = 16;

/// Stands in for an integer too large for any option, so that the file still parses and the
/// problem is reported under its key.
const OUT_OF_RANGE: &str = "\u{1}sluice-out-of-range:";
/// [`OUT_OF_RANGE`] as written in a double-quoted YAML string.
const OUT_OF_RANGE_YAML: &str = "\\x01sluice-out-of-range:";

/// The agents `text` (read from `file`) defines, by name; `env` looks up `${VAR}`
/// references. Problems with the file itself (syntax, an unset variable, a top level that
/// is not a mapping) are reported under the file's name.
pub fn read(
    text: &str,
    file: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Map, ConfigError> {
    let file = file.display().to_string();
    let marked = envsubst::mark(text, env).map_err(|e| ConfigError::one(&file, e.to_string()))?;
    let mut text = marked.text.clone();
    let mut value: Value = loop {
        match serde_yaml::from_str(&text) {
            Ok(v) => break v,
            Err(e) => match mark_out_of_range(&text, &e) {
                Some(marked) => text = marked,
                None => return Err(ConfigError::one(&file, e.to_string())),
            },
        }
    };
    // `<<: *anchor` merge keys; a merged mapping may hold merge keys itself.
    for _ in 0..MAX_MERGE_DEPTH {
        if !has_merge_key(&value) {
            break;
        }
        value
            .apply_merge()
            .map_err(|e| ConfigError::one(&file, format!("merge key `<<`: {e}")))?;
    }
    // Values from the environment go in only now, into the parsed strings.
    marked.resolve(&mut value);
    match node(value) {
        Node::Map(mut agents) => {
            agents.retain(|k| !k.as_str().is_some_and(|k| k.starts_with(TEMPLATE_PREFIX)));
            Ok(agents)
        }
        Node::Null => Err(ConfigError::one(file, "the file defines no agent")),
        _ => Err(ConfigError::one(
            file,
            "the top level must map agent names to agents",
        )),
    }
}

/// `value` as a tree node. A tag (`!name value`) is dropped: the value counts as written
/// without it.
fn node(value: Value) -> Node {
    match value {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Scalar(Scalar::Bool(b)),
        Value::Number(n) => Node::Scalar(match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Scalar::UInt(u),
            (None, Some(i)) => Scalar::Int(i),
            (None, None) => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Node::Scalar(match s.strip_prefix(OUT_OF_RANGE) {
            Some(number) => Scalar::TooLarge(number.to_owned()),
            None => Scalar::Str(s),
        }),
        Value::Sequence(items) => Node::List(items.into_iter().map(node).collect()),
        Value::Mapping(m) => Node::Map(m.into_iter().map(|(k, v)| (node(k), node(v))).collect()),
        Value::Tagged(t) => node(t.value),
    }
}

fn has_merge_key(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        Value::Sequence(s) => s.iter().any(has_merge_key),
        Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

/// When `error` is serde_yaml refusing an integer beyond 64 bits, `text` with that integer
/// replaced by an [`OUT_OF_RANGE`] string, so that parsing can go on and the problem be named
/// under its key.
fn mark_out_of_range(text: &str, error: &serde_yaml::Error) -> Option<String> {
    let message = error.to_string();
    // serde_yaml may put the key path in front of the message.
    if !(message.contains("invalid type: integer `")
        && (message.contains("` as u128") || message.contains("` as i128")))
    {
        return None;
    }
    let loc = error.location()?;
    // The line and column (1-based, in characters) of the integer.
    let line_start: usize = text
        .split_inclusive('\n')
        .take(loc.line().checked_sub(1)?)
        .map(str::len)
        .sum();
    let line = text[line_start..].split('\n').next()?;
    let start = line_start
        + line
            .char_indices()
            .nth(loc.column().checked_sub(1)?)
            .map(|(i, _)| i)?;
    let len = text[start..]
        .find(|c: char| c.is_whitespace() || matches!(c, ',' | ']' | '}' | '#'))
        .unwrap_or(text.len() - start);
    let number = &text[start..start + len];
    if number.is_empty()
        || !number
            .trim_start_matches(['+', '-'])
            .starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    Some(format!(
        "{}\"{OUT_OF_RANGE_YAML}{number}\"{}",
        &text[..start],
        &text[start + len..]
    ))
}
