//! Protocol tests: handshake, ratchet behaviour, limits and gaps, forward secrecy and
//! post-compromise security, serialization, redaction, property tests, franking and test
//! vectors.

mod franking;
mod props;
mod protocol;
mod support;
mod vectors;
