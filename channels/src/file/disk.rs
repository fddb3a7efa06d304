//! File-system helpers: the directory lock, free space, fsync of a directory, and small files
//! replaced atomically.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The name of the lock file in a channel directory.
pub const LOCK_FILE: &str = "channel.lock";

/// Takes an exclusive advisory lock (flock) on `dir/channel.lock`; `Ok(None)` if another
/// process, or another channel in this one, holds it. The lock lasts as long as the file.
pub fn lock_dir(dir: &Path) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// The bytes available to this process on the file system holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statvfs is plain old data, valid when zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Makes the entries of `dir` (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `data` so that a crash leaves either the old or the new content:
/// a temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(dir: &Path, name: &str, tmp_name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// True if `e` says the disk or the quota is full.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        assert!(first.is_some());
        assert!(lock_dir(dir.path()).unwrap().is_none());
        drop(first);
        assert!(lock_dir(dir.path()).unwrap().is_some());
    }

    #[test]
    fn atomic_writes_replace_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "cp", "cp.tmp", b"one").unwrap();
        write_atomic(dir.path(), "cp", "cp.tmp", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("cp")).unwrap(), b"two");
        assert!(!dir.path().join("cp.tmp").exists());
        assert!(free_space(dir.path()).unwrap() > 0);
    }
}
