//! Open files: open, create, read, write, flush, release, fsync, fallocate,
//! lseek and copy_file_range. Writes and syncs go through the engine.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::handle::FileHandle;
use super::{Caller, Entry, PassthroughFs, errno};
use crate::engine::{KernelIo, Repoint};
use crate::platform::{self, cstring};
use crate::policy::{FilePolicy, SyncTrigger, WriteStrategy};

/// An open file handle as returned by open and create.
pub struct Opened {
    /// the `fh` number the kernel passes back
    pub fh: u64,
    /// the handle itself (its backing fd can be given to the kernel for
    /// FUSE passthrough)
    pub handle: Arc<FileHandle>,
    /// how the kernel must treat the open
    pub kernel: KernelIo,
}

/// Where a read's bytes go: the frontend's reply.
pub type ReadTarget<'a> = &'a mut dyn FnMut(&[u8]);

/// Open flags for the backing fd: creation flags are the kernel's business
/// (it sends them to create, not open), and O_DIRECT is the engine's choice,
/// not the app's (FUSE hands the daemon unaligned buffers).
fn backing_flags(flags: i32) -> i32 {
    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | platform::O_DIRECT)
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl PassthroughFs {
    fn register_open(
        &self,
        caller: &Caller,
        inode: Arc<super::Inode>,
        fd: std::os::fd::OwnedFd,
        flags: i32,
        policy: (FilePolicy, Vec<u8>),
    ) -> io::Result<Opened> {
        let writer =
            self.engine
                .open_writer(inode.id, policy.0, policy.1, flags, fd.as_fd(), || {
                    super::tgid(caller.pid)
                })?;
        let kernel = self.engine.kernel_io(&writer);
        let (fh, handle) = self.handles.insert_file(FileHandle {
            inode,
            fd,
            flags,
            writer,
        });
        Ok(Opened { fh, handle, kernel })
    }

    /// Points a node at the new backing inode an atomic replace committed.
    fn apply(&self, r: Option<Repoint>) {
        if let Some(r) = r {
            self.inodes.repoint(r.node, r.fd, &r.stat);
        }
    }

    /// Opens `ino` with the app's flags, as the caller.
    pub fn open(&self, caller: &Caller, ino: u64, flags: i32) -> io::Result<Opened> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.named_fd()?;
        if inode.is_dir() && flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(errno(libc::EISDIR));
        }
        let policy = self.engine.resolve(|| self.rel_path(inode_fd.as_fd()));
        self.engine.check_open(&policy.1)?;
        let flags = backing_flags(flags);
        if flags & libc::O_TRUNC != 0
            && flags & libc::O_ACCMODE == libc::O_RDONLY
            && self.executing(inode_fd.as_fd())
        {
            // The kernel checks ETXTBSY for a read-only O_TRUNC open only
            // after the OPEN (FUSE_ATOMIC_O_TRUNC) has truncated: refuse
            // here, before the truncation kills the running program.
            return Err(errno(libc::ETXTBSY));
        }
        let open_flags = self.engine.backing_flags(&policy.0, flags);
        if open_flags & libc::O_TRUNC != 0 {
            self.engine.before_truncating_open(inode_fd.as_fd())?;
        }
        let fd = {
            let _creds = self.as_caller(caller)?;
            platform::reopen(inode_fd.as_fd(), open_flags)?
        };
        self.register_open(caller, inode, fd, flags, policy)
    }

    /// Whether some process runs the file behind `fd` as its program
    /// (`/proc/PID/exe` names it under the mount point). A write open of
    /// such a file fails with ETXTBSY in the kernel before the daemon hears
    /// of it; a read-only O_TRUNC open is checked only after the OPEN, so
    /// the daemon checks it itself. Scans /proc: read-only O_TRUNC opens
    /// are rare.
    fn executing(&self, fd: BorrowedFd<'_>) -> bool {
        let Some(mnt) = &self.opts.mountpoint else {
            return false;
        };
        let rel = self.rel_path(fd);
        let mut want = mnt.as_os_str().as_bytes().to_vec();
        if !rel.is_empty() {
            want.push(b'/');
            want.extend_from_slice(&rel);
        }
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return false;
        };
        procs.flatten().any(|e| {
            let name = e.file_name();
            name.as_bytes().iter().all(u8::is_ascii_digit)
                && std::fs::read_link(e.path().join("exe"))
                    .is_ok_and(|exe| exe.as_os_str().as_bytes() == want.as_slice())
        })
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
        self.refuse_hidden(name)?;
        let cname = cstring(name)?;
        let policy = self
            .engine
            .resolve(|| self.child_path(dir_fd.as_fd(), name));
        self.engine.check_open(&policy.1)?;
        let flags = backing_flags(flags);
        let open_flags = self.engine.backing_flags(&policy.0, flags);
        // A new file is a directory change (dir-sync, the crash simulator);
        // opening one that exists is not. O_EXCL first tells them apart.
        let mut fd = None;
        for _ in 0..3 {
            let made = self.make_entry(caller, dir_fd.as_fd(), name, &cname, |dir, n| {
                platform::open_at(dir, n, open_flags | libc::O_CREAT | libc::O_EXCL, mode)
            });
            match made {
                Ok(f) => {
                    fd = Some(f);
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                    let existing = {
                        let _creds = self.as_caller(caller)?;
                        platform::open_at(dir_fd.as_fd(), &cname, open_flags & !libc::O_TRUNC, 0)
                    };
                    match existing {
                        Ok(f) => {
                            if open_flags & libc::O_TRUNC != 0 {
                                self.engine.before_truncating_open(f.as_fd())?;
                                platform::ftruncate(f.as_fd(), 0)?;
                            }
                            fd = Some(f);
                            break;
                        }
                        // Removed in between: try to create it again.
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let fd = fd.ok_or_else(|| errno(libc::EAGAIN))?;
        let st = platform::stat_fd(fd.as_fd())?;
        let inode = match self.inodes.ref_existing(&st) {
            Some(i) => i,
            None => {
                let path_fd = platform::reopen(fd.as_fd(), platform::O_PATH)?;
                self.inodes.insert(path_fd, &st)
            }
        };
        let entry = self.entry_of(&inode, st);
        Ok((entry, self.register_open(caller, inode, fd, flags, policy)?))
    }

    /// Reads up to `size` bytes at `offset` and hands them to `out`.
    pub fn read(&self, fh: u64, offset: u64, size: u32, out: ReadTarget<'_>) -> io::Result<()> {
        let h = self.handles.file(fh)?;
        READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let n = self
                .engine
                .read(&h.writer, h.fd(), &mut buf[..size as usize], offset)?;
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

    /// close(2) of one descriptor of the open file (FUSE FLUSH) by `caller`.
    pub fn flush(&self, caller: &Caller, fh: u64) -> io::Result<()> {
        let h = self.handles.file(fh)?;
        let r = self
            .engine
            .flush(&h.writer, h.fd(), || super::tgid(caller.pid))?;
        self.apply(r);
        Ok(())
    }

    /// The last close of the open file; returns the handle so the frontend
    /// can drop what it attached to it.
    pub fn release(&self, fh: u64) -> Option<Arc<FileHandle>> {
        let h = self.handles.remove_file(fh)?;
        let r = self.engine.release(&h.writer, h.fd());
        self.apply(r);
        Some(h)
    }

    /// fsync/fdatasync of an open file.
    pub fn fsync(&self, fh: u64, datasync: bool) -> io::Result<()> {
        let h = self.handles.file(fh)?;
        let r = self.engine.fsync(&h.writer, h.fd(), datasync)?;
        self.apply(r);
        Ok(())
    }

    /// fallocate with any mode the backing filesystem supports.
    pub fn fallocate(&self, fh: u64, mode: i32, offset: u64, len: u64) -> io::Result<()> {
        let h = self.handles.file(fh)?;
        let fd = self.engine.io_fd(&h.writer, h.fd());
        let shifts = platform::FALLOC_FL_COLLAPSE_RANGE | platform::FALLOC_FL_INSERT_RANGE;
        if mode & shifts != 0 {
            self.engine
                .before_modify(fd.as_fd(), offset, u64::MAX / 2)?;
        } else if mode & (platform::FALLOC_FL_PUNCH_HOLE | platform::FALLOC_FL_ZERO_RANGE) != 0 {
            self.engine.before_modify(fd.as_fd(), offset, len)?;
        } else {
            // Allocation changes no bytes, but may grow the file: the crash
            // simulator must know the size before it (a change of zero
            // bytes registers it).
            self.engine.before_modify(fd.as_fd(), offset, 0)?;
        }
        platform::fallocate(fd.as_fd(), mode, offset, len)
    }

    /// lseek, for SEEK_DATA and SEEK_HOLE (the kernel does the others).
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> io::Result<i64> {
        let h = self.handles.file(fh)?;
        platform::lseek(self.engine.io_fd(&h.writer, h.fd()).as_fd(), offset, whence)
    }

    /// copy_file_range between two open files of this mount. Into a file
    /// whose writes the engine must see one by one, it answers EXDEV so the
    /// kernel copies through read and write.
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
        let k = self.engine.kernel_io(&ho.writer);
        if k.flush || k.direct_io || ho.writer.policy.write != WriteStrategy::Passthrough {
            return Err(errno(libc::EXDEV));
        }
        if ho.writer.policy.sync != SyncTrigger::OnFsync
            && ho.writer.policy.sync != SyncTrigger::Never
        {
            return Err(errno(libc::EXDEV));
        }
        let src = self.engine.io_fd(&hi.writer, hi.fd());
        self.engine.before_modify(ho.fd(), off_out, len)?;
        platform::copy_file_range(src.as_fd(), off_in, ho.fd(), off_out, len as usize, flags)
    }
}

/// Clears S_ISUID, and S_ISGID where group-execute is set, as the kernel
/// does for a write by a process without CAP_FSETID.
fn clear_setid_bits(h: &FileHandle) -> io::Result<()> {
    let st = platform::stat_fd(h.fd())?;
    let mut mode = platform::mode_of(&st) & 0o7777;
    let before = mode;
    mode &= !platform::file_type::S_ISUID;
    if mode & platform::file_type::S_IXGRP != 0 {
        mode &= !platform::file_type::S_ISGID;
    }
    if mode != before {
        platform::chmod_fd(h.fd(), mode)?;
    }
    Ok(())
}
