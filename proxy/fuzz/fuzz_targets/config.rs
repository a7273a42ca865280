//! The configuration parser (`wasmesh_proxy::config::load_str`, and `load_chain_str` for
//! `PUT /chains/{name}` bodies), which reads files and admin-API bodies: any text is a
//! configuration or a list of located errors, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match wasmesh_proxy::config::load_str(text, "fuzz.yaml") {
        Ok(config) => {
            // A configuration that loads validates again unchanged.
            assert!(wasmesh_proxy::config::validate(&config).is_ok());
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
    let _ = wasmesh_proxy::config::load_chain_str(text, "fuzz", "chain.yaml");
});
