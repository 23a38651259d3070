//! AuthorizationPolicies: which workloads they select, and their values as patterns.

use super::*;
use crate::model::{AuthorizationAction, AuthorizationRule, Pattern};

fn pod(name: &str, labels: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{{labels}}}}}\n\
spec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: 10.0.0.{}}}\n",
        name.len()
    )
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
    )
}

fn exact(s: &str) -> Pattern {
    Pattern::Exact(s.into())
}

fn prefix(s: &str) -> Pattern {
    Pattern::Prefix(s.into())
}

/// A policy selects the workloads of its namespace its labels match (all of them when it has
/// none); a workload no policy selects has none.
#[test]
fn policies_select_workloads_by_label_in_their_namespace() {
    let docs = [
        pod("db", "app: db"),
        pod("web", "app: web"),
        policy("db-only", "{selector: {matchLabels: {app: db}}, rules: []}"),
        policy("deny-all-ns", "{action: DENY, rules: [{paths: [/admin]}]}"),
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: elsewhere}\n\
spec: {containers: [{name: c}]}\nstatus: {podIP: 10.0.1.1}\n"
            .to_string(),
    ]
    .concat();
    let (mesh, warnings) = build_yaml(&docs);
    assert!(warnings.is_empty(), "{warnings:?}");
    let names = |ns: &str, w: &str| -> Vec<(String, AuthorizationAction)> {
        mesh.workloads[&Key::new(ns, w)]
            .authorization
            .iter()
            .map(|p| (p.key.name.clone(), p.action))
            .collect()
    };
    assert_eq!(
        names("shop", "db"),
        [
            ("db-only".to_string(), AuthorizationAction::Allow),
            ("deny-all-ns".to_string(), AuthorizationAction::Deny)
        ]
    );
    assert_eq!(
        names("shop", "web"),
        [("deny-all-ns".to_string(), AuthorizationAction::Deny)]
    );
    assert!(names("elsewhere", "other").is_empty());
}

/// Sources are SPIFFE ID patterns in the mesh's trust domain, however they were written.
#[test]
fn sources_become_spiffe_id_patterns() {
    let docs = [
        pod("db", "app: db"),
        policy(
            "p",
            "{rules: [{principals: [ns/shop/sa/web, 'cluster.local/ns/ops/sa/admin', 'spiffe://other.td/ns/x/sa/y', '*', '*/sa/batch', 'spiffe://cluster.local/ns/ci/*'], \
namespaces: [ops, '*', 'team-*'], ports: [8080], methods: [GET, POST], paths: [/api/*, /healthz, '*.css', '*']}]}",
        ),
    ]
    .concat();
    let (mesh, warnings) = build_yaml(&docs);
    assert!(warnings.is_empty(), "{warnings:?}");
    let rule = &mesh.workloads[&Key::new("shop", "db")].authorization[0].rules[0];
    let want = AuthorizationRule {
        principals: vec![
            exact("spiffe://cluster.local/ns/shop/sa/web"),
            exact("spiffe://cluster.local/ns/ops/sa/admin"),
            exact("spiffe://other.td/ns/x/sa/y"),
            Pattern::Any,
            Pattern::Suffix("/sa/batch".into()),
            prefix("spiffe://cluster.local/ns/ci/"),
        ],
        namespaces: vec![
            prefix("spiffe://cluster.local/ns/ops/sa/"),
            prefix("spiffe://cluster.local/ns/"),
            prefix("spiffe://cluster.local/ns/team-"),
        ],
        ports: vec![8080],
        methods: vec!["GET".into(), "POST".into()],
        paths: vec![
            prefix("/api/"),
            exact("/healthz"),
            Pattern::Suffix(".css".into()),
            Pattern::Any,
        ],
    };
    assert_eq!(rule, &want);
}

/// A value that cannot be read drops its rule, never the policy: an ALLOW policy left with no
/// rule still selects the workload and allows nothing, rather than vanishing and allowing all.
#[test]
fn a_bad_value_drops_its_rule_and_the_policy_stays() {
    let bad = [
        ("principals: [web]", "principal \"web\""),
        (
            "principals: ['spiffe://td/*/sa/x*']",
            "`*` only at the start or the end",
        ),
        ("namespaces: ['a/b']", "namespace \"a/b\""),
        ("methods: ['GE T']", "method \"GE T\""),
        ("paths: [api]", "path \"api\" does not start with /"),
        ("paths: ['/a*b*']", "path \"/a*b*\""),
        ("ports: [0]", "port 0"),
    ];
    for (rule, why) in bad {
        let docs = [
            pod("db", "app: db"),
            policy("p", &format!("{{rules: [{{{rule}}}, {{ports: [80]}}]}}")),
        ]
        .concat();
        let (mesh, warnings) = build_yaml(&docs);
        let policies = &mesh.workloads[&Key::new("shop", "db")].authorization;
        assert_eq!(policies.len(), 1, "{rule}");
        assert_eq!(policies[0].rules.len(), 1, "{rule}: the good rule stays");
        assert_eq!(policies[0].rules[0].ports, [80]);
        assert_eq!(warnings.len(), 1, "{rule}: {warnings:?}");
        assert!(
            warnings[0].starts_with("AuthorizationPolicy shop/p: rules[0] dropped")
                && warnings[0].contains(why),
            "{rule}: {}",
            warnings[0]
        );
    }
}
