//! Directory streams: opendir, readdir, readdirplus, releasedir, fsyncdir.
//!
//! A stream keeps the backing directory fd and the entries read from it but
//! not yet given to the kernel; the offset the kernel passes back is the
//! backing filesystem's own `d_off` cookie, so a seek (telldir/seekdir, or a
//! reply that did not fit) resumes exactly where the backing stream would.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::Mutex;

use super::handle::{DirHandle, DirStream};
use super::{Caller, Entry, PassthroughFs};
use crate::platform;

/// One entry handed to the frontend's reply buffer.
pub struct DirItem<'a> {
    /// the name, raw bytes
    pub name: &'a [u8],
    /// the cookie that resumes after this entry
    pub offset: u64,
    /// DT_* type
    pub kind: u8,
    /// the node id shown as d_ino
    pub ino: u64,
    /// for readdirplus, the looked-up entry (None for "." and "..", which the
    /// kernel never links)
    pub entry: Option<Entry>,
}

fn is_dot_or_dotdot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

impl PassthroughFs {
    /// Opens directory `ino` for reading, as the caller.
    pub fn opendir(&self, caller: &Caller, ino: u64, flags: i32) -> io::Result<u64> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        let fd = {
            let _creds = self.as_caller(caller)?;
            platform::reopen(
                inode_fd.as_fd(),
                (flags & platform::O_NOATIME) | libc::O_RDONLY | libc::O_DIRECTORY,
            )?
        };
        Ok(self.handles.insert_dir(DirHandle {
            inode,
            stream: Mutex::new(DirStream {
                fd,
                cursor: 0,
                pending: VecDeque::new(),
            }),
        }))
    }

    /// Feeds entries from `offset` on to `add` until it says the reply is
    /// full (returns true) or the directory ends. With `plus`, each entry
    /// (but "." and "..") is looked up and carries a lookup reference, which
    /// is given back if `add` refuses it.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirItem<'_>) -> bool,
    ) -> io::Result<()> {
        let dh = self.handles.dir(fh)?;
        let mut s = dh.stream.lock().expect("dir stream poisoned");
        if offset != s.cursor {
            platform::lseek(s.fd.as_fd(), offset as i64, libc::SEEK_SET)?;
            s.pending.clear();
            s.cursor = offset;
        }
        let mut buf = Vec::new();
        loop {
            if s.pending.is_empty() {
                if buf.is_empty() {
                    buf.resize(32 * 1024, 0);
                }
                let batch = platform::getdents(s.fd.as_fd(), &mut buf)?;
                if batch.is_empty() {
                    return Ok(());
                }
                s.pending.extend(batch);
            }
            let e = s.pending.pop_front().expect("not empty");
            if self.engine.is_hidden(&e.name) {
                s.cursor = e.offset;
                continue;
            }
            let entry = if plus && !is_dot_or_dotdot(&e.name) {
                match self.lookup_in(s.fd.as_fd(), &e.name) {
                    Ok(entry) => Some(entry),
                    // Gone since getdents: skip it, as a fresh stream would.
                    Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                        s.cursor = e.offset;
                        continue;
                    }
                    Err(err) => return Err(err),
                }
            } else {
                None
            };
            let ino = match &entry {
                Some(en) => en.ino,
                None if e.name == b"." => dh.inode.id,
                None => self.inodes.dirent_ino(e.ino),
            };
            let looked_up = entry.as_ref().map(|en| en.ino);
            let full = add(DirItem {
                name: &e.name,
                offset: e.offset,
                kind: e.kind,
                ino,
                entry,
            });
            if full {
                if let Some(id) = looked_up {
                    self.inodes.forget(id, 1);
                }
                s.pending.push_front(e);
                return Ok(());
            }
            s.cursor = e.offset;
        }
    }

    /// Looks `name` up in the directory open as `dir` (the stream's own fd,
    /// so a handle-held directory is not reopened per entry).
    fn lookup_in(&self, dir: std::os::fd::BorrowedFd<'_>, name: &[u8]) -> io::Result<Entry> {
        let cname = std::ffi::CString::new(name).map_err(|_| super::errno(libc::EINVAL))?;
        let st = platform::stat_at(dir, &cname)?;
        if let Some(inode) = self.inodes.ref_existing(&st) {
            return Ok(self.entry_of(&inode, st));
        }
        let fd = platform::open_path_at(dir, &cname)?;
        self.entry_from_path_fd(fd)
    }

    /// Closes a directory stream.
    pub fn releasedir(&self, fh: u64) {
        self.handles.remove_dir(fh);
    }

    /// fsync of a directory: a real fsync of the backing directory, always.
    pub fn fsyncdir(&self, fh: u64, datasync: bool) -> io::Result<()> {
        let dh = self.handles.dir(fh)?;
        let s = dh.stream.lock().expect("dir stream poisoned");
        self.engine.fsync_dir(s.fd.as_fd(), datasync)
    }
}
