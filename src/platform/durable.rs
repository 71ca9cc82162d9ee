//! Durable IO primitives: the interface the engine's strategies are built
//! on, the same on every OS.
//!
//! [`DurableFileIn`] holds everything that does not depend on the OS: the
//! direct-IO alignment logic (an aligned bounce buffer, partial edge
//! sectors read-modify-written, the size trimmed back after a padded write
//! past the end), reads through aligned buffers, the buffered fallback when
//! the filesystem refuses direct IO. The per-OS modules supply the system
//! calls through [`Os`] (linux_durable.rs, macos.rs, windows.rs,
//! unknown.rs), and the free functions of the same names in each of them:
//!
//! - syncs: `sync_data`, `sync_full`, `sync_barrier`, `sync_dir`,
//!   `sync_parent_dir`;
//! - `rename` (replace, no-replace, exchange), `copy`, `preallocate`,
//!   `advise`, `set_write_hint`, `sector_size`, `direct_io_available`.
//!
//! [`DurableFile`] is the type for the OS the crate is built for.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use super::aligned::{AlignedBuf, round_down, round_up};

/// What a durable file is opened for.
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

/// The system calls one OS supplies to [`DurableFileIn`]. Every error is
/// the OS's own (errno, or the Win32 error on Windows).
pub trait Os: Sized {
    /// An open file, owned.
    type File: fmt::Debug + Send + Sync;
    /// The directory files are opened in (a directory fd where the OS has
    /// *at calls, a path where it has not).
    type Dir<'a>: Copy;
    /// Opens `name` in `dir` for `access`; new files get `mode` where the
    /// OS has modes. Writable files are also readable: a direct write
    /// read-modify-writes its edge sectors.
    fn open(dir: Self::Dir<'_>, name: &CStr, access: Access, mode: u32) -> io::Result<Self::File>;
    /// Turns direct IO on (and, for an append file, O_APPEND off: a direct
    /// append writes whole sectors at explicit offsets). Returns the file
    /// (a new handle where the OS must reopen) and whether it worked.
    fn set_direct(file: Self::File) -> (Self::File, io::Result<()>);
    /// The alignment direct IO needs on this file: a power of two.
    fn sector_size(file: &Self::File) -> usize;
    /// Reads at `offset`; short only at the end of file.
    fn pread(file: &Self::File, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes at `offset`; short only when the rest failed.
    fn pwrite(file: &Self::File, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// Writes at the file position (the end, for an append file).
    fn write(file: &Self::File, buf: &[u8]) -> io::Result<usize>;
    /// The file's size.
    fn size(file: &Self::File) -> io::Result<u64>;
    /// Sets the file's size.
    fn set_size(file: &Self::File, len: u64) -> io::Result<()>;
    /// The data and what is needed to read it back are durable.
    fn sync_data(file: &Self::File) -> io::Result<()>;
    /// The data and all metadata are durable.
    fn sync_full(file: &Self::File) -> io::Result<()>;
    /// Earlier writes reach the disk before later ones (a no-op where the
    /// file is written through, `write_through`).
    fn sync_barrier(file: &Self::File, write_through: bool) -> io::Result<()>;
    /// Writes `len` bytes at `offset` (both multiples of `align`) from an
    /// aligned, zeroed bounce buffer that `fill` prepares. By default a
    /// fresh buffer and a pwrite; Linux uses a registered io_uring buffer
    /// when io_uring is on.
    fn write_bounced(
        file: &Self::File,
        len: usize,
        align: usize,
        offset: u64,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut buf = AlignedBuf::zeroed(len, align);
        fill(&mut buf)?;
        pwrite_all::<Self>(file, &buf, offset)
    }
}

/// A file opened by the durable-IO layer of the OS `O`.
#[derive(Debug)]
pub struct DurableFileIn<O: Os> {
    file: O::File,
    direct: bool,
    align: usize,
}

/// A file opened by the durable-IO layer of this OS.
pub type DurableFile = DurableFileIn<super::Native>;

static DIRECT_REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);

impl<O: Os> DurableFileIn<O> {
    /// Opens `name` in `dir` for `access` (new files get `mode`), with
    /// direct IO if `direct` and the filesystem allows it. (Direct IO is
    /// turned on after the open, so a create on a filesystem without it
    /// does not leave a file behind an error.)
    pub fn open(
        dir: O::Dir<'_>,
        name: &CStr,
        access: Access,
        mode: u32,
        direct: bool,
    ) -> io::Result<Self> {
        Ok(Self::from_file(O::open(dir, name, access, mode)?, direct))
    }

    /// Wraps an open file, turning direct IO on if asked and possible; a
    /// refusal (tmpfs, ramfs) leaves the file buffered and is logged once.
    pub fn from_file(file: O::File, direct: bool) -> Self {
        let (file, on) = if direct {
            let (file, r) = O::set_direct(file);
            if let Err(e) = &r {
                if !DIRECT_REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "direct IO refused by the backing filesystem ({e}); using buffered IO"
                    );
                }
            }
            (file, r.is_ok())
        } else {
            (file, false)
        };
        let align = if on { O::sector_size(&file) } else { 1 };
        DurableFileIn {
            file,
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

    /// The open file.
    pub fn file(&self) -> &O::File {
        &self.file
    }

    /// The file's size.
    pub fn size(&self) -> io::Result<u64> {
        O::size(&self.file)
    }

    /// Writes `data` at the file position: the end, for an append file
    /// (a direct file appends at its size; callers serialise appends).
    pub fn write(&self, data: &[u8]) -> io::Result<()> {
        if self.direct {
            let at = self.size()?;
            return self.write_at(data, at);
        }
        let mut done = 0;
        while done < data.len() {
            match O::write(&self.file, &data[done..]) {
                Ok(0) => return complete(done, data.len()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `data` at `offset`. On a direct file the write is
    /// padded to whole sectors through an aligned bounce buffer; partial
    /// sectors at either edge are read first so the bytes around the write
    /// are kept, and a write past the end leaves the size exactly at its
    /// end. Callers serialise writes to overlapping sectors of one file.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if !self.direct {
            return pwrite_all::<O>(&self.file, data, offset);
        }
        if data.is_empty() {
            return Ok(());
        }
        let a = self.align as u64;
        let end = offset + data.len() as u64;
        let start = round_down(offset, a);
        let stop = round_down(end + a - 1, a);
        let size = self.size()?;
        let head = offset != start && start < size;
        let last = stop - a;
        let tail = end != stop && last < size && (last != start || offset == start);
        let file = &self.file;
        let align = self.align;
        O::write_bounced(file, (stop - start) as usize, align, start, &mut |buf| {
            // Keep the bytes of the edge sectors the write only partly covers.
            if head {
                O::pread(file, &mut buf[..align], start)?;
            }
            if tail {
                let at = (last - start) as usize;
                O::pread(file, &mut buf[at..], last)?;
            }
            buf[(offset - start) as usize..(end - start) as usize].copy_from_slice(data);
            Ok(())
        })?;
        if stop > size.max(end) {
            O::set_size(&self.file, size.max(end))?;
        }
        Ok(())
    }

    /// Writes a buffer that is already sector-aligned in memory, offset
    /// and length (EINVAL otherwise).
    pub fn write_aligned_at(&self, buf: &AlignedBuf, offset: u64) -> io::Result<()> {
        let a = self.align;
        if buf.align() < a || buf.len() % a != 0 || offset % a as u64 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "unaligned direct write: {} bytes at {offset}, buffer aligned to {}, \
                     file needs {a}",
                    buf.len(),
                    buf.align()
                ),
            ));
        }
        pwrite_all::<O>(&self.file, buf, offset)
    }

    /// Reads up to `buf.len()` bytes at `offset` (short only at the end of
    /// file). On a direct file the read goes through an aligned buffer.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if !self.direct {
            return O::pread(&self.file, buf, offset);
        }
        let a = self.align as u64;
        let start = round_down(offset, a);
        let stop = round_down(offset + buf.len() as u64 + a - 1, a);
        let mut tmp = AlignedBuf::zeroed((stop - start) as usize, self.align);
        let n = O::pread(&self.file, &mut tmp, start)?;
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
            let n = O::pread(&self.file, &mut buf, 0)?;
            return Ok(buf[..n.min(size)].to_vec());
        }
        let mut v = vec![0; size];
        let n = O::pread(&self.file, &mut v, 0)?;
        v.truncate(n);
        Ok(v)
    }

    /// The data and what is needed to read it back are durable
    /// (fdatasync; F_FULLFSYNC on macOS; FlushFileBuffers on Windows).
    pub fn sync_data(&self) -> io::Result<()> {
        O::sync_data(&self.file)
    }

    /// The data and all metadata are durable (fsync; F_FULLFSYNC on
    /// macOS; FlushFileBuffers on Windows).
    pub fn sync_full(&self) -> io::Result<()> {
        O::sync_full(&self.file)
    }

    /// A write barrier: fdatasync on Linux, which has no cheaper ordering
    /// primitive; F_BARRIERFSYNC on macOS; nothing on a Windows file
    /// written through.
    pub fn sync_barrier(&self) -> io::Result<()> {
        O::sync_barrier(&self.file, self.direct)
    }
}

#[cfg(unix)]
impl<O: Os<File = std::os::fd::OwnedFd>> DurableFileIn<O> {
    /// Wraps an open fd (see [`DurableFileIn::from_file`]).
    pub fn from_fd(fd: std::os::fd::OwnedFd, direct: bool) -> Self {
        Self::from_file(fd, direct)
    }

    /// The fd.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.file.as_fd()
    }
}

/// Writes all of `data` at `offset`; a short write (which a pwrite returns
/// only when the rest failed) is an error.
pub(super) fn pwrite_all<O: Os>(file: &O::File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        match O::pwrite(file, &data[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    complete(done, data.len())
}

/// Copies all of `src` into `dst` from offset 0 of each, by positioned
/// reads and writes: the fallback of every OS's `copy`.
#[cfg_attr(
    not(any(target_os = "linux", target_os = "macos", windows)),
    allow(dead_code)
)]
pub(super) fn copy_by_hand<O: Os>(src: &O::File, dst: &O::File) -> io::Result<u64> {
    let size = O::size(src)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < size {
        let n = O::pread(src, &mut buf, done)?;
        if n == 0 {
            break;
        }
        pwrite_all::<O>(dst, &buf[..n], done)?;
        done += n as u64;
    }
    Ok(done)
}

pub(super) fn complete(done: usize, want: usize) -> io::Result<()> {
    if done == want {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {done} of {want} bytes"),
        ))
    }
}

/// Says once per process that `what` fell back to something weaker, and
/// why (a sync primitive the filesystem refuses, say).
/// The directory holding `path` (`.` for a bare name): what every OS's
/// `sync_parent_dir` syncs.
pub(super) fn parent_of(path: &std::path::Path) -> &std::path::Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    }
}

/// `name` in the directory `dir`, for the OS modules that keep
/// directories by path (Windows, std-only): names must be UTF-8 there.
#[cfg(any(windows, test, not(any(target_os = "linux", target_os = "macos"))))]
pub(super) fn path_in(dir: &std::path::Path, name: &CStr) -> io::Result<std::path::PathBuf> {
    let name = name.to_str().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "file name is not valid UTF-8, which names must be on this OS",
        )
    })?;
    Ok(dir.join(name))
}

/// The `open_dir` of the OS modules that keep directories by path: the
/// path, checked to be a directory.
#[cfg(any(windows, test, not(any(target_os = "linux", target_os = "macos"))))]
pub fn dir_by_path(path: &std::path::Path) -> io::Result<std::path::PathBuf> {
    if !path.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", path.display()),
        ));
    }
    Ok(path.to_path_buf())
}

/// Reads at `offset` until `buf` is full or `read_at` says end of file,
/// retrying interrupted reads: the `Os::pread` of the OS modules whose
/// system call may return short (Linux's own pread wrapper already loops).
#[cfg_attr(all(target_os = "linux", not(test)), allow(dead_code))]
pub(super) fn read_full(
    buf: &mut [u8],
    offset: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(super) fn fallback_once(flag: &AtomicBool, what: &str, e: &io::Error) {
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!("{what} ({e})");
    }
}

#[cfg(test)]
mod tests;
