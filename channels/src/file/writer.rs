//! The writer thread: encodes put batches into records, appends them to the active segment,
//! rolls to a new segment at the size cap, and waits out a full or failing disk. It hands
//! what it wrote to the syncer thread, which forces it to disk and publishes it, so that the
//! next group is encoded and written while the previous one is being fsynced.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::config::FsyncPolicy;
use super::record;
use super::state::{Chunk, Pending};
use super::syncer::{Extent, Group};
use super::{Shared, disk, segment};
use crate::event::{Event, Origin};

/// The most payload bytes put in one record; a larger batch is split over several.
const RECORD_TARGET: usize = 1 << 20;
/// How long a failed write waits before it is tried again.
pub const RETRY: Duration = Duration::from_millis(500);
/// The most bytes written and waiting for the syncer before the writer waits.
const MAX_UNSYNCED: usize = 1 << 20;

/// The segment being appended to.
struct Active {
    id: u64,
    file: Arc<File>,
    /// Bytes written to it.
    len: u64,
    /// True once a record is written or encoded into it.
    has_records: bool,
    /// Origin ids in this segment, by the address of the origin (kept alive in `kept`).
    ids: HashMap<usize, u32>,
    last: Option<(usize, u32)>,
    kept: Vec<Arc<Origin>>,
}

impl Active {
    fn id_of(&mut self, origin: &Arc<Origin>) -> Option<u32> {
        let key = Arc::as_ptr(origin) as usize;
        if let Some((k, id)) = self.last
            && k == key
        {
            return Some(id);
        }
        let id = *self.ids.get(&key)?;
        self.last = Some((key, id));
        Some(id)
    }

    fn intern(&mut self, origin: &Arc<Origin>) -> u32 {
        let id = self.kept.len() as u32;
        self.ids.insert(Arc::as_ptr(origin) as usize, id);
        self.kept.push(origin.clone());
        id
    }
}

/// Why a write did not happen.
pub enum WriteError {
    /// Less free space than `min_free_space`.
    LowSpace(u64),
    /// The write, the fsync or the segment creation failed.
    Io(io::Error),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// An episode of waiting for the disk, logged once at its start and once at its end.
#[derive(Default)]
pub struct Stall {
    since: Option<Instant>,
}

impl Stall {
    /// Logs the start of an episode (once) and waits before the next attempt; false if the
    /// channel is being dropped.
    pub fn wait(&mut self, shared: &Shared, cv: &Condvar, e: &WriteError) -> bool {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            let (name, dir) = (&shared.name, shared.dir.display());
            let min_free_space = shared.limits.min_free_space;
            match e {
                WriteError::LowSpace(free) => warn!(channel = %name, dir = %dir, free_bytes = free,
                    min_free_space,
                    "free disk space is below min_free_space; puts wait until space returns"),
                WriteError::Io(e) if disk::is_no_space(e) => warn!(channel = %name, dir = %dir,
                    error = %e, "the disk is full; puts wait until space returns"),
                WriteError::Io(e) => error!(channel = %name, dir = %dir, error = %e,
                    "cannot write to the channel; puts wait and the write is retried"),
            }
            shared.count(&shared.stall_episodes, 1);
            shared.lock().stalled = true;
        }
        let deadline = Instant::now() + RETRY;
        let mut st = shared.lock();
        loop {
            if st.stopping {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            st = Shared::wait_on(cv, st, Some(deadline - now));
        }
    }

    /// Ends the episode, if one is going on.
    pub fn end(&mut self, shared: &Shared) {
        if let Some(since) = self.since.take() {
            info!(channel = %shared.name, stalled_ms = since.elapsed().as_millis() as u64,
                "the channel's disk is writable again; writes resumed");
            shared.lock().stalled = false;
        }
    }
}

/// The writer thread's state.
pub struct Writer {
    shared: Arc<Shared>,
    active: Option<Active>,
    next_id: u64,
    buf: Vec<u8>,
    /// Extents written in this group.
    done: Vec<Extent>,
    /// The extent being encoded into `buf` (with the active segment).
    cur: Option<Extent>,
    stall: Stall,
}

impl Writer {
    /// A writer that creates its first segment with id `next_id`.
    pub fn new(shared: Arc<Shared>, next_id: u64) -> Self {
        Writer {
            shared,
            active: None,
            next_id,
            buf: Vec::with_capacity(256 << 10),
            done: Vec::new(),
            cur: None,
            stall: Stall::default(),
        }
    }

    /// Runs until the channel is dropped, then tells the syncer it is done.
    pub fn run(mut self) {
        while let Some((group, end_seq)) = self.next_group() {
            if !self.write_group(group) {
                break;
            }
            self.hand_off(end_seq);
        }
        self.shared.lock().writer_done = true;
        self.shared.syncer_cv.notify_one();
    }

    /// Waits for pending batches; `None` once stopping with none left.
    fn next_group(&mut self) -> Option<(Vec<Pending>, u64)> {
        let mut st = self.shared.lock();
        loop {
            if !st.pending.is_empty() {
                let group = std::mem::take(&mut st.pending);
                st.pending_bytes = 0;
                let end = st.put_seq;
                drop(st);
                self.shared.space.notify_waiters();
                return Some((group, end));
            }
            if st.stopping {
                return None;
            }
            st = Shared::wait_on(&self.shared.writer_cv, st, None);
        }
    }

    /// Encodes and writes a group of batches; false if it was abandoned because the channel
    /// is being dropped.
    fn write_group(&mut self, group: Vec<Pending>) -> bool {
        for p in group {
            let mut events = p.events;
            while !events.is_empty() {
                let n = piece_len(&events);
                let piece = if n == events.len() {
                    std::mem::take(&mut events)
                } else {
                    let rest = events.split_off(n);
                    std::mem::replace(&mut events, rest)
                };
                if !self.add_piece(piece) {
                    return false;
                }
            }
        }
        self.flush()
    }

    /// Hands the group's extents to the syncer, waiting while it is far behind.
    fn hand_off(&mut self, end_seq: u64) {
        let extents = std::mem::take(&mut self.done);
        let bytes: usize = extents.iter().map(|e| (e.end - e.start) as usize).sum();
        let mut st = self.shared.lock();
        while st.written_bytes >= MAX_UNSYNCED && !st.stopping {
            st = Shared::wait_on(&self.shared.writer_cv, st, None);
        }
        st.written_bytes += bytes;
        st.written.push_back(Group { extents, end_seq });
        drop(st);
        self.shared.syncer_cv.notify_one();
    }

    /// Encodes one record's worth of events (and the origins it introduces) into the buffer,
    /// first rolling to a new segment if they would not fit.
    fn add_piece(&mut self, piece: Vec<Event>) -> bool {
        let body: usize = piece.iter().map(Event::weight).sum();
        let encoded: usize = piece.iter().map(record::event_bound).sum();
        loop {
            if self.active.is_none() && !self.open_segment() {
                return false;
            }
            let (Some(active), Some(cur)) = (self.active.as_mut(), self.cur.as_mut()) else {
                return false;
            };
            let mut new: Vec<Arc<Origin>> = Vec::new();
            for e in &piece {
                if active.id_of(&e.origin).is_none()
                    && !new.iter().any(|o| Arc::ptr_eq(o, &e.origin))
                {
                    new.push(e.origin.clone());
                }
            }
            let bound = record::HEADER_LEN
                + 20
                + encoded
                + new
                    .iter()
                    .map(|o| record::origin_record_bound(o))
                    .sum::<usize>();
            let used = active.len + self.buf.len() as u64;
            if active.has_records && used + bound as u64 > self.shared.limits.segment_size {
                if !self.roll() {
                    return false;
                }
                continue;
            }
            for o in new {
                let id = active.intern(&o);
                record::encode_origin(&mut self.buf, id, &o);
                cur.new_origins.push(o);
            }
            let off = active.len + self.buf.len() as u64;
            record::encode_events(&mut self.buf, &piece, |o| active.id_of(o).unwrap_or(0));
            active.has_records = true;
            cur.events += piece.len();
            cur.weight += body;
            cur.chunks.push(Chunk {
                first_seq: 0,
                events: piece,
                bytes: body,
                seg: active.id,
                off,
                first_idx: 0,
            });
            return true;
        }
    }

    /// Writes the buffer to the active segment, retrying until it succeeds, and closes the
    /// current extent; false if abandoned because the channel is being dropped.
    fn flush(&mut self) -> bool {
        if self.active.is_none() {
            return true;
        }
        if !self.buf.is_empty() {
            loop {
                match self.try_write() {
                    Ok(()) => break,
                    Err(e) => {
                        if !self.stall.wait(&self.shared, &self.shared.writer_cv, &e) {
                            return false;
                        }
                    }
                }
            }
            self.stall.end(&self.shared);
        }
        let Some(active) = self.active.as_mut() else {
            return true;
        };
        active.len += self.buf.len() as u64;
        let next = Extent::new(active.id, active.file.clone(), active.len);
        let Some(mut ext) = self.cur.replace(next) else {
            return true;
        };
        ext.end = active.len;
        if self.shared.limits.fsync == FsyncPolicy::Always {
            // Kept until fsynced, to write again if the fsync fails.
            let spare = self.shared.lock().buffers.pop().unwrap_or_default();
            ext.bytes = std::mem::replace(&mut self.buf, spare);
        }
        self.buf.clear();
        if ext.events > 0 || !ext.new_origins.is_empty() {
            self.done.push(ext);
        }
        true
    }

    fn try_write(&mut self) -> Result<(), WriteError> {
        let Some(active) = self.active.as_ref() else {
            return Ok(());
        };
        #[cfg(test)]
        self.shared.faults.check_write()?;
        let min_free = self.shared.limits.min_free_space;
        if min_free > 0 {
            let free = self.shared.free_space();
            if free < min_free.saturating_add(self.buf.len() as u64) {
                return Err(WriteError::LowSpace(free));
            }
        }
        active.file.write_all_at(&self.buf, active.len)?;
        self.shared
            .count(&self.shared.bytes_written, self.buf.len() as u64);
        Ok(())
    }

    /// Finishes the active segment and starts the next one.
    fn roll(&mut self) -> bool {
        if !self.flush() {
            return false;
        }
        if let Some(a) = self.active.take() {
            let mut seal = Extent::new(a.id, a.file, a.len);
            seal.seals = true;
            self.done.push(seal);
        }
        self.cur = None;
        self.open_segment()
    }

    fn open_segment(&mut self) -> bool {
        let id = self.next_id;
        let file = loop {
            match self.try_create(id) {
                Ok(f) => break Arc::new(f),
                Err(e) => {
                    let e = WriteError::Io(e);
                    if !self.stall.wait(&self.shared, &self.shared.writer_cv, &e) {
                        return false;
                    }
                }
            }
        };
        self.stall.end(&self.shared);
        self.next_id += 1;
        self.cur = Some(Extent::new(id, file.clone(), segment::HEADER_LEN));
        self.active = Some(Active {
            id,
            file,
            len: segment::HEADER_LEN,
            has_records: false,
            ids: HashMap::new(),
            last: None,
            kept: Vec::new(),
        });
        true
    }

    fn try_create(&self, id: u64) -> io::Result<File> {
        #[cfg(test)]
        self.shared.faults.check_write()?;
        let dir = &self.shared.dir;
        let path = segment::path(dir, id);
        // A file of this id can only be left by an earlier attempt that failed.
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = segment::create(dir, id)?;
        self.shared
            .count(&self.shared.bytes_written, segment::HEADER_LEN);
        Ok(file)
    }
}

/// How many of the first events of `events` go in one record.
fn piece_len(events: &[Event]) -> usize {
    let mut size = 0;
    for (i, e) in events.iter().enumerate() {
        size += record::event_bound(e);
        if size > RECORD_TARGET && i > 0 {
            return i;
        }
    }
    events.len()
}
