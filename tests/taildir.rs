//! End-to-end tests of the taildir source: the real `sluice` binary follows files while a
//! writer thread appends thousands of numbered lines per second and rotates them, and the
//! console sink's output is checked line by line for loss, repeats and order.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::agent::{Agent, wait_until};
use support::rotation::{Line, Progress, Scheme, append, started, stop, text, write_rotating};

/// Parses the console output; a line that is not one of the writer's is an error, except a
/// last line cut by SIGKILL when `torn_tail_ok`.
fn parse(out: &[u8], torn_tail_ok: bool) -> Vec<Line> {
    let text = String::from_utf8_lossy(out);
    let complete = text.ends_with('\n') || text.is_empty();
    let lines: Vec<&str> = text.lines().collect();
    let mut v = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match Line::parse(l) {
            Some(line) => v.push(line),
            None if torn_tail_ok && !complete && i + 1 == lines.len() => {}
            None => panic!("unexpected output line {i}: {l:?}"),
        }
    }
    v
}

fn config(dir: &Path, paths: &str, extra: &str, capacity: usize) -> String {
    format!(
        r#"
a1:
  data_dir: {dir}/data
  shutdown_timeout: 10s
  sources:
    r1:
      type: taildir
      channel: c1
      paths: [{paths}]
      rotate_wait: 1s
      poll_interval: 100ms
{extra}
  channels:
    c1: {{ type: memory, capacity: {capacity} }}
  sinks:
    k1: {{ type: console, channel: c1, batch_size: 500 }}
"#,
        dir = dir.display(),
    )
}

/// Lines of each file in output order.
fn by_file(lines: &[Line]) -> BTreeMap<u32, Vec<u64>> {
    let mut m: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for l in lines {
        m.entry(l.file).or_default().push(l.seq);
    }
    m
}

/// Every file's lines came out in file order.
fn assert_file_order(lines: &[Line]) {
    for (file, seqs) in by_file(lines) {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "file {file} out of order or repeated: {seqs:?}"
        );
    }
}

/// Runs one rotation scheme end to end: no line lost, none repeated, each file in order.
fn rotation(scheme: Scheme) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let paths = format!("\"{}\"", logs.join(scheme.live_name()).display());
    let mut agent = Agent::start(dir.path(), "a1", &config(dir.path(), &paths, "", 20_000));
    started(&agent);
    let total = 12_000;
    let progress = Progress::default();
    let stdout = agent.stdout.clone();
    let caught_up = |seq: u64| {
        let out = fs::read(&stdout).unwrap_or_default();
        parse(&out, true).iter().any(|l| l.seq == seq)
    };
    let window = write_rotating(&logs, scheme, total, 1_500, &progress, &caught_up);
    assert!(progress.rotations.load(Ordering::SeqCst) >= 6);
    let expected: Vec<u64> = (0..total).filter(|s| !window.contains(s)).collect();
    wait_until(Duration::from_secs(60), "every line delivered", || {
        let seen: HashSet<u64> = parse(&agent.stdout_bytes(), true)
            .iter()
            .map(|l| l.seq)
            .collect();
        expected.iter().all(|s| seen.contains(s))
    });
    stop(&mut agent);
    let lines = parse(&agent.stdout_bytes(), false);
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for l in &lines {
        *counts.entry(l.seq).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{scheme:?}: lines repeated: {repeated:?}"
    );
    for s in &expected {
        assert_eq!(counts.get(s), Some(&1), "{scheme:?}: line {s} lost");
    }
    assert_file_order(&lines);
    let stderr = agent.stderr_text();
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn rename_and_create_loses_and_repeats_nothing() {
    rotation(Scheme::RenameCreate);
}

#[test]
fn delete_and_recreate_loses_and_repeats_nothing() {
    rotation(Scheme::DeleteRecreate);
}

#[test]
fn a_re_pointed_symlink_loses_and_repeats_nothing() {
    rotation(Scheme::SymlinkSwap);
}

/// copytruncate: every line except those written between the copy and the truncate arrives
/// exactly once; the window's lines arrive at most once (they are lost if the tailer had not
/// read them before the truncate).
#[test]
fn copytruncate_loses_at_most_the_window_between_copy_and_truncate() {
    rotation(Scheme::CopyTruncate);
}

/// A file renamed and then compressed (copied elsewhere and deleted) while the source is still
/// reading it is read to its end through the open handle.
#[test]
fn a_file_renamed_and_deleted_while_being_read_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let total = 200_000u64;
    let mut data = Vec::with_capacity(total as usize * 100);
    for s in 0..total {
        data.extend_from_slice(text(0, s).as_bytes());
    }
    let live = logs.join("app.log");
    fs::write(&live, &data).unwrap();
    let paths = format!("\"{}\"", live.display());
    // A small channel and small batches keep the source reading for a while.
    let extra = "      batch_size: 20";
    let mut agent = Agent::start(dir.path(), "a1", &config(dir.path(), &paths, extra, 100));
    wait_until(Duration::from_secs(30), "the first lines", || {
        agent.stdout_bytes().len() > 100_000
    });
    let rotated = logs.join("app.log.1");
    fs::rename(&live, &rotated).unwrap();
    fs::copy(&rotated, logs.join("app.log.1.gz")).unwrap();
    fs::remove_file(&rotated).unwrap();
    let seen_at_delete = parse(&agent.stdout_bytes(), true).len() as u64;
    assert!(
        seen_at_delete < total,
        "the file was read whole before it was deleted; make it bigger"
    );
    wait_until(Duration::from_secs(120), "every line delivered", || {
        parse(&agent.stdout_bytes(), true).len() as u64 >= total
    });
    wait_until(Duration::from_secs(30), "the rotated file finished", || {
        agent.stderr_text().contains("rotated file read to its end")
    });
    stop(&mut agent);
    let lines = parse(&agent.stdout_bytes(), false);
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, (0..total).collect::<Vec<_>>());
}

/// SIGKILL while files grow and rotate: after a restart no line is lost, and the only lines
/// repeated are, per file, a suffix of what was delivered before the kill (lines in flight
/// since the last position write), re-read first after the restart.
#[test]
fn sigkill_and_restart_lose_nothing_and_repeat_only_lines_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let paths = format!("\"{}\"", logs.join("app.log").display());
    let cfg = config(dir.path(), &paths, "", 20_000);
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    started(&agent);
    let total = 24_000;
    let progress = Arc::new(Progress::default());
    let writer = {
        let (logs, progress) = (logs.clone(), progress.clone());
        std::thread::spawn(move || {
            write_rotating(
                &logs,
                Scheme::RenameCreate,
                total,
                2_000,
                &progress,
                &|_| true,
            )
        })
    };
    // Kill once the live file's first lines are out: a file created a moment before a crash
    // and renamed away before the restart may be missed (see docs/taildir.md).
    wait_until(Duration::from_secs(30), "a few rotations delivered", || {
        let rotations = progress.rotations.load(Ordering::SeqCst);
        let out = parse(&agent.stdout_bytes(), true);
        rotations >= 2 && out.iter().filter(|l| l.file == rotations).count() > 300
    });
    let first_run = agent.stdout.clone();
    agent.kill();
    // Stay down across a rotation: the rotated file must be found by its inode on restart.
    let at_kill = progress.rotations.load(Ordering::SeqCst);
    wait_until(
        Duration::from_secs(30),
        "a rotation while the agent is down",
        || progress.rotations.load(Ordering::SeqCst) > at_kill,
    );
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    writer.join().unwrap();
    let run1 = parse(&fs::read(&first_run).unwrap(), true);
    let seen = || {
        let mut seen: HashSet<u64> = run1.iter().map(|l| l.seq).collect();
        seen.extend(parse(&agent.stdout_bytes(), true).iter().map(|l| l.seq));
        seen
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (seen().len() as u64) < total && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = seen();
    let missing: Vec<u64> = (0..total).filter(|s| !seen.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, first {:?}, last {:?}\nrun 1:\n{}\nrun 2:\n{}",
        missing.len(),
        missing.first(),
        missing.last(),
        fs::read_to_string(dir.path().join("stderr.0")).unwrap_or_default(),
        agent.stderr_text()
    );
    stop(&mut agent);
    let run2 = parse(&agent.stdout_bytes(), false);
    assert_file_order(&run1);
    assert_file_order(&run2);
    let (files1, files2) = (by_file(&run1), by_file(&run2));
    let mut repeated = 0;
    for (file, l2) in &files2 {
        let Some(l1) = files1.get(file) else { continue };
        let in1: HashSet<u64> = l1.iter().copied().collect();
        let dup = l2.iter().take_while(|s| in1.contains(s)).count();
        assert!(
            l2[dup..].iter().all(|s| !in1.contains(s)),
            "file {file}: a repeat after new lines"
        );
        assert_eq!(
            l1[l1.len() - dup..],
            l2[..dup],
            "file {file}: repeats are not the last lines delivered"
        );
        repeated += dup;
    }
    let all: HashSet<u64> = run1.iter().chain(&run2).map(|l| l.seq).collect();
    assert_eq!(all.len() as u64, total);
    eprintln!("lines repeated after SIGKILL: {repeated}");
    assert!(
        agent
            .stderr_text()
            .contains("rotated away; found by its inode")
    );
}

/// `read_from: end` skips what files held at the first start (up to their last complete
/// line), reads files that appear later whole, and a restart resumes known files where they
/// were and reads files that appeared while it was stopped whole.
#[test]
fn read_from_end_skips_old_lines_and_a_restart_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let old = logs.join("old.log");
    fs::write(&old, b"old 1\nold 2\nhalf").unwrap();
    let pattern = format!("\"{}/*.log\"", logs.display());
    let cfg = config(dir.path(), &pattern, "      read_from: end", 1000);
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    let positions = dir.path().join("data/sources/r1/positions.json");
    wait_until(
        Duration::from_secs(30),
        "the position after the last complete line",
        || fs::read_to_string(&positions).is_ok_and(|p| p.contains("\"offset\":12")),
    );
    append(&old).write_all(b"-done\nnew 1\n").unwrap();
    fs::write(logs.join("later.log"), b"later 1\n").unwrap();
    let want = ["half-done", "new 1", "later 1"];
    wait_until(Duration::from_secs(30), "the new lines", || {
        String::from_utf8_lossy(&agent.stdout_bytes())
            .lines()
            .count()
            >= want.len()
    });
    stop(&mut agent);
    let mut got: Vec<String> = String::from_utf8_lossy(&agent.stdout_bytes())
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let mut sorted = want.to_vec();
    sorted.sort();
    assert_eq!(got, sorted);

    append(&old).write_all(b"after restart\n").unwrap();
    // A file that appeared while the agent was stopped is new: read whole, not from its end
    // (`read_from` is about what was there before the agent ever ran).
    fs::write(logs.join("while-down.log"), b"down 1\ndown 2\n").unwrap();
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    wait_until(
        Duration::from_secs(30),
        "the lines written while stopped",
        || {
            String::from_utf8_lossy(&agent.stdout_bytes())
                .lines()
                .count()
                >= 3
        },
    );
    stop(&mut agent);
    let mut got: Vec<String> = String::from_utf8_lossy(&agent.stdout_bytes())
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    assert_eq!(got, ["after restart", "down 1", "down 2"]);
}

/// GBK and UTF-16LE files come out as UTF-8, lines framed on the original encoding.
#[test]
fn encodings_are_transcoded_to_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    // "你好 gbk\n中文\n" in GBK.
    let gbk: &[u8] = b"\xc4\xe3\xba\xc3 gbk\n\xd6\xd0\xce\xc4\n";
    fs::write(logs.join("a.gbk"), gbk).unwrap();
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(
        "ünï 16\r\n\u{0A0D}second\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    fs::write(logs.join("b.u16"), &utf16).unwrap();
    let cfg = format!(
        r#"
a1:
  data_dir: {d}/data
  sources:
    r1: {{ type: taildir, channel: c1, paths: ["{d}/logs/*.gbk"], encoding: gbk }}
    r2: {{ type: taildir, channel: c1, paths: ["{d}/logs/*.u16"], encoding: utf-16le }}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1: {{ type: console, channel: c1 }}
"#,
        d = dir.path().display()
    );
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    wait_until(Duration::from_secs(30), "four lines", || {
        String::from_utf8_lossy(&agent.stdout_bytes())
            .lines()
            .count()
            >= 4
    });
    stop(&mut agent);
    let out = String::from_utf8(agent.stdout_bytes()).expect("valid UTF-8");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want = ["ünï 16", "你好 gbk", "中文", "\u{0A0D}second"];
    want.sort();
    assert_eq!(got, want);
}

/// Descriptors of `pid` open on files under `dir`.
fn open_under(pid: i32, dir: &Path) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter(|e| fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)))
                .count()
        })
        .unwrap_or(0)
}

/// With `max_open_files: 2`, 20 files are all read; files closed while idle are opened again
/// when they grow, and one rotated away while closed is found by its inode and read to its end.
#[test]
fn idle_files_are_closed_within_the_limit_and_found_again_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    for i in 0..20 {
        fs::write(logs.join(format!("f{i:02}.log")), format!("first {i}\n")).unwrap();
    }
    let pattern = format!("\"{}/*.log\"", logs.display());
    let extra = "      max_open_files: 2\n      idle_timeout: 200ms\n      scan_interval: 200ms";
    let mut agent = Agent::start(dir.path(), "a1", &config(dir.path(), &pattern, extra, 1000));
    let count = |a: &Agent| String::from_utf8_lossy(&a.stdout_bytes()).lines().count();
    wait_until(Duration::from_secs(30), "the first lines", || {
        count(&agent) == 20
    });
    wait_until(Duration::from_secs(30), "idle files closed", || {
        open_under(agent.pid(), &logs) == 0
    });
    let canonical = fs::canonicalize(&logs).unwrap();
    for i in 0..20 {
        append(&logs.join(format!("f{i:02}.log")))
            .write_all(format!("second {i}\n").as_bytes())
            .unwrap();
        assert!(
            open_under(agent.pid(), &canonical) <= 2,
            "more than max_open_files open"
        );
    }
    append(&logs.join("f00.log"))
        .write_all(b"third 0\n")
        .unwrap();
    fs::rename(logs.join("f00.log"), logs.join("f00.log.1")).unwrap();
    wait_until(Duration::from_secs(30), "every line", || {
        count(&agent) == 41
    });
    stop(&mut agent);
    let out = String::from_utf8_lossy(&agent.stdout_bytes()).into_owned();
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want: Vec<String> = (0..20)
        .flat_map(|i| [format!("first {i}"), format!("second {i}")])
        .collect();
    want.push("third 0".to_owned());
    want.sort();
    assert_eq!(got, want);
}

/// A corrupt position file is set aside with an error, and the files are read from their
/// beginning even under `read_from: end`: lines may repeat, none is lost.
#[test]
fn a_corrupt_position_file_is_set_aside_and_files_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    fs::write(logs.join("a.log"), b"one\ntwo\n").unwrap();
    let state = dir.path().join("data/sources/r1");
    fs::create_dir_all(&state).unwrap();
    fs::write(
        state.join("positions.json"),
        b"{\"version\":1,\"files\":[{\"pa",
    )
    .unwrap();
    let pattern = format!("\"{}/*.log\"", logs.display());
    let mut agent = Agent::start(
        dir.path(),
        "a1",
        &config(dir.path(), &pattern, "      read_from: end", 100),
    );
    wait_until(Duration::from_secs(30), "both lines", || {
        String::from_utf8_lossy(&agent.stdout_bytes())
            .lines()
            .count()
            == 2
    });
    stop(&mut agent);
    assert_eq!(String::from_utf8_lossy(&agent.stdout_bytes()), "one\ntwo\n");
    assert!(state.join("positions.json.corrupt").exists());
    assert!(
        agent
            .stderr_text()
            .contains("corrupt position file set aside")
    );
    let positions = fs::read_to_string(state.join("positions.json")).unwrap();
    assert!(positions.contains("\"offset\":8"), "{positions}");
}

/// `sluice validate` names the exact key of each taildir problem.
#[test]
fn taildir_configuration_errors_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.yaml");
    fs::write(
        &conf,
        r#"
a1:
  sources:
    r1: { type: taildir, channel: c1, paths: ["/x/*.log"], position_file: /p.json }
    r4: { type: taildir, channel: c1, paths: ["/w/*.log"], encoding: klingon }
    r2: { type: taildir, channel: c1, paths: [{ glob: "/y/*.log", header: {} }] }
    r3: { type: taildir, channel: c1, paths: ["/z/*.log"], position_file: /p.json }
  channels:
    c1: { type: memory }
  sinks:
    k1: { type: console, channel: c1 }
"#,
    )
    .unwrap();
    let (code, _, err) = support::agent::sluice(&["validate", "-f", conf.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for key in [
        "a1.sources.r4.encoding",
        "a1.sources.r2.paths[0].header",
        "a1.sources.r3.position_file",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
}
