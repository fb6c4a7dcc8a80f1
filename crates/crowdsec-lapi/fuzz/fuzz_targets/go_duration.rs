#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| crowdsec_lapi::fuzzing::go_duration(data));
