//! The `durafs` command: argument parsing and logging set-up only.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use durafs::daemon::LoadedPolicy;
use durafs::options::{MountOptions, OPTION_HELP};

#[derive(Parser)]
#[command(
    name = "durafs",
    version,
    about = "A FUSE passthrough filesystem that enforces a durability policy",
    long_about = "durafs shows a backing directory at a mount point; every operation passes \
                  through to the backing directory, and writes are made durable by policy."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

fn options_help() -> String {
    let mut s = String::from("Mount options (-o, comma-separated, repeatable):\n");
    for (k, v) in OPTION_HELP {
        s.push_str(&format!("  {k:<22} {v}\n"));
    }
    s
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount BACKING at MOUNTPOINT. Returns once the mount is ready; the
    /// daemon then runs in the background unless --foreground.
    #[command(after_help = options_help())]
    Mount {
        /// Stay in the foreground (log to stderr; Ctrl-C unmounts).
        #[arg(short, long)]
        foreground: bool,
        /// Mount options, e.g. -o allow_other,default_permissions,threads=4.
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// The durability policy (TOML; see policies/). Without it, the
        /// built-in default: data durable at close, metadata when changed.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Track everything not yet durable so `durafs crash` can simulate a
        /// power cut (see the README's persistence model). Attribute and
        /// entry caching default to 0 on such a mount.
        #[arg(long)]
        crash_sim: bool,
        /// Faults to set at mount: a TOML file of [[fault]] tables with the
        /// keys of `durafs fault add`.
        #[arg(long, value_name = "FILE")]
        faults: Option<PathBuf>,
        /// Internal: report readiness on stdout, then detach (used by the
        /// background start).
        #[arg(long, hide = true)]
        ready_stdout: bool,
        /// The directory whose tree the mount shows.
        backing: PathBuf,
        /// Where to mount it (an empty directory, or BACKING itself).
        mountpoint: PathBuf,
    },
    /// Validate a policy file and print its resolved rule table.
    Check {
        /// The policy file.
        policy: PathBuf,
    },
    /// Say which rule each path gets and what it will do, in plain words.
    Explain {
        /// The policy file (default: the built-in policy).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Paths relative to the mount root, e.g. data/app.db.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Show durafs mounts: backing dir, policy, open files and their rules.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// One mount point (default: every durafs mount).
        mountpoint: Option<PathBuf>,
    },
    /// Re-read a mount's policy file (as SIGHUP does). A valid policy
    /// applies to files opened from then on; an invalid one is refused and
    /// the old one stays in force.
    Reload {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Simulate a power cut on a `--crash-sim` mount: everything not durable
    /// is lost, the backing directory is left as a real power cut could
    /// leave it, and the mount goes away (unless --keep-mounted).
    Crash {
        /// Keep a random subset of the unsynced pages (seeded, reproducible)
        /// instead of losing them all: torn writes and reordering.
        #[arg(long, value_name = "SEED")]
        torn: Option<u64>,
        /// Stay mounted after the crash (tracking starts afresh).
        #[arg(long)]
        keep_mounted: bool,
        /// Do not crash: say what a power cut now would lose.
        #[arg(long)]
        report: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Set, list or clear faults on a mount: errors, delays and torn writes
    /// on chosen operations of chosen files.
    Fault {
        #[command(subcommand)]
        cmd: FaultCmd,
    },
    /// Unmount a durafs mount (also one whose daemon has died).
    Umount {
        /// Detach a busy mount now; it goes away when its last user closes.
        #[arg(short = 'l', long)]
        lazy: bool,
        /// The mount point.
        mountpoint: PathBuf,
    },
}

#[derive(Subcommand)]
enum FaultCmd {
    /// Add a fault, e.g. `durafs fault add /mnt op=fsync errno=EIO glob='**/*.db' count=1`.
    /// Keys: op=write|fsync|read|open|any, glob=GLOB, errno=EIO|ENOSPC|EDQUOT|EROFS|N,
    /// tear (writes: half written, then EIO), delay=DURATION, count=N,
    /// probability=P, seed=N.
    Add {
        /// The mount point.
        mountpoint: PathBuf,
        /// The fault, as key=value words.
        #[arg(required = true)]
        spec: Vec<String>,
    },
    /// List the faults and how often each hit.
    List {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Clear every fault, or one by id.
    Clear {
        /// The mount point.
        mountpoint: PathBuf,
        /// The fault's id (from `add` or `list`).
        id: Option<u64>,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let res =
        match cli.cmd {
            Cmd::Mount {
                foreground,
                options,
                ready_stdout,
                policy,
                crash_sim,
                faults,
                backing,
                mountpoint,
            } => match MountOptions::parse(&options)
                .and_then(|mut o| {
                    if crash_sim {
                        o.crash_sim = true;
                        // The kernel must not answer from caches a crash made stale.
                        if !options
                            .iter()
                            .any(|s| s.contains("attr-timeout") || s.contains("attr_timeout"))
                        {
                            o.attr_timeout = std::time::Duration::ZERO;
                        }
                        if !options
                            .iter()
                            .any(|s| s.contains("entry-timeout") || s.contains("entry_timeout"))
                        {
                            o.entry_timeout = std::time::Duration::ZERO;
                        }
                    }
                    if let Some(f) = &faults {
                        o.faults = durafs::cli::load_faults(f)?;
                    }
                    Ok(o)
                })
                .and_then(|o| Ok((o, LoadedPolicy::load(policy.as_deref(), !ready_stdout)?)))
            {
                Err(e) => Err(e),
                Ok((opts, policy)) if foreground => {
                    let ready = if ready_stdout {
                        durafs::daemon::Ready::Stdout
                    } else {
                        durafs::daemon::Ready::Quiet
                    };
                    let r = durafs::daemon::serve(&backing, &mountpoint, &opts, policy, &ready);
                    if let Err(e) = &r {
                        ready.fail(e);
                    }
                    r
                }
                Ok((opts, policy)) => durafs::daemon::preflight(&backing, &mountpoint, &opts)
                    .and_then(|_| {
                        let mut args: Vec<OsString> = Vec::new();
                        for o in &options {
                            args.push("-o".into());
                            args.push(o.into());
                        }
                        if let Some(p) = policy.path {
                            args.push("--policy".into());
                            args.push(p.into_os_string());
                        }
                        if crash_sim {
                            args.push("--crash-sim".into());
                        }
                        if let Some(f) = faults {
                            args.push("--faults".into());
                            args.push(std::path::absolute(&f).unwrap_or(f).into_os_string());
                        }
                        args.push(backing.into_os_string());
                        args.push(mountpoint.into_os_string());
                        durafs::daemon::spawn_background(&args)
                    }),
            },
            Cmd::Umount { lazy, mountpoint } => durafs::daemon::umount(&mountpoint, lazy),
            Cmd::Check { policy } => durafs::cli::check(&policy).map(|s| print!("{s}")),
            Cmd::Explain {
                policy,
                json,
                paths,
            } => LoadedPolicy::load(policy.as_deref(), true)
                .map(|p| print!("{}", durafs::cli::explain(&p.policy, &paths, json))),
            Cmd::Status { json, mountpoint } => {
                durafs::cli::status(mountpoint.as_deref(), json).map(|s| print!("{s}"))
            }
            Cmd::Reload { mountpoint } => durafs::cli::reload(&mountpoint).map(|s| print!("{s}")),
            Cmd::Crash {
                torn,
                keep_mounted,
                report,
                json,
                mountpoint,
            } => durafs::cli::crash(&mountpoint, torn, keep_mounted, report, json)
                .map(|s| print!("{s}")),
            Cmd::Fault { cmd } => match cmd {
                FaultCmd::Add { mountpoint, spec } => {
                    durafs::cli::fault(&mountpoint, "add", &spec.join(" "))
                }
                FaultCmd::List { mountpoint } => durafs::cli::fault(&mountpoint, "list", ""),
                FaultCmd::Clear { mountpoint, id } => durafs::cli::fault(
                    &mountpoint,
                    "clear",
                    &id.map(|i| i.to_string()).unwrap_or_default(),
                ),
            }
            .map(|s| print!("{s}")),
        };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durafs: {e}");
            ExitCode::FAILURE
        }
    }
}
