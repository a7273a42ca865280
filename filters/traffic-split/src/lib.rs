//! `traffic-split`: weighted canary releases and header/cookie-based routing. The filter
//! picks a variant for each request — the first override whose header or cookie matches
//! (`x-canary: always`, `version=v2`), else the weights, applied to a hash of a stickiness key
//! (header, cookie or client IP) so a user always gets the same variant, or drawn at random —
//! writes it as a request header (`x-route-variant: canary` by default, replacing whatever the
//! client sent) and asks the proxy to match the route again (the SDK's [`route_cache::clear`],
//! Envoy's `clear_route_cache` foreign function), so a route table that matches on that
//! header sends the request to the variant's cluster. Written with `wasmesh-sdk`; it imports
//! nothing Envoy lacks, so it runs there unchanged.
//!
//! Configuration (the plugin `config`, JSON):
//!
//! ```json
//! {
//!   "header": "x-route-variant",
//!   "variants": [{"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}],
//!   "overrides": [{"header": "x-canary", "value": "always", "variant": "canary"},
//!                 {"cookie": "version", "value": "v2", "variant": "canary"}],
//!   "sticky": {"type": "cookie", "name": "session"}
//! }
//! ```
//!
//! The README shows the route table that goes with it. Modules: [`config`] (schema and
//! checks), [`choose`] (the choice).

pub mod choose;
pub mod config;

use std::rc::Rc;

use wasmesh_sdk::metrics::CounterFamily;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{config as sdk_config, headers, properties, route_cache};

use config::Config;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: None })
    });
}}

static REQUESTS: CounterFamily =
    CounterFamily::new("traffic_split_requests_total", &["variant", "reason"]);

struct Root {
    /// `None` until configured: then every request passes untouched.
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        sdk_config::configure_with(|config: Config| {
            config.check()?;
            self.config = Some(Rc::new(config));
            Ok(())
        })
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Split {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The request as the host has it.
struct Live;

impl choose::Request for Live {
    fn header_values(&self, name: &str) -> Vec<String> {
        headers::request().get_all(name)
    }
    fn source_address(&self) -> Option<String> {
        properties::source_address()
    }
}

/// A uniform 64-bit value from WASI's random source (0 if there is none: the first variant
/// with a weight).
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

/// One request through the filter.
struct Split {
    config: Option<Rc<Config>>,
}

impl Context for Split {}

impl HttpContext for Split {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let (variant, reason) = choose::choose(&config, &Live, &mut random);
        REQUESTS
            .with(&[&variant.name, reason.as_str()])
            .increment(1);
        // Always written (a client's own value is replaced) and the route always matched
        // again: the first match may have followed a header the client sent.
        headers::request().set(&config.header, &variant.name);
        // A host without the function routes as first matched; there is nothing better to do.
        route_cache::clear();
        Action::Continue
    }
}
