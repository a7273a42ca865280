//! Metrics: counters, gauges and histograms defined, changed and read back by the filter, their
//! misuse, and the values the embedder exports.

use crate::capture;
use crate::check::{Check, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "metrics";

pub fn checks() -> Vec<Check> {
    const DEFINE: &str =
        "spec v0.2.1 proxy_define_metric (proxy_metric_type_t COUNTER=0, GAUGE=1, HISTOGRAM=2)";
    const UNKNOWN: &str = "spec v0.2.1 Metrics: NOT_FOUND for an unknown metric_id";
    const EXPORT: &str = "Envoy: filter metrics are exported as stats (wasmesh: /stats as wasmesh_filter_<name>{plugin})";
    vec![
        eq("metrics.define_status", "OK OK OK", DEFINE).proves(&["proxy_define_metric", "proxy_metric_type_t"]),
        eq("metrics.define_bad_type", "BAD_ARGUMENT", DEFINE).proves(&["proxy_define_metric", "proxy_metric_type_t"]),
        eq("metrics.counter_increment", "OK OK", "spec v0.2.1 proxy_increment_metric").proves(&["proxy_increment_metric"]),
        eq("metrics.counter_value", "OK 6", "spec v0.2.1 proxy_get_metric").proves(&["proxy_get_metric", "proxy_increment_metric"]),
        eq("metrics.counter_decrement", "BAD_ARGUMENT", "Envoy (Context::incrementMetric): a counter only goes up; a negative offset is BAD_ARGUMENT")
            .proves(&["proxy_increment_metric"]),
        eq("metrics.counter_after_decrement", "OK 6", "Envoy: a refused change changes nothing").proves(&["proxy_get_metric"]),
        eq("metrics.gauge_record", "OK", "spec v0.2.1 proxy_record_metric").proves(&["proxy_record_metric"]),
        eq("metrics.gauge_value", "OK 42", "spec v0.2.1 proxy_get_metric").proves(&["proxy_get_metric", "proxy_record_metric"]),
        eq("metrics.gauge_decrement", "OK", "Envoy: a gauge may go down").proves(&["proxy_increment_metric"]),
        eq("metrics.gauge_after_decrement", "OK 40", "spec v0.2.1 proxy_get_metric").proves(&["proxy_get_metric"]),
        eq("metrics.histogram_record", "OK", "spec v0.2.1 proxy_record_metric").proves(&["proxy_record_metric", "proxy_metric_type_t"]),
        eq("metrics.get_unknown", "NOT_FOUND", UNKNOWN).proves(&["proxy_get_metric"]),
        eq("metrics.increment_unknown", "NOT_FOUND", UNKNOWN).proves(&["proxy_increment_metric"]),
        eq("metrics.record_unknown", "NOT_FOUND", UNKNOWN).proves(&["proxy_record_metric"]),
        eq("metrics.exported_counter", "6", EXPORT).proves(&["proxy_increment_metric"]),
        eq("metrics.exported_gauge", "40", EXPORT).proves(&["proxy_record_metric"]),
    ]
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "metrics", "")?;
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(
            &[
                (":method", "GET"),
                (":path", "/metrics"),
                (":authority", "conformance.local"),
            ],
            true,
        )
        .doing("request headers")?;
    drop(stream);
    let mut run = Run::default();
    let value = |name: &str| {
        loaded
            .harness
            .metric(name)
            .map_or("undefined".to_string(), |v| v.to_string())
    };
    run.obs
        .add("metrics.exported_counter", value("conf_counter"));
    run.obs.add("metrics.exported_gauge", value("conf_gauge"));
    run.harness(&loaded.harness);
    Ok(run)
}

/// The value of `metric{plugin="<plugin>"}` in Prometheus text.
fn scraped(stats: &str, metric: &str, plugin: &str) -> String {
    let label = format!("plugin=\"{plugin}\"");
    stats
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next())
        .next()
        .unwrap_or("absent")
        .to_string()
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("metrics").await?;
    let name = capture::unique("metrics");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        "",
        "",
        "",
    );
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        proxy.get("/metrics", &[]).await?;
        let stats = proxy.admin_get("/stats").await?;
        run.obs.add(
            "metrics.exported_counter",
            scraped(&stats, "wasmesh_filter_conf_counter", &name),
        );
        run.obs.add(
            "metrics.exported_gauge",
            scraped(&stats, "wasmesh_filter_conf_gauge", &name),
        );
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
