//! The control socket: one Unix socket per mount, the channel `durafs
//! status` and `durafs reload` (and later crash and fault commands) use to
//! reach a running daemon.
//!
//! Where: `/run/durafs/` for mounts by root, `/run/user/UID/durafs/` (or
//! `/tmp/durafs-UID/` where that does not exist) for a user's, named by a
//! hash of the canonical mount point, so a client finds it from the mount
//! point and the mount's owner alone. The directory is the owner's with
//! mode 0700 and the socket 0600; the daemon also checks each peer's uid
//! (SO_PEERCRED) and answers only the mount's owner and root.
//!
//! Protocol: the client sends one line (the command), the daemon answers
//! with one JSON object and closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::platform;

/// What the daemon does with a request.
pub trait Handler: Send + Sync + 'static {
    /// Answers one command line (`status`, `reload`, ...).
    fn handle(&self, command: &str) -> serde_json::Value;
}

/// The directory holding the control sockets of mounts owned by `uid`.
pub fn socket_dir(uid: u32) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/run/durafs");
    }
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if run_user.is_dir() {
        run_user.join("durafs")
    } else {
        PathBuf::from(format!("/tmp/durafs-{uid}"))
    }
}

/// The control socket of the mount at `mountpoint` (canonical) owned by `uid`.
pub fn socket_path(mountpoint: &Path, uid: u32) -> PathBuf {
    // FNV-1a: short, stable, and a socket path must stay under 108 bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mountpoint.as_os_str().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    socket_dir(uid).join(format!("{h:016x}.sock"))
}

/// A listening control socket; the socket file is removed on drop.
pub struct Server {
    path: PathBuf,
}

impl Server {
    /// Binds the socket for `mountpoint` and answers requests with
    /// `handler` on a thread of its own.
    pub fn start(mountpoint: &Path, handler: Arc<dyn Handler>) -> std::io::Result<Server> {
        let uid = platform::geteuid();
        let path = socket_path(mountpoint, uid);
        let dir = path.parent().expect("socket path has a directory");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let md = std::fs::metadata(dir)?;
        if md.uid() != uid || md.mode() & 0o077 != 0 {
            return Err(std::io::Error::other(format!(
                "{} is not private to uid {uid} (owner {}, mode {:o}); remove it",
                dir.display(),
                md.uid(),
                md.mode() & 0o7777
            )));
        }
        // A socket left by a daemon that died: nothing answers on it.
        if path.exists() && UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std::thread::Builder::new()
            .name("durafs-control".into())
            .spawn(move || serve(listener, handler, uid))?;
        Ok(Server { path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(listener: UnixListener, handler: Arc<dyn Handler>, owner: u32) {
    for conn in listener.incoming() {
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                warn!("control socket: accept failed: {e}");
                continue;
            }
        };
        let peer = platform::peer_uid(conn.as_fd());
        let answer = match peer {
            Ok(uid) if uid == owner || uid == 0 => {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                match BufReader::new(&conn).read_line(&mut line) {
                    Ok(_) => {
                        debug!("control request from uid {uid}: {}", line.trim());
                        handler.handle(line.trim())
                    }
                    Err(e) => {
                        serde_json::json!({ "ok": false, "error": format!("reading the request: {e}") })
                    }
                }
            }
            Ok(uid) => {
                warn!("control socket: refused a request from uid {uid}");
                serde_json::json!({
                    "ok": false,
                    "error": format!("permission denied: only the mount's owner (uid {owner}) or root may control it"),
                })
            }
            Err(e) => serde_json::json!({ "ok": false, "error": format!("peer credentials: {e}") }),
        };
        let _ = writeln!(conn, "{answer}");
    }
}

/// Sends `command` to the daemon of the mount at `mountpoint` (canonical),
/// owned by `owner`, and returns its answer.
pub fn request(mountpoint: &Path, owner: u32, command: &str) -> std::io::Result<serde_json::Value> {
    let path = socket_path(mountpoint, owner);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "no daemon answers on {} ({e}): if the mount's daemon died, remove the mount with `durafs umount {}`",
                path.display(),
                mountpoint.display()
            ),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(s, "{command}")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    serde_json::from_str(&out)
        .map_err(|e| std::io::Error::other(format!("bad answer from the daemon ({e}): {out:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_short_stable_and_distinct() {
        let a = socket_path(Path::new("/srv/data"), 0);
        assert_eq!(a, socket_path(Path::new("/srv/data"), 0));
        assert_ne!(a, socket_path(Path::new("/srv/data2"), 0));
        assert!(a.starts_with("/run/durafs"));
        let long = "/x".repeat(500);
        assert!(socket_path(Path::new(&long), 12345).as_os_str().len() < 108);
    }
}
