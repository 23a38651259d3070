//! Who may call a workload: the AuthorizationPolicies that select it, with their sources
//! already resolved to SPIFFE ID patterns (so translation needs no trust domain).

use super::Key;

/// One AuthorizationPolicy as it applies to a workload it selects.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthorizationPolicy {
    /// The object, which names its RBAC policies.
    pub key: Key,
    /// Allow what a rule matches, or deny it.
    pub action: AuthorizationAction,
    /// The rules; an ALLOW policy with none allows nothing.
    pub rules: Vec<AuthorizationRule>,
}

/// What a matching rule means. A request is denied if any DENY rule matches it; otherwise, if
/// ALLOW policies select the workload, only what one of their rules matches is allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthorizationAction {
    /// Only what a rule matches is allowed.
    #[default]
    Allow,
    /// What a rule matches is refused.
    Deny,
}

/// One rule: every part that is set must match; within a part, any entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthorizationRule {
    /// The peer's SPIFFE ID.
    pub principals: Vec<Pattern>,
    /// The peer's namespace, as a pattern on its SPIFFE ID
    /// (`spiffe://<td>/ns/<namespace>/sa/...`).
    pub namespaces: Vec<Pattern>,
    /// Destination ports.
    pub ports: Vec<u16>,
    /// HTTP methods.
    pub methods: Vec<String>,
    /// HTTP paths.
    pub paths: Vec<Pattern>,
}

impl AuthorizationRule {
    /// Whether the rule says anything only an HTTP request has.
    pub fn is_http_only(&self) -> bool {
        !self.methods.is_empty() || !self.paths.is_empty()
    }
}

/// A string condition, from the `*` forms users write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: any value (for sources: any peer with a mesh certificate).
    Any,
    /// The whole value.
    Exact(String),
    /// `abc*`.
    Prefix(String),
    /// `*abc`.
    Suffix(String),
}
