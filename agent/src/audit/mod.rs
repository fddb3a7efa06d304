//! `sluice audit`: reads a topic from its beginning to its end and checks, per source file,
//! that every line arrived once or more, in file order, without gaps (and, with `--expect
//! DIR`, that the bodies are the original lines).
//!
//! Exit codes: 0 clean (duplicates allowed), 1 problems found, 2 usage or connection errors.

mod check;
mod consume;
mod expect;
mod report;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use check::{Checker, Settings};
use consume::{ConsumeError, ConsumeOptions, HeaderNames};
use expect::{ExpectError, ExpectedSet};
use report::Report;
use sluice_channels::Secret;
use sluice_sinks::kafka::{SaslConfig, SaslMechanism, Security, TlsConfig};

/// The command line of `sluice audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(short = 'b', long, env = "KAFKA_BROKERS")]
    brokers: String,
    /// The topic to audit.
    #[arg(short = 't', long)]
    topic: String,
    /// A librdkafka consumer setting, as key=value; repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    property: Vec<(String, String)>,
    #[command(flatten)]
    security: SecurityArgs,
    /// A directory with the original files: every line of each must have arrived, identical,
    /// in order. Files match records by base name, ignoring a `.COMPLETED` suffix.
    #[arg(long, value_name = "DIR")]
    expect: Option<PathBuf>,
    /// Accept files whose first line received starts past offset 0 (sources that start
    /// reading at a file's end).
    #[arg(long)]
    allow_late_start: bool,
    /// Which records to read: `read_committed` (the default) leaves out those of aborted and
    /// still open transactions, as a consumer of a topic written with `delivery:
    /// exactly_once` does (on a topic without transactions both read the same);
    /// `read_uncommitted` reads every record written.
    #[arg(long, value_enum, default_value_t = Isolation::ReadCommitted)]
    isolation: Isolation,
    /// Treat duplicates (normal after a restart: at-least-once) as problems.
    #[arg(long)]
    no_duplicates: bool,
    /// Accept records without the path and offset headers.
    #[arg(long)]
    allow_foreign: bool,
    /// The header holding the source file's path.
    #[arg(long, default_value = "path")]
    path_header: String,
    /// The header holding the line's byte offset in the file.
    #[arg(long, default_value = "offset")]
    offset_header: String,
    /// The header holding the file's identity.
    #[arg(long, default_value = "fid")]
    fid_header: String,
    /// The header holding where a record ends in its file when its body does not say it
    /// (lines joined, a container format parsed, a body rewritten).
    #[arg(long, default_value = sluice_channels::END_HEADER)]
    end_header: String,
    /// The header holding where lines an interceptor dropped on purpose, right before the
    /// record, begin: their bytes count as delivered.
    #[arg(long, default_value = sluice_channels::DROPPED_FROM_HEADER)]
    dropped_from_header: String,
    /// How long to wait for the brokers, and for progress while reading.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// TLS and SASL, as the Kafka sink's `tls:` and `sasl:` options take them; secrets are read
/// from files (or the environment), never from the command line, where `ps` shows them.
#[derive(Debug, clap::Args)]
struct SecurityArgs {
    /// Connect over TLS (implied by any other --tls-* option).
    #[arg(long)]
    tls: bool,
    /// The CA certificate(s) of the brokers, PEM file or folder (sink option `tls.ca`).
    #[arg(long, value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    /// The client certificate, PEM (`tls.cert`).
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's key, PEM (`tls.key`).
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// A file holding the passphrase of --tls-key (`tls.key_password`).
    #[arg(long, value_name = "PATH", env = "SLUICE_TLS_KEY_PASSWORD_FILE")]
    tls_key_password_file: Option<PathBuf>,
    /// Do not check that the broker's certificate names the host (`tls.verify_hostname:
    /// false`).
    #[arg(long)]
    tls_no_verify_hostname: bool,
    /// SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (`sasl.mechanism`).
    #[arg(long, value_name = "MECHANISM", value_parser = parse_mechanism)]
    sasl_mechanism: Option<SaslMechanism>,
    /// The SASL user (`sasl.username`).
    #[arg(long, value_name = "USER", requires = "sasl_mechanism")]
    sasl_username: Option<String>,
    /// A file holding the SASL password (`sasl.password`).
    #[arg(long, value_name = "PATH", env = "SLUICE_SASL_PASSWORD_FILE")]
    sasl_password_file: Option<PathBuf>,
    /// Let PLAIN send the password to a listener without TLS (`sasl.allow_plaintext`).
    #[arg(long)]
    sasl_allow_plaintext: bool,
}

fn parse_mechanism(s: &str) -> Result<SaslMechanism, String> {
    serde_yaml::from_str(s).map_err(|_| "expected SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN".into())
}

/// The first line of the secret file `path`, for the option `flag`; the file is registered
/// for masking.
fn read_secret(flag: &str, path: &std::path::Path) -> Result<Secret, String> {
    let cannot = |e: std::io::Error| format!("{flag} {}: cannot read: {e}", path.display());
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            sluice_channels::fsutil::open_regular_file(path).map_err(cannot)?,
            64 * 1024,
        ),
        &mut text,
    )
    .map_err(cannot)?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    crate::secrets::register(value);
    Ok(Secret::new(value))
}

impl SecurityArgs {
    /// The `tls:` and `sasl:` options these flags stand for.
    fn options(&self) -> Result<(Option<TlsConfig>, Option<SaslConfig>), String> {
        let key_password = self
            .tls_key_password_file
            .as_deref()
            .map(|p| read_secret("--tls-key-password-file", p))
            .transpose()?;
        let tls = (self.tls
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || key_password.is_some()
            || self.tls_no_verify_hostname)
            .then(|| TlsConfig {
                ca: self.tls_ca.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                key_password,
                verify_hostname: !self.tls_no_verify_hostname,
                contents: 0,
            });
        let sasl = match (
            self.sasl_mechanism,
            &self.sasl_username,
            &self.sasl_password_file,
        ) {
            (None, None, None) => None,
            (Some(mechanism), Some(username), Some(file)) => Some(SaslConfig {
                mechanism,
                username: username.clone(),
                password: read_secret("--sasl-password-file", file)?,
                allow_plaintext: self.sasl_allow_plaintext,
            }),
            _ => {
                return Err(
                    "--sasl-mechanism, --sasl-username and --sasl-password-file go \
                 together"
                        .to_owned(),
                );
            }
        };
        Ok((tls, sasl))
    }
}

/// The command-line flag of a `tls.*` or `sasl.*` option named in a problem.
fn flag_of(key: &str) -> String {
    match key {
        "tls.key_password" => "--tls-key-password-file".to_owned(),
        "sasl.password" => "--sasl-password-file".to_owned(),
        k if k.starts_with("tls.") || k.starts_with("sasl.") => {
            format!("--{}", k.replace(['.', '_'], "-"))
        }
        k if k.starts_with("-X.") => format!("-X {}", &k[3..]),
        k => k.to_owned(),
    }
}

/// Which records of transactions an audit reads (librdkafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
enum Isolation {
    /// Only records of committed transactions, and records written outside transactions.
    ReadCommitted,
    /// Every record, also those of aborted and open transactions.
    ReadUncommitted,
}

impl Isolation {
    fn level(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// Why an audit could not be completed (exit code 2).
#[derive(Debug, thiserror::Error)]
enum AuditError {
    /// The TLS or SASL options are wrong.
    #[error("{0}")]
    Security(String),
    /// Reading the topic failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// Reading the original files failed.
    #[error("--expect: {0}")]
    Expect(#[from] ExpectError),
    /// Printing the report failed.
    #[error("cannot write the report: {0}")]
    Output(#[from] io::Error),
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Runs the audit and prints its report on stdout. Exit code 0 when the topic is clean, 1
/// when anything was lost, reordered, split across partitions or changed (or duplicated, with
/// `--no-duplicates`), 2 when the audit could not be done.
pub fn run(args: &AuditArgs) -> ExitCode {
    match audit(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let text = crate::secrets::mask(&e.to_string()).into_owned();
            if matches!(e, AuditError::Consume(_)) {
                eprintln!(
                    "sluice audit: topic {} at {}: {text}",
                    args.topic, args.brokers
                );
            } else {
                eprintln!("sluice audit: {text}");
            }
            ExitCode::from(2)
        }
    }
}

/// Returns whether the topic is clean.
fn audit(args: &AuditArgs) -> Result<bool, AuditError> {
    for (k, v) in &args.property {
        if crate::secrets::is_secret_key(k) {
            crate::secrets::register(v);
        }
    }
    let (tls, sasl) = args.security.options().map_err(AuditError::Security)?;
    let security = Security {
        tls: tls.as_ref(),
        sasl: sasl.as_ref(),
    };
    let passthrough = args.property.iter().map(|(k, v)| (k.as_str(), v.clone()));
    let problems: Vec<String> = security
        .validate(passthrough, "-X")
        .into_iter()
        .map(|p| format!("{}: {}", flag_of(&p.key), p.message))
        .collect();
    if !problems.is_empty() {
        return Err(AuditError::Security(problems.join("; ")));
    }
    let expected = args.expect.as_deref().map(ExpectedSet::load).transpose()?;
    let settings = Settings {
        allow_late_start: args.allow_late_start,
        no_duplicates: args.no_duplicates,
        allow_foreign: args.allow_foreign,
    };
    let mut checker = Checker::new(settings, expected);
    let headers = HeaderNames {
        path: args.path_header.clone(),
        offset: args.offset_header.clone(),
        fid: args.fid_header.clone(),
        end: args.end_header.clone(),
        dropped_from: args.dropped_from_header.clone(),
    };
    let opts = ConsumeOptions {
        brokers: &args.brokers,
        topic: &args.topic,
        properties: &args.property,
        security,
        timeout: args.timeout,
        isolation: args.isolation.level(),
        headers: &headers,
    };
    let partitions = consume::read_topic(&opts, |r| checker.observe(r))?;
    let outcome = checker.finish();
    let report = Report {
        topic: &args.topic,
        partitions: &partitions,
        outcome: &outcome,
    };
    let mut out = io::stdout().lock();
    if args.json {
        report.write_json(&mut out)?;
    } else {
        report.write_text(&mut out)?;
    }
    out.flush()?;
    Ok(outcome.clean)
}
