//! # parley-server
//!
//! The relay that stores and delivers ciphertext: accounts and devices, the prekey directory,
//! durable per-device queues with group commit, push delivery over WebSocket, an OpenAPI
//! document, metrics. It never sees plaintext or message keys.
//!
//! `main` wires ([`start`]); [`app`] builds the router, testable with `oneshot`.

pub mod auth;
pub mod bus;
pub mod config;
pub mod error;
pub mod franking;
pub mod hub;
pub mod kt;
pub mod metrics;
pub mod openapi;
pub mod policy;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod ws;

pub use config::{Config, ConfigError, Limits};
pub use server::{RunningServer, ServerError, app, start};
