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

use support::agent::{Agent, console_agent, drop_file, spool_dirs, spooldir_console};

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

/// The lines of the agent's log that say `name` was skipped, and why.
fn skipped_lines(log: &str, name: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("skipped") && l.contains(&format!("/{name} ")))
        .map(str::to_owned)
        .collect()
}

/// True once the file at `path` is completed: renamed with the completed suffix, or deleted.
fn done(path: &Path) -> bool {
    let mut renamed = path.as_os_str().to_owned();
    renamed.push(".COMPLETED");
    !path.exists() || Path::new(&renamed).exists()
}

/// Runs an agent on `spool` until `real.log` (dropped before) is completed, and then
/// `later.log`, dropped after it: nothing blocked the source. `extra` adds source options
/// (`, key: value`). Returns the stopped agent.
fn run_past(tmp: &Path, spool: &Path, data: &Path, extra: &str) -> Agent {
    let config = spooldir_console(data, spool, extra);
    let mut agent = Agent::start(&tmp.join("run"), "a1", &config);
    agent.wait_for(LONG, "real.log completed", || done(&spool.join("real.log")));
    drop_file(spool, "later.log", &tagged("later", 10));
    agent.wait_for(LONG, "later.log completed", || {
        done(&spool.join("later.log"))
    });
    agent.stop_ok(LONG);
    agent
}

#[test]
fn links_are_never_followed_wherever_they_lead() {
    let (tmp, spool, data) = spool_dirs();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret.log"), tagged("secret", 10)).unwrap();
    drop_file(&spool, "real.log", &tagged("real", 10));
    let links: [(&str, PathBuf); 9] = [
        ("secret.log", outside.join("secret.log")),
        ("passwd.log", PathBuf::from("/etc/passwd")),
        ("zero.log", PathBuf::from("/dev/zero")),
        ("urandom.log", PathBuf::from("/dev/urandom")),
        ("folder.log", outside.clone()),
        ("dangling.log", outside.join("nowhere")),
        ("loop1.log", spool.join("loop2.log")),
        ("loop2.log", spool.join("loop1.log")),
        ("inside.log", spool.join("real.log")),
    ];
    for (name, to) in &links {
        std::os::unix::fs::symlink(to, spool.join(name)).unwrap();
    }
    let agent = run_past(tmp.path(), &spool, &data, "");
    let tags = by_tag(&agent);
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["later", "real"]);
    assert!(tags.values().all(|n| *n == (0..10).collect::<Vec<_>>()));
    let out = String::from_utf8_lossy(&agent.stdout_bytes()).into_owned();
    assert!(!out.contains("root:"), "/etc/passwd was read:\n{out}");
    let log = agent.stderr_text();
    for (name, _) in &links {
        let lines = skipped_lines(&log, name);
        assert_eq!(lines.len(), 1, "{name} logged once:\n{log}");
        assert!(
            lines[0].contains("reason=\"a symbolic link (never followed)\""),
            "{}",
            lines[0]
        );
        assert!(spool.join(name).is_symlink(), "{name} left in place");
    }
    assert_eq!(
        fs::read(outside.join("secret.log")).unwrap(),
        tagged("secret", 10)
    );
}

#[test]
fn fifos_sockets_devices_and_folders_are_never_opened() {
    let (tmp, spool, data) = spool_dirs();
    let fifo = std::ffi::CString::new(spool.join("pipe.log").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(spool.join("socket.log")).unwrap();
    fs::create_dir(spool.join("sub")).unwrap();
    fs::write(spool.join("sub/inner.log"), tagged("inner", 5)).unwrap();
    // A character device like /dev/zero (1, 5): an endless file, if it were read. Making one
    // needs CAP_MKNOD; where it is missing, the other entries are checked all the same.
    let zero = std::ffi::CString::new(spool.join("zero.log").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let device =
        unsafe { libc::mknod(zero.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) } == 0;
    drop_file(&spool, "real.log", &tagged("real", 10));
    let agent = run_past(tmp.path(), &spool, &data, "");
    let tags = by_tag(&agent);
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["later", "real"]);
    let log = agent.stderr_text();
    let mut skipped = vec![
        ("pipe.log", "reason=\"a FIFO\""),
        ("socket.log", "reason=\"a socket\""),
        ("sub", "reason=\"a folder\""),
    ];
    if device {
        skipped.push(("zero.log", "reason=\"a character device\""));
    } else {
        println!("no character device made (mknod refused): not checked");
    }
    for (name, reason) in skipped {
        let lines = skipped_lines(&log, name);
        assert_eq!(lines.len(), 1, "{name} logged once:\n{log}");
        assert!(lines[0].contains(reason), "{}", lines[0]);
    }
    assert!(spool.join("sub/inner.log").exists() && spool.join("pipe.log").exists());
}

#[test]
fn a_name_with_no_room_for_the_completed_suffix_is_skipped_unless_files_are_deleted() {
    let (tmp, spool, data) = spool_dirs();
    let long = format!("{}.log", "L".repeat(251));
    assert_eq!(long.len(), 255);
    drop_raw(&spool, long.as_bytes(), &tagged("long", 10));
    drop_file(&spool, "real.log", &tagged("real", 10));
    // Renamed when read: `long` + `.COMPLETED` is too long a name, so it is never read (it
    // could never be completed, and would be read again at every restart).
    let agent = run_past(tmp.path(), &spool, &data, "");
    let tags = by_tag(&agent);
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["later", "real"]);
    assert!(spool.join(&long).exists(), "left in place");
    let log = agent.stderr_text();
    let skipped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the file is not read") && l.contains(&long))
        .collect();
    assert_eq!(skipped.len(), 1, "{log}");
    assert!(skipped[0].contains("File name too long"), "{}", skipped[0]);
    // Deleted when read: nothing stands in its way.
    for name in ["real.log.COMPLETED", "later.log.COMPLETED"] {
        fs::remove_file(spool.join(name)).unwrap();
    }
    drop_file(&spool, "real.log", &tagged("real", 10));
    let agent = run_past(tmp.path(), &spool, &data, ", after_read: delete");
    assert!(!spool.join(&long).exists(), "deleted once read");
    let tags = by_tag(&agent);
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["later", "long", "real"]);
    assert!(tags.values().all(|n| *n == (0..10).collect::<Vec<_>>()));
}

#[test]
fn an_unreadable_file_is_skipped_with_a_warning_and_read_once_made_readable() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, spool, data) = spool_dirs();
    let locked = spool.join("locked.log");
    drop_file(&spool, "locked.log", &tagged("locked", 10));
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    drop_file(&spool, "real.log", &tagged("real", 10));
    // Root reads a file of mode 0000: the agent runs without that power.
    let mut agent = Agent::start_unprivileged(
        &tmp.path().join("run"),
        "a1",
        &spooldir_console(&data, &spool, ""),
    );
    agent.wait_for(LONG, "real.log completed", || done(&spool.join("real.log")));
    agent.wait_for(LONG, "the unreadable file reported", || {
        agent.stderr_text().contains("the file cannot be opened")
    });
    // Listed again and again meanwhile (every 100 ms): logged once, left in place.
    drop_file(&spool, "later.log", &tagged("later", 10));
    agent.wait_for(LONG, "later.log completed", || {
        done(&spool.join("later.log"))
    });
    assert!(locked.exists(), "left in place, not set aside");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).unwrap();
    agent.wait_for(LONG, "locked.log completed once readable", || done(&locked));
    agent.stop_ok(LONG);
    let tags = by_tag(&agent);
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["later", "locked", "real"]);
    assert!(tags.values().all(|n| *n == (0..10).collect::<Vec<_>>()));
    let log = agent.stderr_text();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the file cannot be opened"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains("locked.log") && warned[0].contains("Permission denied"),
        "{}",
        warned[0]
    );
}

#[test]
fn a_spool_folder_that_is_a_link_is_followed_and_files_are_renamed_where_they_are() {
    let (tmp, real, data) = spool_dirs();
    let spool = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &spool).unwrap();
    drop_file(&real, "real.log", &tagged("real", 10));
    let agent = run_past(tmp.path(), &spool, &data, "");
    assert!(real.join("real.log.COMPLETED").exists() && real.join("later.log.COMPLETED").exists());
    assert!(spool.is_symlink(), "the link is left as it is");
    let tags = by_tag(&agent);
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["later", "real"]);
}

#[test]
fn a_spool_folder_replaced_by_a_link_or_deleted_and_made_again_is_watched_anew() {
    let (tmp, spool, data) = spool_dirs();
    // No polling to speak of: only file-system events (and the source's own retries while
    // the folder is gone) wake it.
    let config = console_agent(
        &data,
        &format!(
            "type: spooldir, dir: {}, channel: c1, ready_after: 100ms, poll_interval: 1h",
            spool.display()
        ),
    );
    let mut agent = Agent::start(&tmp.path().join("run"), "a1", &config);
    agent.wait_for(LONG, "the source started", || {
        agent.stderr_text().contains("spooldir source started")
    });
    drop_file(&spool, "a.log", &tagged("a", 10));
    agent.wait_for(LONG, "a.log completed", || done(&spool.join("a.log")));
    // Replaced by a link to another folder: the move wakes the source, which must watch the
    // new folder, or b.log waits an hour.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::rename(&spool, tmp.path().join("spool.old")).unwrap();
    std::os::unix::fs::symlink(&other, &spool).unwrap();
    agent.wait_for(LONG, "the new folder noticed", || {
        let log = agent.stderr_text();
        log.contains("the spool folder was replaced") || log.contains("(recovered)")
    });
    drop_file(&other, "b.log", &tagged("b", 10));
    agent.wait_for(LONG, "b.log completed in the new folder", || {
        done(&other.join("b.log"))
    });
    // Deleted, and made again a while later: nothing tells the source it is back but its
    // own retries.
    let errors = |agent: &Agent| {
        let log = agent.stderr_text();
        log.matches("cannot list the spool folder").count()
    };
    let before = errors(&agent);
    fs::remove_dir_all(&other).unwrap();
    fs::remove_file(&spool).unwrap();
    agent.wait_for(LONG, "the folder's absence logged", || {
        errors(&agent) > before
    });
    fs::create_dir(&spool).unwrap();
    drop_file(&spool, "c.log", &tagged("c", 10));
    agent.wait_for(LONG, "c.log completed in the folder made again", || {
        done(&spool.join("c.log"))
    });
    // Deleted and made again at once: the new folder may even have the old one's inode
    // number (ext4 hands it out again at once), so only the old watch's last event tells
    // that it is another folder, to be watched anew.
    fs::remove_dir_all(&spool).unwrap();
    fs::create_dir(&spool).unwrap();
    drop_file(&spool, "d.log", &tagged("d", 10));
    agent.wait_for(
        LONG,
        "d.log completed in the folder made again at once",
        || done(&spool.join("d.log")),
    );
    agent.stop_ok(LONG);
    let tags = by_tag(&agent);
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
    assert!(tags.values().all(|n| *n == (0..10).collect::<Vec<_>>()));
}
