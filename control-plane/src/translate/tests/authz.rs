//! AuthorizationPolicies as the RBAC filters of a workload's inbound chains, read back with
//! Envoy's own types.

use weft_proto::xds::config::rbac::v3::{self as rbac, permission, principal};
use weft_proto::xds::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::http_filter;
use weft_proto::xds::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_proto::xds::r#type::matcher::v3::string_matcher::MatchPattern;

use super::*;
use crate::model::{AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Pattern};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn policy(
    name: &str,
    action: AuthorizationAction,
    rules: Vec<AuthorizationRule>,
) -> AuthorizationPolicy {
    AuthorizationPolicy {
        key: Key::new("shop", name),
        action,
        rules,
    }
}

/// "web may GET /api/*"; "ops may do anything on 9000"; "nobody may reach /admin".
fn policies() -> Vec<AuthorizationPolicy> {
    vec![
        policy(
            "api",
            AuthorizationAction::Allow,
            vec![
                AuthorizationRule {
                    principals: vec![Pattern::Exact(WEB.into())],
                    methods: vec!["GET".into()],
                    paths: vec![Pattern::Prefix("/api/".into())],
                    ..Default::default()
                },
                AuthorizationRule {
                    namespaces: vec![Pattern::Prefix("spiffe://cluster.local/ns/ops/sa/".into())],
                    ports: vec![9000],
                    ..Default::default()
                },
            ],
        ),
        policy(
            "no-admin",
            AuthorizationAction::Deny,
            vec![AuthorizationRule {
                paths: vec![Pattern::Prefix("/admin".into())],
                ..Default::default()
            }],
        ),
    ]
}

fn inbound_for(authorization: Vec<AuthorizationPolicy>) -> Listener {
    let m = mesh()
        .workload(Workload {
            ports: vec![
                workload_port(8080, Protocol::Http1),
                workload_port(9000, Protocol::Tcp),
            ],
            authorization,
            ..workload("shop", "db-0", "10.1.0.1")
        })
        .build();
    listener(&for_node(&m, "db-0.shop"), "inbound")
}

fn on_port(c: &weft_proto::xds::config::listener::v3::FilterChain, port: u32) -> bool {
    c.filter_chain_match
        .as_ref()
        .and_then(|m| m.destination_port)
        .map(|p| p.value)
        == Some(port)
}

/// The RBAC rules of each chain for `port`, HTTP filters or network ones, by action.
fn rbac_of(l: &Listener, port: u32) -> Vec<rbac::Rbac> {
    let chain = l.filter_chains.iter().find(|c| on_port(c, port)).unwrap();
    let mut out = Vec::new();
    for f in &chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("{f:?}")
        };
        if f.name == "envoy.filters.network.rbac" {
            let n = NetworkRbac::decode(&any.value[..]).unwrap();
            assert!(!n.stat_prefix.is_empty(), "Envoy requires a stat prefix");
            out.push(n.rules.unwrap());
        } else if f.name == "envoy.filters.network.http_connection_manager" {
            let hcm = HttpConnectionManager::decode(&any.value[..]).unwrap();
            let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(
                names.last(),
                Some(&"envoy.filters.http.router"),
                "{names:?}"
            );
            for h in &hcm.http_filters[..hcm.http_filters.len() - 1] {
                assert_eq!(h.name, "envoy.filters.http.rbac");
                let Some(http_filter::ConfigType::TypedConfig(any)) = &h.config_type else {
                    panic!("{h:?}")
                };
                out.push(HttpRbac::decode(&any.value[..]).unwrap().rules.unwrap());
            }
        }
    }
    out
}

fn actions(r: &[rbac::Rbac]) -> Vec<(rbac::rbac::Action, Vec<String>)> {
    r.iter()
        .map(|r| {
            let mut names: Vec<String> = r.policies.keys().cloned().collect();
            names.sort();
            (r.action(), names)
        })
        .collect()
}

#[test]
fn an_http_chain_denies_first_then_allows_only_what_a_rule_matches() {
    use rbac::rbac::Action::{Allow, Deny};
    let l = inbound_for(policies());
    let http = rbac_of(&l, 8080);
    assert_eq!(
        actions(&http),
        [
            (Deny, vec!["shop/no-admin[0]".to_string()]),
            (
                Allow,
                vec!["shop/api[0]".to_string(), "shop/api[1]".to_string()]
            ),
        ]
    );
    // "web may GET /api/*": ports, methods and paths ANDed, each an OR; the source an OR of
    // authenticated names.
    let web = &http[1].policies["shop/api[0]"];
    let Some(permission::Rule::AndRules(and)) = &web.permissions[0].rule else {
        panic!("{web:?}")
    };
    assert_eq!(and.rules.len(), 2);
    let Some(principal::Identifier::OrIds(ids)) = &web.principals[0].identifier else {
        panic!("{web:?}")
    };
    let Some(principal::Identifier::Authenticated(a)) = &ids.ids[0].identifier else {
        panic!("{ids:?}")
    };
    assert_eq!(
        a.principal_name.as_ref().unwrap().match_pattern,
        Some(MatchPattern::Exact(WEB.into()))
    );
    // Both transports of a PERMISSIVE port carry the same filters.
    let chains_of_8080 = l.filter_chains.iter().filter(|c| on_port(c, 8080)).count();
    assert_eq!(chains_of_8080, 2);
}

/// On a TCP chain an ALLOW rule on methods or paths allows nothing and is left out; a DENY rule
/// keeps its other parts, so it refuses every connection they match.
#[test]
fn a_tcp_chain_leaves_out_allow_rules_on_requests_and_widens_deny_rules() {
    use rbac::rbac::Action::{Allow, Deny};
    let tcp = rbac_of(&inbound_for(policies()), 9000);
    assert_eq!(
        actions(&tcp),
        [
            (Deny, vec!["shop/no-admin[0]".to_string()]),
            (Allow, vec!["shop/api[1]".to_string()]),
        ]
    );
    let deny = &tcp[0].policies["shop/no-admin[0]"];
    assert_eq!(deny.permissions[0].rule, Some(permission::Rule::Any(true)));
}

/// No policy: no filters. An ALLOW policy with no rules: an ALLOW filter with no policy, which
/// refuses everything; DENY policies alone leave everything else allowed.
#[test]
fn selection_alone_decides_whether_there_is_an_allow_filter() {
    use rbac::rbac::Action::{Allow, Deny};
    let l = inbound_for(vec![]);
    assert!(rbac_of(&l, 8080).is_empty() && rbac_of(&l, 9000).is_empty());
    let closed = inbound_for(vec![policy("closed", AuthorizationAction::Allow, vec![])]);
    assert_eq!(actions(&rbac_of(&closed, 8080)), [(Allow, vec![])]);
    let deny_only = inbound_for(vec![policies().remove(1)]);
    assert_eq!(
        actions(&rbac_of(&deny_only, 8080)),
        [(Deny, vec!["shop/no-admin[0]".to_string()])]
    );
}

/// The policies map is encoded in name order: the same policies give the same bytes, so the
/// listener's version does not change when nothing did.
#[test]
fn the_same_policies_encode_to_the_same_bytes() {
    let many: Vec<AuthorizationPolicy> = (0..20)
        .map(|i| {
            policy(
                &format!("p{i}"),
                AuthorizationAction::Allow,
                vec![AuthorizationRule {
                    ports: vec![8080],
                    ..Default::default()
                }],
            )
        })
        .collect();
    let bytes = || inbound_for(many.clone()).encode_to_vec();
    let first = bytes();
    for _ in 0..5 {
        assert_eq!(bytes(), first);
    }
}

/// Ports the workload did not declare meet the same mode and policies through the passthrough
/// chains; a workload with no port but a STRICT mode or a policy still gets them.
#[test]
fn undeclared_ports_meet_the_same_mode_and_policies() {
    use rbac::rbac::Action::{Allow, Deny};
    let l = inbound_for(policies());
    let passthrough: Vec<_> = l
        .filter_chains
        .iter()
        .filter(|c| {
            c.filter_chain_match
                .as_ref()
                .unwrap()
                .destination_port
                .is_none()
        })
        .collect();
    assert_eq!(passthrough.len(), 2, "mTLS and plaintext (PERMISSIVE)");
    let only_passthrough = Listener {
        filter_chains: vec![passthrough[0].clone()],
        ..l.clone()
    };
    let mut rules = Vec::new();
    for f in &only_passthrough.filter_chains[0].filters {
        if f.name == "envoy.filters.network.rbac" {
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("{f:?}")
            };
            rules.push(NetworkRbac::decode(&any.value[..]).unwrap().rules.unwrap());
        }
    }
    assert_eq!(
        actions(&rules),
        [
            (Deny, vec!["shop/no-admin[0]".to_string()]),
            (Allow, vec!["shop/api[1]".to_string()]),
        ]
    );
    for (mode, authorization, want) in [
        (TlsMode::Permissive, vec![], 0),
        (TlsMode::Strict, vec![], 1),
        (TlsMode::Permissive, policies(), 2),
    ] {
        let m = mesh()
            .workload(Workload {
                tls_mode: mode,
                authorization,
                ..workload("shop", "job-0", "10.1.0.2")
            })
            .build();
        let res = for_node(&m, "job-0.shop");
        let chains = if names(&res, ResourceType::Listener).contains(&"inbound") {
            listener(&res, "inbound").filter_chains.len()
        } else {
            0
        };
        assert_eq!(chains, want, "{mode:?}");
        assert_eq!(
            names(&res, ResourceType::Cluster).contains(&"InboundPassthroughCluster"),
            want > 0
        );
    }
}
