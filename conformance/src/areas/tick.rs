//! Timers: `proxy_set_tick_period_milliseconds` (set, changed, stopped) and `proxy_on_tick`.

use std::time::Duration;

use crate::areas::lifecycle::same_as_root;
use crate::capture;
use crate::check::{Check, Env, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "tick";

pub fn checks() -> Vec<Check> {
    const SET: &str = "spec v0.2.1 proxy_set_tick_period_milliseconds: the host calls proxy_on_tick every period; 0 disables it";
    vec![
        eq("tick.set_period_status", "OK", SET).proves(&["proxy_set_tick_period_milliseconds"]),
        eq("tick.period_set", "100ms", SET)
            .only(Env::HostAbi)
            .proves(&["proxy_set_tick_period_milliseconds"]),
        Check::new(
            "tick.context",
            Expect::Holds("called for the root context", same_as_root),
            "spec v0.2.1 proxy_on_tick(plugin_context_id)",
        )
        .proves(&["proxy_on_tick"]),
        eq("tick.change_period_status", "OK", SET).proves(&["proxy_set_tick_period_milliseconds"]),
        eq("tick.stop_status", "OK", SET).proves(&["proxy_set_tick_period_milliseconds"]),
        eq("tick.fired", "3", SET).proves(&["proxy_on_tick"]),
        Check::new("tick.after_stop", Expect::Absent, SET)
            .proves(&["proxy_set_tick_period_milliseconds"]),
        eq("tick.period_after_stop", "none", SET)
            .only(Env::HostAbi)
            .proves(&["proxy_set_tick_period_milliseconds"]),
    ]
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "tick", "")?;
    let h = &loaded.harness;
    let mut run = Run::default();
    let period =
        |p: Option<Duration>| p.map_or("none".to_string(), |d| format!("{}ms", d.as_millis()));
    run.obs.add("tick.period_set", period(h.tick_period()));
    for _ in 0..3 {
        h.tick().doing("a tick")?;
    }
    run.obs
        .add("tick.period_after_stop", period(h.tick_period()));
    // With no period the harness refuses to tick, as a host's timer would not fire.
    let _ = h.tick();
    run.harness(&loaded.harness);
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("tick").await?;
    let name = capture::unique("tick");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        "",
        "",
        "",
    );
    Proxy::with(&yaml, async |_: &Proxy| {
        capture::wait_for(&name, "tick.fired", Duration::from_secs(20)).await;
        // Ten stopped periods: a tick after the stop would show here (a slow machine can
        // only hide such a tick, never invent one).
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    })
    .await?;
    let mut run = Run::default();
    run.lines(&name);
    Ok(run)
}
