//! See `remora_fuzz_targets::transport_header` (fuzz-targets/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz_targets::transport_header(data));
