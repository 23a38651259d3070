//! Route parentRefs: which Service port a route attaches to, and whether it may (GAMMA).

use super::*;

pub(super) fn is_service_ref(group: Option<&str>, kind: Option<&str>) -> bool {
    matches!(group, None | Some("" | "core")) && kind.unwrap_or("Service") == "Service"
}
/// A parentRef written `{kind: Service, name: ...}` without a group: the Gateway API CRD
/// fills in its default group, `gateway.networking.k8s.io`, which has no Service kind. Read as
/// the core Service the user meant, as file mode reads it before any defaulting, so a route
/// works the same from a file and from the API server; the route is told to say `group: ""`.
pub(super) fn is_defaulted_service_ref(group: Option<&str>, kind: Option<&str>) -> bool {
    group == Some("gateway.networking.k8s.io") && kind == Some("Service")
}
/// `port` of Service `svc`, which a backendRef (or mirror) names, or why it does not resolve.
/// A route may send to any namespace's Services without a ReferenceGrant: in the mesh a route
/// only changes where traffic to a Service its clients can reach anyway goes (GEP-1294).
pub(super) fn resolve(
    services: &BTreeMap<Key, Service>,
    svc: &Key,
    port: Option<u16>,
) -> Result<u16, String> {
    let port = port.ok_or_else(|| format!("backendRef {svc} has no port"))?;
    match services.get(svc) {
        Some(s) if s.port(port).is_some() => Ok(port),
        Some(_) => Err(format!("backendRef {svc} has no port {port}")),
        None => Err(format!("backendRef Service {svc} does not exist")),
    }
}
/// A Service a route attaches to, and which of its ports: by number, by name (`sectionName`),
/// both, or (neither) every HTTP port.
pub(super) struct Parent {
    pub(super) service: Key,
    pub(super) port: Option<i32>,
    pub(super) section: Option<String>,
    /// Written without a group and defaulted to the Gateway API's (see
    /// [`is_defaulted_service_ref`]).
    pub(super) defaulted_group: bool,
}
impl Parent {
    /// Whether it names its port(s) by number or name, rather than taking every port a route
    /// of its kind can apply to.
    pub(super) fn named(&self) -> bool {
        self.port.is_some() || self.section.is_some()
    }

    /// Whether `port` is one it names (every port, when it names none).
    pub(super) fn names(&self, port: &ServicePort) -> bool {
        self.port.is_none_or(|p| i32::from(port.port) == p)
            && self.section.as_ref().is_none_or(|s| *s == port.name)
    }

    /// Whether an HTTP (or gRPC) route attaches to `port`: one named, else every HTTP port.
    pub(super) fn wants(&self, port: &ServicePort) -> bool {
        self.names(port) && (self.named() || port.protocol.is_http())
    }

    /// The port(s) it names, for a warning that the Service has none such; `kind` ("HTTP",
    /// "TCP") when it names none.
    pub(super) fn which(&self, kind: &str) -> String {
        match (self.port, &self.section) {
            (Some(p), _) => p.to_string(),
            (None, Some(name)) => format!("{name:?}"),
            (None, None) => kind.to_string(),
        }
    }
}
/// The Services a route attaches to; parents of other kinds (Gateways) are not the mesh's
/// business.
pub(super) fn service_parents<'a>(
    key: &'a Key,
    route: &'a HttpRoute,
) -> impl Iterator<Item = Parent> + 'a {
    let refs = route.spec.parent_refs.iter().flatten();
    refs.filter_map(move |p| parent_ref(key, p.into()).ok())
}
/// The fields of a parentRef, of whichever route kind.
pub(super) struct ParentFields<'a> {
    pub(super) group: Option<&'a str>,
    pub(super) kind: Option<&'a str>,
    pub(super) namespace: Option<&'a str>,
    pub(super) name: &'a str,
    pub(super) port: Option<i32>,
    pub(super) section: Option<&'a String>,
}
macro_rules! parent_fields {
    ($($t:ty),*) => {$(
        impl<'a> From<&'a $t> for ParentFields<'a> {
            fn from(p: &'a $t) -> Self {
                Self {
                    group: p.group.as_deref(),
                    kind: p.kind.as_deref(),
                    namespace: p.namespace.as_deref(),
                    name: &p.name,
                    port: p.port,
                    section: p.section_name.as_ref(),
                }
            }
        }
    )*};
}
parent_fields!(HttpRouteParentRefs, TcpRouteParentRefs);
/// The Service a parentRef of route `key` names, or, for any other kind, the Service it would
/// name had it said `kind: Service`, when it said no kind at all: Gateway API's default kind is
/// Gateway, which the mesh does not serve, but a user who wrote a Service's name most likely
/// meant that Service (see [`attachable`]).
pub(super) fn parent_ref(key: &Key, p: ParentFields) -> Result<Parent, Option<Key>> {
    let service = Key::new(p.namespace.unwrap_or(&key.namespace), p.name);
    let defaulted_group = is_defaulted_service_ref(p.group, p.kind);
    let core = matches!(p.group, None | Some("" | "core"));
    match p.kind {
        Some("Service") if core || defaulted_group => Ok(Parent {
            service,
            port: p.port,
            section: p.section.cloned(),
            defaulted_group,
        }),
        None if core || p.group == Some("gateway.networking.k8s.io") => Err(Some(service)),
        _ => Err(None),
    }
}
/// The Service parents of route `(kind, key)`, with a warning for each parentRef that names a
/// Service only by default: its group (read as the core Service it meant), or its kind (read as
/// the Gateway the spec says it is, so not attached; said when such a Service exists).
pub(super) fn attachable(
    (kind, key): (&str, &Key),
    parents: impl Iterator<Item = Result<Parent, Option<Key>>>,
    services: &BTreeMap<Key, Service>,
    b: &mut Builder,
) -> Vec<Parent> {
    let mut out = Vec::new();
    for parent in parents {
        match parent {
            Ok(p) => {
                if p.defaulted_group {
                    b.warn(
                        kind,
                        key,
                        format!(
                            "parentRef to Service {} has group gateway.networking.k8s.io (the \
                             default when none is written): read as the core Service; write \
                             group: \"\"",
                            p.service.name
                        ),
                    );
                }
                out.push(p);
            }
            Err(Some(svc)) if services.contains_key(&svc) => b.warn(
                kind,
                key,
                format!(
                    "parentRef {} has no kind, so it names a Gateway (the default), not Service \
                     {svc}: not attached; write kind: Service and group: \"\"",
                    svc.name
                ),
            ),
            Err(_) => {}
        }
    }
    out
}
