//! The protobuf form of Tickwire's protocol model (`proto/tickwire/v1/tickwire.proto`), shared
//! by the gRPC edge and the binary WebSocket encoding: the generated messages, the encoded
//! descriptor (for reflection), and the conversions between typed payloads and the JSON a
//! namespace stores. Pure: bytes and values in, bytes and values out.
//!
//! Stored data stays JSON, byte for byte as published, whatever edge it came in on; a typed
//! payload is a view of it. Delivering, [`payload_of`] reads the JSON into the namespace's
//! typed message when that carries every field exactly, and hands the JSON text on otherwise.
//! Publishing, [`json_of`] writes a typed payload as the JSON its namespace expects (decimals
//! stay the strings they were sent as).

mod convert;
mod encoded;

pub use convert::{encode_push, json_of, kind_of, payload_of, push_of, PayloadKind};
pub use encoded::Encoded;

/// The generated messages of package `tickwire.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!("gen/tickwire.v1.rs");
}

/// The encoded `FileDescriptorSet` of `tickwire.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/tickwire.v1.bin");

/// A typed payload that cannot become its namespace's JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("the item has no payload")]
    NoPayload,
    #[error(
        "a {given} payload cannot be published to namespace `{namespace}` (it takes {expected})"
    )]
    WrongKind {
        given: &'static str,
        expected: &'static str,
        namespace: String,
    },
    #[error("{field} {value:?} is not a decimal string within the exact range")]
    NotDecimal { field: &'static str, value: String },
    #[error("{0}")]
    Invalid(String),
}
