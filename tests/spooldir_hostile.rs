//! End-to-end: a spooling directory is a shared folder, and whatever lands in it is handled and
//! logged, never a hang, a crash, or a file read that should not be read (issue 15, "hostile
//! input"). The real `sluice` binary, a memory channel and the console sink: no broker.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::agent::{Agent, drop_file, spool_dirs, spooldir_console};

const LONG: Duration = Duration::from_secs(60);

/// `lines` lines tagged `tag`, numbered from 0.
fn tagged(tag: &str, lines: usize) -> Vec<u8> {
    (0..lines)
        .flat_map(|i| format!("{tag} {i}\n").into_bytes())
        .collect()
}

/// The console sink's lines, grouped by tag: tag -> numbers in arrival order.
fn by_tag(agent: &Agent) -> BTreeMap<String, Vec<usize>> {
    let mut tags: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&agent.stdout_bytes()).lines() {
        if let Some((tag, n)) = line.split_once(' ')
            && let Ok(n) = n.parse()
        {
            tags.entry(tag.to_owned()).or_default().push(n);
        }
    }
    tags
}

/// Writes `name` (any bytes) into `dir` as a producer should: under a hidden name, then
/// renamed in.
fn drop_raw(dir: &Path, name: &[u8], content: &[u8]) {
    let tmp = dir.join(".incoming.tmp");
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, dir.join(OsStr::from_bytes(name))).unwrap();
}

/// `name` with the completed suffix.
fn completed_name(name: &[u8]) -> PathBuf {
    let mut done = name.to_vec();
    done.extend_from_slice(b".COMPLETED");
    PathBuf::from(OsStr::from_bytes(&done))
}

/// The names in `dir`, as bytes, sorted.
fn names_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

#[test]
fn odd_names_are_read_renamed_inside_the_folder_and_logged_on_one_line() {
    let (tmp, spool, data) = spool_dirs();
    let odd: [&[u8]; 7] = [
        b"new\nFORGED ERROR line.log",
        b"tab\there.log",
        b"space here.log",
        b"bad-\xff\xfe.log",
        b"-rf.log",
        b"a..b.log",
        b"x..",
    ];
    for (i, name) in odd.iter().enumerate() {
        drop_raw(&spool, name, &tagged(&format!("odd{i}"), 50));
    }
    // Hidden names are never read, `..` in them or not.
    drop_file(&spool, ".hidden.log", &tagged("hidden", 5));
    drop_file(&spool, "..dots.log", &tagged("dots", 5));
    let mut agent = Agent::start(
        &tmp.path().join("run"),
        "a1",
        &spooldir_console(&data, &spool, ""),
    );
    agent.wait_for(LONG, "every odd name completed", || {
        odd.iter().all(|n| spool.join(completed_name(n)).exists())
    });
    agent.stop_ok(LONG);
    let tags = by_tag(&agent);
    for i in 0..odd.len() {
        let tag = format!("odd{i}");
        assert_eq!(tags[&tag], (0..50).collect::<Vec<_>>(), "{tag}");
    }
    assert!(!tags.contains_key("hidden") && !tags.contains_key("dots"));
    // Renamed in place: nothing else appeared in the folder or beside it.
    let mut want: Vec<Vec<u8>> = odd
        .iter()
        .map(|n| completed_name(n).into_os_string().into_vec())
        .collect();
    want.extend([b".hidden.log".to_vec(), b"..dots.log".to_vec()]);
    want.sort();
    assert_eq!(names_in(&spool), want);
    assert_eq!(names_in(tmp.path()), [&b"data"[..], b"run", b"spool"]);
    // Every name is shown escaped on its log line: the newline forges no line of its own.
    let log = agent.stderr_text();
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a file name forged a log line:\n{log}"
    );
    assert!(log.contains(r"new\nFORGED ERROR line.log"), "{log}");
    assert!(log.contains(r"bad-\xff\xfe.log"), "{log}");
    assert!(log.contains(r"tab\there.log"), "{log}");
}
