//! Host functions driven with fuzzed arguments from inside a real guest. The input is a script
//! the guest (a fixed WAT module, compiled once) interprets: each step is an opcode byte that
//! picks one `env.proxy_*` or WASI import, followed by that import's arguments (i32s and i64s,
//! little-endian), so pointers, lengths, ids and types are all the fuzzer's. The host must
//! answer every call or fail the callback cleanly — never panic — and the plugin must serve
//! the next stream.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wasmesh_host::{Host, HostConfig, Plugin, PluginConfig, StreamEnv};

/// Every import the guest can call: (module, name, params as `i`/`I` for i32/i64).
const IMPORTS: &[(&str, &str, &str)] = &[
    ("env", "proxy_done", ""),
    ("env", "proxy_set_effective_context", "i"),
    ("env", "proxy_log", "iii"),
    ("env", "proxy_get_log_level", "i"),
    ("env", "proxy_get_current_time_nanoseconds", "i"),
    ("env", "proxy_set_tick_period_milliseconds", "i"),
    ("env", "proxy_get_configuration", "ii"),
    ("env", "proxy_get_buffer_bytes", "iiiii"),
    ("env", "proxy_set_buffer_bytes", "iiiii"),
    ("env", "proxy_get_buffer_status", "iii"),
    ("env", "proxy_get_header_map_size", "ii"),
    ("env", "proxy_get_header_map_pairs", "iii"),
    ("env", "proxy_set_header_map_pairs", "iii"),
    ("env", "proxy_get_header_map_value", "iiiii"),
    ("env", "proxy_add_header_map_value", "iiiii"),
    ("env", "proxy_replace_header_map_value", "iiiii"),
    ("env", "proxy_remove_header_map_value", "iii"),
    ("env", "proxy_continue_stream", "i"),
    ("env", "proxy_close_stream", "i"),
    ("env", "proxy_continue_request", ""),
    ("env", "proxy_continue_response", ""),
    ("env", "proxy_clear_route_cache", ""),
    ("env", "proxy_get_status", "iii"),
    ("env", "proxy_send_local_response", "iiiiiiii"),
    ("env", "proxy_http_call", "iiiiiiiiii"),
    ("env", "proxy_grpc_call", "iiiiiiiiiiii"),
    ("env", "proxy_grpc_stream", "iiiiiiiii"),
    ("env", "proxy_grpc_send", "iiii"),
    ("env", "proxy_grpc_cancel", "i"),
    ("env", "proxy_grpc_close", "i"),
    ("env", "proxy_set_shared_data", "iiiii"),
    ("env", "proxy_get_shared_data", "iiiii"),
    ("env", "proxy_register_shared_queue", "iii"),
    ("env", "proxy_resolve_shared_queue", "iiiii"),
    ("env", "proxy_enqueue_shared_queue", "iii"),
    ("env", "proxy_dequeue_shared_queue", "iii"),
    ("env", "proxy_define_metric", "iiii"),
    ("env", "proxy_record_metric", "iI"),
    ("env", "proxy_increment_metric", "iI"),
    ("env", "proxy_get_metric", "ii"),
    ("env", "proxy_get_property", "iiii"),
    ("env", "proxy_set_property", "iiii"),
    ("env", "proxy_call_foreign_function", "iiiiii"),
    ("wasi_snapshot_preview1", "fd_write", "iiii"),
    ("wasi_snapshot_preview1", "clock_time_get", "iIi"),
    ("wasi_snapshot_preview1", "random_get", "ii"),
    ("wasi_snapshot_preview1", "environ_sizes_get", "ii"),
    ("wasi_snapshot_preview1", "args_sizes_get", "ii"),
];

/// Where the guest copies the script (request header `s`) before running it.
const SCRIPT_AT: u32 = 16 * 1024;
/// Most steps one script runs.
const MAX_STEPS: u32 = 64;

/// The interpreter: `on_request_headers` fetches header `s` into memory and runs it; each
/// import has a wrapper taking the address of its arguments, called through a table.
fn module() -> String {
    let mut imports = String::new();
    let mut wrappers = String::new();
    let mut sizes = Vec::new();
    for (i, (module, name, params)) in IMPORTS.iter().enumerate() {
        let types: Vec<&str> = params
            .chars()
            .map(|c| if c == 'I' { "i64" } else { "i32" })
            .collect();
        imports.push_str(&format!(
            "  (import \"{module}\" \"{name}\" (func $f{i} (param {}) (result i32)))\n",
            types.join(" ")
        ));
        let mut offset = 0;
        let mut loads = String::new();
        for c in params.chars() {
            if c == 'I' {
                loads.push_str(&format!(" (i64.load offset={offset} (local.get $at))"));
                offset += 8;
            } else {
                loads.push_str(&format!(" (i32.load offset={offset} (local.get $at))"));
                offset += 4;
            }
        }
        sizes.push(offset);
        wrappers.push_str(&format!(
            "  (func $w{i} (type $wrap) (param $at i32) (result i32) (call $f{i}{loads}))\n"
        ));
    }
    let table: Vec<String> = (0..IMPORTS.len()).map(|i| format!("$w{i}")).collect();
    let size_bytes: String = sizes.iter().map(|s| format!("\\{s:02x}")).collect();
    format!(
        r#"(module
  (type $wrap (func (param i32) (result i32)))
{imports}
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (table {n} funcref)
  (elem (i32.const 0) {table})
  (data (i32.const 64) "s")
  (data (i32.const 128) "{size_bytes}")
{wrappers}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    ;; Wraps around inside the second page; the host checks every range anyway.
    (global.set $heap (i32.add (i32.const 65536)
      (i32.rem_u (i32.add (i32.sub (global.get $heap) (i32.const 65536)) (local.get $size)) (i32.const 65536))))
    (local.get $at))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $ptr i32) (local $len i32) (local $pc i32) (local $end i32) (local $op i32) (local $steps i32)
    (if (i32.ne (call $get (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 0) (i32.const 4)) (i32.const 0))
      (then (return (i32.const 0))))
    (local.set $ptr (i32.load (i32.const 0)))
    (local.set $len (i32.load (i32.const 4)))
    (if (i32.gt_u (local.get $len) (i32.const 8192)) (then (local.set $len (i32.const 8192))))
    (if (i32.gt_u (i32.add (local.get $ptr) (local.get $len)) (i32.const 131072)) (then (return (i32.const 0))))
    (memory.copy (i32.const {script}) (local.get $ptr) (local.get $len))
    (local.set $pc (i32.const {script}))
    (local.set $end (i32.add (i32.const {script}) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $pc) (local.get $end)))
        (br_if $done (i32.ge_u (local.get $steps) (i32.const {max_steps})))
        (local.set $op (i32.rem_u (i32.load8_u (local.get $pc)) (i32.const {n})))
        (drop (call_indirect (type $wrap) (i32.add (local.get $pc) (i32.const 1)) (local.get $op)))
        (local.set $pc (i32.add (local.get $pc)
          (i32.add (i32.const 1) (i32.load8_u (i32.add (i32.const 128) (local.get $op))))))
        (local.set $steps (i32.add (local.get $steps) (i32.const 1)))
        (br $next)))
    (i32.const 0)))"#,
        n = IMPORTS.len(),
        table = table.join(" "),
        script = SCRIPT_AT,
        max_steps = MAX_STEPS,
    )
}

struct NoAttributes;
impl StreamEnv for NoAttributes {
    fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

fn plugin() -> &'static Arc<Plugin> {
    static PLUGIN: OnceLock<Arc<Plugin>> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let host = Host::new(HostConfig::default()).expect("host");
        let wasm = wat::parse_str(module()).expect("the interpreter compiles");
        let mut config = PluginConfig::new("fuzz");
        config.plugin_config = b"fuzzed configuration".to_vec();
        config.replicas = 1;
        config.deadline = Duration::from_millis(500);
        config.memory_limit = 4 * 1024 * 1024;
        host.load_plugin(config, &wasm)
            .expect("the interpreter loads")
    })
}

fuzz_target!(|script: &[u8]| {
    let plugin = plugin();
    let Ok(mut stream) = plugin.http_stream(Arc::new(NoAttributes)) else {
        return;
    };
    stream.data.request_headers = vec![
        (":path".into(), b"/fuzz".to_vec()),
        ("s".into(), script.to_vec()),
    ];
    stream.data.request_body = b"body".to_vec();
    // Answered or failed cleanly; either way the host did not panic.
    let _ = stream.on_request_headers(true);
    drop(stream);
});
