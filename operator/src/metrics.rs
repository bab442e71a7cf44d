//! The operator's Prometheus metrics, in a `prometheus-client` registry that the admin endpoint
//! ([`bpfpin_runtime::admin`]) serves with the operator's readiness (as controller-rs does).

use std::time::Instant;

use bpfpin_runtime::admin::{Admin, ReasonLabel as Reason};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the reconcile duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// `/readyz` while not ready: a leader is ready once its caches are synced, a standby once started.
const NOT_READY: &str = "not ready: caches not synced yet";

/// The operator's metrics and readiness.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Counter,
    errors: Family<Reason, Counter>,
    duration: Histogram,
    status_patches: Counter,
    events: Counter,
    is_leader: Gauge,
    admin: Admin,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Counter::default();
        let errors = Family::<Reason, Counter>::default();
        let duration = Histogram::new(BUCKETS);
        let (status_patches, events) = (Counter::default(), Counter::default());
        let is_leader = Gauge::default();
        let mut r = Registry::default();
        r.register(
            "bpfpin_operator_reconciles",
            "BpfObject reconciliations started",
            reconciles.clone(),
        );
        r.register(
            "bpfpin_operator_reconcile_errors",
            "BpfObject reconciliations that failed, by reason",
            errors.clone(),
        );
        r.register(
            "bpfpin_operator_reconcile_duration_seconds",
            "Time spent in one BpfObject reconciliation",
            duration.clone(),
        );
        r.register(
            "bpfpin_operator_status_patches",
            "BpfObject status writes (server-side apply)",
            status_patches.clone(),
        );
        r.register(
            "bpfpin_operator_events",
            "Kubernetes Events published",
            events.clone(),
        );
        r.register(
            "bpfpin_operator_is_leader",
            "1 when this replica holds the leader lease and runs the controller",
            is_leader.clone(),
        );
        Self {
            reconciles,
            errors,
            duration,
            status_patches,
            events,
            is_leader,
            admin: Admin::new(r, NOT_READY),
        }
    }
}

/// Measures one reconcile; records its duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    duration: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.duration.observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts a reconcile and times it until the returned guard is dropped.
    pub fn reconcile(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            duration: self.duration.clone(),
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile by reason (`Error::metric_label`).
    pub fn reconcile_error(&self, reason: &'static str) {
        self.errors.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a status write.
    pub fn status_patch(&self) {
        self.status_patches.inc();
    }

    /// Counts a published Kubernetes Event.
    pub fn event(&self) {
        self.events.inc();
    }

    /// Sets whether this replica holds the lease.
    pub fn set_leader(&self, leader: bool) {
        self.is_leader.set(i64::from(leader));
    }

    /// The admin endpoint's view of these metrics; its readiness is set by `main` and the
    /// controller.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let text = m.admin().render();
        for line in [
            // OpenMetrics names the counter family without its `_total` sample suffix.
            "# TYPE bpfpin_operator_reconciles counter",
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
        let m = Metrics::default();
        for d in [
            Duration::from_micros(500),
            Duration::from_millis(30),
            Duration::from_secs(10),
        ] {
            m.duration.observe(d.as_secs_f64());
        }
        let out = m.admin().render();
        let x = "bpfpin_operator_reconcile_duration_seconds";
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"0.001\"}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"0.025\"}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"0.05\"}} 2\n")),
            "{out}"
        );
        // OpenMetrics writes bounds as floats.
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"5.0\"}} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"+Inf\"}} 3\n")),
            "{out}"
        );
        assert!(out.contains(&format!("{x}_count 3\n")), "{out}");
        assert!(out.contains(&format!("{x}_sum 10.0305\n")), "{out}");
    }

    /// The operator's answers on the admin endpoint (the routes are tested in bpfpin-runtime).
    #[test]
    fn routes() {
        use bpfpin_runtime::admin::route;
        let m = Metrics::default();
        let a = m.admin();
        assert_eq!(
            route("GET /readyz HTTP/1.1\r\n\r\n", a).status,
            "503 Service Unavailable"
        );
        a.set_ready(true);
        assert_eq!(
            route("GET /readyz?verbose HTTP/1.1\r\n\r\n", a).status,
            "200 OK"
        );
        let r = route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", a);
        assert!(r.content_type.contains("version=1.0.0"));
        assert!(r.body.contains("bpfpin_operator_reconciles_total 0"));
    }
}
