//! Fuzz target: `parse_command` and `LineFramer` over arbitrary bytes. Trusts no
//! input. Checks the RFC 5321 §4.1 parsing invariants in `../invariants.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| invariants::check_command(data));
