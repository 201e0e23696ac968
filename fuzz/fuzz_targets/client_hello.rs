//! ClientHello detection on arbitrary bytes: never panics, and a longer input never turns a
//! decided prefix back into "need more".
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_proxy::tls_detect::{Detected, detect};

fuzz_target!(|data: &[u8]| {
    let full = detect(data);
    for cut in 0..data.len() {
        let partial = detect(&data[..cut]);
        if partial != Detected::NeedMore {
            assert_eq!(partial, full, "decided at {cut}, changed later");
        }
    }
});
