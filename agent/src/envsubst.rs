//! `${VAR}` and `${VAR:-default}` substitution into configuration *values*, and
//! `${file:/path}`, a file's content (a secret mounted as a file, the way Kubernetes does).
//!
//! References are found in the text (so that an unset one is named by its line), replaced by
//! placeholders, and the document is parsed; the values then go into the parsed strings. A
//! value is never parsed as YAML, so whatever it holds (`#`, `\`, `: `, quotes, a newline)
//! stays in the one value it was meant for: it can neither add keys nor lose a part to a
//! comment. A value is text, exactly as written (`0x10`, `TRUE` and `12 #2` stay so); the
//! configuration reads text as a number or a boolean where an option expects one, so
//! `capacity: ${CAP}` works. A whole unquoted reference to an empty value is no value.

use serde_yaml::Value;

/// A reference that cannot be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A variable that is not set and has no default.
    #[error("line {line}: ${{{var}}} is not set (give it a default with ${{{var}:-value}})")]
    Unset {
        /// The 1-based line of the reference.
        line: usize,
        /// The variable's name.
        var: String,
    },
    /// `${` without its `}` on the same line.
    #[error("line {line}: `${{` without a closing `}}` (write `$$` for a literal `$`)")]
    Unclosed {
        /// The 1-based line.
        line: usize,
    },
    /// `${...}` whose name is not a variable name (letters, digits and `_`, not starting
    /// with a digit): most likely a `${` left unclosed before a `}` further on.
    #[error(
        "line {line}: `${{{text}}}` is not a variable reference (a name is letters, digits and `_`; write `$$` for a literal `$`)"
    )]
    BadName {
        /// The 1-based line.
        line: usize,
        /// What stood between the braces.
        text: String,
    },
    /// `${file:PATH}` whose file cannot be read (its content is never quoted).
    #[error("line {line}: ${{file:{path}}}: cannot read: {reason}")]
    File {
        /// The 1-based line of the reference.
        line: usize,
        /// The path as written.
        path: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// The text holds a character the placeholders are made of.
    #[error("line {line}: the character U+E000 or U+E001 is not allowed in a configuration")]
    Reserved {
        /// The 1-based line.
        line: usize,
    },
}

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// The configuration text with each reference replaced by a placeholder, and the values.
#[derive(Debug)]
pub struct Marked {
    /// The text to parse.
    pub text: String,
    refs: Vec<Ref>,
}

#[derive(Debug)]
struct Ref {
    value: String,
    /// Written between quotes, where it is a string whatever it holds.
    quoted: bool,
}

/// Finds the references in `text` and looks them up with `lookup`; `$$` stands for `$`.
/// Comment lines (first non-blank character `#`) are left as they are. A variable that is set
/// but empty takes the default, as in the shell.
pub fn mark(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Marked, EnvError> {
    let mut out = String::with_capacity(text.len());
    let mut refs = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        if line.contains([OPEN, CLOSE]) {
            return Err(EnvError::Reserved { line: line_no });
        }
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = body.find('}').ok_or(EnvError::Unclosed { line: line_no })?;
                let inner = &body[..end];
                if let Some(path) = inner.strip_prefix("file:") {
                    let value = read_file(path).map_err(|reason| EnvError::File {
                        line: line_no,
                        path: path.to_owned(),
                        reason,
                    })?;
                    push_ref(&mut out, &mut refs, value);
                    rest = &body[end + 1..];
                    continue;
                }
                let (var, default) = match inner.split_once(":-") {
                    Some((v, d)) => (v, Some(d)),
                    None => (inner, None),
                };
                let name_ok = var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !name_ok {
                    return Err(EnvError::BadName {
                        line: line_no,
                        text: inner.to_owned(),
                    });
                }
                let value = match (lookup(var).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_owned(),
                    (None, None) => {
                        return Err(EnvError::Unset {
                            line: line_no,
                            var: var.to_owned(),
                        });
                    }
                };
                push_ref(&mut out, &mut refs, value);
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(Marked { text: out, refs })
}

/// Puts the placeholder of a new reference to `value` at the end of `out`.
fn push_ref(out: &mut String, refs: &mut Vec<Ref>, value: String) {
    let quoted = out.ends_with(['"', '\'']);
    out.push(OPEN);
    out.push_str(&refs.len().to_string());
    out.push(CLOSE);
    refs.push(Ref { value, quoted });
}

/// The most a `${file:...}` file may hold: a secret, not a data file (and never an endless
/// device read to the end).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The content of a `${file:...}` file, without one trailing line break (`echo pw > f` and
/// Kubernetes' secrets without one both give `pw`).
fn read_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    if path.is_empty() {
        return Err("no path after `file:`".to_owned());
    }
    let file = sluice_channels::fsutil::open_regular_file(std::path::Path::new(path))
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    // The limit is on the value: a trailing line break (two bytes with CR) may come on top.
    file.take(MAX_FILE_BYTES + 3)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let value_len = bytes.len()
        - [&b"\r\n"[..], b"\n"]
            .iter()
            .find(|end| bytes.ends_with(end))
            .map_or(0, |end| end.len());
    if value_len as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (at byte {})", e.utf8_error().valid_up_to()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

impl Marked {
    /// Puts the values into the strings (and mapping keys) of `value`, parsed from
    /// [`Marked::text`].
    pub fn resolve(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some(v) = self.whole(s) {
                    *value = v;
                } else if s.contains(OPEN) {
                    *s = self.fill(s);
                }
            }
            Value::Sequence(items) => items.iter_mut().for_each(|v| self.resolve(v)),
            Value::Mapping(m) => {
                let marked_keys = m
                    .keys()
                    .any(|k| k.as_str().is_some_and(|k| k.contains(OPEN)));
                if marked_keys {
                    let old = std::mem::take(m);
                    for (mut k, v) in old {
                        if let Value::String(s) = &mut k {
                            *s = self.fill(s);
                        }
                        m.insert(k, v);
                    }
                }
                m.values_mut().for_each(|v| self.resolve(v));
            }
            Value::Tagged(t) => self.resolve(&mut t.value),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// The value of a string that is one reference: the value as written, as text (the
    /// configuration reads text as a number or a boolean where one is expected, so
    /// `capacity: ${CAP}` works, and `0x10`, `12 #2` or `TRUE` reach a setting unchanged);
    /// nothing for an empty unquoted value.
    fn whole(&self, s: &str) -> Option<Value> {
        let r = &self.refs[self.index(s.strip_prefix(OPEN)?.strip_suffix(CLOSE)?)?];
        if !r.quoted && r.value.is_empty() {
            return Some(Value::Null);
        }
        Some(Value::String(r.value.clone()))
    }

    fn index(&self, digits: &str) -> Option<usize> {
        digits.parse().ok().filter(|&i| i < self.refs.len())
    }

    /// `s` with every placeholder replaced by its value.
    fn fill(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find(OPEN) {
            out.push_str(&rest[..start]);
            let after = &rest[start + OPEN.len_utf8()..];
            let Some(end) = after.find(CLOSE) else {
                break;
            };
            if let Some(i) = self.index(&after[..end]) {
                out.push_str(&self.refs[i].value);
            }
            rest = &after[end + CLOSE.len_utf8()..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka:9092".into()),
            "EMPTY" => Some(String::new()),
            "N" => Some("500".into()),
            "HOSTILE" => Some("a\\b #c\nacks: 0\n\"q\" 'x': y".into()),
            _ => None,
        }
    }

    fn load(text: &str) -> Value {
        let m = mark(text, env).unwrap();
        let mut v: Value = serde_yaml::from_str(&m.text).unwrap();
        m.resolve(&mut v);
        v
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let text = "a: ${HOST}\nb: ${NOPE:-/var/lib}/x\nc: ${EMPTY:-d}\nd: $$5 and $ alone\n";
        let want: Value =
            serde_yaml::from_str("a: kafka:9092\nb: /var/lib/x\nc: d\nd: $5 and $ alone\n")
                .unwrap();
        assert_eq!(load(text), want);
    }

    #[test]
    fn a_whole_reference_is_its_value_as_written_and_an_empty_unquoted_one_is_nothing() {
        let v = load(
            "n: ${N}\nq: \"${N}\"\ns: '${N}'\nb: ${NOPE:-TRUE}\ne: ${NOPE:-}\nh: ${NOPE:-0x10}\nm: x${N}\n",
        );
        let want: Value = serde_yaml::from_str(
            "n: '500'\nq: '500'\ns: '500'\nb: 'TRUE'\ne:\nh: '0x10'\nm: x500\n",
        )
        .unwrap();
        assert_eq!(v, want);
    }

    #[test]
    fn a_value_is_never_parsed_as_yaml() {
        let v = load("k1:\n  password: ${HOSTILE}\n  acks: all\n  list: [${HOSTILE}]\n");
        let hostile = env("HOSTILE").unwrap();
        assert_eq!(v["k1"]["password"], Value::String(hostile.clone()));
        assert_eq!(
            v["k1"]["acks"],
            Value::String("all".into()),
            "no key injected"
        );
        assert_eq!(v["k1"]["list"][0], Value::String(hostile));
        assert_eq!(v["k1"].as_mapping().unwrap().len(), 3);
    }

    #[test]
    fn keys_are_substituted_too() {
        let v = load("${NOPE:-a1}:\n  x: 1\n");
        assert_eq!(v["a1"]["x"], Value::Number(1.into()));
    }

    #[test]
    fn an_unset_variable_without_default_names_its_line() {
        let err = mark("a: 1\nb: ${MISSING}\n", env).unwrap_err();
        assert_eq!(
            err,
            EnvError::Unset {
                line: 2,
                var: "MISSING".into()
            }
        );
        assert!(err.to_string().contains("${MISSING}"));
    }

    #[test]
    fn an_unclosed_reference_is_an_error() {
        let err = mark("a: 1\nb: /data/${X\n", env).unwrap_err();
        assert_eq!(err, EnvError::Unclosed { line: 2 });
    }

    #[test]
    fn a_brace_that_closes_something_else_is_not_a_name() {
        let err = mark("r1: { dir: /data/${SPOOL, channel: c1 }\n", env).unwrap_err();
        assert!(
            matches!(&err, EnvError::BadName { line: 1, text } if text == "SPOOL, channel: c1 "),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_reference_is_the_file_without_its_last_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cr#t: x\n").unwrap();
        let v = load(&format!(
            "k: {{ password: ${{file:{}}}, other: \"a${{file:{}}}\" }}\n",
            f.display(),
            f.display()
        ));
        assert_eq!(v["k"]["password"], Value::String("s3cr#t: x".into()));
        assert_eq!(v["k"]["other"], Value::String("as3cr#t: x".into()));
    }

    #[test]
    fn an_unreadable_file_reference_names_its_line_and_path_and_never_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = mark(&format!("a: 1\nb: ${{file:{}}}\n", missing.display()), env).unwrap_err();
        assert!(
            matches!(&err, EnvError::File { line: 2, path, .. } if *path == missing.display().to_string()),
            "{err:?}"
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let err = mark(&format!("b: ${{file:{}}}\n", big.display()), env).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        let err = mark(&format!("b: ${{file:{}}}\n", dir.path().display()), env).unwrap_err();
        assert!(err.to_string().contains("folder"), "{err}");
        let bin = dir.path().join("bin");
        std::fs::write(&bin, b"secret\xff").unwrap();
        let err = mark(&format!("b: ${{file:{}}}\n", bin.display()), env).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn comments_are_left_alone() {
        assert_eq!(
            mark("  # ${MISSING}\n", env).unwrap().text,
            "  # ${MISSING}\n"
        );
    }
}
