//! The reader thread: reads records back from disk into the head when the writer could not
//! hand them over directly (after a restart, or when the sink falls behind), writes the
//! checkpoint after commits, and deletes segments once a checkpoint is past them.

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, error, info, warn};

use super::record::{self, EventIter, Parsed};
use super::segment::{self, Scanner};
use super::state::{Chunk, Pos, State};
use super::{Shared, checkpoint, writer};
use crate::event::{Event, Origin};

/// How much is read from a segment at a time.
const READ_CHUNK: usize = 1 << 20;
/// Reading stops while the head holds this many bytes.
pub const READ_AHEAD: usize = 1 << 20;
/// The checkpoint is written at most this often: in place, without fsync, which a crash of the
/// process survives, so that a SIGKILL repeats little more than the sink's leases in flight.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(5);
/// The checkpoint is made durable (written atomically and fsynced) at most this often, and
/// segments are deleted only past a durable checkpoint.
pub const DURABLE_EVERY: Duration = Duration::from_millis(500);

enum Job {
    /// Read back records of the cursor's segment from `at` up to `end`.
    Read { at: Pos, end: u64 },
    /// Write the checkpoint; durably when the flag is set.
    Checkpoint(Pos, bool),
    /// Write the last checkpoint, if any, and exit.
    Stop(Option<Pos>),
}

/// What one read found.
struct Decoded {
    chunks: Vec<Chunk>,
    events: usize,
    bytes: usize,
    /// Where the next read starts.
    next: u64,
    /// A damaged range found, to be remembered.
    hole: Option<(u64, u64)>,
}

/// The reader thread's state.
pub struct Reader {
    shared: Arc<Shared>,
    file: Option<(u64, File)>,
    origins: (u64, Vec<Option<Arc<Origin>>>),
    last_checkpoint: Instant,
    last_durable: Instant,
    /// A position written only in place, to be made durable by `last_durable + DURABLE_EVERY`.
    durable_pending: Option<Pos>,
    checkpoint_failing: bool,
    read_failing: bool,
}

impl Reader {
    /// A reader of the channel behind `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Reader {
            shared,
            file: None,
            origins: (u64::MAX, Vec::new()),
            last_checkpoint: Instant::now()
                .checked_sub(CHECKPOINT_EVERY)
                .unwrap_or_else(Instant::now),
            last_durable: Instant::now(),
            durable_pending: None,
            checkpoint_failing: false,
            read_failing: false,
        }
    }

    /// Runs until the channel is dropped.
    pub fn run(mut self) {
        loop {
            match self.next_job() {
                Job::Stop(pos) => {
                    if let Some(p) = pos.or(self.durable_pending) {
                        self.checkpoint(p, true);
                    }
                    return;
                }
                Job::Checkpoint(p, durable) => self.checkpoint(p, durable),
                Job::Read { at, end } => self.read(at, end),
            }
        }
    }

    fn next_job(&mut self) -> Job {
        let mut st = self.shared.lock();
        loop {
            st.normalize();
            if st.stopping {
                let pos = st.ckpt_dirty.then_some(st.acked);
                st.ckpt_dirty = false;
                return Job::Stop(pos);
            }
            let due = self.last_checkpoint + CHECKPOINT_EVERY;
            let durable_due = self.last_durable + DURABLE_EVERY;
            let now = Instant::now();
            if st.ckpt_dirty && now >= due {
                st.ckpt_dirty = false;
                return Job::Checkpoint(st.acked, now >= durable_due);
            }
            if let Some(p) = self.durable_pending
                && now >= durable_due
            {
                return Job::Checkpoint(p, true);
            }
            match st.unread_end() {
                Some(end) if st.head_bytes < READ_AHEAD => {
                    return Job::Read { at: st.cursor, end };
                }
                Some(_) => {}
                None => self.reconcile(&mut st),
            }
            let timeout = match (st.ckpt_dirty, self.durable_pending.is_some()) {
                (true, _) => Some(due.saturating_duration_since(now)),
                (false, true) => Some(durable_due.saturating_duration_since(now)),
                (false, false) => None,
            };
            st = Shared::wait_on(&self.shared.reader_cv, st, timeout);
        }
    }

    /// Accounts for events lost to damage found while reading, once everything is read.
    fn reconcile(&self, st: &mut MutexGuard<'_, State>) {
        if st.undecoded_events == 0 {
            return;
        }
        let lost = st.reconcile();
        warn!(channel = %self.shared.name, events = lost,
            "events in damaged records could not be read back");
        self.shared.space.notify_waiters();
        self.shared.data.notify_waiters();
    }

    fn checkpoint(&mut self, pos: Pos, durable: bool) {
        self.last_checkpoint = Instant::now();
        let written = if durable {
            checkpoint::store(&self.shared.dir, pos)
        } else {
            checkpoint::store_fast(&self.shared.dir, pos)
        };
        if let Err(e) = written {
            if !self.checkpoint_failing {
                warn!(channel = %self.shared.name, dir = %self.shared.dir.display(), error = %e,
                    "cannot write the checkpoint; retrying (a restart would deliver more again)");
                self.checkpoint_failing = true;
            }
            self.shared.lock().ckpt_dirty = true;
            return;
        }
        if self.checkpoint_failing {
            info!(channel = %self.shared.name, "the checkpoint is written again");
            self.checkpoint_failing = false;
        }
        if !durable {
            self.durable_pending = Some(pos);
            return;
        }
        self.last_durable = Instant::now();
        self.durable_pending = None;
        // A deleted segment's space is freed only once no descriptor holds it.
        if self.file.as_ref().is_some_and(|(id, _)| *id < pos.seg) {
            self.file = None;
        }
        let done: Vec<u64> = {
            let mut st = self.shared.lock();
            let keep = st.segments.split_off(&pos.seg);
            let done = std::mem::replace(&mut st.segments, keep);
            done.into_keys().collect()
        };
        for id in done {
            let path = segment::path(&self.shared.dir, id);
            match fs::remove_file(&path) {
                Ok(()) => debug!(channel = %self.shared.name, segment = %path.display(),
                    "removed a fully committed segment"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!(channel = %self.shared.name, segment = %path.display(), error = %e,
                    "cannot remove a fully committed segment"),
            }
        }
    }

    fn read(&mut self, at: Pos, end: u64) {
        match self.try_read(at, end) {
            Ok(decoded) => {
                if self.read_failing {
                    info!(channel = %self.shared.name, "the channel's segments are readable again");
                    self.read_failing = false;
                }
                self.publish(at, decoded);
            }
            Err(e) => {
                if !self.read_failing {
                    let segment = segment::path(&self.shared.dir, at.seg);
                    error!(channel = %self.shared.name, segment = %segment.display(),
                        position = at.off, error = %e,
                        "cannot read the channel's segment; retrying");
                    self.read_failing = true;
                }
                let deadline = Instant::now() + writer::RETRY;
                let mut st = self.shared.lock();
                while !st.stopping && Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    st = Shared::wait_on(&self.shared.reader_cv, st, Some(left));
                }
            }
        }
    }

    fn publish(&mut self, at: Pos, d: Decoded) {
        let mut st = self.shared.lock();
        if st.cursor != at {
            return;
        }
        for c in d.chunks {
            st.push_head(c);
        }
        st.undecoded_events -= d.events.min(st.undecoded_events);
        st.undecoded_bytes -= d.bytes.min(st.undecoded_bytes);
        st.cursor = Pos {
            seg: at.seg,
            off: d.next,
            skip: 0,
        };
        if let Some(h) = d.hole
            && let Some(m) = st.segments.get_mut(&at.seg)
        {
            m.holes.push(h);
        }
        st.normalize();
        drop(st);
        self.shared.data.notify_waiters();
    }

    fn file(&mut self, seg: u64) -> io::Result<&File> {
        if self.file.as_ref().is_none_or(|(id, _)| *id != seg) {
            self.file = None;
            let f = File::open(segment::path(&self.shared.dir, seg))?;
            self.file = Some((seg, f));
        }
        match &self.file {
            Some((_, f)) => Ok(f),
            None => Err(io::Error::other("segment file not open")),
        }
    }

    fn try_read(&mut self, at: Pos, end: u64) -> io::Result<Decoded> {
        let file = match self.file(at.seg) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let segment = segment::path(&self.shared.dir, at.seg);
                error!(channel = %self.shared.name, segment = %segment.display(),
                    "a segment file vanished; its events are lost");
                self.shared.count(&self.shared.corrupt, 1);
                return Ok(Decoded {
                    chunks: Vec::new(),
                    events: 0,
                    bytes: 0,
                    next: end,
                    hole: None,
                });
            }
            Err(e) => return Err(e),
        };
        let mut want = ((end - at.off) as usize).min(READ_CHUNK);
        let (data, short) = loop {
            let mut buf = vec![0u8; want];
            let got = segment::read_at_most(file, &mut buf, at.off)?;
            buf.truncate(got);
            if let Parsed::Incomplete(n) = record::parse(&buf)
                && n > want
                && got == want
                && at.off + n as u64 <= end
            {
                want = n;
                continue;
            }
            break (Bytes::from(buf), got < want);
        };
        let mut d = Decoded {
            chunks: Vec::new(),
            events: 0,
            bytes: 0,
            next: at.off,
            hole: None,
        };
        let mut p = 0usize;
        let mut skip = at.skip;
        while at.off + (p as u64) < end {
            let pos = at.off + p as u64;
            let outcome = match record::parse(&data[p..]) {
                Parsed::Record { kind, payload, len } => {
                    let payload_at = p + record::HEADER_LEN;
                    let rec = Pos {
                        seg: at.seg,
                        off: pos,
                        skip,
                    };
                    let ok = !record::holds_events(kind)
                        || self.decode(
                            kind,
                            &data,
                            payload_at..payload_at + payload.len(),
                            rec,
                            &mut d,
                        );
                    ok.then_some(len)
                }
                Parsed::Incomplete(n) if !short && pos + n as u64 <= end => break,
                _ => None,
            };
            match outcome {
                Some(len) => {
                    p += len;
                    skip = 0;
                    d.next = at.off + p as u64;
                }
                None => {
                    self.damaged(at.seg, pos, end, &mut d)?;
                    return Ok(d);
                }
            }
        }
        Ok(d)
    }

    /// Decodes the events record at `rec`, whose payload is `data[range]`, into a chunk,
    /// passing its first `rec.skip` events.
    fn decode(
        &mut self,
        kind: u8,
        data: &Bytes,
        range: Range<usize>,
        rec: Pos,
        d: &mut Decoded,
    ) -> bool {
        let (at, len) = (range.start, range.len());
        let (seg, skip) = (rec.seg, rec.skip);
        let payload = &data[range];
        let Some(mut it) = EventIter::new(kind, payload) else {
            return false;
        };
        let count = it.remaining().min(len as u64) as usize;
        let mut events = Vec::with_capacity(count.saturating_sub(skip as usize));
        let mut bytes = 0;
        for (i, e) in it.by_ref().enumerate() {
            let Some(origin) = self.origin(seg, e.origin) else {
                return false;
            };
            if i < skip as usize {
                continue;
            }
            let Some(headers) = record::decode_headers(&payload[e.headers.clone()]) else {
                return false;
            };
            let event = Event {
                body: data.slice(at + e.body.start..at + e.body.end),
                origin,
                offset: e.offset,
                read_at_ms: e.read_at_ms,
                headers,
            };
            bytes += event.weight();
            events.push(event);
        }
        if !it.is_valid() {
            return false;
        }
        d.events += events.len();
        d.bytes += bytes;
        d.chunks.push(Chunk {
            first_seq: 0,
            events,
            bytes,
            seg,
            off: rec.off,
            first_idx: skip,
        });
        true
    }

    fn origin(&mut self, seg: u64, id: u32) -> Option<Arc<Origin>> {
        if self.origins.0 != seg {
            self.origins = (seg, Vec::new());
        }
        let id = id as usize;
        if self.origins.1.get(id).is_none_or(Option::is_none) {
            let st = self.shared.lock();
            if let Some(m) = st.segments.get(&seg) {
                self.origins.1.clone_from(&m.origins);
            }
        }
        self.origins.1.get(id)?.clone()
    }

    /// Handles a record at `pos` that does not verify: skips a known hole silently, or finds
    /// the next valid record, logs and counts the damage.
    fn damaged(&mut self, seg: u64, pos: u64, end: u64, d: &mut Decoded) -> io::Result<()> {
        let known = self
            .shared
            .lock()
            .segments
            .get(&seg)
            .and_then(|m| m.hole_end(pos));
        if let Some(hole_end) = known {
            d.next = hole_end.min(end);
            return Ok(());
        }
        let file = self.file(seg)?;
        let next = Scanner::new(file, end)
            .next_valid(pos + 1, end)?
            .unwrap_or(end);
        let segment = segment::path(&self.shared.dir, seg);
        error!(channel = %self.shared.name, segment = %segment.display(), position = pos,
            skipped_bytes = next - pos, "corrupt record: skipped; the records after it are kept");
        self.shared.count(&self.shared.corrupt, 1);
        d.next = next;
        d.hole = Some((pos, next));
        Ok(())
    }
}
