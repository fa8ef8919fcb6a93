//! Horizontal bars with an interval (whisker) drawn over each bar.

use std::path::Path;

use plotters::prelude::*;

use crate::charts::{ChartStyle, FONT, check_finite, colour, render, shorten, tick, write};
use crate::error::{Error, Result};

/// Horizontal bars, one per label (read top to bottom), each with an interval
/// `lower[i] ..= upper[i]` drawn as a black whisker with end caps: an estimate
/// and its confidence interval.
///
/// Bars start at 0, so negative values draw to the left; the axis covers 0, every
/// value and every interval end.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use bioalign_plot::{ChartStyle, ErrorBarChart};
/// let chart = ErrorBarChart {
///     style: ChartStyle::new("Probe", "value", ""),
///     labels: vec!["accuracy".into(), "F1".into()],
///     values: vec![0.81, 0.77],
///     lower: vec![0.76, 0.70],
///     upper: vec![0.86, 0.83],
/// };
/// chart.save(&dir.path().join("probe.png"))?;
/// # Ok::<(), bioalign_plot::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBarChart {
    /// Title, axes, size.
    pub style: ChartStyle,
    /// Category names (long names are shortened on the axis).
    pub labels: Vec<String>,
    /// Bar lengths (the estimates).
    pub values: Vec<f64>,
    /// Lower end of each interval.
    pub lower: Vec<f64>,
    /// Upper end of each interval, not below `lower`.
    pub upper: Vec<f64>,
}

impl ErrorBarChart {
    fn validate(&self) -> Result<()> {
        let chart = &self.style.title;
        let n = self.values.len();
        if n == 0 {
            return Err(Error::Empty {
                chart: chart.clone(),
            });
        }
        for (what, len) in [
            ("labels", self.labels.len()),
            ("lower", self.lower.len()),
            ("upper", self.upper.len()),
        ] {
            if len != n {
                return Err(Error::LengthMismatch {
                    chart: chart.clone(),
                    what,
                    expected: n,
                    found: len,
                });
            }
        }
        check_finite(chart, "values", self.values.iter().copied())?;
        check_finite(chart, "lower", self.lower.iter().copied())?;
        check_finite(chart, "upper", self.upper.iter().copied())?;
        if let Some(i) = (0..n).find(|&i| self.lower[i] > self.upper[i]) {
            return Err(Error::Invalid {
                chart: chart.clone(),
                field: "lower",
                reason: format!(
                    "bar {i}: lower {} is above upper {}",
                    self.lower[i], self.upper[i]
                ),
            });
        }
        Ok(())
    }

    /// Draws the chart and returns PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let n = self.values.len();
        let all = || {
            self.values
                .iter()
                .chain(&self.lower)
                .chain(&self.upper)
                .copied()
        };
        let lo = all().fold(0.0f64, f64::min);
        let hi = all().fold(0.0f64, f64::max);
        let span = (hi - lo).max(1e-9);
        let (x0, x1) = (
            if lo < 0.0 { lo - 0.05 * span } else { 0.0 },
            if hi > 0.0 { hi + 0.05 * span } else { 0.0 },
        );
        let labels: Vec<String> = self.labels.iter().map(|l| shorten(l)).collect();
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
        let left = (longest as u32 * 8 + 20).min(self.style.width / 2).max(40);
        render(&self.style, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.style.title, (FONT, 24))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(left)
                .build_cartesian_2d(x0..x1.max(x0 + 1e-9), -0.5..(n as f64 - 0.5))?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .x_label_formatter(&tick)
                .y_labels(n.min(40))
                .y_label_formatter(&|y| {
                    let i = y.round();
                    if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                        // Top of the chart shows the first label.
                        labels[n - 1 - i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .x_desc(&self.style.x_label)
                .y_desc(&self.style.y_label)
                .label_style((FONT, 13))
                .draw()?;
            let y_of = |i: usize| (n - 1 - i) as f64;
            chart.draw_series(self.values.iter().enumerate().map(|(i, v)| {
                let y = y_of(i);
                Rectangle::new(
                    [(0.0, y - 0.38), (*v, y + 0.38)],
                    colour(0).mix(0.75).filled(),
                )
            }))?;
            let whisker = BLACK.stroke_width(2);
            for i in 0..n {
                let (y, a, b) = (y_of(i), self.lower[i], self.upper[i]);
                chart.draw_series([
                    PathElement::new(vec![(a, y), (b, y)], whisker),
                    PathElement::new(vec![(a, y - 0.15), (a, y + 0.15)], whisker),
                    PathElement::new(vec![(b, y - 0.15), (b, y + 0.15)], whisker),
                ])?;
            }
            Ok(())
        })
    }

    /// Draws the chart into a PNG file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write(path, &self.to_png()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::png::decode_rgb;

    fn chart(lower: Vec<f64>, upper: Vec<f64>) -> ErrorBarChart {
        ErrorBarChart {
            style: ChartStyle::new("t", "value", "").with_size(400, 300),
            labels: vec!["accuracy".into(), "F1".into()],
            values: vec![1.0, 1.0],
            lower,
            upper,
        }
    }

    /// Pixels drawn in pure black (axes, text and whiskers).
    fn black(png: &[u8]) -> usize {
        let (_, _, rgb) = decode_rgb(png);
        rgb.chunks(3).filter(|p| p == &[0, 0, 0]).count()
    }

    #[test]
    fn save_writes_png_of_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ci.png");
        chart(vec![0.5, 0.8], vec![1.5, 1.2]).save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        let (w, h, rgb) = decode_rgb(&bytes);
        assert_eq!((w, h), (400, 300));
        assert_eq!(rgb.len(), 400 * 300 * 3);
    }

    #[test]
    fn whiskers_are_drawn() {
        // Same axis range (the first bar's interval sets it); only the second
        // bar's interval differs, so the extra black pixels are its whisker.
        let narrow = chart(vec![0.5, 1.0], vec![1.5, 1.0]).to_png().unwrap();
        let wide = chart(vec![0.5, 0.5], vec![1.5, 1.5]).to_png().unwrap();
        assert!(
            black(&wide) > black(&narrow) + 100,
            "wide {} vs narrow {}",
            black(&wide),
            black(&narrow)
        );
    }

    #[test]
    fn negative_values_draw() {
        let c = ErrorBarChart {
            values: vec![-0.2, 0.4],
            lower: vec![-0.5, 0.1],
            upper: vec![0.1, 0.6],
            ..chart(vec![], vec![])
        };
        assert!(c.to_png().is_ok());
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let empty = ErrorBarChart {
            labels: vec![],
            values: vec![],
            ..chart(vec![], vec![])
        };
        assert!(matches!(empty.to_png(), Err(Error::Empty { .. })));
        let short = chart(vec![0.5], vec![1.5, 1.5]);
        assert!(matches!(
            short.to_png(),
            Err(Error::LengthMismatch { what: "lower", .. })
        ));
        let nan = chart(vec![0.5, f64::NAN], vec![1.5, 1.5]);
        assert!(matches!(
            nan.to_png(),
            Err(Error::NonFinite {
                what: "lower",
                index: 1,
                ..
            })
        ));
        let inf = ErrorBarChart {
            values: vec![1.0, f64::INFINITY],
            ..chart(vec![0.5, 0.5], vec![1.5, 1.5])
        };
        assert!(matches!(inf.to_png(), Err(Error::NonFinite { .. })));
        let swapped = chart(vec![0.5, 1.2], vec![1.5, 0.8]);
        assert!(matches!(swapped.to_png(), Err(Error::Invalid { .. })));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("never.png");
        assert!(swapped.save(&path).is_err());
        assert!(!path.exists());
    }
}
