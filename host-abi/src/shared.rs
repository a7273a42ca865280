//! State shared by every replica of a `vm_id`: the key-value store with compare-and-swap, and
//! the shared queues. It lives in the host, outside any VM, so it survives replica rebuilds and
//! reloads of the plugins that use it (as in Envoy).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::abi::status;

/// Bound on one queue so a runaway producer cannot exhaust memory.
const MAX_QUEUE_LEN: usize = 10_000;

/// (vm_id, key) → (value, cas).
type DataMap = HashMap<(String, String), (Vec<u8>, u32)>;

#[derive(Default)]
pub struct SharedState {
    data: Mutex<DataMap>,
    queues: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    by_name: HashMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
    next_id: u32,
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    /// Who registered it: (plugin key, root context id), told by `proxy_on_queue_ready`.
    owner: QueueOwner,
}

/// Identifies the root context that registered a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOwner {
    pub plugin: usize,
    pub replica: usize,
}

impl SharedState {
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.get(&(vm_id.to_string(), key.to_string())).cloned()
    }

    /// Sets a value; a non-zero `cas` must match the current one (or be for an absent key).
    pub fn set(&self, vm_id: &str, key: &str, value: Vec<u8>, cas: u32) -> i32 {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let entry_key = (vm_id.to_string(), key.to_string());
        match data.get_mut(&entry_key) {
            Some((stored, current)) => {
                if cas != 0 && cas != *current {
                    return status::CAS_MISMATCH;
                }
                *stored = value;
                *current = current.wrapping_add(1).max(1);
            }
            None => {
                data.insert(entry_key, (value, 1));
            }
        }
        status::OK
    }

    pub fn register_queue(&self, vm_id: &str, name: &str, owner: QueueOwner) -> u32 {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let key = (vm_id.to_string(), name.to_string());
        if let Some(id) = q.by_name.get(&key).copied() {
            if let Some(queue) = q.queues.get_mut(&id) {
                queue.owner = owner;
            }
            return id;
        }
        q.next_id += 1;
        let id = q.next_id;
        q.by_name.insert(key, id);
        q.queues.insert(
            id,
            Queue {
                items: VecDeque::new(),
                owner,
            },
        );
        id
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        let q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        q.by_name
            .get(&(vm_id.to_string(), name.to_string()))
            .copied()
    }

    /// Appends; returns the owner to notify, or the failing status.
    pub fn enqueue(&self, id: u32, value: Vec<u8>) -> Result<QueueOwner, i32> {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = q.queues.get_mut(&id).ok_or(status::NOT_FOUND)?;
        if queue.items.len() >= MAX_QUEUE_LEN {
            metrics::counter!("wasmesh_filter_queue_dropped_total").increment(1);
            return Err(status::INTERNAL_FAILURE);
        }
        queue.items.push_back(value);
        Ok(queue.owner.clone())
    }

    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, i32> {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = q.queues.get_mut(&id).ok_or(status::NOT_FOUND)?;
        queue.items.pop_front().ok_or(status::EMPTY)
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
        let id = s.register_queue("vm", "q", owner.clone());
        assert_eq!(s.register_queue("vm", "q", owner.clone()), id);
        assert_eq!(s.resolve_queue("vm", "q"), Some(id));
        assert_eq!(s.resolve_queue("vm", "nope"), None);
        assert_eq!(s.dequeue(id), Err(status::EMPTY));
        assert_eq!(s.enqueue(id, b"a".to_vec()), Ok(owner));
        assert_eq!(s.dequeue(id), Ok(b"a".to_vec()));
        assert_eq!(s.dequeue(id + 1), Err(status::NOT_FOUND));
    }
}
