//! The engine over POSIX file descriptors (Linux, macOS): per-open
//! writers, atomic stages, the flusher, the crash simulator's hooks.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::{
    ActivePolicy, Change, Covered, CrashSim, FaultOp, Faults, FileState, GroupCommit,
    HIDDEN_PREFIX, Hit, RuleStats, Stats, SyncKind, crash, file, flusher, plan,
};

use crate::platform::{self, DurableFile, Stat};
use crate::policy::{FilePolicy, Policy, SyncTrigger, WriteStrategy};

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// What the engine shares with its flusher thread.
pub(crate) struct Core {
    stats: Stats,
    faults: Faults,
    crash: Option<CrashSim>,
    dirs: Mutex<HashMap<(u64, u64), Weak<GroupCommit>>>,
}

impl Core {
    fn gate(&self) -> io::Result<Option<std::sync::RwLockReadGuard<'_, ()>>> {
        self.crash.as_ref().map(|c| c.enter()).transpose()
    }

    /// One sync of `fd`, at the backing store: faults first, then the
    /// syscall, then the crash simulator hears of it.
    fn sync_raw(
        &self,
        fd: BorrowedFd<'_>,
        kind: SyncKind,
        path: &[u8],
        dir: bool,
    ) -> io::Result<()> {
        let _g = self.gate()?;
        if let Some(Hit::Errno(e)) = self.faults.check(FaultOp::Fsync, path) {
            return Err(errno(e));
        }
        match kind {
            SyncKind::Data => platform::sync_data(fd)?,
            SyncKind::Full => platform::sync_full(fd)?,
            SyncKind::Barrier => platform::sync_barrier(fd)?,
        }
        if let Some(c) = &self.crash {
            if dir {
                c.dir_synced(fd);
            } else {
                c.file_synced(fd);
            }
        }
        Ok(())
    }

    /// Makes `file` durable by `kind`, sharing the flush with concurrent
    /// callers. A file whose sync failed once fails every later one.
    pub(super) fn file_sync(
        &self,
        file: &FileState,
        kind: SyncKind,
        stats: &RuleStats,
    ) -> io::Result<()> {
        RuleStats::bump(&stats.sync_requests);
        let failed = file.failed.load(Ordering::Acquire);
        if failed != 0 {
            RuleStats::bump(&stats.errors);
            return Err(errno(libc::EIO));
        }
        let t = Instant::now();
        let gc = if kind == SyncKind::Full {
            &file.commit_full
        } else {
            &file.commit
        };
        let (res, how) = gc.sync(|| {
            let fd = file.sync_fd();
            let r = self.sync_raw(fd.as_fd(), kind, &file.path(), false);
            if let Err(e) = &r {
                file.failed
                    .store(e.raw_os_error().unwrap_or(libc::EIO), Ordering::Release);
                tracing::error!(
                    "sync of {} failed: {e}; its later syncs fail until it is reopened",
                    String::from_utf8_lossy(&file.path())
                );
            }
            r
        });
        if let Covered::Led(batch) = how {
            stats.synced(t.elapsed());
            stats.batched(batch);
        }
        if res.is_err() {
            RuleStats::bump(&stats.errors);
        }
        res
    }

    /// Syncs the directory behind `fd`, sharing the flush with concurrent
    /// callers on the same directory.
    fn dir_sync(&self, fd: BorrowedFd<'_>, stats: &RuleStats) -> io::Result<()> {
        let st = platform::stat_fd(fd)?;
        let key = platform::dev_ino(&st);
        let gc = {
            let mut m = self.dirs.lock().expect("dir syncs poisoned");
            match m.get(&key).and_then(Weak::upgrade) {
                Some(gc) => gc,
                None => {
                    if m.len() > 4096 {
                        m.retain(|_, w| w.strong_count() > 0);
                    }
                    let gc = Arc::new(GroupCommit::default());
                    m.insert(key, Arc::downgrade(&gc));
                    gc
                }
            }
        };
        let t = Instant::now();
        // The fs holds directories by O_PATH fds, which cannot be synced.
        let (res, how) = gc.sync(|| {
            let dir = platform::reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
            self.sync_raw(dir.as_fd(), SyncKind::Full, b"", true)
        });
        RuleStats::bump(&stats.dir_syncs);
        if let Covered::Led(_) = how {
            stats.synced(t.elapsed());
        }
        if res.is_err() {
            RuleStats::bump(&stats.errors);
        }
        res
    }
}

/// How the kernel must treat an open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelIo {
    /// the daemon must see every read and write (no kernel passthrough)
    pub intercept: bool,
    /// no kernel page cache for this open: each write reaches the daemon
    /// as the app made it (FOPEN_DIRECT_IO, with parallel direct writes)
    pub direct_io: bool,
    /// the daemon must hear of each close(2) (FUSE FLUSH)
    pub flush: bool,
}

/// A node whose backing inode changed (an atomic replace committed): the
/// fs points the node at `fd`.
#[derive(Debug)]
pub struct Repoint {
    /// the FUSE node id
    pub node: u64,
    /// an `O_PATH` fd on the new backing inode
    pub fd: OwnedFd,
    /// its attributes
    pub stat: Stat,
}

/// The fd an open's IO goes to: its own, or the file's atomic stage (or,
/// after a replace, the new file).
pub enum IoFd<'a> {
    /// the open's own backing fd
    Own(BorrowedFd<'a>),
    /// a file shared through the engine
    Shared(Arc<OwnedFd>),
}

impl AsFd for IoFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            IoFd::Own(fd) => *fd,
            IoFd::Shared(fd) => fd.as_fd(),
        }
    }
}

/// The engine's state for one open file.
pub struct Writer {
    /// what the policy decided for this open, when it was opened
    pub policy: FilePolicy,
    pub(super) file: Arc<FileState>,
    writable: bool,
    /// written since this open's last sync
    dirty: AtomicBool,
    /// the direct-IO file (`write = "direct"`)
    direct: Option<DurableFile>,
    pub(super) stats: Arc<RuleStats>,
    /// the process that opened it (atomic opens: only its closes commit)
    opener: u32,
    /// the flusher watches the file for this open (its writes may bypass
    /// the daemon)
    watched: bool,
    /// closed (FUSE FLUSH by its opener) and not written since; counted
    /// out of the file's `unclosed`
    closed: AtomicBool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("rule", &self.policy.rule)
            .field("node", &self.file.node)
            .field("writable", &self.writable)
            .finish()
    }
}

impl Writer {
    /// A write or truncate through an open already closed by its opener
    /// (a descriptor it dup'ed lives on): the open counts as unclosed again.
    fn reopen(&self) {
        if self.closed.load(Ordering::Acquire) && self.closed.swap(false, Ordering::AcqRel) {
            self.file.unclosed.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Counts the open out of the file's unclosed opens, once.
    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.file.unclosed.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn atomic(&self) -> bool {
        self.writable
            && self.policy.write == WriteStrategy::Atomic
            && !self.file.in_place.load(Ordering::Relaxed)
    }
}

/// Settings of the engine that are not the policy.
#[derive(Debug, Default, Clone)]
pub struct EngineOptions {
    /// track non-durable state for `durafs crash` (the backing root is
    /// given to [`Engine::start`])
    pub crash_sim: bool,
}

/// The durability engine shared by all open files of a mount.
pub struct Engine {
    policy: ActivePolicy,
    core: Arc<Core>,
    files: Mutex<HashMap<u64, Weak<FileState>>>,
    flusher: Arc<flusher::Flusher>,
    stage_prefix: String,
    stage_seq: AtomicU64,
    stages: AtomicUsize,
    in_place_warned: AtomicBool,
    direct_warned: AtomicBool,
    options: EngineOptions,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine applying `policy` (read from `path`, if from a file: that
    /// is what a reload re-reads).
    pub fn new(policy: Policy, path: Option<std::path::PathBuf>) -> Self {
        Self::with_options(policy, path, EngineOptions::default())
    }

    /// An engine with `options`.
    pub fn with_options(
        policy: Policy,
        path: Option<std::path::PathBuf>,
        options: EngineOptions,
    ) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Engine {
            policy: ActivePolicy::new(policy, path),
            core: Arc::new(Core {
                stats: Stats::default(),
                faults: Faults::default(),
                crash: None,
                dirs: Mutex::new(HashMap::new()),
            }),
            files: Mutex::new(HashMap::new()),
            flusher: Arc::new(flusher::Flusher::default()),
            stage_prefix: format!(
                ".durafs-stage.{:x}{:x}.",
                std::process::id(),
                now & 0xffff_ffff
            ),
            stage_seq: AtomicU64::new(0),
            stages: AtomicUsize::new(0),
            in_place_warned: AtomicBool::new(false),
            direct_warned: AtomicBool::new(false),
            options,
        }
    }

    /// Readies the engine on the backing tree at `root`: starts the crash
    /// simulator if asked, and removes in the background the atomic stages
    /// an earlier mount left (never renaming them into place).
    pub fn start(&mut self, root: BorrowedFd<'_>) -> io::Result<()> {
        if self.options.crash_sim {
            let sim = CrashSim::new(root)?;
            Arc::get_mut(&mut self.core)
                .expect("engine started twice")
                .crash = Some(sim);
        }
        let root = platform::reopen(root, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mine = self.stage_prefix.clone();
        std::thread::Builder::new()
            .name("durafs-clean".into())
            .spawn(move || {
                let n = clean_stages(root.as_fd(), mine.as_bytes(), 0);
                if n > 0 {
                    tracing::info!("removed {n} atomic stage(s) left by an earlier mount");
                }
            })?;
        Ok(())
    }

    /// The policy in force, and its reloads.
    pub fn policy(&self) -> &ActivePolicy {
        &self.policy
    }

    /// The per-rule counters.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// The mount's faults.
    pub fn faults(&self) -> &Faults {
        &self.core.faults
    }

    /// The crash simulator, when the mount has one.
    pub fn crash_sim(&self) -> Option<&CrashSim> {
        self.core.crash.as_ref()
    }

    /// Whether a backing name is the engine's own and must not appear
    /// through the mount.
    pub fn is_hidden(&self, name: &[u8]) -> bool {
        name.starts_with(HIDDEN_PREFIX)
    }

    /// The policy for a file being opened, and its path relative to the
    /// mount root when anything needs it (`path` is asked for only then).
    pub fn resolve(&self, path: impl FnOnce() -> Vec<u8>) -> (FilePolicy, Vec<u8>) {
        let policy = self.policy.get();
        let need = !policy.is_uniform() || self.core.faults.active() || self.core.crash.is_some();
        let p = if need { path() } else { Vec::new() };
        let fp = if policy.is_uniform() {
            policy.defaults().clone()
        } else {
            let fp = policy.resolve(&p);
            tracing::debug!("open {}: rule {}", String::from_utf8_lossy(&p), fp.rule);
            fp
        };
        (fp, p)
    }

    /// The flags to open the backing file with for an app open with
    /// `flags`: an atomic open does not truncate the target (its stage
    /// starts empty instead).
    pub fn backing_flags(&self, fp: &FilePolicy, flags: i32) -> i32 {
        if fp.write == WriteStrategy::Atomic && writable(flags) {
            flags & !libc::O_TRUNC
        } else {
            flags
        }
    }

    /// Called before the backing file behind `fd` is opened with O_TRUNC in
    /// place (the crash simulator keeps what the truncation loses).
    pub fn before_truncating_open(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        if let Some(c) = &self.core.crash {
            let _g = c.enter()?;
            c.before_truncate(fd, 0)?;
        }
        Ok(())
    }

    /// Called before an open; fails it if a fault says so.
    pub fn check_open(&self, path: &[u8]) -> io::Result<()> {
        match self.core.faults.check(FaultOp::Open, path) {
            Some(Hit::Errno(e)) => Err(errno(e)),
            _ => Ok(()),
        }
    }

    /// The per-open state for node `node` opened with the app's `flags` on
    /// the backing fd `fd`, under policy `fp`.
    pub fn open_writer(
        &self,
        node: u64,
        fp: FilePolicy,
        path: Vec<u8>,
        flags: i32,
        fd: BorrowedFd<'_>,
        opener: impl FnOnce() -> u32,
    ) -> io::Result<Writer> {
        let file = self.file_state(node, path, fd)?;
        let is_writable = writable(flags);
        let stats = self.core.stats.rule(&fp.rule);
        let mut direct = None;
        if is_writable {
            {
                // Counted under the lock `trim` holds, so no writable open
                // appears while it releases an append file's tail.
                let _l = file.io_lock.lock().expect("file lock poisoned");
                file.writers.fetch_add(1, Ordering::AcqRel);
            }
            file.unclosed.fetch_add(1, Ordering::AcqRel);
            if fp.write == WriteStrategy::Direct {
                match platform::reopen(fd, libc::O_RDWR) {
                    Ok(rw) => direct = Some(DurableFile::from_fd(rw, true)),
                    Err(e) => {
                        if !self.direct_warned.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                "direct IO needs the file readable by the daemon ({e}); such opens write buffered"
                            );
                        }
                    }
                }
            }
            if let Some(h) = fp.hint {
                let _ = platform::set_write_hint(fd, h);
            }
        }
        if let Some(a) = fp.advise {
            let _ = platform::advise(fd, a);
        }
        let atomic = is_writable && fp.write == WriteStrategy::Atomic;
        let mut w = Writer {
            policy: fp,
            file,
            writable: is_writable,
            dirty: AtomicBool::new(false),
            direct,
            stats,
            opener: if atomic { opener() } else { 0 },
            watched: false,
            closed: AtomicBool::new(!is_writable),
        };
        if self.watched(&w)
            && let SyncTrigger::Interval(every) = w.policy.sync
        {
            // Its writes bypass the daemon: the flusher watches the file,
            // and an append file is preallocated now and at each tick.
            let step = if w.policy.write == WriteStrategy::Append {
                let past_end = w.file.reserved.load(Ordering::Acquire).saturating_add(1);
                self.reserve(&w, fd, past_end);
                w.policy.preallocate
            } else {
                0
            };
            self.flusher.watch(&self.core, &w, every, step);
            w.watched = true;
        }
        if w.atomic() && flags & libc::O_TRUNC != 0 {
            // The truncation happens in the stage; the target keeps its
            // contents until the commit.
            match self.stage(&w, fd, false)? {
                Some(stage) => self.truncate_staged(&stage, 0)?,
                None => {
                    self.before_truncating_open(fd)?;
                    platform::ftruncate(fd, 0)?;
                }
            }
        }
        Ok(w)
    }

    fn file_state(
        &self,
        node: u64,
        path: Vec<u8>,
        fd: BorrowedFd<'_>,
    ) -> io::Result<Arc<FileState>> {
        let mut files = self.files.lock().expect("files poisoned");
        if let Some(f) = files.get(&node).and_then(Weak::upgrade) {
            if !path.is_empty() {
                f.set_path(path);
            }
            return Ok(f);
        }
        let size = platform::stat_fd(fd)?.st_size as u64;
        let f = Arc::new(FileState::new(node, path, fd.try_clone_to_owned()?, size));
        if files.len() > 1024 {
            files.retain(|_, w| w.strong_count() > 0);
        }
        files.insert(node, Arc::downgrade(&f));
        Ok(f)
    }

    /// How the kernel must treat this open.
    pub fn kernel_io(&self, w: &Writer) -> KernelIo {
        let tracked = self.core.crash.is_some() || self.core.faults.active();
        if !w.writable {
            // A reader of an atomic file reads its own open of the file as
            // it was, with no page cache and no size cap from the kernel:
            // the kernel keeps one size per inode, and while a writer's
            // stage is pending that is the stage's size, which cut cached
            // reads of the old file short (a reader got "old" of "old
            // contents" during a rewrite to "NEW").
            let atomic = w.policy.write == WriteStrategy::Atomic;
            return KernelIo {
                intercept: tracked || atomic,
                direct_io: atomic,
                flush: false,
            };
        }
        let p = &w.policy;
        let sync_needs_writes = matches!(
            p.sync,
            SyncTrigger::Always | SyncTrigger::OnClose | SyncTrigger::Interval(_)
        );
        let needs_writes = p.write != WriteStrategy::Passthrough || sync_needs_writes;
        KernelIo {
            intercept: tracked || (needs_writes && !Self::watchable(p)),
            direct_io: p.sync == SyncTrigger::Always
                || matches!(p.write, WriteStrategy::Direct | WriteStrategy::Atomic),
            flush: p.sync == SyncTrigger::OnClose
                || matches!(p.write, WriteStrategy::Atomic | WriteStrategy::Append),
        }
    }

    /// Whether a writable open under `p` can leave its writes to the kernel
    /// (passthrough) and be kept by the flusher watching the file: an
    /// interval sync of a passthrough or append file (nothing tracked).
    fn watchable(p: &FilePolicy) -> bool {
        matches!(p.sync, SyncTrigger::Interval(_))
            && matches!(p.write, WriteStrategy::Passthrough | WriteStrategy::Append)
    }

    /// Whether this writable open is watched by the flusher rather than
    /// seen write by write.
    fn watched(&self, w: &Writer) -> bool {
        w.writable
            && Self::watchable(&w.policy)
            && self.core.crash.is_none()
            && !self.core.faults.active()
    }

    /// The fd this open's reads, truncates, hole punches and seeks go to.
    pub fn io_fd<'a>(&self, w: &Writer, own: BorrowedFd<'a>) -> IoFd<'a> {
        if w.atomic() {
            if let Some(s) = w.file.stage_fd() {
                return IoFd::Shared(s);
            }
            if let Some(c) = w.file.current() {
                return IoFd::Shared(c);
            }
        }
        IoFd::Own(own)
    }

    /// The attributes of node `node` while an atomic stage holds its new
    /// contents (so the kernel sees the size the app wrote), else None.
    pub fn staged_stat(&self, node: u64) -> Option<Stat> {
        if self.stages.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let f = self
            .files
            .lock()
            .expect("files poisoned")
            .get(&node)?
            .upgrade()?;
        let s = f.stage_fd()?;
        platform::stat_fd(s.as_fd()).ok()
    }

    /// Reads into `buf` at `offset`.
    pub fn read(
        &self,
        w: &Writer,
        own: BorrowedFd<'_>,
        buf: &mut [u8],
        offset: u64,
    ) -> io::Result<usize> {
        if let Some(Hit::Errno(e)) = self.core.faults.check(FaultOp::Read, &w.file.path()) {
            return Err(errno(e));
        }
        if let Some(d) = &w.direct {
            return d.read_at(buf, offset);
        }
        platform::pread(self.io_fd(w, own).as_fd(), buf, offset)
    }

    /// Called before bytes `offset..offset+len` of the file behind `fd`
    /// change other than by a write (hole punch, copy_file_range).
    pub fn before_modify(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        if let Some(c) = &self.core.crash {
            let _g = c.enter()?;
            c.before_write(fd, offset, len)?;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (at the end of file for an O_APPEND fd,
    /// where Linux pwrite ignores the offset) by the open's strategy, then
    /// applies its sync trigger.
    pub fn write(
        &self,
        w: &Writer,
        own: BorrowedFd<'_>,
        data: &[u8],
        offset: u64,
    ) -> io::Result<usize> {
        w.reopen();
        let file = &w.file;
        let mut data = data;
        let mut torn = false;
        match self.core.faults.check(FaultOp::Write, &file.path()) {
            Some(Hit::Errno(e)) => return Err(errno(e)),
            Some(Hit::Tear) => {
                data = &data[..data.len() / 2];
                torn = true;
            }
            None => {}
        }
        // The stage is made before entering the crash gate: making it
        // enters the gate itself, and a read lock taken twice can deadlock
        // against a waiting crash.
        let stage = if w.atomic() {
            self.stage(w, own, true)?
        } else {
            None
        };
        let n = {
            let _g = self.core.gate()?;
            let len = data.len() as u64;
            if let Some(stage) = stage {
                self.before_modify_locked(stage.as_fd(), offset, len)?;
                platform::pwrite(stage.as_fd(), data, offset)?
            } else if let Some(d) = &w.direct {
                let _l = file.io_lock.lock().expect("file lock poisoned");
                self.before_modify_locked(d.fd(), offset, len)?;
                d.write_at(data, offset)?;
                data.len()
            } else {
                if w.policy.write == WriteStrategy::Append {
                    self.reserve(w, own, offset + len);
                }
                self.before_modify_locked(own, offset, len)?;
                platform::pwrite(own, data, offset)?
            }
        };
        if torn {
            return Err(errno(libc::EIO));
        }
        RuleStats::bump(&w.stats.writes);
        w.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        w.dirty.store(true, Ordering::Release);
        match plan::after_write(&w.policy, w.atomic()) {
            plan::AfterWrite::Sync(kind) => {
                w.dirty.store(false, Ordering::Release);
                self.core.file_sync(file, kind, &w.stats)?;
            }
            plan::AfterWrite::Schedule(every, kind) => {
                self.flusher
                    .schedule(&self.core, file, every, kind, &w.stats);
            }
            plan::AfterWrite::Nothing => {}
        }
        Ok(n)
    }

    /// before_modify for callers already inside the crash gate.
    fn before_modify_locked(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        if let Some(c) = &self.core.crash {
            c.before_write(fd, offset, len)?;
        }
        Ok(())
    }

    /// Preallocates ahead of `end` in `preallocate` steps (`append`).
    fn reserve(&self, w: &Writer, fd: BorrowedFd<'_>, end: u64) {
        if let Some(to) = plan::reserve_to(&w.policy, end, w.file.reserved.load(Ordering::Acquire))
        {
            w.file.reserve(fd, end, 0, to);
        }
    }

    /// Releases the preallocated tail past the end of an `append` file
    /// once no writable open of it is left (a later write preallocates
    /// again).
    ///
    /// A truncation to the size the file has frees the blocks past it
    /// (ext4, XFS) and never shows another size. It runs under the file's
    /// lock with no writable open, so no write (through the daemon or
    /// kernel passthrough) can extend the file between the size read and
    /// the truncation: done at a close(2) while another descriptor could
    /// still append (a child's inherited copy closed at exec, a dup), it
    /// could cut an acknowledged write.
    fn trim(&self, w: &Writer, fd: BorrowedFd<'_>) {
        let _l = w.file.io_lock.lock().expect("file lock poisoned");
        let reserved = w.file.reserved.load(Ordering::Acquire);
        if w.file.writers.load(Ordering::Acquire) > 0 || reserved == u64::MAX {
            return;
        }
        let Ok(st) = platform::stat_fd(fd) else {
            return;
        };
        let size = st.st_size as u64;
        if reserved <= size {
            return;
        }
        if let Err(e) = platform::ftruncate(fd, size) {
            tracing::debug!("releasing preallocation: {e}");
        }
        w.file.reserved.store(size, Ordering::Release);
    }

    /// The file's atomic stage, made (seeded with the target's contents if
    /// `seed`) if there is none; None when the file is written in place.
    fn stage(
        &self,
        w: &Writer,
        own: BorrowedFd<'_>,
        seed: bool,
    ) -> io::Result<Option<Arc<OwnedFd>>> {
        w.reopen();
        let file = &w.file;
        let mut st = file.stage.lock().expect("stage poisoned");
        if let Some(s) = &*st {
            return Ok(Some(s.fd.clone()));
        }
        let current = file.current();
        let target: BorrowedFd<'_> = current.as_ref().map_or(own, |c| c.as_fd());
        let tst = platform::stat_fd(target)?;
        let tpath = platform::fd_path(target)?;
        if tst.st_nlink > 1 || tpath.ends_with(b" (deleted)") {
            file.in_place.store(true, Ordering::Relaxed);
            if tst.st_nlink > 1 && !self.in_place_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{} has {} hard links: an atomic replace would break them, so it is written in place and synced on close (logged once)",
                    String::from_utf8_lossy(&file.path()),
                    tst.st_nlink
                );
            }
            return Ok(None);
        }
        let (parent, _) = split_path(&tpath);
        let dir = platform::open_dir_path(bytes_path(parent))?;
        let name = CString::new(format!(
            "{}{}",
            self.stage_prefix,
            self.stage_seq.fetch_add(1, Ordering::Relaxed)
        ))
        .map_err(io::Error::other)?;
        let fd = self.track(
            Change::Create {
                dir: dir.as_fd(),
                name: &name,
            },
            || {
                platform::open_at(
                    dir.as_fd(),
                    &name,
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                    platform::mode_of(&tst) & 0o7777,
                )
            },
        )?;
        let _ = platform::chown_fd(fd.as_fd(), tst.st_uid, tst.st_gid);
        if seed && tst.st_size > 0 {
            let src = platform::reopen(target, libc::O_RDONLY)?;
            self.before_modify_locked(fd.as_fd(), 0, tst.st_size as u64)?;
            platform::copy(src.as_fd(), fd.as_fd())?;
        }
        let fd = Arc::new(fd);
        *st = Some(file::Stage {
            fd: fd.clone(),
            dir,
            name,
        });
        self.stages.fetch_add(1, Ordering::Relaxed);
        Ok(Some(fd))
    }

    fn truncate_staged(&self, stage: &Arc<OwnedFd>, size: u64) -> io::Result<()> {
        let _g = self.core.gate()?;
        if let Some(c) = &self.core.crash {
            c.before_truncate(stage.as_fd(), size)?;
        }
        platform::ftruncate(stage.as_fd(), size)
    }

    /// A truncate of node `node` (by the open `w`, or by path). Returns
    /// true if the engine did it (in an atomic stage); false leaves the
    /// in-place truncate to the caller, after the crash simulator has kept
    /// what it loses.
    pub fn truncate(
        &self,
        node: u64,
        w: Option<&Writer>,
        fd: BorrowedFd<'_>,
        size: u64,
    ) -> io::Result<bool> {
        let file = match w {
            Some(w) => Some(w.file.clone()),
            None => self
                .files
                .lock()
                .expect("files poisoned")
                .get(&node)
                .and_then(Weak::upgrade),
        };
        if let Some(w) = w
            && w.atomic()
            && let Some(stage) = self.stage(w, fd, size > 0)?
        {
            self.truncate_staged(&stage, size)?;
            return Ok(true);
        }
        if let Some(stage) = file.as_ref().and_then(|f| f.stage_fd()) {
            self.truncate_staged(&stage, size)?;
            return Ok(true);
        }
        if let Some(c) = &self.core.crash {
            let _g = c.enter()?;
            c.before_truncate(fd, size)?;
        }
        Ok(false)
    }

    /// Commits the file's atomic stage: sync it, rename it over the target,
    /// sync the directory. Returns the node to repoint.
    fn commit(&self, w: &Writer) -> io::Result<Option<Repoint>> {
        let file = &w.file;
        let mut st = file.stage.lock().expect("stage poisoned");
        let Some(stage) = st.take() else {
            return Ok(None);
        };
        self.stages.fetch_sub(1, Ordering::Relaxed);
        // Removed, or replaced by a rename, while staged: as with a file
        // written after its unlink, the writes go with it, and close(2)
        // succeeds as it would on the backing filesystem.
        // (No links left, or a path the kernel marks deleted: macOS's
        // F_GETPATH may still name a removed file's old path, and the
        // crash simulator keeps a link to what it removes.)
        let target = file.sync_fd();
        let tpath = platform::fd_path(target.as_fd());
        let gone = platform::stat_fd(target.as_fd()).is_ok_and(|st| st.st_nlink == 0)
            || tpath.as_ref().is_ok_and(|p| p.ends_with(b" (deleted)"));
        let res = if gone {
            Ok(None)
        } else {
            self.commit_stage(w, &stage, tpath)
        };
        if res.is_err() {
            RuleStats::bump(&w.stats.errors);
        }
        if res.is_err() || gone {
            // The target keeps its old contents; the stage goes.
            let _ = self.track(
                Change::Remove {
                    dir: stage.dir.as_fd(),
                    name: &stage.name,
                },
                || platform::unlink_at(stage.dir.as_fd(), &stage.name, false),
            );
        }
        res
    }

    /// The commit of a target still in place, whose path is `tpath`.
    fn commit_stage(
        &self,
        w: &Writer,
        stage: &file::Stage,
        tpath: io::Result<Vec<u8>>,
    ) -> io::Result<Option<Repoint>> {
        let file = &w.file;
        if file.failed.load(Ordering::Acquire) != 0 {
            return Err(errno(libc::EIO));
        }
        let t = Instant::now();
        let kind = SyncKind::of(w.policy.method);
        if let Err(e) = self
            .core
            .sync_raw(stage.fd.as_fd(), kind, &file.path(), false)
        {
            file.failed
                .store(e.raw_os_error().unwrap_or(libc::EIO), Ordering::Release);
            return Err(e);
        }
        w.stats.synced(t.elapsed());
        RuleStats::bump(&w.stats.sync_requests);
        let tpath = tpath?;
        let (parent, name) = split_path(&tpath);
        let name = CString::new(name).map_err(io::Error::other)?;
        let dir = platform::open_dir_path(bytes_path(parent))?;
        self.track(
            Change::Rename {
                from: stage.dir.as_fd(),
                from_name: &stage.name,
                to: dir.as_fd(),
                to_name: &name,
                flags: 0,
            },
            || platform::rename_at(stage.dir.as_fd(), &stage.name, dir.as_fd(), &name, 0),
        )?;
        self.core.dir_sync(dir.as_fd(), &w.stats)?;
        let (a, b) = (
            platform::stat_fd(dir.as_fd())?,
            platform::stat_fd(stage.dir.as_fd())?,
        );
        if platform::dev_ino(&a) != platform::dev_ino(&b) {
            self.core.dir_sync(stage.dir.as_fd(), &w.stats)?;
        }
        *file.sync_fd.lock().expect("file state poisoned") = stage.fd.clone();
        *file.current.lock().expect("file state poisoned") = Some(stage.fd.clone());
        RuleStats::bump(&w.stats.atomic_commits);
        w.dirty.store(false, Ordering::Release);
        let stat = platform::stat_fd(stage.fd.as_fd())?;
        Ok(Some(Repoint {
            node: file.node,
            fd: platform::reopen(stage.fd.as_fd(), platform::O_PATH)?,
            stat,
        }))
    }

    /// close(2) of one descriptor of the open (FUSE FLUSH) by process
    /// `closer`: commits an atomic stage when no writable open of the file
    /// is left unclosed by its opener (a child closing its inherited copy
    /// at exec does not commit a half-written file; the last release does),
    /// syncs under `on-close` if anything was written since the last sync.
    ///
    /// Opens count as closed here, at their opener's close(2), not at their
    /// RELEASE: the kernel sends RELEASE after close(2) has returned, so
    /// counting there let the last of two writers' close return before the
    /// commit whenever the first one's RELEASE was still queued.
    pub fn flush(
        &self,
        w: &Writer,
        _own: BorrowedFd<'_>,
        closer: impl FnOnce() -> u32,
    ) -> io::Result<Option<Repoint>> {
        if !w.writable {
            return Ok(None);
        }
        if !w.atomic() || closer() == w.opener {
            w.close();
        }
        let last = w.file.unclosed.load(Ordering::Acquire) == 0;
        let dirty = || w.dirty.swap(false, Ordering::AcqRel);
        match plan::at_close(
            &w.policy,
            w.atomic(),
            w.policy.sync == SyncTrigger::OnClose && dirty(),
        ) {
            plan::AtClose::Commit => {
                if last {
                    return self.commit(w);
                }
            }
            plan::AtClose::Sync(kind) => self.core.file_sync(&w.file, kind, &w.stats)?,
            plan::AtClose::Nothing => {}
        }
        Ok(None)
    }

    /// The app's fsync (`datasync` = fdatasync).
    pub fn fsync(
        &self,
        w: &Writer,
        _own: BorrowedFd<'_>,
        datasync: bool,
    ) -> io::Result<Option<Repoint>> {
        RuleStats::bump(&w.stats.app_syncs);
        let staged = w.atomic() && w.file.stage_fd().is_some();
        match plan::app_sync(&w.policy, staged, !datasync) {
            plan::AppSync::Commit => self.commit(w),
            plan::AppSync::Drop => {
                RuleStats::bump(&w.stats.dropped_syncs);
                Ok(None)
            }
            plan::AppSync::Sync(kind) => {
                w.dirty.store(false, Ordering::Release);
                self.core.file_sync(&w.file, kind, &w.stats)?;
                Ok(None)
            }
        }
    }

    /// The last close of the open: an atomic stage still pending is
    /// committed (its errors logged: nobody is left to tell), an append
    /// file's preallocated tail released.
    pub fn release(&self, w: &Writer, own: BorrowedFd<'_>) -> Option<Repoint> {
        if !w.writable {
            return None;
        }
        if let (true, SyncTrigger::Interval(every)) = (w.watched, w.policy.sync) {
            self.flusher.unwatch(&self.core, w, every);
        }
        w.close();
        let left = w.file.writers.fetch_sub(1, Ordering::AcqRel) - 1;
        if left > 0 {
            return None;
        }
        if w.policy.write == WriteStrategy::Append {
            self.trim(w, own);
        }
        if w.atomic() {
            match self.commit(w) {
                Ok(r) => return r,
                Err(e) => tracing::error!(
                    "atomic replace of {} failed at release: {e}",
                    String::from_utf8_lossy(&w.file.path())
                ),
            }
        }
        None
    }

    /// The app's fsync of a directory: always a real one.
    pub fn fsync_dir(&self, fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
        let kind = if datasync {
            SyncKind::Data
        } else {
            SyncKind::Full
        };
        self.core.sync_raw(fd, kind, b"", true)
    }

    /// Runs `op` (which changes directory entries as `change` says) with the
    /// crash simulator keeping what it removes and recording it.
    fn track<R>(&self, change: Change<'_>, op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        let Some(c) = &self.core.crash else {
            return op();
        };
        let _g = c.enter()?;
        let prep = c.prepare(change)?;
        let r = op();
        c.record(change, prep, r.is_ok());
        r
    }

    /// Runs the metadata operation `op`, which makes `change`; then, if the
    /// policy for the entry (`path` gives its mount-relative path, asked for
    /// only when rules need it) has `dir-sync`, syncs the changed
    /// directories before returning.
    pub fn change<R>(
        &self,
        change: Change<'_>,
        path: impl FnOnce() -> Vec<u8>,
        op: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        let r = self.track(change, op)?;
        let policy = self.policy.get();
        let fp = if policy.is_uniform() {
            policy.defaults().clone()
        } else {
            policy.resolve(&path())
        };
        if fp.dir_sync {
            let stats = self.core.stats.rule(&fp.rule);
            match change {
                Change::Create { dir, .. } | Change::Remove { dir, .. } => {
                    self.core.dir_sync(dir, &stats)?;
                }
                Change::Rename { from, to, .. } => {
                    self.core.dir_sync(to, &stats)?;
                    let (a, b) = (platform::stat_fd(from)?, platform::stat_fd(to)?);
                    if platform::dev_ino(&a) != platform::dev_ino(&b) {
                        self.core.dir_sync(from, &stats)?;
                    }
                }
            }
        }
        Ok(r)
    }

    /// Syncs every file still waiting for the interval flusher; called when
    /// the mount ends.
    pub fn shutdown(&self) {
        self.flusher.shutdown();
        if let Some(c) = &self.core.crash {
            c.finish();
        }
    }
}

fn bytes_path(p: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(p))
}

fn writable(flags: i32) -> bool {
    matches!(flags & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR)
}

/// Splits an absolute path into its parent and last component.
fn split_path(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &p[1..]),
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (b".", p),
    }
}

/// Removes atomic stages under `dir` that are not this mount's (`mine` is
/// its name prefix); returns how many went.
fn clean_stages(dir: BorrowedFd<'_>, mine: &[u8], depth: usize) -> usize {
    let Ok(names) = crash::list_entries(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in names {
        let Ok(name) = CString::new(e.name.clone()) else {
            continue;
        };
        if e.name.starts_with(b".durafs-stage.") && !e.name.starts_with(mine) {
            if platform::unlink_at(dir, &name, false).is_ok() {
                n += 1;
            }
        } else if e.kind == libc::DT_DIR && depth < 64 && !e.name.starts_with(HIDDEN_PREFIX) {
            if let Ok(sub) = platform::open_path_at(dir, &name) {
                n += clean_stages(sub.as_fd(), mine, depth + 1);
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths() {
        assert_eq!(split_path(b"/a/b/c"), (&b"/a/b"[..], &b"c"[..]));
        assert_eq!(split_path(b"/c"), (&b"/"[..], &b"c"[..]));
    }
}
