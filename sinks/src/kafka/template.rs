//! `%{name}` templates over an event's headers, compiled once and rendered into a reused
//! buffer: no allocation and no formatting per event.

use std::fmt;

use sluice_channels::{Event, Origin};

/// An event header a template or a Kafka record header can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `source`: the name of the source that read the file.
    Source,
    /// `path`: the file's full path.
    Path,
    /// `file`: the file's base name.
    File,
    /// `host`: the agent's host name.
    Host,
    /// `offset`: the byte offset of the line in its file, in decimal.
    Offset,
    /// Any other name: a header an event's processing set, or a static header configured on
    /// the source (empty when absent).
    Static(Box<str>),
}

impl Field {
    /// The field a header name stands for.
    pub fn from_name(name: &str) -> Field {
        match name {
            "source" => Field::Source,
            "path" => Field::Path,
            "file" => Field::File,
            "host" => Field::Host,
            "offset" => Field::Offset,
            other => Field::Static(other.into()),
        }
    }

    /// The name the field stands for.
    pub fn name(&self) -> &str {
        match self {
            Field::Source => "source",
            Field::Path => "path",
            Field::File => "file",
            Field::Host => "host",
            Field::Offset => "offset",
            Field::Static(name) => name,
        }
    }

    /// The value of the field for `event`: the event's own header of that name first (set or
    /// removed by a processing stage), then its origin's ([`Field::origin_value`]). `None` for
    /// `offset`, which is rendered from the event's offset.
    pub fn value<'a>(&self, event: &'a Event) -> Option<&'a str> {
        if *self == Field::Offset {
            return None;
        }
        if !event.headers.is_empty()
            && let Some(own) = event.headers.get(self.name())
        {
            return own;
        }
        self.origin_value(&event.origin)
    }

    /// The value of a field that does not depend on the line, or `None` for `offset` and for
    /// a static header the source does not set.
    pub fn origin_value<'a>(&self, origin: &'a Origin) -> Option<&'a str> {
        match self {
            Field::Source => Some(&origin.source),
            Field::Path => Some(&origin.path),
            Field::File => Some(&origin.file),
            Field::Host => Some(&origin.host),
            Field::Offset => None,
            Field::Static(name) => origin.header(name),
        }
    }
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{template}`: {problem}")]
pub struct TemplateError {
    template: String,
    problem: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<[u8]>),
    Field(Field),
}

/// A compiled template such as `logs-%{source}` or `%{host}/%{file}`.
///
/// `%{name}` stands for the event header `name` (see [`Field`]); a static header the event's
/// source does not set renders as nothing. Every other character is literal, a `%` not
/// followed by `{` included.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    /// Compiles `text`. Refuses an unclosed `%{` and a name that is empty or has characters
    /// other than letters, digits, `_`, `-` and `.`.
    pub fn compile(text: &str) -> Result<Template, TemplateError> {
        let err = |problem| TemplateError {
            template: text.to_owned(),
            problem,
        };
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("%{") {
            if at > 0 {
                parts.push(Part::Literal(rest.as_bytes()[..at].into()));
            }
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| err("`%{` is not closed by `}`"))?;
            let name = &after[..end];
            if name.is_empty() {
                return Err(err("`%{}` names no header"));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(err(
                    "header names may use only letters, digits, `_`, `-` and `.`",
                ));
            }
            parts.push(Part::Field(Field::from_name(name)));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.as_bytes().into()));
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True if the template names the line's `offset`, so that it renders differently for
    /// every line of a file.
    pub fn uses_offset(&self) -> bool {
        self.parts.contains(&Part::Field(Field::Offset))
    }

    /// The literal text of the template, placeholders left out.
    pub fn literals(&self) -> impl Iterator<Item = &[u8]> {
        self.parts.iter().filter_map(|p| match p {
            Part::Literal(l) => Some(&l[..]),
            Part::Field(_) => None,
        })
    }

    /// Renders the template for `event` into `out`, replacing its content.
    pub fn render(&self, event: &Event, out: &mut Vec<u8>) {
        out.clear();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.extend_from_slice(l),
                Part::Field(Field::Offset) => {
                    out.extend_from_slice(Decimal::new(event.offset).as_bytes())
                }
                Part::Field(f) => {
                    if let Some(v) = f.value(event) {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
            }
        }
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.text)
    }
}

impl TryFrom<String> for Template {
    type Error = TemplateError;

    fn try_from(text: String) -> Result<Self, TemplateError> {
        Template::compile(&text)
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Template::compile(&text).map_err(serde::de::Error::custom)
    }
}

/// A `u64` written in decimal ASCII on the stack.
pub struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    /// `n` in decimal, without leading zeros.
    pub fn new(mut n: u64) -> Decimal {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { buf, start }
    }

    /// The digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    fn event(offset: u64) -> Event {
        Event {
            body: Bytes::from_static(b"line"),
            origin: Arc::new(Origin {
                source: "r1".into(),
                path: "/var/spool/app.log".into(),
                file: "app.log".into(),
                host: "web-1".into(),
                headers: vec![("env".into(), "prod".into())],
            }),
            offset,
            read_at_ms: 0,
            headers: Default::default(),
        }
    }

    fn render(t: &str, offset: u64) -> String {
        let mut out = b"stale".to_vec();
        Template::compile(t)
            .unwrap()
            .render(&event(offset), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn placeholders_render_the_event_headers() {
        assert_eq!(render("logs-%{source}", 0), "logs-r1");
        assert_eq!(render("%{host}/%{file}", 0), "web-1/app.log");
        assert_eq!(render("%{path}@%{offset}", 1234), "/var/spool/app.log@1234");
        assert_eq!(render("%{env}.%{offset}", 0), "prod.0");
        assert_eq!(render("%{offset}", u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn an_event_header_comes_before_the_origin_header_of_its_name() {
        let mut ev = event(7);
        ev.headers.set("env".into(), "dev");
        ev.headers.set("level".into(), "ERROR");
        ev.headers.remove("host".into());
        let mut out = Vec::new();
        Template::compile("%{env}-%{level}-%{host}-%{file}-%{offset}")
            .unwrap()
            .render(&ev, &mut out);
        assert_eq!(out, b"dev-ERROR--app.log-7");
    }

    #[test]
    fn a_missing_static_header_renders_empty_and_literals_stay() {
        assert_eq!(render("a-%{nope}-b", 0), "a--b");
        assert_eq!(render("100% {x} %", 0), "100% {x} %");
        assert_eq!(render("", 0), "");
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let e = Template::compile("logs-%{source").unwrap_err();
        assert_eq!(e.to_string(), "`logs-%{source`: `%{` is not closed by `}`");
        assert!(Template::compile("%{}").is_err());
        assert!(Template::compile("%{a b}").is_err());
    }

    #[test]
    fn offset_use_and_literals_are_reported() {
        let t = Template::compile("x-%{file}-%{offset}").unwrap();
        assert!(t.uses_offset());
        assert_eq!(
            t.literals().collect::<Vec<_>>(),
            vec![&b"x-"[..], &b"-"[..]]
        );
        assert!(!Template::compile("%{file}").unwrap().uses_offset());
    }

    #[test]
    fn decimal_writes_digits() {
        assert_eq!(Decimal::new(0).as_bytes(), b"0");
        assert_eq!(Decimal::new(907).as_bytes(), b"907");
    }
}
