//! TCP proxying (a listener with `tcp_proxy`, Envoy's filter of that name): each accepted
//! connection (after TLS termination, if the listener has TLS) is joined to a connection to one
//! endpoint of the listener's cluster, chosen by the cluster's balancer, made by the endpoint's
//! connector (upstream TLS, connect timeout, `max_connections`), and fed to outlier detection.
//! Bytes are relayed both ways, each direction half-closed when its sender finishes, until both
//! are done or nothing moved for `idle_timeout`.
//!
//! The listener's `filter_chain` runs network filters, as Envoy's network Wasm filters:
//! `proxy_on_new_connection` before the upstream is dialled (a filter may hold the connection
//! until it continues it, e.g. after a callout, or close it), `proxy_on_downstream_data` on
//! bytes from the client in chain order and `proxy_on_upstream_data` on bytes from the upstream
//! in reverse order (each may rewrite `DOWNSTREAM_DATA`/`UPSTREAM_DATA`, or return `Pause` to
//! hold what it has until more arrives or the direction ends, up to the listener's
//! `filter_buffer_limit_bytes`, past which the connection is closed), `proxy_close_stream` closing
//! the connection, and the close callbacks when each side finishes.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wasmesh_host::{Action, FailurePolicy, HttpStream, PeerType, Plugin, StreamEnv};

use crate::cluster::outlier::Outcome;
use crate::config::TcpProxy;
use crate::filter::attributes::ConnectionAttributes;
use crate::forward::{ConnectionInfo, ListenerContext};

/// Read size per direction: as much as a few TLS records, without holding much per connection.
const CHUNK: usize = 16 * 1024;
/// Longest a network filter may hold a new connection before it continues or closes it.
const NEW_CONNECTION_LIMIT: Duration = Duration::from_secs(30);

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
    let env = Arc::new(ConnectionAttributes::new(
        conn,
        &listener.name,
        &tcp.cluster,
    ));
    let mut filters = match &listener.filter_chain {
        None => None,
        Some(name) => match snapshot.chains.get(name) {
            Some(chain) if chain.blocked.is_some() => {
                tracing::warn!(listener = %listener.name, chain = %name, "filter chain blocked (fail_closed); closing");
                return;
            }
            Some(chain) if !chain.plugins.is_empty() => {
                let stream_env: Arc<dyn StreamEnv> = env.clone();
                let limit = listener.filter_buffer_limit;
                match NetworkFilters::start(&chain.plugins, stream_env, limit).await {
                    Some(filters) => Some(filters),
                    None => return,
                }
            }
            _ => None,
        },
    };
    let Some(upstream) = cluster.pick(&HeaderMap::new()) else {
        cluster.counters.connect_failure.increment(1);
        tracing::debug!(listener = %listener.name, cluster = %tcp.cluster, "no endpoint available; closing");
        return;
    };
    let mut in_flight = upstream.endpoint.start_request();
    let connecting = std::time::Instant::now();
    let connected = upstream.pool.connector().connect().await;
    let up = match connected {
        Ok(up) => up,
        Err(err) => {
            in_flight.fail();
            cluster.observe(upstream.index, Outcome::GatewayFailure);
            cluster.counters.connect_failure.increment(1);
            tracing::debug!(listener = %listener.name, peer = %conn.peer, error = %err, "upstream connect failed; closing");
            if let Some(filters) = filters.as_mut() {
                filters.closed(Side::Upstream, PeerType::Remote);
            }
            return;
        }
    };
    env.set_upstream(&upstream.endpoint.address);
    cluster.observe(upstream.index, Outcome::Success);
    // The session's length says nothing of the endpoint's latency (Peak-EWMA would shun it for
    // minutes after a long one); its connect time does. The session still counts as load.
    let now = std::time::Instant::now();
    in_flight.record(now.saturating_duration_since(connecting), now);
    let moved = relay(downstream, up, tcp.idle_timeout, filters.as_mut()).await;
    drop(in_flight);
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

/// Which side of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Downstream,
    Upstream,
}

/// One direction's bytes read but not yet written, and whether its end (a half-close) is still
/// to be passed on once they are.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    written: usize,
    /// Written bytes may wait in the writer (TLS records in rustls's buffer) until flushed.
    flush: bool,
    shutdown: bool,
}

impl Pending {
    fn unwritten(&self) -> &[u8] {
        &self.bytes[self.written..]
    }

    /// Nothing is waiting to go out: the direction may read again.
    fn drained(&self) -> bool {
        self.written == self.bytes.len() && !self.flush && !self.shutdown
    }

    /// `bytes` to write next, then the half-close if `eos`.
    fn next(bytes: Vec<u8>, eos: bool) -> Pending {
        Pending {
            flush: !bytes.is_empty(),
            bytes,
            written: 0,
            shutdown: eos,
        }
    }
}

/// What one step of writing a direction's pending bytes did.
enum Push {
    Wrote(usize),
    Flushed,
    /// The half-close went out (or could not: the peer is gone, which ends it as well).
    Shut,
    Failed,
}

/// Writes some of `pending`'s bytes to `to`; once they are all out, flushes them; then sends
/// its half-close, if it has one.
async fn push<W: AsyncWrite + Unpin>(to: &mut W, pending: &Pending) -> Push {
    if !pending.unwritten().is_empty() {
        return match to.write(pending.unwritten()).await {
            Ok(n) => Push::Wrote(n),
            Err(_) => Push::Failed,
        };
    }
    if pending.flush {
        return match to.flush().await {
            Ok(()) => Push::Flushed,
            Err(_) => Push::Failed,
        };
    }
    let _ = to.shutdown().await;
    Push::Shut
}

/// Relays bytes both ways until both sides finished or `idle` passed without any moving,
/// through `filters` when there are some. Each direction reads only once what it read before
/// has been written (so a slow reader slows its writer, and no more than a chunk waits per
/// direction), and the two directions and the idle timer are polled together: a peer that
/// stops reading stalls its direction, never the other one or the timer.
pub async fn relay<D, U>(
    downstream: D,
    upstream: U,
    idle: Duration,
    mut filters: Option<&mut NetworkFilters>,
) -> Moved
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut moved = Moved::default();
    let (mut down_read, mut down_write) = tokio::io::split(downstream);
    let (mut up_read, mut up_write) = tokio::io::split(upstream);
    let (mut from_down, mut from_up) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let (mut down_open, mut up_open) = (true, true);
    // What goes to the upstream (read from downstream), and to the downstream.
    let (mut to_up, mut to_down) = (Pending::default(), Pending::default());
    while down_open || up_open || !to_up.drained() || !to_down.drained() {
        tokio::select! {
            read = down_read.read(&mut from_down), if down_open && to_up.drained() => {
                let (chunk, eos) = match read {
                    Ok(0) | Err(_) => (Vec::new(), true),
                    Ok(n) => (from_down[..n].to_vec(), false),
                };
                let out = match filters.as_deref_mut() {
                    Some(f) => match f.data(Side::Downstream, chunk, eos) {
                        Some(out) => out,
                        None => break,
                    },
                    None => chunk,
                };
                to_up = Pending::next(out, eos);
                if eos {
                    // The client finished sending: the half-close is passed on after the rest.
                    down_open = false;
                    if let Some(f) = filters.as_deref_mut() {
                        f.closed(Side::Downstream, PeerType::Remote);
                    }
                }
            },
            read = up_read.read(&mut from_up), if up_open && to_down.drained() => {
                let (chunk, eos) = match read {
                    Ok(0) | Err(_) => (Vec::new(), true),
                    Ok(n) => (from_up[..n].to_vec(), false),
                };
                let out = match filters.as_deref_mut() {
                    Some(f) => match f.data(Side::Upstream, chunk, eos) {
                        Some(out) => out,
                        None => break,
                    },
                    None => chunk,
                };
                to_down = Pending::next(out, eos);
                if eos {
                    up_open = false;
                    if let Some(f) = filters.as_deref_mut() {
                        f.closed(Side::Upstream, PeerType::Remote);
                    }
                }
            },
            step = push(&mut up_write, &to_up), if !to_up.drained() => match step {
                Push::Wrote(0) | Push::Failed => break,
                Push::Wrote(n) => {
                    to_up.written += n;
                    moved.upstream += n as u64;
                }
                Push::Flushed => to_up.flush = false,
                Push::Shut => to_up.shutdown = false,
            },
            step = push(&mut down_write, &to_down), if !to_down.drained() => match step {
                Push::Wrote(0) | Push::Failed => break,
                Push::Wrote(n) => {
                    to_down.written += n;
                    moved.downstream += n as u64;
                }
                Push::Flushed => to_down.flush = false,
                Push::Shut => to_down.shutdown = false,
            },
            () = tokio::time::sleep(idle) => {
                tracing::debug!(?idle, "tcp connection idle; closing");
                break;
            }
        }
    }
    // Whatever side is still open is being closed by the proxy.
    if let Some(f) = filters {
        if down_open {
            f.closed(Side::Downstream, PeerType::Local);
        }
        if up_open {
            f.closed(Side::Upstream, PeerType::Local);
        }
    }
    moved
}

/// One connection's network filters: a stream context per plugin, and what each holds.
pub struct NetworkFilters {
    streams: Vec<HttpStream>,
    /// Per filter and direction, bytes it paused on (delivered again with the next chunk).
    held: Vec<[Vec<u8>; 2]>,
    bypass: Vec<bool>,
    /// Most one filter may hold per direction (`filter_buffer_limit_bytes`).
    buffer_limit: usize,
}

impl NetworkFilters {
    /// Starts a stream per plugin and runs `proxy_on_new_connection` in chain order; `None`
    /// when the connection must be closed (a filter closed it, held it too long, or a
    /// fail-closed filter failed).
    async fn start(
        plugins: &[Arc<Plugin>],
        env: Arc<dyn StreamEnv>,
        buffer_limit: usize,
    ) -> Option<NetworkFilters> {
        let mut streams = Vec::with_capacity(plugins.len());
        let mut bypass = Vec::with_capacity(plugins.len());
        for plugin in plugins {
            let started = match crate::workers::current() {
                Some(worker) => plugin.network_stream_on(worker, env.clone()),
                None => plugin.network_stream(env.clone()),
            };
            let mut stream = match started {
                Ok(stream) => stream,
                Err(failure) => {
                    if plugin.failure_policy() == FailurePolicy::FailClosed {
                        tracing::warn!(plugin = %plugin.name(), error = %failure, "network filter failed; closing (fail_closed)");
                        return None;
                    }
                    continue;
                }
            };
            match stream.on_new_connection() {
                Ok(Action::Pause) => {
                    let waiter = stream.resume_waiter();
                    let resumed = tokio::time::timeout(NEW_CONNECTION_LIMIT, waiter.wait()).await;
                    stream.unpark();
                    if resumed.is_err() {
                        tracing::warn!(plugin = %plugin.name(), "network filter held a new connection too long; closing");
                        return None;
                    }
                }
                Ok(Action::Continue) => {}
                Err(failure) => {
                    if plugin.failure_policy() == FailurePolicy::FailClosed {
                        tracing::warn!(plugin = %plugin.name(), error = %failure, "network filter failed; closing (fail_closed)");
                        return None;
                    }
                    bypass.push(true);
                    streams.push(stream);
                    continue;
                }
            }
            if stream.data.close_requested {
                return None;
            }
            bypass.push(false);
            streams.push(stream);
        }
        let held = streams.iter().map(|_| [Vec::new(), Vec::new()]).collect();
        Some(NetworkFilters {
            streams,
            held,
            bypass,
            buffer_limit,
        })
    }

    /// Runs a chunk through the filters (chain order from downstream, reverse from upstream);
    /// returns what flows on, or `None` when the connection must close.
    fn data(&mut self, from: Side, mut data: Vec<u8>, end_of_stream: bool) -> Option<Vec<u8>> {
        let slot = match from {
            Side::Downstream => 0,
            Side::Upstream => 1,
        };
        let order: Vec<usize> = match from {
            Side::Downstream => (0..self.streams.len()).collect(),
            Side::Upstream => (0..self.streams.len()).rev().collect(),
        };
        for i in order {
            if self.bypass[i] {
                continue;
            }
            let stream = &mut self.streams[i];
            let mut input = std::mem::take(&mut self.held[i][slot]);
            input.extend_from_slice(&data);
            let result = match from {
                Side::Downstream => {
                    stream.data.downstream_data = input;
                    let r = stream.on_downstream_data(end_of_stream);
                    data = std::mem::take(&mut stream.data.downstream_data);
                    r
                }
                Side::Upstream => {
                    stream.data.upstream_data = input;
                    let r = stream.on_upstream_data(end_of_stream);
                    data = std::mem::take(&mut stream.data.upstream_data);
                    r
                }
            };
            if stream.data.close_requested {
                return None;
            }
            match result {
                Ok(Action::Pause) if !end_of_stream => {
                    if data.len() > self.buffer_limit {
                        crate::filter::body::buffer_exceeded(stream.plugin().name());
                        tracing::warn!(plugin = %stream.plugin().name(), held = data.len(), "network filter held more than filter_buffer_limit_bytes; closing");
                        return None;
                    }
                    self.held[i][slot] = data;
                    return Some(Vec::new());
                }
                Ok(_) => {}
                Err(failure) => {
                    if stream.plugin().failure_policy() == FailurePolicy::FailClosed {
                        tracing::warn!(plugin = %stream.plugin().name(), error = %failure, "network filter failed; closing (fail_closed)");
                        return None;
                    }
                    self.bypass[i] = true;
                }
            }
        }
        Some(data)
    }

    /// Tells every filter one side of the connection closed, and who closed it.
    fn closed(&mut self, side: Side, peer: PeerType) {
        for (i, stream) in self.streams.iter_mut().enumerate() {
            if self.bypass[i] {
                continue;
            }
            let result = match side {
                Side::Downstream => stream.on_downstream_close(peer),
                Side::Upstream => stream.on_upstream_close(peer),
            };
            if result.is_err() {
                self.bypass[i] = true;
            }
        }
    }
}
