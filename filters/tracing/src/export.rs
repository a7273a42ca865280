//! The root context's side: spans taken off the shared queue wait in a bounded buffer and go
//! to the collector in batches — a full batch at once, the rest on the flush tick — with at
//! most `max_in_flight` export requests outstanding. Nothing is retried: a batch the collector
//! does not take is dropped and counted, so a collector that is down costs at most
//! `max_queue` spans of memory per VM replica.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use wasmesh_sdk::headers;
use wasmesh_sdk::metrics::{Counter, CounterFamily};
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::types::BufferType;

use crate::config::Config;
use crate::otlp::{self, KeyValue, Span};

static EXPORTED: Counter = Counter::new("tracing_spans_exported_total");
static DROPPED: CounterFamily = CounterFamily::new("tracing_spans_dropped_total", &["reason"]);
static REQUESTS: CounterFamily = CounterFamily::new("tracing_export_requests_total", &["result"]);

/// Why spans were dropped (the `reason` label of `tracing_spans_dropped_total`).
#[derive(Debug, Clone, Copy)]
pub enum Dropped {
    /// The buffer (or the host's queue) was full.
    QueueFull,
    /// The collector failed, refused, or could not be reached.
    ExportFailed,
    /// The collector took the batch but rejected these spans (`partialSuccess`).
    Rejected,
    /// Something on the queue that is not a span.
    Invalid,
}

impl Dropped {
    fn label(self) -> &'static str {
        match self {
            Dropped::QueueFull => "queue_full",
            Dropped::ExportFailed => "export_failed",
            Dropped::Rejected => "rejected",
            Dropped::Invalid => "invalid",
        }
    }
}

pub fn count_dropped(reason: Dropped, n: usize) {
    DROPPED.with(&[reason.label()]).increment(n as u64);
}

/// One replica's export state.
pub struct Exporter {
    queue_id: u32,
    pending: VecDeque<Span>,
    /// Spans in each export request awaiting its answer, by callout token.
    in_flight: HashMap<u32, usize>,
    resource: Vec<KeyValue>,
    authority: String,
    headers: Vec<(String, String)>,
}

impl Exporter {
    pub fn new(config: &Config, queue_id: u32) -> Exporter {
        let mut resource = vec![KeyValue::string(
            "service.name",
            config.service_name.clone(),
        )];
        resource.extend(
            config
                .resource_attributes
                .iter()
                .filter(|(k, _)| k.as_str() != "service.name")
                .map(|(k, v)| KeyValue::string(k, v.clone())),
        );
        Exporter {
            queue_id,
            pending: VecDeque::new(),
            in_flight: HashMap::new(),
            resource,
            authority: config
                .collector
                .authority
                .clone()
                .unwrap_or_else(|| config.collector.cluster.clone()),
            headers: config
                .collector
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Moves everything on the shared queue into the buffer, dropping what does not fit.
    pub fn drain_queue(&mut self, config: &Config) {
        let mut full = 0;
        let mut invalid = 0;
        while let Ok(Some(item)) = hostcalls::dequeue_shared_queue(self.queue_id) {
            match serde_json::from_slice::<Span>(&item) {
                Ok(_) if self.pending.len() >= config.batch.max_queue => full += 1,
                Ok(span) => self.pending.push_back(span),
                Err(_) => invalid += 1,
            }
        }
        if full > 0 {
            count_dropped(Dropped::QueueFull, full);
        }
        if invalid > 0 {
            count_dropped(Dropped::Invalid, invalid);
        }
    }

    /// Sends full batches while requests may be added; with `partial`, also what is left.
    pub fn flush(&mut self, config: &Config, partial: bool) {
        let max = config.batch.max_spans;
        while self.in_flight.len() < config.batch.max_in_flight
            && (self.pending.len() >= max || (partial && !self.pending.is_empty()))
        {
            let n = max.min(self.pending.len());
            let batch: Vec<Span> = self.pending.drain(..n).collect();
            self.send(config, &batch);
        }
    }

    fn send(&mut self, config: &Config, batch: &[Span]) {
        let body = otlp::export_request(&self.resource, batch);
        let mut request: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", &config.collector.path),
            (":authority", &self.authority),
            ("content-type", "application/json"),
        ];
        request.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let timeout = Duration::from_millis(u64::from(config.collector.timeout_ms));
        match hostcalls::dispatch_http_call(
            &config.collector.cluster,
            request,
            Some(&body),
            Vec::new(),
            timeout,
        ) {
            Ok(token) => {
                self.in_flight.insert(token, batch.len());
            }
            Err(_) => self.failed(batch.len()),
        }
    }

    fn failed(&self, spans: usize) {
        REQUESTS.with(&["failed"]).increment(1);
        count_dropped(Dropped::ExportFailed, spans);
    }

    /// The collector's answer to export request `token` (`headers == 0`: no answer).
    pub fn answered(&mut self, token: u32, headers: usize, body_size: usize) {
        let Some(spans) = self.in_flight.remove(&token) else {
            return;
        };
        let status = (headers > 0)
            .then(|| headers::call_response().get_as::<u16>(":status"))
            .flatten();
        match status {
            Some(200..=299) => {
                REQUESTS.with(&["ok"]).increment(1);
                let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let rejected = usize::try_from(otlp::rejected_spans(&body))
                    .unwrap_or(spans)
                    .min(spans);
                if rejected > 0 {
                    count_dropped(Dropped::Rejected, rejected);
                }
                EXPORTED.increment((spans - rejected) as u64);
            }
            _ => self.failed(spans),
        }
    }
}
