//! The durable-IO interface on Windows.
//!
//! - files are std `File`s (handles) opened with every share mode, so an
//!   open here never locks other openers out, as on Unix;
//! - direct IO reopens the handle (ReOpenFile) with
//!   FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH; the alignment is the
//!   volume's sector size (FILE_STORAGE_INFO);
//! - a data or full sync is FlushFileBuffers; a barrier is nothing on a
//!   file written through (every write is on the disk when it returns),
//!   FlushFileBuffers otherwise;
//! - a directory sync is FlushFileBuffers on the directory handle where the
//!   volume allows it; where it refuses, the directory's changes made by
//!   `rename` are already written through (MOVEFILE_WRITE_THROUGH), and the
//!   refusal is said once;
//! - rename is MoveFileExW with MOVEFILE_WRITE_THROUGH (and
//!   REPLACE_EXISTING for a replace); Windows has no atomic exchange, so an
//!   exchange is refused (`Unsupported`);
//! - preallocation sets FILE_ALLOCATION_INFO, which reserves clusters
//!   without moving the end of file;
//! - advice and write hints do nothing (Windows takes them only as open
//!   flags).
//!
//! Directories are kept by path: Win32 has no *at calls. Errors carry the
//! Win32 error code. Type-checked in CI (`cargo check --target
//! x86_64-pc-windows-msvc`), not run: the shared logic it relies on is
//! tested on Linux.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, RawHandle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use windows_sys::Win32::Foundation::{
    ERROR_INSUFFICIENT_BUFFER, GENERIC_READ, GENERIC_WRITE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::{
    DACL_SECURITY_INFORMATION, GROUP_SECURITY_INFORMATION, GetKernelObjectSecurity,
    OWNER_SECURITY_INFORMATION, SetKernelObjectSecurity,
};
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, FILE_ALLOCATION_INFO, FILE_BASIC_INFO, FILE_FLAG_BACKUP_SEMANTICS,
    FILE_FLAG_NO_BUFFERING, FILE_FLAG_WRITE_THROUGH, FILE_SHARE_DELETE, FILE_SHARE_READ,
    FILE_SHARE_WRITE, FILE_STANDARD_INFO, FILE_STORAGE_INFO, FileAllocationInfo, FileBasicInfo,
    FileStandardInfo, FileStorageInfo, FlushFileBuffers, GetDiskFreeSpaceExW,
    GetFileInformationByHandle, GetFileInformationByHandleEx, MOVEFILE_REPLACE_EXISTING,
    MOVEFILE_WRITE_THROUGH, MoveFileExW, ReOpenFile, SetFileInformationByHandle,
};
use windows_sys::Win32::Storage::FileSystem::{DELETE, FILE_RENAME_INFO, FileRenameInfoEx};
use windows_sys::Win32::System::Console::SetConsoleCtrlHandler;

use super::durable::{Access, Os, RenameMode, fallback_once, parent_of, path_in, read_full};

/// Windows, for [`super::DurableFileIn`].
#[derive(Debug, Clone, Copy)]
pub struct Windows;

const SHARE_ALL: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

fn wide(path: &Path) -> Vec<u16> {
    path.as_os_str().encode_wide().chain([0]).collect()
}

fn check(ok: windows_sys::core::BOOL) -> io::Result<()> {
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Os for Windows {
    type File = File;
    type Dir<'a> = &'a Path;

    fn open(dir: &Path, name: &CStr, access: Access, _mode: u32) -> io::Result<File> {
        let mut o = OpenOptions::new();
        o.share_mode(SHARE_ALL);
        match access {
            Access::CreateNew => o.read(true).write(true).create_new(true),
            Access::Read => o.read(true),
            Access::Append => o.read(true).append(true).create(true),
            Access::Write => o.read(true).write(true),
        };
        o.open(path_in(dir, name)?)
    }

    fn set_direct(file: File) -> (File, io::Result<()>) {
        let flags = FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH;
        let mut last = io::Error::from(io::ErrorKind::PermissionDenied);
        for access in [GENERIC_READ | GENERIC_WRITE, GENERIC_READ] {
            // SAFETY: the handle is live for the call; ReOpenFile returns a
            // new handle (or INVALID_HANDLE_VALUE) that nobody else owns.
            let h = unsafe { ReOpenFile(file.as_raw_handle(), access, SHARE_ALL, flags) };
            if h != INVALID_HANDLE_VALUE {
                // SAFETY: `h` is a fresh, valid handle owned here alone.
                return (unsafe { File::from_raw_handle(h as RawHandle) }, Ok(()));
            }
            last = io::Error::last_os_error();
        }
        (file, Err(last))
    }

    fn sector_size(file: &File) -> usize {
        sector_size(file)
    }

    fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_full(buf, offset, |rest, at| file.seek_read(rest, at))
    }

    fn pwrite(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
        file.seek_write(buf, offset)
    }

    fn write(file: &File, buf: &[u8]) -> io::Result<usize> {
        (&*file).write(buf)
    }

    fn size(file: &File) -> io::Result<u64> {
        Ok(file.metadata()?.len())
    }

    fn set_size(file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn sync_data(file: &File) -> io::Result<()> {
        sync_data(file)
    }

    fn sync_full(file: &File) -> io::Result<()> {
        sync_full(file)
    }

    fn sync_barrier(file: &File, write_through: bool) -> io::Result<()> {
        if write_through {
            return Ok(());
        }
        sync_barrier(file)
    }
}

/// The volume's sector size for this file (FILE_STORAGE_INFO: the
/// physical sector size for atomicity, else the logical one), 512 if it
/// says nothing usable.
pub fn sector_size(file: &File) -> usize {
    if let Ok(info) = info_class::<FILE_STORAGE_INFO>(file, FileStorageInfo) {
        for n in [
            info.PhysicalBytesPerSectorForAtomicity,
            info.LogicalBytesPerSector,
        ] {
            let n = n as usize;
            if n.is_power_of_two() && n >= 512 {
                return n;
            }
        }
    }
    512
}

/// True: NTFS and ReFS take unbuffered IO.
pub fn direct_io_available(_dir: &Path) -> bool {
    true
}

fn flush(file: &File) -> io::Result<()> {
    // SAFETY: plain call on a live handle.
    check(unsafe { FlushFileBuffers(file.as_raw_handle()) })
}

/// FlushFileBuffers: Windows has no data-only flush.
pub fn sync_data(file: &File) -> io::Result<()> {
    super::counters::FDATASYNC.fetch_add(1, Ordering::Relaxed);
    flush(file)
}

/// FlushFileBuffers.
pub fn sync_full(file: &File) -> io::Result<()> {
    super::counters::FSYNC.fetch_add(1, Ordering::Relaxed);
    flush(file)
}

/// FlushFileBuffers (a file written through needs none: see
/// [`super::DurableFileIn::sync_barrier`]).
pub fn sync_barrier(file: &File) -> io::Result<()> {
    sync_data(file)
}

/// The directory, checked to be one (Windows keeps directories by path).
pub use super::durable::dir_by_path as open_dir;

static DIR_FLUSH_REFUSED: AtomicBool = AtomicBool::new(false);

/// FlushFileBuffers on the directory's handle, where the volume allows it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    super::counters::FSYNC.fetch_add(1, Ordering::Relaxed);
    let handle = OpenOptions::new()
        .write(true)
        .share_mode(SHARE_ALL)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(dir);
    match handle.and_then(|h| flush(&h)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            fallback_once(
                &DIR_FLUSH_REFUSED,
                "this volume refuses to flush a directory; renames are written through \
                 (the renamed file flushed, or MOVEFILE_WRITE_THROUGH) instead",
                &e,
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A sync of the directory holding `path`.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    sync_dir(parent_of(path))
}

/// [`rename_path`] of `old` in `olddir` to `new` in `newdir`. An exchange
/// is refused: Windows cannot swap two names atomically.
pub fn rename(
    olddir: &Path,
    old: &CStr,
    newdir: &Path,
    new: &CStr,
    mode: RenameMode,
) -> io::Result<()> {
    let replace = match mode {
        RenameMode::Replace => true,
        RenameMode::NoReplace => false,
        RenameMode::Exchange => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "Windows cannot exchange two names atomically",
            ));
        }
    };
    rename_path(&path_in(olddir, old)?, &path_in(newdir, new)?, replace)
}

static POSIX_RENAME_REFUSED: AtomicBool = AtomicBool::new(false);

/// Renames `from` to `to`, written through, replacing an existing `to` only
/// if `replace`.
///
/// A replace is first made with POSIX semantics (FileRenameInfoEx with
/// REPLACE_IF_EXISTS | POSIX_SEMANTICS, Windows 10 1809 and later on NTFS):
/// the old `to` goes even while handles to it are open, as on Linux. The
/// volume's own opens of a file whose atomic stage commits hold such
/// handles, and MoveFileExW REPLACE_EXISTING then fails with access denied
/// whatever their share modes. Where POSIX semantics are refused (older
/// Windows, FAT), MoveFileExW (said once).
pub fn rename_path(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    if replace {
        match posix_replace(from, to) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(1 | 50 | 87)) => fallback_once(
                &POSIX_RENAME_REFUSED,
                "this Windows or volume refuses POSIX-semantics renames; replacing with \
                 MoveFileExW, which fails while the replaced file is open",
                &e,
            ),
            Err(e) => return Err(e),
        }
    }
    let flags = if replace {
        MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH
    } else {
        MOVEFILE_WRITE_THROUGH
    };
    let (from, to) = (wide(from), wide(to));
    // SAFETY: both are NUL-terminated UTF-16 strings that outlive the call.
    check(unsafe { MoveFileExW(from.as_ptr(), to.as_ptr(), flags) })
}

/// Renames `from` over `to` by handle with POSIX semantics, then flushes
/// the renamed file (its metadata, the rename included, reaches the disk:
/// the write-through of this path). ERROR_INVALID_FUNCTION (1),
/// ERROR_NOT_SUPPORTED (50) or ERROR_INVALID_PARAMETER (87) where the
/// system or filesystem does not know the call.
fn posix_replace(from: &Path, to: &Path) -> io::Result<()> {
    // A stage carries its target's DACL, which may not let the daemon
    // write: then the rename alone, made durable by the directory flush
    // that follows every commit.
    let (file, writable) = match open_path(from, DELETE | GENERIC_WRITE, false, 0) {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            (open_path(from, DELETE, false, 0)?, false)
        }
        Err(e) => return Err(e),
    };
    let name: Vec<u16> = to.as_os_str().encode_wide().collect();
    // The struct (its one-unit FileName included) and the whole name after
    // it: more than the name needs, as the system allows.
    let size = std::mem::size_of::<FILE_RENAME_INFO>() + name.len() * 2;
    // FILE_RENAME_INFO ends in a variable-length name: a zeroed buffer of
    // u64s is big enough and aligned for it.
    let mut buf = vec![0u64; size.div_ceil(8)];
    let info = buf.as_mut_ptr().cast::<FILE_RENAME_INFO>();
    // SAFETY: `buf` is zeroed (a valid FILE_RENAME_INFO), 8-aligned and
    // `size` bytes, so the header fields and the `name.len()` UTF-16 units
    // copied from the FileName offset lie inside it.
    unsafe {
        (*info).Anonymous.Flags =
            FILE_RENAME_FLAG_REPLACE_IF_EXISTS | FILE_RENAME_FLAG_POSIX_SEMANTICS;
        (*info).FileNameLength = (name.len() * 2) as u32;
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            std::ptr::addr_of_mut!((*info).FileName).cast::<u16>(),
            name.len(),
        );
    }
    // SAFETY: live handle; `info` is valid for reads of `size` bytes.
    check(unsafe {
        SetFileInformationByHandle(
            file.as_raw_handle(),
            FileRenameInfoEx,
            info.cast(),
            size as u32,
        )
    })?;
    if writable { flush(&file) } else { Ok(()) }
}

/// FileRenameInfoEx flags (winbase.h).
const FILE_RENAME_FLAG_REPLACE_IF_EXISTS: u32 = 0x1;
const FILE_RENAME_FLAG_POSIX_SEMANTICS: u32 = 0x2;

/// Copies all of `src` into `dst` from offset 0 of each.
pub fn copy(src: &File, dst: &File) -> io::Result<u64> {
    super::durable::copy_by_hand::<Windows>(src, dst)
}

/// Reserves clusters up to `offset + len` without moving the end of file
/// (FILE_ALLOCATION_INFO). Never shrinks the allocation.
pub fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    let want = offset + len;
    let std_info: FILE_STANDARD_INFO = info_class(file, FileStandardInfo)?;
    if want as i64 <= std_info.AllocationSize.max(std_info.EndOfFile) {
        return Ok(true);
    }
    set_allocation(file, want)?;
    Ok(true)
}

/// Nothing: Windows takes access advice only as flags at open.
pub fn advise(_file: &File, _advice: crate::policy::Advice) -> io::Result<()> {
    Ok(())
}

/// Nothing: Windows has no write-lifetime hints.
pub fn set_write_hint(_file: &File, _hint: crate::policy::WriteHint) -> io::Result<()> {
    Ok(())
}

/// Opens `path`, a file or a directory (FILE_FLAG_BACKUP_SEMANTICS), with
/// `access` (Win32 access rights) and every share mode; `create_new`
/// makes a new file with `attributes` instead.
pub fn open_path(path: &Path, access: u32, create_new: bool, attributes: u32) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.access_mode(access)
        .share_mode(SHARE_ALL)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .attributes(attributes);
    if create_new {
        o.write(true).create_new(true);
    }
    o.open(path)
}

/// What Windows says about an open file: the fields of WinFsp's file
/// information, times as FILETIME ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandleInfo {
    /// FILE_ATTRIBUTE_* bits
    pub attributes: u32,
    /// bytes allocated on the volume
    pub allocation_size: u64,
    /// end of file
    pub file_size: u64,
    /// creation time
    pub creation_time: u64,
    /// last access time
    pub last_access_time: u64,
    /// last write time
    pub last_write_time: u64,
    /// last change (metadata or data) time
    pub change_time: u64,
    /// the volume's serial number
    pub volume_serial: u32,
    /// the file's index on its volume
    pub index: u64,
    /// hard links to it
    pub links: u32,
}

/// GetFileInformationByHandleEx of one information class.
fn info_class<T>(file: &File, class: i32) -> io::Result<T> {
    // SAFETY: only called with the plain-old-data FILE_*_INFO structs, for
    // which all-zero is valid.
    let mut info: T = unsafe { std::mem::zeroed() };
    // SAFETY: live handle; `info` is valid for writes of its size.
    check(unsafe {
        GetFileInformationByHandleEx(
            file.as_raw_handle(),
            class,
            (&mut info as *mut T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    })?;
    Ok(info)
}

/// The file's attributes, sizes, times and identity.
pub fn handle_info(file: &File) -> io::Result<HandleInfo> {
    let basic: FILE_BASIC_INFO = info_class(file, FileBasicInfo)?;
    let standard: FILE_STANDARD_INFO = info_class(file, FileStandardInfo)?;
    // SAFETY: plain old data; all-zero is valid.
    let mut by_handle: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: live handle; `by_handle` is valid for writes.
    check(unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut by_handle) })?;
    Ok(HandleInfo {
        attributes: basic.FileAttributes,
        allocation_size: standard.AllocationSize as u64,
        file_size: standard.EndOfFile as u64,
        creation_time: basic.CreationTime as u64,
        last_access_time: basic.LastAccessTime as u64,
        last_write_time: basic.LastWriteTime as u64,
        change_time: basic.ChangeTime as u64,
        volume_serial: by_handle.dwVolumeSerialNumber,
        index: (u64::from(by_handle.nFileIndexHigh) << 32) | u64::from(by_handle.nFileIndexLow),
        links: standard.NumberOfLinks,
    })
}

/// Sets the file's attributes and times (FILE_BASIC_INFO); a 0 leaves
/// that one as it is.
pub fn set_basic_info(
    file: &File,
    attributes: u32,
    creation_time: u64,
    last_access_time: u64,
    last_write_time: u64,
    change_time: u64,
) -> io::Result<()> {
    let info = FILE_BASIC_INFO {
        CreationTime: creation_time as i64,
        LastAccessTime: last_access_time as i64,
        LastWriteTime: last_write_time as i64,
        ChangeTime: change_time as i64,
        FileAttributes: attributes,
    };
    set_info_class(file, FileBasicInfo, &info)
}

/// SetFileInformationByHandle of one information class; `info` must be
/// that class's FILE_*_INFO struct.
fn set_info_class<T>(file: &File, class: i32, info: &T) -> io::Result<()> {
    // SAFETY: live handle; `info` is valid for reads of its size.
    check(unsafe {
        SetFileInformationByHandle(
            file.as_raw_handle(),
            class,
            (info as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    })
}

/// Sets the file's allocation size exactly (FILE_ALLOCATION_INFO): below
/// the end of file it truncates, as Windows does.
pub fn set_allocation(file: &File, size: u64) -> io::Result<()> {
    let info = FILE_ALLOCATION_INFO {
        AllocationSize: size as i64,
    };
    set_info_class(file, FileAllocationInfo, &info)
}

/// The file's security descriptor (owner, group, DACL; self-relative):
/// returns its size, and copies it into `buf` when `buf` is big enough.
/// The file must be open with READ_CONTROL.
pub fn security_descriptor(file: &File, buf: Option<&mut [std::ffi::c_void]>) -> io::Result<usize> {
    let what = OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
    let (ptr, len) = match buf {
        Some(b) => (b.as_mut_ptr(), b.len() as u32),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: `ptr` is null with length 0 or a slice of `len` bytes.
    unsafe { kernel_security(file, what, ptr, len) }
}

/// GetKernelObjectSecurity of the parts `what` names into `ptr`: the
/// descriptor's size, also when `len` is too small to hold it (nothing is
/// copied then).
///
/// # Safety
/// `ptr` is null with `len` 0, or valid for writes of `len` bytes.
unsafe fn kernel_security(
    file: &File,
    what: u32,
    ptr: *mut std::ffi::c_void,
    len: u32,
) -> io::Result<usize> {
    let mut needed = 0u32;
    // SAFETY: live handle; `ptr`/`len` as the caller promised; `needed` is
    // valid for writes.
    let ok = unsafe { GetKernelObjectSecurity(file.as_raw_handle(), what, ptr, len, &mut needed) };
    if ok != 0 {
        return Ok(needed as usize);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(ERROR_INSUFFICIENT_BUFFER as i32) {
        return Ok(needed as usize);
    }
    Err(e)
}

/// Sets the parts of the file's security that `what` names
/// (OBJECT_SECURITY_INFORMATION bits: owner, group, DACL) from `sd`, a
/// self-relative security descriptor such as WinFsp hands to a create. The
/// file must be open with WRITE_DAC (and WRITE_OWNER for owner or group).
pub fn set_security_from(file: &File, what: u32, sd: &[std::ffi::c_void]) -> io::Result<()> {
    // SAFETY: live handle; `sd` is a security descriptor that outlives the
    // call (the system only reads it).
    check(unsafe { SetKernelObjectSecurity(file.as_raw_handle(), what, sd.as_ptr().cast_mut()) })
}

/// The same for the change an app asks for through the volume (WinFsp's
/// SetSecurity), whose descriptor WinFsp owns while the callback runs.
pub fn set_security(
    file: &File,
    what: u32,
    sd: &winfsp::filesystem::ModificationDescriptor,
) -> io::Result<()> {
    // SAFETY: live handle; called from the SetSecurity callback, during
    // which WinFsp keeps the descriptor valid.
    check(unsafe { SetKernelObjectSecurity(file.as_raw_handle(), what, sd.as_mut_ptr().cast()) })
}

/// Gives `to` (open with WRITE_DAC) the DACL of `from` (open with
/// READ_CONTROL).
pub fn copy_dacl(from: &File, to: &File) -> io::Result<()> {
    let what = DACL_SECURITY_INFORMATION;
    // SAFETY: a null buffer of length 0 asks for the size only.
    let needed = unsafe { kernel_security(from, what, std::ptr::null_mut(), 0) }?;
    // Self-relative descriptors need pointer alignment: a buffer of u64s.
    let mut buf = vec![0u64; needed.div_ceil(8)];
    // SAFETY: `buf` is valid for writes of `needed` bytes.
    unsafe { kernel_security(from, what, buf.as_mut_ptr().cast(), needed as u32) }?;
    // SAFETY: live handle; `buf` holds the descriptor just read.
    check(unsafe { SetKernelObjectSecurity(to.as_raw_handle(), what, buf.as_mut_ptr().cast()) })
}

/// The volume holding `path`: (total bytes, bytes free to this caller).
pub fn disk_space(path: &Path) -> io::Result<(u64, u64)> {
    let p = wide(path);
    let (mut avail, mut total, mut free) = (0u64, 0u64, 0u64);
    // SAFETY: `p` is a NUL-terminated UTF-16 string; the outputs are valid
    // for writes.
    check(unsafe { GetDiskFreeSpaceExW(p.as_ptr(), &mut avail, &mut total, &mut free) })?;
    Ok((total, avail))
}

static CONSOLE_STOP: AtomicBool = AtomicBool::new(false);

unsafe extern "system" fn console_handler(_event: u32) -> windows_sys::core::BOOL {
    CONSOLE_STOP.store(true, Ordering::SeqCst);
    1
}

/// Catches Ctrl-C, Ctrl-Break and console close; [`console_stopped`]
/// then says so (the process is not killed, so it can unmount cleanly).
pub fn catch_console_stop() -> io::Result<()> {
    // SAFETY: the handler is a plain function that only stores an atomic.
    check(unsafe { SetConsoleCtrlHandler(Some(console_handler), 1) })
}

/// True once Ctrl-C, Ctrl-Break or a console close arrived.
pub fn console_stopped() -> bool {
    CONSOLE_STOP.load(Ordering::SeqCst)
}
