//! The mount daemon's life: checks before mounting, the mount itself, serving
//! requests until unmounted or signalled, and `durafs umount`.
//!
//! `durafs mount` without `--foreground` re-executes itself in the
//! foreground with `--ready-stdout`: the child mounts, prints `ready` (or
//! `error: ...`) on its stdout, which the parent reads, and then detaches
//! from the terminal. So `durafs mount` returns exactly when the mount is
//! usable, with the child's error if it is not.

#[cfg(target_os = "linux")]
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{Config, MountOption, Session, SessionACL};
use tracing::{error, info, warn};

use crate::control;
use crate::engine::{CrashMode, Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::frontend::{FrontendConfig, FuseFrontend, KernelInfo};
use crate::fs::{FsOptions, PassthroughFs};
use crate::options::MountOptions;
use crate::platform;
use crate::policy::Policy;

/// The filesystem type shown in /proc/mounts (as `fuse.durafs`).
pub const SUBTYPE: &str = "durafs";

/// One line of /proc/self/mountinfo, the fields durafs needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// where it is mounted
    pub mountpoint: PathBuf,
    /// filesystem type, e.g. `fuse.durafs`
    pub fstype: String,
    /// the mount source, e.g. the backing directory
    pub source: String,
    /// the uid that mounted it (FUSE's `user_id=` option), if shown
    pub owner: Option<u32>,
}

/// Undoes the octal escapes (`\040` for a space) of /proc mount tables.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Parses the text of /proc/self/mountinfo.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mountpoint = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let source = String::from_utf8_lossy(&unescape(post.next()?)).into_owned();
            let owner = post.next().and_then(|o| {
                o.split(',')
                    .find_map(|kv| kv.strip_prefix("user_id=")?.parse().ok())
            });
            Some(MountEntry {
                owner,
                mountpoint: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(mountpoint))),
                fstype,
                source,
            })
        })
        .collect()
}

/// The mounts of this process's mount namespace.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading /proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&text))
}

/// An absolute form of `p` without touching the filesystem beyond the cwd
/// (a dead FUSE mount cannot be canonicalized: stat says ENOTCONN).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Checks BACKING and MOUNTPOINT before anything is touched, and returns
/// both canonicalized.
pub fn preflight(
    backing: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<(PathBuf, PathBuf)> {
    let backing_c = match std::fs::canonicalize(backing) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::BackingMissing(absolute(backing)));
        }
        Err(e) => {
            return Err(Error::io(
                format!("resolving backing directory {}", backing.display()),
                e,
            ));
        }
    };
    if !backing_c.is_dir() {
        return Err(Error::BackingNotDir(backing_c));
    }
    let mp_abs = absolute(mountpoint);
    if let Some(m) = mounts()?.iter().find(|m| m.mountpoint == mp_abs) {
        return Err(Error::AlreadyMounted(
            mp_abs,
            format!("{} from {}", m.fstype, m.source),
        ));
    }
    let mp_c = match std::fs::canonicalize(mountpoint) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MountpointMissing(mp_abs));
        }
        Err(e) => {
            return Err(Error::io(
                format!("resolving mount point {}", mountpoint.display()),
                e,
            ));
        }
    };
    if !mp_c.is_dir() {
        return Err(Error::MountpointNotDir(mp_c));
    }
    if let Some(m) = mounts()?.iter().find(|m| m.mountpoint == mp_c) {
        return Err(Error::AlreadyMounted(
            mp_c,
            format!("{} from {}", m.fstype, m.source),
        ));
    }
    if mp_c != backing_c && mp_c.starts_with(&backing_c) {
        return Err(Error::Recursive {
            backing: backing_c,
            mountpoint: mp_c,
        });
    }
    // Mounting over BACKING itself is the "make this directory durable in
    // place" use; its entries are what the mount shows, so they are not hidden.
    if mp_c != backing_c && !opts.nonempty {
        let mut entries = std::fs::read_dir(&mp_c)
            .map_err(|e| Error::io(format!("reading mount point {}", mp_c.display()), e))?;
        if entries.next().is_some() {
            return Err(Error::MountpointNotEmpty(mp_c));
        }
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::NoFuseDevice);
    }
    if platform::geteuid() != 0 && which("fusermount3").is_none() {
        return Err(Error::NoFusermount);
    }
    Ok((backing_c, mp_c))
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// How the foreground daemon reports readiness.
pub enum Ready {
    /// nothing to tell (plain `--foreground`)
    Quiet,
    /// print `ready` / `error: ...` on stdout, then detach (background child)
    Stdout,
}

impl Ready {
    fn ok(&self, what: &str) {
        // A service manager waiting for us (systemd Type=notify).
        sd_notify(&format!(
            "READY=1\nSTATUS={what}\nMAINPID={}",
            std::process::id()
        ));
        if let Ready::Stdout = self {
            // Said while stderr still reaches the terminal that ran `durafs mount`.
            if let Err(e) = crate::log::to_syslog() {
                warn!("{e}");
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ready");
            let _ = out.flush();
            drop(out);
            if let Err(e) = platform::detach_from_terminal() {
                warn!("could not detach from the terminal: {e}");
            }
        }
    }

    /// Reports a start-up failure to the waiting parent.
    pub fn fail(&self, e: &Error) {
        if let Ready::Stdout = self {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "error: {e}");
            let _ = out.flush();
        }
    }
}

/// Tells the service manager (systemd, via `$NOTIFY_SOCKET`) about the
/// daemon's state: `READY=1` once mounted, `STOPPING=1` on the way out.
/// Nothing happens when no manager is listening.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket name (Linux only).
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?;
            }
            #[cfg(not(target_os = "linux"))]
            let _ = name;
        } else {
            sock.send_to(state.as_bytes(), Path::new(&path))?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        warn!("could not notify the service manager at {path:?}: {e}");
    }
}

/// Mounts with `mount(2)` directly (root): the type is `fuse.durafs` and the
/// source the backing directory, as mount(8) and findmnt show it.
#[cfg(target_os = "linux")]
fn mount_as_root(
    backing: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<std::os::fd::OwnedFd> {
    let dev = platform::open_dev_fuse().map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NoFuseDevice,
        _ => Error::io("opening /dev/fuse", e),
    })?;
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.as_raw_fd(),
        platform::geteuid(),
        platform::getegid()
    );
    if opts.allow_other || opts.allow_root {
        data.push_str(",allow_other");
    }
    if opts.default_permissions {
        data.push_str(",default_permissions");
    }
    let mut flags = 0;
    use platform::mount_flags as mf;
    if !opts.suid {
        flags |= mf::NOSUID;
    }
    if !opts.dev {
        flags |= mf::NODEV;
    }
    if opts.read_only {
        flags |= mf::RDONLY;
    }
    if opts.noexec {
        flags |= mf::NOEXEC;
    }
    if opts.noatime {
        flags |= mf::NOATIME;
    }
    let source = opts
        .fsname
        .clone()
        .unwrap_or_else(|| backing.display().to_string());
    let c = |s: &[u8]| {
        CString::new(s).map_err(|_| {
            Error::BadOption(
                String::from_utf8_lossy(s).into(),
                "contains a NUL byte".into(),
            )
        })
    };
    platform::mount(
        &c(source.as_bytes())?,
        &c(mountpoint.as_os_str().as_bytes())?,
        &c(format!("fuse.{SUBTYPE}").as_bytes())?,
        flags,
        &c(data.as_bytes())?,
    )
    .map_err(|e| Error::io(format!("mount(2) of {}", mountpoint.display()), e))?;
    Ok(dev)
}

/// Options for fusermount3, for an unprivileged mount.
fn fusermount_options(backing: &Path, opts: &MountOptions) -> Vec<MountOption> {
    let mut v = vec![
        MountOption::FSName(
            opts.fsname
                .clone()
                .unwrap_or_else(|| backing.display().to_string()),
        ),
        MountOption::Subtype(SUBTYPE.into()),
    ];
    if opts.default_permissions {
        v.push(MountOption::DefaultPermissions);
    }
    if opts.read_only {
        v.push(MountOption::RO);
    }
    if opts.noexec {
        v.push(MountOption::NoExec);
    }
    if opts.noatime {
        v.push(MountOption::NoAtime);
    }
    if opts.nonempty {
        v.push(MountOption::CUSTOM("nonempty".into()));
    }
    v
}

/// The policy a mount starts with.
pub struct LoadedPolicy {
    /// the validated policy
    pub policy: Policy,
    /// the file it came from (None: the built-in default), re-read on reload
    pub path: Option<PathBuf>,
}

impl LoadedPolicy {
    /// Loads `--policy FILE` (canonicalized, so a reload finds it from any
    /// working directory), or the built-in default. Warnings go to stderr
    /// if `warn`.
    pub fn load(path: Option<&Path>, warn: bool) -> Result<LoadedPolicy> {
        let Some(path) = path else {
            return Ok(LoadedPolicy {
                policy: Policy::builtin(),
                path: None,
            });
        };
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| absolute(path));
        let (policy, warnings) = Policy::load(&path).map_err(Error::Policy)?;
        if warn {
            for w in warnings {
                eprintln!("{w}");
            }
        }
        Ok(LoadedPolicy {
            policy,
            path: Some(path),
        })
    }
}

/// What the control socket reports on, and acts on.
struct MountState {
    fs: Arc<PassthroughFs>,
    kernel: Arc<KernelInfo>,
    backing: PathBuf,
    mountpoint: PathBuf,
    started: SystemTime,
    threads: usize,
    socket: PathBuf,
    /// where the HTTP metrics endpoint listens, if it does
    metrics: std::sync::Mutex<Option<std::net::SocketAddr>>,
    /// tells the kernel to drop what it cached (after a simulated crash)
    notifier: fuser::Notifier,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn access(flags: i32) -> &'static str {
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "r",
        libc::O_WRONLY => "w",
        _ => "rw",
    }
}

impl MountState {
    /// The FUSE protocol the kernel negotiated, e.g. "7.45".
    fn fuse_protocol(&self) -> Option<String> {
        let proto = *self.kernel.proto.lock().expect("kernel info poisoned");
        proto.map(|(a, b)| format!("{a}.{b}"))
    }

    fn passthrough_live(&self) -> bool {
        self.kernel
            .passthrough
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn metrics(&self) -> String {
        let (_, reloads, _) = self.fs.engine().policy().reload_state();
        let facts = crate::metrics::MountFacts {
            mountpoint: self.mountpoint.display().to_string(),
            backing: self.backing.display().to_string(),
            start_time: unix_secs(self.started),
            open_files: self.fs.open_files().len(),
            inodes: self.fs.inode_count(),
            threads: self.threads,
            fuse_protocol: self.fuse_protocol(),
            passthrough: self.passthrough_live(),
            crash_sim: self.fs.engine().crash_sim().is_some(),
            reloads,
        };
        crate::metrics::render(&facts, self.fs.engine())
    }

    fn status(&self) -> serde_json::Value {
        let active = self.fs.engine().policy();
        let policy = active.get();
        let (loaded, reloads, last_error) = active.reload_state();
        let open: Vec<serde_json::Value> = self
            .fs
            .open_files()
            .into_iter()
            .map(|(path, flags, fp)| {
                serde_json::json!({
                    "path": String::from_utf8_lossy(&path),
                    "access": access(flags),
                    "policy": fp.to_json(),
                })
            })
            .collect();
        serde_json::json!({
            "ok": true,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "mountpoint": self.mountpoint.display().to_string(),
            "backing": self.backing.display().to_string(),
            "control_socket": self.socket.display().to_string(),
            "started": unix_secs(self.started),
            "uptime_secs": self.started.elapsed().map_or(0, |d| d.as_secs()),
            "threads": self.threads,
            "fuse_protocol": self.fuse_protocol(),
            "kernel_passthrough": self.passthrough_live(),
            "io_uring": platform::io_uring_status(),
            "metrics": self.metrics.lock().expect("metrics poisoned").map(|a| format!("http://{a}/metrics")),
            "inodes": self.fs.inode_count(),
            "inode_fds": self.fs.inode_fds(),
            "crash_sim": self.fs.engine().crash_sim().is_some(),
            "syncs": {
                "fsync": platform::sync_counts().fsync,
                "fdatasync": platform::sync_counts().fdatasync,
            },
            "rules": self.fs.engine().stats().to_json(),
            "faults": self.fs.engine().faults().to_json(),
            "policy": {
                "file": active.path().map(|p| p.display().to_string()),
                "origin": policy.origin(),
                "loaded": unix_secs(loaded),
                "reloads": reloads,
                "last_reload_error": last_error,
                "toml": policy.to_toml(),
            },
            "open_files": open,
        })
    }
}

impl MountState {
    /// `crash [torn=SEED] [keep]`: the simulated power cut; without `keep`
    /// the mount then goes away (lazily, so the reply gets out first).
    fn crash(&self, args: &str) -> serde_json::Value {
        let Some(sim) = self.fs.engine().crash_sim() else {
            return serde_json::json!({
                "ok": false,
                "error": "this mount does not simulate crashes: mount it with `durafs mount --crash-sim`",
            });
        };
        let mut mode = CrashMode::LoseAll;
        let mut keep = false;
        for w in args.split_whitespace() {
            match w.split_once('=') {
                Some(("torn", seed)) => match seed.parse() {
                    Ok(s) => mode = CrashMode::Torn(s),
                    Err(_) => {
                        return serde_json::json!({"ok": false, "error": format!("bad seed `{seed}`")});
                    }
                },
                None if w == "keep" => keep = true,
                _ => {
                    return serde_json::json!({"ok": false, "error": format!("unknown crash argument `{w}`")});
                }
            }
        }
        let out = sim.crash(mode, !keep);
        self.forget_stale(&out.stale);
        if !keep {
            let mp = self.mountpoint.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if let Err(e) = unmount_path(&mp, true) {
                    error!("unmount after the simulated crash failed: {e}");
                }
            });
        }
        serde_json::json!({ "ok": true, "outcome": out, "unmounted": !keep })
    }

    /// Tells the kernel to drop its cached attributes, data and names of
    /// what a crash changed (those it holds: the rest it will look up).
    fn forget_stale(&self, stale: &crate::engine::Stale) {
        let mut sent = 0usize;
        for &key in &stale.inodes {
            if let Some(node) = self.fs.node_of(key) {
                // Offset 0, length 0: attributes and every cached page.
                sent += usize::from(
                    self.notifier
                        .inval_inode(fuser::INodeNo(node), 0, 0)
                        .is_ok(),
                );
            }
        }
        for (dir, name) in &stale.entries {
            if let Some(node) = self.fs.node_of(*dir) {
                let name = std::ffi::OsStr::from_bytes(name.to_bytes());
                sent += usize::from(
                    self.notifier
                        .inval_entry(fuser::INodeNo(node), name)
                        .is_ok(),
                );
            }
        }
        tracing::debug!("after the crash: {sent} kernel cache entries dropped");
    }

    fn fault(&self, args: &str) -> serde_json::Value {
        let faults = self.fs.engine().faults();
        let (verb, rest) = args.trim().split_once(' ').unwrap_or((args.trim(), ""));
        match verb {
            "add" => match faults.add(rest) {
                Ok(id) => {
                    // Opens already handed to kernel passthrough never show
                    // the daemon a read or write: say which ones the fault
                    // cannot reach (new opens of them are intercepted).
                    let fhs: Vec<u64> = self
                        .kernel
                        .bypassing
                        .lock()
                        .expect("kernel info poisoned")
                        .iter()
                        .copied()
                        .collect();
                    let mut unreached: Vec<String> = fhs
                        .into_iter()
                        .filter_map(|fh| self.fs.handle_path(fh))
                        .filter(|p| faults.hits_data(id, p))
                        .map(|p| String::from_utf8_lossy(&p).into_owned())
                        .collect();
                    unreached.sort();
                    unreached.dedup();
                    serde_json::json!({"ok": true, "id": id, "unreached": unreached})
                }
                Err(e) => serde_json::json!({"ok": false, "error": e}),
            },
            "list" => serde_json::json!({"ok": true, "faults": faults.to_json()}),
            "clear" => {
                let id = match rest.trim() {
                    "" => None,
                    s => match s.parse() {
                        Ok(n) => Some(n),
                        Err(_) => {
                            return serde_json::json!({"ok": false, "error": format!("bad fault id `{s}`")});
                        }
                    },
                };
                serde_json::json!({"ok": true, "cleared": faults.clear(id)})
            }
            _ => {
                serde_json::json!({"ok": false, "error": format!("unknown fault command `{verb}` (add, list, clear)")})
            }
        }
    }
}

impl control::Handler for MountState {
    fn handle(&self, command: &str) -> serde_json::Value {
        let (verb, args) = command.split_once(' ').unwrap_or((command, ""));
        match verb {
            "crash" => return self.crash(args),
            "crash-report" => {
                return match self.fs.engine().crash_sim() {
                    Some(sim) => serde_json::json!({"ok": true, "report": sim.report()}),
                    None => serde_json::json!({
                        "ok": false,
                        "error": "this mount does not simulate crashes: mount it with `durafs mount --crash-sim`",
                    }),
                };
            }
            "fault" => return self.fault(args),
            "metrics" => return serde_json::json!({"ok": true, "text": self.metrics()}),
            _ => {}
        }
        match command {
            "status" => self.status(),
            "reload" => match self.fs.engine().policy().reload() {
                Ok(r) => serde_json::json!({
                    "ok": true,
                    "rules": r.rules,
                    "warnings": r.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({ "ok": false, "error": e }),
            },
            other => serde_json::json!({
                "ok": false,
                "error": format!("unknown command `{other}` (this daemon knows: status, metrics, reload, crash, crash-report, fault)"),
            }),
        }
    }
}

/// Mounts BACKING at MOUNTPOINT and serves requests until the filesystem is
/// unmounted or SIGINT/SIGTERM arrives (which unmounts it after in-flight
/// requests finish).
pub fn serve(
    backing: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    policy: LoadedPolicy,
    ready: &Ready,
) -> Result<()> {
    let (backing, mountpoint) = preflight(backing, mountpoint, opts)?;
    // Every signal the daemon handles is taken by one thread; workers never see them.
    platform::block_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        .map_err(|e| Error::io("blocking signals", e))?;
    match platform::raise_nofile_limit() {
        Ok(n) => info!("open file limit {n}"),
        Err(e) => warn!("could not raise the open file limit: {e}"),
    }
    // Modes from the kernel already have the caller's umask applied.
    platform::umask(0);

    // After the limit is raised: the inode fd budget is read from it.
    let fs = PassthroughFs::new(
        &backing,
        FsOptions {
            default_permissions: opts.default_permissions,
            max_inode_fds: opts.max_inode_fds,
            mountpoint: Some(mountpoint.clone()),
        },
        Engine::with_options(
            policy.policy,
            policy.path,
            EngineOptions {
                crash_sim: opts.crash_sim,
            },
        ),
    )
    .map_err(|e| {
        Error::io(
            format!("opening backing directory {}", backing.display()),
            e,
        )
    })?;
    for spec in &opts.faults {
        fs.engine()
            .faults()
            .add(spec)
            .map_err(|e| Error::Daemon(format!("bad fault `{spec}`: {e}")))?;
    }
    if opts.crash_sim {
        info!(
            "crash simulation on: what is not durable is tracked; `durafs crash {}` simulates a power cut",
            mountpoint.display()
        );
    }
    let metrics_listener = match opts.metrics {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| {
            Error::io(
                format!(
                    "listening for metrics on {addr} (is the port taken? pick another with -o metrics=ADDR)"
                ),
                e,
            )
        })?),
        None => None,
    };
    let fs = Arc::new(fs);
    let kernel = Arc::new(KernelInfo::default());
    let frontend = FuseFrontend::new(
        fs.clone(),
        FrontendConfig {
            attr_timeout: opts.attr_timeout,
            entry_timeout: opts.entry_timeout,
            passthrough: opts.passthrough,
            ..FrontendConfig::default()
        },
        kernel.clone(),
    );

    let mut config = Config::default();
    config.n_threads = Some(opts.threads);
    config.clone_fd = true;
    config.acl = if opts.allow_other {
        SessionACL::All
    } else if opts.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    // Linux, as root: mount(2) directly. Otherwise the mount helper of
    // the FUSE implementation: fusermount3 on Linux, macFUSE's on macOS.
    #[cfg(target_os = "linux")]
    let root_dev = if platform::geteuid() == 0 {
        Some(mount_as_root(&backing, &mountpoint, opts)?)
    } else {
        None
    };
    #[cfg(not(target_os = "linux"))]
    let root_dev: Option<std::os::fd::OwnedFd> = None;
    let session = if let Some(dev) = root_dev {
        match Session::from_fd(frontend, dev, config.acl, config.clone()) {
            Ok(s) => s,
            Err(e) => {
                let _ = platform::umount(&mountpoint, true);
                return Err(Error::io("FUSE handshake with the kernel", e));
            }
        }
    } else {
        config.mount_options = fusermount_options(&backing, opts);
        Session::new(frontend, &mountpoint, &config).map_err(|e| {
            Error::io(
                if cfg!(target_os = "linux") {
                    "mounting with fusermount3"
                } else {
                    "mounting with macFUSE"
                },
                e,
            )
        })?
    };
    let state = Arc::new(MountState {
        fs: fs.clone(),
        kernel: kernel.clone(),
        backing: backing.clone(),
        mountpoint: mountpoint.clone(),
        started: SystemTime::now(),
        threads: opts.threads,
        socket: control::socket_path(&mountpoint, platform::geteuid()),
        metrics: std::sync::Mutex::new(None),
        notifier: session.notifier(),
    });
    if let Some(listener) = metrics_listener {
        let st = state.clone();
        match crate::metrics::serve_http(listener, Arc::new(move || st.metrics())) {
            Ok(local) => *state.metrics.lock().expect("metrics poisoned") = Some(local),
            Err(e) => warn!("no metrics endpoint: {e}"),
        }
    }
    let control = match control::Server::start(&mountpoint, state.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(
                "no control socket ({e}): `durafs status` and `durafs reload` will not reach this mount; SIGHUP still reloads"
            );
            None
        }
    };
    info!("durable IO: {}", platform::io_uring_status());
    info!(
        "mounted {} at {} ({} threads, policy {})",
        backing.display(),
        mountpoint.display(),
        opts.threads,
        fs.engine().policy().get().origin()
    );
    ready.ok(&format!(
        "serving {} at {}",
        backing.display(),
        mountpoint.display()
    ));

    let mp = mountpoint.clone();
    let sig_fs = fs.clone();
    std::thread::Builder::new()
        .name("durafs-signals".into())
        .spawn(move || signal_loop(&mp, &sig_fs))
        .map_err(|e| Error::io("starting the signal thread", e))?;

    let bg = session
        .spawn()
        .map_err(|e| Error::io("starting FUSE workers", e))?;
    let res = bg.join();
    sd_notify("STOPPING=1");
    // Files still waiting for the interval flusher are synced now.
    fs.engine().shutdown();
    if mounts()
        .map(|m| m.iter().any(|e| e.mountpoint == mountpoint))
        .unwrap_or(false)
    {
        let _ = unmount_path(&mountpoint, true);
    }
    drop(control);
    info!(
        "unmounted {} ({} inodes still held)",
        mountpoint.display(),
        fs.inode_count()
    );
    res.map_err(|e| Error::io("serving FUSE requests", e))
}

fn signal_loop(mountpoint: &Path, fs: &PassthroughFs) {
    loop {
        match platform::wait_signal(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]) {
            Ok(libc::SIGHUP) => {
                // The outcome is logged by the reload itself.
                let _ = fs.engine().policy().reload();
            }
            Ok(sig) => {
                info!("signal {sig}: unmounting {}", mountpoint.display());
                // A busy mount is detached: open files keep working until
                // closed, and the daemon exits when the last one is.
                if let Err(e) = unmount_path(mountpoint, false) {
                    warn!(
                        "unmount of {} failed ({e}); detaching it",
                        mountpoint.display()
                    );
                    if let Err(e) = unmount_path(mountpoint, true) {
                        error!("lazy unmount failed too: {e}");
                    }
                }
                return;
            }
            Err(e) => {
                error!("waiting for signals: {e}");
                return;
            }
        }
    }
}

/// umount2 as root, fusermount3 -u otherwise.
fn unmount_path(mountpoint: &Path, lazy: bool) -> std::io::Result<()> {
    if platform::geteuid() == 0 {
        return platform::umount(mountpoint, lazy);
    }
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(mountpoint).output()?;
    if out.status.success() {
        Ok(())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr);
        if msg.contains("busy") {
            Err(std::io::Error::from_raw_os_error(libc::EBUSY))
        } else {
            Err(std::io::Error::other(msg.trim().to_string()))
        }
    }
}

/// `durafs umount`: unmounts a durafs mount (also one whose daemon died).
pub fn umount(mountpoint: &Path, lazy: bool) -> Result<()> {
    let mp = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| absolute(mountpoint));
    let Some(entry) = mounts()?
        .into_iter()
        .find(|m| m.mountpoint == mp && m.fstype == format!("fuse.{SUBTYPE}"))
    else {
        return Err(Error::NotMounted(mp));
    };
    unmount_path(&mp, lazy).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => Error::Busy(mp.clone()),
        _ => Error::io(format!("unmounting {}", mp.display()), e),
    })?;
    // A daemon that died left its control socket; a live one removes its
    // own as it exits.
    let sock = control::socket_path(&mp, entry.owner.unwrap_or_else(platform::geteuid));
    if std::os::unix::net::UnixStream::connect(&sock).is_err() {
        let _ = std::fs::remove_file(sock);
    }
    Ok(())
}

/// Starts the daemon in the background and returns once it has mounted (or
/// with its error). `args` are the mount arguments to pass on.
pub fn spawn_background(args: &[std::ffi::OsString]) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the durafs executable", e))?;
    let mut child = Command::new(exe)
        // Not the mount(8) helper name it may have been started by.
        .arg0("durafs")
        .arg("mount")
        .arg("--foreground")
        .arg("--ready-stdout")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("starting the durafs daemon", e))?;
    let out = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| Error::io("waiting for the daemon", e))?;
    match line.trim_end() {
        "ready" => Ok(()),
        l => {
            let status = child.wait().ok();
            let msg = l.strip_prefix("error: ").unwrap_or(l);
            Err(Error::Daemon(if msg.is_empty() {
                format!("it exited ({status:?}) before mounting")
            } else {
                msg.to_string()
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines_with_escapes() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - fuse.durafs /srv/data\\040x rw,user_id=0\n\
                    22 1 8:1 / / rw - ext4 /dev/vda rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt/a b"));
        assert_eq!(m[0].fstype, "fuse.durafs");
        assert_eq!(m[0].source, "/srv/data x");
        assert_eq!(m[1].mountpoint, PathBuf::from("/"));
    }

    #[test]
    fn preflight_names_each_problem() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().join("b");
        let m = t.path().join("m");
        let o = MountOptions::default();
        assert!(matches!(
            preflight(&b, &m, &o),
            Err(Error::BackingMissing(_))
        ));
        std::fs::write(&b, b"").unwrap();
        assert!(matches!(
            preflight(&b, &m, &o),
            Err(Error::BackingNotDir(_))
        ));
        std::fs::remove_file(&b).unwrap();
        std::fs::create_dir(&b).unwrap();
        assert!(matches!(
            preflight(&b, &m, &o),
            Err(Error::MountpointMissing(_))
        ));
        std::fs::write(&m, b"").unwrap();
        assert!(matches!(
            preflight(&b, &m, &o),
            Err(Error::MountpointNotDir(_))
        ));
        std::fs::remove_file(&m).unwrap();
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join("f"), b"").unwrap();
        assert!(matches!(
            preflight(&b, &m, &o),
            Err(Error::MountpointNotEmpty(_))
        ));
        let ne = MountOptions {
            nonempty: true,
            ..MountOptions::default()
        };
        match preflight(&b, &m, &ne) {
            Ok(_) => assert!(Path::new("/dev/fuse").exists()),
            Err(Error::NoFuseDevice) => assert!(!Path::new("/dev/fuse").exists()),
            Err(e) => panic!("unexpected: {e}"),
        }
        let inner = b.join("inner");
        std::fs::create_dir(&inner).unwrap();
        assert!(matches!(
            preflight(&b, &inner, &o),
            Err(Error::Recursive { .. })
        ));
    }
}
