//! Raw MQTT packets over TCP for tests that decide every byte (which acknowledgements are sent,
//! malformed input): building packets and reading them back.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Appends an MQTT variable byte integer.
pub fn varint(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

/// A packet: the first byte, the remaining length, the body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    varint(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

/// A CONNECT of MQTT `level` (4: 3.1.1, 5), without credentials or properties.
pub fn connect(level: u8, client_id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
    let mut b = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        level,
        if clean { 0x02 } else { 0 },
    ];
    b.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        b.push(0); // no properties
    }
    b.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    b.extend_from_slice(client_id.as_bytes());
    packet(0x10, &b)
}

/// Appends a length-prefixed string (or binary data).
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// One packet: (first byte, body); `None` when the connection closed or nothing arrived
/// within `wait`. Over TCP or TLS.
pub async fn read_packet<S: AsyncRead + Unpin>(s: &mut S, wait: Duration) -> Option<(u8, Vec<u8>)> {
    let work = async {
        let first = s.read_u8().await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = s.read_u8().await.ok()?;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await.ok()?;
        Some((first, body))
    };
    tokio::time::timeout(wait, work).await.ok().flatten()
}
