//! Scores embeddings from any tool with the BioAlign metric suite.
//!
//! ```text
//! cargo run --release -p bioalign-examples --example metrics -- \
//!     --embeddings emb.safetensors [--tensor NAME] \
//!     --labels test_pairs.csv [--pairs test_pairs.csv] [--compare base.npy] \
//!     --out report.json
//! ```
//!
//! - `--embeddings`: `.safetensors` (f32 / f64 / f16 / bf16; `--tensor` picks
//!   one when the file holds several) or `.npy` (f4 / f8). `[n, d]`, or
//!   `[L, n, d]` for per-layer input: then every layer gets KG separation, probe
//!   and silhouette, and the full suite runs on the last layer.
//! - `--labels`: `.csv` or `.parquet` with a `label` column, or a 1-D `.npy`;
//!   1 = true statement, 0 = false.
//! - `--pairs`: a `.csv` with `GeneSymbol` and `DiseaseName` columns, one row per
//!   embedding row (the reference's `test_pairs.csv` has both these and
//!   `label`). Enables the knowledge-graph measures: link-prediction ROC-AUC and
//!   RSA. Entity embeddings are the mean unit sentence embedding of the rows
//!   that mention the entity (a proxy: entity-only embeddings can be given with
//!   `--gene-tensor` / `--disease-tensor`, safetensors only, row-aligned with
//!   the pairs); RSA compares gene-gene cosine with the Jaccard similarity of
//!   their true-disease sets in the pairs file.
//! - `--compare`: a second embedding file of the same rows (for instance the
//!   base model's); reports linear CKA between the two.
//!
//! - `--plots DIR` (build with `--features plots`): `projection.png` (t-SNE of
//!   the projected rows coloured by label; beside the `--compare` model's when
//!   given), `metrics.png` (estimates with their 95% intervals) and
//!   `probe_confusion.png`.
//!
//! The report is written atomically (bioalign-io).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use bioalign_metrics::{
    BootstrapConfig, LayerMeasures, LinkPrediction, NpyArray, Rsa, SuiteConfig, SuiteReport,
    entity_centroids, evaluate, layer_profile, linear_cka, link_prediction, rsa_spearman,
};
use clap::Parser;
use ndarray::{Array2, Array3, ArrayD, Axis, Ix2, Ix3};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    about = "Embedding-geometry metrics (KG separation, probe, silhouette, KG alignment) with bootstrap CIs"
)]
struct Args {
    /// Embeddings: .safetensors or .npy, [n, d] or [L, n, d].
    #[arg(long)]
    embeddings: PathBuf,
    /// Tensor name inside a .safetensors file (needed when it holds several).
    #[arg(long)]
    tensor: Option<String>,
    /// Labels: .csv / .parquet with a `label` column, or a 1-D .npy.
    #[arg(long)]
    labels: PathBuf,
    /// CSV with GeneSymbol and DiseaseName columns, row-aligned with the embeddings.
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// Tensor of gene-name embeddings in the --embeddings safetensors file (row i = pair i).
    #[arg(long, requires = "pairs")]
    gene_tensor: Option<String>,
    /// Tensor of disease-name embeddings in the --embeddings safetensors file (row i = pair i).
    #[arg(long, requires = "pairs")]
    disease_tensor: Option<String>,
    /// A second embedding file of the same rows (e.g. the base model) for linear CKA.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Tensor name inside the --compare safetensors file.
    #[arg(long)]
    compare_tensor: Option<String>,
    /// Bootstrap resamples for the confidence intervals (0: none).
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Rows projected with t-SNE / PCA (the first ones; the reference used 400).
    #[arg(long, default_value_t = 400)]
    projection_rows: usize,
    /// Skip the stratified 5-fold cross-validation of the probe.
    #[arg(long)]
    no_cv: bool,
    /// At most this many genes enter RSA (pairs grow quadratically).
    #[arg(long, default_value_t = 2000)]
    rsa_max_genes: usize,
    /// Folder for PNG plots (needs the `plots` feature).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Serialize)]
struct Report {
    embeddings: String,
    tensor: Option<String>,
    shape: Vec<usize>,
    labels: String,
    suite: SuiteReport,
    layers: Option<Vec<LayerMeasures>>,
    link_prediction: Option<LinkPredictionReport>,
    rsa: Option<Rsa>,
    cka: Option<f64>,
    seconds: f64,
}

#[derive(Serialize)]
struct LinkPredictionReport {
    /// `entity-tensors` or `sentence-centroids`.
    source: &'static str,
    #[serde(flatten)]
    result: LinkPrediction,
}

fn read_safetensors(path: &Path, name: Option<&str>) -> Result<ArrayD<f32>> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let names = st.names();
            ensure!(
                names.len() == 1,
                "{} holds {} tensors ({}); pick one with --tensor",
                path.display(),
                names.len(),
                names
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            names[0].to_string()
        }
    };
    let t = st
        .tensor(&name)
        .with_context(|| format!("{}: no tensor {name:?}", path.display()))?;
    let data = t.data();
    let values: Vec<f32> = match t.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => bail!(
            "{}: tensor {name:?} has dtype {other:?}, expected a float type",
            path.display()
        ),
    };
    ArrayD::from_shape_vec(t.shape().to_vec(), values)
        .with_context(|| format!("{}: tensor {name:?}", path.display()))
}

fn read_embeddings(path: &Path, tensor: Option<&str>) -> Result<ArrayD<f32>> {
    match extension(path).as_str() {
        "safetensors" => read_safetensors(path, tensor),
        "npy" => {
            let a = NpyArray::read(path)?;
            let shape = a.shape.clone();
            Ok(ArrayD::from_shape_vec(shape, a.to_f32_vec())?)
        }
        other => bail!(
            "{}: unsupported embeddings format {other:?} (.safetensors or .npy)",
            path.display()
        ),
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn parse_label(s: &str, path: &Path, row: usize) -> Result<usize> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "true" => return Ok(1),
        "false" => return Ok(0),
        _ => {}
    }
    if let Ok(v) = t.parse::<usize>() {
        return Ok(v);
    }
    match t.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.fract() == 0.0 => Ok(v as usize),
        _ => bail!(
            "{}: row {row}: label {t:?} is not a class index",
            path.display()
        ),
    }
}

fn read_csv_columns(path: &Path, wanted: &[&str]) -> Result<Vec<Vec<String>>> {
    let mut rdr = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let headers = rdr.headers()?.clone();
    let idx: Vec<usize> = wanted
        .iter()
        .map(|w| {
            headers
                .iter()
                .position(|h| h.trim() == *w)
                .with_context(|| {
                    format!("{}: no column {w:?} (columns: {headers:?})", path.display())
                })
        })
        .collect::<Result<_>>()?;
    let mut cols = vec![Vec::new(); wanted.len()];
    for (row, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), row + 1))?;
        for (c, &i) in idx.iter().enumerate() {
            let v = rec
                .get(i)
                .with_context(|| format!("{}: row {} has no field {i}", path.display(), row + 1))?;
            cols[c].push(v.to_string());
        }
    }
    Ok(cols)
}

fn read_parquet_labels(path: &Path) -> Result<Vec<usize>> {
    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading {}", path.display()))?
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = batch
            .column_by_name("label")
            .with_context(|| format!("{}: no column \"label\"", path.display()))?;
        let ints = arrow::compute::cast(col, &DataType::Int64).with_context(|| {
            format!(
                "{}: column label ({}) is not integer",
                path.display(),
                col.data_type()
            )
        })?;
        let ints = ints
            .as_any()
            .downcast_ref::<Int64Array>()
            .context("cast to Int64 failed")?;
        for i in 0..ints.len() {
            let row = out.len();
            ensure!(
                ints.is_valid(i),
                "{}: row {row}: label is null",
                path.display()
            );
            let v = ints.value(i);
            ensure!(
                v >= 0,
                "{}: row {row}: label {v} is negative",
                path.display()
            );
            out.push(v as usize);
        }
    }
    Ok(out)
}

fn read_labels(path: &Path) -> Result<Vec<usize>> {
    match extension(path).as_str() {
        "csv" => {
            let cols = read_csv_columns(path, &["label"])?;
            cols[0]
                .iter()
                .enumerate()
                .map(|(i, s)| parse_label(s, path, i + 1))
                .collect()
        }
        "parquet" => read_parquet_labels(path),
        "npy" => Ok(NpyArray::read(path)?.into_labels(path)?),
        other => bail!(
            "{}: unsupported labels format {other:?} (.csv, .parquet or .npy)",
            path.display()
        ),
    }
}

fn as_2d(a: ArrayD<f32>, what: &str) -> Result<Array2<f32>> {
    a.into_dimensionality::<Ix2>()
        .with_context(|| format!("{what}: expected a 2-D tensor"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let start = std::time::Instant::now();
    let emb = read_embeddings(&args.embeddings, args.tensor.as_deref())?;
    let shape = emb.shape().to_vec();
    let labels = read_labels(&args.labels)?;
    let (x, layers): (Array2<f32>, Option<Array3<f32>>) = match emb.ndim() {
        2 => (as_2d(emb, "embeddings")?, None),
        3 => {
            let l = emb.into_dimensionality::<Ix3>()?;
            ensure!(l.len_of(Axis(0)) > 0, "embeddings: no layers");
            let last = l.index_axis(Axis(0), l.len_of(Axis(0)) - 1).to_owned();
            (last, Some(l))
        }
        d => bail!("embeddings: expected [n, d] or [L, n, d], found {d} dimensions {shape:?}"),
    };
    ensure!(
        x.nrows() == labels.len(),
        "{} has {} rows but {} has {} labels",
        args.embeddings.display(),
        x.nrows(),
        args.labels.display(),
        labels.len()
    );

    let cfg = SuiteConfig {
        cross_validate: !args.no_cv,
        projection_rows: args.projection_rows,
        bootstrap: (args.resamples > 0).then(|| BootstrapConfig {
            n_resamples: args.resamples,
            ..BootstrapConfig::default()
        }),
        ..SuiteConfig::default()
    };
    let suite = evaluate(x.view(), &labels, &cfg)?;
    let layers = layers
        .map(|l| layer_profile(l.view(), &labels, &cfg.probe))
        .transpose()?;

    let (link, rsa) = match &args.pairs {
        Some(p) => {
            let (lp, rsa) = kg_alignment(&args, p, &x, &labels)?;
            (Some(lp), rsa)
        }
        None => (None, None),
    };
    let compare = match &args.compare {
        Some(c) => {
            let other = as_2d(
                read_embeddings(c, args.compare_tensor.as_deref())?,
                "--compare",
            )?;
            ensure!(
                other.nrows() == x.nrows(),
                "--compare has {} rows, embeddings {}",
                other.nrows(),
                x.nrows()
            );
            Some(other)
        }
        None => None,
    };
    let cka = compare
        .as_ref()
        .map(|other| linear_cka(x.view(), other.view()))
        .transpose()?;
    if let Some(dir) = &args.plots {
        plots(dir, &suite, compare.as_ref(), &labels, &cfg)?;
    }

    let report = Report {
        embeddings: args.embeddings.display().to_string(),
        tensor: args.tensor.clone(),
        shape,
        labels: args.labels.display().to_string(),
        suite,
        layers,
        link_prediction: link,
        rsa,
        cka,
        seconds: start.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&report)?;
    bioalign_io::atomic_write_bytes(&args.out, &json)?;
    let s = &report.suite;
    println!(
        "n={} d={} | KG separation {:.4} (signed {:+.4}, off-diagonal {:+.4}) | probe acc {:.3} AUC {:.3} | silhouette t-SNE {:.3}",
        s.n_rows,
        s.dim,
        s.kg_separation.separation,
        s.kg_separation.signed,
        s.kg_separation.offdiag_signed,
        s.probe.accuracy,
        s.probe.roc_auc,
        s.silhouette_tsne
    );
    if let Some(ci) = s.probe_accuracy_ci {
        println!("probe accuracy 95% CI [{:.3}, {:.3}]", ci.lower, ci.upper);
    }
    if let Some(lp) = &report.link_prediction {
        println!(
            "link prediction ROC-AUC {:.3} ({})",
            lp.result.roc_auc, lp.source
        );
    }
    if let Some(r) = &report.rsa {
        println!("RSA Spearman {:.3} over {} genes", r.spearman, r.n_entities);
    }
    println!(
        "report written to {} in {:.2} s",
        args.out.display(),
        report.seconds
    );
    Ok(())
}

#[cfg(feature = "plots")]
fn plots(
    dir: &Path,
    suite: &SuiteReport,
    compare: Option<&Array2<f32>>,
    labels: &[usize],
    cfg: &SuiteConfig,
) -> Result<()> {
    use bioalign_metrics::plots::{Panel, confusion_bars, metric_bars, projection_scatter};
    let m = suite.projection_rows;
    let lp = &labels[..m];
    let other = compare
        .map(|o| bioalign_metrics::tsne(o.slice(ndarray::s![..m, ..]), &cfg.tsne))
        .transpose()?
        .map(|t| t.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>());
    let mut panels = Vec::new();
    if let Some(o) = &other {
        panels.push(Panel {
            name: "compare",
            coords: o,
            labels: lp,
        });
    }
    panels.push(Panel {
        name: "embeddings",
        coords: &suite.tsne,
        labels: lp,
    });
    projection_scatter(
        &dir.join("projection.png"),
        "t-SNE of the projected rows",
        &panels,
    )?;
    let mut bars = Vec::new();
    for (name, ci) in [
        ("KG separation", suite.kg_separation_ci),
        ("probe accuracy", suite.probe_accuracy_ci),
        ("probe ROC-AUC", suite.probe_roc_auc_ci),
        ("t-SNE silh.", suite.silhouette_tsne_ci),
    ] {
        if let Some(ci) = ci {
            bars.push((name.to_string(), ci));
        }
    }
    if !bars.is_empty() {
        metric_bars(
            &dir.join("metrics.png"),
            "Estimates with 95% bootstrap intervals",
            &bars,
        )?;
    }
    confusion_bars(
        &dir.join("probe_confusion.png"),
        "Probe confusion matrix (test rows)",
        &suite.probe_confusion,
    )?;
    Ok(())
}

#[cfg(not(feature = "plots"))]
fn plots(
    _: &Path,
    _: &SuiteReport,
    _: Option<&Array2<f32>>,
    _: &[usize],
    _: &SuiteConfig,
) -> Result<()> {
    bail!("--plots needs the example built with `--features plots`")
}

fn kg_alignment(
    args: &Args,
    pairs_path: &Path,
    x: &Array2<f32>,
    labels: &[usize],
) -> Result<(LinkPredictionReport, Option<Rsa>)> {
    let cols = read_csv_columns(pairs_path, &["GeneSymbol", "DiseaseName"])?;
    let (genes, diseases) = (&cols[0], &cols[1]);
    ensure!(
        genes.len() == labels.len(),
        "{} has {} rows, embeddings {}",
        pairs_path.display(),
        genes.len(),
        labels.len()
    );
    // link prediction
    let link = match (&args.gene_tensor, &args.disease_tensor) {
        (Some(g), Some(d)) => {
            let ge = as_2d(
                read_safetensors(&args.embeddings, Some(g))?,
                "--gene-tensor",
            )?;
            let de = as_2d(
                read_safetensors(&args.embeddings, Some(d))?,
                "--disease-tensor",
            )?;
            LinkPredictionReport {
                source: "entity-tensors",
                result: link_prediction(ge.view(), de.view(), labels)?,
            }
        }
        (None, None) => {
            let (gk, gc) = entity_centroids(x.view(), genes)?;
            let (dk, dc) = entity_centroids(x.view(), diseases)?;
            let gi: HashMap<&String, usize> = gk.iter().enumerate().map(|(i, k)| (k, i)).collect();
            let di: HashMap<&String, usize> = dk.iter().enumerate().map(|(i, k)| (k, i)).collect();
            let g_rows = gc.select(Axis(0), &genes.iter().map(|g| gi[g]).collect::<Vec<_>>());
            let d_rows = dc.select(Axis(0), &diseases.iter().map(|d| di[d]).collect::<Vec<_>>());
            LinkPredictionReport {
                source: "sentence-centroids",
                result: link_prediction(g_rows.view(), d_rows.view(), labels)?,
            }
        }
        _ => bail!("--gene-tensor and --disease-tensor go together"),
    };
    // RSA over genes with at least one true disease
    let mut disease_id: HashMap<&String, usize> = HashMap::new();
    let mut sets: BTreeMap<&String, Vec<usize>> = BTreeMap::new();
    for ((g, d), &l) in genes.iter().zip(diseases).zip(labels) {
        let next = disease_id.len();
        let id = *disease_id.entry(d).or_insert(next);
        if l == 1 {
            sets.entry(g).or_default().push(id);
        }
    }
    let (gk, gc) = entity_centroids(x.view(), genes)?;
    let gi: HashMap<&String, usize> = gk.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let chosen: Vec<(&String, Vec<usize>)> = sets.into_iter().take(args.rsa_max_genes).collect();
    let rsa = if chosen.len() >= 3 {
        let rows: Vec<usize> = chosen.iter().map(|(g, _)| gi[*g]).collect();
        let emb = gc.select(Axis(0), &rows);
        let neighbours: Vec<Vec<usize>> = chosen.into_iter().map(|(_, s)| s).collect();
        Some(rsa_spearman(emb.view(), &neighbours)?)
    } else {
        None
    };
    Ok((link, rsa))
}
