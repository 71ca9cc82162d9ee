//! The handle store: open files and open directory streams, by the `fh`
//! number the kernel passes back on every IO request.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::inode::Inode;
use crate::engine::Writer;
use crate::platform::DirEntry;

/// An open regular file (or any non-directory opened for IO).
pub struct FileHandle {
    /// the inode this handle was opened on
    pub inode: Arc<Inode>,
    /// the backing file, opened for IO with the app's access mode
    pub fd: OwnedFd,
    /// the open flags the backing fd was opened with
    pub flags: i32,
    /// the engine's per-open state (durability strategy)
    pub writer: Writer,
}

impl FileHandle {
    /// The backing fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether the backing fd allows writes.
    pub fn writable(&self) -> bool {
        matches!(self.flags & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR)
    }
}

/// An open directory stream.
pub struct DirHandle {
    /// the directory's inode
    pub inode: Arc<Inode>,
    /// the stream: the read fd and the entries read ahead of the kernel
    pub stream: Mutex<DirStream>,
}

/// A directory stream's position, buffered entries and fd.
pub struct DirStream {
    /// the directory opened for reading
    pub fd: OwnedFd,
    /// the offset cookie the next entry in `pending` resumes from
    pub cursor: u64,
    /// entries read from the backing dir but not yet given to the kernel
    pub pending: std::collections::VecDeque<DirEntry>,
}

enum Handle {
    File(Arc<FileHandle>),
    Dir(Arc<DirHandle>),
}

/// All open handles.
#[derive(Default)]
pub struct HandleStore {
    map: RwLock<HashMap<u64, Handle>>,
    next: AtomicU64,
}

impl HandleStore {
    fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map
            .write()
            .expect("handle store poisoned")
            .insert(fh, h);
        fh
    }

    /// Registers an open file and returns its `fh` with the shared handle.
    pub fn insert_file(&self, h: FileHandle) -> (u64, Arc<FileHandle>) {
        let h = Arc::new(h);
        (self.insert(Handle::File(h.clone())), h)
    }

    /// Registers an open directory and returns its `fh`.
    pub fn insert_dir(&self, h: DirHandle) -> u64 {
        self.insert(Handle::Dir(Arc::new(h)))
    }

    /// The open file `fh`, or EBADF.
    pub fn file(&self, fh: u64) -> std::io::Result<Arc<FileHandle>> {
        match self.map.read().expect("handle store poisoned").get(&fh) {
            Some(Handle::File(f)) => Ok(f.clone()),
            _ => Err(std::io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// The open directory `fh`, or EBADF.
    pub fn dir(&self, fh: u64) -> std::io::Result<Arc<DirHandle>> {
        match self.map.read().expect("handle store poisoned").get(&fh) {
            Some(Handle::Dir(d)) => Ok(d.clone()),
            _ => Err(std::io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Removes an open file; the fd closes when the last request using it ends.
    pub fn remove_file(&self, fh: u64) -> Option<Arc<FileHandle>> {
        match self.map.write().expect("handle store poisoned").remove(&fh) {
            Some(Handle::File(f)) => Some(f),
            _ => None,
        }
    }

    /// Removes an open directory.
    pub fn remove_dir(&self, fh: u64) {
        self.map.write().expect("handle store poisoned").remove(&fh);
    }

    /// Every open file (for status).
    pub fn files(&self) -> Vec<Arc<FileHandle>> {
        self.map
            .read()
            .expect("handle store poisoned")
            .values()
            .filter_map(|h| match h {
                Handle::File(f) => Some(f.clone()),
                Handle::Dir(_) => None,
            })
            .collect()
    }

    /// How many handles are open.
    pub fn len(&self) -> usize {
        self.map.read().expect("handle store poisoned").len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
