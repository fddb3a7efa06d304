//! What a hostile run against issue 11 (container log formats, interceptors with
//! `dropped_from`, multiline, the audit of processed events) found, on the binary of 8eba2ec.
//! Each test describes the expected behaviour and failed when it was written.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, drop_file, free_port, sluice};
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
