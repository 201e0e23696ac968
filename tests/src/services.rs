//! Builds the `[[services]]` part of a cluster config for tests.
//!
//! ```no_run
//! # fn f(b: &remora_tests::Pod) {
//! use remora_tests::services::{Service, toml};
//! let config = toml(&[Service::new("echo", "shop").vip("10.96.0.10").port(7000).endpoint(b, "echo")]);
//! # }
//! ```

use std::fmt::Write;

use crate::net::Pod;

#[derive(Clone, Debug)]
struct Endpoint {
    pod: String,
    ip: String,
    sa: String,
    protocol: &'static str,
    explicit: bool,
}

#[derive(Clone, Debug)]
pub struct Service {
    name: String,
    namespace: String,
    vip: Option<String>,
    ports: Vec<(u16, bool)>,
    endpoints: Vec<Endpoint>,
    export: bool,
    export_mode: Option<&'static str>,
    extra: String,
}

impl Service {
    pub fn new(name: &str, namespace: &str) -> Self {
        Service {
            name: name.into(),
            namespace: namespace.into(),
            vip: None,
            ports: Vec::new(),
            endpoints: Vec::new(),
            export: false,
            export_mode: None,
            extra: String::new(),
        }
    }

    pub fn vip(mut self, ip: &str) -> Self {
        self.vip = Some(ip.into());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.ports.push((port, false));
        self
    }

    /// A port marked opaque (no detection; opaque transport between proxies).
    pub fn opaque_port(mut self, port: u16) -> Self {
        self.ports.push((port, true));
        self
    }

    /// A meshed endpoint: `pod` with service account `sa`.
    pub fn endpoint(mut self, pod: &Pod, sa: &str) -> Self {
        self.endpoints.push(Endpoint {
            pod: pod.name.clone(),
            ip: pod.ip4().to_string(),
            sa: sa.into(),
            protocol: "h2",
            explicit: false,
        });
        self
    }

    /// A meshed endpoint whose proxy runs in explicit mode (no iptables) at `ip`.
    pub fn explicit_endpoint(mut self, pod: &str, ip: std::net::IpAddr, sa: &str) -> Self {
        self.endpoints.push(Endpoint {
            pod: pod.into(),
            ip: ip.to_string(),
            sa: sa.into(),
            protocol: "h2",
            explicit: true,
        });
        self
    }

    /// An endpoint that is not meshed (no identity, no hint).
    pub fn unmeshed_endpoint(mut self, pod: &Pod) -> Self {
        self.endpoints.push(Endpoint {
            pod: pod.name.clone(),
            ip: pod.ip4().to_string(),
            sa: "default".into(),
            protocol: "none",
            explicit: false,
        });
        self
    }

    /// Exported to linked clusters.
    pub fn export(mut self) -> Self {
        self.export = true;
        self
    }

    /// Exported, to be reached in `mode` (`flat` or `gateway`) whatever the link says.
    pub fn export_as(mut self, mode: &'static str) -> Self {
        self.export = true;
        self.export_mode = Some(mode);
        self
    }

    /// Extra TOML appended to this service (routes, retry budget, ...).
    pub fn with(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }
}

/// The `[[services]]` TOML for `services`.
pub fn toml(services: &[Service]) -> String {
    let mut out = String::new();
    for s in services {
        let _ = writeln!(
            out,
            "[[services]]\nname = \"{}\"\nnamespace = \"{}\"",
            s.name, s.namespace
        );
        if let Some(vip) = &s.vip {
            let _ = writeln!(out, "cluster_ip = \"{vip}\"");
        }
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|(p, opaque)| format!("{{ port = {p}, opaque = {opaque} }}"))
            .collect();
        let _ = writeln!(out, "ports = [{}]", ports.join(", "));
        if s.export {
            let _ = writeln!(out, "export = true");
        }
        if let Some(mode) = s.export_mode {
            let _ = writeln!(out, "export_mode = \"{mode}\"");
        }
        for e in &s.endpoints {
            let _ = writeln!(
                out,
                "[[services.endpoints]]\npod = \"{}\"\nip = \"{}\"\nservice_account = \"{}\"\nprotocol = \"{}\"\nexplicit = {}",
                e.pod, e.ip, e.sa, e.protocol, e.explicit
            );
        }
        out.push_str(&s.extra);
        out.push('\n');
    }
    out
}
