//! Shared queues: register (twice), resolve by `vm_id` and name, enqueue, the root context told
//! with `proxy_on_queue_ready`, dequeue until empty, and unknown names and ids.

use std::time::Duration;

use crate::capture;
use crate::check::{Check, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::observe::{Facts, Run};
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "shared-queue";
const VM: &str = "conf-queue";

/// The `a=<x> b=<y>` values of `value`, in order.
fn values(value: &str) -> Vec<&str> {
    value
        .split(' ')
        .filter_map(|p| p.split_once('=').map(|(_, v)| v))
        .collect()
}

fn same_queue(value: &str, _: &Facts) -> bool {
    matches!(values(value)[..], [a, b] if a == b && a != "0")
}

fn resolved(value: &str, _: &Facts) -> bool {
    value.starts_with("OK ") && same_queue(value, &Facts::new())
}

fn ready(value: &str, _: &Facts) -> bool {
    matches!(values(value)[..], [ctx, root, queue, registered] if ctx == root && queue == registered)
}

pub fn checks() -> Vec<Check> {
    const REGISTER: &str = "spec v0.2.1 proxy_register_shared_queue (cpp-host: registering an existing name opens it, same id)";
    const RESOLVE: &str = "spec v0.2.1 proxy_resolve_shared_queue: the id of queue name in vm_id, NOT_FOUND if there is none";
    const QUEUE: &str = "spec v0.2.1 Shared Queues";
    vec![
        eq("queue.register_status", "OK", REGISTER).proves(&["proxy_register_shared_queue"]),
        Check::new(
            "queue.register_again",
            Expect::Holds("the same non-zero id", same_queue),
            REGISTER,
        )
        .proves(&["proxy_register_shared_queue"]),
        Check::new(
            "queue.resolve",
            Expect::Holds("OK, the registered id", resolved),
            RESOLVE,
        )
        .proves(&["proxy_resolve_shared_queue"]),
        eq("queue.resolve_unknown_name", "NOT_FOUND", RESOLVE)
            .proves(&["proxy_resolve_shared_queue", "proxy_status_t"]),
        eq("queue.resolve_other_vm", "NOT_FOUND", RESOLVE).proves(&["proxy_resolve_shared_queue"]),
        eq(
            "queue.dequeue_empty",
            "EMPTY",
            "spec v0.2.1 proxy_dequeue_shared_queue: EMPTY when there is nothing",
        )
        .proves(&["proxy_dequeue_shared_queue", "proxy_status_t"]),
        eq("queue.enqueue_status", "OK", QUEUE).proves(&["proxy_enqueue_shared_queue"]),
        eq(
            "queue.enqueue_unknown",
            "NOT_FOUND",
            "spec v0.2.1 proxy_enqueue_shared_queue: NOT_FOUND for an unknown queue",
        )
        .proves(&["proxy_enqueue_shared_queue"]),
        eq(
            "queue.dequeue_unknown",
            "NOT_FOUND",
            "spec v0.2.1 proxy_dequeue_shared_queue: NOT_FOUND for an unknown queue",
        )
        .proves(&["proxy_dequeue_shared_queue"]),
        Check::new(
            "queue.ready",
            Expect::Holds(
                "called for the registering root context, with the queue's id",
                ready,
            ),
            "spec v0.2.1 proxy_on_queue_ready(plugin_context_id, queue_id): items were enqueued",
        )
        .proves(&["proxy_on_queue_ready"]),
        eq("queue.dequeued", "OK item-1", QUEUE).proves(&["proxy_dequeue_shared_queue"]),
        eq("queue.dequeue_drained", "EMPTY", QUEUE).proves(&["proxy_dequeue_shared_queue"]),
    ]
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load_with(probes::rust(PROBE)?, "shared-queue", |b| b.vm_id(VM))?;
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    // The queue notification runs before the harness call returns.
    stream
        .send_request_headers(
            &[
                (":method", "GET"),
                (":path", "/queue"),
                (":authority", "conformance.local"),
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
    let upstream = Upstream::named("queue").await?;
    let name = capture::unique("shared-queue");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", VM),
        "",
        "",
        "",
    );
    Proxy::with(&yaml, async |proxy: &Proxy| {
        proxy.get("/queue", &[]).await?;
        capture::wait_for(&name, "queue.dequeue_drained", Duration::from_secs(20)).await;
        Ok(())
    })
    .await?;
    let mut run = Run::default();
    run.lines(&name);
    Ok(run)
}
