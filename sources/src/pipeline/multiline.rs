//! The multiline stage: consecutive lines of a file joined into one event (a stack trace
//! under the line that announced it), and its options.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use regex::bytes::Regex;
use serde::Deserialize;
use sluice_channels::END_HEADER;
use sluice_channels::config::Problem;
use sluice_channels::units::{ByteSize, HumanDuration};

use super::lines::{Line, Stage};

/// The `multiline` options of a source: exactly one of `start` and `continue`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A line matching this pattern begins a new event; other lines join the current one.
    #[serde(default)]
    pub start: Option<String>,
    /// A line matching this pattern joins the previous one; other lines begin an event.
    #[serde(default, rename = "continue")]
    pub cont: Option<String>,
    /// The most lines in one event (default 500); more begin a new event.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// The most bytes in one event (default the source's `max_line_bytes`); a line that would
    /// pass it begins a new event.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// How long a pending event waits for its next line before it is emitted (default 1s).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_max_lines() -> usize {
    500
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// Which lines join the event before them.
#[derive(Debug, Clone)]
enum Rule {
    /// Lines not matching join.
    Start(Regex),
    /// Lines matching join.
    Continue(Regex),
}

impl MultilineConfig {
    /// Checks what serde cannot: exactly one pattern, a valid one, and limits above zero.
    /// Keys are relative to `multiline`.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let both = match (&self.start, &self.cont) {
            (Some(_), Some(_)) => Some("give one of `start` and `continue`, not both"),
            (None, None) => Some("give one of `start` and `continue`"),
            _ => None,
        };
        for (key, pattern) in [("start", &self.start), ("continue", &self.cont)] {
            if let Some(p) = pattern
                && let Err(e) = Regex::new(p)
            {
                problems.push(Problem::new(key, format!("invalid pattern: {e}")));
            }
        }
        if self.max_lines == 0 {
            problems.push(Problem::new("max_lines", "must be at least 1"));
        }
        if self.max_bytes.is_some_and(|b| b.0 == 0) {
            problems.push(Problem::new("max_bytes", "must be at least 1 byte"));
        }
        let mut problems: Vec<Problem> =
            problems.into_iter().map(|p| p.under("multiline")).collect();
        if let Some(message) = both {
            problems.insert(0, Problem::new("multiline", message));
        }
        problems
    }

    /// The stage these options describe, for a source whose `max_line_bytes` is
    /// `max_line_bytes`; `None` if they are not valid (see [`MultilineConfig::validate`]).
    pub(crate) fn stage(&self, max_line_bytes: u64) -> Option<Multiline> {
        let rule = match (&self.start, &self.cont) {
            (Some(p), None) => Rule::Start(Regex::new(p).ok()?),
            (None, Some(p)) => Rule::Continue(Regex::new(p).ok()?),
            _ => return None,
        };
        let max_bytes = self.max_bytes.map_or(max_line_bytes, |b| b.0);
        Some(Multiline {
            rule,
            max_lines: self.max_lines.max(1),
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            timeout: self.timeout.0,
            pending: Vec::new(),
            pending_bytes: 0,
            last_line_at: Instant::now(),
            end_header: Arc::from(END_HEADER),
        })
    }
}

/// Joins a file's consecutive lines into events by a [`Rule`]. The event still open is held
/// back across reads (its lines are slices of the read buffers, no copy) and comes out when a
/// line begins the next one, when it reaches `max_lines` or `max_bytes`, when the file ends,
/// or when no line came for `timeout`.
#[derive(Debug, Clone)]
pub(crate) struct Multiline {
    rule: Rule,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
    /// The lines of the event still open, in order.
    pending: Vec<Line>,
    /// The length of the open event's body: its lines and a `\n` between each two.
    pending_bytes: usize,
    /// When the last line arrived.
    last_line_at: Instant,
    /// The name of [`END_HEADER`], interned.
    end_header: Arc<str>,
}

impl Multiline {
    /// How long an open event waits for its next line.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether `line` joins the open event.
    fn joins(&self, line: &Line) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let by_rule = match &self.rule {
            Rule::Start(re) => !re.is_match(&line.body),
            Rule::Continue(re) => re.is_match(&line.body),
        };
        by_rule
            && self.pending.len() < self.max_lines
            && self.pending_bytes + 1 + line.body.len() <= self.max_bytes
    }

    /// Hands the open event out into `out`: a single line as it is, several joined by `\n`
    /// into one body, copied once. The event keeps its first line's offset and headers.
    fn emit(&mut self, out: &mut Vec<Line>) {
        let mut lines = self.pending.drain(..);
        let Some(mut first) = lines.next() else {
            return;
        };
        if lines.len() > 0 {
            let mut body = Vec::with_capacity(self.pending_bytes);
            body.extend_from_slice(&first.body);
            let mut end = 0;
            for line in lines {
                body.push(b'\n');
                body.extend_from_slice(&line.body);
                end = line.end();
            }
            first.body = Bytes::from(body);
            first.set_end(&self.end_header, end);
        }
        self.pending_bytes = 0;
        out.push(first);
    }
}

impl Stage for Multiline {
    fn apply(&mut self, lines: &mut Vec<Line>, last: bool) {
        let now = if lines.is_empty() && self.pending.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        let mut out = Vec::with_capacity(lines.len());
        if let Some(now) = now
            && now.duration_since(self.last_line_at) >= self.timeout
        {
            self.emit(&mut out);
        }
        for line in lines.drain(..) {
            if !self.joins(&line) {
                self.emit(&mut out);
                self.pending_bytes = line.body.len();
            } else {
                self.pending_bytes += 1 + line.body.len();
            }
            self.pending.push(line);
            if let Some(now) = now {
                self.last_line_at = now;
            }
        }
        if last {
            self.emit(&mut out);
        }
        *lines = out;
    }

    fn held_from(&self) -> Option<u64> {
        self.pending.first().map(|l| l.offset)
    }

    fn flush_due(&self, now: Instant) -> bool {
        !self.pending.is_empty() && now.duration_since(self.last_line_at) >= self.timeout
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::testing::{chunked, framed};

    const HOUR: &str = "1h";

    fn stage(json: &str) -> Multiline {
        let cfg: MultilineConfig = serde_json::from_str(json).unwrap();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        cfg.stage(1 << 20).unwrap()
    }

    fn run(m: &mut Multiline, reads: Vec<Vec<Line>>) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for mut lines in reads {
            m.apply(&mut lines, false);
            out.extend(lines);
        }
        let mut rest = Vec::new();
        m.apply(&mut rest, true);
        out.extend(rest);
        out.into_iter()
            .map(|l| (String::from_utf8(l.body.to_vec()).unwrap(), l.offset))
            .collect()
    }

    fn one_read(m: &mut Multiline, text: &str) -> Vec<(String, u64)> {
        run(m, vec![framed(text)])
    }

    fn ev(body: &str, offset: u64) -> (String, u64) {
        (body.to_owned(), offset)
    }

    #[test]
    fn start_pattern_joins_the_lines_that_do_not_match_under_the_one_that_does() {
        let mut m = stage(&format!(
            r#"{{"start": "^\\d{{4}}-", "timeout": "{HOUR}"}}"#
        ));
        let text = "\tat orphan\n2026-01-01 a\n\tat x\nCaused by: y\n2026-01-02 b\n";
        assert_eq!(
            one_read(&mut m, text),
            vec![
                ev("\tat orphan", 0),
                ev("2026-01-01 a\n\tat x\nCaused by: y", 11),
                ev("2026-01-02 b", 43),
            ]
        );
    }

    #[test]
    fn continue_pattern_joins_the_matching_lines_to_the_one_before() {
        let mut m = stage(&format!(r#"{{"continue": "^\\s", "timeout": "{HOUR}"}}"#));
        assert_eq!(
            one_read(&mut m, "a\n b\n c\nd\ne\n f\n"),
            vec![ev("a\n b\n c", 0), ev("d", 8), ev("e\n f", 10)]
        );
    }

    #[test]
    fn max_lines_and_max_bytes_begin_a_new_event_and_lose_nothing() {
        let mut m = stage(&format!(
            r#"{{"continue": "^ ", "max_lines": 2, "timeout": "{HOUR}"}}"#
        ));
        assert_eq!(
            one_read(&mut m, "a\n b\n c\n d\n e\n"),
            vec![ev("a\n b", 0), ev(" c\n d", 5), ev(" e", 11)]
        );
        let mut m = stage(&format!(
            r#"{{"continue": "^ ", "max_bytes": 6, "timeout": "{HOUR}"}}"#
        ));
        assert_eq!(
            one_read(&mut m, "aa\n b\n c\n dddddddd\n"),
            vec![ev("aa\n b", 0), ev(" c", 6), ev(" dddddddd", 9)]
        );
    }

    #[test]
    fn an_open_event_is_held_across_reads_and_its_first_offset_is_held() {
        let mut m = stage(&format!(r#"{{"start": "^S", "timeout": "{HOUR}"}}"#));
        let lines = framed("S1\n x\nS2\n y\n");
        let (a, b) = lines.split_at(3);
        let mut first = a.to_vec();
        m.apply(&mut first, false);
        assert_eq!(first.len(), 1);
        assert_eq!(m.held_from(), Some(6));
        let mut second = b.to_vec();
        m.apply(&mut second, false);
        assert!(second.is_empty());
        assert_eq!(m.held_from(), Some(6));
        let mut end = Vec::new();
        m.apply(&mut end, true);
        assert_eq!(&end[0].body[..], b"S2\n y");
        assert_eq!(m.held_from(), None);
    }

    #[test]
    fn an_event_that_waited_its_timeout_comes_out_with_no_new_line() {
        let mut m = stage(r#"{"start": "^S", "timeout": "50ms"}"#);
        let mut lines = framed("S1\n x\n");
        m.apply(&mut lines, false);
        assert!(lines.is_empty());
        let now = Instant::now();
        assert!(!m.flush_due(now));
        m.apply(&mut lines, false);
        assert!(lines.is_empty(), "not due yet");
        m.last_line_at = now - Duration::from_secs(1);
        assert!(m.flush_due(Instant::now()));
        m.apply(&mut lines, false);
        assert_eq!(&lines[0].body[..], b"S1\n x");
        assert_eq!(m.held_from(), None);
        assert!(!m.flush_due(Instant::now()));
    }

    #[test]
    fn a_joined_event_says_where_it_ends_only_when_its_body_does_not() {
        let mut m = stage(&format!(r#"{{"continue": "^ ", "timeout": "{HOUR}"}}"#));
        let mut lines = framed("a\n b\n");
        m.apply(&mut lines, true);
        assert!(lines[0].headers.is_empty(), "LF lines: the body says it");
        // CRLF lines: the framer cut `a` at 0 and ` b` at 3; joined by `\n` the body is one
        // byte short of the file's.
        let buf = Bytes::from_static(b"a\r\n b\r\n");
        let mut lines = vec![Line::new(buf.slice(0..1), 0), Line::new(buf.slice(3..5), 3)];
        m.apply(&mut lines, true);
        assert_eq!(&lines[0].body[..], b"a\n b");
        assert_eq!(lines[0].end(), 5);
        assert_eq!(lines[0].headers.get(END_HEADER).flatten(), Some("5"));
    }

    #[test]
    fn options_are_checked_and_named_by_key() {
        let problems = |json: &str| -> Vec<String> {
            let cfg: MultilineConfig = serde_json::from_str(json).unwrap();
            cfg.validate().into_iter().map(|p| p.to_string()).collect()
        };
        let bad = problems(r#"{"start": "(", "max_lines": 0, "max_bytes": 0}"#);
        assert!(
            bad[0].starts_with("multiline.start: invalid pattern"),
            "{bad:?}"
        );
        assert!(bad[1].starts_with("multiline.max_lines"), "{bad:?}");
        assert!(bad[2].starts_with("multiline.max_bytes"), "{bad:?}");
        assert!(problems(r#"{"start": "a", "continue": "b"}"#)[0].contains("not both"));
        assert!(problems(r#"{}"#)[0].starts_with("multiline: give one"));
        assert!(serde_json::from_str::<MultilineConfig>(r#"{"start": "a", "x": 1}"#).is_err());
    }

    /// The events `lines` make by the start rule `^S` with at most `max_lines` each.
    fn reference(text: &str, max_lines: usize) -> Vec<(String, u64)> {
        let mut out: Vec<(Vec<&str>, u64)> = Vec::new();
        let mut at = 0u64;
        for line in text.split_terminator('\n') {
            match out.last_mut() {
                Some((ls, _)) if !line.starts_with('S') && ls.len() < max_lines => ls.push(line),
                _ => out.push((vec![line], at)),
            }
            at += line.len() as u64 + 1;
        }
        out.into_iter().map(|(ls, o)| (ls.join("\n"), o)).collect()
    }

    proptest! {
        /// Any split of a file into reads makes the events of the reference grouping, and
        /// a kill between any two reads, followed by a restart from the held offset, loses
        /// and cuts no event.
        #[test]
        fn every_chunking_and_every_kill_make_the_reference_events(
            lines in prop::collection::vec("(S|x)[a-z]{0,6}", 1..40),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            kill in any::<usize>(),
            max_lines in 1usize..6,
        ) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let want = reference(&text, max_lines);
            let json = format!(r#"{{"start": "^S", "max_lines": {max_lines}, "timeout": "1h"}}"#);
            let framed = framed(&text);
            let reads = chunked(&framed, &cuts);
            prop_assert_eq!(run(&mut stage(&json), reads.clone()), want.clone());

            let kill = kill % (reads.len() + 1);
            let mut m = stage(&json);
            let mut got = Vec::new();
            let mut read_to = 0u64;
            for mut lines in reads.into_iter().take(kill) {
                if let Some(l) = lines.last() {
                    read_to = l.offset + l.body.len() as u64 + 1;
                }
                m.apply(&mut lines, false);
                got.extend(lines.into_iter().map(|l| {
                    (String::from_utf8(l.body.to_vec()).unwrap(), l.offset)
                }));
            }
            let restart = m.held_from().unwrap_or(read_to);
            prop_assert!(want.iter().any(|(_, o)| *o == restart) || restart == text.len() as u64);
            let rest: Vec<Line> = framed.into_iter().filter(|l| l.offset >= restart).collect();
            got.extend(run(&mut stage(&json), chunked(&rest, &cuts)));
            prop_assert_eq!(got, want);
        }
    }
}
