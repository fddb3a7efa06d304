//! The event: one line of a file, with where it came from.

use std::sync::Arc;

use bytes::Bytes;

/// The event header a processing stage sets when an event's body no longer tells where it
/// ends in its file (lines joined, a container runtime's framing removed, the body
/// rewritten): the offset just past its last byte in the file, terminator excluded, in
/// decimal. `sluice audit` reads it in place of the body's length.
pub const END_HEADER: &str = "offset_end";

/// The origin header a tail-follow source sets on a file it saw truncated or rewritten while
/// it followed it: how many times (kept in its position file). Its lines start again at offset
/// 0, under the same `fid` when the first line did not change, so offsets going back are not
/// repeats.
pub const REWRITES_HEADER: &str = "rewrites";

/// The event header set on the first event after lines an interceptor dropped on purpose
/// (`regex_filter`): the offset of the first of those lines, in decimal. `sluice audit`
/// counts the bytes from there to the event's offset as delivered, not as a gap.
pub const DROPPED_FROM_HEADER: &str = "dropped_from";

/// What every line of one file shares: the source that read it, the file, the host.
///
/// It is built once per file and shared behind an [`Arc`] by all the file's events, so that an
/// event costs no allocation for its headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The name of the source component that read the file (`r1`).
    pub source: String,
    /// The file's full path, lossily converted to UTF-8.
    pub path: String,
    /// The file's base name.
    pub file: String,
    /// The host name of the machine the agent runs on.
    pub host: String,
    /// Static headers configured on the source, in configuration order.
    pub headers: Vec<(String, String)>,
}

impl Origin {
    /// The origin of the file at `path`, read by source `source` on `host`: the base name is
    /// taken from the path, both lossily converted to UTF-8.
    pub fn for_file(
        source: &str,
        path: &std::path::Path,
        host: &str,
        headers: Vec<(String, String)>,
    ) -> Self {
        Origin {
            source: source.to_owned(),
            path: path.to_string_lossy().into_owned(),
            file: path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            host: host.to_owned(),
            headers,
        }
    }

    /// The value of a header by name: `source`, `path`, `file` and `host` name the typed
    /// fields; any other name is looked up among the static headers.
    pub fn header(&self, name: &str) -> Option<&str> {
        match name {
            "source" => Some(&self.source),
            "path" => Some(&self.path),
            "file" => Some(&self.file),
            "host" => Some(&self.host),
            _ => self
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }

    /// The key that identifies this file's stream of lines: its path.
    pub fn stream_key(&self) -> &str {
        &self.path
    }
}

/// The headers one event carries beyond its origin's: empty, and costing no allocation, unless
/// a processing stage sets one.
///
/// A header set here hides the origin's header of the same name; a header *removed* here
/// hides it too (the origin is shared by the whole file and is never changed per event).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
// The box keeps an event without headers one pointer wider, not three.
#[allow(clippy::box_collection)]
pub struct Headers(Option<Box<Vec<Header>>>);

/// One header an event set (`Some` value) or removed (`None`).
type Header = (Arc<str>, Option<Box<str>>);

impl Headers {
    /// True when the event has no header of its own (nothing set, nothing removed).
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|l| l.is_empty())
    }

    /// How many names are set or removed.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.len())
    }

    /// What the event says of header `name`: `None` if nothing (look at the origin),
    /// `Some(None)` if the event removed it, `Some(Some(v))` if it set it to `v`.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .as_ref()?
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// Sets header `name` to `value`, replacing what the event said of it before.
    pub fn set(&mut self, name: Arc<str>, value: impl Into<Box<str>>) {
        self.put(name, Some(value.into()));
    }

    /// Removes header `name` from the event, hiding the origin's header of that name too.
    pub fn remove(&mut self, name: Arc<str>) {
        self.put(name, None);
    }

    fn put(&mut self, name: Arc<str>, value: Option<Box<str>>) {
        let list = self.0.get_or_insert_with(Default::default);
        match list.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => list.push((name, value)),
        }
    }

    /// The names set or removed, in the order they were first set or removed, each with its
    /// value (`None`: removed).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0
            .iter()
            .flat_map(|l| l.iter())
            .map(|(k, v)| (&**k, v.as_deref()))
    }

    /// The bytes of the names and values, for a channel's byte capacity.
    pub fn bytes(&self) -> usize {
        self.iter()
            .map(|(k, v)| k.len() + v.map_or(0, str::len))
            .sum()
    }
}

/// One event: a line of a file (or several joined by a processing stage), with where it came
/// from.
///
/// The body is a slice of the buffer the line was read into (no copy) and never includes the
/// line terminator. Its bytes are passed through untouched, valid UTF-8 or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The line, without its terminator.
    pub body: Bytes,
    /// The file the line came from, shared by all its lines.
    pub origin: Arc<Origin>,
    /// The byte offset in the file at which the line (the event's first line) starts.
    pub offset: u64,
    /// When the line was read, in milliseconds since the Unix epoch.
    pub read_at_ms: u64,
    /// The headers of this event alone; empty unless a processing stage set one.
    pub headers: Headers,
}

impl Event {
    /// An event with no header of its own.
    pub fn new(body: Bytes, origin: Arc<Origin>, offset: u64, read_at_ms: u64) -> Self {
        Event {
            body,
            origin,
            offset,
            read_at_ms,
            headers: Headers::default(),
        }
    }

    /// How many bytes the event counts for in a channel's byte capacity: its body, and its
    /// own headers if it has any.
    pub fn weight(&self) -> usize {
        if self.headers.is_empty() {
            self.body.len()
        } else {
            self.body.len() + self.headers.bytes()
        }
    }

    /// The value of header `name`: the event's own headers first (a removed one is `None`),
    /// then its origin's ([`Origin::header`]).
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.headers.get(name) {
            Some(own) => own,
            None => self.origin.header(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Arc<Origin> {
        Arc::new(Origin {
            source: "r1".into(),
            path: "/l/a.log".into(),
            file: "a.log".into(),
            host: "h".into(),
            headers: vec![("env".into(), "prod".into())],
        })
    }

    #[test]
    fn event_headers_come_first_then_the_origin() {
        let mut e = Event::new(Bytes::from_static(b"x"), origin(), 0, 0);
        assert!(e.headers.is_empty());
        assert_eq!(e.weight(), 1);
        assert_eq!(e.header("env"), Some("prod"));
        e.headers.set("env".into(), "dev");
        e.headers.set("level".into(), "ERROR");
        assert_eq!(e.header("env"), Some("dev"));
        assert_eq!(e.header("level"), Some("ERROR"));
        e.headers.set("level".into(), "WARN");
        assert_eq!(e.headers.len(), 2, "setting again replaces");
        assert_eq!(e.header("level"), Some("WARN"));
        e.headers.remove("host".into());
        e.headers.remove("env".into());
        assert_eq!(
            e.header("host"),
            None,
            "a removal hides the origin's header"
        );
        assert_eq!(e.header("env"), None);
        assert_eq!(e.header("path"), Some("/l/a.log"));
        assert_eq!(e.weight(), 1 + "level".len() + "WARN".len() + 4 + 3);
    }
}
