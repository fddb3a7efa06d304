//! Apache Flume 1.11.0 itself, for differential tests: its jars come from Maven Central through
//! `scripts/flume-dev` (cached in `.cache/flume`), and [`Flume::start`] runs
//! `java -cp 'libs/*' org.apache.flume.node.Application -n NAME -f FILE` with a log4j2 config
//! written in the test's folder, so that Flume logs to a file there.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::agent::repo_root;

fn flume_dev() -> PathBuf {
    repo_root().join("scripts/flume-dev")
}

/// Fetches Flume's jars once per test process (a no-op when they are cached). Panics, with
/// Maven's output, when they cannot be fetched: a differential test never skips itself.
pub fn fetch() {
    static FETCHED: OnceLock<Result<(), String>> = OnceLock::new();
    let done = FETCHED.get_or_init(|| {
        let t = Instant::now();
        let out = Command::new(flume_dev())
            .arg("fetch")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", flume_dev().display()))?;
        if !out.status.success() {
            return Err(format!(
                "{}\n--- stdout ---\n{}--- stderr ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        eprintln!(
            "flume harness: Flume 1.11.0 jars ready in {:.1?}",
            t.elapsed()
        );
        Ok(())
    });
    if let Err(e) = done {
        panic!(
            "cannot fetch Apache Flume 1.11.0 with Maven (scripts/flume-dev fetch), which this \
             differential test runs against; it needs mvn and access to Maven Central: {e}"
        );
    }
}

/// The log4j2 config the harness gives Flume: INFO and above (the Kafka client's WARN and
/// above) to stdout, which goes to `flume.log`.
const LOG4J2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <Console name="Console" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} %-5p [%t] (%c{1}) %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="org.apache.kafka" level="warn"/>
    <Root level="info">
      <AppenderRef ref="Console"/>
    </Root>
  </Loggers>
</Configuration>
"#;

/// A running Flume agent (a JVM), killed on drop.
pub struct Flume {
    child: Option<Child>,
    /// Flume's stdout and stderr (its log).
    pub log: PathBuf,
}

impl Flume {
    /// Starts agent `name` of the properties file `conf` in `dir` (its working folder; its log
    /// is `dir/flume.log`), without reloading the file.
    pub fn start(dir: &Path, name: &str, conf: &Path) -> Flume {
        fetch();
        fs::create_dir_all(dir).unwrap();
        let log4j = dir.join("log4j2.xml");
        fs::write(&log4j, LOG4J2).unwrap();
        let log = dir.join("flume.log");
        let out = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(flume_dev());
        cmd.arg("agent")
            .arg(format!("-Dlog4j.configurationFile={}", log4j.display()))
            .arg(format!("-Duser.home={}", dir.display()))
            .args(["-n", name, "-f"])
            .arg(conf)
            .arg("--no-reload-conf")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // SAFETY: prctl(2) only, between fork and exec. The JVM (flume-dev execs it) is
        // killed if the test process dies without dropping this.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start scripts/flume-dev agent");
        Flume {
            child: Some(child),
            log,
        }
    }

    /// What Flume logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of Flume's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// True while the JVM runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Polls `cond` every 50 ms; panics after `deadline`, or when Flume exits, with the end
    /// of Flume's log.
    pub fn wait_for(&mut self, deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + deadline;
        while !cond() {
            let exited = !self.running();
            if exited || Instant::now() >= end {
                panic!(
                    "{} waiting for: {what}\nFlume's log ends:\n{}",
                    if exited {
                        "Flume exited".to_owned()
                    } else {
                        format!("timed out after {deadline:?}")
                    },
                    self.log_tail(80)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics when Flume removed a component of the configuration (a config error Flume
    /// logs and goes on without), or when it is not running, naming the lines.
    pub fn assert_configured(&mut self) {
        let log = self.log_text();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("removed due to an error")
                    || l.contains("has been removed")
                    || l.contains("No configuration found")
                    || l.contains(" FATAL ")
            })
            .collect();
        assert!(
            bad.is_empty(),
            "Flume dropped part of the configuration:\n{}\n--- log ---\n{}",
            bad.join("\n"),
            self.log_tail(80)
        );
        assert!(self.running(), "Flume exited:\n{}", self.log_tail(80));
    }

    /// Stops Flume (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if c.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Flume {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
