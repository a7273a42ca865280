//! Putting a finished span on the shared queue without trapping.
//!
//! The `proxy-wasm` crate's `enqueue_shared_queue` accepts only `OK` and `NOT_FOUND` and
//! panics on any other status. A host may refuse an item otherwise — wasmesh answers
//! `INTERNAL_FAILURE` once a queue holds 10 000 items — and a panic in `on_log` would trap and
//! cost the VM replica (and the spans its root context holds). So this calls the host function
//! directly and treats every status but `OK` as "not queued", which the caller counts as a
//! drop.

/// Whether the host took `item` onto queue `queue_id`.
#[cfg(target_arch = "wasm32")]
pub fn enqueue(queue_id: u32, item: &[u8]) -> bool {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_enqueue_shared_queue(
            queue_id: u32,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
    }
    // SAFETY: the host reads `item.len()` bytes at `item.as_ptr()`, which `item` keeps alive
    // for the call; the signature is the ABI's (three i32 in, a status out).
    let status = unsafe { proxy_enqueue_shared_queue(queue_id, item.as_ptr(), item.len()) };
    status == 0
}

/// Native builds (unit tests) have no host; nothing is ever queued there.
#[cfg(not(target_arch = "wasm32"))]
pub fn enqueue(_queue_id: u32, _item: &[u8]) -> bool {
    false
}
