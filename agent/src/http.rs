//! `/metrics` (Prometheus text format), `/health` and `/ready`, on a plain HTTP/1.1 listener.
//!
//! It answers one GET per connection; that is all a scraper or a probe needs, and it keeps an
//! HTTP framework out of the agent. A request is at most 4 KiB, a connection lasts at most
//! [`EXCHANGE_TIMEOUT`] and at most [`MAX_CONNECTIONS`] are served at once (others are closed
//! at once), so that no client, slow or hostile, holds the agent's memory or tasks; nothing
//! but the three paths is served, and no path reads a file.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use sluice_channels::ChannelStats;
use sluice_channels::family::Family;
use sluice_sinks::failover::GroupMetrics;
use sluice_sinks::{SinkHealth, SinkMetrics};
use sluice_sources::SourceMetrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::components::Components;

/// The longest a connection may take to send its request and receive the answer.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long the endpoint waits after a failed `accept` (out of file descriptors) before it
/// tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Binds the listener for `/metrics` and `/health` on `addr`; `key` names the setting in
/// errors (`a1.http`).
pub async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "{key}: cannot listen on {addr} (port {}) for /metrics and /health",
            addr.port()
        )
    })
}

/// Serves `listener`; the returned task runs until aborted.
pub fn serve(listener: TcpListener, components: Arc<Components>) -> JoinHandle<()> {
    if let Ok(address) = listener.local_addr() {
        info!(%address, "serving /metrics, /health and /ready");
    }
    serve_bounded(listener, components, EXCHANGE_TIMEOUT, MAX_CONNECTIONS)
}

/// Serves `listener` with at most `max` connections at once, each for at most `timeout`.
fn serve_bounded(
    listener: TcpListener,
    components: Arc<Components>,
    timeout: Duration,
    max: usize,
) -> JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        // Connections closed unserved since the endpoint was last full (0: it is not).
        let mut refused: u64 = 0;
        let mut accept_failed = false;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => {
                    accept_failed = false;
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors, say: the error repeats at once, so wait a
                    // little rather than spin.
                    if !accept_failed {
                        warn!(error = %e, "the HTTP endpoint cannot accept connections");
                        accept_failed = true;
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if refused == 0 {
                    warn!(%peer, max, "the HTTP endpoint is serving as many connections as it \
                        may; closing new ones until one ends (probes may fail meanwhile)");
                }
                refused += 1;
                debug!(%peer, "too many HTTP connections at once; closing this one");
                continue;
            };
            if refused > 0 {
                info!(refused, "the HTTP endpoint serves new connections again");
                refused = 0;
            }
            let components = components.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, answer(stream, &components)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection failed"),
                    Err(_) => debug!(%peer, "HTTP connection closed: no whole request in time"),
                }
                drop(slot);
            });
        }
    })
}

async fn answer(mut stream: TcpStream, components: &Components) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", render(components)),
        ("GET", "/health") => ("200 OK", "text/plain", health(components, now_ms())),
        ("GET", "/ready") => {
            let (ready, body) = readiness(components);
            let status = if ready {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", body)
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
    };
    // An error quoted in /health or /ready (a sink's last error) may quote a secret; /metrics
    // holds only names and component labels, and masking it could break its format.
    let body = if path == "/metrics" {
        std::borrow::Cow::Borrowed(body.as_str())
    } else {
        crate::secrets::mask(&body)
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The Prometheus text exposition of every component's counters.
pub fn render(c: &Components) -> String {
    let mut out = String::new();
    let agent = &c.agent;
    let m = c.members();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let sep = if labels.is_empty() { "" } else { "," };
            let _ = writeln!(out, "{name}{{agent=\"{agent}\"{sep}{labels}}} {v}");
        }
    };
    let sources: Vec<_> = m.sources.iter().map(|(n, m)| (n.as_str(), &**m)).collect();
    table(&mut family, "source", SourceMetrics::FAMILIES, &sources);
    let dropped_by = m
        .sources
        .iter()
        .flat_map(|(n, sm)| {
            sm.dropped_by().into_iter().map(move |(i, kind, v)| {
                (
                    format!("source=\"{n}\",interceptor=\"{i}\",type=\"{kind}\""),
                    v.to_string(),
                )
            })
        })
        .collect();
    family(
        "sluice_interceptor_dropped_events_total",
        "counter",
        "Lines each dropping interceptor dropped, by source and place in its interceptors list (from 0).",
        dropped_by,
    );
    let stats: Vec<_> = m
        .channels
        .iter()
        .map(|ch| (ch.name(), ch.stats()))
        .collect();
    let channels: Vec<_> = stats.iter().map(|(n, s)| (*n, s)).collect();
    table(&mut family, "channel", ChannelStats::FAMILIES, &channels);
    let sinks: Vec<_> = m.sinks.iter().map(|(n, m)| (n.as_str(), &**m)).collect();
    table(&mut family, "sink", SinkMetrics::COUNTERS, &sinks);
    let sink = |f: &dyn Fn(&SinkMetrics) -> String| -> Vec<(String, String)> {
        m.sinks
            .iter()
            .map(|(n, m)| (format!("sink=\"{n}\""), f(m)))
            .collect()
    };
    family(
        "sluice_sink_connected",
        "gauge",
        "1 while the sink reaches its output (Kafka: a broker connection is up), else 0.",
        sink(&|m| u8::from(m.connected()).to_string()),
    );
    let now = now_ms();
    family(
        "sluice_sink_last_delivery_timestamp_seconds",
        "gauge",
        "When a batch was last delivered, in seconds since the Unix epoch (0: never).",
        sink(&|m| seconds(m.last_delivery_ms())),
    );
    family(
        "sluice_sink_last_delivery_age_seconds",
        "gauge",
        "Seconds since a batch was last delivered, or since the sink started when none was yet.",
        sink(&|m| seconds(m.health(now).idle_ms.unwrap_or(0))),
    );
    let active = m
        .groups
        .iter()
        .flat_map(|(g, gm)| {
            let on = gm.active();
            gm.sinks.iter().map(move |s| {
                let v = u8::from(on == Some(s.as_str()));
                (format!("group=\"{g}\",sink=\"{s}\""), v.to_string())
            })
        })
        .collect();
    family(
        "sluice_sink_group_active",
        "gauge",
        "1 for the sink of a group that takes from the channel now, else 0.",
        active,
    );
    let group = |f: &dyn Fn(&GroupMetrics) -> u64| -> Vec<(String, String)> {
        m.groups
            .iter()
            .map(|(g, gm)| (format!("group=\"{g}\""), f(gm).to_string()))
            .collect()
    };
    family(
        "sluice_sink_group_failovers_total",
        "counter",
        "Times a sink of the group failed and the next by priority took over.",
        group(&|g| SinkMetrics::get(&g.failovers)),
    );
    family(
        "sluice_sink_group_takebacks_total",
        "counter",
        "Times a sink of higher priority took over again once its penalty ended.",
        group(&|g| SinkMetrics::get(&g.takebacks)),
    );
    let r = &c.reloads;
    family(
        "sluice_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP, --watch-config): applied, or failed (refused, or a component of the new configuration could not start).",
        vec![
            (
                "result=\"applied\"".to_owned(),
                r.applied.load(Ordering::Relaxed).to_string(),
            ),
            (
                "result=\"failed\"".to_owned(),
                r.failed.load(Ordering::Relaxed).to_string(),
            ),
        ],
    );
    family(
        "sluice_config_last_reload_successful",
        "gauge",
        "1 if the last configuration reload succeeded (or there was none), else 0.",
        vec![(
            String::new(),
            u8::from(r.last_ok.load(Ordering::Relaxed)).to_string(),
        )],
    );
    family(
        "sluice_config_loaded_timestamp_seconds",
        "gauge",
        "When the running configuration was loaded, in seconds since the Unix epoch.",
        vec![(String::new(), seconds(r.loaded_ms.load(Ordering::Relaxed)))],
    );
    out
}

/// Renders every family of `families` with one row per component of `members`, labelled
/// `kind="name"`.
fn table<M>(
    family: &mut impl FnMut(&str, &str, &str, Vec<(String, String)>),
    kind: &str,
    families: &[Family<M>],
    members: &[(&str, &M)],
) {
    for f in families {
        let rows = members
            .iter()
            .map(|(name, m)| (format!("{kind}=\"{name}\""), (f.read)(m).to_string()));
        family(f.name, f.kind.word(), f.help, rows.collect());
    }
}

/// Milliseconds as seconds with three decimals.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether the agent is ready, and the `/ready` body: `{"ready":true}`, or `{"ready":false,
/// "reasons":[...]}` naming each component that is not. Ready means every component started
/// and every sink reached its output at least once since the start (a later outage does not
/// make it unready: the files on disk are the buffer, and `/health` tells about it); not
/// ready again from the moment the agent begins to stop.
pub fn readiness(c: &Components) -> (bool, String) {
    let mut reasons: Vec<String> = Vec::new();
    if c.stopping.load(Ordering::Relaxed) {
        reasons.push("the agent is stopping".to_owned());
    } else if !c.running.load(Ordering::Relaxed) {
        reasons.push("the agent is starting".to_owned());
    }
    let members = c.members();
    reasons.extend(members.down.iter().cloned());
    for (name, m) in &members.sources {
        if !m.started() {
            reasons.push(format!("source {name} has not started"));
        }
    }
    for (name, g) in &members.groups {
        let reached = members
            .sinks
            .iter()
            .any(|(n, m)| g.sinks.contains(n) && m.reached());
        if !reached {
            reasons.push(format!(
                "no sink of group {name} has reached its output yet"
            ));
        }
    }
    for (name, m) in &members.sinks {
        if members.group_of(name).is_none() && !m.reached() {
            let why = m
                .health(now_ms())
                .last_error
                .map_or(String::new(), |e| format!(" (last error: {e})"));
            reasons.push(format!("sink {name} has not reached its output yet{why}"));
        }
    }
    let body = if reasons.is_empty() {
        "{\"ready\":true}\n".to_owned()
    } else {
        let list = serde_json::to_string(&reasons).unwrap_or_else(|_| "[]".to_owned());
        format!("{{\"ready\":false,\"reasons\":{list}}}\n")
    };
    (reasons.is_empty(), body)
}

/// The `/health` body: `ok` or `degraded` on the first line, then one line per sink and per
/// channel. The status is 200 either way while the process runs, so that a liveness probe
/// does not restart an agent that waits out a Kafka outage (restarting would not help: the
/// files on disk are the buffer); monitoring reads the first line or the metrics.
pub fn health(c: &Components, now_ms: u64) -> String {
    let members = c.members();
    let sinks: Vec<(&str, SinkHealth)> = members
        .sinks
        .iter()
        .map(|(n, m)| (n.as_str(), m.health(now_ms)))
        .collect();
    let problems: Vec<(&str, String)> = members
        .sources
        .iter()
        .filter_map(|(n, m)| Some((n.as_str(), m.problem()?)))
        .collect();
    // A group is healthy while the sink it has open is: its others may be down.
    let active_ok = |g: &GroupMetrics| {
        g.active()
            .is_some_and(|a| sinks.iter().any(|(n, h)| *n == a && h.ok()))
    };
    let ok = sinks
        .iter()
        .all(|(n, h)| h.ok() || members.group_of(n).is_some())
        && members.groups.iter().all(|(_, g)| active_ok(g))
        && problems.is_empty()
        && members.down.is_empty();
    let mut out = String::from(if ok { "ok\n" } else { "degraded\n" });
    for down in &members.down {
        let _ = writeln!(out, "{down}");
    }
    for (name, problem) in &problems {
        let _ = writeln!(out, "source {name}: {problem}");
    }
    for (name, h) in &sinks {
        let state = match (h.connected, h.failing) {
            (false, _) => "not connected",
            (true, true) => "connected, delivery failing",
            (true, false) => "connected",
        };
        let _ = write!(out, "sink {name}: {state}; ");
        match (h.delivered, h.idle_ms) {
            (true, Some(ms)) => {
                let _ = write!(out, "last delivery {}s ago", seconds(ms));
            }
            (false, Some(ms)) => {
                let _ = write!(
                    out,
                    "nothing delivered since the start {}s ago",
                    seconds(ms)
                );
            }
            (_, None) => out.push_str("not started"),
        }
        let _ = write!(out, "; {} errors", h.errors);
        if let Some(e) = &h.last_error {
            let _ = write!(out, "; last error: {}", e.replace('\n', " "));
        }
        out.push('\n');
    }
    for (name, g) in &members.groups {
        let _ = writeln!(
            out,
            "sink group {name}: {} ({}); {} failovers",
            g.active()
                .map_or("no sink open".to_owned(), |a| format!("{a} delivers")),
            g.sinks.join(", "),
            SinkMetrics::get(&g.failovers)
        );
    }
    for ch in &members.channels {
        let s = ch.stats();
        let events = if s.capacity_events == usize::MAX {
            format!("{} events", s.events)
        } else {
            format!("{} of {} events", s.events, s.capacity_events)
        };
        let _ = writeln!(
            out,
            "channel {}: {events}, {} of {} bytes",
            ch.name(),
            s.bytes,
            s.capacity_bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sluice_channels::{MemoryChannel, MemoryChannelConfig};

    use super::*;
    use crate::components::Members;

    fn no_members() -> Members {
        Members {
            sources: Vec::new(),
            channels: Vec::new(),
            sinks: Vec::new(),
            groups: Vec::new(),
            down: Vec::new(),
        }
    }

    /// Serves no component on a loopback port with `timeout` and `max`; returns the address.
    async fn server(timeout: Duration, max: usize) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let components = Arc::new(Components::new("a1", no_members()));
        (addr, serve_bounded(listener, components, timeout, max))
    }

    /// Sends `request` and reads until the server closes; the answer's status line (empty if
    /// the server closed without one).
    async fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(request).await;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer).into_owned();
        text.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn only_get_of_the_three_paths_is_served() {
        let (addr, task) = server(Duration::from_secs(5), 4).await;
        assert_eq!(
            ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await,
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            ask(addr, b"GET /health HTTP/1.1\r\n\r\n").await,
            "HTTP/1.1 200 OK"
        );
        for path in [
            "/etc/passwd",
            "/../metrics",
            "/metrics/../../etc/passwd",
            "/ready/x",
        ] {
            let request = format!("GET {path} HTTP/1.1\r\n\r\n");
            assert_eq!(
                ask(addr, request.as_bytes()).await,
                "HTTP/1.1 404 Not Found",
                "{path}"
            );
        }
        for method in ["POST", "PUT", "DELETE", "HEAD"] {
            let request = format!("{method} /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(
                ask(addr, request.as_bytes()).await,
                "HTTP/1.1 405 Method Not Allowed",
                "{method}"
            );
        }
        // A request larger than 4 KiB is answered from its first 4 KiB, and read no further.
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(1 << 20)
        );
        let status = ask(addr, huge.as_bytes()).await;
        assert!(status.is_empty() || status == "HTTP/1.1 200 OK", "{status}");
        assert_eq!(
            ask(addr, b"GET /health HTTP/1.1\r\n\r\n").await,
            "HTTP/1.1 200 OK"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_off_and_holds_no_slot_meanwhile_beyond_the_limit() {
        let timeout = Duration::from_millis(300);
        let (addr, task) = server(timeout, 2).await;
        let began = Instant::now();
        let mut silent: Vec<TcpStream> = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // Both slots are taken: a third connection is closed without an answer.
        assert_eq!(ask(addr, b"GET /health HTTP/1.1\r\n\r\n").await, "");
        // The silent ones are closed after the timeout, and their slots serve again.
        for s in &mut silent {
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
        assert!(began.elapsed() >= timeout);
        assert_eq!(
            ask(addr, b"GET /health HTTP/1.1\r\n\r\n").await,
            "HTTP/1.1 200 OK"
        );
        task.abort();
    }

    #[test]
    fn every_family_of_every_table_is_rendered_with_its_type_and_a_row_per_component() {
        let source = Arc::new(SourceMetrics::default());
        SourceMetrics::add(&source.events, 7);
        let sink = Arc::new(SinkMetrics::default());
        SinkMetrics::add(&sink.oversize, 3);
        let channel = MemoryChannel::new("c1", MemoryChannelConfig::default());
        let members = Members {
            sources: vec![("r1".into(), source)],
            channels: vec![Arc::new(channel)],
            sinks: vec![("k1".into(), sink)],
            groups: Vec::new(),
            down: Vec::new(),
        };
        let text = render(&Components::new("a1", members));
        let tables = [
            (
                SourceMetrics::FAMILIES
                    .iter()
                    .map(|f| (f.name, f.kind))
                    .collect::<Vec<_>>(),
                "source=\"r1\"",
            ),
            (
                ChannelStats::FAMILIES
                    .iter()
                    .map(|f| (f.name, f.kind))
                    .collect(),
                "channel=\"c1\"",
            ),
            (
                SinkMetrics::COUNTERS
                    .iter()
                    .map(|f| (f.name, f.kind))
                    .collect(),
                "sink=\"k1\"",
            ),
        ];
        for (families, label) in tables {
            for (name, kind) in families {
                assert!(
                    text.contains(&format!("# TYPE {name} {}\n", kind.word())),
                    "{name}"
                );
                let row = format!("{name}{{agent=\"a1\",{label}}} ");
                assert!(text.contains(&row), "{row} in\n{text}");
            }
        }
        assert!(text.contains("sluice_source_events_total{agent=\"a1\",source=\"r1\"} 7\n"));
        assert!(text.contains("sluice_sink_oversize_total{agent=\"a1\",sink=\"k1\"} 3\n"));
    }
}
