//! Streaming reader for CTD gene-disease files.
//!
//! Accepts the curated file (`CTD_curated_genes_diseases`) and the full
//! `CTD_genes_diseases` layout (with `InferenceChemicalName`, `InferenceScore`),
//! as CSV or TSV, plain or gzip (detected from the magic bytes). Column names are
//! taken from the comment line after `# Fields:`. Memory is bounded by the longest
//! line, whatever the file size: the file is read line by line through a 1 MiB
//! buffer and [`CtdReader::read_record`] refills one reusable [`CtdRecord`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::csvline::{SplitError, Splitter};
use crate::error::{Error, Result};
use crate::prefetch::Prefetch;

/// What to do with a row that cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRowPolicy {
    /// Stop with an error naming file, line and field (the default).
    #[default]
    Fail,
    /// Skip the row, count it in [`ReadStats`], and go on.
    Skip,
}

/// Reader options.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Policy for malformed rows.
    pub bad_rows: BadRowPolicy,
    /// Field delimiter; `None` detects it from the `# Fields:` line (tab if it holds one, else comma).
    pub delimiter: Option<u8>,
    /// Compute the SHA-256 of the input bytes (as stored, i.e. compressed) while reading.
    pub hash: bool,
}

/// One row of a CTD gene-disease file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CtdRecord {
    /// Gene symbol, as in the file (not trimmed).
    pub gene_symbol: String,
    /// NCBI gene ID, if present.
    pub gene_id: Option<u64>,
    /// Disease name, as in the file.
    pub disease_name: String,
    /// Disease ID (`MESH:D...` or `OMIM:...`).
    pub disease_id: String,
    /// `|`-separated `DirectEvidence` values (empty for inferred rows).
    pub direct_evidence: Vec<String>,
    /// Chemical through which the association is inferred (full layout only).
    pub inference_chemical_name: Option<String>,
    /// Inference score (full layout only).
    pub inference_score: Option<f64>,
    /// OMIM IDs.
    pub omim_ids: Vec<u64>,
    /// PubMed IDs.
    pub pubmed_ids: Vec<u64>,
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
}

/// Counters kept while reading.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ReadStats {
    /// Lines read, including comments and blank lines.
    pub lines: u64,
    /// Comment lines (`#`).
    pub comment_lines: u64,
    /// Blank lines.
    pub blank_lines: u64,
    /// Records returned.
    pub records: u64,
    /// Rows skipped under [`BadRowPolicy::Skip`].
    pub skipped_rows: u64,
    /// Skipped rows per error kind.
    pub skipped_by_kind: BTreeMap<String, u64>,
    /// The first few skip messages (at most 10).
    pub first_skipped: Vec<String>,
    /// Decompressed bytes consumed.
    pub bytes: u64,
}

/// The column layout read from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// All column names, in file order.
    pub names: Vec<String>,
    gene_symbol: usize,
    gene_id: usize,
    disease_name: usize,
    disease_id: usize,
    direct_evidence: usize,
    pubmed_ids: usize,
    omim_ids: Option<usize>,
    chem: Option<usize>,
    score: Option<usize>,
}

impl Columns {
    fn from_names(names: Vec<String>, path: &Path, line: u64) -> Result<Self> {
        let find = |c: &'static str| -> Result<usize> {
            names
                .iter()
                .position(|n| n == c)
                .ok_or_else(|| Error::MissingColumn {
                    path: path.to_path_buf(),
                    line,
                    column: c,
                    found: names.join(","),
                })
        };
        let opt = |c: &str| names.iter().position(|n| n == c);
        Ok(Self {
            gene_symbol: find("GeneSymbol")?,
            gene_id: find("GeneID")?,
            disease_name: find("DiseaseName")?,
            disease_id: find("DiseaseID")?,
            direct_evidence: find("DirectEvidence")?,
            pubmed_ids: find("PubMedIDs")?,
            omim_ids: opt("OmimIDs"),
            chem: opt("InferenceChemicalName"),
            score: opt("InferenceScore"),
            names,
        })
    }

    /// True if the file has the inference columns of the full CTD layout.
    pub fn is_full_layout(&self) -> bool {
        self.chem.is_some() && self.score.is_some()
    }
}

/// Counts (and optionally hashes) the raw bytes read from the underlying source.
struct Tap<R> {
    inner: R,
    state: Arc<Mutex<TapState>>,
}

#[derive(Default)]
struct TapState {
    bytes: u64,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut s) = self.state.lock() {
            s.bytes += n as u64;
            if let Some(h) = s.hasher.as_mut() {
                h.update(&buf[..n]);
            }
        }
        Ok(n)
    }
}

/// Longest accepted line (a guard against binary input).
pub const MAX_LINE_BYTES: usize = 16 << 20;
const BUF_BYTES: usize = 1 << 20;

/// Streaming reader of CTD gene-disease rows.
pub struct CtdReader {
    src: Box<dyn BufRead + Send>,
    path: PathBuf,
    gzip: bool,
    tap: Arc<Mutex<TapState>>,
    opts: ReadOptions,
    delim: u8,
    columns: Option<Columns>,
    line_no: u64,
    line: Vec<u8>,
    splitter: Splitter,
    stats: ReadStats,
    done: bool,
}

impl std::fmt::Debug for CtdReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtdReader")
            .field("path", &self.path)
            .field("gzip", &self.gzip)
            .field("line", &self.line_no)
            .finish_non_exhaustive()
    }
}

impl CtdReader {
    /// Opens `path` (plain or gzip) and reads its header.
    pub fn open(path: impl AsRef<Path>, opts: ReadOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            line: 0,
            source,
        })?;
        Self::from_reader(path, file, opts)
    }

    /// Wraps any byte source; `name` is used in error messages. Gzip is detected
    /// from the first two bytes.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        src: impl Read + Send + 'static,
        opts: ReadOptions,
    ) -> Result<Self> {
        let path = name.into();
        let tap = Arc::new(Mutex::new(TapState {
            bytes: 0,
            hasher: opts.hash.then(Sha256::new),
        }));
        let mut raw = BufReader::with_capacity(
            BUF_BYTES,
            Tap {
                inner: src,
                state: tap.clone(),
            },
        );
        let head = raw.fill_buf().map_err(|source| Error::Io {
            path: path.clone(),
            line: 0,
            source,
        })?;
        let gzip = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
        let src: Box<dyn BufRead + Send> = if gzip {
            let decoder = flate2::bufread::MultiGzDecoder::new(raw);
            Box::new(BufReader::with_capacity(
                BUF_BYTES,
                Prefetch::spawn(decoder),
            ))
        } else {
            Box::new(raw)
        };
        let mut reader = Self {
            src,
            path,
            gzip,
            tap,
            delim: opts.delimiter.unwrap_or(b','),
            opts,
            columns: None,
            line_no: 0,
            line: Vec::with_capacity(4096),
            splitter: Splitter::default(),
            stats: ReadStats::default(),
            done: false,
        };
        reader.read_header()?;
        Ok(reader)
    }

    /// The input's name as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if the input is gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// The columns named by the header.
    pub fn columns(&self) -> &Columns {
        // read_header guarantees Some.
        self.columns.as_ref().expect("header read at construction")
    }

    /// Counters so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// Raw (possibly compressed) bytes pulled from the source so far.
    pub fn raw_bytes(&self) -> u64 {
        self.tap.lock().map(|s| s.bytes).unwrap_or(0)
    }

    /// SHA-256 of the raw bytes read so far, as hex (with [`ReadOptions::hash`]).
    /// After the last record it is the digest of the whole file.
    pub fn sha256_hex(&self) -> Option<String> {
        let s = self.tap.lock().ok()?;
        s.hasher.as_ref().map(|h| hex::encode(h.clone().finalize()))
    }

    /// Reads the next physical line into `self.line` (terminator removed). False at EOF.
    fn next_line(&mut self) -> Result<bool> {
        self.line.clear();
        let mut taken = 0usize;
        loop {
            let buf = match self.src.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(self.read_error(source)),
            };
            if buf.is_empty() {
                if taken == 0 {
                    return Ok(false);
                }
                break;
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    self.line.extend_from_slice(&buf[..i]);
                    self.src.consume(i + 1);
                    taken += i + 1;
                    break;
                }
                None => {
                    let n = buf.len();
                    self.line.extend_from_slice(buf);
                    self.src.consume(n);
                    taken += n;
                    if self.line.len() > MAX_LINE_BYTES {
                        return Err(Error::LineTooLong {
                            path: self.path.clone(),
                            line: self.line_no + 1,
                            limit: MAX_LINE_BYTES,
                        });
                    }
                }
            }
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        self.line_no += 1;
        self.stats.lines += 1;
        self.stats.bytes += taken as u64;
        Ok(true)
    }

    fn read_error(&self, source: io::Error) -> Error {
        if self.gzip {
            Error::Gzip {
                path: self.path.clone(),
                line: self.line_no,
                source,
            }
        } else {
            Error::Io {
                path: self.path.clone(),
                line: self.line_no,
                source,
            }
        }
    }

    fn read_header(&mut self) -> Result<()> {
        let mut after_fields = false;
        while self.next_line()? {
            let trimmed = self.line.trim_ascii();
            if trimmed.is_empty() {
                self.stats.blank_lines += 1;
                continue;
            }
            if trimmed[0] != b'#' {
                return Err(Error::MissingFieldsHeader {
                    path: self.path.clone(),
                    line: self.line_no,
                });
            }
            self.stats.comment_lines += 1;
            let body = trimmed[1..].trim_ascii();
            let names_text: &[u8] = if after_fields {
                body
            } else if let Some(rest) = body.strip_prefix(b"Fields:") {
                after_fields = true;
                rest.trim_ascii()
            } else {
                continue;
            };
            if names_text.is_empty() {
                continue; // the names are on the next comment line
            }
            let text = std::str::from_utf8(names_text).map_err(|_| Error::InvalidUtf8 {
                path: self.path.clone(),
                line: self.line_no,
                field: "# Fields".into(),
            })?;
            let delim =
                self.opts
                    .delimiter
                    .unwrap_or(if text.contains('\t') { b'\t' } else { b',' });
            self.delim = delim;
            let names = text
                .split(delim as char)
                .map(|s| s.trim().to_string())
                .collect();
            self.columns = Some(Columns::from_names(names, &self.path, self.line_no)?);
            return Ok(());
        }
        Err(Error::MissingFieldsHeader {
            path: self.path.clone(),
            line: self.line_no,
        })
    }

    /// Reads the next record into `rec`, reusing its allocations. Returns false at
    /// the end of the input. Under [`BadRowPolicy::Skip`] malformed rows are counted
    /// and skipped; I/O and gzip errors always stop.
    pub fn read_record(&mut self, rec: &mut CtdRecord) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        loop {
            if !self.next_line()? {
                self.done = true;
                return Ok(false);
            }
            let first = self.line.iter().position(|b| !b.is_ascii_whitespace());
            match first {
                None => {
                    self.stats.blank_lines += 1;
                    continue;
                }
                Some(i) if self.line[i] == b'#' => {
                    self.stats.comment_lines += 1;
                    continue;
                }
                _ => {}
            }
            match self.parse_line(rec) {
                Ok(()) => {
                    self.stats.records += 1;
                    return Ok(true);
                }
                Err(e) if e.is_row_error() && self.opts.bad_rows == BadRowPolicy::Skip => {
                    self.stats.skipped_rows += 1;
                    *self
                        .stats
                        .skipped_by_kind
                        .entry(e.kind().to_string())
                        .or_default() += 1;
                    if self.stats.first_skipped.len() < 10 {
                        tracing::warn!("skipping bad row: {e}");
                        self.stats.first_skipped.push(e.to_string());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn parse_line(&mut self, rec: &mut CtdRecord) -> Result<()> {
        let cols = self.columns.as_ref().expect("header read at construction");
        let line = &self.line;
        if let Err(SplitError::UnterminatedQuote(k)) = self.splitter.split(line, self.delim) {
            return Err(Error::UnterminatedQuote {
                path: self.path.clone(),
                line: self.line_no,
                field: cols
                    .names
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", k + 1)),
            });
        }
        if self.splitter.spans.len() != cols.names.len() {
            return Err(Error::ColumnCount {
                path: self.path.clone(),
                line: self.line_no,
                expected: cols.names.len(),
                found: self.splitter.spans.len(),
            });
        }
        let ctx = FieldCtx {
            path: &self.path,
            line: self.line_no,
            cols,
            splitter: &self.splitter,
            bytes: line,
        };
        // Validate the whole line at once; only on failure look for the field, so
        // an invalid byte anywhere (even in a column we do not keep) is reported.
        if std::str::from_utf8(line).is_err() {
            for k in 0..cols.names.len() {
                ctx.str(k)?;
            }
        }
        set(&mut rec.gene_symbol, ctx.str(cols.gene_symbol)?);
        rec.gene_id = ctx.opt_u64(cols.gene_id)?;
        set(&mut rec.disease_name, ctx.str(cols.disease_name)?);
        set(&mut rec.disease_id, ctx.str(cols.disease_id)?);
        set_list(&mut rec.direct_evidence, ctx.str(cols.direct_evidence)?);
        rec.inference_chemical_name = match cols.chem {
            Some(k) => {
                let s = ctx.str(k)?;
                (!s.is_empty()).then(|| s.to_string())
            }
            None => None,
        };
        rec.inference_score = match cols.score {
            Some(k) => ctx.opt_f64(k)?,
            None => None,
        };
        match cols.omim_ids {
            Some(k) => ctx.u64_list(k, &mut rec.omim_ids)?,
            None => rec.omim_ids.clear(),
        }
        ctx.u64_list(cols.pubmed_ids, &mut rec.pubmed_ids)?;
        rec.line = self.line_no;
        Ok(())
    }
}

fn set(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

fn set_list(dst: &mut Vec<String>, src: &str) {
    let mut n = 0;
    for part in src.split('|').map(str::trim).filter(|p| !p.is_empty()) {
        if n < dst.len() {
            set(&mut dst[n], part);
        } else {
            dst.push(part.to_string());
        }
        n += 1;
    }
    dst.truncate(n);
}

struct FieldCtx<'a> {
    path: &'a Path,
    line: u64,
    cols: &'a Columns,
    splitter: &'a Splitter,
    bytes: &'a [u8],
}

impl<'a> FieldCtx<'a> {
    fn str(&self, k: usize) -> Result<&'a str> {
        std::str::from_utf8(self.splitter.field(self.bytes, k)).map_err(|_| Error::InvalidUtf8 {
            path: self.path.to_path_buf(),
            line: self.line,
            field: self.cols.names[k].clone(),
        })
    }

    fn bad(&self, k: usize, value: &str, expected: &'static str) -> Error {
        Error::BadValue {
            path: self.path.to_path_buf(),
            line: self.line,
            field: self.cols.names[k].clone(),
            value: value.chars().take(80).collect(),
            expected,
        }
    }

    fn opt_u64(&self, k: usize) -> Result<Option<u64>> {
        let s = self.str(k)?.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| self.bad(k, s, "an unsigned integer"))
    }

    fn opt_f64(&self, k: usize) -> Result<Option<f64>> {
        let s = self.str(k)?.trim();
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(self.bad(k, s, "a finite number")),
        }
    }

    fn u64_list(&self, k: usize, out: &mut Vec<u64>) -> Result<()> {
        out.clear();
        let s = self.str(k)?;
        if s.is_empty() {
            return Ok(());
        }
        for part in s.split('|') {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            out.push(
                p.parse()
                    .map_err(|_| self.bad(k, p, "a '|'-separated list of unsigned integers"))?,
            );
        }
        Ok(())
    }
}

impl Iterator for CtdReader {
    type Item = Result<CtdRecord>;

    /// Owned records; [`CtdReader::read_record`] avoids the per-row allocation.
    fn next(&mut self) -> Option<Self::Item> {
        let mut rec = CtdRecord::default();
        match self.read_record(&mut rec) {
            Ok(true) => Some(Ok(rec)),
            Ok(false) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const HEADER: &str = "# CTD\n#\n# Fields:\n# GeneSymbol,GeneID,DiseaseName,DiseaseID,DirectEvidence,OmimIDs,PubMedIDs\n#\n";

    fn reader(body: &str, policy: BadRowPolicy) -> Result<CtdReader> {
        let text = format!("{HEADER}{body}");
        CtdReader::from_reader(
            "test.csv",
            io::Cursor::new(text.into_bytes()),
            ReadOptions {
                bad_rows: policy,
                ..Default::default()
            },
        )
    }

    fn all(r: CtdReader) -> Result<Vec<CtdRecord>> {
        r.collect()
    }

    #[test]
    fn reads_curated_rows_with_quotes_and_lists() {
        let recs = all(reader(
            "A,50518,\"Diabetes Mellitus, Type 2\",MESH:D003924,marker/mechanism|therapeutic,601,8146154|25620042\r\nB,2,X,MESH:D2,,,\n",
            BadRowPolicy::Fail,
        )
        .unwrap())
        .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].disease_name, "Diabetes Mellitus, Type 2");
        assert_eq!(recs[0].gene_id, Some(50518));
        assert_eq!(recs[0].direct_evidence, ["marker/mechanism", "therapeutic"]);
        assert_eq!(recs[0].omim_ids, [601]);
        assert_eq!(recs[0].pubmed_ids, [8146154, 25620042]);
        assert_eq!(recs[0].line, 6);
        assert!(recs[1].direct_evidence.is_empty() && recs[1].pubmed_ids.is_empty());
        assert_eq!(recs[1].disease_id, "MESH:D2");
    }

    #[test]
    fn reads_full_layout_tsv() {
        let text = "# Fields:\n# GeneSymbol\tGeneID\tDiseaseName\tDiseaseID\tDirectEvidence\tInferenceChemicalName\tInferenceScore\tOmimIDs\tPubMedIDs\n\
                    TP53\t7157\tNeoplasms, Lung\tMESH:D008175\t\tBenzo(a)pyrene\t12.5\t\t111|222\n";
        let r = CtdReader::from_reader(
            "f.tsv",
            io::Cursor::new(text.as_bytes().to_vec()),
            ReadOptions::default(),
        )
        .unwrap();
        assert!(r.columns().is_full_layout());
        let recs: Vec<_> = r.collect::<Result<_>>().unwrap();
        assert_eq!(recs[0].disease_name, "Neoplasms, Lung");
        assert_eq!(
            recs[0].inference_chemical_name.as_deref(),
            Some("Benzo(a)pyrene")
        );
        assert_eq!(recs[0].inference_score, Some(12.5));
        assert_eq!(recs[0].pubmed_ids, [111, 222]);
    }

    #[test]
    fn gzip_is_detected_and_hashed() {
        let text = format!("{HEADER}A,1,D,MESH:D1,therapeutic,,5\n");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let bytes = gz.finish().unwrap();
        let expected = hex::encode(Sha256::digest(&bytes));
        let mut r = CtdReader::from_reader(
            "x.csv.gz",
            io::Cursor::new(bytes),
            ReadOptions {
                hash: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(r.is_gzip());
        let mut rec = CtdRecord::default();
        assert!(r.read_record(&mut rec).unwrap());
        assert_eq!(rec.pubmed_ids, [5]);
        assert!(!r.read_record(&mut rec).unwrap());
        assert_eq!(r.sha256_hex().unwrap(), expected);
    }

    #[test]
    fn truncated_gzip_is_an_error_naming_the_file() {
        let mut text = String::from(HEADER);
        for i in 0..5000 {
            text.push_str(&format!(
                "G{i},{i},Disease {i},MESH:D{i},marker/mechanism,,{i}\n"
            ));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let mut bytes = gz.finish().unwrap();
        bytes.truncate(bytes.len() / 2);
        for policy in [BadRowPolicy::Fail, BadRowPolicy::Skip] {
            let r = CtdReader::from_reader(
                "cut.csv.gz",
                io::Cursor::new(bytes.clone()),
                ReadOptions {
                    bad_rows: policy,
                    ..Default::default()
                },
            )
            .unwrap();
            let err = all(r).unwrap_err();
            assert!(matches!(err, Error::Gzip { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("cut.csv.gz") && msg.contains("gzip"), "{msg}");
        }
    }

    #[test]
    fn unterminated_quote_names_line_and_field() {
        let err = all(reader("A,1,\"open,MESH:D1,therapeutic,,5\n", BadRowPolicy::Fail).unwrap())
            .unwrap_err();
        match &err {
            Error::UnterminatedQuote { line, field, .. } => {
                assert_eq!(*line, 6);
                assert_eq!(field, "DiseaseName");
            }
            e => panic!("unexpected {e:?}"),
        }
        assert!(err.to_string().contains("test.csv: line 6"), "{err}");
    }

    #[test]
    fn wrong_column_count_is_reported() {
        let err =
            all(reader("A,1,D,MESH:D1,therapeutic,5\n", BadRowPolicy::Fail).unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ColumnCount {
                    line: 6,
                    expected: 7,
                    found: 6,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let mut text = HEADER.as_bytes().to_vec();
        text.extend_from_slice(b"A,1,Bad \xff name,MESH:D1,therapeutic,,5\n");
        let r =
            CtdReader::from_reader("u.csv", io::Cursor::new(text), ReadOptions::default()).unwrap();
        let err = all(r).unwrap_err();
        match err {
            Error::InvalidUtf8 { line, field, .. } => {
                assert_eq!((line, field.as_str()), (6, "DiseaseName"))
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn bad_number_names_the_field() {
        let err = all(reader("A,1,D,MESH:D1,therapeutic,,12|x3\n", BadRowPolicy::Fail).unwrap())
            .unwrap_err();
        match err {
            Error::BadValue {
                line, field, value, ..
            } => {
                assert_eq!(
                    (line, field.as_str(), value.as_str()),
                    (6, "PubMedIDs", "x3")
                )
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn missing_fields_header_is_an_error() {
        let err = CtdReader::from_reader(
            "h.csv",
            io::Cursor::new(b"# just a comment\nA,1,D,MESH:D1,therapeutic,,5\n".to_vec()),
            ReadOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::MissingFieldsHeader { line: 2, .. }),
            "{err:?}"
        );
        let err =
            CtdReader::from_reader("e.csv", io::Cursor::new(Vec::new()), ReadOptions::default())
                .unwrap_err();
        assert!(matches!(err, Error::MissingFieldsHeader { .. }), "{err:?}");
    }

    #[test]
    fn missing_required_column_is_an_error() {
        let err = CtdReader::from_reader(
            "c.csv",
            io::Cursor::new(b"# Fields:\n# GeneSymbol,GeneID,DiseaseName\n".to_vec()),
            ReadOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::MissingColumn {
                    column: "DiseaseID",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn skip_policy_counts_bad_rows_and_keeps_good_ones() {
        let body = "A,1,D,MESH:D1,therapeutic,,5\n\
                    B,2,\"open,MESH:D2,therapeutic,,5\n\
                    C,3,D,MESH:D3,therapeutic,5\n\
                    D,x,D,MESH:D4,therapeutic,,5\n\
                    E,5,E,MESH:D5,marker/mechanism,,\n";
        let mut r = reader(body, BadRowPolicy::Skip).unwrap();
        let recs: Vec<_> = r.by_ref().collect::<Result<_>>().unwrap();
        assert_eq!(
            recs.iter()
                .map(|r| r.gene_symbol.as_str())
                .collect::<Vec<_>>(),
            ["A", "E"]
        );
        let s = r.stats();
        assert_eq!(s.skipped_rows, 3);
        assert_eq!(s.skipped_by_kind["unterminated_quote"], 1);
        assert_eq!(s.skipped_by_kind["column_count"], 1);
        assert_eq!(s.skipped_by_kind["bad_value"], 1);
        assert_eq!(s.first_skipped.len(), 3);
        assert_eq!(s.records, 2);
    }

    #[test]
    fn overlong_line_is_an_error_not_an_allocation_spiral() {
        let mut text = HEADER.as_bytes().to_vec();
        text.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES + 10));
        let r = CtdReader::from_reader("big.csv", io::Cursor::new(text), ReadOptions::default())
            .unwrap();
        assert!(matches!(all(r).unwrap_err(), Error::LineTooLong { .. }));
    }
}
