//! The console sink: writes each event body as one line to stdout, for trying a configuration
//! and for piping the agent's output. Logs go to stderr, so stdout carries only data.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;

use serde::Deserialize;
use sluice_channels::config::Problem;
use sluice_channels::lifecycle::Phase;
use sluice_channels::{Event, Lease};
use tracing::{error, info, warn};

use crate::{SinkContext, SinkError, SinkMetrics};

/// The console sink's options, as written under `sinks.NAME` (without `type` and `channel`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The most events taken from the channel at once.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    1000
}

impl ConsoleConfig {
    /// Checks what serde cannot: the batch size; keys are relative to the sink.
    pub fn validate(&self) -> Vec<Problem> {
        if self.batch_size == 0 {
            return vec![Problem::new("batch_size", "must be at least 1")];
        }
        Vec::new()
    }
}

/// Standard output (a duplicate of fd 1), written without Rust's line buffering: one write
/// per batch.
type Stdout = BufWriter<File>;

/// The console sink.
pub struct ConsoleSink {
    cfg: ConsoleConfig,
    ctx: SinkContext,
}

impl ConsoleSink {
    /// A sink draining `ctx.channel` to stdout.
    pub fn new(cfg: ConsoleConfig, ctx: SinkContext) -> Self {
        ConsoleSink { cfg, ctx }
    }

    /// Runs until the channel is closed and empty, until it is asked to drain (it returns
    /// once the batch being written is committed), or until the agent aborts. An abort returns at
    /// once, also while a write to stdout is blocked (a pipe nobody reads): the batch being
    /// written is left to the blocked thread and is neither committed nor rolled back, so its
    /// lines are read again from their sources' checkpoints after a restart.
    pub async fn run(self) -> Result<(), SinkError> {
        let stdout =
            io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|error| SinkError::Output {
                    sink: self.ctx.name.clone(),
                    error,
                })?;
        let mut out: Option<Stdout> = Some(BufWriter::with_capacity(256 << 10, File::from(stdout)));
        let mut shutdown = self.ctx.shutdown.clone();
        let channel = &self.ctx.channel;
        let metrics = &self.ctx.metrics;
        metrics.started();
        metrics.set_connected(true);
        loop {
            let lease = tokio::select! {
                lease = channel.take(self.cfg.batch_size) => lease,
                _ = shutdown.reached(Phase::Draining) => break,
            };
            let lease = lease.map_err(|error| SinkError::Channel {
                sink: self.ctx.name.clone(),
                error,
            })?;
            let Some(lease) = lease else { break };
            let writer = out.take().ok_or_else(|| SinkError::Output {
                sink: self.ctx.name.clone(),
                error: io::Error::other("stdout lost"),
            })?;
            let write = tokio::task::spawn_blocking(move || {
                let mut writer = writer;
                let result = write_lease(&mut writer, &lease);
                (writer, lease, result)
            });
            let written = tokio::select! {
                written = write => written,
                _ = shutdown.reached(Phase::Aborting) => {
                    warn!(sink = %self.ctx.name,
                        "stopping while a write to stdout is blocked; its lines are read again after a restart");
                    return Ok(());
                }
            };
            let (writer, lease, result) = written.map_err(|e| SinkError::Output {
                sink: self.ctx.name.clone(),
                error: io::Error::other(e),
            })?;
            out = Some(writer);
            if let Err(error) = result {
                metrics.delivery_failed(format!("cannot write to stdout: {error}"));
                metrics.set_connected(false);
                SinkMetrics::add(&metrics.rollbacks, 1);
                error!(sink = %self.ctx.name, error = %error, "cannot write to stdout; the batch stays in the channel");
                let _ = channel.rollback(lease);
                return Err(SinkError::Output {
                    sink: self.ctx.name.clone(),
                    error,
                });
            }
            let (events, bytes) = (lease.events.len() as u64, lease.bytes as u64);
            channel
                .commit(lease)
                .await
                .map_err(|error| SinkError::Channel {
                    sink: self.ctx.name.clone(),
                    error,
                })?;
            metrics.delivered(events, bytes);
        }
        info!(sink = %self.ctx.name, "console sink stopped");
        Ok(())
    }
}

/// Writes each body and a `\n`, then flushes: the lease is on its way only after the flush.
fn write_lease(w: &mut Stdout, lease: &Lease) -> io::Result<()> {
    for Event { body, .. } in &lease.events {
        w.write_all(body)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}
