//! Event converter fuzz target: the first byte picks the topic, the rest is the record
//! value. The properties live in `shared::properties` (a unit test runs them on seeds).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shared::properties::check(data);
});
