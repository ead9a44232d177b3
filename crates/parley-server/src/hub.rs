//! In-process wake-ups: a connected device waits on its [`Notify`]; a committed send notifies
//! the recipient devices. A device has at most one live connection: registering a new one
//! closes the previous one. Across nodes the same happens over the bus ([`crate::bus`]): a
//! node that hears that a device connected elsewhere closes its own connection of it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, oneshot};

use crate::store::StoredEnvelope;

/// Most envelopes, and most ciphertext bytes, kept in memory for one connection; beyond either,
/// the connection reads its queue from the database again.
const MEMORY_CAP: usize = 1024;
const MEMORY_CAP_BYTES: usize = 1024 * 1024;

struct Slot {
    notify: Arc<Notify>,
    conn: u64,
    kick: Option<oneshot::Sender<Kick>>,
    memory: Arc<Mutex<Memory>>,
}

/// The envelopes committed for a connected device since its connection last read the
/// database to the end, handed over by the store's writer in id order (when the store can:
/// [`crate::store::Store::set_commit_listener`]). While it is complete the connection pushes
/// from it instead of reading the queue back.
#[derive(Debug)]
pub struct Memory {
    queue: VecDeque<StoredEnvelope>,
    /// Ciphertext bytes in `queue`.
    bytes: usize,
    /// Not known complete: at the start, after an overflow, or when the connection's poll
    /// asks for a database read. The connection reads the database, and only a read that
    /// follows [`Memory::restart`] makes it complete again.
    stale: bool,
}

impl Memory {
    fn new() -> Self {
        Self { queue: VecDeque::new(), bytes: 0, stale: true }
    }

    /// Whether the connection must read the database.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Called just before each database read of the connection: what is committed from now
    /// on is kept here, what was committed before is in that read (or, when the read is
    /// limited by the window, in the next one).
    pub fn restart(&mut self) {
        self.forget();
        self.stale = false;
    }

    /// Forgets what is kept; the connection will read the database.
    pub fn mark_stale(&mut self) {
        self.forget();
        self.stale = true;
    }

    /// Empties the queue and gives its buffer back (a burst must not keep memory for good).
    fn forget(&mut self) {
        self.queue = VecDeque::new();
        self.bytes = 0;
    }

    /// Up to `n` envelopes with ids above `after` (those at or below it were already pushed
    /// from a database read and are dropped), oldest first.
    pub fn take(&mut self, after: u64, n: usize) -> Vec<StoredEnvelope> {
        while self.queue.front().is_some_and(|e| e.id <= after) {
            if let Some(e) = self.queue.pop_front() {
                self.bytes = self.bytes.saturating_sub(e.ciphertext.len());
            }
        }
        let k = n.min(self.queue.len());
        let taken: Vec<StoredEnvelope> = self.queue.drain(..k).collect();
        self.bytes = self.bytes.saturating_sub(taken.iter().map(|e| e.ciphertext.len()).sum());
        taken
    }

    fn keep(&mut self, env: StoredEnvelope) {
        if self.stale {
            return;
        }
        if self.queue.len() >= MEMORY_CAP || self.bytes + env.ciphertext.len() > MEMORY_CAP_BYTES {
            self.mark_stale();
        } else {
            self.bytes += env.ciphertext.len();
            self.queue.push_back(env);
        }
    }
}

/// Locks a connection's memory (a poisoned lock is still usable: the memory is only a cache
/// of the database).
pub fn lock(memory: &Mutex<Memory>) -> MutexGuard<'_, Memory> {
    memory.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a connection is closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// The same device connected again (on this node or another one).
    Replaced,
    /// The account was deleted.
    AccountDeleted,
}

/// The registry of connected devices.
#[derive(Default)]
pub struct Hub {
    slots: Mutex<HashMap<i64, Slot>>,
    next: AtomicU64,
    memory_push: AtomicBool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("connections", &self.connections()).finish()
    }
}

/// A registered connection.
#[derive(Debug)]
pub struct Registration {
    /// Notified when envelopes arrive for the device.
    pub notify: Arc<Notify>,
    /// This connection's number.
    pub conn: u64,
    /// Fires when the server closes this connection (replaced, or account deleted).
    pub kicked: oneshot::Receiver<Kick>,
    /// Envelopes committed for this device, when the store hands them over.
    pub memory: Arc<Mutex<Memory>>,
}

impl Hub {
    /// Registers a connection for device `uid`, closing any previous one.
    pub fn register(&self, uid: i64) -> Registration {
        let conn = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let (kick, kicked) = oneshot::channel();
        let memory = Arc::new(Mutex::new(Memory::new()));
        let slot = Slot { notify: notify.clone(), conn, kick: Some(kick), memory: memory.clone() };
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let old = slots.insert(uid, slot);
        if let Some(k) = old.and_then(|o| o.kick) {
            let _ = k.send(Kick::Replaced);
        }
        Registration { notify, conn, kicked, memory }
    }

    /// From now on the store hands committed envelopes to [`Hub::deliver`].
    pub fn enable_memory_push(&self) {
        self.memory_push.store(true, Ordering::Relaxed);
    }

    /// Whether connections may push from memory.
    pub fn memory_push(&self) -> bool {
        self.memory_push.load(Ordering::Relaxed)
    }

    /// Envelopes were deleted other than by acks (a block's purge, an account deletion, the
    /// expiry): every connection forgets what it kept and reads its queue again.
    pub fn forget_all(&self) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.values() {
            lock(&s.memory).mark_stale();
            s.notify.notify_one();
        }
    }

    /// Committed envelopes, in id order: each is kept for its device's connection, if
    /// connected here, which is woken.
    pub fn deliver(&self, envelopes: Vec<(i64, StoredEnvelope)>) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for (uid, env) in envelopes {
            if let Some(s) = slots.get(&uid) {
                lock(&s.memory).keep(env);
                s.notify.notify_one();
            }
        }
    }

    /// Removes connection `conn` of device `uid` if it is still the registered one.
    pub fn unregister(&self, uid: i64, conn: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.get(&uid).is_some_and(|s| s.conn == conn) {
            slots.remove(&uid);
        }
    }

    /// Wakes the connection of each device, if connected (a wake-up is never lost: `Notify`
    /// keeps a permit when nobody is waiting).
    pub fn notify(&self, uids: impl IntoIterator<Item = i64>) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for uid in uids {
            if let Some(s) = slots.get(&uid) {
                s.notify.notify_one();
            }
        }
    }

    /// Wakes every connection (after a bus reconnection, when wake-ups may have been missed).
    pub fn notify_all(&self) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.values() {
            s.notify.notify_one();
        }
    }

    /// Closes the connection of a device, telling it `why`. Returns whether there was one.
    pub fn kick(&self, uid: i64, why: Kick) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.remove(&uid) {
            Some(s) => {
                if let Some(k) = s.kick {
                    let _ = k.send(why);
                }
                true
            }
            None => false,
        }
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn env(id: u64) -> StoredEnvelope {
        StoredEnvelope {
            id,
            message_id: format!("m{id}"),
            sender: "a".into(),
            sender_device: 1,
            server_time_ms: 0,
            ciphertext: vec![1],
            franking_tag: Vec::new(),
            server_tag: Vec::new(),
            franking_kid: 0,
        }
    }

    fn ids(envs: &[StoredEnvelope]) -> Vec<u64> {
        envs.iter().map(|e| e.id).collect()
    }

    #[tokio::test]
    async fn memory_keeps_committed_envelopes_only_while_complete() {
        let hub = Hub::default();
        let reg = hub.register(7);
        // Before the connection's first database read nothing is kept: the read has it.
        hub.deliver(vec![(7, env(1)), (8, env(2))]);
        reg.notify.notified().await;
        assert!(lock(&reg.memory).is_stale());
        assert!(lock(&reg.memory).take(0, 10).is_empty());
        // After a restart (the read to the end follows), commits are kept in order; those the
        // read already pushed are dropped; `take` respects the room.
        lock(&reg.memory).restart();
        hub.deliver(vec![(7, env(3)), (7, env(4)), (9, env(5)), (7, env(6))]);
        let mut m = lock(&reg.memory);
        assert_eq!(ids(&m.take(3, 1)), vec![4]);
        assert_eq!(ids(&m.take(4, 10)), vec![6]);
        assert!(m.take(6, 10).is_empty());
        // An overflow forgets everything and asks for a database read.
        for id in 10..10 + MEMORY_CAP as u64 + 1 {
            m.keep(env(id));
        }
        assert!(m.is_stale());
        assert!(m.take(0, 10).is_empty());
        drop(m);
        // So does more than the byte cap, and a purge elsewhere (forget_all).
        let mut m = lock(&reg.memory);
        m.restart();
        let mut big = env(5000);
        big.ciphertext = vec![0; MEMORY_CAP_BYTES / 2];
        m.keep(big.clone());
        assert!(!m.is_stale());
        big.id = 5001;
        big.ciphertext.push(0);
        m.keep(big);
        assert!(m.is_stale());
        m.restart();
        m.keep(env(6000));
        drop(m);
        hub.forget_all();
        assert!(lock(&reg.memory).is_stale());
        // A new connection of the device starts stale again.
        let again = hub.register(7);
        assert!(lock(&again.memory).is_stale());
    }

    #[tokio::test]
    async fn one_connection_per_device_and_wake_ups() {
        let hub = Hub::default();
        let mut first = hub.register(7);
        let second = hub.register(7);
        assert_eq!(first.kicked.try_recv().unwrap(), Kick::Replaced, "a new connection replaces");
        assert_eq!(hub.connections(), 1);
        // The replaced connection unregistering does not remove the new one.
        hub.unregister(7, first.conn);
        assert_eq!(hub.connections(), 1);
        // A wake-up before anyone waits is kept (Notify keeps a permit).
        hub.notify([7, 8]);
        second.notify.notified().await;
        let other = hub.register(9);
        hub.notify_all();
        second.notify.notified().await;
        other.notify.notified().await;
        // Kicked from another node, or by an account deletion.
        let mut second = second;
        assert!(hub.kick(7, Kick::Replaced));
        assert_eq!(second.kicked.try_recv().unwrap(), Kick::Replaced);
        assert!(!hub.kick(7, Kick::Replaced), "nothing left to close");
        let mut other = other;
        assert!(hub.kick(9, Kick::AccountDeleted));
        assert_eq!(other.kicked.try_recv().unwrap(), Kick::AccountDeleted);
        assert_eq!(hub.connections(), 0);
    }
}
