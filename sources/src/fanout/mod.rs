//! Fan-out: the channels a source puts into, and the selector that chooses each event's.
//!
//! A source puts each batch through its [`Fanout`], which splits it by channel (one vector
//! per channel that gets events, never an allocation per event: an event's clone is two
//! reference counts), puts each part, and returns one [`Receipt`] for the batch:
//!
//! - A *required* channel's put waits while it is full (backpressure), and its receipt is
//!   part of the batch's: the batch is safe for the source only once every required channel
//!   that got events of it made them safe.
//! - An *optional* channel's put never waits: a channel that is full, closed or failing
//!   misses the events (they are counted and logged, at most every
//!   [`MISSED_LOG_INTERVAL`]), and its receipt is not waited for.
//! - A batch that gives no event to a required channel is safe once every earlier batch of
//!   the source is: it never lets a checkpoint pass anything put before it.
//!
//! Selectors (see [`SelectorConfig`]): `replicating` (every event to every channel),
//! `multiplexing` (by the value of one header) and `partitioned` (a file's events all to one
//! channel, by [`partition`] of its stream key).

mod config;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use sluice_channels::{Channel, ChannelError, Event, Origin, Receipt};
use tokio::sync::watch;
use tracing::warn;

pub use config::{Optional, SelectorConfig, SelectorKind};

use crate::SourceMetrics;

/// The shortest time between two logs of the events one optional channel missed.
pub const MISSED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a [`Fanout`] cannot be built from a selector and channels.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The selector names a channel that is not among the source's channels.
    #[error("the selector names channel `{0}`, which is not one of the source's channels")]
    UnknownChannel(String),
    /// The source has no channel.
    #[error("a source needs at least one channel")]
    NoChannel,
}

/// The channels a source puts into and how each event's are chosen; one per source.
pub struct Fanout {
    outputs: Vec<Output>,
    /// The sets of channels an event can go to; [`Choose`] picks one per event.
    routes: Vec<Route>,
    choose: Choose,
    /// One channel that takes every event as a required one: batches go to it as they are.
    direct: bool,
    /// The receipt of the last put into each channel as a required one: a batch with no
    /// required part resolves when all of them have.
    last: Mutex<Vec<Option<Receipt>>>,
}

/// One channel of the source, and what it missed as an optional one.
struct Output {
    channel: Arc<dyn Channel>,
    missed: Mutex<Missed>,
}

/// Events an optional channel missed since its last log, and when that was.
#[derive(Default)]
struct Missed {
    since_log: u64,
    logged: Option<Instant>,
}

/// The channels one event goes to: `targets[..required]` must take it, the rest may.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Route {
    targets: Vec<usize>,
    required: usize,
}

/// How the route of each event is chosen.
enum Choose {
    /// Always `routes[0]`: every event to the same channels.
    Same,
    /// By the value of a header: `by_value`, else `default` (both indexes into routes).
    Header {
        name: String,
        by_value: HashMap<String, usize>,
        default: usize,
    },
    /// `routes[partition(stream key, n)]`, one route per channel.
    Stream,
}

/// The channel, of `n`, that the stream `key` goes to with a `partitioned` selector: the
/// 64-bit FNV-1a hash of the key's UTF-8 bytes, modulo `n`. It depends on nothing but the key
/// and `n` (no per-process seed), so a file keeps its channel across restarts and releases
/// for as long as the source's list of channels stays the same.
pub fn partition(key: &str, n: usize) -> usize {
    (crate::fnv1a(key.as_bytes()) % n.max(1) as u64) as usize
}

impl Fanout {
    /// A source that puts every event into `channel` and waits for it.
    pub fn single(channel: Arc<dyn Channel>) -> Self {
        Fanout {
            outputs: vec![Output::new(channel)],
            routes: vec![Route {
                targets: vec![0],
                required: 1,
            }],
            choose: Choose::Same,
            direct: true,
            last: Mutex::new(vec![None]),
        }
    }

    /// A source that puts into `channels` (in the order of its `channels` option) as
    /// `selector` says, which names channels by [`Channel::name`]. The configuration is
    /// expected to be valid ([`SelectorConfig::validate`]); a name that is not among the
    /// channels is an error all the same.
    pub fn new(
        channels: Vec<Arc<dyn Channel>>,
        selector: &SelectorConfig,
    ) -> Result<Self, FanoutError> {
        if channels.is_empty() {
            return Err(FanoutError::NoChannel);
        }
        let index = |name: &String| {
            channels
                .iter()
                .position(|c| c.name() == name)
                .ok_or_else(|| FanoutError::UnknownChannel(name.clone()))
        };
        let route = |required: &[String], optional: &[String]| -> Result<Route, FanoutError> {
            let mut targets = Vec::new();
            for c in required {
                let i = index(c)?;
                if !targets.contains(&i) {
                    targets.push(i);
                }
            }
            let required = targets.len();
            for c in optional {
                let i = index(c)?;
                if !targets.contains(&i) {
                    targets.push(i);
                }
            }
            Ok(Route { targets, required })
        };
        let names: Vec<String> = channels.iter().map(|c| c.name().to_owned()).collect();
        let none: &[String] = &[];
        let (routes, choose) = match selector.kind {
            SelectorKind::Replicating => {
                let optional = match &selector.optional {
                    Optional::List(l) => l.as_slice(),
                    Optional::ByValue(_) => none,
                };
                let required: Vec<String> = names
                    .iter()
                    .filter(|n| !optional.contains(n))
                    .cloned()
                    .collect();
                (vec![route(&required, optional)?], Choose::Same)
            }
            SelectorKind::Multiplexing => {
                let optional_of = |v: &str| match &selector.optional {
                    Optional::ByValue(m) => m.get(v).map_or(none, Vec::as_slice),
                    Optional::List(_) => none,
                };
                let mut routes = vec![route(&selector.default, none)?];
                let mut by_value = HashMap::new();
                let values = selector.mapping.keys().chain(
                    match &selector.optional {
                        Optional::ByValue(m) => Some(m.keys()),
                        Optional::List(_) => None,
                    }
                    .into_iter()
                    .flatten(),
                );
                for v in values {
                    if by_value.contains_key(v) {
                        continue;
                    }
                    let required = selector.mapping.get(v).unwrap_or(&selector.default);
                    by_value.insert(v.clone(), routes.len());
                    routes.push(route(required, optional_of(v))?);
                }
                let choose = Choose::Header {
                    name: selector.header.clone().unwrap_or_default(),
                    by_value,
                    default: 0,
                };
                (routes, choose)
            }
            SelectorKind::Partitioned => {
                let routes = (0..channels.len())
                    .map(|i| Route {
                        targets: vec![i],
                        required: 1,
                    })
                    .collect();
                (routes, Choose::Stream)
            }
        };
        Ok(Fanout {
            direct: channels.len() == 1 && routes.iter().all(|r| r.required == 1),
            last: Mutex::new(vec![None; channels.len()]),
            outputs: channels.into_iter().map(Output::new).collect(),
            routes,
            choose,
        })
    }

    /// Puts `events` into the channels their routes name, waiting while a required channel is
    /// full, and returns the batch's receipt (see the module's documentation). Counts what
    /// optional channels missed and what no route took in `metrics`. Fails if a required
    /// channel refuses the batch (it is closed or failing): the source must stop then.
    pub(crate) async fn put(
        &self,
        events: Vec<Event>,
        metrics: &SourceMetrics,
    ) -> Result<Receipt, ChannelError> {
        if self.direct {
            return self.outputs[0].channel.put(events).await;
        }
        let mut parts = self.split(events, metrics);
        let mut receipt: Option<Receipt> = None;
        for (i, (part, required)) in parts.iter_mut().enumerate() {
            if !*required || part.is_empty() {
                continue;
            }
            let r = self.outputs[i].channel.put(std::mem::take(part)).await?;
            self.last()[i] = Some(r.clone());
            receipt = Some(match receipt {
                Some(all) => all.and(r),
                None => r,
            });
        }
        for (i, (part, required)) in parts.into_iter().enumerate() {
            if !required && !part.is_empty() {
                self.outputs[i].offer(part, metrics);
            }
        }
        Ok(match receipt {
            Some(r) => r,
            None => self.after_earlier(),
        })
    }

    /// The events of one batch by channel, each with whether the channel is required for
    /// any of them; events no route takes are counted and dropped.
    fn split(&self, events: Vec<Event>, metrics: &SourceMetrics) -> Vec<(Vec<Event>, bool)> {
        let n = events.len();
        let mut parts: Vec<(Vec<Event>, bool)> = (0..self.outputs.len())
            .map(|_| (Vec::new(), false))
            .collect();
        if let Choose::Same = self.choose {
            // Every channel of the route gets the whole batch: a clone for each but the last.
            let route = &self.routes[0];
            if let Some((&last, rest)) = route.targets.split_last() {
                for (k, &t) in rest.iter().enumerate() {
                    parts[t] = (events.clone(), k < route.required);
                }
                parts[last] = (events, rest.len() < route.required);
            }
            return parts;
        }
        let mut unrouted = 0u64;
        let mut stream: Option<(*const Origin, usize)> = None;
        for e in events {
            let route = &self.routes[self.route_of(&e, &mut stream)];
            let Some((&last, rest)) = route.targets.split_last() else {
                unrouted += 1;
                continue;
            };
            for (k, &t) in route.targets.iter().enumerate() {
                parts[t].1 |= k < route.required;
            }
            for &t in rest {
                push(&mut parts[t].0, e.clone(), n);
            }
            push(&mut parts[last].0, e, n);
        }
        if unrouted > 0 {
            SourceMetrics::add(&metrics.unrouted, unrouted);
        }
        parts
    }

    /// The index of the route of `e`; `stream` caches the last file's partition.
    fn route_of(&self, e: &Event, stream: &mut Option<(*const Origin, usize)>) -> usize {
        match &self.choose {
            Choose::Same => 0,
            Choose::Header {
                name,
                by_value,
                default,
            } => e
                .header(name)
                .filter(|v| !v.trim().is_empty())
                .and_then(|v| by_value.get(v))
                .copied()
                .unwrap_or(*default),
            Choose::Stream => {
                let origin = Arc::as_ptr(&e.origin);
                match *stream {
                    Some((o, i)) if o == origin => i,
                    _ => {
                        let i = partition(e.origin.stream_key(), self.outputs.len());
                        *stream = Some((origin, i));
                        i
                    }
                }
            }
        }
    }

    /// A receipt that resolves once every batch put before is safe: the last required put
    /// into each channel.
    fn after_earlier(&self) -> Receipt {
        self.last()
            .iter()
            .flatten()
            .cloned()
            .reduce(Receipt::and)
            .unwrap_or_else(|| Receipt::new(0, watch::channel(0).1))
    }

    fn last(&self) -> MutexGuard<'_, Vec<Option<Receipt>>> {
        // Each update is one assignment: a poisoned lock is still consistent.
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pushes `e` into `part`, which is given room for the whole batch (`n`) on its first event,
/// so that it never grows event by event.
fn push(part: &mut Vec<Event>, e: Event, n: usize) {
    if part.capacity() == 0 {
        part.reserve_exact(n);
    }
    part.push(e);
}

impl Output {
    fn new(channel: Arc<dyn Channel>) -> Self {
        Output {
            channel,
            missed: Mutex::new(Missed::default()),
        }
    }

    /// Puts `events` if the channel takes them now; if it is full (its put would wait),
    /// closed or failing, counts and logs them as missed.
    fn offer(&self, events: Vec<Event>, metrics: &SourceMetrics) {
        let count = events.len() as u64;
        let why = match now(self.channel.put(events)) {
            Some(Ok(_)) => return,
            Some(Err(e)) => e.to_string(),
            None => "full".to_owned(),
        };
        SourceMetrics::add(&metrics.optional_missed, count);
        let mut m = self.missed.lock().unwrap_or_else(|e| e.into_inner());
        m.since_log += count;
        if m.logged.is_none_or(|t| t.elapsed() >= MISSED_LOG_INTERVAL) {
            warn!(channel = self.channel.name(), missed = m.since_log, reason = %why,
                "optional channel could not take events; they are not put into it \
                 (logged at most every 10s)");
            m.since_log = 0;
            m.logged = Some(Instant::now());
        }
    }
}

/// Polls `f` once: its output if it is ready without waiting. A channel's put that has room
/// completes on its first poll, and one dropped while it waits puts nothing.
fn now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}
