//! The audit's report: text for people, or JSON (`--json`) for scripts, on stdout.

use std::io::{self, Write};

use serde::Serialize;

use super::check::{Gap, Listed, Outcome, Position, StreamReport};
use super::consume::PartitionRange;

/// How many duplicates the text report lists per file (they are expected after a restart).
const TEXT_DUPLICATES: usize = 10;

/// Everything the audit prints.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// The topic read.
    pub topic: &'a str,
    /// The partitions and the offsets read from each.
    pub partitions: &'a [PartitionRange],
    /// What the checker found.
    #[serde(flatten)]
    pub outcome: &'a Outcome,
}

impl Report<'_> {
    /// Writes the report as one JSON document.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }

    /// Writes the report for people: one block per file, then a summary line.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        let read: i64 = self.partitions.iter().map(|p| p.high - p.low).sum();
        write!(
            out,
            "topic {}: {} partitions, {read} records (",
            self.topic,
            self.partitions.len()
        )?;
        for (i, p) in self.partitions.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            write!(out, "{sep}{}: {}..{}", p.partition, p.low, p.high)?;
        }
        writeln!(out, ")")?;
        for s in &self.outcome.streams {
            write_stream(out, s)?;
        }
        writeln!(out)?;
        for m in &self.outcome.missing_files {
            let lines = plural(m.lines, "line", "lines");
            writeln!(
                out,
                "{}  MISSING: none of its {lines} ({} bytes) arrived",
                m.path, m.bytes
            )?;
        }
        let foreign = &self.outcome.unattributable;
        if let Some(first) = foreign.shown.first() {
            let reason = match first.reason {
                super::check::ForeignReason::NoPath => "no path header",
                super::check::ForeignReason::NoOffset => "no offset header",
                super::check::ForeignReason::BadOffset => "offset header not a decimal number",
            };
            writeln!(
                out,
                "unattributable: {} without usable path/offset headers; the first at {} ({reason})",
                plural(foreign.count, "record", "records"),
                at(first.at),
            )?;
        }
        let s = &self.outcome.summary;
        write!(
            out,
            "summary: {}, {}, {}, {}, {} unattributable: ",
            plural(s.streams, "file", "files"),
            plural(s.lines, "line", "lines"),
            plural(s.records, "record", "records"),
            plural(s.duplicates, "duplicate", "duplicates"),
            s.unattributable,
        )?;
        if self.outcome.clean {
            writeln!(out, "clean")
        } else {
            writeln!(out, "{}", plural(s.problems, "problem", "problems"))
        }
    }
}

fn write_stream(out: &mut impl Write, s: &StreamReport) -> io::Result<()> {
    write!(out, "\n{}", s.path)?;
    if let Some(fid) = &s.fid {
        write!(out, " (fid {fid})")?;
    }
    let parts: Vec<String> = s.partitions.iter().map(i32::to_string).collect();
    let verdict = if s.problems == 0 {
        "OK".to_owned()
    } else {
        plural(s.problems, "PROBLEM", "PROBLEMS")
    };
    let label = if parts.len() == 1 {
        "partition"
    } else {
        "partitions"
    };
    writeln!(out, "  [{label} {}]  {verdict}", parts.join(", "))?;
    writeln!(
        out,
        "  {} arrived, {}, {}",
        plural(s.lines, "line", "lines"),
        plural(s.records, "record", "records"),
        plural(s.duplicates.count, "duplicate", "duplicates"),
    )?;
    if let Some(original) = &s.original {
        writeln!(out, "  compared with {original}")?;
    }
    if parts.len() > 1 {
        writeln!(
            out,
            "  split across partitions {}: its order cannot hold",
            parts.join(", ")
        )?;
    }
    list(out, &s.gaps, usize::MAX, "gaps", gap)?;
    list(
        out,
        &s.out_of_order,
        usize::MAX,
        "out-of-order lines",
        |o| {
            format!(
                "out of order: offset {} at {} arrived after offset {}",
                o.offset,
                at(o.at),
                o.after
            )
        },
    )?;
    list(out, &s.overlaps, usize::MAX, "overlaps", |o| {
        format!(
            "overlap: the record at offset {} ends at {}, past the record at {}",
            o.offset, o.end, o.next
        )
    })?;
    list(out, &s.mismatches, usize::MAX, "mismatches", |m| {
        let line = m.line.map(|l| format!(" (line {l})")).unwrap_or_default();
        format!(
            "mismatch: offset {} at {}{line}: expected \"{}\", got \"{}\"",
            m.offset,
            at(m.at),
            m.expected,
            m.got
        )
    })?;
    list(out, &s.duplicates, TEXT_DUPLICATES, "duplicates", |d| {
        format!("duplicate: offset {} at {}", d.offset, at(d.at))
    })
}

/// Writes up to `max` of `items`, then how many more there are.
fn list<T>(
    out: &mut impl Write,
    items: &Listed<T>,
    max: usize,
    what: &str,
    line: impl Fn(&T) -> String,
) -> io::Result<()> {
    for item in items.shown.iter().take(max) {
        writeln!(out, "  {}", line(item))?;
    }
    let shown = items.shown.len().min(max) as u64;
    if items.count > shown {
        writeln!(out, "  ... and {} more {what}", items.count - shown)?;
    }
    Ok(())
}

fn gap(g: &Gap) -> String {
    match (g.first_line, g.lines) {
        (Some(first), Some(1)) => format!("gap: line {first} missing (bytes {}..{})", g.from, g.to),
        (Some(first), Some(n)) => {
            format!(
                "gap: lines {first}-{} missing (bytes {}..{})",
                first + n - 1,
                g.from,
                g.to
            )
        }
        _ => format!("gap: bytes {}..{} missing", g.from, g.to),
    }
}

/// `partition@offset`, as kcat prints positions.
fn at(p: Position) -> String {
    format!("{}@{}", p.partition, p.kafka_offset)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::check::{Checker, Record, Settings};
    use super::super::expect::{ExpectedFile, ExpectedSet};
    use super::*;

    fn text(outcome: &Outcome) -> String {
        let partitions = [
            PartitionRange {
                partition: 0,
                low: 0,
                high: 4,
            },
            PartitionRange {
                partition: 1,
                low: 2,
                high: 2,
            },
        ];
        let r = Report {
            topic: "logs",
            partitions: &partitions,
            outcome,
        };
        let mut out = Vec::new();
        r.write_text(&mut out).unwrap();
        let mut json = Vec::new();
        r.write_json(&mut json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["clean"], outcome.clean);
        assert_eq!(v["topic"], "logs");
        assert_eq!(
            v["streams"].as_array().unwrap().len(),
            outcome.streams.len()
        );
        String::from_utf8(out).unwrap()
    }

    fn record<'a>(k: i64, offset: &'a str, body: &'a [u8]) -> Record<'a> {
        Record {
            partition: 0,
            kafka_offset: k,
            path: Some(b"/spool/a.log"),
            offset: Some(offset.as_bytes()),
            fid: None,
            end: None,
            dropped_from: None,
            body,
        }
    }

    #[test]
    fn a_clean_topic_says_ok_and_clean() {
        let mut c = Checker::new(Settings::default(), None);
        c.observe(record(0, "0", b"one"));
        c.observe(record(1, "4", b"two"));
        c.observe(record(2, "4", b"two"));
        let t = text(&c.finish());
        assert!(
            t.starts_with("topic logs: 2 partitions, 4 records (0: 0..4, 1: 2..2)\n"),
            "{t}"
        );
        assert!(t.contains("/spool/a.log  [partition 0]  OK\n"), "{t}");
        assert!(
            t.contains("  2 lines arrived, 3 records, 1 duplicate\n"),
            "{t}"
        );
        assert!(t.contains("  duplicate: offset 4 at 0@2\n"), "{t}");
        assert!(t.ends_with("1 duplicate, 0 unattributable: clean\n"), "{t}");
    }

    #[test]
    fn names_that_are_not_utf8_or_hold_a_newline_are_matched_and_escaped_on_one_line() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let orig = |name: &[u8], content: &[u8]| {
            let path = PathBuf::from("/orig").join(OsStr::from_bytes(name));
            ExpectedFile::from_bytes(path, content.to_vec())
        };
        let expected = ExpectedSet::from_files(vec![
            orig(b"bad-\xff.log.COMPLETED", b"one\n"),
            orig(b"two\nlines.log", b"one\n"),
            orig(b"gone-\xfe\n.log", b"x\n"),
        ])
        .unwrap();
        let mut c = Checker::new(Settings::default(), Some(expected));
        let rec = |k, path: &'static [u8], body: &'static [u8]| Record {
            path: Some(path),
            ..record(k, "0", body)
        };
        // As the agent writes them: byte for byte, and a lossy UTF-8 copy.
        c.observe(rec(0, b"/spool/two\nlines.log", b"ONE"));
        c.observe(rec(1, "/spool/bad-\u{fffd}.log".as_bytes(), b"one"));
        c.observe(rec(2, b"/spool/bad-\xff.log", b"one"));
        let t = text(&c.finish());
        assert!(
            t.contains("\n/spool/two\\nlines.log  [partition 0]  1 PROBLEM\n"),
            "{t}"
        );
        assert!(t.contains("  compared with /orig/two\\nlines.log\n"), "{t}");
        assert!(
            t.contains("\n/spool/bad-\u{fffd}.log  [partition 0]  OK\n"),
            "{t}"
        );
        assert!(
            t.contains("\n/spool/bad-\\xff.log  [partition 0]  OK\n"),
            "{t}"
        );
        assert_eq!(
            t.matches("  compared with /orig/bad-\\xff.log.COMPLETED\n")
                .count(),
            2,
            "{t}"
        );
        assert!(
            t.contains(
                "\n/orig/gone-\\xfe\\n.log  MISSING: none of its 1 line (2 bytes) arrived\n"
            ),
            "{t}"
        );
        assert!(!t.contains("MISSING: none of its 1 line (4 bytes)"), "{t}");
        for line in t.lines() {
            assert!(
                line.is_empty()
                    || line.starts_with(['/', ' '])
                    || line.starts_with("topic ")
                    || line.starts_with("summary: "),
                "{line:?} in\n{t}"
            );
        }
    }

    #[test]
    fn problems_are_named_with_their_positions() {
        let f = ExpectedFile::from_bytes(PathBuf::from("/orig/a.log"), b"one\ntwo\nsix\n".to_vec());
        let gone = ExpectedFile::from_bytes(PathBuf::from("/orig/b.log"), b"x\n".to_vec());
        let mut c = Checker::new(
            Settings::default(),
            ExpectedSet::from_files(vec![f, gone]).ok(),
        );
        c.observe(record(0, "8", b"SIX"));
        c.observe(record(1, "0", b"one"));
        c.observe(Record {
            path: None,
            ..record(2, "0", b"?")
        });
        let t = text(&c.finish());
        assert!(t.contains("[partition 0]  3 PROBLEMS\n"), "{t}");
        assert!(t.contains("  compared with /orig/a.log\n"), "{t}");
        assert!(t.contains("  gap: line 2 missing (bytes 4..8)\n"), "{t}");
        assert!(
            t.contains("  out of order: offset 0 at 0@1 arrived after offset 8\n"),
            "{t}"
        );
        assert!(
            t.contains("  mismatch: offset 8 at 0@0 (line 3): expected \"six\", got \"SIX\"\n"),
            "{t}"
        );
        assert!(
            t.contains("/orig/b.log  MISSING: none of its 1 line (2 bytes) arrived\n"),
            "{t}"
        );
        assert!(t.contains("unattributable: 1 record without usable"), "{t}");
        assert!(t.contains("the first at 0@2 (no path header)"), "{t}");
        assert!(t.ends_with(": 5 problems\n"), "{t}");
    }
}
