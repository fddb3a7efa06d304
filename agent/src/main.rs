//! `sluice`: runs one named agent from a YAML file, validates configurations.

mod audit;
mod components;
mod config;
mod envsubst;
mod http;
mod logging;
mod overlap;
mod probe;
mod reload;
mod report;
mod run;
mod warnings;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Sluice ships log files into Kafka without losing a line or scrambling their order.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter such as
    /// `info,sluice_sources=debug`); RUST_LOG is used when this is not given.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the named agent of a configuration file until SIGTERM or SIGINT.
    Agent {
        /// The agent's name: a top-level key of the file.
        #[arg(short = 'n', long = "name")]
        name: String,
        /// The YAML configuration file. SIGHUP reads it again and applies what changed.
        #[arg(short = 'f', long = "conf-file")]
        file: PathBuf,
        /// Also reload whenever the file's content changes (a Kubernetes ConfigMap update
        /// included).
        #[arg(long)]
        watch_config: bool,
    },
    /// Check a configuration file and exit non-zero with every problem found.
    Validate {
        /// The YAML configuration file.
        #[arg(short = 'f', long = "conf-file")]
        file: PathBuf,
        /// Check only this agent (default: every agent in the file).
        #[arg(short = 'n', long = "name")]
        name: Option<String>,
    },
    /// Read a topic from beginning to end and report, per source file, lines lost,
    /// duplicated or out of order. Exit 0 clean, 1 problems found, 2 cannot audit.
    Audit(audit::AuditArgs),
    /// GET the agent's /health (or /ready) and exit 0 on a 200 answer, 1 otherwise, with one
    /// line saying why: a health check for images without a shell or curl.
    Health {
        /// The agent's `http` address, host:port (a wildcard such as 0.0.0.0 is probed on
        /// loopback).
        #[arg(long, env = "SLUICE_HTTP", default_value = "127.0.0.1:9100")]
        addr: String,
        /// A full http:// URL to GET; overrides --addr.
        #[arg(long, conflicts_with = "ready")]
        url: Option<String>,
        /// Probe /ready (every component started, every sink reached its broker) instead
        /// of /health.
        #[arg(long)]
        ready: bool,
        /// Give up after this long, for the whole exchange (e.g. 500ms, 5s).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log_level.as_deref(), cli.log_format) {
        eprintln!("sluice: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Agent {
            name,
            file,
            watch_config,
        } => {
            // Until the agent handles SIGHUP (a reload), one must not end it: that is what
            // SIGHUP does to a process that does not handle it.
            // SAFETY: setting a signal's disposition to "ignore" touches no memory.
            unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
            let loaded = std::fs::read(&file).ok();
            let cfg = match config::load(&file, &name) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sluice: invalid configuration {}:\n{e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let origin = run::ConfigFile {
                path: file,
                watch: watch_config,
                loaded,
            };
            match run::run(cfg, origin) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "agent failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { file, name } => validate(&file, name.as_deref()),
        Command::Audit(args) => audit::run(&args),
        Command::Health {
            addr,
            url,
            ready,
            timeout,
        } => health(&addr, url.as_deref(), ready, timeout),
    }
}

/// `sluice health`: exit 0 on a 200 answer, 1 on anything else (never 2, which Docker
/// reserves in a HEALTHCHECK), one line either way.
fn health(addr: &str, url: Option<&str>, ready: bool, timeout: Duration) -> ExitCode {
    let target = match url {
        Some(u) => match probe::Target::from_url(u) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sluice health: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => probe::Target::from_addr(addr, if ready { "/ready" } else { "/health" }),
    };
    match probe::probe(&target, timeout) {
        Ok(a) if a.status == 200 => {
            println!("{target}: {} {}: {}", a.status, a.reason, a.first_line);
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!(
                "sluice health: {target}: {} {}: {}",
                a.status, a.reason, a.first_line
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sluice health: {target}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(file: &std::path::Path, name: Option<&str>) -> ExitCode {
    let names = match name {
        Some(n) => vec![n.to_owned()],
        None => match config::agent_names(file) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
    };
    let mut ok = true;
    for n in &names {
        match config::load(file, n) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: agent {n} is valid ({} sources, {} channels, {} sinks{})",
                    file.display(),
                    cfg.sources.len(),
                    cfg.channels.len(),
                    cfg.sinks.len(),
                    match cfg.warnings.len() {
                        0 => String::new(),
                        1 => ", 1 warning".to_owned(),
                        n => format!(", {n} warnings"),
                    }
                );
            }
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
