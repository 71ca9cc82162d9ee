//! The durability engine: how an open file's writes and syncs reach the
//! backing store.
//!
//! The filesystem layer hands every write, flush (close), fsync and
//! directory change of an open file to the engine, which applies the open
//! file's durability strategy. Each open resolves its [`FilePolicy`] from
//! the mount's active policy when it is opened and keeps it until it is
//! closed (a reload or a rename does not change it).
//!
//! This version still performs every operation as a plain passthrough:
//! writes go to the backing file as they come, the app's fsync/fdatasync is
//! performed as asked, and close and directory changes add nothing. The
//! seams are the ones the strategies (direct, atomic, append, sync
//! triggers) fill in, without the fs layer changing shape. No FUSE type is
//! seen here.

mod active;

use std::io;
use std::os::fd::BorrowedFd;

pub use active::{ActivePolicy, Reloaded};

use crate::platform;
use crate::policy::{FilePolicy, Policy};

/// The durability engine shared by all open files of a mount.
#[derive(Debug)]
pub struct Engine {
    policy: ActivePolicy,
}

/// The engine's state for one open file.
#[derive(Debug)]
pub struct Writer {
    /// what the policy decided for this open, when it was opened
    pub policy: FilePolicy,
}

impl Engine {
    /// An engine applying `policy` (read from `path`, if from a file: that
    /// is what a reload re-reads).
    pub fn new(policy: Policy, path: Option<std::path::PathBuf>) -> Self {
        Engine {
            policy: ActivePolicy::new(policy, path),
        }
    }

    /// The policy in force, and its reloads.
    pub fn policy(&self) -> &ActivePolicy {
        &self.policy
    }

    /// The per-open state for a file opened with `flags`; `path` gives its
    /// path relative to the mount root, asked for only when the policy has
    /// rules to match.
    pub fn open_writer(&self, _flags: i32, path: impl FnOnce() -> Vec<u8>) -> Writer {
        let policy = self.policy.get();
        let fp = if policy.is_uniform() {
            policy.defaults().clone()
        } else {
            let path = path();
            let fp = policy.resolve(&path);
            tracing::debug!("open {}: rule {}", String::from_utf8_lossy(&path), fp.rule);
            fp
        };
        Writer { policy: fp }
    }

    /// Whether the daemon must see every read and write of this open (so the
    /// kernel may not hand its IO straight to the backing file). A plain
    /// passthrough needs to see none.
    pub fn intercepts_io(&self, _w: &Writer) -> bool {
        false
    }

    /// Whether the engine must hear of every close(2) of this open (FUSE
    /// FLUSH). When it need not, the kernel is told not to send it, which
    /// saves a round trip per close.
    pub fn needs_flush(&self, _w: &Writer) -> bool {
        false
    }

    /// Writes `data` at `offset` (at the end of file for an O_APPEND fd,
    /// where Linux pwrite ignores the offset).
    pub fn write(
        &self,
        _w: &Writer,
        fd: BorrowedFd<'_>,
        data: &[u8],
        offset: u64,
    ) -> io::Result<usize> {
        platform::pwrite(fd, data, offset)
    }

    /// Called on every close(2) of the file (FUSE FLUSH).
    pub fn flush(&self, _w: &Writer, _fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(())
    }

    /// The app's fsync (`datasync` = fdatasync).
    pub fn fsync(&self, _w: &Writer, fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
        if datasync {
            platform::fdatasync(fd)
        } else {
            platform::fsync(fd)
        }
    }

    /// The app's fsync of a directory.
    pub fn fsync_dir(&self, fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
        if datasync {
            platform::fdatasync(fd)
        } else {
            platform::fsync(fd)
        }
    }

    /// Called after a metadata operation changed the entries of `_dirs`.
    pub fn dirs_changed(&self, _dirs: &[BorrowedFd<'_>]) -> io::Result<()> {
        Ok(())
    }

    /// Whether a backing name is the engine's own (a staging file) and must
    /// not appear through the mount.
    pub fn is_hidden(&self, _name: &[u8]) -> bool {
        false
    }
}
