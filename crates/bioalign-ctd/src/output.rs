//! Labelled examples and their files: Parquet (arrow) and CSV, one file per split,
//! with columns `GeneSymbol, GeneID, DiseaseName, DiseaseID, text, PubMedIDs, label`.
//!
//! [`read_csv`] also reads the reference study's split files (`test_pairs.csv`:
//! `GeneSymbol, DiseaseName, text, PubMedIDs, label`; `ctd_processed_dataset.csv`:
//! `sentence, label`), so a model can be evaluated on exactly its rows.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int64Array, Int64Builder, ListArray, ListBuilder, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::csvline::{SplitError, Splitter, write_field};
use crate::error::{Error, Result};

/// One labelled statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Example {
    /// Gene symbol.
    pub gene_symbol: String,
    /// NCBI gene ID (absent in the reference's split files).
    pub gene_id: Option<u64>,
    /// Disease name.
    pub disease_name: String,
    /// Disease ID (absent in the reference's split files).
    pub disease_id: Option<String>,
    /// The statement.
    pub text: String,
    /// PubMed IDs supporting a positive (empty for negatives).
    pub pubmed_ids: Vec<u64>,
    /// 1 = associated, 0 = negative.
    pub label: u8,
}

/// Column names of the output files, in order.
pub const COLUMNS: [&str; 7] = [
    "GeneSymbol",
    "GeneID",
    "DiseaseName",
    "DiseaseID",
    "text",
    "PubMedIDs",
    "label",
];

/// The Arrow schema of the output files.
pub fn schema() -> Schema {
    Schema::new(vec![
        Field::new("GeneSymbol", DataType::Utf8, false),
        Field::new("GeneID", DataType::Int64, true),
        Field::new("DiseaseName", DataType::Utf8, false),
        Field::new("DiseaseID", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, false),
        Field::new(
            "PubMedIDs",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            false,
        ),
        Field::new("label", DataType::Int64, false),
    ])
}

fn to_batch(rows: &[&Example]) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let n = rows.len();
    let bytes = |f: fn(&Example) -> usize| rows.iter().map(|e| f(e)).sum::<usize>();
    let mut gene = StringBuilder::with_capacity(n, bytes(|e| e.gene_symbol.len()));
    let mut gene_id = Int64Builder::with_capacity(n);
    let mut dis = StringBuilder::with_capacity(n, bytes(|e| e.disease_name.len()));
    let mut dis_id =
        StringBuilder::with_capacity(n, bytes(|e| e.disease_id.as_ref().map_or(0, String::len)));
    let mut text = StringBuilder::with_capacity(n, bytes(|e| e.text.len()));
    let mut pmids = ListBuilder::with_capacity(
        Int64Builder::with_capacity(bytes(|e| e.pubmed_ids.len())),
        n,
    );
    let mut label = Int64Builder::with_capacity(n);
    for e in rows {
        gene.append_value(&e.gene_symbol);
        gene_id.append_option(e.gene_id.map(|v| v as i64));
        dis.append_value(&e.disease_name);
        dis_id.append_option(e.disease_id.as_deref());
        text.append_value(&e.text);
        for id in &e.pubmed_ids {
            pmids.values().append_value(*id as i64);
        }
        pmids.append(true);
        label.append_value(e.label as i64);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(gene.finish()),
        Arc::new(gene_id.finish()),
        Arc::new(dis.finish()),
        Arc::new(dis_id.finish()),
        Arc::new(text.finish()),
        Arc::new(pmids.finish()),
        Arc::new(label.finish()),
    ];
    RecordBatch::try_new(Arc::new(schema()), cols)
}

const BATCH_ROWS: usize = 65_536;

/// Writes `rows` as a Snappy-compressed Parquet file, atomically.
pub fn write_parquet(path: &Path, rows: &[&Example]) -> Result<()> {
    let mut batches = rows.chunks(BATCH_ROWS).map(to_batch);
    write_parquet_batches(
        path,
        Arc::new(schema()),
        &mut batches,
        &format!("bioalign-ctd {}", env!("CARGO_PKG_VERSION")),
    )
}

/// Writes record `batches` of `schema` as a Snappy-compressed Parquet file, atomically,
/// with `created_by` in the file's metadata. Shared by every crate that writes Parquet
/// tables (splits here, predictions in bioalign-study); an error in a batch aborts the
/// write and leaves any previous file in place.
pub fn write_parquet_batches(
    path: &Path,
    schema: arrow::datatypes::SchemaRef,
    batches: &mut dyn Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>>,
    created_by: &str,
) -> Result<()> {
    bioalign_io::atomic_write(path, |w| {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(created_by.to_string())
            .build();
        let mut writer = ArrowWriter::try_new(w, schema, Some(props)).map_err(io::Error::other)?;
        for batch in batches {
            let batch = batch.map_err(io::Error::other)?;
            writer.write(&batch).map_err(io::Error::other)?;
        }
        writer.close().map_err(io::Error::other)?;
        Ok(())
    })?;
    Ok(())
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Format {
            path: path.to_path_buf(),
            reason: format!("column {name} is missing or has an unexpected type"),
        })
}

/// Reads a Parquet file written by [`write_parquet`].
pub fn read_parquet(path: &Path) -> Result<Vec<Example>> {
    let fmt = |reason: String| Error::Format {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| fmt(format!("cannot open: {e}")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| fmt(format!("not a readable Parquet file: {e}")))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| fmt(format!("bad record batch: {e}")))?;
        let gene = column::<StringArray>(&batch, "GeneSymbol", path)?;
        let gene_id = column::<Int64Array>(&batch, "GeneID", path)?;
        let dis = column::<StringArray>(&batch, "DiseaseName", path)?;
        let dis_id = column::<StringArray>(&batch, "DiseaseID", path)?;
        let text = column::<StringArray>(&batch, "text", path)?;
        let pmids = column::<ListArray>(&batch, "PubMedIDs", path)?;
        let label = column::<Int64Array>(&batch, "label", path)?;
        for i in 0..batch.num_rows() {
            let ids = pmids.value(i);
            let ids = ids
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| fmt("PubMedIDs items are not Int64".into()))?;
            let l = label.value(i);
            if l != 0 && l != 1 {
                return Err(fmt(format!("row {i}: label {l} is not 0 or 1")));
            }
            out.push(Example {
                gene_symbol: gene.value(i).to_string(),
                gene_id: (!gene_id.is_null(i)).then(|| gene_id.value(i) as u64),
                disease_name: dis.value(i).to_string(),
                disease_id: (!dis_id.is_null(i)).then(|| dis_id.value(i).to_string()),
                text: text.value(i).to_string(),
                pubmed_ids: ids.values().iter().map(|&v| v as u64).collect(),
                label: l as u8,
            });
        }
    }
    Ok(out)
}

/// Writes `rows` as CSV with a header line, atomically. PubMed IDs are `|`-joined.
pub fn write_csv(path: &Path, rows: &[&Example]) -> Result<()> {
    bioalign_io::atomic_write(path, |w| {
        w.write_all(COLUMNS.join(",").as_bytes())?;
        w.write_all(b"\n")?;
        let mut line = String::with_capacity(256);
        for e in rows {
            line.clear();
            write_field(&mut line, &e.gene_symbol, ',');
            line.push(',');
            if let Some(id) = e.gene_id {
                line.push_str(&id.to_string());
            }
            line.push(',');
            write_field(&mut line, &e.disease_name, ',');
            line.push(',');
            write_field(&mut line, e.disease_id.as_deref().unwrap_or(""), ',');
            line.push(',');
            write_field(&mut line, &e.text, ',');
            line.push(',');
            for (k, id) in e.pubmed_ids.iter().enumerate() {
                if k > 0 {
                    line.push('|');
                }
                line.push_str(&id.to_string());
            }
            line.push(',');
            line.push(if e.label == 1 { '1' } else { '0' });
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Reads a labelled CSV with a header row: files written by [`write_csv`], and the
/// reference's split files. `text` (or `sentence`) and `label` are required; the
/// other columns are optional.
pub fn read_csv(path: &Path) -> Result<Vec<Example>> {
    let fmt = |line: u64, reason: String| Error::Format {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let file = File::open(path).map_err(|e| fmt(0, format!("cannot open: {e}")))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut splitter = Splitter::default();
    let mut line_no = 0u64;
    let mut header: Option<Vec<String>> = None;
    let mut idx = [None; 7];
    let mut out = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| fmt(line_no, format!("read error: {e}")))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        let line = std::str::from_utf8(&buf).map_err(|_| fmt(line_no, "not valid UTF-8".into()))?;
        if let Err(SplitError::UnterminatedQuote(k)) = splitter.split(line.as_bytes(), b',') {
            return Err(fmt(
                line_no,
                format!("unterminated quote in field {}", k + 1),
            ));
        }
        let fields: Vec<&str> = (0..splitter.spans.len())
            .map(|k| std::str::from_utf8(splitter.field(line.as_bytes(), k)).unwrap_or(""))
            .collect();
        let Some(names) = &header else {
            let names: Vec<String> = fields.iter().map(|s| s.trim().to_string()).collect();
            let find = |c: &str| names.iter().position(|n| n == c);
            idx = [
                find("GeneSymbol"),
                find("GeneID"),
                find("DiseaseName"),
                find("DiseaseID"),
                find("text").or_else(|| find("sentence")),
                find("PubMedIDs"),
                find("label"),
            ];
            if idx[4].is_none() || idx[6].is_none() {
                return Err(fmt(
                    line_no,
                    format!("header needs 'text' (or 'sentence') and 'label', found {names:?}"),
                ));
            }
            header = Some(names);
            continue;
        };
        if fields.len() != names.len() {
            return Err(fmt(
                line_no,
                format!("expected {} fields, found {}", names.len(), fields.len()),
            ));
        }
        let get = |k: usize| idx[k].map(|i| fields[i]).unwrap_or("");
        let label = match get(6).trim() {
            "1" | "1.0" | "True" | "true" => 1,
            "0" | "0.0" | "False" | "false" => 0,
            other => {
                return Err(fmt(
                    line_no,
                    format!("field 'label' = {other:?} is not 0 or 1"),
                ));
            }
        };
        let gene_id =
            match get(1).trim() {
                "" => None,
                s => Some(s.parse().map_err(|_| {
                    fmt(line_no, format!("field 'GeneID' = {s:?} is not an integer"))
                })?),
            };
        let mut pubmed_ids = Vec::new();
        for p in get(5).split('|').map(str::trim).filter(|p| !p.is_empty()) {
            pubmed_ids.push(p.parse().map_err(|_| {
                fmt(
                    line_no,
                    format!("field 'PubMedIDs' item {p:?} is not an integer"),
                )
            })?);
        }
        let dis_id = get(3).trim();
        out.push(Example {
            gene_symbol: get(0).to_string(),
            gene_id,
            disease_name: get(2).to_string(),
            disease_id: (!dis_id.is_empty()).then(|| dis_id.to_string()),
            text: get(4).to_string(),
            pubmed_ids,
            label,
        });
    }
    if header.is_none() {
        return Err(fmt(line_no, "empty file: no header row".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Example> {
        vec![
            Example {
                gene_symbol: "A".into(),
                gene_id: Some(50518),
                disease_name: "Diabetes Mellitus, Type 2".into(),
                disease_id: Some("MESH:D003924".into()),
                text: "A is associated with Diabetes Mellitus, Type 2".into(),
                pubmed_ids: vec![8146154, 25620042],
                label: 1,
            },
            Example {
                gene_symbol: "Q\"uote".into(),
                gene_id: None,
                disease_name: "Flu".into(),
                disease_id: None,
                text: "Q\"uote is associated with Flu".into(),
                pubmed_ids: vec![],
                label: 0,
            },
        ]
    }

    #[test]
    fn parquet_and_csv_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sample();
        let refs: Vec<&Example> = rows.iter().collect();
        let pq = dir.path().join("t.parquet");
        write_parquet(&pq, &refs).unwrap();
        assert_eq!(read_parquet(&pq).unwrap(), rows);
        let csv = dir.path().join("t.csv");
        write_csv(&csv, &refs).unwrap();
        assert_eq!(read_csv(&csv).unwrap(), rows);
    }

    #[test]
    fn reads_reference_layout_and_reports_bad_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ref.csv");
        std::fs::write(
            &p,
            "GeneSymbol,DiseaseName,text,PubMedIDs,label\nWNK1,Hypertension,WNK1 is associated with Hypertension,22949526|1,1\nS,\"A, B\",\"S is associated with A, B\",,0\n",
        )
        .unwrap();
        let rows = read_csv(&p).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].pubmed_ids, [22949526, 1]);
        assert_eq!(rows[1].disease_name, "A, B");
        assert_eq!(rows[1].gene_id, None);
        std::fs::write(&p, "text,label\nx,2\n").unwrap();
        let err = read_csv(&p).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("label"), "{err}");
        std::fs::write(&p, b"not parquet").unwrap();
        assert!(matches!(read_parquet(&p), Err(Error::Format { .. })));
    }
}
