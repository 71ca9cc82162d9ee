//! The engine's per-file state for frontends that name files by path (the
//! WinFsp frontend): the atomic stage and its commit, the group commit, the
//! pending interval sync, the preallocated end of an `append` file. What
//! each event leads to comes from [`super::plan`]; the file operations are
//! a [`PathOs`]'s, so the logic runs in Linux tests with std files and on
//! Windows with its handles.

use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::plan::{self, AfterWrite, AppSync, AtClose};
use super::{GroupCommit, SyncKind};
use crate::policy::{FilePolicy, WriteStrategy};

/// The file operations the by-path engine needs.
pub trait PathOs {
    /// An open file.
    type File: Send + Sync;
    /// Makes the file durable by `kind`.
    fn sync(file: &Self::File, kind: SyncKind) -> io::Result<()>;
    /// Creates a new file (for a stage), readable and writable.
    fn create_new(path: &Path) -> io::Result<Self::File>;
    /// Gives `to` (a new stage) the access rights of the file at `from`
    /// (its mode on Unix, its DACL on Windows), which the commit would
    /// otherwise replace with the directory's defaults.
    fn copy_access(from: &Path, to: &Self::File) -> io::Result<()>;
    /// Opens an existing file to read it.
    fn open_read(path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file to sync it.
    fn open_write(path: &Path) -> io::Result<Self::File>;
    /// Copies all of `src` into `dst`.
    fn copy(src: &Self::File, dst: &Self::File) -> io::Result<()>;
    /// Renames `from` over `to`, replacing it, written through.
    fn replace(from: &Path, to: &Path) -> io::Result<()>;
    /// Syncs the directory holding `path`.
    fn sync_parent_dir(path: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(path: &Path) -> io::Result<()>;
    /// The file's size.
    fn size(file: &Self::File) -> io::Result<u64>;
    /// Sets the file's allocation to exactly `size` (releasing a
    /// preallocated tail).
    fn set_allocation(file: &Self::File, size: u64) -> io::Result<()>;
}

/// A stage: the hidden file an atomic file's writes go to until the commit.
struct Stage<F> {
    file: Arc<F>,
    path: PathBuf,
}

/// What the engine keeps per backing file while it is open.
pub struct PathFile<O: PathOs> {
    /// the policy of the open that opened it first
    policy: FilePolicy,
    /// the backing path (kept current across renames)
    path: Mutex<PathBuf>,
    stage: Mutex<Option<Stage<O::File>>>,
    /// the file at the path since the last atomic commit: every open of
    /// it reads and syncs through it from then on
    current: Mutex<Option<Arc<O::File>>>,
    commit: GroupCommit,
    /// writable opens not yet closed
    writers: AtomicUsize,
    /// how far an `append` file is preallocated
    reserved: AtomicU64,
    /// written since the last sync
    dirty: AtomicBool,
    /// when the pending interval sync is due
    due: Mutex<Option<(Instant, SyncKind)>>,
    os: PhantomData<O>,
}

impl<O: PathOs> PathFile<O> {
    /// The state of the file at `path`, opened first under `policy`, with
    /// `reserved` bytes allocated.
    pub fn new(policy: FilePolicy, path: PathBuf, reserved: u64) -> Self {
        PathFile {
            policy,
            path: Mutex::new(path),
            stage: Mutex::new(None),
            current: Mutex::new(None),
            commit: GroupCommit::default(),
            writers: AtomicUsize::new(0),
            reserved: AtomicU64::new(reserved),
            dirty: AtomicBool::new(false),
            due: Mutex::new(None),
            os: PhantomData,
        }
    }

    /// The backing path.
    pub fn path(&self) -> PathBuf {
        self.path.lock().expect("path poisoned").clone()
    }

    /// After `from` was renamed to `to`: the path follows if it was `from`
    /// or under it.
    pub fn renamed(&self, from: &Path, to: &Path) {
        let mut p = self.path.lock().expect("path poisoned");
        if let Ok(rest) = p.strip_prefix(from) {
            *p = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
        }
    }

    /// A writable open of the file begins.
    pub fn open_writer(&self) {
        self.writers.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether any writable open of the file is left.
    pub fn has_writers(&self) -> bool {
        self.writers.load(Ordering::Acquire) > 0
    }

    /// The stage, while there is one.
    pub fn stage_file(&self) -> Option<Arc<O::File>> {
        let st = self.stage.lock().expect("stage poisoned");
        st.as_ref().map(|s| s.file.clone())
    }

    /// The file an open's reads, writes and syncs go to. A `writer`'s: the
    /// stage while there is one, else the file the last commit put at the
    /// path, else its own. A reader's: always its own, the file as it was
    /// when opened — not a stage it has no part in, and, after a commit,
    /// the replaced file, as an open file replaced by a rename reads on the
    /// backing filesystem.
    pub fn data_file(&self, own: &Arc<O::File>, writer: bool) -> Arc<O::File> {
        if !writer {
            return own.clone();
        }
        self.stage_file().unwrap_or_else(|| {
            let current = self.current.lock().expect("current poisoned");
            current.clone().unwrap_or_else(|| own.clone())
        })
    }

    /// The stage, made as `name` beside the file (seeded with its contents
    /// if `seed`) when there is none.
    pub fn stage(&self, name: &str, seed: bool) -> io::Result<Arc<O::File>> {
        let mut st = self.stage.lock().expect("stage poisoned");
        if let Some(s) = &*st {
            return Ok(s.file.clone());
        }
        let target = self.path();
        let path = target.with_file_name(name);
        let file = O::create_new(&path)?;
        // The open may be write-only: the contents are read through a file
        // of the engine's own.
        let made = O::copy_access(&target, &file).and_then(|()| {
            if seed {
                O::open_read(&target).and_then(|src| O::copy(&src, &file))
            } else {
                Ok(())
            }
        });
        if let Err(e) = made {
            let _ = O::remove(&path);
            return Err(e);
        }
        let file = Arc::new(file);
        *st = Some(Stage {
            file: file.clone(),
            path,
        });
        Ok(file)
    }

    /// Drops the stage unused (the file is being deleted).
    pub fn discard_stage(&self) {
        if let Some(stage) = self.stage.lock().expect("stage poisoned").take() {
            let _ = O::remove(&stage.path);
        }
    }

    /// Syncs `file` (the file or its stage) by `kind`, shared with
    /// concurrent callers.
    pub fn sync(&self, file: &O::File, kind: SyncKind) -> io::Result<()> {
        self.dirty.store(false, Ordering::Release);
        self.commit.sync(|| O::sync(file, kind)).0
    }

    /// Syncs the stage, renames it over the target, syncs the directory.
    /// On failure the target keeps its old contents and the stage goes.
    pub fn commit(&self) -> io::Result<()> {
        let Some(stage) = self.stage.lock().expect("stage poisoned").take() else {
            return Ok(());
        };
        let target = self.path();
        let res = O::sync(&stage.file, plan::own_sync(&self.policy))
            .and_then(|()| O::replace(&stage.path, &target))
            .and_then(|()| O::sync_parent_dir(&target));
        match res {
            Ok(()) => *self.current.lock().expect("current poisoned") = Some(stage.file),
            Err(_) => {
                let _ = O::remove(&stage.path);
            }
        }
        self.dirty.store(false, Ordering::Release);
        res
    }

    /// The size or contents changed outside a write (truncation).
    pub fn touched(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// How far to preallocate once a write reaches `end`, if further.
    pub fn reserve_to(&self, policy: &FilePolicy, end: u64) -> Option<u64> {
        plan::reserve_to(policy, end, self.reserved.load(Ordering::Acquire))
    }

    /// The file is now allocated up to `to`.
    pub fn reserved(&self, to: u64) {
        self.reserved.store(to, Ordering::Release);
    }

    /// After a write to `file` by an open under `policy` (`staged`: it went
    /// to the stage): sync now or schedule the interval sync.
    pub fn wrote(&self, policy: &FilePolicy, file: &O::File, staged: bool) -> io::Result<()> {
        self.dirty.store(true, Ordering::Release);
        match plan::after_write(policy, staged) {
            AfterWrite::Sync(kind) => self.sync(file, kind),
            AfterWrite::Schedule(every, kind) => {
                let mut due = self.due.lock().expect("due poisoned");
                if due.is_none() {
                    *due = Some((Instant::now() + every, kind));
                }
                Ok(())
            }
            AfterWrite::Nothing => Ok(()),
        }
    }

    /// The pending interval sync, taken if it is due by `now`; else when
    /// it will be.
    pub fn take_due(&self, now: Instant) -> Result<SyncKind, Option<Instant>> {
        let mut due = self.due.lock().expect("due poisoned");
        match *due {
            Some((at, kind)) if at <= now => {
                *due = None;
                Ok(kind)
            }
            other => Err(other.map(|(at, _)| at)),
        }
    }

    /// The app's sync of an open under `policy` whose data file is `data`
    /// (a flush of the file, or of the whole volume).
    pub fn app_sync(&self, policy: &FilePolicy, data: &O::File) -> io::Result<()> {
        let staged = policy.write == WriteStrategy::Atomic && self.stage_file().is_some();
        match plan::app_sync(policy, staged, true) {
            AppSync::Commit => self.commit(),
            AppSync::Drop => Ok(()),
            AppSync::Sync(kind) => self.sync(data, kind),
        }
    }

    /// A writable open under `policy` whose data file is `data` closes;
    /// when it was the last: an append file's unused preallocation is
    /// released, a pending interval sync is done now (nothing is left to do
    /// it once the state goes), then the stage committed or the on-close
    /// sync done. Returns whether it was the last.
    pub fn close_writer(&self, policy: &FilePolicy, data: &O::File) -> io::Result<bool> {
        if self.writers.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(false);
        }
        if policy.write == WriteStrategy::Append {
            let size = O::size(data)?;
            if self.reserved.swap(size, Ordering::AcqRel) > size {
                O::set_allocation(data, size)?;
            }
        }
        let due = self.due.lock().expect("due poisoned").take();
        if let Some((_, kind)) = due {
            self.sync(data, kind)?;
        }
        let staged = policy.write == WriteStrategy::Atomic && self.stage_file().is_some();
        let dirty = self.dirty.load(Ordering::Acquire);
        match plan::at_close(policy, staged, dirty) {
            AtClose::Commit => self.commit()?,
            AtClose::Sync(kind) => self.sync(data, kind)?,
            AtClose::Nothing => {}
        }
        Ok(true)
    }

    /// At unmount: commit a pending stage, do a pending interval sync.
    pub fn shutdown(&self) -> io::Result<()> {
        if self.stage_file().is_some() {
            return self.commit();
        }
        let due = self.due.lock().expect("due poisoned").take();
        if let Some((_, kind)) = due {
            self.sync_at_path(kind)?;
        }
        Ok(())
    }

    /// Syncs the file now at the path by `kind` (an interval sync, which
    /// no open's handle is at hand for).
    pub fn sync_at_path(&self, kind: SyncKind) -> io::Result<()> {
        let f = O::open_write(&self.path())?;
        self.sync(&f, kind)
    }

    /// The policy of the open that opened the file first.
    pub fn policy(&self) -> &FilePolicy {
        &self.policy
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use std::fs::{self, File};
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;
    use std::time::Duration;

    /// What the test OS did, in order.
    static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
    /// Makes the next replace fail.
    static FAIL_REPLACE: AtomicBool = AtomicBool::new(false);
    /// One test at a time: they share the log.
    static SERIAL: Mutex<()> = Mutex::new(());

    struct StdOs;

    fn log(s: String) {
        LOG.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    /// One test at a time; a failed one does not fail the others.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        take_log();
        FAIL_REPLACE.store(false, Ordering::SeqCst);
        g
    }

    fn name(p: &Path) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    impl PathOs for StdOs {
        type File = File;
        fn sync(file: &File, kind: SyncKind) -> io::Result<()> {
            log(format!("sync {kind:?}"));
            file.sync_all()
        }
        fn create_new(path: &Path) -> io::Result<File> {
            log(format!("create {}", name(path)));
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
        }
        fn copy_access(from: &Path, to: &File) -> io::Result<()> {
            log(format!("access {}", name(from)));
            to.set_permissions(std::fs::metadata(from)?.permissions())
        }
        fn open_read(path: &Path) -> io::Result<File> {
            File::open(path)
        }
        fn open_write(path: &Path) -> io::Result<File> {
            File::options().write(true).open(path)
        }
        fn copy(src: &File, dst: &File) -> io::Result<()> {
            let mut buf = Vec::new();
            (&*src).read_to_end(&mut buf)?;
            (&*dst).write_all(&buf)
        }
        fn replace(from: &Path, to: &Path) -> io::Result<()> {
            log(format!("replace {} -> {}", name(from), name(to)));
            if FAIL_REPLACE.swap(false, Ordering::SeqCst) {
                return Err(io::Error::other("refused"));
            }
            fs::rename(from, to)
        }
        fn sync_parent_dir(path: &Path) -> io::Result<()> {
            log(format!("sync dir of {}", name(path)));
            Ok(())
        }
        fn remove(path: &Path) -> io::Result<()> {
            log(format!("remove {}", name(path)));
            fs::remove_file(path)
        }
        fn size(file: &File) -> io::Result<u64> {
            Ok(file.metadata()?.len())
        }
        fn set_allocation(file: &File, size: u64) -> io::Result<()> {
            log(format!("allocation {size}"));
            file.set_len(size)
        }
    }

    fn policy(keys: &str) -> FilePolicy {
        let text = format!("version = 1\n[defaults]\n{keys}\n");
        Policy::parse(&text, "test").unwrap().0.resolve(b"f")
    }

    fn take_log() -> Vec<String> {
        std::mem::take(&mut *LOG.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn setup(keys: &str) -> (tempfile::TempDir, PathBuf, FilePolicy, PathFile<StdOs>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let fp = policy(keys);
        let pf = PathFile::<StdOs>::new(fp.clone(), path.clone(), 0);
        take_log();
        (dir, path, fp, pf)
    }

    #[test]
    fn atomic_writes_stay_in_the_stage_until_the_last_close_commits_them() {
        let _s = serial();
        let (_d, path, fp, pf) = setup("write = \"atomic\"\nsync = \"on-close\"");
        let mut perms = fs::metadata(&path).unwrap().permissions();
        perms.set_readonly(true);
        fs::set_permissions(&path, perms).unwrap();
        let own = Arc::new(File::open(&path).unwrap());
        let reader = Arc::new(File::open(&path).unwrap());
        pf.open_writer();
        let stage = pf.stage(".durafs-stage-1", true).unwrap();
        assert!(Arc::ptr_eq(&pf.data_file(&own, true), &stage));
        assert!(Arc::ptr_eq(&pf.data_file(&reader, false), &reader));
        stage.write_all_at(b"new!", 0).unwrap();
        pf.wrote(&fp, &stage, true).unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            b"old",
            "target untouched before the commit"
        );
        assert!(pf.close_writer(&fp, &pf.data_file(&own, true)).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"new!");
        assert!(
            fs::metadata(&path).unwrap().permissions().readonly(),
            "the replaced file lost the target's access rights"
        );
        assert!(!path.with_file_name(".durafs-stage-1").exists());
        assert_eq!(
            take_log(),
            [
                "create .durafs-stage-1",
                "access f",
                "sync Data",
                "replace .durafs-stage-1 -> f",
                "sync dir of f"
            ]
        );
        // Later reads of a writer go to the committed file; a reader opened
        // before the commit keeps reading the file it opened.
        let mut buf = [0u8; 4];
        pf.data_file(&own, true).read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"new!");
        let mut old = [0u8; 3];
        pf.data_file(&reader, false)
            .read_exact_at(&mut old, 0)
            .unwrap();
        assert_eq!(&old, b"old");
    }

    #[test]
    fn a_failed_commit_keeps_the_old_contents_and_drops_the_stage() {
        let _s = serial();
        let (_d, path, fp, pf) = setup("write = \"atomic\"\nsync = \"on-close\"");
        pf.open_writer();
        let stage = pf.stage(".durafs-stage-2", true).unwrap();
        stage.write_all_at(b"torn", 0).unwrap();
        FAIL_REPLACE.store(true, Ordering::SeqCst);
        assert!(pf.app_sync(&fp, &stage).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert!(!path.with_file_name(".durafs-stage-2").exists());
        assert!(pf.stage_file().is_none());
    }

    #[test]
    fn always_syncs_every_write_and_on_close_only_a_dirty_file() {
        let _s = serial();
        let (_d, path, fp, pf) = setup("sync = \"always\"\nmethod = \"full\"");
        let f = File::options().write(true).open(&path).unwrap();
        pf.wrote(&fp, &f, false).unwrap();
        pf.wrote(&fp, &f, false).unwrap();
        assert_eq!(take_log(), ["sync Full", "sync Full"]);

        let (_d, path, fp, pf) = setup("sync = \"on-close\"");
        let f = File::options().write(true).open(&path).unwrap();
        pf.open_writer();
        pf.open_writer();
        pf.wrote(&fp, &f, false).unwrap();
        assert!(!pf.close_writer(&fp, &f).unwrap(), "not the last writer");
        assert!(take_log().is_empty());
        assert!(pf.close_writer(&fp, &f).unwrap());
        assert_eq!(take_log(), ["sync Data"]);
        pf.open_writer();
        assert!(pf.close_writer(&fp, &f).unwrap());
        assert!(take_log().is_empty(), "nothing written since the last sync");
    }

    #[test]
    fn interval_syncs_come_due_and_a_close_does_the_pending_one() {
        let _s = serial();
        let (_d, path, fp, pf) = setup("sync = { interval = \"50ms\" }");
        let f = File::options().write(true).open(&path).unwrap();
        pf.open_writer();
        pf.wrote(&fp, &f, false).unwrap();
        let now = Instant::now();
        let at = pf.take_due(now).expect_err("not due yet").unwrap();
        assert!(at > now && at <= now + Duration::from_millis(50));
        assert_eq!(pf.take_due(at), Ok(SyncKind::Data));
        assert_eq!(pf.take_due(at), Err(None), "taken once");
        pf.wrote(&fp, &f, false).unwrap();
        assert!(take_log().is_empty());
        assert!(pf.close_writer(&fp, &f).unwrap());
        assert_eq!(take_log(), ["sync Data"]);
        assert_eq!(
            pf.take_due(Instant::now() + Duration::from_secs(1)),
            Err(None)
        );
    }

    #[test]
    fn an_append_file_releases_its_preallocation_at_the_last_close() {
        let _s = serial();
        let (_d, path, fp, pf) = setup("write = \"append\"\npreallocate = \"1MiB\"");
        let f = File::options().write(true).open(&path).unwrap();
        pf.open_writer();
        let to = pf.reserve_to(&fp, 3).unwrap();
        assert_eq!(to, 1 << 20);
        f.set_len(to).unwrap();
        pf.reserved(to);
        assert_eq!(pf.reserve_to(&fp, 100), None);
        f.set_len(3).unwrap();
        assert!(pf.close_writer(&fp, &f).unwrap());
        assert_eq!(take_log(), ["allocation 3"]);
    }

    #[test]
    fn paths_follow_renames_of_the_file_and_of_its_directories() {
        let pf = PathFile::<StdOs>::new(policy(""), PathBuf::from("/v/a/b/f"), 0);
        pf.renamed(Path::new("/v/a/bb"), Path::new("/v/x"));
        assert_eq!(pf.path(), Path::new("/v/a/b/f"), "a sibling's rename");
        pf.renamed(Path::new("/v/a"), Path::new("/v/z"));
        assert_eq!(pf.path(), Path::new("/v/z/b/f"));
        pf.renamed(Path::new("/v/z/b/f"), Path::new("/v/g"));
        assert_eq!(pf.path(), Path::new("/v/g"));
    }
}
