//! Properties probe (raw ABI v0.2.1 exports, no SDK).
//!
//! Its plugin configuration lists what to read, one `<phase> <dotted.path>` per line, phase
//! being `request_headers`, `response_headers` or `log`; each read is observed as
//! `prop.<dotted.path>` (`prop.log.<dotted.path>` in `on_log`) = `OK <hex of the bytes>` or the
//! status (the suite knows how Envoy
//! encodes each attribute). It also sets a property of its own in `on_request_headers` and
//! reads it back (`prop.set_status`, `prop.set_then_get`).

use std::cell::RefCell;

use wasmesh_conformance_probe_support as s;

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

thread_local! {
    static READS: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_ctx: u32, _size: u32) -> u32 {
    let config = s::plugin_config();
    let reads = config
        .lines()
        .filter_map(|line| {
            let (phase, path) = line.trim().split_once(' ')?;
            Some((phase.to_string(), path.trim().to_string()))
        })
        .collect();
    READS.with(|r| *r.borrow_mut() = reads);
    1
}

fn read(phase: &str) {
    let paths: Vec<String> = READS.with(|r| {
        r.borrow()
            .iter()
            .filter(|(p, _)| p == phase)
            .map(|(_, path)| path.clone())
            .collect()
    });
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        let shown = match s::get_property(&segments) {
            (0, Some(v)) => format!("OK {}", s::hex(&v)),
            (status, _) => s::status_name(status),
        };
        // Reads in on_log are told apart: some attributes only exist by then.
        let id = if phase == "log" {
            format!("prop.log.{path}")
        } else {
            format!("prop.{path}")
        };
        s::observe(&id, shown);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _n: u32, _eos: u32) -> u32 {
    read("request_headers");
    s::observe_status(
        "prop.set_status",
        s::set_property(&["conformance", "state"], b"v1"),
    );
    let shown = match s::get_property(&["conformance", "state"]) {
        (0, Some(v)) => format!("OK {}", s::hex(&v)),
        (status, _) => s::status_name(status),
    };
    s::observe("prop.set_then_get", shown);
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(_ctx: u32, _n: u32, _eos: u32) -> u32 {
    read("response_headers");
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_log(_ctx: u32) {
    read("log");
}
