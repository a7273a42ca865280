//! Rough per-request cost of each language's example filter: N streams (request headers and
//! response headers through the filter, which sets one header each way) on the in-process
//! harness, timed as a whole. An approximation — the harness's own bookkeeping is included,
//! and nothing here is a benchmark of the proxy — but the same loop for every language, so the
//! figures compare.
//!
//! ```sh
//! cargo run --release -p wasmesh-sdk-tools --example request_cost [-- N]
//! ```
//! The Rust figure uses the template (`wasmesh filter new --lang rust`), built like the others.

use std::path::PathBuf;
use std::time::Instant;

use wasmesh_sdk_test::Harness;
use wasmesh_sdk_tools::{BuildOptions, Language, NewOptions, build, built_in_sdk_dir, examples};

const CONFIG: &str = r#"{"request": {"x-hello": "world"}, "response": {"x-served-by": "cost"}}"#;

fn rust_template(work: &std::path::Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let created = wasmesh_sdk_tools::new_project(&NewOptions {
        name: "cost".into(),
        language: Language::Rust,
        dir: work.join("cost"),
        sdk: built_in_sdk_dir(),
    })?;
    let target = examples::test_out_dir();
    let built = build(
        &created.dir,
        &BuildOptions {
            target_dir: target.parent().map(|t| t.join("sdk-user-filters")),
            ..BuildOptions::default()
        },
    )?;
    Ok(built.wasm().to_path_buf())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let out = std::env::temp_dir().join("wasmesh-request-cost");
    let work = tempfile::tempdir()?;
    let built = examples::all(&out)?;
    let modules = [
        ("rust (template)", rust_template(work.path())?),
        ("assemblyscript", built.assemblyscript),
        ("c", built.c),
        ("zig", built.zig),
    ];
    println!("{n} streams each, request + response headers (approximate, in-process harness):");
    for (name, wasm) in modules {
        let size = std::fs::metadata(&wasm)?.len();
        let harness = Harness::load(&wasm, CONFIG)?;
        let run = |count: u32| -> Result<(), Box<dyn std::error::Error>> {
            for _ in 0..count {
                let mut s = harness.http_stream()?;
                s.send_request_headers(
                    &[(":method", "GET"), (":path", "/"), (":authority", "a")],
                    true,
                )?;
                s.send_response_headers(&[(":status", "200"), ("content-length", "0")], true)?;
            }
            Ok(())
        };
        run(n / 10)?; // warm-up: allocator, caches
        let started = Instant::now();
        run(n)?;
        let per = started.elapsed() / n;
        println!(
            "  {name:16} {:>8} bytes   {:>6.2} µs per request",
            size,
            per.as_secs_f64() * 1e6
        );
    }
    Ok(())
}
