//! Logging, time and the rest of WASI: `proxy_log` at every level, stdout/stderr, the log
//! level, both clocks, randomness, environment, arguments and `proc_exit`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::capture;
use crate::check::{Check, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::observe::{Facts, Run};
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "logging";
const FAILED: &str = "the callback failed";

fn within_clock_window(value: &str, facts: &Facts) -> bool {
    let parse = |s: Option<&String>| s.and_then(|v| v.parse::<u128>().ok());
    match (
        value.parse::<u128>().ok(),
        parse(facts.get("time.lo")),
        parse(facts.get("time.hi")),
    ) {
        (Some(v), Some(lo), Some(hi)) => lo <= v && v <= hi,
        _ => false,
    }
}

fn monotonic(value: &str, _: &Facts) -> bool {
    match value.split(' ').collect::<Vec<_>>()[..] {
        ["SUCCESS", "SUCCESS", a, b] => matches!(
            (a.parse::<u64>(), b.parse::<u64>()),
            (Ok(a), Ok(b)) if a > 0 && b >= a
        ),
        _ => false,
    }
}

fn random(value: &str, _: &Facts) -> bool {
    match value.split(' ').collect::<Vec<_>>()[..] {
        ["SUCCESS", "SUCCESS", a, b] => a.len() == 64 && b.len() == 64 && a != b,
        _ => false,
    }
}

fn all_written(value: &str, _: &Facts) -> bool {
    matches!(value.split(' ').collect::<Vec<_>>()[..], [a, "of", b] if a == b && a != "0")
}

pub fn checks() -> Vec<Check> {
    const LEVELS: &str =
        "spec v0.2.1 proxy_log: the message is logged at log_level (proxy_log_level_t)";
    const FD_WRITE: &str =
        "spec v0.2.1 Logging: fd_write to STDOUT logs at INFO, to STDERR at ERROR";
    vec![
        eq("logging.proxy_log_status", "OK", "spec v0.2.1 proxy_log: OK on success").proves(&["proxy_log"]),
        eq("logging.level0@level", "trace", LEVELS).proves(&["proxy_log", "proxy_log_level_t"]),
        eq("logging.level1@level", "debug", LEVELS).proves(&["proxy_log", "proxy_log_level_t"]),
        eq("logging.level2@level", "info", LEVELS).proves(&["proxy_log", "proxy_log_level_t"]),
        eq("logging.level3@level", "warn", LEVELS).proves(&["proxy_log", "proxy_log_level_t"]),
        eq("logging.level4@level", "error", LEVELS).proves(&["proxy_log", "proxy_log_level_t"]),
        Check::new("logging.level5@level", Expect::Fact("log.critical", "`critical` (host-abi), `error` (proxy)"),
            "spec v0.2.1 proxy_log_level_t CRITICAL=5 (host-abi hands it on as critical; the proxy logs through tracing, whose highest level is error)")
            .proves(&["proxy_log", "proxy_log_level_t"]),
        eq("logging.get_log_level", "OK 0", "spec v0.2.1 proxy_get_log_level: the host's current level (both runs enable every level: TRACE)")
            .proves(&["proxy_get_log_level", "proxy_log_level_t"]),
        eq("logging.stdout@level", "info", FD_WRITE).proves(&["wasi_snapshot_preview1.fd_write", "wasi_fd_id_t"]),
        eq("logging.stderr@level", "error", FD_WRITE).proves(&["wasi_snapshot_preview1.fd_write", "wasi_fd_id_t"]),
        eq("logging.fd_write_raw@level", "info", FD_WRITE).proves(&["wasi_snapshot_preview1.fd_write"]),
        eq("logging.fd_write_errno", "SUCCESS", "WASI preview 1 fd_write").proves(&["wasi_snapshot_preview1.fd_write", "wasi_errno_t"]),
        Check::new("logging.fd_write_written", Expect::Holds("every byte reported written", all_written), "WASI preview 1 fd_write: returns the bytes written")
            .proves(&["wasi_snapshot_preview1.fd_write"]),
        eq("logging.fd_write_bad_fd", "BADF", "Envoy (cpp-host writevImpl): descriptors other than 1 and 2 are BADF")
            .proves(&["wasi_snapshot_preview1.fd_write", "wasi_errno_t", "wasi_fd_id_t"]),
        eq("logging.current_time_status", "OK", "spec v0.2.1 proxy_get_current_time_nanoseconds").proves(&["proxy_get_current_time_nanoseconds"]),
        Check::new("logging.current_time_ns", Expect::Holds("the run's wall clock (fixed in host-abi, the request's span in the proxy)", within_clock_window),
            "spec v0.2.1 proxy_get_current_time_nanoseconds: wall-clock time in nanoseconds since the Unix epoch")
            .proves(&["proxy_get_current_time_nanoseconds"]),
        eq("logging.clock_realtime_errno", "SUCCESS", "spec v0.2.1 clock_time_get with REALTIME").proves(&["wasi_snapshot_preview1.clock_time_get", "wasi_clock_id_t"]),
        Check::new("logging.clock_realtime_ns", Expect::Holds("the run's wall clock", within_clock_window), "spec v0.2.1 wasi_clock_id_t REALTIME=0: wall-clock time")
            .proves(&["wasi_snapshot_preview1.clock_time_get", "wasi_clock_id_t"]),
        Check::new("logging.clock_monotonic", Expect::Holds("SUCCESS twice, non-zero, never going back", monotonic), "spec v0.2.1 wasi_clock_id_t MONOTONIC=1")
            .proves(&["wasi_snapshot_preview1.clock_time_get", "wasi_clock_id_t"]),
        eq("logging.clock_bad_id", "NOTSUP", "Envoy (cpp-host wasi_unstable_clock_time_get): other clocks are NOTSUP")
            .proves(&["wasi_snapshot_preview1.clock_time_get", "wasi_errno_t"]),
        Check::new("logging.random_get", Expect::Holds("SUCCESS twice, 32 bytes each, different", random), "spec v0.2.1 random_get")
            .proves(&["wasi_snapshot_preview1.random_get"]),
        eq("logging.random_get_too_large", "INVAL", "Envoy (cpp-host wasi_unstable_random_get): more than 64 KiB is INVAL")
            .proves(&["wasi_snapshot_preview1.random_get", "wasi_errno_t"]),
        eq("logging.environ_sizes_get", "SUCCESS 0 0", "spec v0.2.1 environ_sizes_get: the plugin's environment (Envoy: VmConfig.environment_variables; wasmesh configures none)")
            .proves(&["wasi_snapshot_preview1.environ_sizes_get"]),
        eq("logging.environ_get", "SUCCESS", "spec v0.2.1 environ_get").proves(&["wasi_snapshot_preview1.environ_get"]),
        eq("logging.args_sizes_get", "SUCCESS 0 0", "Envoy (cpp-host wasi_unstable_args_sizes_get): no arguments, 0 and 0")
            .proves(&["wasi_snapshot_preview1.args_sizes_get"]),
        eq("logging.args_get", "SUCCESS", "Envoy (cpp-host wasi_unstable_args_get)").proves(&["wasi_snapshot_preview1.args_get"]),
        eq("logging.proc_exit_outcome", FAILED, "Envoy (cpp-host wasi_unstable_proc_exit): the VM fails (the proxy answers per failure_policy: fail_closed 503)")
            .proves(&["wasi_snapshot_preview1.proc_exit"]),
    ]
}

fn headers(mode: &'static str) -> [(&'static str, &'static str); 4] {
    [
        (":method", "GET"),
        (":path", "/logging"),
        (":authority", "conformance.local"),
        ("x-probe-mode", mode),
    ]
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "logging", "")?;
    let mut run = Run::default();
    let now = nanos(loaded.harness.now());
    run.fact("time.lo", now.clone());
    run.fact("time.hi", now);
    run.fact("log.critical", "critical");
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&headers("all"), true)
        .doing("request headers")?;
    let mut exiting = loaded.harness.http_stream().doing("a stream")?;
    let outcome = match exiting.send_request_headers(&headers("proc-exit"), true) {
        Err(wasmesh_sdk_test::Error::Filter(_)) => FAILED.to_string(),
        Err(other) => format!("error: {other}"),
        Ok(action) => format!("returned {action:?}"),
    };
    run.obs.add("logging.proc_exit_outcome", outcome);
    // The harness keeps each line's exact level (tracing folds CRITICAL into ERROR).
    run.harness(&loaded.harness);
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("logging").await?;
    let name = capture::unique("logging");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        "",
        "",
        "",
    );
    let mut run = Run::default();
    run.fact("log.critical", "error");
    Proxy::with(&yaml, async |proxy: &Proxy| {
        run.fact("time.lo", nanos(SystemTime::now()));
        proxy.get("/logging", &[("x-probe-mode", "all")]).await?;
        run.fact("time.hi", nanos(SystemTime::now()));
        let reply = proxy
            .get("/logging", &[("x-probe-mode", "proc-exit")])
            .await?;
        let outcome = if reply.status == 503 {
            FAILED.to_string()
        } else {
            format!("answered {}", reply.status)
        };
        run.obs.add("logging.proc_exit_outcome", outcome);
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
