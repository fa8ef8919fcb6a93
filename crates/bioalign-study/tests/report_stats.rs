//! `bioalign_study::stats`: the exact sign-flip p-value of a zero-shot accuracy change
//! against scipy (`scripts/fixtures/gen_study_stats.py`:
//! `scipy.stats.binomtest(b, b + c, 0.5).pvalue`, the exact McNemar test), and against
//! the Monte Carlo swap test of bioalign-metrics on the same outcomes.

use bioalign_metrics::{PermutationConfig, paired_permutation_test};
use bioalign_study::stats::{TestMethod, accuracy_change, exact_sign_flip_p};

#[derive(serde::Deserialize)]
struct Case {
    b: usize,
    c: usize,
    p: f64,
}

#[derive(serde::Deserialize)]
struct Fixture {
    source: String,
    cases: Vec<Case>,
}

#[test]
fn exact_sign_flip_p_equals_scipy_binomtest() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mcnemar_exact.json"
    ))
    .expect("fixture");
    let f: Fixture = serde_json::from_str(&text).expect("fixture parses");
    assert!(f.source.starts_with("scipy"));
    assert!(f.cases.len() >= 10);
    for c in &f.cases {
        let p = exact_sign_flip_p(c.b, c.c);
        assert!(
            (p - c.p).abs() <= 1e-12 * c.p.max(1e-300) + 1e-300,
            "b {} c {}: ours {p}, scipy {}",
            c.b,
            c.c,
            c.p
        );
    }
}

/// Rows where base / tuned are right: `both` right by both, `b` only by tuned, `c` only
/// by base, `none` by neither.
fn outcomes(both: usize, b: usize, c: usize, none: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let n = both + b + c + none;
    let labels = vec![1usize; n];
    let mut base = Vec::with_capacity(n);
    let mut tuned = Vec::with_capacity(n);
    for (k, (pb, pt)) in [(both, (1, 1)), (b, (0, 1)), (c, (1, 0)), (none, (0, 0))] {
        for _ in 0..k {
            base.push(pb);
            tuned.push(pt);
        }
    }
    (labels, base, tuned)
}

#[test]
fn accuracy_change_p_matches_the_monte_carlo_swap_test() {
    for (both, b, c, none) in [(50, 14, 6, 30), (100, 9, 9, 40), (20, 30, 10, 5)] {
        let (labels, base, tuned) = outcomes(both, b, c, none);
        let ch = accuracy_change(&labels, &base, &tuned, None).unwrap();
        assert_eq!(ch.method, TestMethod::ExactSignFlip);
        let n = labels.len() as f64;
        assert!((ch.diff - (b as f64 - c as f64) / n).abs() < 1e-12);
        let right = |p: &[usize]| -> Vec<u8> {
            labels
                .iter()
                .zip(p)
                .map(|(l, q)| u8::from(l == q))
                .collect()
        };
        let acc = |v: &[u8]| Ok(v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64);
        let mc = paired_permutation_test(
            &right(&tuned),
            &right(&base),
            &PermutationConfig {
                n_permutations: 20_000,
                seed: 5,
            },
            acc,
        )
        .unwrap();
        let p = ch.p_value.unwrap();
        // Monte Carlo standard error at 20000 draws is at most 0.0036.
        assert!(
            (mc.p_value - p).abs() < 0.015,
            "{both} {b} {c} {none}: exact {p}, Monte Carlo {}",
            mc.p_value
        );
    }
}
