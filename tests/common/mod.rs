//! The one mount helper every integration test uses.
//!
//! `Mount::new()` makes a temp backing dir and mount point, starts the real
//! `durafs` binary in the foreground, and returns only when the daemon says
//! the mount is ready. Drop unmounts, waits for the daemon (killing it if it
//! hangs) and never leaves a stale mount behind. A missing /dev/fuse (or
//! macFUSE) fails the test loudly: these tests never skip. On macOS the
//! helper finds mounts with mount(8) and force-unmounts with `umount -f`.
//! On Windows the mount point is a directory path that does not exist yet
//! (WinFsp creates it for the volume and removes it at unmount), and the
//! helper stops the daemon by closing its stdin, which unmounts as Ctrl-C
//! does; a missing WinFsp fails the test with the daemon's own message.
//! The macOS and Windows paths compile (CI type-checks them) but have not
//! been run.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The durafs binary under test.
pub fn durafs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_durafs")
}

/// A live durafs mount over a temp backing directory.
pub struct Mount {
    _dir: tempfile::TempDir,
    /// the backing directory
    pub backing: PathBuf,
    /// the mount point
    pub mnt: PathBuf,
    child: Option<Child>,
}

/// The mount table's line for `p`, if mounted: its /proc/self/mountinfo
/// line on Linux ("... MOUNTPOINT ... - TYPE SOURCE ..."), its mount(8)
/// line on macOS ("SOURCE on MOUNTPOINT (TYPE, OPTIONS)").
#[cfg(unix)]
pub fn mount_line(p: &Path) -> Option<String> {
    #[cfg(target_os = "linux")]
    let (table, want) = (
        std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        p.to_string_lossy().replace(' ', "\\040"),
    );
    #[cfg(target_os = "linux")]
    let at = |l: &str| l.split(' ').nth(4) == Some(want.as_str());
    #[cfg(target_os = "macos")]
    let (table, want) = (
        String::from_utf8_lossy(&Command::new("mount").output().ok()?.stdout).into_owned(),
        format!(" on {} (", p.display()),
    );
    #[cfg(target_os = "macos")]
    let at = |l: &str| l.contains(want.as_str());
    table.lines().find(|l| at(l)).map(str::to_string)
}

/// The filesystem type mounted at `p` (`fuse.durafs` on Linux; macFUSE
/// names every mount's type `macfuse`), if any.
#[cfg(unix)]
pub fn mount_type(p: &Path) -> Option<String> {
    let line = mount_line(p)?;
    #[cfg(target_os = "linux")]
    let ty = line.split(" - ").nth(1)?.split(' ').next()?;
    #[cfg(target_os = "macos")]
    let ty = line.rsplit_once(" (")?.1.split([',', ')']).next()?;
    Some(ty.to_string())
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Whether a WinFsp volume is mounted at `p`: its directory exists only
/// while the volume does.
#[cfg(windows)]
fn is_mounted(p: &Path) -> bool {
    p.is_dir()
}

/// Where the OS's FUSE lives, and what to do when it is missing.
#[cfg(target_os = "linux")]
const FUSE: (&str, &str) = (
    "/dev/fuse",
    "/dev/fuse is missing: these tests mount a real FUSE filesystem (run as root with the fuse module loaded)",
);
#[cfg(target_os = "macos")]
const FUSE: (&str, &str) = (
    "/Library/Filesystems/macfuse.fs",
    "macFUSE is missing: these tests mount a real filesystem (brew install --cask macfuse, then allow its system extension)",
);

/// Forces an unmount of a mount whose daemon is gone.
#[cfg(target_os = "linux")]
const FORCE_UMOUNT: &str = "-l";
#[cfg(target_os = "macos")]
const FORCE_UMOUNT: &str = "-f";

#[cfg(unix)]
fn is_mounted(p: &Path) -> bool {
    mount_type(p).is_some()
}

/// Runs the durafs binary with `args`.
pub fn durafs<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(durafs_bin()).args(args).output().unwrap()
}

/// The stdout of a command that must have succeeded.
pub fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// `durafs status --json MOUNTPOINT`.
#[cfg(unix)]
pub fn status_json(mnt: &Path) -> serde_json::Value {
    let out = ok_stdout(&durafs(&[
        "status".as_ref(),
        "--json".as_ref(),
        mnt.as_os_str(),
    ]));
    serde_json::from_str(&out).unwrap()
}

/// A policy file holding `text`, removed when dropped.
pub fn policy_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile_in(test_root())
        .unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

impl Mount {
    /// A mount with default options.
    pub fn new() -> Self {
        Self::with_options(&[])
    }

    /// A mount with `-o` options.
    pub fn with_options(opts: &[&str]) -> Self {
        let args: Vec<String> = opts
            .iter()
            .flat_map(|o| ["-o".into(), o.to_string()])
            .collect();
        Self::with_args(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// A mount with extra `durafs mount` arguments (`--policy FILE`, `-o X`).
    pub fn with_args(args: &[&str]) -> Self {
        Self::under(&[], args)
    }

    /// A mount whose daemon runs under the command `wrapper` (which must
    /// exec it, as `prlimit --nofile=N:N` does, so the pid stays the daemon's).
    pub fn under(wrapper: &[&str], args: &[&str]) -> Self {
        #[cfg(unix)]
        assert!(Path::new(FUSE.0).exists(), "{}", FUSE.1);
        let dir = tempfile::Builder::new()
            .prefix("durafs-test")
            .tempdir_in(test_root())
            .unwrap();
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&backing).unwrap();
        #[cfg(unix)]
        std::fs::create_dir(&mnt).unwrap();
        let mut m = Self::start(dir, backing, mnt, wrapper, args);
        m.wait_ready();
        m
    }

    fn start(
        dir: tempfile::TempDir,
        backing: PathBuf,
        mnt: PathBuf,
        wrapper: &[&str],
        args: &[&str],
    ) -> Self {
        let mut cmd = match wrapper {
            [] => Command::new(durafs_bin()),
            [w, rest @ ..] => {
                let mut c = Command::new(w);
                c.args(rest).arg(durafs_bin());
                c
            }
        };
        // On Windows the volume always serves in the foreground, and its
        // stdin is how the helper stops it.
        #[cfg(unix)]
        cmd.args(["mount", "--foreground", "--ready-stdout"])
            .stdin(Stdio::null());
        #[cfg(windows)]
        cmd.args(["mount", "--ready-stdout"]).stdin(Stdio::piped());
        cmd.args(args);
        cmd.arg(&backing).arg(&mnt);
        cmd.stdout(Stdio::piped());
        // Windows: the daemon logs to stderr for its whole life and nobody
        // reads a pipe after the start (a full pipe would stall it); its
        // start-up error comes on stdout.
        #[cfg(unix)]
        cmd.stderr(Stdio::piped());
        #[cfg(windows)]
        cmd.stderr(Stdio::inherit());
        let child = cmd.spawn().expect("start durafs");
        Mount {
            _dir: dir,
            backing,
            mnt,
            child: Some(child),
        }
    }

    fn wait_ready(&mut self) {
        let child = self.child.as_mut().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("durafs did not mount: {line}\n{err}");
        }
        assert!(
            is_mounted(&self.mnt),
            "daemon said ready but {} is not mounted",
            self.mnt.display()
        );
    }

    /// A path inside the mount.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The same path inside the backing directory.
    pub fn b(&self, rel: &str) -> PathBuf {
        self.backing.join(rel)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits up to `timeout` for the daemon to exit; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits up to 10 s for the daemon to exit, then kills it.
    fn wait_or_kill(&mut self) {
        if self.wait_exit(Duration::from_secs(10)).is_none()
            && let Some(mut c) = self.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the mount point is still mounted.
    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mnt)
    }
}

#[cfg(windows)]
impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            drop(c.stdin.take());
        }
        self.wait_or_kill();
    }
}

#[cfg(unix)]
impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
        }
        self.wait_or_kill();
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount")
                .arg(FORCE_UMOUNT)
                .arg(&self.mnt)
                .status();
        }
    }
}

/// Where test directories live: /var/tmp, on the root disk filesystem (not
/// tmpfs, so the backing store is a real block-device filesystem) and
/// reachable by the unprivileged users some tests run as, wherever the
/// checkout is. On Windows, the user's temp directory.
pub fn test_root() -> PathBuf {
    #[cfg(unix)]
    let p = PathBuf::from("/var/tmp/durafs-tests");
    #[cfg(windows)]
    let p = std::env::temp_dir().join("durafs-tests");
    std::fs::create_dir_all(&p).unwrap();
    open_to_all(&p);
    p
}

#[cfg(unix)]
fn open_to_all(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(windows)]
fn open_to_all(_: &Path) {}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(test_root())
        .unwrap();
    open_to_all(d.path());
    d
}

/// A plain (not mounted) temp directory on the same filesystem, for
/// comparing results with the backing filesystem's own behaviour.
pub fn native_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("durafs-native")
        .tempdir_in(test_root())
        .unwrap()
}
