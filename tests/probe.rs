//! `sluice health`, the probe a container HEALTHCHECK or a Kubernetes exec probe runs: exit 0
//! on a 200 answer from a running agent, 1 with one line saying why otherwise (nothing
//! listening, a listener that never answers, a 503).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::agent::{Agent, free_port, http_get, sluice_bin, spool_dirs, wait_until};

/// A deadline for a hang of `sluice health` itself, far above every timeout given to it.
const HANG: Duration = Duration::from_secs(30);

/// Runs `sluice health ARGS` (with `env`), killing it after [`HANG`]; returns the exit code,
/// stdout, stderr and how long it took.
fn health(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(sluice_bin())
        .arg("health")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("SLUICE_HTTP")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice health");
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > HANG {
            let _ = child.kill();
            panic!("sluice health {args:?} did not exit within {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
        start.elapsed(),
    )
}

#[test]
fn a_running_agent_is_healthy() {
    let (tmp, spool, data) = spool_dirs();
    let port = free_port();
    let config = format!(
        "a1:\n  data_dir: {}\n  http: 127.0.0.1:{port}\n  sources:\n    r1: {{ type: spooldir, dir: {}, channel: c1 }}\n  channels:\n    c1: {{ type: memory }}\n  sinks:\n    k1: {{ type: console, channel: c1 }}\n",
        data.display(),
        spool.display()
    );
    let mut agent = Agent::start(&tmp.path().join("run"), "a1", &config);
    wait_until(Duration::from_secs(30), "the agent serves /health", || {
        http_get(port, "/health").is_some()
    });
    let addr = format!("127.0.0.1:{port}");
    let url = format!("http://127.0.0.1:{port}/health");
    for (args, env) in [
        (vec!["--addr", addr.as_str()], vec![]),
        (vec!["--url", url.as_str()], vec![]),
        // The variable the example configurations read their `http` setting from; a wildcard
        // listen address is probed on loopback.
        (vec![], vec![("SLUICE_HTTP", addr.as_str())]),
        (vec!["--addr", &format!("0.0.0.0:{port}")], vec![]),
    ] {
        let (code, out, err, _) = health(&args, &env);
        assert_eq!(code, 0, "{args:?} {env:?}: {out}{err}");
        assert_eq!(
            out.trim(),
            format!("http://127.0.0.1:{port}/health: 200 OK: ok"),
            "one line naming the URL, the status and the agent's state"
        );
    }
    agent.signal(libc::SIGTERM);
    assert!(
        agent.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        agent.stderr_text()
    );
    // The agent is gone: the same probe now fails.
    let (code, _, err, _) = health(&["--addr", &addr], &[]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn nothing_listening_fails_with_a_clear_message() {
    let port = free_port();
    let (code, out, err, _) = health(&["--addr", &format!("127.0.0.1:{port}")], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err.trim(),
        format!(
            "sluice health: http://127.0.0.1:{port}/health: cannot connect to 127.0.0.1:{port}: Connection refused (os error 111)"
        )
    );
}

#[test]
fn a_listener_that_never_answers_fails_within_the_timeout() {
    // Bound and listening, never accepted: the connection completes in the backlog and the
    // request is sent, but no answer ever comes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (code, out, err, took) = health(
        &["--addr", &format!("127.0.0.1:{port}"), "--timeout", "500ms"],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err.trim(),
        format!("sluice health: http://127.0.0.1:{port}/health: no answer within 500ms")
    );
    // It waited for the timeout, and gave up by itself, not at the harness's hang deadline.
    assert!(took >= Duration::from_millis(500), "took {took:?}");
    assert!(took < HANG / 2, "took {took:?}");
    drop(silent);
}

/// Serves one connection on a new loopback listener with `answer`; the request's first line
/// is sent back on the returned channel.
fn answer_once(answer: &'static str) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&req).into_owned();
        let _ = tx.send(text.lines().next().unwrap_or("").to_owned());
        s.write_all(answer.as_bytes()).unwrap();
    });
    (port, rx)
}

#[test]
fn ready_probes_ready_and_a_503_fails_with_its_reason() {
    let (port, request) = answer_once(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 46\r\nConnection: close\r\n\r\n{\"ready\":false,\"reason\":\"sink k1: no broker\"}\n",
    );
    let (code, out, err, _) = health(&["--addr", &format!("127.0.0.1:{port}"), "--ready"], &[]);
    assert_eq!(
        request.recv_timeout(HANG).unwrap(),
        "GET /ready HTTP/1.1",
        "--ready asks for /ready"
    );
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err.trim(),
        format!(
            "sluice health: http://127.0.0.1:{port}/ready: 503 Service Unavailable: {{\"ready\":false,\"reason\":\"sink k1: no broker\"}}"
        )
    );
    // Something that is not HTTP is not healthy either.
    let (port, _request) = answer_once("SSH-2.0-OpenSSH_9.2\r\n");
    let (code, _, err, _) = health(&["--addr", &format!("127.0.0.1:{port}")], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not an HTTP answer"), "{err}");
    // Only plain HTTP can be probed.
    let (code, _, err, _) = health(&["--url", "https://127.0.0.1:1/health"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only http:// URLs"), "{err}");
}
