#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qss_fuzzing::listen_verify(data));
