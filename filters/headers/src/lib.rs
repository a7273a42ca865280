//! `headers`: adds, sets and removes request and response headers — the stock filter behind
//! most header policies. Configuration (the plugin `config`, JSON):
//!
//! ```json
//! {
//!   "request":  { "set": { "x-env": "prod" }, "add": { "x-tag": "a" }, "remove": ["x-debug"] },
//!   "response": { "set": { "x-served-by": "wasmesh" } }
//! }
//! ```
//!
//! `set` replaces any existing value, `add` appends another, `remove` deletes every value.
//! A configuration that does not parse makes `on_configure` fail, so the proxy refuses it.

use std::collections::BTreeMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { rules: Rc::new(Rules::default()) })
    });
}}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    #[serde(default)]
    request: Edits,
    #[serde(default)]
    response: Edits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Edits {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

struct Root {
    rules: Rc<Rules>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            return true;
        };
        match serde_json::from_slice::<Rules>(&bytes) {
            Ok(rules) => {
                self.rules = Rc::new(rules);
                true
            }
            Err(err) => {
                proxy_wasm::hostcalls::log(
                    LogLevel::Error,
                    &format!("headers: bad configuration: {err}"),
                )
                .ok();
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Headers {
            rules: self.rules.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Headers {
    rules: Rc<Rules>,
}

impl Context for Headers {}

impl HttpContext for Headers {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let edits = &self.rules.request;
        for name in &edits.remove {
            self.set_http_request_header(name, None);
        }
        for (name, value) in &edits.set {
            self.set_http_request_header(name, Some(value));
        }
        for (name, value) in &edits.add {
            self.add_http_request_header(name, value);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let edits = &self.rules.response;
        for name in &edits.remove {
            self.set_http_response_header(name, None);
        }
        for (name, value) in &edits.set {
            self.set_http_response_header(name, Some(value));
        }
        for (name, value) in &edits.add {
            self.add_http_response_header(name, value);
        }
        Action::Continue
    }
}
