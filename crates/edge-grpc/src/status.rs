//! Refusals as gRPC statuses: the code from the gateway's one table (`Refusal::grpc_code`),
//! the sentence as the message, and the protocol's error code in the `tickwire-code`
//! trailer, so a client tells `epoch_mismatch` from `offset_out_of_range` whatever status
//! they share.

use tickwire_gateway::{ErrorCode, Refusal};
use tonic::{metadata::MetadataMap, Code, Status};

/// The trailer that carries the protocol's error code (`bad_data`, `epoch_mismatch`, ...).
pub const CODE_TRAILER: &str = "tickwire-code";

/// The name of the trailer holding the protocol's error code.
pub fn code_trailer() -> &'static str {
    CODE_TRAILER
}

/// The status for a refusal.
pub(crate) fn refused(r: &Refusal) -> Status {
    let mut meta = MetadataMap::new();
    if let Ok(v) = r.code.as_str().parse() {
        meta.insert(CODE_TRAILER, v);
    }
    let text = tickwire_model::layout::redact_paths(&r.reason).into_owned();
    Status::with_metadata(Code::from_i32(r.grpc_code()), text, meta)
}

/// A refusal of `code` with `reason`, as a status.
pub(crate) fn status(code: ErrorCode, reason: impl Into<String>) -> Status {
    refused(&Refusal::new(code, reason))
}
