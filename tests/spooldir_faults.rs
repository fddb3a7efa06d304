//! End-to-end, through a real Kafka broker: the spooling-directory source under the ways files
//! really arrive. Files still being written when they appear (a writer appends for seconds
//! after creating them), slow copies of larger files, and 5,000 files written straight into the
//! folder at once (each seen, for a moment, empty or half-written) must all arrive whole, in
//! order: checked with `sluice audit --expect` against copies of the files, and per key with
//! an independent reader (kcat). A SIGKILL while files are still being written, and a restart,
//! lose nothing either.

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use support::agent::{Agent, free_port, metric, sluice, spool_kafka_config, wait_until};
use support::kafka::KafkaBroker;

const LONG: Duration = Duration::from_secs(240);
const PARTITIONS: i32 = 4;

/// `lines` lines of file `tag`, numbered, of varied length; CRLF on every ninth line; no
/// final terminator when `open_end`.
fn content(tag: &str, lines: usize, open_end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        out.extend_from_slice(format!("{tag} {i:07} {}", "q".repeat(i % 90)).as_bytes());
        if !open_end || i + 1 < lines {
            out.extend_from_slice(if i % 9 == 0 { b"\r\n" } else { b"\n" });
        }
    }
    out
}

/// A spool folder, a folder with a copy of every file for `--expect`, and the files' line
/// counts by name.
struct Spool {
    tmp: tempfile::TempDir,
    spool: PathBuf,
    originals: PathBuf,
    lines: HashMap<String, usize>,
    writers: Vec<JoinHandle<()>>,
}

impl Spool {
    fn new() -> Spool {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, originals) = (tmp.path().join("spool"), tmp.path().join("orig"));
        fs::create_dir_all(&spool).unwrap();
        fs::create_dir_all(&originals).unwrap();
        Spool {
            tmp,
            spool,
            originals,
            lines: HashMap::new(),
            writers: Vec::new(),
        }
    }

    fn original(&mut self, name: &str, data: &[u8], lines: usize) {
        fs::write(self.originals.join(name), data).unwrap();
        self.lines.insert(name.to_owned(), lines);
    }

    /// Writes `count` small files straight into the spool folder (created, then written:
    /// not renamed in).
    fn small_files(&mut self, count: usize) {
        for i in 0..count {
            let name = format!("small{i:05}.log");
            let data = content(&format!("small{i:05}"), 2 + i % 3, i % 2 == 0);
            self.original(&name, &data, 2 + i % 3);
            fs::write(self.spool.join(&name), &data).unwrap();
        }
    }

    /// Starts a writer that creates `name` and appends its lines in `pieces` pieces (cutting
    /// lines anywhere), `pause` apart.
    fn slow_writer(&mut self, name: &str, lines: usize, pieces: usize, pause: Duration) {
        let tag = name.trim_end_matches(".log");
        let data = content(tag, lines, true);
        self.original(name, &data, lines);
        let path = self.spool.join(name);
        self.writers.push(std::thread::spawn(move || {
            let mut f = fs::File::create(&path).unwrap();
            for piece in data.chunks(data.len().div_ceil(pieces)) {
                f.write_all(piece).unwrap();
                std::thread::sleep(pause);
            }
        }));
    }

    fn wait_writers(&mut self) {
        for w in self.writers.drain(..) {
            w.join().unwrap();
        }
    }

    fn completed(&self) -> usize {
        support::agent::completed(&self.spool)
    }

    fn total_lines(&self) -> usize {
        self.lines.values().sum()
    }

    fn set_aside(&self) -> Vec<String> {
        fs::read_dir(&self.spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".FAILED"))
            .collect()
    }
}

/// Checks the topic: `sluice audit --expect` clean, and every file's lines under its key,
/// first deliveries complete and in order. Returns the number of repeated records.
fn check_topic(broker: &KafkaBroker, topic: &str, spool: &Spool) -> usize {
    let (code, out, err) = sluice(&[
        "audit",
        "--brokers",
        &broker.bootstrap(),
        "--topic",
        topic,
        "--expect",
        spool.originals.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "audit --expect:\n{out}{err}");
    let total = spool.total_lines();
    let records = broker.consume_all(topic, total, Duration::from_secs(120));
    let mut next: HashMap<String, usize> = HashMap::new();
    let mut repeats = 0;
    for r in &records {
        let key = String::from_utf8(r.key.clone().expect("keyed")).unwrap();
        let name = key.rsplit('/').next().unwrap().to_owned();
        let value = r.value_str();
        let seq: usize = value.split(' ').nth(1).unwrap().parse().unwrap();
        let n = next.entry(name.clone()).or_default();
        if seq < *n {
            repeats += 1;
        } else {
            assert_eq!(seq, *n, "{name}: first deliveries in order, no gap");
            *n += 1;
        }
    }
    for (name, lines) in &spool.lines {
        assert_eq!(
            next.get(name),
            Some(lines),
            "{name}: every line under its key"
        );
    }
    assert_eq!(records.len(), total + repeats);
    repeats
}

#[test]
fn files_being_written_slow_copies_and_5000_files_at_once_all_arrive_whole() {
    let broker = KafkaBroker::start();
    let topic = "spool-arrivals";
    broker.create_topic(topic, PARTITIONS);
    let mut spool = Spool::new();
    let http = free_port();
    let data = spool.tmp.path().join("data");
    let conf = spool_kafka_config(
        &spool.spool,
        &data,
        &broker.bootstrap(),
        topic,
        "{ type: memory, capacity: 20000 }",
        http,
    );
    let mut agent = Agent::start(&spool.tmp.path().join("run"), "a1", &conf);
    wait_until(LONG, "the source started", || {
        agent.stderr_text().contains("spooldir source started")
    });
    // Files still being written when they appear: appended to for three seconds.
    for i in 0..4 {
        spool.slow_writer(
            &format!("growing{i}.log"),
            3000,
            150,
            Duration::from_millis(20),
        );
    }
    // Slow copies: 6 MB in 64 pieces, 50 ms apart.
    for i in 0..2 {
        spool.slow_writer(
            &format!("copy{i}.log"),
            100_000,
            64,
            Duration::from_millis(50),
        );
    }
    // 5,000 files at once, straight into the folder.
    spool.small_files(5000);
    spool.wait_writers();
    let files = spool.lines.len();
    wait_until(LONG, "every file completed", || {
        spool.completed() == files || !spool.set_aside().is_empty()
    });
    assert_eq!(spool.set_aside(), Vec::<String>::new(), "no file set aside");
    let total = spool.total_lines() as u64;
    wait_until(LONG, "every line delivered", || {
        metric(http, "sluice_sink_events_total", "") >= Some(total)
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let repeats = check_topic(&broker, topic, &spool);
    assert_eq!(repeats, 0, "one clean run repeats nothing");
}

#[test]
fn a_sigkill_while_files_are_still_being_written_loses_nothing() {
    let broker = KafkaBroker::start();
    let topic = "spool-kill";
    broker.create_topic(topic, PARTITIONS);
    let mut spool = Spool::new();
    let http = free_port();
    let data = spool.tmp.path().join("data");
    let channel = format!(
        "{{ type: file, dir: {}, capacity: 64MiB, min_free_space: 1MiB }}",
        spool.tmp.path().join("wal").display()
    );
    let conf = spool_kafka_config(
        &spool.spool,
        &data,
        &broker.bootstrap(),
        topic,
        &channel,
        http,
    );
    let run = spool.tmp.path().join("run");
    let mut first = Agent::start(&run, "a1", &conf);
    wait_until(LONG, "the source started", || {
        first.stderr_text().contains("spooldir source started")
    });
    // Writers that append for about four seconds; the agent is killed in the middle.
    for i in 0..3 {
        spool.slow_writer(
            &format!("live{i}.log"),
            20_000,
            200,
            Duration::from_millis(20),
        );
    }
    spool.small_files(500);
    wait_until(LONG, "some lines delivered", || {
        metric(http, "sluice_sink_events_total", "").is_some_and(|n| n > 0)
    });
    first.kill();
    let mut second = Agent::start(&run, "a1", &conf);
    spool.wait_writers();
    let files = spool.lines.len();
    wait_until(LONG, "every file completed after the restart", || {
        spool.completed() == files || !spool.set_aside().is_empty()
    });
    assert_eq!(spool.set_aside(), Vec::<String>::new(), "no file set aside");
    wait_until(LONG, "the channel drained", || {
        metric(http, "sluice_channel_events", "") == Some(0)
    });
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit(LONG).success(), "{}", second.stderr_text());
    let repeats = check_topic(&broker, topic, &spool);
    println!("{repeats} lines repeated after the SIGKILL (at least once)");
}
