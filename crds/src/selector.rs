//! `spec.nodeSelector`: a Kubernetes `LabelSelector` evaluated against Node labels, with the same
//! semantics as apimachinery (`matchLabels` and every `matchExpressions` entry must hold; an empty
//! or absent selector selects every node). The agent and the operator both decide with this code,
//! so they always agree on which nodes an object selects; a selector that cannot be evaluated
//! (unknown operator, `In` without values) selects no node, and the operator reports why.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector the API server accepted but that cannot be evaluated, e.g. an unknown operator.
/// The CRD schema does not check operators, so this reaches the operator and is reported in
/// the object's conditions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.nodeSelector.matchExpressions[{index}] (key {key:?}): {reason}")]
pub struct InvalidSelector {
    /// Position of the faulty requirement in `matchExpressions`.
    pub index: usize,
    /// The label key that requirement tests.
    pub key: String,
    /// What is wrong with it, as a phrase (`unknown operator "Gt"; ...`).
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed node selector: parse once per object, then match it against many nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses `spec.nodeSelector`; `None` selects every node.
    pub fn parse(selector: Option<&LabelSelector>) -> Result<Self, InvalidSelector> {
        let Some(selector) = selector else {
            return Ok(Self::default());
        };
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement {
                key: key.clone(),
                op: Op::In(BTreeSet::from([value.clone()])),
            });
        }
        for (index, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let refuse = |reason: &str| InvalidSelector {
                index,
                key: expr.key.clone(),
                reason: reason.to_owned(),
            };
            let op = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(refuse(&format!(
                        "operator {} needs at least one value",
                        expr.operator
                    )));
                }
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(refuse(&format!(
                        "operator {} takes no values",
                        expr.operator
                    )));
                }
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(refuse(&format!(
                        "unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                    )));
                }
            };
            requirements.push(Requirement {
                key: expr.key.clone(),
                op,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether a node with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match &r.op {
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                // As in apimachinery: a node without the key satisfies NotIn.
                Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// Whether `selector` selects a node with `labels` (parse and match in one call).
pub fn matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, InvalidSelector> {
    Ok(Selector::parse(selector)?.matches(labels))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::parse(Some(&LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        }))
        .expect("valid selector")
    }

    #[test]
    fn absent_and_empty_select_everything() {
        let edge = labels(&[("role", "edge")]);
        assert!(Selector::parse(None).expect("none").matches(&edge));
        assert!(
            Selector::parse(None)
                .expect("none")
                .matches(&BTreeMap::new())
        );
        let empty = Selector::parse(Some(&LabelSelector::default())).expect("empty");
        assert!(empty.matches(&edge));
    }

    #[test]
    fn match_labels_all_must_hold() {
        let s = selector(&[("role", "edge"), ("zone", "a")], vec![]);
        assert!(s.matches(&labels(&[("role", "edge"), ("zone", "a"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("role", "edge")])));
        assert!(!s.matches(&labels(&[("role", "edge"), ("zone", "b")])));
    }

    #[test]
    fn expressions() {
        let in_ = selector(&[], vec![expr("zone", "In", &["a", "b"])]);
        assert!(in_.matches(&labels(&[("zone", "b")])));
        assert!(!in_.matches(&labels(&[("zone", "c")])));
        assert!(!in_.matches(&labels(&[])));

        let not_in = selector(&[], vec![expr("zone", "NotIn", &["a"])]);
        assert!(not_in.matches(&labels(&[("zone", "b")])));
        assert!(!not_in.matches(&labels(&[("zone", "a")])));
        assert!(
            not_in.matches(&labels(&[])),
            "a missing key satisfies NotIn"
        );

        let exists = selector(&[], vec![expr("gpu", "Exists", &[])]);
        assert!(exists.matches(&labels(&[("gpu", "")])));
        assert!(!exists.matches(&labels(&[])));

        let absent = selector(&[], vec![expr("gpu", "DoesNotExist", &[])]);
        assert!(!absent.matches(&labels(&[("gpu", "x")])));
        assert!(absent.matches(&labels(&[])));
    }

    #[test]
    fn labels_and_expressions_combine() {
        let s = selector(
            &[("role", "edge")],
            vec![
                expr("zone", "NotIn", &["a"]),
                expr("gpu", "DoesNotExist", &[]),
            ],
        );
        assert!(s.matches(&labels(&[("role", "edge"), ("zone", "b")])));
        assert!(!s.matches(&labels(&[("role", "edge"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[("role", "edge"), ("gpu", "1")])));
        assert!(!s.matches(&labels(&[("role", "core")])));
    }

    #[test]
    fn invalid_expressions_say_what_is_wrong() {
        for (e, why) in [
            (expr("zone", "Gt", &["1"]), "unknown operator \"Gt\""),
            (expr("zone", "In", &[]), "needs at least one value"),
            (expr("zone", "NotIn", &[]), "needs at least one value"),
            (expr("zone", "Exists", &["a"]), "takes no values"),
        ] {
            let err = Selector::parse(Some(&LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![expr("ok", "Exists", &[]), e]),
            }))
            .expect_err(why);
            assert_eq!(err.index, 1);
            let text = err.to_string();
            assert!(
                text.starts_with("spec.nodeSelector.matchExpressions[1]"),
                "{text}"
            );
            assert!(text.contains(why), "{text}");
        }
    }
}

/// The agent's cases, through [`matches`].
#[cfg(test)]
mod one_call {
    use super::*;

    fn selector(yaml: &str) -> LabelSelector {
        serde_yaml::from_str(yaml).expect("selector")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn absent_and_empty_select_everything() {
        assert_eq!(matches(None, &labels(&[])), Ok(true));
        assert_eq!(matches(Some(&selector("{}")), &labels(&[])), Ok(true));
    }

    #[test]
    fn match_labels_must_all_hold() {
        let s = selector("matchLabels: {role: edge, zone: a}");
        assert_eq!(
            matches(Some(&s), &labels(&[("role", "edge"), ("zone", "a")])),
            Ok(true)
        );
        assert_eq!(matches(Some(&s), &labels(&[("role", "edge")])), Ok(false));
        assert_eq!(
            matches(Some(&s), &labels(&[("role", "core"), ("zone", "a")])),
            Ok(false)
        );
    }

    #[test]
    fn expressions() {
        let s = selector(
            r#"
matchExpressions:
- {key: role, operator: In, values: [edge, gw]}
- {key: zone, operator: NotIn, values: [b]}
- {key: bpf, operator: Exists}
- {key: drain, operator: DoesNotExist}
"#,
        );
        let ok = labels(&[("role", "gw"), ("bpf", ""), ("zone", "a")]);
        assert_eq!(matches(Some(&s), &ok), Ok(true));
        // NotIn holds when the label is absent.
        assert_eq!(
            matches(Some(&s), &labels(&[("role", "gw"), ("bpf", "")])),
            Ok(true)
        );
        let mut bad = ok.clone();
        bad.insert("zone".into(), "b".into());
        assert_eq!(matches(Some(&s), &bad), Ok(false));
        let mut bad = ok.clone();
        bad.insert("drain".into(), "yes".into());
        assert_eq!(matches(Some(&s), &bad), Ok(false));
        let mut bad = ok.clone();
        bad.remove("bpf");
        assert_eq!(matches(Some(&s), &bad), Ok(false));
        let mut bad = ok;
        bad.insert("role".into(), "core".into());
        assert_eq!(matches(Some(&s), &bad), Ok(false));
    }

    #[test]
    fn invalid_selectors_say_why() {
        let s = selector("matchExpressions: [{key: role, operator: Equals, values: [x]}]");
        assert!(
            matches(Some(&s), &labels(&[]))
                .expect_err("fails")
                .to_string()
                .contains("unknown operator")
        );
        let s = selector("matchExpressions: [{key: role, operator: In}]");
        assert!(
            matches(Some(&s), &labels(&[]))
                .expect_err("fails")
                .to_string()
                .contains("at least one value")
        );
        let s = selector("matchExpressions: [{key: role, operator: Exists, values: [x]}]");
        assert!(matches(Some(&s), &labels(&[])).is_err());
    }
}
