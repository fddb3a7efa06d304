//! Running the real `sluice` binary from end-to-end tests.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::BTreeSet;
use std::fs;
use std::hash::{BuildHasher, RandomState};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `sluice` binary, built once per test process with the same profile as the tests.
pub fn sluice_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("SLUICE_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test-binary>
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--quiet", "-p", "sluice-agent", "--bin", "sluice"])
            .current_dir(repo_root());
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p sluice-agent failed");
        let bin = profile_dir.join("sluice");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on the loopback interface, never handed out before by this process, and
/// below the kernel's ephemeral range (32768–60999): a broker or agent stopped for a while
/// keeps its port to itself when it starts again, because neither another test of the
/// binary (`bind(0)` reuses freed ports) nor an outgoing connection's local port takes it.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    const FIRST: u16 = 20_000;
    const COUNT: u64 = 12_000;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let seed = RandomState::new().hash_one((std::process::id(), given.len()));
    for i in 0..COUNT {
        let port = FIRST + ((seed.wrapping_add(i.wrapping_mul(7_919))) % COUNT) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!(
        "no free loopback port in {FIRST}..{}",
        u64::from(FIRST) + COUNT
    );
}

/// One GET over HTTP/1.1; `None` if nothing answers. Returns the status line and the body.
pub fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

/// How [`Agent::run_in`] starts the process.
enum Launch {
    /// As the tests run.
    Plain,
    /// In the agent's folder as its working folder.
    InDir,
    /// Without the capabilities that override file modes.
    WithoutDacOverride,
}

/// A running `sluice agent`, with stdout and stderr captured to files in its folder.
pub struct Agent {
    child: Option<Child>,
    /// Where this run's stdout goes.
    pub stdout: PathBuf,
    /// Where this run's stderr goes.
    pub stderr: PathBuf,
}

impl Agent {
    /// Writes `config` to `dir/agent.yaml` and starts agent `name` from it. Output files are
    /// numbered so that restarts in the same folder keep the earlier runs' output.
    pub fn start(dir: &Path, name: &str, config: &str) -> Agent {
        Self::start_with_env(dir, name, config, &[])
    }

    /// Like [`Agent::start`], with extra environment variables (`RUST_LOG` among them: the
    /// test's own is not passed on).
    pub fn start_with_env(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> Agent {
        Self::start_with(dir, name, config, env, &[])
    }

    /// Like [`Agent::start_with_env`], with extra arguments after `agent -n NAME -f FILE`.
    pub fn start_with(
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Agent {
        fs::create_dir_all(dir).unwrap();
        let conf = dir.join("agent.yaml");
        fs::write(&conf, config).unwrap();
        Self::run(dir, name, &conf, env, args)
    }

    /// Starts agent `name` from the configuration file `conf` (written by the caller), with
    /// extra arguments; its output goes to numbered files in `dir`.
    pub fn start_file(dir: &Path, name: &str, conf: &Path, args: &[&str]) -> Agent {
        fs::create_dir_all(dir).unwrap();
        Self::run(dir, name, conf, &[], args)
    }

    /// Like [`Agent::start_file`], run from `dir` as its working folder (where a Flume file's
    /// agent keeps its `./data/NAME`).
    pub fn start_file_in(dir: &Path, name: &str, conf: &Path, args: &[&str]) -> Agent {
        fs::create_dir_all(dir).unwrap();
        Self::run_in(dir, name, conf, &[], args, Launch::InDir)
    }

    /// Like [`Agent::start`], without the capabilities that let root read and search any
    /// file whatever its mode (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`), so that a file of
    /// mode 0000 is as unreadable to it as to any other user. Tests run as root in CI.
    pub fn start_unprivileged(dir: &Path, name: &str, config: &str) -> Agent {
        fs::create_dir_all(dir).unwrap();
        let conf = dir.join("agent.yaml");
        fs::write(&conf, config).unwrap();
        Self::run_in(dir, name, &conf, &[], &[], Launch::WithoutDacOverride)
    }

    fn run(dir: &Path, name: &str, conf: &Path, env: &[(&str, &str)], args: &[&str]) -> Agent {
        Self::run_in(dir, name, conf, env, args, Launch::Plain)
    }

    fn run_in(
        dir: &Path,
        name: &str,
        conf: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        how: Launch,
    ) -> Agent {
        let run = (0..)
            .find(|i| !dir.join(format!("stdout.{i}")).exists())
            .unwrap();
        let stdout = dir.join(format!("stdout.{run}"));
        let stderr = dir.join(format!("stderr.{run}"));
        let mut cmd = Command::new(sluice_bin());
        match how {
            Launch::Plain => {}
            Launch::InDir => {
                cmd.current_dir(dir);
            }
            Launch::WithoutDacOverride => {
                use std::os::unix::process::CommandExt;
                // SAFETY: prctl(2) only, between fork and exec. Root's capabilities after
                // exec are its bounding set (its inheritable set is empty), so dropping them
                // from the bounding set drops them for good; a user who is not root has none.
                unsafe {
                    cmd.pre_exec(|| {
                        // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (linux/capability.h).
                        for cap in [1 as libc::c_ulong, 2] {
                            if libc::geteuid() == 0
                                && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0 as libc::c_ulong) != 0
                            {
                                return Err(std::io::Error::last_os_error());
                            }
                        }
                        Ok(())
                    });
                }
            }
        }
        let child = cmd
            .args(["agent", "-n", name, "-f"])
            .arg(conf)
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start sluice");
        Agent {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Kills the agent with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the agent to exit; panics with its stderr after `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        let child = self.child.as_mut().expect("agent already reaped");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > end {
                let log = self.stderr_text();
                self.kill();
                panic!("agent did not exit within {deadline:?}; stderr:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// What the agent wrote to stdout so far.
    pub fn stdout_bytes(&self) -> Vec<u8> {
        fs::read(&self.stdout).unwrap_or_default()
    }

    /// Like [`wait_until`], but a timeout shows the last lines of the agent's log, so that a
    /// failure in CI says what the agent was doing.
    pub fn wait_for(&self, deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + deadline;
        while !cond() {
            if Instant::now() >= end {
                let log = self.stderr_text();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                panic!(
                    "timed out after {deadline:?} waiting for: {what}\nthe agent's log ends:\n{tail}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the agent logged so far.
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops the agent with SIGTERM and checks that it exits 0 within `deadline`.
    pub fn stop_ok(&mut self, deadline: Duration) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(deadline);
        assert!(status.success(), "exit {status}: {}", self.stderr_text());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `sluice ARGS` to completion; returns (exit code, stdout, stderr).
pub fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sluice_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `content` to `dir/name` the way a producer should drop a spool file: written under
/// a hidden name, then renamed in, so the agent never sees it half-written.
pub fn drop_file(dir: &Path, name: &str, content: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, dir.join(name)).unwrap();
}

/// An agent with source `r1` (its options as one YAML flow map's content) into a memory
/// channel and the console sink.
pub fn console_agent(data: &Path, source: &str) -> String {
    format!(
        r#"a1:
  data_dir: {data}
  shutdown_timeout: 5s
  sources:
    r1: {{ {source} }}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1: {{ type: console, channel: c1 }}
"#,
        data = data.display(),
    )
}

/// [`console_agent`] with a spooldir source on `spool` that takes files 100 ms after they
/// stop changing and lists the folder every 100 ms; `source_opts` (`, key: value, ...`) adds
/// options.
pub fn spooldir_console(data: &Path, spool: &Path, source_opts: &str) -> String {
    let spool = spool.display();
    console_agent(
        data,
        &format!(
            "type: spooldir, dir: {spool}, channel: c1, ready_after: 100ms, poll_interval: 100ms{source_opts}"
        ),
    )
}

/// A temporary folder holding an empty spool folder, and the path of a data folder in it.
pub fn spool_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, data) = (tmp.path().join("spool"), tmp.path().join("data"));
    fs::create_dir_all(&spool).unwrap();
    (tmp, spool, data)
}

/// An agent with a spooldir source on `spool` (batches of 500), channel `c1` as given (a YAML
/// flow mapping), and a Kafka sink writing to `topic` on `brokers` (batches of 1,000), serving
/// `/metrics` on `http`.
pub fn spool_kafka_config(
    spool: &Path,
    data: &Path,
    brokers: &str,
    topic: &str,
    channel: &str,
    http: u16,
) -> String {
    format!(
        r#"
a1:
  data_dir: {data}
  shutdown_timeout: 30s
  http: 127.0.0.1:{http}
  sources:
    r1: {{ type: spooldir, dir: {spool}, channel: c1, batch_size: 500 }}
  channels:
    c1: {channel}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {brokers}
      topic: {topic}
      batch_size: 1000
"#,
        data = data.display(),
        spool = spool.display(),
    )
}

/// The value of the agent's metric `name` whose labels include `label` (`sink="k1"`; empty for
/// the first series), if the agent on `port` serves it.
pub fn metric(port: u16, name: &str, label: &str) -> Option<u64> {
    let page = http_get(port, "/metrics")?.1;
    let prefix = format!("{name}{{");
    page.lines()
        .filter(|l| l.starts_with(&prefix))
        .find(|l| {
            l.split_once('}')
                .is_some_and(|(labels, _)| labels.contains(label))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// How many files of `dir` were completed (renamed `*.COMPLETED`), names compared as bytes.
pub fn completed(dir: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().as_bytes().ends_with(b".COMPLETED"))
        })
        .count()
}
