//! The console sink: writes each event body as one line to stdout, for trying a configuration
//! and for piping the agent's output. Logs go to stderr, so stdout carries only data.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sluice_channels::config::Problem;
use sluice_channels::{BoxFuture, Lease};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::sink::{Capabilities, Close, Failure, Outcome, Returned, Sink, Stopped};
use crate::{SinkError, SinkMetrics};

/// The console sink's options, as written under `sinks.NAME` (without `type` and `channel`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The most events taken from the channel at once.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Headers printed before each body, as `name=value`, those an event has (default
    /// none: the body alone). Shows what interceptors and selectors see.
    #[serde(default)]
    pub headers: Vec<String>,
}

fn default_batch_size() -> usize {
    1000
}

impl ConsoleConfig {
    /// Checks what serde cannot: the batch size; keys are relative to the sink.
    pub fn validate(&self) -> Vec<Problem> {
        sluice_channels::config::batch_size_problem(self.batch_size)
            .into_iter()
            .collect()
    }
}

/// Standard output (a duplicate of fd 1), written without Rust's line buffering: one write
/// per batch.
type Stdout = BufWriter<File>;

/// A write on its blocking thread; it hands back stdout, the lease, and how the write went.
type Writing = JoinHandle<(Stdout, Lease, io::Result<()>)>;

/// The console sink: one lease in flight, written on a blocking thread and flushed before it
/// counts as delivered. A failed write is fatal (stdout does not come back). An abort returns
/// at once, also while a write to stdout is blocked (a pipe nobody reads): the lease being
/// written is left to the blocked thread and is neither committed nor rolled back, so its lines
/// are read again from their sources' checkpoints after a restart.
pub struct ConsoleSink {
    cfg: ConsoleConfig,
    name: String,
    metrics: Arc<SinkMetrics>,
    /// Stdout, while no write holds it.
    out: Option<Stdout>,
    /// The write in progress.
    writing: Option<Writing>,
}

impl ConsoleSink {
    /// A sink named `name` writing to stdout, counting in `metrics`.
    pub fn new(cfg: ConsoleConfig, name: &str, metrics: Arc<SinkMetrics>) -> Self {
        ConsoleSink {
            cfg,
            name: name.to_owned(),
            metrics,
            out: None,
            writing: None,
        }
    }

    fn output_error(&self, error: io::Error) -> SinkError {
        SinkError::Output {
            sink: self.name.clone(),
            error,
        }
    }

    /// Opens stdout; the sink reaches its output from then on.
    fn open_stdout(&mut self) -> Result<(), SinkError> {
        let stdout = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|error| self.output_error(error))?;
        self.out = Some(BufWriter::with_capacity(256 << 10, File::from(stdout)));
        self.metrics.set_connected(true);
        Ok(())
    }

    /// Waits for the write in progress; pending while there is none.
    async fn written(&mut self) -> Result<Outcome, SinkError> {
        let Some(writing) = self.writing.as_mut() else {
            return std::future::pending().await;
        };
        let written = writing.await;
        self.writing = None;
        let (writer, lease, result) =
            written.map_err(|e| self.output_error(io::Error::other(e)))?;
        self.out = Some(writer);
        let Err(error) = result else {
            return Ok(Outcome::Delivered(lease));
        };
        self.metrics.set_connected(false);
        let failure = Failure {
            why: format!("cannot write to stdout: {error}"),
            line: None,
            fatal: Some(self.output_error(error)),
        };
        Ok(Outcome::Failed { lease, failure })
    }
}

impl Sink for ConsoleSink {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batch_size: self.cfg.batch_size,
            in_flight: 1,
            watch_every: None,
        }
    }

    fn open(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(std::future::ready(self.open_stdout()))
    }

    fn deliver(&mut self, lease: Lease) -> Result<(), SinkError> {
        let mut writer = self
            .out
            .take()
            .ok_or_else(|| self.output_error(io::Error::other("stdout lost")))?;
        let headers = self.cfg.headers.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let result = write_lease(&mut writer, &lease, &headers);
            (writer, lease, result)
        }));
        Ok(())
    }

    fn outcome(&mut self) -> BoxFuture<'_, Result<Outcome, SinkError>> {
        Box::pin(self.written())
    }

    /// A write still in progress is left to its thread: its lease is not given back.
    fn close(&mut self, _: Close) -> BoxFuture<'_, Returned> {
        self.writing = None;
        Box::pin(std::future::ready(Returned::default()))
    }

    fn failed(&self, failure: &Failure, _: usize, _: Option<Duration>) {
        if let Some(SinkError::Output { error, .. }) = &failure.fatal {
            error!(error = %error, "cannot write to stdout; the batch stays in the channel");
        }
    }

    fn stopped(&self, how: Stopped) {
        match how {
            Stopped::Aborted { abandoned, .. } if abandoned > 0 => warn!(
                "stopping while a write to stdout is blocked; its lines are read again after a restart"
            ),
            _ => info!("console sink stopped"),
        }
    }
}

/// Writes each body and a `\n` (after the `headers` the event has, `name=value`, then a
/// tab), then flushes: the lease is on its way only after the flush.
fn write_lease(w: &mut impl Write, lease: &Lease, headers: &[String]) -> io::Result<()> {
    for ev in &lease.events {
        if !headers.is_empty() {
            let mut first = true;
            for name in headers {
                if let Some(v) = ev.header(name) {
                    if !first {
                        w.write_all(b" ")?;
                    }
                    first = false;
                    w.write_all(name.as_bytes())?;
                    w.write_all(b"=")?;
                    w.write_all(v.as_bytes())?;
                }
            }
            w.write_all(b"\t")?;
        }
        w.write_all(&ev.body)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sluice_channels::{Event, Origin};

    use super::*;

    #[test]
    fn bodies_are_lines_and_listed_headers_come_first() {
        let origin = Arc::new(Origin {
            path: "/l/a.log".into(),
            headers: vec![("env".into(), "prod".into())],
            ..Origin::default()
        });
        let mut events: Vec<Event> = ["one", "two"]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Event::new(
                    Bytes::from_static(b.as_bytes()),
                    origin.clone(),
                    i as u64,
                    0,
                )
            })
            .collect();
        events[1].headers.set("level".into(), "ERROR");
        let lease = Lease {
            first_seq: 0,
            events,
            bytes: 6,
        };
        let mut plain = Vec::new();
        write_lease(&mut plain, &lease, &[]).unwrap();
        assert_eq!(plain, b"one\ntwo\n");
        let mut with = Vec::new();
        let names = ["env", "level", "path"].map(String::from);
        write_lease(&mut with, &lease, &names).unwrap();
        assert_eq!(
            String::from_utf8(with).unwrap(),
            "env=prod path=/l/a.log\tone\nenv=prod level=ERROR path=/l/a.log\ttwo\n"
        );
    }
}
