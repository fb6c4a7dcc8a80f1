#![no_main]
//! Sentence decoder + reply parser: no panic, bounded buffering, decode(encode(x)) == x.
libfuzzer_sys::fuzz_target!(|data: &[u8]| routeros_proto::fuzzing::decode(data));
