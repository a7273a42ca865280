//! TCP proxying end to end: a `tcp_proxy` listener relays bytes both ways to a cluster's
//! endpoints (balanced, half-closes passed on), terminates TLS in front of a plain TCP
//! service, closes at once when no upstream can be reached, and closes idle connections.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo server that prefixes its answers with `name:`; after the client half-closes it
/// writes `name:bye` and closes.
async fn echo(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = tcp.write_all(format!("{name}:bye").as_bytes()).await;
                            return;
                        }
                        Ok(n) => {
                            let mut out = format!("{name}:").into_bytes();
                            out.extend_from_slice(&buf[..n]);
                            if tcp.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn config(endpoints: &[SocketAddr], listener_extra: &str) -> String {
    let eps = endpoints
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
listeners:
  - name: tcp
    address: "127.0.0.1:0"
    tcp_proxy:
      cluster: backend
      idle_timeout: 300ms
{listener_extra}clusters:
  - name: backend
    endpoints: [{eps}]
    connect_timeout: 1s
admin:
  address: "127.0.0.1:0"
"#
    )
}

/// `/stats` once `ok` holds for it (or as it last was): the proxy records a connection's
/// outcome as the connection ends, which may be just after the client has seen it close.
async fn stats_once(admin: std::net::SocketAddr, ok: impl Fn(&str) -> bool) -> String {
    let mut stats = String::new();
    eventually(Duration::from_secs(10), async || {
        stats = get_admin_text(admin, "/stats");
        ok(&stats)
    })
    .await;
    stats
}

/// Reads until the peer closes.
async fn read_to_close<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bytes_go_both_ways_and_half_closes_pass_through() {
    let upstream = echo("a").await;
    let proxy = Proxy::start(&config(&[upstream], ""));
    let mut tcp = TcpStream::connect(proxy.addr("tcp"))
        .await
        .expect("connect");
    tcp.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 64];
    let n = tcp.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"a:hello");
    // The client is done sending; the upstream sees EOF, answers, and closes.
    tcp.shutdown().await.expect("half-close");
    assert_eq!(read_to_close(&mut tcp).await, "a:bye");
    let sent = "wasmesh_tcp_sent_bytes_total{listener=\"tcp\"} 5";
    let stats = stats_once(proxy.admin.expect("admin"), |s| s.contains(sent)).await;
    assert!(stats.contains(sent), "{stats}");
}

#[tokio::test]
async fn connections_are_balanced_over_the_cluster() {
    let (a, b) = (echo("a").await, echo("b").await);
    let proxy = Proxy::start(&config(&[a, b], ""));
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(proxy.addr("tcp"))
            .await
            .expect("connect");
        tcp.write_all(b"x").await.expect("write");
        let mut buf = [0u8; 16];
        let n = tcp.read(&mut buf).await.expect("read");
        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    answers.sort();
    assert_eq!(
        answers,
        ["a:x", "a:x", "b:x", "b:x"],
        "round robin over endpoints"
    );
}

#[tokio::test]
async fn tls_is_terminated_in_front_of_a_plain_tcp_service() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let server = pki.leaf("proxy", &["proxy.test"], None);
    let upstream = echo("plain").await;
    let tls = format!(
        "    tls:\n      certificates:\n        - cert_file: \"{}\"\n          key_file: \"{}\"\n",
        server.cert, server.key
    );
    let proxy = Proxy::start(&config(&[upstream], &tls));
    // A client offering HTTP protocols (curl, a browser) must not be told the relay speaks
    // one: a TCP listener negotiates no ALPN unless configured to.
    let offered = client_tls(&pki, &["h2", "http/1.1"], None);
    let mut stream = tls_connect(proxy.addr("tcp"), "proxy.test", offered)
        .await
        .expect("TLS handshake with the proxy");
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    stream.write_all(b"secret").await.expect("write");
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"plain:secret");
}

#[tokio::test]
async fn no_reachable_upstream_closes_the_connection() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let proxy = Proxy::start(&config(&[dead], ""));
    let mut tcp = TcpStream::connect(proxy.addr("tcp"))
        .await
        .expect("connect");
    assert_eq!(read_to_close(&mut tcp).await, "", "closed without data");
    let failed = "outcome=\"connect_failure\"} 1";
    let stats = stats_once(proxy.admin.expect("admin"), |s| s.contains(failed)).await;
    assert!(stats.contains(failed), "{stats}");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let upstream = echo("a").await;
    let proxy = Proxy::start(&config(&[upstream], ""));
    let mut tcp = echoed_session(proxy.addr("tcp")).await;
    // Nothing more is sent: the proxy closes after its idle timeout (300ms here).
    let rest = closed(&mut tcp).await;
    assert!(matches!(rest, Ok(Ok(0) | Err(_))), "{rest:?}");
}

/// A session through the proxy to the `echo("a")` upstream, one exchange made.
async fn echoed_session(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 16];
    let n = tcp.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"a:ping");
    tcp
}

/// The next read on `tcp`, if it comes within 20 s: `Ok(0)` or an error once the proxy closed it.
async fn closed(
    tcp: &mut TcpStream,
) -> Result<std::io::Result<usize>, tokio::time::error::Elapsed> {
    let mut buf = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await
}

/// A client that sends and never reads: the echoes back up until nothing moves either way,
/// and the idle timeout must still close the connection (a write blocked on one side must not
/// stop the relay from watching the other side and the clock).
#[tokio::test]
async fn a_relay_stuck_on_a_client_that_never_reads_is_closed_when_idle() {
    let upstream = echo("a").await;
    let proxy = Proxy::start(&config(&[upstream], ""));
    let mut tcp = TcpStream::connect(proxy.addr("tcp"))
        .await
        .expect("connect");
    let chunk = vec![b'x'; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        // Loopback buffers hold a few MiB; after that, writes block until the proxy closes.
        while tcp.write_all(&chunk).await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "the stalled relay was never closed");
}

#[test]
fn a_listener_needs_exactly_one_of_route_config_and_tcp_proxy() {
    let (ok, out, path) = validate(
        "listeners:\n  - name: both\n    address: 127.0.0.1:1\n    route_config: r\n    tcp_proxy: { cluster: c }\n  - name: neither\n    address: 127.0.0.1:2\n  - name: unknown\n    address: 127.0.0.1:3\n    tcp_proxy: { cluster: nope }\nroutes:\n  - name: r\n    virtual_hosts: []\nclusters:\n  - name: c\n    endpoints: [\"127.0.0.1:9\"]\n",
    );
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "{path}:2: listeners[0]: route_config (HTTP) and tcp_proxy (TCP) exclude each other"
        )),
        "{out}"
    );
    assert!(
        out.contains("listeners[1].route_config: required (or tcp_proxy, for a TCP listener)"),
        "{out}"
    );
    assert!(
        out.contains("listeners[2].tcp_proxy.cluster: no cluster named \"nope\""),
        "{out}"
    );
}

/// The listener's network filters in the real proxy: `tcp-probe` (published proxy-wasm SDK)
/// rewrites bytes both ways, holds data until the client finishes, closes on a word, holds a new
/// connection until a tick continues it, and sees who closed each side.
fn filtered(endpoints: &[SocketAddr], words: &str) -> String {
    config(endpoints, "    filter_chain: net\n")
        + &format!(
            "filter_chains:\n  - name: net\n    plugins:\n      - name: tcp-probe\n        source: \"file://{}\"\n        config: \"{words}\"\n",
            wasmesh_test_programs::TCP_PROBE_WASM
        )
}

#[tokio::test]
async fn network_filters_rewrite_bytes_both_ways() {
    let upstream = echo("a").await;
    let proxy = Proxy::start(&filtered(&[upstream], "upper prefix"));
    let mut tcp = TcpStream::connect(proxy.addr("tcp"))
        .await
        .expect("connect");
    tcp.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 64];
    let n = tcp.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"[up]a:HELLO");
    tcp.shutdown().await.expect("half-close");
    assert_eq!(read_to_close(&mut tcp).await, "[up]a:bye");
    let stats = stats_once(proxy.admin.expect("admin"), |s| {
        s.contains("wasmesh_filter_tcp_probe_closed_upstream_remote{plugin=\"tcp-probe\"} 1")
            && s.contains(
                "wasmesh_filter_tcp_probe_closed_downstream_remote{plugin=\"tcp-probe\"} 1",
            )
    })
    .await;
    for (metric, value) in [
        ("wasmesh_filter_tcp_probe_connections", 1),
        ("wasmesh_filter_tcp_probe_closed_downstream_remote", 1),
        ("wasmesh_filter_tcp_probe_closed_upstream_remote", 1),
    ] {
        assert!(
            stats.contains(&format!("{metric}{{plugin=\"tcp-probe\"}} {value}")),
            "{metric} in {stats}"
        );
    }
}

#[tokio::test]
async fn a_network_filter_can_hold_data_until_the_client_finishes() {
    let upstream = echo("a").await;
    let proxy = Proxy::start(&filtered(&[upstream], "hold"));
    let mut tcp = TcpStream::connect(proxy.addr("tcp"))
        .await
        .expect("connect");
    tcp.write_all(b"one,").await.expect("write");
    tcp.write_all(b"two").await.expect("write");
    tcp.shutdown().await.expect("half-close");
    // Held until the end: the upstream saw both writes as one chunk, then the half-close.
    assert_eq!(read_to_close(&mut tcp).await, "a:one,twoa:bye");
}

#[tokio::test]
async fn a_network_filter_can_close_the_connection() {
    let upstream = echo("a").await;
    let proxy = Proxy::start(&filtered(&[upstream], "close-on-bad"));
    let mut tcp = TcpStream::connect(proxy.addr("tcp"))
        .await
        .expect("connect");
    tcp.write_all(b"fine").await.expect("write");
    let mut buf = [0u8; 64];
    let n = tcp.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"a:fine");
    tcp.write_all(b"this is bad").await.expect("write");
    assert_eq!(
        read_to_close(&mut tcp).await,
        "",
        "closed by the filter, and the bad bytes never reached the upstream"
    );
    let stats = stats_once(proxy.admin.expect("admin"), |s| {
        s.contains("wasmesh_filter_tcp_probe_closed_downstream_local{plugin=\"tcp-probe\"} 1")
    })
    .await;
    assert!(
        stats.contains("wasmesh_filter_tcp_probe_closed_downstream_local{plugin=\"tcp-probe\"} 1"),
        "{stats}"
    );
}

#[tokio::test]
async fn a_network_filter_can_hold_a_new_connection_until_it_continues_it() {
    let upstream = echo("a").await;
    let proxy = Proxy::start(&filtered(&[upstream], "wait"));
    let mut tcp = TcpStream::connect(proxy.addr("tcp"))
        .await
        .expect("connect");
    tcp.write_all(b"after").await.expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf))
        .await
        .expect("continued by the filter's tick")
        .expect("read");
    assert_eq!(&buf[..n], b"a:after");
}

/// A TCP session on a listener a reload replaced is closed once `drain_timeout` has passed, as
/// Envoy closes what is left at the end of its drain: it must not go on for good with the old
/// listener's settings (its network filters, say).
#[tokio::test]
async fn a_replaced_listeners_sessions_end_after_drain_timeout() {
    let upstream = echo("a").await;
    let config = |idle: &str| {
        format!(
            r#"
drain_timeout: 1s
listeners:
  - name: tcp
    address: "127.0.0.1:0"
    tcp_proxy:
      cluster: backend
      idle_timeout: {idle}
clusters:
  - name: backend
    endpoints: ["{upstream}"]
admin:
  address: "127.0.0.1:0"
"#
        )
    };
    let proxy = Proxy::start(&config("60s"));
    let mut tcp = echoed_session(proxy.addr("tcp")).await;
    let (status, body) = admin_call(
        proxy.admin.expect("admin"),
        "PUT",
        "/config",
        &config("61s"),
    );
    assert_eq!(status, 200, "{body}");
    let end = closed(&mut tcp).await;
    assert!(
        matches!(end, Ok(Ok(0) | Err(_))),
        "the session outlived its listener's drain: {end:?}"
    );
}
