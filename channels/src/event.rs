//! The event: one line of a file, with where it came from.

use std::sync::Arc;

use bytes::Bytes;

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

/// One line of a file.
///
/// The body is a slice of the buffer the line was read into (no copy) and never includes the
/// line terminator. Its bytes are passed through untouched, valid UTF-8 or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The line, without its terminator.
    pub body: Bytes,
    /// The file the line came from, shared by all its lines.
    pub origin: Arc<Origin>,
    /// The byte offset in the file at which the line starts.
    pub offset: u64,
    /// When the line was read, in milliseconds since the Unix epoch.
    pub read_at_ms: u64,
}

impl Event {
    /// How many bytes the event counts for in a channel's byte capacity: its body.
    pub fn weight(&self) -> usize {
        self.body.len()
    }
}
