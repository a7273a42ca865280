//! Label values for one exchange, and the bound on how many distinct values each label may
//! take.
//!
//! The bound holds for the plugin as a whole, not per VM replica: the values admitted so far
//! are a JSON list in the host's shared data (`wasmesh.metrics/<plugin>/<label>`), extended
//! with compare-and-swap, so every replica admits the same first N values. Each replica keeps
//! what it learnt (admitted values, and that a list is full) so the shared list is read only
//! for a value it has not seen.

use std::collections::{HashMap, HashSet};

use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::types::Status;

use crate::config::Label;

/// What a value over the bound reads as.
pub const OVERFLOW: &str = "other";

/// What the host said about one finished exchange, read in `on_log`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exchange {
    pub route: Option<String>,
    pub method: Option<String>,
    pub code: Option<i64>,
    pub cluster: Option<String>,
    pub duration_ns: Option<u64>,
    pub request_bytes: Option<u64>,
    pub response_bytes: Option<u64>,
}

/// Methods kept as they are; any other reads `other`, so clients cannot mint label values.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The raw value of `label` for `exchange`, before the bound applies.
pub fn value(label: Label, exchange: &Exchange) -> String {
    let named = |v: &Option<String>| match v.as_deref() {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "unknown".to_string(),
    };
    match label {
        Label::Route => named(&exchange.route),
        Label::Cluster => named(&exchange.cluster),
        Label::Method => match exchange.method.as_deref() {
            Some(m) if METHODS.contains(&m) => m.to_string(),
            _ => OVERFLOW.to_string(),
        },
        Label::Code => match exchange.code {
            Some(code) if (100..=999).contains(&code) => code.to_string(),
            _ => "0".to_string(),
        },
        Label::CodeClass => match exchange.code {
            Some(code) if (100..=999).contains(&code) => format!("{}xx", code / 100),
            _ => "none".to_string(),
        },
    }
}

/// What the shared list says about a value.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Already admitted.
    Known,
    /// Room left: add it.
    Add,
    /// The list is full and does not hold it.
    Full,
}

pub fn decide(admitted: &[String], value: &str, limit: usize) -> Decision {
    if admitted.iter().any(|v| v == value) {
        Decision::Known
    } else if admitted.len() >= limit {
        Decision::Full
    } else {
        Decision::Add
    }
}

/// Compare-and-swap attempts before a value is counted as `other` this once.
const CAS_ATTEMPTS: u32 = 16;

/// One replica's view of the admitted values.
#[derive(Debug, Default)]
pub struct Bounds {
    /// `wasmesh.metrics/<plugin>/`.
    key_prefix: String,
    admitted: HashMap<Label, HashSet<String>>,
    full: HashSet<Label>,
}

impl Bounds {
    pub fn new(plugin: &str) -> Bounds {
        Bounds {
            key_prefix: format!("wasmesh.metrics/{plugin}/"),
            ..Bounds::default()
        }
    }

    /// `value` if it is (or now becomes) one of the first `limit` values of `label`, else
    /// `other`; the second result says the value overflowed.
    pub fn admit(&mut self, label: Label, value: String, limit: u32) -> (String, bool) {
        if self
            .admitted
            .get(&label)
            .is_some_and(|s| s.contains(&value))
        {
            return (value, false);
        }
        if self.full.contains(&label) {
            return (OVERFLOW.to_string(), true);
        }
        let key = format!("{}{}", self.key_prefix, label.key());
        for _ in 0..CAS_ATTEMPTS {
            let (list, cas) = read_list(&key);
            match decide(&list, &value, limit as usize) {
                Decision::Known => break,
                Decision::Full => {
                    self.full.insert(label);
                    self.learn(label, list);
                    return (OVERFLOW.to_string(), true);
                }
                Decision::Add => {
                    let mut list = list;
                    list.push(value.clone());
                    let Ok(bytes) = serde_json::to_vec(&list) else {
                        break;
                    };
                    // No CAS value means the key does not exist yet; 0 asks the host to
                    // create it unconditionally, which may race with another replica, so
                    // the written list is read back below.
                    match hostcalls::set_shared_data(&key, Some(&bytes), cas.or(Some(0))) {
                        Ok(()) if cas.is_some() => break,
                        Ok(()) => continue,
                        Err(Status::CasMismatch) => continue,
                        Err(_) => return (OVERFLOW.to_string(), true),
                    }
                }
            }
        }
        let (list, _) = read_list(&key);
        let admitted = list.contains(&value);
        self.learn(label, list);
        if admitted {
            (value, false)
        } else {
            (OVERFLOW.to_string(), true)
        }
    }

    fn learn(&mut self, label: Label, list: Vec<String>) {
        self.admitted.entry(label).or_default().extend(list);
    }
}

/// The admitted list at `key` and its CAS value; an absent or unreadable list is empty.
fn read_list(key: &str) -> (Vec<String>, Option<u32>) {
    match hostcalls::get_shared_data(key) {
        Ok((Some(bytes), cas)) => (serde_json::from_slice(&bytes).unwrap_or_default(), cas),
        Ok((None, cas)) => (Vec::new(), cas),
        Err(_) => (Vec::new(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let e = Exchange {
            route: Some("users".into()),
            method: Some("PATCH".into()),
            code: Some(503),
            cluster: None,
            ..Exchange::default()
        };
        assert_eq!(value(Label::Route, &e), "users");
        assert_eq!(value(Label::Method, &e), "PATCH");
        assert_eq!(value(Label::Code, &e), "503");
        assert_eq!(value(Label::CodeClass, &e), "5xx");
        assert_eq!(value(Label::Cluster, &e), "unknown");
        let odd = Exchange {
            method: Some("BREW".into()),
            route: Some(String::new()),
            ..Exchange::default()
        };
        assert_eq!(value(Label::Method, &odd), "other");
        assert_eq!(value(Label::Route, &odd), "unknown");
        assert_eq!(value(Label::Code, &odd), "0");
        assert_eq!(value(Label::CodeClass, &odd), "none");
    }

    #[test]
    fn decisions() {
        let list = vec!["a".to_string(), "b".to_string()];
        assert_eq!(decide(&list, "a", 2), Decision::Known);
        assert_eq!(decide(&list, "c", 2), Decision::Full);
        assert_eq!(decide(&list, "c", 3), Decision::Add);
        assert_eq!(decide(&[], "c", 1), Decision::Add);
    }
}
