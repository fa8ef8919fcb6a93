//! Small PNG charts shared by the BioAlign crates: bar charts (plain, or with an
//! interval per bar: [`ErrorBarChart`]), histograms, line charts, scatter plots
//! coloured by class, and heatmaps such as confusion matrices ([`Heatmap`]).
//!
//! Drawing uses [plotters](https://docs.rs/plotters) into an in-memory RGB
//! buffer with the DejaVu Sans font embedded in the binary (the `dejavu` crate),
//! so nothing has to be installed on the machine (no fontconfig, no system
//! fonts). The buffer is encoded as PNG by [`png::encode_rgb`] and written with
//! [`bioalign_io::atomic_write_bytes`], so a reader never sees half an image.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use bioalign_plot::{BarChart, ChartStyle};
//! let chart = BarChart {
//!     style: ChartStyle::new("Class balance", "label", "rows"),
//!     labels: vec!["false".into(), "true".into()],
//!     values: vec![3.0, 5.0],
//! };
//! let path = dir.path().join("balance.png");
//! chart.save(&path)?;
//! assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG"));
//! # Ok::<(), bioalign_plot::Error>(())
//! ```

mod charts;
mod error;
mod error_bars;
mod heatmap;
pub mod png;

pub use charts::{BarChart, ChartStyle, Histogram, LineChart, Scatter, Series};
pub use error::{Error, Result};
pub use error_bars::ErrorBarChart;
pub use heatmap::Heatmap;
