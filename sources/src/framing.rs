//! Zero-copy line framing: a growing read buffer cut into lines with `memchr`.
//!
//! Lines end at `\n` or `\r\n`; the terminator is not part of the line. A `\r` not followed
//! by `\n` is data, also at the very end of a stream (`abc\r` is the line `abc\r`). A line is
//! a slice of the read buffer ([`Bytes`]), so framing copies nothing but the unterminated tail
//! of a buffer, once, when the next read needs room. Bytes are passed through untouched:
//! invalid UTF-8 is not the framer's business.

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

/// How the line terminator is encoded in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Newline {
    /// `\n` is the byte 0x0A and `\r` the byte 0x0D: ASCII and every encoding that keeps ASCII
    /// bytes as they are (UTF-8, Latin-1, GBK, GB18030, Big5, Shift_JIS, EUC-*).
    #[default]
    Byte,
    /// UTF-16 little-endian: `\n` is the code unit `0A 00` at an even file offset.
    Utf16Le,
    /// UTF-16 big-endian: `\n` is the code unit `00 0A` at an even file offset.
    Utf16Be,
}

impl Newline {
    /// The size of one code unit in bytes.
    pub fn unit(self) -> usize {
        match self {
            Newline::Byte => 1,
            Newline::Utf16Le | Newline::Utf16Be => 2,
        }
    }

    /// The size of the pieces a line longer than `max_line` is cut into: `max_line` rounded
    /// down to whole code units (at least one), so that pieces of UTF-16 stay aligned.
    pub fn piece_size(self, max_line: usize) -> usize {
        let unit = self.unit();
        (max_line / unit * unit).max(unit)
    }

    /// The encoded `\r`.
    fn cr(self) -> &'static [u8] {
        match self {
            Newline::Byte => b"\r",
            Newline::Utf16Le => b"\r\0",
            Newline::Utf16Be => b"\0\r",
        }
    }

    /// Where the line after the last terminator in `data` starts, where `data[0]` sits at
    /// file offset `base`; `None` if `data` holds no terminator.
    pub fn after_last(self, data: &[u8], base: u64) -> Option<usize> {
        let mut end = data.len();
        loop {
            let at = memchr::memrchr(b'\n', &data[..end])?;
            let even = (base + at as u64).is_multiple_of(2);
            match self {
                Newline::Byte => return Some(at + 1),
                Newline::Utf16Le if even && data.get(at + 1) == Some(&0) => return Some(at + 2),
                Newline::Utf16Be if !even && at > 0 && data[at - 1] == 0 => return Some(at + 1),
                _ => {}
            }
            end = at;
        }
    }

    /// Finds the first terminator in `data[from..]`, where `data[0]` sits at file offset
    /// `base`; returns where it starts and where the next line starts.
    fn find(self, data: &[u8], from: usize, base: u64) -> Option<(usize, usize)> {
        let mut from = from;
        loop {
            let at = from + memchr::memchr(b'\n', data.get(from..)?)?;
            let even = (base + at as u64).is_multiple_of(2);
            match self {
                Newline::Byte => return Some((at, at + 1)),
                Newline::Utf16Le if even => match data.get(at + 1) {
                    Some(0) => return Some((at, at + 2)),
                    Some(_) => {}
                    None => return None,
                },
                Newline::Utf16Be if !even && at > 0 && data[at - 1] == 0 => {
                    return Some((at - 1, at + 1));
                }
                _ => {}
            }
            from = at + 1;
        }
    }
}

/// True if file offset `at` of `file` is inside a line: the code unit before it is not the
/// end of a terminator. Offset 0 is the start of a line.
pub fn inside_line(file: &std::fs::File, at: u64, newline: Newline) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let unit = newline.unit();
    let Some(from) = at.checked_sub(unit as u64) else {
        return Ok(false);
    };
    let mut last = [0u8; 2];
    let last = &mut last[..unit];
    file.read_exact_at(last, from)?;
    Ok(newline.after_last(last, from) != Some(unit))
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
    newline: Newline,
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
        Self::with_newline(start, max_line, policy, Newline::Byte)
    }

    /// A framer for a stream whose terminators are encoded as `newline`. For UTF-16 the
    /// maximum is rounded down to whole code units, so that pieces of long lines stay aligned.
    pub fn with_newline(
        start: u64,
        max_line: usize,
        policy: LongLinePolicy,
        newline: Newline,
    ) -> Self {
        LineFramer {
            buf: BytesMut::new(),
            base: start,
            scanned: 0,
            max_line: newline.piece_size(max_line),
            policy,
            newline,
            discarding: false,
            continuing: false,
            long: LongLines::default(),
            spans: Vec::new(),
        }
    }

    /// Says that the stream starts inside a line (a position recorded while the rest of a
    /// truncated line was being dropped): under [`LongLinePolicy::Truncate`] the bytes up to
    /// the line's terminator are dropped too, never handed out as a line of their own. Under
    /// `Split` they are the line's next pieces and are handed out.
    pub fn starts_inside_line(&mut self) {
        if self.policy == LongLinePolicy::Truncate {
            self.discarding = true;
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

    /// Lets go of the read buffer's memory when no byte is pending, so that a stream that is
    /// idle holds none (its lines may still share the old buffer until they are dropped).
    pub fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.scanned = 0;
        }
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
            let cr = self.newline.cr();
            while let Some((nl, next)) = self.newline.find(data, search_from, self.base) {
                let mut end = nl;
                if end >= line_start + cr.len() && &data[end - cr.len()..end] == cr {
                    end -= cr.len();
                }
                if self.discarding {
                    self.long.dropped_bytes += (end - line_start) as u64;
                    self.discarding = false;
                } else {
                    let max = self.max_line;
                    push_line(
                        max,
                        self.policy,
                        &mut self.long,
                        &mut self.continuing,
                        (line_start, end),
                        &mut lines,
                    );
                }
                line_start = next;
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
                            // Leave something unframed that is not a lone `\r` (which may be
                            // half a CRLF), so that the line's end never makes an empty extra
                            // piece; for bytes that keeps at most `max_line` pending. A UTF-16
                            // code unit may be incomplete: keep two whole units there.
                            let max = self.max_line;
                            let whole = if self.newline == Newline::Byte {
                                let w = (tail - 1) / max * max;
                                if tail - w == 1 && data[line_start + w] == b'\r' {
                                    w.saturating_sub(max)
                                } else {
                                    w
                                }
                            } else {
                                tail.saturating_sub(4) / max * max
                            };
                            let cut = line_start + whole;
                            // Counted once, when its first piece goes out (or, with no
                            // piece yet, by whatever ends the line).
                            if !self.continuing && whole > 0 {
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
        // A UTF-16 terminator may be cut after its first byte: search that byte again.
        let rescan = self.newline.unit() - 1;
        if consumed == 0 {
            self.scanned = self.buf.len().saturating_sub(rescan);
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
        self.scanned = self.buf.len().saturating_sub(rescan);
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
        // Only `\r\n` ends a line: a `\r` at the end of the stream is no terminator but data,
        // kept in the body (a `\r` held back by `frame` as a possible half CRLF included).
        let mut p = 0;
        while p < len {
            let q = match self.policy {
                LongLinePolicy::Split => (p + self.max_line).min(len),
                LongLinePolicy::Truncate => len.min(self.max_line),
            };
            emit(tail.slice(p..q), start + p as u64);
            if self.policy == LongLinePolicy::Truncate {
                break;
            }
            p = q;
        }
        if len > self.max_line && !std::mem::take(&mut self.continuing) {
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

    fn frame_all(
        input: &[u8],
        max: usize,
        policy: LongLinePolicy,
        chunks: &[usize],
    ) -> Vec<(Vec<u8>, u64)> {
        frame_with(LineFramer::new(0, max, policy), input, chunks)
    }

    /// Every line `f` frames of `input`, read in reads of the sizes `chunks`, then finished.
    fn frame_with(mut f: LineFramer, input: &[u8], chunks: &[usize]) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        feed(&mut f, input, chunks, |f| {
            f.frame(|b, o| out.push((b.to_vec(), o)))
        });
        f.finish(|b, o| out.push((b.to_vec(), o)));
        assert_eq!(f.offset(), input.len() as u64);
        out
    }

    /// Feeds `input` to `f` in reads of the sizes `chunks` (in turn; all at once if there are
    /// none), calling `after` after each read.
    fn feed(
        f: &mut LineFramer,
        input: &[u8],
        chunks: &[usize],
        mut after: impl FnMut(&mut LineFramer),
    ) {
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks
                .get(i % chunks.len().max(1))
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            i += 1;
            f.extend(&rest[..n]);
            rest = &rest[n..];
            after(f);
        }
    }

    fn bodies(v: &[(Vec<u8>, u64)]) -> Vec<&[u8]> {
        v.iter().map(|(b, _)| b.as_slice()).collect()
    }

    #[test]
    fn a_stream_starting_inside_a_truncated_line_drops_up_to_its_end_and_split_keeps_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"first\nAAAAAAAAAAtail\nnext\n").unwrap();
        let file = std::fs::File::open(&p).unwrap();
        assert!(!inside_line(&file, 0, Newline::Byte).unwrap());
        assert!(
            !inside_line(&file, 6, Newline::Byte).unwrap(),
            "after a terminator"
        );
        assert!(inside_line(&file, 12, Newline::Byte).unwrap());
        for (policy, want) in [
            (LongLinePolicy::Truncate, vec![&b"next"[..]]),
            (LongLinePolicy::Split, vec![&b"AAAA"[..], b"tail", b"next"]),
        ] {
            let mut f = LineFramer::new(12, 4, policy);
            f.starts_inside_line();
            f.extend(b"AAAAtail\nnext\n");
            let mut out = Vec::new();
            f.frame(|b, o| out.push((b.to_vec(), o)));
            assert_eq!(bodies(&out), want, "{policy:?}");
            assert_eq!(f.offset(), 26);
        }
        let utf16: Vec<u8> = "a\nbc".encode_utf16().flat_map(u16::to_le_bytes).collect();
        std::fs::write(&p, &utf16).unwrap();
        let file = std::fs::File::open(&p).unwrap();
        assert_eq!(
            [Newline::Byte.piece_size(5), Newline::Utf16Le.piece_size(5)],
            [5, 4],
            "a UTF-16 piece is whole code units, as the framer cuts it"
        );
        assert_eq!(Newline::Utf16Be.piece_size(1), 2);
        assert!(!inside_line(&file, 4, Newline::Utf16Le).unwrap());
        assert!(inside_line(&file, 6, Newline::Utf16Le).unwrap());
    }

    #[test]
    fn lf_crlf_empty_lines_and_a_final_unterminated_line() {
        let out = frame_all(b"a\r\nbb\n\n\r\nlast", 100, LongLinePolicy::Split, &[]);
        assert_eq!(bodies(&out), vec![&b"a"[..], b"bb", b"", b"", b"last"]);
        let offsets: Vec<u64> = out.iter().map(|(_, o)| *o).collect();
        assert_eq!(offsets, vec![0, 3, 6, 7, 9]);
    }

    #[test]
    fn a_lone_cr_is_data_even_at_the_end_of_the_stream() {
        // Only `\r\n` ends a line: a `\r` without its `\n` stays in the body, wherever it is.
        for chunks in [&[][..], &[1], &[3], &[4, 1]] {
            let out = frame_all(b"abc\r", 100, LongLinePolicy::Split, chunks);
            assert_eq!(bodies(&out), vec![&b"abc\r"[..]], "chunks {chunks:?}");
            let out = frame_all(b"x\r\n\r", 100, LongLinePolicy::Split, chunks);
            assert_eq!(bodies(&out), vec![&b"x"[..], b"\r"], "chunks {chunks:?}");
            let out = frame_all(b"a\rb\r\r", 100, LongLinePolicy::Split, chunks);
            assert_eq!(bodies(&out), vec![&b"a\rb\r\r"[..]], "chunks {chunks:?}");
        }
        // The end of a long line split into pieces: the `\r` held back as a possible half
        // CRLF is the last piece.
        let mut f = LineFramer::new(0, 4, LongLinePolicy::Split);
        let mut out = Vec::new();
        f.extend(b"0123\r");
        for _ in 0..3 {
            f.frame(|b, o| out.push((b.to_vec(), o)));
        }
        f.finish(|b, o| out.push((b.to_vec(), o)));
        assert_eq!(out, vec![(b"0123".to_vec(), 0), (b"\r".to_vec(), 4)]);
        assert_eq!(f.long_lines().lines, 1, "one long line, counted once");
        let out = frame_all(b"012\r", 2, LongLinePolicy::Truncate, &[]);
        assert_eq!(bodies(&out), vec![&b"01"[..]]);
        // UTF-16: a lone CR code unit at the end is data too.
        for big_endian in [false, true] {
            let newline = if big_endian {
                Newline::Utf16Be
            } else {
                Newline::Utf16Le
            };
            let input = utf16("a\r\nabc\r", big_endian);
            let out = frame_utf16(&input, newline, 100, &[3]);
            let want = [utf16("a", big_endian), utf16("abc\r", big_endian)];
            assert_eq!(
                bodies(&out),
                want.iter().map(Vec::as_slice).collect::<Vec<_>>()
            );
        }
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
        assert_eq!(
            out,
            vec![b"0123".to_vec(), b"cd".to_vec(), b"tool".to_vec()]
        );
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
        assert_eq!(
            out,
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
        );
    }

    /// The reference: split on `\n`, strip one `\r` before it, drop the empty remainder. A
    /// `\r` not followed by `\n` (the end of an unterminated last line included) is data.
    fn reference(input: &[u8]) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = input.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let n = lines.len();
        for (i, l) in lines.iter_mut().enumerate() {
            let terminated = i + 1 < n || input.ends_with(b"\n");
            if terminated && l.ends_with(b"\r") {
                l.pop();
            }
        }
        lines
    }

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        text.encode_utf16()
            .flat_map(|u| {
                if big_endian {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                }
            })
            .collect()
    }

    fn frame_utf16(
        input: &[u8],
        newline: Newline,
        max: usize,
        chunks: &[usize],
    ) -> Vec<(Vec<u8>, u64)> {
        let f = LineFramer::with_newline(0, max, LongLinePolicy::Split, newline);
        frame_with(f, input, chunks)
    }

    #[test]
    fn utf16_terminators_are_whole_aligned_code_units() {
        // U+0A0D and U+0D0A hold the bytes of `\n` and `\r` at the wrong alignment.
        for big_endian in [false, true] {
            let newline = if big_endian {
                Newline::Utf16Be
            } else {
                Newline::Utf16Le
            };
            let input = utf16("a\u{0A0D}b\r\n\u{0D0A}\nlast", big_endian);
            let out = frame_utf16(&input, newline, 100, &[1, 3, 2]);
            let want = [
                utf16("a\u{0A0D}b", big_endian),
                utf16("\u{0D0A}", big_endian),
                utf16("last", big_endian),
            ];
            assert_eq!(
                bodies(&out),
                want.iter().map(Vec::as_slice).collect::<Vec<_>>()
            );
            let offsets: Vec<u64> = out.iter().map(|(_, o)| *o).collect();
            assert_eq!(offsets, vec![0, 10, 14]);
        }
    }

    proptest! {
        #[test]
        fn utf16_framing_matches_splitting_the_text(
            text in proptest::collection::vec(prop_oneof![
                Just('\n'), Just('\r'), Just('x'), Just('\u{0A0D}'), Just('\u{0D0A}'), Just('\u{1F600}'),
            ], 0..120),
            chunks in proptest::collection::vec(1usize..9, 1..6),
            big_endian in any::<bool>(),
        ) {
            let text: String = text.into_iter().collect();
            let newline = if big_endian { Newline::Utf16Be } else { Newline::Utf16Le };
            let input = utf16(&text, big_endian);
            let out = frame_utf16(&input, newline, 1 << 20, &chunks);
            let want: Vec<Vec<u8>> = reference(text.as_bytes())
                .into_iter()
                .map(|l| utf16(std::str::from_utf8(&l).unwrap(), big_endian))
                .collect();
            let got: Vec<Vec<u8>> = out.iter().map(|(b, _)| b.clone()).collect();
            prop_assert_eq!(got, want);
            for (body, off) in &out {
                prop_assert_eq!(off % 2, 0);
                prop_assert_eq!(&input[*off as usize..*off as usize + body.len()], body.as_slice());
            }
        }

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
        fn nothing_but_terminators_lies_between_and_after_the_lines(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'x')], 0..300),
            max in prop_oneof![Just(1usize << 20), 1usize..20],
            chunks in proptest::collection::vec(1usize..40, 1..6),
        ) {
            // Lossless framing: every byte is in a body or in a `\n` or `\r\n` terminator,
            // so a lone `\r` (at the end of the stream too) must be in a body.
            let out = frame_all(&input, max, LongLinePolicy::Split, &chunks);
            let terminator = |b: &[u8]| matches!(b, b"" | b"\n" | b"\r\n");
            let mut end = 0usize;
            for (body, off) in &out {
                let off = *off as usize;
                prop_assert!(off >= end, "lines overlap at {}", off);
                prop_assert!(terminator(&input[end..off]), "{:?} dropped before {}", &input[end..off], off);
                end = off + body.len();
            }
            prop_assert!(terminator(&input[end..]), "{:?} dropped at the end", &input[end..]);
        }

        #[test]
        fn each_long_line_is_counted_once(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'x')], 0..300),
            max in 1usize..20,
            chunks in proptest::collection::vec(1usize..40, 1..6),
            reframes in 1usize..3,
        ) {
            let mut f = LineFramer::new(0, max, LongLinePolicy::Split);
            feed(&mut f, &input, &chunks, |f| {
                for _ in 0..reframes {
                    f.frame(|_, _| {});
                }
            });
            f.finish(|_, _| {});
            let want = reference(&input).iter().filter(|l| l.len() > max).count() as u64;
            prop_assert_eq!(f.long_lines().lines, want);
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

        /// Arbitrary bytes (terminators and NULs made frequent), in any encoding of the
        /// terminator, any chunking, from any start offset, under either policy: no panic,
        /// each line is the input's bytes at its offset and no longer than the maximum, lines
        /// come in order without overlap, at most a maximum and a code unit's worth of bytes
        /// stay pending, and the offset ends at the end. Under `Split` nothing but whole
        /// terminators lies between and after the lines; under `Truncate` (bytes) the lines
        /// are the reference's cut to the maximum.
        #[test]
        fn hostile_bytes_frame_within_bounds(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(0u8), any::<u8>()], 0..600),
            max in prop_oneof![1usize..24, Just(1usize << 20)],
            truncate in any::<bool>(),
            newline in prop_oneof![Just(Newline::Byte), Just(Newline::Utf16Le), Just(Newline::Utf16Be)],
            start in 0u64..4,
            inside in any::<bool>(),
            chunks in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let policy = if truncate { LongLinePolicy::Truncate } else { LongLinePolicy::Split };
            let piece = newline.piece_size(max);
            let mut f = LineFramer::with_newline(start, max, policy, newline);
            if inside {
                f.starts_inside_line();
            }
            let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
            let mut pending = 0;
            feed(&mut f, &input, &chunks, |f| {
                f.frame(|b, o| out.push((b.to_vec(), o)));
                pending = pending.max(f.pending());
            });
            prop_assert!(pending <= piece + 4, "{} bytes pending", pending);
            f.finish(|b, o| out.push((b.to_vec(), o)));
            prop_assert_eq!(f.offset(), start + input.len() as u64);
            let terminators: &[&[u8]] = match newline {
                Newline::Byte => &[b"", b"\n", b"\r\n"],
                Newline::Utf16Le => &[b"", b"\n\0", b"\r\0\n\0"],
                Newline::Utf16Be => &[b"", b"\0\n", b"\0\r\0\n"],
            };
            let whole = |from: usize, gap: &[u8]| {
                terminators.contains(&gap) && (gap.is_empty() || newline.unit() == 1 || (start + from as u64).is_multiple_of(2))
            };
            let mut end = 0usize;
            for (body, off) in &out {
                prop_assert!(*off >= start + end as u64, "lines overlap at {}", off);
                let at = (off - start) as usize;
                prop_assert!(body.len() <= piece);
                prop_assert_eq!(&input[at..at + body.len()], body.as_slice());
                if policy == LongLinePolicy::Split {
                    prop_assert!(whole(end, &input[end..at]), "{:?} dropped before {}", &input[end..at], off);
                }
                end = at + body.len();
            }
            if policy == LongLinePolicy::Split {
                prop_assert!(whole(end, &input[end..]), "{:?} dropped at the end", &input[end..]);
            } else if newline == Newline::Byte && !inside {
                let want: Vec<Vec<u8>> = reference(&input).into_iter().map(|mut l| { l.truncate(max); l }).collect();
                let got: Vec<Vec<u8>> = out.into_iter().map(|(b, _)| b).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
