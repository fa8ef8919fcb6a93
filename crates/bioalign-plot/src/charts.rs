//! Chart types and their drawing with plotters.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::png;

/// Title, axis labels and pixel size shared by every chart.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartStyle {
    /// Caption drawn above the plot.
    pub title: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl ChartStyle {
    /// A 900 x 600 chart with the given title and axis labels.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            width: 900,
            height: 600,
        }
    }

    /// The same style with another pixel size.
    pub fn with_size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }
}

/// Horizontal bars, one per label (categories read top to bottom).
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Title, axes, size.
    pub style: ChartStyle,
    /// Category names (long names are shortened on the axis).
    pub labels: Vec<String>,
    /// Bar lengths, non-negative.
    pub values: Vec<f64>,
}

/// Bars over contiguous bins given by their edges.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Title, axes, size.
    pub style: ChartStyle,
    /// `counts.len() + 1` increasing bin edges.
    pub edges: Vec<f64>,
    /// Height of each bin.
    pub counts: Vec<f64>,
}

/// One named line of a [`LineChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// One or more lines with a legend.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Title, axes, size.
    pub style: ChartStyle,
    /// The lines.
    pub series: Vec<Series>,
}

/// Points coloured by class, with a legend naming the classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Scatter {
    /// Title, axes, size.
    pub style: ChartStyle,
    /// `(x, y)` positions.
    pub points: Vec<(f64, f64)>,
    /// Class of each point, an index into `class_names`.
    pub classes: Vec<usize>,
    /// Legend names of the classes.
    pub class_names: Vec<String>,
}

pub(crate) const FONT: &str = "sans-serif";
const MAX_LABEL_CHARS: usize = 36;

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok { Ok(()) } else { Err(Error::Font) }
}

pub(crate) fn colour(i: usize) -> RGBColor {
    // Colour-blind-friendly palette (Okabe & Ito), cycling.
    const C: [(u8, u8, u8); 8] = [
        (0, 114, 178),
        (230, 159, 0),
        (0, 158, 115),
        (204, 121, 167),
        (86, 180, 233),
        (213, 94, 0),
        (240, 228, 66),
        (0, 0, 0),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

pub(crate) fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_LABEL_CHARS - 1).collect();
        t.push('…');
        t
    }
}

pub(crate) fn check_finite(
    chart: &str,
    what: &'static str,
    values: impl IntoIterator<Item = f64>,
) -> Result<()> {
    for (index, value) in values.into_iter().enumerate() {
        if !value.is_finite() {
            return Err(Error::NonFinite {
                chart: chart.to_string(),
                what,
                index,
                value,
            });
        }
    }
    Ok(())
}

fn check_style(style: &ChartStyle) -> Result<()> {
    if style.width < 200 || style.height < 150 || style.width > 10_000 || style.height > 10_000 {
        return Err(Error::Invalid {
            chart: style.title.clone(),
            field: "size",
            reason: format!(
                "{}x{} is outside 200x150 ..= 10000x10000",
                style.width, style.height
            ),
        });
    }
    Ok(())
}

/// Axis tick text: integers without decimals, other values with up to 3 significant decimals.
pub(crate) fn tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{:.0}", v)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}").trim_end_matches('0').to_string()
    }
}

/// Range covering `lo..hi` with a margin, never empty.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        let m = (hi - lo) * 0.05;
        (lo - m, hi + m)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

pub(crate) type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

pub(crate) fn render<F>(style: &ChartStyle, draw: F) -> Result<Vec<u8>>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
{
    check_style(style)?;
    ensure_font()?;
    let (w, h) = (style.width, style.height);
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    let drawn: DrawResult = (|| {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| Error::Draw {
        chart: style.title.clone(),
        message: e.to_string(),
    })?;
    png::encode_rgb(&buf, w, h).ok_or_else(|| Error::Draw {
        chart: style.title.clone(),
        message: "PNG encoding failed".into(),
    })
}

pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    bioalign_io::atomic_write_bytes(path, bytes).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl BarChart {
    fn validate(&self) -> Result<()> {
        let chart = &self.style.title;
        if self.values.is_empty() {
            return Err(Error::Empty {
                chart: chart.clone(),
            });
        }
        if self.labels.len() != self.values.len() {
            return Err(Error::LengthMismatch {
                chart: chart.clone(),
                what: "labels",
                expected: self.values.len(),
                found: self.labels.len(),
            });
        }
        check_finite(chart, "values", self.values.iter().copied())?;
        if let Some(index) = self.values.iter().position(|v| *v < 0.0) {
            return Err(Error::Invalid {
                chart: chart.clone(),
                field: "values",
                reason: format!("bar {index} is negative ({})", self.values[index]),
            });
        }
        Ok(())
    }

    /// Draws the chart and returns PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let n = self.values.len();
        let max = self.values.iter().copied().fold(0.0f64, f64::max);
        let labels: Vec<String> = self.labels.iter().map(|l| shorten(l)).collect();
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
        let left = (longest as u32 * 8 + 20).min(self.style.width / 2).max(40);
        render(&self.style, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.style.title, (FONT, 24))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(left)
                .build_cartesian_2d(0.0..max.max(1e-9) * 1.08, -0.5..(n as f64 - 0.5))?;
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
            chart.draw_series(self.values.iter().enumerate().map(|(i, v)| {
                let y = (n - 1 - i) as f64;
                Rectangle::new([(0.0, y - 0.38), (*v, y + 0.38)], colour(0).filled())
            }))?;
            Ok(())
        })
    }

    /// Draws the chart into a PNG file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write(path, &self.to_png()?)
    }
}

impl Histogram {
    /// Bins `values` into `bins` equal-width bins spanning their range.
    pub fn from_values(style: ChartStyle, values: &[f64], bins: usize) -> Result<Self> {
        if values.is_empty() {
            return Err(Error::Empty { chart: style.title });
        }
        if bins == 0 {
            return Err(Error::Invalid {
                chart: style.title,
                field: "bins",
                reason: "must be at least 1".into(),
            });
        }
        check_finite(&style.title, "values", values.iter().copied())?;
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let width = (hi - lo) / bins as f64;
        let edges: Vec<f64> = (0..=bins).map(|i| lo + width * i as f64).collect();
        let mut counts = vec![0.0; bins];
        for v in values {
            let b = (((v - lo) / width) as usize).min(bins - 1);
            counts[b] += 1.0;
        }
        Ok(Self {
            style,
            edges,
            counts,
        })
    }

    fn validate(&self) -> Result<()> {
        let chart = &self.style.title;
        if self.counts.is_empty() {
            return Err(Error::Empty {
                chart: chart.clone(),
            });
        }
        if self.edges.len() != self.counts.len() + 1 {
            return Err(Error::LengthMismatch {
                chart: chart.clone(),
                what: "edges",
                expected: self.counts.len() + 1,
                found: self.edges.len(),
            });
        }
        check_finite(chart, "edges", self.edges.iter().copied())?;
        check_finite(chart, "counts", self.counts.iter().copied())?;
        if let Some(i) = self.edges.windows(2).position(|w| w[1] <= w[0]) {
            return Err(Error::Invalid {
                chart: chart.clone(),
                field: "edges",
                reason: format!(
                    "edge {} ({}) is not above edge {i} ({})",
                    i + 1,
                    self.edges[i + 1],
                    self.edges[i]
                ),
            });
        }
        Ok(())
    }

    /// Draws the histogram and returns PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let lo = self.edges[0];
        let hi = self.edges[self.edges.len() - 1];
        let max = self.counts.iter().copied().fold(0.0f64, f64::max);
        render(&self.style, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.style.title, (FONT, 24))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(lo..hi, 0.0..max.max(1e-9) * 1.08)?;
            chart
                .configure_mesh()
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .x_desc(&self.style.x_label)
                .y_desc(&self.style.y_label)
                .label_style((FONT, 13))
                .draw()?;
            chart.draw_series(self.counts.iter().enumerate().map(|(i, c)| {
                Rectangle::new(
                    [(self.edges[i], 0.0), (self.edges[i + 1], *c)],
                    colour(0).filled(),
                )
            }))?;
            Ok(())
        })
    }

    /// Draws the histogram into a PNG file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write(path, &self.to_png()?)
    }
}

fn bounds<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    (padded(x0, x1), padded(y0, y1))
}

impl LineChart {
    fn validate(&self) -> Result<()> {
        let chart = &self.style.title;
        if self.series.iter().all(|s| s.points.is_empty()) {
            return Err(Error::Empty {
                chart: chart.clone(),
            });
        }
        for s in &self.series {
            check_finite(chart, "points", s.points.iter().flat_map(|p| [p.0, p.1]))?;
        }
        Ok(())
    }

    /// Draws the lines and returns PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let ((x0, x1), (y0, y1)) = bounds(self.series.iter().flat_map(|s| s.points.iter()));
        render(&self.style, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.style.title, (FONT, 24))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .x_desc(&self.style.x_label)
                .y_desc(&self.style.y_label)
                .label_style((FONT, 13))
                .draw()?;
            for (i, s) in self.series.iter().enumerate() {
                let c = colour(i);
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            Ok(())
        })
    }

    /// Draws the lines into a PNG file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write(path, &self.to_png()?)
    }
}

impl Scatter {
    fn validate(&self) -> Result<()> {
        let chart = &self.style.title;
        if self.points.is_empty() {
            return Err(Error::Empty {
                chart: chart.clone(),
            });
        }
        if self.classes.len() != self.points.len() {
            return Err(Error::LengthMismatch {
                chart: chart.clone(),
                what: "classes",
                expected: self.points.len(),
                found: self.classes.len(),
            });
        }
        check_finite(chart, "points", self.points.iter().flat_map(|p| [p.0, p.1]))?;
        if let Some(i) = self
            .classes
            .iter()
            .position(|c| *c >= self.class_names.len())
        {
            return Err(Error::Invalid {
                chart: chart.clone(),
                field: "classes",
                reason: format!(
                    "point {i} has class {} but only {} class names are given",
                    self.classes[i],
                    self.class_names.len()
                ),
            });
        }
        Ok(())
    }

    /// Draws the points and returns PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let ((x0, x1), (y0, y1)) = bounds(self.points.iter());
        render(&self.style, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.style.title, (FONT, 24))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .x_desc(&self.style.x_label)
                .y_desc(&self.style.y_label)
                .label_style((FONT, 13))
                .draw()?;
            for (k, name) in self.class_names.iter().enumerate() {
                let c = colour(k);
                chart
                    .draw_series(
                        self.points
                            .iter()
                            .zip(&self.classes)
                            .filter(|(_, cls)| **cls == k)
                            .map(|(p, _)| Circle::new(*p, 3, c.mix(0.7).filled())),
                    )?
                    .label(name.clone())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            Ok(())
        })
    }

    /// Draws the points into a PNG file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write(path, &self.to_png()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style() -> ChartStyle {
        ChartStyle::new("t", "x", "y").with_size(300, 200)
    }

    /// Counts pixels that are not white in the decoded RGB image.
    fn ink(png_bytes: &[u8]) -> usize {
        use std::io::Read;
        let len = u32::from_be_bytes(png_bytes[33..37].try_into().unwrap()) as usize;
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&png_bytes[41..41 + len])
            .read_to_end(&mut raw)
            .unwrap();
        raw.chunks(300 * 3 + 1)
            .flat_map(|row| row[1..].chunks(3))
            .filter(|p| p != &[255, 255, 255])
            .count()
    }

    #[test]
    fn every_chart_kind_draws_something() {
        let bar = BarChart {
            style: style(),
            labels: vec!["a".into(), "b".into()],
            values: vec![1.0, 2.0],
        };
        let hist = Histogram::from_values(style(), &[1.0, 2.0, 2.5, 9.0], 4).unwrap();
        assert_eq!(hist.counts, vec![3.0, 0.0, 0.0, 1.0]);
        let line = LineChart {
            style: style(),
            series: vec![Series {
                name: "loss".into(),
                points: vec![(0.0, 1.0), (1.0, 0.5), (2.0, 0.2)],
            }],
        };
        let scatter = Scatter {
            style: style(),
            points: vec![(0.0, 0.0), (1.0, 1.0)],
            classes: vec![0, 1],
            class_names: vec!["false".into(), "true".into()],
        };
        for png in [bar.to_png(), hist.to_png(), line.to_png(), scatter.to_png()] {
            let png = png.unwrap();
            assert!(png.starts_with(b"\x89PNG"));
            assert!(ink(&png) > 500, "chart looks empty");
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let bar = BarChart {
            style: style(),
            labels: vec!["a".into()],
            values: vec![1.0, 2.0],
        };
        assert!(matches!(bar.to_png(), Err(Error::LengthMismatch { .. })));
        let bar = BarChart {
            style: style(),
            labels: vec!["a".into()],
            values: vec![f64::NAN],
        };
        assert!(matches!(bar.to_png(), Err(Error::NonFinite { .. })));
        assert!(matches!(
            Histogram::from_values(style(), &[], 3),
            Err(Error::Empty { .. })
        ));
        let hist = Histogram {
            style: style(),
            edges: vec![0.0, 0.0],
            counts: vec![1.0],
        };
        assert!(matches!(hist.to_png(), Err(Error::Invalid { .. })));
        let scatter = Scatter {
            style: style(),
            points: vec![(0.0, 0.0)],
            classes: vec![3],
            class_names: vec!["only".into()],
        };
        assert!(matches!(scatter.to_png(), Err(Error::Invalid { .. })));
        let tiny = BarChart {
            style: style().with_size(10, 10),
            labels: vec!["a".into()],
            values: vec![1.0],
        };
        assert!(matches!(tiny.to_png(), Err(Error::Invalid { .. })));
    }

    #[test]
    fn ticks_are_compact() {
        assert_eq!(tick(&200.0), "200");
        assert_eq!(tick(&12.34), "12.3");
        assert_eq!(tick(&0.5), "0.5");
    }

    #[test]
    fn save_writes_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/h.png");
        Histogram::from_values(style(), &[1.0, 1.0, 3.0], 2)
            .unwrap()
            .save(&path)
            .unwrap();
        assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG"));
    }
}
