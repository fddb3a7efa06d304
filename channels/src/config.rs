//! What every component's configuration check reports: one [`Problem`] per wrong option.

use std::fmt;

/// One configuration problem: the key it concerns and what is wrong with it.
///
/// A component's `validate()` names keys relative to the component (`batch_size`,
/// `paths[0]`, `producer.acks`); the agent puts them [`under`](Problem::under) the
/// component's own key path, so that every problem it reports names a full key path
/// (`a1.sinks.k1.batch_size`), or the file for problems with the file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path the problem concerns.
    pub key: String,
    /// What is wrong, in words for whoever edits the configuration.
    pub message: String,
}

impl Problem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same problem with its key taken as relative to the key path `at`: `at.key`.
    pub fn under(self, at: &str) -> Self {
        Problem {
            key: format!("{at}.{}", self.key),
            message: self.message,
        }
    }
}

/// The most events one batch may hold (`batch_size` of any source or sink): a batch's vector is
/// allocated whole, so a larger one would only exhaust memory.
pub const MAX_BATCH: usize = 1_000_000;

/// The problem with a `batch_size` of `n`, if any: it must be 1 to [`MAX_BATCH`].
pub fn batch_size_problem(n: usize) -> Option<Problem> {
    match n {
        0 => Some(Problem::new("batch_size", "must be at least 1")),
        n if n > MAX_BATCH => Some(Problem::new(
            "batch_size",
            format!("must be at most {MAX_BATCH}"),
        )),
        _ => None,
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_shows_as_key_and_message_and_nests_under_a_path() {
        let p = Problem::new("batch_size", "must be at least 1").under("a1.sinks.k1");
        assert_eq!(p.key, "a1.sinks.k1.batch_size");
        assert_eq!(p.to_string(), "a1.sinks.k1.batch_size: must be at least 1");
    }
}
