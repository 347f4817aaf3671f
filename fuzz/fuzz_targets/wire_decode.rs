//! Decoding what crosses the WebSocket from arbitrary bytes: server events
//! (what the SDK decodes) and client messages (what the server decodes)
//! never panic. An event that decodes re-encodes to something that decodes
//! to the same event. A client message that decodes keeps a signal
//! payload byte for byte, and what the server would relay from it is an
//! event the other device decodes to the same call and payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_core::ids::SessionId;
use voice_core::model::Conversation;
use voice_core::wire::{ClientMessage, Event, ServerEvent};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = ServerEvent::decode(text) {
        let again = ServerEvent::decode(&event.encode()).expect("re-encoded events decode");
        assert_eq!(again, event);
    }
    match ClientMessage::decode(text) {
        Ok(ClientMessage::Typing { conversation }) => {
            assert_eq!(
                conversation.to_string().parse::<Conversation>(),
                Ok(conversation)
            );
        }
        Ok(ClientMessage::CallSignal { call_id, payload }) => {
            assert!(
                text.contains(payload.get()),
                "the payload is the sent bytes"
            );
            // The server relays only an object payload (its shape check
            // reads it as a JSON map first).
            if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(payload.get())
                .is_err()
            {
                return;
            }
            let relayed = ServerEvent::new(
                None,
                Event::CallSignal {
                    call_id,
                    from: SessionId(*call_id.as_uuid()),
                    payload: payload.clone(),
                },
            );
            match ServerEvent::decode(&relayed.encode()) {
                Ok(ServerEvent {
                    event:
                        Event::CallSignal {
                            call_id: got,
                            payload: got_payload,
                            ..
                        },
                    ..
                }) => {
                    assert_eq!(got, call_id);
                    assert_eq!(got_payload, payload);
                }
                other => panic!("a relayed signal decodes as one: {other:?}"),
            }
        }
        _ => {}
    }
    if let Ok(conversation) = text.parse::<Conversation>() {
        assert_eq!(conversation.to_string().parse(), Ok(conversation));
    }
});
