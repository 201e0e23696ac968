//! Follows the config file: each valid edit becomes the new cluster state, its policies
//! compiled (and so reaches every discovery and policy stream); an invalid edit is rejected with a log line naming the problem, and the
//! last good state keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::ClusterState;
use crate::config::Config;
use crate::metrics::DestinationMetrics;

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Polls `path` every `every` and publishes each valid new state.
pub async fn follow(
    path: PathBuf,
    state: watch::Sender<Arc<ClusterState>>,
    metrics: DestinationMetrics,
    every: Duration,
) {
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match Config::load(&path) {
            Ok(config) => {
                let services = config.state.services.len();
                let endpoints: usize = config
                    .state
                    .services
                    .values()
                    .map(|s| s.endpoints.len())
                    .sum();
                let servers = config.state.policy.inbound.server_count();
                let routes = config.state.policy.model.http_routes.len()
                    + config.state.policy.model.grpc_routes.len();
                state.send_replace(config.state);
                metrics.reloaded(true);
                info!(services, endpoints, servers, routes, "config reloaded");
            }
            Err(e) => {
                metrics.reloaded(false);
                warn!(error = %e, "config edit rejected; still serving the last good config");
            }
        }
    }
}
