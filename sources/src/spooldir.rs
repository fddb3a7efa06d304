//! The spooling-directory source: finished files dropped in a folder, each read once in full,
//! then renamed with a suffix or deleted.
//!
//! Progress is checkpointed in `STATE_DIR/spooldir.json` as the file in progress (path, device,
//! inode) and the offset up to which every line is safe. A restart resumes there: no line is
//! lost, and only lines that were in flight are read again. A file is renamed or deleted only
//! once all its lines are safe.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sluice_channels::lifecycle::Phase;
use sluice_channels::units::{ByteSize, HumanDuration};
use sluice_channels::{Event, Origin, Receipt};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::framing::{LineFramer, LongLinePolicy};
use crate::{SourceContext, SourceError, SourceMetrics, atomic_file, now_ms};

/// How much is read from a file at a time.
const READ_CHUNK: usize = 1 << 20;
/// How often the checkpoint is made durable (fsynced) while a file is being read. In between,
/// it is rewritten without fsync whenever the safe offset advances, which a crash of the
/// process survives.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The suffix of files set aside after an error.
pub const FAILED_SUFFIX: &str = ".FAILED";

/// What happens to a file once all its lines are safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterRead {
    /// Rename it with the completed suffix.
    #[default]
    Rename,
    /// Delete it.
    Delete,
}

/// Which waiting file is read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// The least recently modified first.
    #[default]
    Oldest,
    /// The most recently modified first.
    Youngest,
    /// By file name, in byte order.
    Name,
}

/// The spooldir source's options, as written under `sources.NAME` (without `type` and
/// `channel`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolDirConfig {
    /// The folder files are dropped into.
    pub dir: PathBuf,
    /// Globs on the file name; a file is read only if one matches. Empty: every file.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs on the file name of files never read. Names starting with `.` and names ending
    /// with the completed suffix or `.FAILED` are always ignored.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Appended to a file's name once it is read.
    #[serde(default = "default_suffix")]
    pub completed_suffix: String,
    /// Rename or delete a read file.
    #[serde(default)]
    pub after_read: AfterRead,
    /// Which file is read next.
    #[serde(default)]
    pub order: Order,
    /// The most lines put into the channel at once.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The longest line kept whole; longer lines follow `long_lines`.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: ByteSize,
    /// `split` (default: pieces of `max_line_bytes`, nothing lost) or `truncate`.
    #[serde(default)]
    pub long_lines: LongLinePolicy,
    /// How often the folder is listed when no file-system event arrives.
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// Static headers added to every event of this source.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn default_suffix() -> String {
    ".COMPLETED".to_owned()
}
fn default_batch_size() -> usize {
    1000
}
fn default_max_line() -> ByteSize {
    ByteSize(960 << 10)
}
fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}

/// A configuration problem: the option's key (relative to the source) and what is wrong.
pub type ConfigProblem = (String, String);

impl SpoolDirConfig {
    /// Checks what serde cannot: globs, sizes, the suffix.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (key, globs) in [("include", &self.include), ("ignore", &self.ignore)] {
            for (i, g) in globs.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(g) {
                    problems.push((
                        format!("{key}[{i}]"),
                        format!("`{g}` is not a valid glob: {e}"),
                    ));
                }
            }
        }
        if self.completed_suffix.is_empty() {
            problems.push(("completed_suffix".into(), "must not be empty".into()));
        }
        if self.batch_size == 0 {
            problems.push(("batch_size".into(), "must be at least 1".into()));
        }
        if self.max_line_bytes.0 == 0 {
            problems.push(("max_line_bytes".into(), "must be at least 1 byte".into()));
        }
        if self.poll_interval.0.is_zero() {
            problems.push(("poll_interval".into(), "must be longer than 0".into()));
        }
        problems
    }
}

/// The checkpoint: the files in progress, oldest first, and how much of each is safe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
struct Checkpoint {
    /// Files read (or being read) whose lines are not all safe yet.
    files: Vec<InProgress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InProgress {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Every line before this offset is safe.
    offset: u64,
}

/// A file that was looked at and must not be looked at again while it stays the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Skipped {
    path: PathBuf,
    ino: u64,
    len: u64,
    mtime: i64,
}

/// The most files whose lines are in the channel but not all safe yet. Reading the next file
/// while the last one's lines are still being delivered keeps the sink busy at file
/// boundaries.
const MAX_FILES_IN_FLIGHT: usize = 8;

/// A file read (or being read) whose lines are not all safe yet.
struct InFlight {
    path: PathBuf,
    meta: fs::Metadata,
    /// Receipts of the batches put, with the offset just past each batch.
    pending: VecDeque<(Receipt, u64)>,
    /// Every line before this offset is safe.
    safe: u64,
    /// How reading ended: `None` while it goes on (or was interrupted by a stop),
    /// `Some(true)` at the end of the file, `Some(false)` on a read error.
    read: Option<bool>,
}

/// The spooling-directory source.
pub struct SpoolDirSource {
    cfg: SpoolDirConfig,
    include: Vec<glob::Pattern>,
    ignore: Vec<glob::Pattern>,
    ctx: SourceContext,
    checkpoint_path: PathBuf,
    skipped: HashSet<Skipped>,
    /// Files whose lines are not all safe yet, oldest first.
    flight: VecDeque<InFlight>,
    /// When the checkpoint was last made durable.
    synced_at: Instant,
}

impl SpoolDirSource {
    /// A source over `cfg.dir`; the configuration must have passed [`SpoolDirConfig::validate`].
    pub fn new(cfg: SpoolDirConfig, ctx: SourceContext) -> Self {
        let compile = |globs: &[String]| {
            globs
                .iter()
                .filter_map(|g| glob::Pattern::new(g).ok())
                .collect()
        };
        SpoolDirSource {
            include: compile(&cfg.include),
            ignore: compile(&cfg.ignore),
            checkpoint_path: ctx.state_dir.join("spooldir.json"),
            cfg,
            ctx,
            skipped: HashSet::new(),
            flight: VecDeque::new(),
            synced_at: Instant::now(),
        }
    }

    /// Runs until the agent stops: picks up files, reads them, completes them.
    pub async fn run(mut self) -> Result<(), SourceError> {
        fs::create_dir_all(&self.ctx.state_dir).map_err(|error| SourceError::State {
            source_name: self.ctx.name.clone(),
            path: self.ctx.state_dir.clone(),
            error,
        })?;
        fs::read_dir(&self.cfg.dir).map_err(|error| SourceError::Dir {
            source_name: self.ctx.name.clone(),
            path: self.cfg.dir.clone(),
            error,
        })?;
        let wake = Arc::new(Notify::new());
        let _watcher = self.watch(wake.clone());
        let mut resume: VecDeque<InProgress> = self.load_checkpoint().files.into();
        info!(source = %self.ctx.name, dir = %self.cfg.dir.display(), "spooldir source started");
        let mut shutdown = self.ctx.shutdown.clone();
        while !shutdown.is_stopping() {
            self.advance(false).await;
            if self.flight.len() >= MAX_FILES_IN_FLIGHT {
                if !self.wait_front().await {
                    break;
                }
                continue;
            }
            let mut next = None;
            while next.is_none()
                && let Some(p) = resume.pop_front()
            {
                next = self.resume_target(p);
            }
            let Some((path, offset)) = next.or_else(|| self.scan()) else {
                let notified = wake.notified();
                let waiting = self.flight.iter().any(|f| !f.pending.is_empty());
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(self.cfg.poll_interval.0) => {}
                    _ = shutdown.reached(Phase::Draining) => {}
                    _ = self.wait_front(), if waiting => {}
                }
                continue;
            };
            if !self.read_file(&path, offset).await {
                break;
            }
        }
        // Stopping: wait for what was put to become safe (the sinks drain meanwhile),
        // completing the files that become safe, unless the drain deadline passes first.
        while self.flight.iter().any(|f| !f.pending.is_empty()) {
            if !self.wait_front().await {
                break;
            }
            self.advance(false).await;
        }
        self.advance(true).await;
        info!(source = %self.ctx.name, "spooldir source stopped");
        Ok(())
    }

    /// Starts a file-system watcher that wakes the loop; polling covers its absence.
    fn watch(&self, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        // Only a name appearing or changing can bring a new file. Opening, reading and closing
        // (the source's own listing and reads among them) must not wake the loop, or it would
        // wake itself forever.
        let handler = move |event: notify::Result<notify::Event>| {
            if event.is_err() || event.is_ok_and(|e| wakes_the_scan(&e.kind)) {
                wake.notify_one();
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                warn!(source = %self.ctx.name, error = %e, "no file-system events; polling the folder");
                return None;
            }
        };
        if let Err(e) = watcher.watch(&self.cfg.dir, notify::RecursiveMode::NonRecursive) {
            warn!(source = %self.ctx.name, dir = %self.cfg.dir.display(), error = %e,
                "cannot watch the folder; polling it");
            return None;
        }
        Some(watcher)
    }

    fn load_checkpoint(&self) -> Checkpoint {
        let data = match fs::read(&self.checkpoint_path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Checkpoint::default(),
            Err(e) => {
                error!(source = %self.ctx.name, checkpoint = %self.checkpoint_path.display(), error = %e,
                    "cannot read the checkpoint; files in progress are read again from their start");
                return Checkpoint::default();
            }
        };
        match serde_json::from_slice(&data) {
            Ok(c) => c,
            Err(e) => {
                let aside = atomic_file::set_aside(&self.checkpoint_path);
                error!(source = %self.ctx.name, checkpoint = %self.checkpoint_path.display(), error = %e,
                    moved_to = ?aside.as_ref().ok(),
                    "corrupt checkpoint set aside; files in progress are read again from their start");
                Checkpoint::default()
            }
        }
    }

    /// Writes the checkpoint of the files in flight; see [`SYNC_EVERY`] for `durable`.
    async fn save_checkpoint(&mut self, durable: bool) {
        let cp = Checkpoint {
            files: self
                .flight
                .iter()
                .map(|f| InProgress {
                    path: f.path.clone(),
                    dev: f.meta.dev(),
                    ino: f.meta.ino(),
                    offset: f.safe,
                })
                .collect(),
        };
        if durable {
            self.synced_at = Instant::now();
        }
        let path = self.checkpoint_path.clone();
        let data = serde_json::to_vec(&cp).unwrap_or_default();
        let result =
            tokio::task::spawn_blocking(move || atomic_file::write_atomic(&path, &data, durable))
                .await;
        if let Err(e) = result.map_err(io::Error::other).and_then(|r| r) {
            error!(source = %self.ctx.name, checkpoint = %self.checkpoint_path.display(), error = %e,
                "cannot write the checkpoint; progress since the last one may be read again after a restart");
        }
    }

    /// The file in progress at the last stop, if it is still the same file.
    fn resume_target(&self, p: InProgress) -> Option<(PathBuf, u64)> {
        match fs::metadata(&p.path) {
            Ok(m) if m.dev() == p.dev && m.ino() == p.ino && m.len() >= p.offset => {
                info!(source = %self.ctx.name, file = %p.path.display(), offset = p.offset,
                    "resuming the file in progress");
                Some((p.path, p.offset))
            }
            Ok(_) => {
                warn!(source = %self.ctx.name, file = %p.path.display(),
                    "the file in progress was replaced since the last run; reading the new one from its start");
                None
            }
            Err(_) => None,
        }
    }

    fn is_candidate(&self, name: &str) -> bool {
        if name.starts_with('.')
            || name.ends_with(&self.cfg.completed_suffix)
            || name.ends_with(FAILED_SUFFIX)
        {
            return false;
        }
        if !self.include.is_empty() && !self.include.iter().any(|p| p.matches(name)) {
            return false;
        }
        !self.ignore.iter().any(|p| p.matches(name))
    }

    /// Lists the folder and picks the next file to read, by the configured order.
    fn scan(&mut self) -> Option<(PathBuf, u64)> {
        let entries = match fs::read_dir(&self.cfg.dir) {
            Ok(e) => e,
            Err(e) => {
                error!(source = %self.ctx.name, dir = %self.cfg.dir.display(), error = %e, "cannot list the folder");
                return None;
            }
        };
        let mut best: Option<(SystemTime, PathBuf)> = None;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !self.is_candidate(&name) {
                continue;
            }
            let path = entry.path();
            if self.flight.iter().any(|f| f.path == path) {
                continue;
            }
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() || self.skipped.contains(&skip_key(&path, &meta)) {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let better = match (&best, self.cfg.order) {
                (None, _) => true,
                (Some((t, p)), Order::Oldest) => (mtime, &path) < (*t, p),
                (Some((t, p)), Order::Youngest) => mtime > *t || (mtime == *t && path < *p),
                (Some((_, p)), Order::Name) => path < *p,
            };
            if better {
                best = Some((mtime, path));
            }
        }
        best.map(|(_, p)| (p, 0))
    }

    fn completed_name(&self, path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(&self.cfg.completed_suffix);
        path.with_file_name(name)
    }

    /// Remembers a file that must not be picked up again while it stays as it is, and
    /// renames it with `.FAILED` when `rename` is set and possible.
    fn set_aside(&mut self, path: &Path, rename: bool) {
        SourceMetrics::add(&self.ctx.metrics.files_failed, 1);
        if rename {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(FAILED_SUFFIX);
            let dest = path.with_file_name(name);
            if !dest.exists() && fs::rename(path, &dest).is_ok() {
                warn!(source = %self.ctx.name, file = %path.display(), moved_to = %dest.display(), "file set aside");
                return;
            }
        }
        if let Ok(meta) = fs::metadata(path) {
            self.skipped.insert(skip_key(path, &meta));
        }
        warn!(source = %self.ctx.name, file = %path.display(), "file left in place and skipped while it stays unchanged");
    }

    /// Reads `path` from `offset` to its end, putting its lines into the channel; the file
    /// joins the files in flight and is completed once all its lines are safe. Returns false
    /// if the agent is stopping (or the channel refused a batch).
    async fn read_file(&mut self, path: &Path, offset: u64) -> bool {
        let opened = File::open(path).and_then(|mut f| {
            let meta = f.metadata()?;
            f.seek(SeekFrom::Start(offset))?;
            Ok((f, meta))
        });
        let (file, meta) = match opened {
            Ok(x) => x,
            Err(e) => {
                SourceMetrics::add(&self.ctx.metrics.read_errors, 1);
                error!(source = %self.ctx.name, file = %path.display(), error = %e, "cannot read the file");
                self.set_aside(path, e.kind() != io::ErrorKind::NotFound);
                return true;
            }
        };
        if self.cfg.after_read == AfterRead::Rename {
            let done = self.completed_name(path);
            if done.exists() {
                error!(source = %self.ctx.name, file = %path.display(), completed = %done.display(),
                    "the completed name is already taken; the file is not read (rename one of them)");
                self.set_aside(path, false);
                return true;
            }
        }
        debug!(source = %self.ctx.name, file = %path.display(), offset, size = meta.len(), "reading file");
        self.flight.push_back(InFlight {
            path: path.to_path_buf(),
            meta,
            pending: VecDeque::new(),
            safe: offset,
            read: None,
        });
        self.save_checkpoint(true).await;

        let headers = self.cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone()));
        let origin = Arc::new(Origin::for_file(
            &self.ctx.name,
            path,
            &self.ctx.host,
            headers.collect(),
        ));
        let mut reader = FileReader {
            file: Some(file),
            framer: Some(LineFramer::new(
                offset,
                self.cfg.max_line_bytes.as_usize(),
                self.cfg.long_lines,
            )),
        };
        let mut reported_long = 0u64;
        let mut shutdown = self.ctx.shutdown.clone();
        let batch_size = self.cfg.batch_size;
        loop {
            if shutdown.is_stopping() {
                return false;
            }
            let (batches, end) = match reader.next_batches(batch_size, &origin).await {
                Ok(x) => x,
                Err(e) => {
                    SourceMetrics::add(&self.ctx.metrics.read_errors, 1);
                    error!(source = %self.ctx.name, file = %path.display(), offset = reader.offset(), error = %e,
                        "read error; the file is set aside after what was read is safe");
                    self.set_read(false);
                    return true;
                }
            };
            let long = reader.long_lines();
            if long.lines > reported_long {
                warn!(source = %self.ctx.name, file = %path.display(), offset = reader.offset(),
                    lines = long.lines - reported_long, max_line_bytes = self.cfg.max_line_bytes.0,
                    policy = ?self.cfg.long_lines, "lines longer than max_line_bytes");
                SourceMetrics::add(&self.ctx.metrics.long_lines, long.lines - reported_long);
                reported_long = long.lines;
            }
            let count = batches.len();
            for (i, batch) in batches.into_iter().enumerate() {
                let batch_end = if i + 1 == count {
                    reader.offset()
                } else {
                    batch.1
                };
                let (events, bytes) = (
                    batch.0.len() as u64,
                    batch.0.iter().map(|e| e.body.len() as u64).sum(),
                );
                let put = self.ctx.channel.put(batch.0);
                let receipt = tokio::select! {
                    r = put => r,
                    _ = shutdown.reached(Phase::Aborting) => return false,
                };
                match receipt {
                    Ok(r) => {
                        if let Some(f) = self.flight.back_mut() {
                            f.pending.push_back((r, batch_end));
                        }
                    }
                    Err(e) => {
                        warn!(source = %self.ctx.name, error = %e, "channel refused a batch; stopping");
                        return false;
                    }
                }
                SourceMetrics::add(&self.ctx.metrics.events, events);
                SourceMetrics::add(&self.ctx.metrics.bytes, bytes);
            }
            self.advance(false).await;
            if end {
                self.set_read(true);
                return true;
            }
        }
    }

    /// Records how reading the newest file in flight ended: at its end, or on a read error.
    fn set_read(&mut self, to_the_end: bool) {
        if let Some(f) = self.flight.back_mut() {
            f.read = Some(to_the_end);
        }
    }

    /// Waits until the oldest unsafe batch in flight is safe. Returns false if the drain
    /// deadline passed (or the channel is gone) first.
    async fn wait_front(&mut self) -> bool {
        let mut shutdown = self.ctx.shutdown.clone();
        let Some(receipt) = self
            .flight
            .iter_mut()
            .find_map(|f| f.pending.front_mut().map(|(r, _)| r))
        else {
            return true;
        };
        tokio::select! {
            ok = receipt.wait() => ok,
            _ = shutdown.reached(Phase::Aborting) => false,
        }
    }

    /// Advances every file in flight over its safe batches, finishes the oldest files once
    /// all their lines are safe, and saves the checkpoint if anything moved: rewritten at
    /// once, made durable every [`SYNC_EVERY`], after a file is finished, or when `durable`
    /// asks.
    async fn advance(&mut self, durable: bool) {
        let mut moved = false;
        for f in &mut self.flight {
            while f.pending.front().is_some_and(|(r, _)| r.is_safe()) {
                if let Some((_, end)) = f.pending.pop_front() {
                    f.safe = end;
                    moved = true;
                }
            }
        }
        let mut finished = false;
        while self
            .flight
            .front()
            .is_some_and(|f| f.read.is_some() && f.pending.is_empty())
        {
            let Some(f) = self.flight.pop_front() else {
                break;
            };
            self.finish(f);
            finished = true;
        }
        if moved || finished || durable {
            let durable = durable || finished || self.synced_at.elapsed() >= SYNC_EVERY;
            self.save_checkpoint(durable).await;
        }
    }

    /// Completes a file whose lines are all safe: renames or deletes it, or sets it aside if
    /// it could not be read to its end or changed after it was picked up.
    fn finish(&mut self, f: InFlight) {
        let path = f.path.as_path();
        if f.read != Some(true) {
            self.set_aside(path, true);
            return;
        }
        if let Some(problem) = changed_since(path, &f.meta, f.safe) {
            SourceMetrics::add(&self.ctx.metrics.read_errors, 1);
            error!(source = %self.ctx.name, file = %path.display(), problem,
                "the file changed after it was picked up; spooldir files must be complete \
                 when they are dropped in (write elsewhere, then move them in)");
            self.set_aside(path, true);
            return;
        }
        let result = match self.cfg.after_read {
            AfterRead::Delete => fs::remove_file(path),
            AfterRead::Rename => rename_no_replace(path, &self.completed_name(path)),
        };
        match result {
            Ok(()) => {
                SourceMetrics::add(&self.ctx.metrics.files_completed, 1);
                info!(source = %self.ctx.name, file = %path.display(), after_read = ?self.cfg.after_read, "file completed");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                warn!(source = %self.ctx.name, file = %path.display(),
                    "the file vanished after it was read in full; nothing to rename");
            }
            Err(e) => {
                error!(source = %self.ctx.name, file = %path.display(), error = %e,
                    "cannot complete the file; all its lines are safe, it is left in place and skipped");
                self.set_aside(path, false);
            }
        }
    }
}

/// True for file-system events that may show a new file: created, renamed, written (a file
/// written in place may be complete later) or removed; false for opens, reads and closes.
fn wakes_the_scan(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    )
}

fn skip_key(path: &Path, meta: &fs::Metadata) -> Skipped {
    Skipped {
        path: path.to_path_buf(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    }
}

/// Why the file at `path` is not what was read (`read` bytes of the file opened with
/// `opened`), or `None` if it is unchanged.
fn changed_since(path: &Path, opened: &fs::Metadata, read: u64) -> Option<String> {
    match fs::metadata(path) {
        Ok(now) if now.ino() != opened.ino() || now.dev() != opened.dev() => {
            Some("the name now points to another file".into())
        }
        Ok(now) if now.len() != read => {
            Some(format!("it is now {} bytes; {read} were read", now.len()))
        }
        Ok(now) if now.mtime() != opened.mtime() || now.mtime_nsec() != opened.mtime_nsec() => {
            Some("it was modified while being read".into())
        }
        Ok(_) => None,
        Err(e) => Some(format!("it can no longer be looked at: {e}")),
    }
}

/// Renames `from` to `to` unless `to` exists, atomically where the file system has hard links.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if !to.exists() => fs::rename(from, to),
        Err(e) => Err(e),
    }
}

/// One batch of events and the offset of the line after its last one.
type Batch = (Vec<Event>, u64);

/// A file and its framer, moved to a blocking thread for each read.
struct FileReader {
    file: Option<File>,
    framer: Option<LineFramer>,
}

impl FileReader {
    fn offset(&self) -> u64 {
        self.framer.as_ref().map_or(0, LineFramer::offset)
    }

    fn long_lines(&self) -> crate::framing::LongLines {
        self.framer
            .as_ref()
            .map(LineFramer::long_lines)
            .unwrap_or_default()
    }

    /// Reads one chunk and frames it into batches of at most `batch_size` events. Returns
    /// the batches and whether the end of the file was reached (the last line, terminated or
    /// not, is then included).
    async fn next_batches(
        &mut self,
        batch_size: usize,
        origin: &Arc<Origin>,
    ) -> io::Result<(Vec<Batch>, bool)> {
        let (Some(mut file), Some(mut framer)) = (self.file.take(), self.framer.take()) else {
            return Err(io::Error::other("reader used after a failure"));
        };
        let origin = origin.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let result = framer.fill(&mut file, READ_CHUNK).map(|n| {
                let read_at_ms = now_ms();
                let mut batches: Vec<Batch> = Vec::new();
                let mut push = |body, offset| {
                    if batches.last().is_none_or(|b| b.0.len() >= batch_size) {
                        if let Some(last) = batches.last_mut() {
                            last.1 = offset;
                        }
                        batches.push((Vec::with_capacity(batch_size), 0));
                    }
                    if let Some(b) = batches.last_mut() {
                        b.0.push(Event {
                            body,
                            origin: origin.clone(),
                            offset,
                            read_at_ms,
                        });
                    }
                };
                if n == 0 {
                    framer.frame(&mut push);
                    framer.finish(&mut push);
                } else {
                    framer.frame(&mut push);
                }
                (batches, n == 0)
            });
            (file, framer, result)
        })
        .await
        .map_err(io::Error::other)?;
        let (file, framer, result) = joined;
        self.file = Some(file);
        self.framer = Some(framer);
        result
    }
}
