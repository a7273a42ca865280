//! Shared data: get and set with CAS (conflicts included), persistence across requests, and
//! isolation by `vm_id`, with several plugins of one `vm_id` side by side.

use std::sync::Arc;

use wasmesh_host::HttpStream;

use crate::capture;
use crate::check::{Check, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env::{self, NoAttributes};
use crate::net::upstream::Upstream;
use crate::observe::{Facts, Run};
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "shared-data";
const VM: &str = "conf-shared";
const OTHER_VM: &str = "conf-shared-other";

fn non_zero(value: &str, _: &Facts) -> bool {
    value.parse::<u32>().is_ok_and(|v| v != 0)
}

fn changed(value: &str, _: &Facts) -> bool {
    let mut parts = value
        .split(' ')
        .filter_map(|p| p.split_once('=').map(|(_, v)| v));
    matches!((parts.next(), parts.next()), (Some(a), Some(b)) if a != b)
}

pub fn checks() -> Vec<Check> {
    const GET: &str =
        "spec v0.2.1 proxy_get_shared_data: the value and its CAS, NOT_FOUND for a missing key";
    const SET: &str = "spec v0.2.1 proxy_set_shared_data: a non-zero cas must match the value's current CAS, else CAS_MISMATCH (cpp-host SharedData::set)";
    const SHARED: &str = "Envoy (cpp-host shared_data.cc): shared data belongs to the vm_id, shared by every VM and plugin of it";
    vec![
        eq("shared.get_missing", "NOT_FOUND", GET)
            .proves(&["proxy_get_shared_data", "proxy_status_t"]),
        eq("shared.set_unconditional", "OK", SET).proves(&["proxy_set_shared_data"]),
        eq("shared.get_after_set", "OK v1", GET).proves(&["proxy_get_shared_data"]),
        Check::new(
            "shared.cas_after_set",
            Expect::Holds("a non-zero CAS", non_zero),
            "Envoy (cpp-host SharedData): every write gets a new non-zero CAS",
        )
        .proves(&["proxy_get_shared_data"]),
        eq("shared.set_with_current_cas", "OK", SET).proves(&["proxy_set_shared_data"]),
        Check::new(
            "shared.cas_changed",
            Expect::Holds("a new CAS after the write", changed),
            "Envoy (cpp-host SharedData): every write gets a new CAS",
        )
        .proves(&["proxy_set_shared_data", "proxy_get_shared_data"]),
        eq("shared.set_with_stale_cas", "CAS_MISMATCH", SET)
            .proves(&["proxy_set_shared_data", "proxy_status_t"]),
        eq("shared.value_after_mismatch", "OK v2", SET).proves(&["proxy_set_shared_data"]),
        eq("shared.read_later", "OK v2", SHARED).proves(&["proxy_get_shared_data"]),
        eq("shared.same_vm_get", "OK v2", SHARED).proves(&["proxy_get_shared_data"]),
        eq("shared.other_vm_get", "NOT_FOUND", SHARED).proves(&["proxy_get_shared_data"]),
        eq("shared.race_writer", "OK", SET).proves(&["proxy_set_shared_data"]),
        eq("shared.race_stale_cas", "CAS_MISMATCH", SET).proves(&["proxy_set_shared_data"]),
        eq("shared.race_value", "OK b", SET).proves(&["proxy_set_shared_data"]),
    ]
}

const ROLES: [(&str, &str); 4] = [
    ("same-vm", VM),
    ("other-vm", OTHER_VM),
    ("race-a", VM),
    ("race-b", VM),
];

fn headers(mode: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        (":method".into(), b"GET".to_vec()),
        (":path".into(), b"/shared".to_vec()),
        (":authority".into(), b"conformance.local".to_vec()),
        ("x-probe-mode".into(), mode.as_bytes().to_vec()),
    ]
}

pub fn host() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let main = host_env::load_with(wasm, "shared-main", |b| b.vm_id(VM).plugin_config("main"))?;
    let mut names = Vec::new();
    let mut streams: Vec<HttpStream> = Vec::new();
    let mut first = main.harness.http_stream().doing("a stream")?;
    let request: Vec<(&str, &str)> = vec![
        (":method", "GET"),
        (":path", "/shared"),
        (":authority", "conformance.local"),
        ("x-probe-mode", "sequence"),
    ];
    first
        .send_request_headers(&request, true)
        .doing("request headers")?;
    // The chain's order: the others' request callbacks, then the responses in reverse.
    for (role, vm) in ROLES {
        let (plugin, name) =
            host_env::load_beside(&main.harness, wasm, &format!("shared-{role}"), vm, role)?;
        names.push(name);
        let mut stream = plugin
            .http_stream(Arc::new(NoAttributes))
            .doing("a stream")?;
        stream.data.request_headers = headers("sequence");
        stream.on_request_headers(true).doing("request headers")?;
        streams.push(stream);
    }
    for stream in streams.iter_mut().rev() {
        stream.data.response_headers = vec![(":status".into(), b"200".to_vec())];
        stream.on_response_headers(true).doing("response headers")?;
    }
    drop(streams);
    let mut later = main.harness.http_stream().doing("a stream")?;
    let request: Vec<(&str, &str)> = vec![
        (":method", "GET"),
        (":path", "/shared"),
        (":authority", "conformance.local"),
        ("x-probe-mode", "read"),
    ];
    later
        .send_request_headers(&request, true)
        .doing("request headers")?;
    let mut run = Run::default();
    run.harness(&main.harness);
    for name in &names {
        run.lines(name);
    }
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("shared").await?;
    let main = capture::unique("shared-main");
    let mut names = vec![main.clone()];
    let mut plugins = proxy_env::plugin(&main, wasm, "main", VM);
    for (role, vm) in ROLES {
        let name = capture::unique(&format!("shared-{role}"));
        plugins += &proxy_env::plugin(&name, wasm, role, vm);
        names.push(name);
    }
    let yaml = proxy_env::config(upstream.addr, &plugins, "", "", "");
    Proxy::with(&yaml, async |proxy: &Proxy| {
        proxy
            .get("/shared", &[("x-probe-mode", "sequence")])
            .await?;
        proxy.get("/shared", &[("x-probe-mode", "read")]).await?;
        Ok(())
    })
    .await?;
    let mut run = Run::default();
    for name in &names {
        run.lines(name);
    }
    Ok(run)
}
