//! The Flume front end: a Flume 1.11 agent's `.properties` file read into the same
//! [`tree`](super::tree) of agents as a YAML file, so that `sluice agent -f x.properties`
//! runs a Flume agent unchanged.
//!
//! [`properties`] reads the text as Flume does; [`translate`] maps each Flume component and
//! key to Sluice's, and remembers which Flume key every Sluice option came from
//! ([`Provenance`]), so that a problem found by the shared checks is reported under the
//! Flume key the user wrote (`a1.sources.r1.spoolDir`, not `a1.sources.r1.dir`).

pub mod properties;
pub mod translate;

use std::collections::BTreeMap;

use sluice_channels::config::Problem;

pub use properties::Lookup;
pub use translate::translate;

/// Whether a file is read as a Flume properties file: by its `--format`, else by its
/// extension (`.properties`, or `.conf` as in Flume's examples).
pub fn is_flume_file(path: &std::path::Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("properties" | "conf")
    )
}

/// Where the options of a translated agent came from, and what the translation has to say.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Provenance {
    /// Sluice key path → the Flume key it was written as.
    pub keys: BTreeMap<String, String>,
    /// Flume keys accepted that change nothing in Sluice, each with why.
    pub no_effect: Vec<Problem>,
    /// Flume key → the YAML reference to write for it in `sluice convert` (`${NAME}`) and
    /// the value it has now, for values that are a whole `${env:NAME}` (or `${NAME}` of the
    /// environment): an option holding that value as it is is written as the reference, so
    /// that the converted file reads the environment as the original did and holds no
    /// secret.
    pub env_refs: BTreeMap<String, (String, String)>,
    /// Flume keys whose values were partly made of `${...}` references: convert writes
    /// them as substituted, and says so.
    pub substituted: Vec<String>,
    /// Where Sluice behaves differently from Flume (keeping what Flume would lose), or where
    /// the configuration loses order as it does in Flume.
    pub warnings: Vec<Problem>,
}

impl Provenance {
    /// The Flume key that `key` (a Sluice key path) came from: the option itself, or the
    /// nearest enclosing one, with the rest of the path kept. `None` when nothing is known.
    pub fn flume_key(&self, key: &str) -> Option<String> {
        if let Some(k) = self.keys.get(key) {
            return Some(k.clone());
        }
        let mut end = key.len();
        while let Some(cut) = key[..end].rfind(['.', '[']) {
            if let Some(k) = self.keys.get(&key[..cut]) {
                return Some(format!("{k}{}", &key[cut..]));
            }
            end = cut;
        }
        None
    }

    /// `problem`, with its key named as the Flume key it came from (the Sluice key said in
    /// the message when they differ).
    pub fn to_flume(&self, mut problem: Problem) -> Problem {
        if let Some(k) = self.flume_key(&problem.key)
            && k != problem.key
        {
            problem.message = format!("{} (Sluice option `{}`)", problem.message, problem.key);
            problem.key = k;
        }
        problem
    }
}

/// The `-D` properties Sluice reads itself; others are accepted only when the file refers to
/// them (`${sys:NAME}`).
const KNOWN_DEFINES: &[(&str, &str)] = &[
    ("flume.root.logger", "sets the log level (LEVEL,console)"),
    (
        "flume.monitoring.type",
        "http: serve metrics on flume.monitoring.port",
    ),
    (
        "flume.monitoring.port",
        "the metrics port with flume.monitoring.type=http",
    ),
    (
        "propertiesImplementation",
        "Sluice always looks `${NAME}` up in the file, then in the environment",
    ),
    (
        "org.apache.flume.log.printconfig",
        "Sluice logs no configuration values",
    ),
    ("org.apache.flume.log.rawdata", "Sluice logs no event data"),
    (
        "flume.called.from.service",
        "read by nothing, in Flume 1.11 too",
    ),
];

/// The log level `-Dflume.root.logger=LEVEL,APPENDER` asks for, as a tracing filter
/// (Sluice logs to stderr whatever the appender); `None` when it is not given.
pub fn log_level(opts: &super::Options) -> Result<Option<String>, String> {
    let Some(v) = opts.define("flume.root.logger") else {
        return Ok(None);
    };
    let level = v.split(',').next().unwrap_or("").trim();
    let filter = match level.to_ascii_uppercase().as_str() {
        "TRACE" | "ALL" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" => "warn",
        "ERROR" | "FATAL" => "error",
        "OFF" => "off",
        _ => {
            return Err(format!(
                "-Dflume.root.logger={v}: `{level}` is not a level (TRACE, DEBUG, INFO, WARN, ERROR, FATAL, OFF)"
            ));
        }
    };
    Ok(Some(filter.to_owned()))
}

/// Problems with the `-D` properties given for a file whose text is `text` and whose format
/// is `flume`: each must be one Sluice reads, or one a Flume file refers to as
/// `${sys:NAME}`.
pub fn check_defines(opts: &super::Options, text: &[u8], flume: bool) -> Vec<Problem> {
    let text = String::from_utf8_lossy(text);
    opts.defines
        .iter()
        .filter(|(name, _)| {
            let known = KNOWN_DEFINES.iter().any(|(k, _)| k == name);
            let referenced = flume && text.contains(&format!("${{sys:{name}"));
            !(known && (flume || name == "flume.root.logger")) && !referenced
        })
        .map(|(name, _)| {
            let why = if flume {
                "not a property Sluice reads, nor one the file refers to as ${sys:NAME}"
            } else {
                "-D properties are for Flume files; Sluice's YAML reads the environment (${NAME})"
            };
            Problem::new(format!("-D{name}"), why)
        })
        .collect()
}

#[cfg(test)]
mod tests;
