//! Results: one [`Measurement`] per run of a workload, summarized over repeats as median with
//! min–max, printed as a table for people or as JSON for scripts.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

/// One figure of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    pub value: f64,
}

/// What one run of a workload measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// `w1-bulk`, `w1-steady`, `w2`, `w3`, `w4`.
    pub workload: String,
    /// Parameters that identify the run (sizes, concurrency, store backend).
    pub params: Map<String, Value>,
    pub metrics: Vec<Metric>,
}

impl Measurement {
    pub fn new(workload: impl Into<String>) -> Self {
        Self {
            workload: workload.into(),
            params: Map::new(),
            metrics: Vec::new(),
        }
    }

    pub fn param(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    pub fn metric(&mut self, name: &str, unit: &str, value: f64) -> &mut Self {
        self.metrics.push(Metric {
            name: name.to_owned(),
            unit: unit.to_owned(),
            value,
        });
        self
    }

    /// The value of a metric, if measured.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

/// One metric over the repeats of a workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSummary {
    pub name: String,
    pub unit: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Every run's value, in run order.
    pub values: Vec<f64>,
}

/// A workload with the same parameters, over its repeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub workload: String,
    pub params: Map<String, Value>,
    pub runs: usize,
    pub metrics: Vec<MetricSummary>,
}

/// Median of the values (mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Groups measurements by workload and parameters (in order of first appearance) and
/// summarizes each metric.
pub fn summarize(measurements: &[Measurement]) -> Vec<Summary> {
    let mut groups: Vec<(String, Map<String, Value>, Vec<&Measurement>)> = Vec::new();
    for m in measurements {
        match groups
            .iter_mut()
            .find(|(w, p, _)| *w == m.workload && *p == m.params)
        {
            Some((_, _, list)) => list.push(m),
            None => groups.push((m.workload.clone(), m.params.clone(), vec![m])),
        }
    }
    groups
        .into_iter()
        .map(|(workload, params, runs)| {
            let mut metrics: Vec<MetricSummary> = Vec::new();
            for metric in runs.iter().flat_map(|r| &r.metrics) {
                match metrics.iter_mut().find(|s| s.name == metric.name) {
                    Some(s) => s.values.push(metric.value),
                    None => metrics.push(MetricSummary {
                        name: metric.name.clone(),
                        unit: metric.unit.clone(),
                        median: f64::NAN,
                        min: f64::NAN,
                        max: f64::NAN,
                        values: vec![metric.value],
                    }),
                }
            }
            for s in &mut metrics {
                s.median = median(&s.values);
                s.min = s.values.iter().copied().fold(f64::NAN, f64::min);
                s.max = s.values.iter().copied().fold(f64::NAN, f64::max);
            }
            Summary {
                workload,
                params,
                runs: runs.len(),
                metrics,
            }
        })
        .collect()
}

/// A number with a precision that suits its size.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    let a = v.abs();
    if a == 0.0 || a >= 1000.0 || (a.fract() == 0.0 && a < 1e15) {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn params_line(params: &Map<String, Value>) -> String {
    params
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table for people: one block per workload, one line per metric.
pub fn table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    for s in summaries {
        let runs = if s.runs == 1 {
            "1 run".to_owned()
        } else {
            format!("{} runs: median (min–max)", s.runs)
        };
        let _ = writeln!(out, "{}  {}  [{runs}]", s.workload, params_line(&s.params));
        let rows: Vec<(String, String, String, String)> = s
            .metrics
            .iter()
            .map(|m| {
                let range = if s.runs > 1 {
                    format!("{}–{}", format_value(m.min), format_value(m.max))
                } else {
                    String::new()
                };
                (
                    m.name.clone(),
                    format_value(m.median),
                    range,
                    m.unit.clone(),
                )
            })
            .collect();
        let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
        let w2 = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(0);
        for (name, value, range, unit) in rows {
            let line = format!("  {name:<w0$}  {value:>w1$}  {range:<w2$}  {unit}");
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: f64) -> Measurement {
        let mut m = Measurement::new("w1-bulk");
        m.param("n", 10).metric("jobs_per_s", "jobs/s", value);
        m
    }

    #[test]
    fn summarizes_repeats_as_median_with_min_and_max() {
        let s = summarize(&[run(3.0), run(1.0), run(2.0), run(10.0), run(4.0)]);
        assert_eq!(s.len(), 1);
        let m = &s[0].metrics[0];
        assert_eq!((m.median, m.min, m.max), (3.0, 1.0, 10.0));
        assert_eq!(s[0].runs, 5);
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        let text = table(&s);
        assert!(text.contains("jobs_per_s"), "{text}");
        assert!(text.contains("1–10"), "{text}");
    }
}
