//! Tests of the file channel: transactions, restarts, recovery from torn and damaged
//! segments and checkpoints, backpressure, and a full disk.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::record::{self, Parsed};
use super::*;
use crate::units::{ByteSize, HumanDuration};

fn config(dir: &Path) -> FileChannelConfig {
    FileChannelConfig {
        dir: dir.to_path_buf(),
        capacity: ByteSize(1 << 30),
        capacity_events: None,
        segment_size: ByteSize(4 << 10),
        fsync: FsyncPolicy::Never,
        fsync_interval: HumanDuration(Duration::from_millis(50)),
        min_free_space: ByteSize(0),
    }
}

fn open(dir: &Path) -> FileChannel {
    FileChannel::open("c1", config(dir)).unwrap()
}

fn origin(n: u64) -> Arc<Origin> {
    Arc::new(Origin {
        source: "r1".into(),
        path: format!("/var/log/app-{n}.log"),
        file: format!("app-{n}.log"),
        host: "h1".into(),
        headers: vec![("env".into(), "test".into())],
    })
}

/// Three origins shared by every batch, as a source shares one per file.
static ORIGINS: std::sync::LazyLock<Vec<Arc<Origin>>> =
    std::sync::LazyLock::new(|| (0..3).map(origin).collect());

/// Events with offsets `range`, each from one of three origins, with bodies that name them.
fn events(range: std::ops::Range<u64>) -> Vec<Event> {
    let origins = &*ORIGINS;
    range
        .map(|i| Event {
            body: Bytes::from(format!("line {i} {}", "x".repeat((i % 50) as usize))),
            origin: origins[(i % 3) as usize].clone(),
            offset: i,
            read_at_ms: 1_700_000_000_000 + i,
            headers: Default::default(),
        })
        .collect()
}

fn check_event(e: &Event) {
    let want = &events(e.offset..e.offset + 1)[0];
    assert_eq!(e.body, want.body, "body of {}", e.offset);
    assert_eq!(*e.origin, *want.origin, "origin of {}", e.offset);
    assert_eq!(e.read_at_ms, want.read_at_ms);
}

fn offsets(lease: &Lease) -> Vec<u64> {
    lease.events.iter().map(|e| e.offset).collect()
}

async fn put(ch: &FileChannel, range: std::ops::Range<u64>) {
    let mut r = ch.put(events(range)).await.unwrap();
    assert!(r.wait().await);
}

/// Takes and commits until `n` events came; returns their offsets.
async fn take_n(ch: &FileChannel, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < n {
        let lease = tokio::time::timeout(Duration::from_secs(10), ch.take(n - got.len()))
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        lease.events.iter().for_each(check_event);
        got.extend(offsets(&lease));
        ch.commit(lease).await.unwrap();
    }
    got
}

/// Closes the channel and takes everything left.
async fn drain(ch: &FileChannel) -> Vec<u64> {
    ch.close();
    let mut got = Vec::new();
    while let Some(lease) = tokio::time::timeout(Duration::from_secs(10), ch.take(100))
        .await
        .expect("take returns")
        .unwrap()
    {
        lease.events.iter().for_each(check_event);
        got.extend(offsets(&lease));
        ch.commit(lease).await.unwrap();
    }
    got
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|id| segment::path(dir, id))
        .collect()
}

/// A copy of the channel directory as a crash would leave it (without the lock).
fn snapshot(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == disk::LOCK_FILE {
            continue;
        }
        match fs::copy(entry.path(), copy.path().join(entry.file_name())) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // a checkpoint being renamed
            r => {
                r.unwrap();
            }
        }
    }
    copy
}

/// The start offsets of the events records of a segment file, and the file offsets of their
/// events.
fn events_records(file: &Path) -> Vec<(u64, Vec<u64>)> {
    let data = fs::read(file).unwrap();
    let mut pos = segment::HEADER_LEN as usize;
    let mut starts = Vec::new();
    while let Parsed::Record { kind, payload, len } = record::parse(&data[pos..]) {
        if record::holds_events(kind) {
            let offsets = record::EventIter::new(kind, payload)
                .unwrap()
                .map(|e| e.offset)
                .collect();
            starts.push((pos as u64, offsets));
        }
        pos += len;
    }
    assert_eq!(pos, data.len(), "the segment parses to its end");
    starts
}

#[tokio::test]
async fn events_round_trip_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(
        "c1",
        FileChannelConfig {
            fsync: FsyncPolicy::Always,
            ..config(dir.path())
        },
    )
    .unwrap();
    let mut r1 = ch.put(events(0..3)).await.unwrap();
    let mut r2 = ch.put(events(3..10)).await.unwrap();
    assert!(r1.wait().await && r2.wait().await);
    let lease = ch.take(100).await.unwrap().unwrap();
    assert_eq!(lease.first_seq, 0);
    assert_eq!(offsets(&lease), (0..10).collect::<Vec<_>>());
    lease.events.iter().for_each(check_event);
    assert_eq!(
        lease.bytes,
        events(0..10).iter().map(Event::weight).sum::<usize>()
    );
    ch.commit(lease).await.unwrap();
    let stats = ch.stats();
    assert_eq!(
        (
            stats.events,
            stats.bytes,
            stats.put_total,
            stats.committed_total
        ),
        (0, 0, 10, 10)
    );
}

#[tokio::test]
async fn event_headers_survive_a_restart_and_count_in_the_byte_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let mut batch = events(0..4);
    batch[1].headers.set("level".into(), "ERROR");
    batch[1].headers.remove("env".into());
    batch[3].headers.set("stream".into(), "stderr");
    let weight: usize = batch.iter().map(Event::weight).sum();
    {
        let ch = open(dir.path());
        let mut r = ch.put(batch.clone()).await.unwrap();
        assert!(r.wait().await);
        assert_eq!(ch.stats().bytes as usize, weight);
    }
    let ch = open(dir.path());
    assert_eq!(
        ch.stats().bytes as usize,
        weight,
        "recovery counts the headers too"
    );
    let lease = ch.take(10).await.unwrap().unwrap();
    assert_eq!(lease.events, batch);
    assert_eq!(lease.events[1].header("level"), Some("ERROR"));
    assert_eq!(lease.events[1].header("env"), None);
    assert_eq!(lease.events[0].header("env"), Some("test"));
    assert_eq!(lease.bytes, weight);
    ch.commit(lease).await.unwrap();
    assert_eq!(ch.stats().bytes, 0);
}

#[tokio::test]
async fn uncommitted_events_survive_a_restart_and_committed_ones_do_not_return() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open(dir.path());
        put(&ch, 0..10).await;
        assert_eq!(take_n(&ch, 4).await, vec![0, 1, 2, 3]);
        let leased = ch.take(3).await.unwrap().unwrap();
        assert_eq!(offsets(&leased), vec![4, 5, 6]);
    }
    let ch = open(dir.path());
    assert_eq!(ch.stats().events, 6);
    assert_eq!(
        ch.stats().bytes,
        events(4..10).iter().map(Event::weight).sum::<usize>()
    );
    put(&ch, 10..12).await;
    assert_eq!(drain(&ch).await, (4..12).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_commit_inside_a_record_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open(dir.path());
        put(&ch, 0..10).await;
        assert_eq!(take_n(&ch, 3).await, vec![0, 1, 2]);
    }
    {
        let ch = open(dir.path());
        assert_eq!(take_n(&ch, 2).await, vec![3, 4]);
    }
    let ch = open(dir.path());
    assert_eq!(drain(&ch).await, (5..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn rollbacks_return_events_to_the_head_and_out_of_order_calls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path());
    put(&ch, 0..4).await;
    put(&ch, 4..10).await;
    let a = ch.take(3).await.unwrap().unwrap();
    let b = ch.take(4).await.unwrap().unwrap();
    assert_eq!((a.first_seq, b.first_seq), (0, 3));
    assert_eq!(offsets(&b), vec![3, 4, 5, 6], "a lease spans records");
    let b_copy = Lease {
        first_seq: b.first_seq,
        events: b.events.clone(),
        bytes: b.bytes,
    };
    assert!(matches!(
        ch.commit(b).await,
        Err(ChannelError::LeaseOrder { .. })
    ));
    assert!(matches!(
        ch.rollback(a),
        Err(ChannelError::LeaseOrder { .. })
    ));
    ch.rollback(b_copy).unwrap();
    let b = ch.take(2).await.unwrap().unwrap();
    assert_eq!(offsets(&b), vec![3, 4]);
    let a = Lease {
        first_seq: 0,
        events: events(0..3),
        bytes: events(0..3).iter().map(Event::weight).sum(),
    };
    ch.rollback(b).unwrap();
    ch.commit(a).await.unwrap();
    // The rolled-back lease spanned two records; committing part of it checkpoints inside
    // the second one.
    assert_eq!(take_n(&ch, 3).await, vec![3, 4, 5]);
    drop(ch);
    let ch = open(dir.path());
    assert_eq!(drain(&ch).await, (6..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn segments_roll_at_the_size_cap_and_committed_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path());
    for i in 0..20 {
        put(&ch, i * 20..(i + 1) * 20).await;
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 4, "{} segments", files.len());
    for f in &files[..files.len() - 1] {
        assert!(
            fs::metadata(f).unwrap().len() <= 4 << 10,
            "{} exceeds the cap",
            f.display()
        );
    }
    assert_eq!(take_n(&ch, 400).await, (0..400).collect::<Vec<_>>());
    eventually("committed segments deleted", || {
        segment_files(dir.path()).len() <= 1
    })
    .await;
    drop(ch);
    let ch = open(dir.path());
    assert_eq!(ch.stats().events, 0);
    put(&ch, 400..401).await;
    assert_eq!(drain(&ch).await, vec![400]);
}

#[tokio::test]
async fn a_batch_larger_than_a_record_is_split_and_restored_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let body = Bytes::from(vec![b'a'; 300 << 10]);
    let big: Vec<Event> = (0..8)
        .map(|i| Event {
            body: body.clone(),
            origin: origin(0),
            offset: i,
            read_at_ms: 0,
            headers: Default::default(),
        })
        .collect();
    {
        let ch = FileChannel::open(
            "c1",
            FileChannelConfig {
                segment_size: ByteSize(1 << 20),
                ..config(dir.path())
            },
        )
        .unwrap();
        let mut r = ch.put(big).await.unwrap();
        assert!(r.wait().await);
        assert!(segment_files(dir.path()).len() >= 2);
    }
    let ch = open(dir.path());
    ch.close();
    let mut got = Vec::new();
    while let Some(l) = ch.take(3).await.unwrap() {
        assert!(l.events.iter().all(|e| e.body == body));
        got.extend(offsets(&l));
        ch.commit(l).await.unwrap();
    }
    assert_eq!(got, (0..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_torn_last_record_is_truncated_at_every_byte_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open(dir.path());
        put(&ch, 0..3).await;
        put(&ch, 3..6).await;
    }
    let seg = segment_files(dir.path()).remove(0);
    let name = seg.file_name().unwrap().to_owned();
    let full = fs::metadata(&seg).unwrap().len();
    let last = events_records(&seg).last().unwrap().0;
    let cuts = (0..segment::HEADER_LEN + 1).chain(last..full);
    for cut in cuts {
        let copy = snapshot(dir.path());
        let file = fs::OpenOptions::new()
            .write(true)
            .open(copy.path().join(&name))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let ch = open(copy.path());
        assert_eq!(ch.counters().corrupt_records, 0, "cut at {cut}");
        let want: Vec<u64> = if cut >= last {
            (0..3).collect()
        } else {
            Vec::new()
        };
        assert_eq!(take_n(&ch, want.len()).await, want, "cut at {cut}");
        if cut >= last {
            let len = fs::metadata(copy.path().join(&name)).unwrap().len();
            assert_eq!(len, last, "the torn tail is truncated (cut at {cut})");
        }
        put(&ch, 10..12).await;
        drop(ch);
        let ch = open(copy.path());
        assert_eq!(drain(&ch).await, vec![10, 11], "after a cut at {cut}");
    }
}

#[tokio::test]
async fn a_flipped_bit_in_a_middle_record_loses_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open(dir.path());
        put(&ch, 0..3).await;
        put(&ch, 3..6).await;
        put(&ch, 6..9).await;
    }
    let seg = segment_files(dir.path()).remove(0);
    let name = seg.file_name().unwrap().to_owned();
    let starts = events_records(&seg);
    assert_eq!(starts.len(), 3);
    let (from, to) = (starts[1].0, starts[2].0);
    let original = fs::read(&seg).unwrap();
    for at in from..to {
        let copy = snapshot(dir.path());
        let mut data = original.clone();
        data[at as usize] ^= 1 << (at % 8);
        fs::write(copy.path().join(&name), &data).unwrap();
        let ch = open(copy.path());
        assert_eq!(ch.counters().corrupt_records, 1, "flip at {at}");
        assert_eq!(ch.stats().events, 6, "flip at {at}");
        assert_eq!(drain(&ch).await, vec![0, 1, 2, 6, 7, 8], "flip at {at}");
    }
}

#[tokio::test]
async fn damage_found_while_reading_back_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = FileChannelConfig {
        segment_size: ByteSize(64 << 20),
        ..config(dir.path())
    };
    let event = |i: u64| Event {
        body: Bytes::from(format!("{i:>1024}")),
        origin: ORIGINS[0].clone(),
        offset: i,
        read_at_ms: 0,
        headers: Default::default(),
    };
    let total = 16 * 1024;
    {
        let ch = FileChannel::open("c1", cfg.clone()).unwrap();
        for b in 0..16 {
            let mut r = ch
                .put((b * 1024..(b + 1) * 1024).map(event).collect())
                .await
                .unwrap();
            assert!(r.wait().await);
        }
    }
    let seg = segment_files(dir.path()).remove(0);
    let records = events_records(&seg);
    let (at, lost) = records[records.len() - 3].clone();
    let ch = FileChannel::open("c1", cfg).unwrap();
    // The reader reads ahead a few MiB, then waits for the sink: damage a record beyond.
    eventually("the reader pauses", || {
        let st = ch.shared.lock();
        st.head_bytes >= reader::READ_AHEAD && st.unread_end().is_some()
    })
    .await;
    assert!(ch.shared.lock().cursor.off < at);
    let file = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xAA], at + 30).unwrap();
    drop(file);
    ch.close();
    let mut got = Vec::new();
    while let Some(l) = ch.take(1000).await.unwrap() {
        for e in &l.events {
            assert_eq!(e.body, event(e.offset).body);
        }
        got.extend(offsets(&l));
        ch.commit(l).await.unwrap();
    }
    let want: Vec<u64> = (0..total).filter(|o| !lost.contains(o)).collect();
    assert_eq!(got, want);
    assert_eq!(ch.counters().corrupt_records, 1);
    assert_eq!(
        ch.stats().events,
        0,
        "the lost events are no longer counted"
    );
    assert_eq!(ch.stats().bytes, 0);
}

#[tokio::test]
async fn a_missing_or_garbage_checkpoint_delivers_everything_again() {
    for damage in ["delete", "garbage", "truncate"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let ch = open(dir.path());
            put(&ch, 0..10).await;
            assert_eq!(take_n(&ch, 4).await, vec![0, 1, 2, 3]);
        }
        let cp = dir.path().join(checkpoint::FILE);
        assert!(cp.exists());
        match damage {
            "delete" => fs::remove_file(&cp).unwrap(),
            "garbage" => fs::write(&cp, b"this is not a checkpoint at all, no no").unwrap(),
            _ => fs::write(&cp, &fs::read(&cp).unwrap()[..10]).unwrap(),
        }
        let ch = open(dir.path());
        assert_eq!(drain(&ch).await, (0..10).collect::<Vec<_>>(), "{damage}");
    }
}

#[tokio::test]
async fn without_a_checkpoint_delivery_restarts_at_the_oldest_segment_left() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open(dir.path());
        for i in 0..10 {
            put(&ch, i * 30..(i + 1) * 30).await;
        }
        assert_eq!(take_n(&ch, 250).await.len(), 250);
        eventually("old segments deleted", || {
            segment::list(dir.path()).unwrap().first() != Some(&1)
        })
        .await;
    }
    fs::remove_file(dir.path().join(checkpoint::FILE)).unwrap();
    let ch = open(dir.path());
    let got = drain(&ch).await;
    let first = got[0];
    assert!(first > 0 && first <= 250, "redelivery starts at {first}");
    assert_eq!(got, (first..300).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_full_channel_makes_put_wait_until_a_commit_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let weight: usize = events(0..4).iter().map(Event::weight).sum();
    let ch = Arc::new(
        FileChannel::open(
            "c1",
            FileChannelConfig {
                capacity: ByteSize(weight as u64),
                ..config(dir.path())
            },
        )
        .unwrap(),
    );
    put(&ch, 0..4).await;
    let blocked = tokio::spawn({
        let ch = ch.clone();
        async move { ch.put(events(4..5)).await.map(|_| ()) }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!blocked.is_finished(), "a full channel makes put wait");
    let lease = ch.take(2).await.unwrap().unwrap();
    assert!(!blocked.is_finished(), "a lease still holds its space");
    ch.commit(lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("put resumed after a commit")
        .unwrap()
        .unwrap();
    assert_eq!(ch.stats().events, 3);
}

#[tokio::test]
async fn capacity_in_events_also_bounds_puts_and_an_oversized_batch_enters_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let ch = Arc::new(
        FileChannel::open(
            "c1",
            FileChannelConfig {
                capacity_events: Some(3),
                ..config(dir.path())
            },
        )
        .unwrap(),
    );
    put(&ch, 0..5).await;
    let blocked = tokio::spawn({
        let ch = ch.clone();
        async move { ch.put(events(5..6)).await.map(|_| ()) }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!blocked.is_finished());
    assert_eq!(take_n(&ch, 3).await, vec![0, 1, 2]);
    assert!(
        !blocked.is_finished(),
        "5 - 3 + 1 = 3 fits only after another commit"
    );
    assert_eq!(take_n(&ch, 1).await, vec![3]);
    tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_full_disk_makes_puts_wait_and_they_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(
        "c1",
        FileChannelConfig {
            fsync: FsyncPolicy::Always,
            ..config(dir.path())
        },
    )
    .unwrap();
    put(&ch, 0..2).await;
    ch.shared.faults.fail_writes.store(true, Ordering::SeqCst);
    let mut r1 = ch.put(events(2..5)).await.unwrap();
    eventually("the writer stalls", || ch.shared.lock().stalled).await;
    let mut r2 = ch.put(events(5..7)).await.unwrap();
    assert!(!r1.is_safe() && !r2.is_safe());
    assert_eq!(take_n(&ch, 2).await, vec![0, 1]);
    ch.shared.faults.fail_writes.store(false, Ordering::SeqCst);
    let resumed = async { r1.wait().await && r2.wait().await };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), resumed)
            .await
            .unwrap()
    );
    assert_eq!(take_n(&ch, 5).await, vec![2, 3, 4, 5, 6]);
    assert_eq!(
        ch.counters().disk_stalls,
        1,
        "one episode, however many retries"
    );
    assert!(!ch.shared.lock().stalled);
    drop(ch);
    let ch = open(dir.path());
    assert_eq!(ch.stats().events, 0);
}

#[tokio::test]
async fn a_failed_fsync_holds_receipts_back_and_is_retried_after_writing_again() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(
        "c1",
        FileChannelConfig {
            fsync: FsyncPolicy::Always,
            ..config(dir.path())
        },
    )
    .unwrap();
    ch.shared.faults.fail_syncs.store(true, Ordering::SeqCst);
    let mut r = ch.put(events(0..5)).await.unwrap();
    eventually("the syncer stalls", || ch.shared.lock().stalled).await;
    assert!(!r.is_safe());
    assert!(
        ch.shared.lock().head.is_empty(),
        "nothing is taken before it is durable"
    );
    ch.shared.faults.fail_syncs.store(false, Ordering::SeqCst);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), r.wait())
            .await
            .unwrap()
    );
    assert_eq!(take_n(&ch, 5).await, (0..5).collect::<Vec<_>>());
    assert_eq!(ch.counters().disk_stalls, 1);
    drop(ch);
    let ch = open(dir.path());
    assert_eq!(ch.stats().events, 0);
    put(&ch, 5..6).await;
    assert_eq!(drain(&ch).await, vec![5]);
}

#[tokio::test]
async fn a_disk_below_min_free_space_holds_puts_back_without_filling_memory() {
    let dir = tempfile::tempdir().unwrap();
    let ch = Arc::new(
        FileChannel::open(
            "c1",
            FileChannelConfig {
                min_free_space: ByteSize(1 << 20),
                ..config(dir.path())
            },
        )
        .unwrap(),
    );
    *ch.shared.faults.free_space.lock().unwrap() = Some(512 << 10);
    let body = Bytes::from(vec![b'z'; 256 << 10]);
    let budget = (MAX_PENDING_BYTES / body.len()) as u64;
    let batch = |i: u64| {
        vec![Event {
            body: body.clone(),
            origin: origin(0),
            offset: i,
            read_at_ms: 0,
            headers: Default::default(),
        }]
    };
    let mut first = ch.put(batch(0)).await.unwrap();
    eventually("the writer stalls", || ch.shared.lock().stalled).await;
    // The writer holds one batch; `budget` more fill the pending budget, and the next waits.
    let mut receipts = Vec::new();
    for i in 1..=budget {
        receipts.push(ch.put(batch(i)).await.unwrap());
    }
    let blocked = tokio::spawn({
        let ch = ch.clone();
        let b = batch(budget + 1);
        async move { ch.put(b).await.map(|_| ()) }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !blocked.is_finished(),
        "puts wait while the disk is short of space"
    );
    assert!(!first.is_safe());
    *ch.shared.faults.free_space.lock().unwrap() = None;
    assert!(
        tokio::time::timeout(Duration::from_secs(10), first.wait())
            .await
            .unwrap()
    );
    tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    for mut r in receipts {
        assert!(r.wait().await);
    }
    let mut got = Vec::new();
    while (got.len() as u64) < budget + 2 {
        let l = ch.take(100).await.unwrap().unwrap();
        got.extend(offsets(&l));
        ch.commit(l).await.unwrap();
    }
    assert_eq!(got, (0..budget + 2).collect::<Vec<_>>());
    assert_eq!(ch.counters().disk_stalls, 1);
}

#[tokio::test]
async fn the_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path());
    let err = FileChannel::open("c2", config(dir.path()))
        .err()
        .expect("second open refused");
    assert!(matches!(err, FileChannelError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(ch);
    open(dir.path());
}

#[tokio::test]
async fn close_refuses_puts_and_ends_takes_once_drained() {
    let dir = tempfile::tempdir().unwrap();
    let ch = Arc::new(open(dir.path()));
    put(&ch, 0..2).await;
    let lease = ch.take(10).await.unwrap().unwrap();
    let taker = tokio::spawn({
        let ch = ch.clone();
        async move { ch.take(10).await.unwrap().map(|l| l.events.len()) }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    ch.close();
    assert!(matches!(
        ch.put(events(2..3)).await,
        Err(ChannelError::Closed { .. })
    ));
    assert_eq!(taker.await.unwrap(), None);
    ch.commit(lease).await.unwrap();
}

#[tokio::test]
async fn the_interval_policy_resolves_receipts_and_keeps_events_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = FileChannel::open(
            "c1",
            FileChannelConfig {
                fsync: FsyncPolicy::Interval,
                ..config(dir.path())
            },
        )
        .unwrap();
        put(&ch, 0..50).await;
    }
    let ch = open(dir.path());
    assert_eq!(drain(&ch).await, (0..50).collect::<Vec<_>>());
}

#[test]
fn invalid_options_fail_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileChannel::open(
        "c1",
        FileChannelConfig {
            segment_size: ByteSize(10),
            ..config(dir.path())
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("segment_size"), "{err}");
}

mod model {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8),
        Take(u8),
        Commit,
        Rollback,
        Restart,
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1u8..40).prop_map(Op::Put),
            6 => (1u8..40).prop_map(Op::Take),
            4 => Just(Op::Commit),
            2 => Just(Op::Rollback),
            1 => Just(Op::Restart),
            1 => Just(Op::Crash),
        ]
    }

    /// The model: the uncommitted events are always the offsets `first..next`, of which the
    /// first `leased` are leased. A crash may deliver some committed events again, so right
    /// after one `first` is unknown until a take shows it.
    async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut dir = tempfile::tempdir().unwrap();
        let mut ch = Some(open(dir.path()));
        let mut leases: VecDeque<Lease> = VecDeque::new();
        let (mut first, mut next, mut leased) = (0u64, 0u64, 0u64);
        let mut after_crash = false;
        let mut crashed = false;
        let mut committed = Vec::new();
        for op in ops {
            let c = ch.as_ref().unwrap();
            match op {
                Op::Put(n) => {
                    put(c, next..next + u64::from(n)).await;
                    next += u64::from(n);
                }
                Op::Take(n) => {
                    if next > first + leased {
                        let l = tokio::time::timeout(Duration::from_secs(10), c.take(n as usize))
                            .await
                            .expect("take")
                            .unwrap()
                            .unwrap();
                        l.events.iter().for_each(check_event);
                        let got = offsets(&l);
                        prop_assert!(!got.is_empty() && got.len() <= n as usize);
                        if after_crash {
                            prop_assert!(
                                got[0] <= first,
                                "redelivery starts at {} > {first}",
                                got[0]
                            );
                            first = got[0];
                            after_crash = false;
                        }
                        let want: Vec<u64> =
                            (first + leased..first + leased + got.len() as u64).collect();
                        prop_assert_eq!(got, want);
                        leased += l.events.len() as u64;
                        leases.push_back(l);
                    }
                }
                Op::Commit => {
                    if let Some(l) = leases.pop_front() {
                        committed.extend(offsets(&l));
                        let k = l.events.len() as u64;
                        c.commit(l).await.unwrap();
                        first += k;
                        leased -= k;
                    }
                }
                Op::Rollback => {
                    if let Some(l) = leases.pop_back() {
                        leased -= l.events.len() as u64;
                        c.rollback(l).unwrap();
                    }
                }
                Op::Restart => {
                    leases.clear();
                    leased = 0;
                    drop(ch.take());
                    ch = Some(open(dir.path()));
                }
                Op::Crash => {
                    leases.clear();
                    leased = 0;
                    let copy = snapshot(dir.path());
                    drop(ch.take());
                    dir = copy;
                    ch = Some(open(dir.path()));
                    after_crash = true;
                    crashed = true;
                }
            }
            if !after_crash {
                prop_assert_eq!(ch.as_ref().unwrap().stats().events as u64, next - first);
            }
        }
        let c = ch.as_ref().unwrap();
        while let Some(l) = leases.pop_back() {
            c.rollback(l).unwrap();
        }
        committed.extend(drain(c).await);
        prop_assert_eq!(c.stats().events, 0);
        // Every event arrives, first deliveries in order; repeats only after a crash.
        let mut seen = 0u64;
        let mut repeats = 0;
        for o in committed {
            if o == seen {
                seen += 1;
            } else {
                prop_assert!(o < seen, "event {o} arrived before {seen}");
                repeats += 1;
            }
        }
        prop_assert_eq!(seen, next);
        prop_assert!(crashed || repeats == 0, "{repeats} repeats without a crash");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Against a model queue, with restarts and crashes: every event is delivered, first
        /// deliveries in put order, and nothing committed returns after a clean restart.
        #[test]
        fn transactions_and_restarts_match_a_model_queue(
            ops in proptest::collection::vec(op(), 1..80)
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            rt.block_on(run(ops))?;
        }
    }
}

/// Hostile segment files and checkpoints: recovery and the reader on whatever a disk, a crash
/// or a person left in the directory (issue 15).
mod hostile {
    use proptest::prelude::*;

    use super::state::Pos;
    use super::*;
    use crate::fuzzing::{hostile, largest_allocation, mutated};

    /// Two segments of valid records, the second mutated when `second` is set, else the first.
    fn segments() -> impl Strategy<Value = [Vec<u8>; 2]> {
        let valid = || record::tests::valid_records();
        let damaged = || mutated(valid(), record::tests::DICTIONARY);
        let with_header = |id: u64, records: Vec<u8>| {
            let mut file = segment::header(id).to_vec();
            file.extend_from_slice(&records);
            file
        };
        (valid(), damaged(), any::<bool>(), any::<bool>()).prop_map(
            move |(good, bad, second, header_too)| {
                let (one, two) = if second { (good, bad) } else { (bad, good) };
                let mut files = [with_header(1, one), with_header(2, two)];
                if header_too {
                    // The mutations hit the header as well as the records.
                    let i = usize::from(second);
                    files[i][3] ^= 0x20;
                }
                files
            },
        )
    }

    /// A checkpoint: none, a valid one somewhere in the segments, or hostile bytes.
    fn checkpoint_file() -> impl Strategy<Value = Option<Vec<u8>>> {
        let pos = (1u64..4, 0u64..600, 0u32..4).prop_map(|(seg, off, skip)| Pos { seg, off, skip });
        prop_oneof![
            Just(None),
            pos.clone()
                .prop_map(|p| Some(checkpoint::encode(p).to_vec())),
            hostile(
                pos.prop_map(|p| checkpoint::encode(p).to_vec()),
                checkpoint::tests::DICTIONARY
            )
            .prop_map(Some),
        ]
    }

    /// Checks recovery's account of one segment against the file it left: from its header on,
    /// each position is a verified record or the start of a hole recovery reported (with its
    /// position), up to the end it kept; the last segment's torn tail is cut off.
    fn check_account(
        dir: &Path,
        id: u64,
        meta: &state::SegMeta,
        last: bool,
    ) -> Result<(), TestCaseError> {
        let data = fs::read(segment::path(dir, id)).unwrap();
        prop_assert!(meta.len as usize <= data.len() && meta.len > segment::HEADER_LEN);
        if last {
            prop_assert_eq!(meta.len as usize, data.len(), "the torn tail is truncated");
        }
        let mut pos = segment::HEADER_LEN;
        let mut holes = meta.holes.iter().peekable();
        while pos < meta.len {
            if let Some(&&(from, to)) = holes.peek().filter(|h| h.0 == pos) {
                prop_assert!(to > from && to <= meta.len, "hole {}..{}", from, to);
                holes.next();
                pos = to;
                continue;
            }
            match record::parse(&data[pos as usize..meta.len as usize]) {
                Parsed::Record { len, .. } => pos += len as u64,
                other => prop_assert!(
                    false,
                    "{:?} at {} is neither a record nor a hole",
                    other,
                    pos
                ),
            }
        }
        prop_assert_eq!(pos, meta.len);
        prop_assert!(holes.next().is_none(), "a hole beyond the segment's end");
        Ok(())
    }

    async fn drain_all(ch: &FileChannel) -> usize {
        ch.close();
        let mut n = 0;
        while let Some(lease) = tokio::time::timeout(Duration::from_secs(10), ch.take(100))
            .await
            .expect("take returns")
            .unwrap()
        {
            n += lease.events.len();
            ch.commit(lease).await.unwrap();
        }
        n
    }

    proptest! {
        /// Damaged segments and checkpoints never fail recovery nor make it panic; it
        /// accounts for every byte (verified records, holes named by their position, a
        /// truncated tail), allocates no more than a bound of the files' size, and the reader
        /// then delivers exactly the events recovery counted.
        #[test]
        fn damaged_segments_are_recovered_and_read_back(
            files in segments(),
            checkpoint in checkpoint_file(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            for (i, data) in files.iter().enumerate() {
                fs::write(segment::path(dir.path(), i as u64 + 1), data).unwrap();
            }
            if let Some(c) = &checkpoint {
                fs::write(dir.path().join(checkpoint::FILE), c).unwrap();
            }
            let copy = snapshot(dir.path());
            let total: usize = files.iter().map(Vec::len).sum();
            let (rec, largest) = largest_allocation(|| recovery::recover(dir.path(), "c1"));
            let rec = rec.unwrap();
            prop_assert!(largest <= 4096 + 64 * total, "{} bytes allocated", largest);
            let last = rec.segments.keys().last().copied();
            for (&id, meta) in &rec.segments {
                check_account(dir.path(), id, meta, Some(id) == last)?;
            }
            prop_assert!(rec.corrupt as usize >= rec.segments.values().map(|m| m.holes.len()).sum::<usize>());

            let ch = open(copy.path());
            let counted = ch.stats().events;
            prop_assert_eq!(counted, rec.events);
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let delivered = rt.block_on(drain_all(&ch));
            prop_assert_eq!(delivered, counted);
            prop_assert_eq!(ch.stats().events, 0);
        }
    }
}
