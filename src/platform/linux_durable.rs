//! The durable-IO interface on Linux: [`Linux`] gives `DurableFile` its
//! system calls (O_DIRECT set with fcntl, the alignment statx reports,
//! pread/pwrite, fdatasync/fsync), and the free functions here are the
//! ones every OS module has (see durable.rs).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use super::durable::{Access, Os, RenameMode};

/// Linux, for [`super::DurableFileIn`].
#[derive(Debug, Clone, Copy)]
pub struct Linux;

impl Os for Linux {
    type File = OwnedFd;
    type Dir<'a> = BorrowedFd<'a>;

    fn open(dir: BorrowedFd<'_>, name: &CStr, access: Access, mode: u32) -> io::Result<OwnedFd> {
        let flags = libc::O_CLOEXEC
            | match access {
                Access::CreateNew => libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                Access::Read => libc::O_RDONLY,
                Access::Append => libc::O_RDWR | libc::O_CREAT | libc::O_APPEND,
                Access::Write => libc::O_RDWR,
            };
        super::open_at(dir, name, flags, mode)
    }

    fn set_direct(file: OwnedFd) -> (OwnedFd, io::Result<()>) {
        let r = super::set_status_flags(file.as_fd(), libc::O_DIRECT, libc::O_APPEND);
        (file, r)
    }

    fn sector_size(file: &OwnedFd) -> usize {
        sector_size(file.as_fd())
    }

    fn pread(file: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        super::pread(file.as_fd(), buf, offset)
    }

    fn pwrite(file: &OwnedFd, buf: &[u8], offset: u64) -> io::Result<usize> {
        super::pwrite(file.as_fd(), buf, offset)
    }

    fn write(file: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
        super::write_all(file.as_fd(), buf)
    }

    fn size(file: &OwnedFd) -> io::Result<u64> {
        Ok(super::stat_fd(file.as_fd())?.st_size as u64)
    }

    fn set_size(file: &OwnedFd, len: u64) -> io::Result<()> {
        super::ftruncate(file.as_fd(), len)
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

    fn write_bounced(
        file: &OwnedFd,
        len: usize,
        align: usize,
        offset: u64,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        // The registered buffer is page-aligned: enough for any sector.
        if align <= 4096 {
            if let Some(r) =
                super::uring::write_registered(file.as_fd(), len, offset, None, &mut *fill)
            {
                return r;
            }
        }
        let mut buf = super::AlignedBuf::zeroed(len, align);
        fill(&mut buf)?;
        super::durable::pwrite_all::<Linux>(file, &buf, offset)
    }
}

/// pwrite of all of `data` at `offset`, for callers holding a borrowed fd.
pub(super) fn pwrite_all(fd: BorrowedFd<'_>, data: &[u8], offset: u64) -> io::Result<()> {
    super::durable::complete(super::pwrite(fd, data, offset)?, data.len())
}

/// The sector size direct IO must respect on the file behind `fd`: what
/// the kernel says direct IO needs, else the device's logical block size,
/// else 512. Always a power of two.
pub fn sector_size(fd: BorrowedFd<'_>) -> usize {
    if let Some((mem, off)) = super::dio_align(fd) {
        let n = mem.max(off) as usize;
        if n.is_power_of_two() {
            return n;
        }
    }
    if let Ok(st) = super::stat_fd(fd) {
        if let Some(n) = super::logical_block_size(st.st_dev) {
            if (n as usize).is_power_of_two() {
                return n as usize;
            }
        }
    }
    512
}

/// Whether files in the directory `dir` can be written with direct IO
/// (probed on an unnamed temporary file, which leaves nothing behind).
pub fn direct_io_available(dir: BorrowedFd<'_>) -> bool {
    super::open_at(
        dir,
        c".",
        libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
        0o600,
    )
    .and_then(|f| super::set_status_flags(f.as_fd(), libc::O_DIRECT, 0))
    .is_ok()
}

/// fdatasync.
pub fn sync_data(fd: BorrowedFd<'_>) -> io::Result<()> {
    super::fdatasync(fd)
}

/// fsync.
pub fn sync_full(fd: BorrowedFd<'_>) -> io::Result<()> {
    super::fsync(fd)
}

/// A barrier: fdatasync on Linux.
pub fn sync_barrier(fd: BorrowedFd<'_>) -> io::Result<()> {
    super::fdatasync(fd)
}

/// fsync of a directory: its entries are durable.
pub fn sync_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    super::fsync(dir)
}

/// Opens a directory for reading (and so for fsync).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = super::cstring(path.as_os_str())?;
    super::open_at(
        super::cwd(),
        &c,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
    )
}

/// fsync of the directory holding `path`.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    sync_dir(open_dir(super::durable::parent_of(path))?.as_fd())
}

/// An atomic rename. NoReplace and Exchange need renameat2 and a
/// filesystem that supports them; they fail with its errno (EINVAL)
/// rather than fall back to something that is not atomic.
pub fn rename(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
    mode: RenameMode,
) -> io::Result<()> {
    let flags = match mode {
        RenameMode::Replace => 0,
        RenameMode::NoReplace => libc::RENAME_NOREPLACE,
        RenameMode::Exchange => libc::RENAME_EXCHANGE,
    };
    super::rename_at(olddir, old, newdir, new, flags)
}

/// Copies all of `src` into `dst` (from offset 0 of each), in the kernel
/// where it can (copy_file_range, which reflinks on filesystems that
/// share extents), by read and write otherwise. Returns the bytes copied.
pub fn copy(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<u64> {
    let size = super::stat_fd(src)?.st_size as u64;
    let mut done = 0u64;
    while done < size {
        let chunk = (size - done).min(1 << 30) as usize;
        match super::copy_file_range(src, done, dst, done, chunk, 0) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(e)
                if done == 0
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
                    ) =>
            {
                // The fallback reads and writes through duplicates of the fds.
                let (src, dst) = (src.try_clone_to_owned()?, dst.try_clone_to_owned()?);
                return super::durable::copy_by_hand::<Linux>(&src, &dst);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reserves `len` bytes from `offset` without changing the file's size
/// (fallocate KEEP_SIZE). Ok(false) where the filesystem cannot.
pub fn preallocate(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<bool> {
    match super::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, offset, len) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Access-pattern advice for the whole file (posix_fadvise).
pub fn advise(fd: BorrowedFd<'_>, advice: crate::policy::Advice) -> io::Result<()> {
    use crate::policy::Advice;
    let a = match advice {
        Advice::Normal => libc::POSIX_FADV_NORMAL,
        Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
        Advice::Random => libc::POSIX_FADV_RANDOM,
        Advice::Noreuse => libc::POSIX_FADV_NOREUSE,
        Advice::Willneed => libc::POSIX_FADV_WILLNEED,
        Advice::Dontneed => libc::POSIX_FADV_DONTNEED,
    };
    super::fadvise(fd, 0, 0, a)
}

/// The write-lifetime hint of the file (F_SET_RW_HINT). Advisory: callers
/// ignore its errors.
pub fn set_write_hint(fd: BorrowedFd<'_>, hint: crate::policy::WriteHint) -> io::Result<()> {
    use crate::policy::WriteHint;
    let h = match hint {
        WriteHint::None => 1,
        WriteHint::Short => 2,
        WriteHint::Medium => 3,
        WriteHint::Long => 4,
        WriteHint::Extreme => 5,
    };
    super::set_rw_hint(fd, h)
}
