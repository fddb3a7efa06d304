//! The spooling-directory source: finished files dropped in a folder, each read once in full,
//! then renamed with a suffix or deleted.
//!
//! Progress is checkpointed in `STATE_DIR/spooldir.json` as the files in progress (path,
//! device, inode) some of whose lines are safe and, for each, the offset up to which every line
//! is. A restart resumes there (and reads the other files from their start): no line is lost,
//! and only lines that were in flight are read again. A file is renamed or deleted only once
//! all its lines are safe.
//!
//! A file is read only once it has stayed unchanged for `ready_after` (an empty one: for
//! `empty_grace`), and a reader at the end of a file that still grows follows it until it has
//! stayed unchanged that long; only then is its end the end of the file. A file that changes
//! after that, before it is completed, is set aside, never completed. A read that is cut short
//! by the agent stopping is not the file's fault: the file stays in place (and in the
//! checkpoint), and is read on after a restart.
//!
//! Every file-system call (listing, opening, reading, completing, setting aside, the
//! checkpoint) runs on the blocking pool: `scan` lists, `files` opens and completes,
//! `reader` reads, and this module decides and logs.

mod config;
mod files;
mod reader;
mod scan;

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_channels::Origin;
use sluice_channels::lifecycle::Phase;
use sluice_channels::names::escape_path;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

pub use config::{AfterRead, FAILED_SUFFIX, Order, SpoolDirConfig};

use crate::blocking::{self, Interrupted};
use crate::framing::LongLines;
use crate::pipeline::{self, Batch, Container, Interceptors, Progress};
use crate::{SourceContext, SourceError, SourceMetrics};
use files::{Aside, Completion, OpenRequest, Opening, Resumable};
use reader::{Chunk, FileReader, First, ReadFailure, Reading};
use scan::{Candidate, FolderState, Shape, Spool, needed_quiet};

/// How often, at most, the checkpoint is made durable (fsynced); and at a stop. In between,
/// it is rewritten without fsync whenever what it says changes (a safe offset advances, a file
/// it lists is finished), which a crash of the process survives. A power loss may bring back an older checkpoint:
/// it names files with offsets that were safe then, so a restart repeats lines, and skips the
/// entries of files completed since (their names are gone, or point to other inodes). Not
/// syncing at each finished file keeps thousands of small files from costing an fsync each.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The most files whose lines are in the channel but not all safe yet. Reading the next file
/// while the last one's lines are still being delivered keeps the sink busy at file
/// boundaries.
const MAX_FILES_IN_FLIGHT: usize = 8;

/// How long a reader may follow a file that keeps growing before it says so.
const LONG_GROWTH: Duration = Duration::from_secs(60);

/// How long a file whose open failed for want of resources (descriptors, memory) waits
/// before it is tried again.
const RETRY_OPEN_AFTER: Duration = Duration::from_secs(1);

/// The checkpoint: the files in progress, oldest first, and how much of each is safe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
struct Checkpoint {
    /// Files read (or being read) whose lines are not all safe yet.
    files: Vec<InProgress>,
}

impl Checkpoint {
    /// The checkpoint a file holds.
    fn decode(data: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(data)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InProgress {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Every line before this offset is safe.
    offset: u64,
}

/// How reading a file in flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// Not yet: it goes on, or was cut short by a stop (the file stays in the checkpoint).
    Reading,
    /// At the end of the file, which then had this shape.
    Done(Shape),
    /// On a fault of the file: it is set aside once what was read is safe.
    Failed,
}

/// A file read (or being read) whose lines are not all safe yet.
struct InFlight {
    path: PathBuf,
    /// The file as opened: its identity.
    opened: Shape,
    /// Receipts of the batches put, and the offset before which every line is safe.
    progress: Progress,
    read: ReadEnd,
}

/// What the source reads next.
enum Next {
    /// The file in progress at the last stop, from this offset.
    Resume(PathBuf, u64),
    /// A file the listing found ready.
    New(Candidate),
}

/// A file opened to be read, with its first chunk read.
struct Opened {
    path: PathBuf,
    reader: FileReader,
    /// Its shape when opened.
    shape: Shape,
    /// Where reading starts.
    offset: u64,
    /// Since when it has been seen with that shape.
    seen: Instant,
    /// The first chunk.
    first: Result<Chunk, ReadFailure>,
}

/// The spooling-directory source.
pub struct SpoolDirSource {
    cfg: SpoolDirConfig,
    ctx: SourceContext,
    checkpoint_path: PathBuf,
    /// The folder's listing state; lent to the blocking pool while the folder is listed, and
    /// lost only if the runtime cut that off (the source is stopping then).
    spool: Option<Spool>,
    /// Files whose lines are not all safe yet, oldest first.
    flight: VecDeque<InFlight>,
    /// Files out of flight, every line safe, to be completed with the next blocking call
    /// (the next file's open, or one of their own when the source has nothing else to do).
    /// The checkpoint no longer names them: a crash before they are completed reads them
    /// again, as it did when completing them came a moment after their last line was safe.
    completing: Vec<InFlight>,
    /// When the checkpoint was last made durable.
    synced_at: Instant,
    /// The checkpoint was rewritten since it was last made durable.
    unsynced: bool,
    /// What the checkpoint was last written with.
    written: Option<Arc<Vec<u8>>>,
    /// The last checkpoint write failed (logged once until one succeeds).
    write_failing: bool,
    /// Where blocking reads and writes run: the current runtime's pool unless a test says
    /// otherwise.
    blocking: Option<Handle>,
    /// The interceptors, compiled once for all the files.
    interceptors: Option<Interceptors>,
}

impl SpoolDirSource {
    /// A source over `cfg.dir`; the configuration must have passed [`SpoolDirConfig::validate`].
    pub fn new(cfg: SpoolDirConfig, ctx: SourceContext) -> Self {
        SpoolDirSource {
            spool: Some(Spool::new(&cfg)),
            interceptors: Interceptors::compile(&cfg.interceptors, &ctx.metrics)
                .unwrap_or_default(),
            checkpoint_path: ctx.state_dir.join("spooldir.json"),
            cfg,
            ctx,
            flight: VecDeque::new(),
            completing: Vec::new(),
            synced_at: Instant::now(),
            unsynced: false,
            write_failing: false,
            written: None,
            blocking: None,
        }
    }

    fn blocking(&self) -> Handle {
        self.blocking.clone().unwrap_or_else(Handle::current)
    }

    /// Runs `f` on the blocking pool the source uses (see [`crate::blocking`]).
    fn off<T, F>(&self, f: F) -> impl Future<Output = Result<T, Interrupted>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        blocking::run(&self.blocking(), f)
    }

    /// Runs until the agent stops: picks up files, reads them, completes them.
    pub async fn run(mut self) -> Result<(), SourceError> {
        self.blocking = Some(self.blocking());
        let (name, state_dir, dir) = (
            self.ctx.name.clone(),
            self.ctx.state_dir.clone(),
            self.cfg.dir.clone(),
        );
        let checked = self.off(move || {
            fs::create_dir_all(&state_dir).map_err(|error| SourceError::State {
                source_name: name.clone(),
                path: state_dir,
                error,
            })?;
            fs::read_dir(&dir).map_err(|error| SourceError::Dir {
                source_name: name,
                path: dir,
                error,
            })?;
            Ok(())
        });
        // Cut off, the source is stopping before it started.
        let Ok(checked) = checked.await else {
            return Ok(());
        };
        checked?;
        let wake = Arc::new(Notify::new());
        let lost = Arc::new(AtomicBool::new(false));
        let mut watcher = self.watch(wake.clone(), lost.clone());
        let Ok(checkpoint) = self.load_checkpoint().await else {
            return Ok(());
        };
        let mut resume: VecDeque<InProgress> = checkpoint.files.into();
        self.ctx.metrics.mark_started();
        info!(dir = %escape_path(&self.cfg.dir), "spooldir source started");
        let mut shutdown = self.ctx.shutdown.clone();
        while !shutdown.is_stopping() {
            self.advance(false).await;
            if self.flight.len() >= MAX_FILES_IN_FLIGHT {
                self.finish().await;
                if !self.wait_front().await {
                    break;
                }
                continue;
            }
            let mut next = None;
            while next.is_none()
                && let Some(p) = resume.pop_front()
            {
                let Ok(target) = self.resume_target(p).await else {
                    break;
                };
                next = target;
            }
            if next.is_none() && !shutdown.is_stopping() {
                let Ok((found, state)) = self.list().await else {
                    break;
                };
                let rewatch = match state {
                    FolderState::Recovered | FolderState::Replaced => {
                        self.ctx.metrics.set_problem(None);
                        true
                    }
                    // The watched folder was moved or deleted, and its name leads to a folder
                    // again (one that may have its inode number, reused: the listing cannot
                    // tell it from the old one). Its watch is gone with it: watch it anew.
                    FolderState::Listed if lost.load(Ordering::Relaxed) => {
                        debug!(dir = %escape_path(&self.cfg.dir),
                            "the watched folder was moved or deleted; watching the folder its name leads to");
                        true
                    }
                    FolderState::Unavailable if self.ctx.metrics.problem().is_none() => {
                        let problem = format!(
                            "cannot list the spool folder {}",
                            escape_path(&self.cfg.dir)
                        );
                        self.ctx.metrics.set_problem(Some(problem));
                        false
                    }
                    _ => false,
                };
                if rewatch {
                    watcher = self.watch(wake.clone(), lost.clone());
                    // A file that appeared between that listing and the new watch brings no
                    // event: list once more, now that the folder is watched.
                    wake.notify_one();
                }
                next = found.map(Next::New);
            }
            let Some(next) = next else {
                if self.unsynced {
                    // Idle: make the last progress durable.
                    self.advance(true).await;
                }
                self.finish().await;
                let notified = wake.notified();
                let waiting = self.flight.iter().any(|f| !f.progress.is_settled());
                let until = self
                    .spool
                    .as_ref()
                    .map_or_else(Instant::now, Spool::wake_at);
                tokio::select! {
                    _ = notified => if let Some(spool) = self.spool.as_mut() { spool.mark_due() },
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = shutdown.reached(Phase::Draining) => {}
                    _ = self.wait_front(), if waiting => {}
                }
                continue;
            };
            if !self.read_file(next).await {
                break;
            }
        }
        drop(watcher);
        // Stopping: wait for what was put to become safe (the sinks drain meanwhile),
        // completing the files that become safe, unless the drain deadline passes first.
        while self.flight.iter().any(|f| !f.progress.is_settled()) {
            if !self.wait_front().await {
                break;
            }
            self.advance(false).await;
        }
        self.advance(true).await;
        let counts = self.spool.as_ref().map(Spool::counts).unwrap_or_default();
        info!(
            listings = counts.listings,
            stats = counts.stats,
            "spooldir source stopped"
        );
        Ok(())
    }

    /// Starts a file-system watcher that wakes the loop, and sets `lost` when the folder it
    /// watches is moved or deleted (its watch goes with it); polling covers its absence.
    fn watch(
        &self,
        wake: Arc<Notify>,
        lost: Arc<AtomicBool>,
    ) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        lost.store(false, Ordering::Relaxed);
        // As the watcher names the folder in its events: made absolute, not resolved.
        let folder = std::env::current_dir()
            .map_or_else(|_| self.cfg.dir.clone(), |cwd| cwd.join(&self.cfg.dir));
        // Only a name appearing or changing can bring a new file. Opening, reading and closing
        // (the source's own listing and reads among them) must not wake the loop, or it would
        // wake itself forever; nor must writes to a file (a file being written becomes ready
        // at a time the source computes, not on an event).
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(e) = &event
                && the_folder_went(e, &folder)
            {
                lost.store(true, Ordering::Relaxed);
            }
            if event.is_err() || event.is_ok_and(|e| wakes_the_scan(&e.kind)) {
                wake.notify_one();
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "no file-system events; polling the folder");
                return None;
            }
        };
        if let Err(e) = watcher.watch(&self.cfg.dir, notify::RecursiveMode::NonRecursive) {
            warn!(dir = %escape_path(&self.cfg.dir), error = %e,
                "cannot watch the folder; polling it");
            return None;
        }
        Some(watcher)
    }

    /// Reads the checkpoint of the last run; a missing, unreadable or corrupt one is an empty
    /// one (a corrupt one is set aside).
    async fn load_checkpoint(&self) -> Result<Checkpoint, Interrupted> {
        let path = self.checkpoint_path.clone();
        let data = match self.off(move || fs::read(path)).await? {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
            Err(e) => {
                error!(checkpoint = %escape_path(&self.checkpoint_path), error = %e,
                    "cannot read the checkpoint; files in progress are read again from their start");
                return Ok(Checkpoint::default());
            }
        };
        match Checkpoint::decode(&data) {
            Ok(c) => Ok(c),
            Err(e) => {
                let path = self.checkpoint_path.clone();
                let aside = self
                    .off(move || sluice_channels::fsutil::set_aside(&path))
                    .await?;
                error!(checkpoint = %escape_path(&self.checkpoint_path), error = %e,
                    moved_to = ?aside.as_ref().ok(),
                    "corrupt checkpoint set aside; files in progress are read again from their start");
                Ok(Checkpoint::default())
            }
        }
    }

    /// Takes the next ready file from the spool, listing the folder (on the blocking pool)
    /// if its queue is used up and a listing is due. `Interrupted` when the agent stops
    /// meanwhile (or the runtime cut the listing off): the source stops.
    async fn list(&mut self) -> Result<(Option<Candidate>, FolderState), Interrupted> {
        let Some(mut spool) = self.spool.take() else {
            return Err(Interrupted);
        };
        let busy: Vec<PathBuf> = self.flight.iter().map(|f| f.path.clone()).collect();
        let listing = self.off(move || {
            let next = spool.next(|p| busy.iter().any(|b| b == p));
            (spool, next)
        });
        // A slow listing does not hold up a stop: its result is not needed any more.
        let mut shutdown = self.ctx.shutdown.clone();
        let (spool, next) = tokio::select! {
            listed = listing => listed?,
            _ = shutdown.reached(Phase::Draining) => return Err(Interrupted),
        };
        self.spool = Some(spool);
        Ok(next)
    }

    /// Writes the checkpoint of the files in flight; see [`SYNC_EVERY`] for `durable`.
    ///
    /// Files none of whose lines are safe yet are left out (a restart reads them from their
    /// start all the same), and a checkpoint that would say what the last one said is not
    /// written again: thousands of small files, each read and safe at once, cost no write.
    async fn save_checkpoint(&mut self, durable: bool) {
        let cp = Checkpoint {
            files: self
                .flight
                .iter()
                .filter(|f| f.progress.safe() > 0)
                .map(|f| InProgress {
                    path: f.path.clone(),
                    dev: f.opened.dev,
                    ino: f.opened.ino,
                    offset: f.progress.safe(),
                })
                .collect(),
        };
        let data = Arc::new(serde_json::to_vec(&cp).unwrap_or_default());
        if self.written.as_ref() == Some(&data) && (!durable || !self.unsynced) {
            return;
        }
        let path = self.checkpoint_path.clone();
        let write = {
            let (path, data) = (path.clone(), data.clone());
            move || sluice_channels::fsutil::write_atomic(&path, &data, durable)
        };
        let result = match blocking::run(&self.blocking(), write).await {
            Ok(r) => r,
            // The runtime is shutting down and runs no more blocking work: write it here, so
            // that the stop keeps what was safe.
            Err(Interrupted) => sluice_channels::fsutil::write_atomic(&path, &data, durable),
        };
        match result {
            // Only what was written counts as written: a failed write is tried again with the
            // next save, however alike.
            Ok(()) => {
                if durable {
                    self.synced_at = Instant::now();
                }
                self.unsynced = !durable;
                self.written = Some(data);
                if std::mem::take(&mut self.write_failing) {
                    info!(checkpoint = %escape_path(&self.checkpoint_path),
                        "the checkpoint is written again");
                }
            }
            Err(e) if !self.write_failing => {
                self.write_failing = true;
                error!(checkpoint = %escape_path(&self.checkpoint_path), error = %e,
                    "cannot write the checkpoint; progress since the last one may be read again after a restart");
            }
            Err(_) => {}
        }
    }

    /// The file in progress at the last stop, if it is still the same file.
    async fn resume_target(&self, p: InProgress) -> Result<Option<Next>, Interrupted> {
        let (path, dev, ino, offset) = (p.path.clone(), p.dev, p.ino, p.offset);
        let found = self
            .off(move || files::resumable(&path, dev, ino, offset))
            .await?;
        Ok(match found {
            Resumable::Same => {
                info!(file = %escape_path(&p.path), offset = p.offset,
                    "resuming the file in progress");
                Some(Next::Resume(p.path, p.offset))
            }
            Resumable::Replaced => {
                warn!(file = %escape_path(&p.path),
                    "the file in progress was replaced since the last run; reading the new one from its start");
                None
            }
            Resumable::Gone => None,
        })
    }

    fn completed_name(&self, path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(&self.cfg.completed_suffix);
        path.with_file_name(name)
    }

    /// Sets a file aside after a fault of the file itself: renames it with `.FAILED` when
    /// `rename` is set and possible, and otherwise skips it while it stays as it is.
    async fn set_aside(&mut self, path: &Path, rename: bool) {
        SourceMetrics::add(&self.ctx.metrics.files_failed, 1);
        let at = path.to_path_buf();
        // Cut off, the source is stopping: the file stays as it is and is looked at again
        // after a restart.
        let Ok(aside) = self.off(move || files::set_aside(&at, rename)).await else {
            return;
        };
        match aside {
            Aside::Moved(dest) => {
                warn!(file = %escape_path(path), moved_to = %escape_path(&dest), "file set aside");
            }
            Aside::Left(shape) => {
                if let (Some(spool), Some(shape)) = (self.spool.as_mut(), shape) {
                    spool.skip(path, shape);
                }
                warn!(file = %escape_path(path), "file left in place and skipped while it stays unchanged");
            }
        }
    }

    /// Opens the next file, checks that it is ready and reads its first chunk (one blocking
    /// call); `Ok(None)` if it is not to be read now.
    async fn open(&mut self, next: Next) -> Result<Option<Opened>, Interrupted> {
        let (path, offset, listed) = match next {
            Next::Resume(path, offset) => (path, offset, None),
            Next::New(c) => (c.path, 0, Some((c.shape, c.seen))),
        };
        let req = OpenRequest {
            path: path.clone(),
            offset,
            listed,
            quiet: (self.cfg.ready_after.0, self.cfg.empty_grace.0),
            completed: (self.cfg.after_read == AfterRead::Rename)
                .then(|| self.completed_name(&path)),
        };
        let headers = self.cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone()));
        let how = Reading {
            origin: Arc::new(Origin::for_file(
                &self.ctx.name,
                &path,
                &self.ctx.host,
                headers.collect(),
            )),
            max_line: usize::try_from(self.cfg.format.framing_limit(self.cfg.max_line_bytes.0))
                .unwrap_or(usize::MAX),
            policy: self.cfg.long_lines,
            batch_size: self.cfg.batch_size,
            interceptors: self.interceptors.clone(),
            container: (self.cfg.format != crate::Format::Lines).then(|| {
                Container::new(
                    self.cfg.format,
                    self.cfg.max_line_bytes.0,
                    self.ctx.metrics.clone(),
                    &path,
                )
            }),
            multiline: self
                .cfg
                .multiline
                .as_ref()
                .and_then(|m| m.stage(self.cfg.max_line_bytes.0)),
        };
        // The files whose lines became safe are completed in the same blocking call.
        let (files, work) = self.take_completing();
        let on = self.blocking();
        let opened = FileReader::open(&on, req, how, move || complete_all(&work));
        let (done, opened) = match opened.await {
            Ok((done, opened)) => (Ok(done), Ok(opened)),
            Err(Interrupted) => (Err(Interrupted), Err(Interrupted)),
        };
        self.conclude(files, done).await;
        let not = match opened? {
            Ok(first) => {
                let First {
                    reader,
                    shape,
                    seen,
                    chunk,
                } = *first;
                return Ok(Some(Opened {
                    path,
                    reader,
                    shape,
                    offset,
                    seen,
                    first: chunk,
                }));
            }
            Err(not) => not,
        };
        match not {
            Opening::Vanished => {
                debug!(file = %escape_path(&path), "the file vanished before it was read");
            }
            // Replaced since the listing by something else; the next listing reports it.
            Opening::NotAFile => {}
            Opening::Busy(e) => {
                warn!(file = %escape_path(&path), error = %e,
                    retry_in = ?RETRY_OPEN_AFTER, "cannot open the file now; trying again later");
                if let Some(spool) = self.spool.as_mut() {
                    spool.defer(path, Instant::now() + RETRY_OPEN_AFTER);
                }
            }
            Opening::Failed(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                // Not a fault of its content, and the agent may not own it: left in place, and
                // tried again once it changes (its mode among what is compared).
                warn!(path = %escape_path(&path), reason = %e,
                    "the file cannot be opened; it is skipped until it changes (made readable, say)");
                self.set_aside(&path, false).await;
            }
            Opening::Failed(e) => {
                SourceMetrics::add(&self.ctx.metrics.read_errors, 1);
                error!(file = %escape_path(&path), error = %e, "cannot read the file");
                self.set_aside(&path, true).await;
            }
            Opening::NotReady { shape, seen } => {
                // Changed since it was listed: being written. It waits until it is quiet.
                debug!(file = %escape_path(&path), size = shape.len,
                    "the file changed since it was listed; waiting until it stays unchanged");
                if let Some(spool) = self.spool.as_mut() {
                    spool.not_ready(path, shape, seen);
                }
            }
            Opening::CompletedUnusable(done, e) => {
                warn!(path = %escape_path(&path), completed = %escape_path(&done),
                    reason = %format_args!("its completed name cannot be used: {e}"),
                    "the file is not read: it could never be completed (rename it, or use after_read: delete)");
                self.set_aside(&path, false).await;
            }
            Opening::CompletedTaken(done) => {
                error!(file = %escape_path(&path), completed = %escape_path(&done),
                    "the completed name is already taken; the file is not read (rename one of them)");
                self.set_aside(&path, false).await;
            }
        }
        Ok(None)
    }

    /// Reads the next file from its offset to its end, putting its lines into the channel; the
    /// file joins the files in flight and is completed once all its lines are safe. At the end
    /// of the bytes, a file that is still being written is followed until it stays unchanged
    /// for `ready_after`. Returns false if the agent is stopping (or the channel refused a
    /// batch, or the runtime cancelled the read): the file then stays in flight, unfinished,
    /// and in the checkpoint.
    async fn read_file(&mut self, next: Next) -> bool {
        let opened = match self.open(next).await {
            Ok(Some(o)) => o,
            Ok(None) => return true,
            Err(Interrupted) => return false,
        };
        let Opened {
            path,
            mut reader,
            shape: opened,
            offset,
            seen,
            first,
        } = opened;
        debug!(file = %escape_path(&path), offset, size = opened.len, "reading file");
        self.flight.push_back(InFlight {
            path: path.clone(),
            opened,
            progress: Progress::at(offset),
            read: ReadEnd::Reading,
        });
        // The checkpoint records the file once some of its lines are safe: until then a
        // restart reads it from its start (or from its older entry) all the same.
        let mut first = Some(first);
        let mut reported_long = LongLines::default();
        let mut shutdown = self.ctx.shutdown.clone();
        let blocking = self.blocking();
        // The file's shape when last seen at its end, and since when it has had it.
        let mut last_seen = (opened, seen);
        // When the reader first found the file still being written at its end, and whether
        // that it goes on for long was logged.
        let mut growing_since: Option<Instant> = None;
        let mut warned_growing = false;
        loop {
            if shutdown.is_stopping() {
                return false;
            }
            let read = match first.take() {
                Some(read) => read,
                None => reader.next(&blocking).await,
            };
            let chunk = match read {
                Ok(c) => c,
                Err(failure) => return self.read_failed(&path, reader.offset(), failure).await,
            };
            let long = reader.long_lines();
            let new = LongLines {
                lines: long.lines - reported_long.lines,
                dropped_bytes: long.dropped_bytes - reported_long.dropped_bytes,
            };
            let limits = (
                self.cfg.format.framing_limit(self.cfg.max_line_bytes.0),
                self.cfg.long_lines,
            );
            pipeline::long_lines(&self.ctx, &path, reader.offset(), new, limits);
            reported_long = long;
            let put_any = !chunk.batches.is_empty();
            if !self.put_batches(chunk.batches, &mut shutdown).await {
                return false;
            }
            self.advance(false).await;
            let Some(mut end) = chunk.end else {
                continue;
            };
            if put_any {
                // Seen before the puts, which may have waited for room in the channel: look
                // at the file again.
                end = match reader.look(&blocking).await {
                    Ok(shape) => shape,
                    Err(failure) => return self.read_failed(&path, reader.offset(), failure).await,
                };
            }
            // At the end of the bytes. Is it the end of the file?
            let read_to = reader.read_to();
            if end.len > read_to {
                continue; // it grew meanwhile
            }
            if end.len < read_to {
                SourceMetrics::add(&self.ctx.metrics.read_errors, 1);
                error!(file = %escape_path(&path), size = end.len, read = read_to,
                    "the file shrank while it was read (truncated); it is set aside after what was read is safe");
                self.set_read(ReadEnd::Failed);
                return true;
            }
            if end != last_seen.0 {
                last_seen = (end, Instant::now());
            }
            let needed = needed_quiet(end.len, self.cfg.ready_after.0, self.cfg.empty_grace.0);
            let quiet = end.quiet_for(last_seen.1);
            if quiet >= needed {
                // Unchanged long enough: its end is the end of the file.
                let tail = reader.finish();
                if !self.put_batches(tail, &mut shutdown).await {
                    return false;
                }
                self.set_read(ReadEnd::Done(end));
                self.advance(false).await;
                return true;
            }
            let since = *growing_since.get_or_insert_with(Instant::now);
            if !warned_growing && since.elapsed() >= LONG_GROWTH {
                warned_growing = true;
                warn!(file = %escape_path(&path), size = end.len,
                    growing_for = ?since.elapsed(),
                    "the file is still being written; it is followed until it stays unchanged \
                     for ready_after, and the files after it wait (spooldir files should be \
                     complete when they are dropped in)");
            } else {
                debug!(file = %escape_path(&path), size = end.len,
                    "at the end of a file still being written; waiting for it to stay unchanged");
            }
            self.finish().await;
            let waiting = self.flight.iter().any(|f| !f.progress.is_settled());
            tokio::select! {
                _ = tokio::time::sleep(needed - quiet) => {}
                _ = shutdown.reached(Phase::Draining) => return false,
                _ = self.wait_front(), if waiting => {}
            }
        }
    }

    /// Handles a failed read of the newest file in flight; returns what
    /// [`SpoolDirSource::read_file`] returns. A cancelled read is the agent stopping: the file
    /// stays in flight, unfinished. A fault of the file sets it aside once what was read is
    /// safe.
    async fn read_failed(&mut self, path: &Path, offset: u64, failure: ReadFailure) -> bool {
        match failure {
            ReadFailure::Interrupted => {
                info!(file = %escape_path(path), offset,
                    "read interrupted: the agent is stopping; the file stays in place and is read on after a restart");
                false
            }
            ReadFailure::File(e) => {
                SourceMetrics::add(&self.ctx.metrics.read_errors, 1);
                error!(file = %escape_path(path), offset, error = %e,
                    "read error; the file is set aside after what was read is safe");
                self.set_read(ReadEnd::Failed);
                true
            }
        }
    }

    /// Puts `batches` of the newest file in flight into the channel. Returns false if the
    /// agent is aborting or the channel refused a batch.
    async fn put_batches(
        &mut self,
        batches: Vec<Batch>,
        shutdown: &mut sluice_channels::lifecycle::Shutdown,
    ) -> bool {
        let flight = &mut self.flight;
        pipeline::put(&self.ctx, batches, shutdown, |mark, receipt| {
            if let Some(f) = flight.back_mut() {
                f.progress.push(receipt.clone(), mark.offset);
            }
        })
        .await
    }

    /// Records how reading the newest file in flight ended.
    fn set_read(&mut self, end: ReadEnd) {
        if let Some(f) = self.flight.back_mut() {
            f.read = end;
        }
    }

    /// Waits until the oldest unsafe batch in flight is safe. Returns false if the drain
    /// deadline passed (or the channel is gone) first.
    async fn wait_front(&mut self) -> bool {
        let mut shutdown = self.ctx.shutdown.clone();
        let Some(receipt) = self.flight.iter_mut().find_map(|f| f.progress.oldest()) else {
            return true;
        };
        tokio::select! {
            ok = receipt.wait() => ok,
            _ = shutdown.reached(Phase::Aborting) => false,
        }
    }

    /// Advances every file in flight over its safe batches, finishes the oldest files once
    /// all their lines are safe, and saves the checkpoint if anything moved: rewritten at
    /// once, made durable every [`SYNC_EVERY`] or when `durable` asks.
    async fn advance(&mut self, durable: bool) {
        let mut moved = false;
        for f in &mut self.flight {
            moved |= f.progress.advance();
        }
        let mut finished = false;
        while self
            .flight
            .front()
            .is_some_and(|f| f.read != ReadEnd::Reading && f.progress.is_settled())
        {
            self.completing.extend(self.flight.pop_front());
            finished = true;
        }
        if durable {
            self.finish().await;
        }
        if moved || finished || durable {
            let durable = durable || self.synced_at.elapsed() >= SYNC_EVERY;
            self.save_checkpoint(durable).await;
        }
    }

    /// Completes the files whose lines are all safe (see `completing`) in one blocking call
    /// of their own.
    async fn finish(&mut self) {
        if self.completing.is_empty() {
            return;
        }
        let (files, work) = self.take_completing();
        let done = self.off(move || complete_all(&work)).await;
        self.conclude(files, done).await;
    }

    /// Takes the files to complete, and the work of completing them on the blocking pool.
    fn take_completing(&mut self) -> (Vec<InFlight>, Vec<Completing>) {
        let files = std::mem::take(&mut self.completing);
        let work = files
            .iter()
            .filter_map(|f| match f.read {
                ReadEnd::Done(shape) => Some((f.path.clone(), shape, self.rename_to(&f.path))),
                ReadEnd::Failed | ReadEnd::Reading => None,
            })
            .collect();
        (files, work)
    }

    /// Says what completing `files` did (renamed or deleted each, or set it aside if it could
    /// not be read to its end or changed after it was read), given the results of their
    /// completion work in order. Cut off (the source is stopping), the files go back to the
    /// front of the files in flight, so that the checkpoint keeps them with every line safe
    /// and a restart completes them without reading a line again.
    async fn conclude(&mut self, files: Vec<InFlight>, done: Result<Vec<Completion>, Interrupted>) {
        let Ok(done) = done else {
            for f in files.into_iter().rev() {
                self.flight.push_front(f);
            }
            return;
        };
        let mut done = done.into_iter();
        for f in files {
            match f.read {
                ReadEnd::Done(_) => {
                    if let Some(result) = done.next() {
                        self.completed(&f.path, result).await;
                    }
                }
                ReadEnd::Failed => self.set_aside(&f.path, true).await,
                ReadEnd::Reading => {}
            }
        }
    }

    /// The name a completed file is renamed to, or `None` if it is deleted.
    fn rename_to(&self, path: &Path) -> Option<PathBuf> {
        match self.cfg.after_read {
            AfterRead::Delete => None,
            AfterRead::Rename => Some(self.completed_name(path)),
        }
    }

    /// Says what completing the file at `path` did, and sets it aside if that failed.
    async fn completed(&mut self, path: &Path, done: Completion) {
        match done {
            Completion::Changed(problem) => {
                SourceMetrics::add(&self.ctx.metrics.read_errors, 1);
                error!(file = %escape_path(path), problem,
                    "the file changed after it was read to its end; spooldir files must be complete \
                     when they are dropped in (write elsewhere, then move them in)");
                self.set_aside(path, true).await;
            }
            Completion::Done(Ok(())) => {
                SourceMetrics::add(&self.ctx.metrics.files_completed, 1);
                info!(file = %escape_path(path), after_read = ?self.cfg.after_read, "file completed");
            }
            Completion::Done(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                warn!(file = %escape_path(path),
                    "the file vanished after it was read in full (deleted, moved away, or its \
                     folder replaced); nothing to rename");
            }
            Completion::Done(Err(e)) => {
                error!(file = %escape_path(path), error = %e,
                    "cannot complete the file; all its lines are safe, it is left in place and skipped");
                self.set_aside(path, false).await;
            }
        }
    }
}

/// A file to complete: its path, its shape when its end was read, and the name to rename it to
/// (`None`: delete it).
type Completing = (PathBuf, Shape, Option<PathBuf>);

/// Completes each file of `work` (see [`files::complete`]), in order.
fn complete_all(work: &[Completing]) -> Vec<Completion> {
    work.iter()
        .map(|(path, shape, to)| files::complete(path, shape, to.as_deref()))
        .collect()
}

/// True for file-system events that may show a new file: created, renamed, its metadata
/// changed (made readable, say) or removed; false for opens, reads, closes and writes.
fn wakes_the_scan(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    match kind {
        EventKind::Modify(ModifyKind::Data(_)) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Access(_) | EventKind::Other => false,
    }
}

/// True for an event that says the watched `folder` itself was moved or deleted.
fn the_folder_went(event: &notify::Event, folder: &Path) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    ) && event.paths.iter().any(|p| p == folder)
}

#[cfg(test)]
mod tests;
