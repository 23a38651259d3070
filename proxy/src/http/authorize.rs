//! Authorization of inbound requests: the port's RBAC filters, read from the live config on
//! each request so a policy change applies to connections already open.

use super::{Failure, Proxy};
use crate::config::route::RequestView;
use crate::metrics::Flag;

impl Proxy {
    /// Checks an inbound request against its port's RBAC filters, as the config now has them:
    /// a refusal is logged with the peer's identity and the policy, counted, and answered 403.
    pub(super) fn authorize(
        &self,
        config: &crate::config::Config,
        peer: &crate::config::authz::Peer,
        req: &impl RequestView,
    ) -> Result<(), Failure> {
        let Some(authz) = config.inbound_authz(peer.destination.port()) else {
            return Ok(());
        };
        if authz.is_empty() {
            return Ok(());
        }
        let verdict = authz.check(peer, req);
        self.metrics.authorized(true, verdict.is_ok());
        match verdict {
            Ok(()) => Ok(()),
            Err(denied) => {
                tracing::info!(
                    peer_id = peer.principal.as_deref().unwrap_or("none"),
                    policy = denied.policy.unwrap_or("none"),
                    method = req.method(),
                    path = req.path(),
                    flags = Flag::Unauthorized.as_str(),
                    "request denied by authorization policy: local reply 403"
                );
                Err((Flag::Unauthorized, None))
            }
        }
    }
}
