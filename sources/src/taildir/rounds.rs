//! Job bookkeeping: which files wait to be read, which have receipts in flight, which were
//! rotated away and are read until finished, which are let go once their lines are safe; and
//! one round of reads, from lending the files to a blocking task to recording the receipts.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_channels::lifecycle::{Phase, Shutdown};
use tokio::runtime::Handle;
use tracing::{debug, error, info, warn};

use super::Tail;
use super::config::{Decoding, TailDirConfig};
use super::files::{FileState, Files, Slot};
use super::identity::Verdict;
use super::open_set::OpenSet;
use super::reader::{self, Done, Job, Settings, Start, Status};
use crate::SourceMetrics;
use crate::blocking;
use crate::framing::Newline;
use crate::pipeline::{self, Batch, Container, Format, Interceptors, Key};

/// The most bytes read from one file in one round.
const READ_CHUNK: usize = 256 << 10;
/// The most bytes read in one round over all files.
const ROUND_BUDGET: usize = 1 << 20;
/// The most files read in one round.
const ROUND_FILES: usize = 256;

/// How a round of reading ended.
pub(super) enum Round {
    /// Nothing could be read.
    Idle,
    /// Lines were read and put.
    Worked,
    /// The channel refused a batch or the agent is aborting: stop.
    Interrupted,
}

/// The files each stage of reading is waiting on, by key.
pub(super) struct Jobs {
    settings: Arc<Settings>,
    /// Files to read, in order; each file is in it at most once (its `queued`).
    queue: VecDeque<Key>,
    /// Files with receipts not yet safe.
    inflight: HashSet<Key>,
    /// Open files whose path no longer leads to them, read until they are finished.
    unbound: HashSet<Key>,
    /// Files to remove once their receipts are safe.
    retiring: HashSet<Key>,
    /// When the unbound files are read again (they raise no events).
    next_poll: Instant,
}

impl Jobs {
    /// Nothing to read yet; files are read with `cfg`'s options, the lines its interceptors
    /// drop counted in `metrics`.
    pub fn new(cfg: &TailDirConfig, metrics: &Arc<SourceMetrics>) -> Self {
        let decoding = cfg.decoding().unwrap_or(Decoding {
            encoding: None,
            newline: Newline::Byte,
        });
        Jobs {
            settings: Arc::new(Settings {
                batch_size: cfg.batch_size,
                max_line: usize::try_from(cfg.format.framing_limit(cfg.max_line_bytes.0))
                    .unwrap_or(usize::MAX),
                policy: cfg.long_lines,
                decoding,
                chunk: READ_CHUNK,
                budget: ROUND_BUDGET,
                format: (cfg.format != Format::Lines).then(|| (cfg.format, metrics.clone())),
                multiline: cfg
                    .multiline
                    .as_ref()
                    .and_then(|m| m.stage(cfg.max_line_bytes.0)),
                interceptors: Interceptors::compile(&cfg.interceptors, metrics).unwrap_or_default(),
            }),
            queue: VecDeque::new(),
            inflight: HashSet::new(),
            unbound: HashSet::new(),
            retiring: HashSet::new(),
            next_poll: Instant::now(),
        }
    }

    /// Queues `st` (file `key`) for reading unless it is queued already.
    pub fn queue(&mut self, key: Key, st: &mut FileState) {
        if !st.queued {
            st.queued = true;
            self.queue.push_back(key);
        }
    }

    /// Queues file `key` for reading unless it is queued already or being let go.
    pub fn enqueue(&mut self, key: Key, files: &mut Files) {
        if let Some(st) = files.get_mut(key)
            && !st.retiring
        {
            self.queue(key, st);
        }
    }

    /// File `key`'s path no longer leads to it: it is read every `poll_interval` until it is
    /// finished.
    pub fn unbound(&mut self, key: Key) {
        self.unbound.insert(key);
    }

    /// File `key` was found at its path again.
    pub fn bound(&mut self, key: Key) {
        self.unbound.remove(&key);
    }

    /// Stops reading `st` (file `key`); it is removed once its receipts are safe.
    pub fn retire_later(&mut self, key: Key, st: &mut FileState) {
        st.retiring = true;
        if st.queued {
            st.queued = false;
            self.queue.retain(|k| *k != key);
        }
        self.retiring.insert(key);
    }

    /// An unbound file is done with: no longer read, removed once its receipts are safe.
    fn done_with(&mut self, key: Key, st: &mut FileState) {
        self.unbound.remove(&key);
        self.retire_later(key, st);
    }

    /// Queues the unbound files if `every` passed since they were last queued so (at `now`).
    pub fn poll_unbound(&mut self, files: &mut Files, now: Instant, every: Duration) {
        if now >= self.next_poll {
            self.next_poll = now + every;
            for key in self.unbound.iter().copied().collect::<Vec<_>>() {
                self.enqueue(key, files);
            }
        }
    }

    /// Queues the open files whose multiline event waited `timeout` for its next line, or
    /// whose cut line waited for its rest (at `now`), so that their job emits it.
    pub fn poll_pending(&mut self, files: &mut Files, now: Instant) {
        if self.pending_every().is_none() {
            return;
        }
        let due: Vec<Key> = files
            .iter()
            .filter(|(_, st)| !st.queued && matches!(&st.reader, Slot::Open(r) if r.flush_due(now)))
            .map(|(key, _)| key)
            .collect();
        for key in due {
            self.enqueue(key, files);
        }
    }

    /// How often the loop looks for held lines due out: half the shortest wait, if the source
    /// joins lines (multiline) or fragments (a container format).
    pub fn pending_every(&self) -> Option<Duration> {
        let multiline = self.settings.multiline.as_ref().map(|m| m.timeout());
        let container = self.settings.format.as_ref().map(|_| Container::wait());
        multiline.into_iter().chain(container).min().map(|d| d / 2)
    }

    /// Files wait to be read or for their receipts.
    pub fn is_busy(&self) -> bool {
        !self.unbound.is_empty() || !self.inflight.is_empty() || !self.queue.is_empty()
    }

    /// The files with receipts not yet safe.
    pub fn inflight(&self) -> Vec<Key> {
        self.inflight.iter().copied().collect()
    }

    /// Moves each file's safe offset over its receipts that are safe now; true if one moved.
    pub fn advance(&mut self, files: &mut Files) -> bool {
        let mut changed = false;
        self.inflight.retain(|&key| {
            let Some(st) = files.get_mut(key) else {
                return false;
            };
            changed |= st.progress.advance();
            !st.progress.is_settled()
        });
        changed
    }

    /// Forgets the files being let go whose receipts are all safe; true if one was.
    pub fn retire(&mut self, files: &mut Files, open: &mut OpenSet) -> bool {
        let mut changed = false;
        self.retiring.retain(|&key| {
            // Gone, or come back to a followed name (`Files::by_inode_in_use`).
            let Some(st) = files.get(key).filter(|st| st.retiring) else {
                return false;
            };
            if !st.progress.is_settled() {
                return true;
            }
            if let Some(st) = files.remove(key) {
                open.forget(&st);
            }
            changed = true;
            false
        });
        changed
    }
}

impl Tail {
    /// Reads the queued files once each (as many as the round allows) and puts their lines.
    pub(super) async fn read_round(&mut self, shutdown: &mut Shutdown) -> Round {
        let mut jobs = Vec::new();
        let mut deferred = Vec::new();
        let rotate_wait = self.cfg.rotate_wait.0;
        while jobs.len() < ROUND_FILES {
            let Some(key) = self.jobs.queue.pop_front() else {
                break;
            };
            let needs_slot = self
                .files
                .get(key)
                .is_some_and(|s| matches!(s.reader, Slot::Closed | Slot::Held(_)));
            if needs_slot && self.open.is_full() && !self.open.evict(&mut self.files) {
                deferred.push(key);
                continue;
            }
            let Some(st) = self.files.get_mut(key) else {
                continue;
            };
            st.queued = false;
            if st.retiring {
                continue;
            }
            let Some((reader, start, held)) = self.open.lend(st) else {
                continue;
            };
            jobs.push(Job {
                key,
                generation: st.generation,
                reader,
                held,
                path: st.open_path.clone(),
                start,
                dev: st.dev,
                ino: st.ino,
                fp: st.fp,
                origin: st.origin.clone(),
                base: st.base.clone(),
                finish_at_eof: !st.bound
                    && st.at_end_since.is_some_and(|t| t.elapsed() >= rotate_wait),
            });
        }
        for key in deferred {
            if let Some(st) = self.files.get_mut(key) {
                st.queued = true;
                self.jobs.queue.push_back(key);
            }
        }
        if jobs.is_empty() {
            return Round::Idle;
        }
        let settings = self.jobs.settings.clone();
        let read = blocking::run(&Handle::current(), move || reader::run(&settings, jobs));
        let Ok((done, batches)) = read.await else {
            return Round::Interrupted;
        };
        for d in done {
            self.finish_job(d);
        }
        if self.put(batches, shutdown).await {
            Round::Worked
        } else {
            Round::Interrupted
        }
    }

    /// Takes back a file after its job.
    fn finish_job(&mut self, d: Done) {
        let Some(st) = self.files.get_mut(d.key) else {
            return;
        };
        let long = (
            self.cfg.format.framing_limit(self.cfg.max_line_bytes.0),
            self.cfg.long_lines,
        );
        pipeline::long_lines(&self.ctx, &st.path, st.read_pos, d.long, long);
        if let Some(v) = d.restarted {
            let what = if v == Verdict::Shrunk {
                "truncated"
            } else {
                "replaced by other content"
            };
            warn!(file = %st.path.display(), offset = st.read_pos, what,
                "file truncated or rewritten; reading it again from its start");
            st.progress.reset(0);
            st.read_pos = 0;
            self.positions.changed();
        }
        st.generation = d.generation;
        st.fp = d.fp;
        st.origin = d.origin;
        if let Some(at) = d.opened_at
            && st.progress.settle_at(at)
        {
            self.positions.changed();
        }
        self.open.take_back(st, d.reader);
        match d.status {
            Status::Read { eof } => {
                st.read_pos = d.read_pos;
                st.read_end = d.read_end;
                st.start = Start::At(d.complete);
                st.eof = eof;
                let now = Instant::now();
                if d.grew {
                    st.last_growth = now;
                }
                if !eof {
                    st.at_end_since = None;
                } else if d.grew || st.at_end_since.is_none() {
                    st.at_end_since = Some(now);
                }
                if d.unmarked && st.progress.pass(d.complete) {
                    self.positions.changed();
                }
                if !eof {
                    self.jobs.queue(d.key, st);
                }
            }
            Status::Finished => {
                info!(file = %st.path.display(), offset = d.read_pos,
                    "rotated file read to its end and closed");
                st.read_pos = d.read_pos;
                st.read_end = d.read_pos;
                // Where it is read on, should it come back under a followed name.
                st.start = Start::At(d.read_pos);
                SourceMetrics::add(&self.ctx.metrics.files_completed, 1);
                self.jobs.done_with(d.key, st);
            }
            Status::Gone => {
                if st.bound {
                    self.discovery.want();
                } else {
                    debug!(file = %st.path.display(), "a rotated file vanished before it was opened");
                    self.jobs.done_with(d.key, st);
                }
            }
            Status::Failed(e) => {
                SourceMetrics::add(&self.ctx.metrics.read_errors, 1);
                error!(file = %st.open_path.display(), offset = st.read_pos, error = %e,
                    "cannot read the file; trying again when it changes");
                st.read_end = st.read_pos;
                st.start = Start::At(st.read_pos);
                if !st.bound {
                    self.jobs.done_with(d.key, st);
                }
            }
        }
    }

    /// Puts the round's batches in order and records their receipts; false if the source
    /// must stop. While a full channel holds a batch back (Kafka down, say), the source still
    /// takes in the files the watcher opened as they appeared and writes their positions at
    /// once: were the agent killed while held back, a restart finds each of them again by
    /// inode, whereas a file created and rotated away meanwhile would be lost.
    async fn put(&mut self, batches: Vec<Batch>, shutdown: &mut Shutdown) -> bool {
        let (channels, metrics) = (self.ctx.channels.clone(), self.ctx.metrics.clone());
        let shared = self.discovery.shared();
        for Batch { events, marks } in batches {
            let put = pipeline::put_one(&channels, &metrics, events);
            tokio::pin!(put);
            let receipt = loop {
                tokio::select! {
                    r = &mut put => break r,
                    _ = shutdown.reached(Phase::Aborting) => return false,
                    _ = shared.changed() => self.look_while_held().await,
                    _ = tokio::time::sleep(self.cfg.poll_interval.0) => self.look_while_held().await,
                }
            };
            let Some(receipt) = receipt else {
                return false;
            };
            for m in &marks {
                if let Some(st) = self.files.get_mut(m.key)
                    && st.generation == m.generation
                {
                    st.progress.push(receipt.clone(), m.offset);
                    self.jobs.inflight.insert(m.key);
                }
            }
        }
        true
    }

    /// What the loop does between rounds that a batch held back must not wait for: taking
    /// in the files the watcher opened, and writing the positions when due (at once for a new
    /// file). Nothing else: no scan (it would act on files whose last lines are in the held
    /// batch) and no settling of receipts (the held batch's are not recorded yet).
    async fn look_while_held(&mut self) {
        self.take_changes();
        if self.positions.is_due() {
            self.checkpoint().await;
        }
    }

    /// Moves each file's safe offset over its receipts that are safe now, and forgets the
    /// files let go whose receipts are all safe.
    pub(super) fn settle(&mut self) {
        let moved = self.jobs.advance(&mut self.files);
        self.positions.changed_if(moved);
        let gone = self.jobs.retire(&mut self.files, &mut self.open);
        self.positions.changed_if(gone);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sluice_channels::{Origin, Receipt};
    use tokio::sync::watch;

    use super::*;
    use crate::taildir::files::Files;
    use crate::taildir::resume::Begin;

    fn jobs() -> Jobs {
        let cfg: TailDirConfig = serde_json::from_str(r#"{"paths": ["/logs/*.log"]}"#).unwrap();
        Jobs::new(&cfg, &Arc::default())
    }

    fn follow(files: &mut Files, ino: u64) -> Key {
        let begin = Begin {
            start: Start::At(0),
            safe: 0,
            fp: None,
            rewrites: 0,
        };
        let path = format!("/logs/{ino}.log");
        let base = Arc::new(Origin::default());
        files.add(FileState::new(Path::new(&path), (1, ino), begin, base))
    }

    #[test]
    fn a_file_is_queued_once_and_not_while_it_is_let_go() {
        let (mut jobs, mut files) = (jobs(), Files::default());
        let (a, b) = (follow(&mut files, 1), follow(&mut files, 2));
        jobs.enqueue(a, &mut files);
        jobs.enqueue(b, &mut files);
        jobs.enqueue(a, &mut files);
        assert_eq!(jobs.queue, [a, b]);
        assert!(jobs.is_busy());
        jobs.retire_later(a, files.get_mut(a).unwrap());
        assert_eq!(jobs.queue, [b]);
        assert!(!files.get(a).unwrap().queued);
        jobs.enqueue(a, &mut files);
        assert_eq!(jobs.queue, [b]);
    }

    #[test]
    fn unbound_files_are_polled_every_poll_interval_until_done_with() {
        let (mut jobs, mut files) = (jobs(), Files::default());
        let a = follow(&mut files, 1);
        jobs.unbound(a);
        let (t0, every) = (Instant::now(), Duration::from_millis(250));
        jobs.poll_unbound(&mut files, t0, every);
        assert_eq!(jobs.queue, [a]);
        jobs.queue.clear();
        files.get_mut(a).unwrap().queued = false;
        jobs.poll_unbound(&mut files, t0 + every / 2, every);
        assert!(jobs.queue.is_empty(), "not before poll_interval");
        jobs.poll_unbound(&mut files, t0 + every, every);
        assert_eq!(jobs.queue, [a]);
        jobs.done_with(a, files.get_mut(a).unwrap());
        assert!(jobs.queue.is_empty() && jobs.unbound.is_empty());
        jobs.bound(a);
        jobs.poll_unbound(&mut files, t0 + 3 * every, every);
        assert!(jobs.queue.is_empty());
    }

    #[test]
    fn a_file_let_go_is_removed_once_its_receipts_are_safe() {
        let (mut jobs, mut files, mut open) = (jobs(), Files::default(), OpenSet::new(1));
        let a = follow(&mut files, 1);
        let (tx, rx) = watch::channel(0u64);
        files
            .get_mut(a)
            .unwrap()
            .progress
            .push(Receipt::new(1, rx), 10);
        jobs.inflight.insert(a);
        jobs.retire_later(a, files.get_mut(a).unwrap());
        assert!(!jobs.advance(&mut files));
        assert!(!jobs.retire(&mut files, &mut open));
        assert!(files.get(a).is_some(), "kept while a receipt waits");
        tx.send_replace(1);
        assert!(jobs.advance(&mut files));
        assert_eq!(files.get(a).unwrap().progress.safe(), 10);
        assert!(jobs.inflight().is_empty());
        assert!(jobs.retire(&mut files, &mut open));
        assert!(files.get(a).is_none() && files.by_inode((1, 1)).is_none());
        assert!(!jobs.retire(&mut files, &mut open) && !jobs.is_busy());
    }
}
