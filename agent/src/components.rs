//! What the agent runs, as `/metrics`, `/health`, `/ready` and the console see it. A reload
//! swaps the set of components; each reader takes one consistent snapshot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use sluice_channels::Channel;
use sluice_sinks::SinkMetrics;
use sluice_sinks::failover::GroupMetrics;
use sluice_sources::SourceMetrics;

/// The running components' counters, for `/metrics`, `/health`, `/ready` and the console.
pub struct Components {
    /// The agent's name.
    pub agent: String,
    members: RwLock<Arc<Members>>,
    /// Set once every component was started; cleared again when the agent begins to stop.
    pub running: AtomicBool,
    /// Set when the agent begins to stop (a signal, or a component that failed).
    pub stopping: AtomicBool,
    /// How configuration reloads went.
    pub reloads: Reloads,
}

/// One set of running components, sorted by name within each kind.
pub struct Members {
    /// Sources and their counters.
    pub sources: Vec<(String, Arc<SourceMetrics>)>,
    /// Channels.
    pub channels: Vec<Arc<dyn Channel>>,
    /// Sinks and their counters.
    pub sinks: Vec<(String, Arc<SinkMetrics>)>,
    /// Sink groups and their state (their sinks are in `sinks` too).
    pub groups: Vec<(String, Arc<GroupMetrics>)>,
    /// What the configuration has but does not run, and why (a channel a reload could not
    /// open, and the source and sink wired to it).
    pub down: Vec<String>,
}

/// Counts of configuration reloads since the agent started.
#[derive(Default)]
pub struct Reloads {
    /// Reloads that applied a new configuration (or found nothing to change).
    pub applied: AtomicU64,
    /// Reloads refused (the new configuration did not validate or could not be read) or
    /// that could not start every component of the new configuration.
    pub failed: AtomicU64,
    /// 1 while the last reload succeeded (also before any reload), else 0.
    pub last_ok: AtomicBool,
    /// When the running configuration was loaded, in milliseconds since the Unix epoch.
    pub loaded_ms: AtomicU64,
}

impl Reloads {
    /// Counts a reload as applied (`ok`) or failed.
    pub fn record(&self, ok: bool) {
        let counter = if ok { &self.applied } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.last_ok.store(ok, Ordering::Relaxed);
    }

    /// Notes that the running configuration was loaded now.
    pub fn loaded_now(&self) {
        self.loaded_ms
            .store(crate::http::now_ms(), Ordering::Relaxed);
    }
}

impl Components {
    /// The components of `agent`, none running yet.
    pub fn new(agent: &str, members: Members) -> Self {
        let reloads = Reloads::default();
        reloads.last_ok.store(true, Ordering::Relaxed);
        reloads.loaded_now();
        Components {
            agent: agent.to_owned(),
            members: RwLock::new(Arc::new(members.sorted())),
            running: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            reloads,
        }
    }

    /// The components running now.
    pub fn members(&self) -> Arc<Members> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the set of running components.
    pub fn set_members(&self, members: Members) {
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(members.sorted());
    }
}

impl Members {
    /// The group the sink `name` is in, if any.
    pub fn group_of(&self, name: &str) -> Option<&GroupMetrics> {
        self.groups
            .iter()
            .map(|(_, g)| &**g)
            .find(|g| g.sinks.iter().any(|s| s == name))
    }

    fn sorted(mut self) -> Self {
        self.sources.sort_by(|a, b| a.0.cmp(&b.0));
        self.channels.sort_by(|a, b| a.name().cmp(b.name()));
        self.sinks.sort_by(|a, b| a.0.cmp(&b.0));
        self.groups.sort_by(|a, b| a.0.cmp(&b.0));
        self
    }
}
