//! Network (TCP) filter probe (raw ABI v0.2.1 exports, no SDK).
//!
//! Each side's data is held (the callbacks return `Pause` until that side ends), so the probe
//! sees each side's bytes whole however they were split: the client's bytes are upper-cased
//! (`DOWNSTREAM_DATA` rewritten) and `!` is appended to the upstream's (`UPSTREAM_DATA`). A
//! connection whose client sends `close` is closed by the filter (`proxy_close_stream`).
//! Observed: the new connection's parent context, the first and last data callback of each
//! side, the edit statuses, and who closed each side.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use wasmesh_conformance_probe_support::{self as s, buffer, raw, stream};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[derive(Default)]
struct State {
    root: u32,
    parents: BTreeMap<u32, u32>,
    /// Connections that already had a data callback, per side.
    seen: BTreeSet<(u32, u32)>,
    /// Connections the filter closed.
    closing: BTreeSet<u32>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(ctx: u32, parent: u32) {
    with(|s| {
        if parent == 0 {
            s.root = ctx;
        } else {
            s.parents.insert(ctx, parent);
        }
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_new_connection(ctx: u32) -> u32 {
    let (parent, root) = with(|s| (s.parents.get(&ctx).copied().unwrap_or(0), s.root));
    s::observe(
        "tcp.new_connection_parent",
        format!("parent={parent} root={root}"),
    );
    s::CONTINUE
}

fn data(ty: u32, size: u32) -> Vec<u8> {
    s::get_buffer(ty, 0, size as usize).1.unwrap_or_default()
}

/// Observes the arguments and bytes of a side's first data callback.
fn first(ctx: u32, side: u32, name: &str, size: u32, eos: u32, bytes: &[u8]) {
    if with(|s| s.seen.insert((ctx, side))) {
        s::observe(
            &format!("tcp.{name}_first"),
            format!("size={size} eos={eos} data={}", s::show(bytes)),
        );
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_downstream_data(ctx: u32, size: u32, eos: u32) -> u32 {
    let bytes = data(buffer::DOWNSTREAM_DATA, size);
    if bytes == b"close" {
        with(|s| s.closing.insert(ctx));
        // SAFETY: a plain integer argument.
        let status = unsafe { raw::proxy_close_stream(stream::DOWNSTREAM) };
        s::observe_status("tcp.close_stream_status", status);
        return s::CONTINUE;
    }
    first(ctx, 0, "downstream", size, eos, &bytes);
    if eos == 0 {
        return s::PAUSE;
    }
    s::observe(
        "tcp.downstream_last",
        format!("size={size} data={}", s::show(&bytes)),
    );
    let upper = bytes.to_ascii_uppercase();
    s::observe_status(
        "tcp.downstream_rewrite_status",
        s::set_buffer(buffer::DOWNSTREAM_DATA, 0, bytes.len(), &upper),
    );
    s::observe_bytes(
        "tcp.downstream_rewritten",
        &data(buffer::DOWNSTREAM_DATA, u32::MAX >> 1),
    );
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_upstream_data(ctx: u32, size: u32, eos: u32) -> u32 {
    let bytes = data(buffer::UPSTREAM_DATA, size);
    first(ctx, 1, "upstream", size, eos, &bytes);
    if eos == 0 {
        return s::PAUSE;
    }
    s::observe(
        "tcp.upstream_last",
        format!("size={size} data={}", s::show(&bytes)),
    );
    s::observe_status(
        "tcp.upstream_append_status",
        s::set_buffer(buffer::UPSTREAM_DATA, bytes.len(), 0, b"!"),
    );
    s::CONTINUE
}

fn closed(ctx: u32, side: &str, peer: u32) {
    let closing = with(|s| s.closing.contains(&ctx));
    let id = if closing {
        format!("tcp.closed_by_filter_{side}_peer")
    } else {
        format!("tcp.{side}_close_peer")
    };
    s::observe(&id, peer);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_downstream_connection_close(ctx: u32, peer: u32) {
    closed(ctx, "downstream", peer);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_upstream_connection_close(ctx: u32, peer: u32) {
    closed(ctx, "upstream", peer);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(ctx: u32) {
    with(|s| {
        s.parents.remove(&ctx);
        s.seen.retain(|(c, _)| *c != ctx);
        s.closing.remove(&ctx);
    });
}
