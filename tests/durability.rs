//! The durability engine proven with the crash simulator: each strategy and
//! trigger under a real workload through the mount, a simulated power cut
//! (`durafs crash`), and an invariant on what the backing store holds
//! after it. Each claim is also shown failing without the policy (the same
//! workload under a passthrough policy loses data), so the tests can fail.
//! Sync counts come from the daemon's own counters (`durafs status`).
#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Mount, durafs, durafs_bin, ok_stdout, status_json, test_root};
use serde_json::Value;

/// A policy file that lives as long as the test.
struct PolicyFile(PathBuf);

impl PolicyFile {
    fn new(toml: &str) -> PolicyFile {
        let f = tempfile::Builder::new()
            .prefix("policy")
            .suffix(".toml")
            .tempfile_in(test_root())
            .unwrap();
        let (_, p) = f.keep().unwrap();
        fs::write(&p, format!("version = 1\n{toml}")).unwrap();
        PolicyFile(p)
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A policy shipped in policies/, without its version line (which
/// [`PolicyFile`] adds).
fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name);
    fs::read_to_string(path)
        .unwrap()
        .replacen("version = 1", "", 1)
}

/// The plain policy: nothing added to what the app does.
const PLAIN: &str = "[defaults]\nwrite = \"passthrough\"\nsync = \"on-fsync\"\ndir-sync = false\n";

/// A `--crash-sim` mount under `policy` (the policy's file is kept alive
/// with the mount).
fn crash_mount(policy: &str) -> (Mount, PolicyFile) {
    let p = PolicyFile::new(policy);
    let m = Mount::with_args(&["--crash-sim", "--policy", p.0.to_str().unwrap()]);
    (m, p)
}

/// The simulated power cut; the mount goes away.
fn crash(m: &Mount) {
    ok_stdout(&durafs(&["crash".as_ref(), m.mnt.as_os_str()]));
    // The daemon exits once the app's last open file on it is closed.
    assert!(!m.is_mounted(), "still mounted after the crash");
}

fn fsync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

fn status(m: &Mount) -> Value {
    status_json(&m.mnt)
}

fn rule(m: &Mount, name: &str) -> Value {
    status(m)["rules"][name].clone()
}

fn read(p: &Path) -> Option<Vec<u8>> {
    fs::read(p).ok()
}

/// Writes every dirty file back (sync(1)) and drops the names and inodes
/// nothing uses from the kernel's caches (root only).
#[cfg(target_os = "linux")]
fn write_back_and_drop_names() {
    assert!(Command::new("sync").status().unwrap().success());
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

/// Up to `len` bytes from the start of an open file.
fn read_at(f: &File, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; len];
    let n = f.read_at(&mut buf, 0).unwrap();
    buf.truncate(n);
    buf
}

// --- the model itself -----------------------------------------------------

#[test]
fn model_keeps_what_was_synced_and_loses_the_rest() {
    let (m, _p) = crash_mount(PLAIN);
    fs::write(m.b("old"), b"durable before the mount").unwrap();
    fs::write(m.b("renamed"), b"renamed without a dir fsync").unwrap();
    // synced file, synced directory: survives
    let mut f = File::create(m.m("synced")).unwrap();
    f.write_all(b"synced data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    // written, not synced, directory synced: the name stays, the data goes
    fs::write(m.m("unsynced"), b"never synced").unwrap();
    fsync_dir(&m.mnt);
    // created and fsynced, directory not fsynced: disappears
    let mut f = File::create(m.m("no-dir-sync")).unwrap();
    f.write_all(b"x").unwrap();
    f.sync_all().unwrap();
    drop(f);
    // an overwrite of durable data without fsync is undone
    OpenOptions::new()
        .write(true)
        .open(m.m("old"))
        .unwrap()
        .write_all(b"OVERWRITTEN")
        .unwrap();
    // a rename without a directory fsync is undone
    fs::rename(m.m("renamed"), m.m("renamed-to")).unwrap();
    // an unlink without a directory fsync is undone
    fs::write(m.b("removed"), b"still here").unwrap();
    fs::remove_file(m.m("removed")).unwrap();

    let report = ok_stdout(&durafs(&[
        "crash".as_ref(),
        "--report".as_ref(),
        m.mnt.as_os_str(),
    ]));
    assert!(report.contains("unsynced: "), "{report}");
    assert!(report.contains("rename renamed -> renamed-to"), "{report}");

    crash(&m);
    assert_eq!(read(&m.b("synced")).unwrap(), b"synced data");
    assert_eq!(read(&m.b("unsynced")).unwrap(), b"");
    assert!(!m.b("no-dir-sync").exists());
    assert_eq!(read(&m.b("old")).unwrap(), b"durable before the mount");
    assert_eq!(
        read(&m.b("renamed")).unwrap(),
        b"renamed without a dir fsync"
    );
    assert!(!m.b("renamed-to").exists());
    assert_eq!(read(&m.b("removed")).unwrap(), b"still here");
    assert!(!m.b(".durafs-crash").exists(), "graveyard left behind");
}

#[test]
fn torn_crash_keeps_a_reproducible_subset_of_pages() {
    let run = |seed: &str| -> Vec<u8> {
        let (m, _p) = crash_mount(PLAIN);
        fs::write(m.b("f"), vec![b'o'; 64 * 4096]).unwrap();
        let mut f = OpenOptions::new().write(true).open(m.m("f")).unwrap();
        f.write_all(&vec![b'n'; 64 * 4096]).unwrap();
        drop(f);
        ok_stdout(&durafs(&[
            "crash".as_ref(),
            "--torn".as_ref(),
            seed.as_ref(),
            m.mnt.as_os_str(),
        ]));
        assert!(!m.is_mounted());
        read(&m.b("f")).unwrap()
    };
    let a = run("7");
    let b = run("7");
    let c = run("8");
    assert_eq!(a, b, "the same seed must tear the same way");
    assert_ne!(a, c, "another seed should tear another way");
    let new_pages = a.chunks(4096).filter(|p| p[0] == b'n').count();
    assert!(
        new_pages > 0 && new_pages < 64,
        "{new_pages} of 64 pages kept"
    );
    assert!(
        a.chunks(4096).all(|p| p.iter().all(|&x| x == p[0])),
        "a page was torn inside"
    );
}

/// After `durafs crash --keep-mounted` the mount shows the post-crash state
/// at once, whatever the kernel had cached: attributes, pages (through a
/// descriptor opened before the crash), names made and names removed.
#[test]
fn a_crash_that_keeps_the_mount_leaves_no_stale_cache() {
    let p = PolicyFile::new(PLAIN);
    let m = Mount::with_args(&[
        "--crash-sim",
        "-o",
        "attr-timeout=60,entry-timeout=60",
        "--policy",
        p.0.to_str().unwrap(),
    ]);
    for name in ["f", "gone"] {
        let mut f = File::create(m.m(name)).unwrap();
        f.write_all(b"old").unwrap();
        f.sync_all().unwrap();
    }
    fsync_dir(&m.mnt);
    let mut reader = File::open(m.m("f")).unwrap();
    let mut buf = Vec::new();
    reader.read_to_end(&mut buf).unwrap();
    fs::write(m.m("f"), b"NEW DATA").unwrap();
    fs::write(m.m("made"), b"x").unwrap();
    fs::remove_file(m.m("gone")).unwrap();
    // All of it now in the kernel's caches.
    assert_eq!(fs::metadata(m.m("f")).unwrap().len(), 8);
    assert!(m.m("made").exists() && !m.m("gone").exists());
    assert_eq!(read_at(&reader, 16), b"NEW DATA");

    ok_stdout(&durafs(&[
        "crash".as_ref(),
        "--keep-mounted".as_ref(),
        m.mnt.as_os_str(),
    ]));
    assert!(m.is_mounted());
    assert_eq!(fs::metadata(m.m("f")).unwrap().len(), 3, "stale size");
    assert_eq!(read(&m.m("f")).unwrap(), b"old");
    assert_eq!(read_at(&reader, 16), b"old", "stale pages");
    assert!(
        !m.m("made").exists(),
        "a name the crash undid is still seen"
    );
    assert_eq!(
        read(&m.m("gone")).unwrap(),
        b"old",
        "a removed name stays gone"
    );
}

/// The simulator holds no fd per file it tracks: more unsynced files than
/// the daemon may have fds (1,024 here, 768 of them for inodes) are all
/// tracked, overwritten durable pages all saved, and all rolled back.
#[cfg(target_os = "linux")]
#[test]
fn files_past_the_fd_limit_are_tracked_and_rolled_back() {
    let p = PolicyFile::new(PLAIN);
    let m = Mount::under(
        &["prlimit", "--nofile=1024:1024"],
        &["--crash-sim", "--policy", p.0.to_str().unwrap()],
    );
    let (synced, unsynced) = (m.m("synced"), m.m("unsynced"));
    fs::create_dir(&synced).unwrap();
    fs::create_dir(&unsynced).unwrap();
    fsync_dir(&m.mnt);
    let n = 1000;
    for i in 0..n {
        let mut f = File::create(synced.join(i.to_string())).unwrap();
        f.write_all(b"old").unwrap();
        f.sync_all().unwrap();
    }
    fsync_dir(&synced);
    for i in 0..n {
        fs::write(synced.join(i.to_string()), b"new!").unwrap();
        fs::write(unsynced.join(i.to_string()), b"unsynced").unwrap();
    }
    fsync_dir(&unsynced);
    // And as many directories with a change of their own.
    let dirs = m.m("dirs");
    fs::create_dir(&dirs).unwrap();
    fsync_dir(&m.mnt);
    for i in 0..n {
        let d = dirs.join(i.to_string());
        fs::create_dir(&d).unwrap();
        fs::write(d.join("f"), b"").unwrap();
    }
    // Names out of the kernel's cache: a file reopened by handle then has
    // no path of its own, and the report must still name it.
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let report = ok_stdout(&durafs(&[
        "crash".as_ref(),
        "--report".as_ref(),
        "--json".as_ref(),
        m.mnt.as_os_str(),
    ]));
    let report: Value = serde_json::from_str(&report).unwrap();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 2 * n, "every written file tracked");
    assert!(
        files.iter().all(|f| f["path"] != ""),
        "a file without a name"
    );
    let f = files.iter().find(|f| f["path"] == "synced/999").unwrap();
    assert_eq!(f["overwritten_pages"], 1, "{f}");
    let f = files.iter().find(|f| f["path"] == "unsynced/999").unwrap();
    assert_eq!(f["size"], 8, "{f}");
    let changes = report["dir_changes"].as_array().unwrap();
    assert!(
        changes.iter().any(|c| c["path"] == "dirs/999/f"),
        "a change in a handle-held directory is named"
    );
    let out = ok_stdout(&durafs(&[
        "crash".as_ref(),
        "--json".as_ref(),
        m.mnt.as_os_str(),
    ]));
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["outcome"]["errors"], 0, "{out}");
    assert!(!m.is_mounted(), "still mounted after the crash");
    for i in 0..n {
        let name = i.to_string();
        assert_eq!(read(&m.b("synced").join(&name)).unwrap(), b"old", "{name}");
        assert_eq!(read(&m.b("unsynced").join(&name)).unwrap(), b"", "{name}");
    }
    assert_eq!(
        fs::read_dir(m.b("dirs")).unwrap().count(),
        0,
        "a directory made survived"
    );
}

// --- strategies and triggers under a power cut ------------------------------

/// The legacy config rewrite: open(O_TRUNC), write in two parts, close; a
/// power cut after each step.
fn config_rewrite_outcomes(policy: &str) -> Vec<Vec<u8>> {
    let old = b"port = 8080\nname = \"old\"\n".to_vec();
    let new = b"port = 9090\nname = \"new contents, longer\"\n".to_vec();
    (0..4)
        .map(|steps| {
            let (m, _p) = crash_mount(policy);
            fs::write(m.b("app.toml"), &old).unwrap();
            {
                let f = if steps >= 1 {
                    Some(File::create(m.m("app.toml")).unwrap())
                } else {
                    None
                };
                let mut f = f;
                if steps >= 2 {
                    f.as_mut().unwrap().write_all(&new[..10]).unwrap();
                }
                if steps >= 3 {
                    f.as_mut().unwrap().write_all(&new[10..]).unwrap();
                    drop(f.take());
                }
                crash(&m);
            }
            read(&m.b("app.toml")).unwrap_or_default()
        })
        .collect()
}

/// The naive rewrite under the shipped policies: config-files.toml keeps
/// old-or-new at every step and under every torn crash; passthrough.toml
/// loses the file under some torn crash.
#[test]
fn atomic_rewrite_is_old_or_new_at_every_step() {
    let old = b"port = 8080\nname = \"old\"\n".to_vec();
    let new = b"port = 9090\nname = \"new contents, longer\"\n".to_vec();
    let outcomes = config_rewrite_outcomes(&shipped("config-files.toml"));
    for (i, o) in outcomes.iter().enumerate() {
        assert!(
            o == &old || o == &new,
            "after step {i}: {:?}",
            String::from_utf8_lossy(o)
        );
    }
    assert_eq!(outcomes[3], new, "a closed rewrite must be durable");
    // Without the policy the same program can lose the file: a torn crash
    // (the truncation reached the disk, the data did not) leaves it empty
    // or partial for some seed; with the policy, for none.
    let torn = |policy: &str| -> Vec<Vec<u8>> {
        (1..=6)
            .map(|seed| {
                let (m, _p) = crash_mount(policy);
                fs::write(m.b("app.toml"), &old).unwrap();
                fs::write(m.m("app.toml"), &new).unwrap();
                ok_stdout(&durafs(&[
                    "crash".as_ref(),
                    "--torn".as_ref(),
                    seed.to_string().as_ref(),
                    m.mnt.as_os_str(),
                ]));
                read(&m.b("app.toml")).unwrap_or_default()
            })
            .collect()
    };
    let plain = torn(&shipped("passthrough.toml"));
    assert!(
        plain.iter().any(|o| o != &old && o != &new),
        "passthrough kept old-or-new under every torn crash: {plain:?}"
    );
    for o in torn(&shipped("config-files.toml")) {
        assert!(
            o == old || o == new,
            "torn atomic rewrite: {:?}",
            String::from_utf8_lossy(&o)
        );
    }
}

fn appended_records(policy: &str) -> usize {
    let (m, _p) = crash_mount(policy);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.m("journal"))
        .unwrap();
    for i in 0..100 {
        f.write_all(format!("record {i:04}\n").as_bytes()).unwrap();
    }
    crash(&m);
    drop(f);
    let data = read(&m.b("journal")).unwrap_or_default();
    let text = String::from_utf8_lossy(&data);
    text.lines()
        .enumerate()
        .take_while(|(i, l)| *l == format!("record {i:04}"))
        .count()
}

#[test]
fn always_makes_every_acknowledged_write_durable() {
    assert_eq!(
        appended_records("[defaults]\nsync = \"always\"\ndir-sync = true\n"),
        100
    );
    assert_eq!(appended_records(PLAIN), 0);
}

fn created_and_closed(policy: &str) -> Option<Vec<u8>> {
    let (m, _p) = crash_mount(policy);
    fs::create_dir(m.b("d")).unwrap();
    fs::write(m.m("d/new.dat"), b"contents written then closed").unwrap();
    crash(&m);
    read(&m.b("d/new.dat"))
}

#[test]
fn on_close_with_dir_sync_keeps_a_created_file() {
    assert_eq!(
        created_and_closed("[defaults]\nsync = \"on-close\"\ndir-sync = true\n").as_deref(),
        Some(&b"contents written then closed"[..])
    );
    assert_eq!(created_and_closed(PLAIN), None);
}

fn rename_over(policy: &str) -> Vec<u8> {
    let (m, _p) = crash_mount(policy);
    fs::write(m.b("state"), b"old state").unwrap();
    let mut f = File::create(m.m("state.tmp")).unwrap();
    f.write_all(b"new state").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(m.m("state.tmp"), m.m("state")).unwrap();
    crash(&m);
    read(&m.b("state")).unwrap()
}

#[test]
fn dir_sync_makes_a_rename_over_durable() {
    assert_eq!(rename_over("[defaults]\ndir-sync = true\n"), b"new state");
    assert_eq!(rename_over(PLAIN), b"old state");
}

/// A size set by fallocate is a size change like any other: lost unless
/// the file is synced (fio lays its files out this way before writing).
#[test]
fn fallocated_size_is_not_durable_until_synced() {
    let (m, _p) = crash_mount(PLAIN);
    fs::write(m.m("f"), b"").unwrap();
    File::open(m.m("f")).unwrap().sync_all().unwrap();
    fsync_dir(&m.mnt);
    // (as posix_fallocate does; the fallocate(1) tool also fsyncs)
    let mut f = OpenOptions::new().write(true).open(m.m("f")).unwrap();
    durafs::platform::fallocate(f.as_fd(), 0, 0, 1 << 20).unwrap();
    f.write_all(b"not synced").unwrap();
    drop(f);
    assert_eq!(fs::metadata(m.b("f")).unwrap().len(), 1 << 20);
    crash(&m);
    assert_eq!(
        fs::metadata(m.b("f")).unwrap().len(),
        0,
        "the unsynced fallocate survived"
    );
}

fn written_then_waited(policy: &str) -> Vec<u8> {
    let (m, _p) = crash_mount(policy);
    fs::write(m.b("log"), b"").unwrap();
    let mut f = OpenOptions::new().append(true).open(m.m("log")).unwrap();
    f.write_all(b"line one\n").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    crash(&m);
    drop(f);
    read(&m.b("log")).unwrap()
}

#[test]
fn interval_flushes_within_the_interval() {
    assert_eq!(
        written_then_waited("[defaults]\nwrite = \"append\"\nsync = { interval = \"50ms\" }\n"),
        b"line one\n"
    );
    assert_eq!(written_then_waited(PLAIN), b"");
}

// --- exactly the syncs each trigger should issue ----------------------------

#[test]
fn on_close_syncs_once_per_close_not_per_write() {
    let (m, _p) = crash_mount("[defaults]\nsync = \"on-close\"\ndir-sync = false\n");
    // In a process of its own: a test thread forking elsewhere in this
    // process would close inherited copies of our fds at exec, and each
    // such close is a close (FLUSH) that syncs.
    let f = m.m("f");
    let dd = Command::new("dd")
        .args(["if=/dev/zero", "bs=100", "count=50", "status=none"])
        .arg(format!("of={}", f.display()))
        .status()
        .unwrap();
    assert!(dd.success());
    let r = rule(&m, "defaults");
    // (the kernel splits a write that crosses a page boundary in two)
    assert!(r["writes"].as_u64().unwrap() >= 50, "{r}");
    assert_eq!(r["durafs_syncs"], 1, "{r}");
    // A close with nothing written since the last sync syncs nothing.
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3>>'{}'", f.display()))
        .status()
        .unwrap();
    assert!(sh.success());
    assert_eq!(rule(&m, "defaults")["durafs_syncs"], 1);
}

#[test]
fn always_shares_flushes_between_concurrent_writers() {
    let (m, _p) = crash_mount("[defaults]\nsync = \"always\"\ndir-sync = false\n");
    let f = std::sync::Arc::new(File::create(m.m("shared")).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                use std::os::unix::fs::FileExt;
                for i in 0..50u64 {
                    f.write_all_at(&[t as u8; 512], (t * 50 + i) * 512).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = rule(&m, "defaults");
    assert_eq!(r["writes"], 400);
    assert_eq!(r["sync_requests"], 400);
    let syncs = r["durafs_syncs"].as_u64().unwrap();
    assert!((1..400).contains(&syncs), "no flush was shared: {r}");
}

#[test]
fn never_drops_app_syncs_and_on_fsync_upgrades_them() {
    let (m, _p) = crash_mount(
        "[defaults]\nsync = \"on-fsync\"\nmethod = \"full\"\ndir-sync = false\n[[rule]]\nname = \"scratch\"\nmatch = \"tmp/**\"\nsync = \"never\"\n",
    );
    fs::create_dir(m.m("tmp")).unwrap();
    let f = File::create(m.m("tmp/x")).unwrap();
    let before = status(&m)["syncs"].clone();
    f.sync_data().unwrap();
    f.sync_all().unwrap();
    let after = status(&m)["syncs"].clone();
    assert_eq!(before, after, "a dropped sync reached the disk");
    assert_eq!(rule(&m, "scratch")["dropped_syncs"], 2);

    let g = File::create(m.m("kept")).unwrap();
    let before = status(&m)["syncs"].clone();
    g.sync_data().unwrap();
    let after = status(&m)["syncs"].clone();
    assert_eq!(
        after["fsync"].as_u64().unwrap(),
        before["fsync"].as_u64().unwrap() + 1
    );
    assert_eq!(after["fdatasync"], before["fdatasync"]);
}

// --- failures ---------------------------------------------------------------

#[test]
fn fsync_eio_reaches_the_app_and_sticks_until_reopened() {
    let (m, _p) = crash_mount(PLAIN);
    let mut f = File::create(m.m("db")).unwrap();
    f.write_all(b"page").unwrap();
    ok_stdout(&durafs(&[
        "fault".as_ref(),
        "add".as_ref(),
        m.mnt.as_os_str(),
        "op=fsync errno=EIO glob=db count=1".as_ref(),
    ]));
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    // The fault is spent, but the data the failed sync covered may be
    // gone: the file stays failed.
    assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
    let list = ok_stdout(&durafs(&[
        "fault".as_ref(),
        "list".as_ref(),
        m.mnt.as_os_str(),
    ]));
    assert!(list.contains("hits 1"), "{list}");
    drop(f);
    let g = OpenOptions::new().write(true).open(m.m("db")).unwrap();
    g.sync_all().unwrap();
}

#[test]
fn enospc_on_write_reaches_the_app_and_leaves_the_file_consistent() {
    let (m, _p) = crash_mount(PLAIN);
    let mut f = File::create(m.m("out")).unwrap();
    f.write_all(b"first ").unwrap();
    ok_stdout(&durafs(&[
        "fault".as_ref(),
        "add".as_ref(),
        m.mnt.as_os_str(),
        "op=write errno=ENOSPC count=1".as_ref(),
    ]));
    assert_eq!(
        f.write_all(b"second").unwrap_err().raw_os_error(),
        Some(libc::ENOSPC)
    );
    f.write_all(b"third").unwrap();
    drop(f);
    assert_eq!(read(&m.b("out")).unwrap(), b"first third");
}

#[test]
fn a_run_time_write_fault_names_the_passthrough_opens_it_cannot_reach() {
    // No crash simulator and no fault at open: these opens go to kernel
    // passthrough, so the daemon never sees their writes.
    let p = PolicyFile::new("[defaults]\nsync = \"on-fsync\"\n");
    let m = Mount::with_args(&["--policy", p.0.to_str().unwrap()]);
    let early = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(m.m("data.db"))
        .unwrap();
    let other = File::create(m.m("notes.txt")).unwrap();
    let out = ok_stdout(&durafs(&[
        "fault".as_ref(),
        "add".as_ref(),
        m.mnt.as_os_str(),
        "op=write errno=ENOSPC glob=*.db".as_ref(),
    ]));
    assert!(out.contains("fault 1 set"), "{out}");
    assert!(out.contains("cannot reach"), "{out}");
    assert!(out.contains("  data.db\n"), "{out}");
    assert!(
        !out.contains("notes.txt"),
        "a file the glob does not match: {out}"
    );
    // What the warning says: the early open's writes bypass the fault...
    use std::os::unix::fs::FileExt;
    early.write_all_at(b"early", 0).unwrap();
    // ...and a new open of the same file, while the early one lives, gets it.
    let late = OpenOptions::new().write(true).open(m.m("data.db")).unwrap();
    assert_eq!(
        late.write_all_at(b"late", 0).unwrap_err().raw_os_error(),
        Some(libc::ENOSPC)
    );
    drop((early, other, late));
    // A fault on fsync alone is reached by every open: no warning.
    let f = File::create(m.m("x.db")).unwrap();
    let out = ok_stdout(&durafs(&[
        "fault".as_ref(),
        "add".as_ref(),
        m.mnt.as_os_str(),
        "op=fsync errno=EIO glob=*.db".as_ref(),
    ]));
    assert!(!out.contains("cannot reach"), "{out}");
    drop(f);
}

// --- the strategies' visible behaviour ---------------------------------------

const ATOMIC: &str = "[defaults]\nwrite = \"atomic\"\n";

#[test]
fn atomic_stage_is_invisible_until_close() {
    let (m, _p) = crash_mount(ATOMIC);
    fs::write(m.m("cfg"), b"old").unwrap();
    let ino = fs::metadata(m.m("cfg")).unwrap().ino();
    let mut w = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.m("cfg"))
        .unwrap();
    w.write_all(b"brand new").unwrap();
    // Another open sees the old contents, and no stage shows anywhere.
    assert_eq!(fs::read(m.m("cfg")).unwrap(), b"old");
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["cfg".to_string()]);
    assert!(
        fs::read_dir(&m.backing).unwrap().count() > 1,
        "no stage in the backing dir"
    );
    drop(w);
    assert_eq!(fs::read(m.m("cfg")).unwrap(), b"brand new");
    assert_eq!(
        fs::metadata(m.m("cfg")).unwrap().ino(),
        ino,
        "st_ino changed"
    );
    // (one for the first write of the file, one for the rewrite)
    assert_eq!(rule(&m, "defaults")["atomic_commits"], 2);
    // Reading back through a read-write open sees the staged bytes.
    let mut rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.m("cfg"))
        .unwrap();
    rw.write_all(b"BRAND").unwrap();
    let mut s = String::new();
    rw.seek(std::io::SeekFrom::Start(0)).unwrap();
    rw.read_to_string(&mut s).unwrap();
    assert_eq!(s, "BRAND new");
    drop(rw);
    assert_eq!(fs::read(m.m("cfg")).unwrap(), b"BRAND new");
    assert!(
        File::create(m.m(".durafs-stage.mine")).is_err(),
        "a reserved name was created through the mount"
    );
}

/// Two writers of one atomic file, the first also held by a child (its
/// RELEASE waits for the child): the second writer's close(2) commits
/// before it returns, since both opens have been closed by their opener.
/// Counting opens at RELEASE, as the engine once did, left the commit to
/// the child's exit, and a reader right after close saw the old file.
#[test]
fn atomic_commits_at_the_last_openers_close_not_at_a_later_release() {
    let (m, _p) = crash_mount(ATOMIC);
    fs::write(m.m("cfg"), b"old settings").unwrap();
    let mut w = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.m("cfg"))
        .unwrap();
    w.write_all(b"new").unwrap();
    let mut w2 = OpenOptions::new().write(true).open(m.m("cfg")).unwrap();
    w2.seek(std::io::SeekFrom::Start(3)).unwrap();
    w2.write_all(b" settings").unwrap();
    // The child's stdout is `w`'s open file: it lives until the child ends.
    let mut child = Command::new("sleep")
        .arg("3")
        .stdout(w.try_clone().unwrap())
        .spawn()
        .unwrap();
    drop(w);
    assert_eq!(fs::read(m.m("cfg")).unwrap(), b"old settings");
    drop(w2);
    let seen = fs::read(m.m("cfg")).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "new settings",
        "close returned before the commit"
    );
}

/// An atomic file removed, or replaced by a rename, while a writer has it
/// staged: close(2) succeeds and the writes go with the file, as writes to
/// an unlinked file do on the backing filesystem; nothing is resurrected.
#[test]
fn atomic_writes_to_a_file_removed_while_staged_go_with_it() {
    let (m, _p) = crash_mount(ATOMIC);
    fs::write(m.m("gone"), b"old").unwrap();
    let mut w = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.m("gone"))
        .unwrap();
    w.write_all(b"new").unwrap();
    fs::remove_file(m.m("gone")).unwrap();
    durafs::platform::close(w.into()).expect("close(2)");
    assert!(!m.m("gone").exists());

    fs::write(m.m("over"), b"old").unwrap();
    fs::write(m.m("other"), b"other").unwrap();
    let mut w = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.m("over"))
        .unwrap();
    w.write_all(b"new").unwrap();
    fs::rename(m.m("other"), m.m("over")).unwrap();
    durafs::platform::close(w.into()).expect("close(2)");
    assert_eq!(fs::read(m.m("over")).unwrap(), b"other");
    let mut left = common::names(&m.backing);
    left.retain(|n| n != ".durafs-crash");
    assert_eq!(left, ["over"], "a stage was left behind");
}

/// Opens the kernel does not cache (a reader of an atomic file, a writer
/// under `always`) can still be mapped shared: without
/// FUSE_DIRECT_IO_ALLOW_MMAP such an mmap fails with ENODEV, and legacy
/// apps that map files break.
#[test]
fn uncached_opens_can_be_mapped_shared() {
    let (m, _p) = crash_mount(
        "[defaults]\nwrite = \"atomic\"\n[[rule]]\nname = \"strict\"\nmatch = \"*.log\"\nwrite = \"passthrough\"\nsync = \"always\"\n",
    );
    fs::write(m.m("app.conf"), b"mapped config").unwrap();
    let r = File::open(m.m("app.conf")).unwrap();
    assert_eq!(
        durafs::platform::read_mapped(r.as_fd(), 13).expect("shared mmap of an atomic file"),
        b"mapped config"
    );
    fs::write(m.m("app.log"), b"mapped log").unwrap();
    let w = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.m("app.log"))
        .unwrap();
    assert_eq!(
        durafs::platform::read_mapped(w.as_fd(), 10).expect("shared mmap of an always file"),
        b"mapped log"
    );
}

/// Files past the inode fd budget are held by file handle. Their policy
/// still matches them by path after the backing filesystem dropped their
/// names from its cache (reopened by handle a file has no path: a
/// `**/*.conf` rule stopped applying, and the rewrite went in place), also
/// after renames through the mount; and an atomic commit, which points the
/// node at the new file, stays within the budget (each took one more fd).
#[cfg(target_os = "linux")]
#[test]
fn handle_held_files_keep_their_policy_and_the_fd_budget() {
    use std::os::unix::fs::OpenOptionsExt;
    let p = PolicyFile::new(&shipped("config-files.toml"));
    let m = Mount::with_args(&[
        "-o",
        "max-inode-fds=16,attr-timeout=60,entry-timeout=60",
        "--policy",
        p.0.to_str().unwrap(),
    ]);
    let n = 40;
    for i in 0..n {
        fs::write(m.b(&format!("f{i}.conf")), b"v1").unwrap();
    }
    // Looked up through the mount (past the budget: held by handle), and
    // kept by the kernel (an O_PATH open reaches no daemon).
    let pin = |rel: String| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(m.m(&rel))
            .unwrap()
    };
    let pins: Vec<File> = (0..n).map(|i| pin(format!("f{i}.conf"))).collect();
    let ino = |i: usize| fs::metadata(m.b(&format!("f{i}.conf"))).unwrap().ino();
    for round in 2..4 {
        let before: Vec<u64> = (0..n).map(ino).collect();
        // Written back and dropped from the backing filesystem's cache
        // (the inode numbers were read before, so nothing looks them up).
        write_back_and_drop_names();
        for i in 0..n {
            fs::write(m.m(&format!("f{i}.conf")), format!("v{round}")).unwrap();
        }
        for (i, &b) in before.iter().enumerate() {
            assert_ne!(ino(i), b, "round {round}: f{i}.conf rewritten in place");
            let v = read(&m.b(&format!("f{i}.conf"))).unwrap();
            assert_eq!(v, format!("v{round}").as_bytes());
        }
    }
    // Renamed through the mount (a file, and a directory of such files),
    // they are still found by their new paths.
    fs::create_dir(m.b("sub")).unwrap();
    for i in 0..4 {
        fs::write(m.b(&format!("sub/g{i}.conf")), b"v1").unwrap();
    }
    let more: Vec<File> = (0..4).map(|i| pin(format!("sub/g{i}.conf"))).collect();
    fs::rename(m.m("sub"), m.m("moved")).unwrap();
    fs::rename(m.m("f39.conf"), m.m("moved/f39.conf")).unwrap();
    let names: Vec<String> = (0..4)
        .map(|i| format!("moved/g{i}.conf"))
        .chain(["moved/f39.conf".to_string()])
        .collect();
    let ino = |n: &str| fs::metadata(m.b(n)).unwrap().ino();
    let before: Vec<u64> = names.iter().map(|n| ino(n)).collect();
    write_back_and_drop_names();
    for n in &names {
        fs::write(m.m(n), b"v9").unwrap();
    }
    for (n, b) in names.iter().zip(before) {
        assert_ne!(ino(n), b, "{n} rewritten in place after its rename");
        assert_eq!(read(&m.b(n)).unwrap(), b"v9");
    }
    drop(more);
    let fds = status(&m)["inode_fds"].as_u64().unwrap();
    assert!(fds <= 16, "{fds} inodes hold an fd, past a budget of 16");
    drop(pins);
}

#[test]
fn atomic_falls_back_to_in_place_for_hard_links() {
    let (m, _p) = crash_mount(ATOMIC);
    fs::write(m.m("a"), b"one").unwrap();
    fs::hard_link(m.m("a"), m.m("b")).unwrap();
    fs::write(m.m("a"), b"two").unwrap();
    assert_eq!(
        fs::read(m.m("b")).unwrap(),
        b"two",
        "the hard link was broken"
    );
    assert_eq!(fs::metadata(m.b("a")).unwrap().nlink(), 2);
}

#[test]
fn append_preallocates_ahead_and_trims_at_close() {
    let (m, _p) = crash_mount("[defaults]\nwrite = \"append\"\npreallocate = \"8MiB\"\n");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.m("log"))
        .unwrap();
    for _ in 0..16 {
        f.write_all(&[b'x'; 4096]).unwrap();
    }
    let open = fs::metadata(m.b("log")).unwrap();
    assert_eq!(
        open.len(),
        16 * 4096,
        "the visible size is what was written"
    );
    assert!(
        open.blocks() * 512 >= 8 << 20,
        "not preallocated: {} blocks",
        open.blocks()
    );
    drop(f);
    // The tail goes at the kernel's RELEASE, which follows close(2).
    let start = std::time::Instant::now();
    let closed = loop {
        let st = fs::metadata(m.b("log")).unwrap();
        assert_eq!(st.len(), 16 * 4096);
        if st.blocks() * 512 < 1 << 20 || start.elapsed() > Duration::from_secs(5) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        closed.blocks() * 512 < 1 << 20,
        "tail not released: {} blocks",
        closed.blocks()
    );
}

/// A child that inherits an append file and closes its copy (at exec)
/// while the parent keeps appending: the preallocated tail stays, and no
/// record is cut by a release racing the parent's writes.
#[test]
fn a_child_closing_an_inherited_append_file_cuts_nothing() {
    let (m, _p) = crash_mount("[defaults]\nwrite = \"append\"\npreallocate = \"1MiB\"\n");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.m("log"))
        .unwrap();
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Stops the spawning thread however the writing ends (a failed
    /// assertion included), so the scope can join it.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Each spawn forks this process: the child holds a copy of
            // `f` until its exec closes it (a FUSE FLUSH from the child).
            while !stop.load(Ordering::Relaxed) {
                let _ = Command::new("true").status();
            }
        });
        let _stop = Stop(&stop);
        for i in 0..2000u32 {
            f.write_all(format!("{i:07}\n").as_bytes()).unwrap();
            let len = f.metadata().unwrap().len();
            assert_eq!(len, u64::from(i + 1) * 8, "size after record {i}");
        }
    });
    drop(f);
    let text = fs::read_to_string(m.b("log")).unwrap();
    let want: String = (0..2000u32).map(|i| format!("{i:07}\n")).collect();
    assert!(text == want, "records lost or cut ({} bytes)", text.len());
}

/// Under `interval`, opens of passthrough and append files leave their
/// writes to the kernel (FUSE passthrough) and the flusher watches the
/// file: it syncs every interval while the file changes, not while it
/// does not, keeps an append file's preallocation ahead of its size, and
/// syncs once more after the last close.
#[test]
fn interval_syncs_files_whose_writes_bypass_the_daemon() {
    let p = PolicyFile::new(
        "[defaults]\nwrite = \"append\"\npreallocate = \"1MiB\"\nsync = { interval = \"100ms\" }\n",
    );
    let m = Mount::with_args(&["--policy", p.0.to_str().unwrap()]);
    let syncs = || rule(&m, "defaults")["durafs_syncs"].as_u64().unwrap();
    let settle = || std::thread::sleep(Duration::from_millis(450));
    // Settles once the writer (another process) has written `len` bytes.
    let settle_at = |len: u64| {
        let t = std::time::Instant::now();
        while fs::metadata(m.b("log")).map_or(0, |s| s.len()) != len {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the writer never wrote {len} bytes"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        settle();
    };
    // The writer is a shell of its own using builtins only: a fork in
    // this test process (`durafs status`, other tests) would close an
    // inherited copy of the file, and a close releases the preallocation.
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3>>'{}'; printf '%5000s' '' >&3; read x; printf more >&3; read x",
            m.m("log").display()
        ))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut go = sh.stdin.take().unwrap();
    settle_at(5000);
    let open = fs::metadata(m.b("log")).unwrap();
    assert_eq!(open.len(), 5000);
    assert!(
        open.blocks() * 512 >= 1 << 20,
        "not preallocated: {} blocks",
        open.blocks()
    );
    let r = rule(&m, "defaults");
    assert_eq!(r["writes"], 0, "the writes went through the daemon: {r}");
    let s1 = syncs();
    assert!(s1 >= 1, "no interval sync of a written file: {r}");
    settle();
    assert_eq!(syncs(), s1, "an unchanged file was synced again");
    writeln!(go, "more").unwrap();
    settle_at(5004);
    let s2 = syncs();
    assert!(s2 > s1, "a changed file was not synced: {s1} -> {s2}");
    writeln!(go, "close").unwrap();
    assert!(sh.wait().unwrap().success());
    settle();
    assert!(syncs() > s2, "no sync after the last close");
    let closed = fs::metadata(m.b("log")).unwrap();
    assert_eq!(closed.len(), 5004);
    assert!(
        closed.blocks() * 512 < 1 << 20,
        "tail not released: {} blocks",
        closed.blocks()
    );
}

#[test]
fn direct_writes_keep_unaligned_neighbours_intact() {
    let (m, _p) = crash_mount("[defaults]\nwrite = \"direct\"\n");
    let f = std::sync::Arc::new(
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(m.m("d"))
            .unwrap(),
    );
    // Eight writers, 100-byte records: many share a sector with another's.
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                use std::os::unix::fs::FileExt;
                for i in 0..40u64 {
                    let rec = i * 8 + t;
                    f.write_all_at(&[b'a' + t as u8; 100], rec * 100).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut got = Vec::new();
    (&*f).read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 320 * 100);
    for (rec, chunk) in got.chunks(100).enumerate() {
        let want = b'a' + (rec % 8) as u8;
        assert!(chunk.iter().all(|&c| c == want), "record {rec} torn");
    }
    assert_eq!(fs::read(m.b("d")).unwrap(), got);
}

// --- a real application: SQLite ---------------------------------------------
//
// The sqlite3 CLI commits transactions through a crash-sim mount; a `.shell`
// line inside the same sqlite3 process cuts the power while its connection
// is still open (WAL frames not checkpointed, a transaction in flight).
// Afterwards sqlite3 opens the backing file directly: the database must pass
// its integrity check and hold exactly the transactions that committed.

const COMMITS: u32 = 20;

/// Runs `sqlite3` on `db` with `script`; returns its stdout.
fn sqlite(db: &Path, script: &str) -> String {
    let mut child = Command::new("sqlite3")
        .arg("-batch")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 is missing: scripts/setup.sh installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commits COMMITS transactions in `journal_mode` with `synchronous`, opens
/// one more without committing, and crashes the mount from inside sqlite3.
/// Returns the ids present afterwards (integrity checked).
fn sqlite_crash(policy: &str, journal_mode: &str, synchronous: &str) -> Vec<u32> {
    let (m, _p) = crash_mount(policy);
    let db = m.m("app.db");
    let mut script = format!(
        "PRAGMA journal_mode={journal_mode};\nPRAGMA synchronous={synchronous};\n\
         PRAGMA wal_autocheckpoint=0;\n\
         CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB NOT NULL);\n"
    );
    for i in 1..=COMMITS {
        // Rows big enough to touch several pages each.
        script += &format!("BEGIN; INSERT INTO t VALUES({i}, zeroblob(6000)); COMMIT;\n");
    }
    script += "SELECT 'committed', count(*) FROM t;\n";
    script += "BEGIN; INSERT INTO t VALUES(1000, zeroblob(6000));\n";
    script += &format!(
        "SELECT 'in flight';\n.shell {} crash {}\n",
        durafs_bin(),
        m.mnt.display()
    );
    let out = sqlite(&db, &script);
    assert!(out.contains(&format!("committed|{COMMITS}")), "{out}");
    assert!(out.contains("simulated power cut"), "{out}");
    assert!(!m.is_mounted(), "still mounted after the crash: {out}");

    let after = m.b("app.db");
    assert!(after.exists(), "the database file itself was lost");
    let check = sqlite(
        &after,
        "PRAGMA integrity_check;\nSELECT id FROM t ORDER BY id;\n",
    );
    let mut lines = check.lines();
    assert_eq!(lines.next(), Some("ok"), "integrity check: {check}");
    lines.map(|l| l.parse().unwrap()).collect()
}

fn all_commits() -> Vec<u32> {
    (1..=COMMITS).collect()
}

#[test]
fn sqlite_wal_keeps_every_committed_transaction() {
    assert_eq!(sqlite_crash(PLAIN, "WAL", "FULL"), all_commits());
}

#[test]
fn sqlite_rollback_journal_with_synchronous_extra_keeps_every_commit() {
    assert_eq!(sqlite_crash(PLAIN, "DELETE", "EXTRA"), all_commits());
}

/// synchronous=FULL does not fsync the directory after deleting the
/// journal, which is the commit point in DELETE mode (SQLite documents this
/// as the reason for EXTRA): the crash brings the journal back and SQLite
/// rolls the last committed transaction back. The database policy's
/// dir-sync closes that gap without changing the app.
#[test]
fn sqlite_rollback_journal_full_loses_the_last_commit_unless_the_policy_syncs_the_dir() {
    let got = sqlite_crash(PLAIN, "DELETE", "FULL");
    assert_eq!(got, (1..COMMITS).collect::<Vec<_>>());
    assert_eq!(
        sqlite_crash(&shipped("database.toml"), "DELETE", "FULL"),
        all_commits()
    );
}
