//! See `remora_fuzz_targets::h1_request` (fuzz-targets/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz_targets::h1_request(data));
