//! `spec.nodeSelector` against this node's labels, with apimachinery's semantics: every
//! `matchLabels` entry and every `matchExpressions` requirement must hold; an absent or empty
//! selector selects every node. A selector that cannot be evaluated (unknown operator, `In`
//! without values) selects no node, as the operator also decides, and says why.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects a node with `labels`; `Err` says why the selector is invalid.
pub fn matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let Some(selector) = selector else {
        return Ok(true);
    };
    let mut selected = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = labels.get(&expr.key);
        let holds = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "spec.nodeSelector.matchExpressions[{i}] (key {:?}): operator {} needs at least one value",
                    expr.key, expr.operator
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!(
                    "spec.nodeSelector.matchExpressions[{i}] (key {:?}): operator {} takes no values",
                    expr.key, expr.operator
                ));
            }
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(format!(
                    "spec.nodeSelector.matchExpressions[{i}] (key {:?}): unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist",
                    expr.key
                ));
            }
        };
        // Keep checking after a miss: an invalid requirement must be reported either way.
        selected &= holds;
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
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
                .contains("unknown operator")
        );
        let s = selector("matchExpressions: [{key: role, operator: In}]");
        assert!(
            matches(Some(&s), &labels(&[]))
                .expect_err("fails")
                .contains("at least one value")
        );
        let s = selector("matchExpressions: [{key: role, operator: Exists, values: [x]}]");
        assert!(matches(Some(&s), &labels(&[])).is_err());
    }
}
