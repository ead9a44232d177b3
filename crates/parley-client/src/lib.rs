//! # parley-client
//!
//! The Parley client library: an account and its keys in an encrypted local store, sessions
//! per contact device, sending with an outbox for when the server cannot be reached, receiving
//! over the delivery WebSocket with deduplication, history, contacts and safety numbers.
//!
//! ## Local store (`HOME/parley.db`)
//!
//! SQLite (WAL, `synchronous = FULL`); the key is Argon2id(passphrase, salt) with the
//! parameters recorded in the file's header (default m = 64 MiB, t = 3, p = 1), and every
//! secret value is sealed with XChaCha20-Poly1305 under a per-row label as associated data.
//! Sealed: the account and device identity secrets, the prekey store, session states, message
//! bodies, outbox payloads, the server token. In clear: the server URL, usernames, public keys,
//! message ids, timestamps, delivery states, counters. One process at a time holds a home
//! (`HOME/parley.lock`).
//!
//! ## Content inside the encryption
//!
//! A franked body (`parley_proto::FrankedBody`, PROTOCOL.md §12) followed by the franking key
//! NF: the logical message id (the same for every device copy, and equal to the id the server
//! relays), the sender's clock, sender and recipient, the position in the sender's hash chain
//! towards the recipient, and the text. Its commitment TF travels in clear and is bound into
//! the ratchet's associated data; a message whose commitment does not open is dropped
//! ([`Event::Dropped`]).
//!
//! ## Trust
//!
//! Bundles are checked against the account key in the server's answer, and every device
//! certificate must be in the account-signed device list. The first key seen for a username is
//! pinned; a different key later stops sending ([`ClientError::IdentityChanged`]) and shows
//! [`Event::KeyChange`] on receipt, until [`Client::accept_key_change`]. Key transparency
//! (docs/KT.md) checks every contact's keys against the server's auditable key directory
//! ([`KtStatus`]: verified, pending or mismatch; a mismatch blocks sends) and monitors our own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), parley_client::ClientError> {
//! use parley_client::{Client, ClientOptions};
//! let opts = ClientOptions::default();
//! let home = std::path::Path::new("/tmp/alice");
//! let mut alice =
//!     Client::create_account(home, "http://127.0.0.1:7470", "alice", "passphrase", &opts).await?;
//! let sent = alice.send("bob", "hello").await?;
//! println!("{} queued={}", sent.id, sent.queued);
//! for event in alice.receive(None).await? {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```

mod client;
mod error;
pub mod filters;
mod franking;
mod inbox;
pub mod kt;
mod kt_client;
mod safety;
mod store;
mod transport;

pub use client::{
    ACK_BATCH, AccountInfo, Client, ClientOptions, Contact, Event, FRAME_TIMEOUT, Flushed,
    HistoryEntry, INITIAL_ONE_TIME_PREKEYS, MAX_BACKOFF, MAX_SESSIONS_PER_DEVICE, REPLENISH_BATCH,
    SendResult,
};
pub use error::ClientError;
pub use inbox::{ActivityMark, ConversationSummary, TimelineItem};
pub use kt_client::{KtAlarm, KtReport, KtStatus};
pub use parley_api::AgeClass;
pub use parley_proto::SafetyNumber;
pub use safety::Request;
pub use store::{
    DEFAULT_M_COST_KIB, DEFAULT_P_COST, DEFAULT_T_COST, INSECURE_TEST_KDF_ENV, TEST_M_COST_KIB,
    TEST_T_COST,
};
