//! The loss-curve PNG: training loss per step and validation loss where evaluated.

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// DejaVu Sans, bundled so labels render without system fonts (licence: data/fonts/LICENSE).
const FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSans.ttf");

/// Registers the bundled font as `sans-serif` once per process.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A failure only means unlabeled axes; the curves are still drawn.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws training (blue) and validation (red) loss against step into a PNG at `path`,
/// written to a temporary file, synced and renamed.
pub fn plot_losses(path: &Path, points: &[(usize, f32, Option<f32>)]) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp.png");
    let err = |e: String| Error::file(path, format!("drawing the loss plot: {e}"));
    {
        let root = BitMapBackend::new(&tmp, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let max_step = points.last().map_or(1, |p| p.0).max(1) as f32;
        let losses = points
            .iter()
            .map(|p| p.1)
            .chain(points.iter().filter_map(|p| p.2));
        let (lo, hi) = losses
            .filter(|l| l.is_finite())
            .fold((f32::MAX, f32::MIN), |(a, b), l| (a.min(l), b.max(l)));
        let (lo, hi) = if lo < hi {
            (lo, hi)
        } else {
            (lo - 1.0, lo + 1.0)
        };
        register_font();
        let mut chart = ChartBuilder::on(&root)
            .caption("loss (blue: train, red: validation)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f32..max_step, (lo * 0.95)..(hi * 1.02))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0 as f32, p.1)),
                &BLUE,
            ))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                points.iter().filter_map(|p| p.2.map(|v| (p.0 as f32, v))),
                RED.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    publish(&tmp, path)
}

/// Colours of the series of [`plot_metrics`], in name order.
const PALETTE: [RGBColor; 8] = [
    BLUE,
    RED,
    GREEN,
    MAGENTA,
    CYAN,
    BLACK,
    RGBColor(255, 140, 0),
    RGBColor(128, 0, 128),
];

/// Draws every task metric of `metrics` ([`crate::train::trainer::Metric::extra`]) against
/// step into a PNG at `path`, one coloured line per metric with a legend (written like
/// [`plot_losses`]).
pub fn plot_metrics(path: &Path, metrics: &[crate::train::trainer::Metric]) -> Result<()> {
    let names: std::collections::BTreeSet<&String> =
        metrics.iter().flat_map(|m| m.extra.keys()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp.png");
    let err = |e: String| Error::file(path, format!("drawing the metrics plot: {e}"));
    {
        let root = BitMapBackend::new(&tmp, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let max_step = metrics.last().map_or(1, |m| m.step).max(1) as f32;
        let (lo, hi) = metrics
            .iter()
            .flat_map(|m| m.extra.values().copied())
            .filter(|v| v.is_finite())
            .fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo < hi {
            (lo, hi)
        } else {
            (lo - 1.0, lo + 1.0)
        };
        let pad = (hi - lo) * 0.05;
        register_font();
        let mut chart = ChartBuilder::on(&root)
            .caption("metrics", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f32..max_step, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, name) in names.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    metrics
                        .iter()
                        .filter_map(|m| m.extra.get(*name).map(|&v| (m.step as f32, v))),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(e.to_string()))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    publish(&tmp, path)
}

/// Moves the finished PNG `tmp` to `path`: synced before the rename, as `write_atomic` does
/// (plotters writes the file itself).
fn publish(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::io::atomic::sync_dir(dir);
    }
    Ok(())
}
