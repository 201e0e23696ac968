//! Explicit-mode pods: no namespaces, no iptables, no root. Each pod is a loopback address of its
//! own (127.88.<pid>.<n>), with its apps and its proxy's listeners bound on it; clients use the
//! proxy's outbound listener as their HTTP proxy. The control plane and every proxy run inside
//! the test process ([`crate::inproc`]).
//!
//! ```no_run
//! # async fn f() {
//! use remora_tests::{apps::test_server, explicit::Cluster};
//! let mut east = Cluster::start(10).await;
//! let b = east.pod("b", 12, "web", vec![test_server(8080, "b")]).await;
//! let a = east.pod("a", 11, "client", vec![]).await;
//! // a.proxy_addr() is a's HTTP proxy; b.ip() is b's address for the cluster config.
//! # }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::admin::Metrics;
use crate::apps::{App, AppHandle};
use crate::control::{ControlPlane, Pki};
use crate::http::{Body, Reply, http1, send1};
use crate::local::{LocalProxy, loopback};
use crate::netns::HOST;
use crate::services::Service;

/// A control plane on a loopback address, and the mesh PKI it issues from.
#[derive(Debug)]
pub struct Cluster {
    pub cp: ControlPlane,
    pub pki: Pki,
}

impl Cluster {
    /// Starts cluster `east` (trust domain `east.example`) with its control plane on
    /// `loopback(n)`. Tests running in parallel use distinct `n` ranges.
    pub async fn start(n: u8) -> Self {
        let pki = Pki::new();
        let ip = loopback(n);
        let mut cp = pki.control(
            "east",
            "east.example",
            SocketAddr::new(ip, 8086),
            SocketAddr::new(ip, 9086),
        );
        cp.start_in_process().await;
        Cluster { cp, pki }
    }

    /// Starts pod `name` on `loopback(n)` as workload `sa` in namespace `shop`: its apps, then its
    /// proxy, and waits until the proxy is ready (it holds a certificate).
    pub async fn pod(&self, name: &str, n: u8, sa: &str, apps: Vec<App>) -> ExplicitPod {
        self.pod_with(name, n, sa, apps, &[]).await
    }

    /// As [`Cluster::pod`], with extra proxy environment.
    pub async fn pod_with(
        &self,
        name: &str,
        n: u8,
        sa: &str,
        apps: Vec<App>,
        env: &[(&str, &str)],
    ) -> ExplicitPod {
        let ip = loopback(n);
        let apps = apps
            .into_iter()
            .map(|a| a.start_on(ip).expect("app listens on the pod's address"))
            .collect();
        let mut proxy_env = self.cp.proxy_env(sa, "shop");
        proxy_env.extend(self.cp.discovery_env());
        proxy_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let proxy = LocalProxy::in_process(n, &proxy_env);
        assert!(
            proxy.wait_ready(Duration::from_secs(30)).await,
            "pod {name}'s proxy became ready:\n{}",
            proxy.process.log()
        );
        ExplicitPod {
            name: name.to_string(),
            identity: self.cp.identity(sa, "shop"),
            proxy,
            apps,
        }
    }
}

/// A pod in explicit mode.
#[derive(Debug)]
pub struct ExplicitPod {
    pub name: String,
    /// The workload identity its proxy holds.
    pub identity: String,
    pub proxy: LocalProxy,
    pub apps: Vec<AppHandle>,
}

impl ExplicitPod {
    /// The pod's own address.
    pub fn ip(&self) -> IpAddr {
        self.proxy.ip
    }

    /// The proxy's outbound listener: the pod's `HTTP_PROXY`.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy.addr(4140)
    }

    pub fn app(&self, i: usize) -> &AppHandle {
        &self.apps[i]
    }

    pub async fn metrics(&self) -> Metrics {
        self.proxy.metrics().await
    }
}

/// The `web` service's authority in the explicit-mode tests.
pub const WEB: &str = "web.shop.svc.cluster.local:8080";

/// A proxy request (absolute-form) for `http://{authority}{path}`.
pub fn proxy_get(authority: &str, path: &str) -> Request<Body> {
    Request::get(format!("http://{authority}{path}"))
        .header("host", authority)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// `web` in namespace `shop`, port 8080, on explicit-mode `pods` (workload `web`).
pub fn web(pods: &[&ExplicitPod]) -> Service {
    let mut s = Service::new("web", "shop").port(8080);
    for p in pods {
        s = s.explicit_endpoint(&p.name, p.ip(), "web");
    }
    s
}

/// `GET path` of [`WEB`] through `pod`'s proxy on a fresh connection, retried (the connection,
/// not a failed request) for up to 30 s until it answers 200: the proxy learns the service from
/// discovery. The last answer.
pub async fn first_answer(pod: &ExplicitPod, path: &str) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut h1 = http1(HOST, pod.proxy_addr()).await;
        let r = send1(&mut h1, proxy_get(WEB, path)).await.unwrap();
        if r.status == 200 || tokio::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
