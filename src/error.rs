//! The one error type of the command line and the daemon's set-up. Each
//! message names the problem and what to do about it. (Filesystem operations
//! do not use it: they return `io::Result` with the backing errno.)

use std::io;
use std::path::PathBuf;

/// What can stop `durafs` before or while it mounts, or while unmounting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// BACKING does not exist.
    #[error("backing directory {0} does not exist: create it first, or check the path")]
    BackingMissing(PathBuf),
    /// BACKING is not a directory.
    #[error(
        "backing path {0} is not a directory: durafs shows a directory tree; give the directory that holds the file"
    )]
    BackingNotDir(PathBuf),
    /// MOUNTPOINT does not exist.
    #[error("mount point {0} does not exist: create it with `mkdir -p {0}`")]
    MountpointMissing(PathBuf),
    /// MOUNTPOINT is not a directory.
    #[error("mount point {0} is not a directory: a filesystem can only be mounted on a directory")]
    MountpointNotDir(PathBuf),
    /// MOUNTPOINT has entries and `-o nonempty` was not given.
    #[error(
        "mount point {0} is not empty: mounting would hide its files; choose an empty directory, or pass `-o nonempty` to mount over them anyway"
    )]
    MountpointNotEmpty(PathBuf),
    /// Something is already mounted at MOUNTPOINT.
    #[error(
        "{0} is already a mount point ({1}): unmount it first (`durafs umount {0}` or `umount {0}`), or choose another directory"
    )]
    AlreadyMounted(PathBuf, String),
    /// MOUNTPOINT lies inside BACKING, which would make the mount show itself.
    #[error(
        "mount point {mountpoint} is inside the backing directory {backing}: the mount would contain itself; choose a mount point outside {backing} (mounting over {backing} itself is allowed)"
    )]
    Recursive {
        /// the backing directory
        backing: PathBuf,
        /// the mount point
        mountpoint: PathBuf,
    },
    /// /dev/fuse is missing.
    #[error(
        "/dev/fuse is missing: load the FUSE module (`modprobe fuse`), or in a container pass the device (`--device /dev/fuse`)"
    )]
    NoFuseDevice,
    /// Not root and no fusermount3 to mount with.
    #[error(
        "mounting as an unprivileged user needs fusermount3, which is not installed: install the fuse3 package (`apt-get install fuse3`), or mount as root"
    )]
    NoFusermount,
    /// A bad `-o` option.
    #[error("bad mount option `{0}`: {1}")]
    BadOption(String, String),
    /// Not a durafs mount (for umount).
    #[error("{0} is not a durafs mount: nothing to unmount (see `findmnt -t fuse.durafs`)")]
    NotMounted(PathBuf),
    /// The mount is in use (for umount).
    #[error(
        "{0} is busy: a process still has a file open or its working directory inside it; find it with `fuser -vm {0}` and close it, or unmount lazily with `durafs umount --lazy {0}`"
    )]
    Busy(PathBuf),
    /// A policy file was refused (its diagnostics follow).
    #[error("{0}")]
    Policy(crate::policy::PolicyError),
    /// A reload was refused; the old policy stays in force.
    #[error("{0}: reload refused, the old policy stays in force:\n{1}")]
    Reload(PathBuf, String),
    /// The daemon refused a control request (crash, fault); its reason follows.
    #[error("{0}: {1}")]
    Refused(PathBuf, String),
    /// The daemon failed to start; its own message follows.
    #[error("the durafs daemon failed to start: {0}")]
    Daemon(String),
    /// A system call failed.
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
}

impl Error {
    /// An IO error with what was being done.
    pub fn io(what: impl Into<String>, e: io::Error) -> Self {
        Error::Io(what.into(), e)
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
