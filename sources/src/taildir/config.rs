//! The taildir source's options, as written under `sources.NAME` (without `type` and
//! `channel`), and their validation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use encoding_rs::Encoding;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use sluice_channels::config::Problem;
use sluice_channels::units::{ByteSize, HumanDuration};

use crate::framing::{LongLinePolicy, Newline};

/// Where a file seen for the first time is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// From its first byte.
    #[default]
    Beginning,
    /// From the end of its last complete line: only lines written from now on. Applies to the
    /// files found when the source starts; files that appear later are always read whole.
    End,
}

/// One entry of `paths`: a glob pattern and the static headers of the files it matches.
///
/// Written either as the pattern alone (`/var/log/app/*.log`) or as a mapping
/// `{ glob: /var/log/app/*.log, headers: { app: web } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSpec {
    /// The glob pattern: `*`, `?`, `[...]` within a path component, `**` for any depth of
    /// folders.
    pub glob: String,
    /// Headers added to every event of a file this pattern matches.
    pub headers: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for PathSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = PathSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a glob pattern, or a mapping with `glob` and `headers`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PathSpec, E> {
                Ok(PathSpec {
                    glob: v.to_owned(),
                    headers: BTreeMap::new(),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PathSpec, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Full {
                    glob: String,
                    #[serde(default)]
                    headers: BTreeMap<String, String>,
                }
                let f = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PathSpec {
                    glob: f.glob,
                    headers: f.headers,
                })
            }
        }
        d.deserialize_any(SpecVisitor)
    }
}

/// The taildir source's options.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailDirConfig {
    /// The files to follow: glob patterns, each with optional static headers.
    pub paths: Vec<PathSpec>,
    /// Globs of files never read. A glob with a `/` is matched against the whole path,
    /// one without against the file name (`*.gz`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where a file seen for the first time at startup is read from.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Where positions are kept (default: `positions.json` in the source's state folder).
    #[serde(default)]
    pub position_file: Option<PathBuf>,
    /// A Flume TAILDIR position file to start from when `position_file` does not exist yet
    /// (switching from Flume): files Flume was following resume where it stopped.
    #[serde(default)]
    pub import_flume_positions: Option<PathBuf>,
    /// The most lines put into the channel at once.
    #[serde(default = "crate::defaults::batch_size")]
    pub batch_size: usize,
    /// The longest line kept whole; longer lines follow `long_lines`.
    #[serde(default = "crate::defaults::max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// `split` (default: pieces of `max_line_bytes`, nothing lost) or `truncate`.
    #[serde(default)]
    pub long_lines: LongLinePolicy,
    /// How the files are written: `lines` (default), or a container runtime's `cri` or
    /// `docker_json`, whose messages become the events (see docs/container-logs.md).
    #[serde(default)]
    pub format: crate::Format,
    /// Joins consecutive lines of a file into one event (see docs/multiline.md).
    #[serde(default)]
    pub multiline: Option<crate::MultilineConfig>,
    /// The files' character encoding, transcoded to UTF-8 (a WHATWG label such as `gbk`,
    /// `gb18030`, `latin1`, `shift_jis`, `utf-16le`). Unset or `utf-8`: bytes pass untouched.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Flume's interceptors, applied to each line in order after framing (see
    /// docs/interceptors.md); none by default.
    #[serde(default)]
    pub interceptors: Vec<crate::InterceptorConfig>,
    /// A file not written for this long is closed; it is opened again when it grows.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Files not modified for this long when first seen are not read: they count as read to
    /// their end, and only lines appended later are read.
    #[serde(default)]
    pub ignore_older: Option<HumanDuration>,
    /// How often files are looked at where file-system events are not available (NFS, inotify
    /// limits), and how often rotated files are read until they are finished.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// How often the patterns are expanded again and every matched file is looked at, as a
    /// safety net under file-system events.
    #[serde(default = "default_scan_interval")]
    pub scan_interval: HumanDuration,
    /// How long a file that was rotated away (renamed, deleted, replaced) is still read after
    /// its last growth, for writers that keep writing to it for a while; then its last
    /// unterminated line is emitted and it is closed.
    #[serde(default = "default_rotate_wait")]
    pub rotate_wait: HumanDuration,
    /// Static headers added to every event of this source (a pattern's headers win).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The most files held open at once; idle files are closed to stay under it.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
}

fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(250))
}
fn default_scan_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_rotate_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_max_open_files() -> usize {
    512
}

/// Header names set by the source itself, which static headers may not use.
const RESERVED_HEADERS: [&str; 6] = [
    "source",
    "path",
    "file",
    "host",
    "fid",
    sluice_channels::REWRITES_HEADER,
];

/// How the configured encoding is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoding {
    /// The encoding to transcode from; `None` passes bytes through.
    pub encoding: Option<&'static Encoding>,
    /// How a line terminator looks in the file.
    pub newline: Newline,
}

impl TailDirConfig {
    /// Checks what serde cannot: patterns, sizes, durations, the encoding, header names;
    /// keys are relative to the source.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.paths.is_empty() {
            problems.push(Problem::new(
                "paths",
                "at least one glob pattern is required",
            ));
        }
        for (i, spec) in self.paths.iter().enumerate() {
            let key = format!("paths[{i}]");
            if spec.glob.is_empty() || spec.glob.ends_with('/') {
                problems.push(Problem::new(
                    key.clone(),
                    "must be a pattern of files, not folders",
                ));
            } else if let Err(e) = glob::Pattern::new(&spec.glob) {
                problems.push(Problem::new(
                    key.clone(),
                    format!("`{}` is not a valid glob: {e}", spec.glob),
                ));
            }
            check_headers(&format!("{key}.headers"), &spec.headers, &mut problems);
        }
        for (i, g) in self.exclude.iter().enumerate() {
            if let Err(e) = glob::Pattern::new(g) {
                problems.push(Problem::new(
                    format!("exclude[{i}]"),
                    format!("`{g}` is not a valid glob: {e}"),
                ));
            }
        }
        check_headers("headers", &self.headers, &mut problems);
        if let Some(p) = sluice_channels::config::batch_size_problem(self.batch_size) {
            problems.push(p);
        }
        if let Some(m) = &self.multiline {
            problems.extend(m.validate());
        }
        if self.max_line_bytes.0 < 2 {
            problems.push(Problem::new("max_line_bytes", "must be at least 2 bytes"));
        }
        if self.max_open_files == 0 {
            problems.push(Problem::new("max_open_files", "must be at least 1"));
        }
        for (key, d) in [
            ("idle_timeout", self.idle_timeout),
            ("poll_interval", self.poll_interval),
            ("scan_interval", self.scan_interval),
        ] {
            if d.0.is_zero() {
                problems.push(Problem::new(key, "must be longer than 0"));
            }
        }
        if let Err(e) = self.decoding() {
            problems.push(Problem::new("encoding", e));
        }
        problems.extend(crate::Interceptors::validate(&self.interceptors));
        problems
    }

    /// The encoding to transcode from and the terminator it implies.
    pub fn decoding(&self) -> Result<Decoding, String> {
        let Some(label) = self.encoding.as_deref() else {
            return Ok(Decoding {
                encoding: None,
                newline: Newline::Byte,
            });
        };
        let Some(enc) = Encoding::for_label(label.as_bytes()) else {
            return Err(format!(
                "unknown encoding `{label}` (use a WHATWG label such as gbk, gb18030, latin1, \
                 shift_jis, utf-16le)"
            ));
        };
        if enc == encoding_rs::REPLACEMENT {
            return Err(format!("`{label}` cannot be decoded"));
        }
        let newline = if enc == encoding_rs::UTF_16LE {
            Newline::Utf16Le
        } else if enc == encoding_rs::UTF_16BE {
            Newline::Utf16Be
        } else {
            Newline::Byte
        };
        let encoding = (enc != encoding_rs::UTF_8).then_some(enc);
        Ok(Decoding { encoding, newline })
    }
}

/// Refuses static headers under the names a file source sets itself.
pub(crate) fn check_headers(
    key: &str,
    headers: &BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) {
    for name in headers.keys() {
        if RESERVED_HEADERS.contains(&name.as_str()) {
            problems.push(Problem::new(
                format!("{key}.{name}"),
                format!(
                    "`{name}` is set by the source (reserved: {})",
                    RESERVED_HEADERS.join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests write options as JSON, a subset of YAML, so that the crate needs no YAML
    /// parser.
    fn parse(json: &str) -> TailDirConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn paths_take_plain_patterns_and_patterns_with_headers() {
        let c =
            parse(r#"{"paths": ["/a/*.log", {"glob": "/b/**/*.log", "headers": {"app": "b"}}]}"#);
        assert_eq!(c.paths[0].glob, "/a/*.log");
        assert!(c.paths[0].headers.is_empty());
        assert_eq!(c.paths[1].headers["app"], "b");
        assert!(c.validate().is_empty());
        assert_eq!(c.read_from, ReadFrom::Beginning);
        assert_eq!(c.decoding().unwrap().encoding, None);
    }

    #[test]
    fn unknown_keys_are_refused_at_every_level() {
        assert!(serde_json::from_str::<TailDirConfig>(r#"{"paths": ["/a"], "nope": 1}"#).is_err());
        let e = serde_json::from_str::<TailDirConfig>(r#"{"paths": [{"glob": "/a", "x": 1}]}"#);
        assert!(e.unwrap_err().to_string().contains("unknown field `x`"));
    }

    #[test]
    fn validation_names_each_bad_option() {
        let c = parse(
            r#"{"paths": ["/a/[", "/dir/"], "exclude": ["[x"], "batch_size": 0, "encoding": "klingon",
                "headers": {"fid": "x"}, "max_open_files": 0, "poll_interval": "0s"}"#,
        );
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "paths[0]",
                "paths[1]",
                "exclude[0]",
                "headers.fid",
                "batch_size",
                "max_open_files",
                "poll_interval",
                "encoding"
            ]
        );
    }

    #[test]
    fn encodings_resolve_to_a_decoder_and_a_terminator() {
        let mut c = parse(r#"{"paths": ["/a"], "encoding": "gbk"}"#);
        assert_eq!(c.decoding().unwrap().encoding, Some(encoding_rs::GBK));
        c.encoding = Some("UTF-16LE".into());
        assert_eq!(c.decoding().unwrap().newline, Newline::Utf16Le);
        c.encoding = Some("utf-8".into());
        assert_eq!(c.decoding().unwrap().encoding, None);
        c.encoding = Some("latin1".into());
        assert_eq!(
            c.decoding().unwrap().encoding,
            Some(encoding_rs::WINDOWS_1252)
        );
    }
}
