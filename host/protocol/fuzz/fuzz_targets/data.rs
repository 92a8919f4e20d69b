//! Fuzz target: `DataReader` over arbitrary bytes split at a fuzzer-chosen point.
//! Trusts no input. Checks the RFC 5321 §4.1.1.4 / §4.5.2 invariants in
//! `../invariants.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| invariants::check_data(data));
