//! See `remora_fuzz_targets::h1_response` (fuzz-targets/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz_targets::h1_response(data));
