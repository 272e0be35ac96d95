//! SVG line charts: one line per server, a point per size at the median,
//! with a bar from the minimum to the maximum of the repeats.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// One server's points: `(x, median, min, max)`.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) points: Vec<(f64, f64, f64, f64)>,
}

/// Chart size in pixels.
const SIZE: (u32, u32) = (720, 420);
/// Distinguishable colours, one per server (in series order).
const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// The mesh, lines, points, spreads and legend, on a chart of either y
/// scale (the two are different types).
macro_rules! draw_on {
    ($chart:ident, $x_label:ident, $y_label:ident, $series:ident) => {{
        let chart = &mut $chart;
        chart
            .configure_mesh()
            .x_desc($x_label)
            .y_desc($y_label)
            .draw()
            .context("draw mesh")?;
        for (index, one) in $series.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let line = one.points.iter().map(|(x, median, _, _)| (*x, *median));
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .context("draw line")?
                .label(one.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            let points = one
                .points
                .iter()
                .map(|(x, median, _, _)| Circle::new((*x, *median), 3, colour.filled()));
            chart.draw_series(points).context("draw points")?;
            let spreads = one.points.iter().map(|(x, _, min, max)| {
                PathElement::new(vec![(*x, *min), (*x, *max)], colour.stroke_width(1))
            });
            chart.draw_series(spreads).context("draw spread")?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .context("draw legend")?;
    }};
}

/// How the y axis is scaled.
#[derive(Debug, Clone, Copy)]
pub(crate) enum YScale {
    Linear,
    /// For values over orders of magnitude (a saturated peer's latency).
    Log,
}

/// Draws `series` into an SVG file at `path`.
pub(crate) fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    scale: YScale,
) -> anyhow::Result<()> {
    let all = series.iter().flat_map(|one| one.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0_f64);
    let mut y_min_positive = f64::MAX;
    for (x, _median, min, max) in all {
        x_min = x_min.min(*x);
        x_max = x_max.max(*x);
        y_max = y_max.max(*max);
        if *min > 0.0 {
            y_min_positive = y_min_positive.min(*min);
        }
    }
    if y_min_positive == f64::MAX {
        y_min_positive = 1.0;
    }
    if x_min > x_max {
        return Ok(());
    }
    // A single size still gets a visible x range.
    let pad = ((x_max - x_min) * 0.08).max(x_max.abs() * 0.1).max(1.0);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).context("fill")?;
    let x_range = (x_min - pad)..(x_max + pad);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    match scale {
        YScale::Linear => {
            let y_range = 0.0..(y_max * 1.1).max(1e-9);
            let mut chart = builder
                .build_cartesian_2d(x_range, y_range)
                .context("build chart")?;
            draw_on!(chart, x_label, y_label, series);
        }
        YScale::Log => {
            let y_range = (y_min_positive * 0.8)..(y_max * 1.5).max(y_min_positive * 2.0);
            let mut chart = builder
                .build_cartesian_2d(x_range, y_range.log_scale())
                .context("build chart")?;
            draw_on!(chart, x_label, y_label, series);
        }
    }
    root.present().context("write svg")?;
    Ok(())
}
