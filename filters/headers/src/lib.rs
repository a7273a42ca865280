//! `headers`: adds, sets and removes request and response headers, with values templated the
//! way Envoy's custom headers are (`%REQ(x-request-id)%`, `%DOWNSTREAM_REMOTE_ADDRESS%`,
//! `%PROPERTY(connection.uri_san_peer_certificate)%`, …), and rewrites a request's path prefix
//! and host — the stock filter behind most header policies. Written with `wasmesh-sdk`.
//!
//! Configuration (the plugin `config`, JSON):
//!
//! ```json
//! {
//!   "request": {
//!     "remove": ["x-debug"],
//!     "set": { "x-env": "prod", "x-client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" },
//!     "add": { "x-tag": ["a", "b"] },
//!     "rewrite": { "path_prefix": { "from": "/api/v1/", "to": "/" }, "host": "users.internal" }
//!   },
//!   "response": { "set": { "x-request-id": "%REQ(x-request-id)%" } }
//! }
//! ```
//!
//! On each side the edits run in this order: every template is rendered against the headers
//! as they arrived, then `remove`, `set` (replaces every value), `add` (appends), and on the
//! request the rewrites. A value that renders empty is skipped, as Envoy skips it. The full
//! reference — every variable, the pseudo-header rules, the rewrite semantics — is in the
//! crate's `README.md`. A configuration that does not parse, names an unknown variable, or
//! breaks a rule makes `on_configure` fail with the field named in the log, so the proxy
//! refuses it.

mod rules;
mod template;

use std::rc::Rc;

use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{config, headers, properties};

use rules::{Edits, Rules};
use template::Lookup;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { plan: Rc::new(Plan::default()) })
    });
}}

/// The configuration and what the response side needs kept from the request.
#[derive(Default)]
struct Plan {
    rules: Rules,
    response_reads: Vec<String>,
}

struct Root {
    plan: Rc<Plan>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        config::configure_with(|rules: Rules| {
            rules.check()?;
            let response_reads = rules.response_reads();
            self.plan = Rc::new(Plan {
                rules,
                response_reads,
            });
            Ok(())
        })
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HeaderEdits {
            plan: self.plan.clone(),
            kept: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct HeaderEdits {
    plan: Rc<Plan>,
    /// Request headers the response templates read, as the request had them.
    kept: Vec<(String, Option<String>)>,
}

impl Context for HeaderEdits {}

/// Templates on the request path: request headers live, no response yet.
struct OnRequest;

impl Lookup for OnRequest {
    fn request_header(&self, name: &str) -> Option<String> {
        headers::request().get(name)
    }
    fn response_header(&self, _: &str) -> Option<String> {
        None
    }
    fn property(&self, path: &str) -> Option<Vec<u8>> {
        properties::get(path)
    }
}

/// Templates on the response path: request headers as kept, response headers live.
struct OnResponse<'a>(&'a [(String, Option<String>)]);

impl Lookup for OnResponse<'_> {
    fn request_header(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    }
    fn response_header(&self, name: &str) -> Option<String> {
        headers::response().get(name)
    }
    fn property(&self, path: &str) -> Option<Vec<u8>> {
        properties::get(path)
    }
}

/// Values rendered for one edit; empty ones are dropped.
type Rendered<'a> = Vec<(&'a str, Vec<String>)>;

fn render<'a>(
    edits: &'a std::collections::BTreeMap<rules::Name, rules::Values>,
    lookup: &dyn Lookup,
) -> Rendered<'a> {
    edits
        .iter()
        .map(|(name, values)| {
            let rendered = values
                .0
                .iter()
                .map(|t| t.render(lookup))
                .filter(|v| !v.is_empty())
                .collect();
            (name.as_str(), rendered)
        })
        .collect()
}

/// Runs one side's remove, set and add, with values rendered beforehand.
fn apply(map: headers::Headers, edits: &Edits, lookup: &dyn Lookup) {
    let set = render(&edits.set, lookup);
    let add = render(&edits.add, lookup);
    for name in &edits.remove {
        map.remove(name.as_str());
    }
    for (name, values) in set {
        if !values.is_empty() {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            map.set_all(name, &values);
        }
    }
    for (name, values) in add {
        for value in values {
            map.add(name, &value);
        }
    }
}

/// `path` with a leading `from` replaced by `to`; a result not starting with `/` gets one.
fn rewrite_prefix(path: &str, from: &str, to: &str) -> Option<String> {
    let rest = path.strip_prefix(from)?;
    let rewritten = format!("{to}{rest}");
    Some(if rewritten.starts_with('/') {
        rewritten
    } else {
        format!("/{rewritten}")
    })
}

impl HttpContext for HeaderEdits {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let plan = self.plan.clone();
        let request = headers::request();
        self.kept = plan
            .response_reads
            .iter()
            .map(|name| (name.clone(), request.get(name)))
            .collect();
        let edits = &plan.rules.request;
        let host = edits
            .rewrite
            .as_ref()
            .and_then(|r| r.host.as_ref())
            .map(|t| t.render(&OnRequest));
        apply(request, edits, &OnRequest);
        if let Some(prefix) = edits.rewrite.as_ref().and_then(|r| r.path_prefix.as_ref())
            && let Some(path) = request.get(":path")
            && let Some(rewritten) = rewrite_prefix(&path, &prefix.from, &prefix.to)
        {
            request.set(":path", &rewritten);
        }
        if let Some(host) = host.filter(|h| !h.is_empty()) {
            request.set(":authority", &host);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        apply(
            headers::response(),
            &self.plan.rules.response,
            &OnResponse(&self.kept),
        );
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite_prefix;

    #[test]
    fn prefix_rewrites() {
        assert_eq!(
            rewrite_prefix("/api/v1/users?x=1", "/api/v1/", "/").as_deref(),
            Some("/users?x=1")
        );
        assert_eq!(
            rewrite_prefix("/api/users", "/api", "").as_deref(),
            Some("/users")
        );
        assert_eq!(rewrite_prefix("/apiv2", "/api", "").as_deref(), Some("/v2"));
        assert_eq!(rewrite_prefix("/api", "/api", "").as_deref(), Some("/"));
        assert_eq!(rewrite_prefix("/other", "/api", "/x"), None);
    }
}
