#![no_main]
//! Any bytes a client sends as a WebSocket text frame must yield a command or a typed error,
//! and whatever the plain-publish scanner reads, the general parser reads the same.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = tickwire_wire::parse_command(data);
    match &parsed {
        Ok(cmd) => {
            // A parsed publish keeps its data as valid JSON text, stored as-is in the log.
            if let tickwire_wire::Op::Publish { data, .. } = &cmd.op {
                assert!(serde_json::from_str::<serde_json::Value>(data).is_ok());
            }
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
    let Some(p) = std::str::from_utf8(data)
        .ok()
        .and_then(tickwire_wire::scan_publish)
    else {
        return;
    };
    match parsed {
        Ok(tickwire_wire::Command {
            id,
            op: tickwire_wire::Op::Publish {
                channel,
                msg_id,
                data,
            },
        }) => {
            assert_eq!(id, p.id);
            assert_eq!(channel.as_str(), p.item.item.channel);
            assert_eq!(msg_id.as_deref(), p.item.item.msg_id);
            assert_eq!(data.as_bytes(), p.item.item.data);
        }
        // The scanner leaves the channel name to its caller, which asks the general parser
        // for the error when the name is bad.
        Ok(other) => panic!("scanned a publish, parsed {other:?}"),
        Err(e) => assert_eq!(e.code, tickwire_wire::ErrorCode::BadChannel),
    }
});
