//! The filter's configuration: which labels, the metric name prefix, the latency histogram,
//! sizes, and the cardinality bounds — parsed with the SDK and checked once in `on_configure`.

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

/// A label the metrics may carry, in the order the configuration lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// `route_name`.
    Route,
    /// `request.method`, standard methods only (others read `other`).
    Method,
    /// `response.code`: `200`, `503` (`0` when there was no response).
    Code,
    /// The status class: `2xx`, `5xx` (`none` when there was no response).
    CodeClass,
    /// `cluster_name`: the upstream cluster the route sends to.
    Cluster,
}

impl Label {
    /// The label's key on `/stats`.
    pub fn key(self) -> &'static str {
        match self {
            Label::Route => "route",
            Label::Method => "method",
            Label::Code => "code",
            Label::CodeClass => "code_class",
            Label::Cluster => "cluster",
        }
    }
}

/// How request durations are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Cumulative `_bucket{le}` counters with `_sum` and `_count`, kept by the filter: a
    /// Prometheus histogram on any host.
    Buckets,
    /// One proxy-wasm histogram metric, in milliseconds; the host chooses how to show it
    /// (wasmesh: a Prometheus summary; Envoy: its own histogram).
    Host,
    /// No duration metric.
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Histogram {
    pub mode: Mode,
    /// Upper bounds in milliseconds, strictly increasing (`+Inf` is implied).
    pub buckets_ms: Vec<f64>,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            mode: Mode::Buckets,
            buckets_ms: vec![
                1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
            ],
        }
    }
}

/// Most distinct values each label may take (per plugin, across its VM replicas); values
/// beyond read `other`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaxValues {
    pub route: u32,
    pub method: u32,
    pub code: u32,
    pub code_class: u32,
    pub cluster: u32,
}

impl Default for MaxValues {
    fn default() -> MaxValues {
        MaxValues {
            route: 100,
            method: 10,
            code: 50,
            code_class: 6,
            cluster: 100,
        }
    }
}

impl MaxValues {
    pub fn of(&self, label: Label) -> u32 {
        match label {
            Label::Route => self.route,
            Label::Method => self.method,
            Label::Code => self.code,
            Label::CodeClass => self.code_class,
            Label::Cluster => self.cluster,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Put before every metric name: `"edge_"` gives `edge_requests_total`.
    pub prefix: String,
    pub labels: Vec<Label>,
    pub histogram: Histogram,
    /// Count request and response body bytes.
    pub sizes: bool,
    pub max_values: MaxValues,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            prefix: String::new(),
            labels: vec![Label::Route, Label::Code],
            histogram: Histogram::default(),
            sizes: true,
            max_values: MaxValues::default(),
        }
    }
}

/// Most histogram buckets (each is a metric per label set).
pub const MAX_BUCKETS: usize = 32;

impl Config {
    /// What serde cannot say: a usable prefix, labels once each, sane buckets and bounds.
    pub fn check(&self) -> Result<(), ConfigError> {
        let prefix_ok = self
            .prefix
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
        if !prefix_ok {
            return Err(ConfigError::at(
                "prefix",
                "may hold only letters, digits (not first) and `_`",
            ));
        }
        for (i, label) in self.labels.iter().enumerate() {
            if self.labels[..i].contains(label) {
                return Err(ConfigError::at(
                    format!("labels[{i}]"),
                    format!("`{}` is listed twice", label.key()),
                ));
            }
        }
        let buckets = &self.histogram.buckets_ms;
        if self.histogram.mode == Mode::Buckets {
            if buckets.is_empty() {
                return Err(ConfigError::at(
                    "histogram.buckets_ms",
                    "needs at least one bound",
                ));
            }
            if buckets.len() > MAX_BUCKETS {
                return Err(ConfigError::at(
                    "histogram.buckets_ms",
                    format!("at most {MAX_BUCKETS} bounds"),
                ));
            }
        }
        for (i, bound) in buckets.iter().enumerate() {
            if !bound.is_finite() || *bound <= 0.0 {
                return Err(ConfigError::at(
                    format!("histogram.buckets_ms[{i}]"),
                    "must be a positive number of milliseconds",
                ));
            }
            if i > 0 && *bound <= buckets[i - 1] {
                return Err(ConfigError::at(
                    format!("histogram.buckets_ms[{i}]"),
                    "bounds must be strictly increasing",
                ));
            }
        }
        for label in [
            Label::Route,
            Label::Method,
            Label::Code,
            Label::CodeClass,
            Label::Cluster,
        ] {
            if self.max_values.of(label) == 0 {
                return Err(ConfigError::at(
                    format!("max_values.{}", label.key()),
                    "must be at least 1",
                ));
            }
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
        let config = parse("").expect("empty is valid");
        assert_eq!(config, Config::default());
        assert_eq!(config.labels, [Label::Route, Label::Code]);
    }

    #[test]
    fn checks_name_the_field() {
        for (json, path) in [
            (r#"{"prefix": "9x"}"#, "prefix"),
            (r#"{"prefix": "a-b"}"#, "prefix"),
            (r#"{"labels": ["route", "route"]}"#, "labels[1]"),
            (r#"{"labels": ["host"]}"#, "labels[0]"),
            (
                r#"{"histogram": {"buckets_ms": [5, 5]}}"#,
                "histogram.buckets_ms[1]",
            ),
            (
                r#"{"histogram": {"buckets_ms": [0]}}"#,
                "histogram.buckets_ms[0]",
            ),
            (
                r#"{"histogram": {"buckets_ms": []}}"#,
                "histogram.buckets_ms",
            ),
            (r#"{"max_values": {"route": 0}}"#, "max_values.route"),
            (r#"{"max_values": {"routes": 1}}"#, "max_values.routes"),
        ] {
            let err = parse(json).expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
        }
        // No histogram: no buckets needed.
        parse(r#"{"histogram": {"mode": "none", "buckets_ms": []}}"#).expect("valid");
    }
}
