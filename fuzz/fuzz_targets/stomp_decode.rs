//! STOMP codec fuzz target: arbitrary bytes through the decoder, split, and re-encoded.
//! The properties live in `gateway::stomp::properties` (a unit test runs them on seeds).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway::stomp::properties::check(data);
});
