//! The SDK's checks on what the peer sends in a call, from arbitrary text:
//! the `call.signal` payload (`Signal` JSON), a trickled ICE candidate
//! (`parse_remote`), and a session description (`strip_mdns_candidates`,
//! then str0m's SDP parser, then str0m accepting it as an offer or an
//! answer, as the media driver does). `hide_host_addresses`, which the SDK
//! runs on its own descriptions, gets the same text. Never a panic, and:
//! stripping is idempotent and removes whole lines only; hiding is
//! idempotent, keeps every line, and leaves every plain host candidate
//! hidden where the peer's stripping finds it. The input is also spliced
//! into whole descriptions (str0m's own offer and answer, a browser's
//! offer) so the fuzzer reaches past the first line.
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use str0m::Rtc;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::crypto::dtls::DtlsCert;
use str0m::media::{Direction, MediaKind};
use voice_client::media::candidates::{
    RemoteCandidate, hide_host_addresses, parse_remote, strip_mdns_candidates,
};
use voice_client::signaling::{IceCandidate, SdpKind, Signal};

/// One certificate for every `Rtc`: generating a key per input would
/// dominate the run.
static CERT: LazyLock<DtlsCert> = LazyLock::new(|| {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .expect("a DTLS certificate")
});

/// The SDK's media driver's `Rtc`, as it builds it.
fn rtc() -> Rtc {
    Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .set_dtls_cert(CERT.clone())
        .build(Instant::now())
}

fn candidate(line: &str, sdp_mid: Option<String>, sdp_mline_index: Option<u16>) {
    let ice = IceCandidate {
        candidate: line.to_string(),
        sdp_mid,
        sdp_mline_index,
    };
    match parse_remote(&ice) {
        RemoteCandidate::Usable(candidate) => {
            assert_eq!(candidate.proto(), str0m::net::Protocol::Udp);
            // The driver hands a usable candidate to its Rtc.
            rtc().add_remote_candidate(candidate);
        }
        RemoteCandidate::MdnsName(name) => {
            assert!(name.to_ascii_lowercase().ends_with(".local"), "{name:?}");
        }
        RemoteCandidate::Unusable(_) => {}
    }
}

/// Whether `line` is a host candidate in the plain form str0m writes:
/// fields separated by single spaces, five or more (the address is the
/// fifth). Hiding must turn every such line into one the peer strips.
fn plain_host_candidate(line: &str) -> bool {
    let Some(attr) = line.trim_end().strip_prefix("a=") else {
        return false;
    };
    attr.starts_with("candidate:")
        && line.contains(" typ host")
        && !attr.contains("  ")
        && !attr.chars().any(|c| c.is_ascii_whitespace() && c != ' ')
        && attr.split(' ').count() >= 5
}

fn description(sdp: &str, kind: Option<SdpKind>) {
    let (clean, skipped) = strip_mdns_candidates(sdp);
    assert_eq!(
        sdp.split_inclusive('\n').count(),
        clean.split_inclusive('\n').count() + skipped,
        "stripping removes whole lines"
    );
    assert_eq!(
        strip_mdns_candidates(&clean),
        (clean.clone(), 0),
        "stripping is idempotent"
    );

    let name = "0e8c1f3a-6b2d-4c5e-9f7a-1d2b3c4d5e6f.local";
    let hidden = hide_host_addresses(sdp, name);
    assert_eq!(
        hidden.split_inclusive('\n').count(),
        sdp.split_inclusive('\n').count(),
        "hiding keeps every line"
    );
    assert_eq!(
        hide_host_addresses(&hidden, name),
        hidden,
        "hiding is idempotent"
    );
    let hosts = sdp
        .split_inclusive('\n')
        .filter(|line| plain_host_candidate(line))
        .count();
    assert!(
        strip_mdns_candidates(&hidden).1 >= hosts,
        "the peer strips every hidden host candidate"
    );

    if kind != Some(SdpKind::Answer)
        && let Ok(offer) = SdpOffer::from_sdp_string(&clean)
    {
        let _ = offer.to_sdp_string();
        // The answerer's path.
        let _ = rtc().sdp_api().accept_offer(offer);
    }
    if kind != Some(SdpKind::Offer)
        && let Ok(answer) = SdpAnswer::from_sdp_string(&clean)
    {
        let _ = answer.to_sdp_string();
        // The offerer's path: an answer to the offer it made.
        let mut rtc = rtc();
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        if let Some((_, pending)) = change.apply() {
            let _ = rtc.sdp_api().accept_answer(pending, answer);
        }
    }
}

/// Whole descriptions for the fuzzer's text to land in, so the parser
/// and `accept_offer`/`accept_answer` see more than the first line: an
/// offer and an answer as str0m writes them, and an offer as a browser
/// writes it (with an mDNS host candidate).
static TEMPLATES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut offerer = rtc();
    let mut change = offerer.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, _) = change.apply().expect("an offer");
    let offer = offer.to_sdp_string();
    let answer = rtc()
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer).expect("str0m reads its offer"))
        .expect("an answer");
    vec![offer, answer.to_sdp_string(), BROWSER_OFFER.to_string()]
});

const BROWSER_OFFER: &str = "v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS\r
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=candidate:1 1 udp 2122260223 8f1c5a2e-1b7e-4d8e-9a3c-4b0f1e2d3c4a.local 54400 typ host generation 0 network-id 1\r
a=candidate:2 1 udp 1686052607 203.0.113.7 54400 typ srflx raddr 0.0.0.0 rport 0 generation 0 network-id 1\r
a=ice-ufrag:Xk3f\r
a=ice-pwd:9pJc2qGZL4k0Ytr8wW3hQ1bA\r
a=ice-options:trickle\r
a=fingerprint:sha-256 1F:2E:3D:4C:5B:6A:79:88:97:A6:B5:C4:D3:E2:F1:00:1F:2E:3D:4C:5B:6A:79:88:97:A6:B5:C4:D3:E2:F1:00\r
a=setup:actpass\r
a=mid:0\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=sendrecv\r
a=msid:- 1c2d3e4f-5a6b-7c8d-9e0f-a1b2c3d4e5f6\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=rtpmap:0 PCMU/8000\r
a=ssrc:1001 cname:4TOk42mSjXCkVIa6\r
";

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick a template and the line the rest of the
    // input goes in front of (the whole input is also tried on its own).
    if let [pick, at, rest @ ..] = data
        && let Ok(text) = std::str::from_utf8(rest)
    {
        let template = &TEMPLATES[usize::from(*pick) % TEMPLATES.len()];
        let lines: Vec<&str> = template.split_inclusive('\n').collect();
        let at = usize::from(*at) % (lines.len() + 1);
        let spliced = [&lines[..at].concat(), text, &lines[at..].concat()].concat();
        description(&spliced, None);
        candidate(&format!("candidate:{text}"), None, None);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The payload of a call.signal, as the SDK's router reads it.
    match serde_json::from_str::<Signal>(text) {
        Ok(Signal::Sdp(sdp)) => description(&sdp.sdp, Some(sdp.kind)),
        Ok(Signal::Candidate(Some(ice))) => {
            candidate(&ice.candidate, ice.sdp_mid, ice.sdp_mline_index)
        }
        Ok(Signal::Candidate(None)) | Err(_) => {}
    }
    // The same text as a bare candidate line and as a bare description.
    candidate(text, Some("0".into()), Some(0));
    description(text, None);
});
