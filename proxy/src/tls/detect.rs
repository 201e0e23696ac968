//! Recognises a TLS ClientHello at the start of a connection and reads its SNI, without
//! consuming anything: the caller reads into a buffer and replays it afterwards.
//!
//! Only a ClientHello that fits one TLS record is read (docs/wire-protocol.md#tls); one split across records, or
//! one that is malformed, is reported as [`Detected::TlsUnreadable`] — TLS that is not ours to
//! terminate.

/// Bytes read at most before deciding (a ClientHello with post-quantum key shares is ~1.5 KB).
pub const MAX_DETECT: usize = 8 * 1024;

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    /// The bytes so far could still be a ClientHello.
    NeedMore,
    /// Not TLS.
    NotTls,
    /// A ClientHello, with its SNI host name if it has one.
    ClientHello { sni: Option<String> },
    /// TLS, but the ClientHello cannot be read here (split across records, too large,
    /// malformed).
    TlsUnreadable,
}

/// Classifies the first bytes of a connection.
pub fn detect(buf: &[u8]) -> Detected {
    if buf.is_empty() {
        return Detected::NeedMore;
    }
    if buf[0] != CONTENT_HANDSHAKE {
        return Detected::NotTls;
    }
    if buf.len() >= 2 && buf[1] != 3 {
        return Detected::NotTls;
    }
    if buf.len() < RECORD_HEADER {
        return Detected::NeedMore;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    // A handshake message has a 4-byte header: a shorter record cannot hold a ClientHello.
    if record_len < 4 || RECORD_HEADER + record_len > MAX_DETECT {
        return Detected::TlsUnreadable;
    }
    if buf.len() > RECORD_HEADER && buf[RECORD_HEADER] != HANDSHAKE_CLIENT_HELLO {
        return Detected::TlsUnreadable;
    }
    if buf.len() >= RECORD_HEADER + 4 {
        let hs_len = u32::from_be_bytes([0, buf[6], buf[7], buf[8]]) as usize;
        if 4 + hs_len > record_len {
            // The ClientHello continues in another record.
            return Detected::TlsUnreadable;
        }
    }
    if buf.len() < RECORD_HEADER + record_len {
        return Detected::NeedMore;
    }
    let record = &buf[RECORD_HEADER..RECORD_HEADER + record_len];
    let hs_len = u32::from_be_bytes([0, record[1], record[2], record[3]]) as usize;
    match client_hello_sni(&record[4..4 + hs_len]) {
        Some(sni) => Detected::ClientHello { sni },
        None => Detected::TlsUnreadable,
    }
}

/// A cursor over a byte slice; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The SNI of a ClientHello body: `Some(None)` when it has none, `None` when malformed.
fn client_hello_sni(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    let session_id = r.vec8()?;
    if session_id.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    r.vec8()?; // compression methods
    if r.0.is_empty() {
        return Some(None); // no extensions
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        if ty != EXT_SERVER_NAME {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                if name.is_empty() || !name.is_ascii() {
                    return None;
                }
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests;
