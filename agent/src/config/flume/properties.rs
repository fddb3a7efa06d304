//! A Flume agent's `.properties` text read as Flume 1.11 reads it: `java.util.Properties`
//! syntax, then Flume's own rules (keys and values trimmed, empty values dropped) and its
//! `${...}` substitution.
//!
//! Differences from Flume, each in the user's favour: text that is valid UTF-8 is read as
//! UTF-8 (Java reads ISO-8859-1, which turns a UTF-8 `é` in a path into `Ã©`; other text is
//! still read as ISO-8859-1), and a `${...}` that names nothing set is an error naming the
//! key (Flume leaves the text as it is, which then fails somewhere else, or not at all).

use std::collections::BTreeMap;

use sluice_channels::config::Problem;

/// One property: its key and value, after escapes, and the line its key is on (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The key, trimmed.
    pub key: String,
    /// The value, trimmed and with `${...}` substituted.
    pub value: String,
    /// The value as written, before substitution.
    pub raw: String,
    /// The line of the file the property starts on.
    pub line: usize,
}

/// The properties of `bytes`, in file order, a key set twice keeping its last value (at the
/// place of its first) as in Java. Keys with an empty value are left out, as Flume does.
/// With `agent`, a `${...}` that cannot be substituted in another agent's key (or in a key
/// of no agent) drops that key instead of failing. `lookup` gives the `${env:NAME}` and
/// `${sys:NAME}` values (`sys:` being the `-D`
/// properties of the command line). `file` names the file in problems.
pub fn parse(
    bytes: &[u8],
    file: &str,
    agent: Option<&str>,
    lookup: &dyn Fn(Lookup, &str) -> Option<String>,
) -> Result<Vec<Property>, Vec<Problem>> {
    if bytes.contains(&0) {
        return Err(vec![Problem::new(
            file,
            "holds NUL bytes: not a properties file (UTF-16? save it as UTF-8 or ISO-8859-1)",
        )]);
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    };
    // Java ends a line at `\n`, `\r\n` or a lone `\r`.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut problems = Vec::new();
    let mut raw: Vec<Property> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for (line, logical) in logical_lines(&text) {
        match split(&logical) {
            Ok((key, value)) => {
                let (key, value) = (key.trim().to_owned(), value.trim().to_owned());
                let p = Property {
                    key,
                    raw: value.clone(),
                    value,
                    line,
                };
                match at.get(&p.key) {
                    Some(&i) => raw[i] = p,
                    None => {
                        at.insert(p.key.clone(), raw.len());
                        raw.push(p);
                    }
                }
            }
            Err(message) => problems.push(Problem::new(format!("{file}:{line}"), message)),
        }
    }
    raw.retain(|p| !p.value.is_empty() && !p.key.is_empty());
    let values: BTreeMap<&str, &str> = raw
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut subst = Substitution {
        props: &values,
        lookup,
        done: BTreeMap::new(),
    };
    let ours =
        |key: &str| agent.is_none_or(|a| key.strip_prefix(a).is_some_and(|r| r.starts_with('.')));
    for p in &raw {
        match substitute(&p.value, &mut subst) {
            // A value empty once substituted is dropped, as Flume drops empty values.
            Ok(value) if value.trim().is_empty() => {}
            Ok(value) => out.push(Property {
                key: p.key.clone(),
                value: value.trim().to_owned(),
                raw: p.value.clone(),
                line: p.line,
            }),
            // Only the keys of the agent asked for: another agent's are not used.
            Err(message) if ours(&p.key) => problems.push(Problem::new(&p.key, message)),
            Err(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Where a `${...}` reference is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// `${env:NAME}`, and `${NAME}` when no property is called NAME.
    Env,
    /// `${sys:NAME}`: a `-DNAME=VALUE` of the command line.
    Sys,
}

/// The logical lines of `text` and the line each starts on: comments and blank lines left
/// out, continued lines (ending in an odd number of `\`) joined without the next line's
/// leading blanks.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((i, natural)) = lines.next() {
        let first = natural.trim_end_matches('\r').trim_start_matches(is_blank);
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = String::new();
        let mut part = first.to_owned();
        loop {
            if !continues(&part) {
                logical.push_str(&part);
                break;
            }
            logical.push_str(&part[..part.len() - 1]);
            match lines.next() {
                Some((_, next)) => {
                    part = next
                        .trim_end_matches('\r')
                        .trim_start_matches(is_blank)
                        .to_owned();
                }
                None => break,
            }
        }
        out.push((i + 1, logical));
    }
    out
}

/// Java's "white space" in a properties file: space, tab, form feed.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{c}')
}

/// Whether a natural line ends in an odd number of backslashes.
fn continues(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// A logical line's key and value, escapes applied: the key ends at the first unescaped `=`,
/// `:` or blank; blanks, then one `=` or `:`, then blanks follow it.
fn split(line: &str) -> Result<(String, String), String> {
    let mut end = line.len();
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || is_blank(c) {
            end = i;
            break;
        }
    }
    let key = unescape(&line[..end])?;
    let mut rest = line[end..].trim_start_matches(is_blank);
    if let Some(r) = rest.strip_prefix(['=', ':']) {
        rest = r.trim_start_matches(is_blank);
    }
    Ok((key, unescape(rest)?))
}

/// `s` with Java's escapes applied: `\t`, `\n`, `\r`, `\f`, `\uXXXX`; a backslash before any
/// other character stands for that character.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    let mut surrogate: Option<u32> = None;
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let unit = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| format!("malformed \\uXXXX escape `\\u{hex}`"))?;
                match (surrogate.take(), unit) {
                    (None, 0xD800..=0xDBFF) => surrogate = Some(unit),
                    (Some(high), 0xDC00..=0xDFFF) => {
                        let c = 0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00);
                        out.extend(char::from_u32(c));
                    }
                    (_, unit) => out.push(char::from_u32(unit).unwrap_or('\u{FFFD}')),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// How deep `${...}` references may refer to properties that hold references.
const MAX_DEPTH: usize = 16;

/// The longest value substitution may make: references that repeat references (`b = ${a}${a}`,
/// `c = ${b}${b}`, ...) would otherwise double it at each level.
const MAX_VALUE: usize = 1 << 20;

/// `value` with its `${...}` references replaced, as Flume's `StringSubstitutor` does:
/// `${env:NAME}`, `${sys:NAME}`, `${NAME}` (another property of the file, else the
/// environment), `${NAME:-default}`, references inside references, and `$${` for a literal
/// `${`.
fn substitute(value: &str, subst: &mut Substitution<'_>) -> Result<String, String> {
    subst.resolve(value, 0)
}

/// What substitution looks references up in, and the properties it resolved already.
struct Substitution<'a> {
    props: &'a BTreeMap<&'a str, &'a str>,
    lookup: &'a dyn Fn(Lookup, &str) -> Option<String>,
    /// Properties resolved, each with the depth it was resolved at: its value holds there and
    /// at every shallower depth (a deeper one might pass [`MAX_DEPTH`]). A property referred
    /// to many times is resolved once, so that references that repeat references take time
    /// in proportion to the text, not to the value they would make.
    done: BTreeMap<String, (String, usize)>,
}

impl Substitution<'_> {
    /// The value of property `name`, whose text is `text`, referred to at `depth`.
    fn property(&mut self, name: &str, text: &str, depth: usize) -> Result<String, String> {
        if let Some((value, at)) = self.done.get(name)
            && depth <= *at
        {
            return Ok(value.clone());
        }
        let value = self.resolve(text, depth)?;
        self.done.insert(name.to_owned(), (value.clone(), depth));
        Ok(value)
    }

    fn resolve(&mut self, value: &str, depth: usize) -> Result<String, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "`${{...}}` references nested more than {MAX_DEPTH} deep (a reference to itself?)"
            ));
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(at) = rest.find("${") {
            if rest[..at].ends_with('$') {
                out.push_str(&rest[..at - 1]);
                out.push_str("${");
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            let body_start = at + 2;
            let Some(len) = closing(&rest[body_start..]) else {
                return Err(format!("`{}` has no closing `}}`", &rest[at..]));
            };
            let body = &rest[body_start..body_start + len];
            // The default is resolved only when it is used.
            let (name_raw, default_raw) = match top_level_default(body) {
                Some(at) => (&body[..at], Some(&body[at + 2..])),
                None => (body, None),
            };
            let inner = self.resolve(name_raw, depth + 1)?;
            let name = inner.as_str();
            let found = match name.split_once(':') {
                Some(("env", n)) => (self.lookup)(Lookup::Env, n),
                Some(("sys", n)) => (self.lookup)(Lookup::Sys, n),
                Some((prefix, _)) if !prefix.is_empty() && !prefix.contains(['.', '/', ' ']) => {
                    return Err(format!(
                        "`${{{inner}}}`: Sluice knows `${{env:NAME}}`, `${{sys:NAME}}` and `${{NAME}}`, not `{prefix}:`"
                    ));
                }
                _ => match self.props.get(name) {
                    Some(&text) => Some(self.property(name, text, depth + 1)?),
                    None => (self.lookup)(Lookup::Env, name),
                },
            };
            let found = match (found, default_raw) {
                (Some(v), _) => Some(v),
                (None, Some(d)) => Some(self.resolve(d, depth + 1)?),
                (None, None) => None,
            };
            match found {
                Some(v) if out.len() + v.len() > MAX_VALUE => {
                    return Err(format!(
                        "`${{{inner}}}` makes the value longer than {MAX_VALUE} bytes \
                         (references that repeat references?)"
                    ));
                }
                Some(v) => out.push_str(&v),
                None => {
                    return Err(format!(
                        "`${{{inner}}}` is not set (no such property, environment variable or -D \
                         property; Flume would leave the text as it is)"
                    ));
                }
            }
            rest = &rest[body_start + len + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Where the `:-` of a reference's body is, outside references nested in it.
fn top_level_default(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'$', b'{') => {
                depth += 1;
                i += 1;
            }
            (b'}', _) => depth = depth.saturating_sub(1),
            (b':', b'-') if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The length of a reference's body: up to its `}`, references inside it included.
fn closing(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn env(l: Lookup, n: &str) -> Option<String> {
        match (l, n) {
            (Lookup::Env, "HOME") => Some("/home/u".into()),
            (Lookup::Env, "EMPTY") => Some(String::new()),
            (Lookup::Sys, "flume.root") => Some("INFO".into()),
            _ => None,
        }
    }

    fn props(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes(), "f", None, &env)
            .unwrap()
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn javas_syntax_separators_comments_and_continuations() {
        let text = "# comment\n! also\n  a1.sources = r1\na1.x:y\na1.y z\n\
                    a1.list = a,\\\n     b,\\\n\tc\na1.k = = v\n# a.b = not \\\nx = y\n\
                    a1.crlf = v\r\na1.inline = v # not a comment\n";
        assert_eq!(
            props(text),
            pairs(&[
                ("a1.sources", "r1"),
                ("a1.x", "y"),
                ("a1.y", "z"),
                ("a1.list", "a,b,c"),
                ("a1.k", "= v"),
                ("x", "y"),
                ("a1.crlf", "v"),
                ("a1.inline", "v # not a comment"),
            ])
        );
    }

    #[test]
    fn escapes_in_keys_and_values() {
        let text = "a\\ b\\=c\\:d = x\\ty\\u00e9\\\\z\\q\nemoji = \\ud83d\\ude00\n";
        assert_eq!(
            props(text),
            pairs(&[("a b=c:d", "x\tyé\\zq"), ("emoji", "😀")])
        );
        let err = parse(b"k = \\u12G4\n", "f.properties", None, &env).unwrap_err();
        assert_eq!(err[0].key, "f.properties:1");
        assert!(err[0].message.contains("\\u12G4"), "{}", err[0].message);
    }

    #[test]
    fn last_value_wins_values_are_trimmed_and_empty_ones_dropped() {
        let text = "a = 1\nb =   \nc = \\u0020x\\u0020\na = 2\n";
        assert_eq!(props(text), pairs(&[("a", "2"), ("c", "x")]));
    }

    #[test]
    fn text_that_is_not_utf8_is_read_as_latin1() {
        assert_eq!(props("k = é\n"), pairs(&[("k", "é")]));
        let latin1 = parse(b"k = \xe9\n", "f", None, &env).unwrap();
        assert_eq!(latin1[0].value, "é");
    }

    #[test]
    fn references_to_the_environment_properties_and_defaults() {
        let text = "a1.dir = ${env:HOME}/spool\na1.level = ${sys:flume.root}\nbase = /data\n\
                    a1.pos = ${base}/pos\na1.d = ${NOPE:-fallback}\na1.e = $${HOME}\n\
                    a1.n = ${env:${VAR:-HOME}}\na1.h = ${HOME}\na1.empty = [${EMPTY}]\n";
        assert_eq!(
            props(text),
            pairs(&[
                ("a1.dir", "/home/u/spool"),
                ("a1.level", "INFO"),
                ("base", "/data"),
                ("a1.pos", "/data/pos"),
                ("a1.d", "fallback"),
                ("a1.e", "${HOME}"),
                ("a1.n", "/home/u"),
                ("a1.h", "/home/u"),
                ("a1.empty", "[]"),
            ])
        );
    }

    #[test]
    fn a_reference_to_nothing_names_its_key() {
        let text = "a1.ok = 1\na1.sinks.k1.kafka.topic = ${env:NOPE}\na1.x = ${date:yyyy}\n\
                    a1.loop = ${a1.loop}\na1.open = ${HOME\n";
        let err = parse(text.as_bytes(), "f", None, &env).unwrap_err();
        let keys: Vec<&str> = err.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["a1.sinks.k1.kafka.topic", "a1.x", "a1.loop", "a1.open"]
        );
        assert!(err[0].message.contains("${env:NOPE}` is not set"));
        assert!(err[1].message.contains("not `date:`"));
        assert!(err[2].message.contains("nested more than"));
        assert!(err[3].message.contains("no closing"));
    }

    #[test]
    fn a_bom_lone_cr_endings_lazy_defaults_and_values_emptied_by_substitution() {
        assert_eq!(
            parse(b"\xef\xbb\xbfa = 1\rb = 2\r\n", "f", None, &env)
                .unwrap()
                .iter()
                .map(|p| (p.key.as_str(), p.value.as_str()))
                .collect::<Vec<_>>(),
            [("a", "1"), ("b", "2")]
        );
        assert_eq!(
            props("a = ${env:HOME:-${NOPE}}\nb = ${env:EMPTY}\nc = x\n"),
            pairs(&[("a", "/home/u"), ("c", "x")]),
            "the default is not looked at; an emptied value is dropped"
        );
        let nul = parse(b"a\0 = 1", "f.properties", None, &env).unwrap_err();
        assert!(nul[0].message.contains("NUL"), "{}", nul[0].message);
        let two = "a1.x = 1\na2.y = ${env:NOPE}\nhelper = ${NOPE}\n";
        let a1 = parse(two.as_bytes(), "f", Some("a1"), &env).unwrap();
        assert_eq!(
            a1.len(),
            1,
            "another agent's unset reference does not stop a1"
        );
        let a2 = parse(two.as_bytes(), "f", Some("a2"), &env).unwrap_err();
        assert_eq!(a2[0].key, "a2.y");
    }

    #[test]
    fn lines_are_numbered_from_one_at_the_key() {
        let got = parse(b"# c\n\na = 1\\\n  2\nb = 3\n", "f", None, &env).unwrap();
        assert_eq!(
            got.iter()
                .map(|p| (p.value.as_str(), p.line))
                .collect::<Vec<_>>(),
            [("12", 3), ("3", 5)]
        );
    }

    /// Properties that each repeat the one before `n` times, `levels` deep, and a key that
    /// refers to the last: substituted naively, `n^levels` copies of the first.
    pub(crate) fn laughs(levels: usize, n: usize, first: &str) -> String {
        let mut text = format!("l0 = {first}\n");
        for i in 1..=levels {
            text.push_str(&format!(
                "l{i} = {}\n",
                format!("${{l{}}}", i - 1).repeat(n)
            ));
        }
        text.push_str(&format!("a1.sources.r1.dir = /x/${{l{levels}}}\n"));
        text
    }

    #[test]
    fn references_that_repeat_references_are_resolved_once_and_bounded() {
        // 10^9 bytes and 10^9 lookups before: now an error naming the key, found at once.
        let (got, largest) = sluice_channels::fuzzing::largest_allocation(|| {
            parse(laughs(9, 10, "laugh").as_bytes(), "f", Some("a1"), &env)
        });
        let problems = got.unwrap_err();
        assert!(largest <= 4 * MAX_VALUE, "{largest} bytes allocated");
        assert!(
            problems
                .iter()
                .any(|p| p.key == "a1.sources.r1.dir"
                    && p.message.contains("longer than 1048576 bytes")),
            "{problems:?}"
        );
        // An empty value repeated costs no time either (4^14 lookups before).
        let props = props(&laughs(14, 4, "${EMPTY}"));
        let dir = &props
            .iter()
            .find(|(k, _)| k == "a1.sources.r1.dir")
            .unwrap()
            .1;
        assert_eq!(dir, "/x/");
    }
}
