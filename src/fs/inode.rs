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
//! Every inode costs the daemon one fd while the kernel holds it, and the
//! fd limit may be far below the number of inodes a tree walk leaves in the
//! kernel's caches. Past a budget (3/4 of RLIMIT_NOFILE unless set), new
//! inodes on the backing root's filesystem are held by file handle
//! (`name_to_handle_at`) instead, and reopened with `open_by_handle_at` for
//! each use: slower, but never EMFILE. This needs CAP_DAC_READ_SEARCH and a
//! filesystem that exports handles; without them every inode holds an fd.
//!
//! Lock order: the store's `RwLock` is a leaf; no other lock is taken while
//! it is held.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::platform::{self, FileHandleBuf, Stat};

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
    hold: RwLock<Hold>,
    /// backing (dev, ino); changes only when an atomic replace commits a
    /// new backing inode under this node (see [`InodeStore::repoint`])
    key: Mutex<(u64, u64)>,
    /// file type bits (S_IFMT) of the backing inode
    pub kind: u32,
    nlookup: AtomicU64,
}

/// How an inode is held: an `O_PATH` fd, or a file handle plus an fd on
/// its filesystem to reopen it with and, for a non-directory, the backing
/// path it was last known under (see [`Inode::named_fd`]).
#[derive(Debug)]
enum Hold {
    Fd(Arc<OwnedFd>),
    Handle(FileHandleBuf, Arc<OwnedFd>, Option<Vec<u8>>),
}

/// An `O_PATH` fd on an inode: shared with the store, or opened from a
/// file handle for this one use.
pub enum InodeFd {
    /// the inode's own fd
    Shared(Arc<OwnedFd>),
    /// reopened from its file handle; closed on drop
    Owned(OwnedFd),
}

impl AsFd for InodeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            InodeFd::Shared(b) => b.as_fd(),
            InodeFd::Owned(o) => o.as_fd(),
        }
    }
}

impl Inode {
    /// An `O_PATH` fd on the backing inode (ESTALE if a handle-held inode
    /// is gone).
    pub fn fd(&self) -> std::io::Result<InodeFd> {
        match &*self.hold.read().expect("inode poisoned") {
            Hold::Fd(fd) => Ok(InodeFd::Shared(fd.clone())),
            Hold::Handle(h, mount, _) => {
                platform::open_by_handle(mount.as_fd(), h, platform::O_PATH | libc::O_NOFOLLOW)
                    .map(InodeFd::Owned)
            }
        }
    }

    /// [`Inode::fd`], with a path: a file (not a directory) reopened by
    /// handle after the backing filesystem dropped its name from its cache
    /// comes back without one (the kernel names it "/"), and an open needs
    /// it: policy rules match paths, and an atomic commit renames over the
    /// file by its path (a `**/*.conf` rule silently stopped applying to
    /// such files). It is then reopened by the path it was last known
    /// under, if that still names it.
    pub fn named_fd(&self) -> std::io::Result<InodeFd> {
        let fd = self.fd()?;
        if let InodeFd::Owned(own) = &fd
            && let Hold::Handle(_, _, Some(p)) = &*self.hold.read().expect("inode poisoned")
            && platform::fd_path(own.as_fd()).is_ok_and(|q| q == b"/")
            && let Some(named) = reopen_by_path(p, own.as_fd())
        {
            return Ok(InodeFd::Owned(named));
        }
        Ok(fd)
    }

    /// Whether the inode is held by file handle rather than by fd.
    pub fn by_handle(&self) -> bool {
        matches!(*self.hold.read().expect("inode poisoned"), Hold::Handle(..))
    }

    /// The backing (dev, ino) behind this node now.
    pub fn key(&self) -> (u64, u64) {
        *self.key.lock().expect("inode poisoned")
    }

    /// Whether the backing inode is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == platform::file_type::S_IFDIR
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
    /// a dup of the root fd, for open_by_handle_at; None when handles do
    /// not work here (no CAP_DAC_READ_SEARCH, or the filesystem has none)
    mount_fd: Option<Arc<OwnedFd>>,
    fd_budget: usize,
    held_fds: AtomicUsize,
    next_synthetic: AtomicU64,
    next_generation: AtomicU64,
}

impl InodeStore {
    /// A store holding only the root, whose lookup count never drops.
    /// `fd_budget` is how many inodes may hold an fd before new ones are held
    /// by file handle.
    pub fn new(root_fd: OwnedFd, root_stat: &Stat, fd_budget: usize) -> Self {
        let key = platform::dev_ino(root_stat);
        let mount_fd = platform::probe_handles(root_fd.as_fd()).map(Arc::new);
        let root = Arc::new(Inode {
            id: ROOT_ID,
            generation: 0,
            hold: RwLock::new(Hold::Fd(Arc::new(root_fd))),
            key: Mutex::new(key),
            kind: platform::mode_of(root_stat) & platform::file_type::S_IFMT,
            nlookup: AtomicU64::new(1 << 40),
        });
        let mut maps = Maps::default();
        maps.by_id.insert(ROOT_ID, root);
        maps.by_key.insert(key, ROOT_ID);
        InodeStore {
            maps: RwLock::new(maps),
            root_dev: key.0,
            mount_fd,
            fd_budget,
            held_fds: AtomicUsize::new(1),
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

    /// The node standing for backing inode `key` ((dev, ino)), if the
    /// kernel holds one.
    pub fn id_of(&self, key: (u64, u64)) -> Option<u64> {
        let maps = self.maps.read().expect("inode store poisoned");
        maps.by_key.get(&key).copied()
    }

    /// Takes one lookup reference on the inode with backing attributes `st`,
    /// if it is already known.
    pub fn ref_existing(&self, st: &Stat) -> Option<Arc<Inode>> {
        let maps = self.maps.read().expect("inode store poisoned");
        let id = maps.by_key.get(&platform::dev_ino(st))?;
        let inode = maps.by_id.get(id)?.clone();
        inode.nlookup.fetch_add(1, Ordering::Relaxed);
        Some(inode)
    }

    /// Takes one lookup reference on the inode behind `fd` (whose attributes
    /// are `st`), inserting it if it is new; `fd` is dropped if the inode is
    /// already held.
    pub fn insert(&self, fd: OwnedFd, st: &Stat) -> Arc<Inode> {
        let key = platform::dev_ino(st);
        let mut maps = self.maps.write().expect("inode store poisoned");
        if let Some(id) = maps.by_key.get(&key) {
            let inode = maps.by_id[id].clone();
            inode.nlookup.fetch_add(1, Ordering::Relaxed);
            return inode;
        }
        // A node that was repointed keeps its old number, which the backing
        // filesystem may since have given to a new inode.
        let id = if key.0 == self.root_dev
            && st.st_ino > ROOT_ID
            && st.st_ino < SYNTHETIC_BASE
            && !maps.by_id.contains_key(&st.st_ino)
        {
            st.st_ino
        } else {
            self.next_synthetic.fetch_add(1, Ordering::Relaxed)
        };
        let hold = self.hold(fd, st);
        let inode = Arc::new(Inode {
            id,
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            hold: RwLock::new(hold),
            key: Mutex::new(key),
            kind: platform::mode_of(st) & platform::file_type::S_IFMT,
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
            let key = inode.key();
            if !inode.by_handle() {
                self.held_fds.fetch_sub(1, Ordering::Relaxed);
            }
            maps.by_id.remove(&id);
            if maps.by_key.get(&key) == Some(&id) {
                maps.by_key.remove(&key);
            }
        }
    }

    /// Holds a new inode by fd while under budget, else by file handle
    /// (where handles work and the inode is on the root's filesystem).
    fn hold(&self, fd: OwnedFd, st: &Stat) -> Hold {
        if self.held_fds.load(Ordering::Relaxed) >= self.fd_budget
            && platform::dev_ino(st).0 == self.root_dev
            && let Some(mount) = &self.mount_fd
            && let Ok(h) = platform::name_to_handle(fd.as_fd())
        {
            let path = (!platform::is_dir(st))
                .then(|| platform::fd_path(fd.as_fd()).ok())
                .flatten();
            return Hold::Handle(h, mount.clone(), path);
        }
        self.held_fds.fetch_add(1, Ordering::Relaxed);
        Hold::Fd(Arc::new(fd))
    }

    /// Points node `id` at another backing inode (an `O_PATH` fd on it,
    /// with attributes `st`): what an atomic replace does when its staged
    /// file is renamed over the target. The node keeps its id and lookup
    /// count, so the kernel's dentries and the app's open files stay valid.
    pub fn repoint(&self, id: u64, fd: OwnedFd, st: &Stat) {
        let mut maps = self.maps.write().expect("inode store poisoned");
        let Some(inode) = maps.by_id.get(&id).cloned() else {
            return;
        };
        let new_key = platform::dev_ino(st);
        let old_key = std::mem::replace(&mut *inode.key.lock().expect("inode poisoned"), new_key);
        if maps.by_key.get(&old_key) == Some(&id) {
            maps.by_key.remove(&old_key);
        }
        // A node that already stands for the new inode (looked up through
        // another name) keeps its own entry; this one still points there too.
        maps.by_key.entry(new_key).or_insert(id);
        // An fd-held node keeps its fd slot; a handle-held one takes one only
        // under the budget (else every atomic commit of a file past it took
        // one more fd).
        let mut hold = inode.hold.write().expect("inode poisoned");
        *hold = match *hold {
            Hold::Fd(_) => Hold::Fd(Arc::new(fd)),
            Hold::Handle(..) => self.hold(fd, st),
        };
    }

    /// Whether any inode is held by file handle.
    pub fn any_by_handle(&self) -> bool {
        self.len() > self.held_fds.load(Ordering::Relaxed)
    }

    /// A file (attributes `st`) was renamed through the mount to backing
    /// path `to`: if it is held by handle, that is its path now.
    pub fn file_moved(&self, st: &Stat, to: &[u8]) {
        let maps = self.maps.read().expect("inode store poisoned");
        let Some(inode) = maps
            .by_key
            .get(&platform::dev_ino(st))
            .and_then(|id| maps.by_id.get(id))
        else {
            return;
        };
        if let Hold::Handle(_, _, Some(p)) = &mut *inode.hold.write().expect("inode poisoned") {
            *p = to.to_vec();
        }
    }

    /// A directory was renamed through the mount from backing path `from`
    /// to `to`: the handle-held files under it are known by their new paths
    /// (a scan of the table: directory renames are rare).
    pub fn dir_moved(&self, from: &[u8], to: &[u8]) {
        let maps = self.maps.read().expect("inode store poisoned");
        for inode in maps.by_id.values() {
            if let Hold::Handle(_, _, Some(p)) = &mut *inode.hold.write().expect("inode poisoned")
                && p.starts_with(from)
                && p.get(from.len()) == Some(&b'/')
            {
                let rest = p.split_off(from.len());
                *p = [to, &rest].concat();
            }
        }
    }

    /// How many inodes hold an fd (the root included).
    pub fn held_fds(&self) -> usize {
        self.held_fds.load(Ordering::Relaxed)
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

/// An `O_PATH` fd opened by `path`, if that names the same inode as `fd`.
fn reopen_by_path(path: &[u8], fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    let cpath = std::ffi::CString::new(path).ok()?;
    let named = platform::open_path_at(platform::cwd(), &cpath).ok()?;
    let same = platform::dev_ino(&platform::stat_fd(named.as_fd()).ok()?)
        == platform::dev_ino(&platform::stat_fd(fd).ok()?);
    same.then_some(named)
}
