//! End-to-end: the Kafka sink through a secured broker (scripts/kafka-dev `start --secure`:
//! certificates made by openssl, a SCRAM-SHA-512 user created at format time). Every line
//! arrives over TLS, mTLS, SASL_SSL with SCRAM and SASL_PLAINTEXT with PLAIN (allowed
//! explicitly), read back over the broker's PLAINTEXT listener by kcat; a wrong password, an
//! untrusted broker certificate and a client certificate the broker does not trust each give a
//! clear error and `/ready` 503 naming the sink; and no password appears in anything the agent
//! printed or served.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, drop_file, free_port, http_get, spool_dirs, wait_until};
use support::kafka::{KafkaBroker, Listener, SECURE_PASSWORD, SECURE_USER};

const LONG: Duration = Duration::from_secs(120);
const LINES: usize = 3_000;

/// `/ready`: whether it is 200, and its body.
fn ready(port: u16) -> Option<(bool, String)> {
    let (status, body) = http_get(port, "/ready")?;
    Some((status.contains(" 200 "), body))
}

/// Writes `secret` to `dir/name` (mode 0600) and returns the `${file:...}` reference to it.
fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    fs::write(&path, format!("{secret}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    format!("${{file:{}}}", path.display())
}

/// An agent whose spooldir source copies every line into one channel per sink; `sinks` are
/// (name, YAML flow mapping of the sink's options without `type` and `channel`).
fn fan_out_config(spool: &Path, data: &Path, http: u16, sinks: &[(&str, String)]) -> String {
    let channels: Vec<String> = sinks.iter().map(|(n, _)| format!("c_{n}")).collect();
    let mut yaml = format!(
        "a1:\n  data_dir: {data}\n  shutdown_timeout: 20s\n  http: 127.0.0.1:{http}\n  sources:\n    \
         r1: {{ type: spooldir, dir: {spool}, channels: [{list}], batch_size: 500 }}\n  channels:\n",
        data = data.display(),
        spool = spool.display(),
        list = channels.join(", "),
    );
    for c in &channels {
        yaml.push_str(&format!("    {c}: {{ type: memory }}\n"));
    }
    yaml.push_str("  sinks:\n");
    for (name, options) in sinks {
        yaml.push_str(&format!(
            "    {name}: {{ type: kafka, channel: c_{name}, batch_size: 500, {options} }}\n"
        ));
    }
    yaml
}

/// Everything the agent printed and served: stderr, stdout, `/metrics`, `/health`, `/ready`.
fn everything_shown(agent: &Agent, http: u16) -> String {
    let mut all = agent.stderr_text();
    all.push_str(&String::from_utf8_lossy(&agent.stdout_bytes()));
    for page in ["/metrics", "/health", "/ready"] {
        if let Some((_, body)) = http_get(http, page) {
            all.push_str(&body);
        }
    }
    all
}

/// The lines of file `name`.
fn lines(name: &str) -> Vec<String> {
    (0..LINES)
        .map(|i| format!("{name} {i:05} secured line"))
        .collect()
}

#[test]
fn every_line_arrives_over_tls_mtls_scram_and_plain_and_no_password_is_shown() {
    let broker = KafkaBroker::start_secure();
    let (tmp, spool, data) = spool_dirs();
    let secrets = tmp.path().join("secrets");
    fs::create_dir(&secrets).unwrap();
    let password = secret_file(&secrets, "password", SECURE_PASSWORD);
    let key_password = fs::read_to_string(broker.tls_file("client.key.password")).unwrap();
    let key_password_ref = secret_file(&secrets, "key-password", &key_password);
    let ca = broker.tls_file("ca.pem");
    let (ca, cert, key) = (
        ca.display(),
        broker.tls_file("client.crt"),
        broker.tls_file("client.key"),
    );
    let sinks = [
        (
            "k_tls",
            format!(
                "brokers: \"{}\", topic: sec-tls, tls: {{ ca: {ca} }}",
                broker.listener(Listener::Ssl)
            ),
        ),
        (
            "k_mtls",
            format!(
                "brokers: \"{}\", topic: sec-mtls, tls: {{ ca: {ca}, cert: {}, key: {}, \
                 key_password: \"{key_password_ref}\" }}",
                broker.listener(Listener::Mtls),
                cert.display(),
                key.display()
            ),
        ),
        (
            "k_scram",
            format!(
                "brokers: \"{}\", topic: sec-scram, tls: {{ ca: {ca} }}, sasl: {{ mechanism: \
                 SCRAM-SHA-512, username: {SECURE_USER}, password: \"{password}\" }}",
                broker.listener(Listener::SaslSsl)
            ),
        ),
        (
            "k_plain",
            format!(
                "brokers: \"{}\", topic: sec-plain, sasl: {{ mechanism: PLAIN, username: \
                 {SECURE_USER}, password: \"{password}\", allow_plaintext: true }}",
                broker.listener(Listener::SaslPlaintext)
            ),
        ),
    ];
    for topic in ["sec-tls", "sec-mtls", "sec-scram", "sec-plain"] {
        broker.create_topic(topic, 2);
    }
    let http = free_port();
    let agent = Agent::start_with_env(
        &tmp.path().join("agent"),
        "a1",
        &fan_out_config(&spool, &data, http, &sinks),
        &[("RUST_LOG", "debug")],
    );
    let mut want: Vec<String> = Vec::new();
    for name in ["a.log", "b.log"] {
        let l = lines(name);
        drop_file(&spool, name, format!("{}\n", l.join("\n")).as_bytes());
        want.extend(l);
    }
    want.sort();
    for topic in ["sec-tls", "sec-mtls", "sec-scram", "sec-plain"] {
        let records = broker.consume_all(topic, want.len(), LONG);
        let mut got: Vec<String> = records.iter().map(|r| r.value_str()).collect();
        got.sort();
        got.dedup();
        assert_eq!(
            got.len(),
            want.len(),
            "{topic}: {} of {} lines arrived\n{}",
            got.len(),
            want.len(),
            agent.stderr_text()
        );
        assert_eq!(
            got, want,
            "{topic}: the lines that arrived are not the lines written"
        );
    }
    wait_until(LONG, "/ready is 200", || {
        ready(http).is_some_and(|(ok, _)| ok)
    });
    let shown = everything_shown(&agent, http);
    for (what, secret) in [
        ("password", SECURE_PASSWORD),
        ("key password", &key_password),
    ] {
        assert!(
            !shown.contains(secret),
            "the {what} appears in the agent's output or pages:\n{shown}"
        );
    }
    // `sluice audit` reads the topics back through the same secured listeners.
    let pw_file = secrets.join("password");
    let kp_file = secrets.join("key-password");
    let audits: [(&str, Vec<String>); 2] = [
        (
            "sec-scram",
            vec![
                "-b".into(),
                broker.listener(Listener::SaslSsl),
                "--tls-ca".into(),
                ca.to_string(),
                "--sasl-mechanism".into(),
                "SCRAM-SHA-512".into(),
                "--sasl-username".into(),
                SECURE_USER.into(),
                "--sasl-password-file".into(),
                pw_file.display().to_string(),
            ],
        ),
        (
            "sec-mtls",
            vec![
                "-b".into(),
                broker.listener(Listener::Mtls),
                "--tls-ca".into(),
                ca.to_string(),
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
                "--tls-key-password-file".into(),
                kp_file.display().to_string(),
            ],
        ),
    ];
    for (topic, flags) in audits {
        let mut args = vec!["audit", "-t", topic];
        args.extend(flags.iter().map(String::as_str));
        let (code, out, err) = support::agent::sluice(&args);
        assert_eq!(code, 0, "audit of {topic}: {out}{err}");
        assert!(
            out.contains(&format!("{} records (", want.len())) && out.ends_with("clean\n"),
            "audit of {topic}: {out}"
        );
        assert!(
            !format!("{out}{err}").contains(SECURE_PASSWORD),
            "{out}{err}"
        );
    }
    // Validate prints the problems and warnings of a config that quotes the password too.
    let conf = tmp.path().join("agent").join("agent.yaml");
    let (code, out, err) = support::agent::sluice(&["validate", "-f", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !format!("{out}{err}").contains(SECURE_PASSWORD),
        "{out}{err}"
    );
}

#[test]
fn a_wrong_password_or_an_untrusted_certificate_is_a_clear_error_and_not_ready() {
    const WRONG: &str = "Wrong-pw-for-sluice-0042";
    let broker = KafkaBroker::start_secure();
    let (tmp, spool, data) = spool_dirs();
    let (ca, rogue_ca) = (broker.tls_file("ca.pem"), broker.tls_file("rogue-ca.pem"));
    let sinks = [
        (
            "k_wrong_password",
            format!(
                "brokers: \"{}\", topic: sec-bad, tls: {{ ca: {} }}, sasl: {{ mechanism: \
                 SCRAM-SHA-512, username: {SECURE_USER}, password: {WRONG} }}",
                broker.listener(Listener::SaslSsl),
                ca.display()
            ),
        ),
        (
            "k_untrusted_broker",
            format!(
                "brokers: \"{}\", topic: sec-bad, tls: {{ ca: {} }}",
                broker.listener(Listener::Ssl),
                rogue_ca.display()
            ),
        ),
        (
            "k_untrusted_client",
            format!(
                "brokers: \"{}\", topic: sec-bad, tls: {{ ca: {}, cert: {}, key: {} }}",
                broker.listener(Listener::Mtls),
                ca.display(),
                broker.tls_file("rogue.crt").display(),
                broker.tls_file("rogue.key").display()
            ),
        ),
    ];
    let http = free_port();
    let agent = Agent::start(
        &tmp.path().join("agent"),
        "a1",
        &fan_out_config(&spool, &data, http, &sinks),
    );
    drop_file(&spool, "a.log", b"one\ntwo\n");
    // Each sink is named in /ready with why it cannot deliver.
    let mut body = String::new();
    wait_until(LONG, "/ready names every sink with its error", || {
        let Some((ok, b)) = ready(http) else {
            return false;
        };
        assert!(!ok, "ready with no sink able to deliver: {b}");
        body = b;
        sinks.iter().all(|(name, _)| {
            body.contains(&format!(
                "sink {name} has not reached its output yet (last error"
            ))
        })
    });
    // The log says what is wrong, in words an operator can act on, once per cause.
    let expect = [
        ("k_wrong_password", "authentication failed"),
        ("k_untrusted_broker", "certificate verify failed"),
        ("k_untrusted_client", "the broker refused"),
    ];
    agent.wait_for(LONG, "an error line per sink", || {
        let log = agent.stderr_text();
        expect.iter().all(|(sink, what)| {
            log.lines()
                .any(|l| l.contains(sink) && l.contains("ERROR") && l.to_lowercase().contains(what))
        })
    });
    let shown = everything_shown(&agent, http);
    assert!(
        !shown.contains(WRONG),
        "the password appears in the agent's output or pages:\n{shown}\n/ready: {body}"
    );
    // Nothing was delivered, and the file is still there to be sent once the cause is fixed.
    assert!(spool.join("a.log").exists(), "the file was completed");
}

/// A Flume agent's file, with the Java client's SASL_SSL settings (a JAAS line with the SCRAM
/// credentials, a PEM truststore), runs as it is and delivers every line.
#[test]
fn a_flume_file_with_the_java_clients_sasl_ssl_settings_delivers_every_line() {
    let broker = KafkaBroker::start_secure();
    broker.create_topic("sec-flume", 2);
    let (tmp, spool, _) = spool_dirs();
    let conf = tmp.path().join("flume.properties");
    fs::write(
        &conf,
        format!(
            "a1.sources = r1\na1.channels = c1\na1.sinks = k1\n\
             a1.sources.r1.type = spooldir\na1.sources.r1.spoolDir = {spool}\n\
             a1.sources.r1.channels = c1\n\
             a1.channels.c1.type = memory\n\
             a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink\na1.sinks.k1.channel = c1\n\
             a1.sinks.k1.kafka.bootstrap.servers = {brokers}\na1.sinks.k1.kafka.topic = sec-flume\n\
             a1.sinks.k1.kafka.producer.acks = all\n\
             a1.sinks.k1.kafka.producer.security.protocol = SASL_SSL\n\
             a1.sinks.k1.kafka.producer.sasl.mechanism = SCRAM-SHA-512\n\
             a1.sinks.k1.kafka.producer.sasl.jaas.config = \
             org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"{SECURE_USER}\" password=\"{SECURE_PASSWORD}\";\n\
             a1.sinks.k1.kafka.producer.ssl.truststore.location = {ca}\n\
             a1.sinks.k1.kafka.producer.ssl.truststore.type = PEM\n",
            spool = spool.display(),
            brokers = broker.listener(Listener::SaslSsl),
            ca = broker.tls_file("ca.pem").display(),
        ),
    )
    .unwrap();
    let agent = Agent::start_file_in(&tmp.path().join("run"), "a1", &conf, &[]);
    let l = lines("f.log");
    drop_file(&spool, "f.log", format!("{}\n", l.join("\n")).as_bytes());
    let records = broker.consume_all("sec-flume", l.len(), LONG);
    // A Flume file's events without a `key` header get no key (as in Flume): they spread over
    // the partitions, so only the set of lines is compared.
    let mut got: Vec<String> = records.iter().map(|r| r.value_str()).collect();
    got.sort();
    assert!(
        got == l,
        "{} records for {} lines, or other lines\n{}",
        got.len(),
        l.len(),
        agent.stderr_text()
    );
    let log = agent.stderr_text();
    assert!(!log.contains(SECURE_PASSWORD), "{log}");
}
