//! Metrics defined once, lazily: as statics when their names are known when the filter is
//! written, or built at run time (from the configuration) with the `owned` constructors.
//!
//! ```no_run
//! use wasmesh_sdk::metrics::{Counter, CounterFamily, Histogram};
//!
//! static DENIED: Counter = Counter::new("authz_denied_total");
//! static BY_ROUTE: CounterFamily = CounterFamily::new("authz_requests_total", &["route", "decision"]);
//! static LATENCY: Histogram = Histogram::new("authz_check_ms");
//!
//! DENIED.increment(1);
//! BY_ROUTE.with(&["users", "allow"]).increment(1);
//! LATENCY.record(12);
//! ```
//!
//! When the names or label keys come from the configuration — a prefix, a chosen set of
//! labels — build the metrics with [`Counter::owned`], [`CounterFamily::owned`] and the
//! like, once, in `on_configure`, and keep them (in the root context, shared with the HTTP
//! contexts through an `Rc`):
//!
//! ```no_run
//! use wasmesh_sdk::metrics::{CounterFamily, Histogram};
//!
//! struct Metrics {
//!     requests: CounterFamily,
//!     latency: Histogram,
//! }
//!
//! fn build(prefix: &str, labels: Vec<String>) -> Metrics {
//!     Metrics {
//!         requests: CounterFamily::owned(format!("{prefix}requests_total"), labels),
//!         latency: Histogram::owned(format!("{prefix}latency_ms")),
//!     }
//! }
//!
//! let metrics = build("edge_", vec!["route".into(), "code".into()]);
//! metrics.requests.with(&["users", "200"]).increment(1);
//! metrics.latency.record(12);
//! ```
//!
//! A metric is defined with the host (`proxy_define_metric`) the first time it is used, in the
//! VM that uses it, and the id is kept; a family defines one metric per distinct set of label
//! values. If the host refuses a definition, the metric does nothing rather than fail the
//! request.
//!
//! # Labels
//!
//! proxy-wasm metrics have a name and no labels, so labels are flattened into the name the way
//! Istio's stats filter does it for Envoy's tag extraction: each label becomes a
//! `key=.=value;.;` segment before the name, in the family's label order —
//! `route=.=users;.;decision=.=allow;.;authz_requests_total` (see [`flatten_name`]). Envoy turns
//! them back into tags with a `stats_tags` regex such as `(route=\.=(.+?);\.;)`; wasmesh does it
//! by itself, so `/stats` shows
//! `wasmesh_filter_authz_requests_total{plugin="…",route="users",decision="allow"}`.
//! Label keys should be `[A-Za-z_][A-Za-z0-9_]*` (other characters become `_`); a `;` in a
//! value becomes `_`, so a value cannot end its segment early.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// The metric name for `name` with `labels`, as described in the module docs.
pub fn flatten_name(name: &str, labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in labels {
        let key: String = key
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let ok = c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
                if ok { c } else { '_' }
            })
            .collect();
        out.push_str(&key);
        out.push_str("=.=");
        out.push_str(&value.replace(';', "_"));
        out.push_str(";.;");
    }
    out.push_str(name);
    out
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    hostcalls::define_metric(kind, name).ok()
}

/// A metric id defined on first use.
#[derive(Debug)]
struct Lazy {
    kind: MetricType,
    name: Cow<'static, str>,
    id: OnceLock<Option<u32>>,
}

impl Lazy {
    const fn new(kind: MetricType, name: Cow<'static, str>) -> Lazy {
        Lazy {
            kind,
            name,
            id: OnceLock::new(),
        }
    }

    fn id(&self) -> Option<u32> {
        *self.id.get_or_init(|| define(self.kind, &self.name))
    }
}

/// A family's label keys: written into the filter, or built at run time.
#[derive(Debug)]
enum Keys {
    Static(&'static [&'static str]),
    Owned(Vec<Cow<'static, str>>),
}

impl Keys {
    fn len(&self) -> usize {
        match self {
            Keys::Static(keys) => keys.len(),
            Keys::Owned(keys) => keys.len(),
        }
    }

    fn get(&self, index: usize) -> &str {
        match self {
            Keys::Static(keys) => keys.get(index).copied().unwrap_or_default(),
            Keys::Owned(keys) => keys.get(index).map_or("", |k| k.as_ref()),
        }
    }
}

/// Metric ids per set of label values, each defined on first use.
#[derive(Debug)]
struct Family {
    kind: MetricType,
    name: Cow<'static, str>,
    labels: Keys,
    ids: Mutex<BTreeMap<Vec<String>, Option<u32>>>,
}

impl Family {
    const fn new(kind: MetricType, name: Cow<'static, str>, labels: Keys) -> Family {
        Family {
            kind,
            name,
            labels,
            ids: Mutex::new(BTreeMap::new()),
        }
    }

    fn owned<K: Into<Cow<'static, str>>>(
        kind: MetricType,
        name: Cow<'static, str>,
        labels: impl IntoIterator<Item = K>,
    ) -> Family {
        let keys = Keys::Owned(labels.into_iter().map(Into::into).collect());
        Family::new(kind, name, keys)
    }

    /// Missing values are empty; extra values are ignored.
    fn id(&self, values: &[&str]) -> Option<u32> {
        let values: Vec<String> = (0..self.labels.len())
            .map(|i| values.get(i).copied().unwrap_or_default().to_string())
            .collect();
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(&values) {
            return *id;
        }
        let pairs: Vec<(&str, &str)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (self.labels.get(i), v.as_str()))
            .collect();
        let id = define(self.kind, &flatten_name(&self.name, &pairs));
        ids.insert(values, id);
        id
    }
}

fn increment(id: Option<u32>, delta: i64) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, delta);
    }
}

fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, value);
    }
}

fn value(id: Option<u32>) -> Option<u64> {
    id.and_then(|id| hostcalls::get_metric(id).ok())
}

/// A counter: only goes up.
#[derive(Debug)]
pub struct Counter(Lazy);

impl Counter {
    /// Declares a counter; it is defined with the host on first use.
    pub const fn new(name: &'static str) -> Counter {
        Counter(Lazy::new(MetricType::Counter, Cow::Borrowed(name)))
    }

    /// Declares a counter whose name is known only at run time (a configured prefix, say);
    /// it is defined with the host on first use. Build it once and keep it.
    pub fn owned(name: impl Into<Cow<'static, str>>) -> Counter {
        Counter(Lazy::new(MetricType::Counter, name.into()))
    }

    /// Adds `delta`.
    pub fn increment(&self, delta: u64) {
        CounterHandle(self.0.id()).increment(delta);
    }

    /// The current value, as the host has it.
    pub fn value(&self) -> Option<u64> {
        value(self.0.id())
    }
}

/// A gauge: a value that goes up and down.
#[derive(Debug)]
pub struct Gauge(Lazy);

impl Gauge {
    /// Declares a gauge; it is defined with the host on first use.
    pub const fn new(name: &'static str) -> Gauge {
        Gauge(Lazy::new(MetricType::Gauge, Cow::Borrowed(name)))
    }

    /// Declares a gauge whose name is known only at run time (a configured prefix, say);
    /// it is defined with the host on first use. Build it once and keep it.
    pub fn owned(name: impl Into<Cow<'static, str>>) -> Gauge {
        Gauge(Lazy::new(MetricType::Gauge, name.into()))
    }

    /// Sets the value.
    pub fn set(&self, value: i64) {
        GaugeHandle(self.0.id()).set(value);
    }

    /// Adds `delta` (negative to decrease).
    pub fn add(&self, delta: i64) {
        GaugeHandle(self.0.id()).add(delta);
    }

    /// The current value, as the host has it.
    pub fn value(&self) -> Option<i64> {
        value(self.0.id()).map(|v| v as i64)
    }
}

/// A histogram: the host keeps the distribution of recorded values.
#[derive(Debug)]
pub struct Histogram(Lazy);

impl Histogram {
    /// Declares a histogram; it is defined with the host on first use.
    pub const fn new(name: &'static str) -> Histogram {
        Histogram(Lazy::new(MetricType::Histogram, Cow::Borrowed(name)))
    }

    /// Declares a histogram whose name is known only at run time (a configured prefix, say);
    /// it is defined with the host on first use. Build it once and keep it.
    pub fn owned(name: impl Into<Cow<'static, str>>) -> Histogram {
        Histogram(Lazy::new(MetricType::Histogram, name.into()))
    }

    /// Records one value.
    pub fn record(&self, value: u64) {
        HistogramHandle(self.0.id()).record(value);
    }
}

/// Counters sharing a name, one per set of label values.
#[derive(Debug)]
pub struct CounterFamily(Family);

impl CounterFamily {
    /// Declares a family with label keys `labels`.
    pub const fn new(name: &'static str, labels: &'static [&'static str]) -> CounterFamily {
        CounterFamily(Family::new(
            MetricType::Counter,
            Cow::Borrowed(name),
            Keys::Static(labels),
        ))
    }

    /// Declares a family whose name and label keys are known only at run time (from the
    /// configuration). Build it once and keep it: it remembers the metric of each set of
    /// label values.
    pub fn owned<K: Into<Cow<'static, str>>>(
        name: impl Into<Cow<'static, str>>,
        labels: impl IntoIterator<Item = K>,
    ) -> CounterFamily {
        CounterFamily(Family::owned(MetricType::Counter, name.into(), labels))
    }

    /// The counter for these label values, in the order of the family's keys.
    pub fn with(&self, values: &[&str]) -> CounterHandle {
        CounterHandle(self.0.id(values))
    }
}

/// Gauges sharing a name, one per set of label values.
#[derive(Debug)]
pub struct GaugeFamily(Family);

impl GaugeFamily {
    /// Declares a family with label keys `labels`.
    pub const fn new(name: &'static str, labels: &'static [&'static str]) -> GaugeFamily {
        GaugeFamily(Family::new(
            MetricType::Gauge,
            Cow::Borrowed(name),
            Keys::Static(labels),
        ))
    }

    /// Declares a family whose name and label keys are known only at run time (from the
    /// configuration). Build it once and keep it: it remembers the metric of each set of
    /// label values.
    pub fn owned<K: Into<Cow<'static, str>>>(
        name: impl Into<Cow<'static, str>>,
        labels: impl IntoIterator<Item = K>,
    ) -> GaugeFamily {
        GaugeFamily(Family::owned(MetricType::Gauge, name.into(), labels))
    }

    /// The gauge for these label values, in the order of the family's keys.
    pub fn with(&self, values: &[&str]) -> GaugeHandle {
        GaugeHandle(self.0.id(values))
    }
}

/// Histograms sharing a name, one per set of label values.
#[derive(Debug)]
pub struct HistogramFamily(Family);

impl HistogramFamily {
    /// Declares a family with label keys `labels`.
    pub const fn new(name: &'static str, labels: &'static [&'static str]) -> HistogramFamily {
        HistogramFamily(Family::new(
            MetricType::Histogram,
            Cow::Borrowed(name),
            Keys::Static(labels),
        ))
    }

    /// Declares a family whose name and label keys are known only at run time (from the
    /// configuration). Build it once and keep it: it remembers the metric of each set of
    /// label values.
    pub fn owned<K: Into<Cow<'static, str>>>(
        name: impl Into<Cow<'static, str>>,
        labels: impl IntoIterator<Item = K>,
    ) -> HistogramFamily {
        HistogramFamily(Family::owned(MetricType::Histogram, name.into(), labels))
    }

    /// The histogram for these label values, in the order of the family's keys.
    pub fn with(&self, values: &[&str]) -> HistogramHandle {
        HistogramHandle(self.0.id(values))
    }
}

/// One counter of a [`CounterFamily`].
#[derive(Debug, Clone, Copy)]
pub struct CounterHandle(Option<u32>);

impl CounterHandle {
    /// Adds `delta`.
    pub fn increment(self, delta: u64) {
        increment(self.0, i64::try_from(delta).unwrap_or(i64::MAX));
    }

    /// The current value, as the host has it.
    pub fn value(self) -> Option<u64> {
        value(self.0)
    }
}

/// One gauge of a [`GaugeFamily`].
#[derive(Debug, Clone, Copy)]
pub struct GaugeHandle(Option<u32>);

impl GaugeHandle {
    /// Sets the value.
    pub fn set(self, value: i64) {
        // The ABI passes the value as a 64-bit integer; the host reads it back as signed.
        record(self.0, value as u64);
    }

    /// Adds `delta` (negative to decrease).
    pub fn add(self, delta: i64) {
        increment(self.0, delta);
    }

    /// The current value, as the host has it.
    pub fn value(self) -> Option<i64> {
        value(self.0).map(|v| v as i64)
    }
}

/// One histogram of a [`HistogramFamily`].
#[derive(Debug, Clone, Copy)]
pub struct HistogramHandle(Option<u32>);

impl HistogramHandle {
    /// Records one value.
    pub fn record(self, value: u64) {
        record(self.0, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_flatten_before_the_name() {
        assert_eq!(flatten_name("requests_total", &[]), "requests_total");
        assert_eq!(
            flatten_name("requests_total", &[("route", "users"), ("code", "200")]),
            "route=.=users;.;code=.=200;.;requests_total"
        );
        assert_eq!(
            flatten_name("n", &[("bad key", "a;.;b"), ("9x", "")]),
            "bad_key=.=a_._b;.;_x=.=;.;n"
        );
    }
}
