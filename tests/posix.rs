//! Every passthrough operation through a real mount, compared with the same
//! calls on a plain directory of the backing filesystem: each scenario runs
//! twice, once natively and once through durafs, and the transcripts of
//! results and errnos must be identical.
#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Mount, native_dir};
use durafs::platform;

/// A transcript of outcomes: values or errno names, never inode numbers or times.
#[derive(Default, Debug, PartialEq)]
struct Log(Vec<String>);

impl Log {
    fn rec<T: std::fmt::Debug>(&mut self, step: &str, r: std::io::Result<T>) {
        let s = match r {
            Ok(v) => format!("{step}: ok {v:?}"),
            Err(e) => format!("{step}: errno {}", e.raw_os_error().unwrap_or(-1)),
        };
        self.0.push(s);
    }
}

/// Runs `scenario` natively and through two mounts, and compares: one with
/// every inode held by fd, one where all but the first few are held by file
/// handle (`max-inode-fds=16`), as happens past the fd limit.
fn parity(scenario: impl Fn(&Path, &mut Log)) {
    let native = native_dir();
    let mut want = Log::default();
    scenario(native.path(), &mut want);
    assert!(!want.0.is_empty());
    for opts in [&[][..], &["max-inode-fds=16"][..]] {
        let m = Mount::with_options(opts);
        // Use up the fd budget so the scenario's own inodes are handle-held.
        if !opts.is_empty() {
            for i in 0..20 {
                fs::create_dir(m.m(&format!(".pad{i}"))).unwrap();
            }
        }
        let root = m.m("scenario");
        fs::create_dir(&root).unwrap();
        let mut got = Log::default();
        scenario(&root, &mut got);
        assert_eq!(
            got, want,
            "through durafs -o {opts:?} (left) vs native (right)"
        );
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn dir_fd(p: &Path) -> std::os::fd::OwnedFd {
    platform::open_at(
        platform::cwd(),
        &c(p),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
    .unwrap()
}

#[test]
fn create_write_read_stat() {
    parity(|r, log| {
        log.rec("write", fs::write(r.join("f"), b"hello world"));
        log.rec("read", fs::read(r.join("f")));
        let md = fs::metadata(r.join("f")).unwrap();
        log.rec(
            "size/mode/nlink",
            Ok((md.len(), md.mode() & 0o7777, md.nlink())),
        );
        log.rec(
            "excl",
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(r.join("f"))
                .map(drop),
        );
        log.rec("open missing", File::open(r.join("nope")).map(drop));
        log.rec("stat missing again", fs::metadata(r.join("nope")).map(drop));
        log.rec("create after a miss", fs::write(r.join("nope"), b"now"));
        log.rec("read after a miss", fs::read(r.join("nope")));
        log.rec(
            "mkdir after a miss",
            fs::metadata(r.join("nd"))
                .map(drop)
                .or_else(|_| fs::create_dir(r.join("nd"))),
        );
        log.rec(
            "link after a miss",
            fs::metadata(r.join("nl"))
                .map(drop)
                .or_else(|_| fs::hard_link(r.join("nope"), r.join("nl"))),
        );
        log.rec(
            "rename onto a missed name",
            fs::metadata(r.join("nr"))
                .map(drop)
                .or_else(|_| fs::rename(r.join("nl"), r.join("nr"))),
        );
        log.rec("renamed", fs::read(r.join("nr")));
        log.rec("mkdir", fs::create_dir(r.join("d")));
        log.rec("mkdir again", fs::create_dir(r.join("d")));
        log.rec(
            "open dir for write",
            OpenOptions::new().write(true).open(r.join("d")).map(drop),
        );
        log.rec("file as dir", File::open(r.join("f/x")).map(drop));
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(r.join("f"))
            .unwrap();
        log.rec("trunc-open size", f.metadata().map(|m| m.len()));
        log.rec("pwrite at 4096", f.write_at(b"x", 4096));
        log.rec(
            "size after sparse write",
            fs::metadata(r.join("f")).map(|m| m.len()),
        );
        log.rec(
            "sparse read",
            fs::read(r.join("f")).map(|v| (v.len(), v[0], v[4096])),
        );
    });
}

#[test]
fn rename_edge_cases() {
    parity(|r, log| {
        fs::create_dir_all(r.join("a/sub")).unwrap();
        fs::create_dir(r.join("empty")).unwrap();
        fs::write(r.join("f"), b"1").unwrap();
        fs::write(r.join("g"), b"2").unwrap();
        log.rec(
            "dir over non-empty dir",
            fs::rename(r.join("empty"), r.join("a")),
        );
        log.rec("file over dir", fs::rename(r.join("f"), r.join("empty")));
        log.rec("dir over file", fs::rename(r.join("empty"), r.join("f")));
        log.rec(
            "dir into itself",
            fs::rename(r.join("a"), r.join("a/sub/x")),
        );
        log.rec("file over file", fs::rename(r.join("f"), r.join("g")));
        log.rec("content", fs::read(r.join("g")));
        log.rec("old gone", fs::metadata(r.join("f")).map(drop));
        log.rec(
            "dir over empty dir",
            fs::rename(r.join("a/sub"), r.join("empty")),
        );
        log.rec("listing", list(r));
        let d = dir_fd(r);
        fs::write(r.join("p"), b"p").unwrap();
        fs::write(r.join("q"), b"q").unwrap();
        log.rec(
            "noreplace",
            platform::rename_at(d.as_fd(), c"p", d.as_fd(), c"q", platform::RENAME_NOREPLACE),
        );
        log.rec(
            "exchange",
            platform::rename_at(d.as_fd(), c"p", d.as_fd(), c"q", platform::RENAME_EXCHANGE),
        );
        log.rec("p after exchange", fs::read(r.join("p")));
        log.rec("q after exchange", fs::read(r.join("q")));
        log.rec(
            "exchange with missing",
            platform::rename_at(d.as_fd(), c"p", d.as_fd(), c"zz", platform::RENAME_EXCHANGE),
        );
        log.rec(
            "noreplace to new name",
            platform::rename_at(
                d.as_fd(),
                c"p",
                d.as_fd(),
                c"p2",
                platform::RENAME_NOREPLACE,
            ),
        );
    });
}

fn list(r: &Path) -> std::io::Result<Vec<String>> {
    let mut v: Vec<String> = fs::read_dir(r)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

#[test]
fn unlinked_open_file_stays_readable() {
    parity(|r, log| {
        fs::write(r.join("f"), b"still here").unwrap();
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(r.join("f"))
            .unwrap();
        log.rec("unlink", fs::remove_file(r.join("f")));
        log.rec("stat name", fs::metadata(r.join("f")).map(drop));
        let mut s = String::new();
        log.rec("read via fd", f.read_to_string(&mut s).map(|_| s.clone()));
        log.rec("write via fd", f.write_all(b"+more"));
        log.rec("nlink via fd", f.metadata().map(|m| (m.nlink(), m.len())));
    });
}

#[test]
fn hard_links_across_directories() {
    parity(|r, log| {
        fs::create_dir(r.join("a")).unwrap();
        fs::create_dir(r.join("b")).unwrap();
        fs::write(r.join("a/f"), b"shared").unwrap();
        log.rec("link", fs::hard_link(r.join("a/f"), r.join("b/g")));
        log.rec("nlink a", fs::metadata(r.join("a/f")).map(|m| m.nlink()));
        log.rec("nlink b", fs::metadata(r.join("b/g")).map(|m| m.nlink()));
        let same = fs::metadata(r.join("a/f")).unwrap().ino()
            == fs::metadata(r.join("b/g")).unwrap().ino();
        log.rec("same ino", Ok(same));
        fs::write(r.join("b/g"), b"changed").unwrap();
        log.rec("seen via other name", fs::read(r.join("a/f")));
        log.rec("unlink a", fs::remove_file(r.join("a/f")));
        log.rec(
            "nlink b after",
            fs::metadata(r.join("b/g")).map(|m| m.nlink()),
        );
        log.rec(
            "link to existing",
            fs::hard_link(r.join("b/g"), r.join("b/g")),
        );
        log.rec("link dir", fs::hard_link(r.join("a"), r.join("b/dirlink")));
    });
}

#[test]
fn append_from_two_descriptors() {
    parity(|r, log| {
        let mut a = OpenOptions::new()
            .append(true)
            .create(true)
            .open(r.join("log"))
            .unwrap();
        let mut b = OpenOptions::new().append(true).open(r.join("log")).unwrap();
        for i in 0..20 {
            a.write_all(format!("a{i};").as_bytes()).unwrap();
            b.write_all(format!("b{i};").as_bytes()).unwrap();
        }
        drop((a, b));
        log.rec("content", fs::read_to_string(r.join("log")));
    });
}

#[test]
fn truncate_open_file() {
    parity(|r, log| {
        fs::write(r.join("f"), vec![7u8; 10000]).unwrap();
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(r.join("f"))
            .unwrap();
        log.rec("ftruncate shrink", f.set_len(100));
        log.rec("size", fs::metadata(r.join("f")).map(|m| m.len()));
        log.rec("read past end", f.read_at(&mut [0u8; 10], 5000));
        log.rec(
            "truncate by path grow",
            OpenOptions::new()
                .write(true)
                .open(r.join("f"))
                .and_then(|g| g.set_len(20000)),
        );
        let mut buf = vec![1u8; 20000];
        f.seek(SeekFrom::Start(0)).unwrap();
        log.rec("read all", f.read_exact(&mut buf));
        log.rec("bytes", Ok((buf[99], buf[100], buf[19999])));
    });
}

#[test]
fn symlinks_and_loops() {
    parity(|r, log| {
        log.rec("symlink", std::os::unix::fs::symlink("target", r.join("l")));
        log.rec("readlink", fs::read_link(r.join("l")));
        log.rec("dangling open", File::open(r.join("l")).map(drop));
        std::os::unix::fs::symlink("loop2", r.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", r.join("loop2")).unwrap();
        log.rec("loop open", File::open(r.join("loop1")).map(drop));
        log.rec(
            "lstat type",
            fs::symlink_metadata(r.join("l")).map(|m| m.file_type().is_symlink()),
        );
        fs::write(r.join("target"), b"t").unwrap();
        log.rec("follow", fs::read(r.join("l")));
        log.rec(
            "symlink exists",
            std::os::unix::fs::symlink("x", r.join("l")),
        );
        let long = "y".repeat(4000);
        log.rec(
            "long target",
            std::os::unix::fs::symlink(&long, r.join("long")),
        );
        log.rec(
            "long readlink",
            fs::read_link(r.join("long")).map(|p| p.as_os_str().len()),
        );
    });
}

#[test]
fn long_and_non_utf8_names() {
    parity(|r, log| {
        let n255 = "n".repeat(255);
        let n256 = "n".repeat(256);
        log.rec("255", fs::write(r.join(&n255), b"ok"));
        log.rec("256", fs::write(r.join(&n256), b"no"));
        log.rec("read 255", fs::read(r.join(&n255)));
        let odd = OsStr::from_bytes(b"caf\xe9-\xff\xfe");
        log.rec("non-utf8 create", fs::write(r.join(odd), b"bytes"));
        log.rec("non-utf8 read", fs::read(r.join(odd)));
        let mut names: Vec<Vec<u8>> = fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        log.rec("listing", Ok(names));
    });
}

#[test]
fn big_directory_listing() {
    parity(|r, log| {
        for i in 0..1500 {
            File::create(r.join(format!("entry-{i:05}"))).unwrap();
        }
        let v = list(r).unwrap();
        log.rec("count", Ok(v.len()));
        log.rec("first/last", Ok((v[0].clone(), v[v.len() - 1].clone())));
        for i in (0..1500).step_by(3) {
            fs::remove_file(r.join(format!("entry-{i:05}"))).unwrap();
        }
        log.rec("after removing a third", list(r).map(|v| v.len()));
    });
}

#[test]
fn special_files() {
    parity(|r, log| {
        let d = dir_fd(r);
        log.rec(
            "mkfifo",
            platform::mknod_at(d.as_fd(), c"fifo", platform::file_type::S_IFIFO | 0o640, 0),
        );
        log.rec(
            "fifo type",
            fs::symlink_metadata(r.join("fifo"))
                .map(|m| (m.mode() & platform::file_type::S_IFMT, m.mode() & 0o777)),
        );
        log.rec(
            "socket",
            std::os::unix::net::UnixListener::bind(r.join("sock")).map(drop),
        );
        log.rec(
            "socket type",
            fs::symlink_metadata(r.join("sock")).map(|m| m.mode() & platform::file_type::S_IFMT),
        );
        log.rec(
            "mknod reg",
            platform::mknod_at(d.as_fd(), c"reg", platform::file_type::S_IFREG | 0o600, 0),
        );
        log.rec(
            "chardev",
            platform::mknod_at(
                d.as_fd(),
                c"null",
                platform::file_type::S_IFCHR | 0o666,
                null_dev(),
            ),
        );
        log.rec(
            "chardev rdev",
            fs::symlink_metadata(r.join("null")).map(|m| m.rdev() == null_dev()),
        );
    });
}

#[test]
fn attributes_and_times() {
    parity(|r, log| {
        fs::write(r.join("f"), b"x").unwrap();
        log.rec(
            "chmod",
            fs::set_permissions(r.join("f"), fs::Permissions::from_mode(0o4751)),
        );
        log.rec("mode", fs::metadata(r.join("f")).map(|m| m.mode() & 0o7777));
        log.rec(
            "chown",
            std::os::unix::fs::chown(r.join("f"), Some(65534), Some(65534)),
        );
        log.rec(
            "owner",
            fs::metadata(r.join("f")).map(|m| (m.uid(), m.gid(), m.mode() & 0o7777)),
        );
        let f = File::open(r.join("f")).unwrap();
        log.rec(
            "utimens set",
            platform::futimens(
                f.as_fd(),
                platform::TimeSpec::At(1_000_000, 5),
                platform::TimeSpec::At(2_000_000, 7),
            ),
        );
        log.rec(
            "times",
            fs::metadata(r.join("f"))
                .map(|m| (m.atime(), m.atime_nsec(), m.mtime(), m.mtime_nsec())),
        );
        log.rec(
            "utimens omit atime",
            platform::futimens(
                f.as_fd(),
                platform::TimeSpec::Omit,
                platform::TimeSpec::At(3_000_000, 0),
            ),
        );
        log.rec(
            "times after omit",
            fs::metadata(r.join("f")).map(|m| (m.atime(), m.mtime())),
        );
        log.rec(
            "utimens before epoch",
            platform::futimens(
                f.as_fd(),
                platform::TimeSpec::At(-1000, 5),
                platform::TimeSpec::Omit,
            ),
        );
        log.rec(
            "pre-epoch atime",
            fs::metadata(r.join("f")).map(|m| (m.atime(), m.atime_nsec())),
        );
    });
}

#[test]
fn xattrs() {
    parity(|r, log| {
        fs::write(r.join("f"), b"x").unwrap();
        let f = File::open(r.join("f")).unwrap();
        let fd = f.as_fd();
        log.rec("set", platform::setxattr_fd(fd, c"user.a", b"value-a", 0));
        log.rec(
            "set create existing",
            platform::setxattr_fd(fd, c"user.a", b"v", libc::XATTR_CREATE),
        );
        log.rec(
            "set replace missing",
            platform::setxattr_fd(fd, c"user.b", b"v", libc::XATTR_REPLACE),
        );
        log.rec("size", platform::getxattr_fd(fd, c"user.a", &mut []));
        let mut small = [0u8; 3];
        log.rec(
            "too small",
            platform::getxattr_fd(fd, c"user.a", &mut small),
        );
        let mut buf = [0u8; 64];
        log.rec(
            "get",
            platform::getxattr_fd(fd, c"user.a", &mut buf).map(|n| buf[..n].to_vec()),
        );
        log.rec(
            "get missing",
            platform::getxattr_fd(fd, c"user.zz", &mut buf),
        );
        let mut lbuf = [0u8; 256];
        log.rec(
            "list",
            platform::listxattr_fd(fd, &mut lbuf).map(|n| lbuf[..n].to_vec()),
        );
        log.rec("remove", platform::removexattr_fd(fd, c"user.a"));
        log.rec("remove again", platform::removexattr_fd(fd, c"user.a"));
    });
}

#[test]
fn fallocate_seek_data_and_copy_range() {
    parity(|r, log| {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(r.join("f"))
            .unwrap();
        log.rec("allocate", platform::fallocate(f.as_fd(), 0, 0, 1 << 20));
        log.rec("size", f.metadata().map(|m| m.len()));
        f.write_all_at(&vec![9u8; 1 << 20], 0).unwrap();
        log.rec(
            "punch",
            platform::fallocate(
                f.as_fd(),
                platform::FALLOC_FL_PUNCH_HOLE | platform::FALLOC_FL_KEEP_SIZE,
                256 << 10,
                256 << 10,
            ),
        );
        log.rec("seek hole", platform::lseek(f.as_fd(), 0, libc::SEEK_HOLE));
        log.rec(
            "seek data",
            platform::lseek(f.as_fd(), 256 << 10, libc::SEEK_DATA),
        );
        log.rec(
            "seek data past end",
            platform::lseek(f.as_fd(), 2 << 20, libc::SEEK_DATA),
        );
        log.rec(
            "keep size grows blocks",
            platform::fallocate(f.as_fd(), platform::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20),
        );
        log.rec("size kept", f.metadata().map(|m| m.len()));
        let g = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(r.join("g"))
            .unwrap();
        log.rec(
            "copy range",
            platform::copy_file_range(f.as_fd(), 0, g.as_fd(), 100, 4096, 0),
        );
        log.rec(
            "copied",
            fs::read(r.join("g")).map(|v| (v.len(), v[99], v[100], v[4195])),
        );
        log.rec(
            "bad mode",
            platform::fallocate(f.as_fd(), 0x4000_0000, 0, 10),
        );
    });
}

#[test]
fn syncs_and_statfs() {
    parity(|r, log| {
        let f = File::create(r.join("f")).unwrap();
        log.rec("fsync", f.sync_all());
        log.rec("fdatasync", f.sync_data());
        let d = File::open(r).unwrap();
        log.rec("fsyncdir", d.sync_all());
        log.rec("fdatasyncdir", d.sync_data());
    });
    let m = Mount::new();
    let a = platform::statvfs_fd(File::open(&m.mnt).unwrap().as_fd()).unwrap();
    let b = platform::statvfs_fd(File::open(&m.backing).unwrap().as_fd()).unwrap();
    assert_eq!(
        (a.f_bsize, a.f_blocks, a.f_files, a.f_namemax),
        (b.f_bsize, b.f_blocks, b.f_files, b.f_namemax)
    );
}

#[test]
fn renaming_a_parent_does_not_break_an_open_file() {
    let m = Mount::new();
    fs::create_dir_all(m.m("top/inner")).unwrap();
    fs::write(m.m("top/inner/f"), b"before").unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.m("top/inner/f"))
        .unwrap();
    fs::rename(m.m("top"), m.m("moved")).unwrap();
    fs::rename(m.m("moved/inner"), m.m("moved/renamed")).unwrap();
    f.write_all_at(b"AFTER!", 0).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "AFTER!");
    assert_eq!(fs::read(m.b("moved/renamed/f")).unwrap(), b"AFTER!");
    // a lookup through the old name fails, through the new one works
    assert!(fs::metadata(m.m("top/inner/f")).is_err());
    assert_eq!(fs::read(m.m("moved/renamed/f")).unwrap(), b"AFTER!");
}

/// Runs `script` with `sh` as uid/gid 65534 with the given supplementary groups.
fn run_as_nobody(groups: &str, script: String) -> bool {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            &format!("--groups={groups}"),
            "sh",
            "-c",
        ])
        .arg(script)
        .status()
        .unwrap()
        .success()
}

#[test]
fn files_created_by_a_user_are_owned_by_that_user() {
    let m = Mount::with_options(&["allow_other,default_permissions"]);
    fs::create_dir(m.m("shared")).unwrap();
    fs::set_permissions(m.m("shared"), fs::Permissions::from_mode(0o777)).unwrap();
    assert!(run_as_nobody(
        "65534",
        format!(
            "echo hi > {0}/mine && mkdir {0}/mydir && ln -s x {0}/mylink && mkfifo {0}/myfifo",
            m.m("shared").display()
        )
    ));
    for name in ["mine", "mydir", "mylink", "myfifo"] {
        let md = fs::symlink_metadata(m.b("shared").join(name)).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (65534, 65534),
            "{name} on the backing store"
        );
    }
    // and the backing store refuses what it would refuse that user
    fs::write(m.m("rootonly"), b"x").unwrap();
    fs::set_permissions(m.m("rootonly"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        !run_as_nobody(
            "65534",
            format!("cat {} > /dev/null 2>&1", m.m("rootonly").display())
        ),
        "an unprivileged user read a 0600 root file through the mount"
    );
}

#[test]
fn supplementary_groups_are_honoured() {
    // No default_permissions: the daemon's own credential switch must carry
    // the caller's supplementary groups for the backing store to allow this.
    let m = Mount::with_options(&["allow_other"]);
    fs::create_dir(m.m("grp")).unwrap();
    std::os::unix::fs::chown(m.m("grp"), Some(0), Some(4242)).unwrap();
    fs::set_permissions(m.m("grp"), fs::Permissions::from_mode(0o770)).unwrap();
    assert!(
        run_as_nobody(
            "65534,4242",
            format!("echo x > {}/by-group", m.m("grp").display())
        ),
        "a member of the directory's group could not create a file"
    );
    let md = fs::metadata(m.b("grp/by-group")).unwrap();
    assert_eq!(md.uid(), 65534);
    assert!(
        !run_as_nobody(
            "65534",
            format!("echo x > {}/no-group 2>/dev/null", m.m("grp").display())
        ),
        "a non-member created a file in a 0770 directory"
    );
}

/// (Linux: on macOS every inode keeps its fd, so there is no budget.)
#[cfg(target_os = "linux")]
#[test]
fn more_inodes_than_the_fd_budget() {
    let m = Mount::with_options(&["max-inode-fds=32,allow_other,default_permissions"]);
    for d in 0..10 {
        fs::create_dir(m.b(&format!("d{d}"))).unwrap();
        for f in 0..100 {
            fs::write(m.b(&format!("d{d}/f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    // Hold every inode in the kernel (open dirs pin nothing; stat results
    // stay cached for the attr timeout) and check each through the mount.
    let mut n = 0;
    for d in 0..10 {
        for e in fs::read_dir(m.m(&format!("d{d}"))).unwrap() {
            let e = e.unwrap();
            let want = format!("d{d}/{}", e.file_name().to_string_lossy());
            let body = fs::read_to_string(e.path()).unwrap();
            assert_eq!(format!("d{}", body.replace('/', "/f")), want);
            n += 1;
        }
    }
    assert_eq!(n, 1000);
    let fds = fs::read_dir(format!("/proc/{}/fd", m.pid()))
        .unwrap()
        .count();
    assert!(
        fds < 32 + 40,
        "daemon holds {fds} fds with a budget of 32 inode fds"
    );
    // Handle-held inodes take every kind of operation, also for a non-root caller.
    fs::rename(m.m("d3"), m.m("moved")).unwrap();
    fs::set_permissions(m.m("moved"), fs::Permissions::from_mode(0o777)).unwrap();
    assert!(run_as_nobody(
        "65534",
        format!(
            "echo mine > {0}/new && ln {0}/new {0}/link && mv {0}/link {0}/link2",
            m.m("moved").display()
        )
    ));
    assert_eq!(fs::metadata(m.b("moved/new")).unwrap().uid(), 65534);
    assert_eq!(fs::metadata(m.m("moved/link2")).unwrap().nlink(), 2);
    std::os::unix::fs::chown(m.m("moved/f5"), Some(65534), None).unwrap();
    assert!(run_as_nobody(
        "65534",
        format!(
            "chmod 600 {}/f5 && touch -d @5 {0}/f5",
            m.m("moved").display()
        )
    ));
    let md = fs::metadata(m.b("moved/f5")).unwrap();
    assert_eq!((md.mode() & 0o777, md.mtime()), (0o600, 5));
}

#[test]
fn inode_numbers_match_the_backing_store_and_stay_stable() {
    let m = Mount::new();
    fs::write(m.m("f"), b"x").unwrap();
    let through = fs::metadata(m.m("f")).unwrap().ino();
    assert_eq!(through, fs::metadata(m.b("f")).unwrap().ino());
    let listed: Vec<u64> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().ino())
        .collect();
    assert_eq!(listed, vec![through]);
}

/// A read-only O_TRUNC open of a program some process is running fails
/// with ETXTBSY and truncates nothing, as on the backing filesystem (the
/// kernel checks it only after the FUSE OPEN, which would truncate); once
/// the program has exited, the same open truncates.
#[test]
fn read_only_truncating_open_of_a_running_program_is_etxtbsy() {
    use std::os::unix::fs::OpenOptionsExt;
    let m = Mount::new();
    let exe = m.m("prog");
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sleep(1)");
    // Copied by cp, so no writable fd of it exists in this (threaded)
    // process for a concurrent fork to inherit.
    let cp = std::process::Command::new("cp")
        .arg(sleep)
        .arg(&exe)
        .status()
        .unwrap();
    assert!(cp.success());
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let len = fs::metadata(&exe).unwrap().len();
    let mut child = std::process::Command::new(&exe).arg("10").spawn().unwrap();
    let trunc = || {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_TRUNC)
            .open(&exe)
    };
    let e = trunc().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "{e}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the running program died"
    );
    assert_eq!(fs::metadata(m.b("prog")).unwrap().len(), len);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(trunc().unwrap());
    assert_eq!(fs::metadata(m.b("prog")).unwrap().len(), 0);
}

/// /dev/null's device number (dev_t is u64 on Linux, i32 on macOS).
#[allow(clippy::unnecessary_cast)]
fn null_dev() -> u64 {
    libc::makedev(1, 3) as u64
}
