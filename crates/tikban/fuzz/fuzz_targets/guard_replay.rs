#![no_main]
//! `tikban guard replay` over arbitrary bytes as a log file: never panics, prints only
//! printable ASCII lines, one per counted ban plus the two summary lines (checks in
//! `tikban::guard::fuzzing::replay_bytes`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tikban::guard::fuzzing::replay_bytes(data));
