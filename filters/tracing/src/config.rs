//! The filter's configuration: the collector, the resource, which propagation formats, sampling,
//! span names and batching — parsed with the SDK and checked once in `on_configure`.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

/// A trace-context format, by the names OpenTelemetry's `OTEL_PROPAGATORS` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Propagator {
    /// W3C Trace Context: `traceparent`, `tracestate`.
    #[serde(rename = "tracecontext")]
    TraceContext,
    /// B3 single header: `b3`.
    #[serde(rename = "b3")]
    B3,
    /// B3 multi header: `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`, `x-b3-flags`.
    #[serde(rename = "b3multi")]
    B3Multi,
}

/// How spans are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanName {
    /// `GET users`: the method and the route's name (the method alone without a route).
    MethodRoute,
    /// `users`: the route's name (the method and path without a route).
    Route,
    /// `GET /users/7`: the method and the path without its query.
    MethodPath,
}

/// Where finished spans go: OTLP/HTTP with JSON bodies.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collector {
    /// The proxy's cluster the collector is in.
    pub cluster: String,
    /// The `:authority` of export requests (default: the cluster's name).
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "defaults::path")]
    pub path: String,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u32,
    /// Extra request headers (an API key, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batch {
    /// Most spans in one export request; a full batch goes at once.
    pub max_spans: usize,
    /// Most spans waiting for export in one VM replica; later ones are dropped and counted.
    pub max_queue: usize,
    /// How often waiting spans are sent even if the batch is not full.
    pub flush_interval_ms: u64,
    /// Most export requests in flight at once from one VM replica.
    pub max_in_flight: usize,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            max_spans: 512,
            max_queue: 2048,
            flush_interval_ms: 1000,
            max_in_flight: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub collector: Collector,
    /// The `service.name` resource attribute.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// More resource attributes (string values).
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Formats read from requests, first valid one wins; every one is written upstream.
    #[serde(default = "defaults::propagators")]
    pub propagators: Vec<Propagator>,
    /// Share of new traces (and of traces whose caller deferred the decision) recorded.
    #[serde(default = "defaults::sampling_ratio")]
    pub sampling_ratio: f64,
    #[serde(default = "defaults::span_name")]
    pub span_name: SpanName,
    #[serde(default)]
    pub batch: Batch,
}

mod defaults {
    use super::{Propagator, SpanName};

    pub fn path() -> String {
        "/v1/traces".into()
    }
    pub fn timeout_ms() -> u32 {
        5000
    }
    pub fn service_name() -> String {
        "wasmesh".into()
    }
    pub fn propagators() -> Vec<Propagator> {
        vec![Propagator::TraceContext]
    }
    pub fn sampling_ratio() -> f64 {
        1.0
    }
    pub fn span_name() -> SpanName {
        SpanName::MethodRoute
    }
}

/// A header name as HTTP/2 writes it: a token, lowercase.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        })
}

impl Config {
    /// What serde cannot say.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.collector.cluster.is_empty() {
            return Err(ConfigError::at("collector.cluster", "must not be empty"));
        }
        if !self.collector.path.starts_with('/') {
            return Err(ConfigError::at("collector.path", "must start with /"));
        }
        if self.collector.timeout_ms == 0 {
            return Err(ConfigError::at(
                "collector.timeout_ms",
                "must be at least 1",
            ));
        }
        for (name, value) in &self.collector.headers {
            if !valid_header_name(name) || name.starts_with(':') {
                return Err(ConfigError::at(
                    format!("collector.headers.{name}"),
                    "not a lowercase header name",
                ));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(ConfigError::at(
                    format!("collector.headers.{name}"),
                    "a value may not hold CR, LF or NUL",
                ));
            }
        }
        if self.service_name.is_empty() {
            return Err(ConfigError::at("service_name", "must not be empty"));
        }
        if self.propagators.is_empty() {
            return Err(ConfigError::at("propagators", "needs at least one format"));
        }
        for (i, p) in self.propagators.iter().enumerate() {
            if self.propagators[..i].contains(p) {
                return Err(ConfigError::at(format!("propagators[{i}]"), "listed twice"));
            }
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::at("sampling_ratio", "must be between 0 and 1"));
        }
        let batch = &self.batch;
        if batch.max_spans == 0 {
            return Err(ConfigError::at("batch.max_spans", "must be at least 1"));
        }
        if batch.max_queue < batch.max_spans {
            return Err(ConfigError::at(
                "batch.max_queue",
                "must be at least batch.max_spans",
            ));
        }
        if batch.flush_interval_ms == 0 {
            return Err(ConfigError::at(
                "batch.flush_interval_ms",
                "must be at least 1",
            ));
        }
        if batch.max_in_flight == 0 {
            return Err(ConfigError::at("batch.max_in_flight", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        let config: Config = wasmesh_sdk::config::parse(json.as_bytes())?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn defaults() {
        let config = parse(r#"{"collector": {"cluster": "otel"}}"#).expect("valid");
        assert_eq!(config.collector.path, "/v1/traces");
        assert_eq!(config.collector.authority, None);
        assert_eq!(config.propagators, [Propagator::TraceContext]);
        assert_eq!(config.sampling_ratio, 1.0);
        assert_eq!(config.batch, Batch::default());
        assert_eq!(config.service_name, "wasmesh");
    }

    #[test]
    fn checks_name_the_field() {
        for (json, path) in [
            ("{}", "."),
            (r#"{"collector": {"cluster": ""}}"#, "collector.cluster"),
            (
                r#"{"collector": {"cluster": "c", "path": "v1"}}"#,
                "collector.path",
            ),
            (
                r#"{"collector": {"cluster": "c", "headers": {"X-Key": "1"}}}"#,
                "collector.headers.X-Key",
            ),
            (
                r#"{"collector": {"cluster": "c"}, "propagators": ["jaeger"]}"#,
                "propagators[0]",
            ),
            (
                r#"{"collector": {"cluster": "c"}, "propagators": ["b3", "b3"]}"#,
                "propagators[1]",
            ),
            (
                r#"{"collector": {"cluster": "c"}, "sampling_ratio": 1.5}"#,
                "sampling_ratio",
            ),
            (
                r#"{"collector": {"cluster": "c"}, "batch": {"max_spans": 10, "max_queue": 5}}"#,
                "batch.max_queue",
            ),
            (
                r#"{"collector": {"cluster": "c"}, "batch": {"flush_interval_ms": 0}}"#,
                "batch.flush_interval_ms",
            ),
        ] {
            let err = parse(json).expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
        }
    }
}
