//! Metadata and small-file jobs for scripts/bench.sh, run against any
//! directory (a durafs mount, the native backing dir, a bindfs mount):
//!
//! `fsbench create|stat|unlink|replace|rewrite DIR N` prints `JOB OPS_PER_SEC`.
//!
//! - create: create N files of 100 bytes (open O_CREAT, write, close)
//! - stat: stat each of them
//! - unlink: unlink each of them
//! - replace: N times write-tmp + fsync + rename over + fsync(dir), the
//!   by-hand crash-safe replace
//! - rewrite: N times open(O_TRUNC) + write + close of one file, the naive
//!   rewrite a legacy app does (crash-safe only under an atomic policy)

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // cargo bench passes --bench; ignore flags.
    let args: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.len() != 3 {
        eprintln!("usage: fsbench create|stat|unlink|replace|rewrite DIR N");
        std::process::exit(2);
    }
    let (job, dir, n) = (
        args[0].as_str(),
        Path::new(args[1]),
        args[2].parse::<usize>().expect("N"),
    );
    let name = |i: usize| dir.join(format!("f{i:06}"));
    let payload = [b'x'; 100];
    let start = Instant::now();
    match job {
        "create" => {
            for i in 0..n {
                let mut f = File::create(name(i)).expect("create");
                f.write_all(&payload).expect("write");
            }
        }
        "stat" => {
            for i in 0..n {
                fs::symlink_metadata(name(i)).expect("stat");
            }
        }
        "unlink" => {
            for i in 0..n {
                fs::remove_file(name(i)).expect("unlink");
            }
        }
        "replace" => {
            let d = File::open(dir).expect("open dir");
            let target = dir.join("config");
            let tmp = dir.join("config.tmp");
            for i in 0..n {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)
                    .expect("tmp");
                writeln!(f, "version {i}").expect("write");
                f.sync_all().expect("fsync");
                fs::rename(&tmp, &target).expect("rename");
                d.sync_all().expect("fsync dir");
            }
        }
        "rewrite" => {
            let target = dir.join("config");
            for i in 0..n {
                let mut f = File::create(&target).expect("open");
                writeln!(f, "version {i}").expect("write");
            }
        }
        other => {
            eprintln!("unknown job {other}");
            std::process::exit(2);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{job} {:.0}", n as f64 / secs);
}
