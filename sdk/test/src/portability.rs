//! Whether a built filter would load on other proxy-wasm hosts: every function it imports must
//! be one the proxy-wasm ABI defines for the version the module declares, or a WASI function
//! Envoy links, with the spec's signature. wasmesh's host provides more than that (all of
//! WASI preview 1, an `env.proxy_clear_route_cache` for any version); a module that leans on
//! the extras loads on wasmesh and fails to link on Envoy.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let wasm = std::fs::read(wasmesh_sdk_test::build_wasm(env!("CARGO_MANIFEST_DIR"))?)?;
//! let unportable = wasmesh_sdk_test::portability::unportable_imports(&wasm)?;
//! assert!(unportable.is_empty(), "{unportable:?}");
//! # Ok(()) }
//! ```
//!
//! The lists are the spec's (`proxy-wasm/spec`, `abi-versions/v0.2.1` and `v0.1.0`) as Envoy's
//! host (`proxy-wasm-cpp-host`, `WasmBase::registerCallbacks`) links them: the host functions
//! every version has, those only one version has, and the WASI functions it provides.

use std::collections::BTreeMap;

use wasmparser::{Parser, Payload, TypeRef, ValType};

use crate::Error;

/// Host functions every ABI version has, with their signatures (`i` an `i32`, `I` an `i64`;
/// parameters, `>`, result).
const PROXY_FUNCTIONS: &[(&str, &str)] = &[
    ("proxy_log", "iii>i"),
    ("proxy_get_status", "iii>i"),
    ("proxy_set_property", "iiii>i"),
    ("proxy_get_property", "iiii>i"),
    ("proxy_send_local_response", "iiiiiiii>i"),
    ("proxy_get_shared_data", "iiiii>i"),
    ("proxy_set_shared_data", "iiiii>i"),
    ("proxy_register_shared_queue", "iii>i"),
    ("proxy_resolve_shared_queue", "iiiii>i"),
    ("proxy_dequeue_shared_queue", "iii>i"),
    ("proxy_enqueue_shared_queue", "iii>i"),
    ("proxy_get_header_map_value", "iiiii>i"),
    ("proxy_add_header_map_value", "iiiii>i"),
    ("proxy_replace_header_map_value", "iiiii>i"),
    ("proxy_remove_header_map_value", "iii>i"),
    ("proxy_get_header_map_pairs", "iii>i"),
    ("proxy_set_header_map_pairs", "iii>i"),
    ("proxy_get_header_map_size", "ii>i"),
    ("proxy_get_buffer_status", "iii>i"),
    ("proxy_get_buffer_bytes", "iiiii>i"),
    ("proxy_set_buffer_bytes", "iiiii>i"),
    ("proxy_http_call", "iiiiiiiiii>i"),
    ("proxy_grpc_call", "iiiiiiiiiiii>i"),
    ("proxy_grpc_stream", "iiiiiiiii>i"),
    ("proxy_grpc_close", "i>i"),
    ("proxy_grpc_cancel", "i>i"),
    ("proxy_grpc_send", "iiii>i"),
    ("proxy_set_tick_period_milliseconds", "i>i"),
    ("proxy_get_current_time_nanoseconds", "i>i"),
    ("proxy_define_metric", "iiii>i"),
    ("proxy_increment_metric", "iI>i"),
    ("proxy_record_metric", "iI>i"),
    ("proxy_get_metric", "ii>i"),
    ("proxy_set_effective_context", "i>i"),
    ("proxy_done", ">i"),
    ("proxy_call_foreign_function", "iiiiii>i"),
];

/// Host functions only ABI 0.1.0 has.
const PROXY_FUNCTIONS_0_1_0: &[(&str, &str)] = &[
    ("proxy_get_configuration", "ii>i"),
    ("proxy_continue_request", ">i"),
    ("proxy_continue_response", ">i"),
    ("proxy_clear_route_cache", ">i"),
];

/// Host functions only ABI 0.2.0 has.
const PROXY_FUNCTIONS_0_2_0: &[(&str, &str)] = &[
    ("proxy_continue_stream", "i>i"),
    ("proxy_close_stream", "i>i"),
];

/// Host functions only ABI 0.2.1 has.
const PROXY_FUNCTIONS_0_2_1: &[(&str, &str)] = &[
    ("proxy_continue_stream", "i>i"),
    ("proxy_close_stream", "i>i"),
    ("proxy_get_log_level", "i>i"),
];

/// The WASI preview 1 functions Envoy links (the spec requires the first eight).
const WASI_FUNCTIONS: &[(&str, &str)] = &[
    ("fd_write", "iiii>i"),
    ("clock_time_get", "iIi>i"),
    ("random_get", "ii>i"),
    ("environ_sizes_get", "ii>i"),
    ("environ_get", "ii>i"),
    ("args_sizes_get", "ii>i"),
    ("args_get", "ii>i"),
    ("proc_exit", "i>"),
    ("fd_read", "iiii>i"),
    ("fd_seek", "iIii>i"),
    ("fd_close", "i>i"),
    ("fd_fdstat_get", "ii>i"),
    ("fd_prestat_get", "ii>i"),
    ("fd_prestat_dir_name", "iii>i"),
    ("path_open", "iiiiiIIii>i"),
];

/// The proxy-wasm ABI versions, by their marker export.
const ABI_MARKERS: [(&str, &[(&str, &str)]); 3] = [
    ("proxy_abi_version_0_2_1", PROXY_FUNCTIONS_0_2_1),
    ("proxy_abi_version_0_2_0", PROXY_FUNCTIONS_0_2_0),
    ("proxy_abi_version_0_1_0", PROXY_FUNCTIONS_0_1_0),
];

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let letter = |t: &ValType| match t {
        ValType::I32 => 'i',
        ValType::I64 => 'I',
        ValType::F32 => 'f',
        ValType::F64 => 'F',
        _ => '?',
    };
    let mut out: String = params.iter().map(letter).collect();
    out.push('>');
    out.extend(results.iter().map(letter));
    out
}

fn what(ty: TypeRef) -> &'static str {
    match ty {
        TypeRef::Func(_) | TypeRef::FuncExact(_) => "a function",
        TypeRef::Table(_) => "a table",
        TypeRef::Memory(_) => "a memory",
        TypeRef::Global(_) => "a global",
        TypeRef::Tag(_) => "a tag",
    }
}

fn not_a_filter(e: impl std::fmt::Display) -> Error {
    Error::NotAFilter(e.to_string())
}

/// What the module imports that a host running only the proxy-wasm ABI (the version it
/// declares) and the WASI functions Envoy links would not provide, one line each:
/// `env.proxy_clear_route_cache: not in proxy-wasm ABI 0.2.1`,
/// `wasi_snapshot_preview1.fd_write: signature iii>i, expected iiii>i`. Empty when the module
/// is portable. [`Error::NotAFilter`] if it is not a Wasm module or declares no ABI version.
pub fn unportable_imports(wasm: &[u8]) -> Result<Vec<String>, Error> {
    let mut types = Vec::new();
    let mut imports = Vec::new();
    let mut version = None;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(not_a_filter)? {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    let ty = ty.map_err(not_a_filter)?;
                    types.push(signature(ty.params(), ty.results()));
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(not_a_filter)?;
                    imports.push((
                        import.module.to_string(),
                        import.name.to_string(),
                        import.ty,
                    ));
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let name = export.map_err(not_a_filter)?.name;
                    if let Some(marker) = ABI_MARKERS.iter().find(|(m, _)| *m == name) {
                        version.get_or_insert(*marker);
                    }
                }
            }
            _ => {}
        }
    }
    let (marker, specific) = version.ok_or_else(|| {
        not_a_filter("it exports no proxy-wasm ABI version marker (proxy_abi_version_0_2_1, …)")
    })?;
    let label = marker
        .trim_start_matches("proxy_abi_version_")
        .replace('_', ".");
    let env: BTreeMap<&str, &str> = PROXY_FUNCTIONS.iter().chain(specific).copied().collect();
    let wasi: BTreeMap<&str, &str> = WASI_FUNCTIONS.iter().copied().collect();
    let mut unportable = Vec::new();
    for (module, name, ty) in imports {
        let known = match module.as_str() {
            "env" => env.get(name.as_str()),
            "wasi_snapshot_preview1" => wasi.get(name.as_str()),
            _ => None,
        };
        let problem = match (known, ty) {
            (None, _) if module == "env" => format!("not in proxy-wasm ABI {label}"),
            (None, _) if module == "wasi_snapshot_preview1" => {
                "a WASI function Envoy does not link".to_string()
            }
            (None, _) => "a module no proxy-wasm host provides".to_string(),
            (Some(expected), TypeRef::Func(index) | TypeRef::FuncExact(index)) => {
                match types.get(index as usize) {
                    Some(found) if found == expected => continue,
                    Some(found) => format!("signature {found}, expected {expected}"),
                    None => format!("type #{index} is not a function type"),
                }
            }
            (Some(_), other) => format!("imported as {}, not a function", what(other)),
        };
        unportable.push(format!("{module}.{name}: {problem}"));
    }
    Ok(unportable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_adds_to_the_common_functions_without_repeating_them() {
        for (_, specific) in ABI_MARKERS {
            for (name, _) in specific {
                assert!(
                    PROXY_FUNCTIONS.iter().all(|(n, _)| n != name),
                    "{name} is listed twice"
                );
            }
        }
        assert_eq!(PROXY_FUNCTIONS.len() + PROXY_FUNCTIONS_0_2_1.len(), 39);
    }
}
