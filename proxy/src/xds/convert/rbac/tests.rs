//! RBAC filters as Istio and weft send them are read and enforced as written; what cannot be
//! enforced is refused by field.

use weft_proto::google::protobuf::UInt32Value;
use weft_proto::xds::config::rbac::v3::{permission, principal};
use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, Rds, http_filter,
};
use weft_proto::xds::r#type::matcher::v3::path_matcher;

use super::*;
use crate::config::authz::Peer;

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())),
        ..Default::default()
    }
}

fn prefix(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Prefix(s.into())),
        ..Default::default()
    }
}

fn perm(rule: permission::Rule) -> xrbac::Permission {
    xrbac::Permission { rule: Some(rule) }
}

fn id(identifier: principal::Identifier) -> xrbac::Principal {
    xrbac::Principal {
        identifier: Some(identifier),
    }
}

/// Istio's shape for "web may GET /api/*": and of ors, on both sides.
fn istio_policy() -> xrbac::Policy {
    let and = |rules| perm(permission::Rule::AndRules(permission::Set { rules }));
    let or = |rules| perm(permission::Rule::OrRules(permission::Set { rules }));
    xrbac::Policy {
        permissions: vec![and(vec![
            or(vec![perm(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(prefix("/api/"))),
            }))]),
            or(vec![perm(permission::Rule::Header(xr::HeaderMatcher {
                name: ":method".into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    exact("GET"),
                )),
                ..Default::default()
            }))]),
        ])],
        principals: vec![id(principal::Identifier::AndIds(principal::Set {
            ids: vec![id(principal::Identifier::OrIds(principal::Set {
                ids: vec![id(principal::Identifier::Authenticated(
                    xrbac::principal::Authenticated {
                        principal_name: Some(exact(WEB)),
                    },
                ))],
            }))],
        }))],
        ..Default::default()
    }
}

fn rules(action: xrbac::rbac::Action, policies: Vec<(&str, xrbac::Policy)>) -> xrbac::Rbac {
    xrbac::Rbac {
        action: action as i32,
        policies: policies
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect(),
        ..Default::default()
    }
}

fn http_rbac(r: HttpRbac) -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: format!("type.googleapis.com/{HTTP_RBAC}"),
            value: r.encode_to_vec(),
        })),
        ..Default::default()
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        ..Default::default()
    }
}

fn hcm_chain(port: u32, filters: Vec<HttpFilter>) -> xl::FilterChain {
    let hcm = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(weft_proto::xds::config::core::v3::ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    Default::default(),
                )),
                ..Default::default()
            }),
            route_config_name: "r".into(),
        })),
        http_filters: filters,
        ..Default::default()
    };
    chain(
        port,
        vec![xl::Filter {
            name: "hcm".into(),
            config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
                type_url: format!("type.googleapis.com/{HCM}"),
                value: hcm.encode_to_vec(),
            })),
        }],
    )
}

fn network_rbac(r: NetworkRbac) -> xl::Filter {
    xl::Filter {
        name: "envoy.filters.network.rbac".into(),
        config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
            type_url: format!("type.googleapis.com/{NETWORK_RBAC}"),
            value: r.encode_to_vec(),
        })),
    }
}

fn tcp_proxy() -> xl::Filter {
    xl::Filter {
        name: "tcp".into(),
        config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
            type_url: format!("type.googleapis.com/{TCP_PROXY}"),
            value: TcpProxy {
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("c".into())),
                ..Default::default()
            }
            .encode_to_vec(),
        })),
    }
}

fn chain(port: u32, filters: Vec<xl::Filter>) -> xl::FilterChain {
    xl::FilterChain {
        filter_chain_match: Some(xl::FilterChainMatch {
            destination_port: Some(UInt32Value { value: port }),
            ..Default::default()
        }),
        filters,
        ..Default::default()
    }
}

fn listener(
    direction: TrafficDirection,
    chains: Vec<xl::FilterChain>,
) -> Result<Listener, Invalid> {
    Listener::try_from(&xl::Listener {
        name: "virtualInbound".into(),
        filter_chains: chains,
        traffic_direction: direction as i32,
        ..Default::default()
    })
}

fn peer(principal: Option<&str>, port: u16) -> Peer {
    Peer {
        principal: principal.map(Arc::from),
        source: "10.0.0.7".parse().unwrap(),
        destination: SocketAddr::new("10.0.0.9".parse().unwrap(), port),
    }
}

fn request(method: &str, path: &str) -> http::request::Parts {
    http::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap()
        .into_parts()
        .0
}

#[test]
fn an_http_chains_rbac_filters_are_enforced_per_request() {
    let allow = HttpRbac {
        rules: Some(rules(
            xrbac::rbac::Action::Allow,
            vec![("ns[shop]-policy[api]-rule[0]", istio_policy())],
        )),
        ..Default::default()
    };
    let l = listener(
        TrafficDirection::Inbound,
        vec![hcm_chain(8080, vec![http_rbac(allow), router()])],
    )
    .unwrap();
    let authz = l.by_port[0].handler.authz();
    assert!(!authz.is_empty());
    let web = peer(Some(WEB), 8080);
    assert!(authz.check(&web, &request("GET", "/api/items")).is_ok());
    assert!(authz.check(&web, &request("POST", "/api/items")).is_err());
    assert!(authz.check(&web, &request("GET", "/admin")).is_err());
    assert!(
        authz
            .check(&peer(None, 8080), &request("GET", "/api/items"))
            .is_err()
    );
    // Without RBAC filters, nothing is checked.
    let open = listener(
        TrafficDirection::Inbound,
        vec![hcm_chain(8080, vec![router()])],
    )
    .unwrap();
    assert!(open.by_port[0].handler.authz().is_empty());
}

#[test]
fn a_tcp_chains_network_rbac_filter_is_enforced_per_connection() {
    let deny_plaintext = NetworkRbac {
        rules: Some(rules(
            xrbac::rbac::Action::Deny,
            vec![(
                "plaintext",
                xrbac::Policy {
                    permissions: vec![perm(permission::Rule::DestinationPort(5432))],
                    principals: vec![id(principal::Identifier::NotId(Box::new(id(
                        principal::Identifier::Authenticated(Default::default()),
                    ))))],
                    ..Default::default()
                },
            )],
        )),
        stat_prefix: "tcp.".into(),
        ..Default::default()
    };
    let l = listener(
        TrafficDirection::Inbound,
        vec![chain(5432, vec![network_rbac(deny_plaintext), tcp_proxy()])],
    )
    .unwrap();
    let authz = l.by_port[0].handler.authz();
    assert!(authz.check_connection(&peer(Some(WEB), 5432)).is_ok());
    let denied = authz.check_connection(&peer(None, 5432)).unwrap_err();
    assert_eq!(denied.policy, Some("plaintext"));
}

/// Anything that would make the filter enforce less (or other) than written is refused by
/// field, and so is RBAC where weft-proxy does not know the client.
#[test]
fn what_cannot_be_enforced_is_refused_by_field() {
    let http_with = |edit: fn(&mut HttpRbac)| {
        let mut r = HttpRbac {
            rules: Some(rules(
                xrbac::rbac::Action::Allow,
                vec![("p", istio_policy())],
            )),
            ..Default::default()
        };
        edit(&mut r);
        vec![hcm_chain(80, vec![http_rbac(r), router()])]
    };
    let at = "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config";
    let cases: Vec<(Vec<xl::FilterChain>, String)> = vec![
        (
            http_with(|r| r.shadow_rules = r.rules.clone()),
            format!("{at}.shadow_rules"),
        ),
        (
            http_with(|r| r.rules.as_mut().unwrap().action = xrbac::rbac::Action::Log as i32),
            format!("{at}.rules.action"),
        ),
        (
            http_with(|r| {
                let p = r.rules.as_mut().unwrap().policies.get_mut("p").unwrap();
                p.condition = Some(Default::default());
            }),
            format!("{at}.rules.policies[\"p\"].condition"),
        ),
        (
            http_with(|r| {
                let p = r.rules.as_mut().unwrap().policies.get_mut("p").unwrap();
                p.principals = vec![id(principal::Identifier::FilterState(Default::default()))];
            }),
            format!("{at}.rules.policies[\"p\"].principals[0]"),
        ),
        (
            http_with(|r| {
                let p = r.rules.as_mut().unwrap().policies.get_mut("p").unwrap();
                p.permissions = vec![perm(permission::Rule::RequestedServerName(exact("x")))];
            }),
            format!("{at}.rules.policies[\"p\"].permissions[0]"),
        ),
        (
            http_with(|r| {
                let p = r.rules.as_mut().unwrap().policies.get_mut("p").unwrap();
                p.principals.clear();
            }),
            format!("{at}.rules.policies[\"p\"]"),
        ),
        (
            // After the router, it would never run.
            vec![hcm_chain(
                80,
                vec![router(), http_rbac(HttpRbac::default())],
            )],
            "filter_chains[0].filters[0].typed_config.http_filters[1]".into(),
        ),
        (
            // Connection-level RBAC in front of an HTTP connection manager.
            vec![{
                let mut c = hcm_chain(80, vec![router()]);
                c.filters.insert(0, network_rbac(NetworkRbac::default()));
                c
            }],
            "filter_chains[0].filters[0]".into(),
        ),
    ];
    for (chains, field) in cases {
        let err = listener(TrafficDirection::Inbound, chains).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
    // Outbound, the client is the local app: nothing to authorize it as.
    let outbound = listener(
        TrafficDirection::Outbound,
        vec![chain(
            80,
            vec![network_rbac(NetworkRbac::default()), tcp_proxy()],
        )],
    );
    assert_eq!(outbound.unwrap_err().field, "filter_chains");
}

/// A route that would change the RBAC filter's rules for its requests is refused.
#[test]
fn a_per_route_rbac_override_is_refused() {
    let mut rc = xr::RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![xr::VirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            routes: vec![xr::Route {
                r#match: Some(xr::RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(xr::RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(RouteTable::try_from(&rc).is_ok());
    rc.virtual_hosts[0].routes[0]
        .typed_per_filter_config
        .insert(
            "envoy.filters.http.rbac".into(),
            Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
                    .into(),
                value: vec![],
            },
        );
    assert_eq!(
        RouteTable::try_from(&rc).unwrap_err().field,
        "virtual_hosts[0].routes[0].typed_per_filter_config"
    );
}
