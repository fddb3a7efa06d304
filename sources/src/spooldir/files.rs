//! The spooldir source's file operations, each a plain blocking function that the source
//! runs on the blocking pool ([`crate::blocking`]): opening a file to read it, completing it,
//! setting it aside, checking the file a checkpoint names. They decide nothing that needs
//! the source's state and log nothing: they report what they found, and the source acts.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::config::FAILED_SUFFIX;
use super::scan::{Shape, needed_quiet};

/// What is asked of [`open`].
pub(super) struct OpenRequest {
    /// The file.
    pub path: PathBuf,
    /// Where reading starts.
    pub offset: u64,
    /// The shape the listing saw and since when, for a file not read before: it must still
    /// have it, or have been quiet long enough since.
    pub listed: Option<(Shape, Instant)>,
    /// `ready_after` and `empty_grace`.
    pub quiet: (Duration, Duration),
    /// The name the file is renamed to once completed (`after_read: rename`): it must be free.
    pub completed: Option<PathBuf>,
}

/// What [`open`] found.
pub(super) enum Opening {
    /// Open and positioned at the offset; seen with `shape` since `seen`.
    Ready {
        /// The file.
        file: File,
        /// Its shape when opened.
        shape: Shape,
        /// Since when it has had that shape.
        seen: Instant,
    },
    /// Gone since it was listed.
    Vanished,
    /// Replaced since the listing by something that is not a regular file.
    NotAFile,
    /// It cannot be opened now for want of descriptors or memory: not the file's fault.
    Busy(io::Error),
    /// It cannot be read: a fault of the file.
    Failed(io::Error),
    /// It changed since it was listed: being written.
    NotReady {
        /// Its shape now.
        shape: Shape,
        /// Since when it has had that shape.
        seen: Instant,
    },
    /// The completed name is already taken.
    CompletedTaken(PathBuf),
}

/// Opens a file to be read, checks it is ready, and positions it (see [`OpenRequest`]).
pub(super) fn open(req: OpenRequest) -> Opening {
    // Never block on a FIFO that replaced the file since the listing.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&req.path)
        .and_then(|f| Ok((f.metadata()?, f)));
    let (meta, mut file) = match opened {
        Ok(x) => x,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Opening::Vanished,
        Err(e) if not_the_files_fault(&e) => return Opening::Busy(e),
        Err(e) => return Opening::Failed(e),
    };
    if !meta.is_file() {
        return Opening::NotAFile;
    }
    let shape = Shape::of(&meta);
    let mut seen = Instant::now();
    if let Some((listed, listed_seen)) = req.listed {
        if shape == listed {
            seen = listed_seen;
        }
        let (ready_after, empty_grace) = req.quiet;
        if shape.quiet_for(seen) < needed_quiet(shape.len, ready_after, empty_grace) {
            return Opening::NotReady { shape, seen };
        }
    }
    if let Err(e) = file.seek(SeekFrom::Start(req.offset)) {
        return Opening::Failed(e);
    }
    if let Some(done) = req.completed
        && done.exists()
    {
        return Opening::CompletedTaken(done);
    }
    Opening::Ready { file, shape, seen }
}

/// What [`complete`] did.
pub(super) enum Completion {
    /// The file is not what was read; why.
    Changed(String),
    /// Renamed or deleted (or the attempt failed).
    Done(io::Result<()>),
}

/// Completes the file at `path`, read to its end when it had shape `read`: renames it to
/// `rename_to`, or deletes it if that is `None`, unless it changed since.
pub(super) fn complete(path: &Path, read: &Shape, rename_to: Option<&Path>) -> Completion {
    if let Some(problem) = changed_since(path, read) {
        return Completion::Changed(problem);
    }
    Completion::Done(match rename_to {
        None => fs::remove_file(path),
        Some(to) => rename_no_replace(path, to),
    })
}

/// What [`set_aside`] did.
pub(super) enum Aside {
    /// Renamed with the failed suffix, to this name.
    Moved(PathBuf),
    /// Left in place; its shape now, if it can be looked at, to skip it while it keeps it.
    Left(Option<Shape>),
}

/// Renames the file at `path` with [`FAILED_SUFFIX`] when `rename` is set and the name is
/// free; otherwise leaves it in place.
pub(super) fn set_aside(path: &Path, rename: bool) -> Aside {
    if rename {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(FAILED_SUFFIX);
        let dest = path.with_file_name(name);
        if !dest.exists() && fs::rename(path, &dest).is_ok() {
            return Aside::Moved(dest);
        }
    }
    Aside::Left(fs::metadata(path).ok().map(|m| Shape::of(&m)))
}

/// What the file a checkpoint names is now.
pub(super) enum Resumable {
    /// The same file, at least as long as the offset.
    Same,
    /// Another file, or a shorter one, has the name.
    Replaced,
    /// Nothing (or nothing that can be looked at) has the name.
    Gone,
}

/// Checks that `path` still leads to the file with device `dev` and inode `ino`, with at
/// least `offset` bytes.
pub(super) fn resumable(path: &Path, dev: u64, ino: u64, offset: u64) -> Resumable {
    match fs::metadata(path) {
        Ok(m) if m.dev() == dev && m.ino() == ino && m.len() >= offset => Resumable::Same,
        Ok(_) => Resumable::Replaced,
        Err(_) => Resumable::Gone,
    }
}

/// True for an error opening a file that says nothing about the file: the process ran out
/// of descriptors or memory, or was interrupted. The file is tried again later, never set
/// aside for it.
fn not_the_files_fault(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EINTR | libc::EAGAIN | libc::ENOBUFS
        )
    )
}

/// Why the file at `path` is not what was read (the file that had shape `read` when its end
/// was reached), or `None` if it is unchanged.
fn changed_since(path: &Path, read: &Shape) -> Option<String> {
    match fs::metadata(path) {
        Ok(now) => {
            let now = Shape::of(&now);
            if now.ino != read.ino || now.dev != read.dev {
                Some("the name now points to another file".into())
            } else if now.len != read.len {
                Some(format!(
                    "it is now {} bytes; {} were read",
                    now.len, read.len
                ))
            } else if now.mtime != read.mtime {
                Some("it was modified after it was read".into())
            } else {
                None
            }
        }
        Err(e) => Some(format!("it can no longer be looked at: {e}")),
    }
}

/// Renames `from` to `to` unless `to` exists, atomically where the file system has hard links.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if !to.exists() => fs::rename(from, to),
        Err(e) => Err(e),
    }
}
