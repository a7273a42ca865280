//! Opens connections to one endpoint for its pool: DNS resolution at connect time, TCP with
//! `TCP_NODELAY`, optional TLS with SNI and ALPN, all within the cluster's connect timeout, and
//! counted against the cluster's `max_connections`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::breaker::{CircuitBreaker, Permit};
use crate::tls::reloadable::Reloadable;

/// Why a connection to an endpoint could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cluster {cluster}: connection limit reached ({reason})")]
    Overflow {
        cluster: String,
        reason: &'static str,
    },
    #[error("connecting to {address}: {source}")]
    Io {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {address}: timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("connecting to {address}: {address} does not resolve")]
    Resolve { address: String },
    #[error("TLS to {address}: invalid server name \"{name}\"")]
    ServerName { address: String, name: String },
}

/// The connector of one endpoint.
#[derive(Clone)]
pub struct EndpointConnector {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: String,
    address: String,
    connect_timeout: Duration,
    /// The cluster's TLS configuration (it follows its files) and the name to verify.
    tls: Option<(Arc<Reloadable<ClientConfig>>, ServerName<'static>)>,
    breaker: Arc<CircuitBreaker>,
}

impl EndpointConnector {
    pub fn new(
        cluster: &str,
        address: &str,
        connect_timeout: Duration,
        tls: Option<(Arc<Reloadable<ClientConfig>>, Option<&str>)>,
        breaker: Arc<CircuitBreaker>,
    ) -> Result<EndpointConnector, ConnectError> {
        let tls = match tls {
            Some((config, sni)) => {
                let name = sni.unwrap_or_else(|| host_of(address)).to_string();
                let server_name =
                    ServerName::try_from(name.clone()).map_err(|_| ConnectError::ServerName {
                        address: address.to_string(),
                        name,
                    })?;
                Some((config, server_name))
            }
            None => None,
        };
        Ok(EndpointConnector {
            inner: Arc::new(Inner {
                cluster: cluster.to_string(),
                address: address.to_string(),
                connect_timeout,
                tls,
                breaker,
            }),
        })
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, _)) => host,
        None => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

impl EndpointConnector {
    /// Dials the endpoint: a `max_connections` permit first, then resolve, connect and (for
    /// TLS) handshake, all within the connect timeout.
    pub async fn connect(&self) -> Result<UpstreamConn, ConnectError> {
        let inner = &self.inner;
        let permit = inner
            .breaker
            .try_connection()
            .map_err(|overflow| ConnectError::Overflow {
                cluster: inner.cluster.clone(),
                reason: overflow.as_str(),
            })?;
        let timeout = inner.connect_timeout;
        match tokio::time::timeout(timeout, connect(inner, permit)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout {
                address: inner.address.clone(),
                timeout,
            }),
        }
    }
}

async fn connect(inner: &Inner, permit: Permit) -> Result<UpstreamConn, ConnectError> {
    let io_err = |source| ConnectError::Io {
        address: inner.address.clone(),
        source,
    };
    let addrs = tokio::net::lookup_host(inner.address.as_str())
        .await
        .map_err(io_err)?;
    // Each address in turn, as `TcpStream::connect` does with a name: `localhost` may resolve
    // to ::1 first for a server listening on 127.0.0.1 only.
    let mut last = None;
    let mut connected = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                connected = Some(tcp);
                break;
            }
            Err(err) => last = Some(err),
        }
    }
    let tcp = match (connected, last) {
        (Some(tcp), _) => tcp,
        (None, Some(err)) => return Err(io_err(err)),
        (None, None) => {
            return Err(ConnectError::Resolve {
                address: inner.address.clone(),
            });
        }
    };
    tcp.set_nodelay(true).map_err(io_err)?;
    let (stream, h2) = match &inner.tls {
        Some((config, name)) => {
            let connector = TlsConnector::from(config.current());
            let tls = connector.connect(name.clone(), tcp).await.map_err(io_err)?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            (Stream::Tls(Box::new(tls)), h2)
        }
        None => (Stream::Plain(tcp), false),
    };
    metrics::counter!("wasmesh_upstream_connections_total", "cluster" => inner.cluster.clone())
        .increment(1);
    let active =
        metrics::gauge!("wasmesh_upstream_connections_active", "cluster" => inner.cluster.clone());
    active.increment(1.0);
    Ok(UpstreamConn {
        io: TokioIo::new(stream),
        h2,
        _permit: permit,
        active,
    })
}

/// A connection to an endpoint; holds its `max_connections` permit until it closes.
pub struct UpstreamConn {
    io: TokioIo<Stream>,
    h2: bool,
    _permit: Permit,
    active: metrics::Gauge,
}

impl Drop for UpstreamConn {
    fn drop(&mut self) {
        self.active.decrement(1.0);
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamConn {
    /// Whether TLS negotiated HTTP/2 by ALPN.
    pub fn negotiated_h2(&self) -> bool {
        self.h2
    }
}

impl Read for UpstreamConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for UpstreamConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// A connection is also plain bytes, for TCP proxying.
impl tokio::io::AsyncRead for UpstreamConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for UpstreamConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.io.inner_mut()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_shutdown(cx)
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("example.com:443"), "example.com");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("10.0.0.1:80"), "10.0.0.1");
    }
}
