//! The secret values of the running configuration, and the masking of them in everything the
//! agent prints: log lines, error messages, `validate` and `convert` output, and the HTTP
//! endpoint's pages.
//!
//! A value is secret when it is the value of a password-like key ([`SECRET_KEYS`]:
//! `sasl.password`, `tls.key_password`, librdkafka's `sasl.password`, `ssl.key.password`,
//! ...), however it was written (literally, `${VAR}`, `${file:...}`). Option types keep such
//! values in [`sluice_channels::Secret`], which never prints; this registry is the second
//! line, for text that quotes a value anyway (librdkafka's messages, a parser's error).
//!
//! Masking works on text, so it would also hit the program's own words: a password `total`
//! would rename every `*_total` metric. So values shorter than [`MIN_MASKED`] are masked only
//! in their own fields, and `/metrics` (names and component labels only) is never masked.

use std::borrow::Cow;
use std::sync::RwLock;

use sluice_channels::MASK;

use crate::config::tree::{Map, Node};

/// Keys whose values are secrets, wherever they stand in a configuration (with librdkafka's
/// [`sluice_sinks::kafka::SECRET_SETTINGS`] as written under `producer:`).
pub const SECRET_KEYS: [&str; 2] = ["password", "key_password"];

/// Values shorter than this are not masked in free text: a short password is likely a word
/// of the program's own text (`kafka`, `ERROR`, `sluice`), which masking would mangle and,
/// by the gap, give away. Their own fields still print as `***`.
pub const MIN_MASKED: usize = 8;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds `value` to the values masked from now on (ignored when shorter than [`MIN_MASKED`]),
/// with the forms a log line may escape it to: a text log quotes field values as Rust's
/// `Debug` does, a JSON log as JSON does (`a"b` is written `a\"b`).
pub fn register(value: &str) {
    if value.len() < MIN_MASKED {
        return;
    }
    let debug = format!("{value:?}");
    let json = serde_json::to_string(value).unwrap_or_default();
    let forms = [
        value,
        unquote(&debug).unwrap_or(value),
        unquote(&json).unwrap_or(value),
    ];
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !all.iter().any(|v| v == form) {
            all.push(form.to_owned());
        }
    }
    // Longest first, so that a secret holding another is masked whole.
    all.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// `s` without the double quotes around it.
fn unquote(s: &str) -> Option<&str> {
    s.strip_prefix('"')?.strip_suffix('"')
}

/// Whether the value of `key` (the last part of a key path) is a secret.
pub fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.contains(&key) || sluice_sinks::kafka::SECRET_SETTINGS.contains(&key)
}

/// Registers the values of every secret key in the configuration tree `map`.
pub fn register_tree(map: &Map) {
    for (key, value) in map.named() {
        match value {
            Node::Scalar(s) if is_secret_key(key) => register(&s.to_string()),
            Node::Map(m) => register_tree(m),
            Node::List(items) => items
                .iter()
                .filter_map(Node::as_map)
                .for_each(register_tree),
            _ => {}
        }
    }
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn mask(text: &str) -> Cow<'_, str> {
    let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for s in all.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// [`mask`] for bytes that may not be UTF-8 (a log line): masked where they are.
pub fn mask_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let found = |b: &[u8], s: &str| memchr::memmem::find(b, s.as_bytes()).is_some();
    if !all.iter().any(|s| found(bytes, s)) {
        return Cow::Borrowed(bytes);
    }
    let mut out = bytes.to_vec();
    for s in all.iter() {
        let mut masked = Vec::with_capacity(out.len());
        let mut rest = out.as_slice();
        while let Some(at) = memchr::memmem::find(rest, s.as_bytes()) {
            masked.extend_from_slice(&rest[..at]);
            masked.extend_from_slice(MASK.as_bytes());
            rest = &rest[at + s.len()..];
        }
        masked.extend_from_slice(rest);
        out = masked;
    }
    Cow::Owned(out)
}

/// A writer that masks secrets in what it passes on to `W`; each `write` is taken as whole
/// lines (as `tracing`'s formatter writes one event at a time).
pub struct Masking<W>(pub W);

impl<W: std::io::Write> std::io::Write for Masking<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&mask_bytes(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_masked_in_text_and_bytes_longest_first() {
        register("pw-one-7781");
        register("pw-one-7781-longer");
        register("abcdefg");
        assert_eq!(
            mask("a pw-one-7781-longer b pw-one-7781 c abcdefg"),
            "a *** b *** c abcdefg"
        );
        assert_eq!(
            &*mask_bytes(b"\xff pw-one-7781 \xfe"),
            b"\xff *** \xfe".as_slice()
        );
        assert!(matches!(mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_secret_is_masked_also_as_a_text_or_json_log_escapes_it() {
        let secret = "q\"uo\\te\nd-pw";
        register(secret);
        let debug = format!("reason={secret:?}");
        let json = serde_json::json!({ "reason": secret }).to_string();
        assert_eq!(mask(&debug), "reason=\"***\"");
        assert_eq!(mask(&json), "{\"reason\":\"***\"}");
    }

    #[test]
    fn the_masking_writer_passes_every_byte_but_the_secrets() {
        register("writer-secret-55");
        let mut out = Masking(Vec::new());
        std::io::Write::write_all(&mut out, b"x=writer-secret-55\n").unwrap();
        assert_eq!(out.0, b"x=***\n");
    }
}
