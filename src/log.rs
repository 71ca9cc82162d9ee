//! Where log lines go: stderr in the foreground, syslog (which journald
//! also reads) once a background daemon has detached from its terminal.
//!
//! The `tracing` formatter hands each event to a [`LineWriter`] as one
//! buffer; on drop the line goes to the sink chosen now. Switching the sink
//! ([`to_syslog`]) takes effect for the next line, so the start-up lines of
//! a background daemon still reach the terminal that ran `durafs mount`.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The default syslog socket; `DURAFS_SYSLOG_SOCKET` names another (tests,
/// or a syslog daemon listening elsewhere).
const SYSLOG_SOCKET: &str = "/dev/log";

/// Where lines go now.
enum Sink {
    Stderr,
    /// connected to the syslog socket
    Syslog(UnixDatagram),
    /// detached with no syslog: nowhere (said once on stderr before)
    Nowhere,
}

static SINK: Mutex<Sink> = Mutex::new(Sink::Stderr);

/// The syslog socket's path.
pub fn syslog_socket() -> PathBuf {
    std::env::var_os("DURAFS_SYSLOG_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYSLOG_SOCKET))
}

/// Sends later lines to syslog (facility daemon, tag `durafs[PID]`).
/// Without a syslog socket the lines are dropped, and the error says so:
/// call this while stderr still reaches someone.
pub fn to_syslog() -> std::io::Result<()> {
    let path = syslog_socket();
    let res = UnixDatagram::unbound().and_then(|s| s.connect(&path).map(|_| s));
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    match res {
        Ok(s) => {
            *sink = Sink::Syslog(s);
            Ok(())
        }
        Err(e) => {
            *sink = Sink::Nowhere;
            Err(std::io::Error::new(
                e.kind(),
                format!(
                    "no syslog at {} ({e}): the background daemon's logs are dropped; run it with \
                     --foreground (as the systemd unit does) to keep them",
                    path.display()
                ),
            ))
        }
    }
}

/// Syslog severity of a tracing level.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The `MakeWriter` given to the formatter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Writer;

/// One formatted event, sent on drop.
pub struct LineWriter {
    level: Level,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
        match &*sink {
            Sink::Stderr => {
                let _ = std::io::stderr().lock().write_all(&self.buf);
            }
            Sink::Syslog(s) => {
                let line = String::from_utf8_lossy(&self.buf);
                // Facility daemon (3).
                let msg = format!(
                    "<{}>durafs[{}]: {}",
                    3 * 8 + severity(&self.level),
                    std::process::id(),
                    line.trim_end()
                );
                let _ = s.send(msg.as_bytes());
            }
            Sink::Nowhere => {}
        }
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            level: Level::INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// How the command's logging is set up.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// `-o log=FILTER`: wins over `RUST_LOG`
    pub filter: Option<String>,
    /// one JSON object per line
    pub json: bool,
    /// no timestamps (a background daemon: syslog stamps its lines)
    pub no_time: bool,
}

/// Installs the global subscriber.
pub fn init(cfg: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = cfg
        .filter
        .as_deref()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let ansi = !cfg.json
        && !cfg.no_time
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Writer)
        .with_ansi(ansi);
    match (cfg.json, cfg.no_time) {
        (true, false) => b.json().init(),
        (true, true) => b.json().without_time().init(),
        (false, false) => b.init(),
        (false, true) => b.without_time().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_follow_syslog() {
        assert_eq!(severity(&Level::ERROR), 3);
        assert_eq!(severity(&Level::WARN), 4);
        assert_eq!(severity(&Level::INFO), 6);
        assert_eq!(severity(&Level::TRACE), 7);
    }
}
