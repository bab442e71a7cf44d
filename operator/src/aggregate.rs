//! Aggregation of the per-node reports (`BpfNodeState`) into one `BpfObject.status`: which nodes
//! are selected, which pinned the current generation, which failed it, which are still pending,
//! and the `Ready` / `Progressing` / `Degraded` conditions that say so.
//!
//! Pure: the inputs are plain values, so every case is unit-tested without an API server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bpfpin_crds::bpf_object::MAX_STATUS_FAILURES;
use bpfpin_crds::{
    BpfNodeState, BpfObjectStatus, NodeCounts, NodeFailure, ObjectPhase, Requirements,
    UnsupportedNode,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;

use crate::conditions::{self, DEGRADED, Desired, PROGRESSING, READY};
use crate::messages;
use crate::node_report::{self, Liveness};
use bpfpin_crds::selector::{InvalidSelector, Selector};

/// At most this many per-node explanations in a `Progressing` message.
const MAX_PENDING_DETAILS: usize = 5;
/// At most this many failures spelled out in the `Degraded` message.
const MAX_DEGRADED_DETAILS: usize = 3;

/// The object being aggregated.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.uid`.
    pub uid: Option<&'a str>,
    /// `metadata.generation`.
    pub generation: i64,
    /// `spec.nodeSelector`.
    pub selector: Option<&'a LabelSelector>,
    /// The time at which liveness is judged.
    pub now: Timestamp,
    /// A node whose agent's heartbeat is older than this is not reporting.
    pub stale_after: Duration,
    /// `spec.requires`: nodes whose published capabilities fall short are not selected.
    pub requires: Option<&'a Requirements>,
}

/// A Node as far as selection is concerned.
#[derive(Debug, Clone, Copy)]
pub struct NodeInfo<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// Why a selected node does not count as ready or failed for the current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The node has no `BpfNodeState`: its agent never started.
    NoNodeState,
    /// The agent never wrote a heartbeat.
    NoHeartbeat,
    /// The agent's heartbeat is older than `stale_after`.
    Stale,
    /// The agent is live but does not list the object yet.
    NotListed,
    /// The agent reports another generation.
    OtherGeneration(i64),
    /// The agent reports the current generation as `Pending`, with its reason if any.
    Pending(Option<String>),
}

/// A selected node that is not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNode {
    pub node: String,
    pub why: Waiting,
}

/// The object's state across the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// The generation judged.
    pub generation: i64,
    /// Whether `spec.nodeSelector` is set (for the message when nothing is selected).
    pub has_selector: bool,
    /// The staleness bound used (for messages).
    pub stale_after: Duration,
    /// `spec.nodeSelector` could not be evaluated; nothing is selected.
    pub invalid_selector: Option<InvalidSelector>,
    /// Number of selected nodes.
    pub selected: usize,
    /// Nodes that pinned the current generation, by name.
    pub ready: Vec<String>,
    /// Nodes that failed the current generation, by node name (all of them).
    pub failed: Vec<NodeFailure>,
    /// Nodes still pending, by name.
    pub pending: Vec<PendingNode>,
    /// Nodes the selector matches that cannot run the object (`spec.requires`), by name; not
    /// counted in `selected`.
    pub unsupported: Vec<UnsupportedNode>,
    /// The `bytecodeSha256` and `imageDigest` each ready node reports (when it does).
    pub digests: Vec<(Option<String>, Option<String>)>,
    /// Pod-scoped attachments summed over the nodes that report this generation.
    pub pods: Option<bpfpin_crds::PodCounts>,
}

/// Aggregates the reports of the selected `nodes`; `state_of` returns a node's `BpfNodeState`,
/// `heartbeat_of` when its agent last renewed its heartbeat Lease.
pub fn aggregate<'a>(
    input: &Input<'_>,
    nodes: impl IntoIterator<Item = NodeInfo<'a>>,
    state_of: impl Fn(&str) -> Option<Arc<BpfNodeState>>,
    heartbeat_of: impl Fn(&str) -> Option<Timestamp>,
) -> Aggregate {
    let mut out = Aggregate {
        generation: input.generation,
        has_selector: input.selector.is_some(),
        stale_after: input.stale_after,
        invalid_selector: None,
        selected: 0,
        ready: Vec::new(),
        failed: Vec::new(),
        pending: Vec::new(),
        unsupported: Vec::new(),
        digests: Vec::new(),
        pods: None,
    };
    let selector = match Selector::parse(input.selector) {
        Ok(s) => s,
        Err(e) => {
            out.invalid_selector = Some(e);
            return out;
        }
    };
    let mut selected: Vec<&str> = nodes
        .into_iter()
        .filter(|n| selector.matches(n.labels))
        .map(|n| n.name)
        .collect();
    selected.sort_unstable();
    selected.dedup();
    for node in selected {
        let pending = |why| PendingNode {
            node: node.to_owned(),
            why,
        };
        let Some(state) = state_of(node) else {
            out.pending.push(pending(Waiting::NoNodeState));
            out.selected += 1;
            continue;
        };
        if let Some(requirement) = unsupported(input, &state) {
            out.unsupported.push(UnsupportedNode {
                node: node.to_owned(),
                requirement,
            });
            continue;
        }
        out.selected += 1;
        match node_report::liveness(heartbeat_of(node), input.now, input.stale_after) {
            Liveness::Live { .. } => {}
            Liveness::Stale { .. } => {
                out.pending.push(pending(Waiting::Stale));
                continue;
            }
            Liveness::NoHeartbeat => {
                out.pending.push(pending(Waiting::NoHeartbeat));
                continue;
            }
        }
        let Some(entry) = node_report::entry_for(&state, input.name, input.uid) else {
            out.pending.push(pending(Waiting::NotListed));
            continue;
        };
        if entry.generation != input.generation {
            out.pending
                .push(pending(Waiting::OtherGeneration(entry.generation)));
            continue;
        }
        if let Some(p) = &entry.pods {
            let sum = out.pods.get_or_insert_default();
            sum.matched += p.matched;
            sum.attached += p.attached;
            sum.failed += p.matched - p.attached;
        }
        match entry.phase {
            ObjectPhase::Pinned => {
                out.ready.push(node.to_owned());
                out.digests
                    .push((entry.bytecode_sha256.clone(), entry.image_digest.clone()));
            }
            // The agent judged it unsupported, but its capabilities are not published (or
            // judge otherwise): not counted as selected either way.
            ObjectPhase::Unsupported => {
                out.selected -= 1;
                out.unsupported.push(UnsupportedNode {
                    node: node.to_owned(),
                    requirement: entry.message.clone().unwrap_or_default(),
                });
            }
            ObjectPhase::Failed => out.failed.push(NodeFailure {
                node: node.to_owned(),
                reason: entry
                    .reason
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "Failed".into()),
                message: messages::truncate(
                    entry
                        .message
                        .as_deref()
                        .filter(|m| !m.is_empty())
                        .unwrap_or("the agent gave no message"),
                    messages::MAX_AGENT_MESSAGE,
                ),
            }),
            ObjectPhase::Pending => out
                .pending
                .push(pending(Waiting::Pending(entry.reason.clone()))),
        }
    }
    out
}

/// The requirement of `spec.requires` that `state`'s published capabilities fail, if any.
fn unsupported(input: &Input<'_>, state: &BpfNodeState) -> Option<String> {
    let caps = state.status.as_ref()?.capabilities.as_ref()?;
    input.requires?.unmet(caps)
}

/// One digest when every value agrees, `<n> distinct digests` otherwise, `None` when no node
/// reports one.
fn agreed<'a>(values: impl Iterator<Item = Option<&'a String>>, prefix: &str) -> Option<String> {
    let distinct: std::collections::BTreeSet<&String> = values.flatten().collect();
    match distinct.len() {
        0 => None,
        1 => distinct.first().map(|d| format!("{prefix}{d}")),
        n => Some(format!("{n} distinct digests")),
    }
}

impl Waiting {
    /// A short explanation, or `None` when being pending needs none (the agent simply has not
    /// reached the object yet).
    fn detail(&self, stale_after: Duration) -> Option<String> {
        match self {
            Self::NoNodeState => Some("no BpfNodeState, is the bpfpin agent running there?".into()),
            Self::NoHeartbeat => Some("its agent never reported a heartbeat".into()),
            Self::Stale => Some(format!(
                "agent heartbeat older than {}",
                messages::duration(stale_after)
            )),
            Self::NotListed => None,
            Self::OtherGeneration(g) => Some(format!("reports generation {g}")),
            Self::Pending(Some(reason)) if !reason.is_empty() => Some(format!("pending: {reason}")),
            Self::Pending(_) => None,
        }
    }
}

impl Aggregate {
    fn summary(&self) -> String {
        format!(
            "{}/{} nodes pinned generation {}",
            self.ready.len(),
            self.selected,
            self.generation
        )
    }

    fn pending_names(&self) -> Vec<&str> {
        self.pending.iter().map(|p| p.node.as_str()).collect()
    }

    fn failed_names(&self) -> Vec<&str> {
        self.failed.iter().map(|f| f.node.as_str()).collect()
    }

    /// `(n2, n3: agent heartbeat older than 1m30s; n4: reports generation 1)`, or empty: the
    /// pending nodes that need an explanation, grouped by explanation.
    fn pending_details(&self) -> String {
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for p in &self.pending {
            let Some(detail) = p.why.detail(self.stale_after) else {
                continue;
            };
            match groups.iter_mut().find(|(d, _)| *d == detail) {
                Some((_, nodes)) => nodes.push(&p.node),
                None => groups.push((detail, vec![&p.node])),
            }
        }
        if groups.is_empty() {
            return String::new();
        }
        let mut out = groups
            .iter()
            .take(MAX_PENDING_DETAILS)
            .map(|(detail, nodes)| format!("{}: {detail}", messages::names(nodes)))
            .collect::<Vec<_>>()
            .join("; ");
        if groups.len() > MAX_PENDING_DETAILS {
            out.push_str(&format!(
                "; {} more explanations",
                groups.len() - MAX_PENDING_DETAILS
            ));
        }
        format!(" ({out})")
    }

    fn unsupported_names(&self) -> Vec<&str> {
        self.unsupported.iter().map(|u| u.node.as_str()).collect()
    }

    /// `n1: kernel 5.10.0 is older than …; 2 more nodes`: the first unsupported node's reason.
    fn unsupported_details(&self) -> String {
        let Some(first) = self.unsupported.first() else {
            return String::new();
        };
        let mut out = format!("{}: {}", first.node, first.requirement);
        if self.unsupported.len() > 1 {
            out.push_str(&format!(
                "; {} more unsupported nodes",
                self.unsupported.len() - 1
            ));
        }
        out
    }

    fn failure_text(f: &NodeFailure) -> String {
        format!("{}: {}: {}", f.node, f.reason, f.message)
    }

    /// The `Ready`, `Progressing` and `Degraded` conditions, before transition times.
    pub fn desired_conditions(&self) -> Vec<Desired> {
        let generation = self.generation;
        if let Some(err) = &self.invalid_selector {
            let msg = format!("no node is selected: {err}");
            return vec![
                Desired::new(READY, false, "InvalidNodeSelector", msg.clone()),
                Desired::new(PROGRESSING, false, "InvalidNodeSelector", msg.clone()),
                Desired::new(DEGRADED, true, "InvalidNodeSelector", msg),
            ];
        }
        if self.selected == 0 && !self.unsupported.is_empty() {
            let msg = format!(
                "no selected node can run it (spec.requires): {}",
                self.unsupported_details()
            );
            return vec![
                Desired::new(READY, true, "NoSupportedNodes", msg.clone()),
                Desired::new(PROGRESSING, false, "NoSupportedNodes", msg.clone()),
                Desired::new(DEGRADED, false, "NoFailures", msg),
            ];
        }
        if self.selected == 0 {
            let msg = if self.has_selector {
                "no node matches spec.nodeSelector"
            } else {
                "the cluster has no nodes"
            };
            return vec![
                Desired::new(READY, true, "NoNodesSelected", msg),
                Desired::new(PROGRESSING, false, "NoNodesSelected", msg),
                Desired::new(DEGRADED, false, "NoFailures", msg),
            ];
        }

        let ready = if let Some(first) = self.failed.first() {
            let mut msg = format!(
                "{}; failed on {}",
                self.summary(),
                messages::names(&self.failed_names())
            );
            if !self.pending.is_empty() {
                msg.push_str(&format!(
                    "; waiting for {}",
                    messages::names(&self.pending_names())
                ));
            }
            msg.push_str(&format!("; {}", Self::failure_text(first)));
            Desired::new(READY, false, "Failed", msg)
        } else if !self.pending.is_empty() {
            Desired::new(
                READY,
                false,
                "Progressing",
                format!(
                    "{}, waiting for {}{}",
                    self.summary(),
                    messages::names(&self.pending_names()),
                    self.pending_details()
                ),
            )
        } else if self.unsupported.is_empty() {
            Desired::new(READY, true, "Pinned", self.summary())
        } else {
            Desired::new(
                READY,
                true,
                "Pinned",
                format!(
                    "{}; not run on {} (spec.requires: {})",
                    self.summary(),
                    messages::names(&self.unsupported_names()),
                    self.unsupported_details()
                ),
            )
        };

        let progressing = if self.pending.is_empty() {
            Desired::new(
                PROGRESSING,
                false,
                "AllNodesReported",
                format!(
                    "all {} selected nodes reported generation {generation}",
                    self.selected
                ),
            )
        } else {
            Desired::new(
                PROGRESSING,
                true,
                "NodesPending",
                format!(
                    "waiting for {} to report generation {generation}{}",
                    messages::names(&self.pending_names()),
                    self.pending_details()
                ),
            )
        };

        let degraded = match self.failed.first() {
            None => Desired::new(
                DEGRADED,
                false,
                "NoFailures",
                format!("no selected node reports a failure for generation {generation}"),
            ),
            Some(first) => {
                let mut msg = self
                    .failed
                    .iter()
                    .take(MAX_DEGRADED_DETAILS)
                    .map(Self::failure_text)
                    .collect::<Vec<_>>()
                    .join("; ");
                if self.failed.len() > MAX_DEGRADED_DETAILS {
                    msg.push_str(&format!(
                        "; {} more nodes failed",
                        self.failed.len() - MAX_DEGRADED_DETAILS
                    ));
                }
                Desired::new(
                    DEGRADED,
                    true,
                    messages::condition_reason(&first.reason, "Failed"),
                    msg,
                )
            }
        };
        vec![ready, progressing, degraded]
    }

    /// The status to write, keeping the previous conditions' transition times where their status
    /// did not change.
    pub fn status(&self, previous: Option<&BpfObjectStatus>, now: Timestamp) -> BpfObjectStatus {
        let previous_conditions = previous.map_or(&[][..], |p| p.conditions.as_slice());
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        BpfObjectStatus {
            observed_generation: Some(self.generation),
            conditions: conditions::merge(
                previous_conditions,
                self.desired_conditions(),
                Some(self.generation),
                now,
            ),
            nodes: Some(NodeCounts {
                selected: count(self.selected),
                ready: count(self.ready.len()),
                failed: count(self.failed.len()),
                unsupported: count(self.unsupported.len()),
            }),
            nodes_ready: Some(format!("{}/{}", self.ready.len(), self.selected)),
            failures: self
                .failed
                .iter()
                .take(MAX_STATUS_FAILURES)
                .cloned()
                .collect(),
            unsupported: self
                .unsupported
                .iter()
                .take(MAX_STATUS_FAILURES)
                .cloned()
                .collect(),
            digest: agreed(self.digests.iter().map(|d| d.0.as_ref()), "sha256:"),
            image_digest: agreed(self.digests.iter().map(|d| d.1.as_ref()), ""),
            pods: self.pods.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bpfpin_crds::ObjectPhase::{Failed, Pending, Pinned};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    use super::*;
    use crate::conditions::{find, is_true};
    use crate::node_report::fixtures::{at, entry, failed, heartbeat, state, t0};

    const STALE: Duration = Duration::from_secs(90);

    struct World {
        nodes: Vec<(String, BTreeMap<String, String>)>,
        states: BTreeMap<String, Arc<BpfNodeState>>,
        requires: Option<Requirements>,
    }

    impl World {
        fn new(nodes: &[(&str, &[(&str, &str)])]) -> Self {
            Self {
                nodes: nodes
                    .iter()
                    .map(|(n, labels)| {
                        (
                            (*n).to_owned(),
                            labels
                                .iter()
                                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                                .collect(),
                        )
                    })
                    .collect(),
                states: BTreeMap::new(),
                requires: None,
            }
        }

        fn plain(names: &[&str]) -> Self {
            let nodes: Vec<(&str, &[(&str, &str)])> = names.iter().map(|n| (*n, &[][..])).collect();
            Self::new(&nodes)
        }

        fn report(mut self, s: BpfNodeState) -> Self {
            let name = s.metadata.name.clone().expect("named");
            self.states.insert(name, Arc::new(s));
            self
        }

        fn run(&self, selector: Option<&LabelSelector>, generation: i64) -> Aggregate {
            let input = Input {
                name: "counter",
                uid: Some("uid-counter"),
                generation,
                selector,
                now: t0(),
                stale_after: STALE,
                requires: self.requires.as_ref(),
            };
            aggregate(
                &input,
                self.nodes
                    .iter()
                    .map(|(name, labels)| NodeInfo { name, labels }),
                |n| self.states.get(n).cloned(),
                |n| self.states.get(n).and_then(|s| heartbeat(s)),
            )
        }
    }

    fn live(node: &str, objects: Vec<bpfpin_crds::NodeObjectState>) -> BpfNodeState {
        state(node, Some(at(-10)), objects)
    }

    fn cond(status: &BpfObjectStatus, t: &str) -> (String, String, String) {
        let c = find(&status.conditions, t).expect(t);
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    /// `status.nodes` as the aggregate counts them.
    fn counts(selected: i32, ready: i32, failed: i32, unsupported: i32) -> Option<NodeCounts> {
        Some(NodeCounts {
            selected,
            ready,
            failed,
            unsupported,
        })
    }

    /// Neither Progressing nor Degraded.
    fn assert_settled(s: &BpfObjectStatus) {
        assert_eq!(cond(s, PROGRESSING).0, "False");
        assert_eq!(cond(s, DEGRADED).0, "False");
    }

    /// A live state of `node` whose agent published kernel `kernel`.
    fn probed(
        node: &str,
        kernel: &str,
        objects: Vec<bpfpin_crds::NodeObjectState>,
    ) -> BpfNodeState {
        let mut s = live(node, objects);
        if let Some(status) = &mut s.status {
            status.capabilities = Some(bpfpin_crds::NodeCapabilities {
                kernel: kernel.into(),
                btf: true,
                ..Default::default()
            });
        }
        s
    }

    fn pinned_with(sha: &str, image: Option<&str>) -> bpfpin_crds::NodeObjectState {
        bpfpin_crds::NodeObjectState {
            bytecode_sha256: Some(sha.into()),
            image_digest: image.map(Into::into),
            ..entry("counter", 2, Pinned)
        }
    }

    #[test]
    fn nodes_whose_kernel_fails_spec_requires_are_unsupported_not_selected() {
        let mut w = World::plain(&["n1", "n2", "n3", "n4"])
            .report(probed("n1", "6.18.44", vec![pinned_with("aa", None)]))
            // Its agent still lists an old entry; the published kernel decides.
            .report(probed("n2", "5.10.0", vec![entry("counter", 1, Failed)]))
            // Capabilities not published (an older agent): the agent's own verdict counts.
            .report(live(
                "n3",
                vec![bpfpin_crds::NodeObjectState {
                    reason: Some("Unsupported".into()),
                    message: Some(
                        "kernel 5.4.0 is older than spec.requires.kernel.min 5.15".into(),
                    ),
                    ..entry("counter", 2, bpfpin_crds::ObjectPhase::Unsupported)
                }],
            ))
            .report(probed("n4", "6.1.0", vec![entry("counter", 2, Pending)]));
        w.requires = Some(
            serde_json::from_value(serde_json::json!({"kernel": {"min": "5.15"}}))
                .expect("requires"),
        );
        let a = w.run(None, 2);
        assert_eq!(a.selected, 2);
        assert_eq!(a.ready, ["n1"]);
        assert!(a.failed.is_empty(), "an unsupported node is not a failure");
        let s = a.status(None, t0());
        assert_eq!(s.nodes, counts(2, 1, 0, 2));
        assert_eq!(
            s.unsupported,
            [
                UnsupportedNode {
                    node: "n2".into(),
                    requirement: "kernel 5.10.0 is older than spec.requires.kernel.min 5.15".into()
                },
                UnsupportedNode {
                    node: "n3".into(),
                    requirement: "kernel 5.4.0 is older than spec.requires.kernel.min 5.15".into()
                },
            ]
        );
        assert_eq!(cond(&s, DEGRADED).0, "False");
        assert_eq!(s.nodes_ready.as_deref(), Some("1/2"));

        // n4 pins too: Ready, and the message says where it does not run and why.
        let w = w.report(probed("n4", "6.1.0", vec![pinned_with("aa", None)]));
        let s = w.run(None, 2).status(None, t0());
        assert_eq!(
            cond(&s, READY),
            (
                "True".into(),
                "Pinned".into(),
                "2/2 nodes pinned generation 2; not run on n2, n3 (spec.requires: n2: kernel 5.10.0 is older than spec.requires.kernel.min 5.15; 1 more unsupported nodes)".into()
            )
        );
        assert_eq!(s.digest.as_deref(), Some("sha256:aa"));

        // Without spec.requires the same nodes are all selected.
        let mut w = w;
        w.requires = None;
        let a = w.run(None, 2);
        assert_eq!(
            a.selected, 3,
            "n3's own Unsupported entry still keeps it out"
        );
    }

    #[test]
    fn no_node_that_can_run_it_is_ready_with_its_reason() {
        let mut w = World::plain(&["n1"]).report(probed("n1", "5.10.0", vec![]));
        w.requires = Some(
            serde_json::from_value(serde_json::json!({"kernel": {"min": "6.1"}}))
                .expect("requires"),
        );
        let s = w.run(None, 1).status(None, t0());
        assert_eq!(
            cond(&s, READY),
            (
                "True".into(),
                "NoSupportedNodes".into(),
                "no selected node can run it (spec.requires): n1: kernel 5.10.0 is older than spec.requires.kernel.min 6.1".into()
            )
        );
        assert_eq!(cond(&s, DEGRADED).0, "False");
    }

    #[test]
    fn one_digest_when_ready_nodes_agree_else_a_count() {
        let w = World::plain(&["n1", "n2", "n3"])
            .report(live("n1", vec![pinned_with("aa", Some("sha256:11"))]))
            .report(live("n2", vec![pinned_with("aa", Some("sha256:11"))]))
            .report(live("n3", vec![entry("counter", 2, Failed)]));
        let s = w.run(None, 2).status(None, t0());
        assert_eq!(s.digest.as_deref(), Some("sha256:aa"));
        assert_eq!(s.image_digest.as_deref(), Some("sha256:11"));
        let w = w.report(live("n3", vec![pinned_with("bb", Some("sha256:22"))]));
        let s = w.run(None, 2).status(None, t0());
        assert_eq!(s.digest.as_deref(), Some("2 distinct digests"));
        assert_eq!(s.image_digest.as_deref(), Some("2 distinct digests"));
        // Nodes that report no digest (an older agent) leave it out.
        let w = World::plain(&["n1"]).report(live("n1", vec![entry("counter", 2, Pinned)]));
        assert_eq!(w.run(None, 2).status(None, t0()).digest, None);
    }

    #[test]
    fn all_pinned_is_ready() {
        let w = World::plain(&["n1", "n2", "n3"])
            .report(live("n1", vec![entry("counter", 2, Pinned)]))
            .report(live("n2", vec![entry("counter", 2, Pinned)]))
            .report(live(
                "n3",
                vec![entry("other", 1, Failed), entry("counter", 2, Pinned)],
            ));
        let a = w.run(None, 2);
        assert_eq!(a.ready, ["n1", "n2", "n3"]);
        let s = a.status(None, t0());
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.nodes, counts(3, 3, 0, 0));
        assert_eq!(s.nodes_ready.as_deref(), Some("3/3"));
        assert!(s.failures.is_empty());
        assert_eq!(
            cond(&s, READY),
            (
                "True".into(),
                "Pinned".into(),
                "3/3 nodes pinned generation 2".into()
            )
        );
        assert_settled(&s);
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
    }

    #[test]
    fn pending_nodes_are_named_with_why() {
        let w = World::plain(&["n1", "n2", "n3", "n4", "n5", "n6"])
            .report(live("n1", vec![entry("counter", 2, Pinned)]))
            // n2: no BpfNodeState at all
            .report(state(
                "n3",
                Some(at(-91)),
                vec![entry("counter", 2, Pinned)],
            ))
            .report(live("n4", vec![entry("counter", 1, Pinned)]))
            .report(live("n5", vec![]))
            .report(live(
                "n6",
                vec![{
                    let mut e = entry("counter", 2, Pending);
                    e.reason = Some("FetchingBytecode".into());
                    e
                }],
            ));
        let a = w.run(None, 2);
        assert_eq!(a.ready, ["n1"]);
        let why: Vec<(&str, &Waiting)> = a
            .pending
            .iter()
            .map(|p| (p.node.as_str(), &p.why))
            .collect();
        assert_eq!(
            why,
            [
                ("n2", &Waiting::NoNodeState),
                ("n3", &Waiting::Stale),
                ("n4", &Waiting::OtherGeneration(1)),
                ("n5", &Waiting::NotListed),
                ("n6", &Waiting::Pending(Some("FetchingBytecode".into()))),
            ]
        );
        let s = a.status(None, t0());
        let (status, reason, msg) = cond(&s, READY);
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Progressing"));
        assert!(
            msg.starts_with("1/6 nodes pinned generation 2, waiting for n2, n3, n4, n5, n6 ("),
            "{msg}"
        );
        assert!(
            msg.contains("n3: agent heartbeat older than 1m30s"),
            "{msg}"
        );
        assert!(msg.contains("n2: no BpfNodeState"), "{msg}");
        assert!(msg.contains("n4: reports generation 1"), "{msg}");
        assert!(msg.contains("n6: pending: FetchingBytecode"), "{msg}");
        assert!(!msg.contains("n5:"), "{msg}");
        let (status, reason, msg) = cond(&s, PROGRESSING);
        assert_eq!((status.as_str(), reason.as_str()), ("True", "NodesPending"));
        assert!(
            msg.starts_with("waiting for n2, n3, n4, n5, n6 to report generation 2"),
            "{msg}"
        );
        assert_eq!(cond(&s, DEGRADED).0, "False");
    }

    #[test]
    fn pending_explanations_are_grouped() {
        let w = World::plain(&["n1", "n2", "n3", "n4"])
            .report(state("n2", Some(at(-100)), vec![]))
            .report(state("n4", Some(at(-100)), vec![]));
        let s = w.run(None, 1).status(None, t0());
        assert_eq!(
            cond(&s, READY).2,
            "0/4 nodes pinned generation 1, waiting for n1, n2, n3, n4 (n1, n3: no BpfNodeState, is the bpfpin agent running there?; n2, n4: agent heartbeat older than 1m30s)"
        );
    }

    #[test]
    fn brief_example_progressing_message() {
        let w = World::plain(&["n1", "n2", "n3"])
            .report(live("n1", vec![entry("counter", 2, Pinned)]))
            .report(live("n2", vec![]))
            .report(live("n3", vec![entry("counter", 2, Pending)]));
        let s = w.run(None, 2).status(None, t0());
        assert_eq!(
            cond(&s, READY).2,
            "1/3 nodes pinned generation 2, waiting for n2, n3"
        );
    }

    #[test]
    fn failures_make_ready_false_and_degraded_true() {
        let w = World::plain(&["n1", "n2", "n3", "n4"])
            .report(live("n1", vec![entry("counter", 2, Pinned)]))
            .report(live(
                "n2",
                vec![failed(
                    "counter",
                    2,
                    "VerifierRejected",
                    "R1 invalid mem access",
                )],
            ))
            .report(live(
                "n3",
                vec![failed("counter", 2, "DigestMismatch", "sha256 differs")],
            ))
            .report(live("n4", vec![]));
        let s = w.run(None, 2).status(None, t0());
        assert_eq!(s.nodes, counts(4, 1, 2, 0));
        assert_eq!(
            cond(&s, READY),
            (
                "False".into(),
                "Failed".into(),
                "1/4 nodes pinned generation 2; failed on n2, n3; waiting for n4; n2: VerifierRejected: R1 invalid mem access".into()
            )
        );
        assert_eq!(
            cond(&s, DEGRADED),
            (
                "True".into(),
                "VerifierRejected".into(),
                "n2: VerifierRejected: R1 invalid mem access; n3: DigestMismatch: sha256 differs"
                    .into()
            )
        );
        assert_eq!(cond(&s, PROGRESSING).0, "True");
        assert_eq!(s.failures.len(), 2);
        assert_eq!(s.failures[0].node, "n2");
    }

    #[test]
    fn failures_at_an_older_generation_do_not_count() {
        let w = World::plain(&["n1"]).report(live(
            "n1",
            vec![failed("counter", 1, "VerifierRejected", "old")],
        ));
        let a = w.run(None, 2);
        assert!(a.failed.is_empty());
        assert_eq!(a.pending[0].why, Waiting::OtherGeneration(1));
    }

    #[test]
    fn uid_mismatch_is_another_object() {
        let mut old = entry("counter", 2, Pinned);
        old.uid = Some("uid-of-deleted-counter".into());
        let w = World::plain(&["n1"]).report(live("n1", vec![old]));
        let a = w.run(None, 2);
        assert!(a.ready.is_empty());
        assert_eq!(a.pending[0].why, Waiting::NotListed);

        let mut no_uid = entry("counter", 2, Pinned);
        no_uid.uid = None;
        let w = World::plain(&["n1"]).report(live("n1", vec![no_uid]));
        assert_eq!(w.run(None, 2).ready, ["n1"]);
    }

    #[test]
    fn stale_or_silent_nodes_are_pending_even_if_pinned() {
        let w = World::plain(&["n1", "n2"])
            .report(state(
                "n1",
                Some(at(-3600)),
                vec![entry("counter", 2, Pinned)],
            ))
            .report(state("n2", None, vec![entry("counter", 2, Pinned)]));
        let a = w.run(None, 2);
        assert!(a.ready.is_empty());
        assert_eq!(a.pending[0].why, Waiting::Stale);
        assert_eq!(a.pending[1].why, Waiting::NoHeartbeat);
    }

    #[test]
    fn selector_limits_the_nodes() {
        let w = World::new(&[
            ("edge-1", &[("role", "edge")]),
            ("core-1", &[("role", "core")]),
            ("edge-2", &[("role", "edge")]),
        ])
        .report(live("edge-1", vec![entry("counter", 1, Pinned)]))
        .report(live(
            "core-1",
            vec![failed("counter", 1, "X", "not selected, ignored")],
        ));
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("role".into(), "edge".into())])),
            match_expressions: None,
        };
        let s = w.run(Some(&sel), 1).status(None, t0());
        assert_eq!(s.nodes, counts(2, 1, 0, 0));
        assert_eq!(
            cond(&s, READY).2,
            "1/2 nodes pinned generation 1, waiting for edge-2 (edge-2: no BpfNodeState, is the bpfpin agent running there?)"
        );
    }

    #[test]
    fn no_nodes_selected_is_ready() {
        let w = World::new(&[("core-1", &[("role", "core")])]);
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("role".into(), "edge".into())])),
            match_expressions: None,
        };
        let s = w.run(Some(&sel), 1).status(None, t0());
        assert_eq!(s.nodes, counts(0, 0, 0, 0));
        assert_eq!(s.nodes_ready.as_deref(), Some("0/0"));
        assert_eq!(
            cond(&s, READY),
            (
                "True".into(),
                "NoNodesSelected".into(),
                "no node matches spec.nodeSelector".into()
            )
        );
        assert_settled(&s);

        let empty = World::plain(&[]).run(None, 1).status(None, t0());
        assert_eq!(cond(&empty, READY).2, "the cluster has no nodes");
    }

    #[test]
    fn invalid_selector_is_degraded() {
        let w = World::plain(&["n1"]);
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "zone".into(),
                    operator: "Gt".into(),
                    values: Some(vec!["1".into()]),
                },
            ]),
        };
        let s = w.run(Some(&sel), 1).status(None, t0());
        let (status, reason, msg) = cond(&s, READY);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidNodeSelector")
        );
        assert!(
            msg.contains("matchExpressions[0]") && msg.contains("Gt"),
            "{msg}"
        );
        assert!(is_true(&s.conditions, DEGRADED));
    }

    #[test]
    fn failures_are_sorted_and_bounded() {
        let names: Vec<String> = (0..25).rev().map(|i| format!("n{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut w = World::plain(&refs);
        for n in &names {
            w = w.report(live(
                n,
                vec![failed("counter", 1, "VerifierRejected", &format!("on {n}"))],
            ));
        }
        let s = w.run(None, 1).status(None, t0());
        assert_eq!(s.nodes, counts(25, 0, 25, 0));
        assert_eq!(s.failures.len(), MAX_STATUS_FAILURES);
        let nodes: Vec<&str> = s.failures.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(
            nodes,
            [
                "n00", "n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08", "n09"
            ]
        );
        let (_, _, ready_msg) = cond(&s, READY);
        assert!(
            ready_msg.contains("failed on n00, n01,") && ready_msg.contains("and 15 more"),
            "{ready_msg}"
        );
        let (_, _, degraded) = cond(&s, DEGRADED);
        assert!(degraded.ends_with("; 22 more nodes failed"), "{degraded}");
    }

    #[test]
    fn long_agent_messages_are_bounded_and_odd_reasons_sanitized() {
        let long = "x".repeat(10_000);
        let w = World::plain(&["n1"]).report(live(
            "n1",
            vec![failed("counter", 1, "not camel case!", &long)],
        ));
        let s = w.run(None, 1).status(None, t0());
        assert!(s.failures[0].message.len() <= messages::MAX_AGENT_MESSAGE);
        assert_eq!(cond(&s, DEGRADED).1, "Failed");
        let mut no_detail = failed("counter", 1, "", "");
        no_detail.reason = None;
        no_detail.message = None;
        let s = World::plain(&["n1"])
            .report(live("n1", vec![no_detail]))
            .run(None, 1)
            .status(None, t0());
        assert_eq!(s.failures[0].reason, "Failed");
        assert_eq!(s.failures[0].message, "the agent gave no message");
    }

    #[test]
    fn recomputing_keeps_transition_times_and_compares_equal() {
        let w = World::plain(&["n1", "n2"])
            .report(live("n1", vec![entry("counter", 1, Pinned)]))
            .report(live("n2", vec![entry("counter", 1, Pending)]));
        let first = w.run(None, 1).status(None, t0());
        let again = w.run(None, 1).status(Some(&first), at(30));
        assert_eq!(first, again, "an unchanged world must not produce a write");

        let w = w.report(live("n2", vec![entry("counter", 1, Pinned)]));
        let done = w.run(None, 1).status(Some(&first), at(60));
        let ready = find(&done.conditions, READY).expect("ready");
        assert_eq!(ready.last_transition_time, Time(at(60)));
        let degraded = find(&done.conditions, DEGRADED).expect("degraded");
        assert_eq!(
            degraded.last_transition_time,
            Time(t0()),
            "Degraded stayed False"
        );
    }
}
