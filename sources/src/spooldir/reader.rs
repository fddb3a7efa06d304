//! Reading one spool file: chunks read and framed into batches on a blocking thread, and the
//! file's shape whenever the reader is at the end of what it holds.
//!
//! Reaching the end of the bytes is not reaching the end of the file: the reader hands out
//! the last, unterminated line only when the source decides the file is finished
//! ([`FileReader::finish`]), after it stayed unchanged long enough.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use sluice_channels::Origin;
use tokio::runtime::Handle;

use super::files::{self, OpenRequest, Opening, Ready};
use super::scan::Shape;
use crate::blocking;
use crate::framing::{LineFramer, LongLinePolicy, LongLines};
use crate::now_ms;
use crate::pipeline::{Batch, Container, FileLines, Interceptors, Multiline, Packer, Stage};

/// How much is read from a file at a time, at most.
const READ_CHUNK: usize = 256 << 10;
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
    origin: Arc<Origin>,
    batch_size: usize,
}

impl Open {
    /// Reads one chunk (`first` bytes first, see [`fill_chunk`]) and packs its complete lines
    /// into batches; at the end of what the file holds, says so with its shape. Returns the
    /// chunk and how many bytes were read.
    fn read(&mut self, first: usize) -> io::Result<(Chunk, u64)> {
        let (n, at_end) = fill_chunk(&mut self.framer, &mut self.file, first)?;
        let batches = self.pack(false);
        let end = if at_end {
            Some(Shape::of(&self.file.metadata()?))
        } else {
            None
        };
        Ok((Chunk { batches, end }, n))
    }

    /// Frames what the framer holds (`last`: up to the end of the file) and packs it through
    /// the file's pipeline into batches.
    fn pack(&mut self, last: bool) -> Vec<Batch> {
        let mut packer = Packer::new(self.batch_size, now_ms());
        let (framer, lines) = (&mut self.framer, &mut self.lines);
        lines.frame_and_pack(framer, &mut packer, (0, 0), &self.origin, last);
        packer.into_batches()
    }
}

/// How a file is read: its lines' origin, the long-line limits, the batch size.
pub(super) struct Reading {
    /// The origin of the file's events.
    pub origin: Arc<Origin>,
    /// The longest line kept whole.
    pub max_line: usize,
    /// What happens to longer lines.
    pub policy: LongLinePolicy,
    /// The most events per batch.
    pub batch_size: usize,
    /// The container format stage of the file's lines, if it is not in plain lines.
    pub container: Option<Container>,
    /// The multiline stage of the file's lines, if the source joins lines.
    pub multiline: Option<Multiline>,
    /// The source's interceptors, if any.
    pub interceptors: Option<Interceptors>,
}

/// A file opened and ready, with its first chunk read (or failed).
pub(super) struct First {
    /// The reader, positioned after the first chunk.
    pub reader: FileReader,
    /// The file's shape when opened.
    pub shape: Shape,
    /// Since when it has had that shape.
    pub seen: Instant,
    /// The first chunk.
    pub chunk: Result<Chunk, ReadFailure>,
}

/// A file and its framer, moved to a blocking thread for each read.
pub(super) struct FileReader {
    /// `None` while lent to a read, and after a read that never came back.
    open: Option<Open>,
    /// The file offset just past the last byte read.
    read_to: u64,
    /// The file's size when last seen.
    size: u64,
}

/// `origin` with the `fid` header that tells this file from any other that had or will have
/// its path: device and inode, and a hash of its size, modification time and (where the file
/// system records it) birth time (a spooled file is finished, so they stay the same across
/// restarts, where a new file on a reused inode differs, also one of the same size and
/// modification time). Exactly-once delivery keys each file's delivered position by it.
fn with_fid(origin: &Origin, shape: &Shape) -> Arc<Origin> {
    let nanos = |t: Option<std::time::SystemTime>| t.and_then(crate::unix_nanos).unwrap_or(0);
    let mut bytes = [0u8; 40];
    bytes[..8].copy_from_slice(&shape.len.to_le_bytes());
    bytes[8..24].copy_from_slice(&nanos(Some(shape.mtime)).to_le_bytes());
    bytes[24..].copy_from_slice(&nanos(shape.born).to_le_bytes());
    let hash = crate::fnv1a(&bytes);
    let mut origin = origin.clone();
    let fid = format!("{}:{}:{hash:016x}", shape.dev, shape.ino);
    origin.headers.push(("fid".to_owned(), fid));
    Arc::new(origin)
}

impl FileReader {
    /// Runs `before` (work that would otherwise cost a call of its own), then opens a file as
    /// [`files::open`] does and, if it is ready, reads its first chunk, all in one blocking
    /// call on `on` (a small file is read whole in it).
    pub async fn open<T: Send + 'static>(
        on: &Handle,
        req: OpenRequest,
        how: Reading,
        before: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(T, Result<Box<First>, Opening>), blocking::Interrupted> {
        blocking::run(on, move || {
            let done = before();
            (done, Self::open_here(req, how))
        })
        .await
    }

    /// Opens and reads the first chunk on this thread (see [`FileReader::open`]).
    fn open_here(req: OpenRequest, how: Reading) -> Result<Box<First>, Opening> {
        let offset = req.offset;
        let Ready {
            file,
            shape,
            seen,
            inside_line,
        } = files::open(req)?;
        let mut framer = LineFramer::new(offset, how.max_line, how.policy);
        if inside_line {
            framer.starts_inside_line();
        }
        let mut reader = FileReader {
            open: Some(Open {
                file,
                framer,
                lines: FileLines::new(
                    how.container
                        .map(|c| Box::new(c) as Box<dyn Stage>)
                        .into_iter()
                        .chain(how.multiline.map(|m| Box::new(m) as Box<dyn Stage>))
                        .chain(
                            how.interceptors
                                .iter()
                                .map(|i| Box::new(i.stage()) as Box<dyn Stage>),
                        )
                        .collect(),
                ),
                origin: with_fid(&how.origin, &shape),
                batch_size: how.batch_size,
            }),
            read_to: offset,
            size: shape.len,
        };
        let chunk = reader.read_here();
        Ok(Box::new(First {
            reader,
            shape,
            seen,
            chunk,
        }))
    }

    /// How much to read first: what the file holds past what was read, and one byte more to
    /// see its end, within [`MIN_READ`] and [`READ_CHUNK`].
    fn first_read(&self) -> usize {
        usize::try_from(self.size.saturating_sub(self.read_to))
            .unwrap_or(READ_CHUNK)
            .saturating_add(1)
            .clamp(MIN_READ, READ_CHUNK)
    }

    /// Reads one chunk on this thread.
    fn read_here(&mut self) -> Result<Chunk, ReadFailure> {
        let first = self.first_read();
        let Some(open) = self.open.as_mut() else {
            return Err(io::Error::other("reader used after a failure").into());
        };
        let (chunk, n) = open.read(first)?;
        self.took(&chunk, n);
        Ok(chunk)
    }

    /// Notes that a read of `n` bytes brought `chunk`.
    fn took(&mut self, chunk: &Chunk, n: u64) {
        self.read_to += n;
        if let Some(end) = &chunk.end {
            self.size = end.len;
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
        let first = self.first_read();
        let Some(mut open) = self.open.take() else {
            return Err(io::Error::other("reader used after a failure").into());
        };
        let joined = blocking::run(on, move || {
            let result = open.read(first);
            (open, result)
        })
        .await;
        let (open, result) = joined.map_err(|_| ReadFailure::Interrupted)?;
        self.open = Some(open);
        let (chunk, n) = result?;
        self.took(&chunk, n);
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
        self.open.as_mut().map(|o| o.pack(true)).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_fid_tells_a_file_from_another_on_its_inode_and_stays_for_the_same_file() {
        let origin = Origin::for_file("r1", std::path::Path::new("/s/a.log"), "h", Vec::new());
        let shape = |len, secs| Shape {
            dev: 1,
            ino: 2,
            len,
            mtime: UNIX_EPOCH + Duration::from_secs(secs),
            born: Some(UNIX_EPOCH + Duration::from_secs(7)),
            mode: 0o100644,
        };
        let fid = |s: &Shape| with_fid(&origin, s).header("fid").unwrap().to_owned();
        let first = fid(&shape(10, 100));
        assert!(first.starts_with("1:2:"), "{first}");
        assert_eq!(first, fid(&shape(10, 100)), "read again after a restart");
        assert_ne!(first, fid(&shape(11, 100)), "another size");
        assert_ne!(first, fid(&shape(10, 101)), "another modification time");
        let reborn = Shape {
            born: Some(UNIX_EPOCH + Duration::from_secs(8)),
            ..shape(10, 100)
        };
        assert_ne!(first, fid(&reborn), "created at another time: another file");
    }
}
