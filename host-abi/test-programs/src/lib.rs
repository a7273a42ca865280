//! Paths of the Wasm filters built for the tests (see `build.rs`).

/// `probe/`: a filter written against the published `proxy-wasm` crate whose behaviour is
/// chosen by request headers, so one module exercises many host functions.
pub const PROBE_WASM: &str = env!("WASMESH_PROBE_FILTER_WASM");

/// `filters/headers`: the stock header-editing filter.
pub const HEADERS_WASM: &str = env!("WASMESH_FILTER_HEADERS_WASM");
