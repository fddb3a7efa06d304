//! The channel's in-memory state, shared by the tokio side (put, take, commit, rollback) and
//! the writer and reader threads under one mutex.
//!
//! Events pass through four stages: *pending* (accepted by a put, not yet written),
//! *undecoded* (on disk, not yet read back), *head* (in memory, ready to lease) and *leased*.
//! Two sequence spaces exist: put sequence numbers, which receipts wait on, and take sequence
//! numbers, which number leases; they differ after a restart, since recovered events were
//! never put in this run.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::segment;
use super::syncer::Group;
use crate::channel::Lease;
use crate::chunks::{self, EventChunk};
use crate::event::{Event, Origin};

/// A place in the log: the record at `off` of segment `seg`, of which the first `skip`
/// events are passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// The segment id.
    pub seg: u64,
    /// The offset of a record in the segment, or the segment's end.
    pub off: u64,
    /// Events of that record already passed.
    pub skip: u32,
}

impl Pos {
    /// The first record of segment `seg`.
    pub fn start_of(seg: u64) -> Pos {
        Pos {
            seg,
            off: segment::HEADER_LEN,
            skip: 0,
        }
    }
}

/// What the channel knows about one segment file.
#[derive(Debug)]
pub struct SegMeta {
    /// The end of its verified, published records.
    pub len: u64,
    /// True once nothing more is appended to it.
    pub sealed: bool,
    /// Its origins, by segment-local id (`None` where a definition was lost to damage).
    pub origins: Vec<Option<Arc<Origin>>>,
    /// Damaged ranges found so far, skipped when reading.
    pub holes: Vec<(u64, u64)>,
}

impl SegMeta {
    /// A segment the writer just created.
    pub fn created() -> Self {
        SegMeta {
            len: segment::HEADER_LEN,
            sealed: false,
            origins: Vec::new(),
            holes: Vec::new(),
        }
    }

    /// The end of the hole containing `pos`, if `pos` is in a known hole.
    pub fn hole_end(&self, pos: u64) -> Option<u64> {
        self.holes
            .iter()
            .find(|h| h.0 <= pos && pos < h.1)
            .map(|h| h.1)
    }
}

/// Consecutive events of one record, in memory.
#[derive(Debug)]
pub struct Chunk {
    /// The take sequence number of the first event.
    pub first_seq: u64,
    /// The events.
    pub events: Vec<Event>,
    /// The sum of their weights.
    pub bytes: usize,
    /// The segment of their record.
    pub seg: u64,
    /// The offset of their record.
    pub off: u64,
    /// The index of the first event in the record.
    pub first_idx: u32,
}

impl EventChunk for Chunk {
    fn first_seq(&self) -> u64 {
        self.first_seq
    }
    fn events_mut(&mut self) -> &mut Vec<Event> {
        &mut self.events
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
    fn split_off(&mut self, n: usize) -> Self {
        let events = self.events.split_off(n);
        let bytes = chunks::weight(&events);
        self.bytes -= bytes;
        Chunk {
            first_seq: self.first_seq + n as u64,
            events,
            bytes,
            seg: self.seg,
            off: self.off,
            first_idx: self.first_idx + n as u32,
        }
    }
}

/// The part of a lease that came from one record.
#[derive(Debug)]
struct Part {
    seg: u64,
    off: u64,
    first_idx: u32,
    count: u32,
}

/// An outstanding lease, as the channel remembers it.
#[derive(Debug)]
struct LeaseInfo {
    first_seq: u64,
    end_seq: u64,
    bytes: usize,
    parts: Vec<Part>,
}

/// A put batch waiting for the writer.
#[derive(Debug)]
pub struct Pending {
    /// The events.
    pub events: Vec<Event>,
}

/// Everything behind the channel's mutex.
#[derive(Debug)]
pub struct State {
    /// Batches accepted and not yet taken by the writer, in put order.
    pub pending: Vec<Pending>,
    /// Their weight.
    pub pending_bytes: usize,
    /// The put sequence number of the next event put.
    pub put_seq: u64,
    /// Events accepted and not yet published (pending, being written or being synced).
    pub unpublished: usize,
    /// Groups written and waiting for the syncer, in order.
    pub written: VecDeque<Group>,
    /// Their bytes on disk.
    pub written_bytes: usize,
    /// The writer has exited; the syncer exits once `written` is empty.
    pub writer_done: bool,
    /// Spare write buffers, handed back by the syncer.
    pub buffers: Vec<Vec<u8>>,
    /// Events held: put (or recovered) and not committed.
    pub events: usize,
    /// Their weight.
    pub bytes: usize,
    /// Events on disk and not yet read back.
    pub undecoded_events: usize,
    /// Their weight.
    pub undecoded_bytes: usize,
    /// Events in memory, ready to lease, in order.
    pub head: VecDeque<Chunk>,
    /// Their weight.
    pub head_bytes: usize,
    /// The next position on disk not yet read back.
    pub cursor: Pos,
    /// The take sequence number of the next event read back.
    pub decode_seq: u64,
    leases: VecDeque<LeaseInfo>,
    /// Everything before this position is committed.
    pub acked: Pos,
    /// True when `acked` moved since the checkpoint was last written.
    pub ckpt_dirty: bool,
    /// Events committed in this run.
    pub committed_total: u64,
    /// The segments, by id.
    pub segments: BTreeMap<u64, SegMeta>,
    /// No more puts.
    pub closed: bool,
    /// The channel is being dropped: its threads finish and exit.
    pub stopping: bool,
    /// The writer is waiting for the disk (full, or below `min_free_space`, or failing).
    pub stalled: bool,
}

impl State {
    /// The state after recovery: `events` events of `bytes` bytes on disk from `start`.
    pub fn recovered(
        segments: BTreeMap<u64, SegMeta>,
        start: Pos,
        events: usize,
        bytes: usize,
    ) -> Self {
        let mut st = State {
            pending: Vec::new(),
            pending_bytes: 0,
            put_seq: 0,
            unpublished: 0,
            written: VecDeque::new(),
            written_bytes: 0,
            writer_done: false,
            buffers: Vec::new(),
            events,
            bytes,
            undecoded_events: events,
            undecoded_bytes: bytes,
            head: VecDeque::new(),
            head_bytes: 0,
            cursor: start,
            decode_seq: 0,
            leases: VecDeque::new(),
            acked: start,
            ckpt_dirty: false,
            committed_total: 0,
            segments,
            closed: false,
            stopping: false,
            stalled: false,
        };
        st.normalize();
        st
    }

    /// Moves the read cursor past finished segments to the start of the next one.
    pub fn normalize(&mut self) {
        loop {
            let c = self.cursor;
            let done = self
                .segments
                .get(&c.seg)
                .is_none_or(|m| m.sealed && c.off >= m.len);
            if !done {
                return;
            }
            let Some((&next, _)) = self.segments.range(c.seg + 1..).next() else {
                return;
            };
            self.cursor = Pos::start_of(next);
        }
    }

    /// The published end of the cursor's segment, if the cursor is before it.
    pub fn unread_end(&self) -> Option<u64> {
        let m = self.segments.get(&self.cursor.seg)?;
        (self.cursor.off < m.len).then_some(m.len)
    }

    /// True when every published record has been read back (call after `normalize`).
    pub fn disk_drained(&self) -> bool {
        self.unread_end().is_none()
    }

    /// True when takes can never return another event: closed and empty.
    pub fn finished(&self) -> bool {
        self.closed && self.unpublished == 0 && self.head.is_empty() && self.disk_drained()
    }

    /// Appends events read back (or handed over by the writer) to the head.
    pub fn push_head(&mut self, mut chunk: Chunk) {
        if chunk.events.is_empty() {
            return;
        }
        chunk.first_seq = self.decode_seq;
        self.decode_seq += chunk.events.len() as u64;
        self.head_bytes += chunk.bytes;
        self.head.push_back(chunk);
    }

    /// Leases up to `max` of the oldest events in the head.
    pub fn lease(&mut self, max: usize) -> Option<Lease> {
        let mut parts = Vec::new();
        let lease = chunks::lease(&mut self.head, max, |chunk: &Chunk| {
            parts.push(Part {
                seg: chunk.seg,
                off: chunk.off,
                first_idx: chunk.first_idx,
                count: chunk.events.len() as u32,
            });
        })?;
        self.head_bytes -= lease.bytes;
        self.leases.push_back(LeaseInfo {
            first_seq: lease.first_seq,
            end_seq: lease.end_seq(),
            bytes: lease.bytes,
            parts,
        });
        Some(lease)
    }

    /// Commits the oldest outstanding lease, which `lease` must be; returns its event count.
    pub fn commit(&mut self, lease: &Lease) -> Result<usize, &'static str> {
        let oldest = self
            .leases
            .front()
            .is_some_and(|l| l.first_seq == lease.first_seq && l.end_seq == lease.end_seq());
        if !oldest {
            return Err("commit of a lease that is not the oldest outstanding");
        }
        let Some(info) = self.leases.pop_front() else {
            return Err("commit without an outstanding lease");
        };
        let count = (info.end_seq - info.first_seq) as usize;
        if let Some(last) = info.parts.last() {
            self.acked = Pos {
                seg: last.seg,
                off: last.off,
                skip: last.first_idx + last.count,
            };
            self.ckpt_dirty = true;
        }
        self.events -= count;
        self.bytes -= info.bytes;
        self.committed_total += count as u64;
        Ok(count)
    }

    /// Returns the newest outstanding lease, which `lease` must be, to the head.
    pub fn rollback(&mut self, lease: Lease) -> Result<(), &'static str> {
        let newest = self
            .leases
            .back()
            .is_some_and(|l| l.first_seq == lease.first_seq && l.end_seq == lease.end_seq());
        if !newest {
            return Err("rollback of a lease that is not the newest outstanding");
        }
        let Some(info) = self.leases.pop_back() else {
            return Err("rollback without an outstanding lease");
        };
        let mut events = lease.events;
        let mut end = info.end_seq;
        for (i, part) in info.parts.iter().enumerate().rev() {
            let part_events = if i == 0 {
                std::mem::take(&mut events)
            } else {
                events.split_off(events.len() - part.count as usize)
            };
            let bytes = chunks::weight(&part_events);
            self.head_bytes += bytes;
            end -= u64::from(part.count);
            self.head.push_front(Chunk {
                first_seq: end,
                events: part_events,
                bytes,
                seg: part.seg,
                off: part.off,
                first_idx: part.first_idx,
            });
        }
        Ok(())
    }

    /// Forgets the undecoded events once the whole log has been read back: any left were
    /// lost to damage found while reading.
    pub fn reconcile(&mut self) -> usize {
        let lost = self.undecoded_events;
        self.events -= lost.min(self.events);
        self.bytes -= self.undecoded_bytes.min(self.bytes);
        self.undecoded_events = 0;
        self.undecoded_bytes = 0;
        lost
    }
}
