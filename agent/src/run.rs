//! Wiring and lifecycle: builds the components of one agent, runs them on tokio, replaces
//! the changed ones on a reload (SIGHUP, `--watch-config`), and stops them in order on
//! SIGTERM or SIGINT.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_channels::lifecycle::{Phase, ShutdownTrigger};
use sluice_channels::{Channel, FileChannel, MemoryChannel, fsutil};
use sluice_sinks::console::ConsoleSink;
use sluice_sinks::failover::{Failover, GroupMetrics, Member};
use sluice_sinks::kafka::{Delivery, KafkaSink};
use sluice_sinks::{Sink, SinkContext, SinkMetrics};
use sluice_sources::fanout::Fanout;
use sluice_sources::spooldir::SpoolDirSource;
use sluice_sources::taildir::TailDirSource;
use sluice_sources::{SourceContext, SourceMetrics};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinError, JoinHandle};
use tracing::Instrument;
use tracing::{error, info, warn};

use crate::components::{Components, Members};
use crate::config::{
    self, AgentConfig, ChannelDef, ChannelKind, SinkDef, SinkGroupDef, SinkKind, SourceDef,
    SourceKind,
};
use crate::reload::{self, Plan};
use crate::{http, report};

/// How long components get to return after the drain deadline before they are cut off.
const ABORT_GRACE: Duration = Duration::from_secs(5);
/// How long a reload waits for the last users of a replaced channel to let go of it.
const CHANNEL_RELEASE: Duration = Duration::from_secs(5);

/// Where the running configuration came from, for reloads.
pub struct ConfigFile {
    /// The file.
    pub path: PathBuf,
    /// Reload whenever its content changes (`--watch-config`), not only on SIGHUP.
    pub watch: bool,
    /// The content the running configuration was read from (read just before it).
    pub loaded: Option<Vec<u8>>,
    /// How the file is read (its format, `-D` properties).
    pub options: config::Options,
}

/// Runs the agent until a signal stops it; returns an error if a component failed.
pub fn run(cfg: AgentConfig, file: ConfigFile) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("cannot start the runtime")?;
    let (result, stop) = runtime.block_on(run_agent(cfg, file));
    match stop {
        // Every component returned: nothing is left to wait for.
        Stop::Drained => runtime.shutdown_timeout(ABORT_GRACE),
        // A thread may still be blocked (a write to a pipe nobody reads): do not wait for it.
        Stop::CutShort => runtime.shutdown_background(),
    }
    result
}

/// How the agent's components ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Every component returned by itself.
    Drained,
    /// The drain was cut short (second signal, deadline, a dead sink) or components were cut
    /// off.
    CutShort,
}

/// Creates the data folder if missing (0700, and its missing parents too: checkpoints and
/// channel logs hold the lines, which are for the agent alone), and takes an exclusive lock on
/// it so that two agents never share it.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
    let path = dir.join("lock");
    match fsutil::lock(&path).with_context(|| format!("cannot create {}", path.display()))? {
        Some(lock) => Ok(lock),
        None => bail!(
            "the data folder {} is in use by another agent (lock {} is held)",
            dir.display(),
            path.display()
        ),
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Opens a channel as its definition says (blocks for a file channel's recovery).
fn open_channel(agent: &str, c: &ChannelDef) -> anyhow::Result<Arc<dyn Channel>> {
    Ok(match &c.kind {
        ChannelKind::Memory(m) => Arc::new(MemoryChannel::new(&c.name, *m)),
        ChannelKind::File(f) => {
            Arc::new(FileChannel::open(&c.name, f.clone()).with_context(|| {
                format!(
                    "{agent}.channels.{}: cannot open the file channel in {}",
                    c.name,
                    f.dir.display()
                )
            })?)
        }
    })
}

/// A source or a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Source,
    Sink,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Sink => "sink",
        }
    }
}

/// A component's task ended.
struct Ended {
    kind: Kind,
    name: String,
    generation: u64,
    result: Result<anyhow::Result<()>, JoinError>,
}

/// A running source or sink.
struct Live {
    trigger: ShutdownTrigger,
    abort: AbortHandle,
    generation: u64,
    /// Asked to stop: its end is expected.
    stopping: bool,
    /// When a reload started it: a failure soon after counts against the reload, not the
    /// agent.
    started_by_reload: Option<Instant>,
}

/// How soon after a reload started a component its failure counts as the reload's (the
/// component does not run until a reload starts it again) rather than the agent's.
const RELOAD_GRACE: Duration = Duration::from_secs(10);

/// The agent's running components and what it needs to start new ones.
struct Supervisor {
    cfg: AgentConfig,
    host: String,
    channels: HashMap<String, Arc<dyn Channel>>,
    sources: HashMap<String, Live>,
    sinks: HashMap<String, Live>,
    /// Counters by component name; a component restarted by a reload keeps its counters.
    source_metrics: HashMap<String, Arc<SourceMetrics>>,
    sink_metrics: HashMap<String, Arc<SinkMetrics>>,
    group_metrics: HashMap<String, Arc<GroupMetrics>>,
    components: Arc<Components>,
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended: mpsc::UnboundedReceiver<Ended>,
    next_generation: u64,
    /// A component failed (its error is logged).
    failed: bool,
    /// A component ended without being asked to: the agent stops. `Some(Sink)` when a sink
    /// did, which makes waiting for a drain pointless.
    broken: Option<Kind>,
    /// How many stop signals (SIGTERM, SIGINT) arrived; a reload gives way to the first.
    stops: watch::Receiver<u32>,
    /// Channels of the configuration that a reload could not open, and why: they, their
    /// sources and their sink do not run; the next reload tries them again.
    down: BTreeMap<String, String>,
    /// Sources and sinks a reload started that failed at once, and why: they do not run;
    /// the next reload starts them again.
    failed_starts: BTreeMap<(&'static str, String), String>,
    /// A reload is starting components.
    reloading: bool,
}

impl Supervisor {
    fn new(
        cfg: AgentConfig,
        channels: HashMap<String, Arc<dyn Channel>>,
        stops: watch::Receiver<u32>,
    ) -> Self {
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let members = Members {
            sources: Vec::new(),
            channels: Vec::new(),
            sinks: Vec::new(),
            groups: Vec::new(),
            down: Vec::new(),
        };
        let components = Arc::new(Components::new(&cfg.name, members));
        let mut s = Supervisor {
            cfg,
            host: host_name(),
            channels,
            sources: HashMap::new(),
            sinks: HashMap::new(),
            source_metrics: HashMap::new(),
            sink_metrics: HashMap::new(),
            group_metrics: HashMap::new(),
            components,
            ended_tx,
            ended,
            next_generation: 0,
            failed: false,
            broken: None,
            stops,
            down: BTreeMap::new(),
            failed_starts: BTreeMap::new(),
            reloading: false,
        };
        s.publish();
        s
    }

    /// Shows the current set of components to `/metrics`, `/health` and the console.
    fn publish(&mut self) {
        let sources = self
            .cfg
            .sources
            .iter()
            .map(|s| (s.name.clone(), self.source_metrics_of(&s.name)))
            .collect();
        let sinks = self
            .cfg
            .sinks
            .iter()
            .map(|s| (s.name.clone(), self.sink_metrics_of(&s.name)))
            .collect();
        let groups = self
            .cfg
            .sink_groups
            .iter()
            .filter_map(|g| Some((g.name.clone(), self.group_metrics.get(&g.name)?.clone())))
            .collect();
        let channels = self.channels.values().cloned().collect();
        let down = self
            .down
            .iter()
            .map(|(c, why)| {
                format!("channel {c} cannot be opened ({why}); its sources and sink do not run")
            })
            .chain(self.failed_starts.iter().map(|((kind, name), why)| {
                format!("{kind} {name} failed when a reload started it ({why}); it does not run")
            }))
            .collect();
        self.components.set_members(Members {
            sources,
            channels,
            sinks,
            groups,
            down,
        });
    }

    fn source_metrics_of(&self, name: &str) -> Arc<SourceMetrics> {
        self.source_metrics.get(name).cloned().unwrap_or_default()
    }

    fn sink_metrics_of(&self, name: &str) -> Arc<SinkMetrics> {
        self.sink_metrics.get(name).cloned().unwrap_or_default()
    }

    /// Spawns a component's task; its end is reported on `ended`.
    fn spawn(
        &mut self,
        kind: Kind,
        name: &str,
        trigger: ShutdownTrigger,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.next_generation += 1;
        let generation = self.next_generation;
        // Everything the component logs, on its task and on the blocking work it starts, names
        // it through this span: `source{source=r1}`, `sink{sink=k1}`.
        let span = match kind {
            Kind::Source => tracing::info_span!("source", source = %name),
            Kind::Sink => tracing::info_span!("sink", sink = %name),
        };
        let handle: JoinHandle<anyhow::Result<()>> = tokio::spawn(task.instrument(span));
        let abort = handle.abort_handle();
        let tx = self.ended_tx.clone();
        let n = name.to_owned();
        tokio::spawn(async move {
            let result = handle.await;
            let _ = tx.send(Ended {
                kind,
                name: n,
                generation,
                result,
            });
        });
        let live = Live {
            trigger,
            abort,
            generation,
            stopping: false,
            started_by_reload: self.reloading.then(Instant::now),
        };
        match kind {
            Kind::Source => self.sources.insert(name.to_owned(), live),
            Kind::Sink => self.sinks.insert(name.to_owned(), live),
        };
    }

    /// The sink `s`, counting in its metrics (kept across reloads).
    fn build_sink(&mut self, s: &SinkDef) -> (Box<dyn Sink>, Arc<SinkMetrics>) {
        let metrics = self.sink_metrics.entry(s.name.clone()).or_default().clone();
        let sink: Box<dyn Sink> = match &s.kind {
            SinkKind::Console(c) => Box::new(ConsoleSink::new(c.clone(), &s.name, metrics.clone())),
            SinkKind::Kafka(c) => {
                let mut c = (**c).clone();
                if c.delivery == Delivery::ExactlyOnce && c.transactional_id.is_none() {
                    // Stable across restarts, unique to this host, agent and sink.
                    c.transactional_id =
                        Some(format!("sluice-{}-{}-{}", self.host, self.cfg.name, s.name));
                }
                Box::new(KafkaSink::new(c, &s.name, metrics.clone()))
            }
        };
        (sink, metrics)
    }

    /// Starts the sink `s`, or nothing if it is in a group (the group runs it).
    fn start_sink(&mut self, s: &SinkDef) {
        if self.cfg.group_of(&s.name).is_some() {
            return;
        }
        let trigger = ShutdownTrigger::new();
        let (sink, metrics) = self.build_sink(s);
        let ctx = SinkContext {
            name: s.name.clone(),
            channel: self.channels[&s.channel].clone(),
            shutdown: trigger.subscribe(),
            metrics,
        };
        self.spawn(Kind::Sink, &s.name, trigger, async move {
            sluice_sinks::drive(sink, ctx)
                .await
                .map_err(anyhow::Error::from)
        });
    }

    /// Starts the sink group `g`: one task, named after the group, drives its sinks on their
    /// one channel.
    fn start_group(&mut self, g: &SinkGroupDef) {
        let defs: Vec<SinkDef> = g
            .sinks
            .iter()
            .filter_map(|n| self.cfg.sinks.iter().find(|s| &s.name == n).cloned())
            .collect();
        let Some(channel) = defs
            .first()
            .and_then(|s| self.channels.get(&s.channel))
            .cloned()
        else {
            return;
        };
        let members = defs
            .iter()
            .map(|s| {
                let (sink, metrics) = self.build_sink(s);
                Member {
                    name: s.name.clone(),
                    sink,
                    metrics,
                }
            })
            .collect();
        let metrics = match self.group_metrics.get(&g.name) {
            Some(m) if m.sinks == g.sinks => m.clone(),
            _ => Arc::new(GroupMetrics::new(g.sinks.clone())),
        };
        self.group_metrics.insert(g.name.clone(), metrics.clone());
        let group = Failover::new(&g.name, members, g.max_penalty, metrics);
        let trigger = ShutdownTrigger::new();
        let ctx = SinkContext {
            name: g.name.clone(),
            channel,
            shutdown: trigger.subscribe(),
            metrics: Arc::default(),
        };
        self.spawn(Kind::Sink, &g.name, trigger, async move {
            sluice_sinks::drive(Box::new(group), ctx)
                .await
                .map_err(anyhow::Error::from)
        });
    }

    fn start_source(&mut self, s: &SourceDef) {
        let trigger = ShutdownTrigger::new();
        let metrics = self
            .source_metrics
            .entry(s.name.clone())
            .or_default()
            .clone();
        let channels = s
            .channels
            .iter()
            .map(|c| self.channels[c].clone())
            .collect();
        let channels = match Fanout::new(channels, &s.selector) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                let e = anyhow::Error::from(e);
                self.spawn(Kind::Source, &s.name, trigger, async move { Err(e) });
                return;
            }
        };
        let ctx = SourceContext {
            name: s.name.clone(),
            channels,
            state_dir: self.cfg.data_dir.join("sources").join(&s.name),
            data_dir: self.cfg.data_dir.clone(),
            host: self.host.clone(),
            shutdown: trigger.subscribe(),
            metrics,
        };
        match &s.kind {
            SourceKind::SpoolDir(c) => {
                let source = SpoolDirSource::new(c.clone(), ctx);
                self.spawn(Kind::Source, &s.name, trigger, async move {
                    source.run().await.map_err(anyhow::Error::from)
                });
            }
            SourceKind::TailDir(c) => {
                let source = TailDirSource::new(c.clone(), ctx);
                self.spawn(Kind::Source, &s.name, trigger, async move {
                    source.run().await.map_err(anyhow::Error::from)
                });
            }
        }
    }

    fn live(&mut self, kind: Kind) -> &mut HashMap<String, Live> {
        match kind {
            Kind::Source => &mut self.sources,
            Kind::Sink => &mut self.sinks,
        }
    }

    /// Applies a component's end: forgets it and logs how it ended. Returns its kind if it
    /// ended without being asked to (the agent must stop then).
    fn on_ended(&mut self, e: Ended) -> Option<Kind> {
        let live = self.live(e.kind);
        if live
            .get(&e.name)
            .is_none_or(|l| l.generation != e.generation)
        {
            return None;
        }
        let l = live.remove(&e.name)?;
        let early = l
            .started_by_reload
            .is_some_and(|t| t.elapsed() < RELOAD_GRACE);
        if !l.stopping
            && early
            && let Ok(Err(error)) = &e.result
        {
            let why = format!("{error:#}");
            error!(component = %e.name, error = %why,
                "a component the reload started failed at once; it does not run until a reload \
                 starts it again (/health and /ready say so)");
            self.components.reloads.record(false);
            self.failed_starts.insert((e.kind.word(), e.name), why);
            self.publish();
            return None;
        }
        self.failed |= report(&e.name, e.result);
        if l.stopping {
            None
        } else {
            self.broken.get_or_insert(e.kind);
            Some(e.kind)
        }
    }

    /// Moves the named components to `phase` and marks them as stopping.
    fn signal(&mut self, kind: Kind, names: &[String], phase: Phase) {
        for n in names {
            if let Some(l) = self.live(kind).get_mut(n) {
                l.stopping = true;
                l.trigger.advance(phase);
            }
        }
    }

    /// True while any of the named components runs.
    fn any_running(&self, kind: Kind, names: &[String]) -> bool {
        let live = match kind {
            Kind::Source => &self.sources,
            Kind::Sink => &self.sinks,
        };
        names.iter().any(|n| live.contains_key(n))
    }

    /// Waits until none of the named components runs, or `timeout` passes (false then).
    /// Other components that end meanwhile are applied too.
    /// A stop signal ends the wait too (false).
    async fn wait_for(&mut self, kind: Kind, names: &[String], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stops = self.stops.clone();
        while self.any_running(kind, names) {
            tokio::select! {
                e = self.ended.recv() => match e {
                    Some(e) => {
                        self.on_ended(e);
                    }
                    None => return false,
                },
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = stops.wait_for(|n| *n > 0) => return false,
            }
        }
        true
    }

    /// True once a stop signal arrived, or a component ended by itself: the agent stops.
    fn stop_requested(&self) -> bool {
        *self.stops.borrow() > 0 || self.broken.is_some()
    }

    /// Waits up to `timeout` for the named components (already asked to stop) to return,
    /// then aborts them (they save what they can), then cuts them off.
    async fn finish(&mut self, kind: Kind, names: &[String], timeout: Duration) {
        if self.wait_for(kind, names, timeout).await || self.stop_requested() {
            // Stopping: the agent's own drain takes them from here, within its deadline.
            return;
        }
        match kind {
            Kind::Source => warn!(components = ?names, timeout = ?timeout,
                "sources did not stop in time; what is not safe yet is read again"),
            Kind::Sink => warn!(components = ?names, timeout = ?timeout,
                "sinks did not deliver what they took in time; it goes back to the channel, \
                 for the sink that follows"),
        }
        self.signal(kind, names, Phase::Aborting);
        if self.wait_for(kind, names, ABORT_GRACE).await {
            return;
        }
        error!(components = ?names, "components did not stop in time; cutting them off");
        for n in names {
            if let Some(l) = self.live(kind).get(n) {
                l.abort.abort();
            }
        }
        self.wait_for(kind, names, ABORT_GRACE).await;
    }

    /// Reads the configuration file again and applies it: components whose configuration
    /// did not change keep running untouched; changed, added and removed ones are stopped
    /// (draining what they hold) and started. An invalid file changes nothing. True when the
    /// status line's interval changed.
    async fn reload(&mut self, file: &Path, opts: &config::Options, why: &str) -> bool {
        let new = match config::load(file, &self.cfg.name, opts) {
            Ok(c) => c,
            Err(e) => {
                self.components.reloads.record(false);
                for p in &e.problems {
                    error!(key = %p.key, problem = %p.message, "invalid configuration");
                }
                error!(file = %file.display(), trigger = why, problems = e.problems.len(),
                    "configuration reload refused; the running configuration stays");
                return false;
            }
        };
        for w in &new.warnings {
            warn!(key = %w.key, warning = %w.message, "configuration warning");
        }
        let mut new = new;
        let a = self.cfg.name.clone();
        if new.data_dir != self.cfg.data_dir {
            return self.refuse(
                file,
                why,
                &format!(
                    "{a}.data_dir: changed from {} to {}: the data folder (checkpoints, file \
                     channels, the agent's lock) changes only with a restart",
                    self.cfg.data_dir.display(),
                    new.data_dir.display()
                ),
            );
        }
        if new.http != self.cfg.http {
            let show =
                |h: Option<std::net::SocketAddr>| h.map_or("none".to_owned(), |a| a.to_string());
            warn!(key = %format!("{a}.http"), running = %show(self.cfg.http), new = %show(new.http),
                "changed, but takes effect only after a restart; the running address stays");
            new.http = self.cfg.http;
        }
        // What runs: a channel a reload could not open is not running, nor is what is wired
        // to it; planned against this, they are started again.
        let mut running = self.cfg.clone();
        running
            .channels
            .retain(|c| !self.down.contains_key(&c.name));
        running
            .sources
            .retain(|c| !c.channels.iter().any(|c| self.down.contains_key(c)));
        running
            .sinks
            .retain(|c| !self.down.contains_key(&c.channel));
        let failed = |kind: Kind, name: &str| {
            self.failed_starts
                .contains_key(&(kind.word(), name.to_owned()))
        };
        running.sources.retain(|c| !failed(Kind::Source, &c.name));
        running.sinks.retain(|c| !failed(Kind::Sink, &c.name));
        let plan = Plan::new(&running, &new);
        let interval_changed = new.report_interval != self.cfg.report_interval;
        if plan.is_empty() {
            // Whatever was down is gone from the configuration (else the plan would start it).
            self.down.clear();
            self.failed_starts.clear();
            self.cfg = new;
            self.publish();
            self.components.reloads.record(true);
            self.components.reloads.loaded_now();
            info!(
                trigger = why,
                kept = plan.kept.len(),
                "configuration reloaded; no component changed"
            );
            return interval_changed;
        }
        // A file channel that goes away (removed, or moved to another folder, or made a memory
        // channel) must be empty, or its events would stay behind in its folder.
        for (name, dir) in self.moved_file_channels(&new) {
            let left = self.channels.get(&name).map_or(0, |c| c.stats().events);
            if left > 0 {
                return self.refuse(
                    file,
                    why,
                    &format!(
                        "{a}.channels.{name}: the file channel in {} holds {left} events; \
                         it can be removed or moved to another folder only once they are \
                         delivered",
                        dir.display()
                    ),
                );
            }
        }
        // Added channels first: one that cannot be opened refuses the reload before anything
        // was stopped.
        let mut opened = HashMap::new();
        for name in &plan.open_channels {
            if plan.drop_channels.contains(name) {
                continue;
            }
            let Some(def) = new.channels.iter().find(|c| &c.name == name).cloned() else {
                continue;
            };
            let agent = self.cfg.name.clone();
            match tokio::task::spawn_blocking(move || open_channel(&agent, &def)).await {
                Ok(Ok(ch)) => {
                    opened.insert(name.clone(), ch);
                }
                Ok(Err(e)) => return self.refuse(file, why, &format!("{e:#}")),
                Err(e) => return self.refuse(file, why, &e.to_string()),
            }
        }
        info!(trigger = why, stop_sources = ?plan.stop_sources, retire_sinks = ?plan.retire_sinks,
            replace_channels = ?plan.drop_channels, start_sinks = ?plan.start_sinks,
            start_sources = ?plan.start_sources, kept = plan.kept.len(), "reloading the configuration");
        let timeout = new.shutdown_timeout;
        // Sources first: draining, they wait for what they put to become safe, which a memory
        // channel's sink has to deliver.
        self.signal(Kind::Source, &plan.stop_sources, Phase::Draining);
        self.finish(Kind::Source, &plan.stop_sources, timeout).await;
        if self.stop_requested() {
            return self.abandon();
        }
        // Sinks whose channel stays take nothing more and deliver what they took; sinks of a
        // channel that goes deliver what it holds once it is closed (nothing puts into it any
        // more).
        self.signal(Kind::Sink, &plan.retire_sinks, Phase::Draining);
        for name in &plan.drop_channels {
            if let Some(ch) = self.channels.get(name) {
                ch.close();
            }
        }
        for n in &plan.drain_sinks {
            if let Some(l) = self.sinks.get_mut(n) {
                l.stopping = true;
            }
        }
        let mut sinks = plan.retire_sinks.clone();
        sinks.extend(plan.drain_sinks.iter().cloned());
        self.finish(Kind::Sink, &sinks, timeout).await;
        if self.stop_requested() {
            return self.abandon();
        }
        let mut stranded = Vec::new();
        for (name, dir) in self.moved_file_channels(&new) {
            let left = self.channels.get(&name).map_or(0, |c| c.stats().events);
            if left > 0 {
                stranded.push(format!(
                    "{a}.channels.{name}: {left} events stay in {}, which the new configuration \
                     does not open; they are delivered once a file channel opens that folder \
                     again",
                    dir.display()
                ));
            }
        }
        let old = std::mem::replace(&mut self.cfg, new);
        for name in &plan.drop_channels {
            self.drop_channel(name, &old).await;
        }
        self.channels.extend(opened);
        self.down.clear();
        for name in &plan.open_channels {
            if self.channels.contains_key(name) {
                continue;
            }
            let Some(def) = self.cfg.channels.iter().find(|c| &c.name == name).cloned() else {
                continue;
            };
            let agent = self.cfg.name.clone();
            match tokio::task::spawn_blocking(move || open_channel(&agent, &def)).await {
                Ok(Ok(ch)) => {
                    self.channels.insert(name.clone(), ch);
                }
                Ok(Err(e)) => {
                    self.down.insert(name.clone(), format!("{e:#}"));
                }
                Err(e) => {
                    self.down.insert(name.clone(), e.to_string());
                }
            }
        }
        self.source_metrics
            .retain(|n, _| self.cfg.sources.iter().any(|s| &s.name == n));
        self.sink_metrics
            .retain(|n, _| self.cfg.sinks.iter().any(|s| &s.name == n));
        self.group_metrics
            .retain(|n, _| self.cfg.sink_groups.iter().any(|g| &g.name == n));
        // What failed to start before is started again below, or is gone.
        self.failed_starts.clear();
        let defs = self.cfg.clone();
        self.reloading = true;
        for s in defs
            .sinks
            .iter()
            .filter(|s| plan.start_sinks.contains(&s.name))
        {
            if self.channels.contains_key(&s.channel) {
                self.start_sink(s);
            }
        }
        for g in defs
            .sink_groups
            .iter()
            .filter(|g| plan.start_sinks.contains(&g.name))
        {
            self.start_group(g);
        }
        for s in defs
            .sources
            .iter()
            .filter(|s| plan.start_sources.contains(&s.name))
        {
            if s.channels.iter().all(|c| self.channels.contains_key(c)) {
                self.start_source(s);
            }
        }
        self.reloading = false;
        self.publish();
        self.components.reloads.loaded_now();
        if stranded.is_empty() && self.down.is_empty() {
            self.components.reloads.record(true);
            info!(trigger = why, started = ?names_of(&plan.start_sources, &plan.start_sinks),
                kept = plan.kept.len(), "configuration reloaded");
        } else {
            self.components.reloads.record(false);
            for t in &stranded {
                error!(problem = %t, "reload: events left behind");
            }
            for (c, e) in &self.down {
                error!(channel = %c, error = %e, "reload: the channel cannot be opened; its \
                    sources and sink do not run until a reload opens it (/health and /ready say so)");
            }
        }
        interval_changed
    }

    /// The agent stops during the reload (a signal, or a component that ended): what was
    /// stopped stays stopped, nothing new starts, and the agent's drain takes over.
    fn abandon(&self) -> bool {
        self.components.reloads.record(false);
        if *self.stops.borrow() > 0 {
            warn!("stop signal during a reload: the new configuration is not applied");
        } else {
            warn!(
                "a component ended during a reload, so the agent stops: the new configuration is not applied"
            );
        }
        false
    }

    /// The running file channels whose folder `new` does not open any more (removed, moved
    /// to another folder, or made a memory channel), with that folder.
    fn moved_file_channels(&self, new: &AgentConfig) -> Vec<(String, PathBuf)> {
        self.cfg
            .channels
            .iter()
            .filter_map(|c| {
                let dir = file_dir(&self.cfg, &c.name)?;
                (file_dir(new, &c.name).as_ref() != Some(&dir)).then(|| (c.name.clone(), dir))
            })
            .collect()
    }

    /// Counts and logs a refused reload; returns false (nothing changed).
    fn refuse(&self, file: &Path, why: &str, error: &str) -> bool {
        self.components.reloads.record(false);
        error!(file = %file.display(), trigger = why, error,
            "configuration reload refused; the running configuration stays");
        false
    }

    /// Forgets a removed or replaced channel and closes it once its last user let go (a file
    /// channel releases its folder then, for its successor).
    async fn drop_channel(&mut self, name: &str, old: &AgentConfig) {
        let Some(ch) = self.channels.remove(name) else {
            return;
        };
        self.publish();
        let left = ch.stats().events;
        match (file_dir(old, name), left) {
            (_, 0) => {}
            (None, _) => warn!(
                channel = name,
                events = left,
                "replaced memory channel still holds events that were not safe for their \
                 sources; they are read again from the files"
            ),
            // Moved away: the reload reports it as trouble.
            (Some(d), _) if file_dir(&self.cfg, name).as_ref() != Some(&d) => {}
            (Some(d), _) => info!(channel = name, events = left, dir = %d.display(),
                "replaced file channel holds events; the new channel on the same folder \
                 delivers them"),
        }
        let deadline = Instant::now() + CHANNEL_RELEASE;
        while Arc::strong_count(&ch) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A file channel joins its threads when dropped.
        let _ = tokio::task::spawn_blocking(move || drop(ch)).await;
    }
}

/// The folder of `cfg`'s file channel `name`; `None` for a memory channel or none.
fn file_dir(cfg: &AgentConfig, name: &str) -> Option<PathBuf> {
    cfg.channels
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| match &c.kind {
            ChannelKind::File(f) => Some(f.dir.clone()),
            ChannelKind::Memory(_) => None,
        })
}

fn names_of(sources: &[String], sinks: &[String]) -> Vec<String> {
    sources
        .iter()
        .map(|s| format!("source {s}"))
        .chain(sinks.iter().map(|s| format!("sink {s}")))
        .collect()
}

async fn run_agent(cfg: AgentConfig, file: ConfigFile) -> (anyhow::Result<()>, Stop) {
    let mut stop = Stop::Drained;
    let result = run_components(cfg, file, &mut stop).await;
    (result, stop)
}

/// The signals that stop the agent.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// The next SIGTERM or SIGINT.
    async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Counts the stop signals as they come, whatever the agent is doing (a reload, a drain),
    /// logging the first.
    fn count(mut self) -> watch::Receiver<u32> {
        let (tx, rx) = watch::channel(0);
        tokio::spawn(async move {
            loop {
                let s = self.stop().await;
                let n = *tx.borrow() + 1;
                if n == 1 {
                    match s {
                        "SIGINT" => info!("SIGINT: stopping"),
                        _ => info!("SIGTERM: stopping"),
                    }
                }
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// Opens, binds and starts everything, then runs until a signal or a failure and stops the
/// components in order. Everything that can fail at startup (the data folder's lock, the
/// channels, the `/metrics` listener, the signal handlers) is done before any source starts,
/// so a startup failure never leaves a file half-read or set aside.
async fn run_components(cfg: AgentConfig, file: ConfigFile, stop: &mut Stop) -> anyhow::Result<()> {
    // Signals first, so that a SIGHUP or SIGTERM sent while a file channel recovers is kept
    // and served once the agent runs (main ignores SIGHUP until then).
    let signals = Signals::new()?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    for w in &cfg.warnings {
        warn!(key = %w.key, warning = %w.message, "configuration warning");
    }
    for n in &cfg.notes {
        info!(key = %n.key, why = %n.message, "accepted, no effect in Sluice");
    }
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let mut channels: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    for c in &cfg.channels {
        channels.insert(c.name.clone(), open_channel(&cfg.name, c)?);
    }
    let listener = match cfg.http {
        Some(addr) => Some(http::bind(addr, &format!("{}.http", cfg.name)).await?),
        None => None,
    };
    let mut watched = file
        .watch
        .then(|| reload::watch(file.path.clone(), file.loaded.clone()));

    // Nothing can fail any more before the components run: start them, sinks first.
    let mut stops = signals.count();
    let mut sv = Supervisor::new(cfg, channels, stops.clone());
    let components = sv.components.clone();
    let server = listener.map(|l| http::serve(l, components.clone()));
    let defs = sv.cfg.clone();
    for s in &defs.sinks {
        sv.start_sink(s);
    }
    for g in &defs.sink_groups {
        sv.start_group(g);
    }
    for s in &defs.sources {
        sv.start_source(s);
    }
    sv.publish();
    components.running.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut reporter = report::spawn(components.clone(), defs.report_interval);
    info!(agent = %defs.name, sources = ?names(defs.sources.iter().map(|s| (&s.name, s.kind.describe()))),
        channels = ?names(defs.channels.iter().map(|c| (&c.name, c.kind.describe()))),
        sinks = ?names(defs.sinks.iter().map(|s| (&s.name, s.kind.describe()))),
        sink_groups = ?defs.sink_groups.iter().map(|g| (&g.name, &g.sinks)).collect::<Vec<_>>(),
        data_dir = %defs.data_dir.display(), http = ?defs.http,
        shutdown_timeout = ?defs.shutdown_timeout, watch_config = file.watch, "agent started");

    // Run until a signal, or until a component ends by itself (which only a failure does);
    // reload on SIGHUP and when the watched file changes.
    loop {
        let why = tokio::select! {
            _ = stops.wait_for(|n| *n > 0) => break,
            _ = hup.recv() => "SIGHUP",
            Some(()) = async { watched.as_mut()?.recv().await } => "file changed",
            Some(e) = sv.ended.recv() => {
                if sv.on_ended(e).is_some() {
                    break;
                }
                continue;
            }
        };
        if sv.reload(&file.path, &file.options, why).await {
            reporter.abort();
            reporter = report::spawn(components.clone(), sv.cfg.report_interval);
        }
        if sv.broken.is_some() {
            break;
        }
    }

    // Drain: sources stop reading and wait for their batches to be safe, sinks deliver what
    // the channels hold, all within the deadline; a second signal or a dead sink cuts the
    // wait short.
    components.running.store(false, Ordering::Relaxed);
    components.stopping.store(true, Ordering::Relaxed);
    let all_sources: Vec<String> = sv.sources.keys().cloned().collect();
    let all_sinks: Vec<String> = sv.sinks.keys().cloned().collect();
    sv.signal(Kind::Source, &all_sources, Phase::Draining);
    for l in sv.sinks.values_mut() {
        l.stopping = true;
    }
    let deadline = tokio::time::Instant::now() + sv.cfg.shutdown_timeout;
    // A signal from here on cuts the drain short.
    let draining_at = *stops.borrow();
    let finished = if sv.broken == Some(Kind::Sink) {
        warn!(
            "a sink stopped; not waiting for the drain: what is not safe yet is read again after a restart"
        );
        false
    } else {
        let timeout = sv.cfg.shutdown_timeout;
        let drained = async {
            let mut closed = false;
            loop {
                if sv.sources.is_empty() && !closed {
                    for ch in sv.channels.values() {
                        ch.close();
                    }
                    closed = true;
                }
                if sv.sources.is_empty() && sv.sinks.is_empty() {
                    return true;
                }
                let Some(e) = sv.ended.recv().await else {
                    return true;
                };
                let kind = e.kind;
                let gen_ = e.generation;
                let was_live = sv
                    .live(kind)
                    .get(&e.name)
                    .is_some_and(|l| l.generation == gen_);
                sv.on_ended(e);
                if kind == Kind::Sink && was_live && !closed {
                    warn!(
                        "a sink stopped during the drain; not waiting for the rest: \
                        what is not safe yet is read again after a restart"
                    );
                    return false;
                }
            }
        };
        tokio::select! {
            done = drained => done,
            _ = tokio::time::sleep_until(deadline) => {
                warn!(timeout = ?timeout, "drain deadline passed; what is not safe yet is read again after a restart");
                false
            }
            _ = stops.wait_for(|n| *n > draining_at) => { warn!("second signal: stopping now"); false }
        }
    };
    if !finished {
        *stop = Stop::CutShort;
        // One more signal from here on cuts the components off.
        let seen = *stops.borrow();
        sv.signal(Kind::Source, &all_sources, Phase::Aborting);
        sv.signal(Kind::Sink, &all_sinks, Phase::Aborting);
        for ch in sv.channels.values() {
            ch.close();
        }
        let rest = async {
            while !(sv.sources.is_empty() && sv.sinks.is_empty()) {
                let Some(e) = sv.ended.recv().await else {
                    break;
                };
                sv.on_ended(e);
            }
        };
        let cut = tokio::select! {
            r = tokio::time::timeout(ABORT_GRACE, rest) => r.is_err(),
            _ = stops.wait_for(|n| *n > seen) => true,
        };
        if cut {
            error!("components did not stop in time; cutting them off");
            for l in sv.sources.values().chain(sv.sinks.values()) {
                l.abort.abort();
            }
        }
    }
    if let Some(server) = server {
        server.abort();
    }
    reporter.abort();
    report::summary(&components, started.elapsed());
    for ch in sv.channels.values() {
        let left = ch.stats().events;
        if left == 0 {
            continue;
        }
        if file_dir(&sv.cfg, ch.name()).is_some() {
            warn!(
                channel = ch.name(),
                events = left,
                "events left undelivered; the file channel keeps them and delivers them after a restart"
            );
        } else {
            warn!(
                channel = ch.name(),
                events = left,
                "events left undelivered; their sources read them again after a restart"
            );
        }
    }
    if sv.failed {
        bail!("a component failed; see the errors above");
    }
    info!(agent = %sv.cfg.name, "agent stopped");
    Ok(())
}

/// `name (what), ...` for the start line.
fn names<'a>(list: impl Iterator<Item = (&'a String, String)>) -> String {
    let mut out = String::new();
    for (name, what) in list {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str(" (");
        out.push_str(&what);
        out.push(')');
    }
    out
}

/// Logs a component's end; true if it failed.
fn report(name: &str, done: Result<anyhow::Result<()>, JoinError>) -> bool {
    match done {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            error!(component = %name, error = format!("{e:#}"), "component failed");
            true
        }
        Err(e) if e.is_cancelled() => false,
        Err(e) => {
            error!(component = %name, error = %e, "component panicked");
            true
        }
    }
}
