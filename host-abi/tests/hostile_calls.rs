//! A hostile guest against the host: every host function of the ABI checklist called with
//! out-of-bounds pointers, huge and negative lengths and out-pointers straddling the end of
//! memory; lying and re-entrant allocators; traps in every callback; runaway loops, memory and
//! recursion; floods of headers, bodies, log lines, metrics, queue items and shared data; a
//! stream paused forever. The host must answer with status codes or contain the failure (the
//! replica is rebuilt) — never panic, never hold unbounded memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmesh_host::limits::{
    MAX_HEADER_PAIRS, MAX_LOG_LINES_PER_SECOND, MAX_METRICS, MAX_QUEUE_LEN, MAX_SHARED_BYTES,
    MAX_SHARED_KEYS,
};
use wasmesh_host::{
    Action, CalloutDone, CalloutError, CalloutRequest, FailureKind, Host, HostConfig, LoadError,
    LogLevel, Plugin, PluginConfig, Services, StreamEnv,
};

struct Env;
impl StreamEnv for Env {
    fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

/// What a parameter of a host function is, for choosing hostile values for it.
#[derive(Clone, Copy)]
enum Role {
    /// A guest pointer the host reads from.
    Ptr,
    /// A length of guest memory.
    Size,
    /// A guest pointer the host writes to.
    Out,
    /// Any other integer (an id, a type, a period…): hostile too, but it may be valid.
    Int,
    /// An i64 value.
    Long,
    /// This fixed i32 (a valid type or level, so the memory path is reached).
    Fixed(i32),
}

/// Every host function of the ABI checklist (`env.proxy_*` of 0.2.1, 0.2.0 and 0.1.0, and the
/// WASI calls the spec requires) with the role of each parameter. `wasi` rows answer errnos.
const IMPORTS: &[(&str, &str, &str)] = &[
    ("env", "proxy_done", ""),
    ("env", "proxy_set_effective_context", "x"),
    ("env", "proxy_log", "2 p s"),
    ("env", "proxy_get_log_level", "o"),
    ("env", "proxy_get_current_time_nanoseconds", "o"),
    ("env", "proxy_set_tick_period_milliseconds", "x"),
    ("env", "proxy_get_configuration", "o o"),
    ("env", "proxy_get_buffer_bytes", "7 x s o o"),
    ("env", "proxy_set_buffer_bytes", "0 x x p s"),
    ("env", "proxy_get_buffer_status", "7 o o"),
    ("env", "proxy_get_header_map_size", "0 o"),
    ("env", "proxy_get_header_map_pairs", "0 o o"),
    ("env", "proxy_set_header_map_pairs", "0 p s"),
    ("env", "proxy_get_header_map_value", "0 p s o o"),
    ("env", "proxy_add_header_map_value", "0 p s p s"),
    ("env", "proxy_replace_header_map_value", "0 p s p s"),
    ("env", "proxy_remove_header_map_value", "0 p s"),
    ("env", "proxy_continue_stream", "x"),
    ("env", "proxy_close_stream", "x"),
    ("env", "proxy_continue_request", ""),
    ("env", "proxy_continue_response", ""),
    ("env", "proxy_clear_route_cache", ""),
    ("env", "proxy_get_status", "o o o"),
    ("env", "proxy_send_local_response", "x p s p s p s x"),
    ("env", "proxy_http_call", "p s p s p s p s x o"),
    ("env", "proxy_grpc_call", "p s p s p s p s p s x o"),
    ("env", "proxy_grpc_stream", "p s p s p s p s o"),
    ("env", "proxy_grpc_send", "x p s x"),
    ("env", "proxy_grpc_cancel", "x"),
    ("env", "proxy_grpc_close", "x"),
    ("env", "proxy_set_shared_data", "p s p s x"),
    ("env", "proxy_get_shared_data", "p s o o o"),
    ("env", "proxy_register_shared_queue", "p s o"),
    ("env", "proxy_resolve_shared_queue", "p s p s o"),
    ("env", "proxy_enqueue_shared_queue", "x p s"),
    ("env", "proxy_dequeue_shared_queue", "x o o"),
    ("env", "proxy_define_metric", "0 p s o"),
    ("env", "proxy_record_metric", "x L"),
    ("env", "proxy_increment_metric", "x L"),
    ("env", "proxy_get_metric", "x o"),
    ("env", "proxy_get_property", "p s o o"),
    ("env", "proxy_set_property", "p s p s"),
    ("env", "proxy_call_foreign_function", "p s p s o o"),
    ("wasi_snapshot_preview1", "fd_write", "1 p s o"),
    ("wasi_snapshot_preview1", "clock_time_get", "0 L o"),
    ("wasi_snapshot_preview1", "clock_res_get", "0 o"),
    ("wasi_snapshot_preview1", "random_get", "p s"),
    ("wasi_snapshot_preview1", "environ_sizes_get", "o o"),
    ("wasi_snapshot_preview1", "args_sizes_get", "o o"),
    // These write nothing when there is nothing to write, so any pointer is fine.
    ("wasi_snapshot_preview1", "environ_get", "x x"),
    ("wasi_snapshot_preview1", "args_get", "x x"),
];

fn roles(spec: &str) -> Vec<Role> {
    spec.split_whitespace()
        .map(|r| match r {
            "p" => Role::Ptr,
            "s" => Role::Size,
            "o" => Role::Out,
            "x" => Role::Int,
            "L" => Role::Long,
            n => Role::Fixed(n.parse().expect("a role or a number")),
        })
        .collect()
}

/// One page of guest memory.
const MEMORY_END: i64 = 65_536;

/// Hostile argument sets: (pointer, size, out-pointer, other integer, i64).
const PATTERNS: &[(i64, i64, i64, i64, i64)] = &[
    // Everything past the end of memory.
    (0xFFFF_FFF0, 16, 0xFFFF_FFF0, 0xFFFF_FFF0, -1),
    // A valid start with a length past the end; out-pointers whose value straddles the end.
    (0, 0x7FFF_FFFF, 0xFFFF_FFFC, 0, i64::MAX),
    // Ranges that start inside memory and end outside.
    (MEMORY_END - 2, 8, MEMORY_END - 2, 1, i64::MIN),
    // Negative lengths and pointers (u32::MAX).
    (-1, -1, -1, -1, 0),
];

/// A module importing every function of [`IMPORTS`], whose `on_request_headers` calls each with
/// every pattern and reports the answers (u32 LE each, in order) in request header `results`.
fn every_import_module() -> String {
    let mut imports = String::new();
    let mut calls = String::new();
    let mut slot = 0;
    for (i, (module, name, spec)) in IMPORTS.iter().enumerate() {
        let roles = roles(spec);
        let params: Vec<&str> = roles
            .iter()
            .map(|r| match r {
                Role::Long => "i64",
                _ => "i32",
            })
            .collect();
        imports.push_str(&format!(
            "  (import \"{module}\" \"{name}\" (func $f{i} (param {}) (result i32)))\n",
            params.join(" ")
        ));
        for (p, s, o, x, l) in PATTERNS {
            let args: Vec<String> = roles
                .iter()
                .map(|r| match r {
                    Role::Ptr => format!("(i32.const {})", *p as i32),
                    Role::Size => format!("(i32.const {})", *s as i32),
                    Role::Out => format!("(i32.const {})", *o as i32),
                    Role::Int => format!("(i32.const {})", *x as i32),
                    Role::Long => format!("(i64.const {l})"),
                    Role::Fixed(n) => format!("(i32.const {n})"),
                })
                .collect();
            calls.push_str(&format!(
                "    (i32.store (i32.const {}) (call $f{i} {}))\n",
                4096 + slot * 4,
                args.join(" ")
            ));
            slot += 1;
        }
    }
    format!(
        r#"(module
{imports}
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "results")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 2048))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
{calls}
    (drop (call $add (i32.const 0) (i32.const 100) (i32.const 7) (i32.const 4096) (i32.const {len})))
    (i32.const 0)))"#,
        len = slot * 4
    )
}

fn host() -> Arc<Host> {
    Host::new(HostConfig::default()).expect("host")
}

fn config(name: &str, plugin_config: &str) -> PluginConfig {
    let mut config = PluginConfig::new(name);
    config.plugin_config = plugin_config.as_bytes().to_vec();
    config.vm_id = name.to_string();
    config.replicas = 1;
    // Floods make a hundred thousand host calls in one callback; the deadline is not under
    // test here (except for `loop`, which never ends whatever the deadline).
    config.deadline = Duration::from_secs(10);
    config.memory_limit = 32 * 1024 * 1024;
    config
}

#[test]
fn every_host_function_answers_hostile_arguments_with_a_status() {
    let host = host();
    let wasm = wat::parse_str(every_import_module()).expect("valid wat");
    let mut config = PluginConfig::new("every-import");
    config.plugin_config = b"some configuration".to_vec();
    let plugin = host.load_plugin(config, &wasm).expect("loads");
    let mut stream = plugin.http_stream(Arc::new(Env)).expect("stream");
    stream.data.request_headers = vec![(":path".into(), b"/".to_vec())];
    // No trap, no panic: every call came back.
    assert_eq!(stream.on_request_headers(true), Ok(Action::Continue));
    let results = stream
        .data
        .request_headers
        .iter()
        .rfind(|(k, _)| k == "results")
        .map(|(_, v)| v.clone())
        .expect("the module reported its results");
    let statuses: Vec<u32> = results
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(statuses.len(), IMPORTS.len() * PATTERNS.len());
    let proxy_statuses = [0, 1, 2, 3, 4, 6, 7, 8, 10, 12];
    let wasi_errnos = [0, 8, 21, 28, 58];
    for (i, (module, name, spec)) in IMPORTS.iter().enumerate() {
        let touches_memory = roles(spec)
            .iter()
            .any(|r| matches!(r, Role::Ptr | Role::Size | Role::Out));
        for (n, status) in statuses[i * PATTERNS.len()..(i + 1) * PATTERNS.len()]
            .iter()
            .enumerate()
        {
            let allowed: &[u32] = if *module == "env" {
                &proxy_statuses
            } else {
                &wasi_errnos
            };
            assert!(
                allowed.contains(status),
                "{name} pattern {n}: {status} is not a status it may answer"
            );
            if touches_memory {
                assert_ne!(
                    *status, 0,
                    "{name} pattern {n}: succeeded with memory it cannot have"
                );
            }
        }
    }
    // The replica is fine: a second stream runs the same calls again.
    let mut again = plugin.http_stream(Arc::new(Env)).expect("stream");
    assert_eq!(again.on_request_headers(true), Ok(Action::Continue));
}

/// Allocators that lie (an address past the end, one straddling it, null), trap, or call back
/// into the host from inside the allocation.
#[test]
fn lying_and_reentrant_allocators_are_contained() {
    let module = |allocator: &str| {
        format!(
            r#"(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "status")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32) {allocator})
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.store (i32.const 200) (call $get (i32.const 7) (i32.const 0) (i32.const 1000) (i32.const 300) (i32.const 304)))
    (drop (call $add (i32.const 0) (i32.const 100) (i32.const 6) (i32.const 200) (i32.const 4)))
    (i32.const 0)))"#
        )
    };
    let status_of = |plugin: &Arc<Plugin>| {
        let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
        let result = s.on_request_headers(true);
        let status = s
            .data
            .request_headers
            .iter()
            .rfind(|(k, _)| k == "status")
            .map(|(_, v)| u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
        (result, status)
    };
    let host = host();
    let load = |allocator: &str| {
        let wasm = wat::parse_str(module(allocator)).expect("valid wat");
        host.load_plugin(config("allocator", "a configuration to return"), &wasm)
            .expect("loads")
    };
    for (allocator, expected) in [
        ("(i32.const 0xFFFFFFF0)", 6),
        ("(i32.const 65530)", 6),
        ("(i32.const 0)", 10),
    ] {
        let plugin = load(allocator);
        assert_eq!(
            status_of(&plugin),
            (Ok(Action::Continue), Some(expected)),
            "allocator {allocator}"
        );
    }
    for allocator in [
        "(unreachable)",
        // Asks the host for a buffer from inside the allocation the host asked for.
        "(drop (call $get (i32.const 7) (i32.const 0) (i32.const 1000) (i32.const 300) (i32.const 304))) (i32.const 1024)",
    ] {
        let plugin = load(allocator);
        let (result, _) = status_of(&plugin);
        let failure = result.expect_err("the allocator's trap fails the callback");
        assert_eq!(failure.kind, FailureKind::Trap, "{allocator}: {failure}");
    }
}

/// A stream through the hostile filter with `words` in `x-hostile`, driven through every
/// callback; returns the first failure (or that there was none).
fn drive(plugin: &Arc<Plugin>, words: &str) -> Result<(), wasmesh_host::FilterFailure> {
    let mut s = plugin.http_stream(Arc::new(Env))?;
    s.data.request_headers = vec![
        (":path".into(), b"/".to_vec()),
        ("x-hostile".into(), words.as_bytes().to_vec()),
    ];
    s.on_request_headers(false)?;
    s.data.request_body = b"body".to_vec();
    s.on_request_body(false)?;
    s.data.request_trailers = vec![("t".into(), b"1".to_vec())];
    s.on_request_trailers()?;
    s.data.response_headers = vec![(":status".into(), b"200".to_vec())];
    s.on_response_headers(false)?;
    s.data.response_body = b"body".to_vec();
    s.on_response_body(false)?;
    s.data.response_trailers = vec![("t".into(), b"1".to_vec())];
    s.on_response_trailers()?;
    Ok(())
}

fn configured(host: &Host, vm_id: &str) -> u64 {
    host.shared_data(vm_id, "hostile-configured")
        .and_then(|(v, _)| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn hostile(host: &Host, name: &str, plugin_config: &str) -> Result<Arc<Plugin>, LoadError> {
    let wasm = std::fs::read(wasmesh_test_programs::HOSTILE_WASM).expect("hostile filter built");
    host.load_plugin(config(name, plugin_config), &wasm)
}

#[test]
fn a_trap_in_any_stream_callback_is_contained_and_the_replica_rebuilt() {
    let host = host();
    let plugin = hostile(&host, "traps", "").expect("loads");
    assert_eq!(drive(&plugin, ""), Ok(()), "a healthy replica");
    for word in [
        "trap-request-headers",
        "trap-request-body",
        "trap-request-trailers",
        "trap-response-headers",
        "trap-response-body",
        "trap-response-trailers",
        "grow",
        "recurse",
        "loop",
    ] {
        let before = configured(&host, "traps");
        let failure = drive(&plugin, word).expect_err(word);
        let kind = if word == "loop" {
            FailureKind::Timeout
        } else {
            FailureKind::Trap
        };
        assert_eq!(failure.kind, kind, "{word}: {failure}");
        // One replica: the next stream runs on a rebuilt one, configured afresh.
        assert_eq!(drive(&plugin, ""), Ok(()), "after {word}");
        assert_eq!(
            configured(&host, "traps"),
            before + 1,
            "{word}: rebuilt once"
        );
    }
    // on_log and on_done run when the stream ends, after the request: the failure is the
    // replica's, and the next stream gets a new one.
    for word in ["trap-log", "trap-done"] {
        let before = configured(&host, "traps");
        assert_eq!(drive(&plugin, word), Ok(()), "{word} fails only at the end");
        assert_eq!(drive(&plugin, ""), Ok(()), "after {word}");
        assert_eq!(
            configured(&host, "traps"),
            before + 1,
            "{word}: rebuilt once"
        );
    }
}

#[test]
fn a_trap_while_starting_refuses_the_plugin() {
    let host = host();
    for word in ["trap-vm-start", "trap-configure"] {
        let err = hostile(&host, word, word).err().expect(word);
        assert!(
            matches!(&err, LoadError::Failure(f, _) if f.kind == FailureKind::Trap),
            "{word}: {err}"
        );
    }
    let err = hostile(&host, "fail", "fail-configure")
        .err()
        .expect("refused");
    assert!(matches!(err, LoadError::Rejected { .. }), "{err}");
}

#[test]
fn growing_a_streams_headers_or_body_past_the_bounds_fails_the_filter() {
    let host = host();
    let plugin = hostile(&host, "floods", "").expect("loads");
    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = vec![("x-hostile".into(), b"headers-flood".to_vec())];
    let failure = s.on_request_headers(true).expect_err("stopped");
    assert_eq!(failure.kind, FailureKind::Limit, "{failure}");
    assert!(
        s.data.request_headers.len() <= MAX_HEADER_PAIRS,
        "the map never went past the bound: {}",
        s.data.request_headers.len()
    );
    drop(s);

    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = vec![("x-hostile".into(), b"body-flood".to_vec())];
    assert_eq!(s.on_request_headers(false), Ok(Action::Continue));
    s.data.request_body = b"start".to_vec();
    let failure = s.on_request_body(true).expect_err("stopped");
    assert_eq!(failure.kind, FailureKind::Limit, "{failure}");
    assert!(s.data.request_body.len() <= wasmesh_host::limits::MAX_BODY_BYTES);
    drop(s);
    assert_eq!(drive(&plugin, ""), Ok(()), "rebuilt");
}

fn header_number(s: &wasmesh_host::HttpStream, name: &str) -> usize {
    s.data
        .request_headers
        .iter()
        .rfind(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {:?}", s.data.request_headers.len()))
}

/// Metric definitions, queue items and shared data outlive requests: past their bounds the
/// host refuses with a status and holds nothing more, except that a full queue drops its
/// oldest items (a refusal would make filters written for Envoy panic).
#[test]
fn floods_of_metrics_queue_items_and_shared_data_are_bounded() {
    let host = host();
    let plugin = hostile(&host, "shared-floods", "").expect("loads");
    let flood = |word: &str| {
        let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
        s.data.request_headers = vec![("x-hostile".into(), word.as_bytes().to_vec())];
        assert_eq!(s.on_request_headers(true), Ok(Action::Continue), "{word}");
        header_number(&s, "x-hostile-refused")
    };
    assert_eq!(flood("metric-flood"), 100_000 - MAX_METRICS);
    assert_eq!(flood("queue-flood"), 0, "no enqueue refused");
    let mut held = 0;
    while host
        .dequeue_shared_queue("shared-floods", "hostile-flood")
        .expect("registered")
        .is_some()
    {
        held += 1;
    }
    assert_eq!(held, MAX_QUEUE_LEN, "the newest items, no more");
    let refused = flood("shared-flood");
    let stored: Vec<usize> = (0..100_000)
        .filter(|i| {
            host.shared_data("shared-floods", &format!("hostile-flood-{i}"))
                .is_some()
        })
        .collect();
    assert_eq!(refused, 100_000 - stored.len());
    let bytes: usize = stored
        .iter()
        .map(|i| format!("hostile-flood-{i}").len() + 1024)
        .sum();
    assert!(refused > 0 && stored.len() <= MAX_SHARED_KEYS && bytes <= MAX_SHARED_BYTES);
    // The plugin itself is unharmed.
    assert_eq!(drive(&plugin, ""), Ok(()));
}

/// Counts the log lines the host lets through.
#[derive(Default)]
struct CountingLogs {
    lines: AtomicUsize,
}

impl Services for CountingLogs {
    fn http_call(&self, _: CalloutRequest, _: CalloutDone) -> Result<(), CalloutError> {
        Err(CalloutError::UnknownUpstream("none here".into()))
    }
    fn log(&self, _plugin: &str, _level: LogLevel, _message: &str) {
        self.lines.fetch_add(1, Ordering::Relaxed);
    }
    fn log_level(&self) -> LogLevel {
        LogLevel::Info
    }
}

#[test]
fn a_log_flood_is_cut_to_the_plugins_budget() {
    let host = host();
    let logs = Arc::new(CountingLogs::default());
    host.set_services(logs.clone());
    // The plugin's first budget window opens when it loads.
    let started = Instant::now();
    let plugin = hostile(&host, "log-flood", "").expect("loads");
    let before = logs.lines.load(Ordering::Relaxed);
    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = vec![("x-hostile".into(), b"log-flood".to_vec())];
    assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
    let windows = started.elapsed().as_secs() as usize + 1;
    assert_eq!(
        header_number(&s, "x-hostile-logged"),
        100_000,
        "proxy_log answers OK whether or not the line goes out"
    );
    let delivered = logs.lines.load(Ordering::Relaxed) - before;
    let budget = MAX_LOG_LINES_PER_SECOND as usize;
    assert!(
        delivered <= budget * windows,
        "{delivered} lines in {windows} one-second windows"
    );
    assert!(delivered > 0);
}

#[test]
fn a_stream_paused_forever_gives_its_data_back() {
    let host = host();
    let plugin = hostile(&host, "pauses", "").expect("loads");
    let paused = |plugin: &Arc<Plugin>| {
        let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
        s.data.request_headers = vec![("x-hostile".into(), b"pause".to_vec())];
        assert_eq!(s.on_request_headers(false), Ok(Action::Pause));
        assert!(s.is_paused());
        s
    };
    // The proxy's pause limit passed: it takes the data back.
    let mut s = paused(&plugin);
    assert_eq!(plugin.parked_streams(), 1);
    s.unpark();
    assert_eq!(plugin.parked_streams(), 0);
    assert_eq!(
        s.data.request_headers.first().map(|(k, _)| k.as_str()),
        Some("x-hostile"),
        "the stream's data came back whole"
    );
    drop(s);
    // The client went away while paused: ending the stream frees its data.
    let s = paused(&plugin);
    assert_eq!(plugin.parked_streams(), 1);
    drop(s);
    assert_eq!(plugin.parked_streams(), 0);
    // The replica failed while streams were paused on it: each is told, and gets its own data
    // back (so a fail-open request goes on as it was); ending them frees what is left.
    let mut held = (0..3).map(|_| paused(&plugin)).collect::<Vec<_>>();
    assert_eq!(plugin.parked_streams(), 3);
    assert!(drive(&plugin, "trap-request-headers").is_err());
    let first = held.first_mut().expect("held");
    assert!(first.replica_failed());
    first.unpark();
    assert_eq!(
        first.data.request_headers.first().map(|(k, _)| k.as_str()),
        Some("x-hostile"),
        "the paused stream's data survived its replica"
    );
    assert_eq!(plugin.parked_streams(), 2);
    drop(held);
    assert_eq!(plugin.parked_streams(), 0);
    assert_eq!(drive(&plugin, ""), Ok(()));
    assert_eq!(plugin.parked_streams(), 0);
}

/// Ticks fired by the embedder ([`Plugin::tick`]): one traps, the replica is rebuilt on the
/// next stream and ticks again without trapping.
#[test]
fn a_trapping_tick_fails_only_its_replica() {
    let host = host();
    struct ManualTicks;
    impl Services for ManualTicks {
        fn http_call(&self, _: CalloutRequest, _: CalloutDone) -> Result<(), CalloutError> {
            Err(CalloutError::UnknownUpstream("none here".into()))
        }
        fn automatic_ticks(&self) -> bool {
            false
        }
    }
    host.set_services(Arc::new(ManualTicks));
    let plugin = hostile(&host, "ticks", "tick-trap").expect("loads");
    let failure = plugin.tick().expect_err("the first tick traps");
    assert_eq!(failure.kind, FailureKind::Trap);
    assert_eq!(drive(&plugin, ""), Ok(()), "rebuilt for the next stream");
    assert_eq!(plugin.tick(), Ok(1), "and it ticks again, harmlessly");
}

/// Many threads hammer one plugin with hostile streams at once: every failure is contained and
/// the plugin keeps serving (replicas are rebuilt under their locks, never torn).
#[test]
fn concurrent_hostile_streams_leave_a_working_plugin() {
    let host = host();
    let mut cfg = config("concurrent", "");
    cfg.replicas = 2;
    cfg.deadline = Duration::from_secs(1);
    let wasm = std::fs::read(wasmesh_test_programs::HOSTILE_WASM).expect("hostile filter built");
    let plugin = host.load_plugin(cfg, &wasm).expect("loads");
    let failures = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (plugin, failures) = (plugin.clone(), failures.clone());
            scope.spawn(move || {
                for i in 0..25 {
                    let word = match (t + i) % 5 {
                        0 => "trap-request-headers",
                        1 => "trap-response-body",
                        2 => "grow",
                        3 => "recurse",
                        _ => "",
                    };
                    if let Err(f) = drive(&plugin, word) {
                        failures.lock().expect("failures").push((word, f.kind));
                    }
                }
            });
        }
    });
    // Healthy streams may meet a replica another thread broke (kind `unavailable`), but
    // nothing else goes wrong, and the plugin serves afterwards.
    for (word, kind) in failures.lock().expect("failures").iter() {
        assert!(
            !word.is_empty() || *kind == FailureKind::Unavailable,
            "a healthy stream failed with {kind}"
        );
    }
    assert_eq!(drive(&plugin, ""), Ok(()));
    assert_eq!(drive(&plugin, ""), Ok(()));
}
