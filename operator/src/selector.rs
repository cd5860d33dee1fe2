//! Label selector matching (`matchLabels` + `matchExpressions`), as Kubernetes defines it.
//!
//! Rooms pick worker pools with a `workerSelector`; the scheduler evaluates it for every
//! candidate, so it is a pure function over plain maps.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Why a selector cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("workerSelector operator {0:?} is not one of In, NotIn, Exists, DoesNotExist")]
    UnknownOperator(String),
    #[error("workerSelector expression on {key:?} with operator {operator} needs at least one value")]
    MissingValues { key: String, operator: String },
    #[error("workerSelector expression on {key:?} with operator {operator} must not list values")]
    UnexpectedValues { key: String, operator: String },
}

/// Checks that a selector is well formed, so a bad one is reported once, on the Room.
pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    matches(selector, &BTreeMap::new()).map(|_| ())
}

/// Does `labels` satisfy `selector`? An empty selector matches everything.
pub fn matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let mut all = true;
    for (key, value) in selector.match_labels.iter().flatten() {
        all &= labels.get(key) == Some(value);
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        let present = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SelectorError::MissingValues {
                    key: expr.key.clone(),
                    operator: expr.operator.clone(),
                });
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues {
                    key: expr.key.clone(),
                    operator: expr.operator.clone(),
                });
            }
            "In" => present.is_some_and(|v| values.contains(v)),
            "NotIn" => present.is_none_or(|v| !values.contains(v)),
            "Exists" => present.is_some(),
            "DoesNotExist" => present.is_none(),
            other => return Err(SelectorError::UnknownOperator(other.to_string())),
        };
        all &= ok;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(matches(&LabelSelector::default(), &labels(&[])).unwrap());
        assert!(matches(&LabelSelector::default(), &labels(&[("tier", "gold")])).unwrap());
    }

    #[test]
    fn match_labels_need_every_pair() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("tier", "gold"), ("region", "eu")])),
            ..Default::default()
        };
        assert!(matches(&sel, &labels(&[("tier", "gold"), ("region", "eu"), ("x", "y")])).unwrap());
        assert!(!matches(&sel, &labels(&[("tier", "gold")])).unwrap());
        assert!(!matches(&sel, &labels(&[("tier", "silver"), ("region", "eu")])).unwrap());
    }

    #[test]
    fn expressions_follow_kubernetes_semantics() {
        let l = labels(&[("tier", "gold")]);
        let case = |e| LabelSelector { match_expressions: Some(vec![e]), ..Default::default() };
        assert!(matches(&case(expr("tier", "In", &["gold", "silver"])), &l).unwrap());
        assert!(!matches(&case(expr("tier", "In", &["silver"])), &l).unwrap());
        assert!(matches(&case(expr("tier", "NotIn", &["silver"])), &l).unwrap());
        assert!(matches(&case(expr("gpu", "NotIn", &["yes"])), &l).unwrap(), "NotIn matches absent keys");
        assert!(matches(&case(expr("tier", "Exists", &[])), &l).unwrap());
        assert!(!matches(&case(expr("gpu", "Exists", &[])), &l).unwrap());
        assert!(matches(&case(expr("gpu", "DoesNotExist", &[])), &l).unwrap());
    }

    #[test]
    fn malformed_expressions_are_errors_not_mismatches() {
        let case = |e| LabelSelector { match_expressions: Some(vec![e]), ..Default::default() };
        assert!(matches!(validate(&case(expr("a", "Like", &["x"]))), Err(SelectorError::UnknownOperator(_))));
        assert!(matches!(validate(&case(expr("a", "In", &[]))), Err(SelectorError::MissingValues { .. })));
        assert!(matches!(validate(&case(expr("a", "Exists", &["x"]))), Err(SelectorError::UnexpectedValues { .. })));
    }
}
