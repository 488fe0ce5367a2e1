use std::{
    any::Any,
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
};

use tickwire_model::Publication;

/// Cache slots per message: one per wire format in use (JSON push, MQTT, FIX, ...).
const SLOTS: usize = 6;

/// A wire format an edge caches per message, so each is encoded once however many subscribers
/// receive it. Edges register their formats (the hub does not know them); a format registered
/// after every slot is taken still works, uncached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format(usize);

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

impl Format {
    /// A new format slot. Call once per format (keep it in a `OnceLock`): every call takes a
    /// slot. `name` is for debugging only.
    pub fn register(name: &'static str) -> Format {
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        if slot >= SLOTS {
            tracing::warn!(
                format = name,
                "no message cache slot left; this format is encoded per subscriber"
            );
        }
        Format(slot)
    }
}

/// A stored publication plus its lazily built encodings, shared by all subscribers. Each edge
/// caches the value it actually sends (validated text, bytes, a string), so nothing is
/// converted or checked again per subscriber.
pub struct Message {
    pub publication: Publication,
    encoded: [OnceLock<Box<dyn Any + Send + Sync>>; SLOTS],
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
        let Some(slot) = self.encoded.get(format.0) else {
            return encode(&self.publication);
        };
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
