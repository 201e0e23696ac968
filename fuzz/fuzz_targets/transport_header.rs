//! Transport-header decoding on arbitrary bytes: never panics; what decodes re-encodes to the
//! same bytes' prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_proxy::transport_header::{PREFACE, TransportHeader};

fuzz_target!(|data: &[u8]| {
    let mut wire = PREFACE.to_vec();
    wire.extend_from_slice(data);
    for input in [data, &wire[..]] {
        if let Ok(Some((header, used))) = TransportHeader::decode(input) {
            assert!(used <= input.len());
            let again = TransportHeader::decode(&header.encode()).unwrap().unwrap().0;
            assert_eq!(again, header);
        }
    }
});
