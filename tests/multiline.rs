//! End-to-end: a Java application log with stack traces, appended event by event (often
//! cut between the lines of one event), followed by the taildir source with
//! `multiline.start` on the timestamp, into a real Kafka broker, while the agent is
//! SIGKILLed in the middle of a stack trace and restarted while the log grows. Read back with the harness's consumer: one record per
//! log event, its stack trace whole, in order, none missing; a repeat is allowed only as an
//! at-least-once redelivery after the kill.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, wait_until};
use support::kafka::KafkaBroker;
use support::rotation::{append, started, stop};
use support::tail_topic::{DELIVERY, audit, kafka_sink, saved_offset, topic_prefix};

/// Events in the log.
const EVENTS: usize = 3000;

/// Event `i` of the log: a timestamped line, and for every seventh event an exception with
/// its stack trace and cause. Ends with `\n`.
fn event(i: usize) -> String {
    let (s, ms) = (i / 1000, i % 1000);
    let mut e =
        format!("2026-12-01 10:00:{s:02}.{ms:03} INFO  [main] com.x.Service - request {i} done\n");
    if i % 7 == 3 {
        e = format!(
            "2026-12-01 10:00:{s:02}.{ms:03} ERROR [worker-{i}] com.x.Service - request {i} failed\n\
             Exception in thread \"worker-{i}\" java.lang.IllegalStateException: boom {i}\n\
             \tat com.x.Y.z(Y.java:12)\n\
             \tat com.x.Service.handle(Service.java:{})\n\
             \tat java.base/java.lang.Thread.run(Thread.java:1583)\n\
             Caused by: java.io.IOException: disk full at request {i}\n\
             \tat com.x.Io.write(Io.java:40)\n\
             \t... 3 more\n",
            100 + i % 50
        );
    }
    e
}

/// Which event a record is: the number after `request ` in its first line.
fn number(body: &str) -> Option<usize> {
    let first = body.lines().next()?;
    let at = first.find("request ")? + "request ".len();
    first[at..].split(' ').next()?.parse().ok()
}

fn config(dir: &Path, log: &Path, bootstrap: &str, topic: &str) -> String {
    format!(
        r#"
a1:
  data_dir: {dir}/data
  shutdown_timeout: 20s
  sources:
    r1:
      type: taildir
      channel: c1
      paths: ["{log}"]
      poll_interval: 50ms
      multiline:
        start: '^\d{{4}}-\d{{2}}-\d{{2}}'
        timeout: 10s
  channels:
    c1: {{ type: memory, capacity: 20000 }}
{sinks}"#,
        dir = dir.display(),
        log = log.display(),
        sinks = kafka_sink(bootstrap, topic),
    )
}

/// Appends events `from..to`, each error event in two writes cut inside its stack trace, a
/// few events at a time.
fn write_events(f: &mut std::fs::File, from: usize, to: usize) {
    for i in from..to {
        let e = event(i);
        if let Some(cut) = e.find("\tat com.x.Service") {
            f.write_all(&e.as_bytes()[..cut]).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
            f.write_all(&e.as_bytes()[cut..]).unwrap();
        } else {
            f.write_all(e.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
}

/// The log is written up to the middle of an error event's stack trace; once the agent has
/// saved its position, it is SIGKILLed (well within `timeout`, so the half event is still
/// held), the rest of the log is appended while it is down and after it restarted. The
/// position must have stopped at the half event's first line, so that it comes out whole;
/// the last event of the log comes out by `timeout`, with no line after it.
#[test]
fn java_stack_traces_arrive_whole_in_order_across_a_sigkill_mid_event() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let positions = dir.path().join("data/sources/r1/positions.json");
    let topic = format!("{}-java", topic_prefix("multiline"));
    broker.create_topic(&topic, 1);
    let cfg = config(dir.path(), &log, &broker.bootstrap(), &topic);

    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    // Event `cut` is an error event; the kill comes after the first half of its lines.
    let cut = (EVENTS / 3) / 7 * 7 + 3;
    let cut_at: usize = (0..cut).map(|i| event(i).len()).sum();
    let e = event(cut);
    let half = e.find("\tat com.x.Service").unwrap();
    let mut f = append(&log);
    write_events(&mut f, 0, cut);
    f.write_all(&e.as_bytes()[..half]).unwrap();
    f.flush().unwrap();
    wait_until(
        Duration::from_secs(8),
        "the position saved up to the half event",
        || saved_offset(&positions, &log).is_some_and(|o| o >= cut_at as u64),
    );
    agent.kill();
    let writer = std::thread::spawn(move || {
        f.write_all(&e.as_bytes()[half..]).unwrap();
        write_events(&mut f, cut + 1, EVENTS);
    });
    agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    writer.join().unwrap();

    let records = broker.consume_all(&topic, EVENTS, DELIVERY);
    stop(&mut agent);
    assert!(
        !agent.stderr_text().contains("ERROR"),
        "{}",
        agent.stderr_text()
    );

    let mut next = 0;
    let mut seen = HashSet::new();
    for r in &records {
        let body = String::from_utf8(r.value.clone()).unwrap();
        let Some(i) = number(&body) else {
            panic!("record {body:?} is a piece of an event cut in two");
        };
        assert_eq!(format!("{body}\n"), event(i), "event {i} not whole");
        if seen.insert(i) {
            assert_eq!(i, next, "event {i} out of order (expected {next})");
            next += 1;
        }
    }
    assert_eq!(
        next,
        EVENTS,
        "events missing: {} of {EVENTS} arrived",
        seen.len()
    );
    // `sluice audit` checks the offsets (a joined body ends one byte before the next event)
    // and, against the file, that each joined body is the file's bytes.
    let original = dir.path().join("original");
    std::fs::create_dir_all(&original).unwrap();
    std::fs::copy(&log, original.join("app.log")).unwrap();
    let report = audit(&broker, &topic, &["--expect", original.to_str().unwrap()]);
    assert_eq!(report["summary"]["records"], records.len(), "{report}");
    eprintln!("{} records for {EVENTS} events: {report}", records.len());
}
