//! Recovery at open: find where the committed part of the log ends, verify every record after
//! it, truncate a torn tail, and report damage without ever failing on it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::checkpoint::{self, Loaded};
use super::record::{self, EventIter};
use super::segment::{self, Scanner};
use super::state::{Pos, SegMeta};

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The segments left, all sealed.
    pub segments: BTreeMap<u64, SegMeta>,
    /// Where delivery resumes.
    pub start: Pos,
    /// Events held from `start` on.
    pub events: usize,
    /// Their weight.
    pub bytes: usize,
    /// The id of the next segment to create.
    pub next_id: u64,
    /// Damaged records or ranges found.
    pub corrupt: u64,
}

/// An I/O failure during recovery, and the file it concerns.
#[derive(Debug)]
pub struct Failure {
    /// What was being done.
    pub action: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The error.
    pub source: io::Error,
}

fn failed(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Failure + use<> {
    let path = path.to_path_buf();
    move |source| Failure {
        action,
        path,
        source,
    }
}

/// Where counting starts in the checkpoint's segment.
enum Start {
    /// No valid checkpoint: everything on disk is delivered.
    Everything,
    /// Records before this position are committed.
    After(Pos),
}

/// Recovers channel `name` in `dir`.
pub fn recover(dir: &Path, name: &str) -> Result<Recovered, Failure> {
    let began = Instant::now();
    let tmp = dir.join(checkpoint::TMP_FILE);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(failed("remove", &tmp)(e)),
        _ => {}
    }
    let mut ids = segment::list(dir).map_err(failed("list", dir))?;
    let cp_path = dir.join(checkpoint::FILE);
    let loaded = checkpoint::load(dir).map_err(failed("read", &cp_path))?;
    let newest = ids.last().copied().unwrap_or(0);
    let next_id = match &loaded {
        Loaded::At(pos) => newest.max(pos.seg) + 1,
        _ => newest + 1,
    };
    let start = match loaded {
        Loaded::At(pos) if ids.binary_search(&pos.seg).is_ok() => Start::After(pos),
        Loaded::At(pos) => {
            if !ids.is_empty() {
                warn!(channel = name, checkpoint = %cp_path.display(), segment = pos.seg,
                    "the checkpoint names a segment that does not exist; \
                     delivering every record on disk again");
            }
            Start::Everything
        }
        Loaded::Missing => {
            if !ids.is_empty() {
                warn!(channel = name, checkpoint = %cp_path.display(),
                    "no checkpoint; delivering every record on disk again");
            }
            Start::Everything
        }
        Loaded::Corrupt(why) => {
            warn!(channel = name, checkpoint = %cp_path.display(), problem = why,
                "the checkpoint is unreadable; delivering every record on disk again");
            Start::Everything
        }
    };
    if let Start::After(pos) = &start {
        for &id in ids.iter().filter(|&&id| id < pos.seg) {
            let path = segment::path(dir, id);
            fs::remove_file(&path).map_err(failed("remove", &path))?;
            debug!(channel = name, segment = %path.display(), "removed a committed segment");
        }
        ids.retain(|&id| id >= pos.seg);
    }

    let mut resume: Option<Pos> = None;
    let mut out = Recovered {
        segments: BTreeMap::new(),
        start: Pos::start_of(next_id),
        events: 0,
        bytes: 0,
        next_id,
        corrupt: 0,
    };
    let mut truncated = 0u64;
    let last = ids.last().copied();
    for &id in &ids {
        let path = segment::path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(failed("open", &path))?;
        let len = file.metadata().map_err(failed("inspect", &path))?.len();
        let after = match &start {
            Start::After(pos) if pos.seg == id => Some(*pos),
            _ => None,
        };
        let scan = ScanSegment {
            name,
            path: &path,
            id,
            is_last: Some(id) == last,
            after,
        };
        let found = scan.run(&file, len).map_err(failed("read", &path))?;
        out.corrupt += found.corrupt;
        resume = resume.or(found.start);
        if found.valid_end <= segment::HEADER_LEN {
            drop(file);
            fs::remove_file(&path).map_err(failed("remove", &path))?;
            debug!(channel = name, segment = %path.display(), "removed a segment without records");
            continue;
        }
        if found.valid_end < len && Some(id) == last {
            file.set_len(found.valid_end)
                .and_then(|()| file.sync_all())
                .map_err(failed("truncate", &path))?;
            truncated += len - found.valid_end;
        }
        out.events += found.events;
        out.bytes += found.bytes;
        out.segments.insert(
            id,
            SegMeta {
                len: found.valid_end,
                sealed: true,
                origins: found.origins,
                holes: found.holes,
            },
        );
    }
    if let Some(p) = resume {
        out.start = p;
    }
    info!(channel = name, dir = %dir.display(), segments = out.segments.len(), events = out.events,
        bytes = out.bytes, corrupt = out.corrupt, truncated_bytes = truncated,
        elapsed_ms = began.elapsed().as_millis() as u64, "file channel recovered");
    Ok(out)
}

/// One segment's scan.
struct ScanSegment<'a> {
    name: &'a str,
    path: &'a Path,
    id: u64,
    is_last: bool,
    /// The checkpoint, if it is in this segment.
    after: Option<Pos>,
}

/// What one segment's scan found.
#[derive(Default)]
struct Found {
    valid_end: u64,
    origins: Vec<Option<Arc<super::Origin>>>,
    holes: Vec<(u64, u64)>,
    events: usize,
    bytes: usize,
    corrupt: u64,
    /// Where delivery starts, if it starts in this segment.
    start: Option<Pos>,
}

impl ScanSegment<'_> {
    fn run(&self, file: &File, len: u64) -> io::Result<Found> {
        let mut found = Found::default();
        let mut scanner = Scanner::new(file, len);
        if len <= segment::HEADER_LEN {
            return Ok(found);
        }
        if !scanner.header_ok(self.id)? {
            error!(channel = self.name, segment = %self.path.display(),
                "damaged segment header; its records are still read");
            found.corrupt += 1;
        }
        // Everything counts from the start unless the checkpoint is in this segment.
        let mut counting = self.after.is_none();
        if counting {
            found.start = Some(Pos::start_of(self.id));
        }
        let mut pos = segment::HEADER_LEN;
        while pos < len {
            let verdict = match scanner.record_at(pos)? {
                Some(rec) => {
                    let end = pos + rec.len;
                    let ok = match rec.kind {
                        record::KIND_ORIGIN => match record::decode_origin(rec.payload) {
                            Some((id, origin)) if (id as usize) < found.origins.len() + 1024 => {
                                let id = id as usize;
                                if found.origins.len() <= id {
                                    found.origins.resize(id + 1, None);
                                }
                                found.origins[id] = Some(Arc::new(origin));
                                true
                            }
                            _ => false,
                        },
                        _ => {
                            if !counting && self.after.is_some_and(|a| end > a.off) {
                                counting = true;
                                found.start = Some(self.start_at(pos));
                            }
                            let skip = match found.start {
                                Some(s) if s.off == pos => s.skip,
                                _ => 0,
                            };
                            match tally(rec.kind, rec.payload, skip, &found.origins) {
                                Some((n, b)) => {
                                    if counting {
                                        found.events += n;
                                        found.bytes += b;
                                    }
                                    true
                                }
                                None => false,
                            }
                        }
                    };
                    ok.then_some(end)
                }
                None => None,
            };
            if let Some(end) = verdict {
                pos = end;
                continue;
            }
            match scanner.next_valid(pos + 1, len)? {
                Some(next) => {
                    error!(channel = self.name, segment = %self.path.display(), position = pos,
                        skipped_bytes = next - pos,
                        "corrupt record: skipped; the records after it are kept");
                    found.corrupt += 1;
                    found.holes.push((pos, next));
                    pos = next;
                }
                None if self.is_last => {
                    warn!(channel = self.name, segment = %self.path.display(), position = pos,
                        bytes = len - pos, "torn tail (a write cut short) truncated");
                    break;
                }
                None => {
                    error!(channel = self.name, segment = %self.path.display(), position = pos,
                        skipped_bytes = len - pos, "corrupt end of segment: skipped");
                    found.corrupt += 1;
                    break;
                }
            }
        }
        found.valid_end = pos.min(len);
        if !counting {
            // The checkpoint is at or past the last verified record: nothing here is left.
            found.start = Some(Pos {
                seg: self.id,
                off: found.valid_end,
                skip: 0,
            });
        }
        Ok(found)
    }

    /// Where delivery resumes given the first record at `pos` that ends past the checkpoint.
    fn start_at(&self, pos: u64) -> Pos {
        match self.after {
            Some(a) if a.off == pos => Pos {
                seg: self.id,
                off: pos,
                skip: a.skip,
            },
            Some(a) => {
                if a.off > pos {
                    warn!(channel = self.name, segment = %self.path.display(), checkpoint = a.off,
                        record = pos,
                        "the checkpoint points inside a record; delivering the whole record again");
                }
                Pos {
                    seg: self.id,
                    off: pos,
                    skip: 0,
                }
            }
            None => Pos::start_of(self.id),
        }
    }
}

/// Verifies an events payload against the known origins; returns the events and bytes after
/// the first `skip`, or `None` if it is malformed.
fn tally(
    kind: u8,
    payload: &[u8],
    skip: u32,
    origins: &[Option<Arc<super::Origin>>],
) -> Option<(usize, usize)> {
    let mut it = EventIter::new(kind, payload)?;
    let (mut events, mut bytes) = (0usize, 0usize);
    for (i, e) in it.by_ref().enumerate() {
        origins.get(e.origin as usize)?.as_ref()?;
        if i >= skip as usize {
            events += 1;
            bytes += e.body.len();
            if !e.headers.is_empty() {
                bytes += record::decode_headers(&payload[e.headers])?.bytes();
            }
        }
    }
    it.is_valid().then_some((events, bytes))
}
