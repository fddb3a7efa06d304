//! `sluice convert`: a Flume agent's properties file printed as the Sluice YAML it runs as,
//! each option commented with the Flume key it came from, and what differs listed on top.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::config::flume::Provenance;
use crate::config::tree::{Map, Node, Scalar};
use crate::config::{self, Options};

/// Prints the YAML of agent `name` (or of every agent) of the Flume file `file`; exit 0, or
/// 2 with every problem when it cannot be converted.
pub fn run(file: &Path, name: Option<&str>, opts: &Options) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let names = match name {
        Some(n) => vec![n.to_owned()],
        None => match config::agent_names(file, &with_flume(opts)) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("{}", crate::secrets::mask(&e.to_string()));
                return ExitCode::from(2);
            }
        },
    };
    let mut out = format!("# Converted by `sluice convert` from {}.\n", file.display());
    let mut ok = true;
    for n in &names {
        match convert(&bytes, file, n, &with_flume(opts)) {
            Ok(yaml) => out.push_str(&yaml),
            Err(e) => {
                ok = false;
                eprintln!("{}", crate::secrets::mask(&e.to_string()));
            }
        }
    }
    if !ok {
        return ExitCode::from(2);
    }
    print!("{}", crate::secrets::mask(&out));
    ExitCode::SUCCESS
}

fn with_flume(opts: &Options) -> Options {
    Options {
        format: Some(config::Format::Flume),
        ..opts.clone()
    }
}

/// The YAML of agent `name` of the Flume properties `bytes`, once it validates.
pub fn convert(
    bytes: &[u8],
    file: &Path,
    name: &str,
    opts: &Options,
) -> Result<String, config::ConfigError> {
    let (_, agents, prov) = config::flume_config(bytes, file, name, opts)?;
    let mut out = String::new();
    for w in &prov.warnings {
        comment(
            &mut out,
            "",
            &format!("differs from Flume: {}: {}", w.key, w.message),
        );
    }
    for n in &prov.no_effect {
        comment(
            &mut out,
            "",
            &format!("no effect: {}: {}", n.key, n.message),
        );
    }
    write_map(&mut out, &agents, "", 0, &prov);
    Ok(out)
}

/// `text` as YAML comment lines at `indent`.
fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}# {line}");
    }
}

fn write_map(out: &mut String, map: &Map, at: &str, depth: usize, prov: &Provenance) {
    let indent = "  ".repeat(depth);
    for (k, v) in map.named() {
        let path = if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        };
        let from = prov
            .keys
            .get(&path)
            .filter(|f| **f != path)
            .map(|f| format!("  # {f}"))
            .unwrap_or_default();
        match v {
            Node::Map(m) if m.named().next().is_some() => {
                let _ = writeln!(out, "{indent}{}:{from}", scalar(k));
                write_map(out, m, &path, depth + 1, prov);
            }
            Node::Map(_) => {
                let _ = writeln!(out, "{indent}{}: {{}}{from}", scalar(k));
            }
            Node::List(items) if items.iter().all(|i| matches!(i, Node::Scalar(_))) => {
                let items: Vec<String> = items.iter().map(node_scalar).collect();
                let _ = writeln!(out, "{indent}{}: [{}]{from}", scalar(k), items.join(", "));
            }
            Node::List(items) => {
                let _ = writeln!(out, "{indent}{}:{from}", scalar(k));
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    let item_from = prov
                        .keys
                        .get(&item_path)
                        .map(|f| format!("  # {f}"))
                        .unwrap_or_default();
                    match item {
                        Node::Map(m) => {
                            let _ = writeln!(out, "{indent}  -{item_from}");
                            write_map(out, m, &item_path, depth + 2, prov);
                        }
                        other => {
                            let _ = writeln!(out, "{indent}  - {}{item_from}", node_scalar(other));
                        }
                    }
                }
            }
            v => {
                let reference = prov.keys.get(&path).and_then(|f| prov.env_refs.get(f));
                let value = match (reference, v) {
                    (Some((r, now)), Node::Scalar(Scalar::Str(s))) if s == now => r.clone(),
                    (_, Node::Scalar(_)) if crate::secrets::is_secret_key(k) => {
                        let note = "a secret, not shown: write it here or ${file:/path}";
                        let from = match from.is_empty() {
                            true => format!("  # {note}"),
                            false => format!("{from} ({note})"),
                        };
                        let mask = sluice_channels::MASK;
                        let _ = writeln!(out, "{indent}{}: \"{mask}\"{from}", scalar(k));
                        continue;
                    }
                    _ => node_scalar(v),
                };
                let _ = writeln!(out, "{indent}{}: {value}{from}", scalar(k));
            }
        }
    }
}

/// A scalar node as YAML.
fn node_scalar(n: &Node) -> String {
    match n {
        Node::Scalar(Scalar::Str(s)) => scalar(s),
        Node::Scalar(s) => s.to_string(),
        Node::Null => "~".to_owned(),
        _ => String::new(),
    }
}

/// `s` as a YAML string: double-quoted, so that no text reads as another type or breaks the
/// syntax; `$` is written `$$`, which the YAML front end reads back as `$`.
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.'))
        && !s.contains('$')
        && !s.starts_with(|c: char| c.is_ascii_digit() || c == '+')
        && !s.starts_with(['-', '.'])
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out.replace('$', "$$")
}
