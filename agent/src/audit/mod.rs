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

/// The command line of `sluice audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(short = 'b', long, env = "KAFKA_BROKERS")]
    brokers: String,
    /// The topic to audit.
    #[arg(short = 't', long)]
    topic: String,
    /// A librdkafka consumer setting (SASL, SSL, ...), as key=value; repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    property: Vec<(String, String)>,
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
            match e {
                AuditError::Consume(_) => {
                    eprintln!(
                        "sluice audit: topic {} at {}: {e}",
                        args.topic, args.brokers
                    );
                }
                _ => eprintln!("sluice audit: {e}"),
            }
            ExitCode::from(2)
        }
    }
}

/// Returns whether the topic is clean.
fn audit(args: &AuditArgs) -> Result<bool, AuditError> {
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
