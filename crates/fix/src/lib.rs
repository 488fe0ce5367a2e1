//! FIX 4.4 engine with no I/O: codec, session state machine and market-data messages.
//!
//! The crate takes bytes and time in and gives bytes and actions out; sockets, clocks and
//! tasks belong to the transport that drives it. The one exception is [`FileSeqStore`], which
//! persists sequence numbers, kept in its own module.
//!
//! * Codec: [`frame`] finds a message boundary in a byte buffer (`Incomplete` vs invalid),
//!   [`RawMessage`] parses the header and borrows field values from the buffer, [`encode`]
//!   writes BodyLength and CheckSum.
//! * Market data: [`md`] has typed V/W/X/Y messages.
//! * Session: [`Session`] is a pure state machine, `(state, event, now) -> Vec<Action>`.

pub mod decimal;
pub mod encode;
pub mod error;
pub mod field;
pub mod frame;
pub mod md;
pub mod message;
pub mod session;
pub mod store;
pub mod tags;
pub mod time;

pub use decimal::Decimal;
pub use encode::{encode, AppMessage, FieldWriter, Header, RawBody};
pub use error::{Error, Result};
pub use field::{Field, FieldIter};
pub use frame::{checksum, find_message_start, frame, Frame, DEFAULT_MAX_MESSAGE_SIZE, SOH};
pub use message::{Message, RawMessage};
pub use session::{
    Action, DisconnectReason, ResendMode, Role, Session, SessionConfig, SessionEvent, SessionState,
};
pub use store::{file::FileSeqStore, MemorySeqStore, SeqNums, SeqStore};
pub use time::Timestamp;
