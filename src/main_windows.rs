//! `durafs` on Windows: `mount` (a WinFsp volume, in the foreground until
//! Ctrl-C), `check` and `explain`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use durafs::policy::Policy;

/// durafs: a directory shown as a volume whose writes are made durable as a
/// TOML policy says.
#[derive(Parser)]
#[command(name = "durafs", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show BACKING at MOUNTPOINT (a drive letter such as X: or a path
    /// that does not exist yet) until Ctrl-C.
    Mount {
        /// the policy (TOML); the built-in default when omitted
        #[arg(long)]
        policy: Option<PathBuf>,
        /// For a supervising process (the test suite's mount helper): say
        /// `ready` (or `error: ...`) on stdout once mounted, and unmount
        /// when stdin reaches its end, as at Ctrl-C.
        #[arg(long, hide = true)]
        ready_stdout: bool,
        /// the directory to show
        backing: PathBuf,
        /// where to show it
        mountpoint: String,
    },
    /// Validate a policy and print its resolved rule table.
    Check {
        /// the policy file
        policy: PathBuf,
    },
    /// Say which rule each path gets and what it will do.
    Explain {
        /// the policy (TOML); the built-in default when omitted
        #[arg(long)]
        policy: Option<PathBuf>,
        /// paths relative to the mount's root, '/'-separated
        paths: Vec<String>,
    },
}

fn load(policy: Option<&Path>) -> Result<Policy, String> {
    match policy {
        None => Ok(Policy::builtin()),
        Some(p) => {
            let (policy, warnings) = Policy::load(p).map_err(|e| e.to_string())?;
            for w in warnings {
                eprintln!("{w}");
            }
            Ok(policy)
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    match args.cmd {
        Cmd::Check { policy } => {
            print!(
                "{}",
                durafs::cli::check(&policy).map_err(|e| e.to_string())?
            );
        }
        Cmd::Explain { policy, paths } => {
            let policy = load(policy.as_deref())?;
            print!("{}", durafs::cli::explain(&policy, &paths, false));
        }
        Cmd::Mount {
            policy,
            ready_stdout,
            backing,
            mountpoint,
        } => {
            let r = serve(policy.as_deref(), &backing, &mountpoint, ready_stdout);
            if let (Err(e), true) = (&r, ready_stdout) {
                println!("error: {e}");
            }
            r?;
        }
    }
    Ok(())
}

/// Mounts, then serves until Ctrl-C (or, with `ready_stdout`, until stdin
/// ends), then unmounts and commits what is pending.
fn serve(
    policy: Option<&Path>,
    backing: &Path,
    mountpoint: &str,
    ready_stdout: bool,
) -> Result<(), String> {
    let policy = load(policy)?;
    durafs::platform::catch_console_stop().map_err(|e| e.to_string())?;
    let mounted = durafs::frontend::winfsp::mount(backing, mountpoint, policy)
        .map_err(|e| format!("cannot mount {} at {mountpoint}: {e}", backing.display()))?;
    let stdin_ended = Arc::new(AtomicBool::new(false));
    if ready_stdout {
        println!("ready");
        let _ = std::io::stdout().flush();
        let ended = stdin_ended.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            ended.store(true, Ordering::Relaxed);
        });
    } else {
        eprintln!(
            "durafs: {} is at {mountpoint}; Ctrl-C unmounts",
            backing.display()
        );
    }
    while !durafs::platform::console_stopped() && !stdin_ended.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    mounted.unmount();
    Ok(())
}

pub fn main() -> ExitCode {
    // The volume's warnings and errors (a commit that failed at the last
    // close, a fallback said once) go to stderr; RUST_LOG filters them.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durafs: {e}");
            ExitCode::FAILURE
        }
    }
}
