//! A message encoded once and sent many times: the gRPC edge streams `ServerMessage`s as these
//! bytes (`crates/edge-grpc/src/gen/server` maps the type here), so a push is encoded once per
//! message and every subscriber's stream writes the same bytes.

use bytes::{Buf, BufMut, Bytes};
use prost::{
    encoding::{self, DecodeContext, WireType},
    DecodeError, Message,
};

/// The protobuf encoding of a message, written as is. Decoding one keeps the fields' bytes as
/// they came (clients decode the real message type instead).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded(pub Bytes);

impl Encoded {
    /// `msg` encoded now.
    pub fn of(msg: &impl Message) -> Encoded {
        Encoded(Bytes::from(msg.encode_to_vec()))
    }
}

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut out = Vec::with_capacity(self.0.len() + 16);
        out.extend_from_slice(&self.0);
        encoding::encode_key(tag, wire_type, &mut out);
        match wire_type {
            WireType::Varint => encoding::encode_varint(encoding::decode_varint(buf)?, &mut out),
            WireType::ThirtyTwoBit | WireType::SixtyFourBit => {
                let n = if wire_type == WireType::ThirtyTwoBit {
                    4
                } else {
                    8
                };
                let mut v = vec![0; n];
                if buf.remaining() < n {
                    // A truncated field: let prost say so in its own words.
                    return encoding::skip_field(wire_type, tag, buf, ctx);
                }
                buf.copy_to_slice(&mut v);
                out.extend_from_slice(&v);
            }
            WireType::LengthDelimited => {
                let len = encoding::decode_varint(buf)?;
                let n = usize::try_from(len).unwrap_or(usize::MAX);
                if buf.remaining() < n {
                    return encoding::skip_field(wire_type, tag, buf, ctx);
                }
                encoding::encode_varint(len, &mut out);
                let start = out.len();
                out.resize(start + n, 0);
                buf.copy_to_slice(&mut out[start..]);
            }
            // Groups are proto2; tickwire.proto has none.
            WireType::StartGroup | WireType::EndGroup => {
                return encoding::skip_field(wire_type, tag, buf, ctx)
            }
        }
        self.0 = Bytes::from(out);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{server_message::Kind, Push, ServerMessage};

    /// Written as is, the bytes decode as the message they encode (also inside a length
    /// prefix, as gRPC frames them).
    #[test]
    fn encodes_as_the_message_it_holds() {
        let m = ServerMessage {
            kind: Some(Kind::Push(Push {
                channel: "chat.lobby".into(),
                offset: 7,
                ..Push::default()
            })),
        };
        let e = Encoded::of(&m);
        assert_eq!(e.encoded_len(), m.encoded_len());
        let mut buf = Vec::new();
        e.encode_length_delimited(&mut buf).unwrap();
        assert_eq!(
            ServerMessage::decode_length_delimited(buf.as_slice()).unwrap(),
            m
        );
        // Decoded, the bytes come back as they were.
        assert_eq!(Encoded::decode(e.0.clone()).unwrap(), e);
    }
}
