//! The objects of a chaos run and what the driver did to them: their specs (a few content and
//! selector variants of the counter example), and per object the counts of writes that may make
//! an agent load it again, which bound the reloads the agents may log.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Label on every chaos Node (never changed: the stable objects select it).
pub const NODE_LABEL: &str = "bpfpin-chaos";
/// Label on the chaos Nodes that relabelling flips between `a` and `b`.
pub const TIER_LABEL: &str = "chaos-tier";
/// Label on every chaos BpfObject (the driver lists them by it).
pub const OBJECT_LABEL: &str = "bpfpin-chaos-object";
/// A label whose value changes without touching the spec (no generation bump, no reload).
pub const MOOD_LABEL: &str = "chaos-mood";
/// Annotations recording which variant the driver wrote, so it can resync after a write whose
/// outcome it could not see (the API server died while answering).
pub const CONTENT_ANNOTATION: &str = "bpfpin.io/chaos-content";
/// See [`CONTENT_ANNOTATION`].
pub const SELECTOR_ANNOTATION: &str = "bpfpin.io/chaos-selector";

/// Content variants of a churned object: (`INCREMENT` as base64 of a little-endian u64,
/// `maxEntries` of `counts`, whether `tail_target` is loaded too). Each differs from the others in
/// a field that makes the agent load the object again.
pub const CONTENTS: [(&str, u32, bool); 4] = [
    ("AQAAAAAAAAA=", 1, false),
    ("AgAAAAAAAAA=", 2, false),
    ("AwAAAAAAAAA=", 1, true),
    ("BQAAAAAAAAA=", 4, true),
];

/// Selector variants: 0 and 3 select every chaos node (spelled differently: a change between
/// them changes the spec but not the selection), 1 and 2 one tier.
pub const SELECTORS: usize = 4;

/// `spec.nodeSelector` of a selector variant, written so that a merge patch from any variant to
/// any other leaves exactly the new one (`null` removes what the old one had).
pub fn selector(variant: usize) -> Value {
    match variant {
        1 => {
            json!({"matchLabels": {NODE_LABEL: "true", TIER_LABEL: "a"}, "matchExpressions": null})
        }
        2 => {
            json!({"matchLabels": {NODE_LABEL: "true", TIER_LABEL: "b"}, "matchExpressions": null})
        }
        3 => {
            json!({"matchLabels": null, "matchExpressions": [{"key": NODE_LABEL, "operator": "Exists"}]})
        }
        _ => {
            json!({"matchLabels": {NODE_LABEL: "true", TIER_LABEL: null}, "matchExpressions": null})
        }
    }
}

/// The spec of a churned object.
pub fn churn_spec(bytecode: &str, content: usize, selector_variant: usize) -> Value {
    let (increment, max_entries, tail) = CONTENTS[content % CONTENTS.len()];
    // Loaded and pinned, not attached: the kernel lets at most 64 programs attach to one
    // tracepoint, and every simulated node shares this machine's kernel.
    let mut programs = vec![json!({"name": "count_getpid"})];
    if tail {
        programs.push(json!({"name": "tail_target"}));
    }
    json!({
        "nodeSelector": selector(selector_variant),
        "bytecode": {"path": bytecode},
        "globalData": {"INCREMENT": increment},
        "maps": [{"name": "counts", "maxEntries": max_entries}],
        "programs": programs,
    })
}

/// The spec of a stable object: never changed during the run; selects every chaos node. A
/// `counting` one attaches to `sys_enter_getpid` (a few only: see [`churn_spec`]).
pub fn stable_spec(bytecode: &str, counting: bool) -> Value {
    let mut program = json!({"name": "count_getpid"});
    if counting {
        program["attach"] =
            json!({"tracepoint": {"category": "syscalls", "name": "sys_enter_getpid"}});
    }
    json!({
        "nodeSelector": {"matchLabels": {NODE_LABEL: "true"}},
        "bytecode": {"path": bytecode},
        "maps": [{"name": "counts"}],
        "programs": [program],
    })
}

/// A whole object for a create (`null`s dropped: they only mean something in a merge patch).
pub fn object(name: &str, spec: Value, content: usize, selector_variant: usize) -> Value {
    let mut spec = spec;
    strip_nulls(&mut spec);
    json!({
        "apiVersion": "bpfpin.io/v1alpha1",
        "kind": "BpfObject",
        "metadata": {
            "name": name,
            "labels": {OBJECT_LABEL: "true"},
            "annotations": {
                CONTENT_ANNOTATION: content.to_string(),
                SELECTOR_ANNOTATION: selector_variant.to_string(),
            },
        },
        "spec": spec,
    })
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// What the driver believes of one churned object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Not in the API server.
    Absent,
    /// Present with these variants.
    Present {
        /// Index into [`CONTENTS`].
        content: usize,
        /// Selector variant.
        selector: usize,
    },
    /// Deleted; the finalizer may still hold it.
    Deleting,
    /// A write's outcome was not seen; the next list tells.
    Unknown,
}

/// One churned object's history.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Its name.
    pub name: String,
    /// What the driver believes.
    pub known: Known,
    /// Writes that may each make an agent load it once more on a node: creates, content
    /// changes, selector changes (attempted ones included: an unanswered write may have landed).
    pub reload_causes: u32,
    /// Whether any write reached it at all (a never-touched churn object is just another stable one).
    pub touched: bool,
}

impl Slot {
    /// A slot for `name`, absent.
    pub fn new(name: String) -> Self {
        Self {
            name,
            known: Known::Absent,
            reload_causes: 0,
            touched: false,
        }
    }
}

/// Every chaos node's tier as the driver last wrote it, plus the relabels of each node (each may
/// make an agent load a tier-selected object once more).
#[derive(Debug, Default, Clone)]
pub struct Tiers {
    /// node -> tier.
    pub tier: BTreeMap<String, String>,
    /// node -> relabels attempted.
    pub relabels: BTreeMap<String, u32>,
}
