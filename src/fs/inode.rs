//! The inode store: one `O_PATH` fd per backing inode the kernel knows of,
//! keyed by the backing (dev, ino), with the kernel's lookup count.
//!
//! Node ids are stable: an inode on the backing root's device gets its own
//! backing inode number as node id (so `st_ino` through the mount equals
//! `st_ino` on the backing store and stays the same across forget and
//! lookup); inodes on other devices (submounts of BACKING) get ids from a
//! counter above 2^63. A backing inode number cannot be reused while its
//! entry lives, because the entry's `O_PATH` fd keeps the inode alive; each
//! new entry gets a fresh generation, so a node id reused after a forget is
//! told apart by NFS-style exporters.
//!
//! Lock order: the store's `RwLock` is a leaf; no other lock is taken while
//! it is held.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::platform::Stat;

/// The FUSE node id of the mount root.
pub const ROOT_ID: u64 = 1;
const SYNTHETIC_BASE: u64 = 1 << 63;

/// One backing inode known to the kernel.
#[derive(Debug)]
pub struct Inode {
    /// the FUSE node id
    pub id: u64,
    /// generation number reported with `id`
    pub generation: u64,
    /// the `O_PATH` handle on the backing inode
    pub fd: OwnedFd,
    /// backing (dev, ino)
    pub key: (u64, u64),
    /// file type bits (S_IFMT) of the backing inode
    pub kind: u32,
    nlookup: AtomicU64,
}

impl Inode {
    /// The `O_PATH` handle.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether the backing inode is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
}

/// All inodes the kernel currently holds a reference to.
pub struct InodeStore {
    maps: RwLock<Maps>,
    root_dev: u64,
    next_synthetic: AtomicU64,
    next_generation: AtomicU64,
}

impl InodeStore {
    /// A store holding only the root, whose lookup count never drops.
    pub fn new(root_fd: OwnedFd, root_stat: &Stat) -> Self {
        let key = (root_stat.st_dev, root_stat.st_ino);
        let root = Arc::new(Inode {
            id: ROOT_ID,
            generation: 0,
            fd: root_fd,
            key,
            kind: root_stat.st_mode & libc::S_IFMT,
            nlookup: AtomicU64::new(1 << 40),
        });
        let mut maps = Maps::default();
        maps.by_id.insert(ROOT_ID, root);
        maps.by_key.insert(key, ROOT_ID);
        InodeStore {
            maps: RwLock::new(maps),
            root_dev: root_stat.st_dev,
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
            next_generation: AtomicU64::new(1),
        }
    }

    /// The inode with node id `id`, or ESTALE for an id the kernel should
    /// no longer hold.
    pub fn get(&self, id: u64) -> std::io::Result<Arc<Inode>> {
        self.maps
            .read()
            .expect("inode store poisoned")
            .by_id
            .get(&id)
            .cloned()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESTALE))
    }

    /// The node id a directory entry with backing inode `ino` would show,
    /// for plain readdir (which carries no dev): the node id of a known
    /// inode, else the backing number itself.
    pub fn dirent_ino(&self, ino: u64) -> u64 {
        self.maps
            .read()
            .expect("inode store poisoned")
            .by_key
            .get(&(self.root_dev, ino))
            .copied()
            .unwrap_or(ino)
    }

    /// Takes one lookup reference on the inode with backing attributes `st`,
    /// if it is already known.
    pub fn ref_existing(&self, st: &Stat) -> Option<Arc<Inode>> {
        let maps = self.maps.read().expect("inode store poisoned");
        let id = maps.by_key.get(&(st.st_dev, st.st_ino))?;
        let inode = maps.by_id.get(id)?.clone();
        inode.nlookup.fetch_add(1, Ordering::Relaxed);
        Some(inode)
    }

    /// Takes one lookup reference on the inode behind `fd` (whose attributes
    /// are `st`), inserting it if it is new; `fd` is dropped if the inode is
    /// already held.
    pub fn insert(&self, fd: OwnedFd, st: &Stat) -> Arc<Inode> {
        let key = (st.st_dev, st.st_ino);
        let mut maps = self.maps.write().expect("inode store poisoned");
        if let Some(id) = maps.by_key.get(&key) {
            let inode = maps.by_id[id].clone();
            inode.nlookup.fetch_add(1, Ordering::Relaxed);
            return inode;
        }
        let id = if st.st_dev == self.root_dev && st.st_ino > ROOT_ID && st.st_ino < SYNTHETIC_BASE
        {
            st.st_ino
        } else {
            self.next_synthetic.fetch_add(1, Ordering::Relaxed)
        };
        let inode = Arc::new(Inode {
            id,
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            fd,
            key,
            kind: st.st_mode & libc::S_IFMT,
            nlookup: AtomicU64::new(1),
        });
        maps.by_key.insert(key, id);
        maps.by_id.insert(id, inode.clone());
        inode
    }

    /// Drops `n` lookup references; the entry (and its fd) goes at zero.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut maps = self.maps.write().expect("inode store poisoned");
        let Some(inode) = maps.by_id.get(&id) else {
            return;
        };
        let left = inode.nlookup.load(Ordering::Relaxed).saturating_sub(n);
        inode.nlookup.store(left, Ordering::Relaxed);
        if left == 0 {
            let key = inode.key;
            maps.by_id.remove(&id);
            maps.by_key.remove(&key);
        }
    }

    /// How many inodes are held (the root included).
    pub fn len(&self) -> usize {
        self.maps.read().expect("inode store poisoned").by_id.len()
    }

    /// Whether only the root is held.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }
}
