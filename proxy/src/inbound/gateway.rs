//! Gateway mode (`remora gateway`): the cluster's entry point for other clusters' pods on
//! separate networks.
//!
//! ```text
//! east proxy ── mTLS (client: the east caller's identity), ALPN transport.l5d.io/v1 ──► :4143
//!   transport header { name: web.shop.svc.cluster.local, port: 8080, session_protocol }
//! gateway (inbound, direct path)
//!   ├─ name an IP literal ─────────────────────► refused (gateway_ip_literal)
//!   ├─ name not among this cluster's exports ──► refused (gateway_not_exported)
//!   ├─ port not among the service's ports ─────► refused (gateway_port_not_exported)
//!   ├─ session protocol HTTP: per request ─► `forwarded` naming this gateway already? 508
//!   │      append forwarded: by=<gateway>;for=<caller>;host=<target>;proto=https
//!   │      → the outbound router (discovery, balancing, retries, mTLS to the pod)
//!   │      golden metrics: inbound (caller, target) and outbound (target, pod)
//!   └─ otherwise: opaque bytes to one of the service's pods, over mTLS
//! ```
//!
//! The exported names come from the cluster's own control plane: the gateway watches
//! `remora.multicluster.v1.Exports` with its own workload identity, which the control plane
//! allows (`multicluster.gateway_identity`), each with the ports the service declares: only
//! those may be named (a service that declares none exposes none). Until the first answer
//! nothing is exported, so the gateway refuses everything (fails closed).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::http::RequestBody;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use remora_api::multicluster as pb;
use remora_identity::Name;
use remora_metrics::labels::TargetLabels;
use remora_metrics::tcp::{Direction, Peer, RefuseReason, TcpLabels, Tls};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use remora_runtime::Backoff;

use super::InboundCtx;
use crate::discovery::Pick;
use crate::error::{self, ProxyError};
use crate::http::Body;
use crate::http::detect::Protocol;
use crate::http::record;
use crate::outbound::connect::{Connector, Destination};
use crate::outbound::http::HttpOutbound;
use crate::tls::mtls::LocalTls;
use crate::transport::forward::Counted;
use crate::transport::header::{SessionProtocol, TransportHeader};
use crate::transport::io::BoxIo;
use crate::transport::tcp::proxy;

const FORWARDED: HeaderName = header::FORWARDED;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The exported service names (`web.shop.svc.cluster.local`) a gateway may forward to, each
/// with the ports it declares.
pub type ExportMap = HashMap<String, BTreeSet<u16>>;
pub type Exports = watch::Receiver<Arc<ExportMap>>;

/// A gateway: the outbound it forwards through and what it may forward to.
#[derive(Debug)]
pub struct Gateway {
    pub outbound: Arc<HttpOutbound>,
    pub exports: Exports,
    /// This gateway's own identity (`forwarded: by=`).
    pub identity: Name,
    /// Dials the service's pods for opaque connections (refusals counted as inbound).
    connector: Connector,
}

impl Gateway {
    pub fn new(outbound: Arc<HttpOutbound>, exports: Exports, identity: Name) -> Self {
        let connector = Connector::new(outbound.ctx.inputs.clone(), Direction::Inbound);
        Gateway {
            outbound,
            exports,
            identity,
            connector,
        }
    }

    /// Serves a direct-path connection whose transport header names `name`: refuses what is not
    /// exported, then proxies HTTP per request or forwards opaque bytes.
    pub async fn serve(
        self: &Arc<Self>,
        ctx: &InboundCtx,
        io: BoxIo,
        client: Name,
        header: TransportHeader,
        name: &str,
    ) {
        if name
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok()
        {
            ctx.tcp
                .metrics
                .refused(Direction::Inbound, RefuseReason::GatewayIpLiteral);
            warn!(client.id = %client, %name, "gateway: refusing an IP address (not an open relay)");
            return;
        }
        let port_exported = match self.exports.borrow().get(name) {
            None => {
                ctx.tcp
                    .metrics
                    .refused(Direction::Inbound, RefuseReason::GatewayNotExported);
                warn!(
                    client.id = %client,
                    %name,
                    "gateway: refusing a name that is not one of this cluster's exported services"
                );
                return;
            }
            Some(ports) => ports.contains(&header.port),
        };
        if !port_exported {
            ctx.tcp
                .metrics
                .refused(Direction::Inbound, RefuseReason::GatewayPortNotExported);
            warn!(
                client.id = %client,
                %name,
                port = header.port,
                "gateway: refusing a port the exported service does not declare"
            );
            return;
        }
        let target: Arc<str> = Arc::from(format!("{name}:{}", header.port));
        let client_id: Arc<str> = Arc::from(client.as_str());
        let labels = TcpLabels::new(Direction::Inbound, Peer::Src)
            .with_tls(Tls::Established, Some(client_id.clone()));
        let span = info_span!("gateway", client.id = %client, %target);
        match header.protocol {
            Some(p) => {
                let protocol = match p {
                    SessionProtocol::Http1 => Protocol::Http1,
                    SessionProtocol::Http2 => Protocol::Http2,
                };
                let io: BoxIo = Box::new(Counted::new(io, ctx.tcp.metrics.open(labels), None));
                let (gw, http_metrics) = (self.clone(), ctx.inputs.http_metrics.clone());
                let drain = ctx.inputs.drain.clone();
                let gate = ctx.inputs.gate(Direction::Inbound);
                crate::http::server::serve(
                    io,
                    protocol,
                    ctx.config.http,
                    drain,
                    Some(gate),
                    move |req| {
                        let (gw, target, client_id) =
                            (gw.clone(), target.clone(), client_id.clone());
                        let golden = http_metrics.golden.clone();
                        async move {
                            let start = Instant::now();
                            let route = golden.route(&TargetLabels {
                                authority: Some(target.clone()),
                                tls: Tls::Established,
                                peer_id: Some(client_id.clone()),
                                ..TargetLabels::new(Direction::Inbound)
                            });
                            let rsp = gw.request(req, &target, &client_id).await;
                            record::finish(Some(route), start, rsp, None)
                        }
                    },
                )
                .instrument(span)
                .await
            }
            None => self.opaque(ctx, io, &target, labels).instrument(span).await,
        }
    }

    /// One HTTP request through the gateway.
    async fn request(
        &self,
        mut req: Request<RequestBody>,
        target: &str,
        client: &str,
    ) -> Response<Body> {
        let me = self.identity.as_str();
        let looped = req
            .headers()
            .get_all(FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split([',', ';']))
            .any(|pair| pair.trim().strip_prefix("by=").map(|b| b.trim_matches('"')) == Some(me));
        if looped {
            warn!(%target, "gateway: the request already passed this gateway; refusing the loop");
            let metrics = &self.outbound.ctx.inputs.http_metrics;
            return error::respond(ProxyError::GatewayLoop, Direction::Inbound, metrics, true);
        }
        let forwarded = format!("by={me};for={client};host={target};proto=https");
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            req.headers_mut().append(FORWARDED, v);
        }
        // Route to the named service, whatever authority the caller's app used.
        set_authority(&mut req, target);
        debug!(%target, "gateway request");
        // Boxed: the gateway records its own side around the outbound's recording body.
        self.outbound
            .handle(None, req)
            .await
            .map(crate::http::boxed)
    }

    /// Opaque bytes to one of the target's pods, over mTLS with its identity.
    async fn opaque(&self, ctx: &InboundCtx, io: BoxIo, target: &str, labels: TcpLabels) {
        let Some(d) = &ctx.inputs.discovery else {
            ctx.refuse(RefuseReason::NoEndpoints);
            warn!(%target, "gateway: no discovery configured");
            return;
        };
        let mut dest = match d.resolver.resolve(target).pick(d.timeout).await {
            Pick::Endpoint(ep, picked) => Destination::picked(ep, picked, None),
            _ => {
                ctx.refuse(RefuseReason::NoEndpoints);
                warn!(%target, "gateway: no endpoints");
                return;
            }
        };
        let conn = match self.connector.connect(&mut dest, None).await {
            Ok(c) => c,
            Err(e) => {
                warn!(%target, error = %e, "gateway: cannot reach the service's pod");
                io.reset();
                return;
            }
        };
        // Both sides are counted as the caller's inbound connection to the target.
        let dst_labels = dest.endpoint.as_ref().map(|e| e.dst_labels.clone());
        let labels = labels.with_target(dest.addr, None, dst_labels);
        proxy(&ctx.tcp, io, conn.io, labels, conn.addr).await
    }
}

/// An exported service's name and the ports it declares (ports out of range are dropped).
fn exported_ports(s: &pb::ExportedService) -> (String, BTreeSet<u16>) {
    let ports = s
        .ports
        .iter()
        .filter_map(|p| u16::try_from(p.port).ok())
        .filter(|&p| p != 0)
        .collect();
    (s.fqdn.clone(), ports)
}

/// Points the request at `target` (`host:port`): the URI's authority and `Host`.
fn set_authority<B>(req: &mut Request<B>, target: &str) {
    if let Ok(v) = HeaderValue::from_str(target) {
        req.headers_mut().insert(header::HOST, v);
    }
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = target.parse().ok();
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Follows the cluster's exported services from its control plane at `addr` (which must present
/// `control`), authenticating with this gateway's own certificate, and publishes their names.
/// Retries with backoff; keeps the last answer while the control plane is unreachable.
pub async fn watch_exports(
    addr: remora_runtime::channel::ControlAddr,
    control: Name,
    tls: LocalTls,
    tx: watch::Sender<Arc<ExportMap>>,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    if !tls.enabled() {
        warn!("gateway: no identity, so no exports: every request will be refused");
        return;
    }
    loop {
        let Some(creds) = tls.wait(Duration::from_secs(60)).await else {
            backoff.wait().await;
            continue;
        };
        let tls = remora_runtime::channel::ChannelTls::fixed(
            control.clone(),
            creds.tls.client.as_ref().clone(),
        );
        let channel = match remora_runtime::channel::ControlChannel::new(&addr, tls) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "gateway: cannot set up the exports channel");
                backoff.wait().await;
                continue;
            }
        };
        let mut moved = channel.moved();
        let mut client = pb::exports_client::ExportsClient::new(channel);
        let req = pb::WatchRequest {
            cluster: String::new(),
            endpoints: false,
        };
        match client.watch(req).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                // Every answer starts with a snapshot, which replaces what a previous watch left.
                let mut services = std::collections::BTreeMap::new();
                let mut first = true;
                while let Ok(Some(update)) = stream.message().await {
                    update.apply(&mut services);
                    let names: ExportMap = services.values().map(exported_ports).collect();
                    if first {
                        info!(
                            exported = names.len(),
                            "gateway: following the cluster's exports"
                        );
                        first = false;
                    }
                    backoff.reset();
                    tx.send_replace(Arc::new(names));
                }
                warn!("gateway: the exports watch ended; reconnecting");
            }
            Err(status) => {
                warn!(code = ?status.code(), error = %status.message(), "gateway: cannot watch the cluster's exports");
            }
        }
        moved.or_backoff(&mut backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_the_target() {
        let mut r = Request::builder()
            .uri("http://web-west.shop.svc.cluster.local:8080/a?b")
            .header("host", "web-west.shop.svc.cluster.local:8080")
            .body(())
            .unwrap();
        set_authority(&mut r, "web.shop.svc.cluster.local:8080");
        assert_eq!(r.uri(), "http://web.shop.svc.cluster.local:8080/a?b");
        assert_eq!(r.headers()["host"], "web.shop.svc.cluster.local:8080");
    }
}
