//! The transcoding stage: lines of a file in another encoding become UTF-8.

use bytes::Bytes;
use encoding_rs::Encoding;

use super::lines::{Line, Stage};

/// Replaces each line's body by its UTF-8 transcoding, all the lines of one read in one new
/// buffer; offsets stay those of the original bytes. A byte-order mark at the start of the
/// file is removed.
pub(crate) struct Transcode(pub &'static Encoding);

impl Stage for Transcode {
    fn apply(&mut self, lines: &mut Vec<Line>, _last: bool) {
        if lines.is_empty() {
            return;
        }
        let enc = self.0;
        let decoder = |offset: u64| {
            if offset == 0 {
                enc.new_decoder_with_bom_removal()
            } else {
                enc.new_decoder_without_bom_handling()
            }
        };
        let cap: usize = lines
            .iter()
            .map(|(b, o)| {
                decoder(*o)
                    .max_utf8_buffer_length(b.len())
                    .unwrap_or(b.len() * 3 + 16)
            })
            .sum();
        let mut out = vec![0u8; cap];
        let mut spans = Vec::with_capacity(lines.len());
        let mut w = 0;
        for (b, o) in lines.iter() {
            let (_, _, written, _) = decoder(*o).decode_to_utf8(b, &mut out[w..], true);
            spans.push((w, w + written));
            w += written;
        }
        out.truncate(w);
        let out = Bytes::from(out);
        for ((body, _), (s, e)) in lines.iter_mut().zip(spans) {
            *body = out.slice(s..e);
        }
    }
}
