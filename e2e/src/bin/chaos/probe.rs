//! What the driver reads without the API server: pins on each node's bpffs (through bpftool,
//! as an application would), and the reloads each agent logged (its JSON log).

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use bpfpin_crds::selector::Selector;
use bpfpin_e2e::bpftool;
pub use bpfpin_e2e::program_id;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

/// `counts[0]` of the array map pinned at `path`.
pub fn counter(path: &Path) -> Result<u64> {
    let v = bpftool(&["map", "dump", "pinned"], path)?;
    let first = v
        .as_array()
        .and_then(|a| a.first())
        .with_context(|| format!("bpftool map dump pinned {}: empty", path.display()))?;
    let value = first
        .get("formatted")
        .and_then(|f| f.get("value"))
        .or_else(|| first.get("value"))
        .with_context(|| format!("bpftool map dump pinned {}: no value", path.display()))?;
    match value {
        Value::Number(n) => n.as_u64().context("counter is not a u64"),
        // Without BTF bpftool prints the bytes: ["0x2a", "0x00", ...], little-endian.
        Value::Array(bytes) => {
            let mut out = 0u64;
            for (i, b) in bytes.iter().take(8).enumerate() {
                let s = b.as_str().unwrap_or("0x0");
                let byte = u64::from_str_radix(s.trim_start_matches("0x"), 16)
                    .with_context(|| format!("byte {s:?} of the counter"))?;
                out |= byte << (8 * i);
            }
            Ok(out)
        }
        other => bail!("counter value {other} is neither a number nor bytes"),
    }
}

/// Names of the objects that have anything under a managed root: `<root>/<object>` entries and
/// `<root>/_versions/<object>` folders (internal names starting with `_`, and `shared`, are not
/// objects).
pub fn pinned_objects(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let entries = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for n in entries(root) {
        if n != "shared" && !n.starts_with('_') {
            names.push(n);
        }
    }
    for n in entries(&root.join("_versions")) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names.sort();
    names
}

/// Everything under a managed root except empty folders: what a cleaned-up node must not have.
pub fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .map(walkdir::DirEntry::into_path)
        .collect();
    out.sort();
    out
}

/// What one agent logged, read incrementally from its JSON log.
#[derive(Debug, Default)]
pub struct AgentLog {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// object -> `object pinned` events (a load: created or updated).
    pub pinned: BTreeMap<String, u32>,
    /// object -> `object unpinned` events.
    pub unpinned: BTreeMap<String, u32>,
    /// object -> `adopted` events (a restart that found it pinned).
    pub adopted: BTreeMap<String, u32>,
}

impl AgentLog {
    /// The log at `path` (it may not exist yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            ..Self::default()
        }
    }

    /// Reads what was appended since the last call.
    pub fn refresh(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let Some(last_newline) = self.partial.rfind('\n') else {
            return;
        };
        let complete: String = self.partial.drain(..=last_newline).collect();
        for line in complete.lines() {
            // A line cut short by a SIGKILL is not JSON: skipped (it can only undercount).
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let fields = &v["fields"];
            let (Some(message), Some(object)) = (
                fields.get("message").and_then(Value::as_str),
                fields.get("object").and_then(Value::as_str),
            ) else {
                continue;
            };
            let map = match message {
                "object pinned" => &mut self.pinned,
                "object unpinned" => &mut self.unpinned,
                "adopted" => &mut self.adopted,
                _ => continue,
            };
            *map.entry(object.to_owned()).or_default() += 1;
        }
    }
}

/// Whether a node selector (`None` selects every node) selects these labels: with the selector
/// both binaries decide by, so an invalid one selects nothing, as the operator reports it.
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    Selector::parse(selector).is_ok_and(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `selects` of a selector written as JSON (null: none).
    fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
        let selector: Option<LabelSelector> =
            serde_json::from_value(selector.clone()).expect("a LabelSelector");
        super::selects(selector.as_ref(), labels)
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [("a", "1"), ("b", "2")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert!(selects(&Value::Null, &labels));
        assert!(selects(&json!({"matchLabels": {"a": "1"}}), &labels));
        assert!(!selects(&json!({"matchLabels": {"a": "2"}}), &labels));
        assert!(selects(
            &json!({"matchExpressions": [{"key": "b", "operator": "Exists"}]}),
            &labels
        ));
        assert!(!selects(
            &json!({"matchExpressions": [{"key": "c", "operator": "Exists"}]}),
            &labels
        ));
        assert!(selects(
            &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["0", "1"]}]}),
            &labels
        ));
    }

    #[test]
    fn agent_log_counts_complete_lines_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.log");
        let line = |m: &str, o: &str| {
            format!("{{\"fields\":{{\"message\":\"{m}\",\"object\":\"{o}\"}}}}\n")
        };
        std::fs::write(
            &path,
            format!(
                "{}{}{{\"fields\":{{\"message\":\"object pin",
                line("object pinned", "x"),
                line("adopted", "x")
            ),
        )
        .expect("write");
        let mut log = AgentLog::new(path.clone());
        log.refresh();
        assert_eq!(log.pinned.get("x"), Some(&1));
        assert_eq!(log.adopted.get("x"), Some(&1));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut f, b"ned\",\"object\":\"y\"}}\n").expect("append");
        log.refresh();
        assert_eq!(
            log.pinned.get("y"),
            Some(&1),
            "the line completed later counts"
        );
    }
}
