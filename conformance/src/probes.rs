//! Paths of the probe modules `build.rs` built: one Rust crate per ABI area under `probes/`
//! (for `wasm32-wasip1`), and the WAT modules under `probes/integration/`.

use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/probes.rs"));

/// The `.wasm` of the Rust probe for `area` (its directory under `probes/`).
pub fn rust(area: &str) -> Result<&'static str> {
    RUST_PROBES
        .iter()
        .find(|(a, _, _)| *a == area)
        .map(|(_, p, _)| *p)
        .ok_or_else(|| Error(format!("no probe crate probes/{area}")))
}

/// The `.wasm` compiled from `probes/integration/<name>.wat`.
pub fn wat(name: &str) -> Result<&'static str> {
    WAT_PROBES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .ok_or_else(|| Error(format!("no WAT probe probes/integration/{name}.wat")))
}

/// The bytes of a probe module.
pub fn read(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::new(&format!("reading {path}"), e))
}
