//! See `remora_fuzz_targets::connection_memos` (fuzz-targets/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz_targets::connection_memos(data));
