//! Zero-copy line framing: a growing read buffer cut into lines with `memchr`.
//!
//! Lines end at `\n` or `\r\n`; the terminator is not part of the line. A line is a slice of
//! the read buffer ([`Bytes`]), so framing copies nothing but the unterminated tail of a
//! buffer, once, when the next read needs room. Bytes are passed through untouched: invalid
//! UTF-8 is not the framer's business.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};

/// What to do with a line longer than the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongLinePolicy {
    /// Emit the line in pieces of at most the maximum, each its own event (nothing is lost).
    #[default]
    Split,
    /// Emit the first `max_line_bytes` of the line and drop the rest.
    Truncate,
}

/// Counts of what the framer did to lines over the maximum, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LongLines {
    /// Lines that were longer than the maximum.
    pub lines: u64,
    /// Bytes dropped by [`LongLinePolicy::Truncate`].
    pub dropped_bytes: u64,
}

/// Reads a byte stream and cuts it into lines.
///
/// The framer tracks file offsets: [`LineFramer::offset`] is where the next unframed byte
/// sits in the file, i.e. the start of the first line not yet handed out. That is the position
/// a checkpoint may record once every handed-out line is safe.
#[derive(Debug)]
pub struct LineFramer {
    buf: BytesMut,
    /// The file offset of `buf[0]`.
    base: u64,
    /// How far `buf` has been searched for a terminator without finding one.
    scanned: usize,
    max_line: usize,
    policy: LongLinePolicy,
    /// In a long line under `Truncate`: the rest of the line up to its terminator is dropped.
    discarding: bool,
    /// In a long line under `Split` whose first pieces were already emitted.
    continuing: bool,
    long: LongLines,
    /// Line spans found by the last `frame`, kept to reuse the allocation.
    spans: Vec<(usize, usize)>,
}

impl LineFramer {
    /// A framer for a stream whose next byte sits at file offset `start`.
    pub fn new(start: u64, max_line: usize, policy: LongLinePolicy) -> Self {
        LineFramer {
            buf: BytesMut::new(),
            base: start,
            scanned: 0,
            max_line: max_line.max(1),
            policy,
            discarding: false,
            continuing: false,
            long: LongLines::default(),
            spans: Vec::new(),
        }
    }

    /// The file offset just past the last line handed out.
    pub fn offset(&self) -> u64 {
        self.base
    }

    /// The number of bytes read but not yet framed (the unterminated tail).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// What the framer did to long lines so far.
    pub fn long_lines(&self) -> LongLines {
        self.long
    }

    /// Reads up to `chunk` more bytes from `r` into the buffer; returns how many (0 at end).
    pub fn fill(&mut self, r: &mut impl Read, chunk: usize) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + chunk, 0);
        let result = loop {
            match r.read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        result
    }

    /// Appends bytes to the buffer (for callers that read by other means, and for tests).
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Hands every complete line in the buffer to `emit(body, offset)`, in order.
    ///
    /// A line longer than the maximum is handled by the policy; under `Split` a piece of the
    /// maximum size is emitted as soon as it is buffered, so memory stays bounded even for a
    /// file with no terminator at all.
    pub fn frame(&mut self, mut emit: impl FnMut(Bytes, u64)) {
        let mut consumed = 0usize;
        let mut line_start = 0usize;
        let mut lines = std::mem::take(&mut self.spans);
        lines.clear();
        {
            let data = &self.buf[..];
            let mut search_from = self.scanned;
            loop {
                let Some(pos) = memchr::memchr(b'\n', &data[search_from..]) else {
                    break;
                };
                let nl = search_from + pos;
                let mut end = nl;
                if end > line_start && data[end - 1] == b'\r' {
                    end -= 1;
                }
                if self.discarding {
                    self.long.dropped_bytes += (end - line_start) as u64;
                    self.discarding = false;
                } else {
                    let max = self.max_line;
                    push_line(max, self.policy, &mut self.long, &mut self.continuing, (line_start, end), &mut lines);
                }
                line_start = nl + 1;
                consumed = line_start;
                search_from = line_start;
            }
            // The unterminated tail: bound it.
            let tail = data.len() - line_start;
            if tail > self.max_line {
                if self.discarding {
                    self.long.dropped_bytes += tail as u64;
                    consumed = data.len();
                } else {
                    match self.policy {
                        LongLinePolicy::Split => {
                            // Leave at least two bytes unframed, so that the line's end (and a
                            // `\r` that may be half a CRLF) never makes an empty extra piece.
                            let whole = (tail - 2) / self.max_line * self.max_line;
                            let cut = line_start + whole;
                            if !self.continuing {
                                self.long.lines += 1;
                            }
                            self.continuing = whole > 0 || self.continuing;
                            let mut s = line_start;
                            while s < cut {
                                lines.push((s, s + self.max_line));
                                s += self.max_line;
                            }
                            consumed = cut;
                        }
                        LongLinePolicy::Truncate => {
                            self.long.lines += 1;
                            lines.push((line_start, line_start + self.max_line));
                            self.long.dropped_bytes += (tail - self.max_line) as u64;
                            self.discarding = true;
                            consumed = data.len();
                        }
                    }
                }
            } else if self.discarding {
                self.long.dropped_bytes += tail as u64;
                consumed = data.len();
            }
        }
        if consumed == 0 {
            self.scanned = self.buf.len();
            self.spans = lines;
            return;
        }
        let base = self.base;
        let frozen = self.buf.split_to(consumed).freeze();
        for &(s, e) in &lines {
            emit(frozen.slice(s..e), base + s as u64);
        }
        self.spans = lines;
        self.base += consumed as u64;
        self.scanned = self.buf.len();
    }

    /// Hands out the unterminated tail as a last line, for the end of a file that will not
    /// grow any more. Emits nothing if the tail is empty.
    pub fn finish(&mut self, mut emit: impl FnMut(Bytes, u64)) {
        if self.buf.is_empty() {
            return;
        }
        let len = self.buf.len();
        let tail = self.buf.split_to(len).freeze();
        let start = self.base;
        self.base += len as u64;
        self.scanned = 0;
        if std::mem::take(&mut self.discarding) {
            self.long.dropped_bytes += len as u64;
            return;
        }
        let end = if tail.ends_with(b"\r") { len - 1 } else { len };
        let mut p = 0;
        while p < end {
            let q = match self.policy {
                LongLinePolicy::Split => (p + self.max_line).min(end),
                LongLinePolicy::Truncate => end.min(self.max_line),
            };
            emit(tail.slice(p..q), start + p as u64);
            if self.policy == LongLinePolicy::Truncate {
                break;
            }
            p = q;
        }
        if end > self.max_line && !std::mem::take(&mut self.continuing) {
            self.long.lines += 1;
        }
        self.continuing = false;
    }
}

/// Records one terminated line `[s, e)`, applying the long-line policy.
fn push_line(
    max_line: usize,
    policy: LongLinePolicy,
    long: &mut LongLines,
    continuing: &mut bool,
    (s, e): (usize, usize),
    lines: &mut Vec<(usize, usize)>,
) {
    let len = e - s;
    let was_continuing = std::mem::take(continuing);
    if len <= max_line {
        lines.push((s, e));
        return;
    }
    if !was_continuing {
        long.lines += 1;
    }
    match policy {
        LongLinePolicy::Split => {
            let mut p = s;
            while p < e {
                let q = (p + max_line).min(e);
                lines.push((p, q));
                p = q;
            }
        }
        LongLinePolicy::Truncate => {
            lines.push((s, s + max_line));
            long.dropped_bytes += (len - max_line) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frame_all(input: &[u8], max: usize, policy: LongLinePolicy, chunks: &[usize]) -> Vec<(Vec<u8>, u64)> {
        let mut f = LineFramer::new(0, max, policy);
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks.get(i % chunks.len().max(1)).copied().unwrap_or(rest.len()).clamp(1, rest.len());
            i += 1;
            f.extend(&rest[..n]);
            rest = &rest[n..];
            f.frame(|b, o| out.push((b.to_vec(), o)));
        }
        f.finish(|b, o| out.push((b.to_vec(), o)));
        assert_eq!(f.offset(), input.len() as u64);
        out
    }

    fn bodies(v: &[(Vec<u8>, u64)]) -> Vec<&[u8]> {
        v.iter().map(|(b, _)| b.as_slice()).collect()
    }

    #[test]
    fn lf_crlf_empty_lines_and_a_final_unterminated_line() {
        let out = frame_all(b"a\r\nbb\n\n\r\nlast", 100, LongLinePolicy::Split, &[]);
        assert_eq!(bodies(&out), vec![&b"a"[..], b"bb", b"", b"", b"last"]);
        let offsets: Vec<u64> = out.iter().map(|(_, o)| *o).collect();
        assert_eq!(offsets, vec![0, 3, 6, 7, 9]);
    }

    #[test]
    fn a_final_terminator_adds_no_empty_line() {
        let out = frame_all(b"x\ny\n", 100, LongLinePolicy::Split, &[]);
        assert_eq!(bodies(&out), vec![&b"x"[..], b"y"]);
    }

    #[test]
    fn crlf_split_across_reads_is_still_one_terminator() {
        let out = frame_all(b"abc\r\ndef\r\n", 100, LongLinePolicy::Split, &[4, 1, 5]);
        assert_eq!(bodies(&out), vec![&b"abc"[..], b"def"]);
    }

    #[test]
    fn invalid_utf8_passes_through_untouched() {
        let input = b"\xff\xfe ok \xc3\x28\n\x80\n";
        let out = frame_all(input, 100, LongLinePolicy::Split, &[]);
        assert_eq!(bodies(&out), vec![&b"\xff\xfe ok \xc3\x28"[..], b"\x80"]);
    }

    #[test]
    fn long_lines_are_split_into_pieces_of_the_maximum() {
        let out = frame_all(b"0123456789\nab\n", 4, LongLinePolicy::Split, &[3]);
        assert_eq!(bodies(&out), vec![&b"0123"[..], b"4567", b"89", b"ab"]);
        let offsets: Vec<u64> = out.iter().map(|(_, o)| *o).collect();
        assert_eq!(offsets, vec![0, 4, 8, 11]);
    }

    #[test]
    fn long_lines_are_truncated_and_counted_under_truncate() {
        let mut f = LineFramer::new(0, 4, LongLinePolicy::Truncate);
        let mut out = Vec::new();
        for part in [&b"0123"[..], b"456789", b"ab\ncd\n", b"toolongtail"] {
            f.extend(part);
            f.frame(|b, _| out.push(b.to_vec()));
        }
        f.finish(|b, _| out.push(b.to_vec()));
        assert_eq!(out, vec![b"0123".to_vec(), b"cd".to_vec(), b"tool".to_vec()]);
        assert_eq!(f.long_lines().lines, 2);
        assert_eq!(f.long_lines().dropped_bytes, 8 + 7);
    }

    #[test]
    fn an_unterminated_stream_keeps_memory_bounded_under_split() {
        let mut f = LineFramer::new(0, 8, LongLinePolicy::Split);
        let mut n = 0;
        for _ in 0..100 {
            f.extend(&[b'x'; 5]);
            f.frame(|b, _| {
                assert_eq!(b.len(), 8);
                n += 1;
            });
            assert!(f.pending() <= 8);
        }
        assert_eq!(n, 62);
    }

    #[test]
    fn offsets_start_at_the_given_position() {
        let mut f = LineFramer::new(1000, 100, LongLinePolicy::Split);
        f.extend(b"a\nb\n");
        let mut offs = Vec::new();
        f.frame(|_, o| offs.push(o));
        assert_eq!(offs, vec![1000, 1002]);
        assert_eq!(f.offset(), 1004);
    }

    #[test]
    fn fill_reads_from_a_reader() {
        let mut f = LineFramer::new(0, 100, LongLinePolicy::Split);
        let mut r = &b"one\ntwo"[..];
        assert_eq!(f.fill(&mut r, 3).unwrap(), 3);
        assert_eq!(f.fill(&mut r, 100).unwrap(), 4);
        assert_eq!(f.fill(&mut r, 100).unwrap(), 0);
        let mut out = Vec::new();
        f.frame(|b, _| out.push(b));
        f.finish(|b, _| out.push(b));
        assert_eq!(out, vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]);
    }

    /// The reference: split on `\n`, strip one `\r` before it, drop the empty remainder.
    fn reference(input: &[u8]) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = input.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let n = lines.len();
        for (i, l) in lines.iter_mut().enumerate() {
            let terminated = i + 1 < n || input.ends_with(b"\n");
            if (terminated || i + 1 == n) && l.ends_with(b"\r") {
                l.pop();
            }
        }
        lines
    }

    proptest! {
        #[test]
        fn framing_matches_the_reference_for_any_chunking(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..400),
            chunks in proptest::collection::vec(1usize..50, 1..10),
        ) {
            let out = frame_all(&input, 1 << 20, LongLinePolicy::Split, &chunks);
            let got: Vec<Vec<u8>> = out.iter().map(|(b, _)| b.clone()).collect();
            prop_assert_eq!(got, reference(&input));
            for (body, off) in &out {
                prop_assert_eq!(&input[*off as usize..*off as usize + body.len()], body.as_slice());
            }
        }

        #[test]
        fn split_pieces_rejoin_to_the_original_lines(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'x'), Just(b'y')], 0..300),
            max in 1usize..20,
            chunks in proptest::collection::vec(1usize..40, 1..6),
        ) {
            let out = frame_all(&input, max, LongLinePolicy::Split, &chunks);
            for (body, off) in &out {
                prop_assert!(body.len() <= max);
                prop_assert_eq!(&input[*off as usize..*off as usize + body.len()], body.as_slice());
            }
            let total: usize = out.iter().map(|(b, _)| b.len()).sum();
            let lines = reference(&input);
            let want: usize = lines.iter().map(|l| l.len()).sum();
            prop_assert_eq!(total, want);
            let empty_out = out.iter().filter(|(b, _)| b.is_empty()).count();
            let empty_want = lines.iter().filter(|l| l.is_empty()).count();
            prop_assert_eq!(empty_out, empty_want, "no empty pieces beyond empty lines");
        }
    }
}
