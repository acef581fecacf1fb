//! Metrics in Prometheus' text exposition format (version 0.0.4): the families pipe exports,
//! the series they hold, and their rendering (pure). `tick.rs` keeps the counters of `pipe run`
//! between processes and writes them for node_exporter's textfile collector; `serve.rs` counts
//! what `pipe serve` answers and renders it for `/metrics`.

pub(crate) mod serve;
pub(crate) mod store;
pub(crate) mod tick;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The content type of the text format, as Prometheus asks for it.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family is, as `# TYPE` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, help text, type and, for a histogram, its bucket bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub buckets: &'static [f64],
}

impl Family {
    pub(crate) const fn counter(name: &'static str, help: &'static str) -> Family {
        Family { name, help, kind: Kind::Counter, buckets: &[] }
    }
    pub(crate) const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family { name, help, kind: Kind::Gauge, buckets: &[] }
    }
    pub(crate) const fn histogram(name: &'static str, help: &'static str, buckets: &'static [f64]) -> Family {
        Family { name, help, kind: Kind::Histogram, buckets }
    }
}

/// A label set as the text format writes it between braces (`project="a",result="failed"`),
/// values escaped; the key of a series. Labels keep the order given.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// One histogram series: a count per bucket bound (not cumulative), the sum and the count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Histogram {
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// Adds one observation; `bounds` are the family's bucket bounds (a series kept under
    /// other bounds starts over).
    pub(crate) fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.len() != bounds.len() {
            *self = Histogram { buckets: vec![0; bounds.len()], sum: 0.0, count: 0 };
        }
        if let Some(i) = bounds.iter().position(|b| value <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// The series of one family: plain values, or histograms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Series {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub histograms: BTreeMap<String, Histogram>,
}

/// Writes one family: `# HELP`, `# TYPE`, then its series in label order (a family without
/// series still says what it is, so a dashboard or rule finds it documented).
pub(crate) fn render(out: &mut String, family: &Family, series: Option<&Series>) {
    let _ = writeln!(out, "# HELP {} {}", family.name, family.help.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
    let Some(series) = series else { return };
    if family.kind != Kind::Histogram {
        for (labels, value) in &series.values {
            sample(out, family.name, labels, None, *value);
        }
        return;
    }
    for (labels, h) in &series.histograms {
        if h.buckets.len() != family.buckets.len() {
            continue;
        }
        let bucket = format!("{}_bucket", family.name);
        let mut cumulative = 0;
        for (bound, n) in family.buckets.iter().zip(&h.buckets) {
            cumulative += n;
            sample(out, &bucket, labels, Some(&number(*bound)), cumulative as f64);
        }
        sample(out, &bucket, labels, Some("+Inf"), h.count as f64);
        sample(out, &format!("{}_sum", family.name), labels, None, h.sum);
        sample(out, &format!("{}_count", family.name), labels, None, h.count as f64);
    }
}

fn sample(out: &mut String, name: &str, labels: &str, le: Option<&str>, value: f64) {
    out.push_str(name);
    match (labels.is_empty(), le) {
        (true, None) => {}
        (true, Some(le)) => {
            let _ = write!(out, "{{le=\"{le}\"}}");
        }
        (false, None) => {
            let _ = write!(out, "{{{labels}}}");
        }
        (false, Some(le)) => {
            let _ = write!(out, "{{{labels},le=\"{le}\"}}");
        }
    }
    let _ = writeln!(out, " {}", number(value));
}

/// A sample value as the text format spells it: integers without a fraction, `+Inf`, `NaN`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Which kind of ref a run was for: `branch`, `pull_request`, `tag` or `other`. Ref names are
/// never a label: they are unbounded; their kind is what dashboards group by.
pub(crate) fn ref_kind(refname: &str) -> &'static str {
    if crate::refs::pull_number(refname).is_some() {
        "pull_request"
    } else if refname.starts_with("refs/heads/") {
        "branch"
    } else if refname.starts_with("refs/tags/") {
        "tag"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECONDS: Family = Family::histogram("pipe_x_seconds", "How long.", &[1.0, 2.5]);

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y"), ("b", "back\\slash\nline")]), r#"a="x\"y",b="back\\slash\nline""#);
        assert_eq!(labels(&[]), "");
    }

    #[test]
    fn a_counter_renders_help_type_and_each_series() {
        let mut s = Series::default();
        s.values.insert(labels(&[("project", "b")]), 2.0);
        s.values.insert(labels(&[("project", "a")]), 1.0);
        let mut out = String::new();
        render(&mut out, &Family::counter("pipe_runs_total", "Runs."), Some(&s));
        assert_eq!(
            out,
            "# HELP pipe_runs_total Runs.\n# TYPE pipe_runs_total counter\n\
             pipe_runs_total{project=\"a\"} 1\npipe_runs_total{project=\"b\"} 2\n"
        );
    }

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        let mut s = Series::default();
        let h = s.histograms.entry(labels(&[("stage", "build")])).or_default();
        for v in [0.5, 2.0, 7.0] {
            h.observe(SECONDS.buckets, v);
        }
        let mut out = String::new();
        render(&mut out, &SECONDS, Some(&s));
        assert_eq!(
            out,
            "# HELP pipe_x_seconds How long.\n# TYPE pipe_x_seconds histogram\n\
             pipe_x_seconds_bucket{stage=\"build\",le=\"1\"} 1\n\
             pipe_x_seconds_bucket{stage=\"build\",le=\"2.5\"} 2\n\
             pipe_x_seconds_bucket{stage=\"build\",le=\"+Inf\"} 3\n\
             pipe_x_seconds_sum{stage=\"build\"} 9.5\n\
             pipe_x_seconds_count{stage=\"build\"} 3\n"
        );
    }

    #[test]
    fn a_histogram_kept_under_other_bounds_starts_over() {
        let mut h = Histogram { buckets: vec![4], sum: 10.0, count: 4 };
        h.observe(SECONDS.buckets, 2.0);
        assert_eq!(h, Histogram { buckets: vec![0, 1], sum: 2.0, count: 1 });
    }

    #[test]
    fn an_empty_family_still_says_what_it_is() {
        let mut out = String::new();
        render(&mut out, &Family::gauge("pipe_g", "A gauge."), None);
        assert_eq!(out, "# HELP pipe_g A gauge.\n# TYPE pipe_g gauge\n");
    }

    #[test]
    fn ref_kinds() {
        assert_eq!(ref_kind("refs/heads/dev"), "branch");
        assert_eq!(ref_kind("refs/pull/12/head"), "pull_request");
        assert_eq!(ref_kind("refs/tags/v1"), "tag");
    }
}
