//! The `[policy]` section of the config file as serde reads it: Linkerd's policy resources
//! (`Server`, `AuthorizationPolicy` with a `ServerAuthorization`-style client, and
//! `HTTPLocalRateLimitPolicy`) and the Gateway API's `HTTPRoute` and `GRPCRoute`, each field
//! named as the resource names it, in snake case. [`super::model`] validates these; nothing
//! here is checked beyond its type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::is_false;

/// `[policy]`: the cluster's policy defaults and its policy resources.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// The policy of ports no server selects (Linkerd's `proxy.defaultInboundPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_inbound_policy: Option<String>,
    /// The cluster's networks (Linkerd's `clusterNetworks`), CIDRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_networks: Option<Vec<String>>,
    /// Where kubelet probes come from (Linkerd's `policyController.probeNetworks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_networks: Option<Vec<String>>,
    /// Protocol detection's timeout, inbound and outbound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_timeout: Option<String>,
    /// Configured routes let clients set retries and timeouts with `l5d-*` request headers
    /// (the policy controller's `--allow-l5d-request-headers`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_l5d_request_headers: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<RawPolicyServer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorizations: Vec<RawAuthorization>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RawRateLimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<RawRoute<RawHttpMatch>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_routes: Vec<RawRoute<RawGrpcMatch>>,
}

impl RawPolicy {
    /// Whether nothing is set (the section is left out of a written config).
    pub fn is_empty(&self) -> bool {
        self.default_inbound_policy.is_none()
            && self.cluster_networks.is_none()
            && self.probe_networks.is_none()
            && self.detect_timeout.is_none()
            && !self.allow_l5d_request_headers
            && self.servers.is_empty()
            && self.authorizations.is_empty()
            && self.rate_limits.is_empty()
            && self.http_routes.is_empty()
            && self.grpc_routes.is_empty()
    }
}

/// A Linkerd `Server`: one port of the pods it selects.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyServer {
    pub name: String,
    pub namespace: String,
    pub pod_selector: RawPodSelector,
    /// A port number, or the name of a service port the pod serves.
    pub port: RawPortRef,
    /// `unknown` (detect, the default), `HTTP/1`, `HTTP/2`, `gRPC`, `opaque` or `TLS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
    /// What is allowed beyond the authorizations: a default policy's name (default `deny`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_policy: Option<String>,
}

/// Which pods of the namespace a server selects: every criterion given must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPodSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<RawExpression>,
    /// Pod names (Remora's addition: pods need not carry labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpression {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A port by number or by name.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RawPortRef {
    Number(i64),
    Name(String),
}

/// What a policy applies to (`targetRef`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An authorization: which clients may reach its target.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorization {
    pub name: String,
    pub namespace: String,
    /// A `Server`, an `HTTPRoute` or `GRPCRoute` of a server, or the `Namespace` (every server
    /// in it).
    pub target_ref: RawTargetRef,
    pub client: RawClient,
    /// Logged by the proxy whenever it admits a request or connection (Linkerd's `audit`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub audit: bool,
}

/// The clients an authorization admits (a `ServerAuthorization`'s `client`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// Client networks; unset: the cluster's networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<RawNetwork>>,
    /// Any client, meshed or not.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unauthenticated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_tls: Option<RawMeshTls>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeshTls {
    /// Any mesh TLS client, identified or not.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unauthenticated_tls: bool,
    /// Identities: exact, `*.suffix`, or `*` (any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<RawServiceAccount>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceAccount {
    pub name: String,
    /// Default: the resource's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// An `HTTPLocalRateLimitPolicy`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub name: String,
    pub namespace: String,
    /// The `Server` it limits.
    pub target_ref: RawTargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<RawLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<RawLimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RawLimitOverride>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub requests_per_second: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitOverride {
    pub requests_per_second: u32,
    /// Service accounts (`kind = "ServiceAccount"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_refs: Vec<RawClientRef>,
    /// Exact identities (Remora's addition: clients of other trust domains).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// An `HTTPRoute` (`M` = [`RawHttpMatch`]) or a `GRPCRoute` (`M` = [`RawGrpcMatch`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute<M> {
    pub name: String,
    pub namespace: String,
    /// A `Service` (and port) for clients' outbound traffic, or a `Server` for the pods'
    /// inbound traffic.
    pub parent_refs: Vec<RawParentRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RawRule<M>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service` or `Server`.
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A service's port; unset: every port of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule<M> {
    /// Unset or empty: every request.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<M>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RawFilter>,
    /// Unset or empty: the parent service itself.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<RawBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RawTimeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RawRetry>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RawPathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RawValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<RawValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A header or query parameter match.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawValueMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpcMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<RawGrpcMethod>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RawValueMatch>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpcMethod {
    /// `Exact` (the only one the proxy matches).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Unset: any service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Unset: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A filter: `type` names it, and the field of that name holds its settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect` or
    /// `FailureInjector`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<RawHeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<RawHeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RawRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_injector: Option<RawFailureInjector>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<RawHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<RawHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RawPathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Default 302, as the Gateway API has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// Fails requests on purpose: an HTTP route's by `status`, a gRPC route's by `code`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailureInjector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Default: every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<RawRatio>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRatio {
    pub numerator: u32,
    pub denominator: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Default: the parent's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RawFilter>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// The whole request, start to finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// From the end of the request to the end of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// No frame either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Retries after the first attempt (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// HTTP routes: statuses to retry (`5xx`, `gateway-error`, `429`, `500-504`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// gRPC routes: codes to retry (`cancelled`, `deadline-exceeded`, `internal`,
    /// `resource-exhausted`, `unavailable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc: Vec<String>,
    /// Per attempt, until response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<RawBackoff>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub min: String,
    pub max: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f32>,
}
