//! Streaming benchmark for the CTD reader (figures go to docs/benchmarks-ctd.md).
//!
//! ```text
//! cargo run --release --example ctd_stream -- generate --rows 5000000 --out /tmp/ctd_full_5m.csv
//! cargo run --release --example ctd_stream -- read /tmp/ctd_full_5m.csv
//! cargo run --release --example ctd_stream -- positives /tmp/ctd_full_5m.csv
//! cargo run --release --example ctd_stream -- prepare FILE --out DIR [--repeat 5]
//! ```
//!
//! Each command prints one line of figures: wall time, MB/s over the file's
//! bytes as stored, and peak resident memory (VmHWM from /proc/self/status).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bioalign_ctd::synth::{SynthConfig, write_full_layout};
use bioalign_ctd::{
    CtdReader, CtdRecord, EvidenceFilter, PrepareConfig, ReadOptions, collect_positives, prepare,
    write_outputs,
};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Throughput and memory of the CTD reader and dataset builder")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a synthetic file in the full CTD_genes_diseases layout.
    Generate {
        /// Data rows.
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Stream every record through the reader (no other work).
    Read {
        /// CTD file (plain or gzip).
        file: PathBuf,
    },
    /// Reader + cleaning + evidence filter + de-duplication + known-pair set.
    Positives {
        /// CTD file (plain or gzip).
        file: PathBuf,
    },
    /// The whole prepare_data pipeline (default settings), outputs included.
    Prepare {
        /// CTD file.
        file: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Runs; the figures of each are printed.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
    },
}

/// Peak resident set size in MiB, from /proc/self/status (Linux).
fn vm_hwm_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn report(what: &str, bytes: u64, secs: f64, extra: &str) {
    println!(
        "{what}: {:.1} MB in {secs:.3} s = {:.0} MB/s; peak RSS {:.1} MiB; {extra}",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs.max(1e-9),
        vm_hwm_mib().unwrap_or(f64::NAN)
    );
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Generate { rows, out } => {
            let t = Instant::now();
            let mut bytes = 0;
            bioalign_io::atomic_write(&out, |w| {
                bytes = write_full_layout(w, rows, &SynthConfig::default())?;
                Ok(())
            })?;
            report(
                "generate",
                bytes,
                t.elapsed().as_secs_f64(),
                &format!("{rows} rows -> {}", out.display()),
            );
        }
        Cmd::Read { file } => {
            let t = Instant::now();
            let mut r = CtdReader::open(&file, ReadOptions::default())
                .with_context(|| file.display().to_string())?;
            let mut rec = CtdRecord::default();
            let mut n = 0u64;
            let mut pmids = 0u64;
            while r.read_record(&mut rec)? {
                n += 1;
                pmids += rec.pubmed_ids.len() as u64;
            }
            report(
                "read",
                r.raw_bytes(),
                t.elapsed().as_secs_f64(),
                &format!("{n} records, {pmids} PubMed IDs, gzip {}", r.is_gzip()),
            );
        }
        Cmd::Positives { file } => {
            let t = Instant::now();
            let mut r = CtdReader::open(&file, ReadOptions::default())
                .with_context(|| file.display().to_string())?;
            let p = collect_positives(&mut r, &EvidenceFilter::default(), |_, _| {})?;
            report(
                "positives",
                r.raw_bytes(),
                t.elapsed().as_secs_f64(),
                &format!(
                    "{} records, {} positives, {} known pairs",
                    p.clean.rows,
                    p.pairs.len(),
                    p.clean.known_pairs
                ),
            );
        }
        Cmd::Prepare { file, out, repeat } => {
            let bytes = std::fs::metadata(&file)?.len();
            for _ in 0..repeat {
                let t = Instant::now();
                let built = prepare(&file, &PrepareConfig::default(), |_, _| {})?;
                let t_build = t.elapsed().as_secs_f64();
                write_outputs(&built, &out)?;
                report(
                    "prepare",
                    bytes,
                    t.elapsed().as_secs_f64(),
                    &format!("build {t_build:.3} s, {} rows", built.rows.len()),
                );
            }
        }
    }
    Ok(())
}
