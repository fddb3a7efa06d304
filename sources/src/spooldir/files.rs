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
use crate::framing::{self, Newline};

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

/// A file [`open`] opened: positioned at the offset; seen with `shape` since `seen`.
pub(super) struct Ready {
    /// The file.
    pub file: File,
    /// Its shape when opened.
    pub shape: Shape,
    /// Since when it has had that shape.
    pub seen: Instant,
    /// The offset is inside a line (a checkpoint taken while a truncated line's rest was
    /// being dropped).
    pub inside_line: bool,
}

/// Why [`open`] did not open a file to be read.
pub(super) enum Opening {
    /// Gone since it was listed.
    Vanished,
    /// Replaced since the listing by something that is not a regular file, or by a symbolic
    /// link (never followed).
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
    /// The completed name cannot be used (it is too long for the file system, say).
    CompletedUnusable(PathBuf, io::Error),
}

/// Opens a file to be read, checks it is ready, and positions it (see [`OpenRequest`]).
pub(super) fn open(req: OpenRequest) -> Result<Ready, Opening> {
    // Never block on a FIFO, nor follow a symbolic link, that replaced the file since the
    // listing: what is opened is checked again through its descriptor.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&req.path)
        .and_then(|f| Ok((f.metadata()?, f)));
    let (meta, mut file) = match opened {
        Ok(x) => x,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Opening::Vanished),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(Opening::NotAFile),
        Err(e) if not_the_files_fault(&e) => return Err(Opening::Busy(e)),
        Err(e) => return Err(Opening::Failed(e)),
    };
    if !meta.is_file() {
        return Err(Opening::NotAFile);
    }
    let shape = Shape::of(&meta);
    let mut seen = Instant::now();
    if let Some((listed, listed_seen)) = req.listed {
        if shape == listed {
            seen = listed_seen;
        }
        let (ready_after, empty_grace) = req.quiet;
        if shape.quiet_for(seen) < needed_quiet(shape.len, ready_after, empty_grace) {
            return Err(Opening::NotReady { shape, seen });
        }
    }
    if let Err(e) = file.seek(SeekFrom::Start(req.offset)) {
        return Err(Opening::Failed(e));
    }
    let inside_line = match framing::inside_line(&file, req.offset, Newline::Byte) {
        Ok(inside) => inside,
        Err(e) => return Err(Opening::Failed(e)),
    };
    if let Some(done) = req.completed {
        match fs::symlink_metadata(&done) {
            Ok(_) => return Err(Opening::CompletedTaken(done)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Opening::CompletedUnusable(done, e)),
        }
    }
    Ok(Ready {
        file,
        shape,
        seen,
        inside_line,
    })
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
        if !taken(&dest) && fs::rename(path, &dest).is_ok() {
            return Aside::Moved(dest);
        }
    }
    Aside::Left(fs::symlink_metadata(path).ok().map(|m| Shape::of(&m)))
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

/// Checks that `path` still names the file with device `dev` and inode `ino` (not a link to
/// it), with at least `offset` bytes.
pub(super) fn resumable(path: &Path, dev: u64, ino: u64, offset: u64) -> Resumable {
    match fs::symlink_metadata(path) {
        Ok(m) if m.dev() == dev && m.ino() == ino && m.len() >= offset => Resumable::Same,
        Ok(_) => Resumable::Replaced,
        Err(_) => Resumable::Gone,
    }
}

/// True if something has the name `path`: a file, a folder, or a symbolic link, even one that
/// leads nowhere (a rename would replace it).
fn taken(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
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
/// was reached), or `None` if it is unchanged or gone (moved away, or its folder replaced: then
/// completing it finds nothing to rename, which [`complete`] reports as `NotFound`).
fn changed_since(path: &Path, read: &Shape) -> Option<String> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
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
        Err(_) if !taken(to) => fs::rename(from, to),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    const QUIET: (Duration, Duration) = (Duration::from_secs(3600), Duration::from_secs(3600));

    fn shape(path: &Path) -> Shape {
        Shape::of(&fs::metadata(path).unwrap())
    }

    fn request(path: &Path, offset: u64) -> OpenRequest {
        OpenRequest {
            path: path.to_path_buf(),
            offset,
            listed: None,
            quiet: QUIET,
            completed: None,
        }
    }

    #[test]
    fn a_file_is_opened_at_its_offset() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        fs::write(&p, b"one\ntwo\n").unwrap();
        let Ok(Ready {
            mut file, shape, ..
        }) = open(request(&p, 4))
        else {
            panic!("not opened");
        };
        let mut rest = String::new();
        file.read_to_string(&mut rest).unwrap();
        assert_eq!((rest.as_str(), shape.len), ("two\n", 8));
    }

    #[test]
    fn a_file_changed_since_it_was_listed_is_not_ready_and_an_unchanged_one_is() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        fs::write(&p, b"one\n").unwrap();
        let listed = shape(&p);
        let long_ago = Instant::now() - Duration::from_secs(7200);
        let mut req = request(&p, 0);
        req.listed = Some((listed, long_ago));
        assert!(matches!(open(req), Ok(Ready { seen, .. }) if seen == long_ago));
        fs::write(&p, b"one\ntwo\n").unwrap();
        let mut req = request(&p, 0);
        req.listed = Some((listed, long_ago));
        let Err(Opening::NotReady { shape, seen }) = open(req) else {
            panic!("a grown file must wait");
        };
        assert_eq!(shape.len, 8);
        assert!(seen > long_ago, "seen anew");
    }

    #[test]
    fn a_file_gone_when_it_is_completed_is_not_a_changed_file() {
        // Its folder was moved away (replaced) after it was read: nothing to rename, and no
        // "changed after it was read" error that would set it aside.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        fs::write(&p, b"x\n").unwrap();
        let read = shape(&p);
        fs::remove_file(&p).unwrap();
        for to in [Some(d.path().join("a.log.COMPLETED")), None] {
            let done = complete(&p, &read, to.as_deref());
            assert!(
                matches!(&done, Completion::Done(Err(e)) if e.kind() == io::ErrorKind::NotFound),
                "{to:?}"
            );
        }
        fs::write(&p, b"another\n").unwrap();
        assert!(matches!(complete(&p, &read, None), Completion::Changed(_)));
    }

    #[test]
    fn a_taken_completed_name_a_vanished_file_and_a_folder_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        fs::write(&p, b"x\n").unwrap();
        let done = d.path().join("a.log.COMPLETED");
        fs::write(&done, b"older\n").unwrap();
        let mut req = request(&p, 0);
        req.completed = Some(done.clone());
        assert!(matches!(open(req), Err(Opening::CompletedTaken(at)) if at == done));
        let gone = open(request(&d.path().join("gone"), 0));
        assert!(matches!(gone, Err(Opening::Vanished)));
        assert!(matches!(open(request(d.path(), 0)), Err(Opening::NotAFile)));
        fs::remove_file(&done).unwrap();
        std::os::unix::fs::symlink(d.path().join("nowhere"), &done).unwrap();
        let mut req = request(&p, 0);
        req.completed = Some(done.clone());
        let dangling = open(req);
        assert!(
            matches!(dangling, Err(Opening::CompletedTaken(_))),
            "a dangling link takes the name"
        );
        // A 255-byte name has no room for the suffix: it is not read, never to be completed.
        let long = d.path().join(format!("{}.log", "L".repeat(251)));
        fs::write(&long, b"x\n").unwrap();
        let mut req = request(&long, 0);
        req.completed = Some(d.path().join(format!("{}.log.COMPLETED", "L".repeat(251))));
        let unusable = open(req);
        assert!(
            matches!(&unusable, Err(Opening::CompletedUnusable(_, e)) if e.raw_os_error() == Some(libc::ENAMETOOLONG)),
            "a completed name too long to be made"
        );
    }

    #[test]
    fn fifos_devices_and_symbolic_links_are_never_opened_for_reading() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.log");
        fs::write(&real, b"x\n").unwrap();
        let fifo = d.path().join("pipe.log");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let link = |name: &str, to: &Path| {
            let at = d.path().join(name);
            std::os::unix::fs::symlink(to, &at).unwrap();
            at
        };
        let paths = [
            fifo.clone(),
            PathBuf::from("/dev/zero"),
            link("to-real.log", &real),
            link("to-pipe.log", &fifo),
            link("to-zero.log", Path::new("/dev/zero")),
            link("to-passwd.log", Path::new("/etc/passwd")),
        ];
        for p in paths {
            // A FIFO opened without O_NONBLOCK would wait here for a writer.
            let opened = open(request(&p, 0));
            assert!(
                matches!(opened, Err(Opening::NotAFile)),
                "{} opened",
                p.display()
            );
        }
        // A checkpointed file replaced by a link to it is not resumed through the link.
        let s = shape(&real);
        assert!(matches!(
            resumable(&d.path().join("to-real.log"), s.dev, s.ino, 0),
            Resumable::Replaced
        ));
    }

    #[test]
    fn completing_renames_without_replacing_or_deletes_unless_the_file_changed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        fs::write(&p, b"x\n").unwrap();
        let read = shape(&p);
        let to = d.path().join("a.log.COMPLETED");
        assert!(matches!(
            complete(&p, &read, Some(&to)),
            Completion::Done(Ok(()))
        ));
        assert!(!p.exists() && to.exists());

        fs::write(&p, b"y\n").unwrap();
        let read = shape(&p);
        let taken = complete(&p, &read, Some(&to));
        assert!(
            matches!(taken, Completion::Done(Err(e)) if e.kind() == io::ErrorKind::AlreadyExists)
        );
        assert_eq!(
            fs::read(&to).unwrap(),
            b"x\n",
            "the older completed file is kept"
        );

        fs::write(&p, b"y\nmore\n").unwrap();
        assert!(
            matches!(complete(&p, &read, None), Completion::Changed(why) if why.contains("bytes"))
        );
        let read = shape(&p);
        assert!(matches!(
            complete(&p, &read, None),
            Completion::Done(Ok(()))
        ));
        assert!(!p.exists());
    }

    #[test]
    fn setting_aside_renames_with_the_failed_suffix_or_leaves_the_file_with_its_shape() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        fs::write(&p, b"x\n").unwrap();
        let Aside::Left(Some(left)) = set_aside(&p, false) else {
            panic!("left in place");
        };
        assert_eq!(left, shape(&p));
        let failed = d.path().join(format!("a.log{FAILED_SUFFIX}"));
        assert!(matches!(set_aside(&p, true), Aside::Moved(to) if to == failed));
        fs::write(&p, b"again\n").unwrap();
        assert!(
            matches!(set_aside(&p, true), Aside::Left(Some(_))),
            "an older failed file is never replaced"
        );
    }

    #[test]
    fn a_checkpointed_file_is_resumed_only_if_it_is_the_same_and_long_enough() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        fs::write(&p, b"0123456789").unwrap();
        let s = shape(&p);
        assert!(matches!(resumable(&p, s.dev, s.ino, 10), Resumable::Same));
        assert!(matches!(
            resumable(&p, s.dev, s.ino, 11),
            Resumable::Replaced
        ));
        assert!(matches!(
            resumable(&p, s.dev, s.ino + 1, 0),
            Resumable::Replaced
        ));
        assert!(matches!(
            resumable(&d.path().join("b"), s.dev, s.ino, 0),
            Resumable::Gone
        ));
    }
}
