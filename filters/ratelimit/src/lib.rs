//! `ratelimit`: rate limits requests with token buckets — per client IP, header, path or JWT
//! claim, under several rules matched by path prefix, method and headers — shared by every
//! VM replica of the plugin through the host's shared data (compare-and-swap, refilled from
//! the clock), or, in global mode, by asking an Envoy-style rate-limit service over its
//! HTTP/JSON API. A request over a limit gets `429` with `Retry-After` and
//! `x-ratelimit-limit|remaining|reset`. Written with `wasmesh-sdk`.
//!
//! Configuration (the plugin `config`, JSON):
//!
//! ```json
//! {
//!   "rules": [
//!     {"name": "per-ip", "key": {"type": "client_ip"},
//!      "bucket": {"max_tokens": 100, "tokens_per_fill": 10, "fill_interval": "1s"}},
//!     {"name": "writes", "match": {"path_prefix": "/api", "methods": ["POST"]},
//!      "key": {"type": "jwt_claim", "claim": "sub"},
//!      "bucket": {"max_tokens": 20, "fill_interval": "1m"}}
//!   ],
//!   "headers_on_allowed": true
//! }
//! ```
//!
//! or with `"global": {"cluster": "ratelimit", "domain": "edge"}` and rules without buckets.
//! The full reference — every field, the headers, the metrics — is the crate's `README.md`.
//!
//! Modules: [`config`] (schema and checks), [`rules`] (matching, keys), [`bucket`] (token
//! buckets over compare-and-swap), [`service`] (the rate-limit service's JSON),
//! [`duration`] (`"1s"`-style durations, from the SDK).

pub mod bucket;
pub mod config;
pub use wasmesh_sdk::duration;
pub mod rules;
pub mod service;

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use wasmesh_sdk::metrics::{Counter, CounterFamily};
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};
use wasmesh_sdk::router::Response;
use wasmesh_sdk::{config as sdk_config, headers, properties};

use bucket::{Decision, Outcome};
use config::{Config, Global, Rule};
use service::{Entry, Quota, Verdict};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { plan: Rc::new(Plan::default()) })
    });
}}

static ALLOWED: CounterFamily = CounterFamily::new("ratelimit_allowed_total", &["rule"]);
static LIMITED: CounterFamily = CounterFamily::new("ratelimit_limited_total", &["rule"]);
static CONTENDED: CounterFamily = CounterFamily::new("ratelimit_contended_total", &["rule"]);
static SERVICE_ERRORS: Counter = Counter::new("ratelimit_service_errors_total");

/// Compare-and-swap attempts per bucket update before giving up (and letting the request
/// through, counted in `ratelimit_contended_total`).
const CAS_ATTEMPTS: u32 = 32;

/// The configuration, and the shared-data key prefix of this plugin's buckets.
#[derive(Default)]
struct Plan {
    config: Config,
    prefix: String,
}

struct Root {
    plan: Rc<Plan>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        sdk_config::configure_with(|config: Config| {
            config.check()?;
            // Buckets of plugins sharing a vm_id must not collide.
            let prefix = format!(
                "ratelimit/{}/",
                properties::plugin_name().unwrap_or_default()
            );
            self.plan = Rc::new(Plan { config, prefix });
            Ok(())
        })
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Limiter {
            plan: self.plan.clone(),
            shown: None,
            asked: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The request as the host has it.
struct Live;

impl rules::Request for Live {
    fn method(&self) -> Option<String> {
        headers::request().get(":method")
    }
    fn path(&self) -> Option<String> {
        headers::request().path().map(|p| p.path)
    }
    fn header(&self, name: &str) -> Option<String> {
        headers::request().get(name)
    }
    fn property(&self, path: &str) -> Option<String> {
        properties::get(path).map(|bytes| properties::display(path, &bytes))
    }
    fn source_address(&self) -> Option<String> {
        properties::source_address()
    }
}

/// Buckets in the host's shared data (of the plugin's `vm_id`).
struct SharedData;

impl bucket::Store for SharedData {
    fn get(&mut self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What the `x-ratelimit-*` headers say.
#[derive(Debug, Clone, Copy)]
struct Shown {
    limit: u64,
    remaining: u64,
    reset_secs: u64,
}

impl From<Decision> for Shown {
    fn from(d: Decision) -> Shown {
        Shown {
            limit: d.limit,
            remaining: d.remaining,
            // Whole seconds, rounded up: a client waiting this long finds a token.
            reset_secs: d.reset.as_nanos().div_ceil(1_000_000_000) as u64,
        }
    }
}

impl From<Quota> for Shown {
    fn from(q: Quota) -> Shown {
        Shown {
            limit: q.limit,
            remaining: q.remaining,
            reset_secs: q.reset_secs,
        }
    }
}

impl Shown {
    fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_secs.to_string()),
        ]
    }
}

/// Answers 429: `Retry-After` and the headers when the limit is known.
fn send_limited(shown: Option<Shown>, extra: &[(&str, &str)]) {
    let mut response = Response::text(429, "rate limited\n");
    if let Some(shown) = shown {
        response = response.header("retry-after", &shown.reset_secs.max(1).to_string());
        for (name, value) in shown.headers() {
            response = response.header(name, &value);
        }
    }
    for (name, value) in extra {
        response = response.header(name, value);
    }
    response.send();
}

/// One request through the filter.
struct Limiter {
    plan: Rc<Plan>,
    /// Headers for an allowed response.
    shown: Option<Shown>,
    /// Global mode: the rules whose descriptors are with the service, in order.
    asked: Vec<String>,
}

impl Limiter {
    /// Local mode: a token from every matching rule's bucket, until one has none.
    fn take_tokens(&mut self, plan: &Plan, matched: &[(&Rule, Option<String>)]) -> Action {
        let now = now_ns();
        let mut tightest: Option<Shown> = None;
        for (rule, value) in matched {
            let Some(bucket) = &rule.bucket else { continue };
            let key = match value {
                Some(value) => format!("{}{}/{value}", plan.prefix, rule.name),
                None => format!("{}{}", plan.prefix, rule.name),
            };
            match bucket::consume(&mut SharedData, &key, &bucket.limits(), now, CAS_ATTEMPTS) {
                Outcome::Decided(d) if d.allowed => {
                    ALLOWED.with(&[&rule.name]).increment(1);
                    let shown = Shown::from(d);
                    if tightest.is_none_or(|t| shown.remaining < t.remaining) {
                        tightest = Some(shown);
                    }
                }
                Outcome::Decided(d) => {
                    LIMITED.with(&[&rule.name]).increment(1);
                    send_limited(Some(Shown::from(d)), &[]);
                    return Action::Pause;
                }
                Outcome::Contended => {
                    CONTENDED.with(&[&rule.name]).increment(1);
                    wasmesh_sdk::log(
                        LogLevel::Debug,
                        &format!(
                            "bucket {key}: every compare-and-swap lost; letting the request through"
                        ),
                    );
                }
            }
        }
        if plan.config.headers_on_allowed {
            self.shown = tightest;
        }
        Action::Continue
    }

    /// Global mode: sends the descriptors to the service and waits for its answer.
    fn ask(&mut self, global: &Global, matched: &[(&Rule, Option<String>)]) -> Action {
        let entries: Vec<Entry> = matched
            .iter()
            .map(|(rule, value)| Entry {
                key: rule.descriptor_key.clone().unwrap_or_else(|| {
                    rule.key
                        .as_ref()
                        .map_or("generic_key", |k| k.descriptor_key())
                        .to_string()
                }),
                value: value.clone().unwrap_or_else(|| rule.name.clone()),
            })
            .collect();
        let body = service::request_body(&global.domain, &entries);
        let call_headers = vec![
            (":method", "POST"),
            (":path", global.path.as_str()),
            (":authority", global.authority()),
            ("content-type", "application/json"),
        ];
        match self.dispatch_http_call(
            &global.cluster,
            call_headers,
            Some(&body),
            Vec::new(),
            global.timeout.0,
        ) {
            Ok(_) => {
                self.asked = matched.iter().map(|(r, _)| r.name.clone()).collect();
                Action::Pause
            }
            Err(status) => {
                self.service_failed(
                    global,
                    &format!("cannot call cluster \"{}\": {status:?}", global.cluster),
                );
                if global.failure_mode_deny {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
        }
    }

    /// Counts and logs a service failure; answers 500 if the failure mode denies.
    fn service_failed(&self, global: &Global, why: &str) {
        SERVICE_ERRORS.increment(1);
        wasmesh_sdk::log(
            LogLevel::Warn,
            &format!(
                "rate-limit service: {why}; {}",
                if global.failure_mode_deny {
                    "denying the request (failure_mode_deny)"
                } else {
                    "letting the request through"
                }
            ),
        );
        if global.failure_mode_deny {
            Response::text(500, "rate limit service unavailable\n").send();
        }
    }
}

impl Context for Limiter {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _: usize) {
        let plan = self.plan.clone();
        let Some(global) = &plan.config.global else {
            return;
        };
        let status = headers::call_response().status();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let asked = std::mem::take(&mut self.asked);
        match service::verdict(status, &body, asked.len()) {
            Verdict::Ok { quota } => {
                for rule in &asked {
                    ALLOWED.with(&[rule]).increment(1);
                }
                if plan.config.headers_on_allowed {
                    self.shown = quota.map(Shown::from);
                }
                let _ = hostcalls::resume_http_request();
            }
            Verdict::OverLimit { quota, over } => {
                let any_named = over.contains(&true);
                for (rule, over) in asked.iter().zip(&over) {
                    if *over || !any_named {
                        LIMITED.with(&[rule]).increment(1);
                    } else {
                        ALLOWED.with(&[rule]).increment(1);
                    }
                }
                send_limited(quota.map(Shown::from), &[("x-envoy-ratelimited", "true")]);
            }
            Verdict::Failed(why) => {
                self.service_failed(global, &why);
                if !global.failure_mode_deny {
                    let _ = hostcalls::resume_http_request();
                }
            }
        }
    }
}

impl HttpContext for Limiter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let plan = self.plan.clone();
        let matched = rules::matching(&plan.config.rules, &Live);
        if matched.is_empty() {
            return Action::Continue;
        }
        match &plan.config.global {
            Some(global) => self.ask(global, &matched),
            None => self.take_tokens(&plan, &matched),
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(shown) = self.shown {
            let response = headers::response();
            for (name, value) in shown.headers() {
                response.set(name, &value);
            }
        }
        Action::Continue
    }
}
