//! The system calls that are the same on every Unix durafs builds for
//! (Linux and macOS): thin, safe wrappers that check the return value and
//! turn -1 into `io::Error::last_os_error()`, so the errno reaches the
//! kernel unchanged. Each OS module re-exports them beside its own.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// The attributes of a backing inode, exactly as `fstatat(2)` returns them.
pub type Stat = libc::stat;

/// Filesystem statistics as `fstatvfs(3)` returns them.
pub type StatVfs = libc::statvfs;

pub(super) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(super) fn cvt_isize(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A name for a syscall: `OsStr` to `CString`; a NUL inside is EINVAL, as
/// the kernel would say for a path it cannot represent.
pub fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(super) fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(fd)?;
    // SAFETY: `fd` was just returned by a successful syscall that creates a
    // new descriptor, so nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(2)` with `O_CLOEXEC` added.
pub fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is a live descriptor and `name` is NUL-terminated; the
    // mode argument is read only when O_CREAT or O_TMPFILE is set.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
}

pub(super) fn stat_raw(dir: RawFd, name: &CStr, flags: i32) -> io::Result<Stat> {
    let mut st = MaybeUninit::<Stat>::uninit();
    // SAFETY: `st` is valid for writes of one `stat`; the kernel fills it on success.
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so `st` is initialised.
    Ok(unsafe { st.assume_init() })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    stat_raw(dir.as_raw_fd(), name, libc::AT_SYMLINK_NOFOLLOW)
}

/// `fstatvfs(2)`; works on `O_PATH` fds.
pub fn statvfs_fd(fd: BorrowedFd<'_>) -> io::Result<StatVfs> {
    let mut st = MaybeUninit::<StatVfs>::uninit();
    // SAFETY: `st` is valid for writes of one `statvfs`.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded, so `st` is initialised.
    Ok(unsafe { st.assume_init() })
}

/// A timestamp for `utimens`: leave it, set it to now, or set it to a value.
#[derive(Clone, Copy, Debug)]
pub enum TimeSpec {
    /// UTIME_OMIT
    Omit,
    /// UTIME_NOW
    Now,
    /// seconds and nanoseconds since the epoch
    At(i64, i64),
}

pub(super) fn timespec(t: TimeSpec) -> libc::timespec {
    match t {
        TimeSpec::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        TimeSpec::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        TimeSpec::At(s, ns) => libc::timespec {
            tv_sec: s as libc::time_t,
            tv_nsec: ns as libc::c_long,
        },
    }
}

/// `futimens` on an fd opened for IO (needs no path permission beyond ownership).
pub fn futimens(fd: BorrowedFd<'_>, atime: TimeSpec, mtime: TimeSpec) -> io::Result<()> {
    let times = [timespec(atime), timespec(mtime)];
    // SAFETY: `times` is an array of two timespecs.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// The first `len` bytes of the file behind `fd` (at most its size: pages
/// past the end would fault) as a shared, read-only mapping sees them
/// (mmap MAP_SHARED, PROT_READ, copied out, unmapped): whether such a
/// mapping can be made at all, and what it reads.
pub fn read_mapped(fd: BorrowedFd<'_>, len: usize) -> io::Result<Vec<u8>> {
    let mut st = MaybeUninit::<Stat>::uninit();
    // SAFETY: `st` is valid for writes of one `stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so `st` is initialised.
    let size = unsafe { st.assume_init() }.st_size;
    let len = len.min(usize::try_from(size).unwrap_or(0));
    if len == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: a fresh mapping chosen by the kernel, of a live fd; checked
    // for MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut out = vec![0u8; len];
    // SAFETY: `p` maps `len` readable bytes; `out` holds `len` bytes; no
    // reference into the mapping outlives this copy. Unmapped right after,
    // exactly once.
    unsafe {
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), out.as_mut_ptr(), len);
        libc::munmap(p, len);
    }
    Ok(out)
}

/// `close(2)` with its result, which dropping an `OwnedFd` or a `File`
/// throws away (a FUSE FLUSH error reaches an app there).
pub fn close(fd: OwnedFd) -> io::Result<()> {
    // SAFETY: the fd is owned here and closed exactly once (ownership is
    // given up by into_raw_fd).
    cvt(unsafe { libc::close(fd.into_raw_fd()) }).map(drop)
}

/// `ftruncate(2)` on an fd opened for writing.
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) }).map(drop)
}

/// `mknodat(2)`.
pub fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })
    .map(drop)
}

/// `mkdirat(2)`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `symlinkat(2)`.
pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and `dir` is live.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `unlinkat(2)`; `dir_flag` removes a directory (AT_REMOVEDIR).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, remove_dir: bool) -> io::Result<()> {
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `lseek(2)`, including SEEK_DATA and SEEK_HOLE.
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain syscall on a live fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

/// Calls `call(done)` (one syscall on the buffer from byte `done` on) until
/// `len` bytes are through: EINTR is retried, an error after some bytes
/// ends it short (logged), one before any is returned. With `eof_stops`, a
/// zero count (end of file) ends it short too.
fn all_of(
    len: usize,
    what: &str,
    eof_stops: bool,
    mut call: impl FnMut(usize) -> isize,
) -> io::Result<usize> {
    let mut done = 0;
    while done < len {
        match cvt_isize(call(done)) {
            Ok(0) if eof_stops => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if done > 0 => {
                tracing::debug!("short {what} after {done} bytes: {e}");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// `pread(2)` into `buf`, short only at end of file.
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let len = buf.len();
    all_of(len, "read", true, |done| {
        // SAFETY: the slice tail is valid for writes of its length.
        unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                len - done,
                (offset + done as u64) as libc::off_t,
            )
        }
    })
}

/// `pwrite(2)` of the whole buffer (a short write is retried, as the kernel
/// expects a FUSE write to be complete unless it failed).
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<usize> {
    all_of(buf.len(), "write", false, |done| {
        // SAFETY: the slice tail is valid for reads of its length.
        unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                buf[done..].as_ptr().cast(),
                buf.len() - done,
                (offset + done as u64) as libc::off_t,
            )
        }
    })
}

/// `write(2)` at the file position (for O_APPEND descriptors, where the
/// kernel picks the offset).
pub fn write_all(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    all_of(buf.len(), "write", false, |done| {
        // SAFETY: the slice tail is valid for reads of its length.
        unsafe {
            libc::write(
                fd.as_raw_fd(),
                buf[done..].as_ptr().cast(),
                buf.len() - done,
            )
        }
    })
}

/// `fsync(2)`.
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    super::counters::FSYNC.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// Sets and clears file status flags of an open fd (`fcntl(F_SETFL)`:
/// O_DIRECT, O_APPEND, ...). EINVAL for O_DIRECT on a filesystem that
/// cannot do direct IO (tmpfs).
pub fn set_status_flags(fd: BorrowedFd<'_>, set: i32, clear: i32) -> io::Result<()> {
    // SAFETY: plain fcntl on a live fd.
    let fl = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: plain fcntl on a live fd.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, (fl | set) & !clear) }).map(drop)
}

/// One directory entry as `getdents64(2)` returns it.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// backing inode number
    pub ino: u64,
    /// the cookie that resumes the stream just after this entry
    pub offset: u64,
    /// DT_* type
    pub kind: u8,
    /// the entry's name, without NUL
    pub name: Vec<u8>,
}

/// The credentials a request runs with: fsuid, fsgid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// filesystem user id
    pub uid: u32,
    /// filesystem group id
    pub gid: u32,
    /// supplementary groups
    pub groups: Vec<u32>,
}

/// The process's effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::geteuid() }
}

/// The process's effective gid.
pub fn getegid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::getegid() }
}

/// Sets the process umask, returning the old one.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Blocks `signals` in the calling thread (and the threads it spawns later),
/// so one thread can take them with [`wait_signal`].
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is an initialised sigset.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

fn sigset(signals: &[i32]) -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set.
    cvt(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
    for &s in signals {
        // SAFETY: the set is initialised.
        cvt(unsafe { libc::sigaddset(set.as_mut_ptr(), s) })?;
    }
    // SAFETY: initialised by sigemptyset.
    Ok(unsafe { set.assume_init() })
}

/// Waits for one of `signals` (blocked beforehand) and returns it.
pub fn wait_signal(signals: &[i32]) -> io::Result<i32> {
    let set = sigset(signals)?;
    let mut sig = 0;
    // SAFETY: `set` is initialised and `sig` is valid for writes.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(sig)
}

/// Sends `sig` to the process itself (used to wake the signal thread).
pub fn raise_self(sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::kill(libc::getpid(), sig) }).map(drop)
}

/// Detaches a backgrounded daemon from its terminal: a new session and
/// stdin/stdout/stderr on /dev/null.
pub fn detach_from_terminal() -> io::Result<()> {
    // SAFETY: setsid has no memory effects; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    let null = open_at(
        // SAFETY: AT_FDCWD is a valid dirfd sentinel for openat and is never closed.
        unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) },
        c"/dev/null",
        libc::O_RDWR,
        0,
    )?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which stay owned by the process.
        cvt(unsafe { libc::dup2(null.as_raw_fd(), target) })?;
    }
    Ok(())
}

/// The current working directory as a borrowed dirfd (AT_FDCWD).
pub fn cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a sentinel the *at() calls accept and nothing closes.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// The process's soft RLIMIT_NOFILE.
pub fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is valid for writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        1024
    }
}

/// An all-zero `stat`, for synthesised attributes.
pub fn zeroed_stat() -> Stat {
    // SAFETY: `stat` is a plain struct of integers, for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// The identity of a backing inode: (device, inode number) of its stat.
#[allow(clippy::unnecessary_cast)] // dev_t is u64 on Linux, i32 on macOS
pub fn dev_ino(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// The mode of a stat as a u32 (mode_t is u16 on macOS).
#[allow(clippy::unnecessary_cast)]
pub fn mode_of(st: &Stat) -> u32 {
    st.st_mode as u32
}

/// Whether a stat is a directory's.
pub fn is_dir(st: &Stat) -> bool {
    mode_of(st) & file_type::S_IFMT == file_type::S_IFDIR
}

/// File type bits, as u32 on every OS (compare with [`mode_of`]).
#[allow(clippy::unnecessary_cast)]
pub mod file_type {
    /// mask of the type bits
    pub const S_IFMT: u32 = libc::S_IFMT as u32;
    /// directory
    pub const S_IFDIR: u32 = libc::S_IFDIR as u32;
    /// regular file
    pub const S_IFREG: u32 = libc::S_IFREG as u32;
    /// symbolic link
    pub const S_IFLNK: u32 = libc::S_IFLNK as u32;
    /// FIFO
    pub const S_IFIFO: u32 = libc::S_IFIFO as u32;
    /// socket
    pub const S_IFSOCK: u32 = libc::S_IFSOCK as u32;
    /// character device
    pub const S_IFCHR: u32 = libc::S_IFCHR as u32;
    /// block device
    pub const S_IFBLK: u32 = libc::S_IFBLK as u32;
    /// set-user-id bit
    pub const S_ISUID: u32 = libc::S_ISUID as u32;
    /// set-group-id bit
    pub const S_ISGID: u32 = libc::S_ISGID as u32;
    /// group execute bit
    pub const S_IXGRP: u32 = libc::S_IXGRP as u32;
}
