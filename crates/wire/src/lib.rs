//! The WebSocket JSON protocol (documented in docs/protocol.md): client commands in, replies
//! and pushes out. Pure: takes bytes, returns values; the server owns the socket.
//!
//! Pushes are encoded by hand into one buffer per publication and shared by every subscriber,
//! because that is the hot path of fan-out; commands are rare and parsed with serde.

mod command;
mod frame;

pub use command::{parse_command, Command, CommandError, Op, MAX_COMMAND_BYTES};
pub use frame::{encode_disconnect, encode_error, encode_ok, encode_push, ErrorCode};
