//! The syncer thread: forces what the writer wrote to disk as the fsync policy says, then
//! publishes it: segment lengths and origins for the reader, events for takers, and the put
//! watermark that resolves receipts.
//!
//! With `fsync: always`, every group written while the previous fsync ran shares the next
//! one (group commit), and the writer keeps writing meanwhile. A failed fsync is retried
//! after writing the group's bytes again, since the kernel may have dropped them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use tracing::error;

use super::config::FsyncPolicy;
use super::state::{Chunk, Pos, SegMeta};
use super::writer::{Stall, WriteError};
use super::{Shared, segment};
use crate::event::Origin;
use crate::fsutil;

/// The most bytes handed to the head directly, without reading them back from disk.
const RESIDENT_BYTES: usize = 2 << 20;
/// How many spare write buffers are kept for the writer.
const SPARE_BUFFERS: usize = 1;

/// A written stretch of one segment.
#[derive(Debug)]
pub struct Extent {
    /// The segment id.
    pub seg: u64,
    /// The segment file.
    pub file: Arc<File>,
    /// Where the stretch starts.
    pub start: u64,
    /// Where it ends.
    pub end: u64,
    /// Its bytes, kept with `fsync: always` to be written again if the fsync fails.
    pub bytes: Vec<u8>,
    /// Origins defined in it, in id order.
    pub new_origins: Vec<Arc<Origin>>,
    /// Its events, one chunk per record.
    pub chunks: Vec<Chunk>,
    /// How many events.
    pub events: usize,
    /// Their weight.
    pub weight: usize,
    /// The segment is finished after this stretch.
    pub seals: bool,
}

impl Extent {
    /// An empty stretch of segment `seg` at `start`.
    pub fn new(seg: u64, file: Arc<File>, start: u64) -> Self {
        Extent {
            seg,
            file,
            start,
            end: start,
            bytes: Vec::new(),
            new_origins: Vec::new(),
            chunks: Vec::new(),
            events: 0,
            weight: 0,
            seals: false,
        }
    }
}

/// What the writer wrote for one group of put batches.
#[derive(Debug)]
pub struct Group {
    /// The stretches written, in order.
    pub extents: Vec<Extent>,
    /// The put sequence number just past the group's last event.
    pub end_seq: u64,
}

/// True if the groups wrote the first records of a segment, whose directory entry must be
/// made durable too.
fn creates_segment(groups: &[Group]) -> bool {
    groups
        .iter()
        .flat_map(|g| &g.extents)
        .any(|e| e.start == segment::HEADER_LEN && e.end > e.start)
}

/// The syncer thread's state.
pub struct Syncer {
    shared: Arc<Shared>,
    stall: Stall,
    /// The file written since its last fsync (`fsync: interval`).
    dirty: Option<Arc<File>>,
    last_sync: Instant,
}

impl Syncer {
    /// A syncer for the channel behind `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Syncer {
            shared,
            stall: Stall::default(),
            dirty: None,
            last_sync: Instant::now(),
        }
    }

    fn policy(&self) -> FsyncPolicy {
        self.shared.limits.fsync
    }

    /// Runs until the writer is done and everything it wrote is handled.
    pub fn run(mut self) {
        while let Some(groups) = self.next_groups() {
            let synced = match self.policy() {
                FsyncPolicy::Always => self.sync_always(&groups),
                FsyncPolicy::Interval => {
                    self.sync_interval(&groups);
                    true
                }
                FsyncPolicy::Never => true,
            };
            if synced {
                self.publish(groups);
            }
        }
        if let Some(file) = self.dirty.take() {
            self.fsync(&file);
        }
    }

    /// Waits for written groups (running a due interval fsync meanwhile); `None` once the
    /// writer is done and nothing is left.
    fn next_groups(&mut self) -> Option<Vec<Group>> {
        let mut st = self.shared.lock();
        loop {
            if !st.written.is_empty() {
                let groups: Vec<Group> = st.written.drain(..).collect();
                st.written_bytes = 0;
                drop(st);
                self.shared.writer_cv.notify_one();
                return Some(groups);
            }
            if st.writer_done {
                return None;
            }
            let timeout = match &self.dirty {
                Some(_) => {
                    let due = self.last_sync + self.shared.limits.fsync_interval;
                    let now = Instant::now();
                    if now >= due {
                        drop(st);
                        if let Some(file) = self.dirty.take() {
                            self.fsync(&file);
                        }
                        st = self.shared.lock();
                        continue;
                    }
                    Some(due - now)
                }
                None => None,
            };
            st = super::Shared::wait_on(&self.shared.syncer_cv, st, timeout);
        }
    }

    /// One fsync for `fsync: interval`; a failure is logged and retried at the next interval.
    fn fsync(&mut self, file: &Arc<File>) {
        self.last_sync = Instant::now();
        self.shared.count(&self.shared.fsyncs, 1);
        if let Err(e) = file.sync_data() {
            error!(channel = %self.shared.name, error = %e,
                "cannot fsync the channel; retried at the next interval");
            self.dirty = Some(file.clone());
        }
    }

    fn sync_interval(&mut self, groups: &[Group]) {
        if creates_segment(groups) {
            self.sync_dir();
        }
        for ext in groups.iter().flat_map(|g| &g.extents) {
            if ext.seals {
                if self
                    .dirty
                    .as_ref()
                    .is_some_and(|d| Arc::ptr_eq(d, &ext.file))
                {
                    self.dirty = None;
                }
                self.fsync(&ext.file);
            } else if ext.end > ext.start {
                self.dirty = Some(ext.file.clone());
            }
        }
    }

    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        #[cfg(test)]
        self.shared.faults.check_sync()?;
        file.sync_data()
    }

    /// fsyncs every file the groups wrote to, writing their bytes again after a failure;
    /// false if abandoned because the channel is being dropped.
    fn sync_always(&mut self, groups: &[Group]) -> bool {
        let extents: Vec<&Extent> = groups.iter().flat_map(|g| &g.extents).collect();
        let mut files: Vec<&Arc<File>> = Vec::new();
        for e in &extents {
            if !files.iter().any(|f| Arc::ptr_eq(f, &e.file)) {
                files.push(&e.file);
            }
        }
        for file in files {
            loop {
                self.shared.count(&self.shared.fsyncs, 1);
                let Err(e) = self.sync_data(file) else { break };
                let e = WriteError::Io(e);
                if !self.stall.wait(&self.shared, &self.shared.syncer_cv, &e) {
                    return false;
                }
                for ext in extents.iter().filter(|x| Arc::ptr_eq(&x.file, file)) {
                    if let Err(e) = ext.file.write_all_at(&ext.bytes, ext.start) {
                        error!(channel = %self.shared.name, error = %e,
                            "cannot write the channel's segment again after a failed fsync");
                    }
                }
            }
        }
        if creates_segment(groups) {
            loop {
                self.shared.count(&self.shared.fsyncs, 1);
                let Err(e) = fsutil::sync_dir(&self.shared.dir) else {
                    break;
                };
                if !self
                    .stall
                    .wait(&self.shared, &self.shared.syncer_cv, &WriteError::Io(e))
                {
                    return false;
                }
            }
        }
        self.stall.end(&self.shared);
        true
    }

    /// One fsync of the directory for `fsync: interval`; a failure is logged.
    fn sync_dir(&mut self) {
        self.shared.count(&self.shared.fsyncs, 1);
        if let Err(e) = fsutil::sync_dir(&self.shared.dir) {
            error!(channel = %self.shared.name, error = %e, "cannot fsync the channel's directory");
        }
    }

    /// Makes the groups visible: segment lengths and origins for the reader, events for
    /// takers (directly when the reader has caught up), and the receipts' watermark.
    fn publish(&mut self, groups: Vec<Group>) {
        let end_seq = groups.last().map_or(0, |g| g.end_seq);
        let mut st = self.shared.lock();
        let mut direct = true;
        let mut to_reader = false;
        let mut published = 0;
        for ext in groups.into_iter().flat_map(|g| g.extents) {
            if st.buffers.len() < SPARE_BUFFERS && ext.bytes.capacity() > 0 {
                let mut spare = ext.bytes;
                spare.clear();
                st.buffers.push(spare);
            }
            let meta = st.segments.entry(ext.seg).or_insert_with(SegMeta::created);
            meta.origins.extend(ext.new_origins.into_iter().map(Some));
            meta.len = meta.len.max(ext.end);
            meta.sealed |= ext.seals;
            st.normalize();
            if ext.events == 0 {
                continue;
            }
            published += ext.events;
            let at = Pos {
                seg: ext.seg,
                off: ext.start,
                skip: 0,
            };
            if direct && st.cursor == at && st.head_bytes + ext.weight <= RESIDENT_BYTES {
                for c in ext.chunks {
                    st.push_head(c);
                }
                st.cursor = Pos {
                    seg: ext.seg,
                    off: ext.end,
                    skip: 0,
                };
            } else {
                direct = false;
                to_reader = true;
                st.undecoded_events += ext.events;
                st.undecoded_bytes += ext.weight;
            }
        }
        st.normalize();
        st.unpublished -= published.min(st.unpublished);
        drop(st);
        if to_reader {
            self.shared.reader_cv.notify_one();
        }
        self.shared.durable.send_if_modified(|v| {
            let later = end_seq > *v;
            if later {
                *v = end_seq;
            }
            later
        });
        self.shared.data.notify_waiters();
    }
}
