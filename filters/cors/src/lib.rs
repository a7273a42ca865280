//! `cors`: Cross-Origin Resource Sharing as Envoy's CORS filter does it, per the Fetch
//! standard. A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from
//! an allowed origin is answered here with `204` and the policy's `Access-Control-Allow-*`
//! headers; an actual request from an allowed origin gets `Access-Control-Allow-Origin` (the
//! origin itself), credentials and exposed headers on its response; responses under a
//! policy carry `Vary: Origin`. Origins are matched exactly, by `*`, by wildcard patterns
//! (`https://*.example.com`) or by prefix / suffix / substring. Per-route policies come from
//! the configuration, keyed by the `route_name` attribute. Written with `wasmesh-sdk`.
//!
//! Configuration (the plugin `config`, JSON):
//!
//! ```json
//! {
//!   "allow_origins": ["https://app.example.com", "https://*.example.com"],
//!   "allow_methods": ["GET", "POST", "PUT"],
//!   "allow_headers": ["content-type", "authorization"],
//!   "expose_headers": ["x-request-id"],
//!   "max_age": 600,
//!   "allow_credentials": true,
//!   "routes": {"public-api": {"allow_origins": ["*"], "allow_credentials": false}}
//! }
//! ```
//!
//! The full reference is the crate's `README.md`. Modules: [`config`] (policies and their
//! per-route overrides), [`origin`] (origin matchers).

pub mod config;
pub mod origin;

use std::rc::Rc;

use wasmesh_sdk::metrics::Counter;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::router::Response;
use wasmesh_sdk::{config as sdk_config, headers, properties};

use config::{Effective, List, Policy};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { policy: Rc::new(Policy::default()) })
    });
}}

static VALID: Counter = Counter::new("cors_origin_valid_total");
static INVALID: Counter = Counter::new("cors_origin_invalid_total");
static PREFLIGHTS: Counter = Counter::new("cors_preflights_answered_total");

struct Root {
    policy: Rc<Policy>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        sdk_config::configure_with(|policy: Policy| {
            policy.check()?;
            self.policy = Rc::new(policy);
            Ok(())
        })
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Cors {
            policy: self.policy.clone(),
            route: None,
            enabled: false,
            allowed_origin: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request through the filter.
struct Cors {
    policy: Rc<Policy>,
    /// `route_name`, read once.
    route: Option<String>,
    /// A policy applies (it was not turned off for the route).
    enabled: bool,
    /// The request's origin, when the policy allows it.
    allowed_origin: Option<String>,
}

/// Adds `Vary: Origin` unless the response already varies on it (or on everything).
fn vary_on_origin(response: headers::Headers) {
    let covered = response.get_all("vary").iter().any(|value| {
        value
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
    });
    if !covered {
        response.add("vary", "Origin");
    }
}

/// The answer to an allowed (or, when not forwarded, refused) preflight.
fn preflight_response(policy: &Effective<'_>, origin: Option<&str>) -> Response {
    let request = headers::request();
    let mut response = Response::new(204);
    if let Some(origin) = origin {
        response = response.header("access-control-allow-origin", origin);
    }
    if policy.allow_credentials {
        response = response.header("access-control-allow-credentials", "true");
    }
    let mut vary = vec!["Origin"];
    let requested_method = request.get("access-control-request-method");
    if let Some(methods) = policy
        .allow_methods
        .and_then(|l| l.render(requested_method.as_deref()))
    {
        response = response.header("access-control-allow-methods", &methods);
        if policy.allow_methods == Some(&List::Any) {
            vary.push("Access-Control-Request-Method");
        }
    }
    let requested_headers = request.get("access-control-request-headers");
    if let Some(allowed) = policy
        .allow_headers
        .and_then(|l| l.render(requested_headers.as_deref()))
    {
        response = response.header("access-control-allow-headers", &allowed);
    }
    if policy.allow_headers == Some(&List::Any) {
        vary.push("Access-Control-Request-Headers");
    }
    if let Some(age) = policy.max_age {
        response = response.header("access-control-max-age", &age.to_string());
    }
    if policy.allow_private_network_access
        && request
            .get("access-control-request-private-network")
            .is_some_and(|v| v.trim() == "true")
    {
        response = response.header("access-control-allow-private-network", "true");
    }
    response.header("vary", &vary.join(", "))
}

impl Context for Cors {}

impl HttpContext for Cors {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let all = self.policy.clone();
        self.route = properties::route_name();
        let policy = all.effective(self.route.as_deref());
        if !policy.enabled {
            return Action::Continue;
        }
        self.enabled = true;
        let request = headers::request();
        let Some(origin) = request.get("origin").filter(|o| !o.trim().is_empty()) else {
            return Action::Continue;
        };
        let allowed = policy.origin_allowed(&origin);
        if allowed {
            VALID.increment(1);
            self.allowed_origin = Some(origin.clone());
        } else {
            INVALID.increment(1);
        }
        let preflight = request.get(":method").as_deref() == Some("OPTIONS")
            && request
                .get("access-control-request-method")
                .is_some_and(|m| !m.trim().is_empty());
        if !preflight || (!allowed && policy.forward_not_matching_preflights) {
            return Action::Continue;
        }
        PREFLIGHTS.increment(1);
        preflight_response(&policy, allowed.then_some(origin.as_str())).send();
        Action::Pause
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if !self.enabled {
            return Action::Continue;
        }
        let response = headers::response();
        if let Some(origin) = &self.allowed_origin {
            let all = self.policy.clone();
            let policy = all.effective(self.route.as_deref());
            response.set("access-control-allow-origin", origin);
            if policy.allow_credentials {
                response.set("access-control-allow-credentials", "true");
            }
            let exposed = match policy.expose_headers {
                Some(List::Any) => Some("*".to_string()),
                Some(list) => list.render(None),
                None => None,
            };
            if let Some(exposed) = exposed {
                response.set("access-control-expose-headers", &exposed);
            }
        }
        // Whether the response allows an origin depends on the request's Origin, so caches
        // must key on it — for responses without Origin too (Fetch, "CORS protocol and HTTP
        // caches").
        vary_on_origin(response);
        Action::Continue
    }
}
