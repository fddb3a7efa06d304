//! The followed files, and the indexes that find one by its path or its identity, kept
//! consistent with each other in one place.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use sluice_channels::Origin;

use super::identity::Fingerprint;
use super::positions::Position;
use super::reader::{Reader, Start};
use super::resume::Begin;
use crate::pipeline::{Key, Progress};

/// A file's device and inode.
pub(super) type Id = (u64, u64);

/// How many files let go are remembered, in case one comes back under a followed name.
const LET_GO_KEPT: usize = 1024;

/// Whether a file's reader is with the source, lent to a blocking read, or closed.
pub(super) enum Slot {
    /// No handle: opened at `start` when it is read next.
    Closed,
    /// A handle the watcher opened when the file appeared, not read yet.
    Held(std::fs::File),
    /// An open reader, with the source.
    Open(Box<Reader>),
    /// The reader (or the file to open) is with a read job.
    Lent,
}

/// One followed file.
pub(super) struct FileState {
    /// The path it was matched under; its events keep this path for their whole life.
    pub path: PathBuf,
    /// Where to open it (the target, when `path` is a symbolic link).
    pub open_path: PathBuf,
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// When it was created, where the file system records it: tells the file from a new
    /// one given its inode number after it was deleted.
    pub born: Option<SystemTime>,
    /// The fingerprint of its first line, once taken.
    pub fp: Option<Fingerprint>,
    /// Bumped each time it is read again from its start (truncated or replaced).
    pub generation: u32,
    /// Its events' origin without the `fid` header.
    pub base: Arc<Origin>,
    /// Its events' origin, once its fingerprint is taken.
    pub origin: Option<Arc<Origin>>,
    /// Its handle.
    pub reader: Slot,
    /// Where it is opened next time (while closed).
    pub start: Start,
    /// The offset just past the last line handed out.
    pub read_pos: u64,
    /// How far it was read (`read_pos` plus an unterminated tail).
    pub read_end: u64,
    /// Receipts of lines handed out, and the offset before which every line is safe.
    pub progress: Progress,
    /// Its path still leads to it.
    pub bound: bool,
    /// It waits in the read queue.
    pub queued: bool,
    /// The last read reached its end.
    pub eof: bool,
    /// When a read last found new bytes (or when it was found).
    pub last_growth: Instant,
    /// Since when it has been read to its end without growing: `rotate_wait` counts from here.
    pub at_end_since: Option<Instant>,
    /// Read to its end after rotation, or gone: removed once its receipts are safe.
    pub retiring: bool,
    /// The number of the last scan that found it at its path.
    pub seen: u64,
}

impl FileState {
    /// A file found at `path` with device and inode `id`, closed, to be read as `begin`
    /// says; its events carry `base` until its fingerprint is taken.
    pub fn new(path: &Path, (dev, ino): Id, begin: Begin, base: Arc<Origin>) -> Self {
        let read = match begin.start {
            Start::At(o) => o,
            Start::End => 0,
        };
        FileState {
            path: path.to_path_buf(),
            open_path: path.to_path_buf(),
            dev,
            ino,
            born: None,
            fp: begin.fp,
            generation: begin.rewrites,
            base,
            origin: None,
            reader: Slot::Closed,
            start: begin.start,
            read_pos: read,
            read_end: read,
            progress: Progress::at(begin.safe),
            bound: true,
            queued: false,
            eof: false,
            last_growth: Instant::now(),
            at_end_since: None,
            retiring: false,
            seen: 0,
        }
    }

    /// It holds a handle: a reader, lent or not, or one the watcher opened.
    pub fn is_open(&self) -> bool {
        !matches!(self.reader, Slot::Closed)
    }

    /// It may be closed without losing anything: open at its path, read to its end, and not
    /// waiting for a read.
    pub fn is_idle(&self) -> bool {
        self.bound && self.eof && !self.queued && matches!(self.reader, Slot::Open(_))
    }

    /// Its entry in the position file, under the path its events carry (the one it was
    /// first matched under, whatever it was renamed to since).
    pub fn position(&self) -> Position {
        Position {
            path: self.base.path.clone(),
            dev: self.dev,
            ino: self.ino,
            fp: self.fp,
            offset: self.progress.safe(),
            rewrites: self.generation,
        }
    }
}

/// The followed files by key, and which file each path and each identity leads to.
///
/// A file is found by its identity from the moment it is added until it is removed; by a
/// path while the last scan found it there (its matched path, and a symbolic link's target).
#[derive(Default)]
pub(super) struct Files {
    files: HashMap<Key, FileState>,
    by_path: HashMap<PathBuf, Key>,
    /// Matched paths and the device and inode they led to at the last scan, for the next one.
    inodes: Arc<HashMap<PathBuf, Id>>,
    by_inode: HashMap<Id, Key>,
    /// The positions of the files let go and forgotten, with their birth times and the
    /// number of their removal.
    let_go: HashMap<Id, (Position, SystemTime, u64)>,
    /// The files let go in the order they were, by identity and number of removal (some no
    /// longer in `let_go`).
    let_go_order: VecDeque<(Id, u64)>,
    /// How many files were removed so far: the number of the last removal.
    removals: u64,
    next_key: Key,
}

impl Files {
    /// Follows `st` under a new key, found by its identity from now on.
    pub fn add(&mut self, st: FileState) -> Key {
        let key = self.next_key;
        self.next_key += 1;
        self.let_go.remove(&(st.dev, st.ino));
        self.by_inode.insert((st.dev, st.ino), key);
        self.files.insert(key, st);
        key
    }

    /// The number of files followed.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The file `key`.
    pub fn get(&self, key: Key) -> Option<&FileState> {
        self.files.get(&key)
    }

    /// The file `key`, to change anything but its path and identity.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut FileState> {
        self.files.get_mut(&key)
    }

    /// Every file and its key.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &FileState)> {
        self.files.iter().map(|(k, s)| (*k, s))
    }

    /// Every file, to change anything but its path and identity.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut FileState> {
        self.files.values_mut()
    }

    /// The file `path` leads to, as the last scan found it.
    pub fn by_path(&self, path: &Path) -> Option<Key> {
        self.by_path.get(path).copied()
    }

    /// The file with device and inode `id`.
    pub fn by_inode(&self, id: Id) -> Option<Key> {
        self.by_inode.get(&id).copied()
    }

    /// The file with device and inode `id` born at `born` (as far as known), unless it is
    /// a file let go and closed: that one is never read again and its inode number may
    /// already belong to a new file (the file system hands a number out again once the last
    /// handle on a deleted file is closed), so it stops owning the number and `None` says
    /// that a file found with it is new. Where both birth times are known and equal, it is
    /// the same file come back (renamed away and back, or linked again): it is followed
    /// again from where it was read, not let go.
    pub fn by_inode_in_use(&mut self, id: Id, born: Option<SystemTime>) -> Option<Key> {
        let key = self.by_inode(id)?;
        let st = self.files.get_mut(&key)?;
        if st.retiring && !st.is_open() {
            if born.is_some() && st.born == born {
                st.retiring = false;
                st.eof = false;
                st.at_end_since = None;
                return Some(key);
            }
            self.by_inode.remove(&id);
            return None;
        }
        Some(key)
    }

    /// The position of a file let go and forgotten that has device and inode `id` and was
    /// born at `born`: the same file, come back under a followed name, to be read on from
    /// there. A file with other or unknown birth times is another file (or cannot be told
    /// from one) and gets `None`; either way `id` is forgotten.
    pub fn take_let_go(&mut self, id: Id, born: Option<SystemTime>) -> Option<Position> {
        let (p, was_born, _) = self.let_go.remove(&id)?;
        (born == Some(was_born)).then_some(p)
    }

    /// The matched paths and the identities they led to at the last scan.
    pub fn known(&self) -> Arc<HashMap<PathBuf, Id>> {
        self.inodes.clone()
    }

    /// Records that a scan found file `key` (device and inode `id`) at `path`, opened
    /// through `target` when `path` is a symbolic link: both lead to it from now on, and the
    /// paths it had before no longer do. Returns the file.
    pub fn bind(
        &mut self,
        key: Key,
        path: PathBuf,
        target: Option<PathBuf>,
        id: Id,
    ) -> Option<&mut FileState> {
        let st = self.files.get_mut(&key)?;
        let inodes = Arc::make_mut(&mut self.inodes);
        if st.path != path {
            unmap(&mut self.by_path, inodes, &st.path, key);
            st.path = path.clone();
        }
        let open_path = target.as_ref().unwrap_or(&path);
        if st.open_path != *open_path {
            unmap(&mut self.by_path, inodes, &st.open_path, key);
            st.open_path = open_path.clone();
        }
        inodes.insert(path.clone(), id);
        if let Some(t) = target {
            self.by_path.insert(t, key);
        }
        self.by_path.insert(path, key);
        Some(st)
    }

    /// Marks the files the scan number `scan_no` did not find at their path as unbound
    /// (their paths no longer lead to them); returns their keys. Files being retired are
    /// left as they are.
    pub fn unbind_unseen(&mut self, scan_no: u64) -> Vec<Key> {
        let inodes = Arc::make_mut(&mut self.inodes);
        let mut unbound = Vec::new();
        for (key, st) in &mut self.files {
            if !st.bound || st.seen == scan_no || st.retiring {
                continue;
            }
            st.bound = false;
            unmap(&mut self.by_path, inodes, &st.path, *key);
            unmap(&mut self.by_path, inodes, &st.open_path, *key);
            unbound.push(*key);
        }
        unbound
    }

    /// Stops following file `key`: no path or identity leads to it any more. Returns it.
    /// Its position is remembered (the last [`LET_GO_KEPT`] files) if its birth time is
    /// known and no other file took its inode number, for [`Files::take_let_go`].
    pub fn remove(&mut self, key: Key) -> Option<FileState> {
        let st = self.files.remove(&key)?;
        let id = (st.dev, st.ino);
        if self.by_inode.get(&id) == Some(&key) {
            self.by_inode.remove(&id);
            if let Some(born) = st.born {
                self.remember_let_go(id, st.position(), born);
            }
        }
        let inodes = Arc::make_mut(&mut self.inodes);
        unmap(&mut self.by_path, inodes, &st.path, key);
        unmap(&mut self.by_path, inodes, &st.open_path, key);
        Some(st)
    }

    /// Remembers the position `p` of the file `id` born at `born`, removed now, forgetting
    /// the oldest past [`LET_GO_KEPT`].
    fn remember_let_go(&mut self, id: Id, p: Position, born: SystemTime) {
        self.removals += 1;
        let n = self.removals;
        self.let_go.insert(id, (p, born, n));
        self.let_go_order.push_back((id, n));
        while self.let_go.len() > LET_GO_KEPT {
            let Some((old, m)) = self.let_go_order.pop_front() else {
                break;
            };
            if self.let_go.get(&old).is_some_and(|e| e.2 == m) {
                self.let_go.remove(&old);
            }
        }
        if self.let_go_order.len() > 2 * LET_GO_KEPT {
            let let_go = &self.let_go;
            self.let_go_order
                .retain(|(id, m)| let_go.get(id).is_some_and(|e| e.2 == *m));
        }
    }

    /// The position of every file, for the position file.
    ///
    /// A file let go whose inode number a new file took is left out: it is gone from disk,
    /// and the restart must find the new file's position under that number, not its.
    pub fn positions(&self) -> Vec<Position> {
        self.files
            .iter()
            .filter(|(key, st)| self.by_inode.get(&(st.dev, st.ino)) == Some(*key))
            .map(|(_, st)| st.position())
            .collect()
    }
}

/// Removes `path` from the maps if it leads to `key`.
fn unmap(
    by_path: &mut HashMap<PathBuf, Key>,
    inodes: &mut HashMap<PathBuf, Id>,
    path: &Path,
    key: Key,
) {
    if by_path.get(path) == Some(&key) {
        by_path.remove(path);
        inodes.remove(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(path: &str, id: Id) -> FileState {
        let begin = Begin {
            start: Start::At(0),
            safe: 0,
            fp: None,
            rewrites: 0,
        };
        let origin = Origin::for_file("r1", Path::new(path), "h", Vec::new());
        FileState::new(Path::new(path), id, begin, Arc::new(origin))
    }

    fn known(files: &Files) -> Vec<(PathBuf, Id)> {
        let mut v: Vec<_> = files.known().iter().map(|(p, i)| (p.clone(), *i)).collect();
        v.sort();
        v
    }

    #[test]
    fn the_indexes_follow_a_file_through_a_rename_a_link_and_its_removal() {
        let mut files = Files::default();
        let a = files.add(found("/logs/a", (1, 10)));
        assert_eq!(files.by_inode((1, 10)), Some(a));
        assert_eq!(
            files.by_path(Path::new("/logs/a")),
            None,
            "until a scan finds it"
        );

        files.bind(a, "/logs/a".into(), None, (1, 10));
        assert_eq!(files.by_path(Path::new("/logs/a")), Some(a));
        assert_eq!(known(&files), [("/logs/a".into(), (1, 10))]);

        let st = files.bind(a, "/logs/a.1".into(), None, (1, 10)).unwrap();
        assert_eq!(st.path, Path::new("/logs/a.1"));
        assert_eq!(files.by_path(Path::new("/logs/a")), None);
        assert_eq!(files.by_path(Path::new("/logs/a.1")), Some(a));
        assert_eq!(known(&files), [("/logs/a.1".into(), (1, 10))]);

        let target = PathBuf::from("/data/a");
        let st = files
            .bind(a, "/logs/link".into(), Some(target.clone()), (1, 10))
            .unwrap();
        assert_eq!(
            (st.path.as_path(), st.open_path.as_path()),
            (Path::new("/logs/link"), target.as_path())
        );
        assert_eq!(files.by_path(&target), Some(a));
        assert_eq!(files.by_path(Path::new("/logs/link")), Some(a));
        assert_eq!(
            known(&files),
            [("/logs/link".into(), (1, 10))],
            "targets are not listed"
        );

        files.get_mut(a).unwrap().seen = 1;
        assert!(files.unbind_unseen(1).is_empty(), "found by this scan");
        assert_eq!(files.unbind_unseen(2), [a]);
        assert!(!files.get(a).unwrap().bound);
        assert_eq!(files.by_path(Path::new("/logs/link")), None);
        assert_eq!(files.by_path(&target), None);
        assert!(known(&files).is_empty());
        assert_eq!(
            files.by_inode((1, 10)),
            Some(a),
            "still found by its identity"
        );
        assert!(files.unbind_unseen(3).is_empty(), "unbound once");

        assert_eq!(files.positions().len(), 1);
        assert!(files.remove(a).is_some());
        assert_eq!((files.len(), files.by_inode((1, 10))), (0, None));
        assert!(files.positions().is_empty());
    }

    #[test]
    fn a_file_let_go_and_closed_gives_up_its_inode_number_to_a_new_file() {
        let mut files = Files::default();
        let old = files.add(found("/logs/deleted", (1, 10)));
        assert_eq!(files.by_inode_in_use((1, 10), None), Some(old), "in use");
        files.get_mut(old).unwrap().retiring = true;
        files.get_mut(old).unwrap().reader = Slot::Held(std::fs::File::open("/dev/null").unwrap());
        assert_eq!(
            files.by_inode_in_use((1, 10), None),
            Some(old),
            "let go but still open: nobody else can have its inode number"
        );
        files.get_mut(old).unwrap().reader = Slot::Closed;
        assert_eq!(
            files.by_inode_in_use((1, 10), None),
            None,
            "closed: a new file"
        );
        let new = files.add(found("/logs/app", (1, 10)));
        assert_eq!(files.by_inode_in_use((1, 10), None), Some(new));
        // Only the new file's position is written: a restart finds it under that number.
        let saved = files.positions();
        assert_eq!(saved.len(), 1);
        assert_eq!((saved[0].path.as_str(), saved[0].ino), ("/logs/app", 10));
        // The old one's receipts become safe: it goes, the new one keeps the number.
        assert!(files.remove(old).is_some());
        assert_eq!(files.by_inode((1, 10)), Some(new));
        assert_eq!(files.positions().len(), 1);
    }

    #[test]
    fn a_file_let_go_that_comes_back_with_its_birth_time_is_followed_again() {
        let born = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let other = born + std::time::Duration::from_nanos(1);
        let mut files = Files::default();
        let mut st = found("/logs/app", (1, 10));
        st.born = Some(born);
        let key = files.add(st);
        let st = files.get_mut(key).unwrap();
        (st.retiring, st.eof, st.read_pos) = (true, true, 40);
        assert_eq!(
            files.by_inode_in_use((1, 10), Some(born)),
            Some(key),
            "same inode, same birth time: the same file"
        );
        let st = files.get(key).unwrap();
        assert!(!st.retiring && !st.eof && st.read_pos == 40, "followed on");

        files.get_mut(key).unwrap().retiring = true;
        assert_eq!(
            files.by_inode_in_use((1, 10), None),
            None,
            "a birth time not known: cannot be told from a new file"
        );
        assert!(files.get(key).unwrap().retiring);
        let mut st = found("/logs/app", (1, 11));
        st.born = Some(born);
        let key = files.add(st);
        files.get_mut(key).unwrap().retiring = true;
        assert_eq!(
            files.by_inode_in_use((1, 11), Some(other)),
            None,
            "a new file"
        );
    }

    #[test]
    fn a_file_let_go_and_forgotten_is_remembered_for_when_it_comes_back() {
        let born = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut files = Files::default();
        let mut st = found("/logs/app", (1, 10));
        st.born = Some(born);
        st.progress = crate::pipeline::Progress::at(40);
        let key = files.add(st);
        files.remove(key);
        assert_eq!(files.take_let_go((1, 10), None), None, "no birth time");
        assert_eq!(files.take_let_go((1, 10), Some(born)), None, "taken once");

        let mut st = found("/logs/app", (1, 10));
        st.born = Some(born);
        st.progress = crate::pipeline::Progress::at(40);
        let key = files.add(st);
        files.remove(key);
        let p = files.take_let_go((1, 10), Some(born)).expect("remembered");
        assert_eq!((p.path.as_str(), p.offset), ("/logs/app", 40));

        // Another file with that inode number is followed: the old one is gone for good.
        let key = files.add(found("/logs/app", (1, 10)));
        files.get_mut(key).unwrap().born = Some(born);
        files.remove(key);
        files.add(found("/logs/new", (1, 10)));
        assert_eq!(files.take_let_go((1, 10), Some(born)), None);

        // A file without a birth time is not remembered; only the last LET_GO_KEPT are.
        let key = files.add(found("/logs/old", (1, 12)));
        files.remove(key);
        assert_eq!(files.take_let_go((1, 12), Some(born)), None);
        for ino in 100..100 + 2 * LET_GO_KEPT as u64 + 10 {
            let key = files.add(found("/logs/many", (1, ino)));
            files.get_mut(key).unwrap().born = Some(born);
            files.remove(key);
        }
        assert_eq!(files.let_go.len(), LET_GO_KEPT);
        assert!(files.let_go_order.len() <= 2 * LET_GO_KEPT + 1);
        assert!(
            files.take_let_go((1, 100), Some(born)).is_none(),
            "the oldest went"
        );
        let newest = 100 + 2 * LET_GO_KEPT as u64 + 9;
        assert!(files.take_let_go((1, newest), Some(born)).is_some());
    }

    #[test]
    fn a_path_or_an_identity_another_file_took_over_stays_with_it() {
        let mut files = Files::default();
        let old = files.add(found("/logs/app", (1, 10)));
        files.bind(old, "/logs/app".into(), None, (1, 10));
        // Rotation: the new file is listed at the name first, the old one at its new name.
        let new = files.add(found("/logs/app", (1, 11)));
        files.bind(new, "/logs/app".into(), None, (1, 11));
        files.bind(old, "/logs/app.1".into(), None, (1, 10));
        assert_eq!(files.by_path(Path::new("/logs/app")), Some(new));
        assert_eq!(
            known(&files),
            [
                ("/logs/app".into(), (1, 11)),
                ("/logs/app.1".into(), (1, 10))
            ]
        );
        // The old file's inode is reused by a third file while the old one is retired.
        let reuse = files.add(found("/logs/other", (1, 10)));
        files.remove(old);
        assert_eq!(files.by_path(Path::new("/logs/app")), Some(new));
        assert_eq!(files.by_path(Path::new("/logs/app.1")), None);
        assert_eq!(files.by_inode((1, 10)), Some(reuse));
        assert_eq!(known(&files), [("/logs/app".into(), (1, 11))]);

        let mut retiring = found("/logs/gone", (1, 12));
        retiring.retiring = true;
        let gone = files.add(retiring);
        assert!(
            !files.unbind_unseen(5).contains(&gone),
            "a file being retired is left as it is"
        );
    }
}
