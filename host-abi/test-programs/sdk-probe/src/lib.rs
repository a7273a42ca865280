//! A test filter written with `wasmesh-sdk`, so the SDK's helpers run inside a real VM on the
//! host (the SDK's own unit tests cover only what needs no host). Its configuration is
//! `{"greeting": "...", "health_path": "/..."}` (both optional), read with
//! `config::configure`. On each request it:
//!
//! - answers `GET <health_path>` with 200 `ok`, and any method under `/gone/` with 410, through
//!   `router::Router`;
//! - counts `sdk_requests_total` by method (a `CounterFamily`), sets the `sdk_cookies` gauge to
//!   the number of `cookie` headers, records the path length in the `sdk_path_length`
//!   histogram, and counts `sdk_requests` (a plain `Counter`), echoed in `x-count`;
//! - echoes what the `headers` helpers read: `x-cookies` (how many `cookie` values),
//!   `x-length` (`content-length` + 1), `x-path` and `x-q` (`:path` split, query parameter
//!   `q` decoded), `x-host` and `x-port` (`:authority` split); sets `x-multi` to two values
//!   and `x-greeting` to the configured greeting;
//! - echoes the typed attribute accessors: `x-source-port`, `x-destination-port`, `x-mtls`,
//!   `x-uri-san`, `x-route`, `x-request-path`, `x-plugin`, `x-root`, `x-vm`;
//!
//! and on each response sets `x-status` to `:status` + 1.

use std::rc::Rc;

use serde::Deserialize;
use wasmesh_sdk::metrics::{Counter, CounterFamily, Gauge, Histogram};
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType};
use wasmesh_sdk::router::{Response, Router};
use wasmesh_sdk::{config, headers, properties};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    greeting: String,
    #[serde(default = "default_health")]
    health_path: String,
}

fn default_health() -> String {
    "/healthz".into()
}

static BY_METHOD: CounterFamily = CounterFamily::new("sdk_requests_total", &["method"]);
static REQUESTS: Counter = Counter::new("sdk_requests");
static COOKIES: Gauge = Gauge::new("sdk_cookies");
static PATH_LENGTH: Histogram = Histogram::new("sdk_path_length");

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { greeting: Rc::default(), router: Rc::new(Router::new()) })
    });
}}

struct Root {
    greeting: Rc<String>,
    router: Rc<Router>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        config::configure(|c: Config| {
            self.router = Rc::new(
                Router::new()
                    .exact("GET", &c.health_path, Response::text(200, "ok"))
                    .prefix("*", "/gone/", Response::new(410).header("x-gone", "yes")),
            );
            self.greeting = Rc::new(c.greeting);
        })
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            greeting: self.greeting.clone(),
            router: self.router.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    greeting: Rc<String>,
    router: Rc<Router>,
}

impl Context for Probe {}

fn echo(name: &str, value: Option<String>) {
    if let Some(value) = value {
        headers::request().set(name, &value);
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(action) = self.router.handle() {
            return action;
        }
        let req = headers::request();
        let method = req.get(":method").unwrap_or_default();
        BY_METHOD.with(&[&method]).increment(1);
        REQUESTS.increment(1);
        let cookies = req.get_all("cookie");
        COOKIES.set(cookies.len() as i64);
        let path = req.path().unwrap_or_default();
        PATH_LENGTH.record(path.path.len() as u64);

        echo("x-count", REQUESTS.value().map(|n| n.to_string()));
        echo("x-cookies", Some(cookies.len().to_string()));
        echo(
            "x-length",
            req.get_as::<u64>("content-length")
                .map(|n| (n + 1).to_string()),
        );
        echo("x-q", path.query_param("q"));
        echo("x-path", Some(path.path.clone()));
        if let Some((host, port)) = req.authority() {
            echo("x-host", Some(host));
            echo("x-port", port.map(|p| p.to_string()));
        }
        req.set_all("x-multi", &["1", "2"]);
        if !self.greeting.is_empty() {
            req.set("x-greeting", &self.greeting);
        }

        echo(
            "x-source-port",
            properties::source_port().map(|p| p.to_string()),
        );
        echo(
            "x-destination-port",
            properties::destination_port().map(|p| p.to_string()),
        );
        echo(
            "x-mtls",
            properties::connection_mtls().map(|b| b.to_string()),
        );
        echo("x-uri-san", properties::uri_san_peer_certificate());
        echo("x-route", properties::route_name());
        echo("x-request-path", properties::request_path());
        echo("x-plugin", properties::plugin_name());
        echo("x-root", properties::plugin_root_id());
        echo("x-vm", properties::plugin_vm_id());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let res = headers::response();
        if let Some(status) = res.status() {
            res.set("x-status", &(u32::from(status) + 1).to_string());
        }
        Action::Continue
    }
}
