//! Which `BpfObject`s to reconcile when a `BpfNodeState` or a `Node` changes.
//!
//! Agents renew their heartbeat Lease every few seconds; reconciling every object on each renewal
//! would cost CPU for nothing. These indexes remember what matters of each watched object (the
//! status of each entry, whether the agent is live, the Node's labels) and turn a watch event into
//! the set of objects whose status or deletion can change. They follow the watcher's
//! `apply / delete / init / init_done` protocol and do no I/O, so they are tested without an API
//! server.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use std::sync::Arc;

use bpfpin_crds::{BpfNodeState, BpfObject, NodeObjectState, ObjectPhase};
use k8s_openapi::jiff::Timestamp;

use crate::node_report::{self, Heartbeats, Liveness};
use bpfpin_crds::selector::Selector;

/// The objects to reconcile, as names or as criteria resolved against the current stores.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Objects by name.
    pub objects: BTreeSet<String>,
    /// Objects whose selector matches the current labels of these nodes.
    pub nodes: BTreeSet<String>,
    /// Objects whose selector matches any of these label sets (e.g. a node's old and new labels).
    pub label_sets: Vec<BTreeMap<String, String>>,
    /// Every object being deleted: a deleted Node no longer blocks their finalizers, and which
    /// objects its agent listed is not known from the Node.
    pub deleting: bool,
}

impl Trigger {
    /// Whether nothing is to be reconciled.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && self.nodes.is_empty()
            && self.label_sets.is_empty()
            && !self.deleting
    }

    /// Adds `other` to `self`.
    pub fn merge(&mut self, other: Self) {
        self.objects.extend(other.objects);
        self.nodes.extend(other.nodes);
        self.label_sets.extend(other.label_sets);
        self.deleting |= other.deleting;
    }
}

/// The part of an entry that the operator's decisions read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryKey {
    uid: Option<String>,
    generation: i64,
    phase: ObjectPhase,
    reason: Option<String>,
    message: Option<String>,
    /// `status.digest` is aggregated from it.
    bytecode_sha256: Option<String>,
    image_digest: Option<String>,
    /// Pods matched and attached (`networkNamespaces`), which `status.pods` sums.
    pods: Option<(i32, i32)>,
}

impl From<&NodeObjectState> for EntryKey {
    fn from(e: &NodeObjectState) -> Self {
        Self {
            uid: e.uid.clone(),
            generation: e.generation,
            phase: e.phase,
            reason: e.reason.clone(),
            message: e.message.clone(),
            bytecode_sha256: e.bytecode_sha256.clone(),
            image_digest: e.image_digest.clone(),
            pods: e.pods.as_ref().map(|p| (p.matched, p.attached)),
        }
    }
}

#[derive(Debug, Clone)]
struct Tracked {
    /// Entries by object name. Several entries may share a name (old and new uid).
    entries: BTreeMap<String, Vec<EntryKey>>,
    /// When the agent turns stale (None: it is not live).
    stale_at: Option<Timestamp>,
}

impl Tracked {
    fn of(
        state: &BpfNodeState,
        heartbeat: Option<Timestamp>,
        now: Timestamp,
        stale_after: Duration,
    ) -> Self {
        let mut entries: BTreeMap<String, Vec<EntryKey>> = BTreeMap::new();
        for e in state.status.iter().flat_map(|s| &s.objects) {
            entries.entry(e.name.clone()).or_default().push(e.into());
        }
        Self {
            entries,
            stale_at: stale_at(heartbeat, now, stale_after),
        }
    }
}

/// When an agent whose heartbeat is at `heartbeat` turns stale (None: it is not live).
fn stale_at(
    heartbeat: Option<Timestamp>,
    now: Timestamp,
    stale_after: Duration,
) -> Option<Timestamp> {
    match node_report::liveness(heartbeat, now, stale_after) {
        Liveness::Live { stale_at } => Some(stale_at),
        Liveness::Stale { .. } | Liveness::NoHeartbeat => None,
    }
}

/// Index of `BpfNodeState`s and of the agents' heartbeats (their Leases).
#[derive(Debug)]
pub struct NodeStateIndex {
    stale_after: Duration,
    nodes: HashMap<String, Tracked>,
    /// The last heartbeat of each agent, by node (also of nodes without a state yet): the map
    /// the reconciler reads too.
    heartbeats: Heartbeats,
    /// Names seen since the last `init` (a relist), while one is in progress.
    relisting: Option<HashSet<String>>,
    /// Nodes whose Lease was seen since the last `heartbeats_init`, while a relist is in progress.
    relisting_heartbeats: Option<HashSet<String>>,
}

impl NodeStateIndex {
    /// An empty index judging liveness with `stale_after`, with heartbeats of its own.
    #[cfg(test)]
    pub fn new(stale_after: Duration) -> Self {
        Self::with_heartbeats(stale_after, Heartbeats::default())
    }

    /// An empty index that keeps the heartbeats it is given in `heartbeats` (shared with the
    /// reconciler).
    pub fn with_heartbeats(stale_after: Duration, heartbeats: Heartbeats) -> Self {
        Self {
            stale_after,
            nodes: HashMap::new(),
            heartbeats,
            relisting: None,
            relisting_heartbeats: None,
        }
    }

    /// An agent's heartbeat Lease was renewed (`Some`) or deleted (`None`). Only a change of
    /// liveness matters: the objects the node lists, and those selecting it.
    pub fn heartbeat(&mut self, node: &str, renewed: Option<Timestamp>, now: Timestamp) -> Trigger {
        if let Some(seen) = &mut self.relisting_heartbeats {
            seen.insert(node.to_owned());
        }
        self.heartbeats.set(node, renewed);
        let mut t = Trigger::default();
        if let Some(tracked) = self.nodes.get_mut(node) {
            let new = stale_at(renewed, now, self.stale_after);
            if tracked.stale_at.is_some() != new.is_some() {
                t.objects.extend(tracked.entries.keys().cloned());
                t.nodes.insert(node.to_owned());
            }
            tracked.stale_at = new;
        }
        t
    }

    /// A relist of the Leases begins.
    pub fn heartbeats_init(&mut self) {
        self.relisting_heartbeats = Some(HashSet::new());
    }

    /// The relist of the Leases is complete: Leases not seen again were deleted meanwhile.
    pub fn heartbeats_init_done(&mut self, now: Timestamp) -> Trigger {
        let known = self.heartbeats.nodes();
        let gone = not_relisted(&mut self.relisting_heartbeats, known.iter());
        let mut t = Trigger::default();
        for node in gone {
            t.merge(self.heartbeat(&node, None, now));
        }
        t
    }

    /// A node state was created or changed.
    pub fn apply(&mut self, state: &BpfNodeState, now: Timestamp) -> Trigger {
        let Some(node) = state.metadata.name.clone() else {
            return Trigger::default();
        };
        if let Some(seen) = &mut self.relisting {
            seen.insert(node.clone());
        }
        let new = Tracked::of(state, self.heartbeats.get(&node), now, self.stale_after);
        let mut t = Trigger::default();
        match self.nodes.get(&node) {
            None => {
                // A new agent: every object it lists, and every object selecting its node
                // (their messages said "no BpfNodeState").
                t.objects.extend(new.entries.keys().cloned());
                t.nodes.insert(node.clone());
            }
            Some(old) => {
                if old.stale_at.is_some() != new.stale_at.is_some() {
                    // Liveness flipped: every object listed before or now, and those selecting it.
                    t.objects.extend(old.entries.keys().cloned());
                    t.objects.extend(new.entries.keys().cloned());
                    t.nodes.insert(node.clone());
                } else {
                    for (name, keys) in &new.entries {
                        if old.entries.get(name) != Some(keys) {
                            t.objects.insert(name.clone());
                        }
                    }
                    for name in old.entries.keys() {
                        if !new.entries.contains_key(name) {
                            t.objects.insert(name.clone());
                        }
                    }
                }
            }
        }
        self.nodes.insert(node, new);
        t
    }

    /// A node state was deleted (its Node went away, or someone deleted it).
    pub fn delete(&mut self, node: &str) -> Trigger {
        let mut t = Trigger::default();
        if let Some(old) = self.nodes.remove(node) {
            t.objects.extend(old.entries.into_keys());
            t.nodes.insert(node.to_owned());
        }
        t
    }

    /// A relist begins: every state will be applied again.
    pub fn init(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// The relist is complete: states not seen again were deleted meanwhile.
    pub fn init_done(&mut self) -> Trigger {
        let gone = not_relisted(&mut self.relisting, self.nodes.keys());
        let mut t = Trigger::default();
        for node in gone {
            t.merge(self.delete(&node));
        }
        t
    }

    /// Time passed: agents whose heartbeat got older than `stale_after` since the last call stop
    /// counting as ready and stop blocking deletions.
    pub fn tick(&mut self, now: Timestamp) -> Trigger {
        let mut t = Trigger::default();
        for (node, tracked) in &mut self.nodes {
            if tracked.stale_at.is_some_and(|at| now >= at) {
                tracked.stale_at = None;
                t.objects.extend(tracked.entries.keys().cloned());
                t.nodes.insert(node.clone());
            }
        }
        t
    }
}

/// Index of Node labels.
#[derive(Debug, Default)]
pub struct NodeIndex {
    labels: HashMap<String, BTreeMap<String, String>>,
    relisting: Option<HashSet<String>>,
}

impl NodeIndex {
    /// A node was created or changed. Only label changes matter.
    pub fn apply(&mut self, node: &str, labels: &BTreeMap<String, String>) -> Trigger {
        if let Some(seen) = &mut self.relisting {
            seen.insert(node.to_owned());
        }
        let mut t = Trigger::default();
        match self.labels.get(node) {
            Some(old) if old == labels => return t,
            Some(old) => t.label_sets.push(old.clone()),
            None => {}
        }
        t.label_sets.push(labels.clone());
        self.labels.insert(node.to_owned(), labels.clone());
        t
    }

    /// A node was deleted: objects that selected it, and deletions it may have blocked.
    pub fn delete(&mut self, node: &str) -> Trigger {
        let mut t = Trigger::default();
        if let Some(old) = self.labels.remove(node) {
            t.label_sets.push(old);
            t.deleting = true;
        }
        t
    }

    /// A relist begins.
    pub fn init(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// The relist is complete: nodes not seen again were deleted meanwhile.
    pub fn init_done(&mut self) -> Trigger {
        let gone = not_relisted(&mut self.relisting, self.labels.keys());
        let mut t = Trigger::default();
        for node in gone {
            t.merge(self.delete(&node));
        }
        t
    }
}

/// The names of the existing `objects` that `trigger` designates; `node_labels` returns a Node's
/// current labels.
pub fn resolve(
    trigger: &Trigger,
    objects: &[Arc<BpfObject>],
    node_labels: impl Fn(&str) -> Option<BTreeMap<String, String>>,
) -> BTreeSet<String> {
    let mut label_sets = trigger.label_sets.clone();
    label_sets.extend(trigger.nodes.iter().filter_map(|n| node_labels(n)));
    let mut out = BTreeSet::new();
    if trigger.is_empty() {
        return out;
    }
    for obj in objects {
        let Some(name) = obj.metadata.name.as_deref() else {
            continue;
        };
        let wanted = trigger.objects.contains(name)
            || (trigger.deleting && obj.metadata.deletion_timestamp.is_some())
            || (!label_sets.is_empty()
                // An invalid selector selects nothing, but reconciling it is cheap and harmless.
                && Selector::parse(obj.spec.node_selector.as_ref())
                    .map_or(true, |s| label_sets.iter().any(|l| s.matches(l))));
        if wanted {
            out.insert(name.to_owned());
        }
    }
    out
}

/// Ends a relist: the keys not seen again since it began (deleted meanwhile); none when no
/// relist was under way.
fn not_relisted<'a>(
    relisting: &mut Option<HashSet<String>>,
    known: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let Some(seen) = relisting.take() else {
        return Vec::new();
    };
    known.filter(|n| !seen.contains(*n)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use bpfpin_crds::ObjectPhase::{Pending, Pinned};

    use super::*;
    use crate::node_report::fixtures::{at, entry, failed, heartbeat, state, t0};

    /// What an agent does: renew its Lease (the heartbeat `s` was built with), write its state.
    fn report(idx: &mut NodeStateIndex, s: BpfNodeState, now: Timestamp) -> Trigger {
        let node = s.metadata.name.clone().expect("named");
        let mut t = idx.heartbeat(&node, heartbeat(&s), now);
        t.merge(idx.apply(&s, now));
        t
    }

    const STALE: Duration = Duration::from_secs(90);

    fn names(t: &Trigger) -> Vec<&str> {
        t.objects.iter().map(String::as_str).collect()
    }

    /// n1 listing `a` and n2 listing `b`, both live since t0.
    fn two_agents() -> NodeStateIndex {
        let mut idx = NodeStateIndex::new(STALE);
        for (node, object) in [("n1", "a"), ("n2", "b")] {
            report(
                &mut idx,
                state(node, Some(t0()), vec![entry(object, 1, Pinned)]),
                t0(),
            );
        }
        idx
    }

    #[test]
    fn a_new_agent_triggers_what_it_lists_and_its_node() {
        let mut idx = NodeStateIndex::new(STALE);
        let t = report(
            &mut idx,
            state("n1", Some(t0()), vec![entry("a", 1, Pinned)]),
            t0(),
        );
        assert_eq!(names(&t), ["a"]);
        assert!(t.nodes.contains("n1"));
    }

    #[test]
    fn heartbeat_only_changes_trigger_nothing() {
        let mut idx = NodeStateIndex::new(STALE);
        let objects = vec![entry("a", 1, Pinned), entry("b", 1, Pending)];
        report(&mut idx, state("n1", Some(t0()), objects.clone()), t0());
        for s in [10, 40, 70] {
            let mut changed = objects.clone();
            // Fields the operator does not read (pin paths, program ids) do not matter either.
            changed[0].path = Some(format!("/sys/fs/bpf/bpfpin/a-{s}"));
            let t = report(&mut idx, state("n1", Some(at(s)), changed), at(s));
            assert!(t.is_empty(), "{t:?}");
        }
    }

    #[test]
    fn entry_changes_trigger_exactly_those_objects() {
        let mut idx = NodeStateIndex::new(STALE);
        report(
            &mut idx,
            state(
                "n1",
                Some(t0()),
                vec![
                    entry("a", 1, Pending),
                    entry("b", 1, Pinned),
                    entry("c", 1, Pinned),
                ],
            ),
            t0(),
        );
        let t = report(
            &mut idx,
            state(
                "n1",
                Some(at(5)),
                vec![
                    entry("a", 1, Pinned),
                    entry("b", 1, Pinned),
                    failed("d", 1, "X", "y"),
                ],
            ),
            at(5),
        );
        // a: phase changed; c: dropped (unpinned); d: new. b unchanged.
        assert_eq!(names(&t), ["a", "c", "d"]);
        assert!(t.nodes.is_empty());
        assert!(!t.deleting);
    }

    #[test]
    fn liveness_changes_trigger_listed_objects_and_selecting_ones() {
        let mut idx = NodeStateIndex::new(STALE);
        report(
            &mut idx,
            state("n1", Some(t0()), vec![entry("a", 1, Pinned)]),
            t0(),
        );
        assert!(idx.tick(at(89)).is_empty());
        let t = idx.tick(at(90));
        assert_eq!(names(&t), ["a"]);
        assert!(t.nodes.contains("n1"));
        assert!(idx.tick(at(200)).is_empty(), "reported once");

        // The agent comes back with the same entries: live again.
        let t = report(
            &mut idx,
            state("n1", Some(at(300)), vec![entry("a", 1, Pinned)]),
            at(300),
        );
        assert_eq!(names(&t), ["a"]);
        assert!(t.nodes.contains("n1"));
    }

    #[test]
    fn a_stale_state_applied_late_is_seen_as_stale() {
        let mut idx = NodeStateIndex::new(STALE);
        report(
            &mut idx,
            state("n1", Some(t0()), vec![entry("a", 1, Pinned)]),
            t0(),
        );
        // An update that arrives after the heartbeat went stale (e.g. an entry edit by hand).
        let t = report(
            &mut idx,
            state("n1", Some(t0()), vec![entry("a", 1, Pinned)]),
            at(100),
        );
        assert_eq!(names(&t), ["a"]);
    }

    #[test]
    fn lease_renewals_trigger_nothing_and_a_deleted_lease_is_a_dead_agent() {
        let mut idx = NodeStateIndex::new(STALE);
        report(
            &mut idx,
            state("n1", Some(t0()), vec![entry("a", 1, Pinned)]),
            t0(),
        );
        for s in [30, 60, 89] {
            assert!(idx.heartbeat("n1", Some(at(s)), at(s)).is_empty());
        }
        // Renewed at 89: live until 179.
        assert!(idx.tick(at(178)).is_empty());
        let t = idx.heartbeat("n1", None, at(100));
        assert_eq!(names(&t), ["a"]);
        assert!(t.nodes.contains("n1"));
        // A Lease of a node without a state yet changes nothing (its objects say "no state").
        assert!(idx.heartbeat("n9", Some(t0()), t0()).is_empty());
        // Its state arrives: the agent is live from the start.
        let t = idx.apply(&state("n9", None, vec![entry("b", 1, Pinned)]), at(1));
        assert_eq!(names(&t), ["b"]);
        assert!(idx.tick(at(89)).is_empty());
        assert_eq!(names(&idx.tick(at(90))), ["b"]);
    }

    #[test]
    fn a_lease_relist_forgets_deleted_leases() {
        let mut idx = two_agents();
        idx.heartbeats_init();
        assert!(idx.heartbeat("n2", Some(at(5)), at(5)).is_empty());
        let t = idx.heartbeats_init_done(at(5));
        assert_eq!(names(&t), ["a"], "n1's Lease vanished during the relist");
        assert!(idx.heartbeats_init_done(at(6)).is_empty());
    }

    #[test]
    fn deletes_and_relists() {
        let mut idx = two_agents();
        let t = idx.delete("n1");
        assert_eq!(names(&t), ["a"]);
        assert!(idx.delete("n1").is_empty());

        idx.init();
        let t = report(
            &mut idx,
            state("n3", Some(t0()), vec![entry("c", 1, Pinned)]),
            t0(),
        );
        assert_eq!(names(&t), ["c"]);
        let t = idx.init_done();
        assert_eq!(names(&t), ["b"], "n2 vanished during the relist");
        assert!(idx.init_done().is_empty());
    }

    #[test]
    fn node_labels() {
        let mut idx = NodeIndex::default();
        let edge = BTreeMap::from([("role".to_owned(), "edge".to_owned())]);
        let core = BTreeMap::from([("role".to_owned(), "core".to_owned())]);
        assert_eq!(idx.apply("n1", &edge).label_sets, vec![edge.clone()]);
        assert!(
            idx.apply("n1", &edge).is_empty(),
            "status-only node updates"
        );
        assert_eq!(
            idx.apply("n1", &core).label_sets,
            [edge.clone(), core.clone()]
        );
        let t = idx.delete("n1");
        assert_eq!(t.label_sets, vec![core.clone()]);
        assert!(t.deleting);

        idx.apply("n2", &edge);
        idx.init();
        idx.apply("n3", &core);
        let t = idx.init_done();
        assert_eq!(t.label_sets, [edge]);
    }

    #[test]
    fn resolving_against_the_objects() {
        use bpfpin_crds::BpfObjectSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

        let object = |name: &str, role: Option<&str>, deleting: bool| {
            let mut o = BpfObject::new(
                name,
                BpfObjectSpec {
                    node_selector: role.map(|r| LabelSelector {
                        match_labels: Some(BTreeMap::from([("role".to_owned(), r.to_owned())])),
                        match_expressions: None,
                    }),
                    ..Default::default()
                },
            );
            if deleting {
                o.metadata.deletion_timestamp = Some(Time(t0()));
            }
            Arc::new(o)
        };
        let objects = [
            object("all", None, false),
            object("edge", Some("edge"), false),
            object("core", Some("core"), false),
            object("gone", Some("core"), true),
        ];
        let edge = BTreeMap::from([("role".to_owned(), "edge".to_owned())]);
        let labels_of = |n: &str| (n == "n1").then(|| edge.clone());

        let by_name = Trigger {
            objects: BTreeSet::from(["core".to_owned(), "no-such-object".to_owned()]),
            ..Default::default()
        };
        assert_eq!(
            resolve(&by_name, &objects, labels_of),
            BTreeSet::from(["core".to_owned()])
        );

        let by_node = Trigger {
            nodes: BTreeSet::from(["n1".to_owned()]),
            ..Default::default()
        };
        let got: Vec<String> = resolve(&by_node, &objects, labels_of).into_iter().collect();
        assert_eq!(got, ["all", "edge"]);

        let node_deleted = Trigger {
            label_sets: vec![edge.clone()],
            deleting: true,
            ..Default::default()
        };
        let got: Vec<String> = resolve(&node_deleted, &objects, labels_of)
            .into_iter()
            .collect();
        assert_eq!(got, ["all", "edge", "gone"]);

        assert!(resolve(&Trigger::default(), &objects, labels_of).is_empty());
    }

    #[test]
    fn merge_combines() {
        let mut a = Trigger::default();
        a.objects.insert("x".into());
        let mut b = Trigger::default();
        b.nodes.insert("n".into());
        b.deleting = true;
        a.merge(b);
        assert!(a.objects.contains("x") && a.nodes.contains("n") && a.deleting);
    }
}
