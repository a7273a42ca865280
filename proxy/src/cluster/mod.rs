//! Upstream clusters: endpoints, their connection pools, load balancing, active health checks,
//! passive outlier detection and circuit breaking.
//!
//! Each endpoint has its own connection pool ([`pool`]: idle timeout, idle cap) over a connector
//! that always dials that endpoint, so the pool is per endpoint as in Envoy. The load balancer
//! picks among endpoints that are healthy and not ejected.

pub mod breaker;
pub mod connector;
pub mod endpoint;
pub mod health;
pub mod lb;
pub mod outlier;
pub mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::{self, UpstreamProtocol};
use crate::tls::reloadable::Reloadable;
use crate::tls::{self, TlsError};
use breaker::CircuitBreaker;
use connector::{ConnectError, EndpointConnector};
use endpoint::Endpoint;
use http::{HeaderMap, HeaderName, StatusCode};
use lb::{LoadBalancer, PickContext};
use metrics::Counter;
use outlier::{Outcome, OutlierDetector};
use pool::Pool;

/// A cluster that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster \"{cluster}\": {source}")]
    Tls {
        cluster: String,
        #[source]
        source: TlsError,
    },
    #[error("cluster \"{cluster}\": {source}")]
    Connector {
        cluster: String,
        #[source]
        source: ConnectError,
    },
}

/// A running cluster.
pub struct Cluster {
    pub name: Arc<str>,
    pub config: config::Cluster,
    pub endpoints: Vec<Arc<Endpoint>>,
    pools: Vec<Arc<Pool>>,
    lb: Box<dyn LoadBalancer>,
    pub breaker: Arc<CircuitBreaker>,
    outlier: Option<OutlierDetector>,
    hash_header: Option<HeaderName>,
    pub scheme: &'static str,
    /// Upstream TLS, shared by the endpoints' connectors; reloads refresh it from its files.
    pub tls: Option<Arc<Reloadable<rustls::ClientConfig>>>,
    health_started: AtomicBool,
    /// Set once a reload replaced the cluster: requests that started before may still use it,
    /// but its health checks stop, so they do not fight the new cluster's over endpoints the
    /// two share.
    retired: std::sync::Mutex<bool>,
    pub counters: UpstreamCounters,
}

/// `wasmesh_upstream_requests_total{cluster,outcome}` and `wasmesh_upstream_retries_total`,
/// registered once per cluster rather than looked up by labels on every attempt.
pub struct UpstreamCounters {
    /// 1xx to 5xx.
    by_class: [Counter; 5],
    pub connect_failure: Counter,
    pub reset: Counter,
    pub timeout: Counter,
    pub retries: Counter,
}

impl UpstreamCounters {
    fn new(cluster: &str) -> UpstreamCounters {
        let outcome = |outcome: &'static str| {
            metrics::counter!("wasmesh_upstream_requests_total",
                "cluster" => cluster.to_string(), "outcome" => outcome)
        };
        UpstreamCounters {
            by_class: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(outcome),
            connect_failure: outcome("connect_failure"),
            reset: outcome("reset"),
            timeout: outcome("timeout"),
            retries: metrics::counter!("wasmesh_upstream_retries_total", "cluster" => cluster.to_string()),
        }
    }

    /// The counter for a response with `status`.
    pub fn response(&self, status: StatusCode) -> &Counter {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize;
        &self.by_class[class - 1]
    }
}

/// One endpoint chosen for one attempt.
pub struct Upstream<'a> {
    pub index: usize,
    pub endpoint: &'a Arc<Endpoint>,
    pub pool: &'a Pool,
}

/// Whether two cluster settings dial endpoints the same way, so that an endpoint present in
/// both can keep its connection pool (and its breaker, which counts its connections).
fn same_transport(a: &config::Cluster, b: &config::Cluster) -> bool {
    a.tls == b.tls
        && a.protocol == b.protocol
        && a.connect_timeout == b.connect_timeout
        && a.pool == b.pool
        && a.circuit_breakers == b.circuit_breakers
}

impl Cluster {
    pub fn build(cfg: &config::Cluster) -> Result<Arc<Cluster>, ClusterError> {
        Cluster::build_from(cfg, None)
    }

    /// Builds a cluster for a reload: the running `previous` itself when nothing changed, or a
    /// new cluster that keeps the endpoints (health, ejection, pooled connections) it shares
    /// with `previous` when only endpoints or balancing changed.
    pub fn build_from(
        cfg: &config::Cluster,
        previous: Option<&Arc<Cluster>>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        if let Some(previous) = previous
            && previous.config == *cfg
        {
            return Ok(previous.clone());
        }
        let reuse = previous.filter(|p| same_transport(&p.config, cfg));
        // Endpoints kept from `previous` dial with its TLS configuration, so new ones share it:
        // a certificate rotation then reaches every endpoint of the cluster.
        let tls_config = match (&cfg.tls, reuse) {
            (Some(_), Some(p)) => p.tls.clone(),
            (Some(t), None) => {
                Some(tls::client::reloadable(t, cfg.protocol).map_err(|source| {
                    ClusterError::Tls {
                        cluster: cfg.name.clone(),
                        source,
                    }
                })?)
            }
            (None, _) => None,
        };
        let breaker = match reuse {
            Some(p) => p.breaker.clone(),
            None => Arc::new(CircuitBreaker::new(&cfg.name, &cfg.circuit_breakers)),
        };
        let mut endpoints = Vec::with_capacity(cfg.endpoints.len());
        let mut pools = Vec::with_capacity(cfg.endpoints.len());
        for address in &cfg.endpoints {
            if let Some((endpoint, pool)) = reuse.and_then(|p| p.endpoint_named(address)) {
                endpoints.push(endpoint);
                pools.push(pool);
                continue;
            }
            let tls = tls_config
                .as_ref()
                .map(|c| (c.clone(), cfg.tls.as_ref().and_then(|t| t.sni.as_deref())));
            let connector = EndpointConnector::new(
                &cfg.name,
                address,
                cfg.connect_timeout,
                tls,
                breaker.clone(),
            )
            .map_err(|source| ClusterError::Connector {
                cluster: cfg.name.clone(),
                source,
            })?;
            endpoints.push(Endpoint::new(&cfg.name, address));
            pools.push(Arc::new(Pool::new(
                connector,
                address,
                cfg.protocol == UpstreamProtocol::Http2,
                cfg.pool.idle_timeout,
                cfg.pool.max_idle_per_endpoint,
            )));
        }
        let lb = lb::build(cfg.lb_policy, cfg.ring_hash.as_ref(), &endpoints, None);
        let hash_header = cfg
            .ring_hash
            .as_ref()
            .and_then(|r| HeaderName::from_bytes(r.header.as_bytes()).ok());
        Ok(Arc::new(Cluster {
            name: cfg.name.as_str().into(),
            config: cfg.clone(),
            endpoints,
            pools,
            lb,
            breaker,
            outlier: cfg.outlier_detection.clone().map(OutlierDetector::new),
            hash_header,
            scheme: if cfg.tls.is_some() { "https" } else { "http" },
            tls: tls_config,
            health_started: AtomicBool::new(false),
            retired: std::sync::Mutex::new(false),
            counters: UpstreamCounters::new(&cfg.name),
        }))
    }

    fn endpoint_named(&self, address: &str) -> Option<(Arc<Endpoint>, Arc<Pool>)> {
        let index = self.endpoints.iter().position(|e| e.address == address)?;
        Some((self.endpoints[index].clone(), self.pools[index].clone()))
    }

    /// Picks an endpoint for a request with these headers.
    pub fn pick(&self, headers: &HeaderMap) -> Option<Upstream<'_>> {
        self.pick_at(headers, Instant::now())
    }

    /// [`Cluster::pick`] with the caller's clock reading (the request path has one already).
    pub fn pick_at(&self, headers: &HeaderMap, now: Instant) -> Option<Upstream<'_>> {
        let hash = self
            .hash_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .map(|value| lb::hash_key(value.as_bytes()));
        let ctx = PickContext { hash, now };
        let chosen = self.lb.pick(&self.endpoints, &ctx)?;
        let index = self
            .endpoints
            .iter()
            .position(|e| Arc::ptr_eq(e, &chosen))?;
        Some(Upstream {
            index,
            endpoint: &self.endpoints[index],
            pool: &self.pools[index],
        })
    }

    /// Reports how an attempt on endpoint `index` went, for outlier detection.
    pub fn observe(&self, index: usize, outcome: Outcome) {
        if let (Some(detector), Some(endpoint)) = (&self.outlier, self.endpoints.get(index)) {
            detector.observe(endpoint, &self.endpoints, outcome, Instant::now());
        }
    }

    /// Marks the cluster replaced by a reload (see `retired`).
    pub fn retire(&self) {
        *self.retirement() = true;
    }

    /// After a reload: a cluster without health checks has nothing that would ever mark an
    /// endpoint it kept from an earlier, checked version healthy again, so they all are.
    pub fn restore_health_unchecked(&self) {
        if self.config.health_check.is_none() {
            for endpoint in &self.endpoints {
                endpoint.set_healthy(true);
            }
        }
    }

    pub(crate) fn is_retired(&self) -> bool {
        *self.retirement()
    }

    /// Whether the cluster is retired, locked: health checks apply a result under it.
    pub(crate) fn retirement(&self) -> std::sync::MutexGuard<'_, bool> {
        self.retired.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn pool(&self, index: usize) -> Option<&Pool> {
        self.pools.get(index).map(|p| &**p)
    }

    /// Starts the cluster's background work, once: active health checking (if configured)
    /// and closing connections idle past the pool's idle timeout. Both stop when the cluster
    /// is dropped.
    pub fn start_background_tasks(self: &Arc<Self>) {
        if self.health_started.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(hc) = &self.config.health_check {
            health::spawn(Arc::downgrade(self), hc.clone());
        }
        let weak = Arc::downgrade(self);
        let every = (self.config.pool.idle_timeout / 2).max(std::time::Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                for pool in &cluster.pools {
                    pool.evict_idle();
                }
            }
        });
    }

    /// A JSON description for the admin API's `/clusters`.
    pub fn describe(&self) -> serde_json::Value {
        let now = Instant::now();
        let endpoints: Vec<_> = self
            .endpoints
            .iter()
            .zip(&self.pools)
            .map(|(e, pool)| {
                serde_json::json!({
                    "address": e.address,
                    "healthy": e.is_healthy(),
                    "ejected": e.ejected_until().is_some_and(|t| t > now),
                    "available": e.is_available(now),
                    "in_flight": e.in_flight(),
                    "idle_connections": pool.idle_count(),
                })
            })
            .collect();
        serde_json::json!({
            "name": &*self.name,
            "lb_policy": self.config.lb_policy,
            "protocol": self.config.protocol,
            "endpoints": endpoints,
        })
    }
}
