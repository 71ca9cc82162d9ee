//! What every frontend must show, written with `std::fs` alone so the same
//! tests run through FUSE on Linux (here, in CI), macFUSE on macOS and a
//! WinFsp volume on Windows (`cargo test --test volume` there): files and
//! directories pass through both ways, an atomic rewrite stays out of sight
//! until its last close (readers see the whole old file) and then replaces
//! the file whole, staging files
//! never show and their names cannot be taken, an append file's size is
//! exactly what was written, and a bad policy is refused before anything
//! is mounted.
//!
//! The crash-simulator proofs of each promise are in tests/durability.rs
//! (Linux and macOS: the simulator is part of the FUSE daemon).
#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use common::{Mount, durafs, names, policy_file, test_root};

/// `*.conf` atomic, `*.log` append with preallocation, the rest passthrough
/// made durable at close.
const POLICY: &str = r#"
version = 1

[defaults]
write = "passthrough"
sync = "on-close"

[[rule]]
name = "configs"
match = "**/*.conf"
write = "atomic"

[[rule]]
name = "logs"
match = "**/*.log"
write = "append"
preallocate = "1MiB"
"#;

fn mount() -> (Mount, tempfile::NamedTempFile) {
    let p = policy_file(POLICY);
    let m = Mount::with_args(&["--policy", p.path().to_str().unwrap()]);
    (m, p)
}

#[test]
fn files_and_directories_pass_through_both_ways() {
    let (m, _p) = mount();
    fs::create_dir(m.m("dir")).unwrap();
    fs::write(m.m("dir/a.txt"), b"through the mount").unwrap();
    assert_eq!(fs::read(m.b("dir/a.txt")).unwrap(), b"through the mount");
    fs::write(m.b("dir/b.txt"), b"on the backing dir").unwrap();
    assert_eq!(fs::read(m.m("dir/b.txt")).unwrap(), b"on the backing dir");
    assert_eq!(names(&m.m("dir")), ["a.txt", "b.txt"]);

    // Overwrite in the middle, extend, read back through one open.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.m("dir/a.txt"))
        .unwrap();
    f.seek(SeekFrom::Start(8)).unwrap();
    f.write_all(b"THE MOUNT, and more").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "through THE MOUNT, and more");
    f.set_len(7).unwrap();
    drop(f);
    assert_eq!(fs::read(m.b("dir/a.txt")).unwrap(), b"through");

    fs::rename(m.m("dir/a.txt"), m.m("c.txt")).unwrap();
    assert!(!m.b("dir/a.txt").exists());
    assert_eq!(fs::read(m.b("c.txt")).unwrap(), b"through");
    fs::remove_file(m.m("dir/b.txt")).unwrap();
    fs::remove_dir(m.m("dir")).unwrap();
    assert_eq!(names(&m.backing), ["c.txt"]);
    let e = fs::remove_file(m.m("missing")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn an_atomic_rewrite_shows_only_at_its_last_close() {
    let (m, _p) = mount();
    fs::write(m.m("app.conf"), b"old settings").unwrap();
    let mut w = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.m("app.conf"))
        .unwrap();
    w.write_all(b"new").unwrap();
    let mut w2 = OpenOptions::new()
        .write(true)
        .open(m.m("app.conf"))
        .unwrap();
    w2.seek(SeekFrom::Start(3)).unwrap();
    w2.write_all(b" settings").unwrap();

    // While writers are open the old file stays whole, on both sides, and
    // the stage shows only on the backing dir.
    assert_eq!(fs::read(m.m("app.conf")).unwrap(), b"old settings");
    assert_eq!(fs::read(m.b("app.conf")).unwrap(), b"old settings");
    assert_eq!(names(&m.mnt), ["app.conf"]);
    assert_eq!(names(&m.backing).len(), 2, "no stage on the backing dir");
    drop(w);
    assert_eq!(
        fs::read(m.b("app.conf")).unwrap(),
        b"old settings",
        "committed while another writer was still open"
    );
    drop(w2);
    assert_eq!(fs::read(m.m("app.conf")).unwrap(), b"new settings");
    assert_eq!(fs::read(m.b("app.conf")).unwrap(), b"new settings");
    assert_eq!(names(&m.backing), ["app.conf"], "a stage was left behind");
}

#[test]
fn readers_see_the_whole_old_file_until_the_commit_and_keep_it_after() {
    let (m, _p) = mount();
    fs::write(m.m("app.conf"), b"old contents, longer than the new").unwrap();
    let mut early = fs::File::open(m.m("app.conf")).unwrap();
    let mut w = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.m("app.conf"))
        .unwrap();
    w.write_all(b"NEW").unwrap();
    // Neither a reader opened before the rewrite nor one opened during it
    // sees a stage, or the old file cut to the stage's size.
    assert_eq!(
        fs::read(m.m("app.conf")).unwrap(),
        b"old contents, longer than the new"
    );
    let mut s = String::new();
    early.read_to_string(&mut s).unwrap();
    assert_eq!(s, "old contents, longer than the new");
    drop(w);
    assert_eq!(fs::read(m.m("app.conf")).unwrap(), b"NEW");
    // The early reader still holds the file it opened, as after a rename
    // over an open file on the backing filesystem.
    let mut again = String::new();
    early.seek(SeekFrom::Start(0)).unwrap();
    early.read_to_string(&mut again).unwrap();
    assert_eq!(again, "old contents, longer than the new");
}

#[test]
fn staging_names_cannot_be_taken_or_seen() {
    let (m, _p) = mount();
    assert!(
        fs::File::create(m.m(".durafs-stage.mine")).is_err(),
        "a reserved name was created through the mount"
    );
    fs::write(m.b(".durafs-left.over"), b"x").unwrap();
    fs::write(m.b("visible"), b"y").unwrap();
    assert_eq!(names(&m.mnt), ["visible"]);
}

#[test]
fn an_append_file_is_exactly_as_long_as_what_was_written() {
    let (m, _p) = mount();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.m("app.log"))
        .unwrap();
    for i in 0..64u64 {
        f.write_all(&[b'a' + (i % 26) as u8; 1000]).unwrap();
        assert_eq!(f.metadata().unwrap().len(), (i + 1) * 1000);
    }
    assert_eq!(fs::metadata(m.b("app.log")).unwrap().len(), 64_000);
    drop(f);
    let data = fs::read(m.b("app.log")).unwrap();
    assert_eq!(data.len(), 64_000);
    assert!(
        data.chunks(1000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == b'a' + (i % 26) as u8))
    );
}

#[test]
fn a_bad_policy_is_refused_before_anything_is_mounted() {
    let dir = tempfile::Builder::new()
        .prefix("durafs-volume")
        .tempdir_in(test_root())
        .unwrap();
    let backing = dir.path().join("backing");
    fs::create_dir(&backing).unwrap();
    fs::write(backing.join("keep"), b"data").unwrap();
    let mnt = dir.path().join("mnt");
    let bad = policy_file("version = 1\n[defaults]\nsync = \"sometimes\"\n");
    let out = durafs(&[
        "mount".as_ref(),
        "--policy".as_ref(),
        bad.path().as_os_str(),
        backing.as_os_str(),
        mnt.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sometimes"),
        "the error does not name the value: {err}"
    );
    assert!(!mnt.exists(), "the mount point was made");
    assert_eq!(fs::read(backing.join("keep")).unwrap(), b"data");
}
