//! Bad input is a clear error, never a panic (issue 6, "Done when").

use bioalign_metrics::*;
use ndarray::Array2;

fn data(n: usize, d: usize) -> (Array2<f32>, Vec<usize>) {
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        ((i * 7 + j * 5) % 13) as f32 + 1.0 + (i % 2) as f32
    });
    let labels = (0..n).map(|i| i % 2).collect();
    (x, labels)
}

#[test]
fn nan_rows_are_reported_with_their_position() {
    let (mut x, labels) = data(40, 6);
    x[[17, 4]] = f32::NAN;
    let cfg = SuiteConfig::reference();
    for err in [
        kg_separation(x.view(), &labels).unwrap_err(),
        linear_probe(x.view(), &labels, &ProbeConfig::default()).unwrap_err(),
        silhouette_score(x.view(), &labels, Distance::Cosine).unwrap_err(),
        pca(x.view(), 2).unwrap_err(),
        tsne(x.view(), &TsneConfig::default()).unwrap_err(),
        evaluate(x.view(), &labels, &cfg).unwrap_err(),
        linear_cka(x.view(), x.view()).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    row: 17,
                    col: 4,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("row 17"), "{err}");
    }
}

#[test]
fn length_mismatch_names_both_lengths() {
    let (x, labels) = data(40, 6);
    let short = &labels[..39];
    for err in [
        kg_separation(x.view(), short).unwrap_err(),
        linear_probe(x.view(), short, &ProbeConfig::default()).unwrap_err(),
        silhouette_score(x.view(), short, Distance::Euclidean).unwrap_err(),
        roc_auc(short, &[0.5; 40]).unwrap_err(),
        accuracy(short, &labels).unwrap_err(),
    ] {
        assert!(matches!(err, Error::LengthMismatch { .. }), "{err:?}");
        assert!(
            err.to_string().contains("39") && err.to_string().contains("40"),
            "{err}"
        );
    }
}

#[test]
fn one_class_only_is_an_error() {
    let (x, _) = data(40, 6);
    let ones = vec![1usize; 40];
    for err in [
        kg_separation(x.view(), &ones).unwrap_err(),
        linear_probe(x.view(), &ones, &ProbeConfig::default()).unwrap_err(),
        linear_probe_cv(x.view(), &ones, &ProbeConfig::default()).unwrap_err(),
        silhouette_score(x.view(), &ones, Distance::Cosine).unwrap_err(),
        roc_auc(&ones, &[0.3; 40]).unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::TooFewClasses { found: 1, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn too_few_rows_for_the_split_or_the_folds_is_an_error() {
    let (x, labels) = data(4, 3);
    // 4 rows: the 2-row test side holds one class only after the seed-42 split
    // or the split cannot be made; either way an error, not a panic
    assert!(linear_probe(x.view(), &labels, &ProbeConfig::default()).is_err());
    let (x1, _) = data(1, 3);
    assert!(matches!(
        linear_probe(x1.view(), &[0], &ProbeConfig::default()),
        Err(Error::TooFewClasses { .. })
    ));
    assert!(matches!(
        train_test_split(1, 0.3, 42),
        Err(Error::TooFewSamples { found: 1, .. })
    ));
    // 5 folds need 5 rows per class
    let (x8, l8) = data(8, 3);
    assert!(matches!(
        linear_probe_cv(x8.view(), &l8, &ProbeConfig::default()),
        Err(Error::ClassTooSmall {
            count: 4,
            needed: 5,
            ..
        })
    ));
    // t-SNE perplexity 30 needs 91 rows
    let (x40, _) = data(40, 3);
    assert!(matches!(
        tsne(x40.view(), &TsneConfig::default()),
        Err(Error::TooFewSamples { found: 40, .. })
    ));
}

#[test]
fn zero_norm_rows_and_bad_configs_are_errors() {
    let (mut x, labels) = data(20, 4);
    x.row_mut(6).fill(0.0);
    assert!(matches!(
        kg_separation(x.view(), &labels),
        Err(Error::ZeroNorm { row: 6, .. })
    ));
    assert!(matches!(
        silhouette_score(x.view(), &labels, Distance::Cosine),
        Err(Error::ZeroNorm { row: 6, .. })
    ));
    let bad = BootstrapConfig {
        confidence: 1.5,
        ..BootstrapConfig::default()
    };
    assert!(matches!(
        bootstrap_ci(10, &bad, |_| Ok(0.0)),
        Err(Error::InvalidParam {
            field: "confidence",
            ..
        })
    ));
    let bad = TsneConfig {
        perplexity: f64::NAN,
        ..TsneConfig::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(Error::InvalidParam {
            field: "perplexity",
            ..
        })
    ));
    let empty = Array2::<f32>::zeros((0, 4));
    assert!(matches!(
        kg_separation(empty.view(), &[]),
        Err(Error::Empty { .. })
    ));
}
