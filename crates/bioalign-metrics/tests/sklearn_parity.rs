//! Parity with scikit-learn / numpy / scipy on the fixtures written by
//! `scripts/fixtures/gen_metrics_sklearn.py` (scikit-learn 1.9.1, numpy 2.4.6,
//! scipy 1.17.1; each fixture's `source` field records the versions).

use std::path::{Path, PathBuf};

use bioalign_metrics::*;
use ndarray::Array2;
use serde_json::Value;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const CASES: [&str; 4] = ["small_balanced", "imbalanced", "wide", "medium_imbalanced"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json(name: &str) -> std::result::Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(fixture(
        name,
    ))?)?)
}

struct Case {
    x: Array2<f32>,
    labels: Vec<usize>,
    v: Value,
}

fn case(name: &str) -> std::result::Result<Case, Box<dyn std::error::Error>> {
    let path = fixture(&format!("case_{name}.npy"));
    let x = NpyArray::read(&path)?.into_f32_2d(&path)?;
    let v = json(&format!("case_{name}.json"))?;
    let labels = usizes(&v["labels"]);
    assert_eq!(x.nrows(), labels.len());
    Ok(Case { x, labels, v })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(f).collect())
        .unwrap_or_default()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_u64().unwrap_or(u64::MAX) as usize)
                .collect()
        })
        .unwrap_or_default()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1e-300);
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:.17e}, want {want:.17e} (diff {:.3e}, tol {tol:.3e})",
        (got - want).abs()
    );
}

#[test]
fn kg_separation_matches_full_cosine_matrices() -> TestResult {
    // reference: sklearn.metrics.pairwise.cosine_similarity per class, .mean() (float64)
    for name in CASES {
        let c = case(name)?;
        let want = &c.v["kg_separation"];
        let s = kg_separation(c.x.view(), &c.labels)?;
        close(s.mean_cos_true, f(&want["mean_cos_true"]), 1e-9, name);
        close(s.mean_cos_false, f(&want["mean_cos_false"]), 1e-9, name);
        close(s.separation, f(&want["separation"]), 1e-6, name);
        close(s.signed, f(&want["signed"]), 1e-6, name);
        close(
            s.offdiag_mean_cos_true,
            f(&want["offdiag_mean_cos_true"]),
            1e-9,
            name,
        );
        close(s.offdiag_signed, f(&want["offdiag_signed"]), 1e-6, name);
        assert_eq!(s.n_true + s.n_false, c.labels.len());
    }
    Ok(())
}

#[test]
fn silhouette_matches_sklearn() -> TestResult {
    // reference: sklearn.metrics.silhouette_score / silhouette_samples on float64 data
    for name in CASES {
        let c = case(name)?;
        let cos = silhouette_score(c.x.view(), &c.labels, Distance::Cosine)?;
        let euc = silhouette_score(c.x.view(), &c.labels, Distance::Euclidean)?;
        let both = silhouette_both(c.x.view(), &c.labels)?;
        let want_cos = f(&c.v["silhouette_cosine"]);
        let want_euc = f(&c.v["silhouette_euclidean"]);
        assert!(
            (cos - want_cos).abs() < 1e-6,
            "{name}: cosine {cos} vs {want_cos}"
        );
        assert!(
            (euc - want_euc).abs() < 1e-6,
            "{name}: euclidean {euc} vs {want_euc}"
        );
        assert!((both.cosine - cos).abs() < 1e-12 && (both.euclidean - euc).abs() < 1e-12);
        let samples = silhouette_samples(c.x.view(), &c.labels, Distance::Euclidean)?;
        for (g, w) in samples
            .iter()
            .zip(floats(&c.v["silhouette_samples_euclidean_first10"]))
        {
            assert!((g - w).abs() < 1e-6, "{name}: sample {g} vs {w}");
        }
        // 2-D input through the f64 and the precomputed paths
        let x2 = c.x.slice(ndarray::s![.., ..2]).mapv(f64::from);
        let want2 = f(&c.v["silhouette_2d_euclidean"]);
        let s2 = silhouette_score_f64(x2.view(), &c.labels, Distance::Euclidean)?;
        let p2 = silhouette_score_precomputed(euclidean_distances(x2.view()).view(), &c.labels)?;
        assert!((s2 - want2).abs() < 1e-6, "{name}: 2-D {s2} vs {want2}");
        assert!(
            (p2 - want2).abs() < 1e-6,
            "{name}: precomputed {p2} vs {want2}"
        );
    }
    Ok(())
}

#[test]
fn split_and_folds_are_sklearns() -> TestResult {
    // reference: np.random.RandomState(seed).permutation, train_test_split(test_size=0.3,
    // random_state=42), StratifiedKFold(5) and StratifiedKFold(5, shuffle=True, random_state=42)
    let misc = json("misc.json")?;
    for p in misc["randomstate_permutations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let seed = p["seed"].as_u64().unwrap_or(0) as u32;
        let n = p["n"].as_u64().unwrap_or(0) as usize;
        assert_eq!(
            NumpyRandomState::new(seed).permutation(n),
            usizes(&p["perm"]),
            "seed {seed}, n {n}"
        );
    }
    for name in CASES {
        let c = case(name)?;
        let n = c.labels.len();
        assert_eq!(
            NumpyRandomState::new(42).permutation(n),
            usizes(&c.v["randomstate42_permutation"])
        );
        let split = train_test_split(n, 0.3, 42)?;
        assert_eq!(split.train, usizes(&c.v["split_train"]), "{name}");
        assert_eq!(split.test, usizes(&c.v["split_test"]), "{name}");
        for (key, seed) in [("cv5", None), ("cv5_shuffle42", Some(42))] {
            let folds = stratified_k_fold(&c.labels, 5, seed)?;
            let want = c.v[format!("{key}_test_folds")]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(folds.len(), want.len());
            for (fold, w) in folds.iter().zip(&want) {
                assert_eq!(fold.test, usizes(w), "{name} {key}");
            }
        }
    }
    Ok(())
}

#[test]
fn probe_is_within_one_test_row_of_sklearn() -> TestResult {
    // reference: LogisticRegression(C=1, lbfgs, max_iter=1000).fit on the same split
    for name in CASES {
        let c = case(name)?;
        let r = linear_probe(c.x.view(), &c.labels, &ProbeConfig::default())?;
        let n_test = r.test_indices.len() as f64;
        let want = f(&c.v["probe_accuracy"]);
        let rows_off = ((r.accuracy - want) * n_test).abs();
        assert!(
            rows_off <= 1.0 + 1e-9,
            "{name}: accuracy {} vs sklearn {want} ({rows_off} rows)",
            r.accuracy
        );
        let want_auc = f(&c.v["probe_roc_auc"]);
        println!(
            "{name}: probe accuracy {:.6} vs sklearn {want:.6}, ROC-AUC {:.6} vs {want_auc:.6}",
            r.accuracy, r.roc_auc
        );
        assert!(
            (r.roc_auc - want_auc).abs() < 1e-3,
            "{name}: AUC {} vs {want_auc}",
            r.roc_auc
        );
        let cv = linear_probe_cv(c.x.view(), &c.labels, &ProbeConfig::default())?;
        let folds = stratified_k_fold(&c.labels, 5, None)?;
        for ((acc, want), fold) in cv
            .fold_accuracy
            .iter()
            .zip(floats(&c.v["cv5_accuracy"]))
            .zip(&folds)
        {
            let off = ((acc - want) * fold.test.len() as f64).abs();
            assert!(
                off <= 1.0 + 1e-9,
                "{name}: CV fold accuracy {acc} vs {want}"
            );
        }
    }
    Ok(())
}

#[test]
fn classification_metrics_are_exact() -> TestResult {
    // reference: sklearn.metrics accuracy_score, confusion_matrix,
    // precision_recall_fscore_support (zero_division 0 and 1), roc_auc_score
    let v = json("classification.json")?;
    for c in v["cases"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("?");
        let yt = usizes(&c["y_true"]);
        let yp = usizes(&c["y_pred"]);
        assert_eq!(accuracy(&yt, &yp)?, f(&c["accuracy"]), "{name}");
        let cm = confusion_matrix(&yt, &yp)?;
        assert_eq!(cm.labels, usizes(&c["labels"]), "{name}");
        let want_cm: Vec<Vec<usize>> = c["confusion_matrix"]
            .as_array()
            .into_iter()
            .flatten()
            .map(usizes)
            .collect();
        assert_eq!(cm.counts, want_cm, "{name}");
        for (key, zd) in [("zd0", ZeroDivision::Zero), ("zd1", ZeroDivision::One)] {
            let r = classification_report(&yt, &yp, zd)?;
            let got =
                |g: fn(&Prf) -> f64| r.per_class.iter().map(|c| g(&c.scores)).collect::<Vec<_>>();
            assert_eq!(
                got(|p| p.precision),
                floats(&c[format!("{key}_precision")]),
                "{name} {key}"
            );
            assert_eq!(
                got(|p| p.recall),
                floats(&c[format!("{key}_recall")]),
                "{name} {key}"
            );
            assert_eq!(
                got(|p| p.f1),
                floats(&c[format!("{key}_f1")]),
                "{name} {key}"
            );
            let support: Vec<usize> = r.per_class.iter().map(|c| c.support).collect();
            assert_eq!(support, usizes(&c["support"]));
            for (avg, p) in [
                ("macro", r.macro_avg),
                ("weighted", r.weighted_avg),
                ("micro", r.micro_avg),
            ] {
                let want = floats(&c[format!("{key}_{avg}")]);
                assert_eq!(
                    vec![p.precision, p.recall, p.f1],
                    want,
                    "{name} {key} {avg}"
                );
            }
            if let Some(b) = c.get(format!("{key}_binary")) {
                let pos = r.class(1).ok_or("no class 1")?.scores;
                assert_eq!(
                    vec![pos.precision, pos.recall, pos.f1],
                    floats(b),
                    "{name} {key} binary"
                );
            }
        }
        if let Some(scores) = c.get("scores") {
            let auc = roc_auc(&yt, &floats(scores))?;
            assert!(
                (auc - f(&c["roc_auc"])).abs() < 1e-9,
                "{name}: {auc} vs {}",
                f(&c["roc_auc"])
            );
        }
    }
    Ok(())
}

#[test]
fn link_prediction_auc_matches_sklearn() -> TestResult {
    // reference: roc_auc_score(y, cosine(first half of columns, second half)) in numpy float64
    for name in CASES {
        let c = case(name)?;
        let half = c.x.ncols() / 2;
        let g = c.x.slice(ndarray::s![.., ..half]);
        let d = c.x.slice(ndarray::s![.., half..2 * half]);
        let lp = link_prediction(g, d, &c.labels)?;
        let want = f(&c.v["link_prediction_auc"]);
        assert!(
            (lp.roc_auc - want).abs() < 1e-9,
            "{name}: {} vs {want}",
            lp.roc_auc
        );
    }
    Ok(())
}

#[test]
fn percentile_spearman_and_cka_match_numpy_scipy() -> TestResult {
    // reference: numpy.percentile (linear), scipy.stats.spearmanr, linear CKA in numpy float64
    let m = json("misc.json")?;
    let values = floats(&m["percentile_values"]);
    for (q, want) in m["percentiles"].as_object().into_iter().flatten() {
        let mut v = values.clone();
        let got = percentile(&mut v, q.parse()?);
        assert!(
            (got - f(want)).abs() <= 1e-15 * f(want).abs().max(1.0),
            "q {q}: {got} vs {want}"
        );
    }
    let rho = spearman(&floats(&m["spearman_a"]), &floats(&m["spearman_b"]))?;
    close(rho, f(&m["spearman"]), 1e-12, "spearman");
    let px = fixture("cka_x.npy");
    let py = fixture("cka_y.npy");
    let x = NpyArray::read(&px)?.into_f32_2d(&px)?;
    let ya = NpyArray::read(&py)?;
    assert!(matches!(ya.data, NpyData::F64(_)));
    let y = ya.into_f32_2d(&py)?;
    close(linear_cka(x.view(), y.view())?, f(&m["cka"]), 1e-6, "CKA");
    Ok(())
}
