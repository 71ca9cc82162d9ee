//! Fitting Linux operations: the mount(8) helper names, `--version`'s
//! report on the kernel, and the generated man pages and completions that
//! packages ship.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::control;
use crate::error::{Error, Result};
use crate::platform;

/// The policy format's man page, written by hand.
const POLICY_MAN: &str = include_str!("../packaging/man/durafs-policy.5");

/// Rewrites the ways other tools start durafs into `durafs mount ...`:
///
/// - as `mount.durafs` or `mount.fuse.durafs` (the program name), the mount(8)
///   helper convention: `SPEC DIR [-sfnv] [-o OPTIONS] [-t TYPE]`; `-f`
///   (fake) returns `None`: nothing to do;
/// - as `durafs SOURCE MOUNTPOINT -o OPTIONS`, what mount.fuse3 runs for
///   `mount -t fuse.durafs` (the first word is not a subcommand).
///
/// Anything else comes back unchanged.
pub fn mount_helper_args(
    argv: Vec<OsString>,
    subcommands: &[String],
) -> std::result::Result<Option<Vec<OsString>>, String> {
    let name = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("mount.") {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut it = argv.into_iter().skip(1);
        while let Some(a) = it.next() {
            let b = a.as_bytes();
            match b {
                b"-o" => options.push(it.next().ok_or("-o needs a value")?),
                b"-t" => {
                    let _ = it.next();
                }
                b"-N" => {
                    return Err(format!(
                        "{name}: -N (another mount namespace) is not supported; run it inside that namespace"
                    ));
                }
                b"-f" | b"--fake" => return Ok(None),
                b"-n" | b"-s" | b"-v" | b"--no-mtab" | b"--sloppy" | b"--verbose" => {}
                _ if b.starts_with(b"-o") => options.push(OsStr::from_bytes(&b[2..]).into()),
                _ if b.starts_with(b"-") => {
                    return Err(format!(
                        "{name}: unknown flag {}; usage: {name} BACKING MOUNTPOINT [-o OPTIONS]",
                        a.to_string_lossy()
                    ));
                }
                _ => positional.push(a),
            }
        }
        if positional.len() != 2 {
            return Err(format!(
                "usage: {name} BACKING MOUNTPOINT [-o OPTIONS] (got {} paths)",
                positional.len()
            ));
        }
        let mut out: Vec<OsString> = vec!["durafs".into(), "mount".into()];
        for o in options {
            out.push("-o".into());
            out.push(o);
        }
        out.extend(positional);
        return Ok(Some(out));
    }
    let first = argv.get(1).map(|a| a.to_string_lossy().into_owned());
    match first {
        Some(f) if argv.len() >= 3 && !f.starts_with('-') && !subcommands.contains(&f) => {
            let mut out = argv;
            out.insert(1, "mount".into());
            Ok(Some(out))
        }
        _ => Ok(Some(argv)),
    }
}

/// The `-o` values without the options that name files or the crash
/// simulator, which the background start passes on as flags.
pub fn without_file_options(options: &[String]) -> Vec<String> {
    options
        .iter()
        .map(|v| {
            v.split(',')
                .filter(|o| {
                    let key = o.split('=').next().unwrap_or("").trim();
                    !matches!(key, "policy" | "faults" | "crash-sim" | "crash_sim")
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// What a probe learned from a running mount.
struct Probe {
    protocol: String,
    passthrough: bool,
    source: String,
}

fn probe_status(mp: &Path, owner: u32) -> Option<serde_json::Value> {
    // The first request makes the kernel finish its handshake.
    let _ = std::fs::metadata(mp);
    control::request(mp, owner, "status")
        .ok()
        .filter(|v| v["ok"] == true)
}

fn from_status(v: &serde_json::Value, source: String) -> Probe {
    Probe {
        protocol: v["fuse_protocol"].as_str().unwrap_or("?").to_string(),
        passthrough: v["kernel_passthrough"] == true,
        source,
    }
}

/// Asks a running durafs mount of this user, or mounts an empty directory
/// for a moment, to learn what the kernel negotiates.
fn probe() -> std::result::Result<Probe, String> {
    let me = platform::geteuid();
    for (mp, owner) in crate::cli::targets(None).map_err(|e| e.to_string())? {
        if owner == me {
            if let Some(v) = probe_status(&mp, me) {
                return Ok(from_status(&v, format!("the mount at {}", mp.display())));
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("durafs-version-{}", std::process::id()));
    let (b, mp) = (dir.join("backing"), dir.join("mnt"));
    std::fs::create_dir_all(&b).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&mp).map_err(|e| e.to_string())?;
    let res = (|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = Command::new(exe)
            // Not the mount(8) helper name it may have been started by.
            .arg0("durafs")
            .arg("mount")
            .arg(&b)
            .arg(&mp)
            .stdin(Stdio::null())
            .env("RUST_LOG", "error")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let mpc = std::fs::canonicalize(&mp).map_err(|e| e.to_string())?;
        let v = probe_status(&mpc, me);
        let _ = crate::daemon::umount(&mpc, false);
        v.map(|v| from_status(&v, "a probe mount".into()))
            .ok_or_else(|| "the probe mount did not answer".to_string())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// `durafs --version`: the version, and what this kernel gives durafs.
pub fn version_report() -> String {
    let mut out = format!("durafs {}\n", env!("CARGO_PKG_VERSION"));
    if let Ok(r) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        let _ = writeln!(out, "kernel              Linux {}", r.trim());
    }
    match probe() {
        Ok(p) => {
            let _ = writeln!(
                out,
                "FUSE protocol       {} (negotiated with the kernel, seen by {})",
                p.protocol, p.source
            );
            let _ = writeln!(
                out,
                "kernel passthrough  {}",
                if p.passthrough {
                    "live: reads and writes of passthrough files skip the daemon"
                } else {
                    "not available from this kernel (needs 6.9 and CAP_SYS_ADMIN): every read and write goes through the daemon"
                }
            );
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "FUSE protocol       unknown: no mount to ask ({})",
                e.lines().next().unwrap_or("")
            );
        }
    }
    let _ = writeln!(out, "io_uring            {}", platform::io_uring_status());
    out
}

/// Writes the man pages and shell completions into `dir`; returns the
/// files written.
pub fn generate_assets(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |what: &str, e: std::io::Error| Error::io(what.to_string(), e);
    let man = dir.join("man");
    let comp = dir.join("completions");
    std::fs::create_dir_all(&man).map_err(|e| io("creating the man directory", e))?;
    std::fs::create_dir_all(&comp).map_err(|e| io("creating the completions directory", e))?;
    let mut written = Vec::new();
    let mut page = |c: clap::Command, name: String| -> Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c.name(name.clone()))
            .section("8")
            .manual("durafs manual")
            .render(&mut buf)
            .map_err(|e| io("rendering a man page", e))?;
        let path = man.join(format!("{name}.8"));
        std::fs::write(&path, buf).map_err(|e| io("writing a man page", e))?;
        written.push(path);
        Ok(())
    };
    let mut cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    cmd.build();
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        page(sub.clone(), format!("durafs-{}", sub.get_name()))?;
    }
    page(cmd.clone(), "durafs".into())?;
    let policy = man.join("durafs-policy.5");
    std::fs::write(&policy, POLICY_MAN).map_err(|e| io("writing durafs-policy.5", e))?;
    written.push(policy);
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let path = clap_complete::generate_to(shell, &mut cmd, "durafs", &comp)
            .map_err(|e| io("writing completions", e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn subs() -> Vec<String> {
        ["mount", "status", "help"].map(String::from).to_vec()
    }

    #[test]
    fn mount_helper_names_become_mount() {
        let got = mount_helper_args(
            args(&[
                "/sbin/mount.fuse.durafs",
                "/srv/b",
                "/srv/m",
                "-n",
                "-o",
                "rw,policy=/etc/durafs/strict.toml",
            ]),
            &subs(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            args(&[
                "durafs",
                "mount",
                "-o",
                "rw,policy=/etc/durafs/strict.toml",
                "/srv/b",
                "/srv/m"
            ])
        );
        assert_eq!(
            mount_helper_args(args(&["mount.durafs", "/a", "/b", "-f"]), &subs()).unwrap(),
            None
        );
        assert!(
            mount_helper_args(args(&["mount.durafs", "/a"]), &subs())
                .unwrap_err()
                .contains("usage")
        );
        assert!(
            mount_helper_args(args(&["mount.durafs", "/a", "/b", "-x"]), &subs())
                .unwrap_err()
                .contains("unknown flag -x")
        );
    }

    #[test]
    fn mount_fuse3_style_gets_the_mount_subcommand() {
        let got = mount_helper_args(args(&["durafs", "/srv/b", "/srv/m", "-o", "dev"]), &subs())
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            args(&["durafs", "mount", "/srv/b", "/srv/m", "-o", "dev"])
        );
        // Subcommands and flags are left alone.
        for v in [&["durafs", "status", "/m"][..], &["durafs", "--version"]] {
            assert_eq!(
                mount_helper_args(args(v), &subs()).unwrap().unwrap(),
                args(v)
            );
        }
    }

    #[test]
    fn file_options_are_taken_out_of_o() {
        let v = without_file_options(&[
            "rw,policy=/p.toml,threads=2".into(),
            "crash-sim,faults=f.toml".into(),
        ]);
        assert_eq!(v, vec!["rw,threads=2".to_string()]);
    }
}
