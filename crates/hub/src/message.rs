use std::sync::OnceLock;

use bytes::Bytes;
use tickwire_model::Publication;

/// The wire formats an edge may cache per message, so each is encoded once however many
/// subscribers receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    WsJson = 0,
    Sse = 1,
    Mqtt = 2,
    Binary = 3,
}

/// A stored publication plus its lazily built encodings, shared by all subscribers.
#[derive(Debug)]
pub struct Message {
    pub publication: Publication,
    encoded: [OnceLock<Bytes>; 4],
}

impl Message {
    pub fn new(publication: Publication) -> Message {
        Message {
            publication,
            encoded: Default::default(),
        }
    }

    /// The message in `format`, encoded by `encode` the first time any edge asks.
    pub fn encoded(&self, format: Format, encode: impl FnOnce(&Publication) -> Bytes) -> Bytes {
        self.encoded[format as usize]
            .get_or_init(|| encode(&self.publication))
            .clone()
    }
}
