//! The command line and the daemon's life: clear errors on bad input with
//! nothing touched, a background mount that returns when ready, clean
//! unmounts on signal, busy and dead mounts.
#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Mount, durafs_bin, native_dir};

fn durafs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(durafs_bin());
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The mount table's line for `p` (canonicalised), if mounted.
fn mounted(p: &Path) -> Option<String> {
    common::mount_line(&fs::canonicalize(p).unwrap_or(p.to_path_buf()))
}

/// Runs a mount that must fail, and checks the message and that nothing
/// was mounted or created.
fn refuses(args: &[&dyn AsRef<std::ffi::OsStr>], mountpoint: &Path, want: &[&str]) {
    let o = durafs(args);
    assert!(
        !o.status.success(),
        "mount succeeded: {args:?}",
        args = args
            .iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>()
    );
    let e = stderr(&o);
    for w in want {
        assert!(e.contains(w), "message lacks {w:?}: {e}");
    }
    assert!(
        mounted(mountpoint).is_none(),
        "something got mounted at {}",
        mountpoint.display()
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_touches_nothing() {
    let t = native_dir();
    let b = t.path().join("backing");
    let m = t.path().join("mnt");
    refuses(
        &[&"mount", &b, &m],
        &m,
        &["backing directory", "does not exist"],
    );
    fs::write(&b, b"file").unwrap();
    fs::create_dir(&m).unwrap();
    refuses(&[&"mount", &b, &m], &m, &["not a directory"]);
    fs::remove_file(&b).unwrap();
    fs::create_dir(&b).unwrap();
    let missing = t.path().join("nope");
    refuses(
        &[&"mount", &b, &missing],
        &missing,
        &["mount point", "does not exist", "mkdir"],
    );
    fs::write(m.join("keep"), b"precious").unwrap();
    refuses(&[&"mount", &b, &m], &m, &["not empty", "-o nonempty"]);
    assert_eq!(fs::read(m.join("keep")).unwrap(), b"precious");
    let inner = b.join("inner");
    fs::create_dir(&inner).unwrap();
    refuses(
        &[&"mount", &b, &inner],
        &inner,
        &["inside the backing directory"],
    );
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    refuses(
        &[&"mount", &"-o", &"threads=zero", &b, &empty],
        &empty,
        &["threads=zero", "whole number"],
    );
    refuses(
        &[&"mount", &"-o", &"frobnicate", &b, &empty],
        &empty,
        &["frobnicate", "known options"],
    );
}

#[test]
fn refuses_a_mount_point_that_is_already_mounted() {
    let m = Mount::new();
    let other = native_dir();
    let before = mounted(&m.mnt).unwrap();
    refuses(
        &[&"mount", &other.path(), &m.mnt],
        &other.path().join("x"),
        &["already a mount point"],
    );
    assert_eq!(
        mounted(&m.mnt).unwrap(),
        before,
        "the existing mount changed"
    );
}

#[test]
fn background_mount_returns_when_ready_and_umount_removes_it() {
    let t = native_dir();
    let b = t.path().join("backing");
    let m = t.path().join("mnt");
    fs::create_dir(&b).unwrap();
    fs::create_dir(&m).unwrap();
    fs::write(b.join("present"), b"at once").unwrap();
    let o = durafs(&[&"mount", &b, &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Ready on return: no waiting, no retry.
    assert_eq!(fs::read(m.join("present")).unwrap(), b"at once");
    let line = mounted(&m).expect("mounted");
    // Type and source: `fuse.durafs BACKING` in mountinfo (Linux);
    // macFUSE names every mount's type `macfuse`.
    #[cfg(target_os = "linux")]
    {
        let (_, post) = line.split_once(" - ").unwrap();
        let mut f = post.split(' ');
        assert_eq!(f.next(), Some("fuse.durafs"));
        assert_eq!(
            f.next(),
            Some(fs::canonicalize(&b).unwrap().to_str().unwrap())
        );
    }
    #[cfg(target_os = "macos")]
    assert!(line.contains("(macfuse"), "{line}");
    let o = durafs(&[&"umount", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(mounted(&m).is_none());
    assert_eq!(fs::read(b.join("present")).unwrap(), b"at once");
}

#[test]
fn umount_of_a_busy_mount_says_so() {
    let m = Mount::new();
    fs::write(m.m("f"), b"x").unwrap();
    let held = fs::File::open(m.m("f")).unwrap();
    let o = durafs(&[&"umount", &m.mnt]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("busy"), "{}", stderr(&o));
    assert!(mounted(&m.mnt).is_some());
    drop(held);
    let o = durafs(&[&"umount", &m.mnt]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(mounted(&m.mnt).is_none());
}

#[test]
fn umount_refuses_what_is_not_a_durafs_mount() {
    let t = native_dir();
    let o = durafs(&[&"umount", &t.path()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a durafs mount"), "{}", stderr(&o));
}

#[test]
fn sigterm_unmounts_cleanly() {
    let mut m = Mount::new();
    fs::write(m.m("f"), b"data").unwrap();
    let st = Command::new("kill")
        .args(["-TERM", &m.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let exit = m
        .wait_exit(Duration::from_secs(10))
        .expect("daemon did not exit on SIGTERM");
    assert!(exit.success(), "daemon exit status {exit:?}");
    assert!(!m.is_mounted());
    assert_eq!(fs::read(m.b("f")).unwrap(), b"data");
}

#[test]
fn a_dead_daemon_leaves_a_mount_that_umount_removes() {
    let mut m = Mount::new();
    let st = Command::new("kill")
        .args(["-KILL", &m.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    m.wait_exit(Duration::from_secs(10))
        .expect("daemon survived SIGKILL");
    assert!(m.is_mounted(), "the kernel keeps the dead mount");
    let err = fs::metadata(m.m("anything")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));
    let o = durafs(&[&"umount", &m.mnt]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!m.is_mounted());
}

#[test]
fn mounting_over_the_backing_directory_itself_works() {
    let t = native_dir();
    let d = t.path().join("data");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("old"), b"kept").unwrap();
    let o = durafs(&[&"mount", &d, &d]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(d.join("old")).unwrap(), b"kept");
    fs::write(d.join("new"), b"through durafs").unwrap();
    let o = durafs(&[&"umount", &d]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(d.join("new")).unwrap(), b"through durafs");
}

#[test]
fn help_explains_the_mount_options() {
    let o = durafs(&[&"mount", &"--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for w in [
        "allow_other",
        "threads=N",
        "attr-timeout",
        "passthrough=on|off",
        "--foreground",
    ] {
        assert!(out.contains(w), "--help lacks {w}: {out}");
    }
}
