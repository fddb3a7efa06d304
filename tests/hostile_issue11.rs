//! What a hostile run against issue 11 (container log formats, interceptors with
//! `dropped_from`, multiline, the audit of processed events) found, on the binary of 8eba2ec.
//! Each test describes the expected behaviour and failed when it was written.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, drop_file, free_port, metric, sluice};
use support::kafka::KafkaBroker;
use support::rotation::stop;
use support::tail_topic::topic_prefix;

/// Runs `sluice audit --json` with `extra` flags; returns (exit code, report text).
fn audit_raw(broker: &KafkaBroker, topic: &str, extra: &[&str]) -> (i32, String) {
    let bootstrap = broker.bootstrap();
    let mut args = vec!["audit", "--brokers", &bootstrap, "--topic", topic];
    args.extend_from_slice(extra);
    let (code, out, err) = sluice(&args);
    (code, format!("{out}{err}"))
}

/// The offset the spooldir checkpoint (`DATA/sources/r1/spooldir.json`) records for the file
/// in progress, if any.
fn spool_offset(data: &Path) -> Option<u64> {
    let raw = fs::read(data.join("sources/r1/spooldir.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v["files"].as_array()?.first()?["offset"].as_u64()
}

/// docs/interceptors.md: "A `dropped_from` survives a restart of the agent: the dropped lines
/// hold the file's position until the next event", so `sluice audit` never takes lines a
/// `regex_filter` dropped for a gap.
///
/// It does not when the source's batch fills up right before the first event after dropped
/// lines: the packer (sources/src/pipeline/pack.rs, `push_line`) marks the full batch up to
/// that event's *offset*, past the dropped lines. Here Kafka is down, the first batch is safe
/// in a file channel and the second waits for room; a SIGTERM saves the checkpoint past the
/// dropped line, the restart reads the next event again without `dropped_from`, and
/// `sluice audit` reports the dropped line as lost.
#[test]
fn dropped_from_survives_a_restart_at_a_batch_boundary() {
    let broker = KafkaBroker::start();
    let tmp = tempfile::tempdir().unwrap();
    let (spool, data, originals) = (
        tmp.path().join("spool"),
        tmp.path().join("data"),
        tmp.path().join("originals"),
    );
    fs::create_dir_all(&spool).unwrap();
    fs::create_dir_all(&originals).unwrap();
    let topic = topic_prefix("h11-dropped-batch");
    broker.create_topic(&topic, 1);
    let config = |brokers: &str| {
        format!(
            r#"
a1:
  data_dir: {data}
  shutdown_timeout: 2s
  sources:
    r1:
      type: spooldir
      dir: {spool}
      channel: c1
      batch_size: 2
      ready_after: 100ms
      poll_interval: 100ms
      interceptors:
        - {{ type: regex_filter, regex: "^DEBUG ", exclude: true }}
  channels:
    c1: {{ type: file, dir: c1, capacity_events: 2, min_free_space: 0 }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {brokers}
      topic: {topic}
"#,
            data = data.display(),
            spool = spool.display(),
        )
    };
    // Kept lines 0 and 1 make the first batch; the DEBUG line is dropped; kept line 2 starts
    // the second batch and carries `dropped_from`.
    let text = "INFO zero\nINFO one\nDEBUG dropped\nINFO two\nINFO three\n";
    let dropped_at = text.find("DEBUG").unwrap() as u64;
    fs::write(originals.join("app.log"), text).unwrap();

    // Kafka unreachable: the first batch fills the file channel and is safe there; the
    // second waits for room. A SIGTERM then saves the checkpoint.
    let down = format!("127.0.0.1:{}", free_port());
    let mut agent = Agent::start(tmp.path(), "a1", &config(&down));
    drop_file(&spool, "app.log", text.as_bytes());
    agent.wait_for(Duration::from_secs(30), "the file channel full", || {
        agent.stderr_text().contains("channel full")
    });
    stop(&mut agent);
    let saved = spool_offset(&data).expect("a checkpoint of app.log");
    assert!(
        saved <= dropped_at,
        "the checkpoint ({saved}) passed the dropped line at {dropped_at} although no event \
         after it is safe: a restart cannot say that it was dropped"
    );

    let mut agent = Agent::start(tmp.path(), "a1", &config(&broker.bootstrap()));
    let records = broker.consume_all(&topic, 4, Duration::from_secs(60));
    stop(&mut agent);
    assert_eq!(records.len(), 4);
    let (code, report) = audit_raw(
        &broker,
        &topic,
        &["--expect", originals.to_str().unwrap(), "--no-duplicates"],
    );
    assert_eq!(
        code, 0,
        "the dropped DEBUG line taken for a loss:\n{report}"
    );
}

/// An agent with one spooldir source (its extra options as YAML lines indented for the
/// source), a memory channel and a Kafka sink to `topic` with the default headers.
fn spool_to_kafka(data: &Path, spool: &Path, extra: &str, brokers: &str, topic: &str) -> String {
    format!(
        r#"
a1:
  data_dir: {data}
  shutdown_timeout: 10s
  sources:
    r1:
      type: spooldir
      dir: {spool}
      channel: c1
      ready_after: 100ms
      poll_interval: 100ms
{extra}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {brokers}
      topic: {topic}
      headers: [path, offset, fid, offset_end, dropped_from, stream, time]
"#,
        data = data.display(),
        spool = spool.display(),
    )
}

/// docs/audit.md, "Processed events": a body rewritten by `search_replace` carries
/// `offset_end`, and "with `--expect`, a record with `offset_end` is not compared byte for
/// byte with the original (its body was changed on purpose)".
///
/// A rewrite that keeps the body's length (masking a card number with `XXXX-...`, the
/// classic use) gets no `offset_end` (`Line::set_end` only sets it when the length differs),
/// so `sluice audit --expect` reports every masked line as a mismatch and exits 1, while a
/// rewrite of another length of the same lines is clean.
#[test]
fn a_same_length_search_replace_is_no_mismatch_for_the_audit() {
    let broker = KafkaBroker::start();
    let tmp = tempfile::tempdir().unwrap();
    let (spool, data, originals) = (
        tmp.path().join("spool"),
        tmp.path().join("data"),
        tmp.path().join("originals"),
    );
    fs::create_dir_all(&spool).unwrap();
    fs::create_dir_all(&originals).unwrap();
    let topic = topic_prefix("h11-mask");
    broker.create_topic(&topic, 1);
    let extra = r#"      interceptors:
        - { type: search_replace, search: '\d{4}-\d{4}-\d{4}-\d{4}', replace: 'XXXX-XXXX-XXXX-XXXX' }"#;
    let cfg = spool_to_kafka(&data, &spool, extra, &broker.bootstrap(), &topic);
    let text: String = (0..20)
        .map(|i| format!("payment {i} card 4111-1111-1111-{i:04} accepted\n"))
        .collect();
    fs::write(originals.join("pay.log"), &text).unwrap();
    let mut agent = Agent::start(tmp.path(), "a1", &cfg);
    drop_file(&spool, "pay.log", text.as_bytes());
    let records = broker.consume_all(&topic, 20, Duration::from_secs(60));
    stop(&mut agent);
    assert_eq!(records.len(), 20);
    assert!(
        records
            .iter()
            .all(|r| r.value_str().contains("card XXXX-XXXX-XXXX-XXXX accepted")),
        "masked"
    );
    let (code, report) = audit_raw(
        &broker,
        &topic,
        &["--expect", originals.to_str().unwrap(), "--no-duplicates"],
    );
    assert_eq!(
        code, 0,
        "lines masked on purpose reported as changed:\n{report}"
    );
}

/// docs/container-logs.md: `docker_json` events are the entries' `log`, "unescaped", with
/// `stream` and `time` headers, and a line longer than `max_line_bytes` is "handed out as an
/// event of what was joined so far, and the rest makes the next event: nothing is lost".
///
/// An entry whose JSON line is longer than `max_line_bytes` is cut by the framer before the
/// format stage sees it, so none of its pieces parses: the application's line arrives as
/// pieces of the raw JSON (`{"log":"...` with its escapes and the runtime's fields), without
/// `stream` or `time`, counted in `sluice_source_unparsed_lines_total` and logged as "line not
/// in the source's format". The same happens to a CRI record longer than `max_line_bytes`
/// (its pieces after the first keep no `stream`). Docker and containerd cut at 16 KiB, so
/// any `max_line_bytes` below that (to fit a smaller Kafka `max_message_bytes`) meets it.
#[test]
fn a_docker_json_entry_longer_than_max_line_bytes_is_still_unescaped() {
    let broker = KafkaBroker::start();
    let tmp = tempfile::tempdir().unwrap();
    let (spool, data) = (tmp.path().join("spool"), tmp.path().join("data"));
    fs::create_dir_all(&spool).unwrap();
    let topic = topic_prefix("h11-docker-long");
    broker.create_topic(&topic, 1);
    let extra = "      format: docker_json\n      max_line_bytes: 4KiB";
    let cfg = spool_to_kafka(&data, &spool, extra, &broker.bootstrap(), &topic);
    // One application line of 10,000 bytes with quotes (escaped in the file), in one entry
    // (Docker cuts at 16 KiB), then a short line.
    let long: String = (0..1000).map(|i| format!("\"{:07}\"", i)).collect();
    let entries = [
        serde_json::json!({"log": format!("{long}\n"), "stream": "stderr", "time": "2026-12-01T10:00:00.1Z"}),
        serde_json::json!({"log": "short\n", "stream": "stdout", "time": "2026-12-01T10:00:00.2Z"}),
    ];
    let text: String = entries.iter().map(|e| format!("{e}\n")).collect();
    let mut agent = Agent::start(tmp.path(), "a1", &cfg);
    drop_file(&spool, "web-json.log", text.as_bytes());
    agent.wait_for(Duration::from_secs(30), "the file completed", || {
        spool.join("web-json.log.COMPLETED").exists()
    });
    stop(&mut agent);
    let records = broker.consume_all(&topic, 0, Duration::from_secs(30));
    let last = records.last().expect("records");
    assert_eq!(last.value_str(), "short");
    let pieces = &records[..records.len() - 1];
    let joined: String = pieces.iter().map(|r| r.value_str()).collect();
    assert!(
        joined == long,
        "the long line's pieces, joined, are not its text: {} records, the first begins {:?}",
        pieces.len(),
        &pieces[0].value_str()[..40]
    );
    for r in pieces {
        assert_eq!(
            r.header("stream"),
            Some(&b"stderr"[..]),
            "a piece without its stream"
        );
    }
    assert!(
        !agent.stderr_text().contains("not in the source's format"),
        "a piece of a long entry logged as a line not in the format"
    );
}

/// docs/interceptors.md: lines dropped are counted "per source and per interceptor":
/// `sluice_source_interceptor_dropped_events_total{source}` and
/// `sluice_interceptor_dropped_events_total{source,interceptor,type}`, counters.
///
/// A reload that restarts the source (here: its `poll_interval` changed, its interceptors
/// the same) keeps the per-source total but starts every per-interceptor counter again from
/// 0 (`Interceptors::compile` installs new ones), so that the per-interceptor series fall
/// back and no longer add up to the source's total.
#[test]
fn per_interceptor_drop_counters_survive_a_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let (logs, data) = (tmp.path().join("logs"), tmp.path().join("data"));
    fs::create_dir_all(&logs).unwrap();
    let http = free_port();
    let config = |poll: &str| {
        format!(
            r#"
a1:
  data_dir: {data}
  http: 127.0.0.1:{http}
  sources:
    r1:
      type: taildir
      paths: ["{logs}/*.log"]
      channel: c1
      poll_interval: {poll}
      interceptors:
        - {{ type: regex_filter, regex: "^DEBUG", exclude: true }}
        - {{ type: regex_filter, regex: "^TRACE", exclude: true }}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1: {{ type: console, channel: c1 }}
"#,
            data = data.display(),
            logs = logs.display(),
        )
    };
    let log = logs.join("app.log");
    let write = |text: &str| {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    let by = |i: &str| {
        metric(
            http,
            "sluice_interceptor_dropped_events_total",
            &format!("interceptor=\"{i}\""),
        )
    };
    let total = || {
        metric(
            http,
            "sluice_source_interceptor_dropped_events_total",
            "source=\"r1\"",
        )
    };
    let mut agent = Agent::start(tmp.path(), "a1", &config("100ms"));
    support::rotation::started(&agent);
    write("DEBUG a\nTRACE b\nTRACE c\nINFO d\n");
    agent.wait_for(Duration::from_secs(30), "3 drops counted", || {
        total() == Some(3)
    });
    assert_eq!((by("0"), by("1")), (Some(1), Some(2)));

    fs::write(tmp.path().join("agent.yaml"), config("200ms")).unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_for(Duration::from_secs(30), "the reload", || {
        agent.stderr_text().contains("configuration reloaded")
    });
    write("DEBUG e\nINFO f\n");
    agent.wait_for(Duration::from_secs(30), "4 drops counted", || {
        total() == Some(4)
    });
    assert_eq!(
        (by("0"), by("1")),
        (Some(2), Some(2)),
        "the per-interceptor counters went back after the reload while the source's total \
         went on"
    );
    stop(&mut agent);
}

/// README: at shutdown "What was not delivered by then is read again from the checkpoint
/// after a restart" — for a memory channel. A file channel keeps what it holds over a restart
/// (docs/file-channel.md) and its sources' checkpoints have moved past it, so nothing of it is
/// read again. The last warning of a SIGTERM with Kafka down says otherwise for both:
/// "events left undelivered; their sources read them again after a restart", which sends an
/// operator of a file channel looking for lines that will never be read again.
#[test]
fn the_shutdown_warning_about_a_file_channel_says_it_keeps_its_events() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, data) = (tmp.path().join("spool"), tmp.path().join("data"));
    fs::create_dir_all(&spool).unwrap();
    let down = format!("127.0.0.1:{}", free_port());
    let cfg = format!(
        r#"
a1:
  data_dir: {data}
  shutdown_timeout: 1s
  sources:
    r1: {{ type: spooldir, dir: {spool}, channel: c1, ready_after: 100ms, poll_interval: 100ms }}
  channels:
    c1: {{ type: file, dir: c1, min_free_space: 0 }}
  sinks:
    k1: {{ type: kafka, channel: c1, brokers: "{down}", topic: t }}
"#,
        data = data.display(),
        spool = spool.display(),
    );
    let mut agent = Agent::start(tmp.path(), "a1", &cfg);
    drop_file(&spool, "a.log", b"one\ntwo\nthree\n");
    agent.wait_for(Duration::from_secs(30), "the file completed", || {
        spool.join("a.log.COMPLETED").exists()
    });
    stop(&mut agent);
    let log = agent.stderr_text();
    let last = log
        .lines()
        .find(|l| l.contains("events left undelivered"))
        .expect("a warning about the events left");
    assert!(
        !last.contains("sources read them again"),
        "the file is completed and will not be read again, the channel keeps its lines: {last}"
    );
}

/// docs/taildir.md: the `path` header is "the path the file was matched under — kept for the
/// file's whole life, also after it was rotated away, so all its lines share one stream key
/// and Kafka partition"; the DaemonSet keys records by `%{node}:%{path}` for "one file, one
/// partition, in order".
///
/// Not across a restart: a CRI log rotated kubelet's way (`0.log` renamed `0.log.DATE`) while
/// the agent is down is found again by its position under the new name (the second glob),
/// and its remaining lines get the new name as `path`, so another key and, in a topic of
/// several partitions, another partition than its first lines: Kafka no longer keeps the
/// file's lines in order, and `sluice audit` reports the file split across partitions.
#[test]
fn a_file_rotated_while_the_agent_is_down_keeps_its_path_and_partition() {
    use std::io::Write;
    let broker = KafkaBroker::start();
    let tmp = tempfile::tempdir().unwrap();
    let pod = tmp.path().join("pods/default_web_0c1e/web");
    fs::create_dir_all(&pod).unwrap();
    let live = pod.join("0.log");
    let positions = tmp.path().join("data/sources/r1/positions.json");
    let topic = topic_prefix("h11-rotated-down");
    broker.create_topic(&topic, 8);
    let cfg = format!(
        r#"
a1:
  data_dir: {dir}/data
  shutdown_timeout: 10s
  sources:
    r1:
      type: taildir
      format: cri
      channel: c1
      paths: ["{dir}/pods/*/*/*.log", "{dir}/pods/*/*/*.log.2*[0-9]"]
      poll_interval: 50ms
  channels:
    c1: {{ type: memory }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {brokers}
      topic: "{topic}"
      key: "%{{file}}"
"#,
        dir = tmp.path().display(),
        brokers = broker.bootstrap(),
    );
    // The key is the base name here, so that the partitions are known: the two names go to
    // two partitions.
    let rotated = "0.log.20261201-100000";
    assert_ne!(
        support::kafka::murmur2_partition(b"0.log", 8),
        support::kafka::murmur2_partition(rotated.as_bytes(), 8)
    );
    let record = |i: usize| format!("2026-12-01T10:00:00.{i:09}Z stdout F line {i:04}\n");
    let write = |from: usize, to: usize| {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&live)
            .unwrap();
        let text: String = (from..to).map(record).collect();
        f.write_all(text.as_bytes()).unwrap();
    };
    let mut agent = Agent::start(tmp.path(), "a1", &cfg);
    support::rotation::started(&agent);
    write(0, 100);
    let size = fs::metadata(&live).unwrap().len();
    agent.wait_for(Duration::from_secs(60), "the first lines safe", || {
        support::tail_topic::saved_offset(&positions, &live) == Some(size)
    });
    agent.kill();
    // While the agent is down: more lines, then kubelet's rotation and a new 0.log.
    write(100, 200);
    fs::rename(&live, pod.join(rotated)).unwrap();
    write(1000, 1010);
    let mut agent = Agent::start(tmp.path(), "a1", &cfg);
    let records = broker.consume_all(&topic, 210, Duration::from_secs(60));
    stop(&mut agent);
    assert_eq!(records.len(), 210);
    let first_file = |r: &&support::kafka::Record| {
        r.value_str()
            .strip_prefix("line ")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < 200)
    };
    let paths: std::collections::BTreeSet<String> = records
        .iter()
        .filter(first_file)
        .map(|r| String::from_utf8_lossy(r.header("path").unwrap()).into_owned())
        .collect();
    let partitions: std::collections::BTreeSet<i32> = records
        .iter()
        .filter(first_file)
        .map(|r| r.partition)
        .collect();
    assert_eq!(
        partitions.len(),
        1,
        "the first file's lines in partitions {partitions:?}: its name changed with the restart"
    );
    assert_eq!(paths.len(), 1, "one file, two `path` headers: {paths:?}");
    let (code, report) = audit_raw(&broker, &topic, &[]);
    assert_eq!(code, 0, "{report}");
}
