//! Configuration reloads on a running proxy: through `PUT /config` and through the watched
//! file, rejected whole when bad, and invisible to clients under load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::*;

fn put_config(admin: std::net::SocketAddr, yaml: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(admin).expect("connect admin");
    write!(
        tcp,
        "PUT /config HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{yaml}",
        yaml.len()
    )
    .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).expect("read");
    out
}

#[tokio::test]
async fn put_config_swaps_clusters_and_bad_config_is_rejected_whole() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let proxy = Proxy::start(&simple_config("", &[a.addr], ""));
    let admin = proxy.admin.expect("admin");
    assert_eq!(get(proxy.addr("main"), "/").await.text(), "a");

    let answer = put_config(admin, &simple_config("", &[b.addr], ""));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"generation\": 2"), "{answer}");
    assert_eq!(
        get(proxy.addr("main"), "/").await.text(),
        "b",
        "same listener, new cluster"
    );

    let bad = simple_config("    lb_policy: fastest\n", &[a.addr], "");
    let answer = put_config(admin, &bad);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("lb_policy"), "{answer}");
    assert_eq!(
        get(proxy.addr("main"), "/").await.text(),
        "b",
        "old config keeps serving"
    );
    let status = get_admin_text(admin, "/config/status");
    assert!(status.contains("\"generation\": 2"), "{status}");
    assert!(status.contains("lb_policy"), "{status}");
    let stats = get_admin_text(admin, "/stats");
    assert!(
        stats.contains("wasmesh_config_reload_total{result=\"rejected\"} 1"),
        "{stats}"
    );
    assert!(
        stats.contains("wasmesh_config_reload_total{result=\"applied\"} 1"),
        "{stats}"
    );
}

#[tokio::test]
async fn file_change_by_rename_reloads() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let proxy = Proxy::start(&simple_config("", &[a.addr], ""));
    assert_eq!(get(proxy.addr("main"), "/").await.text(), "a");
    // Write elsewhere in the directory, then rename over the watched file, as editors do.
    let tmp = proxy.dir.path().join(".wasmesh.yaml.tmp");
    std::fs::write(&tmp, simple_config("", &[b.addr], "")).expect("write");
    std::fs::rename(&tmp, proxy.dir.path().join("wasmesh.yaml")).expect("rename");
    let addr = proxy.addr("main");
    assert!(
        eventually(Duration::from_secs(20), async || get(addr, "/")
            .await
            .text()
            == "b")
        .await,
        "file change never took effect"
    );
    // A broken file is reported and changes nothing.
    std::fs::write(proxy.dir.path().join("wasmesh.yaml"), "listeners: [").expect("write");
    let admin = proxy.admin.expect("admin");
    assert!(
        eventually(Duration::from_secs(20), async || get_admin_text(
            admin,
            "/config/status"
        )
        .contains("\"rejected\": 1"))
        .await,
        "broken file was not reported"
    );
    assert_eq!(get(addr, "/").await.text(), "b");
}

#[tokio::test]
async fn reloads_under_load_fail_no_request() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let proxy = Proxy::start(&simple_config("", &[a.addr], ""));
    let admin = proxy.admin.expect("admin");
    let addr = proxy.addr("main");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for h2 in [false, true] {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            // One keep-alive connection per client, reused across every reload.
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let io = hyper_util::rt::TokioIo::new(tcp);
            let mut h1 = None;
            let mut h2s = None;
            if h2 {
                let (s, c) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await
                        .expect("h2");
                tokio::spawn(c);
                h2s = Some(s);
            } else {
                let (s, c) = hyper::client::conn::http1::handshake(io).await.expect("h1");
                tokio::spawn(c);
                h1 = Some(s);
            }
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) && sent < 20_000 {
                sent += 1;
                let req = http::Request::builder()
                    .uri(format!("http://t:{}/", addr.port()))
                    .header("host", "t")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                let result = match (&mut h1, &mut h2s) {
                    (Some(s), _) => s.send_request(req).await,
                    (_, Some(s)) => s.send_request(req).await,
                    _ => unreachable!(),
                };
                match result {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let got = collect(r).await;
                        if got.text() == "a" || got.text() == "b" {
                            ok.fetch_add(1, Ordering::SeqCst);
                        } else {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for i in 0..20 {
        let target = if i % 2 == 0 { b.addr } else { a.addr };
        let answer = put_config(admin, &simple_config("", &[target], ""));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert!(a.hits() > 0 && b.hits() > 0, "both configurations served");
}

/// A listener a reload changes (or removes) must not go on serving its open connections with
/// its old settings, a filter chain or client-certificate requirement added since among them:
/// they are drained as Envoy drains them (an idle HTTP/1.1 connection is closed at once).
#[tokio::test]
async fn connections_of_a_replaced_listener_are_drained() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Upstream::named("a").await;
    let config = |max_requests: usize| listener_config(a.addr, max_requests);
    let proxy = Proxy::start(&config(1000));
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr("main"))
        .await
        .expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !(seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.ends_with(b"a")) {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let answer = put_config(proxy.admin.expect("admin"), &config(999));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let closed = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the old listener's connection stayed open: {closed:?}"
    );
}

/// An upgraded connection (a WebSocket, say) of a drained listener goes on until
/// `drain_timeout`, then is closed, as Envoy closes what a drain leaves open.
#[tokio::test]
async fn upgraded_connections_of_a_replaced_listener_end_with_its_drain() {
    use tokio::io::AsyncReadExt;
    let up = echo_upgrade_upstream().await;
    let config =
        |max_requests: usize| format!("drain_timeout: 1s\n{}", listener_config(up, max_requests));
    let proxy = Proxy::start(&config(1000));
    let mut tunnel = upgrade(proxy.addr("main")).await.expect("upgrade");
    echoed(&mut tunnel, b"before").await;
    let answer = put_config(proxy.admin.expect("admin"), &config(999));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Still relayed while the drain runs...
    echoed(&mut tunnel, b"while draining").await;
    // ...and closed at its end.
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(20), tunnel.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the upgraded connection outlived the drain: {closed:?}"
    );
}

/// One listener on port 0 whose `max_requests` the tests change to make it "changed".
fn listener_config(upstream: std::net::SocketAddr, max_requests: usize) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    header_read_timeout: 60s
    max_requests: {max_requests}
routes:
  - name: main
    virtual_hosts:
      - {{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, cluster: backend }}] }}
clusters:
  - name: backend
    endpoints: ["{upstream}"]
admin:
  address: "127.0.0.1:0"
"#
    )
}

/// A listener changed in place keeps its address and its sockets: a client opening a new
/// connection for each request never sees a refusal or a reset across reloads (connections
/// waiting in the old accept queue are taken over, not dropped with the old socket).
#[tokio::test]
async fn a_changed_listener_keeps_its_sockets() {
    let a = Upstream::named("a").await;
    let proxy = Proxy::start(&listener_config(a.addr, 1000));
    let (addr, admin) = (proxy.addr("main"), proxy.admin.expect("admin"));
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = done.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut served = 0;
                while !stop.load(Ordering::SeqCst) {
                    let req = request("GET", "/", &[("connection", "close")]);
                    // A refused connection panics here, failing the test as loudly.
                    match try_send(addr, req, false).await {
                        Ok(StatusCode::OK) => served += 1,
                        other => failures.push(format!("{other:?}")),
                    }
                }
                (served, failures)
            })
        })
        .collect();
    let upstream = a.addr;
    for i in 0..10 {
        let answer = tokio::task::spawn_blocking(move || {
            put_config(admin, &listener_config(upstream, 999 - i))
        })
        .await
        .expect("reload");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Traffic between reloads, so that each switch happens under it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::SeqCst);
    let (mut served, mut failures) = (0, Vec::new());
    for client in clients {
        let (n, failed) = client.await.expect("client");
        served += n;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} of {served} failed: {failures:?}",
        failures.len()
    );
    assert!(served > 0);
}
