//! TCP proxying (a listener with `tcp_proxy`, Envoy's filter of that name): each accepted
//! connection (after TLS termination, if the listener has TLS) is joined to a connection to one
//! endpoint of the listener's cluster, chosen by the cluster's balancer, made by the endpoint's
//! connector (upstream TLS, connect timeout, `max_connections`), and fed to outlier detection.
//! Bytes are relayed both ways, each direction half-closed when its sender finishes, until both
//! are done or nothing moved for `idle_timeout`.

use std::time::Duration;

use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cluster::outlier::Outcome;
use crate::config::TcpProxy;
use crate::forward::{ConnectionInfo, ListenerContext};

/// Read size per direction: as much as a few TLS records, without holding much per connection.
const CHUNK: usize = 16 * 1024;

/// Proxies one downstream connection to `tcp.cluster`.
pub async fn serve<IO>(
    downstream: IO,
    conn: &ConnectionInfo,
    listener: &ListenerContext,
    tcp: &TcpProxy,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let snapshot = listener.snapshot.load_full();
    let Some(cluster) = snapshot.clusters.get(&tcp.cluster) else {
        tracing::warn!(listener = %listener.name, cluster = %tcp.cluster, "tcp_proxy cluster missing; closing");
        return;
    };
    let Some(upstream) = cluster.pick(&HeaderMap::new()) else {
        cluster.counters.connect_failure.increment(1);
        tracing::debug!(listener = %listener.name, cluster = %tcp.cluster, "no endpoint available; closing");
        return;
    };
    let in_flight = upstream.endpoint.start_request();
    let connected = upstream.pool.connector().connect().await;
    let up = match connected {
        Ok(up) => up,
        Err(err) => {
            cluster.observe(upstream.index, Outcome::GatewayFailure);
            cluster.counters.connect_failure.increment(1);
            tracing::debug!(listener = %listener.name, peer = %conn.peer, error = %err, "upstream connect failed; closing");
            return;
        }
    };
    cluster.observe(upstream.index, Outcome::Success);
    let started = std::time::Instant::now();
    let moved = relay(downstream, up, tcp.idle_timeout).await;
    in_flight.finish(started.elapsed());
    metrics::counter!("wasmesh_tcp_sent_bytes_total", "listener" => listener.name.clone())
        .increment(moved.upstream);
    metrics::counter!("wasmesh_tcp_received_bytes_total", "listener" => listener.name.clone())
        .increment(moved.downstream);
}

/// Bytes relayed: `upstream` went downstream → upstream, `downstream` the other way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub upstream: u64,
    pub downstream: u64,
}

/// Relays bytes both ways until both sides finished or `idle` passed without any.
pub async fn relay<D, U>(mut downstream: D, mut upstream: U, idle: Duration) -> Moved
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut moved = Moved::default();
    let (mut from_down, mut from_up) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let (mut down_open, mut up_open) = (true, true);
    while down_open || up_open {
        tokio::select! {
            read = downstream.read(&mut from_down), if down_open => match read {
                Ok(0) | Err(_) => {
                    // The client finished sending: pass the half-close on.
                    down_open = false;
                    let _ = upstream.shutdown().await;
                }
                Ok(n) => {
                    if upstream.write_all(&from_down[..n]).await.is_err() {
                        break;
                    }
                    moved.upstream += n as u64;
                }
            },
            read = upstream.read(&mut from_up), if up_open => match read {
                Ok(0) | Err(_) => {
                    up_open = false;
                    let _ = downstream.shutdown().await;
                }
                Ok(n) => {
                    if downstream.write_all(&from_up[..n]).await.is_err() {
                        break;
                    }
                    moved.downstream += n as u64;
                }
            },
            () = tokio::time::sleep(idle) => {
                tracing::debug!(?idle, "tcp connection idle; closing");
                break;
            }
        }
    }
    moved
}
