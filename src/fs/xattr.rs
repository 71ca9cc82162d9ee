//! Extended attributes: get, list, set, remove, on the backing inode, as the
//! caller (so `trusted.*` and permission rules are the backing store's).

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;

use super::{Caller, PassthroughFs, errno};
use crate::platform::{self, cstring};

/// The answer to getxattr/listxattr: the size asked for, or the bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// the caller asked for the size only (size 0)
    Size(u32),
    /// the value or the NUL-separated name list
    Data(Vec<u8>),
}

/// Runs a size-or-data xattr call: size 0 asks for the size; a value that
/// does not fit in `size` is ERANGE, as the syscall says.
fn size_or_data(
    size: u32,
    call: impl Fn(&mut [u8]) -> io::Result<usize>,
) -> io::Result<XattrReply> {
    if size == 0 {
        let n = call(&mut [])?;
        return Ok(XattrReply::Size(
            u32::try_from(n).map_err(|_| errno(libc::E2BIG))?,
        ));
    }
    let mut buf = vec![0u8; size as usize];
    let n = call(&mut buf)?;
    buf.truncate(n);
    Ok(XattrReply::Data(buf))
}

impl PassthroughFs {
    /// getxattr.
    pub fn getxattr(
        &self,
        caller: &Caller,
        ino: u64,
        name: &OsStr,
        size: u32,
    ) -> io::Result<XattrReply> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        let cname = cstring(name)?;
        let _creds = self.as_caller(caller)?;
        size_or_data(size, |buf| {
            platform::getxattr_fd(inode_fd.as_fd(), &cname, buf)
        })
    }

    /// listxattr.
    pub fn listxattr(&self, caller: &Caller, ino: u64, size: u32) -> io::Result<XattrReply> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        let _creds = self.as_caller(caller)?;
        size_or_data(size, |buf| platform::listxattr_fd(inode_fd.as_fd(), buf))
    }

    /// setxattr with XATTR_CREATE / XATTR_REPLACE flags.
    pub fn setxattr(
        &self,
        caller: &Caller,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> io::Result<()> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        let cname = cstring(name)?;
        let _creds = self.as_caller(caller)?;
        platform::setxattr_fd(inode_fd.as_fd(), &cname, value, flags)
    }

    /// removexattr.
    pub fn removexattr(&self, caller: &Caller, ino: u64, name: &OsStr) -> io::Result<()> {
        let inode = self.inodes.get(ino)?;
        let inode_fd = inode.fd()?;
        let cname = cstring(name)?;
        let _creds = self.as_caller(caller)?;
        platform::removexattr_fd(inode_fd.as_fd(), &cname)
    }
}
