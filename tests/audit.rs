//! End-to-end checks of `sluice audit` against a real Kafka broker: topics made clean and made
//! wrong on purpose (a line missing, duplicated, swapped, changed, split across partitions),
//! written with kcat as an independent producer, audited by the real `sluice` binary.
//!
//! kcat's `-H` sets headers for every message of one run, so each record is one kcat run with
//! its body in a file (kcat skips empty messages, so these topics hold no empty lines; the unit
//! tests of the checker cover those).

mod support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::agent::{Agent, completed, sluice, wait_until};
use support::kafka::KafkaBroker;

/// `a.log`: five LF-terminated lines; alpha 0, bravo 6, charlie 12, delta 20, echo 26.
const A: &[u8] = b"alpha\nbravo\ncharlie\ndelta\necho\n";
/// `b.log`: CRLF lines, invalid UTF-8, an unterminated last line.
const B: &[u8] = b"one\r\n\xff\xfe two\r\nthree";

/// The lines of `content` as (offset, body): split at `\n`, a `\r` before it dropped.
fn lines(content: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    for raw in content.split_inclusive(|&b| b == b'\n') {
        let body = match raw.strip_suffix(b"\n") {
            Some(b) => b.strip_suffix(b"\r").unwrap_or(b),
            None => raw,
        };
        out.push((at, body.to_vec()));
        at += raw.len() as u64;
    }
    out
}

/// Writes records with kcat.
struct Producer {
    bootstrap: String,
    scratch: tempfile::TempDir,
}

impl Producer {
    /// Produces one record to `topic`/`partition` with `headers` and value `body`.
    fn raw(&self, topic: &str, partition: i32, headers: &[String], body: &[u8]) {
        let file = self.scratch.path().join("value");
        fs::write(&file, body).unwrap();
        let mut cmd = Command::new("kcat");
        cmd.args([
            "-P",
            "-b",
            &self.bootstrap,
            "-t",
            topic,
            "-p",
            &partition.to_string(),
        ]);
        cmd.args(["-k", "key"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let out = cmd
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .expect("run kcat");
        assert!(
            out.status.success(),
            "kcat -P failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces `records` of the file at `path` to `topic`/`partition`, in the given order.
    fn file(&self, topic: &str, partition: i32, path: &str, records: &[(u64, Vec<u8>)]) {
        for (offset, body) in records {
            let headers = [format!("path={path}"), format!("offset={offset}")];
            self.raw(topic, partition, &headers, body);
        }
    }
}

/// A topic name not used before, even on a shared external broker.
fn topic(broker: &KafkaBroker, name: &str, partitions: i32) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let t = format!("audit-{name}-{}-{nanos}", std::process::id());
    broker.create_topic(&t, partitions);
    t
}

/// Runs `sluice audit` on `topic` with `extra` arguments; returns (exit code, stdout).
fn audit(bootstrap: &str, topic: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "audit",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--timeout",
        "30s",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = sluice(&args);
    assert!(
        code == 0 || code == 1,
        "audit could not run ({code}):\n{out}{err}"
    );
    (code, out)
}

fn assert_has(out: &str, fragment: &str) {
    assert!(
        out.contains(fragment),
        "expected {fragment:?} in the report:\n{out}"
    );
}

/// A folder of originals named `names` with `contents`.
fn originals(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn audit_tells_clean_topics_from_broken_ones() {
    let broker = KafkaBroker::start();
    let bs = broker.bootstrap();
    let kcat = Producer {
        bootstrap: bs.clone(),
        scratch: tempfile::tempdir().unwrap(),
    };
    let a = lines(A);
    let both = originals(&[("a.log.COMPLETED", A), ("b.log", B)]);
    let only_a = originals(&[("a.log", A)]);

    // Clean: two files in two partitions; clean with and without the originals.
    let clean = topic(&broker, "clean", 2);
    kcat.file(&clean, 0, "/spool/a.log", &a);
    kcat.file(&clean, 1, "/spool/b.log", &lines(B));
    let (code, out) = audit(&bs, &clean, &[]);
    assert_eq!(code, 0, "{out}");
    assert_has(
        &out,
        "/spool/a.log  [partition 0]  OK\n  5 lines arrived, 5 records",
    );
    assert_has(
        &out,
        "/spool/b.log  [partition 1]  OK\n  3 lines arrived, 3 records",
    );
    assert_has(
        &out,
        "summary: 2 files, 8 lines, 8 records, 0 duplicates, 0 unattributable: clean",
    );
    let (code, out) = audit(&bs, &clean, &["--expect", path_str(both.path())]);
    assert_eq!(code, 0, "{out}");
    assert_has(&out, "compared with ");
    let (code, json) = audit(&bs, &clean, &["--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(v["clean"], true);
    assert_eq!(v["summary"]["lines"], 8);
    assert_eq!(v["streams"][0]["path"], "/spool/a.log");
    assert_eq!(v["streams"][0]["lines"], 5);
    assert_eq!(v["partitions"][1]["high"], 3);

    // A line missing in the middle: the gap is named by its bytes.
    let gap = topic(&broker, "gap", 1);
    kcat.file(&gap, 0, "/spool/a.log", &[&a[..2], &a[3..]].concat());
    let (code, out) = audit(&bs, &gap, &[]);
    assert_eq!(code, 1, "{out}");
    assert_has(&out, "[partition 0]  1 PROBLEM\n");
    assert_has(&out, "  gap: bytes 11..20 missing\n");
    assert_has(&out, ": 1 problem\n");
    let (code, out) = audit(&bs, &gap, &["--expect", path_str(only_a.path())]);
    assert_eq!(code, 1, "{out}");
    assert_has(&out, "  gap: line 3 missing (bytes 12..20)\n");

    // A line delivered twice: allowed (at-least-once) unless --no-duplicates.
    let dup = topic(&broker, "dup", 1);
    kcat.file(&dup, 0, "/spool/a.log", &[&a[..2], &a[1..]].concat());
    let (code, out) = audit(&bs, &dup, &[]);
    assert_eq!(code, 0, "{out}");
    assert_has(&out, "  5 lines arrived, 6 records, 1 duplicate\n");
    assert_has(&out, "  duplicate: offset 6 at 0@2\n");
    let (code, out) = audit(&bs, &dup, &["--no-duplicates"]);
    assert_eq!(code, 1, "{out}");

    // Two lines swapped.
    let swap = topic(&broker, "swap", 1);
    let mut swapped = a.clone();
    swapped.swap(1, 2);
    kcat.file(&swap, 0, "/spool/a.log", &swapped);
    let (code, out) = audit(&bs, &swap, &[]);
    assert_eq!(code, 1, "{out}");
    assert_has(
        &out,
        "  out of order: offset 6 at 0@2 arrived after offset 12\n",
    );

    // One file in two partitions.
    let split = topic(&broker, "split", 2);
    for (i, record) in a.iter().enumerate() {
        kcat.file(
            &split,
            (i % 2) as i32,
            "/spool/a.log",
            std::slice::from_ref(record),
        );
    }
    let (code, out) = audit(&bs, &split, &[]);
    assert_eq!(code, 1, "{out}");
    assert_has(&out, "  split across partitions 0, 1");

    // The last line missing: invisible without the originals, caught with them.
    let end = topic(&broker, "end", 1);
    kcat.file(&end, 0, "/spool/a.log", &a[..4]);
    let (code, out) = audit(&bs, &end, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = audit(&bs, &end, &["--expect", path_str(only_a.path())]);
    assert_eq!(code, 1, "{out}");
    assert_has(&out, "  gap: line 5 missing (bytes 26..31)\n");
    // And an original that never appeared at all.
    let (code, out) = audit(&bs, &end, &["--expect", path_str(both.path())]);
    assert_eq!(code, 1, "{out}");
    assert_has(
        &out,
        "b.log  MISSING: none of its 3 lines (18 bytes) arrived\n",
    );

    // A changed body: invisible without the originals (same length), caught with them.
    let body = topic(&broker, "body", 1);
    let mut changed = a.clone();
    changed[3].1 = b"DELTA".to_vec();
    kcat.file(&body, 0, "/spool/a.log", &changed);
    let (code, out) = audit(&bs, &body, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = audit(&bs, &body, &["--expect", path_str(only_a.path())]);
    assert_eq!(code, 1, "{out}");
    assert_has(
        &out,
        "  mismatch: offset 20 at 0@3 (line 4): expected \"delta\", got \"DELTA\"\n",
    );

    // A record without the headers.
    let foreign = topic(&broker, "foreign", 1);
    kcat.file(&foreign, 0, "/spool/a.log", &a);
    kcat.raw(&foreign, 0, &["origin=elsewhere".to_owned()], b"stray");
    let (code, out) = audit(&bs, &foreign, &[]);
    assert_eq!(code, 1, "{out}");
    assert_has(&out, "the first at 0@5 (no path header)");
    let (code, out) = audit(&bs, &foreign, &["--allow-foreign"]);
    assert_eq!(code, 0, "{out}");

    // A topic that does not exist is a usage error.
    let (code, _, err) = sluice(&["audit", "-b", &bs, "-t", "audit-no-such-topic"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no such topic"), "{err}");
}

#[test]
fn an_unreachable_broker_is_exit_2_after_the_timeout() {
    let port = support::agent::free_port().to_string();
    let bs = format!("127.0.0.1:{port}");
    let (code, out, err) = sluice(&["audit", "-b", &bs, "-t", "logs", "--timeout", "2s"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no metadata within 2s"), "{err}");
    assert!(out.is_empty(), "{out}");
}

/// Writes `content` under the file name `name` (any bytes but `/` and NUL) in `dir`: first
/// under a hidden name, then renamed in, as a spool file should be dropped.
fn drop_raw(dir: &Path, name: &[u8], content: &[u8]) -> PathBuf {
    let tmp = dir.join(".incoming.tmp");
    fs::write(&tmp, content).unwrap();
    let path = dir.join(OsStr::from_bytes(name));
    fs::rename(&tmp, &path).unwrap();
    path
}

/// How many files of `dir` have the `.COMPLETED` suffix.
/// A spooldir source, a memory channel and a Kafka sink writing to `topic`.
fn spool_to_kafka(spool: &Path, data: &Path, bootstrap: &str, topic: &str) -> String {
    format!(
        r#"
a1:
  data_dir: {data}
  shutdown_timeout: 20s
  sources:
    r1: {{ type: spooldir, dir: "{spool}", channel: c1 }}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1: {{ type: kafka, channel: c1, brokers: "{bootstrap}", topic: {topic} }}
"#,
        data = data.display(),
        spool = spool.display(),
    )
}

/// Asserts that every line of a text report is one of its kinds of lines, so that no name
/// spilled over onto a line of its own.
fn assert_one_line_per_item(out: &str) {
    for line in out.lines() {
        let known = line.is_empty()
            || line.starts_with("topic ")
            || line.starts_with("summary: ")
            || line.starts_with("unattributable: ")
            || line.starts_with("  ")
            || line.starts_with('/');
        assert!(known, "a report line of no known kind: {line:?} in\n{out}");
    }
}

#[test]
fn files_named_with_invalid_utf8_or_a_newline_are_matched_and_shown_escaped() {
    const BAD: &[u8] = b"bad-\xff\xfe.log";
    const NEWLINE: &[u8] = b"two\nlines.log";
    const GONE: &[u8] = b"gone-\xff\n.log";
    let broker = KafkaBroker::start();
    let bs = broker.bootstrap();
    let t = topic(&broker, "names", 1);
    let (tmp, spool, data) = support::agent::spool_dirs();
    drop_raw(&spool, b"plain.log", b"p1\np2\n");
    drop_raw(&spool, BAD, b"b1\nb2\n");
    drop_raw(&spool, NEWLINE, b"n1\r\nn2\n");
    // The last line ends in a lone `\r`: no terminator but data, delivered as `abc\r`.
    drop_raw(&spool, b"cr.log", b"one\r\nabc\r");
    let mut agent = Agent::start(
        &tmp.path().join("run"),
        "a1",
        &spool_to_kafka(&spool, &data, &bs, &t),
    );
    wait_until(
        Duration::from_secs(120),
        "every file delivered and completed",
        || completed(&spool) == 4,
    );
    agent.signal(libc::SIGTERM);
    assert!(
        agent.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        agent.stderr_text()
    );

    // Delivered and compared with themselves: clean, every name matched.
    let spool_s = path_str(&spool);
    let (code, out) = audit(&bs, &t, &["--expect", spool_s]);
    assert_eq!(code, 0, "{out}");
    assert_has(
        &out,
        "summary: 4 files, 8 lines, 8 records, 0 duplicates, 0 unattributable: clean\n",
    );
    assert_has(
        &out,
        &format!("  compared with {spool_s}/bad-\\xff\\xfe.log.COMPLETED\n"),
    );
    // The spooldir source names each file by its fid too (device, inode, size and mtime).
    assert_has(&out, &format!("{spool_s}/two\\nlines.log (fid "));
    assert_has(&out, ")  [partition 0]  OK\n");
    assert_has(
        &out,
        &format!("  compared with {spool_s}/two\\nlines.log.COMPLETED\n"),
    );
    assert!(!out.contains("MISSING"), "{out}");
    assert_one_line_per_item(&out);
    let (code, json) = audit(&bs, &t, &["--expect", spool_s, "--json"]);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    let paths: Vec<&str> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&format!("{spool_s}/two\\nlines.log").as_str()),
        "{paths:?}"
    );

    // Against other originals: a changed file and a file that never arrived, both with such
    // names, each named escaped on its one line.
    let others = tempfile::tempdir().unwrap();
    let others_s = path_str(others.path());
    drop_raw(others.path(), BAD, b"b1\nB2\n");
    drop_raw(others.path(), NEWLINE, b"n1\r\nN2\n");
    drop_raw(others.path(), GONE, b"never sent\n");
    let (code, out) = audit(&bs, &t, &["--expect", others_s]);
    assert_eq!(code, 1, "{out}");
    assert_one_line_per_item(&out);
    assert_has(
        &out,
        &format!(
            "\n{others_s}/gone-\\xff\\n.log  MISSING: none of its 1 line (11 bytes) arrived\n"
        ),
    );
    assert_has(&out, &format!("\n{spool_s}/two\\nlines.log (fid "));
    assert_has(&out, ")  [partition 0]  1 PROBLEM\n");
    assert_has(
        &out,
        &format!("  compared with {others_s}/two\\nlines.log\n"),
    );
    assert_has(
        &out,
        &format!("  compared with {others_s}/bad-\\xff\\xfe.log\n"),
    );
    assert_has(&out, "  mismatch: offset 3 at 0@");
    assert_has(&out, ": 3 problems\n");
}
