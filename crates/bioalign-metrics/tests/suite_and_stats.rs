//! The composed measures: per-layer profiles, bootstrap intervals of KG
//! separation, the paired permutation test's p-value, the whole suite.
//! Data: the committed fixture `case_medium_imbalanced` (from
//! scripts/fixtures/gen_metrics_sklearn.py).

use std::path::Path;

use bioalign_metrics::*;
use ndarray::{Array2, Array3, Axis, stack};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn fixture() -> std::result::Result<(Array2<f32>, Vec<usize>), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let p = dir.join("case_medium_imbalanced.npy");
    let x = NpyArray::read(&p)?.into_f32_2d(&p)?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.join("case_medium_imbalanced.json"),
    )?)?;
    let labels = v["labels"]
        .as_array()
        .ok_or("no labels")?
        .iter()
        .map(|l| l.as_u64().unwrap_or(9) as usize)
        .collect();
    Ok((x, labels))
}

#[test]
fn layer_profile_equals_the_per_layer_calls() -> TestResult {
    let (x, labels) = fixture()?;
    let noisy = x.mapv(|v| v * 0.5 + 0.25);
    let layers: Array3<f32> = stack(Axis(0), &[noisy.view(), x.view()])?;
    let profile = layer_profile(layers.view(), &labels, &ProbeConfig::default())?;
    assert_eq!(profile.len(), 2);
    for (layer, data) in [(0, &noisy), (1, &x)] {
        let m = &profile[layer];
        assert_eq!(m.layer, layer);
        assert_eq!(m.kg_separation, kg_separation(data.view(), &labels)?);
        assert_eq!(
            m.probe.accuracy,
            linear_probe(data.view(), &labels, &ProbeConfig::default())?.accuracy
        );
        assert_eq!(m.silhouette, silhouette_both(data.view(), &labels)?);
    }
    Ok(())
}

#[test]
fn kg_separation_interval_is_seeded_and_covers_the_estimate() -> TestResult {
    let (x, labels) = fixture()?;
    let cfg = BootstrapConfig {
        n_resamples: 300,
        ..BootstrapConfig::default()
    };
    let [sep, signed] = kg_separation_ci(x.view(), &labels, &cfg)?;
    let s = kg_separation(x.view(), &labels)?;
    assert!((sep.estimate - s.separation).abs() < 1e-12);
    assert!((signed.estimate - s.signed).abs() < 1e-12);
    assert!(sep.lower < sep.upper && signed.lower < signed.upper);
    assert!(signed.lower <= s.signed && s.signed <= signed.upper);
    assert_eq!(sep.n_failed, 0);
    assert_eq!([sep, signed], kg_separation_ci(x.view(), &labels, &cfg)?);
    // the Gram-matrix shortcut gives the interval that recomputing KG separation on
    // every resample (same seed, same stratified resamples) gives
    let manual = bootstrap_ci_stratified(&labels, &cfg, |rows| {
        let xr = x.select(Axis(0), rows);
        let lr: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
        Ok(kg_separation(xr.view(), &lr)?.signed)
    })?;
    assert!(
        (manual.lower - signed.lower).abs() < 1e-12,
        "{manual:?} vs {signed:?}"
    );
    assert!(
        (manual.upper - signed.upper).abs() < 1e-12,
        "{manual:?} vs {signed:?}"
    );
    Ok(())
}

#[test]
fn permutation_p_value_is_count_plus_one_over_n_plus_one() -> TestResult {
    // a right and b wrong on all 30 rows: only swapping all rows or none reaches
    // |diff| = 1, probability 2 / 2^30, so count = 0 and p = 1 / (n + 1)
    let a = vec![1u8; 30];
    let b = vec![0u8; 30];
    let acc = |v: &[u8]| Ok(v.iter().map(|&c| f64::from(c)).sum::<f64>() / v.len() as f64);
    let cfg = PermutationConfig {
        n_permutations: 499,
        seed: 7,
    };
    let t = paired_permutation_test(&a, &b, &cfg, acc)?;
    assert_eq!((t.observed, t.count), (1.0, 0));
    assert_eq!(t.p_value, 1.0 / 500.0);
    // no difference in distribution: rows where a and b agree carry no signal, and a
    // balanced disagreement gives a large p-value
    let a: Vec<u8> = (0..40).map(|i| u8::from(i % 2 == 0)).collect();
    let b: Vec<u8> = (0..40).map(|i| u8::from(i % 2 == 1)).collect();
    let t = paired_permutation_test(&a, &b, &cfg, acc)?;
    assert_eq!(t.observed, 0.0);
    assert_eq!(t.p_value, 1.0);
    assert!(matches!(
        paired_permutation_test(&a, &b[..39], &cfg, acc),
        Err(Error::LengthMismatch { .. })
    ));
    Ok(())
}

#[test]
fn suite_report_is_consistent_with_the_single_measures() -> TestResult {
    let (x, labels) = fixture()?;
    let cfg = SuiteConfig {
        tsne: TsneConfig {
            max_iter: 300,
            ..TsneConfig::default()
        },
        bootstrap: Some(BootstrapConfig {
            n_resamples: 100,
            ..BootstrapConfig::default()
        }),
        ..SuiteConfig::default()
    };
    let r = evaluate(x.view(), &labels, &cfg)?;
    assert_eq!(r.kg_separation, kg_separation(x.view(), &labels)?);
    let p = linear_probe(x.view(), &labels, &cfg.probe)?;
    assert_eq!((r.probe.accuracy, r.probe.roc_auc), (p.accuracy, p.roc_auc));
    assert_eq!(
        r.probe_confusion.counts.iter().flatten().sum::<usize>(),
        p.test_indices.len()
    );
    assert_eq!(r.silhouette, Some(silhouette_both(x.view(), &labels)?));
    assert_eq!(r.projection_rows, 400);
    assert_eq!(r.tsne_perplexity, Some(30.0));
    assert_eq!(r.tsne.len(), 400);
    let t = tsne(x.slice(ndarray::s![..400, ..]), &cfg.tsne)?;
    let want = silhouette_score_f64(t.view(), &labels[..400], Distance::Euclidean)?;
    assert!(
        (r.silhouette_tsne - want).abs() < 1e-12,
        "{} vs {want}",
        r.silhouette_tsne
    );
    let cv = r.probe_cv.ok_or("no CV")?;
    assert_eq!(cv.fold_accuracy.len(), 5);
    let json = serde_json::to_string(&r.kg_separation)?;
    let back: KgSeparation = serde_json::from_str(&json)?;
    assert_eq!(back, r.kg_separation);
    Ok(())
}

/// Fewer projected rows than the perplexity needs (30 needs 91): the suite projects at
/// the largest perplexity they allow, as `tsne` would with that setting, and says so.
#[test]
fn suite_lowers_the_perplexity_for_few_projected_rows() -> TestResult {
    let (x, labels) = fixture()?;
    let cfg = SuiteConfig {
        tsne: TsneConfig {
            max_iter: 250,
            ..TsneConfig::default()
        },
        projection_rows: 40,
        cross_validate: false,
        bootstrap: None,
        ..SuiteConfig::default()
    };
    let r = evaluate(x.view(), &labels, &cfg)?;
    assert_eq!(r.tsne_perplexity, Some(13.0), "(40 - 1) / 3");
    let lowered = TsneConfig {
        perplexity: 13.0,
        ..cfg.tsne.clone()
    };
    let t = tsne(x.slice(ndarray::s![..40, ..]), &lowered)?;
    let want = silhouette_score_f64(t.view(), &labels[..40], Distance::Euclidean)?;
    assert!(
        (r.silhouette_tsne - want).abs() < 1e-12,
        "{} vs {want}",
        r.silhouette_tsne
    );
    Ok(())
}
