//! Bad arguments: the status (or WASI errno) each host function answers for unknown enum
//! values, buffers not available in the callback, and pointers outside the module's memory;
//! and a null pointer with length 0 taken as absent.

use crate::capture;
use crate::check::{Check, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "bad-args";

pub fn checks() -> Vec<Check> {
    const MEM: &str = "spec v0.2.1: every function answers INVALID_MEMORY_ACCESS for pointers outside the module's memory (cpp-host getMemory)";
    const MAP: &str =
        "Envoy (cpp-host exports.cc): a map type past HTTP_CALL_RESPONSE_TRAILERS is BAD_ARGUMENT";
    const BUF: &str = "spec v0.2.1 Buffers: BAD_ARGUMENT for an unknown buffer_id";
    const NA: &str = "spec v0.2.1 Buffers: NOT_FOUND when the requested buffer isn't available";
    const STREAM: &str = "Envoy (cpp-host continue_stream/close_stream): a stream type past UPSTREAM is BAD_ARGUMENT";
    const WASI: &str = "Envoy (cpp-host WASI functions): FAULT for memory outside the module";
    vec![
        eq(
            "bad.log_level",
            "BAD_ARGUMENT",
            "Envoy (cpp-host log): a level past CRITICAL is BAD_ARGUMENT",
        )
        .proves(&["proxy_log", "proxy_log_level_t", "proxy_status_t"]),
        eq("bad.log_out_of_memory", "INVALID_MEMORY_ACCESS", MEM)
            .proves(&["proxy_log", "proxy_status_t"]),
        eq(
            "bad.log_null_empty",
            "OK",
            "SDKs pass (null, 0) for empty data: a host takes it as empty",
        )
        .proves(&["proxy_log"]),
        eq("bad.map_get_pairs", "BAD_ARGUMENT", MAP)
            .proves(&["proxy_get_header_map_pairs", "proxy_map_type_t"]),
        eq("bad.map_get_size", "BAD_ARGUMENT", MAP)
            .proves(&["proxy_get_header_map_size", "proxy_map_type_t"]),
        eq("bad.map_set_pairs", "BAD_ARGUMENT", MAP)
            .proves(&["proxy_set_header_map_pairs", "proxy_map_type_t"]),
        eq("bad.map_get_value", "BAD_ARGUMENT", MAP)
            .proves(&["proxy_get_header_map_value", "proxy_map_type_t"]),
        eq("bad.map_add_value", "BAD_ARGUMENT", MAP)
            .proves(&["proxy_add_header_map_value", "proxy_map_type_t"]),
        eq("bad.map_replace_value", "BAD_ARGUMENT", MAP)
            .proves(&["proxy_replace_header_map_value", "proxy_map_type_t"]),
        eq("bad.map_remove_value", "BAD_ARGUMENT", MAP)
            .proves(&["proxy_remove_header_map_value", "proxy_map_type_t"]),
        eq(
            "bad.map_get_value_out_of_memory",
            "INVALID_MEMORY_ACCESS",
            MEM,
        )
        .proves(&["proxy_get_header_map_value"]),
        eq("bad.map_key_out_of_memory", "INVALID_MEMORY_ACCESS", MEM)
            .proves(&["proxy_get_header_map_value"]),
        eq("bad.buffer_get", "BAD_ARGUMENT", BUF)
            .proves(&["proxy_get_buffer_bytes", "proxy_buffer_type_t"]),
        eq("bad.buffer_status", "BAD_ARGUMENT", BUF)
            .proves(&["proxy_get_buffer_status", "proxy_buffer_type_t"]),
        eq("bad.buffer_set", "BAD_ARGUMENT", BUF)
            .proves(&["proxy_set_buffer_bytes", "proxy_buffer_type_t"]),
        eq("bad.buffer_get_unavailable", "NOT_FOUND", NA).proves(&["proxy_get_buffer_bytes"]),
        eq("bad.buffer_status_unavailable", "NOT_FOUND", NA).proves(&["proxy_get_buffer_status"]),
        eq("bad.continue_stream", "BAD_ARGUMENT", STREAM)
            .proves(&["proxy_continue_stream", "proxy_stream_type_t"]),
        eq("bad.close_stream", "BAD_ARGUMENT", STREAM)
            .proves(&["proxy_close_stream", "proxy_stream_type_t"]),
        eq(
            "bad.property_path_out_of_memory",
            "INVALID_MEMORY_ACCESS",
            MEM,
        )
        .proves(&["proxy_get_property"]),
        eq(
            "bad.property_return_out_of_memory",
            "INVALID_MEMORY_ACCESS",
            MEM,
        )
        .proves(&["proxy_get_property"]),
        eq(
            "bad.shared_data_key_out_of_memory",
            "INVALID_MEMORY_ACCESS",
            MEM,
        )
        .proves(&["proxy_get_shared_data"]),
        eq(
            "bad.shared_data_value_out_of_memory",
            "INVALID_MEMORY_ACCESS",
            MEM,
        )
        .proves(&["proxy_set_shared_data"]),
        eq(
            "bad.http_call_upstream_out_of_memory",
            "INVALID_MEMORY_ACCESS",
            MEM,
        )
        .proves(&["proxy_http_call"]),
        eq(
            "bad.foreign_name_out_of_memory",
            "INVALID_MEMORY_ACCESS",
            MEM,
        )
        .proves(&["proxy_call_foreign_function"]),
        eq("bad.fd_write_out_of_memory", "FAULT", WASI)
            .proves(&["wasi_snapshot_preview1.fd_write", "wasi_errno_t"]),
        eq("bad.clock_out_of_memory", "FAULT", WASI)
            .proves(&["wasi_snapshot_preview1.clock_time_get", "wasi_errno_t"]),
        eq("bad.random_out_of_memory", "FAULT", WASI)
            .proves(&["wasi_snapshot_preview1.random_get", "wasi_errno_t"]),
    ]
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "bad-args", "")?;
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(
            &[
                (":method", "GET"),
                (":path", "/bad"),
                (":authority", "conformance.local"),
                ("x-conf-in", "v"),
            ],
            true,
        )
        .doing("request headers")?;
    drop(stream);
    let mut run = Run::default();
    run.harness(&loaded.harness);
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("bad").await?;
    let name = capture::unique("bad-args");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        "",
        "",
        "",
    );
    Proxy::with(&yaml, async |proxy: &Proxy| {
        proxy.get("/bad", &[("x-conf-in", "v")]).await?;
        Ok(())
    })
    .await?;
    let mut run = Run::default();
    run.lines(&name);
    Ok(run)
}
