//! Merging an adapter into its base weight: `W' = W + scaling * B A`.

/// Adds `scaling * B A` to `w` (`[out, in]` row-major, HF layout), with A `[r, in]`
/// and B `[out, r]` row-major (PEFT layout). Accumulates each row in f64 before one
/// rounding, so the result does not depend on `r`'s summation order.
///
/// Panics when the slices do not have the sizes `out`, `inp` and `r` imply (a
/// programming error: shapes are checked when adapters are loaded).
pub fn merge_into(
    w: &mut [f32],
    out: usize,
    inp: usize,
    a: &[f32],
    b: &[f32],
    r: usize,
    scaling: f64,
) {
    assert_eq!(w.len(), out * inp, "merge: weight size");
    assert_eq!(a.len(), r * inp, "merge: lora_A size");
    assert_eq!(b.len(), out * r, "merge: lora_B size");
    let mut acc = vec![0f64; inp];
    for o in 0..out {
        acc.iter_mut().for_each(|v| *v = 0.0);
        for k in 0..r {
            let bk = b[o * r + k] as f64;
            if bk == 0.0 {
                continue;
            }
            for (v, &ai) in acc.iter_mut().zip(&a[k * inp..(k + 1) * inp]) {
                *v += bk * ai as f64;
            }
        }
        for (wi, v) in w[o * inp..(o + 1) * inp].iter_mut().zip(&acc) {
            *wi = (*wi as f64 + scaling * v) as f32;
        }
    }
}

/// Largest absolute difference between two outputs, and the largest absolute value of
/// the reference, for reporting merge drift as `max_abs / max_ref`.
pub fn drift(merged: &[f32], unmerged: &[f32]) -> (f32, f32) {
    let max_abs = merged
        .iter()
        .zip(unmerged)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let max_ref = unmerged.iter().map(|v| v.abs()).fold(0f32, f32::max);
    (max_abs, max_ref)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_matches_naive_product() {
        let (out, inp, r) = (3, 5, 2);
        let a: Vec<f32> = (0..r * inp).map(|i| i as f32 * 0.1 - 0.3).collect();
        let b: Vec<f32> = (0..out * r).map(|i| 0.5 - i as f32 * 0.2).collect();
        let mut w = vec![1f32; out * inp];
        merge_into(&mut w, out, inp, &a, &b, r, 2.0);
        for o in 0..out {
            for i in 0..inp {
                let ba: f32 = (0..r).map(|k| b[o * r + k] * a[k * inp + i]).sum();
                assert!((w[o * inp + i] - (1.0 + 2.0 * ba)).abs() < 1e-6);
            }
        }
    }
}
