//! The outbound's `OutboundPolicies/Watch` client: one watch per target (an original
//! destination, or an authority for explicit and ingress requests), with `TrafficSpec
//! {source_workload: POLICY_WORKLOAD verbatim, target}`, over the policy service's channel
//! (mTLS to the controller's identity).
//!
//! Watches are cached ([`Watches`]: at most [`MAX_TARGETS`], dropped when no connection asked
//! for them for the policy idle timeout, the last good policy kept through outages), and
//! `NotFound` / `Unimplemented` end a target's watch: it has no policy, and the outbound routes
//! it as it always did (profiles and Destination).
//!
//! **First-request latency.** Like linkerd2-proxy, a new target's first connection waits for
//! the first answer, but for at most the discovery timeout (`REMORA_DESTINATION_TIMEOUT`, 3 s):
//! a `NotFound` (the common case off a cluster's services) answers within one round trip to
//! the controller. A connection does not wait when the policy service is failing (the last
//! stream attempt failed) or the target's first answer was refused as invalid; it then goes as
//! if the target had no policy. After the answer a connection costs nothing more: a target
//! without a policy keeps no watch at all on its connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use linkerd2_proxy_api::outbound as pb;
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use remora_runtime::channel::{Instrumented, Moved};
use tokio::sync::watch;
use tracing::debug;

use super::{OutboundPolicy, PolicyTarget};
use crate::inputs::PolicyService;
use crate::policy::watch::{MessageFuture, OpenFuture, Source, Stream, Watches};

/// Targets watched at once at most (least recently used first dropped beyond).
pub const MAX_TARGETS: usize = 10_000;

/// What is known of a target's policy.
#[derive(Debug)]
pub enum TargetPolicy {
    /// No answer yet (and, once the watch ended, `NotFound`: no policy).
    Pending,
    Policy(Arc<OutboundPolicy>),
    /// The first answer was invalid (refused): no policy until a valid one.
    Refused,
}

/// A connection's view of its target's policy.
pub type PolicyRx = watch::Receiver<Arc<TargetPolicy>>;

struct Src {
    client: OutboundPoliciesClient<Instrumented>,
    moved: Moved,
    workload: String,
    /// Whether the last stream to the policy service opened (or was answered).
    healthy: Arc<AtomicBool>,
}

/// A stream that notes when the policy service fails.
struct Noting {
    inner: tonic::Streaming<pb::OutboundPolicy>,
    healthy: Arc<AtomicBool>,
}

impl Stream<pb::OutboundPolicy> for Noting {
    fn next(&mut self) -> MessageFuture<'_, pb::OutboundPolicy> {
        Box::pin(async move {
            let next = self.inner.message().await;
            if let Err(status) = &next
                && !final_code(status.code())
            {
                self.healthy.store(false, Ordering::Relaxed);
            }
            next
        })
    }
}

fn final_code(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::NotFound
            | tonic::Code::Unimplemented
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
    )
}

impl Source for Src {
    type Key = PolicyTarget;
    type Message = pb::OutboundPolicy;
    type Policy = TargetPolicy;

    fn what(&self) -> &'static str {
        "outbound policy"
    }

    fn moved(&self) -> Moved {
        self.moved.clone()
    }

    fn open(&self, key: &PolicyTarget) -> OpenFuture<pb::OutboundPolicy> {
        use pb::traffic_spec::Target;
        let target = match key {
            PolicyTarget::Addr(a) => Target::Addr((*a).into()),
            PolicyTarget::Authority(a) => Target::Authority(a.to_string()),
        };
        let spec = pb::TrafficSpec {
            source_workload: self.workload.clone(),
            target: Some(target),
        };
        let mut client = self.client.clone();
        let healthy = self.healthy.clone();
        Box::pin(async move {
            match client.watch(spec).await {
                Ok(rsp) => {
                    healthy.store(true, Ordering::Relaxed);
                    Ok(Box::new(Noting {
                        inner: rsp.into_inner(),
                        healthy,
                    })
                        as Box<dyn Stream<pb::OutboundPolicy>>)
                }
                Err(status) => {
                    if final_code(status.code()) {
                        healthy.store(true, Ordering::Relaxed);
                    } else {
                        healthy.store(false, Ordering::Relaxed);
                    }
                    Err(status)
                }
            }
        })
    }

    fn compile(
        &self,
        key: &PolicyTarget,
        msg: &pb::OutboundPolicy,
    ) -> Result<TargetPolicy, String> {
        let policy = super::compile(msg.clone())?;
        debug!(%key, parent = %policy.parent, "outbound policy");
        Ok(TargetPolicy::Policy(Arc::new(policy)))
    }

    fn on_refused(&self, _key: &PolicyTarget, current: &TargetPolicy) -> Option<TargetPolicy> {
        // Keep a good policy; mark a target still waiting for its first one.
        matches!(current, TargetPolicy::Pending).then_some(TargetPolicy::Refused)
    }
}

/// The outbound's policy client.
pub struct PolicyClient {
    watches: Arc<Watches<Src>>,
    healthy: Arc<AtomicBool>,
    /// A new target's first connection waits this long at most for its first answer.
    wait: Duration,
}

impl std::fmt::Debug for PolicyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyClient")
            .field("targets", &self.watches.len())
            .field("wait", &self.wait)
            .finish()
    }
}

impl PolicyClient {
    /// A client of `service`, waiting at most `wait` for a new target's first answer. Call
    /// within a runtime.
    pub fn new(service: &PolicyService, wait: Duration) -> Self {
        let healthy = Arc::new(AtomicBool::new(true));
        let src = Src {
            moved: service.channel.moved(),
            client: OutboundPoliciesClient::new(service.channel.clone()),
            workload: service.workload.clone(),
            healthy: healthy.clone(),
        };
        PolicyClient {
            watches: Watches::new(src, MAX_TARGETS, service.idle, service.limits),
            healthy,
            wait,
        }
    }

    /// The policy of `target` now, after waiting (bounded) for its first answer. `None`: the
    /// target has no policy, for good (`NotFound`), so the caller keeps no watch.
    pub async fn get(&self, target: &PolicyTarget) -> Option<PolicyRx> {
        let mut rx = self.watches.get(target, || TargetPolicy::Pending);
        let answered = |rx: &PolicyRx| !matches!(**rx.borrow(), TargetPolicy::Pending);
        if !answered(&rx) {
            let watching = rx.has_changed().is_ok();
            if !watching {
                // The watch ended without a policy: NotFound.
                return None;
            }
            if self.healthy.load(Ordering::Relaxed) {
                let _ = tokio::time::timeout(self.wait, rx.changed()).await;
                if rx.has_changed().is_err() && !answered(&rx) {
                    return None;
                }
            }
        }
        Some(rx)
    }

    /// As [`get`](Self::get) for an original destination.
    pub async fn addr(&self, dst: SocketAddr) -> Option<PolicyRx> {
        self.get(&PolicyTarget::Addr(dst)).await
    }

    /// Targets watched.
    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }
}

/// The compiled policy a receiver holds now, if any.
pub fn current(rx: &PolicyRx) -> Option<Arc<OutboundPolicy>> {
    match &**rx.borrow() {
        TargetPolicy::Policy(p) => Some(p.clone()),
        TargetPolicy::Pending | TargetPolicy::Refused => None,
    }
}

/// A connection's policy for the key it was opened for, following updates, and watching the
/// key again when its watch was dropped for idleness while the connection lived (meanwhile the
/// connection keeps the last policy it saw).
#[derive(Debug)]
pub struct ConnPolicy {
    key: PolicyTarget,
    state: std::sync::Mutex<ConnState>,
    /// The target's profile: one with routes or traffic split routes its HTTP instead
    /// (linkerd2-proxy lets such a profile override the policy).
    profile: std::sync::OnceLock<ProfileRx>,
}

type ProfileRx = watch::Receiver<Option<Arc<crate::discovery::profile::Profile>>>;

#[derive(Debug)]
struct ConnState {
    rx: PolicyRx,
    last: Option<Arc<OutboundPolicy>>,
    /// The watch ended for good (not only dropped): nothing more will come.
    ended: bool,
}

impl ConnPolicy {
    pub fn new(key: PolicyTarget, rx: PolicyRx) -> Self {
        let last = current(&rx);
        ConnPolicy {
            key,
            state: std::sync::Mutex::new(ConnState {
                rx,
                last,
                ended: false,
            }),
            profile: std::sync::OnceLock::new(),
        }
    }

    /// Follows the target's profile too.
    pub fn set_profile(&self, profile: ProfileRx) {
        let _ = self.profile.set(profile);
    }

    /// Whether the target's profile has routes or a traffic split, which then route its
    /// requests instead of the policy.
    pub fn profile_overrides(&self) -> bool {
        self.profile.get().is_some_and(|p| {
            p.borrow()
                .as_ref()
                .is_some_and(|p| !p.routes.is_empty() || !p.backends.is_empty())
        })
    }

    pub fn key(&self) -> &PolicyTarget {
        &self.key
    }

    /// The policy now (the last one seen, if the watch has nothing better).
    pub fn current(&self, client: &PolicyClient) -> Option<Arc<OutboundPolicy>> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        if let Some(p) = current(&s.rx) {
            s.last = Some(p);
        }
        if !s.ended && s.rx.has_changed().is_err() {
            let fresh = client.watches.get(&self.key, || TargetPolicy::Pending);
            s.ended = fresh.has_changed().is_err();
            if let Some(p) = current(&fresh) {
                s.last = Some(p);
            }
            s.rx = fresh;
        }
        s.last.clone()
    }
}
