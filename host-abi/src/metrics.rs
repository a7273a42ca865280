//! Metrics a filter defines (`proxy_define_metric` and friends). Values are kept per plugin,
//! shared by its replicas, and mirrored into the process's `metrics` recorder as
//! `wasmesh_filter_<name>{plugin="…"}` so they appear on the proxy's `/stats`.
//!
//! Tags flattened into a name the way Istio's stats filter does for Envoy's tag extraction —
//! `key=.=value;.;` segments before the name, e.g. `route=.=users;.;requests_total` — become
//! Prometheus labels: `wasmesh_filter_requests_total{plugin="…",route="users"}`. (The SDK's
//! metric helpers build names this way.)

use std::collections::HashMap;
use std::sync::Mutex;

use crate::abi::{MetricType, status};
use crate::limits::{LogBudget, MAX_METRICS};

#[derive(Debug)]
struct Metric {
    name: String,
    prom_name: String,
    /// `plugin` and any tags flattened into the name.
    labels: Vec<metrics::Label>,
    kind: MetricType,
    value: i64,
}

/// One plugin's metrics; ids are indexes + 1 and stay stable across replicas. At most
/// [`MAX_METRICS`] may be defined. (It also holds the plugin's budget of log lines, shared by
/// its replicas like the metrics.)
#[derive(Debug)]
pub struct PluginMetrics {
    plugin: String,
    metrics: Mutex<Vec<Metric>>,
    /// kind → name → id, so a definition costs one lookup (and no allocation) however many
    /// there are.
    ids: Mutex<HashMap<MetricType, HashMap<String, u32>>>,
    pub(crate) log_budget: LogBudget,
}

/// Prometheus names allow `[a-zA-Z0-9_:]`; anything else becomes `_`.
fn prometheus_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("wasmesh_filter_{cleaned}")
}

/// Splits leading `key=.=value;.;` tags off a metric name. A name without them, or whose
/// tags leave no name or use a key that is not a Prometheus label name, is taken whole.
fn split_tags(name: &str) -> (&str, Vec<(&str, &str)>) {
    let mut rest = name;
    let mut tags = Vec::new();
    while let Some(end) = rest.find(";.;") {
        let Some((key, value)) = rest[..end].split_once("=.=") else {
            return (name, Vec::new());
        };
        let valid_key = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && key != "plugin";
        if !valid_key {
            return (name, Vec::new());
        }
        tags.push((key, value));
        rest = &rest[end + 3..];
    }
    if rest.is_empty() {
        return (name, Vec::new());
    }
    (rest, tags)
}

impl PluginMetrics {
    pub fn new(plugin: &str) -> PluginMetrics {
        PluginMetrics {
            plugin: plugin.to_string(),
            metrics: Mutex::new(Vec::new()),
            ids: Mutex::new(HashMap::new()),
            log_budget: LogBudget::default(),
        }
    }

    /// The id of the metric `name` of `kind`, defining it if new; `None` when the plugin has
    /// defined all it may.
    pub fn define(&self, kind: MetricType, name: &str) -> Option<u32> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(&kind).and_then(|by_name| by_name.get(name)) {
            return Some(*id);
        }
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        if metrics.len() >= MAX_METRICS {
            return None;
        }
        let (base, tags) = split_tags(name);
        let mut labels = vec![metrics::Label::new("plugin", self.plugin.clone())];
        labels.extend(
            tags.into_iter()
                .map(|(k, v)| metrics::Label::new(k.to_string(), v.to_string())),
        );
        metrics.push(Metric {
            name: name.to_string(),
            prom_name: prometheus_name(base),
            labels,
            kind,
            value: 0,
        });
        let id = metrics.len() as u32;
        ids.entry(kind).or_default().insert(name.to_string(), id);
        Some(id)
    }

    pub fn increment(&self, id: u32, delta: i64) -> i32 {
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = id.checked_sub(1).and_then(|i| metrics.get_mut(i as usize)) else {
            return status::NOT_FOUND;
        };
        match m.kind {
            MetricType::Counter if delta < 0 => return status::BAD_ARGUMENT,
            MetricType::Counter => {
                metrics::counter!(m.prom_name.clone(), m.labels.clone()).increment(delta as u64);
            }
            MetricType::Gauge => {
                metrics::gauge!(m.prom_name.clone(), m.labels.clone())
                    .set((m.value.saturating_add(delta)) as f64);
            }
            MetricType::Histogram => return status::BAD_ARGUMENT,
        }
        m.value = m.value.saturating_add(delta);
        status::OK
    }

    pub fn record(&self, id: u32, value: i64) -> i32 {
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = id.checked_sub(1).and_then(|i| metrics.get_mut(i as usize)) else {
            return status::NOT_FOUND;
        };
        match m.kind {
            MetricType::Counter => {
                if value < m.value {
                    return status::BAD_ARGUMENT;
                }
                metrics::counter!(m.prom_name.clone(), m.labels.clone())
                    .increment((value - m.value) as u64);
            }
            MetricType::Gauge => {
                metrics::gauge!(m.prom_name.clone(), m.labels.clone()).set(value as f64);
            }
            MetricType::Histogram => {
                metrics::histogram!(m.prom_name.clone(), m.labels.clone()).record(value as f64);
            }
        }
        m.value = value;
        status::OK
    }

    pub fn get(&self, id: u32) -> Option<i64> {
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        id.checked_sub(1)
            .and_then(|i| metrics.get(i as usize))
            .map(|m| m.value)
    }

    /// Every metric as (name, type, value), for tests and admin output.
    pub fn snapshot(&self) -> Vec<(String, MetricType, i64)> {
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        metrics
            .iter()
            .map(|m| (m.name.clone(), m.kind, m.value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_refuse_to_go_down() {
        let m = PluginMetrics::new("p");
        let id = m.define(MetricType::Counter, "reqs").expect("defined");
        assert_eq!(m.define(MetricType::Counter, "reqs"), Some(id));
        assert_eq!(m.increment(id, 2), status::OK);
        assert_eq!(m.increment(id, -1), status::BAD_ARGUMENT);
        assert_eq!(m.get(id), Some(2));
        assert_eq!(m.increment(99, 1), status::NOT_FOUND);
        assert_eq!(prometheus_name("a.b-c"), "wasmesh_filter_a_b_c");
    }

    #[test]
    fn a_plugin_defines_a_bounded_number_of_metrics() {
        let m = PluginMetrics::new("p");
        for i in 0..MAX_METRICS {
            assert!(m.define(MetricType::Gauge, &format!("g{i}")).is_some());
        }
        assert_eq!(m.define(MetricType::Gauge, "one-more"), None);
        assert_eq!(
            m.define(MetricType::Gauge, "g0"),
            Some(1),
            "known names still resolve"
        );
    }

    #[test]
    fn flattened_tags_become_labels() {
        assert_eq!(
            split_tags("route=.=users;.;code=.=200;.;requests_total"),
            ("requests_total", vec![("route", "users"), ("code", "200")])
        );
        assert_eq!(split_tags("plain"), ("plain", vec![]));
        // Malformed or empty: the whole name stays the name.
        for odd in ["a;.;b", "route=.=x;.;", "bad key=.=x;.;n", "plugin=.=x;.;n"] {
            assert_eq!(split_tags(odd), (odd, vec![]), "{odd}");
        }
    }
}
