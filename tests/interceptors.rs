//! End-to-end: a taildir source with interceptors (`regex_filter` dropping DEBUG lines,
//! `static`, `regex_extractor`) → a memory channel → the Kafka sink, into a real broker, with
//! a file whose every line is filtered and a SIGKILL and restart between two rounds of
//! writing: the topic holds exactly the lines not filtered, in order, with their headers; the
//! filtered file's position waits at its first dropped line for the next event, so that the
//! restart drops them again and that event still says where they began; and `sluice audit`
//! finds the topic clean against the files, the dropped lines not taken for a gap.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, free_port, metric};
use support::kafka::{KafkaBroker, Record};
use support::rotation::started;
use support::tail_topic::{audit, read_until, saved_offset, topic_prefix};

fn config(dir: &Path, bootstrap: &str, topic: &str, http: u16) -> String {
    format!(
        r#"
a1:
  data_dir: {dir}/data
  http: 127.0.0.1:{http}
  sources:
    r1:
      type: taildir
      channel: c1
      paths: ["{dir}/logs/*.log"]
      poll_interval: 100ms
      interceptors:
        - {{ type: regex_filter, regex: "^DEBUG ", exclude: true }}
        - {{ type: static, key: env, value: prod }}
        - {{ type: regex_extractor, regex: "^(?P<level>[A-Z]+) " }}
        - {{ type: uuid }}
  channels:
    c1: {{ type: memory, capacity: 10000 }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {bootstrap}
      topic: "{topic}"
      key: "%{{path}}"
      headers: [env, level, id, path, offset, dropped_from]
"#,
        dir = dir.display()
    )
}

/// Line `i` of the application log: every third line is DEBUG, the others INFO or ERROR.
fn app_line(i: u64) -> String {
    let level = match i % 3 {
        0 => "DEBUG",
        1 => "INFO",
        _ => "ERROR",
    };
    format!("{level} app line {i:06}\n")
}

/// Appends lines `from..to` of the application log; returns each line with its offset.
fn append(path: &Path, lines: impl Iterator<Item = String>) -> Vec<(u64, String)> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut at = f.metadata().unwrap().len();
    let mut out = Vec::new();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
        out.push((at, l));
        at += out.last().unwrap().1.len() as u64;
    }
    out
}

/// The lines a round should deliver: those not DEBUG, with their offsets.
fn kept(written: &[(u64, String)]) -> Vec<(u64, String)> {
    written
        .iter()
        .filter(|(_, l)| !l.starts_with("DEBUG "))
        .cloned()
        .collect()
}

fn header(r: &Record, name: &str) -> String {
    String::from_utf8_lossy(r.header(name).unwrap_or_else(|| panic!("no {name} header")))
        .into_owned()
}

#[test]
fn filtered_lines_are_dropped_headers_set_and_nothing_is_read_again_after_a_sigkill() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let topic = topic_prefix("interceptors");
    broker.create_topic(&topic, 1);
    let http = free_port();
    let cfg = config(dir.path(), &broker.bootstrap(), &topic, http);
    let app = logs.join("app.log");
    let debug = logs.join("debug.log");
    let positions = dir.path().join("data/sources/r1/positions.json");

    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    let mut expected = kept(&append(&app, (0..3000).map(app_line)));
    let debug_size = append(
        &debug,
        (0..2000).map(|i| format!("DEBUG only noise {i:06}\n")),
    )
    .iter()
    .map(|(_, l)| l.len() as u64)
    .sum::<u64>();
    let app_size = fs::metadata(&app).unwrap().len();
    let dropped = || {
        metric(
            http,
            "sluice_source_interceptor_dropped_events_total",
            "source=\"r1\"",
        )
    };
    // Every line of both files read; the application log's position at its end, the
    // all-DEBUG file's still at its start: its dropped lines wait for an event after them.
    agent.wait_for(
        Duration::from_secs(90),
        "every line read and app.log safe",
        || dropped() == Some(1000 + 2000) && saved_offset(&positions, &app) == Some(app_size),
    );
    assert_eq!(
        saved_offset(&positions, &debug),
        Some(0),
        "dropped lines held"
    );
    assert!(debug_size > 0);
    agent.kill();

    // After the restart the all-DEBUG file gets one more DEBUG line and one INFO line, and the
    // application log its second half.
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    let tail = append(
        &debug,
        ["DEBUG more\n".to_string(), "INFO the end\n".to_string()].into_iter(),
    );
    expected.extend(kept(&append(&app, (3000..6000).map(app_line))));
    let records = read_until(&broker, &topic, |r| r.len() > expected.len());
    agent.wait_for(Duration::from_secs(30), "the end of debug.log safe", || {
        saved_offset(&positions, &debug) == Some(debug_size + 24)
    });
    // Since the restart: the second half's DEBUG lines, and debug.log's 2,000 read again
    // and its new one; app.log's first half was not read again.
    agent.wait_for(Duration::from_secs(30), "the drops counted", || {
        dropped() == Some(1000 + 2001)
    });
    assert_eq!(
        metric(
            http,
            "sluice_interceptor_dropped_events_total",
            "source=\"r1\",interceptor=\"0\",type=\"regex_filter\""
        ),
        Some(1000 + 2001),
        "counted against the regex_filter, first in the list"
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(30)).success());

    let app_records: Vec<&Record> = records
        .iter()
        .filter(|r| header(r, "path") == app.to_str().unwrap())
        .collect();
    let got: Vec<(u64, String)> = app_records
        .iter()
        .map(|r| {
            (
                header(r, "offset").parse().unwrap(),
                format!("{}\n", r.value_str()),
            )
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "app.log lines delivered");
    assert!(
        got == expected,
        "app.log lines differ from the non-DEBUG lines in order"
    );
    for r in &app_records {
        assert_eq!(header(r, "env"), "prod");
        let level = r.value_str().split(' ').next().unwrap().to_string();
        assert_eq!(header(r, "level"), level);
    }
    let debug_records: Vec<&Record> = records
        .iter()
        .filter(|r| header(r, "path") == debug.to_str().unwrap())
        .collect();
    assert_eq!(debug_records.len(), 1, "only debug.log's INFO line");
    assert_eq!(debug_records[0].value_str(), "INFO the end");
    assert_eq!(header(debug_records[0], "offset"), tail[1].0.to_string());
    assert_eq!(header(debug_records[0], "level"), "INFO");
    assert_eq!(header(debug_records[0], "dropped_from"), "0");
    assert_eq!(records.len(), expected.len() + 1, "nothing more");
    let ids: std::collections::HashSet<String> = records.iter().map(|r| header(r, "id")).collect();
    assert_eq!(ids.len(), records.len(), "every event its own id");
    assert!(ids.iter().all(|id| id.len() == 36), "UUIDs");
    // The audit reads `dropped_from`: the filtered lines are no gap, against the files too.
    let logs = logs.to_str().unwrap();
    let report = audit(&broker, &topic, &["--expect", logs]);
    assert_eq!(report["summary"]["records"], records.len(), "{report}");
}
