//! The tail-follow source: `tail -F` over every file that glob patterns match, through
//! rotation, resuming exactly where it stopped.
//!
//! - A file is known by its identity: device, inode, and a fingerprint of its first bytes
//!   ([`identity`]), so that an inode reused after a delete, or a file truncated and written
//!   again, is read as the new file it is.
//! - The folders holding matched files are watched for events ([`watcher`]); a modified file
//!   is read at once. Patterns are expanded again when names change, and every
//!   `scan_interval` as a safety net (every `poll_interval` where events are not available).
//! - Files are read on the blocking pool, several per round ([`reader`]); their lines go into
//!   the channel in batches, and each file's position advances only over its own receipts once
//!   they are safe, in order. Positions are written atomically to the position file
//!   ([`positions`]) every second and at stop.
//! - A file whose path no longer leads to it (renamed, deleted, or a re-pointed symbolic link)
//!   is still read through its open handle until it has not grown for `rotate_wait`; then its
//!   last unterminated line is emitted and it is closed. A file that shrinks below the position
//!   (copytruncate) or whose first bytes change is read again from its start.

pub mod config;
mod identity;
mod matcher;
mod positions;
mod reader;
mod resume;
mod watcher;

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::DirEntryExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sluice_channels::Origin;
use sluice_channels::lifecycle::{Phase, Shutdown};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

pub use config::{PathSpec, ReadFrom, TailDirConfig};
use identity::{Fingerprint, Verdict};
use matcher::{Listing, Patterns};
use positions::{Loaded, Position};
use reader::{Done, Job, Reader, Settings, Start, Status};
use resume::{Begin, Resume, Seen};
use watcher::{Held, Shared, Watcher};

use crate::blocking;
use crate::pipeline::{self, Batch, Key, Progress};
use crate::{SourceContext, SourceError, SourceMetrics};

/// How often positions are written while they change.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The least time between two expansions of the patterns caused by events.
const RESCAN_GAP: Duration = Duration::from_millis(20);
/// The most bytes read from one file in one round.
const READ_CHUNK: usize = 256 << 10;
/// The most bytes read in one round over all files.
const ROUND_BUDGET: usize = 4 << 20;
/// The most files read in one round.
const ROUND_FILES: usize = 256;
/// Every this many scans, every matched file is looked at (`stat`), also those whose inode the
/// folder listing shows unchanged: a safety net for growth that raised no event.
const THOROUGH_EVERY: u32 = 6;

/// The taildir source.
pub struct TailDirSource {
    cfg: TailDirConfig,
    ctx: SourceContext,
    position_file: PathBuf,
}

impl TailDirSource {
    /// A source following `cfg.paths`; the configuration must have passed
    /// [`TailDirConfig::validate`].
    pub fn new(cfg: TailDirConfig, ctx: SourceContext) -> Self {
        let position_file = cfg
            .position_file
            .clone()
            .unwrap_or_else(|| ctx.state_dir.join("positions.json"));
        TailDirSource {
            cfg,
            ctx,
            position_file,
        }
    }

    /// Runs until the agent stops: follows files, puts their lines into the channel, and
    /// keeps the position file.
    pub async fn run(self) -> Result<(), SourceError> {
        let state_error = |path: &Path, error| SourceError::State {
            source_name: self.ctx.name.clone(),
            path: path.to_path_buf(),
            error,
        };
        let folder = self
            .position_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        std::fs::create_dir_all(&folder).map_err(|e| state_error(&folder, e))?;
        let loaded = positions::load(&self.position_file)
            .map_err(|e| state_error(&self.position_file, e))?;
        let mut tail = Tail::new(self, loaded);
        tail.run().await;
        Ok(())
    }
}

/// Whether a file's reader is with the source, lent to a blocking read, or closed.
enum Slot {
    Closed,
    /// A handle the watcher opened when the file appeared, not read yet.
    Held(std::fs::File),
    Open(Box<Reader>),
    Lent,
}

/// One followed file.
struct FileState {
    /// The path it was matched under; its events keep this path for their whole life.
    path: PathBuf,
    /// Where to open it (the target, when `path` is a symbolic link).
    open_path: PathBuf,
    dev: u64,
    ino: u64,
    fp: Option<Fingerprint>,
    generation: u32,
    base: Arc<Origin>,
    origin: Option<Arc<Origin>>,
    reader: Slot,
    /// Where it is opened next time (while closed).
    start: Start,
    /// The offset just past the last line handed out.
    read_pos: u64,
    /// How far it was read (`read_pos` plus an unterminated tail).
    read_end: u64,
    /// Receipts of lines handed out, and the offset before which every line is safe.
    progress: Progress,
    /// Its path still leads to it.
    bound: bool,
    queued: bool,
    eof: bool,
    last_growth: Instant,
    /// Since when it has been read to its end without growing: `rotate_wait` counts from here.
    at_end_since: Option<Instant>,
    /// Read to its end after rotation, or gone: removed once its receipts are safe.
    retiring: bool,
    /// The number of the last scan that found it at its path.
    seen: u64,
}

impl FileState {
    fn is_open(&self) -> bool {
        !matches!(self.reader, Slot::Closed)
    }

    fn position(&self) -> Position {
        Position {
            path: self.path.to_string_lossy().into_owned(),
            dev: self.dev,
            ino: self.ino,
            fp: self.fp,
            offset: self.progress.safe(),
        }
    }
}

/// The patterns and the watcher, lent together to a blocking scan.
struct Scanner {
    patterns: Arc<Patterns>,
    watcher: Watcher,
}

/// How a round of reading ended.
enum Round {
    /// Nothing could be read.
    Idle,
    /// Lines were read and put.
    Worked,
    /// The channel refused a batch or the agent is aborting: stop.
    Interrupted,
}

/// The running source.
struct Tail {
    cfg: TailDirConfig,
    ctx: SourceContext,
    position_file: PathBuf,
    settings: Arc<Settings>,
    patterns: Arc<Patterns>,
    scanner: Option<Scanner>,
    shared: Arc<Shared>,
    files: HashMap<Key, FileState>,
    by_path: HashMap<PathBuf, Key>,
    /// Matched paths and the device and inode they led to at the last scan, for the next one.
    inodes: Arc<HashMap<PathBuf, (u64, u64)>>,
    /// Scans since every file was last looked at.
    scans_since_thorough: u32,
    /// The number of the last scan.
    scan_no: u64,
    /// Events were lost: the next scan looks at every file.
    thorough_wanted: bool,
    by_inode: HashMap<(u64, u64), Key>,
    next_key: Key,
    queue: VecDeque<Key>,
    /// Readers open or lent.
    open: usize,
    /// Handles the watcher opened, not read yet (counted against `max_open_files` too).
    held: usize,
    /// Files with receipts not yet safe.
    inflight: HashSet<Key>,
    /// Open files whose path no longer leads to them, read until they are finished.
    unbound: HashSet<Key>,
    /// Files to remove once their receipts are safe.
    retiring: HashSet<Key>,
    /// Where a newly found file starts: the last run's positions not matched to a file yet.
    resume: Resume,
    positions_changed: bool,
    /// A new file is followed: its position is written at once, so that a crash right after
    /// cannot forget it exists (were it renamed away before the restart, it would be missed).
    positions_urgent: bool,
    saving: Option<JoinHandle<()>>,
    scan_wanted: bool,
    last_scan: Instant,
    next_scan: Instant,
    next_poll: Instant,
    next_checkpoint: Instant,
    polling: bool,
}

impl Tail {
    fn new(src: TailDirSource, loaded: Loaded) -> Self {
        let TailDirSource {
            cfg,
            ctx,
            position_file,
        } = src;
        let decoding = cfg.decoding().unwrap_or(config::Decoding {
            encoding: None,
            newline: crate::framing::Newline::Byte,
        });
        let settings = Arc::new(Settings {
            batch_size: cfg.batch_size,
            max_line: cfg.max_line_bytes.as_usize(),
            policy: cfg.long_lines,
            decoding,
            chunk: READ_CHUNK,
            budget: ROUND_BUDGET,
        });
        let policy = (cfg.read_from, cfg.ignore_older.map(|d| d.0));
        let resume = Resume::new(loaded, policy, (&ctx.name, &position_file));
        let mut patterns = Patterns::new(&cfg.paths, &cfg.exclude);
        // The agent's own files are never read: a position file under a watched glob would
        // otherwise be shipped, and each rewrite of it would be a new file to follow.
        patterns.keep_out(&ctx.data_dir);
        patterns.keep_out(&ctx.state_dir);
        patterns.keep_out(&position_file);
        let mut tmp = position_file.clone().into_os_string();
        tmp.push(".tmp");
        patterns.keep_out(Path::new(&tmp));
        let patterns = Arc::new(patterns);
        let watcher = Watcher::new(&ctx.name, patterns.clone());
        let now = Instant::now();
        Tail {
            settings,
            shared: watcher.shared(),
            scanner: Some(Scanner {
                patterns: patterns.clone(),
                watcher,
            }),
            patterns,
            cfg,
            ctx,
            position_file,
            files: HashMap::new(),
            by_path: HashMap::new(),
            inodes: Arc::default(),
            scans_since_thorough: 0,
            scan_no: 0,
            thorough_wanted: false,
            by_inode: HashMap::new(),
            next_key: 0,
            queue: VecDeque::new(),
            open: 0,
            held: 0,
            inflight: HashSet::new(),
            unbound: HashSet::new(),
            retiring: HashSet::new(),
            resume,
            positions_changed: false,
            positions_urgent: false,
            saving: None,
            scan_wanted: false,
            last_scan: now,
            next_scan: now,
            next_poll: now,
            next_checkpoint: now,
            polling: false,
        }
    }

    async fn run(&mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        self.scan(true).await;
        self.ctx.metrics.mark_started();
        info!(source = %self.ctx.name, files = self.files.len(), polling = self.polling,
            "taildir source started");
        let shared = self.shared.clone();
        while !shutdown.is_stopping() {
            self.take_changes();
            let now = Instant::now();
            if now >= self.next_scan || (self.scan_wanted && now >= self.last_scan + RESCAN_GAP) {
                self.scan(false).await;
            }
            if now >= self.next_poll {
                self.next_poll = now + self.cfg.poll_interval.0;
                for key in self.unbound.iter().copied().collect::<Vec<_>>() {
                    self.enqueue(key);
                }
            }
            let round = self.read_round(&mut shutdown).await;
            self.advance();
            self.retire();
            if self.positions_urgent
                || (self.positions_changed && Instant::now() >= self.next_checkpoint)
            {
                self.checkpoint().await;
            }
            match round {
                Round::Interrupted => break,
                Round::Worked => continue,
                Round::Idle => {}
            }
            let wake = self.next_wake();
            tokio::select! {
                _ = shared.changed() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.reached(Phase::Draining) => {}
            }
        }
        self.drain(&mut shutdown).await;
        info!(source = %self.ctx.name, "taildir source stopped");
    }

    /// When the loop must look again without an event.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = self.next_scan;
        if self.scan_wanted {
            wake = wake.min(self.last_scan + RESCAN_GAP);
        }
        let busy = !self.unbound.is_empty()
            || !self.inflight.is_empty()
            || !self.queue.is_empty()
            || self.positions_changed;
        if busy {
            wake = wake.min(now + self.cfg.poll_interval.0);
        }
        wake.max(now)
    }

    fn enqueue(&mut self, key: Key) {
        if let Some(st) = self.files.get_mut(&key)
            && !st.queued
            && !st.retiring
        {
            st.queued = true;
            self.queue.push_back(key);
        }
    }

    /// Folds file-system events into the queue and the need for a scan.
    fn take_changes(&mut self) {
        let changes = self.shared.take();
        for h in changes.held {
            self.hold(h);
        }
        for (path, what) in changes.missed {
            SourceMetrics::add(&self.ctx.metrics.files_missed, 1);
            warn!(source = %self.ctx.name, file = %path.display(), what,
                "a file matched the patterns but could not be read: its lines are lost");
        }
        if changes.rescan {
            self.scan_wanted = true;
            self.thorough_wanted = true;
            let open: Vec<Key> = self
                .files
                .iter()
                .filter(|(_, s)| s.is_open())
                .map(|(k, _)| *k)
                .collect();
            for key in open {
                self.enqueue(key);
            }
        }
        for p in &changes.data {
            match self.by_path.get(p) {
                Some(&key) => self.enqueue(key),
                None if self.patterns.matches(p) => self.scan_wanted = true,
                None => {}
            }
        }
        if changes
            .names
            .iter()
            .any(|p| self.by_path.contains_key(p) || self.patterns.matches(p))
        {
            self.scan_wanted = true;
        }
    }

    /// Takes a file the watcher opened as it appeared: a new file is followed through that
    /// handle, so renaming or deleting it before the source got to it loses nothing.
    fn hold(&mut self, h: Held) {
        let Held {
            path,
            at,
            file,
            dev,
            ino,
        } = h;
        // Past `max_open_files`, the file is followed by name and inode as any other.
        let room = self.open + self.held < self.cfg.max_open_files;
        if let Some(&key) = self.by_inode.get(&(dev, ino)) {
            if let Some(st) = self.files.get_mut(&key)
                && !st.retiring
                && matches!(st.reader, Slot::Closed)
                && room
            {
                st.reader = Slot::Held(file);
                self.held += 1;
                self.enqueue(key);
            }
            return;
        }
        let begin = self.resume.start_of((dev, ino), Seen::Appeared);
        info!(source = %self.ctx.name, file = %path.display(), at = %at.display(),
            "following a new file from the moment it appeared");
        let pattern = self.patterns.pattern_of(&path).unwrap_or(0);
        let key = self.add(&path, pattern, (dev, ino), begin);
        if let Some(st) = self.files.get_mut(&key) {
            st.open_path = at;
            if room {
                st.reader = Slot::Held(file);
                self.held += 1;
            }
        }
        self.enqueue(key);
        self.scan_wanted = true;
    }

    /// Expands the patterns, updates the watches, and matches what it found to the files
    /// followed.
    async fn scan(&mut self, first: bool) {
        let Some(mut scanner) = self.scanner.take() else {
            return;
        };
        let began = Instant::now();
        let periodic = began >= self.next_scan;
        let thorough = first
            || self.polling
            || self.thorough_wanted
            || (periodic && self.scans_since_thorough + 1 >= THOROUGH_EVERY);
        if thorough {
            self.scans_since_thorough = 0;
            self.thorough_wanted = false;
        } else if periodic {
            self.scans_since_thorough += 1;
        }
        let known = if thorough {
            Arc::default()
        } else {
            self.inodes.clone()
        };
        let listed = blocking::run(&Handle::current(), move || {
            let listing = scanner.patterns.list(&known);
            let polling = scanner.watcher.update(&listing.dirs);
            (scanner, listing, polling)
        });
        // Cut off, the source is stopping: no scan any more.
        let Ok((scanner, listing, polling)) = listed.await else {
            return;
        };
        self.scanner = Some(scanner);
        if polling && !self.polling {
            warn!(source = %self.ctx.name, poll_interval = ?self.cfg.poll_interval.0,
                "some folders are polled: their files are looked at every poll_interval");
        }
        self.polling = polling;
        self.scan_wanted = false;
        self.last_scan = Instant::now();
        let every = if polling {
            self.cfg.poll_interval.0
        } else {
            self.cfg.scan_interval.0
        };
        self.next_scan = self.last_scan + every;
        let matched = listing.files.len();
        let lost = self.apply(listing, first);
        self.find_moved(lost).await;
        self.close_idle();
        debug!(source = %self.ctx.name, matched, took = ?began.elapsed(), "patterns expanded");
    }

    /// Matches a listing to the files followed; returns the closed files whose path no
    /// longer leads to them, to be looked for by inode.
    fn apply(&mut self, listing: Listing, first: bool) -> Vec<Key> {
        self.scan_no += 1;
        let scan_no = self.scan_no;
        let scanned_at = SystemTime::now();
        for f in listing.files {
            let key = match self.by_inode.get(&(f.dev, f.ino)) {
                Some(&key) => key,
                None => {
                    let seen = Seen::Listed {
                        first,
                        scanned_at,
                        mtime: f.mtime,
                        size: f.size,
                    };
                    let begin = self.resume.start_of((f.dev, f.ino), seen);
                    let start = begin.start;
                    // At startup the start line gives the count; one line per file after.
                    if first {
                        debug!(source = %self.ctx.name, file = %f.path.display(), start = ?start, "following a new file");
                    } else {
                        info!(source = %self.ctx.name, file = %f.path.display(), start = ?start, "following a new file");
                    }
                    self.add(&f.path, f.pattern, (f.dev, f.ino), begin)
                }
            };
            let inodes = Arc::make_mut(&mut self.inodes);
            let Some(st) = self.files.get_mut(&key) else {
                continue;
            };
            if st.retiring {
                continue;
            }
            st.seen = scan_no;
            if !st.bound {
                st.bound = true;
                self.unbound.remove(&key);
            }
            // A known path that still leads to the same inode: nothing else to update.
            let Some(size) = f.size else { continue };
            if st.path != f.path {
                unmap(&mut self.by_path, inodes, &st.path, key);
                st.path = f.path.clone();
            }
            let open_path = f.target.as_ref().unwrap_or(&f.path);
            if st.open_path != *open_path {
                unmap(&mut self.by_path, inodes, &st.open_path, key);
                st.open_path = open_path.clone();
            }
            let changed = size != st.read_end || (st.start == Start::End && !st.is_open());
            inodes.insert(f.path.clone(), (f.dev, f.ino));
            if let Some(t) = f.target {
                self.by_path.insert(t, key);
            }
            self.by_path.insert(f.path, key);
            if changed && !st.queued {
                st.queued = true;
                self.queue.push_back(key);
            }
        }
        let inodes = Arc::make_mut(&mut self.inodes);
        let mut lost = Vec::new();
        for (key, st) in &mut self.files {
            if !st.bound || st.seen == scan_no || st.retiring {
                continue;
            }
            st.bound = false;
            unmap(&mut self.by_path, inodes, &st.path, *key);
            unmap(&mut self.by_path, inodes, &st.open_path, *key);
            if st.is_open() {
                info!(source = %self.ctx.name, file = %st.path.display(),
                    "the path no longer leads to this file (rotated, deleted or re-pointed); reading it to its end");
                self.unbound.insert(*key);
                if !st.queued {
                    st.queued = true;
                    self.queue.push_back(*key);
                }
            } else {
                lost.push(*key);
            }
        }
        lost
    }

    /// Starts following a file, read as `begin` says.
    fn add(&mut self, path: &Path, pattern: usize, (dev, ino): (u64, u64), begin: Begin) -> Key {
        let key = self.next_key;
        self.next_key += 1;
        let st = new_state(&self.cfg, &self.ctx, path, pattern, (dev, ino), begin);
        self.files.insert(key, st);
        self.by_inode.insert((dev, ino), key);
        self.positions_changed = true;
        self.positions_urgent = true;
        key
    }

    /// Looks for files that moved while closed (and, at startup, for files of the last run
    /// that moved while the agent was stopped) in their folder, by inode: a file renamed to a
    /// name the patterns do not match is read to its end from its position.
    async fn find_moved(&mut self, lost: Vec<Key>) {
        let mut wanted: Vec<(PathBuf, u64, u64)> = lost
            .iter()
            .filter_map(|k| self.files.get(k))
            .map(|s| (s.path.clone(), s.dev, s.ino))
            .collect();
        let resumed = self.resume.take_rest();
        wanted.extend(
            resumed
                .iter()
                .map(|p| (PathBuf::from(&p.path), p.dev, p.ino)),
        );
        if wanted.is_empty() {
            return;
        }
        let found = blocking::run(&Handle::current(), move || {
            wanted
                .iter()
                .map(|(p, d, i)| find_by_inode(p, *d, *i))
                .collect::<Vec<_>>()
        });
        // Cut off, the source is stopping: nothing is decided about these files.
        let Ok(found) = found.await else {
            return;
        };
        let mut found = found.into_iter();
        for key in lost {
            let at = found.next().flatten();
            let Some(st) = self.files.get_mut(&key) else {
                continue;
            };
            match at {
                Some(path) => {
                    debug!(source = %self.ctx.name, file = %st.path.display(), now_at = %path.display(),
                        "a closed file was renamed; reading it to its end");
                    st.open_path = path;
                    st.start = Start::At(st.read_pos);
                    self.unbound.insert(key);
                    self.enqueue(key);
                }
                None => {
                    debug!(source = %self.ctx.name, file = %st.path.display(), "a closed file is gone");
                    self.begin_retiring(key);
                }
            }
        }
        for p in resumed {
            let Some(at) = found.next().flatten() else {
                info!(source = %self.ctx.name, file = %p.path,
                    "a file of the last run is gone; its position is forgotten");
                self.positions_changed = true;
                continue;
            };
            info!(source = %self.ctx.name, file = %p.path, now_at = %at.display(),
                "a file of the last run was rotated away; found by its inode, reading it to its end");
            let path = PathBuf::from(&p.path);
            // The pattern the file was matched under decides its static headers.
            let pattern = self.patterns.pattern_of(&path).unwrap_or(0);
            let key = self.add(&path, pattern, (p.dev, p.ino), Begin::at(&p));
            if let Some(st) = self.files.get_mut(&key) {
                st.open_path = at;
                st.bound = false;
            }
            self.unbound.insert(key);
            self.enqueue(key);
        }
    }

    /// Closes files that were not written for `idle_timeout`; they are opened again when
    /// they grow.
    fn close_idle(&mut self) {
        let idle = self.cfg.idle_timeout.0;
        for st in self.files.values_mut() {
            if st.bound
                && st.eof
                && !st.queued
                && matches!(st.reader, Slot::Open(_))
                && st.last_growth.elapsed() >= idle
            {
                debug!(source = %self.ctx.name, file = %st.path.display(), "closing an idle file");
                close(st, &mut self.open);
            }
        }
    }

    /// Closes the least recently grown idle open file to make room; false if none can be.
    fn evict(&mut self) -> bool {
        let victim = self
            .files
            .iter()
            .filter(|(_, s)| s.bound && s.eof && !s.queued && matches!(s.reader, Slot::Open(_)))
            .min_by_key(|(_, s)| s.last_growth)
            .map(|(k, _)| *k);
        match victim.and_then(|k| self.files.get_mut(&k)) {
            Some(st) => {
                close(st, &mut self.open);
                true
            }
            None => false,
        }
    }

    /// Reads the queued files once each (as many as the round allows) and puts their lines.
    async fn read_round(&mut self, shutdown: &mut Shutdown) -> Round {
        let mut jobs = Vec::new();
        let mut deferred = Vec::new();
        let rotate_wait = self.cfg.rotate_wait.0;
        let max_open = self.cfg.max_open_files;
        while jobs.len() < ROUND_FILES {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            let needs_slot = self
                .files
                .get(&key)
                .is_some_and(|s| matches!(s.reader, Slot::Closed | Slot::Held(_)));
            if needs_slot && self.open >= max_open && !self.evict() {
                deferred.push(key);
                continue;
            }
            let Some(st) = self.files.get_mut(&key) else {
                continue;
            };
            st.queued = false;
            if st.retiring {
                continue;
            }
            let (reader, start, held) = match std::mem::replace(&mut st.reader, Slot::Lent) {
                Slot::Open(r) => (Some(r), Start::At(st.read_pos), None),
                Slot::Closed => {
                    self.open += 1;
                    (None, st.start, None)
                }
                Slot::Held(file) => {
                    self.open += 1;
                    self.held -= 1;
                    (None, st.start, Some(file))
                }
                Slot::Lent => continue,
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
            if let Some(st) = self.files.get_mut(&key) {
                st.queued = true;
                self.queue.push_back(key);
            }
        }
        if jobs.is_empty() {
            return Round::Idle;
        }
        let settings = self.settings.clone();
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
        let Some(st) = self.files.get_mut(&d.key) else {
            return;
        };
        let name = &self.ctx.name;
        let long = (self.cfg.max_line_bytes.0, self.cfg.long_lines);
        pipeline::long_lines(&self.ctx, &st.path, st.read_pos, d.long, long);
        if let Some(v) = d.restarted {
            let what = if v == Verdict::Shrunk {
                "truncated"
            } else {
                "replaced by other content"
            };
            warn!(source = %name, file = %st.path.display(), offset = st.read_pos, what,
                "file truncated or rewritten; reading it again from its start");
            st.progress.reset(0);
            st.read_pos = 0;
            self.positions_changed = true;
        }
        st.generation = d.generation;
        st.fp = d.fp;
        st.origin = d.origin;
        if let Some(at) = d.opened_at
            && st.progress.settle_at(at)
        {
            self.positions_changed = true;
        }
        st.reader = match d.reader {
            Some(r) => Slot::Open(r),
            None => {
                self.open -= 1;
                Slot::Closed
            }
        };
        match d.status {
            Status::Read { eof } => {
                st.read_pos = d.read_pos;
                st.read_end = d.read_end;
                st.start = Start::At(d.read_pos);
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
                if d.unmarked && st.progress.pass(d.read_pos) {
                    self.positions_changed = true;
                }
                if !eof && !st.queued {
                    st.queued = true;
                    self.queue.push_back(d.key);
                }
            }
            Status::Finished => {
                info!(source = %name, file = %st.path.display(), offset = d.read_pos,
                    "rotated file read to its end and closed");
                st.read_pos = d.read_pos;
                st.read_end = d.read_pos;
                SourceMetrics::add(&self.ctx.metrics.files_completed, 1);
                self.unbound.remove(&d.key);
                self.begin_retiring(d.key);
            }
            Status::Gone => {
                if st.bound {
                    self.scan_wanted = true;
                } else {
                    debug!(source = %name, file = %st.path.display(), "a rotated file vanished before it was opened");
                    self.unbound.remove(&d.key);
                    self.begin_retiring(d.key);
                }
            }
            Status::Failed(e) => {
                SourceMetrics::add(&self.ctx.metrics.read_errors, 1);
                error!(source = %name, file = %st.open_path.display(), offset = st.read_pos, error = %e,
                    "cannot read the file; trying again when it changes");
                st.read_end = st.read_pos;
                st.start = Start::At(st.read_pos);
                if !st.bound {
                    self.unbound.remove(&d.key);
                    self.begin_retiring(d.key);
                }
            }
        }
    }

    fn begin_retiring(&mut self, key: Key) {
        if let Some(st) = self.files.get_mut(&key) {
            st.retiring = true;
            if st.queued {
                st.queued = false;
                self.queue.retain(|k| *k != key);
            }
            self.retiring.insert(key);
        }
    }

    /// Puts the batches into the channel in order and records their receipts; false if it
    /// must stop.
    async fn put(&mut self, batches: Vec<Batch>, shutdown: &mut Shutdown) -> bool {
        let (files, inflight) = (&mut self.files, &mut self.inflight);
        pipeline::put(&self.ctx, batches, shutdown, |m, receipt| {
            if let Some(st) = files.get_mut(&m.key)
                && st.generation == m.generation
            {
                st.progress.push(receipt.clone(), m.offset);
                inflight.insert(m.key);
            }
        })
        .await
    }

    /// Moves each file's safe offset over its receipts that are safe now.
    fn advance(&mut self) {
        let files = &mut self.files;
        let mut changed = false;
        self.inflight.retain(|key| {
            let Some(st) = files.get_mut(key) else {
                return false;
            };
            changed |= st.progress.advance();
            !st.progress.is_settled()
        });
        self.positions_changed |= changed;
    }

    /// Forgets files that are done with once their receipts are safe.
    fn retire(&mut self) {
        let files = &mut self.files;
        let by_inode = &mut self.by_inode;
        let by_path = &mut self.by_path;
        let inodes = Arc::make_mut(&mut self.inodes);
        let held = &mut self.held;
        let mut changed = false;
        self.retiring.retain(|key| {
            let Some(st) = files.get(key) else {
                return false;
            };
            if !st.progress.is_settled() {
                return true;
            }
            if matches!(st.reader, Slot::Held(_)) {
                *held -= 1;
            }
            if by_inode.get(&(st.dev, st.ino)) == Some(key) {
                by_inode.remove(&(st.dev, st.ino));
            }
            unmap(by_path, inodes, &st.path, *key);
            unmap(by_path, inodes, &st.open_path, *key);
            files.remove(key);
            changed = true;
            false
        });
        self.positions_changed |= changed;
    }

    /// Writes the positions in the background, unless the last write is still running (an
    /// urgent write waits for it).
    async fn checkpoint(&mut self) {
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            if !self.positions_urgent {
                return;
            }
            if let Some(h) = self.saving.take() {
                let _ = h.await;
            }
        }
        self.positions_urgent = false;
        let list: Vec<Position> = self.files.values().map(FileState::position).collect();
        let path = self.position_file.clone();
        let name = self.ctx.name.clone();
        self.positions_changed = false;
        self.next_checkpoint = Instant::now() + CHECKPOINT_EVERY;
        self.saving = Some(tokio::task::spawn_blocking(move || {
            save(&name, &path, &positions::encode(list), false)
        }));
    }

    /// Stops reading and waits for what was put to become safe (until the agent aborts),
    /// then writes the positions.
    async fn drain(&mut self, shutdown: &mut Shutdown) {
        let keys: Vec<Key> = self.inflight.iter().copied().collect();
        'files: for key in keys {
            let Some(st) = self.files.get_mut(&key) else {
                continue;
            };
            while !st.progress.is_settled() {
                tokio::select! {
                    ok = st.progress.wait_oldest() => if !ok { break 'files },
                    _ = shutdown.reached(Phase::Aborting) => break 'files,
                }
            }
        }
        self.advance();
        self.retire();
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
        let list: Vec<Position> = self.files.values().map(FileState::position).collect();
        let data = Arc::new(positions::encode(list));
        let (path, name) = (self.position_file.clone(), self.ctx.name.clone());
        let write = {
            let (path, name, data) = (path.clone(), name.clone(), data.clone());
            move || save(&name, &path, &data, true)
        };
        if blocking::run(&Handle::current(), write).await.is_err() {
            // The runtime runs no more blocking work: write here, so that the stop keeps
            // what was safe.
            save(&name, &path, &data, true);
        }
    }
}

/// The state of a file found at `path`, matched by pattern number `pattern`, to be read as
/// `begin` says.
fn new_state(
    cfg: &TailDirConfig,
    ctx: &SourceContext,
    path: &Path,
    pattern: usize,
    (dev, ino): (u64, u64),
    begin: Begin,
) -> FileState {
    let mut headers: Vec<(String, String)> = Vec::new();
    let pattern_headers = cfg.paths.get(pattern).map(|p| &p.headers);
    for (k, v) in &cfg.headers {
        if !pattern_headers.is_some_and(|h| h.contains_key(k)) {
            headers.push((k.clone(), v.clone()));
        }
    }
    headers.extend(
        pattern_headers
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let base = Arc::new(Origin::for_file(&ctx.name, path, &ctx.host, headers));
    let read = match begin.start {
        Start::At(o) => o,
        Start::End => 0,
    };
    FileState {
        path: path.to_path_buf(),
        open_path: path.to_path_buf(),
        dev,
        ino,
        fp: begin.fp,
        generation: 0,
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

/// Removes `path` from the maps if it leads to `key`.
fn unmap(
    by_path: &mut HashMap<PathBuf, Key>,
    inodes: &mut HashMap<PathBuf, (u64, u64)>,
    path: &Path,
    key: Key,
) {
    if by_path.get(path) == Some(&key) {
        by_path.remove(path);
        inodes.remove(path);
    }
}

fn close(st: &mut FileState, open: &mut usize) {
    if matches!(st.reader, Slot::Open(_)) {
        st.reader = Slot::Closed;
        *open -= 1;
    }
    st.read_end = st.read_pos;
    st.start = Start::At(st.read_pos);
}

/// Writes the positions: durably at stop, and often but only crash-safe (not power-loss-safe)
/// while running, which at worst repeats lines.
fn save(source: &str, path: &Path, data: &[u8], durable: bool) {
    if let Err(e) = positions::save(path, data, durable) {
        error!(source, position_file = %path.display(), error = %e,
            "cannot write the position file; lines read since the last write may repeat after a restart");
    }
}

/// Finds the file with device `dev` and inode `ino` in the folder of `path`.
fn find_by_inode(path: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
    let dir = path.parent()?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.ino() == ino)
        .map(|e| e.path())
        .find(|p| {
            std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.dev() == dev && m.ino() == ino && m.is_file())
        })
}
