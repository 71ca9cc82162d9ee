//! The durable-IO interface on real files: Linux's implementation against
//! ext4 and ramfs, and the shared logic (alignment, read-modify-write) on
//! a model that checks every write the OS layer receives.

use super::*;

/// A directory on the machine's disk (ext4 here; tmpfs cannot do
/// direct IO).
fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/var/tmp").unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Linux's implementation on real files: ext4 (direct IO) and ramfs (the
/// fallback).
#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use crate::platform::{
        advise, copy, direct_io_available, open_dir, preallocate, rename, sector_size,
        set_write_hint, sync_dir, sync_parent_dir,
    };
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    fn dir_fd(d: &Path) -> OwnedFd {
        open_dir(d).unwrap()
    }

    /// A new file `name` in `d`, direct if asked and possible.
    fn create(d: &Path, name: &CStr, direct: bool) -> DurableFile {
        DurableFile::open(dir_fd(d).as_fd(), name, Access::CreateNew, 0o644, direct).unwrap()
    }

    /// A ramfs mount, which refuses direct IO (tmpfs accepts it since
    /// Linux 6.6). Needs root, as the whole suite does.
    struct Ramfs(tempfile::TempDir);

    impl Ramfs {
        fn new() -> Ramfs {
            let d = tempfile::tempdir_in("/var/tmp").unwrap();
            let st = std::process::Command::new("mount")
                .args(["-t", "ramfs", "ramfs"])
                .arg(d.path())
                .status()
                .unwrap();
            assert!(st.success(), "mounting a ramfs needs root");
            Ramfs(d)
        }
    }

    impl Drop for Ramfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn direct_io_takes_effect_on_disk_and_falls_back_on_ramfs() {
        let d = disk_dir();
        let f = create(d.path(), c"a", true);
        assert!(
            f.is_direct(),
            "O_DIRECT should take effect on {}",
            d.path().display()
        );
        assert!(f.align().is_power_of_two() && f.align() >= 512);
        assert!(direct_io_available(dir_fd(d.path()).as_fd()));

        let r = Ramfs::new();
        let t = r.0.path();
        let f = create(t, c"a", true);
        assert!(!f.is_direct());
        assert_eq!(f.align(), 1);
        assert!(t.join("a").exists(), "the fallback keeps the created file");
        f.write_at(b"still works", 0).unwrap();
        assert_eq!(f.read_all().unwrap(), b"still works");
        assert!(!direct_io_available(dir_fd(t).as_fd()));
        drop(f);
    }

    /// Runs `f` on the system-call path and then on io_uring (registered
    /// buffers for direct writes), checking the latter was taken.
    fn on_both_io_paths(f: impl Fn()) {
        crate::platform::with_io_uring(false, &f);
        let before = crate::platform::registered_writes();
        crate::platform::with_io_uring(true, &f);
        assert!(
            crate::platform::registered_writes() > before,
            "direct writes should go through the registered io_uring buffer: {}",
            crate::platform::io_uring_status()
        );
    }

    #[test]
    fn unaligned_direct_writes_round_trip_exactly() {
        on_both_io_paths(unaligned_direct_writes_round_trip);
    }

    #[test]
    fn writes_past_the_end_and_appends_keep_the_exact_size() {
        on_both_io_paths(writes_past_the_end_and_appends);
    }

    fn unaligned_direct_writes_round_trip() {
        let d = disk_dir();
        for (i, n) in [1usize, 511, 4097, (1 << 20) + 3].into_iter().enumerate() {
            let name = std::ffi::CString::new(format!("f{i}")).unwrap();
            let f = create(d.path(), &name, true);
            assert!(f.is_direct());
            let data = pattern(n, i as u8);
            f.write_at(&data, 0).unwrap();
            assert_eq!(f.size().unwrap(), n as u64, "size exactly what was written");
            assert_eq!(f.read_all().unwrap(), data);
            assert_eq!(std::fs::read(d.path().join(format!("f{i}"))).unwrap(), data);
            // An unaligned overwrite in the middle keeps the bytes around it.
            let mut model = data.clone();
            let at = n / 3;
            let patch = pattern((n / 2).max(1), 99);
            let end = (at + patch.len()).min(n.max(at + patch.len()));
            if model.len() < end {
                model.resize(end, 0);
            }
            model[at..at + patch.len()].copy_from_slice(&patch);
            f.write_at(&patch, at as u64).unwrap();
            assert_eq!(f.read_all().unwrap(), model);
            let from = 3.min(model.len());
            let mut mid = vec![0; 700];
            let got = f.read_at(&mut mid, from as u64).unwrap();
            assert_eq!(got, 700.min(model.len() - from));
            assert_eq!(&mid[..got], &model[from..from + got]);
        }
    }

    fn writes_past_the_end_and_appends() {
        let d = disk_dir();
        let f = create(d.path(), c"g", true);
        f.write_at(b"abc", 10_000).unwrap();
        let mut want = vec![0u8; 10_003];
        want[10_000..].copy_from_slice(b"abc");
        assert_eq!(f.read_all().unwrap(), want);
        f.write(b"xyz").unwrap();
        want.extend_from_slice(b"xyz");
        assert_eq!(f.read_all().unwrap(), want);
        let a = DurableFile::open(dir_fd(d.path()).as_fd(), c"h", Access::Append, 0o644, false)
            .unwrap();
        a.write(b"one ").unwrap();
        a.write(b"two").unwrap();
        assert_eq!(a.read_all().unwrap(), b"one two");
        // A direct append file appends whole sectors at the right place.
        let b =
            DurableFile::open(dir_fd(d.path()).as_fd(), c"h", Access::Append, 0o644, true).unwrap();
        assert!(b.is_direct());
        b.write(b" three").unwrap();
        b.write(&[b'4'; 5000]).unwrap();
        let mut want = b"one two three".to_vec();
        want.extend_from_slice(&[b'4'; 5000]);
        assert_eq!(std::fs::read(d.path().join("h")).unwrap(), want);
    }

    #[test]
    fn aligned_writes_demand_alignment() {
        let d = disk_dir();
        let f = create(d.path(), c"a", true);
        let a = f.align();
        let mut buf = AlignedBuf::zeroed(2 * a, a);
        buf.fill(5);
        f.write_aligned_at(&buf, a as u64).unwrap();
        assert_eq!(f.size().unwrap(), 3 * a as u64);
        let bad = AlignedBuf::zeroed(a + 1, a);
        let e = f.write_aligned_at(&bad, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            f.write_aligned_at(&buf, 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn preallocate_reserves_blocks_without_changing_the_size() {
        let d = disk_dir();
        let f = create(d.path(), c"p", false);
        f.write_at(b"hello", 0).unwrap();
        let before = std::fs::metadata(d.path().join("p")).unwrap();
        assert!(preallocate(f.fd(), 0, 8 << 20).unwrap());
        let after = std::fs::metadata(d.path().join("p")).unwrap();
        assert_eq!(after.len(), 5);
        assert!(
            after.blocks() * 512 >= 8 << 20 && after.blocks() > before.blocks(),
            "{} -> {} blocks",
            before.blocks(),
            after.blocks()
        );
    }

    #[test]
    fn syncs_are_issued() {
        let d = disk_dir();
        let f = create(d.path(), c"s", false);
        let c0 = crate::platform::sync_counts();
        f.sync_data().unwrap();
        f.sync_full().unwrap();
        f.sync_barrier().unwrap();
        sync_dir(dir_fd(d.path()).as_fd()).unwrap();
        sync_parent_dir(&d.path().join("s")).unwrap();
        let c1 = crate::platform::sync_counts();
        // Other tests sync concurrently: at least ours are counted.
        assert!(c1.fdatasync - c0.fdatasync >= 2, "{c0:?} -> {c1:?}");
        assert!(c1.fsync - c0.fsync >= 3, "{c0:?} -> {c1:?}");
    }

    #[test]
    fn rename_modes() {
        let d = disk_dir();
        let dir = dir_fd(d.path());
        std::fs::write(d.path().join("a"), "A").unwrap();
        std::fs::write(d.path().join("b"), "B").unwrap();
        let e = rename(dir.as_fd(), c"a", dir.as_fd(), c"b", RenameMode::NoReplace).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        rename(dir.as_fd(), c"a", dir.as_fd(), c"b", RenameMode::Exchange).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "B");
        assert_eq!(std::fs::read_to_string(d.path().join("b")).unwrap(), "A");
        rename(dir.as_fd(), c"a", dir.as_fd(), c"b", RenameMode::Replace).unwrap();
        assert!(!d.path().join("a").exists());
        assert_eq!(std::fs::read_to_string(d.path().join("b")).unwrap(), "B");
        rename(dir.as_fd(), c"b", dir.as_fd(), c"c", RenameMode::NoReplace).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("c")).unwrap(), "B");
    }

    #[test]
    fn copy_copies_everything_across_filesystems_too() {
        let d = disk_dir();
        let data = pattern(3 << 20, 7);
        std::fs::write(d.path().join("src"), &data).unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        for target in [d.path().to_path_buf(), shm.path().to_path_buf()] {
            let src = std::fs::File::open(d.path().join("src")).unwrap();
            let dst = std::fs::File::create(target.join("dst")).unwrap();
            assert_eq!(copy(src.as_fd(), dst.as_fd()).unwrap(), data.len() as u64);
            assert_eq!(std::fs::read(target.join("dst")).unwrap(), data);
        }
    }

    #[test]
    fn sector_probe_is_a_power_of_two_and_hints_are_accepted() {
        let d = disk_dir();
        let f = std::fs::File::create(d.path().join("x")).unwrap();
        let s = sector_size(f.as_fd());
        assert!(s.is_power_of_two() && s >= 512, "{s}");
        advise(f.as_fd(), crate::policy::Advice::Sequential).unwrap();
        // Advisory: some kernels and filesystems refuse it; it must not panic.
        let _ = set_write_hint(f.as_fd(), crate::policy::WriteHint::Short);
    }
}

/// An OS that keeps files in memory and, like O_DIRECT, refuses any
/// direct read or write whose offset, length or buffer address is not
/// aligned: the shared direct-IO logic of every OS module runs against it.
#[derive(Debug)]
struct Model;

#[derive(Debug, Default)]
struct ModelFile {
    data: std::sync::Mutex<Vec<u8>>,
    direct: std::sync::atomic::AtomicBool,
    direct_ios: std::sync::atomic::AtomicUsize,
}

const MODEL_SECTOR: usize = 512;

impl ModelFile {
    fn check(&self, addr: usize, len: usize, offset: u64) -> io::Result<()> {
        if !self.direct.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.direct_ios.fetch_add(1, Ordering::Relaxed);
        let a = MODEL_SECTOR;
        if addr % a != 0 || len % a != 0 || offset % a as u64 != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }
}

impl Os for Model {
    type File = ModelFile;
    type Dir<'a> = ();

    fn open(_: (), _: &CStr, _: Access, _: u32) -> io::Result<ModelFile> {
        Ok(ModelFile::default())
    }
    fn set_direct(file: ModelFile) -> (ModelFile, io::Result<()>) {
        file.direct.store(true, Ordering::Relaxed);
        (file, Ok(()))
    }
    fn sector_size(_: &ModelFile) -> usize {
        MODEL_SECTOR
    }
    fn pread(file: &ModelFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        file.check(buf.as_ptr() as usize, buf.len(), offset)?;
        let data = file.data.lock().unwrap();
        let from = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - from);
        buf[..n].copy_from_slice(&data[from..from + n]);
        Ok(n)
    }
    fn pwrite(file: &ModelFile, buf: &[u8], offset: u64) -> io::Result<usize> {
        file.check(buf.as_ptr() as usize, buf.len(), offset)?;
        let mut data = file.data.lock().unwrap();
        let end = offset as usize + buf.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(buf);
        Ok(buf.len())
    }
    fn write(file: &ModelFile, buf: &[u8]) -> io::Result<usize> {
        let at = file.data.lock().unwrap().len() as u64;
        Self::pwrite(file, buf, at)
    }
    fn size(file: &ModelFile) -> io::Result<u64> {
        Ok(file.data.lock().unwrap().len() as u64)
    }
    fn set_size(file: &ModelFile, len: u64) -> io::Result<()> {
        file.data.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(_: &ModelFile) -> io::Result<()> {
        Ok(())
    }
    fn sync_full(_: &ModelFile) -> io::Result<()> {
        Ok(())
    }
    fn sync_barrier(_: &ModelFile, _: bool) -> io::Result<()> {
        Ok(())
    }
}

proptest::proptest! {
    /// Any mix of unaligned direct writes, appends and reads reads back
    /// exactly what a plain byte vector holds after the same writes, with
    /// the exact size, while the OS layer only ever sees aligned IO.
    #[test]
    fn direct_io_matches_a_byte_vector(
        ops in proptest::collection::vec((0u64..6000, 0usize..3000, proptest::bool::ANY), 1..24)
    ) {
        let f = DurableFileIn::<Model>::from_file(ModelFile::default(), true);
        proptest::prop_assert!(f.is_direct());
        proptest::prop_assert_eq!(f.align(), MODEL_SECTOR);
        let mut want: Vec<u8> = Vec::new();
        for (i, (offset, len, append)) in ops.into_iter().enumerate() {
            let data = pattern(len, i as u8);
            let at = if append { want.len() as u64 } else { offset };
            if append {
                f.write(&data).unwrap();
            } else {
                f.write_at(&data, offset).unwrap();
            }
            // A write of nothing changes nothing, not even the size.
            if len > 0 {
                let end = at as usize + len;
                if want.len() < end {
                    want.resize(end, 0);
                }
                want[at as usize..end].copy_from_slice(&data);
            }
            proptest::prop_assert_eq!(f.size().unwrap(), want.len() as u64);
            let mut mid = vec![0; len + 7];
            let got = f.read_at(&mut mid, offset).unwrap();
            let from = (offset as usize).min(want.len());
            let n = (len + 7).min(want.len() - from);
            proptest::prop_assert_eq!(got, n);
            proptest::prop_assert_eq!(&mid[..got], &want[from..from + n]);
        }
        proptest::prop_assert_eq!(f.read_all().unwrap(), want);
        proptest::prop_assert!(f.file().direct_ios.load(Ordering::Relaxed) > 0);
    }
}

#[test]
fn the_model_refuses_unaligned_direct_io() {
    // The oracle above can fail: a direct pwrite that is not padded is
    // refused, as O_DIRECT refuses it.
    let f = ModelFile::default();
    let (f, r) = Model::set_direct(f);
    r.unwrap();
    let buf = AlignedBuf::zeroed(MODEL_SECTOR, MODEL_SECTOR);
    assert!(Model::pwrite(&f, &buf, 0).is_ok());
    assert!(Model::pwrite(&f, &buf[..100], 0).is_err());
    assert!(Model::pwrite(&f, &buf, 3).is_err());
}

/// The standard-library implementation (unknown.rs, for OSes without a
/// module of their own) on Linux: the same round trips as the Linux one,
/// and honest refusals where std has no primitive.
mod portable {
    use super::*;
    use crate::platform::unknown::{self, Portable};

    #[test]
    fn round_trips_appends_and_falls_back_to_buffered() {
        let d = disk_dir();
        let dir = unknown::open_dir(d.path()).unwrap();
        assert!(unknown::open_dir(&d.path().join("none")).is_err());
        let f =
            DurableFileIn::<Portable>::open(&dir, c"p", Access::CreateNew, 0o644, true).unwrap();
        assert_eq!(unknown::sector_size(f.file().file()), 512);
        assert!(!f.is_direct(), "std has no direct IO");
        assert_eq!(f.align(), 1);
        f.write_at(b"hello world", 0).unwrap();
        f.write_at(b"W", 6).unwrap();
        assert_eq!(f.read_all().unwrap(), b"hello World");
        let mut b = [0u8; 5];
        assert_eq!(f.read_at(&mut b, 6).unwrap(), 5);
        assert_eq!(&b, b"World");
        f.sync_data().unwrap();
        f.sync_full().unwrap();
        f.sync_barrier().unwrap();
        let e = DurableFileIn::<Portable>::open(d.path(), c"p", Access::CreateNew, 0o644, false)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);

        let a =
            DurableFileIn::<Portable>::open(d.path(), c"p", Access::Append, 0o644, false).unwrap();
        a.write(b"!").unwrap();
        assert_eq!(std::fs::read(d.path().join("p")).unwrap(), b"hello World!");
        let r = DurableFileIn::<Portable>::open(d.path(), c"p", Access::Read, 0, false).unwrap();
        assert!(
            r.write_at(b"x", 0).is_err(),
            "a read-only open cannot write"
        );
    }

    #[test]
    fn dir_syncs_renames_and_copies() {
        let d = disk_dir();
        std::fs::write(d.path().join("a"), "A").unwrap();
        std::fs::write(d.path().join("b"), "B").unwrap();
        unknown::sync_dir(d.path()).unwrap();
        unknown::sync_parent_dir(&d.path().join("a")).unwrap();
        // std has no atomic no-replace or exchange: refused, not faked.
        for mode in [RenameMode::NoReplace, RenameMode::Exchange] {
            let e = unknown::rename(d.path(), c"a", d.path(), c"b", mode).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{mode:?}");
        }
        assert_eq!(std::fs::read_to_string(d.path().join("b")).unwrap(), "B");
        unknown::rename(d.path(), c"a", d.path(), c"b", RenameMode::Replace).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("b")).unwrap(), "A");
        assert!(!d.path().join("a").exists());

        let data = pattern(3 << 20, 3);
        std::fs::write(d.path().join("src"), &data).unwrap();
        let src = std::fs::File::open(d.path().join("src")).unwrap();
        let dst = std::fs::File::create(d.path().join("dst")).unwrap();
        assert_eq!(unknown::copy(&src, &dst).unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(d.path().join("dst")).unwrap(), data);
        assert!(!unknown::preallocate(&dst, 0, 1 << 20).unwrap());
        assert!(!unknown::direct_io_available(d.path()));
        assert_eq!(unknown::sector_size(&dst), 512);
        unknown::advise(&dst, crate::policy::Advice::Sequential).unwrap();
        unknown::set_write_hint(&dst, crate::policy::WriteHint::Short).unwrap();
    }
}
