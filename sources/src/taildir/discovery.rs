//! Finding files: folding the watcher's events in, expanding the patterns (at once when names
//! change, every `scan_interval` as a safety net), matching what a scan lists to the files
//! followed, and looking for files that moved by their inode.

use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sluice_channels::Origin;
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use super::files::{FileState, Id, Slot};
use super::matcher::{Listing, Patterns};
use super::reader::Start;
use super::resume::{Begin, Seen};
use super::watcher::{Held, Shared, Watcher};
use super::{Tail, TailDirConfig};
use crate::blocking;
use crate::pipeline::Key;
use crate::{SourceContext, SourceMetrics};

/// What the log says of a file found again under a followed name after it left it (renamed
/// away and back, or linked again), read on from where it was.
const BACK: &str =
    "a file that left its path is back under a followed name; reading on from where it was";

/// The least time between two expansions of the patterns caused by events.
const RESCAN_GAP: Duration = Duration::from_millis(20);
/// Every this many scans, every matched file is looked at (`stat`), also those whose inode the
/// folder listing shows unchanged: a safety net for growth that raised no event.
const THOROUGH_EVERY: u32 = 6;

/// The patterns and the watcher, lent together to a blocking scan.
struct Scanner {
    patterns: Arc<Patterns>,
    watcher: Watcher,
}

/// What finds files: the patterns, the watcher and when to scan next.
pub(super) struct Discovery {
    patterns: Arc<Patterns>,
    /// `None` while lent to a scan.
    scanner: Option<Scanner>,
    shared: Arc<Shared>,
    schedule: Schedule,
}

impl Discovery {
    /// Finds the files `cfg.paths` match, never the agent's own files (under `ctx`'s data and
    /// state folders, the position file and its temporary file).
    pub fn new(cfg: &TailDirConfig, ctx: &SourceContext, position_file: &Path) -> Self {
        let mut patterns = Patterns::new(&cfg.paths, &cfg.exclude);
        // The agent's own files are never read: a position file under a watched glob would
        // otherwise be shipped, and each rewrite of it would be a new file to follow.
        patterns.keep_out(&ctx.data_dir);
        patterns.keep_out(&ctx.state_dir);
        patterns.keep_out(position_file);
        let mut tmp = position_file.to_path_buf().into_os_string();
        tmp.push(".tmp");
        patterns.keep_out(Path::new(&tmp));
        let patterns = Arc::new(patterns);
        let watcher = Watcher::new(patterns.clone());
        Discovery {
            shared: watcher.shared(),
            scanner: Some(Scanner {
                patterns: patterns.clone(),
                watcher,
            }),
            patterns,
            schedule: Schedule::new(Instant::now()),
        }
    }

    /// What the watcher's thread records, and wakes the source with.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Some folders are polled rather than watched.
    pub fn polling(&self) -> bool {
        self.schedule.polling
    }

    /// A scan is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.schedule.is_due(now)
    }

    /// When the next scan is due, unless an event comes first.
    pub fn wake(&self) -> Instant {
        self.schedule.wake()
    }

    /// Something changed that only a scan can tell: scan soon.
    pub fn want(&mut self) {
        self.schedule.wanted = true;
    }
}

/// When the patterns are expanded again, and whether the next scan looks at every file.
struct Schedule {
    /// The number of the last scan.
    scan_no: u64,
    /// Scans since every file was last looked at.
    since_thorough: u32,
    /// Events were lost: the next scan looks at every file.
    thorough_wanted: bool,
    /// An event asked for a scan: it runs [`RESCAN_GAP`] after the last one at the earliest.
    wanted: bool,
    last: Instant,
    next: Instant,
    /// Some folders are polled: every scan looks at every file.
    polling: bool,
}

impl Schedule {
    /// No scan yet; the first is due at `now`.
    fn new(now: Instant) -> Self {
        Schedule {
            scan_no: 0,
            since_thorough: 0,
            thorough_wanted: false,
            wanted: false,
            last: now,
            next: now,
            polling: false,
        }
    }

    /// A scan is due at `now`: the periodic one, or one an event asked for.
    fn is_due(&self, now: Instant) -> bool {
        now >= self.next || (self.wanted && now >= self.last + RESCAN_GAP)
    }

    /// When a scan is due next.
    fn wake(&self) -> Instant {
        if self.wanted {
            self.next.min(self.last + RESCAN_GAP)
        } else {
            self.next
        }
    }

    /// A scan begins at `began` (`first` at startup); returns whether it looks at every file:
    /// the first, every one while polling, the one after lost events, and every
    /// [`THOROUGH_EVERY`]th periodic one.
    fn begin(&mut self, first: bool, began: Instant) -> bool {
        let periodic = began >= self.next;
        let thorough = first
            || self.polling
            || self.thorough_wanted
            || (periodic && self.since_thorough + 1 >= THOROUGH_EVERY);
        if thorough {
            self.since_thorough = 0;
            self.thorough_wanted = false;
        } else if periodic {
            self.since_thorough += 1;
        }
        thorough
    }

    /// A scan listed the files at `now`; the next periodic one comes `every` later.
    fn listed(&mut self, polling: bool, now: Instant, every: Duration) {
        self.polling = polling;
        self.wanted = false;
        self.last = now;
        self.next = now + every;
    }
}

impl Tail {
    /// Folds file-system events into the queue and the need for a scan.
    pub(super) fn take_changes(&mut self) {
        let changes = self.discovery.shared.take();
        for h in changes.held {
            self.hold(h);
        }
        for (path, what) in changes.missed {
            SourceMetrics::add(&self.ctx.metrics.files_missed, 1);
            warn!(file = %path.display(), what,
                "a file matched the patterns but could not be read: its lines are lost");
        }
        if changes.rescan {
            self.discovery.schedule.wanted = true;
            self.discovery.schedule.thorough_wanted = true;
            let open: Vec<Key> = self
                .files
                .iter()
                .filter(|(_, s)| s.is_open())
                .map(|(k, _)| k)
                .collect();
            for key in open {
                self.jobs.enqueue(key, &mut self.files);
            }
        }
        for p in &changes.data {
            match self.files.by_path(p) {
                Some(key) => self.jobs.enqueue(key, &mut self.files),
                None if self.discovery.patterns.matches(p) => self.discovery.want(),
                None => {}
            }
        }
        if changes
            .names
            .iter()
            .any(|p| self.files.by_path(p).is_some() || self.discovery.patterns.matches(p))
        {
            self.discovery.want();
        }
    }

    /// Takes a file the watcher opened as it appeared: a new file is followed through that
    /// handle, so renaming or deleting it before the source got to it loses nothing.
    fn hold(&mut self, h: Held) {
        let Held {
            path,
            at,
            file,
            dev,
            ino,
            born,
        } = h;
        // Past `max_open_files`, the file is followed by name and inode as any other.
        let room = self.open.has_room();
        if let Some(key) = self.files.by_inode_in_use((dev, ino), born) {
            let Some(st) = self.files.get_mut(key).filter(|st| !st.retiring) else {
                return;
            };
            if !st.bound {
                // Back under a followed name: the scan binds it (and says so).
                self.discovery.want();
            }
            if matches!(st.reader, Slot::Closed) && room {
                self.open.hold(st, file);
                self.jobs.enqueue(key, &mut self.files);
            }
            return;
        }
        let (was, begin) = match self.came_back((dev, ino), born, &path) {
            Some(back) => back,
            None => {
                info!(file = %path.display(), at = %at.display(),
                    "following a new file from the moment it appeared");
                self.resumed((dev, ino), Seen::Appeared)
            }
        };
        let pattern = self.discovery.patterns.pattern_of(&path).unwrap_or(0);
        let key = self.add(&path, was.as_deref(), pattern, ((dev, ino), born), begin);
        if let Some(st) = self.files.get_mut(key) {
            st.open_path = at;
            if room {
                self.open.hold(st, file);
            }
        }
        self.jobs.enqueue(key, &mut self.files);
        self.discovery.want();
    }

    /// The path the events carry and where to start, if the file with device and inode
    /// `id` born at `born`, found at `path`, is a file let go and forgotten that came back
    /// under a followed name: it is read on from where it was.
    fn came_back(
        &mut self,
        id: Id,
        born: Option<SystemTime>,
        path: &Path,
    ) -> Option<(Option<PathBuf>, Begin)> {
        let p = self.files.take_let_go(id, born)?;
        info!(file = %path.display(), was = %p.path, offset = p.offset, "{}", BACK);
        Some((Some(PathBuf::from(&p.path)), Begin::at(&p)))
    }

    /// The path the events of the file with device and inode `id`, found as `seen` and not
    /// come back, carry if the last run followed it under another, and where it starts.
    fn resumed(&mut self, id: Id, seen: Seen) -> (Option<PathBuf>, Begin) {
        // The path first: taking the start uses the remembered position up.
        let was = self.resume.path_of(id);
        (was, self.resume.start_of(id, seen))
    }

    /// Expands the patterns, updates the watches, and matches what it found to the files
    /// followed.
    pub(super) async fn scan(&mut self, first: bool) {
        let Some(mut scanner) = self.discovery.scanner.take() else {
            return;
        };
        let began = Instant::now();
        let known = if self.discovery.schedule.begin(first, began) {
            Arc::default()
        } else {
            self.files.known()
        };
        let listed = blocking::run(&Handle::current(), move || {
            let listing = scanner.patterns.list(&known);
            let polling = scanner.watcher.update(&listing.dirs);
            (scanner, listing, polling)
        });
        // Cut off, the source is stopping: no scan any more.
        let Ok((scanner, listing, polling)) = listed.await else {
            return;
        };
        self.discovery.scanner = Some(scanner);
        if polling && !self.discovery.polling() {
            warn!(poll_interval = ?self.cfg.poll_interval.0,
                "some folders are polled: their files are looked at every poll_interval");
        }
        let every = if polling {
            self.cfg.poll_interval.0
        } else {
            self.cfg.scan_interval.0
        };
        self.discovery
            .schedule
            .listed(polling, Instant::now(), every);
        let matched = listing.files.len();
        let lost = self.apply(listing, first);
        self.find_moved(lost).await;
        self.open
            .close_idle(&mut self.files, self.cfg.idle_timeout.0);
        debug!(matched, took = ?began.elapsed(), "patterns expanded");
    }

    /// Matches a listing to the files followed; returns the closed files whose path no
    /// longer leads to them, to be looked for by inode.
    fn apply(&mut self, listing: Listing, first: bool) -> Vec<Key> {
        self.discovery.schedule.scan_no += 1;
        let scan_no = self.discovery.schedule.scan_no;
        let scanned_at = SystemTime::now();
        for f in listing.files {
            let id = (f.dev, f.ino);
            let key = match self.files.by_inode_in_use(id, f.born) {
                Some(key) => key,
                None => {
                    let seen = Seen::Listed {
                        first,
                        scanned_at,
                        mtime: f.mtime,
                        size: f.size,
                    };
                    let (was, begin) = match self.came_back(id, f.born, &f.path) {
                        Some(back) => back,
                        None => {
                            let (was, begin) = self.resumed(id, seen);
                            let (file, start) = (f.path.display(), begin.start);
                            // At startup the start line gives the count; one line per file
                            // after.
                            if first {
                                debug!(%file, start = ?start, "following a new file");
                            } else {
                                info!(%file, start = ?start, "following a new file");
                            }
                            (was, begin)
                        }
                    };
                    self.add(&f.path, was.as_deref(), f.pattern, (id, f.born), begin)
                }
            };
            let Some(st) = self.files.get_mut(key) else {
                continue;
            };
            if st.retiring {
                continue;
            }
            st.seen = scan_no;
            if !st.bound {
                info!(file = %f.path.display(), offset = st.read_pos, "{}", BACK);
                st.bound = true;
                self.jobs.bound(key);
            }
            // A known path that still leads to the same inode: nothing else to update.
            let Some(size) = f.size else { continue };
            let Some(st) = self.files.bind(key, f.path, f.target, id) else {
                continue;
            };
            if size != st.read_end || (st.start == Start::End && !st.is_open()) {
                self.jobs.queue(key, st);
            }
        }
        let mut lost = Vec::new();
        for key in self.files.unbind_unseen(scan_no) {
            let Some(st) = self.files.get_mut(key) else {
                continue;
            };
            if st.is_open() {
                info!(file = %st.path.display(),
                    "the path no longer leads to this file (rotated, deleted or re-pointed); reading it to its end");
                self.jobs.unbound(key);
                self.jobs.queue(key, st);
            } else {
                lost.push(key);
            }
        }
        lost
    }

    /// Starts following a file found at `path`, matched by pattern number `pattern`, with
    /// device and inode `id`, born at `born` if known, read as `begin` says; its position is
    /// written at once. A file the last run followed under another path (`was`: renamed while
    /// the agent was stopped) keeps that path, and the headers of the pattern that matched it,
    /// for its events.
    fn add(
        &mut self,
        path: &Path,
        was: Option<&Path>,
        pattern: usize,
        (id, born): (Id, Option<SystemTime>),
        begin: Begin,
    ) -> Key {
        let (origin_path, pattern) = match was {
            Some(w) if w != path => (w, self.discovery.patterns.pattern_of(w).unwrap_or(pattern)),
            _ => (path, pattern),
        };
        let base = origin_for(&self.cfg, &self.ctx, origin_path, pattern);
        let mut st = FileState::new(path, id, begin, base);
        st.born = born;
        let key = self.files.add(st);
        self.positions.new_file();
        key
    }

    /// Looks for files that moved while closed (and, at startup, for files of the last run
    /// that moved while the agent was stopped) in their folder, by inode: a file renamed to a
    /// name the patterns do not match is read to its end from its position.
    async fn find_moved(&mut self, mut lost: Vec<Key>) {
        // One search per key, in order: the results are matched to the keys by position.
        lost.retain(|k| self.files.get(*k).is_some());
        let mut wanted: Vec<(PathBuf, u64, u64)> = lost
            .iter()
            .filter_map(|k| self.files.get(*k))
            .map(|s| (s.path.clone(), s.dev, s.ino))
            .collect();
        let resumed = self.resume.take_rest();
        wanted.extend(
            resumed
                .iter()
                .map(|p| (PathBuf::from(&p.path), p.dev, p.ino)),
        );
        if wanted.is_empty() {
            return;
        }
        let found = blocking::run(&Handle::current(), move || {
            wanted
                .iter()
                .map(|(p, d, i)| find_by_inode(p, *d, *i))
                .collect::<Vec<_>>()
        });
        // Cut off, the source is stopping: nothing is decided about these files.
        let Ok(found) = found.await else {
            return;
        };
        let mut found = found.into_iter();
        for key in lost {
            let at = found.next().flatten();
            let Some(st) = self.files.get_mut(key) else {
                continue;
            };
            match at {
                Some(path) => {
                    debug!(file = %st.path.display(), now_at = %path.display(),
                        "a closed file was renamed; reading it to its end");
                    st.open_path = path;
                    st.start = Start::At(st.read_pos);
                    self.jobs.unbound(key);
                    self.jobs.enqueue(key, &mut self.files);
                }
                None => {
                    debug!(file = %st.path.display(), "a closed file is gone");
                    self.jobs.retire_later(key, st);
                }
            }
        }
        for p in resumed {
            let Some(at) = found.next().flatten() else {
                info!(file = %p.path, ino = p.ino, safe_offset = p.offset,
                    "a file of the last run is gone (deleted), its position forgotten: lines it \
                     held past its safe offset, if any, cannot be read");
                self.positions.changed();
                continue;
            };
            info!(file = %p.path, now_at = %at.display(),
                "a file of the last run was rotated away; found by its inode, reading it to its end");
            let path = PathBuf::from(&p.path);
            // The pattern the file was matched under decides its static headers.
            let pattern = self.discovery.patterns.pattern_of(&path).unwrap_or(0);
            let id = (p.dev, p.ino);
            let key = self.add(&path, None, pattern, (id, None), Begin::at(&p));
            if let Some(st) = self.files.get_mut(key) {
                st.open_path = at;
                st.bound = false;
            }
            self.jobs.unbound(key);
            self.jobs.enqueue(key, &mut self.files);
        }
    }
}

/// The origin of the events of a file found at `path`, matched by pattern number `pattern`:
/// the source's static headers, then the pattern's (a pattern's header wins).
fn origin_for(
    cfg: &TailDirConfig,
    ctx: &SourceContext,
    path: &Path,
    pattern: usize,
) -> Arc<Origin> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let pattern_headers = cfg.paths.get(pattern).map(|p| &p.headers);
    for (k, v) in &cfg.headers {
        if !pattern_headers.is_some_and(|h| h.contains_key(k)) {
            headers.push((k.clone(), v.clone()));
        }
    }
    headers.extend(
        pattern_headers
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    Arc::new(Origin::for_file(&ctx.name, path, &ctx.host, headers))
}

/// Finds the file with device `dev` and inode `ino` in the folder of `path`.
fn find_by_inode(path: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
    let dir = path.parent()?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.ino() == ino)
        .map(|e| e.path())
        .find(|p| {
            std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.dev() == dev && m.ino() == ino && m.is_file())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(10);

    #[test]
    fn every_sixth_periodic_scan_looks_at_every_file_and_event_scans_do_not_count() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert!(s.is_due(t0));
        assert!(s.begin(true, t0), "the first scan");
        s.listed(false, t0, EVERY);
        let mut at = t0;
        let mut thorough = Vec::new();
        for _ in 0..12 {
            // A scan an event asked for, between two periodic ones.
            s.wanted = true;
            let event_at = at + RESCAN_GAP;
            assert!(s.is_due(event_at) && !s.is_due(at + RESCAN_GAP / 2));
            assert!(!s.begin(false, event_at));
            s.listed(false, event_at, EVERY);
            at += EVERY + RESCAN_GAP;
            assert_eq!(s.wake(), at);
            thorough.push(s.begin(false, at));
            s.listed(false, at, EVERY);
        }
        let nth: Vec<usize> = (1..=12).filter(|i| thorough[i - 1]).collect();
        assert_eq!(nth, [6, 12]);
    }

    #[test]
    fn lost_events_and_polling_make_scans_thorough() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        s.listed(false, t0, EVERY);
        s.thorough_wanted = true;
        assert!(s.begin(false, t0 + RESCAN_GAP));
        assert!(!s.begin(false, t0 + RESCAN_GAP), "once");
        s.listed(true, t0, EVERY);
        assert!(s.begin(false, t0 + RESCAN_GAP), "every scan while polling");
    }

    #[test]
    fn a_wanted_scan_waits_for_the_gap_after_the_last_one() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        s.listed(false, t0, EVERY);
        assert!(!s.is_due(t0 + RESCAN_GAP) && s.wake() == t0 + EVERY);
        s.wanted = true;
        assert_eq!(s.wake(), t0 + RESCAN_GAP);
        assert!(!s.is_due(t0) && s.is_due(t0 + RESCAN_GAP));
        s.listed(false, t0 + RESCAN_GAP, EVERY);
        assert!(!s.wanted && s.wake() == t0 + RESCAN_GAP + EVERY);
    }
}
