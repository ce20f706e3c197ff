//! The loss-curve PNG: training loss per step and validation loss where evaluated.

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// Draws training (blue) and validation (red) loss against step into a PNG at `path`,
/// written to a temporary file and renamed.
pub fn plot_losses(path: &Path, points: &[(usize, f32, Option<f32>)]) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp.png");
    let err = |e: String| Error::Msg(format!("{}: {e}", path.display()));
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
        let area = root.margin(20, 20, 20, 20);
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(0f32..max_step, (lo * 0.95)..(hi * 1.02))
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
    std::fs::rename(&tmp, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })
}
