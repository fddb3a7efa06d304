//! The agent's configuration model: what a configuration is once validated, whatever it was
//! written in. A reload compares two of these component by component.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use sluice_channels::config::Problem;
use sluice_channels::{FileChannelConfig, MemoryChannelConfig};
use sluice_sinks::console::ConsoleConfig;
use sluice_sinks::kafka::KafkaConfig;
use sluice_sources::fanout::SelectorConfig;
use sluice_sources::spooldir::SpoolDirConfig;
use sluice_sources::taildir::TailDirConfig;

/// Everything wrong with a configuration, in file order where it can tell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems found (at least one).
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// The one problem `message` with `key`.
    pub fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::from(Problem::new(key, message))
    }
}

impl From<Problem> for ConfigError {
    fn from(p: Problem) -> Self {
        ConfigError { problems: vec![p] }
    }
}

/// One agent's validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The agent's name.
    pub name: String,
    /// Where the agent keeps its checkpoints and durable channels.
    pub data_dir: PathBuf,
    /// How long a stop may take to drain the channels before the agent gives up waiting.
    pub shutdown_timeout: Duration,
    /// How often a status line is logged (`None`: never).
    pub report_interval: Option<Duration>,
    /// Where `/metrics` and `/health` are served, if anywhere.
    pub http: Option<std::net::SocketAddr>,
    /// The sources, by name.
    pub sources: Vec<SourceDef>,
    /// The channels, by name.
    pub channels: Vec<ChannelDef>,
    /// The sinks, by name.
    pub sinks: Vec<SinkDef>,
    /// The sink groups, by name: several sinks on one channel, one delivering at a time.
    pub sink_groups: Vec<SinkGroupDef>,
    /// What is valid but probably not meant: two sources that read the same files, a pattern
    /// that covers the agent's own files. `validate` prints them; the agent logs them.
    pub warnings: Vec<Problem>,
    /// Keys that were accepted but change nothing (a Flume file's `transactionCapacity`),
    /// each with why; logged once at start, at info.
    pub notes: Vec<Problem>,
}

/// A configured source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDef {
    /// Its name.
    pub name: String,
    /// The channels it puts into (`channel: c1`, or `channels: [c1, c2]`), in order.
    pub channels: Vec<String>,
    /// How it chooses each event's channels.
    pub selector: SelectorConfig,
    /// Its type and options.
    pub kind: SourceKind,
}

/// The source types.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// `type: spooldir`.
    SpoolDir(SpoolDirConfig),
    /// `type: taildir`.
    TailDir(TailDirConfig),
}

/// A configured channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelDef {
    /// Its name.
    pub name: String,
    /// Its type and options.
    pub kind: ChannelKind,
}

/// The channel types.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    /// `type: memory`.
    Memory(MemoryChannelConfig),
    /// `type: file`: the durable channel; a relative `dir` is resolved under `data_dir`.
    File(FileChannelConfig),
}

/// A configured sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkDef {
    /// Its name.
    pub name: String,
    /// The channel it drains.
    pub channel: String,
    /// Its type and options.
    pub kind: SinkKind,
}

/// A configured sink group (`processor: failover`).
#[derive(Debug, Clone, PartialEq)]
pub struct SinkGroupDef {
    /// Its name.
    pub name: String,
    /// Its sinks, highest priority first; they drain one channel.
    pub sinks: Vec<String>,
    /// The longest a failed sink waits before it is tried again.
    pub max_penalty: Duration,
}

impl AgentConfig {
    /// Moves the agent's state to `dir` (`--data-dir`): file channels whose folder was
    /// under the old data folder (written relative to it) move with it.
    pub fn set_data_dir(&mut self, dir: &std::path::Path) {
        for c in &mut self.channels {
            if let ChannelKind::File(f) = &mut c.kind
                && let Ok(rest) = f.dir.strip_prefix(&self.data_dir)
            {
                f.dir = dir.join(rest);
            }
        }
        self.data_dir = dir.to_path_buf();
    }

    /// The group `sink` is in, if any.
    pub fn group_of(&self, sink: &str) -> Option<&SinkGroupDef> {
        self.sink_groups
            .iter()
            .find(|g| g.sinks.iter().any(|s| s == sink))
    }
}

/// The sink types.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// `type: console`.
    Console(ConsoleConfig),
    /// `type: kafka`.
    Kafka(Box<KafkaConfig>),
}

impl SourceKind {
    /// What it reads, for the start line.
    pub fn describe(&self) -> String {
        match self {
            SourceKind::SpoolDir(c) => format!("spooldir {}", c.dir.display()),
            SourceKind::TailDir(c) => {
                let globs: Vec<&str> = c.paths.iter().map(|p| p.glob.as_str()).collect();
                format!("taildir {}", globs.join(" "))
            }
        }
    }
}

impl ChannelKind {
    /// Its kind and capacity, for the start line.
    pub fn describe(&self) -> String {
        match self {
            ChannelKind::Memory(m) => format!("memory, {} events", m.capacity),
            ChannelKind::File(f) => format!(
                "file {}, {} bytes, fsync {:?}",
                f.dir.display(),
                f.capacity.0,
                f.fsync
            ),
        }
    }
}

impl SinkKind {
    /// Where it delivers, for the start line.
    pub fn describe(&self) -> String {
        match self {
            SinkKind::Console(_) => "console".to_owned(),
            SinkKind::Kafka(k) => format!("kafka {} topic {}", k.brokers, k.topic.as_str()),
        }
    }
}
