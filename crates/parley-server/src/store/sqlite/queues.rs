//! Queue lengths, kept by the writer thread (migration 0009).
//!
//! The writer is the only connection that writes an embedded store, so the length of a
//! device's queue is known to it without a counter row: it counts the device's envelopes
//! (`envelopes_by_device`) the first time it needs the length, then follows its own inserts and
//! deletes. Changes made inside a transaction are kept on the side ([`View`]) and become the
//! known lengths only when that transaction commits; a rolled-back transaction or savepoint
//! leaves the known lengths as they were. A length loaded inside a transaction counts that
//! transaction's own writes, so it is known only once the transaction commits too.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use crate::store::StoreError;

/// Most devices whose lengths are kept; beyond it the known lengths are dropped at a commit and
/// counted again when needed (a bound on memory, not on correctness).
const MAX_KNOWN: usize = 1 << 18;

/// A device's length as a transaction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// This length, once the transaction commits.
    Len(u64),
    /// Not known any more (the device is gone): counted again if needed.
    Forget,
}

/// The committed queue lengths of the devices looked at so far.
#[derive(Debug, Default)]
pub(super) struct QueueLengths {
    known: HashMap<i64, u64>,
}

impl QueueLengths {
    /// A transaction's view of the lengths, starting from the committed ones.
    pub(super) fn begin(&self) -> View<'_> {
        View { known: &self.known, changes: HashMap::new(), undo: None }
    }

    /// The changes of a committed transaction become the known lengths.
    pub(super) fn commit(&mut self, changes: HashMap<i64, Change>) {
        if self.known.len() + changes.len() > MAX_KNOWN {
            self.known.clear();
        }
        for (device, change) in changes {
            match change {
                Change::Len(n) => self.known.insert(device, n),
                Change::Forget => self.known.remove(&device),
            };
        }
    }

    /// The known length of `device` (tests).
    #[cfg(test)]
    pub(super) fn get(&self, device: i64) -> Option<u64> {
        self.known.get(&device).copied()
    }
}

/// The lengths as one transaction sees them.
pub(super) struct View<'a> {
    known: &'a HashMap<i64, u64>,
    changes: HashMap<i64, Change>,
    /// Inside a savepoint: the previous value of every change made since it began.
    undo: Option<Vec<(i64, Option<Change>)>>,
}

impl View<'_> {
    /// The length of `device`'s queue in this transaction; `None` if there is no such device.
    pub(super) fn len(
        &mut self,
        c: &rusqlite::Connection,
        device: i64,
    ) -> Result<Option<u64>, StoreError> {
        match self.changes.get(&device) {
            Some(Change::Len(n)) => return Ok(Some(*n)),
            Some(Change::Forget) => {}
            None => {
                if let Some(n) = self.known.get(&device) {
                    return Ok(Some(*n));
                }
            }
        }
        let counted: Option<i64> = c
            .prepare_cached(
                "SELECT (SELECT COUNT(*) FROM envelopes WHERE device_uid = ?1) AS queued \
                 FROM devices WHERE uid = ?1",
            )?
            .query_row(params![device], |row| row.get("queued"))
            .optional()?;
        let Some(counted) = counted else { return Ok(None) };
        let n =
            u64::try_from(counted).map_err(|_| StoreError::Database("negative count".into()))?;
        self.set(device, Change::Len(n));
        Ok(Some(n))
    }

    /// `device`'s queue is now `n` long (after an insert the caller counted).
    pub(super) fn set_len(&mut self, device: i64, n: u64) {
        self.set(device, Change::Len(n));
    }

    /// `n` of `device`'s envelopes were deleted. A device whose length is not known yet is
    /// left alone: when it is counted, the count sees the deletion.
    pub(super) fn deleted(&mut self, device: i64, n: u64) {
        if n == 0 {
            return;
        }
        let current = match self.changes.get(&device) {
            Some(Change::Len(v)) => Some(*v),
            Some(Change::Forget) => None,
            None => self.known.get(&device).copied(),
        };
        if let Some(v) = current {
            self.set(device, Change::Len(v.saturating_sub(n)));
        }
    }

    /// `device` is gone (its account was deleted).
    pub(super) fn forget(&mut self, device: i64) {
        self.set(device, Change::Forget);
    }

    fn set(&mut self, device: i64, change: Change) {
        let before = self.changes.insert(device, change);
        if let Some(undo) = &mut self.undo {
            undo.push((device, before));
        }
    }

    /// Begins a savepoint (one operation of a group run in isolation).
    pub(super) fn savepoint(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Ends the savepoint: rolled back (its changes undone) or released (kept).
    pub(super) fn end_savepoint(&mut self, rolled_back: bool) {
        let Some(undo) = self.undo.take() else { return };
        if rolled_back {
            for (device, before) in undo.into_iter().rev() {
                match before {
                    Some(change) => self.changes.insert(device, change),
                    None => self.changes.remove(&device),
                };
            }
        }
    }

    /// The changes, for [`QueueLengths::commit`] once the transaction has committed.
    pub(super) fn into_changes(self) -> HashMap<i64, Change> {
        self.changes
    }
}
