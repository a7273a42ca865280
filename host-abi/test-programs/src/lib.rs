//! Paths of the Wasm filters built for the tests (see `build.rs`): every stock filter under
//! `filters/`, and the probe filters. Built for `wasm32-wasip1` in release mode while this crate
//! compiles, so `cargo test` needs no manual step.

/// `probe/`: a filter written against the published `proxy-wasm` crate whose behaviour is
/// chosen by request headers, so one module exercises many host functions.
pub const PROBE_WASM: &str = env!("WASMESH_PROBE_FILTER_WASM");

/// `sdk-probe/`: a filter written with `wasmesh-sdk`, exercising its helpers in a VM.
pub const SDK_PROBE_WASM: &str = env!("WASMESH_SDK_PROBE_WASM");

/// `grpc-probe/`: a filter written against the published `proxy-wasm` crate that authorizes
/// requests with unary gRPC calls and echoes through gRPC streams, chosen by request headers.
pub const GRPC_PROBE_WASM: &str = env!("WASMESH_GRPC_PROBE_WASM");

/// `tcp-probe/`: a network (TCP) filter written against the published `proxy-wasm` crate;
/// its plugin configuration's words choose what it does to the bytes.
pub const TCP_PROBE_WASM: &str = env!("WASMESH_TCP_PROBE_WASM");

/// `hostile/`: a deliberately hostile filter (raw exports, no SDK) for the reliability tests:
/// traps in any callback, loops, exhausts memory or stack, floods the host, passes bad pointers.
pub const HOSTILE_WASM: &str = env!("WASMESH_HOSTILE_FILTER_WASM");

/// `filters/headers`: the stock header-editing filter.
pub const HEADERS_WASM: &str = env!("WASMESH_FILTER_HEADERS_WASM");

include!(concat!(env!("OUT_DIR"), "/filters.rs"));

/// The `.wasm` of the stock filter in `filters/<name>`.
///
/// # Panics
///
/// If there is no such filter (the message lists the ones there are).
pub fn filter(name: &str) -> &'static str {
    match try_filter(name) {
        Some(path) => path,
        None => panic!(
            "no stock filter \"{name}\" under filters/; there are: {}",
            FILTERS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The `.wasm` of the stock filter in `filters/<name>`, if there is one.
pub fn try_filter(name: &str) -> Option<&'static str> {
    FILTERS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_filter_is_built() {
        assert!(super::FILTERS.iter().any(|(n, _)| *n == "headers"));
        for (name, path) in super::FILTERS {
            assert!(std::path::Path::new(path).is_file(), "{name}: {path}");
        }
        assert_eq!(super::filter("headers"), super::HEADERS_WASM);
        assert!(std::path::Path::new(super::PROBE_WASM).is_file());
        assert!(std::path::Path::new(super::GRPC_PROBE_WASM).is_file());
        assert!(std::path::Path::new(super::TCP_PROBE_WASM).is_file());
        assert_eq!(super::try_filter("nope"), None);
    }
}
