//! Keeping the certificate fresh: one at start, a new one at half-life, and on failure tries
//! again with backoff while the certificate in force still serves (a CA that is down for a while
//! costs nothing as long as it is back before expiry).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::ca::CaClient;
use super::{Identity, ResultLabel, unix_seconds};

/// First wait after a failed request; doubled per failure.
const BACKOFF_MIN: Duration = Duration::from_millis(200);

/// Longest wait after a failed request.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Shortest time between two renewals, whatever the certificate's lifetime.
const RENEW_MIN: Duration = Duration::from_millis(500);

/// Runs for the proxy's life, keeping `identity` certified by the CA.
pub async fn run(client: CaClient, identity: Arc<Identity>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match client.certify().await {
            Ok(certified) => {
                identity
                    .requests
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
                tracing::info!(
                    identity = certified.spiffe_id,
                    serial = certified.serial,
                    expires = unix_seconds(certified.not_after),
                    "workload certificate in force"
                );
                let renew_at = certified.renew_at();
                identity.set(certified);
                backoff = BACKOFF_MIN;
                let wait = renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .max(RENEW_MIN);
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                identity
                    .requests
                    .get_or_create(&ResultLabel { result: "failed" })
                    .inc();
                // Jittered, so sidecars that lost the CA together do not return all at once.
                let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
                let expires_in = identity.current().map(|c| c.expires_in());
                match expires_in {
                    Some(s) if s > 0.0 => tracing::warn!(
                        "certificate renewal failed ({e:#}); the current one is valid {s:.0} s more; retrying in {wait:?}"
                    ),
                    _ => tracing::error!(
                        "no valid workload certificate: {e:#}; retrying in {wait:?}"
                    ),
                }
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
