use sluice_channels::units::ByteSize;

use sluice_sources::fanout::{Optional, SelectorConfig, SelectorKind};

use super::*;

const GOOD: &str = r#"
a1:
  sources:
    r1: { type: spooldir, dir: /var/spool/app, channel: c1 }
  channels:
    c1: { type: memory, capacity: 500, capacity_bytes: 1MiB }
  sinks:
    k1: { type: console, channel: c1 }
"#;

fn parse_with(text: &str, env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse(text, "a1", Path::new("test.yaml"), move |name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

/// The problems as `key: message` lines.
fn errors(text: &str) -> Vec<String> {
    parse_with(text, &[])
        .unwrap_err()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn assert_error(text: &str, key: &str, fragment: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{key}: ")) && e.contains(fragment)),
        "expected `{key}: ...{fragment}...` in {errs:#?}"
    );
}

#[test]
fn a_good_configuration_parses_with_defaults() {
    let cfg = parse_with(GOOD, &[]).unwrap();
    assert_eq!(cfg.name, "a1");
    assert_eq!(cfg.data_dir, PathBuf::from("./data/a1"));
    assert_eq!(cfg.shutdown_timeout, Duration::from_secs(30));
    let SourceKind::SpoolDir(s) = &cfg.sources[0].kind else {
        panic!("a spooldir source")
    };
    assert_eq!(s.completed_suffix, ".COMPLETED");
    assert_eq!(s.batch_size, 1000);
    assert_eq!(s.max_line_bytes, ByteSize(960 << 10));
    assert_eq!(cfg.sources[0].channels, ["c1"]);
    assert_eq!(cfg.sources[0].selector, SelectorConfig::default());
    let ChannelKind::Memory(m) = &cfg.channels[0].kind else {
        panic!("a memory channel")
    };
    assert_eq!((m.capacity, m.capacity_bytes), (500, 1 << 20));
    assert_eq!(cfg.sinks[0].channel, "c1");
}

#[test]
fn environment_variables_and_defaults_are_substituted() {
    let text = GOOD
        .replace("/var/spool/app", "${SPOOL:-/default}")
        .replace("capacity: 500", "capacity: ${CAP}");
    let cfg = parse_with(&text, &[("CAP", "42")]).unwrap();
    let SourceKind::SpoolDir(s) = &cfg.sources[0].kind else {
        panic!("a spooldir source")
    };
    assert_eq!(s.dir, PathBuf::from("/default"));
    let ChannelKind::Memory(m) = &cfg.channels[0].kind else {
        panic!("a memory channel")
    };
    assert_eq!(m.capacity, 42);
    let err = parse_with(&GOOD.replace("/var/spool/app", "${SPOOL}"), &[]).unwrap_err();
    assert_eq!(err.problems[0].key, "test.yaml");
    assert!(
        err.problems[0].message.contains("${SPOOL} is not set"),
        "{err}"
    );
}

/// A value from the environment stays in its one value, whatever it holds: a newline cannot
/// add keys, `#` cannot start a comment, `\` is not an escape, and an unclosed `${` is an
/// error rather than part of a path.
#[test]
fn environment_values_go_into_values_and_never_into_the_document() {
    let text = r#"
a1:
  sources:
    r1: { type: spooldir, dir: /var/spool/app, channel: c1 }
  channels:
    c1: { type: memory }
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: ${BROKERS}
      topic: logs
      producer:
        sasl.password: ${PASS}
"#;
    let cfg = parse_with(
        text,
        &[
            ("BROKERS", "k:9092\n      acks: 0"),
            ("PASS", "p#ss\\w: 'x\""),
        ],
    )
    .unwrap();
    let SinkKind::Kafka(k) = &cfg.sinks[0].kind else {
        panic!("a kafka sink")
    };
    assert_eq!(k.brokers, "k:9092\n      acks: 0");
    assert_eq!(
        k.acks,
        sluice_sinks::kafka::Acks::All,
        "no key was injected"
    );
    assert_eq!(
        k.producer.get("sasl.password").map(ToString::to_string),
        Some("p#ss\\w: 'x\"".to_owned())
    );
    let unclosed = GOOD.replace("a1:\n", "a1:\n  data_dir: /data/${DATA\n");
    let err = parse_with(&unclosed, &[]).unwrap_err();
    assert!(
        err.problems[0]
            .message
            .contains("line 3: `${` without a closing"),
        "{err}"
    );
    let err = parse_with(&GOOD.replace("/var/spool/app", "/data/${SPOOL"), &[]).unwrap_err();
    assert!(
        err.problems[0]
            .message
            .contains("is not a variable reference"),
        "{err}"
    );
}

#[test]
fn a_missing_agent_names_the_agents_defined() {
    let err = parse(GOOD, "b7", Path::new("x.yaml"), |_| None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "b7: no such agent in x.yaml (it defines: a1)"
    );
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    assert_error(
        &GOOD.replace("  sources:", "  sorces: {}\n  sources:"),
        "a1.sorces",
        "unknown key",
    );
    assert_error(
        &GOOD.replace(
            "channel: c1 }\n  channels",
            "channel: c1, dri: x }\n  channels",
        ),
        "a1.sources.r1.dri",
        "unknown key",
    );
    assert_error(
        &GOOD.replace("capacity: 500", "capacity: 500, size: 3"),
        "a1.channels.c1.size",
        "unknown key",
    );
    assert_error(
        &GOOD.replace("{ type: console,", "{ type: console, colour: red,"),
        "a1.sinks.k1.colour",
        "unknown key",
    );
}

#[test]
fn missing_required_keys_are_named() {
    assert_error(
        &GOOD.replace("dir: /var/spool/app, ", ""),
        "a1.sources.r1.dir",
        "missing",
    );
    assert_error(
        &GOOD.replace(", channel: c1 }\n  channels", " }\n  channels"),
        "a1.sources.r1.channel",
        "missing",
    );
    assert_error(
        &GOOD.replace("type: console, ", ""),
        "a1.sinks.k1.type",
        "missing",
    );
    assert_error(
        &GOOD.replace("{ type: console, channel: c1 }", "{ type: console }"),
        "a1.sinks.k1.channel",
        "missing",
    );
    let no_sinks = "a1:\n  sources: {}\n  channels: {}\n";
    assert_error(no_sinks, "a1.sinks", "missing");
}

#[test]
fn unknown_types_list_the_known_ones() {
    assert_error(
        &GOOD.replace("type: memory", "type: jdbc"),
        "a1.channels.c1.type",
        "unknown type `jdbc` (one of: memory",
    );
    assert_error(
        &GOOD.replace("type: spooldir", "type: exec"),
        "a1.sources.r1.type",
        "one of: spooldir",
    );
}

#[test]
fn bad_values_are_named_with_their_key() {
    assert_error(
        &GOOD.replace("capacity_bytes: 1MiB", "capacity_bytes: lots"),
        "a1.channels.c1.capacity_bytes",
        "not a byte size",
    );
    assert_error(
        &GOOD.replace(
            "channel: c1 }\n  channels",
            "channel: c1, poll_interval: soon }\n  channels",
        ),
        "a1.sources.r1.poll_interval",
        "not a duration",
    );
    assert_error(
        &GOOD.replace(
            "channel: c1 }\n  channels",
            "channel: c1, after_read: shred }\n  channels",
        ),
        "a1.sources.r1.after_read",
        "unknown variant",
    );
    assert_error(
        &GOOD.replace(
            "channel: c1 }\n  channels",
            "channel: c1, include: ['[a'] }\n  channels",
        ),
        "a1.sources.r1.include[0]",
        "not a valid glob",
    );
    assert_error(
        &GOOD.replace(
            "channel: c1 }\n  channels",
            "channel: c1, batch_size: 0 }\n  channels",
        ),
        "a1.sources.r1.batch_size",
        "at least 1",
    );
    assert_error(
        &GOOD.replace("capacity: 500", "capacity: 0"),
        "a1.channels.c1.capacity",
        "at least 1",
    );
    assert_error(
        &GOOD.replace("capacity: 500", "capacity: -4"),
        "a1.channels.c1.capacity",
        "invalid value",
    );
    assert_error(
        &format!("{GOOD}  http: nowhere\n"),
        "a1.http",
        "not an address",
    );
    assert_error(
        &format!("{GOOD}  shutdown_timeout: forever\n"),
        "a1.shutdown_timeout",
        "not a duration",
    );
    assert_error(
        &format!("{GOOD}  report_interval: often\n"),
        "a1.report_interval",
        "not a duration",
    );
}

#[test]
fn report_interval_defaults_to_30s_and_0_turns_it_off() {
    let load = |extra: &str| {
        parse_with(&format!("{GOOD}{extra}"), &[])
            .unwrap()
            .report_interval
    };
    assert_eq!(load(""), Some(Duration::from_secs(30)));
    assert_eq!(
        load("  report_interval: 5s\n"),
        Some(Duration::from_secs(5))
    );
    assert_eq!(load("  report_interval: 0s\n"), None);
}

#[test]
fn dangling_references_and_unwired_channels_are_errors() {
    assert_error(
        &GOOD.replace("dir: /var/spool/app, channel: c1", "dir: /x, channel: c9"),
        "a1.sources.r1.channel",
        "no channel named `c9` (channels: c1)",
    );
    assert_error(
        &GOOD.replace(
            "{ type: console, channel: c1 }",
            "{ type: console, channel: c2 }",
        ),
        "a1.sinks.k1.channel",
        "no channel named `c2`",
    );
    assert_error(
        &GOOD.replace(
            "{ type: console, channel: c1 }",
            "{ type: console, channel: c2 }",
        ),
        "a1.channels.c1",
        "no sink drains this channel",
    );
    let extra_channel = GOOD.replace(
        "c1: { type: memory",
        "c2: { type: memory }\n    c1: { type: memory",
    );
    assert_error(
        &extra_channel,
        "a1.channels.c2",
        "no source puts into this channel",
    );
    let two_sinks = GOOD.replace(
        "k1: { type: console, channel: c1 }",
        "k1: { type: console, channel: c1 }\n    k2: { type: console, channel: c1 }",
    );
    assert_error(
        &two_sinks,
        "a1.sinks.k2.channel",
        "already drained by sink `k1`",
    );
    let same_dir = GOOD.replace("r1: { type: spooldir, dir: /var/spool/app, channel: c1 }", "r1: { type: spooldir, dir: /d, channel: c1 }\n    r2: { type: spooldir, dir: /d, channel: c1 }");
    assert_error(&same_dir, "a1.sources.r2.dir", "already reads /d");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = GOOD
        .replace("capacity: 500", "capacity: 0")
        .replace("type: console, ", "");
    let errs = errors(&text);
    assert!(errs.len() >= 2, "{errs:#?}");
}

#[test]
fn names_must_be_safe_for_paths() {
    assert_error(
        &GOOD.replace("r1:", "\"r/1\":"),
        "a1.sources.r/1",
        "names may use only",
    );
}

#[test]
fn yaml_syntax_errors_name_the_file_and_position() {
    let err = parse_with("a1:\n  sources: [\n", &[]).unwrap_err();
    assert_eq!(err.problems[0].key, "test.yaml");
    assert!(err.problems[0].message.contains("line"), "{err}");
}

/// `GOOD` with channel `c1` configured as `opts`.
fn with_channel(opts: &str) -> String {
    GOOD.replace(
        "{ type: memory, capacity: 500, capacity_bytes: 1MiB }",
        opts,
    )
}

#[test]
fn a_file_channel_parses_and_a_relative_dir_resolves_under_the_data_dir() {
    let text =
        "{ type: file, dir: channels/c1, capacity: 2GiB, fsync: interval, fsync_interval: 200ms }";
    let cfg = parse_with(&with_channel(text), &[]).unwrap();
    let ChannelKind::File(c) = &cfg.channels[0].kind else {
        panic!("a file channel")
    };
    assert_eq!(c.dir, PathBuf::from("./data/a1/channels/c1"));
    assert_eq!(c.capacity, ByteSize(2 << 30));
    assert_eq!(c.fsync, sluice_channels::FsyncPolicy::Interval);
    assert_eq!(c.fsync_interval.0, Duration::from_millis(200));
    assert_eq!(c.segment_size, ByteSize(64 << 20));
    let cfg = parse_with(&with_channel("{ type: file, dir: /var/lib/c1 }"), &[]).unwrap();
    let ChannelKind::File(c) = &cfg.channels[0].kind else {
        panic!("a file channel")
    };
    assert_eq!(c.dir, PathBuf::from("/var/lib/c1"));
    for (opts, key, fragment) in [
        ("{ type: file }", "dir", "missing"),
        ("{ type: file, dir: d, fsync: often }", "fsync", "often"),
        (
            "{ type: file, dir: d, segment_size: 1KiB }",
            "segment_size",
            "between",
        ),
        (
            "{ type: file, dir: d, capacty: 1GiB }",
            "capacty",
            "unknown key",
        ),
        ("{ type: fifo }", "type", "memory, file"),
    ] {
        assert_error(
            &with_channel(opts),
            &format!("a1.channels.c1.{key}"),
            fragment,
        );
    }
}

#[test]
fn a_kafka_sink_parses_and_its_problems_name_their_keys() {
    let with_sink = |opts: &str| GOOD.replace("{ type: console, channel: c1 }", opts);
    let cfg = parse_with(
        &with_sink(
            "{ type: kafka, channel: c1, brokers: \"${B:-x:9092}\", topic: \"logs-%{source}\" }",
        ),
        &[("B", "k1:9092,k2:9092")],
    )
    .unwrap();
    let SinkKind::Kafka(k) = &cfg.sinks[0].kind else {
        panic!("a kafka sink")
    };
    assert_eq!(
        (k.brokers.as_str(), k.topic.as_str()),
        ("k1:9092,k2:9092", "logs-%{source}")
    );
    assert_error(
        &with_sink("{ type: kafka, channel: c1, brokers: b:1 }"),
        "a1.sinks.k1.topic",
        "missing",
    );
    assert_error(
        &with_sink(
            "{ type: kafka, channel: c1, brokers: b:1, topic: t, producer: { enable.idempotence: false } }",
        ),
        "a1.sinks.k1.producer.enable.idempotence",
        "reorder",
    );
    assert_error(
        &with_sink("{ type: kafka, channel: c1, brokers: b:1, topic: t, key: \"%{offset}\" }"),
        "a1.sinks.k1.key",
        "partitions",
    );
    assert_error(
        &with_sink("{ type: kafkaa, channel: c1 }"),
        "a1.sinks.k1.type",
        "console, kafka",
    );
}

#[test]
fn an_invalid_channel_is_reported_once_not_again_by_its_source_and_sink() {
    for (opts, key) in [
        ("{ type: memory, capacity: 0 }", "a1.channels.c1.capacity"),
        ("{ type: jdbc }", "a1.channels.c1.type"),
        ("{ type: file }", "a1.channels.c1.dir"),
    ] {
        let errs = errors(&with_channel(opts));
        assert_eq!(errs.len(), 1, "{opts}: {errs:#?}");
        assert!(errs[0].starts_with(&format!("{key}: ")), "{errs:#?}");
    }
    // An invalid sink does not make its channel undrained either.
    let errs = errors(&GOOD.replace(
        "{ type: console, channel: c1 }",
        "{ type: console, channel: c1, batch_size: 0 }",
    ));
    assert_eq!(errs, ["a1.sinks.k1.batch_size: must be at least 1"]);
    // A channel that is truly missing is still named, with the channels there are.
    assert_error(
        &GOOD.replace("channel: c1 }\n  channels", "channel: c7 }\n  channels"),
        "a1.sources.r1.channel",
        "no channel named `c7` (channels: c1)",
    );
}

#[test]
fn yaml_merge_keys_are_applied_and_x_keys_are_not_agents() {
    let text = r#"
x-defaults:
  spool: &spool { type: spooldir, channel: c1, batch_size: 50 }
  memory: &memory { type: memory, capacity: 700 }
a1:
  sources:
    r1: { <<: *spool, dir: /var/spool/a }
    r2:
      <<: *spool
      dir: /var/spool/b
      batch_size: 60
  channels:
    c1:
      <<: [*memory, { capacity_bytes: 2MiB }]
  sinks:
    k1: { type: console, channel: c1 }
"#;
    let cfg = parse_with(text, &[]).unwrap();
    let batch = |i: usize| match &cfg.sources[i].kind {
        SourceKind::SpoolDir(s) => (s.dir.clone(), s.batch_size),
        SourceKind::TailDir(_) => panic!("a spooldir source"),
    };
    assert_eq!(batch(0), (PathBuf::from("/var/spool/a"), 50));
    assert_eq!(
        batch(1),
        (PathBuf::from("/var/spool/b"), 60),
        "a key beside `<<` wins"
    );
    let ChannelKind::Memory(m) = &cfg.channels[0].kind else {
        panic!("a memory channel")
    };
    assert_eq!((m.capacity, m.capacity_bytes), (700, 2 << 20));
    let top = yaml::read(text, Path::new("t.yaml"), |_| None).unwrap();
    assert_eq!(names(&top), ["a1"]);
    // A merge of something that is not a mapping is an error, not ignored.
    let err = parse_with("a1:\n  <<: 3\n", &[]).unwrap_err();
    assert!(err.to_string().contains("merge key `<<`"), "{err}");
}

#[test]
fn an_integer_too_large_is_out_of_range_for_its_key() {
    let errs = errors(&GOOD.replace("capacity: 500", "capacity: 99999999999999999999999"));
    assert_eq!(
        errs,
        [
            "a1.channels.c1.capacity: `99999999999999999999999` is out of range for this key (too large)"
        ]
    );
    let errs = errors(&format!("{GOOD}  shutdown_timeout: 18446744073709551616\n"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("a1.shutdown_timeout: `18446744073709551616` is out of range"));
    assert_error(
        &GOOD.replace("capacity: 500", "capacity: -4"),
        "a1.channels.c1.capacity",
        "invalid value `-4`: out of range for this key (0 to",
    );
    // The value is taken as written: a string that looks like the stand-in is just a string.
    assert!(!errors(&GOOD.replace("capacity: 500", "capacity: \"x\"")).is_empty());
}

#[test]
fn librdkafka_file_settings_must_name_readable_files() {
    let text = GOOD.replace(
        "{ type: console, channel: c1 }",
        "{ type: kafka, channel: c1, brokers: \"b:9093\", topic: t, producer: { security.protocol: ssl, ssl.ca.location: /nonexistent/ca.pem } }",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0]
            .starts_with("a1.sinks.k1.producer.ssl.ca.location: cannot read `/nonexistent/ca.pem`"),
        "{errs:#?}"
    );
}

/// The warnings of a valid configuration, as `key: message` lines.
fn warnings_of(text: &str) -> Vec<String> {
    parse_with(text, &[])
        .unwrap()
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_taildir_pattern_over_the_data_dir_is_a_warning() {
    let text = |paths: &str| {
        format!(
            "a1:\n  data_dir: /srv/logs/data\n  sources:\n    r1: {{ type: taildir, paths: [\"{paths}\"], channel: c1 }}\n  channels:\n    c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: console, channel: c1 }}\n"
        )
    };
    let w = warnings_of(&text("/srv/logs/**"));
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with("a1.sources.r1.paths[0]: `/srv/logs/**` also matches the agent's data_dir /srv/logs/data"),
        "{w:#?}"
    );
    assert!(warnings_of(&text("/srv/logs/*.log")).is_empty());
    assert!(warnings_of(&text("/srv/logs/data*/x.log")).len() == 1);
    // A file channel's folder and a position file are the agent's files too.
    let w = warnings_of(
        "a1:\n  data_dir: /srv/agent\n  sources:\n    r1: { type: taildir, paths: [\"/srv/logs/**/*\"], position_file: /srv/pos.json, channel: c1 }\n    r2: { type: taildir, paths: [\"/srv/*.json\"], channel: c1 }\n  channels:\n    c1: { type: file, dir: /srv/logs/wal }\n  sinks:\n    k1: { type: console, channel: c1 }\n",
    );
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(w[0].contains("file channel `c1`"), "{w:#?}");
    assert!(w[1].contains("position file of source `r1`"), "{w:#?}");
}

#[test]
fn two_sources_reading_the_same_files_is_a_warning() {
    let text = |r1: &str, r2: &str| {
        format!(
            "a1:\n  data_dir: /srv/agent\n  sources:\n    r1: {r1}\n    r2: {r2}\n  channels:\n    c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: console, channel: c1 }}\n"
        )
    };
    let spool = "{ type: spooldir, dir: /var/spool/app, channel: c1 }";
    let w = warnings_of(&text(
        spool,
        "{ type: taildir, paths: [\"/var/spool/app/*.log\"], channel: c1 }",
    ));
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with("a1.sources.r2.paths[0]: `/var/spool/app/*.log` matches files that source `r1` also reads"),
        "{w:#?}"
    );
    assert!(w[0].contains("shipped twice"), "{w:#?}");
    let w = warnings_of(&text(
        "{ type: taildir, paths: [\"/var/log/app/*.log\"], channel: c1 }",
        "{ type: taildir, paths: [\"/var/log/*/web.*\", \"/var/log/app/*.txt\"], channel: c1 }",
    ));
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].starts_with("a1.sources.r2.paths[0]:"), "{w:#?}");
    // Different files: no warning.
    assert!(
        warnings_of(&text(
            spool,
            "{ type: taildir, paths: [\"/var/log/app/*.log\"], channel: c1 }"
        ))
        .is_empty()
    );
    assert!(
        warnings_of(&text(
            "{ type: spooldir, dir: /var/spool/app, include: [\"*.csv\"], channel: c1 }",
            "{ type: taildir, paths: [\"/var/spool/app/*.log\"], channel: c1 }"
        ))
        .is_empty()
    );
}

#[test]
fn the_default_longest_line_fits_the_default_kafka_record() {
    let kafka = "{ type: kafka, channel: c1, brokers: \"b:9092\", topic: t }";
    for source in [
        "{ type: spooldir, dir: /var/spool/app, channel: c1 }",
        "{ type: taildir, paths: [/var/log/app.log], channel: c1 }",
    ] {
        let text = GOOD
            .replace(
                "{ type: spooldir, dir: /var/spool/app, channel: c1 }",
                source,
            )
            .replace("{ type: console, channel: c1 }", kafka)
            .replace("capacity: 500, ", "");
        assert!(
            warnings_of(&text).is_empty(),
            "{source}: {:#?}",
            warnings_of(&text)
        );
    }
    let text = GOOD
        .replace(
            "channel: c1 }\n  channels",
            "channel: c1, max_line_bytes: 1MiB }\n  channels",
        )
        .replace("{ type: console, channel: c1 }", kafka)
        .replace("capacity: 500, ", "");
    let w = warnings_of(&text);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with("a1.sources.r1.max_line_bytes: lines of up to 1048576 bytes do not fit"),
        "{w:#?}"
    );
}

#[test]
fn a_memory_channel_smaller_than_the_kafka_sinks_window_is_a_warning() {
    let text = |capacity: &str, sink: &str| {
        format!(
            "a1:\n  sources:\n    r1: {{ type: spooldir, dir: /var/spool/app, channel: c1 }}\n  channels:\n    c1: {{ type: memory{capacity} }}\n  sinks:\n    k1: {{ type: kafka, channel: c1, brokers: \"b:9092\", topic: t{sink} }}\n"
        )
    };
    // The defaults fit: a window of 8 batches of 2000 and one more batch.
    assert!(warnings_of(&text("", "")).is_empty());
    assert!(warnings_of(&text(", capacity: 18000", "")).is_empty());
    let w = warnings_of(&text(", capacity: 17999", ""));
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with(
            "a1.channels.c1.capacity: 17999 events are fewer than sink `k1` keeps in flight \
             (batch_size 2000 × batches_in_flight 8 = 16000) and one more batch"
        ),
        "{w:#?}"
    );
    assert!(w[0].contains("at least 18000"), "{w:#?}");
    // A larger window than the default channel holds.
    let w = warnings_of(&text("", ", batches_in_flight: 16"));
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].contains("= 32000) and one more batch"), "{w:#?}");
    assert!(warnings_of(&text("", ", batch_size: 500, batches_in_flight: 16")).is_empty());
    // Only a memory channel: a file channel's capacity is in bytes, and large.
    let file = text("", ", batches_in_flight: 64").replace(
        "{ type: memory }",
        "{ type: file, dir: /var/lib/sluice/c1 }",
    );
    assert!(warnings_of(&file).is_empty(), "{:#?}", warnings_of(&file));
}

/// The example configurations: each file in `conf/`, and each configuration a Kubernetes
/// manifest in `deploy/` carries in a ConfigMap, as (where, text).
fn examples() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = |dir: &str| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        files
    };
    let mut found = Vec::new();
    for file in files("conf") {
        let text = std::fs::read_to_string(&file).unwrap();
        found.push((file.display().to_string(), text));
    }
    for file in files("deploy/kubernetes") {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let manifest = serde_yaml::Value::deserialize(doc).unwrap();
            if manifest["kind"] != "ConfigMap" {
                continue;
            }
            for (key, value) in manifest["data"].as_mapping().into_iter().flatten() {
                let (Some(key), Some(config)) = (key.as_str(), value.as_str()) else {
                    continue;
                };
                if key.ends_with(".yaml") || key.ends_with(".yml") {
                    found.push((format!("{}: {key}", file.display()), config.to_owned()));
                }
            }
        }
    }
    found
}

#[test]
fn every_example_configuration_is_valid_without_warnings() {
    // The one variable an example needs and gives no default for.
    let env = |v: &str| (v == "KAFKA_BROKERS").then(|| "kafka:9092".to_owned());
    let examples = examples();
    let mut agents_checked = 0;
    for (origin, text) in &examples {
        let agents = yaml::read(text, Path::new(origin), env).unwrap_or_else(|e| panic!("{e}"));
        for name in names(&agents) {
            let cfg = from_tree(&agents, &name, Path::new(origin))
                .unwrap_or_else(|e| panic!("{origin}:\n{e}"));
            assert!(cfg.warnings.is_empty(), "{origin}: {:#?}", cfg.warnings);
            agents_checked += 1;
        }
    }
    assert!(
        examples.len() >= 4 && agents_checked >= examples.len(),
        "{agents_checked} agents in {examples:#?}"
    );
}

/// Two channels, each with its sink, and a source `r1` with `SOURCE_OPTIONS`.
const FANOUT: &str = r#"
a1:
  sources:
    r1: { type: spooldir, dir: /var/spool/app, SOURCE_OPTIONS }
  channels:
    c1: { type: memory }
    c2: { type: memory }
    c3: { type: memory }
  sinks:
    k1: { type: console, channel: c1 }
    k2: { type: console, channel: c2 }
    k3: { type: console, channel: c3 }
"#;

fn fanout(options: &str) -> String {
    FANOUT.replace("SOURCE_OPTIONS", options)
}

#[test]
fn a_source_puts_into_several_channels_through_a_selector() {
    let cfg = parse_with(
        &fanout("channels: [c1, c2, c3], selector: { type: replicating, optional: [c3] }"),
        &[],
    )
    .unwrap();
    assert_eq!(cfg.sources[0].channels, ["c1", "c2", "c3"]);
    assert_eq!(
        cfg.sources[0].selector.optional,
        Optional::List(vec!["c3".into()])
    );
    let cfg = parse_with(
        &fanout(
            "channels: [c1, c2, c3], selector: { type: multiplexing, header: level, \
             mapping: { ERROR: [c1], 500: [c1, c2] }, default: [c2], optional: { ERROR: [c3] } }",
        ),
        &[],
    )
    .unwrap();
    let s = &cfg.sources[0].selector;
    assert_eq!(s.kind, SelectorKind::Multiplexing);
    assert_eq!(s.mapping["500"], ["c1", "c2"], "a number as a header value");
    assert_eq!(s.default, ["c2"]);
    let cfg = parse_with(
        &fanout("channels: [c1, c2, c3], selector: { type: partitioned }"),
        &[],
    )
    .unwrap();
    assert_eq!(cfg.sources[0].selector.kind, SelectorKind::Partitioned);
}

#[test]
fn every_bad_fan_out_option_is_named() {
    let r1 = "a1.sources.r1";
    for (options, key, fragment) in [
        ("channel: c1, channels: [c1, c2]", "channels", "not both"),
        ("channels: []", "channels", "at least one"),
        ("channels: c1", "channels", "invalid type"),
        (
            "channels: [c1, c9, c2, c3]",
            "channels[1]",
            "no channel named `c9`",
        ),
        ("channels: [c1, c2, c1, c3]", "channels[2]", "listed twice"),
        (
            "channels: [c1, c2, c3], selector: { type: replicating, optional: [c4] }",
            "selector.optional[0]",
            "not one of the source's channels",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: fanciful }",
            "selector.type",
            "unknown variant",
        ),
        (
            "channels: [c1, c2, c3], selector: { typo: 1 }",
            "selector.typo",
            "unknown key",
        ),
        (
            "channels: [c1, c2, c3], selector: { header: level }",
            "selector.header",
            "only a multiplexing selector",
        ),
        (
            "channels: [c1, c2, c3], selector: { optional: { ERROR: [c3] } }",
            "selector.optional",
            "a list of channels",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: multiplexing, default: [c1, c2, c3] }",
            "selector.header",
            "missing",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: multiplexing, header: l, \
             mapping: { E: [c7] }, default: [c2, c3] }",
            "selector.mapping.E[0]",
            "not one of the source's channels",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: multiplexing, header: l, \
             mapping: { E: [] }, default: [c1, c2, c3] }",
            "selector.mapping.E",
            "names no channel",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: multiplexing, header: l, \
             mapping: { E: [c1] }, default: [c2], optional: { E: [c4] } }",
            "selector.optional.E[0]",
            "not one of the source's channels",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: multiplexing, header: l, \
             mapping: { E: [c1] }, default: [c2] }",
            "channels",
            "channel `c3` is in no mapping",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: multiplexing, header: l, \
             default: [c1, c2, c3], optional: [c1] }",
            "selector.optional",
            "by header value",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: multiplexing, header: l, \
             default: [c1, c2, c3, c1] }",
            "selector.default[3]",
            "listed twice",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: partitioned, optional: [c2] }",
            "selector.optional",
            "no channel can be optional",
        ),
        (
            "channels: [c1, c2, c3], selector: { type: partitioned, mapping: { E: [c1] } }",
            "selector.mapping",
            "only a multiplexing selector",
        ),
    ] {
        assert_error(&fanout(options), &format!("{r1}.{key}"), fragment);
    }
    // A channel only an invalid source names is not reported as unfed, nor twice.
    let errs = errors(&fanout("channels: [c1, c2, c3, c9]"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

/// Two channels; kafka sinks k1, k2 (with a delivery deadline) and k3 on c1, console k9 on c2,
/// and `groups` under `sink_groups`.
fn with_groups(groups: &str) -> String {
    format!(
        r#"
a1:
  sources:
    r1: {{ type: spooldir, dir: /a, channel: c1 }}
    r2: {{ type: spooldir, dir: /b, channel: c2 }}
  channels:
    c1: {{ type: memory }}
    c2: {{ type: memory }}
  sinks:
    k1: {{ type: kafka, channel: c1, brokers: "a:9092", topic: t, producer: {{ message.timeout.ms: 10000 }} }}
    k2: {{ type: kafka, channel: c1, brokers: "b:9092", topic: t, producer: {{ delivery.timeout.ms: 5000 }} }}
    k3: {{ type: kafka, channel: c1, brokers: "c:9092", topic: t }}
    k9: {{ type: console, channel: c2 }}
  sink_groups:
{groups}
"#
    )
}

#[test]
fn a_sink_group_parses_with_its_sinks_by_priority() {
    let text = with_groups(
        "    g1: { sinks: [k2, k1], processor: failover, priority: { k1: 10, k2: 5 }, max_penalty: 5s }",
    )
    .replace("    k3: { type: kafka, channel: c1, brokers: \"c:9092\", topic: t }\n", "");
    let cfg = parse_with(&text, &[]).unwrap();
    assert_eq!(
        cfg.sink_groups,
        [SinkGroupDef {
            name: "g1".into(),
            sinks: vec!["k1".into(), "k2".into()],
            max_penalty: Duration::from_secs(5),
        }]
    );
    assert_eq!(cfg.group_of("k2").map(|g| g.name.as_str()), Some("g1"));
    assert!(cfg.group_of("k9").is_none());
    let text = text.replace(", max_penalty: 5s", "");
    let cfg = parse_with(&text, &[]).unwrap();
    assert_eq!(cfg.sink_groups[0].max_penalty, Duration::from_secs(30));
}

#[test]
fn every_bad_sink_group_value_is_named_with_its_key() {
    let group = |g: &str| with_groups(&format!("    g1: {g}"));
    let cases: &[(&str, &str, &str)] = &[
        (
            "{ sinks: [k1, k8], processor: failover }",
            "a1.sink_groups.g1.sinks[1]",
            "no sink named `k8` (sinks: k1, k2, k3, k9)",
        ),
        (
            "{ sinks: [], processor: failover }",
            "a1.sink_groups.g1.sinks",
            "at least one sink",
        ),
        (
            "{ sinks: [k1, k2], processor: load_balance }",
            "a1.sink_groups.g1.processor",
            "load_balance",
        ),
        (
            "{ sinks: [k1, k2] }",
            "a1.sink_groups.g1.processor",
            "missing",
        ),
        (
            "{ sinks: [k1, k2], processor: failover, priority: { k1: 1, k9: 2 } }",
            "a1.sink_groups.g1.priority.k9",
            "not a sink of this group",
        ),
        (
            "{ sinks: [k1, k2], processor: failover, priority: { k1: 1, k2: 1 } }",
            "a1.sink_groups.g1.priority.k2",
            "same priority",
        ),
        (
            "{ sinks: [k1, k2], processor: failover, priority: { k1: high } }",
            "a1.sink_groups.g1.priority.k1",
            "high",
        ),
        (
            "{ sinks: [k1, k2], processor: failover, max_penalty: soon }",
            "a1.sink_groups.g1.max_penalty",
            "not a duration",
        ),
        (
            "{ sinks: [k1, k2], processor: failover, max_penalty: 0s }",
            "a1.sink_groups.g1.max_penalty",
            "more than 0",
        ),
        (
            "{ sinks: [k1, k2, k1], processor: failover }",
            "a1.sink_groups.g1.sinks[2]",
            "listed twice",
        ),
        (
            "{ sinks: [k1, k2], processor: failover, selector: x }",
            "a1.sink_groups.g1.selector",
            "unknown",
        ),
        (
            "{ sinks: [k1, k3], processor: failover }",
            "a1.sink_groups.g1.sinks[1]",
            "a1.sinks.k3.producer.message.timeout.ms",
        ),
        ("[k1, k2]", "a1.sink_groups.g1", "mapping"),
    ];
    for (g, key, fragment) in cases {
        assert_error(&group(g), key, fragment);
    }
}

#[test]
fn a_group_drains_one_channel_and_a_sink_is_in_one_group() {
    assert_error(
        &with_groups("    g1: { sinks: [k1, k9], processor: failover }"),
        "a1.sink_groups.g1.sinks[1]",
        "sink `k9` drains channel `c2`, but `k1` drains `c1`",
    );
    assert_error(
        &with_groups(
            "    g1: { sinks: [k1, k2], processor: failover }\n    g2: { sinks: [k2], processor: failover }",
        ),
        "a1.sink_groups.g2.sinks[0]",
        "already in group `g1`",
    );
    assert_error(
        &with_groups("    k1: { sinks: [k2], processor: failover }"),
        "a1.sink_groups.k1",
        "a sink is named `k1` too",
    );
    // Sinks of one group share their channel; a sink outside it still may not.
    let errs = errors(&with_groups(
        "    g1: { sinks: [k1, k2], processor: failover }",
    ));
    assert_eq!(
        errs,
        [
            "a1.sinks.k3.channel: channel `c1` is already drained by sink `k1`; one sink per channel keeps its events in order (for several, put them in one sink group)"
        ]
    );
    assert_error(
        &with_groups("    g1: { sinks: [k1, k2], processor: failover }"),
        "a1.sinks.k3.channel",
        "already drained",
    );
}

/// A taildir source `r1` with `interceptors` set to `list` (a YAML flow sequence).
fn with_interceptors(list: &str) -> String {
    format!(
        "a1:\n  sources:\n    r1: {{ type: taildir, paths: [/l/*.log], channel: c1, interceptors: {list} }}\n  channels:\n    c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: console, channel: c1 }}\n"
    )
}

#[test]
fn interceptors_parse_with_flumes_defaults() {
    let cfg = parse_with(
        &with_interceptors(
            "[{ type: static, key: env, value: prod }, { type: regex_filter, regex: DEBUG }]",
        ),
        &[],
    )
    .unwrap();
    let SourceKind::TailDir(t) = &cfg.sources[0].kind else {
        panic!("a taildir source")
    };
    use sluice_sources::InterceptorConfig as I;
    assert_eq!(
        t.interceptors,
        [
            I::Static {
                key: "env".into(),
                value: "prod".into(),
                preserve_existing: true
            },
            I::RegexFilter {
                regex: "DEBUG".into(),
                exclude: false
            }
        ]
    );
}

#[test]
fn bad_interceptors_are_named_with_their_key() {
    let key = "a1.sources.r1.interceptors";
    assert_error(
        &with_interceptors(
            "[{ type: static, key: a, value: b }, { type: regex_filter, regex: '(' }]",
        ),
        &format!("{key}[1].regex"),
        "bad regex",
    );
    assert_error(
        &with_interceptors("[{ type: regex_extractor, regex: '[A-Z]+' }]"),
        &format!("{key}[0].regex"),
        "named group",
    );
    assert_error(
        &with_interceptors("[{ type: search_replace, search: 'a[' }]"),
        &format!("{key}[0].search"),
        "bad regex",
    );
    assert_error(
        &with_interceptors("[{ type: remove_header }]"),
        &format!("{key}[0]"),
        "with_name",
    );
    for (list, fragment) in [
        ("[{ type: nope }]", "nope"),
        ("[{ type: static, value: v }]", "key"),
        ("[{ type: static, key: k }]", "value"),
        ("[{ type: regex_filter }]", "regex"),
        (
            "[{ type: regex_filter, regex: a, excludes: true }]",
            "unknown key (expected `regex` or `exclude`)",
        ),
    ] {
        let errs = errors(&with_interceptors(list));
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("{key}[0]")) && e.contains(fragment)),
            "{list}: expected `{key}[0]...{fragment}` in {errs:#?}"
        );
    }
}

#[test]
fn bad_multiline_options_are_named_by_key_on_both_sources() {
    let with = |source: &str, multiline: &str| {
        GOOD.replace(
            "{ type: spooldir, dir: /var/spool/app, channel: c1 }",
            &format!("{{ {source}, channel: c1, multiline: {multiline} }}"),
        )
    };
    for source in [
        "type: spooldir, dir: /var/spool/app",
        "type: taildir, paths: [\"/var/log/app/*.log\"]",
    ] {
        let cases = [
            (
                "{ start: \"(\" }",
                "a1.sources.r1.multiline.start",
                "invalid pattern",
            ),
            (
                "{ continue: \"[a\" }",
                "a1.sources.r1.multiline.continue",
                "invalid pattern",
            ),
            (
                "{ start: a, continue: b }",
                "a1.sources.r1.multiline",
                "not both",
            ),
            ("{ max_lines: 5 }", "a1.sources.r1.multiline", "one of"),
            (
                "{ start: a, max_lines: 0 }",
                "a1.sources.r1.multiline.max_lines",
                "at least 1",
            ),
            (
                "{ start: a, max_bytes: 0 }",
                "a1.sources.r1.multiline.max_bytes",
                "at least 1",
            ),
            (
                "{ start: a, timeout: soon }",
                "a1.sources.r1.multiline.timeout",
                "",
            ),
            (
                "{ start: a, nope: 1 }",
                "a1.sources.r1.multiline.nope",
                "unknown key",
            ),
        ];
        for (multiline, key, fragment) in cases {
            assert_error(&with(source, multiline), key, fragment);
        }
        let good = with(source, "{ start: '^\\d{4}-\\d{2}-\\d{2}', max_lines: 50 }");
        parse_with(&good, &[]).unwrap();
    }
}

#[test]
fn an_exactly_once_sink_is_refused_in_a_failover_group() {
    let text = with_groups("    g1: { sinks: [k1, k2], processor: failover }").replace(
        "producer: { message.timeout.ms: 10000 } }",
        "delivery: exactly_once }",
    );
    assert_error(
        &text,
        "a1.sink_groups.g1.sinks[0]",
        "kafka sink `k1` delivers exactly once, which a failover group cannot keep",
    );
}

/// Hostile configuration text: YAML that is damaged, or built to make the loader work hard.
mod hostile {
    use proptest::prelude::*;
    use sluice_channels::fuzzing::{hostile, one_of};

    use super::*;

    /// The shipped configurations, and the smallest one, as seeds to mutate.
    const SEEDS: &[&str] = &[
        GOOD,
        FANOUT,
        include_str!("../../../conf/quickstart.yaml"),
        include_str!("../../../conf/spooldir-kafka.yaml"),
        include_str!("../../../conf/exactly-once-kafka.yaml"),
        include_str!("../../../conf/failover-kafka.yaml"),
        include_str!("../../../conf/fanout-kafka.yaml"),
        include_str!("../../../conf/interceptors-kafka.yaml"),
        include_str!("../../../conf/taildir-multiline-kafka.yaml"),
    ];

    /// YAML's syntax (anchors, aliases, merge keys, tags, flow collections, block scalars,
    /// documents), numbers beyond 64 bits, and `${VAR}` references set and not.
    const TOKENS: &[&[u8]] = &[
        b": ",
        b"- ",
        b"\n",
        b"\n  ",
        b"  ",
        b"\t",
        b"#",
        b"&a ",
        b"*a",
        b"<<: *a\n",
        b"<<: ",
        b"!tag ",
        b"!!str ",
        b"!!binary ",
        b"{",
        b"}",
        b"[",
        b"]",
        b", ",
        b"|\n",
        b">-\n",
        b"'",
        b"\"",
        b"? ",
        b"---\n",
        b"...\n",
        b"%YAML 1.2\n",
        b"~",
        b"null",
        b"x-",
        b"a1:",
        b"99999999999999999999999",
        b"-99999999999999999999999",
        b"1e999",
        b"0x",
        b".inf",
        b"${SET}",
        b"${UNSET}",
        b"${UNSET:-d}",
        b"${",
        b"}",
        b"$${",
        b"\\x01sluice-out-of-range:",
        b"type: ",
        b"channel: ",
        b"sources:",
        b"channels:",
        b"sinks:",
        b"sink_groups:",
    ];

    proptest! {
        /// Arbitrary text, and the shipped configurations with mutations: the agent, or an
        /// error of problems each naming where it is (the file or a key) and what is wrong;
        /// never a panic.
        #[test]
        fn hostile_yaml_loads_or_fails(data in hostile(one_of(SEEDS), TOKENS), agent in prop_oneof![Just("a1"), Just("quickstart")]) {
            let text = String::from_utf8_lossy(&data);
            let env = |name: &str| (name == "SET").then(|| "value".to_owned());
            if let Err(e) = parse(&text, agent, Path::new("hostile.yaml"), env) {
                prop_assert!(!e.problems.is_empty());
                for p in &e.problems {
                    prop_assert!(!p.key.is_empty() && !p.message.is_empty(), "{:?}", p);
                }
            }
        }
    }
}

/// A certificate replaced at the same path makes the sink's options differ, so that a reload
/// restarts the sink with it (certificate rotation).
#[test]
fn a_replaced_certificate_changes_the_sinks_options() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "old CA").unwrap();
    let text = format!(
        "a1:\n  sources:\n    r1: {{ type: spooldir, dir: /tmp, channel: c1 }}\n  channels:\n    c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: kafka, channel: c1, brokers: \"h:1\", topic: t, tls: {{ ca: {} }} }}\n",
        ca.display()
    );
    let load = || {
        parse(&text, "a1", Path::new("a.yaml"), |_| None)
            .unwrap()
            .sinks
    };
    let before = load();
    assert_eq!(before, load(), "the same files, the same options");
    std::fs::write(&ca, "new CA").unwrap();
    assert_ne!(before, load(), "a replaced CA must read as a change");
}
