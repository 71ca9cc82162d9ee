//! `AlignedBuf`: an owned heap buffer aligned for direct IO.

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ptr::NonNull;

/// An owned, zero-initialised heap buffer whose start is aligned to `align`
/// (a power of two), freed on drop. Direct IO needs buffers aligned to the
/// device's sector.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: the buffer is uniquely owned heap memory with no interior
// mutability; sending or sharing it is as safe as for a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above: &AlignedBuf only gives out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes aligned to `align`. Panics if `align` is not a
    /// power of two.
    pub fn zeroed(len: usize, align: usize) -> AlignedBuf {
        assert!(
            align.is_power_of_two(),
            "alignment {align} is not a power of two"
        );
        // Never a zero-size allocation; the capacity is a whole number of
        // alignment units.
        let layout = Layout::from_size_align(round_up(len.max(1), align), align)
            .expect("buffer size overflows");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len, layout }
    }

    /// Its alignment.
    pub fn align(&self) -> usize {
        self.layout.align()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to at least `len` initialised (zeroed) bytes
        // owned by self, alive as long as the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref, and &mut self makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes, align {})", self.len, self.align())
    }
}

/// `n` rounded up to a multiple of `align` (a power of two).
pub fn round_up(n: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (n + align - 1) & !(align - 1)
}

/// `n` rounded down to a multiple of `align` (a power of two).
pub fn round_down(n: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    n & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_writable() {
        for (len, align) in [(0, 512), (1, 512), (4097, 4096), (1 << 20, 4096), (3, 8)] {
            let mut b = AlignedBuf::zeroed(len, align);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % align, 0);
            assert!(b.iter().all(|&x| x == 0));
            b.fill(7);
            assert!(b.iter().all(|&x| x == 7));
        }
        let b = std::thread::spawn(|| AlignedBuf::zeroed(10, 4096))
            .join()
            .unwrap();
        assert_eq!(b.align(), 4096);
    }

    #[test]
    #[should_panic(expected = "not a power of two")]
    fn refuses_odd_alignment() {
        AlignedBuf::zeroed(10, 3);
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up(0, 512), 0);
        assert_eq!(round_up(1, 512), 512);
        assert_eq!(round_up(512, 512), 512);
        assert_eq!(round_up(4097, 4096), 8192);
        assert_eq!(round_down(4097, 4096), 4096);
        assert_eq!(round_down(511, 512), 0);
    }
}
