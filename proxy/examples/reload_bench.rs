//! How fast a change reaches traffic, and what traffic feels meanwhile (run by `bench/reload`).
//!
//! Steady keep-alive load (HTTP/1.1) goes through a real `wasmesh run` to a demo upstream while
//! the listener's chain is changed three ways:
//! - `PUT /chains/edge` alternating two modules compiled before (the cached case);
//! - `PUT /chains/edge` with a module never seen before (read, compiled, instantiated);
//! - pushing a new module to a followed registry tag (resolve, pull, verify, compile, swap).
//!
//! For each change it records the time from the change (the PUT sent, the push acknowledged) to
//! the first response stamped by the new module, and it compares request latency and throughput
//! in the 200 ms after each swap with steady state.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

const CONNECTIONS: usize = 8;
const ROUNDS: usize = 20;
/// How long after a change counts as "during the swap".
const SWAP_WINDOW: Duration = Duration::from_millis(200);

fn stamp_module(version: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "x-stamp")
  (data (i32.const 16) "{version}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32) (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size))) (local.get $at))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 0) (i32.const 7) (i32.const 16) (i32.const {len})))
    (i32.const 0)))"#,
        len = version.len()
    );
    wat::parse_str(text).expect("stamp module")
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_proxy(
    binary: &str,
    config: &str,
    dir: &std::path::Path,
) -> (Proxy, SocketAddr, SocketAddr) {
    let path = dir.join("wasmesh.yaml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(binary)
        .args(["run", "--concurrency", "1", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .env("WASMESH_CACHE_DIR", dir.join("cache"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start wasmesh (build it with cargo build --release -p wasmesh-proxy)");
    let stdout = child.stdout.take().expect("stdout");
    let (mut listener, mut admin) = (None, None);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("wasmesh: listener edge on ") {
            listener = rest.parse().ok();
        } else if let Some(rest) = line.strip_prefix("wasmesh: admin on ") {
            admin = rest.parse().ok();
        } else if line == "wasmesh: ready" {
            break;
        }
    }
    (
        Proxy(child),
        listener.expect("listener address"),
        admin.expect("admin address"),
    )
}

/// One admin request; returns the status code.
fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("admin");
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).expect("read");
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `PUT /chains/edge` off the async threads: the load generator shares them, and a blocking
/// call would stall its connections for as long as the proxy takes to answer.
async fn put_chain(addr: SocketAddr, body: String) -> u16 {
    tokio::task::spawn_blocking(move || admin(addr, "PUT", "/chains/edge", &body))
        .await
        .expect("admin call")
}

/// One response as the load generator saw it.
struct Sample {
    done: Instant,
    latency: Duration,
    stamp: String,
}

#[derive(Default)]
struct Seen {
    samples: Vec<Sample>,
    errors: u64,
}

fn chain(source: &str, follow: bool) -> String {
    let follow = if follow {
        "\n    follow: true\n    poll_interval: 100ms"
    } else {
        ""
    };
    format!("plugins:\n  - name: stamp\n    source: \"{source}\"{follow}\n")
}

/// The time from `since` to the first response stamped `stamp` that finished after it.
async fn first_stamp(seen: &Mutex<Seen>, stamp: &str, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Only the newest samples can qualify: scan back from the end rather than over the
        // whole run, since the load generator waits on this lock for every response it records.
        let first = seen
            .lock()
            .expect("seen")
            .samples
            .iter()
            .rev()
            .take_while(|s| s.done >= since)
            .filter(|s| s.stamp == stamp)
            .map(|s| s.done)
            .min();
        if let Some(done) = first {
            return done.duration_since(since);
        }
        assert!(Instant::now() < deadline, "stamp {stamp} never served");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(label: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{label:<46} median {:>7.1} ms   p90 {:>7.1} ms   max {:>7.1} ms   (n={})",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(times.last().copied().unwrap_or_default()),
        times.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let binary = std::env::var("WASMESH_BIN").unwrap_or_else(|_| "target/release/wasmesh".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream =
        wasmesh_proxy::demo::spawn_upstream("bench", "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("upstream");
    let registry = wasmesh_registry::server::serve(wasmesh_registry::server::RegistryConfig {
        root: dir.path().join("registry"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        push_token: None,
        pull_token: None,
    })
    .await
    .expect("registry");
    let mut files = Vec::new();
    for v in ["a", "b"] {
        let path = dir.path().join(format!("stamp-{v}.wasm"));
        std::fs::write(&path, stamp_module(v)).expect("write");
        files.push(format!("file://{}", path.display()));
    }
    let config = format!(
        r#"
listeners:
  - name: edge
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: edge
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: "/" }}
            cluster: up
clusters:
  - name: up
    endpoints: ["{upstream}"]
filter_chains:
  - name: edge
    plugins:
      - name: stamp
        source: "{}"
admin:
  address: "127.0.0.1:0"
"#,
        files[0]
    );
    let (proxy, listen, admin_addr) = start_proxy(&binary, &config, dir.path());
    // Module b compiled once, so the "cached" rounds below swap between two cached modules.
    assert_eq!(
        admin(admin_addr, "PUT", "/chains/edge", &chain(&files[1], false)),
        200
    );
    assert_eq!(
        admin(admin_addr, "PUT", "/chains/edge", &chain(&files[0], false)),
        200
    );

    // Steady load: keep-alive connections sending back to back.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let (seen, stop) = (seen.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(listen)
                .await
                .expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let request = http::Request::get("/bench")
                    .header("host", "bench")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let began = Instant::now();
                let sample = match sender.send_request(request).await {
                    Ok(response) if response.status().is_success() => {
                        let stamp = response
                            .headers()
                            .get("x-stamp")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let read = response.into_body().collect().await;
                        read.ok().map(|_| stamp)
                    }
                    _ => None,
                };
                let done = Instant::now();
                let mut seen = seen.lock().expect("seen");
                match sample {
                    Some(stamp) => seen.samples.push(Sample {
                        done,
                        latency: done - began,
                        stamp,
                    }),
                    None => seen.errors += 1,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady_to = Instant::now();

    let mut swaps: Vec<(&str, Instant)> = Vec::new();
    let mut cached = Vec::new();
    for round in 0..ROUNDS {
        let (file, stamp) = if round % 2 == 0 {
            (&files[1], "b")
        } else {
            (&files[0], "a")
        };
        let began = Instant::now();
        assert_eq!(put_chain(admin_addr, chain(file, false)).await, 200);
        cached.push(first_stamp(&seen, stamp, began).await);
        swaps.push((KINDS[0], began));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut fresh = Vec::new();
    for round in 0..ROUNDS {
        let stamp = format!("new{round}");
        let path = dir.path().join(format!("stamp-{stamp}.wasm"));
        std::fs::write(&path, stamp_module(&stamp)).expect("write");
        let began = Instant::now();
        let source = format!("file://{}", path.display());
        assert_eq!(put_chain(admin_addr, chain(&source, false)).await, 200);
        fresh.push(first_stamp(&seen, &stamp, began).await);
        swaps.push((KINDS[1], began));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let tag = format!("oci://{}/bench/stamp:live", registry.local_addr());
    let push = |version: &str| {
        let module = stamp_module(version);
        let tag = tag.clone();
        async move {
            wasmesh_registry::client::push(&tag, &module, &Default::default(), None)
                .await
                .expect("push")
        }
    };
    push("t0").await;
    assert_eq!(put_chain(admin_addr, chain(&tag, true)).await, 200);
    first_stamp(&seen, "t0", Instant::now() - Duration::from_secs(1)).await;
    let mut followed = Vec::new();
    for round in 1..=ROUNDS / 2 {
        let stamp = format!("t{round}");
        push(&stamp).await;
        let pushed = Instant::now();
        followed.push(first_stamp(&seen, &stamp, pushed).await);
        swaps.push((KINDS[2], pushed));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let _ = client.await;
    }

    // The proxy goes before the registry it follows, so it does not log the registry gone.
    drop(proxy);
    report(
        &seen.lock().expect("seen"),
        (steady_from, steady_to),
        &swaps,
        (cached, fresh, followed),
    );
    registry.shutdown().await;
}

type Rounds = (Vec<Duration>, Vec<Duration>, Vec<Duration>);

/// The kinds of change, as `report` names them.
const KINDS: [&str; 3] = ["PUT, module cached", "PUT, new module", "tag push (follow)"];

fn report(
    seen: &Seen,
    (steady_from, steady_to): (Instant, Instant),
    swaps: &[(&str, Instant)],
    (cached, fresh, followed): Rounds,
) {
    let in_window = |s: &Sample, from: Instant, to: Instant| s.done >= from && s.done < to;
    let mut steady: Vec<Duration> = seen
        .samples
        .iter()
        .filter(|s| in_window(s, steady_from, steady_to))
        .map(|s| s.latency)
        .collect();
    steady.sort();
    let steady_rps = steady.len() as f64 / (steady_to - steady_from).as_secs_f64();
    let steady_p99 = percentile(&steady, 0.99);

    println!("# reload benchmark: {CONNECTIONS} keep-alive connections, wasmesh --concurrency 1");
    summary("PUT /chains (module cached) -> first response", cached);
    summary("PUT /chains (new module) -> first response", fresh);
    summary("tag push (follow, poll 100ms) -> first response", followed);
    println!();
    println!(
        "Latency of requests finishing within {} ms of a change, against 3 s of steady state:",
        SWAP_WINDOW.as_millis()
    );
    println!(
        "{:<28} {:>6} {:>9} {:>7} {:>9} {:>9} {:>9}   slower than 2x steady p99",
        "window", "swaps", "req/s", "steady", "p50 ms", "p99 ms", "max ms"
    );
    let row = |label: &str, count: usize, rps: f64, latencies: &mut Vec<Duration>| {
        latencies.sort();
        let slow = latencies.iter().filter(|d| **d > steady_p99 * 2).count();
        println!(
            "{label:<28} {count:>6} {rps:>9.0} {:>6.0}% {:>9.3} {:>9.3} {:>9.3}   {slow} of {} ({:.2}%)",
            100.0 * rps / steady_rps,
            ms(percentile(latencies, 0.5)),
            ms(percentile(latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
            latencies.len(),
            100.0 * slow as f64 / latencies.len().max(1) as f64,
        );
    };
    row("steady state", 0, steady_rps, &mut steady.clone());
    let window = |at: Instant| {
        seen.samples
            .iter()
            .filter(move |s| in_window(s, at, at + SWAP_WINDOW))
            .map(|s| s.latency)
    };
    let per_second =
        |count: usize, n: usize| n as f64 / (SWAP_WINDOW.as_secs_f64() * count.max(1) as f64);
    for kind in KINDS {
        let ats: Vec<Instant> = swaps
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, at)| *at)
            .collect();
        let mut during: Vec<Duration> = ats.iter().flat_map(|at| window(*at)).collect();
        row(
            kind,
            ats.len(),
            per_second(ats.len(), during.len()),
            &mut during,
        );
    }
    let mut during: Vec<Duration> = swaps.iter().flat_map(|(_, at)| window(*at)).collect();
    row(
        "all swaps",
        swaps.len(),
        per_second(swaps.len(), during.len()),
        &mut during,
    );
    println!("failed requests: {}", seen.errors);
}
