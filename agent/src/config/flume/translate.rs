//! Flume's components and keys, mapped to Sluice's: one agent of a properties file becomes
//! the tree a YAML file would give, with the [`Provenance`] of every option.
//!
//! A component, key or value Sluice cannot honour is a problem naming the Flume key (and the
//! Sluice option to use instead where there is one); a key Flume reads but that changes
//! nothing here is accepted and listed in [`Provenance::no_effect`].

mod kafka_security;

use std::collections::{BTreeMap, BTreeSet};

use sluice_channels::config::Problem;

use super::Provenance;
use super::properties::Property;
use crate::config::tree::{Map, Node, Scalar};

/// Flume's default topic when `kafka.topic` (and the old `topic`) is not set.
const DEFAULT_TOPIC: &str = "default-flume-topic";
/// The header names Sluice fills itself on every event.
const RESERVED: &[&str] = &["path", "file", "host", "source", "offset"];
/// Flume's LINE deserializer's default `maxLineLength`.
const FLUME_MAX_LINE: &str = "2048";

/// The agent names a Flume file defines: the first part of every key that names a
/// component list or a component (`a1.sources = r1`, `a1.sinks.k1.type = ...`).
pub fn agent_names(props: &[Property]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in props {
        if let Some((agent, rest)) = p.key.split_once('.') {
            let section = rest.split('.').next().unwrap_or("");
            if matches!(section, "sources" | "channels" | "sinks" | "sinkgroups")
                && !names.iter().any(|n| n == agent)
            {
                names.push(agent.to_owned());
            }
        }
    }
    names
}

/// The agent `agent` of `props`, as the tree of its options, and where they came from.
/// `sys` gives the `-D` properties of the command line (`flume.monitoring.*`).
pub fn translate(
    props: &[Property],
    agent: &str,
    sys: &dyn Fn(&str) -> Option<String>,
) -> Result<(Node, Provenance), Vec<Problem>> {
    let mut tr = Translator {
        headers_set: Default::default(),
        feeds: Vec::new(),
        aliases: BTreeMap::new(),
        prov: Provenance::default(),
        problems: Vec::new(),
    };
    let prefix = format!("{agent}.");
    let defined: BTreeSet<&str> = props.iter().map(|p| p.key.as_str()).collect();
    for p in props.iter().filter(|p| p.key.starts_with(&prefix)) {
        match env_reference(p.raw.trim(), &defined) {
            Some(r) => {
                tr.prov.env_refs.insert(p.key.clone(), (r, p.value.clone()));
            }
            None if p.raw.contains("${") => tr.prov.substituted.push(p.key.clone()),
            None => {}
        }
    }
    let mut lists: BTreeMap<&str, (String, String)> = BTreeMap::new();
    let mut comps: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for p in props {
        let Some(rest) = p.key.strip_prefix(&prefix) else {
            continue;
        };
        match rest.split_once('.') {
            None if matches!(rest, "sources" | "channels" | "sinks" | "sinkgroups") => {
                lists.insert(
                    match rest {
                        "sources" => "sources",
                        "channels" => "channels",
                        "sinks" => "sinks",
                        _ => "sinkgroups",
                    },
                    (p.key.clone(), p.value.clone()),
                );
            }
            None if rest == "configfilters" => tr.problem(
                &p.key,
                "config filters are not supported: write `${env:NAME}` in the values instead",
            ),
            Some((section, comp))
                if matches!(section, "sources" | "channels" | "sinks" | "sinkgroups") =>
            {
                let (name, key) = comp.split_once('.').unwrap_or((comp, ""));
                comps
                    .entry((section.to_owned(), name.to_owned()))
                    .or_default()
                    .push((key.to_owned(), p.value.clone()));
            }
            Some(("configfilters", _)) => {}
            _ => tr.warn(
                &p.key,
                "not a key Flume reads (a typo?); ignored, as Flume does",
            ),
        }
    }
    let mut out = Map::default();
    for (section, sluice) in [
        ("sources", "sources"),
        ("channels", "channels"),
        ("sinks", "sinks"),
        ("sinkgroups", "sink_groups"),
    ] {
        let listed: Vec<String> = lists
            .get(section)
            .map(|(_, v)| {
                // Flume keeps the names in a set: a name listed twice is one component.
                let mut names: Vec<String> = Vec::new();
                for n in v.split_whitespace() {
                    if !names.iter().any(|m| m == n) {
                        names.push(n.to_owned());
                    }
                }
                names
            })
            .unwrap_or_default();
        if let Some((key, _)) = lists.get(section) {
            tr.prov
                .keys
                .insert(format!("{agent}.{sluice}"), key.clone());
        }
        let mut members = Map::default();
        for name in &listed {
            let props = comps
                .remove(&(section.to_owned(), name.clone()))
                .unwrap_or_default();
            let at = format!("{agent}.{section}.{name}");
            let out_at = format!("{agent}.{sluice}.{name}");
            tr.prov.keys.insert(out_at.clone(), at.clone());
            if props.is_empty() {
                tr.problem(
                    &format!("{agent}.{section}"),
                    &format!("`{name}` has no properties (Flume drops it)"),
                );
                continue;
            }
            let mut c = Comp::new(at, out_at, props);
            match section {
                "sources" => tr.source(&mut c),
                "channels" => tr.channel(&mut c),
                "sinks" => tr.sink(&mut c),
                _ => tr.group(&mut c),
            }
            tr.leftovers(&c);
            members.insert(text(name), Node::Map(c.out));
        }
        if section == "sinkgroups" && members.named().next().is_none() {
            continue;
        }
        out.insert(text(sluice), Node::Map(members));
    }
    for ((section, name), props) in comps {
        for (key, _) in props {
            tr.warn(
                &format!("{agent}.{section}.{name}.{key}"),
                &format!("`{name}` is not in {agent}.{section} (a typo?); ignored, as Flume does"),
            );
        }
    }
    if let Some(kind) = sys("flume.monitoring.type") {
        if kind.eq_ignore_ascii_case("http") {
            let port = sys("flume.monitoring.port").unwrap_or_else(|| "41414".into());
            out.insert(text("http"), text(&format!("0.0.0.0:{port}")));
            tr.prov
                .keys
                .insert(format!("{agent}.http"), "-Dflume.monitoring.port".into());
            tr.warn(
                "-Dflume.monitoring.type",
                "Sluice serves Prometheus metrics at /metrics and a health check at /health on \
                 this port, not Flume's JSON",
            );
        } else {
            tr.problem(
                "-Dflume.monitoring.type",
                &format!("`{kind}` is not supported: Sluice serves Prometheus metrics over http"),
            );
        }
    }
    if tr.problems.is_empty() {
        Ok((Node::Map(out), tr.prov))
    } else {
        Err(tr.problems)
    }
}

/// A text value.
fn text(s: &str) -> Node {
    Node::Scalar(Scalar::Str(s.to_owned()))
}

/// A list of text values.
fn texts<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Node {
    Node::List(items.into_iter().map(|s| text(s.as_ref())).collect())
}

/// One Flume component: its properties (relative to it) and which were read, and the Sluice
/// options made of them.
struct Comp {
    /// The Flume key of the component (`a1.sources.r1`).
    at: String,
    /// The Sluice key path of the component (`a1.sources.r1`).
    out_at: String,
    props: Vec<(String, String)>,
    used: Vec<bool>,
    out: Map,
}

impl Comp {
    fn new(at: String, out_at: String, props: Vec<(String, String)>) -> Self {
        let used = vec![false; props.len()];
        Comp {
            at,
            out_at,
            props,
            used,
            out: Map::default(),
        }
    }

    /// The value of `key`, marked read.
    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.props.iter().position(|(k, _)| k == key)?;
        self.used[i] = true;
        Some(self.props[i].1.clone())
    }

    /// The keys under `prefix.` (the part after it, and the value), marked read.
    fn take_under(&mut self, prefix: &str) -> Vec<(String, String)> {
        let p = format!("{prefix}.");
        let mut out = Vec::new();
        for (i, (k, v)) in self.props.iter().enumerate() {
            if let Some(rest) = k.strip_prefix(&p) {
                self.used[i] = true;
                out.push((rest.to_owned(), v.clone()));
            }
        }
        out
    }

    /// The Flume key of `key`.
    fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }
}

struct Translator {
    /// The names of the headers the sources translated so far may set on events.
    headers_set: BTreeSet<String>,
    /// Each source translated: the channels it puts into and the headers it may set.
    feeds: Vec<(Vec<String>, BTreeSet<String>)>,
    /// Flume header names that stand for a field Sluice sets itself (`file` for `path`).
    aliases: BTreeMap<String, String>,
    prov: Provenance,
    problems: Vec<Problem>,
}

/// A Flume boolean: `true` in any case is true, anything else false (Java's
/// `Boolean.parseBoolean`).
fn flag(v: &str) -> bool {
    v.eq_ignore_ascii_case("true")
}

impl Translator {
    fn problem(&mut self, key: &str, message: &str) {
        self.problems.push(Problem::new(key, message));
    }

    fn no_effect(&mut self, key: &str, why: &str) {
        self.prov.no_effect.push(Problem::new(key, why));
    }

    fn warn(&mut self, key: &str, message: &str) {
        self.prov.warnings.push(Problem::new(key, message));
    }

    /// Records that the Flume header `name` is Sluice's `field` (`fileHeaderKey = file` is
    /// `path`), for the Kafka sinks' `header.*`; `key` is the Flume key that said so.
    fn alias(&mut self, key: &str, name: &str, field: &str) {
        match self.aliases.get(name) {
            Some(other) if other != field => self.problem(
                key,
                &format!("the header `{name}` already stands for Sluice's `{other}` in another source; use another name"),
            ),
            _ => {
                self.aliases.insert(name.to_owned(), field.to_owned());
                self.headers_set.insert(name.to_owned());
            }
        }
    }

    /// Sets the Sluice option `option` of `c` to `value`, written as the Flume key `from`.
    fn set(&mut self, c: &mut Comp, option: &str, value: Node, from: &str) {
        self.prov
            .keys
            .insert(format!("{}.{option}", c.out_at), c.key(from));
        c.out.insert(text(option), value);
    }

    /// Copies Flume's `from` to Sluice's `option` as text, when it is set.
    fn copy(&mut self, c: &mut Comp, from: &str, option: &str) -> bool {
        match c.take(from) {
            Some(v) => {
                self.set(c, option, text(&v), from);
                true
            }
            None => false,
        }
    }

    /// Copies Flume's `from`, a whole number of milliseconds, to the duration `option`.
    fn millis(&mut self, c: &mut Comp, from: &str, option: &str) {
        if let Some(v) = c.take(from) {
            match v.parse::<u64>() {
                Ok(ms) => self.set(c, option, text(&format!("{ms}ms")), from),
                Err(_) => self.problem(
                    &c.key(from),
                    &format!("`{v}` is not a whole number of milliseconds"),
                ),
            }
        }
    }

    /// Marks `keys` of `c` read, each listed as having no effect, with `why`.
    fn ignore(&mut self, c: &mut Comp, keys: &[&str], why: &str) {
        for k in keys {
            if c.take(k).is_some() {
                self.no_effect(&c.key(k), why);
            }
        }
    }

    /// Every property of `c` that no translation read: an error, Sluice does not know what
    /// it would mean.
    fn leftovers(&mut self, c: &Comp) {
        for ((k, _), used) in c.props.iter().zip(&c.used) {
            if !used && !k.is_empty() {
                self.problem(
                    &c.key(k),
                    "not a key Sluice supports for this component (see docs/flume.md)",
                );
            }
        }
    }

    /// The Sluice type of a component from Flume's `type`, matched case-insensitively for
    /// aliases and exactly for class names; a problem when Sluice has no such component.
    fn kind<'a>(
        &mut self,
        c: &mut Comp,
        known: &[(&'a str, &str, &'a str)],
        what: &str,
    ) -> Option<&'a str> {
        let Some(ty) = c.take("type") else {
            self.problem(&c.key("type"), "missing");
            return None;
        };
        for (alias, class, kind) in known {
            if ty.eq_ignore_ascii_case(alias) || ty == *class {
                return Some(kind);
            }
        }
        c.used.iter_mut().for_each(|u| *u = true);
        let supported: Vec<&str> = known
            .iter()
            .map(|(a, class, _)| if a.is_empty() { *class } else { *a })
            .collect();
        self.problem(
            &c.key("type"),
            &format!(
                "{what} `{ty}` is not supported by Sluice (supported: {})",
                supported.join(", ")
            ),
        );
        None
    }

    fn source(&mut self, c: &mut Comp) {
        let Some(kind) = self.kind(
            c,
            &[
                (
                    "spooldir",
                    "org.apache.flume.source.SpoolDirectorySource",
                    "spooldir",
                ),
                (
                    "taildir",
                    "org.apache.flume.source.taildir.TaildirSource",
                    "taildir",
                ),
                ("exec", "org.apache.flume.source.ExecSource", "exec"),
            ],
            "source type",
        ) else {
            return;
        };
        let channels: Vec<String> = match c.take("channels") {
            Some(v) => {
                let list: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                self.set(c, "channels", texts(&list), "channels");
                list
            }
            None => {
                self.problem(&c.key("channels"), "missing");
                Vec::new()
            }
        };
        if c.take("channel").is_some() {
            self.problem(
                &c.key("channel"),
                "a source names its channels with `channels` (Flume ignores `channel` and drops the source)",
            );
        }
        match kind {
            "spooldir" => self.spooldir(c),
            "taildir" => self.taildir(c),
            _ => self.exec(c),
        }
        self.selector(c);
        self.interceptors(c);
        let headers = std::mem::take(&mut self.headers_set);
        self.feeds.push((channels, headers));
    }

    fn spooldir(&mut self, c: &mut Comp) {
        self.set(c, "type", text("spooldir"), "type");
        if !self.copy(c, "spoolDir", "dir") {
            self.problem(&c.key("spoolDir"), "missing");
        }
        self.copy(c, "fileSuffix", "completed_suffix");
        if let Some(v) = c.take("deletePolicy") {
            match v.to_ascii_lowercase().as_str() {
                "never" => self.set(c, "after_read", text("rename"), "deletePolicy"),
                "immediate" => self.set(c, "after_read", text("delete"), "deletePolicy"),
                _ => self.problem(
                    &c.key("deletePolicy"),
                    &format!("`{v}` is not one of: never, immediate"),
                ),
            }
        }
        if let Some(v) = c.take("trackingPolicy")
            && !v.eq_ignore_ascii_case("rename")
        {
            self.problem(
                &c.key("trackingPolicy"),
                &format!("`{v}` is not supported: Sluice renames a file once read (trackingPolicy = rename) or deletes it (deletePolicy = immediate)"),
            );
        }
        self.ignore(
            c,
            &["trackerDir"],
            "Sluice keeps no tracker folder: it renames or deletes files once read",
        );
        for (pattern, option, default) in [
            ("includePattern", "include", "^.*$"),
            ("ignorePattern", "ignore", "^$"),
        ] {
            if let Some(re) = c.take(pattern) {
                if re == default {
                    continue;
                }
                match regex_to_glob(&re) {
                    Some(glob) => self.set(c, option, texts([glob]), pattern),
                    None => self.problem(
                        &c.key(pattern),
                        &format!("`{re}` cannot be written as a file name glob, which Sluice's spooldir `{option}` takes; use a pattern such as `^.*\\\\.log$` (a properties file needs `\\\\` for the regex's `\\`)"),
                    ),
                }
            }
        }
        if let Some(v) = c.take("consumeOrder") {
            match v.to_ascii_lowercase().as_str() {
                "oldest" | "youngest" => {
                    self.set(c, "order", text(&v.to_ascii_lowercase()), "consumeOrder")
                }
                "random" => self.no_effect(
                    &c.key("consumeOrder"),
                    "Sluice reads the oldest file first, one possible `random` order",
                ),
                _ => self.problem(
                    &c.key("consumeOrder"),
                    &format!("`{v}` is not one of: oldest, youngest, random"),
                ),
            }
        }
        self.millis(c, "pollDelay", "poll_interval");
        if c.take("recursiveDirectorySearch").is_some_and(|v| flag(&v)) {
            self.problem(
                &c.key("recursiveDirectorySearch"),
                "not supported: Sluice's spooldir reads one folder; use one source per folder",
            );
        }
        self.copy(c, "batchSize", "batch_size");
        self.ignore(
            c,
            &["maxBackoff"],
            "Sluice waits for room in the channel without polling",
        );
        self.ignore(c, &["bufferMaxLines"], "Flume ignores it too");
        for key in ["inputCharset", "deserializer.outputCharset"] {
            if let Some(v) = c.take(key)
                && !is_utf8(&v)
            {
                self.problem(
                    &c.key(key),
                    &format!("`{v}` is not supported by the spooldir source: Sluice reads spooled files as bytes, UTF-8 or not (taildir has `encoding`)"),
                );
            }
        }
        if let Some(v) = c.take("decodeErrorPolicy") {
            self.no_effect(
                &c.key("decodeErrorPolicy"),
                &format!(
                    "Sluice passes bytes that are not UTF-8 through as they are (Flume: `{v}`)"
                ),
            );
        }
        if let Some(v) = c.take("deserializer")
            && !v.eq_ignore_ascii_case("LINE")
        {
            self.problem(
                &c.key("deserializer"),
                &format!("`{v}` is not supported: Sluice reads lines (deserializer = LINE); see `multiline` for events of several lines"),
            );
        }
        let max = c
            .take("deserializer.maxLineLength")
            .map(|v| ("deserializer.maxLineLength", v))
            .or_else(|| {
                c.take("bufferMaxLineLength")
                    .map(|v| ("bufferMaxLineLength", v))
            });
        let (key, len) = max.unwrap_or(("deserializer.maxLineLength", FLUME_MAX_LINE.into()));
        self.warn(
            &c.key(key),
            &format!("Flume cuts lines longer than {len} characters into several events; Sluice keeps each line whole (up to max_line_bytes, 960 KiB) as one event"),
        );
        self.warn(
            &c.key("spoolDir"),
            "Flume stops reading the folder when a spooled file changes after it was placed there; Sluice waits until a file stops changing (ready_after) and keeps going",
        );
        self.file_headers(c);
    }

    /// `fileHeader`/`fileHeaderKey` and `basenameHeader`/`basenameHeaderKey`: Sluice's
    /// `path` and `file` headers under Flume's names.
    fn file_headers(&mut self, c: &mut Comp) {
        for (on, key, default, sluice) in [
            ("fileHeader", "fileHeaderKey", "file", "path"),
            ("basenameHeader", "basenameHeaderKey", "basename", "file"),
        ] {
            let name = c.take(key).unwrap_or_else(|| default.to_owned());
            if c.take(on).is_some_and(|v| flag(&v)) {
                self.alias(&c.key(key), &name, sluice);
            }
        }
    }

    fn taildir(&mut self, c: &mut Comp) {
        self.set(c, "type", text("taildir"), "type");
        let groups: Vec<String> = match c.take("filegroups") {
            Some(v) => v.split_whitespace().map(str::to_owned).collect(),
            None => {
                self.problem(&c.key("filegroups"), "missing");
                Vec::new()
            }
        };
        let headers = c.take_under("headers");
        let mut paths = Vec::new();
        for g in &groups {
            let key = format!("filegroups.{g}");
            let Some(path) = c.take(&key) else {
                self.problem(&c.key(&key), "missing (Flume drops the group)");
                continue;
            };
            let Some(glob) = taildir_glob(&path) else {
                self.problem(
                    &c.key(&key),
                    &format!("`{path}`: its file name pattern cannot be written as a glob, which Sluice's taildir `paths` take; use a pattern such as `/var/log/app/.*\\\\.log` (a properties file needs `\\\\` for the regex's `\\`)"),
                );
                continue;
            };
            let group_headers: Vec<(Node, Node)> = headers
                .iter()
                .filter_map(|(k, v)| {
                    let (hg, name) = k.split_once('.')?;
                    (hg == g).then(|| {
                        self.headers_set.insert(name.to_owned());
                        (text(name), text(v))
                    })
                })
                .collect();
            let at = format!("paths[{}]", paths.len());
            self.prov
                .keys
                .insert(format!("{}.{at}", c.out_at), c.key(&key));
            if group_headers.is_empty() {
                paths.push(text(&glob));
            } else {
                let mut m = Map::default();
                m.insert(text("glob"), text(&glob));
                m.insert(
                    text("headers"),
                    Node::Map(group_headers.into_iter().collect()),
                );
                paths.push(Node::Map(m));
            }
        }
        for (k, _) in &headers {
            let group = k.split_once('.').map_or(k.as_str(), |(g, _)| g);
            if !groups.iter().any(|g| g == group) || !k.contains('.') {
                self.problem(
                    &c.key(&format!("headers.{k}")),
                    "names no file group of `filegroups` (write headers.GROUP.NAME = VALUE)",
                );
            }
        }
        c.out.insert(text("paths"), Node::List(paths));
        self.prov
            .keys
            .insert(format!("{}.paths", c.out_at), c.key("filegroups"));
        let flume_positions = match c.take("positionFile") {
            Some(p) => {
                let own = format!("{p}.sluice");
                self.set(c, "position_file", text(&own), "positionFile");
                Some(p)
            }
            None => std::env::var("HOME")
                .ok()
                .map(|h| format!("{h}/.flume/taildir_position.json")),
        };
        if let Some(p) = flume_positions {
            self.set(c, "import_flume_positions", text(&p), "positionFile");
            self.warn(
                &c.key("positionFile"),
                &format!("Sluice keeps its positions in its own file, in its own format; on its first run it starts from Flume's, in `{p}`, where they exist"),
            );
        }
        if c.take("skipToEnd").is_some_and(|v| flag(&v)) {
            self.set(c, "read_from", text("end"), "skipToEnd");
        }
        self.millis(c, "idleTimeout", "idle_timeout");
        self.copy(c, "batchSize", "batch_size");
        self.ignore(
            c,
            &["writePosInterval"],
            "Sluice saves a file's position as soon as its events are safe in the channel",
        );
        self.ignore(
            c,
            &[
                "maxBatchCount",
                "backoffSleepIncrement",
                "maxBackoffSleep",
                "cachePatternMatching",
            ],
            "Sluice schedules reads itself (files take turns; new lines wake it through inotify)",
        );
        if c.take("byteOffsetHeader").is_some_and(|v| flag(&v)) {
            self.alias(&c.key("byteOffsetHeader"), "byteoffset", "offset");
        }
        self.file_headers(c);
    }

    fn exec(&mut self, c: &mut Comp) {
        let Some(command) = c.take("command") else {
            self.problem(&c.key("command"), "missing");
            return;
        };
        let words: Vec<&str> = command.split_whitespace().collect();
        let file = match words.as_slice() {
            ["tail", "-F" | "-f" | "--follow=name" | "--follow", file] => Some((*file, None)),
            ["tail", "-F" | "-f", "-n", n, file] | ["tail", "-n", n, "-F" | "-f", file] => {
                Some((*file, Some(*n)))
            }
            _ => None,
        };
        // `-n +N` prints the file from line N: from its start, as far as Sluice goes.
        let from_start = matches!(file, Some((_, Some(n))) if n.starts_with('+'));
        let file = file.map(|(f, _)| f);
        let Some(file) = file else {
            c.used.iter_mut().for_each(|u| *u = true);
            self.problem(
                &c.key("command"),
                &format!("`{command}`: Sluice runs no commands; only `tail -F FILE` (or -f) is supported, as a taildir source on FILE. For other commands write the output to a file and use a taildir source"),
            );
            return;
        };
        self.set(c, "type", text("taildir"), "type");
        self.set(c, "paths", texts([file]), "command");
        let (read_from, why) = if from_start {
            ("beginning", "from its start, as `-n +N` does")
        } else {
            ("end", "from its end (`tail` would repeat its last lines)")
        };
        self.set(c, "read_from", text(read_from), "command");
        self.warn(
            &c.key("command"),
            &format!("run as a taildir source reading the file {why}: Sluice follows it itself and remembers its position, so a restart neither loses nor repeats lines"),
        );
        if let Some(v) = c.take("shell") {
            self.no_effect(
                &c.key("shell"),
                &format!("no command is run (Flume: `{v}`)"),
            );
        }
        self.ignore(
            c,
            &["restart", "restartThrottle", "logStdErr", "batchTimeout"],
            "no command is run: Sluice follows the file itself",
        );
        self.copy(c, "batchSize", "batch_size");
        if let Some(v) = c.take("charset")
            && !is_utf8(&v)
        {
            self.set(c, "encoding", text(&v), "charset");
        }
    }

    /// `selector.*` of a source.
    fn selector(&mut self, c: &mut Comp) {
        let sel = c.take_under("selector");
        if sel.is_empty() {
            return;
        }
        let get = |k: &str| sel.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let ty = get("type").unwrap_or_else(|| "replicating".into());
        let at = format!("{}.selector", c.out_at);
        let key = |k: &str| format!("{}.selector.{k}", c.at);
        let mut m = Map::default();
        let list = |v: &str| texts(v.split_whitespace());
        let kind = if ty.eq_ignore_ascii_case("replicating")
            || ty == "org.apache.flume.channel.ReplicatingChannelSelector"
        {
            "replicating"
        } else if ty.eq_ignore_ascii_case("multiplexing")
            || ty == "org.apache.flume.channel.MultiplexingChannelSelector"
        {
            "multiplexing"
        } else {
            self.problem(
                &key("type"),
                &format!("selector `{ty}` is not supported (supported: replicating, multiplexing; Sluice's `partitioned` spreads files over channels keeping each file's order)"),
            );
            return;
        };
        m.insert(text("type"), text(kind));
        self.prov.keys.insert(format!("{at}.type"), key("type"));
        let mut mapping = Map::default();
        let mut optional_by = Map::default();
        for (k, v) in &sel {
            match (kind, k.split_once('.')) {
                (_, None) if k == "type" => {}
                ("replicating", None) if k == "optional" => {
                    m.insert(text("optional"), list(v));
                    self.prov.keys.insert(format!("{at}.optional"), key(k));
                }
                ("multiplexing", None) if k == "header" || k == "default" => {
                    let node = if k == "header" { text(v) } else { list(v) };
                    m.insert(text(k), node);
                    self.prov.keys.insert(format!("{at}.{k}"), key(k));
                }
                ("multiplexing", Some(("mapping", value))) => {
                    mapping.insert(text(value), list(v));
                    self.prov
                        .keys
                        .insert(format!("{at}.mapping.{value}"), key(k));
                }
                ("multiplexing", Some(("optional", value))) => {
                    optional_by.insert(text(value), list(v));
                    self.prov
                        .keys
                        .insert(format!("{at}.optional.{value}"), key(k));
                }
                _ => self.problem(&key(k), &format!("not a key of the {kind} selector")),
            }
        }
        if kind == "multiplexing" {
            if get("header").is_none() {
                m.insert(text("header"), text("flume.selector.header"));
            }
            m.insert(text("mapping"), Node::Map(mapping));
            if optional_by.named().next().is_some() {
                m.insert(text("optional"), Node::Map(optional_by));
            }
        }
        c.out.insert(text("selector"), Node::Map(m));
        self.prov.keys.insert(at, format!("{}.selector", c.at));
    }

    /// `interceptors` of a source.
    fn interceptors(&mut self, c: &mut Comp) {
        let Some(names) = c.take("interceptors") else {
            return;
        };
        let all = c.take_under("interceptors");
        let mut list = Vec::new();
        for name in names.split_whitespace() {
            let own: Vec<(String, String)> = all
                .iter()
                .filter_map(|(k, v)| {
                    let rest = k.strip_prefix(name)?.strip_prefix('.')?;
                    Some((rest.to_owned(), v.clone()))
                })
                .collect();
            let mut ic = Comp::new(
                format!("{}.interceptors.{name}", c.at),
                format!("{}.interceptors[{}]", c.out_at, list.len()),
                own,
            );
            self.prov.keys.insert(ic.out_at.clone(), ic.at.clone());
            self.interceptor(&mut ic);
            self.leftovers(&ic);
            list.push(Node::Map(ic.out));
        }
        for (k, _) in &all {
            let owner = k.split('.').next().unwrap_or("");
            if !names.split_whitespace().any(|n| n == owner) {
                self.no_effect(
                    &c.key(&format!("interceptors.{k}")),
                    &format!(
                        "`{owner}` is not in {}.interceptors (Flume ignores it too)",
                        c.at
                    ),
                );
            }
        }
        self.set(c, "interceptors", Node::List(list), "interceptors");
    }

    fn interceptor(&mut self, c: &mut Comp) {
        const KNOWN: &[(&str, &str, &str)] = &[
            (
                "timestamp",
                "org.apache.flume.interceptor.TimestampInterceptor$Builder",
                "timestamp",
            ),
            (
                "host",
                "org.apache.flume.interceptor.HostInterceptor$Builder",
                "host",
            ),
            (
                "static",
                "org.apache.flume.interceptor.StaticInterceptor$Builder",
                "static",
            ),
            (
                "remove_header",
                "org.apache.flume.interceptor.RemoveHeaderInterceptor$Builder",
                "remove_header",
            ),
            (
                "regex_filter",
                "org.apache.flume.interceptor.RegexFilteringInterceptor$Builder",
                "regex_filter",
            ),
            (
                "regex_extractor",
                "org.apache.flume.interceptor.RegexExtractorInterceptor$Builder",
                "regex_extractor",
            ),
            (
                "search_replace",
                "org.apache.flume.interceptor.SearchAndReplaceInterceptor$Builder",
                "search_replace",
            ),
            (
                "",
                "org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder",
                "uuid",
            ),
        ];
        let Some(kind) = self.kind(c, KNOWN, "interceptor") else {
            return;
        };
        self.set(c, "type", text(kind), "type");
        let keep = |tr: &mut Self, c: &mut Comp| {
            if let Some(v) = c.take("preserveExisting") {
                tr.set(
                    c,
                    "preserve_existing",
                    Node::Scalar(Scalar::Bool(flag(&v))),
                    "preserveExisting",
                );
            }
        };
        let default_header = match kind {
            "timestamp" => Some("timestamp"),
            "uuid" => Some("id"),
            "host" => Some("host"),
            _ => None,
        };
        if let Some(d) = default_header {
            let name = ["headerName", "hostHeader"]
                .iter()
                .find_map(|k| c.props.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
                .unwrap_or_else(|| d.to_owned());
            self.headers_set.insert(name);
        }
        match kind {
            "timestamp" | "uuid" => {
                self.copy(c, "headerName", "header");
                keep(self, c);
                if kind == "uuid" {
                    self.copy(c, "prefix", "prefix");
                }
            }
            "host" => {
                self.copy(c, "hostHeader", "header");
                keep(self, c);
                if let Some(v) = c.take("useIP") {
                    self.set(c, "use_ip", Node::Scalar(Scalar::Bool(flag(&v))), "useIP");
                }
            }
            "static" => {
                let key = c.take("key").unwrap_or_else(|| "key".into());
                let value = c.take("value").unwrap_or_else(|| "value".into());
                self.set(c, "key", text(&key), "key");
                self.set(c, "value", text(&value), "value");
                self.headers_set.insert(key);
                keep(self, c);
            }
            "remove_header" => {
                self.copy(c, "withName", "with_name");
                let mut alternatives = Vec::new();
                if let Some(list) = c.take("fromList") {
                    let sep = c
                        .take("fromListSeparator")
                        .unwrap_or_else(|| r"\s*,\s*".into());
                    match regex::Regex::new(&sep) {
                        Ok(re) => alternatives
                            .extend(re.split(&list).filter(|n| !n.is_empty()).map(regex::escape)),
                        Err(e) => {
                            self.problem(&c.key("fromListSeparator"), &format!("bad regex: {e}"))
                        }
                    }
                }
                if let Some(m) = c.take("matching") {
                    alternatives.push(format!("(?:{})", java_regex(&m)));
                }
                if !alternatives.is_empty() {
                    let from = if c.props.iter().any(|(k, _)| k == "matching") {
                        "matching"
                    } else {
                        "fromList"
                    };
                    self.set(c, "matching", text(&alternatives.join("|")), from);
                }
            }
            "regex_filter" => {
                let re = c.take("regex").unwrap_or_else(|| ".*".into());
                self.set(c, "regex", text(&java_regex(&re)), "regex");
                if let Some(v) = c.take("excludeEvents") {
                    self.set(
                        c,
                        "exclude",
                        Node::Scalar(Scalar::Bool(flag(&v))),
                        "excludeEvents",
                    );
                }
            }
            "regex_extractor" => self.extractor(c),
            _ => {
                match c.take("searchPattern") {
                    Some(v) => self.set(c, "search", text(&java_regex(&v)), "searchPattern"),
                    None => self.problem(&c.key("searchPattern"), "missing"),
                }
                let with = c.take("replaceString").unwrap_or_default();
                self.set(
                    c,
                    "replace",
                    text(&java_replacement(&with)),
                    "replaceString",
                );
                if let Some(v) = c.take("charset")
                    && !is_utf8(&v)
                {
                    self.problem(&c.key("charset"), &format!("`{v}`: Sluice matches bodies as bytes, UTF-8 or not; only UTF-8 is supported here"));
                }
            }
        }
    }

    /// `regex_extractor`: Flume names the regex's groups with `serializers`, in order;
    /// Sluice's regex names them itself.
    fn extractor(&mut self, c: &mut Comp) {
        let Some(re) = c.take("regex") else {
            self.problem(&c.key("regex"), "missing");
            return;
        };
        let Some(serializers) = c.take("serializers") else {
            self.problem(&c.key("serializers"), "missing");
            return;
        };
        let mut names = Vec::new();
        for s in serializers.split_whitespace() {
            let name_key = format!("serializers.{s}.name");
            let type_key = format!("serializers.{s}.type");
            if let Some(ty) = c.take(&type_key)
                && ty != "DEFAULT"
                && ty
                    != "org.apache.flume.interceptor.RegexExtractorInterceptorPassThroughSerializer"
            {
                self.problem(&c.key(&type_key), &format!("`{ty}` is not supported: Sluice sets the matched text as it is (type DEFAULT)"));
            }
            match c.take(&name_key) {
                Some(n) if n.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') => {
                    self.headers_set.insert(n.clone());
                    names.push(n)
                }
                Some(n) => self.problem(&c.key(&name_key), &format!("`{n}`: Sluice names headers of a regex_extractor with letters, digits and `_` only")),
                None => self.problem(&c.key(&name_key), "missing"),
            }
        }
        match name_groups(&java_regex(&re), &names) {
            Some(named) => self.set(c, "regex", text(&named), "regex"),
            None => self.problem(
                &c.key("regex"),
                &format!(
                    "`{re}` has fewer capturing groups than serializers ({})",
                    names.len()
                ),
            ),
        }
    }

    fn channel(&mut self, c: &mut Comp) {
        let Some(kind) = self.kind(
            c,
            &[
                ("memory", "org.apache.flume.channel.MemoryChannel", "memory"),
                ("file", "org.apache.flume.channel.file.FileChannel", "file"),
            ],
            "channel type",
        ) else {
            return;
        };
        self.set(c, "type", text(kind), "type");
        let transactions = "Sluice has no transaction size: sources and sinks move whole batches";
        if kind == "memory" {
            if !self.copy(c, "capacity", "capacity") {
                imply(c, "capacity", text("100"));
            }
            match c.take("byteCapacity") {
                Some(v) => self.set(c, "capacity_bytes", text(&v), "byteCapacity"),
                None => imply(c, "capacity_bytes", text("16MiB")),
            }
            self.ignore(c, &["transactionCapacity"], transactions);
            self.ignore(c, &["keep-alive", "byteCapacityBufferPercentage"], "Sluice's sources wait for room in the channel as long as it takes; only event bodies count towards capacity_bytes");
            return;
        }
        let dirs = c.take("dataDirs");
        let first = dirs
            .as_deref()
            .and_then(|d| d.split(',').map(str::trim).find(|d| !d.is_empty()));
        match first {
            Some(d) => {
                let own = format!("{d}/sluice");
                self.set(c, "dir", text(&own), "dataDirs");
                self.warn(
                    &c.key("dataDirs"),
                    &format!("Sluice keeps its write-ahead log in `{own}`, in its own format: drain Flume's channel before switching, its events are not read"),
                );
            }
            None => {
                let own = format!("file-channel-{}", c.at.rsplit('.').next().unwrap_or("c"));
                self.set(c, "dir", text(&own), "dataDirs");
            }
        }
        if let Some(v) = c.take("capacity") {
            self.set(c, "capacity_events", text(&v), "capacity");
        }
        self.copy(c, "maxFileSize", "segment_size");
        self.copy(c, "minimumRequiredSpace", "min_free_space");
        match c.take("fsyncPerTransaction") {
            Some(v) if !flag(&v) => {
                self.set(c, "fsync", text("interval"), "fsyncPerTransaction");
                match c.take("fsyncInterval") {
                    Some(s) => match s.parse::<u64>() {
                        Ok(s) => {
                            self.set(c, "fsync_interval", text(&format!("{s}s")), "fsyncInterval")
                        }
                        Err(_) => self.problem(
                            &c.key("fsyncInterval"),
                            &format!("`{s}` is not a whole number of seconds"),
                        ),
                    },
                    None => imply(c, "fsync_interval", text("5s")),
                }
            }
            _ => self.ignore(
                c,
                &["fsyncInterval"],
                "used only with fsyncPerTransaction = false",
            ),
        }
        self.ignore(c, &["checkpointDir", "useDualCheckpoints", "backupCheckpointDir", "compressBackupCheckpoint", "checkpointInterval", "checkpointOnClose", "use-log-replay-v1", "use-fast-replay"], "Sluice's file channel keeps no separate checkpoint: its log is replayed from the last acknowledged position");
        self.ignore(c, &["transactionCapacity"], transactions);
        self.ignore(
            c,
            &["keep-alive"],
            "Sluice's sources wait for room in the channel as long as it takes",
        );
        if !c.take_under("encryption").is_empty() {
            self.problem(
                &c.key("encryption"),
                "an encrypted file channel is not supported",
            );
        }
    }

    fn sink(&mut self, c: &mut Comp) {
        let Some(kind) = self.kind(
            c,
            &[
                ("", "org.apache.flume.sink.kafka.KafkaSink", "kafka"),
                ("logger", "org.apache.flume.sink.LoggerSink", "console"),
            ],
            "sink type",
        ) else {
            return;
        };
        self.set(c, "type", text(kind), "type");
        match c.take("channel") {
            Some(v) => self.set(c, "channel", text(&v), "channel"),
            None => self.problem(
                &c.key("channel"),
                "missing (a sink names one `channel`; Flume drops a sink without one)",
            ),
        }
        if kind == "console" {
            self.ignore(
                c,
                &["maxBytesToLog"],
                "Sluice's console sink prints every event whole (Flume 1.11 ignores this key too)",
            );
            // Flume's logger prints each event's headers: those the sources of this channel set.
            let (_, names) = self.fed(c);
            if !names.is_empty() {
                imply(c, "headers", texts(&names));
            }
            return;
        }
        self.kafka(c);
    }

    /// The channel sink `c` drains, and the headers the sources putting into it may set.
    fn fed(&self, c: &Comp) -> (String, BTreeSet<String>) {
        let channel = c
            .out
            .get("channel")
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_owned();
        let headers = self
            .feeds
            .iter()
            .filter(|(channels, _)| channels.contains(&channel))
            .flat_map(|(_, h)| h.iter().cloned())
            .collect();
        (channel, headers)
    }

    fn kafka(&mut self, c: &mut Comp) {
        let brokers = c
            .take("kafka.bootstrap.servers")
            .map(|v| ("kafka.bootstrap.servers", v))
            .or_else(|| c.take("brokerList").map(|v| ("brokerList", v)));
        match brokers {
            Some((k, v)) => self.set(c, "brokers", text(&v), k),
            None => self.problem(&c.key("kafka.bootstrap.servers"), "missing"),
        }
        let topic = c
            .take("kafka.topic")
            .map(|v| ("kafka.topic", v))
            .or_else(|| c.take("topic").map(|v| ("topic", v)));
        let (topic_key, topic) = topic.unwrap_or(("kafka.topic", DEFAULT_TOPIC.into()));
        let override_on = c.take("allowTopicOverride").is_none_or(|v| flag(&v));
        let topic_header = c.take("topicHeader").unwrap_or_else(|| "topic".into());
        if !override_on && topic.contains("%{") {
            self.problem(&c.key(topic_key), "with allowTopicOverride = false Flume sends to this topic name as written, `%{` included; Sluice does not allow that character in a topic");
        }
        self.set(c, "topic", text(&topic), topic_key);
        let (channel, fed) = self.fed(c);
        let sets_key = fed.contains("key");
        if override_on {
            self.set(c, "topic_header", text(&topic_header), "topicHeader");
        }
        let batch = c
            .take("flumeBatchSize")
            .map(|v| ("flumeBatchSize", v))
            .or_else(|| c.take("batchSize").map(|v| ("batchSize", v)));
        if let Some((k, v)) = batch {
            self.set(c, "batch_size", text(&v), k);
        }
        imply(c, "key", text("%{key}"));
        imply(c, "empty_key", text("null"));
        let mut producer = c.take_under("kafka.producer");
        self.kafka_security(c, &mut producer);
        let acks = producer
            .iter()
            .find(|(k, _)| k == "acks")
            .map(|(_, v)| ("kafka.producer.acks", v.clone()))
            .or_else(|| c.take("requiredAcks").map(|v| ("requiredAcks", v)));
        match acks {
            Some((k, v)) if v != "all" && v != "-1" => self.warn(
                &c.key(k),
                &format!("Sluice delivers with acks = all: `{v}` can lose acknowledged records when a leader fails"),
            ),
            Some((k, _)) => self.no_effect(&c.key(k), "Sluice delivers with acks = all"),
            None => self.warn(
                &c.key("kafka.producer.acks"),
                "Sluice delivers with acks = all (Flume's default, 1, can lose acknowledged records when a leader fails)",
            ),
        }
        let mut passthrough = Map::default();
        for (k, v) in producer {
            let key = format!("kafka.producer.{k}");
            match k.as_str() {
                "acks" => {}
                "key.serializer" | "value.serializer" => {
                    self.no_effect(&c.key(&key), "Sluice sends keys and values as bytes")
                }
                "compression.type" => {
                    self.set(c, "compression", text(&v), &key);
                }
                "max.request.size" => {
                    self.set(c, "max_message_bytes", text(&v), &key);
                }
                "bootstrap.servers" => self.no_effect(
                    &c.key(&key),
                    "kafka.bootstrap.servers takes precedence, as in Flume",
                ),
                "sasl.jaas.config" | "ssl.truststore.location" | "ssl.keystore.location"
                | "ssl.truststore.password" | "ssl.keystore.password" | "buffer.memory"
                | "max.block.ms" | "interceptor.classes" | "partitioner.class" => self.problem(
                    &c.key(&key),
                    "a Java client setting with no librdkafka equivalent under this name; see docs/flume.md for what to write instead",
                ),
                _ => {
                    passthrough.insert(text(&k), text(&v));
                    self.prov
                        .keys
                        .insert(format!("{}.producer.{k}", c.out_at), c.key(&key));
                }
            }
        }
        if passthrough.named().next().is_some() {
            c.out.insert(text("producer"), Node::Map(passthrough));
        }
        let mut sent = Vec::new();
        for (flume, kafka) in c.take_under("header") {
            let from = self
                .aliases
                .get(&flume)
                .cloned()
                .unwrap_or_else(|| flume.clone());
            if RESERVED.contains(&from.as_str()) && from == flume && !fed.contains(&flume) {
                self.warn(
                    &c.key(&format!("header.{flume}")),
                    &format!("no source of channel `{channel}` sets a `{flume}` header, so Flume sends none; Sluice sends its own `{flume}` (the file's {})", match flume.as_str() { "path" => "path", "file" => "name", "host" => "host's name", "offset" => "offset of the line", _ => "source" }),
                );
            }
            sent.push(if from == kafka {
                text(&kafka)
            } else {
                Node::Map([(text(&kafka), text(&from))].into_iter().collect())
            });
            self.prov.keys.insert(
                format!("{}.headers[{}]", c.out_at, sent.len() - 1),
                c.key(&format!("header.{flume}")),
            );
        }
        c.out.insert(text("headers"), Node::List(sent));
        self.copy(c, "partitionIdHeader", "partition_header");
        self.copy(c, "defaultPartitionId", "partition");
        self.copy(c, "timestampHeader", "timestamp_header");
        if c.take("useFlumeEventFormat").is_some_and(|v| flag(&v)) {
            self.problem(
                &c.key("useFlumeEventFormat"),
                "Avro-wrapped Flume events are not supported: Sluice sends the body as the value and headers as Kafka headers",
            );
        }
        if c.take("kafka.flumeBatchSize").is_some() {
            self.no_effect(
                &c.key("kafka.flumeBatchSize"),
                "Flume ignores it too (the key is flumeBatchSize, without kafka.; Flume's user guide has it wrong)",
            );
        }
        for key in ["serializer.class", "key.serializer.class"] {
            if c.take(key).is_some() {
                self.no_effect(&c.key(key), "ignored by Flume 1.11 too");
            }
        }
        if !sets_key {
            self.warn(
                &c.key("type"),
                &format!("no source of channel `{channel}` sets a `key` header, so records have no key and Kafka spreads each file's lines over the partitions of `{topic}`, as in Flume: set one (a static interceptor with key = key) to keep each file's lines in order"),
            );
        }
    }

    fn group(&mut self, c: &mut Comp) {
        match c.take("sinks") {
            Some(v) => {
                let list: Vec<&str> = v.split_whitespace().collect();
                self.set(c, "sinks", texts(list), "sinks");
            }
            None => self.problem(&c.key("sinks"), "missing"),
        }
        let ty = c.take("processor.type");
        match ty.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("failover") | Some("org.apache.flume.sink.failoversinkprocessor") => {
                self.set(c, "processor", text("failover"), "processor.type");
            }
            Some("default") | Some("org.apache.flume.sink.defaultsinkprocessor") => {
                self.problem(
                    &c.key("processor.type"),
                    "a `default` group runs one sink: list the sink without a group",
                );
                return;
            }
            Some("load_balance") | Some("org.apache.flume.sink.loadbalancingsinkprocessor") => {
                self.problem(&c.key("processor.type"), "load_balance is not supported: it reorders a file's lines; Sluice's `partitioned` selector spreads files over channels and sinks, keeping each file's order");
                return;
            }
            Some(_) => {
                self.problem(
                    &c.key("processor.type"),
                    &format!(
                        "`{}` is not supported (supported: failover)",
                        ty.unwrap_or_default()
                    ),
                );
                return;
            }
            None => {
                self.problem(&c.key("processor.type"), "missing: Flume does not run the sinks of a group without one (supported: failover)");
                return;
            }
        }
        let mut priority = Map::default();
        for (sink, p) in c.take_under("processor.priority") {
            self.prov.keys.insert(
                format!("{}.priority.{sink}", c.out_at),
                c.key(&format!("processor.priority.{sink}")),
            );
            priority.insert(text(&sink), text(&p));
        }
        if priority.named().next().is_some() {
            c.out.insert(text("priority"), Node::Map(priority));
        }
        self.millis(c, "processor.maxpenalty", "max_penalty");
    }
}

/// Sets the Sluice option `option` of `c` to what Flume does when nothing is written.
fn imply(c: &mut Comp, option: &str, value: Node) {
    c.out.insert(text(option), value);
}

/// The YAML reference (`${NAME}` or `${NAME:-default}`) for a Flume value that is one whole
/// reference to the environment (`${env:NAME}`, or `${NAME}` naming no property), if it is.
fn env_reference(raw: &str, defined: &BTreeSet<&str>) -> Option<String> {
    let body = raw.strip_prefix("${")?.strip_suffix('}')?;
    if body.contains(['$', '{', '}']) {
        return None;
    }
    let (name, default) = match body.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (body, None),
    };
    let name = match name.strip_prefix("env:") {
        Some(n) => n,
        None if !name.contains(':') && !defined.contains(name) => name,
        None => return None,
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| match default {
        Some(d) => format!("${{{name}:-{}}}", d.replace('$', "$$")),
        None => format!("${{{name}}}"),
    })
}

/// Whether a Java charset name is UTF-8.
fn is_utf8(name: &str) -> bool {
    name.eq_ignore_ascii_case("utf-8") || name.eq_ignore_ascii_case("utf8")
}

/// A Java replacement string (`$1`, `${name}`, `\$`) as the regex crate writes it (`${1}`,
/// `${name}`, `$$`).
fn java_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(o) => out.push(o),
                None => {}
            },
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                // Java reads one digit, then more while they still name a group; one digit
                // covers groups 0 to 9, which is what configurations use.
                out.push_str("${");
                out.extend(chars.next());
                out.push('}');
            }
            c => out.push(c),
        }
    }
    out
}

/// `re` with its first capturing groups named `names`, in order (`(` not followed by `?`,
/// outside character classes and escapes); `None` when it has fewer groups than names.
fn name_groups(re: &str, names: &[String]) -> Option<String> {
    let mut out = String::with_capacity(re.len() + names.len() * 8);
    let mut names = names.iter();
    let mut chars = re.chars().peekable();
    let mut class = false;
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '\\' => out.extend(chars.next()),
            '[' if !class => class = true,
            ']' if class => class = false,
            '(' if !class && chars.peek() != Some(&'?') => {
                if let Some(n) = names.next() {
                    out.push_str("?P<");
                    out.push_str(n);
                    out.push('>');
                }
            }
            _ => {}
        }
    }
    names.next().is_none().then_some(out)
}

/// A Java regex as the regex crate reads it the way Java does: Java's `\w`, `\d`, `\s` and
/// `\b` (and their negations) are ASCII-only by default, the regex crate's are Unicode (`Über`
/// would be a word), so they are written out as ASCII classes. Everything else is passed on
/// as written (what the regex crate cannot read, look-arounds or back-references, is refused
/// when the agent compiles it).
fn java_regex(re: &str) -> String {
    let mut out = String::with_capacity(re.len());
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // Nested classes are valid inside a class too: `[\w-]` becomes `[[0-9A-Za-z_]-]`.
            Some('w') => out.push_str("[0-9A-Za-z_]"),
            Some('W') => out.push_str("[^0-9A-Za-z_]"),
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('s') => out.push_str(r"[\t\n\x0B\f\r ]"),
            Some('S') => out.push_str(r"[^\t\n\x0B\f\r ]"),
            Some('b') => out.push_str(r"(?-u:\b)"),
            Some('B') => out.push_str(r"(?-u:\B)"),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A Java regex matched against a whole file name, as a glob, when it is one in disguise:
/// anchors, literal characters (escaped or not), `.` for any one character, `.*` (or
/// `(.*)`, `(.)*`) for any run, `.+` for a run of one or more, `\d` and simple classes
/// (`[a-z]`, `[^.]`) for one character. `None` for anything else (alternation, other
/// repetition).
fn regex_to_glob(re: &str) -> Option<String> {
    let body = re.strip_prefix('^').unwrap_or(re);
    let body = body.strip_suffix('$').unwrap_or(body);
    let body = body.replace("(.*)", ".*").replace("(.)*", ".*");
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push('*');
            }
            '.' if chars.peek() == Some(&'+') => {
                chars.next();
                out.push_str("?*");
            }
            '.' => out.push('?'),
            '\\' => match chars.next()? {
                'd' => out.push_str("[0-9]"),
                c if c.is_ascii_alphanumeric() => return None,
                '*' | '?' | '[' | ']' => return None,
                c => out.push(c),
            },
            '[' => {
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('!');
                }
                loop {
                    match chars.next()? {
                        ']' => break,
                        '\\' | '[' => return None,
                        c => out.push(c),
                    }
                }
                out.push(']');
                if matches!(chars.peek(), Some('*' | '+' | '?' | '{')) {
                    return None;
                }
            }
            '*' | '+' | '?' | '(' | ')' | ']' | '{' | '}' | '|' | '^' | '$' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// A TAILDIR file group (`/dir/REGEX`) as a glob: the folder as written, the file name
/// pattern through [`regex_to_glob`].
fn taildir_glob(path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/')?;
    if dir.contains(['*', '?', '[']) {
        return None;
    }
    Some(format!("{dir}/{}", regex_to_glob(name)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_that_are_globs_in_disguise() {
        assert_eq!(regex_to_glob(r"^.*\.log$").as_deref(), Some("*.log"));
        assert_eq!(regex_to_glob(r"app-.\.log").as_deref(), Some("app-?.log"));
        assert_eq!(regex_to_glob(r".*").as_deref(), Some("*"));
        assert_eq!(regex_to_glob(r"a\-b").as_deref(), Some("a-b"));
        assert_eq!(regex_to_glob(r"^(.)*\.tmp$").as_deref(), Some("*.tmp"));
        assert_eq!(
            regex_to_glob(r"app\d\.log").as_deref(),
            Some("app[0-9].log")
        );
        assert_eq!(regex_to_glob(r"[^.].+").as_deref(), Some("[!.]?*"));
        for not in [
            r"(a|b)\.log",
            r"[0-9]+\.log",
            r"\w\.log",
            r"a?\.log",
            r"a\*",
            r"\d+",
        ] {
            assert_eq!(regex_to_glob(not), None, "{not}");
        }
        assert_eq!(
            taildir_glob(r"/var/log/app/.*log").as_deref(),
            Some("/var/log/app/*log")
        );
        assert_eq!(taildir_glob("/var/*/x.log"), None);
    }

    #[test]
    fn java_shorthand_classes_are_ascii() {
        assert_eq!(java_regex(r"^(\w+):"), "^([0-9A-Za-z_]+):");
        assert_eq!(
            java_regex(r"[\w.-]\d\S"),
            r"[[0-9A-Za-z_].-][0-9][^\t\n\x0B\f\r ]"
        );
        assert_eq!(java_regex(r"\bDEBUG\B\\w\."), r"(?-u:\b)DEBUG(?-u:\B)\\w\.");
        let re = regex::bytes::Regex::new(&java_regex(r"^(\w+)\s\bx")).unwrap();
        assert!(re.is_match(b"ab_1 x"));
        assert!(!re.is_match("Über x".as_bytes()));
        assert!(!re.is_match("ab\u{a0}x".as_bytes()));
        let b = regex::bytes::Regex::new(&java_regex(r"\bé")).unwrap();
        assert!(
            b.is_match("aé".as_bytes()),
            "é is not a word character in Java"
        );
    }

    #[test]
    fn java_replacements_and_group_names() {
        assert_eq!(java_replacement(r"$1a \$ ${n}"), "${1}a $$ ${n}");
        let names = vec!["level".to_owned(), "code".to_owned()];
        assert_eq!(
            name_groups(r"^(?:x)([A-Z]+) \((\d+)\) [(]", &names).as_deref(),
            Some(r"^(?:x)(?P<level>[A-Z]+) \((?P<code>\d+)\) [(]")
        );
        assert_eq!(name_groups("(a)", &names), None);
    }
}
