//! A sink's counters and state, read by the agent's metrics and health endpoints.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_channels::family::Family;

/// Counters and state every sink keeps. Counters are updated once per batch or per error,
/// never per event.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Events delivered and committed.
    pub events: AtomicU64,
    /// Bytes of event bodies delivered and committed.
    pub bytes: AtomicU64,
    /// Leases committed.
    pub batches: AtomicU64,
    /// Leases rolled back after a failed delivery.
    pub rollbacks: AtomicU64,
    /// Errors: failed deliveries, and errors of the client itself (a broker that refuses
    /// connections, every broker down, a failed write to stdout).
    pub errors: AtomicU64,
    /// Times delivery was started again after a failed delivery (the failed batches are sent
    /// again).
    pub retries: AtomicU64,
    /// Lines larger than the output accepts (split, skipped or stopped at, by policy).
    pub oversize: AtomicU64,
    /// Events not sent because the positions of exactly-once delivery say Kafka holds them
    /// already (a crash left them in the channel, or a source read them again).
    pub skipped: AtomicU64,
    /// Transactions committed (exactly-once delivery).
    pub transactions: AtomicU64,
    /// Whether the sink reaches its output (for Kafka: at least one broker connection is up).
    connected: AtomicBool,
    /// Whether it ever did.
    reached: AtomicBool,
    /// When the sink started, in milliseconds since the Unix epoch (0: not started).
    started_ms: AtomicU64,
    /// When a batch was last delivered and committed (0: never).
    last_delivery_ms: AtomicU64,
    /// Whether the latest delivery failed (no batch was delivered since). Client errors do
    /// not count here: they show in `connected`.
    failing: AtomicBool,
    /// The last error, as logged.
    last_error: Mutex<Option<String>>,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How a sink is doing, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkHealth {
    /// Whether the sink reaches its output.
    pub connected: bool,
    /// Whether the latest delivery attempt failed (no delivery succeeded since the last
    /// failure).
    pub failing: bool,
    /// Milliseconds since the last delivery, or since the sink started when nothing was
    /// delivered yet; `None` before the sink started.
    pub idle_ms: Option<u64>,
    /// Whether anything was delivered yet.
    pub delivered: bool,
    /// Errors so far.
    pub errors: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

impl SinkHealth {
    /// True when the sink is connected and its latest delivery did not fail.
    pub fn ok(&self) -> bool {
        self.connected && !self.failing
    }
}

impl SinkMetrics {
    /// The counter families of a sink, in the order `/metrics` shows them (before its gauges,
    /// which the agent renders from [`SinkMetrics::health`] and the timestamps).
    pub const COUNTERS: &[Family<SinkMetrics>] = &[
        Family::counter(
            "sluice_sink_events_total",
            "Events delivered and committed.",
            |m| Self::get(&m.events),
        ),
        Family::counter(
            "sluice_sink_bytes_total",
            "Bytes delivered and committed.",
            |m| Self::get(&m.bytes),
        ),
        Family::counter("sluice_sink_batches_total", "Batches committed.", |m| {
            Self::get(&m.batches)
        }),
        Family::counter(
            "sluice_sink_rollbacks_total",
            "Batches rolled back after a failed delivery.",
            |m| Self::get(&m.rollbacks),
        ),
        Family::counter(
            "sluice_sink_errors_total",
            "Errors: failed deliveries, and client errors (a broker refusing connections, every broker down).",
            |m| Self::get(&m.errors),
        ),
        Family::counter(
            "sluice_sink_retries_total",
            "Times delivery started again after a failed delivery (the failed batches are sent again).",
            |m| Self::get(&m.retries),
        ),
        Family::counter(
            "sluice_sink_oversize_total",
            "Lines larger than the output accepts (split, skipped or stopped at, by policy).",
            |m| Self::get(&m.oversize),
        ),
        Family::counter(
            "sluice_sink_skipped_total",
            "Events not sent again because exactly-once delivery's positions say Kafka holds them.",
            |m| Self::get(&m.skipped),
        ),
        Family::counter(
            "sluice_sink_transactions_total",
            "Transactions committed (exactly-once delivery).",
            |m| Self::get(&m.transactions),
        ),
    ];

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Marks the sink started (not connected yet).
    pub fn started(&self) {
        self.started_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Records a delivered and committed batch: counters, delivery time, connected.
    pub fn delivered(&self, events: u64, bytes: u64) {
        Self::add(&self.events, events);
        Self::add(&self.bytes, bytes);
        Self::add(&self.batches, 1);
        self.last_delivery_ms.store(now_ms(), Ordering::Relaxed);
        self.failing.store(false, Ordering::Relaxed);
        self.set_connected(true);
    }

    /// Records a failed delivery and why.
    pub fn delivery_failed(&self, error: String) {
        Self::add(&self.errors, 1);
        self.failing.store(true, Ordering::Relaxed);
        self.set_last_error(error);
    }

    /// Records an error of the client itself (not of one delivery).
    pub fn client_error(&self, error: String) {
        Self::add(&self.errors, 1);
        self.set_last_error(error);
    }

    fn set_last_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// Sets whether the sink reaches its output.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        if connected {
            self.reached.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the sink reached its output at least once since it started (it may not now).
    pub fn reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    /// Whether the sink reaches its output.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// When a batch was last delivered, in milliseconds since the Unix epoch (0: never).
    pub fn last_delivery_ms(&self) -> u64 {
        self.last_delivery_ms.load(Ordering::Relaxed)
    }

    /// How the sink is doing, at `now_ms` (milliseconds since the Unix epoch).
    pub fn health(&self, now_ms: u64) -> SinkHealth {
        let started = self.started_ms.load(Ordering::Relaxed);
        let delivered = self.last_delivery_ms();
        let since = if delivered > 0 { delivered } else { started };
        SinkHealth {
            connected: self.connected(),
            failing: self.failing.load(Ordering::Relaxed),
            idle_ms: (since > 0).then(|| now_ms.saturating_sub(since)),
            delivered: delivered > 0,
            errors: Self::get(&self.errors),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_deliveries_failures_and_connection() {
        let m = SinkMetrics::default();
        let h = m.health(now_ms());
        assert!(!h.ok() && h.idle_ms.is_none() && !h.delivered);
        m.started();
        m.set_connected(true);
        assert!(m.health(now_ms()).ok());
        m.delivery_failed("topic `t` does not exist".into());
        let h = m.health(now_ms());
        assert!(h.failing && !h.ok(), "{h:?}");
        assert_eq!(h.last_error.as_deref(), Some("topic `t` does not exist"));
        assert_eq!(h.errors, 1);
        m.delivered(10, 100);
        let h = m.health(now_ms() + 1500);
        assert!(h.ok() && h.delivered, "{h:?}");
        assert!(h.idle_ms.is_some_and(|ms| ms >= 1500), "{h:?}");
        m.client_error("all brokers down".into());
        m.set_connected(false);
        let h = m.health(now_ms());
        assert!(!h.ok() && !h.failing && h.errors == 2, "{h:?}");
    }
}
