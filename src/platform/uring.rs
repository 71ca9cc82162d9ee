//! io_uring for the hot durability path: a write linked to its sync
//! (IOSQE_IO_LINK) in one submission, so a `sync = "always"` write costs one
//! system call instead of two. One ring per thread that uses it (the FUSE
//! workers), set up with the best flags the kernel accepts; when io_uring is
//! unavailable (old kernel, `kernel.io_uring_disabled`, seccomp) or switched
//! off, the same calls run as pwrite + fdatasync.
//!
//! Measured here (`cargo bench --bench durable`, ext4 on virtio, 6.18):
//! 4 KiB write + fdatasync runs at 0.85-0.88x with io_uring (the fsync is
//! punted to an io-wq worker, which costs more than the saved system call),
//! so [`IoPath::Auto`] takes the system calls unless io_uring is switched on
//! with [`set_io_uring_enabled`].

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{IoUring, opcode, squeue, types};

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
/// How the first ring was set up, or why none could be.
static SETUP: OnceLock<Result<&'static str, String>> = OnceLock::new();

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

/// Switches io_uring on (or off) for [`IoPath::Auto`] calls.
pub fn set_io_uring_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether linked writes and syncs go through io_uring now.
pub fn io_uring_live() -> bool {
    ENABLED.load(Ordering::Relaxed) && setup_result().is_ok()
}

/// Which path is live, and whether io_uring is available, in words (for
/// logs and `durafs --version`).
pub fn io_uring_status() -> String {
    match (ENABLED.load(Ordering::Relaxed), setup_result()) {
        (true, Ok(flags)) => format!("io_uring ({flags})"),
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
        match b.build(8) {
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
    let use_ring = match path {
        IoPath::Syscalls => false,
        IoPath::Uring => true,
        IoPath::Auto => ENABLED.load(Ordering::Relaxed) && setup_result().is_ok(),
    };
    if use_ring && u32::try_from(data.len()).is_ok() {
        return RING.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Some(build()?.0);
            }
            let ring = cell.as_mut().expect("just set");
            linked(ring, fd, data, offset, datasync)
        });
    }
    // Only a buffer too long for one io_uring write gets here with Uring.
    if path == IoPath::Uring {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    pwrite_all(fd, data, offset)?;
    sync_syscall(fd, datasync)
}

fn linked(
    ring: &mut IoUring,
    fd: BorrowedFd<'_>,
    data: &[u8],
    offset: u64,
    datasync: bool,
) -> io::Result<()> {
    let raw = types::Fd(fd.as_raw_fd());
    let write = opcode::Write::new(raw, data.as_ptr(), data.len() as u32)
        .offset(offset)
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(1);
    let sync = opcode::Fsync::new(raw)
        .flags(if datasync {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        })
        .build()
        .user_data(2);
    // SAFETY: `data` stays borrowed until this function returns, and it
    // returns only after both entries have completed (reaped below), so the
    // kernel never reads the buffer after it is released. The fd is
    // borrowed for as long.
    unsafe {
        ring.submission()
            .push_multiple(&[write, sync])
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    let (mut wrote, mut synced) = (None, None);
    while wrote.is_none() || synced.is_none() {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for cqe in ring.completion() {
            match cqe.user_data() {
                1 => wrote = Some(cqe.result()),
                _ => synced = Some(cqe.result()),
            }
        }
    }
    let (w, s) = (wrote.expect("reaped"), synced.expect("reaped"));
    if w < 0 {
        return Err(io::Error::from_raw_os_error(-w));
    }
    if (w as usize) < data.len() {
        // A short write breaks the link (the sync is cancelled): finish
        // with system calls.
        pwrite_all(fd, &data[w as usize..], offset + w as u64)?;
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
    fn status_names_the_live_path() {
        let s = io_uring_status();
        assert!(
            s.starts_with("pwrite + fdatasync (io_uring available with "),
            "{s}"
        );
    }
}
