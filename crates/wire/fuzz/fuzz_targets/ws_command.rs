#![no_main]
//! Any bytes a client sends as a WebSocket text frame must yield a command or a typed error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match tickwire_wire::parse_command(data) {
        Ok(cmd) => {
            // Whatever the plain-publish fast path accepted, the general parser reads the same.
            assert_eq!(tickwire_wire::parse_command_general(data).as_ref(), Ok(&cmd));
            // A parsed publish keeps its data as valid JSON text, stored as-is in the log.
            if let tickwire_wire::Op::Publish { data, .. } = cmd.op {
                assert!(serde_json::from_str::<serde_json::Value>(&data).is_ok());
            }
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
});
