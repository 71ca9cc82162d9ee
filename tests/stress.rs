//! Data-integrity stress: many threads doing random writes, truncates,
//! reads, renames and fsyncs through a mount, checked byte for byte against
//! an in-memory model, both through the mount and on the backing store.
//! Bounded: a fixed number of operations per thread (well under a minute).
#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use common::Mount;

const THREADS: usize = 8;
const FILES_PER_THREAD: usize = 6;
const OPS_PER_THREAD: usize = 3000;
const MAX_SIZE: u64 = 256 * 1024;

/// xorshift64*: a small deterministic generator, seeded per thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn worker(root: &Path, t: usize) -> HashMap<String, Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1000_0001));
    let dir = root.join(format!("t{t}"));
    fs::create_dir(&dir).unwrap();
    // model: current name -> contents
    let mut model: HashMap<String, Vec<u8>> = HashMap::new();
    let mut names: Vec<String> = (0..FILES_PER_THREAD).map(|i| format!("f{i}")).collect();
    for n in &names {
        fs::write(dir.join(n), b"").unwrap();
        model.insert(n.clone(), Vec::new());
    }
    let mut next_name = FILES_PER_THREAD;
    for op in 0..OPS_PER_THREAD {
        let idx = rng.below(names.len() as u64) as usize;
        let name = names[idx].clone();
        let path = dir.join(&name);
        match rng.below(100) {
            0..=44 => {
                let off = rng.below(MAX_SIZE);
                let len = 1 + rng.below(16 * 1024) as usize;
                let byte = (rng.next() & 0xff) as u8;
                let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                f.write_all_at(&data, off).unwrap();
                let m = model.get_mut(&name).unwrap();
                let end = off as usize + len;
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[off as usize..end].copy_from_slice(&data);
            }
            45..=54 => {
                let size = rng.below(MAX_SIZE);
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(size)
                    .unwrap();
                model.get_mut(&name).unwrap().resize(size as usize, 0);
            }
            55..=79 => {
                let m = &model[&name];
                let off = rng.below(m.len() as u64 + 1);
                let len = rng.below(32 * 1024) as usize;
                let f = fs::File::open(&path).unwrap();
                let mut buf = vec![0u8; len];
                let mut got = 0;
                while got < len {
                    let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                let want_end = (off as usize + len).min(m.len());
                let want = &m[off as usize..want_end];
                assert_eq!(
                    &buf[..got],
                    want,
                    "thread {t} op {op}: read of {name} at {off} differs"
                );
            }
            80..=89 => {
                let new = format!("f{next_name}");
                next_name += 1;
                fs::rename(&path, dir.join(&new)).unwrap();
                let data = model.remove(&name).unwrap();
                model.insert(new.clone(), data);
                names[idx] = new;
            }
            _ => {
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                if rng.below(2) == 0 {
                    f.sync_all().unwrap()
                } else {
                    f.sync_data().unwrap()
                }
            }
        }
    }
    model
}

#[test]
fn random_io_matches_the_model_kernel_passthrough() {
    random_io_matches_the_model(&[]);
}

#[test]
fn random_io_matches_the_model_daemon_io() {
    random_io_matches_the_model(&["passthrough=off"]);
}

fn random_io_matches_the_model(opts: &[&str]) {
    let m = Mount::with_options(opts);
    let root = Arc::new(m.mnt.clone());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || worker(&root, t))
        })
        .collect();
    let models: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .collect();
    for (t, model) in models.iter().enumerate() {
        let mut listed: Vec<String> = fs::read_dir(m.m(&format!("t{t}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        listed.sort();
        let mut want: Vec<String> = model.keys().cloned().collect();
        want.sort();
        assert_eq!(listed, want, "thread {t}: names through the mount");
        for (name, data) in model {
            let rel = format!("t{t}/{name}");
            assert!(
                fs::read(m.m(&rel)).unwrap() == *data,
                "{rel} through the mount differs from the model"
            );
            assert!(
                fs::read(m.b(&rel)).unwrap() == *data,
                "{rel} on the backing store differs from the model"
            );
        }
    }
}

#[test]
fn concurrent_writers_to_one_file_never_tear_kernel_passthrough() {
    concurrent_writers_to_one_file_never_tear(&[]);
}

#[test]
fn concurrent_writers_to_one_file_never_tear_daemon_io() {
    concurrent_writers_to_one_file_never_tear(&["passthrough=off"]);
}

/// Each thread owns a stripe of one shared file and rewrites it with its
/// own pattern; at the end every stripe holds its thread's last pattern.
fn concurrent_writers_to_one_file_never_tear(opts: &[&str]) {
    const STRIPE: u64 = 64 * 1024;
    let m = Mount::with_options(opts);
    let path = m.m("shared");
    fs::write(&path, vec![0u8; (STRIPE * THREADS as u64) as usize]).unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap();
                let mut last = 0u8;
                for round in 0..200u32 {
                    last = (t as u8).wrapping_mul(31).wrapping_add(round as u8) | 1;
                    f.write_all_at(&vec![last; STRIPE as usize], t as u64 * STRIPE)
                        .unwrap();
                    let mut back = vec![0u8; STRIPE as usize];
                    f.read_exact_at(&mut back, t as u64 * STRIPE).unwrap();
                    if let Some(i) = back.iter().position(|&b| b != last) {
                        let bad = back.iter().filter(|&&b| b != last).count();
                        panic!(
                            "thread {t} round {round}: torn stripe: byte {i} is {:#x}, not {last:#x} ({bad} bytes wrong)",
                            back[i]
                        );
                    }
                }
                last
            })
        })
        .collect();
    let lasts: Vec<u8> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for source in [m.m("shared"), m.b("shared")] {
        let data = fs::read(&source).unwrap();
        for (t, &want) in lasts.iter().enumerate() {
            let stripe = &data[t * STRIPE as usize..(t + 1) * STRIPE as usize];
            assert!(
                stripe.iter().all(|&b| b == want),
                "stripe {t} of {} is wrong",
                source.display()
            );
        }
    }
}
