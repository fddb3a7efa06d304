//! A writer that appends numbered lines at thousands per second to a log file and rotates it
//! by one of the rotation schemes, and the parsing of its lines: the workload of the taildir
//! end-to-end tests, whichever sink they read back from; and the start and stop of their agent.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::agent::{Agent, wait_until};

/// Lines written between pauses of the writer.
pub const BURST: u64 = 20;
/// The writer's pause after each burst: about 4,000 lines/s with the write time.
pub const PAUSE: Duration = Duration::from_millis(4);
/// Lines a writer still writes to a file after rotating it away (it has not reopened yet).
pub const LATE_LINES: u64 = 3;
/// Padding that makes lines about 100 bytes.
pub const PAD: &str =
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor";

/// One line as the writer writes it: which file generation it went to and its sequence
/// number in the writer's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Line {
    /// The file generation (0 for the first file, one more after each rotation).
    pub file: u32,
    /// The line's number in the writer's stream, from 0, over all generations.
    pub seq: u64,
}

impl Line {
    /// Parses one line without its terminator; `None` if the writer did not write it.
    pub fn parse(line: &str) -> Option<Line> {
        let mut parts = line.splitn(3, ' ');
        let file = parts.next()?.strip_prefix('f')?.parse().ok()?;
        let seq = parts.next()?.strip_prefix('s')?.parse().ok()?;
        (parts.next()? == PAD).then_some(Line { file, seq })
    }
}

/// The line `seq` as written to generation `file`, with its `\n`. Every line has the same
/// length.
pub fn text(file: u32, seq: u64) -> String {
    format!("f{file:04} s{seq:08} {PAD}\n")
}

/// How the writer rotates its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `app.log` → `app.log.N`, then a new `app.log`.
    RenameCreate,
    /// `app.log` deleted, then a new `app.log`.
    DeleteRecreate,
    /// `current.log` is a symbolic link re-pointed to a new file.
    SymlinkSwap,
    /// `app.log` copied to `app.log.N`, then truncated.
    CopyTruncate,
}

impl Scheme {
    /// The name the writer's application logs to, the one a tailer follows.
    pub fn live_name(self) -> &'static str {
        match self {
            Scheme::SymlinkSwap => "current.log",
            _ => "app.log",
        }
    }
}

/// Opens `path` for appending, creating it.
pub fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// A writer thread's progress, shared with the test.
#[derive(Default)]
pub struct Progress {
    /// Rotations done so far.
    pub rotations: AtomicU32,
    /// Lines written so far (updated after each burst and rotation).
    pub written: AtomicU64,
    /// Set by the test to make the writer stop after its current burst.
    pub stop: AtomicBool,
    /// Held by the writer while it rotates: a test that holds it keeps the current file in
    /// place (the writer appends on, and waits for it only when the next rotation is due).
    pub rotation: Mutex<()>,
}

/// Writes `total` lines (fewer if `progress.stop` is set first) at thousands per second into
/// `logs`, rotating by `scheme` every `every` lines. `caught_up(seq)` tells whether the agent
/// has emitted line `seq` (used by copytruncate only, see there). Returns the lines written
/// inside a copytruncate window.
pub fn write_rotating(
    logs: &Path,
    scheme: Scheme,
    total: u64,
    every: u64,
    progress: &Progress,
    caught_up: &(dyn Fn(u64) -> bool + Sync),
) -> HashSet<u64> {
    let live = logs.join(scheme.live_name());
    let data = logs.join("data");
    let target = |g: u32| data.join(format!("app-{g}.log"));
    let mut file_no = 0u32;
    let mut f = if scheme == Scheme::SymlinkSwap {
        fs::create_dir_all(&data).unwrap();
        let f = append(&target(0));
        std::os::unix::fs::symlink(target(0), &live).unwrap();
        f
    } else {
        append(&live)
    };
    let mut window = HashSet::new();
    let mut seq = 0u64;
    let mut next_rotation = every;
    while seq < total && !progress.stop.load(Ordering::SeqCst) {
        for _ in 0..BURST.min(total - seq) {
            f.write_all(text(file_no, seq).as_bytes()).unwrap();
            seq += 1;
        }
        progress.written.store(seq, Ordering::SeqCst);
        std::thread::sleep(PAUSE);
        if seq < next_rotation || seq >= total {
            continue;
        }
        next_rotation += every;
        let _rotating = progress.rotation.lock().unwrap();
        match scheme {
            Scheme::RenameCreate | Scheme::DeleteRecreate => {
                if scheme == Scheme::RenameCreate {
                    fs::rename(&live, logs.join(format!("app.log.{file_no}"))).unwrap();
                } else {
                    fs::remove_file(&live).unwrap();
                }
                for _ in 0..LATE_LINES {
                    f.write_all(text(file_no, seq).as_bytes()).unwrap();
                    seq += 1;
                }
                file_no += 1;
                f = append(&live);
            }
            Scheme::SymlinkSwap => {
                let next = append(&target(file_no + 1));
                let tmp = logs.join(".current.tmp");
                std::os::unix::fs::symlink(target(file_no + 1), &tmp).unwrap();
                fs::rename(&tmp, &live).unwrap();
                for _ in 0..LATE_LINES {
                    f.write_all(text(file_no, seq).as_bytes()).unwrap();
                    seq += 1;
                }
                file_no += 1;
                f = next;
            }
            Scheme::CopyTruncate => {
                // Lines the tailer has not read when the truncate comes are lost: wait until it
                // has read everything, so that the only lines at risk are those written
                // between the copy and the truncate (the window no tailer can close).
                let last = seq - 1;
                wait_until(
                    Duration::from_secs(20),
                    "the tailer caught up before the copy",
                    || caught_up(last),
                );
                fs::copy(&live, logs.join(format!("app.log.{file_no}"))).unwrap();
                for _ in 0..LATE_LINES {
                    f.write_all(text(file_no, seq).as_bytes()).unwrap();
                    window.insert(seq);
                    seq += 1;
                }
                OpenOptions::new()
                    .write(true)
                    .open(&live)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                file_no += 1;
            }
        }
        progress.written.store(seq, Ordering::SeqCst);
        progress.rotations.fetch_add(1, Ordering::SeqCst);
    }
    f.flush().unwrap();
    window
}

/// Waits until the agent's taildir source has started (its first scan is done).
pub fn started(agent: &Agent) {
    wait_until(
        Duration::from_secs(30),
        "the taildir source started",
        || agent.stderr_text().contains("taildir source started"),
    );
}

/// Stops the agent with SIGTERM and asserts that it exits 0 within 30 s.
pub fn stop(agent: &mut Agent) {
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "agent failed: {}", agent.stderr_text());
}
