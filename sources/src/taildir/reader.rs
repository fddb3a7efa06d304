//! Reading files on a blocking thread: opening with identity checks, reading a chunk, framing
//! lines, and packing the lines of several files into channel batches (through the source
//! pipeline's stages, see [`crate::pipeline`]).
//!
//! A round of reads runs as one blocking task over several files, so that a thousand quiet
//! files that each got one line cost one hop to the blocking pool, not a thousand. Each
//! batch records, per file, the offset just past that file's last line in it (a [`Mark`]), so
//! that each file's position advances over its own safe receipts, in order.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_channels::{Origin, REWRITES_HEADER};

use super::config::Decoding;
use super::identity::{self, FINGERPRINT_MAX, Fingerprint, Verdict};
use crate::framing::{self, LineFramer, LongLinePolicy, LongLines, Newline};
use crate::pipeline::{
    Batch, Container, FileLines, Format, Interceptors, Key, Multiline, Packer, Stage, Transcode,
};
use crate::{SourceMetrics, now_ms};

/// How far back `read_from: end` looks for the end of the last complete line.
const TAIL_WINDOW: u64 = 64 << 10;

/// An open file and its framer.
pub struct Reader {
    file: File,
    framer: LineFramer,
    /// The lines of the last read and the stages they go through.
    lines: FileLines,
    /// The framer's long-line counts already reported.
    reported: LongLines,
}

impl Reader {
    /// Whether a stage holds lines due out at `now` (a multiline event past its timeout).
    pub fn flush_due(&self, now: std::time::Instant) -> bool {
        self.lines.flush_due(now)
    }
}

/// Where a closed file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At this offset (checked against the fingerprint and the size first).
    At(u64),
    /// After its last complete line.
    End,
}

/// The reading options every job shares.
#[derive(Debug)]
pub struct Settings {
    /// Lines per batch.
    pub batch_size: usize,
    /// The longest line kept whole.
    pub max_line: usize,
    /// What happens to longer lines.
    pub policy: LongLinePolicy,
    /// The encoding and its terminator.
    pub decoding: Decoding,
    /// The most bytes read from one file per job.
    pub chunk: usize,
    /// The most bytes read by one round of jobs.
    pub budget: usize,
    /// The container format the files are in, if not plain lines, and the source's counters
    /// (where its lines not in the format are counted).
    pub format: Option<(Format, Arc<SourceMetrics>)>,
    /// The multiline stage each file gets a copy of, if the source joins lines.
    pub multiline: Option<Multiline>,
    /// The source's interceptors, if any.
    pub interceptors: Option<Interceptors>,
}

impl Settings {
    /// The stages file `path`'s lines go through: transcoding, for an encoding other than
    /// UTF-8, then the container format, then multiline, if configured, then the
    /// interceptors, if any.
    fn stages(&self, path: &Path) -> Vec<Box<dyn Stage>> {
        let transcode = self.decoding.encoding.map(|e| {
            let piece = self.decoding.newline.piece_size(self.max_line);
            Box::new(Transcode::new(e, piece)) as Box<dyn Stage>
        });
        let container = self.format.as_ref().map(|(f, metrics)| {
            Box::new(Container::new(
                *f,
                self.max_line as u64,
                metrics.clone(),
                path,
            )) as Box<dyn Stage>
        });
        let multiline = self
            .multiline
            .clone()
            .map(|m| Box::new(m) as Box<dyn Stage>);
        let intercept = self
            .interceptors
            .as_ref()
            .map(|i| Box::new(i.stage()) as Box<dyn Stage>);
        transcode
            .into_iter()
            .chain(container)
            .chain(multiline)
            .chain(intercept)
            .collect()
    }
}

/// One file to read once.
pub struct Job {
    /// The file.
    pub key: Key,
    /// Its generation (bumped when it is truncated or replaced under the same inode).
    pub generation: u32,
    /// Its open reader, or `None` to open it at `path` from `start`.
    pub reader: Option<Box<Reader>>,
    /// A handle to open it through instead of `path` (opened when it appeared).
    pub held: Option<File>,
    /// Where to open it.
    pub path: PathBuf,
    /// Where to start when opening it.
    pub start: Start,
    /// Its device and inode: a file at `path` with others is not this file.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// Its fingerprint, once taken.
    pub fp: Option<Fingerprint>,
    /// Its events' origin, once its fingerprint is taken.
    pub origin: Option<Arc<Origin>>,
    /// Its origin without the `fid` header.
    pub base: Arc<Origin>,
    /// Emit the last unterminated line and stop if there is nothing more to read.
    pub finish_at_eof: bool,
}

/// How a job ended.
#[derive(Debug)]
pub enum Status {
    /// Read what there was; `eof` when the size seen was reached.
    Read {
        /// Nothing more to read for now.
        eof: bool,
    },
    /// A rotated file was read to its end and its last line emitted.
    Finished,
    /// The path holds another file or none: this file was not opened.
    Gone,
    /// Reading failed.
    Failed(io::Error),
}

/// What a job did.
pub struct Done {
    /// The file.
    pub key: Key,
    /// Its generation now.
    pub generation: u32,
    /// Its reader, `None` if it is closed now.
    pub reader: Option<Box<Reader>>,
    /// Its fingerprint now.
    pub fp: Option<Fingerprint>,
    /// Its origin now.
    pub origin: Option<Arc<Origin>>,
    /// How it ended.
    pub status: Status,
    /// The offset just past the last line handed out.
    pub read_pos: u64,
    /// How far the file was read (lines handed out plus a pending unterminated tail).
    pub read_end: u64,
    /// Whether new bytes were read.
    pub grew: bool,
    /// The offset the file was opened at, if this job opened it.
    pub opened_at: Option<u64>,
    /// Set when the file was found truncated or replaced and read again from its start.
    pub restarted: Option<Verdict>,
    /// Long lines met in this job.
    pub long: LongLines,
    /// The position moved past bytes that made no event (a long line's dropped rest).
    pub unmarked: bool,
    /// Where the file's complete events end: `read_pos`, or the start of the lines a stage
    /// holds back (a multiline event still open). A reader opened again starts here.
    pub complete: u64,
}

/// Runs `jobs` in order; returns what each did and the batches of their lines.
pub fn run(s: &Settings, jobs: Vec<Job>) -> (Vec<Done>, Vec<Batch>) {
    let mut packer = Packer::new(s.batch_size, now_ms());
    let mut budget = s.budget;
    let done = jobs
        .into_iter()
        .map(|j| process(s, j, &mut budget, &mut packer))
        .collect();
    (done, packer.into_batches())
}

fn process(s: &Settings, mut job: Job, budget: &mut usize, packer: &mut Packer) -> Done {
    let mut done = Done {
        key: job.key,
        generation: job.generation,
        reader: None,
        fp: job.fp,
        origin: job.origin.take(),
        status: Status::Read { eof: true },
        read_pos: 0,
        read_end: 0,
        grew: false,
        opened_at: None,
        restarted: None,
        long: LongLines::default(),
        unmarked: false,
        complete: 0,
    };
    let mut reader = match job.reader.take() {
        Some(r) => r,
        None => match open(s, &mut job, &mut done) {
            Ok(Some(r)) => r,
            Ok(None) => {
                done.status = Status::Gone;
                return done;
            }
            Err(e) => {
                done.status = Status::Failed(e);
                return done;
            }
        },
    };
    match read(s, &mut reader, &job, budget, &mut done) {
        Ok(()) => {}
        Err(e) => {
            done.status = Status::Failed(e);
            return done;
        }
    }
    done.read_pos = reader.framer.offset();
    done.read_end = done.read_pos + reader.framer.pending() as u64;
    let total = reader.framer.long_lines();
    done.long = LongLines {
        lines: total.lines - reader.reported.lines,
        dropped_bytes: total.dropped_bytes - reader.reported.dropped_bytes,
    };
    reader.reported = total;
    let origin = done.origin.as_ref().unwrap_or(&job.base);
    let last = matches!(done.status, Status::Finished);
    let key = (job.key, done.generation);
    let marked = reader.lines.pack(packer, key, origin, done.read_pos, last);
    done.complete = reader.lines.complete_to(done.read_pos);
    if marked.is_none() && done.complete > job_start(&job, &done) {
        done.unmarked = true;
    }
    if matches!(done.status, Status::Finished) {
        return done;
    }
    reader.framer.release();
    done.reader = Some(reader);
    done
}

/// Where the job's file stood before it ran, for telling whether its position moved.
fn job_start(job: &Job, done: &Done) -> u64 {
    done.opened_at.unwrap_or(match job.start {
        Start::At(o) => o,
        Start::End => 0,
    })
}

/// Opens the job's file if it still is the file (device and inode) and positions it.
fn open(s: &Settings, job: &mut Job, done: &mut Done) -> io::Result<Option<Box<Reader>>> {
    let mut file = match job.held.take() {
        Some(f) => f,
        None => match File::open(&job.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    let meta = file.metadata()?;
    if meta.dev() != job.dev || meta.ino() != job.ino {
        return Ok(None);
    }
    let size = meta.len();
    let newline = s.decoding.newline;
    let start = match job.start {
        Start::At(offset) => match identity::judge_file(&file, job.fp, offset, size)? {
            Verdict::Same => offset,
            v => {
                restart(done, v);
                0
            }
        },
        Start::End => last_line_end(&file, size, newline)?,
    };
    file.seek(SeekFrom::Start(start))?;
    done.opened_at = Some(start);
    let mut framer = LineFramer::with_newline(start, s.max_line, s.policy, newline);
    if framing::inside_line(&file, start, newline)? {
        // A position taken while a truncated line's rest was being dropped.
        framer.starts_inside_line();
    }
    Ok(Some(Box::new(Reader {
        file,
        framer,
        lines: FileLines::new(s.stages(&job.path)),
        reported: LongLines::default(),
    })))
}

/// Forgets what identified the old content: the file is read again as a new one.
fn restart(done: &mut Done, v: Verdict) {
    done.generation = done.generation.wrapping_add(1);
    done.fp = None;
    done.origin = None;
    done.restarted = Some(v);
}

/// Reads one chunk and frames it into `reader.lines`.
fn read(
    s: &Settings,
    reader: &mut Reader,
    job: &Job,
    budget: &mut usize,
    done: &mut Done,
) -> io::Result<()> {
    let size = reader.file.metadata()?.len();
    let read_end = reader.framer.offset() + reader.framer.pending() as u64;
    match identity::judge_file(&reader.file, done.fp, read_end, size)? {
        Verdict::Same => {}
        v => {
            restart(done, v);
            reader.file.seek(SeekFrom::Start(0))?;
            reader.framer = LineFramer::with_newline(0, s.max_line, s.policy, s.decoding.newline);
            reader.reported = LongLines::default();
            // Lines a stage held belong to the content that is gone: a new file starts clean.
            reader.lines = FileLines::new(s.stages(&job.path));
        }
    }
    let read_end = reader.framer.offset() + reader.framer.pending() as u64;
    let avail = size.saturating_sub(read_end);
    let want = usize::try_from(avail)
        .unwrap_or(usize::MAX)
        .min(s.chunk)
        .min(*budget);
    let n = if want > 0 {
        reader.framer.fill(&mut reader.file, want)?
    } else {
        0
    };
    *budget -= n;
    done.grew = n > 0;
    let eof = read_end + n as u64 >= size;
    reader.framer.frame(reader.lines.collect());
    if n == 0 && eof && job.finish_at_eof {
        reader.framer.finish(reader.lines.collect());
        done.status = Status::Finished;
    } else {
        done.status = Status::Read { eof };
    }
    let offset = reader.framer.offset();
    if done.fp.is_none() && offset > 0 {
        // Read from the start, the fingerprint covers the first line only: that line never
        // changes once written, so every run (a restart included) takes the same fingerprint,
        // where a longer prefix would depend on how much had been written by then.
        let framed = reader.lines.framed();
        let first_line_end = match framed.first() {
            Some(l) if l.offset == 0 => framed.get(1).map_or(offset, |l| l.offset),
            _ => offset,
        };
        done.fp = Fingerprint::read(&reader.file, first_line_end.min(FINGERPRINT_MAX))?;
    }
    if done.origin.is_none()
        && let Some(fp) = done.fp
    {
        let mut origin = (*job.base).clone();
        origin.headers.push((
            "fid".to_owned(),
            identity::fid(job.dev, job.ino, fp, born(&reader.file)),
        ));
        if done.generation > 0 {
            // Truncated or rewritten while followed: its lines start again at offset 0 under
            // the same fid when the first line is the same, and a sink that drops repeats
            // (exactly-once delivery) must not take them for repeats.
            origin
                .headers
                .push((REWRITES_HEADER.to_owned(), done.generation.to_string()));
        }
        done.origin = Some(Arc::new(origin));
    }
    Ok(())
}

/// When `file` was created, where the file system records it (statx's birth time).
fn born(file: &File) -> Option<std::time::SystemTime> {
    file.metadata().and_then(|m| m.created()).ok()
}

/// The offset after the last complete line of a file of `size` bytes (looking back at most
/// [`TAIL_WINDOW`]); the size itself if that window holds no terminator.
fn last_line_end(file: &File, size: u64, newline: Newline) -> io::Result<u64> {
    let unit = newline.unit() as u64;
    let size = size / unit * unit;
    let from = size.saturating_sub(TAIL_WINDOW) / unit * unit;
    let mut buf = vec![0u8; (size - from) as usize];
    file.read_exact_at(&mut buf, from)?;
    Ok(match newline.after_last(&buf, from) {
        Some(at) => from + at as u64,
        None if from == 0 => 0,
        None => size,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn settings(batch_size: usize, decoding: Decoding) -> Settings {
        Settings {
            batch_size,
            max_line: 1 << 20,
            policy: LongLinePolicy::Split,
            decoding,
            chunk: 1 << 20,
            budget: 4 << 20,
            format: None,
            multiline: None,
            interceptors: None,
        }
    }

    const BYTES: Decoding = Decoding {
        encoding: None,
        newline: Newline::Byte,
    };

    fn job(key: Key, path: &std::path::Path, start: Start) -> Job {
        let meta = std::fs::metadata(path).unwrap();
        Job {
            key,
            generation: 0,
            reader: None,
            held: None,
            path: path.to_path_buf(),
            start,
            dev: meta.dev(),
            ino: meta.ino(),
            fp: None,
            origin: None,
            base: Arc::new(Origin::default()),
            finish_at_eof: false,
        }
    }

    fn bodies(batches: &[Batch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                b.events
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            })
            .collect()
    }

    #[test]
    fn lines_of_several_files_share_batches_with_a_mark_per_file_and_batch() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, b"a1\na2\na3\n").unwrap();
        std::fs::write(&b, b"b1\nb2\npartial").unwrap();
        let s = settings(2, BYTES);
        let (done, batches) = run(&s, vec![job(1, &a, Start::At(0)), job(2, &b, Start::At(0))]);
        assert_eq!(bodies(&batches), ["a1", "a2", "a3", "b1", "b2"]);
        let marks: Vec<Vec<(Key, u64)>> = batches
            .iter()
            .map(|b| b.marks.iter().map(|m| (m.key, m.offset)).collect())
            .collect();
        assert_eq!(
            marks,
            vec![vec![(1, 6)], vec![(1, 9), (2, 3)], vec![(2, 6)]]
        );
        assert_eq!((done[1].read_pos, done[1].read_end), (6, 13));
        let fp = done[0].fp.unwrap();
        assert_eq!(fp, Fingerprint::of(b"a1\n"), "the first line only");
        let fid = done[0]
            .origin
            .as_ref()
            .unwrap()
            .header("fid")
            .unwrap()
            .to_owned();
        let meta = std::fs::metadata(&a).unwrap();
        assert_eq!(
            fid,
            identity::fid(meta.dev(), meta.ino(), fp, meta.created().ok()),
            "device, inode, fingerprint and birth time"
        );
    }

    #[test]
    fn a_multiline_event_held_at_a_truncation_is_not_joined_to_the_new_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"S old\n tail\n").unwrap();
        let mut s = settings(100, BYTES);
        let cfg: crate::MultilineConfig =
            serde_json::from_str(r#"{"start": "^S", "timeout": "1h"}"#).unwrap();
        s.multiline = cfg.stage(1 << 20);
        let (mut done, batches) = run(&s, vec![job(1, &p, Start::At(0))]);
        assert!(batches.is_empty());
        assert_eq!(done[0].complete, 0, "the open event holds the position");
        let first = done.remove(0);
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(0).unwrap();
        f.write_all(b" new\nS next\n").unwrap();
        let mut j = job(1, &p, Start::At(0));
        j.reader = first.reader;
        j.fp = first.fp;
        j.origin = first.origin.clone();
        let (_, batches) = run(&s, vec![j]);
        assert_eq!(bodies(&batches), [" new"]);
    }

    #[test]
    fn truncation_restarts_at_zero_with_a_new_generation_and_identity() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"old line 1\nold line 2\n").unwrap();
        let s = settings(100, BYTES);
        let (mut done, _) = run(&s, vec![job(1, &p, Start::At(0))]);
        let first = done.remove(0);
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(0).unwrap();
        f.write_all(b"new\n").unwrap();
        let mut j = job(1, &p, Start::At(0));
        j.reader = first.reader;
        j.fp = first.fp;
        j.origin = first.origin.clone();
        let (done, batches) = run(&s, vec![j]);
        assert_eq!(bodies(&batches), ["new"]);
        assert_eq!(done[0].restarted, Some(Verdict::Replaced));
        assert_eq!(done[0].generation, 1);
        assert_eq!(batches[0].marks[0].generation, 1);
        assert_ne!(
            done[0].origin.as_ref().unwrap().header("fid"),
            first.origin.as_ref().unwrap().header("fid")
        );
        assert_eq!(
            done[0].origin.as_ref().unwrap().header(REWRITES_HEADER),
            Some("1"),
            "a sink that drops repeats learns that offsets start again"
        );
        assert_eq!(first.origin.as_ref().unwrap().header(REWRITES_HEADER), None);
    }

    #[test]
    fn the_fingerprint_does_not_depend_on_how_much_was_written_when_it_was_taken() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"first line\n").unwrap();
        let s = settings(100, BYTES);
        let (early, _) = run(&s, vec![job(1, &p, Start::At(0))]);
        std::fs::write(&p, b"first line\nsecond line\nthird line\n").unwrap();
        let (late, _) = run(&s, vec![job(1, &p, Start::At(0))]);
        assert_eq!(early[0].fp, late[0].fp, "a restart keeps the file's fid");
        assert_eq!(early[0].fp, Some(Fingerprint::of(b"first line\n")));
    }

    #[test]
    fn a_reused_inode_with_a_remembered_fingerprint_is_read_from_zero() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"something else entirely\n").unwrap();
        let mut j = job(1, &p, Start::At(10));
        j.fp = Some(Fingerprint::of(b"the old f"));
        let (done, batches) = run(&settings(100, BYTES), vec![j]);
        assert_eq!(done[0].opened_at, Some(0));
        assert_eq!(bodies(&batches), ["something else entirely"]);
    }

    #[test]
    fn read_from_end_starts_after_the_last_complete_line_and_finish_emits_the_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"old\nolder\nhalf").unwrap();
        let s = settings(100, BYTES);
        let (mut done, batches) = run(&s, vec![job(1, &p, Start::End)]);
        assert!(batches.is_empty());
        assert_eq!(done[0].opened_at, Some(10));
        let mut j = job(1, &p, Start::At(0));
        j.reader = done.remove(0).reader;
        j.finish_at_eof = true;
        let (done, batches) = run(&s, vec![j]);
        assert_eq!(bodies(&batches), ["half"]);
        assert!(matches!(done[0].status, Status::Finished));
        assert_eq!(batches[0].marks[0].offset, 14);
    }

    #[test]
    fn a_file_replaced_at_its_path_is_gone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"x\n").unwrap();
        let j = job(1, &p, Start::At(0));
        let other = d.path().join("b");
        std::fs::write(&other, b"y\n").unwrap();
        std::fs::rename(&other, &p).unwrap();
        let (done, batches) = run(&settings(10, BYTES), vec![j]);
        assert!(matches!(done[0].status, Status::Gone));
        assert!(batches.is_empty());
    }

    #[test]
    fn transcoded_lines_keep_byte_offsets_of_the_original_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("gbk");
        let (gbk, _, _) = encoding_rs::GBK.encode("你好\nworld\n中文行\n");
        std::fs::write(&p, &gbk).unwrap();
        let dec = Decoding {
            encoding: Some(encoding_rs::GBK),
            newline: Newline::Byte,
        };
        let (_, batches) = run(&settings(100, dec), vec![job(1, &p, Start::At(0))]);
        assert_eq!(bodies(&batches), ["你好", "world", "中文行"]);
        let offsets: Vec<u64> = batches[0].events.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [0, 5, 11]);

        let p = d.path().join("utf16");
        let mut raw = vec![0xff, 0xfe];
        raw.extend("é\r\nz\u{0A0D}\n".encode_utf16().flat_map(u16::to_le_bytes));
        std::fs::write(&p, &raw).unwrap();
        let dec = Decoding {
            encoding: Some(encoding_rs::UTF_16LE),
            newline: Newline::Utf16Le,
        };
        let (_, batches) = run(&settings(100, dec), vec![job(1, &p, Start::At(0))]);
        assert_eq!(bodies(&batches), ["é", "z\u{0A0D}"]);
        let offsets: Vec<u64> = batches[0].events.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [0, 8]);
    }
}
