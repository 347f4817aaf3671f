//! Decoding what crosses the WebSocket from arbitrary bytes: server events
//! and client messages never panic, and an event that decodes re-encodes
//! to something that decodes to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_core::wire::ServerEvent;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = ServerEvent::decode(text) {
        let again = ServerEvent::decode(&event.encode()).expect("re-encoded events decode");
        assert_eq!(again, event);
    }
    let _ = voice_core::wire::ClientMessage::decode(text);
    let _ = text.parse::<voice_core::model::Conversation>();
});
