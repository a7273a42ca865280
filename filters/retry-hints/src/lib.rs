//! `retry-hints`: lets trusted callers shape a request's retries and timeout with Envoy's
//! request headers — `x-envoy-retry-on`, `x-envoy-max-retries`,
//! `x-envoy-upstream-rq-per-try-timeout-ms`, `x-envoy-retriable-status-codes`,
//! `x-envoy-upstream-rq-timeout-ms` — by mapping them onto the filter state wasmesh's router
//! reads (`wasmesh.retry_on`, `wasmesh.num_retries`, `wasmesh.per_try_timeout_ms`,
//! `wasmesh.retriable_status_codes`, `wasmesh.timeout_ms`; see the proxy's `RouterHints`).
//! Written with `wasmesh-sdk`.
//!
//! Configuration (the plugin `config`, JSON):
//!
//! ```json
//! {
//!   "trusted_cidrs": ["10.0.0.0/8", "127.0.0.1"],
//!   "honor": ["retry_on", "max_retries", "timeout"],
//!   "max_retries_cap": 3,
//!   "max_timeout_ms": 30000
//! }
//! ```
//!
//! Only requests whose downstream peer (`source.address`) is in `trusted_cidrs` are honoured —
//! a client must not be able to make the proxy retry at will — and values are checked and
//! capped. The headers are removed before the request goes upstream (a trusted caller's may be
//! kept with `keep_headers`). The full reference is the crate's `README.md`.
//!
//! Modules: [`config`] (schema and checks), [`hints`] (header values to filter state).

pub mod config;
pub mod hints;

use std::net::IpAddr;
use std::rc::Rc;

use wasmesh_sdk::metrics::{Counter, CounterFamily};
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{config as sdk_config, headers, properties};

use config::{Config, Header};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Rc::new(Config::default()) })
    });
}}

static APPLIED: Counter = Counter::new("retry_hints_applied_total");
static IGNORED: CounterFamily = CounterFamily::new("retry_hints_ignored_total", &["reason"]);

struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        sdk_config::configure_with(|config: Config| {
            config.check()?;
            self.config = Rc::new(config);
            Ok(())
        })
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RetryHints {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RetryHints {
    config: Rc<Config>,
}

impl Context for RetryHints {}

/// The downstream peer's address, from `source.address` (`ip:port`); IPv4-mapped IPv6
/// addresses read as IPv4.
fn source_ip() -> Option<IpAddr> {
    let address = properties::source_address()?;
    let (host, _) = headers::split_host_port(&address);
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

impl HttpContext for RetryHints {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let request = headers::request();
        let present = Header::ALL.iter().any(|h| request.contains(h.name()));
        if !present {
            return Action::Continue;
        }
        let config = &self.config;
        let trusted = source_ip().is_some_and(|ip| config.trusts(ip));
        if trusted {
            let hints = hints::read(config, |name| request.get(name));
            for (key, value) in &hints.state {
                // One filter-state key, `wasmesh.retry_on`, as Envoy names filter state; a
                // refusal (over the host's limits) leaves the route's own policy in place.
                let _ = properties::set(&format!("wasmesh.{key}"), value.as_bytes());
            }
            if !hints.state.is_empty() {
                APPLIED.increment(1);
            }
            if !hints.invalid.is_empty() {
                IGNORED.with(&["invalid"]).increment(1);
            }
        } else {
            IGNORED.with(&["untrusted"]).increment(1);
        }
        if !(trusted && config.keep_headers) {
            for header in Header::ALL {
                request.remove(header.name());
            }
        }
        Action::Continue
    }
}
