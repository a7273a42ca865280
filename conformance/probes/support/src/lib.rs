//! What every conformance probe shares (see `conformance/README.md`).
//!
//! A probe reports what it *observed* and never decides whether that is right: each
//! observation is one `proxy_log` line at INFO, `observed <check-id> <value>`, which the suite
//! (`wasmesh-conformance`) collects and compares with the value the spec or Envoy gives.
//!
//! - [`raw`]: every `env.proxy_*` import of ABI v0.2.1 and v0.1.0 and the WASI calls the probes
//!   make, declared by hand so a probe sees the exact status the host answers (the `proxy-wasm`
//!   SDK panics on statuses it does not expect, which hides them);
//! - [`observe`] and friends: the observation lines;
//! - wrappers returning `(status, value)` for the calls that hand back memory the host
//!   allocated through the module's `proxy_on_memory_allocate`;
//! - [`pairs`] and [`parse_pairs`]: the ABI's header-map serialization;
//! - [`export_allocator!`]: the `proxy_on_memory_allocate` export for probes written without
//!   the SDK (which brings its own).

use std::fmt::Display;

/// The raw imports, with the ABI's types spelled as the wasm32 integers they are.
pub mod raw {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_log(level: u32, ptr: *const u8, len: usize) -> u32;
        pub fn proxy_get_log_level(out: *mut u32) -> u32;
        pub fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_done() -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_get_buffer_bytes(
            ty: u32,
            start: usize,
            max: usize,
            out_ptr: *mut *mut u8,
            out_len: *mut usize,
        ) -> u32;
        pub fn proxy_get_buffer_status(ty: u32, out_len: *mut usize, out_flags: *mut u32) -> u32;
        pub fn proxy_set_buffer_bytes(
            ty: u32,
            start: usize,
            size: usize,
            ptr: *const u8,
            len: usize,
        ) -> u32;
        pub fn proxy_get_header_map_size(map: u32, out: *mut usize) -> u32;
        pub fn proxy_get_header_map_pairs(
            map: u32,
            out_ptr: *mut *mut u8,
            out_len: *mut usize,
        ) -> u32;
        pub fn proxy_set_header_map_pairs(map: u32, ptr: *const u8, len: usize) -> u32;
        pub fn proxy_get_header_map_value(
            map: u32,
            key_ptr: *const u8,
            key_len: usize,
            out_ptr: *mut *mut u8,
            out_len: *mut usize,
        ) -> u32;
        pub fn proxy_add_header_map_value(
            map: u32,
            key_ptr: *const u8,
            key_len: usize,
            value_ptr: *const u8,
            value_len: usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map: u32,
            key_ptr: *const u8,
            key_len: usize,
            value_ptr: *const u8,
            value_len: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(map: u32, key_ptr: *const u8, key_len: usize) -> u32;
        pub fn proxy_continue_stream(stream: u32) -> u32;
        pub fn proxy_close_stream(stream: u32) -> u32;
        pub fn proxy_get_status(
            code_out: *mut u32,
            out_ptr: *mut *mut u8,
            out_len: *mut usize,
        ) -> u32;
        pub fn proxy_send_local_response(
            status: u32,
            details_ptr: *const u8,
            details_len: usize,
            body_ptr: *const u8,
            body_len: usize,
            headers_ptr: *const u8,
            headers_len: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_http_call(
            upstream_ptr: *const u8,
            upstream_len: usize,
            headers_ptr: *const u8,
            headers_len: usize,
            body_ptr: *const u8,
            body_len: usize,
            trailers_ptr: *const u8,
            trailers_len: usize,
            timeout_ms: u32,
            token_out: *mut u32,
        ) -> u32;
        pub fn proxy_grpc_call(
            upstream_ptr: *const u8,
            upstream_len: usize,
            service_ptr: *const u8,
            service_len: usize,
            method_ptr: *const u8,
            method_len: usize,
            metadata_ptr: *const u8,
            metadata_len: usize,
            message_ptr: *const u8,
            message_len: usize,
            timeout_ms: u32,
            token_out: *mut u32,
        ) -> u32;
        pub fn proxy_grpc_stream(
            upstream_ptr: *const u8,
            upstream_len: usize,
            service_ptr: *const u8,
            service_len: usize,
            method_ptr: *const u8,
            method_len: usize,
            metadata_ptr: *const u8,
            metadata_len: usize,
            token_out: *mut u32,
        ) -> u32;
        pub fn proxy_grpc_send(token: u32, ptr: *const u8, len: usize, end_stream: u32) -> u32;
        pub fn proxy_grpc_cancel(token: u32) -> u32;
        pub fn proxy_grpc_close(token: u32) -> u32;
        pub fn proxy_get_shared_data(
            key_ptr: *const u8,
            key_len: usize,
            out_ptr: *mut *mut u8,
            out_len: *mut usize,
            cas_out: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key_ptr: *const u8,
            key_len: usize,
            value_ptr: *const u8,
            value_len: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_register_shared_queue(
            name_ptr: *const u8,
            name_len: usize,
            id_out: *mut u32,
        ) -> u32;
        pub fn proxy_resolve_shared_queue(
            vm_ptr: *const u8,
            vm_len: usize,
            name_ptr: *const u8,
            name_len: usize,
            id_out: *mut u32,
        ) -> u32;
        pub fn proxy_enqueue_shared_queue(id: u32, ptr: *const u8, len: usize) -> u32;
        pub fn proxy_dequeue_shared_queue(
            id: u32,
            out_ptr: *mut *mut u8,
            out_len: *mut usize,
        ) -> u32;
        pub fn proxy_define_metric(
            ty: u32,
            name_ptr: *const u8,
            name_len: usize,
            id_out: *mut u32,
        ) -> u32;
        pub fn proxy_record_metric(id: u32, value: u64) -> u32;
        pub fn proxy_increment_metric(id: u32, delta: i64) -> u32;
        pub fn proxy_get_metric(id: u32, out: *mut u64) -> u32;
        pub fn proxy_get_property(
            path_ptr: *const u8,
            path_len: usize,
            out_ptr: *mut *mut u8,
            out_len: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path_ptr: *const u8,
            path_len: usize,
            value_ptr: *const u8,
            value_len: usize,
        ) -> u32;
        pub fn proxy_call_foreign_function(
            name_ptr: *const u8,
            name_len: usize,
            args_ptr: *const u8,
            args_len: usize,
            out_ptr: *mut *mut u8,
            out_len: *mut usize,
        ) -> u32;
    }

    /// The imports only ABI v0.1.0 has (a v0.1.0 probe declares them; the host links them).
    pub mod v0_1_0 {
        #[link(wasm_import_module = "env")]
        unsafe extern "C" {
            pub fn proxy_get_configuration(out_ptr: *mut *mut u8, out_len: *mut usize) -> u32;
            pub fn proxy_continue_request() -> u32;
            pub fn proxy_continue_response() -> u32;
            pub fn proxy_clear_route_cache() -> u32;
        }
    }

    // The WASI calls the probes make directly, to see their exact errno.
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        pub fn fd_write(fd: u32, iovs: *const u32, iovs_len: usize, written: *mut usize) -> u32;
        pub fn clock_time_get(clock: u32, precision: u64, out: *mut u64) -> u32;
        pub fn random_get(buf: *mut u8, len: usize) -> u32;
        pub fn environ_sizes_get(count: *mut usize, size: *mut usize) -> u32;
        pub fn environ_get(environ: *mut *mut u8, buf: *mut u8) -> u32;
        pub fn args_sizes_get(count: *mut usize, size: *mut usize) -> u32;
        pub fn args_get(argv: *mut *mut u8, buf: *mut u8) -> u32;
        pub fn proc_exit(code: u32) -> !;
    }
}

/// `proxy_map_type_t`.
pub mod map {
    pub const HTTP_REQUEST_HEADERS: u32 = 0;
    pub const HTTP_REQUEST_TRAILERS: u32 = 1;
    pub const HTTP_RESPONSE_HEADERS: u32 = 2;
    pub const HTTP_RESPONSE_TRAILERS: u32 = 3;
    pub const GRPC_CALL_INITIAL_METADATA: u32 = 4;
    pub const GRPC_CALL_TRAILING_METADATA: u32 = 5;
    pub const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: u32 = 7;
}

/// `proxy_buffer_type_t`.
pub mod buffer {
    pub const HTTP_REQUEST_BODY: u32 = 0;
    pub const HTTP_RESPONSE_BODY: u32 = 1;
    pub const DOWNSTREAM_DATA: u32 = 2;
    pub const UPSTREAM_DATA: u32 = 3;
    pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
    pub const GRPC_CALL_MESSAGE: u32 = 5;
    pub const VM_CONFIGURATION: u32 = 6;
    pub const PLUGIN_CONFIGURATION: u32 = 7;
    pub const FOREIGN_FUNCTION_ARGUMENTS: u32 = 8;
}

/// `proxy_stream_type_t`.
pub mod stream {
    pub const HTTP_REQUEST: u32 = 0;
    pub const HTTP_RESPONSE: u32 = 1;
    pub const DOWNSTREAM: u32 = 2;
    pub const UPSTREAM: u32 = 3;
}

/// `proxy_action_t`.
pub const CONTINUE: u32 = 0;
pub const PAUSE: u32 = 1;

/// `proxy_status_t` by name, as observations spell statuses (`OK`, `NOT_FOUND`, …).
pub fn status_name(status: u32) -> String {
    match status {
        0 => "OK".into(),
        1 => "NOT_FOUND".into(),
        2 => "BAD_ARGUMENT".into(),
        3 => "SERIALIZATION_FAILURE".into(),
        4 => "PARSE_FAILURE".into(),
        6 => "INVALID_MEMORY_ACCESS".into(),
        7 => "EMPTY".into(),
        8 => "CAS_MISMATCH".into(),
        10 => "INTERNAL_FAILURE".into(),
        12 => "UNIMPLEMENTED".into(),
        other => format!("STATUS_{other}"),
    }
}

/// `wasi_errno_t` by name for the values the ABI lists (others as `ERRNO_<n>`).
pub fn errno_name(errno: u32) -> String {
    match errno {
        0 => "SUCCESS".into(),
        8 => "BADF".into(),
        21 => "FAULT".into(),
        28 => "INVAL".into(),
        58 => "NOTSUP".into(),
        other => format!("ERRNO_{other}"),
    }
}

/// Logs `message` at INFO through `proxy_log`.
pub fn log(message: &str) {
    // SAFETY: the pointer and length describe `message`, alive for the call.
    unsafe {
        raw::proxy_log(2, message.as_ptr(), message.len());
    }
}

/// One observation: `observed <id> <value>`.
pub fn observe(id: &str, value: impl Display) {
    log(&format!("observed {id} {value}"));
}

/// An observation of a status: `observed <id> <STATUS_NAME>`.
pub fn observe_status(id: &str, status: u32) {
    observe(id, status_name(status));
}

/// An observation of bytes: as text when they are printable ASCII, else `hex:<hex>`.
pub fn observe_bytes(id: &str, bytes: &[u8]) {
    observe(id, show(bytes));
}

/// How observations spell bytes: printable ASCII as is, anything else `hex:<hex>`.
pub fn show(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        format!("hex:{}", hex(bytes))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An observation of a call that returns bytes: `<STATUS>` or `OK <value>`.
pub fn observe_result(id: &str, (status, value): (u32, Option<Vec<u8>>)) {
    match value {
        Some(v) if status == 0 && v.is_empty() => observe(id, "OK (empty)"),
        Some(v) if status == 0 => observe(id, format!("OK {}", show(&v))),
        _ => observe_status(id, status),
    }
}

/// Takes ownership of memory the host allocated with `proxy_on_memory_allocate`.
///
/// # Safety
///
/// `ptr` and `len` must be what a host call just wrote: `len` bytes the module's allocator
/// handed out for exactly that size (or a null pointer with 0).
unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        Vec::new()
    } else {
        // SAFETY: see the function's contract; the allocator below allocates exactly `len`.
        unsafe { Vec::from_raw_parts(ptr, len, len) }
    }
}

type Returned = (u32, Option<Vec<u8>>);

/// Runs a call that returns bytes through two out-pointers.
fn returned(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Returned {
    let mut ptr: *mut u8 = std::ptr::null_mut();
    let mut len: usize = 0;
    let status = call(&mut ptr, &mut len);
    if status == 0 {
        // SAFETY: on OK the host wrote a pointer its allocation call got from this module.
        (status, Some(unsafe { take(ptr, len) }))
    } else {
        (status, None)
    }
}

pub fn get_buffer(ty: u32, start: usize, max: usize) -> Returned {
    // SAFETY: out-pointers point at locals of `returned`.
    returned(|p, l| unsafe { raw::proxy_get_buffer_bytes(ty, start, max, p, l) })
}

pub fn buffer_status(ty: u32) -> (u32, usize) {
    let (mut len, mut flags) = (0usize, 0u32);
    // SAFETY: out-pointers point at locals.
    let status = unsafe { raw::proxy_get_buffer_status(ty, &mut len, &mut flags) };
    (status, len)
}

pub fn set_buffer(ty: u32, start: usize, size: usize, value: &[u8]) -> u32 {
    // SAFETY: the pointer and length describe `value`.
    unsafe { raw::proxy_set_buffer_bytes(ty, start, size, value.as_ptr(), value.len()) }
}

pub fn get_pairs(map: u32) -> Returned {
    // SAFETY: out-pointers point at locals of `returned`.
    returned(|p, l| unsafe { raw::proxy_get_header_map_pairs(map, p, l) })
}

pub fn map_size(map: u32) -> (u32, usize) {
    let mut size = 0usize;
    // SAFETY: the out-pointer points at a local.
    let status = unsafe { raw::proxy_get_header_map_size(map, &mut size) };
    (status, size)
}

pub fn set_pairs(map: u32, pairs_bytes: &[u8]) -> u32 {
    // SAFETY: the pointer and length describe `pairs_bytes`.
    unsafe { raw::proxy_set_header_map_pairs(map, pairs_bytes.as_ptr(), pairs_bytes.len()) }
}

pub fn get_value(map: u32, key: &str) -> Returned {
    // SAFETY: the key's pointer and length describe `key`; out-pointers are locals.
    returned(|p, l| unsafe { raw::proxy_get_header_map_value(map, key.as_ptr(), key.len(), p, l) })
}

/// A header value as text (lossy), if the map has it.
pub fn value_text(map: u32, key: &str) -> Option<String> {
    match get_value(map, key) {
        (0, Some(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
        _ => None,
    }
}

pub fn add_value(map: u32, key: &str, value: &[u8]) -> u32 {
    // SAFETY: pointers and lengths describe `key` and `value`.
    unsafe {
        raw::proxy_add_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len())
    }
}

pub fn replace_value(map: u32, key: &str, value: &[u8]) -> u32 {
    // SAFETY: pointers and lengths describe `key` and `value`.
    unsafe {
        raw::proxy_replace_header_map_value(
            map,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    }
}

pub fn remove_value(map: u32, key: &str) -> u32 {
    // SAFETY: the pointer and length describe `key`.
    unsafe { raw::proxy_remove_header_map_value(map, key.as_ptr(), key.len()) }
}

pub fn get_property(path: &[&str]) -> Returned {
    let joined = path.join("\0");
    // SAFETY: the path's pointer and length describe `joined`; out-pointers are locals.
    returned(|p, l| unsafe { raw::proxy_get_property(joined.as_ptr(), joined.len(), p, l) })
}

pub fn set_property(path: &[&str], value: &[u8]) -> u32 {
    let joined = path.join("\0");
    // SAFETY: pointers and lengths describe `joined` and `value`.
    unsafe { raw::proxy_set_property(joined.as_ptr(), joined.len(), value.as_ptr(), value.len()) }
}

pub fn get_shared_data(key: &str) -> (u32, Option<Vec<u8>>, u32) {
    let mut cas = 0u32;
    let (status, value) = returned(|p, l| {
        // SAFETY: the key's pointer and length describe `key`; out-pointers are locals.
        unsafe { raw::proxy_get_shared_data(key.as_ptr(), key.len(), p, l, &mut cas) }
    });
    (status, value, cas)
}

pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> u32 {
    // SAFETY: pointers and lengths describe `key` and `value`.
    unsafe { raw::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) }
}

pub fn call_foreign(name: &str, args: &[u8]) -> Returned {
    // SAFETY: pointers and lengths describe `name` and `args`; out-pointers are locals.
    returned(|p, l| unsafe {
        raw::proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), p, l)
    })
}

pub fn dequeue(id: u32) -> Returned {
    // SAFETY: out-pointers are locals of `returned`.
    returned(|p, l| unsafe { raw::proxy_dequeue_shared_queue(id, p, l) })
}

pub fn enqueue(id: u32, value: &[u8]) -> u32 {
    // SAFETY: the pointer and length describe `value`.
    unsafe { raw::proxy_enqueue_shared_queue(id, value.as_ptr(), value.len()) }
}

/// `proxy_get_status`: (status, code, message).
pub fn get_status() -> (u32, u32, Vec<u8>) {
    let mut code = 0u32;
    let (status, message) = returned(|p, l| {
        // SAFETY: out-pointers are locals.
        unsafe { raw::proxy_get_status(&mut code, p, l) }
    });
    (status, code, message.unwrap_or_default())
}

/// The plugin configuration (`PLUGIN_CONFIGURATION`) as text, empty if there is none.
pub fn plugin_config() -> String {
    match get_buffer(buffer::PLUGIN_CONFIGURATION, 0, usize::MAX >> 1) {
        (0, Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    }
}

/// A request header as text (lossy), if present.
pub fn request_header(key: &str) -> Option<String> {
    value_text(map::HTTP_REQUEST_HEADERS, key)
}

/// Serializes pairs as the ABI does: u32 count, then (u32 key length, u32 value length) per
/// pair, then each key and value followed by a NUL.
pub fn pairs(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses the ABI's serialized pairs; `None` if they are malformed.
pub fn parse_pairs(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((u32_at(4 + i * 8)?, u32_at(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut out = Vec::with_capacity(sizes.len());
    for (klen, vlen) in sizes {
        let key = bytes.get(at..at + klen)?;
        if bytes.get(at + klen) != Some(&0) {
            return None;
        }
        at += klen + 1;
        let value = bytes.get(at..at + vlen)?;
        if bytes.get(at + vlen) != Some(&0) {
            return None;
        }
        at += vlen + 1;
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    (at == bytes.len()).then_some(out)
}

/// The `proxy_on_memory_allocate` export for probes written without the SDK: hands out
/// exactly `size` bytes, which the probe later owns as a `Vec` of that capacity.
#[macro_export]
macro_rules! export_allocator {
    () => {
        #[unsafe(no_mangle)]
        pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
            let mut buf: Vec<u8> = Vec::with_capacity(size);
            let ptr = buf.as_mut_ptr();
            std::mem::forget(buf);
            ptr
        }
    };
}
