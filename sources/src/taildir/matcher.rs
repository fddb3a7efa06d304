//! The `paths` and `exclude` patterns, and the walk that lists the files they match.
//!
//! A pattern is matched one path component at a time from its literal base folder, so only
//! folders that can hold matches are listed, and `**` descends any number of folders (without
//! following symbolic links to folders, which could loop). A matched file may be a symbolic
//! link to a regular file; it is then followed, and its target's folder is watched too.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use super::config::PathSpec;

/// How deep `**` descends.
const MAX_DEPTH: usize = 32;

/// One component of a pattern below its base folder.
#[derive(Debug)]
enum Comp {
    /// A name without wildcards.
    Literal(OsString),
    /// A name with `*`, `?` or `[...]`.
    Glob(glob::Pattern),
    /// `**`: any number of folders.
    AnyDepth,
}

#[derive(Debug)]
struct PathPattern {
    base: PathBuf,
    comps: Vec<Comp>,
    whole: glob::Pattern,
}

#[derive(Debug)]
enum Exclude {
    /// Matched against the file name.
    Name(glob::Pattern),
    /// Matched against the whole path.
    Path(glob::Pattern),
}

/// A file a pattern matched.
#[derive(Debug, Clone)]
pub struct Found {
    /// The path as matched.
    pub path: PathBuf,
    /// The index of the first pattern that matched it.
    pub pattern: usize,
    /// The device.
    pub dev: u64,
    /// The inode.
    pub ino: u64,
    /// Its size, `None` when it was not looked at (a known file whose inode is unchanged).
    pub size: Option<u64>,
    /// When it was last modified (`UNIX_EPOCH` when it was not looked at).
    pub mtime: SystemTime,
    /// When it was created, if the file system says and it was looked at.
    pub born: Option<SystemTime>,
    /// Where it really is, when `path` is a symbolic link.
    pub target: Option<PathBuf>,
}

/// What one walk found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The matched files.
    pub files: Vec<Found>,
    /// The folders whose changes can change the matches: to be watched.
    pub dirs: BTreeSet<PathBuf>,
}

/// The compiled `paths` and `exclude` patterns.
#[derive(Debug)]
pub struct Patterns {
    list: Vec<PathPattern>,
    exclude: Vec<Exclude>,
    /// The agent's own folders (absolute, as given and as resolved): never read or watched.
    private: Vec<PathBuf>,
}

const WHOLE_PATH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl PathPattern {
    fn new(glob: &str) -> Option<Self> {
        let whole = glob::Pattern::new(glob).ok()?;
        let mut base = PathBuf::new();
        let mut comps = Vec::new();
        let parts: Vec<Component> = Path::new(glob).components().collect();
        let mut in_base = true;
        for (i, c) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let name = c.as_os_str();
            let text = name.to_string_lossy();
            if in_base && !last && !has_wildcard(&text) {
                base.push(name);
                continue;
            }
            in_base = false;
            comps.push(if text == "**" {
                Comp::AnyDepth
            } else if has_wildcard(&text) {
                Comp::Glob(glob::Pattern::new(&text).ok()?)
            } else {
                Comp::Literal(name.to_os_string())
            });
        }
        if base.as_os_str().is_empty() {
            base.push(".");
        }
        Some(PathPattern { base, comps, whole })
    }
}

impl Patterns {
    /// Compiles validated patterns (invalid ones are skipped: validation reports them).
    pub fn new(paths: &[PathSpec], exclude: &[String]) -> Self {
        Patterns {
            list: paths
                .iter()
                .filter_map(|s| PathPattern::new(&s.glob))
                .collect(),
            exclude: exclude
                .iter()
                .filter_map(|g| {
                    let p = glob::Pattern::new(g).ok()?;
                    Some(if g.contains('/') {
                        Exclude::Path(p)
                    } else {
                        Exclude::Name(p)
                    })
                })
                .collect(),
            private: Vec::new(),
        }
    }

    /// Never matches a path under `dir` (the agent's data folder: its position files,
    /// checkpoints and write-ahead logs), whatever the patterns say.
    pub fn keep_out(&mut self, dir: &Path) {
        for d in [std::path::absolute(dir).ok(), fs::canonicalize(dir).ok()]
            .into_iter()
            .flatten()
        {
            if !self.private.contains(&d) {
                self.private.push(d);
            }
        }
    }

    /// True if `path` is under one of the agent's own folders.
    pub fn private(&self, path: &Path) -> bool {
        if self.private.is_empty() {
            return false;
        }
        if path.is_absolute() {
            return self.private.iter().any(|d| path.starts_with(d));
        }
        std::path::absolute(path).is_ok_and(|p| self.private.iter().any(|d| p.starts_with(d)))
    }

    /// True if `path` is excluded.
    pub fn excluded(&self, path: &Path) -> bool {
        self.private(path)
            || self.exclude.iter().any(|e| match e {
                Exclude::Name(p) => path
                    .file_name()
                    .is_some_and(|n| p.matches(&n.to_string_lossy())),
                Exclude::Path(p) => p.matches_path_with(path, WHOLE_PATH),
            })
    }

    /// The index of the first pattern that matches `path`, if no exclusion does.
    pub fn pattern_of(&self, path: &Path) -> Option<usize> {
        if self.excluded(path) {
            return None;
        }
        self.list
            .iter()
            .position(|p| p.whole.matches_path_with(path, WHOLE_PATH))
    }

    /// True if a pattern matches `path` and no exclusion does.
    pub fn matches(&self, path: &Path) -> bool {
        self.pattern_of(path).is_some()
    }

    /// Lists every matched regular file (or symbolic link to one), each file once even when
    /// several paths lead to it. A regular file whose path is in `known` with the inode the
    /// folder listing shows is not looked at (its size is `None`): that spares a `stat` per
    /// file when file-system events already report growth.
    pub fn list(&self, known: &HashMap<PathBuf, (u64, u64)>) -> Listing {
        let mut out = Listing::default();
        let mut seen = HashSet::new();
        for (i, p) in self.list.iter().enumerate() {
            let mut walk = Walk {
                pattern: p,
                index: i,
                patterns: self,
                known,
                out: &mut out,
                seen: &mut seen,
            };
            walk.dir(&p.base, 0, 0);
        }
        out
    }
}

struct Walk<'a> {
    pattern: &'a PathPattern,
    index: usize,
    patterns: &'a Patterns,
    known: &'a HashMap<PathBuf, (u64, u64)>,
    out: &'a mut Listing,
    seen: &'a mut HashSet<(u64, u64)>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, i: usize, depth: usize) {
        let Some(comp) = self.pattern.comps.get(i) else {
            return;
        };
        if self.patterns.private(dir) {
            return;
        }
        let last = i + 1 == self.pattern.comps.len();
        match comp {
            Comp::Literal(name) => {
                let p = dir.join(name);
                if last {
                    self.out.dirs.insert(dir.to_path_buf());
                    self.file(p);
                } else {
                    self.dir(&p, i + 1, depth);
                }
            }
            Comp::Glob(glob) => {
                let Ok(entries) = fs::read_dir(dir) else {
                    return;
                };
                self.out.dirs.insert(dir.to_path_buf());
                for e in entries.flatten() {
                    if !glob.matches(&e.file_name().to_string_lossy()) {
                        continue;
                    }
                    if last {
                        self.entry(&e);
                    } else if fs::metadata(e.path()).is_ok_and(|m| m.is_dir()) {
                        self.dir(&e.path(), i + 1, depth);
                    }
                }
            }
            Comp::AnyDepth => {
                if last {
                    // A trailing `**` matches every file below.
                    let Ok(entries) = fs::read_dir(dir) else {
                        return;
                    };
                    self.out.dirs.insert(dir.to_path_buf());
                    for e in entries.flatten() {
                        match e.file_type() {
                            Ok(t) if t.is_dir() && depth < MAX_DEPTH => {
                                self.dir(&e.path(), i, depth + 1)
                            }
                            Ok(t) if !t.is_dir() => self.entry(&e),
                            _ => {}
                        }
                    }
                    return;
                }
                self.dir(dir, i + 1, depth);
                if depth >= MAX_DEPTH {
                    return;
                }
                let Ok(entries) = fs::read_dir(dir) else {
                    return;
                };
                self.out.dirs.insert(dir.to_path_buf());
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        self.dir(&e.path(), i, depth + 1);
                    }
                }
            }
        }
    }

    /// A folder entry that matched: skipped cheaply if known and unchanged.
    fn entry(&mut self, e: &fs::DirEntry) {
        let path = e.path();
        let regular = e.file_type().is_ok_and(|t| t.is_file());
        match self.known.get(&path) {
            Some(&(dev, ino)) if regular && ino == e.ino() => {
                if self.patterns.excluded(&path) || !self.seen.insert((dev, ino)) {
                    return;
                }
                self.out.files.push(Found {
                    path,
                    pattern: self.index,
                    dev,
                    ino,
                    size: None,
                    mtime: SystemTime::UNIX_EPOCH,
                    born: None,
                    target: None,
                });
            }
            _ => self.file(path),
        }
    }

    fn file(&mut self, path: PathBuf) {
        if self.patterns.excluded(&path) {
            return;
        }
        let Ok(lmeta) = fs::symlink_metadata(&path) else {
            return;
        };
        let (meta, target) = if lmeta.file_type().is_symlink() {
            let Ok(meta) = fs::metadata(&path) else {
                return;
            };
            let Ok(target) = fs::canonicalize(&path) else {
                return;
            };
            if self.patterns.private(&target) {
                return;
            }
            if let Some(parent) = target.parent() {
                self.out.dirs.insert(parent.to_path_buf());
            }
            (meta, Some(target))
        } else {
            (lmeta, None)
        };
        if !meta.is_file() || !self.seen.insert((meta.dev(), meta.ino())) {
            return;
        }
        self.out.files.push(Found {
            path,
            pattern: self.index,
            dev: meta.dev(),
            ino: meta.ino(),
            size: Some(meta.len()),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            born: meta.created().ok(),
            target,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn patterns(globs: &[&str], exclude: &[&str]) -> Patterns {
        let specs: Vec<PathSpec> = globs
            .iter()
            .map(|g| PathSpec {
                glob: (*g).to_owned(),
                headers: BTreeMap::new(),
            })
            .collect();
        let exclude: Vec<String> = exclude.iter().map(|s| (*s).to_owned()).collect();
        Patterns::new(&specs, &exclude)
    }

    fn names(root: &Path, l: &Listing) -> Vec<String> {
        let mut v: Vec<String> = l
            .files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn pattern_of_names_the_first_matching_pattern() {
        let spec = |g: &str| PathSpec {
            glob: g.to_owned(),
            headers: Default::default(),
        };
        let p = Patterns::new(
            &[spec("/a/*.log"), spec("/b/*.log"), spec("/b/x.*")],
            &["*.gz".to_owned()],
        );
        assert_eq!(p.pattern_of(Path::new("/b/x.log")), Some(1));
        assert_eq!(p.pattern_of(Path::new("/b/x.txt")), Some(2));
        assert_eq!(p.pattern_of(Path::new("/a/y.log")), Some(0));
        assert_eq!(p.pattern_of(Path::new("/c/y.log")), None);
        assert_eq!(p.pattern_of(Path::new("/b/x.gz")), None, "excluded");
    }

    #[test]
    fn patterns_match_by_component_with_any_depth_exclusions_and_links() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "a.log",
            "b.txt",
            "a.log.gz",
            "x/c.log",
            "x/y/d.log",
            "x/y/z/e.log",
            "w/f.log",
        ] {
            let p = r.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x\n").unwrap();
        }
        std::os::unix::fs::symlink(r.join("x/c.log"), r.join("link.log")).unwrap();
        std::os::unix::fs::symlink(r.join("nowhere"), r.join("dangling.log")).unwrap();
        let root = r.to_string_lossy();

        let l = patterns(&[&format!("{root}/*.log")], &[]).list(&HashMap::new());
        assert_eq!(names(r, &l), ["a.log", "link.log"]);
        let link = l
            .files
            .iter()
            .find(|f| f.path.ends_with("link.log"))
            .unwrap();
        assert_eq!(
            link.target.as_deref(),
            Some(fs::canonicalize(r.join("x/c.log")).unwrap().as_path())
        );
        assert!(l.dirs.contains(&fs::canonicalize(r.join("x")).unwrap()));

        let l = patterns(
            &[&format!("{root}/x/**/*.log")],
            &[&format!("{root}/**/z/*")],
        )
        .list(&HashMap::new());
        assert_eq!(names(r, &l), ["x/c.log", "x/y/d.log"]);

        let p = patterns(
            &[&format!("{root}/*.log*"), &format!("{root}/a.log")],
            &["*.gz"],
        );
        let l = p.list(&HashMap::new());
        assert_eq!(names(r, &l), ["a.log", "link.log"]);
        let known: HashMap<PathBuf, (u64, u64)> = l
            .files
            .iter()
            .map(|f| (f.path.clone(), (f.dev, f.ino)))
            .collect();
        let again = p.list(&known);
        let sizes: Vec<Option<u64>> = again
            .files
            .iter()
            .map(|f| f.size.filter(|_| f.target.is_none()))
            .collect();
        assert_eq!(
            sizes,
            [None, None],
            "known files with unchanged inodes are not looked at"
        );
        assert_eq!(
            l.files.iter().filter(|f| f.pattern == 0).count(),
            2,
            "first pattern wins"
        );
        assert!(p.matches(&r.join("new.log")));
        assert!(!p.matches(&r.join("new.log.gz")));
        assert!(!p.matches(&r.join("x/new.log")));
        let l = patterns(
            &[&format!("{root}/**/c.log"), &format!("{root}/link.log")],
            &[],
        )
        .list(&HashMap::new());
        assert_eq!(
            names(r, &l),
            ["x/c.log"],
            "one file under two paths is listed once"
        );

        let l = patterns(&[&format!("{root}/w/f.log")], &[]).list(&HashMap::new());
        assert_eq!(names(r, &l), ["w/f.log"]);
        assert!(l.dirs.contains(&r.join("w")));
    }
}
