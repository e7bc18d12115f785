//! The W2 chart: the lateness distribution as an SVG drawn by `plotters`.
//!
//! It plots, for each series (one per number of jobs), the share of runs that started at least
//! x ms late, on log–log axes (a complementary CDF): the body of the distribution is on the left,
//! and the tail (p99, p99.9, max) stays readable at the bottom right, where a histogram would
//! flatten it. Text is written as SVG `<text>`, so no font is needed to draw it.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{BenchError, BenchResult};
use crate::stats::nearest_rank;

/// One line of the chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// Lateness of every run, µs, sorted ascending.
    pub lateness_us: Vec<i64>,
}

/// Smallest lateness shown: 10 µs (smaller values, including 0, are drawn at it).
const FLOOR_MS: f64 = 0.01;
/// Points drawn per series at most (plus the whole tail).
const BODY_POINTS: usize = 2000;
const TAIL_POINTS: usize = 1000;

/// `(lateness ms, share of runs at least that late)` points of a sorted sample, as a step
/// line: the share is flat between two sampled values and drops at each.
pub fn ccdf_points(sorted_us: &[i64]) -> Vec<(f64, f64)> {
    let n = sorted_us.len();
    if n == 0 {
        return Vec::new();
    }
    let tail_start = n.saturating_sub(TAIL_POINTS);
    let step = tail_start.div_ceil(BODY_POINTS).max(1);
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(2 * (BODY_POINTS + TAIL_POINTS + 1));
    for i in (0..tail_start).step_by(step).chain(tail_start..n) {
        let ms = (sorted_us[i] as f64 / 1e3).max(FLOOR_MS);
        let share = (n - i) as f64 / n as f64;
        if let Some(&(_, previous)) = points.last() {
            points.push((ms, previous));
        }
        points.push((ms, share));
    }
    points
}

fn decade_below(x: f64) -> f64 {
    10f64.powf(x.log10().floor())
}

fn decade_above(x: f64) -> f64 {
    10f64.powf(x.log10().ceil())
}

/// A short legend text: `label: p50 …, p99 …, p99.9 …, max … ms`.
pub fn legend(series: &Series) -> String {
    let q = |q: f64| {
        nearest_rank(&series.lateness_us, q)
            .map_or("n/a".to_owned(), |us| format!("{:.1}", us as f64 / 1e3))
    };
    format!(
        "{}: p50 {} / p99 {} / p99.9 {} / max {} ms",
        series.label,
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    )
}

/// Draws the series into an SVG file at `path`.
pub fn lateness_svg(path: &Path, title: &str, series: &[Series]) -> BenchResult<()> {
    let fail = |e: &dyn std::fmt::Display| BenchError::Chart {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let points: Vec<Vec<(f64, f64)>> = series.iter().map(|s| ccdf_points(&s.lateness_us)).collect();
    let all = points.iter().flatten();
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let x_min = all.clone().map(|p| p.0).fold(x_max, f64::min);
    let y_min = all.map(|p| p.1).fold(1.0, f64::min);
    let x_range = (decade_below(x_min).min(1.0))..decade_above(x_max * 1.01);
    let y_range = decade_below(y_min * 0.99)..1.0;

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .x_desc("lateness = attempt start − due time (ms, log scale)")
        .y_desc("share of runs at least this late (log scale)")
        .x_label_formatter(&|x| format!("{x}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, (s, pts)) in series.iter().zip(points).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(legend(s))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccdf_keeps_the_tail_and_starts_at_one() {
        let v: Vec<i64> = (0..10_000).collect();
        let p = ccdf_points(&v);
        assert_eq!(p[0].1, 1.0);
        assert_eq!(p.last().unwrap().1, 1.0 / 10_000.0);
        assert!(p.len() <= 2 * (BODY_POINTS + TAIL_POINTS + 1));
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 >= w[1].1));
    }

    #[test]
    fn draws_an_svg_without_fonts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let series = Series {
            label: "K=3".into(),
            lateness_us: vec![0, 800, 1200, 1500, 40_000],
        };
        lateness_svg(&path, "W2", &[series]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("K=3"), "{svg}");
    }
}
