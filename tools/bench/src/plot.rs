//! SVG plots. Only plotters' SVG backend: text is written as SVG `<text>`
//! and laid out by the viewer, so no font library is needed to build or run.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::report::{si, Status, Summary};
use crate::Point;

/// A distinct colour per server, stable across plots.
fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0x7f, 0x7f, 0x7f),
        RGBColor(0xbc, 0xbd, 0x22),
        RGBColor(0x17, 0xbe, 0xcf),
    ];
    PALETTE[i % PALETTE.len()]
}

/// plotters errors borrow the backend; keep only their message.
fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// One small bar chart per load: frames/s of each server; "stalls" or
/// "FAILED" written where there is no bar.
pub fn throughput(path: &Path, summary: &Summary) -> Result<()> {
    let n = summary.points.len();
    let cols = 2;
    let rows = n.div_ceil(cols);
    let root = SVGBackend::new(path, (1000, 300 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let servers = &summary.servers;
    for (panel, (point, row)) in root
        .split_evenly((rows, cols))
        .iter()
        .zip(summary.points.iter().zip(&summary.cells))
    {
        let max = row
            .iter()
            .filter(|c| c.status == Status::Ok)
            .map(|c| c.frames_per_sec)
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} ({})", point.label(), point.what),
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(56)
            .build_cartesian_2d(
                // A segmented range a..b has b - a + 1 segments: one per server.
                (0..servers.len().saturating_sub(1)).into_segmented(),
                0.0..max * 1.15,
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .y_desc("frames/s")
            .y_label_formatter(&|v| si(*v))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    servers.get(*i).map(|s| s.to_string()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .draw()
            .map_err(err)?;
        for (i, c) in row.iter().enumerate() {
            if c.status == Status::Ok {
                let bar = [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), c.frames_per_sec),
                ];
                let mut bar = Rectangle::new(bar, colour(i).filled());
                bar.set_margin(0, 0, 6, 6);
                chart.draw_series(std::iter::once(bar)).map_err(err)?;
            } else {
                let text = match c.status {
                    Status::Stalls => "stalls",
                    Status::Failed => "FAILED",
                    _ => "–",
                };
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (SegmentValue::CenterOf(i), max * 0.05),
                        ("sans-serif", 12).into_font().color(&RED),
                    )))
                    .map_err(err)?;
            }
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Throughput against the number of connections open, one line per server,
/// over the points `in_sweep` picks. With idle connections among the busy
/// ones, poll's cost grows with the number of descriptors, epoll's does not.
pub fn connections(
    path: &Path,
    summary: &Summary,
    in_sweep: fn(&Point) -> bool,
    title: &str,
) -> Result<()> {
    let sweep: Vec<usize> = (0..summary.points.len())
        .filter(|&i| in_sweep(&summary.points[i]))
        .collect();
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let conns = sweep.iter().map(|&i| summary.points[i].total_conns());
    let min_conns = conns.clone().min().unwrap_or(1) as f64;
    let max_conns = conns.max().unwrap_or(10).max(10) as f64;
    let max = sweep
        .iter()
        .flat_map(|&i| &summary.cells[i])
        .filter(|c| c.status == Status::Ok)
        .map(|c| c.frames_per_sec)
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (min_conns / 1.5..max_conns * 1.5).log_scale(),
            0.0..max * 1.15,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("connections open")
        .y_desc("frames/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| si(*v))
        .draw()
        .map_err(err)?;
    for (si_, name) in summary.servers.iter().enumerate() {
        // Only the points the server actually served: a stall is no number.
        let data: Vec<(f64, f64)> = sweep
            .iter()
            .map(|&pi| {
                (
                    summary.points[pi].total_conns() as f64,
                    &summary.cells[pi][si_],
                )
            })
            .filter(|(_, c)| c.status == Status::Ok)
            .map(|(x, c)| (x, c.frames_per_sec))
            .collect();
        if data.is_empty() {
            continue;
        }
        let style = colour(si_).stroke_width(2);
        chart
            .draw_series(LineSeries::new(data.clone(), style))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart
            .draw_series(
                data.iter()
                    .map(|&p| Circle::new(p, 3, colour(si_).filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
