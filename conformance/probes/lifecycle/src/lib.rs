//! Lifecycle and contexts probe (raw ABI v0.2.1 exports, no SDK).
//!
//! Observes, for the suite to compare with the spec:
//! - `lifecycle.root_parent`: the parent id the root context is created with;
//! - `lifecycle.vm_start_context`, `lifecycle.configure_context`: which context `on_vm_start`
//!   and `on_configure` are called for, next to the root id (`context=<id> root=<id>`);
//! - `lifecycle.stream_parent`: a stream context's parent next to the root id;
//! - `lifecycle.context_id_fresh`: whether a new stream context's id was never seen before;
//! - `lifecycle.stream_order`: the lifecycle callbacks one stream context got, in order;
//! - `lifecycle.on_log_request_header`, `lifecycle.on_log_response_status`: maps read in
//!   `on_log`;
//! - `lifecycle.set_effective_context_self|root|unknown`, `lifecycle.proxy_done_not_pending`:
//!   statuses;
//! - at teardown (configuration `root-done-true` or `root-done-false`, what `on_done` answers
//!   for the root context): `lifecycle.root_teardown` (the root context's callbacks in order),
//!   or, when `on_done` said false, `lifecycle.root_on_delete_while_pending` if the host
//!   deletes the root context before the plugin called `proxy_done`;
//! - with configuration `root-done-on-tick`, `on_done` says false and starts a timer; the next
//!   tick calls `proxy_done` (`lifecycle.proxy_done_pending`: its status), and `on_delete`
//!   then reports the root context's callbacks (`lifecycle.root_delete_after_done`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use wasmesh_conformance_probe_support::{self as s, map};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[derive(Default)]
struct State {
    root: u32,
    root_events: Vec<&'static str>,
    /// What `on_done` answers for the root context.
    root_done: bool,
    /// `root-done-on-tick`: finish on the first tick after `on_done`.
    finish_on_tick: bool,
    /// `proxy_done` was called (and answered OK).
    finished: bool,
    seen: BTreeSet<u32>,
    streams: BTreeMap<u32, Vec<&'static str>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State { root_done: true, ..State::default() });
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn root() -> u32 {
    with(|s| s.root)
}

fn event(ctx: u32, name: &'static str) {
    with(|s| {
        if let Some(events) = s.streams.get_mut(&ctx) {
            events.push(name);
        }
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(ctx: u32, parent: u32) {
    if parent == 0 {
        with(|s| {
            s.root = ctx;
            s.root_events.push("create");
            s.seen.insert(ctx);
        });
        s::observe("lifecycle.root_parent", parent);
        return;
    }
    let fresh = with(|s| s.seen.insert(ctx));
    s::observe(
        "lifecycle.stream_parent",
        format!("parent={parent} root={}", root()),
    );
    s::observe("lifecycle.context_id_fresh", fresh);
    with(|s| s.streams.insert(ctx, vec!["create"]));
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(ctx: u32, _size: u32) -> u32 {
    with(|s| s.root_events.push("vm_start"));
    s::observe(
        "lifecycle.vm_start_context",
        format!("context={ctx} root={}", root()),
    );
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(ctx: u32, _size: u32) -> u32 {
    let config = s::plugin_config();
    let config = config.trim();
    with(|s| {
        s.root_events.push("configure");
        s.root_done = config != "root-done-false" && config != "root-done-on-tick";
        s.finish_on_tick = config == "root-done-on-tick";
    });
    s::observe(
        "lifecycle.configure_context",
        format!("context={ctx} root={}", root()),
    );
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(ctx: u32, _n: u32, _eos: u32) -> u32 {
    event(ctx, "request_headers");
    // SAFETY: plain integer arguments.
    unsafe {
        s::observe_status(
            "lifecycle.set_effective_context_root",
            s::raw::proxy_set_effective_context(root()),
        );
        s::observe_status(
            "lifecycle.set_effective_context_self",
            s::raw::proxy_set_effective_context(ctx),
        );
        s::observe_status(
            "lifecycle.set_effective_context_unknown",
            s::raw::proxy_set_effective_context(0x7fff_fff0),
        );
        // Nothing is pending finalization: on_done has not even been called.
        s::observe_status("lifecycle.proxy_done_not_pending", s::raw::proxy_done());
    }
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(ctx: u32, _n: u32, _eos: u32) -> u32 {
    event(ctx, "response_headers");
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_done(ctx: u32) -> u32 {
    if ctx == root() {
        let (done, finish_on_tick) = with(|s| {
            s.root_events.push("done");
            (s.root_done, s.finish_on_tick)
        });
        if finish_on_tick {
            // SAFETY: a plain integer argument.
            unsafe { s::raw::proxy_set_tick_period_milliseconds(10) };
        } else {
            s::observe("lifecycle.root_on_done", "called");
        }
        return u32::from(done);
    }
    event(ctx, "done");
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_log(ctx: u32) {
    event(ctx, "log");
    s::observe_result(
        "lifecycle.on_log_request_header",
        s::get_value(map::HTTP_REQUEST_HEADERS, "x-conformance"),
    );
    s::observe_result(
        "lifecycle.on_log_response_status",
        s::get_value(map::HTTP_RESPONSE_HEADERS, ":status"),
    );
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(ctx: u32) {
    if ctx == root() {
        let (events, done, finished) = with(|s| {
            s.root_events.push("delete");
            (s.root_events.join(","), s.root_done, s.finished)
        });
        if finished {
            s::observe("lifecycle.root_delete_after_done", events);
        } else if done {
            s::observe("lifecycle.root_teardown", events);
        } else {
            s::observe("lifecycle.root_on_delete_while_pending", "called");
        }
        return;
    }
    event(ctx, "delete");
    if let Some(events) = with(|s| s.streams.remove(&ctx)) {
        s::observe("lifecycle.stream_order", events.join(","));
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(ctx: u32) {
    let due = with(|s| ctx == s.root && s.finish_on_tick && !s.finished);
    if !due {
        return;
    }
    // SAFETY: no arguments; then a plain integer argument.
    let status = unsafe { s::raw::proxy_done() };
    s::observe_status("lifecycle.proxy_done_pending", status);
    with(|s| {
        s.finished = status == 0;
        s.root_events.push("proxy_done");
    });
    // SAFETY: a plain integer argument.
    unsafe { s::raw::proxy_set_tick_period_milliseconds(0) };
}
