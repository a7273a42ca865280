//! `wasmesh-sdk`: the filter authoring kit. Filters are written against the published
//! [`proxy_wasm`] crate (re-exported here, so one dependency is enough) and run on any
//! proxy-wasm host — wasmesh, Envoy, Istio. This crate adds what filter authors otherwise keep
//! rewriting, without hiding the ABI:
//!
//! - [`config`]: typed plugin configuration (JSON; YAML with the `yaml` feature) with errors
//!   that name the field, and a one-line `on_configure`;
//! - [`headers`]: case-insensitive header access, several values, typed values, `:path` split
//!   into path and query, `host:port` split;
//! - [`router`]: local responses by method and exact or prefix path;
//! - [`duration`]: durations in a configuration written as the proxy writes its own (`250ms`,
//!   `1m30s`), for serde;
//! - [`metrics`]: counters, gauges and histograms defined once, lazily, with labels flattened
//!   into the name the way Envoy's tag extraction (and wasmesh's `/stats`) expects — as
//!   statics, or built from the configuration at run time;
//! - [`properties`]: the attributes the host provides (`request.path`, `request.time`,
//!   `response.code`, `connection.mtls`, …), decoded from Envoy's encodings, and filter state
//!   for later filters ([`properties::set`]), never trapping on the host's refusal;
//! - [`route_cache`]: asking the host to route the request again after editing it, the way
//!   Envoy offers it (no wasmesh-only import).
//!
//! Everything here imports only what the proxy-wasm ABI and WASI define, and only what Envoy
//! links, so a filter built on it loads on Envoy as it is (`wasmesh-sdk-test`'s
//! `portability` module checks a built `.wasm` for that).
//!
//! Filters build for `wasm32-wasip1`; the crate also builds natively so the pure parts can be
//! unit-tested with `cargo test`. To run a built filter in a test, use the harness in
//! `wasmesh-sdk-test`, which loads the `.wasm` on wasmesh's host in-process.
//!
//! A complete filter: answers `GET /healthz` itself, counts requests per route, and adds a
//! configured header.
//!
//! ```no_run
//! use std::rc::Rc;
//!
//! use serde::Deserialize;
//! use wasmesh_sdk::metrics::CounterFamily;
//! use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
//! use wasmesh_sdk::proxy_wasm::types::{Action, ContextType};
//! use wasmesh_sdk::router::{Response, Router};
//! use wasmesh_sdk::{config, headers, properties};
//!
//! #[derive(Default, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     greeting: String,
//! }
//!
//! static REQUESTS: CounterFamily = CounterFamily::new("example_requests_total", &["route"]);
//!
//! wasmesh_sdk::proxy_wasm::main! {{
//!     wasmesh_sdk::proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
//!         Box::new(Root { config: Rc::default(), router: Rc::new(Router::new()) })
//!     });
//! }}
//!
//! struct Root {
//!     config: Rc<Config>,
//!     router: Rc<Router>,
//! }
//!
//! impl Context for Root {}
//!
//! impl RootContext for Root {
//!     fn on_configure(&mut self, _: usize) -> bool {
//!         self.router = Rc::new(Router::new().exact("GET", "/healthz", Response::text(200, "ok")));
//!         config::configure(|c: Config| self.config = Rc::new(c))
//!     }
//!
//!     fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
//!         Some(Box::new(Filter { config: self.config.clone(), router: self.router.clone() }))
//!     }
//!
//!     fn get_type(&self) -> Option<ContextType> {
//!         Some(ContextType::HttpContext)
//!     }
//! }
//!
//! struct Filter {
//!     config: Rc<Config>,
//!     router: Rc<Router>,
//! }
//!
//! impl Context for Filter {}
//!
//! impl HttpContext for Filter {
//!     fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
//!         if let Some(action) = self.router.handle() {
//!             return action;
//!         }
//!         let route = properties::route_name().unwrap_or_default();
//!         REQUESTS.with(&[&route]).increment(1);
//!         headers::request().set("x-greeting", &self.config.greeting);
//!         Action::Continue
//!     }
//! }
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod duration;
pub mod headers;
pub mod metrics;
pub mod properties;
pub mod route_cache;
pub mod router;

pub use proxy_wasm;

/// Logs `message` through `proxy_log` at `level`. The host may drop lines below its level.
pub fn log(level: proxy_wasm::types::LogLevel, message: &str) {
    // `log` answers OK or panics inside the SDK; there is nothing to handle here.
    let _ = proxy_wasm::hostcalls::log(level, message);
}
