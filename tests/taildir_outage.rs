//! End-to-end: files rotated *while* Kafka is down. Writers append about 4,000 numbered lines
//! per second and rotate by several schemes; the broker is stopped for 30 s and started again;
//! every line must reach its topic once, each file generation in one partition and in order,
//! checked line by line and by `sluice audit`. Once with a memory channel, which fills and holds
//! the source back for most of the outage (the rotated files pile up unread on disk), and once
//! with a file channel, which takes the whole outage.
//!
//! Cells: rename + create with a pattern that matches only the live name; rename + create with
//! a glob that matches every generation; delete + recreate; copytruncate (file channel only: a
//! source held back by a full memory channel cannot read the lines that copytruncate's truncate
//! destroys, docs/taildir.md).
//!
//! These runs found a Kafka sink bug: the only broker, shutting down, answered metadata with
//! no broker listed, librdkafka forgot every broker, and delivery stalled for minutes after
//! the broker was back (now the sink gives librdkafka its bootstrap brokers again).

mod support;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::agent::{Agent, free_port, metric, wait_until};
use support::kafka::KafkaBroker;
use support::rotation::{Progress, Scheme, started, stop, text, write_rotating};
use support::tail_topic::{
    DELIVERY, PARTITIONS, audit, by_fid, counts, header, kafka_sink, lines_in, read_until,
    topic_prefix,
};

/// One test at a time: two brokers, two agents and seven writers at once are a lot for a
/// 2-core machine, and the deadlines are about the source, not the machine.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a test waits for what the agent does at once.
const LONG: Duration = Duration::from_secs(60);

/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// Lines between two rotations (about one a second).
const EVERY: u64 = 4_000;
/// How long a source's count of lines must stand still to say it read all there was.
const STEADY: Duration = Duration::from_secs(1);
/// A bound on each writer's lines; the test stops them well before.
const MAX_LINES: u64 = 2_000_000;

/// One test cell: a writer in its own folder, followed by its own source.
#[derive(Clone, Copy)]
struct Cell {
    /// The source's name, its folder's name, and its topic's suffix (`%{cell}` header).
    name: &'static str,
    scheme: Scheme,
    /// The pattern, relative to the cell's folder.
    pattern: &'static str,
}

const RENAME: Cell = Cell {
    name: "rename",
    scheme: Scheme::RenameCreate,
    pattern: "app.log",
};
const GLOB: Cell = Cell {
    name: "glob",
    scheme: Scheme::RenameCreate,
    pattern: "app.log*",
};
const DELETE: Cell = Cell {
    name: "delete",
    scheme: Scheme::DeleteRecreate,
    pattern: "app.log",
};
const COPYTRUNCATE: Cell = Cell {
    name: "copytruncate",
    scheme: Scheme::CopyTruncate,
    pattern: "app.log",
};

fn config(dir: &Path, cells: &[Cell], channel: &str, bootstrap: &str, topic: &str) -> String {
    let sources: String = cells
        .iter()
        .map(|c| {
            format!(
                "    {name}:\n      type: taildir\n      channel: c1\n      rotate_wait: 1s\n      \
                 poll_interval: 100ms\n      paths:\n        - {{ glob: \"{dir}/logs/{name}/{pattern}\", \
                 headers: {{ cell: {name} }} }}\n",
                name = c.name,
                pattern = c.pattern,
                dir = dir.display(),
            )
        })
        .collect();
    format!(
        r#"
a1:
  data_dir: {dir}/data
  shutdown_timeout: 20s
  http: {{HTTP}}
  sources:
{sources}  channels:
    c1: {channel}
{sinks}"#,
        sinks = kafka_sink(bootstrap, topic),
        dir = dir.display(),
    )
}

/// Runs the cells through one agent whose channel is `channel`, with a broker outage in the
/// middle; `backpressure` asserts that the channel filled up and held the sources back.
fn outage(test: &str, cells: &[Cell], channel: &str, backpressure: bool) {
    let _serial = one_at_a_time();
    let broker = KafkaBroker::start();
    if broker.skip_unless_owned(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = topic_prefix(test);
    let topic = |c: &Cell| format!("{prefix}-{}", c.name);
    let logs = |c: &Cell| dir.path().join("logs").join(c.name);
    for c in cells {
        broker.create_topic(&topic(c), PARTITIONS);
        fs::create_dir_all(logs(c)).unwrap();
    }
    let port = free_port();
    let cfg = config(
        dir.path(),
        cells,
        channel,
        &broker.bootstrap(),
        &format!("{prefix}-%{{cell}}"),
    )
    .replace("{HTTP}", &format!("127.0.0.1:{port}"));
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);

    let progress: Vec<Progress> = cells.iter().map(|_| Progress::default()).collect();
    let rotations = |i: usize| progress[i].rotations.load(Ordering::SeqCst);
    let all_rotated =
        |since: &[u32], n: u32| (0..cells.len()).all(|i| rotations(i) >= since[i] + n);
    // copytruncate copies only once the source has read every line written so far (put into
    // the channel: the file channel takes them during the outage too), so that the only lines
    // at risk are the ones written between the copy and the truncate. The writer waits for it
    // without writing, so the source has caught up once its count of lines stops moving (the
    // count itself lags the line numbers by the window lines lost at earlier truncates).
    let last_count = Mutex::new((u64::MAX, Instant::now()));
    let caught_up = |name: &str| {
        let n = metric(
            port,
            "sluice_source_events_total",
            &format!("source=\"{name}\""),
        )
        .unwrap_or(0);
        let mut last = last_count.lock().unwrap();
        if n != last.0 {
            *last = (n, Instant::now());
        }
        n > 0 && last.1.elapsed() >= STEADY
    };
    let windows: Vec<HashSet<u64>> = std::thread::scope(|scope| {
        let writers: Vec<_> = cells
            .iter()
            .zip(&progress)
            .map(|(c, p)| {
                let (logs, caught_up) = (logs(c), &caught_up);
                let name = c.name;
                scope.spawn(move || {
                    write_rotating(&logs, c.scheme, MAX_LINES, EVERY, p, &|_| caught_up(name))
                })
            })
            .collect();
        let stop_writers = || {
            progress
                .iter()
                .for_each(|p| p.stop.store(true, Ordering::SeqCst))
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(DELIVERY, "lines flowing into Kafka", || {
                metric(port, "sluice_sink_events_total", "sink=\"k1\"").unwrap_or(0) >= 10_000
            });
            broker.stop();
            let down = Instant::now();
            let before: Vec<u32> = (0..cells.len()).map(rotations).collect();
            if backpressure {
                wait_until(OUTAGE, "the channel full, holding the sources back", || {
                    let held = metric(port, "sluice_channel_events", "channel=\"c1\"").unwrap_or(0);
                    let cap = metric(port, "sluice_channel_capacity_events", "channel=\"c1\"")
                        .unwrap_or(0);
                    cap > 0 && held + 1_000 >= cap
                });
            }
            wait_until(OUTAGE * 2, "rotations during the outage", || {
                all_rotated(&before, 5)
            });
            std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
            broker.restart();
            let after: Vec<u32> = (0..cells.len()).map(rotations).collect();
            wait_until(DELIVERY, "rotations after the outage", || {
                all_rotated(&after, 2)
            });
        }));
        stop_writers();
        let windows = writers.into_iter().map(|w| w.join().unwrap()).collect();
        if let Err(e) = result {
            eprintln!("agent stderr:\n{}", agent.stderr_text());
            std::panic::resume_unwind(e);
        }
        windows
    });

    let totals: Vec<u64> = progress
        .iter()
        .map(|p| p.written.load(Ordering::SeqCst))
        .collect();
    for ((c, window), &total) in cells.iter().zip(&windows).zip(&totals) {
        read_until(&broker, &topic(c), |records| {
            let seen = counts(&lines_in(records));
            (0..total).all(|q| window.contains(&q) || seen.contains_key(&q))
        });
    }
    stop(&mut agent);

    for ((c, window), &total) in cells.iter().zip(&windows).zip(&totals) {
        let records = broker.consume_all(&topic(c), 0, Duration::from_secs(30));
        let lines = lines_in(&records);
        let counts = counts(&lines);
        let lost: Vec<u64> = (0..total)
            .filter(|q| !window.contains(q) && !counts.contains_key(q))
            .collect();
        assert!(
            lost.is_empty(),
            "{}: {} of {total} lines lost, first {:?}, last {:?}\n{}",
            c.name,
            lost.len(),
            lost.first(),
            lost.last(),
            agent.stderr_text()
        );
        for (q, n) in &counts {
            assert!(
                *n == 1,
                "{}: line {q} arrived {n} times\n{}",
                c.name,
                agent.stderr_text()
            );
        }
        for (fid, stream) in by_fid(&lines) {
            assert_eq!(
                stream[0].offset, 0,
                "{}, fid {fid}: its first line is missing",
                c.name
            );
            for w in stream.windows(2) {
                assert_eq!(
                    w[1].line.seq,
                    w[0].line.seq + 1,
                    "{}, fid {fid}: line {} after line {}",
                    c.name,
                    w[1].line.seq,
                    w[0].line.seq
                );
            }
        }
        audit(&broker, &topic(c), &["--no-duplicates"]);
        eprintln!(
            "{test} {}: {total} lines in {} files, {} in the copytruncate window",
            c.name,
            progress_rotations(&progress, cells, c) + 1,
            window.len()
        );
    }
}

fn progress_rotations(progress: &[Progress], cells: &[Cell], c: &Cell) -> u32 {
    let i = cells.iter().position(|x| x.name == c.name).unwrap();
    progress[i].rotations.load(Ordering::SeqCst)
}

/// A memory channel of 20,000 events fills within a second of the outage and holds the
/// sources back for the rest of it, while the writers rotate about 30 times each: every
/// rotated file is still read in full once the broker is back (before the fix, the files
/// rotated away during the outage under a pattern matching only the live name were never
/// read).
#[test]
fn memory_channel_rotation_during_a_kafka_outage_loses_nothing() {
    outage(
        "memory_channel_rotation_during_a_kafka_outage_loses_nothing",
        &[RENAME, GLOB, DELETE],
        "{ type: memory, capacity: 20000 }",
        true,
    );
}

/// The file channel takes the whole outage; rotation by every scheme, copytruncate included,
/// loses nothing (copytruncate: nothing outside its copy-to-truncate window).
#[test]
fn file_channel_rotation_during_a_kafka_outage_loses_nothing() {
    outage(
        "file_channel_rotation_during_a_kafka_outage_loses_nothing",
        &[RENAME, GLOB, DELETE, COPYTRUNCATE],
        "{ type: file, dir: c1, capacity: 1GiB, fsync: interval }",
        false,
    );
}

/// A broker, a folder, a topic, `logs/app.log` in the folder, a port for the agent's HTTP
/// server, and the configuration of an agent whose one taildir source `r1` follows that log
/// with `rotate_wait` into channel `c1` (a YAML flow map) drained into the topic.
type OneLog = (KafkaBroker, tempfile::TempDir, String, PathBuf, u16, String);

/// Sets up [`OneLog`] for `test`; `None` when another run owns the broker.
fn one_log(test: &str, rotate_wait: &str, channel: &str) -> Option<OneLog> {
    let broker = KafkaBroker::start();
    if broker.skip_unless_owned(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let topic = topic_prefix(test);
    broker.create_topic(&topic, PARTITIONS);
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let live = logs.join("app.log");
    let port = free_port();
    let cfg = format!(
        r#"
a1:
  data_dir: {dir}/data
  shutdown_timeout: 20s
  http: 127.0.0.1:{port}
  sources:
    r1: {{ type: taildir, channel: c1, paths: ["{live}"], rotate_wait: {rotate_wait}, poll_interval: 100ms }}
  channels:
    c1: {channel}
{sink}"#,
        dir = dir.path().display(),
        live = live.display(),
        sink = kafka_sink(&broker.bootstrap(), &topic),
    );
    Some((broker, dir, topic, live, port, cfg))
}

/// The inode numbers the position file at `positions` lists (none while it is unreadable).
fn saved_inodes(positions: &Path) -> Vec<u64> {
    let saved: serde_json::Value = fs::read(positions)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    saved["files"]
        .as_array()
        .map(|f| f.iter().filter_map(|p| p["ino"].as_u64()).collect())
        .unwrap_or_default()
}

/// How many rotated files the agent read to their end and let go, by its log.
fn let_go(agent: &Agent) -> usize {
    agent
        .stderr_text()
        .matches("rotated file read to its end and closed")
        .count()
}

/// Kafka down, a small memory channel full so that the source is held back in a put, and
/// the live log rotated twice meanwhile (renamed; the pattern matches the live name only);
/// then the agent is killed and started again with Kafka back: every line arrives. Held back,
/// the source used to see no new file and write no position, so the generation created and
/// rotated away during the outage was unknown to the restart and lost whole (a hostile run).
/// Now the position file names each new file at once, and the restart finds each by inode.
#[test]
fn files_rotated_while_the_source_is_held_back_survive_a_kill() {
    let test = "files_rotated_while_the_source_is_held_back_survive_a_kill";
    let _serial = one_at_a_time();
    let Some((broker, dir, topic, live, port, cfg)) =
        one_log(test, "1s", "{ type: memory, capacity: 50 }")
    else {
        return;
    };
    let logs = live.parent().unwrap();
    let positions = dir.path().join("data/sources/r1/positions.json");
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    broker.stop();
    let mut seq = 0u64;
    let mut write = |generation: u32, n: u64| {
        let mut f = support::rotation::append(&live);
        for _ in 0..n {
            f.write_all(text(generation, seq).as_bytes()).unwrap();
            seq += 1;
        }
    };
    write(0, 5_000);
    // Held back: lines in the channel and the source's count standing still (the channel
    // may stop short of 50 events, when the next batch does not fit in what is left).
    let mut last = (0, Instant::now());
    wait_until(LONG, "the channel full and the source held back", || {
        let put = metric(port, "sluice_source_events_total", "r1").unwrap_or(0);
        if put != last.0 {
            last = (put, Instant::now());
        }
        let queued = metric(port, "sluice_channel_events", "c1").unwrap_or(0);
        queued > 0 && put < 5_000 && last.1.elapsed() >= STEADY
    });
    for generation in 1..=2 {
        let rotated = logs.join(format!("app.log.{generation}"));
        if generation == 2 {
            fs::rename(logs.join("app.log.1"), &rotated).unwrap();
        }
        fs::rename(&live, logs.join("app.log.1")).unwrap();
        write(generation, 500);
        let ino = fs::metadata(&live).unwrap().ino();
        wait_until(LONG, "the new file's position written", || {
            saved_inodes(&positions).contains(&ino)
        });
    }
    let put = metric(port, "sluice_source_events_total", "r1");
    assert!(
        put.is_some_and(|n| n < 5_000),
        "the source stayed held back in the first file: {put:?} of its 5000 lines put"
    );
    agent.kill();
    broker.restart();
    let _agent = Agent::start(dir.path(), "a1", &cfg);
    let all = seq;
    let records = read_until(&broker, &topic, |r| {
        let got: HashSet<u64> = lines_in(r).iter().map(|g| g.line.seq).collect();
        got.len() as u64 >= all
    });
    let got: HashSet<u64> = lines_in(&records).iter().map(|g| g.line.seq).collect();
    let lost: Vec<u64> = (0..all).filter(|s| !got.contains(s)).collect();
    assert!(
        lost.is_empty(),
        "{} of {all} lines lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

/// Kafka down, and the log deleted and made again twice: the file system hands a new
/// generation the inode number of one the source read to its end and closed (ext4 does at
/// once, once nobody holds the deleted file open). That one's lines are not safe while Kafka
/// is down, so the source still knew it by the number: the new generation was taken for it
/// and never read, a whole file lost without a word (found as a flaky loss of one generation
/// in `memory_channel_rotation_during_a_kafka_outage_loses_nothing`).
#[test]
fn a_new_file_with_the_inode_of_one_let_go_during_an_outage_is_read() {
    let test = "a_new_file_with_the_inode_of_one_let_go_during_an_outage_is_read";
    let _serial = one_at_a_time();
    let Some((broker, dir, topic, live, port, cfg)) = one_log(test, "300ms", "{ type: memory }")
    else {
        return;
    };
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    broker.stop();
    const LINES: u64 = 100;
    let put = || metric(port, "sluice_source_events_total", "r1").unwrap_or(0);
    let mut seq = 0u64;
    let mut inodes = Vec::new();
    for generation in 0..3u32 {
        {
            let mut f = support::rotation::append(&live);
            for _ in 0..LINES {
                f.write_all(text(generation, seq).as_bytes()).unwrap();
                seq += 1;
            }
        }
        inodes.push(fs::metadata(&live).unwrap().ino());
        wait_until(LONG, &format!("generation {generation} read"), || {
            put() >= seq
        });
        if generation < 2 {
            fs::remove_file(&live).unwrap();
            let before = generation as usize;
            wait_until(LONG, &format!("generation {generation} let go"), || {
                let_go(&agent) > before
            });
        }
    }
    assert!(
        inodes[2] == inodes[0] || inodes[1] == inodes[0],
        "the file system handed out no inode number again ({inodes:?}): nothing was tested"
    );
    broker.restart();
    let records = read_until(&broker, &topic, |r| lines_in(r).len() as u64 >= seq);
    let got = counts(&lines_in(&records));
    let lost: Vec<u64> = (0..seq).filter(|s| !got.contains_key(s)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(got.values().all(|n| *n == 1), "duplicates: {got:?}");
    stop(&mut agent);
}

/// The log renamed to a name the pattern does not match, read to its end and let go, then
/// renamed back and written to: once with Kafka up (its lines delivered, the source forgot
/// it), once with Kafka down (its lines not safe yet, the source still held it). Both times
/// the file is the same (same inode, same birth time) and is read on from where it was:
/// it used to be read again from its start, every line of it repeated (a hostile run).
#[test]
fn a_file_renamed_away_and_back_after_it_was_let_go_is_read_on_not_again() {
    let test = "a_file_renamed_away_and_back_after_it_was_let_go_is_read_on_not_again";
    let _serial = one_at_a_time();
    let Some((broker, dir, topic, live, port, cfg)) = one_log(test, "300ms", "{ type: memory }")
    else {
        return;
    };
    let away = live.with_file_name("app.away");
    let positions = dir.path().join("data/sources/r1/positions.json");
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    const LINES: u64 = 100;
    let put = || metric(port, "sluice_source_events_total", "r1").unwrap_or(0);
    let mut seq = 0u64;
    let write = |seq: &mut u64| {
        let mut f = support::rotation::append(&live);
        for _ in 0..LINES {
            f.write_all(text(0, *seq).as_bytes()).unwrap();
            *seq += 1;
        }
    };
    write(&mut seq);
    let ino = fs::metadata(&live).unwrap().ino();
    for round in 0..2usize {
        if round == 1 {
            broker.stop();
            write(&mut seq);
        }
        wait_until(LONG, &format!("round {round}: the lines read"), || {
            put() >= seq
        });
        fs::rename(&live, &away).unwrap();
        wait_until(LONG, &format!("round {round}: the file let go"), || {
            let_go(&agent) > round
        });
        if round == 0 {
            wait_until(LONG, "its lines delivered and the file forgotten", || {
                !saved_inodes(&positions).contains(&ino)
            });
        }
        fs::rename(&away, &live).unwrap();
        write(&mut seq);
    }
    wait_until(LONG, "the last lines read", || put() >= seq);
    broker.restart();
    let records = read_until(&broker, &topic, |r| {
        counts(&lines_in(r)).len() as u64 >= seq
    });
    let got = counts(&lines_in(&records));
    let lost: Vec<u64> = (0..seq).filter(|s| !got.contains_key(s)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    let repeated = got.values().filter(|n| **n > 1).count();
    assert_eq!(repeated, 0, "{repeated} of {seq} lines repeated");
    assert_eq!(put(), seq, "lines put by the source");
    let fids: HashSet<&str> = records.iter().map(|r| header(r, "fid")).collect();
    assert_eq!(fids.len(), 1, "one file, one fid: {fids:?}");
    stop(&mut agent);
}
