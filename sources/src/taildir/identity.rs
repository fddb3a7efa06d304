//! File identity: device and inode, plus a fingerprint of the first bytes, so that an inode
//! reused after a delete, or a file truncated and written again, is not mistaken for the file
//! that was read before.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::str::FromStr;

/// The most bytes a fingerprint covers.
pub const FINGERPRINT_MAX: u64 = 256;

/// A hash of a file's first `len` bytes.
///
/// It is taken once the file has lines that were read (`len` is then the smaller of
/// [`FINGERPRINT_MAX`] and the end of the first line, which never changes once written) and
/// never changes afterwards, so that the file's `fid` header stays the same for its whole
/// life, across restarts too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// How many bytes it covers (at least 1).
    pub len: u64,
    /// 64-bit FNV-1a of those bytes.
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of `prefix`, whole.
    pub fn of(prefix: &[u8]) -> Self {
        Fingerprint {
            len: prefix.len() as u64,
            hash: crate::fnv1a(prefix),
        }
    }

    /// The fingerprint of the first `len` bytes of `file`, or `None` if it is shorter.
    pub fn read(file: &File, len: u64) -> io::Result<Option<Self>> {
        let mut buf = [0u8; FINGERPRINT_MAX as usize];
        let n = len.min(FINGERPRINT_MAX) as usize;
        match file.read_exact_at(&mut buf[..n], 0) {
            Ok(()) => Ok(Some(Fingerprint::of(&buf[..n]))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Written as `LEN-HASH` with the hash in hexadecimal, as in the position file.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:016x}", self.len, self.hash)
    }
}

/// Why a fingerprint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a fingerprint (LEN-HEXHASH)")]
pub struct BadFingerprint(String);

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Self, BadFingerprint> {
        let bad = || BadFingerprint(s.to_owned());
        let (len, hash) = s.split_once('-').ok_or_else(bad)?;
        let len: u64 = len.parse().map_err(|_| bad())?;
        if len == 0 || len > FINGERPRINT_MAX || hash.len() != 16 {
            return Err(bad());
        }
        let hash = u64::from_str_radix(hash, 16).map_err(|_| bad())?;
        Ok(Fingerprint { len, hash })
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The `fid` header: `DEV:INO:HASH`, which tells a recreated file from its predecessor even
/// when the inode was reused: HASH covers the fingerprint and, where the file system records
/// it, the file's birth time (a new file on a reused inode whose first line is the same, a
/// constant banner, still differs by it; a rename keeps it).
pub fn fid(dev: u64, ino: u64, fp: Fingerprint, born: Option<std::time::SystemTime>) -> String {
    let hash = match born.and_then(crate::unix_nanos) {
        None => fp.hash,
        Some(b) => {
            let mut bytes = [0u8; 24];
            bytes[..8].copy_from_slice(&fp.hash.to_le_bytes());
            bytes[8..].copy_from_slice(&b.to_le_bytes());
            crate::fnv1a(&bytes)
        }
    };
    format!("{dev}:{ino}:{hash:016x}")
}

/// What a file found at a remembered device and inode is, compared to what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The same file, as long as or longer than the remembered offset.
    Same,
    /// The same first bytes but shorter than the offset: truncated (copytruncate).
    Shrunk,
    /// Other first bytes: another file on a reused inode, or truncated and written again.
    Replaced,
}

/// Judges a file at the remembered device and inode: `expected` is the remembered
/// fingerprint (if one was taken), `offset` how far it was read, `size` its size now, and
/// `actual` the fingerprint of its first `expected.len` bytes now (`None` if it is shorter).
pub fn judge(
    expected: Option<Fingerprint>,
    offset: u64,
    size: u64,
    actual: Option<Fingerprint>,
) -> Verdict {
    if let Some(fp) = expected
        && actual != Some(fp)
    {
        return Verdict::Replaced;
    }
    if size < offset {
        return Verdict::Shrunk;
    }
    Verdict::Same
}

/// Judges the open `file` as [`judge`] does, reading its first bytes when needed.
pub fn judge_file(
    file: &File,
    expected: Option<Fingerprint>,
    offset: u64,
    size: u64,
) -> io::Result<Verdict> {
    let actual = match expected {
        Some(fp) if size >= fp.len => Fingerprint::read(file, fp.len)?,
        _ => None,
    };
    Ok(judge(expected, offset, size, actual))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    impl Fingerprint {
        /// The fingerprint of the first `len` bytes of `data`, or `None` if it is shorter.
        fn of_prefix(data: &[u8], len: u64) -> Option<Self> {
            data.get(..usize::try_from(len).ok()?).map(Fingerprint::of)
        }
    }

    /// The fingerprint the source takes after reading `content` up to `offset`.
    fn taken(content: &[u8], offset: u64) -> Option<Fingerprint> {
        (offset > 0).then(|| Fingerprint::of_prefix(content, offset.min(FINGERPRINT_MAX)).unwrap())
    }

    /// Judges `now` as the file at the same inode, against what was taken from `before`.
    fn judge_bytes(before: &[u8], offset: u64, now: &[u8]) -> Verdict {
        let expected = taken(before, offset);
        let actual = expected.and_then(|fp| Fingerprint::of_prefix(now, fp.len));
        judge(expected, offset, now.len() as u64, actual)
    }

    #[test]
    fn fingerprints_round_trip_through_their_text_form() {
        let fp = Fingerprint::of(b"hello");
        assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
        for bad in [
            "",
            "5",
            "0-0000000000000000",
            "257-0000000000000000",
            "5-xyz",
            "5-00",
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
    }

    #[test]
    fn reading_a_fingerprint_from_a_file_matches_hashing_its_bytes() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"line one\nline two\n").unwrap();
        assert_eq!(
            Fingerprint::read(&f, 9).unwrap(),
            Some(Fingerprint::of(b"line one\n"))
        );
        assert_eq!(Fingerprint::read(&f, 100).unwrap(), None);
        let fp = Fingerprint::of(b"line one\n");
        assert_eq!(judge_file(&f, Some(fp), 9, 18).unwrap(), Verdict::Same);
        f.set_len(4).unwrap();
        assert_eq!(judge_file(&f, Some(fp), 9, 4).unwrap(), Verdict::Replaced);
        assert_eq!(judge_file(&f, None, 9, 4).unwrap(), Verdict::Shrunk);
    }

    #[test]
    fn the_fid_names_device_inode_and_hash() {
        let fp = Fingerprint { len: 3, hash: 0xab };
        assert_eq!(fid(8, 42, fp, None), "8:42:00000000000000ab");
        let at = |s| Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(fid(8, 42, fp, at(5)), fid(8, 42, fp, at(5)), "stable");
        assert_ne!(
            fid(8, 42, fp, at(5)),
            fid(8, 42, fp, at(6)),
            "a file created later on the same inode, with the same first line"
        );
    }

    proptest! {
        #[test]
        fn a_growing_file_stays_the_same(
            content in proptest::collection::vec(any::<u8>(), 1..600),
            cut in 0.0f64..1.0,
            growth in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let offset = ((content.len() as f64 * cut) as u64).max(1);
            let mut now = content.clone();
            now.extend_from_slice(&growth);
            prop_assert_eq!(judge_bytes(&content, offset, &now), Verdict::Same);
        }

        #[test]
        fn a_truncated_file_is_never_the_same(
            content in proptest::collection::vec(any::<u8>(), 2..600),
            cut in 0.0f64..1.0,
            keep in 0.0f64..1.0,
        ) {
            let offset = ((content.len() as f64 * cut) as u64).max(1);
            let kept = (offset as f64 * keep) as usize;
            prop_assume!((kept as u64) < offset);
            let v = judge_bytes(&content, offset, &content[..kept]);
            prop_assert_ne!(v, Verdict::Same);
            if kept as u64 >= offset.min(FINGERPRINT_MAX) {
                prop_assert_eq!(v, Verdict::Shrunk);
            }
        }

        #[test]
        fn a_reused_inode_with_other_first_bytes_is_replaced(
            old in proptest::collection::vec(any::<u8>(), 1..400),
            new in proptest::collection::vec(any::<u8>(), 0..400),
            cut in 0.0f64..1.0,
        ) {
            let offset = ((old.len() as f64 * cut) as u64).max(1);
            let fp_len = offset.min(FINGERPRINT_MAX) as usize;
            prop_assume!(new.get(..fp_len) != Some(&old[..fp_len]));
            prop_assert_eq!(judge_bytes(&old, offset, &new), Verdict::Replaced);
        }

        #[test]
        fn a_file_never_read_is_judged_by_size_alone(size in 0u64..1000, offset in 0u64..1000) {
            let want = if size < offset { Verdict::Shrunk } else { Verdict::Same };
            prop_assert_eq!(judge(None, offset, size, None), want);
        }
    }
}
