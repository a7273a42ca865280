//! `rbac`: allows or denies each request by named policies, as Envoy's RBAC filter does
//! (simplified). Written with `wasmesh-sdk`.
//!
//! A policy matches when any of its *permissions* (method, path, header, destination port,
//! combined with `and`/`or`/`not`) matches the request and any of its *principals* (the mTLS
//! peer's SPIFFE ID, the source address, a claim of the token the jwt-authn filter verified,
//! a header, combined the same way) matches who sent it. With `action: ALLOW` a request is
//! let through only if some policy matches; with `DENY`, only if none does.
//!
//! ```json
//! {
//!   "action": "ALLOW",
//!   "policies": {
//!     "frontend-reads": {
//!       "permissions": [{ "and": [{ "method": "GET" }, { "path": { "prefix": "/api/" } }] }],
//!       "principals": [{ "authenticated": { "principal_name": { "exact": "spiffe://mesh/ns/web/sa/frontend" } } }]
//!     },
//!     "admins": {
//!       "permissions": [{ "any": true }],
//!       "principals": [{ "jwt_claim": { "name": "groups", "exact": "admin" } }]
//!     }
//!   }
//! }
//! ```
//!
//! A denied request is answered `403` with the body `RBAC: access denied`. With
//! `shadow: true` nothing is enforced: the decision is logged (with the policy that would have
//! decided) and counted. The README has the full schema and the metrics.

mod facts;
mod policy;

use std::rc::Rc;

use wasmesh_sdk::metrics::CounterFamily;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::router::Response;
use wasmesh_sdk::{config, headers};

use facts::Live;
use policy::{Config, Decision};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: None })
    });
}}

static ALLOWED: CounterFamily = CounterFamily::new("rbac_allowed_total", &["policy"]);
static DENIED: CounterFamily = CounterFamily::new("rbac_denied_total", &["policy"]);
static SHADOW_ALLOWED: CounterFamily = CounterFamily::new("rbac_shadow_allowed_total", &["policy"]);
static SHADOW_DENIED: CounterFamily = CounterFamily::new("rbac_shadow_denied_total", &["policy"]);

struct Root {
    /// `None` until configured: a filter without a configuration denies nothing.
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        config::configure_with(|mut c: Config| {
            c.check()?;
            self.config = Some(Rc::new(c));
            Ok(())
        })
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rbac {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Rbac {
    config: Option<Rc<Config>>,
}

impl Context for Rbac {}

impl HttpContext for Rbac {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let facts = Live::default();
        let policy = config.matching_policy(&facts);
        let allowed = match config.action {
            Decision::Allow => policy.is_some(),
            Decision::Deny => policy.is_none(),
        };
        let label = policy.unwrap_or_default();
        if config.shadow {
            let counter = if allowed {
                &SHADOW_ALLOWED
            } else {
                &SHADOW_DENIED
            };
            counter.with(&[label]).increment(1);
            let request = headers::request();
            wasmesh_sdk::log(
                LogLevel::Info,
                &format!(
                    "shadow: would {} {} {} ({})",
                    if allowed { "allow" } else { "deny" },
                    request.get(":method").unwrap_or_default(),
                    request.get(":path").unwrap_or_default(),
                    match policy {
                        Some(name) => format!("policy \"{name}\""),
                        None => "no policy matched".to_string(),
                    }
                ),
            );
            return Action::Continue;
        }
        if allowed {
            ALLOWED.with(&[label]).increment(1);
            return Action::Continue;
        }
        DENIED.with(&[label]).increment(1);
        Response::text(403, "RBAC: access denied\n").send();
        Action::Pause
    }
}
