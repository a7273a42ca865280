//! End-to-end HTTP behaviour of the real binary: HTTP/1.1 and h2c through the proxy, header
//! hygiene, streaming bodies with trailers, WebSocket-style upgrades, the admin API, and the
//! answers to malformed or abusive clients.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn http1_request_reaches_upstream_with_forwarding_headers() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    let got = send(
        proxy.addr("main"),
        request(
            "GET",
            "/some/path?q=1",
            &[
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "secret"),
                ("keep-alive", "timeout=5"),
                ("x-forwarded-for", "10.1.2.3"),
            ],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "alpha");
    assert_eq!(got.header("x-upstream"), Some("alpha"));
    let seen = upstream.last_seen();
    assert_eq!(seen.path, "/some/path?q=1");
    assert_eq!(seen.headers["host"], "test.local");
    assert_eq!(seen.headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert!(seen.headers.contains_key("x-request-id"));
    assert!(
        !seen.headers.contains_key("x-hop"),
        "header named by Connection is hop-by-hop"
    );
    assert!(!seen.headers.contains_key("keep-alive"));

    // Several X-Forwarded-For lines are one list, kept whole and in order (RFC 9110 §5.3):
    // dropping one would hand a spoofed first entry to an upstream that trusts a hop count.
    for h2 in [false, true] {
        let got = send(
            proxy.addr("main"),
            request(
                "GET",
                "/",
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "10.1.2.3, 10.4.5.6"),
                ],
            ),
            h2,
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "h2={h2}");
        let seen = upstream.last_seen();
        let xff: Vec<_> = seen.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["6.6.6.6, 10.1.2.3, 10.4.5.6, 127.0.0.1"], "h2={h2}");
    }
}

#[tokio::test]
async fn existing_request_id_is_kept() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    let got = send(
        proxy.addr("main"),
        request("GET", "/", &[("x-request-id", "abc-123")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(upstream.last_seen().headers["x-request-id"], "abc-123");
}

/// Also: HTTP/2 clients (browsers) split `cookie` into one field per cookie for HPACK's sake;
/// RFC 9113 §8.2.3 has them joined with "; " before they go on as HTTP/1.1, where many servers
/// read only one `Cookie` line.
#[tokio::test]
async fn h2c_prior_knowledge_downstream_to_http1_upstream() {
    let upstream = Upstream::named("beta").await;
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    let req = Request::builder()
        .uri(format!(
            "http://test.local:{}/h2",
            proxy.addr("main").port()
        ))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let got = send(proxy.addr("main"), req, true).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.version, Version::HTTP_2);
    assert_eq!(got.text(), "beta");
    let seen = upstream.last_seen();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(
        seen.headers["host"],
        format!("test.local:{}", proxy.addr("main").port())
    );
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"]);
}

#[tokio::test]
async fn http2_upstream_cluster() {
    let upstream = Upstream::named("gamma").await;
    let proxy = Proxy::start(&simple_config(
        "    protocol: http2\n",
        &[upstream.addr],
        "",
    ));
    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(upstream.last_seen().version, Version::HTTP_2);
    assert_eq!(upstream.last_seen().path, "/");
}

#[tokio::test]
async fn streamed_body_and_trailers_pass_through() {
    let upstream = Upstream::with(|seen: Seen| async move {
        let trailer = seen
            .trailers
            .as_ref()
            .and_then(|t| t.get("x-checksum"))
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        reply(
            StatusCode::OK,
            "echo",
            &format!("{} bytes, trailer={trailer}", seen.body.len()),
        )
    })
    .await;
    let proxy = Proxy::start(&simple_config(
        "    protocol: http2\n",
        &[upstream.addr],
        "",
    ));

    // 1 MiB in 64 KiB chunks, then a trailer, over h2c so trailers are first-class.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..16)
        .map(|_| Ok(http_body::Frame::data(chunk.clone())))
        .collect();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().expect("value"));
    frames.push(Ok(http_body::Frame::trailers(trailers)));
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let (status, _, text, _) = h2c_exchange(proxy.addr("main"), &[("te", "trailers")], body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, "1048576 bytes, trailer=abc");
}

/// HTTP/1.1 carries trailers only in a message that announces them (`Trailer`), and a
/// response's only to a client that takes them (`TE: trailers`): both headers pass through,
/// so trailers do too, each way.
#[tokio::test]
async fn http1_trailers_pass_through_both_ways() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let collected = req.into_body().collect().await.expect("request body");
                            *record.lock().expect("seen") = collected.trailers().cloned();
                            let response = http::Response::builder()
                                .header("trailer", "x-up-trailer")
                                .body(body_with_trailers(b"pong", &[("x-up-trailer", "u")]))
                                .expect("response");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let proxy = Proxy::start(&simple_config("", &[upstream], ""));

    let tcp = TcpStream::connect(proxy.addr("main"))
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = Request::post("/upload")
        .header("host", "test.local")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .body(body_with_trailers(b"ping", &[("x-checksum", "abc")]))
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    assert_eq!(collected.to_bytes(), "pong");
    assert_eq!(
        trailers.get("x-up-trailer").map(|v| v.as_bytes()),
        Some(&b"u"[..])
    );
    let upstream_trailers = seen.lock().expect("seen").clone().unwrap_or_default();
    assert_eq!(
        upstream_trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"abc"[..])
    );
}

#[tokio::test]
async fn chunked_http1_upload_streams_to_upstream() {
    let upstream = Upstream::with(|seen: Seen| async move {
        reply(StatusCode::OK, "echo", &seen.body.len().to_string())
    })
    .await;
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    let mut tcp = TcpStream::connect(proxy.addr("main"))
        .await
        .expect("connect");
    tcp.write_all(
        b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write head");
    let mut buf = vec![0u8; 64];
    let n = tcp.read(&mut buf).await.expect("read 100");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "expected 100 Continue"
    );
    tcp.write_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await
        .expect("write body");
    let text = read_response(&mut tcp).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("11"), "{text}");
}

async fn read_response(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if len.is_some_and(|len| body.len() >= len) {
                        break;
                    }
                }
            }
            Ok(Err(_)) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn upgrade_is_spliced_both_ways() {
    let up_addr = echo_upgrade_upstream().await;
    let proxy = Proxy::start(&simple_config("", &[up_addr], ""));
    let mut tunnel = upgrade(proxy.addr("main")).await.expect("upgrade");
    echoed(&mut tunnel, b"ping through the tunnel").await;
}

/// An upgraded connection is still one of the listener's connections: it holds its
/// `max_connections` slot while it lasts, and a tunnel quiet for the route's `idle_timeout`
/// (Envoy's stream idle timeout) is closed, which frees the slot.
#[tokio::test]
async fn an_upgraded_connection_keeps_its_slot_and_closes_when_idle() {
    let up_addr = echo_upgrade_upstream().await;
    let config = simple_config("", &[up_addr], "            idle_timeout: 2s\n").replace(
        "    header_read_timeout: 1s\n",
        "    header_read_timeout: 1s\n    max_connections: 1\n",
    );
    let proxy = Proxy::start(&config);
    let addr = proxy.addr("main");
    let mut tunnel = upgrade(addr).await.expect("upgrade");
    echoed(&mut tunnel, b"ping").await;

    // The listener's one slot is the tunnel's: another connection is closed on accept.
    assert!(
        upgrade(addr).await.is_err(),
        "a second connection was served"
    );
    echoed(&mut tunnel, b"still open").await;

    // Then quiet: the proxy ends the tunnel.
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(20), tunnel.read(&mut buf))
        .await
        .expect("the quiet tunnel was never closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // Its slot is free again (once its task has ended).
    let mut again = None;
    for _ in 0..100 {
        if let Ok(tunnel) = upgrade(addr).await {
            again = Some(tunnel);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = again.expect("the slot was never freed");
    echoed(&mut again, b"pong").await;
}

#[tokio::test]
async fn malformed_request_gets_400_and_close() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo st: t\r\n\r\n",
    ] {
        let mut tcp = TcpStream::connect(proxy.addr("main"))
            .await
            .expect("connect");
        tcp.write_all(garbage).await.expect("write");
        let text = read_response(&mut tcp).await;
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "for {:?}: {text}",
            String::from_utf8_lossy(garbage)
        );
    }
    assert_eq!(upstream.hits(), 0, "nothing malformed reached the upstream");
}

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_the_connection_closed() {
    // RFC 9112 §6.1: Transfer-Encoding wins, Content-Length is dropped, and the connection is
    // not reused, so nothing smuggled after the chunked body can be read as a second request.
    let upstream = Upstream::with(|seen: Seen| async move {
        let cl = seen
            .headers
            .get("content-length")
            .map(|v| v.to_str().unwrap_or("?").to_string());
        reply(
            StatusCode::OK,
            "echo",
            &format!("{}:{cl:?}", seen.body.len()),
        )
    })
    .await;
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    let mut tcp = TcpStream::connect(proxy.addr("main"))
        .await
        .expect("connect");
    tcp.write_all(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .expect("write");
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the proxy must close the connection");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("0:None"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1").count(),
        1,
        "no second response: {text}"
    );
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn oversized_head_gets_431() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    let mut tcp = TcpStream::connect(proxy.addr("main"))
        .await
        .expect("connect");
    let big = "a".repeat(100 * 1024);
    let _ = tcp
        .write_all(format!("GET / HTTP/1.1\r\nHost: t\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await;
    let text = read_response(&mut tcp).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn slowloris_connection_is_closed() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    let mut tcp = TcpStream::connect(proxy.addr("main"))
        .await
        .expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write partial");
    // header_read_timeout is 1s in simple_config; the proxy must hang up on its own.
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "a client that never finishes its head is disconnected"
    );
}

#[tokio::test]
async fn no_route_is_404_and_dead_upstream_is_503() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let yaml = simple_config("", &[dead], "").replace("prefix: \"/\"", "prefix: \"/api\"");
    let proxy = Proxy::start(&yaml);
    assert_eq!(
        get(proxy.addr("main"), "/other").await.status,
        StatusCode::NOT_FOUND
    );
    let got = get(proxy.addr("main"), "/api").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(got.text().contains("connect"), "{}", got.text());
}

#[tokio::test]
async fn admin_endpoints() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    assert_eq!(get(proxy.addr("main"), "/").await.status, StatusCode::OK);
    let admin = proxy.admin.expect("admin address");
    let ready = get_admin_text(admin, "/ready");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let stats = get_admin_text(admin, "/stats");
    assert!(
        stats
            .contains("wasmesh_requests_total{listener=\"main\",route=\"default\",code=\"200\"} 1"),
        "{stats}"
    );
    assert!(
        stats.contains("wasmesh_request_duration_seconds_bucket"),
        "{stats}"
    );
    let config = get_admin_text(admin, "/config");
    assert!(config.contains("\"generation\": 1"), "{config}");
    assert!(config.contains(&upstream.addr.to_string()), "{config}");
    let clusters = get_admin_text(admin, "/clusters");
    assert!(clusters.contains("\"healthy\": true"), "{clusters}");
    assert!(get_admin_text(admin, "/nope").starts_with("HTTP/1.1 404"));
}
