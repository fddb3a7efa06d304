//! The durable file channel: a write-ahead log of segment files that survives a crash, a
//! restart, a power loss (per the fsync policy) and a full disk.
//!
//! Layout of the channel directory:
//! - `NNNNNNNNNNNNNNNNNNNN.wal`: append-only segments of length-prefixed, CRC32C-checked
//!   records (see [`record`]), closed at `segment_size`;
//! - `checkpoint`: the committed position, replaced atomically;
//! - `channel.lock`: held (flock) by the one process that owns the directory.
//!
//! A put is handed to a writer thread, which appends every batch pending at that moment in
//! one write; a syncer thread then fsyncs (with `fsync: always`) everything written since its
//! last fsync at once (group commit) while the writer goes on writing, and resolves the
//! receipts. Events reach takers straight from the syncer while the sink keeps up; otherwise
//! a reader thread reads them back from the segments. Commits move the checkpoint, and a
//! segment is deleted once the checkpoint is past it. On open, recovery resumes at the
//! checkpoint, verifies every record, truncates a torn tail and logs and counts damaged
//! records.

mod checkpoint;
mod config;
mod disk;
mod reader;
mod record;
mod recovery;
mod segment;
mod state;
mod syncer;
mod writer;

use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Notify, watch};

pub use self::config::{FileChannelConfig, FsyncPolicy};
use self::state::{Pending, State};
use crate::channel::{BoxFuture, Channel, ChannelError, ChannelStats, Lease, Receipt};
use crate::event::{Event, Origin};

/// The most bytes of accepted batches waiting for the writer; puts wait beyond it, so a
/// stalled disk holds the sources back instead of filling memory.
const MAX_PENDING_BYTES: usize = 1 << 20;

/// What a file channel did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileChannelCounters {
    /// Damaged records or ranges found, recovery included; each was logged with its segment
    /// and position, and the records around it were kept.
    pub corrupt_records: u64,
    /// Times the writer started waiting for the disk (full, below `min_free_space`, or
    /// failing); each episode is logged once.
    pub disk_stalls: u64,
    /// Bytes appended to segments (records and headers).
    pub bytes_written: u64,
    /// fsyncs of segment files.
    pub fsyncs: u64,
}

/// Why [`FileChannel::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FileChannelError {
    /// An option is invalid.
    #[error("channel {channel}: {key}: {message}")]
    Invalid {
        /// The channel's name.
        channel: String,
        /// The option.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Another process (or channel) holds the directory's lock.
    #[error(
        "channel {channel}: the directory {} is in use by another agent (lock {} is held)",
        .dir.display(),
        .dir.join(disk::LOCK_FILE).display()
    )]
    Locked {
        /// The channel's name.
        channel: String,
        /// The directory.
        dir: PathBuf,
    },
    /// An I/O operation on the directory failed.
    #[error("channel {channel}: cannot {action} {}: {source}", .path.display())]
    Io {
        /// The channel's name.
        channel: String,
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The options the threads need, in plain numbers.
#[derive(Debug, Clone, Copy)]
struct Limits {
    capacity_bytes: usize,
    capacity_events: usize,
    segment_size: u64,
    fsync: FsyncPolicy,
    fsync_interval: Duration,
    min_free_space: u64,
}

/// Injected failures, for tests of a full disk.
#[cfg(test)]
#[derive(Debug, Default)]
struct Faults {
    /// Every write and segment creation fails with ENOSPC while set.
    fail_writes: std::sync::atomic::AtomicBool,
    /// Every fsync of a segment by the syncer fails with EIO while set.
    fail_syncs: std::sync::atomic::AtomicBool,
    /// The free space reported instead of the real one, if set.
    free_space: Mutex<Option<u64>>,
}

#[cfg(test)]
impl Faults {
    fn check_write(&self) -> std::io::Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    fn check_sync(&self) -> std::io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

/// What the channel handle and its threads share.
struct Shared {
    name: String,
    dir: PathBuf,
    limits: Limits,
    state: Mutex<State>,
    /// Wakes the writer: batches pending, room in the syncer's queue, or stopping.
    writer_cv: Condvar,
    /// Wakes the syncer: groups written, or the writer done.
    syncer_cv: Condvar,
    /// Wakes the reader: events to read back, a checkpoint to write, or stopping.
    reader_cv: Condvar,
    /// The put sequence number up to which batches are safe, for receipts.
    durable: watch::Sender<u64>,
    /// Woken when events reach the head or the channel finishes.
    data: Notify,
    /// Woken when events leave the channel or the writer takes pending batches.
    space: Notify,
    /// Damaged records found since open (recovery included).
    corrupt: AtomicU64,
    /// Times the writer started waiting for the disk.
    stall_episodes: AtomicU64,
    /// Bytes written to segments.
    bytes_written: AtomicU64,
    /// fsyncs of segments.
    fsyncs: AtomicU64,
    #[cfg(test)]
    faults: Faults,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under the lock is a few assignments that leave the state consistent,
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_on<'a>(
        cv: &Condvar,
        st: MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        match timeout {
            Some(t) => cv
                .wait_timeout(st, t)
                .map_or_else(|e| e.into_inner().0, |r| r.0),
            None => cv.wait(st).unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Adds `n` to counter `c`.
    fn count(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The free space of the channel's file system; unknown counts as plenty.
    fn free_space(&self) -> u64 {
        #[cfg(test)]
        if let Some(free) = *self
            .faults
            .free_space
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            return free;
        }
        disk::free_space(&self.dir).unwrap_or(u64::MAX)
    }
}

/// A durable FIFO of events in a directory of segment files.
///
/// A put's receipt resolves once the batch is written as the fsync policy says: fsynced for
/// `always`, written to the operating system for `interval` and `never`. Takes, commits and
/// rollbacks keep the [`Channel`] contract; committed events are never delivered again after
/// a clean stop, and at most those committed since the last checkpoint (written within about
/// 250 ms of a commit) after a crash. Blocking I/O happens on the channel's own threads (a
/// writer, a syncer and a reader), never on the caller's.
pub struct FileChannel {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    _lock: File,
}

impl FileChannel {
    /// Opens (creating if needed) the channel in `config.dir`, locks the directory and
    /// recovers what it holds. Blocks for the recovery; damaged records never fail it.
    pub fn open(
        name: impl Into<String>,
        config: FileChannelConfig,
    ) -> Result<Self, FileChannelError> {
        let name = name.into();
        if let Some(problem) = config.validate().into_iter().next() {
            return Err(FileChannelError::Invalid {
                channel: name,
                key: problem.key,
                message: problem.message,
            });
        }
        let dir = config.dir.clone();
        let io_error = |action: &'static str, path: PathBuf| {
            let channel = name.clone();
            move |source| FileChannelError::Io {
                channel,
                action,
                path,
                source,
            }
        };
        fs::create_dir_all(&dir).map_err(io_error("create", dir.clone()))?;
        let lock = disk::lock_dir(&dir)
            .map_err(io_error("lock", dir.join(disk::LOCK_FILE)))?
            .ok_or_else(|| FileChannelError::Locked {
                channel: name.clone(),
                dir: dir.clone(),
            })?;
        let rec = recovery::recover(&dir, &name).map_err(|f| FileChannelError::Io {
            channel: name.clone(),
            action: f.action,
            path: f.path,
            source: f.source,
        })?;
        let limits = Limits {
            capacity_bytes: config.capacity.as_usize().max(1),
            capacity_events: config.capacity_events.map_or(usize::MAX, |n| {
                usize::try_from(n).unwrap_or(usize::MAX).max(1)
            }),
            segment_size: config.segment_size.0,
            fsync: config.fsync,
            fsync_interval: config.fsync_interval.0,
            min_free_space: config.min_free_space.0,
        };
        let shared = Arc::new(Shared {
            name: name.clone(),
            dir: dir.clone(),
            limits,
            state: Mutex::new(State::recovered(
                rec.segments,
                rec.start,
                rec.events,
                rec.bytes,
            )),
            writer_cv: Condvar::new(),
            syncer_cv: Condvar::new(),
            reader_cv: Condvar::new(),
            durable: watch::channel(0).0,
            data: Notify::new(),
            space: Notify::new(),
            corrupt: AtomicU64::new(rec.corrupt),
            stall_episodes: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            #[cfg(test)]
            faults: Faults::default(),
        });
        let mut channel = FileChannel {
            shared: shared.clone(),
            threads: Vec::new(),
            _lock: lock,
        };
        let w = writer::Writer::new(shared.clone(), rec.next_id);
        let s = syncer::Syncer::new(shared.clone());
        let r = reader::Reader::new(shared);
        for (thread, run) in [
            (
                "wal-writer",
                Box::new(move || w.run()) as Box<dyn FnOnce() + Send>,
            ),
            ("wal-syncer", Box::new(move || s.run())),
            ("wal-reader", Box::new(move || r.run())),
        ] {
            let handle = std::thread::Builder::new()
                .name(thread.into())
                .spawn(run)
                .map_err(io_error("start a thread for", dir.clone()))?;
            channel.threads.push(handle);
        }
        Ok(channel)
    }

    /// The channel's counters since open.
    pub fn counters(&self) -> FileChannelCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FileChannelCounters {
            corrupt_records: get(&self.shared.corrupt),
            disk_stalls: get(&self.shared.stall_episodes),
            bytes_written: get(&self.shared.bytes_written),
            fsyncs: get(&self.shared.fsyncs),
        }
    }

    fn order_error(&self, what: &'static str) -> ChannelError {
        ChannelError::LeaseOrder {
            channel: self.shared.name.clone(),
            what,
        }
    }

    async fn put_batch(&self, batch: Vec<Event>) -> Result<Receipt, ChannelError> {
        let count = batch.len();
        let mut bytes = 0;
        for e in &batch {
            if e.body.len() > record::MAX_BODY {
                return Err(ChannelError::Io {
                    channel: self.shared.name.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "an event is larger than the file channel's limit of 256MiB",
                    ),
                });
            }
            bytes += e.weight();
        }
        let limits = self.shared.limits;
        let mut batch = Some(batch);
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if st.closed {
                    return Err(ChannelError::Closed {
                        channel: self.shared.name.clone(),
                    });
                }
                let fits = st.events + count <= limits.capacity_events
                    && st.bytes + bytes <= limits.capacity_bytes;
                let room = st.pending_bytes + bytes <= MAX_PENDING_BYTES || st.pending.is_empty();
                if (fits || st.events == 0) && room {
                    st.put_seq += count as u64;
                    let end = st.put_seq;
                    if count > 0 {
                        st.events += count;
                        st.bytes += bytes;
                        st.unpublished += count;
                        st.pending_bytes += bytes;
                        st.pending.push(Pending {
                            events: batch.take().unwrap_or_default(),
                        });
                        self.shared.writer_cv.notify_one();
                    }
                    return Ok(Receipt::new(end, self.shared.durable.subscribe()));
                }
            }
            space.await;
        }
    }

    async fn take_batch(&self, max: usize) -> Result<Option<Lease>, ChannelError> {
        loop {
            let data = self.shared.data.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            {
                let mut st = self.shared.lock();
                st.normalize();
                if let Some(lease) = st.lease(max) {
                    if st.head_bytes < reader::READ_AHEAD && !st.disk_drained() {
                        self.shared.reader_cv.notify_one();
                    }
                    return Ok(Some(lease));
                }
                if st.finished() {
                    return Ok(None);
                }
                if !st.disk_drained() {
                    self.shared.reader_cv.notify_one();
                }
            }
            data.await;
        }
    }
}

impl Drop for FileChannel {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.writer_cv.notify_all();
        self.shared.syncer_cv.notify_all();
        self.shared.reader_cv.notify_all();
        // The writer ends first; the syncer ends once it has handled what the writer wrote.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Channel for FileChannel {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn put(&self, batch: Vec<Event>) -> BoxFuture<'_, Result<Receipt, ChannelError>> {
        Box::pin(self.put_batch(batch))
    }

    fn take(&self, max: usize) -> BoxFuture<'_, Result<Option<Lease>, ChannelError>> {
        Box::pin(self.take_batch(max))
    }

    fn commit(&self, lease: Lease) -> BoxFuture<'_, Result<(), ChannelError>> {
        let result = self.shared.lock().commit(&lease);
        let result = match result {
            Ok(_) => {
                self.shared.reader_cv.notify_one();
                self.shared.space.notify_waiters();
                Ok(())
            }
            Err(what) => Err(self.order_error(what)),
        };
        drop(lease);
        Box::pin(std::future::ready(result))
    }

    fn rollback(&self, lease: Lease) -> Result<(), ChannelError> {
        self.shared
            .lock()
            .rollback(lease)
            .map_err(|what| self.order_error(what))?;
        self.shared.data.notify_waiters();
        Ok(())
    }

    fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.data.notify_waiters();
        self.shared.space.notify_waiters();
    }

    fn stats(&self) -> ChannelStats {
        let counters = self.counters();
        let st = self.shared.lock();
        ChannelStats {
            events: st.events,
            bytes: st.bytes,
            capacity_events: self.shared.limits.capacity_events,
            capacity_bytes: self.shared.limits.capacity_bytes,
            put_total: st.put_seq,
            committed_total: st.committed_total,
            corrupt_records: counters.corrupt_records,
            disk_stalls: counters.disk_stalls,
        }
    }
}

#[cfg(test)]
mod tests;
