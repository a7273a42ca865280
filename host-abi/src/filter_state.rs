//! Filter state: values filters set with `proxy_set_property` and read back with
//! `proxy_get_property`, by dotted path — Envoy's per-request `FilterState`. In Envoy every
//! filter on a stream sees what an earlier one set (`jwt-authn` publishes the verified claims,
//! `rbac` decides on them); an embedder gives its streams that shared state through
//! [`crate::StreamEnv::filter_state`]. Without one, each filter's values stay its own.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::limits::{MAX_FILTER_STATE_BYTES, MAX_FILTER_STATE_ENTRIES};

/// One request's (or connection's) filter state, shared by its filters.
#[derive(Debug, Default)]
pub struct FilterState {
    values: Mutex<HashMap<String, Vec<u8>>>,
}

impl FilterState {
    pub fn new() -> FilterState {
        FilterState::default()
    }

    /// The value at `path` (segments joined with `.`).
    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().get(path).cloned()
    }

    /// Every value, for an embedder reading what filters left (in no particular order).
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Sets `path`, within the host's bounds; past them, what went over.
    pub(crate) fn set(&self, path: String, value: Vec<u8>) -> Result<(), String> {
        set_bounded(&mut self.lock(), path, value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sets `path` in `values` unless that would take it past [`MAX_FILTER_STATE_ENTRIES`] values
/// or [`MAX_FILTER_STATE_BYTES`] bytes of paths and values.
pub(crate) fn set_bounded(
    values: &mut HashMap<String, Vec<u8>>,
    path: String,
    value: Vec<u8>,
) -> Result<(), String> {
    let entries = values.len() + usize::from(!values.contains_key(&path));
    let bytes = values
        .iter()
        .filter(|(k, _)| **k != path)
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        + path.len()
        + value.len();
    if entries > MAX_FILTER_STATE_ENTRIES || bytes > MAX_FILTER_STATE_BYTES {
        return Err(format!(
            "{entries} values of {bytes} bytes (at most {MAX_FILTER_STATE_ENTRIES}, \
             {MAX_FILTER_STATE_BYTES} bytes)"
        ));
    }
    values.insert(path, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bounded_but_replacing_one_is_not_growth() {
        let state = FilterState::new();
        for i in 0..MAX_FILTER_STATE_ENTRIES {
            state.set(format!("k{i}"), vec![1]).expect("within bounds");
        }
        assert!(state.set("one.more".into(), vec![1]).is_err());
        state.set("k0".into(), vec![2, 2]).expect("replacing");
        assert_eq!(state.get("k0"), Some(vec![2, 2]));
        assert!(
            state
                .set("k1".into(), vec![0; MAX_FILTER_STATE_BYTES])
                .is_err()
        );
    }
}
