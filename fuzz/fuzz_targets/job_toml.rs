#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kairos_fuzz::job_toml(data));
