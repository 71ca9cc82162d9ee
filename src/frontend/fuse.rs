//! The `fuser` adapter (Linux FUSE; macFUSE on macOS, the same code).
//!
//! Besides translating requests, this module decides each open's kernel IO
//! mode. Linux (6.9+) can hand an open's reads and writes straight to the
//! backing file (FUSE passthrough) so the daemon costs nothing on the data
//! path; the engine says whether an open may skip the daemon. The kernel
//! refuses to mix modes on one inode: while any open of an inode is in
//! passthrough mode, every other open of it must be too (with the same
//! backing file), and a passthrough open is refused while cached opens
//! exist. `IoModes` keeps that bookkeeping: an open that must be seen by the
//! daemon on an inode already in passthrough mode is opened
//! `FOPEN_PASSTHROUGH | FOPEN_DIRECT_IO`, which sends its reads and writes
//! to the daemon while mmap uses the backing file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno, FileAttr, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, info, warn};

use crate::fs::{Caller, Entry, Opened, PassthroughFs, SetAttr, XattrReply};
use crate::platform::{Stat, TimeSpec};

/// Settings of the FUSE frontend.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// how long the kernel may cache attributes (default 1s)
    pub attr_timeout: Duration,
    /// how long the kernel may cache name lookups (default 1s)
    pub entry_timeout: Duration,
    /// use kernel FUSE passthrough where the engine allows (default on)
    pub passthrough: bool,
    /// largest write request the kernel sends (default 1 MiB)
    pub max_write: u32,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            attr_timeout: Duration::from_secs(1),
            entry_timeout: Duration::from_secs(1),
            passthrough: true,
            max_write: 1 << 20,
        }
    }
}

/// What the kernel agreed to at FUSE INIT.
#[derive(Debug, Default)]
pub struct KernelInfo {
    /// negotiated protocol major.minor
    pub proto: Mutex<Option<(u32, u32)>>,
    /// kernel passthrough is live
    pub passthrough: AtomicBool,
    /// FUSE_HANDLE_KILLPRIV_V2 is live
    pub killpriv_v2: AtomicBool,
    /// the file handles of opens whose reads and writes the kernel does on
    /// the backing file itself (never seen by the daemon, so no read or
    /// write fault reaches them)
    pub bypassing: Mutex<std::collections::HashSet<u64>>,
}

/// The kernel IO mode of one open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// page-cached, every read/write miss comes to the daemon
    Cached,
    /// the kernel does IO on the backing file itself
    Passthrough,
    /// on an inode in passthrough mode, but IO comes to the daemon
    PassthroughDirect,
}

#[derive(Default)]
struct InodeIo {
    backing: Option<(Arc<BackingId>, bool)>,
    passthrough_opens: u32,
    cached_opens: u32,
}

#[derive(Default)]
struct IoModes {
    inodes: HashMap<u64, InodeIo>,
    opens: HashMap<u64, (u64, Mode)>,
}

/// The FUSE frontend over a [`PassthroughFs`].
pub struct FuseFrontend {
    fs: Arc<PassthroughFs>,
    cfg: FrontendConfig,
    kernel: Arc<KernelInfo>,
    io: Mutex<IoModes>,
    passthrough_failures: AtomicU32,
}

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn kind_of_mode(mode: u32) -> FileType {
    use crate::platform::file_type as t;
    match mode & t::S_IFMT {
        t::S_IFDIR => FileType::Directory,
        t::S_IFLNK => FileType::Symlink,
        t::S_IFIFO => FileType::NamedPipe,
        t::S_IFSOCK => FileType::Socket,
        t::S_IFCHR => FileType::CharDevice,
        t::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn kind_of_dtype(t: u8) -> FileType {
    match t {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// Backing attributes as the kernel should see them, under node id `ino`.
fn file_attr(ino: u64, st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of_mode(crate::platform::mode_of(st)),
        perm: (crate::platform::mode_of(st) & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn time_spec(t: Option<TimeOrNow>) -> Option<TimeSpec> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSpec::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => TimeSpec::At(d.as_secs() as i64, d.subsec_nanos() as i64),
            // fuser 0.18 builds a pre-epoch time (secs < 0, nsec) as
            // EPOCH - (|secs| + nsec): undo exactly that.
            Err(e) => TimeSpec::At(
                -(e.duration().as_secs() as i64),
                e.duration().subsec_nanos() as i64,
            ),
        },
    })
}

impl FuseFrontend {
    /// A frontend serving `fs`; `kernel` is filled in at FUSE INIT.
    pub fn new(fs: Arc<PassthroughFs>, cfg: FrontendConfig, kernel: Arc<KernelInfo>) -> Self {
        FuseFrontend {
            fs,
            cfg,
            kernel,
            io: Mutex::new(IoModes::default()),
            passthrough_failures: AtomicU32::new(0),
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, res: io::Result<Entry>) {
        match res {
            Ok(e) => reply.entry_with_ttls(
                &self.cfg.entry_timeout,
                &self.cfg.attr_timeout,
                &file_attr(e.ino, &e.attr),
                Generation(e.generation),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Picks the kernel IO mode for a new open of `ino` and, for passthrough,
    /// the backing id; `open_backing` registers the open's fd with the kernel.
    fn choose_mode(
        &self,
        ino: u64,
        opened: &Opened,
        open_backing: impl FnOnce() -> io::Result<BackingId>,
    ) -> (Mode, Option<Arc<BackingId>>) {
        if !self.kernel.passthrough.load(Ordering::Relaxed) {
            return (Mode::Cached, None);
        }
        let mut io = self.io.lock().expect("io modes poisoned");
        let st = io.inodes.entry(ino).or_default();
        let mode = if let Some((b, writable)) = &st.backing {
            st.passthrough_opens += 1;
            let direct = opened.kernel.intercept || (opened.handle.writable() && !writable);
            let b = b.clone();
            let mode = if direct {
                Mode::PassthroughDirect
            } else {
                Mode::Passthrough
            };
            io.opens.insert(opened.fh, (ino, mode));
            if mode == Mode::Passthrough {
                self.bypass(opened.fh, true);
            }
            return (mode, Some(b));
        } else if opened.kernel.intercept || st.cached_opens > 0 {
            Mode::Cached
        } else {
            match open_backing() {
                Ok(b) => {
                    let b = Arc::new(b);
                    st.backing = Some((b.clone(), opened.handle.writable()));
                    st.passthrough_opens += 1;
                    io.opens.insert(opened.fh, (ino, Mode::Passthrough));
                    self.bypass(opened.fh, true);
                    return (Mode::Passthrough, Some(b));
                }
                Err(e) => {
                    if self.passthrough_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                        warn!(
                            "kernel refused FUSE passthrough ({e}); such opens fall back to daemon IO"
                        );
                    }
                    if e.raw_os_error() == Some(libc::EPERM) {
                        warn!("FUSE passthrough needs CAP_SYS_ADMIN; disabled for this mount");
                        self.kernel.passthrough.store(false, Ordering::Relaxed);
                    }
                    Mode::Cached
                }
            }
        };
        st.cached_opens += 1;
        io.opens.insert(opened.fh, (ino, mode));
        (mode, None)
    }

    fn bypass(&self, fh: u64, on: bool) {
        let mut b = self.kernel.bypassing.lock().expect("kernel info poisoned");
        if on {
            b.insert(fh);
        } else {
            b.remove(&fh);
        }
    }

    fn end_open(&self, fh: u64) {
        let mut io = self.io.lock().expect("io modes poisoned");
        let Some((ino, mode)) = io.opens.remove(&fh) else {
            return;
        };
        if mode == Mode::Passthrough {
            self.bypass(fh, false);
        }
        if let Some(st) = io.inodes.get_mut(&ino) {
            match mode {
                Mode::Cached => st.cached_opens -= 1,
                Mode::Passthrough | Mode::PassthroughDirect => {
                    st.passthrough_opens -= 1;
                    if st.passthrough_opens == 0 {
                        st.backing = None;
                    }
                }
            }
            if st.passthrough_opens == 0 && st.cached_opens == 0 {
                io.inodes.remove(&ino);
            }
        }
    }
}

fn fopen_flags(mode: Mode, opened: &Opened) -> FopenFlags {
    let mut f = match mode {
        Mode::Cached | Mode::Passthrough => FopenFlags::empty(),
        Mode::PassthroughDirect => FopenFlags::FOPEN_DIRECT_IO,
    };
    if opened.kernel.direct_io {
        // Every write reaches the daemon as the app made it, and writes to
        // one file may run in parallel (the engine orders what must be).
        f |= FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
    }
    if !opened.kernel.flush {
        f |= FopenFlags::FOPEN_NOFLUSH;
    }
    f
}

impl Filesystem for FuseFrontend {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let abi = config.kernel_abi();
        *self.kernel.proto.lock().expect("poisoned") = Some((abi.0, abi.1));
        // Not FUSE_AUTO_INVAL_DATA: its page-cache invalidation on an mtime
        // change races with in-flight readahead, and a read right after an
        // acknowledged write then returned the previous write's data (seen
        // about once in ten runs of tests/stress.rs with passthrough=off).
        // Without it, the kernel drops a file's cache at each open instead.
        let wanted = [
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_ASYNC_DIO,
            // Shared mmap of opens the kernel does not cache (`always`,
            // `direct`, `atomic`, readers of atomic files): without it such
            // an mmap fails with ENODEV, and legacy apps that map files
            // break. Mapped pages are written back through the daemon like
            // any write, and msync reaches it as an fsync.
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ];
        for flag in wanted {
            match config.add_capabilities(flag) {
                Ok(()) => {
                    if flag == InitFlags::FUSE_HANDLE_KILLPRIV_V2 {
                        self.kernel.killpriv_v2.store(true, Ordering::Relaxed);
                    }
                }
                Err(_) => debug!("kernel lacks {flag:?}"),
            }
        }
        if let Err(max) = config.set_max_write(self.cfg.max_write) {
            let _ = config.set_max_write(max);
        }
        if self.cfg.passthrough {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.kernel.passthrough.store(ok, Ordering::Relaxed);
            if !ok {
                info!(
                    "kernel FUSE passthrough unavailable (needs Linux 6.9+); all IO goes through the daemon"
                );
            }
        }
        info!(
            "FUSE protocol {}.{}, passthrough {}",
            abi.0,
            abi.1,
            if self.kernel.passthrough.load(Ordering::Relaxed) {
                "on"
            } else {
                "off"
            }
        );
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(&caller(req), parent.0, name) {
            // A negative entry (node id 0) lets the kernel cache "no such
            // name" for the entry timeout, as it caches names that exist;
            // a create through the mount replaces it at once.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT) && !self.cfg.entry_timeout.is_zero() =>
            {
                reply.entry_with_ttls(
                    &self.cfg.entry_timeout,
                    &Duration::ZERO,
                    &file_attr(0, &crate::platform::zeroed_stat()),
                    Generation(0),
                )
            }
            res => self.reply_entry(reply, res),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Option<fuser::FileHandle>,
        reply: ReplyAttr,
    ) {
        match self.fs.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(st) => reply.attr(&self.cfg.attr_timeout, &file_attr(ino.0, &st)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<fuser::FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_spec(atime),
            mtime: time_spec(mtime),
        };
        match self.fs.setattr(&caller(req), ino.0, fh.map(|f| f.0), set) {
            Ok(st) => reply.attr(&self.cfg.attr_timeout, &file_attr(ino.0, &st)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.fs.mknod(&caller(req), parent.0, name, mode, rdev),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(reply, self.fs.mkdir(&caller(req), parent.0, name, mode));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.remove(&caller(req), parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.remove(&caller(req), parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.fs.symlink(&caller(req), parent.0, link_name, target),
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.fs.rename(
            &caller(req),
            parent.0,
            name,
            newparent.0,
            newname,
            flags.bits(),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.fs.link(&caller(req), ino.0, newparent.0, newname),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = match self.fs.open(&caller(req), ino.0, flags.0) {
            Ok(o) => o,
            Err(e) => return reply.error(errno(e)),
        };
        let (mode, backing) =
            self.choose_mode(ino.0, &opened, || reply.open_backing(opened.handle.fd()));
        let fh = fuser::FileHandle(opened.fh);
        match backing {
            Some(b) => reply.opened_passthrough(fh, fopen_flags(mode, &opened), &b),
            None => reply.opened(fh, fopen_flags(mode, &opened)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut reply = Some(reply);
        let res = self.fs.read(fh.0, offset, size, &mut |data| {
            if let Some(r) = reply.take() {
                r.data(data);
            }
        });
        if let (Err(e), Some(r)) = (res, reply.take()) {
            r.error(errno(e));
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.fs.write(fh.0, offset, data, kill) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.fs.flush(&caller(req), fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        self.end_open(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(&caller(req), ino.0, flags.0) {
            Ok(fh) => reply.opened(fuser::FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = self.fs.readdir(fh.0, offset, false, &mut |item| {
            reply.add(
                INodeNo(item.ino),
                item.offset,
                kind_of_dtype(item.kind),
                OsStr::from_bytes(item.name),
            )
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entry_ttl = self.cfg.entry_timeout;
        let attr_ttl = self.cfg.attr_timeout;
        let res = self.fs.readdir(fh.0, offset, true, &mut |item| {
            let name = OsStr::from_bytes(item.name);
            match &item.entry {
                Some(e) => reply.add(
                    INodeNo(e.ino),
                    item.offset,
                    name,
                    &entry_ttl.min(attr_ttl),
                    &file_attr(e.ino, &e.attr),
                    Generation(e.generation),
                ),
                None => {
                    // "." and "..": the kernel does not link these, so no
                    // lookup reference is taken; only the type and ino matter.
                    let mut st = crate::platform::zeroed_stat();
                    st.st_mode = libc::S_IFDIR;
                    reply.add(
                        INodeNo(item.ino),
                        item.offset,
                        name,
                        &Duration::ZERO,
                        &file_attr(item.ino, &st),
                        Generation(0),
                    )
                }
            }
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsyncdir(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    // The statvfs counts are u64 on Linux and u32 on macOS.
    #[allow(clippy::unnecessary_cast)]
    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs(ino.0) {
            Ok(s) => reply.statfs(
                s.f_blocks as u64,
                s.f_bfree as u64,
                s.f_bavail as u64,
                s.f_files as u64,
                s.f_ffree as u64,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.fs.setxattr(&caller(req), ino.0, name, value, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(&caller(req), ino.0, name, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(&caller(req), ino.0, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.removexattr(&caller(req), ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.fs.access(&caller(req), ino.0, mask.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (entry, opened) = match self.fs.create(&caller(req), parent.0, name, mode, flags) {
            Ok(x) => x,
            Err(e) => return reply.error(errno(e)),
        };
        let (mode, backing) = self.choose_mode(entry.ino, &opened, || {
            reply.open_backing(opened.handle.fd())
        });
        let attr = file_attr(entry.ino, &entry.attr);
        let fh = fuser::FileHandle(opened.fh);
        let ttl = self.cfg.entry_timeout.min(self.cfg.attr_timeout);
        match backing {
            Some(b) => reply.created_passthrough(
                &ttl,
                &attr,
                Generation(entry.generation),
                fh,
                fopen_flags(mode, &opened),
                &b,
            ),
            None => reply.created(
                &ttl,
                &attr,
                Generation(entry.generation),
                fh,
                fopen_flags(mode, &opened),
            ),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.fs.fallocate(fh.0, mode, offset, length) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: fuser::FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: fuser::FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let len = len.min(1 << 30);
        match self.fs.copy_file_range(
            fh_in.0,
            offset_in,
            fh_out.0,
            offset_out,
            len,
            flags.bits() as u32,
        ) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}
