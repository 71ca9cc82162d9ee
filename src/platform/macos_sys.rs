//! macOS system calls used by the passthrough filesystem and the daemon:
//! the same functions as the Linux module, over what macOS has.
//!
//! macOS has no `O_PATH`, no `/proc/self/fd`, no file handles and no
//! per-thread fsuid. So an inode is held by an fd opened `O_EVTONLY |
//! O_SYMLINK | O_NONBLOCK` (no IO intended, a symlink itself rather than
//! its target, a FIFO without waiting for a writer; it survives renames
//! like an `O_PATH` fd), calls without an fd form go through the fd's
//! current path (`F_GETPATH`), requests run with `pthread_setugid_np`
//! (uid and gid per thread; supplementary groups are the daemon's), and
//! file handles are refused so the inode store keeps an fd per inode.
//!
//! Written against the macOS SDK's documented calls and type-checked in CI
//! (`scripts/test.sh`); not yet run on a Mac (see the README's platform
//! table).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use super::posix::*;
use super::posix::{cvt, cvt_isize, owned};

/// The open flags that make an fd a reference to an inode (Linux: O_PATH).
pub const O_PATH: i32 = libc::O_EVTONLY | libc::O_SYMLINK | libc::O_NONBLOCK;
/// O_NOATIME does not exist on macOS: asking for it asks for nothing.
pub const O_NOATIME: i32 = 0;
/// O_DIRECT does not exist on macOS (F_NOCACHE is set after the open).
pub const O_DIRECT: i32 = 0;
/// rename flag: fail if the target exists (what macFUSE sends)
pub const RENAME_NOREPLACE: u32 = libc::RENAME_EXCL;
/// rename flag: swap the two names
pub const RENAME_EXCHANGE: u32 = libc::RENAME_SWAP;
/// fallocate modes, with Linux's values (the fs layer's vocabulary)
pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
/// see [`FALLOC_FL_KEEP_SIZE`]
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
/// see [`FALLOC_FL_KEEP_SIZE`]
pub const FALLOC_FL_COLLAPSE_RANGE: i32 = 0x08;
/// see [`FALLOC_FL_KEEP_SIZE`]
pub const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
/// see [`FALLOC_FL_KEEP_SIZE`]
pub const FALLOC_FL_INSERT_RANGE: i32 = 0x20;

unsafe extern "C" {
    // <pthread.h> (macOS 10.5+): sets the calling thread's uid and gid;
    // KAUTH_UID_NONE / KAUTH_GID_NONE return it to the process's.
    fn pthread_setugid_np(uid: libc::uid_t, gid: libc::gid_t) -> libc::c_int;
}

const KAUTH_UID_NONE: libc::uid_t = !0 - 100;
const KAUTH_GID_NONE: libc::gid_t = !0 - 100;

fn unsupported() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOTSUP)
}

/// Opens a directory by path as an inode reference (the backing root).
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path.as_os_str())?;
    // SAFETY: `c` is NUL-terminated for the duration of the call.
    owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_EVTONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Opens `name` in `dir` as an inode reference: a symlink itself, a FIFO
/// without blocking.
pub fn open_path_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    open_at(dir, name, O_PATH, 0)
}

/// The current path of the file behind `fd` (`F_GETPATH`).
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: F_GETPATH writes at most MAXPATHLEN (= PATH_MAX) bytes and a NUL.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPATH, buf.as_mut_ptr()) })?;
    let len = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    buf.truncate(len);
    Ok(buf)
}

fn path_of(fd: BorrowedFd<'_>) -> io::Result<CString> {
    CString::new(fd_path(fd)?).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens the inode behind a reference fd for IO (by its current path),
/// with the permission checks of an ordinary open.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    let path = path_of(fd)?;
    let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW)) | libc::O_CLOEXEC;
    // SAFETY: `path` is NUL-terminated.
    owned(unsafe { libc::open(path.as_ptr(), flags) })
}

/// `fstat` of any fd (a symlink reference stats the link).
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let mut st = zeroed_stat();
    // SAFETY: `st` is valid for writes of one `stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fchmod` of the inode behind any fd.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// `fchown`; `u32::MAX` leaves an id unchanged.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// Sets atime and mtime of the inode behind an fd.
pub fn utimens_fd(fd: BorrowedFd<'_>, atime: TimeSpec, mtime: TimeSpec) -> io::Result<()> {
    futimens(fd, atime, mtime)
}

/// `truncate(2)` of the inode behind a reference fd, by its path.
pub fn truncate_fd(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let path = path_of(fd)?;
    // SAFETY: `path` is NUL-terminated.
    cvt(unsafe { libc::truncate(path.as_ptr(), len as libc::off_t) }).map(drop)
}

/// Reads the target of the symlink behind a reference fd.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let path = path_of(fd)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let n =
        cvt_isize(unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(n);
    Ok(buf)
}

/// `renameatx_np` with the kernel's flags ([`RENAME_NOREPLACE`],
/// [`RENAME_EXCHANGE`]); plain `renameat` when `flags` is 0.
pub fn rename_at(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: live fds and NUL-terminated names.
    cvt(unsafe {
        libc::renameatx_np(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Makes a new hard link `newdir/newname` to the inode behind `fd`.
pub fn link_fd(fd: BorrowedFd<'_>, newdir: BorrowedFd<'_>, newname: &CStr) -> io::Result<()> {
    let path = path_of(fd)?;
    // SAFETY: live fds and NUL-terminated names.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            path.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `fgetxattr`; an empty `buf` asks for the size.
pub fn getxattr_fd(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; `name` is NUL-terminated.
    cvt_isize(unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            0,
        )
    })
}

/// `flistxattr`; an empty `buf` asks for the size.
pub fn listxattr_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    cvt_isize(unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })
}

/// `fsetxattr` with the kernel's flags (XATTR_CREATE / XATTR_REPLACE).
pub fn setxattr_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    // SAFETY: `value` is valid for `value.len()` bytes of reads.
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
            flags,
        )
    })
    .map(drop)
}

/// `fremovexattr`.
pub fn removexattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated name, live fd.
    cvt(unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

/// `faccessat(AT_EACCESS)` on the inode behind an fd, by its path: checks
/// with the thread's ids.
pub fn access_fd(fd: BorrowedFd<'_>, mask: i32) -> io::Result<()> {
    let path = path_of(fd)?;
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mask, libc::AT_EACCESS) }).map(drop)
}

/// fallocate with Linux's mode bits: 0 and KEEP_SIZE reserve blocks
/// (F_PREALLOCATE; 0 also extends the size), PUNCH_HOLE | KEEP_SIZE frees
/// them (F_PUNCHHOLE); the rest are not supported on macOS.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    match mode {
        0 | FALLOC_FL_KEEP_SIZE => {
            if !super::macos::preallocate(fd, offset, len)? {
                return Err(unsupported());
            }
            let end = offset + len;
            if mode == 0 && end > stat_fd(fd)?.st_size as u64 {
                ftruncate(fd, end)?;
            }
            Ok(())
        }
        m if m == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE => {
            let hole = libc::fpunchhole_t {
                fp_flags: 0,
                reserved: 0,
                fp_offset: offset as libc::off_t,
                fp_length: len as libc::off_t,
            };
            // SAFETY: live fd; `hole` is a valid fpunchhole_t for F_PUNCHHOLE.
            cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_PUNCHHOLE, &hole) }).map(drop)
        }
        _ => Err(unsupported()),
    }
}

/// macOS has no copy_file_range: the kernel copies by reads and writes.
pub fn copy_file_range(
    _fd_in: BorrowedFd<'_>,
    _off_in: u64,
    _fd_out: BorrowedFd<'_>,
    _off_out: u64,
    _len: usize,
    _flags: u32,
) -> io::Result<usize> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// A data sync: macOS's fsync (the full flush is the durable layer's
/// `sync_full`, F_FULLFSYNC).
pub fn fdatasync(fd: BorrowedFd<'_>) -> io::Result<()> {
    super::counters::FDATASYNC.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// Direct IO alignment is not reported on macOS (F_NOCACHE needs none).
pub fn dio_align(_fd: BorrowedFd<'_>) -> Option<(u32, u32)> {
    None
}

/// Not known on macOS: the durable layer asks the filesystem instead.
pub fn logical_block_size(_dev: u64) -> Option<u32> {
    None
}

/// No posix_fadvise on macOS; the durable layer's `advise` maps what it can.
pub fn fadvise(_fd: BorrowedFd<'_>, _offset: u64, _len: u64, _advice: i32) -> io::Result<()> {
    Ok(())
}

/// No write-lifetime hints on macOS.
pub fn set_rw_hint(_fd: BorrowedFd<'_>, _hint: u64) -> io::Result<()> {
    Ok(())
}

/// Reads the rest of the directory from the current position of `fd`
/// (through a duplicate, which shares the position); an empty vector means
/// end of directory. Each entry's offset is the seek cookie just after it.
pub fn getdents(fd: BorrowedFd<'_>, _buf: &mut [u8]) -> io::Result<Vec<DirEntry>> {
    let dup = fd.try_clone_to_owned()?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
    // SAFETY: `raw` is an fd we own; fdopendir takes it over on success.
    let dir = unsafe { libc::fdopendir(raw) };
    if dir.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: `dir` is a live DIR stream.
        let e = unsafe { libc::readdir(dir) };
        if e.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry, alive until the next call.
        let e = unsafe { &*e };
        let name = &e.d_name[..e.d_namlen as usize];
        out.push(DirEntry {
            ino: e.d_ino,
            offset: e.d_seekoff,
            kind: e.d_type,
            name: name.iter().map(|&c| c as u8).collect(),
        });
    }
    // SAFETY: `dir` is live; closedir also closes the duplicate.
    unsafe { libc::closedir(dir) };
    Ok(out)
}

/// Switches the calling thread (only) to the uid and gid of `creds`. The
/// supplementary groups stay the daemon's: macOS has no per-thread groups.
pub fn set_thread_creds(creds: &Creds) -> io::Result<()> {
    // SAFETY: plain call with integer ids.
    let r = unsafe { pthread_setugid_np(creds.uid, creds.gid) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Returns the calling thread to the process's own ids.
pub fn reset_thread_creds(_uid: u32, _gid: u32) {
    // SAFETY: as in `set_thread_creds`; the NONE ids restore the process's.
    unsafe { pthread_setugid_np(KAUTH_UID_NONE, KAUTH_GID_NONE) };
}

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: `uid` and `gid` are valid for writes.
    cvt(unsafe { libc::getpeereid(sock.as_raw_fd(), &mut uid, &mut gid) })?;
    Ok(uid)
}

/// Raises RLIMIT_NOFILE to the hard limit (capped by the kernel's
/// OPEN_MAX). Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is valid for writes.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    // OPEN_MAX of <sys/syslimits.h>: the most setrlimit accepts.
    const OPEN_MAX: libc::rlim_t = 10240;
    r.rlim_cur = r.rlim_max.min(OPEN_MAX);
    // SAFETY: `r` is a valid rlimit.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
    Ok(r.rlim_cur)
}

/// macFUSE mounts through its own helper (fuser's libfuse path): there is
/// no device for the daemon to open.
pub fn open_dev_fuse() -> io::Result<OwnedFd> {
    Err(unsupported())
}

/// `unmount(2)`; `lazy` forces a busy mount off (MNT_FORCE).
pub fn umount(target: &Path, lazy: bool) -> io::Result<()> {
    let c = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if lazy { libc::MNT_FORCE } else { 0 };
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::unmount(c.as_ptr(), flags) }).map(drop)
}

/// A file handle: macOS has none the daemon can use, so every call fails
/// and the inode store keeps an fd per inode.
#[derive(Debug, Clone)]
pub struct FileHandleBuf;

/// Refused on macOS (see [`FileHandleBuf`]).
pub fn name_to_handle(_fd: BorrowedFd<'_>) -> io::Result<FileHandleBuf> {
    Err(unsupported())
}

/// Refused on macOS (see [`FileHandleBuf`]).
pub fn open_by_handle(
    _mount_fd: BorrowedFd<'_>,
    _handle: &FileHandleBuf,
    _flags: i32,
) -> io::Result<OwnedFd> {
    Err(unsupported())
}

/// Device numbers: (major, minor) of a dev_t (8 and 24 bits on macOS).
pub fn dev_major_minor(dev: u64) -> (u32, u32) {
    (((dev >> 24) & 0xff) as u32, (dev & 0xff_ffff) as u32)
}

/// A file no name reaches, in `dir`, open for reading and writing (Linux:
/// O_TMPFILE): made under a unique name and unlinked at once.
pub fn anonymous_file_in(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = CString::new(format!(".durafs-anon-{}-{n}", std::process::id()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fd = open_at(
        dir,
        &name,
        libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
        0o600,
    )?;
    unlink_at(dir, &name, false)?;
    Ok(fd)
}

/// No io_uring on macOS.
pub fn io_uring_live() -> bool {
    false
}

/// What the daemon says about its durable IO path.
pub fn io_uring_status() -> String {
    "pwrite + fsync (F_FULLFSYNC for full syncs)".to_string()
}
