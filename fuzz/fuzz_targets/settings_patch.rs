#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qss_fuzzing::settings_patch(data));
