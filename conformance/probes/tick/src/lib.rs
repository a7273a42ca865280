//! Tick probe (raw ABI v0.2.1 exports, no SDK, so the context `proxy_on_tick` runs for is
//! visible). `on_configure` asks for a tick every 100 ms; the first tick changes the period to
//! 50 ms and the third sets it to 0 (stop). Observes the statuses, the context of each tick
//! next to the root id, `tick.fired 3` on the third tick, and `tick.after_stop` if any tick
//! comes after the stop.

use std::cell::Cell;

use wasmesh_conformance_probe_support::{self as s, raw};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

thread_local! {
    static ROOT: Cell<u32> = const { Cell::new(0) };
    static TICKS: Cell<u32> = const { Cell::new(0) };
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(ctx: u32, parent: u32) {
    if parent == 0 {
        ROOT.with(|r| r.set(ctx));
    }
}

fn set_period(ms: u32) -> u32 {
    // SAFETY: a plain integer argument.
    unsafe { raw::proxy_set_tick_period_milliseconds(ms) }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_ctx: u32, _size: u32) -> u32 {
    s::observe_status("tick.set_period_status", set_period(100));
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(ctx: u32) {
    let n = TICKS.with(|t| {
        t.set(t.get() + 1);
        t.get()
    });
    if n > 3 {
        s::observe("tick.after_stop", "fired");
        return;
    }
    s::observe(
        "tick.context",
        format!("context={ctx} root={}", ROOT.with(Cell::get)),
    );
    match n {
        1 => s::observe_status("tick.change_period_status", set_period(50)),
        3 => {
            s::observe_status("tick.stop_status", set_period(0));
            s::observe("tick.fired", n);
        }
        _ => {}
    }
}
