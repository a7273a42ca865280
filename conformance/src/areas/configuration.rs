//! Configuration: `proxy_on_vm_start` and `proxy_on_configure` with their sizes and buffers,
//! and a module refusing its VM or plugin configuration.

use crate::capture;
use crate::check::{Check, Expect, eq};
use crate::error::Result;
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "configuration";
const CONFIG: &str = "conformance-config-0123456789";
const VM_CONFIG: &str = "vm-conf-0123";
const REFUSED: &str = "refused";

pub fn checks() -> Vec<Check> {
    const VM: &str = "spec v0.2.1 proxy_on_vm_start: vm_configuration_size, the configuration in buffer VM_CONFIGURATION (wasmesh's proxy configures none, so it is empty there)";
    const PLUGIN: &str = "spec v0.2.1 proxy_on_configure: plugin_configuration_size, the configuration in buffer PLUGIN_CONFIGURATION";
    vec![
        Check::new("configuration.vm_start_size", Expect::Fact("vm_config.size", "the VM configuration's size (host-abi: 12; proxy: 0)"), VM).proves(&["proxy_on_vm_start"]),
        Check::new("configuration.vm_config", Expect::Fact("vm_config.read", "`OK vm-conf-0123` (host-abi), `OK (empty)` (proxy)"), VM)
            .proves(&["proxy_on_vm_start", "proxy_get_buffer_bytes", "proxy_buffer_type_t"]),
        Check::new("configuration.vm_config_status", Expect::Fact("vm_config.status", "`OK 12` (host-abi), `OK 0` (proxy)"), VM)
            .proves(&["proxy_get_buffer_status", "proxy_buffer_type_t"]),
        eq("configuration.configure_size", "29", PLUGIN).proves(&["proxy_on_configure"]),
        eq("configuration.plugin_config", "OK conformance-config-0123456789", PLUGIN)
            .proves(&["proxy_on_configure", "proxy_get_buffer_bytes", "proxy_buffer_type_t"]),
        eq("configuration.plugin_config_slice", "OK form", "spec v0.2.1 proxy_get_buffer_bytes: up to max_size bytes from start")
            .proves(&["proxy_get_buffer_bytes"]),
        eq("configuration.plugin_config_status", "OK 29", "spec v0.2.1 proxy_get_buffer_status: the buffer's size")
            .proves(&["proxy_get_buffer_status"]),
        eq("configuration.reject_plugin_config", REFUSED, "spec v0.2.1 proxy_on_configure: false means the plugin configuration is not usable (Envoy refuses the configuration)")
            .proves(&["proxy_on_configure"]),
        eq("configuration.reject_vm", REFUSED, "spec v0.2.1 proxy_on_vm_start: false means the VM is not usable (Envoy refuses the configuration)")
            .proves(&["proxy_on_vm_start"]),
    ]
}

fn refusal(error: &str, callback: &str) -> String {
    if error.contains(&format!("{callback} returned false")) {
        REFUSED.to_string()
    } else {
        format!("failed otherwise: {error}")
    }
}

pub fn host() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let mut run = Run::default();
    run.fact("vm_config.size", VM_CONFIG.len().to_string());
    run.fact("vm_config.read", format!("OK {VM_CONFIG}"));
    run.fact("vm_config.status", format!("OK {}", VM_CONFIG.len()));
    let loaded = host_env::load_with(wasm, "configuration", |b| {
        b.vm_config(VM_CONFIG).plugin_config(CONFIG)
    })?;
    run.harness(&loaded.harness);
    let refused = host_env::load(wasm, "configuration", "reject-this");
    run.obs.add(
        "configuration.reject_plugin_config",
        match refused {
            Ok(_) => "loaded".to_string(),
            Err(e) => refusal(&e.to_string(), "proxy_on_configure"),
        },
    );
    let name = format!("{}-reject-vm", capture::unique("configuration"));
    let refused = wasmesh_sdk_test::Harness::builder(wasm)
        .name(&name)
        .plugin_config(CONFIG)
        .load();
    run.obs.add(
        "configuration.reject_vm",
        match refused {
            Ok(_) => "loaded".to_string(),
            Err(e) => refusal(&e.to_string(), "proxy_on_vm_start"),
        },
    );
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("configuration").await?;
    let name = capture::unique("configuration");
    let mut run = Run::default();
    run.fact("vm_config.size", "0");
    run.fact("vm_config.read", "OK (empty)");
    run.fact("vm_config.status", "OK 0");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, CONFIG, ""),
        "",
        "",
        "",
    );
    Proxy::with(&yaml, async |_: &Proxy| Ok(())).await?;
    run.lines(&name);
    let rejecting = capture::unique("configuration");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&rejecting, wasm, "reject-this", ""),
        "",
        "",
        "",
    );
    let error = Proxy::refused(&yaml).await?;
    run.obs.add(
        "configuration.reject_plugin_config",
        refusal(&error, "proxy_on_configure"),
    );
    let rejecting = format!("{}-reject-vm", capture::unique("configuration"));
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&rejecting, wasm, CONFIG, ""),
        "",
        "",
        "",
    );
    let error = Proxy::refused(&yaml).await?;
    run.obs.add(
        "configuration.reject_vm",
        refusal(&error, "proxy_on_vm_start"),
    );
    Ok(run)
}
