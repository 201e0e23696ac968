//! The transport header (docs/wire-protocol.md#transport-header): sent by a client proxy right after an mTLS handshake that
//! negotiated ALPN `transport.l5d.io/v1`, before any application byte. It names the port the
//! client wanted (opaque transport) or a service name (gateway), and the HTTP version when the
//! connection carries HTTP.
//!
//! Wire form: the 23-byte preface `transport.l5d.io/v1\r\n\r\n`, a 4-byte big-endian length,
//! then a protobuf `Header { int32 port = 1; string name = 2; SessionProtocol
//! session_protocol = 3; }`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt};

/// ALPN protocol identifier of connections that carry a transport header.
pub const ALPN: &[u8] = b"transport.l5d.io/v1";
pub const PREFACE: &[u8; 23] = b"transport.l5d.io/v1\r\n\r\n";
/// Headers longer than this are refused.
pub const MAX_LEN: usize = 64 * 1024;

/// The protobuf message, defined here (it is not in `linkerd2-proxy-api`).
#[derive(Clone, PartialEq, Message)]
pub struct HeaderProto {
    #[prost(int32, tag = "1")]
    pub port: i32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, optional, tag = "3")]
    pub session_protocol: Option<SessionProtocolProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SessionProtocolProto {
    #[prost(oneof = "session_protocol_proto::Kind", tags = "1, 2")]
    pub kind: Option<session_protocol_proto::Kind>,
}

pub mod session_protocol_proto {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Http1(super::Empty),
        #[prost(message, tag = "2")]
        Http2(super::Empty),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Empty {}

/// The HTTP version a connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionProtocol {
    Http1,
    Http2,
}

/// A validated transport header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    pub port: u16,
    /// A service name (or, refused by gateways, an IP address) for a gateway; `None` for
    /// opaque transport.
    pub name: Option<String>,
    pub protocol: Option<SessionProtocol>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("the connection does not start with the transport header preface")]
    NoPreface,
    #[error("the header's length {0} exceeds {MAX_LEN} bytes")]
    TooLong(usize),
    #[error("the header does not decode: {0}")]
    Malformed(String),
    #[error("the header's port {0} is not 1-65535")]
    BadPort(i32),
    #[error("the header's name {0:?} is neither a DNS name nor an IP address")]
    BadName(String),
    #[error("the connection closed inside the header")]
    Truncated,
}

impl TransportHeader {
    fn to_proto(&self) -> HeaderProto {
        use session_protocol_proto::Kind;
        HeaderProto {
            port: i32::from(self.port),
            name: self
                .name
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            session_protocol: self.protocol.map(|p| SessionProtocolProto {
                kind: Some(match p {
                    SessionProtocol::Http1 => Kind::Http1(Empty {}),
                    SessionProtocol::Http2 => Kind::Http2(Empty {}),
                }),
            }),
        }
    }

    /// The header in wire form, preface included.
    pub fn encode(&self) -> Bytes {
        let msg = self.to_proto();
        let len = msg.encoded_len();
        let mut buf = BytesMut::with_capacity(PREFACE.len() + 4 + len);
        buf.put_slice(PREFACE);
        buf.put_u32(len as u32);
        // Encoding into a buffer with enough capacity cannot fail.
        let _ = msg.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes a complete header from `buf` (preface included). `Ok(None)`: more bytes needed.
    /// On success returns the header and how many bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(TransportHeader, usize)>, HeaderError> {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return Err(HeaderError::NoPreface);
        }
        if buf.len() < PREFACE.len() + 4 {
            return Ok(None);
        }
        let mut len_bytes = &buf[PREFACE.len()..PREFACE.len() + 4];
        let len = len_bytes.get_u32() as usize;
        if len > MAX_LEN {
            return Err(HeaderError::TooLong(len));
        }
        let total = PREFACE.len() + 4 + len;
        if buf.len() < total {
            return Ok(None);
        }
        let proto = HeaderProto::decode(&buf[PREFACE.len() + 4..total])
            .map_err(|e| HeaderError::Malformed(e.to_string()))?;
        Ok(Some((Self::validate(proto)?, total)))
    }

    fn validate(p: HeaderProto) -> Result<TransportHeader, HeaderError> {
        use session_protocol_proto::Kind;
        let port = u16::try_from(p.port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or(HeaderError::BadPort(p.port))?;
        let name = if p.name.is_empty() {
            None
        } else if p.name.parse::<remora_identity::Name>().is_ok()
            || p.name.parse::<std::net::IpAddr>().is_ok()
        {
            Some(p.name)
        } else {
            return Err(HeaderError::BadName(p.name));
        };
        let protocol = p.session_protocol.and_then(|s| s.kind).map(|k| match k {
            Kind::Http1(_) => SessionProtocol::Http1,
            Kind::Http2(_) => SessionProtocol::Http2,
        });
        Ok(TransportHeader {
            port,
            name,
            protocol,
        })
    }

    /// Reads a header from `io`, reading only as far as the header ends (no application byte
    /// is consumed). Bound the call with a timeout: a silent peer makes it wait.
    pub async fn read<I: AsyncRead + Unpin>(io: &mut I) -> Result<TransportHeader, HeaderError> {
        let mut fixed = [0u8; PREFACE.len() + 4];
        io.read_exact(&mut fixed)
            .await
            .map_err(|_| HeaderError::Truncated)?;
        if fixed[..PREFACE.len()] != PREFACE[..] {
            return Err(HeaderError::NoPreface);
        }
        let len = u32::from_be_bytes([fixed[23], fixed[24], fixed[25], fixed[26]]) as usize;
        if len > MAX_LEN {
            return Err(HeaderError::TooLong(len));
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body)
            .await
            .map_err(|_| HeaderError::Truncated)?;
        let proto =
            HeaderProto::decode(&body[..]).map_err(|e| HeaderError::Malformed(e.to_string()))?;
        Self::validate(proto)
    }
}

#[cfg(test)]
mod tests;
