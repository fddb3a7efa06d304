//! A source's counters, read by the agent's metrics endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_channels::family::Family;

/// Counters every source keeps. Updated once per batch or per file, never per line.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// Lines (events) put into the channel.
    pub events: AtomicU64,
    /// Bytes of line bodies put into the channel.
    pub bytes: AtomicU64,
    /// Files read to their end and completed.
    pub files_completed: AtomicU64,
    /// Files set aside with an error.
    pub files_failed: AtomicU64,
    /// Lines longer than the maximum (split or truncated).
    pub long_lines: AtomicU64,
    /// Bytes dropped by truncating long lines.
    pub long_line_bytes_dropped: AtomicU64,
    /// Read errors (a file vanished or could not be read).
    pub read_errors: AtomicU64,
    /// Files that matched but could not be read at all: renamed out of every watched folder or
    /// deleted before they could be opened. Their lines are lost; each one is also logged.
    pub files_missed: AtomicU64,
    /// Events an optional channel of the source did not get: it was full, closed or failing
    /// when they were put (each channel's misses are also logged).
    pub optional_missed: AtomicU64,
    /// Events a multiplexing selector sent to no channel: their header value has no mapping
    /// and the selector has no default.
    pub unrouted: AtomicU64,
    /// Lines an interceptor (`regex_filter`) dropped: they made no event.
    pub interceptor_dropped: AtomicU64,
    /// The lines each dropping interceptor of the source dropped, by its place in the list
    /// (from 0) and its type: set when the interceptors are compiled.
    pub dropped_by: Mutex<Vec<DroppedBy>>,
    /// Lines not in the source's `format` (`cri`, `docker_json`): passed through as they are.
    pub unparsed: AtomicU64,
    /// Set once the source runs: its folders are listed and it reads what it found.
    started: AtomicBool,
    /// What keeps the source from working now (a spool folder that cannot be listed), for
    /// `/health`.
    problem: Mutex<Option<String>>,
}

/// The lines one interceptor of a source dropped.
#[derive(Debug)]
pub struct DroppedBy {
    /// Its place in the source's `interceptors` list, from 0.
    pub index: usize,
    /// Its type (`regex_filter`).
    pub kind: &'static str,
    /// How many lines it dropped.
    pub lines: Arc<AtomicU64>,
}

impl SourceMetrics {
    /// The metric families of a source, in the order `/metrics` shows them.
    pub const FAMILIES: &[Family<SourceMetrics>] = &[
        Family::counter(
            "sluice_source_events_total",
            "Events put into the channels (once each, whatever the number of channels).",
            |m| Self::get(&m.events),
        ),
        Family::counter(
            "sluice_source_bytes_total",
            "Bytes of events put into the channels (once each).",
            |m| Self::get(&m.bytes),
        ),
        Family::counter(
            "sluice_source_files_completed_total",
            "Files read in full and completed.",
            |m| Self::get(&m.files_completed),
        ),
        Family::counter(
            "sluice_source_files_failed_total",
            "Files set aside with an error.",
            |m| Self::get(&m.files_failed),
        ),
        Family::counter(
            "sluice_source_long_lines_total",
            "Lines longer than max_line_bytes.",
            |m| Self::get(&m.long_lines),
        ),
        Family::counter(
            "sluice_source_long_line_bytes_dropped_total",
            "Bytes dropped by truncating long lines.",
            |m| Self::get(&m.long_line_bytes_dropped),
        ),
        Family::counter(
            "sluice_source_read_errors_total",
            "Files that vanished or could not be read.",
            |m| Self::get(&m.read_errors),
        ),
        Family::counter(
            "sluice_source_files_missed_total",
            "Files that matched but were renamed away or deleted before they could be opened.",
            |m| Self::get(&m.files_missed),
        ),
        Family::counter(
            "sluice_source_optional_missed_events_total",
            "Events an optional channel did not get because it was full, closed or failing.",
            |m| Self::get(&m.optional_missed),
        ),
        Family::counter(
            "sluice_source_unrouted_events_total",
            "Events a multiplexing selector sent nowhere (no mapping for their header value, no default).",
            |m| Self::get(&m.unrouted),
        ),
        Family::counter(
            "sluice_source_interceptor_dropped_events_total",
            "Lines an interceptor (regex_filter) dropped; their file positions still move on.",
            |m| Self::get(&m.interceptor_dropped),
        ),
        Family::counter(
            "sluice_source_unparsed_lines_total",
            "Lines not in the source's format (cri, docker_json), passed through as they are.",
            |m| Self::get(&m.unparsed),
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

    /// Marks the source started: it listed what it reads and is reading it.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Sets or clears what keeps the source from working now.
    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// What keeps the source from working now, if anything.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Each dropping interceptor's count, as `(index, type, lines)`, in list order.
    pub fn dropped_by(&self) -> Vec<(usize, &'static str, u64)> {
        self.dropped_by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|d| (d.index, d.kind, Self::get(&d.lines)))
            .collect()
    }

    /// Whether the source started (see [`SourceMetrics::mark_started`]).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }
}
