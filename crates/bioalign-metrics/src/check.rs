//! Input checks shared by the measures: shapes, finiteness, labels.

use ndarray::ArrayView2;

use crate::error::{Error, Result};

/// Fails unless `x` has at least one row and one column and every value is finite.
pub(crate) fn finite_matrix(what: &'static str, x: ArrayView2<'_, f32>) -> Result<()> {
    if x.nrows() == 0 || x.ncols() == 0 {
        return Err(Error::Empty { what });
    }
    for (row, r) in x.outer_iter().enumerate() {
        if let Some((col, v)) = r.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what,
                row,
                col,
                value: f64::from(*v),
            });
        }
    }
    Ok(())
}

/// Fails unless `found == expected`.
pub(crate) fn same_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(Error::LengthMismatch {
            what,
            expected,
            found,
        });
    }
    Ok(())
}

/// Checks that every label is 0 or 1 and returns the class sizes `[n0, n1]`.
pub(crate) fn binary_labels(what: &'static str, labels: &[usize]) -> Result<[usize; 2]> {
    let mut counts = [0usize; 2];
    for (row, &label) in labels.iter().enumerate() {
        match label {
            0 | 1 => counts[label] += 1,
            _ => return Err(Error::NotBinary { what, row, label }),
        }
    }
    Ok(counts)
}

/// Checks binary labels and that both classes have at least `min` rows.
pub(crate) fn both_classes(what: &'static str, labels: &[usize], min: usize) -> Result<[usize; 2]> {
    let counts = binary_labels(what, labels)?;
    let found = counts.iter().filter(|&&c| c > 0).count();
    if found < 2 {
        return Err(Error::TooFewClasses {
            what,
            needed: 2,
            found,
        });
    }
    for (class, &count) in counts.iter().enumerate() {
        if count < min {
            return Err(Error::ClassTooSmall {
                what,
                class,
                count,
                needed: min,
            });
        }
    }
    Ok(counts)
}

/// The sorted distinct labels and, for each row, the index of its label in that list.
pub(crate) fn encode(labels: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut classes = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let codes = labels
        .iter()
        .map(|l| classes.binary_search(l).unwrap_or(0))
        .collect();
    (classes, codes)
}

/// Fails unless every value of `v` is finite.
pub(crate) fn finite_slice(what: &'static str, v: &[f64]) -> Result<()> {
    if let Some((row, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::NonFinite {
            what,
            row,
            col: 0,
            value: *x,
        });
    }
    Ok(())
}
