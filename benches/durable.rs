//! The platform layer's hot paths, side by side in one run:
//! - 4 KiB write + fdatasync: io_uring (write linked to the sync, one
//!   submission) vs pwrite + fdatasync (two system calls);
//! - 1 MiB writes: direct IO vs buffered, each ending with an fdatasync so
//!   both are measured to the disk.
//!
//! cargo bench --bench durable [-- --quick]

use std::os::fd::AsFd;
use std::time::Instant;

use durafs::platform::{Access, DurableFile, IoPath, io_uring_status, write_and_sync};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::tempdir_in("/var/tmp").expect("temp dir on disk");
    let dfd = durafs::platform::open_dir_path(dir.path()).expect("dir");
    println!(
        "durable IO primitives ({}), on {}",
        io_uring_status(),
        dir.path().display()
    );
    println!("{:<34} {:>12} {:>12} {:>8}", "job", "a", "b", "a/b");

    let n = if quick { 500 } else { 3000 };
    let mut rates = Vec::new();
    // Interleaved rounds: the disk's mood changes over a run.
    let (mut t_uring, mut t_sys) = (0f64, 0f64);
    for round in 0..3 {
        for path in [IoPath::Uring, IoPath::Syscalls] {
            let name = std::ffi::CString::new(format!("sync-{round}-{path:?}")).unwrap();
            let f = DurableFile::open(dfd.as_fd(), &name, Access::CreateNew, 0o644, false).unwrap();
            let buf = [0x5au8; 4096];
            let t = Instant::now();
            for i in 0..n {
                write_and_sync(f.fd(), &buf, (i % 256) as u64 * 4096, true, path).unwrap();
            }
            let el = t.elapsed().as_secs_f64();
            if path == IoPath::Uring {
                t_uring += el;
            } else {
                t_sys += el;
            }
        }
    }
    let (a, b) = (3.0 * n as f64 / t_uring, 3.0 * n as f64 / t_sys);
    rates.push((
        "4 KiB write+fdatasync IOPS",
        "io_uring",
        "pwrite+sync",
        a,
        b,
    ));

    let mib = if quick { 64 } else { 256 };
    let (mut t_direct, mut t_buf) = (0f64, 0f64);
    let chunk = vec![0xa5u8; 1 << 20];
    for round in 0..3 {
        for direct in [true, false] {
            let name = std::ffi::CString::new(format!("seq-{round}-{direct}")).unwrap();
            let f =
                DurableFile::open(dfd.as_fd(), &name, Access::CreateNew, 0o644, direct).unwrap();
            assert_eq!(
                f.is_direct(),
                direct,
                "direct IO should take effect on this disk"
            );
            let t = Instant::now();
            for i in 0..mib {
                f.write_at(&chunk, i as u64 * (1 << 20)).unwrap();
            }
            f.sync_data().unwrap();
            let el = t.elapsed().as_secs_f64();
            if direct {
                t_direct += el;
            } else {
                t_buf += el;
            }
            drop(f);
            let _ = std::fs::remove_file(dir.path().join(name.to_str().unwrap()));
        }
    }
    let (a, b) = (3.0 * mib as f64 / t_direct, 3.0 * mib as f64 / t_buf);
    rates.push((
        "1 MiB writes + final sync, MiB/s",
        "direct",
        "buffered",
        a,
        b,
    ));

    for (job, an, bn, a, b) in rates {
        println!("{job:<34} {:>12} {:>12}", an, bn);
        println!("{:<34} {a:>12.0} {b:>12.0} {:>7.2}x", "", a / b);
    }
}
