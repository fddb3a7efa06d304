//! What a hostile run against issue 10 (the shared source pipeline, spooldir's blocking-pool
//! file operations, the format-neutral config tree, component spans in logs) found, on the
//! binary of 3387cf2. Each test describes the expected behaviour and failed when it was
//! written.
//!
//! None of them needs a Kafka broker: the console sink, the file channel, and a Kafka sink
//! pointed at a port nobody listens on are enough.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::agent::{
    Agent, console_agent, free_port, metric, sluice, sluice_bin, spooldir_console, wait_until,
};

const LONG: Duration = Duration::from_secs(60);

/// The console sink's output, one body per line.
fn out_lines(agent: &Agent) -> Vec<String> {
    String::from_utf8_lossy(&agent.stdout_bytes())
        .lines()
        .map(str::to_owned)
        .collect()
}

fn taildir_console(data: &Path, logs: &Path, source_opts: &str) -> String {
    let logs = logs.display();
    console_agent(
        data,
        &format!(
            "type: taildir, paths: [\"{logs}/*.log\"], channel: c1, poll_interval: 100ms{source_opts}"
        ),
    )
}

/// README: "A number or a boolean may also be written as a string", and "Components whose own
/// config and channel did not change keep running untouched". A reload that only writes the
/// Kafka sink's `producer:` settings as text (`linger.ms: "5"` for `linger.ms: 5`) hands
/// librdkafka exactly the same settings, so the sink must be kept. It is restarted instead:
/// `ProducerValue` (sinks/src/kafka/config.rs) is an untagged enum whose `Int(5)` and
/// `Str("5")` differ, and the reload plan compares the parsed values.
#[test]
fn a_reload_writing_producer_settings_as_text_keeps_the_kafka_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, data) = (dir.path().join("spool"), dir.path().join("data"));
    fs::create_dir_all(&spool).unwrap();
    let (port, nobody) = (free_port(), free_port());
    let config = |batch: &str, linger: &str, idempotence: &str| {
        format!(
            r#"a1:
  data_dir: {data}
  http: 127.0.0.1:{port}
  shutdown_timeout: 5s
  sources:
    r1: {{ type: spooldir, dir: {spool}, channel: c1, batch_size: {batch} }}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: "127.0.0.1:{nobody}"
      topic: t
      producer: {{ linger.ms: {linger}, enable.idempotence: {idempotence} }}
"#,
            data = data.display(),
            spool = spool.display(),
        )
    };
    let mut agent = Agent::start(dir.path(), "a1", &config("100", "5", "true"));
    let conf = dir.path().join("agent.yaml");
    let applied = || metric(port, "sluice_config_reloads_total", "result=\"applied\"");
    wait_until(LONG, "the agent serves /metrics", || applied().is_some());

    // Every value written as text, the same values as before.
    fs::write(&conf, config("\"100\"", "\"5\"", "\"true\"")).unwrap();
    agent.signal(libc::SIGHUP);
    wait_until(LONG, "the reload applied", || applied() == Some(1));
    let log = agent.stderr_text();
    agent.stop_ok(LONG);
    let reload_line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        reload_line.contains("no component changed"),
        "the same settings written as text must keep every component; the reload said: \
         {reload_line}\n{log}"
    );
}

/// `sluice validate` says "agent a1 is valid" (exit 0) for values that make the agent panic
/// as soon as it runs them: a batch size of u64::MAX (`Vec::with_capacity` in
/// sources/src/pipeline/pack.rs: "capacity overflow"), and durations of u64::MAX seconds
/// added to or subtracted from an `Instant`/`SystemTime` (spooldir `Spool::wake_at`, `not_ready`;
/// taildir `Resume::start_of` for `ignore_older`, its poll and scan timers). The component
/// panics, the agent exits 1, and a spooldir file whose lines were already delivered stays in
/// place to be delivered again at the next start. Expected: validate refuses such a value
/// (exit 2, naming the key), or the agent runs with it.
#[test]
fn validate_refuses_the_huge_values_that_make_the_agent_panic() {
    const MAX: &str = "18446744073709551615";
    let cases = [
        ("spooldir", "batch_size"),
        ("spooldir", "poll_interval"),
        ("spooldir", "ready_after"),
        ("taildir", "batch_size"),
        ("taildir", "ignore_older"),
        ("taildir", "poll_interval"),
        ("taildir", "scan_interval"),
    ];
    let mut problems = Vec::new();
    for (kind, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (files, data) = (dir.path().join("files"), dir.path().join("data"));
        fs::create_dir_all(&files).unwrap();
        fs::write(files.join("a.log"), "one\ntwo\n").unwrap();
        let place = match kind {
            "spooldir" => format!("dir: {}", files.display()),
            _ => format!("paths: [\"{}/*.log\"]", files.display()),
        };
        let config = console_agent(
            &data,
            &format!("type: {kind}, {place}, channel: c1, {key}: {MAX}"),
        );
        let conf = dir.path().join("check.yaml");
        fs::write(&conf, &config).unwrap();
        let (code, _, err) = sluice(&["validate", "-f", conf.to_str().unwrap(), "-n", "a1"]);
        let full_key = format!("a1.sources.r1.{key}");
        if code == 2 && err.contains(&full_key) {
            continue; // refused under its key: fine
        }
        let mut agent = Agent::start(dir.path(), "a1", &config);
        let end = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < end && agent.running() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = agent.stderr_text();
        if log.contains("panicked") || !agent.running() {
            let why = log
                .lines()
                .find(|l| l.contains("panicked with message"))
                .unwrap_or("exited")
                .to_owned();
            problems.push(format!(
                "{kind} `{key}: {MAX}`: validate exit {code}, the agent: {why}"
            ));
        }
        agent.kill();
    }
    assert!(
        problems.is_empty(),
        "accepted by validate, fatal to the agent:\n{}",
        problems.join("\n")
    );
}

/// README: "a file whose completed name is already taken is left in place, unread, with an
/// error naming both". When the completed name is a dangling symbolic link, `files::open`
/// (sources/src/spooldir/files.rs, `done.exists()` follows the link) finds it free, the file
/// is read and delivered, then the rename (a hard link, which does see the name) fails, the
/// file is left in place and skipped only in memory: every restart delivers it again.
/// Expected: at most one delivery, however many restarts.
#[test]
fn a_completed_name_taken_by_a_dangling_link_does_not_ship_the_file_at_every_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, data) = (dir.path().join("spool"), dir.path().join("data"));
    fs::create_dir_all(&spool).unwrap();
    fs::write(spool.join("b.log"), "b one\nb two\n").unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", spool.join("b.log.COMPLETED")).unwrap();
    let config = spooldir_console(&data, &spool, "");
    let mut delivered = 0;
    for run in 0..3 {
        let mut agent = Agent::start(dir.path(), "a1", &config);
        wait_until(LONG, "b.log looked at", || {
            let log = agent.stderr_text();
            log.contains("b.log") && (log.contains("ERROR") || log.contains("file completed"))
        });
        agent.stop_ok(LONG);
        let n = out_lines(&agent).iter().filter(|l| *l == "b one").count();
        eprintln!("run {run}: `b one` delivered {n} time(s)");
        delivered += n;
    }
    assert!(
        delivered <= 1,
        "b.log was delivered {delivered} times in 3 runs (its completed name is a dangling \
         link); expected once at most"
    );
}

/// `long_lines: truncate` drops the rest of a long line. When the agent stops while that rest
/// is being dropped, the position file records an offset inside the line (the framer's offset,
/// past the bytes dropped so far: `Progress::pass` in sources/src/taildir/rounds.rs, the mark's
/// end in sources/src/pipeline/lines.rs), and after a restart the rest of the dropped line is
/// shipped as a line of its own. Expected: the lines `first`, the line's first
/// `max_line_bytes`, and `next`, and nothing else.
#[test]
fn a_taildir_restart_inside_a_truncated_long_line_ships_no_fragment_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    fs::create_dir_all(&logs).unwrap();
    let file = logs.join("a.log");
    let config = taildir_console(&data, &logs, ", max_line_bytes: 1KiB, long_lines: truncate");
    let mut first = Agent::start(dir.path(), "a1", &config);
    wait_until(LONG, "the source started", || {
        first.stderr_text().contains("taildir source started")
    });
    let mut long = "A".repeat(3000) + &"B".repeat(3000) + &"C".repeat(3000);
    fs::write(&file, format!("first\n{long}")).unwrap(); // the long line is not ended yet
    wait_until(LONG, "the head of the long line delivered", || {
        out_lines(&first).len() == 2
    });
    // The position is written inside the long line, past its head.
    let positions = data.join("sources/r1/positions.json");
    first.wait_for(LONG, "a position inside the long line", || {
        fs::read(&positions)
            .ok()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
            .and_then(|p| p["files"][0]["offset"].as_u64())
            .is_some_and(|offset| offset > 6 + 1024)
    });
    first.stop_ok(LONG);

    let mut second = Agent::start(dir.path(), "a1", &config);
    wait_until(LONG, "the source started again", || {
        second.stderr_text().contains("taildir source started")
    });
    long = "D".repeat(100);
    let mut f = fs::OpenOptions::new().append(true).open(&file).unwrap();
    std::io::Write::write_all(&mut f, format!("{long}\nnext\n").as_bytes()).unwrap();
    wait_until(LONG, "`next` delivered", || {
        out_lines(&second).iter().any(|l| l == "next")
    });
    second.stop_ok(LONG);

    let mut all = out_lines(&first);
    all.extend(out_lines(&second));
    let shown: Vec<String> = all
        .iter()
        .map(|l| format!("{}… ({} bytes)", &l[..l.len().min(8)], l.len()))
        .collect();
    assert!(
        all == ["first".to_owned(), "A".repeat(1024), "next".to_owned()],
        "expected `first`, 1024 × `A`, `next`; delivered: {shown:?}"
    );
}

/// The same for spooldir: a stop while a truncated long line's rest is being dropped leaves
/// `spooldir.json` with an offset inside that line, and the restart ships a fragment of the
/// dropped rest as a line. Made deterministic with a file channel so small that the source
/// waits for room in the middle of the file (its receipts are safe once written), a Kafka sink
/// that cannot deliver in the first run, and a console sink in the second.
#[test]
fn a_spooldir_restart_inside_a_truncated_long_line_ships_no_fragment_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, data, channel) = (
        dir.path().join("spool"),
        dir.path().join("data"),
        dir.path().join("channel"),
    );
    fs::create_dir_all(&spool).unwrap();
    let mut text = String::new();
    for i in 0..15 {
        text.push_str(&format!("L{i:03} {}\n", "x".repeat(3_000_000)));
    }
    fs::write(spool.join(".a.tmp"), &text).unwrap();
    fs::rename(spool.join(".a.tmp"), spool.join("a.log")).unwrap();
    let nobody = free_port();
    let config = |sink: &str| {
        format!(
            r#"a1:
  data_dir: {data}
  shutdown_timeout: 2s
  sources:
    r1: {{ type: spooldir, dir: {spool}, channel: c1, ready_after: 0, batch_size: 1, max_line_bytes: 100, long_lines: truncate }}
  channels:
    c1: {{ type: file, dir: {channel}, capacity: 1KiB }}
  sinks:
    k1: {sink}
"#,
            data = data.display(),
            spool = spool.display(),
            channel = channel.display(),
        )
    };
    let checkpoint = data.join("sources/r1/spooldir.json");
    let mut first = Agent::start(
        dir.path(),
        "a1",
        &config(&format!(
            "{{ type: kafka, channel: c1, brokers: \"127.0.0.1:{nobody}\", topic: t }}"
        )),
    );
    first.wait_for(LONG, "the checkpoint records progress", || {
        fs::read_to_string(&checkpoint).is_ok_and(|c| c.contains("\"offset\""))
    });
    first.stop_ok(LONG);
    let recorded = fs::read_to_string(&checkpoint).unwrap();

    let mut second = Agent::start(dir.path(), "a1", &config("{ type: console, channel: c1 }"));
    second.wait_for(LONG, "a.log completed", || {
        spool.join("a.log.COMPLETED").exists()
    });
    second.stop_ok(LONG);
    let lines = out_lines(&second);
    let fragments: Vec<String> = lines
        .iter()
        .filter(|l| !l.starts_with('L'))
        .map(|l| format!("{}… ({} bytes)", &l[..l.len().min(12)], l.len()))
        .collect();
    assert!(
        fragments.is_empty(),
        "lines that are pieces of a dropped rest: {fragments:?} (checkpoint after the stop: \
         {recorded}; {} lines delivered)",
        lines.len()
    );
}

/// README: a longer line is "`split` into pieces of `max_line_bytes` (nothing lost)". With an
/// `encoding`, the framer cuts the bytes at `max_line_bytes` regardless of character
/// boundaries and the transcoding stage (sources/src/pipeline/transcode.rs) decodes each piece
/// on its own: the character cut in two becomes U+FFFD in both pieces, and in GBK the next
/// piece starts on a trail byte and decodes to different characters altogether ("中文中文"
/// came out as "中文\u{FFFD}", "形闹\u{FFFD}", "文"). Expected: the pieces, put together,
/// are the line.
#[test]
fn split_long_lines_in_a_multibyte_encoding_lose_no_character() {
    let cases: [(&str, usize, Vec<u8>, &str); 2] = [
        (
            "gbk",
            5,
            encoding_gbk("中文中文中文\nend\n"),
            "中文中文中文",
        ),
        (
            "utf-16le",
            6,
            utf16le("ab\u{1D11E}c\nend\n"),
            "ab\u{1D11E}c",
        ),
    ];
    let mut problems = Vec::new();
    for (encoding, max, bytes, line) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
        fs::create_dir_all(&logs).unwrap();
        fs::write(logs.join("a.log"), &bytes).unwrap();
        let config = taildir_console(
            &data,
            &logs,
            &format!(", encoding: {encoding}, max_line_bytes: {max}"),
        );
        let mut agent = Agent::start(dir.path(), "a1", &config);
        agent.wait_for(LONG, "`end` delivered", || {
            out_lines(&agent).iter().any(|l| l == "end")
        });
        agent.stop_ok(LONG);
        let lines = out_lines(&agent);
        let pieces = &lines[..lines.len() - 1];
        if pieces.concat() != line {
            problems.push(format!("{encoding}: {line:?} came out as {pieces:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// GBK bytes of `text` (which holds only ASCII and the characters 中 and 文).
fn encoding_gbk(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for c in text.chars() {
        match c {
            '中' => out.extend_from_slice(&[0xD6, 0xD0]),
            '文' => out.extend_from_slice(&[0xCE, 0xC4]),
            c if c.is_ascii() => out.push(c as u8),
            c => panic!("no GBK bytes for {c:?} in this test"),
        }
    }
    out
}

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// envsubst.rs: "A value is never parsed as YAML, so whatever it holds (`#`, ...) stays in
/// the one value it was meant for: it can neither add keys nor lose a part to a comment."
/// An unquoted reference whose value YAML reads as a number or boolean is retyped
/// (`Marked::whole`, agent/src/envsubst.rs), and a `producer:` setting, which takes any
/// scalar, gets the number printed back: `0x10` reaches librdkafka as `16`, `12 #2` as `12`
/// (a `sasl.password` would change the same way, silently). Since the config tree now reads
/// text as a number wherever a number is expected, the retyping is not needed for numeric
/// options either. Expected: the setting gets the variable's value as written.
#[test]
fn an_environment_value_reaches_a_producer_setting_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("a.yaml");
    fs::write(
        &conf,
        format!(
            r#"a1:
  data_dir: {data}
  sources:
    r1: {{ type: spooldir, dir: {spool}, channel: c1 }}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1: {{ type: kafka, channel: c1, brokers: "127.0.0.1:9", topic: t, producer: {{ ssl.ca.location: ${{CA}} }} }}
"#,
            data = dir.path().join("data").display(),
            spool = dir.path().display(),
        ),
    )
    .unwrap();
    let mut problems = Vec::new();
    for value in ["0x10", "12 #2", "TRUE"] {
        let out = Command::new(sluice_bin())
            .args(["validate", "-n", "a1", "-f"])
            .arg(&conf)
            .env("CA", value)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // The CA file does not exist: the message quotes the path librdkafka was given.
        if !err.contains(&format!("cannot read `{value}`")) {
            problems.push(format!("CA={value:?}: {}", err.trim()));
        }
    }
    assert!(
        problems.is_empty(),
        "the value librdkafka gets is not the variable's:\n{}",
        problems.join("\n")
    );
}

/// README: "Unknown keys are errors, and every error names its exact key". A YAML key that
/// is an integer (`0:`, `1:`) is not refused as an unknown key: the config tree's deserializer
/// hands it to the option struct as a number (agent/src/config/tree.rs forwards
/// `deserialize_identifier` to `deserialize_any`, which visits the integer), and serde's
/// derived field visitor takes a number for the *position* of a field. So `0: /var/spool/x`
/// sets a spooldir's `dir`, `1: logs` a Kafka sink's `topic`, and `6: 0` is reported as
/// `batch_size: must be at least 1`. Before the tree (serde_yaml's own `Value` deserializer),
/// such a key was refused ("invalid type: integer, expected field identifier"). Expected:
/// `validate` exits 2 and names the key as unknown.
#[test]
fn an_integer_key_is_an_unknown_key_not_the_number_of_a_field() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    fs::create_dir_all(&spool).unwrap();
    let conf = dir.path().join("a.yaml");
    fs::write(
        &conf,
        format!(
            r#"a1:
  data_dir: {data}
  sources:
    r1: {{ type: spooldir, channel: c1, 0: {spool} }}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1: {{ type: kafka, channel: c1, brokers: "127.0.0.1:9", 1: logs }}
"#,
            data = dir.path().join("data").display(),
            spool = spool.display(),
        ),
    )
    .unwrap();
    let (code, out, err) = sluice(&["validate", "-f", conf.to_str().unwrap(), "-n", "a1"]);
    assert!(
        code == 2 && err.contains("a1.sources.r1.0") && err.contains("a1.sinks.k1.1"),
        "`0:` and `1:` are no option names; validate exited {code}:\n{out}{err}"
    );
}
