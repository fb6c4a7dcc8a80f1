#![no_main]
//! Tag demultiplexer: arbitrary registrations, cancels and reply bytes never panic, and the
//! window accounting stays consistent.
libfuzzer_sys::fuzz_target!(|data: &[u8]| routeros_client::fuzzing::mux(data));
