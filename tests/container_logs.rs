//! End-to-end: container logs as kubelet writes them under `/var/log/pods` (the CRI format,
//! long lines cut into `P` fragments ended by an `F` one, each fragment its own write), read
//! by a taildir source with `format: cri` into a real Kafka broker, while the log is rotated
//! kubelet's way (renamed `0.log.<time>`, a new `0.log` created), once while the agent is
//! down after a SIGKILL between the fragments of a line. Read back: one record per application line,
//! whole, in order, with its stream and time headers; a line not in the format passed through
//! and counted; `sluice audit` finds the topic clean although every body is shorter than the
//! file's line (it reads `offset_end`). A second test ships Docker `json-file` logs through a
//! spooling directory with a `regex_filter`, and audits them against the originals.

mod support;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, free_port, metric, wait_until};
use support::kafka::{KafkaBroker, Record};
use support::rotation::{append, started, stop};
use support::tail_topic::{DELIVERY, audit, read_until, saved_offset, topic_prefix};

/// Application lines written.
const LINES: usize = 2400;
/// Lines between two rotations.
const ROTATE_EVERY: usize = 600;
/// The most bytes of a message per CRI record: longer lines are cut into fragments.
const FRAGMENT: usize = 2000;

/// Application line `i` (no terminator): every seventh is long enough to be cut in fragments.
fn message(i: usize) -> String {
    if i % 7 == 3 {
        format!("line {i:06} long {}", "x".repeat(4500 + i % 100))
    } else {
        format!("line {i:06} GET /api/items?id={i} 200 12ms")
    }
}

fn stream(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "stdout"
    } else {
        "stderr"
    }
}

fn time(i: usize) -> String {
    format!("2026-12-01T10:00:00.{i:09}Z")
}

/// The CRI records of line `i`, each with its `\n`.
fn cri_records(i: usize) -> Vec<String> {
    let m = message(i);
    let pieces: Vec<&str> = m
        .as_bytes()
        .chunks(FRAGMENT)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let tag = if n == last { "F" } else { "P" };
            format!("{} {} {tag} {p}\n", time(i), stream(i))
        })
        .collect()
}

/// Which line a record is: the number after `line `.
fn number(body: &str) -> Option<usize> {
    body.strip_prefix("line ")?.get(..6)?.parse().ok()
}

fn header(r: &Record, name: &str) -> String {
    String::from_utf8_lossy(r.header(name).unwrap_or_else(|| panic!("no {name} header")))
        .into_owned()
}

fn cri_config(dir: &Path, bootstrap: &str, topic: &str, http: u16) -> String {
    format!(
        r#"
a1:
  data_dir: {dir}/data
  http: 127.0.0.1:{http}
  shutdown_timeout: 20s
  sources:
    r1:
      type: taildir
      channel: c1
      format: cri
      paths: ["{dir}/pods/*/*/*.log", "{dir}/pods/*/*/*.log.2*[0-9]"]
      poll_interval: 50ms
  channels:
    c1: {{ type: memory, capacity: 20000 }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {bootstrap}
      topic: "{topic}"
      key: "%{{path}}"
      headers: [path, offset, fid, offset_end, dropped_from, stream, time]
"#,
        dir = dir.display()
    )
}

/// Writes lines `from..to` to the container log `live`, each CRI record its own write, and
/// rotates it kubelet's way before every `ROTATE_EVERY`th line.
fn write_lines(live: &Path, from: usize, to: usize) {
    let mut f = append(live);
    for i in from..to {
        if i > 0 && i % ROTATE_EVERY == 0 {
            let rotated = live.with_file_name(format!("0.log.20261201-10{i:04}"));
            fs::rename(live, rotated).unwrap();
            f = append(live);
        }
        for r in cri_records(i) {
            f.write_all(r.as_bytes()).unwrap();
            f.flush().unwrap();
        }
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The log is written up to the first fragment of a long line; once the position is saved
/// right before it (the fragment holds it), the agent is SIGKILLed, the line's other
/// fragments and more lines are written while it is down, with a rotation, and the rest of the
/// log (with two more rotations and a line that is not CRI) after it restarted.
#[test]
fn cri_logs_arrive_line_by_line_across_rotation_and_a_sigkill_between_fragments() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pods/default_web-7d9f_0c1e/web");
    fs::create_dir_all(&pod).unwrap();
    let live = pod.join("0.log");
    fs::write(&live, "").unwrap();
    let positions = dir.path().join("data/sources/r1/positions.json");
    let topic = topic_prefix("cri");
    broker.create_topic(&topic, 1);
    let http = free_port();
    let cfg = cri_config(dir.path(), &broker.bootstrap(), &topic, http);

    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    // Line `cut` is long; the kill comes after its first fragment.
    let cut = 300 / 7 * 7 + 3;
    write_lines(&live, 0, cut);
    let cut_at = fs::metadata(&live).unwrap().len();
    let parts = cri_records(cut);
    assert!(parts.len() > 1);
    let mut f = append(&live);
    f.write_all(parts[0].as_bytes()).unwrap();
    f.flush().unwrap();
    wait_until(
        Duration::from_secs(30),
        "the position saved up to the cut line",
        // Past it only if the fragment was handed out alone already (see below).
        || saved_offset(&positions, &live).is_some_and(|o| o >= cut_at),
    );
    agent.kill();
    // Under load the kill may come more than PARTIAL_WAIT after the fragment was read: the
    // agent then hands it out alone (documented) and, once that is safe, its position moves
    // past it: the line arrives in two records. Otherwise the position held at the line's
    // start makes the restart read it again whole.
    let cut_split = saved_offset(&positions, &live) != Some(cut_at);
    for p in &parts[1..] {
        f.write_all(p.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    write_lines(&live, cut + 1, LINES / 2);
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    append(&live)
        .write_all(b"kubelet wrote this? not a CRI line\n")
        .unwrap();
    write_lines(&live, LINES / 2, LINES);

    // The kill may have left repeats: read until every line arrived.
    let records = read_until(&broker, &topic, |records| {
        let lines: HashSet<usize> = records
            .iter()
            .filter_map(|r| number(&r.value_str()))
            .collect();
        lines.len() == LINES && records.len() > LINES
    });
    let unparsed = || metric(http, "sluice_source_unparsed_lines_total", "source=\"r1\"");
    agent.wait_for(Duration::from_secs(10), "the unparsed line counted", || {
        unparsed() == Some(1)
    });
    stop(&mut agent);
    assert!(
        !agent.stderr_text().contains("ERROR"),
        "{}",
        agent.stderr_text()
    );
    assert!(
        agent
            .stderr_text()
            .contains("line not in the source's format"),
        "the unparsed line is logged"
    );

    // Lines of one file arrive in order; a rotated file and its successor are two files
    // (two `fid`s), which the restart may read side by side.
    let mut last_of: HashMap<String, usize> = HashMap::new();
    let mut seen = HashSet::new();
    let mut garbage = 0;
    for r in &records {
        let body = r.value_str();
        if body.len() < message(cut).len() && message(cut).contains(&*body) {
            // A fragment handed out alone before the kill.
            if cut_split {
                seen.insert(cut);
            }
            continue;
        }
        let Some(i) = number(&body) else {
            assert_eq!(
                body, "kubelet wrote this? not a CRI line",
                "a line cut in two"
            );
            assert!(r.header("stream").is_none());
            garbage += 1;
            continue;
        };
        assert_eq!(body, message(i), "line {i} not whole");
        assert_eq!(header(r, "stream"), stream(i), "line {i}");
        assert_eq!(header(r, "time"), time(i), "line {i}");
        if seen.insert(i) {
            let before = last_of.insert(header(r, "fid"), i);
            assert!(
                before.is_none_or(|b| b < i),
                "line {i} after line {before:?} of its file"
            );
        }
    }
    assert_eq!(seen.len(), LINES, "lines missing");
    assert_eq!(garbage, 1);
    let report = audit(&broker, &topic, &[]);
    assert_eq!(report["summary"]["records"], records.len(), "{report}");
}

/// A Docker `json-file` log: line `i`, escaped, cut into entries of at most `FRAGMENT`
/// bytes of message (the driver cuts at 16 KiB), every third line at DEBUG level.
fn docker_entries(i: usize) -> String {
    let level = if i.is_multiple_of(3) { "DEBUG" } else { "INFO" };
    let m = format!("{level} \"q\" {}\n", message(i));
    let mut out = String::new();
    for piece in m.as_bytes().chunks(FRAGMENT) {
        let piece = std::str::from_utf8(piece).unwrap();
        let entry = serde_json::json!({"log": piece, "stream": stream(i), "time": time(i)});
        out.push_str(&format!("{entry}\n"));
    }
    out
}

/// Docker `json-file` logs dropped into a spooling directory, with a `regex_filter` dropping
/// DEBUG lines: the topic holds every other line whole and unescaped, in order, and `sluice
/// audit --expect` over the originals finds it clean: joined and unescaped bodies are checked
/// by `offset_end`, dropped lines covered by `dropped_from`.
#[test]
fn docker_json_logs_are_unescaped_joined_filtered_and_audited_against_the_originals() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let originals = dir.path().join("originals");
    fs::create_dir_all(&spool).unwrap();
    fs::create_dir_all(&originals).unwrap();
    let topic = topic_prefix("docker");
    broker.create_topic(&topic, 1);
    let cfg = format!(
        r#"
a1:
  data_dir: {dir}/data
  sources:
    r1:
      type: spooldir
      channel: c1
      dir: {spool}
      format: docker_json
      ready_after: 200ms
      poll_interval: 100ms
      interceptors:
        - {{ type: regex_filter, regex: "^DEBUG ", exclude: true }}
  channels:
    c1: {{ type: memory, capacity: 20000 }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {bootstrap}
      topic: "{topic}"
      headers: [path, offset, offset_end, dropped_from, stream]
"#,
        dir = dir.path().display(),
        spool = spool.display(),
        bootstrap = broker.bootstrap(),
    );
    let files = ["web-1-json.log", "web-2-json.log"];
    let per_file = 600;
    for (n, name) in files.iter().enumerate() {
        let text: String = (n * per_file..(n + 1) * per_file)
            .map(docker_entries)
            .collect();
        fs::write(originals.join(name), &text).unwrap();
        fs::write(spool.join(name), &text).unwrap();
    }
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    let want: Vec<usize> = (0..files.len() * per_file).filter(|i| i % 3 != 0).collect();
    let records = broker.consume_all(&topic, want.len(), DELIVERY);
    stop(&mut agent);

    let got: Vec<usize> = records
        .iter()
        .map(|r| {
            let body = r.value_str();
            let rest = body
                .strip_prefix("INFO \"q\" ")
                .expect("an INFO line, unescaped");
            let i = number(rest).expect("a whole line");
            assert_eq!(rest, message(i), "line {i} not whole");
            assert_eq!(header(r, "stream"), stream(i));
            i
        })
        .collect();
    assert_eq!(got, want, "every INFO line, once, in order");
    let report = audit(
        &broker,
        &topic,
        &["--expect", originals.to_str().unwrap(), "--no-duplicates"],
    );
    assert_eq!(report["summary"]["records"], want.len(), "{report}");
}
