//! `metrics`: request metrics per route and status — a request counter, a latency histogram,
//! request and response body sizes — recorded in `on_log` from the attributes the host gives
//! for the finished exchange (`route_name`, `request.method`, `response.code`,
//! `cluster_name`, `request.duration`, `request.size`, `response.size`) and defined as filter
//! metrics, so they appear on the proxy's `/stats` with their labels:
//! `wasmesh_filter_requests_total{plugin="metrics",route="users",code="200"}`. Written with
//! `wasmesh-sdk`.
//!
//! Configuration (the plugin `config`, JSON; every field optional):
//!
//! ```json
//! {
//!   "prefix": "edge_",
//!   "labels": ["route", "method", "code_class"],
//!   "histogram": {"mode": "buckets", "buckets_ms": [5, 10, 25, 50, 100, 250, 1000]},
//!   "sizes": true,
//!   "max_values": {"route": 100, "code": 50}
//! }
//! ```
//!
//! Each label takes at most `max_values` distinct values across the plugin's VM replicas
//! (shared data, compare-and-swap); later values read `other` and are counted in
//! `label_overflow_total{label}`. The full reference — every field, every metric — is the
//! crate's `README.md`.
//!
//! Modules: [`config`] (schema and checks), [`labels`] (label values and their bound),
//! [`record`] (the metrics of each label set).

pub mod config;
pub mod labels;
pub mod record;

use std::cell::RefCell;
use std::rc::Rc;

use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{ContextType, LogLevel};
use wasmesh_sdk::{config as sdk_config, properties};

use config::Config;
use labels::{Bounds, Exchange};
use record::Recorder;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { state: None })
    });
}}

/// One replica's configuration and what it has learnt: metric ids, admitted label values.
struct State {
    config: Config,
    bounds: Bounds,
    recorder: Recorder,
}

impl State {
    fn record(&mut self, exchange: &Exchange) {
        let mut values = Vec::with_capacity(self.config.labels.len());
        for &label in &self.config.labels {
            let raw = labels::value(label, exchange);
            let limit = self.config.max_values.of(label);
            let (value, overflowed) = self.bounds.admit(label, raw, limit);
            if overflowed {
                self.recorder.overflowed(label);
            }
            values.push(value);
        }
        self.recorder.record(values, exchange);
    }
}

struct Root {
    state: Option<Rc<RefCell<State>>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        sdk_config::configure_with(|config: Config| {
            config.check()?;
            let plugin = properties::plugin_name().unwrap_or_default();
            self.state = Some(Rc::new(RefCell::new(State {
                bounds: Bounds::new(&plugin),
                recorder: Recorder::new(&config),
                config,
            })));
            Ok(())
        })
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Exchanges {
            state: self.state.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request: nothing happens until it is over.
struct Exchanges {
    state: Option<Rc<RefCell<State>>>,
}

impl Context for Exchanges {}

fn unsigned(path: &str) -> Option<u64> {
    properties::int(path).and_then(|n| u64::try_from(n).ok())
}

impl HttpContext for Exchanges {
    fn on_log(&mut self) {
        let Some(state) = &self.state else {
            return;
        };
        let exchange = Exchange {
            route: properties::route_name(),
            method: properties::request_method(),
            code: properties::int("response.code"),
            cluster: properties::cluster_name(),
            duration_ns: unsigned("request.duration"),
            request_bytes: unsigned("request.size"),
            response_bytes: unsigned("response.size"),
        };
        // Callbacks of one VM never nest, so the state is never borrowed twice.
        if let Ok(mut state) = state.try_borrow_mut() {
            state.record(&exchange);
        }
    }
}
