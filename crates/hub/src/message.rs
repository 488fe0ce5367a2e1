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
        encode: impl Fn(&Publication) -> T,
    ) -> T {
        self.with_encoded(format, encode, T::clone)
    }

    /// [`Message::encoded`] lent to `use_` instead of cloned: an edge that copies the
    /// encoding into its own buffer takes no reference count. A count shared by every
    /// subscriber of a message is one cache line that every core's clone and drop writes
    /// (bench/results/fanout.md, "Push frames written by the edge").
    pub fn with_encoded<T: Send + Sync + 'static, R>(
        &self,
        format: Format,
        encode: impl Fn(&Publication) -> T,
        use_: impl FnOnce(&T) -> R,
    ) -> R {
        let Some(slot) = self.encoded.get(format.0) else {
            return use_(&encode(&self.publication));
        };
        if slot.get().is_none() {
            // A racing subscriber may set it first; both values are the same encoding.
            let _ = slot.set(Box::new(encode(&self.publication)));
        }
        match slot.get().and_then(|v| v.downcast_ref::<T>()) {
            Some(v) => use_(v),
            None => use_(&encode(&self.publication)),
        }
    }
}
