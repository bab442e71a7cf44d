//! Strict reading of one manifest file, as `kubectl apply --validate=strict` and the API server
//! would judge it: bounded size and nesting, UTF-8, one YAML stream read to its first error only,
//! `apiVersion: bpfpin.io/v1alpha1` for `kind: BpfObject`, no unknown field (named by its path),
//! every constraint of the generated CRD schema, and the checks its CEL rules make
//! ([`bpfpin_crds::BpfObjectSpec::validate`]).
//!
//! Cluster mode does not use this: the API server has already validated (and pruned) what it
//! serves, and a newer CRD may add fields this agent does not know.

use std::sync::OnceLock;

use bpfpin_crds::BpfObject;
use serde::Deserialize;
use serde_json::Value;

/// The largest manifest file read, in bytes: etcd's limit on one object (1.5 MiB).
pub const MAX_FILE_BYTES: u64 = 1536 * 1024;
/// The most `[` and `{` characters in one file. libyaml's cost grows with the square of the
/// flow nesting (100,000 `[` took 27 s), and a count of characters cannot be fooled by quotes.
pub const MAX_FLOW_CHARS: usize = 2048;
/// The deepest nesting of mappings and sequences in a document (the CRD needs 8).
pub const MAX_DEPTH: usize = 32;
/// The most YAML documents in one file.
pub const MAX_DOCUMENTS: usize = 1000;
/// The `apiVersion` of a `BpfObject`.
pub const API_VERSION: &str = "bpfpin.io/v1alpha1";
/// The kind local mode reads.
pub const KIND: &str = "BpfObject";

/// What kind of problem a document has: the reason printed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not a well-formed `BpfObject` (kind, apiVersion, unknown or mistyped fields, schema).
    InvalidManifest,
    /// A well-formed `BpfObject` whose spec breaks a rule of the CRD's CEL validations.
    InvalidSpec,
}

impl Problem {
    /// The reason as printed: `InvalidManifest` or `InvalidSpec`.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::InvalidManifest => "InvalidManifest",
            Problem::InvalidSpec => "InvalidSpec",
        }
    }
}

/// A document that is (or looks like) a `BpfObject` but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// 1-based index of the document in the file.
    pub document: usize,
    /// `metadata.name`, when the document has a string there.
    pub object: Option<String>,
    /// Which reason to report.
    pub problem: Problem,
    /// What is wrong, naming the field by its path.
    pub message: String,
}

/// One `BpfObject` document of a file.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A valid object (its `metadata.name` is set and valid).
    Object {
        /// 1-based index of the document in the file.
        document: usize,
        /// The object.
        object: Box<BpfObject>,
    },
    /// A document refused.
    Refused(DocumentError),
}

/// Parses a manifest file strictly: one entry per `BpfObject` document (and per document that
/// looks like a mistyped one); a whole-file error (size, encoding, YAML syntax, bounds) is a single
/// `Err`. Documents of other kinds are skipped.
pub fn parse(bytes: &[u8]) -> Vec<Result<BpfObject, String>> {
    match parse_file(bytes) {
        Err(e) => vec![Err(e)],
        Ok(entries) => entries
            .into_iter()
            .map(|e| match e {
                Entry::Object { object, .. } => Ok(*object),
                Entry::Refused(e) => Err(format!(
                    "document {}: {}: {}",
                    e.document,
                    e.problem.as_str(),
                    e.message
                )),
            })
            .collect(),
    }
}

/// Like [`parse`], with the document index, object name and reason of each refused document.
pub fn parse_file(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "is larger than {MAX_FILE_BYTES} bytes (the most one object may have in etcd); split it"
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
        format!(
            "is not UTF-8: invalid byte 0x{:02x} at offset {at} (line {line})",
            bytes[at]
        )
    })?;
    let flow = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    if flow > MAX_FLOW_CHARS {
        return Err(format!(
            "has {flow} '[' and '{{' characters, more than the {MAX_FLOW_CHARS} allowed (deeply nested flow YAML is slow to parse); use block style or split the file"
        ));
    }
    let mut entries = Vec::new();
    // The stream is read up to its first error: after one, serde_yaml's iterator yields errors
    // forever (which grew the agent past 1 GiB).
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        if document > MAX_DOCUMENTS {
            return Err(format!(
                "has more than {MAX_DOCUMENTS} YAML documents; split it"
            ));
        }
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| format!("document {document}: not YAML: {e}"))?;
        if let Some(entry) = document_entry(document, value) {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// Judges one YAML document; `None` for an empty document or another kind.
fn document_entry(document: usize, value: serde_yaml::Value) -> Option<Entry> {
    if value.is_null() {
        return None;
    }
    let refuse = |object: Option<String>, problem, message: String| {
        Some(Entry::Refused(DocumentError {
            document,
            object,
            problem,
            message,
        }))
    };
    let mut json: Value = match serde_json::to_value(&value) {
        Ok(v) => v,
        Err(e) => {
            return refuse(
                None,
                Problem::InvalidManifest,
                format!("not a manifest: {e}"),
            );
        }
    };
    drop(value);
    let Some(top) = json.as_object() else {
        return refuse(
            None,
            Problem::InvalidManifest,
            "is not a mapping with apiVersion, kind and metadata".into(),
        );
    };
    let name = top
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let kind = top.get("kind").and_then(Value::as_str);
    let api_version = top.get("apiVersion").and_then(Value::as_str);
    match kind {
        Some(KIND) => {}
        Some(other) if looks_like_bpfobject(other) => {
            return refuse(
                name,
                Problem::InvalidManifest,
                format!("kind {other:?} is not a kind; did you mean {KIND:?}?"),
            );
        }
        Some(other) if api_version.is_some_and(|v| v.split('/').next() == Some("bpfpin.io")) => {
            if other == "BpfNodeState" {
                return None;
            }
            return refuse(
                name,
                Problem::InvalidManifest,
                format!("kind {other:?} is not a kind of {API_VERSION}; local mode reads {KIND}"),
            );
        }
        Some(_) => return None,
        None => {
            return refuse(
                name,
                Problem::InvalidManifest,
                "kind is missing (a BpfObject has `kind: BpfObject`)".into(),
            );
        }
    }
    if api_version != Some(API_VERSION) {
        return refuse(
            name,
            Problem::InvalidManifest,
            format!(
                "apiVersion {} is not {API_VERSION:?}, the version of kind {KIND}",
                api_version.map_or_else(|| "(missing)".to_owned(), |v| format!("{v:?}"))
            ),
        );
    }
    if let Err(e) = check_depth(&json, 0) {
        return refuse(name, Problem::InvalidManifest, e);
    }
    // As the API server does, null values of fields are dropped before validation.
    prune_nulls(&mut json);
    if let Err(e) = check_document(&json) {
        return refuse(name, Problem::InvalidManifest, e);
    }
    let object: BpfObject = match serde_json::from_value(json) {
        Ok(o) => o,
        Err(e) => {
            return refuse(
                name,
                Problem::InvalidManifest,
                format!("not a valid BpfObject: {e}"),
            );
        }
    };
    let Some(name) = object.metadata.name.clone() else {
        return refuse(
            None,
            Problem::InvalidManifest,
            "metadata.name is missing".into(),
        );
    };
    if let Err(e) = object.spec.validate(&name) {
        return refuse(Some(name), Problem::InvalidSpec, e.to_string());
    }
    Some(Entry::Object {
        document,
        object: Box::new(object),
    })
}

/// `BpfObjects`, `bpfobject`, `BpfObjet`: a kind one or two edits (or only case) away from
/// `BpfObject` is a typo, not another kind to skip.
fn looks_like_bpfobject(kind: &str) -> bool {
    let lower = kind.to_ascii_lowercase();
    lower == "bpfobject" || strsim::levenshtein(&lower, "bpfobject") <= 2
}

fn check_depth(value: &Value, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("is nested deeper than {MAX_DEPTH} levels"));
    }
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| check_depth(v, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| check_depth(v, depth + 1)),
        _ => Ok(()),
    }
}

fn prune_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(prune_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

/// Fields of `metadata` (ObjectMeta) a manifest may set.
const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

/// The `openAPIV3Schema` of the `BpfObject` CRD, as JSON: the committed
/// crds/bpfpin.io_bpfobjects.yaml, turned into JSON by build.rs (crds/tests/crd_yaml.rs keeps that
/// file equal to what the Rust types generate, and a test below checks this copy against them).
/// Generating it here instead (`bpfpin_crds::crds()`: schemars and kube's structural rewrite of
/// both CRDs) took a third of a cold `local --once` of a 24-program object (docs/performance.md,
/// finding 7); parsing the JSON takes a fraction of a millisecond.
pub fn crd_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::from_str(include_str!(concat!(
            env!("OUT_DIR"),
            "/bpfobject_schema.json"
        )))
        .expect("build.rs wrote the schema as JSON")
    })
}

/// The whole document against the CRD's schema: `apiVersion`, `kind` and `metadata` are the API
/// server's (it checks `metadata` as ObjectMeta), the rest is the CRD's.
fn check_document(doc: &Value) -> Result<(), String> {
    let map = doc.as_object().expect("checked by the caller");
    let schema = crd_schema();
    for key in map.keys() {
        let known = matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
            || schema["properties"].get(key).is_some();
        if !known {
            return Err(format!("unknown field {key:?}"));
        }
    }
    match map.get("metadata") {
        None => return Err("metadata.name is missing".into()),
        Some(Value::Object(meta)) => {
            if let Some(key) = meta.keys().find(|k| !METADATA_FIELDS.contains(&k.as_str())) {
                return Err(format!("unknown field \"metadata.{key}\""));
            }
        }
        Some(_) => return Err("metadata must be a mapping".into()),
    }
    for (key, sub) in schema["properties"].as_object().into_iter().flatten() {
        if let Some(v) = map.get(key) {
            check_schema(v, sub, key)?;
        }
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        if !map.contains_key(key) {
            return Err(format!("{key}: Required value"));
        }
    }
    Ok(())
}

/// One value against its structural schema, as the API server's validation does (without CEL,
/// which [`bpfpin_crds::BpfObjectSpec::validate`] mirrors): type, unknown fields, required fields,
/// lengths, item counts, minimums, enums, integer formats, list-map keys and sets.
fn check_schema(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    let ty = schema["type"].as_str().unwrap_or_default();
    let wrong_type = || {
        Err(format!(
            "{path}: must be of type {ty}, not {}",
            type_name(value)
        ))
    };
    match ty {
        "object" => {
            let Some(map) = value.as_object() else {
                return wrong_type();
            };
            if let Some(props) = schema["properties"].as_object() {
                for (key, v) in map {
                    let Some(sub) = props.get(key) else {
                        return Err(format!("unknown field \"{path}.{key}\""));
                    };
                    check_schema(v, sub, &format!("{path}.{key}"))?;
                }
            } else if schema["additionalProperties"].is_object() {
                for (key, v) in map {
                    check_schema(v, &schema["additionalProperties"], &format!("{path}.{key}"))?;
                }
            }
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap_or_default();
                if !map.contains_key(key) {
                    return Err(format!("{path}.{key}: Required value"));
                }
            }
        }
        "array" => {
            let Some(items) = value.as_array() else {
                return wrong_type();
            };
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                return Err(format!("{path}: must have at most {max} items"));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                return Err(format!("{path}: must have at least {min} item(s)"));
            }
            for (i, item) in items.iter().enumerate() {
                check_schema(item, &schema["items"], &format!("{path}[{i}]"))?;
            }
            match schema["x-kubernetes-list-type"].as_str() {
                Some("map") => {
                    let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let mut seen = std::collections::BTreeSet::new();
                    for (i, item) in items.iter().enumerate() {
                        let id: Vec<String> = keys.iter().map(|k| item[*k].to_string()).collect();
                        if !seen.insert(id.clone()) {
                            return Err(format!(
                                "{path}[{i}]: Duplicate value: {} {}",
                                keys.join(","),
                                id.join(",")
                            ));
                        }
                    }
                }
                Some("set") => {
                    let mut seen = std::collections::BTreeSet::new();
                    for (i, item) in items.iter().enumerate() {
                        if !seen.insert(item.to_string()) {
                            return Err(format!("{path}[{i}]: Duplicate value: {item}"));
                        }
                    }
                }
                _ => {}
            }
        }
        "string" => {
            let Some(s) = value.as_str() else {
                return wrong_type();
            };
            let chars = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && chars > max
            {
                return Err(format!("{path}: may not be longer than {max} characters"));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && chars < min
            {
                return Err(format!("{path}: must be at least {min} character(s)"));
            }
            if let Some(allowed) = schema["enum"].as_array()
                && !allowed.iter().any(|a| a == value)
            {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                return Err(format!(
                    "{path}: Unsupported value {value}: supported values: {}",
                    list.join(", ")
                ));
            }
        }
        "integer" => {
            let Some(n) = value
                .as_i64()
                .map(i128::from)
                .or(value.as_u64().map(i128::from))
            else {
                return wrong_type();
            };
            let (lo, hi) = match schema["format"].as_str() {
                Some("uint32") => (0, i128::from(u32::MAX)),
                Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX)),
                Some("uint64") => (0, i128::from(u64::MAX)),
                _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
            };
            let lo = schema["minimum"]
                .as_f64()
                .map_or(lo, |m| lo.max(m.ceil() as i128));
            if n < lo || n > hi {
                return Err(format!("{path}: {n} is out of range ({lo}..={hi})"));
            }
        }
        "boolean" if !value.is_boolean() => return wrong_type(),
        _ => {}
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_SPEC: &str = "bytecode: {path: counter.bpf.o}\nprograms:\n- name: count_getpid\n  attach: {tracepoint: {category: syscalls, name: sys_enter_getpid}}\n";

    fn doc(name: &str, spec: &str) -> String {
        let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        format!(
            "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata:\n  name: {name}\nspec:\n{body}"
        )
    }

    /// The single refusal of a one-document file.
    fn refusal(text: &str) -> DocumentError {
        let entries =
            parse_file(text.as_bytes()).unwrap_or_else(|e| panic!("file error {e}: {text}"));
        assert_eq!(entries.len(), 1, "{text}");
        match entries.into_iter().next().expect("one") {
            Entry::Refused(e) => e,
            Entry::Object { .. } => panic!("accepted:\n{text}"),
        }
    }

    #[test]
    fn the_embedded_schema_is_the_one_the_types_generate() {
        let crd = serde_json::to_value(bpfpin_crds::crds()[0].1.clone()).expect("serializes");
        let generated = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert!(generated["properties"]["spec"].is_object(), "{generated}");
        assert!(
            crd_schema() == generated,
            "crds/bpfpin.io_bpfobjects.yaml drifted from the Rust types; run `cargo run -p bpfpin-crds --example crdgen`"
        );
    }

    #[test]
    fn a_good_manifest_parses_and_other_kinds_are_skipped() {
        let text = format!(
            "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata: {{a: b}}\n---\n",
            doc("good", GOOD_SPEC)
        );
        let out = parse(text.as_bytes());
        assert_eq!(out.len(), 1);
        let obj = out[0].as_ref().expect("good");
        assert_eq!(obj.metadata.name.as_deref(), Some("good"));
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        for (spec, path) in [
            (format!("{GOOD_SPEC}mpas: [{{name: counts}}]"), "spec.mpas"),
            (
                GOOD_SPEC.replace("  attach:", "  atach:"),
                "spec.programs[0].atach",
            ),
            (
                format!("{GOOD_SPEC}sha265: {}", "0".repeat(64)),
                "spec.sha265",
            ),
            (
                GOOD_SPEC.replace("category: syscalls", "category: syscalls, nmae: x"),
                "spec.programs[0].attach.tracepoint.nmae",
            ),
            (
                format!("{GOOD_SPEC}nodeSelector: {{matchLabel: {{a: b}}}}"),
                "spec.nodeSelector.matchLabel",
            ),
        ] {
            let e = refusal(&doc("typo", &spec));
            assert_eq!(e.object.as_deref(), Some("typo"));
            assert_eq!(e.problem, Problem::InvalidManifest);
            assert_eq!(e.message, format!("unknown field {path:?}"), "{spec}");
        }
        let e = refusal(&doc("typo", GOOD_SPEC).replace("  name: typo", "  nmae: typo"));
        assert_eq!(e.object, None);
        assert_eq!(e.message, "unknown field \"metadata.nmae\"");
        let e = refusal(&format!("{}statu: {{}}\n", doc("typo", GOOD_SPEC)));
        assert_eq!(e.message, "unknown field \"statu\"");
    }

    #[test]
    fn api_version_and_kind_must_be_those_of_a_bpfobject() {
        let e = refusal(&doc("x", GOOD_SPEC).replace("bpfpin.io/v1alpha1", "apps/v1"));
        assert_eq!(
            e.message,
            "apiVersion \"apps/v1\" is not \"bpfpin.io/v1alpha1\", the version of kind BpfObject"
        );
        assert_eq!(e.object.as_deref(), Some("x"));
        for kind in [
            "BpfObjects",
            "bpfobject",
            "BPFObject",
            "BpfObjet",
            "bpfobjects",
        ] {
            let e =
                refusal(&doc("x", GOOD_SPEC).replace("kind: BpfObject", &format!("kind: {kind}")));
            assert_eq!(
                e.message,
                format!("kind {kind:?} is not a kind; did you mean \"BpfObject\"?")
            );
        }
        let e = refusal(&doc("x", GOOD_SPEC).replace("kind: BpfObject", "kind: Pinned"));
        assert!(
            e.message.contains("is not a kind of bpfpin.io/v1alpha1"),
            "{}",
            e.message
        );
        let e = refusal(&doc("x", GOOD_SPEC).replace("kind: BpfObject\n", ""));
        assert!(e.message.starts_with("kind is missing"), "{}", e.message);
    }

    #[test]
    fn schema_constraints_are_checked() {
        for (spec, want) in [
            (GOOD_SPEC.replace("counter.bpf.o", "''"), "spec.bytecode.path: must be at least 1 character(s)"),
            (format!("{GOOD_SPEC}maps: [{{name: a, maxEntries: 0}}]"), "spec.maps[0].maxEntries: 0 is out of range (1..=4294967295)"),
            (format!("{GOOD_SPEC}maps: [{{name: a}}, {{name: a}}]"), "spec.maps[1]: Duplicate value: name \"a\""),
            (format!("{GOOD_SPEC}tailCalls: [{{map: m, index: -1, program: count_getpid}}]"), "spec.tailCalls[0].index: -1 is out of range (0..=4294967295)"),
            (GOOD_SPEC.replace("programs:\n- name: count_getpid\n  attach: {tracepoint: {category: syscalls, name: sys_enter_getpid}}\n", "programs: []\n"), "spec.programs: must have at least 1 item(s)"),
            ("programs: [{name: a}]".to_owned(), "spec.bytecode: Required value"),
            (format!("{GOOD_SPEC}globalData: {{X: 3}}"), "spec.globalData.X: must be of type string, not number"),
        ] {
            let e = refusal(&doc("x", &spec));
            assert_eq!(e.message, want, "{spec}");
        }
        let xdp = GOOD_SPEC.replace(
            "{tracepoint: {category: syscalls, name: sys_enter_getpid}}",
            "{xdp: {interfaces: [eth0], mode: skb}}",
        );
        let e = refusal(&doc("x", &xdp));
        assert!(
            e.message
                .starts_with("spec.programs[0].attach.xdp.mode: Unsupported value \"skb\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn whole_file_errors_are_one_error_and_bounded() {
        // A YAML syntax error: one error, not an endless stream of them.
        let out = parse(b"spec: {a: b: c}\n");
        assert_eq!(out.len(), 1);
        assert!(out[0].as_ref().unwrap_err().contains("not YAML"), "{out:?}");
        let mut bytes = doc("x", GOOD_SPEC).into_bytes();
        bytes[60] = 0xff;
        let out = parse(&bytes);
        assert_eq!(out.len(), 1);
        assert!(
            out[0]
                .as_ref()
                .unwrap_err()
                .starts_with("is not UTF-8: invalid byte 0xff at offset 60"),
            "{out:?}"
        );
        let out = parse("[".repeat(100_000).as_bytes());
        assert!(
            out[0]
                .as_ref()
                .unwrap_err()
                .contains("100000 '[' and '{' characters"),
            "{out:?}"
        );
        let deep = format!(
            "{}x: 1\n",
            (0..40)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect::<String>()
        );
        let e = refusal(&format!(
            "{}extra:\n{}",
            doc("x", GOOD_SPEC),
            deep.lines().map(|l| format!("  {l}\n")).collect::<String>()
        ));
        assert!(e.message.contains("nested deeper than 32"), "{}", e.message);
        let many = "---\na: 1\n".repeat(MAX_DOCUMENTS + 1);
        assert!(
            parse(many.as_bytes())[0]
                .as_ref()
                .unwrap_err()
                .contains("more than 1000 YAML documents")
        );
        let big = vec![b' '; MAX_FILE_BYTES as usize + 1];
        assert!(parse(&big)[0].as_ref().unwrap_err().contains("larger than"));
    }

    #[test]
    fn nulls_are_pruned_as_the_api_server_does() {
        let out = parse(doc("x", &format!("{GOOD_SPEC}maps: null\nsha256: ~")).as_bytes());
        assert!(out[0].is_ok(), "{out:?}");
    }

    /// The path of a schema node as `spec.maps[].pinPath`, and its CEL rules.
    fn cel_rules(schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
        for rule in schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push((
                path.to_owned(),
                rule["rule"].as_str().expect("rule").to_owned(),
            ));
        }
        for (key, sub) in schema["properties"].as_object().into_iter().flatten() {
            let p = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            cel_rules(sub, &p, out);
        }
        if schema["items"].is_object() {
            cel_rules(&schema["items"], &format!("{path}[]"), out);
        }
        if schema["additionalProperties"].is_object() {
            cel_rules(&schema["additionalProperties"], &format!("{path}.*"), out);
        }
    }

    /// Every CEL rule of the generated CRD has a case here that breaks it, and the agent refuses
    /// that case naming the field: a rule added to the CRD without the same check in
    /// `BpfObjectSpec::validate` (or without a case here) fails this test.
    #[test]
    fn the_agent_refuses_what_every_cel_rule_of_the_crd_refuses() {
        let sha = "0".repeat(64);
        let prog = |attach: &str| {
            format!("bytecode: {{path: c.o}}\nprograms: [{{name: p, attach: {attach}}}]")
        };
        let map = |pin: &str| {
            format!(
                "bytecode: {{path: c.o}}\nmaps: [{{name: m, pinPath: '{pin}'}}]\nprograms: [{{name: p}}]"
            )
        };
        let plain = "bytecode: {path: c.o}\nprograms: [{name: p}]".to_owned();
        // (schema path, rule) -> (object name, spec that breaks the rule, field named in the refusal)
        let cases: Vec<(&str, &str, String, String, &str)> = vec![
            ("", "!self.metadata.name.contains('.')", "my.counter".into(), plain.clone(), "metadata.name"),
            ("", "self.metadata.name != 'shared'", "shared".into(), plain.clone(), "metadata.name"),
            ("", "size(self.metadata.name) <= 63", "a".repeat(64), plain.clone(), "metadata.name"),
            ("spec", "!has(self.bytecode.url) || has(self.sha256)", "x".into(), "bytecode: {url: 'https://h/c.o'}\nprograms: [{name: p}]".into(), "spec.sha256"),
            ("spec.bytecode", "[has(self.path), has(self.configMap), has(self.url), has(self.image)].filter(x, x).size() == 1", "x".into(), "bytecode: {path: c.o, image: 'r/c:1'}\nprograms: [{name: p}]".into(), "spec.bytecode"),
            ("spec.bytecode", "!has(self.imagePullSecret) || has(self.image)", "x".into(), "bytecode: {path: c.o, imagePullSecret: {namespace: n, name: s}}\nprograms: [{name: p}]".into(), "spec.bytecode.imagePullSecret"),
            ("spec.bytecode", "!has(self.skipSignatureVerification) || !self.skipSignatureVerification || has(self.image)", "x".into(), "bytecode: {path: c.o, skipSignatureVerification: true}\nprograms: [{name: p}]".into(), "spec.bytecode.skipSignatureVerification"),
            ("spec.bytecode.url", "self.startsWith('https://') || self.startsWith('http://')", "x".into(), format!("bytecode: {{url: 'file:///etc/c.o'}}\nsha256: '{sha}'\nprograms: [{{name: p}}]"), "spec.bytecode.url"),
            ("spec.maps[].name", "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "x".into(), "bytecode: {path: c.o}\nmaps: [{name: .rodata}]\nprograms: [{name: p}]".into(), "spec.maps[0].name"),
            ("spec.maps[].pinPath", "!self.startsWith('/')", "x".into(), map("/etc/m"), "spec.maps[0].pinPath"),
            ("spec.maps[].pinPath", "!self.split('/').exists(s, s == '..')", "x".into(), map("a/../../m"), "spec.maps[0].pinPath"),
            ("spec.maps[].pinPath", "!self.split('/').exists(s, s == '')", "x".into(), map("a//m"), "spec.maps[0].pinPath"),
            ("spec.maps[].pinPath", "self.matches('^[A-Za-z0-9_/-]*$')", "x".into(), map("a/m.x"), "spec.maps[0].pinPath"),
            ("spec.programs[].name", "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "x".into(), "bytecode: {path: c.o}\nprograms: [{name: 1p}]".into(), "spec.programs[0].name"),
            ("spec.programs[].attach", "[has(self.tracepoint), has(self.xdp), has(self.tc), has(self.kprobe), has(self.uprobe), has(self.fentry), has(self.fexit), has(self.cgroupSkb), has(self.rawTracepoint), has(self.sockOps), has(self.cgroupSockAddr), has(self.cgroupSock), has(self.cgroupSysctl), has(self.cgroupSockopt), has(self.cgroupDevice), has(self.skLookup), has(self.skMsg), has(self.skSkb), has(self.perfEvent), has(self.iter), has(self.usdt), has(self.tpBtf), has(self.lsm), has(self.ksyscall), has(self.netfilter)].filter(x, x).size() <= 1", "x".into(), prog("{fentry: {function: f}, iter: {}}"), "spec.programs[0].attach"),
            // usdt (attach/usdt.rs)
            ("spec.programs[].attach.usdt.target", "self.startsWith('/')", "x".into(), prog("{usdt: {target: bin/x, provider: p, name: n}}"), "spec.programs[0].attach.usdt.target"),
            ("spec.programs[].attach.usdt.provider", "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "x".into(), prog("{usdt: {target: /bin/x, provider: 'p-q', name: n}}"), "spec.programs[0].attach.usdt.provider"),
            ("spec.programs[].attach.usdt.name", "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "x".into(), prog("{usdt: {target: /bin/x, provider: p, name: 9n}}"), "spec.programs[0].attach.usdt.name"),
            // Issue 13's attach kinds.
            ("spec.programs[].attach.rawTracepoint.name", "self.matches('^[A-Za-z0-9_]+$')", "x".into(), prog("{rawTracepoint: {name: '../x'}}"), "spec.programs[0].attach.rawTracepoint.name"),
            ("spec.programs[].attach.sockOps.cgroup", "self.startsWith('/')", "x".into(), prog("{sockOps: {cgroup: sys/fs/cgroup}}"), "spec.programs[0].attach.sockOps.cgroup"),
            ("spec.programs[].attach.cgroupSockAddr.cgroup", "self.startsWith('/')", "x".into(), prog("{cgroupSockAddr: {cgroup: sys/fs/cgroup}}"), "spec.programs[0].attach.cgroupSockAddr.cgroup"),
            ("spec.programs[].attach.cgroupSock.cgroup", "self.startsWith('/')", "x".into(), prog("{cgroupSock: {cgroup: sys/fs/cgroup}}"), "spec.programs[0].attach.cgroupSock.cgroup"),
            ("spec.programs[].attach.cgroupSysctl.cgroup", "self.startsWith('/')", "x".into(), prog("{cgroupSysctl: {cgroup: sys/fs/cgroup}}"), "spec.programs[0].attach.cgroupSysctl.cgroup"),
            ("spec.programs[].attach.cgroupSockopt.cgroup", "self.startsWith('/')", "x".into(), prog("{cgroupSockopt: {cgroup: sys/fs/cgroup}}"), "spec.programs[0].attach.cgroupSockopt.cgroup"),
            ("spec.programs[].attach.cgroupDevice.cgroup", "self.startsWith('/')", "x".into(), prog("{cgroupDevice: {cgroup: sys/fs/cgroup}}"), "spec.programs[0].attach.cgroupDevice.cgroup"),
            ("spec.programs[].attach.skLookup.netns", "self.startsWith('/')", "x".into(), prog("{skLookup: {netns: run/netns/n}}"), "spec.programs[0].attach.skLookup.netns"),
            ("spec.programs[].attach.skMsg.map", "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "x".into(), prog("{skMsg: {map: '.bss'}}"), "spec.programs[0].attach.skMsg.map"),
            ("spec.programs[].attach.skSkb.map", "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "x".into(), prog("{skSkb: {map: 'a-b'}}"), "spec.programs[0].attach.skSkb.map"),
            ("spec.programs[].attach.perfEvent", "has(self.frequency) != has(self.period)", "x".into(), prog("{perfEvent: {event: CpuClock}}"), "spec.programs[0].attach.perfEvent"),
            ("spec.programs[].attach.cgroupSkb.cgroup", "self.startsWith('/')", "x".into(), prog("{cgroupSkb: {cgroup: sys/fs/cgroup, direction: Egress}}"), "spec.programs[0].attach.cgroupSkb.cgroup"),
            ("spec.programs[].attach.fentry.function", "self.matches('^[A-Za-z0-9_]+$')", "x".into(), prog("{fentry: {function: '../f'}}"), "spec.programs[0].attach.fentry.function"),
            ("spec.programs[].attach.fexit.function", "self.matches('^[A-Za-z0-9_]+$')", "x".into(), prog("{fexit: {function: 'f g'}}"), "spec.programs[0].attach.fexit.function"),
            ("spec.programs[].attach.kprobe.function", "self.matches('^[A-Za-z0-9_]+$')", "x".into(), prog("{kprobe: {function: 'do_unlinkat+4'}}"), "spec.programs[0].attach.kprobe.function"),
            ("spec.programs[].attach.tracepoint.category", "self.matches('^[A-Za-z0-9_]+$')", "x".into(), prog("{tracepoint: {category: '../../..', name: sys_enter_getpid}}"), "spec.programs[0].attach.tracepoint.category"),
            ("spec.programs[].attach.tracepoint.name", "self.matches('^[A-Za-z0-9_]+$')", "x".into(), prog("{tracepoint: {category: syscalls, name: '../enable'}}"), "spec.programs[0].attach.tracepoint.name"),
            ("spec.programs[].attach.uprobe", "has(self.symbol) || has(self.offset)", "x".into(), prog("{uprobe: {target: /bin/true}}"), "spec.programs[0].attach.uprobe"),
            // containers on uprobe (pod-aware attachment)
            ("spec.programs[].attach.uprobe", "!has(self.containers) || !has(self.pid)", "x".into(), prog("{uprobe: {target: /bin/true, symbol: main, pid: 7, containers: {namespace: web}}}"), "spec.programs[0].attach.uprobe.pid"),
            ("spec.programs[].attach.uprobe", "!has(self.containers) || self.target.startsWith('/')", "x".into(), prog("{uprobe: {target: libc, symbol: malloc, containers: {namespace: web}}}"), "spec.programs[0].attach.uprobe.target"),
            ("spec.requires.kernel.max", "self.matches('^[0-9]{1,4}[.][0-9]{1,4}([.][0-9]{1,6})?$')", "x".into(), format!("{plain}\nrequires: {{kernel: {{max: '6'}}}}"), "spec.requires.kernel.max"),
            ("spec.requires.kernel.min", "self.matches('^[0-9]{1,4}[.][0-9]{1,4}([.][0-9]{1,6})?$')", "x".into(), format!("{plain}\nrequires: {{kernel: {{min: '5.15-rc1'}}}}"), "spec.requires.kernel.min"),
            ("spec.sha256", "self.matches('^[0-9a-f]{64}$')", "x".into(), format!("{plain}\nsha256: '{}'", "A".repeat(64)), "spec.sha256"),
            ("spec.tailCalls[].map", "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "x".into(), format!("{plain}\ntailCalls: [{{map: 'm-1', index: 0, program: p}}]"), "spec.tailCalls[0].map"),
            ("spec.tailCalls[].program", "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "x".into(), format!("{plain}\ntailCalls: [{{map: m, index: 0, program: 'p-1'}}]"), "spec.tailCalls[0].program"),
            // pods on the cgroup hooks: exactly one of cgroup and pods
            ("spec.programs[].attach.cgroupSkb", "has(self.cgroup) != has(self.pods)", "x".into(), prog("{cgroupSkb: {direction: Egress}}"), "spec.programs[0].attach.cgroupSkb"),
            ("spec.programs[].attach.sockOps", "has(self.cgroup) != has(self.pods)", "x".into(), prog("{sockOps: {cgroup: /sys/fs/cgroup, pods: {namespace: web}}}"), "spec.programs[0].attach.sockOps"),
            ("spec.programs[].attach.cgroupSockAddr", "has(self.cgroup) != has(self.pods)", "x".into(), prog("{cgroupSockAddr: {}}"), "spec.programs[0].attach.cgroupSockAddr"),
            ("spec.programs[].attach.cgroupSock", "has(self.cgroup) != has(self.pods)", "x".into(), prog("{cgroupSock: {}}"), "spec.programs[0].attach.cgroupSock"),
            ("spec.programs[].attach.cgroupSysctl", "has(self.cgroup) != has(self.pods)", "x".into(), prog("{cgroupSysctl: {}}"), "spec.programs[0].attach.cgroupSysctl"),
            ("spec.programs[].attach.cgroupSockopt", "has(self.cgroup) != has(self.pods)", "x".into(), prog("{cgroupSockopt: {}}"), "spec.programs[0].attach.cgroupSockopt"),
            ("spec.programs[].attach.cgroupDevice", "has(self.cgroup) != has(self.pods)", "x".into(), prog("{cgroupDevice: {}}"), "spec.programs[0].attach.cgroupDevice"),
            // Issue 13's hook kinds.
            ("spec.programs[].attach.tpBtf.name", "self.matches('^[A-Za-z0-9_]+$')", "x".into(), prog("{tpBtf: {name: 'sched/switch'}}"), "spec.programs[0].attach.tpBtf.name"),
            ("spec.programs[].attach.lsm.hook", "self.matches('^[A-Za-z0-9_]+$')", "x".into(), prog("{lsm: {hook: 'file open'}}"), "spec.programs[0].attach.lsm.hook"),
            ("spec.programs[].attach.ksyscall.syscall", "self.matches('^[A-Za-z0-9_]+$')", "x".into(), prog("{ksyscall: {syscall: 'getpid+4'}}"), "spec.programs[0].attach.ksyscall.syscall"),
            ("spec.programs[].attach.netfilter.priority", "self > -2147483648 && self < 2147483647", "x".into(), prog("{netfilter: {family: IPv4, hook: LocalIn, priority: -2147483648}}"), "spec.programs[0].attach.netfilter.priority"),
            // networkNamespaces (pod-aware attachment)
            ("spec.programs[].attach.tc", "has(self.networkNamespaces) != ((has(self.interfaces) && size(self.interfaces) > 0) || (has(self.primaryNodeInterface) && self.primaryNodeInterface))", "x".into(), prog("{tc: {direction: Egress, interfaces: [eth0], networkNamespaces: {namespace: web}}}"), "spec.programs[0].attach.tc.interfaces"),
            ("spec.programs[].attach.tc.interfaces", "self.all(i, !i.startsWith('/') || (size(i) > 2 && size(i) <= 258 && i.endsWith('/')))", "x".into(), prog("{tc: {direction: Egress, interfaces: ['/^eth']}}"), "spec.programs[0].attach.tc.interfaces[0]"),
            ("spec.programs[].attach.tc", "!has(self.networkNamespaces) || !has(self.priority)", "x".into(), prog("{tc: {direction: Egress, priority: 10, networkNamespaces: {namespace: web}}}"), "spec.programs[0].attach.tc.networkNamespaces"),
            ("spec.programs[].attach.xdp", "has(self.networkNamespaces) != ((has(self.interfaces) && size(self.interfaces) > 0) || (has(self.primaryNodeInterface) && self.primaryNodeInterface))", "x".into(), prog("{xdp: {primaryNodeInterface: true, networkNamespaces: {namespace: web}}}"), "spec.programs[0].attach.xdp.interfaces"),
            ("spec.programs[].attach.xdp.interfaces", "self.all(i, !i.startsWith('/') || (size(i) > 2 && size(i) <= 258 && i.endsWith('/')))", "x".into(), prog("{xdp: {interfaces: ['//']}}"), "spec.programs[0].attach.xdp.interfaces[0]"),
            ("spec.programs[].attach.xdp", "!has(self.networkNamespaces) || (!has(self.priority) && (!has(self.proceedOn) || size(self.proceedOn) == 0))", "x".into(), prog("{xdp: {proceedOn: [Pass], networkNamespaces: {namespace: web}}}"), "spec.programs[0].attach.xdp.networkNamespaces"),
        ];
        let mut rules = Vec::new();
        cel_rules(crd_schema(), "", &mut rules);
        assert!(
            rules.len() >= 24,
            "the walk found the CRD's rules: {rules:?}"
        );
        let mut missing = Vec::new();
        for (path, rule) in &rules {
            let Some((_, _, name, spec, field)) = cases.iter().find(|c| c.0 == path && c.1 == rule)
            else {
                missing.push(format!("{path}: {rule}"));
                continue;
            };
            // The same spec with a valid value passes: the case breaks this rule and nothing else.
            let e = refusal(&doc(name, spec));
            assert!(
                e.message.starts_with(&format!("{field} ")),
                "{path}: {rule}: refused, but not naming {field}: {}",
                e.message
            );
        }
        assert!(
            missing.is_empty(),
            "CEL rules of the CRD without a parity case here (add the check to BpfObjectSpec::validate and a case): {missing:#?}"
        );
        for c in &cases {
            assert!(
                rules.iter().any(|(p, r)| p == c.0 && r == c.1),
                "a case for a rule the CRD no longer has: {} {}",
                c.0,
                c.1
            );
        }
        // Sanity: the base spec of the cases is accepted.
        assert!(parse(doc("x", &plain).as_bytes())[0].is_ok());
    }

    #[test]
    fn typo_kinds() {
        assert!(looks_like_bpfobject("BpfObjects"));
        assert!(looks_like_bpfobject("BpfObect"));
        assert!(!looks_like_bpfobject("BpfNodeState"));
        assert!(!looks_like_bpfobject("ConfigMap"));
        assert_eq!(strsim::levenshtein("kitten", "sitting"), 3);
    }
}
