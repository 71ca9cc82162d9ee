//! Frontends: adapters from an OS's userspace-filesystem interface to the
//! layers below. The FUSE frontend (Linux; macOS over macFUSE) is thin over
//! the OS-neutral `fs` layer and the engine over descriptors: it translates
//! types and errnos and manages FUSE's kernel-side features (such as
//! passthrough). The WinFsp frontend (Windows) is called by path and keeps
//! its per-file state itself; it takes every durability decision from
//! [`crate::engine::plan`] and does the IO through the Windows platform
//! layer. No frontend decides what a policy means.

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod fuse;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use fuse::{FrontendConfig, FuseFrontend, KernelInfo};
#[cfg(windows)]
pub mod winfsp;
