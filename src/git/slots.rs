//! Connection slots per host: at most [`MAX_PER_HOST`] connections to one host at a time.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

/// At most this many connections to one host at a time, whatever `pipe.parallel` says, so a
/// poll of many repositories on one forge never looks like a flood.
pub(crate) const MAX_PER_HOST: usize = 8;

/// A claim on one of a host's [`MAX_PER_HOST`] connection slots, released on drop.
pub(crate) struct HostSlot(String);

static SLOTS: (Mutex<Option<HashMap<String, usize>>>, Condvar) = (Mutex::new(None), Condvar::new());

/// Waits for a free slot on `host`.
pub(crate) fn host_slot(host: &str) -> HostSlot {
    let (lock, freed) = &SLOTS;
    let mut slots = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let in_use = slots.get_or_insert_with(HashMap::new).entry(host.to_string()).or_insert(0);
        if *in_use < MAX_PER_HOST {
            *in_use += 1;
            return HostSlot(host.to_string());
        }
        slots = freed.wait(slots).unwrap_or_else(|e| e.into_inner());
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let (lock, freed) = &SLOTS;
        let mut slots = lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = slots.as_mut().and_then(|s| s.get_mut(&self.0)) {
            *n = n.saturating_sub(1);
        }
        freed.notify_all();
    }
}
