//! Where a newly found file starts: at the position the last run remembered for it, or, for a
//! file never read, as `read_from` and `ignore_older` say.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tracing::error;

use super::config::ReadFrom;
use super::files::Id;
use super::identity::Fingerprint;
use super::positions::{Loaded, Position};
use super::reader::Start;

/// Where a newly followed file is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Begin {
    /// Where it is opened.
    pub start: Start,
    /// Every line before this offset is safe: never read again.
    pub safe: u64,
    /// The fingerprint remembered with its position, checked when it is opened.
    pub fp: Option<Fingerprint>,
    /// How often it was seen truncated or rewritten, as remembered.
    pub rewrites: u32,
}

impl Begin {
    /// At a position the last run remembered.
    pub fn at(p: &Position) -> Self {
        Begin {
            start: Start::At(p.offset),
            safe: p.offset,
            fp: p.fp,
            rewrites: p.rewrites,
        }
    }

    /// At `offset` of a file never read: what comes before counts as read.
    fn from(offset: u64) -> Self {
        Begin {
            start: Start::At(offset),
            safe: offset,
            fp: None,
            rewrites: 0,
        }
    }
}

/// How a file was found.
#[derive(Debug, Clone, Copy)]
pub(super) enum Seen {
    /// The watcher saw it appear.
    Appeared,
    /// A scan listed it.
    Listed {
        /// The scan at startup.
        first: bool,
        /// When the scan ran.
        scanned_at: SystemTime,
        /// The file's modification time.
        mtime: SystemTime,
        /// Its size, if the scan looked at it.
        size: Option<u64>,
    },
}

/// The positions of the last run not matched to a file yet, and the rules for a file that has
/// none.
pub(super) struct Resume {
    remembered: HashMap<Id, Position>,
    /// No position file of an earlier run: files found at startup follow `read_from`.
    /// Otherwise a file found at startup without a position appeared since the last run (or
    /// the position file was unreadable) and is read from its beginning: `read_from: end`
    /// skips what was there before the agent ever ran, never what a restart or a reload
    /// missed.
    first_run: bool,
    read_from: ReadFrom,
    ignore_older: Option<Duration>,
}

impl Resume {
    /// The positions `loaded` from the position file at `position_file`
    /// (a corrupt one set aside is logged: every file is then read from its beginning), with
    /// the source's `read_from` and `ignore_older`.
    pub fn new(
        loaded: Loaded,
        (read_from, ignore_older): (ReadFrom, Option<Duration>),
        position_file: &Path,
    ) -> Self {
        let first_run = matches!(loaded, Loaded::Missing | Loaded::Imported(_));
        let remembered = match loaded {
            Loaded::Missing => HashMap::new(),
            Loaded::Read(list) | Loaded::Imported(list) => {
                list.into_iter().map(|p| ((p.dev, p.ino), p)).collect()
            }
            Loaded::SetAside { error, moved_to } => {
                error!(position_file = %position_file.display(), error,
                    moved_to = ?moved_to, "corrupt position file set aside; every file found now is \
                    read from its beginning (lines may repeat, none is lost)");
                HashMap::new()
            }
        };
        Resume {
            remembered,
            first_run,
            read_from,
            ignore_older,
        }
    }

    /// The path the last run followed the file with identity `id` under, if it remembers
    /// one: its events keep it (the file may have been renamed while the agent was stopped).
    pub fn path_of(&self, id: Id) -> Option<std::path::PathBuf> {
        self.remembered
            .get(&id)
            .filter(|p| !p.path.is_empty())
            .map(|p| std::path::PathBuf::from(&p.path))
    }

    /// Where the file with identity `id`, found as `seen` and not followed yet, starts; its
    /// remembered position, if any, is used up.
    ///
    /// At its remembered position if it has one. Otherwise: after its last complete line if
    /// the scan at startup of the very first run found it and `read_from` is `end`; at its end
    /// if a scan found it not modified for `ignore_older`; else at its beginning.
    pub fn start_of(&mut self, id: Id, seen: Seen) -> Begin {
        if let Some(p) = self.remembered.remove(&id) {
            return Begin::at(&p);
        }
        match seen {
            Seen::Listed { first: true, .. }
                if self.read_from == ReadFrom::End && self.first_run =>
            {
                Begin {
                    start: Start::End,
                    safe: 0,
                    fp: None,
                    rewrites: 0,
                }
            }
            Seen::Listed {
                scanned_at,
                mtime,
                size,
                ..
            } if self.ignore_older.is_some_and(|d| mtime < scanned_at - d) => {
                Begin::from(size.unwrap_or(0))
            }
            _ => Begin::from(0),
        }
    }

    /// Takes the remembered positions no file was found for yet: files of the last run that
    /// moved (or went) while the agent was stopped.
    pub fn take_rest(&mut self) -> Vec<Position> {
        self.remembered.drain().map(|(_, p)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn position(ino: u64, offset: u64) -> Position {
        Position {
            rewrites: 0,
            path: format!("/logs/{ino}.log"),
            dev: 1,
            ino,
            fp: Some(Fingerprint::of(b"first line\n")),
            offset,
        }
    }

    fn resume(loaded: Loaded, read_from: ReadFrom, ignore_older: Option<Duration>) -> Resume {
        Resume::new(loaded, (read_from, ignore_older), Path::new("p.json"))
    }

    /// A scan's sight of a file modified `age` ago, `size` bytes long.
    fn listed(first: bool, age: Duration, size: u64) -> Seen {
        let scanned_at = SystemTime::now();
        Seen::Listed {
            first,
            scanned_at,
            mtime: scanned_at - age,
            size: Some(size),
        }
    }

    #[test]
    fn a_remembered_position_wins_and_is_used_once() {
        let mut r = resume(
            Loaded::Read(vec![position(7, 40)]),
            ReadFrom::End,
            Some(HOUR),
        );
        let p = position(7, 40);
        assert_eq!(
            r.start_of((1, 7), listed(true, 2 * HOUR, 100)),
            Begin::at(&p),
            "neither read_from nor ignore_older applies to a file with a position"
        );
        assert_eq!(Begin::at(&p).start, Start::At(40));
        assert_eq!((Begin::at(&p).safe, Begin::at(&p).fp), (40, p.fp));
        assert_eq!(
            r.start_of((1, 7), Seen::Appeared).start,
            Start::At(0),
            "used up by the first file that had it"
        );
    }

    #[test]
    fn positions_imported_from_flume_resume_their_files_and_the_run_is_still_a_first() {
        let mut r = resume(Loaded::Imported(vec![position(7, 40)]), ReadFrom::End, None);
        assert_eq!(
            r.start_of((1, 7), listed(true, HOUR, 100)).start,
            Start::At(40),
            "where Flume stopped"
        );
        assert_eq!(
            r.start_of((1, 8), listed(true, HOUR, 100)).start,
            Start::End,
            "a file Flume did not follow: skipToEnd (read_from: end) applies"
        );
    }

    #[test]
    fn read_from_end_applies_to_the_startup_scan_of_the_first_run_only() {
        let mut first_run = resume(Loaded::Missing, ReadFrom::End, None);
        let end = Begin {
            start: Start::End,
            safe: 0,
            fp: None,
            rewrites: 0,
        };
        assert_eq!(first_run.start_of((1, 1), listed(true, HOUR, 9)), end);
        let from_zero = Begin {
            start: Start::At(0),
            safe: 0,
            fp: None,
            rewrites: 0,
        };
        assert_eq!(
            first_run.start_of((1, 2), listed(false, HOUR, 9)),
            from_zero
        );
        assert_eq!(first_run.start_of((1, 3), Seen::Appeared), from_zero);

        let mut later_run = resume(Loaded::Read(Vec::new()), ReadFrom::End, None);
        assert_eq!(later_run.start_of((1, 1), listed(true, HOUR, 9)), from_zero);
        let set_aside = Loaded::SetAside {
            error: "bad".into(),
            moved_to: Some(PathBuf::from("p.json.corrupt")),
        };
        let mut after_corruption = resume(set_aside, ReadFrom::End, None);
        assert_eq!(
            after_corruption.start_of((1, 1), listed(true, HOUR, 9)),
            from_zero,
            "a file the corrupt position file may have held is read whole"
        );

        let mut beginning = resume(Loaded::Missing, ReadFrom::Beginning, None);
        assert_eq!(beginning.start_of((1, 1), listed(true, HOUR, 9)), from_zero);
    }

    #[test]
    fn ignore_older_starts_a_file_not_modified_for_that_long_at_its_end() {
        let mut r = resume(Loaded::Missing, ReadFrom::Beginning, Some(HOUR));
        let at_end = Begin {
            start: Start::At(100),
            safe: 100,
            fp: None,
            rewrites: 0,
        };
        assert_eq!(r.start_of((1, 1), listed(false, 2 * HOUR, 100)), at_end);
        assert_eq!(r.start_of((1, 2), listed(true, 2 * HOUR, 100)), at_end);
        assert_eq!(
            r.start_of((1, 3), listed(false, HOUR / 2, 100)).start,
            Start::At(0)
        );
        assert_eq!(
            r.start_of((1, 4), Seen::Appeared).start,
            Start::At(0),
            "a file seen appearing was just written"
        );
        let mut first_run_end = resume(Loaded::Missing, ReadFrom::End, Some(HOUR));
        assert_eq!(
            first_run_end
                .start_of((1, 1), listed(true, 2 * HOUR, 100))
                .start,
            Start::End,
            "read_from: end comes first at startup"
        );
    }

    #[test]
    fn the_positions_no_file_was_found_for_are_taken_once() {
        let mut r = resume(
            Loaded::Read(vec![position(1, 5), position(2, 6)]),
            ReadFrom::Beginning,
            None,
        );
        assert_eq!(r.start_of((1, 1), Seen::Appeared).start, Start::At(5));
        assert_eq!(r.take_rest(), vec![position(2, 6)]);
        assert!(r.take_rest().is_empty());
        assert_eq!(r.start_of((1, 2), Seen::Appeared).start, Start::At(0));
    }
}
