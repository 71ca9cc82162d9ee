//! Frontends: thin adapters from an OS's userspace-filesystem interface to
//! the OS-neutral [`crate::fs`] layer. They translate types and errnos and
//! manage the kernel-side features of their interface (such as FUSE
//! passthrough); they make no durability decisions.

mod fuse;
pub use fuse::{FrontendConfig, FuseFrontend, KernelInfo};
