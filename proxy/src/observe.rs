//! Observability plumbing: the `tracing` subscriber for logs and the process-wide Prometheus
//! recorder behind the `metrics` facade, rendered by the admin API's `/stats`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: fine below a millisecond, where a proxy's own cost lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets for the histograms filters define (`proxy_define_metric`), whose unit the host
/// cannot know: Envoy's default bounds, which suit the milliseconds filters usually record.
const FILTER_BUCKETS: &[f64] = &[
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle (`None` if another
/// recorder was installed first, e.g. by an embedding program).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Prefix("wasmesh_filter_".into()), FILTER_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            // Histogram samples queue up until drained; without a scrape they would grow for
            // ever, so drain them on a timer too.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "wasmesh_requests_total",
        "Downstream requests by listener, route and status code."
    );
    metrics::describe_histogram!(
        "wasmesh_request_duration_seconds",
        "Time from request received to response headers sent."
    );
    metrics::describe_histogram!(
        "wasmesh_worker_loop_delay_seconds",
        "How late a worker ran its 250 ms watchdog timer: time its event loop was held."
    );
    metrics::describe_counter!(
        "wasmesh_upstream_requests_total",
        "Upstream attempts by cluster and outcome."
    );
    metrics::describe_counter!(
        "wasmesh_upstream_connections_total",
        "Upstream connections opened."
    );
    metrics::describe_gauge!(
        "wasmesh_upstream_connections_active",
        "Open upstream connections by cluster."
    );
    metrics::describe_counter!("wasmesh_upstream_retries_total", "Retries by cluster.");
    metrics::describe_gauge!(
        "wasmesh_endpoint_healthy",
        "1 if the endpoint passes active health checks."
    );
    metrics::describe_counter!(
        "wasmesh_outlier_ejections_total",
        "Endpoints ejected by outlier detection."
    );
    metrics::describe_counter!(
        "wasmesh_circuit_breaker_overflow_total",
        "Requests refused by a circuit breaker."
    );
    metrics::describe_counter!(
        "wasmesh_tls_reload_total",
        "Listener and cluster TLS configurations rebuilt from changed files, by result."
    );
    metrics::describe_gauge!(
        "wasmesh_downstream_connections",
        "Open downstream connections by listener."
    );
}

/// One listener's request metrics (`wasmesh_requests_total`, `wasmesh_request_duration_seconds`)
/// as handles looked up once per route and status code: a lookup by name and labels hashes and
/// compares every label, which cost more per request than the rest of the bookkeeping.
pub struct RequestMetrics {
    listener: Arc<str>,
    /// Route names come from the configuration, so a fast unkeyed hash is safe. The handles are
    /// used under the read lock, not cloned out: each clone and drop of a handle would be an
    /// atomic read-modify-write, and those are what a request's bookkeeping costs most here.
    routes: RwLock<HashMap<Arc<str>, RouteMetrics, rustc_hash::FxBuildHasher>>,
}

struct RouteMetrics {
    duration: Histogram,
    /// A route sees a handful of status codes; a short list beats a map. New codes are added
    /// under the write lock on `routes`.
    codes: Vec<(u16, Counter)>,
}

impl RequestMetrics {
    pub fn new(listener: Arc<str>) -> RequestMetrics {
        RequestMetrics {
            listener,
            routes: RwLock::new(HashMap::default()),
        }
    }

    /// Counts one request on `route` answered with `code` after `elapsed`.
    pub fn record(&self, route: &Arc<str>, code: u16, elapsed: Duration) {
        let timed = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            match routes.get(&**route) {
                Some(entry) => {
                    entry.duration.record(elapsed.as_secs_f64());
                    if entry.count(code) {
                        return;
                    }
                    true
                }
                None => false,
            }
        };
        // A route's first request, or its first with this code.
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let entry = routes.entry(route.clone()).or_insert_with(|| RouteMetrics {
            duration: metrics::histogram!("wasmesh_request_duration_seconds",
                "listener" => self.listener.clone(), "route" => route.clone()),
            codes: Vec::new(),
        });
        if !timed {
            entry.duration.record(elapsed.as_secs_f64());
        }
        if !entry.count(code) {
            let counter = metrics::counter!("wasmesh_requests_total",
                "listener" => self.listener.clone(), "route" => route.clone(), "code" => code.to_string());
            counter.increment(1);
            entry.codes.push((code, counter));
        }
    }
}

impl RouteMetrics {
    /// Counts a request answered with `code`, if that code has a counter yet.
    fn count(&self, code: u16) -> bool {
        match self.codes.iter().find(|(c, _)| *c == code) {
            Some((_, counter)) => {
                counter.increment(1);
                true
            }
            None => false,
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_is_counted_once_whichever_handles_it_finds() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let metrics = RequestMetrics::new(Arc::from("l"));
            let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
            // A new route, a known route with a new code, then known route and code.
            for (route, code) in [(&a, 200), (&a, 503), (&a, 200), (&b, 200), (&a, 200)] {
                metrics.record(route, code, Duration::from_millis(1));
            }
        });
        let text = handle.render();
        let value = |line: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(line)?.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {line} in:\n{text}"))
        };
        assert_eq!(
            value(r#"wasmesh_requests_total{listener="l",route="a",code="200"}"#),
            3
        );
        assert_eq!(
            value(r#"wasmesh_requests_total{listener="l",route="a",code="503"}"#),
            1
        );
        assert_eq!(
            value(r#"wasmesh_requests_total{listener="l",route="b",code="200"}"#),
            1
        );
        assert_eq!(
            value(r#"wasmesh_request_duration_seconds_count{listener="l",route="a"}"#),
            4
        );
        assert_eq!(
            value(r#"wasmesh_request_duration_seconds_count{listener="l",route="b"}"#),
            1
        );
    }
}
