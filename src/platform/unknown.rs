//! The durable-IO interface with the standard library only, for an OS
//! without a module of its own. Built there, and on Linux for the tests
//! (durable/tests.rs runs it on real files).
//!
//! What std cannot do is refused or reported, never faked: no direct IO
//! (files stay buffered, as on a filesystem that refuses O_DIRECT); no
//! atomic no-replace or exchange rename (`Unsupported`); no preallocation
//! (`Ok(false)`); advice and write hints are advisory and do nothing. A
//! data sync is `File::sync_data`, a barrier the same, a full sync
//! `File::sync_all`; a directory is synced through `File::open(dir)`,
//! which works where the OS allows opening directories.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use super::durable::{Access, Os, RenameMode, path_in};

/// The standard library, for [`super::DurableFileIn`].
#[derive(Debug, Clone, Copy)]
pub struct Portable;

/// An open file. Positioned IO is a seek and a read or write under the
/// file's lock (std has no portable pread/pwrite).
#[derive(Debug)]
pub struct PortableFile {
    file: File,
    cursor: Mutex<()>,
}

impl PortableFile {
    /// The std file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Os for Portable {
    type File = PortableFile;
    type Dir<'a> = &'a Path;

    fn open(dir: &Path, name: &CStr, access: Access, _mode: u32) -> io::Result<PortableFile> {
        let mut o = OpenOptions::new();
        match access {
            Access::CreateNew => o.read(true).write(true).create_new(true),
            Access::Read => o.read(true),
            Access::Append => o.read(true).append(true).create(true),
            Access::Write => o.read(true).write(true),
        };
        Ok(PortableFile {
            file: o.open(path_in(dir, name)?)?,
            cursor: Mutex::new(()),
        })
    }

    fn set_direct(file: PortableFile) -> (PortableFile, io::Result<()>) {
        let e = io::Error::new(io::ErrorKind::Unsupported, "std has no direct IO");
        (file, Err(e))
    }

    fn sector_size(file: &PortableFile) -> usize {
        sector_size(&file.file)
    }

    fn pread(file: &PortableFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let _at = file.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = &file.file;
        f.seek(SeekFrom::Start(offset))?;
        // Sequential from the seek: the offset the helper passes is implied.
        super::durable::read_full(buf, offset, |rest, _| f.read(rest))
    }

    fn pwrite(file: &PortableFile, buf: &[u8], offset: u64) -> io::Result<usize> {
        let _at = file.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = &file.file;
        f.seek(SeekFrom::Start(offset))?;
        f.write(buf)
    }

    fn write(file: &PortableFile, buf: &[u8]) -> io::Result<usize> {
        let _at = file.cursor.lock().unwrap_or_else(|p| p.into_inner());
        (&file.file).write(buf)
    }

    fn size(file: &PortableFile) -> io::Result<u64> {
        Ok(file.file.metadata()?.len())
    }

    fn set_size(file: &PortableFile, len: u64) -> io::Result<()> {
        file.file.set_len(len)
    }

    fn sync_data(file: &PortableFile) -> io::Result<()> {
        sync_data(&file.file)
    }

    fn sync_full(file: &PortableFile) -> io::Result<()> {
        sync_full(&file.file)
    }

    fn sync_barrier(file: &PortableFile, _write_through: bool) -> io::Result<()> {
        sync_barrier(&file.file)
    }
}

/// 512: std cannot ask the device.
pub fn sector_size(_file: &File) -> usize {
    512
}

/// False: std has no direct IO.
pub fn direct_io_available(_dir: &Path) -> bool {
    false
}

/// `File::sync_data`.
pub fn sync_data(file: &File) -> io::Result<()> {
    super::counters::FDATASYNC.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    file.sync_data()
}

/// `File::sync_all`.
pub fn sync_full(file: &File) -> io::Result<()> {
    super::counters::FSYNC.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    file.sync_all()
}

/// A data sync: std has no ordering primitive.
pub fn sync_barrier(file: &File) -> io::Result<()> {
    sync_data(file)
}

/// The directory, checked to be one (std keeps directories by path).
pub use super::durable::dir_by_path as open_dir;

/// A sync of the directory's entries, through `File::open(dir)`.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    sync_full(&File::open(dir)?)
}

/// A sync of the directory holding `path`.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    sync_dir(super::durable::parent_of(path))
}

/// `std::fs::rename` for a replace; no-replace and exchange are not
/// atomic with std, so they are refused (`Unsupported`).
pub fn rename(
    olddir: &Path,
    old: &CStr,
    newdir: &Path,
    new: &CStr,
    mode: RenameMode,
) -> io::Result<()> {
    match mode {
        RenameMode::Replace => std::fs::rename(path_in(olddir, old)?, path_in(newdir, new)?),
        RenameMode::NoReplace | RenameMode::Exchange => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{mode:?} rename is not atomic with the standard library alone"),
        )),
    }
}

/// Copies all of `src` into `dst` from offset 0 of each.
pub fn copy(src: &File, dst: &File) -> io::Result<u64> {
    let (mut s, mut d) = (src, dst);
    s.seek(SeekFrom::Start(0))?;
    d.seek(SeekFrom::Start(0))?;
    io::copy(&mut s, &mut d)
}

/// Ok(false): std cannot reserve blocks.
pub fn preallocate(_file: &File, _offset: u64, _len: u64) -> io::Result<bool> {
    Ok(false)
}

/// Nothing: advice is advisory and std has none.
pub fn advise(_file: &File, _advice: crate::policy::Advice) -> io::Result<()> {
    Ok(())
}

/// Nothing: the hint is advisory and std has none.
pub fn set_write_hint(_file: &File, _hint: crate::policy::WriteHint) -> io::Result<()> {
    Ok(())
}
