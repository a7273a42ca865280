//! Shared-data probe (raw ABI v0.2.1 exports, no SDK). Its plugin configuration is its role;
//! the suite runs several instances of it side by side (same or different `vm_id`):
//!
//! - `main`: on a request with `x-probe-mode: sequence`, runs the CAS sequence on key `k`
//!   (set, get, set with the current CAS, set with a stale CAS, get); with `read`, reads `k`
//!   again (a later request);
//! - `same-vm` / `other-vm`: read `k` (an instance in the same / another `vm_id`);
//! - `race-a`: reads key `race` and its CAS on the request, and writes it back with that CAS on
//!   the response — after `race-b`, in the same `vm_id`, wrote it in between;
//! - `race-b`: writes `race` unconditionally on the request.

use std::cell::RefCell;
use std::collections::BTreeMap;

use wasmesh_conformance_probe_support as s;

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

thread_local! {
    static ROLE: RefCell<String> = const { RefCell::new(String::new()) };
    static RACE_CAS: RefCell<BTreeMap<u32, u32>> = const { RefCell::new(BTreeMap::new()) };
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_ctx: u32, _size: u32) -> u32 {
    let role = s::plugin_config().trim().to_string();
    ROLE.with(|r| *r.borrow_mut() = role);
    1
}

fn shown(result: (u32, Option<Vec<u8>>, u32)) -> String {
    match result {
        (0, Some(v), _) => format!("OK {}", s::show(&v)),
        (status, _, _) => s::status_name(status),
    }
}

fn sequence() {
    s::observe(
        "shared.get_missing",
        shown(s::get_shared_data("conf-never-set")),
    );
    s::observe_status(
        "shared.set_unconditional",
        s::set_shared_data("k", b"v1", 0),
    );
    let (status, value, cas1) = s::get_shared_data("k");
    s::observe("shared.get_after_set", shown((status, value, cas1)));
    s::observe("shared.cas_after_set", cas1);
    s::observe_status(
        "shared.set_with_current_cas",
        s::set_shared_data("k", b"v2", cas1),
    );
    let (_, _, cas2) = s::get_shared_data("k");
    s::observe("shared.cas_changed", format!("before={cas1} after={cas2}"));
    s::observe_status(
        "shared.set_with_stale_cas",
        s::set_shared_data("k", b"v3", cas1),
    );
    s::observe(
        "shared.value_after_mismatch",
        shown(s::get_shared_data("k")),
    );
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(ctx: u32, _n: u32, _eos: u32) -> u32 {
    let role = ROLE.with(|r| r.borrow().clone());
    let mode = s::request_header("x-probe-mode").unwrap_or_default();
    match (role.as_str(), mode.as_str()) {
        ("main", "sequence") => sequence(),
        ("main", "read") => s::observe("shared.read_later", shown(s::get_shared_data("k"))),
        ("same-vm", "sequence") => s::observe("shared.same_vm_get", shown(s::get_shared_data("k"))),
        ("other-vm", "sequence") => {
            s::observe("shared.other_vm_get", shown(s::get_shared_data("k")))
        }
        ("race-a", "sequence") => {
            if s::get_shared_data("race").0 != 0 {
                s::set_shared_data("race", b"init", 0);
            }
            let (_, _, cas) = s::get_shared_data("race");
            RACE_CAS.with(|r| r.borrow_mut().insert(ctx, cas));
        }
        ("race-b", "sequence") => {
            s::observe_status("shared.race_writer", s::set_shared_data("race", b"b", 0))
        }
        _ => {}
    }
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(ctx: u32, _n: u32, _eos: u32) -> u32 {
    if let Some(cas) = RACE_CAS.with(|r| r.borrow_mut().remove(&ctx)) {
        s::observe_status(
            "shared.race_stale_cas",
            s::set_shared_data("race", b"a", cas),
        );
        s::observe("shared.race_value", shown(s::get_shared_data("race")));
    }
    s::CONTINUE
}
