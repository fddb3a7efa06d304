//! Packing lines into channel batches, marking where each file's lines end.

use std::sync::Arc;

use bytes::Bytes;
use sluice_channels::{Event, Origin};

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
}

impl Packer {
    /// A packer of batches of at most `size` (at least 1) events read at `read_at_ms`.
    pub fn new(size: usize, read_at_ms: u64) -> Self {
        Packer {
            batches: Vec::new(),
            size: size.max(1),
            read_at_ms,
        }
    }

    /// Adds one file's lines (drained from `lines`); `end` is the offset past the last one.
    /// A batch that fills up in the middle of the file's lines is marked up to where the next
    /// batch's first line starts.
    pub fn add(
        &mut self,
        key: Key,
        generation: u32,
        origin: &Arc<Origin>,
        lines: &mut Vec<(Bytes, u64)>,
        end: u64,
    ) {
        let mut in_current = false;
        for (body, offset) in lines.drain(..) {
            if self
                .batches
                .last()
                .is_none_or(|b| b.events.len() >= self.size)
            {
                if in_current && let Some(b) = self.batches.last_mut() {
                    b.marks.push(Mark {
                        key,
                        generation,
                        offset,
                    });
                }
                self.batches.push(Batch {
                    events: Vec::with_capacity(self.size),
                    marks: Vec::new(),
                });
            }
            in_current = true;
            if let Some(b) = self.batches.last_mut() {
                b.events.push(Event {
                    body,
                    origin: origin.clone(),
                    offset,
                    read_at_ms: self.read_at_ms,
                });
            }
        }
        if in_current && let Some(b) = self.batches.last_mut() {
            b.marks.push(Mark {
                key,
                generation,
                offset: end,
            });
        }
    }

    /// The batches packed, in order.
    pub fn into_batches(self) -> Vec<Batch> {
        self.batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(items: &[(&'static str, u64)]) -> Vec<(Bytes, u64)> {
        items
            .iter()
            .map(|(b, o)| (Bytes::from_static(b.as_bytes()), *o))
            .collect()
    }

    #[test]
    fn a_batch_full_in_the_middle_of_a_file_is_marked_where_the_next_line_starts() {
        let origin = Arc::new(Origin::default());
        let mut p = Packer::new(2, 7);
        p.add(
            1,
            0,
            &origin,
            &mut lines(&[("a", 0), ("b", 2), ("c", 4)]),
            6,
        );
        p.add(2, 3, &origin, &mut lines(&[("x", 10)]), 12);
        p.add(3, 0, &origin, &mut Vec::new(), 99);
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
}
