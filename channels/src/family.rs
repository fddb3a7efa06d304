//! Metric families described next to the counters they read, so that a new counter is one
//! edit in the component's own file: the field and its row. The agent's `/metrics` endpoint
//! renders every row of every component's table.

/// What kind of value a family holds, in Prometheus' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows (until a restart).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    /// The Prometheus `# TYPE` word.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric family a component exposes, and how to read its value from the component's
/// counters `M`.
#[derive(Debug)]
pub struct Family<M: 'static> {
    /// The Prometheus name (`sluice_source_events_total`).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Reads the value.
    pub read: fn(&M) -> u64,
}

impl<M> Family<M> {
    /// A counter family.
    pub const fn counter(name: &'static str, help: &'static str, read: fn(&M) -> u64) -> Self {
        Family {
            name,
            kind: Kind::Counter,
            help,
            read,
        }
    }

    /// A gauge family.
    pub const fn gauge(name: &'static str, help: &'static str, read: fn(&M) -> u64) -> Self {
        Family {
            name,
            kind: Kind::Gauge,
            help,
            read,
        }
    }
}
