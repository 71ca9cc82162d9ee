//! The `durafs` command. The mount is built for Linux (FUSE), macOS
//! (macFUSE) and Windows (WinFsp); on other OSes the command says so (see
//! the README's platform table).

#[cfg(any(target_os = "linux", target_os = "macos"))]
#[path = "main_unix.rs"]
mod command;

#[cfg(windows)]
#[path = "main_windows.rs"]
mod command;

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn main() -> std::process::ExitCode {
    command::main()
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "durafs: the mount is not built for this OS yet; this build has the policy language \
         and the durable-IO layer only (see the README, \"Platforms\")"
    );
    std::process::ExitCode::from(2)
}
