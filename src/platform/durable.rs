//! Durable IO primitives: the interface the engine's strategies are built
//! on, the same on every OS (the per-OS module supplies the system calls).
//!
//! - [`DurableFile`]: a file opened for one purpose (new, read, append,
//!   positioned write), optionally with direct IO, which falls back to
//!   buffered IO where the filesystem refuses it (tmpfs) and says so once;
//! - writes: buffered, direct with internal alignment (an aligned bounce
//!   buffer, unaligned edges read-modify-written), positioned, and
//!   sector-aligned for callers that hold an [`AlignedBuf`] already;
//! - reads: whole file, direct whole file (aligned, trimmed to the size),
//!   a range;
//! - syncs: data, full, barrier, a directory, a path's parent directory;
//! - rename (replace, no-replace, exchange), copy, preallocate, advise,
//!   write-lifetime hint, sector-size probe.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::aligned::{AlignedBuf, round_down, round_up};

/// What a [`DurableFile`] is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// a new file (create-exclusive), for writing
    CreateNew,
    /// an existing file, for reading
    Read,
    /// an existing or new file, every write at its end
    Append,
    /// an existing file, for positioned reads and writes
    Write,
}

/// A file opened by the durable-IO layer.
#[derive(Debug)]
pub struct DurableFile {
    fd: OwnedFd,
    direct: bool,
    align: usize,
}

static DIRECT_REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);

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

impl DurableFile {
    /// Opens `name` in `dir` for `access` (new files get `mode`), with
    /// direct IO if `direct` and the filesystem allows it.
    pub fn open(
        dir: BorrowedFd<'_>,
        name: &CStr,
        access: Access,
        mode: u32,
        direct: bool,
    ) -> io::Result<DurableFile> {
        let flags = libc::O_CLOEXEC
            | match access {
                // Writable files are also readable: a direct write
                // read-modify-writes its edge sectors.
                Access::CreateNew => libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                Access::Read => libc::O_RDONLY,
                Access::Append => libc::O_RDWR | libc::O_CREAT | libc::O_APPEND,
                Access::Write => libc::O_RDWR,
            };
        let fd = super::open_at(dir, name, flags, mode)?;
        Ok(Self::from_fd(fd, direct))
    }

    /// Wraps an open fd, turning direct IO on if asked and possible. (O_DIRECT
    /// is set after the open, so a create on a filesystem without direct IO
    /// does not leave a file behind an error.)
    pub fn from_fd(fd: OwnedFd, direct: bool) -> DurableFile {
        let mut on = false;
        if direct {
            // A direct append writes whole sectors at explicit offsets,
            // which O_APPEND would redirect to the end: it goes.
            match super::set_status_flags(fd.as_fd(), libc::O_DIRECT, libc::O_APPEND) {
                Ok(()) => on = true,
                Err(e) => {
                    if !DIRECT_REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "direct IO refused by the backing filesystem ({e}); using buffered IO"
                        );
                    }
                }
            }
        }
        let align = if on { sector_size(fd.as_fd()) } else { 1 };
        DurableFile {
            fd,
            direct: on,
            align,
        }
    }

    /// Whether direct IO took effect.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The alignment direct writes are padded to (1 when buffered).
    pub fn align(&self) -> usize {
        self.align
    }

    /// The fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The file's size.
    pub fn size(&self) -> io::Result<u64> {
        Ok(super::stat_fd(self.fd())?.st_size as u64)
    }

    /// Writes `data` at the file position: the end, for an append file
    /// (a direct file appends at its size; callers serialise appends).
    pub fn write(&self, data: &[u8]) -> io::Result<()> {
        if self.direct {
            let at = self.size()?;
            return self.write_at(data, at);
        }
        complete(super::write_all(self.fd(), data)?, data.len())
    }

    /// Writes all of `data` at `offset`. On a direct file the write is
    /// padded to whole sectors through an aligned bounce buffer; partial
    /// sectors at either edge are read first so the bytes around the write
    /// are kept, and a write past the end leaves the size exactly at its
    /// end. Callers serialise writes to overlapping sectors of one file.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if !self.direct {
            return pwrite_all(self.fd(), data, offset);
        }
        if data.is_empty() {
            return Ok(());
        }
        let a = self.align as u64;
        let end = offset + data.len() as u64;
        let start = round_down(offset, a);
        let stop = round_down(end + a - 1, a);
        let size = self.size()?;
        let mut buf = AlignedBuf::zeroed((stop - start) as usize, self.align);
        // Keep the bytes of the edge sectors the write only partly covers.
        if offset != start && start < size {
            super::pread(self.fd(), &mut buf[..self.align], start)?;
        }
        let last = stop - a;
        if end != stop && last < size && (last != start || offset == start) {
            let at = (last - start) as usize;
            super::pread(self.fd(), &mut buf[at..], last)?;
        }
        buf[(offset - start) as usize..(end - start) as usize].copy_from_slice(data);
        pwrite_all(self.fd(), &buf, start)?;
        if stop > size.max(end) {
            super::ftruncate(self.fd(), size.max(end))?;
        }
        Ok(())
    }

    /// Writes a buffer that is already sector-aligned in memory, offset
    /// and length (EINVAL otherwise).
    pub fn write_aligned_at(&self, buf: &AlignedBuf, offset: u64) -> io::Result<()> {
        let a = self.align;
        if buf.align() < a || buf.len() % a != 0 || offset % a as u64 != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        pwrite_all(self.fd(), buf, offset)
    }

    /// Reads up to `buf.len()` bytes at `offset` (short only at the end of
    /// file). On a direct file the read goes through an aligned buffer.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if !self.direct {
            return super::pread(self.fd(), buf, offset);
        }
        let a = self.align as u64;
        let start = round_down(offset, a);
        let stop = round_down(offset + buf.len() as u64 + a - 1, a);
        let mut tmp = AlignedBuf::zeroed((stop - start) as usize, self.align);
        let n = super::pread(self.fd(), &mut tmp, start)?;
        let skip = (offset - start) as usize;
        let got = n.saturating_sub(skip).min(buf.len());
        buf[..got].copy_from_slice(&tmp[skip..skip + got]);
        Ok(got)
    }

    /// The whole file (through an aligned buffer, trimmed to the size, on a
    /// direct file).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let size = self.size()? as usize;
        if self.direct {
            let mut buf = AlignedBuf::zeroed(round_up(size, self.align), self.align);
            let n = super::pread(self.fd(), &mut buf, 0)?;
            return Ok(buf[..n.min(size)].to_vec());
        }
        let mut v = vec![0; size];
        let n = super::pread(self.fd(), &mut v, 0)?;
        v.truncate(n);
        Ok(v)
    }

    /// The data and what is needed to read it back are durable (fdatasync).
    pub fn sync_data(&self) -> io::Result<()> {
        sync_data(self.fd())
    }

    /// The data and all metadata are durable (fsync).
    pub fn sync_full(&self) -> io::Result<()> {
        sync_full(self.fd())
    }

    /// A write barrier: on Linux, where no cheaper ordering primitive
    /// exists, an fdatasync.
    pub fn sync_barrier(&self) -> io::Result<()> {
        sync_barrier(self.fd())
    }
}

/// pwrite of all of `data` at `offset`; a short write (which the platform
/// pwrite returns only when the rest failed) is an error.
pub(super) fn pwrite_all(fd: BorrowedFd<'_>, data: &[u8], offset: u64) -> io::Result<()> {
    complete(super::pwrite(fd, data, offset)?, data.len())
}

fn complete(done: usize, want: usize) -> io::Result<()> {
    if done == want {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {done} of {want} bytes"),
        ))
    }
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
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    super::fsync(open_dir(parent)?.as_fd())
}

/// How a rename treats an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameMode {
    /// replace it atomically (plain rename)
    Replace,
    /// fail with EEXIST if it exists
    NoReplace,
    /// swap the two names atomically (both must exist)
    Exchange,
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
                return copy_by_hand(src, dst, size);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn copy_by_hand(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < size {
        let n = super::pread(src, &mut buf, done)?;
        if n == 0 {
            break;
        }
        pwrite_all(dst, &buf[..n], done)?;
        done += n as u64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A directory on the machine's disk (ext4 here; tmpfs cannot do
    /// direct IO).
    fn disk_dir() -> tempfile::TempDir {
        tempfile::tempdir_in("/var/tmp").unwrap()
    }

    fn dir_fd(d: &Path) -> OwnedFd {
        open_dir(d).unwrap()
    }

    /// A new file `name` in `d`, direct if asked and possible.
    fn create(d: &Path, name: &CStr, direct: bool) -> DurableFile {
        DurableFile::open(dir_fd(d).as_fd(), name, Access::CreateNew, 0o644, direct).unwrap()
    }

    /// A ramfs mount, which refuses direct IO (tmpfs accepts it since
    /// Linux 6.6). Needs root, as the whole suite does.
    struct Ramfs(tempfile::TempDir);

    impl Ramfs {
        fn new() -> Ramfs {
            let d = tempfile::tempdir_in("/var/tmp").unwrap();
            let st = std::process::Command::new("mount")
                .args(["-t", "ramfs", "ramfs"])
                .arg(d.path())
                .status()
                .unwrap();
            assert!(st.success(), "mounting a ramfs needs root");
            Ramfs(d)
        }
    }

    impl Drop for Ramfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn direct_io_takes_effect_on_disk_and_falls_back_on_ramfs() {
        let d = disk_dir();
        let f = create(d.path(), c"a", true);
        assert!(
            f.is_direct(),
            "O_DIRECT should take effect on {}",
            d.path().display()
        );
        assert!(f.align().is_power_of_two() && f.align() >= 512);
        assert!(direct_io_available(dir_fd(d.path()).as_fd()));

        let r = Ramfs::new();
        let t = r.0.path();
        let f = create(t, c"a", true);
        assert!(!f.is_direct());
        assert_eq!(f.align(), 1);
        assert!(t.join("a").exists(), "the fallback keeps the created file");
        f.write_at(b"still works", 0).unwrap();
        assert_eq!(f.read_all().unwrap(), b"still works");
        assert!(!direct_io_available(dir_fd(t).as_fd()));
        drop(f);
    }

    #[test]
    fn unaligned_direct_writes_round_trip_exactly() {
        let d = disk_dir();
        for (i, n) in [1usize, 511, 4097, (1 << 20) + 3].into_iter().enumerate() {
            let name = std::ffi::CString::new(format!("f{i}")).unwrap();
            let f = create(d.path(), &name, true);
            assert!(f.is_direct());
            let data = pattern(n, i as u8);
            f.write_at(&data, 0).unwrap();
            assert_eq!(f.size().unwrap(), n as u64, "size exactly what was written");
            assert_eq!(f.read_all().unwrap(), data);
            assert_eq!(std::fs::read(d.path().join(format!("f{i}"))).unwrap(), data);
            // An unaligned overwrite in the middle keeps the bytes around it.
            let mut model = data.clone();
            let at = n / 3;
            let patch = pattern((n / 2).max(1), 99);
            let end = (at + patch.len()).min(n.max(at + patch.len()));
            if model.len() < end {
                model.resize(end, 0);
            }
            model[at..at + patch.len()].copy_from_slice(&patch);
            f.write_at(&patch, at as u64).unwrap();
            assert_eq!(f.read_all().unwrap(), model);
            let from = 3.min(model.len());
            let mut mid = vec![0; 700];
            let got = f.read_at(&mut mid, from as u64).unwrap();
            assert_eq!(got, 700.min(model.len() - from));
            assert_eq!(&mid[..got], &model[from..from + got]);
        }
    }

    #[test]
    fn writes_past_the_end_and_appends_keep_the_exact_size() {
        let d = disk_dir();
        let f = create(d.path(), c"g", true);
        f.write_at(b"abc", 10_000).unwrap();
        let mut want = vec![0u8; 10_003];
        want[10_000..].copy_from_slice(b"abc");
        assert_eq!(f.read_all().unwrap(), want);
        f.write(b"xyz").unwrap();
        want.extend_from_slice(b"xyz");
        assert_eq!(f.read_all().unwrap(), want);
        let a = DurableFile::open(dir_fd(d.path()).as_fd(), c"h", Access::Append, 0o644, false)
            .unwrap();
        a.write(b"one ").unwrap();
        a.write(b"two").unwrap();
        assert_eq!(a.read_all().unwrap(), b"one two");
        // A direct append file appends whole sectors at the right place.
        let b =
            DurableFile::open(dir_fd(d.path()).as_fd(), c"h", Access::Append, 0o644, true).unwrap();
        assert!(b.is_direct());
        b.write(b" three").unwrap();
        b.write(&[b'4'; 5000]).unwrap();
        let mut want = b"one two three".to_vec();
        want.extend_from_slice(&[b'4'; 5000]);
        assert_eq!(std::fs::read(d.path().join("h")).unwrap(), want);
    }

    #[test]
    fn aligned_writes_demand_alignment() {
        let d = disk_dir();
        let f = create(d.path(), c"a", true);
        let a = f.align();
        let mut buf = AlignedBuf::zeroed(2 * a, a);
        buf.fill(5);
        f.write_aligned_at(&buf, a as u64).unwrap();
        assert_eq!(f.size().unwrap(), 3 * a as u64);
        let bad = AlignedBuf::zeroed(a + 1, a);
        let e = f.write_aligned_at(&bad, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(
            f.write_aligned_at(&buf, 1).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn preallocate_reserves_blocks_without_changing_the_size() {
        let d = disk_dir();
        let f = create(d.path(), c"p", false);
        f.write_at(b"hello", 0).unwrap();
        let before = std::fs::metadata(d.path().join("p")).unwrap();
        assert!(preallocate(f.fd(), 0, 8 << 20).unwrap());
        let after = std::fs::metadata(d.path().join("p")).unwrap();
        assert_eq!(after.len(), 5);
        assert!(
            after.blocks() * 512 >= 8 << 20 && after.blocks() > before.blocks(),
            "{} -> {} blocks",
            before.blocks(),
            after.blocks()
        );
    }

    #[test]
    fn syncs_are_issued() {
        let d = disk_dir();
        let f = create(d.path(), c"s", false);
        let c0 = super::super::sync_counts();
        f.sync_data().unwrap();
        f.sync_full().unwrap();
        f.sync_barrier().unwrap();
        sync_dir(dir_fd(d.path()).as_fd()).unwrap();
        sync_parent_dir(&d.path().join("s")).unwrap();
        let c1 = super::super::sync_counts();
        // Other tests sync concurrently: at least ours are counted.
        assert!(c1.fdatasync - c0.fdatasync >= 2, "{c0:?} -> {c1:?}");
        assert!(c1.fsync - c0.fsync >= 3, "{c0:?} -> {c1:?}");
    }

    #[test]
    fn rename_modes() {
        let d = disk_dir();
        let dir = dir_fd(d.path());
        std::fs::write(d.path().join("a"), "A").unwrap();
        std::fs::write(d.path().join("b"), "B").unwrap();
        let e = rename(dir.as_fd(), c"a", dir.as_fd(), c"b", RenameMode::NoReplace).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        rename(dir.as_fd(), c"a", dir.as_fd(), c"b", RenameMode::Exchange).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "B");
        assert_eq!(std::fs::read_to_string(d.path().join("b")).unwrap(), "A");
        rename(dir.as_fd(), c"a", dir.as_fd(), c"b", RenameMode::Replace).unwrap();
        assert!(!d.path().join("a").exists());
        assert_eq!(std::fs::read_to_string(d.path().join("b")).unwrap(), "B");
        rename(dir.as_fd(), c"b", dir.as_fd(), c"c", RenameMode::NoReplace).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("c")).unwrap(), "B");
    }

    #[test]
    fn copy_copies_everything_across_filesystems_too() {
        let d = disk_dir();
        let data = pattern(3 << 20, 7);
        std::fs::write(d.path().join("src"), &data).unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        for target in [d.path().to_path_buf(), shm.path().to_path_buf()] {
            let src = std::fs::File::open(d.path().join("src")).unwrap();
            let dst = std::fs::File::create(target.join("dst")).unwrap();
            assert_eq!(copy(src.as_fd(), dst.as_fd()).unwrap(), data.len() as u64);
            assert_eq!(std::fs::read(target.join("dst")).unwrap(), data);
        }
    }

    #[test]
    fn sector_probe_is_a_power_of_two_and_hints_are_accepted() {
        let d = disk_dir();
        let f = std::fs::File::create(d.path().join("x")).unwrap();
        let s = sector_size(f.as_fd());
        assert!(s.is_power_of_two() && s >= 512, "{s}");
        advise(f.as_fd(), crate::policy::Advice::Sequential).unwrap();
        // Advisory: some kernels and filesystems refuse it; it must not panic.
        let _ = set_write_hint(f.as_fd(), crate::policy::WriteHint::Short);
    }
}
