//! The file channel's options, as written under `channels.NAME` with `type: file`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Problem;
use crate::units::{ByteSize, HumanDuration};

/// When the channel forces its writes to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync before a put's receipt resolves; concurrent puts share one fsync (group commit).
    /// Nothing acknowledged is lost, even on power loss.
    #[default]
    Always,
    /// Receipts resolve once the batch is written; fsync every `fsync_interval`. A process
    /// crash loses nothing; a power loss may lose the last interval.
    Interval,
    /// Receipts resolve once the batch is written; the operating system decides when it
    /// reaches the disk. A process crash loses nothing; a power loss may lose what the
    /// kernel had not written yet.
    Never,
}

/// The file channel's options.
///
/// `dir` is taken as given here; the agent resolves a relative `dir` under its `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChannelConfig {
    /// The directory of the channel's segments and checkpoint; one channel owns it.
    pub dir: PathBuf,
    /// The most event bytes held (bodies of events put and not yet committed); a put that
    /// would exceed it waits.
    #[serde(default = "default_capacity")]
    pub capacity: ByteSize,
    /// The most events held, if limited.
    #[serde(default)]
    pub capacity_events: Option<u64>,
    /// The size at which a segment file is closed and the next one started.
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
    /// When writes are forced to disk.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// How often `fsync: interval` forces writes to disk.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval: HumanDuration,
    /// Writes wait while the file system has less free space than this.
    #[serde(default = "default_min_free_space")]
    pub min_free_space: ByteSize,
}

fn default_capacity() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_segment_size() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_fsync_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_min_free_space() -> ByteSize {
    ByteSize(512 << 20)
}

/// The smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: u64 = 4 << 10;
/// The largest segment size accepted.
pub const MAX_SEGMENT_SIZE: u64 = 16 << 30;

impl FileChannelConfig {
    /// The defaults, with the given directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileChannelConfig {
            dir: dir.into(),
            capacity: default_capacity(),
            capacity_events: None,
            segment_size: default_segment_size(),
            fsync: FsyncPolicy::default(),
            fsync_interval: default_fsync_interval(),
            min_free_space: default_min_free_space(),
        }
    }

    /// Checks what serde cannot: the folder, the limits, the segment size, the interval.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.dir.as_os_str().is_empty() {
            problems.push(Problem::new("dir", "must not be empty"));
        }
        if self.capacity.0 == 0 {
            problems.push(Problem::new("capacity", "must be at least 1 byte"));
        }
        if self.capacity_events == Some(0) {
            problems.push(Problem::new("capacity_events", "must be at least 1"));
        }
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size.0) {
            problems.push(Problem::new(
                "segment_size",
                format!(
                    "must be between {} and {}",
                    ByteSize(MIN_SEGMENT_SIZE),
                    ByteSize(MAX_SEGMENT_SIZE)
                ),
            ));
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval.0.is_zero() {
            problems.push(Problem::new("fsync_interval", "must be longer than 0"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_units_parse() {
        let c: FileChannelConfig = serde_yaml::from_str("dir: /var/lib/sluice/c1").unwrap();
        assert_eq!(c, FileChannelConfig::new("/var/lib/sluice/c1"));
        assert!(c.validate().is_empty());
        let c: FileChannelConfig = serde_yaml::from_str(
            "{dir: d, capacity: 2GiB, capacity_events: 10, segment_size: 1MiB, fsync: interval, \
             fsync_interval: 250ms, min_free_space: 0}",
        )
        .unwrap();
        assert_eq!(c.capacity, ByteSize(2 << 30));
        assert_eq!(c.capacity_events, Some(10));
        assert_eq!(c.fsync, FsyncPolicy::Interval);
        assert_eq!(c.fsync_interval.0, Duration::from_millis(250));
        assert_eq!(c.min_free_space, ByteSize(0));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(serde_yaml::from_str::<FileChannelConfig>("{dir: d, capacty: 1}").is_err());
        assert!(serde_yaml::from_str::<FileChannelConfig>("{dir: d, fsync: sometimes}").is_err());
        assert!(serde_yaml::from_str::<FileChannelConfig>("{capacity: 1}").is_err());
        let c: FileChannelConfig = serde_yaml::from_str(
            "{dir: '', capacity: 0, capacity_events: 0, segment_size: 1KiB, fsync: interval, \
             fsync_interval: 0s}",
        )
        .unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "dir",
                "capacity",
                "capacity_events",
                "segment_size",
                "fsync_interval"
            ]
        );
    }
}
