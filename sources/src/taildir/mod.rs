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
//!
//! The running source keeps its state by concern: the followed files and the indexes that find
//! them ([`files`]), how many are open ([`open_set`]), finding files ([`discovery`]), where a
//! new file starts ([`resume`]), when positions are written ([`checkpoint`]), and which files
//! wait for what, with the rounds of reads ([`rounds`]).

mod checkpoint;
pub mod config;
mod discovery;
mod files;
mod identity;
mod matcher;
mod open_set;
mod positions;
mod reader;
mod resume;
mod rounds;
mod watcher;

use std::path::{Path, PathBuf};
use std::time::Instant;

use sluice_channels::lifecycle::{Phase, Shutdown};
use tracing::info;

use checkpoint::Checkpoint;
pub use config::{PathSpec, ReadFrom, TailDirConfig};
use discovery::Discovery;
use files::Files;
use open_set::OpenSet;
use positions::Loaded;
use resume::Resume;
use rounds::{Jobs, Round};

use crate::{SourceContext, SourceError};

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
        let mut loaded = positions::load(&self.position_file)
            .map_err(|e| state_error(&self.position_file, e))?;
        if let (Loaded::Missing, Some(flume)) = (&loaded, &self.cfg.import_flume_positions) {
            match positions::import_flume(flume) {
                Ok(Some(list)) => {
                    info!(flume_position_file = %flume.display(), files = list.len(),
                        "first run: starting from Flume's positions");
                    loaded = Loaded::Imported(list);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(flume_position_file = %flume.display(), error,
                        "Flume's position file cannot be read; files are read as on a first run");
                }
            }
        }
        let mut tail = Tail::new(self, loaded);
        tail.run().await;
        Ok(())
    }
}

/// The running source.
struct Tail {
    cfg: TailDirConfig,
    ctx: SourceContext,
    discovery: Discovery,
    files: Files,
    open: OpenSet,
    resume: Resume,
    positions: Checkpoint,
    jobs: Jobs,
}

impl Tail {
    fn new(src: TailDirSource, loaded: Loaded) -> Self {
        let TailDirSource {
            cfg,
            ctx,
            position_file,
        } = src;
        let policy = (cfg.read_from, cfg.ignore_older.map(|d| d.0));
        let resume = Resume::new(loaded, policy, &position_file);
        Tail {
            discovery: Discovery::new(&cfg, &ctx, &position_file),
            files: Files::default(),
            open: OpenSet::new(cfg.max_open_files),
            resume,
            positions: Checkpoint::new(position_file),
            jobs: Jobs::new(&cfg, &ctx.metrics),
            cfg,
            ctx,
        }
    }

    async fn run(&mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        self.scan(true).await;
        self.ctx.metrics.mark_started();
        info!(
            files = self.files.len(),
            polling = self.discovery.polling(),
            "taildir source started"
        );
        let shared = self.discovery.shared();
        while !shutdown.is_stopping() {
            self.take_changes();
            let now = Instant::now();
            if self.discovery.is_due(now) {
                self.scan(false).await;
            }
            self.jobs
                .poll_unbound(&mut self.files, now, self.cfg.poll_interval.0);
            self.jobs.poll_pending(&mut self.files, now);
            let round = self.read_round(&mut shutdown).await;
            self.settle();
            if self.positions.is_due() {
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
        info!("taildir source stopped");
    }

    /// When the loop must look again without an event.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = self.discovery.wake();
        if self.jobs.is_busy() || self.positions.is_changed() {
            wake = wake.min(now + self.cfg.poll_interval.0);
        }
        if let Some(every) = self.jobs.pending_every() {
            wake = wake.min(now + every);
        }
        wake.max(now)
    }

    /// Stops reading and waits for what was put to become safe (until the agent aborts),
    /// then writes the positions.
    async fn drain(&mut self, shutdown: &mut Shutdown) {
        'files: for key in self.jobs.inflight() {
            let Some(st) = self.files.get_mut(key) else {
                continue;
            };
            while !st.progress.is_settled() {
                tokio::select! {
                    ok = st.progress.wait_oldest() => if !ok { break 'files },
                    _ = shutdown.reached(Phase::Aborting) => break 'files,
                }
            }
        }
        self.settle();
        self.last_checkpoint().await;
    }
}
