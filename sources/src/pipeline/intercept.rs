//! The interceptors stage: Flume's interceptors, applied to each line in the configured order
//! after framing, setting or removing headers, rewriting bodies or dropping lines.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use regex::bytes::Regex;
use serde::Deserialize;
use sluice_channels::config::Problem;
use sluice_channels::{DROPPED_FROM_HEADER, END_HEADER};

use super::lines::{Line, Stage};
use crate::{DroppedBy, SourceMetrics};

/// One interceptor as configured (`interceptors: [{ type: static, key: env, value: prod }]`),
/// with Flume's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InterceptorConfig {
    /// Sets `header` (default `timestamp`) to the time the line was read, in milliseconds
    /// since the epoch.
    Timestamp {
        /// The header set.
        #[serde(default = "timestamp_header")]
        header: String,
        /// Keeps a value the event has already.
        #[serde(default)]
        preserve_existing: bool,
    },
    /// Sets `header` (default `host`) to the agent host's IP address, or with `use_ip: false`
    /// to its name.
    Host {
        /// The header set.
        #[serde(default = "host_header")]
        header: String,
        /// Keeps a value the event has already.
        #[serde(default)]
        preserve_existing: bool,
        /// The address the host name resolves to (default, as in Flume) rather than the name.
        #[serde(default = "yes")]
        use_ip: bool,
    },
    /// Sets header `key` to `value`.
    Static {
        /// The header set.
        key: String,
        /// Its value.
        value: String,
        /// Keeps a value the event has already (default true, as in Flume).
        #[serde(default = "yes")]
        preserve_existing: bool,
    },
    /// Sets `header` (default `id`) to a random (version 4) UUID, after `prefix`.
    Uuid {
        /// The header set.
        #[serde(default = "uuid_header")]
        header: String,
        /// Keeps a value the event has already (default true, as in Flume).
        #[serde(default = "yes")]
        preserve_existing: bool,
        /// Put before the UUID.
        #[serde(default)]
        prefix: String,
    },
    /// Removes header `with_name`, and the headers the event set whose names match
    /// `matching`.
    RemoveHeader {
        /// An exact name; hides the origin's header of that name too.
        #[serde(default)]
        with_name: Option<String>,
        /// A regex matched against the whole name of each header the event set.
        #[serde(default)]
        matching: Option<String>,
    },
    /// Keeps only the lines `regex` matches somewhere in, or with `exclude`, drops them.
    RegexFilter {
        /// The pattern.
        regex: String,
        /// Drops the matching lines instead of keeping only them.
        #[serde(default)]
        exclude: bool,
    },
    /// Sets a header per named group of `regex` to what the group matched.
    RegexExtractor {
        /// The pattern, with at least one named group (`(?P<level>[A-Z]+)`).
        regex: String,
    },
    /// Replaces every match of `search` in the body with `replace` (`$1`, `${name}` refer to
    /// groups).
    SearchReplace {
        /// The pattern.
        search: String,
        /// The replacement; empty deletes the matches.
        #[serde(default)]
        replace: String,
    },
}

fn timestamp_header() -> String {
    "timestamp".into()
}

fn host_header() -> String {
    "host".into()
}

fn uuid_header() -> String {
    "id".into()
}

fn yes() -> bool {
    true
}

/// One interceptor ready to run: names interned, patterns compiled.
#[derive(Debug)]
enum Interceptor {
    Timestamp(Arc<str>, bool),
    Static(Arc<str>, Arc<str>, bool),
    Uuid(Arc<str>, Box<str>, bool),
    Remove(Option<Arc<str>>, Option<Regex>),
    Filter(Regex, bool, Arc<AtomicU64>),
    Extract(Regex, Vec<(usize, Arc<str>)>),
    Replace(Regex, Vec<u8>),
}

/// A source's interceptors, compiled once and shared by the stages of all its files, and the
/// source's counters, where the lines they drop are counted.
#[derive(Debug, Clone)]
pub struct Interceptors(Arc<[Interceptor]>, Arc<SourceMetrics>);

impl Interceptors {
    /// Compiles `list`, counting the lines it drops in `metrics`; `None` when it is empty (no
    /// stage at all). An error names the key at fault, relative to the source
    /// (`interceptors[1].regex`).
    pub fn compile(
        list: &[InterceptorConfig],
        metrics: &Arc<SourceMetrics>,
    ) -> Result<Option<Self>, Problem> {
        let mut installed = metrics.dropped_by.lock().unwrap_or_else(|e| e.into_inner());
        if list.is_empty() {
            installed.clear();
            return Ok(None);
        }
        let host = host_name();
        let mut compiled = list
            .iter()
            .enumerate()
            .map(|(i, c)| compile(i, c, &host))
            .collect::<Result<Vec<_>, _>>()?;
        // A source restarted by a reload counts on where it left off: the interceptor at the
        // same place of the list keeps its counter, as the source's total does.
        let dropped_by = compiled
            .iter_mut()
            .enumerate()
            .filter_map(|(index, i)| match i {
                Interceptor::Filter(_, _, lines) => {
                    if let Some(old) = installed
                        .iter()
                        .find(|d| d.index == index && d.kind == "regex_filter")
                    {
                        *lines = old.lines.clone();
                    }
                    Some(DroppedBy {
                        index,
                        kind: "regex_filter",
                        lines: lines.clone(),
                    })
                }
                _ => None,
            })
            .collect();
        *installed = dropped_by;
        drop(installed);
        Ok(Some(Interceptors(compiled.into(), metrics.clone())))
    }

    /// Checks `list`, naming the keys at fault (relative to the source).
    pub fn validate(list: &[InterceptorConfig]) -> Vec<Problem> {
        list.iter()
            .enumerate()
            .filter_map(|(i, c)| compile(i, c, "").err())
            .collect()
    }

    /// A stage running these interceptors over one file's lines.
    pub(crate) fn stage(&self) -> Intercept {
        Intercept {
            list: self.clone(),
            dropped_from: None,
            dropped: vec![0; self.0.len()],
            random: Random::default(),
            end: Arc::from(END_HEADER),
            from: Arc::from(DROPPED_FROM_HEADER),
        }
    }
}

fn pattern(i: usize, key: &str, re: &str) -> Result<Regex, Problem> {
    Regex::new(re).map_err(|e| {
        Problem::new(
            format!("interceptors[{i}].{key}"),
            format!("bad regex: {e}"),
        )
    })
}

fn name(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn compile(i: usize, c: &InterceptorConfig, host: &str) -> Result<Interceptor, Problem> {
    let empty = |key: &str| Problem::new(format!("interceptors[{i}].{key}"), "must not be empty");
    Ok(match c {
        InterceptorConfig::Timestamp {
            header,
            preserve_existing,
        } => {
            if header.is_empty() {
                return Err(empty("header"));
            }
            Interceptor::Timestamp(name(header), *preserve_existing)
        }
        InterceptorConfig::Host {
            header,
            preserve_existing,
            use_ip,
        } => {
            if header.is_empty() {
                return Err(empty("header"));
            }
            let value = if *use_ip && !host.is_empty() {
                host_address(host)
            } else {
                host.to_owned()
            };
            Interceptor::Static(name(header), name(&value), *preserve_existing)
        }
        InterceptorConfig::Static {
            key,
            value,
            preserve_existing,
        } => {
            if key.is_empty() {
                return Err(empty("key"));
            }
            Interceptor::Static(name(key), name(value), *preserve_existing)
        }
        InterceptorConfig::Uuid {
            header,
            preserve_existing,
            prefix,
        } => {
            if header.is_empty() {
                return Err(empty("header"));
            }
            Interceptor::Uuid(name(header), prefix.as_str().into(), *preserve_existing)
        }
        InterceptorConfig::RemoveHeader {
            with_name,
            matching,
        } => {
            if with_name.is_none() && matching.is_none() {
                return Err(Problem::new(
                    format!("interceptors[{i}]"),
                    "needs `with_name` or `matching`",
                ));
            }
            let matching = match matching {
                Some(m) => Some(pattern(i, "matching", &format!("^(?:{m})$"))?),
                None => None,
            };
            Interceptor::Remove(with_name.as_deref().map(name), matching)
        }
        InterceptorConfig::RegexFilter { regex, exclude } => {
            Interceptor::Filter(pattern(i, "regex", regex)?, *exclude, Arc::default())
        }
        InterceptorConfig::RegexExtractor { regex } => {
            let re = pattern(i, "regex", regex)?;
            let groups: Vec<_> = re
                .capture_names()
                .enumerate()
                .filter_map(|(g, n)| n.map(|n| (g, name(n))))
                .collect();
            if groups.is_empty() {
                return Err(Problem::new(
                    format!("interceptors[{i}].regex"),
                    "needs at least one named group, such as (?P<level>[A-Z]+)",
                ));
            }
            Interceptor::Extract(re, groups)
        }
        InterceptorConfig::SearchReplace { search, replace } => {
            Interceptor::Replace(pattern(i, "search", search)?, replace.as_bytes().to_vec())
        }
    })
}

/// The host name the kernel reports, or `localhost` if it cannot be read.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The address `host` resolves to, an IPv4 one if there is one (as Java's
/// `InetAddress.getLocalHost()` picks); `host` itself, with a warning, when it does not
/// resolve.
fn host_address(host: &str) -> String {
    use std::net::ToSocketAddrs;
    match (host, 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.map(|a| a.ip()).collect();
            if let Some(ip) = addrs.iter().find(|ip| ip.is_ipv4()).or(addrs.first()) {
                return ip.to_string();
            }
            tracing::warn!(
                host,
                "the host name resolves to no address: the host interceptor sets the name instead"
            );
        }
        Err(error) => {
            tracing::warn!(host, %error, "the host name does not resolve: the host interceptor sets the name instead");
        }
    }
    host.to_owned()
}

/// Random bytes for version 4 UUIDs, from the kernel's generator, a pool at a time.
#[derive(Default)]
struct Random {
    pool: Vec<u8>,
}

impl Random {
    /// How many UUIDs one refill of the pool makes.
    const UUIDS: usize = 256;

    /// `prefix` followed by a new random (version 4, RFC 9562) UUID in its hyphenated form.
    fn uuid(&mut self, prefix: &str) -> String {
        if self.pool.len() < 16 {
            self.refill();
        }
        let at = self.pool.len() - 16;
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.pool[at..]);
        self.pool.truncate(at);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(prefix.len() + 36);
        out.push_str(prefix);
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out.push('-');
            }
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0x0f)] as char);
        }
        out
    }

    fn refill(&mut self) {
        self.pool.resize(16 * Self::UUIDS, 0);
        let mut filled = 0;
        while filled < self.pool.len() {
            let rest = &mut self.pool[filled..];
            // SAFETY: the pointer and length are those of `rest`, a live, writable slice.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if n > 0 {
                filled += n as usize;
            } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                panic!("getrandom failed: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// How many bytes of dropped lines at the end of what was read hold a file's checkpoint at
/// the first of them (see [`Intercept`]).
const HOLD_DROPPED: u64 = 1 << 20;

/// The stage of one file: runs the source's interceptors over each line, in order; a line an
/// interceptor drops goes no further (its bytes still count as read), and the next line that
/// does gets [`DROPPED_FROM_HEADER`], for `sluice audit`.
///
/// Lines dropped at the end of what was read so far hold the file's checkpoint at the first
/// of them (up to [`HOLD_DROPPED`] bytes of them): a restart reads them again, drops them
/// again and still gives the next line its header, so that the audit does not take them for a
/// gap. Nothing is sent twice.
pub(crate) struct Intercept {
    list: Interceptors,
    /// The offsets of the first and of the last of the lines dropped since the last one kept.
    dropped_from: Option<(u64, u64)>,
    /// The lines each interceptor dropped in this call of `apply`.
    dropped: Vec<u64>,
    /// Where the `uuid` interceptor takes its random bytes from.
    random: Random,
    /// The names of [`END_HEADER`] and [`DROPPED_FROM_HEADER`], interned.
    end: Arc<str>,
    from: Arc<str>,
}

impl Interceptor {
    /// Applies this interceptor to `line`; false drops it. `now` is the read time in ms.
    fn apply(&self, line: &mut Line, now: u64, end: &Arc<str>, random: &mut Random) -> bool {
        match self {
            Interceptor::Timestamp(h, keep) => {
                if !(*keep && line.headers.get(h).is_some_and(|v| v.is_some())) {
                    line.headers.set(h.clone(), now.to_string());
                }
            }
            Interceptor::Static(k, v, keep) => {
                if !(*keep && line.headers.get(k).is_some_and(|v| v.is_some())) {
                    line.headers.set(k.clone(), &**v);
                }
            }
            Interceptor::Uuid(h, prefix, keep) => {
                if !(*keep && line.headers.get(h).is_some_and(|v| v.is_some())) {
                    line.headers.set(h.clone(), random.uuid(prefix));
                }
            }
            Interceptor::Remove(exact, matching) => {
                if let Some(n) = exact {
                    line.headers.remove(n.clone());
                }
                if let Some(re) = matching {
                    let hit: Vec<Arc<str>> = line
                        .headers
                        .iter()
                        .filter(|(k, v)| v.is_some() && re.is_match(k.as_bytes()))
                        .map(|(k, _)| name(k))
                        .collect();
                    for k in hit {
                        line.headers.remove(k);
                    }
                }
            }
            Interceptor::Filter(re, exclude, _) => return re.is_match(&line.body) != *exclude,
            Interceptor::Extract(re, groups) => {
                if let Some(caps) = re.captures(&line.body) {
                    for (g, n) in groups {
                        if let Some(m) = caps.get(*g) {
                            line.headers
                                .set(n.clone(), String::from_utf8_lossy(m.as_bytes()));
                        }
                    }
                }
            }
            Interceptor::Replace(re, with) => {
                if let Cow::Owned(b) = re.replace_all(&line.body, &with[..]) {
                    // Always said, even when the length did not change: the body is not the
                    // file's bytes any more, and `sluice audit --expect` must not compare it.
                    let was = line.end();
                    line.body = Bytes::from(b);
                    line.headers.set(end.clone(), was.to_string());
                }
            }
        }
        true
    }
}

impl Stage for Intercept {
    fn apply(&mut self, lines: &mut Vec<Line>, last: bool) {
        let now = crate::now_ms();
        let list = &self.list.0;
        let before = lines.len();
        let (end, from) = (&self.end, &self.from);
        let dropped_from = &mut self.dropped_from;
        let random = &mut self.random;
        let counts = &mut self.dropped;
        lines.retain_mut(|line| {
            if let Some(at) = list.iter().position(|i| !i.apply(line, now, end, random)) {
                counts[at] += 1;
                dropped_from.get_or_insert((line.offset, line.offset)).1 = line.offset;
                false
            } else {
                if let Some((at, _)) = dropped_from.take() {
                    line.headers.set(from.clone(), at.to_string());
                }
                true
            }
        });
        if last {
            // The file ends here: no event follows the dropped lines.
            self.dropped_from = None;
        }
        let dropped = (before - lines.len()) as u64;
        if dropped > 0 {
            SourceMetrics::add(&self.list.1.interceptor_dropped, dropped);
            for (i, n) in list.iter().zip(&mut self.dropped) {
                if let Interceptor::Filter(_, _, lines) = i {
                    SourceMetrics::add(lines, std::mem::take(n));
                }
            }
        }
    }

    fn held_from(&self) -> Option<u64> {
        self.dropped_from
            .filter(|(first, last)| last - first < HOLD_DROPPED)
            .map(|(first, _)| first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_DEBUG: &str = r#"[{"type":"regex_filter","regex":"DEBUG","exclude":true}]"#;

    /// The stage of the interceptors `cfg` (JSON), counting into `metrics`.
    fn stage(cfg: &str, metrics: &Arc<SourceMetrics>) -> Intercept {
        let list: Vec<InterceptorConfig> = serde_json::from_str(cfg).unwrap();
        Interceptors::compile(&list, metrics)
            .unwrap()
            .unwrap()
            .stage()
    }

    fn run(cfg: &str, bodies: &[&str]) -> Vec<Line> {
        let mut stage = stage(cfg, &Arc::default());
        let mut lines = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| Line::new(Bytes::copy_from_slice(b.as_bytes()), i as u64 * 100))
            .collect();
        stage.apply(&mut lines, false);
        lines
    }

    fn header<'a>(l: &'a Line, n: &str) -> Option<&'a str> {
        l.headers.get(n).flatten()
    }

    #[test]
    fn no_interceptor_compiles_to_no_stage() {
        assert!(
            Interceptors::compile(&[], &Arc::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn regex_filter_keeps_only_matching_lines_unless_exclude() {
        let keep = run(
            r#"[{"type":"regex_filter","regex":"ERROR"}]"#,
            &["a ERROR", "b"],
        );
        assert_eq!(keep.len(), 1);
        assert_eq!(keep[0].offset, 0);
        let drop = run(
            r#"[{"type":"regex_filter","regex":"DEBUG","exclude":true}]"#,
            &["DEBUG x", "INFO y", "DEBUG z"],
        );
        assert_eq!(drop.len(), 1);
        assert_eq!(&drop[0].body[..], b"INFO y");
        assert_eq!(drop[0].offset, 100);
    }

    #[test]
    fn dropped_lines_are_counted_in_the_sources_metrics() {
        let metrics = Arc::new(SourceMetrics::default());
        let mut stage = stage(NO_DEBUG, &metrics);
        let mut lines = vec![
            Line::new(Bytes::from_static(b"DEBUG a"), 0),
            Line::new(Bytes::from_static(b"INFO b"), 8),
            Line::new(Bytes::from_static(b"DEBUG c"), 15),
        ];
        stage.apply(&mut lines, false);
        assert_eq!(SourceMetrics::get(&metrics.interceptor_dropped), 2);
    }

    #[test]
    fn static_preserves_an_existing_value_by_default_and_replaces_it_when_told() {
        let l = run(
            r#"[{"type":"static","key":"env","value":"a"},{"type":"static","key":"env","value":"b"}]"#,
            &["x"],
        );
        assert_eq!(header(&l[0], "env"), Some("a"));
        let l = run(
            r#"[{"type":"static","key":"env","value":"a"},
               {"type":"static","key":"env","value":"b","preserve_existing":false}]"#,
            &["x"],
        );
        assert_eq!(header(&l[0], "env"), Some("b"));
    }

    #[test]
    fn regex_extractor_sets_named_groups_and_nothing_on_lines_that_do_not_match() {
        let l = run(
            r#"[{"type":"regex_extractor","regex":"^(?P<level>[A-Z]+) (?P<code>\\d+)?"}]"#,
            &["ERROR 42 boom", "lower case", "WARN x"],
        );
        assert_eq!(header(&l[0], "level"), Some("ERROR"));
        assert_eq!(header(&l[0], "code"), Some("42"));
        assert!(l[1].headers.is_empty());
        assert_eq!(header(&l[2], "level"), Some("WARN"));
        assert_eq!(header(&l[2], "code"), None);
    }

    #[test]
    fn search_replace_rewrites_every_match_and_copies_only_when_it_changes() {
        let l = run(
            r#"[{"type":"search_replace","search":"pw=(\\w+)","replace":"pw=*** was $1"}]"#,
            &["a pw=x b pw=y", "clean"],
        );
        assert_eq!(&l[0].body[..], b"a pw=*** was x b pw=*** was y");
        assert_eq!(&l[1].body[..], b"clean");
    }

    #[test]
    fn the_line_after_dropped_ones_says_where_they_began_and_they_hold_the_checkpoint() {
        let mut stage = stage(NO_DEBUG, &Arc::default());
        let line = |b: &'static str, at| Line::new(Bytes::from_static(b.as_bytes()), at);
        let mut first = vec![line("INFO a", 0), line("DEBUG b", 7), line("DEBUG c", 15)];
        stage.apply(&mut first, false);
        assert_eq!(first.len(), 1);
        assert_eq!(header(&first[0], DROPPED_FROM_HEADER), None);
        assert_eq!(
            stage.held_from(),
            Some(7),
            "dropped lines at the end are held"
        );
        // The next read: one more dropped line, then a kept one that says where they began.
        let mut second = vec![line("DEBUG d", 23), line("INFO e", 31)];
        stage.apply(&mut second, false);
        assert_eq!(header(&second[0], DROPPED_FROM_HEADER), Some("7"));
        assert_eq!(stage.held_from(), None);
        // Dropped lines at the end of the file hold nothing: no event follows them.
        let mut tail = vec![line("DEBUG f", 38)];
        stage.apply(&mut tail, true);
        assert_eq!(stage.held_from(), None);
    }

    #[test]
    fn a_long_run_of_dropped_lines_stops_holding_the_checkpoint() {
        let mut stage = stage(NO_DEBUG, &Arc::default());
        let mut lines = vec![
            Line::new(Bytes::from_static(b"DEBUG a"), 10),
            Line::new(Bytes::from_static(b"DEBUG b"), 10 + HOLD_DROPPED),
        ];
        stage.apply(&mut lines, false);
        assert_eq!(stage.held_from(), None);
        let mut next = vec![Line::new(Bytes::from_static(b"INFO"), 20 + HOLD_DROPPED)];
        stage.apply(&mut next, false);
        assert_eq!(header(&next[0], DROPPED_FROM_HEADER), Some("10"));
    }

    #[test]
    fn a_recompiled_list_counts_on_where_the_last_one_left_off() {
        let metrics = Arc::new(SourceMetrics::default());
        let counts = || -> Vec<(usize, u64)> {
            let by = metrics.dropped_by.lock().unwrap();
            by.iter()
                .map(|d| (d.index, SourceMetrics::get(&d.lines)))
                .collect()
        };
        let mut first = stage(NO_DEBUG, &metrics);
        first.apply(&mut vec![Line::new(Bytes::from_static(b"DEBUG"), 0)], false);
        assert_eq!(counts(), vec![(0, 1)]);
        let mut again = stage(NO_DEBUG, &metrics);
        again.apply(&mut vec![Line::new(Bytes::from_static(b"DEBUG"), 0)], false);
        assert_eq!(
            counts(),
            vec![(0, 2)],
            "a reload's new stage goes on counting"
        );
        Interceptors::compile(&[], &metrics).unwrap();
        assert_eq!(counts(), vec![], "no interceptor left: no series");
    }

    #[test]
    fn a_rewritten_body_says_where_it_ends_in_the_file() {
        let l = run(
            r#"[{"type":"search_replace","search":"secret","replace":"*"}]"#,
            &["a secret", "plain"],
        );
        assert_eq!(header(&l[0], END_HEADER), Some("8"));
        assert_eq!(l[0].end(), 8);
        assert!(l[1].headers.is_empty(), "an unchanged body gets no header");
        let masked = run(
            r#"[{"type":"search_replace","search":"\\d","replace":"X"}]"#,
            &["pin 1234"],
        );
        assert_eq!(&masked[0].body[..], b"pin XXXX");
        assert_eq!(
            header(&masked[0], END_HEADER),
            Some("8"),
            "a rewrite of the same length is still said"
        );
    }

    #[test]
    fn bodies_that_are_not_utf8_are_matched_as_bytes() {
        let mut stage = stage(NO_DEBUG, &Arc::default());
        let mut lines = vec![
            Line::new(Bytes::from_static(b"\xff DEBUG"), 0),
            Line::new(Bytes::from_static(b"\xff ok"), 8),
        ];
        stage.apply(&mut lines, false);
        assert_eq!(lines.len(), 1);
        assert_eq!(&lines[0].body[..], b"\xff ok");
    }

    #[test]
    fn timestamp_host_and_remove_header() {
        let l = run(
            r#"[{"type":"timestamp"},{"type":"host","header":"h"},
               {"type":"static","key":"tmp_a","value":"1"},{"type":"static","key":"keep","value":"1"},
               {"type":"remove_header","matching":"tmp_.*"},{"type":"remove_header","with_name":"path"}]"#,
            &["x"],
        );
        let ts: u64 = header(&l[0], "timestamp").unwrap().parse().unwrap();
        assert!(ts > 1_600_000_000_000);
        let h = header(&l[0], "h").unwrap();
        assert!(h.parse::<std::net::IpAddr>().is_ok(), "an address: {h}");
        let named = run(r#"[{"type":"host","use_ip":false}]"#, &["x"]);
        assert!(!host_name().is_empty());
        assert_eq!(header(&named[0], "host"), Some(&*host_name()));
        assert_eq!(host_address("localhost"), "127.0.0.1", "IPv4 first");
        assert_eq!(l[0].headers.get("tmp_a"), Some(None));
        assert_eq!(header(&l[0], "keep"), Some("1"));
        assert_eq!(
            l[0].headers.get("path"),
            Some(None),
            "hides the origin's header"
        );
    }

    #[test]
    fn uuid_sets_distinct_version_4_ids_and_keeps_an_existing_one() {
        let n = Random::UUIDS * 2 + 3;
        let bodies: Vec<String> = (0..n).map(|i| format!("l{i}")).collect();
        let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let lines = run(r#"[{"type":"uuid","prefix":"a1-"}]"#, &bodies);
        let ids: std::collections::HashSet<&str> =
            lines.iter().map(|l| header(l, "id").unwrap()).collect();
        assert_eq!(ids.len(), n, "every id differs, across pool refills");
        for id in &ids {
            let u = id.strip_prefix("a1-").expect("prefixed");
            let parts: Vec<&str> = u.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{id}"
            );
            assert!(
                u.bytes()
                    .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_eq!(&parts[2][..1], "4", "version 4: {id}");
            assert!("89ab".contains(&parts[3][..1]), "RFC variant: {id}");
        }

        let kept = run(
            r#"[{"type":"static","key":"msg","value":"given"},
                {"type":"uuid","header":"msg"},
                {"type":"uuid","header":"other","preserve_existing":false},
                {"type":"uuid","header":"other","preserve_existing":false}]"#,
            &["x"],
        );
        assert_eq!(header(&kept[0], "msg"), Some("given"));
        assert_eq!(header(&kept[0], "other").map(str::len), Some(36));
    }

    #[test]
    fn problems_name_the_key() {
        let bad: Vec<InterceptorConfig> = serde_json::from_str(
            r#"[{"type":"static","key":"","value":"v"},{"type":"regex_filter","regex":"("},
               {"type":"regex_extractor","regex":"[A-Z]+"},{"type":"remove_header"},
               {"type":"search_replace","search":"x["},{"type":"uuid","header":""}]"#,
        )
        .unwrap();
        let keys: Vec<_> = Interceptors::validate(&bad)
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "interceptors[0].key",
                "interceptors[1].regex",
                "interceptors[2].regex",
                "interceptors[3]",
                "interceptors[4].search",
                "interceptors[5].header"
            ]
        );
    }
}
