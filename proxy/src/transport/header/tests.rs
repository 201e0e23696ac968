use super::*;
use proptest::prelude::*;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn after_preface(h: &TransportHeader) -> String {
    let enc = h.encode();
    assert_eq!(&enc[..23], PREFACE);
    hex(&enc[23..])
}

#[test]
fn wire_md_known_answers() {
    let port = |port, protocol| TransportHeader {
        port,
        name: None,
        protocol,
    };
    assert_eq!(after_preface(&port(8080, None)), "00 00 00 03 08 90 3F");
    assert_eq!(
        after_preface(&port(8080, Some(SessionProtocol::Http1))),
        "00 00 00 07 08 90 3F 1A 02 0A 00"
    );
    assert_eq!(
        after_preface(&port(8080, Some(SessionProtocol::Http2))),
        "00 00 00 07 08 90 3F 1A 02 12 00"
    );
    let gw = TransportHeader {
        port: 4143,
        name: Some("web.shop.svc.cluster.local".into()),
        protocol: None,
    };
    let name_hex = hex(b"web.shop.svc.cluster.local");
    assert_eq!(
        after_preface(&gw),
        format!("00 00 00 1F 08 AF 20 12 1A {name_hex}")
    );
}

#[test]
fn decodes_what_it_encodes() {
    let h = TransportHeader {
        port: 5432,
        name: Some("db.shop.svc.cluster.local".into()),
        protocol: Some(SessionProtocol::Http2),
    };
    let mut wire = h.encode().to_vec();
    wire.extend_from_slice(b"app bytes");
    let (decoded, used) = TransportHeader::decode(&wire).unwrap().unwrap();
    assert_eq!(decoded, h);
    assert_eq!(&wire[used..], b"app bytes");
    for cut in 0..used {
        assert_eq!(
            TransportHeader::decode(&wire[..cut]),
            Ok(None),
            "cut at {cut}"
        );
    }
}

fn raw(port: i32, name: &str) -> Vec<u8> {
    let msg = HeaderProto {
        port,
        name: name.into(),
        session_protocol: None,
    };
    let body = msg.encode_to_vec();
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn refuses_bad_headers() {
    assert_eq!(
        TransportHeader::decode(&raw(0, "")),
        Err(HeaderError::BadPort(0))
    );
    assert_eq!(
        TransportHeader::decode(&raw(70_000, "")),
        Err(HeaderError::BadPort(70_000))
    );
    assert_eq!(
        TransportHeader::decode(&raw(-1, "")),
        Err(HeaderError::BadPort(-1))
    );
    assert!(matches!(
        TransportHeader::decode(&raw(80, "not a name!")),
        Err(HeaderError::BadName(_))
    ));
    assert_eq!(
        TransportHeader::decode(b"GET / HTTP/1.1\r\n"),
        Err(HeaderError::NoPreface)
    );
    let mut huge = PREFACE.to_vec();
    huge.extend_from_slice(&(1u32 << 30).to_be_bytes());
    assert_eq!(
        TransportHeader::decode(&huge),
        Err(HeaderError::TooLong(1 << 30))
    );
    let mut garbage = PREFACE.to_vec();
    garbage.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    assert!(matches!(
        TransportHeader::decode(&garbage),
        Err(HeaderError::Malformed(_))
    ));
}

#[tokio::test]
async fn reads_exactly_the_header() {
    let h = TransportHeader {
        port: 8080,
        name: None,
        protocol: Some(SessionProtocol::Http1),
    };
    let mut wire = h.encode().to_vec();
    wire.extend_from_slice(b"rest");
    let mut io = &wire[..];
    assert_eq!(TransportHeader::read(&mut io).await.unwrap(), h);
    assert_eq!(io, b"rest");
    let mut short = &wire[..10];
    assert_eq!(
        TransportHeader::read(&mut short).await,
        Err(HeaderError::Truncated)
    );
    let mut huge = PREFACE.to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        TransportHeader::read(&mut &huge[..]).await,
        Err(HeaderError::TooLong(u32::MAX as usize))
    );
}

proptest! {
    #[test]
    fn roundtrip(port in 1u16.., proto in 0u8..3, labels in prop::collection::vec("[a-z][a-z0-9]{0,10}", 0..4)) {
        let name = if labels.is_empty() { None } else { Some(labels.join(".").parse().unwrap()) };
        let protocol = match proto { 0 => None, 1 => Some(SessionProtocol::Http1), _ => Some(SessionProtocol::Http2) };
        let h = TransportHeader { port, name, protocol };
        let wire = h.encode();
        let (back, used) = TransportHeader::decode(&wire).unwrap().unwrap();
        prop_assert_eq!(back, h);
        prop_assert_eq!(used, wire.len());
    }

    #[test]
    fn never_panics(tail in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut wire = PREFACE.to_vec();
        wire.extend_from_slice(&tail);
        let _ = TransportHeader::decode(&wire);
        let _ = TransportHeader::decode(&tail);
    }
}
