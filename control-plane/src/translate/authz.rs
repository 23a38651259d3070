//! A workload's AuthorizationPolicies as Envoy's RBAC filters, in the shape Istio gives them:
//! a DENY filter (every DENY rule) ahead of an ALLOW filter (every ALLOW rule, present as soon
//! as one ALLOW policy selects the workload, so that selecting allows only what a rule
//! matches). Each rule is one policy, named `<namespace>/<name>[<index>]`, so a refusal says
//! which rule matched. HTTP chains get `envoy.filters.http.rbac` before the router, TCP chains
//! `envoy.filters.network.rbac` before the `tcp_proxy`.
//!
//! A rule on methods or paths matches no TCP connection: an ALLOW rule with them is left out
//! of a TCP chain (it allows nothing there), a DENY rule keeps its other parts (it refuses
//! every connection they match), as Istio does, so neither way lets more through.
//!
//! Envoy's `policies` is a protobuf map, which prost holds in a `HashMap` and encodes in a
//! random order; a resource's version is the hash of its encoding, so the filters are encoded
//! here with the entries sorted, in the same wire format.

use std::collections::BTreeMap;

use weft_proto::xds::config::listener::v3::{Filter, filter};
use weft_proto::xds::config::rbac::v3::{
    Permission, Policy, Principal, permission, principal, rbac::Action,
};
use weft_proto::xds::config::route::v3::{HeaderMatcher, header_matcher};
use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use weft_proto::xds::r#type::matcher::v3::{
    PathMatcher, StringMatcher, path_matcher, string_matcher,
};

use super::any;
use crate::model::{AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Pattern};

const HTTP_RBAC: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";
const NETWORK_RBAC: &str = "envoy.extensions.filters.network.rbac.v3.RBAC";

/// The HTTP RBAC filters of a workload's HTTP chains, in order; none when no policy selects it.
pub fn http_filters(policies: &[AuthorizationPolicy]) -> Vec<HttpFilter> {
    filters(policies, false)
        .into_iter()
        .map(|rules| HttpFilter {
            name: "envoy.filters.http.rbac".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(
                HTTP_RBAC,
                &HttpRbac { rules: Some(rules) },
            ))),
            ..Default::default()
        })
        .collect()
}

/// The network RBAC filters of a workload's TCP chains, in order, counted under `stat_prefix`.
pub fn network_filters(policies: &[AuthorizationPolicy], stat_prefix: &str) -> Vec<Filter> {
    filters(policies, true)
        .into_iter()
        .map(|rules| Filter {
            name: "envoy.filters.network.rbac".into(),
            config_type: Some(filter::ConfigType::TypedConfig(any(
                NETWORK_RBAC,
                &NetworkRbac {
                    rules: Some(rules),
                    stat_prefix: format!("{stat_prefix}."),
                },
            ))),
        })
        .collect()
}

/// The DENY filter, if any DENY rule applies, then the ALLOW filter, if any ALLOW policy
/// selects the workload.
fn filters(policies: &[AuthorizationPolicy], tcp: bool) -> Vec<SortedRbac> {
    let mut out = Vec::new();
    for (action, wanted) in [
        (Action::Deny, AuthorizationAction::Deny),
        (Action::Allow, AuthorizationAction::Allow),
    ] {
        let selecting: Vec<&AuthorizationPolicy> =
            policies.iter().filter(|p| p.action == wanted).collect();
        let mut entries = BTreeMap::new();
        for p in &selecting {
            for (i, rule) in p.rules.iter().enumerate() {
                let rule = match (tcp && rule.is_http_only(), wanted) {
                    (false, _) => rule.clone(),
                    (true, AuthorizationAction::Allow) => continue,
                    (true, AuthorizationAction::Deny) => AuthorizationRule {
                        methods: Vec::new(),
                        paths: Vec::new(),
                        ..rule.clone()
                    },
                };
                entries.insert(format!("{}[{i}]", p.key), policy(&rule));
            }
        }
        // A DENY filter with nothing to deny is left out; an ALLOW filter stays even empty.
        let needed = match wanted {
            AuthorizationAction::Deny => !entries.is_empty(),
            AuthorizationAction::Allow => !selecting.is_empty(),
        };
        if needed {
            out.push(SortedRbac {
                action: action as i32,
                policies: entries
                    .into_iter()
                    .map(|(key, value)| PolicyEntry {
                        key,
                        value: Some(value),
                    })
                    .collect(),
            });
        }
    }
    out
}

/// One rule: its request parts (ANDed, each an OR of its entries) and its source parts.
fn policy(rule: &AuthorizationRule) -> Policy {
    let mut asks: Vec<Permission> = Vec::new();
    if !rule.ports.is_empty() {
        asks.push(or_rules(
            rule.ports
                .iter()
                .map(|p| perm(permission::Rule::DestinationPort(u32::from(*p))))
                .collect(),
        ));
    }
    if !rule.methods.is_empty() {
        asks.push(or_rules(
            rule.methods
                .iter()
                .map(|m| {
                    perm(permission::Rule::Header(HeaderMatcher {
                        name: ":method".into(),
                        header_match_specifier: Some(
                            header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(
                                &Pattern::Exact(m.clone()),
                            )),
                        ),
                        ..Default::default()
                    }))
                })
                .collect(),
        ));
    }
    if !rule.paths.is_empty() {
        asks.push(or_rules(
            rule.paths
                .iter()
                .map(|p| {
                    perm(permission::Rule::UrlPath(PathMatcher {
                        rule: Some(path_matcher::Rule::Path(match p {
                            Pattern::Any => string_matcher(&Pattern::Prefix("/".into())),
                            p => string_matcher(p),
                        })),
                    }))
                })
                .collect(),
        ));
    }
    let mut sources: Vec<Principal> = Vec::new();
    for part in [&rule.principals, &rule.namespaces] {
        if !part.is_empty() {
            sources.push(id(principal::Identifier::OrIds(principal::Set {
                ids: part.iter().map(authenticated).collect(),
            })));
        }
    }
    Policy {
        permissions: vec![match asks.len() {
            0 => perm(permission::Rule::Any(true)),
            1 => asks.remove(0),
            _ => perm(permission::Rule::AndRules(permission::Set { rules: asks })),
        }],
        principals: vec![match sources.len() {
            0 => id(principal::Identifier::Any(true)),
            1 => sources.remove(0),
            _ => id(principal::Identifier::AndIds(principal::Set {
                ids: sources,
            })),
        }],
        ..Default::default()
    }
}

fn perm(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

fn or_rules(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::OrRules(permission::Set { rules }))
}

fn id(identifier: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(identifier),
    }
}

/// A peer with a mesh certificate whose SPIFFE ID matches; `*`: any such peer.
fn authenticated(p: &Pattern) -> Principal {
    id(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: match p {
                Pattern::Any => None,
                p => Some(string_matcher(p)),
            },
        },
    ))
}

fn string_matcher(p: &Pattern) -> StringMatcher {
    use string_matcher::MatchPattern;
    StringMatcher {
        match_pattern: Some(match p {
            Pattern::Exact(s) => MatchPattern::Exact(s.clone()),
            Pattern::Prefix(s) => MatchPattern::Prefix(s.clone()),
            Pattern::Suffix(s) => MatchPattern::Suffix(s.clone()),
            // Callers spell "anything" in their field's own way; this is the fallback.
            Pattern::Any => MatchPattern::Prefix(String::new()),
        }),
        ..Default::default()
    }
}

/// `envoy.config.rbac.v3.RBAC` with its `policies` map as sorted entries: the same bytes on the
/// wire (a map is a repeated key-value message), in a fixed order.
#[derive(Clone, PartialEq, prost::Message)]
struct SortedRbac {
    #[prost(int32, tag = "1")]
    action: i32,
    #[prost(message, repeated, tag = "2")]
    policies: Vec<PolicyEntry>,
}

/// One entry of the `policies` map.
#[derive(Clone, PartialEq, prost::Message)]
struct PolicyEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Policy>,
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC`, holding [`SortedRbac`].
#[derive(Clone, PartialEq, prost::Message)]
struct HttpRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<SortedRbac>,
}

/// `envoy.extensions.filters.network.rbac.v3.RBAC`, holding [`SortedRbac`].
#[derive(Clone, PartialEq, prost::Message)]
struct NetworkRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<SortedRbac>,
    #[prost(string, tag = "3")]
    stat_prefix: String,
}
