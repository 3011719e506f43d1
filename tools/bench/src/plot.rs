//! SVG plots. Only plotters' SVG backend: text is written as SVG `<text>`
//! and laid out by the viewer, so no font library is needed to build or run.
//!
//! Every plot is [`WIDTH`] pixels wide, the width of the book's text column
//! at 1280 px, so it is shown at its own size and the 14 px tick labels stay
//! 14 px. Legends sit beside the data, never on it.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{si, Status, Summary};
use crate::servers::Kind;
use crate::Point;

/// The book's content column is 750 px wide.
const WIDTH: u32 = 750;
const TITLE: u32 = 18;
const LABEL: u32 = 14;
/// Width of the legend column beside a line plot.
const LEGEND: u32 = 200;

/// A distinct colour per server, stable across plots; null-echo is grey.
fn colour(summary: &Summary, i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 14] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0xbc, 0xbd, 0x22),
        RGBColor(0x17, 0xbe, 0xcf),
        RGBColor(0x39, 0x3b, 0x79),
        RGBColor(0xad, 0x49, 0x4a),
        RGBColor(0x63, 0x79, 0x39),
        RGBColor(0x7b, 0x41, 0x73),
        RGBColor(0x31, 0x82, 0xbd),
    ];
    if summary.kinds[i] == Kind::Ceiling {
        RGBColor(0x88, 0x88, 0x88)
    } else {
        PALETTE[i % PALETTE.len()]
    }
}

/// The name to show: null-echo says what it stands for.
fn name(summary: &Summary, i: usize) -> String {
    match summary.kinds[i] {
        Kind::Ceiling => format!("{} (ceiling)", summary.servers[i]),
        _ => summary.servers[i].clone(),
    }
}

/// plotters errors borrow the backend; keep only their message.
fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// A font whose text is `px` pixels high in the SVG: plotters writes
/// `font-size` as the size given divided by 1.24 (points to pixels).
fn font(px: u32) -> TextStyle<'static> {
    ("sans-serif", px as f64 * 1.24).into_font().color(&BLACK)
}

/// One horizontal bar chart per load, a bar per server with its value
/// written beside it; "stalls" or "FAILED" where there is no bar.
pub fn throughput(path: &Path, summary: &Summary) -> Result<()> {
    let n = summary.servers.len();
    let panel_height = 56 + 20 * n as u32;
    let root = SVGBackend::new(path, (WIDTH, panel_height * summary.points.len() as u32))
        .into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let label_width = summary
        .servers
        .iter()
        .map(|s| s.chars().count() as u32 * 9 + 12)
        .max()
        .unwrap_or(60);
    for (panel, (point, row)) in root
        .split_evenly((summary.points.len(), 1))
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
                format!("Frames/s at {}: {}", point.label(), point.what),
                font(TITLE - 2),
            )
            .margin_right(16)
            .margin_left(4)
            .x_label_area_size(24)
            .y_label_area_size(label_width)
            .build_cartesian_2d(
                // Room on the right for the value written after the longest bar.
                0.0..max * 1.22,
                // A segmented range a..b has b - a + 1 segments: one per server.
                (0..n.saturating_sub(1)).into_segmented(),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .label_style(font(LABEL))
            .x_labels(5)
            .x_label_formatter(&|v| si(*v))
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(row) if *row < n => summary.servers[n - 1 - row].clone(),
                _ => String::new(),
            })
            .draw()
            .map_err(err)?;
        for (i, c) in row.iter().enumerate() {
            // The first server at the top: rows count from the bottom.
            let y = n - 1 - i;
            let text_at = |x: f64| (x, SegmentValue::CenterOf(y));
            if c.status == Status::Ok {
                let bar = [
                    (0.0, SegmentValue::Exact(y)),
                    (c.frames_per_sec, SegmentValue::Exact(y + 1)),
                ];
                let mut bar = Rectangle::new(bar, colour(summary, i).filled());
                bar.set_margin(3, 3, 0, 0);
                chart.draw_series(std::iter::once(bar)).map_err(err)?;
                let value = si(c.frames_per_sec) + if c.loadgen_limited { " †" } else { "" };
                chart
                    .draw_series(std::iter::once(Text::new(
                        value,
                        text_at(c.frames_per_sec + max * 0.01),
                        font(12).pos(text_pos_left()),
                    )))
                    .map_err(err)?;
            } else {
                let text = match c.status {
                    Status::Stalls => "stalls",
                    Status::Failed => "FAILED",
                    _ => "not run",
                };
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        text_at(max * 0.01),
                        font(12).color(&RED).pos(text_pos_left()),
                    )))
                    .map_err(err)?;
            }
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Text anchored at its left end, centred vertically on the point.
fn text_pos_left() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Left, VPos::Center)
}

/// A connection count for an axis: 5000 → "5k", short enough not to
/// collide with its neighbour on a logarithmic axis.
fn conns_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// Round values between `lo` and `hi` for the ticks of a logarithmic axis:
/// 1, 2, 5 per decade, more when the range is less than a decade or two.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let steps: &[f64] = if hi / lo < 30.0 {
        &[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut ticks = Vec::new();
    for decade in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
        for m in steps {
            let v = m * 10f64.powi(decade);
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
    }
    ticks
}

/// The legend column beside a line plot: a line per server, then notes.
fn legend(
    area: &DrawingArea<SVGBackend, Shift>,
    entries: &[(String, RGBColor)],
    notes: &[&str],
) -> Result<()> {
    let mut y = 50;
    for (label, colour) in entries {
        area.draw(&PathElement::new([(4, y), (28, y)], colour.stroke_width(3)))
            .map_err(err)?;
        area.draw(&Circle::new((16, y), 3, colour.filled()))
            .map_err(err)?;
        area.draw(&Text::new(
            label.clone(),
            (34, y),
            font(LABEL).pos(text_pos_left()),
        ))
        .map_err(err)?;
        y += 22;
    }
    y += 8;
    for note in notes {
        area.draw(&Text::new(
            note.to_string(),
            (4, y),
            font(12).pos(text_pos_left()),
        ))
        .map_err(err)?;
        y += 18;
    }
    Ok(())
}

/// The servers a line plot over `sweep` draws: those with any point there.
fn drawn(summary: &Summary, sweep: &[usize]) -> Vec<usize> {
    (0..summary.servers.len())
        .filter(|&si| {
            sweep
                .iter()
                .any(|&pi| matches!(summary.cells[pi][si].status, Status::Ok | Status::Stalls))
        })
        .collect()
}

/// Throughput against the number of connections open, one line per server,
/// over the points `in_sweep` picks. A load a server stalled at is a cross
/// in its colour in the band below zero, not a missing point.
pub fn connections(
    path: &Path,
    summary: &Summary,
    in_sweep: fn(&Point) -> bool,
    title: &str,
    x_desc: &str,
) -> Result<()> {
    let sweep: Vec<usize> = (0..summary.points.len())
        .filter(|&i| in_sweep(&summary.points[i]))
        .collect();
    let servers = drawn(summary, &sweep);
    let height = 600.max(80 + 22 * servers.len() as u32 + 60);
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (plot_area, legend_area) = root.split_horizontally(WIDTH - LEGEND);
    let conns = sweep.iter().map(|&i| summary.points[i].total_conns());
    let min_conns = conns.clone().min().unwrap_or(1) as f64;
    let max_conns = conns.clone().max().unwrap_or(10).max(10) as f64;
    // Ticks where the loads are.
    let x_ticks: Vec<f64> = conns.map(|c| c as f64).collect();
    let max = sweep
        .iter()
        .flat_map(|&i| &summary.cells[i])
        .filter(|c| c.status == Status::Ok)
        .map(|c| c.frames_per_sec)
        .fold(1.0, f64::max);
    // Below zero: the band where stalls are marked, a row per server.
    let band = max * 0.12;
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, font(TITLE))
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (min_conns / 1.5..max_conns * 1.5)
                .log_scale()
                .with_key_points(x_ticks),
            -band..max * 1.08,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .label_style(font(LABEL))
        .axis_desc_style(font(LABEL))
        .x_desc(x_desc)
        .y_desc("frames/s")
        .x_label_formatter(&|v| conns_label(*v))
        .x_labels(20)
        .y_label_formatter(&|v| if *v < 0.0 { String::new() } else { si(*v) })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            [(min_conns / 1.5, 0.0), (max_conns * 1.5, 0.0)],
            BLACK.stroke_width(1),
        )))
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(Text::new(
            "stalled",
            (min_conns / 1.45, -band * 0.5),
            font(12).color(&RED).pos(text_pos_left()),
        )))
        .map_err(err)?;
    let mut entries = Vec::new();
    for &si_ in &servers {
        let c = colour(summary, si_);
        let served: Vec<(f64, f64)> = sweep
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
        // Stalls at one load are spread over the band, so none hides another.
        let stalled: Vec<(f64, f64)> = sweep
            .iter()
            .filter_map(|&pi| {
                let at = |si: usize| summary.cells[pi][si].status == Status::Stalls;
                if !at(si_) {
                    return None;
                }
                let peers: Vec<usize> = servers.iter().copied().filter(|&s| at(s)).collect();
                let rank = peers.iter().position(|&s| s == si_).unwrap_or(0);
                let depth = 0.2 + 0.6 * rank as f64 / (peers.len().max(2) - 1) as f64;
                Some((summary.points[pi].total_conns() as f64, -band * depth))
            })
            .collect();
        let width = if summary.kinds[si_] == Kind::Ceiling {
            1
        } else {
            2
        };
        chart
            .draw_series(LineSeries::new(served.clone(), c.stroke_width(width)))
            .map_err(err)?;
        chart
            .draw_series(served.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(err)?;
        chart
            .draw_series(stalled.iter().map(|&p| Cross::new(p, 5, c.stroke_width(2))))
            .map_err(err)?;
        entries.push((name(summary, si_), c));
    }
    legend(
        &legend_area,
        &entries,
        &["✕ below the axis: stalled,", "some clients never answered"],
    )?;
    root.present().map_err(err)?;
    Ok(())
}

/// Server peak memory (VmHWM) against the number of busy connections, one
/// line per server, both axes logarithmic. A stalled load is a cross at the
/// memory its server reached with the clients it did take on.
pub fn memory(path: &Path, summary: &Summary) -> Result<()> {
    let sweep: Vec<usize> = (0..summary.points.len())
        .filter(|&i| summary.points[i].in_sweep())
        .collect();
    // null-echo holds no per-connection state worth a line.
    let servers: Vec<usize> = drawn(summary, &sweep)
        .into_iter()
        .filter(|&si| summary.kinds[si] != Kind::Ceiling)
        .collect();
    let height = 600.max(80 + 22 * servers.len() as u32 + 60);
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (plot_area, legend_area) = root.split_horizontally(WIDTH - LEGEND);
    let mb = |kb: u64| kb as f64 / 1024.0;
    let points = |si: usize, status: Status| -> Vec<(f64, f64)> {
        sweep
            .iter()
            .map(|&pi| (summary.points[pi].conns as f64, &summary.cells[pi][si]))
            .filter(|(_, c)| c.status == status)
            .filter_map(|(x, c)| Some((x, mb(c.hwm_kb?))))
            .collect()
    };
    let all: Vec<(f64, f64)> = servers
        .iter()
        .flat_map(|&si| [points(si, Status::Ok), points(si, Status::Stalls)].concat())
        .collect();
    let (min_x, max_x) = all.iter().fold((f64::MAX, 10.0f64), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let (min_y, max_y) = all
        .iter()
        .fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (min_x, min_y) = (min_x.min(max_x), min_y.min(max_y));
    let x_ticks: Vec<f64> = sweep
        .iter()
        .map(|&pi| summary.points[pi].conns as f64)
        .collect();
    let y_ticks = log_ticks(min_y / 1.5, max_y * 1.5);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(
            "Server peak memory (VmHWM) against busy clients",
            font(TITLE),
        )
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (min_x / 1.5..max_x * 1.5)
                .log_scale()
                .with_key_points(x_ticks),
            (min_y / 1.5..max_y * 1.5)
                .log_scale()
                .with_key_points(y_ticks),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .label_style(font(LABEL))
        .axis_desc_style(font(LABEL))
        .x_desc("connections open, all busy (depth 1, 64 B)")
        .y_desc("peak resident memory, MB")
        .x_label_formatter(&|v| conns_label(*v))
        .y_label_formatter(&|v| {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        })
        .x_labels(20)
        .y_labels(20)
        .draw()
        .map_err(err)?;
    let mut entries = Vec::new();
    for &si_ in &servers {
        let c = colour(summary, si_);
        let served = points(si_, Status::Ok);
        chart
            .draw_series(LineSeries::new(served.clone(), c.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(served.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(err)?;
        chart
            .draw_series(
                points(si_, Status::Stalls)
                    .into_iter()
                    .map(|p| Cross::new(p, 5, c.stroke_width(2))),
            )
            .map_err(err)?;
        entries.push((name(summary, si_), c));
    }
    legend(
        &legend_area,
        &entries,
        &[
            "✕: stalled at that load;",
            "memory with the clients",
            "it did take on",
        ],
    )?;
    root.present().map_err(err)?;
    Ok(())
}

/// p99 latency against offered load, one line per server, latency on a
/// logarithmic axis, with a line at `mark_us` (1 ms): where each crosses it.
pub fn latency(path: &Path, series: &[(String, Vec<(f64, f64)>)], mark_us: f64) -> Result<()> {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xbc, 0xbd, 0x22),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x17, 0xbe, 0xcf),
    ];
    let height = 600.max(80 + 22 * series.len() as u32 + 60);
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (plot_area, legend_area) = root.split_horizontally(WIDTH - LEGEND);
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let max_x = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (min_y, max_y) = all
        .iter()
        .fold((mark_us, mark_us), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (lo, hi) = (min_y.max(1.0) / 1.5, max_y * 1.5);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption("p99 latency against offered load", font(TITLE))
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            0.0..max_x * 1.05,
            (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .label_style(font(LABEL))
        .axis_desc_style(font(LABEL))
        .x_desc("offered frames/s (100 connections, 64 B, open loop)")
        .y_desc("p99 latency, µs")
        .x_label_formatter(&|v| si(*v))
        .x_labels(10)
        .y_label_formatter(&|v| {
            if *v >= 1000.0 {
                format!("{}k", v / 1000.0)
            } else {
                format!("{v:.0}")
            }
        })
        .y_labels(20)
        .draw()
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            [(0.0, mark_us), (max_x * 1.05, mark_us)],
            RGBColor(0x88, 0x88, 0x88).stroke_width(1),
        )))
        .map_err(err)?;
    let mut entries = Vec::new();
    for (i, (server, points)) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(err)?;
        entries.push((server.clone(), c));
    }
    legend(
        &legend_area,
        &entries,
        &["grey line: 1 ms", "median p99 over rounds"],
    )?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_plot_draws_a_line_per_server_and_the_1_ms_mark() {
        let series: Vec<(String, Vec<(f64, f64)>)> = [
            ("ch09", [40.0, 60.0, 300.0, 1500.0]),
            ("tokio-ct", [45.0, 70.0, 500.0, 4000.0]),
            ("ch05", [900.0, 2000.0, 15000.0, 90000.0]),
        ]
        .into_iter()
        .map(|(s, p99)| {
            let points = [25e3, 50e3, 75e3, 90e3].into_iter().zip(p99).collect();
            (s.to_string(), points)
        })
        .collect();
        let path = std::env::temp_dir().join(format!("latency-{}.svg", std::process::id()));
        latency(&path, &series, 1000.0).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        if std::env::var_os("KEEP_PLOT").is_none() {
            let _ = std::fs::remove_file(&path);
        }
        for name in [
            "ch09",
            "tokio-ct",
            "ch05",
            "grey line: 1 ms",
            "p99 latency, µs",
        ] {
            assert!(svg.contains(name), "no {name} in the plot");
        }
        // A line per server (the axes and ticks are 1 px wide, the legend's 3).
        assert_eq!(svg.matches(r#"stroke-width="2" points="#).count(), 3);
    }
}
