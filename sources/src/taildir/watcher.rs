//! File-system events (inotify, through notify) for the folders that hold followed files.
//!
//! Folders are watched, not files, so 10,000 files in a few folders cost a few watches. Events
//! are folded into a bounded set of changed paths that the source picks up when it wakes.
//! Where events are not available (no inotify instance, the watch limit reached, a network
//! file system such as NFS whose remote writes raise no events) the folder is polled instead,
//! with a warning.

use std::collections::{BTreeSet, HashSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use notify::Watcher as _;
use notify::event::{CreateKind, EventKind, ModifyKind, RemoveKind};
use tokio::sync::Notify;
use tracing::warn;

/// Past this many changed paths between two wake-ups, the source looks at everything instead.
const MAX_CHANGED: usize = 1 << 16;

/// What changed since the source last looked.
#[derive(Debug, Default)]
pub struct Changes {
    /// Files written to (or truncated).
    pub data: HashSet<PathBuf>,
    /// Paths created, removed or renamed.
    pub names: HashSet<PathBuf>,
    /// Events were lost or a folder appeared or vanished: every matched file must be looked at.
    pub rescan: bool,
}

/// The part shared with the watcher's thread.
#[derive(Debug, Default)]
pub struct Shared {
    changes: Mutex<Changes>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Changes> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what changed so far.
    pub fn take(&self) -> Changes {
        std::mem::take(&mut *self.lock())
    }

    /// Resolves once something changed since the last call (or immediately if it did).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    fn record(&self, event: notify::Result<notify::Event>) {
        let mut c = self.lock();
        match event {
            Ok(ev) => {
                if ev.need_rescan() {
                    c.rescan = true;
                }
                match ev.kind {
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => return,
                    EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                        c.data.extend(ev.paths)
                    }
                    EventKind::Create(CreateKind::Folder)
                    | EventKind::Remove(RemoveKind::Folder) => {
                        c.rescan = true;
                    }
                    _ => c.names.extend(ev.paths),
                }
            }
            Err(e) => {
                warn!(error = %e, "file-system event error; looking at every file");
                c.rescan = true;
            }
        }
        if c.data.len() + c.names.len() > MAX_CHANGED {
            c.data.clear();
            c.names.clear();
            c.rescan = true;
        }
        drop(c);
        self.wake.notify_one();
    }
}

/// Watches folders, falling back to polling where it cannot.
pub struct Watcher {
    source: String,
    inner: Option<notify::RecommendedWatcher>,
    shared: Arc<Shared>,
    watched: HashSet<PathBuf>,
    polled: HashSet<PathBuf>,
    warned_limit: bool,
}

impl Watcher {
    /// A watcher for the source named `source`; without inotify every folder is polled.
    pub fn new(source: &str) -> Self {
        let shared = Arc::new(Shared::default());
        let handler = {
            let shared = shared.clone();
            move |event| shared.record(event)
        };
        let inner = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(source, error = %e,
                    "no file-system events (is fs.inotify.max_user_instances reached?); polling every file");
                None
            }
        };
        Watcher {
            source: source.to_owned(),
            inner,
            shared,
            watched: HashSet::new(),
            polled: HashSet::new(),
            warned_limit: false,
        }
    }

    /// The state shared with the event thread.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Watches exactly `dirs`; returns true if some of them must be polled.
    pub fn update(&mut self, dirs: &BTreeSet<PathBuf>) -> bool {
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|d| !dirs.contains(*d))
            .cloned()
            .collect();
        for d in gone {
            if let Some(w) = self.inner.as_mut() {
                let _ = w.unwatch(&d);
            }
            self.watched.remove(&d);
        }
        self.polled.retain(|d| dirs.contains(d));
        for d in dirs {
            if self.watched.contains(d) || self.polled.contains(d) {
                continue;
            }
            let Some(w) = self.inner.as_mut() else {
                self.polled.insert(d.clone());
                continue;
            };
            if let Some(fs) = remote_fs(d) {
                warn!(source = %self.source, dir = %d.display(), fs,
                    "network file system: writes from other hosts raise no events; polling this folder");
                self.polled.insert(d.clone());
                continue;
            }
            match w.watch(d, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(d.clone());
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    if !self.warned_limit {
                        warn!(source = %self.source, dir = %d.display(),
                            "inotify watch limit reached (raise fs.inotify.max_user_watches); polling \
                             the folders that are not watched");
                        self.warned_limit = true;
                    }
                    self.polled.insert(d.clone());
                }
                // The folder vanished between the listing and now: the next scan sees it.
                Err(_) => {}
            }
        }
        !self.polled.is_empty()
    }
}

/// The name of a network file system `dir` is on, if it is on one.
fn remote_fs(dir: &Path) -> Option<&'static str> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs fills the zeroed struct; `c` is a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    match (st.f_type as u64) & 0xffff_ffff {
        0x6969 => Some("nfs"),
        0xff53_4d42 => Some("cifs"),
        0xfe53_4d42 => Some("smb2"),
        0x517b => Some("smb"),
        0x0102_1997 => Some("9p"),
        0x00c3_6400 => Some("ceph"),
        _ => None,
    }
}
