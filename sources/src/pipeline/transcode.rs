//! The transcoding stage: lines of a file in another encoding become UTF-8.

use bytes::Bytes;
use std::sync::Arc;

use encoding_rs::{Decoder, Encoding};
use sluice_channels::END_HEADER;

use super::lines::{Line, Stage};

/// Replaces each line's body by its UTF-8 transcoding, all the lines of one read in one new
/// buffer; offsets stay those of the original bytes. A byte-order mark at the start of the
/// file is removed.
///
/// A long line split into pieces of `max_line_bytes` is cut on bytes, maybe inside a
/// character: its pieces are decoded as one stream (a piece is followed by the next when the
/// next starts where it ends), so that a character cut in two comes out whole, at the start of
/// the next piece, and the pieces put together are the line.
pub(crate) struct Transcode {
    encoding: &'static Encoding,
    /// The longest piece the framer cuts: a line of exactly this length may go on.
    max_line: usize,
    /// The decoder of a line that may go on in the next read, and where it would go on.
    carry: Option<(Decoder, u64)>,
    /// The name of [`END_HEADER`], interned.
    end_header: Arc<str>,
}

impl Transcode {
    /// A stage decoding `encoding`, for a framer that cuts long lines into pieces of
    /// `max_line` bytes (see [`Newline::piece_size`](crate::framing::Newline::piece_size)).
    pub fn new(encoding: &'static Encoding, max_line: usize) -> Self {
        Transcode {
            encoding,
            max_line,
            carry: None,
            end_header: Arc::from(END_HEADER),
        }
    }

    fn decoder(&self, offset: u64) -> Decoder {
        if offset == 0 {
            self.encoding.new_decoder_with_bom_removal()
        } else {
            self.encoding.new_decoder_without_bom_handling()
        }
    }
}

impl Stage for Transcode {
    fn apply(&mut self, lines: &mut Vec<Line>, last: bool) {
        if lines.is_empty() {
            return;
        }
        // Room for each line and the few bytes of a character carried into it.
        let bound = self.encoding.new_decoder_without_bom_handling();
        let cap: usize = lines
            .iter()
            .map(|l| {
                bound
                    .max_utf8_buffer_length(l.body.len() + 4)
                    .unwrap_or(l.body.len() * 3 + 16)
            })
            .sum();
        let mut out = vec![0u8; cap];
        let mut spans = Vec::with_capacity(lines.len());
        let mut w = 0;
        for i in 0..lines.len() {
            let (body, offset) = (&lines[i].body, lines[i].offset);
            let end = offset + body.len() as u64;
            let mut decoder = match self.carry.take() {
                Some((d, at)) if at == offset => d,
                _ => self.decoder(offset),
            };
            // Goes on in the next line of this read, or maybe in the next read.
            let goes_on = match lines.get(i + 1) {
                Some(next) => next.offset == end,
                None => !last && body.len() == self.max_line,
            };
            let (_, _, written, _) = decoder.decode_to_utf8(body, &mut out[w..], !goes_on);
            spans.push((w, w + written, end));
            w += written;
            if goes_on {
                self.carry = Some((decoder, end));
            }
        }
        out.truncate(w);
        let out = Bytes::from(out);
        for (line, (s, e, end)) in lines.iter_mut().zip(spans) {
            line.body = out.slice(s..e);
            // The body no longer tells where the line ends in the file (when its length
            // changed): exactly-once delivery and `sluice audit` read it here.
            line.set_end(&self.end_header, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(bytes: &[u8], size: usize, from: u64) -> Vec<Line> {
        bytes
            .chunks(size)
            .scan(from, |at, c| {
                let line = Line::new(Bytes::copy_from_slice(c), *at);
                *at += c.len() as u64;
                Some(line)
            })
            .collect()
    }

    #[test]
    fn the_pieces_of_a_split_line_are_decoded_as_one_stream_across_reads() {
        let (gbk, _, _) = encoding_rs::GBK.encode("中文中文中文");
        let mut stage = Transcode::new(encoding_rs::GBK, 5);
        let mut first = pieces(&gbk, 5, 0);
        let mut second = first.split_off(1);
        let mut third = second.split_off(1);
        stage.apply(&mut first, false);
        stage.apply(&mut second, false);
        stage.apply(&mut third, true);
        let text: String = first
            .iter()
            .chain(&second)
            .chain(&third)
            .map(|l| String::from_utf8(l.body.to_vec()).unwrap())
            .collect();
        assert_eq!(text, "中文中文中文");
    }

    #[test]
    fn a_line_that_does_not_go_on_ends_its_character_stream() {
        // A lone lead byte at the end of a whole line is a broken character: U+FFFD, and the
        // next line starts afresh.
        let mut stage = Transcode::new(encoding_rs::GBK, 100);
        let mut lines = vec![
            Line::new(Bytes::from_static(b"a\xd6"), 0),
            Line::new(Bytes::from_static(b"b"), 3),
        ];
        stage.apply(&mut lines, false);
        assert_eq!(lines[0].body, "a\u{FFFD}".as_bytes());
        assert_eq!(lines[1].body, &b"b"[..]);
    }

    #[test]
    fn a_line_whose_length_changed_says_where_it_ends_in_the_file() {
        let (gbk, _, _) = encoding_rs::GBK.encode("错误");
        let mut stage = Transcode::new(encoding_rs::GBK, 100);
        let mut lines = vec![
            Line::new(Bytes::copy_from_slice(&gbk), 0),
            Line::new(Bytes::from_static(b"ok"), 5),
        ];
        stage.apply(&mut lines, true);
        assert_eq!(lines[0].body, "错误".as_bytes());
        assert_eq!(lines[0].end(), 4, "4 GBK bytes, 6 UTF-8 bytes");
        assert_eq!(
            lines[0].headers.get(END_HEADER).flatten(),
            Some("4"),
            "read by the sink and the audit"
        );
        assert_eq!(lines[1].end(), 7);
        assert!(lines[1].headers.is_empty(), "same length: no header");
    }
}
