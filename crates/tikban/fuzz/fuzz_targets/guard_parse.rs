#![no_main]
//! Guard's log-message parser: `topics`, a 0 byte, then the message. Never panics, and a
//! login event's address is the router's: after the message's last ` from `, or its final
//! `src=` (checks in `tikban::guard::fuzzing::parse_message`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tikban::guard::fuzzing::parse_message(data));
