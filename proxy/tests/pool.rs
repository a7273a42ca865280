//! Upstream connection pooling, against raw TCP upstreams that count their connections: HTTP/1.1
//! connections are reused across requests, a response read to the end gives its connection
//! back, one not read to the end does not, and an upstream that closes idle connections under
//! the pool is never visible to clients.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw TCP upstream on loopback: runs `serve` on each connection it accepts (given the
/// connection's number, from 0) and counts the connections.
async fn counted_upstream<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve(tcp, counted.fetch_add(1, Ordering::SeqCst)));
        }
    });
    (addr, connections)
}

/// A minimal HTTP/1.1 upstream: answers each request on a connection with `body`, and closes
/// the connection after `per_connection` responses — without saying so in the response, as a
/// server whose keep-alive timer fires between requests does.
async fn raw_upstream(body: &'static str, per_connection: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let (addr, connections, _) = raw_upstream_seeing(body, per_connection).await;
    (addr, connections)
}

/// Like [`raw_upstream`], also keeping each request line received.
async fn raw_upstream_seeing(
    body: &'static str,
    per_connection: usize,
) -> (
    SocketAddr,
    Arc<AtomicUsize>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = lines.clone();
    let (addr, connections) = counted_upstream(move |mut tcp, _| {
        let seen = seen.clone();
        async move {
            let mut buf = Vec::new();
            let mut served = 0;
            while served < per_connection {
                // Read one request head, then its body if it names a length.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 4096];
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let end = buf
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(0, |p| p + 4);
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                seen.lock()
                    .expect("lines")
                    .push(head.lines().next().unwrap_or("").to_string());
                buf.drain(..end);
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < length {
                    let mut chunk = [0u8; 4096];
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..length);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if tcp.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
                served += 1;
            }
            // Dropping the socket closes it.
        }
    })
    .await;
    (addr, connections, lines)
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let (upstream, connections) = raw_upstream("pooled", usize::MAX).await;
    let proxy = Proxy::start(&simple_config("", &[upstream], ""));
    let addr = proxy.addr("main");
    for _ in 0..50 {
        let got = get(addr, "/").await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::OK, "pooled")
        );
    }
    // With bodies too: a connection goes back once its request body went out whole.
    for _ in 0..20 {
        let req = http::Request::builder()
            .method("POST")
            .uri("/")
            .header("host", "test.local")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"hello",
            )))
            .expect("request");
        let got = send(addr, req, false).await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::OK, "pooled")
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "seventy requests one after another need one upstream connection"
    );
    let clusters = get_admin_text(proxy.admin.expect("admin"), "/clusters");
    assert!(clusters.contains("\"idle_connections\": 1"), "{clusters}");
}

#[tokio::test]
async fn a_pool_that_keeps_no_idle_connections_opens_one_per_request() {
    let (upstream, connections) = raw_upstream("unpooled", usize::MAX).await;
    let proxy = Proxy::start(&simple_config(
        "    pool: { max_idle_per_endpoint: 0 }",
        &[upstream],
        "",
    ));
    let addr = proxy.addr("main");
    for i in 0..3 {
        let got = get(addr, "/").await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::OK, "unpooled"),
            "request {i}"
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_is_invisible_to_clients() {
    // No retry policy on the route: only the pool's own resend of unsent requests can help.
    let (upstream, connections) = raw_upstream("fresh", 1).await;
    let proxy = Proxy::start(&simple_config("", &[upstream], ""));
    let addr = proxy.addr("main");
    for i in 0..30 {
        let got = get(addr, "/").await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::OK, "fresh"),
            "request {i}"
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 30);
}

#[tokio::test]
async fn a_response_abandoned_midway_does_not_return_its_connection() {
    // The first connection's response promises 4 MiB, sends 1 MiB and stalls: however much
    // the proxy and the kernel buffer, that body can never be read to its end, so its
    // connection holds an unfinished exchange and must not serve another request (if it did,
    // the next request would wait on it forever). Later connections answer at once.
    let (upstream, connections) = counted_upstream(|mut tcp, n| async move {
        let first = n == 0;
        let mut buf = Vec::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if first {
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 4194304\r\n\r\n";
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tcp.write_all(&vec![b'x'; 1024 * 1024]).await;
        } else {
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter")
                .await;
        }
        // Hold the connection (the first one stalled mid-body) until the proxy drops it.
        let mut chunk = [0u8; 4096];
        while matches!(tcp.read(&mut chunk).await, Ok(n) if n > 0) {}
    })
    .await;
    let proxy = Proxy::start(&simple_config("", &[upstream], ""));
    let addr = proxy.addr("main");
    {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .expect("write");
        let mut first = [0u8; 1024];
        let n = tcp.read(&mut first).await.expect("read");
        assert!(first[..n].starts_with(b"HTTP/1.1 200"));
        // Gone with most of the body unread.
    }
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), get(addr, "/"))
        .await
        .expect("the next request was sent on the abandoned connection and never answered");
    assert_eq!((got.status, got.text().as_str()), (StatusCode::OK, "after"));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "the abandoned exchange's connection was not reused"
    );
}

/// An upstream may answer before reading the whole request body (a 401 or 413 to an upload),
/// as nginx does. That connection is still sending the body when the response ends, so it
/// must not serve the next request, which would wait behind the rest of the upload: Envoy
/// closes it, and so does the pool.
#[tokio::test]
async fn a_connection_still_uploading_is_not_lent_to_the_next_request() {
    let (upstream, connections) = counted_upstream(|mut tcp, _| async move {
        // Answers every head at once, body read or not; then keeps reading (and
        // answering any further head on the connection).
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                buf.drain(..end + 4);
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if tcp.write_all(answer).await.is_err() {
                    return;
                }
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let yaml = simple_config("", &[upstream], "            timeout: 5s\n");
    let proxy = Proxy::start(&yaml);
    let addr = proxy.addr("main");
    // An upload that starts and then waits: its answer comes back while it is unfinished.
    let mut uploader = TcpStream::connect(addr).await.expect("connect");
    uploader
        .write_all(b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\n\r\n0123456789")
        .await
        .expect("write");
    let mut head = [0u8; 1024];
    let n = uploader.read(&mut head).await.expect("read");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );

    // The next request needs a connection of its own; on the uploading one it would wait for
    // an upload that never ends, and get the route's 504.
    let got = get(addr, "/").await;
    assert_eq!((got.status, got.text().as_str()), (StatusCode::OK, "ok"));
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    drop(uploader);
}

#[tokio::test]
async fn http1_upstreams_get_origin_form_request_targets() {
    let (upstream, _, lines) = raw_upstream_seeing("ok", usize::MAX).await;
    let proxy = Proxy::start(&simple_config("", &[upstream], ""));
    let got = get(proxy.addr("main"), "/a/b?c=1&d").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        lines.lock().expect("lines").as_slice(),
        ["GET /a/b?c=1&d HTTP/1.1"],
        "a proxy sends origin servers origin-form targets (RFC 9112 §3.2.1)"
    );
}

/// An HTTP/2 connection with no stream open for the pool's idle timeout is closed like an idle
/// HTTP/1.1 one: it holds a `max_connections` slot, and a DNS endpoint whose address changed
/// would otherwise never be resolved again.
#[tokio::test]
async fn an_idle_http2_upstream_connection_is_closed() {
    let upstream = Upstream::named("h2").await;
    let proxy = Proxy::start(&simple_config(
        "    protocol: http2\n    pool: { idle_timeout: 1s }",
        &[upstream.addr],
        "",
    ));
    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(got.status, StatusCode::OK);
    let admin = proxy.admin.expect("admin");
    let open = "wasmesh_upstream_connections_active{cluster=\"backend\"}";
    assert_eq!(metric(&get_admin_text(admin, "/stats"), open), 1.0);
    let closed = eventually(Duration::from_secs(20), async || {
        metric(&get_admin_text(admin, "/stats"), open) == 0.0
    })
    .await;
    assert!(closed, "the idle HTTP/2 connection stayed open");
    // The next request opens another.
    assert_eq!(get(proxy.addr("main"), "/").await.status, StatusCode::OK);
}
