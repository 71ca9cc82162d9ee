//! io_uring for the hot durability path:
//! - a write linked to its sync (IOSQE_IO_LINK) in one submission, so a
//!   `sync = "always"` write costs one system call instead of two;
//! - batches: up to [`MAX_BATCH`] writes and the sync, linked, in one
//!   submission;
//! - direct writes from a registered buffer (one per thread, pinned once)
//!   instead of a fresh aligned bounce buffer per write.
//!
//! One ring per thread that uses it (the FUSE workers), set up with the
//! best flags the kernel accepts; when io_uring is unavailable (old kernel,
//! `kernel.io_uring_disabled`, seccomp) or switched off, the same calls run
//! as pwrite + fdatasync.
//!
//! Measured here (`cargo bench --bench durable`, ext4 on virtio, 6.18):
//! 4 KiB write + fdatasync runs at 0.85-0.94x with io_uring and a linked
//! batch of 16 at 0.63x (the fsync is punted to an io-wq worker, which
//! costs more than the saved system calls), so linked writes and syncs take
//! the system calls unless switched on with [`set_io_uring_enabled`]; 1 MiB
//! direct writes from the registered buffer run at 2.4x the pwrite path,
//! so direct writes use it by default.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{IoUring, opcode, squeue, types};

use super::aligned::AlignedBuf;
use super::linux_durable::pwrite_all;

/// Which path a linked write+sync takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPath {
    /// io_uring if switched on and available, else the system calls (the
    /// default: they measured faster here)
    Auto,
    /// io_uring only: an error if it cannot be set up
    Uring,
    /// pwrite then fdatasync/fsync, two system calls
    Syscalls,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Whether direct writes use the registered buffer (they win here).
static REGISTERED: AtomicBool = AtomicBool::new(true);
/// How the first ring was set up, or why none could be.
static SETUP: OnceLock<Result<&'static str, String>> = OnceLock::new();

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

/// Switches io_uring on (or off) for [`IoPath::Auto`] calls.
pub fn set_io_uring_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether any durable IO goes through io_uring now (linked writes and
/// syncs, or direct writes from registered buffers).
pub fn io_uring_live() -> bool {
    (ENABLED.load(Ordering::Relaxed) || REGISTERED.load(Ordering::Relaxed))
        && setup_result().is_ok()
}

/// Which path is live, and whether io_uring is available, in words (for
/// logs and `durafs --version`).
pub fn io_uring_status() -> String {
    let registered = REGISTERED.load(Ordering::Relaxed);
    match (ENABLED.load(Ordering::Relaxed), setup_result()) {
        (true, Ok(flags)) => format!("io_uring ({flags})"),
        (false, Ok(flags)) if registered => {
            format!("pwrite + fdatasync; direct writes from registered io_uring buffers ({flags})")
        }
        (false, Ok(flags)) => {
            format!("pwrite + fdatasync (io_uring available with {flags}, off: slower here)")
        }
        (_, Err(e)) => format!("pwrite + fdatasync (io_uring unavailable: {e})"),
    }
}

fn setup_result() -> &'static Result<&'static str, String> {
    SETUP.get_or_init(|| match build() {
        Ok((_, flags)) => Ok(flags),
        Err(e) => Err(e.to_string()),
    })
}

/// A ring with the best setup flags the kernel accepts, tried in order
/// (DEFER_TASKRUN needs 6.1, SINGLE_ISSUER 6.0, COOP_TASKRUN 5.19).
fn build() -> io::Result<(IoUring, &'static str)> {
    type Setup = fn(&mut io_uring::Builder);
    let attempts: [(&'static str, Setup); 4] = [
        ("SINGLE_ISSUER, DEFER_TASKRUN", |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }),
        ("SINGLE_ISSUER, COOP_TASKRUN", |b| {
            b.setup_single_issuer().setup_coop_taskrun();
        }),
        ("COOP_TASKRUN", |b| {
            b.setup_coop_taskrun();
        }),
        ("no setup flags", |_| {}),
    ];
    let mut last = None;
    for (name, setup) in attempts {
        let mut b = IoUring::builder();
        setup(&mut b);
        match b.build(64) {
            Ok(r) => return Ok((r, name)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least once"))
}

fn sync_syscall(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    if datasync {
        super::fdatasync(fd)
    } else {
        super::fsync(fd)
    }
}

/// Writes all of `data` at `offset` and then syncs the file (fdatasync if
/// `datasync`, else fsync), returning once both are done: one linked
/// io_uring submission, or two system calls.
pub fn write_and_sync(
    fd: BorrowedFd<'_>,
    data: &[u8],
    offset: u64,
    datasync: bool,
    path: IoPath,
) -> io::Result<()> {
    write_batch(fd, &[(data, offset)], Some(datasync), path)
}

/// The most writes one submission carries (the ring has one more entry,
/// for the sync).
pub const MAX_BATCH: usize = 63;

/// Writes each `(data, offset)` in order and then, if `sync` says so,
/// syncs the file (Some(true): fdatasync, Some(false): fsync): with
/// io_uring, up to [`MAX_BATCH`] writes and the sync linked in one
/// submission (IOSQE_IO_LINK: each starts when the one before it has
/// completed, and a failure cancels the rest); else pwrites and the sync.
/// Returns once everything is done; the first error wins.
pub fn write_batch(
    fd: BorrowedFd<'_>,
    writes: &[(&[u8], u64)],
    sync: Option<bool>,
    path: IoPath,
) -> io::Result<()> {
    let fits = writes.iter().all(|(d, _)| u32::try_from(d.len()).is_ok());
    if use_ring(path) && fits {
        return with_ring(|ring| {
            let mut chunks = writes.chunks(MAX_BATCH).peekable();
            while let Some(chunk) = chunks.next() {
                let last = chunks.peek().is_none();
                chain(ring, fd, chunk, if last { sync } else { None })?;
            }
            if writes.is_empty() {
                chain(ring, fd, &[], sync)?;
            }
            Ok(())
        });
    }
    // Only a buffer too long for one io_uring write gets here with Uring.
    if path == IoPath::Uring {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (data, offset) in writes {
        pwrite_all(fd, data, *offset)?;
    }
    match sync {
        Some(datasync) => sync_syscall(fd, datasync),
        None => Ok(()),
    }
}

fn use_ring(path: IoPath) -> bool {
    match path {
        IoPath::Syscalls => false,
        IoPath::Uring => true,
        IoPath::Auto => choice(&ENABLED),
    }
}

/// This thread's choice if it made one, else the process's `flag`; and
/// only if a ring can be set up.
fn choice(flag: &AtomicBool) -> bool {
    let on = THREAD_CHOICE
        .with(|c| c.get())
        .unwrap_or_else(|| flag.load(Ordering::Relaxed));
    on && setup_result().is_ok()
}

thread_local! {
    /// This thread's choice for [`IoPath::Auto`], over the process's.
    static THREAD_CHOICE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with io_uring switched on or off on this thread only, for
/// [`IoPath::Auto`] calls and registered direct writes alike (tests and
/// benchmarks compare both paths with it).
pub fn with_io_uring<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let before = THREAD_CHOICE.with(|c| c.replace(Some(on)));
    let r = f();
    THREAD_CHOICE.with(|c| c.set(before));
    r
}

static REGISTERED_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Direct writes made from a registered buffer so far (by this process).
pub fn registered_writes() -> u64 {
    REGISTERED_WRITES.load(Ordering::Relaxed)
}

/// Runs `f` on this thread's ring, set up on first use.
fn with_ring<R>(f: impl FnOnce(&mut IoUring) -> io::Result<R>) -> io::Result<R> {
    RING.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(build()?.0);
        }
        f(cell.as_mut().expect("just set"))
    })
}

fn sync_entry(fd: types::Fd, datasync: bool) -> squeue::Entry {
    opcode::Fsync::new(fd)
        .flags(if datasync {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        })
        .build()
}

/// Submits `entries` (linked: all but the last carry IO_LINK; user_data
/// is the index) and waits for all of them; their results by index.
fn submit_chain(ring: &mut IoUring, entries: &mut [squeue::Entry]) -> io::Result<[i32; 64]> {
    let n = entries.len();
    let mut results = [i32::MIN; 64];
    for (i, e) in entries.iter_mut().enumerate() {
        let flags = if i + 1 < n {
            squeue::Flags::IO_LINK
        } else {
            squeue::Flags::empty()
        };
        *e = e.clone().flags(flags).user_data(i as u64);
    }
    // SAFETY: the buffers the entries point at are borrowed by the caller
    // until this function returns, and it returns only after every entry
    // has completed (all reaped below), so the kernel never touches them
    // after they are released; the fds are borrowed as long.
    unsafe {
        ring.submission()
            .push_multiple(entries)
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    let mut reaped = 0;
    while reaped < n {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for cqe in ring.completion() {
            results[cqe.user_data() as usize] = cqe.result();
            reaped += 1;
        }
    }
    Ok(results)
}

/// One linked submission of `writes` (at most MAX_BATCH) and the sync.
/// A short or cancelled write is finished with system calls, and so is
/// the sync behind it.
fn chain(
    ring: &mut IoUring,
    fd: BorrowedFd<'_>,
    writes: &[(&[u8], u64)],
    sync: Option<bool>,
) -> io::Result<()> {
    let raw = types::Fd(fd.as_raw_fd());
    let mut entries: Vec<squeue::Entry> = writes
        .iter()
        .map(|(d, off)| {
            opcode::Write::new(raw, d.as_ptr(), d.len() as u32)
                .offset(*off)
                .build()
        })
        .collect();
    if let Some(datasync) = sync {
        entries.push(sync_entry(raw, datasync));
    }
    let results = submit_chain(ring, &mut entries)?;
    finish(fd, writes, sync, &results)
}

/// Checks a chain's results: errors come back as the errno; writes the
/// kernel cut short or cancelled (after a short one broke the link) are
/// completed with pwrite, and their sync with a system call.
fn finish(
    fd: BorrowedFd<'_>,
    writes: &[(&[u8], u64)],
    sync: Option<bool>,
    results: &[i32],
) -> io::Result<()> {
    let mut broken = false;
    for (i, (data, offset)) in writes.iter().enumerate() {
        let r = results[i];
        if r == -libc::ECANCELED {
            broken = true;
            pwrite_all(fd, data, *offset)?;
        } else if r < 0 {
            return Err(io::Error::from_raw_os_error(-r));
        } else if (r as usize) < data.len() {
            broken = true;
            pwrite_all(fd, &data[r as usize..], offset + r as u64)?;
        }
    }
    let Some(datasync) = sync else {
        return Ok(());
    };
    let s = results[writes.len()];
    if broken || s == -libc::ECANCELED {
        return sync_syscall(fd, datasync);
    }
    let counter = if datasync {
        &super::counters::FDATASYNC
    } else {
        &super::counters::FSYNC
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if s < 0 {
        return Err(io::Error::from_raw_os_error(-s));
    }
    Ok(())
}

/// The size of each thread's registered buffer for direct writes.
pub const FIXED_LEN: usize = 1 << 20;

thread_local! {
    /// A ring with one registered, page-aligned buffer of FIXED_LEN.
    static FIXED: RefCell<Option<(IoUring, AlignedBuf)>> = const { RefCell::new(None) };
}

fn fixed_ring() -> io::Result<(IoUring, AlignedBuf)> {
    let (ring, _) = build()?;
    let buf = AlignedBuf::zeroed(FIXED_LEN, 4096);
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the buffer is registered with the ring it is stored beside,
    // and the pair lives and dies together in FIXED (the ring is dropped,
    // unregistering it, no later than the buffer: fields drop in order).
    unsafe { ring.submitter().register_buffers(&[iov])? };
    Ok((ring, buf))
}

/// A direct write of `len` bytes (a multiple of the file's sector size,
/// at most [`FIXED_LEN`]) at `offset`, from this thread's registered
/// buffer (the kernel pins it once, not on every IO): `fill` writes the
/// bytes into the zeroed buffer, then one io_uring WriteFixed, linked to
/// the sync if `sync` says so. None when io_uring is unavailable or
/// switched off for this (see [`with_io_uring`]), or `len` is too long:
/// the caller writes by system calls instead.
pub fn write_registered(
    fd: BorrowedFd<'_>,
    len: usize,
    offset: u64,
    sync: Option<bool>,
    fill: impl FnOnce(&mut [u8]) -> io::Result<()>,
) -> Option<io::Result<()>> {
    if len > FIXED_LEN || !choice(&REGISTERED) || FIXED_FAILED.with(|f| f.get()) {
        return None;
    }
    FIXED.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            match fixed_ring() {
                Ok(pair) => *cell = Some(pair),
                Err(e) => {
                    // RLIMIT_MEMLOCK too low for the buffer, say: this
                    // thread writes by system calls from now on.
                    if !FIXED_REFUSED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "io_uring buffer registration failed ({e}); direct writes use pwrite"
                        );
                    }
                    FIXED_FAILED.with(|f| f.set(true));
                    return None;
                }
            }
        }
        let (ring, buf) = cell.as_mut().expect("just set");
        let data = &mut buf[..len];
        data.fill(0);
        if let Err(e) = fill(data) {
            return Some(Err(e));
        }
        let raw = types::Fd(fd.as_raw_fd());
        let mut entries = vec![
            opcode::WriteFixed::new(raw, data.as_ptr(), len as u32, 0)
                .offset(offset)
                .build(),
        ];
        if let Some(datasync) = sync {
            entries.push(sync_entry(raw, datasync));
        }
        let results = match submit_chain(ring, &mut entries) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        REGISTERED_WRITES.fetch_add(1, Ordering::Relaxed);
        Some(finish(fd, &[(&buf[..len], offset)], sync, &results))
    })
}

static FIXED_REFUSED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread could not register its buffer.
    static FIXED_FAILED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn both_paths_write_and_sync() {
        assert!(
            setup_result().is_ok(),
            "io_uring should be available on this kernel: {}",
            io_uring_status()
        );
        for path in [IoPath::Uring, IoPath::Syscalls, IoPath::Auto] {
            let d = tempfile::tempdir_in("/var/tmp").unwrap();
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(d.path().join("f"))
                .unwrap();
            let before = super::super::sync_counts();
            write_and_sync(f.as_fd(), b"hello", 0, true, path).unwrap();
            write_and_sync(f.as_fd(), &[7u8; 100_000], 3, false, path).unwrap();
            let after = super::super::sync_counts();
            assert!(after.fdatasync > before.fdatasync, "{path:?}");
            assert!(after.fsync > before.fsync, "{path:?}");
            let mut want = b"hel".to_vec();
            want.extend_from_slice(&[7u8; 100_000]);
            assert_eq!(std::fs::read(d.path().join("f")).unwrap(), want, "{path:?}");
            // Errors come back as the errno: a read-only fd cannot be written.
            let ro = std::fs::File::open(d.path().join("f")).unwrap();
            let e = write_and_sync(ro.as_fd(), b"x", 0, true, path).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{path:?}");
        }
    }

    #[test]
    fn batches_write_in_order_and_sync_once_on_both_paths() {
        for path in [IoPath::Uring, IoPath::Syscalls] {
            let d = tempfile::tempdir_in("/var/tmp").unwrap();
            let f = std::fs::File::create(d.path().join("f")).unwrap();
            // More writes than one submission carries, overlapping so the
            // order shows: each writes its index over the one before.
            let bufs: Vec<Vec<u8>> = (0..150u8).map(|i| vec![i; 100]).collect();
            let writes: Vec<(&[u8], u64)> = bufs
                .iter()
                .enumerate()
                .map(|(i, b)| (&b[..], i as u64 * 50))
                .collect();
            let before = super::super::sync_counts();
            write_batch(f.as_fd(), &writes, Some(true), path).unwrap();
            let after = super::super::sync_counts();
            assert!(after.fdatasync > before.fdatasync, "{path:?}");
            let got = std::fs::read(d.path().join("f")).unwrap();
            assert_eq!(got.len(), 149 * 50 + 100, "{path:?}");
            for (i, chunk) in got.chunks(50).enumerate() {
                assert!(
                    chunk.iter().all(|&b| b as usize == i.min(149)),
                    "{path:?} {i}"
                );
            }
            // No sync asked, none issued by this call; no writes, just the sync.
            write_batch(f.as_fd(), &writes[..3], None, path).unwrap();
            write_batch(f.as_fd(), &[], Some(false), path).unwrap();
            let ro = std::fs::File::open(d.path().join("f")).unwrap();
            let e = write_batch(ro.as_fd(), &writes, Some(true), path).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{path:?}");
        }
    }

    #[test]
    fn registered_writes_only_when_io_uring_is_on() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let f = std::fs::File::create(d.path().join("f")).unwrap();
        let fill = |b: &mut [u8]| {
            b.fill(9);
            Ok(())
        };
        assert!(
            with_io_uring(false, || write_registered(f.as_fd(), 4096, 0, None, fill)).is_none()
        );
        assert!(
            with_io_uring(true, || write_registered(
                f.as_fd(),
                FIXED_LEN + 1,
                0,
                None,
                fill
            ))
            .is_none(),
            "longer than the registered buffer"
        );
        with_io_uring(true, || {
            write_registered(f.as_fd(), 8192, 4096, Some(true), fill)
        })
        .unwrap()
        .unwrap();
        let got = std::fs::read(d.path().join("f")).unwrap();
        assert_eq!(got.len(), 12288);
        assert!(got[..4096].iter().all(|&b| b == 0) && got[4096..].iter().all(|&b| b == 9));
    }

    #[test]
    fn status_names_the_live_path() {
        let s = io_uring_status();
        assert!(
            s.starts_with("pwrite + fdatasync; direct writes from registered io_uring buffers ("),
            "{s}"
        );
    }
}
