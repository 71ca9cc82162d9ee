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

#[allow(unsafe_code)]
mod aligned;
mod counters;
#[cfg(target_os = "linux")]
mod durable;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod uring;

pub use aligned::{AlignedBuf, round_down, round_up};
pub use counters::{SyncCounts, sync_counts};
#[cfg(target_os = "linux")]
pub use durable::{
    Access, DurableFile, RenameMode, advise, copy, direct_io_available, preallocate, rename,
    sector_size, set_write_hint, sync_barrier, sync_data, sync_dir, sync_full, sync_parent_dir,
};
#[cfg(target_os = "linux")]
pub use uring::{IoPath, io_uring_live, io_uring_status, set_io_uring_enabled, write_and_sync};
