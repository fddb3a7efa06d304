//! The original files that `sluice audit --expect DIR` compares a topic against.
//!
//! Each file is framed the way a source frames it (lines end at `\n` or `\r\n`, the terminator
//! is not part of the line, the last line may be unterminated), independently of the agent's
//! own framer so that a framing bug cannot hide itself. A record may carry a whole line or a
//! piece of one (a long line split at `max_line_bytes`); [`ExpectedFile::verify`] accepts
//! any piece whose bytes match the original at its offset, and
//! [`ExpectedFile::next_after`] says exactly where the next record must start.
//!
//! Files are matched to records by base name, ignoring a `.COMPLETED` suffix on either side.
//! Names are compared as bytes, whatever they hold (bytes that are not UTF-8, a newline). A
//! record whose path header holds a lossy UTF-8 copy of a name that is not UTF-8 (each invalid
//! sequence replaced by U+FFFD, as the agent writes such paths) matches the original whose
//! name has that copy, unless two originals do. The files are read into memory.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sluice_channels::names::{escape, escape_path};

/// The suffix a spooldir source gives finished files; ignored when matching names.
const COMPLETED: &[u8] = b".COMPLETED";

/// Why the files of `--expect DIR` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    /// Listing the directory or reading a file failed.
    #[error("cannot read {}: {source}", escape_path(path))]
    Read {
        /// The directory or file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Two files match the same records (`a.log` and `a.log.COMPLETED`).
    #[error(
        "{} and {} both match the records of {name}",
        escape_path(first),
        escape_path(second)
    )]
    SameName {
        /// The name records are matched by, escaped.
        name: String,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
}

/// What [`ExpectedFile::verify`] found for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// The body is the original's bytes at its offset, within one line, or from there over
    /// several (lines a multiline event joined); `end` is the offset just past it.
    Match {
        /// Offset just past the body.
        end: u64,
    },
    /// The body differs from the original, or the offset is not inside a line.
    Mismatch {
        /// When the offset lies inside a line: the end of that line's body. The checker treats
        /// the record as having delivered (a damaged copy of) the line up to there, so a
        /// changed body is reported once, as a mismatch, not also as a gap.
        covers: Option<u64>,
        /// The 1-based line number of that line.
        line: Option<u64>,
        /// The original's bytes from the record's offset to the end of that line.
        expected: &'a [u8],
    },
}

/// One original file, framed into lines.
#[derive(Debug)]
pub struct ExpectedFile {
    path: PathBuf,
    data: Vec<u8>,
    /// Where each line starts.
    starts: Vec<u64>,
    /// Where each line's body ends (its terminator starts).
    ends: Vec<u64>,
}

impl ExpectedFile {
    /// Frames `data`, the content of the file at `path`.
    pub fn from_bytes(path: PathBuf, data: Vec<u8>) -> Self {
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            match data[pos..].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let nl = pos + i;
                    let end = if nl > pos && data[nl - 1] == b'\r' {
                        nl - 1
                    } else {
                        nl
                    };
                    starts.push(pos as u64);
                    ends.push(end as u64);
                    pos = nl + 1;
                }
                None => {
                    starts.push(pos as u64);
                    ends.push(data.len() as u64);
                    pos = data.len();
                }
            }
        }
        ExpectedFile {
            path,
            data,
            starts,
            ends,
        }
    }

    /// Where the file was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// The number of lines.
    pub fn lines(&self) -> u64 {
        self.starts.len() as u64
    }

    /// The index of the line whose start is the last one at or before `offset`.
    fn line_at(&self, offset: u64) -> Option<usize> {
        self.starts.partition_point(|&s| s <= offset).checked_sub(1)
    }

    /// The 1-based number of the line that `offset` falls in (its body or its terminator).
    pub fn line_number(&self, offset: u64) -> u64 {
        self.line_at(offset).map_or(1, |i| i as u64 + 1)
    }

    /// Checks a record's body against the original at `offset`: it must be a whole line or a
    /// piece of one, or lines joined as they are in the file, byte for byte. An empty body
    /// matches only an empty line.
    pub fn verify(&self, offset: u64, body: &[u8]) -> Verdict<'_> {
        let outside = Verdict::Mismatch {
            covers: None,
            line: None,
            expected: b"",
        };
        let Some(i) = self.line_at(offset) else {
            return outside;
        };
        let (start, end) = (self.starts[i], self.ends[i]);
        if offset > end || (offset == end && start < end) {
            return outside;
        }
        let rest = &self.data[offset as usize..end as usize];
        // A body longer than the rest of its line is several whole lines joined with the
        // file's own `\n` between them (a multiline event): the file's bytes from the offset.
        let matches = if body.is_empty() {
            start == end
        } else {
            rest.starts_with(body)
                || (body.len() > rest.len()
                    && self.data[offset as usize..].starts_with(body)
                    && self.ends_a_body(offset + body.len() as u64))
        };
        if matches {
            Verdict::Match {
                end: offset + body.len() as u64,
            }
        } else {
            Verdict::Mismatch {
                covers: Some(end),
                line: Some(i as u64 + 1),
                expected: rest,
            }
        }
    }

    /// Whether `end` can end a body: inside a line or at its body's end, not in or just past
    /// its terminator.
    fn ends_a_body(&self, end: u64) -> bool {
        self.line_at(end).is_some_and(|j| {
            let (start, body_end) = (self.starts[j], self.ends[j]);
            end <= body_end && (end > start || start == body_end)
        })
    }

    /// Where the record after one that ended at `end` must start: `end` itself inside a line
    /// (the next piece), else the next line's start, or the file's length after the last line.
    pub fn next_after(&self, end: u64) -> u64 {
        match self.line_at(end) {
            Some(i) if end < self.ends[i] => end,
            Some(i) => self.starts.get(i + 1).copied().unwrap_or(self.len()),
            None => end,
        }
    }
}

/// The files of `--expect DIR`, by the name records are matched with.
#[derive(Debug, Default)]
pub struct ExpectedSet {
    files: Vec<ExpectedFile>,
    by_name: HashMap<Box<[u8]>, usize>,
    /// For names that are not UTF-8: their lossy UTF-8 copy, and the file that has it (none
    /// when several do: such records cannot tell them apart).
    by_lossy: HashMap<Box<[u8]>, Option<usize>>,
}

impl ExpectedSet {
    /// Reads every regular file directly in `dir` (not in subdirectories; names starting with
    /// a dot are skipped, as a spooldir source skips them).
    pub fn load(dir: &Path) -> Result<Self, ExpectError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ExpectError::Read { path, source }
        };
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_err(dir))? {
            let path = entry.map_err(read_err(dir))?.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"."));
            if !hidden && fs::metadata(&path).map_err(read_err(&path))?.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let data = fs::read(&path).map_err(read_err(&path))?;
            files.push(ExpectedFile::from_bytes(path, data));
        }
        Self::from_files(files)
    }

    /// Indexes `files` by base name without `.COMPLETED`; two files with one such name are an
    /// error.
    pub fn from_files(files: Vec<ExpectedFile>) -> Result<Self, ExpectError> {
        let mut by_name = HashMap::with_capacity(files.len());
        let mut by_lossy = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let name: Box<[u8]> = match_name(f.path.as_os_str().as_bytes()).into();
            if let Some(&j) = by_name.get(&name) {
                let first: &ExpectedFile = &files[j];
                return Err(ExpectError::SameName {
                    name: escape(&name),
                    first: first.path.clone(),
                    second: f.path.clone(),
                });
            }
            if std::str::from_utf8(&name).is_err() {
                let lossy: Box<[u8]> = String::from_utf8_lossy(&name).as_bytes().into();
                by_lossy
                    .entry(lossy)
                    .and_modify(|only: &mut Option<usize>| *only = None)
                    .or_insert(Some(i));
            }
            by_name.insert(name, i);
        }
        Ok(ExpectedSet {
            files,
            by_name,
            by_lossy,
        })
    }

    /// The file whose records carry `path` (a source file's full path), if any: the one
    /// with the same base name byte for byte, else the only one whose name is not UTF-8 and
    /// whose lossy UTF-8 copy that base name is.
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        let name = match_name(path);
        self.by_name
            .get(name)
            .copied()
            .or_else(|| self.by_lossy.get(name).copied().flatten())
    }

    /// The file at `index` (from [`ExpectedSet::find`]).
    pub fn file(&self, index: usize) -> &ExpectedFile {
        &self.files[index]
    }

    /// All files, in name order.
    pub fn files(&self) -> &[ExpectedFile] {
        &self.files
    }
}

/// The base name of `path` without a `.COMPLETED` suffix.
fn match_name(path: &[u8]) -> &[u8] {
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    base.strip_suffix(COMPLETED)
        .filter(|b| !b.is_empty())
        .unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    fn file(content: &[u8]) -> ExpectedFile {
        ExpectedFile::from_bytes(PathBuf::from("/orig/a.log"), content.to_vec())
    }

    #[test]
    fn frames_lf_crlf_empty_and_unterminated_lines() {
        let f = file(b"ab\r\n\ncd\nlast");
        assert_eq!(f.starts, [0, 4, 5, 8]);
        assert_eq!(f.ends, [2, 4, 7, 12]);
        assert_eq!(f.lines(), 4);
        assert_eq!(file(b"").lines(), 0);
        assert_eq!(file(b"\n").starts, [0]);
        assert_eq!(file(b"\n").ends, [0]);
        // A lone `\r` is part of the body, as in the source's framing.
        assert_eq!(file(b"a\rb\n").ends, [3]);
    }

    #[test]
    fn whole_lines_and_pieces_match_and_say_where_the_next_record_starts() {
        let f = file(b"abcdef\r\n\nxy");
        assert_eq!(f.verify(0, b"abcdef"), Verdict::Match { end: 6 });
        assert_eq!(f.next_after(6), 8);
        assert_eq!(f.verify(0, b"abc"), Verdict::Match { end: 3 });
        assert_eq!(f.next_after(3), 3);
        assert_eq!(f.verify(3, b"def"), Verdict::Match { end: 6 });
        assert_eq!(f.verify(8, b""), Verdict::Match { end: 8 });
        let joined = file(b"one\ntwo\nthree\n");
        assert_eq!(
            joined.verify(0, b"one\ntwo"),
            Verdict::Match { end: 7 },
            "lines joined as in the file"
        );
        assert_eq!(joined.next_after(7), 8);
        assert!(matches!(
            joined.verify(0, b"one\ntwx"),
            Verdict::Mismatch { .. }
        ));
        assert_eq!(f.next_after(8), 9);
        assert_eq!(f.verify(9, b"xy"), Verdict::Match { end: 11 });
        assert_eq!(f.next_after(11), 11);
        assert_eq!(f.len(), 11);
    }

    #[test]
    fn changed_bodies_and_offsets_outside_lines_mismatch() {
        let f = file(b"abc\nde\n");
        assert_eq!(
            f.verify(0, b"abd"),
            Verdict::Mismatch {
                covers: Some(3),
                line: Some(1),
                expected: b"abc"
            }
        );
        // Longer than the line: it would swallow the terminator.
        assert!(matches!(
            f.verify(4, b"de\n"),
            Verdict::Mismatch {
                covers: Some(6),
                ..
            }
        ));
        // An empty body on a non-empty line.
        assert!(matches!(
            f.verify(4, b""),
            Verdict::Mismatch { line: Some(2), .. }
        ));
        // Inside the terminator, and past the end.
        assert!(matches!(
            f.verify(6, b"x"),
            Verdict::Mismatch { covers: None, .. }
        ));
        assert!(matches!(
            f.verify(7, b"x"),
            Verdict::Mismatch { covers: None, .. }
        ));
        assert!(matches!(
            file(b"").verify(0, b""),
            Verdict::Mismatch { covers: None, .. }
        ));
    }

    #[test]
    fn invalid_utf8_is_compared_as_bytes() {
        let f = file(b"\xff\xfe ok\n\xc3\x28\n");
        assert_eq!(f.verify(0, b"\xff\xfe ok"), Verdict::Match { end: 5 });
        assert_eq!(f.verify(6, b"\xc3\x28"), Verdict::Match { end: 8 });
        assert!(matches!(f.verify(6, b"\xc3\x29"), Verdict::Mismatch { .. }));
    }

    #[test]
    fn line_numbers_cover_terminators() {
        let f = file(b"a\r\nb\n");
        assert_eq!(f.line_number(0), 1);
        assert_eq!(f.line_number(2), 1);
        assert_eq!(f.line_number(3), 2);
    }

    #[test]
    fn names_match_by_base_name_ignoring_completed_on_either_side() {
        let set = ExpectedSet::from_files(vec![
            ExpectedFile::from_bytes("/orig/a.log.COMPLETED".into(), b"x\n".to_vec()),
            ExpectedFile::from_bytes("/orig/b.log".into(), b"y\n".to_vec()),
        ])
        .unwrap();
        assert_eq!(set.find(b"/var/spool/a.log"), Some(0));
        assert_eq!(set.find(b"/var/spool/b.log.COMPLETED"), Some(1));
        assert_eq!(set.find(b"b.log"), Some(1));
        assert_eq!(set.find(b"/var/spool/c.log"), None);
        assert_eq!(set.find(b"/var/spool/a.lo"), None);
    }

    #[test]
    fn names_are_compared_as_bytes_and_match_their_lossy_utf8_copy() {
        let named = |name: &[u8]| {
            let path = Path::new("/orig").join(OsStr::from_bytes(name));
            ExpectedFile::from_bytes(path, b"x\n".to_vec())
        };
        let set = ExpectedSet::from_files(vec![
            named(b"bad-\xff\xfe.log.COMPLETED"),
            named(b"two\nlines.log"),
            named(b"twin-\xff.log"),
            named(b"twin-\xfe.log"),
            named(b"plain.log"),
        ])
        .unwrap();
        // Byte for byte.
        assert_eq!(set.find(b"/spool/bad-\xff\xfe.log"), Some(0));
        assert_eq!(set.find(b"/spool/two\nlines.log.COMPLETED"), Some(1));
        assert_eq!(set.find(b"/spool/twin-\xfe.log"), Some(3));
        // The agent's lossy copy of a name that is not UTF-8.
        assert_eq!(
            set.find("/spool/bad-\u{fffd}\u{fffd}.log".as_bytes()),
            Some(0)
        );
        // ... unless two originals have that copy.
        assert_eq!(set.find("/spool/twin-\u{fffd}.log".as_bytes()), None);
        assert_eq!(set.find("/spool/bad-\u{fffd}.log".as_bytes()), None);
        assert_eq!(set.find(b"/spool/two\rlines.log"), None);
        assert_eq!(set.find(b"/spool/plain.log"), Some(4));
    }

    #[test]
    fn errors_show_names_escaped_on_one_line() {
        let err = ExpectedSet::from_files(vec![
            ExpectedFile::from_bytes("/orig/a\nb\u{85}.log".into(), Vec::new()),
            ExpectedFile::from_bytes("/orig/a\nb\u{85}.log.COMPLETED".into(), Vec::new()),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "/orig/a\\nb\\u{85}.log and /orig/a\\nb\\u{85}.log.COMPLETED both match the \
             records of a\\nb\\u{85}.log"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = ExpectedSet::load(&dir.path().join(OsStr::from_bytes(b"no\n\xff")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no\\n\\xff: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn two_files_with_one_name_are_an_error() {
        let err = ExpectedSet::from_files(vec![
            ExpectedFile::from_bytes("/orig/a.log".into(), Vec::new()),
            ExpectedFile::from_bytes("/orig/a.log.COMPLETED".into(), Vec::new()),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("both match the records of a.log"),
            "{err}"
        );
    }

    #[test]
    fn load_reads_regular_files_and_skips_hidden_ones_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.log"), b"1\n2\n").unwrap();
        fs::write(dir.path().join(".a.log.tmp"), b"partial").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let set = ExpectedSet::load(dir.path()).unwrap();
        assert_eq!(set.files().len(), 1);
        assert_eq!(set.file(0).lines(), 2);
        let err = ExpectedSet::load(&dir.path().join("absent")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
}
