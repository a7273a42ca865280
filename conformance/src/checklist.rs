//! The ABI checklist the matrix covers line by line: every host function, callback and type of
//! proxy-wasm ABI v0.2.1 (the team's `abi/CHECKLIST.md`, from the spec's
//! `abi-versions/v0.2.1/README.md`), and the v0.1.0/v0.2.0 variants. Checks name the items they
//! prove; an item no check proves must say why here.

use crate::check::Scope;

/// What kind of ABI element an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plugin → host (an import the host provides).
    Function,
    /// Host → plugin (an export the host calls when present).
    Callback,
    /// An enumeration whose values the host must use as the spec numbers them.
    Type,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Function => "host function",
            Kind::Callback => "callback",
            Kind::Type => "type",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    /// The checklist's area (its first column).
    pub area: &'static str,
    pub kind: Kind,
    pub name: &'static str,
    /// Where the host does not support the item at all, and why (no check can prove it).
    pub not_supported: Option<(Scope, &'static str)>,
}

const fn f(area: &'static str, name: &'static str) -> Item {
    Item {
        area,
        kind: Kind::Function,
        name,
        not_supported: None,
    }
}

const fn c(area: &'static str, name: &'static str) -> Item {
    Item {
        area,
        kind: Kind::Callback,
        name,
        not_supported: None,
    }
}

const fn t(name: &'static str) -> Item {
    Item {
        area: "Types",
        kind: Kind::Type,
        name,
        not_supported: None,
    }
}

/// The v0.2.1 checklist, in its order.
pub const V0_2_1: &[Item] = &[
    c("Integration", "proxy_abi_version_0_2_1"),
    c("Integration", "_initialize"),
    c("Integration", "main"),
    c("Integration", "_start"),
    c("Memory management", "proxy_on_memory_allocate"),
    c("Memory management", "malloc"),
    c("Context lifecycle", "proxy_on_context_create"),
    c("Context lifecycle", "proxy_on_done"),
    c("Context lifecycle", "proxy_on_log"),
    c("Context lifecycle", "proxy_on_delete"),
    f("Context lifecycle", "proxy_done"),
    f("Context lifecycle", "proxy_set_effective_context"),
    c("Configuration", "proxy_on_vm_start"),
    c("Configuration", "proxy_on_configure"),
    f("Logging", "proxy_log"),
    f("Logging", "wasi_snapshot_preview1.fd_write"),
    f("Logging", "proxy_get_log_level"),
    f("Clocks", "proxy_get_current_time_nanoseconds"),
    f("Clocks", "wasi_snapshot_preview1.clock_time_get"),
    f("Timers", "proxy_set_tick_period_milliseconds"),
    c("Timers", "proxy_on_tick"),
    f("Randomness", "wasi_snapshot_preview1.random_get"),
    f(
        "Environment variables",
        "wasi_snapshot_preview1.environ_sizes_get",
    ),
    f(
        "Environment variables",
        "wasi_snapshot_preview1.environ_get",
    ),
    f("Buffers", "proxy_set_buffer_bytes"),
    f("Buffers", "proxy_get_buffer_bytes"),
    f("Buffers", "proxy_get_buffer_status"),
    f("HTTP fields", "proxy_get_header_map_size"),
    f("HTTP fields", "proxy_get_header_map_pairs"),
    f("HTTP fields", "proxy_set_header_map_pairs"),
    f("HTTP fields", "proxy_get_header_map_value"),
    f("HTTP fields", "proxy_add_header_map_value"),
    f("HTTP fields", "proxy_replace_header_map_value"),
    f("HTTP fields", "proxy_remove_header_map_value"),
    f(
        "Common HTTP and TCP stream operations",
        "proxy_continue_stream",
    ),
    f(
        "Common HTTP and TCP stream operations",
        "proxy_close_stream",
    ),
    f("Common HTTP and TCP stream operations", "proxy_get_status"),
    c("TCP streams", "proxy_on_new_connection"),
    c("TCP streams", "proxy_on_downstream_data"),
    c("TCP streams", "proxy_on_downstream_connection_close"),
    c("TCP streams", "proxy_on_upstream_data"),
    c("TCP streams", "proxy_on_upstream_connection_close"),
    c("HTTP streams", "proxy_on_request_headers"),
    c("HTTP streams", "proxy_on_request_body"),
    c("HTTP streams", "proxy_on_request_trailers"),
    c("HTTP streams", "proxy_on_response_headers"),
    c("HTTP streams", "proxy_on_response_body"),
    c("HTTP streams", "proxy_on_response_trailers"),
    f("HTTP streams", "proxy_send_local_response"),
    f("HTTP calls", "proxy_http_call"),
    c("HTTP calls", "proxy_on_http_call_response"),
    f("gRPC calls", "proxy_grpc_call"),
    f("gRPC calls", "proxy_grpc_stream"),
    f("gRPC calls", "proxy_grpc_send"),
    f("gRPC calls", "proxy_grpc_cancel"),
    f("gRPC calls", "proxy_grpc_close"),
    c("gRPC calls", "proxy_on_grpc_receive_initial_metadata"),
    c("gRPC calls", "proxy_on_grpc_receive"),
    c("gRPC calls", "proxy_on_grpc_receive_trailing_metadata"),
    c("gRPC calls", "proxy_on_grpc_close"),
    f("Shared Key-Value Store", "proxy_set_shared_data"),
    f("Shared Key-Value Store", "proxy_get_shared_data"),
    f("Shared Queues", "proxy_register_shared_queue"),
    f("Shared Queues", "proxy_resolve_shared_queue"),
    f("Shared Queues", "proxy_enqueue_shared_queue"),
    f("Shared Queues", "proxy_dequeue_shared_queue"),
    c("Shared Queues", "proxy_on_queue_ready"),
    f("Metrics", "proxy_define_metric"),
    f("Metrics", "proxy_record_metric"),
    f("Metrics", "proxy_increment_metric"),
    f("Metrics", "proxy_get_metric"),
    f("Properties", "proxy_get_property"),
    f("Properties", "proxy_set_property"),
    f(
        "Foreign function interface (FFI)",
        "proxy_call_foreign_function",
    ),
    Item {
        area: "Foreign function interface (FFI)",
        kind: Kind::Callback,
        name: "proxy_on_foreign_function",
        not_supported: Some((
            Scope::Both,
            "nothing in wasmesh calls a filter back through a foreign function (none of its \
             foreign functions is asynchronous), so the callback is never made; Envoy's \
             built-in foreign functions do not call it either",
        )),
    },
    f(
        "Unimplemented WASI functions",
        "wasi_snapshot_preview1.args_sizes_get",
    ),
    f(
        "Unimplemented WASI functions",
        "wasi_snapshot_preview1.args_get",
    ),
    f(
        "Unimplemented WASI functions",
        "wasi_snapshot_preview1.proc_exit",
    ),
    t("proxy_log_level_t"),
    t("proxy_status_t"),
    t("proxy_action_t"),
    t("proxy_buffer_type_t"),
    t("proxy_map_type_t"),
    t("proxy_peer_type_t"),
    t("proxy_stream_type_t"),
    t("proxy_metric_type_t"),
    t("wasi_errno_t"),
    t("wasi_fd_id_t"),
    t("wasi_clock_id_t"),
];

/// The ABI v0.1.0 and v0.2.0 variants (spec `abi-versions/v0.1.0/README.md`, NOTES §1.8).
pub const VARIANTS: &[Item] = &[
    c("ABI v0.2.0", "proxy_abi_version_0_2_0"),
    c("ABI v0.1.0", "proxy_abi_version_0_1_0"),
    c(
        "ABI v0.1.0",
        "proxy_on_request_headers (v0.1.0: 2 arguments)",
    ),
    c(
        "ABI v0.1.0",
        "proxy_on_response_headers (v0.1.0: 2 arguments)",
    ),
    f("ABI v0.1.0", "proxy_get_configuration"),
    f("ABI v0.1.0", "proxy_continue_request"),
    f("ABI v0.1.0", "proxy_continue_response"),
    f("ABI v0.1.0", "proxy_clear_route_cache"),
];

/// Every item, checklist first.
pub fn all() -> impl Iterator<Item = &'static Item> {
    V0_2_1.iter().chain(VARIANTS)
}

pub fn find(name: &str) -> Option<&'static Item> {
    all().find(|i| i.name == name)
}
