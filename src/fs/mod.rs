//! The passthrough filesystem: OS-neutral operations on the backing tree.
//!
//! `PassthroughFs` holds the state (inode store, handle store, the engine);
//! the operations are split by concern into `meta` (names and attributes),
//! `file` (open files and their IO), `dir` (directory streams) and `xattr`.
//! Every operation returns `io::Result` with the backing filesystem's raw
//! errno: the frontend hands that errno to the kernel unchanged, and context
//! goes to the log only.
//!
//! Requests that create, remove or change things run with the caller's
//! fsuid, fsgid and supplementary groups (see [`Caller`]), so ownership and
//! permission checks on the backing store are exactly those a direct call
//! would get.

mod dir;
mod file;
mod handle;
pub mod inode;
mod meta;
mod xattr;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use file::{Opened, ReadTarget};
pub use handle::{DirHandle, FileHandle, HandleStore};
pub use inode::{Inode, InodeStore, ROOT_ID};
pub use meta::SetAttr;
pub use xattr::XattrReply;

use crate::engine::Engine;
use crate::platform::{self, Creds, Stat};

/// Who sent a request: the ids the kernel put in the request header.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// uid of the calling process
    pub uid: u32,
    /// gid of the calling process
    pub gid: u32,
    /// pid (thread id) of the calling process; 0 when the kernel itself asks
    pub pid: u32,
}

/// A looked-up inode: its node id, generation and backing attributes.
#[derive(Debug, Clone)]
pub struct Entry {
    /// FUSE node id (also shown as st_ino)
    pub ino: u64,
    /// generation of the node id
    pub generation: u64,
    /// backing attributes
    pub attr: Stat,
}

/// Options that change how the filesystem behaves.
#[derive(Debug, Clone, Default)]
pub struct FsOptions {
    /// The kernel checks permissions (`default_permissions`): the daemon
    /// need not repeat the checks on lookups.
    pub default_permissions: bool,
    /// How many inodes may hold an fd before new ones are held by file
    /// handle (None: 3/4 of RLIMIT_NOFILE, read when the filesystem starts).
    pub max_inode_fds: Option<usize>,
    /// Where the filesystem is mounted (canonical), to recognise a file
    /// some process is executing (see `PassthroughFs::executing`).
    pub mountpoint: Option<PathBuf>,
}

/// The passthrough filesystem over one backing directory.
pub struct PassthroughFs {
    pub(crate) inodes: InodeStore,
    pub(crate) handles: HandleStore,
    pub(crate) engine: Engine,
    backing: PathBuf,
    /// the backing root as the kernel names it (/proc/self/fd), the prefix
    /// stripped from backing paths to get mount-relative ones
    root_path: Vec<u8>,
    opts: FsOptions,
    daemon_uid: u32,
    daemon_gid: u32,
}

impl PassthroughFs {
    /// Opens the backing directory. Fails with the errno of the open (ENOENT,
    /// ENOTDIR, EACCES) when it is not a usable directory.
    pub fn new(backing: &Path, opts: FsOptions, mut engine: Engine) -> io::Result<Self> {
        let root = platform::open_dir_path(backing)?;
        engine.start(root.as_fd())?;
        let st = platform::stat_fd(root.as_fd())?;
        let root_path = platform::fd_path(root.as_fd())?;
        Ok(PassthroughFs {
            inodes: InodeStore::new(
                root,
                &st,
                opts.max_inode_fds
                    .unwrap_or_else(|| (platform::nofile_limit() as usize / 4 * 3).max(64)),
            ),
            handles: HandleStore::default(),
            engine,
            backing: backing.to_path_buf(),
            root_path,
            opts,
            daemon_uid: platform::geteuid(),
            daemon_gid: platform::getegid(),
        })
    }

    /// The backing directory this filesystem shows.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// The durability engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The path of the file behind `fd` relative to the mount root, as the
    /// policy matches it (empty if it cannot be told, e.g. for a file
    /// that is no longer in the tree).
    pub fn rel_path(&self, fd: std::os::fd::BorrowedFd<'_>) -> Vec<u8> {
        match platform::fd_path(fd) {
            Ok(p) => match p.strip_prefix(self.root_path.as_slice()) {
                Some([]) => Vec::new(),
                Some([b'/', rest @ ..]) => rest.to_vec(),
                Some(rest) if self.root_path == b"/" => rest.to_vec(),
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }

    /// Every open file: its path relative to the mount root now, its open
    /// flags and the policy it was opened with.
    pub fn open_files(&self) -> Vec<(Vec<u8>, i32, crate::policy::FilePolicy)> {
        let mut v: Vec<_> = self
            .handles
            .files()
            .iter()
            .map(|h| (self.rel_path(h.fd()), h.flags, h.writer.policy.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The path (relative to the mount root) of the file open as `fh`.
    pub fn handle_path(&self, fh: u64) -> Option<Vec<u8>> {
        self.handles.file(fh).ok().map(|h| self.rel_path(h.fd()))
    }

    /// The node id the kernel knows backing inode `key` ((dev, ino)) by, if
    /// it holds one.
    pub fn node_of(&self, key: (u64, u64)) -> Option<u64> {
        self.inodes.id_of(key)
    }

    /// How many inodes the kernel holds references to (the root included).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// How many of them hold an fd (the others are held by file handle).
    pub fn inode_fds(&self) -> usize {
        self.inodes.held_fds()
    }

    /// Runs the rest of the request as `caller` (restored when the guard drops).
    pub(crate) fn as_caller(&self, caller: &Caller) -> io::Result<CredGuard> {
        if caller.uid == self.daemon_uid && caller.gid == self.daemon_gid {
            return Ok(CredGuard { restore: None });
        }
        let creds = Creds {
            uid: caller.uid,
            gid: caller.gid,
            groups: supplementary_groups(caller.pid),
        };
        platform::set_thread_creds(&creds)?;
        Ok(CredGuard {
            restore: Some((self.daemon_uid, self.daemon_gid)),
        })
    }

    /// Whether the daemon must check lookup permissions itself.
    pub(crate) fn checks_permissions(&self) -> bool {
        !self.opts.default_permissions
    }

    /// Registers the inode behind `fd` (an `O_PATH` handle) with one lookup
    /// reference, and returns its entry.
    pub(crate) fn entry_from_path_fd(&self, fd: OwnedFd) -> io::Result<Entry> {
        let st = platform::stat_fd(fd.as_fd())?;
        let inode = self.inodes.insert(fd, &st);
        Ok(self.entry_of(&inode, st))
    }

    pub(crate) fn entry_of(&self, inode: &Arc<Inode>, attr: Stat) -> Entry {
        Entry {
            ino: inode.id,
            generation: inode.generation,
            attr,
        }
    }
}

/// Restores the daemon's own credentials on drop.
pub(crate) struct CredGuard {
    restore: Option<(u32, u32)>,
}

impl Drop for CredGuard {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.restore {
            platform::reset_thread_creds(uid, gid);
        }
    }
}

/// The supplementary groups of process `pid`, read from /proc (the FUSE
/// request header carries only uid and gid). Empty when the process is gone.
fn supplementary_groups(pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    proc_status(pid).map_or_else(Vec::new, |s| parse_groups(&s))
}

/// /proc/PID/status of thread or process `pid`, if it is still there.
///
/// Read into a buffer the usual size of the file, so it takes one read and
/// one end-of-file read: `fs::read_to_string` asks for the size (procfs
/// says 0) and then took eight reads growing from 32 bytes, and this runs
/// at every close of an atomic file and every request of another user.
fn proc_status(pid: u32) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/status")).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(2 * n, 0);
        }
        match f.read(&mut buf[n..]).ok()? {
            0 => break,
            r => n += r,
        }
    }
    buf.truncate(n);
    String::from_utf8(buf).ok()
}

/// The process (thread group) that thread `pid` belongs to; `pid` itself
/// when /proc cannot tell.
pub(crate) fn tgid(pid: u32) -> u32 {
    proc_status(pid)
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(pid)
}

fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// An errno as an `io::Error`.
pub(crate) fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_line() {
        let s = "Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 24 27 1000 \nNgid:\t0\n";
        assert_eq!(parse_groups(s), vec![4, 24, 27, 1000]);
        assert_eq!(parse_groups("Groups:\t\n"), Vec::<u32>::new());
        assert_eq!(parse_groups("Name: y\n"), Vec::<u32>::new());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_threads_process_and_status_come_from_proc() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
            tx.send(tid).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me);
        assert_eq!(tgid(tid), me, "a live thread belongs to this process");
        done_tx.send(()).unwrap();
        t.join().unwrap();
        let status = proc_status(me).unwrap();
        assert!(status.contains("\nTgid:\t") && status.contains("\nVmRSS:"));
        assert!(status.ends_with('\n'), "read to its end: {status}");
    }
}
