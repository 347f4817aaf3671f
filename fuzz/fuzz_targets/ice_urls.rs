//! ICE server URLs from arbitrary text: `stun:` URLs (an admin's, checked
//! by the server) and `turn:` URLs (what `GET /v1/ice-servers` hands the
//! SDK). Never a panic; a URL that parses has a host and a non-zero port,
//! and its canonical form (scheme, `authority()`, transport) parses to the
//! same URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_core::ice_url::{StunUrl, TurnTransport, TurnUrl};

/// The parser's length limit: a canonical form past it is refused for
/// its length alone.
const MAX_URL_BYTES: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    // The schemes as prefixes too: without a sanitizer's memcmp hooks the
    // fuzzer rarely finds them by itself.
    check(&format!("stun:{text}"));
    check(&format!("turn:{text}"));
});

fn check(text: &str) {
    if let Ok(url) = StunUrl::parse(text) {
        assert!(!url.host.is_empty() && url.port != 0, "{url:?}");
        let canonical = format!("stun:{}", url.authority());
        if canonical.len() <= MAX_URL_BYTES {
            assert_eq!(StunUrl::parse(&canonical), Ok(url), "{canonical}");
        }
    }
    if let Ok(url) = TurnUrl::parse(text) {
        assert!(!url.host.is_empty() && url.port != 0, "{url:?}");
        let transport = match url.transport {
            TurnTransport::Udp => "udp",
            TurnTransport::Tcp => "tcp",
        };
        let canonical = format!("turn:{}?transport={transport}", url.authority());
        if canonical.len() <= MAX_URL_BYTES {
            assert_eq!(TurnUrl::parse(&canonical), Ok(url), "{canonical}");
        }
    }
}
