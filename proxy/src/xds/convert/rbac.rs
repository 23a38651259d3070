//! RBAC filters (`envoy.filters.network.rbac`, `envoy.filters.http.rbac`) become an [`Rbac`]:
//! what weft-proxy can evaluate is kept, and anything else (CEL conditions, metadata, shadow
//! rules, matchers, audit logging) is refused by field: a policy silently half-applied would
//! let through what it was written to stop.

use weft_proto::xds::config::core::v3::CidrRange;
use weft_proto::xds::config::rbac::v3 as xrbac;
use weft_proto::xds::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use weft_proto::xds::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_proto::xds::r#type::matcher::v3::PathMatcher;

use super::rds::{header_match, refuse, string_match};
use super::*;
use crate::config::authz::{Action, Cidr, Permission, Policy, Principal, Rbac};

/// The network filter's config type.
pub(super) const NETWORK_RBAC: &str = "envoy.extensions.filters.network.rbac.v3.RBAC";
/// The HTTP filter's config type.
pub(super) const HTTP_RBAC: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";

/// A network RBAC filter's rules.
pub(super) fn network(ctx: &Ctx<'_>, field: &str, any: &Any) -> Result<Rbac, Invalid> {
    let f: NetworkRbac = ctx.unpack(field, any, NETWORK_RBAC)?;
    refuse(
        ctx,
        field,
        [
            ("matcher", f.matcher.is_some()),
            ("shadow_rules", f.shadow_rules.is_some()),
            ("shadow_matcher", f.shadow_matcher.is_some()),
            ("enforcement_type", f.enforcement_type != 0),
        ],
    )?;
    rules(ctx, &format!("{field}.rules"), f.rules.as_ref())
}

/// An HTTP RBAC filter's rules.
pub(super) fn http(ctx: &Ctx<'_>, field: &str, any: &Any) -> Result<Rbac, Invalid> {
    let f: HttpRbac = ctx.unpack(field, any, HTTP_RBAC)?;
    refuse(
        ctx,
        field,
        [
            ("matcher", f.matcher.is_some()),
            ("shadow_rules", f.shadow_rules.is_some()),
            ("shadow_matcher", f.shadow_matcher.is_some()),
        ],
    )?;
    rules(ctx, &format!("{field}.rules"), f.rules.as_ref())
}

/// `rules`; unset, Envoy enforces nothing, which an ALLOW filter with no policy would not say,
/// so it is an empty DENY.
fn rules(ctx: &Ctx<'_>, field: &str, rules: Option<&xrbac::Rbac>) -> Result<Rbac, Invalid> {
    let Some(r) = rules else {
        return Ok(Rbac {
            action: Action::Deny,
            policies: Vec::new(),
        });
    };
    refuse(
        ctx,
        field,
        [("audit_logging_options", r.audit_logging_options.is_some())],
    )?;
    let action = match xrbac::rbac::Action::try_from(r.action) {
        Ok(xrbac::rbac::Action::Allow) => Action::Allow,
        Ok(xrbac::rbac::Action::Deny) => Action::Deny,
        _ => {
            return Err(ctx.err(
                format!("{field}.action"),
                "only ALLOW and DENY are enforced",
            ));
        }
    };
    // Envoy evaluates policies in the order of their names.
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    let mut policies = Vec::with_capacity(names.len());
    for name in names {
        let p = &r.policies[name];
        let f = format!("{field}.policies[{name:?}]");
        refuse(
            ctx,
            &f,
            [
                ("condition", p.condition.is_some()),
                ("checked_condition", p.checked_condition.is_some()),
                ("cel_config", p.cel_config.is_some()),
            ],
        )?;
        if p.permissions.is_empty() || p.principals.is_empty() {
            return Err(ctx.err(f, "needs at least one permission and one principal"));
        }
        let permissions = p
            .permissions
            .iter()
            .enumerate()
            .map(|(i, x)| permission(ctx, &format!("{f}.permissions[{i}]"), x))
            .collect::<Result<_, _>>()?;
        let principals = p
            .principals
            .iter()
            .enumerate()
            .map(|(i, x)| principal(ctx, &format!("{f}.principals[{i}]"), x))
            .collect::<Result<_, _>>()?;
        policies.push(Policy {
            name: name.clone(),
            permissions,
            principals,
        });
    }
    Ok(Rbac { action, policies })
}

fn permission(ctx: &Ctx<'_>, field: &str, p: &xrbac::Permission) -> Result<Permission, Invalid> {
    use xrbac::permission::Rule;
    let set = |s: &xrbac::permission::Set, kind: &str| -> Result<Vec<Permission>, Invalid> {
        s.rules
            .iter()
            .enumerate()
            .map(|(i, r)| permission(ctx, &format!("{field}.{kind}.rules[{i}]"), r))
            .collect()
    };
    Ok(match &p.rule {
        Some(Rule::Any(true)) => Permission::Any,
        Some(Rule::AndRules(s)) => Permission::And(set(s, "and_rules")?),
        Some(Rule::OrRules(s)) => Permission::Or(set(s, "or_rules")?),
        Some(Rule::NotRule(n)) => {
            Permission::Not(Box::new(permission(ctx, &format!("{field}.not_rule"), n)?))
        }
        Some(Rule::Header(h)) => {
            Permission::Header(header_match(ctx, &format!("{field}.header"), h)?)
        }
        Some(Rule::UrlPath(m)) => Permission::Path(path(ctx, &format!("{field}.url_path"), m)?),
        Some(Rule::DestinationPort(port)) => Permission::DestinationPort(
            u16::try_from(*port)
                .map_err(|_| ctx.err(format!("{field}.destination_port"), "out of range"))?,
        ),
        Some(Rule::DestinationPortRange(r)) => Permission::DestinationPorts {
            start: u32::try_from(r.start).unwrap_or(0),
            end: u32::try_from(r.end).unwrap_or(0),
        },
        Some(Rule::DestinationIp(c)) => {
            Permission::DestinationIp(cidr(ctx, &format!("{field}.destination_ip"), c)?)
        }
        Some(Rule::Any(false)) | None => {
            return Err(ctx.err(field, "a permission needs a rule"));
        }
        Some(_) => {
            return Err(ctx.err(
                field,
                "only any, and_rules, or_rules, not_rule, header, url_path, destination_port, \
                 destination_port_range and destination_ip are supported",
            ));
        }
    })
}

// `source_ip` is deprecated, and still what older control planes send.
#[allow(deprecated)]
fn principal(ctx: &Ctx<'_>, field: &str, p: &xrbac::Principal) -> Result<Principal, Invalid> {
    use xrbac::principal::Identifier;
    let set = |s: &xrbac::principal::Set, kind: &str| -> Result<Vec<Principal>, Invalid> {
        s.ids
            .iter()
            .enumerate()
            .map(|(i, r)| principal(ctx, &format!("{field}.{kind}.ids[{i}]"), r))
            .collect()
    };
    Ok(match &p.identifier {
        Some(Identifier::Any(true)) => Principal::Any,
        Some(Identifier::AndIds(s)) => Principal::And(set(s, "and_ids")?),
        Some(Identifier::OrIds(s)) => Principal::Or(set(s, "or_ids")?),
        Some(Identifier::NotId(n)) => {
            Principal::Not(Box::new(principal(ctx, &format!("{field}.not_id"), n)?))
        }
        Some(Identifier::Authenticated(a)) => Principal::Authenticated(
            a.principal_name
                .as_ref()
                .map(|m| string_match(ctx, &format!("{field}.authenticated.principal_name"), m))
                .transpose()?,
        ),
        // A sidecar trusts no forwarding header, so the remote address is the peer's.
        Some(Identifier::DirectRemoteIp(c) | Identifier::RemoteIp(c) | Identifier::SourceIp(c)) => {
            Principal::SourceIp(cidr(ctx, field, c)?)
        }
        Some(Identifier::Header(h)) => {
            Principal::Header(header_match(ctx, &format!("{field}.header"), h)?)
        }
        Some(Identifier::UrlPath(m)) => {
            Principal::Path(path(ctx, &format!("{field}.url_path"), m)?)
        }
        Some(Identifier::Any(false)) | None => {
            return Err(ctx.err(field, "a principal needs an identifier"));
        }
        Some(_) => {
            return Err(ctx.err(
                field,
                "only any, and_ids, or_ids, not_id, authenticated, direct_remote_ip, remote_ip, \
                 source_ip, header and url_path are supported",
            ));
        }
    })
}

fn path(ctx: &Ctx<'_>, field: &str, m: &PathMatcher) -> Result<StringMatch, Invalid> {
    use weft_proto::xds::r#type::matcher::v3::path_matcher::Rule;
    match &m.rule {
        Some(Rule::Path(s)) => string_match(ctx, &format!("{field}.path"), s),
        None => Err(ctx.err(field, "needs a path")),
    }
}

fn cidr(ctx: &Ctx<'_>, field: &str, c: &CidrRange) -> Result<Cidr, Invalid> {
    let addr: IpAddr = c
        .address_prefix
        .parse()
        .map_err(|_| ctx.err(format!("{field}.address_prefix"), "not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = c.prefix_len.map_or(max, |l| l.value);
    if len > max {
        return Err(ctx.err(format!("{field}.prefix_len"), "longer than the address"));
    }
    Ok(Cidr {
        addr,
        len: len as u8,
    })
}

#[cfg(test)]
mod tests;
