//! Configuration probe (raw ABI v0.2.1 exports, no SDK).
//!
//! `on_vm_start` observes its size argument and the `VM_CONFIGURATION` buffer, and refuses to
//! start (returns false) when the plugin's name ends in `reject-vm`; `on_configure` observes
//! its size argument and the `PLUGIN_CONFIGURATION` buffer (whole, a slice, its status) and
//! refuses a configuration containing `reject`.

use wasmesh_conformance_probe_support::{self as s, buffer};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(_ctx: u32, size: u32) -> u32 {
    s::observe("configuration.vm_start_size", size);
    s::observe_result(
        "configuration.vm_config",
        s::get_buffer(buffer::VM_CONFIGURATION, 0, size as usize),
    );
    let (status, len) = s::buffer_status(buffer::VM_CONFIGURATION);
    s::observe(
        "configuration.vm_config_status",
        format!("{} {len}", s::status_name(status)),
    );
    let name = match s::get_property(&["plugin_name"]) {
        (0, Some(v)) => String::from_utf8_lossy(&v).into_owned(),
        _ => String::new(),
    };
    u32::from(!name.ends_with("reject-vm"))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_ctx: u32, size: u32) -> u32 {
    s::observe("configuration.configure_size", size);
    let whole = s::get_buffer(buffer::PLUGIN_CONFIGURATION, 0, size as usize);
    let text = whole
        .1
        .as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    s::observe_result("configuration.plugin_config", whole);
    s::observe_result(
        "configuration.plugin_config_slice",
        s::get_buffer(buffer::PLUGIN_CONFIGURATION, 3, 4),
    );
    let (status, len) = s::buffer_status(buffer::PLUGIN_CONFIGURATION);
    s::observe(
        "configuration.plugin_config_status",
        format!("{} {len}", s::status_name(status)),
    );
    u32::from(!text.contains("reject"))
}
