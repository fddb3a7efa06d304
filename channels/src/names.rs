//! File names as reports and logs show them: raw bytes made printable on one line.
//!
//! A file name on Unix is any bytes but `/` and NUL: invalid UTF-8 and control characters
//! (a newline) included. Names are compared as bytes; for a report or a log line they are
//! escaped so that each stays on its line (a name cannot forge another log line) and no two
//! names look alike.

use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `bytes` as printable text on one line: valid UTF-8 passes through, except `\` (shown as
/// `\\`), `\n`, `\r` and `\t` (shown so), other control characters and line or paragraph
/// separators (`\u{85}`, `\u{2028}`, ... shown as `\u{...}`, ASCII ones as `\xNN`), and bytes
/// that are not UTF-8 (`\xNN`). Distinct names stay distinct.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// A path as [`escape`] shows it.
pub fn escape_path(path: &Path) -> String {
    escape(path.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_and_utf8_pass_through() {
        assert_eq!(escape(b"/var/spool/app.log"), "/var/spool/app.log");
        assert_eq!(escape("/logs/café €.log".as_bytes()), "/logs/café €.log");
        // U+FFFD (what a lossy conversion leaves) is a character like any other.
        assert_eq!(escape("a\u{fffd}.log".as_bytes()), "a\u{fffd}.log");
    }

    #[test]
    fn invalid_utf8_and_control_characters_are_escaped_on_one_line() {
        assert_eq!(escape(b"bad-\xff\xfe.log"), "bad-\\xff\\xfe.log");
        assert_eq!(escape(b"two\nlines\r\t.log"), "two\\nlines\\r\\t.log");
        assert_eq!(escape(b"bell\x07\x7f"), "bell\\x07\\x7f");
        assert_eq!(
            escape("nel\u{85}ls\u{2028}".as_bytes()),
            "nel\\u{85}ls\\u{2028}"
        );
        // A truncated UTF-8 sequence: its bytes, each escaped.
        assert_eq!(escape(b"e\xc3"), "e\\xc3");
        for name in [&b"x\xff\n\x00\xe2\x80\xa8"[..], "é\u{85}".as_bytes()] {
            assert!(!escape(name).contains(['\n', '\r', '\u{85}', '\u{2028}']));
        }
    }

    #[test]
    fn a_backslash_is_escaped_so_that_distinct_names_stay_distinct() {
        assert_eq!(escape(b"a\\xff"), "a\\\\xff");
        assert_ne!(escape(b"a\\xff"), escape(b"a\xff"));
        assert_ne!(escape(b"a\\n"), escape(b"a\n"));
    }
}
