//! The checkpoint: the position up to which a sink has committed, written atomically.
//!
//! Layout (32 bytes, little-endian): magic `SLCKPT01`, segment id u64, record offset u64,
//! events of that record already committed u32, CRC32C of the preceding 28 bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::disk;
use super::state::Pos;
use crate::fsutil;

/// The checkpoint's file name in the channel directory.
pub const FILE: &str = "checkpoint";
/// The temporary name it is written under before the rename ([`fsutil::tmp_path`] of it).
pub const TMP_FILE: &str = "checkpoint.tmp";
const MAGIC: &[u8; 8] = b"SLCKPT01";
const LEN: usize = 32;

/// What reading the checkpoint found.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    /// A valid checkpoint.
    At(Pos),
    /// No checkpoint file.
    Missing,
    /// A file that is not a valid checkpoint, and why.
    Corrupt(&'static str),
}

/// Encodes `pos` as a checkpoint file's content.
pub fn encode(pos: Pos) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&pos.seg.to_le_bytes());
    b[16..24].copy_from_slice(&pos.off.to_le_bytes());
    b[24..28].copy_from_slice(&pos.skip.to_le_bytes());
    let crc = crc32c::crc32c(&b[..28]);
    b[28..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a checkpoint file's content.
pub fn decode(b: &[u8]) -> Loaded {
    if b.len() != LEN {
        return Loaded::Corrupt("wrong length");
    }
    if &b[..8] != MAGIC {
        return Loaded::Corrupt("not a checkpoint");
    }
    let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
    if crc32c::crc32c(&b[..28]) != crc {
        return Loaded::Corrupt("checksum mismatch");
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    Loaded::At(Pos {
        seg: u64_at(8),
        off: u64_at(16),
        skip: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
    })
}

/// Reads the checkpoint of `dir`. A file of any other length is corrupt, and is never read
/// whole: one byte past a checkpoint's length tells it.
pub fn load(dir: &Path) -> io::Result<Loaded> {
    let file = match File::open(dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    let mut b = Vec::with_capacity(LEN + 1);
    file.take(LEN as u64 + 1).read_to_end(&mut b)?;
    Ok(decode(&b))
}

/// Writes `pos` as the checkpoint of `dir`, atomically and durably.
///
/// On a full disk, where the temporary file cannot be written, the existing checkpoint is
/// overwritten in place instead (32 bytes within one sector, needing no new block), so that
/// commits can still free segments. A write torn by a power loss there fails its checksum,
/// and recovery then delivers everything on disk again.
pub fn store(dir: &Path, pos: Pos) -> io::Result<()> {
    let data = encode(pos);
    match fsutil::write_atomic(&dir.join(FILE), &data, true) {
        Err(e) if disk::is_no_space(&e) => overwrite(dir, &data).map_err(|_| e),
        r => r,
    }
}

/// Writes `pos` over the existing checkpoint in place, without fsync: one 32-byte write that a
/// crash of the process cannot tear, for the frequent checkpoints between durable ones. After
/// a power loss the file holds this or an earlier position (re-delivery, never loss), or fails
/// its checksum (everything on disk is delivered again). Falls back to [`store`] when there is
/// no checkpoint yet.
pub fn store_fast(dir: &Path, pos: Pos) -> io::Result<()> {
    match OpenOptions::new().write(true).open(dir.join(FILE)) {
        Ok(f) => f.write_all_at(&encode(pos), 0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => store(dir, pos),
        Err(e) => Err(e),
    }
}

fn overwrite(dir: &Path, data: &[u8]) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(dir.join(FILE))?;
    f.write_all_at(data, 0)?;
    f.sync_data()
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The tokens worth planting in a checkpoint: its magic.
    pub(crate) const DICTIONARY: &[&[u8]] = &[MAGIC];

    #[test]
    fn the_temporary_name_is_the_one_write_atomic_uses() {
        assert_eq!(fsutil::tmp_path(Path::new(FILE)), Path::new(TMP_FILE));
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Loaded::Missing);
        let pos = Pos {
            seg: 3,
            off: 4096,
            skip: 7,
        };
        store(dir.path(), pos).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Loaded::At(pos));
        let good = encode(pos);
        for i in 0..good.len() {
            let mut bad = good;
            bad[i] ^= 1;
            assert!(matches!(decode(&bad), Loaded::Corrupt(_)), "flip at {i}");
        }
        assert!(matches!(decode(b"garbage"), Loaded::Corrupt(_)));
        let later = Pos { seg: 4, ..pos };
        overwrite(dir.path(), &encode(later)).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Loaded::At(later));
        let fast = Pos { off: 8192, ..later };
        store_fast(dir.path(), fast).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Loaded::At(fast));
        let fresh = tempfile::tempdir().unwrap();
        store_fast(fresh.path(), pos).unwrap();
        assert_eq!(load(fresh.path()).unwrap(), Loaded::At(pos));
    }

    #[test]
    fn a_huge_checkpoint_file_is_corrupt_and_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join(FILE)).unwrap();
        f.write_all_at(&encode(Pos::start_of(1)), 0).unwrap();
        f.set_len(1 << 30).unwrap();
        let (loaded, largest) = crate::fuzzing::largest_allocation(|| load(dir.path()));
        assert_eq!(loaded.unwrap(), Loaded::Corrupt("wrong length"));
        assert!(largest < 4096, "{largest} bytes allocated for a 1 GiB file");
    }

    proptest! {
        /// Hostile bytes, and valid checkpoints with mutations, read from the file: a position
        /// only for exactly a checkpoint's encoding, otherwise corrupt with a reason.
        #[test]
        fn hostile_checkpoints_are_corrupt_unless_exact(
            data in crate::fuzzing::hostile(
                (any::<u64>(), any::<u64>(), any::<u32>())
                    .prop_map(|(seg, off, skip)| encode(Pos { seg, off, skip }).to_vec()),
                DICTIONARY,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FILE), &data).unwrap();
            match load(dir.path()).unwrap() {
                Loaded::At(pos) => prop_assert_eq!(&encode(pos)[..], &data[..]),
                Loaded::Corrupt(why) => prop_assert!(!why.is_empty()),
                Loaded::Missing => prop_assert!(false, "the file is there"),
            }
        }
    }
}
