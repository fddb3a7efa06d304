//! Benchmark of the file channel: put+take throughput per fsync policy and event size, beside
//! a raw sequential writer with the same fsync cadence on the same disk, and the recovery
//! time of a backlog.
//!
//!     cargo run --release -p sluice-channels --example wal_bench -- \
//!         [DIR] [MIB] [BACKLOG_MIB] [REPS] [always]
//!
//! DIR (default `target/wal-bench`) must be on the disk to measure; MIB (default 512) is the
//! event data per throughput run; BACKLOG_MIB (default 1024, 0 to skip) the backlog
//! recovered; REPS (default 3) how many runs each figure is the median of; `always` limits
//! the runs to `fsync: always`.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_channels::units::{ByteSize, HumanDuration};
use sluice_channels::{Channel, Event, FileChannel, FileChannelConfig, FsyncPolicy, Origin};

const BATCH: usize = 1000;
const MIB: f64 = (1 << 20) as f64;

fn config(dir: &Path, fsync: FsyncPolicy) -> FileChannelConfig {
    FileChannelConfig {
        capacity: ByteSize(4 << 30),
        fsync,
        fsync_interval: HumanDuration(Duration::from_secs(1)),
        min_free_space: ByteSize(0),
        ..FileChannelConfig::new(dir)
    }
}

/// Log-like text to slice event bodies from, without a copy per event.
fn text() -> Bytes {
    let mut t = Vec::with_capacity(8 << 20);
    let mut i = 0u64;
    while t.len() < 8 << 20 {
        write!(
            t,
            "2026-01-01T00:00:00.{i:06}Z INFO request id={i} path=/api/v1/items status=200 "
        )
        .unwrap();
        i += 1;
    }
    Bytes::from(t)
}

fn batches(total: usize, size: usize) -> impl Iterator<Item = Vec<Event>> {
    let text = text();
    let origin = Arc::new(Origin {
        source: "r1".into(),
        path: "/var/log/app.log".into(),
        file: "app.log".into(),
        host: "bench".into(),
        headers: Vec::new(),
    });
    let count = total / size;
    let mut offset = 0u64;
    (0..count.div_ceil(BATCH)).map(move |b| {
        (0..BATCH.min(count - b * BATCH))
            .map(|_| {
                let at = (offset as usize * 7) % (text.len() - size);
                let e = Event {
                    body: text.slice(at..at + size),
                    origin: origin.clone(),
                    offset,
                    read_at_ms: 1_700_000_000_000,
                    headers: Default::default(),
                };
                offset += size as u64;
                e
            })
            .collect()
    })
}

struct Run {
    seconds: f64,
    body_bytes: u64,
    written: u64,
    fsyncs: u64,
}

/// Puts `total` bytes of `size`-byte events while a consumer takes and commits them.
async fn put_take(dir: &Path, fsync: FsyncPolicy, total: usize, size: usize) -> Run {
    let _ = fs::remove_dir_all(dir);
    settle();
    let ch = Arc::new(FileChannel::open("bench", config(dir, fsync)).unwrap());
    let events = (total / size) as u64;
    let began = Instant::now();
    let consumer = tokio::spawn({
        let ch = ch.clone();
        async move {
            let mut got = 0u64;
            while got < events {
                let lease = ch.take(BATCH).await.unwrap().unwrap();
                got += lease.events.len() as u64;
                ch.commit(lease).await.unwrap();
            }
        }
    });
    let mut receipts = VecDeque::new();
    for batch in batches(total, size) {
        receipts.push_back(ch.put(batch).await.unwrap());
        while receipts.front().is_some_and(|r| r.is_safe()) {
            receipts.pop_front();
        }
    }
    for mut r in receipts {
        assert!(r.wait().await);
    }
    consumer.await.unwrap();
    let seconds = began.elapsed().as_secs_f64();
    let c = ch.counters();
    Run {
        seconds,
        body_bytes: events * size as u64,
        written: c.bytes_written,
        fsyncs: c.fsyncs,
    }
}

/// Writes `total` bytes sequentially, 1 MiB at a time, with an fdatasync after every
/// `sync_every` bytes (never for `None`); returns MB/s.
fn raw_write(path: &Path, total: u64, sync_every: Option<u64>) -> f64 {
    let _ = fs::remove_file(path);
    settle();
    let mut f = File::create(path).unwrap();
    let block = sync_every.map_or(1 << 20, |n| n.clamp(4096, 1 << 20)) as usize;
    let buf = vec![b'x'; block];
    let began = Instant::now();
    let (mut done, mut unsynced) = (0u64, 0u64);
    while done < total {
        f.write_all(&buf).unwrap();
        done += block as u64;
        unsynced += block as u64;
        if sync_every.is_some_and(|n| unsynced >= n) {
            f.sync_data().unwrap();
            unsynced = 0;
        }
    }
    let mbs = done as f64 / MIB / began.elapsed().as_secs_f64();
    drop(f);
    let _ = fs::remove_file(path);
    mbs
}

/// Writes back every dirty page, so that one measurement does not pay for the last.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn drop_caches() -> bool {
    settle();
    fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

/// Fills a channel with a `backlog`-byte backlog, then times its recovery (warm cache, and
/// cold if the page cache can be dropped) and reading it all back.
async fn recovery(dir: &Path, backlog: usize) {
    let _ = fs::remove_dir_all(dir);
    {
        let ch = FileChannel::open("bench", config(dir, FsyncPolicy::Never)).unwrap();
        let mut last = None;
        for batch in batches(backlog, 1024) {
            last = Some(ch.put(batch).await.unwrap());
        }
        assert!(last.unwrap().wait().await);
    }
    for cold in [false, true] {
        if cold && !drop_caches() {
            println!("recovery, cold cache: not measured (cannot write /proc/sys/vm/drop_caches)");
            continue;
        }
        let began = Instant::now();
        let ch = FileChannel::open("bench", config(dir, FsyncPolicy::Never)).unwrap();
        let open = began.elapsed().as_secs_f64();
        let held = ch.stats();
        println!(
            "recovery of {:.0} MiB ({} events), {} cache: {open:.2} s",
            held.bytes as f64 / MIB,
            held.events,
            if cold { "cold" } else { "warm" },
        );
    }
    let ch = FileChannel::open("bench", config(dir, FsyncPolicy::Never)).unwrap();
    let held = ch.stats();
    let began = Instant::now();
    let mut got = 0;
    while got < held.events {
        let l = ch.take(BATCH).await.unwrap().unwrap();
        got += l.events.len();
        ch.commit(l).await.unwrap();
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "reading the backlog back (take + commit): {:.0} MB/s",
        held.bytes as f64 / MIB / secs
    );
    drop(ch);
    let _ = fs::remove_dir_all(dir);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(args.first().map_or("target/wal-bench", String::as_str));
    let total: usize = args.get(1).map_or(512, |a| a.parse().unwrap()) << 20;
    let backlog: usize = args.get(2).map_or(1024, |a| a.parse().unwrap()) << 20;
    let reps: usize = args.get(3).map_or(3, |a| a.parse().unwrap());
    let policies: Vec<FsyncPolicy> = match args.get(4).map(String::as_str) {
        Some("always") => vec![FsyncPolicy::Always],
        _ => vec![
            FsyncPolicy::Always,
            FsyncPolicy::Interval,
            FsyncPolicy::Never,
        ],
    };
    fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "medians of {reps} runs of {} MiB, each channel run followed by its raw run",
        total >> 20
    );
    println!();
    println!(
        "| fsync | event | channel MB/s (event bytes) | channel MB/s (disk bytes) \
         | written per fsync | raw MB/s, same cadence | channel / raw (min .. max) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &fsync in &policies {
        for size in [1024usize, 200] {
            let (mut body, mut disk, mut raw, mut ratio, mut per_sync) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..reps {
                let run = rt.block_on(put_take(&dir.join("channel"), fsync, total, size));
                let b = run.body_bytes as f64 / MIB / run.seconds;
                // The same cadence: as many bytes per fsync as the channel wrote per fsync.
                let cadence = run.written.checked_div(run.fsyncs);
                let r = raw_write(&dir.join("raw"), run.written, cadence);
                body.push(b);
                disk.push(run.written as f64 / MIB / run.seconds);
                raw.push(r);
                ratio.push(100.0 * b / r);
                per_sync.push(cadence.map_or(0.0, |c| c as f64 / MIB));
            }
            let (lo, hi) = (
                ratio.iter().copied().fold(f64::MAX, f64::min),
                ratio.iter().copied().fold(0.0, f64::max),
            );
            let cadence = median(per_sync);
            println!(
                "| {fsync:?} | {size} B | {:.0} | {:.0} | {} | {:.0} \
                 | {:.0}% ({lo:.0}% .. {hi:.0}%) |",
                median(body),
                median(disk),
                if cadence > 0.0 {
                    format!("{cadence:.1} MiB")
                } else {
                    "no fsync".into()
                },
                median(raw),
                median(ratio),
            );
        }
    }
    if backlog > 0 {
        rt.block_on(recovery(&dir.join("backlog"), backlog));
    }
}
