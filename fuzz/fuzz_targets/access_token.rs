//! Verifying arbitrary strings as access tokens: never a panic, never
//! accepted (the fuzzer cannot know the key).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use voice_core::auth::TokenIssuer;
use voice_server::auth::tokens::{ServerSecret, Tokens};

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| {
    Tokens::new(
        &ServerSecret::from_bytes([42; 32]),
        "https://voice.fuzz".into(),
        "voice".into(),
        600,
    )
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert!(TOKENS.verify_access(text).is_err());
});
