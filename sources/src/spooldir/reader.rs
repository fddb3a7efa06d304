//! Reading one spool file: chunks read and framed into batches on a blocking thread, and the
//! file's shape whenever the reader is at the end of what it holds.
//!
//! Reaching the end of the bytes is not reaching the end of the file: the reader hands out
//! the last, unterminated line only when the source decides the file is finished
//! ([`FileReader::finish`]), after it stayed unchanged long enough.

use std::fs::File;
use std::io;
use std::sync::Arc;

use sluice_channels::Origin;
use tokio::runtime::Handle;

use super::scan::Shape;
use crate::blocking;
use crate::framing::{LineFramer, LongLinePolicy, LongLines};
use crate::now_ms;
use crate::pipeline::{Batch, FileLines, Packer};

/// How much is read from a file at a time, at most.
const READ_CHUNK: usize = 1 << 20;
/// The least read at a time: a read buffer is zeroed before it is filled, so a small file
/// gets a small one.
const MIN_READ: usize = 16 << 10;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadFailure {
    /// The file could not be read: a fault of the file or of its disk.
    #[error("{0}")]
    File(#[from] io::Error),
    /// The read never ran: the runtime is shutting down. Not the file's fault.
    #[error("the read was cancelled")]
    Interrupted,
}

/// What one read brought.
pub(super) struct Chunk {
    /// The complete lines read, in batches.
    pub batches: Vec<Batch>,
    /// Set when the read found no more bytes: the file's shape at that moment.
    pub end: Option<Shape>,
}

/// The file, its framer and its lines, moved together to a blocking thread for each read.
struct Open {
    file: File,
    framer: LineFramer,
    lines: FileLines,
}

/// A file and its framer, moved to a blocking thread for each read.
pub(super) struct FileReader {
    /// `None` while lent to a read, and after a read that never came back.
    open: Option<Open>,
    /// The file offset just past the last byte read.
    read_to: u64,
    /// The file's size when last seen.
    size: u64,
    origin: Arc<Origin>,
    batch_size: usize,
}

impl FileReader {
    /// A reader of `file` of `size` bytes, whose position is `offset`.
    pub fn new(
        file: File,
        size: u64,
        offset: u64,
        max_line: usize,
        policy: LongLinePolicy,
        origin: Arc<Origin>,
        batch_size: usize,
    ) -> Self {
        FileReader {
            open: Some(Open {
                file,
                framer: LineFramer::new(offset, max_line, policy),
                lines: FileLines::new(Vec::new()),
            }),
            read_to: offset,
            size,
            origin,
            batch_size,
        }
    }

    /// The file offset just past the last line handed out.
    pub fn offset(&self) -> u64 {
        self.open.as_ref().map_or(0, |o| o.framer.offset())
    }

    /// The file offset just past the last byte read.
    pub fn read_to(&self) -> u64 {
        self.read_to
    }

    /// What the framer did to long lines so far.
    pub fn long_lines(&self) -> LongLines {
        self.open
            .as_ref()
            .map(|o| o.framer.long_lines())
            .unwrap_or_default()
    }

    /// Reads one chunk on a blocking thread of `on` and frames its complete lines into
    /// batches. When there is nothing more to read, says so with the file's shape.
    pub async fn next(&mut self, on: &Handle) -> Result<Chunk, ReadFailure> {
        let Some(mut open) = self.open.take() else {
            return Err(io::Error::other("reader used after a failure").into());
        };
        let origin = self.origin.clone();
        let batch_size = self.batch_size;
        let first = usize::try_from(self.size.saturating_sub(self.read_to))
            .unwrap_or(READ_CHUNK)
            .saturating_add(1)
            .clamp(MIN_READ, READ_CHUNK);
        let joined = blocking::run(on, move || {
            let result =
                fill_chunk(&mut open.framer, &mut open.file, first).and_then(|(n, at_end)| {
                    open.framer.frame(open.lines.collect());
                    let batches = pack(&mut open, &origin, batch_size, false);
                    let end = if at_end {
                        Some(Shape::of(&open.file.metadata()?))
                    } else {
                        None
                    };
                    Ok((Chunk { batches, end }, n))
                });
            (open, result)
        })
        .await;
        let (open, result) = joined.map_err(|_| ReadFailure::Interrupted)?;
        self.open = Some(open);
        let (chunk, n) = result?;
        self.read_to += n;
        if let Some(end) = &chunk.end {
            self.size = end.len;
        }
        Ok(chunk)
    }

    /// The file's shape now, looked at on a blocking thread of `on`.
    pub async fn look(&mut self, on: &Handle) -> Result<Shape, ReadFailure> {
        let Some(open) = self.open.take() else {
            return Err(io::Error::other("reader used after a failure").into());
        };
        let joined = blocking::run(on, move || {
            let shape = open.file.metadata().map(|m| Shape::of(&m));
            (open, shape)
        })
        .await;
        let (open, shape) = joined.map_err(|_| ReadFailure::Interrupted)?;
        self.open = Some(open);
        let shape = shape?;
        self.size = shape.len;
        Ok(shape)
    }

    /// Hands out the unterminated last line (if any), at the end of a file that will not
    /// grow any more.
    pub fn finish(&mut self) -> Vec<Batch> {
        match self.open.as_mut() {
            Some(open) => {
                open.framer.finish(open.lines.collect());
                pack(open, &self.origin, self.batch_size, true)
            }
            None => Vec::new(),
        }
    }
}

/// Reads up to [`READ_CHUNK`] bytes into the framer, `first` bytes first, until the chunk is
/// full or a read finds nothing more (so that a small file is read, and its end seen, in one
/// go). Returns how many bytes were read and whether the end of what the file holds was
/// reached.
fn fill_chunk(framer: &mut LineFramer, file: &mut File, first: usize) -> io::Result<(u64, bool)> {
    let mut total = 0usize;
    let mut want = first;
    while total < READ_CHUNK {
        let ask = want.min(READ_CHUNK - total);
        let n = framer.fill(file, ask)?;
        if n == 0 {
            return Ok((total as u64, true));
        }
        total += n;
        // A short read is usually the end: look with a small buffer.
        want = if n < ask { MIN_READ } else { READ_CHUNK };
    }
    Ok((total as u64, false))
}

/// Packs the lines framed so far through the file's pipeline into batches of at most
/// `batch_size` events; `last` says the file ends after them.
fn pack(open: &mut Open, origin: &Arc<Origin>, batch_size: usize, last: bool) -> Vec<Batch> {
    let mut packer = Packer::new(batch_size, now_ms());
    let end = open.framer.offset();
    open.lines.pack(&mut packer, (0, 0), origin, end, last);
    packer.into_batches()
}
