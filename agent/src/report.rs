//! The console an operator watches: a status line every `report_interval`, a line when a sink
//! loses or regains its output and when a channel fills up or has room again (once per
//! episode, with how long it lasted), and a summary at shutdown. Never a line per event.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_sinks::SinkMetrics;
use sluice_sources::SourceMetrics;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::components::Components;

/// How often sinks and channels are looked at for episodes.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// A sink not connected for this long is unreachable (librdkafka reports its brokers' state
/// every second; a new sink has this long to connect before it is reported).
const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);
/// A channel this full holds its sources back.
const FULL: f64 = 0.9;
/// A full channel has room again below this fill.
const ROOM: f64 = 0.75;

/// Starts the reporter; it runs until aborted.
pub fn spawn(c: Arc<Components>, interval: Option<Duration>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut watch = Episodes::new();
        let mut status = interval.map(|i| Status::new(&c, i));
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            watch.look(&c);
            if let Some(s) = status.as_mut() {
                s.maybe_log(&c);
            }
        }
    })
}

/// What the episode watch remembers between looks, by component name (a reload may add and
/// remove components).
struct Episodes {
    /// Per sink: since when it has not been connected, and whether that was reported.
    sinks: HashMap<String, (Option<Instant>, bool)>,
    /// Per channel: since when it has been full, if it is.
    channels: HashMap<String, Option<Instant>>,
}

impl Episodes {
    fn new() -> Self {
        Episodes {
            sinks: HashMap::new(),
            channels: HashMap::new(),
        }
    }

    fn look(&mut self, c: &Components) {
        let now = Instant::now();
        let members = c.members();
        self.sinks
            .retain(|name, _| members.sinks.iter().any(|(n, _)| n == name));
        self.channels
            .retain(|name, _| members.channels.iter().any(|ch| ch.name() == name));
        for (name, m) in &members.sinks {
            // A sink of a group that is not the one delivering is closed on purpose.
            if members
                .group_of(name)
                .is_some_and(|g| g.active() != Some(name.as_str()))
            {
                self.sinks.remove(name);
                continue;
            }
            // A sink seen for the first time counts as not connected since now.
            let (down_since, reported) =
                self.sinks.entry(name.clone()).or_insert((Some(now), false));
            match (m.connected(), *down_since) {
                (true, Some(since)) => {
                    if *reported {
                        info!(sink = %name, down_for = ?round(now - since),
                            "sink reaches its output again");
                    }
                    *down_since = None;
                    *reported = false;
                }
                (true, None) => {}
                (false, None) => *down_since = Some(now),
                (false, Some(since)) => {
                    if !*reported && now - since >= UNREACHABLE_AFTER {
                        let h = m.health(crate::http::now_ms());
                        warn!(sink = %name, down_for = ?round(now - since),
                            last_error = h.last_error.as_deref().unwrap_or("none"),
                            "sink cannot reach its output (Kafka unreachable? or a listener that \
                             expects TLS or SASL where the sink's tls: and sasl: say otherwise); \
                             lines wait in the channel");
                        *reported = true;
                    }
                }
            }
        }
        for ch in &members.channels {
            let fill = fill(&ch.stats());
            let full_since = self.channels.entry(ch.name().to_owned()).or_insert(None);
            match *full_since {
                None if fill >= FULL => {
                    warn!(channel = ch.name(), fill = %percent(fill),
                        "channel full: its sources wait (backpressure; the files on disk are the buffer), \
                         or miss events where it is an optional channel of theirs");
                    *full_since = Some(now);
                }
                Some(since) if fill < ROOM => {
                    info!(channel = ch.name(), full_for = ?round(now - since), fill = %percent(fill),
                        "channel has room again: its sources read on");
                    *full_since = None;
                }
                _ => {}
            }
        }
    }
}

/// The status line's memory: the counts at the last line, by component name.
struct Status {
    interval: Duration,
    last: Instant,
    sources: HashMap<String, u64>,
    sinks: HashMap<String, u64>,
}

impl Status {
    fn new(c: &Components, interval: Duration) -> Self {
        let members = c.members();
        Status {
            interval,
            last: Instant::now(),
            sources: members
                .sources
                .iter()
                .map(|(n, m)| (n.clone(), SourceMetrics::get(&m.events)))
                .collect(),
            sinks: members
                .sinks
                .iter()
                .map(|(n, m)| (n.clone(), SinkMetrics::get(&m.events)))
                .collect(),
        }
    }

    fn maybe_log(&mut self, c: &Components) {
        let elapsed = self.last.elapsed();
        // Looked at every WATCH_EVERY: the look nearest the interval's end logs.
        if elapsed + WATCH_EVERY / 2 < self.interval {
            return;
        }
        self.last = Instant::now();
        let secs = elapsed.as_secs_f64().max(0.001);
        let members = c.members();
        let mut sources = String::new();
        let mut counts = HashMap::new();
        for (name, m) in &members.sources {
            let now = SourceMetrics::get(&m.events);
            let last = self.sources.get(name).copied().unwrap_or(now);
            let _ = write!(
                sources,
                "{}{name}: {now} lines, {:.0}/s",
                sep(&sources),
                now.saturating_sub(last) as f64 / secs
            );
            counts.insert(name.clone(), now);
        }
        self.sources = counts;
        let mut channels = String::new();
        for ch in &members.channels {
            let s = ch.stats();
            let _ = write!(
                channels,
                "{}{}: {} events, {} full",
                sep(&channels),
                ch.name(),
                s.events,
                percent(fill(&s))
            );
        }
        let mut sinks = String::new();
        let now_ms = crate::http::now_ms();
        let mut counts = HashMap::new();
        for (name, m) in &members.sinks {
            let now = SinkMetrics::get(&m.events);
            let last = self.sinks.get(name).copied().unwrap_or(now);
            let h = m.health(now_ms);
            let _ = write!(
                sinks,
                "{}{name}: {now} delivered, {:.0}/s, {}, last delivery {}",
                sep(&sinks),
                now.saturating_sub(last) as f64 / secs,
                if h.connected {
                    "connected"
                } else {
                    "not connected"
                },
                match (h.delivered, h.idle_ms) {
                    (true, Some(ms)) => format!("{:.1}s ago", ms as f64 / 1000.0),
                    _ => "never".to_owned(),
                }
            );
            counts.insert(name.clone(), now);
        }
        self.sinks = counts;
        info!(sources = ?sources, channels = ?channels, sinks = ?sinks, "status");
    }
}

/// Logs what each component did over the agent's life, at shutdown.
pub fn summary(c: &Components, ran_for: Duration) {
    let members = c.members();
    let mut sources = String::new();
    for (name, m) in &members.sources {
        let _ = write!(
            sources,
            "{}{name}: {} lines, {} files completed",
            sep(&sources),
            SourceMetrics::get(&m.events),
            SourceMetrics::get(&m.files_completed)
        );
    }
    let mut sinks = String::new();
    for (name, m) in &members.sinks {
        let _ = write!(
            sinks,
            "{}{name}: {} delivered, {} errors",
            sep(&sinks),
            SinkMetrics::get(&m.events),
            SinkMetrics::get(&m.errors)
        );
    }
    let mut channels = String::new();
    for ch in &members.channels {
        let _ = write!(
            channels,
            "{}{}: {} left",
            sep(&channels),
            ch.name(),
            ch.stats().events
        );
    }
    info!(ran_for = ?round(ran_for), sources = ?sources, channels = ?channels, sinks = ?sinks,
        "summary");
}

fn sep(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "; " }
}

/// How full a channel is, 0 to 1: the fuller of its event and byte counts.
fn fill(s: &sluice_channels::ChannelStats) -> f64 {
    let ratio = |n: usize, cap: usize| {
        if cap == 0 || cap == usize::MAX {
            0.0
        } else {
            n as f64 / cap as f64
        }
    };
    ratio(s.events, s.capacity_events).max(ratio(s.bytes, s.capacity_bytes))
}

fn percent(fill: f64) -> String {
    format!("{:.0}%", fill * 100.0)
}

/// A duration to the tenth of a second, for logs.
fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}
