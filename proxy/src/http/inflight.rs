//! The proxy's cap on HTTP requests in flight (`REMORA_HTTP_MAX_IN_FLIGHT`), shared by both
//! directions: every request the HTTP server (`crate::http::server`) takes holds one permit
//! from its head until its response body ends or is dropped, so an HTTP/2 stream holds one
//! for as long as it is open, whatever connection it is on. With none left, the request is
//! answered 503 at once (never handed to the app or a target) with an `l5d-proxy-error` that
//! starts with [`NOT_PROCESSED`], so a peer's outbound may send it to another endpoint; it is
//! counted in `http_proxy_errors_total{reason="in_flight_limit"}` and logged at most once per
//! [`LOG_EVERY`] (the listeners' period for their refusals too).
//!
//! The inbound's servers also give each client address at most a share of the cap
//! (`REMORA_INBOUND_PEER_CONNECTION_SHARE`, the share it has of the connection slots), so one
//! address cannot hold every permit: past it, its requests are answered the same way, counted
//! with `reason="peer_in_flight_limit"`. Each HTTP connection looks its address up once
//! ([`InFlight::gate_for`]); the table has an entry per address with a connection open.
//! Loopback and the pod's own addresses are exempt, as from the connection share.
//!
//! A permit is an atomic increment and decrement of one or two counters (and of their `Arc`s):
//! no lock, no allocation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http::StatusCode;
use hyper::body::{Frame, SizeHint};
use remora_metrics::http::HttpMetrics;
use remora_metrics::tcp::Direction;
use remora_runtime::log::Throttle;
use tracing::warn;

use super::{Body, BoxError};
use crate::error::{ErrorReason, NOT_PROCESSED, empty_response, error_response};
use crate::transport::listen::{Exempt, LOG_EVERY, share_of};

/// The reason label of a refusal at the proxy's cap.
pub const REASON: &str = "in_flight_limit";
/// The reason label of a refusal at a client address's share of it.
pub const PEER_REASON: &str = "peer_in_flight_limit";

/// The table of addresses is swept for entries nobody holds from this size on.
const SWEEP_AT: usize = 64;

/// The cap, shared by every HTTP server of one proxy.
#[derive(Clone, Debug)]
pub struct InFlight {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    used: AtomicUsize,
    /// The most one client address may hold, and who is exempt (`None`: no share).
    peer_limit: Option<(usize, Exempt)>,
    /// The permits each client address with an HTTP connection open holds.
    peers: Mutex<HashMap<IpAddr, Arc<AtomicUsize>>>,
    /// The table's size after its last sweep.
    swept_to: AtomicUsize,
    metrics: HttpMetrics,
    logged: Throttle,
}

/// The cap as one direction's HTTP servers apply it.
#[derive(Clone, Debug)]
pub struct Gate {
    cap: InFlight,
    direction: Direction,
    /// Whether a refusal carries `l5d-proxy-error` (the inbound: to identified peers only).
    annotate: bool,
    peer: Option<PeerRef>,
}

impl Gate {
    /// A permit, if neither the cap nor the client address's share is reached; else the
    /// refusal's reason ([`REASON`] or [`PEER_REASON`]), for [`Gate::refusal`].
    pub fn try_acquire(&self) -> Result<Permit, &'static str> {
        let inner = &self.cap.inner;
        let before = inner.used.fetch_add(1, Ordering::AcqRel);
        let mut permit = Permit {
            inner: inner.clone(),
            peer: None,
        };
        // Over the cap: dropping the permit gives the slot back.
        if before >= inner.limit {
            drop(permit);
            return Err(REASON);
        }
        if let (Some(peer), Some((max, exempt))) = (&self.peer, &inner.peer_limit)
            && let Some(count) = &peer.count
        {
            let held = count.fetch_add(1, Ordering::AcqRel);
            permit.peer = Some(count.clone());
            // Exemption is checked only at the share: the check may read the interfaces.
            if held >= *max && !exempt(peer.ip) {
                drop(permit);
                return Err(PEER_REASON);
            }
        }
        Ok(permit)
    }

    /// The answer to a request refused for `reason`, counted and (rate-limited) logged.
    pub fn refusal(&self, reason: &'static str) -> Response<Body> {
        self.cap.refuse(self.direction, reason, self.annotate)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("limit", &self.limit)
            .field("used", &self.used)
            .field("peer_limit", &self.peer_limit.as_ref().map(|(n, _)| n))
            .finish()
    }
}

/// One client address's count, held by each of its HTTP connections' gates; the last one
/// dropped removes the address from the table.
#[derive(Debug)]
struct PeerRef {
    inner: Arc<Inner>,
    ip: IpAddr,
    count: Option<Arc<AtomicUsize>>,
}

impl Clone for PeerRef {
    fn clone(&self) -> Self {
        // Under the table's lock, so a concurrent drop sees the right number of holders.
        let _held = self.inner.peers.lock();
        PeerRef {
            inner: self.inner.clone(),
            ip: self.ip,
            count: self.count.clone(),
        }
    }
}

impl Drop for PeerRef {
    fn drop(&mut self) {
        let Ok(mut peers) = self.inner.peers.lock() else {
            return;
        };
        if let Some(count) = self.count.take()
            && Arc::strong_count(&count) == 2
            && peers.get(&self.ip).is_some_and(|c| Arc::ptr_eq(c, &count))
        {
            peers.remove(&self.ip);
        }
    }
}

/// One request's permit: released when dropped.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
    peer: Option<Arc<AtomicUsize>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.used.fetch_sub(1, Ordering::AcqRel);
        if let Some(peer) = &self.peer {
            peer.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl InFlight {
    /// A cap of `limit` requests (at least one), without a share per address.
    pub fn new(limit: usize, metrics: HttpMetrics) -> Self {
        Self::with_share(limit, 1.0, Box::new(|_| true), metrics)
    }

    /// A cap of `limit` requests (at least one), of which one client address may hold `share`
    /// (rounded up, at least one; 1: no share) unless `exempt`.
    pub fn with_share(limit: usize, share: f64, exempt: Exempt, metrics: HttpMetrics) -> Self {
        let limit = limit.max(1);
        let peer_limit = share_of(limit, share).map(|max| (max, exempt));
        InFlight {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
                peer_limit,
                peers: Mutex::new(HashMap::new()),
                swept_to: AtomicUsize::new(0),
                metrics,
                logged: Throttle::new(LOG_EVERY),
            }),
        }
    }

    /// The cap as `direction`'s servers apply it, with no share per address; refusals carry
    /// `l5d-proxy-error`.
    pub fn gate(&self, direction: Direction) -> Gate {
        Gate {
            cap: self.clone(),
            direction,
            annotate: true,
            peer: None,
        }
    }

    /// The cap as an inbound HTTP connection from `ip` applies it: with the address's share
    /// (unless exempt), refusals annotated when `annotate`.
    pub fn gate_for(&self, ip: IpAddr, annotate: bool) -> Gate {
        let inner = &self.inner;
        let peer = match &inner.peer_limit {
            Some(_) => inner.peers.lock().ok().map(|mut peers| {
                // A permit outliving its connection's last gate keeps its address's entry
                // past that gate: entries nobody holds any more are swept whenever the
                // table doubles, so it stays within twice the addresses in use.
                if peers.len() >= SWEEP_AT.max(2 * inner.swept_to.load(Ordering::Relaxed)) {
                    peers.retain(|_, c| Arc::strong_count(c) > 1);
                    inner.swept_to.store(peers.len(), Ordering::Relaxed);
                }
                let count = peers.entry(ip).or_default().clone();
                PeerRef {
                    inner: inner.clone(),
                    ip,
                    count: Some(count),
                }
            }),
            None => None,
        };
        Gate {
            cap: self.clone(),
            direction: Direction::Inbound,
            annotate,
            peer,
        }
    }

    /// The cap.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// How many permits are held now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// The answer to a request refused for `reason`, counted and (rate-limited) logged.
    fn refuse(&self, direction: Direction, reason: &'static str, annotate: bool) -> Response<Body> {
        let inner = &*self.inner;
        inner
            .metrics
            .error(direction, StatusCode::SERVICE_UNAVAILABLE.as_u16(), reason);
        if inner.logged.ready() {
            warn!(
                direction = direction.as_str(),
                limit = inner.limit,
                peer_limit = inner.peer_limit.as_ref().map(|(n, _)| *n),
                reason,
                "in-flight request limit reached; answering new requests 503 (logged once per {LOG_EVERY:?})"
            );
        }
        let detail = if reason == PEER_REASON {
            format!("{NOT_PROCESSED}: the client's address has its share of requests in flight")
        } else {
            format!("{NOT_PROCESSED}: the proxy has its limit of requests in flight")
        };
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let mut rsp = match direction {
            Direction::Inbound => empty_response(status, &detail, annotate),
            Direction::Outbound => error_response(status, &detail, annotate),
        };
        rsp.extensions_mut().insert(ErrorReason(reason));
        rsp
    }
}

/// Makes `rsp`'s body hold `permit` until it ends or is dropped.
pub fn hold<B>(rsp: Response<B>, permit: Permit) -> Response<Held<B>> {
    rsp.map(|body| Held {
        body,
        permit: Some(permit),
    })
}

/// A response body holding its request's permit, if it took one. The HTTP server's response
/// body (`crate::http::server::serve`): not boxed, so holding a permit costs no allocation.
pub struct Held<B> {
    body: B,
    permit: Option<Permit>,
}

impl<B> std::fmt::Debug for Held<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Held<B> {
    /// `body`, holding no permit.
    pub fn free(body: B) -> Self {
        Held { body, permit: None }
    }
}

impl<B> hyper::body::Body for Held<B>
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            self.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn metrics() -> HttpMetrics {
        crate::testing::inputs().http_metrics.clone()
    }

    #[test]
    fn permits_stop_at_the_limit_and_come_back_when_dropped() {
        let cap = InFlight::new(2, metrics());
        let gate = cap.gate(Direction::Outbound);
        let a = gate.try_acquire().expect("first");
        let b = gate.try_acquire().expect("second");
        let refused = gate.try_acquire().expect_err("the third is refused");
        assert_eq!(refused, REASON);
        assert_eq!(
            gate.refusal(refused).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(cap.used(), 2, "a refusal gives its slot back");
        drop(a);
        let c = gate.try_acquire().expect("a dropped permit is free again");
        drop((b, c));
        assert_eq!(cap.used(), 0);
    }

    #[test]
    fn one_address_gets_its_share_and_others_the_rest() {
        let exempt: Exempt = Box::new(|ip: IpAddr| ip.is_loopback());
        let cap = InFlight::with_share(4, 0.5, exempt, metrics());
        let greedy = cap.gate_for("10.0.0.1".parse().unwrap(), false);
        let again = cap.gate_for("10.0.0.1".parse().unwrap(), false);
        let held = [greedy.try_acquire().unwrap(), again.try_acquire().unwrap()];
        let refused = greedy.try_acquire().expect_err("beyond its share");
        assert_eq!(refused, PEER_REASON);
        let rsp = greedy.refusal(refused);
        assert!(rsp.headers().get(crate::http::L5D_PROXY_ERROR).is_none());
        assert_eq!(cap.used(), 2);
        let other = cap.gate_for("10.0.0.2".parse().unwrap(), true);
        let mine = [other.try_acquire().unwrap(), other.try_acquire().unwrap()];
        let lo = cap.gate_for("127.0.0.1".parse().unwrap(), true);
        assert_eq!(
            lo.try_acquire().err(),
            Some(REASON),
            "the cap binds everyone"
        );
        drop(mine);
        let l = [lo.try_acquire().unwrap(), lo.try_acquire().unwrap()];
        drop((held, greedy, again, other, l, lo));
        assert!(
            cap.inner.peers.lock().unwrap().is_empty(),
            "no connection, no entry"
        );
    }

    #[test]
    fn entries_a_permit_kept_past_its_gate_are_swept() {
        let cap = InFlight::with_share(1000, 0.5, Box::new(|_| false), metrics());
        let gate = cap.gate_for("10.0.0.1".parse().unwrap(), true);
        let permit = gate.try_acquire().unwrap();
        drop(gate);
        drop(permit);
        assert_eq!(cap.inner.peers.lock().unwrap().len(), 1, "left behind");
        let gates: Vec<_> = (0..200u8)
            .map(|i| cap.gate_for(IpAddr::from([10, 1, 0, i]), true))
            .collect();
        let peers = cap.inner.peers.lock().unwrap();
        assert!(!peers.contains_key(&"10.0.0.1".parse::<IpAddr>().unwrap()));
        assert_eq!(peers.len(), gates.len());
    }

    #[tokio::test]
    async fn a_response_body_holds_the_permit_until_it_ends() {
        let cap = InFlight::new(1, metrics());
        let gate = cap.gate(Direction::Inbound);
        let permit = gate.try_acquire().expect("permit");
        let body = crate::http::boxed(http_body_util::Full::new(Bytes::from_static(b"hi")));
        let rsp = hold(Response::new(body), permit);
        assert!(gate.try_acquire().is_err(), "held by the response");
        let collected = rsp.into_body().collect().await.expect("body");
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"hi"));
        assert!(gate.try_acquire().is_ok(), "released at the end");
    }

    #[test]
    fn a_refusal_is_a_503_saying_not_processed() {
        let cap = InFlight::new(1, metrics());
        let gate = cap.gate(Direction::Inbound);
        let _held = gate.try_acquire().expect("permit");
        let rsp = gate.refusal(gate.try_acquire().expect_err("refused"));
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let err = rsp
            .headers()
            .get(crate::http::L5D_PROXY_ERROR)
            .expect("l5d-proxy-error");
        assert!(crate::error::never_processed(err), "{err:?}");
    }
}
