//! The position file: for each followed file, keyed by its identity, the offset up to which
//! every line is safe. It is replaced atomically, so a crash leaves the old or the new one.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::Fingerprint;

/// The format's version, checked on load.
const VERSION: u32 = 1;

/// How far one file is safely read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// The path the file was matched under (for people, and to look for the file in the same
    /// folder when it was renamed while the agent was stopped).
    pub path: String,
    /// The device.
    pub dev: u64,
    /// The inode.
    pub ino: u64,
    /// The fingerprint of its first bytes, once lines were read from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp: Option<Fingerprint>,
    /// Every line before this byte offset is safe.
    pub offset: u64,
    /// How often the file was seen truncated or rewritten while followed: kept so that its
    /// events carry the same `rewrites` header after a restart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewrites: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionFile {
    version: u32,
    files: Vec<Position>,
}

/// What was found at the position file's path.
#[derive(Debug)]
pub enum Loaded {
    /// No position file: nothing was read before.
    Missing,
    /// The positions.
    Read(Vec<Position>),
    /// No position file of ours, and these positions taken from a Flume TAILDIR position
    /// file: the first run starts from where Flume stopped.
    Imported(Vec<Position>),
    /// The file could not be understood; it was moved out of the way (to `moved_to`, if that
    /// worked) and must not be trusted.
    SetAside {
        /// What is wrong with it.
        error: String,
        /// Where it went.
        moved_to: Option<PathBuf>,
    },
}

/// Reads the position file at `path`; a corrupt one is set aside. Fails only if the file
/// exists and cannot be read.
pub fn load(path: &Path) -> io::Result<Loaded> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    match decode(&data) {
        Ok(p) => Ok(Loaded::Read(p)),
        Err(error) => Ok(Loaded::SetAside {
            error,
            moved_to: sluice_channels::fsutil::set_aside(path).ok(),
        }),
    }
}

/// The positions of a Flume TAILDIR position file (`[{"inode": N, "pos": P, "file": F}]`),
/// for the files still found at their path with that inode, or, when one was renamed
/// since, on the device of the folder it was in (Flume records no device). `None` when
/// there is no such file; an error when it cannot be read or understood.
pub fn import_flume(path: &Path) -> Result<Option<Vec<Position>>, String> {
    use std::os::unix::fs::MetadataExt;
    #[derive(Deserialize)]
    struct FlumePosition {
        inode: u64,
        pos: u64,
        file: String,
    }
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let list: Vec<FlumePosition> = serde_json::from_slice(&data).map_err(|e| e.to_string())?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for f in list {
        let file = Path::new(&f.file);
        let dev = match std::fs::metadata(file) {
            Ok(m) if m.ino() == f.inode => Some(m.dev()),
            _ => file
                .parent()
                .and_then(|d| std::fs::metadata(d).ok())
                .map(|m| m.dev()),
        };
        if let Some(dev) = dev.filter(|&dev| seen.insert((dev, f.inode))) {
            out.push(Position {
                rewrites: 0,
                path: f.file,
                dev,
                ino: f.inode,
                fp: None,
                offset: f.pos,
            });
        }
    }
    Ok(Some(out))
}

/// Parses a position file's content, refusing anything but the exact format.
pub fn decode(data: &[u8]) -> Result<Vec<Position>, String> {
    let file: PositionFile = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!("version {} (expected {VERSION})", file.version));
    }
    let mut seen = HashSet::new();
    for p in &file.files {
        if !seen.insert((p.dev, p.ino)) {
            return Err(format!("device {} inode {} is listed twice", p.dev, p.ino));
        }
    }
    Ok(file.files)
}

/// The position file's content for `positions`.
pub fn encode(positions: Vec<Position>) -> Vec<u8> {
    let file = PositionFile {
        version: VERSION,
        files: positions,
    };
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Replaces the position file at `path` with `data` (from [`encode`]) atomically; with
/// `durable` it also survives power loss once this returns.
pub fn save(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    sluice_channels::fsutil::write_atomic(path, data, durable)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sluice_channels::fuzzing::{JSON, hostile, largest_allocation};

    use super::super::identity::FINGERPRINT_MAX;
    use super::*;

    /// The format's keys, planted with JSON's tokens.
    const KEYS: &[&[u8]] = &[
        b"\"version\":",
        b"\"files\":",
        b"\"path\":",
        b"\"dev\":",
        b"\"ino\":",
        b"\"fp\":",
        b"\"offset\":",
        b"\"rewrites\":",
        b"\"0-0000000000000000\"",
        b"\"257-00000000000000ff\"",
        b"\"inode\":",
        b"\"pos\":",
        b"\"file\":",
    ];

    /// A Flume TAILDIR position file of `list`.
    fn flume_file(list: Vec<(u64, u64, String)>) -> Vec<u8> {
        let entries: Vec<serde_json::Value> = list
            .into_iter()
            .map(|(inode, pos, file)| serde_json::json!({"inode": inode, "pos": pos, "file": file}))
            .collect();
        serde_json::to_vec(&entries).unwrap()
    }

    fn position() -> impl Strategy<Value = Position> {
        (
            "[a-z/\\.é ]{0,30}",
            any::<u64>(),
            any::<u64>(),
            proptest::option::of((1u64..=256, any::<u64>())),
            any::<u64>(),
        )
            .prop_map(|(path, dev, ino, fp, offset)| Position {
                rewrites: 0,
                path,
                dev,
                ino,
                fp: fp.map(|(len, hash)| Fingerprint { len, hash }),
                offset,
            })
    }

    #[test]
    fn a_missing_file_is_no_positions_and_a_corrupt_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("positions.json");
        assert!(matches!(load(&p).unwrap(), Loaded::Missing));
        std::fs::write(&p, b"{\"version\":1,\"files\":[{\"path\":\"/a\"").unwrap();
        match load(&p).unwrap() {
            Loaded::SetAside {
                moved_to: Some(to), ..
            } => {
                assert!(!p.exists());
                assert!(to.ends_with("positions.json.corrupt"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flumes_positions_are_imported_for_the_files_they_name() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let flume = dir.path().join("taildir_position.json");
        assert_eq!(import_flume(&flume), Ok(None));
        let (a, gone) = (dir.path().join("a.log"), dir.path().join("gone.log"));
        std::fs::write(&a, b"one\ntwo\n").unwrap();
        let meta = std::fs::metadata(&a).unwrap();
        let json = format!(
            r#"[{{"inode":{},"pos":4,"file":"{}"}},{{"inode":777777,"pos":9,"file":"{}"}}]"#,
            meta.ino(),
            a.display(),
            gone.display()
        );
        std::fs::write(&flume, json).unwrap();
        let got = import_flume(&flume).unwrap().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].dev, got[0].ino, got[0].offset, got[0].fp),
            (meta.dev(), meta.ino(), 4, None)
        );
        assert_eq!(
            (got[1].dev, got[1].ino, got[1].offset),
            (meta.dev(), 777_777, 9),
            "a renamed file: the device of its folder"
        );
        std::fs::write(&flume, b"[{\"inode\":").unwrap();
        assert!(import_flume(&flume).is_err());
        assert!(flume.exists(), "Flume's file is left alone");
    }

    #[test]
    fn wrong_versions_and_duplicate_identities_are_refused() {
        assert!(
            decode(br#"{"version":2,"files":[]}"#)
                .unwrap_err()
                .contains("version 2")
        );
        let twice = br#"{"version":1,"files":[{"path":"a","dev":1,"ino":2,"offset":0},
            {"path":"b","dev":1,"ino":2,"offset":5}]}"#;
        assert!(decode(twice).unwrap_err().contains("twice"));
        assert!(decode(br#"{"version":1,"files":[],"extra":0}"#).is_err());
    }

    #[test]
    fn save_then_load_gives_the_positions_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("positions.json");
        let pos = vec![Position {
            rewrites: 3,
            path: "/var/log/app.log".into(),
            dev: 1,
            ino: 2,
            fp: Some(Fingerprint::of(b"x\n")),
            offset: 2,
        }];
        save(&p, &encode(pos.clone()), true).unwrap();
        match load(&p).unwrap() {
            Loaded::Read(got) => assert_eq!(got, pos),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn positions_round_trip(list in proptest::collection::vec(position(), 0..20)) {
            let mut seen = HashSet::new();
            let list: Vec<Position> = list.into_iter().filter(|p| seen.insert((p.dev, p.ino))).collect();
            prop_assert_eq!(decode(&encode(list.clone())).unwrap(), list);
        }

        #[test]
        fn any_damage_is_an_error_not_a_panic(
            list in proptest::collection::vec(position(), 1..5),
            cut in 0.0f64..1.0,
            flip in any::<u8>(),
        ) {
            let mut data = encode(list);
            let at = ((data.len() - 1) as f64 * cut) as usize;
            let truncated = decode(&data[..at]);
            prop_assert!(truncated.is_err());
            data[at] ^= flip;
            let _ = decode(&data);
        }

        /// Hostile bytes, and position files with mutations, read from the disk: positions
        /// that re-encode to themselves, with distinct identities and fingerprints of 1 to
        /// 256 bytes; or the file set aside with the reason. Decoding allocates no more than
        /// a bound of the file's size.
        #[test]
        fn hostile_position_files_are_read_or_set_aside(
            data in hostile(proptest::collection::vec(position(), 0..5).prop_map(encode), &[JSON, KEYS].concat()),
        ) {
            let (decoded, largest) = largest_allocation(|| decode(&data));
            prop_assert!(largest <= 4096 + 64 * data.len(), "{} bytes allocated", largest);
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("positions.json");
            std::fs::write(&p, &data).unwrap();
            match (load(&p).unwrap(), decoded) {
                (Loaded::Read(list), Ok(same)) => {
                    prop_assert_eq!(&list, &same);
                    let ids: HashSet<(u64, u64)> = list.iter().map(|p| (p.dev, p.ino)).collect();
                    prop_assert_eq!(ids.len(), list.len());
                    for fp in list.iter().filter_map(|p| p.fp) {
                        prop_assert!((1..=FINGERPRINT_MAX).contains(&fp.len));
                    }
                    prop_assert_eq!(decode(&encode(list.clone())).unwrap(), list);
                }
                (Loaded::SetAside { error, moved_to: Some(to) }, Err(same)) => {
                    prop_assert_eq!(error, same);
                    prop_assert!(!p.exists() && to.exists());
                }
                (other, decoded) => prop_assert!(false, "{:?} for {:?}", other, decoded),
            }
        }

        /// Hostile bytes, and Flume position files with mutations: an error, or positions
        /// with distinct identities taken from the file's entries; Flume's file is left as it
        /// is.
        #[test]
        fn hostile_flume_position_files_are_imported_or_refused(
            data in hostile(
                proptest::collection::vec((any::<u64>(), any::<u64>(), "[a-z/]{0,12}"), 0..4).prop_map(flume_file),
                &[JSON, KEYS].concat(),
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("taildir_position.json");
            std::fs::write(&p, &data).unwrap();
            if let Ok(Some(list)) = import_flume(&p) {
                let ids: HashSet<(u64, u64)> = list.iter().map(|p| (p.dev, p.ino)).collect();
                prop_assert_eq!(ids.len(), list.len());
                prop_assert!(list.iter().all(|p| p.fp.is_none() && p.rewrites == 0));
            }
            prop_assert_eq!(std::fs::read(&p).unwrap(), data);
        }
    }
}
