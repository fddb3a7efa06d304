//! Listing the spool folder: which files wait, which of them are ready to be read and in which
//! order, and what in the folder can never be read.
//!
//! One listing (one `readdir` and one `stat` per candidate name) fills a queue of the files
//! that are ready, sorted by the configured order; the source takes files from that queue
//! and lists the folder again only once the queue is empty (or a file-system event, the poll
//! interval or a waiting file's ready time asks for it while it is empty). So reading N files
//! costs O(N log N) in all, not a listing of the whole folder per file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sluice_channels::names::escape_path;
use tracing::{error, info, warn};

use super::config::{FAILED_SUFFIX, Order, SpoolDirConfig};

/// A file's identity, size, modification time and permissions: what says whether it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Shape {
    /// The device of the file system the file is on.
    pub dev: u64,
    /// The file's inode number.
    pub ino: u64,
    /// Its size in bytes.
    pub len: u64,
    /// When it was last modified.
    pub mtime: SystemTime,
    /// When it was created, where the file system records it.
    pub born: Option<SystemTime>,
    /// Its type and permission bits: a file skipped because it could not be opened is tried
    /// again once they change (made readable).
    pub mode: u32,
}

impl Shape {
    /// The shape of the file `meta` describes.
    pub fn of(meta: &fs::Metadata) -> Shape {
        Shape {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            born: meta.created().ok(),
            mode: meta.mode(),
        }
    }

    /// How long the file has stayed as it is, at least: the age of its modification time, or
    /// how long it has been seen unchanged since `seen` (which covers a modification time in
    /// the future, from a skewed clock).
    pub fn quiet_for(&self, seen: Instant) -> Duration {
        let by_mtime = SystemTime::now()
            .duration_since(self.mtime)
            .unwrap_or_default();
        by_mtime.max(seen.elapsed())
    }
}

/// How long a file of `len` bytes must stay unchanged before it is read (or, empty,
/// completed).
pub(super) fn needed_quiet(len: u64, ready_after: Duration, empty_grace: Duration) -> Duration {
    if len == 0 { empty_grace } else { ready_after }
}

/// A file ready to be read, as the listing saw it.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    /// Where it is.
    pub path: PathBuf,
    /// What it looked like.
    pub shape: Shape,
    /// Since when the file has been seen with this shape.
    pub seen: Instant,
}

/// What the last listing found out about the folder itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FolderState {
    /// Listed.
    Listed,
    /// Listed again after it could not be: it was deleted and created again, say. Its
    /// file-system watch must be set up again.
    Recovered,
    /// It cannot be listed (logged once per episode).
    Unavailable,
    /// Listed, but it is another folder than the last listing's: its name was given to
    /// another folder (deleted and created again, or replaced by a link to another one)
    /// between two listings. Its file-system watch must be set up again.
    Replaced,
}

/// How often, at most, a folder that cannot be listed is tried again (its watch went with
/// it, so nothing else tells that it is back).
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);

/// How many system calls the listings made: the measure of their cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ListCounts {
    /// Folder listings.
    pub listings: u64,
    /// `stat` calls on candidate files.
    pub stats: u64,
}

/// What is never read, by name.
struct NameFilter {
    include: Vec<glob::Pattern>,
    ignore: Vec<glob::Pattern>,
    completed_suffix: String,
}

impl NameFilter {
    fn is_candidate(&self, name: &OsStr) -> bool {
        let name = name.to_string_lossy();
        if name.starts_with('.')
            || name.ends_with(&self.completed_suffix)
            || name.ends_with(FAILED_SUFFIX)
        {
            return false;
        }
        if !self.include.is_empty() && !self.include.iter().any(|p| p.matches(&name)) {
            return false;
        }
        !self.ignore.iter().any(|p| p.matches(&name))
    }
}

/// The spool folder as the source sees it between listings.
pub(super) struct Spool {
    dir: PathBuf,
    filter: NameFilter,
    order: Order,
    ready_after: Duration,
    empty_grace: Duration,
    poll: Duration,
    /// When the folder was last listed (or tried).
    listed_at: Option<Instant>,
    /// The ready files of the last listing, the next one first.
    queue: VecDeque<Candidate>,
    /// Files seen but not ready yet: their shape and since when they have had it.
    waiting: HashMap<PathBuf, (Shape, Instant)>,
    /// When the first waiting file may be ready.
    next_ready: Option<Instant>,
    /// Entries that are not regular files, logged once each: what they were.
    reported: HashMap<PathBuf, (u64, &'static str)>,
    /// Files left in place after an error, skipped while they keep their shape.
    skipped: HashSet<(PathBuf, Shape)>,
    /// Files not to be taken before a time (an open that failed for want of resources).
    deferred: HashMap<PathBuf, Instant>,
    /// A listing is due the next time the queue is empty.
    due: bool,
    /// The folder could not be listed last time (an episode, logged once).
    unavailable: bool,
    /// The folder the last listing listed: its device, inode and, where the file system
    /// records it, its creation time (an inode number is handed out again at once).
    folder: Option<(u64, u64, Option<SystemTime>)>,
    counts: ListCounts,
}

impl Spool {
    /// The folder of `cfg`, not listed yet.
    pub fn new(cfg: &SpoolDirConfig) -> Spool {
        let compile = |globs: &[String]| {
            globs
                .iter()
                .filter_map(|g| glob::Pattern::new(g).ok())
                .collect()
        };
        Spool {
            dir: cfg.dir.clone(),
            filter: NameFilter {
                include: compile(&cfg.include),
                ignore: compile(&cfg.ignore),
                completed_suffix: cfg.completed_suffix.clone(),
            },
            order: cfg.order,
            ready_after: cfg.ready_after.0,
            empty_grace: cfg.empty_grace.0,
            poll: cfg.poll_interval.0,
            listed_at: None,
            queue: VecDeque::new(),
            waiting: HashMap::new(),
            next_ready: None,
            reported: HashMap::new(),
            skipped: HashSet::new(),
            deferred: HashMap::new(),
            due: true,
            unavailable: false,
            folder: None,
            counts: ListCounts::default(),
        }
    }

    /// The system calls made by the listings so far.
    pub fn counts(&self) -> ListCounts {
        self.counts
    }

    /// How long a file of `len` bytes must stay unchanged before it is taken.
    pub fn needed_quiet(&self, len: u64) -> Duration {
        needed_quiet(len, self.ready_after, self.empty_grace)
    }

    /// Asks for a listing the next time the queue is empty (a file-system event, or the poll
    /// interval passed).
    pub fn mark_due(&mut self) {
        self.due = true;
    }

    /// When a waiting file may become ready, if any waits.
    #[cfg(test)]
    pub fn next_ready(&self) -> Option<Instant> {
        self.next_ready
    }

    /// When the folder is to be listed next if nothing else happens: the poll interval after
    /// the last listing, or when a waiting file may become ready.
    pub fn wake_at(&self) -> Instant {
        let every = if self.unavailable {
            self.poll.min(UNAVAILABLE_RETRY)
        } else {
            self.poll
        };
        let poll = self.listed_at.map_or_else(Instant::now, |t| t + every);
        self.next_ready.map_or(poll, |t| t.min(poll))
    }

    /// True when the folder is to be listed the next time the queue is empty.
    fn listing_due(&self) -> bool {
        self.due || self.wake_at() <= Instant::now()
    }

    /// The next ready file: from the queue, or from a new listing if the queue is empty and a
    /// listing is due. `busy` tells the files being read or completed, never listed.
    pub fn next(&mut self, busy: impl Fn(&Path) -> bool) -> (Option<Candidate>, FolderState) {
        let mut state = FolderState::Listed;
        if self.queue.is_empty() && self.listing_due() {
            state = self.list(&busy);
        }
        while let Some(c) = self.queue.pop_front() {
            if self.queue.is_empty() {
                // What was listed is used up: list again before waiting.
                self.due = true;
            }
            if !busy(&c.path) {
                return (Some(c), state);
            }
        }
        (None, state)
    }

    /// Remembers a file taken from the queue that turned out not to be ready (it changed
    /// since it was listed): it waits until it has been quiet long enough.
    pub fn not_ready(&mut self, path: PathBuf, shape: Shape, seen: Instant) {
        let wait = self
            .needed_quiet(shape.len)
            .saturating_sub(shape.quiet_for(seen));
        self.note_ready_at(Instant::now() + wait);
        self.waiting.insert(path, (shape, seen));
    }

    /// Skips `path` while it keeps its current shape (a file left in place after an error).
    pub fn skip(&mut self, path: &Path, shape: Shape) {
        self.skipped.insert((path.to_path_buf(), shape));
    }

    /// Leaves `path` alone until `until`.
    pub fn defer(&mut self, path: PathBuf, until: Instant) {
        self.note_ready_at(until);
        self.deferred.insert(path, until);
    }

    fn note_ready_at(&mut self, at: Instant) {
        self.next_ready = Some(self.next_ready.map_or(at, |t| t.min(at)));
    }

    /// Lists the folder: queues the ready files in order, remembers the others.
    fn list(&mut self, busy: &impl Fn(&Path) -> bool) -> FolderState {
        let now = Instant::now();
        self.due = false;
        self.next_ready = None;
        self.listed_at = Some(now);
        self.deferred.retain(|_, until| *until > now);
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                if !self.unavailable {
                    self.unavailable = true;
                    error!(dir = %escape_path(&self.dir), error = %e,
                        "cannot list the spool folder; waiting for it to come back (logged once)");
                }
                return FolderState::Unavailable;
            }
        };
        self.counts.listings += 1;
        let mut state = FolderState::Listed;
        // The folder is named by its path, followed at each listing like the path of any
        // folder (a link included): the name given to another folder is that folder.
        let folder = fs::metadata(&self.dir)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.created().ok()));
        if std::mem::take(&mut self.unavailable) {
            info!(dir = %escape_path(&self.dir),
                "the spool folder can be listed again (recovered)");
            state = FolderState::Recovered;
        } else if self.folder.is_some() && folder.is_some() && folder != self.folder {
            warn!(dir = %escape_path(&self.dir),
                "the spool folder was replaced: its name leads to another folder now, which is \
                 watched and read from now on");
            state = FolderState::Replaced;
        }
        if folder.is_some() {
            self.folder = folder;
        }
        let mut ready = Vec::new();
        let mut waiting = HashMap::new();
        let mut reported = HashMap::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    warn!(dir = %escape_path(&self.dir), error = %e,
                        "the folder listing broke off; the rest is listed next time");
                    self.due = true;
                    break;
                }
            };
            let name = entry.file_name();
            if !self.filter.is_candidate(&name) {
                continue;
            }
            let path = entry.path();
            if busy(&path) {
                continue;
            }
            // The entry's type comes with the listing: no system call, and a FIFO is never
            // opened (opening one blocks until a writer comes). A symbolic link is never
            // followed: it may lead out of the folder (to a secret, or to an endless device),
            // and one that leads to a file in the folder would read that file twice.
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if !file_type.is_file() {
                self.report(&mut reported, path, entry.ino(), kind_of(&file_type));
                continue;
            }
            self.counts.stats += 1;
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Gone between the listing and the stat: nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => {
                    self.report(
                        &mut reported,
                        path,
                        entry.ino(),
                        "a file that cannot be looked at",
                    );
                    continue;
                }
            };
            if !meta.is_file() {
                // Replaced since the listing: looked at again next time.
                self.due = true;
                continue;
            }
            let shape = Shape::of(&meta);
            if self.skipped.contains(&(path.clone(), shape)) {
                continue;
            }
            if let Some(&until) = self.deferred.get(&path) {
                self.note_ready_at(until);
                continue;
            }
            let seen = match self.waiting.get(&path) {
                Some((s, since)) if *s == shape => *since,
                _ => Instant::now(),
            };
            let needed = self.needed_quiet(shape.len);
            let quiet = shape.quiet_for(seen);
            if quiet >= needed {
                ready.push(Candidate { path, shape, seen });
            } else {
                self.note_ready_at(Instant::now() + (needed - quiet));
                waiting.insert(path, (shape, seen));
            }
        }
        // Forget what left the folder.
        self.waiting = waiting;
        self.reported = reported;
        self.skipped.retain(|(p, _)| p.exists());
        match self.order {
            Order::Oldest => {
                ready.sort_by(|a, b| (a.shape.mtime, &a.path).cmp(&(b.shape.mtime, &b.path)))
            }
            Order::Youngest => ready.sort_by(|a, b| {
                b.shape
                    .mtime
                    .cmp(&a.shape.mtime)
                    .then_with(|| a.path.cmp(&b.path))
            }),
            Order::Name => ready.sort_by(|a, b| a.path.cmp(&b.path)),
        }
        self.queue = ready.into();
        state
    }

    /// Logs once that `path` is skipped because it is `what` (again if it becomes something
    /// else), and keeps it in `now` as seen by this listing.
    fn report(
        &mut self,
        now: &mut HashMap<PathBuf, (u64, &'static str)>,
        path: PathBuf,
        ino: u64,
        what: &'static str,
    ) {
        if self.reported.get(&path) != Some(&(ino, what)) {
            if what == "a folder" {
                info!(path = %escape_path(&path), reason = what,
                    "not a regular file; skipped (logged once)");
            } else {
                warn!(path = %escape_path(&path), reason = what,
                    "not a regular file; skipped (logged once)");
            }
        }
        now.insert(path, (ino, what));
    }

    /// The entries skipped because they are not regular files, and what each is.
    #[cfg(test)]
    pub fn reported(&self) -> Vec<(PathBuf, &'static str)> {
        let mut v: Vec<_> = self
            .reported
            .iter()
            .map(|(p, (_, w))| (p.clone(), *w))
            .collect();
        v.sort();
        v
    }
}

/// What a folder entry that is not a regular file is, for the log.
fn kind_of(t: &fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link (never followed)"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    fn cfg(dir: &Path) -> SpoolDirConfig {
        let mut c = SpoolDirConfig::for_dir(dir);
        c.ready_after = sluice_channels::units::HumanDuration(Duration::from_millis(500));
        c
    }

    /// Writes `name` with `content`, modified `age` ago.
    fn write_aged(dir: &Path, name: &str, content: &[u8], age: Duration) {
        let p = dir.join(name);
        fs::write(&p, content).unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    /// Takes every ready file as the source does, completing each with a rename.
    fn drain(spool: &mut Spool) -> Vec<String> {
        let mut taken = Vec::new();
        while let (Some(c), _) = spool.next(|_| false) {
            let mut done = c.path.clone().into_os_string();
            done.push(".COMPLETED");
            fs::rename(&c.path, done).unwrap();
            taken.push(c.path.file_name().unwrap().to_string_lossy().into_owned());
        }
        taken
    }

    #[test]
    fn many_files_cost_one_listing_and_one_stat_each() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3000;
        for i in 0..n {
            write_aged(
                dir.path(),
                &format!("f{i:05}.log"),
                b"x\n",
                Duration::from_secs(60),
            );
        }
        let mut spool = Spool::new(&cfg(dir.path()));
        let taken = drain(&mut spool);
        assert_eq!(taken.len(), n);
        let counts = spool.counts();
        // One listing that finds them all, and one that finds nothing left; never a listing
        // (nor a stat of every waiting file) per file taken.
        assert!(counts.listings <= 2, "{counts:?}");
        assert_eq!(counts.stats, n as u64, "{counts:?}");
    }

    #[test]
    fn files_come_in_the_configured_order() {
        for (order, want) in [
            (Order::Oldest, ["c.log", "a.log", "b.log"]),
            (Order::Youngest, ["b.log", "a.log", "c.log"]),
            (Order::Name, ["a.log", "b.log", "c.log"]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            write_aged(dir.path(), "b.log", b"x", Duration::from_secs(10));
            write_aged(dir.path(), "a.log", b"x", Duration::from_secs(20));
            write_aged(dir.path(), "c.log", b"x", Duration::from_secs(30));
            let mut c = cfg(dir.path());
            c.order = order;
            let mut spool = Spool::new(&c);
            assert_eq!(drain(&mut spool), want, "{order:?}");
        }
    }

    #[test]
    fn a_file_written_just_now_waits_until_it_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("fresh.log"), b"being written\n").unwrap();
        write_aged(dir.path(), "old.log", b"x\n", Duration::from_secs(60));
        let mut spool = Spool::new(&cfg(dir.path()));
        assert_eq!(drain(&mut spool), ["old.log"]);
        let at = spool.next_ready().expect("the fresh file waits");
        assert!(at > Instant::now() && at <= Instant::now() + Duration::from_millis(500));
        // It grows: still not ready, however often the folder is listed.
        fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("fresh.log"))
            .and_then(|mut f| io::Write::write_all(&mut f, b"more\n"))
            .unwrap();
        spool.mark_due();
        assert!(spool.next(|_| false).0.is_none());
        // Quiet now (its modification time is old enough): ready.
        let f = fs::File::options()
            .write(true)
            .open(dir.path().join("fresh.log"))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(2))
            .unwrap();
        spool.mark_due();
        assert_eq!(drain(&mut spool), ["fresh.log"]);
    }

    #[test]
    fn a_file_with_a_future_modification_time_is_ready_once_seen_unchanged_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        write_aged(dir.path(), "skewed.log", b"x\n", Duration::ZERO);
        let f = fs::File::options()
            .write(true)
            .open(dir.path().join("skewed.log"))
            .unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(3600))
            .unwrap();
        let mut c = cfg(dir.path());
        c.ready_after = sluice_channels::units::HumanDuration(Duration::from_millis(100));
        let mut spool = Spool::new(&c);
        assert!(spool.next(|_| false).0.is_none());
        let at = spool.next_ready().unwrap();
        while Instant::now() < at {
            std::thread::sleep(at - Instant::now());
        }
        assert_eq!(drain(&mut spool), ["skewed.log"]);
    }

    #[test]
    fn an_empty_file_waits_for_the_empty_grace() {
        let dir = tempfile::tempdir().unwrap();
        write_aged(dir.path(), "empty.log", b"", Duration::from_secs(60));
        let mut c = cfg(dir.path());
        let mut spool = Spool::new(&c);
        assert!(drain(&mut spool).is_empty(), "empty for 1 min < 5 min");
        c.empty_grace = sluice_channels::units::HumanDuration(Duration::from_secs(30));
        let mut spool = Spool::new(&c);
        assert_eq!(
            drain(&mut spool),
            ["empty.log"],
            "empty for longer than the grace"
        );
    }

    fn mkfifo(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn fifos_devices_folders_and_links_are_skipped_and_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        mkfifo(&d.join("pipe.log"));
        let elsewhere = tempfile::tempdir().unwrap();
        write_aged(
            elsewhere.path(),
            "secret.log",
            b"s\n",
            Duration::from_secs(60),
        );
        let links = [
            ("null.log", PathBuf::from("/dev/null")),
            ("dangling.log", d.join("nowhere")),
            ("to-pipe.log", d.join("pipe.log")),
            ("link-to-real.log", d.join("real.log")),
            ("outside.log", elsewhere.path().join("secret.log")),
        ];
        for (name, to) in &links {
            std::os::unix::fs::symlink(to, d.join(name)).unwrap();
        }
        let sock = std::os::unix::net::UnixListener::bind(d.join("sock.log")).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        write_aged(d, "real.log", b"x\n", Duration::from_secs(60));
        let mut spool = Spool::new(&cfg(d));
        assert_eq!(drain(&mut spool), ["real.log"]);
        let mut want: Vec<_> = links
            .iter()
            .map(|(name, _)| (d.join(name), "a symbolic link (never followed)"))
            .collect();
        want.extend([
            (d.join("pipe.log"), "a FIFO"),
            (d.join("sock.log"), "a socket"),
            (d.join("sub"), "a folder"),
        ]);
        want.sort();
        assert_eq!(spool.reported(), want);
        // Listed again: still skipped, and remembered (so not logged again).
        spool.mark_due();
        assert!(spool.next(|_| false).0.is_none());
        assert_eq!(spool.reported(), want);
        // A link whose target appears is still not followed.
        write_aged(d, "nowhere", b"y\n", Duration::from_secs(60));
        spool.mark_due();
        assert_eq!(drain(&mut spool), ["nowhere"]);
        drop(sock);
    }

    #[test]
    fn a_deleted_folder_is_one_episode_and_its_return_or_replacement_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        fs::create_dir(&spool_dir).unwrap();
        let mut c = cfg(&spool_dir);
        c.poll_interval = sluice_channels::units::HumanDuration(Duration::from_secs(3600));
        let mut spool = Spool::new(&c);
        assert_eq!(spool.next(|_| false).1, FolderState::Listed);
        fs::remove_dir(&spool_dir).unwrap();
        for _ in 0..5 {
            spool.mark_due();
            assert_eq!(spool.next(|_| false).1, FolderState::Unavailable);
            assert!(spool.unavailable);
        }
        // Nothing wakes the source while the folder is gone: it tries again within a second,
        // however long the poll interval.
        let retry = spool.wake_at().saturating_duration_since(Instant::now());
        assert!(retry <= UNAVAILABLE_RETRY, "{retry:?}");
        fs::create_dir(&spool_dir).unwrap();
        write_aged(&spool_dir, "a.log", b"x\n", Duration::from_secs(60));
        spool.mark_due();
        let (c, state) = spool.next(|_| false);
        assert_eq!(state, FolderState::Recovered);
        assert_eq!(c.unwrap().path, spool_dir.join("a.log"));
        spool.mark_due();
        assert_eq!(spool.next(|_| false).1, FolderState::Listed);
        // Deleted and made again between two listings, with the inode number the old one had
        // if the file system hands it out again: noticed where it records creation times.
        fs::remove_dir_all(&spool_dir).unwrap();
        fs::create_dir(&spool_dir).unwrap();
        spool.mark_due();
        let state = spool.next(|_| false).1;
        if fs::metadata(&spool_dir).unwrap().created().is_ok() {
            assert_eq!(state, FolderState::Replaced);
        } else {
            println!("no creation times here: a reused inode number is not noticed by listing");
        }
        // Replaced between two listings by a link to another folder: noticed.
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::rename(&spool_dir, dir.path().join("old")).unwrap();
        std::os::unix::fs::symlink(&other, &spool_dir).unwrap();
        spool.mark_due();
        assert_eq!(spool.next(|_| false).1, FolderState::Replaced);
        spool.mark_due();
        assert_eq!(spool.next(|_| false).1, FolderState::Listed);
    }

    #[test]
    fn busy_and_skipped_files_are_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        write_aged(dir.path(), "busy.log", b"x\n", Duration::from_secs(60));
        write_aged(dir.path(), "skip.log", b"x\n", Duration::from_secs(60));
        let mut spool = Spool::new(&cfg(dir.path()));
        let skip = dir.path().join("skip.log");
        spool.skip(&skip, Shape::of(&fs::metadata(&skip).unwrap()));
        let busy = dir.path().join("busy.log");
        assert!(spool.next(|p| p == busy).0.is_none());
        // A skipped file that changes is read again.
        write_aged(
            dir.path(),
            "skip.log",
            b"changed\n",
            Duration::from_secs(60),
        );
        spool.mark_due();
        assert_eq!(
            spool.next(|p| p == busy).0.unwrap().path,
            dir.path().join("skip.log")
        );
    }
}
