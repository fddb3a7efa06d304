//! A real Apache Kafka broker (4.3.1, KRaft, one combined node on loopback) for end-to-end tests,
//! provisioned by `scripts/kafka-dev`, and an independent reader of topics (kcat).
//!
//! `KafkaBroker::start()` starts a private broker in a temporary folder on free loopback ports
//! and stops it on drop. With `SLUICE_TEST_KAFKA=host:port` set, it uses that broker instead;
//! such a broker cannot be stopped or restarted, so outage tests must skip themselves when
//! `!broker.owned()` (see `skip_unless_owned`).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::agent::free_port;

/// One Kafka record as read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    /// `None` for a record without a key.
    pub key: Option<Vec<u8>>,
    /// In record order; a header without a value has an empty value.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Empty for a record with a null value (a tombstone).
    pub value: Vec<u8>,
}

impl Record {
    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value as text (lossy), for messages and assertions.
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// A Kafka broker for one test: private (owned) or external (`SLUICE_TEST_KAFKA`).
pub struct KafkaBroker {
    bootstrap: String,
    owned: Option<Owned>,
}

struct Owned {
    port: u16,
    controller_port: u16,
    dir: tempfile::TempDir,
    /// The secured listeners' ports, for a broker started with [`KafkaBroker::start_secure`].
    secure: Option<[(Listener, u16); 4]>,
}

/// A secured listener of a broker started with [`KafkaBroker::start_secure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// TLS, server certificate only.
    Ssl,
    /// TLS with a client certificate required (mTLS).
    Mtls,
    /// SASL (SCRAM-SHA-512) inside TLS.
    SaslSsl,
    /// SASL (PLAIN or SCRAM-SHA-512) without TLS.
    SaslPlaintext,
}

impl Listener {
    fn flag(self) -> &'static str {
        match self {
            Listener::Ssl => "--ssl-port",
            Listener::Mtls => "--mtls-port",
            Listener::SaslSsl => "--sasl-ssl-port",
            Listener::SaslPlaintext => "--sasl-plaintext-port",
        }
    }
}

/// The SCRAM-SHA-512 (and PLAIN) user of a secured broker, and its password: distinctive, so
/// that a test can look for it in everything the agent printed.
pub const SECURE_USER: &str = "sluice";
/// See [`SECURE_USER`].
pub const SECURE_PASSWORD: &str = "Sluice-Scram-pw-7f3a9c51";

/// The repository root (the root package's folder).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kafka_dev() -> PathBuf {
    repo_root().join("scripts/kafka-dev")
}

fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `scripts/kafka-dev ARGS`, capturing its output (the broker itself writes to files, so
/// the pipes close when the script exits).
fn run_kafka_dev(args: &[&str]) -> Output {
    Command::new(kafka_dev())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kafka_dev().display()))
}

impl KafkaBroker {
    /// Starts a private broker, or uses the one named by `SLUICE_TEST_KAFKA=host:port`.
    /// Panics with the broker's log when it does not come up.
    pub fn start() -> KafkaBroker {
        Self::start_with(false)
    }

    /// Starts a private broker that also has the secured listeners of `kafka-dev start
    /// --secure` (SSL, mTLS, SASL_SSL with SCRAM-SHA-512, SASL_PLAINTEXT), certificates made
    /// by the script in `dir()/tls`, and the user [`SECURE_USER`]. Always private: an external
    /// broker (`SLUICE_TEST_KAFKA`) is not used.
    pub fn start_secure() -> KafkaBroker {
        Self::start_with(true)
    }

    fn start_with(secure: bool) -> KafkaBroker {
        if let Some(addr) = std::env::var("SLUICE_TEST_KAFKA").ok().filter(|_| !secure) {
            let addr = addr.trim().to_owned();
            if !addr.is_empty() {
                eprintln!("kafka harness: using the external broker {addr} (SLUICE_TEST_KAFKA)");
                return KafkaBroker {
                    bootstrap: addr,
                    owned: None,
                };
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("sluice-kafka-")
            .tempdir()
            .expect("create a temporary folder for the broker");
        let (port, controller_port) = (free_port(), free_port());
        let broker = KafkaBroker {
            bootstrap: format!("127.0.0.1:{port}"),
            owned: Some(Owned {
                port,
                controller_port,
                dir,
                secure: secure.then(|| {
                    [
                        Listener::Ssl,
                        Listener::Mtls,
                        Listener::SaslSsl,
                        Listener::SaslPlaintext,
                    ]
                    .map(|l| (l, free_port()))
                }),
            }),
        };
        broker.launch();
        broker
    }

    fn owned_parts(&self, what: &str) -> &Owned {
        self.owned.as_ref().unwrap_or_else(|| {
            panic!(
                "KafkaBroker::{what}: the broker {} is external (SLUICE_TEST_KAFKA); a test that \
                 stops or restarts the broker must skip itself when !broker.owned()",
                self.bootstrap
            )
        })
    }

    fn launch(&self) {
        let o = self.owned_parts("restart");
        let dir = o.dir.path().to_str().expect("UTF-8 temp path").to_owned();
        let (port, cport, owner) = (
            o.port.to_string(),
            o.controller_port.to_string(),
            std::process::id().to_string(),
        );
        let t = Instant::now();
        let mut args: Vec<String> = [
            "start",
            "--dir",
            &dir,
            "--port",
            &port,
            "--controller-port",
            &cport,
            "--owner-pid",
            &owner,
        ]
        .map(str::to_owned)
        .into();
        for (l, p) in o.secure.iter().flatten() {
            args.extend([l.flag().to_owned(), p.to_string()]);
        }
        if o.secure.is_some() {
            args.extend([
                "--secure".to_owned(),
                format!("{SECURE_USER}:{SECURE_PASSWORD}"),
            ]);
        }
        let out = run_kafka_dev(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "scripts/kafka-dev start failed: {}\n--- broker.log ---\n{}",
            show(&out),
            self.log()
        );
        eprintln!(
            "kafka harness: broker up on {} in {:.1?}",
            self.bootstrap,
            t.elapsed()
        );
    }

    /// False when the broker is external (`SLUICE_TEST_KAFKA`): it cannot be stopped.
    pub fn owned(&self) -> bool {
        self.owned.is_some()
    }

    /// For tests that stop or restart the broker: returns true (after saying why) when the test
    /// must be skipped because the broker is external.
    pub fn skip_unless_owned(&self, test: &str) -> bool {
        if self.owned() {
            return false;
        }
        eprintln!(
            "SKIPPED {test}: it stops or restarts the broker, and the broker {} is external \
             (SLUICE_TEST_KAFKA is set)",
            self.bootstrap
        );
        true
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// `host:port` of the secured listener `l`. Panics unless the broker was started with
    /// [`KafkaBroker::start_secure`].
    pub fn listener(&self, l: Listener) -> String {
        let o = self.owned_parts("listener");
        let (_, port) = o
            .secure
            .iter()
            .flatten()
            .find(|(x, _)| *x == l)
            .expect("a broker started with KafkaBroker::start_secure");
        format!("127.0.0.1:{port}")
    }

    /// A file `kafka-dev start --secure` made in the broker's `tls` folder (`ca.pem`,
    /// `client.crt`, `client.key`, `client.key.password`, `rogue-ca.pem`, ...).
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.owned_parts("tls_file")
            .dir
            .path()
            .join("tls")
            .join(name)
    }

    /// The broker's folder (config, data, broker.log); `None` for an external broker.
    pub fn dir(&self) -> Option<&Path> {
        self.owned.as_ref().map(|o| o.dir.path())
    }

    /// The broker's log (warnings and errors only); empty for an external broker.
    pub fn log(&self) -> String {
        self.dir()
            .and_then(|d| std::fs::read(d.join("broker.log")).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Creates `name` with `partitions` partitions and replication factor 1 (no error if it
    /// exists), and returns once every partition has a leader.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        assert!(partitions > 0, "partitions must be positive");
        let out = run_kafka_dev(&[
            "topic",
            name,
            &partitions.to_string(),
            "--bootstrap",
            &self.bootstrap,
        ]);
        assert!(
            out.status.success(),
            "creating topic {name} failed: {}",
            show(&out)
        );
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 30 s). Its data stays for `restart`.
    /// Panics for an external broker.
    pub fn stop(&self) {
        let o = self.owned_parts("stop");
        let out = run_kafka_dev(&["stop", "--dir", o.dir.path().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "scripts/kafka-dev stop failed: {}",
            show(&out)
        );
    }

    /// Starts the broker again on the same folder and ports (stopping it first if it runs);
    /// topics and records survive. Panics for an external broker.
    pub fn restart(&self) {
        self.stop();
        self.launch();
    }

    /// Reads `topic` from the beginning with kcat, again and again, until it holds at least
    /// `expected_at_least` records or `deadline` passes; returns the records of the most
    /// complete read, ordered by partition and offset.
    pub fn consume_all(
        &self,
        topic: &str,
        expected_at_least: usize,
        deadline: Duration,
    ) -> Vec<Record> {
        let end = Instant::now() + deadline;
        let mut best: Vec<Record> = Vec::new();
        let mut last_error = String::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            // Each read gets at most the time left (and at least a few seconds, so that the
            // last one can finish reading a large topic).
            match read_topic(&self.bootstrap, topic, left.max(Duration::from_secs(5))) {
                Ok(records) => {
                    if records.len() >= best.len() {
                        best = records;
                    }
                }
                Err(e) => last_error = e,
            }
            if best.len() >= expected_at_least || Instant::now() >= end {
                break;
            }
            // Poll again shortly; records may still be on their way.
            let pause =
                Duration::from_millis(200).min(end.saturating_duration_since(Instant::now()));
            std::thread::sleep(pause);
        }
        if best.len() < expected_at_least && !last_error.is_empty() {
            eprintln!(
                "kafka harness: {topic}: {} of {expected_at_least} records after {deadline:?}; \
                 last kcat error: {last_error}",
                best.len()
            );
        }
        best
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let Some(o) = &self.owned else { return };
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "kafka harness: broker {} ({}), last lines of broker.log:\n{}",
                self.bootstrap,
                o.dir.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let out = run_kafka_dev(&["stop", "--dir", o.dir.path().to_str().unwrap()]);
        if !out.status.success() {
            eprintln!("kafka harness: stopping the broker failed: {}", show(&out));
        }
    }
}

/// One pass of `kcat -C ... -o beginning -e -J` over every partition of `topic`, killed after
/// `timeout`. Complete records of a killed pass are kept.
fn read_topic(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<Record>, String> {
    let mut child = Command::new("kcat")
        .args([
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-J",
        ])
        .args(["-m", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run kcat: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = tx.send(());
        out
    });
    let err_reader = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err);
        err
    });
    let timed_out = rx.recv_timeout(timeout).is_err();
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("waiting for kcat: {e}"))?;
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let mut records = parse_kcat_json(&out);
    records.sort_by_key(|r| (r.partition, r.offset));
    if timed_out {
        // A partial read is still a valid prefix of each partition.
        return Ok(records);
    }
    if !status.success() {
        return Err(format!(
            "kcat {status}: {}",
            String::from_utf8_lossy(&err).trim()
        ));
    }
    Ok(records)
}

/// Parses kcat's `-J` envelopes, one JSON object per record:
/// `{"topic":..,"partition":..,"offset":..,..,"headers":["name","value",..],"key":..,"payload":..}`.
/// kcat escapes `"`, `\` and control bytes but writes every other byte of keys, values and
/// headers raw (invalid UTF-8 included), so this parser works on bytes, not on `str`.
/// A truncated or malformed trailing object is dropped.
pub fn parse_kcat_json(out: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    let mut p = JsonParser { s: out, i: 0 };
    loop {
        p.skip_ws();
        if p.i >= p.s.len() {
            break;
        }
        let Some(v) = p.value() else { break };
        if let Some(r) = record_from_json(&v) {
            records.push(r);
        }
    }
    records
}

fn record_from_json(v: &Json) -> Option<Record> {
    let Json::Obj(fields) = v else { return None };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v)
    };
    let partition = get("partition")?.as_i64()? as i32;
    let offset = get("offset")?.as_i64()?;
    let key = match get("key") {
        None | Some(Json::Null) => None,
        Some(Json::Str(b)) => Some(b.clone()),
        Some(_) => return None,
    };
    let value = match get("payload") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Str(b)) => b.clone(),
        Some(_) => return None,
    };
    let mut headers = Vec::new();
    if let Some(Json::Arr(items)) = get("headers") {
        for pair in items.chunks(2) {
            let name = match &pair[0] {
                Json::Str(b) => String::from_utf8_lossy(b).into_owned(),
                _ => return None,
            };
            let value = match pair.get(1) {
                Some(Json::Str(b)) => b.clone(),
                _ => Vec::new(),
            };
            headers.push((name, value));
        }
    }
    Some(Record {
        partition,
        offset,
        key,
        headers,
        value,
    })
}

#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    Num(Vec<u8>),
    Str(Vec<u8>),
    Arr(Vec<Json>),
    Obj(Vec<(Vec<u8>, Json)>),
}

impl Json {
    fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Num(n) => std::str::from_utf8(n).ok()?.parse().ok(),
            _ => None,
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> Option<()> {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            Some(())
        } else {
            None
        }
    }

    fn value(&mut self) -> Option<Json> {
        self.skip_ws();
        match *self.s.get(self.i)? {
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                self.skip_ws();
                if self.eat(b"}").is_some() {
                    return Some(Json::Obj(fields));
                }
                loop {
                    self.skip_ws();
                    let Json::Str(k) = self.value()? else {
                        return None;
                    };
                    self.skip_ws();
                    self.eat(b":")?;
                    let v = self.value()?;
                    fields.push((k, v));
                    self.skip_ws();
                    if self.eat(b",").is_none() {
                        self.eat(b"}")?;
                        return Some(Json::Obj(fields));
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.eat(b"]").is_some() {
                    return Some(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.skip_ws();
                    if self.eat(b",").is_none() {
                        self.eat(b"]")?;
                        return Some(Json::Arr(items));
                    }
                }
            }
            b'"' => {
                self.i += 1;
                self.string().map(Json::Str)
            }
            b'n' => self.eat(b"null").map(|_| Json::Null),
            b't' => self.eat(b"true").map(|_| Json::Bool(true)),
            b'f' => self.eat(b"false").map(|_| Json::Bool(false)),
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                Some(Json::Num(self.s[start..self.i].to_vec()))
            }
            _ => None,
        }
    }

    /// The rest of a string after its opening quote, as raw bytes.
    fn string(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return Some(out),
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                _ => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        self.i += 4;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    // The tail bytes are unsigned (Java masks them with 0xff), as here.
    if rest.len() == 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition that Kafka's Java producer (`BuiltInPartitioner.partitionForKey`) and
/// librdkafka's `murmur2_random` partitioner choose for a non-null `key`:
/// `toPositive(murmur2(key)) % partitions`.
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "partitions must be positive");
    (murmur2(key) & 0x7fff_ffff) % partitions
}
