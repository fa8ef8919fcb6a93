//! Running independent parts of a forward at once, each on a single-thread rayon pool
//! of its own (kept for the process), so each part's products and parallel loops stay
//! on its core.

use std::sync::OnceLock;

/// One single-thread pool per thread of the global rayon pool, made on first use
/// (`None` if the threads could not be started).
fn pools() -> Option<&'static [rayon::ThreadPool]> {
    static POOLS: OnceLock<Option<Vec<rayon::ThreadPool>>> = OnceLock::new();
    POOLS
        .get_or_init(|| {
            (0..rayon::current_num_threads())
                .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
                .collect::<Result<Vec<_>, _>>()
                .ok()
        })
        .as_deref()
}

/// `f` over `items`, each on a pool of its own, all at once (in order, one after the
/// other, when there are more items than pools or no pools).
pub(crate) fn run<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let Some(pools) = pools().filter(|p| p.len() >= items.len() && items.len() > 1) else {
        return items.iter().map(&f).collect();
    };
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items[1..]
            .iter()
            .zip(&pools[1..])
            .map(|(item, pool)| scope.spawn(move || pool.install(|| f(item))))
            .collect();
        let mut out = vec![pools[0].install(|| f(&items[0]))];
        for h in handles {
            out.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out
    })
}
