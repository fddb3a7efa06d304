//! The spooldir source's options, as written under `sources.NAME`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_channels::config::Problem;
use sluice_channels::units::{ByteSize, HumanDuration};

use crate::framing::LongLinePolicy;

/// The suffix of files set aside after an error.
pub const FAILED_SUFFIX: &str = ".FAILED";

/// What happens to a file once all its lines are safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterRead {
    /// Rename it with the completed suffix.
    #[default]
    Rename,
    /// Delete it.
    Delete,
}

/// Which waiting file is read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// The least recently modified first.
    #[default]
    Oldest,
    /// The most recently modified first.
    Youngest,
    /// By file name, in byte order.
    Name,
}

/// The spooldir source's options, as written under `sources.NAME` (without `type` and
/// `channel`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolDirConfig {
    /// The folder files are dropped into.
    pub dir: PathBuf,
    /// Globs on the file name; a file is read only if one matches. Empty: every file.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs on the file name of files never read. Names starting with `.` and names ending
    /// with the completed suffix or `.FAILED` are always ignored.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Appended to a file's name once it is read.
    #[serde(default = "default_suffix")]
    pub completed_suffix: String,
    /// Rename or delete a read file.
    #[serde(default)]
    pub after_read: AfterRead,
    /// Which file is read next.
    #[serde(default)]
    pub order: Order,
    /// The most lines put into the channel at once.
    #[serde(default = "crate::defaults::batch_size")]
    pub batch_size: usize,
    /// Flume's interceptors, applied to each line in order after framing (see
    /// docs/interceptors.md); none by default.
    #[serde(default)]
    pub interceptors: Vec<crate::InterceptorConfig>,
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
    /// How often the folder is listed when no file-system event arrives.
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// How long a file must have stayed unchanged (size and modification time) before it is
    /// read: a file still being written waits. A reader that reaches the end of a file that
    /// still grows follows it until it has stayed unchanged this long, and only then takes
    /// its end for the end of the file.
    #[serde(default = "default_ready_after")]
    pub ready_after: HumanDuration,
    /// How long an empty file must have stayed empty before it is completed. Until then it is
    /// left in place: it may be a file whose writer has not written yet.
    #[serde(default = "default_empty_grace")]
    pub empty_grace: HumanDuration,
    /// Static headers added to every event of this source.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_suffix() -> String {
    ".COMPLETED".to_owned()
}
fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_ready_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_empty_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}

impl SpoolDirConfig {
    /// A configuration with every option at its default, reading `dir`.
    pub fn for_dir(dir: impl Into<PathBuf>) -> Self {
        SpoolDirConfig {
            dir: dir.into(),
            include: Vec::new(),
            ignore: Vec::new(),
            completed_suffix: default_suffix(),
            after_read: AfterRead::default(),
            order: Order::default(),
            batch_size: crate::defaults::batch_size(),
            interceptors: Vec::new(),
            max_line_bytes: crate::defaults::max_line_bytes(),
            long_lines: LongLinePolicy::default(),
            multiline: None,
            format: crate::Format::Lines,
            poll_interval: default_poll(),
            ready_after: default_ready_after(),
            empty_grace: default_empty_grace(),
            headers: BTreeMap::new(),
        }
    }

    /// Checks what serde cannot: globs, sizes, the suffix; keys are relative to the source.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (key, globs) in [("include", &self.include), ("ignore", &self.ignore)] {
            for (i, g) in globs.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(g) {
                    problems.push(Problem::new(
                        format!("{key}[{i}]"),
                        format!("`{g}` is not a valid glob: {e}"),
                    ));
                }
            }
        }
        if self.completed_suffix.is_empty() {
            problems.push(Problem::new("completed_suffix", "must not be empty"));
        }
        if self.completed_suffix.contains(['/', '\0']) {
            // The completed name must stay in the folder, beside the file.
            problems.push(Problem::new(
                "completed_suffix",
                "must not contain `/` (nor a NUL): a completed file stays in the spool folder",
            ));
        }
        if let Some(p) = sluice_channels::config::batch_size_problem(self.batch_size) {
            problems.push(p);
        }
        if let Some(m) = &self.multiline {
            problems.extend(m.validate());
        }
        if self.max_line_bytes.0 == 0 {
            problems.push(Problem::new("max_line_bytes", "must be at least 1 byte"));
        }
        if self.poll_interval.0.is_zero() {
            problems.push(Problem::new("poll_interval", "must be longer than 0"));
        }
        crate::taildir::config::check_headers("headers", &self.headers, &mut problems);
        problems.extend(crate::Interceptors::validate(&self.interceptors));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_options_default_to_one_second_and_five_minutes() {
        let cfg: SpoolDirConfig = serde_json::from_str(r#"{"dir": "/spool"}"#).unwrap();
        assert_eq!(cfg.ready_after.0, Duration::from_secs(1));
        assert_eq!(cfg.empty_grace.0, Duration::from_secs(300));
        let cfg: SpoolDirConfig = serde_json::from_str(
            r#"{"dir": "/spool", "ready_after": "250ms", "empty_grace": "2s"}"#,
        )
        .unwrap();
        assert_eq!(cfg.ready_after.0, Duration::from_millis(250));
        assert_eq!(cfg.empty_grace.0, Duration::from_secs(2));
        assert!(cfg.validate().is_empty());
        let d = SpoolDirConfig::for_dir("/spool");
        assert_eq!(d.ready_after.0, Duration::from_secs(1));
        assert_eq!(d.completed_suffix, ".COMPLETED");
    }

    #[test]
    fn a_completed_suffix_that_would_leave_the_folder_is_refused() {
        for suffix in ["/../../etc/cron.d/x", ".done/x", "a\0b"] {
            let mut cfg = SpoolDirConfig::for_dir("/spool");
            cfg.completed_suffix = suffix.to_owned();
            let problems = cfg.validate();
            assert_eq!(problems.len(), 1, "{suffix:?}: {problems:?}");
            assert!(format!("{:?}", problems[0]).contains("completed_suffix"));
        }
    }
}
