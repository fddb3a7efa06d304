//! Whether two glob patterns over paths can match a common path, for the configuration's
//! warnings: a taildir pattern that covers the agent's data folder, two sources that read the
//! same files.
//!
//! The patterns are the taildir source's: `*`, `?` and `[...]` (`[!...]` negated) within one
//! path component, `**` as a whole component for any number of folders. The answer errs on
//! the side of "they overlap" where character classes make it hard to tell: it only ever
//! produces a warning.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// One element of a path component's pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A character that must appear as it is.
    Lit(char),
    /// `?`: any one character.
    Any,
    /// `*`: any run of characters.
    Star,
    /// `[...]`: one character of the ranges (or, negated, of none of them).
    Class(Vec<(char, char)>, bool),
}

impl Tok {
    fn matches(&self, c: char) -> bool {
        match self {
            Tok::Lit(l) => *l == c,
            Tok::Any | Tok::Star => true,
            Tok::Class(ranges, negated) => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// Whether two single-character elements (not `*`) can match one character.
fn compatible(a: &Tok, b: &Tok) -> bool {
    match (a, b) {
        (Tok::Lit(c), other) | (other, Tok::Lit(c)) => other.matches(*c),
        (Tok::Class(x, false), Tok::Class(y, false)) => x
            .iter()
            .any(|&(a0, a1)| y.iter().any(|&(b0, b1)| a0 <= b1 && b0 <= a1)),
        // `?` against anything, or a negated class: assume some character fits both.
        _ => true,
    }
}

/// Splits one path component's pattern into its elements.
fn tokens(component: &str) -> Vec<Tok> {
    let chars: Vec<char> = component.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if out.last() != Some(&Tok::Star) {
                    out.push(Tok::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Tok::Any);
                i += 1;
            }
            '[' => match class(&chars[i + 1..]) {
                Some((tok, used)) => {
                    out.push(tok);
                    i += 1 + used;
                }
                None => {
                    out.push(Tok::Lit('['));
                    i += 1;
                }
            },
            c => {
                out.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    out
}

/// Parses a class after its `[`; returns it and how many characters it used (with `]`).
fn class(chars: &[char]) -> Option<(Tok, usize)> {
    let mut i = 0;
    let negated = chars.first() == Some(&'!');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while i < chars.len() {
        let c = chars[i];
        if c == ']' && !first {
            return Some((Tok::Class(ranges, negated), i + 1));
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&h| h != ']') {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

/// Whether some file name matches both component patterns.
fn components_meet(p: &[Tok], q: &[Tok]) -> bool {
    fn go(
        p: &[Tok],
        q: &[Tok],
        i: usize,
        j: usize,
        memo: &mut HashMap<(usize, usize), bool>,
    ) -> bool {
        if let Some(&v) = memo.get(&(i, j)) {
            return v;
        }
        let v = if i == p.len() && j == q.len() {
            true
        } else if p.get(i) == Some(&Tok::Star) {
            // The star matches nothing more, or also what q's next element matches.
            go(p, q, i + 1, j, memo) || (j < q.len() && go(p, q, i, j + 1, memo))
        } else if q.get(j) == Some(&Tok::Star) {
            go(p, q, i, j + 1, memo) || (i < p.len() && go(p, q, i + 1, j, memo))
        } else if i < p.len() && j < q.len() {
            compatible(&p[i], &q[j]) && go(p, q, i + 1, j + 1, memo)
        } else {
            false
        };
        memo.insert((i, j), v);
        v
    }
    go(p, q, 0, 0, &mut HashMap::new())
}

/// A pattern's components below the root, `..` and `.` resolved lexically.
fn components(pattern: &str) -> Vec<String> {
    let path = absolute(Path::new(pattern));
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// Whether some path matches both patterns.
pub fn globs_meet(a: &str, b: &str) -> bool {
    let (a, b) = (components(a), components(b));
    let ta: Vec<Vec<Tok>> = a.iter().map(|c| tokens(c)).collect();
    let tb: Vec<Vec<Tok>> = b.iter().map(|c| tokens(c)).collect();
    let deep = |s: &String| s == "**";
    #[allow(clippy::too_many_arguments)]
    fn go(
        a: &[String],
        b: &[String],
        ta: &[Vec<Tok>],
        tb: &[Vec<Tok>],
        i: usize,
        j: usize,
        deep: &dyn Fn(&String) -> bool,
        memo: &mut HashMap<(usize, usize), bool>,
    ) -> bool {
        if let Some(&v) = memo.get(&(i, j)) {
            return v;
        }
        let v = if i == a.len() && j == b.len() {
            true
        } else if a.get(i).is_some_and(deep) {
            go(a, b, ta, tb, i + 1, j, deep, memo)
                || (j < b.len() && go(a, b, ta, tb, i, j + 1, deep, memo))
        } else if b.get(j).is_some_and(deep) {
            go(a, b, ta, tb, i, j + 1, deep, memo)
                || (i < a.len() && go(a, b, ta, tb, i + 1, j, deep, memo))
        } else if i < a.len() && j < b.len() {
            components_meet(&ta[i], &tb[j]) && go(a, b, ta, tb, i + 1, j + 1, deep, memo)
        } else {
            false
        };
        memo.insert((i, j), v);
        v
    }
    go(&a, &b, &ta, &tb, 0, 0, &deep, &mut HashMap::new())
}

/// `path` made absolute against the current folder, with `.` and `..` resolved lexically
/// (symbolic links are not followed: the configuration may name paths that do not exist yet).
pub fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// A glob that matches every file under `dir`, at any depth.
pub fn everything_under(dir: &Path) -> String {
    format!("{}/**", escape(dir))
}

/// A glob that matches the files `dir` holds directly whose names match `name` (a glob).
pub fn files_in(dir: &Path, name: &str) -> String {
    format!("{}/{name}", escape(dir))
}

/// A glob matching exactly `path`.
pub fn exactly(path: &Path) -> String {
    escape(path)
}

fn escape(path: &Path) -> String {
    glob::Pattern::escape(&absolute(path).to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_with_wildcards_meet_when_a_name_fits_both() {
        let meet = |a: &str, b: &str| components_meet(&tokens(a), &tokens(b));
        assert!(meet("*.log", "app.*"));
        assert!(meet("*", "x"));
        assert!(meet("a?c", "[ab]bc"));
        assert!(meet("app-[0-9].log", "app-7*"));
        assert!(!meet("*.log", "*.txt"));
        assert!(!meet("app.log", "app.log.1"));
        assert!(!meet("[ab]x", "cx"));
        assert!(!meet("[!a]", "a"));
        assert!(meet("[*]", "*"), "an escaped star is a literal star");
    }

    #[test]
    fn paths_meet_through_double_stars_and_literal_folders() {
        assert!(globs_meet("/x/logs/**", "/x/logs/data/**"));
        assert!(globs_meet(
            "/x/logs/**",
            "/x/logs/data/sources/r1/positions.json"
        ));
        assert!(globs_meet("/var/log/*/app.log", "/var/log/web/*"));
        assert!(globs_meet("/var/log/**/*.log", "/var/log/a/b/c.log"));
        assert!(globs_meet("/a/./b/../c/*.log", "/a/c/x.log"));
        assert!(
            !globs_meet("/x/logs/*.log", "/x/logs/data/**"),
            "a star stays in one folder"
        );
        assert!(!globs_meet("/var/log/app/*.log", "/var/log/web/*"));
        assert!(!globs_meet("/var/log/**/*.log", "/var/log/a/b/c.txt"));
        assert!(globs_meet(
            &files_in(Path::new("/spool"), "*"),
            "/spool/*.log"
        ));
        assert!(!globs_meet(
            &everything_under(Path::new("/data[1]")),
            "/data1/x"
        ));
    }
}
