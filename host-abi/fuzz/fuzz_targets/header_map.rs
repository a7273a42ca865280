//! The ABI's header-map (de)serialization (`wasmesh_host::headers`), which reads bytes a
//! filter wrote: any input decodes to a map or an error, never a panic or a huge allocation,
//! and what decodes re-encodes to the same map.
//!
//! The first byte picks the mode: even, the rest is a serialized map as a filter may pass it;
//! odd, the rest describes a map (by `arbitrary`) that the host serializes and reads back.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wasmesh_host::headers::{deserialize, serialize};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(map) = deserialize(rest) {
            // Each pair takes at least ten bytes, so nothing decodes to more pairs than that.
            assert!(map.len() <= rest.len() / 10 + 1);
            let again = deserialize(&serialize(&map)).expect("a re-encoded map decodes");
            assert_eq!(again, map);
        }
    } else {
        let Ok(map) = Vec::<(String, Vec<u8>)>::arbitrary_take_rest(Unstructured::new(rest)) else {
            return;
        };
        let decoded = deserialize(&serialize(&map)).expect("the host's own encoding decodes");
        let lowered: Vec<(String, Vec<u8>)> = map
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        assert_eq!(decoded, lowered);
    }
});
