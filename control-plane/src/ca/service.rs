//! `weft.ca.v1.CertificateService`: who is asking (the bearer credential), then a certificate
//! for that identity. Every answer is counted by result, and every refusal logged with why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tonic::{Request, Response, Status};
use weft_proto::weft::ca::v1::certificate_service_server::{
    CertificateService, CertificateServiceServer,
};
use weft_proto::weft::ca::v1::{SignRequest, SignResponse};

use super::authority::SignError;
use super::{Authority, Identity, token};

/// How a caller proves who it is.
#[derive(Clone)]
pub enum Authenticator {
    /// Workload tokens this CA issued (file mode).
    Tokens,
    /// Kubernetes service-account tokens for audience `weft-ca`, checked by TokenReview.
    Kubernetes(kube::Client),
}

/// `result` label of `weft_ca_requests`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `signed`, `unauthenticated`, `bad_csr` or `failed`.
    pub result: &'static str,
}

/// The CA's counters.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Sign requests by result.
    pub requests: Family<ResultLabel, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self::default();
        reg.register(
            "weft_ca_requests",
            "Certificate signing requests, by result",
            m.requests.clone(),
        );
        m
    }

    fn count(&self, result: &'static str) {
        self.requests.get_or_create(&ResultLabel { result }).inc();
    }
}

/// The CA's gRPC service.
#[derive(Clone)]
pub struct CaService {
    authority: Arc<Authority>,
    auth: Authenticator,
    metrics: Metrics,
    /// Tokens already proven, and until when they are taken at their word: a sidecar shows the
    /// same token at every renewal, and checking it costs a signature verification (file mode)
    /// or a TokenReview call to the API server (Kubernetes).
    proven: Arc<std::sync::Mutex<HashMap<String, (Identity, Instant)>>>,
}

/// How long a TokenReview's answer is taken at its word (a token revoked meanwhile is
/// refused after this).
const REVIEWED_FOR: Duration = Duration::from_secs(30);

/// The most tokens remembered; past it, expired ones are forgotten, then all.
const PROVEN_MAX: usize = 10_000;

impl CaService {
    /// A service signing with `authority` for callers `auth` vouches for.
    pub fn new(authority: Arc<Authority>, auth: Authenticator, metrics: Metrics) -> Self {
        Self {
            authority,
            auth,
            metrics,
            proven: Default::default(),
        }
    }

    /// The tonic service, to add beside ADS.
    pub fn into_service(self) -> CertificateServiceServer<Self> {
        CertificateServiceServer::new(self)
    }

    async fn identity(&self, bearer: &str) -> Result<Identity, String> {
        let now = Instant::now();
        let lock = || {
            self.proven
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((id, until)) = lock().get(bearer)
            && now < *until
        {
            return Ok(id.clone());
        }
        let (id, valid_for) = match &self.auth {
            Authenticator::Tokens => token::verify_until(self.authority.public_key(), bearer)
                .map_err(|e| e.to_string())?,
            Authenticator::Kubernetes(client) => (review(client, bearer).await?, REVIEWED_FOR),
        };
        let mut proven = lock();
        if proven.len() >= PROVEN_MAX {
            proven.retain(|_, (_, until)| now < *until);
            if proven.len() >= PROVEN_MAX {
                proven.clear();
            }
        }
        proven.insert(bearer.to_string(), (id.clone(), now + valid_for));
        Ok(id)
    }
}

/// Asks the API server who a service-account token belongs to, for audience `weft-ca`.
async fn review(client: &kube::Client, bearer: &str) -> Result<Identity, String> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(bearer.to_string()),
            audiences: Some(vec![token::AUDIENCE.to_string()]),
        },
        ..Default::default()
    };
    let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
    let reviewed = api
        .create(&kube::api::PostParams::default(), &review)
        .await
        .map_err(|e| format!("TokenReview failed: {e}"))?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(status
            .error
            .unwrap_or_else(|| "token not authenticated".into()));
    }
    // An API server that ignores audiences answers without them: not proof enough.
    if !status
        .audiences
        .unwrap_or_default()
        .iter()
        .any(|a| a == token::AUDIENCE)
    {
        return Err(format!("token is not for audience {}", token::AUDIENCE));
    }
    let user = status.user.and_then(|u| u.username).unwrap_or_default();
    Identity::from_username(&user).ok_or_else(|| format!("{user:?} is no service account"))
}

#[tonic::async_trait]
impl CertificateService for CaService {
    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let peer = request.remote_addr();
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let Some(bearer) = bearer else {
            self.metrics.count("unauthenticated");
            tracing::info!(?peer, "certificate refused: no bearer token");
            return Err(Status::unauthenticated("no bearer token"));
        };
        let identity = match self.identity(&bearer).await {
            Ok(id) => id,
            Err(why) => {
                self.metrics.count("unauthenticated");
                tracing::info!(?peer, "certificate refused: {why}");
                return Err(Status::unauthenticated(why));
            }
        };
        let req = request.into_inner();
        let asked = u64::try_from(req.validity_seconds)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        match self.authority.sign(&req.csr, &identity, asked) {
            Ok(signed) => {
                self.metrics.count("signed");
                tracing::debug!(identity = %identity.username(), "certificate signed");
                Ok(Response::new(SignResponse {
                    cert_chain: signed.chain,
                    trust_bundle: signed.trust_bundle,
                }))
            }
            Err(e @ SignError::BadCsr(_)) => {
                self.metrics.count("bad_csr");
                tracing::info!(?peer, identity = %identity.username(), "certificate refused: {e}");
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e @ SignError::Failed(_)) => {
                self.metrics.count("failed");
                tracing::error!(identity = %identity.username(), "{e}");
                Err(Status::internal(e.to_string()))
            }
        }
    }
}
