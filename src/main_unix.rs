//! The `durafs` command on Linux: argument parsing and logging set-up only.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use durafs::daemon::LoadedPolicy;
use durafs::error::{Error, Result};
use durafs::log::LogConfig;
use durafs::options::{MountOptions, OPTION_HELP};

#[derive(Parser)]
#[command(
    name = "durafs",
    about = "A FUSE passthrough filesystem that enforces a durability policy",
    long_about = "durafs shows a backing directory at a mount point; every operation passes \
                  through to the backing directory, and writes are made durable by policy.\n\n\
                  `durafs BACKING MOUNTPOINT -o OPTIONS` (as mount.fuse3 runs it) and the \
                  mount.durafs / mount.fuse.durafs names (as mount(8) runs them) mount too.",
    disable_version_flag = true,
    arg_required_else_help = true
)]
struct Cli {
    /// Print the version, the FUSE protocol the kernel negotiates, and
    /// whether kernel passthrough and io_uring are live.
    #[arg(short = 'V', long)]
    version: bool,
    /// Log lines as text or as one JSON object each.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
        /// power cut (see the README's persistence model).
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
    /// Print a mount's metrics in the Prometheus text format.
    Metrics {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Write the man pages (durafs.8, one per subcommand, durafs-policy.5)
    /// and shell completions (bash, zsh, fish) into DIR, for packaging.
    #[command(hide = true)]
    GenerateAssets {
        /// Where to write them (created if missing).
        dir: PathBuf,
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

pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let subcommands: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .chain(["help".to_string()])
        .collect();
    let argv = match durafs::ops::mount_helper_args(argv, &subcommands) {
        Ok(Some(a)) => a,
        // `mount -f`: pretend, as mount(8) asks.
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durafs: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let json = cli.log_format == LogFormat::Json;
    let mut log = LogConfig {
        json,
        ..LogConfig::default()
    };
    if let Some(Cmd::Mount {
        options,
        ready_stdout,
        ..
    }) = &cli.cmd
    {
        // The filter and format of -o, when they parse (errors come later).
        if let Ok(o) = MountOptions::parse(options) {
            log.filter = o.log;
            log.json |= o.log_json;
        }
        log.no_time = *ready_stdout;
    }
    durafs::log::init(&log);
    if cli.version {
        print!("{}", durafs::ops::version_report());
        return ExitCode::SUCCESS;
    }
    let Some(cmd) = cli.cmd else {
        let _ = Cli::command().print_help();
        return ExitCode::from(2);
    };
    let res =
        match cmd {
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
                    o.crash_sim |= crash_sim;
                    o.policy = one_of("policy", policy.clone(), o.policy.take())?;
                    o.faults_file = one_of("faults", faults.clone(), o.faults_file.take())?;
                    if let Some(f) = &o.faults_file {
                        o.faults = durafs::cli::load_faults(f)?;
                    }
                    Ok(o)
                })
                .and_then(|o| Ok((LoadedPolicy::load(o.policy.as_deref(), !ready_stdout)?, o)))
            {
                Err(e) => Err(e),
                Ok((policy, opts)) if foreground => {
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
                Ok((policy, opts)) => durafs::daemon::preflight(&backing, &mountpoint, &opts)
                    .and_then(|_| {
                        let mut args: Vec<OsString> = Vec::new();
                        if json {
                            args.push("--log-format=json".into());
                        }
                        // The files named by -o travel as flags, made absolute.
                        for o in durafs::ops::without_file_options(&options) {
                            args.push("-o".into());
                            args.push(o.into());
                        }
                        if let Some(p) = policy.path {
                            args.push("--policy".into());
                            args.push(p.into_os_string());
                        }
                        if opts.crash_sim {
                            args.push("--crash-sim".into());
                        }
                        if let Some(f) = opts.faults_file {
                            args.push("--faults".into());
                            args.push(std::path::absolute(&f).unwrap_or(f).into_os_string());
                        }
                        args.push(backing.into_os_string());
                        args.push(mountpoint.into_os_string());
                        durafs::daemon::spawn_background(&args)
                    }),
            },
            Cmd::Metrics { mountpoint } => durafs::cli::metrics(&mountpoint).map(|s| print!("{s}")),
            Cmd::GenerateAssets { dir } => {
                durafs::ops::generate_assets(Cli::command(), &dir).map(|files| {
                    for f in files {
                        println!("{}", f.display());
                    }
                })
            }
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

/// A file given both as a flag and as `-o KEY=FILE` must be the same one.
fn one_of(key: &str, flag: Option<PathBuf>, opt: Option<PathBuf>) -> Result<Option<PathBuf>> {
    match (flag, opt) {
        (Some(a), Some(b)) if a != b => Err(Error::BadOption(
            format!("{key}={}", b.display()),
            format!("--{key} {} names another file; give it once", a.display()),
        )),
        (a, b) => Ok(a.or(b)),
    }
}
