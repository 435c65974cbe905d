#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| simple_fastcgi_fuzz::request(data));
