use weft_proto::xds::config::core::v3::HeaderValueOption;

use super::*;

type Edit = fn(&mut xr::RouteConfiguration);

fn route_config(edit: impl FnOnce(&mut xr::RouteConfiguration)) -> Result<RouteTable, Invalid> {
    let mut rc = xr::RouteConfiguration {
        name: "rc".into(),
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
    edit(&mut rc);
    RouteTable::try_from(&rc)
}

fn first_route(rc: &mut xr::RouteConfiguration) -> &mut xr::Route {
    &mut rc.virtual_hosts[0].routes[0]
}

fn first_action(rc: &mut xr::RouteConfiguration) -> &mut xr::RouteAction {
    match first_route(rc).action.as_mut() {
        Some(route::Action::Route(a)) => a,
        _ => unreachable!("built with a route action"),
    }
}

#[test]
fn fields_weft_proxy_would_silently_not_apply_are_refused_by_name() {
    assert!(route_config(|_| {}).is_ok());
    let cases: [(&str, Edit); 8] = [
        (
            "virtual_hosts[0].routes[0].route.path_rewrite_policy",
            |rc| first_action(rc).path_rewrite_policy = Some(Default::default()),
        ),
        (
            "virtual_hosts[0].routes[0].route.request_mirror_policies[0].cluster_header",
            |rc| {
                first_action(rc)
                    .request_mirror_policies
                    .push(route_action::RequestMirrorPolicy {
                        cluster_header: "x-mirror-to".into(),
                        ..Default::default()
                    })
            },
        ),
        ("virtual_hosts[0].request_headers_to_add", |rc| {
            rc.virtual_hosts[0]
                .request_headers_to_add
                .push(HeaderValueOption::default())
        }),
        ("virtual_hosts[0].routes[0].match.runtime_fraction", |rc| {
            first_route(rc).r#match.as_mut().unwrap().runtime_fraction = Some(Default::default())
        }),
        ("virtual_hosts[0].require_tls", |rc| {
            rc.virtual_hosts[0].require_tls = 1
        }),
        ("response_headers_to_add", |rc| {
            rc.response_headers_to_add
                .push(HeaderValueOption::default())
        }),
        ("virtual_hosts[0].routes[0].route.metadata_match", |rc| {
            first_action(rc).metadata_match = Some(Default::default())
        }),
        ("virtual_hosts[0].routes[0].match.headers[0].name", |rc| {
            first_route(rc)
                .r#match
                .as_mut()
                .unwrap()
                .headers
                .push(xr::HeaderMatcher {
                    name: ":authority".into(),
                    ..Default::default()
                })
        }),
    ];
    for (field, edit) in cases {
        let err = route_config(edit).expect_err(field);
        assert_eq!(err.field, field);
    }
}

fn header(key: &str, value: &str, action: i32) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(weft_proto::xds::config::core::v3::HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: action,
        ..Default::default()
    }
}

#[test]
fn route_header_edits_are_parsed_once_and_unsafe_ones_refused() {
    let rt = route_config(|rc| {
        let r = first_route(rc);
        r.request_headers_to_add.push(header("X-Canary", "yes", 2));
        r.request_headers_to_add.push(header("x-pct", "100%%", 0));
        r.request_headers_to_remove.push("X-Debug".into());
        r.response_headers_to_add
            .push(header("x-served-by", "weft", 1));
    })
    .unwrap();
    let edits = rt.virtual_hosts[0].routes[0].edits.clone().expect("edits");
    let put = |e: &Edits| -> Vec<(String, String, Append)> {
        e.put
            .iter()
            .map(|p| {
                (
                    p.name.to_string(),
                    p.value.to_str().unwrap().to_string(),
                    p.append,
                )
            })
            .collect()
    };
    assert_eq!(
        put(&edits.request),
        [
            (
                "x-canary".into(),
                "yes".into(),
                Append::OverwriteIfExistsOrAdd
            ),
            ("x-pct".into(), "100%".into(), Append::AppendIfExistsOrAdd),
        ]
    );
    assert_eq!(edits.request.remove, ["x-debug"]);
    assert_eq!(
        put(&edits.response),
        [("x-served-by".into(), "weft".into(), Append::AddIfAbsent)]
    );
    // Without edits a route carries none (and the fast path keeps it).
    assert!(
        route_config(|_| {}).unwrap().virtual_hosts[0].routes[0]
            .edits
            .is_none()
    );

    let cases: [(&str, Edit); 4] = [
        (
            "virtual_hosts[0].routes[0].request_headers_to_add[0]",
            |rc| {
                first_route(rc)
                    .request_headers_to_add
                    .push(header(":path", "/x", 0))
            },
        ),
        (
            "virtual_hosts[0].routes[0].request_headers_to_add[0].header.value",
            |rc| {
                first_route(rc).request_headers_to_add.push(header(
                    "x-peer",
                    "%DOWNSTREAM_REMOTE_ADDRESS%",
                    0,
                ))
            },
        ),
        (
            "virtual_hosts[0].routes[0].request_headers_to_remove[0]",
            |rc| {
                first_route(rc)
                    .request_headers_to_remove
                    .push("Host".into())
            },
        ),
        (
            "virtual_hosts[0].routes[0].response_headers_to_add[0].header",
            |rc| {
                first_route(rc)
                    .response_headers_to_add
                    .push(HeaderValueOption::default())
            },
        ),
    ];
    for (field, edit) in cases {
        let err = route_config(edit).expect_err(field);
        assert!(err.field.starts_with(field), "{field}: {err:?}");
    }
}

#[test]
fn a_weighted_clusters_header_edits_come_before_its_routes() {
    fn weighted(rc: &mut xr::RouteConfiguration) {
        let r = first_route(rc);
        r.request_headers_to_add.push(header("x-route", "r", 2));
        r.request_headers_to_remove.push("x-b".into());
        let b = xr::weighted_cluster::ClusterWeight {
            name: "b".into(),
            weight: Some(weft_proto::google::protobuf::UInt32Value { value: 1 }),
            request_headers_to_add: vec![header("x-b", "1", 2), header("x-backend", "b", 2)],
            response_headers_to_add: vec![header("x-served-by", "b", 2)],
            ..Default::default()
        };
        let a = xr::weighted_cluster::ClusterWeight {
            name: "a".into(),
            weight: Some(weft_proto::google::protobuf::UInt32Value { value: 1 }),
            ..Default::default()
        };
        first_action(rc).cluster_specifier = Some(
            route_action::ClusterSpecifier::WeightedClusters(xr::WeightedCluster {
                clusters: vec![a, b],
                ..Default::default()
            }),
        );
    }
    let rt = route_config(weighted).unwrap();
    let route = &rt.virtual_hosts[0].routes[0];
    let (a, b) = (&route.clusters[0], &route.clusters[1]);
    // No edits of its own: the route's, shared.
    assert!(Arc::ptr_eq(
        a.edits.as_ref().unwrap(),
        route.edits.as_ref().unwrap()
    ));
    let mut h = http::HeaderMap::new();
    b.edits.as_ref().unwrap().request.apply(&mut h);
    // The route removes `x-b` after the cluster put it, as Envoy orders them.
    let shown: Vec<(&str, &str)> = h
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(shown, [("x-backend", "b"), ("x-route", "r")]);
    let mut h = http::HeaderMap::new();
    b.edits.as_ref().unwrap().response.apply(&mut h);
    assert_eq!(h["x-served-by"], "b");

    let bad = |rc: &mut xr::RouteConfiguration| {
        weighted(rc);
        if let Some(route_action::ClusterSpecifier::WeightedClusters(w)) =
            &mut first_action(rc).cluster_specifier
        {
            w.clusters[1].host_rewrite_specifier = Some(
                xr::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(
                    "x".into(),
                ),
            );
        }
    };
    let err = route_config(bad).unwrap_err();
    assert_eq!(
        err.field,
        "virtual_hosts[0].routes[0].route.weighted_clusters.clusters[1].host_rewrite_specifier"
    );
}

#[test]
fn direct_responses_and_the_cluster_not_found_code_are_read_and_bad_ones_refused() {
    use weft_proto::xds::config::core::v3::{DataSource, data_source::Specifier};
    let direct = |status: u32, body: Option<Specifier>| {
        move |rc: &mut xr::RouteConfiguration| {
            first_route(rc).action =
                Some(route::Action::DirectResponse(xr::DirectResponseAction {
                    status,
                    body: body.clone().map(|s| DataSource {
                        specifier: Some(s),
                        ..Default::default()
                    }),
                    body_format: None,
                }));
        }
    };
    let rt = route_config(direct(500, Some(Specifier::InlineString("no".into())))).unwrap();
    let want = DirectResponse {
        status: http::StatusCode::INTERNAL_SERVER_ERROR,
        body: bytes::Bytes::from_static(b"no"),
    };
    assert_eq!(rt.virtual_hosts[0].routes[0].direct, Some(want));
    assert!(rt.virtual_hosts[0].routes[0].clusters.is_empty());
    let plain = route_config(direct(204, None)).unwrap();
    assert!(
        plain.virtual_hosts[0].routes[0]
            .direct
            .as_ref()
            .unwrap()
            .body
            .is_empty()
    );
    for (status, body, field) in [
        (99, None, "status"),
        (101, None, "status"),
        (600, None, "status"),
        (200, Some(Specifier::Filename("/etc/passwd".into())), "body"),
    ] {
        let err = route_config(direct(status, body)).unwrap_err();
        assert_eq!(
            err.field,
            format!("virtual_hosts[0].routes[0].direct_response.{field}")
        );
    }

    let code = |c: i32| {
        move |rc: &mut xr::RouteConfiguration| {
            first_action(rc).cluster_not_found_response_code = c;
        }
    };
    let statuses: Vec<u16> = [0, 1, 2]
        .map(|c| {
            route_config(code(c)).unwrap().virtual_hosts[0].routes[0]
                .cluster_not_found
                .as_u16()
        })
        .into();
    assert_eq!(statuses, [503, 404, 500]);
    let err = route_config(code(7)).unwrap_err();
    assert_eq!(
        err.field,
        "virtual_hosts[0].routes[0].route.cluster_not_found_response_code"
    );
}

fn redirect_route(rc: &mut xr::RouteConfiguration, r: xr::RedirectAction) {
    first_route(rc).action = Some(route::Action::Redirect(r));
}

#[test]
fn rewrites_and_redirects_are_read_and_bad_ones_refused_by_name() {
    use crate::config::rewrite::{PathRewrite, Redirect};
    use weft_proto::xds::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
    fn regex_rewrite(pattern: &str, substitution: &str) -> Option<RegexMatchAndSubstitute> {
        Some(RegexMatchAndSubstitute {
            pattern: Some(RegexMatcher {
                regex: pattern.into(),
                ..Default::default()
            }),
            substitution: substitution.into(),
        })
    }
    let rt = route_config(|rc| {
        first_action(rc).prefix_rewrite = "/v2/".into();
        first_action(rc).host_rewrite_specifier = Some(
            route_action::HostRewriteSpecifier::HostRewriteLiteral("api.example:8080".into()),
        );
    })
    .unwrap();
    let rw = rt.virtual_hosts[0].routes[0].rewrite.clone().unwrap();
    assert_eq!(rw.path.as_ref().unwrap().apply("/x?y"), "/v2/x?y");
    assert_eq!(rw.host.as_ref().unwrap(), "api.example:8080");
    let rt = route_config(|rc| {
        first_action(rc).regex_rewrite = regex_rewrite("^/svc/([^/]+)(/.*)$", "\\2/instance/\\1$");
    })
    .unwrap();
    let rw = rt.virtual_hosts[0].routes[0].rewrite.clone().unwrap();
    assert_eq!(
        rw.path.as_ref().unwrap().apply("/svc/a/b?q"),
        "/b/instance/a$?q"
    );

    let rt = route_config(|rc| {
        redirect_route(
            rc,
            xr::RedirectAction {
                scheme_rewrite_specifier: Some(
                    xr::redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true),
                ),
                host_redirect: "[::1]".into(),
                port_redirect: 8443,
                path_rewrite_specifier: Some(
                    xr::redirect_action::PathRewriteSpecifier::PathRedirect("/new".into()),
                ),
                response_code: 4,
                strip_query: true,
            },
        )
    })
    .unwrap();
    let route = &rt.virtual_hosts[0].routes[0];
    assert!(route.clusters.is_empty());
    assert_eq!(
        route.redirect.as_deref(),
        Some(&Redirect {
            scheme: Some("https".into()),
            host: Some("::1".into()),
            port: Some(8443),
            path: Some(PathRewrite::Full("/new".into())),
            strip_query: true,
            status: http::StatusCode::PERMANENT_REDIRECT,
        })
    );

    let cases: [(&str, Edit); 8] = [
        ("virtual_hosts[0].routes[0].route.prefix_rewrite", |rc| {
            first_route(rc).r#match.as_mut().unwrap().path_specifier =
                Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
                    regex: "/a.*".into(),
                    ..Default::default()
                }));
            first_action(rc).prefix_rewrite = "/b".into();
        }),
        ("virtual_hosts[0].routes[0].route.regex_rewrite", |rc| {
            first_action(rc).prefix_rewrite = "/b".into();
            first_action(rc).regex_rewrite = regex_rewrite("^/.*$", "/c");
        }),
        (
            "virtual_hosts[0].routes[0].route.regex_rewrite.pattern.regex",
            |rc| first_action(rc).regex_rewrite = regex_rewrite("([", "/c"),
        ),
        (
            "virtual_hosts[0].routes[0].route.regex_rewrite.substitution",
            |rc| first_action(rc).regex_rewrite = regex_rewrite("^/.*$", "\\x"),
        ),
        (
            "virtual_hosts[0].routes[0].route.host_rewrite_literal",
            |rc| {
                first_action(rc).host_rewrite_specifier = Some(
                    route_action::HostRewriteSpecifier::HostRewriteLiteral("a b".into()),
                )
            },
        ),
        ("virtual_hosts[0].routes[0].redirect.response_code", |rc| {
            redirect_route(
                rc,
                xr::RedirectAction {
                    response_code: 9,
                    ..Default::default()
                },
            )
        }),
        ("virtual_hosts[0].routes[0].redirect.port_redirect", |rc| {
            redirect_route(
                rc,
                xr::RedirectAction {
                    port_redirect: 70_000,
                    ..Default::default()
                },
            )
        }),
        ("virtual_hosts[0].routes[0].redirect.host_redirect", |rc| {
            redirect_route(
                rc,
                xr::RedirectAction {
                    host_redirect: "evil.example:80/x".into(),
                    ..Default::default()
                },
            )
        }),
    ];
    for (field, edit) in cases {
        let err = route_config(edit).expect_err(field);
        assert_eq!(err.field, field, "{err:?}");
    }
}

#[test]
fn mirror_policies_read_their_share_and_refuse_what_they_cannot_do() {
    use weft_proto::xds::config::core::v3::RuntimeFractionalPercent;
    use weft_proto::xds::r#type::v3::FractionalPercent;
    let rt = route_config(|rc| {
        first_action(rc).request_mirror_policies = vec![
            route_action::RequestMirrorPolicy {
                cluster: "quarter".into(),
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(FractionalPercent {
                        numerator: 25,
                        denominator: 0, // HUNDRED
                    }),
                    runtime_key: String::new(),
                }),
                ..Default::default()
            },
            route_action::RequestMirrorPolicy {
                cluster: "all".into(),
                ..Default::default()
            },
        ]
    })
    .unwrap();
    let got: Vec<(String, u32)> = rt.virtual_hosts[0].routes[0]
        .mirrors
        .iter()
        .map(|m| (m.cluster.clone(), m.per_million))
        .collect();
    assert_eq!(
        got,
        [
            ("quarter".to_string(), 250_000),
            ("all".to_string(), 1_000_000)
        ]
    );
    let err = route_config(|rc| {
        first_action(rc)
            .request_mirror_policies
            .push(Default::default())
    })
    .expect_err("no cluster");
    assert_eq!(
        err.field,
        "virtual_hosts[0].routes[0].route.request_mirror_policies[0].cluster"
    );
}

#[test]
fn paths_matched_by_segment_as_gateway_servers_send_them() {
    let rt = route_config(|rc| {
        first_route(rc).r#match.as_mut().unwrap().path_specifier = Some(
            route_match::PathSpecifier::PathSeparatedPrefix("/api".into()),
        )
    })
    .unwrap();
    assert_eq!(
        rt.virtual_hosts[0].routes[0].path,
        PathMatch::Segments("/api".into())
    );
}

fn eds_cluster(source: config_source::ConfigSourceSpecifier, service: &str) -> xc::Cluster {
    xc::Cluster {
        name: "outbound|80||a.shop.svc.cluster.local".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(weft_proto::xds::config::core::v3::ConfigSource {
                config_source_specifier: Some(source),
                ..Default::default()
            }),
            service_name: service.into(),
        }),
        ..Default::default()
    }
}

mod mtls {
    use weft_proto::google::protobuf::{BoolValue, Struct, Value};
    use weft_proto::xds::config::core::v3::TransportSocket;
    use weft_proto::xds::config::core::v3::transport_socket::ConfigType;
    use weft_proto::xds::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
        SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext,
        common_tls_context, subject_alt_name_matcher, tls_parameters::TlsProtocol,
    };

    use super::*;

    fn secret(name: &str) -> SdsSecretConfig {
        SdsSecretConfig {
            name: name.into(),
            ..Default::default()
        }
    }

    fn uri(id: &str) -> SubjectAltNameMatcher {
        SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(id.into())),
                ignore_case: false,
            }),
            ..Default::default()
        }
    }

    /// Istio's shape: the workload certificate and roots as SDS secrets, peers by URI SAN.
    fn common(sans: &[SubjectAltNameMatcher]) -> CommonTlsContext {
        CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![secret("default")],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: sans.to_vec(),
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(secret("ROOTCA")),
                        ..Default::default()
                    },
                ),
            ),
            alpn_protocols: vec!["istio".into()],
            ..Default::default()
        }
    }

    fn socket(type_name: &str, value: Vec<u8>) -> TransportSocket {
        TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(ConfigType::TypedConfig(Any {
                type_url: format!("type.googleapis.com/{type_name}"),
                value,
            })),
        }
    }

    fn upstream(c: CommonTlsContext) -> TransportSocket {
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(c),
            sni: "outbound_.80_._.a.shop.svc.cluster.local".into(),
            ..Default::default()
        };
        socket(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            ctx.encode_to_vec(),
        )
    }

    fn downstream(c: CommonTlsContext, require: bool) -> TransportSocket {
        let ctx = DownstreamTlsContext {
            common_tls_context: Some(c),
            require_client_certificate: Some(BoolValue { value: require }),
            ..Default::default()
        };
        socket(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            ctx.encode_to_vec(),
        )
    }

    fn raw() -> TransportSocket {
        TransportSocket {
            name: "envoy.transport_sockets.raw_buffer".into(),
            config_type: None,
        }
    }

    fn matching(
        name: &str,
        mode: Option<&str>,
        ts: TransportSocket,
    ) -> cluster::TransportSocketMatch {
        cluster::TransportSocketMatch {
            name: name.into(),
            r#match: mode.map(|m| Struct {
                fields: [(
                    "tlsMode".to_string(),
                    Value {
                        kind: Some(Kind::StringValue(m.into())),
                    },
                )]
                .into_iter()
                .collect(),
            }),
            transport_socket: Some(ts),
        }
    }

    fn cluster_with(matches: Vec<cluster::TransportSocketMatch>) -> xc::Cluster {
        xc::Cluster {
            transport_socket_matches: matches,
            ..eds_cluster(
                config_source::ConfigSourceSpecifier::Ads(Default::default()),
                "",
            )
        }
    }

    /// Istio's auto-mTLS shape is read: endpoints marked `tlsMode` get mTLS with the listed
    /// SPIFFE IDs, the rest plaintext.
    #[test]
    fn per_endpoint_mtls_is_read_from_transport_socket_matches() {
        let id = "spiffe://cluster.local/ns/shop/sa/a";
        let c = cluster_with(vec![
            matching("tlsMode-weft", Some("weft"), upstream(common(&[uri(id)]))),
            matching("tlsMode-disabled", None, raw()),
        ]);
        let t = Cluster::try_from(&c).unwrap().transport;
        assert_eq!(
            t.matches,
            [
                TransportMatch {
                    name: "tlsMode-weft".into(),
                    criteria: vec![("tlsMode".into(), "weft".into())],
                    security: Security::Mtls {
                        peer_ids: Arc::from(vec![id.to_string()]),
                    },
                },
                TransportMatch {
                    name: "tlsMode-disabled".into(),
                    criteria: vec![],
                    security: Security::Plaintext,
                },
            ]
        );
        let whole = xc::Cluster {
            transport_socket: Some(upstream(common(&[]))),
            ..cluster_with(vec![])
        };
        assert_eq!(
            Cluster::try_from(&whole).unwrap().transport.default,
            Security::Mtls {
                peer_ids: Arc::from(Vec::<String>::new())
            }
        );
    }

    /// TLS weft-proxy cannot honour is refused by field, never carried as plaintext.
    #[test]
    fn upstream_tls_weft_cannot_honour_is_refused_by_name() {
        let at = "transport_socket_matches[0].transport_socket";
        let ctx = format!("{at}.typed_config.common_tls_context");
        let with = |edit: fn(&mut CommonTlsContext)| {
            let mut c = common(&[]);
            edit(&mut c);
            upstream(c)
        };
        let cases: Vec<(TransportSocket, String)> = vec![
            (
                TransportSocket {
                    name: "envoy.transport_sockets.tls".into(),
                    config_type: None,
                },
                format!("{at}.typed_config"),
            ),
            (
                TransportSocket {
                    name: "envoy.transport_sockets.alts".into(),
                    config_type: None,
                },
                format!("{at}.name"),
            ),
            (
                with(|c| c.tls_certificates.push(TlsCertificate::default())),
                ctx.clone(),
            ),
            (
                with(|c| c.tls_certificate_sds_secret_configs = vec![secret("file-cert")]),
                format!("{ctx}.tls_certificate_sds_secret_configs"),
            ),
            (
                with(|c| {
                    c.tls_params = Some(TlsParameters {
                        tls_maximum_protocol_version: TlsProtocol::TlSv12 as i32,
                        ..Default::default()
                    })
                }),
                format!("{ctx}.tls_params"),
            ),
            (
                upstream(common(&[SubjectAltNameMatcher {
                    san_type: subject_alt_name_matcher::SanType::Dns as i32,
                    ..uri("a.example")
                }])),
                format!(
                    "{ctx}.combined_validation_context.default_validation_context.match_typed_subject_alt_names[0]"
                ),
            ),
            (
                with(|c| {
                    c.validation_context_type = Some(
                        common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                            secret("other-roots"),
                        ),
                    )
                }),
                format!("{ctx}.validation_context_sds_secret_config"),
            ),
        ];
        for (ts, field) in cases {
            let c = cluster_with(vec![matching("m", Some("weft"), ts)]);
            assert_eq!(Cluster::try_from(&c).unwrap_err().field, field);
        }
    }

    fn port_chain(port: u32, ts: Option<TransportSocket>) -> xl::FilterChain {
        let tls = ts.as_ref().is_some_and(|t| t.name.ends_with(".tls"));
        xl::FilterChain {
            filter_chain_match: Some(xl::FilterChainMatch {
                destination_port: Some(weft_proto::google::protobuf::UInt32Value { value: port }),
                transport_protocol: if tls { "tls" } else { "raw_buffer" }.into(),
                ..Default::default()
            }),
            transport_socket: ts,
            ..tcp_chain()
        }
    }

    fn inbound(chains: Vec<xl::FilterChain>) -> Result<Listener, Invalid> {
        Listener::try_from(&xl::Listener {
            name: "virtualInbound".into(),
            filter_chains: chains,
            traffic_direction: TrafficDirection::Inbound as i32,
            ..Default::default()
        })
    }

    /// An mTLS chain beside a plaintext one is PERMISSIVE; alone, STRICT.
    #[test]
    fn inbound_ports_are_permissive_or_strict_as_their_chains_say() {
        let mtls = || Some(downstream(common(&[]), true));
        let l = inbound(vec![
            port_chain(8080, mtls()),
            port_chain(8080, None),
            port_chain(9090, mtls()),
            port_chain(7070, None),
        ])
        .unwrap();
        let modes: Vec<(u16, InboundTls)> = l.by_port.iter().map(|c| (c.port, c.tls)).collect();
        assert_eq!(
            modes,
            [
                (8080, InboundTls::Permissive),
                (9090, InboundTls::Strict),
                (7070, InboundTls::Off)
            ]
        );
        let refused = |chains| inbound(chains).unwrap_err().field;
        assert_eq!(
            refused(vec![port_chain(80, Some(downstream(common(&[]), false)))]),
            "filter_chains[0].transport_socket.typed_config.require_client_certificate"
        );
        let mut unmatched = port_chain(80, mtls());
        unmatched
            .filter_chain_match
            .as_mut()
            .unwrap()
            .transport_protocol = String::new();
        assert_eq!(
            refused(vec![unmatched]),
            "filter_chains[0].filter_chain_match.transport_protocol"
        );
        assert_eq!(
            refused(vec![port_chain(
                80,
                Some(downstream(common(&[uri("spiffe://td/ns/a/sa/b")]), true))
            )]),
            "filter_chains[0].transport_socket.typed_config.common_tls_context.combined_validation_context"
        );
        let mut other = port_chain(80, None);
        other.filters = vec![hcm_filter()];
        assert_eq!(
            refused(vec![port_chain(80, mtls()), other]),
            "filter_chains"
        );
        let default_chain = xl::FilterChain {
            filter_chain_match: Some(xl::FilterChainMatch {
                transport_protocol: "tls".into(),
                ..Default::default()
            }),
            transport_socket: mtls(),
            ..tcp_chain()
        };
        // The inbound listener's default chains serve the ports no chain names, mTLS and all;
        // elsewhere mTLS is refused.
        let l = inbound(vec![port_chain(80, mtls()), default_chain.clone()]).unwrap();
        let other = l.other_ports.as_ref().unwrap();
        assert_eq!((other.port, other.tls), (0, InboundTls::Strict));
        assert_eq!(l.chain_for_port(80).unwrap().port, 80);
        assert_eq!(l.chain_for_port(81).unwrap().port, 0);
        let mut plain_default = tcp_chain();
        plain_default.filter_chain_match = Some(xl::FilterChainMatch {
            transport_protocol: "raw_buffer".into(),
            ..Default::default()
        });
        let l = inbound(vec![default_chain.clone(), plain_default]).unwrap();
        assert_eq!(l.other_ports.unwrap().tls, InboundTls::Permissive);
        let outbound = Listener::try_from(&xl::Listener {
            name: "out".into(),
            filter_chains: vec![default_chain],
            ..Default::default()
        });
        assert_eq!(
            outbound.unwrap_err().field,
            "filter_chains[0].filter_chain_match.destination_port"
        );
    }

    /// Istio's inbound passthrough cluster: each connection goes where it was headed.
    #[test]
    fn an_original_dst_cluster_has_no_endpoints_of_its_own() {
        let c = Cluster::try_from(&xc::Cluster {
            name: "InboundPassthroughCluster".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            ..Default::default()
        })
        .unwrap();
        assert!(c.original_dst);
        assert_eq!((c.eds, c.static_endpoints, c.dns), (None, None, None));
    }

    fn hcm_filter() -> xl::Filter {
        let hcm = HttpConnectionManager {
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(
                weft_proto::xds::extensions::filters::network::http_connection_manager::v3::Rds {
                    config_source: Some(weft_proto::xds::config::core::v3::ConfigSource {
                        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                            Default::default(),
                        )),
                        ..Default::default()
                    }),
                    route_config_name: "r".into(),
                },
            )),
            ..Default::default()
        };
        xl::Filter {
            name: "hcm".into(),
            config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
                type_url: format!("type.googleapis.com/{HCM}"),
                value: hcm.encode_to_vec(),
            })),
        }
    }
}

#[test]
fn clusters_as_other_control_planes_send_them() {
    use config_source::ConfigSourceSpecifier as Source;
    let ads = || Source::Ads(Default::default());
    // EDS over ADS or `self`, by the cluster's name or by `service_name`.
    let c = Cluster::try_from(&eds_cluster(ads(), "")).unwrap();
    assert_eq!(
        c.eds.as_deref(),
        Some("outbound|80||a.shop.svc.cluster.local")
    );
    let c = Cluster::try_from(&eds_cluster(Source::Self_(Default::default()), "a-eds")).unwrap();
    assert_eq!(c.eds.as_deref(), Some("a-eds"));
    // A gRPC api_config_source (go-control-plane's example) is fetched over the ADS stream;
    // REST and files are refused.
    use weft_proto::xds::config::core::v3::{ApiConfigSource, api_config_source::ApiType};
    let api = |api_type: ApiType| {
        Source::ApiConfigSource(ApiConfigSource {
            api_type: api_type as i32,
            ..Default::default()
        })
    };
    for t in [ApiType::Grpc, ApiType::DeltaGrpc, ApiType::AggregatedGrpc] {
        let c = Cluster::try_from(&eds_cluster(api(t), "")).unwrap();
        assert_eq!(
            c.eds.as_deref(),
            Some("outbound|80||a.shop.svc.cluster.local")
        );
    }
    for source in [
        Source::PathConfigSource(Default::default()),
        api(ApiType::Rest),
    ] {
        let err = Cluster::try_from(&eds_cluster(source, "")).unwrap_err();
        assert_eq!(err.field, "eds_cluster_config.eds_config");
    }
    // The deprecated HTTP/2 marker still makes the upstream HTTP/2.
    #[allow(deprecated)]
    let h2 = xc::Cluster {
        http2_protocol_options: Some(Default::default()),
        ..eds_cluster(ads(), "")
    };
    assert_eq!(
        Cluster::try_from(&h2).unwrap().upstream_http,
        UpstreamHttp::Http2
    );
    // `auto_config` leaves the version to ALPN.
    use http_protocol_options::UpstreamProtocolOptions as Upstream;
    let auto = HttpProtocolOptions {
        upstream_protocol_options: Some(Upstream::AutoConfig(Default::default())),
        ..Default::default()
    };
    let negotiated = xc::Cluster {
        typed_extension_protocol_options: [(
            HTTP_OPTIONS.to_string(),
            Any {
                type_url: format!("type.googleapis.com/{HTTP_OPTIONS}"),
                value: auto.encode_to_vec(),
            },
        )]
        .into(),
        ..eds_cluster(ads(), "")
    };
    assert_eq!(
        Cluster::try_from(&negotiated).unwrap().upstream_http,
        UpstreamHttp::Negotiated
    );
    // A static cluster without endpoints (Istio's BlackHoleCluster) has none.
    let blackhole = xc::Cluster {
        name: "BlackHoleCluster".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        ..Default::default()
    };
    let c = Cluster::try_from(&blackhole).unwrap();
    assert_eq!(
        (c.eds, c.static_endpoints),
        (None, Some(Assignment::new(vec![])))
    );
}

/// A `tcp_proxy` split over weighted clusters (a TCPRoute's) is read with its weights; a
/// weight of 0, a nameless cluster or an empty list is refused, naming the field.
#[test]
fn a_tcp_proxy_takes_weighted_clusters() {
    use weft_proto::xds::extensions::filters::network::tcp_proxy::v3::tcp_proxy::weighted_cluster::ClusterWeight;
    let listener = |clusters: &[(&str, u32)]| {
        let weighted = tcp_proxy::WeightedCluster {
            clusters: clusters
                .iter()
                .map(|(name, weight)| ClusterWeight {
                    name: (*name).into(),
                    weight: *weight,
                    ..Default::default()
                })
                .collect(),
        };
        let proxy = TcpProxy {
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(weighted)),
            ..Default::default()
        };
        xl::Listener {
            name: "l".into(),
            filter_chains: vec![xl::FilterChain {
                filters: vec![xl::Filter {
                    name: "tcp".into(),
                    config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
                        type_url: format!("type.googleapis.com/{TCP_PROXY}"),
                        value: proxy.encode_to_vec(),
                    })),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    };
    let l = Listener::try_from(&listener(&[("v1", 90), ("v2", 10)])).unwrap();
    let Some(Handler::Tcp { clusters, .. }) = l.handler else {
        panic!("{:?}", l.handler);
    };
    let got: Vec<(&str, u32)> = clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(got, [("v1", 90), ("v2", 10)]);
    let refused = |clusters| Listener::try_from(&listener(clusters)).unwrap_err().field;
    let f = "filter_chains[0].filters[0].typed_config.weighted_clusters.clusters";
    assert_eq!(refused(&[("v1", 1), ("v2", 0)]), format!("{f}[1]"));
    assert_eq!(refused(&[("", 1)]), format!("{f}[0]"));
    assert_eq!(refused(&[]), f);
}

/// A listener laid out for Envoy's protocol sniffing: per port (or by default) a chain matched
/// on sniffed HTTP and a plain one, which serves what is not HTTP.
#[test]
fn a_sniffed_http_chain_and_its_fallback_are_read_per_port_and_other_matches_refused() {
    use weft_proto::google::protobuf::UInt32Value;
    use weft_proto::xds::config::core::v3::{AggregatedConfigSource, ConfigSource};
    use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::Rds;
    let filter = |type_name: &str, value: Vec<u8>| xl::Filter {
        name: type_name.into(),
        config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value,
        })),
    };
    let tcp = |idle: u64| {
        let proxy = TcpProxy {
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("c".into())),
            idle_timeout: Some(weft_proto::google::protobuf::Duration {
                seconds: i64::try_from(idle).unwrap(),
                nanos: 0,
            }),
            ..Default::default()
        };
        filter(TCP_PROXY, proxy.encode_to_vec())
    };
    let hcm = || {
        let rds = Rds {
            config_source: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                ..Default::default()
            }),
            route_config_name: "r".into(),
        };
        let hcm = HttpConnectionManager {
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(rds)),
            ..Default::default()
        };
        filter(HCM, hcm.encode_to_vec())
    };
    let chain = |port: Option<u32>, protocols: &[&str], f: xl::Filter| xl::FilterChain {
        filter_chain_match: Some(xl::FilterChainMatch {
            destination_port: port.map(|value| UInt32Value { value }),
            application_protocols: protocols.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }),
        filters: vec![f],
        ..Default::default()
    };
    let listener = |chains| xl::Listener {
        name: "l".into(),
        filter_chains: chains,
        ..Default::default()
    };
    let http = Handler::Http {
        route_config: "r".into(),
        normalize_path: false,
        authz: Default::default(),
    };
    let tcp_handler = |secs| Handler::Tcp {
        clusters: vec![WeightedCluster::plain("c".into(), 1)],
        idle_timeout: Some(Duration::from_secs(secs)),
        authz: Default::default(),
    };

    // The fallback may come first; what it matches, not where it is, decides.
    let l = Listener::try_from(&listener(vec![
        chain(None, &[], tcp(5)),
        chain(None, &weft_proto::names::SNIFFED_HTTP, hcm()),
    ]))
    .unwrap();
    assert_eq!(
        (l.handler, l.fallback),
        (Some(http.clone()), Some(tcp_handler(5)))
    );

    let l = Listener::try_from(&listener(vec![
        chain(Some(8080), &["http/1.1", "h2c"], hcm()),
        chain(Some(8080), &[], tcp(7)),
        chain(Some(8081), &[], tcp(9)),
    ]))
    .unwrap();
    let ports: Vec<_> = l
        .by_port
        .iter()
        .map(|c| (c.port, &c.handler, &c.fallback))
        .collect();
    assert_eq!(
        ports,
        [
            (8080, &http, &tcp_handler(7)),
            // A port without a fallback chain falls back to its app, decided here.
            (
                8081,
                &tcp_handler(9),
                &Handler::tcp_to(weft_proto::names::inbound_cluster(8081))
            )
        ]
    );
    // What a listener is comes from its fields, decided here: the inbound side says so in
    // `traffic_direction` (a name alone makes nothing inbound), and a captured listener
    // named for a Service port falls back to that port's cluster.
    assert!(!l.inbound && l.cluster.is_none());
    let inbound = Listener::try_from(&xl::Listener {
        name: "virtualInbound".into(),
        traffic_direction: TrafficDirection::Inbound as i32,
        ..listener(vec![chain(Some(8081), &[], tcp(9))])
    })
    .unwrap();
    assert!(inbound.inbound);
    let named_only = Listener::try_from(&xl::Listener {
        name: "inbound".into(),
        ..listener(vec![chain(Some(8081), &[], tcp(9))])
    })
    .unwrap();
    assert!(!named_only.inbound);
    let service = Listener::try_from(&xl::Listener {
        name: "web.shop.svc.cluster.local:80".into(),
        bind_to_port: Some(weft_proto::google::protobuf::BoolValue { value: false }),
        ..listener(vec![chain(None, &[], hcm())])
    })
    .unwrap();
    let own = "outbound|80||web.shop.svc.cluster.local";
    assert_eq!(service.cluster.as_deref(), Some(own));
    assert_eq!(service.fallback, Some(Handler::tcp_to(own.into())));

    let refused = |chains| Listener::try_from(&listener(chains)).unwrap_err().field;
    // Istio's own ALPN values are not something weft-proxy sniffs.
    assert_eq!(
        refused(vec![chain(None, &["istio-http/1.1"], hcm())]),
        "filter_chains[0].filter_chain_match.application_protocols"
    );
    assert_eq!(
        refused(vec![
            chain(Some(80), &["http/1.1"], hcm()),
            chain(Some(80), &["h2c"], hcm())
        ]),
        "filter_chains[1].filter_chain_match"
    );
    let mut by_transport = chain(None, &[], tcp(1));
    by_transport
        .filter_chain_match
        .as_mut()
        .unwrap()
        .transport_protocol = "tls".into();
    // Matched on TLS with no TLS socket: plaintext would be served as if it were mTLS.
    assert_eq!(
        refused(vec![by_transport]),
        "filter_chains[0].transport_socket"
    );
    let mut by_sni = chain(Some(80), &[], tcp(1));
    by_sni
        .filter_chain_match
        .as_mut()
        .unwrap()
        .server_names
        .push("a".into());
    assert_eq!(refused(vec![by_sni]), "filter_chains[0].filter_chain_match");
}

/// A filter chain of one `tcp_proxy` to cluster `c`.
fn tcp_chain() -> xl::FilterChain {
    xl::FilterChain {
        filters: vec![xl::Filter {
            name: "tcp".into(),
            config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
                type_url: format!("type.googleapis.com/{TCP_PROXY}"),
                value: TcpProxy {
                    cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("c".into())),
                    ..Default::default()
                }
                .encode_to_vec(),
            })),
        }],
        ..Default::default()
    }
}

/// STRICT_DNS and LOGICAL_DNS clusters name their hosts in the load assignment; a LOGICAL_DNS
/// one has exactly one, and a resolver weft-proxy would not use is refused by name.
#[test]
fn dns_clusters_name_their_hosts_in_the_load_assignment() {
    use weft_proto::xds::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};
    let host = |name: &str, port: u32| LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(
                    weft_proto::xds::config::core::v3::SocketAddress {
                        address: name.into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                        ..Default::default()
                    },
                )),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let dns = |t: cluster::DiscoveryType, hosts: Vec<LbEndpoint>| xc::Cluster {
        name: "ext".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(t as i32)),
        dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: "ext".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: hosts,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    use cluster::DiscoveryType::{LogicalDns, StrictDns};
    let c = Cluster::try_from(&dns(
        StrictDns,
        vec![host("db.example", 5432), host("10.0.0.1", 5432)],
    ))
    .unwrap();
    let t = c.dns.expect("DNS targets");
    assert_eq!((c.eds, c.static_endpoints), (None, None));
    let hosts: Vec<(&str, u16)> = t.hosts.iter().map(|h| (h.host.as_str(), h.port)).collect();
    assert_eq!(hosts, [("db.example", 5432), ("10.0.0.1", 5432)]);
    assert_eq!(
        (t.family, t.refresh, t.logical),
        (DnsFamily::V4Only, Duration::from_secs(5), false)
    );
    assert!(
        Cluster::try_from(&dns(LogicalDns, vec![host("a", 80)]))
            .unwrap()
            .dns
            .unwrap()
            .logical
    );
    // A STRICT_DNS cluster of no hosts is a cluster of no endpoints, as Envoy has it.
    let none = Cluster::try_from(&dns(StrictDns, vec![])).unwrap();
    assert!(none.dns.unwrap().hosts.is_empty());
    // (cluster, refused field)
    let custom = xc::Cluster {
        typed_dns_resolver_config: Some(Default::default()),
        ..dns(StrictDns, vec![host("a", 80)])
    };
    let cases = [
        (
            dns(LogicalDns, vec![host("a", 80), host("b", 80)]),
            "load_assignment",
        ),
        (custom, "typed_dns_resolver_config"),
        (
            xc::Cluster {
                load_assignment: None,
                ..dns(StrictDns, vec![])
            },
            "load_assignment",
        ),
    ];
    for (c, field) in cases {
        assert_eq!(Cluster::try_from(&c).unwrap_err().field, field);
    }
}

/// An HCM whose RDS comes from a gRPC `api_config_source` (go-control-plane's example)
/// takes its routes from the ADS stream; a REST one is refused, naming the field.
#[test]
fn rds_from_a_grpc_config_source_is_read_over_ads() {
    use weft_proto::xds::config::core::v3::{
        ApiConfigSource, ConfigSource, api_config_source::ApiType,
    };
    use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::Rds;
    let listener = |api_type: ApiType| {
        let rds = Rds {
            config_source: Some(ConfigSource {
                config_source_specifier: Some(
                    config_source::ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
                        api_type: api_type as i32,
                        ..Default::default()
                    }),
                ),
                ..Default::default()
            }),
            route_config_name: "local_route".into(),
        };
        let hcm = HttpConnectionManager {
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(rds)),
            ..Default::default()
        };
        xl::Listener {
            name: "l".into(),
            filter_chains: vec![xl::FilterChain {
                filters: vec![xl::Filter {
                    name: "hcm".into(),
                    config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
                        type_url: format!("type.googleapis.com/{HCM}"),
                        value: hcm.encode_to_vec(),
                    })),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    };
    let l = Listener::try_from(&listener(ApiType::Grpc)).unwrap();
    assert!(
        matches!(&l.handler, Some(Handler::Http { route_config, .. }) if route_config == "local_route"),
        "{:?}",
        l.handler
    );
    let err = Listener::try_from(&listener(ApiType::Rest)).unwrap_err();
    assert!(err.field.ends_with("rds.config_source"), "{}", err.field);
}

/// The listener's own detection wait and what follows it, as Envoy reads them: `0s` is no
/// limit, and `continue_on_listener_filters_timeout` unset (false) closes; a listener that
/// says nothing keeps the proxy's default.
#[test]
fn the_listener_filters_timeout_is_the_detection_wait() {
    let with = |timeout: Option<(i64, i32)>, carry_on: bool| {
        let l = xl::Listener {
            name: "l".into(),
            listener_filters_timeout: timeout
                .map(|(seconds, nanos)| weft_proto::google::protobuf::Duration { seconds, nanos }),
            continue_on_listener_filters_timeout: carry_on,
            filter_chains: vec![tcp_chain()],
            ..Default::default()
        };
        Listener::try_from(&l).unwrap().sniffing
    };
    let wait = |ms, close_on_timeout| {
        Some(Sniffing {
            timeout: Some(Duration::from_millis(ms)),
            close_on_timeout,
        })
    };
    // (listener_filters_timeout, continue_on_listener_filters_timeout, read as)
    let cases = [
        (None, false, None),
        (None, true, None),
        (Some((0, 100_000_000)), true, wait(100, false)),
        (Some((2, 500_000_000)), false, wait(2500, true)),
        (
            Some((0, 0)),
            true,
            Some(Sniffing {
                timeout: None,
                close_on_timeout: false,
            }),
        ),
    ];
    for (timeout, carry_on, want) in cases {
        assert_eq!(with(timeout, carry_on), want, "{timeout:?} {carry_on}");
    }
}

#[test]
fn inspecting_listener_filters_are_accepted_and_others_named() {
    let with = |name: &str, type_url: &str| xl::Listener {
        name: "l".into(),
        listener_filters: vec![xl::ListenerFilter {
            name: name.into(),
            config_type: Some(xl::listener_filter::ConfigType::TypedConfig(Any {
                type_url: type_url.into(),
                value: vec![],
            })),
            ..Default::default()
        }],
        filter_chains: vec![tcp_chain()],
        ..Default::default()
    };
    let tls = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
    let proxy_protocol =
        "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol";
    // A familiar name does not excuse another filter's config.
    assert!(
        Listener::try_from(&with(
            "envoy.filters.listener.tls_inspector",
            proxy_protocol
        ))
        .is_err()
    );
    assert!(Listener::try_from(&with("envoy.filters.listener.tls_inspector", tls)).is_ok());
    assert!(Listener::try_from(&with("anything", tls)).is_ok());
    let err = Listener::try_from(&with(
        "envoy.filters.listener.proxy_protocol",
        proxy_protocol,
    ))
    .unwrap_err();
    assert_eq!(err.field, "listener_filters[0]");
}

#[test]
fn endpoints_keep_their_priority_and_health() {
    use weft_proto::xds::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};
    let level = |priority: u32, port: u32, health: HealthStatus| LocalityLbEndpoints {
        priority,
        lb_endpoints: vec![LbEndpoint {
            health_status: health as i32,
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(
                        weft_proto::xds::config::core::v3::SocketAddress {
                            address: "127.0.0.1".into(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                            ..Default::default()
                        },
                    )),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    };
    let cla = ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: vec![
            level(1, 2, HealthStatus::Healthy),
            level(0, 1, HealthStatus::Unhealthy),
            level(0, 3, HealthStatus::Unknown),
        ],
        ..Default::default()
    };
    let got: Vec<(u16, u32, bool)> = load_assignment(&cla)
        .unwrap()
        .endpoints
        .iter()
        .map(|e| (e.addr.port(), e.priority, e.healthy))
        .collect();
    // The unhealthy one is kept, marked: it takes no traffic but counts in its priority's
    // health.
    assert_eq!(got, [(2, 1, true), (1, 0, false), (3, 0, true)]);
    // The assignment's overprovisioning factor goes with its endpoints (140 unless set); 0 is
    // refused, as Envoy's validation does; a draining endpoint is left out.
    assert_eq!(load_assignment(&cla).unwrap().overprovisioning, 140);
    let with = |factor: u32| {
        let mut c = cla.clone();
        c.policy = Some(
            weft_proto::xds::config::endpoint::v3::cluster_load_assignment::Policy {
                overprovisioning_factor: Some(weft_proto::google::protobuf::UInt32Value {
                    value: factor,
                }),
                ..Default::default()
            },
        );
        c
    };
    assert_eq!(load_assignment(&with(200)).unwrap().overprovisioning, 200);
    assert_eq!(
        load_assignment(&with(0)).unwrap_err().field,
        "policy.overprovisioning_factor"
    );
    let mut draining = cla.clone();
    draining.endpoints.push(level(0, 4, HealthStatus::Draining));
    assert_eq!(load_assignment(&draining).unwrap().endpoints.len(), 3);
}

#[test]
fn active_health_checks_are_refused() {
    let c = xc::Cluster {
        name: "c".into(),
        health_checks: vec![Default::default()],
        ..Default::default()
    };
    assert_eq!(Cluster::try_from(&c).unwrap_err().field, "health_checks");
}
