//! The crash simulator: tracks what is not yet durable, and on a simulated
//! power cut puts the backing store back to what a real one could have left.
//!
//! The persistence model is pessimistic and stated in the README:
//!
//! - a file's data and size are durable as of its last fsync/fdatasync
//!   (by the app, or by durafs enforcing a policy); nothing written since is;
//! - a directory entry change (create, mknod, mkdir, symlink, link, unlink,
//!   rmdir, rename) is durable once the directory holding the new name (for
//!   unlink and rmdir: the directory it was removed from) has been fsynced.
//!   A file's own fsync does not make its name durable.
//!
//! It works by undo, so the live tree is the real one and costs nothing to
//! read: the first time a page of a file is overwritten after the file's
//! last sync, the page's old contents go to an undo file; the size at that
//! last sync is remembered. A removed or replaced file is first hard-linked
//! into a graveyard (`BACKING/.durafs-crash/`), a removed directory's mode
//! and owner are remembered. On a crash every file gets its saved pages
//! back and its durable size, and the directory changes that were not made
//! durable are undone newest first. `--torn` restores only a seeded random
//! subset of the pages (and of the appended ones), which a real crash can
//! also leave.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use crate::platform;

/// The undo granularity: a page.
pub const PAGE: u64 = 4096;

/// The directory in the backing root that holds the graveyard.
pub const CRASH_DIR: &CStr = c".durafs-crash";

type Key = (u64, u64);

fn key_of(st: &platform::Stat) -> Key {
    platform::dev_ino(st)
}

/// A file or directory the simulator tracks: an fd on it, or a file handle
/// reopened at each use.
enum Held {
    Fd(OwnedFd),
    Handle(platform::FileHandleBuf),
}

/// An fd lent by a [`Held`]: its own, or one opened for this use.
enum Lent<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl AsFd for Lent<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Lent::Borrowed(b) => *b,
            Lent::Owned(o) => o.as_fd(),
        }
    }
}

struct FileUndo {
    /// the file (held open for reading and, where allowed, writing)
    held: Held,
    /// its size at its last sync
    durable_size: u64,
    /// page index -> slot in the undo file holding its contents at the sync
    pages: BTreeMap<u64, u64>,
    /// the smallest size a truncation set since the sync
    truncated_to: Option<u64>,
    /// its path when first tracked, for the report, if it is held by
    /// handle: a file reopened by handle after its name left the kernel's
    /// cache has no path of its own (the kernel names it "/")
    first_path: Option<String>,
}

enum Victim {
    /// a file, hard-linked into the graveyard under this name
    Grave(CString),
    /// a directory, recreated with this mode and owner
    Dir { mode: u32, uid: u32, gid: u32 },
}

enum Record {
    Created {
        dir: Key,
        name: CString,
    },
    Removed {
        dir: Key,
        name: CString,
        victim: Option<Victim>,
    },
    Renamed {
        from: Key,
        from_name: CString,
        to: Key,
        to_name: CString,
        victim: Option<Victim>,
        exchange: bool,
    },
}

impl Record {
    /// The directory whose fsync makes this change durable.
    fn home(&self) -> Key {
        match self {
            Record::Created { dir, .. } | Record::Removed { dir, .. } => *dir,
            Record::Renamed { to, .. } => *to,
        }
    }

    /// The directories it names.
    fn dirs(&self) -> impl Iterator<Item = Key> + '_ {
        self.names().map(|(d, _)| *d)
    }

    /// The names it changed, each with its directory.
    fn names(&self) -> impl Iterator<Item = (&Key, &CString)> {
        let (a, b) = match self {
            Record::Created { dir, name } | Record::Removed { dir, name, .. } => {
                ((dir, name), None)
            }
            Record::Renamed {
                from,
                from_name,
                to,
                to_name,
                ..
            } => ((from, from_name), Some((to, to_name))),
        };
        std::iter::once(a).chain(b)
    }

    fn victim(&self) -> Option<&Victim> {
        match self {
            Record::Created { .. } => None,
            Record::Removed { victim, .. } | Record::Renamed { victim, .. } => victim.as_ref(),
        }
    }
}

#[derive(Default)]
struct State {
    files: HashMap<Key, FileUndo>,
    log: Vec<Record>,
    /// the directories the log names (held as `O_PATH`)
    dirs: HashMap<Key, Held>,
    /// how many of `files` and `dirs` are held by fd
    fds: usize,
    slots: u64,
    free: Vec<u64>,
}

/// What a directory change needs kept before it runs.
pub struct Prepared {
    victim: Option<Victim>,
}

/// A directory change, as the crash simulator records it.
#[derive(Clone, Copy)]
pub enum Change<'a> {
    /// `name` was made in `dir` (create, mknod, mkdir, symlink, link)
    Create {
        /// the directory
        dir: BorrowedFd<'a>,
        /// the new name
        name: &'a CStr,
    },
    /// `name` is removed from `dir` (unlink, rmdir)
    Remove {
        /// the directory
        dir: BorrowedFd<'a>,
        /// the name
        name: &'a CStr,
    },
    /// rename with renameat2 `flags`
    Rename {
        /// source directory
        from: BorrowedFd<'a>,
        /// source name
        from_name: &'a CStr,
        /// target directory
        to: BorrowedFd<'a>,
        /// target name
        to_name: &'a CStr,
        /// RENAME_NOREPLACE / RENAME_EXCHANGE
        flags: u32,
    },
}

/// How a simulated power cut treats what was not durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// everything not durable is lost
    LoseAll,
    /// a random subset (with this seed) of the unsynced pages survives
    Torn(u64),
}

/// What a simulated power cut did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CrashOutcome {
    /// files whose unsynced data was rolled back
    pub files: usize,
    /// pages restored to their contents at the last sync
    pub pages_restored: u64,
    /// unsynced pages kept (torn mode)
    pub pages_kept: u64,
    /// directory changes undone
    pub dir_changes_undone: usize,
    /// steps that failed (logged one by one)
    pub errors: usize,
    /// what the kernel may have cached that the crash changed
    #[serde(skip)]
    pub stale: Stale,
}

/// What a crash changed under the kernel's caches: the frontend tells the
/// kernel to forget them, so the mount shows the post-crash state at once
/// (and can keep its usual attribute and entry caching).
#[derive(Debug, Default, Clone)]
pub struct Stale {
    /// backing (dev, ino) of inodes whose data or attributes changed
    pub inodes: Vec<(u64, u64)>,
    /// names that were made, removed or moved: (directory's (dev, ino), name)
    pub entries: Vec<((u64, u64), CString)>,
}

/// `open(flags)`, and when that fails for `O_RDWR`, `open(O_RDONLY)`: a
/// file the daemon may not write is still read (its saved pages) and
/// reported; restoring it then fails and is counted.
fn read_only_if_refused(
    flags: i32,
    open: impl Fn(i32) -> io::Result<OwnedFd>,
) -> io::Result<OwnedFd> {
    open(flags).or_else(|e| {
        if flags & libc::O_ACCMODE == libc::O_RDWR {
            open(libc::O_RDONLY)
        } else {
            Err(e)
        }
    })
}

/// The crash simulator of one mount.
pub struct CrashSim {
    root: OwnedFd,
    root_path: Vec<u8>,
    root_dev: u64,
    /// an fd to reopen file handles with; None where they do not work
    mount: Option<OwnedFd>,
    /// how many files and directories may be held by fd: a sixteenth of
    /// the fd limit (the inode store has three quarters); past that, by
    /// file handle where handles work, so tracking any number of files
    /// costs no fd each (an app creating tens of thousands of files between
    /// syncs otherwise ran the daemon out of fds)
    fd_budget: usize,
    graves: OwnedFd,
    undo: OwnedFd,
    state: Mutex<State>,
    gate: RwLock<()>,
    crashed: AtomicBool,
    next_grave: AtomicU64,
}

fn warn(what: &str, e: &io::Error) -> usize {
    tracing::warn!("crash simulation: {what}: {e}");
    1
}

/// The entries of the directory behind `fd` (which may be an `O_PATH` fd),
/// without `.` and `..`.
pub(super) fn list_entries(fd: BorrowedFd<'_>) -> io::Result<Vec<platform::DirEntry>> {
    let fd = platform::reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut buf = vec![0u8; 32 << 10];
    let mut all = Vec::new();
    loop {
        let entries = platform::getdents(fd.as_fd(), &mut buf)?;
        if entries.is_empty() {
            return Ok(all);
        }
        all.extend(
            entries
                .into_iter()
                .filter(|e| e.name != b"." && e.name != b".."),
        );
    }
}

/// The names in the directory behind `fd`.
fn list_names(fd: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    list_entries(fd)?
        .into_iter()
        .map(|e| CString::new(e.name).map_err(io::Error::other))
        .collect()
}

/// Removes `name` in `dir`, whatever it is (a directory with its contents).
fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match platform::unlink_at(dir, name, false) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {
            let sub = platform::open_path_at(dir, name)?;
            for n in list_names(sub.as_fd())? {
                remove_tree(sub.as_fd(), &n)?;
            }
            platform::unlink_at(dir, name, true)
        }
        r => r,
    }
}

impl CrashSim {
    /// Starts tracking on the backing tree at `root`; a graveyard left by an
    /// earlier mount (files it had deleted) is emptied first.
    pub fn new(root: BorrowedFd<'_>) -> io::Result<CrashSim> {
        let root = platform::reopen(root, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let root_path = platform::fd_path(root.as_fd())?;
        let root_dev = platform::dev_ino(&platform::stat_fd(root.as_fd())?).0;
        let mount = platform::probe_handles(root.as_fd());
        if platform::stat_at(root.as_fd(), CRASH_DIR).is_ok() {
            remove_tree(root.as_fd(), CRASH_DIR)?;
        }
        platform::mkdir_at(root.as_fd(), CRASH_DIR, 0o700)?;
        let graves = platform::open_at(
            root.as_fd(),
            CRASH_DIR,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        let undo = platform::anonymous_file_in(graves.as_fd())?;
        Ok(CrashSim {
            root,
            root_path,
            root_dev,
            mount,
            fd_budget: (platform::nofile_limit() as usize / 16).max(16),
            graves,
            undo,
            state: Mutex::new(State::default()),
            gate: RwLock::new(()),
            crashed: AtomicBool::new(false),
            next_grave: AtomicU64::new(0),
        })
    }

    /// Held by every tracked operation while it runs, so a crash sees none
    /// half done. After a crash that ends the mount, operations fail with EIO
    /// as the app would have died.
    pub fn enter(&self) -> io::Result<RwLockReadGuard<'_, ()>> {
        let g = self.gate.read().expect("crash gate poisoned");
        if self.crashed.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(g)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("crash state poisoned")
    }

    /// Holds the inode behind `fd` (attributes `st`): reopened with `flags`
    /// (`O_RDWR` falls back to `O_RDONLY`) while under the fd budget, else
    /// by file handle where handles work on it. `fds` counts the fds held.
    fn hold(
        &self,
        fds: &mut usize,
        fd: BorrowedFd<'_>,
        st: &platform::Stat,
        flags: i32,
    ) -> io::Result<Held> {
        if *fds >= self.fd_budget
            && platform::dev_ino(st).0 == self.root_dev
            && self.mount.is_some()
            && let Ok(h) = platform::name_to_handle(fd)
        {
            return Ok(Held::Handle(h));
        }
        let own = read_only_if_refused(flags, |f| platform::reopen(fd, f))?;
        *fds += 1;
        Ok(Held::Fd(own))
    }

    /// An fd on a held inode: its own, or opened from its handle with
    /// `flags` (`O_RDWR` falls back to `O_RDONLY`, as when it was held).
    fn lend<'a>(&self, held: &'a Held, flags: i32) -> io::Result<Lent<'a>> {
        match held {
            Held::Fd(fd) => Ok(Lent::Borrowed(fd.as_fd())),
            Held::Handle(h) => {
                let mount = self
                    .mount
                    .as_ref()
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))?;
                read_only_if_refused(flags, |f| platform::open_by_handle(mount.as_fd(), h, f))
                    .map(Lent::Owned)
            }
        }
    }

    /// Called before `len` bytes at `offset` of the file behind `fd` change
    /// (a write, copy, hole punch): saves the pages it overwrites that were
    /// durable.
    pub fn before_write(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        let st = platform::stat_fd(fd)?;
        let mut s = self.state();
        let s = &mut *s;
        let file = match s.files.entry(key_of(&st)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let held = self.hold(&mut s.fds, fd, &st, libc::O_RDWR)?;
                let first_path = matches!(held, Held::Handle(_)).then(|| self.path_of(fd));
                v.insert(FileUndo {
                    held,
                    durable_size: st.st_size as u64,
                    pages: BTreeMap::new(),
                    truncated_to: None,
                    first_path,
                })
            }
        };
        if len == 0 || offset >= file.durable_size {
            return Ok(());
        }
        let last = (offset + len - 1).min(file.durable_size - 1) / PAGE;
        let mut page = [0u8; PAGE as usize];
        let mut own = None;
        for p in offset / PAGE..=last {
            if file.pages.contains_key(&p) {
                continue;
            }
            if own.is_none() {
                own = Some(self.lend(&file.held, libc::O_RDONLY)?);
            }
            let own = own.as_ref().expect("just set");
            let n = platform::pread(own.as_fd(), &mut page, p * PAGE)?;
            page[n..].fill(0);
            let slot = s.free.pop().unwrap_or_else(|| {
                s.slots += 1;
                s.slots - 1
            });
            platform::pwrite(self.undo.as_fd(), &page, slot * PAGE)?;
            file.pages.insert(p, slot);
        }
        Ok(())
    }

    /// Called before the file behind `fd` is truncated to `size`.
    pub fn before_truncate(&self, fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
        self.before_write(fd, size, u64::MAX / 2 - size)?;
        let st = platform::stat_fd(fd)?;
        if size < st.st_size as u64
            && let Some(f) = self.state().files.get_mut(&key_of(&st))
        {
            f.truncated_to = Some(f.truncated_to.map_or(size, |t| t.min(size)));
        }
        Ok(())
    }

    /// The file behind `fd` was synced: all of it is durable now.
    pub fn file_synced(&self, fd: BorrowedFd<'_>) {
        let Ok(st) = platform::stat_fd(fd) else {
            return;
        };
        let mut s = self.state();
        if let Some(f) = s.files.remove(&key_of(&st)) {
            s.fds -= usize::from(matches!(f.held, Held::Fd(_)));
            s.free.extend(f.pages.into_values());
        }
        if s.slots > 0 && s.free.len() as u64 == s.slots {
            // Nothing saved is needed any more: give the space back.
            s.free.clear();
            s.slots = 0;
            if let Err(e) = platform::ftruncate(self.undo.as_fd(), 0) {
                warn("emptying the undo file", &e);
            }
        }
    }

    /// The directory behind `fd` was synced: the changes it holds are durable.
    pub fn dir_synced(&self, fd: BorrowedFd<'_>) {
        let Ok(st) = platform::stat_fd(fd) else {
            return;
        };
        let key = key_of(&st);
        let mut s = self.state();
        let mut done = Vec::new();
        s.log.retain_mut(|r| {
            if r.home() == key {
                if let Some(Victim::Grave(g)) = r.victim() {
                    done.push(g.clone());
                }
                false
            } else {
                true
            }
        });
        // Directories named only by changes now durable are let go.
        let named: std::collections::HashSet<Key> = s.log.iter().flat_map(Record::dirs).collect();
        let State { dirs, fds, .. } = &mut *s;
        dirs.retain(|k, h| {
            let keep = named.contains(k);
            if !keep && matches!(h, Held::Fd(_)) {
                *fds -= 1;
            }
            keep
        });
        drop(s);
        for g in done {
            if let Err(e) = platform::unlink_at(self.graves.as_fd(), &g, false) {
                warn("freeing a graveyard entry", &e);
            }
        }
    }

    fn keep(&self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Victim>> {
        let st = match platform::stat_at(dir, name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        if platform::is_dir(&st) {
            return Ok(Some(Victim::Dir {
                mode: platform::mode_of(&st) & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
            }));
        }
        let grave = CString::new(format!(
            "{}",
            self.next_grave.fetch_add(1, Ordering::Relaxed)
        ))
        .map_err(io::Error::other)?;
        let fd = platform::open_path_at(dir, name)?;
        platform::link_fd(fd.as_fd(), self.graves.as_fd(), &grave)?;
        Ok(Some(Victim::Grave(grave)))
    }

    /// Keeps what `change` is about to remove or replace.
    pub fn prepare(&self, change: Change<'_>) -> io::Result<Prepared> {
        let victim = match change {
            Change::Create { .. } => None,
            Change::Remove { dir, name } => self.keep(dir, name)?,
            Change::Rename {
                to, to_name, flags, ..
            } => {
                if flags & (platform::RENAME_NOREPLACE | platform::RENAME_EXCHANGE) != 0 {
                    None
                } else {
                    self.keep(to, to_name)?
                }
            }
        };
        Ok(Prepared { victim })
    }

    fn dir_key(&self, s: &mut State, fd: BorrowedFd<'_>) -> io::Result<Key> {
        let st = platform::stat_fd(fd)?;
        let key = key_of(&st);
        if !s.dirs.contains_key(&key) {
            let held = self.hold(&mut s.fds, fd, &st, platform::O_PATH)?;
            s.dirs.insert(key, held);
        }
        Ok(key)
    }

    /// Records a change that succeeded (or, if `ok` is false, drops what
    /// was kept for it).
    pub fn record(&self, change: Change<'_>, prep: Prepared, ok: bool) {
        if !ok {
            if let Some(Victim::Grave(g)) = prep.victim {
                let _ = platform::unlink_at(self.graves.as_fd(), &g, false);
            }
            return;
        }
        let mut s = self.state();
        let rec = (|| -> io::Result<Record> {
            Ok(match change {
                Change::Create { dir, name } => Record::Created {
                    dir: self.dir_key(&mut s, dir)?,
                    name: name.to_owned(),
                },
                Change::Remove { dir, name } => Record::Removed {
                    dir: self.dir_key(&mut s, dir)?,
                    name: name.to_owned(),
                    victim: prep.victim,
                },
                Change::Rename {
                    from,
                    from_name,
                    to,
                    to_name,
                    flags,
                } => Record::Renamed {
                    from: self.dir_key(&mut s, from)?,
                    from_name: from_name.to_owned(),
                    to: self.dir_key(&mut s, to)?,
                    to_name: to_name.to_owned(),
                    victim: prep.victim,
                    exchange: flags & platform::RENAME_EXCHANGE != 0,
                },
            })
        })();
        match rec {
            Ok(r) => s.log.push(r),
            Err(e) => {
                warn("recording a directory change", &e);
            }
        }
    }

    fn path_of(&self, fd: BorrowedFd<'_>) -> String {
        let p = platform::fd_path(fd).unwrap_or_default();
        let rel = p.strip_prefix(self.root_path.as_slice()).unwrap_or(&p);
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        String::from_utf8_lossy(rel).into_owned()
    }

    /// What a power cut now would lose: per file, per directory change.
    pub fn report(&self) -> serde_json::Value {
        let s = self.state();
        let mut files: Vec<serde_json::Value> = s
            .files
            .values()
            .map(|f| {
                let fd = self.lend(&f.held, platform::O_PATH);
                let size = fd
                    .as_ref()
                    .ok()
                    .and_then(|fd| platform::stat_fd(fd.as_fd()).ok())
                    .map_or(0, |st| st.st_size as u64);
                serde_json::json!({
                    "path": fd
                        .map(|fd| self.path_of(fd.as_fd()))
                        .ok()
                        .filter(|p| !p.is_empty())
                        .or_else(|| f.first_path.clone())
                        .unwrap_or_default(),
                    "durable_size": f.durable_size,
                    "size": size,
                    "overwritten_pages": f.pages.len(),
                    "unsynced_bytes": (f.pages.len() as u64 * PAGE).min(f.durable_size)
                        + size.saturating_sub(f.durable_size),
                })
            })
            .collect();
        files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        let name = |k: &Key, n: &CStr| {
            let dir = s
                .dirs
                .get(k)
                .and_then(|h| self.lend(h, platform::O_PATH).ok())
                .map(|fd| self.path_of(fd.as_fd()))
                .unwrap_or_default();
            let n = String::from_utf8_lossy(n.to_bytes()).into_owned();
            if dir.is_empty() {
                n
            } else {
                format!("{dir}/{n}")
            }
        };
        let dirs: Vec<serde_json::Value> = s
            .log
            .iter()
            .map(|r| match r {
                Record::Created { dir, name: n } => {
                    serde_json::json!({"op": "create", "path": name(dir, n)})
                }
                Record::Removed { dir, name: n, .. } => {
                    serde_json::json!({"op": "remove", "path": name(dir, n)})
                }
                Record::Renamed {
                    from,
                    from_name,
                    to,
                    to_name,
                    ..
                } => serde_json::json!({
                    "op": "rename",
                    "from": name(from, from_name),
                    "path": name(to, to_name),
                }),
            })
            .collect();
        serde_json::json!({ "files": files, "dir_changes": dirs })
    }

    /// The simulated power cut. With `end`, every later tracked operation
    /// fails (the mount is about to go); otherwise tracking starts afresh.
    pub fn crash(&self, mode: CrashMode, end: bool) -> CrashOutcome {
        let _g = self.gate.write().expect("crash gate poisoned");
        let mut s = self.state();
        let mut out = CrashOutcome::default();
        let mut rng = match mode {
            CrashMode::LoseAll => None,
            CrashMode::Torn(seed) => Some(super::SeededRng::new(seed)),
        };
        let mut coin = move || rng.as_mut().is_some_and(|r| r.next() >> 63 == 1);
        // Files in a stable order, so a seed always tears the same way.
        let mut files: Vec<(Key, FileUndo)> = s.files.drain().collect();
        files.sort_by_key(|(k, _)| *k);
        for (k, f) in &files {
            out.files += 1;
            out.errors += self.roll_back(f, &mut coin, &mut out);
            out.stale.inodes.push(*k);
        }
        let log = std::mem::take(&mut s.log);
        for r in log.iter().rev() {
            out.dir_changes_undone += 1;
            if let Err(e) = self.undo(&s, r) {
                out.errors += warn("undoing a directory change", &e);
            }
        }
        for r in &log {
            for (dir, name) in r.names() {
                out.stale.inodes.push(*dir);
                // What the name holds now (a restored file, a moved-back
                // directory) has another link count or parent.
                if let Ok(d) = self.dir(&s, dir)
                    && let Ok(st) = platform::stat_at(d.as_fd(), name)
                {
                    out.stale.inodes.push(key_of(&st));
                }
                out.stale.entries.push((*dir, name.clone()));
            }
        }
        out.stale.inodes.sort_unstable();
        out.stale.inodes.dedup();
        s.dirs.clear();
        s.fds = 0;
        s.free.clear();
        s.slots = 0;
        if let Err(e) = platform::ftruncate(self.undo.as_fd(), 0) {
            out.errors += warn("emptying the undo file", &e);
        }
        self.empty_graveyard(&mut out);
        if end {
            self.crashed.store(true, Ordering::Relaxed);
            if let Err(e) = remove_tree(self.root.as_fd(), CRASH_DIR) {
                out.errors += warn("removing the graveyard", &e);
            }
        }
        tracing::info!(
            "simulated power cut: {} files rolled back ({} pages restored, {} kept), {} directory changes undone, {} errors",
            out.files,
            out.pages_restored,
            out.pages_kept,
            out.dir_changes_undone,
            out.errors
        );
        out
    }

    fn roll_back(
        &self,
        f: &FileUndo,
        coin: &mut impl FnMut() -> bool,
        out: &mut CrashOutcome,
    ) -> usize {
        let mut errors = 0;
        // Torn: a truncation may have reached the disk (metadata is
        // journaled on its own schedule) while the data written after it
        // did not. Below `floor` the durable contents stand.
        let floor = match f.truncated_to {
            Some(t) if coin() => t,
            _ => f.durable_size,
        };
        let fd = match self.lend(&f.held, libc::O_RDWR) {
            Ok(fd) => fd,
            Err(e) => return errors + warn("reopening a file", &e),
        };
        let size = match platform::stat_fd(fd.as_fd()) {
            Ok(st) => st.st_size as u64,
            Err(e) => return errors + warn("reading a file's size", &e),
        };
        let mut page = [0u8; PAGE as usize];
        for (&p, &slot) in &f.pages {
            if p * PAGE >= floor {
                continue;
            }
            if coin() {
                out.pages_kept += 1;
                continue;
            }
            let len = (floor - p * PAGE).min(PAGE) as usize;
            let r = platform::pread(self.undo.as_fd(), &mut page, slot * PAGE)
                .and_then(|_| platform::pwrite(fd.as_fd(), &page[..len], p * PAGE));
            match r {
                Ok(_) => out.pages_restored += 1,
                Err(e) => errors += warn("restoring a page", &e),
            }
        }
        // Pages past the floor: each kept or lost (a hole).
        let mut keep_to = floor;
        if size > floor {
            for p in floor.div_ceil(PAGE)..size.div_ceil(PAGE) {
                if coin() {
                    out.pages_kept += 1;
                    keep_to = size;
                } else {
                    let len = (size - p * PAGE).min(PAGE);
                    let r = platform::fallocate(
                        fd.as_fd(),
                        platform::FALLOC_FL_PUNCH_HOLE | platform::FALLOC_FL_KEEP_SIZE,
                        p * PAGE,
                        len,
                    );
                    if let Err(e) = r {
                        errors += warn("dropping an unsynced page", &e);
                    }
                }
            }
        }
        if size != keep_to {
            // A size restored past the current end is zero-filled there:
            // the durable pages beyond it come back from the undo file.
            if let Err(e) = platform::ftruncate(fd.as_fd(), keep_to) {
                errors += warn("restoring a file's size", &e);
            }
        }
        errors
    }

    fn dir<'a>(&self, s: &'a State, k: &Key) -> io::Result<Lent<'a>> {
        let held = s
            .dirs
            .get(k)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))?;
        self.lend(held, platform::O_PATH | libc::O_DIRECTORY)
    }

    fn restore(&self, victim: &Victim, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        match victim {
            Victim::Grave(g) => platform::rename_at(self.graves.as_fd(), g, dir, name, 0),
            Victim::Dir { mode, uid, gid } => {
                platform::mkdir_at(dir, name, *mode)?;
                let fd = platform::open_path_at(dir, name)?;
                platform::chmod_fd(fd.as_fd(), *mode)?;
                platform::chown_fd(fd.as_fd(), *uid, *gid)
            }
        }
    }

    fn undo(&self, s: &State, r: &Record) -> io::Result<()> {
        match r {
            Record::Created { dir, name } => match remove_tree(self.dir(s, dir)?.as_fd(), name) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                r => r,
            },
            Record::Removed { dir, name, victim } => match victim {
                Some(v) => {
                    let dir = self.dir(s, dir)?;
                    let _ = remove_tree(dir.as_fd(), name);
                    self.restore(v, dir.as_fd(), name)
                }
                None => Ok(()),
            },
            Record::Renamed {
                from,
                from_name,
                to,
                to_name,
                victim,
                exchange,
            } => {
                let (from, to) = (self.dir(s, from)?, self.dir(s, to)?);
                let (from, to) = (from.as_fd(), to.as_fd());
                if *exchange {
                    return platform::rename_at(
                        to,
                        to_name,
                        from,
                        from_name,
                        platform::RENAME_EXCHANGE,
                    );
                }
                platform::rename_at(to, to_name, from, from_name, 0)?;
                match victim {
                    Some(v) => self.restore(v, to, to_name),
                    None => Ok(()),
                }
            }
        }
    }

    fn empty_graveyard(&self, out: &mut CrashOutcome) {
        match list_names(self.graves.as_fd()) {
            Ok(names) => {
                for n in names {
                    if let Err(e) = remove_tree(self.graves.as_fd(), &n) {
                        out.errors += warn("emptying the graveyard", &e);
                    }
                }
            }
            Err(e) => out.errors += warn("listing the graveyard", &e),
        }
    }

    /// Ends tracking when the mount goes (without a crash, everything the
    /// app did stands): the graveyard and its directory are removed.
    pub fn finish(&self) {
        let _g = self.gate.write().expect("crash gate poisoned");
        // A crash that ended the mount has removed it already.
        if self.crashed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = remove_tree(self.root.as_fd(), CRASH_DIR) {
            warn("removing the graveyard", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    struct Sim {
        _dir: tempfile::TempDir,
        root: OwnedFd,
        sim: CrashSim,
    }

    fn sim() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let root = platform::open_dir_path(dir.path()).unwrap();
        let sim = CrashSim::new(root.as_fd()).unwrap();
        Sim {
            _dir: dir,
            root,
            sim,
        }
    }

    impl Sim {
        /// A file of `pages` durable pages, page i filled with byte i.
        fn durable_file(&self, name: &CStr, pages: u64) -> std::fs::File {
            let fd =
                platform::open_at(self.root.as_fd(), name, libc::O_CREAT | libc::O_RDWR, 0o644)
                    .unwrap();
            let f = std::fs::File::from(fd);
            for i in 0..pages {
                f.write_all_at(&[i as u8; PAGE as usize], i * PAGE).unwrap();
            }
            f
        }

        /// A write as the engine makes it: the simulator hears first.
        fn write(&self, f: &std::fs::File, data: &[u8], at: u64) {
            self.sim
                .before_write(f.as_fd(), at, data.len() as u64)
                .unwrap();
            f.write_all_at(data, at).unwrap();
        }

        fn undo_len(&self) -> u64 {
            platform::stat_fd(self.sim.undo.as_fd()).unwrap().st_size as u64
        }

        fn slots_in_use(&self) -> u64 {
            let s = self.sim.state();
            s.slots - s.free.len() as u64
        }
    }

    fn contents(f: &std::fs::File) -> Vec<u8> {
        let len = f.metadata().unwrap().len() as usize;
        let mut v = vec![0u8; len];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn only_overwritten_durable_pages_are_saved_and_a_crash_restores_them() {
        // Held by fd, and (budget 0) by file handle where handles work.
        for budget in [16, 0] {
            let mut t = sim();
            t.sim.fd_budget = budget;
            let f = t.durable_file(c"f", 3);
            let before = contents(&f);
            // Straddles pages 1 and 2: both saved, once each.
            t.write(&f, &[0xee; 100], 2 * PAGE - 50);
            t.write(&f, &[0xdd; 10], 2 * PAGE + 5);
            assert_eq!(t.slots_in_use(), 2);
            let by_handle = t.sim.state().fds == 0;
            assert_eq!(by_handle, budget == 0 && t.sim.mount.is_some());
            // Appends overwrite nothing durable: nothing saved.
            t.write(&f, &[0xcc; 3 * PAGE as usize], 3 * PAGE);
            assert_eq!(t.slots_in_use(), 2);
            let out = t.sim.crash(CrashMode::LoseAll, false);
            assert_eq!(out.files, 1);
            assert_eq!(out.pages_restored, 2);
            assert_eq!(out.errors, 0);
            assert!(contents(&f) == before, "not rolled back (budget {budget})");
        }
    }

    #[test]
    fn a_sync_makes_writes_durable_and_frees_the_undo_file() {
        let t = sim();
        let f = t.durable_file(c"f", 4);
        let g = t.durable_file(c"g", 1);
        t.write(&f, &[1; PAGE as usize * 4], 0);
        t.write(&g, &[2; 10], 0);
        assert_eq!(t.slots_in_use(), 5);
        assert_eq!(t.undo_len(), 5 * PAGE);
        t.sim.file_synced(f.as_fd());
        // g's page is still needed: the file keeps its length.
        assert_eq!(t.slots_in_use(), 1);
        assert_eq!(t.undo_len(), 5 * PAGE);
        t.sim.file_synced(g.as_fd());
        assert_eq!(t.undo_len(), 0, "the undo file was not emptied");
        // Freed slots are reused from the start.
        let synced = contents(&f);
        t.write(&f, &[3; 10], 0);
        assert_eq!(t.undo_len(), PAGE);
        let out = t.sim.crash(CrashMode::LoseAll, false);
        assert_eq!(out.pages_restored, 1);
        assert!(contents(&f) == synced, "the synced contents were not kept");
        assert_eq!(contents(&g)[..10], [2; 10]);
    }

    #[test]
    fn a_truncation_is_undone_with_the_data_it_cut() {
        let t = sim();
        let f = t.durable_file(c"f", 3);
        let before = contents(&f);
        t.sim.before_truncate(f.as_fd(), PAGE / 2).unwrap();
        f.set_len(PAGE / 2).unwrap();
        t.write(&f, b"new", PAGE / 2);
        t.sim.crash(CrashMode::LoseAll, false);
        assert!(contents(&f) == before, "the truncation was not undone");
    }

    #[test]
    fn torn_keeps_a_seeded_subset_the_same_way_each_time() {
        let run = |seed: u64| {
            let t = sim();
            let f = t.durable_file(c"f", 64);
            for p in 0..64 {
                t.write(&f, &[0xff; 8], p * PAGE);
            }
            let out = t.sim.crash(CrashMode::Torn(seed), false);
            (out.pages_kept, contents(&f))
        };
        let (kept, a) = run(7);
        assert!(kept > 0 && kept < 64, "kept {kept} of 64");
        assert!(
            run(7) == (kept, a.clone()),
            "the same seed tore differently"
        );
        assert!(run(8).1 != a, "another seed tore the same way");
    }

    #[test]
    fn directory_changes_last_only_once_their_directory_is_synced() {
        let t = sim();
        let root = t.root.as_fd();
        let make = |name: &CStr| {
            let c = Change::Create { dir: root, name };
            let prep = t.sim.prepare(c).unwrap();
            drop(platform::open_at(root, name, libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap());
            t.sim.record(c, prep, true);
        };
        make(c"kept");
        let held = |sim: &CrashSim| {
            let s = sim.state();
            (s.dirs.len(), s.fds)
        };
        assert_eq!(held(&t.sim), (1, 1), "the changed directory is held");
        t.sim.dir_synced(root);
        assert_eq!(
            held(&t.sim),
            (0, 0),
            "and let go once its changes are durable"
        );
        make(c"lost");
        // An unsynced unlink of a durable file is undone from the graveyard.
        let gone = Change::Remove {
            dir: root,
            name: c"kept",
        };
        let prep = t.sim.prepare(gone).unwrap();
        platform::unlink_at(root, c"kept", false).unwrap();
        t.sim.record(gone, prep, true);
        let out = t.sim.crash(CrashMode::LoseAll, false);
        assert_eq!(out.dir_changes_undone, 2);
        assert_eq!(out.errors, 0);
        assert_eq!(held(&t.sim), (0, 0), "nothing held after the crash");
        assert!(
            platform::stat_at(root, c"kept").is_ok(),
            "the unlink survived"
        );
        assert!(
            platform::stat_at(root, c"lost").is_err(),
            "the create survived"
        );
    }
}
