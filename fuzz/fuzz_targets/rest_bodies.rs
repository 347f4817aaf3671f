//! REST JSON bodies from arbitrary bytes, as the server's `Json` extractor
//! (request bodies) and the SDK (response bodies) read them: the first
//! byte picks the type, the rest is the body. Never a panic, and a body
//! that decodes re-encodes to JSON that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use voice_core::wire::*;

/// Decodes `body` as `T`; if it decodes, encoding and decoding again
/// gives the same value.
fn round_trip<T>(body: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(body) {
        let text = serde_json::to_vec(&value).expect("decoded bodies encode");
        let again: T = serde_json::from_slice(&text).expect("re-encoded bodies decode");
        assert_eq!(again, value);
    }
}

/// Decodes only: types with floats, whose text serde_json may not
/// reproduce to the last bit.
fn decode<T: DeserializeOwned>(body: &[u8]) {
    let _ = serde_json::from_slice::<T>(body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 32 {
        // What clients send: every body a handler takes as `Json<_>`.
        0 => round_trip::<SendMessageRequest>(body),
        1 => round_trip::<Recipient>(body),
        2 => round_trip::<MarkReadRequest>(body),
        3 => round_trip::<CreateGroupRequest>(body),
        4 => round_trip::<RenameGroupRequest>(body),
        5 => round_trip::<AddMemberRequest>(body),
        6 => round_trip::<StartCallRequest>(body),
        7 => round_trip::<TokenRequest>(body),
        8 => round_trip::<RefreshRequest>(body),
        9 => round_trip::<DevLoginRequest>(body),
        10 => round_trip::<UserRef>(body),
        11 => round_trip::<StunUrlRequest>(body),
        // What the SDK reads back from the server.
        12 => round_trip::<ErrorBody>(body),
        13 => round_trip::<TokenResponse>(body),
        14 => round_trip::<AuthMethods>(body),
        15 => round_trip::<UserProfile>(body),
        16 => round_trip::<Health>(body),
        17 => round_trip::<UserSearchResponse>(body),
        18 => round_trip::<FriendsResponse>(body),
        19 => round_trip::<FriendRequestsResponse>(body),
        20 => round_trip::<FriendStatusResponse>(body),
        21 => round_trip::<BlocksResponse>(body),
        22 => round_trip::<MessagesPage>(body),
        23 => round_trip::<ConversationsResponse>(body),
        24 => round_trip::<GroupView>(body),
        25 => round_trip::<GroupsResponse>(body),
        26 => round_trip::<CallStarted>(body),
        27 => round_trip::<ActiveCallsResponse>(body),
        28 => round_trip::<CallHistoryResponse>(body),
        29 => round_trip::<IceServersResponse>(body),
        30 => round_trip::<WsTicket>(body),
        _ => {
            decode::<IceStatusResponse>(body);
            round_trip::<StunListResponse>(body);
        }
    }
});
