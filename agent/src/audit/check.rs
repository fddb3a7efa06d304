//! The analysis behind `sluice audit`, free of Kafka: records in, a verdict per file out.
//!
//! Records are grouped into streams by fid header (by path for records without one) and
//! checked in Kafka order:
//! - an offset already delivered is a *duplicate* (at-least-once allows it);
//! - a first delivery at an offset below an earlier first delivery is *out of order*;
//! - one stream in several partitions is *split* (its order cannot hold);
//! - what no record covers is a *gap*. Without the original file a record follows the one
//!   before it when it starts 0, 1 or 2 bytes after that one's body ends (a piece of a long
//!   line, `\n`, `\r\n`), and the first line must start at 0; with the original
//!   ([`ExpectedFile`]) the file's lines decide exactly, bodies are compared, and lines missing
//!   at the end are found too.
//!
//! Memory grows with the number of streams and of gaps, not with the number of lines: the
//! delivered offsets of a stream are kept as runs ([`Chain`]) of records that follow each
//! other.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;

use serde::Serialize;

use super::expect::{ExpectedFile, ExpectedSet, Verdict};
use sluice_channels::names::{escape, escape_path};

/// How many items of each kind of finding a report lists; counts are always exact.
pub const MAX_SHOWN: usize = 100;

/// How many bytes of a body a mismatch shows.
const SHOWN_BYTES: usize = 60;

/// What the checker tolerates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// A stream's first line may start past offset 0 (a source that starts at a file's end).
    pub allow_late_start: bool,
    /// Duplicates are problems, not just counted.
    pub no_duplicates: bool,
    /// Records without the path and offset headers are counted, not problems.
    pub allow_foreign: bool,
}

/// One Kafka record as the checker sees it: where it sits and its raw headers.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The Kafka partition.
    pub partition: i32,
    /// The record's offset in its partition.
    pub kafka_offset: i64,
    /// The path header's value.
    pub path: Option<&'a [u8]>,
    /// The offset header's value (decimal ASCII).
    pub offset: Option<&'a [u8]>,
    /// The file-identity header's value.
    pub fid: Option<&'a [u8]>,
    /// The end header's value: where the record ends in its file (terminator excluded),
    /// when its body was changed on the way and its length does not say it.
    pub end: Option<&'a [u8]>,
    /// The dropped-from header's value: where lines dropped on purpose right before the
    /// record begin.
    pub dropped_from: Option<&'a [u8]>,
    /// The record's value: the line.
    pub body: &'a [u8],
}

/// A count of findings of one kind and the first [`MAX_SHOWN`] of them.
#[derive(Debug, Clone, Serialize)]
pub struct Listed<T> {
    /// How many there are.
    pub count: u64,
    /// The first ones, in the order found.
    pub shown: Vec<T>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            count: 0,
            shown: Vec::new(),
        }
    }
}

impl<T> Listed<T> {
    fn push(&mut self, item: T) {
        self.count += 1;
        if self.shown.len() < MAX_SHOWN {
            self.shown.push(item);
        }
    }
}

/// Where a record sits in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// The partition.
    pub partition: i32,
    /// The offset in the partition.
    pub kafka_offset: i64,
}

/// A record whose file offset was already delivered.
#[derive(Debug, Clone, Serialize)]
pub struct Duplicate {
    /// Where the repeat sits.
    pub at: Position,
    /// The file offset.
    pub offset: u64,
}

/// A first delivery that came after a record from further into the file.
#[derive(Debug, Clone, Serialize)]
pub struct OutOfOrder {
    /// Where it sits.
    pub at: Position,
    /// Its file offset.
    pub offset: u64,
    /// The highest file offset delivered before it.
    pub after: u64,
}

/// Bytes of a file that no record delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The first missing byte (the end of the body before, when the original is unknown).
    pub from: u64,
    /// Just past the last missing byte: where the next delivered record starts, or the
    /// file's end.
    pub to: u64,
    /// With the original: the 1-based number of the first line missing (in part or whole).
    pub first_line: Option<u64>,
    /// With the original: how many lines are missing (in part or whole).
    pub lines: Option<u64>,
}

/// A record that reaches past the start of the next delivered record: the offsets and body
/// lengths contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlap {
    /// The offset of the record that reaches too far.
    pub offset: u64,
    /// Where its body ends.
    pub end: u64,
    /// Where the next delivered record starts.
    pub next: u64,
}

/// A record whose body is not the original's at its offset.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// Where it sits.
    pub at: Position,
    /// Its file offset.
    pub offset: u64,
    /// The 1-based line of the original it falls in; none when the offset is not in a line.
    pub line: Option<u64>,
    /// The original's bytes (escaped, shortened).
    pub expected: String,
    /// The record's body (escaped, shortened).
    pub got: String,
}

/// Why a record cannot be attributed to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForeignReason {
    /// No path header.
    NoPath,
    /// No offset header.
    NoOffset,
    /// The offset header is not a decimal number.
    BadOffset,
}

/// A record without usable path and offset headers.
#[derive(Debug, Clone, Serialize)]
pub struct Foreign {
    /// Where it sits.
    pub at: Position,
    /// What is wrong with its headers.
    pub reason: ForeignReason,
}

/// The verdict on one stream: one file (path and file identity).
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// The path header, escaped ([`escape`]).
    pub path: String,
    /// The file-identity header, when records carry one, escaped.
    pub fid: Option<String>,
    /// The original file it was compared with (`--expect`), escaped.
    pub original: Option<String>,
    /// The partitions its records were found in.
    pub partitions: Vec<i32>,
    /// Records, duplicates included.
    pub records: u64,
    /// First deliveries: distinct lines (or pieces) that arrived.
    pub lines: u64,
    /// Repeated offsets.
    pub duplicates: Listed<Duplicate>,
    /// Missing bytes.
    pub gaps: Listed<Gap>,
    /// Records reaching into the next.
    pub overlaps: Listed<Overlap>,
    /// First deliveries behind an earlier one.
    pub out_of_order: Listed<OutOfOrder>,
    /// Bodies that differ from the original.
    pub mismatches: Listed<Mismatch>,
    /// How many problems (findings that make the audit fail) this stream has.
    pub problems: u64,
}

/// An original file (`--expect`) of which no record arrived.
#[derive(Debug, Clone, Serialize)]
pub struct MissingFile {
    /// The original's path, escaped ([`escape`]).
    pub path: String,
    /// Its line count.
    pub lines: u64,
    /// Its size.
    pub bytes: u64,
}

/// Totals over the topic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Streams found.
    pub streams: u64,
    /// Records read.
    pub records: u64,
    /// First deliveries over all streams.
    pub lines: u64,
    /// Duplicates over all streams.
    pub duplicates: u64,
    /// Records without path and offset headers.
    pub unattributable: u64,
    /// Findings that make the audit fail.
    pub problems: u64,
}

/// Everything the checker found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// No problem found: exit 0.
    pub clean: bool,
    /// Totals.
    pub summary: Summary,
    /// One entry per stream, by path then fid.
    pub streams: Vec<StreamReport>,
    /// Originals of which nothing arrived (`--expect`), empty files excepted.
    pub missing_files: Vec<MissingFile>,
    /// Records without usable path and offset headers.
    pub unattributable: Listed<Foreign>,
}

/// A run of delivered records, each following the one before without a gap.
#[derive(Debug, Clone, Copy)]
struct Chain {
    /// The offset of its last record.
    last: u64,
    /// Where its last record's body ends.
    end: u64,
}

/// The state of one stream.
#[derive(Debug)]
struct Stream {
    path: Box<[u8]>,
    fid: Option<Box<[u8]>>,
    original: Option<usize>,
    partitions: Vec<i32>,
    records: u64,
    lines: u64,
    duplicates: Listed<Duplicate>,
    out_of_order: Listed<OutOfOrder>,
    mismatches: Listed<Mismatch>,
    /// Delivered runs by start offset; disjoint, and never two that follow each other.
    chains: BTreeMap<u64, Chain>,
    /// The highest offset of a first delivery.
    max_first: Option<u64>,
}

/// Whether a record at `next` follows one whose body ended at `end`.
fn follows(original: Option<&ExpectedFile>, end: u64, next: u64) -> bool {
    match original {
        None => next >= end && next - end <= 2,
        Some(f) => f.next_after(end) == next,
    }
}

/// Shows up to [`SHOWN_BYTES`] of `bytes`, escaped.
fn show(bytes: &[u8]) -> String {
    let mut s = bytes[..bytes.len().min(SHOWN_BYTES)]
        .escape_ascii()
        .to_string();
    if bytes.len() > SHOWN_BYTES {
        s.push_str("...");
    }
    s
}

impl Stream {
    fn new(path: &[u8], fid: Option<&[u8]>, original: Option<usize>) -> Self {
        Stream {
            path: path.into(),
            fid: fid.map(Into::into),
            original,
            partitions: Vec::new(),
            records: 0,
            lines: 0,
            duplicates: Listed::default(),
            out_of_order: Listed::default(),
            mismatches: Listed::default(),
            chains: BTreeMap::new(),
            max_first: None,
        }
    }

    fn observe(
        &mut self,
        at: Position,
        (offset, span): (u64, Span),
        body: &[u8],
        original: Option<&ExpectedFile>,
    ) {
        self.records += 1;
        if !self.partitions.contains(&at.partition) {
            self.partitions.push(at.partition);
        }
        let verdict = match span.end {
            // The body was changed on the way (joined, parsed, rewritten): the end header
            // says what it covers, and there is nothing to compare it with.
            Some(end) => Some(Verdict::Match { end }),
            None => original.map(|f| f.verify(offset, body)),
        };
        let end = match verdict {
            None => offset.saturating_add(body.len() as u64),
            Some(Verdict::Match { end }) => end,
            Some(Verdict::Mismatch {
                covers,
                line,
                expected,
            }) => {
                let (expected, got) = (show(expected), show(body));
                self.mismatches.push(Mismatch {
                    at,
                    offset,
                    line,
                    expected,
                    got,
                });
                match covers {
                    Some(end) => end,
                    None => return,
                }
            }
        };
        if self.delivered(offset) {
            self.duplicates.push(Duplicate { at, offset });
            return;
        }
        self.lines += 1;
        match self.max_first {
            Some(after) if offset < after => {
                self.out_of_order.push(OutOfOrder { at, offset, after });
            }
            _ => self.max_first = Some(offset),
        }
        let start = span.dropped_from.filter(|&f| f <= offset).unwrap_or(offset);
        self.insert((start, offset), end, original);
    }

    /// True when `offset` lies in a delivered run: at a delivered record's start, or inside
    /// a delivered body.
    fn delivered(&self, offset: u64) -> bool {
        self.chains
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, c)| offset < c.end || offset == c.last)
    }

    /// Adds a first delivery to the runs, joining the run before and the run after when it
    /// follows the one and is followed by the other.
    /// `from` is where the record's run begins: its offset, or before it where lines
    /// dropped on purpose right before it begin.
    fn insert(&mut self, (from, offset): (u64, u64), end: u64, original: Option<&ExpectedFile>) {
        let mut start = from;
        match self.chains.range_mut(..from).next_back() {
            Some((&s, c)) if follows(original, c.end, from) => {
                *c = Chain { last: offset, end };
                start = s;
            }
            _ => {
                self.chains.insert(from, Chain { last: offset, end });
            }
        }
        let next = self
            .chains
            .range((Bound::Excluded(offset), Bound::Unbounded))
            .next();
        if let Some((&n, &chain)) = next
            && follows(original, end, n)
        {
            self.chains.remove(&n);
            self.chains.insert(start, chain);
        }
    }

    /// The gaps and overlaps between the runs, before the first and (with the original)
    /// after the last.
    fn breaks(
        &self,
        original: Option<&ExpectedFile>,
        settings: &Settings,
    ) -> (Listed<Gap>, Listed<Overlap>) {
        let mut gaps = Listed::default();
        let mut overlaps = Listed::default();
        let gap = |from: u64, to: u64| {
            let lines = original.map(|f| (f.line_number(from), f.line_number(to - 1)));
            Gap {
                from,
                to,
                first_line: lines.map(|(first, _)| first),
                lines: lines.map(|(first, last)| last - first + 1),
            }
        };
        let mut prev: Option<Chain> = None;
        for (&start, &chain) in &self.chains {
            match prev {
                None if start > 0 && !settings.allow_late_start => gaps.push(gap(0, start)),
                None => {}
                Some(p) if follows(original, p.end, start) => {}
                Some(p) => {
                    let from = original.map_or(p.end, |f| f.next_after(p.end));
                    if from < start {
                        gaps.push(gap(from, start));
                    } else {
                        overlaps.push(Overlap {
                            offset: p.last,
                            end: p.end,
                            next: start,
                        });
                    }
                }
            }
            prev = Some(chain);
        }
        if let Some(f) = original {
            let from = prev.map_or(0, |p| f.next_after(p.end));
            if from < f.len() {
                gaps.push(gap(from, f.len()));
            }
        }
        (gaps, overlaps)
    }

    fn report(self, expected: Option<&ExpectedSet>, settings: &Settings) -> StreamReport {
        let original = self.original.zip(expected).map(|(i, set)| set.file(i));
        let (gaps, overlaps) = self.breaks(original, settings);
        let split = self.partitions.len() > 1;
        let problems = gaps.count
            + overlaps.count
            + self.out_of_order.count
            + self.mismatches.count
            + u64::from(split)
            + if settings.no_duplicates {
                self.duplicates.count
            } else {
                0
            };
        let mut partitions = self.partitions;
        partitions.sort_unstable();
        StreamReport {
            path: escape(&self.path),
            fid: self.fid.as_deref().map(escape),
            original: original.map(|f| escape_path(f.path())),
            partitions,
            records: self.records,
            lines: self.lines,
            duplicates: self.duplicates,
            gaps,
            overlaps,
            out_of_order: self.out_of_order,
            mismatches: self.mismatches,
            problems,
        }
    }
}

/// What a record's headers say of the bytes it covers beyond its offset and body.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    /// Where it ends in its file, when its body does not say it.
    end: Option<u64>,
    /// Where lines dropped on purpose right before it begin.
    dropped_from: Option<u64>,
}

/// Parses a decimal ASCII offset; nothing else (no sign, no spaces).
fn parse_offset(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// Checks records one at a time and reports per stream at the end.
#[derive(Debug)]
pub struct Checker {
    settings: Settings,
    expected: Option<ExpectedSet>,
    hasher: RandomState,
    /// Streams by the hash of their fid (or path, without one); collisions share a bucket.
    index: HashMap<u64, Vec<usize>>,
    streams: Vec<Stream>,
    records: u64,
    foreign: Listed<Foreign>,
}

impl Checker {
    /// A checker with these tolerances, comparing against `expected` when given.
    pub fn new(settings: Settings, expected: Option<ExpectedSet>) -> Self {
        Checker {
            settings,
            expected,
            hasher: RandomState::new(),
            index: HashMap::new(),
            streams: Vec::new(),
            records: 0,
            foreign: Listed::default(),
        }
    }

    /// Takes the next record of the topic; records of one partition must come in order.
    pub fn observe(&mut self, record: Record<'_>) {
        self.records += 1;
        let at = Position {
            partition: record.partition,
            kafka_offset: record.kafka_offset,
        };
        let reason = match (record.path, record.offset.map(parse_offset)) {
            (Some(path), Some(Some(offset))) => {
                let id = self.stream(path, record.fid);
                let stream = &mut self.streams[id];
                let original = stream
                    .original
                    .zip(self.expected.as_ref())
                    .map(|(i, s)| s.file(i));
                let span = Span {
                    end: record.end.and_then(parse_offset).filter(|&e| e >= offset),
                    dropped_from: record.dropped_from.and_then(parse_offset),
                };
                stream.observe(at, (offset, span), record.body, original);
                return;
            }
            (None, _) => ForeignReason::NoPath,
            (Some(_), None) => ForeignReason::NoOffset,
            (Some(_), Some(None)) => ForeignReason::BadOffset,
        };
        self.foreign.push(Foreign { at, reason });
    }

    /// The index of the stream of `fid`, or of `path` for records without one, created on
    /// first sight (named by the path it was first seen under: a file renamed while it was
    /// read, a rotated log found again after a restart, keeps its fid and its stream). No
    /// allocation for a stream already known.
    fn stream(&mut self, path: &[u8], fid: Option<&[u8]>) -> usize {
        let hash = match fid {
            Some(fid) => self.hasher.hash_one((b"fid", fid)),
            None => self.hasher.hash_one((b"path", path)),
        };
        let bucket = self.index.entry(hash).or_default();
        let streams = &self.streams;
        if let Some(&id) = bucket.iter().find(|&&i| match fid {
            Some(_) => streams[i].fid.as_deref() == fid,
            None => streams[i].fid.is_none() && &*streams[i].path == path,
        }) {
            return id;
        }
        let original = self.expected.as_ref().and_then(|e| e.find(path));
        self.streams.push(Stream::new(path, fid, original));
        bucket.push(self.streams.len() - 1);
        self.streams.len() - 1
    }

    /// The verdict: per stream, originals that never appeared, unattributable records.
    pub fn finish(self) -> Outcome {
        let settings = self.settings;
        let expected = self.expected.as_ref();
        let mut used = vec![false; expected.map_or(0, |e| e.files().len())];
        let mut streams = self.streams;
        streams.sort_by(|a, b| (&a.path, &a.fid).cmp(&(&b.path, &b.fid)));
        let streams: Vec<StreamReport> = streams
            .into_iter()
            .map(|s| {
                if let Some(i) = s.original {
                    used[i] = true;
                }
                s.report(expected, &settings)
            })
            .collect();
        let missing_files: Vec<MissingFile> = expected
            .map(ExpectedSet::files)
            .unwrap_or_default()
            .iter()
            .zip(&used)
            .filter(|(f, used)| !**used && f.lines() > 0)
            .map(|(f, _)| MissingFile {
                path: escape_path(f.path()),
                lines: f.lines(),
                bytes: f.len(),
            })
            .collect();
        let foreign_problems = if settings.allow_foreign {
            0
        } else {
            self.foreign.count
        };
        let summary = Summary {
            streams: streams.len() as u64,
            records: self.records,
            lines: streams.iter().map(|s| s.lines).sum(),
            duplicates: streams.iter().map(|s| s.duplicates.count).sum(),
            unattributable: self.foreign.count,
            problems: streams.iter().map(|s| s.problems).sum::<u64>()
                + missing_files.len() as u64
                + foreign_problems,
        };
        Outcome {
            clean: summary.problems == 0,
            summary,
            streams,
            missing_files,
            unattributable: self.foreign,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A record of `path` at file offset `offset` in partition 0 at Kafka offset `k`.
    fn rec<'a>(k: i64, path: &'a str, offset: &'a str, body: &'a [u8]) -> Record<'a> {
        Record {
            partition: 0,
            kafka_offset: k,
            path: Some(path.as_bytes()),
            offset: Some(offset.as_bytes()),
            fid: None,
            end: None,
            dropped_from: None,
            body,
        }
    }

    /// The lines of `content` as (offset, body), framed at `\n` / `\r\n`, pieces of at most
    /// `max` bytes.
    fn lines(content: &[u8], max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut pos = 0;
        for raw in content.split_inclusive(|&b| b == b'\n') {
            let mut body = raw.strip_suffix(b"\n").unwrap_or(raw);
            if raw.ends_with(b"\n") {
                body = body.strip_suffix(b"\r").unwrap_or(body);
            }
            let mut at = pos;
            if body.is_empty() {
                out.push((at as u64, Vec::new()));
            }
            for piece in body.chunks(max) {
                out.push((at as u64, piece.to_vec()));
                at += piece.len();
            }
            pos += raw.len();
        }
        out
    }

    /// Feeds `lines` (in the given order) as records of `path` to a checker.
    fn audit_with(
        settings: Settings,
        expected: Option<ExpectedSet>,
        path: &str,
        lines: &[(u64, Vec<u8>)],
    ) -> Outcome {
        let mut c = Checker::new(settings, expected);
        for (k, (offset, body)) in lines.iter().enumerate() {
            let offset = offset.to_string();
            c.observe(rec(k as i64, path, &offset, body));
        }
        c.finish()
    }

    fn audit(lines: &[(u64, Vec<u8>)]) -> Outcome {
        audit_with(Settings::default(), None, "/spool/a.log", lines)
    }

    fn expect(content: &[u8]) -> ExpectedSet {
        let f = ExpectedFile::from_bytes(PathBuf::from("/orig/a.log"), content.to_vec());
        ExpectedSet::from_files(vec![f]).unwrap()
    }

    fn audit_expect(content: &[u8], lines: &[(u64, Vec<u8>)]) -> Outcome {
        audit_with(
            Settings::default(),
            Some(expect(content)),
            "/spool/a.log",
            lines,
        )
    }

    fn only(o: &Outcome) -> &StreamReport {
        assert_eq!(o.streams.len(), 1, "{o:#?}");
        &o.streams[0]
    }

    const TEXT: &[u8] = b"alpha\nbravo\ncharlie\ndelta\necho\n";

    #[test]
    fn a_clean_stream_is_clean() {
        let l = lines(TEXT, 100);
        for o in [audit(&l), audit_expect(TEXT, &l)] {
            assert!(o.clean, "{o:#?}");
            let s = only(&o);
            assert_eq!(
                (s.records, s.lines, s.duplicates.count, s.problems),
                (5, 5, 0, 0)
            );
            assert_eq!(s.partitions, [0]);
            assert_eq!(o.summary.lines, 5);
        }
    }

    #[test]
    fn a_missing_middle_line_is_a_gap_with_its_bytes() {
        let mut l = lines(TEXT, 100);
        l.remove(2); // charlie at 12..19
        let o = audit(&l);
        assert!(!o.clean);
        let s = only(&o);
        assert_eq!(s.gaps.count, 1);
        assert_eq!(
            s.gaps.shown[0],
            Gap {
                from: 11,
                to: 20,
                first_line: None,
                lines: None
            }
        );
        let o = audit_expect(TEXT, &l);
        assert!(!o.clean);
        let g = &only(&o).gaps.shown[0];
        assert_eq!(
            (g.from, g.to, g.first_line, g.lines),
            (12, 20, Some(3), Some(1))
        );
    }

    #[test]
    fn a_missing_first_line_is_a_gap_unless_a_late_start_is_allowed() {
        let l = lines(TEXT, 100)[1..].to_vec();
        let o = audit(&l);
        assert!(!o.clean);
        assert_eq!(
            only(&o).gaps.shown[0],
            Gap {
                from: 0,
                to: 6,
                first_line: None,
                lines: None
            }
        );
        let late = Settings {
            allow_late_start: true,
            ..Settings::default()
        };
        assert!(audit_with(late, None, "/spool/a.log", &l).clean);
        let o = audit_expect(TEXT, &l);
        assert_eq!(only(&o).gaps.shown[0].first_line, Some(1));
        assert!(!o.clean);
    }

    #[test]
    fn a_missing_last_line_is_found_only_against_the_original() {
        let mut l = lines(TEXT, 100);
        l.pop();
        assert!(audit(&l).clean, "without the original the end is unknown");
        let o = audit_expect(TEXT, &l);
        assert!(!o.clean);
        let g = &only(&o).gaps.shown[0];
        assert_eq!(
            (g.from, g.to, g.first_line, g.lines),
            (26, 31, Some(5), Some(1))
        );
        // An unterminated last line, missing, too.
        let text = b"one\ntwo";
        assert!(!audit_expect(text, &lines(text, 100)[..1]).clean);
        assert!(audit_expect(text, &lines(text, 100)).clean);
    }

    #[test]
    fn a_duplicated_line_is_counted_and_fails_only_with_no_duplicates() {
        let mut l = lines(TEXT, 100);
        l.insert(2, l[1].clone());
        let o = audit(&l);
        assert!(o.clean, "{o:#?}");
        let s = only(&o);
        assert_eq!((s.records, s.lines, s.duplicates.count), (6, 5, 1));
        assert_eq!(s.duplicates.shown[0].offset, 6);
        assert_eq!(
            s.duplicates.shown[0].at,
            Position {
                partition: 0,
                kafka_offset: 2
            }
        );
        assert!(audit_expect(TEXT, &l).clean);
        let strict = Settings {
            no_duplicates: true,
            ..Settings::default()
        };
        let o = audit_with(strict, None, "/spool/a.log", &l);
        assert!(!o.clean);
        assert_eq!(o.summary.problems, 1);
    }

    #[test]
    fn a_repeated_suffix_after_a_restart_is_clean_with_duplicates_counted() {
        let all = lines(TEXT, 100);
        let mut l = all[..4].to_vec();
        l.extend_from_slice(&all[1..]);
        for o in [audit(&l), audit_expect(TEXT, &l)] {
            assert!(o.clean, "{o:#?}");
            let s = only(&o);
            assert_eq!((s.records, s.lines, s.duplicates.count), (8, 5, 3));
        }
    }

    #[test]
    fn two_swapped_lines_are_out_of_order_and_nothing_is_missing() {
        let mut l = lines(TEXT, 100);
        l.swap(1, 2);
        for o in [audit(&l), audit_expect(TEXT, &l)] {
            assert!(!o.clean);
            let s = only(&o);
            assert_eq!(s.out_of_order.count, 1);
            let ooo = &s.out_of_order.shown[0];
            assert_eq!((ooo.offset, ooo.after, ooo.at.kafka_offset), (6, 12, 2));
            assert_eq!(s.gaps.count, 0, "the late line filled the gap: {s:#?}");
            assert_eq!(s.problems, 1);
        }
    }

    #[test]
    fn crlf_files_are_clean_and_their_gaps_found() {
        let text = b"one\r\ntwo\r\n\r\nfour\r\n";
        let l = lines(text, 100);
        assert_eq!(l.len(), 4);
        assert!(audit(&l).clean);
        assert!(audit_expect(text, &l).clean);
        let mut broken = l.clone();
        broken.remove(1);
        assert!(!audit(&broken).clean);
        assert!(!audit_expect(text, &broken).clean);
    }

    #[test]
    fn pieces_of_a_long_line_are_clean_and_a_missing_piece_is_a_gap() {
        let text = b"short\nabcdefghijklmnopqrstuvwxyz\nend\n";
        let l = lines(text, 8);
        assert_eq!(l.len(), 6);
        assert!(audit(&l).clean);
        assert!(audit_expect(text, &l).clean);
        let mut broken = l.clone();
        broken.remove(2); // "ijklmnop" at 14
        assert!(!audit(&broken).clean);
        let o = audit_expect(text, &broken);
        let g = &only(&o).gaps.shown[0];
        assert_eq!(
            (g.from, g.to, g.first_line, g.lines),
            (14, 22, Some(2), Some(1))
        );
    }

    #[test]
    fn a_truncated_long_line_is_found_against_the_original() {
        let text = b"abcdefghijklmnop\nnext\n";
        let l = vec![(0, b"abcdefgh".to_vec()), (17, b"next".to_vec())];
        let o = audit_expect(text, &l);
        assert!(!o.clean);
        assert_eq!(
            (only(&o).gaps.shown[0].from, only(&o).gaps.shown[0].to),
            (8, 17)
        );
    }

    #[test]
    fn empty_lines_are_clean_and_a_missing_one_is_found_against_the_original() {
        let text = b"a\n\n\nb\n";
        let l = lines(text, 100);
        assert_eq!(l.len(), 4);
        assert!(audit(&l).clean);
        assert!(audit_expect(text, &l).clean);
        let mut broken = l.clone();
        broken.remove(1);
        let o = audit_expect(text, &broken);
        assert!(!o.clean);
        assert_eq!(only(&o).gaps.shown[0].first_line, Some(2));
        // Two empty lines missing are more than a terminator: found without it too.
        broken.remove(1);
        assert!(!audit(&broken).clean);
    }

    #[test]
    fn a_stream_split_across_partitions_is_a_problem() {
        let l = lines(TEXT, 100);
        let mut c = Checker::new(Settings::default(), None);
        for (k, (offset, body)) in l.iter().enumerate() {
            let offset = offset.to_string();
            let mut r = rec(k as i64, "/spool/a.log", &offset, body);
            r.partition = (k % 2) as i32;
            c.observe(r);
        }
        let o = c.finish();
        assert!(!o.clean);
        let s = only(&o);
        assert_eq!(s.partitions, [0, 1]);
        assert_eq!(s.problems, 1);
    }

    #[test]
    fn a_recreated_file_with_a_new_fid_is_a_new_clean_stream() {
        let l = lines(TEXT, 100);
        let mut c = Checker::new(Settings::default(), None);
        let mut k = 0;
        for fid in ["2049:11", "2049:12"] {
            for (offset, body) in &l {
                let offset = offset.to_string();
                let mut r = rec(k, "/var/log/app.log", &offset, body);
                r.fid = Some(fid.as_bytes());
                c.observe(r);
                k += 1;
            }
        }
        let o = c.finish();
        assert!(o.clean, "{o:#?}");
        assert_eq!(o.streams.len(), 2);
        assert_eq!(o.streams[1].fid.as_deref(), Some("2049:12"));
        assert!(
            o.streams
                .iter()
                .all(|s| s.lines == 5 && s.duplicates.count == 0)
        );
    }

    #[test]
    fn a_file_renamed_while_read_keeps_its_stream_by_its_fid() {
        let mut c = Checker::new(Settings::default(), None);
        for (k, (path, offset, body)) in [
            ("/logs/0.log", "0", &b"alpha"[..]),
            ("/logs/0.log.1", "6", b"bravo"),
            ("/logs/0.log.1", "12", b"charlie"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = rec(k as i64, path, offset, body);
            r.fid = Some(b"1:2:ab");
            c.observe(r);
        }
        let o = c.finish();
        assert!(o.clean, "{o:#?}");
        assert_eq!(only(&o).path, "/logs/0.log");
    }

    #[test]
    fn the_same_offsets_without_a_fid_are_duplicates() {
        let mut l = lines(TEXT, 100);
        l.extend(lines(TEXT, 100));
        let o = audit(&l);
        assert_eq!(only(&o).duplicates.count, 5);
    }

    #[test]
    fn invalid_utf8_bodies_and_paths_are_handled_as_bytes() {
        let text = b"\xff\xfe\n\xc3\x28 bad\nok\n";
        let l = lines(text, 100);
        assert!(audit(&l).clean);
        assert!(audit_expect(text, &l).clean);
        let mut changed = l.clone();
        changed[1].1 = b"\xc3\x29 bad".to_vec();
        let o = audit_expect(text, &changed);
        assert!(!o.clean);
        let m = &only(&o).mismatches.shown[0];
        assert_eq!((m.offset, m.line), (3, Some(2)));
        assert_eq!(
            (m.expected.as_str(), m.got.as_str()),
            ("\\xc3( bad", "\\xc3) bad")
        );
        assert_eq!(only(&o).gaps.count, 0, "a changed line is reported once");
        let mut c = Checker::new(Settings::default(), None);
        c.observe(Record {
            partition: 0,
            kafka_offset: 0,
            path: Some(b"/spool/\xffname"),
            offset: Some(b"0"),
            fid: None,
            end: None,
            dropped_from: None,
            body: b"x",
        });
        // Shown escaped, not lossily: two names that differ in such bytes stay apart.
        assert_eq!(c.finish().streams[0].path, "/spool/\\xffname");
    }

    /// Records of `/spool/a.log` given as (offset, body, end header, dropped-from header).
    fn audit_spans(
        expected: Option<ExpectedSet>,
        records: &[(u64, &str, Option<u64>, Option<u64>)],
    ) -> Outcome {
        let mut c = Checker::new(Settings::default(), expected);
        let text: Vec<(String, Option<String>, Option<String>)> = records
            .iter()
            .map(|(o, _, e, d)| {
                (
                    o.to_string(),
                    e.map(|e| e.to_string()),
                    d.map(|d| d.to_string()),
                )
            })
            .collect();
        for (k, ((_, body, _, _), (offset, end, from))) in records.iter().zip(&text).enumerate() {
            let mut r = rec(k as i64, "/spool/a.log", offset, body.as_bytes());
            r.end = end.as_deref().map(str::as_bytes);
            r.dropped_from = from.as_deref().map(str::as_bytes);
            c.observe(r);
        }
        c.finish()
    }

    #[test]
    fn changed_bodies_are_checked_by_their_end_header_and_a_gap_is_still_found() {
        // alpha+bravo joined (CRLF-free, but say it anyway), charlie parsed to "C", delta, echo.
        let joined = [
            (0, "alpha\nbravo", Some(11), None),
            (12, "C", Some(19), None),
            (20, "delta", None, None),
            (26, "echo", None, None),
        ];
        assert!(audit_spans(None, &joined).clean);
        assert!(audit_spans(Some(expect(TEXT)), &joined).clean);
        let mut lost = joined.to_vec();
        lost.remove(1);
        let o = audit_spans(Some(expect(TEXT)), &lost);
        assert_eq!(only(&o).gaps.shown[0].first_line, Some(3), "{o:#?}");
        let o = audit_spans(None, &lost);
        assert_eq!(only(&o).gaps.count, 1, "{o:#?}");
        // Without the end header the parsed body would say it ends at 13: a gap.
        let mut bare = joined.to_vec();
        bare[1].2 = None;
        assert!(!audit_spans(None, &bare).clean);
    }

    #[test]
    fn lines_dropped_on_purpose_are_not_a_gap_and_a_loss_around_them_still_is() {
        // bravo and charlie dropped by a filter: delta says so.
        let filtered = [
            (0, "alpha", None, None),
            (20, "delta", None, Some(6)),
            (26, "echo", None, None),
        ];
        assert!(audit_spans(None, &filtered).clean);
        assert!(audit_spans(Some(expect(TEXT)), &filtered).clean);
        // Without the header, the same records leave a gap.
        let mut unsaid = filtered.to_vec();
        unsaid[1].3 = None;
        assert_eq!(only(&audit_spans(None, &unsaid)).gaps.count, 1);
        // alpha lost: the records after it do not cover it.
        let o = audit_spans(Some(expect(TEXT)), &filtered[1..]);
        assert_eq!(only(&o).gaps.shown[0].first_line, Some(1), "{o:#?}");
        // echo lost: found against the original.
        let o = audit_spans(Some(expect(TEXT)), &filtered[..2]);
        assert_eq!(only(&o).gaps.shown[0].first_line, Some(5), "{o:#?}");
    }

    #[test]
    fn a_changed_body_is_a_mismatch() {
        let mut l = lines(TEXT, 100);
        l[3].1 = b"DELTA".to_vec();
        assert!(
            audit(&l).clean,
            "without the original a same-length change is invisible"
        );
        let o = audit_expect(TEXT, &l);
        assert!(!o.clean);
        let s = only(&o);
        assert_eq!((s.mismatches.count, s.gaps.count, s.problems), (1, 0, 1));
        assert_eq!(s.mismatches.shown[0].expected, "delta");
    }

    #[test]
    fn unattributable_records_are_problems_unless_allowed() {
        let mut c = Checker::new(Settings::default(), None);
        let base = rec(0, "/spool/a.log", "0", b"alpha");
        c.observe(base);
        c.observe(Record {
            path: None,
            kafka_offset: 1,
            ..base
        });
        c.observe(Record {
            offset: None,
            kafka_offset: 2,
            ..base
        });
        c.observe(Record {
            offset: Some(b"+6"),
            kafka_offset: 3,
            ..base
        });
        c.observe(Record {
            offset: Some(b"99999999999999999999999"),
            kafka_offset: 4,
            ..base
        });
        let o = c.finish();
        assert!(!o.clean);
        assert_eq!(o.summary.unattributable, 4);
        assert_eq!(o.summary.problems, 4);
        let reasons: Vec<_> = o.unattributable.shown.iter().map(|f| f.reason).collect();
        use ForeignReason::*;
        assert_eq!(reasons, [NoPath, NoOffset, BadOffset, BadOffset]);
        assert!(only(&o).problems == 0);

        let allow = Settings {
            allow_foreign: true,
            ..Settings::default()
        };
        let mut c = Checker::new(allow, None);
        c.observe(Record { path: None, ..base });
        let o = c.finish();
        assert!(o.clean);
        assert_eq!(o.summary.unattributable, 1);
    }

    #[test]
    fn originals_that_never_appeared_are_missing_and_extra_streams_are_checked_alone() {
        let files = vec![
            ExpectedFile::from_bytes("/orig/a.log".into(), TEXT.to_vec()),
            ExpectedFile::from_bytes("/orig/b.log.COMPLETED".into(), b"x\ny\n".to_vec()),
            ExpectedFile::from_bytes("/orig/empty.log".into(), Vec::new()),
        ];
        let set = ExpectedSet::from_files(files).unwrap();
        let mut c = Checker::new(Settings::default(), Some(set));
        for (k, (offset, body)) in lines(TEXT, 100).iter().enumerate() {
            let offset = offset.to_string();
            c.observe(rec(k as i64, "/spool/a.log", &offset, body));
            c.observe(rec(k as i64, "/spool/other.log", &offset, body));
        }
        let o = c.finish();
        assert!(!o.clean);
        assert_eq!(o.summary.problems, 1);
        assert_eq!(o.missing_files.len(), 1);
        assert_eq!(o.missing_files[0].path, "/orig/b.log.COMPLETED");
        assert_eq!(o.missing_files[0].lines, 2);
        assert_eq!(o.streams[0].original.as_deref(), Some("/orig/a.log"));
        assert_eq!(o.streams[1].original, None);
    }

    #[test]
    fn lines_out_of_order_across_a_gap_are_reported_once_and_the_gap_closes() {
        // 0 2 4 6 8 arrive as 0 6 2 4 8: 2 and 4 are late, nothing is missing.
        let all = lines(b"a\nb\nc\nd\ne\n", 100);
        let l = [0, 3, 1, 2, 4].map(|i| all[i].clone());
        let s = only(&audit(&l)).clone();
        assert_eq!((s.out_of_order.count, s.gaps.count, s.lines), (2, 0, 5));
        // Swapped lines against the original, and a missing one beside them.
        let l = [0, 2, 1, 4].map(|i| all[i].clone());
        let o = audit_expect(b"a\nb\nc\nd\ne\n", &l);
        let s = only(&o);
        assert_eq!((s.out_of_order.count, s.gaps.count), (1, 1));
        assert_eq!(s.gaps.shown[0].first_line, Some(4));
    }

    #[test]
    fn contradictory_offsets_are_overlaps() {
        let l = vec![(0, b"abcdef".to_vec()), (3, b"xyz".to_vec())];
        // 3 lies inside the first body: a repeat of delivered bytes.
        assert_eq!(only(&audit(&l)).duplicates.count, 1);
        // Delivered in the other order, the first record reaches over the second.
        let l = vec![(3, b"xyz".to_vec()), (0, b"abcdef".to_vec())];
        let late = Settings {
            allow_late_start: true,
            ..Settings::default()
        };
        let o = audit_with(late, None, "/spool/a.log", &l);
        let s = only(&o);
        assert_eq!(
            s.overlaps.shown[0],
            Overlap {
                offset: 0,
                end: 6,
                next: 3
            }
        );
        assert!(!o.clean);
    }

    #[test]
    fn findings_are_listed_up_to_the_cap_and_counted_exactly() {
        let l: Vec<(u64, Vec<u8>)> = (0..300).map(|i| (i * 10, b"x".to_vec())).collect();
        let o = audit(&l);
        let s = only(&o);
        assert_eq!(s.gaps.count, 299);
        assert_eq!(s.gaps.shown.len(), MAX_SHOWN);
    }

    #[test]
    fn many_streams_interleaved_in_one_partition_are_kept_apart() {
        let l = lines(TEXT, 100);
        let names: Vec<String> = (0..50).map(|i| format!("/spool/f{i}.log")).collect();
        let mut c = Checker::new(Settings::default(), None);
        let mut k = 0;
        for (offset, body) in &l {
            for name in &names {
                let offset = offset.to_string();
                c.observe(rec(k, name, &offset, body));
                k += 1;
            }
        }
        let o = c.finish();
        assert!(o.clean);
        assert_eq!(o.summary.streams, 50);
        assert!(o.streams.iter().all(|s| s.lines == 5));
    }
}
