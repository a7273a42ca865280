//! Properties the filter reads with `proxy_get_property`: a map from dotted path to bytes, set
//! by the test for the whole harness or for one stream (which wins), and encoded the way
//! Envoy encodes attributes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmesh_host::StreamEnv;

/// A property value, encoded as Envoy encodes attributes: text and bytes raw, integers as 8
/// bytes little-endian, booleans as one byte.
pub trait PropertyValue {
    /// The bytes the filter will read.
    fn encode(self) -> Vec<u8>;
}

impl PropertyValue for &str {
    fn encode(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl PropertyValue for String {
    fn encode(self) -> Vec<u8> {
        self.into_bytes()
    }
}

impl PropertyValue for &[u8] {
    fn encode(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl<const N: usize> PropertyValue for &[u8; N] {
    fn encode(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl PropertyValue for Vec<u8> {
    fn encode(self) -> Vec<u8> {
        self
    }
}

impl PropertyValue for bool {
    fn encode(self) -> Vec<u8> {
        vec![u8::from(self)]
    }
}

impl PropertyValue for i64 {
    fn encode(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
}

impl PropertyValue for i32 {
    fn encode(self) -> Vec<u8> {
        i64::from(self).encode()
    }
}

impl PropertyValue for u16 {
    fn encode(self) -> Vec<u8> {
        i64::from(self).encode()
    }
}

impl PropertyValue for u32 {
    fn encode(self) -> Vec<u8> {
        i64::from(self).encode()
    }
}

pub(crate) type PropertyMap = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

pub(crate) fn lock(map: &PropertyMap) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// One stream's view: its own properties over the harness's.
pub(crate) struct TestEnv {
    pub(crate) shared: PropertyMap,
    pub(crate) own: PropertyMap,
}

impl StreamEnv for TestEnv {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key = path.join(".");
        let own = lock(&self.own).get(&key).cloned();
        own.or_else(|| lock(&self.shared).get(&key).cloned())
    }
}
