//! End-to-end: a Flume agent's `.properties` file run unchanged by the real `sluice` binary,
//! with Flume's command line, into a real Kafka broker read back with kcat. Records carry
//! what Flume's would: the body, no headers it was not told to send, no key unless a `key`
//! header is set (then every line of the source in one partition, in order).

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, completed, drop_file, free_port, http_get, repo_root, sluice};
use support::kafka::{KafkaBroker, Record};
use support::tail_topic::topic_prefix;

const LINES: usize = 2000;

/// Two sources, as a Flume user writes them: `r1` with no key (Flume spreads its records),
/// `r2` with a static `key` header and Kafka headers mapped from Flume's.
fn properties(spool1: &Path, spool2: &Path, bootstrap: &str, t1: &str, t2: &str) -> String {
    format!(
        "\
# Flume 1.11, unchanged
a1.sources = r1 r2
a1.channels = c1 c2
a1.sinks = k1 k2

a1.sources.r1.type = spooldir
a1.sources.r1.spoolDir = {s1}
a1.sources.r1.channels = c1

a1.sources.r2.type = spooldir
a1.sources.r2.spoolDir = {s2}
a1.sources.r2.channels = c2
a1.sources.r2.fileHeader = true
a1.sources.r2.interceptors = i1 i2
a1.sources.r2.interceptors.i1.type = static
a1.sources.r2.interceptors.i1.key = key
a1.sources.r2.interceptors.i1.value = orders
a1.sources.r2.interceptors.i2.type = static
a1.sources.r2.interceptors.i2.key = env
a1.sources.r2.interceptors.i2.value = ${{sys:deploy.env}}

a1.channels.c1.type = memory
a1.channels.c1.capacity = 10000
a1.channels.c1.transactionCapacity = 1000
a1.channels.c2.type = memory

a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink
a1.sinks.k1.brokerList = {bootstrap}
a1.sinks.k1.topic = {t1}
a1.sinks.k1.requiredAcks = 1
a1.sinks.k1.channel = c1

a1.sinks.k2.type = org.apache.flume.sink.kafka.KafkaSink
a1.sinks.k2.kafka.bootstrap.servers = {bootstrap}
a1.sinks.k2.kafka.topic = {t2}
a1.sinks.k2.flumeBatchSize = 100
a1.sinks.k2.kafka.producer.linger.ms = 5
a1.sinks.k2.header.env = env
a1.sinks.k2.header.file = src
a1.sinks.k2.channel = c2
",
        s1 = spool1.display(),
        s2 = spool2.display(),
    )
}

fn lines(tag: &str) -> Vec<String> {
    (0..LINES).map(|i| format!("{tag} line {i:05}")).collect()
}

fn values(records: &[Record]) -> Vec<String> {
    records.iter().map(Record::value_str).collect()
}

#[test]
fn a_flume_properties_file_runs_unchanged_with_flumes_command_line() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let (spool1, spool2) = (dir.path().join("spool1"), dir.path().join("spool2"));
    fs::create_dir_all(&spool1).unwrap();
    fs::create_dir_all(&spool2).unwrap();
    let (t1, t2) = (topic_prefix("flume-keyless"), topic_prefix("flume-keyed"));
    broker.create_topic(&t1, 4);
    broker.create_topic(&t2, 4);
    let conf_dir = dir.path().join("conf");
    fs::create_dir_all(&conf_dir).unwrap();
    let conf = conf_dir.join("spooldir-kafka.properties");
    fs::write(
        &conf,
        properties(&spool1, &spool2, &broker.bootstrap(), &t1, &t2),
    )
    .unwrap();
    let http = free_port();
    let conf_arg = conf_dir.to_str().unwrap();
    let agent = Agent::start_file(
        dir.path(),
        "a1",
        &conf,
        &[
            "-c",
            conf_arg,
            "-Dflume.root.logger=INFO,console",
            "-Ddeploy.env=prod",
            "-Dflume.monitoring.type=http",
            &format!("-Dflume.monitoring.port={http}"),
            "--data-dir",
            dir.path().join("state").to_str().unwrap(),
        ],
    );
    let body = |tag: &str| lines(tag).join("\n") + "\n";
    drop_file(&spool1, "a.log", body("a").as_bytes());
    drop_file(&spool2, "b.log", body("b").as_bytes());
    agent.wait_for(Duration::from_secs(60), "both files completed", || {
        completed(&spool1) == 1 && completed(&spool2) == 1
    });
    assert!(
        dir.path().join("state/lock").exists(),
        "--data-dir holds the agent's state"
    );
    // Flume's monitoring port serves Sluice's metrics.
    assert!(
        http_get(http, "/metrics").is_some_and(|(_, b)| b.contains("sluice_source_events_total")),
        "-Dflume.monitoring.port serves /metrics"
    );

    let keyless = broker.consume_all(&t1, LINES, Duration::from_secs(60));
    let mut got = values(&keyless);
    got.sort();
    assert_eq!(got, lines("a"), "every line of a.log once");
    assert!(
        keyless.iter().all(|r| r.key.is_none()),
        "no key, as in Flume"
    );
    assert!(
        keyless.iter().all(|r| r.headers.is_empty()),
        "no headers Flume was not told to send"
    );

    let keyed = broker.consume_all(&t2, LINES, Duration::from_secs(60));
    let b_path = spool2.join("b.log").display().to_string();
    assert_eq!(values(&keyed), lines("b"), "in file order");
    let partitions: BTreeMap<i32, usize> = keyed.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.partition).or_default() += 1;
        m
    });
    assert_eq!(
        partitions.len(),
        1,
        "one key, one partition: {partitions:?}"
    );
    for r in &keyed {
        assert_eq!(r.key.as_deref(), Some(&b"orders"[..]));
        assert_eq!(
            r.headers,
            [
                ("env".to_owned(), b"prod".to_vec()),
                ("src".to_owned(), b_path.as_bytes().to_vec()),
            ],
            "Flume's file header (the path) sent as `src`"
        );
    }

    // What differs from Flume is said at start, by key; keys with no effect at info.
    let log = agent.stderr_text();
    for said in [
        "a1.sinks.k1.requiredAcks",
        "a1.sources.r1.deserializer.maxLineLength",
        "a1.channels.c1.transactionCapacity",
    ] {
        assert!(log.contains(said), "{said} in:\n{log}");
    }
    assert!(
        log.contains("no source of channel `c1` sets a `key` header") && log.contains(&t1),
        "the keyless sink's order warning:\n{log}"
    );
}

#[test]
fn flumes_command_line_errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("x.properties");
    fs::write(
        &conf,
        "a1.sources = r1\na1.channels = c1\na1.sinks = k1\n\
         a1.sources.r1.type = netcat\na1.sources.r1.channels = c1\n\
         a1.channels.c1.type = memory\na1.sinks.k1.type = logger\na1.sinks.k1.channel = c1\n",
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let (code, _, err) = sluice(&["agent", "-n", "a1", "-f", conf]);
    assert_eq!(code, 2);
    assert!(
        err.contains("a1.sources.r1.type: source type `netcat` is not supported"),
        "{err}"
    );
    let (code, _, err) = sluice(&["validate", "-f", conf, "-Dflume.root.logger=LOUD,console"]);
    assert_eq!(code, 2);
    assert!(err.contains("`LOUD` is not a level"), "{err}");
    let (code, _, err) = sluice(&["validate", "-f", conf, "-Djava.io.tmpdir=/x"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("-Djava.io.tmpdir: not a property Sluice reads"),
        "{err}"
    );
}

#[test]
fn the_seed_validates_and_converts_to_yaml_that_validates() {
    let seed = repo_root().join("conf/spooldir-kafka.properties");
    let seed = seed.to_str().unwrap();
    let (code, out, err) = sluice(&["validate", "-f", seed]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, yaml, err) = sluice(&["convert", "-f", seed, "-n", "a1"]);
    assert_eq!(code, 0, "{err}");
    assert!(yaml.contains("# a1.sources.r1.spoolDir"), "{yaml}");
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("converted.yaml");
    fs::write(&converted, &yaml).unwrap();
    let (code, out, err) = sluice(&["validate", "-f", converted.to_str().unwrap()]);
    assert_eq!(code, 0, "{yaml}\n{out}{err}");
}

#[test]
fn a_taildir_agent_switching_from_flume_resumes_where_flume_stopped() {
    use std::os::unix::fs::MetadataExt;
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let topic = topic_prefix("flume-taildir");
    broker.create_topic(&topic, 1);
    // Flume followed app.log up to line 600 and had not seen new.log.
    let app = logs.join("app.log");
    let all = lines("app");
    fs::write(&app, all.join("\n") + "\n").unwrap();
    let pos: usize = all[..600].iter().map(|l| l.len() + 1).sum();
    let flume_positions = dir.path().join("taildir_position.json");
    fs::write(
        &flume_positions,
        format!(
            r#"[{{"inode":{},"pos":{pos},"file":"{}"}}]"#,
            fs::metadata(&app).unwrap().ino(),
            app.display()
        ),
    )
    .unwrap();
    fs::write(logs.join("new.log"), "new one\nnew two\n").unwrap();
    let conf = dir.path().join("taildir.properties");
    fs::write(
        &conf,
        format!(
            "a1.sources = r1\na1.channels = c1\na1.sinks = k1\n\
             a1.sources.r1.type = TAILDIR\na1.sources.r1.channels = c1\n\
             a1.sources.r1.positionFile = {pf}\n\
             a1.sources.r1.filegroups = f1\na1.sources.r1.filegroups.f1 = {logs}/.*\\\\.log\n\
             a1.sources.r1.interceptors = k\na1.sources.r1.interceptors.k.type = static\n\
             a1.sources.r1.interceptors.k.value = all\n\
             a1.channels.c1.type = file\na1.channels.c1.dataDirs = {data}\n\
             a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink\n\
             a1.sinks.k1.kafka.bootstrap.servers = {b}\na1.sinks.k1.kafka.topic = {topic}\n\
             a1.sinks.k1.channel = c1\n",
            pf = flume_positions.display(),
            logs = logs.display(),
            data = dir.path().join("fc").display(),
            b = broker.bootstrap(),
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let mut agent = Agent::start_file(
        dir.path(),
        "a1",
        &conf,
        &["--data-dir", state.to_str().unwrap()],
    );
    let want = LINES - 600 + 2;
    let records = broker.consume_all(&topic, want, Duration::from_secs(60));
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(30)).success());
    let mut got = values(&records);
    got.sort();
    let mut expected: Vec<String> = all[600..].to_vec();
    expected.extend(["new one".to_owned(), "new two".to_owned()]);
    expected.sort();
    assert_eq!(
        got, expected,
        "app.log from where Flume stopped, new.log whole"
    );
    assert!(
        dir.path().join("taildir_position.json.sluice").exists(),
        "Sluice's own positions beside Flume's"
    );
    assert!(
        fs::read_to_string(&flume_positions)
            .unwrap()
            .contains("\"pos\""),
        "Flume's file left as it was"
    );
}

#[test]
fn a_changed_flume_file_is_applied_as_flume_does_and_a_bad_change_is_refused() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    fs::create_dir_all(&spool).unwrap();
    let topic = topic_prefix("flume-reload");
    broker.create_topic(&topic, 1);
    let http = free_port();
    let conf = dir.path().join("agent.properties");
    let text = |env: &str| {
        format!(
            "a1.sources = r1\na1.channels = c1\na1.sinks = k1\n\
             a1.sources.r1.type = spooldir\na1.sources.r1.spoolDir = {spool}\n\
             a1.sources.r1.channels = c1\na1.sources.r1.interceptors = i\n\
             a1.sources.r1.interceptors.i.type = static\na1.sources.r1.interceptors.i.key = env\n\
             a1.sources.r1.interceptors.i.value = {env}\n\
             a1.channels.c1.type = memory\n\
             a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink\n\
             a1.sinks.k1.kafka.bootstrap.servers = {b}\na1.sinks.k1.kafka.topic = {topic}\n\
             a1.sinks.k1.header.env = env\na1.sinks.k1.channel = c1\n",
            spool = spool.display(),
            b = broker.bootstrap(),
        )
    };
    fs::write(&conf, text("v1")).unwrap();
    let state = dir.path().join("state");
    let mut agent = Agent::start_file(
        dir.path(),
        "a1",
        &conf,
        &[
            "--data-dir",
            state.to_str().unwrap(),
            "-Dflume.monitoring.type=http",
            &format!("-Dflume.monitoring.port={http}"),
        ],
    );
    drop_file(&spool, "one.log", b"first\n");
    let reloads = |result: &str| {
        support::agent::metric(
            http,
            "sluice_config_reloads_total",
            &format!("result=\"{result}\""),
        )
    };
    agent.wait_for(Duration::from_secs(60), "one.log completed", || {
        completed(&spool) == 1
    });
    // Flume reloads a changed file without being asked; so does Sluice, for a Flume file.
    fs::write(&conf, text("v2")).unwrap();
    agent.wait_for(Duration::from_secs(60), "the change applied", || {
        reloads("applied") == Some(1)
    });
    drop_file(&spool, "two.log", b"second\n");
    // A change that breaks the file is refused; the running agent goes on.
    fs::write(
        &conf,
        text("v3").replace("type = spooldir", "type = netcat"),
    )
    .unwrap();
    agent.wait_for(Duration::from_secs(60), "the bad change refused", || {
        reloads("failed") == Some(1)
    });
    let records = broker.consume_all(&topic, 2, Duration::from_secs(60));
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(30)).success());
    let got: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|r| (r.value_str(), r.header("env").unwrap_or_default().to_vec()))
        .collect();
    assert_eq!(
        got,
        [
            ("first".to_owned(), b"v1".to_vec()),
            ("second".to_owned(), b"v2".to_vec())
        ]
    );
    assert!(
        agent.stderr_text().contains("a1.sources.r1.type"),
        "the refused change names the Flume key"
    );
}
