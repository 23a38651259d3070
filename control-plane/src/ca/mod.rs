//! The mesh CA: a root (or intermediate) kept where a restart finds it again, workload
//! certificates signed for the identity the caller's credential proves, and the gRPC service
//! (`weft.ca.v1.CertificateService/Sign`) proxies ask for them on.
//!
//! The identity written into a certificate never comes from the CSR: only its public key is
//! read. In file mode the credential is a workload token this CA issued (`weft token create`).

pub mod authority;
pub mod bundle;
pub mod secret;
pub mod service;
pub mod token;

pub use authority::{Authority, Lifetimes, Source};
pub use service::CaService;

/// A workload identity: the namespace and service account it runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
}

impl Identity {
    /// An identity from its two names, each checked to be a Kubernetes name (lowercase
    /// letters, digits, `-` and `.`): they go into a URI, where a `/` would name another.
    pub fn new(namespace: &str, service_account: &str) -> Result<Self, String> {
        for (what, name) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !ok {
                return Err(format!("{what} {name:?} is not a Kubernetes name"));
            }
        }
        Ok(Self {
            namespace: namespace.into(),
            service_account: service_account.into(),
        })
    }

    /// Its SPIFFE ID in `trust_domain`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// The user name Kubernetes gives a service account's tokens.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    /// The identity a Kubernetes service-account user name stands for.
    pub fn from_username(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("system:serviceaccount:")?;
        let (ns, sa) = rest.split_once(':')?;
        Self::new(ns, sa).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_kubernetes_names_only() {
        let id = Identity::new("shop", "web-1").unwrap();
        assert_eq!(
            id.spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/shop/sa/web-1"
        );
        assert_eq!(Identity::from_username(&id.username()), Some(id));
        for (ns, sa) in [
            ("", "a"),
            ("a", ""),
            ("a/b", "c"),
            ("a", "B"),
            ("a", "x:y"),
            ("a", "%2f"),
        ] {
            assert!(Identity::new(ns, sa).is_err(), "{ns:?} {sa:?}");
        }
        assert_eq!(Identity::from_username("system:node:a"), None);
    }
}
