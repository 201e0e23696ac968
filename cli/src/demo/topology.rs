//! The demo's clusters and pods: their addresses, the control planes' configs (built as the
//! control plane's own config values), the proxies' environments, and starting them all.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use remora_control::cluster::{RawEndpoint, RawPort, RawService};
use remora_control::config::{
    RawCluster, RawConfig, RawIdentity, RawLink, RawMulticluster, RawServer,
};
use remora_control::profile::RawRoute;

use super::Demo;
use super::netns::run;

/// The clusters: name, third octet of its addresses.
pub(super) const CLUSTERS: [(&str, u8); 2] = [("east", 1), ("west", 2)];

/// Pods: cluster, name, last octet, workload (service account).
pub(super) const PODS: [(&str, &str, u8); 7] = [
    ("east", "web", 10),
    ("east", "api", 11),
    ("east", "flaky", 12),
    ("east", "slow", 13),
    ("west", "web", 10),
    ("west", "api", 11),
    ("west", "catalog", 12),
];

fn svc(name: &str, port: u16) -> String {
    format!("http://{name}.shop.svc.cluster.local:{port}")
}

impl Demo {
    pub(super) fn ip(&self, cluster: u8, host: u8) -> IpAddr {
        match self.netns {
            None => IpAddr::V4(Ipv4Addr::new(127, self.base, cluster, host)),
            Some(_) => IpAddr::V4(Ipv4Addr::new(10, 210 + cluster, 0, host)),
        }
    }

    pub(super) fn cluster_octet(name: &str) -> u8 {
        CLUSTERS.iter().find(|c| c.0 == name).map_or(1, |c| c.1)
    }

    /// The control plane config of `cluster`, with `links` to the other.
    fn config(&self, cluster: &str, links: Vec<RawLink>) -> RawConfig {
        let c = Self::cluster_octet(cluster);
        let cp = self.ip(c, 1);
        let gw = self.ip(c, 2);
        let host = |name: &str| {
            PODS.iter()
                .find(|p| p.0 == cluster && p.1 == name)
                .map_or(0, |p| p.2)
        };
        // A service of one pod, on 8080 (explicit mode without --netns).
        let service = |name: &str, vip: u8| {
            let mut endpoint = RawEndpoint::new(
                &format!("{name}-0"),
                &self.ip(c, host(name)).to_string(),
                name,
            );
            endpoint.explicit = self.netns.is_none();
            RawService {
                name: name.into(),
                namespace: "shop".into(),
                cluster_ip: Some(format!("10.{c}.0.{vip}")),
                ports: vec![RawPort {
                    port: 8080,
                    ..Default::default()
                }],
                endpoints: vec![endpoint],
                ..Default::default()
            }
        };
        let exported = |mut s: RawService, mode: &str| {
            s.export = true;
            s.export_mode = Some(mode.into());
            s
        };
        let route = |mut s: RawService, route: RawRoute| {
            s.routes.push(route);
            s
        };
        let services = match cluster {
            "east" => vec![
                service("web", 10),
                exported(service("api", 11), "flat"),
                route(
                    service("flaky", 12),
                    RawRoute {
                        name: "flaky".into(),
                        method: Some("GET".into()),
                        path: "/fail-share/.*".into(),
                        retryable: true,
                        ..Default::default()
                    },
                ),
                route(
                    service("slow", 13),
                    RawRoute {
                        name: "slow".into(),
                        path: "/delay/.*".into(),
                        timeout: Some("200ms".into()),
                        ..Default::default()
                    },
                ),
            ],
            _ => vec![
                service("web", 10),
                exported(service("api", 11), "gateway"),
                exported(service("catalog", 12), "flat"),
            ],
        };
        let certs = self.dir.join(format!("certs/{cluster}"));
        RawConfig {
            cluster: RawCluster {
                name: cluster.into(),
                trust_domain: format!("{cluster}.example"),
                control_plane_namespace: "linkerd".into(),
                cluster_domain: "cluster.local".into(),
                outbound_transport_mode: remora_control::config::default_transport_mode(),
            },
            server: RawServer {
                addr: SocketAddr::new(cp, 8086).to_string(),
                admin_addr: SocketAddr::new(cp, 9990).to_string(),
            },
            identity: RawIdentity {
                trust_anchors: self.dir.join("certs/root.pem"),
                issuer_cert: certs.join("issuer.pem"),
                issuer_key: certs.join("issuer.key"),
                token_key: certs.join("token.key"),
                cert_lifetime: "24h".into(),
            },
            multicluster: Some(RawMulticluster {
                advertised_addr: Some(SocketAddr::new(cp, 8086).to_string()),
                mirror_cidr: Some(format!("10.9{c}.0.0/24")),
                gateway_addr: Some(SocketAddr::new(gw, 4143).to_string()),
                gateway_identity: Some(format!(
                    "remora-gateway.linkerd.serviceaccount.identity.linkerd.{cluster}.example"
                )),
                link_grace: None,
            }),
            links,
            services,
        }
    }

    /// Writes `cluster`'s config file.
    fn write_config(&self, cluster: &str, links: Vec<RawLink>) -> Result<(), String> {
        let text = self.config(cluster, links).to_toml();
        std::fs::write(self.dir.join(format!("{cluster}.toml")), text).map_err(|e| e.to_string())
    }

    /// The link to `cluster` that `remora link` prints from its config.
    async fn link_to(&self, cluster: &str) -> Result<Vec<RawLink>, String> {
        #[derive(serde::Deserialize)]
        struct Links {
            links: Vec<RawLink>,
        }
        let config = self.path(&format!("{cluster}.toml"));
        let text = self
            .remora(&["link", "--config", &config, "--mode", "flat"])
            .await?;
        let links: Links = toml::from_str(&text).map_err(|e| format!("remora link: {e}"))?;
        Ok(links.links)
    }

    /// The environment of a proxy (or gateway) of `cluster` at `ip`, as workload `sa`/`ns`.
    async fn proxy_env(
        &self,
        cluster: &str,
        ip: IpAddr,
        sa: &str,
        ns: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let c = Self::cluster_octet(cluster);
        let cp = SocketAddr::new(self.ip(c, 1), 8086).to_string();
        let id = format!("{sa}.{ns}.serviceaccount.identity.linkerd.{cluster}.example");
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
        let token_file = self.path(&format!("{cluster}-{sa}.token"));
        std::fs::write(&token_file, token.trim()).map_err(|e| e.to_string())?;
        let (outbound, inbound, admin) = match self.netns {
            None => (
                format!("{ip}:4140"),
                format!("{ip}:4143"),
                format!("{ip}:4191"),
            ),
            // The pod's own namespace: iptables redirects to these.
            Some(_) => (
                "127.0.0.1:4140".to_string(),
                "0.0.0.0:4143".to_string(),
                "0.0.0.0:4191".to_string(),
            ),
        };
        Ok([
            ("REMORA_OUTBOUND_ADDR", outbound),
            ("REMORA_INBOUND_ADDR", inbound),
            ("REMORA_ADMIN_ADDR", admin),
            ("REMORA_IDENTITY_NAME", id),
            ("REMORA_IDENTITY_TRUST_ANCHORS", self.path("certs/root.pem")),
            ("REMORA_IDENTITY_TOKEN_FILE", token_file),
            ("REMORA_IDENTITY_ADDR", cp.clone()),
            ("REMORA_IDENTITY_SVC_NAME", control.clone()),
            ("REMORA_DESTINATION_ADDR", cp),
            ("REMORA_DESTINATION_SVC_NAME", control),
            ("REMORA_LOG", "warn".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(self.collector.iter().flat_map(|c| {
            [
                (
                    "REMORA_TRACE_COLLECTOR_ADDR".to_string(),
                    c.addr.to_string(),
                ),
                (
                    "REMORA_TRACE_SERVICE_NAME".to_string(),
                    format!("{cluster}-{sa}"),
                ),
            ]
        }))
        .collect())
    }

    /// Makes the certificates and configs, starts the control planes, gateways and pods, and
    /// waits until every proxy is ready; returns every proxy's admin address by name.
    pub(super) async fn start(&mut self) -> Result<Vec<(String, SocketAddr)>, String> {
        // One root, an issuer and a token key per cluster.
        self.remora(&["certs", "root", "--out", &self.path("certs")])
            .await?;
        for (cluster, _) in CLUSTERS {
            let out = self.path(&format!("certs/{cluster}"));
            self.remora(&[
                "certs",
                "issuer",
                "--root",
                &self.path("certs"),
                "--trust-domain",
                &format!("{cluster}.example"),
                "--out",
                &out,
            ])
            .await?;
            self.remora(&["certs", "token-key", "--out", &out]).await?;
        }
        // Configs, then the links from each other's configs, with `remora link`.
        for (cluster, _) in CLUSTERS {
            self.write_config(cluster, Vec::new())?;
        }
        let (west_link, east_link) = (self.link_to("west").await?, self.link_to("east").await?);
        self.write_config("east", west_link)?;
        self.write_config("west", east_link)?;
        for (cluster, c) in CLUSTERS {
            let config = self.path(&format!("{cluster}.toml"));
            let name = format!("{cluster}-control");
            self.spawn_in(
                &name,
                Some(&name),
                false,
                &["control", "--config", &config],
                &[("REMORA_LOG".into(), "warn".into())],
            )?;
            self.wait_ready(SocketAddr::new(self.ip(c, 1), 9990), "control plane")
                .await?;
        }
        // Gateways, apps and their proxies.
        for (cluster, c) in CLUSTERS {
            let ip = self.ip(c, 2);
            let env = self
                .proxy_env(cluster, ip, "remora-gateway", "linkerd")
                .await?;
            let name = format!("{cluster}-gateway");
            self.spawn_in(&name, Some(&name), true, &["gateway"], &env)?;
        }
        for (cluster, name, host) in PODS {
            let c = Self::cluster_octet(cluster);
            let ip = self.ip(c, host);
            let listen = SocketAddr::new(ip, 8080).to_string();
            let proxy = SocketAddr::new(ip, 4140).to_string();
            let mut app: Vec<String> = vec![
                "test-server".into(),
                "--listen".into(),
                listen,
                "--name".into(),
                format!("{name}.{cluster}"),
            ];
            if name == "web" {
                let upstreams: Vec<String> = match cluster {
                    "east" => vec![
                        format!("{}/echo", svc("api", 8080)),
                        format!("{}/echo", svc("api-west", 8080)),
                        format!("{}/echo", svc("catalog-west", 8080)),
                        format!("{}/fail-share/20", svc("flaky", 8080)),
                        // Longer than the route's 200 ms timeout: the proxy answers 504 at 200 ms.
                        format!("{}/delay/300", svc("slow", 8080)),
                    ],
                    _ => vec![format!("{}/echo", svc("api-east", 8080))],
                };
                for u in upstreams {
                    app.push("--fanout".into());
                    if self.netns.is_some() {
                        // Any address the pod's iptables redirects: the proxy routes by Host.
                        let host = u
                            .split('/')
                            .nth(2)
                            .unwrap_or("")
                            .split(':')
                            .next()
                            .unwrap_or("")
                            .to_string();
                        app.push(u);
                        app.push("--resolve".into());
                        app.push(format!("{host}=10.250.0.1"));
                    } else {
                        app.push(u);
                    }
                }
                if self.netns.is_none() {
                    app.push("--http-proxy".into());
                    app.push(proxy);
                }
            }
            let pod = format!("{cluster}-{name}");
            if let Some(n) = &self.netns {
                let ns = n.name(&pod);
                let exe = self.exe.display().to_string();
                run(
                    "ip",
                    &["netns", "exec", &ns, &exe, "init"].map(String::from),
                )
                .await?;
            }
            let app: Vec<&str> = app.iter().map(String::as_str).collect();
            self.spawn_in(&format!("{pod}-app"), Some(&pod), false, &app, &[])?;
            match self.linkerd2.clone() {
                Some(program) if self.runs_linkerd2(cluster, name) => {
                    let env = self.linkerd2_env(cluster, name, ip).await?;
                    let proxy = format!("{pod}-linkerd2-proxy");
                    self.spawn_program(&proxy, Some(&pod), true, &program, &[], &env)?;
                }
                _ => {
                    let env = self.proxy_env(cluster, ip, name, "shop").await?;
                    self.spawn_in(&format!("{pod}-proxy"), Some(&pod), true, &["proxy"], &env)?;
                }
            }
        }
        let mut admins: Vec<(String, SocketAddr)> = CLUSTERS
            .iter()
            .map(|(cluster, c)| {
                (
                    format!("{cluster}-gateway"),
                    SocketAddr::new(self.ip(*c, 2), 4191),
                )
            })
            .collect();
        for (cluster, name, host) in PODS {
            let c = Self::cluster_octet(cluster);
            admins.push((
                format!("{cluster}-{name}"),
                SocketAddr::new(self.ip(c, host), 4191),
            ));
        }
        for (name, admin) in &admins {
            self.wait_ready(*admin, name).await?;
        }
        Ok(admins)
    }
}
