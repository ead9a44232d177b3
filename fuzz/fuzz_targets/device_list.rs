//! Fuzz target `device_list`: see `crates/parley-proto/tests/fuzz_bodies/mod.rs`.
#![no_main]

#[path = "../../crates/parley-proto/tests/fuzz_bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::device_list(data));
