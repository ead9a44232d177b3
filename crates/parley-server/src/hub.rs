//! In-process wake-ups: a connected device waits on its [`Notify`]; a committed send notifies
//! the recipient devices. A device has at most one live connection: registering a new one
//! closes the previous one. Across nodes the same happens over the bus ([`crate::bus`]): a
//! node that hears that a device connected elsewhere closes its own connection of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};

struct Slot {
    notify: Arc<Notify>,
    conn: u64,
    kick: Option<oneshot::Sender<Kick>>,
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
}

impl Hub {
    /// Registers a connection for device `uid`, closing any previous one.
    pub fn register(&self, uid: i64) -> Registration {
        let conn = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let (kick, kicked) = oneshot::channel();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let old = slots.insert(uid, Slot { notify: notify.clone(), conn, kick: Some(kick) });
        if let Some(k) = old.and_then(|o| o.kick) {
            let _ = k.send(Kick::Replaced);
        }
        Registration { notify, conn, kicked }
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
