//! Fuzz target `franking_report`: see `crates/parley-proto/tests/fuzz_bodies/mod.rs`.
#![no_main]

#[path = "../../crates/parley-proto/tests/fuzz_bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::franking_report(data));
