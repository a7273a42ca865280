//! Metrics probe (raw ABI v0.2.1 exports, no SDK). On a request it defines a counter
//! (`conf_counter`), a gauge (`conf_gauge`) and a histogram (`conf_histogram`), changes them and
//! reads them back, and observes the statuses of misuse: decrementing a counter, unknown
//! metric ids, an unknown metric type.

use wasmesh_conformance_probe_support::{self as s, raw};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

fn define(ty: u32, name: &str) -> (u32, u32) {
    let mut id = 0u32;
    // SAFETY: the pointer and length describe `name`; the id is a local.
    let status = unsafe { raw::proxy_define_metric(ty, name.as_ptr(), name.len(), &mut id) };
    (status, id)
}

fn get(id: u32) -> String {
    let mut value = 0u64;
    // SAFETY: the out-pointer is a local.
    let status = unsafe { raw::proxy_get_metric(id, &mut value) };
    if status == 0 {
        format!("OK {}", value as i64)
    } else {
        s::status_name(status)
    }
}

fn increment(id: u32, delta: i64) -> String {
    // SAFETY: plain integer arguments.
    s::status_name(unsafe { raw::proxy_increment_metric(id, delta) })
}

fn record(id: u32, value: u64) -> String {
    // SAFETY: plain integer arguments.
    s::status_name(unsafe { raw::proxy_record_metric(id, value) })
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _n: u32, _eos: u32) -> u32 {
    let (cs, counter) = define(0, "conf_counter");
    let (gs, gauge) = define(1, "conf_gauge");
    let (hs, histogram) = define(2, "conf_histogram");
    s::observe(
        "metrics.define_status",
        format!(
            "{} {} {}",
            s::status_name(cs),
            s::status_name(gs),
            s::status_name(hs)
        ),
    );
    s::observe(
        "metrics.counter_increment",
        format!("{} {}", increment(counter, 5), increment(counter, 1)),
    );
    s::observe("metrics.counter_value", get(counter));
    s::observe("metrics.counter_decrement", increment(counter, -1));
    s::observe("metrics.counter_after_decrement", get(counter));
    s::observe("metrics.gauge_record", record(gauge, 42));
    s::observe("metrics.gauge_value", get(gauge));
    s::observe("metrics.gauge_decrement", increment(gauge, -2));
    s::observe("metrics.gauge_after_decrement", get(gauge));
    s::observe("metrics.histogram_record", record(histogram, 7));
    const UNKNOWN: u32 = 0x7fff_fff0;
    s::observe("metrics.get_unknown", get(UNKNOWN));
    s::observe("metrics.increment_unknown", increment(UNKNOWN, 1));
    s::observe("metrics.record_unknown", record(UNKNOWN, 1));
    s::observe_status("metrics.define_bad_type", define(3, "conf_bad").0);
    s::CONTINUE
}
