//! End-to-end checks of the `sluice` command line: help, version, `validate` (every example
//! configuration in `conf/`, its errors and warnings), and how `sluice agent` starts and stops:
//! a startup failure touches no file, a dead sink or a second signal ends the drain at once.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::agent::{
    Agent, drop_file, free_port, http_get, repo_root, sluice, sluice_bin, spool_dirs, wait_until,
};

/// How long an agent that should stop at once may take, at most, to exit (a deadline for a
/// hang, not a measure of speed).
const STOPS: Duration = Duration::from_secs(30);

#[test]
fn help_and_version_work() {
    let (code, out, _) = sluice(&["--help"]);
    assert_eq!(code, 0);
    for word in ["agent", "validate", "--log-level", "--log-format"] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let (code, out, _) = sluice(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("sluice "), "{out}");
    let (code, out, _) = sluice(&["agent", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("-n") && out.contains("-f"), "{out}");
}

#[test]
fn every_example_configuration_is_valid() {
    let mut checked = 0;
    for entry in fs::read_dir(repo_root().join("conf")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "properties")
        {
            let (code, out, err) = sluice(&["validate", "-f", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            assert!(out.contains("is valid"), "{out}");
            checked += 1;
        }
    }
    assert!(checked >= 1, "no configuration found in conf/");
}

#[test]
fn validate_names_the_exact_key_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("bad.yaml");
    fs::write(
        &conf,
        "a1:\n  sources:\n    r1: { type: spooldir, dir: /tmp, channel: c1, colour: red }\n  channels:\n    c1: { type: memory }\n  sinks:\n    k1: { type: console, channel: c2 }\n",
    )
    .unwrap();
    let (code, _, err) = sluice(&["validate", "-f", conf.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("a1.sources.r1.colour: unknown key"), "{err}");
    assert!(
        err.contains("a1.sinks.k1.channel: no channel named `c2`"),
        "{err}"
    );
    // `agent` refuses to start on the same file, with the same words.
    let (code, _, err) = sluice(&["agent", "-n", "a1", "-f", conf.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("a1.sources.r1.colour: unknown key"), "{err}");
    let (code, _, err) = sluice(&["validate", "-f", conf.to_str().unwrap(), "-n", "zz"]);
    assert_ne!(code, 0);
    assert!(err.contains("zz: no such agent"), "{err}");
}

/// Writes `text` to `dir/name` and validates it; returns (exit code, stdout, stderr).
fn validate(dir: &Path, name: &str, text: &str) -> (i32, String, String) {
    let conf = dir.join(name);
    fs::write(&conf, text).unwrap();
    sluice(&["validate", "-f", conf.to_str().unwrap()])
}

#[test]
fn validate_names_the_real_fault_once() {
    let tmp = tempfile::tempdir().unwrap();
    let wired = |channel: &str| {
        format!(
            "a1:\n  sources:\n    r1: {{ type: spooldir, dir: /tmp, channel: c1 }}\n  channels:\n    c1: {channel}\n  sinks:\n    k1: {{ type: console, channel: c1 }}\n"
        )
    };
    // An invalid channel: its own key, and not "no channel named `c1`" for its users.
    let (code, _, err) = validate(
        tmp.path(),
        "chan.yaml",
        &wired("{ type: memory, capacity: 0 }"),
    );
    assert_eq!(code, 2);
    assert_eq!(err.trim(), "a1.channels.c1.capacity: must be at least 1");
    // A huge integer: out of range for its key.
    let (code, _, err) = validate(
        tmp.path(),
        "huge.yaml",
        &wired("{ type: memory, capacity: 99999999999999999999999 }"),
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "a1.channels.c1.capacity: `99999999999999999999999` is out of range for this key (too large)"
    );
    // A merge key is applied, not ignored; `x-` keys hold anchors and are not agents.
    let merged = "x-common:\n  console: &console { type: console, batch_size: 0 }\na1:\n  sources:\n    r1: { type: spooldir, dir: /tmp, channel: c1 }\n  channels:\n    c1: { type: memory }\n  sinks:\n    k1: { <<: *console, channel: c1 }\n";
    let (code, _, err) = validate(tmp.path(), "merge.yaml", merged);
    assert_eq!(code, 2, "the merged batch_size: 0 is checked");
    assert_eq!(err.trim(), "a1.sinks.k1.batch_size: must be at least 1");
    let (code, out, err) = validate(
        tmp.path(),
        "merge-ok.yaml",
        &merged.replace("batch_size: 0", "batch_size: 10"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("agent a1 is valid"), "{out}");
    assert!(!out.contains("x-common"), "{out}");
    // A CA file that does not exist is named under its librdkafka key.
    let (code, _, err) = validate(
        tmp.path(),
        "tls.yaml",
        "a1:\n  sources:\n    r1: { type: spooldir, dir: /tmp, channel: c1 }\n  channels:\n    c1: { type: memory }\n  sinks:\n    k1: { type: kafka, channel: c1, brokers: \"b:9093\", topic: t, producer: { security.protocol: ssl, ssl.ca.location: /nonexistent/ca.pem } }\n",
    );
    assert_eq!(code, 2);
    assert!(
        err.starts_with("a1.sinks.k1.producer.ssl.ca.location: cannot read `/nonexistent/ca.pem`"),
        "{err}"
    );
}

#[test]
fn validate_warns_when_a_pattern_covers_the_data_dir_or_two_sources_read_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    fs::create_dir_all(logs.join("spool")).unwrap();
    let text = format!(
        "a1:\n  data_dir: {logs}/data\n  sources:\n    r1: {{ type: taildir, paths: [\"{logs}/**\"], channel: c1 }}\n    r2: {{ type: spooldir, dir: {logs}/spool, channel: c1 }}\n  channels:\n    c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: console, channel: c1 }}\n",
        logs = logs.display()
    );
    let (code, out, err) = validate(tmp.path(), "overlap.yaml", &text);
    assert_eq!(
        code, 0,
        "warnings do not make a configuration invalid: {err}"
    );
    assert!(
        out.contains("is valid") && out.contains("2 warnings"),
        "{out}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("warning: a1.sources.r1.paths[0]:") && lines[0].contains("data_dir"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("warning: a1.sources.r2.dir:")
            && lines[1].contains("source `r1` also reads")
            && lines[1].contains("shipped twice"),
        "{err}"
    );
    // The agent logs them when it starts.
    let mut agent = Agent::start(&tmp.path().join("run"), "a1", &text);
    wait_until(Duration::from_secs(30), "the agent starts", || {
        agent.stderr_text().contains("agent started")
    });
    assert!(
        agent.stderr_text().contains("configuration warning"),
        "{}",
        agent.stderr_text()
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(STOPS).success(), "{}", agent.stderr_text());
}

fn spool_console(spool: &Path, data: &Path, extra: &str) -> String {
    format!(
        "a1:\n  data_dir: {}\n  shutdown_timeout: 1h\n{extra}  sources:\n    r1: {{ type: spooldir, dir: {}, channel: c1 }}\n  channels:\n    c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: console, channel: c1 }}\n",
        data.display(),
        spool.display()
    )
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn a_busy_http_port_stops_the_agent_before_any_file_is_touched() {
    let (tmp, spool, data) = spool_dirs();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    for name in ["a.log", "b.log", "c.log"] {
        drop_file(&spool, name, b"one\ntwo\nthree\n");
    }
    let config = spool_console(&spool, &data, &format!("  http: 127.0.0.1:{port}\n"));
    let mut agent = Agent::start(&tmp.path().join("run"), "a1", &config);
    let status = agent.wait_exit(STOPS);
    let log = agent.stderr_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(
        names(&spool),
        ["a.log", "b.log", "c.log"],
        "no file read, renamed or set aside: {log}"
    );
    assert!(!log.contains("set aside"), "{log}");
    assert!(
        log.contains(&format!(
            "a1.http: cannot listen on 127.0.0.1:{port} (port {port})"
        )),
        "the error names the setting and the port: {log}"
    );
    assert!(agent.stdout_bytes().is_empty(), "no line was shipped");
    drop(held);
}

/// Starts `sluice agent -n a1` on `config` in `dir` with stdout connected as given and stderr
/// to `dir/stderr`.
fn start_with_stdout(dir: &Path, config: &str, stdout: Stdio) -> std::process::Child {
    fs::create_dir_all(dir).unwrap();
    let conf = dir.join("agent.yaml");
    fs::write(&conf, config).unwrap();
    Command::new(sluice_bin())
        .args(["agent", "-n", "a1", "-f"])
        .arg(&conf)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("start sluice")
}

/// Waits up to `deadline` for `child` to exit; kills it and panics with its log otherwise.
fn wait_exit(child: &mut std::process::Child, dir: &Path, deadline: Duration) -> i32 {
    let log = || fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    let end = std::time::Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the agent did not exit within {deadline:?}; stderr:\n{}",
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_sink_that_fails_at_start_ends_the_drain_at_once() {
    let (tmp, spool, data) = spool_dirs();
    drop_file(&spool, "a.log", &"line\n".repeat(10_000).into_bytes());
    // The CA file exists (so `validate` accepts it) but holds no certificate: librdkafka
    // refuses to create the producer.
    let ca = tmp.path().join("ca.pem");
    fs::write(&ca, "not a certificate\n").unwrap();
    let config = spool_console(&spool, &data, "").replace(
        "{ type: console, channel: c1 }",
        &format!(
            "{{ type: kafka, channel: c1, brokers: \"127.0.0.1:1\", topic: t, producer: {{ security.protocol: ssl, ssl.ca.location: {} }} }}",
            ca.display()
        ),
    );
    let mut agent = Agent::start(&tmp.path().join("run"), "a1", &config);
    // shutdown_timeout is an hour: only a drain that ends at once lets the agent exit.
    let status = agent.wait_exit(STOPS);
    let log = agent.stderr_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("sink k1: cannot create the kafka producer")
            && log.contains("ssl.ca.location"),
        "{log}"
    );
    assert!(
        !names(&spool).iter().any(|n| n.ends_with(".FAILED")),
        "{log}"
    );
}

#[test]
fn a_sink_that_dies_while_running_ends_the_drain_at_once() {
    let (tmp, spool, data) = spool_dirs();
    drop_file(&spool, "a.log", &"line\n".repeat(100_000).into_bytes());
    let dir = tmp.path().join("run");
    // stdout is a pipe whose reading end is closed: the console sink's first write fails.
    let mut child = start_with_stdout(&dir, &spool_console(&spool, &data, ""), Stdio::piped());
    drop(child.stdout.take());
    let code = wait_exit(&mut child, &dir, STOPS);
    let log = fs::read_to_string(dir.join("stderr")).unwrap();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("component failed component=k1"), "{log}");
}

#[test]
fn a_second_signal_stops_at_once_while_stdout_is_blocked() {
    let (tmp, spool, data) = spool_dirs();
    drop_file(
        &spool,
        "a.log",
        &"a line of text\n".repeat(300_000).into_bytes(),
    );
    let port = free_port();
    let dir = tmp.path().join("run");
    let config = spool_console(&spool, &data, &format!("  http: 127.0.0.1:{port}\n"));
    // stdout is a pipe nobody reads: once its buffer (64 KiB) is full, every write blocks.
    let mut child = start_with_stdout(&dir, &config, Stdio::piped());
    let _unread = child.stdout.take();
    let source_events = || {
        http_get(port, "/metrics")
            .and_then(|(_, body)| {
                body.lines()
                    .find(|l| l.starts_with("sluice_source_events_total{"))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    // Far more lines than the pipe holds (about 4,400 of these) were read, within the
    // memory channel's default 10,000: the sink is stuck in a write.
    wait_until(
        Duration::from_secs(60),
        "the source read 8000 lines",
        || source_events() >= 8_000,
    );
    let log = || fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_until(Duration::from_secs(10), "the first signal is seen", || {
        log().contains("SIGTERM: stopping")
    });
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // "A second signal stops it at once": a deadline for a hang, generous for a loaded machine
    // and shorter than the 5 s the agent used to wait for the blocked sink (before hanging on
    // the blocked thread).
    wait_exit(&mut child, &dir, Duration::from_secs(4));
    assert!(log().contains("second signal: stopping now"), "{}", log());
}

/// The console an operator watches: a start line naming every component, a status line every
/// `report_interval` with the counts, a line per file, and a summary at shutdown.
#[test]
fn the_console_tells_the_start_the_status_and_a_summary() {
    let (dir, spool, data) = spool_dirs();
    let cfg = spool_console(&spool, &data, "  report_interval: 1s\n");
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    let lines: String = (0..2500).map(|i| format!("line {i}\n")).collect();
    drop_file(&spool, "app.log", lines.as_bytes());
    wait_until(STOPS, "a status line with every line counted", || {
        agent.stderr_text().lines().any(|l| {
            l.contains(" status ")
                && l.contains("r1: 2500 lines")
                && l.contains("k1: 2500 delivered")
        })
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(STOPS).success(), "{}", agent.stderr_text());
    let stderr = agent.stderr_text();
    let start = stderr
        .lines()
        .find(|l| l.contains("agent started"))
        .unwrap_or_else(|| panic!("no start line: {stderr}"));
    for part in [
        "sources=\"r1 (spooldir ",
        "channels=\"c1 (memory",
        "sinks=\"k1 (console)\"",
    ] {
        assert!(start.contains(part), "{part} not in {start}");
    }
    assert!(stderr.contains("file completed"), "{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.contains(" summary "))
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    for part in [
        "r1: 2500 lines, 1 files completed",
        "k1: 2500 delivered, 0 errors",
        "c1: 0 left",
    ] {
        assert!(summary.contains(part), "{part} not in {summary}");
    }
}

/// The data folder holds checkpoints and channel logs, which hold the lines: the agent creates
/// it (and its missing parents) for its user alone, 0700, whatever the umask.
#[test]
fn the_data_folder_is_created_for_the_agent_alone() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, spool, _) = spool_dirs();
    let data = dir.path().join("var/lib/sluice/a1");
    let cfg = spool_console(&spool, &data, "");
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    wait_until(STOPS, "the agent started", || {
        agent.stderr_text().contains("agent started")
    });
    for d in [&data, &dir.path().join("var")] {
        let mode = fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: {mode:o}", d.display());
    }
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(STOPS).success(), "{}", agent.stderr_text());
}

/// A password never shows in `validate` or `convert` output, even where a message quotes the
/// value it was written in; `${file:}` reads it from a file; a private key others can read is
/// warned about; PLAIN over a listener without TLS is refused by key.
#[test]
fn secrets_are_masked_in_validate_and_convert_and_weak_settings_are_named() {
    use std::os::unix::fs::PermissionsExt;
    const PW: &str = "Pw-in-a-file-93ac71";
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pw");
    fs::write(&pw, format!("{PW}\n")).unwrap();
    let key = tmp.path().join("client.key");
    fs::write(&key, "key").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    // The partitioner's problem quotes its value, which here holds the password.
    let yaml = format!(
        "a1:\n  sources:\n    r1: {{ type: spooldir, dir: /tmp, channel: c1 }}\n  channels:\n    \
         c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: kafka, channel: c1, brokers: \"h:1\", \
         topic: t, tls: {{ cert: {key}, key: {key} }}, sasl: {{ mechanism: PLAIN, username: u, \
         password: \"${{file:{pw}}}\" }}, producer: {{ partitioner: \"x{PW}\" }} }}\n",
        key = key.display(),
        pw = pw.display(),
    );
    let (code, out, err) = validate(tmp.path(), "a.yaml", &yaml);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!format!("{out}{err}").contains(PW), "{out}{err}");
    assert!(
        err.contains("a1.sinks.k1.producer.partitioner: `x***`"),
        "{err}"
    );
    // TLS is on here, so PLAIN is allowed; the key file is warned about.
    let fixed = yaml.replace(&format!("producer: {{ partitioner: \"x{PW}\" }} "), "");
    let (code, out, err) = validate(tmp.path(), "b.yaml", &fixed);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: a1.sinks.k1.tls.key: the private key") && err.contains("mode 0644"),
        "{err}"
    );
    let no_tls = fixed.replace(
        &format!("tls: {{ cert: {k}, key: {k} }}, ", k = key.display()),
        "",
    );
    let (code, out, err) = validate(tmp.path(), "c.yaml", &no_tls);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("a1.sinks.k1.sasl.mechanism: PLAIN would send the password in clear"),
        "{err}"
    );
    // A Flume file's password is masked in the YAML `convert` prints.
    let flume = tmp.path().join("f.properties");
    fs::write(
        &flume,
        format!(
            "a1.sources = r1\na1.channels = c1\na1.sinks = k1\n\
             a1.sources.r1.type = spooldir\na1.sources.r1.spoolDir = /tmp\na1.sources.r1.channels = c1\n\
             a1.channels.c1.type = memory\n\
             a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink\na1.sinks.k1.channel = c1\n\
             a1.sinks.k1.kafka.bootstrap.servers = h:1\na1.sinks.k1.kafka.topic = t\n\
             a1.sinks.k1.kafka.producer.security.protocol = SASL_SSL\n\
             a1.sinks.k1.kafka.producer.sasl.mechanisms = SCRAM-SHA-512\n\
             a1.sinks.k1.kafka.producer.sasl.username = u\n\
             a1.sinks.k1.kafka.producer.sasl.password = {PW}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = sluice(&["convert", "-f", flume.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!format!("{out}{err}").contains(PW), "{out}{err}");
    assert!(
        out.contains("password: \"***\"  # a1.sinks.k1.kafka.producer.sasl.password (a secret"),
        "{out}"
    );
}

/// Idle clients holding every slot of the HTTP endpoint (32) make it close new ones: the
/// operator reads that once in the log, and that it serves again once they leave.
#[test]
fn a_full_http_endpoint_says_so_once_and_when_it_serves_again() {
    use std::net::TcpStream;
    let (dir, spool, data) = spool_dirs();
    let port = free_port();
    let cfg = spool_console(&spool, &data, &format!("  http: 127.0.0.1:{port}\n"));
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    wait_until(STOPS, "/health answers", || {
        http_get(port, "/health").is_some()
    });
    let idle: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // More connections while every slot is held: each is closed unanswered.
    wait_until(STOPS, "the endpoint says it is full", || {
        assert!(http_get(port, "/health").is_none(), "answered while full");
        agent
            .stderr_text()
            .contains("the HTTP endpoint is serving as many connections as it may")
    });
    drop(idle);
    wait_until(STOPS, "/health answers again", || {
        http_get(port, "/health").is_some()
    });
    let log = agent.stderr_text();
    assert_eq!(
        log.matches("the HTTP endpoint is serving as many").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("the HTTP endpoint serves new connections again"),
        "{log}"
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(STOPS).success(), "{}", agent.stderr_text());
}

/// A hostile run's findings: a FIFO named by `${file:}` or `tls.ca` is refused at once, never
/// waited on; a user name from a file and a short password never mangle `/metrics` or the
/// log's own words, while a real password is masked.
#[test]
fn secret_files_that_are_fifos_are_refused_and_masking_leaves_the_programs_words_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    let made = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(made.as_ptr(), 0o600) }, 0);
    let sink = |extra: &str| {
        format!(
            "a1:\n  sources:\n    r1: {{ type: spooldir, dir: /tmp, channel: c1 }}\n  channels:\n    \
             c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: kafka, channel: c1, brokers: \
             \"127.0.0.1:1\", topic: t, {extra} }}\n"
        )
    };
    for (name, extra) in [
        (
            "pw.yaml",
            format!(
                "sasl: {{ mechanism: SCRAM-SHA-512, username: u, password: \"${{file:{}}}\" }}",
                fifo.display()
            ),
        ),
        ("ca.yaml", format!("tls: {{ ca: {} }}", fifo.display())),
    ] {
        let (code, out, err) = validate(tmp.path(), name, &sink(&extra));
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(err.contains("not a regular file"), "{name}: {err}");
    }
    // The user name `sluice` (a word of every metric name) and a short password `total`.
    let user = tmp.path().join("user");
    fs::write(&user, "sluice\n").unwrap();
    let short = tmp.path().join("short");
    fs::write(&short, "total").unwrap();
    const LONG_PW: &str = "Long-pw-5521-abc";
    let port = free_port();
    let (dir, spool, data) = spool_dirs();
    let cfg = format!(
        "a1:\n  data_dir: {data}\n  http: 127.0.0.1:{port}\n  sources:\n    r1: {{ type: spooldir, dir: {spool}, channels: [c1, c2] }}\n  \
         channels:\n    c1: {{ type: memory }}\n    c2: {{ type: memory }}\n  sinks:\n    \
         k1: {{ type: kafka, channel: c1, brokers: \"127.0.0.1:1\", topic: t, sasl: {{ mechanism: SCRAM-SHA-512, \
         username: \"${{file:{user}}}\", password: \"${{file:{short}}}\" }} }}\n    \
         k2: {{ type: kafka, channel: c2, brokers: \"127.0.0.1:1\", topic: t, sasl: {{ mechanism: SCRAM-SHA-512, \
         username: u, password: {LONG_PW} }}, producer: {{ client.id: \"id-{LONG_PW}\" }} }}\n",
        data = data.display(),
        spool = spool.display(),
        user = user.display(),
        short = short.display(),
    );
    let mut agent = Agent::start(dir.path(), "a1", &cfg);
    agent.wait_for(STOPS, "/metrics answers", || {
        http_get(port, "/metrics").is_some()
    });
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert!(
        metrics.contains("sluice_source_events_total{"),
        "the metric names were masked:\n{metrics}"
    );
    assert!(!metrics.contains("***"), "{metrics}");
    agent.signal(libc::SIGTERM);
    agent.wait_exit(STOPS);
    let log = agent.stderr_text();
    assert!(log.contains("sluice::") || log.contains("sluice_"), "{log}");
    assert!(!log.contains(LONG_PW), "{log}");
}
