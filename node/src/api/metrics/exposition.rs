//! The Prometheus text exposition format (version 0.0.4): families declared once with `# HELP`
//! and `# TYPE`, samples with escaped labels, histograms as cumulative buckets.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::stats::HistogramView;

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A text exposition under construction.
#[derive(Default)]
pub(super) struct Exposition {
    out: String,
    /// Families written so far: a name may be declared once.
    seen: HashSet<&'static str>,
}

impl Exposition {
    pub(super) fn family(&mut self, name: &'static str, kind: Kind, help: &str) {
        let first = self.seen.insert(name);
        debug_assert!(first, "metric family {name} declared twice");
        debug_assert!(
            !matches!(kind, Kind::Counter) || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// A histogram's series: cumulative `_bucket`s with `le`, then `+Inf`, `_sum`, `_count`.
    pub(super) fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramView) {
        let bucket = format!("{name}_bucket");
        let with_le = |le: &str, n: u64, out: &mut Self| {
            let mut l = labels.to_vec();
            l.push(("le", le));
            out.sample(&bucket, &l, n as f64);
        };
        for (bound, n) in &h.buckets {
            with_le(&format_value(*bound), *n, self);
        }
        with_le("+Inf", h.count, self);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    pub(super) fn finish(self) -> String {
        self.out
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_escapes_and_formats() {
        let mut e = Exposition::default();
        e.family("wukong_x_total", Kind::Counter, "a \\ b\nc");
        e.sample("wukong_x_total", &[("a", "q\"\\\n"), ("b", "2")], 3.0);
        e.family("wukong_y", Kind::Gauge, "y");
        e.sample("wukong_y", &[], 0.25);
        e.sample("wukong_y", &[], f64::INFINITY);
        e.sample("wukong_y", &[], f64::NAN);
        let text = e.finish();
        let want = "# HELP wukong_x_total a \\\\ b\\nc\n# TYPE wukong_x_total counter\n\
                    wukong_x_total{a=\"q\\\"\\\\\\n\",b=\"2\"} 3\n\
                    # HELP wukong_y y\n# TYPE wukong_y gauge\nwukong_y 0.25\nwukong_y +Inf\nwukong_y NaN\n";
        assert_eq!(text, want);
    }

    #[test]
    fn histograms_are_written_cumulatively() {
        let mut e = Exposition::default();
        e.family("wukong_h_seconds", Kind::Histogram, "h");
        let view = HistogramView {
            buckets: vec![(0.5, 1), (1.0, 3)],
            sum: 2.25,
            count: 4,
        };
        e.histogram("wukong_h_seconds", &[("outcome", "ok")], &view);
        let want = "# HELP wukong_h_seconds h\n# TYPE wukong_h_seconds histogram\n\
                    wukong_h_seconds_bucket{outcome=\"ok\",le=\"0.5\"} 1\n\
                    wukong_h_seconds_bucket{outcome=\"ok\",le=\"1\"} 3\n\
                    wukong_h_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 4\n\
                    wukong_h_seconds_sum{outcome=\"ok\"} 2.25\n\
                    wukong_h_seconds_count{outcome=\"ok\"} 4\n";
        assert_eq!(e.finish(), want);
    }
}
