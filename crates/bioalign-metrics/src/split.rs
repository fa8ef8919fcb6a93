//! Train/test splits and stratified folds that reproduce scikit-learn's.
//!
//! scikit-learn draws its splits from numpy's legacy `RandomState` (MT19937).
//! [`NumpyRandomState`] reimplements the parts it uses (seeding with a 32-bit
//! integer, `permutation`, `shuffle`), so [`train_test_split`] returns exactly
//! the indices of `sklearn.model_selection.train_test_split(test_size=f,
//! random_state=seed)` and [`stratified_k_fold`] those of
//! `StratifiedKFold(n_splits=k, shuffle=..., random_state=seed)`; the fixtures
//! check both against scikit-learn 1.9 / numpy 2.4.

use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::{Error, Result, invalid};

const N: usize = 624;
const M: usize = 397;

/// numpy's legacy `RandomState` generator (MT19937), seeded from a 32-bit integer.
///
/// ```
/// use bioalign_metrics::NumpyRandomState;
/// // np.random.RandomState(42).permutation(10)
/// let p = NumpyRandomState::new(42).permutation(10);
/// assert_eq!(p, vec![8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
/// ```
#[derive(Clone)]
pub struct NumpyRandomState {
    mt: [u32; N],
    pos: usize,
}

impl std::fmt::Debug for NumpyRandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumpyRandomState")
            .field("pos", &self.pos)
            .finish()
    }
}

impl NumpyRandomState {
    /// `np.random.RandomState(seed)` (numpy's `init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; N];
        mt[0] = seed;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Self { mt, pos: N }
    }

    fn generate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..N {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % N] & LOWER);
            let mut v = self.mt[(i + M) % N] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= MATRIX_A;
            }
            self.mt[i] = v;
        }
        self.pos = 0;
    }

    /// The next 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.generate();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in `0..=max` by masked rejection (numpy's `random_interval`).
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        if max <= u64::from(u32::MAX) {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let hi = u64::from(self.next_u32());
            let v = ((hi << 32) | u64::from(self.next_u32())) & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// Shuffles `v` in place as `RandomState.shuffle` does (Fisher-Yates from the end).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.random_interval(i as u64) as usize;
            v.swap(i, j);
        }
    }

    /// `RandomState.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v
    }
}

/// Row indices of a train/test split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Rows to fit on.
    pub train: Vec<usize>,
    /// Rows to evaluate on.
    pub test: Vec<usize>,
}

/// `sklearn.model_selection.train_test_split(range(n), test_size=test_fraction,
/// random_state=seed)`: `ceil(test_fraction * n)` test rows, the rest train, in
/// scikit-learn's order.
///
/// Errors: `test_fraction` outside (0, 1), or an empty train or test side.
///
/// ```
/// let s = bioalign_metrics::train_test_split(10, 0.3, 42)?;
/// assert_eq!(s.test, vec![8, 1, 5]);
/// assert_eq!(s.train, vec![0, 7, 2, 9, 4, 3, 6]);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn train_test_split(n: usize, test_fraction: f64, seed: u32) -> Result<Split> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(invalid(
            "test_fraction",
            test_fraction,
            "a number in (0, 1)",
        ));
    }
    let n_test = (test_fraction * n as f64).ceil() as usize;
    if n_test == 0 || n_test >= n {
        return Err(Error::TooFewSamples {
            what: "train/test split (both sides need a row)",
            needed: 2,
            found: n,
        });
    }
    let perm = NumpyRandomState::new(seed).permutation(n);
    Ok(Split {
        test: perm[..n_test].to_vec(),
        train: perm[n_test..].to_vec(),
    })
}

/// `StratifiedKFold(n_splits=k, shuffle=seed.is_some(), random_state=seed).split(X, labels)`:
/// each class is dealt round-robin over the folds, so fold sizes per class differ by at most one.
///
/// Errors: `k < 2`, or a class with fewer than `k` rows (scikit-learn only
/// warns; a fold without a class cannot give a ROC-AUC).
///
/// ```
/// let folds = bioalign_metrics::stratified_k_fold(&[0, 0, 1, 1, 0, 1], 3, None)?;
/// assert_eq!(folds[0].test, vec![0, 2]);
/// assert_eq!(folds[0].train, vec![1, 3, 4, 5]);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn stratified_k_fold(labels: &[usize], k: usize, seed: Option<u32>) -> Result<Vec<Split>> {
    if k < 2 {
        return Err(invalid("folds", k, "at least 2"));
    }
    if labels.is_empty() {
        return Err(Error::Empty {
            what: "stratified k-fold",
        });
    }
    // classes numbered in order of first appearance, as scikit-learn encodes them
    let mut first: Vec<usize> = Vec::new();
    let encoded: Vec<usize> = labels
        .iter()
        .map(|l| match first.iter().position(|f| f == l) {
            Some(p) => p,
            None => {
                first.push(*l);
                first.len() - 1
            }
        })
        .collect();
    let n_classes = first.len();
    if n_classes < 2 {
        return Err(Error::TooFewClasses {
            what: "stratified k-fold",
            needed: 2,
            found: n_classes,
        });
    }
    let mut counts = vec![0usize; n_classes];
    for &c in &encoded {
        counts[c] += 1;
    }
    for (c, &count) in counts.iter().enumerate() {
        if count < k {
            return Err(Error::ClassTooSmall {
                what: "stratified k-fold",
                class: first[c],
                count,
                needed: k,
            });
        }
    }
    let mut order = encoded.clone();
    order.sort_unstable();
    // allocation[c][f]: rows of class c in fold f (bincount of order[f::k])
    let mut allocation = vec![vec![0usize; k]; n_classes];
    for (i, &c) in order.iter().enumerate() {
        allocation[c][i % k] += 1;
    }
    let mut rng = seed.map(NumpyRandomState::new);
    let mut test_fold = vec![0usize; labels.len()];
    for (c, per_fold) in allocation.iter().enumerate() {
        let mut folds_for_class: Vec<usize> = per_fold
            .iter()
            .enumerate()
            .flat_map(|(f, &count)| std::iter::repeat_n(f, count))
            .collect();
        if let Some(rng) = rng.as_mut() {
            rng.shuffle(&mut folds_for_class);
        }
        let mut it = folds_for_class.into_iter();
        for (i, &e) in encoded.iter().enumerate() {
            if e == c {
                test_fold[i] = it.next().unwrap_or(0);
            }
        }
    }
    check::same_len("stratified k-fold", labels.len(), test_fold.len())?;
    Ok((0..k)
        .map(|f| {
            let (test, train): (Vec<usize>, Vec<usize>) =
                (0..labels.len()).partition(|&i| test_fold[i] == f);
            Split { train, test }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_output() {
        // first outputs of the reference mt19937ar.c for init_genrand(5489)
        let mut r = NumpyRandomState::new(5489);
        assert_eq!(r.next_u32(), 3_499_211_612);
        assert_eq!(r.next_u32(), 581_869_302);
        assert_eq!(r.next_u32(), 3_890_346_734);
    }

    #[test]
    fn split_rejects_bad_fractions_and_tiny_inputs() {
        assert!(matches!(
            train_test_split(10, 0.0, 1),
            Err(Error::InvalidParam { .. })
        ));
        assert!(matches!(
            train_test_split(10, 1.0, 1),
            Err(Error::InvalidParam { .. })
        ));
        assert!(matches!(
            train_test_split(1, 0.3, 1),
            Err(Error::TooFewSamples { .. })
        ));
        let s = train_test_split(2, 0.3, 1).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (1, 1));
    }

    #[test]
    fn folds_partition_the_rows() {
        let labels: Vec<usize> = (0..53).map(|i| usize::from(i % 4 == 0)).collect();
        for seed in [None, Some(3)] {
            let folds = stratified_k_fold(&labels, 5, seed).unwrap();
            let mut seen = vec![0; labels.len()];
            for f in &folds {
                for &i in &f.test {
                    seen[i] += 1;
                }
                assert_eq!(f.test.len() + f.train.len(), labels.len());
            }
            assert!(seen.iter().all(|&c| c == 1));
        }
        assert!(matches!(
            stratified_k_fold(&[0, 0, 0, 1], 2, None),
            Err(Error::ClassTooSmall {
                class: 1,
                count: 1,
                ..
            })
        ));
    }
}
