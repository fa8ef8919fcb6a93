//! A grid of cells coloured by value, each cell showing its value (a confusion
//! matrix, a correlation table).

use std::path::Path;

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::charts::{ChartStyle, FONT, check_finite, render, shorten, tick, write};
use crate::error::{Error, Result};

/// An `n x m` grid: row `i`, column `j` is a cell coloured by `values[i][j]` on a
/// white-to-dark-blue scale from the smallest to the largest value, with the
/// value written in it. Row 0 is at the top, column 0 at the left; the row
/// labels run down the left side, the column labels along the bottom, and
/// `style.y_label` / `style.x_label` name the two axes.
///
/// [`Heatmap::confusion`] builds one for a confusion matrix, with the axes
/// titled `true` (rows) and `predicted` (columns).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use bioalign_plot::Heatmap;
/// let chart = Heatmap::confusion("Zero-shot", &["false", "true"], &[vec![40, 10], vec![5, 45]]);
/// chart.save(&dir.path().join("confusion.png"))?;
/// # Ok::<(), bioalign_plot::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// Title, axes (`x_label` under the columns, `y_label` beside the rows), size.
    pub style: ChartStyle,
    /// One name per row, top to bottom.
    pub row_labels: Vec<String>,
    /// One name per column, left to right.
    pub col_labels: Vec<String>,
    /// `values[row][col]`; every row has `col_labels.len()` entries.
    pub values: Vec<Vec<f64>>,
}

/// Colour of the darkest cell (matplotlib's `Blues` at 1.0).
const DARK: (f64, f64, f64) = (8.0, 48.0, 107.0);

/// Cell colour for `t` in `0..=1`: white at 0, [`DARK`] at 1.
fn shade(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let mix = |d: f64| (255.0 + (d - 255.0) * t).round() as u8;
    RGBColor(mix(DARK.0), mix(DARK.1), mix(DARK.2))
}

/// One axis of `count` unit cells, `0.0..count`, with its ticks (and so its
/// labels) at the cell centres rather than at round numbers.
struct Cells(usize);

impl Ranged for Cells {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = value / self.0 as f64;
        limit.0 + ((limit.1 - limit.0) as f64 * t).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.0).map(|i| i as f64 + 0.5).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0 as f64
    }
}

impl Heatmap {
    /// A confusion matrix: `counts[i][j]` rows with true class `labels[i]`
    /// predicted as `labels[j]`; 720 x 600 pixels, axes `true` and `predicted`.
    pub fn confusion(
        title: impl Into<String>,
        labels: &[impl ToString],
        counts: &[Vec<usize>],
    ) -> Self {
        let labels: Vec<String> = labels.iter().map(ToString::to_string).collect();
        Self {
            style: ChartStyle::new(title, "predicted", "true").with_size(720, 600),
            row_labels: labels.clone(),
            col_labels: labels,
            values: counts
                .iter()
                .map(|row| row.iter().map(|&c| c as f64).collect())
                .collect(),
        }
    }

    fn validate(&self) -> Result<()> {
        let chart = &self.style.title;
        let (n, m) = (self.row_labels.len(), self.col_labels.len());
        if n == 0 || m == 0 || self.values.is_empty() {
            return Err(Error::Empty {
                chart: chart.clone(),
            });
        }
        if self.values.len() != n {
            return Err(Error::LengthMismatch {
                chart: chart.clone(),
                what: "values (rows)",
                expected: n,
                found: self.values.len(),
            });
        }
        if let Some(row) = self.values.iter().find(|r| r.len() != m) {
            return Err(Error::LengthMismatch {
                chart: chart.clone(),
                what: "values (columns of a row)",
                expected: m,
                found: row.len(),
            });
        }
        check_finite(chart, "values", self.values.iter().flatten().copied())?;
        if n > 100 || m > 100 {
            return Err(Error::Invalid {
                chart: chart.clone(),
                field: "values",
                reason: format!("{n} x {m} cells is more than 100 x 100"),
            });
        }
        Ok(())
    }

    /// Where `v` falls between the smallest and the largest value (0 when all are equal).
    fn scale(&self, v: f64) -> f64 {
        let all = || self.values.iter().flatten().copied();
        let lo = all().fold(f64::INFINITY, f64::min);
        let hi = all().fold(f64::NEG_INFINITY, f64::max);
        if hi > lo { (v - lo) / (hi - lo) } else { 0.0 }
    }

    /// Draws the grid and returns PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let (n, m) = (self.row_labels.len(), self.col_labels.len());
        let rows: Vec<String> = self.row_labels.iter().map(|l| shorten(l)).collect();
        let cols: Vec<String> = self.col_labels.iter().map(|l| shorten(l)).collect();
        let longest = rows.iter().map(|l| l.chars().count()).max().unwrap_or(1);
        let left = (longest as u32 * 8 + 40).min(self.style.width / 2).max(50);
        // Cell text shrinks with the cell, within 10..=22 px.
        let cell_px = (self.style.width.saturating_sub(left + 40) / m as u32)
            .min(self.style.height.saturating_sub(130) / n as u32);
        let text_px = (cell_px / 4).clamp(10, 22);
        render(&self.style, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.style.title, (FONT, 24))
                .margin(12)
                .x_label_area_size(50)
                .y_label_area_size(left)
                .build_cartesian_2d(Cells(m), Cells(n))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(m)
                .y_labels(n)
                .x_label_formatter(&|x| {
                    let j = x.floor();
                    if j >= 0.0 && (j as usize) < m {
                        cols[j as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|y| {
                    let i = y.floor();
                    if i >= 0.0 && (i as usize) < n {
                        // Row 0 is drawn at the top.
                        rows[n - 1 - i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .x_desc(&self.style.x_label)
                .y_desc(&self.style.y_label)
                .label_style((FONT, 16))
                .axis_desc_style((FONT, 18))
                .draw()?;
            for (i, row) in self.values.iter().enumerate() {
                let y = (n - 1 - i) as f64;
                for (j, &v) in row.iter().enumerate() {
                    let x = j as f64;
                    let t = self.scale(v);
                    chart.draw_series([
                        Rectangle::new([(x, y), (x + 1.0, y + 1.0)], shade(t).filled()),
                        Rectangle::new([(x, y), (x + 1.0, y + 1.0)], RGBColor(200, 200, 200)),
                    ])?;
                    let ink = if t > 0.5 { WHITE } else { BLACK };
                    let style = TextStyle::from((FONT, text_px as f64))
                        .pos(Pos::new(HPos::Center, VPos::Center))
                        .color(&ink);
                    chart.draw_series([Text::new(tick(&v), (x + 0.5, y + 0.5), style)])?;
                }
            }
            Ok(())
        })
    }

    /// Draws the grid into a PNG file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write(path, &self.to_png()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::png::decode_rgb;

    /// Centroid `(x, y)` of the pixels painted exactly in colour `c`, and their count.
    fn centroid(png: &[u8], c: RGBColor) -> (f64, f64, usize) {
        let (w, _, rgb) = decode_rgb(png);
        let (mut sx, mut sy, mut k) = (0.0, 0.0, 0usize);
        for (p, px) in rgb.chunks(3).enumerate() {
            if px == [c.0, c.1, c.2] {
                sx += (p % w as usize) as f64;
                sy += (p / w as usize) as f64;
                k += 1;
            }
        }
        (sx / k.max(1) as f64, sy / k.max(1) as f64, k)
    }

    #[test]
    fn save_writes_png_of_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cm.png");
        let cm = Heatmap::confusion("cm", &[0, 1], &[vec![3, 1], vec![0, 4]]);
        assert_eq!(cm.style.x_label, "predicted");
        assert_eq!(cm.style.y_label, "true");
        cm.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        let (w, h, _) = decode_rgb(&bytes);
        assert_eq!((w, h), (720, 600));
    }

    #[test]
    fn largest_cell_is_dark_and_in_its_place() {
        // The dark cell goes where its row and column say: row 0 at the top,
        // column 1 at the right.
        let hm = Heatmap::confusion("cm", &["a", "b"], &[vec![0, 9], vec![0, 0]]);
        let png = hm.to_png().unwrap();
        let (w, h, _) = decode_rgb(&png);
        let (x, y, k) = centroid(&png, shade(1.0));
        assert!(k > 5_000, "only {k} dark pixels");
        assert!(
            x > w as f64 / 2.0 && y < h as f64 / 2.0,
            "dark cell at ({x}, {y})"
        );
        let hm = Heatmap::confusion("cm", &["a", "b"], &[vec![0, 0], vec![9, 0]]);
        let png = hm.to_png().unwrap();
        let (x, y, _) = centroid(&png, shade(1.0));
        assert!(
            x < w as f64 / 2.0 && y > h as f64 / 2.0,
            "dark cell at ({x}, {y})"
        );
        // Zero cells stay white: at most a few anti-aliased text pixels land on
        // a mid shade, while a cell at half the maximum fills thousands.
        assert!(centroid(&png, shade(0.5)).2 < 50);
        let hm = Heatmap::confusion("cm", &["a", "b"], &[vec![0, 0], vec![9, 4]]);
        assert!(centroid(&hm.to_png().unwrap(), shade(4.0 / 9.0)).2 > 5_000);
    }

    #[test]
    fn rectangular_grid_and_equal_values_draw() {
        let hm = Heatmap {
            style: ChartStyle::new("t", "col", "row").with_size(500, 300),
            row_labels: vec!["r0".into(), "r1".into()],
            col_labels: vec!["c0".into(), "c1".into(), "c2".into()],
            values: vec![vec![0.5; 3], vec![0.5; 3]],
        };
        let png = hm.to_png().unwrap();
        assert_eq!(decode_rgb(&png).0, 500);
        assert_eq!(
            centroid(&png, shade(1.0)).2,
            0,
            "equal values are all light"
        );
    }

    #[test]
    fn shade_runs_white_to_dark() {
        assert_eq!(shade(0.0), WHITE);
        assert_eq!(shade(1.0), RGBColor(8, 48, 107));
        assert_eq!(shade(2.0), shade(1.0));
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let ok = Heatmap::confusion("cm", &[0, 1], &[vec![1, 2], vec![3, 4]]);
        let empty = Heatmap::confusion("cm", &[] as &[usize], &[]);
        assert!(matches!(empty.to_png(), Err(Error::Empty { .. })));
        let ragged = Heatmap {
            values: vec![vec![1.0, 2.0], vec![3.0]],
            ..ok.clone()
        };
        assert!(matches!(ragged.to_png(), Err(Error::LengthMismatch { .. })));
        let rows = Heatmap {
            values: vec![vec![1.0, 2.0]],
            ..ok.clone()
        };
        assert!(matches!(
            rows.to_png(),
            Err(Error::LengthMismatch {
                expected: 2,
                found: 1,
                ..
            })
        ));
        let nan = Heatmap {
            values: vec![vec![1.0, 2.0], vec![f64::NAN, 4.0]],
            ..ok.clone()
        };
        assert!(matches!(
            nan.to_png(),
            Err(Error::NonFinite { index: 2, .. })
        ));
        let tiny = Heatmap {
            style: ok.style.clone().with_size(20, 20),
            ..ok
        };
        assert!(matches!(tiny.to_png(), Err(Error::Invalid { .. })));
    }
}
