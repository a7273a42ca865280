//! The metrics of each label set, defined with the host on first use and kept by label
//! values, and what one exchange adds to them.
//!
//! Names are built with the SDK's [`flatten_name`] (labels as `key=.=value;.;` segments, which
//! the host turns into Prometheus labels). The SDK's metric families want `'static` names and
//! label keys, and here both come from the configuration, so the ids are kept here instead.

use std::collections::HashMap;

use wasmesh_sdk::metrics::flatten_name;
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::types::MetricType;

use crate::config::{Config, Label, Mode};
use crate::labels::Exchange;

const NANOS_PER_MS: u64 = 1_000_000;

/// The metric names, prefix applied.
#[derive(Debug)]
struct Names {
    requests: String,
    duration: String,
    bucket: String,
    sum: String,
    count: String,
    request_bytes: String,
    response_bytes: String,
    overflow: String,
}

impl Names {
    fn new(prefix: &str) -> Names {
        let name = |base: &str| format!("{prefix}{base}");
        Names {
            requests: name("requests_total"),
            duration: name("request_duration_ms"),
            bucket: name("request_duration_ms_bucket"),
            sum: name("request_duration_ms_sum"),
            count: name("request_duration_ms_count"),
            request_bytes: name("request_bytes_total"),
            response_bytes: name("response_bytes_total"),
            overflow: name("label_overflow_total"),
        }
    }
}

/// One label set's metric ids (`None`: the host refused the definition; recording skips it).
#[derive(Debug, Default)]
struct Series {
    requests: Option<u32>,
    /// One per bound, then `+Inf`.
    buckets: Vec<Option<u32>>,
    sum: Option<u32>,
    count: Option<u32>,
    duration: Option<u32>,
    request_bytes: Option<u32>,
    response_bytes: Option<u32>,
    /// Nanoseconds recorded but not yet whole milliseconds in `_sum`, so the sum stays exact
    /// however short the requests are.
    pending_ns: u64,
}

/// The histogram bounds: as nanoseconds to compare, and as text for the `le` label.
#[derive(Debug)]
struct Bound {
    nanos: u64,
    le: String,
}

/// Every series this replica has used, by label values.
#[derive(Debug)]
pub struct Recorder {
    names: Names,
    labels: Vec<Label>,
    mode: Mode,
    sizes: bool,
    bounds: Vec<Bound>,
    series: HashMap<Vec<String>, Series>,
    overflow: HashMap<Label, Option<u32>>,
}

fn define(kind: MetricType, name: &str, labels: &[(&str, &str)]) -> Option<u32> {
    let id = hostcalls::define_metric(kind, &flatten_name(name, labels)).ok()?;
    if kind == MetricType::Counter {
        // Adding nothing makes the host export the counter at 0 at once: a histogram's
        // buckets must all be there, hit or not.
        let _ = hostcalls::increment_metric(id, 0);
    }
    Some(id)
}

fn add(id: Option<u32>, delta: u64) {
    if let Some(id) = id
        && delta > 0
    {
        let _ = hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
    }
}

impl Recorder {
    pub fn new(config: &Config) -> Recorder {
        let bounds = config
            .histogram
            .buckets_ms
            .iter()
            .map(|ms| Bound {
                // Checked finite and positive; `as` saturates on the (absurd) overflow.
                nanos: (ms * NANOS_PER_MS as f64).round() as u64,
                le: ms.to_string(),
            })
            .collect();
        Recorder {
            names: Names::new(&config.prefix),
            labels: config.labels.clone(),
            mode: config.histogram.mode,
            sizes: config.sizes,
            bounds,
            series: HashMap::new(),
            overflow: HashMap::new(),
        }
    }

    /// Counts a value of `label` that went to `other`.
    pub fn overflowed(&mut self, label: Label) {
        let name = &self.names.overflow;
        let id = *self
            .overflow
            .entry(label)
            .or_insert_with(|| define(MetricType::Counter, name, &[("label", label.key())]));
        add(id, 1);
    }

    /// Records one exchange under the label `values` (in the configuration's label order).
    pub fn record(&mut self, values: Vec<String>, exchange: &Exchange) {
        let series = match self.series.get_mut(&values) {
            Some(series) => series,
            None => {
                let series = self.define_series(&values);
                self.series.entry(values).or_insert(series)
            }
        };
        add(series.requests, 1);
        if self.sizes {
            add(series.request_bytes, exchange.request_bytes.unwrap_or(0));
            add(series.response_bytes, exchange.response_bytes.unwrap_or(0));
        }
        let Some(ns) = exchange.duration_ns else {
            return;
        };
        match self.mode {
            Mode::None => {}
            Mode::Host => {
                if let Some(id) = series.duration {
                    let _ = hostcalls::record_metric(id, ns / NANOS_PER_MS);
                }
            }
            Mode::Buckets => {
                for (bound, id) in self.bounds.iter().zip(&series.buckets) {
                    if ns <= bound.nanos {
                        add(*id, 1);
                    }
                }
                add(series.buckets.last().copied().flatten(), 1);
                add(series.count, 1);
                let total = series.pending_ns.saturating_add(ns);
                add(series.sum, total / NANOS_PER_MS);
                series.pending_ns = total % NANOS_PER_MS;
            }
        }
    }

    fn define_series(&self, values: &[String]) -> Series {
        let pairs: Vec<(&str, &str)> = self
            .labels
            .iter()
            .zip(values)
            .map(|(l, v)| (l.key(), v.as_str()))
            .collect();
        let counter = |name: &str| define(MetricType::Counter, name, &pairs);
        let mut series = Series {
            requests: counter(&self.names.requests),
            ..Series::default()
        };
        if self.sizes {
            series.request_bytes = counter(&self.names.request_bytes);
            series.response_bytes = counter(&self.names.response_bytes);
        }
        match self.mode {
            Mode::None => {}
            Mode::Host => {
                series.duration = define(MetricType::Histogram, &self.names.duration, &pairs);
            }
            Mode::Buckets => {
                let les = self
                    .bounds
                    .iter()
                    .map(|b| b.le.as_str())
                    .chain(std::iter::once("+Inf"));
                series.buckets = les
                    .map(|le| {
                        let mut with_le = pairs.clone();
                        with_le.push(("le", le));
                        define(MetricType::Counter, &self.names.bucket, &with_le)
                    })
                    .collect();
                series.sum = counter(&self.names.sum);
                series.count = counter(&self.names.count);
            }
        }
        series
    }
}
