//! Wiring and lifecycle: builds the components of one agent, runs them on tokio, and stops
//! them in order on SIGTERM or SIGINT.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_channels::lifecycle::{Phase, ShutdownTrigger};
use sluice_channels::{Channel, FileChannel, MemoryChannel};
use sluice_sinks::console::ConsoleSink;
use sluice_sinks::kafka::KafkaSink;
use sluice_sinks::{SinkContext, SinkMetrics};
use sluice_sources::spooldir::SpoolDirSource;
use sluice_sources::taildir::TailDirSource;
use sluice_sources::{SourceContext, SourceMetrics};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::{AgentConfig, ChannelKind, SinkKind, SourceKind};
use crate::http;
use crate::report;

/// How long components get to return after the drain deadline before they are cut off.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// The running components' counters, for `/metrics`.
pub struct Components {
    /// The agent's name.
    pub agent: String,
    /// Sources and their counters.
    pub sources: Vec<(String, Arc<SourceMetrics>)>,
    /// Channels.
    pub channels: Vec<Arc<dyn Channel>>,
    /// Sinks and their counters.
    pub sinks: Vec<(String, Arc<SinkMetrics>)>,
    /// Set once every component was started; cleared again when the agent begins to stop.
    pub running: AtomicBool,
    /// Set when the agent begins to stop (a signal, or a component that failed).
    pub stopping: AtomicBool,
}

/// Runs the agent until a signal stops it; returns an error if a component failed.
pub fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("cannot start the runtime")?;
    let (result, stop) = runtime.block_on(run_agent(cfg));
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

/// Takes an exclusive lock on the data folder so that two agents never share it.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
    let path = dir.join("lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "the data folder {} is in use by another agent (lock {} is held)",
            dir.display(),
            path.display()
        );
    }
    Ok(file)
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

type Task = (String, anyhow::Result<()>);

async fn run_agent(cfg: AgentConfig) -> (anyhow::Result<()>, Stop) {
    let mut stop = Stop::Drained;
    let result = run_components(cfg, &mut stop).await;
    (result, stop)
}

/// Opens, binds and starts everything, then runs until a signal or a failure and stops the
/// components in order. Everything that can fail at startup (the data folder's lock, the
/// channels, the `/metrics` listener, the signal handlers) is done before any source starts,
/// so a startup failure never leaves a file half-read or set aside.
async fn run_components(cfg: AgentConfig, stop: &mut Stop) -> anyhow::Result<()> {
    for w in &cfg.warnings {
        warn!(key = %w.key, warning = %w.message, "configuration warning");
    }
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let trigger = ShutdownTrigger::new();
    let host = host_name();
    let mut channels: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    for c in &cfg.channels {
        let ch: Arc<dyn Channel> = match &c.kind {
            ChannelKind::Memory(m) => Arc::new(MemoryChannel::new(&c.name, *m)),
            ChannelKind::File(f) => {
                Arc::new(FileChannel::open(&c.name, f.clone()).with_context(|| {
                    format!(
                        "{}.channels.{}: cannot open the file channel in {}",
                        cfg.name,
                        c.name,
                        f.dir.display()
                    )
                })?)
            }
        };
        channels.insert(c.name.clone(), ch);
    }
    let mut components = Components {
        agent: cfg.name.clone(),
        sources: cfg
            .sources
            .iter()
            .map(|s| (s.name.clone(), Arc::new(SourceMetrics::default())))
            .collect(),
        channels: channels.values().cloned().collect(),
        sinks: cfg
            .sinks
            .iter()
            .map(|s| (s.name.clone(), Arc::new(SinkMetrics::default())))
            .collect(),
        running: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
    };
    components.channels.sort_by(|a, b| a.name().cmp(b.name()));
    let components = Arc::new(components);
    let listener = match cfg.http {
        Some(addr) => Some(http::bind(addr, &format!("{}.http", cfg.name)).await?),
        None => None,
    };
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    // Nothing can fail any more before the components run: start them, sinks first.
    let server = listener.map(|l| http::serve(l, components.clone()));
    let mut sinks: JoinSet<Task> = JoinSet::new();
    for (s, (_, metrics)) in cfg.sinks.iter().zip(&components.sinks) {
        let ctx = SinkContext {
            name: s.name.clone(),
            channel: channels[&s.channel].clone(),
            shutdown: trigger.subscribe(),
            metrics: metrics.clone(),
        };
        let name = s.name.clone();
        match &s.kind {
            SinkKind::Console(c) => {
                let sink = ConsoleSink::new(c.clone(), ctx);
                sinks.spawn(async move { (name, sink.run().await.map_err(anyhow::Error::from)) });
            }
            SinkKind::Kafka(c) => {
                let sink = KafkaSink::new((**c).clone(), ctx);
                sinks.spawn(async move { (name, sink.run().await.map_err(anyhow::Error::from)) });
            }
        }
    }
    let mut sources: JoinSet<Task> = JoinSet::new();
    for (s, (_, metrics)) in cfg.sources.iter().zip(&components.sources) {
        let ctx = SourceContext {
            name: s.name.clone(),
            channel: channels[&s.channel].clone(),
            state_dir: cfg.data_dir.join("sources").join(&s.name),
            data_dir: cfg.data_dir.clone(),
            host: host.clone(),
            shutdown: trigger.subscribe(),
            metrics: metrics.clone(),
        };
        let name = s.name.clone();
        match &s.kind {
            SourceKind::SpoolDir(c) => {
                let source = SpoolDirSource::new(c.clone(), ctx);
                sources
                    .spawn(async move { (name, source.run().await.map_err(anyhow::Error::from)) });
            }
            SourceKind::TailDir(c) => {
                let source = TailDirSource::new(c.clone(), ctx);
                sources
                    .spawn(async move { (name, source.run().await.map_err(anyhow::Error::from)) });
            }
        }
    }
    components.running.store(true, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let reporter = report::spawn(components.clone(), cfg.report_interval);
    info!(agent = %cfg.name, sources = ?names(cfg.sources.iter().map(|s| (&s.name, s.kind.describe()))),
        channels = ?names(cfg.channels.iter().map(|c| (&c.name, c.kind.describe()))),
        sinks = ?names(cfg.sinks.iter().map(|s| (&s.name, s.kind.describe()))),
        data_dir = %cfg.data_dir.display(), http = ?cfg.http,
        shutdown_timeout = ?cfg.shutdown_timeout, "agent started");

    let mut failed = false;
    // A sink that ended while its channel was still open: what is in that channel can no
    // longer be delivered, so waiting for a drain is pointless.
    let mut sink_dead = false;
    // Run until a signal, or until a component ends by itself (which only a failure does).
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
        Some(done) = sources.join_next() => failed |= report(done),
        Some(done) = sinks.join_next() => {
            failed |= report(done);
            sink_dead = true;
        }
    }

    // Drain: sources stop reading and wait for their batches to be safe, sinks deliver what
    // the channels hold, all within the deadline; a second signal or a dead sink cuts the
    // wait short.
    components.stopping.store(true, Ordering::Relaxed);
    trigger.advance(Phase::Draining);
    let deadline = tokio::time::Instant::now() + cfg.shutdown_timeout;
    let finished = if sink_dead {
        warn!(
            "a sink stopped; not waiting for the drain: what is not safe yet is read again after a restart"
        );
        false
    } else {
        let drained = async {
            let mut closed = false;
            loop {
                if sources.is_empty() && !closed {
                    for ch in channels.values() {
                        ch.close();
                    }
                    closed = true;
                }
                tokio::select! {
                    Some(done) = sources.join_next(), if !sources.is_empty() => {
                        failed |= report(done);
                    }
                    Some(done) = sinks.join_next(), if !sinks.is_empty() => {
                        failed |= report(done);
                        if !closed {
                            warn!("a sink stopped during the drain; not waiting for the rest: \
                                what is not safe yet is read again after a restart");
                            return false;
                        }
                    }
                    else => return true,
                }
            }
        };
        tokio::select! {
            done = drained => done,
            _ = tokio::time::sleep_until(deadline) => {
                warn!(timeout = ?cfg.shutdown_timeout, "drain deadline passed; what is not safe yet is read again after a restart");
                false
            }
            _ = term.recv() => { warn!("second signal: stopping now"); false }
            _ = int.recv() => { warn!("second signal: stopping now"); false }
        }
    };
    if !finished {
        *stop = Stop::CutShort;
        trigger.advance(Phase::Aborting);
        for ch in channels.values() {
            ch.close();
        }
        let rest = async {
            while let Some(done) = sources.join_next().await {
                failed |= report(done);
            }
            while let Some(done) = sinks.join_next().await {
                failed |= report(done);
            }
        };
        let cut = tokio::select! {
            r = tokio::time::timeout(ABORT_GRACE, rest) => r.is_err(),
            _ = term.recv() => true,
            _ = int.recv() => true,
        };
        if cut {
            error!("components did not stop in time; cutting them off");
            sources.abort_all();
            sinks.abort_all();
        }
    }
    if let Some(server) = server {
        server.abort();
    }
    reporter.abort();
    report::summary(&components, started.elapsed());
    for ch in channels.values() {
        let left = ch.stats().events;
        if left > 0 {
            warn!(
                channel = ch.name(),
                events = left,
                "events left undelivered; their sources read them again after a restart"
            );
        }
    }
    if failed {
        bail!("a component failed; see the errors above");
    }
    info!(agent = %cfg.name, "agent stopped");
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
fn report(done: Result<Task, tokio::task::JoinError>) -> bool {
    match done {
        Ok((_, Ok(()))) => false,
        Ok((name, Err(e))) => {
            error!(component = %name, error = format!("{e:#}"), "component failed");
            true
        }
        Err(e) => {
            error!(error = %e, "component panicked");
            true
        }
    }
}
