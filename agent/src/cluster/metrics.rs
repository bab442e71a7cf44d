//! The agent's Prometheus metrics and readiness, rendered in the text exposition format by hand
//! (a handful of series do not justify a metrics crate).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::pin::reconcile::PassReport;

/// Upper bounds of the pass duration histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A kind of API write, for `bpfpin_agent_api_writes_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The `BpfNodeState` object itself (created once).
    Object,
    /// Its status.
    Status,
    /// A renewal of the heartbeat Lease.
    Heartbeat,
}

/// A watch of the agent, for `bpfpin_agent_watch_events_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// This node's `Node`.
    Node,
    /// Every `BpfObject`.
    Object,
}

#[derive(Debug, Default)]
struct State {
    passes: u64,
    errors: BTreeMap<String, u64>,
    pinned_objects: u64,
    pins: [u64; 3],
    buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    writes: [u64; 3],
    /// Watch events received after the initial lists, and those that changed what a pass reads.
    events: [u64; 2],
    changes: [u64; 2],
}

/// Metrics of one agent, shared by the pass loop and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
    ready: AtomicBool,
}

impl Metrics {
    /// Records a finished pass.
    pub fn observe_pass(&self, report: &PassReport, elapsed: Duration) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.passes += 1;
        for r in &report.objects {
            if let Some(e) = &r.error {
                *s.errors.entry(e.reason.as_str().to_owned()).or_default() += 1;
            }
        }
        let pinned: Vec<_> = report
            .objects
            .iter()
            .filter_map(|r| r.pinned.as_ref())
            .collect();
        s.pinned_objects = pinned.len() as u64;
        s.pins = [
            pinned.iter().map(|p| p.programs.len() as u64).sum(),
            pinned.iter().map(|p| p.maps.len() as u64).sum(),
            pinned.iter().map(|p| p.links.len() as u64).sum(),
        ];
        let secs = elapsed.as_secs_f64();
        s.duration_sum += secs;
        for (bucket, le) in s.buckets.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *bucket += 1;
            }
        }
    }

    /// Counts one API write.
    pub fn count_write(&self, kind: Write) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.writes[kind as usize] += 1;
    }

    /// Counts one watch event; `changed`: it changed what a pass reads (and woke a pass).
    pub fn count_event(&self, watch: Watched, changed: bool) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.events[watch as usize] += 1;
        if changed {
            s.changes[watch as usize] += 1;
        }
    }

    /// Watch events received so far: `(events, of which changed the inputs)` per watch.
    pub fn events(&self, watch: Watched) -> (u64, u64) {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (s.events[watch as usize], s.changes[watch as usize])
    }

    /// API writes so far: `[object, status, heartbeat]`.
    pub fn writes(&self) -> [u64; 3] {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .writes
    }

    /// Marks the agent ready (after its first pass).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether the first pass has run.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (suffix_labels, value) in samples {
                let _ = writeln!(out, "{name}{suffix_labels} {value}");
            }
        };
        family(
            "bpfpin_agent_reconcile_passes_total",
            "counter",
            "Reconcile passes run.",
            &[(String::new(), s.passes.to_string())],
        );
        let errors: Vec<_> = s
            .errors
            .iter()
            .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), n.to_string()))
            .collect();
        family(
            "bpfpin_agent_reconcile_errors_total",
            "counter",
            "Objects that failed in a pass, by reason.",
            &errors,
        );
        family(
            "bpfpin_agent_pinned_objects",
            "gauge",
            "Objects with a version pinned after the last pass.",
            &[(String::new(), s.pinned_objects.to_string())],
        );
        let pins: Vec<_> = ["program", "map", "link"]
            .iter()
            .zip(s.pins)
            .map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), n.to_string()))
            .collect();
        family(
            "bpfpin_agent_pins",
            "gauge",
            "Pins of the pinned objects after the last pass, by kind.",
            &pins,
        );
        let mut duration: Vec<_> = BUCKETS
            .iter()
            .zip(s.buckets)
            .map(|(le, n)| (format!("_bucket{{le=\"{le}\"}}"), n.to_string()))
            .collect();
        duration.push(("_bucket{le=\"+Inf\"}".into(), s.passes.to_string()));
        duration.push(("_sum".into(), s.duration_sum.to_string()));
        duration.push(("_count".into(), s.passes.to_string()));
        family(
            "bpfpin_agent_reconcile_duration_seconds",
            "histogram",
            "Duration of reconcile passes.",
            &duration,
        );
        let writes: Vec<_> = ["object", "status", "heartbeat"]
            .iter()
            .zip(s.writes)
            .map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), n.to_string()))
            .collect();
        family(
            "bpfpin_agent_api_writes_total",
            "counter",
            "Writes to the API server (the BpfNodeState object, its status, the heartbeat Lease), by kind.",
            &writes,
        );
        let mut events = Vec::new();
        for (i, kind) in ["node", "bpfobject"].iter().enumerate() {
            events.push((format!("{{kind=\"{kind}\"}}"), s.events[i].to_string()));
        }
        family(
            "bpfpin_agent_watch_events_total",
            "counter",
            "Watch events received after the initial list (added, modified, deleted), by watched kind.",
            &events,
        );
        let changes: Vec<_> = ["node", "bpfobject"]
            .iter()
            .zip(s.changes)
            .map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), n.to_string()))
            .collect();
        family(
            "bpfpin_agent_watch_changes_total",
            "counter",
            "Watch events that changed what a pass reads (the others, e.g. status writes, wake nothing), by watched kind.",
            &changes,
        );
        out
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
}
