//! The WinFsp frontend: shows a backing directory as a Windows volume
//! (`durafs mount BACKING X:`), every file's writes made durable as its
//! policy says.
//!
//! WinFsp calls name files by path (`\dir\file`); durafs keeps the backing
//! file's handle per open and, per backing file (volume serial, file
//! index), the engine's by-path state ([`crate::engine::by_path`], tested
//! on Linux): the atomic stage, the group commit, the preallocated end, the
//! pending interval sync. What each event leads to comes from
//! [`crate::engine::plan`], as for the POSIX engine; the system calls are
//! [`crate::platform`]'s for Windows (`WinOs` here).
//!
//! - `direct`: writes go through a second handle opened
//!   FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH, sector-aligned
//!   ([`DurableFile`]);
//! - `atomic`: the first write copies the file into a hidden
//!   `.durafs-stage-*` beside it; reads and writes of every open of the file
//!   go to the stage; the last close (Cleanup) or a flush syncs it and
//!   renames it over the target (MoveFileExW REPLACE_EXISTING |
//!   WRITE_THROUGH), then flushes the directory;
//! - `append`: clusters are reserved (FILE_ALLOCATION_INFO) ahead of the end
//!   of file in `preallocate` steps, the unused tail released on the last
//!   close;
//! - sync triggers: `always` (group commit per file), `on-close` (Cleanup),
//!   `interval` (a flusher thread), `on-fsync` (FlushFileBuffers of the
//!   file, upgraded to the policy's method), `never` (flushes acknowledged);
//!   a volume flush (no file) applies the app-sync rule to every open file;
//! - `dir-sync`: create, delete and rename flush the directories they
//!   change.
//!
//! Names starting `.durafs-` are the engine's: never listed, never opened
//! or created through the volume. Written and type-checked in CI; not run
//! (see the README's platform table).

use std::collections::HashMap;
use std::ffi::{OsString, c_void};
use std::fs::File;
use std::io;
use std::os::windows::ffi::OsStringExt;
use std::os::windows::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use ::winfsp::filesystem::{
    DirBuffer, DirInfo, DirMarker, FileInfo, FileSecurity, FileSystemContext,
    ModificationDescriptor, OpenFileInfo, VolumeInfo, WideNameInfo,
};
use ::winfsp::host::{FileSystemHost, FileSystemParams, VolumeParams};
use ::winfsp::{FspError, U16CStr};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_DIR_NOT_EMPTY, STATUS_BUFFER_OVERFLOW, STATUS_END_OF_FILE,
    STATUS_OBJECT_NAME_NOT_FOUND,
};
use windows_sys::Win32::Security::{
    DACL_SECURITY_INFORMATION, GROUP_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION,
};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_APPEND_DATA, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_NORMAL, FILE_WRITE_DATA,
    INVALID_FILE_ATTRIBUTES, READ_CONTROL, WRITE_DAC, WRITE_OWNER,
};

use crate::engine::by_path::{PathFile, PathOs};
use crate::engine::plan::{self, AfterWrite};
use crate::engine::{HIDDEN_PREFIX, SyncKind};
use crate::platform::{self, DurableFile, HandleInfo};
use crate::policy::{FilePolicy, Policy, WriteStrategy};

/// NtCreateFile's FILE_DIRECTORY_FILE create option.
const FILE_DIRECTORY_FILE: u32 = 0x0000_0001;
/// WinFsp's cleanup flag: the file is to be deleted.
const CLEANUP_DELETE: u32 = 0x01;

type Result<T> = ::winfsp::Result<T>;

fn win32(code: u32) -> FspError {
    FspError::WIN32(code)
}

fn not_found() -> FspError {
    FspError::NTSTATUS(STATUS_OBJECT_NAME_NOT_FOUND)
}

/// The Windows file operations of the by-path engine.
pub struct WinOs;

impl PathOs for WinOs {
    type File = File;

    fn sync(file: &File, kind: SyncKind) -> io::Result<()> {
        match kind {
            SyncKind::Data => platform::sync_data(file),
            SyncKind::Full => platform::sync_full(file),
            SyncKind::Barrier => platform::sync_barrier(file),
        }
    }

    fn create_new(path: &Path) -> io::Result<File> {
        platform::open_path(path, GENERIC_ALL, true, FILE_ATTRIBUTE_NORMAL)
    }

    fn copy_access(from: &Path, to: &File) -> io::Result<()> {
        platform::copy_dacl(&platform::open_path(from, READ_CONTROL, false, 0)?, to)
    }

    fn open_read(path: &Path) -> io::Result<File> {
        platform::open_path(path, GENERIC_READ, false, 0)
    }

    fn open_write(path: &Path) -> io::Result<File> {
        platform::open_path(path, FILE_WRITE_DATA, false, 0)
    }

    fn copy(src: &File, dst: &File) -> io::Result<()> {
        platform::copy(src, dst).map(drop)
    }

    fn replace(from: &Path, to: &Path) -> io::Result<()> {
        platform::rename_path(from, to, true)
    }

    fn sync_parent_dir(path: &Path) -> io::Result<()> {
        platform::sync_parent_dir(path)
    }

    fn remove(path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn size(file: &File) -> io::Result<u64> {
        Ok(file.metadata()?.len())
    }

    fn set_allocation(file: &File, size: u64) -> io::Result<()> {
        platform::set_allocation(file, size)
    }
}

/// What the engine keeps per backing file while it is open.
type FileState = PathFile<WinOs>;

/// One open (WinFsp's file context).
pub struct Handle {
    file: Arc<File>,
    state: Arc<FileState>,
    policy: FilePolicy,
    dir: bool,
    writable: bool,
    direct: Option<DurableFile>,
    dir_buffer: DirBuffer,
}

impl Handle {
    /// The file this open's reads, writes and syncs go to.
    fn io_file(&self) -> Arc<File> {
        self.state.data_file(&self.file, self.writable)
    }
}

/// The durafs volume: a backing directory and its policy.
pub struct WinFs {
    root: PathBuf,
    policy: Policy,
    files: Mutex<HashMap<(u32, u64), Weak<FileState>>>,
    stage_seq: AtomicU64,
    flusher: Arc<(Mutex<bool>, Condvar)>,
}

impl WinFs {
    /// A volume showing `root` under `policy`; starts the interval flusher.
    pub fn new(root: PathBuf, policy: Policy) -> Arc<WinFs> {
        let fs = Arc::new(WinFs {
            root,
            policy,
            files: Mutex::new(HashMap::new()),
            stage_seq: AtomicU64::new(0),
            flusher: Arc::new((Mutex::new(false), Condvar::new())),
        });
        let weak = Arc::downgrade(&fs);
        std::thread::spawn(move || flusher(weak));
        fs
    }

    /// The backing path and the policy path ('/'-separated) of a WinFsp
    /// name; None for the engine's hidden names.
    fn resolve(&self, name: &U16CStr) -> Option<(PathBuf, Vec<u8>)> {
        let rel = OsString::from_wide(name.as_slice());
        let rel = rel.to_string_lossy();
        let rel = rel.trim_start_matches('\\');
        if rel
            .split('\\')
            .any(|c| c.as_bytes().starts_with(HIDDEN_PREFIX))
        {
            return None;
        }
        Some((self.root.join(rel), rel.replace('\\', "/").into_bytes()))
    }

    fn state_of(
        &self,
        file: &File,
        path: &Path,
        policy: &FilePolicy,
    ) -> io::Result<Arc<FileState>> {
        let info = platform::handle_info(file)?;
        let key = (info.volume_serial, info.index);
        let mut files = self.files.lock().expect("files poisoned");
        if let Some(s) = files.get(&key).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let reserved = info.allocation_size.max(info.file_size);
        let s = Arc::new(FileState::new(policy.clone(), path.to_path_buf(), reserved));
        files.retain(|_, w| w.strong_count() > 0);
        files.insert(key, Arc::downgrade(&s));
        Ok(s)
    }

    fn open_handle(&self, file: File, path: &Path, rel: &[u8], access: u32) -> Result<Handle> {
        let info = platform::handle_info(&file)?;
        let dir = info.attributes & FILE_ATTRIBUTE_DIRECTORY != 0;
        let policy = self.policy.resolve(rel);
        let writable = !dir && access & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
        let state = self.state_of(&file, path, &policy)?;
        let mut direct = None;
        if writable {
            state.open_writer();
            if policy.write == WriteStrategy::Direct {
                direct = Some(DurableFile::from_file(file.try_clone()?, true));
            }
            if let Some(h) = policy.hint {
                let _ = platform::set_write_hint(&file, h);
            }
        }
        if let Some(a) = policy.advise {
            let _ = platform::advise(&file, a);
        }
        Ok(Handle {
            file: Arc::new(file),
            state,
            policy,
            dir,
            writable,
            direct,
            dir_buffer: DirBuffer::new(),
        })
    }

    /// The file's stage, made (seeded with its contents if `seed`) when
    /// there is none.
    fn stage(&self, h: &Handle, seed: bool) -> io::Result<Arc<File>> {
        let name = format!(
            "{}stage-{}-{}",
            String::from_utf8_lossy(HIDDEN_PREFIX),
            std::process::id(),
            self.stage_seq.fetch_add(1, Ordering::Relaxed)
        );
        h.state.stage(&name, seed)
    }

    fn dir_sync(&self, h_policy: &FilePolicy, path: &Path) -> io::Result<()> {
        if h_policy.dir_sync {
            platform::sync_parent_dir(path)?;
        }
        Ok(())
    }

    /// Every open file's state with a pending interval sync due by `now`,
    /// and when the next one is due.
    fn due(&self, now: Instant) -> (Vec<(Arc<FileState>, SyncKind)>, Option<Instant>) {
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        for s in self.all_files() {
            match s.take_due(now) {
                Ok(kind) => ready.push((s, kind)),
                Err(Some(at)) => next = Some(next.map_or(at, |n| n.min(at))),
                Err(None) => {}
            }
        }
        (ready, next)
    }

    fn all_files(&self) -> Vec<Arc<FileState>> {
        let files = self.files.lock().expect("files poisoned");
        files.values().filter_map(Weak::upgrade).collect()
    }
}

/// Full access, for the stages durafs makes itself.
const GENERIC_ALL: u32 = 0x1000_0000;
/// Read access, for seeding a stage.
const GENERIC_READ: u32 = 0x8000_0000;

/// The interval flusher: syncs each file whose pending sync is due.
fn flusher(fs: Weak<WinFs>) {
    loop {
        let Some(me) = fs.upgrade() else { return };
        let (ready, next) = me.due(Instant::now());
        for (state, kind) in ready {
            if let Err(e) = state.sync_at_path(kind) {
                tracing::error!("interval sync of {}: {e}", state.path().display());
            }
        }
        let wait = next.map_or(Duration::from_secs(1), |n| {
            n.saturating_duration_since(Instant::now())
        });
        let flusher = me.flusher.clone();
        drop(me);
        let (lock, cv) = &*flusher;
        let stop = lock.lock().expect("flusher poisoned");
        if *stop {
            return;
        }
        let _ = cv.wait_timeout(stop, wait.min(Duration::from_secs(1)));
    }
}

fn fill(out: &mut FileInfo, i: &HandleInfo) {
    out.file_attributes = i.attributes;
    out.reparse_tag = 0;
    out.allocation_size = i.allocation_size;
    out.file_size = i.file_size;
    out.creation_time = i.creation_time;
    out.last_access_time = i.last_access_time;
    out.last_write_time = i.last_write_time;
    out.change_time = i.change_time;
    out.index_number = i.index;
    out.hard_links = 0;
    out.ea_size = 0;
}

/// The open's file information: its own handle's, with the data's sizes
/// and times from the stage or the committed file when there is one.
fn info_of(h: &Handle, out: &mut FileInfo) -> io::Result<()> {
    let mut i = platform::handle_info(&h.file)?;
    let data = h.io_file();
    if !Arc::ptr_eq(&data, &h.file) {
        let d = platform::handle_info(&data)?;
        (i.file_size, i.allocation_size) = (d.file_size, d.allocation_size);
        (i.last_write_time, i.change_time) = (d.last_write_time, d.change_time);
    }
    fill(out, &i);
    Ok(())
}

/// The file's security descriptor into `buf` (when given); its size, or
/// STATUS_BUFFER_OVERFLOW when `buf` is too small.
fn security_into(file: &File, buf: Option<&mut [c_void]>) -> Result<u64> {
    let given = buf.as_ref().map(|b| b.len());
    let size = platform::security_descriptor(file, buf)?;
    if given.is_some_and(|g| g < size) {
        return Err(FspError::NTSTATUS(STATUS_BUFFER_OVERFLOW));
    }
    Ok(size as u64)
}

fn dir_entry(name: &std::ffi::OsStr, md: &std::fs::Metadata) -> Result<DirInfo> {
    let mut d: DirInfo = DirInfo::new();
    let fi = d.file_info_mut();
    fi.file_attributes = md.file_attributes();
    fi.file_size = md.file_size();
    fi.allocation_size = md.file_size().div_ceil(4096) * 4096;
    fi.creation_time = md.creation_time();
    fi.last_access_time = md.last_access_time();
    fi.last_write_time = md.last_write_time();
    fi.change_time = md.last_write_time();
    d.set_name(name)?;
    Ok(d)
}

/// What WinFsp calls: the volume, shared with its flusher thread.
pub struct Volume(Arc<WinFs>);

impl std::ops::Deref for Volume {
    type Target = WinFs;

    fn deref(&self) -> &WinFs {
        &self.0
    }
}

impl FileSystemContext for Volume {
    type FileContext = Handle;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        security_descriptor: Option<&mut [c_void]>,
        _resolve_reparse_points: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> Result<FileSecurity> {
        let (path, _) = self.resolve(file_name).ok_or_else(not_found)?;
        let file = platform::open_path(&path, READ_CONTROL, false, 0)?;
        let attributes = platform::handle_info(&file)?.attributes;
        Ok(FileSecurity {
            reparse: false,
            sz_security_descriptor: security_into(&file, security_descriptor)?,
            attributes,
        })
    }

    fn open(
        &self,
        file_name: &U16CStr,
        _create_options: u32,
        granted_access: u32,
        file_info: &mut OpenFileInfo,
    ) -> Result<Handle> {
        let (path, rel) = self.resolve(file_name).ok_or_else(not_found)?;
        let file = platform::open_path(&path, granted_access | READ_CONTROL, false, 0)?;
        let h = self.open_handle(file, &path, &rel, granted_access)?;
        info_of(&h, file_info.as_mut())?;
        Ok(h)
    }

    fn create(
        &self,
        file_name: &U16CStr,
        create_options: u32,
        granted_access: u32,
        file_attributes: u32,
        security_descriptor: Option<&[c_void]>,
        allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        _extra_buffer_is_reparse_point: bool,
        file_info: &mut OpenFileInfo,
    ) -> Result<Handle> {
        let (path, rel) = self
            .resolve(file_name)
            .ok_or_else(|| win32(ERROR_ACCESS_DENIED))?;
        let access = granted_access | READ_CONTROL | WRITE_DAC;
        let file = if create_options & FILE_DIRECTORY_FILE != 0 {
            std::fs::create_dir(&path)?;
            platform::open_path(&path, access, false, 0)?
        } else {
            let attributes = file_attributes & !FILE_ATTRIBUTE_DIRECTORY;
            platform::open_path(&path, access, true, attributes)?
        };
        // The DACL the caller's create asked for (WinFsp computes it from
        // the parent's inheritable entries and the caller's own); the owner
        // stays the daemon's account, which may not take another's.
        if let Some(sd) = security_descriptor
            && let Err(e) = platform::set_security_from(&file, DACL_SECURITY_INFORMATION, sd)
        {
            // The file exists: remove it rather than leave it with other
            // permissions than asked for.
            drop(file);
            let _ = if create_options & FILE_DIRECTORY_FILE != 0 {
                std::fs::remove_dir(&path)
            } else {
                std::fs::remove_file(&path)
            };
            return Err(e.into());
        }
        let h = self.open_handle(file, &path, &rel, granted_access)?;
        if allocation_size > 0 && !h.dir {
            platform::preallocate(&h.file, 0, allocation_size)?;
        }
        self.dir_sync(&h.policy, &path)?;
        info_of(&h, file_info.as_mut())?;
        Ok(h)
    }

    fn cleanup(&self, h: &Handle, _file_name: Option<&U16CStr>, flags: u32) {
        let path = h.state.path();
        if flags & CLEANUP_DELETE != 0 {
            // A deleted file's stage has nothing to commit.
            h.state.discard_stage();
            let res = if h.dir {
                std::fs::remove_dir(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match res.and_then(|()| self.dir_sync(&h.policy, &path)) {
                Ok(()) => {}
                Err(e) => tracing::error!("deleting {}: {e}", path.display()),
            }
        }
        if h.writable
            && let Err(e) = h.state.close_writer(&h.policy, &h.io_file())
        {
            // Cleanup cannot fail; the error is logged and, for a stage,
            // the target keeps its old contents.
            tracing::error!("closing {}: {e}", path.display());
        }
    }

    fn close(&self, _h: Handle) {}

    fn flush(&self, h: Option<&Handle>, file_info: &mut FileInfo) -> Result<()> {
        match h {
            Some(h) => {
                if h.writable {
                    h.state.app_sync(&h.policy, &h.io_file())?;
                }
                info_of(h, file_info)?;
            }
            None => {
                // A volume flush: every open file's data, as the app asked.
                for s in self.all_files() {
                    if s.has_writers() {
                        let data = s.data_file(&Arc::new(WinOs::open_write(&s.path())?), true);
                        s.app_sync(s.policy(), &data)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn get_file_info(&self, h: &Handle, file_info: &mut FileInfo) -> Result<()> {
        Ok(info_of(h, file_info)?)
    }

    fn get_security(&self, h: &Handle, security_descriptor: Option<&mut [c_void]>) -> Result<u64> {
        security_into(&h.file, security_descriptor)
    }

    fn set_security(
        &self,
        h: &Handle,
        security_information: u32,
        modification_descriptor: ModificationDescriptor,
    ) -> Result<()> {
        let mut access = WRITE_DAC;
        if security_information & (OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION) != 0 {
            access |= WRITE_OWNER;
        }
        let file = platform::open_path(&h.state.path(), access, false, 0)?;
        platform::set_security(&file, security_information, &modification_descriptor)?;
        Ok(())
    }

    fn overwrite(
        &self,
        h: &Handle,
        file_attributes: u32,
        replace_file_attributes: bool,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        file_info: &mut FileInfo,
    ) -> Result<()> {
        if h.policy.write == WriteStrategy::Atomic && h.writable {
            // The target keeps its contents until the commit.
            self.stage(h, false)?.set_len(0)?;
        } else {
            h.io_file().set_len(0)?;
            h.state.touched();
        }
        let attributes = if replace_file_attributes {
            // NORMAL alone clears every attribute; 0 would change nothing.
            if file_attributes == 0 {
                FILE_ATTRIBUTE_NORMAL
            } else {
                file_attributes
            }
        } else {
            let old = platform::handle_info(&h.file)?.attributes;
            old | file_attributes
        };
        platform::set_basic_info(&h.file, attributes, 0, 0, 0, 0)?;
        info_of(h, file_info)?;
        Ok(())
    }

    fn read_directory(
        &self,
        h: &Handle,
        _pattern: Option<&U16CStr>,
        marker: DirMarker,
        buffer: &mut [u8],
    ) -> Result<u32> {
        if marker.is_none() {
            let lock = h.dir_buffer.acquire(true, None)?;
            let path = h.state.path();
            if path != self.root {
                let md = std::fs::metadata(&path)?;
                lock.write(&mut dir_entry(".".as_ref(), &md)?)?;
                let parent = path.parent().unwrap_or(&self.root);
                lock.write(&mut dir_entry("..".as_ref(), &std::fs::metadata(parent)?)?)?;
            }
            for entry in std::fs::read_dir(&path)? {
                let entry = entry?;
                let name = entry.file_name();
                if name.as_encoded_bytes().starts_with(HIDDEN_PREFIX) {
                    continue;
                }
                let Ok(md) = entry.metadata() else { continue };
                lock.write(&mut dir_entry(&name, &md)?)?;
            }
        }
        Ok(h.dir_buffer.read(marker, buffer))
    }

    fn rename(
        &self,
        h: &Handle,
        file_name: &U16CStr,
        new_file_name: &U16CStr,
        replace_if_exists: bool,
    ) -> Result<()> {
        let (from, _) = self.resolve(file_name).ok_or_else(not_found)?;
        let (to, rel) = self
            .resolve(new_file_name)
            .ok_or_else(|| win32(ERROR_ACCESS_DENIED))?;
        platform::rename_path(&from, &to, replace_if_exists)?;
        // Open files at or under the old name are now under the new one.
        for s in self.all_files() {
            s.renamed(&from, &to);
        }
        if h.policy.dir_sync || self.policy.resolve(&rel).dir_sync {
            platform::sync_parent_dir(&to)?;
            if from.parent() != to.parent() {
                platform::sync_parent_dir(&from)?;
            }
        }
        Ok(())
    }

    fn set_basic_info(
        &self,
        h: &Handle,
        file_attributes: u32,
        creation_time: u64,
        last_access_time: u64,
        last_write_time: u64,
        last_change_time: u64,
        file_info: &mut FileInfo,
    ) -> Result<()> {
        let attributes = if file_attributes == INVALID_FILE_ATTRIBUTES {
            0
        } else {
            file_attributes
        };
        platform::set_basic_info(
            &h.file,
            attributes,
            creation_time,
            last_access_time,
            last_write_time,
            last_change_time,
        )?;
        info_of(h, file_info)?;
        Ok(())
    }

    fn set_delete(&self, h: &Handle, _file_name: &U16CStr, delete_file: bool) -> Result<()> {
        if delete_file && h.dir {
            let mut entries = std::fs::read_dir(h.state.path())?;
            if entries.any(|e| {
                e.is_ok_and(|e| !e.file_name().as_encoded_bytes().starts_with(HIDDEN_PREFIX))
            }) {
                return Err(win32(ERROR_DIR_NOT_EMPTY));
            }
        }
        Ok(())
    }

    fn set_file_size(
        &self,
        h: &Handle,
        new_size: u64,
        set_allocation_size: bool,
        file_info: &mut FileInfo,
    ) -> Result<()> {
        // A size change of an atomic file happens in its stage; an
        // allocation change needs none.
        let file = if h.policy.write == WriteStrategy::Atomic && h.writable && !set_allocation_size
        {
            self.stage(h, new_size > 0)?
        } else {
            h.io_file()
        };
        if set_allocation_size {
            platform::set_allocation(&file, new_size)?;
            h.state.reserved(new_size);
        } else {
            file.set_len(new_size)?;
            h.state.touched();
        }
        info_of(h, file_info)?;
        Ok(())
    }

    fn read(&self, h: &Handle, buffer: &mut [u8], offset: u64) -> Result<u32> {
        let n = h.io_file().seek_read(buffer, offset)?;
        if n == 0 && !buffer.is_empty() {
            return Err(FspError::NTSTATUS(STATUS_END_OF_FILE));
        }
        Ok(n as u32)
    }

    fn write(
        &self,
        h: &Handle,
        buffer: &[u8],
        offset: u64,
        write_to_eof: bool,
        constrained_io: bool,
        file_info: &mut FileInfo,
    ) -> Result<u32> {
        let staged = h.policy.write == WriteStrategy::Atomic && h.writable;
        let file = if staged {
            self.stage(h, true)?
        } else {
            h.io_file()
        };
        let size = file.metadata()?.len();
        let offset = if write_to_eof { size } else { offset };
        let mut data = buffer;
        if constrained_io {
            // Paging IO never extends the file.
            if offset >= size {
                info_of(h, file_info)?;
                return Ok(0);
            }
            data = &data[..data.len().min((size - offset) as usize)];
        }
        let end = offset + data.len() as u64;
        if let Some(to) = h.state.reserve_to(&h.policy, end)
            && platform::preallocate(&file, 0, to).unwrap_or(false)
        {
            h.state.reserved(to);
        }
        match (&h.direct, staged) {
            (Some(d), false) => d.write_at(data, offset)?,
            _ => {
                let mut done = 0;
                while done < data.len() {
                    done += file.seek_write(&data[done..], offset + done as u64)?;
                }
            }
        }
        h.state.wrote(&h.policy, &file, staged)?;
        if matches!(
            plan::after_write(&h.policy, staged),
            AfterWrite::Schedule(..)
        ) {
            self.flusher.1.notify_one();
        }
        info_of(h, file_info)?;
        Ok(data.len() as u32)
    }

    fn get_volume_info(&self, out_volume_info: &mut VolumeInfo) -> Result<()> {
        let (total, free) = platform::disk_space(&self.root)?;
        out_volume_info.total_size = total;
        out_volume_info.free_size = free;
        out_volume_info.set_volume_label("durafs");
        Ok(())
    }

    fn dispatcher_stopped(&self, _normally: bool) {
        *self.flusher.0.lock().expect("flusher poisoned") = true;
        self.flusher.1.notify_all();
    }
}

/// A running durafs volume.
pub struct Mounted {
    host: FileSystemHost<Volume>,
    fs: Arc<WinFs>,
}

impl Mounted {
    /// Stops the dispatcher, unmounts, then commits every stage still
    /// pending and does every pending interval sync (errors are logged).
    pub fn unmount(mut self) {
        self.host.stop();
        self.host.unmount();
        self.fs.shutdown();
    }
}

impl WinFs {
    fn shutdown(&self) {
        for s in self.all_files() {
            if let Err(e) = s.shutdown() {
                tracing::error!("at unmount, {}: {e}", s.path().display());
            }
        }
        *self.flusher.0.lock().expect("flusher poisoned") = true;
        self.flusher.1.notify_all();
    }
}

/// Mounts `backing` at `mountpoint` (a drive letter such as `X:` or an
/// empty directory's path) under `policy`.
pub fn mount(backing: &Path, mountpoint: &str, policy: Policy) -> io::Result<Mounted> {
    let backing = std::fs::canonicalize(backing)?;
    if !backing.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", backing.display()),
        ));
    }
    ::winfsp::winfsp_init().map_err(|e| {
        io::Error::other(format!(
            "WinFsp is not installed or cannot be loaded ({e:?}): install it from https://winfsp.dev"
        ))
    })?;
    let mut params = VolumeParams::new();
    params
        .sector_size(4096)
        .sectors_per_allocation_unit(1)
        .max_component_length(255)
        .file_info_timeout(1000)
        .case_sensitive_search(false)
        .case_preserved_names(true)
        .unicode_on_disk(true)
        .persistent_acls(true)
        // Every cleanup is seen: the last one of a file's writable opens
        // commits, syncs, releases preallocation.
        .post_cleanup_when_modified_only(false)
        .flush_and_purge_on_cleanup(true)
        .filesystem_name("durafs");
    let fs = WinFs::new(backing, policy);
    let volume = Volume(fs.clone());
    let mut host =
        FileSystemHost::new_with_options(FileSystemParams::default_params(params), volume)
            .map_err(|e| io::Error::other(format!("creating the WinFsp volume: {e:?}")))?;
    host.mount(mountpoint)
        .map_err(|e| io::Error::other(format!("mounting at {mountpoint}: {e:?}")))?;
    host.start()
        .map_err(|e| io::Error::other(format!("starting the WinFsp dispatcher: {e:?}")))?;
    Ok(Mounted { host, fs })
}
