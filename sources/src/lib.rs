//! Sluice's sources: they read files, frame lines and put them into a channel, and advance
//! their checkpoints only over batches the channel reports safe.

mod blocking;
mod defaults;
pub mod fanout;
pub mod framing;
mod metrics;
mod pipeline;
pub mod spooldir;
pub mod taildir;

use std::path::PathBuf;
use std::sync::Arc;

use sluice_channels::lifecycle::Shutdown;

use crate::fanout::Fanout;

pub use metrics::{DroppedBy, SourceMetrics};
pub use pipeline::{Format, MultilineConfig, STREAM_HEADER, TIME_HEADER};
pub use pipeline::{InterceptorConfig, Interceptors};

#[cfg(test)]
#[global_allocator]
static ALLOC: sluice_channels::fuzzing::CountingAlloc = sluice_channels::fuzzing::CountingAlloc;

/// What the agent gives a source to run with.
#[derive(Clone)]
pub struct SourceContext {
    /// The source's name in the configuration (`r1`).
    pub name: String,
    /// The channels the source puts into, and how it chooses each event's.
    pub channels: Arc<Fanout>,
    /// A folder the source owns for its checkpoints; created by the source if missing.
    pub state_dir: PathBuf,
    /// The agent's data folder (its lock, every source's checkpoints, the file channels'
    /// logs): a source never reads a file under it, whatever its patterns match.
    pub data_dir: PathBuf,
    /// The host name, for event headers.
    pub host: String,
    /// The agent's lifecycle.
    pub shutdown: Shutdown,
    /// The source's counters.
    pub metrics: Arc<SourceMetrics>,
}

/// Why a source stopped before it was asked to. The underlying error is the `source()` of
/// each, so that `{:#}` (anyhow) shows the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not create or use its state folder.
    #[error("source {source_name}: state folder {path}")]
    State {
        /// The source's name.
        source_name: String,
        /// The folder or file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        error: std::io::Error,
    },
    /// The folder the source watches is missing or unreadable.
    #[error("source {source_name}: {path}")]
    Dir {
        /// The source's name.
        source_name: String,
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        error: std::io::Error,
    },
}

/// The 64-bit FNV-1a hash of `bytes`: a fixed function (no per-process seed) for what must
/// be the same across restarts and releases (file fingerprints, partitions).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `t` in nanoseconds since the Unix epoch; `None` before it. The file identities (`fid`)
/// hash times in this form.
pub(crate) fn unix_nanos(t: std::time::SystemTime) -> Option<u128> {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_underlying_error_is_the_source_and_not_repeated() {
        let e = SourceError::Dir {
            source_name: "r1".into(),
            path: "/spool".into(),
            error: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(e.to_string(), "source r1: /spool");
        assert!(std::error::Error::source(&e).is_some());
    }
}
