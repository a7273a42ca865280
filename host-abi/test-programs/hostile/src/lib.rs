//! A deliberately hostile proxy-wasm filter for the reliability tests, written with raw
//! `#[no_mangle]` exports and `env` imports (no SDK), so it can do what no SDK would: trap in any
//! callback, never return, exhaust its memory or stack, flood the host, and hand the host
//! out-of-bounds pointers. Nothing here is a pattern to follow.
//!
//! What it does is chosen by words in its plugin configuration (comma-separated) and, per
//! request, in the request header `x-hostile` (comma-separated):
//!
//! | where | word | what |
//! |---|---|---|
//! | config | `trap-vm-start`, `trap-configure` | traps in `proxy_on_vm_start` / `proxy_on_configure` |
//! | config | `fail-configure` | `proxy_on_configure` returns false |
//! | config | `tick-trap` | a 20 ms tick; exactly one tick in the process traps (a compare-and-swap on shared data decides which) |
//! | header | `trap-request-headers`, `trap-request-body`, `trap-request-trailers`, `trap-response-headers`, `trap-response-body`, `trap-response-trailers`, `trap-log`, `trap-done` | traps in that callback |
//! | header | `loop` | spins forever in `on_request_headers` (the epoch deadline stops it) |
//! | header | `grow` | allocates until memory runs out |
//! | header | `recurse` | recurses until the stack overflows |
//! | header | `pause` | pauses the request and never resumes it |
//! | header | `headers-flood` | adds 100 000 request headers |
//! | header | `body-flood` | appends 1 MiB to the request body a thousand times |
//! | header | `log-flood` | logs 100 000 lines at `warn`; `x-hostile-logged` counts the OK answers |
//! | header | `metric-flood` | defines 100 000 counters; `x-hostile-refused` counts refusals |
//! | header | `queue-flood` | enqueues 100 000 KiB-sized items; `x-hostile-refused` counts refusals |
//! | header | `shared-flood` | sets 100 000 KiB-sized shared-data keys; `x-hostile-refused` counts refusals |
//! | header | `queue-trap` | registers queue `hostile-trap` (so its replica's root context is told) and enqueues on it; `proxy_on_queue_ready` traps; answers 200 `queued` itself |
//! | header | `callout-trap` | calls out to cluster `x-hostile-cluster` (default `backend`) and pauses; `proxy_on_http_call_response` traps |
//! | header | `oob` | calls host functions with out-of-bounds pointers; `x-hostile-oob` lists `name=status` |
//!
//! Without any word it adds `x-hostile: ok` to the response, which shows a healthy replica, and
//! `x-hostile-configured: N`, how many root contexts have been configured in the process (kept
//! in shared data under `hostile-configured`): it grows when a failed replica is rebuilt.

use std::cell::RefCell;
use std::collections::HashMap;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, ptr: *const u8, len: usize) -> u32;
    fn proxy_get_buffer_bytes(
        ty: u32,
        start: usize,
        max: usize,
        out_ptr: *mut *mut u8,
        out_len: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        ty: u32,
        start: usize,
        size: usize,
        ptr: *const u8,
        len: usize,
    ) -> u32;
    fn proxy_get_buffer_status(ty: u32, out_len: *mut usize, out_flags: *mut u32) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        kp: *const u8,
        kl: usize,
        out_ptr: *mut *mut u8,
        out_len: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, out_ptr: *mut *mut u8, out_len: *mut usize) -> u32;
    fn proxy_get_header_map_size(map: u32, out: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map: u32, ptr: *const u8, len: usize) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        kp: *const u8,
        kl: usize,
        vp: *const u8,
        vl: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        kp: *const u8,
        kl: usize,
        vp: *const u8,
        vl: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, kp: *const u8, kl: usize) -> u32;
    fn proxy_set_tick_period_milliseconds(ms: u32) -> u32;
    fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32;
    fn proxy_set_shared_data(kp: *const u8, kl: usize, vp: *const u8, vl: usize, cas: u32) -> u32;
    fn proxy_get_shared_data(
        kp: *const u8,
        kl: usize,
        out_ptr: *mut *mut u8,
        out_len: *mut usize,
        out_cas: *mut u32,
    ) -> u32;
    fn proxy_register_shared_queue(np: *const u8, nl: usize, out: *mut u32) -> u32;
    fn proxy_resolve_shared_queue(
        vp: *const u8,
        vl: usize,
        np: *const u8,
        nl: usize,
        out: *mut u32,
    ) -> u32;
    fn proxy_enqueue_shared_queue(id: u32, vp: *const u8, vl: usize) -> u32;
    fn proxy_dequeue_shared_queue(id: u32, out_ptr: *mut *mut u8, out_len: *mut usize) -> u32;
    fn proxy_define_metric(ty: u32, np: *const u8, nl: usize, out: *mut u32) -> u32;
    fn proxy_get_metric(id: u32, out: *mut u64) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status: u32,
        dp: *const u8,
        dl: usize,
        bp: *const u8,
        bl: usize,
        hp: *const u8,
        hl: usize,
        grpc: i32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        up: *const u8,
        ul: usize,
        hp: *const u8,
        hl: usize,
        bp: *const u8,
        bl: usize,
        tp: *const u8,
        tl: usize,
        timeout_ms: u32,
        out: *mut u32,
    ) -> u32;
    fn proxy_get_property(
        pp: *const u8,
        pl: usize,
        out_ptr: *mut *mut u8,
        out_len: *mut usize,
    ) -> u32;
    fn proxy_set_property(pp: *const u8, pl: usize, vp: *const u8, vl: usize) -> u32;
    fn proxy_get_status(code: *mut u32, out_ptr: *mut *mut u8, out_len: *mut usize) -> u32;
    fn proxy_call_foreign_function(
        np: *const u8,
        nl: usize,
        ap: *const u8,
        al: usize,
        out_ptr: *mut *mut u8,
        out_len: *mut usize,
    ) -> u32;
}

const OK: u32 = 0;
const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const REQUEST_BODY: u32 = 0;
const PLUGIN_CONFIGURATION: u32 = 7;
const LOG_WARN: u32 = 3;
/// A pointer no 32-bit guest memory reaches.
const BAD: usize = 0xFFFF_FFF0;
/// How many times a flood repeats its operation.
const FLOOD: usize = 100_000;

thread_local! {
    static CONFIG: RefCell<String> = const { RefCell::new(String::new()) };
    /// The `x-hostile` words of each live stream context.
    static WORDS: RefCell<HashMap<u32, Vec<String>>> = RefCell::new(HashMap::new());
    /// Callout tokens whose answer must trap.
    static TRAP_TOKENS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The ABI's allocator: the host copies data it returns into memory taken from here, and this
/// module frees it with [`take`].
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut buf = Vec::<u8>::with_capacity(size.max(1));
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr
}

/// Takes ownership of a buffer the host allocated with [`proxy_on_memory_allocate`].
fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the host allocated exactly `len` bytes at `ptr` through
    // `proxy_on_memory_allocate`, which made a `Vec<u8>` with capacity `len.max(1)`.
    unsafe { Vec::from_raw_parts(ptr, len, len.max(1)) }
}

fn trap(why: &str) -> ! {
    log(why);
    std::process::abort()
}

fn log(line: &str) {
    // SAFETY: a valid slice of this module's memory.
    unsafe { proxy_log(LOG_WARN, line.as_ptr(), line.len()) };
}

fn config_has(word: &str) -> bool {
    CONFIG.with(|c| c.borrow().split(',').any(|w| w.trim() == word))
}

fn has(ctx: u32, word: &str) -> bool {
    WORDS.with(|w| {
        w.borrow()
            .get(&ctx)
            .is_some_and(|words| words.iter().any(|x| x == word))
    })
}

fn read_config() -> String {
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0);
    // SAFETY: out-pointers to locals.
    let status =
        unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, usize::MAX, &mut ptr, &mut len) };
    if status != OK {
        return String::new();
    }
    String::from_utf8_lossy(&take(ptr, len)).into_owned()
}

fn header(map: u32, name: &str) -> Option<Vec<u8>> {
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0);
    // SAFETY: valid key slice and out-pointers to locals.
    let status =
        unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut ptr, &mut len) };
    (status == OK).then(|| take(ptr, len))
}

fn add_header(map: u32, name: &str, value: &str) -> u32 {
    // SAFETY: valid slices of this module's memory.
    unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    let config = read_config();
    CONFIG.with(|c| *c.borrow_mut() = config);
    if config_has("trap-vm-start") {
        trap("hostile: trapping in on_vm_start");
    }
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_root: u32, _size: usize) -> u32 {
    let config = read_config();
    CONFIG.with(|c| *c.borrow_mut() = config);
    if config_has("trap-configure") {
        trap("hostile: trapping in on_configure");
    }
    if config_has("fail-configure") {
        return 0;
    }
    bump(CONFIGURED);
    if config_has("tick-trap") {
        // Replicas are configured one after another, and rebuilt ones find the guard there.
        if shared_get(TICK_GUARD).is_none() {
            shared_set(TICK_GUARD, b"armed", 0);
        }
        // SAFETY: no pointers.
        unsafe { proxy_set_tick_period_milliseconds(20) };
    }
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(_ctx: u32, _parent: u32) {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(_root: u32) {
    if !config_has("tick-trap") {
        return;
    }
    // Trap once per process, whichever replica ticks first: the guard lives in shared data
    // (which outlives replicas), and only the tick whose compare-and-swap wins traps.
    if let Some((value, cas)) = shared_get(TICK_GUARD)
        && value == b"armed"
        && shared_set(TICK_GUARD, b"fired", cas) == OK
    {
        trap("hostile: trapping in on_tick");
    }
}

const TICK_GUARD: &str = "hostile-tick-guard";
/// Shared-data key counting root contexts configured: it grows by one each time a replica is
/// (re)built, so tests can see failed replicas being replaced.
const CONFIGURED: &str = "hostile-configured";

/// Adds one to a decimal counter in shared data (compare-and-swap, so replicas never lose a
/// count).
fn bump(key: &str) -> u64 {
    loop {
        let (now, cas) = shared_get(key).map_or((0, 0), |(v, cas)| {
            (String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0), cas)
        });
        let next = now + 1;
        if shared_set(key, next.to_string().as_bytes(), cas) == OK {
            return next;
        }
    }
}

fn configured() -> String {
    shared_get(CONFIGURED)
        .map(|(v, _)| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
}

fn shared_get(key: &str) -> Option<(Vec<u8>, u32)> {
    let (mut ptr, mut len, mut cas) = (std::ptr::null_mut(), 0, 0);
    // SAFETY: a valid key slice and out-pointers to locals.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut ptr, &mut len, &mut cas) };
    let value = take(ptr, len);
    (status == OK).then_some((value, cas))
}

fn shared_set(key: &str, value: &[u8], cas: u32) -> u32 {
    // SAFETY: valid slices.
    unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_queue_ready(_root: u32, id: u32) {
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0);
    // SAFETY: out-pointers to locals.
    let status = unsafe { proxy_dequeue_shared_queue(id, &mut ptr, &mut len) };
    if status == OK && take(ptr, len) == b"trap" {
        trap("hostile: trapping in on_queue_ready");
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_http_call_response(
    _root: u32,
    token: u32,
    _headers: usize,
    _body: usize,
    _trailers: usize,
) {
    if TRAP_TOKENS.with(|t| t.borrow().contains(&token)) {
        trap("hostile: trapping in on_http_call_response");
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(ctx: u32, _headers: usize, _eos: u32) -> u32 {
    let words: Vec<String> = header(REQUEST_HEADERS, "x-hostile")
        .map(|v| {
            String::from_utf8_lossy(&v)
                .split(',')
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty())
                .collect()
        })
        .unwrap_or_default();
    WORDS.with(|w| w.borrow_mut().insert(ctx, words));
    if has(ctx, "trap-request-headers") {
        trap("hostile: trapping in on_request_headers");
    }
    if has(ctx, "loop") {
        spin();
    }
    if has(ctx, "grow") {
        grow();
    }
    if has(ctx, "recurse") {
        let depth = recurse(0);
        log(&format!("hostile: recursion ended at {depth}"));
    }
    if has(ctx, "headers-flood") {
        for i in 0..FLOOD {
            add_header(REQUEST_HEADERS, &format!("x-flood-{i}"), "v");
        }
    }
    if has(ctx, "log-flood") {
        let mut ok = 0;
        for i in 0..FLOOD {
            let line = format!("hostile: flood line {i}");
            // SAFETY: a valid slice.
            if unsafe { proxy_log(LOG_WARN, line.as_ptr(), line.len()) } == OK {
                ok += 1;
            }
        }
        add_header(REQUEST_HEADERS, "x-hostile-logged", &ok.to_string());
    }
    if has(ctx, "metric-flood") {
        let refused = (0..FLOOD)
            .filter(|i| {
                let name = format!("hostile_flood_{i}");
                let mut id = 0;
                // SAFETY: valid name slice and out-pointer to a local.
                unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) != OK }
            })
            .count();
        add_header(REQUEST_HEADERS, "x-hostile-refused", &refused.to_string());
    }
    if has(ctx, "queue-flood") {
        let name = "hostile-flood";
        let mut id = 0;
        // SAFETY: valid name slice and out-pointer to a local.
        unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) };
        let item = vec![b'q'; 1024];
        let refused = (0..FLOOD)
            // SAFETY: a valid slice.
            .filter(|_| unsafe { proxy_enqueue_shared_queue(id, item.as_ptr(), item.len()) } != OK)
            .count();
        add_header(REQUEST_HEADERS, "x-hostile-refused", &refused.to_string());
    }
    if has(ctx, "shared-flood") {
        let value = vec![b's'; 1024];
        let refused = (0..FLOOD)
            .filter(|i| {
                let key = format!("hostile-flood-{i}");
                // SAFETY: valid slices.
                unsafe {
                    proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), 0)
                        != OK
                }
            })
            .count();
        add_header(REQUEST_HEADERS, "x-hostile-refused", &refused.to_string());
    }
    if has(ctx, "queue-trap") {
        // Registering again makes this (live) replica the queue's owner, told of the item.
        let name = "hostile-trap";
        let mut id = 0;
        // SAFETY: a valid name slice, an out-pointer to a local, a valid item slice.
        unsafe {
            if proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) == OK {
                let item = b"trap";
                proxy_enqueue_shared_queue(id, item.as_ptr(), item.len());
            }
        }
        respond(200, "queued");
        return 1;
    }
    if has(ctx, "callout-trap") {
        let cluster = header(REQUEST_HEADERS, "x-hostile-cluster")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_else(|| "backend".to_string());
        let headers = serialize(&[
            (":method", "GET"),
            (":path", "/hostile-callout"),
            (":authority", "hostile"),
        ]);
        let mut token = 0;
        // SAFETY: valid slices and an out-pointer to a local.
        let status = unsafe {
            proxy_http_call(
                cluster.as_ptr(),
                cluster.len(),
                headers.as_ptr(),
                headers.len(),
                std::ptr::null(),
                0,
                std::ptr::null(),
                0,
                5_000,
                &mut token,
            )
        };
        if status == OK {
            TRAP_TOKENS.with(|t| t.borrow_mut().push(token));
            return 1;
        }
        trap("hostile: the callout could not start");
    }
    if has(ctx, "oob") {
        let report = out_of_bounds();
        add_header(REQUEST_HEADERS, "x-hostile-oob", &report);
    }
    if has(ctx, "pause") {
        return 1;
    }
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_body(ctx: u32, _size: usize, _eos: u32) -> u32 {
    if has(ctx, "trap-request-body") {
        trap("hostile: trapping in on_request_body");
    }
    if has(ctx, "body-flood") {
        let chunk = vec![b'b'; 1024 * 1024];
        for _ in 0..1000 {
            // A start past the end appends.
            // SAFETY: a valid slice.
            unsafe {
                proxy_set_buffer_bytes(REQUEST_BODY, usize::MAX, 0, chunk.as_ptr(), chunk.len())
            };
        }
    }
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_trailers(ctx: u32, _n: usize) -> u32 {
    if has(ctx, "trap-request-trailers") {
        trap("hostile: trapping in on_request_trailers");
    }
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(ctx: u32, _headers: usize, _eos: u32) -> u32 {
    if has(ctx, "trap-response-headers") {
        trap("hostile: trapping in on_response_headers");
    }
    add_header(RESPONSE_HEADERS, "x-hostile", "ok");
    add_header(RESPONSE_HEADERS, "x-hostile-configured", &configured());
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_body(ctx: u32, _size: usize, _eos: u32) -> u32 {
    if has(ctx, "trap-response-body") {
        trap("hostile: trapping in on_response_body");
    }
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_trailers(ctx: u32, _n: usize) -> u32 {
    if has(ctx, "trap-response-trailers") {
        trap("hostile: trapping in on_response_trailers");
    }
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_done(ctx: u32) -> u32 {
    if has(ctx, "trap-done") {
        trap("hostile: trapping in on_done");
    }
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_log(ctx: u32) {
    if has(ctx, "trap-log") {
        trap("hostile: trapping in on_log");
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(ctx: u32) {
    WORDS.with(|w| w.borrow_mut().remove(&ctx));
}

/// Answers the request with `status` and `body`.
fn respond(status: u32, body: &str) {
    // SAFETY: a valid body slice; absent details and headers.
    unsafe {
        proxy_send_local_response(
            status,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            std::ptr::null(),
            0,
            -1,
        )
    };
}

/// The ABI's header-map serialization.
fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn grow() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![1; 1024 * 1024]);
        std::hint::black_box(&held);
    }
}

/// Never returns normally: each frame keeps a buffer live, so the stack overflows.
#[allow(unconditional_recursion)] // the point: a stack overflow trap
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    recurse(depth + 1).wrapping_add(frame[depth as usize % 32])
}

/// Calls host functions with pointers past the end of memory (and lengths past it); the host
/// must answer each with a status, never trap or panic. Returns `name=status` pairs.
fn out_of_bounds() -> String {
    let bad = BAD as *mut u8;
    let badp = BAD as *mut *mut u8;
    let badl = BAD as *mut usize;
    let badu = BAD as *mut u32;
    let key = "x-hostile";
    let mut out = Vec::new();
    // SAFETY: the point of this function: the host must check every pointer before use.
    unsafe {
        let mut push = |name: &str, status: u32| out.push(format!("{name}={status}"));
        push("log", proxy_log(LOG_WARN, bad, 1 << 20));
        push(
            "get_buffer_bytes",
            proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, 10, badp, badl),
        );
        push(
            "set_buffer_bytes",
            proxy_set_buffer_bytes(REQUEST_BODY, 0, 0, bad, 100),
        );
        push(
            "get_buffer_status",
            proxy_get_buffer_status(PLUGIN_CONFIGURATION, badl, badu),
        );
        push(
            "get_header_map_value",
            proxy_get_header_map_value(REQUEST_HEADERS, bad, 4, badp, badl),
        );
        push(
            "get_header_map_pairs",
            proxy_get_header_map_pairs(REQUEST_HEADERS, badp, badl),
        );
        push(
            "get_header_map_size",
            proxy_get_header_map_size(REQUEST_HEADERS, badl),
        );
        push(
            "set_header_map_pairs",
            proxy_set_header_map_pairs(REQUEST_HEADERS, bad, 64),
        );
        push(
            "add_header_map_value",
            proxy_add_header_map_value(REQUEST_HEADERS, key.as_ptr(), key.len(), bad, 8),
        );
        push(
            "replace_header_map_value",
            proxy_replace_header_map_value(REQUEST_HEADERS, bad, 8, key.as_ptr(), key.len()),
        );
        push(
            "remove_header_map_value",
            proxy_remove_header_map_value(REQUEST_HEADERS, bad, 8),
        );
        push(
            "get_current_time_nanoseconds",
            proxy_get_current_time_nanoseconds(BAD as *mut u64),
        );
        push(
            "set_shared_data",
            proxy_set_shared_data(bad, 4, key.as_ptr(), key.len(), 0),
        );
        push(
            "get_shared_data",
            proxy_get_shared_data(bad, 4, badp, badl, badu),
        );
        push(
            "register_shared_queue",
            proxy_register_shared_queue(bad, 4, badu),
        );
        push(
            "resolve_shared_queue",
            proxy_resolve_shared_queue(bad, 4, bad, 4, badu),
        );
        push(
            "enqueue_shared_queue",
            proxy_enqueue_shared_queue(1, bad, 4),
        );
        push(
            "dequeue_shared_queue",
            proxy_dequeue_shared_queue(1, badp, badl),
        );
        push("define_metric", proxy_define_metric(0, bad, 4, badu));
        push("get_metric", proxy_get_metric(1, BAD as *mut u64));
        push(
            "send_local_response",
            proxy_send_local_response(500, bad, 4, bad, 4, bad, 4, -1),
        );
        push(
            "http_call",
            proxy_http_call(bad, 4, bad, 4, bad, 4, bad, 4, 1000, badu),
        );
        push("get_property", proxy_get_property(bad, 4, badp, badl));
        push("set_property", proxy_set_property(bad, 4, bad, 4));
        push("get_status", proxy_get_status(badu, badp, badl));
        push(
            "call_foreign_function",
            proxy_call_foreign_function(bad, 4, bad, 4, badp, badl),
        );
    }
    out.join(",")
}
