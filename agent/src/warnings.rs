//! Configuration warnings: what is valid but almost certainly not meant. `validate` prints
//! them and the agent logs them at start; neither refuses the configuration.
//!
//! - A taildir pattern that covers the agent's own files (its data folder, a file channel's
//!   folder, a position file): the agent would read what it writes.
//! - Two sources that read the same files: every line of them would be shipped twice.
//! - A source whose longest line does not fit in the records of the Kafka sink that drains
//!   its channel: the sink would split such lines again.
//! - A memory channel that holds fewer events than a Kafka sink draining it keeps in flight
//!   (`batch_size` × `batches_in_flight`) and one more batch: the sink would wait for
//!   acknowledgements with its window part empty, and deliver more slowly.
//! - A Kafka sink's private key file (`tls.key`, `producer: { ssl.key.location }`) that
//!   others than its owner and its group can read, or its group can write.

use std::path::Path;

use sluice_sinks::kafka::{KEY_AND_HEADERS_RESERVE, open_key_file_mode};

use crate::config::{AgentConfig, ChannelKind, Problem, SinkKind, SourceKind};
use crate::overlap::{everything_under, exactly, files_in, globs_meet};

/// A source's files as glob patterns, each with the key that configures it.
fn patterns(a: &str, name: &str, kind: &SourceKind) -> Vec<(String, String)> {
    match kind {
        SourceKind::SpoolDir(c) => {
            let key = format!("{a}.sources.{name}.dir");
            if c.include.is_empty() {
                vec![(key, files_in(&c.dir, "*"))]
            } else {
                c.include
                    .iter()
                    .map(|g| (key.clone(), files_in(&c.dir, g)))
                    .collect()
            }
        }
        SourceKind::TailDir(c) => c
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("{a}.sources.{name}.paths[{i}]"), p.glob.clone()))
            .collect(),
    }
}

fn max_line_bytes(kind: &SourceKind) -> u64 {
    match kind {
        SourceKind::SpoolDir(c) => c.max_line_bytes.0,
        SourceKind::TailDir(c) => c.max_line_bytes.0,
    }
}

/// The warnings for a valid configuration.
pub fn check(cfg: &AgentConfig) -> Vec<Problem> {
    let a = &cfg.name;
    let mut out = Vec::new();
    let mut warn = |key: String, message: String| out.push(Problem { key, message });

    // The agent's own files, and what they are.
    let mut own: Vec<(String, String)> = vec![(
        everything_under(&cfg.data_dir),
        format!("the agent's data_dir {}", cfg.data_dir.display()),
    )];
    for c in &cfg.channels {
        if let ChannelKind::File(f) = &c.kind {
            own.push((
                everything_under(&f.dir),
                format!(
                    "the folder of file channel `{}` ({})",
                    c.name,
                    f.dir.display()
                ),
            ));
        }
    }
    for s in &cfg.sources {
        if let SourceKind::TailDir(c) = &s.kind
            && let Some(p) = &c.position_file
        {
            own.push((
                exactly(p),
                format!("the position file of source `{}` ({})", s.name, p.display()),
            ));
        }
    }
    for s in &cfg.sources {
        if !matches!(s.kind, SourceKind::TailDir(_)) {
            continue;
        }
        for (key, glob) in patterns(a, &s.name, &s.kind) {
            if let Some((_, what)) = own.iter().find(|(g, _)| globs_meet(&glob, g)) {
                warn(
                    key,
                    format!(
                        "`{glob}` also matches {what}: the agent's own files (its lock, \
                         checkpoints, positions, file channel logs) must not be read as logs; \
                         keep data_dir and file channels outside the watched folders"
                    ),
                );
            }
        }
    }

    // Sources that read the same files.
    for (j, later) in cfg.sources.iter().enumerate() {
        let theirs = patterns(a, &later.name, &later.kind);
        for earlier in &cfg.sources[..j] {
            if let (SourceKind::SpoolDir(x), SourceKind::SpoolDir(y)) = (&earlier.kind, &later.kind)
                && Path::new(&x.dir) == Path::new(&y.dir)
            {
                continue; // an error already
            }
            let ours = patterns(a, &earlier.name, &earlier.kind);
            let hit = theirs.iter().find_map(|(key, g)| {
                ours.iter()
                    .find(|(_, o)| globs_meet(g, o))
                    .map(|(_, o)| (key, g, o))
            });
            if let Some((key, glob, other)) = hit {
                warn(
                    key.clone(),
                    format!(
                        "`{glob}` matches files that source `{}` also reads (`{other}`): every \
                         line of them would be shipped twice (one source with `channels: \
                         [...]` puts its lines into several channels)",
                        earlier.name
                    ),
                );
            }
        }
    }

    // Lines cut at max_line_bytes that the Kafka sink would cut again.
    for s in &cfg.sources {
        let max_line = max_line_bytes(&s.kind);
        for k in cfg.sinks.iter().filter(|k| s.channels.contains(&k.channel)) {
            let SinkKind::Kafka(kc) = &k.kind else {
                continue;
            };
            let fits = kc
                .max_message_bytes
                .0
                .saturating_sub(KEY_AND_HEADERS_RESERVE);
            if max_line > fits {
                warn(
                    format!("{a}.sources.{}.max_line_bytes", s.name),
                    format!(
                        "lines of up to {max_line} bytes do not fit in the records of sink `{}` \
                         (max_message_bytes {} with up to {KEY_AND_HEADERS_RESERVE} bytes of \
                         key and headers): the sink would split them again; set max_line_bytes \
                         to at most {fits}",
                        k.name, kc.max_message_bytes.0
                    ),
                );
            }
        }
    }

    // A memory channel too small for the window of a Kafka sink that drains it.
    for k in &cfg.sinks {
        let SinkKind::Kafka(kc) = &k.kind else {
            continue;
        };
        let Some(ChannelKind::Memory(m)) = cfg
            .channels
            .iter()
            .find(|c| c.name == k.channel)
            .map(|c| &c.kind)
        else {
            continue;
        };
        let window = kc.batch_size.saturating_mul(kc.batches_in_flight);
        let wanted = window.saturating_add(kc.batch_size);
        if m.capacity < wanted {
            warn(
                format!("{a}.channels.{}.capacity", k.channel),
                format!(
                    "{} events are fewer than sink `{}` keeps in flight (batch_size {} × \
                     batches_in_flight {} = {window}) and one more batch: the sink would wait \
                     for acknowledgements with its window part empty and deliver more slowly; \
                     make capacity at least {wanted}, or lower batches_in_flight",
                    m.capacity, k.name, kc.batch_size, kc.batches_in_flight
                ),
            );
        }
    }

    // Private keys that others can read.
    for k in &cfg.sinks {
        let SinkKind::Kafka(kc) = &k.kind else {
            continue;
        };
        let tls_key = kc.tls.as_ref().and_then(|t| t.key.clone());
        let keys = tls_key
            .map(|p| ("tls.key".to_owned(), p))
            .into_iter()
            .chain(
                kc.producer
                    .get("ssl.key.location")
                    .map(|v| ("producer.ssl.key.location".to_owned(), v.to_string().into())),
            );
        for (key, path) in keys {
            if let Some(mode) = open_key_file_mode(&path) {
                warn(
                    format!("{a}.sinks.{}.{key}", k.name),
                    format!(
                        "the private key `{}` is open to others than its owner and group (mode \
                         {mode:04o}); make it 0600 or 0400, or 0440 for a group (Kubernetes: \
                         `defaultMode: 0440` with the pod's `fsGroup`)",
                        path.display()
                    ),
                );
            }
        }
    }
    out
}
