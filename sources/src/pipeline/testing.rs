//! Helpers the stages' unit tests share: a file's lines as the framer cuts them, and the
//! same lines split into reads.

use bytes::Bytes;

use super::lines::Line;

/// The lines of `text` (each ended by `\n`) as the framer cuts them: slices of one buffer.
pub fn framed(text: &str) -> Vec<Line> {
    framed_bytes(text.as_bytes())
}

/// [`framed`] for bytes that need not be text.
pub fn framed_bytes(data: &[u8]) -> Vec<Line> {
    let buf = Bytes::copy_from_slice(data);
    let mut out = Vec::new();
    let mut at = 0;
    for piece in data.split_inclusive(|&b| b == b'\n') {
        let len = piece.strip_suffix(b"\n").unwrap_or(piece).len();
        out.push(Line::new(buf.slice(at..at + len), at as u64));
        at += piece.len();
    }
    out
}

/// `lines` split into reads before the positions `cuts` (taken modulo the count).
pub fn chunked(lines: &[Line], cuts: &[usize]) -> Vec<Vec<Line>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (lines.len() + 1)).collect();
    cuts.sort_unstable();
    let mut reads = Vec::new();
    let mut from = 0;
    for c in cuts.into_iter().chain([lines.len()]) {
        reads.push(lines[from..c.max(from)].to_vec());
        from = c.max(from);
    }
    reads
}
