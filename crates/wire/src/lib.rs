//! The WebSocket JSON protocol (documented in docs/protocol.md): client commands in, replies
//! and pushes out; and the binary publish batch of `POST /v1/publish`. Pure: takes bytes, returns values; the server owns the socket.
//!
//! Pushes are encoded by hand into one buffer per publication and shared by every subscriber,
//! because that is the hot path of fan-out; commands are parsed with serde, except the plain
//! publish a publisher sends in a loop, which has its own scanner ([`scan_publish`]).

mod batch;
mod command;
mod fast_publish;
mod frame;
mod json_batch;

pub use batch::{
    decode_acks, decode_batch, encode_acks_header, encode_item, push_ack, BatchError, BatchItem,
    ACKS_CONTENT_TYPE, ACKS_MAGIC, ACK_LEN, BATCH_CONTENT_TYPE, BATCH_MAGIC,
};
pub use command::{
    parse_command, Command, CommandError, Op, SearchQuery, MAX_COMMAND_BYTES, MAX_MSG_ID_LEN,
    MAX_SEARCH_LIMIT, MAX_SEARCH_SKIP,
};
pub use fast_publish::{scan_publish, ScannedPublish};
pub use frame::{
    encode_disconnect, encode_error, encode_ok, encode_publish_ok, encode_push, ErrorCode,
};
pub use json_batch::{parse_json_batch, scan_json_batch, JsonItem, ScannedItem};
