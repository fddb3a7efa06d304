//! The seam between the loop every sink shares ([`drive`](crate::drive)) and what one kind of
//! sink does. A [`Sink`] is handed leases, delivers them its own way, and reports what became
//! of each; the driver takes from the channel, commits, rolls back, backs off, retires and
//! aborts, the same for every sink.

use std::time::Duration;

use sluice_channels::{BoxFuture, Lease};

use crate::SinkError;

/// What a sink can take on. The driver reads it once, when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The most events the driver takes from the channel into one lease.
    pub batch_size: usize,
    /// The most leases handed to the sink and not yet committed or rolled back (at least one
    /// is always allowed).
    pub in_flight: usize,
    /// How often the driver calls [`Sink::watch`] while it delivers; `None`: never.
    pub watch_every: Option<Duration>,
}

/// What became of a lease handed to a sink.
#[derive(Debug)]
pub enum Outcome {
    /// Every event of the lease was delivered: the driver commits it once every older lease
    /// is committed.
    Delivered(Lease),
    /// The lease was not delivered (not all of it). The driver closes the sink
    /// ([`Close::Purge`]), commits what was delivered before the oldest lease not delivered,
    /// rolls the rest back, newest first, and then stops or rebuilds the sink.
    Failed {
        /// The lease.
        lease: Lease,
        /// Why, and whether retrying can help.
        failure: Failure,
    },
    /// The sink asks to be closed and opened again (a sink group hands over to another of its
    /// sinks): the driver takes nothing more until every lease in flight is committed or
    /// rolled back, then closes the sink ([`Close::Finish`]) and opens it again. Asked again
    /// before that, it changes nothing.
    Reopen,
}

/// Why a lease was not delivered.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, in words that name the cause: the driver records it as the sink's last
    /// error (`/health`).
    pub why: String,
    /// The file and offset of the line that failed, when one line did.
    pub line: Option<(String, u64)>,
    /// `None` when retrying can help: the driver opens the sink again after a backoff.
    /// Otherwise the error the run stops with, once the leases are back in the channel.
    pub fatal: Option<SinkError>,
}

/// How the driver closes a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The run ends normally: nothing is in flight any more.
    Finish,
    /// Delivery is given up (after a failure, or when the agent aborts): the sink stops
    /// sending what it holds and gives it back at once.
    Purge,
}

/// The leases a closing sink gives back: those it was handed and did not report yet.
#[derive(Debug, Default)]
pub struct Returned {
    /// Leases delivered in full.
    pub delivered: Vec<Lease>,
    /// Leases not delivered, or not known to be.
    pub undelivered: Vec<Lease>,
}

/// How a run ended, for the sink's last log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The channel was closed and empty, or the sink was retired (`Draining`), and everything
    /// it was handed is settled: `undelivered` leases that the closed sink gave back as not
    /// delivered were rolled back.
    Finished {
        /// Leases rolled back on closing.
        undelivered: usize,
    },
    /// The agent aborted: what was delivered before the oldest lease not delivered was
    /// committed, `undelivered` leases were rolled back, and `abandoned` ones were neither
    /// (the sink could not give one back, e.g. a write blocked in the kernel; they are read
    /// again from their sources after a restart).
    Aborted {
        /// Leases rolled back.
        undelivered: usize,
        /// Leases left as they were.
        abandoned: usize,
    },
    /// The agent aborted while the driver waited to open the sink again after a failure (the
    /// leases were back in the channel already).
    AbortedRecovering,
}

/// One kind of sink, as the driver ([`drive`](crate::drive)) runs it: it is opened, handed
/// leases, reports each one's [`Outcome`], and is closed. The driver calls one method at a
/// time and awaits the futures of `open` and `close` to the end; the future of `outcome` must
/// be cancel-safe (the driver drops it when something else happens first, and asks again).
pub trait Sink: Send {
    /// What the sink can take on.
    fn capabilities(&self) -> Capabilities;

    /// Gets ready to deliver: called before the first lease, and again after each failure that
    /// retrying can help, once the backoff passed (a closed sink starts afresh: Kafka builds a
    /// new producer). An error stops the run.
    fn open(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Hands a lease over; never waits for its delivery (its [`Outcome`] comes from
    /// [`Sink::outcome`]). Called only on an open sink holding fewer than
    /// [`Capabilities::in_flight`] leases. An error (the sink cannot take it) stops the run;
    /// the lease stays leased.
    fn deliver(&mut self, lease: Lease) -> Result<(), SinkError>;

    /// The next outcome of a lease handed over, in any order; pending while there is none. An
    /// error means the sink broke (e.g. its thread stopped) and stops the run.
    fn outcome(&mut self) -> BoxFuture<'_, Result<Outcome, SinkError>>;

    /// Closes the sink and gives back every lease it was handed and did not report, except one
    /// it cannot get back without waiting on [`Close::Purge`] (the driver leaves it as it is).
    /// Called at the end of a run, after a failure, and on abort; the sink stays closed until
    /// [`Sink::open`].
    fn close(&mut self, how: Close) -> BoxFuture<'_, Returned>;

    /// How long the driver waits before it opens the sink again after a failure that retrying
    /// can help, given its own `backoff` (500 ms, doubling up to 30 s while failures repeat).
    /// The backoff by default; a sink group answers zero while another of its sinks can take
    /// over at once.
    fn retry_in(&self, backoff: Duration) -> Duration {
        backoff
    }

    /// Checks the sink's health, every [`Capabilities::watch_every`] while it delivers, and
    /// says when something stopped answering or answers again. Does nothing by default.
    fn watch(&mut self) {}

    /// Says that a lease failed (the sink's log line): `batches` leases are back in the
    /// channel, and the sink is opened again in `retry_in`, or not at all (`None`: the failure
    /// is fatal and the run stops with it).
    fn failed(&self, failure: &Failure, batches: usize, retry_in: Option<Duration>);

    /// Says how the run ended (the sink's last log line). Not called when the run stops with
    /// an error.
    fn stopped(&self, how: Stopped);
}
