//! durafs: a FUSE passthrough filesystem that enforces a durability policy.
//!
//! `durafs mount BACKING MOUNTPOINT` shows the tree under BACKING at
//! MOUNTPOINT. Every operation passes through to BACKING; writes are handed
//! to a durability engine that decides how they reach the backing store.
//!
//! Layers, each knowing only the one below it:
//!
//! ```text
//! kernel (FUSE)
//!   -> frontend   thin adapter (fuser::Filesystem); kernel IO modes
//!   -> fs         inode store (O_PATH fd per backing inode), handle store,
//!                 operations; OS-neutral, io::Result with the raw errno
//!   -> engine     what each open file's writes and syncs become, by the
//!                 `policy` (a pure library: TOML in, FilePolicy per path out)
//!   -> platform   per-OS system calls; the only module with `unsafe`
//!   -> backing store
//! ```
//!
//! Invariants:
//! - The errno the backing filesystem returns is the errno the app sees.
//! - Inodes are held by handle, keyed by backing (dev, ino), never by path:
//!   renaming a directory above an open file cannot break the file.
//! - Requests that change the tree run with the caller's fsuid, fsgid and
//!   groups, so ownership and permissions are the backing store's own.
//! - The frontend makes no durability decision; the engine sees no FUSE type.
//!
//! Platforms: the mount (frontend, fs, engine, daemon) is built for Linux
//! and macOS (macFUSE; type-checked in CI, not yet run); on Windows the
//! WinFsp frontend drives the engine's OS-neutral `plan` over the Windows
//! platform layer (type-checked, not yet run). On other OSes the library
//! is the policy language and the durable-IO platform layer; see the
//! README's platform table.

pub mod cli;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod control;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod daemon;
pub mod engine;
pub mod error;
#[cfg(any(target_os = "linux", target_os = "macos", windows))]
pub mod frontend;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod fs;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod log;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod metrics;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod ops;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod options;
pub mod platform;
pub mod policy;
