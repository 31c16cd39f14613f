//! SockJS payload fuzz target: the first byte picks `xhr_send` or `jsonp_send` (form or
//! raw), the rest is the request body. The properties live in
//! `gateway::sockjs::properties` (a unit test runs them on seeds).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway::sockjs::properties::check(data);
});
