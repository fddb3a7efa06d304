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
    pub fn close_idle(&mut self, files: &mut Files, idle: Duration, source: &str) {
        for st in files.values_mut() {
            if st.is_idle() && st.last_growth.elapsed() >= idle {
                debug!(source = %source, file = %st.path.display(), "closing an idle file");
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
