//! End-to-end: the spooling-directory source through the durable file channel to the console
//! sink, running the real `sluice` binary: killed with SIGKILL at random moments, and on a
//! disk that fills up.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::agent::{Agent, drop_file, free_port, http_get, wait_until};

const LONG: Duration = Duration::from_secs(180);

fn config(spool: &Path, data: &Path, channel: &str) -> String {
    format!(
        r#"
a1:
  data_dir: {data}
  shutdown_timeout: 20s
  sources:
    r1: {{ type: spooldir, dir: {spool}, channel: c1, batch_size: 300 }}
  channels:
    c1: {{ type: file, {channel} }}
  sinks:
    k1: {{ type: console, channel: c1, batch_size: 700 }}
"#,
        data = data.display(),
        spool = spool.display(),
    )
}

/// The line `i` of file `tag`.
fn line(tag: &str, i: usize) -> String {
    format!("{tag} {i:07} some log text {}", "x".repeat(i % 61))
}

fn file_content(tag: &str, lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        out.extend_from_slice(line(tag, i).as_bytes());
        out.push(b'\n');
    }
    out
}

/// The complete lines of every run's stdout in `dir`, run after run (a line cut short by a
/// kill, at the end of a run's output, is dropped: it was never committed).
fn all_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for run in 0.. {
        let Ok(out) = fs::read(dir.join(format!("stdout.{run}"))) else {
            break;
        };
        let mut parts: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        parts.pop();
        lines.extend(
            parts
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned()),
        );
    }
    lines
}

/// What the combined output shows.
#[derive(Debug, Default)]
struct Delivery {
    /// Per file: how many of its lines were delivered (the first `n`, in order).
    delivered: BTreeMap<String, usize>,
    /// Lines delivered again (repeats of earlier lines).
    duplicates: usize,
    /// The first line that broke file order or whose content is wrong.
    problem: Option<String>,
}

/// Checks `lines`: each file's first deliveries must come in order without gaps; any other
/// line must repeat an earlier one; every line must be intact.
fn check(lines: &[String]) -> Delivery {
    let mut d = Delivery::default();
    for l in lines {
        let mut parts = l.splitn(3, ' ');
        let (tag, seq) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let Ok(i) = seq.parse::<usize>() else {
            d.problem.get_or_insert(format!("unexpected line {l:?}"));
            continue;
        };
        if *l != line(tag, i) {
            d.problem.get_or_insert(format!("damaged line {l:?}"));
        }
        let next = d.delivered.entry(tag.to_owned()).or_default();
        if i == *next {
            *next += 1;
        } else if i < *next {
            d.duplicates += 1;
        } else {
            d.problem.get_or_insert(format!(
                "{tag}: line {i} arrived before line {next} (a gap or reordering)"
            ));
        }
    }
    d
}

/// A small xorshift generator; the seed is printed so that a failing run can be repeated
/// with `SLUICE_TEST_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("SLUICE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("SLUICE_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_line_and_keeps_every_file_in_order() {
    let mut rng = Rng::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let (spool, data, runs) = (
        tmp.path().join("spool"),
        tmp.path().join("data"),
        tmp.path().join("run"),
    );
    fs::create_dir_all(&spool).unwrap();
    // A relative `dir` lands under the agent's data_dir.
    let conf = config(
        &spool,
        &data,
        "dir: channels/c1, segment_size: 1MiB, capacity: 8MiB, min_free_space: 1MiB",
    );
    let (files, per_file, kills) = (36usize, 9_000usize, 24);
    let mut dropped = 0;
    for k in 0..kills {
        // Files keep arriving while the agent is killed and restarted.
        let target = (k + 1) * files / (kills + 4);
        while dropped < target {
            let tag = format!("f{dropped:02}");
            drop_file(&spool, &format!("{tag}.log"), &file_content(&tag, per_file));
            dropped += 1;
        }
        let mut agent = Agent::start(&runs, "a1", &conf);
        std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        assert!(
            agent.running(),
            "the agent died by itself:\n{}",
            agent.stderr_text()
        );
        agent.kill();
        let log = agent.stderr_text();
        for bad in [
            "panicked",
            "corrupt record",
            "corrupt end",
            "damaged segment",
        ] {
            assert!(!log.contains(bad), "after a kill: {bad}\n{log}");
        }
    }
    while dropped < files {
        let tag = format!("f{dropped:02}");
        drop_file(&spool, &format!("{tag}.log"), &file_content(&tag, per_file));
        dropped += 1;
    }
    let mut last = Agent::start(&runs, "a1", &conf);
    wait_until(LONG, "every line delivered", || {
        let d = check(&all_lines(&runs));
        d.problem.is_some()
            || (d.delivered.len() == files && d.delivered.values().all(|&n| n == per_file))
    });
    last.signal(libc::SIGTERM);
    assert!(last.wait_exit(LONG).success(), "{}", last.stderr_text());

    let lines = all_lines(&runs);
    let d = check(&lines);
    assert_eq!(d.problem, None);
    for i in 0..files {
        assert_eq!(
            d.delivered.get(&format!("f{i:02}")),
            Some(&per_file),
            "file f{i:02}"
        );
    }
    assert_eq!(lines.len(), files * per_file + d.duplicates);
    let left: Vec<PathBuf> = fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".COMPLETED"))
        .collect();
    assert!(left.is_empty(), "files not completed: {left:?}");
    eprintln!(
        "{kills} kills, {} lines delivered, {} duplicates of in-flight lines",
        files * per_file,
        d.duplicates
    );
}

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`, or explains why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 << 10];
    loop {
        if let Err(e) = f.write_all(&block) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    let _ = f.sync_all();
    path
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

#[test]
fn a_full_disk_holds_the_source_back_and_the_agent_resumes_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, data, runs, chan) = (
        tmp.path().join("spool"),
        tmp.path().join("data"),
        tmp.path().join("run"),
        tmp.path().join("chan"),
    );
    fs::create_dir_all(&spool).unwrap();
    let _mount = match Tmpfs::mount(&chan, "8m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIPPED the full-disk test (a_full_disk_...): cannot mount a tmpfs for the \
                 channel (needs root or CAP_SYS_ADMIN): {why}"
            );
            return;
        }
    };
    let conf = config(
        &spool,
        &data,
        &format!(
            "dir: {}, segment_size: 1MiB, min_free_space: 0",
            chan.display()
        ),
    );
    let port = free_port();
    let conf = conf.replace(
        "  sources:",
        &format!("  http: 127.0.0.1:{port}\n  sources:"),
    );
    let mut agent = Agent::start(&runs, "a1", &conf);
    drop_file(&spool, "a.log", &file_content("a", 5_000));
    wait_until(LONG, "file a delivered", || {
        check(&all_lines(&runs)).delivered.get("a") == Some(&5_000)
    });

    let filler = fill(&chan);
    drop_file(&spool, "b.log", &file_content("b", 20_000));
    wait_until(LONG, "the agent notices the full disk", || {
        agent.stderr_text().contains("the disk is full")
    });
    assert!(
        agent.running(),
        "the agent keeps running:\n{}",
        agent.stderr_text()
    );
    let metrics = http_get(port, "/metrics").expect("metrics answer").1;
    assert!(
        metrics.contains("sluice_channel_disk_stalls_total{agent=\"a1\",channel=\"c1\"} 1"),
        "{metrics}"
    );
    let held = check(&all_lines(&runs));
    assert_eq!(
        held.delivered.get("b"),
        None,
        "nothing of b got through a full disk"
    );
    assert!(
        spool.join("b.log").exists(),
        "b is not completed while its lines are not safe"
    );

    fs::remove_file(&filler).unwrap();
    wait_until(LONG, "file b delivered after space returned", || {
        check(&all_lines(&runs)).delivered.get("b") == Some(&20_000)
    });
    wait_until(LONG, "b completed", || {
        spool.join("b.log.COMPLETED").exists()
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let log = agent.stderr_text();
    assert_eq!(
        count(&log, "the disk is full"),
        1,
        "logged once per episode:\n{log}"
    );
    assert_eq!(count(&log, "writable again"), 1, "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let d = check(&all_lines(&runs));
    assert_eq!(d.problem, None);
    assert_eq!(d.duplicates, 0, "no restart, no repeats");
}
