//! Helpers shared by Remora's criterion benchmarks (`benches/benches/*.rs`).
//!
//! # Layout
//! - [`echo_server`]: a loopback echo server to forward through.
//! - [`config`]: a cluster config for `remora control`, as values.
//! - [`pki`]: a mesh PKI and certified keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Starts an echo server on an ephemeral loopback port.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A mesh PKI for benchmarks: a root and an issuer, and certified keys issued from it.
pub mod pki {
    use std::sync::Arc;
    use std::time::Duration;

    use remora_identity::certs::{Ca, csr, generate_key, key_der};
    use remora_identity::tls::CertifiedKey;
    use remora_identity::{Name, TrustAnchors};
    use rustls::pki_types::PrivateKeyDer;

    /// A root, an issuer under it, and the root as trust anchors.
    pub fn mesh() -> (Ca, TrustAnchors) {
        let root = Ca::new_root("bench root", Duration::from_secs(86_400)).unwrap();
        let issuer = root
            .new_intermediate("bench issuer", Duration::from_secs(86_400))
            .unwrap();
        let anchors = TrustAnchors::from_der(vec![root.cert.clone()]).unwrap();
        (issuer, anchors)
    }

    /// A P-256 key and certificate for `name`, issued by `ca`.
    pub fn certify(ca: &Ca, name: &str) -> CertifiedKey {
        let name: Name = name.parse().unwrap();
        let key = generate_key().unwrap();
        let issued = ca
            .issue(&csr(&key, &name).unwrap(), &name, Duration::from_secs(3600))
            .unwrap();
        let mut chain = vec![issued.leaf];
        chain.extend(issued.intermediates);
        CertifiedKey {
            name,
            chain,
            key: Arc::new(PrivateKeyDer::Pkcs8(key_der(&key))),
            expiry: issued.valid_until,
        }
    }
}

/// A cluster config for `remora control`, built as the control plane's own config values.
pub mod config {
    use remora_control::cluster::{RawEndpoint, RawPort, RawService};
    use remora_control::config::{RawCluster, RawConfig, RawIdentity, RawServer};

    /// Cluster `name` (trust domain `<name>.example`) serving gRPC on `addr` and admin on
    /// `admin`, with `root.pem`, `issuer.pem`, `issuer.key` and `token.key` beside the file.
    pub fn cluster(name: &str, addr: &str, admin: &str) -> RawConfig {
        RawConfig {
            cluster: RawCluster {
                name: name.into(),
                trust_domain: format!("{name}.example"),
                control_plane_namespace: "linkerd".into(),
                cluster_domain: "cluster.local".into(),
                outbound_transport_mode: remora_control::config::default_transport_mode(),
            },
            server: RawServer {
                addr: addr.into(),
                admin_addr: admin.into(),
            },
            identity: RawIdentity {
                trust_anchors: "root.pem".into(),
                issuer_cert: "issuer.pem".into(),
                issuer_key: "issuer.key".into(),
                token_key: "token.key".into(),
                cert_lifetime: "24h".into(),
            },
            multicluster: None,
            links: Vec::new(),
            services: Vec::new(),
        }
    }

    /// Service `name.namespace` on `port` with `endpoints`.
    pub fn service(
        name: &str,
        namespace: &str,
        port: u16,
        endpoints: Vec<RawEndpoint>,
    ) -> RawService {
        RawService {
            name: name.into(),
            namespace: namespace.into(),
            ports: vec![RawPort {
                port,
                ..Default::default()
            }],
            endpoints,
            ..Default::default()
        }
    }
}
