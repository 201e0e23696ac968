//! A `remora proxy` on a loopback address of its own (127.88.x.y), for tests that need no
//! namespaces and no root: in the test process ([`LocalProxy::in_process`], the usual way) or
//! as a child process ([`LocalProxy::start`], for what only a process shows: its stdout, its
//! log level, its exit status). Distinct addresses keep parallel tests from fighting over ports.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::admin::{Metrics, request};
use crate::inproc::InProcess;
use crate::net::{Process, Role};
use crate::{bin, eventually};

/// A loopback address unique to this test process and `n`.
pub fn loopback(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 88, (std::process::id() % 250) as u8, n])
}

#[derive(Debug)]
pub struct LocalProxy {
    pub process: Role,
    pub ip: std::net::IpAddr,
}

/// The listeners of a proxy on `ip`.
fn listeners(ip: std::net::IpAddr) -> [(String, String); 3] {
    [
        ("REMORA_OUTBOUND_ADDR".into(), format!("{ip}:4140")),
        ("REMORA_INBOUND_ADDR".into(), format!("{ip}:4143")),
        ("REMORA_ADMIN_ADDR".into(), format!("{ip}:4191")),
    ]
}

impl LocalProxy {
    /// Starts `remora proxy` as a child process, its listeners all on `loopback(n)`, with
    /// extra environment.
    pub fn start(n: u8, env: &[(String, String)]) -> Self {
        let ip = loopback(n);
        let mut cmd = Command::new(bin::remora());
        cmd.arg("proxy")
            .envs(listeners(ip))
            .envs(env.iter().map(|(k, v)| (k, v)));
        LocalProxy {
            process: Role::Child(Process::spawn(&format!("proxy on {ip}"), cmd)),
            ip,
        }
    }

    /// The same proxy inside the test process.
    pub fn in_process(n: u8, env: &[(String, String)]) -> Self {
        let ip = loopback(n);
        let mut all = listeners(ip).to_vec();
        all.extend(env.iter().cloned());
        LocalProxy {
            process: Role::InProcess(InProcess::proxy(&format!("proxy@{ip}"), &all)),
            ip,
        }
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, port)
    }

    /// `GET path` on the admin listener: the status and body, or `None` if it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let conn = TcpStream::connect(self.addr(4191)).await.ok()?;
        request(conn, "GET", path).await.ok()
    }

    pub async fn metrics(&self) -> Metrics {
        Metrics {
            text: self.get("/metrics").await.expect("metrics").1,
        }
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&self, deadline: Duration) -> bool {
        eventually(deadline, || async {
            matches!(self.get("/ready").await, Some((200, _)))
        })
        .await
    }
}
