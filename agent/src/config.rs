//! The agent's YAML configuration: parsing, environment substitution and validation.
//!
//! A file's top-level keys are agent names; `-n NAME` picks one. Every error names the exact
//! key path (`a1.sinks.k1.topic: missing`), and unknown keys are errors, not warnings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
pub use sluice_channels::config::Problem;
use sluice_channels::units::HumanDuration;
use sluice_channels::{FileChannelConfig, MemoryChannelConfig};
use sluice_sinks::console::ConsoleConfig;
use sluice_sinks::kafka::KafkaConfig;
use sluice_sources::spooldir::SpoolDirConfig;
use sluice_sources::taildir::TailDirConfig;

use crate::envsubst;

/// Everything wrong with a configuration, in file order where it can tell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems found (at least one).
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
            }],
        }
    }
}

/// One agent's validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's name.
    pub name: String,
    /// Where the agent keeps its checkpoints and durable channels.
    pub data_dir: PathBuf,
    /// How long a stop may take to drain the channels before the agent gives up waiting.
    pub shutdown_timeout: Duration,
    /// How often a status line is logged (`None`: never).
    pub report_interval: Option<Duration>,
    /// Where `/metrics` and `/health` are served, if anywhere.
    pub http: Option<std::net::SocketAddr>,
    /// The sources, by name.
    pub sources: Vec<SourceDef>,
    /// The channels, by name.
    pub channels: Vec<ChannelDef>,
    /// The sinks, by name.
    pub sinks: Vec<SinkDef>,
    /// What is valid but probably not meant: two sources that read the same files, a pattern
    /// that covers the agent's own files. `validate` prints them; the agent logs them.
    pub warnings: Vec<Problem>,
}

/// A configured source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDef {
    /// Its name.
    pub name: String,
    /// The channel it puts into.
    pub channel: String,
    /// Its type and options.
    pub kind: SourceKind,
}

/// The source types.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// `type: spooldir`.
    SpoolDir(SpoolDirConfig),
    /// `type: taildir`.
    TailDir(TailDirConfig),
}

/// A configured channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelDef {
    /// Its name.
    pub name: String,
    /// Its type and options.
    pub kind: ChannelKind,
}

/// The channel types.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    /// `type: memory`.
    Memory(MemoryChannelConfig),
    /// `type: file`: the durable channel; a relative `dir` is resolved under `data_dir`.
    File(FileChannelConfig),
}

/// A configured sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkDef {
    /// Its name.
    pub name: String,
    /// The channel it drains.
    pub channel: String,
    /// Its type and options.
    pub kind: SinkKind,
}

/// The sink types.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// `type: console`.
    Console(ConsoleConfig),
    /// `type: kafka`.
    Kafka(Box<KafkaConfig>),
}

impl SourceKind {
    /// What it reads, for the start line.
    pub fn describe(&self) -> String {
        match self {
            SourceKind::SpoolDir(c) => format!("spooldir {}", c.dir.display()),
            SourceKind::TailDir(c) => {
                let globs: Vec<&str> = c.paths.iter().map(|p| p.glob.as_str()).collect();
                format!("taildir {}", globs.join(" "))
            }
        }
    }
}

impl ChannelKind {
    /// Its kind and capacity, for the start line.
    pub fn describe(&self) -> String {
        match self {
            ChannelKind::Memory(m) => format!("memory, {} events", m.capacity),
            ChannelKind::File(f) => format!(
                "file {}, {} bytes, fsync {:?}",
                f.dir.display(),
                f.capacity.0,
                f.fsync
            ),
        }
    }
}

impl SinkKind {
    /// Where it delivers, for the start line.
    pub fn describe(&self) -> String {
        match self {
            SinkKind::Console(_) => "console".to_owned(),
            SinkKind::Kafka(k) => format!("kafka {} topic {}", k.brokers, k.topic.as_str()),
        }
    }
}

/// The agent-level keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    data_dir: Option<PathBuf>,
    shutdown_timeout: Option<HumanDuration>,
    report_interval: Option<HumanDuration>,
    http: Option<String>,
    sources: BTreeMap<String, Value>,
    channels: BTreeMap<String, Value>,
    sinks: BTreeMap<String, Value>,
}

const SOURCE_TYPES: &str = "spooldir, taildir";
const CHANNEL_TYPES: &str = "memory, file";
const SINK_TYPES: &str = "console, kafka";

/// Reads `path`, substitutes the environment, and validates the agent `name`.
pub fn load(path: &Path, name: &str) -> Result<AgentConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(path.display().to_string(), format!("cannot read: {e}")))?;
    parse(&text, name, path, |v| std::env::var(v).ok())
}

/// The agent names a file defines, for `validate` without `-n`. Top-level keys that start
/// with `x-` are not agents: they hold YAML anchors for merge keys (`<<: *common`).
pub fn agent_names(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(path.display().to_string(), format!("cannot read: {e}")))?;
    let top = top_level(&text, path, |v| std::env::var(v).ok())?;
    Ok(agents(&top))
}

/// The top-level keys that name agents.
fn agents(top: &serde_yaml::Mapping) -> Vec<String> {
    top.keys()
        .filter_map(Value::as_str)
        .filter(|k| !k.starts_with(TEMPLATE_PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Top-level keys with this prefix hold anchors to merge, not agents.
const TEMPLATE_PREFIX: &str = "x-";

/// Stands in for an integer too large for any option, so that the file still parses and the
/// problem is reported under its key (see [`out_of_range`]).
const OUT_OF_RANGE: &str = "\u{1}sluice-out-of-range:";
/// [`OUT_OF_RANGE`] as written in a double-quoted YAML string.
const OUT_OF_RANGE_YAML: &str = "\\x01sluice-out-of-range:";

fn top_level(
    text: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<serde_yaml::Mapping, ConfigError> {
    let file = path.display().to_string();
    let marked = envsubst::mark(text, env).map_err(|e| ConfigError::one(&file, e.to_string()))?;
    let mut text = marked.text.clone();
    let mut value: Value = loop {
        match serde_yaml::from_str(&text) {
            Ok(v) => break v,
            Err(e) => match mark_out_of_range(&text, &e) {
                Some(marked) => text = marked,
                None => return Err(ConfigError::one(&file, e.to_string())),
            },
        }
    };
    // `<<: *anchor` merge keys; a merged mapping may hold merge keys itself.
    for _ in 0..MAX_MERGE_DEPTH {
        if !has_merge_key(&value) {
            break;
        }
        value
            .apply_merge()
            .map_err(|e| ConfigError::one(&file, format!("merge key `<<`: {e}")))?;
    }
    // Values from the environment go in only now, into the parsed strings.
    marked.resolve(&mut value);
    match value {
        Value::Mapping(m) => Ok(m),
        Value::Null => Err(ConfigError::one(file, "the file defines no agent")),
        _ => Err(ConfigError::one(
            file,
            "the top level must map agent names to agents",
        )),
    }
}

/// How many levels of merge keys within merged mappings are applied.
const MAX_MERGE_DEPTH: usize = 16;

fn has_merge_key(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        Value::Sequence(s) => s.iter().any(has_merge_key),
        Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

/// When `error` is serde_yaml refusing an integer beyond 64 bits, `text` with that integer
/// replaced by an [`OUT_OF_RANGE`] string, so that parsing can go on and the problem be named
/// under its key.
fn mark_out_of_range(text: &str, error: &serde_yaml::Error) -> Option<String> {
    let message = error.to_string();
    // serde_yaml may put the key path in front of the message.
    if !(message.contains("invalid type: integer `")
        && (message.contains("` as u128") || message.contains("` as i128")))
    {
        return None;
    }
    let loc = error.location()?;
    // The line and column (1-based, in characters) of the integer.
    let line_start: usize = text
        .split_inclusive('\n')
        .take(loc.line().checked_sub(1)?)
        .map(str::len)
        .sum();
    let line = text[line_start..].split('\n').next()?;
    let start = line_start
        + line
            .char_indices()
            .nth(loc.column().checked_sub(1)?)
            .map(|(i, _)| i)?;
    let len = text[start..]
        .find(|c: char| c.is_whitespace() || matches!(c, ',' | ']' | '}' | '#'))
        .unwrap_or(text.len() - start);
    let number = &text[start..start + len];
    if number.is_empty()
        || !number
            .trim_start_matches(['+', '-'])
            .starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    Some(format!(
        "{}\"{OUT_OF_RANGE_YAML}{number}\"{}",
        &text[..start],
        &text[start + len..]
    ))
}

/// The integers too large for any option under `value`, as problems under their keys.
fn out_of_range(value: &Value, at: &str, problems: &mut Vec<Problem>) {
    match value {
        Value::String(s) => {
            if let Some(number) = s.strip_prefix(OUT_OF_RANGE) {
                problems.push(problem(
                    at,
                    format!("`{number}` is out of range for this key (too large)"),
                ));
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = match k {
                    Value::String(k) => k.clone(),
                    other => serde_yaml::to_string(other)
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_default(),
                };
                out_of_range(v, &format!("{at}.{key}"), problems);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                out_of_range(v, &format!("{at}[{i}]"), problems);
            }
        }
        Value::Tagged(t) => out_of_range(&t.value, at, problems),
        _ => {}
    }
}

/// Parses configuration text for the agent `name`; `env` looks up `${VAR}` references.
pub fn parse(
    text: &str,
    name: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<AgentConfig, ConfigError> {
    let mut top = top_level(text, path, env)?;
    let agent = if name.starts_with(TEMPLATE_PREFIX) {
        None
    } else {
        top.remove(name)
    };
    let Some(agent) = agent else {
        let names = agents(&top);
        return Err(ConfigError::one(
            name,
            format!(
                "no such agent in {} (it defines: {})",
                path.display(),
                names.join(", ")
            ),
        ));
    };
    // Integers too large for any option: named once, under their key; the errors that the
    // stand-in string causes for the same keys below are dropped at the end.
    let mut too_large = Vec::new();
    out_of_range(&agent, name, &mut too_large);
    let file: AgentFile = match deserialize_at(agent, name) {
        Ok(f) => f,
        Err(mut e) => {
            drop_shadowed(&mut e.problems, &too_large);
            too_large.extend(e.problems);
            return Err(ConfigError {
                problems: too_large,
            });
        }
    };
    let mut problems = Vec::new();
    let http = file.http.as_deref().and_then(|h| match h.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(problem(
                format!("{name}.http"),
                format!("`{h}` is not an address such as 127.0.0.1:9100"),
            ));
            None
        }
    });
    let mut cfg = AgentConfig {
        name: name.to_owned(),
        data_dir: file
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./data").join(name)),
        shutdown_timeout: file
            .shutdown_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        report_interval: file
            .report_interval
            .map_or(Some(Duration::from_secs(30)), |d| {
                (!d.0.is_zero()).then_some(d.0)
            }),
        http,
        sources: Vec::new(),
        channels: Vec::new(),
        sinks: Vec::new(),
        warnings: Vec::new(),
    };
    // What the components name, whether their own options are valid or not, so that one
    // invalid component is reported once and not again by the components wired to it.
    let wiring = Wiring {
        channels: file.channels.keys().cloned().collect(),
        sources: references(&file.sources),
        sinks: references(&file.sinks),
    };
    for (key, kind) in [
        ("sources", &file.sources),
        ("channels", &file.channels),
        ("sinks", &file.sinks),
    ] {
        if kind.is_empty() {
            problems.push(problem(
                format!("{name}.{key}"),
                format!("at least one of the {key} is required"),
            ));
        }
    }
    for (n, v) in file.sources {
        let at = format!("{name}.sources.{n}");
        let result = component(v, &at, true, SOURCE_TYPES).and_then(|(ty, channel, rest)| {
            let kind = match ty.as_str() {
                "spooldir" => {
                    let c: SpoolDirConfig = deserialize_at(rest, &at)?;
                    check(&at, c.validate())?;
                    SourceKind::SpoolDir(c)
                }
                "taildir" => {
                    let c: TailDirConfig = deserialize_at(rest, &at)?;
                    check(&at, c.validate())?;
                    SourceKind::TailDir(c)
                }
                _ => unreachable!("component() checked the type"),
            };
            Ok(SourceDef {
                name: n.clone(),
                channel: channel.unwrap_or_default(),
                kind,
            })
        });
        collect(&mut problems, result, |d| cfg.sources.push(d));
        check_name(&mut problems, &at, &n);
    }
    for (n, v) in file.channels {
        let at = format!("{name}.channels.{n}");
        let result = component(v, &at, false, CHANNEL_TYPES).and_then(|(ty, _, rest)| {
            let kind = match ty.as_str() {
                "memory" => {
                    let c: MemoryChannelConfig = deserialize_at(rest, &at)?;
                    check(&at, c.validate())?;
                    ChannelKind::Memory(c)
                }
                "file" => {
                    let mut c: FileChannelConfig = deserialize_at(rest, &at)?;
                    check(&at, c.validate())?;
                    if c.dir.is_relative() {
                        c.dir = cfg.data_dir.join(&c.dir);
                    }
                    ChannelKind::File(c)
                }
                _ => unreachable!("component() checked the type"),
            };
            Ok(ChannelDef {
                name: n.clone(),
                kind,
            })
        });
        collect(&mut problems, result, |d| cfg.channels.push(d));
        check_name(&mut problems, &at, &n);
    }
    for (n, v) in file.sinks {
        let at = format!("{name}.sinks.{n}");
        let result = component(v, &at, true, SINK_TYPES).and_then(|(ty, channel, rest)| {
            let kind = match ty.as_str() {
                "console" => {
                    let c: ConsoleConfig = deserialize_at(rest, &at)?;
                    check(&at, c.validate())?;
                    SinkKind::Console(c)
                }
                "kafka" => {
                    let c: KafkaConfig = deserialize_at(rest, &at)?;
                    check(&at, c.validate())?;
                    SinkKind::Kafka(Box::new(c))
                }
                _ => unreachable!("component() checked the type"),
            };
            Ok(SinkDef {
                name: n.clone(),
                channel: channel.unwrap_or_default(),
                kind,
            })
        });
        collect(&mut problems, result, |d| cfg.sinks.push(d));
        check_name(&mut problems, &at, &n);
    }
    check_wiring(&cfg, &wiring, &mut problems);
    drop_shadowed(&mut problems, &too_large);
    too_large.extend(problems);
    let problems = too_large;
    if problems.is_empty() {
        cfg.warnings = crate::warnings::check(&cfg);
        Ok(cfg)
    } else {
        Err(ConfigError { problems })
    }
}

/// Removes the problems at or below a key already reported in `reported`.
fn drop_shadowed(problems: &mut Vec<Problem>, reported: &[Problem]) {
    problems.retain(|p| {
        !reported.iter().any(|r| {
            p.key == r.key
                || p.key.starts_with(&format!("{}.", r.key))
                || p.key.starts_with(&format!("{}[", r.key))
        })
    });
}

/// The component names and the channels they name, as written (valid or not).
struct Wiring {
    channels: Vec<String>,
    sources: Vec<(String, Option<String>)>,
    sinks: Vec<(String, Option<String>)>,
}

/// Each component's name and the `channel` it names, if it names one as a string.
fn references(components: &BTreeMap<String, Value>) -> Vec<(String, Option<String>)> {
    components
        .iter()
        .map(|(n, v)| {
            let channel = v
                .as_mapping()
                .and_then(|m| m.get("channel"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            (n.clone(), channel)
        })
        .collect()
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

fn collect<T>(problems: &mut Vec<Problem>, r: Result<T, ConfigError>, ok: impl FnOnce(T)) {
    match r {
        Ok(v) => ok(v),
        Err(e) => problems.extend(e.problems),
    }
}

fn check(at: &str, found: Vec<Problem>) -> Result<(), ConfigError> {
    if found.is_empty() {
        return Ok(());
    }
    Err(ConfigError {
        problems: found.into_iter().map(|p| p.under(at)).collect(),
    })
}

fn check_name(problems: &mut Vec<Problem>, at: &str, name: &str) {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        problems.push(problem(
            at,
            "names may use only letters, digits, '-' and '_'",
        ));
    }
}

/// Splits a component's mapping into its `type`, its `channel` (when it has one) and the
/// type's own options.
fn component(
    value: Value,
    at: &str,
    has_channel: bool,
    types: &str,
) -> Result<(String, Option<String>, Value), ConfigError> {
    let Value::Mapping(mut map) = value else {
        return Err(ConfigError::one(at, "must be a mapping of options"));
    };
    let ty = match map.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(ConfigError::one(format!("{at}.type"), "must be a string")),
        None => {
            return Err(ConfigError::one(
                format!("{at}.type"),
                format!("missing (one of: {types})"),
            ));
        }
    };
    if !types.split(", ").any(|t| t == ty) {
        return Err(ConfigError::one(
            format!("{at}.type"),
            format!("unknown type `{ty}` (one of: {types})"),
        ));
    }
    let channel = if has_channel {
        match map.remove("channel") {
            Some(Value::String(c)) => Some(c),
            Some(_) => {
                return Err(ConfigError::one(
                    format!("{at}.channel"),
                    "must be a channel name",
                ));
            }
            None => return Err(ConfigError::one(format!("{at}.channel"), "missing")),
        }
    } else {
        None
    };
    Ok((ty, channel, Value::Mapping(map)))
}

/// Deserializes `value` into `T`, naming the key path of any error below `at`.
fn deserialize_at<T: DeserializeOwned>(value: Value, at: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let base = if path == "." || path.is_empty() {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        };
        let message = e.inner().to_string();
        // serde names the field in the message; the path may or may not end with it.
        let key_of = |field: &str| {
            if base.ends_with(&format!(".{field}")) {
                base.clone()
            } else {
                format!("{base}.{field}")
            }
        };
        if let Some(field) = backticked(&message, "missing field `") {
            return ConfigError::one(key_of(field), "missing");
        }
        if let Some(field) = backticked(&message, "unknown field `") {
            let expected = message
                .split_once(", expected ")
                .map(|(_, e)| e)
                .unwrap_or("no options");
            return ConfigError::one(key_of(field), format!("unknown key (expected {expected})"));
        }
        if let Some(range) = integer_out_of_range(&message) {
            return ConfigError::one(base, range);
        }
        ConfigError::one(base, message)
    })
}

/// serde's `invalid value: integer `N`, expected u32` in words that say what is wrong: the
/// number is out of the key's range, and what the range is.
fn integer_out_of_range(message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid value: integer `")?;
    let (number, expected) = rest.split_once("`, expected ")?;
    let (lo, hi): (i128, i128) = match expected {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" => (0, u64::MAX.into()),
        "usize" => (0, usize::MAX as i128),
        "i8" => (i8::MIN.into(), i8::MAX.into()),
        "i16" => (i16::MIN.into(), i16::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    };
    Some(format!(
        "invalid value `{number}`: out of range for this key ({lo} to {hi})"
    ))
}

fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// Cross-references: every source and sink names an existing channel, every channel has a
/// source and exactly one sink. Checked on the names as written, so that a channel with an
/// invalid option is not also reported as missing by its source and sink.
fn check_wiring(cfg: &AgentConfig, w: &Wiring, problems: &mut Vec<Problem>) {
    let a = &cfg.name;
    let names: Vec<&str> = w.channels.iter().map(String::as_str).collect();
    let known = names.join(", ");
    for (s, channel) in &w.sources {
        if let Some(c) = channel.as_deref().filter(|c| !names.contains(c)) {
            problems.push(problem(
                format!("{a}.sources.{s}.channel"),
                format!("no channel named `{c}` (channels: {known})"),
            ));
        }
    }
    let mut drained: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, channel) in &w.sinks {
        let Some(c) = channel.as_deref() else {
            continue;
        };
        if !names.contains(&c) {
            problems.push(problem(
                format!("{a}.sinks.{k}.channel"),
                format!("no channel named `{c}` (channels: {known})"),
            ));
        } else if let Some(first) = drained.insert(c, k) {
            problems.push(problem(
                format!("{a}.sinks.{k}.channel"),
                format!(
                    "channel `{c}` is already drained by sink `{first}`; one sink per channel keeps its events in order"
                ),
            ));
        }
    }
    for c in &names {
        if !w.sinks.iter().any(|(_, ch)| ch.as_deref() == Some(*c)) {
            problems.push(problem(
                format!("{a}.channels.{c}"),
                "no sink drains this channel",
            ));
        }
        if !w.sources.iter().any(|(_, ch)| ch.as_deref() == Some(*c)) {
            problems.push(problem(
                format!("{a}.channels.{c}"),
                "no source puts into this channel",
            ));
        }
    }
    let mut dirs: BTreeMap<&Path, &str> = BTreeMap::new();
    let mut position_files: BTreeMap<&Path, &str> = BTreeMap::new();
    for s in &cfg.sources {
        match &s.kind {
            SourceKind::SpoolDir(c) => {
                if let Some(other) = dirs.insert(&c.dir, &s.name) {
                    problems.push(problem(
                        format!("{a}.sources.{}.dir", s.name),
                        format!("source `{other}` already reads {}", c.dir.display()),
                    ));
                }
            }
            SourceKind::TailDir(c) => {
                let Some(p) = c.position_file.as_deref() else {
                    continue;
                };
                if let Some(other) = position_files.insert(p, &s.name) {
                    problems.push(problem(
                        format!("{a}.sources.{}.position_file", s.name),
                        format!(
                            "source `{other}` already keeps its positions in {}",
                            p.display()
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
