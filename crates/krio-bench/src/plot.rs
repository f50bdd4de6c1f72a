//! SVG plot of the start-latency distributions (empirical CDFs), drawn with `plotters`.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{BenchError, Result};
use crate::report::Results;

fn color(runtime: &str) -> RGBColor {
    match runtime {
        "containerd" => RGBColor(31, 119, 180),
        "krio" => RGBColor(214, 39, 40),
        _ => RGBColor(44, 160, 44),
    }
}

/// Points of the empirical CDF: sorted samples against i/n.
pub fn ecdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    s.iter()
        .enumerate()
        .map(|(i, x)| (*x, (i + 1) as f64 / n))
        .collect()
}

/// Draws two panels — `start/total` (sequential) and `start/parallel_total` — one CDF line per runtime,
/// into an SVG of 1000×420 px at `path`.
///
/// # Errors
/// [`BenchError::Plot`] when drawing or writing fails.
pub fn start_latency_svg(results: &Results, path: &Path) -> Result<()> {
    draw(results, path).map_err(|e| BenchError::Plot {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn draw(results: &Results, path: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let specs = [
        ("total", "start, sequential (one pod at a time)"),
        ("parallel_total", "start, parallel (pods started at once)"),
    ];
    for (area, (metric, title)) in panels.iter().zip(specs) {
        let series: Vec<(String, Vec<(f64, f64)>)> = results
            .runtimes
            .iter()
            .map(|rt| (rt.clone(), ecdf(&results.samples(rt, "start", metric))))
            .filter(|(_, pts)| !pts.is_empty())
            .collect();
        let xmax = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
            .fold(1.0_f64, f64::max)
            * 1.05;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..xmax, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("milliseconds, RunPodSandbox until RUNNING")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("fraction of pods")
            .draw()?;
        for (rt, pts) in series {
            let c = color(&rt);
            // Step shape: hold each fraction until the next sample.
            let mut steps = Vec::with_capacity(pts.len() * 2 + 1);
            let mut prev = 0.0;
            for (x, y) in pts {
                steps.push((x, prev));
                steps.push((x, y));
                prev = y;
            }
            chart
                .draw_series(LineSeries::new(steps, c.stroke_width(2)))?
                .label(rt)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Unit, WorkloadResult};

    #[test]
    fn ecdf_points() {
        assert_eq!(ecdf(&[3.0, 1.0]), vec![(1.0, 0.5), (3.0, 1.0)]);
        assert!(ecdf(&[]).is_empty());
    }

    #[test]
    fn writes_svg() {
        let mut a = WorkloadResult::new("containerd", "start", 0);
        let mut b = WorkloadResult::new("krio", "start", 0);
        for i in 0..20 {
            a.push("total", Unit::Ms, 100.0 + f64::from(i));
            a.push("parallel_total", Unit::Ms, 300.0 + f64::from(i));
            b.push("total", Unit::Ms, 50.0 + f64::from(i));
        }
        a.finish();
        b.finish();
        let res = Results::pool(vec![a, b]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("start.svg");
        start_latency_svg(&res, &p).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("containerd") && svg.contains("krio"));
    }
}
