//! `tracing`: distributed tracing at the proxy. Each request gets a server span — continuing
//! the caller's trace from its W3C `traceparent` (or B3 `b3` / `x-b3-*` headers), or starting
//! a new one with random ids — and the upstream gets the new span as its parent, in every
//! configured format (`tracestate` kept). Sampled spans are exported to an OpenTelemetry
//! collector as OTLP/HTTP JSON (`POST /v1/traces`) in batches. Written with `wasmesh-sdk`.
//!
//! Configuration (the plugin `config`, JSON):
//!
//! ```json
//! {
//!   "collector": {"cluster": "otel", "authority": "otel-collector:4318"},
//!   "service_name": "edge-proxy",
//!   "propagators": ["tracecontext", "b3"],
//!   "sampling_ratio": 0.25,
//!   "batch": {"max_spans": 512, "max_queue": 2048, "flush_interval_ms": 1000}
//! }
//! ```
//!
//! How it runs: a stream context decides and propagates in `on_http_request_headers`, builds
//! the span in `on_log` from the host's attributes (`request.time`, `request.duration`,
//! `response.code`, …) and puts it on a shared queue; the root context of a VM replica takes
//! spans off the queue (`on_queue_ready`, and on each flush tick) into a bounded buffer and
//! sends them with `dispatch_http_call`, a full batch at once and the rest on the tick. Drops
//! are counted in `tracing_spans_dropped_total{reason}`. The full reference is the crate's
//! `README.md`.
//!
//! Modules: [`config`] (schema and checks), [`context`] (the header formats),
//! [`propagation`] (reading and writing them on a request), [`span`] (sampling and the span),
//! [`otlp`] (the JSON), [`export`] (batching and the collector), [`queue`] (enqueueing
//! without trapping).

pub mod config;
pub mod context;
pub mod export;
pub mod otlp;
pub mod propagation;
pub mod queue;
pub mod span;

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{config as sdk_config, headers, properties};

use config::Config;
use export::{Dropped, Exporter};
use span::{Finished, Started};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { plan: None, exporter: None })
    });
}}

/// The configuration, and the shared queue the plugin's spans go through.
struct Plan {
    config: Config,
    queue_id: u32,
}

struct Root {
    plan: Option<Rc<Plan>>,
    exporter: Option<Exporter>,
}

/// The host clock in nanoseconds since the epoch.
fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Root {
    fn export(&mut self, partial: bool) {
        if let (Some(plan), Some(exporter)) = (&self.plan, &mut self.exporter) {
            exporter.drain_queue(&plan.config);
            exporter.flush(&plan.config, partial);
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, _: usize) {
        if let (Some(plan), Some(exporter)) = (&self.plan, &mut self.exporter) {
            exporter.answered(token, headers, body);
            // A backlog of full batches may go now that a request slot is free.
            exporter.flush(&plan.config, false);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        sdk_config::configure_with(|config: Config| {
            config.check()?;
            // One queue per plugin (by name) in its `vm_id`; every replica registers it, and
            // the host tells the last one to do so when items arrive.
            let plugin = properties::plugin_name().unwrap_or_default();
            let queue_id =
                hostcalls::register_shared_queue(&format!("wasmesh.tracing/{plugin}/spans"))
                    .map_err(|status| {
                        sdk_config::ConfigError::at(
                            ".",
                            format!("cannot register the span queue: {status:?}"),
                        )
                    })?;
            let _ =
                hostcalls::set_tick_period(Duration::from_millis(config.batch.flush_interval_ms));
            self.exporter = Some(Exporter::new(&config, queue_id));
            self.plan = Some(Rc::new(Plan { config, queue_id }));
            Ok(())
        })
    }

    fn on_tick(&mut self) {
        self.export(true);
    }

    fn on_queue_ready(&mut self, _queue_id: u32) {
        self.export(false);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Traced {
            plan: self.plan.clone(),
            started: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's span.
struct Traced {
    plan: Option<Rc<Plan>>,
    started: Option<Started>,
}

impl Context for Traced {}

impl HttpContext for Traced {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(plan) = &self.plan else {
            return Action::Continue;
        };
        let config = &plan.config;
        let request = headers::request();
        let incoming = propagation::extract(&config.propagators, request);
        let mut random = [0u8; 24];
        if getrandom::fill(&mut random).is_err() {
            // No ids without randomness: the request goes on untraced, headers untouched.
            return Action::Continue;
        }
        let (trace_id, span_id) = propagation::new_ids(&incoming, random);
        let sampled = incoming
            .sampled
            .unwrap_or_else(|| span::sample_by_ratio(trace_id, config.sampling_ratio));
        let started = Started {
            trace_id,
            span_id,
            parent: incoming.parent.as_ref().map(|p| p.span_id),
            trace_state: incoming.parent.map(|p| p.trace_state).unwrap_or_default(),
            sampled,
            seen_ns: now_ns(),
            method: request.get(":method").unwrap_or_default(),
            path: request
                .path()
                .map(|p| p.path)
                .unwrap_or_else(|| "/".to_string()),
        };
        propagation::inject(&config.propagators, request, &started);
        self.started = Some(started);
        Action::Continue
    }

    fn on_log(&mut self) {
        let (Some(plan), Some(started)) = (&self.plan, &self.started) else {
            return;
        };
        if !started.sampled {
            return;
        }
        let unsigned = |path: &str| properties::int(path).and_then(|n| u64::try_from(n).ok());
        let finished = Finished {
            method: properties::request_method(),
            path: properties::request_url_path(),
            route: properties::route_name(),
            host: properties::request_host(),
            peer: properties::source_address(),
            code: properties::int("response.code"),
            time_ns: unsigned("request.time"),
            duration_ns: unsigned("request.duration"),
            now_ns: now_ns(),
        };
        let span = span::build(started, &finished, plan.config.span_name);
        let queued = serde_json::to_vec(&span)
            .map(|bytes| queue::enqueue(plan.queue_id, &bytes))
            .unwrap_or(false);
        if !queued {
            export::count_dropped(Dropped::QueueFull, 1);
        }
    }
}
