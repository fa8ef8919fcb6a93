//! The files [`crate::evaluate`] writes besides `metrics.json`: `predictions.parquet`
//! and `embeddings.safetensors` (formats in `docs/formats.md`), and their readers.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use ndarray::Array2;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Result, file_err};

/// One row of `predictions.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index of the row in the `--data` file (0-based, header excluded).
    pub row: usize,
    /// Gene symbol.
    pub gene: String,
    /// Disease name.
    pub disease: String,
    /// The statement.
    pub text: String,
    /// Gold label (1 = true statement).
    pub label: usize,
    /// The generated continuation (special tokens skipped).
    pub answer: String,
    /// `log p(" true") - log p(" false")` at the first new position.
    pub score: f64,
    /// `log p(" true")`.
    pub logp_true: f64,
    /// `log p(" false")`.
    pub logp_false: f64,
    /// The reference's rule: 1 iff the lower-cased answer contains "true".
    pub pred_generated: usize,
    /// The next-token rule: 1 iff `score > 0`.
    pub pred_logprob: usize,
}

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("row", DataType::Int64, false),
        Field::new("GeneSymbol", DataType::Utf8, false),
        Field::new("DiseaseName", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("label", DataType::Int64, false),
        Field::new("answer", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("logp_true", DataType::Float64, false),
        Field::new("logp_false", DataType::Float64, false),
        Field::new("pred_generated", DataType::Int64, false),
        Field::new("pred_logprob", DataType::Int64, false),
    ])
}

/// Writes `rows` as a Snappy-compressed Parquet file, atomically.
pub fn write_predictions(path: &Path, rows: &[Prediction]) -> Result<()> {
    let int = |f: fn(&Prediction) -> usize| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| f(r) as i64),
        ))
    };
    let float = |f: fn(&Prediction) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let string = |f: fn(&Prediction) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let cols: Vec<ArrayRef> = vec![
        int(|r| r.row),
        string(|r| &r.gene),
        string(|r| &r.disease),
        string(|r| &r.text),
        int(|r| r.label),
        string(|r| &r.answer),
        float(|r| r.score),
        float(|r| r.logp_true),
        float(|r| r.logp_false),
        int(|r| r.pred_generated),
        int(|r| r.pred_logprob),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema()), cols).map_err(|e| file_err(path, e))?;
    bioalign_ctd::write_parquet_batches(
        path,
        batch.schema(),
        &mut std::iter::once(Ok(batch)),
        &format!("bioalign-study {}", env!("CARGO_PKG_VERSION")),
    )?;
    Ok(())
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            file_err(
                path,
                format!("column {name} is missing or has an unexpected type"),
            )
        })
}

/// Reads a file written by [`write_predictions`].
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let file =
        std::fs::File::open(path).map_err(|e| file_err(path, format!("cannot open: {e}")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| file_err(path, format!("not a readable Parquet file: {e}")))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| file_err(path, format!("bad record batch: {e}")))?;
        let row = column::<Int64Array>(&batch, "row", path)?;
        let gene = column::<StringArray>(&batch, "GeneSymbol", path)?;
        let disease = column::<StringArray>(&batch, "DiseaseName", path)?;
        let text = column::<StringArray>(&batch, "text", path)?;
        let label = column::<Int64Array>(&batch, "label", path)?;
        let answer = column::<StringArray>(&batch, "answer", path)?;
        let score = column::<Float64Array>(&batch, "score", path)?;
        let lt = column::<Float64Array>(&batch, "logp_true", path)?;
        let lf = column::<Float64Array>(&batch, "logp_false", path)?;
        let pg = column::<Int64Array>(&batch, "pred_generated", path)?;
        let pl = column::<Int64Array>(&batch, "pred_logprob", path)?;
        for i in 0..batch.num_rows() {
            out.push(Prediction {
                row: row.value(i) as usize,
                gene: gene.value(i).to_string(),
                disease: disease.value(i).to_string(),
                text: text.value(i).to_string(),
                label: label.value(i) as usize,
                answer: answer.value(i).to_string(),
                score: score.value(i),
                logp_true: lt.value(i),
                logp_false: lf.value(i),
                pred_generated: pg.value(i) as usize,
                pred_logprob: pl.value(i) as usize,
            });
        }
    }
    Ok(out)
}

/// The tensor name of layer `i` of `count` in `embeddings.safetensors`: `embeddings`
/// for a single layer, else `embeddings.layer_{i}` (as the `embed` example writes them).
pub fn tensor_name(i: usize, count: usize) -> String {
    if count == 1 {
        "embeddings".to_string()
    } else {
        format!("embeddings.layer_{i}")
    }
}

/// Writes the per-layer embeddings (F32 `[n, hidden]`), the labels (`labels`, I64 `[n]`)
/// and the source rows (`rows`, I64 `[n]`) as safetensors, atomically.
pub fn write_embeddings(
    path: &Path,
    layers: &[Array2<f32>],
    labels: &[usize],
    rows: &[usize],
) -> Result<()> {
    let f32_bytes =
        |a: &Array2<f32>| -> Vec<u8> { a.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let i64_bytes =
        |v: &[usize]| -> Vec<u8> { v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect() };
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = layers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                tensor_name(i, layers.len()),
                Dtype::F32,
                vec![a.nrows(), a.ncols()],
                f32_bytes(a),
            )
        })
        .collect();
    tensors.push((
        "labels".into(),
        Dtype::I64,
        vec![labels.len()],
        i64_bytes(labels),
    ));
    tensors.push(("rows".into(), Dtype::I64, vec![rows.len()], i64_bytes(rows)));
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    let bytes = safetensors::serialize(views, None).map_err(|e| file_err(path, e))?;
    bioalign_io::atomic_write_bytes(path, &bytes)?;
    Ok(())
}

/// Reads tensor `name` (f32, 2-D) of a safetensors file.
pub fn read_embedding(path: &Path, name: &str) -> Result<Array2<f32>> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| file_err(path, e))?;
    let t = st
        .tensor(name)
        .map_err(|e| file_err(path, format!("{name}: {e}")))?;
    if t.dtype() != Dtype::F32 || t.shape().len() != 2 {
        return Err(file_err(
            path,
            format!(
                "{name}: expected a 2-D F32 tensor, found {:?} {:?}",
                t.dtype(),
                t.shape()
            ),
        ));
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Array2::from_shape_vec((t.shape()[0], t.shape()[1]), v).map_err(|e| file_err(path, e))
}
