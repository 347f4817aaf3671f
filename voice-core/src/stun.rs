//! STUN (RFC 5389) Binding messages over `stun_codec`: the request the
//! checker sends, the response it reads, and the pure core of the
//! server's built-in responder. Plain functions from bytes to bytes; no
//! socket, clock or randomness (transaction ids come in as arguments).
//!
//! Everything here may face the internet, so every input has an answer
//! and no input panics. Before the codec sees a datagram, its framing is
//! checked by hand ([`MAX_MESSAGE_LEN`], the two zero bits, the magic
//! cookie, a length field that matches the datagram and is a multiple of
//! four): `stun_codec` is then only given well-framed messages of bounded
//! size (its FINGERPRINT check computes a `u16` length that would
//! overflow on messages over 64 KiB).
//!
//! What is accepted:
//! - [`parse_binding_response`]: Binding success responses. The mapped
//!   address is XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS when a response has
//!   no XOR-MAPPED-ADDRESS (RFC 3489 servers; browsers fall back the same
//!   way). A Binding error response is [`StunError::ErrorResponse`].
//! - [`answer_binding_request`]: Binding requests. It answers like a
//!   plain RFC 5389 server without credentials: MESSAGE-INTEGRITY and
//!   USERNAME are ignored. A request with an unknown
//!   comprehension-required attribute is refused (a full server would
//!   answer 420; ours drops it), as is one whose FINGERPRINT is wrong.

use std::net::SocketAddr;

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::Attribute as _;
use stun_codec::rfc5389::Attribute;
use stun_codec::rfc5389::attributes::{
    ErrorCode, Fingerprint, MappedAddress, Software, XorMappedAddress,
};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};

/// The STUN header: type, length, magic cookie, transaction id.
pub const HEADER_LEN: usize = 20;

/// The largest message accepted. STUN over UDP should fit the path MTU
/// (RFC 5389 section 7.1); real Binding messages are a few hundred bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The SOFTWARE attribute of the responder's answers.
pub const SOFTWARE: &str = "voice";

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Reason phrases of error responses are cut to this many characters.
const MAX_REASON_CHARS: usize = 128;

/// Why a datagram was not the STUN message wanted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Shorter than a STUN header, or than its own length field says.
    #[error("truncated STUN message")]
    Truncated,
    /// Longer than [`MAX_MESSAGE_LEN`].
    #[error("STUN message longer than {MAX_MESSAGE_LEN} bytes")]
    TooLong,
    /// Not STUN at all: the leading bits, the magic cookie or the length
    /// field are wrong, or bytes follow the message.
    #[error("not a STUN message")]
    NotStun,
    /// Framed like STUN, but the codec refused it (a bad attribute, a
    /// FINGERPRINT that does not match, ...).
    #[error("malformed STUN message")]
    Malformed,
    /// A comprehension-required attribute this code does not know.
    #[error("unknown comprehension-required STUN attribute 0x{0:04x}")]
    UnknownAttribute(u16),
    /// A well-formed message, but not the class and method wanted.
    #[error("unexpected STUN {class} (method 0x{method:03x})")]
    Unexpected { class: &'static str, method: u16 },
    /// A Binding error response (its transaction id, for matching).
    #[error("STUN error response {code}: {reason}")]
    ErrorResponse {
        transaction_id: [u8; 12],
        code: u16,
        reason: String,
    },
    /// A Binding success response without XOR-MAPPED-ADDRESS or
    /// MAPPED-ADDRESS.
    #[error("STUN response without a mapped address")]
    NoMappedAddress,
    /// The answer could not be encoded (not expected to happen).
    #[error("could not encode a STUN message")]
    Encode,
}

/// What a Binding success response says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingResponse {
    pub transaction_id: [u8; 12],
    /// Where the server saw the request come from.
    pub mapped: SocketAddr,
}

/// A Binding request: the 20-byte header alone, no attributes (no
/// FINGERPRINT), like the requests browsers send to STUN servers. Send
/// the same bytes again to retransmit.
pub fn binding_request(transaction_id: [u8; 12]) -> Vec<u8> {
    let message = Message::<Attribute>::new(
        MessageClass::Request,
        BINDING,
        TransactionId::new(transaction_id),
    );
    match MessageEncoder::new().encode_into_bytes(message) {
        Ok(bytes) => bytes,
        // Unreachable: a message without attributes has no field that
        // could fail to encode. Written out by hand all the same, so that
        // this function cannot panic.
        Err(_) => header(0x0001, transaction_id),
    }
}

/// Reads a Binding success response. Any other datagram is an `Err`.
///
/// The transaction id is returned, not checked: matching it to a request
/// is the caller's business (see [`crate::stun_check::StunProbe`]).
pub fn parse_binding_response(data: &[u8]) -> Result<BindingResponse, StunError> {
    let message = decode(data)?;
    let transaction_id = *message.transaction_id().as_bytes();
    match (message.class(), message.method()) {
        (MessageClass::SuccessResponse, BINDING) => {}
        (MessageClass::ErrorResponse, BINDING) => {
            return Err(match message.get_attribute::<ErrorCode>() {
                Some(error) => StunError::ErrorResponse {
                    transaction_id,
                    code: error.code(),
                    reason: error
                        .reason_phrase()
                        .chars()
                        .take(MAX_REASON_CHARS)
                        .collect(),
                },
                // An error response must carry ERROR-CODE (RFC 5389
                // section 7.3.4).
                None => StunError::Malformed,
            });
        }
        (class, method) => return Err(unexpected(class, method.as_u16())),
    }
    // RFC 5389 section 7.3.3: a success response with an unknown
    // comprehension-required attribute is discarded.
    refuse_unknown_required(&message)?;
    let mapped = message
        .get_attribute::<XorMappedAddress>()
        .map(XorMappedAddress::address)
        .or_else(|| {
            message
                .get_attribute::<MappedAddress>()
                .map(MappedAddress::address)
        })
        .ok_or(StunError::NoMappedAddress)?;
    Ok(BindingResponse {
        transaction_id,
        mapped,
    })
}

/// The built-in responder's core: a Binding request from `from` gets a
/// Binding success response with the same transaction id,
/// XOR-MAPPED-ADDRESS = `from` (IPv4 or IPv6), SOFTWARE [`SOFTWARE`], and
/// FINGERPRINT when the request had one. Anything else is an `Err`, for
/// the server to drop and count.
pub fn answer_binding_request(data: &[u8], from: SocketAddr) -> Result<Vec<u8>, StunError> {
    let request = decode(data)?;
    if (request.class(), request.method()) != (MessageClass::Request, BINDING) {
        return Err(unexpected(request.class(), request.method().as_u16()));
    }
    refuse_unknown_required(&request)?;
    let mut response = Message::<Attribute>::new(
        MessageClass::SuccessResponse,
        BINDING,
        request.transaction_id(),
    );
    response.add_attribute(XorMappedAddress::new(from));
    response.add_attribute(Software::new_static(SOFTWARE));
    if request.get_attribute::<Fingerprint>().is_some() {
        let fingerprint = Fingerprint::new(&response).map_err(|_| StunError::Encode)?;
        response.add_attribute(fingerprint);
    }
    MessageEncoder::new()
        .encode_into_bytes(response)
        .map_err(|_| StunError::Encode)
}

/// Checks the framing by hand, then decodes.
fn decode(data: &[u8]) -> Result<Message<Attribute>, StunError> {
    check_framing(data)?;
    match MessageDecoder::<Attribute>::new().decode_from_bytes(data) {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(_)) | Err(_) => Err(StunError::Malformed),
    }
}

fn check_framing(data: &[u8]) -> Result<(), StunError> {
    if data.len() > MAX_MESSAGE_LEN {
        return Err(StunError::TooLong);
    }
    let Some(header) = data.get(..HEADER_LEN) else {
        return Err(StunError::Truncated);
    };
    // The two most significant bits of every STUN message are zero.
    if header[0] & 0xC0 != 0 || header[4..8] != MAGIC_COOKIE {
        return Err(StunError::NotStun);
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let body = data.len() - HEADER_LEN;
    if length > body {
        return Err(StunError::Truncated);
    }
    // Attributes are padded to four bytes, so the length is a multiple of
    // four; a datagram carries exactly one message.
    if length < body || !length.is_multiple_of(4) {
        return Err(StunError::NotStun);
    }
    Ok(())
}

fn refuse_unknown_required(message: &Message<Attribute>) -> Result<(), StunError> {
    match message
        .unknown_attributes()
        .map(|attribute| attribute.get_type())
        .find(|kind| kind.is_comprehension_required())
    {
        Some(kind) => Err(StunError::UnknownAttribute(kind.as_u16())),
        None => Ok(()),
    }
}

fn unexpected(class: MessageClass, method: u16) -> StunError {
    let class = match class {
        MessageClass::Request => "request",
        MessageClass::Indication => "indication",
        MessageClass::SuccessResponse => "success response",
        MessageClass::ErrorResponse => "error response",
    };
    StunError::Unexpected { class, method }
}

/// A header-only message of the given type.
fn header(message_type: u16, transaction_id: [u8; 12]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    bytes.extend_from_slice(&message_type.to_be_bytes());
    bytes.extend_from_slice(&0u16.to_be_bytes());
    bytes.extend_from_slice(&MAGIC_COOKIE);
    bytes.extend_from_slice(&transaction_id);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn encode(message: Message<Attribute>) -> Vec<u8> {
        MessageEncoder::new().encode_into_bytes(message).unwrap()
    }

    fn message(class: MessageClass, attributes: Vec<Attribute>) -> Message<Attribute> {
        let mut message = Message::new(class, BINDING, TransactionId::new(TID));
        for attribute in attributes {
            message.add_attribute(attribute);
        }
        message
    }

    #[test]
    fn binding_request_is_the_rfc_header() {
        let bytes = binding_request(TID);
        assert_eq!(bytes, header(0x0001, TID));
        assert_eq!(
            &bytes[..8],
            &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]
        );
        assert_eq!(&bytes[8..], &TID);
    }

    #[test]
    fn round_trip_ipv4_and_ipv6() {
        for from in [
            "203.0.113.7:54321",
            "[2001:db8::1]:3478",
            "[::ffff:1.2.3.4]:1",
        ] {
            let from: SocketAddr = from.parse().unwrap();
            let answer = answer_binding_request(&binding_request(TID), from).unwrap();
            let response = parse_binding_response(&answer).unwrap();
            assert_eq!(
                response,
                BindingResponse {
                    transaction_id: TID,
                    mapped: from
                }
            );
        }
    }

    #[test]
    fn answer_carries_software_and_mirrors_fingerprint() {
        let from: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let decode_answer = |answer: &[u8]| {
            MessageDecoder::<Attribute>::new()
                .decode_from_bytes(answer)
                .unwrap()
                .unwrap()
        };

        let plain = decode_answer(&answer_binding_request(&binding_request(TID), from).unwrap());
        assert_eq!(
            plain.get_attribute::<Software>().map(Software::description),
            Some(SOFTWARE)
        );
        assert!(plain.get_attribute::<Fingerprint>().is_none());

        let mut request = message(MessageClass::Request, vec![]);
        request.add_attribute(Fingerprint::new(&request).unwrap());
        let answer = answer_binding_request(&encode(request), from).unwrap();
        let with_fingerprint = decode_answer(&answer);
        assert!(with_fingerprint.get_attribute::<Fingerprint>().is_some());
        assert_eq!(parse_binding_response(&answer).unwrap().mapped, from);
    }

    #[test]
    fn responder_refuses_everything_but_binding_requests() {
        let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let answer = answer_binding_request(&binding_request(TID), from).unwrap();
        // A response is not a request: no reflection loops between two
        // responders.
        assert_eq!(
            answer_binding_request(&answer, from),
            Err(StunError::Unexpected {
                class: "success response",
                method: 1
            })
        );
        let indication = encode(message(MessageClass::Indication, vec![]));
        assert!(matches!(
            answer_binding_request(&indication, from),
            Err(StunError::Unexpected { .. })
        ));
        let mut allocate = header(0x0003, TID);
        assert!(matches!(
            answer_binding_request(&allocate, from),
            Err(StunError::Unexpected { method: 3, .. })
        ));
        allocate[4] = 0;
        assert_eq!(
            answer_binding_request(&allocate, from),
            Err(StunError::NotStun)
        );
    }

    #[test]
    fn framing_errors() {
        let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let request = binding_request(TID);
        for cut in 0..request.len() {
            assert_eq!(
                answer_binding_request(&request[..cut], from),
                Err(StunError::Truncated)
            );
        }
        let mut trailing = request.clone();
        trailing.extend_from_slice(&[0; 4]);
        assert_eq!(
            answer_binding_request(&trailing, from),
            Err(StunError::NotStun)
        );

        // The length field says 4 bytes follow; none do.
        let mut short = request.clone();
        short[3] = 4;
        assert_eq!(
            answer_binding_request(&short, from),
            Err(StunError::Truncated)
        );

        let mut leading_bits = request.clone();
        leading_bits[0] |= 0x80;
        assert_eq!(
            answer_binding_request(&leading_bits, from),
            Err(StunError::NotStun)
        );

        let mut unaligned = request.clone();
        unaligned[3] = 2;
        unaligned.extend_from_slice(&[0; 2]);
        assert_eq!(
            answer_binding_request(&unaligned, from),
            Err(StunError::NotStun)
        );

        let huge = vec![0; MAX_MESSAGE_LEN + 1];
        assert_eq!(answer_binding_request(&huge, from), Err(StunError::TooLong));
        assert_eq!(parse_binding_response(&huge), Err(StunError::TooLong));
        assert_eq!(
            parse_binding_response(b"GET / HTTP/1.1\r\n\r\n.."),
            Err(StunError::NotStun)
        );
    }

    #[test]
    fn bad_fingerprint_and_bad_attributes_are_malformed() {
        let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let mut request = message(MessageClass::Request, vec![]);
        request.add_attribute(Fingerprint::new(&request).unwrap());
        let mut bytes = encode(request);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            answer_binding_request(&bytes, from),
            Err(StunError::Malformed)
        );

        // XOR-MAPPED-ADDRESS with address family 7.
        let mut bytes = header(0x0101, TID);
        bytes[3] = 12;
        bytes.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x07, 0, 0, 1, 2, 3, 4]);
        assert_eq!(parse_binding_response(&bytes), Err(StunError::Malformed));
    }

    #[test]
    fn unknown_comprehension_required_attributes_are_refused() {
        let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
        // PRIORITY (0x0024, ICE) is comprehension-required and not RFC 5389.
        let mut bytes = header(0x0001, TID);
        bytes[3] = 8;
        bytes.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0, 0, 0, 1]);
        assert_eq!(
            answer_binding_request(&bytes, from),
            Err(StunError::UnknownAttribute(0x0024))
        );
        // Comprehension-optional ones (0x8000 and up) are ignored.
        bytes[HEADER_LEN] = 0x80;
        assert!(answer_binding_request(&bytes, from).is_ok());
    }

    /// RFC 5769 sections 2.2 and 2.3: responses with SOFTWARE,
    /// XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY (ignored) and FINGERPRINT.
    #[test]
    fn rfc5769_sample_responses() {
        let tid = [
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ];
        let ipv4 = [
            0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
            0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74,
            0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01,
            0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99,
            0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b,
            0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
        ];
        let ipv6 = [
            0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
            0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74,
            0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02,
            0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5,
            0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6,
            0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41,
            0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
        ];
        assert_eq!(
            parse_binding_response(&ipv4),
            Ok(BindingResponse {
                transaction_id: tid,
                mapped: "192.0.2.1:32853".parse().unwrap()
            })
        );
        assert_eq!(
            parse_binding_response(&ipv6),
            Ok(BindingResponse {
                transaction_id: tid,
                mapped: "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            })
        );
    }

    #[test]
    fn response_falls_back_to_mapped_address() {
        let addr: SocketAddr = "192.0.2.9:9".parse().unwrap();
        let other: SocketAddr = "192.0.2.10:10".parse().unwrap();
        let old = encode(message(
            MessageClass::SuccessResponse,
            vec![MappedAddress::new(addr).into()],
        ));
        assert_eq!(parse_binding_response(&old).unwrap().mapped, addr);

        let both = encode(message(
            MessageClass::SuccessResponse,
            vec![
                MappedAddress::new(other).into(),
                XorMappedAddress::new(addr).into(),
            ],
        ));
        assert_eq!(parse_binding_response(&both).unwrap().mapped, addr);

        let neither = encode(message(
            MessageClass::SuccessResponse,
            vec![Software::new_static("x").into()],
        ));
        assert_eq!(
            parse_binding_response(&neither),
            Err(StunError::NoMappedAddress)
        );
    }

    #[test]
    fn error_responses_and_requests_are_not_binding_responses() {
        let error = encode(message(
            MessageClass::ErrorResponse,
            vec![ErrorCode::new(401, "Unauthorized".into()).unwrap().into()],
        ));
        assert_eq!(
            parse_binding_response(&error),
            Err(StunError::ErrorResponse {
                transaction_id: TID,
                code: 401,
                reason: "Unauthorized".into()
            })
        );
        let bare_error = encode(message(MessageClass::ErrorResponse, vec![]));
        assert_eq!(
            parse_binding_response(&bare_error),
            Err(StunError::Malformed)
        );
        assert_eq!(
            parse_binding_response(&binding_request(TID)),
            Err(StunError::Unexpected {
                class: "request",
                method: 1
            })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let from: SocketAddr = "[2001:db8::2]:5".parse().unwrap();
        // A cheap deterministic walk over mutated requests; the fuzz
        // target does this properly.
        let answer = answer_binding_request(&binding_request(TID), from).unwrap();
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = if state.is_multiple_of(2) {
                answer.clone()
            } else {
                binding_request(TID)
            };
            let index = (state >> 8) as usize % bytes.len();
            bytes[index] ^= (state >> 32) as u8;
            if state.is_multiple_of(5) {
                bytes.truncate((state >> 40) as usize % bytes.len());
            }
            let _ = parse_binding_response(&bytes);
            let _ = answer_binding_request(&bytes, from);
        }
    }
}
