//! File-system helpers of the file channel: the directory lock and free space (the rest is
//! in [`crate::fsutil`]).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::fsutil;

/// The name of the lock file in a channel directory.
pub const LOCK_FILE: &str = "channel.lock";

/// Takes an exclusive advisory lock (flock) on `dir/channel.lock`; `Ok(None)` if another
/// process, or another channel in this one, holds it. The lock lasts as long as the file.
pub fn lock_dir(dir: &Path) -> io::Result<Option<File>> {
    fsutil::lock(&dir.join(LOCK_FILE))
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

/// True if `e` says the disk or the quota is full.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_lock_is_exclusive_and_free_space_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        assert!(first.is_some());
        assert!(lock_dir(dir.path()).unwrap().is_none());
        assert!(free_space(dir.path()).unwrap() > 0);
    }
}
