//! Operating durafs: status and metrics counters move with a workload
//! (over the control socket and the loopback HTTP endpoint); mount(8) with
//! `-t fuse.durafs` and an fstab line mounts through the helper name and
//! umount(8) unmounts; mount.fuse3's own invocation works; systemd hears
//! READY=1 and STOPPING=1; a backgrounded daemon logs to syslog, as JSON
//! when asked; `--version` reports what the kernel negotiated. All but the
//! first two are about Linux's mount helpers, systemd, syslog and kernel
//! features, and are built there only.
#![cfg(any(target_os = "linux", target_os = "macos"))]
// The Linux-only tests use most of the imports.
#![cfg_attr(not(target_os = "linux"), allow(unused_imports))]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Mount, durafs, durafs_bin, mount_type, ok_stdout, policy_file, status_json, test_root,
};
use serde_json::Value;

/// The value of one sample (`name{labels}`) of a Prometheus exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

fn http_get(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[test]
fn status_and_metrics_counters_move_as_a_workload_runs() {
    let policy = policy_file(
        "version = 1\n[[rule]]\nname = \"journal\"\nmatch = \"**/*.jnl\"\nsync = \"always\"\n",
    );
    let p = policy.path().to_str().unwrap();
    let m = Mount::with_args(&["--policy", p, "-o", "metrics=127.0.0.1:0"]);
    let url = status_json(&m.mnt)["metrics"]
        .as_str()
        .expect("status names the metrics endpoint")
        .to_string();
    let (_, before) = http_get(&url);

    let mut f = std::fs::File::create(m.m("a.jnl")).unwrap();
    for i in 0..100 {
        f.write_all(format!("record {i}\n").as_bytes()).unwrap();
    }
    drop(f);

    // Over the control socket, as Prometheus text...
    let text = ok_stdout(&durafs(&["metrics".as_ref(), m.mnt.as_os_str()]));
    let syncs = sample(&text, "durafs_syncs_total{rule=\"journal\"}");
    assert!(syncs >= 100.0, "100 writes under always: {syncs} syncs");
    assert_eq!(
        sample(&text, "durafs_writes_total{rule=\"journal\"}"),
        100.0
    );
    let batches = sample(&text, "durafs_group_commit_batch_count{rule=\"journal\"}");
    assert!(batches >= 100.0, "{batches} group commits recorded");
    assert_eq!(
        sample(
            &text,
            "durafs_sync_duration_seconds_bucket{rule=\"journal\",le=\"+Inf\"}"
        ),
        syncs
    );
    assert!(sample(&text, "durafs_backing_syncs_total{call=\"fdatasync\"}") >= 100.0);
    assert!(text.contains("# TYPE durafs_sync_duration_seconds histogram"));

    // ...over HTTP, where the counter moved from before the workload...
    let (head, after) = http_get(&url);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        !before.contains("durafs_syncs_total{rule=\"journal\"}"),
        "no journal file was open before the workload"
    );
    assert!(sample(&after, "durafs_syncs_total{rule=\"journal\"}") >= 100.0);
    let (head, _) = http_get(&url.replace("/metrics", "/other"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // ...and in `durafs status`.
    let v = status_json(&m.mnt);
    let r = &v["rules"]["journal"];
    assert_eq!(r["writes"], 100);
    assert!(r["durafs_syncs"].as_u64().unwrap() >= 100, "{r}");
    assert!(r["sync_latency_us"]["max"].as_u64().unwrap() > 0, "{r}");
    let text = ok_stdout(&durafs(&["status".as_ref(), m.mnt.as_os_str()]));
    assert!(text.contains("counters since mount"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("journal") && l.contains(" 100 ")),
        "{text}"
    );
}

#[test]
fn a_taken_metrics_port_refuses_the_mount_and_mounts_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir_in(test_root()).unwrap();
    let (b, mnt) = (dir.path().join("b"), dir.path().join("m"));
    std::fs::create_dir(&b).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let o = durafs(&[
        "mount".as_ref(),
        "-o".as_ref(),
        format!("metrics={addr}").as_ref(),
        b.as_os_str(),
        mnt.as_os_str(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("metrics") && err.contains("port"), "{err}");
    assert_eq!(mount_type(&mnt), None);
}

#[cfg(target_os = "linux")]
/// Puts `/usr/sbin/mount.fuse.durafs` -> the binary under test, as the
/// package does, for as long as it lives; whatever was there comes back.
struct Helper {
    path: PathBuf,
    saved: Option<PathBuf>,
}

#[cfg(target_os = "linux")]
impl Helper {
    fn install() -> Helper {
        let path = PathBuf::from("/usr/sbin/mount.fuse.durafs");
        let saved = path.symlink_metadata().is_ok().then(|| {
            let s = path.with_extension("durafs-test-saved");
            std::fs::rename(&path, &s).unwrap();
            s
        });
        std::os::unix::fs::symlink(durafs_bin(), &path).unwrap();
        Helper { path, saved }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Helper {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(s) = &self.saved {
            let _ = std::fs::rename(s, &self.path);
        }
    }
}

#[cfg(target_os = "linux")]
fn wait_unmounted(p: &Path) {
    let t = Instant::now();
    while mount_type(p).is_some() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(mount_type(p), None, "{} still mounted", p.display());
}

#[cfg(target_os = "linux")]
#[test]
fn mount_t_fuse_durafs_and_an_fstab_line_mount_and_umount_unmounts() {
    let _helper = Helper::install();
    let dir = tempfile::tempdir_in(test_root()).unwrap();
    let (b, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    std::fs::create_dir(&b).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let policy = policy_file("version = 1\n[defaults]\nsync = \"always\"\n");

    // An fstab line, with the options mount(8) and systemd add of their own.
    let fstab = dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# test\n{} {} fuse.durafs defaults,nofail,x-systemd.automount,policy={} 0 0\n",
            b.display(),
            mnt.display(),
            policy.path().display()
        ),
    )
    .unwrap();
    let o = Command::new("mount")
        .arg("--fstab")
        .arg(&fstab)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mount --fstab: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(mount_type(&mnt).as_deref(), Some("fuse.durafs"));
    let v = status_json(&mnt);
    assert_eq!(
        v["policy"]["file"].as_str().map(PathBuf::from),
        Some(std::fs::canonicalize(policy.path()).unwrap())
    );
    std::fs::write(mnt.join("f"), b"through fstab").unwrap();
    assert_eq!(std::fs::read(b.join("f")).unwrap(), b"through fstab");
    let pid = v["pid"].as_u64().unwrap();
    let o = Command::new("umount").arg(&mnt).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_unmounted(&mnt);
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon exits after umount(8)"
    );

    // mount -t, with -o.
    let o = Command::new("mount")
        .args(["-t", "fuse.durafs"])
        .arg(&b)
        .arg(&mnt)
        .arg("-o")
        .arg(format!("policy={},threads=2", policy.path().display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(status_json(&mnt)["threads"], 2);
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"through fstab");
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_unmounted(&mnt);

    // A bad option reaches the user through mount(8), and nothing is mounted.
    let o = Command::new("mount")
        .args(["-t", "fuse.durafs", "-o", "bogus"])
        .arg(&b)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bogus") && err.contains("unknown option"),
        "{err}"
    );
    assert_eq!(mount_type(&mnt), None);
}

#[cfg(target_os = "linux")]
#[test]
fn mount_fuse3_runs_durafs_with_its_own_calling_convention() {
    let dir = tempfile::tempdir_in(test_root()).unwrap();
    let (b, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    std::fs::create_dir(&b).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    // `TYPE#SOURCE`: mount.fuse3 runs `TYPE SOURCE MOUNTPOINT -o OPTIONS`.
    let o = Command::new("mount.fuse3")
        .arg(format!("{}#{}", durafs_bin(), b.display()))
        .arg(&mnt)
        .args(["-o", "entry-timeout=0,crash-sim"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mount_type(&mnt).as_deref(), Some("fuse.durafs"));
    assert_eq!(status_json(&mnt)["crash_sim"], true);
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_unmounted(&mnt);
}

#[cfg(target_os = "linux")]
fn recv_until(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while t.elapsed() < timeout {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.contains(want);
            got.push(msg);
            if done {
                return got;
            }
        }
    }
    panic!("no message with {want:?} within {timeout:?}; got {got:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn systemd_hears_ready_once_mounted_and_stopping_on_the_way_out() {
    let dir = tempfile::tempdir_in(test_root()).unwrap();
    let (b, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    std::fs::create_dir(&b).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut child = Command::new(durafs_bin())
        .args(["mount", "--foreground"])
        .arg(&b)
        .arg(&mnt)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = recv_until(&sock, "READY=1", Duration::from_secs(20));
    // Ready means mounted: the mount is there when the message arrives.
    assert_eq!(mount_type(&mnt).as_deref(), Some("fuse.durafs"));
    assert!(
        got.last()
            .unwrap()
            .contains(&format!("MAINPID={}", child.id())),
        "{got:?}"
    );
    // systemd stops a unit with SIGTERM.
    assert!(
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    recv_until(&sock, "STOPPING=1", Duration::from_secs(20));
    assert!(child.wait().unwrap().success());
    wait_unmounted(&mnt);
}

#[cfg(target_os = "linux")]
#[test]
fn a_background_daemon_logs_to_syslog_as_json_when_asked() {
    let dir = tempfile::tempdir_in(test_root()).unwrap();
    let (b, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    std::fs::create_dir(&b).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let log_path = dir.path().join("log");
    let log = UnixDatagram::bind(&log_path).unwrap();
    let o = Command::new(durafs_bin())
        .args(["mount", "-o", "log-format=json"])
        .arg(&b)
        .arg(&mnt)
        .env("DURAFS_SYSLOG_SOCKET", &log_path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Start-up lines went to the terminal (stderr), as JSON.
    let start = String::from_utf8_lossy(&o.stderr);
    let first: Value = serde_json::from_str(start.lines().next().unwrap()).unwrap();
    assert_eq!(first["level"], "INFO", "{start}");
    let pid = status_json(&mnt)["pid"].as_u64().unwrap();
    ok_stdout(&durafs(&["umount".as_ref(), mnt.as_os_str()]));
    let got = recv_until(&log, "unmounted", Duration::from_secs(20));
    let line = got.last().unwrap();
    // <daemon.info>durafs[PID]: {json}
    let prefix = format!("<30>durafs[{pid}]: ");
    let json = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{line:?} lacks {prefix:?}"));
    let v: Value = serde_json::from_str(json).unwrap();
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("unmounted"),
        "{v}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn version_reports_the_negotiated_protocol_and_live_features() {
    let out = ok_stdout(&durafs(&["--version"]));
    assert!(
        out.starts_with(&format!("durafs {}\n", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let proto = out
        .lines()
        .find_map(|l| l.strip_prefix("FUSE protocol"))
        .unwrap_or_else(|| panic!("{out}"))
        .trim();
    assert!(proto.starts_with("7."), "{out}");
    assert!(out.contains("kernel passthrough"), "{out}");
    assert!(out.contains("io_uring"), "{out}");
}
