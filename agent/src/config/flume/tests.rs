//! The Flume front end against whole agents: what each translates to, the problems named by
//! Flume keys, and `sluice convert`'s YAML loading to the same configuration.

use std::path::Path;

use proptest::prelude::*;

use crate::config::{AgentConfig, ChannelKind, Options, SinkKind, SourceKind, load_flume, parse};
use crate::convert::convert;

/// The seed: spooldir → memory → Kafka with Flume 1.6's sink keys.
pub const SEED: &str = "\
a1.sources = r1
a1.channels = c1
a1.sinks = k1

a1.sources.r1.type = spooldir
a1.sources.r1.spoolDir = /var/spool/app
a1.sources.r1.fileHeader = true
a1.sources.r1.fileHeaderKey = path
a1.sources.r1.batchSize = 500
a1.sources.r1.channels = c1

a1.channels.c1.type = memory
a1.channels.c1.capacity = 10000
a1.channels.c1.transactionCapacity = 1000

a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink
a1.sinks.k1.brokerList = 127.0.0.1:9092
a1.sinks.k1.topic = app-logs
a1.sinks.k1.batchSize = 500
a1.sinks.k1.requiredAcks = 1
a1.sinks.k1.channel = c1
";

fn opts() -> Options {
    Options::default()
}

fn load(text: &str) -> Result<AgentConfig, Vec<(String, String)>> {
    load_flume(text.as_bytes(), Path::new("x.properties"), "a1", &opts())
        .map_err(|e| e.problems.into_iter().map(|p| (p.key, p.message)).collect())
}

fn keys(text: &str) -> Vec<String> {
    load(text)
        .unwrap_err()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn the_seed_runs_as_spooldir_memory_kafka() {
    let cfg = load(SEED).unwrap();
    let SourceKind::SpoolDir(s) = &cfg.sources[0].kind else {
        panic!("spooldir")
    };
    assert_eq!(s.dir, Path::new("/var/spool/app"));
    assert_eq!(s.batch_size, 500);
    assert_eq!(cfg.sources[0].channels, ["c1"]);
    let ChannelKind::Memory(m) = &cfg.channels[0].kind else {
        panic!("memory")
    };
    assert_eq!(m.capacity, 10_000);
    let SinkKind::Kafka(k) = &cfg.sinks[0].kind else {
        panic!("kafka")
    };
    assert_eq!(k.brokers, "127.0.0.1:9092");
    assert_eq!(k.topic.as_str(), "app-logs");
    assert_eq!(k.key.as_str(), "%{key}");
    assert_eq!(k.empty_key, sluice_sinks::kafka::EmptyKey::Null);
    assert_eq!(k.batch_size, 500);
    assert!(
        k.headers.is_empty(),
        "Flume sends no headers it is not told to"
    );
    let said: Vec<&str> = cfg.warnings.iter().map(|w| w.key.as_str()).collect();
    for key in [
        "a1.sinks.k1.requiredAcks",
        "a1.sources.r1.deserializer.maxLineLength",
        "a1.sinks.k1.type",
    ] {
        assert!(said.contains(&key), "{key} in {said:?}");
    }
    let notes: Vec<&str> = cfg.notes.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(notes, ["a1.channels.c1.transactionCapacity"]);
}

#[test]
fn taildir_groups_with_headers_into_a_file_channel() {
    let text = "\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = TAILDIR
a1.sources.r1.channels = c1
a1.sources.r1.positionFile = /var/lib/flume/taildir_position.json
a1.sources.r1.filegroups = f1 f2
a1.sources.r1.filegroups.f1 = /var/log/app/.*\\\\.log
a1.sources.r1.headers.f1.service = app
a1.sources.r1.headers.f1.team.name = core
a1.sources.r1.filegroups.f2 = /var/log/web/access.log
a1.sources.r1.skipToEnd = true
a1.sources.r1.idleTimeout = 60000
a1.sources.r1.writePosInterval = 1000
a1.sources.r1.fileHeader = true
a1.sources.r1.byteOffsetHeader = true
a1.channels.c1.type = file
a1.channels.c1.checkpointDir = /var/lib/flume/checkpoint
a1.channels.c1.dataDirs = /var/lib/flume/data, /mnt/other
a1.channels.c1.capacity = 500000
a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink
a1.sinks.k1.kafka.bootstrap.servers = b1:9092,b2:9092
a1.sinks.k1.kafka.topic = logs
a1.sinks.k1.flumeBatchSize = 200
a1.sinks.k1.kafka.producer.linger.ms = 5
a1.sinks.k1.kafka.producer.compression.type = zstd
a1.sinks.k1.header.service = service
a1.sinks.k1.header.file = file
a1.sinks.k1.header.byteoffset = pos
a1.sinks.k1.allowTopicOverride = false
a1.sinks.k1.partitionIdHeader = part
a1.sinks.k1.defaultPartitionId = 2
a1.sinks.k1.timestampHeader = ts
a1.sinks.k1.channel = c1
";
    let cfg = load(text).unwrap();
    let SourceKind::TailDir(t) = &cfg.sources[0].kind else {
        panic!("taildir")
    };
    assert_eq!(t.paths[0].glob, "/var/log/app/*.log");
    assert_eq!(t.paths[0].headers["service"], "app");
    assert_eq!(t.paths[0].headers["team.name"], "core");
    // A regex: its `.` is any character, as in Flume.
    assert_eq!(t.paths[1].glob, "/var/log/web/access?log");
    assert!(t.paths[1].headers.is_empty());
    assert_eq!(
        t.position_file.as_deref(),
        Some(Path::new("/var/lib/flume/taildir_position.json.sluice"))
    );
    assert_eq!(
        t.import_flume_positions.as_deref(),
        Some(Path::new("/var/lib/flume/taildir_position.json")),
        "the first run starts where Flume stopped"
    );
    assert_eq!(t.idle_timeout.0, std::time::Duration::from_secs(60));
    let ChannelKind::File(f) = &cfg.channels[0].kind else {
        panic!("file")
    };
    assert_eq!(f.dir, Path::new("/var/lib/flume/data/sluice"));
    assert_eq!(f.capacity_events, Some(500_000));
    let SinkKind::Kafka(k) = &cfg.sinks[0].kind else {
        panic!("kafka")
    };
    assert_eq!(k.brokers, "b1:9092,b2:9092");
    assert_eq!(k.batch_size, 200);
    let sent: Vec<(&str, &str)> = k
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.from.as_str()))
        .collect();
    assert_eq!(
        sent,
        [("service", "service"), ("file", "path"), ("pos", "offset")],
        "Flume's file header is Sluice's path, byteoffset its offset"
    );
    assert_eq!(k.compression, sluice_sinks::kafka::Compression::Zstd);
    assert_eq!(k.topic_header, None);
    assert_eq!(
        (
            k.partition_header.as_deref(),
            k.partition,
            k.timestamp_header.as_deref()
        ),
        (Some("part"), Some(2), Some("ts"))
    );
    assert_eq!(k.producer["linger.ms"].to_string(), "5");
    let notes: Vec<&str> = cfg.notes.iter().map(|w| w.key.as_str()).collect();
    assert!(notes.contains(&"a1.channels.c1.checkpointDir"), "{notes:?}");
    assert!(
        notes.contains(&"a1.sources.r1.writePosInterval"),
        "{notes:?}"
    );
}

#[test]
fn interceptors_and_a_multiplexing_selector() {
    let text = "\
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.r1.type = spooldir
a1.sources.r1.spoolDir = /spool
a1.sources.r1.channels = c1 c2
a1.sources.r1.interceptors = i1 i2 i3 i4 i5
a1.sources.r1.interceptors.i1.type = host
a1.sources.r1.interceptors.i2.type = static
a1.sources.r1.interceptors.i2.key = env
a1.sources.r1.interceptors.i2.value = prod
a1.sources.r1.interceptors.i3.type = org.apache.flume.interceptor.TimestampInterceptor$Builder
a1.sources.r1.interceptors.i3.preserveExisting = TRUE
a1.sources.r1.interceptors.i4.type = REGEX_FILTER
a1.sources.r1.interceptors.i4.regex = DEBUG
a1.sources.r1.interceptors.i4.excludeEvents = true
a1.sources.r1.interceptors.i5.type = regex_extractor
a1.sources.r1.interceptors.i5.regex = ^(\\\\w+) 
a1.sources.r1.interceptors.i5.serializers = s1
a1.sources.r1.interceptors.i5.serializers.s1.name = level
a1.sources.r1.selector.type = multiplexing
a1.sources.r1.selector.header = level
a1.sources.r1.selector.mapping.ERROR = c2
a1.sources.r1.selector.mapping.INFO = c1
a1.sources.r1.selector.default = c1
a1.channels.c1.type = memory
a1.channels.c2.type = memory
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
a1.sinks.k2.type = logger
a1.sinks.k2.channel = c2
";
    let cfg = load(text).unwrap();
    let SourceKind::SpoolDir(s) = &cfg.sources[0].kind else {
        panic!("spooldir")
    };
    let json = serde_json::to_string(&format!("{:?}", s.interceptors)).unwrap();
    for want in [
        "Host { header: \\\"host\\\", preserve_existing: false, use_ip: true }",
        "Static { key: \\\"env\\\", value: \\\"prod\\\", preserve_existing: true }",
        "Timestamp { header: \\\"timestamp\\\", preserve_existing: true }",
        "RegexFilter { regex: \\\"DEBUG\\\", exclude: true }",
        // Java's `\w` is ASCII: written out for the regex crate, whose `\w` is Unicode.
        "RegexExtractor { regex: \\\"^(?P<level>[0-9A-Za-z_]+)\\\" }",
    ] {
        assert!(json.contains(want), "{want} in {json}");
    }
    let sel = format!("{:?}", cfg.sources[0].selector);
    assert!(sel.contains("Multiplexing"), "{sel}");
    assert!(sel.contains("\"ERROR\": [\"c2\"]"), "{sel}");
    let SinkKind::Console(logger) = &cfg.sinks[0].kind else {
        panic!("console")
    };
    assert_eq!(
        logger.headers,
        ["env", "host", "level", "timestamp"],
        "the headers the interceptors set, printed as Flume's logger does"
    );
}

#[test]
fn every_problem_names_the_flume_key() {
    let bad = SEED
        .replace("a1.sources.r1.batchSize = 500", "a1.sources.r1.batchSize = lots")
        .replace("a1.channels.c1.type = memory", "a1.channels.c1.type = jdbc")
        .replace(
            "a1.sinks.k1.channel = c1",
            "a1.sinks.k1.channel = c1\na1.sinks.k1.useFlumeEventFormat = true\na1.sinks.k1.kafka.nonsense = 1",
        )
        + "a1.sources.r1.trackingPolicy = tracker_dir\na1.sources.r1.includePattern = (a|b)\n";
    let mut got = keys(&bad);
    got.sort();
    assert_eq!(
        got,
        [
            "a1.channels.c1.type",
            "a1.sinks.k1.kafka.nonsense",
            "a1.sinks.k1.useFlumeEventFormat",
            "a1.sources.r1.includePattern",
            "a1.sources.r1.trackingPolicy",
        ]
    );
    // A value the shared checks refuse: named by the Flume key, the Sluice option said.
    let msgs = load(&SEED.replace(
        "batchSize = 500\na1.sources",
        "batchSize = lots\na1.sources",
    ))
    .unwrap_err();
    assert_eq!(msgs[0].0, "a1.sources.r1.batchSize", "{msgs:?}");
    assert!(msgs[0].1.contains("a1.sources.r1.batch_size"), "{msgs:?}");
    // Wiring: a sink's channel that does not exist.
    let msgs =
        load(&SEED.replace("a1.sinks.k1.channel = c1", "a1.sinks.k1.channel = c9")).unwrap_err();
    assert_eq!(msgs[0].0, "a1.sinks.k1.channel", "{msgs:?}");
    // Missing pieces and unsupported sources.
    assert_eq!(
        keys(&SEED.replace("a1.sources.r1.spoolDir = /var/spool/app\n", "")),
        ["a1.sources.r1.spoolDir"]
    );
    assert_eq!(
        keys(&SEED.replace("type = spooldir", "type = netcat")),
        ["a1.sources.r1.type"]
    );
    assert_eq!(
        keys(&SEED.replace(
            "type = spooldir",
            "type = exec\na1.sources.r1.command = cat /x"
        )),
        ["a1.sources.r1.command"]
    );
    assert_eq!(
        keys(&format!(
            "{SEED}a1.sinkgroups = g1\na1.sinkgroups.g1.sinks = k1\n"
        )),
        ["a1.sinkgroups.g1.processor.type"]
    );
    assert_eq!(
        keys(&SEED.replace("-logs", "-${env:SLUICE_SURELY_UNSET}")),
        ["a1.sinks.k1.topic"]
    );
    let none = load_flume(SEED.as_bytes(), Path::new("x.properties"), "a2", &opts())
        .unwrap_err()
        .to_string();
    assert!(
        none.contains("no such agent") && none.contains("a1"),
        "{none}"
    );
}

#[test]
fn exec_tail_runs_as_taildir_and_failover_groups_translate() {
    let text = SEED.replace(
        "a1.sources.r1.type = spooldir\na1.sources.r1.spoolDir = /var/spool/app\n\
         a1.sources.r1.fileHeader = true\na1.sources.r1.fileHeaderKey = path\n",
        "a1.sources.r1.type = exec\na1.sources.r1.command = tail -F /var/log/app.log\n\
         a1.sources.r1.shell = /bin/sh -c\n",
    ) + "a1.sinks = k1 k2\na1.sinks.k2.type = org.apache.flume.sink.kafka.KafkaSink\n\
         a1.sinks.k2.kafka.bootstrap.servers = dr:9092\na1.sinks.k2.channel = c1\n\
         a1.sinkgroups = g1\na1.sinkgroups.g1.sinks = k1 k2\n\
         a1.sinkgroups.g1.processor.type = failover\n\
         a1.sinkgroups.g1.processor.priority.k1 = 10\n\
         a1.sinkgroups.g1.processor.priority.k2 = 5\n\
         a1.sinkgroups.g1.processor.maxpenalty = 10000\n\
         a1.sinks.k1.kafka.producer.delivery.timeout.ms = 30000\n\
         a1.sinks.k2.kafka.producer.delivery.timeout.ms = 30000\n";
    let cfg = load(&text).unwrap();
    let SourceKind::TailDir(t) = &cfg.sources[0].kind else {
        panic!("taildir")
    };
    assert_eq!(t.paths[0].glob, "/var/log/app.log");
    assert_eq!(
        cfg.sink_groups[0].max_penalty,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(cfg.sink_groups[0].sinks, ["k1", "k2"], "by priority");
    let SinkKind::Kafka(k2) = &cfg.sinks[1].kind else {
        panic!("kafka")
    };
    assert_eq!(k2.topic.as_str(), "default-flume-topic");
}

/// A Flume agent built from `choices`: each picks one variant of one part.
fn agent(choices: &[usize]) -> String {
    let pick = |i: usize, options: &[&str]| options[choices[i] % options.len()].to_owned();
    let source = pick(
        0,
        &[
            "a1.sources.r1.type = spooldir\na1.sources.r1.spoolDir = /s\na1.sources.r1.basenameHeader = true\n",
            "a1.sources.r1.type = spooldir\na1.sources.r1.spoolDir = /s\na1.sources.r1.deletePolicy = immediate\na1.sources.r1.includePattern = ^.*\\\\.log$\na1.sources.r1.consumeOrder = youngest\na1.sources.r1.pollDelay = 250\n",
            "a1.sources.r1.type = TAILDIR\na1.sources.r1.filegroups = g\na1.sources.r1.filegroups.g = /l/.*\na1.sources.r1.headers.g.k = v w\n",
            "a1.sources.r1.type = exec\na1.sources.r1.command = tail -F /l/a.log\n",
        ],
    );
    let interceptors = pick(
        1,
        &[
            "",
            "a1.sources.r1.interceptors = i\na1.sources.r1.interceptors.i.type = search_replace\na1.sources.r1.interceptors.i.searchPattern = (\\\\d+)\na1.sources.r1.interceptors.i.replaceString = <$1> \\\\$\n",
            "a1.sources.r1.interceptors = i j\na1.sources.r1.interceptors.i.type = remove_header\na1.sources.r1.interceptors.i.fromList = a, b.c\na1.sources.r1.interceptors.j.type = org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder\na1.sources.r1.interceptors.j.prefix = x-\n",
        ],
    );
    let channel = pick(
        2,
        &[
            "a1.channels.c1.type = memory\na1.channels.c1.byteCapacity = 1000000\n",
            "a1.channels.c1.type = file\na1.channels.c1.dataDirs = /d\na1.channels.c1.fsyncPerTransaction = false\na1.channels.c1.fsyncInterval = 2\n",
        ],
    );
    let sink = pick(
        3,
        &[
            "a1.sinks.k1.type = logger\n",
            "a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink\na1.sinks.k1.kafka.bootstrap.servers = h:1\na1.sinks.k1.kafka.topic = t-%{k}\na1.sinks.k1.kafka.producer.client.id = \"quoted\" 'id'\na1.sinks.k1.header.k = kk\na1.sinks.k1.header.basename = basename\n",
        ],
    );
    format!(
        "a1.sources = r1\na1.channels = c1\na1.sinks = k1\na1.sources.r1.channels = c1\n\
         a1.sinks.k1.channel = c1\n{source}{interceptors}{channel}{sink}"
    )
}

proptest! {
    /// `sluice convert`'s YAML loads to the configuration the properties load to.
    #[test]
    fn convert_then_load_is_loading_the_properties(choices in prop::collection::vec(0usize..8, 4)) {
        let text = agent(&choices);
        let direct = load(&text).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        let yaml = convert(text.as_bytes(), Path::new("x.properties"), "a1", &opts()).unwrap();
        let back = parse(&yaml, "a1", Path::new("x.yaml"), |_| None)
            .unwrap_or_else(|e| panic!("{yaml}\n{e}"));
        prop_assert_eq!(&back.sources, &direct.sources, "{}", yaml);
        prop_assert_eq!(&back.channels, &direct.channels);
        prop_assert_eq!(&back.sinks, &direct.sinks);
        prop_assert_eq!(&back.sink_groups, &direct.sink_groups);
    }
}

#[test]
fn the_converted_seed_says_where_each_option_came_from() {
    let yaml = convert(SEED.as_bytes(), Path::new("x.properties"), "a1", &opts()).unwrap();
    for want in [
        "dir: /var/spool/app  # a1.sources.r1.spoolDir",
        "brokers: \"127.0.0.1:9092\"  # a1.sinks.k1.brokerList",
        "# differs from Flume: a1.sinks.k1.requiredAcks:",
        "# no effect: a1.channels.c1.transactionCapacity:",
    ] {
        assert!(yaml.contains(want), "{want} in\n{yaml}");
    }
}

#[test]
fn hostile_inputs_duplicates_tail_from_start_and_no_agent() {
    let twice = SEED.replace("a1.sinks = k1", "a1.sinks = k1  k1");
    assert_eq!(load(&twice).unwrap().sinks.len(), 1, "a set, as in Flume");
    let tail = SEED.replace(
        "a1.sources.r1.type = spooldir\na1.sources.r1.spoolDir = /var/spool/app\n\
         a1.sources.r1.fileHeader = true\na1.sources.r1.fileHeaderKey = path\n",
        "a1.sources.r1.type = exec\na1.sources.r1.command = tail -n +1 -F /l/a.log\n",
    );
    let SourceKind::TailDir(t) = &load(&tail).unwrap().sources[0].kind else {
        panic!("taildir")
    };
    assert_eq!(t.read_from, sluice_sources::taildir::ReadFrom::Beginning);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.properties");
    std::fs::write(&empty, "# nothing\nfoo = bar\n").unwrap();
    let err = crate::config::agent_names(&empty, &opts()).unwrap_err();
    assert!(err.to_string().contains("defines no agent"), "{err}");
}

#[test]
fn convert_writes_environment_references_not_their_values() {
    // SAFETY: no other thread of this test reads or writes the environment meanwhile.
    unsafe { std::env::set_var("SLUICE_TEST_KPASS", "hunter2") };
    let text = format!(
        "{SEED}a1.sinks.k1.kafka.producer.sasl.password = ${{env:SLUICE_TEST_KPASS}}\n\
         a1.sources.r1.interceptors = i\na1.sources.r1.interceptors.i.type = static\n\
         a1.sources.r1.interceptors.i.value = 0x1F\n"
    );
    let yaml = convert(text.as_bytes(), Path::new("x.properties"), "a1", &opts()).unwrap();
    assert!(!yaml.contains("hunter2"), "{yaml}");
    assert!(
        yaml.contains("sasl.password: ${SLUICE_TEST_KPASS}"),
        "{yaml}"
    );
    assert!(yaml.contains("value: \"0x1F\""), "{yaml}");
    let back = parse(&yaml, "a1", Path::new("x.yaml"), |v| {
        (v == "SLUICE_TEST_KPASS").then(|| "hunter2".to_owned())
    })
    .unwrap_or_else(|e| panic!("{yaml}\n{e}"));
    assert_eq!(back.sinks, load(&text).unwrap().sinks);
}

#[test]
fn the_java_clients_security_settings_become_tls_and_sasl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let jks = dir.path().join("truststore.jks");
    std::fs::write(&jks, b"\xfe\xed\xfe\xed").unwrap();
    let secured = |protocol: &str, extra: &str| {
        format!(
            "{SEED}a1.sinks.k1.kafka.producer.security.protocol = {protocol}\n\
             a1.sinks.k1.kafka.producer.sasl.mechanism = SCRAM-SHA-512\n\
             a1.sinks.k1.kafka.producer.sasl.jaas.config = org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"Jaas-pw-8812\";\n\
             a1.sinks.k1.kafka.producer.linger.ms = 5\n{extra}"
        )
    };
    let text = secured(
        "SASL_SSL",
        &format!(
            "a1.sinks.k1.kafka.producer.ssl.truststore.location = {}\n\
             a1.sinks.k1.kafka.producer.ssl.truststore.password = changeit\n",
            ca.display()
        ),
    );
    let cfg = load(&text).unwrap();
    let SinkKind::Kafka(k) = &cfg.sinks[0].kind else {
        panic!("kafka")
    };
    let sasl = k.sasl.as_ref().expect("sasl");
    assert_eq!(sasl.mechanism.setting(), "SCRAM-SHA-512");
    assert_eq!(sasl.username, "alice");
    assert_eq!(sasl.password.expose(), "Jaas-pw-8812");
    assert_eq!(
        k.tls.as_ref().and_then(|t| t.ca.as_deref()),
        Some(ca.as_path())
    );
    assert_eq!(
        k.producer.len(),
        1,
        "only linger.ms passes through: {:?}",
        k.producer.keys()
    );
    assert!(
        cfg.notes
            .iter()
            .any(|n| n.key == "a1.sinks.k1.kafka.producer.ssl.truststore.password"),
        "{:?}",
        cfg.notes
    );
    let yaml = convert(text.as_bytes(), Path::new("x.properties"), "a1", &opts()).unwrap();
    assert!(!yaml.contains("Jaas-pw-8812"), "{yaml}");
    // A JKS truststore, PLAIN in clear, and a module Sluice cannot use: each named by key.
    let jks_text = secured(
        "SASL_SSL",
        &format!(
            "a1.sinks.k1.kafka.producer.ssl.truststore.location = {}\n",
            jks.display()
        ),
    );
    let p = load(&jks_text).unwrap_err();
    assert!(
        p.iter().any(
            |(k, m)| k == "a1.sinks.k1.kafka.producer.ssl.truststore.location"
                && m.contains("keytool -exportcert")
        ),
        "{p:?}"
    );
    let plain = SEED.to_owned()
        + "a1.sinks.k1.kafka.producer.security.protocol = SASL_PLAINTEXT\n\
           a1.sinks.k1.kafka.producer.sasl.mechanism = PLAIN\n\
           a1.sinks.k1.kafka.producer.sasl.jaas.config = org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"Jaas-pw-8812\";\n";
    let p = load(&plain).unwrap_err();
    assert!(
        p.iter()
            .any(|(k, m)| k == "a1.sinks.k1.kafka.producer.sasl.mechanism"
                && m.starts_with("PLAIN would send the password in clear")),
        "{p:?}"
    );
    let allowed = plain.clone() + "a1.sinks.k1.kafka.producer.sasl.allow_plaintext = true\n";
    assert!(load(&allowed).is_ok());
    let kerberos = plain.replace(
        "org.apache.kafka.common.security.plain.PlainLoginModule",
        "com.sun.security.auth.module.Krb5LoginModule",
    );
    let p = load(&kerberos).unwrap_err();
    assert!(
        p.iter()
            .any(|(k, m)| k == "a1.sinks.k1.kafka.producer.sasl.jaas.config"
                && m.contains("Krb5LoginModule")
                && !m.contains("Jaas-pw-8812")),
        "{p:?}"
    );
}

/// Hostile properties: text that is damaged, or built to make the loader work hard.
mod hostile {
    use proptest::prelude::*;
    use sluice_channels::fuzzing::{hostile, largest_allocation, one_of};

    use super::*;
    use crate::config::flume::properties::tests::laughs;

    /// The seed and the shipped Flume file, to mutate.
    const SEEDS: &[&str] = &[
        SEED,
        include_str!("../../../../conf/spooldir-kafka.properties"),
    ];

    /// The properties syntax (separators, escapes, continued lines, comments), `${...}`
    /// references of every kind, and Flume's keys.
    const TOKENS: &[&[u8]] = &[
        b"=",
        b":",
        b" ",
        b"\t",
        b"\x0c",
        b"\\",
        b"\\\n",
        b"\\u",
        b"\\u00e9",
        b"\\uD800",
        b"\\uDC00",
        b"\n",
        b"\r",
        b"\r\n",
        b"#",
        b"!",
        b"\xef\xbb\xbf",
        b"\xe9",
        b"\0",
        b"${",
        b"}",
        b":-",
        b"$${",
        b"${a1.sources}",
        b"${env:HOME}",
        b"${sys:X}",
        b"${x:y}",
        b"${${",
        b"a1.sources",
        b"a1.channels",
        b"a1.sinks",
        b".type",
        b".channels",
        b".channel",
        b" = ",
        b"r1",
        b"c1",
        b"k1",
        b"memory",
        b"file",
        b"spooldir",
        b"TAILDIR",
        b"org.apache.flume.sink.kafka.KafkaSink",
        b"a1.sinkgroups",
        b".selector.type",
        b"99999999999999999999",
        b"-1",
    ];

    fn check(result: Result<AgentConfig, Vec<(String, String)>>) -> Result<(), TestCaseError> {
        if let Err(problems) = result {
            prop_assert!(!problems.is_empty());
            for (key, message) in &problems {
                prop_assert!(
                    !key.is_empty() && !message.is_empty(),
                    "{}: {}",
                    key,
                    message
                );
            }
        }
        Ok(())
    }

    proptest! {
        /// Arbitrary bytes, and the shipped properties with mutations: the agent, or an
        /// error of problems each naming where it is (the file and line, or a key) and what
        /// is wrong; never a panic.
        #[test]
        fn hostile_properties_load_or_fail(data in hostile(one_of(SEEDS), TOKENS)) {
            check(load_flume(&data, Path::new("x.properties"), "a1", &opts())
                .map_err(|e| e.problems.into_iter().map(|p| (p.key, p.message)).collect()))?;
        }

        /// Properties that repeat references to one another, up to 30 levels of up to 12
        /// each (12^30 copies, substituted naively): loaded or refused at once, with no
        /// allocation past a bound.
        #[test]
        fn references_that_repeat_references_stay_bounded(
            levels in 1usize..30,
            n in 1usize..12,
            first in prop_oneof![Just("x"), Just("${env:HOME}"), Just("${UNSET:-}"), Just("laugh ")],
        ) {
            let text = format!("{SEED}{}", laughs(levels, n, first));
            let (result, largest) = largest_allocation(|| load(&text));
            prop_assert!(largest <= 16 << 20, "{} bytes allocated", largest);
            check(result)?;
        }
    }
}
