//! File-system events (inotify, through notify) for the folders that hold followed files.
//!
//! Folders are watched, not files, so 10,000 files in a few folders cost a few watches. Events
//! are folded into a bounded set of changed paths that the source picks up when it wakes.
//! Where events are not available (no inotify instance, the watch limit reached, a network
//! file system such as NFS whose remote writes raise no events) the folder is polled instead,
//! with a warning.
//!
//! A file that appears under a matching name is opened on the event thread at once, whatever
//! the source is doing (it may be held back by a full channel for minutes), and its handle is
//! handed to the source ([`Held`]): a file that is renamed away or deleted a moment later is
//! still read in full. A file that could not be opened in time is followed through the renames
//! the events report; one that left every watched folder, or was deleted, before it could be
//! opened is reported ([`Changes::missed`]), never forgotten silently.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use notify::Watcher as _;
use notify::event::{CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode};
use tokio::sync::Notify;
use tracing::warn;

use super::matcher::Patterns;

/// Past this many changed paths between two wake-ups, the source looks at everything instead.
const MAX_CHANGED: usize = 1 << 16;
/// The most handles opened for the source and not yet taken by it; past that, new files are
/// found by the next scan as before.
const MAX_HELD: usize = 1024;
/// The most files followed by name because they could not be opened when they appeared.
const MAX_UNHELD: usize = 4096;
/// A `MOVED_FROM` without its `MOVED_TO` for this long was a move out of the watched folders.
const MOVE_SETTLED: std::time::Duration = std::time::Duration::from_millis(100);
/// Without birth times, the same inode opened again within this time is the same file.
const SAME_FILE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// A file opened on the event thread as soon as it appeared under a matching name.
#[derive(Debug)]
pub struct Held {
    /// The matching name it appeared under: its events carry this path.
    pub path: PathBuf,
    /// Where it was when it was opened.
    pub at: PathBuf,
    /// The open handle.
    pub file: File,
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// When it was created, if the file system says.
    pub born: Option<std::time::SystemTime>,
}

/// What changed since the source last looked.
#[derive(Debug, Default)]
pub struct Changes {
    /// Files written to (or truncated).
    pub data: HashSet<PathBuf>,
    /// Paths created, removed or renamed.
    pub names: HashSet<PathBuf>,
    /// Events were lost or a folder appeared or vanished: every matched file must be looked at.
    pub rescan: bool,
    /// Files opened as they appeared, in the order they appeared.
    pub held: Vec<Held>,
    /// Matching names of files that were renamed out of every watched folder, or deleted,
    /// before they could be opened, with what happened to them.
    pub missed: Vec<(PathBuf, &'static str)>,
}

/// What the event thread and the source share under one lock.
struct State {
    changes: Changes,
    follow: Follow,
}

/// The part shared with the watcher's thread.
pub struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what changed so far. A file renamed out of the watched folders before it could
    /// be opened is reported by the next event, or by the first call at least [`MOVE_SETTLED`]
    /// after it.
    pub fn take(&self) -> Changes {
        let mut st = self.lock();
        let State { changes, follow } = &mut *st;
        follow.settle_stale_move(changes);
        std::mem::take(changes)
    }

    /// Resolves once something changed since the last call (or immediately if it did).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    fn record(&self, event: notify::Result<notify::Event>) {
        let mut st = self.lock();
        let State { changes: c, follow } = &mut *st;
        match event {
            Ok(ev) => {
                if ev.need_rescan() {
                    c.rescan = true;
                }
                follow.event(&ev, c);
                match ev.kind {
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => return,
                    EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                        c.data.extend(ev.paths)
                    }
                    EventKind::Create(CreateKind::Folder)
                    | EventKind::Remove(RemoveKind::Folder) => {
                        c.rescan = true;
                    }
                    _ => c.names.extend(ev.paths),
                }
            }
            Err(e) => {
                warn!(error = %e, "file-system event error; looking at every file");
                c.rescan = true;
            }
        }
        if c.data.len() + c.names.len() > MAX_CHANGED {
            c.data.clear();
            c.names.clear();
            c.rescan = true;
        }
        drop(st);
        self.wake.notify_one();
    }
}

/// What the event thread keeps to open new files and follow the ones it could not open.
///
/// Each file that arrives at a matching name (created there, or renamed there) is opened by
/// name when its event is handled. Events queue, so by then the name may already hold a later
/// file, or none: the file that arrived has left, and its leaving event (a rename, a delete)
/// is further down the queue. So the last file opened at each name is kept ([`Arrival`]):
/// when the next arrival at that name opens the very same file again, the file of the earlier
/// arrival was never opened, and how it left says whether it can still be followed (renamed
/// within the watched folders: opened at its new name) or is lost (deleted, or renamed out of
/// them: reported).
struct Follow {
    patterns: Arc<Patterns>,
    /// The last arrival at each name, while it matters.
    arrivals: HashMap<PathBuf, Arrival>,
    /// Files not opened when they arrived, by the name they have now, with the matching name
    /// they arrived under.
    unheld: HashMap<PathBuf, PathBuf>,
    /// The path of the last `MOVED_FROM` whose `MOVED_TO` has not come yet, and when it came.
    moving: Option<(PathBuf, std::time::Instant)>,
}

/// What became of the last file that arrived at a name.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    /// The file opened at that name when the arrival was handled.
    opened: Identity,
    /// How the file that arrived left the name, once its event was handled.
    left: Option<Left>,
}

/// How a file left a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// Renamed within the watched folders: it was opened (or followed) at its new name.
    Renamed,
    /// Deleted, or renamed out of every watched folder.
    Lost(&'static str),
}

/// Tells two files apart even when an inode number is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    /// The birth time, where the file system keeps one.
    born: Option<std::time::SystemTime>,
    /// When it was opened, to judge a reused inode where there is no birth time.
    opened_at: std::time::Instant,
}

impl Identity {
    /// Whether `later` is the same file as `self`. Without birth times, an inode seen again
    /// within a second is taken as the same file: an inode is reused only after the file was
    /// deleted and the source closed it, which takes at least its `rotate_wait`.
    fn same_as(&self, later: &Identity) -> bool {
        self.dev == later.dev
            && self.ino == later.ino
            && match (self.born, later.born) {
                (Some(a), Some(b)) => a == b,
                _ => later.opened_at.duration_since(self.opened_at) < SAME_FILE_WINDOW,
            }
    }
}

const DELETED: &str = "deleted before it could be opened";
const MOVED_OUT: &str = "renamed out of every watched folder before it could be opened";
const REPLACED: &str = "replaced by another file before it could be opened";

impl Follow {
    fn new(patterns: Arc<Patterns>) -> Self {
        Follow {
            patterns,
            arrivals: HashMap::new(),
            unheld: HashMap::new(),
            moving: None,
        }
    }

    /// Settles a `MOVED_FROM` that no `MOVED_TO` followed within [`MOVE_SETTLED`]: the
    /// kernel queues both halves of a rename together, so the file left the watched folders.
    fn settle_stale_move(&mut self, c: &mut Changes) {
        if self
            .moving
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= MOVE_SETTLED)
            && let Some((from, _)) = self.moving.take()
        {
            self.left(&from, Left::Lost(MOVED_OUT), c);
        }
    }

    fn event(&mut self, ev: &notify::Event, c: &mut Changes) {
        let rename = match ev.kind {
            EventKind::Modify(ModifyKind::Name(mode)) => Some(mode),
            _ => None,
        };
        // A rename's `From` is followed by its `To` (and `Both`) at once when the file stays
        // in a watched folder; anything else after it means the file left them.
        if !matches!(rename, Some(RenameMode::To | RenameMode::Both))
            && let Some((from, _)) = self.moving.take()
        {
            self.left(&from, Left::Lost(MOVED_OUT), c);
        }
        match (ev.kind, ev.paths.as_slice()) {
            (EventKind::Create(CreateKind::File | CreateKind::Any), [p])
            | (EventKind::Modify(ModifyKind::Name(RenameMode::To)), [p])
                if self.patterns.matches(p) =>
            {
                self.arrived(p, c);
            }
            (EventKind::Modify(ModifyKind::Name(RenameMode::From)), [p]) => {
                self.moving = Some((p.clone(), std::time::Instant::now()));
            }
            (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), [from, to]) => {
                self.moving = None;
                let path = match self.unheld.remove(from) {
                    Some(path) => Some(path),
                    None if self.patterns.matches(from) => Some(from.clone()),
                    None => None,
                };
                self.left(from, Left::Renamed, c);
                // At a matching name, its arrival there (the `To` before) opened it.
                if let Some(path) = path
                    && !self.patterns.matches(to)
                {
                    self.hold(to, path, c);
                }
            }
            (EventKind::Remove(_), [p]) => self.left(p, Left::Lost(DELETED), c),
            _ => {}
        }
    }

    /// A file arrived at the matching name `p`: opens whatever is there now.
    fn arrived(&mut self, p: &Path, c: &mut Changes) {
        let Some(opened) = self.hold(p, p.to_path_buf(), c) else {
            self.arrivals.remove(p);
            return;
        };
        if self.arrivals.len() >= MAX_UNHELD {
            self.arrivals.clear();
        }
        let previous = self
            .arrivals
            .insert(p.to_path_buf(), Arrival { opened, left: None });
        if let Some(prev) = previous
            && prev.opened.same_as(&opened)
        {
            // The earlier arrival opened this later file: the earlier file left unopened.
            match prev.left {
                Some(Left::Renamed) => {}
                Some(Left::Lost(what)) => c.missed.push((p.to_path_buf(), what)),
                None => c.missed.push((p.to_path_buf(), REPLACED)),
            }
        }
    }

    /// The file at `p` left it (renamed away or deleted).
    fn left(&mut self, p: &Path, how: Left, c: &mut Changes) {
        if let Some(path) = self.unheld.remove(p) {
            if let Left::Lost(what) = how {
                c.missed.push((path, what));
            }
            return;
        }
        if let Some(a) = self.arrivals.get_mut(p)
            && a.left.is_none()
        {
            a.left = Some(how);
        }
    }

    /// Opens the file at `at`, which arrived as `path`, for the source; returns what it
    /// opened, if it opened a regular file.
    fn hold(&mut self, at: &Path, path: PathBuf, c: &mut Changes) -> Option<Identity> {
        if c.held.len() >= MAX_HELD {
            c.rescan = true;
            return None;
        }
        match open_regular(at) {
            Ok(Some((file, identity))) => {
                self.unheld.remove(at);
                c.held.push(Held {
                    path,
                    at: at.to_path_buf(),
                    file,
                    dev: identity.dev,
                    ino: identity.ino,
                    born: identity.born,
                });
                Some(identity)
            }
            // Not a regular file: the scan decides what to make of it.
            Ok(None) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.unheld.len() >= MAX_UNHELD {
                    c.rescan = true;
                } else {
                    self.unheld.insert(at.to_path_buf(), path);
                }
                None
            }
            // Unreadable: the scan finds it and reports why.
            Err(_) => None,
        }
    }
}

/// Opens `path` for reading if it is a regular file, without blocking on a FIFO.
fn open_regular(path: &Path) -> io::Result<Option<(File, Identity)>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let identity = Identity {
        dev: meta.dev(),
        ino: meta.ino(),
        born: meta.created().ok(),
        opened_at: std::time::Instant::now(),
    };
    Ok(Some((file, identity)))
}

/// Watches folders, falling back to polling where it cannot.
pub struct Watcher {
    inner: Option<notify::RecommendedWatcher>,
    shared: Arc<Shared>,
    watched: HashSet<PathBuf>,
    polled: HashSet<PathBuf>,
    warned_limit: bool,
}

impl Watcher {
    /// A watcher opening files that appear under a name
    /// `patterns` match; without inotify every folder is polled.
    pub fn new(patterns: Arc<Patterns>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                changes: Changes::default(),
                follow: Follow::new(patterns),
            }),
            wake: Notify::new(),
        });
        // The event thread logs in the source's span, as the source's own tasks do.
        let handler = {
            let shared = shared.clone();
            let span = tracing::Span::current();
            move |event| span.in_scope(|| shared.record(event))
        };
        let inner = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e,
                    "no file-system events (is fs.inotify.max_user_instances reached?); polling every file");
                None
            }
        };
        Watcher {
            inner,
            shared,
            watched: HashSet::new(),
            polled: HashSet::new(),
            warned_limit: false,
        }
    }

    /// The state shared with the event thread.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Watches exactly `dirs`; returns true if some of them must be polled.
    pub fn update(&mut self, dirs: &BTreeSet<PathBuf>) -> bool {
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|d| !dirs.contains(*d))
            .cloned()
            .collect();
        for d in gone {
            if let Some(w) = self.inner.as_mut() {
                let _ = w.unwatch(&d);
            }
            self.watched.remove(&d);
        }
        self.polled.retain(|d| dirs.contains(d));
        for d in dirs {
            if self.watched.contains(d) || self.polled.contains(d) {
                continue;
            }
            let Some(w) = self.inner.as_mut() else {
                self.polled.insert(d.clone());
                continue;
            };
            if let Some(fs) = remote_fs(d) {
                warn!(dir = %d.display(), fs,
                    "network file system: writes from other hosts raise no events; polling this folder");
                self.polled.insert(d.clone());
                continue;
            }
            match w.watch(d, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(d.clone());
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    if !self.warned_limit {
                        warn!(dir = %d.display(),
                            "inotify watch limit reached (raise fs.inotify.max_user_watches); polling \
                             the folders that are not watched");
                        self.warned_limit = true;
                    }
                    self.polled.insert(d.clone());
                }
                // The folder vanished between the listing and now: the next scan sees it.
                Err(_) => {}
            }
        }
        !self.polled.is_empty()
    }
}

/// The name of a network file system `dir` is on, if it is on one.
fn remote_fs(dir: &Path) -> Option<&'static str> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs fills the zeroed struct; `c` is a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    match (st.f_type as u64) & 0xffff_ffff {
        0x6969 => Some("nfs"),
        0xff53_4d42 => Some("cifs"),
        0xfe53_4d42 => Some("smb2"),
        0x517b => Some("smb"),
        0x0102_1997 => Some("9p"),
        0x00c3_6400 => Some("ceph"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use notify::Event;

    use super::*;
    use crate::taildir::config::PathSpec;

    /// A `Follow` for `dir/app.log` and the folder.
    fn follow() -> (tempfile::TempDir, Follow) {
        let dir = tempfile::tempdir().unwrap();
        let spec = PathSpec {
            glob: dir.path().join("app.log").to_string_lossy().into_owned(),
            headers: BTreeMap::new(),
        };
        let patterns = Arc::new(Patterns::new(&[spec], &[]));
        (dir, Follow::new(patterns))
    }

    fn create(p: &Path) -> Event {
        Event::new(EventKind::Create(CreateKind::File)).add_path(p.to_path_buf())
    }

    fn remove(p: &Path) -> Event {
        Event::new(EventKind::Remove(RemoveKind::File)).add_path(p.to_path_buf())
    }

    /// The events inotify reports for a rename within watched folders.
    fn rename(from: &Path, to: &Path) -> Vec<Event> {
        let name = |m| Event::new(EventKind::Modify(ModifyKind::Name(m)));
        vec![
            name(RenameMode::From).add_path(from.to_path_buf()),
            name(RenameMode::To).add_path(to.to_path_buf()),
            name(RenameMode::Both)
                .add_path(from.to_path_buf())
                .add_path(to.to_path_buf()),
        ]
    }

    fn moved_away(from: &Path) -> Event {
        Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::From)))
            .add_path(from.to_path_buf())
    }

    fn ino(p: &Path) -> u64 {
        fs::metadata(p).unwrap().ino()
    }

    /// The files are changed first, then the queued events are handled: the first create's
    /// open finds the second file, and the rename's event opens the first at its new name.
    #[test]
    fn a_file_renamed_before_its_event_is_opened_at_its_new_name() {
        let (dir, mut f) = follow();
        let (live, rotated) = (dir.path().join("app.log"), dir.path().join("app.log.1"));
        fs::write(&live, "a\n").unwrap();
        fs::rename(&live, &rotated).unwrap();
        fs::write(&live, "b\n").unwrap();
        let mut c = Changes::default();
        f.event(&create(&live), &mut c);
        for ev in rename(&live, &rotated) {
            f.event(&ev, &mut c);
        }
        f.event(&create(&live), &mut c);
        let held: Vec<(u64, &Path)> = c.held.iter().map(|h| (h.ino, h.path.as_path())).collect();
        assert!(held.contains(&(ino(&rotated), live.as_path())), "{held:?}");
        assert!(held.contains(&(ino(&live), live.as_path())), "{held:?}");
        assert!(c.missed.is_empty(), "{:?}", c.missed);
    }

    /// A file deleted before its event was handled: the next create at its name opens the
    /// same later file again, which tells that the deleted one was never opened.
    #[test]
    fn a_file_deleted_before_it_was_opened_is_reported() {
        let (dir, mut f) = follow();
        let live = dir.path().join("app.log");
        fs::write(&live, "a\n").unwrap();
        fs::remove_file(&live).unwrap();
        fs::write(&live, "b\n").unwrap();
        let mut c = Changes::default();
        f.event(&create(&live), &mut c);
        f.event(&remove(&live), &mut c);
        f.event(&create(&live), &mut c);
        assert_eq!(c.missed, vec![(live.clone(), DELETED)]);
    }

    /// A file opened in time is not reported when it is deleted or moved away later.
    #[test]
    fn a_file_opened_in_time_is_not_reported_when_it_leaves() {
        let (dir, mut f) = follow();
        let live = dir.path().join("app.log");
        let mut c = Changes::default();
        fs::write(&live, "a\n").unwrap();
        f.event(&create(&live), &mut c);
        fs::remove_file(&live).unwrap();
        f.event(&remove(&live), &mut c);
        fs::write(&live, "b\n").unwrap();
        f.event(&create(&live), &mut c);
        f.event(&moved_away(&live), &mut c);
        let _ = fs::remove_file(&live);
        fs::write(&live, "c\n").unwrap();
        f.event(&create(&live), &mut c);
        assert_eq!(c.held.len(), 3);
        assert!(c.missed.is_empty(), "{:?}", c.missed);
    }

    /// A file gone from its name when its event is handled, then renamed out of the watched
    /// folders: reported once no `MOVED_TO` came for [`MOVE_SETTLED`].
    #[test]
    fn a_file_moved_out_before_it_was_opened_is_reported() {
        let (dir, mut f) = follow();
        let live = dir.path().join("app.log");
        let mut c = Changes::default();
        f.event(&create(&live), &mut c);
        assert!(c.held.is_empty());
        f.event(&moved_away(&live), &mut c);
        f.settle_stale_move(&mut c);
        assert!(c.missed.is_empty(), "a MOVED_TO may still come");
        // As if the move had come that long ago.
        if let Some((_, at)) = f.moving.as_mut() {
            *at -= MOVE_SETTLED;
        }
        f.settle_stale_move(&mut c);
        assert_eq!(c.missed, vec![(live, MOVED_OUT)]);
    }

    /// A FIFO under a matching name is not opened (opening it would block) and not held.
    #[test]
    fn a_fifo_is_not_held() {
        let (dir, mut f) = follow();
        let live = dir.path().join("app.log");
        let c_path = std::ffi::CString::new(live.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let mut c = Changes::default();
        f.event(&create(&live), &mut c);
        assert!(c.held.is_empty());
        assert!(c.missed.is_empty());
    }
}
