//! `io.linkerd.proxy.identity.Identity/Certify`: authenticates the caller's token, checks that
//! it entitles the requested identity, checks the CSR, and signs a leaf with the cluster's
//! issuer.
//!
//! Tokens ([`TokenAuth`]) are Remora's own (`rmt1.`, [`crate::token`]) and/or Kubernetes
//! service-account tokens ([`crate::sa_token`]), as `identity.token_auth` says; with both, a
//! token starting `rmt1.` is Remora's and any other a service-account token.
//!
//! Status codes (docs/wire-protocol.md#identities): `InvalidArgument` for a missing field, a
//! malformed CSR, a bad Remora token or a service-account token that is not a JWT at all;
//! `FailedPrecondition` when the token does not authenticate the identity (a service-account
//! token with a bad signature, another audience or issuer, out of its validity, or for another
//! service account; a Remora token for another identity), the identity is not this cluster's,
//! or the CSR does not match the identity; `Unavailable` when no issuer is usable. Every
//! refusal is logged (never with the token) and counted by reason.

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
use crate::sa_token::{MAX_TOKEN_BYTES, SaTokenVerifier};
use crate::token::{TokenError, TokenKey};

/// The kinds of token Certify accepts (at least one is set).
#[derive(Clone, Debug, Default)]
pub struct TokenAuth {
    /// Remora's tokens, verified with this key.
    pub remora: Option<TokenKey>,
    /// Kubernetes service-account tokens.
    pub kubernetes: Option<SaTokenVerifier>,
}

impl From<TokenKey> for TokenAuth {
    fn from(key: TokenKey) -> Self {
        TokenAuth {
            remora: Some(key),
            kubernetes: None,
        }
    }
}

/// A refused token: the gRPC code, the metric reason and the message.
type Refusal = (Code, &'static str, String);

impl TokenAuth {
    /// The identity `token` authenticates, which must be `requested`; `auth` names the kind
    /// of token for the log.
    fn authenticate(
        &self,
        token: &[u8],
        requested: &Name,
        now: SystemTime,
    ) -> Result<&'static str, Refusal> {
        let remora_form = token.trim_ascii_start().starts_with(b"rmt1.");
        match (&self.remora, &self.kubernetes) {
            (Some(key), None) => Self::remora(key, token, requested, now),
            (Some(key), Some(_)) if remora_form => Self::remora(key, token, requested, now),
            (_, Some(sa)) => match sa.verify(token, requested, now) {
                Ok(_) => Ok("kubernetes"),
                Err(e) => {
                    let code = if e.is_malformed() {
                        Code::InvalidArgument
                    } else {
                        Code::FailedPrecondition
                    };
                    Err((code, e.reason(), format!("service-account token: {e}")))
                }
            },
            (None, None) => Err((
                Code::Unavailable,
                "no_token_auth",
                "this control plane accepts no kind of token".into(),
            )),
        }
    }

    fn remora(
        key: &TokenKey,
        token: &[u8],
        requested: &Name,
        now: SystemTime,
    ) -> Result<&'static str, Refusal> {
        let claims = key.verify(token, now).map_err(|e| {
            let reason = match e {
                TokenError::Expired => "token_expired",
                _ => "bad_token",
            };
            (Code::InvalidArgument, reason, format!("bad token: {e}"))
        })?;
        if claims.identity != *requested {
            return Err((
                Code::FailedPrecondition,
                "not_authenticated",
                format!(
                    "the token authenticates {}, not {requested}",
                    claims.identity
                ),
            ));
        }
        Ok("remora")
    }
}

/// The identity service of one cluster.
#[derive(Debug, Clone)]
pub struct IdentityService {
    config: Arc<Config>,
    issuer: Arc<IssuerStore>,
    tokens: TokenAuth,
    metrics: IdentityMetrics,
}

impl IdentityService {
    pub fn new(
        config: Arc<Config>,
        issuer: Arc<IssuerStore>,
        tokens: TokenAuth,
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
        if req.token.len() > MAX_TOKEN_BYTES {
            return Err(self.refuse(
                requested,
                Code::InvalidArgument,
                "bad_token",
                format!(
                    "the token is {} bytes, more than the {MAX_TOKEN_BYTES} accepted",
                    req.token.len()
                ),
            ));
        }
        let auth = self
            .tokens
            .authenticate(&req.token, &identity, SystemTime::now())
            .map_err(|(code, reason, detail)| self.refuse(requested, code, reason, detail))?;
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
        info!(%identity, auth, valid_for = ?issued.valid_until.duration_since(SystemTime::now()).unwrap_or_default(), "issued");
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
