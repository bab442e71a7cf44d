//! The agent's Prometheus metrics, in a `prometheus-client` registry that the admin endpoint
//! ([`bpfpin_runtime::admin`]) serves with the agent's readiness.

use std::time::Duration;

use bpfpin_runtime::admin::{Admin, ReasonLabel as Reason};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::pin::reconcile::PassReport;

/// Upper bounds of the pass duration histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `/readyz` until the first pass has run.
const NOT_READY: &str = "the first reconcile pass has not run yet";

/// A kind of API write, for `bpfpin_agent_api_writes_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The `BpfNodeState` object itself (created once).
    Object,
    /// Its status (only when it changed).
    Status,
    /// A renewal of the heartbeat Lease.
    Heartbeat,
}

impl Write {
    const ALL: [Self; 3] = [Self::Object, Self::Status, Self::Heartbeat];

    fn label(self) -> Kind {
        Kind {
            kind: match self {
                Self::Object => "object",
                Self::Status => "status",
                Self::Heartbeat => "heartbeat",
            },
        }
    }
}

/// A watch of the agent, for `bpfpin_agent_watch_events_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// This node's `Node`.
    Node,
    /// Every `BpfObject`.
    Object,
}

impl Watched {
    fn label(self) -> Kind {
        Kind {
            kind: match self {
                Self::Node => "node",
                Self::Object => "bpfobject",
            },
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// Metrics of one agent, shared by the pass loop and the admin endpoint.
#[derive(Debug)]
pub struct Metrics {
    passes: Counter,
    errors: Family<Reason, Counter>,
    pinned_objects: Gauge,
    pins: Family<Kind, Gauge>,
    duration: Histogram,
    writes: Family<Kind, Counter>,
    events: Family<Kind, Counter>,
    changes: Family<Kind, Counter>,
    admin: Admin,
}

impl Default for Metrics {
    fn default() -> Self {
        let passes = Counter::default();
        let errors = Family::<Reason, Counter>::default();
        let pinned_objects = Gauge::default();
        let pins = Family::<Kind, Gauge>::default();
        let duration = Histogram::new(BUCKETS);
        let (writes, events, changes) = (Family::default(), Family::default(), Family::default());
        // Every kind is shown from the start, at zero.
        for kind in ["program", "map", "link"] {
            drop(pins.get_or_create(&Kind { kind }));
        }
        for w in Write::ALL {
            drop(writes.get_or_create(&w.label()));
        }
        for w in [Watched::Node, Watched::Object] {
            drop(events.get_or_create(&w.label()));
            drop(changes.get_or_create(&w.label()));
        }
        let mut r = Registry::default();
        r.register(
            "bpfpin_agent_reconcile_passes",
            "Reconcile passes run",
            passes.clone(),
        );
        r.register(
            "bpfpin_agent_reconcile_errors",
            "Objects that failed in a pass, by reason",
            errors.clone(),
        );
        r.register(
            "bpfpin_agent_pinned_objects",
            "Objects with a version pinned after the last pass",
            pinned_objects.clone(),
        );
        r.register(
            "bpfpin_agent_pins",
            "Pins of the pinned objects after the last pass, by kind",
            pins.clone(),
        );
        r.register(
            "bpfpin_agent_reconcile_duration_seconds",
            "Duration of reconcile passes",
            duration.clone(),
        );
        r.register(
            "bpfpin_agent_api_writes",
            "Writes to the API server (the BpfNodeState object, its status, the heartbeat Lease), by kind",
            writes.clone(),
        );
        r.register(
            "bpfpin_agent_watch_events",
            "Watch events received after the initial list (added, modified, deleted), by watched kind",
            events.clone(),
        );
        r.register(
            "bpfpin_agent_watch_changes",
            "Watch events that changed what a pass reads (the others, e.g. status writes, wake nothing), by watched kind",
            changes.clone(),
        );
        Self {
            passes,
            errors,
            pinned_objects,
            pins,
            duration,
            writes,
            events,
            changes,
            admin: Admin::new(r, NOT_READY),
        }
    }
}

impl Metrics {
    /// Records a finished pass.
    pub fn observe_pass(&self, report: &PassReport, elapsed: Duration) {
        self.passes.inc();
        for e in report.objects.iter().filter_map(|r| r.error.as_ref()) {
            self.errors
                .get_or_create(&Reason {
                    reason: e.reason.as_str(),
                })
                .inc();
        }
        let pinned: Vec<_> = report
            .objects
            .iter()
            .filter_map(|r| r.pinned.as_ref())
            .collect();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.pinned_objects.set(count(pinned.len()));
        for (kind, n) in [
            ("program", pinned.iter().map(|p| p.programs.len()).sum()),
            ("map", pinned.iter().map(|p| p.maps.len()).sum()),
            ("link", pinned.iter().map(|p| p.links.len()).sum()),
        ] {
            self.pins.get_or_create(&Kind { kind }).set(count(n));
        }
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one API write.
    pub fn count_write(&self, kind: Write) {
        self.writes.get_or_create(&kind.label()).inc();
    }

    /// Counts one watch event; `changed`: it changed what a pass reads (and woke a pass).
    pub fn count_event(&self, watch: Watched, changed: bool) {
        self.events.get_or_create(&watch.label()).inc();
        if changed {
            self.changes.get_or_create(&watch.label()).inc();
        }
    }

    /// Watch events received so far: `(events, of which changed the inputs)` per watch.
    pub fn events(&self, watch: Watched) -> (u64, u64) {
        (
            self.events.get_or_create(&watch.label()).get(),
            self.changes.get_or_create(&watch.label()).get(),
        )
    }

    /// API writes so far: `[object, status, heartbeat]`.
    pub fn writes(&self) -> [u64; 3] {
        Write::ALL.map(|w| self.writes.get_or_create(&w.label()).get())
    }

    /// Marks the agent ready (after its first pass).
    pub fn set_ready(&self) {
        self.admin.set_ready(true);
    }

    /// Whether the first pass has run.
    pub fn is_ready(&self) -> bool {
        self.admin.is_ready()
    }

    /// The admin endpoint's view of these metrics and the readiness.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        self.admin.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ObjectError, Reason};
    use crate::pin::loader::PinnedVersion;
    use crate::pin::reconcile::{Action, ObjectReport};

    fn report() -> PassReport {
        let base = ObjectReport {
            name: "a".into(),
            uid: None,
            generation: 1,
            action: Action::Created,
            error: None,
            pinned: Some(PinnedVersion {
                version: "v".into(),
                programs: vec![("p".into(), 7)],
                maps: vec!["/m1".into(), "/m2".into()],
                links: vec!["/l".into()],
                shared: vec![],
            }),
            path: "/sys/fs/bpf/bpfpin/a".into(),
        };
        let failed = ObjectReport {
            name: "b".into(),
            action: Action::Failed,
            error: Some(ObjectError::new(Reason::VerifierRejected, "no")),
            pinned: None,
            ..base.clone()
        };
        PassReport {
            objects: vec![base, failed],
            ..Default::default()
        }
    }

    #[test]
    fn renders_every_family() {
        let m = Metrics::default();
        m.observe_pass(&report(), Duration::from_millis(20));
        m.count_write(Write::Status);
        m.count_event(Watched::Object, true);
        m.count_event(Watched::Object, false);
        assert_eq!(m.events(Watched::Object), (2, 1));
        assert_eq!(m.writes(), [0, 1, 0]);
        let text = m.render();
        for line in [
            "bpfpin_agent_reconcile_passes_total 1",
            "bpfpin_agent_reconcile_errors_total{reason=\"VerifierRejected\"} 1",
            "bpfpin_agent_pinned_objects 1",
            "bpfpin_agent_pins{kind=\"program\"} 1",
            "bpfpin_agent_pins{kind=\"map\"} 2",
            "bpfpin_agent_pins{kind=\"link\"} 1",
            "bpfpin_agent_reconcile_duration_seconds_bucket{le=\"0.01\"} 0",
            "bpfpin_agent_reconcile_duration_seconds_bucket{le=\"0.025\"} 1",
            "bpfpin_agent_reconcile_duration_seconds_bucket{le=\"+Inf\"} 1",
            "bpfpin_agent_reconcile_duration_seconds_count 1",
            "bpfpin_agent_api_writes_total{kind=\"status\"} 1",
            "bpfpin_agent_watch_events_total{kind=\"bpfobject\"} 2",
            "bpfpin_agent_watch_changes_total{kind=\"bpfobject\"} 1",
            "# TYPE bpfpin_agent_reconcile_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!m.is_ready());
        m.set_ready();
        assert!(m.is_ready());
    }

    /// The agent's answers on the admin endpoint (the routes are tested in bpfpin-runtime).
    #[test]
    fn routes() {
        use bpfpin_runtime::admin::route;
        let m = Metrics::default();
        assert_eq!(route("GET /healthz HTTP/1.1", m.admin()).status, "200 OK");
        let unready = route("GET /readyz HTTP/1.1", m.admin());
        assert_eq!(unready.status, "503 Service Unavailable");
        assert_eq!(unready.body, "the first reconcile pass has not run yet\n");
        m.set_ready();
        assert_eq!(route("GET /readyz HTTP/1.1", m.admin()).status, "200 OK");
        let metrics = route("GET /metrics HTTP/1.1", m.admin());
        assert_eq!(metrics.status, "200 OK");
        assert!(
            metrics
                .body
                .contains("bpfpin_agent_reconcile_passes_total 0")
        );
        assert_eq!(
            route("POST /metrics HTTP/1.1", m.admin()).status,
            "405 Method Not Allowed"
        );
        assert_eq!(
            route("GET /nope HTTP/1.1", m.admin()).status,
            "404 Not Found"
        );
    }
}
