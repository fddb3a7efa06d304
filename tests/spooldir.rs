//! End-to-end: the spooling-directory source through a memory channel to the console sink,
//! running the real `sluice` binary.

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::agent::{
    Agent, completed, drop_file, free_port, http_get, metric, sluice_bin, spool_dirs, wait_until,
};

const LONG: Duration = Duration::from_secs(120);

fn config(spool: &Path, data: &Path, extra_source: &str, capacity: usize) -> String {
    format!(
        r#"
a1:
  data_dir: {data}
  shutdown_timeout: 20s
  sources:
    r1:
      type: spooldir
      dir: {spool}
      channel: c1
      batch_size: 500
{extra_source}
  channels:
    c1: {{ type: memory, capacity: {capacity}, capacity_bytes: 256MiB }}
  sinks:
    k1: {{ type: console, channel: c1, batch_size: 700 }}
"#,
        data = data.display(),
        spool = spool.display(),
    )
}

/// `lines` lines tagged with the file's tag and a sequence number; every seventh line ends
/// with CRLF, every 100th is empty-bodied but for its tag, and the last has no terminator.
fn file_content(tag: &str, lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        out.extend_from_slice(
            format!("{tag} {i:07} some log text {}", "x".repeat(i % 50)).as_bytes(),
        );
        if i + 1 < lines {
            out.extend_from_slice(if i % 7 == 0 { b"\r\n" } else { b"\n" });
        }
    }
    out
}

/// Splits stdout into complete lines (a last line without `\n`, cut by a kill, is dropped).
fn lines_of(out: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    lines.pop(); // after the last `\n`: empty, or a line cut short
    lines
}

/// Groups lines by tag: tag -> sequence numbers in arrival order.
fn by_tag(lines: &[&[u8]]) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for l in lines {
        let text = std::str::from_utf8(l).expect("generated lines are UTF-8");
        let mut parts = text.split(' ');
        let tag = parts.next().unwrap().to_owned();
        let seq: usize = parts.next().unwrap().parse().unwrap();
        map.entry(tag).or_default().push(seq);
    }
    map
}

fn count_lines(agent: &Agent) -> usize {
    lines_of(&agent.stdout_bytes()).len()
}

#[test]
fn files_arrive_complete_in_order_and_are_renamed_then_sigterm_exits_zero() {
    let (tmp, spool, data) = spool_dirs();
    let sizes = [3000, 5000, 1, 4000];
    for (i, n) in sizes.iter().enumerate() {
        drop_file(
            &spool,
            &format!("app{i}.log"),
            &file_content(&format!("f{i}"), *n),
        );
    }
    drop_file(&spool, "empty.log", b"");
    let port = free_port();
    // An empty file is completed once it has stayed empty for `empty_grace`.
    let conf = config(&spool, &data, "      empty_grace: 1s", 2000).replace(
        "  sources:",
        &format!("  http: 127.0.0.1:{port}\n  sources:"),
    );
    let mut agent = Agent::start(&tmp.path().join("run"), "a1", &conf);
    let first: usize = sizes.iter().sum();
    wait_until(LONG, "the first files' lines on stdout", || {
        count_lines(&agent) >= first
    });
    // A file dropped while the agent runs is noticed too.
    drop_file(&spool, "late.log", &file_content("late", 2500));
    wait_until(LONG, "the late file's lines", || {
        count_lines(&agent) >= first + 2500
    });
    wait_until(LONG, "every file renamed", || {
        [
            "app0.log",
            "app1.log",
            "app2.log",
            "app3.log",
            "empty.log",
            "late.log",
        ]
        .iter()
        .all(|n| spool.join(format!("{n}.COMPLETED")).exists() && !spool.join(n).exists())
    });
    let (status, metrics) = http_get(port, "/metrics").expect("metrics answer");
    assert!(status.contains("200"), "{status}");
    assert!(
        metrics.contains(&format!(
            "sluice_sink_events_total{{agent=\"a1\",sink=\"k1\"}} {}",
            first + 2500
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_source_files_completed_total{agent=\"a1\",source=\"r1\"} 6"),
        "{metrics}"
    );
    let health = http_get(port, "/health").unwrap().1;
    assert!(health.starts_with("ok\n"), "{health}");

    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let out = agent.stdout_bytes();
    let lines = lines_of(&out);
    assert_eq!(lines.len(), first + 2500, "exactly once");
    let tags = by_tag(&lines);
    for (i, n) in sizes.iter().enumerate() {
        assert_eq!(
            tags[&format!("f{i}")],
            (0..*n).collect::<Vec<_>>(),
            "file {i} complete and in order"
        );
    }
    assert_eq!(tags["late"], (0..2500).collect::<Vec<_>>());
    // Bodies are the lines without their terminators, byte for byte.
    let expected = file_content("f0", 3000);
    let want: Vec<&[u8]> = expected
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    let got: Vec<&[u8]> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with(b"f0 "))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn sigkill_in_the_middle_of_a_large_file_loses_nothing_after_a_restart() {
    let (tmp, spool, data) = spool_dirs();
    let total = 400_000;
    drop_file(&spool, "big.log", &file_content("big", total));
    let capacity = 5000;
    let conf = config(&spool, &data, "", capacity);
    let run_dir = tmp.path().join("run");
    let mut first = Agent::start(&run_dir, "a1", &conf);
    wait_until(LONG, "part of the file delivered", || {
        count_lines(&first) >= 50_000
    });
    first.kill();
    let before = lines_of(&first.stdout_bytes()).len();
    assert!(
        before < total,
        "the kill came after the whole file: make the file larger"
    );
    assert!(
        spool.join("big.log").exists(),
        "not completed before the kill"
    );

    let mut second = Agent::start(&run_dir, "a1", &conf);
    wait_until(LONG, "the file completed after the restart", || {
        spool.join("big.log.COMPLETED").exists()
    });
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit(LONG).success(), "{}", second.stderr_text());

    let out1 = first.stdout_bytes();
    let out2 = second.stdout_bytes();
    let (l1, l2) = (lines_of(&out1), lines_of(&out2));
    let s1 = &by_tag(&l1)["big"];
    let s2 = &by_tag(&l2)["big"];
    assert_eq!(*s1, (0..s1.len()).collect::<Vec<_>>(), "first run in order");
    let resumed_at = s2[0];
    assert!(
        resumed_at <= s1.len(),
        "gap: first run ended at {}, second resumed at {resumed_at}",
        s1.len()
    );
    assert_eq!(
        *s2,
        (resumed_at..total).collect::<Vec<_>>(),
        "second run in order to the end"
    );
    let repeated = s1.len() - resumed_at;
    // Only what was in flight may repeat: the channel's content plus one read chunk (1 MiB,
    // at most ~40,000 of these lines) whose commits the checkpoint had not recorded yet.
    assert!(repeated <= capacity + 40_000, "{repeated} lines repeated");
}

#[test]
fn sigterm_mid_file_drains_and_a_restart_repeats_nothing() {
    let (tmp, spool, data) = spool_dirs();
    let total = 400_000;
    drop_file(&spool, "big.log", &file_content("big", total));
    let conf = config(&spool, &data, "", 5000);
    let run_dir = tmp.path().join("run");
    let mut first = Agent::start(&run_dir, "a1", &conf);
    wait_until(LONG, "part of the file delivered", || {
        count_lines(&first) >= 20_000
    });
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(LONG).success(), "{}", first.stderr_text());
    let n1 = lines_of(&first.stdout_bytes()).len();
    assert!(
        n1 < total,
        "the stop came after the whole file: make the file larger"
    );

    let mut second = Agent::start(&run_dir, "a1", &conf);
    wait_until(LONG, "the file completed after the restart", || {
        spool.join("big.log.COMPLETED").exists()
    });
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit(LONG).success());
    let mut all = first.stdout_bytes();
    all.extend(second.stdout_bytes());
    let seqs = &by_tag(&lines_of(&all))["big"];
    assert_eq!(
        *seqs,
        (0..total).collect::<Vec<_>>(),
        "a clean stop repeats nothing and loses nothing"
    );
}

#[test]
fn a_file_changed_after_its_end_was_read_is_set_aside_and_the_agent_goes_on() {
    let (tmp, spool, data) = spool_dirs();
    // Read by name: the big file first, whose lines fill the stdout pipe nobody reads yet, so
    // that the lines of the second stay in the channel, not safe, after its end was read.
    drop_file(&spool, "a-big.log", &file_content("big", 100_000));
    drop_file(&spool, "b-changed.log", &file_content("c", 10));
    let port = free_port();
    let conf = config(&spool, &data, "      order: name", 300_000).replace(
        "  sources:",
        &format!("  http: 127.0.0.1:{port}\n  sources:"),
    );
    let conf_path = tmp.path().join("agent.yaml");
    fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(sluice_bin())
        .args(["agent", "-n", "a1", "-f"])
        .arg(&conf_path)
        .stdout(Stdio::piped())
        .stderr(fs::File::create(tmp.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    // The last line of b-changed.log has no terminator: it is put only once the end of the
    // file was reached for good.
    wait_until(LONG, "both files read to their end", || {
        metric(port, "sluice_source_events_total", "") == Some(100_010)
    });
    fs::OpenOptions::new()
        .append(true)
        .open(spool.join("b-changed.log"))
        .unwrap()
        .write_all_at_end(b"\nappended later\n");
    drop_file(&spool, "c-next.log", &file_content("n", 10));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        all
    });
    wait_until(LONG, "the changed file set aside", || {
        spool.join("b-changed.log.FAILED").exists()
    });
    wait_until(LONG, "the other files completed", || {
        spool.join("a-big.log.COMPLETED").exists() && spool.join("c-next.log.COMPLETED").exists()
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let out = reader.join().unwrap();
    let tags = by_tag(&lines_of(&out));
    assert_eq!(tags["big"].len(), 100_000);
    assert_eq!(
        tags["c"],
        (0..10).collect::<Vec<_>>(),
        "what was read is delivered"
    );
    assert_eq!(tags["n"], (0..10).collect::<Vec<_>>());
    let log = fs::read_to_string(tmp.path().join("stderr")).unwrap();
    assert!(
        log.contains("changed after it was read") && log.contains("b-changed.log"),
        "{log}"
    );
}

#[test]
fn files_still_being_written_when_they_appear_are_delivered_whole() {
    let (tmp, spool, data) = spool_dirs();
    let mut agent = Agent::start(
        &tmp.path().join("run"),
        "a1",
        &config(&spool, &data, "", 100_000),
    );
    wait_until(LONG, "the source started", || {
        agent.stderr_text().contains("spooldir source started")
    });
    // The issue's case: the file appears empty, its lines come a second later.
    let seq = Command::new("sh")
        .arg("-c")
        .arg("{ sleep 1; seq 1 1000; } > \"$1\"")
        .arg("sh")
        .arg(spool.join("seq.log"))
        .spawn()
        .unwrap();
    // A writer that appends in small pieces for three seconds after the file appears.
    let appender = {
        let path = spool.join("appended.log");
        std::thread::spawn(move || {
            let data = file_content("app", 3000);
            let mut f = fs::File::create(&path).unwrap();
            for piece in data.chunks(data.len() / 150 + 1) {
                std::io::Write::write_all(&mut f, piece).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // A slow copy: 8 MB in 256 KiB pieces, 100 ms apart.
    let copier = {
        let path = spool.join("copied.log");
        std::thread::spawn(move || {
            let data = file_content("copy", 160_000);
            let mut f = fs::File::create(&path).unwrap();
            for piece in data.chunks(256 << 10) {
                std::io::Write::write_all(&mut f, piece).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
            data.len()
        })
    };
    let mut seq = seq;
    assert!(seq.wait().unwrap().success());
    appender.join().unwrap();
    let copied = copier.join().unwrap();
    assert!(copied > 8_000_000);
    wait_until(LONG, "every file completed", || {
        ["seq.log", "appended.log", "copied.log"]
            .iter()
            .all(|n| spool.join(format!("{n}.COMPLETED")).exists())
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let out = agent.stdout_bytes();
    let lines = lines_of(&out);
    let seq_lines: Vec<usize> = lines
        .iter()
        .filter(|l| l.iter().all(u8::is_ascii_digit))
        .map(|l| std::str::from_utf8(l).unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        seq_lines,
        (1..=1000).collect::<Vec<_>>(),
        "seq.log whole and in order"
    );
    let rest: Vec<&[u8]> = lines
        .iter()
        .copied()
        .filter(|l| !l.iter().all(u8::is_ascii_digit))
        .collect();
    let tags = by_tag(&rest);
    assert_eq!(
        tags["app"],
        (0..3000).collect::<Vec<_>>(),
        "appended.log whole"
    );
    assert_eq!(
        tags["copy"],
        (0..160_000).collect::<Vec<_>>(),
        "copied.log whole"
    );
    let log = agent.stderr_text();
    assert!(!log.contains("set aside"), "{log}");
}

#[test]
fn a_busy_http_port_fails_the_agent_but_no_waiting_file_is_set_aside() {
    let (tmp, spool, data) = spool_dirs();
    for i in 0..3 {
        drop_file(
            &spool,
            &format!("w{i}.log"),
            &file_content(&format!("w{i}"), 2000),
        );
    }
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let conf = config(&spool, &data, "", 10_000).replace(
        "  sources:",
        &format!("  http: 127.0.0.1:{port}\n  sources:"),
    );
    let run_dir = tmp.path().join("run");
    let mut first = Agent::start(&run_dir, "a1", &conf);
    let status = first.wait_exit(LONG);
    assert!(!status.success(), "the port is taken");
    for i in 0..3 {
        assert!(
            spool.join(format!("w{i}.log")).exists(),
            "w{i}.log left in place: {}",
            first.stderr_text()
        );
        assert!(!spool.join(format!("w{i}.log.FAILED")).exists());
    }
    // Once the port is free, a restart reads them all.
    drop(held);
    let mut second = Agent::start(&run_dir, "a1", &conf);
    wait_until(LONG, "every file completed", || {
        (0..3).all(|i| spool.join(format!("w{i}.log.COMPLETED")).exists())
    });
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit(LONG).success());
    let tags = by_tag(&lines_of(&second.stdout_bytes()));
    for i in 0..3 {
        assert_eq!(tags[&format!("w{i}")], (0..2000).collect::<Vec<_>>());
    }
}

#[test]
fn ten_thousand_small_files_are_all_delivered() {
    let (tmp, spool, data) = spool_dirs();
    let n = 10_000;
    for i in 0..n {
        let tag = format!("s{i:05}");
        fs::write(spool.join(format!("{tag}.log")), file_content(&tag, 2)).unwrap();
    }
    let mut agent = Agent::start(
        &tmp.path().join("run"),
        "a1",
        &config(&spool, &data, "", 100_000),
    );
    // Listing the folder once per file made this quadratic (minutes); it takes seconds.
    wait_until(LONG, "every file completed", || completed(&spool) == n);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success(), "{}", agent.stderr_text());
    let out = agent.stdout_bytes();
    let tags = by_tag(&lines_of(&out));
    assert_eq!(tags.len(), n);
    assert!(tags.values().all(|s| *s == [0, 1]));
}

#[test]
fn fifos_devices_and_dangling_links_are_skipped_with_one_log_line_each() {
    let (tmp, spool, data) = spool_dirs();
    let fifo = std::ffi::CString::new(spool.join("pipe.log").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("/dev/null", spool.join("null.log")).unwrap();
    std::os::unix::fs::symlink(spool.join("nowhere"), spool.join("dangling.log")).unwrap();
    drop_file(&spool, "a.log", &file_content("a", 100));
    let mut agent = Agent::start(
        &tmp.path().join("run"),
        "a1",
        &config(&spool, &data, "      poll_interval: 50ms", 1000),
    );
    wait_until(LONG, "a.log completed", || {
        spool.join("a.log.COMPLETED").exists()
    });
    // Files dropped later are still read: nothing blocked on the FIFO.
    drop_file(&spool, "b.log", &file_content("b", 100));
    wait_until(LONG, "b.log completed", || {
        spool.join("b.log.COMPLETED").exists()
    });
    // Listed many times over (every 50 ms, and at each file): logged once all the same.
    let since = std::time::Instant::now();
    wait_until(LONG, "a second of listings", || {
        since.elapsed() > Duration::from_secs(1)
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success());
    let log = agent.stderr_text();
    for name in ["pipe.log", "null.log", "dangling.log"] {
        let n = log
            .lines()
            .filter(|l| l.contains("not a regular file") && l.contains(name))
            .count();
        assert_eq!(n, 1, "{name} logged once:\n{log}");
    }
    assert!(spool.join("pipe.log").exists() && spool.join("dangling.log").is_symlink());
    let tags = by_tag(&lines_of(&agent.stdout_bytes()));
    assert_eq!(tags["a"].len() + tags["b"].len(), 200);
}

#[test]
fn a_deleted_spool_folder_is_logged_once_and_its_return_is_noticed() {
    let (tmp, spool, data) = spool_dirs();
    let port = free_port();
    let cfg = config(&spool, &data, "      poll_interval: 50ms", 1000).replacen(
        "a1:\n",
        &format!("a1:\n  http: 127.0.0.1:{port}\n"),
        1,
    );
    let mut agent = Agent::start(&tmp.path().join("run"), "a1", &cfg);
    let health = || {
        http_get(port, "/health")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    wait_until(LONG, "the source started", || {
        agent.stderr_text().contains("spooldir source started")
    });
    fs::remove_dir(&spool).unwrap();
    wait_until(LONG, "the folder's absence logged", || {
        agent.stderr_text().contains("cannot list the")
    });
    // /health tells it while it lasts.
    wait_until(LONG, "/health degraded, naming the folder", || {
        let h = health();
        h.starts_with("degraded\n") && h.contains("source r1: cannot list the spool folder")
    });
    // Twenty poll intervals without the folder: still one error.
    let since = std::time::Instant::now();
    wait_until(LONG, "a second without the folder", || {
        since.elapsed() > Duration::from_secs(1)
    });
    fs::create_dir(&spool).unwrap();
    drop_file(&spool, "back.log", &file_content("back", 100));
    wait_until(LONG, "a file dropped into the new folder completed", || {
        spool.join("back.log.COMPLETED").exists()
    });
    let h = health();
    assert!(h.starts_with("ok\n"), "{h}");
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success());
    let log = agent.stderr_text();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cannot list the"))
        .count();
    assert_eq!(errors, 1, "one error for the episode:\n{log}");
    assert!(log.contains("recovered"), "{log}");
    assert_eq!(by_tag(&lines_of(&agent.stdout_bytes()))["back"].len(), 100);
}

trait AppendExt {
    fn write_all_at_end(self, data: &[u8]);
}

impl AppendExt for fs::File {
    fn write_all_at_end(mut self, data: &[u8]) {
        std::io::Write::write_all(&mut self, data).unwrap();
    }
}

#[test]
fn a_taken_completed_name_leaves_the_file_and_others_still_flow() {
    let (tmp, spool, data) = spool_dirs();
    drop_file(&spool, "dup.log", b"new content\n");
    drop_file(&spool, "dup.log.COMPLETED", b"old content\n");
    drop_file(&spool, "ok.log", &file_content("ok", 100));
    let mut agent = Agent::start(
        &tmp.path().join("run"),
        "a1",
        &config(&spool, &data, "", 1000),
    );
    wait_until(LONG, "ok.log completed", || {
        spool.join("ok.log.COMPLETED").exists()
    });
    wait_until(LONG, "the error logged", || {
        agent
            .stderr_text()
            .contains("completed name is already taken")
    });
    assert!(spool.join("dup.log").exists(), "left in place");
    assert_eq!(
        fs::read(spool.join("dup.log.COMPLETED")).unwrap(),
        b"old content\n",
        "not overwritten"
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success());
    let out = agent.stdout_bytes();
    assert!(
        !lines_of(&out).contains(&&b"new content"[..]),
        "the file was not read"
    );
    assert_eq!(by_tag(&lines_of(&out))["ok"].len(), 100);
}

#[test]
fn long_lines_are_split_invalid_utf8_passes_and_delete_mode_deletes() {
    let (tmp, spool, data) = spool_dirs();
    let mut content = b"short\n".to_vec();
    content.extend(std::iter::repeat_n(b'L', 2500));
    content.extend_from_slice(b"\n\xff\xfe\xc3\x28 bytes\n\nend");
    drop_file(&spool, "mixed.log", &content);
    let extra = "      max_line_bytes: 1KiB\n      after_read: delete";
    let port = free_port();
    let conf = config(&spool, &data, extra, 1000).replace(
        "  sources:",
        &format!("  http: 127.0.0.1:{port}\n  sources:"),
    );
    let mut agent = Agent::start(&tmp.path().join("run"), "a1", &conf);
    wait_until(LONG, "the file deleted", || {
        !spool.join("mixed.log").exists()
    });
    wait_until(LONG, "all lines out", || count_lines(&agent) >= 7);
    let out = agent.stdout_bytes();
    let lines = lines_of(&out);
    let long = vec![b'L'; 1024];
    let rest = vec![b'L'; 2500 - 2048];
    let want: Vec<&[u8]> = vec![
        b"short",
        &long,
        &long,
        &rest,
        b"\xff\xfe\xc3\x28 bytes",
        b"",
        b"end",
    ];
    assert_eq!(lines, want);
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert!(
        metrics.contains("sluice_source_long_lines_total{agent=\"a1\",source=\"r1\"} 1"),
        "{metrics}"
    );
    assert!(agent.stderr_text().contains("longer than max_line_bytes"));
    assert!(!spool.join("mixed.log.COMPLETED").exists());
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success());
}

#[test]
fn a_missing_spool_folder_fails_the_agent_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("nope");
    let mut agent = Agent::start(
        &tmp.path().join("run"),
        "a1",
        &config(&spool, &tmp.path().join("data"), "", 10),
    );
    let status = agent.wait_exit(LONG);
    assert!(!status.success());
    let log = agent.stderr_text();
    assert!(
        log.contains("nope") && log.contains("No such file"),
        "{log}"
    );
}

#[test]
fn a_corrupt_checkpoint_is_set_aside_and_the_file_read_again_from_its_start() {
    let (tmp, spool, data) = spool_dirs();
    fs::create_dir_all(data.join("sources/r1")).unwrap();
    fs::write(
        data.join("sources/r1/spooldir.json"),
        b"{\"current\": {\"path\": 7",
    )
    .unwrap();
    drop_file(&spool, "a.log", &file_content("a", 1000));
    let mut agent = Agent::start(
        &tmp.path().join("run"),
        "a1",
        &config(&spool, &data, "", 1000),
    );
    wait_until(LONG, "the file completed", || {
        spool.join("a.log.COMPLETED").exists()
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success());
    assert_eq!(
        by_tag(&lines_of(&agent.stdout_bytes()))["a"],
        (0..1000).collect::<Vec<_>>()
    );
    let log = agent.stderr_text();
    assert!(
        log.contains("corrupt checkpoint set aside") && log.contains("spooldir.json"),
        "{log}"
    );
    assert!(data.join("sources/r1/spooldir.json.corrupt").exists());
}

/// The agent's CPU time (user + system) so far, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_agent_does_not_wake_itself() {
    let (tmp, spool, data) = spool_dirs();
    drop_file(&spool, "a.log", &file_content("a", 100));
    let mut agent = Agent::start(
        &tmp.path().join("run"),
        "a1",
        &config(&spool, &data, "", 1000),
    );
    wait_until(LONG, "the file completed", || {
        spool.join("a.log.COMPLETED").exists()
    });
    let before = cpu_ticks(agent.pid());
    let idle_since = std::time::Instant::now();
    // A deliberate idle period: what is measured is the CPU the agent uses while nothing happens.
    wait_until(LONG, "three idle seconds", || {
        idle_since.elapsed() > Duration::from_secs(3)
    });
    let used = cpu_ticks(agent.pid()) - before;
    // A loop that wakes itself (its own directory listing raising file-system events) burns
    // about 100 ticks a second; polling every 500 ms costs next to nothing.
    assert!(used < 30, "{used} clock ticks of CPU in 3 idle seconds");
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(LONG).success());
}

#[test]
fn sigkill_with_several_files_in_flight_resumes_each_without_gaps() {
    let (tmp, spool, data) = spool_dirs();
    let files = 40;
    for i in 0..files {
        drop_file(
            &spool,
            &format!("s{i:02}.log"),
            &file_content(&format!("s{i:02}"), 8_000),
        );
    }
    let conf = config(&spool, &data, "      order: name", 20_000);
    let run_dir = tmp.path().join("run");
    let mut first = Agent::start(&run_dir, "a1", &conf);
    let completed = || {
        (0..files)
            .filter(|i| spool.join(format!("s{i:02}.log.COMPLETED")).exists())
            .count()
    };
    wait_until(LONG, "some files completed", || completed() >= 3);
    first.kill();
    assert!(
        completed() < files,
        "the kill came after every file: add files"
    );
    let mut second = Agent::start(&run_dir, "a1", &conf);
    wait_until(LONG, "every file completed after the restart", || {
        completed() == files
    });
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit(LONG).success(), "{}", second.stderr_text());
    let mut all = first.stdout_bytes();
    // A line cut by the kill is not a line: drop the first run's unterminated tail.
    let cut = all.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    all.truncate(cut);
    all.extend(second.stdout_bytes());
    let tags = by_tag(&lines_of(&all));
    for i in 0..files {
        let seqs = &tags[&format!("s{i:02}")];
        let mut next = 0;
        for &s in seqs {
            assert!(s <= next, "s{i:02}: line {s} arrived before line {next}");
            if s == next {
                next += 1;
            }
        }
        assert_eq!(next, 8_000, "s{i:02} complete");
    }
}
