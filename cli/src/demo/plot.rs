//! The demo's pictures (PNG, plotters, DejaVu Sans compiled in: no system fonts needed):
//! optimizer paths over each test function's level bands beside their loss curves, the
//! models' loss curves, and the MLP's decision regions.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

use super::functions::{FunctionRun, TestFunction};
use super::models::{Model, ModelRun};

/// Thirteen colours told apart on white and on the level bands.
const COLORS: [RGBColor; 13] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(80, 80, 80),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 128, 96),
];

/// Size of each test function's picture (paths beside loss curves).
pub const FUNCTION_FIGURE: (u32, u32) = (1200, 540);
/// Size of the models' loss picture.
pub const MODEL_FIGURE: (u32, u32) = (1200, 540);
/// Columns and panel height of the decision-region picture.
const REGION_COLUMNS: usize = 4;
const REGION_PANEL: u32 = 300;

/// Width of the legend column beside the loss curves.
const LEGEND_WIDTH: u32 = 200;

/// Legend entries: each optimizer's label with its learning rate, in its colour.
fn labels<'a>(runs: impl Iterator<Item = (&'a String, f64)>) -> Vec<(String, RGBColor)> {
    runs.enumerate().map(|(i, (label, lr))| (format!("{label} (lr {lr:e})"), color(i))).collect()
}

/// Size of the decision-region picture for `panels` optimizers.
pub fn regions_size(panels: usize) -> (u32, u32) {
    (REGION_PANEL * REGION_COLUMNS as u32, REGION_PANEL * panels.div_ceil(REGION_COLUMNS).max(1) as u32)
}

/// The colour of optimizer `i` in every picture.
pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn fail(e: impl std::fmt::Display) -> Error {
    Error::Demo(format!("drawing: {e}"))
}

/// Makes DejaVu Sans the `sans-serif` family (once).
fn fonts() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if ok { Ok(()) } else { Err(Error::Demo("the built-in font did not load".into())) }
}

fn canvas(path: &Path, size: (u32, u32)) -> Result<DrawingArea<BitMapBackend<'_>, Shift>> {
    fonts()?;
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(fail)?;
    Ok(root)
}

/// Level bands of a function over its domain: `cells × cells` shades, light at the minimum
/// and darker uphill, twelve bands spread over the log of f − f* across the picture.
fn bands(f: &TestFunction, cells: u32) -> Vec<RGBColor> {
    let [[x0, x1], [y0, y1]] = f.domain;
    let (dx, dy) = ((x1 - x0) / f64::from(cells), (y1 - y0) / f64::from(cells));
    let levels: Vec<f64> = (0..cells * cells)
        .map(|c| {
            let (x, y) = (x0 + (f64::from(c % cells) + 0.5) * dx, y0 + (f64::from(c / cells) + 0.5) * dy);
            ((f.value(x, y) - f.f_min).max(0.0) + 1e-3).log10()
        })
        .collect();
    let (lo, hi) = levels.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    levels
        .iter()
        .map(|&v| {
            let t = ((v - lo) / (hi - lo).max(1e-9) * 12.0).floor().min(11.0) / 11.0;
            let lerp = |a: f64, b: f64| (a + (b - a) * t) as u8;
            RGBColor(lerp(250.0, 120.0), lerp(250.0, 150.0), lerp(235.0, 200.0))
        })
        .collect()
}

/// A legend column: a line of each optimizer's colour and its label.
fn legend(area: &DrawingArea<BitMapBackend<'_>, Shift>, entries: &[(String, RGBColor)]) -> Result<()> {
    for (i, (label, c)) in entries.iter().enumerate() {
        let y = 60 + 22 * i as i32;
        area.draw(&PathElement::new(vec![(4, y), (26, y)], c.stroke_width(3))).map_err(fail)?;
        area.draw(&Text::new(label.clone(), (32, y - 8), ("sans-serif", 14))).map_err(fail)?;
    }
    Ok(())
}

/// A path up to where it leaves the picture or stops being finite.
fn visible(path: &[[f32; 3]], domain: [[f64; 2]; 2]) -> Vec<(f64, f64)> {
    let [[x0, x1], [y0, y1]] = domain;
    path.iter()
        .map(|p| (f64::from(p[0]), f64::from(p[1])))
        .take_while(|&(x, y)| x.is_finite() && y.is_finite() && (x0..=x1).contains(&x) && (y0..=y1).contains(&y))
        .collect()
}

/// A polyline as separate segments: a thick polyline's mitred joins draw long spikes where a
/// path turns back on itself, as oscillating optimizers' paths do.
fn segments<X: Copy + 'static, Y: Copy + 'static>(
    points: &[(X, Y)],
    style: ShapeStyle,
) -> impl Iterator<Item = PathElement<(X, Y)>> + '_ {
    points.windows(2).map(move |w| PathElement::new(vec![w[0], w[1]], style))
}

/// The smallest and largest positive finite values, padded for a log axis.
fn log_range(values: impl Iterator<Item = f64>, floor: f64) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite() && *v > 0.0).fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let lo = lo.clamp(floor, 1e12) / 2.0;
    (lo, (hi * 2.0).max(lo * 100.0))
}

/// Loss values for a log axis: positive, finite, capped.
fn log_points(values: impl Iterator<Item = f64>, floor: f64) -> Vec<(u32, f64)> {
    values.enumerate().take_while(|(_, v)| v.is_finite()).map(|(t, v)| (t as u32, v.clamp(floor, 1e12))).collect()
}

/// One test function: the optimizers' paths from the classic start over its level bands
/// (minima marked), and f − f* against the step on a log scale.
pub fn function_figure(path: &Path, f: &TestFunction, runs: &[(String, FunctionRun)]) -> Result<()> {
    let root = canvas(path, FUNCTION_FIGURE)?;
    let (left, rest) = root.split_horizontally(FUNCTION_FIGURE.1 - 10);
    let (right, key) = rest.split_horizontally(FUNCTION_FIGURE.0 - FUNCTION_FIGURE.1 + 10 - LEGEND_WIDTH);
    let [[x0, x1], [y0, y1]] = f.domain;
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{}: paths from ({}, {})", f.name, f.start[0], f.start[1]), ("sans-serif", 21))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(fail)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("x")
        .y_desc("y")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(fail)?;
    let cells = 120;
    let (dx, dy) = ((x1 - x0) / f64::from(cells), (y1 - y0) / f64::from(cells));
    let shades = bands(f, cells);
    chart
        .draw_series((0..cells * cells).map(|c| {
            let (x, y) = (x0 + f64::from(c % cells) * dx, y0 + f64::from(c / cells) * dy);
            Rectangle::new([(x, y), (x + dx, y + dy)], shades[c as usize].filled())
        }))
        .map_err(fail)?;
    for (i, (_, run)) in runs.iter().enumerate() {
        let points = visible(&run.path, f.domain);
        chart.draw_series(segments(&points, color(i).stroke_width(2))).map_err(fail)?;
        if let Some(&end) = points.last() {
            chart.draw_series([Circle::new(end, 4, color(i).filled())]).map_err(fail)?;
        }
    }
    chart.draw_series(f.minima.iter().map(|m| Cross::new((m[0], m[1]), 8, BLACK.stroke_width(3)))).map_err(fail)?;
    chart.draw_series([TriangleMarker::new((f.start[0], f.start[1]), 8, BLACK.filled())]).map_err(fail)?;

    let steps = runs.first().map_or(1, |(_, r)| r.path.len() as u32);
    let gaps = |r: &FunctionRun| r.path.iter().map(|p| f64::from(p[2]) - f.f_min).collect::<Vec<_>>();
    let (lo, hi) = log_range(runs.iter().flat_map(|(_, r)| gaps(r)), 1e-12);
    let mut loss = ChartBuilder::on(&right)
        .caption(format!("{}: f − f* from the classic start", f.name), ("sans-serif", 21))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..steps, (lo..hi).log_scale())
        .map_err(fail)?;
    loss.configure_mesh()
        .x_desc("step")
        .y_desc("f − f*")
        .label_style(("sans-serif", 15))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(fail)?;
    for (i, (_, run)) in runs.iter().enumerate() {
        let points = log_points(gaps(run).into_iter(), lo);
        loss.draw_series(segments(&points, color(i).stroke_width(2))).map_err(fail)?;
    }
    legend(&key, &labels(runs.iter().map(|(l, r)| (l, r.lr))))?;
    root.present().map_err(fail)
}

/// Loss against step (log scale) for every optimizer on each model, side by side.
pub fn model_losses(path: &Path, models: &[(&Model, Vec<(String, ModelRun)>)]) -> Result<()> {
    let root = canvas(path, MODEL_FIGURE)?;
    let (charts, key) = root.split_horizontally(MODEL_FIGURE.0 - LEGEND_WIDTH);
    let panels = charts.split_evenly((1, models.len().max(1)));
    for ((model, runs), area) in models.iter().zip(&panels) {
        let steps = runs.first().map_or(1, |(_, r)| r.history.len() as u32);
        let (lo, hi) = log_range(runs.iter().flat_map(|(_, r)| r.history.iter().map(|h| f64::from(h[0]))), 1e-9);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{}: training loss", model.name), ("sans-serif", 21))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0u32..steps, (lo..hi).log_scale())
            .map_err(fail)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .label_style(("sans-serif", 15))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(fail)?;
        for (i, (_, run)) in runs.iter().enumerate() {
            let points = log_points(run.history.iter().map(|h| f64::from(h[0])), lo);
            chart.draw_series(segments(&points, color(i).stroke_width(2))).map_err(fail)?;
        }
    }
    // Every model ran the same optimizers in the same order; each kept its own learning rate.
    if let Some((_, runs)) = models.first() {
        legend(&key, &runs.iter().enumerate().map(|(i, (l, _))| (l.clone(), color(i))).collect::<Vec<_>>())?;
    }
    root.present().map_err(fail)
}

/// The MLP's decision regions after training, one panel per optimizer, the data on top.
pub fn decision_regions(path: &Path, model: &Model, runs: &[(String, ModelRun)]) -> Result<()> {
    let root = canvas(path, regions_size(runs.len()))?;
    let panels = root.split_evenly((runs.len().div_ceil(REGION_COLUMNS).max(1), REGION_COLUMNS));
    const CLASS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44)];
    let light = |c: RGBColor| RGBColor(c.0 / 3 + 170, c.1 / 3 + 170, c.2 / 3 + 170);
    let (lo, hi) = (-3.5f32, 3.5f32);
    for ((label, run), area) in runs.iter().zip(&panels) {
        let accuracy = run.history.last().map_or(0.0, |h| h[1]);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{label}: {:.1} %", 100.0 * accuracy), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(40)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("x₁")
            .y_desc("x₂")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(fail)?;
        let cells = 60;
        let d = (hi - lo) / cells as f32;
        chart
            .draw_series((0..cells * cells).map(|c| {
                let (x, y) = (lo + (c % cells) as f32 * d, lo + (c / cells) as f32 * d);
                let class = model.mlp_class(&run.params, x + d / 2.0, y + d / 2.0);
                Rectangle::new([(x, y), (x + d, y + d)], light(CLASS[class]).filled())
            }))
            .map_err(fail)?;
        chart
            .draw_series(
                model
                    .y
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| ((model.x[2 * i], model.x[2 * i + 1]), c as usize))
                    .filter(|((x, y), _)| (lo..hi).contains(x) && (lo..hi).contains(y))
                    .map(|(at, c)| Circle::new(at, 2, CLASS[c].filled())),
            )
            .map_err(fail)?;
    }
    root.present().map_err(fail)
}
