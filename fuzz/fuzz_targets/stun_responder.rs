//! The STUN responder's core faces the internet: arbitrary bytes from any
//! address never panic it, and whatever it answers parses as a Binding
//! success response for the same transaction with the sender's address.
//! The response parser gets the same bytes.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use voice_core::stun::{BindingResponse, answer_binding_request, parse_binding_response};

/// The sender's address from the first 19 bytes (family, 16 address
/// bytes, port), the datagram from the rest.
fn split(data: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (head, datagram) = data.split_at_checked(19)?;
    let octets: [u8; 16] = head[1..17].try_into().ok()?;
    let port = u16::from_be_bytes([head[17], head[18]]);
    let ip = if head[0] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Some((SocketAddr::new(ip, port), datagram))
}

fn check(datagram: &[u8], from: SocketAddr) {
    let _ = parse_binding_response(datagram);
    if let Ok(answer) = answer_binding_request(datagram, from) {
        let transaction_id: [u8; 12] = datagram[8..20]
            .try_into()
            .expect("an answered request has a full header");
        assert_eq!(
            parse_binding_response(&answer),
            Ok(BindingResponse {
                transaction_id,
                mapped: from
            })
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, SocketAddr::from(([192, 0, 2, 1], 3478)));
    if let Some((from, datagram)) = split(data) {
        check(datagram, from);
    }
});
