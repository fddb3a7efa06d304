//! Configuration reload: what a new configuration changes, component by component, and the
//! watch on the configuration file (`--watch-config`).
//!
//! A component is kept, untouched, when its own definition and the channel it is wired to
//! are unchanged. Otherwise it is stopped (sources drain: what they put becomes safe; sinks
//! deliver what they took) and a new one is started under the same name, which resumes from
//! the same checkpoints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use notify::event::{AccessKind, AccessMode, EventKind};
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::AgentConfig;

/// What a reload does to go from the running configuration to a new one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sources to stop: removed, changed, or wired to a channel (any of theirs) that is
    /// replaced or removed.
    pub stop_sources: Vec<String>,
    /// Sinks to retire while their channel stays: removed or changed. Here and below, a sink
    /// of a group is named by its group, which runs it.
    pub retire_sinks: Vec<String>,
    /// Sinks of channels that are replaced or removed: they deliver what the channel holds
    /// once it is closed.
    pub drain_sinks: Vec<String>,
    /// Channels to close and drop: removed or changed.
    pub drop_channels: Vec<String>,
    /// Channels of the new configuration to open: added or changed.
    pub open_channels: Vec<String>,
    /// Sinks of the new configuration to start: added, or stopped above and still there.
    pub start_sinks: Vec<String>,
    /// Sources of the new configuration to start: added, or stopped above and still there.
    pub start_sources: Vec<String>,
    /// Components kept running untouched.
    pub kept: Vec<String>,
}

/// The name of the task that runs the sink `name`: its group's, or its own.
fn runner(cfg: &AgentConfig, name: &str) -> String {
    cfg.group_of(name)
        .map_or_else(|| name.to_owned(), |g| g.name.clone())
}

impl Plan {
    /// The plan from `old` to `new` (both valid configurations of one agent).
    pub fn new(old: &AgentConfig, new: &AgentConfig) -> Plan {
        let mut plan = Plan::default();
        let channel_of =
            |cfg: &AgentConfig, name: &str| cfg.channels.iter().find(|c| c.name == name).cloned();
        for c in &old.channels {
            match channel_of(new, &c.name) {
                Some(n) if n == *c => plan.kept.push(format!("channel {}", c.name)),
                _ => plan.drop_channels.push(c.name.clone()),
            }
        }
        for c in &new.channels {
            if channel_of(old, &c.name).is_none_or(|o| o != *c) {
                plan.open_channels.push(c.name.clone());
            }
        }
        let replaced = |channel: &str| plan.drop_channels.iter().any(|c| c == channel);
        let mut retire = Vec::new();
        let mut drain = Vec::new();
        let mut start_sinks = Vec::new();
        let mut kept = Vec::new();
        // A sink in a group runs in its group's task, named after the group: the group is
        // retired, drained and started as a whole when it or any of its sinks changes.
        for s in &old.sinks {
            let next = new.sinks.iter().find(|n| n.name == s.name);
            let runner = runner(old, &s.name);
            let list = if replaced(&s.channel) {
                &mut drain
            } else if next != Some(s) || old.group_of(&s.name) != new.group_of(&s.name) {
                &mut retire
            } else {
                continue;
            };
            if !list.contains(&runner) {
                list.push(runner);
            }
        }
        for s in &old.sinks {
            let runner = runner(old, &s.name);
            if !retire.contains(&runner) && !drain.contains(&runner) {
                kept.push(format!("sink {}", s.name));
            }
        }
        for s in &new.sinks {
            let runner = runner(new, &s.name);
            let was = old
                .sinks
                .iter()
                .any(|o| o.name == s.name)
                .then(|| self::runner(old, &s.name));
            let start =
                was.is_none_or(|w| w != runner || retire.contains(&w) || drain.contains(&w));
            if start && !start_sinks.contains(&runner) {
                start_sinks.push(runner);
            }
        }
        let mut stop_sources = Vec::new();
        let mut start_sources = Vec::new();
        for s in &old.sources {
            let next = new.sources.iter().find(|n| n.name == s.name);
            if s.channels.iter().any(|c| replaced(c)) || next != Some(s) {
                stop_sources.push(s.name.clone());
            } else {
                kept.push(format!("source {}", s.name));
            }
        }
        for s in &new.sources {
            if !old.sources.iter().any(|o| o.name == s.name) || stop_sources.contains(&s.name) {
                start_sources.push(s.name.clone());
            }
        }
        plan.retire_sinks = retire;
        plan.drain_sinks = drain;
        plan.start_sinks = start_sinks;
        plan.stop_sources = stop_sources;
        plan.start_sources = start_sources;
        plan.kept.extend(kept);
        plan
    }

    /// True when the new configuration changes no component.
    pub fn is_empty(&self) -> bool {
        self.stop_sources.is_empty()
            && self.retire_sinks.is_empty()
            && self.drain_sinks.is_empty()
            && self.drop_channels.is_empty()
            && self.open_channels.is_empty()
            && self.start_sinks.is_empty()
            && self.start_sources.is_empty()
    }
}

/// How often the watched configuration file is read again even without a file-system event
/// (an event can be missed, e.g. when the file is a symlink into another folder).
const WATCH_POLL: Duration = Duration::from_secs(5);
/// How long the file must be quiet after an event before it is read: an editor or a
/// ConfigMap update writes in several steps.
const SETTLE: Duration = Duration::from_millis(300);
/// The longest wait for quiet after an event: a folder that is never quiet for `SETTLE` (the
/// agent's own log written next to its configuration) must not hold a change back for good.
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// Watches `path` and sends `()` each time its content differs from the last content seen
/// (`loaded`, what the running configuration was read from, counts as seen). It watches the file's folder, so that a
/// replaced file, a renamed one, and a Kubernetes ConfigMap update (which swaps the `..data`
/// symlink the file's path goes through) are all noticed; it also reads the file every
/// [`WATCH_POLL`]. Runs until the receiver is dropped.
pub fn watch(path: PathBuf, loaded: Option<Vec<u8>>) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening or reading something in the folder changes nothing.
        if let Ok(e) = &event
            && let EventKind::Access(kind) = e.kind
            && kind != AccessKind::Close(AccessMode::Write)
        {
            return;
        }
        let _ = events_tx.send(());
    })
    .and_then(|mut w| {
        w.watch(&folder, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(folder = %folder.display(), error = %e,
                "cannot watch the configuration's folder; reading the file every 5s instead");
            None
        }
    };
    // What the running configuration was read from: an edit made while the agent started
    // is a change.
    let mut seen = loaded;
    tokio::spawn(async move {
        let _watcher = watcher;
        // The first look by polling is one period away: the start is covered by `loaded`.
        let mut poll =
            tokio::time::interval_at(tokio::time::Instant::now() + WATCH_POLL, WATCH_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = poll.tick() => {}
                Some(()) = events.recv() => {
                    // Let the writer finish: wait until no event came for SETTLE, or at most
                    // MAX_SETTLE.
                    let until = tokio::time::Instant::now() + MAX_SETTLE;
                    let quiet = || until.min(tokio::time::Instant::now() + SETTLE);
                    while let Ok(Some(())) = tokio::time::timeout_at(quiet(), events.recv()).await {}
                }
                _ = tx.closed() => return,
            }
            // An unreadable file (mid-swap, or removed) is not a change: the reload would
            // only be refused. But whatever it holds when it is back counts as a change (a
            // SIGHUP meanwhile may have been refused), so that it is applied.
            let Ok(now) = tokio::fs::read(&path).await else {
                seen = None;
                continue;
            };
            if seen.as_ref() != Some(&now) {
                seen = Some(now);
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn cfg(body: &str) -> AgentConfig {
        let text = format!("a1:\n  data_dir: /tmp/sluice-plan\n{body}");
        parse(&text, "a1", Path::new("plan.yaml"), |_| None).unwrap()
    }

    const BASE: &str = r#"
  sources:
    s1: { type: taildir, channel: c1, paths: ["/logs/a/*.log"] }
    s2: { type: taildir, channel: c2, paths: ["/logs/b/*.log"] }
  channels:
    c1: { type: memory, capacity: 1000 }
    c2: { type: file, dir: c2 }
  sinks:
    k1: { type: kafka, channel: c1, brokers: "localhost:9092", topic: one }
    k2: { type: kafka, channel: c2, brokers: "localhost:9092", topic: two }
"#;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_sink_group_is_retired_and_started_as_a_whole() {
        let grouped = BASE.replace("channel: c2, brokers", "channel: c1, brokers")
            .replace("k2: { type: kafka, channel: c1, brokers: \"localhost:9092\", topic: two }",
                "k2: { type: kafka, channel: c1, brokers: \"localhost:9092\", topic: two }\n    k3: { type: console, channel: c2 }")
            + "  sink_groups:\n    g1: { sinks: [k1, k2], processor: failover }\n";
        let grouped = grouped
            .replace(
                "topic: one }",
                "topic: one, producer: { message.timeout.ms: 1000 } }",
            )
            .replace(
                "topic: two }",
                "topic: two, producer: { message.timeout.ms: 1000 } }",
            );
        let plan = Plan::new(&cfg(&grouped), &cfg(&grouped));
        assert!(plan.is_empty(), "{plan:?}");
        let plan = Plan::new(
            &cfg(&grouped),
            &cfg(&grouped.replace("topic: two", "topic: dos")),
        );
        assert_eq!(
            (plan.retire_sinks, plan.start_sinks),
            (names(&["g1"]), names(&["g1"]))
        );
        let plan = Plan::new(
            &cfg(&grouped),
            &cfg(&grouped.replace("[k1, k2]", "[k2, k1]")),
        );
        assert_eq!(
            (plan.retire_sinks, plan.start_sinks),
            (names(&["g1"]), names(&["g1"]))
        );
        let ungrouped = grouped
            .replace(
                "k2: { type: kafka, channel: c1",
                "k2: { type: kafka, channel: c2",
            )
            .replace("k3: { type: console, channel: c2 }", "")
            .replace(
                "  sink_groups:\n    g1: { sinks: [k1, k2], processor: failover }\n",
                "",
            );
        let plan = Plan::new(&cfg(&grouped), &cfg(&ungrouped));
        assert_eq!(plan.retire_sinks, names(&["g1", "k3"]));
        assert_eq!(plan.start_sinks, names(&["k1", "k2"]));
        let plan = Plan::new(
            &cfg(&grouped),
            &cfg(&grouped.replace("capacity: 1000", "capacity: 99")),
        );
        assert_eq!(
            (plan.drain_sinks, plan.start_sinks),
            (names(&["g1"]), names(&["g1"]))
        );
    }

    #[test]
    fn the_same_configuration_changes_nothing() {
        let plan = Plan::new(&cfg(BASE), &cfg(BASE));
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.kept.len(), 6, "{plan:?}");
    }

    #[test]
    fn a_changed_topic_retires_and_restarts_only_that_sink() {
        let plan = Plan::new(&cfg(BASE), &cfg(&BASE.replace("topic: one", "topic: uno")));
        assert_eq!(
            plan,
            Plan {
                retire_sinks: names(&["k1"]),
                start_sinks: names(&["k1"]),
                kept: names(&[
                    "channel c1",
                    "channel c2",
                    "sink k2",
                    "source s1",
                    "source s2"
                ]),
                ..Plan::default()
            }
        );
    }

    #[test]
    fn an_added_and_a_changed_source_start_and_the_others_are_kept() {
        let new = BASE.replace("/logs/b/*.log", "/logs/b/*.txt").replace(
            "  channels:",
            "    s3: { type: spooldir, channel: c1, dir: /spool }\n  channels:",
        );
        let plan = Plan::new(&cfg(BASE), &cfg(&new));
        assert_eq!(plan.stop_sources, names(&["s2"]));
        assert_eq!(plan.start_sources, names(&["s2", "s3"]));
        assert!(plan.retire_sinks.is_empty() && plan.start_sinks.is_empty());
        assert!(plan.drop_channels.is_empty() && plan.open_channels.is_empty());
    }

    #[test]
    fn a_removed_source_is_stopped_and_not_started() {
        let new = BASE
            .replace(
                "    s2: { type: taildir, channel: c2, paths: [\"/logs/b/*.log\"] }\n",
                "",
            )
            .replace("    c2: { type: file, dir: c2 }\n", "")
            .replace(
                "    k2: { type: kafka, channel: c2, brokers: \"localhost:9092\", topic: two }\n",
                "",
            );
        let plan = Plan::new(&cfg(BASE), &cfg(&new));
        assert_eq!(plan.stop_sources, names(&["s2"]));
        assert!(plan.start_sources.is_empty());
        assert_eq!(plan.drop_channels, names(&["c2"]));
        assert_eq!(plan.drain_sinks, names(&["k2"]));
        assert!(plan.open_channels.is_empty() && plan.start_sinks.is_empty());
    }

    #[test]
    fn a_changed_channel_restarts_everything_wired_to_it() {
        let plan = Plan::new(
            &cfg(BASE),
            &cfg(&BASE.replace("capacity: 1000", "capacity: 2000")),
        );
        assert_eq!(plan.drop_channels, names(&["c1"]));
        assert_eq!(plan.open_channels, names(&["c1"]));
        assert_eq!(plan.stop_sources, names(&["s1"]));
        assert_eq!(plan.start_sources, names(&["s1"]));
        assert_eq!(plan.drain_sinks, names(&["k1"]));
        assert_eq!(plan.start_sinks, names(&["k1"]));
        assert!(plan.retire_sinks.is_empty());
        assert_eq!(plan.kept, names(&["channel c2", "sink k2", "source s2"]));
    }

    #[test]
    fn a_source_fanning_out_restarts_with_any_of_its_channels_and_its_selector() {
        let fan = BASE.replace(
            "s1: { type: taildir, channel: c1,",
            "s1: { type: taildir, channels: [c1, c2], selector: { optional: [c2] },",
        );
        let plan = Plan::new(&cfg(&fan), &cfg(&fan.replace("dir: c2", "dir: c2b")));
        assert_eq!(plan.drop_channels, names(&["c2"]));
        assert_eq!(
            plan.stop_sources,
            names(&["s1", "s2"]),
            "s1 puts into c2 too"
        );
        assert_eq!(plan.start_sources, names(&["s1", "s2"]));
        let plan = Plan::new(
            &cfg(&fan),
            &cfg(&fan.replace("optional: [c2]", "optional: []")),
        );
        assert_eq!(plan.stop_sources, names(&["s1"]), "a changed selector");
        assert!(plan.drop_channels.is_empty() && plan.drain_sinks.is_empty());
    }

    #[tokio::test]
    async fn the_watch_sees_a_configmap_style_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/agent.yaml"), "one").unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/agent.yaml", d.join("agent.yaml")).unwrap();
        let mut changes = watch(d.join("agent.yaml"), Some(b"one".to_vec()));
        // Swap as the kubelet does.
        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/agent.yaml"), "two").unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..v1")).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(3), changes.recv()).await;
        assert_eq!(
            seen,
            Ok(Some(())),
            "the swap is noticed well before the 5s poll"
        );
        // Nothing more: the content did not change again.
        let again = tokio::time::timeout(Duration::from_millis(800), changes.recv()).await;
        assert!(again.is_err(), "one change, one notice");
    }

    #[tokio::test]
    async fn a_folder_never_quiet_does_not_hold_a_change_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        std::fs::write(d.join("agent.yaml"), "one").unwrap();
        let mut changes = watch(d.join("agent.yaml"), Some(b"one".to_vec()));
        // The agent's log next to its configuration: written every 100 ms, never quiet for
        // SETTLE, and read as often.
        let stop = Arc::new(AtomicBool::new(false));
        let busy = {
            let (stop, log) = (stop.clone(), d.join("agent.log"));
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::File::create(&log).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    f.write_all(b"a log line\n").unwrap();
                    let _ = std::fs::read(&log).unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        std::fs::write(d.join("agent.new"), "two").unwrap();
        std::fs::rename(d.join("agent.new"), d.join("agent.yaml")).unwrap();
        let seen = tokio::time::timeout(Duration::from_millis(4500), changes.recv()).await;
        stop.store(true, Ordering::Relaxed);
        busy.join().unwrap();
        assert_eq!(
            seen,
            Ok(Some(())),
            "the change is noticed within MAX_SETTLE, before the 5s poll (which waits too)"
        );
    }
}
