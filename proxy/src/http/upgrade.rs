//! `Upgrade` (e.g. WebSocket) and `CONNECT` requests: sent on an HTTP/1 connection of their own;
//! once the peer answers 101 (or 2xx to CONNECT), both connections become a byte tunnel.

use super::RequestBody;
use super::h1server::on_upgrade;
use http::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::{Body, boxed};
use crate::transport::io::BoxIo;

/// Whether a request asks to leave HTTP (Upgrade or CONNECT).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        || (req.version() <= http::Version::HTTP_11
            && req.headers().contains_key(header::UPGRADE)
            && super::connection_has(req.headers(), "upgrade"))
}

/// Sends an upgrade request on `io` (a fresh connection to the peer) and, when the peer agrees,
/// joins the two upgraded connections.
pub async fn tunnel(mut req: Request<RequestBody>, io: BoxIo) -> Result<Response<Body>, String> {
    let client_upgrade = on_upgrade(&mut req).wait();
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upgrade connection ended");
        }
    });
    let is_connect = req.method() == Method::CONNECT;
    let (parts, body) = req.into_parts();
    let mut rsp = sender
        .send_request(Request::from_parts(parts, boxed(body)))
        .await
        .map_err(|e| e.to_string())?;
    let upgraded = rsp.status() == StatusCode::SWITCHING_PROTOCOLS
        || (is_connect && rsp.status().is_success());
    if upgraded {
        let server_upgrade = hyper::upgrade::on(&mut rsp);
        let server_upgrade = async move { server_upgrade.await.map_err(|e| e.to_string()) };
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, server_upgrade) {
                Ok((mut client, server)) => {
                    let mut server = TokioIo::new(server);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                        debug!(error = %e, "tunnel ended with an error");
                    }
                }
                Err(e) => debug!(error = %e, "upgrade failed"),
            }
        });
    }
    let (parts, body) = rsp.into_parts();
    Ok(Response::from_parts(parts, boxed(body)))
}
