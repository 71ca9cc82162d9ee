//! The `durafs` command. The mount is built for Linux; on other OSes the
//! command says so (see the README's platform table).

#[cfg(target_os = "linux")]
#[path = "main_linux.rs"]
mod command;

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    command::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "durafs: the mount is not built for this OS yet; this build has the policy language \
         and the durable-IO layer only (see the README, \"Platforms\")"
    );
    std::process::ExitCode::from(2)
}
