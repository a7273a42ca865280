//! State shared by every replica of a `vm_id`: the key-value store with compare-and-swap, and
//! the shared queues. It lives in the host, outside any VM, so it survives replica rebuilds and
//! reloads of the plugins that use it (as in Envoy).
//!
//! Both are bounded per `vm_id` (keys and bytes, queues, items and bytes per queue; see
//! `limits`), so a runaway producer cannot exhaust the proxy's memory: past a bound a write of
//! shared data or a queue registration answers `INTERNAL_FAILURE` and stores nothing, and a
//! full queue drops its oldest items.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::abi::status;
use crate::limits::{
    MAX_QUEUE_BYTES, MAX_QUEUE_LEN, MAX_QUEUES, MAX_SHARED_BYTES, MAX_SHARED_KEYS,
};

/// (vm_id, key) → (value, cas).
type DataMap = HashMap<(String, String), (Vec<u8>, u32)>;

#[derive(Default)]
struct Data {
    values: DataMap,
    /// vm_id → (keys, bytes of keys and values) it holds.
    usage: HashMap<String, (usize, usize)>,
}

#[derive(Default)]
pub struct SharedState {
    data: Mutex<Data>,
    queues: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    by_name: HashMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
    /// vm_id → queues it registered.
    per_vm: HashMap<String, usize>,
    next_id: u32,
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    /// Bytes in `items`.
    bytes: usize,
    /// Who registered it: (plugin key, root context id), told by `proxy_on_queue_ready`.
    owner: QueueOwner,
}

/// Identifies the root context that registered a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOwner {
    pub plugin: usize,
    pub replica: usize,
}

/// Notes what a `vm_id` holds now (allocating its name only the first time).
fn record(usage: &mut HashMap<String, (usize, usize)>, vm_id: &str, now: (usize, usize)) {
    match usage.get_mut(vm_id) {
        Some(held) => *held = now,
        None => {
            usage.insert(vm_id.to_string(), now);
        }
    }
}

impl SharedState {
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.values
            .get(&(vm_id.to_string(), key.to_string()))
            .cloned()
    }

    /// Sets a value; a non-zero `cas` must match the current one (or be for an absent key).
    /// `INTERNAL_FAILURE` when the `vm_id` would hold more keys or bytes than it may.
    pub fn set(&self, vm_id: &str, key: &str, value: Vec<u8>, cas: u32) -> i32 {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let Data { values, usage } = &mut *data;
        let entry_key = (vm_id.to_string(), key.to_string());
        let (keys, bytes) = usage.get(vm_id).copied().unwrap_or((0, 0));
        match values.get_mut(&entry_key) {
            Some((stored, current)) => {
                if cas != 0 && cas != *current {
                    return status::CAS_MISMATCH;
                }
                let bytes = bytes - stored.len() + value.len();
                if bytes > MAX_SHARED_BYTES && value.len() > stored.len() {
                    return status::INTERNAL_FAILURE;
                }
                *stored = value;
                *current = current.wrapping_add(1).max(1);
                record(usage, vm_id, (keys, bytes));
            }
            None => {
                let bytes = bytes + key.len() + value.len();
                if keys + 1 > MAX_SHARED_KEYS || bytes > MAX_SHARED_BYTES {
                    return status::INTERNAL_FAILURE;
                }
                values.insert(entry_key, (value, 1));
                record(usage, vm_id, (keys + 1, bytes));
            }
        }
        status::OK
    }

    /// Registers (or takes over) a queue; `Err(INTERNAL_FAILURE)` when the `vm_id` has all the
    /// queues it may.
    pub fn register_queue(&self, vm_id: &str, name: &str, owner: QueueOwner) -> Result<u32, i32> {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let key = (vm_id.to_string(), name.to_string());
        if let Some(id) = q.by_name.get(&key).copied() {
            if let Some(queue) = q.queues.get_mut(&id) {
                queue.owner = owner;
            }
            return Ok(id);
        }
        let registered = q.per_vm.get(vm_id).copied().unwrap_or(0);
        if registered >= MAX_QUEUES {
            return Err(status::INTERNAL_FAILURE);
        }
        q.per_vm.insert(vm_id.to_string(), registered + 1);
        q.next_id += 1;
        let id = q.next_id;
        q.by_name.insert(key, id);
        q.queues.insert(
            id,
            Queue {
                items: VecDeque::new(),
                bytes: 0,
                owner,
            },
        );
        Ok(id)
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        let q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        q.by_name
            .get(&(vm_id.to_string(), name.to_string()))
            .copied()
    }

    /// Appends; returns the owner to notify and how many of the oldest items were dropped to
    /// make room, or the failing status.
    ///
    /// A full queue drops its oldest items rather than refusing the new one: Envoy's queues
    /// are unbounded, so filters written for it treat any answer but `OK` and `NOT_FOUND` as
    /// impossible (the Rust SDK panics on it), and for the telemetry queues are used for, the
    /// newest items are the ones worth keeping. Only an item larger than a whole queue may
    /// hold is refused, with `INTERNAL_FAILURE`.
    pub fn enqueue(&self, id: u32, value: Vec<u8>) -> Result<(QueueOwner, usize), i32> {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = q.queues.get_mut(&id).ok_or(status::NOT_FOUND)?;
        if value.len() > MAX_QUEUE_BYTES {
            metrics::counter!("wasmesh_filter_queue_dropped_total").increment(1);
            return Err(status::INTERNAL_FAILURE);
        }
        let mut dropped = 0;
        while queue.items.len() >= MAX_QUEUE_LEN || queue.bytes + value.len() > MAX_QUEUE_BYTES {
            let Some(oldest) = queue.items.pop_front() else {
                break;
            };
            queue.bytes -= oldest.len();
            dropped += 1;
        }
        if dropped > 0 {
            metrics::counter!("wasmesh_filter_queue_dropped_total").increment(dropped as u64);
        }
        queue.bytes += value.len();
        queue.items.push_back(value);
        Ok((queue.owner.clone(), dropped))
    }

    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, i32> {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = q.queues.get_mut(&id).ok_or(status::NOT_FOUND)?;
        let value = queue.items.pop_front().ok_or(status::EMPTY)?;
        queue.bytes -= value.len();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics() {
        let s = SharedState::default();
        assert_eq!(s.get("vm", "k"), None);
        assert_eq!(s.set("vm", "k", b"1".to_vec(), 0), status::OK);
        let (v, cas) = s.get("vm", "k").expect("set");
        assert_eq!(v, b"1");
        assert_eq!(
            s.set("vm", "k", b"2".to_vec(), cas + 5),
            status::CAS_MISMATCH
        );
        assert_eq!(s.set("vm", "k", b"2".to_vec(), cas), status::OK);
        assert_eq!(s.set("vm", "k", b"3".to_vec(), cas), status::CAS_MISMATCH);
        assert_eq!(s.get("other-vm", "k"), None, "vm_ids are isolated");
    }

    #[test]
    fn queues() {
        let s = SharedState::default();
        let owner = QueueOwner {
            plugin: 1,
            replica: 0,
        };
        let id = s
            .register_queue("vm", "q", owner.clone())
            .expect("registered");
        assert_eq!(s.register_queue("vm", "q", owner.clone()), Ok(id));
        assert_eq!(s.resolve_queue("vm", "q"), Some(id));
        assert_eq!(s.resolve_queue("vm", "nope"), None);
        assert_eq!(s.dequeue(id), Err(status::EMPTY));
        assert_eq!(s.enqueue(id, b"a".to_vec()), Ok((owner, 0)));
        assert_eq!(s.dequeue(id), Ok(b"a".to_vec()));
        assert_eq!(s.dequeue(id + 1), Err(status::NOT_FOUND));
    }

    #[test]
    fn shared_data_is_bounded_per_vm_id() {
        let s = SharedState::default();
        let big = vec![0u8; MAX_SHARED_BYTES / 4];
        for i in 0..3 {
            assert_eq!(s.set("vm", &format!("k{i}"), big.clone(), 0), status::OK);
        }
        assert_eq!(
            s.set("vm", "k3", big.clone(), 0),
            status::INTERNAL_FAILURE,
            "a fourth quarter plus the keys is over the bound"
        );
        assert_eq!(s.get("vm", "k3"), None, "nothing stored when refused");
        assert_eq!(
            s.set("other", "k3", big.clone(), 0),
            status::OK,
            "per vm_id"
        );
        // Shrinking a value frees room; the same key may always shrink.
        assert_eq!(s.set("vm", "k0", Vec::new(), 0), status::OK);
        assert_eq!(s.set("vm", "k3", big, 0), status::OK);
        for i in 0..MAX_SHARED_KEYS - 4 {
            assert_eq!(s.set("keys", &i.to_string(), Vec::new(), 0), status::OK);
        }
        let at = MAX_SHARED_KEYS - 4;
        for i in at..at + 4 {
            assert_eq!(s.set("keys", &i.to_string(), Vec::new(), 0), status::OK);
        }
        assert_eq!(
            s.set("keys", "one-more", Vec::new(), 0),
            status::INTERNAL_FAILURE
        );
        assert_eq!(s.set("keys", "0", b"update".to_vec(), 0), status::OK);
    }

    #[test]
    fn queues_are_bounded_in_count_items_and_bytes() {
        let s = SharedState::default();
        let owner = QueueOwner {
            plugin: 1,
            replica: 0,
        };
        for i in 0..MAX_QUEUES {
            assert!(
                s.register_queue("vm", &i.to_string(), owner.clone())
                    .is_ok()
            );
        }
        assert_eq!(
            s.register_queue("vm", "one-more", owner.clone()),
            Err(status::INTERNAL_FAILURE)
        );
        assert!(
            s.register_queue("vm", "0", owner.clone()).is_ok(),
            "re-registering is fine"
        );
        let id = s
            .register_queue("other", "q", owner.clone())
            .expect("other vm");
        for i in 0..MAX_QUEUE_LEN {
            assert_eq!(
                s.enqueue(id, i.to_string().into_bytes()).map(|e| e.1),
                Ok(0)
            );
        }
        assert_eq!(
            s.enqueue(id, b"newest".to_vec()).map(|e| e.1),
            Ok(1),
            "a full queue drops its oldest item"
        );
        assert_eq!(s.dequeue(id), Ok(b"1".to_vec()), "item 0 was dropped");

        let id = s
            .register_queue("other", "bytes", owner)
            .expect("registered");
        let big = vec![0u8; MAX_QUEUE_BYTES / 2];
        assert!(s.enqueue(id, big.clone()).is_ok());
        assert!(s.enqueue(id, big.clone()).is_ok());
        assert_eq!(s.enqueue(id, vec![1]).map(|e| e.1), Ok(1), "over the bytes");
        assert_eq!(s.dequeue(id).map(|v| v.len()), Ok(big.len()));
        assert_eq!(s.dequeue(id), Ok(vec![1]));
        assert_eq!(
            s.enqueue(id, vec![0; MAX_QUEUE_BYTES + 1]),
            Err(status::INTERNAL_FAILURE),
            "an item no queue may hold is refused"
        );
        assert_eq!(
            s.dequeue(id),
            Err(status::EMPTY),
            "and nothing dropped for it"
        );
    }
}
