//! `jwt-authn`: verifies JSON Web Tokens (RS256, ES256, EdDSA) on the paths that need them,
//! as Envoy's `jwt_authn` filter does, simplified. Written with `wasmesh-sdk`.
//!
//! Each *provider* names an issuer, the audiences it accepts, where its tokens come from
//! (`Authorization: Bearer`, another header, a query parameter), whether the token is passed
//! on, which claims become request headers, and its keys: a JWKS given inline or fetched from
//! a cluster of the proxy (an HTTP callout from the root context on its ticks, the first a
//! second after start, then every `jwks_refresh`, kept when a fetch fails). *Rules* say which paths need a
//! token of which providers, and where a missing token is allowed.
//!
//! ```json
//! {
//!   "providers": {
//!     "corp": {
//!       "issuer": "https://idp.example.com",
//!       "audiences": ["api"],
//!       "remote_jwks": { "cluster": "idp", "path": "/.well-known/jwks.json", "jwks_refresh": "5m" },
//!       "claim_to_headers": [{ "header_name": "x-jwt-claim-sub", "claim_name": "sub" }]
//!     }
//!   },
//!   "rules": [
//!     { "match": { "prefix": "/public" } },
//!     { "match": { "prefix": "/" }, "requires": ["corp"] }
//!   ]
//! }
//! ```
//!
//! A request a rule requires a token for, without one, gets 401 with
//! `WWW-Authenticate: Bearer realm="…"`; a token that fails gets 401 with
//! `error="invalid_token"` (RFC 6750 §3). A request that needs a provider whose fetched keys
//! have not arrived yet is answered 503 with `retry-after: 1` rather than held. A verified
//! token's claims are published as filter state (`wasmesh.jwt.claims`, `wasmesh.jwt.sub`,
//! `wasmesh.jwt.provider`) for later filters such as `rbac`.
//!
//! Each provider keeps the tokens it verified in a bounded LRU cache per VM replica
//! (`jwt_cache_config`, 100 tokens by default), so a token seen again skips the signature
//! check; time and identity claims are checked on every request, and the cache is emptied
//! whenever the provider's keys change. The README has the full schema, the wire behaviour,
//! the cache's rules and the metrics.

mod cache;
mod config;
mod extract;
mod jwks;
mod remote;
mod token;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use wasmesh_sdk::metrics::CounterFamily;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::router::Response;
use wasmesh_sdk::{config as sdk_config, headers, properties};

use cache::{Lookup, TokenCache};
use config::{Config, Provider, Rule};
use extract::Location;
use jwks::KeySet;
use remote::Schedule;
use token::{Expect, Failure, Verified};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            plan: Rc::new(Plan::default()),
            keys: Rc::default(),
            schedules: Vec::new(),
        })
    });
}}

static ALLOWED: CounterFamily = CounterFamily::new("jwt_authn_allowed_total", &["provider"]);
static DENIED: CounterFamily =
    CounterFamily::new("jwt_authn_denied_total", &["provider", "reason"]);
static FETCHES: CounterFamily =
    CounterFamily::new("jwt_authn_jwks_fetches_total", &["provider", "result"]);
static CACHE: CounterFamily =
    CounterFamily::new("jwt_authn_cache_lookups_total", &["provider", "result"]);

/// How often the root context looks whether a key set is due for fetching.
const TICK: Duration = Duration::from_secs(1);

/// The configuration as requests use it: providers by index, rules pointing at them.
#[derive(Default)]
struct Plan {
    providers: Vec<(String, Provider)>,
    rules: Vec<PlannedRule>,
    realm: String,
    /// Every `claim_to_headers` header: removed from each request so a client cannot forge one.
    claim_headers: BTreeSet<String>,
}

struct PlannedRule {
    rule: Rule,
    requires: Vec<usize>,
}

impl Plan {
    fn new(config: Config) -> Plan {
        let providers: Vec<(String, Provider)> = config.providers.into_iter().collect();
        let index = |name: &str| providers.iter().position(|(n, _)| n == name);
        let rules = config
            .rules
            .into_iter()
            .map(|rule| PlannedRule {
                // `Config::check` made sure every name is a provider.
                requires: rule.requires.iter().filter_map(|n| index(n)).collect(),
                rule,
            })
            .collect();
        let claim_headers = providers
            .iter()
            .flat_map(|(_, p)| p.claim_to_headers.iter().map(|m| m.header_name.clone()))
            .collect();
        Plan {
            providers,
            rules,
            realm: config.realm,
            claim_headers,
        }
    }
}

/// What one provider verifies tokens with: its keys, and the tokens verified with exactly
/// those keys.
struct ProviderKeys {
    /// `None` while a fetched set has not arrived.
    keys: Option<Rc<KeySet>>,
    cache: TokenCache,
}

impl ProviderKeys {
    /// New keys: the tokens verified with the old ones are forgotten with them, so a token
    /// signed by a key that is gone stops passing now, not when its entry ages out.
    fn replace(&mut self, keys: Rc<KeySet>) {
        self.keys = Some(keys);
        self.cache.clear();
    }
}

/// Each provider's keys and cache, by index.
type Keys = Rc<RefCell<Vec<ProviderKeys>>>;

struct Root {
    plan: Rc<Plan>,
    keys: Keys,
    /// Fetch schedules, by provider index; `None` for inline key sets.
    schedules: Vec<Option<Schedule>>,
}

impl Root {
    /// Gives up on overdue fetches and starts every fetch that is due.
    fn fetch_due(&mut self) {
        let now = SystemTime::now();
        for i in 0..self.schedules.len() {
            let (name, provider) = &self.plan.providers[i];
            let (Some(remote), Some(schedule)) =
                (&provider.remote_jwks, self.schedules[i].as_mut())
            else {
                continue;
            };
            if schedule.expire(now) {
                FETCHES.with(&[name, "failed"]).increment(1);
                wasmesh_sdk::log(
                    LogLevel::Warn,
                    &format!("provider {name}: the JWKS fetch was not answered; retrying"),
                );
            }
            if !schedule.due(now) {
                continue;
            }
            let authority = remote.authority.as_deref().unwrap_or(&remote.cluster);
            let headers = vec![
                (":method", "GET"),
                (":path", remote.path.as_str()),
                (":authority", authority),
                ("accept", "application/json"),
            ];
            // The SDK routes the answer to the context running now: this root context.
            let sent = proxy_wasm::hostcalls::dispatch_http_call(
                &remote.cluster,
                headers,
                None,
                vec![],
                remote.timeout,
            );
            match sent {
                Ok(token) => schedule.started(token, now, remote.timeout),
                Err(status) => {
                    schedule.failed(now);
                    FETCHES.with(&[name, "failed"]).increment(1);
                    wasmesh_sdk::log(
                        LogLevel::Warn,
                        &format!(
                            "provider {name}: cannot fetch the JWKS from cluster {} ({status:?}); retrying",
                            remote.cluster
                        ),
                    );
                }
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let Some(i) = self
            .schedules
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.is_fetch(token)))
        else {
            return; // a fetch of an earlier configuration
        };
        let now = SystemTime::now();
        let name = self.plan.providers[i].0.clone();
        let status = headers::call_response().status();
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        let parsed = match status {
            Some(200) => KeySet::parse_bytes(&body).map_err(|e| e.0),
            Some(code) => Err(format!("the JWKS endpoint answered {code}")),
            None => Err("the fetch failed or timed out".to_string()),
        };
        let Some(schedule) = self.schedules[i].as_mut() else {
            return;
        };
        match parsed {
            Ok((keys, skipped)) => {
                schedule.succeeded(now);
                FETCHES.with(&[&name, "ok"]).increment(1);
                let mut message = format!("provider {name}: loaded {} keys", keys.keys.len());
                if !skipped.is_empty() {
                    message.push_str(&format!(" (left out: {})", skipped.join("; ")));
                }
                wasmesh_sdk::log(LogLevel::Info, &message);
                if let Some(slot) = self.keys.borrow_mut().get_mut(i) {
                    slot.replace(Rc::new(keys));
                }
            }
            Err(why) => {
                schedule.failed(now);
                FETCHES.with(&[&name, "failed"]).increment(1);
                let kept = self.keys.borrow().get(i).is_some_and(|s| s.keys.is_some());
                wasmesh_sdk::log(
                    LogLevel::Warn,
                    &format!(
                        "provider {name}: JWKS fetch failed: {why}; {}",
                        if kept {
                            "keeping the keys loaded before"
                        } else {
                            "no keys yet"
                        }
                    ),
                );
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let now = SystemTime::now();
        let configured = sdk_config::configure_with(|mut config: Config| {
            config.check()?;
            let mut plan = Plan::new(config);
            let mut keys = Vec::new();
            self.schedules.clear();
            for (_, provider) in &mut plan.providers {
                keys.push(ProviderKeys {
                    keys: provider.local_jwks.take().map(|local| Rc::new(local.0)),
                    cache: TokenCache::new(provider.jwt_cache_config),
                });
                self.schedules.push(
                    provider
                        .remote_jwks
                        .as_ref()
                        .map(|r| Schedule::new(now, r.jwks_refresh)),
                );
            }
            self.plan = Rc::new(plan);
            // Requests under way keep the sets they started with; new ones see these, with
            // empty caches.
            self.keys = Rc::new(RefCell::new(keys));
            Ok(())
        });
        // Fetches start on the first tick rather than here: wasmesh drops the answers to
        // callouts sent while a VM is being configured.
        if configured && self.schedules.iter().any(Option::is_some) {
            // Ok or a panic inside the SDK; nothing to handle.
            let _ = proxy_wasm::hostcalls::set_tick_period(TICK);
        }
        configured
    }

    fn on_tick(&mut self) {
        self.fetch_due();
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Authn {
            plan: self.plan.clone(),
            keys: self.keys.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Authn {
    plan: Rc<Plan>,
    keys: Keys,
}

impl Context for Authn {}

/// How one required provider fared with the request.
enum Outcome {
    /// No token where this provider looks.
    Missing,
    /// A token, but this provider's fetched keys have not arrived.
    NoKeys,
    Failed(Failure),
}

impl Authn {
    /// Passes a verified token on: strips it unless forwarded, copies claims into headers,
    /// publishes the claims for later filters.
    fn accept(&self, provider: usize, location: &Location, verified: &Verified) {
        let (name, config) = &self.plan.providers[provider];
        if !config.forward {
            extract::strip(location);
        }
        let request = headers::request();
        for mapping in &config.claim_to_headers {
            if let Some(value) = claim(&verified.claims, &mapping.claim_name).and_then(header_text)
            {
                request.set(&mapping.header_name, &value);
            }
        }
        set_state("claims", &verified.payload);
        if let Some(Value::String(sub)) = verified.claims.get("sub") {
            set_state("sub", sub.as_bytes());
        }
        set_state("provider", name.as_bytes());
        ALLOWED.with(&[name]).increment(1);
    }

    /// Checks `token` with provider `i`'s keys, through its cache: a cached token has only its
    /// claims checked (against `expect`: now, and the provider's issuer and audiences); any
    /// other is verified in full and, if it passes, cached. `None` while the provider's keys
    /// have not arrived.
    fn verify(
        &self,
        i: usize,
        token: &str,
        expect: &Expect<'_>,
    ) -> Option<Result<Rc<Verified>, Failure>> {
        let mut all = self.keys.borrow_mut();
        let slot = all.get_mut(i)?;
        let keys = slot.keys.clone()?;
        let name = self.plan.providers[i].0.as_str();
        Some(match slot.cache.lookup(token) {
            Lookup::Hit(hash, verified) => {
                CACHE.with(&[name, "hit"]).increment(1);
                match token::check_claims(&verified.claims, expect) {
                    Ok(()) => Ok(verified),
                    Err(failure) => {
                        // Expired (or, after the clock stepped back, not yet valid): it
                        // will not pass again soon, so it does not hold a place.
                        slot.cache.remove(&hash);
                        Err(failure)
                    }
                }
            }
            Lookup::Miss(hash) => {
                CACHE.with(&[name, "miss"]).increment(1);
                let verified = token::verify(token, &keys, expect).map(Rc::new);
                if let Ok(verified) = &verified {
                    slot.cache.insert(hash, verified.clone());
                }
                verified
            }
            Lookup::Uncached => token::verify(token, &keys, expect).map(Rc::new),
        })
    }

    fn deny(&self, status: u32, challenge: Option<String>, body: &str) -> Action {
        let mut response = Response::text(status, &format!("{body}\n"));
        if let Some(challenge) = challenge {
            response = response.header("www-authenticate", &challenge);
        }
        if status == 503 {
            response = response.header("retry-after", "1");
        }
        response.send();
        Action::Pause
    }
}

/// Publishes `wasmesh.jwt.<key>` for later filters, as one name: the form Envoy can read back
/// (see `wasmesh_sdk::properties`).
fn set_state(key: &str, value: &[u8]) {
    // A stream context always has somewhere to put it; a host that refuses (a value over its
    // limits) leaves later filters without the claims, which fails closed in them.
    let _ = properties::set(&format!("wasmesh.jwt.{key}"), value);
}

/// A claim by name, or by dotted path into nested objects (`realm.tier`).
fn claim<'a>(claims: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// A claim as a header value: strings as they are, numbers and booleans as JSON writes them,
/// lists of those joined with `,`; anything else (objects, null, control characters) is
/// left out.
fn header_text(value: &Value) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let text = match value {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    (!text.chars().any(char::is_control)).then_some(text)
}

impl HttpContext for Authn {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let plan = self.plan.clone();
        let request = headers::request();
        for name in &plan.claim_headers {
            request.remove(name);
        }
        let path = request.path().map(|p| p.path).unwrap_or_default();
        let Some(planned) = plan.rules.iter().find(|r| r.rule.matcher.matches(&path)) else {
            return Action::Continue;
        };
        if planned.requires.is_empty() {
            return Action::Continue;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut outcomes = Vec::with_capacity(planned.requires.len());
        for &i in &planned.requires {
            let (_, provider) = &plan.providers[i];
            let Some((location, token)) = extract::find(provider) else {
                outcomes.push((i, Outcome::Missing));
                continue;
            };
            let expect = Expect {
                issuer: provider.issuer.as_deref(),
                audiences: &provider.audiences,
                clock_skew: provider.clock_skew_seconds,
                now,
            };
            let Some(result) = self.verify(i, &token, &expect) else {
                outcomes.push((i, Outcome::NoKeys));
                continue;
            };
            match result {
                Ok(verified) => {
                    self.accept(i, &location, &verified);
                    return Action::Continue;
                }
                Err(failure) => outcomes.push((i, Outcome::Failed(failure))),
            }
        }

        let name = |i: usize| plan.providers[i].0.as_str();
        let realm = &plan.realm;
        // A token that failed says most; then keys not loaded; then no token at all.
        if let Some((i, failure)) = outcomes.iter().find_map(|(i, o)| match o {
            Outcome::Failed(f) => Some((*i, *f)),
            _ => None,
        }) {
            DENIED.with(&[name(i), failure.reason()]).increment(1);
            wasmesh_sdk::log(
                LogLevel::Debug,
                &format!("{path}: provider {}: {}", name(i), failure.description()),
            );
            let challenge = format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                failure.description()
            );
            return self.deny(401, Some(challenge), failure.description());
        }
        if let Some((i, _)) = outcomes.iter().find(|(_, o)| matches!(o, Outcome::NoKeys)) {
            DENIED.with(&[name(*i), "jwks_unavailable"]).increment(1);
            return self.deny(
                503,
                None,
                &format!("the keys of provider {} are not loaded yet", name(*i)),
            );
        }
        if planned.rule.allow_missing {
            return Action::Continue;
        }
        DENIED
            .with(&[name(planned.requires[0]), "missing"])
            .increment(1);
        self.deny(
            401,
            Some(format!("Bearer realm=\"{realm}\"")),
            "a bearer token is required",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_by_name_and_path() {
        let claims = serde_json::json!({"sub": "alice", "https://x/roles": ["a", "b"],
                                        "realm": {"tier": 2, "deep": {"x": true}}, "o": {}});
        let claims = claims.as_object().expect("object");
        let text = |name: &str| claim(claims, name).and_then(header_text);
        assert_eq!(text("sub").as_deref(), Some("alice"));
        assert_eq!(text("https://x/roles").as_deref(), Some("a,b"));
        assert_eq!(text("realm.tier").as_deref(), Some("2"));
        assert_eq!(text("realm.deep.x").as_deref(), Some("true"));
        assert_eq!(text("o"), None, "objects are left out");
        assert_eq!(text("realm.none"), None);
        assert_eq!(text("sub.x"), None);
        assert_eq!(header_text(&serde_json::json!("a\r\nb")), None);
        assert_eq!(header_text(&serde_json::json!([1, {"x": 1}])), None);
    }
}
