//! Protocol tests: handshake, ratchet behaviour, limits and gaps, forward secrecy and
//! post-compromise security, serialization, redaction, property tests and test vectors.

mod props;
mod protocol;
mod support;
mod vectors;
