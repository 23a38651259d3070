//! Authorization of inbound connections and requests, in the shape of Envoy's RBAC filters
//! (`envoy.filters.network.rbac` on a TCP chain, `envoy.filters.http.rbac` in an HTTP
//! connection manager): policies of permissions (what is asked: port, method, path, headers)
//! and principals (who asks: the peer's SPIFFE ID from its mTLS certificate, its address), and
//! an action that allows what a policy matches or denies it.
//!
//! Evaluation is pure: the data path hands in who is asking and, for HTTP, the request, and
//! gets a verdict; the xDS conversion ([`crate::xds::convert`]) builds these from the protos.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use super::route::{HeaderMatch, RequestView, StringMatch};

/// The RBAC filters of one filter chain, in order. A connection (network filters) or a request
/// (HTTP filters) passes only if every one lets it; none lets everything pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Authz(pub Arc<[Rbac]>);

impl Authz {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `who` may make `request`: the first refusal, if a filter refuses.
    pub fn check<R: RequestView>(&self, who: &Peer, request: &R) -> Result<(), Denied<'_>> {
        self.0.iter().try_for_each(|r| r.check(who, Some(request)))
    }

    /// Whether `who` may open the connection, as a network RBAC filter decides: permissions and
    /// principals on HTTP requests (headers, paths) match nothing there.
    pub fn check_connection(&self, who: &Peer) -> Result<(), Denied<'_>> {
        self.0
            .iter()
            .try_for_each(|r| r.check::<NoRequest>(who, None))
    }
}

/// Who is asking, as the connection shows it: learned once per connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The SPIFFE ID of the peer's certificate; `None` for plaintext.
    pub principal: Option<Arc<str>>,
    /// The peer's address.
    pub source: IpAddr,
    /// Where the connection was headed (the pod's address and the app's port).
    pub destination: SocketAddr,
}

/// A refusal, and the policy that made it: a DENY filter's matching policy, or `None` when an
/// ALLOW filter had no policy that matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied<'a> {
    /// The matching DENY policy's name.
    pub policy: Option<&'a str>,
}

/// One RBAC filter's rules (Envoy's `config.rbac.v3.RBAC`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rbac {
    /// What a matching policy means.
    pub action: Action,
    /// The policies, in the order Envoy evaluates them (by name).
    pub policies: Vec<Policy>,
}

impl Rbac {
    fn check<R: RequestView>(&self, who: &Peer, request: Option<&R>) -> Result<(), Denied<'_>> {
        let matched = self.policies.iter().find(|p| p.matches(who, request));
        match (self.action, matched) {
            (Action::Allow, Some(_)) | (Action::Deny, None) => Ok(()),
            (Action::Allow, None) => Err(Denied { policy: None }),
            (Action::Deny, Some(p)) => Err(Denied {
                policy: Some(&p.name),
            }),
        }
    }
}

/// What a matching policy means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Only what some policy matches passes.
    Allow,
    /// What some policy matches is refused.
    Deny,
}

/// One named policy: it matches when any permission and any principal does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Policy {
    /// Its name (weft's: the AuthorizationPolicy and rule it came from).
    pub name: String,
    /// What is asked.
    pub permissions: Vec<Permission>,
    /// Who asks.
    pub principals: Vec<Principal>,
}

impl Policy {
    fn matches<R: RequestView>(&self, who: &Peer, request: Option<&R>) -> bool {
        self.permissions.iter().any(|p| p.matches(who, request))
            && self.principals.iter().any(|p| p.matches(who, request))
    }
}

/// A condition on what is asked.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Anything.
    Any,
    /// Every one of these.
    And(Vec<Permission>),
    /// Any of these.
    Or(Vec<Permission>),
    /// Not this.
    Not(Box<Permission>),
    /// A request header (`:method` for the method).
    Header(HeaderMatch),
    /// The request's path, without its query (after dot segments are removed, when the
    /// connection manager normalizes paths).
    Path(StringMatch),
    /// The destination port.
    DestinationPort(u16),
    /// A destination port in `[start, end)`.
    DestinationPorts {
        /// First port in the range.
        start: u32,
        /// One past the last.
        end: u32,
    },
    /// The destination address.
    DestinationIp(Cidr),
}

impl Permission {
    fn matches<R: RequestView>(&self, who: &Peer, request: Option<&R>) -> bool {
        match self {
            Self::Any => true,
            Self::And(all) => all.iter().all(|p| p.matches(who, request)),
            Self::Or(any) => any.iter().any(|p| p.matches(who, request)),
            Self::Not(p) => !p.matches(who, request),
            Self::Header(h) => request.is_some_and(|r| h.matches(r)),
            Self::Path(m) => request.is_some_and(|r| m.matches(r.path())),
            Self::DestinationPort(p) => who.destination.port() == *p,
            Self::DestinationPorts { start, end } => {
                (*start..*end).contains(&u32::from(who.destination.port()))
            }
            Self::DestinationIp(c) => c.contains(who.destination.ip()),
        }
    }
}

/// A condition on who asks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    /// Anyone.
    Any,
    /// Every one of these.
    And(Vec<Principal>),
    /// Any of these.
    Or(Vec<Principal>),
    /// Not this.
    Not(Box<Principal>),
    /// A peer with a certificate (mTLS) whose SPIFFE ID matches; any such peer when `None`.
    Authenticated(Option<StringMatch>),
    /// The peer's address (Envoy's `direct_remote_ip` and, with no trusted forwarding headers
    /// in a sidecar, `remote_ip`).
    SourceIp(Cidr),
    /// A request header.
    Header(HeaderMatch),
    /// The request's path.
    Path(StringMatch),
}

impl Principal {
    fn matches<R: RequestView>(&self, who: &Peer, request: Option<&R>) -> bool {
        match self {
            Self::Any => true,
            Self::And(all) => all.iter().all(|p| p.matches(who, request)),
            Self::Or(any) => any.iter().any(|p| p.matches(who, request)),
            Self::Not(p) => !p.matches(who, request),
            Self::Authenticated(name) => who
                .principal
                .as_deref()
                .is_some_and(|id| name.as_ref().is_none_or(|m| m.matches(id))),
            Self::SourceIp(c) => c.contains(who.source),
            Self::Header(h) => request.is_some_and(|r| h.matches(r)),
            Self::Path(m) => request.is_some_and(|r| m.matches(r.path())),
        }
    }
}

/// An address range, `addr/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Cidr {
    /// The range's address (bits past `len` ignored).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Cidr {
    /// Whether `ip` is in the range; an IPv4 address in IPv6 form counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let (a, b, bits) = match (self.addr.to_canonical(), ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(a.to_bits()), u128::from(b.to_bits()), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
            _ => return false,
        };
        let len = u32::from(self.len).min(bits);
        if len == 0 {
            return true;
        }
        let shift = bits - len;
        (a >> shift) == (b >> shift)
    }
}

/// No request: what a network filter evaluates with.
struct NoRequest;

impl RequestView for NoRequest {
    fn method(&self) -> &str {
        ""
    }
    fn path(&self) -> &str {
        ""
    }
    fn query(&self) -> Option<&str> {
        None
    }
    fn header_values<'a>(&'a self, _: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        std::iter::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        method: &'static str,
        path: &'static str,
        headers: Vec<(&'static str, &'static str)>,
    }

    impl RequestView for Req {
        fn method(&self) -> &str {
            self.method
        }
        fn path(&self) -> &str {
            self.path
        }
        fn query(&self) -> Option<&str> {
            None
        }
        fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
            self.headers
                .iter()
                .filter(move |(n, _)| *n == name)
                .map(|(_, v)| *v)
        }
    }

    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
    const ADMIN: &str = "spiffe://cluster.local/ns/ops/sa/admin";

    fn who(principal: Option<&'static str>) -> Peer {
        Peer {
            principal: principal.map(Arc::from),
            source: "10.0.0.7".parse().unwrap(),
            destination: "10.0.0.9:8080".parse().unwrap(),
        }
    }

    fn get(path: &'static str) -> Req {
        Req {
            method: "GET",
            path,
            headers: vec![],
        }
    }

    fn method(m: &str) -> Permission {
        Permission::Header(HeaderMatch {
            name: ":method".into(),
            value: StringMatch::Exact(m.into()),
            invert: false,
        })
    }

    fn policy(name: &str, permissions: Vec<Permission>, principals: Vec<Principal>) -> Policy {
        Policy {
            name: name.into(),
            permissions,
            principals,
        }
    }

    fn authz(filters: Vec<Rbac>) -> Authz {
        Authz(filters.into())
    }

    /// weft's shape: "web may GET /api/*; ops may do anything on 8080", as one ALLOW filter.
    fn shop() -> Authz {
        authz(vec![Rbac {
            action: Action::Allow,
            policies: vec![
                policy(
                    "shop/api[0]",
                    vec![Permission::And(vec![
                        method("GET"),
                        Permission::Path(StringMatch::Prefix("/api/".into())),
                    ])],
                    vec![Principal::Authenticated(Some(StringMatch::Exact(
                        WEB.into(),
                    )))],
                ),
                policy(
                    "shop/api[1]",
                    vec![Permission::DestinationPort(8080)],
                    vec![Principal::Authenticated(Some(StringMatch::Prefix(
                        "spiffe://cluster.local/ns/ops/sa/".into(),
                    )))],
                ),
            ],
        }])
    }

    #[test]
    fn an_allow_filter_passes_only_what_a_policy_matches() {
        let a = shop();
        // (principal, method, path, allowed)
        let cases = [
            (Some(WEB), "GET", "/api/items", true),
            (Some(WEB), "POST", "/api/items", false),
            (Some(WEB), "GET", "/admin", false),
            (Some(ADMIN), "DELETE", "/admin", true),
            (None, "GET", "/api/items", false),
            (
                Some("spiffe://cluster.local/ns/shop/sa/other"),
                "GET",
                "/api/items",
                false,
            ),
        ];
        for (principal, m, path, want) in cases {
            let req = Req {
                method: m,
                path,
                headers: vec![],
            };
            let got = a.check(&who(principal), &req);
            assert_eq!(got.is_ok(), want, "{principal:?} {m} {path}");
            if !want {
                assert_eq!(got, Err(Denied { policy: None }));
            }
        }
    }

    #[test]
    fn a_deny_filter_names_the_policy_that_refused() {
        let a = authz(vec![Rbac {
            action: Action::Deny,
            policies: vec![policy(
                "no-plaintext",
                vec![Permission::Any],
                vec![Principal::Not(Box::new(Principal::Authenticated(None)))],
            )],
        }]);
        assert_eq!(
            a.check(&who(None), &get("/")),
            Err(Denied {
                policy: Some("no-plaintext")
            })
        );
        assert_eq!(a.check(&who(Some(WEB)), &get("/")), Ok(()));
    }

    #[test]
    fn every_filter_must_pass_and_none_passes_everything() {
        assert_eq!(Authz::default().check(&who(None), &get("/")), Ok(()));
        assert_eq!(Authz::default().check_connection(&who(None)), Ok(()));
        let deny_admin = Rbac {
            action: Action::Deny,
            policies: vec![policy(
                "no-admin",
                vec![Permission::Path(StringMatch::Prefix("/admin".into()))],
                vec![Principal::Any],
            )],
        };
        let a = authz(vec![deny_admin, shop().0[0].clone()]);
        assert!(a.check(&who(Some(WEB)), &get("/api/x")).is_ok());
        assert_eq!(
            a.check(&who(Some(ADMIN)), &get("/admin")),
            Err(Denied {
                policy: Some("no-admin")
            })
        );
        // An ALLOW filter with no policy refuses everything.
        let closed = authz(vec![Rbac {
            action: Action::Allow,
            policies: vec![],
        }]);
        assert!(closed.check(&who(Some(WEB)), &get("/")).is_err());
        assert!(closed.check_connection(&who(Some(WEB))).is_err());
    }

    /// A connection has no request: a policy that needs one matches nothing there, so it
    /// allows nothing (and, negated, everything), as in Envoy's network filter.
    #[test]
    fn a_connection_matches_no_request_condition() {
        let a = shop();
        assert!(a.check_connection(&who(Some(ADMIN))).is_ok());
        assert!(a.check_connection(&who(Some(WEB))).is_err());
        let mut other_port = who(Some(ADMIN));
        other_port.destination.set_port(9090);
        assert!(a.check_connection(&other_port).is_err());
    }

    #[test]
    fn headers_source_addresses_and_port_ranges() {
        let a = authz(vec![Rbac {
            action: Action::Allow,
            policies: vec![policy(
                "p",
                vec![Permission::And(vec![
                    Permission::DestinationPorts {
                        start: 8000,
                        end: 8081,
                    },
                    Permission::Not(Box::new(Permission::Header(HeaderMatch {
                        name: "x-debug".into(),
                        value: StringMatch::Present,
                        invert: false,
                    }))),
                ])],
                vec![Principal::SourceIp(Cidr {
                    addr: "10.0.0.0".parse().unwrap(),
                    len: 24,
                })],
            )],
        }]);
        assert!(a.check(&who(None), &get("/")).is_ok());
        let debug = Req {
            method: "GET",
            path: "/",
            headers: vec![("x-debug", "1")],
        };
        assert!(a.check(&who(None), &debug).is_err());
        let mut far = who(None);
        far.source = "10.0.1.7".parse().unwrap();
        assert!(a.check(&far, &get("/")).is_err());
        let mut mapped = who(None);
        mapped.source = "::ffff:10.0.0.8".parse().unwrap();
        assert!(a.check(&mapped, &get("/")).is_ok());
    }

    #[test]
    fn cidr_ranges() {
        let c = |s: &str| {
            let (a, l) = s.split_once('/').unwrap();
            Cidr {
                addr: a.parse().unwrap(),
                len: l.parse().unwrap(),
            }
        };
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.1.2.3/32", "10.1.2.3", true),
            ("10.1.2.3/32", "10.1.2.4", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("2001:db8::/32", "2001:db8:1::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("10.0.0.0/40", "10.0.0.0", true),
        ];
        for (range, ip, want) in cases {
            assert_eq!(c(range).contains(ip.parse().unwrap()), want, "{range} {ip}");
        }
    }
}
