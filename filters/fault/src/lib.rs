//! `fault`: Envoy-style fault injection. A **delay** holds a request for a fixed time (or the
//! time a request header asks for) before it goes upstream; an **abort** answers a request
//! itself with an HTTP status or, for gRPC, a `grpc-status`. Each applies to a percentage of
//! requests, or to those carrying Envoy's fault headers (`x-fault-delay-request`,
//! `x-fault-abort-request`, … — Envoy's `x-envoy-fault-*` names without `envoy`) when header
//! control is on; at most `max_active_faults` delayed requests are held at once. Written
//! with `wasmesh-sdk`.
//!
//! Configuration (the plugin `config`, JSON):
//!
//! ```json
//! {
//!   "delay": {"fixed_delay": "2s", "percentage": 10, "header_control": true},
//!   "abort": {"http_status": 503, "grpc_status": 14, "percentage": 1},
//!   "max_active_faults": 100
//! }
//! ```
//!
//! A delayed request is paused in `on_http_request_headers`; the root context keeps when
//! each held stream is due and, from `on_tick`, switches to it (`set_effective_context`) and
//! resumes it — or sends its abort, when it is both delayed and aborted, as Envoy aborts
//! after the delay. The full reference is the crate's `README.md`.
//!
//! Modules: [`config`] (schema and checks), [`decide`] (which fault a request gets),
//! [`duration`] (`"1s"`-style durations, from the SDK).

pub mod config;
pub mod decide;
pub use wasmesh_sdk::duration;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use wasmesh_sdk::metrics::{Counter, Gauge};
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::router::Response;
use wasmesh_sdk::{config as sdk_config, headers};

use config::Config;
use decide::AbortWith;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            plan: Rc::new(Config::default()),
            held: Rc::default(),
        })
    });
}}

static DELAYS: Counter = Counter::new("fault_delays_injected_total");
static ABORTS: Counter = Counter::new("fault_aborts_injected_total");
static OVERFLOW: Counter = Counter::new("fault_active_overflow_total");
static ACTIVE: Gauge = Gauge::new("fault_active_delays");

/// One held (delayed) stream.
#[derive(Debug)]
struct Entry {
    context_id: u32,
    release_at_ns: u64,
    /// Sent when the delay is over instead of resuming.
    abort: Option<AbortWith>,
}

/// The streams this VM replica holds, shared by the root context and the streams.
#[derive(Debug, Default)]
struct Held {
    entries: Vec<Entry>,
}

impl Held {
    /// Forgets a stream (released, aborted, or gone); whether it was held.
    fn remove(&mut self, context_id: u32) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.context_id != context_id);
        let removed = self.entries.len() != before;
        if removed {
            ACTIVE.add(-1);
        }
        removed
    }
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether a request falls in `percentage` (0 to 100), drawn from WASI's random source.
fn draw(percentage: f64) -> bool {
    if percentage >= 100.0 {
        return true;
    }
    if percentage <= 0.0 || percentage.is_nan() {
        return false;
    }
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: inject nothing rather than everything.
        return false;
    }
    f64::from(u32::from_le_bytes(bytes)) / 4_294_967_296.0 * 100.0 < percentage
}

/// Answers the current stream with the abort.
fn send_abort(abort: AbortWith) {
    match abort {
        AbortWith::Http(status) => {
            Response::text(u32::from(status), "fault filter abort\n").send();
        }
        AbortWith::Grpc(code) => {
            // A trailers-only gRPC answer: HTTP 200 whose headers carry the status.
            let code = code.to_string();
            let _ = hostcalls::send_http_response(
                200,
                vec![
                    ("content-type", "application/grpc"),
                    ("grpc-status", &code),
                    ("grpc-message", "fault filter abort"),
                ],
                None,
            );
        }
    }
    ABORTS.increment(1);
}

struct Root {
    plan: Rc<Config>,
    held: Rc<RefCell<Held>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        sdk_config::configure_with(|config: Config| {
            config.check()?;
            // Ticks release delayed requests; without delays there is nothing to release.
            let period = if config.delay.is_some() {
                config.tick_interval.0
            } else {
                std::time::Duration::ZERO
            };
            let _ = hostcalls::set_tick_period(period);
            self.plan = Rc::new(config);
            Ok(())
        })
    }

    fn on_tick(&mut self) {
        let now = now_ns();
        let mut held = self.held.borrow_mut();
        let mut due: Vec<Entry> = Vec::new();
        let mut waiting: Vec<Entry> = Vec::new();
        for entry in held.entries.drain(..) {
            if entry.release_at_ns <= now {
                due.push(entry);
            } else {
                waiting.push(entry);
            }
        }
        due.sort_by_key(|e| e.release_at_ns);
        // The host gives a root callback the data of the first paused stream it switches
        // to; switching to a second one still resumes it, but an answer sent there would go
        // to the first stream's data. So at most one abort per tick, and it is sent first;
        // the others stay due for the next tick.
        let mut switched = false;
        if let Some(first) = due.iter().position(|e| e.abort.is_some()) {
            let entry = due.remove(first);
            if hostcalls::set_effective_context(entry.context_id).is_ok()
                && let Some(abort) = entry.abort
            {
                send_abort(abort);
            }
            ACTIVE.add(-1);
            switched = true;
        }
        for entry in due {
            if entry.abort.is_some() && switched {
                waiting.push(entry);
                continue;
            }
            if hostcalls::set_effective_context(entry.context_id).is_ok() {
                let _ = hostcalls::resume_http_request();
            }
            ACTIVE.add(-1);
            switched = true;
        }
        held.entries = waiting;
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Fault {
            plan: self.plan.clone(),
            held: self.held.clone(),
            context_id,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request through the filter.
struct Fault {
    plan: Rc<Config>,
    held: Rc<RefCell<Held>>,
    context_id: u32,
}

impl Drop for Fault {
    /// A stream that ends while held (the client went away) is forgotten.
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.try_borrow_mut() {
            held.remove(self.context_id);
        }
    }
}

impl Context for Fault {}

impl HttpContext for Fault {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let plan = self.plan.clone();
        let request = headers::request();
        let header = |name: &str| request.get(name);
        let mut random = draw;
        let delay = plan
            .delay
            .as_ref()
            .and_then(|d| d.decide(&header, &mut random));
        let grpc = request
            .get("content-type")
            .is_some_and(|c| c.starts_with("application/grpc"));
        let abort = plan
            .abort
            .as_ref()
            .and_then(|a| a.decide(&header, grpc, &mut random));
        if delay.is_none() && abort.is_none() {
            return Action::Continue;
        }
        let mut held = self.held.borrow_mut();
        if let Some(max) = plan.max_active_faults
            && held.entries.len() >= max as usize
        {
            OVERFLOW.increment(1);
            return Action::Continue;
        }
        match (delay, abort) {
            (Some(delay), abort) => {
                let release_at_ns =
                    now_ns().saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
                held.entries.push(Entry {
                    context_id: self.context_id,
                    release_at_ns,
                    abort,
                });
                DELAYS.increment(1);
                ACTIVE.add(1);
                Action::Pause
            }
            (None, Some(abort)) => {
                send_abort(abort);
                Action::Pause
            }
            (None, None) => Action::Continue,
        }
    }
}
