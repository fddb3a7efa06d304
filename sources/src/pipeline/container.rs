//! The container log format stage: lines written by a container runtime (`cri`, as kubelet
//! writes them, or Docker's `json-file` driver) turned back into the application's lines, with
//! their stream and time as headers, and the fragments the runtime cut a long line into joined.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use sluice_channels::names::escape_path;
use sluice_channels::{END_HEADER, Headers};
use tracing::warn;

use super::lines::{Line, Stage};
use crate::SourceMetrics;

/// How a source's files are written: the `format` option.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Plain lines: each line is an event as it is (the default).
    #[default]
    Lines,
    /// The CRI log format kubelet writes under `/var/log/pods`:
    /// `TIMESTAMP STREAM P|F MESSAGE`, a line longer than the runtime's buffer cut into `P`
    /// (partial) fragments ended by an `F` (full) one.
    Cri,
    /// Docker's `json-file` driver: `{"log":"...\n","stream":"stdout","time":"..."}`, a long
    /// line cut into entries whose `log` does not end in `\n`.
    DockerJson,
}

/// The least length a container log's line of the file is framed whole at, whatever
/// `max_line_bytes` says: runtimes cut records at 16 KiB of message, which JSON escaping can
/// make up to six times longer. A record cut by the framer would not parse.
const MIN_RECORD_LINE: u64 = 256 << 10;

impl Format {
    /// The longest line of the file the framer keeps whole, for `max_line_bytes`: the
    /// format's records are parsed whole, and `max_line_bytes` bounds what they join into.
    pub fn framing_limit(self, max_line_bytes: u64) -> u64 {
        match self {
            Format::Lines => max_line_bytes,
            Format::Cri | Format::DockerJson => max_line_bytes.max(MIN_RECORD_LINE),
        }
    }
}

/// How long fragments of a line wait for the rest of it before they are handed out as they
/// are: a runtime writes a cut line's fragments back to back, so one that waits this long
/// will not be completed.
const PARTIAL_WAIT: Duration = Duration::from_secs(1);

/// The header that receives the stream (`stdout` or `stderr`).
pub const STREAM_HEADER: &str = "stream";
/// The header that receives the runtime's timestamp of the line, as the runtime wrote it.
pub const TIME_HEADER: &str = "time";

/// One record of the runtime's file, parsed.
struct Record<'a> {
    /// The message, without the runtime's framing.
    message: Cow<'a, [u8]>,
    /// Whether the message ends the application's line (`F`, or a `log` ending in `\n`).
    full: bool,
    stream: Cow<'a, str>,
    time: Cow<'a, str>,
}

/// A line the runtime cut into fragments, those read so far.
struct Partial {
    /// The first fragment's offset, that of the line.
    offset: u64,
    /// The first fragment's headers.
    headers: Headers,
    /// The fragments' messages, joined.
    body: Vec<u8>,
    /// Where the last fragment ends in the file (terminator excluded).
    end: u64,
}

/// The stage of one file in a container runtime's format.
pub(crate) struct Container {
    format: Format,
    /// The longest line joined from fragments; one that would pass it is handed out cut.
    max_bytes: usize,
    stream: Arc<str>,
    time: Arc<str>,
    end: Arc<str>,
    partial: Option<Partial>,
    /// When the last fragment arrived.
    last_at: Instant,
    metrics: Arc<SourceMetrics>,
    /// The file, escaped, for the log line about lines not in the format.
    file: Box<str>,
    /// Whether this file's lines not in the format were logged already (once per file).
    warned: bool,
}

impl Container {
    /// The stage of file `file` in `format` (not [`Format::Lines`]: that needs no stage),
    /// joining fragments up to `max_bytes` and counting the lines not in the format in
    /// `metrics`.
    pub fn new(format: Format, max_bytes: u64, metrics: Arc<SourceMetrics>, file: &Path) -> Self {
        Container {
            format,
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            stream: Arc::from(STREAM_HEADER),
            time: Arc::from(TIME_HEADER),
            end: Arc::from(END_HEADER),
            partial: None,
            last_at: Instant::now(),
            metrics,
            file: escape_path(file).into(),
            warned: false,
        }
    }

    /// How long fragments wait for the rest of their line.
    pub fn wait() -> Duration {
        PARTIAL_WAIT
    }

    fn parse<'a>(&self, line: &'a [u8]) -> Option<Record<'a>> {
        match self.format {
            Format::Cri => parse_cri(line),
            Format::DockerJson => parse_docker(line),
            Format::Lines => None,
        }
    }

    /// Hands out the partial line, if any.
    fn flush(&mut self, out: &mut Vec<Line>) {
        if let Some(p) = self.partial.take() {
            let mut line = Line {
                body: Bytes::from(p.body),
                offset: p.offset,
                headers: p.headers,
            };
            line.set_end(&self.end, p.end);
            out.push(line);
        }
    }

    fn headers(&self, r: &Record<'_>) -> Headers {
        let mut h = Headers::default();
        h.set(self.stream.clone(), &*r.stream);
        h.set(self.time.clone(), &*r.time);
        h
    }

    /// Takes one parsed record of line `line` into `out` or into the partial line.
    fn take(&mut self, line: &Line, r: Record<'_>, out: &mut Vec<Line>) {
        if let Some(p) = &self.partial
            && p.body.len() + r.message.len() > self.max_bytes
        {
            self.flush(out);
        }
        match (&mut self.partial, r.full) {
            (None, true) => {
                let headers = self.headers(&r);
                let body = match r.message {
                    Cow::Borrowed(m) => line.body.slice_ref(m),
                    Cow::Owned(m) => Bytes::from(m),
                };
                let mut event = Line {
                    body,
                    offset: line.offset,
                    headers,
                };
                event.set_end(&self.end, line.end());
                out.push(event);
            }
            (None, false) => {
                self.partial = Some(Partial {
                    offset: line.offset,
                    headers: self.headers(&r),
                    body: r.message.into_owned(),
                    end: line.end(),
                });
            }
            (Some(p), full) => {
                p.body.extend_from_slice(&r.message);
                p.end = line.end();
                if full {
                    self.flush(out);
                }
            }
        }
    }
}

impl Stage for Container {
    fn apply(&mut self, lines: &mut Vec<Line>, last: bool) {
        let now = Instant::now();
        let mut out = Vec::with_capacity(lines.len());
        // Only a look with nothing new hands out fragments that waited too long: a fragment's
        // rest that arrives, however late, is still joined to it.
        if lines.is_empty() && self.flush_due(now) {
            self.flush(&mut out);
        }
        let mut unparsed = 0u64;
        for line in lines.drain(..) {
            match self.parse(&line.body) {
                Some(r) => self.take(&line, r, &mut out),
                None => {
                    self.flush(&mut out);
                    if !self.warned {
                        self.warned = true;
                        warn!(file = %self.file, offset = line.offset, format = ?self.format,
                            "line not in the source's format passed through as it is \
                             (logged once per file, counted in sluice_source_unparsed_lines_total)");
                    }
                    unparsed += 1;
                    out.push(line);
                }
            }
            self.last_at = now;
        }
        if last {
            self.flush(&mut out);
        }
        SourceMetrics::add(&self.metrics.unparsed, unparsed);
        *lines = out;
    }

    fn held_from(&self) -> Option<u64> {
        self.partial.as_ref().map(|p| p.offset)
    }

    fn flush_due(&self, now: Instant) -> bool {
        self.partial.is_some() && now.duration_since(self.last_at) >= PARTIAL_WAIT
    }
}

/// Splits `s` at its first space: the word before and the rest after.
fn word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = memchr::memchr(b' ', s)?;
    Some((&s[..at], &s[at + 1..]))
}

/// Parses a CRI line: `TIMESTAMP STREAM TAGS MESSAGE`, TAGS being `P` or `F`, possibly
/// followed by more tags after a `:`. The message is a slice of the line.
fn parse_cri(line: &[u8]) -> Option<Record<'_>> {
    let (time, rest) = word(line)?;
    let (stream, rest) = word(rest)?;
    let (tags, message) = match word(rest) {
        Some(split) => split,
        // `F` with nothing after it: an empty message.
        None => (rest, &rest[rest.len()..]),
    };
    if !time.first().is_some_and(u8::is_ascii_digit) || !matches!(stream, b"stdout" | b"stderr") {
        return None;
    }
    let full = match tags.split(|&b| b == b':').next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(Record {
        message: Cow::Borrowed(message),
        full,
        stream: Cow::Borrowed(std::str::from_utf8(stream).ok()?),
        time: Cow::Borrowed(std::str::from_utf8(time).ok()?),
    })
}

/// One entry of Docker's `json-file` driver.
#[derive(Deserialize)]
struct DockerEntry<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow, default)]
    stream: Cow<'a, str>,
    #[serde(borrow, default)]
    time: Cow<'a, str>,
}

/// Parses a Docker `json-file` line; the message is its `log` without the final `\n` (or
/// `\r\n`), which marks the end of the application's line.
fn parse_docker(line: &[u8]) -> Option<Record<'_>> {
    let entry: DockerEntry<'_> = serde_json::from_slice(line).ok()?;
    let strip = |s: &str| -> (usize, bool) {
        match s.strip_suffix('\n') {
            Some(s) => (s.strip_suffix('\r').unwrap_or(s).len(), true),
            None => (s.len(), false),
        }
    };
    let (len, full) = strip(&entry.log);
    let message = match entry.log {
        Cow::Borrowed(s) => Cow::Borrowed(&s.as_bytes()[..len]),
        Cow::Owned(s) => {
            let mut bytes = s.into_bytes();
            bytes.truncate(len);
            Cow::Owned(bytes)
        }
    };
    Some(Record {
        message,
        full,
        stream: entry.stream,
        time: entry.time,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::testing::{chunked, framed, framed_bytes};

    fn stage(format: Format, max: u64) -> Container {
        Container::new(
            format,
            max,
            Arc::new(SourceMetrics::default()),
            Path::new("/x.log"),
        )
    }

    #[test]
    fn the_file_is_named_escaped_for_its_log_line() {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"/s/a\nFORGED \xff.log");
        let c = Container::new(
            Format::Cri,
            64,
            Arc::new(SourceMetrics::default()),
            Path::new(name),
        );
        assert_eq!(&*c.file, "/s/a\\nFORGED \\xff.log");
    }

    type Ev = (String, u64, Option<String>, Option<String>);

    fn ev(l: &Line) -> Ev {
        (
            String::from_utf8(l.body.to_vec()).unwrap(),
            l.offset,
            l.headers.get(STREAM_HEADER).flatten().map(str::to_owned),
            l.headers.get(TIME_HEADER).flatten().map(str::to_owned),
        )
    }

    fn run(c: &mut Container, reads: Vec<Vec<Line>>) -> Vec<Ev> {
        let mut out = Vec::new();
        for mut lines in reads {
            c.apply(&mut lines, false);
            out.extend(lines.iter().map(ev));
        }
        let mut rest = Vec::new();
        c.apply(&mut rest, true);
        out.extend(rest.iter().map(ev));
        out
    }

    /// The offset of the line of `text` holding `needle`.
    fn at(text: &str, needle: &str) -> u64 {
        let i = text.find(needle).unwrap();
        text[..i].rfind('\n').map_or(0, |n| n + 1) as u64
    }

    fn e(body: &str, offset: u64, stream: &str, time: &str) -> Ev {
        (body.into(), offset, Some(stream.into()), Some(time.into()))
    }

    #[test]
    fn cri_lines_become_their_messages_with_stream_and_time_headers() {
        let text = "2026-11-30T10:00:00.1Z stdout F hello world\n\
                    2026-11-30T10:00:00.2Z stderr P part one \n\
                    2026-11-30T10:00:00.3Z stderr P two \n\
                    2026-11-30T10:00:00.4Z stderr F three\n\
                    2026-11-30T10:00:00.5Z stdout F\n\
                    2026-11-30T10:00:00.6Z stdout F:x tagged\n";
        let mut c = stage(Format::Cri, 1 << 20);
        let got = run(&mut c, vec![framed(text)]);
        assert_eq!(
            got,
            vec![
                e("hello world", 0, "stdout", "2026-11-30T10:00:00.1Z"),
                e(
                    "part one two three",
                    at(text, ".2Z"),
                    "stderr",
                    "2026-11-30T10:00:00.2Z"
                ),
                e("", at(text, ".5Z"), "stdout", "2026-11-30T10:00:00.5Z"),
                e(
                    "tagged",
                    at(text, ".6Z"),
                    "stdout",
                    "2026-11-30T10:00:00.6Z"
                ),
            ]
        );
    }

    #[test]
    fn each_event_says_where_its_last_fragment_ends_in_the_file() {
        let text = "1 stdout F a\n2 stdout P bb\n3 stdout F c\n";
        let mut lines = framed(text);
        stage(Format::Cri, 1 << 20).apply(&mut lines, true);
        assert_eq!((lines[0].offset, lines[0].end()), (0, 12));
        assert_eq!(
            (lines[1].offset, lines[1].end()),
            (13, text.len() as u64 - 1)
        );
    }

    #[test]
    fn a_full_cri_line_is_a_slice_of_the_read_buffer() {
        let mut lines = framed("2026-11-30T10:00:00.1Z stdout F hello\n");
        let buf = lines[0].body.clone();
        stage(Format::Cri, 1 << 20).apply(&mut lines, false);
        assert_eq!(&lines[0].body[..], b"hello");
        let inside = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        assert!(
            inside.contains(&(lines[0].body.as_ptr() as usize)),
            "copied"
        );
    }

    #[test]
    fn lines_not_in_the_format_pass_through_and_are_counted() {
        let text = "not cri at all\n\
                    2026-11-30T10:00:00.1Z stdout P half \n\
                    2026-11-30T10:00:00.1Z stdin F bad stream\n\
                    {\"log\":\"x\"}\n";
        let mut c = stage(Format::Cri, 1 << 20);
        let got = run(&mut c, vec![framed(text)]);
        let bodies: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            bodies,
            vec![
                "not cri at all",
                "half ",
                "2026-11-30T10:00:00.1Z stdin F bad stream",
                "{\"log\":\"x\"}",
            ]
        );
        assert_eq!(got[0].2, None, "an unparsed line gets no header");
        assert_eq!(SourceMetrics::get(&c.metrics.unparsed), 3);
    }

    #[test]
    fn docker_json_lines_are_unescaped_and_fragments_joined() {
        let text = concat!(
            r#"{"log":"hello \"you\"\n","stream":"stdout","time":"2026-11-30T10:00:00.1Z"}"#,
            "\n",
            r#"{"log":"long ","stream":"stderr","time":"2026-11-30T10:00:00.2Z"}"#,
            "\n",
            r#"{"log":"line\r\n","stream":"stderr","time":"2026-11-30T10:00:00.3Z"}"#,
            "\n",
            r#"{"log":"tail without end","stream":"stdout","time":"2026-11-30T10:00:00.4Z"}"#,
            "\n",
        );
        let mut c = stage(Format::DockerJson, 1 << 20);
        let got = run(&mut c, vec![framed(text)]);
        assert_eq!(
            got,
            vec![
                e("hello \"you\"", 0, "stdout", "2026-11-30T10:00:00.1Z"),
                e(
                    "long line",
                    at(text, ".2Z"),
                    "stderr",
                    "2026-11-30T10:00:00.2Z"
                ),
                e(
                    "tail without end",
                    at(text, ".4Z"),
                    "stdout",
                    "2026-11-30T10:00:00.4Z"
                ),
            ]
        );
        assert_eq!(SourceMetrics::get(&c.metrics.unparsed), 0);
    }

    #[test]
    fn a_partial_line_holds_the_checkpoint_and_waits_only_so_long() {
        let mut c = stage(Format::Cri, 1 << 20);
        let mut lines =
            framed("2026-11-30T10:00:00.1Z stdout F a\n2026-11-30T10:00:00.1Z stdout P b\n");
        c.apply(&mut lines, false);
        assert_eq!(lines.len(), 1);
        assert_eq!(c.held_from(), Some(34));
        assert!(!c.flush_due(Instant::now()));
        c.last_at = Instant::now() - PARTIAL_WAIT;
        assert!(c.flush_due(Instant::now()));
        let mut none = Vec::new();
        c.apply(&mut none, false);
        assert_eq!(&none[0].body[..], b"b");
        assert_eq!(c.held_from(), None);
    }

    #[test]
    fn records_are_framed_whole_even_under_a_small_max_line_bytes() {
        assert_eq!(Format::Lines.framing_limit(4096), 4096);
        assert_eq!(Format::Cri.framing_limit(4096), MIN_RECORD_LINE);
        assert_eq!(Format::DockerJson.framing_limit(1 << 30), 1 << 30);
    }

    #[test]
    fn fragments_past_max_bytes_are_handed_out_cut_and_nothing_is_lost() {
        let text = "1 stdout P aaaa\n1 stdout P bbbb\n1 stdout F cc\n";
        let mut c = stage(Format::Cri, 6);
        let got: Vec<String> = run(&mut c, vec![framed(text)])
            .into_iter()
            .map(|g| g.0)
            .collect();
        assert_eq!(got, vec!["aaaa", "bbbbcc"]);
    }

    /// A runtime's file of `lines`, each cut into fragments at `cuts` (positions inside
    /// it); `record(i, fragment, last)` writes one record of line `i`.
    fn runtime_file(
        lines: &[(String, Vec<usize>)],
        record: impl Fn(usize, &str, bool) -> String,
    ) -> String {
        let mut out = String::new();
        for (i, (msg, cuts)) in lines.iter().enumerate() {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (msg.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut from = 0;
            for c in cuts.into_iter().filter(|&c| c > 0 && c < msg.len()) {
                out.push_str(&record(i, &msg[from..c], false));
                from = c;
            }
            out.push_str(&record(i, &msg[from..], true));
        }
        out
    }

    fn cri_file(lines: &[(String, Vec<usize>)]) -> String {
        runtime_file(lines, |i, m, last| {
            format!("{i} stdout {} {m}\n", if last { "F" } else { "P" })
        })
    }

    fn docker_file(lines: &[(String, Vec<usize>)]) -> String {
        runtime_file(lines, |i, m, last| {
            let log = if last { format!("{m}\n") } else { m.to_owned() };
            let entry = serde_json::json!({"log": log, "stream": "stdout", "time": i.to_string()});
            format!("{entry}\n")
        })
    }

    proptest! {
        /// Lines cut into fragments at any place, read in any chunking, come out whole, in
        /// order, each with its first fragment's offset and time; a kill between any two
        /// reads followed by a restart at the held offset loses and cuts nothing.
        #[test]
        fn fragments_joined_at_every_boundary(
            msgs in prop::collection::vec(("[a-z \"\\\\]{0,12}", prop::collection::vec(any::<usize>(), 0..4)), 1..12),
            reads in prop::collection::vec(any::<usize>(), 0..6),
            kill in any::<usize>(),
            docker in any::<bool>(),
        ) {
            let (format, text) = if docker {
                (Format::DockerJson, docker_file(&msgs))
            } else {
                (Format::Cri, cri_file(&msgs))
            };
            let framed = framed(&text);
            let want: Vec<(String, String)> = msgs
                .iter()
                .enumerate()
                .map(|(i, (m, _))| (m.clone(), i.to_string()))
                .collect();
            let first_offsets: Vec<u64> = {
                let mut seen = std::collections::HashSet::new();
                framed.iter().filter(|l| {
                    let t = ev_time(&l.body, docker);
                    seen.insert(t)
                }).map(|l| l.offset).collect()
            };
            let got = run(&mut stage(format, 1 << 20), chunked(&framed, &reads));
            let pairs: Vec<(String, String)> = got.iter().map(|g| (g.0.clone(), g.3.clone().unwrap())).collect();
            prop_assert_eq!(&pairs, &want);
            let offsets: Vec<u64> = got.iter().map(|g| g.1).collect();
            prop_assert_eq!(&offsets, &first_offsets);

            let chunks = chunked(&framed, &reads);
            let kill = kill % (chunks.len() + 1);
            let mut c = stage(format, 1 << 20);
            let mut out = Vec::new();
            let mut read_to = 0u64;
            for mut lines in chunks.into_iter().take(kill) {
                if let Some(l) = lines.last() {
                    read_to = l.offset + l.body.len() as u64 + 1;
                }
                c.apply(&mut lines, false);
                out.extend(lines.iter().map(ev));
            }
            let restart = c.held_from().unwrap_or(read_to);
            let rest: Vec<Line> = framed.iter().filter(|l| l.offset >= restart).cloned().collect();
            out.extend(run(&mut stage(format, 1 << 20), chunked(&rest, &reads)));
            let pairs: Vec<(String, String)> = out.iter().map(|g| (g.0.clone(), g.3.clone().unwrap())).collect();
            prop_assert_eq!(pairs, want);
        }
    }

    /// The tokens worth planting in container logs: CRI's fields and tags, JSON's syntax and
    /// escapes.
    const DICTIONARY: &[&[u8]] = &[
        b" ",
        b"\n",
        b"stdout",
        b"stderr",
        b" P ",
        b" F ",
        b"F:x",
        b"2026-11-30T10:00:00.1Z",
        b"{",
        b"}",
        b"\"",
        b"\\",
        b"\\u00e9",
        b"\\ud800",
        b"\\n",
        b":",
        b",",
        b"\"log\":",
        b"\"stream\":",
        b"\"time\":",
        b"null",
        b"[]",
    ];

    proptest! {
        /// Hostile bytes, and runtime files with mutations, in any chunking, under any join
        /// limit: no panic; every event is at an input line's offset, in order, ends within
        /// the file, is no longer than the limit or the longest line, and the events hold no
        /// more bytes than the lines; a line's fragments are never all lost (some event
        /// comes out of every read that had lines, at the latest at the end), nothing stays
        /// held after the end, and no allocation exceeds a bound of the input's size.
        #[test]
        fn hostile_lines_decode_within_bounds(
            docker in any::<bool>(),
            data in prop::collection::vec(any::<u8>(), 0..400),
            msgs in prop::collection::vec(("[a-z \"\\\\]{0,12}", prop::collection::vec(any::<usize>(), 0..4)), 1..8),
            changes in prop::collection::vec(sluice_channels::fuzzing::mutation(DICTIONARY), 0..5),
            arbitrary in any::<bool>(),
            reads in prop::collection::vec(any::<usize>(), 0..6),
            max in prop_oneof![1u64..40, Just(1u64 << 20)],
        ) {
            let format = if docker { Format::DockerJson } else { Format::Cri };
            let mut input = if arbitrary {
                data
            } else if docker {
                docker_file(&msgs).into_bytes()
            } else {
                cri_file(&msgs).into_bytes()
            };
            for m in &changes {
                m.apply(&mut input);
            }
            let lines = framed_bytes(&input);
            let longest = lines.iter().map(|l| l.body.len()).max().unwrap_or(0);
            let total: usize = lines.iter().map(|l| l.body.len()).sum();
            let offsets: std::collections::HashSet<u64> = lines.iter().map(|l| l.offset).collect();
            let mut c = stage(format, max);
            let (out, largest) = sluice_channels::fuzzing::largest_allocation(|| {
                let mut out = Vec::new();
                for mut read in chunked(&lines, &reads) {
                    c.apply(&mut read, false);
                    out.extend(read);
                }
                let mut rest = Vec::new();
                c.apply(&mut rest, true);
                out.extend(rest);
                out
            });
            prop_assert!(largest <= 4096 + 16 * input.len(), "{} bytes allocated", largest);
            prop_assert!(c.held_from().is_none());
            prop_assert_eq!(out.is_empty(), lines.is_empty());
            prop_assert!(out.len() <= lines.len());
            let mut last = 0;
            for l in &out {
                prop_assert!(offsets.contains(&l.offset) && l.offset >= last);
                last = l.offset;
                prop_assert!(l.end() >= l.offset && l.end() <= input.len() as u64);
                prop_assert!(l.body.len() <= longest.max(max as usize));
            }
            prop_assert!(out.iter().map(|l| l.body.len()).sum::<usize>() <= total);
        }
    }

    /// The time field of a generated line (the line's index).
    fn ev_time(body: &[u8], docker: bool) -> String {
        if docker {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            v["time"].as_str().unwrap().to_owned()
        } else {
            String::from_utf8(body.split(|&b| b == b' ').next().unwrap().to_vec()).unwrap()
        }
    }
}
