//! {{name}}: a proxy-wasm filter for wasmesh (and any proxy-wasm host), written with
//! `wasmesh-sdk`. It sets the request and response headers its configuration names:
//!
//! ```json
//! {"request": {"x-hello": "world"}, "response": {"x-served-by": "{{name}}"}}
//! ```
//!
//! Both members are optional; an unknown member or a value that is not a string refuses the
//! configuration with a log line naming the field. Build with `wasmesh filter build`, test
//! with `cargo test`.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::Deserialize;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType};
use wasmesh_sdk::{config, headers};

/// The plugin configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Request headers to set (replacing any value they had).
    #[serde(default)]
    request: BTreeMap<String, String>,
    /// Response headers to set.
    #[serde(default)]
    response: BTreeMap<String, String>,
}

wasmesh_sdk::proxy_wasm::main! {{
    wasmesh_sdk::proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Rc::default() })
    });
}}

/// One per plugin: holds the configuration every request shares.
struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        config::configure(|c: Config| self.config = Rc::new(c))
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One per request.
struct Filter {
    config: Rc<Config>,
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let request = headers::request();
        for (name, value) in &self.config.request {
            request.set(name, value);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let response = headers::response();
        for (name, value) in &self.config.response {
            response.set(name, value);
        }
        Action::Continue
    }
}
