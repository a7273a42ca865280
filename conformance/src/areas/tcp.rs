//! Network (TCP) filters: a new connection, each side's data held until that side ends then
//! rewritten (`DOWNSTREAM_DATA`, `UPSTREAM_DATA`), who closed each side, and a filter closing
//! the connection.

use std::sync::Arc;
use std::time::Duration;

use wasmesh_host::{Action, PeerType};

use crate::areas::lifecycle::same_as_root;
use crate::capture;
use crate::check::{Check, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env::{self, NoAttributes};
use crate::net::tcp::{self, Echo};
use crate::net::upstream::Upstream;
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "tcp";
const CLOSED: &str = "closed, nothing relayed";

pub fn checks() -> Vec<Check> {
    const DATA: &str = "spec v0.2.1 proxy_on_downstream_data/proxy_on_upstream_data(data_size, end_of_stream); PAUSE holds the data, which is delivered again with what follows";
    const BUFFER: &str = "spec v0.2.1 Buffers: DOWNSTREAM_DATA / UPSTREAM_DATA as modified is what the host forwards";
    const CLOSE: &str = "spec v0.2.1 proxy_on_*_connection_close(peer_type): REMOTE when the peer closed, LOCAL when the host did (Envoy)";
    vec![
        Check::new(
            "tcp.new_connection_parent",
            Expect::Holds("a stream context of the root context", same_as_root),
            "spec v0.2.1 proxy_on_new_connection(stream_context_id)",
        )
        .proves(&["proxy_on_new_connection", "proxy_on_context_create"]),
        eq("tcp.downstream_first", "size=5 eos=0 data=hello", DATA)
            .proves(&["proxy_on_downstream_data", "proxy_buffer_type_t"]),
        eq("tcp.downstream_last", "size=5 data=hello", DATA)
            .proves(&["proxy_on_downstream_data", "proxy_action_t"]),
        eq("tcp.downstream_rewrite_status", "OK", BUFFER).proves(&["proxy_set_buffer_bytes"]),
        eq("tcp.downstream_rewritten", "HELLO", BUFFER)
            .proves(&["proxy_set_buffer_bytes", "proxy_get_buffer_bytes"]),
        eq("tcp.upstream_received", "HELLO", BUFFER)
            .proves(&["proxy_on_downstream_data", "proxy_set_buffer_bytes"]),
        eq("tcp.upstream_first", "size=5 eos=0 data=HELLO", DATA)
            .proves(&["proxy_on_upstream_data", "proxy_buffer_type_t"]),
        eq("tcp.upstream_last", "size=5 data=HELLO", DATA)
            .proves(&["proxy_on_upstream_data", "proxy_action_t"]),
        eq("tcp.upstream_append_status", "OK", BUFFER).proves(&["proxy_set_buffer_bytes"]),
        eq("tcp.client_received", "HELLO!", BUFFER)
            .proves(&["proxy_on_upstream_data", "proxy_set_buffer_bytes"]),
        eq("tcp.downstream_close_peer", "2", CLOSE)
            .proves(&["proxy_on_downstream_connection_close", "proxy_peer_type_t"]),
        eq("tcp.upstream_close_peer", "2", CLOSE)
            .proves(&["proxy_on_upstream_connection_close", "proxy_peer_type_t"]),
        eq(
            "tcp.close_stream_status",
            "OK",
            "spec v0.2.1 proxy_close_stream(DOWNSTREAM)",
        )
        .proves(&["proxy_close_stream", "proxy_stream_type_t"]),
        eq(
            "tcp.closed_by_filter",
            CLOSED,
            "spec v0.2.1 proxy_close_stream: the host closes the connection",
        )
        .proves(&["proxy_close_stream", "proxy_stream_type_t"]),
        eq("tcp.closed_by_filter_downstream_peer", "1", CLOSE)
            .proves(&["proxy_on_downstream_connection_close", "proxy_peer_type_t"]),
    ]
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "tcp", "")?;
    let plugin = loaded.harness.plugin().clone();
    let mut run = Run::default();
    let mut s = plugin
        .network_stream(Arc::new(NoAttributes))
        .doing("a network stream")?;
    s.on_new_connection().doing("new connection")?;
    // The embedder's side of PAUSE: hold what the filter left, hand it over again at the end.
    s.data.downstream_data = b"hello".to_vec();
    if s.on_downstream_data(false).doing("downstream data")? == Action::Pause {
        let held = std::mem::take(&mut s.data.downstream_data);
        s.data.downstream_data = held;
    }
    s.on_downstream_data(true).doing("downstream end")?;
    let forwarded = std::mem::take(&mut s.data.downstream_data);
    run.obs
        .add("tcp.upstream_received", String::from_utf8_lossy(&forwarded));
    s.data.upstream_data = forwarded;
    if s.on_upstream_data(false).doing("upstream data")? == Action::Pause {
        let held = std::mem::take(&mut s.data.upstream_data);
        s.data.upstream_data = held;
    }
    s.on_upstream_data(true).doing("upstream end")?;
    run.obs.add(
        "tcp.client_received",
        String::from_utf8_lossy(&s.data.upstream_data),
    );
    s.on_downstream_close(PeerType::Remote)
        .doing("downstream close")?;
    s.on_upstream_close(PeerType::Remote)
        .doing("upstream close")?;
    drop(s);

    let mut s = plugin
        .network_stream(Arc::new(NoAttributes))
        .doing("a network stream")?;
    s.on_new_connection().doing("new connection")?;
    s.data.downstream_data = b"close".to_vec();
    s.on_downstream_data(false).doing("downstream data")?;
    // The host's part is telling the embedder; the embedder closes both sides itself.
    let closed = if s.data.close_requested {
        CLOSED
    } else {
        "left open"
    };
    run.obs.add("tcp.closed_by_filter", closed);
    s.on_downstream_close(PeerType::Local)
        .doing("downstream close")?;
    s.on_upstream_close(PeerType::Local)
        .doing("upstream close")?;
    drop(s);
    run.harness(&loaded.harness);
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("tcp").await?;
    let echo = Echo::start().await?;
    let name = capture::unique("tcp");
    let listeners = "  - name: tcp\n    address: \"127.0.0.1:0\"\n    tcp_proxy: { cluster: echo }\n    filter_chain: probe\n";
    let clusters = format!("  - name: echo\n    endpoints: [\"{}\"]\n", echo.addr);
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        "",
        &clusters,
        listeners,
    );
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        let addr = proxy.listener("tcp")?;
        let answer = tcp::exchange(addr, b"hello").await?;
        run.obs
            .add("tcp.client_received", String::from_utf8_lossy(&answer));
        run.obs.add(
            "tcp.upstream_received",
            echo.received()
                .first()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        );
        let limit = Duration::from_secs(20);
        capture::wait_for(&name, "tcp.upstream_close_peer", limit).await;
        let answer = tcp::send_and_wait_for_close(addr, b"close").await?;
        let closed = if answer.is_empty() {
            CLOSED.to_string()
        } else {
            format!("relayed {}", String::from_utf8_lossy(&answer))
        };
        run.obs.add("tcp.closed_by_filter", closed);
        capture::wait_for(&name, "tcp.closed_by_filter_downstream_peer", limit).await;
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
