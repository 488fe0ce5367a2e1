//! Decoding arbitrary bytes never panics, and whatever decodes re-encodes to the same bytes.
//! The input is also used as a structured record (checksums make valid records unreachable by
//! blind mutation), so the encode -> decode direction is fuzzed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_log::record::{decode, encode, DecodeError};
use tickwire_log::Entry;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(d) => {
            assert!(d.encoded_len <= data.len());
            let mut out = Vec::new();
            encode(
                d.offset,
                &Entry {
                    timestamp: d.timestamp,
                    key: d.key,
                    value: d.value,
                },
                &mut out,
            );
            assert_eq!(&out[..], &data[..d.encoded_len]);
        }
        // Incomplete must mean "more bytes could help".
        Err(DecodeError::Incomplete { needed }) => assert!(needed > data.len()),
        Err(DecodeError::Corrupt(_)) => {}
    }

    if let Some((head, payload)) = data.split_first_chunk::<17>() {
        let offset = u64::from_le_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ]);
        let timestamp = u64::from_le_bytes([
            head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
        ]);
        let key_len = usize::from(head[16]).min(payload.len());
        let (key, value) = payload.split_at(key_len);
        let mut buf = Vec::new();
        encode(
            offset,
            &Entry {
                timestamp,
                key,
                value,
            },
            &mut buf,
        );
        let d = decode(&buf).ok();
        assert_eq!(
            d.map(|d| (d.offset, d.timestamp, d.key, d.value, d.encoded_len)),
            Some((offset, timestamp, key, value, buf.len()))
        );
        // Every strict prefix is Incomplete, never Corrupt or a different record.
        let cut = usize::from(head[0]) % buf.len();
        assert!(matches!(
            decode(&buf[..cut]),
            Err(DecodeError::Incomplete { .. })
        ));
    }
});
