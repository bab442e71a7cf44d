//! The agent's Prometheus metrics and readiness, rendered in the text exposition format by hand
//! (a handful of series do not justify a metrics crate).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::reconcile::PassReport;

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
}

#[derive(Debug, Default)]
struct State {
    passes: u64,
    errors: BTreeMap<String, u64>,
    pinned_objects: u64,
    pins: [u64; 3],
    buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    writes: [u64; 2],
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
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "bpfpin_agent_reconcile_passes_total",
            "counter",
            "Reconcile passes run.",
        );
        family(
            "bpfpin_agent_reconcile_errors_total",
            "counter",
            "Objects that failed in a pass, by reason.",
        );
        family(
            "bpfpin_agent_pinned_objects",
            "gauge",
            "Objects with a version pinned after the last pass.",
        );
        family(
            "bpfpin_agent_pins",
            "gauge",
            "Pins of the pinned objects after the last pass, by kind.",
        );
        family(
            "bpfpin_agent_reconcile_duration_seconds",
            "histogram",
            "Duration of reconcile passes.",
        );
        family(
            "bpfpin_agent_api_writes_total",
            "counter",
            "Writes to the API server, by kind.",
        );
        // Families are announced first so the samples below read as one block per family.
        let mut text = out;
        let _ = writeln!(text, "bpfpin_agent_reconcile_passes_total {}", s.passes);
        for (reason, n) in &s.errors {
            let _ = writeln!(
                text,
                "bpfpin_agent_reconcile_errors_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(text, "bpfpin_agent_pinned_objects {}", s.pinned_objects);
        for (kind, n) in ["program", "map", "link"].iter().zip(s.pins) {
            let _ = writeln!(text, "bpfpin_agent_pins{{kind=\"{kind}\"}} {n}");
        }
        for (le, n) in BUCKETS.iter().zip(s.buckets) {
            let _ = writeln!(
                text,
                "bpfpin_agent_reconcile_duration_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            text,
            "bpfpin_agent_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            s.passes
        );
        let _ = writeln!(
            text,
            "bpfpin_agent_reconcile_duration_seconds_sum {}",
            s.duration_sum
        );
        let _ = writeln!(
            text,
            "bpfpin_agent_reconcile_duration_seconds_count {}",
            s.passes
        );
        for (kind, n) in ["object", "status"].iter().zip(s.writes) {
            let _ = writeln!(text, "bpfpin_agent_api_writes_total{{kind=\"{kind}\"}} {n}");
        }
        text
    }
}
