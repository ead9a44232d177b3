//! The contact policy (docs/SAFETY.md). It decides on what the server legitimately knows — who
//! is an account, its declared age class, who has written to whom, who blocked whom, and how
//! often — and never on message content, which it cannot read.

use crate::config::Limits;
use crate::store::Relation;

/// Whether the sender may reach the recipient (fetch its bundles, send to it).
///
/// * A block stops everything from the blocked account.
/// * An adult reaches a minor only once that minor has written to the adult: adults cannot start
///   conversations with minors, and their requests never reach minors.
///
/// Every refusal is answered like an unknown account, so the answer does not tell an adult
/// whether an account belongs to a minor or blocks them.
pub fn reachable(sender_minor: bool, recipient_minor: bool, rel: Relation) -> bool {
    if rel.blocked_by {
        return false;
    }
    !(recipient_minor && !sender_minor && !rel.received)
}

/// New conversations an account may open per hour: fewer while the account is new (throwaway
/// accounts are the usual way around a per-account limit).
pub fn conversations_per_hour(limits: &Limits, account_created_at: u64, now: u64) -> u64 {
    if now.saturating_sub(account_created_at) < limits.new_account_secs {
        u64::from(limits.new_account_conversations_per_hour)
    } else {
        u64::from(limits.new_conversations_per_hour)
    }
}

/// Seconds until a full window frees a slot: the oldest new conversation in the last hour ages
/// out of it.
pub fn retry_after(oldest: Option<u64>, now: u64) -> u64 {
    oldest.map_or(3600, |o| o.saturating_add(3600).saturating_sub(now)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(sent: bool, received: bool, blocked_by: bool) -> Relation {
        Relation { sent, received, blocked_by }
    }

    #[test]
    fn adults_reach_minors_only_after_the_minor_wrote() {
        // (sender minor, recipient minor, relation) -> reachable
        assert!(reachable(false, false, rel(false, false, false)));
        assert!(reachable(true, true, rel(false, false, false)));
        assert!(reachable(true, false, rel(false, false, false)), "a minor may write first");
        assert!(!reachable(false, true, rel(false, false, false)), "adult stranger to a minor");
        assert!(
            !reachable(false, true, rel(true, false, false)),
            "the adult's own sends count for nothing"
        );
        assert!(reachable(false, true, rel(false, true, false)), "the minor wrote first");
        for (s, r) in [(false, false), (true, true), (false, true), (true, false)] {
            assert!(!reachable(s, r, rel(true, true, true)), "a block stops everything");
        }
    }

    #[test]
    fn new_accounts_get_the_stricter_limit() {
        let l = Limits::default();
        let day = l.new_account_secs;
        assert_eq!(
            conversations_per_hour(&l, 1000, 1000 + day - 1),
            u64::from(l.new_account_conversations_per_hour)
        );
        assert_eq!(
            conversations_per_hour(&l, 1000, 1000 + day),
            u64::from(l.new_conversations_per_hour)
        );
        assert_eq!(retry_after(Some(100), 200), 3500);
        assert_eq!(retry_after(Some(100), 5000), 1);
        assert_eq!(retry_after(None, 5000), 3600);
    }
}
