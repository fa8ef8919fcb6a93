//! PNG plots of the measures (feature `plots`), drawn with `bioalign-plot`.
//!
//! - [`projection_scatter`]: 2-D projections coloured by label, several models
//!   side by side in one image (each panel rescaled to the unit square and
//!   shifted right; t-SNE axes carry no units anyway).
//! - [`metric_bars`]: one bar per metric; `bioalign-plot` has no error bars,
//!   so the confidence interval is printed in the bar's label.
//! - [`confusion_bars`]: the confusion-matrix cells as labelled bars
//!   (`bioalign-plot` has no heatmap).

use std::path::Path;

use bioalign_plot::{BarChart, ChartStyle, Scatter};

use crate::check;
use crate::classification::ConfusionMatrix;
use crate::error::{Error, Result};
use crate::stats::ConfidenceInterval;

/// One panel of [`projection_scatter`]: a model's 2-D coordinates and row labels.
#[derive(Debug, Clone, Copy)]
pub struct Panel<'a> {
    /// Panel name, for the legend (`"base"`, `"fine-tuned"`).
    pub name: &'a str,
    /// `(x, y)` per row.
    pub coords: &'a [Vec<f64>],
    /// Binary label per row (1 = true statement).
    pub labels: &'a [usize],
}

/// Draws the panels side by side, coloured by `panel x label`, into `path`.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use bioalign_metrics::plots::{projection_scatter, Panel};
/// let base = vec![vec![0.0, 0.0], vec![1.0, 0.5], vec![0.2, 0.9]];
/// let tuned = vec![vec![0.0, 0.0], vec![3.0, 3.0], vec![0.1, 0.2]];
/// let labels = [0, 1, 0];
/// let path = dir.path().join("tsne.png");
/// projection_scatter(&path, "t-SNE", &[
///     Panel { name: "base", coords: &base, labels: &labels },
///     Panel { name: "fine-tuned", coords: &tuned, labels: &labels },
/// ])?;
/// assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG"));
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn projection_scatter(path: &Path, title: &str, panels: &[Panel<'_>]) -> Result<()> {
    if panels.is_empty() {
        return Err(Error::Empty {
            what: "projection plot",
        });
    }
    let mut points = Vec::new();
    let mut classes = Vec::new();
    let mut class_names = Vec::new();
    for (p, panel) in panels.iter().enumerate() {
        check::same_len(
            "projection plot: coordinates vs labels",
            panel.coords.len(),
            panel.labels.len(),
        )?;
        check::binary_labels("projection plot", panel.labels)?;
        if let Some(row) = panel.coords.iter().position(|c| c.len() < 2) {
            return Err(Error::ShapeMismatch {
                what: "projection plot: coordinates",
                expected: vec![panel.coords.len(), 2],
                found: vec![row, panel.coords[row].len()],
            });
        }
        let range = |k: usize| {
            let lo = panel
                .coords
                .iter()
                .map(|c| c[k])
                .fold(f64::INFINITY, f64::min);
            let hi = panel
                .coords
                .iter()
                .map(|c| c[k])
                .fold(f64::NEG_INFINITY, f64::max);
            (lo, if hi > lo { hi - lo } else { 1.0 })
        };
        let ((x0, xs), (y0, ys)) = (range(0), range(1));
        let offset = 1.25 * p as f64;
        for (c, &l) in panel.coords.iter().zip(panel.labels) {
            points.push(((c[0] - x0) / xs + offset, (c[1] - y0) / ys));
            classes.push(2 * p + l);
        }
        class_names.push(format!("{}: false", panel.name));
        class_names.push(format!("{}: true", panel.name));
    }
    let names: Vec<&str> = panels.iter().map(|p| p.name).collect();
    Scatter {
        style: ChartStyle::new(
            title,
            format!("{} (each panel rescaled)", names.join(" | ")),
            "",
        ),
        points,
        classes,
        class_names,
    }
    .save(path)?;
    Ok(())
}

/// One bar per `(name, interval)`; the label shows the estimate and the
/// interval. Negative estimates are drawn as 0-length bars (the label keeps the value).
pub fn metric_bars(
    path: &Path,
    title: &str,
    metrics: &[(String, ConfidenceInterval)],
) -> Result<()> {
    if metrics.is_empty() {
        return Err(Error::Empty {
            what: "metric bars",
        });
    }
    let labels = metrics
        .iter()
        .map(|(n, ci)| format!("{n} {:.3} [{:.3}, {:.3}]", ci.estimate, ci.lower, ci.upper))
        .collect();
    let values = metrics.iter().map(|(_, ci)| ci.estimate.max(0.0)).collect();
    BarChart {
        style: ChartStyle::new(title, "value", ""),
        labels,
        values,
    }
    .save(path)?;
    Ok(())
}

/// The cells of a confusion matrix as bars labelled `true a -> predicted b`.
pub fn confusion_bars(path: &Path, title: &str, cm: &ConfusionMatrix) -> Result<()> {
    let mut labels = Vec::new();
    let mut values = Vec::new();
    for (i, row) in cm.counts.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            labels.push(format!(
                "true {} -> predicted {}",
                cm.labels[i], cm.labels[j]
            ));
            values.push(c as f64);
        }
    }
    BarChart {
        style: ChartStyle::new(title, "rows", ""),
        labels,
        values,
    }
    .save(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion_matrix;

    #[test]
    fn bars_and_confusion_write_pngs_and_reject_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let ci = ConfidenceInterval {
            estimate: 0.8,
            lower: 0.7,
            upper: 0.9,
            confidence: 0.95,
            n_resamples: 100,
            n_failed: 0,
        };
        let p = dir.path().join("bars.png");
        metric_bars(&p, "probe", &[("accuracy".into(), ci)]).unwrap();
        assert!(std::fs::read(&p).unwrap().starts_with(b"\x89PNG"));
        let cm = confusion_matrix(&[0, 1, 1], &[0, 1, 0]).unwrap();
        let p = dir.path().join("cm.png");
        confusion_bars(&p, "zero-shot", &cm).unwrap();
        assert!(std::fs::read(&p).unwrap().starts_with(b"\x89PNG"));
        let coords = vec![vec![0.0, 1.0]];
        let r = projection_scatter(
            &dir.path().join("x.png"),
            "t",
            &[Panel {
                name: "a",
                coords: &coords,
                labels: &[0, 1],
            }],
        );
        assert!(matches!(r, Err(Error::LengthMismatch { .. })));
    }
}
