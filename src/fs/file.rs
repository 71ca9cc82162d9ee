//! Open files: open, create, read, write, flush, release, fsync, fallocate,
//! lseek and copy_file_range. Writes and syncs go through the engine.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::handle::FileHandle;
use super::{Caller, Entry, PassthroughFs, errno};
use crate::platform::{self, cstring};

/// An open file handle as returned by open and create.
pub struct Opened {
    /// the `fh` number the kernel passes back
    pub fh: u64,
    /// the handle itself (its backing fd can be given to the kernel for
    /// FUSE passthrough)
    pub handle: Arc<FileHandle>,
    /// whether the engine must see this open's IO
    pub intercept: bool,
    /// whether the engine must see each close(2) (FUSE FLUSH)
    pub flush: bool,
}

/// Where a read's bytes go: the frontend's reply.
pub type ReadTarget<'a> = &'a mut dyn FnMut(&[u8]);

/// Open flags for the backing fd: creation flags are the kernel's business
/// (it sends them to create, not open), and O_DIRECT is the engine's choice,
/// not the app's (FUSE hands the daemon unaligned buffers).
fn backing_flags(flags: i32) -> i32 {
    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_DIRECT)
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl PassthroughFs {
    fn register_open(
        &self,
        inode: Arc<super::Inode>,
        fd: std::os::fd::OwnedFd,
        flags: i32,
    ) -> Opened {
        let writer = self.engine.open_writer(flags, || self.rel_path(fd.as_fd()));
        let intercept = self.engine.intercepts_io(&writer);
        let flush = self.engine.needs_flush(&writer);
        let (fh, handle) = self.handles.insert_file(FileHandle {
            inode,
            fd,
            flags,
            writer,
        });
        Opened {
            fh,
            handle,
            intercept,
            flush,
        }
    }

    /// Opens `ino` with the app's flags, as the caller.
    pub fn open(&self, caller: &Caller, ino: u64, flags: i32) -> io::Result<Opened> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        if inode.is_dir() && flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(errno(libc::EISDIR));
        }
        let flags = backing_flags(flags);
        let fd = {
            let _creds = self.as_caller(caller)?;
            platform::reopen(inode_fd.as_fd(), flags)?
        };
        Ok(self.register_open(inode, fd, flags))
    }

    /// Creates (or, without O_EXCL, opens) `name` in `parent` and opens it.
    pub fn create(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> io::Result<(Entry, Opened)> {
        let dir = self.inodes.get(parent)?;
        let dir_fd = dir.fd()?;
        let cname = cstring(name)?;
        let flags = backing_flags(flags);
        let fd = {
            let _creds = self.as_caller(caller)?;
            platform::open_at(dir_fd.as_fd(), &cname, flags | libc::O_CREAT, mode)?
        };
        let st = platform::stat_fd(fd.as_fd())?;
        let inode = match self.inodes.ref_existing(&st) {
            Some(i) => i,
            None => {
                let path_fd = platform::reopen(fd.as_fd(), libc::O_PATH)?;
                self.inodes.insert(path_fd, &st)
            }
        };
        self.engine.dirs_changed(&[dir_fd.as_fd()])?;
        let entry = self.entry_of(&inode, st);
        Ok((entry, self.register_open(inode, fd, flags)))
    }

    /// Reads up to `size` bytes at `offset` and hands them to `out`.
    pub fn read(&self, fh: u64, offset: u64, size: u32, out: ReadTarget<'_>) -> io::Result<()> {
        let h = self.handles.file(fh)?;
        READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let n = platform::pread(h.fd(), &mut buf[..size as usize], offset)?;
            out(&buf[..n]);
            Ok(())
        })
    }

    /// Writes `data` at `offset` through the engine. `kill_suidgid` is the
    /// kernel asking the daemon to clear set-id bits as a write by an
    /// unprivileged process would.
    pub fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_suidgid: bool,
    ) -> io::Result<usize> {
        let h = self.handles.file(fh)?;
        let n = self.engine.write(&h.writer, h.fd(), data, offset)?;
        if kill_suidgid {
            clear_setid_bits(&h)?;
        }
        Ok(n)
    }

    /// close(2) of one descriptor of the open file (FUSE FLUSH).
    pub fn flush(&self, fh: u64) -> io::Result<()> {
        let h = self.handles.file(fh)?;
        self.engine.flush(&h.writer, h.fd())
    }

    /// The last close of the open file; returns the handle so the frontend
    /// can drop what it attached to it.
    pub fn release(&self, fh: u64) -> Option<Arc<FileHandle>> {
        self.handles.remove_file(fh)
    }

    /// fsync/fdatasync of an open file.
    pub fn fsync(&self, fh: u64, datasync: bool) -> io::Result<()> {
        let h = self.handles.file(fh)?;
        self.engine.fsync(&h.writer, h.fd(), datasync)
    }

    /// fallocate with any mode the backing filesystem supports.
    pub fn fallocate(&self, fh: u64, mode: i32, offset: u64, len: u64) -> io::Result<()> {
        let h = self.handles.file(fh)?;
        platform::fallocate(h.fd(), mode, offset, len)
    }

    /// lseek, for SEEK_DATA and SEEK_HOLE (the kernel does the others).
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> io::Result<i64> {
        let h = self.handles.file(fh)?;
        platform::lseek(h.fd(), offset, whence)
    }

    /// copy_file_range between two open files of this mount.
    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        flags: u32,
    ) -> io::Result<usize> {
        let hi = self.handles.file(fh_in)?;
        let ho = self.handles.file(fh_out)?;
        platform::copy_file_range(hi.fd(), off_in, ho.fd(), off_out, len as usize, flags)
    }
}

/// Clears S_ISUID, and S_ISGID where group-execute is set, as the kernel
/// does for a write by a process without CAP_FSETID.
fn clear_setid_bits(h: &FileHandle) -> io::Result<()> {
    let st = platform::stat_fd(h.fd())?;
    let mut mode = st.st_mode & 0o7777;
    let before = mode;
    mode &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    if mode != before {
        platform::chmod_fd(h.fd(), mode)?;
    }
    Ok(())
}
