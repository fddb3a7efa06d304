//! When the position file is written: every second while positions change, at once when a new
//! file is followed, and durably at stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::error;

use super::Tail;
use super::positions;
use crate::blocking;

/// How often positions are written while they change.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Whether the positions changed since they were last written, and the write in flight.
pub(super) struct Checkpoint {
    path: PathBuf,
    changed: bool,
    /// A new file is followed: its position is written at once, so that a crash right after
    /// cannot forget it exists (were it renamed away before the restart, it would be missed).
    urgent: bool,
    saving: Option<JoinHandle<()>>,
    next: Instant,
}

impl Checkpoint {
    /// The position file at `path`, due to be written as soon as something changes.
    pub fn new(path: PathBuf) -> Self {
        Checkpoint {
            path,
            changed: false,
            urgent: false,
            saving: None,
            next: Instant::now(),
        }
    }

    /// A position changed: it is written within [`CHECKPOINT_EVERY`].
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// A position changed if `moved`.
    pub fn changed_if(&mut self, moved: bool) {
        self.changed |= moved;
    }

    /// A new file is followed: the positions are written at the next chance.
    pub fn new_file(&mut self) {
        self.changed = true;
        self.urgent = true;
    }

    /// Some position changed since the last write.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// The positions must be written now.
    pub fn is_due(&self) -> bool {
        self.urgent || (self.changed && Instant::now() >= self.next)
    }
}

impl Tail {
    /// Writes the positions in the background, unless the last write is still running (an
    /// urgent write waits for it).
    pub(super) async fn checkpoint(&mut self) {
        let cp = &mut self.positions;
        if cp.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            if !cp.urgent {
                return;
            }
            if let Some(h) = cp.saving.take() {
                // Cut off: the source is stopping, and its last write follows.
                let _ = blocking::join(h).await;
            }
        }
        cp.urgent = false;
        let list = self.files.positions();
        let path = cp.path.clone();
        cp.changed = false;
        cp.next = Instant::now() + CHECKPOINT_EVERY;
        cp.saving = Some(blocking::start(&Handle::current(), move || {
            save(&path, &positions::encode(list), false)
        }));
    }

    /// Waits for the write in flight, then writes the positions durably: the last write, at
    /// stop.
    pub(super) async fn last_checkpoint(&mut self) {
        if let Some(h) = self.positions.saving.take() {
            // Cut off or not, the last write below follows it.
            let _ = blocking::join(h).await;
        }
        let data = Arc::new(positions::encode(self.files.positions()));
        let path = self.positions.path.clone();
        let write = {
            let (path, data) = (path.clone(), data.clone());
            move || save(&path, &data, true)
        };
        if blocking::run(&Handle::current(), write).await.is_err() {
            // The runtime runs no more blocking work: write here, so that the stop keeps
            // what was safe.
            save(&path, &data, true);
        }
    }
}

/// Writes the positions: durably at stop, and often but only crash-safe (not power-loss-safe)
/// while running, which at worst repeats lines.
fn save(path: &Path, data: &[u8], durable: bool) {
    if let Err(e) = positions::save(path, data, durable) {
        error!(position_file = %path.display(), error = %e,
            "cannot write the position file; lines read since the last write may repeat after a restart");
    }
}
