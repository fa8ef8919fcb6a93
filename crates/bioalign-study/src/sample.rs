//! Seeded row sampling that picks exactly the rows pandas picks.
//!
//! The reference study evaluated `df.sample(n=500, random_state=42)`. pandas draws it
//! with numpy's legacy `RandomState(seed).choice(len(df), size=n, replace=False)`, which
//! is `RandomState(seed).permutation(len(df))[:n]`; [`sample_rows`] returns the same
//! indices in the same order (checked against pandas by
//! `scripts/fixtures/gen_study_sample.py`).

use bioalign_metrics::NumpyRandomState;

use crate::error::{Result, invalid};

/// `df.sample(n=k, random_state=seed).index` for a frame of `n` rows with the default
/// index: `k` distinct row indices, in pandas' order. With `k >= n`, every row in
/// pandas' shuffled order (pandas would refuse; here "all if fewer").
///
/// Errors: a seed past `u32::MAX` (numpy's legacy seeding takes 32 bits).
///
/// ```
/// let rows = bioalign_study::sample_rows(10, 3, 42)?;
/// assert_eq!(rows, vec![8, 1, 5]); // np.random.RandomState(42).permutation(10)[:3]
/// # Ok::<(), bioalign_study::Error>(())
/// ```
pub fn sample_rows(n: usize, k: usize, seed: u64) -> Result<Vec<usize>> {
    let seed = u32::try_from(seed).map_err(|_| invalid("seed", seed, "at most 4294967295"))?;
    let mut perm = NumpyRandomState::new(seed).permutation(n);
    perm.truncate(k.min(n));
    Ok(perm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_distinct_and_capped() {
        let rows = sample_rows(50, 20, 7).unwrap();
        assert_eq!(rows.len(), 20);
        let mut s = rows.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 20, "rows repeat");
        assert!(rows.iter().all(|&r| r < 50));
        let all = sample_rows(5, 500, 42).unwrap();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        assert_ne!(sample_rows(50, 20, 8).unwrap(), rows, "seed ignored");
        assert!(sample_rows(5, 2, u64::from(u32::MAX) + 1).is_err());
    }
}
