//! The direct path: a peer proxy's mTLS connection addressed to the inbound port itself.
//!
//! ```text
//! ClientHello with SNI = our identity ─► mTLS, a client certificate required
//!   ─► ALPN transport.l5d.io/v1 ─► transport header (within the detection timeout)
//!        ├─ names a service ─► gateway mode (refused unless this proxy is a gateway)
//!        ├─ names one of our own listeners ─► refused (loop)
//!        ├─ a port the pod does not declare ─► refused (port_not_declared; `ports.rs`)
//!        └─ port P ─► the app at <pod address>:P under port P's policy, with the client's
//!                     identity: HTTP (per request) when the header's session protocol says
//!                     so, whatever the port's protocol; else bytes, authorized as TCP
//! ```
//!
//! Anything else on the inbound port is refused (`direct_not_mtls`) and counted.

use std::net::SocketAddr;
use std::sync::Arc;

use remora_metrics::tcp::{Direction, Peer as PeerSide, RefuseReason, TcpLabels, Tls};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info, info_span, warn};

use remora_metrics::inbound_policy::ClientTls as TlsLabel;

use super::http::HttpInbound;
use super::policy::ClientTls;
use super::ports::Verdict;
use super::{Admitted, detect_tls, forward_tcp, serve_app};
use crate::http::detect::Protocol;
use crate::tls::detect::Detected;
use crate::tls::mtls;
use crate::transport::header::{SessionProtocol, TransportHeader};
use crate::transport::io::PrefixedIo;

/// The direct path: mTLS with a client certificate and a transport header, or nothing.
pub(super) async fn serve(http: &Arc<HttpInbound>, mut stream: TcpStream) {
    let ctx = &*http.ctx;
    let refuse = |reason, why: &str| {
        ctx.refuse(reason);
        info!("refusing a direct connection to the inbound port: {why}");
    };
    let Some(creds) = ctx.inputs.tls.now() else {
        return refuse(
            RefuseReason::DirectNotMtls,
            "this proxy has no identity to terminate mTLS",
        );
    };
    let (detected, prefix) = match detect_tls(ctx, &mut stream).await {
        Ok(d) => d,
        Err(_) => return,
    };
    match &detected {
        Detected::ClientHello { sni: Some(sni) } if creds.name.as_str() == sni => {}
        _ => {
            return refuse(
                RefuseReason::DirectNotMtls,
                "it is not mTLS for this proxy's identity",
            );
        }
    }
    let Ok(client_ip) = stream.peer_addr().map(|a| a.ip()) else {
        return;
    };
    let pod_ip = match stream.local_addr() {
        Ok(a) => a.ip(),
        Err(_) => return,
    };
    let io = PrefixedIo::new(prefix, stream);
    let mut accepted = match mtls::accept(io, &creds, ctx.config.detect_timeout).await {
        Ok(a) => a,
        Err(failure) => {
            ctx.refuse(RefuseReason::TlsHandshake);
            warn!(error = %failure, "TLS handshake failed on the direct path; closing");
            return;
        }
    };
    let Some(client_id) = accepted.client_id.clone() else {
        return refuse(
            RefuseReason::DirectNotMtls,
            "the client presented no certificate",
        );
    };
    if !accepted.transport {
        return refuse(
            RefuseReason::DirectNotMtls,
            "the client did not negotiate transport.l5d.io/v1",
        );
    }
    let header = match tokio::time::timeout(
        ctx.config.detect_timeout,
        TransportHeader::read(&mut accepted.io),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            ctx.refuse(RefuseReason::BadTransportHeader);
            warn!(client.id = %client_id, error = %e, "bad transport header; closing");
            return;
        }
        Err(_) => {
            ctx.refuse(RefuseReason::BadTransportHeader);
            warn!(client.id = %client_id, "no transport header within the detection timeout; closing");
            return;
        }
    };
    if let Some(name) = header.name.clone() {
        let Some(gateway) = &ctx.gateway else {
            ctx.refuse(RefuseReason::GatewayUnsupported);
            warn!(client.id = %client_id, %name, "refusing a gateway request: this proxy is not a gateway");
            return;
        };
        return gateway
            .serve(ctx, Box::new(accepted.io), client_id, header, &name)
            .await;
    }
    let app = SocketAddr::new(pod_ip, header.port);
    if ctx.inputs.own.is_own_listener(app) {
        ctx.refuse(RefuseReason::Loop);
        warn!(%app, "the transport header names one of this proxy's own listeners; closing");
        return;
    }
    if ctx.direct_port(header.port).await == Verdict::NotDeclared {
        ctx.refuse(RefuseReason::PortNotDeclared);
        info!(
            client.id = %client_id,
            client.addr = %client_ip,
            port = header.port,
            "refusing a direct connection: the pod does not declare port {}",
            header.port
        );
        return;
    }
    debug!(client.id = %client_id, port = header.port, protocol = ?header.protocol, "direct connection");
    let id: Arc<str> = Arc::from(client_id.as_str());
    let labels = TcpLabels::new(Direction::Inbound, PeerSide::Src)
        .with_tls(Tls::Established, Some(id.clone()));
    let protocol = header.protocol.map(|p| match p {
        SessionProtocol::Http1 => Protocol::Http1,
        SessionProtocol::Http2 => Protocol::Http2,
    });
    // The target port's policy, with the peer's real identity.
    let admitted = Admitted {
        policy: ctx.conn_policy(
            app,
            client_ip,
            ClientTls::Established(Some(client_id.clone())),
            TlsLabel::Established(Some(id)),
        ),
        client_id: Some(client_id),
        labels,
    };
    let span = info_span!("direct", %app);
    match protocol {
        Some(p) => {
            serve_app(http, Box::new(accepted.io), app, admitted, Some(p))
                .instrument(span)
                .await
        }
        None => {
            let labels = admitted.labels.clone();
            forward_tcp(ctx, Box::new(accepted.io), app, labels, &admitted.policy)
                .instrument(span)
                .await
        }
    }
}
