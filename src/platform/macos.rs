//! The durable-IO interface on macOS.
//!
//! - direct IO is F_NOCACHE (the page cache is bypassed where the IO is
//!   page-aligned; macOS accepts it on every filesystem, so nothing falls
//!   back);
//! - a data or full sync is F_FULLFSYNC, because fsync(2) on macOS does not
//!   flush the drive's cache; filesystems that refuse it (EINVAL/ENOTSUP on
//!   some network and FAT volumes) get fsync, said once in the log;
//! - a barrier is F_BARRIERFSYNC (APFS: writes before it reach the disk
//!   before writes after it, without waiting for the flush), else fsync;
//! - no renameat2: no-replace and exchange are renameatx_np with
//!   RENAME_EXCL and RENAME_SWAP;
//! - copy clones (fcopyfile with COPYFILE_CLONE, APFS) or copies;
//! - preallocation is F_PREALLOCATE, contiguous first, then any blocks;
//! - advice is F_RDAHEAD / F_RDADVISE; there are no write-lifetime hints;
//! - the sector size is the filesystem's block size (fstatfs), 512 if it
//!   says nothing usable.
//!
//! Built and type-checked in CI (`cargo check --target x86_64-apple-darwin`),
//! not run: the shared logic it relies on is tested on Linux.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::durable::{Access, Os, RenameMode, fallback_once, parent_of, read_full};

/// macOS, for [`super::DurableFileIn`].
#[derive(Debug, Clone, Copy)]
pub struct MacOs;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// fcntl with an integer argument.
fn fcntl_int(fd: BorrowedFd<'_>, cmd: libc::c_int, arg: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: plain fcntl on a live fd with an integer argument.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) })
}

fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: valid dir fd and NUL-terminated name; the returned fd is new
    // and owned by nobody else.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just opened and is owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Os for MacOs {
    type File = OwnedFd;
    type Dir<'a> = BorrowedFd<'a>;

    fn open(dir: BorrowedFd<'_>, name: &CStr, access: Access, mode: u32) -> io::Result<OwnedFd> {
        let flags = match access {
            Access::CreateNew => libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            Access::Read => libc::O_RDONLY,
            Access::Append => libc::O_RDWR | libc::O_CREAT | libc::O_APPEND,
            Access::Write => libc::O_RDWR,
        };
        open_at(dir, name, flags, mode)
    }

    fn set_direct(file: OwnedFd) -> (OwnedFd, io::Result<()>) {
        let r = fcntl_int(file.as_fd(), libc::F_NOCACHE, 1).and_then(|_| {
            let fl = fcntl_int(file.as_fd(), libc::F_GETFL, 0)?;
            fcntl_int(file.as_fd(), libc::F_SETFL, fl & !libc::O_APPEND).map(drop)
        });
        (file, r)
    }

    fn sector_size(file: &OwnedFd) -> usize {
        sector_size(file.as_fd())
    }

    fn pread(file: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_full(buf, offset, |rest, at| {
            // SAFETY: `rest` is valid for writes of its length.
            cvt_size(unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    at as libc::off_t,
                )
            })
        })
    }

    fn pwrite(file: &OwnedFd, buf: &[u8], offset: u64) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of its length.
        cvt_size(unsafe {
            libc::pwrite(
                file.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        })
    }

    fn write(file: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of its length.
        cvt_size(unsafe { libc::write(file.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
    }

    fn size(file: &OwnedFd) -> io::Result<u64> {
        Ok(stat(file.as_fd())?.st_size as u64)
    }

    fn set_size(file: &OwnedFd, len: u64) -> io::Result<()> {
        // SAFETY: plain syscall on a live fd.
        cvt(unsafe { libc::ftruncate(file.as_raw_fd(), len as libc::off_t) }).map(drop)
    }

    fn sync_data(file: &OwnedFd) -> io::Result<()> {
        sync_data(file.as_fd())
    }

    fn sync_full(file: &OwnedFd) -> io::Result<()> {
        sync_full(file.as_fd())
    }

    fn sync_barrier(file: &OwnedFd, _write_through: bool) -> io::Result<()> {
        sync_barrier(file.as_fd())
    }
}

fn stat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: live fd; `st` valid for writes.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// The filesystem's block size (fstatfs f_bsize) when it is a power of
/// two, else 512.
pub fn sector_size(fd: BorrowedFd<'_>) -> usize {
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: live fd; `sf` valid for writes.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sf) } == 0 {
        let n = sf.f_bsize as usize;
        if n.is_power_of_two() && n >= 512 {
            return n;
        }
    }
    512
}

/// True: F_NOCACHE is accepted on every macOS filesystem.
pub fn direct_io_available(_dir: BorrowedFd<'_>) -> bool {
    true
}

static FULLFSYNC_REFUSED: AtomicBool = AtomicBool::new(false);
static BARRIER_REFUSED: AtomicBool = AtomicBool::new(false);

/// `fcntl(cmd)`, or fsync where the filesystem refuses `cmd`.
fn sync_with(fd: BorrowedFd<'_>, cmd: libc::c_int, refused: &AtomicBool) -> io::Result<()> {
    super::counters::FSYNC.fetch_add(1, Ordering::Relaxed);
    match fcntl_int(fd, cmd, 0) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => {
            let what = if cmd == libc::F_FULLFSYNC {
                "F_FULLFSYNC refused by this filesystem; using fsync, which may leave data in \
                 the drive's cache"
            } else {
                "F_BARRIERFSYNC refused by this filesystem; using fsync"
            };
            fallback_once(refused, what, &e);
            // SAFETY: plain syscall on a live fd.
            cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
        }
        Err(e) => Err(e),
    }
}

/// F_FULLFSYNC: macOS has no fdatasync that reaches the platter.
pub fn sync_data(fd: BorrowedFd<'_>) -> io::Result<()> {
    sync_with(fd, libc::F_FULLFSYNC, &FULLFSYNC_REFUSED)
}

/// F_FULLFSYNC.
pub fn sync_full(fd: BorrowedFd<'_>) -> io::Result<()> {
    sync_with(fd, libc::F_FULLFSYNC, &FULLFSYNC_REFUSED)
}

/// F_BARRIERFSYNC.
pub fn sync_barrier(fd: BorrowedFd<'_>) -> io::Result<()> {
    sync_with(fd, libc::F_BARRIERFSYNC, &BARRIER_REFUSED)
}

/// F_FULLFSYNC of a directory: its entries are durable.
pub fn sync_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    sync_full(dir)
}

/// Opens a directory for reading (and so for syncing).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    open_at(
        // SAFETY: AT_FDCWD is valid for the whole process lifetime.
        unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) },
        &c,
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
}

/// A sync of the directory holding `path`.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    sync_dir(open_dir(parent_of(path))?.as_fd())
}

/// An atomic rename: renameat, or renameatx_np with RENAME_EXCL (no
/// replace) or RENAME_SWAP (exchange); a filesystem without them fails
/// with its errno rather than fall back to something not atomic.
pub fn rename(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
    mode: RenameMode,
) -> io::Result<()> {
    let flags = match mode {
        RenameMode::Replace => 0,
        RenameMode::NoReplace => libc::RENAME_EXCL,
        RenameMode::Exchange => libc::RENAME_SWAP,
    };
    super::rename_at(olddir, old, newdir, new, flags)
}

/// Copies all of `src` into `dst`: a clone where the filesystem shares
/// extents (APFS), a copy otherwise.
pub fn copy(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<u64> {
    let size = stat(src)?.st_size as u64;
    // SAFETY: live fds; a null state is allowed by fcopyfile.
    let r = unsafe {
        libc::fcopyfile(
            src.as_raw_fd(),
            dst.as_raw_fd(),
            std::ptr::null_mut(),
            libc::COPYFILE_DATA | libc::COPYFILE_CLONE,
        )
    };
    if r == 0 {
        return Ok(size);
    }
    let (src, dst) = (src.try_clone_to_owned()?, dst.try_clone_to_owned()?);
    super::durable::copy_by_hand::<MacOs>(&src, &dst)
}

/// Reserves blocks up to `offset + len` without changing the size
/// (F_PREALLOCATE from the physical end of file, contiguous if it can,
/// else any blocks). Ok(false) where the filesystem cannot.
pub fn preallocate(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<bool> {
    let st = stat(fd)?;
    let have = st.st_blocks as u64 * 512;
    let want = offset + len;
    if want <= have {
        return Ok(true);
    }
    for flags in [
        libc::F_ALLOCATECONTIG | libc::F_ALLOCATEALL,
        libc::F_ALLOCATEALL,
    ] {
        let mut store = libc::fstore_t {
            fst_flags: flags,
            fst_posmode: libc::F_PEOFPOSMODE,
            fst_offset: 0,
            fst_length: (want - have) as libc::off_t,
            fst_bytesalloc: 0,
        };
        // SAFETY: live fd; `store` is a valid fstore_t for F_PREALLOCATE.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_PREALLOCATE, &mut store) };
        if r != -1 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(false),
            Some(libc::ENOSPC) if flags & libc::F_ALLOCATECONTIG != 0 => continue,
            _ => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOSPC))
}

/// Access-pattern advice: read-ahead on or off (F_RDAHEAD), or a read
/// advisory for the whole file (F_RDADVISE); the rest do nothing.
pub fn advise(fd: BorrowedFd<'_>, advice: crate::policy::Advice) -> io::Result<()> {
    use crate::policy::Advice;
    match advice {
        Advice::Sequential => fcntl_int(fd, libc::F_RDAHEAD, 1).map(drop),
        Advice::Random => fcntl_int(fd, libc::F_RDAHEAD, 0).map(drop),
        Advice::Willneed => {
            let size = stat(fd)?.st_size;
            let mut ra = libc::radvisory {
                ra_offset: 0,
                ra_count: size.min(libc::c_int::MAX as libc::off_t) as libc::c_int,
            };
            // SAFETY: live fd; `ra` is a valid radvisory for F_RDADVISE.
            cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_RDADVISE, &mut ra) }).map(drop)
        }
        Advice::Normal | Advice::Noreuse | Advice::Dontneed => Ok(()),
    }
}

/// Nothing: macOS has no write-lifetime hints.
pub fn set_write_hint(_fd: BorrowedFd<'_>, _hint: crate::policy::WriteHint) -> io::Result<()> {
    Ok(())
}
