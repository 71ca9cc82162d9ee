//! Names and attributes: lookup, getattr/setattr, the calls that create or
//! remove directory entries, statfs and access.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::{Caller, Entry, PassthroughFs, errno};
use crate::engine::Change;
use crate::platform::{self, Stat, StatVfs, TimeSpec, cstring};

/// Says once, loudly, that the daemon ran out of file descriptors: every
/// inode the kernel holds costs one, and the app now sees EMFILE.
pub(crate) fn warn_if_out_of_fds(e: &io::Error) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if e.raw_os_error() == Some(libc::EMFILE) {
        WARNED.call_once(|| {
            tracing::error!(
                "out of file descriptors: lookups now fail with EMFILE; raise the daemon's \
                 RLIMIT_NOFILE hard limit (LimitNOFILE= in systemd, ulimit -Hn)"
            )
        });
    }
}

/// The attribute changes of one setattr request; `None` leaves a field alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    /// new permission bits
    pub mode: Option<u32>,
    /// new owner
    pub uid: Option<u32>,
    /// new group
    pub gid: Option<u32>,
    /// new size
    pub size: Option<u64>,
    /// new access time
    pub atime: Option<TimeSpec>,
    /// new modification time
    pub mtime: Option<TimeSpec>,
}

impl PassthroughFs {
    /// Looks `name` up in directory `parent` and takes a lookup reference.
    pub fn lookup(&self, caller: &Caller, parent: u64, name: &OsStr) -> io::Result<Entry> {
        let dir = self.inodes.get(parent)?;
        let dir_fd = dir.fd()?;
        if self.engine.is_hidden(name.as_encoded_bytes()) {
            return Err(errno(libc::ENOENT));
        }
        let cname = cstring(name)?;
        let _creds = if self.checks_permissions() {
            Some(self.as_caller(caller)?)
        } else {
            None
        };
        // A known inode needs no new O_PATH fd: the stat alone finds it.
        let st = platform::stat_at(dir_fd.as_fd(), &cname)?;
        if let Some(inode) = self.inodes.ref_existing(&st) {
            return Ok(self.entry_of(&inode, st));
        }
        let fd = platform::open_path_at(dir_fd.as_fd(), &cname).inspect_err(warn_if_out_of_fds)?;
        self.entry_from_path_fd(fd)
    }

    /// Drops `n` lookup references on `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// The attributes of `ino` (through the open handle when one is given).
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> io::Result<Stat> {
        if let Some(st) = self.engine.staged_stat(ino) {
            return Ok(st);
        }
        if let Some(fh) = fh
            && let Ok(h) = self.handles.file(fh)
        {
            return platform::stat_fd(h.fd());
        }
        platform::stat_fd(self.inodes.get(ino)?.fd()?.as_fd())
    }

    /// Changes attributes, in the order chmod, chown, truncate, utimens, as
    /// the caller (so the backing store applies its own permission rules and
    /// clears set-id bits where it would).
    pub fn setattr(
        &self,
        caller: &Caller,
        ino: u64,
        fh: Option<u64>,
        set: SetAttr,
    ) -> io::Result<Stat> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        let handle = fh.and_then(|fh| self.handles.file(fh).ok());
        let _creds = self.as_caller(caller)?;
        if let Some(mode) = set.mode {
            platform::chmod_fd(inode_fd.as_fd(), mode & 0o7777)?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            platform::chown_fd(
                inode_fd.as_fd(),
                set.uid.unwrap_or(u32::MAX),
                set.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(size) = set.size {
            let writer = handle.as_ref().filter(|h| h.writable());
            let fd = writer.map_or(inode_fd.as_fd(), |h| h.fd());
            if !self
                .engine
                .truncate(ino, writer.map(|h| &h.writer), fd, size)?
            {
                match writer {
                    Some(h) => platform::ftruncate(h.fd(), size)?,
                    None => platform::truncate_fd(inode_fd.as_fd(), size)?,
                }
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let a = set.atime.unwrap_or(TimeSpec::Omit);
            let m = set.mtime.unwrap_or(TimeSpec::Omit);
            match &handle {
                Some(h) => platform::futimens(h.fd(), a, m)?,
                None => platform::utimens_fd(inode_fd.as_fd(), a, m)?,
            }
        }
        match self.engine.staged_stat(ino) {
            Some(st) => Ok(st),
            None => platform::stat_fd(inode_fd.as_fd()),
        }
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> io::Result<Vec<u8>> {
        platform::readlink_fd(self.inodes.get(ino)?.fd()?.as_fd())
    }

    /// Runs `make` (which creates `name` in `parent`) as the caller, then
    /// looks the new entry up and tells the engine the directory changed.
    fn create_entry(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        make: impl FnOnce(BorrowedFd<'_>, &std::ffi::CStr) -> io::Result<()>,
    ) -> io::Result<Entry> {
        let dir = self.inodes.get(parent)?;
        let dir_fd = dir.fd()?;
        self.refuse_hidden(name)?;
        let cname = cstring(name)?;
        self.make_entry(caller, dir_fd.as_fd(), name, &cname, make)?;
        let fd = platform::open_path_at(dir_fd.as_fd(), &cname)?;
        self.entry_from_path_fd(fd)
    }

    /// mknod: regular files, fifos, sockets, and (as root) device nodes.
    pub fn mknod(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> io::Result<Entry> {
        self.create_entry(caller, parent, name, |dir, n| {
            platform::mknod_at(dir, n, mode, rdev as u64)
        })
    }

    /// mkdir.
    pub fn mkdir(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> io::Result<Entry> {
        self.create_entry(caller, parent, name, |dir, n| {
            platform::mkdir_at(dir, n, mode)
        })
    }

    /// symlink `name` -> `target` in `parent`.
    pub fn symlink(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        target: &Path,
    ) -> io::Result<Entry> {
        let ctarget = cstring(target.as_os_str())?;
        self.create_entry(caller, parent, name, |dir, n| {
            platform::symlink_at(&ctarget, dir, n)
        })
    }

    /// A new hard link `newparent/newname` to `ino`.
    pub fn link(
        &self,
        caller: &Caller,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> io::Result<Entry> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        let dir = self.inodes.get(newparent)?;
        let dir_fd = dir.fd()?;
        self.refuse_hidden(newname)?;
        let cname = cstring(newname)?;
        self.make_entry(caller, dir_fd.as_fd(), newname, &cname, |dir, n| {
            platform::link_fd(inode_fd.as_fd(), dir, n)
        })?;
        let st = platform::stat_fd(inode_fd.as_fd())?;
        let entry = match self.inodes.ref_existing(&st) {
            Some(i) => self.entry_of(&i, st),
            None => self.entry_from_path_fd(platform::open_path_at(dir_fd.as_fd(), &cname)?)?,
        };
        Ok(entry)
    }

    /// unlink (`dir` false) or rmdir (`dir` true).
    pub fn remove(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        is_dir: bool,
    ) -> io::Result<()> {
        let dir = self.inodes.get(parent)?;
        let dir_fd = dir.fd()?;
        if self.engine.is_hidden(name.as_encoded_bytes()) {
            return Err(errno(libc::ENOENT));
        }
        let cname = cstring(name)?;
        self.engine.change(
            Change::Remove {
                dir: dir_fd.as_fd(),
                name: &cname,
            },
            || self.child_path(dir_fd.as_fd(), name),
            || {
                let _creds = self.as_caller(caller)?;
                platform::unlink_at(dir_fd.as_fd(), &cname, is_dir)
            },
        )
    }

    /// rename with renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE).
    pub fn rename(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        let from = self.inodes.get(parent)?;
        let from_fd = from.fd()?;
        let to = self.inodes.get(newparent)?;
        let to_fd = to.fd()?;
        if self.engine.is_hidden(name.as_encoded_bytes()) {
            return Err(errno(libc::ENOENT));
        }
        self.refuse_hidden(newname)?;
        let (cname, cnew) = (cstring(name)?, cstring(newname)?);
        self.engine.change(
            Change::Rename {
                from: from_fd.as_fd(),
                from_name: &cname,
                to: to_fd.as_fd(),
                to_name: &cnew,
                flags,
            },
            || self.child_path(to_fd.as_fd(), newname),
            || {
                let _creds = self.as_caller(caller)?;
                platform::rename_at(from_fd.as_fd(), &cname, to_fd.as_fd(), &cnew, flags)
            },
        )?;
        if self.inodes.any_by_handle() {
            self.note_moves(from_fd.as_fd(), &cname, to_fd.as_fd(), &cnew, flags);
        }
        Ok(())
    }

    /// Tells the inode table where a rename put the handle-held files it
    /// moved (see `Inode::named_fd`): the one now at the new name, and under
    /// RENAME_EXCHANGE the one now at the old name; a directory's files
    /// move with it (not under RENAME_EXCHANGE: their paths are then
    /// checked, and found stale, at their next use).
    fn note_moves(
        &self,
        from: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        to: BorrowedFd<'_>,
        newname: &std::ffi::CStr,
        flags: u32,
    ) {
        let (Ok(fp), Ok(tp)) = (platform::fd_path(from), platform::fd_path(to)) else {
            return;
        };
        let join = |d: &[u8], n: &std::ffi::CStr| [d, b"/", n.to_bytes()].concat();
        let (old, new) = (join(&fp, name), join(&tp, newname));
        if let Ok(st) = platform::stat_at(to, newname) {
            if !platform::is_dir(&st) {
                self.inodes.file_moved(&st, &new);
            } else if flags & platform::RENAME_EXCHANGE == 0 {
                self.inodes.dir_moved(&old, &new);
            }
        }
        if flags & platform::RENAME_EXCHANGE != 0
            && let Ok(st) = platform::stat_at(from, name)
            && !platform::is_dir(&st)
        {
            self.inodes.file_moved(&st, &old);
        }
    }

    /// Runs `make`, which makes `name` (`cname`) in the directory behind
    /// `dir`, as the caller: a directory change the engine tracks (crash
    /// simulation) and syncs (`dir-sync`).
    pub(crate) fn make_entry<R>(
        &self,
        caller: &Caller,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        cname: &std::ffi::CStr,
        make: impl FnOnce(BorrowedFd<'_>, &std::ffi::CStr) -> io::Result<R>,
    ) -> io::Result<R> {
        self.engine.change(
            Change::Create { dir, name: cname },
            || self.child_path(dir, name),
            || {
                let _creds = self.as_caller(caller)?;
                make(dir, cname)
            },
        )
    }

    /// EPERM for a name the engine reserves (its stages and graveyard).
    pub(crate) fn refuse_hidden(&self, name: &OsStr) -> io::Result<()> {
        if self.engine.is_hidden(name.as_encoded_bytes()) {
            return Err(errno(libc::EPERM));
        }
        Ok(())
    }

    /// The mount-relative path of `name` in the directory behind `dir`.
    pub(crate) fn child_path(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Vec<u8> {
        let mut p = self.rel_path(dir);
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name.as_encoded_bytes());
        p
    }

    /// statfs of the backing filesystem holding `ino`.
    pub fn statfs(&self, ino: u64) -> io::Result<StatVfs> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        platform::statvfs_fd(inode_fd.as_fd())
    }

    /// access(2) as the caller.
    pub fn access(&self, caller: &Caller, ino: u64, mask: i32) -> io::Result<()> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        let _creds = self.as_caller(caller)?;
        if mask == libc::F_OK {
            return platform::stat_fd(inode_fd.as_fd()).map(drop);
        }
        platform::access_fd(inode_fd.as_fd(), mask)
    }
}
