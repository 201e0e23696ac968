//! See `remora_fuzz_targets::trust_anchors` (fuzz-targets/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz_targets::trust_anchors(data));
