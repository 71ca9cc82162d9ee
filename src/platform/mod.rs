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
