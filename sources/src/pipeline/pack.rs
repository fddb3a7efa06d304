//! Packing lines into channel batches, marking where each file's lines end.

use std::sync::Arc;

use bytes::Bytes;
use sluice_channels::{DROPPED_FROM_HEADER, Event, Origin};

use super::lines::Line;

/// A file's handle in its source.
pub(crate) type Key = u64;

/// Where one file's lines in a batch end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    /// The file.
    pub key: Key,
    /// Its generation when the lines were read (bumped when it is truncated or replaced).
    pub generation: u32,
    /// The offset just past its last line in the batch.
    pub offset: u64,
}

/// Events to put into the channel at once, and where each file's lines in it end.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The events.
    pub events: Vec<Event>,
    /// One mark per file with lines in the batch, in the order their lines come.
    pub marks: Vec<Mark>,
}

/// Packs lines into batches of at most `size` events; one packer serves one round of reads.
pub(crate) struct Packer {
    batches: Vec<Batch>,
    size: usize,
    read_at_ms: u64,
    /// The file whose lines are being added, and whether any was.
    file: Option<(Key, u32, Arc<Origin>)>,
    in_file: bool,
}

impl Packer {
    /// A packer of batches of at most `size` (at least 1) events read at `read_at_ms`.
    pub fn new(size: usize, read_at_ms: u64) -> Self {
        Packer {
            batches: Vec::new(),
            size: size.max(1),
            read_at_ms,
            file: None,
            in_file: false,
        }
    }

    /// Adds one file's lines (drained from `lines`); `end` is the offset past the last one.
    /// Returns true if any line was added (and the file marked).
    pub fn add(
        &mut self,
        (key, generation): (Key, u32),
        origin: &Arc<Origin>,
        lines: &mut Vec<Line>,
        end: u64,
    ) -> bool {
        self.begin((key, generation), origin);
        for line in lines.drain(..) {
            self.push_line(line);
        }
        self.end(end)
    }

    /// Starts adding the lines of file `key` (of `generation`), whose events carry `origin`.
    pub fn begin(&mut self, (key, generation): (Key, u32), origin: &Arc<Origin>) {
        self.file = Some((key, generation, origin.clone()));
        self.in_file = false;
    }

    /// Adds the next line of the file begun, with no header of its own.
    pub fn push(&mut self, body: Bytes, offset: u64) {
        self.push_line(Line::new(body, offset));
    }

    /// Adds the next line of the file begun. A batch that fills up in the middle of the
    /// file's lines is marked up to where this line starts: before the lines an interceptor
    /// dropped right before it ([`DROPPED_FROM_HEADER`]), so that a restart there reads them
    /// again and this line still says where they began.
    pub fn push_line(
        &mut self,
        Line {
            body,
            offset,
            headers,
        }: Line,
    ) {
        let Some((key, generation, origin)) = self.file.as_ref() else {
            return;
        };
        if self
            .batches
            .last()
            .is_none_or(|b| b.events.len() >= self.size)
        {
            if self.in_file
                && let Some(b) = self.batches.last_mut()
            {
                let from = headers
                    .get(DROPPED_FROM_HEADER)
                    .flatten()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&f| f <= offset);
                b.marks.push(Mark {
                    key: *key,
                    generation: *generation,
                    offset: from.unwrap_or(offset),
                });
            }
            self.batches.push(Batch {
                events: Vec::with_capacity(self.size),
                marks: Vec::new(),
            });
        }
        self.in_file = true;
        if let Some(b) = self.batches.last_mut() {
            b.events.push(Event {
                body,
                origin: origin.clone(),
                offset,
                read_at_ms: self.read_at_ms,
                headers,
            });
        }
    }

    /// Ends the file begun: its last batch is marked up to `end`, the offset past its last
    /// line. Returns true if any line was added.
    pub fn end(&mut self, end: u64) -> bool {
        let Some((key, generation, _)) = self.file.take() else {
            return false;
        };
        if !self.in_file {
            return false;
        }
        if let Some(b) = self.batches.last_mut() {
            b.marks.push(Mark {
                key,
                generation,
                offset: end,
            });
        }
        true
    }

    /// The batches packed, in order.
    pub fn into_batches(self) -> Vec<Batch> {
        self.batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(items: &[(&'static str, u64)]) -> Vec<Line> {
        items
            .iter()
            .map(|(b, o)| Line::new(Bytes::from_static(b.as_bytes()), *o))
            .collect()
    }

    #[test]
    fn a_batch_full_in_the_middle_of_a_file_is_marked_where_the_next_line_starts() {
        let origin = Arc::new(Origin::default());
        let mut p = Packer::new(2, 7);
        let abc = &mut lines(&[("a", 0), ("b", 2), ("c", 4)]);
        assert!(p.add((1, 0), &origin, abc, 6));
        assert!(p.add((2, 3), &origin, &mut lines(&[("x", 10)]), 12));
        assert!(
            !p.add((3, 0), &origin, &mut Vec::new(), 99),
            "no line: no mark"
        );
        let batches = p.into_batches();
        let marks: Vec<Vec<(Key, u32, u64)>> = batches
            .iter()
            .map(|b| {
                b.marks
                    .iter()
                    .map(|m| (m.key, m.generation, m.offset))
                    .collect()
            })
            .collect();
        assert_eq!(marks, vec![vec![(1, 0, 4)], vec![(1, 0, 6), (2, 3, 12)]]);
        assert!(
            batches
                .iter()
                .flat_map(|b| &b.events)
                .all(|e| e.read_at_ms == 7)
        );
    }

    #[test]
    fn a_batch_full_before_a_line_after_dropped_lines_is_marked_before_them() {
        let origin = Arc::new(Origin::default());
        let mut p = Packer::new(2, 7);
        let mut l = lines(&[("a", 0), ("b", 2), ("d", 8)]);
        l[2].headers.set(Arc::from(DROPPED_FROM_HEADER), "4");
        assert!(p.add((1, 0), &origin, &mut l, 10));
        let marks: Vec<u64> = p
            .into_batches()
            .iter()
            .flat_map(|b| b.marks.iter().map(|m| m.offset))
            .collect();
        assert_eq!(
            marks,
            vec![4, 10],
            "the dropped lines at 4.. are read again"
        );
    }
}
