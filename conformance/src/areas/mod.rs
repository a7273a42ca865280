//! The ABI areas: for each, its checks and how to run its probe in each environment.

pub mod abi_v0_1_0;
pub mod bad_args;
pub mod bodies;
pub mod configuration;
pub mod foreign;
pub mod grpc;
pub mod headers;
pub mod http_callout;
pub mod lifecycle;
pub mod local_response;
pub mod logging;
pub mod metrics;
pub mod properties;
pub mod shared_data;
pub mod shared_queue;
pub mod tcp;
pub mod tick;
pub mod trailers;

use crate::check::Check;
use crate::error::{Error, Result};
use crate::observe::Run;

/// One ABI area.
pub struct Area {
    /// Its name: the probe's directory under `probes/` (or `integration` for the WAT probes).
    pub name: &'static str,
    pub title: &'static str,
    pub checks: fn() -> Vec<Check>,
}

/// Every area, in the matrix's order.
pub const AREAS: &[Area] = &[
    Area {
        name: "integration",
        title: "Integration and memory (WAT probes)",
        checks: lifecycle::integration::checks,
    },
    Area {
        name: "lifecycle",
        title: "Lifecycle and contexts",
        checks: lifecycle::checks,
    },
    Area {
        name: "logging",
        title: "Logging, time and WASI",
        checks: logging::checks,
    },
    Area {
        name: "configuration",
        title: "Configuration",
        checks: configuration::checks,
    },
    Area {
        name: "headers",
        title: "Header maps",
        checks: headers::checks,
    },
    Area {
        name: "bodies",
        title: "Bodies",
        checks: bodies::checks,
    },
    Area {
        name: "trailers",
        title: "Trailers",
        checks: trailers::checks,
    },
    Area {
        name: "local-response",
        title: "Local responses and closing streams",
        checks: local_response::checks,
    },
    Area {
        name: "properties",
        title: "Properties",
        checks: properties::checks,
    },
    Area {
        name: "http-callout",
        title: "HTTP callouts",
        checks: http_callout::checks,
    },
    Area {
        name: "grpc",
        title: "gRPC calls and streams",
        checks: grpc::checks,
    },
    Area {
        name: "tick",
        title: "Timers",
        checks: tick::checks,
    },
    Area {
        name: "shared-data",
        title: "Shared data",
        checks: shared_data::checks,
    },
    Area {
        name: "shared-queue",
        title: "Shared queues",
        checks: shared_queue::checks,
    },
    Area {
        name: "metrics",
        title: "Metrics",
        checks: metrics::checks,
    },
    Area {
        name: "foreign",
        title: "Foreign functions",
        checks: foreign::checks,
    },
    Area {
        name: "tcp",
        title: "TCP (network filter) callbacks",
        checks: tcp::checks,
    },
    Area {
        name: "abi-v0-1-0",
        title: "ABI v0.1.0",
        checks: abi_v0_1_0::checks,
    },
    Area {
        name: "bad-args",
        title: "Bad arguments",
        checks: bad_args::checks,
    },
];

/// Runs area `name` on host-abi alone (synchronously: the harness needs no runtime).
pub fn run_host(name: &str) -> Result<Run> {
    match name {
        "integration" => lifecycle::integration::host(),
        "lifecycle" => lifecycle::host(),
        "logging" => logging::host(),
        "configuration" => configuration::host(),
        "headers" => headers::host(),
        "bodies" => bodies::host(),
        "trailers" => trailers::host(),
        "local-response" => local_response::host(),
        "properties" => properties::host(),
        "http-callout" => http_callout::host(),
        "grpc" => grpc::host(),
        "tick" => tick::host(),
        "shared-data" => shared_data::host(),
        "shared-queue" => shared_queue::host(),
        "metrics" => metrics::host(),
        "foreign" => foreign::host(),
        "tcp" => tcp::host(),
        "abi-v0-1-0" => abi_v0_1_0::host(),
        "bad-args" => bad_args::host(),
        other => Err(Error(format!("no area {other}"))),
    }
}

/// Runs area `name` through the proxy.
pub async fn run_proxy(name: &str) -> Result<Run> {
    match name {
        "integration" => lifecycle::integration::proxy().await,
        "lifecycle" => lifecycle::proxy().await,
        "logging" => logging::proxy().await,
        "configuration" => configuration::proxy().await,
        "headers" => headers::proxy().await,
        "bodies" => bodies::proxy().await,
        "trailers" => trailers::proxy().await,
        "local-response" => local_response::proxy().await,
        "properties" => properties::proxy().await,
        "http-callout" => http_callout::proxy().await,
        "grpc" => grpc::proxy().await,
        "tick" => tick::proxy().await,
        "shared-data" => shared_data::proxy().await,
        "shared-queue" => shared_queue::proxy().await,
        "metrics" => metrics::proxy().await,
        "foreign" => foreign::proxy().await,
        "tcp" => tcp::proxy().await,
        "abi-v0-1-0" => abi_v0_1_0::proxy().await,
        "bad-args" => bad_args::proxy().await,
        other => Err(Error(format!("no area {other}"))),
    }
}
