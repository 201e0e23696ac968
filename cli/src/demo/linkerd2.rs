//! `remora demo --linkerd2-proxy PATH`: some pods run linkerd2-proxy instead of Remora, under
//! the same `remora control` (which serves Linkerd's Identity, Destination and both policy
//! APIs, so linkerd2-proxy runs under it as under Linkerd's control plane).
//!
//! Which pods: the server pods every path of the demo ends at ([`SERVERS`]): east's `api`
//! (east's local call, west's flat call), west's `api` (east's call through west's gateway)
//! and west's `catalog` (east's flat call), so each kind of path (local, flat, through a
//! gateway) is served by linkerd2-proxy. The front ends stay on Remora: they reach their
//! upstreams by name through any address (the proxy routes by `Host`), which linkerd2-proxy
//! does not do (it routes by the original destination address), and the summary is read from
//! their metrics.
//!
//! Where: in network namespaces only (`--linkerd2-proxy` implies `--netns`, so it needs root).
//! linkerd2-proxy has no explicit (HTTP proxy) mode, and even as a server it reads every
//! accepted connection's original destination (`SO_ORIGINAL_DST`), which exists only where
//! conntrack tracks the connection, i.e. in a namespace with iptables' nat rules: on plain
//! loopback addresses every accept fails (ENOENT).
//!
//! Each such pod gets the environment Linkerd's injector would give it (`LINKERD2_PROXY_*`),
//! its control-plane addresses pointing at its cluster's `remora control`, an identity
//! directory (`key.p8`, `csr.der`, written as Linkerd's image entrypoint writes them) and a
//! token file, whose bytes it sends as its token.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::Demo;

/// The pods (cluster, name) that run linkerd2-proxy.
pub(super) const SERVERS: [(&str, &str); 3] =
    [("east", "api"), ("west", "api"), ("west", "catalog")];

impl Demo {
    /// Whether pod `name` of `cluster` runs linkerd2-proxy.
    pub(super) fn runs_linkerd2(&self, cluster: &str, name: &str) -> bool {
        self.linkerd2.is_some() && SERVERS.contains(&(cluster, name))
    }

    /// The proxy each pod runs, for the summary.
    pub(super) fn proxies(&self) -> Vec<(String, &'static str)> {
        super::topology::PODS
            .iter()
            .map(|(cluster, name, _)| {
                let proxy = if self.runs_linkerd2(cluster, name) {
                    "linkerd2-proxy"
                } else {
                    "remora"
                };
                (format!("{cluster}-{name}"), proxy)
            })
            .collect()
    }

    /// linkerd2-proxy's environment for pod `name` of `cluster` at `ip` (workload `name` of
    /// namespace `shop`), its identity documents and token written.
    pub(super) async fn linkerd2_env(
        &self,
        cluster: &str,
        name: &str,
        ip: IpAddr,
    ) -> Result<Vec<(String, String)>, String> {
        let c = Self::cluster_octet(cluster);
        let cp = SocketAddr::new(self.ip(c, 1), 8086).to_string();
        let id = format!("{name}.shop.serviceaccount.identity.linkerd.{cluster}.example");
        let control =
            format!("remora-control.linkerd.serviceaccount.identity.linkerd.{cluster}.example");
        let token = self
            .remora(&[
                "control",
                "token",
                "--config",
                &self.path(&format!("{cluster}.toml")),
                "--identity",
                &id,
            ])
            .await?;
        let pod = format!("{cluster}-{name}");
        let token_file = self.path(&format!("{pod}.l2p-token"));
        std::fs::write(&token_file, token.trim()).map_err(|e| format!("{token_file}: {e}"))?;
        let identity_dir = self.dir.join(format!("{pod}-identity"));
        self.write_identity_documents(&identity_dir, &id)?;
        let anchors = std::fs::read_to_string(self.dir.join("certs/root.pem"))
            .map_err(|e| format!("root.pem: {e}"))?;
        let (admin, inbound, outbound, control_listen) = match self.netns {
            None => (
                format!("{ip}:4191"),
                format!("{ip}:4143"),
                format!("{ip}:4140"),
                format!("{ip}:4190"),
            ),
            // The pod's own namespace: iptables redirects to these.
            Some(_) => (
                "0.0.0.0:4191".to_string(),
                "0.0.0.0:4143".to_string(),
                "127.0.0.1:4140".to_string(),
                "0.0.0.0:4190".to_string(),
            ),
        };
        let workload = format!("{{\"ns\":\"shop\", \"pod\":\"{name}-0\"}}");
        let context = format!("{{\"ns\":\"shop\", \"nodeName\":\"demo\", \"pod\":\"{name}-0\"}}");
        let networks = "10.0.0.0/8,127.0.0.0/8".to_string();
        Ok([
            ("LINKERD2_PROXY_LOG", "warn".to_string()),
            ("LINKERD2_PROXY_CORES", "1".into()),
            // linkerd2-proxy waits 120 s for open connections after SIGTERM by default; the
            // demo gives every process 5 s.
            ("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "2s".into()),
            ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", admin),
            ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", inbound),
            ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", outbound.clone()),
            ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS", outbound),
            ("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", control_listen),
            ("LINKERD2_PROXY_INBOUND_IPS", ip.to_string()),
            ("LINKERD2_PROXY_INBOUND_PORTS", "8080".into()),
            (
                "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
                "all-unauthenticated".into(),
            ),
            ("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", networks.clone()),
            ("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS", networks),
            (
                "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES",
                "svc.cluster.local.".into(),
            ),
            ("LINKERD2_PROXY_POLICY_WORKLOAD", workload),
            ("LINKERD2_PROXY_DESTINATION_CONTEXT", context),
            (
                "LINKERD2_PROXY_IDENTITY_DIR",
                identity_dir.display().to_string(),
            ),
            ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", anchors),
            ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", token_file),
            ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", id),
            ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", cp.clone()),
            ("LINKERD2_PROXY_IDENTITY_SVC_NAME", control.clone()),
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", cp.clone()),
            ("LINKERD2_PROXY_DESTINATION_SVC_NAME", control.clone()),
            ("LINKERD2_PROXY_POLICY_SVC_ADDR", cp),
            ("LINKERD2_PROXY_POLICY_SVC_NAME", control),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
    }

    /// `key.p8` (PKCS#8 DER) and `csr.der` for `identity` in `dir`, as Linkerd's image
    /// entrypoint writes them before the proxy starts; private to the proxy's user.
    fn write_identity_documents(&self, dir: &Path, identity: &str) -> Result<(), String> {
        use remora_identity::certs::{csr, generate_key, key_der};
        use std::os::unix::fs::PermissionsExt;
        let name: remora_identity::Name = identity.parse().map_err(|e| format!("{e}"))?;
        let key = generate_key().map_err(|e| e.to_string())?;
        let csr = csr(&key, &name).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let files = [
            ("key.p8", key_der(&key).secret_pkcs8_der().to_vec()),
            ("csr.der", csr),
        ];
        for (file, bytes) in files {
            let path = dir.join(file);
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        if self.netns.is_some() {
            // The proxy runs as uid 2102 there.
            let uid = Some(nix::unistd::Uid::from_raw(PROXY_UID));
            for p in [dir.to_path_buf(), dir.join("key.p8"), dir.join("csr.der")] {
                nix::unistd::chown(&p, uid, None).map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        Ok(())
    }
}

/// The uid proxies run as, which `remora init` exempts from interception.
const PROXY_UID: u32 = 2102;
