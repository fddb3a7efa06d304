//! The files open at once, kept under `max_open_files`: readers open or lent to a read, and
//! handles the watcher opened that were not read yet. Idle files are closed to make room, and
//! after `idle_timeout`.

use std::fs::File;
use std::time::Duration;

use tracing::debug;

use super::files::{FileState, Files, Slot};
use super::reader::{Reader, Start};

/// How many files are open, against the most allowed.
pub(super) struct OpenSet {
    /// Readers open or lent.
    open: usize,
    /// Handles the watcher opened, not read yet (counted against `max` too).
    held: usize,
    max: usize,
}

impl OpenSet {
    /// No file open yet, at most `max` at once.
    pub fn new(max: usize) -> Self {
        OpenSet {
            open: 0,
            held: 0,
            max,
        }
    }

    /// Another handle may be kept open.
    pub fn has_room(&self) -> bool {
        self.open + self.held < self.max
    }

    /// As many readers are open as allowed: a closed file can be read only once another is
    /// closed.
    pub fn is_full(&self) -> bool {
        self.open >= self.max
    }

    /// Keeps `file`, the handle the watcher opened, as the closed file `st`'s, to read it
    /// through.
    pub fn hold(&mut self, st: &mut FileState, file: File) {
        st.reader = Slot::Held(file);
        self.held += 1;
    }

    /// Lends `st`'s reader (or what to open it with) to a read job: the reader if open,
    /// else where to open it and the handle held for it. `None` if it is lent already.
    pub fn lend(
        &mut self,
        st: &mut FileState,
    ) -> Option<(Option<Box<Reader>>, Start, Option<File>)> {
        match std::mem::replace(&mut st.reader, Slot::Lent) {
            Slot::Open(r) => Some((Some(r), Start::At(st.read_pos), None)),
            Slot::Closed => {
                self.open += 1;
                Some((None, st.start, None))
            }
            Slot::Held(file) => {
                self.open += 1;
                self.held -= 1;
                Some((None, st.start, Some(file)))
            }
            Slot::Lent => None,
        }
    }

    /// Takes back `st`'s reader after its job: open, or closed if the job left none.
    pub fn take_back(&mut self, st: &mut FileState, reader: Option<Box<Reader>>) {
        st.reader = match reader {
            Some(r) => Slot::Open(r),
            None => {
                self.open -= 1;
                Slot::Closed
            }
        };
    }

    /// Lets go of the handle of `st`, a file no longer followed.
    pub fn forget(&mut self, st: &FileState) {
        if matches!(st.reader, Slot::Held(_)) {
            self.held -= 1;
        }
    }

    /// Closes files that were not written for `idle`; they are opened again when they grow.
    pub fn close_idle(&mut self, files: &mut Files, idle: Duration) {
        for st in files.values_mut() {
            if st.is_idle() && st.last_growth.elapsed() >= idle {
                debug!(file = %st.path.display(), "closing an idle file");
                self.close(st);
            }
        }
    }

    /// Closes the least recently grown idle open file to make room; false if none can be.
    pub fn evict(&mut self, files: &mut Files) -> bool {
        let victim = files
            .iter()
            .filter(|(_, s)| s.is_idle())
            .min_by_key(|(_, s)| s.last_growth)
            .map(|(k, _)| k);
        match victim.and_then(|k| files.get_mut(k)) {
            Some(st) => {
                self.close(st);
                true
            }
            None => false,
        }
    }

    /// Closes `st`'s reader, if open; it is opened again where its last line handed out ends.
    fn close(&mut self, st: &mut FileState) {
        if matches!(st.reader, Slot::Open(_)) {
            st.reader = Slot::Closed;
            self.open -= 1;
        }
        st.read_end = st.read_pos;
        st.start = Start::At(st.read_pos);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Instant;

    use sluice_channels::Origin;

    use super::*;
    use crate::framing::{LongLinePolicy, Newline};
    use crate::pipeline::Key;
    use crate::taildir::config::Decoding;
    use crate::taildir::reader::{self, Job, Settings};
    use crate::taildir::resume::Begin;

    /// Follows a new file `name` in `dir` and reads it to its end through `open`: it is left
    /// open and idle.
    fn read_one(files: &mut Files, open: &mut OpenSet, dir: &Path, name: &str) -> Key {
        let path = dir.join(name);
        std::fs::write(&path, b"line\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let begin = Begin {
            start: Start::At(0),
            safe: 0,
            fp: None,
            rewrites: 0,
        };
        let base = Arc::new(Origin::default());
        let st = FileState::new(&path, (meta.dev(), meta.ino()), begin, base.clone());
        let key = files.add(st);
        let st = files.get_mut(key).unwrap();
        let (reader, start, held) = open.lend(st).unwrap();
        assert!(open.lend(st).is_none(), "lent once");
        let job = Job {
            key,
            generation: 0,
            reader,
            held,
            path,
            start,
            dev: meta.dev(),
            ino: meta.ino(),
            fp: None,
            origin: None,
            base,
            finish_at_eof: false,
        };
        let settings = Settings {
            batch_size: 10,
            max_line: 1 << 10,
            policy: LongLinePolicy::Split,
            decoding: Decoding {
                encoding: None,
                newline: Newline::Byte,
            },
            chunk: 1 << 10,
            budget: 1 << 20,
            interceptors: None,
            format: None,
            multiline: None,
        };
        let (mut done, _) = reader::run(&settings, vec![job]);
        let d = done.remove(0);
        open.take_back(st, d.reader);
        st.read_pos = d.read_pos;
        st.read_end = d.read_end;
        st.eof = true;
        key
    }

    fn is_closed_at(files: &Files, key: Key, at: u64) -> bool {
        let st = files.get(key).unwrap();
        matches!(st.reader, Slot::Closed) && st.start == Start::At(at) && st.read_end == at
    }

    #[test]
    fn eviction_closes_the_least_recently_grown_idle_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut files, mut open) = (Files::default(), OpenSet::new(4));
        let keys: Vec<Key> = ["recent", "older", "queued", "rotated"]
            .iter()
            .map(|n| read_one(&mut files, &mut open, dir.path(), n))
            .collect();
        let (recent, older, queued, rotated) = (keys[0], keys[1], keys[2], keys[3]);
        assert!(open.is_full() && !open.has_room());
        let t0 = Instant::now();
        let growth = [(recent, 3), (older, 2), (queued, 0), (rotated, 0)];
        for (key, secs) in growth {
            files.get_mut(key).unwrap().last_growth = t0 + Duration::from_secs(secs);
        }
        files.get_mut(queued).unwrap().queued = true;
        files.get_mut(rotated).unwrap().bound = false;

        assert!(open.evict(&mut files));
        assert!(is_closed_at(&files, older, 5));
        assert!(!open.is_full() && open.has_room());
        assert!(open.evict(&mut files));
        assert!(is_closed_at(&files, recent, 5));
        assert!(
            !open.evict(&mut files),
            "a queued file and a rotated one are not idle"
        );
        assert!(files.get(queued).unwrap().is_open() && files.get(rotated).unwrap().is_open());
    }

    #[test]
    fn idle_files_are_closed_after_idle_timeout_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut files, mut open) = (Files::default(), OpenSet::new(10));
        let idle = read_one(&mut files, &mut open, dir.path(), "idle");
        let queued = read_one(&mut files, &mut open, dir.path(), "queued");
        files.get_mut(queued).unwrap().queued = true;
        open.close_idle(&mut files, Duration::from_secs(3600));
        assert!(files.get(idle).unwrap().is_open(), "it grew just now");
        open.close_idle(&mut files, Duration::ZERO);
        assert!(is_closed_at(&files, idle, 5));
        assert!(files.get(queued).unwrap().is_open());
        assert_eq!(open.open, 1);
    }

    #[test]
    fn a_held_handle_counts_against_the_limit_until_read_or_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new");
        std::fs::write(&path, b"x\n").unwrap();
        let mut open = OpenSet::new(1);
        let begin = Begin {
            start: Start::At(0),
            safe: 0,
            fp: None,
            rewrites: 0,
        };
        let mut st = FileState::new(&path, (0, 0), begin, Arc::new(Origin::default()));
        open.hold(&mut st, File::open(&path).unwrap());
        assert!(!open.has_room() && !open.is_full());
        let (reader, start, held) = open.lend(&mut st).unwrap();
        assert!(reader.is_none() && held.is_some() && start == Start::At(0));
        assert!(open.is_full() && (open.open, open.held) == (1, 0));
        open.take_back(&mut st, None);
        assert!(open.has_room() && !st.is_open());

        open.hold(&mut st, File::open(&path).unwrap());
        open.forget(&st);
        assert!(open.has_room());
    }
}
