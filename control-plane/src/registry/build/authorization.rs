//! AuthorizationPolicies onto the workloads they select, their sources resolved to SPIFFE ID
//! patterns in the mesh's trust domain.
//!
//! A value that cannot be read drops its rule, never its policy, with a warning: a dropped
//! ALLOW rule allows less, and a dropped policy could leave a workload with no ALLOW policy,
//! which allows everything.

use super::*;
use crate::crd::{AuthorizationAction as Action, AuthorizationRule as Rule};
use crate::model::{AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Pattern};

pub(super) fn set_authorization(
    objects: &Objects,
    workloads: &mut BTreeMap<Key, Workload>,
    td: &str,
    b: &mut Builder,
) {
    for (key, policy) in &objects.authorization_policies {
        let spec = &policy.spec;
        let mut rules = Vec::with_capacity(spec.rules.len());
        for (i, rule) in spec.rules.iter().enumerate() {
            match authorization_rule(rule, td) {
                Ok(r) => rules.push(r),
                Err(why) => b.warn(
                    "AuthorizationPolicy",
                    key,
                    format!("rules[{i}] dropped (it matches nothing): {why}"),
                ),
            }
        }
        let policy = AuthorizationPolicy {
            key: key.clone(),
            action: match spec.action {
                Action::Allow => AuthorizationAction::Allow,
                Action::Deny => AuthorizationAction::Deny,
            },
            rules,
        };
        let selector = &spec.selector.match_labels;
        for w in workloads.values_mut() {
            if w.key.namespace == key.namespace
                && selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
            {
                w.authorization.push(policy.clone());
            }
        }
    }
}

/// A rule with its sources as SPIFFE ID patterns; `Err` names the first value that cannot be.
fn authorization_rule(rule: &Rule, td: &str) -> Result<AuthorizationRule, String> {
    let principals = rule
        .principals
        .iter()
        .map(|p| principal(p, td))
        .collect::<Result<_, _>>()?;
    let namespaces = rule
        .namespaces
        .iter()
        .map(|ns| namespace(ns, td))
        .collect::<Result<_, _>>()?;
    if let Some(m) = rule.methods.iter().find(|m| !is_token(m)) {
        return Err(format!("method {m:?} is not an HTTP method"));
    }
    if rule.ports.contains(&0) {
        return Err("port 0".into());
    }
    let paths = rule
        .paths
        .iter()
        .map(|p| match pattern(p) {
            Some(Pattern::Exact(x) | Pattern::Prefix(x)) if !x.starts_with('/') => {
                Err(format!("path {p:?} does not start with /"))
            }
            Some(pattern) => Ok(pattern),
            None => Err(format!("path {p:?}: `*` only at the start or the end")),
        })
        .collect::<Result<_, _>>()?;
    Ok(AuthorizationRule {
        principals,
        namespaces,
        ports: rule.ports.clone(),
        methods: rule.methods.clone(),
        paths,
    })
}

/// `*`, `abc*`, `*abc` or `abc`; `None` for a `*` elsewhere, or nothing at all.
fn pattern(s: &str) -> Option<Pattern> {
    let p = match s {
        "" => return None,
        "*" => return Some(Pattern::Any),
        _ => match (s.strip_prefix('*'), s.strip_suffix('*')) {
            (Some(rest), None) => Pattern::Suffix(rest.into()),
            (None, Some(rest)) => Pattern::Prefix(rest.into()),
            (None, None) => Pattern::Exact(s.into()),
            (Some(_), Some(_)) => return None,
        },
    };
    match &p {
        Pattern::Exact(x) | Pattern::Prefix(x) | Pattern::Suffix(x) if x.contains('*') => None,
        _ => Some(p),
    }
}

/// A principal as users write it: `spiffe://td/ns/N/sa/S`, Istio's `td/ns/N/sa/S`, or
/// `ns/N/sa/S` in this trust domain; `*` wildcards as [`pattern`] reads them.
fn principal(p: &str, td: &str) -> Result<Pattern, String> {
    let full = if p.starts_with("spiffe://") || p.starts_with('*') {
        p.to_string()
    } else if p.starts_with("ns/") {
        format!("spiffe://{td}/{p}")
    } else if p.contains("/ns/") {
        format!("spiffe://{p}")
    } else {
        return Err(format!(
            "principal {p:?} is not spiffe://<td>/ns/<ns>/sa/<sa>, <td>/ns/<ns>/sa/<sa> or ns/<ns>/sa/<sa>"
        ));
    };
    pattern(&full).ok_or_else(|| format!("principal {p:?}: `*` only at the start or the end"))
}

/// A namespace as a pattern on the SPIFFE IDs of its workloads.
fn namespace(ns: &str, td: &str) -> Result<Pattern, String> {
    let base = format!("spiffe://{td}/ns/");
    match pattern(ns) {
        Some(Pattern::Any) => Ok(Pattern::Prefix(base)),
        Some(Pattern::Exact(n)) if !n.contains('/') => {
            Ok(Pattern::Prefix(format!("{base}{n}/sa/")))
        }
        Some(Pattern::Prefix(n)) if !n.contains('/') => Ok(Pattern::Prefix(format!("{base}{n}"))),
        _ => Err(format!(
            "namespace {ns:?}: a name, `*`, or a name with a trailing `*`"
        )),
    }
}

/// RFC 9110's token: what a method may be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}
