//! `sluice`: runs one named agent from a YAML file, validates configurations.

mod audit;
mod components;
mod config;
mod convert;
mod envsubst;
mod http;
mod logging;
mod overlap;
mod probe;
mod reload;
mod report;
mod run;
mod secrets;
mod warnings;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[cfg(test)]
#[global_allocator]
static ALLOC: sluice_channels::fuzzing::CountingAlloc = sluice_channels::fuzzing::CountingAlloc;

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
        /// The configuration file: Sluice's YAML, or a Flume agent's `.properties` file.
        /// SIGHUP reads it again and applies what changed.
        #[arg(short = 'f', long = "conf-file")]
        file: PathBuf,
        /// Also reload whenever the file's content changes (a Kubernetes ConfigMap update
        /// included). On by default for a Flume file, as in Flume.
        #[arg(long)]
        watch_config: bool,
        /// Flume's: do not reload a Flume file when it changes (SIGHUP still does).
        #[arg(long)]
        no_reload_conf: bool,
        #[command(flatten)]
        file_opts: FileOpts,
    },
    /// Check a configuration file and exit non-zero with every problem found.
    Validate {
        /// The configuration file: Sluice's YAML, or a Flume agent's `.properties` file.
        #[arg(short = 'f', long = "conf-file")]
        file: PathBuf,
        /// Check only this agent (default: every agent in the file).
        #[arg(short = 'n', long = "name")]
        name: Option<String>,
        #[command(flatten)]
        file_opts: FileOpts,
    },
    /// Print the Sluice YAML equivalent of a Flume agent's `.properties` file, commented with
    /// the Flume keys each option came from and with what differs.
    Convert {
        /// The Flume properties file.
        #[arg(short = 'f', long = "conf-file")]
        file: PathBuf,
        /// The agent to convert (default: every agent in the file).
        #[arg(short = 'n', long = "name")]
        name: Option<String>,
        #[command(flatten)]
        file_opts: FileOpts,
    },
    /// Read a topic from beginning to end and report, per source file, lines lost,
    /// duplicated or out of order. Exit 0 clean, 1 problems found, 2 cannot audit.
    Audit(Box<audit::AuditArgs>),
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

/// How the configuration file is read, with the options of Flume's command line that Sluice
/// honours.
#[derive(Debug, clap::Args)]
struct FileOpts {
    /// The file's format (default: Flume for `.properties` and `.conf` files, else YAML).
    #[arg(long, value_enum)]
    format: Option<config::Format>,
    /// Flume's configuration folder: accepted, and not read (Sluice has no flume-env.sh or
    /// log4j2.xml; logging is set with --log-level or -Dflume.root.logger).
    #[arg(short = 'c', long = "conf", value_name = "DIR")]
    conf_dir: Option<PathBuf>,
    /// A Java system property as Flume's command line passes it
    /// (`-Dflume.root.logger=INFO,console`): see docs/flume.md for those Sluice honours.
    #[arg(short = 'D', value_name = "NAME=VALUE")]
    defines: Vec<String>,
    /// Where the agent keeps its state (checkpoints, file channels written relative to it),
    /// whatever the file says (default: its `data_dir`, else ./data/NAME).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl FileOpts {
    /// The options for reading the file, or the `-D` argument that is not `NAME=VALUE`.
    fn options(&self) -> Result<config::Options, String> {
        let defines = self
            .defines
            .iter()
            .map(|d| match d.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => Err(format!("-D{d}: expected -DNAME=VALUE")),
            })
            .collect::<Result<_, _>>()?;
        Ok(config::Options {
            format: self.format,
            defines,
            data_dir: self.data_dir.clone(),
        })
    }
}

/// The command's file options, if it reads a configuration file.
fn file_opts(c: &Command) -> Option<&FileOpts> {
    match c {
        Command::Agent { file_opts, .. }
        | Command::Validate { file_opts, .. }
        | Command::Convert { file_opts, .. } => Some(file_opts),
        _ => None,
    }
}

/// Two malloc arenas for the agent unless `MALLOC_ARENA_MAX` says otherwise. glibc gives
/// each thread that allocates an arena of its own (up to 8 per core); the agent's threads
/// (runtime workers, channel writer and reader, librdkafka's) each keep freed memory in
/// theirs, which cost a sidecar 4–6 MiB with the memory channel and 6–12 MiB with the file
/// channel at full speed (bench/peers), for no measured gain in speed.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before the agent
        // starts its threads.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = match file_opts(&cli.command).map(FileOpts::options).transpose() {
        Ok(o) => o.unwrap_or_default(),
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    let level = match (&cli.log_level, config::flume::log_level(&opts)) {
        (Some(l), _) => Some(l.clone()),
        (None, Ok(l)) => l,
        (None, Err(e)) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logging::init(level.as_deref(), cli.log_format) {
        eprintln!("sluice: {e}");
        return ExitCode::from(2);
    }
    if let Some(dir) = file_opts(&cli.command).and_then(|f| f.conf_dir.as_ref()) {
        tracing::info!(dir = %dir.display(), "-c: Flume's configuration folder is not read (no flume-env.sh, no log4j2.xml)");
    }
    match cli.command {
        Command::Agent {
            name,
            file,
            watch_config,
            no_reload_conf,
            file_opts: _,
        } => {
            // Until the agent handles SIGHUP (a reload), one must not end it: that is what
            // SIGHUP does to a process that does not handle it.
            // SAFETY: setting a signal's disposition to "ignore" touches no memory.
            unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
            limit_malloc_arenas();
            let loaded = std::fs::read(&file).ok();
            let cfg = match config::load(&file, &name, &opts) {
                Ok(c) => c,
                Err(e) => {
                    let e = secrets::mask(&e.to_string()).into_owned();
                    eprintln!("sluice: invalid configuration {}:\n{e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let flume = opts.format_of(&file) == config::Format::Flume;
            let origin = run::ConfigFile {
                path: file,
                watch: watch_config || (flume && !no_reload_conf),
                loaded,
                options: opts,
            };
            match run::run(cfg, origin) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "agent failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { file, name, .. } => validate(&file, name.as_deref(), &opts),
        Command::Convert { file, name, .. } => convert::run(&file, name.as_deref(), &opts),
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

fn validate(file: &std::path::Path, name: Option<&str>, opts: &config::Options) -> ExitCode {
    let names = match name {
        Some(n) => vec![n.to_owned()],
        None => match config::agent_names(file, opts) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("{}", secrets::mask(&e.to_string()));
                return ExitCode::from(2);
            }
        },
    };
    let mut ok = true;
    for n in &names {
        match config::load(file, n, opts) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    eprintln!("warning: {}", secrets::mask(&w.to_string()));
                }
                for note in &cfg.notes {
                    eprintln!("no effect: {}", secrets::mask(&note.to_string()));
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
                eprintln!("{}", secrets::mask(&e.to_string()));
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
