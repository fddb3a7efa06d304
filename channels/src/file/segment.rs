//! Segment files: their names, their header, and a scanner that reads their records and finds
//! the next valid record after a damaged one.
//!
//! A segment is `NNNNNNNNNNNNNNNNNNNN.wal` (its id, 20 digits, so that names sort by id): a
//! 24-byte header (magic `SLWALSEG`, format version u32, id u64, CRC32C of those 20 bytes)
//! followed by records (see [`super::record`]).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Parsed};

/// The length of a segment's header; its first record starts here.
pub const HEADER_LEN: u64 = 24;
const MAGIC: &[u8; 8] = b"SLWALSEG";
const VERSION: u32 = 1;
const SUFFIX: &str = ".wal";
/// How much the scanner reads at a time.
const SCAN_BUF: usize = 1 << 20;

/// The path of segment `id` in `dir`.
pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

/// The id of a segment file name, or `None` for any other file.
pub fn parse_name(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The ids of the segments in `dir`, in order.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(id) = parse_name(&entry?.file_name()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The header of segment `id`.
pub fn header(id: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Creates segment `id` (it must not exist) and writes its header.
pub fn create(dir: &Path, id: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path(dir, id))?;
    file.write_all_at(&header(id), 0)?;
    Ok(file)
}

/// Reads `buf.len()` bytes at `pos`, fewer only where the file ends; returns how many.
pub fn read_at_most(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A record found by [`Scanner::record_at`].
pub struct Found<'a> {
    /// Its kind.
    pub kind: u8,
    /// Its payload.
    pub payload: &'a [u8],
    /// Its whole length.
    pub len: u64,
}

/// Reads records of one segment file through a large buffer.
pub struct Scanner<'f> {
    file: &'f File,
    len: u64,
    buf: Vec<u8>,
    at: u64,
}

impl<'f> Scanner<'f> {
    /// A scanner of `file`, whose first `len` bytes are looked at.
    pub fn new(file: &'f File, len: u64) -> Self {
        Scanner {
            file,
            len,
            buf: Vec::new(),
            at: 0,
        }
    }

    /// True if the segment's header is intact and names segment `id`.
    pub fn header_ok(&mut self, id: u64) -> io::Result<bool> {
        Ok(self.window(0, HEADER_LEN as usize)? == header(id))
    }

    /// The bytes `[pos, pos + n)`, fewer where the scanned length ends.
    fn window(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        let end = pos.saturating_add(n as u64).min(self.len);
        if pos >= end {
            return Ok(&[]);
        }
        let loaded = self.at + self.buf.len() as u64;
        if pos < self.at || end > loaded {
            let want = (n.max(SCAN_BUF) as u64).min(self.len - pos) as usize;
            self.buf.resize(want, 0);
            let got = read_at_most(self.file, &mut self.buf, pos)?;
            self.buf.truncate(got);
            self.at = pos;
        }
        let from = (pos - self.at) as usize;
        let to = ((end - self.at) as usize).min(self.buf.len());
        Ok(&self.buf[from.min(to)..to])
    }

    /// The verified record at `pos`, or `None` if no valid record starts there (damaged, or
    /// cut off by the end of the scanned length).
    pub fn record_at(&mut self, pos: u64) -> io::Result<Option<Found<'_>>> {
        let mut need = record::HEADER_LEN;
        loop {
            let window = self.window(pos, need)?;
            let outcome = match record::parse(window) {
                Parsed::Record { kind, len, .. } => Ok((kind, len)),
                Parsed::Incomplete(n) => Err(Some(n)),
                Parsed::Invalid => Err(None),
            };
            match outcome {
                Ok((kind, len)) => {
                    let window = self.window(pos, len)?;
                    return Ok(Some(Found {
                        kind,
                        payload: &window[record::HEADER_LEN..],
                        len: len as u64,
                    }));
                }
                Err(Some(n)) if n > need && pos + n as u64 <= self.len => need = n,
                Err(_) => return Ok(None),
            }
        }
    }

    /// The position of the first valid record at or after `from` that ends by `end`.
    pub fn next_valid(&mut self, from: u64, end: u64) -> io::Result<Option<u64>> {
        let end = end.min(self.len);
        let mut q = from;
        while q + (record::HEADER_LEN as u64) <= end {
            let window = self.window(q, SCAN_BUF)?;
            let limit = ((end - q) as usize).min(window.len());
            if limit == 0 {
                break;
            }
            let Some(i) = window[..limit].iter().position(|&b| b == record::MAGIC[0]) else {
                q += limit as u64;
                continue;
            };
            let candidate = q + i as u64;
            let found = self.record_at(candidate)?.map(|f| f.len);
            if found.is_some_and(|len| candidate + len <= end) {
                return Ok(Some(candidate));
            }
            q = candidate + 1;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_id_and_other_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for id in [10, 2, 300] {
            create(dir.path(), id).unwrap();
        }
        fs::write(dir.path().join("checkpoint"), b"x").unwrap();
        fs::write(dir.path().join("12.wal"), b"x").unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![2, 10, 300]);
        assert_eq!(parse_name(OsStr::new("00000000000000000002.wal")), Some(2));
        assert!(
            create(dir.path(), 2).is_err(),
            "an existing segment is never overwritten"
        );
    }

    #[test]
    fn the_scanner_finds_records_and_skips_damage() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(dir.path(), 1).unwrap();
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..3u8 {
            starts.push(HEADER_LEN + buf.len() as u64);
            let s = record::begin(&mut buf, record::KIND_EVENTS);
            buf.extend_from_slice(&[0, 0, i]);
            record::finish(&mut buf, s);
        }
        buf[20] ^= 0xFF; // inside the second record
        file.write_all_at(&buf, HEADER_LEN).unwrap();
        let len = HEADER_LEN + buf.len() as u64;
        let file = File::open(path(dir.path(), 1)).unwrap();
        let mut s = Scanner::new(&file, len);
        assert!(s.header_ok(1).unwrap());
        assert!(!s.header_ok(2).unwrap());
        assert_eq!(s.record_at(starts[0]).unwrap().unwrap().payload, &[0, 0, 0]);
        assert!(s.record_at(starts[1]).unwrap().is_none());
        assert_eq!(s.next_valid(starts[1] + 1, len).unwrap(), Some(starts[2]));
        assert_eq!(s.next_valid(starts[2] + 1, len).unwrap(), None);
        let mut cut = Scanner::new(&file, len - 1);
        assert!(cut.record_at(starts[2]).unwrap().is_none());
    }
}
