#![no_main]
//! Any bytes a client POSTs as a binary publish batch must split into items or give a typed
//! error; what splits must re-encode to exactly the same bytes (no byte skipped or invented).
//! Each item's data then goes through the schema check, whose hand-written fast path must
//! agree with serde's reader on every input. The JSON body's hand-written reader likewise:
//! whatever it reads, serde reads as the same items; and where the edge hands the candle
//! projection the spans of an item's fields, they give what reading the text gives.
use libfuzzer_sys::fuzz_target;
use tickwire_feed::fields::{self, Kind};
use tickwire_model::{
    validate_schema_fields, validate_schema_json, validate_schema_json_by_serde, Schema,
};
use tickwire_wire::{decode_batch, encode_item, parse_json_batch, scan_json_batch, BATCH_MAGIC};

fuzz_target!(|data: &[u8]| {
    for schema in [Schema::Quote, Schema::Trade] {
        assert_eq!(
            validate_schema_json(schema, data),
            validate_schema_json_by_serde(schema, data)
        );
    }
    for body in [data.to_vec(), [BATCH_MAGIC.as_slice(), data].concat()] {
        match decode_batch(&body, 10_000) {
            Ok(items) => {
                let mut again = BATCH_MAGIC.to_vec();
                for i in &items {
                    assert!(encode_item(&mut again, i).is_some());
                }
                assert_eq!(again, body);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    let _ = tickwire_wire::decode_acks(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for single in [true, false] {
            if let Some(items) = scan_json_batch(text, single) {
                let by_serde =
                    parse_json_batch(text, single).expect("serde reads what the fast reader read");
                let by_serde: Vec<_> = by_serde.iter().map(|i| i.borrowed()).collect();
                let read: Vec<_> = items.iter().map(|s| s.item).collect();
                assert_eq!(read, by_serde);
                for s in &items {
                    if let Some(f) = &s.fields {
                        for schema in [Schema::Quote, Schema::Trade] {
                            assert_eq!(
                                validate_schema_fields(schema, f),
                                validate_schema_json(schema, s.item.data)
                            );
                        }
                        let data = s.item.data;
                        for (schema, kind) in
                            [(Schema::Quote, Kind::Quote), (Schema::Trade, Kind::Trade)]
                        {
                            if let Some(spans) = f.spans(data, schema) {
                                assert_eq!(
                                    fields::from_spans(kind, &spans, data),
                                    fields::read(kind, data)
                                );
                            }
                        }
                    }
                }
            }
        }
    }
});
