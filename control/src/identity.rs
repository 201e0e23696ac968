//! `io.linkerd.proxy.identity.Identity/Certify`: authenticates the caller's token, checks that
//! it entitles the requested identity, checks the CSR, and signs a leaf with the cluster's
//! issuer.
//!
//! Status codes (docs/wire-protocol.md#identities): `InvalidArgument` for a missing field, a malformed CSR or a bad
//! token; `FailedPrecondition` when the token names another identity, the identity is not this
//! cluster's, or the CSR does not match the identity; `Unavailable` when no issuer is usable.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use linkerd2_proxy_api::identity::identity_server::Identity;
use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse};
use remora_identity::Name;
use remora_identity::certs::CertError;
use tonic::{Code, Request, Response, Status};
use tracing::{info, warn};

use crate::config::Config;
use crate::issuer::IssuerStore;
use crate::metrics::IdentityMetrics;
use crate::token::{TokenError, TokenKey};

/// The identity service of one cluster.
#[derive(Debug, Clone)]
pub struct IdentityService {
    config: Arc<Config>,
    issuer: Arc<IssuerStore>,
    tokens: TokenKey,
    metrics: IdentityMetrics,
}

impl IdentityService {
    pub fn new(
        config: Arc<Config>,
        issuer: Arc<IssuerStore>,
        tokens: TokenKey,
        metrics: IdentityMetrics,
    ) -> Self {
        IdentityService {
            config,
            issuer,
            tokens,
            metrics,
        }
    }

    fn refuse(&self, identity: &str, code: Code, reason: &'static str, detail: String) -> Status {
        warn!(identity, reason, %detail, "certify refused");
        self.metrics.refused(reason);
        Status::new(code, detail)
    }

    /// The whole Certify decision, independent of gRPC transport.
    pub fn certify_request(&self, req: CertifyRequest) -> Result<CertifyResponse, Status> {
        let requested = req.identity.as_str();
        if requested.is_empty()
            || req.token.is_empty()
            || req.certificate_signing_request.is_empty()
        {
            return Err(self.refuse(
                requested,
                Code::InvalidArgument,
                "missing_field",
                "identity, token and certificate_signing_request are all required".into(),
            ));
        }
        let identity: Name = requested.parse().map_err(|e| {
            self.refuse(
                requested,
                Code::InvalidArgument,
                "bad_identity",
                format!("{e}"),
            )
        })?;
        let claims = self
            .tokens
            .verify(&req.token, SystemTime::now())
            .map_err(|e| {
                let reason = match e {
                    TokenError::Expired => "token_expired",
                    _ => "bad_token",
                };
                self.refuse(
                    requested,
                    Code::InvalidArgument,
                    reason,
                    format!("bad token: {e}"),
                )
            })?;
        if claims.identity != identity {
            return Err(self.refuse(
                requested,
                Code::FailedPrecondition,
                "not_authenticated",
                format!(
                    "the token authenticates {}, not {identity}",
                    claims.identity
                ),
            ));
        }
        if !self.config.owns(&identity) {
            return Err(self.refuse(
                requested,
                Code::FailedPrecondition,
                "foreign_identity",
                format!(
                    "{identity} is not an identity of this cluster (trust domain {}, control \
                     plane namespace {})",
                    self.config.trust_domain, self.config.control_plane_ns
                ),
            ));
        }
        let issuer = self.issuer.current();
        let issued = issuer
            .issue(
                &req.certificate_signing_request,
                &identity,
                self.config.cert_lifetime,
            )
            .map_err(|e| {
                let (code, reason) = match e {
                    CertError::BadCsr(_) | CertError::WrongKeyType => {
                        (Code::InvalidArgument, "bad_csr")
                    }
                    CertError::SanMismatch { .. } | CertError::ForbiddenSan(_) => {
                        (Code::FailedPrecondition, "csr_mismatch")
                    }
                    _ => (Code::Unavailable, "issuer_unavailable"),
                };
                self.refuse(requested, code, reason, e.to_string())
            })?;
        self.metrics.issued();
        let until = issued
            .valid_until
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        info!(%identity, valid_for = ?issued.valid_until.duration_since(SystemTime::now()).unwrap_or_default(), "issued");
        Ok(CertifyResponse {
            leaf_certificate: issued.leaf.to_vec(),
            intermediate_certificates: issued.intermediates.iter().map(|c| c.to_vec()).collect(),
            valid_until: Some(prost_types::Timestamp {
                seconds: until.as_secs() as i64,
                nanos: until.subsec_nanos() as i32,
            }),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        self.certify_request(request.into_inner())
            .map(Response::new)
    }
}
