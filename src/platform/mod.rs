//! Per-OS system primitives: the only module of the crate that contains
//! `unsafe`.
//!
//! Everything above this layer (fs, engine, frontend) calls safe functions
//! that return `io::Result` carrying the raw errno of the failed syscall, so
//! the kernel sees exactly what the backing filesystem said. One cfg'd
//! submodule per OS provides the implementation; Linux is the only one built
//! and tested today.

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[allow(unsafe_code)]
pub mod alloc;

#[cfg(any(target_os = "linux", target_os = "macos"))]
#[allow(unsafe_code)]
mod posix;

#[allow(unsafe_code)]
mod aligned;
mod counters;
mod durable;
#[cfg(target_os = "linux")]
mod linux_durable;
#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
mod macos;
#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
mod macos_sys;
#[cfg(target_os = "macos")]
pub use macos_sys::*;
#[cfg(any(test, not(any(target_os = "linux", target_os = "macos", windows))))]
pub(crate) mod unknown;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod uring;
#[cfg(windows)]
#[allow(unsafe_code)]
mod windows;

pub use aligned::{AlignedBuf, round_down, round_up};

/// The OS's error code for "an I/O error" (EIO; ERROR_IO_DEVICE on
/// Windows), for failures that carry no code of their own.
#[cfg(unix)]
pub const EIO: i32 = libc::EIO;
/// The OS's error code for "an I/O error" (EIO; ERROR_IO_DEVICE on
/// Windows), for failures that carry no code of their own.
#[cfg(windows)]
pub const EIO: i32 = ::windows_sys::Win32::Foundation::ERROR_IO_DEVICE as i32;
#[cfg(not(any(unix, windows)))]
/// The OS's error code for "an I/O error".
pub const EIO: i32 = 5;
pub use counters::{SyncCounts, sync_counts};

/// Whether file handles (`name_to_handle_at`/`open_by_handle_at`) work on
/// the filesystem of `root` for this process (they need
/// CAP_DAC_READ_SEARCH, and a filesystem that exports them): returns an fd
/// to reopen them with, or None. Never on macOS.
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub fn probe_handles(root: std::os::fd::BorrowedFd<'_>) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    let mount = reopen(root, libc::O_RDONLY | libc::O_DIRECTORY).ok()?;
    let h = name_to_handle(root).ok()?;
    open_by_handle(mount.as_fd(), &h, O_PATH).ok()?;
    Some(mount)
}
pub use durable::{Access, DurableFile, DurableFileIn, Os, RenameMode};

/// The durable-IO system calls of the OS the crate is built for.
#[cfg(target_os = "linux")]
pub use linux_durable::Linux as Native;
#[cfg(target_os = "macos")]
pub use macos::MacOs as Native;
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub use unknown::Portable as Native;
#[cfg(windows)]
pub use windows::Windows as Native;

#[cfg(target_os = "linux")]
pub use linux_durable::{
    advise, copy, direct_io_available, open_dir, preallocate, rename, sector_size, set_write_hint,
    sync_barrier, sync_data, sync_dir, sync_full, sync_parent_dir,
};
#[cfg(target_os = "macos")]
pub use macos::{
    advise, copy, direct_io_available, open_dir, preallocate, rename, sector_size, set_write_hint,
    sync_barrier, sync_data, sync_dir, sync_full, sync_parent_dir,
};
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub use unknown::{
    advise, copy, direct_io_available, open_dir, preallocate, rename, sector_size, set_write_hint,
    sync_barrier, sync_data, sync_dir, sync_full, sync_parent_dir,
};
#[cfg(target_os = "linux")]
pub use uring::{
    FIXED_LEN, IoPath, MAX_BATCH, io_uring_live, io_uring_status, registered_writes,
    set_io_uring_enabled, with_io_uring, write_and_sync, write_batch,
};
#[cfg(windows)]
pub use windows::{
    HandleInfo, advise, catch_console_stop, console_stopped, copy, copy_dacl, direct_io_available,
    disk_space, handle_info, open_dir, open_path, preallocate, rename, rename_path, sector_size,
    security_descriptor, set_allocation, set_basic_info, set_security, set_security_from,
    set_write_hint, sync_barrier, sync_data, sync_dir, sync_full, sync_parent_dir,
};
