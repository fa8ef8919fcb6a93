//! Hands chunks of an output to rayon's pool without the caller ever sleeping
//! on them.
//!
//! `rayon::in_place_scope` has the calling thread block on a latch until every
//! spawned job has run, and waking a parked pool thread takes tens of µs on the
//! 2-core VMs (a quarter of a SmolLM2 GEMV's profile was the scheduler, and the
//! GEMV took 35-41 µs; 18-24 µs after this change). Here every thread, the caller
//! included, claims chunks from one counter, so a chunk no helper has reached
//! yet is run by the caller itself, and the caller only ever waits (spinning,
//! then yielding) for chunks that are already running.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The state a helper job shares with the caller. It outlives the call
/// (a helper may start after the caller returned); `data` is only read
/// through an index claimed below `chunks`, which cannot happen once the
/// caller has seen every chunk done.
struct Shared {
    next: AtomicUsize,
    done: AtomicUsize,
    chunks: usize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    data: *const (),
    run: unsafe fn(*const (), usize),
}

// SAFETY: `data` points at a `Job` whose closure is `Sync` and whose chunks are
// disjoint; it is dereferenced only under the claiming protocol above.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// Claims and runs chunks until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.chunks {
                return;
            }
            // SAFETY: chunk `i` is claimed by this thread alone, and the caller
            // keeps `data` alive until `done` reaches `chunks`.
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { (self.run)(self.data, i) }));
            if let Err(p) = r {
                let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(p);
            }
            self.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

struct Job<'a, T, F> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
    f: &'a F,
}

/// Runs chunk `i` of the `Job<T, F>` behind `data`.
///
/// # Safety
/// `data` is a live `Job<T, F>` and no other thread runs chunk `i`.
unsafe fn run_chunk<T, F: Fn(usize, &mut [T])>(data: *const (), i: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let job = &*data.cast::<Job<'_, T, F>>();
        let start = i * job.chunk;
        let len = job.chunk.min(job.len - start);
        (job.f)(i, std::slice::from_raw_parts_mut(job.ptr.add(start), len));
    }
}

/// Runs `f(index, chunk)` over `out.chunks_mut(chunk)` on the calling thread and
/// on as many of rayon's pool threads as there are further chunks (the pool
/// burn-flex runs, so the two never oversubscribe the cores). Chunks go to
/// whichever thread asks first; a panic in `f` is resumed on the caller.
pub(crate) fn par_chunks_mut<T: Send, F: Fn(usize, &mut [T]) + Sync>(
    out: &mut [T],
    chunk: usize,
    f: F,
) {
    let chunk = chunk.max(1);
    let chunks = out.len().div_ceil(chunk);
    let in_pool = usize::from(rayon::current_thread_index().is_some());
    let helpers = (chunks.saturating_sub(1)).min(rayon::current_num_threads() - in_pool);
    if helpers == 0 {
        for (i, c) in out.chunks_mut(chunk).enumerate() {
            f(i, c);
        }
        return;
    }
    let job = Job {
        ptr: out.as_mut_ptr(),
        len: out.len(),
        chunk,
        f: &f,
    };
    let shared = Arc::new(Shared {
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        chunks,
        panic: Mutex::new(None),
        data: (&raw const job).cast(),
        run: run_chunk::<T, F>,
    });
    for _ in 0..helpers {
        let s = Arc::clone(&shared);
        rayon::spawn(move || s.work());
    }
    shared.work();
    // Every chunk is claimed; wait for those still running elsewhere.
    let mut spins = 0u32;
    while shared.done.load(Ordering::Acquire) < chunks {
        if spins < 1 << 12 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
    let panic = shared
        .panic
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(p) = panic {
        resume_unwind(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_once_with_its_index() {
        for (len, chunk) in [(0, 4), (1, 4), (10, 3), (1000, 7), (64, 64), (65, 64)] {
            let mut out = vec![0usize; len];
            let calls = AtomicUsize::new(0);
            par_chunks_mut(&mut out, chunk, |i, c| {
                calls.fetch_add(1, Ordering::Relaxed);
                for (k, v) in c.iter_mut().enumerate() {
                    *v += i * chunk + k + 1;
                }
            });
            let want: Vec<usize> = (1..=len).collect();
            assert_eq!(out, want, "len {len} chunk {chunk}");
            assert_eq!(calls.into_inner(), len.div_ceil(chunk));
        }
    }

    #[test]
    fn runs_inside_the_pool_and_back_to_back() {
        // From a pool thread (as under burn-flex's own parallel ops) and many
        // times in a row, when helpers may start after the call returned.
        let total: usize = rayon::scope(|_| {
            (0..2000)
                .map(|r| {
                    let mut out = vec![1usize; 97];
                    par_chunks_mut(&mut out, 10, |i, c| c.iter_mut().for_each(|v| *v += i + r));
                    out.iter().sum::<usize>()
                })
                .sum()
        });
        // Element k ends at 1 + k / 10 + r: 97 + 423 + 97 r per call.
        assert_eq!(total, (0..2000).map(|r| 520 + 97 * r).sum::<usize>());
    }

    #[test]
    fn a_panic_in_a_chunk_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            let mut out = vec![0u8; 100];
            par_chunks_mut(&mut out, 10, |i, _| assert_ne!(i, 7, "chunk seven"));
        });
        let p = r.expect_err("the panic is resumed");
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.contains("chunk seven"), "{msg}");
    }
}
