//! Sluice's sinks: they take leases from a channel, deliver them, and commit each lease only
//! after every event of it was delivered.
//!
//! One loop ([`drive`]) takes, commits, rolls back, retries, retires and aborts for every sink;
//! each kind of sink implements [`Sink`], the seam where a lease is delivered.

pub mod console;
mod driver;
pub mod failover;
pub mod kafka;
mod metrics;
mod sink;
#[cfg(test)]
mod testing;

use std::sync::Arc;

use sluice_channels::Channel;
use sluice_channels::lifecycle::Shutdown;

pub use driver::drive;
pub use metrics::{SinkHealth, SinkMetrics};
pub use sink::{Capabilities, Close, Failure, Outcome, Returned, Sink, Stopped};

/// What the agent gives a sink's [`drive`] to run with.
#[derive(Clone)]
pub struct SinkContext {
    /// The sink's name in the configuration (`k1`).
    pub name: String,
    /// The channel the sink drains.
    pub channel: Arc<dyn Channel>,
    /// The sink's lifecycle. The sink delivers until its channel is closed and empty (how
    /// the agent stops: it closes the channels). On `Draining` (how a reload retires a sink
    /// while its channel stays open) it takes nothing more and returns once what it took is
    /// delivered and committed. On `Aborting` it returns at once, rolling back what it holds.
    pub shutdown: Shutdown,
    /// The sink's counters.
    pub metrics: Arc<SinkMetrics>,
}

/// Why a sink stopped before it was asked to. The underlying error is the `source()` of
/// each, so that `{:#}` (anyhow) shows the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The output cannot be written to any more (e.g. stdout was closed).
    #[error("sink {sink}: output failed")]
    Output {
        /// The sink's name.
        sink: String,
        /// The underlying error.
        #[source]
        error: std::io::Error,
    },
    /// The channel failed.
    #[error("sink {sink}")]
    Channel {
        /// The sink's name.
        sink: String,
        /// The underlying error.
        #[source]
        error: sluice_channels::ChannelError,
    },
    /// A line cannot be delivered as configured; it stays in the channel.
    #[error("sink {sink}: {message}")]
    Delivery {
        /// The sink's name.
        sink: String,
        /// Which line, and why.
        message: String,
    },
    /// The sink could not be set up from its configuration.
    #[error("sink {sink}: {message}")]
    Setup {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_underlying_error_is_the_source_and_not_repeated() {
        let e = SinkError::Output {
            sink: "k1".into(),
            error: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        };
        assert_eq!(e.to_string(), "sink k1: output failed");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("broken pipe"));
    }
}
