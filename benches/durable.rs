//! The platform layer's hot paths, side by side in one run, each pair
//! interleaved over three rounds (the disk's mood changes over a run):
//! - 4 KiB write + fdatasync: io_uring (write linked to the sync, one
//!   submission) vs pwrite + fdatasync (two system calls);
//! - 16 x 4 KiB writes + fdatasync: one linked io_uring submission vs 16
//!   pwrites and the sync;
//! - 1 MiB direct writes: from io_uring's registered buffer vs pwrite from
//!   a fresh aligned buffer;
//! - 1 MiB writes: direct IO vs buffered, each ending with an fdatasync so
//!   both are measured to the disk.
//!
//! cargo bench --bench durable [-- --quick]

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

use durafs::platform::{
    Access, DurableFile, IoPath, io_uring_status, registered_writes, with_io_uring, write_and_sync,
    write_batch,
};

/// Seconds each of `variants` took over three interleaved rounds; `job`
/// gets a new file and the variant.
fn rounds<const N: usize>(
    dir: &Path,
    dfd: &OwnedFd,
    direct: [bool; N],
    job: impl Fn(&DurableFile, usize),
) -> [f64; N] {
    let mut t = [0f64; N];
    for round in 0..3 {
        for v in 0..N {
            let name = CString::new(format!("f-{round}-{v}")).unwrap();
            let f =
                DurableFile::open(dfd.as_fd(), &name, Access::CreateNew, 0o644, direct[v]).unwrap();
            assert_eq!(
                f.is_direct(),
                direct[v],
                "direct IO should work on this disk"
            );
            let start = Instant::now();
            job(&f, v);
            t[v] += start.elapsed().as_secs_f64();
            drop(f);
            let _ = std::fs::remove_file(dir.join(name.to_str().unwrap()));
        }
    }
    t
}

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
    let mut rates = Vec::new();
    let paths = [IoPath::Uring, IoPath::Syscalls];

    let n = if quick { 500 } else { 3000 };
    let buf = [0x5au8; 4096];
    let t = rounds(dir.path(), &dfd, [false; 2], |f, v| {
        for i in 0..n {
            write_and_sync(f.fd(), &buf, (i % 256) as u64 * 4096, true, paths[v]).unwrap();
        }
    });
    let ops = 3.0 * n as f64;
    rates.push((
        "4 KiB write+fdatasync IOPS",
        "io_uring",
        "pwrite+sync",
        ops / t[0],
        ops / t[1],
    ));

    let batches = n / 4;
    let bufs: Vec<[u8; 4096]> = (0..16).map(|i| [i as u8; 4096]).collect();
    let t = rounds(dir.path(), &dfd, [false; 2], |f, v| {
        for b in 0..batches {
            let writes: Vec<(&[u8], u64)> = bufs
                .iter()
                .enumerate()
                .map(|(i, w)| (&w[..], ((b * 16 + i) % 1024) as u64 * 4096))
                .collect();
            write_batch(f.fd(), &writes, Some(true), paths[v]).unwrap();
        }
    });
    let ops = 3.0 * batches as f64;
    rates.push((
        "16x4 KiB writes+fdatasync /s",
        "io_uring",
        "pwrites+sync",
        ops / t[0],
        ops / t[1],
    ));

    let mib = if quick { 64 } else { 256 };
    let chunk = vec![0xa5u8; 1 << 20];
    let before = registered_writes();
    let t = rounds(dir.path(), &dfd, [true; 2], |f, v| {
        with_io_uring(v == 0, || {
            for i in 0..mib {
                f.write_at(&chunk, i as u64 * (1 << 20)).unwrap();
            }
        });
        f.sync_data().unwrap();
    });
    assert_eq!(
        registered_writes() - before,
        3 * mib as u64,
        "registered path taken"
    );
    let mb = 3.0 * mib as f64;
    rates.push((
        "1 MiB direct writes, MiB/s",
        "registered",
        "pwrite",
        mb / t[0],
        mb / t[1],
    ));

    let t = rounds(dir.path(), &dfd, [true, false], |f, _| {
        for i in 0..mib {
            f.write_at(&chunk, i as u64 * (1 << 20)).unwrap();
        }
        f.sync_data().unwrap();
    });
    rates.push((
        "1 MiB writes + final sync, MiB/s",
        "direct",
        "buffered",
        mb / t[0],
        mb / t[1],
    ));

    for (job, an, bn, a, b) in rates {
        println!("{job:<34} {:>12} {:>12}", an, bn);
        println!("{:<34} {a:>12.0} {b:>12.0} {:>7.2}x", "", a / b);
    }
}
