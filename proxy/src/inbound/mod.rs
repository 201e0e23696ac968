//! The inbound listener: other pods' connections to this pod.
//!
//! ```text
//! accept ─► original destination
//!   ├─ addressed to the inbound port itself: the DIRECT path
//!   │    mTLS for our identity, a client certificate, ALPN transport.l5d.io/v1, a transport
//!   │    header within the detection timeout → policy(header port, client) → the app at
//!   │    <pod address>:<header port>; a header naming a service is a gateway request (refused)
//!   ├─ not one of this pod's addresses → refused (not an open relay)
//!   ├─ one of the proxy's own listeners → refused (loop)
//!   └─ redirected to an app port: read up to 8 KiB within the detection timeout, then
//!        ClientHello, SNI = our identity → terminate mTLS → policy(port, client identity)
//!        other ClientHello / unreadable TLS → passed through untouched (the app's own TLS)
//!        anything else, or silence        → plaintext
//!      → policy(port, unauthenticated) for the last two → the app at the original destination
//! ```

//!
//! # Layout
//! - this module: the listener, the decision per connection, detection and mTLS termination
//!   of redirected connections, the app side.
//! - [`direct`]: the direct path (mTLS with a transport header on the inbound port).
//! - [`http`]: requests to the app (`l5d-client-id`, `l5d-orig-proto`, the app pool).
//! - [`policy`]: authorization per port.
//! - [`gateway`]: gateway mode, through the outbound's router.

pub mod direct;
pub mod gateway;
pub mod http;
pub mod policy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use remora_identity::Name;
use remora_metrics::tcp::{Direction, Peer as PeerSide, RefuseReason, TcpLabels, Tls};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, info, info_span, warn};

use self::http::{HttpInbound, InboundConn};
use self::policy::{Denied, InboundPolicy, Peer};
use crate::http::detect::{self, DetectError, Protocol};
use crate::http::pool::Pool;
use crate::http::server::Limits;
use crate::inputs::ProxyInputs;
use crate::tls::detect::{self as tls_detect, Detected};
use crate::tls::mtls::{self, no_tls};
use crate::transport::forward::Counted;
use crate::transport::io::{BoxIo, PrefixedIo, read_prefix};
use crate::transport::listen::{AcceptCtx, serve};
use crate::transport::orig_dst::{OrigDst, original_dst};
use crate::transport::own::OwnAddrs;
use crate::transport::tcp::{TcpCtx, proxy_to};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward to the app at this address (the pod's own address, the original port).
    Forward(SocketAddr),
    /// The direct path: mTLS with a transport header.
    Direct,
    Refuse(RefuseReason),
}

pub fn decide(orig: OrigDst, own: &OwnAddrs) -> Decision {
    match orig {
        OrigDst::NotRedirected => Decision::Direct,
        OrigDst::Redirected(dst) if !own.ips.contains(dst.ip()) => {
            Decision::Refuse(RefuseReason::NotLocal)
        }
        OrigDst::Redirected(dst) if own.is_own_listener(dst) => {
            Decision::Refuse(RefuseReason::Loop)
        }
        OrigDst::Redirected(dst) => Decision::Forward(dst),
    }
}

/// The inbound's own settings, beside the inputs it shares with the outbound.
#[derive(Clone, Debug)]
pub struct InboundConfig {
    /// How long to wait for a client's first bytes (TLS or not) before treating it as
    /// plaintext; also bounds the handshake and the transport header.
    pub detect_timeout: Duration,
    pub policy: InboundPolicy,
    /// What the inbound's HTTP server accepts from peers.
    pub http: Limits,
}

/// Everything the inbound needs per connection.
#[derive(Debug)]
pub struct InboundCtx {
    pub inputs: Arc<ProxyInputs>,
    pub config: InboundConfig,
    pub tcp: TcpCtx,
    /// Gateway mode: direct-path connections naming a service are forwarded to it.
    pub gateway: Option<Arc<gateway::Gateway>>,
}

#[derive(Debug)]
pub struct Inbound {
    listeners: Vec<TcpListener>,
    accept: AcceptCtx,
    http: Arc<HttpInbound>,
}

impl Inbound {
    pub fn new(
        listeners: Vec<TcpListener>,
        accept: AcceptCtx,
        inputs: Arc<ProxyInputs>,
        config: InboundConfig,
        gateway: Option<Arc<gateway::Gateway>>,
    ) -> Self {
        let ctx = InboundCtx {
            tcp: inputs.tcp(Direction::Inbound),
            inputs,
            config,
            gateway,
        };
        Inbound {
            listeners,
            accept,
            http: Arc::new(HttpInbound {
                pool: Pool::with_evictor(ctx.inputs.pool()),
                ctx: Arc::new(ctx),
            }),
        }
    }

    pub async fn run(self) {
        let http = self.http;
        serve(self.listeners, self.accept, move |stream, client| {
            let http = http.clone();
            async move { handle(&http, stream).await }.instrument(info_span!("inbound", %client))
        })
        .await
    }
}

impl InboundCtx {
    fn refuse(&self, reason: RefuseReason) {
        self.tcp.metrics.refused(Direction::Inbound, reason);
    }

    fn local_id(&self) -> Option<Name> {
        self.inputs.tls.now().map(|c| c.name.clone())
    }

    fn check_policy(
        &self,
        port: u16,
        peer: &Peer,
        client: Option<std::net::IpAddr>,
    ) -> Result<(), Denied> {
        match self.config.policy.check(port, peer, client) {
            Ok(()) => {
                if self.config.policy.for_port(port) == &crate::inbound::policy::Policy::Audit {
                    info!(peer = ?peer, ?client, port, "connection allowed by the audit policy");
                }
                Ok(())
            }
            Err(denied) => {
                self.refuse(match denied {
                    Denied::Unauthenticated => RefuseReason::PolicyUnauthenticated,
                    Denied::OutsideCluster => RefuseReason::PolicyOutsideCluster,
                    Denied::ForeignTrustDomain => RefuseReason::PolicyForeignTrustDomain,
                    Denied::NotAllowed => RefuseReason::PolicyNotAllowed,
                    Denied::Deny => RefuseReason::PolicyDeny,
                });
                let peer = match peer {
                    Peer::Authenticated(id) => id.to_string(),
                    Peer::Unauthenticated => "an unauthenticated peer".to_string(),
                };
                warn!(%peer, port, reason = %denied, "connection refused by policy");
                Err(denied)
            }
        }
    }
}

async fn handle(http: &Arc<HttpInbound>, stream: TcpStream) {
    let ctx = &*http.ctx;
    let orig = match original_dst(&stream) {
        Ok(orig) => orig,
        Err(e) => {
            warn!(error = %e, "cannot read the original destination; closing");
            ctx.refuse(RefuseReason::NoOriginalDst);
            return;
        }
    };
    match decide(orig, &ctx.inputs.own) {
        Decision::Forward(app) => {
            redirected(http, stream, app)
                .instrument(info_span!("app", %app))
                .await
        }
        Decision::Direct => direct::serve(http, stream).await,
        Decision::Refuse(reason) => {
            ctx.refuse(reason);
            match reason {
                RefuseReason::NotLocal => warn!(
                    ?orig,
                    "refusing to forward: the original destination is not one of this pod's \
                     addresses (the inbound proxy is not a relay)"
                ),
                _ => warn!(
                    ?orig,
                    "refusing a connection whose destination is one of this proxy's own listeners"
                ),
            }
        }
    }
}

/// Reads the first bytes (up to 8 KiB, within the detection timeout) and classifies them.
async fn detect_tls(
    ctx: &InboundCtx,
    stream: &mut TcpStream,
) -> std::io::Result<(Detected, bytes::Bytes)> {
    let prefix = read_prefix(
        stream,
        tls_detect::MAX_DETECT,
        ctx.config.detect_timeout,
        |buf| tls_detect::detect(buf) != Detected::NeedMore,
    )
    .await?;
    let detected = match tls_detect::detect(&prefix) {
        // Silence, or a partial record when the timeout or EOF came: not TLS we can use.
        Detected::NeedMore if prefix.is_empty() => Detected::NotTls,
        Detected::NeedMore => Detected::TlsUnreadable,
        d => d,
    };
    Ok((detected, prefix))
}

/// The checks a connection passed, and what is known of its peer.
struct Admitted {
    client_id: Option<Name>,
    labels: TcpLabels,
    /// Policy's verdict; HTTP connections that fail it are answered 403 per request.
    allowed: Result<(), Denied>,
}

async fn redirected(http: &Arc<HttpInbound>, mut stream: TcpStream, app: SocketAddr) {
    let ctx = &*http.ctx;
    let client = stream.peer_addr().ok().map(|a| a.ip());
    if ctx.inputs.is_opaque(app.port()) {
        // Server-speaks-first ports are not detected: mesh peers reach them through the direct
        // path, so what arrives here is plaintext.
        if ctx
            .check_policy(app.port(), &Peer::Unauthenticated, client)
            .is_ok()
        {
            let labels = TcpLabels::new(Direction::Inbound, PeerSide::Src)
                .with_tls(Tls::NoIdentity(no_tls::NO_TLS_FROM_REMOTE), None);
            to_app(ctx, Box::new(stream), app, labels).await;
        }
        return;
    }
    let (detected, prefix) = match detect_tls(ctx, &mut stream).await {
        Ok(d) => d,
        Err(e) => {
            debug!(error = %e, "connection failed during detection");
            return;
        }
    };
    let io = PrefixedIo::new(prefix, stream);
    let for_us = matches!(&detected, Detected::ClientHello { sni: Some(sni) }
        if ctx.local_id().is_some_and(|id| id.as_str() == sni));
    let (io, admitted): (BoxIo, Admitted) = if for_us {
        let Some(creds) = ctx.inputs.tls.now() else {
            return;
        };
        let accepted = match mtls::accept(io, &creds, ctx.config.detect_timeout).await {
            Ok(a) => a,
            Err(failure) => {
                ctx.refuse(RefuseReason::TlsHandshake);
                warn!(error = %failure, "TLS handshake failed; closing");
                return;
            }
        };
        let peer = match &accepted.client_id {
            Some(id) => Peer::Authenticated(id.clone()),
            None => Peer::Unauthenticated,
        };
        debug!(client.id = ?accepted.client_id.as_ref().map(|n| n.to_string()), "mTLS terminated");
        let labels = TcpLabels::new(Direction::Inbound, PeerSide::Src).with_tls(
            Tls::Established,
            accepted.client_id.as_ref().map(|n| Arc::from(n.as_str())),
        );
        let admitted = Admitted {
            allowed: ctx.check_policy(app.port(), &peer, client),
            client_id: accepted.client_id,
            labels,
        };
        (Box::new(accepted.io), admitted)
    } else {
        let passthrough = matches!(
            detected,
            Detected::ClientHello { .. } | Detected::TlsUnreadable
        );
        let tls = if passthrough {
            debug!("TLS not addressed to this proxy: passing it through to the app");
            Tls::Opaque
        } else {
            Tls::NoIdentity(no_tls::NO_TLS_FROM_REMOTE)
        };
        let allowed = ctx.check_policy(app.port(), &Peer::Unauthenticated, client);
        if passthrough {
            // The app's own TLS: bytes only.
            if allowed.is_ok() {
                let labels = TcpLabels::new(Direction::Inbound, PeerSide::Src).with_tls(tls, None);
                to_app(ctx, Box::new(io), app, labels).await;
            }
            return;
        }
        let admitted = Admitted {
            client_id: None,
            labels: TcpLabels::new(Direction::Inbound, PeerSide::Src).with_tls(tls, None),
            allowed,
        };
        (Box::new(io), admitted)
    };
    serve_app(http, io, app, admitted, None).await;
}

/// Serves a connection for the app: HTTP per request when it is HTTP (or `protocol` says so),
/// bytes otherwise.
async fn serve_app(
    http: &Arc<HttpInbound>,
    mut io: BoxIo,
    app: SocketAddr,
    mut admitted: Admitted,
    protocol: Option<Protocol>,
) {
    let ctx = &*http.ctx;
    admitted.labels = admitted.labels.with_target(app, None, None);
    let protocol = match protocol {
        Some(p) => Some(p),
        None if ctx.inputs.is_opaque(app.port()) => None,
        None => match detect::read(&mut io, ctx.config.detect_timeout).await {
            Ok((p, prefix)) => {
                io = Box::new(PrefixedIo::new(prefix, io));
                p
            }
            Err(e @ DetectError::AmbiguousLength) => {
                ctx.refuse(RefuseReason::MalformedHttp);
                return warn!("{e}");
            }
            Err(DetectError::Io(_)) => return,
        },
    };
    match (protocol, admitted.allowed) {
        (Some(protocol), allowed) => {
            let io: BoxIo = Box::new(Counted::new(
                io,
                ctx.tcp.metrics.open(admitted.labels.clone()),
                None,
            ));
            let http = http.clone();
            let conn = Arc::new(InboundConn::new(
                app,
                admitted.client_id,
                allowed,
                admitted.labels.target.clone(),
            ));
            crate::http::server::serve(io, protocol, ctx.config.http, move |req| {
                let (http, conn) = (http.clone(), conn.clone());
                async move { http.serve(&conn, req).await }
            })
            .await
        }
        (None, Ok(())) => to_app(ctx, io, app, admitted.labels).await,
        (None, Err(_)) => {}
    }
}

/// Connects to the app and forwards.
async fn to_app(ctx: &InboundCtx, client: BoxIo, app: SocketAddr, labels: TcpLabels) {
    proxy_to(&ctx.tcp, client, app, labels.with_target(app, None, None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::orig_dst::LocalIps;

    #[test]
    fn decisions() {
        let own = OwnAddrs::new(
            vec![
                "0.0.0.0:4143".parse().unwrap(),
                "127.0.0.1:4191".parse().unwrap(),
            ],
            LocalIps::new(),
        );
        assert_eq!(decide(OrigDst::NotRedirected, &own), Decision::Direct);
        assert_eq!(
            decide(
                OrigDst::Redirected("192.0.2.10:8080".parse().unwrap()),
                &own
            ),
            Decision::Refuse(RefuseReason::NotLocal)
        );
        let app = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            decide(OrigDst::Redirected(app), &own),
            Decision::Forward(app)
        );
        assert_eq!(
            decide(OrigDst::Redirected("127.0.0.1:4191".parse().unwrap()), &own),
            Decision::Refuse(RefuseReason::Loop)
        );
    }
}
