//! The source run against a memory channel and a sink played by the test.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::SystemTime;

use sluice_channels::lifecycle::ShutdownTrigger;
use sluice_channels::units::HumanDuration;
use sluice_channels::{Channel, MemoryChannel, MemoryChannelConfig};

use super::*;
use crate::fanout::Fanout;

const LONG: Duration = Duration::from_secs(30);

/// A spool folder, a state folder, and a source over them.
struct Setup {
    _tmp: tempfile::TempDir,
    spool: PathBuf,
    state: PathBuf,
    cfg: SpoolDirConfig,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, state) = (tmp.path().join("spool"), tmp.path().join("state"));
        fs::create_dir_all(&spool).unwrap();
        let mut cfg = SpoolDirConfig::for_dir(&spool);
        cfg.ready_after = HumanDuration(Duration::from_millis(300));
        cfg.poll_interval = HumanDuration(Duration::from_millis(50));
        cfg.batch_size = 10;
        Setup {
            _tmp: tmp,
            spool,
            state,
            cfg,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.spool.join(name)
    }

    /// Writes `name` with `lines` lines numbered after its stem (the last one unterminated),
    /// modified a minute ago: ready at once.
    fn drop_aged(&self, name: &str, lines: usize) {
        let tag = name.trim_end_matches(".log");
        fs::write(self.path(name), numbered(tag, 0..lines, false)).unwrap();
        age(&self.path(name));
    }

    fn start(&self, capacity: usize, blocking: Option<Handle>) -> Run {
        let channel = Arc::new(MemoryChannel::new(
            "c1",
            MemoryChannelConfig {
                capacity,
                capacity_bytes: 64 << 20,
            },
        ));
        let trigger = ShutdownTrigger::new();
        let metrics = Arc::new(SourceMetrics::default());
        let ctx = SourceContext {
            name: "r1".into(),
            channels: Arc::new(Fanout::single(channel.clone())),
            state_dir: self.state.clone(),
            data_dir: self.state.clone(),
            host: "host".into(),
            shutdown: trigger.subscribe(),
            metrics: metrics.clone(),
        };
        let mut source = SpoolDirSource::new(self.cfg.clone(), ctx);
        source.blocking = blocking;
        Run {
            channel,
            trigger,
            metrics,
            task: tokio::spawn(source.run()),
            lines: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        serde_json::from_slice(&fs::read(self.state.join("spooldir.json")).unwrap()).unwrap()
    }
}

/// Lines `name N` for N in `range`, `\n`-terminated but for the last unless `terminated`.
fn numbered(name: &str, range: std::ops::Range<usize>, terminated: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let end = range.end;
    for i in range {
        out.extend_from_slice(format!("{name} {i}").as_bytes());
        if terminated || i + 1 < end {
            out.push(b'\n');
        }
    }
    out
}

/// Sets the file's modification time a minute back.
fn age(path: &Path) {
    let f = File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(data).unwrap();
}

/// A running source and what the test's sink took from its channel.
struct Run {
    channel: Arc<MemoryChannel>,
    trigger: ShutdownTrigger,
    metrics: Arc<SourceMetrics>,
    task: tokio::task::JoinHandle<Result<(), SourceError>>,
    /// (file name, body) of every line taken, in order.
    lines: Arc<Mutex<Vec<(String, String)>>>,
}

impl Run {
    /// Takes and commits what the channel holds, until `cond` holds.
    async fn drain_until(&self, what: &str, mut cond: impl FnMut(&Run) -> bool) {
        let end = Instant::now() + LONG;
        while !cond(self) {
            assert!(Instant::now() < end, "timed out waiting for: {what}");
            let take = self.channel.take(1000);
            if let Ok(Ok(Some(lease))) = tokio::time::timeout(Duration::from_millis(20), take).await
            {
                {
                    let mut lines = self.lines.lock().unwrap();
                    for e in &lease.events {
                        lines.push((
                            e.origin.file.clone(),
                            String::from_utf8_lossy(&e.body).into_owned(),
                        ));
                    }
                }
                self.channel.commit(lease).await.unwrap();
            }
        }
    }

    /// Waits for `cond` without taking anything from the channel.
    async fn wait_until(&self, what: &str, mut cond: impl FnMut(&Run) -> bool) {
        let end = Instant::now() + LONG;
        while !cond(self) {
            assert!(Instant::now() < end, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn events(&self) -> u64 {
        SourceMetrics::get(&self.metrics.events)
    }

    /// The bodies taken from file `name`, in order.
    fn bodies(&self, name: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|(f, _)| f == name)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Stops the source (drain, then abort) and waits for it.
    async fn stop(self) -> Self {
        self.trigger.advance(Phase::Draining);
        self.trigger.advance(Phase::Aborting);
        let Run {
            channel,
            trigger,
            metrics,
            task,
            lines,
        } = self;
        task.await.unwrap().unwrap();
        Run {
            channel,
            trigger,
            metrics,
            task: tokio::spawn(async { Ok(()) }),
            lines,
        }
    }
}

fn want(name: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{name} {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_was_empty_when_it_appeared_is_read_once_written() {
    // `{ sleep 1; seq 1 1000; } > spool/a.log`: the file appears empty, its lines come later.
    let s = Setup::new();
    let mut writer = File::create(s.path("a.log")).unwrap();
    let run = s.start(100_000, None);
    // The writer's pause is the scenario (not a synchronization): the source sees the file
    // empty for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.write_all(&numbered("a", 0..1000, true)).unwrap();
    drop(writer);
    run.drain_until("a.log completed", |_| s.path("a.log.COMPLETED").exists())
        .await;
    assert_eq!(run.bodies("a.log"), want("a", 0..1000));
    assert!(!s.path("a.log.FAILED").exists());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_written_is_read_whole_once_it_stays_unchanged() {
    let s = Setup::new();
    let path = s.path("slow.log");
    File::create(&path).unwrap();
    // A slow writer: 100 lines, 15 ms apart, in pieces that cut lines in two.
    let writer = std::thread::spawn(move || {
        let data = numbered("slow", 0..100, false);
        for piece in data.chunks(data.len() / 100 + 1) {
            append(&path, piece);
            std::thread::sleep(Duration::from_millis(15));
        }
    });
    let run = s.start(100_000, None);
    run.drain_until("slow.log completed", |_| {
        s.path("slow.log.COMPLETED").exists()
    })
    .await;
    writer.join().unwrap();
    assert_eq!(run.bodies("slow.log"), want("slow", 0..100));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_at_the_end_of_a_growing_file_follows_it_until_it_is_quiet() {
    // The file was quiet when it was picked up; its writer comes back while it is read (the
    // channel is full, the source waits in the middle of it) and writes for a while more.
    let s = Setup::new();
    s.drop_aged("grow.log", 100);
    let path = s.path("grow.log");
    let run = s.start(10, None);
    run.wait_until("the source waits on the full channel", |r| r.events() >= 10)
        .await;
    append(&path, b"\n");
    let writer = std::thread::spawn(move || {
        for i in 100..160 {
            append(&path, format!("grow {i}\n").as_bytes());
            std::thread::sleep(Duration::from_millis(15));
        }
    });
    run.drain_until("grow.log completed", |_| {
        s.path("grow.log.COMPLETED").exists() || s.path("grow.log.FAILED").exists()
    })
    .await;
    writer.join().unwrap();
    assert!(
        s.path("grow.log.COMPLETED").exists(),
        "completed, not set aside"
    );
    assert_eq!(run.bodies("grow.log"), want("grow", 0..160));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_completed_only_after_the_empty_grace() {
    let mut s = Setup::new();
    s.cfg.order = Order::Name;
    s.cfg.empty_grace = HumanDuration(Duration::from_secs(3));
    File::create(s.path("a-empty.log")).unwrap();
    s.drop_aged("b.log", 5);
    let run = s.start(1000, None);
    run.drain_until("b.log completed", |_| s.path("b.log.COMPLETED").exists())
        .await;
    assert!(
        s.path("a-empty.log").exists(),
        "an empty file waits for the grace; b.log came after it by name"
    );
    run.drain_until("the empty file completed after its grace", |_| {
        s.path("a-empty.log.COMPLETED").exists()
    })
    .await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_after_its_end_was_read_is_set_aside_not_completed() {
    let s = Setup::new();
    s.drop_aged("late.log", 10);
    let run = s.start(1000, None);
    // Its last line has no terminator: it is put only once the end of the file was reached
    // for good.
    run.wait_until("the whole file put", |r| r.events() == 10)
        .await;
    append(&s.path("late.log"), b"\nappended after the end\n");
    run.drain_until("late.log set aside", |_| s.path("late.log.FAILED").exists())
        .await;
    assert!(!s.path("late.log.COMPLETED").exists());
    assert_eq!(SourceMetrics::get(&run.metrics.files_failed), 1);
    assert_eq!(run.bodies("late.log"), want("late", 0..10));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_read_is_not_a_fault_of_the_file_and_a_restart_reads_it() {
    let s = Setup::new();
    s.drop_aged("a.log", 50);
    // A runtime that is gone: every blocking task given to it is cancelled, as when the
    // agent's runtime shuts down under a running source.
    let handle = std::thread::spawn(|| {
        let dead = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = dead.handle().clone();
        drop(dead);
        handle
    })
    .join()
    .unwrap();
    let run = s.start(1000, Some(handle));
    // The source stops by itself: a cancelled read means the runtime is going away.
    let Run { task, .. } = run;
    tokio::time::timeout(LONG, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(s.path("a.log").exists(), "left in place");
    assert!(!s.path("a.log.FAILED").exists(), "not a fault of the file");
    // A restart reads it.
    let run = s.start(1000, None);
    run.drain_until("a.log completed", |_| s.path("a.log.COMPLETED").exists())
        .await;
    assert_eq!(run.bodies("a.log"), want("a", 0..50));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_a_file_is_read_or_still_written_leaves_it_for_the_restart() {
    let mut s = Setup::new();
    s.drop_aged("big.log", 200);
    let path = s.path("big.log");
    // Stopped with the channel full, in the middle of the file, some of its lines safe.
    let run = s.start(10, None);
    run.wait_until("the source waits on the full channel", |r| r.events() >= 10)
        .await;
    run.drain_until("some lines delivered", |r| r.bodies("big.log").len() >= 10)
        .await;
    let first = run.bodies("big.log");
    let run = run.stop().await;
    assert!(path.exists() && !s.path("big.log.FAILED").exists());
    let cp = s.checkpoint();
    assert_eq!(cp.files.len(), 1, "{cp:?}");
    assert!(cp.files[0].offset > 0);
    drop(run);
    // Resumed, and stopped at the end of the file while it is still being written (it was
    // written just now, and must stay unchanged for 10 s before its end is the end of the
    // file).
    append(&path, b"\nbig 200\n");
    s.cfg.ready_after = HumanDuration(Duration::from_secs(10));
    let run = s.start(100_000, None);
    run.drain_until("every line so far delivered", |r| {
        r.bodies("big.log").last().is_some_and(|l| l == "big 200")
    })
    .await;
    let second = run.bodies("big.log");
    let resumed_at: usize = second[0][4..].parse().unwrap();
    assert!(resumed_at <= first.len(), "no gap");
    assert_eq!(second, want("big", resumed_at..201));
    let run = run.stop().await;
    assert!(path.exists() && !s.path("big.log.FAILED").exists());
    let cp = s.checkpoint();
    assert_eq!(cp.files.len(), 1);
    assert_eq!(cp.files[0].offset, fs::metadata(&path).unwrap().len());
    drop(run);
    // The restart reads on from the checkpoint, repeats nothing, and completes it.
    s.cfg.ready_after = HumanDuration(Duration::from_millis(300));
    let run = s.start(100_000, None);
    run.drain_until("big.log completed", |_| {
        s.path("big.log.COMPLETED").exists()
    })
    .await;
    assert_eq!(run.bodies("big.log"), Vec::<String>::new());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_channel_stops_the_source_without_setting_the_file_aside() {
    let s = Setup::new();
    s.drop_aged("a.log", 100);
    let run = s.start(10, None);
    run.wait_until("the source waits on the full channel", |r| r.events() >= 10)
        .await;
    run.channel.close();
    // What is in the channel is still delivered; then the source ends by itself.
    run.drain_until("the source stopped", |r| r.task.is_finished())
        .await;
    assert!(s.path("a.log").exists() && !s.path("a.log.FAILED").exists());
    assert_eq!(s.checkpoint().files.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_are_all_read_and_completed() {
    let s = Setup::new();
    let n = 2000;
    for i in 0..n {
        s.drop_aged(&format!("f{i:05}.log"), 2);
    }
    let run = s.start(100_000, None);
    run.drain_until("every file completed", |r| {
        SourceMetrics::get(&r.metrics.files_completed) == n as u64
    })
    .await;
    assert_eq!(run.lines.lock().unwrap().len(), 2 * n);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_deleted_and_made_again_at_once_loses_no_file_dropped_into_it_right_after() {
    // Nothing but file-system events wakes the source: a file that appears between the
    // listing that finds the new folder and its new watch is found only if the source lists
    // again once it watches (found in CI: `rm -r spool; mkdir spool; mv .d.log spool/d.log`,
    // and d.log waited for the hour-long poll).
    let mut s = Setup::new();
    s.cfg.poll_interval = HumanDuration(Duration::from_secs(3600));
    s.drop_aged("first.log", 1);
    let run = s.start(100_000, None);
    run.drain_until("first.log read", |r| r.bodies("first.log").len() == 1)
        .await;
    for i in 0..40 {
        fs::remove_dir_all(&s.spool).unwrap();
        fs::create_dir(&s.spool).unwrap();
        let (name, hidden) = (format!("f{i}.log"), s.path(&format!(".f{i}.tmp")));
        fs::write(&hidden, numbered(&format!("f{i}"), 0..3, true)).unwrap();
        age(&hidden);
        fs::rename(&hidden, s.path(&name)).unwrap();
        run.drain_until(&format!("{name} read, in folder {i}"), |r| {
            r.bodies(&name).len() == 3
        })
        .await;
        assert_eq!(run.bodies(&name), want(&format!("f{i}"), 0..3));
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiline_joins_stack_traces_and_the_end_of_the_file_ends_the_last_event() {
    let mut s = Setup::new();
    s.cfg.multiline = Some(
        serde_json::from_str(r#"{"start": "^\\d{4}-", "max_lines": 3, "timeout": "1h"}"#).unwrap(),
    );
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!("2026-12-01 event {i}\n\tat a.B.c(B.java:{i})\n"));
    }
    text.push_str("2026-12-01 last\n\tat x\n\tat y\n\tat z\n\tat w");
    fs::write(s.path("java.log"), &text).unwrap();
    age(&s.path("java.log"));
    let run = s.start(100_000, None);
    run.drain_until("java.log completed", |_| {
        s.path("java.log.COMPLETED").exists()
    })
    .await;
    let mut want: Vec<String> = (0..50)
        .map(|i| format!("2026-12-01 event {i}\n\tat a.B.c(B.java:{i})"))
        .collect();
    want.push("2026-12-01 last\n\tat x\n\tat y".into());
    want.push("\tat z\n\tat w".into());
    assert_eq!(run.bodies("java.log"), want);
    run.stop().await;
}

mod hostile {
    use proptest::prelude::*;
    use sluice_channels::fuzzing::{JSON, hostile, largest_allocation};

    use super::*;

    /// The format's keys, planted with JSON's tokens.
    const KEYS: &[&[u8]] = &[
        b"\"files\":",
        b"\"path\":",
        b"\"dev\":",
        b"\"ino\":",
        b"\"offset\":",
    ];

    fn checkpoint() -> impl Strategy<Value = Vec<u8>> {
        let file = ("[a-z/]{0,12}", any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(path, dev, ino, offset)| InProgress {
                path: path.into(),
                dev,
                ino,
                offset,
            },
        );
        proptest::collection::vec(file, 0..4)
            .prop_map(|files| serde_json::to_vec(&Checkpoint { files }).unwrap())
    }

    proptest! {
        /// Hostile bytes, and checkpoints with mutations: the decoder the source reads its
        /// checkpoint with gives an error (the file is then set aside), or files in progress
        /// that re-encode to themselves; it allocates no more than a bound of the file's size.
        #[test]
        fn hostile_checkpoints_decode_or_fail(data in hostile(checkpoint(), &[JSON, KEYS].concat())) {
            let (decoded, largest) =
                largest_allocation(|| Checkpoint::decode(&data));
            prop_assert!(largest <= 4096 + 64 * data.len(), "{} bytes allocated", largest);
            if let Ok(c) = decoded {
                let again = serde_json::to_vec(&c).unwrap();
                prop_assert_eq!(Checkpoint::decode(&again).unwrap(), c);
            }
        }
    }
}

#[test]
fn only_the_folder_itself_moved_or_deleted_takes_its_watch_away() {
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
    use notify::{Event, EventKind};
    let folder = Path::new("/spool");
    let event = |kind, path: &str| Event::new(kind).add_path(PathBuf::from(path));
    let moved = EventKind::Modify(ModifyKind::Name(RenameMode::From));
    let removed = EventKind::Remove(RemoveKind::Folder);
    assert!(the_folder_went(&event(moved, "/spool"), folder));
    assert!(the_folder_went(&event(removed, "/spool"), folder));
    // Files in it moved out or deleted, or the folder changed: the watch stays.
    assert!(!the_folder_went(&event(moved, "/spool/a.log"), folder));
    assert!(!the_folder_went(&event(removed, "/spool/sub"), folder));
    let created = EventKind::Create(CreateKind::File);
    assert!(!the_folder_went(&event(created, "/spool"), folder));
}
