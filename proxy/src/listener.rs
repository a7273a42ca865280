//! Downstream listeners: accept loops, connection limits, TLS handshakes, and HTTP/1.1 or HTTP/2
//! serving (h2c by prior knowledge, h2 by ALPN) with hyper.
//!
//! hyper answers malformed requests with 400 and oversized heads with 431 and closes the
//! connection; the header read timeout closes slowloris connections, and [`Deadlines`] those
//! that never open or, over HTTP/2, sit idle.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config;
use crate::forward::{self, ConnectionInfo, ListenerContext};
use crate::tls::identity::{PeerIdentity, TlsInfo};
use crate::tls::reloadable::Reloadable;

/// Binds a listener's address with `SO_REUSEADDR`, `SO_REUSEPORT` (so a reload can bind a
/// replacement before the old socket closes) and a deep backlog.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_std(address)?)
}

fn bind_std(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Binds `count` sockets to one address, one per worker: `SO_REUSEPORT` lets the kernel spread
/// new connections across them. With port 0 the first socket picks the port and the others
/// join it. Returns the sockets and the address they share.
pub fn bind_per_worker(
    address: SocketAddr,
    count: usize,
) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let first = bind_std(address)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count.max(1) {
        sockets.push(bind_std(bound)?);
    }
    Ok((sockets, bound))
}

/// Everything one accept loop needs.
pub struct Running {
    pub config: config::Listener,
    /// Read for each connection: a certificate rotation reaches the next handshake.
    pub tls: Option<Arc<Reloadable<rustls::ServerConfig>>>,
    pub context: Arc<ListenerContext>,
    /// The listener's `max_connections` slots, shared by its accept loops (one per worker),
    /// so the limit holds for the listener as a whole.
    pub connections: Arc<Semaphore>,
    /// The connections open now, to end those its drain leaves open.
    pub open: OpenConnections,
    /// The listener's graceful-shutdown watchers, one per connection.
    pub watchers: Watchers,
}

/// A listener's open connections (their tasks), so that those still open when its drain runs
/// out of time can be ended, as Envoy closes them at the end of its drain time. Kept per
/// connection rather than watched per request: a signal each connection polls would cost its
/// every request a lock.
#[derive(Default)]
pub struct OpenConnections {
    next: std::sync::atomic::AtomicU64,
    tasks: std::sync::Mutex<std::collections::HashMap<u64, tokio::task::AbortHandle>>,
}

impl OpenConnections {
    /// Ends every connection still open; returns how many.
    pub fn close_all(&self) -> usize {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks.values() {
            task.abort();
        }
        tasks.len()
    }
}

/// One open connection: counted in the listener's gauge and known to [`OpenConnections`]
/// until its task ends, or is ended.
struct Open {
    running: Arc<Running>,
    id: u64,
    gauge: metrics::Gauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
        self.running
            .open
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Hands out a graceful-shutdown watcher per connection; `None` once shutdown has begun.
pub type Watchers = Arc<dyn Fn() -> Option<Watcher> + Send + Sync>;

/// Accepts connections until `stop` turns true; each connection is watched so a graceful
/// shutdown can wait for it.
pub async fn accept_loop(
    listener: TcpListener,
    running: Arc<Running>,
    mut stop: watch::Receiver<bool>,
) {
    let connections = running.connections.clone();
    loop {
        let accepted = tokio::select! {
            // A replacement may be accepting on the same socket already.
            biased;
            _ = stop.wait_for(|stopped| *stopped) => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(listener = %running.config.name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(listener = %running.config.name, %peer, "connection limit reached; closing");
            metrics::counter!("wasmesh_downstream_connections_refused_total", "listener" => running.config.name.clone()).increment(1);
            drop(tcp);
            continue;
        };
        let Some(watcher) = (running.watchers)() else {
            return;
        };
        // How evenly the kernel spreads connections over the workers.
        if let Some(worker) = crate::workers::current() {
            metrics::counter!("wasmesh_worker_connections_total", "worker" => worker.to_string())
                .increment(1);
        }
        let id = running
            .open
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let task = {
            let running = running.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let gauge = metrics::gauge!("wasmesh_downstream_connections", "listener" => running.config.name.clone());
                gauge.increment(1.0);
                let _open = Open {
                    running: running.clone(),
                    id,
                    gauge,
                };
                if let Err(err) = serve_connection(tcp, peer, &running, watcher).await {
                    tracing::debug!(listener = %running.config.name, %peer, error = %err, "connection ended with error");
                }
            })
        };
        let mut tasks = running.open.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // (On a worker's single-threaded runtime the task cannot have run yet.)
        if !task.is_finished() {
            tasks.insert(id, task.abort_handle());
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    running: &Running,
    watcher: Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tcp.set_nodelay(true)?;
    let local = tcp.local_addr()?;
    match &running.tls {
        None => {
            let info = ConnectionInfo::new(peer, local, None);
            if let Some(proxy) = &running.context.tcp_proxy {
                watched_tcp(tcp, &info, running, proxy, watcher).await;
                return Ok(());
            }
            serve_http(tcp, info, None, running, watcher).await
        }
        Some(tls) => {
            let acceptor = TlsAcceptor::from(tls.current());
            let handshake =
                tokio::time::timeout(running.config.header_read_timeout, acceptor.accept(tcp))
                    .await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    metrics::counter!("wasmesh_tls_handshake_failures_total", "listener" => running.config.name.clone()).increment(1);
                    return Err(err.into());
                }
                Err(_) => {
                    metrics::counter!("wasmesh_tls_handshake_failures_total", "listener" => running.config.name.clone()).increment(1);
                    return Err("TLS handshake timed out".into());
                }
            };
            let session = stream.get_ref().1;
            let alpn = session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let tls = TlsInfo {
                sni: session.server_name().map(str::to_string),
                peer: session
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(PeerIdentity::from_leaf),
                alpn: alpn.clone(),
                version: session.protocol_version().map(|v| match v {
                    rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                    rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                    _ => "unknown",
                }),
            };
            let info = ConnectionInfo::new(peer, local, Some(Arc::new(tls)));
            if let Some(proxy) = &running.context.tcp_proxy {
                watched_tcp(stream, &info, running, proxy, watcher).await;
                return Ok(());
            }
            serve_http(stream, info, alpn.as_deref(), running, watcher).await
        }
    }
}

/// A TCP-proxied connection; a graceful shutdown waits for it like any other (up to the
/// drain timeout), since the watcher lives as long as it does.
async fn watched_tcp<IO>(
    io: IO,
    info: &ConnectionInfo,
    running: &Running,
    proxy: &config::TcpProxy,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let _watching = watcher;
    crate::tcp::serve(io, info, &running.context, proxy).await;
}

async fn serve_http<IO>(
    io: IO,
    info: ConnectionInfo,
    alpn: Option<&str>,
    running: &Running,
    watcher: Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &running.config;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(1024)
        // Bound what a client may queue by resetting streams (CVE-2023-44487).
        .max_pending_accept_reset_streams(100)
        .max_local_error_reset_streams(Some(1024));
    let builder = match alpn {
        Some("h2") => builder.http2_only(),
        Some("http/1.1") => builder.http1_only(),
        _ => builder,
    };
    let context = running.context.clone();
    let info = Arc::new(info);
    let conn = info.clone();
    let service = service_fn(move |req| {
        let active = forward::ActiveStream::for_request(&conn, &req);
        forward::handle(context.clone(), conn.clone(), req, active)
    });
    let io = Deadlines::new(io, cfg.header_read_timeout, cfg.idle_timeout, info.clone());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let served = watcher.watch(connection.into_owned()).await;
    // An upgraded exchange (a WebSocket, say) is relayed here, in the connection's task, so
    // it keeps the connection's `max_connections` slot and is ended with the connections a
    // drain leaves open. A drain waits for it (up to `drain_timeout`), as for a connection;
    // one that has begun already does not take it.
    if let Some(splice) = info.take_upgraded()
        && let Some(_watching) = (running.watchers)()
    {
        splice.await;
    }
    served
}

/// A downstream connection's deadlines that hyper does not keep.
///
/// - Opening: the client must send its first byte within the deadline and, if it speaks
///   HTTP/2, its whole connection preface (RFC 9113 §3.4: the 24 octets, then the SETTINGS
///   frame that must follow them). hyper's header read timeout starts only once a request head
///   begins, and only for HTTP/1, after the protocol is known. A client that connects (and
///   finishes a TLS handshake) and then stays silent, or stops partway through the preface,
///   would otherwise hold its connection, and one of the listener's `max_connections` slots,
///   forever.
/// - Idle (HTTP/2): once open, an HTTP/2 connection with no stream in flight for the
///   listener's `idle_timeout` is closed, as Envoy closes idle connections (PINGs do not keep
///   it open). Between HTTP/1.1 requests hyper's header read timeout does this job.
struct Deadlines<IO> {
    io: IO,
    /// The opening deadline, then (HTTP/2) the idle one; `None` when neither applies.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Until the connection has opened.
    opening: bool,
    /// The listener's `idle_timeout` (zero: none).
    idle_limit: Duration,
    /// An HTTP/2 connection that has opened: its idle deadline runs.
    watching_idle: bool,
    /// Its streams in flight ([`forward::StreamActivity`]).
    conn: Arc<ConnectionInfo>,
    /// Bytes read so far, while they are the start of HTTP/2's preface.
    preface: usize,
    /// The length field of the SETTINGS frame after the fixed octets, as it arrives.
    settings_length: [u8; 3],
}

/// What an HTTP/2 client sends first: the preface's fixed octets.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame header's size.
const FRAME_HEADER: usize = 9;

impl<IO> Deadlines<IO> {
    fn new(
        io: IO,
        opening_limit: Duration,
        idle_limit: Duration,
        conn: Arc<ConnectionInfo>,
    ) -> Self {
        Deadlines {
            io,
            timer: Some(Box::pin(tokio::time::sleep(opening_limit))),
            opening: true,
            idle_limit,
            watching_idle: false,
            conn,
            preface: 0,
            settings_length: [0; 3],
        }
    }

    /// Notes `read`, the next bytes from the client: the connection has opened once they are
    /// not HTTP/2's preface (HTTP/1's header read timeout takes over), or complete it.
    fn saw(&mut self, read: &[u8]) {
        let fixed = H2_PREFACE.get(self.preface..).unwrap_or_default();
        let n = read.len().min(fixed.len());
        if read[..n] != fixed[..n] {
            self.opened(false);
            return;
        }
        for (at, byte) in (self.preface..).zip(read) {
            if let Some(slot) = at
                .checked_sub(H2_PREFACE.len())
                .and_then(|i| self.settings_length.get_mut(i))
            {
                *slot = *byte;
            }
        }
        self.preface += read.len();
        let header_end = H2_PREFACE.len() + FRAME_HEADER;
        if self.preface >= header_end {
            let [a, b, c] = self.settings_length;
            let length = u32::from_be_bytes([0, a, b, c]) as usize;
            if self.preface >= header_end + length {
                self.opened(true);
            }
        }
    }

    /// The connection has opened; an HTTP/2 one now has its idle deadline.
    fn opened(&mut self, h2: bool) {
        self.opening = false;
        if !h2 || self.idle_limit.is_zero() {
            self.timer = None;
            return;
        }
        self.watching_idle = true;
        let due = tokio::time::Instant::now() + self.idle_limit;
        if let Some(timer) = self.timer.as_mut() {
            timer.as_mut().reset(due);
        }
    }

    /// A write that cannot go on now (the peer is not reading): the connection closes
    /// instead if a deadline has passed.
    fn pending_write<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.expired(cx) {
            Some(why) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why))),
            None => Poll::Pending,
        }
    }

    /// Why the connection must close now, if a deadline has passed; otherwise the timer is
    /// (re)armed to wake `cx`. Streams only note their ends; the deadline is worked out here,
    /// when the timer fires, so a busy connection costs no timer work per request.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        loop {
            let timer = self.timer.as_mut()?;
            if timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            if !self.watching_idle {
                return Some("no request within header_read_timeout");
            }
            let now = tokio::time::Instant::now();
            let due = match self.conn.streams.idle_since() {
                Some(since) => since + self.idle_limit,
                // Streams in flight: not idle; look again a whole limit later.
                None => now + self.idle_limit,
            };
            if due <= now {
                return Some("HTTP/2 connection idle for idle_timeout");
            }
            timer.as_mut().reset(due);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Deadlines<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.opening {
                    this.saw(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.expired(cx) {
                Some(why) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why))),
                None => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Deadlines<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            // A peer that stops reading must not keep an idle connection open either.
            Poll::Pending => this.pending_write(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.pending_write(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.pending_write(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Arc<ConnectionInfo> {
        let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
        Arc::new(ConnectionInfo::new(addr, addr, None))
    }

    fn opened(reads: &[&[u8]]) -> bool {
        let minute = Duration::from_secs(60);
        let mut deadlines = Deadlines::new((), minute, minute, conn());
        for read in reads {
            deadlines.saw(read);
        }
        !deadlines.opening
    }

    #[tokio::test]
    async fn a_connection_has_opened_once_http1_is_certain_or_http2s_preface_is_whole() {
        let settings = [0u8, 0, 6, 4, 0, 0, 0, 0, 0]; // a SETTINGS frame with one setting
        let setting = [0u8, 3, 0, 0, 0, 100];
        assert!(opened(&[b"G"]));
        assert!(
            opened(&[b"P", b"OST / HTTP/1.1\r\n"]),
            "POST is not the preface"
        );
        assert!(!opened(&[b"PRI * HTTP/2.0\r\n"]));
        assert!(!opened(&[H2_PREFACE]));
        assert!(
            !opened(&[H2_PREFACE, &settings]),
            "the settings are still to come"
        );
        assert!(!opened(&[H2_PREFACE, &settings, &setting[..5]]));
        assert!(opened(&[H2_PREFACE, &settings, &setting]));
        let whole = [H2_PREFACE, &settings, &setting].concat();
        assert!(opened(&[&whole]));
        let (a, b) = whole.split_at(26); // the length field split between reads
        assert!(opened(&[a, b]));
        assert!(
            opened(&[H2_PREFACE, &[0, 0, 0, 4, 0, 0, 0, 0, 0]]),
            "empty SETTINGS"
        );
    }

    /// An HTTP/2 connection closes once it has had no stream in flight for the idle limit,
    /// counted from the last stream's end (time is paused: the runtime jumps to each
    /// deadline), however long a stream lasted; an HTTP/1 one is left to hyper's header read
    /// timeout.
    #[tokio::test(start_paused = true)]
    async fn an_open_http2_connection_closes_after_its_idle_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let idle = Duration::from_secs(60);
        let (mut client, server) = tokio::io::duplex(1024);
        let info = conn();
        let mut conn = Deadlines::new(server, Duration::from_secs(10), idle, info.clone());
        let empty_settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
        let opening = [H2_PREFACE, &empty_settings].concat();
        client.write_all(&opening).await.expect("write");
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).await.expect("preface");
        assert_eq!(n, opening.len());
        assert!(!conn.opening);

        // A stream in flight for three limits, with nothing moving: the connection stays.
        tokio::time::advance(Duration::from_secs(50)).await;
        let stream = crate::forward::ActiveStream::start(&info);
        let quiet = tokio::time::timeout(idle * 3, conn.read(&mut buf)).await;
        assert!(quiet.is_err(), "closed with a stream in flight: {quiet:?}");
        drop(stream);
        let ended = tokio::time::Instant::now();
        // Bytes (a PING, say) do not make it busy.
        client.write_all(b"x").await.expect("write");
        assert_eq!(conn.read(&mut buf).await.expect("a byte"), 1);
        let err = conn.read(&mut buf).await.expect_err("closed when idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(tokio::time::Instant::now() - ended, idle);

        let (mut client, server) = tokio::io::duplex(1024);
        let mut conn = Deadlines::new(server, Duration::from_secs(10), idle, self::conn());
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        assert_eq!(conn.read(&mut buf).await.expect("read"), 16);
        let quiet = tokio::time::timeout(Duration::from_secs(7200), conn.read(&mut buf)).await;
        assert!(
            quiet.is_err(),
            "HTTP/1 has no idle deadline here: {quiet:?}"
        );
    }
}
