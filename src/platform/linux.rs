//! Linux system calls used by the passthrough filesystem and the daemon.
//!
//! Every function here is a thin, safe wrapper over one libc call: it checks
//! the return value and turns -1 into `io::Error::last_os_error()`, so the
//! errno reaches the kernel unchanged. Inodes are held as `O_PATH` file
//! descriptors; operations that the kernel does not allow on an `O_PATH` fd
//! go through `/proc/self/fd/N`, which names the inode itself and is immune to
//! renames of its parent directories.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::OnceLock;

pub use super::posix::*;
pub use libc::{
    FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE, O_DIRECT, O_NOATIME, O_PATH,
};

/// rename flag: fail if the target exists
pub const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
/// rename flag: swap the two names
pub const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;

/// A file no name reaches, in `dir`, open for reading and writing
/// (O_TMPFILE).
pub fn anonymous_file_in(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    open_at(dir, c".", libc::O_TMPFILE | libc::O_RDWR, 0o600)
}
use super::posix::{cvt, cvt_isize, owned, stat_raw, timespec};

fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `/proc/self/fd` opened once: `/proc/self/fd/N` names reach an inode held
/// by an `O_PATH` fd for the calls that refuse `O_PATH` descriptors.
fn proc_self_fd() -> io::Result<BorrowedFd<'static>> {
    static PROC: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = PROC.get() {
        return Ok(fd.as_fd_static());
    }
    let fd = open_dir_path(Path::new("/proc/self/fd"))?;
    let _ = PROC.set(fd);
    Ok(PROC.get().expect("just set").as_fd_static())
}

trait StaticFd {
    fn as_fd_static(&'static self) -> BorrowedFd<'static>;
}
impl StaticFd for OwnedFd {
    fn as_fd_static(&'static self) -> BorrowedFd<'static> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

/// The decimal name of `fd` inside `/proc/self/fd`, NUL-terminated, on the stack.
struct FdName {
    buf: [u8; 24],
}

impl FdName {
    fn new(fd: RawFd) -> Self {
        let mut buf = [0u8; 24];
        let mut n = fd as u32;
        let mut digits = [0u8; 12];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[i] = digits[len - 1 - i];
        }
        FdName { buf }
    }
    fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).expect("NUL-terminated")
    }
}

/// The absolute `/proc/self/fd/N` path of `fd`, for calls without an `*at` form.
fn proc_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL")
}

/// Opens a directory by path as an `O_PATH` fd (the backing root).
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path.as_os_str())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Opens `name` in `dir` as an `O_PATH | O_NOFOLLOW` handle: a reference to
/// the inode that allows no IO but survives renames.
pub fn open_path_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is a live descriptor and `name` is NUL-terminated.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Opens the inode behind an `O_PATH` fd for IO, with the permission checks
/// of an ordinary open by the current (fs)uid.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    let name = FdName::new(fd.as_raw_fd());
    let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW)) | libc::O_CLOEXEC;
    // SAFETY: `proc_self_fd()` is a live directory fd and the name is
    // NUL-terminated.
    owned(unsafe { libc::openat(proc_self_fd()?.as_raw_fd(), name.as_cstr().as_ptr(), flags) })
}

/// `fstat` of any fd, including `O_PATH` ones.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    stat_raw(
        fd.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
    )
}

/// `chmod` of the inode behind any fd (through `/proc/self/fd`).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let name = FdName::new(fd.as_raw_fd());
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe {
        libc::fchmodat(
            proc_self_fd()?.as_raw_fd(),
            name.as_cstr().as_ptr(),
            mode as libc::mode_t,
            0,
        )
    })
    .map(drop)
}

/// `fchownat(fd, "", AT_EMPTY_PATH)`; `u32::MAX` leaves an id unchanged.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd and a static empty C string.
    cvt(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Sets atime and mtime of the inode behind an fd (symlinks included).
pub fn utimens_fd(fd: BorrowedFd<'_>, atime: TimeSpec, mtime: TimeSpec) -> io::Result<()> {
    let times = [timespec(atime), timespec(mtime)];
    // SAFETY: `times` is an array of two timespecs as utimensat requires.
    cvt(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `truncate(2)` of the inode behind an `O_PATH` fd, with the write
/// permission check of the current fsuid.
pub fn truncate_fd(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let path = proc_path(fd);
    // SAFETY: `path` is NUL-terminated.
    cvt(unsafe { libc::truncate(path.as_ptr(), len as libc::off_t) }).map(drop)
}

/// The path of the file an fd refers to, as the kernel names it
/// (`/proc/self/fd/N`); ` (deleted)` is appended for an unlinked file.
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.into_os_string().into_vec())
}

/// Reads the target of the symlink behind an `O_PATH` fd.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let n = cvt_isize(unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// `renameat2(2)` with the caller's flags (RENAME_NOREPLACE, RENAME_EXCHANGE,
/// RENAME_WHITEOUT); plain `renameat` semantics when `flags` is 0.
pub fn rename_at(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: raw renameat2 syscall with live fds and NUL-terminated names.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
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
    let name = FdName::new(fd.as_raw_fd());
    // SAFETY: live fds, NUL-terminated names. AT_SYMLINK_FOLLOW follows the
    // /proc magic link to the inode itself, which works without
    // CAP_DAC_READ_SEARCH (unlike AT_EMPTY_PATH).
    cvt(unsafe {
        libc::linkat(
            proc_self_fd()?.as_raw_fd(),
            name.as_cstr().as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// `getxattr` on the inode behind an fd; an empty `buf` asks for the size.
pub fn getxattr_fd(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let path = proc_path(fd);
    // SAFETY: `buf` is valid for `buf.len()` bytes; strings are NUL-terminated.
    cvt_isize(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

/// `listxattr` on the inode behind an fd; an empty `buf` asks for the size.
pub fn listxattr_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let path = proc_path(fd);
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    cvt_isize(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `setxattr` on the inode behind an fd.
pub fn setxattr_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    let path = proc_path(fd);
    // SAFETY: `value` is valid for `value.len()` bytes of reads.
    cvt(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// `removexattr` on the inode behind an fd.
pub fn removexattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let path = proc_path(fd);
    // SAFETY: NUL-terminated strings.
    cvt(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// `faccessat2(AT_EACCESS)` on the inode behind an fd: checks with the
/// current fsuid/fsgid and groups, not the real ids.
pub fn access_fd(fd: BorrowedFd<'_>, mask: i32) -> io::Result<()> {
    let name = FdName::new(fd.as_raw_fd());
    // SAFETY: raw faccessat2 syscall with a live fd and NUL-terminated name.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            proc_self_fd()?.as_raw_fd(),
            name.as_cstr().as_ptr(),
            mask,
            libc::AT_EACCESS,
        )
    })
    .map(drop)
}

/// `fallocate(2)` with any mode the backing filesystem supports.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
    .map(drop)
}

/// `copy_file_range(2)` between two fds at explicit offsets.
pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    let mut oi = off_in as libc::loff_t;
    let mut oo = off_out as libc::loff_t;
    // SAFETY: the offsets are valid for reads and writes for the call.
    cvt_isize(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut oi,
            fd_out.as_raw_fd(),
            &mut oo,
            len,
            flags,
        )
    })
}

/// `fdatasync(2)`.
pub fn fdatasync(fd: BorrowedFd<'_>) -> io::Result<()> {
    super::counters::FDATASYNC.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::fdatasync(fd.as_raw_fd()) }).map(drop)
}

/// The alignment direct IO needs on this file (`statx` STATX_DIOALIGN,
/// Linux 6.1+): (memory alignment, offset and length alignment). None when
/// the kernel or the filesystem does not say, or the file cannot do direct
/// IO.
pub fn dio_align(fd: BorrowedFd<'_>) -> Option<(u32, u32)> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, empty NUL-terminated path with AT_EMPTY_PATH, and
    // `stx` valid for writes.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if r != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return None;
    }
    Some((stx.stx_dio_mem_align, stx.stx_dio_offset_align))
}

/// The logical block size of the block device holding `dev` (from sysfs),
/// if it is a block device durafs can find.
pub fn logical_block_size(dev: u64) -> Option<u32> {
    let (maj, min) = dev_major_minor(dev);
    let base = format!("/sys/dev/block/{maj}:{min}");
    // A partition's queue is its disk's.
    for q in [
        format!("{base}/queue/logical_block_size"),
        format!("{base}/../queue/logical_block_size"),
    ] {
        if let Ok(s) = std::fs::read_to_string(q) {
            if let Ok(n) = s.trim().parse() {
                return Some(n);
            }
        }
    }
    None
}

/// `posix_fadvise(2)`: `advice` is a POSIX_FADV_* value.
pub fn fadvise(fd: BorrowedFd<'_>, offset: u64, len: u64, advice: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a live fd.
    let r = unsafe {
        libc::posix_fadvise(
            fd.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            advice,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// `fcntl(F_SET_RW_HINT)`: the write-lifetime hint of the inode (0 not set,
/// 1 none, 2 short, 3 medium, 4 long, 5 extreme).
pub fn set_rw_hint(fd: BorrowedFd<'_>, hint: u64) -> io::Result<()> {
    const F_SET_RW_HINT: libc::c_int = 1024 + 12;
    // SAFETY: the hint is read through a valid pointer for the call.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), F_SET_RW_HINT, &raw const hint) }).map(drop)
}

/// Reads a batch of directory entries from the current position of `fd`;
/// an empty vector means end of directory.
pub fn getdents(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Vec<DirEntry>> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let n = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    })? as usize;
    Ok(parse_dirents(&buf[..n]))
}

/// Parses the `linux_dirent64` records of a getdents64 buffer.
fn parse_dirents(mut b: &[u8]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    while b.len() >= 19 {
        let ino = u64::from_ne_bytes(b[0..8].try_into().expect("8 bytes"));
        let offset = u64::from_ne_bytes(b[8..16].try_into().expect("8 bytes"));
        let reclen = u16::from_ne_bytes(b[16..18].try_into().expect("2 bytes")) as usize;
        let kind = b[18];
        if reclen < 19 || reclen > b.len() {
            break;
        }
        let name_field = &b[19..reclen];
        let len = name_field
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(name_field.len());
        out.push(DirEntry {
            ino,
            offset,
            kind,
            name: name_field[..len].to_vec(),
        });
        b = &b[reclen..];
    }
    out
}

/// Switches the calling thread (only) to `creds`. The raw syscalls are used
/// on purpose: glibc's `setgroups` changes every thread of the process.
pub fn set_thread_creds(creds: &Creds) -> io::Result<()> {
    // SAFETY: raw per-thread setgroups with a pointer to `groups.len()` gids.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            creds.groups.len(),
            creds.groups.as_ptr(),
        )
    })?;
    // SAFETY: setfsgid/setfsuid take plain integers and cannot fail in a way
    // that corrupts memory; they return the previous id.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, creds.gid);
        libc::syscall(libc::SYS_setfsuid, creds.uid);
    }
    Ok(())
}

/// Returns the calling thread to the daemon's own ids and no supplementary groups.
pub fn reset_thread_creds(uid: u32, gid: u32) {
    // SAFETY: as in `set_thread_creds`; restoring the daemon's ids always
    // succeeds because the thread keeps CAP_SETUID/CAP_SETGID.
    unsafe {
        libc::syscall(libc::SYS_setfsuid, uid);
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>());
    }
}

/// The uid of the process at the other end of a Unix socket (SO_PEERCRED),
/// as it was when it connected.
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the
    // size of `cred`.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// Raises RLIMIT_NOFILE as far as allowed: every looked-up inode holds an
/// fd. Root may lift the hard limit to the kernel's `fs.nr_open`; others get
/// their hard limit. Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is valid for writes.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if nr_open > r.rlim_max {
        let big = libc::rlimit {
            rlim_cur: nr_open,
            rlim_max: nr_open,
        };
        // SAFETY: `big` is a valid rlimit; without CAP_SYS_RESOURCE this
        // fails with EPERM and the hard limit below is used instead.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &big) } == 0 {
            return Ok(nr_open);
        }
    }
    r.rlim_cur = r.rlim_max;
    // SAFETY: `r` is a valid rlimit.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
    Ok(r.rlim_cur)
}

/// Opens `/dev/fuse` for a new connection.
pub fn open_dev_fuse() -> io::Result<OwnedFd> {
    // SAFETY: static NUL-terminated path.
    owned(unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })
}

/// `mount(2)` of a FUSE filesystem (root only).
pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: u64,
    data: &CStr,
) -> io::Result<()> {
    // SAFETY: all strings are NUL-terminated and live for the call.
    cvt(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags as libc::c_ulong,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// `umount2(2)`; `lazy` detaches a busy mount (MNT_DETACH).
pub fn umount(target: &Path, lazy: bool) -> io::Result<()> {
    let c = cstring(target.as_os_str())?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::umount2(c.as_ptr(), flags) }).map(drop)
}

/// Mount flags for `mount(2)`.
pub mod mount_flags {
    /// read-only
    pub const RDONLY: u64 = libc::MS_RDONLY;
    /// ignore set-user-id bits
    pub const NOSUID: u64 = libc::MS_NOSUID;
    /// no device files
    pub const NODEV: u64 = libc::MS_NODEV;
    /// no execution
    pub const NOEXEC: u64 = libc::MS_NOEXEC;
    /// do not update access times
    pub const NOATIME: u64 = libc::MS_NOATIME;
    /// synchronous writes
    pub const SYNCHRONOUS: u64 = libc::MS_SYNCHRONOUS;
    /// synchronous directory changes
    pub const DIRSYNC: u64 = libc::MS_DIRSYNC;
}

/// A file handle (`name_to_handle_at`): names an inode without holding an
/// fd, and reopens it with [`open_by_handle`].
#[derive(Debug, Clone)]
pub struct FileHandleBuf {
    /// `struct file_handle` laid out in u32 words: handle_bytes, handle_type,
    /// then the opaque bytes (MAX_HANDLE_SZ = 128).
    words: Box<[u32]>,
}

const MAX_HANDLE_SZ: usize = 128;

/// The file handle of the inode behind `fd` (any fd, `O_PATH` included).
pub fn name_to_handle(fd: BorrowedFd<'_>) -> io::Result<FileHandleBuf> {
    let mut words = vec![0u32; 2 + MAX_HANDLE_SZ / 4].into_boxed_slice();
    words[0] = MAX_HANDLE_SZ as u32;
    let mut mount_id = 0;
    // SAFETY: `words` is a u32-aligned buffer laid out as `struct
    // file_handle` with room for MAX_HANDLE_SZ opaque bytes, as announced in
    // handle_bytes; `mount_id` is valid for writes.
    cvt(unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            words.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    })?;
    Ok(FileHandleBuf { words })
}

/// Opens the inode named by `handle` (on the filesystem of `mount_fd`, which
/// must be a real open fd, not `O_PATH`); needs CAP_DAC_READ_SEARCH. ESTALE
/// when the inode is gone.
pub fn open_by_handle(
    mount_fd: BorrowedFd<'_>,
    handle: &FileHandleBuf,
    flags: i32,
) -> io::Result<OwnedFd> {
    let mut words = handle.words.clone();
    // SAFETY: `words` holds a `struct file_handle` filled by
    // name_to_handle_at; the kernel only reads it.
    owned(unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            words.as_mut_ptr().cast::<libc::file_handle>(),
            flags | libc::O_CLOEXEC,
        )
    })
}

/// Device numbers: (major, minor) of a dev_t.
pub fn dev_major_minor(dev: u64) -> (u32, u32) {
    (
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_name_renders_decimal() {
        assert_eq!(FdName::new(0).as_cstr(), c"0");
        assert_eq!(FdName::new(7).as_cstr(), c"7");
        assert_eq!(FdName::new(1234567).as_cstr(), c"1234567");
    }

    #[test]
    fn parses_dirents_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("bb")).unwrap();
        let fd = open_at(
            cwd(),
            &cstring(dir.path().as_os_str()).unwrap(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .unwrap();
        use std::os::fd::AsFd;
        let mut buf = vec![0u8; 4096];
        let mut names = Vec::new();
        loop {
            let batch = getdents(fd.as_fd(), &mut buf).unwrap();
            if batch.is_empty() {
                break;
            }
            names.extend(batch.into_iter().map(|e| (e.name, e.kind)));
        }
        names.sort();
        assert_eq!(
            names,
            vec![
                (b".".to_vec(), libc::DT_DIR),
                (b"..".to_vec(), libc::DT_DIR),
                (b"a".to_vec(), libc::DT_REG),
                (b"bb".to_vec(), libc::DT_DIR)
            ]
        );
    }
}

#[cfg(test)]
mod handle_tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn file_handles_round_trip_to_the_same_inode() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let root = open_dir_path(dir.path()).unwrap();
        let f = open_path_at(root.as_fd(), c"f").unwrap();
        let h = name_to_handle(f.as_fd()).unwrap();
        // the mount fd must be a real open, not O_PATH (EBADF otherwise)
        assert_eq!(
            open_by_handle(root.as_fd(), &h, libc::O_PATH)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EBADF)
        );
        let mount = reopen(root.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).unwrap();
        let again = open_by_handle(mount.as_fd(), &h, libc::O_PATH).unwrap();
        let (a, b) = (stat_fd(f.as_fd()).unwrap(), stat_fd(again.as_fd()).unwrap());
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        std::fs::remove_file(dir.path().join("f")).unwrap();
        drop((f, again));
        let e = open_by_handle(mount.as_fd(), &h, libc::O_PATH).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
    }
}
