//! Software prefetching: asking the CPU to start loading memory that will be
//! needed a few steps later, so that the wait overlaps with useful work.

/// Starts loading every cache line of `value` into the CPU's caches. Only a
/// hint: it changes nothing and cannot fault; where the architecture has no
/// such instruction (here), it does nothing.
#[inline(always)]
pub(super) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = (value as *const T).cast::<i8>();
        let mut offset = 0;
        while offset < std::mem::size_of::<T>() {
            // SAFETY: a prefetch reads nothing architecturally visible and
            // never faults; the address lies within `value`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
            offset += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
