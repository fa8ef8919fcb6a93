//! PNG plots of the measures (feature `plots`), drawn with `bioalign-plot`.
//!
//! - [`projection_scatter`]: 2-D projections coloured by label, several models
//!   side by side in one image (each panel rescaled to the unit square and
//!   shifted right; t-SNE axes carry no units anyway).
//! - [`metric_bars`]: one bar per metric with its confidence interval drawn
//!   as a whisker ([`bioalign_plot::ErrorBarChart`]).
//! - [`confusion_heatmap`] (also reachable as [`confusion_bars`], its older
//!   name): the confusion matrix as a grid of cells shaded by count, true
//!   label by row, predicted label by column ([`bioalign_plot::Heatmap`]).

use std::path::Path;

use bioalign_plot::{ChartStyle, ErrorBarChart, Heatmap, Scatter};

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

/// One bar per `(name, interval)`: the bar is the estimate, the whisker the
/// interval, and the label the name with the estimate. Bars start at 0, so a
/// negative estimate (an MCC) draws to the left. An interval with a non-finite
/// end is drawn without a whisker and a non-finite estimate as a 0-length bar;
/// the label says `n/a` for either.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use bioalign_metrics::plots::metric_bars;
/// use bioalign_metrics::stats::ConfidenceInterval;
/// let ci = ConfidenceInterval {
///     estimate: 0.8, lower: 0.7, upper: 0.9, confidence: 0.95, n_resamples: 100, n_failed: 0,
/// };
/// metric_bars(&dir.path().join("probe.png"), "Linear probe", &[("accuracy".into(), ci)])?;
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
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
    let mut chart = ErrorBarChart {
        style: ChartStyle::new(title, "value", ""),
        labels: Vec::with_capacity(metrics.len()),
        values: Vec::with_capacity(metrics.len()),
        lower: Vec::with_capacity(metrics.len()),
        upper: Vec::with_capacity(metrics.len()),
    };
    for (name, ci) in metrics {
        let value = if ci.estimate.is_finite() {
            ci.estimate
        } else {
            0.0
        };
        let (lower, upper, label) =
            if ci.estimate.is_finite() && ci.lower.is_finite() && ci.upper.is_finite() {
                (
                    ci.lower.min(ci.upper),
                    ci.lower.max(ci.upper),
                    format!("{name} {:.3}", ci.estimate),
                )
            } else {
                (value, value, format!("{name} n/a"))
            };
        chart.labels.push(label);
        chart.values.push(value);
        chart.lower.push(lower);
        chart.upper.push(upper);
    }
    chart.save(path)?;
    Ok(())
}

/// The confusion matrix as a heatmap: one cell per `(true, predicted)` pair,
/// shaded by its count with the count written in it; rows are the true labels
/// (axis `true`), columns the predicted ones (axis `predicted`).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use bioalign_metrics::{confusion_matrix, plots::confusion_heatmap};
/// let cm = confusion_matrix(&[0, 1, 1, 0], &[0, 1, 0, 0])?;
/// confusion_heatmap(&dir.path().join("cm.png"), "Zero-shot", &cm)?;
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn confusion_heatmap(path: &Path, title: &str, cm: &ConfusionMatrix) -> Result<()> {
    check::same_len(
        "confusion heatmap: rows vs labels",
        cm.counts.len(),
        cm.labels.len(),
    )?;
    Heatmap::confusion(title, &cm.labels, &cm.counts).save(path)?;
    Ok(())
}

/// The same as [`confusion_heatmap`]: the older name, from when the cells were
/// drawn as bars; kept so existing callers keep working.
pub fn confusion_bars(path: &Path, title: &str, cm: &ConfusionMatrix) -> Result<()> {
    confusion_heatmap(path, title, cm)
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

    /// Width and height from a PNG's `IHDR`.
    fn png_size(path: &Path) -> (u32, u32) {
        let b = std::fs::read(path).unwrap();
        assert!(b.starts_with(b"\x89PNG"));
        let be = |r: std::ops::Range<usize>| u32::from_be_bytes(b[r].try_into().unwrap());
        (be(16..20), be(20..24))
    }

    #[test]
    fn confusion_is_a_heatmap_and_both_names_agree() {
        let dir = tempfile::tempdir().unwrap();
        let cm = confusion_matrix(&[0, 1, 1, 0, 1], &[0, 1, 0, 0, 1]).unwrap();
        let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
        confusion_heatmap(&a, "zero-shot", &cm).unwrap();
        confusion_bars(&b, "zero-shot", &cm).unwrap();
        // The heatmap's size, not the 900 x 600 of the old bar chart.
        assert_eq!(png_size(&a), (720, 600));
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let bad = ConfusionMatrix {
            labels: vec![0, 1],
            counts: vec![vec![1, 2]],
        };
        assert!(matches!(
            confusion_heatmap(&dir.path().join("c.png"), "t", &bad),
            Err(Error::LengthMismatch { .. })
        ));
        let ragged = ConfusionMatrix {
            labels: vec![0, 1],
            counts: vec![vec![1, 2], vec![3]],
        };
        assert!(matches!(
            confusion_heatmap(&dir.path().join("d.png"), "t", &ragged),
            Err(Error::Plot(bioalign_plot::Error::LengthMismatch { .. }))
        ));
        assert!(!dir.path().join("d.png").exists());
    }

    #[test]
    fn metric_bars_take_negative_and_undefined_intervals() {
        let dir = tempfile::tempdir().unwrap();
        let ci = |estimate: f64, lower: f64, upper: f64| ConfidenceInterval {
            estimate,
            lower,
            upper,
            confidence: 0.95,
            n_resamples: 100,
            n_failed: 0,
        };
        let p = dir.path().join("bars.png");
        metric_bars(
            &p,
            "probe",
            &[
                ("accuracy".into(), ci(0.8, 0.7, 0.9)),
                ("MCC".into(), ci(-0.1, -0.3, 0.05)),
                ("AUC".into(), ci(0.6, f64::NAN, f64::NAN)),
                ("F1".into(), ci(f64::NAN, f64::NAN, f64::NAN)),
            ],
        )
        .unwrap();
        assert_eq!(png_size(&p), (900, 600));
        assert!(matches!(
            metric_bars(&dir.path().join("e.png"), "probe", &[]),
            Err(Error::Empty { .. })
        ));
    }
}
