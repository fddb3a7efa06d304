//! The agent's configuration: a front end reads a file into a [`tree`] of agents, and
//! [`from_tree`] validates one agent of it into an [`AgentConfig`].
//!
//! A file's top-level keys are agent names; `-n NAME` picks one. Every error names the exact
//! key path (`a1.sinks.k1.topic: missing`), and unknown keys are errors, not warnings. The
//! YAML front end is [`yaml`]; a front end for another format builds a [`tree::Map`] of
//! agents and calls [`from_tree`]: finding the components, their option types, the checks
//! and the messages are shared.

pub mod flume;
mod model;
pub mod tree;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use sluice_channels::units::HumanDuration;
use sluice_channels::{FileChannelConfig, MemoryChannelConfig};
use sluice_sinks::console::ConsoleConfig;
use sluice_sinks::failover::SinkGroupConfig;
use sluice_sinks::kafka::{Delivery, KafkaConfig};
use sluice_sources::fanout::SelectorConfig;
use sluice_sources::spooldir::SpoolDirConfig;
use sluice_sources::taildir::TailDirConfig;

pub use model::{
    AgentConfig, ChannelDef, ChannelKind, ConfigError, Problem, SinkDef, SinkGroupDef, SinkKind,
    SourceDef, SourceKind,
};
use tree::{Map, Node};

/// The agent-level keys. Each section maps component names to their options, which are
/// taken from the tree once this has checked the sections' shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    data_dir: Option<PathBuf>,
    shutdown_timeout: Option<HumanDuration>,
    report_interval: Option<HumanDuration>,
    http: Option<String>,
    sources: BTreeMap<String, IgnoredAny>,
    channels: BTreeMap<String, IgnoredAny>,
    sinks: BTreeMap<String, IgnoredAny>,
    /// Optional; its groups are read from the tree, like each section's components.
    #[serde(default, rename = "sink_groups")]
    _sink_groups: BTreeMap<String, IgnoredAny>,
}

const SOURCE_TYPES: &str = "spooldir, taildir";
const CHANNEL_TYPES: &str = "memory, file";
const SINK_TYPES: &str = "console, kafka";

/// The formats a configuration file can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Sluice's YAML.
    Yaml,
    /// A Flume agent's `.properties` file (see docs/flume.md).
    Flume,
}

/// How a configuration file is read: its format (by default from its extension) and the
/// `-D` properties of the command line, which Flume files refer to as `${sys:NAME}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The format; `None`: `.properties` and `.conf` files are Flume's, others YAML.
    pub format: Option<Format>,
    /// `-DNAME=VALUE` properties, in order.
    pub defines: Vec<(String, String)>,
    /// `--data-dir`: where the agent keeps its state, whatever the file says.
    pub data_dir: Option<PathBuf>,
}

impl Options {
    /// The format of `path`.
    pub fn format_of(&self, path: &Path) -> Format {
        self.format.unwrap_or(if flume::is_flume_file(path) {
            Format::Flume
        } else {
            Format::Yaml
        })
    }

    /// The value of the `-D` property `name` (the last one given).
    pub fn define(&self, name: &str) -> Option<String> {
        self.defines
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// Reads `path`, substitutes the environment, and validates the agent `name`.
pub fn load(path: &Path, name: &str, opts: &Options) -> Result<AgentConfig, ConfigError> {
    let bytes = read_bytes(path)?;
    let flume = opts.format_of(path) == Format::Flume;
    let problems = flume::check_defines(opts, &bytes, flume);
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    let mut cfg = if flume {
        load_flume(&bytes, path, name, opts)?
    } else {
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::one(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        parse(&text, name, path, |v| std::env::var(v).ok())?
    };
    if let Some(dir) = &opts.data_dir {
        cfg.set_data_dir(dir);
    }
    Ok(cfg)
}

/// The agent `name` of the Flume properties `bytes` (read from `path`): translated, then
/// validated as a YAML agent would be, every problem named by the Flume key it came from.
pub fn load_flume(
    bytes: &[u8],
    path: &Path,
    name: &str,
    opts: &Options,
) -> Result<AgentConfig, ConfigError> {
    flume_config(bytes, path, name, opts).map(|(cfg, _, _)| cfg)
}

/// [`load_flume`], with the tree it validated and where its options came from (for
/// `sluice convert`).
pub fn flume_config(
    bytes: &[u8],
    path: &Path,
    name: &str,
    opts: &Options,
) -> Result<(AgentConfig, Map, flume::Provenance), ConfigError> {
    let (agents, prov) = flume_tree(bytes, path, name, opts)?;
    let mut cfg = from_tree(&agents, name, path).map_err(|e| ConfigError {
        problems: e.problems.into_iter().map(|p| prov.to_flume(p)).collect(),
    })?;
    cfg.warnings.extend(prov.warnings.iter().cloned());
    cfg.notes = prov.no_effect.clone();
    Ok((cfg, agents, prov))
}

/// The tree of the agent `name` of a Flume file, and where its options came from.
fn flume_tree(
    bytes: &[u8],
    path: &Path,
    name: &str,
    opts: &Options,
) -> Result<(Map, flume::Provenance), ConfigError> {
    let props = flume_properties(bytes, path, Some(name), opts)?;
    let known = flume::translate::agent_names(&props);
    if !known.iter().any(|n| n == name) {
        return Err(ConfigError::one(
            name,
            format!(
                "no such agent in {} (it defines: {})",
                path.display(),
                known.join(", ")
            ),
        ));
    }
    let (agent, prov) = flume::translate(&props, name, &|k| opts.define(k))
        .map_err(|problems| ConfigError { problems })?;
    let mut agents = Map::default();
    agents.insert(Node::Scalar(tree::Scalar::Str(name.to_owned())), agent);
    Ok((agents, prov))
}

/// The properties of a Flume file; with `agent`, problems in other agents' keys are not
/// reported (those keys are left out).
fn flume_properties(
    bytes: &[u8],
    path: &Path,
    agent: Option<&str>,
    opts: &Options,
) -> Result<Vec<flume::properties::Property>, ConfigError> {
    let lookup = |l: flume::Lookup, n: &str| match l {
        flume::Lookup::Env => std::env::var(n).ok(),
        flume::Lookup::Sys => opts.define(n),
    };
    flume::properties::parse(bytes, &path.display().to_string(), agent, &lookup)
        .map_err(|problems| ConfigError { problems })
}

/// The agent names a file defines, for `validate` without `-n` (top-level `x-` keys hold
/// YAML anchors, not agents: see [`yaml`]).
pub fn agent_names(path: &Path, opts: &Options) -> Result<Vec<String>, ConfigError> {
    match opts.format_of(path) {
        Format::Yaml => {
            let agents = yaml::read(&read(path)?, path, |v| std::env::var(v).ok())?;
            Ok(names(&agents))
        }
        Format::Flume => {
            let names = flume::translate::agent_names(&flume_properties(
                &read_bytes(path)?,
                path,
                None,
                opts,
            )?);
            if names.is_empty() {
                return Err(ConfigError::one(
                    path.display().to_string(),
                    "the file defines no agent (no key such as `a1.sources = r1`)",
                ));
            }
            Ok(names)
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(path.display().to_string(), format!("cannot read: {e}")))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::one(path.display().to_string(), format!("cannot read: {e}")))
}

/// The agent names a tree of agents defines, in order.
pub fn names(agents: &Map) -> Vec<String> {
    agents.named().map(|(n, _)| n.to_owned()).collect()
}

/// Parses YAML configuration text for the agent `name`; `env` looks up `${VAR}` references.
pub fn parse(
    text: &str,
    name: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<AgentConfig, ConfigError> {
    from_tree(&yaml::read(text, path, env)?, name, path)
}

/// Validates the agent `name` of `agents` (a front end's tree of agents by name, read from
/// `origin`): its own keys, each component's options (deserialized from the tree into the
/// component's option struct, then checked by its `validate`), names, and wiring. Every
/// problem found is reported, each under its key path.
pub fn from_tree(agents: &Map, name: &str, origin: &Path) -> Result<AgentConfig, ConfigError> {
    let Some(agent) = agents.get(name) else {
        return Err(ConfigError::one(
            name,
            format!(
                "no such agent in {} (it defines: {})",
                origin.display(),
                names(agents).join(", ")
            ),
        ));
    };
    if let Some(map) = agent.as_map() {
        crate::secrets::register_tree(map);
    }
    let file: AgentFile = tree::deserialize(agent, name)?;
    let mut problems = Vec::new();
    let http = file.http.as_deref().and_then(|h| match h.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(Problem::new(
                format!("{name}.http"),
                format!("`{h}` is not an address such as 127.0.0.1:9100"),
            ));
            None
        }
    });
    let data_dir = file
        .data_dir
        .unwrap_or_else(|| PathBuf::from("./data").join(name));
    for (key, empty) in [
        ("sources", file.sources.is_empty()),
        ("channels", file.channels.is_empty()),
        ("sinks", file.sinks.is_empty()),
    ] {
        if empty {
            problems.push(Problem::new(
                format!("{name}.{key}"),
                format!("at least one of the {key} is required"),
            ));
        }
    }
    let section = |key: &str| Section {
        at: format!("{name}.{key}"),
        members: agent
            .as_map()
            .and_then(|a| a.get(key))
            .and_then(Node::as_map)
            .map(|m| m.named().collect())
            .unwrap_or_default(),
    };
    let (sources, channels, sinks) = (section("sources"), section("channels"), section("sinks"));
    // What the components name, whether their own options are valid or not, so that one
    // invalid component is reported once and not again by the components wired to it.
    let wiring = Wiring {
        channels: channels.members.keys().map(|c| (*c).to_owned()).collect(),
        sources: sources.references(),
        sinks: sinks.references(),
    };
    let sources = sources.build(SOURCE_TYPES, Wires::Many, &mut problems, |name, c, at| {
        let kind = match c.ty.as_str() {
            "spooldir" => SourceKind::SpoolDir(options(&c.options, at, SpoolDirConfig::validate)?),
            "taildir" => SourceKind::TailDir(options(&c.options, at, TailDirConfig::validate)?),
            _ => unreachable!("component() checked the type"),
        };
        let selector = source_selector(&c, at)?;
        Ok(SourceDef {
            name: name.to_owned(),
            channels: c.channels,
            selector,
            kind,
        })
    });
    let channels = channels.build(CHANNEL_TYPES, Wires::None, &mut problems, |name, c, at| {
        let kind = match c.ty.as_str() {
            "memory" => {
                ChannelKind::Memory(options(&c.options, at, MemoryChannelConfig::validate)?)
            }
            "file" => {
                let mut f = options(&c.options, at, FileChannelConfig::validate)?;
                if f.dir.is_relative() {
                    f.dir = data_dir.join(&f.dir);
                }
                ChannelKind::File(f)
            }
            _ => unreachable!("component() checked the type"),
        };
        Ok(ChannelDef {
            name: name.to_owned(),
            kind,
        })
    });
    let sinks = sinks.build(SINK_TYPES, Wires::One, &mut problems, |name, c, at| {
        let kind = match c.ty.as_str() {
            "console" => SinkKind::Console(options(&c.options, at, ConsoleConfig::validate)?),
            "kafka" => {
                let mut k = options(&c.options, at, KafkaConfig::validate)?;
                if let Some(t) = &mut k.tls {
                    t.read_files();
                }
                SinkKind::Kafka(Box::new(k))
            }
            _ => unreachable!("component() checked the type"),
        };
        Ok(SinkDef {
            name: name.to_owned(),
            channel: c.channel.unwrap_or_default(),
            kind,
        })
    });
    let groups = section("sink_groups").groups(&mut problems);
    let mut cfg = AgentConfig {
        name: name.to_owned(),
        data_dir,
        shutdown_timeout: file
            .shutdown_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        report_interval: file
            .report_interval
            .map_or(Some(Duration::from_secs(30)), |d| {
                (!d.0.is_zero()).then_some(d.0)
            }),
        http,
        sources,
        channels,
        sinks,
        sink_groups: Vec::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
    };
    cfg.sink_groups = check_groups(&cfg, groups, &wiring, &mut problems);
    check_wiring(&cfg, &wiring, &mut problems);
    if problems.is_empty() {
        cfg.warnings = crate::warnings::check(&cfg);
        Ok(cfg)
    } else {
        Err(ConfigError { problems })
    }
}

/// One section of an agent (`sources`, `channels`, `sinks`): its key path and its
/// components' nodes, by name.
struct Section<'a> {
    at: String,
    members: BTreeMap<&'a str, &'a Node>,
}

/// A component as written: its `type`, the `channel` it names (sinks), the channels it puts
/// into and its `selector` (sources), and the rest, which are its type's options.
struct Component {
    ty: String,
    channel: Option<String>,
    channels: Vec<String>,
    /// Where the channels are written: `channel` or `channels`.
    channels_key: &'static str,
    selector: Node,
    options: Node,
}

/// Which keys wire a section's components to channels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wires {
    /// None (channels).
    None,
    /// `channel` (sinks).
    One,
    /// `channel`, or `channels` and `selector` (sources).
    Many,
}

impl Section<'_> {
    /// Each component's name and the channels it names as strings under `channel` or
    /// `channels`, each with its key below the component (`channel`, `channels[1]`).
    fn references(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.members
            .iter()
            .map(|(n, v)| {
                let map = v.as_map();
                let one = map
                    .and_then(|m| m.get("channel"))
                    .and_then(Node::as_str)
                    .map(|c| ("channel".to_owned(), c.to_owned()));
                let many = match map.and_then(|m| m.get("channels")) {
                    Some(Node::List(items)) => items.as_slice(),
                    _ => &[],
                };
                let many = many
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| Some((format!("channels[{i}]"), c.as_str()?.to_owned())));
                ((*n).to_owned(), one.into_iter().chain(many).collect())
            })
            .collect()
    }

    /// Each valid component, by name, as `define` makes it from its name, what is written
    /// for it (of one of `types`) and its key path. The problems of the others go to
    /// `problems`.
    fn build<D>(
        &self,
        types: &str,
        wires: Wires,
        problems: &mut Vec<Problem>,
        mut define: impl FnMut(&str, Component, &str) -> Result<D, ConfigError>,
    ) -> Vec<D> {
        let mut built = Vec::new();
        for (n, node) in &self.members {
            let at = format!("{}.{n}", self.at);
            match component(node, &at, wires, types).and_then(|c| define(n, c, &at)) {
                Ok(b) => built.push(b),
                Err(e) => problems.extend(e.problems),
            }
            check_name(problems, &at, n);
        }
        built
    }
}

impl Section<'_> {
    /// The sink groups whose own options are valid, by name; the problems of the others go
    /// to `problems`.
    fn groups(&self, problems: &mut Vec<Problem>) -> Vec<(String, SinkGroupConfig)> {
        let mut built = Vec::new();
        for (n, node) in &self.members {
            let at = format!("{}.{n}", self.at);
            if node.as_map().is_none() {
                problems.push(Problem::new(
                    &at,
                    "must be a mapping such as { sinks: [k1, k2], processor: failover }",
                ));
                continue;
            }
            match options(node, &at, SinkGroupConfig::validate) {
                Ok(g) => built.push(((*n).to_owned(), g)),
                Err(e) => problems.extend(e.problems),
            }
            check_name(problems, &at, n);
        }
        built
    }
}

/// Checks each sink group against the sinks as written: its sinks exist, each is in one
/// group only, they drain one channel, and a Kafka sink has a delivery deadline (else an
/// outage never fails it over); a group's name is not a sink's. Returns the groups.
fn check_groups(
    cfg: &AgentConfig,
    groups: Vec<(String, SinkGroupConfig)>,
    w: &Wiring,
    problems: &mut Vec<Problem>,
) -> Vec<SinkGroupDef> {
    let a = &cfg.name;
    let known: Vec<&str> = w.sinks.iter().map(|(k, _)| k.as_str()).collect();
    let channel_of = |sink: &str| {
        let (_, refs) = w.sinks.iter().find(|(k, _)| k == sink)?;
        refs.first().map(|(_, c)| c.as_str())
    };
    let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
    let mut defs = Vec::new();
    for (g, group) in &groups {
        let at = format!("{a}.sink_groups.{g}");
        if known.contains(&g.as_str()) {
            problems.push(Problem::new(
                &at,
                format!("a sink is named `{g}` too; give the group a name of its own"),
            ));
        }
        let mut first: Option<(&str, Option<&str>)> = None;
        for (i, s) in group.sinks.iter().enumerate() {
            let key = format!("{at}.sinks[{i}]");
            if !known.contains(&s.as_str()) {
                problems.push(Problem::new(
                    key,
                    format!("no sink named `{s}` (sinks: {})", known.join(", ")),
                ));
                continue;
            }
            if let Some(other) = member_of.insert(s, g)
                && other != g
            {
                problems.push(Problem::new(
                    &key,
                    format!(
                        "sink `{s}` is already in group `{other}`; a sink may be in one group only"
                    ),
                ));
            }
            let channel = channel_of(s);
            match first {
                None => first = Some((s, channel)),
                Some((k, c)) if c != channel => problems.push(Problem::new(
                    &key,
                    format!(
                        "sink `{s}` drains channel `{}`, but `{k}` drains `{}`; the sinks of a \
                         group drain one channel",
                        channel.unwrap_or("?"),
                        c.unwrap_or("?")
                    ),
                )),
                Some(_) => {}
            }
            let kafka = cfg.sinks.iter().find_map(|d| match &d.kind {
                SinkKind::Kafka(k) if d.name == *s => Some(k),
                _ => None,
            });
            if kafka.is_some_and(|k| k.delivery == Delivery::ExactlyOnce) {
                problems.push(Problem::new(
                    key,
                    format!(
                        "kafka sink `{s}` delivers exactly once, which a failover group cannot \
                         keep (another sink would send what it may have delivered): take it out \
                         of the group, or set {a}.sinks.{s}.delivery: at_least_once"
                    ),
                ));
            } else if kafka.is_some_and(|k| k.delivery_deadline().is_none()) {
                problems.push(Problem::new(
                    key,
                    format!(
                        "kafka sink `{s}` has no delivery deadline (producer message.timeout.ms \
                         is 0, the default: it waits out a broker outage and never fails), so \
                         the group could not fail over: set \
                         {a}.sinks.{s}.producer.message.timeout.ms, e.g. 30000"
                    ),
                ));
            }
        }
        defs.push(SinkGroupDef {
            name: g.clone(),
            sinks: group.by_priority(),
            max_penalty: group.max_penalty.0,
        });
    }
    defs
}

/// The options of type `T` in `node` at the key path `at`, deserialized and checked with
/// `validate`.
fn options<T: DeserializeOwned>(
    node: &Node,
    at: &str,
    validate: impl FnOnce(&T) -> Vec<Problem>,
) -> Result<T, ConfigError> {
    let options: T = tree::deserialize(node, at)?;
    let found = validate(&options);
    if found.is_empty() {
        Ok(options)
    } else {
        Err(ConfigError {
            problems: found.into_iter().map(|p| p.under(at)).collect(),
        })
    }
}

/// The component names and the channels they name (with the key naming each), as written
/// (valid or not).
struct Wiring {
    channels: Vec<String>,
    sources: Vec<(String, Vec<(String, String)>)>,
    sinks: Vec<(String, Vec<(String, String)>)>,
}

fn check_name(problems: &mut Vec<Problem>, at: &str, name: &str) {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        problems.push(Problem::new(
            at,
            "names may use only letters, digits, '-' and '_'",
        ));
    }
}

/// Splits a component's mapping into its `type`, its channels and selector (when it has
/// them) and the type's own options.
fn component(node: &Node, at: &str, wires: Wires, types: &str) -> Result<Component, ConfigError> {
    let Some(map) = node.as_map() else {
        return Err(ConfigError::one(at, "must be a mapping of options"));
    };
    let mut rest = map.clone();
    let ty = match rest.remove("type") {
        Some(Node::Scalar(tree::Scalar::Str(t))) => t,
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
    let (many, selector) = match wires {
        Wires::Many => (
            rest.remove("channels"),
            rest.remove("selector").unwrap_or(Node::Null),
        ),
        Wires::None | Wires::One => (None, Node::Null),
    };
    let written = match wires {
        Wires::None => None,
        Wires::One | Wires::Many => rest.remove("channel"),
    };
    let channel = match (wires, written, &many) {
        (Wires::None, _, _) => None,
        (_, Some(_), Some(_)) => {
            return Err(ConfigError::one(
                format!("{at}.channels"),
                "give either `channel` or `channels`, not both",
            ));
        }
        (_, Some(Node::Scalar(tree::Scalar::Str(c))), None) => Some(c),
        (_, Some(_), None) => {
            return Err(ConfigError::one(
                format!("{at}.channel"),
                "must be a channel name",
            ));
        }
        (_, None, Some(_)) => None,
        (Wires::Many, None, None) => {
            return Err(ConfigError::one(
                format!("{at}.channel"),
                "missing (or `channels` with a list of them)",
            ));
        }
        (_, None, None) => return Err(ConfigError::one(format!("{at}.channel"), "missing")),
    };
    let (channels, channels_key) = match many {
        Some(list) => {
            let channels: Vec<String> = tree::deserialize(&list, &format!("{at}.channels"))?;
            if channels.is_empty() {
                return Err(ConfigError::one(
                    format!("{at}.channels"),
                    "must name at least one channel",
                ));
            }
            (channels, "channels")
        }
        None => (channel.iter().cloned().collect(), "channel"),
    };
    Ok(Component {
        ty,
        channel,
        channels,
        channels_key,
        selector,
        options: Node::Map(rest),
    })
}

/// A source's selector, checked against its channels; problems name keys under `at`.
fn source_selector(c: &Component, at: &str) -> Result<SelectorConfig, ConfigError> {
    let selector: SelectorConfig = tree::deserialize(&c.selector, &format!("{at}.selector"))?;
    let problems: Vec<Problem> = selector
        .validate(&c.channels, c.channels_key)
        .into_iter()
        .map(|p| p.under(at))
        .collect();
    if problems.is_empty() {
        Ok(selector)
    } else {
        Err(ConfigError { problems })
    }
}

/// Cross-references: every source and sink names an existing channel, every channel has a
/// source and exactly one sink. Checked on the names as written, so that a channel with an
/// invalid option is not also reported as missing by its source and sink.
fn check_wiring(cfg: &AgentConfig, w: &Wiring, problems: &mut Vec<Problem>) {
    let a = &cfg.name;
    let names: Vec<&str> = w.channels.iter().map(String::as_str).collect();
    let known = names.join(", ");
    for (s, refs) in &w.sources {
        for (key, c) in refs.iter().filter(|(_, c)| !names.contains(&c.as_str())) {
            problems.push(Problem::new(
                format!("{a}.sources.{s}.{key}"),
                format!("no channel named `{c}` (channels: {known})"),
            ));
        }
    }
    let mut drained: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, refs) in &w.sinks {
        let Some((_, c)) = refs.first() else {
            continue;
        };
        let c = c.as_str();
        if !names.contains(&c) {
            problems.push(Problem::new(
                format!("{a}.sinks.{k}.channel"),
                format!("no channel named `{c}` (channels: {known})"),
            ));
        } else if let Some(first) = drained.get(c).copied().or_else(|| {
            drained.insert(c, k);
            None
        }) && cfg.group_of(first).is_none_or(|g| !g.sinks.contains(k))
        {
            problems.push(Problem::new(
                format!("{a}.sinks.{k}.channel"),
                format!(
                    "channel `{c}` is already drained by sink `{first}`; one sink per channel keeps its events in order (for several, put them in one sink group)"
                ),
            ));
        }
    }
    for c in &names {
        let named = |refs: &[(String, Vec<(String, String)>)]| {
            refs.iter()
                .any(|(_, r)| r.iter().any(|(_, ch)| ch.as_str() == *c))
        };
        if !named(&w.sinks) {
            problems.push(Problem::new(
                format!("{a}.channels.{c}"),
                "no sink drains this channel",
            ));
        }
        if !named(&w.sources) {
            problems.push(Problem::new(
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
                    problems.push(Problem::new(
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
                    problems.push(Problem::new(
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
mod tests;
