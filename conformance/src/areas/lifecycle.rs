//! Lifecycle and contexts: root and stream context creation, the order of the lifecycle
//! callbacks, the effective context, `proxy_done`, and the root context's teardown.

use std::time::Duration;

use crate::capture;
use crate::check::{Check, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::observe::{Facts, Run};
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "lifecycle";

/// `context=<a> root=<b>` or `parent=<a> root=<b>` with a == b.
pub fn same_as_root(value: &str, _: &Facts) -> bool {
    let mut ids = value
        .split(' ')
        .filter_map(|part| part.split_once('=').map(|(_, v)| v));
    matches!((ids.next(), ids.next()), (Some(a), Some(b)) if a == b && a != "0")
}

pub fn checks() -> Vec<Check> {
    const CREATE: &str = "spec v0.2.1 proxy_on_context_create: parent 0 creates a plugin (root) context, otherwise a stream context of that plugin context";
    vec![
        eq("lifecycle.abi_version", "0.2.1", "spec abi-versions/README.md: the module declares its ABI version by exporting proxy_abi_version_0_2_1")
            .proves(&["proxy_abi_version_0_2_1"]),
        eq("lifecycle.root_parent", "0", CREATE).proves(&["proxy_on_context_create"]),
        Check::new("lifecycle.stream_parent", Expect::Holds("the parent is the root context", same_as_root), CREATE)
            .proves(&["proxy_on_context_create"]),
        eq("lifecycle.context_id_fresh", "true", "Envoy (cpp-host WasmBase::allocContextId): context ids are never reused")
            .proves(&["proxy_on_context_create"]),
        Check::new("lifecycle.vm_start_context", Expect::Holds("called for the root context", same_as_root),
            "Envoy (cpp-host ContextBase::onStart) calls proxy_on_vm_start with the root context's id (the spec leaves the argument unused)")
            .proves(&["proxy_on_vm_start"]),
        Check::new("lifecycle.configure_context", Expect::Holds("called for the root context", same_as_root),
            "spec v0.2.1 proxy_on_configure(plugin_context_id, …)")
            .proves(&["proxy_on_configure"]),
        eq("lifecycle.stream_order", "create,request_headers,response_headers,done,log,delete",
            "spec v0.2.1 Context lifecycle: proxy_on_done, then proxy_on_log and proxy_on_delete once it returned true")
            .proves(&["proxy_on_context_create", "proxy_on_done", "proxy_on_log", "proxy_on_delete", "proxy_on_request_headers", "proxy_on_response_headers"]),
        eq("lifecycle.on_log_request_header", "OK conformance", "spec v0.2.1 HTTP fields: HTTP_REQUEST_HEADERS can be read in proxy_on_log")
            .proves(&["proxy_on_log"]),
        eq("lifecycle.on_log_response_status", "OK 200", "spec v0.2.1 HTTP fields: HTTP_RESPONSE_HEADERS can be read in proxy_on_log")
            .proves(&["proxy_on_log"]),
        eq("lifecycle.set_effective_context_root", "OK", "spec v0.2.1 proxy_set_effective_context: OK on success")
            .proves(&["proxy_set_effective_context"]),
        eq("lifecycle.set_effective_context_self", "OK", "spec v0.2.1 proxy_set_effective_context: OK on success")
            .proves(&["proxy_set_effective_context"]),
        eq("lifecycle.set_effective_context_unknown", "BAD_ARGUMENT", "spec v0.2.1 proxy_set_effective_context: BAD_ARGUMENT for an unknown context_id")
            .proves(&["proxy_set_effective_context", "proxy_status_t"]),
        eq("lifecycle.proxy_done_not_pending", "NOT_FOUND", "spec v0.2.1 proxy_done: NOT_FOUND when the active context was not pending finalization (cpp-host WasmBase::done)")
            .proves(&["proxy_done"]),
        eq("lifecycle.root_on_done", "called", "Envoy (cpp-host WasmBase::startShutdown) calls proxy_on_done on each root context when its plugin goes away")
            .proves(&["proxy_on_done"]),
        eq("lifecycle.root_teardown", "create,vm_start,configure,done,delete",
            "spec v0.2.1: context created, VM started, plugin configured; at the end proxy_on_done then proxy_on_delete (cpp-host startShutdown)")
            .proves(&["proxy_on_delete", "proxy_on_vm_start", "proxy_on_configure"]),
        eq("lifecycle.proxy_done_pending", "OK",
            "spec v0.2.1 proxy_done: OK from a root context pending finalization (its proxy_on_done returned false), which a tick still reaches (cpp-host WasmBase::done)")
            .proves(&["proxy_done", "proxy_on_tick"]),
        eq("lifecycle.root_delete_after_done", "create,vm_start,configure,done,proxy_done,delete",
            "spec v0.2.1 proxy_on_done: false means the plugin calls proxy_done later, and proxy_on_delete follows (cpp-host WasmBase::done)")
            .proves(&["proxy_on_done", "proxy_done", "proxy_on_delete"]),
        Check::new("lifecycle.root_on_delete_while_pending", Expect::Absent,
            "spec v0.2.1 proxy_on_done: false means the plugin calls proxy_done later; proxy_on_delete comes only after that (cpp-host keeps the root context in pending_done_)")
            .proves(&["proxy_on_done", "proxy_done"]),
    ]
}

fn request_headers() -> [(&'static str, &'static str); 4] {
    [
        (":method", "GET"),
        (":path", "/lifecycle"),
        (":authority", "conformance.local"),
        ("x-conformance", "conformance"),
    ]
}

pub fn host() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let mut run = Run::default();
    // A host of its own, whose services keep every line: the root contexts' last callbacks
    // come when the plugins are dropped.
    let (host, recorder) = host_env::recorded_host()?;
    let (done, done_name) = host_env::load_on(&host, wasm, "lifecycle", "root-done-true")?;
    let (pending, pending_name) =
        host_env::load_on(&host, wasm, "lifecycle-pending", "root-done-false")?;
    let (later, later_name) =
        host_env::load_on(&host, wasm, "lifecycle-later", "root-done-on-tick")?;
    for _ in 0..2 {
        let mut stream = done
            .http_stream(std::sync::Arc::new(host_env::NoAttributes))
            .doing("a stream")?;
        stream.data.request_headers = request_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        stream.on_request_headers(true).doing("request headers")?;
        stream.data.response_headers = vec![(":status".into(), b"200".to_vec())];
        stream
            .on_response_headers(false)
            .doing("response headers")?;
        stream.data.response_body = b"ok".to_vec();
        stream.on_response_body(true).doing("response body")?;
    }
    run.obs
        .add("lifecycle.abi_version", version(done.abi_version()));
    // The embedder begins the end; the pending root finishes on a tick, then is deleted.
    later.begin_shutdown();
    later.tick().doing("a tick after on_done")?;
    drop(done);
    drop(pending);
    drop(later);
    for name in [&done_name, &pending_name, &later_name] {
        run.obs.add_lines(&recorder.lines(name));
    }
    Ok(run)
}

pub fn version(abi: wasmesh_host::AbiVersion) -> String {
    match abi {
        wasmesh_host::AbiVersion::V0_1_0 => "0.1.0",
        wasmesh_host::AbiVersion::V0_2_0 => "0.2.0",
        wasmesh_host::AbiVersion::V0_2_1 => "0.2.1",
    }
    .to_string()
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("lifecycle").await?;
    let done = capture::unique("lifecycle");
    let pending = capture::unique("lifecycle-pending");
    let later = capture::unique("lifecycle-later");
    let plugins = proxy_env::plugin(&done, wasm, "root-done-true", "")
        + &proxy_env::plugin(&pending, wasm, "root-done-false", "")
        + &proxy_env::plugin(&later, wasm, "root-done-on-tick", "");
    let yaml = proxy_env::config(upstream.addr, &plugins, "", "", "");
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        for _ in 0..2 {
            let reply = proxy
                .get("/lifecycle", &[("x-conformance", "conformance")])
                .await?;
            run.obs
                .add("lifecycle.proxy_status", reply.status.to_string());
        }
        run.obs.add(
            "lifecycle.abi_version",
            proxy.abi_version("probe", &done).await?,
        );
        // Replacing the chain retires both plugins: their root contexts end.
        proxy.set_chain("probe", "").await?;
        let limit = Duration::from_secs(20);
        capture::wait_for(&done, "lifecycle.root_teardown", limit).await;
        capture::wait_for(&pending, "lifecycle.root_on_done", limit).await;
        capture::wait_for(&later, "lifecycle.root_delete_after_done", limit).await;
        Ok(())
    })
    .await?;
    run.lines(&done);
    run.lines(&pending);
    run.lines(&later);
    Ok(run)
}

/// Integration: the WAT probes, for what a Rust module cannot show (start functions,
/// allocators, the 0.2.0 marker).
pub mod integration {
    use super::*;

    pub fn checks() -> Vec<Check> {
        vec![
            eq("integration.reactor_start", "2", "spec v0.2.1 Integration: _initialize is called first; main is called only if _initialize is exported, after it")
                .proves(&["_initialize", "main"]),
            eq("integration.command_start", "1", "spec v0.2.1 Integration: _start is called only if _initialize is not exported")
                .proves(&["_start"]),
            eq("integration.reactor_allocator", "1", "spec v0.2.1 Memory management: malloc is used only if proxy_on_memory_allocate is not exported")
                .proves(&["proxy_on_memory_allocate"]),
            eq("integration.command_allocator", "2", "spec v0.2.1 Memory management: malloc (deprecated) is used when proxy_on_memory_allocate is absent")
                .proves(&["malloc"]),
            eq("integration.reactor_abi", "0.2.0", "spec abi-versions/README.md: a module exporting proxy_abi_version_0_2_0 is an ABI v0.2.0 module")
                .proves(&["proxy_abi_version_0_2_0"]),
            eq("integration.command_abi", "0.2.1", "spec abi-versions/README.md: a module exporting proxy_abi_version_0_2_1 is an ABI v0.2.1 module")
                .proves(&["proxy_abi_version_0_2_1"]),
        ]
    }

    pub fn host() -> Result<Run> {
        let mut run = Run::default();
        for (module, id) in [
            ("reactor", "integration.reactor_abi"),
            ("command", "integration.command_abi"),
        ] {
            let loaded =
                host_env::load(probes::wat(module)?, &format!("integration-{module}"), "x")?;
            run.obs
                .add(id, version(loaded.harness.plugin().abi_version()));
            run.harness(&loaded.harness);
        }
        Ok(run)
    }

    pub async fn proxy() -> Result<Run> {
        let upstream = Upstream::named("integration").await?;
        let reactor = capture::unique("integration-reactor");
        let command = capture::unique("integration-command");
        let plugins = proxy_env::plugin(&reactor, probes::wat("reactor")?, "x", "")
            + &proxy_env::plugin(&command, probes::wat("command")?, "x", "");
        let yaml = proxy_env::config(upstream.addr, &plugins, "", "", "");
        let mut run = Run::default();
        Proxy::with(&yaml, async |proxy: &Proxy| {
            run.obs.add(
                "integration.reactor_abi",
                proxy.abi_version("probe", &reactor).await?,
            );
            run.obs.add(
                "integration.command_abi",
                proxy.abi_version("probe", &command).await?,
            );
            Ok(())
        })
        .await?;
        run.lines(&reactor);
        run.lines(&command);
        Ok(run)
    }
}
