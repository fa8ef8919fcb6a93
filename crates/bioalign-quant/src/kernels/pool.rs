//! Large product outputs, kept for reuse once their tensor is dropped.
//!
//! A fresh buffer of hundreds of megabytes comes from the allocator as a new mapping,
//! and Linux zeroes every page of it on first touch: SmolLM2's logits for a 32 × 32
//! batch (201 MB) cost 7% of a forward in `clear_page` alone, paid again by every
//! forward. Outputs of [`HUGE_MIN`] bytes or more are therefore taken from a small
//! pool of buffers already faulted in, and a tensor made by `f32_data` (feature
//! `burn`) gives its buffer back to the pool when dropped. At most [`MAX_KEPT`]
//! buffers wait there; [`release`] frees them. Smaller outputs never enter the pool:
//! the allocator's own free lists serve those.

use std::sync::Mutex;

/// Outputs from this many bytes on are pooled and backed by transparent huge pages.
pub(crate) const HUGE_MIN: usize = 16 << 20;

/// Buffers kept waiting for reuse; the oldest is freed when another comes back.
pub const MAX_KEPT: usize = 2;

static KEPT: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

fn kept() -> std::sync::MutexGuard<'static, Vec<Vec<f32>>> {
    // A panic while holding the lock leaves only whole `Vec`s behind: still usable.
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty vector with room for `len` values: a kept buffer when one of at least
/// `len` and at most `2 * len` values is waiting (the smallest such), else a new
/// allocation, asked to be backed by huge pages when large.
pub(crate) fn take(len: usize) -> Vec<f32> {
    if len * size_of::<f32>() >= HUGE_MIN {
        let mut kept = kept();
        let best = (0..kept.len())
            .filter(|&i| (len..=2 * len).contains(&kept[i].capacity()))
            .min_by_key(|&i| kept[i].capacity());
        if let Some(i) = best {
            let mut v = kept.swap_remove(i);
            v.clear();
            return v;
        }
    }
    let mut v = Vec::with_capacity(len);
    huge_pages(&mut v);
    v
}

/// Hands `v`'s buffer back for reuse when it is large enough to be pooled; a smaller
/// one is simply freed.
pub fn give_back(v: Vec<f32>) {
    if v.capacity() * size_of::<f32>() < HUGE_MIN {
        return;
    }
    let evicted = {
        let mut kept = kept();
        kept.push(v);
        if kept.len() > MAX_KEPT {
            Some(kept.remove(0))
        } else {
            None
        }
    };
    // Freed outside the lock (unmapping hundreds of megabytes takes a while).
    drop(evicted);
}

/// Frees every buffer waiting for reuse (for a caller that wants its memory back
/// between phases); returns how many bytes were released.
pub fn release() -> usize {
    let all = std::mem::take(&mut *kept());
    all.iter().map(|v| v.capacity() * size_of::<f32>()).sum()
}

/// Asks Linux to back the 2 MiB-aligned part of `v`'s (not yet touched) buffer with
/// transparent huge pages when it is at least [`HUGE_MIN`] bytes: the 201 MB of
/// logits above otherwise fault in 49,000 pages of 4 KiB. A hint: where THP is off
/// (or not Linux) nothing changes.
fn huge_pages(v: &mut Vec<f32>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity() * size_of::<f32>();
        if bytes < HUGE_MIN {
            return;
        }
        let start = (v.as_mut_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_mut_ptr() as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside `v`'s allocation; `madvise` only changes
            // how its pages are backed, never their contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// A pooled output as burn tensor data: the buffer goes back to the pool when the
/// tensor (and every view sharing it) is dropped. Small outputs are plain data.
#[cfg(feature = "burn")]
pub fn f32_data<S: Into<burn::tensor::Shape>>(v: Vec<f32>, shape: S) -> burn::tensor::TensorData {
    use burn::tensor::{DType, TensorData};
    if v.capacity() * size_of::<f32>() < HUGE_MIN {
        return TensorData::new(v, shape);
    }
    let len = v.len() * size_of::<f32>();
    // SAFETY: the first `len` bytes of the controller's memory are `v`'s initialized values.
    let bytes = unsafe { burn_std::Bytes::from_controller(Box::new(Pooled(v)), len) };
    TensorData::from_bytes(bytes, shape, DType::F32)
}

/// The allocation controller of a pooled output.
#[cfg(feature = "burn")]
struct Pooled(Vec<f32>);

#[cfg(feature = "burn")]
impl Drop for Pooled {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}

#[cfg(feature = "burn")]
impl burn_std::AllocationController for Pooled {
    fn alloc_align(&self) -> usize {
        align_of::<f32>()
    }

    fn property(&self) -> burn_std::AllocationProperty {
        burn_std::AllocationProperty::Other
    }

    unsafe fn memory_mut(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        let bytes = self.0.capacity() * size_of::<f32>();
        // SAFETY: the whole capacity belongs to the vector; callers write only
        // initialized bytes (the trait's contract).
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), bytes) }
    }

    fn memory(&self) -> &[std::mem::MaybeUninit<u8>] {
        let bytes = self.0.capacity() * size_of::<f32>();
        // SAFETY: as above; `MaybeUninit` makes no claim about the spare capacity.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool is process-wide: its tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    #[test]
    fn large_buffers_come_back_for_reuse_and_small_ones_never_do() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        release();
        let n = HUGE_MIN / size_of::<f32>();
        let a = take(4 * n);
        let a_ptr = a.as_ptr();
        give_back(a);
        // The kept buffer is more than twice this request: a fresh one.
        let c = take(n);
        assert_ne!(c.as_ptr(), a_ptr);
        // At most twice: reused, emptied.
        let mut c2 = take(2 * n);
        assert_eq!(c2.as_ptr(), a_ptr);
        assert!(c2.is_empty() && c2.capacity() >= 4 * n);
        c2.push(1.0);
        // Below the pool's size: never kept.
        let small = take(n / 4);
        assert!(small.capacity() >= n / 4);
        give_back(small);
        give_back(c2);
        give_back(c);
        assert_eq!(release(), 5 * n * size_of::<f32>());
        for _ in 0..MAX_KEPT + 1 {
            give_back(Vec::with_capacity(n));
        }
        let freed = release();
        assert_eq!(freed, MAX_KEPT * n * size_of::<f32>());
        assert_eq!(release(), 0);
    }

    /// A reused buffer holds the last product's values (here NaN): the blocked kernel
    /// must write every element before reading it.
    #[test]
    fn a_product_into_a_reused_buffer_overwrites_every_value() {
        use super::super::{Isa, Product, product};
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        release();
        let (m, rows, cols) = (1024, 4096, 8);
        let x: Vec<f32> = (0..m * cols)
            .map(|i| (i % 13) as f32 * 0.25 - 1.5)
            .collect();
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (i % 7) as f32 * 0.5 - 1.0)
            .collect();
        let p = || Product::NtF32 { w: &w, rows, cols };
        give_back(vec![f32::NAN; m * rows]);
        let y = product(&x, m, p(), Isa::detect(), 0).unwrap();
        assert_eq!(release(), 0, "the product took the kept buffer");
        for (i, &v) in y.iter().enumerate() {
            let (r, j) = (i / rows, i % rows);
            let want: f32 = (0..cols).map(|k| x[r * cols + k] * w[j * cols + k]).sum();
            assert!((v - want).abs() <= 1e-4, "y[{r}][{j}] = {v}, want {want}");
        }
    }

    #[cfg(feature = "burn")]
    #[test]
    fn pooled_tensor_data_reads_back_and_returns_its_buffer() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        use burn::tensor::Tensor;
        use burn_flex::Flex;
        let n = HUGE_MIN / size_of::<f32>();
        let mut v = take(n);
        v.extend((0..n).map(|i| i as f32));
        let ptr = v.as_ptr();
        let t = Tensor::<Flex, 2>::from_data(f32_data(v, [n / 4, 4]), &Default::default());
        let got = t
            .clone()
            .slice([n / 4 - 1..n / 4, 0..4])
            .into_data()
            .to_vec::<f32>();
        assert_eq!(
            got.unwrap(),
            [
                (n - 4) as f32,
                (n - 3) as f32,
                (n - 2) as f32,
                (n - 1) as f32
            ]
        );
        let doubled = (t.clone() * 2.0)
            .slice([0..1, 0..4])
            .into_data()
            .to_vec::<f32>();
        assert_eq!(doubled.unwrap(), [0.0, 2.0, 4.0, 6.0]);
        drop(t);
        let again = take(n);
        assert_eq!(again.as_ptr(), ptr, "the dropped tensor's buffer is reused");
        give_back(again);
    }
}
