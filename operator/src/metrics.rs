//! Prometheus metrics, kept in atomics and rendered in the text exposition format (0.0.4). Small
//! enough that a metrics crate would cost more compile time than it saves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the reconcile duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        #[expect(
            clippy::cast_precision_loss,
            reason = "a sum of nanoseconds fits f64 well enough for a metric"
        )]
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

/// The operator's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    duration: Histogram,
    status_patches: AtomicU64,
    events: AtomicU64,
    is_leader: AtomicBool,
}

/// Measures one reconcile; records its duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.duration.observe(self.start.elapsed());
    }
}

impl Metrics {
    /// Counts a reconcile and times it until the returned guard is dropped.
    pub fn reconcile(&self) -> ReconcileTimer<'_> {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile by reason (`Error::metric_label`).
    pub fn reconcile_error(&self, reason: &'static str) {
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *errors.entry(reason).or_default() += 1;
    }

    /// Counts a status write.
    pub fn status_patch(&self) {
        self.status_patches.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a published Kubernetes Event.
    pub fn event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets whether this replica holds the lease.
    pub fn set_leader(&self, leader: bool) {
        self.is_leader.store(leader, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            &mut out,
            "bpfpin_operator_reconciles_total",
            "BpfObject reconciliations started.",
            self.reconciles.load(Ordering::Relaxed),
        );

        let _ = writeln!(
            out,
            "# HELP bpfpin_operator_reconcile_errors_total BpfObject reconciliations that failed, by reason.\n\
             # TYPE bpfpin_operator_reconcile_errors_total counter"
        );
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (reason, n) in errors {
            let _ = writeln!(
                out,
                "bpfpin_operator_reconcile_errors_total{{reason=\"{reason}\"}} {n}"
            );
        }

        let _ = writeln!(
            out,
            "# HELP bpfpin_operator_reconcile_duration_seconds Time spent in one BpfObject reconciliation.\n\
             # TYPE bpfpin_operator_reconcile_duration_seconds histogram"
        );
        self.duration
            .render(&mut out, "bpfpin_operator_reconcile_duration_seconds");

        counter(
            &mut out,
            "bpfpin_operator_status_patches_total",
            "BpfObject status writes (server-side apply).",
            self.status_patches.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "bpfpin_operator_events_total",
            "Kubernetes Events published.",
            self.events.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP bpfpin_operator_is_leader 1 when this replica holds the leader lease and runs the controller.\n\
             # TYPE bpfpin_operator_is_leader gauge\n\
             bpfpin_operator_is_leader {}",
            u8::from(self.is_leader.load(Ordering::Relaxed))
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        {
            let _t = m.reconcile();
        }
        drop(m.reconcile());
        m.reconcile_error("patch_status");
        m.reconcile_error("patch_status");
        m.reconcile_error("add_finalizer");
        m.status_patch();
        m.set_leader(true);
        let text = m.render();
        for line in [
            "# TYPE bpfpin_operator_reconciles_total counter",
            "bpfpin_operator_reconciles_total 2",
            "bpfpin_operator_reconcile_errors_total{reason=\"patch_status\"} 2",
            "bpfpin_operator_reconcile_errors_total{reason=\"add_finalizer\"} 1",
            "# TYPE bpfpin_operator_reconcile_duration_seconds histogram",
            "bpfpin_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "bpfpin_operator_reconcile_duration_seconds_count 2",
            "bpfpin_operator_status_patches_total 1",
            "bpfpin_operator_is_leader 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render(&mut out, "x");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.025\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.05\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 10.0305\n"), "{out}");
    }
}
