//! Fuzz target: `DataReader` in chunked (BDAT) mode over arbitrary bytes
//! split at a fuzzer-chosen point. Trusts no input. Checks the RFC 3030 /
//! RFC 5321 §2.3.8 invariants in `../invariants.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| invariants::check_chunks(data));
