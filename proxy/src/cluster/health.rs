//! Active HTTP health checking: each endpoint of a cluster is probed with `GET path` every
//! interval; `unhealthy_threshold` failures in a row mark it unhealthy, `healthy_threshold`
//! successes in a row bring it back. Endpoints start healthy, so a fresh proxy serves at once.

use std::sync::Weak;

use http::Request;
use http_body_util::BodyExt;

use super::Cluster;
use super::connector::ConnectError;
use super::pool::PoolError;
use crate::body;
use crate::config::HealthCheck;

pub(crate) fn spawn(cluster: Weak<Cluster>, hc: HealthCheck) {
    let Some(strong) = cluster.upgrade() else {
        return;
    };
    for index in 0..strong.endpoints.len() {
        let cluster = cluster.clone();
        let hc = hc.clone();
        tokio::spawn(async move { check_loop(cluster, index, hc).await });
    }
}

async fn check_loop(cluster: Weak<Cluster>, index: usize, hc: HealthCheck) {
    let mut interval = tokio::time::interval(hc.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        interval.tick().await;
        let Some(cluster) = cluster.upgrade().filter(|c| !c.is_retired()) else {
            return;
        };
        let Some(ok) = probe(&cluster, index, &hc).await else {
            continue;
        };
        // Held while the result is applied: a reload retiring the cluster (and restoring the
        // health of endpoints nothing checks any more) waits for it, or comes first.
        let retired = cluster.retirement();
        if *retired {
            return; // replaced while probing: the endpoint is no longer this loop's
        }
        let Some(endpoint) = cluster.endpoints.get(index) else {
            return;
        };
        if ok {
            successes += 1;
            failures = 0;
            if !endpoint.is_healthy() && successes >= hc.healthy_threshold {
                tracing::info!(cluster = %cluster.name, endpoint = %endpoint.address, "endpoint healthy again");
                endpoint.set_healthy(true);
            }
        } else {
            failures += 1;
            successes = 0;
            if endpoint.is_healthy() && failures >= hc.unhealthy_threshold {
                tracing::warn!(cluster = %cluster.name, endpoint = %endpoint.address, "endpoint failed health checks");
                endpoint.set_healthy(false);
            }
        }
        drop(retired);
        metrics::gauge!("wasmesh_endpoint_healthy", "cluster" => cluster.name.to_string(), "endpoint" => endpoint.address.clone())
            .set(if endpoint.is_healthy() { 1.0 } else { 0.0 });
    }
}

/// Whether the endpoint passed a check; `None` when none could be made because the cluster's
/// `max_connections` is reached: a saturated cluster is not an unhealthy one (Envoy's checks
/// are not subject to its circuit breakers).
async fn probe(cluster: &Cluster, index: usize, hc: &HealthCheck) -> Option<bool> {
    let (Some(endpoint), Some(pool)) = (cluster.endpoints.get(index), cluster.pool(index)) else {
        return Some(false);
    };
    let uri = format!("{}://{}{}", cluster.scheme, endpoint.address, hc.path);
    let Ok(request) = Request::get(uri)
        .header(http::header::HOST, endpoint.address.as_str())
        .header(http::header::USER_AGENT, "wasmesh-health-check")
        .body(body::empty())
    else {
        return Some(false);
    };
    let check = async {
        let response = match pool.send(request).await {
            Ok(response) => response,
            Err(PoolError::Connect(ConnectError::Overflow { .. })) => return None,
            Err(_) => return Some(false),
        };
        let status = response.status();
        // Read (a bounded amount of) the body, so the connection can serve the next check.
        let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await;
        Some(status.is_success() || status.is_redirection())
    };
    tokio::time::timeout(hc.timeout, check)
        .await
        .unwrap_or(Some(false))
}
