//! The metrics of each label set, and what one exchange adds to them.
//!
//! Names and label keys come from the configuration (the prefix, the chosen labels), so the
//! metrics are the SDK's families built at run time ([`CounterFamily::owned`]): they name
//! each metric (labels flattened into the name, which the host turns back into Prometheus
//! labels) and define it with the host on first use. The recorder keeps each label set's
//! handles in a [`Series`], so an exchange costs one lookup, and so every metric of a new
//! series — every histogram bucket — is there from its first exchange.

use std::collections::HashMap;

use wasmesh_sdk::metrics::{CounterFamily, CounterHandle, HistogramFamily, HistogramHandle};

use crate::config::{Config, Label, Mode};
use crate::labels::Exchange;

const NANOS_PER_MS: u64 = 1_000_000;

/// The families, prefix applied, with the configuration's label keys.
#[derive(Debug)]
struct Families {
    requests: CounterFamily,
    /// `host` mode.
    duration: HistogramFamily,
    /// `buckets` mode: the label keys and `le`.
    bucket: CounterFamily,
    sum: CounterFamily,
    count: CounterFamily,
    request_bytes: CounterFamily,
    response_bytes: CounterFamily,
    overflow: CounterFamily,
}

impl Families {
    fn new(prefix: &str, labels: &[Label]) -> Families {
        let name = |base: &str| format!("{prefix}{base}");
        let keys = || labels.iter().map(|l| l.key());
        let counters = |base: &str| CounterFamily::owned(name(base), keys());
        Families {
            requests: counters("requests_total"),
            duration: HistogramFamily::owned(name("request_duration_ms"), keys()),
            bucket: CounterFamily::owned(
                name("request_duration_ms_bucket"),
                keys().chain(std::iter::once("le")),
            ),
            sum: counters("request_duration_ms_sum"),
            count: counters("request_duration_ms_count"),
            request_bytes: counters("request_bytes_total"),
            response_bytes: counters("response_bytes_total"),
            overflow: CounterFamily::owned(name("label_overflow_total"), ["label"]),
        }
    }
}

/// One label set's metrics (those its mode and `sizes` call for).
#[derive(Debug)]
struct Series {
    requests: CounterHandle,
    /// One per bound, then `+Inf`.
    buckets: Vec<CounterHandle>,
    sum: Option<CounterHandle>,
    count: Option<CounterHandle>,
    duration: Option<HistogramHandle>,
    request_bytes: Option<CounterHandle>,
    response_bytes: Option<CounterHandle>,
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
    families: Families,
    mode: Mode,
    sizes: bool,
    bounds: Vec<Bound>,
    series: HashMap<Vec<String>, Series>,
}

/// A counter as a new series starts it: adding nothing makes the host export it at 0 at
/// once (a histogram's buckets must all be there, hit or not).
fn started(counter: CounterHandle) -> CounterHandle {
    counter.increment(0);
    counter
}

fn add(counter: Option<CounterHandle>, delta: u64) {
    if let Some(counter) = counter
        && delta > 0
    {
        counter.increment(delta);
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
            families: Families::new(&config.prefix, &config.labels),
            mode: config.histogram.mode,
            sizes: config.sizes,
            bounds,
            series: HashMap::new(),
        }
    }

    /// Counts a value of `label` that went to `other`.
    pub fn overflowed(&mut self, label: Label) {
        self.families.overflow.with(&[label.key()]).increment(1);
    }

    /// Records one exchange under the label `values` (in the configuration's label order).
    pub fn record(&mut self, values: Vec<String>, exchange: &Exchange) {
        let series = match self.series.get_mut(&values) {
            Some(series) => series,
            None => {
                let series = self.start_series(&values);
                self.series.entry(values).or_insert(series)
            }
        };
        add(Some(series.requests), 1);
        add(series.request_bytes, exchange.request_bytes.unwrap_or(0));
        add(series.response_bytes, exchange.response_bytes.unwrap_or(0));
        let Some(ns) = exchange.duration_ns else {
            return;
        };
        match self.mode {
            Mode::None => {}
            Mode::Host => {
                if let Some(histogram) = series.duration {
                    histogram.record(ns / NANOS_PER_MS);
                }
            }
            Mode::Buckets => {
                for (bound, bucket) in self.bounds.iter().zip(&series.buckets) {
                    if ns <= bound.nanos {
                        add(Some(*bucket), 1);
                    }
                }
                add(series.buckets.last().copied(), 1);
                add(series.count, 1);
                let total = series.pending_ns.saturating_add(ns);
                add(series.sum, total / NANOS_PER_MS);
                series.pending_ns = total % NANOS_PER_MS;
            }
        }
    }

    fn start_series(&self, values: &[String]) -> Series {
        let families = &self.families;
        let labels: Vec<&str> = values.iter().map(String::as_str).collect();
        let counter = |family: &CounterFamily| started(family.with(&labels));
        let sized = |family: &CounterFamily| self.sizes.then(|| counter(family));
        let mut series = Series {
            requests: counter(&families.requests),
            buckets: Vec::new(),
            sum: None,
            count: None,
            duration: None,
            request_bytes: sized(&families.request_bytes),
            response_bytes: sized(&families.response_bytes),
            pending_ns: 0,
        };
        match self.mode {
            Mode::None => {}
            Mode::Host => series.duration = Some(families.duration.with(&labels)),
            Mode::Buckets => {
                let les = self
                    .bounds
                    .iter()
                    .map(|b| b.le.as_str())
                    .chain(std::iter::once("+Inf"));
                series.buckets = les
                    .map(|le| {
                        let mut with_le = labels.clone();
                        with_le.push(le);
                        started(families.bucket.with(&with_le))
                    })
                    .collect();
                series.sum = Some(counter(&families.sum));
                series.count = Some(counter(&families.count));
            }
        }
        series
    }
}
