//! Shared-queue probe (raw ABI v0.2.1 exports, no SDK).
//!
//! `on_configure` registers queue `conf-q` (twice, to see the second registration open the
//! same queue), resolves it by its `vm_id` and name, resolves names that do not exist, and
//! dequeues from the empty queue. Each request resolves the queue again and enqueues
//! `item-<n>`; `on_queue_ready` observes the context and queue it is called for and drains the
//! queue. Enqueueing to and dequeueing from an unknown queue id are observed too.

use std::cell::Cell;

use wasmesh_conformance_probe_support::{self as s, raw};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

thread_local! {
    static ROOT: Cell<u32> = const { Cell::new(0) };
    static QUEUE: Cell<u32> = const { Cell::new(0) };
    static SENT: Cell<u32> = const { Cell::new(0) };
}

const NAME: &str = "conf-q";
const UNKNOWN_QUEUE: u32 = 0x7fff_fff0;

fn register(name: &str) -> (u32, u32) {
    let mut id = 0u32;
    // SAFETY: the pointer and length describe `name`; the id is a local.
    let status = unsafe { raw::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) };
    (status, id)
}

fn resolve(vm_id: &str, name: &str) -> (u32, u32) {
    let mut id = 0u32;
    // SAFETY: pointers and lengths describe `vm_id` and `name`; the id is a local.
    let status = unsafe {
        raw::proxy_resolve_shared_queue(
            vm_id.as_ptr(),
            vm_id.len(),
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    };
    (status, id)
}

fn vm_id() -> String {
    match s::get_property(&["plugin_vm_id"]) {
        (0, Some(v)) => String::from_utf8_lossy(&v).into_owned(),
        _ => String::new(),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(ctx: u32, parent: u32) {
    if parent == 0 {
        ROOT.with(|r| r.set(ctx));
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_ctx: u32, _size: u32) -> u32 {
    let (status, first) = register(NAME);
    s::observe_status("queue.register_status", status);
    let (_, second) = register(NAME);
    s::observe(
        "queue.register_again",
        format!("first={first} second={second}"),
    );
    QUEUE.with(|q| q.set(first));
    let vm = vm_id();
    let (status, resolved) = resolve(&vm, NAME);
    s::observe(
        "queue.resolve",
        format!(
            "{} resolved={resolved} registered={first}",
            s::status_name(status)
        ),
    );
    s::observe_status(
        "queue.resolve_unknown_name",
        resolve(&vm, "conf-no-such-queue").0,
    );
    s::observe_status("queue.resolve_other_vm", resolve("conf-no-such-vm", NAME).0);
    s::observe_result("queue.dequeue_empty", s::dequeue(first));
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _n: u32, _eos: u32) -> u32 {
    let (_, id) = resolve(&vm_id(), NAME);
    let n = SENT.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    s::observe_status(
        "queue.enqueue_status",
        s::enqueue(id, format!("item-{n}").as_bytes()),
    );
    s::observe_status("queue.enqueue_unknown", s::enqueue(UNKNOWN_QUEUE, b"x"));
    s::observe_result("queue.dequeue_unknown", s::dequeue(UNKNOWN_QUEUE));
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_queue_ready(ctx: u32, queue: u32) {
    s::observe(
        "queue.ready",
        format!(
            "context={ctx} root={} queue={queue} registered={}",
            ROOT.with(Cell::get),
            QUEUE.with(Cell::get)
        ),
    );
    s::observe_result("queue.dequeued", s::dequeue(queue));
    s::observe_result("queue.dequeue_drained", s::dequeue(queue));
}
