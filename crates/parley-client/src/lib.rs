//! # parley-client
//!
//! The Parley client library: an account and its keys in an encrypted local store
//! ([`store`](crate) module docs: what is sealed and what is not), sessions per contact
//! device, sending with an outbox for when the server cannot be reached, receiving over the
//! delivery WebSocket with deduplication, history, contacts and safety numbers.
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
//!
//! Every key and message body at rest is sealed; see the `store` module for the layout. The
//! content encoding inside the end-to-end encryption is described in the `content` module.

mod client;
mod content;
mod error;
mod store;
mod transport;

pub use client::{
    ACK_BATCH, AccountInfo, Client, ClientOptions, Contact, Event, FRAME_TIMEOUT, Flushed,
    HistoryEntry, INITIAL_ONE_TIME_PREKEYS, MAX_BACKOFF, REPLENISH_BATCH, SendResult,
};
pub use error::ClientError;
pub use parley_proto::SafetyNumber;
pub use store::{
    DEFAULT_M_COST_KIB, DEFAULT_P_COST, DEFAULT_T_COST, INSECURE_TEST_KDF_ENV, TEST_M_COST_KIB,
    TEST_T_COST,
};
