use std::{any::Any, sync::OnceLock};

use tickwire_model::Publication;

/// The wire formats an edge may cache per message, so each is encoded once however many
/// subscribers receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The JSON push text, the same for WebSocket frames and SSE events.
    Json = 0,
    Mqtt = 1,
    Fix = 2,
}

/// A stored publication plus its lazily built encodings, shared by all subscribers. Each edge
/// caches the value it actually sends (validated text, bytes, a string), so nothing is
/// converted or checked again per subscriber.
pub struct Message {
    pub publication: Publication,
    encoded: [OnceLock<Box<dyn Any + Send + Sync>>; 3],
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("publication", &self.publication)
            .finish_non_exhaustive()
    }
}

impl Message {
    pub fn new(publication: Publication) -> Message {
        Message {
            publication,
            encoded: Default::default(),
        }
    }

    /// The message in `format`, built by `encode` the first time any edge asks and cloned
    /// (a reference count) for every later subscriber. One format slot holds one type; an
    /// edge asking a slot for another type gets a fresh, uncached value.
    pub fn encoded<T: Clone + Send + Sync + 'static>(
        &self,
        format: Format,
        encode: impl FnOnce(&Publication) -> T,
    ) -> T {
        let slot = &self.encoded[format as usize];
        if let Some(cached) = slot.get() {
            if let Some(v) = cached.downcast_ref::<T>() {
                return v.clone();
            }
            return encode(&self.publication);
        }
        let v = encode(&self.publication);
        // A racing subscriber may have set it first; both values are the same encoding.
        let _ = slot.set(Box::new(v.clone()));
        v
    }
}
