//! The engine's state for one file with opens through the mount, shared by
//! all of them: its group commit, its failure mark, its atomic stage, its
//! preallocation.

use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::commit::GroupCommit;
use crate::platform;

/// A file's staged new contents (`write = "atomic"`).
#[derive(Debug)]
pub(super) struct Stage {
    /// the staged file, open read-write
    pub fd: Arc<OwnedFd>,
    /// the directory it is in (that of the target when it was staged)
    pub dir: OwnedFd,
    /// its hidden name there
    pub name: CString,
}

/// One file's shared state, alive while any open of it is.
#[derive(Debug)]
pub struct FileState {
    /// the FUSE node id (stable across an atomic replace)
    pub(super) node: u64,
    /// the path relative to the mount root at the latest open that needed
    /// it (for fault globs and reports; empty while nothing has)
    path: Mutex<Arc<[u8]>>,
    /// an fd on the file as it is now: what a sync of the file syncs
    pub(super) sync_fd: Mutex<Arc<OwnedFd>>,
    /// group commit of data syncs (and barriers)
    pub(super) commit: GroupCommit,
    /// group commit of full syncs
    pub(super) commit_full: GroupCommit,
    /// errno of a failed sync: every later sync fails until all opens close
    pub(super) failed: AtomicI32,
    /// writable opens
    pub(super) writers: AtomicUsize,
    /// writable opens not yet closed: close(2) by the opener (FUSE FLUSH)
    /// ends one at once, while its RELEASE, asynchronous, may come after
    /// the next open's close has returned
    pub(super) unclosed: AtomicUsize,
    /// serialises direct read-modify-writes and append reservations
    pub(super) io_lock: Mutex<()>,
    /// where preallocation reaches (`append`)
    pub(super) reserved: AtomicU64,
    pub(super) stage: Mutex<Option<Stage>>,
    /// after an atomic replace: the new file, for opens made before it
    pub(super) current: Mutex<Option<Arc<OwnedFd>>>,
    /// a write is waiting for the interval flusher
    pub(super) interval_dirty: AtomicBool,
    /// open writers whose writes the daemon does not see (the flusher
    /// watches the file while there are any)
    pub(super) watchers: AtomicUsize,
    /// atomic replace impossible (hard-linked): writes go in place
    pub(super) in_place: AtomicBool,
}

impl FileState {
    /// The path at the latest open that resolved one.
    pub(super) fn path(&self) -> Arc<[u8]> {
        self.path.lock().expect("file path poisoned").clone()
    }

    /// A newer open resolved the path (the first ones may not have needed
    /// it, or the file was renamed since): faults and reports use it.
    pub(super) fn set_path(&self, path: Vec<u8>) {
        let mut p = self.path.lock().expect("file path poisoned");
        if *p.as_ref() != *path.as_slice() {
            *p = path.into();
        }
    }

    pub(super) fn new(node: u64, path: Vec<u8>, fd: OwnedFd, size: u64) -> FileState {
        FileState {
            node,
            path: Mutex::new(path.into()),
            sync_fd: Mutex::new(Arc::new(fd)),
            commit: GroupCommit::default(),
            commit_full: GroupCommit::default(),
            failed: AtomicI32::new(0),
            writers: AtomicUsize::new(0),
            unclosed: AtomicUsize::new(0),
            io_lock: Mutex::new(()),
            reserved: AtomicU64::new(size),
            stage: Mutex::new(None),
            current: Mutex::new(None),
            interval_dirty: AtomicBool::new(false),
            watchers: AtomicUsize::new(0),
            in_place: AtomicBool::new(false),
        }
    }

    /// Preallocates from where the reservation reaches (at least `floor`)
    /// up to `to`, unless it reaches `need` already; a filesystem that
    /// refuses stops preallocation for the file. `append`'s reservation,
    /// whether writes move it (the engine) or the flusher does.
    pub(super) fn reserve(&self, fd: BorrowedFd<'_>, need: u64, floor: u64, to: u64) {
        let _l = self.io_lock.lock().expect("file lock poisoned");
        let from = self.reserved.load(Ordering::Acquire);
        if need <= from {
            return;
        }
        let from = from.max(floor);
        match platform::preallocate(fd, from, to - from) {
            Ok(_) => self.reserved.store(to, Ordering::Release),
            Err(e) => {
                tracing::debug!("preallocation refused: {e}");
                self.reserved.store(u64::MAX, Ordering::Release);
            }
        }
    }

    pub(super) fn sync_fd(&self) -> Arc<OwnedFd> {
        self.sync_fd.lock().expect("file state poisoned").clone()
    }

    pub(super) fn stage_fd(&self) -> Option<Arc<OwnedFd>> {
        self.stage
            .lock()
            .expect("file state poisoned")
            .as_ref()
            .map(|s| s.fd.clone())
    }

    pub(super) fn current(&self) -> Option<Arc<OwnedFd>> {
        self.current.lock().expect("file state poisoned").clone()
    }
}
