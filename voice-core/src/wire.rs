//! The wire protocol: JSON bodies of the REST API and the events sent over
//! the WebSocket, shared by server and clients so both sides agree by
//! construction. Events carry the protocol version `v`; a client that sees
//! a newer major version than it knows should ask its user to upgrade.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::{MessageId, UserId};
use crate::model::{Conversation, FriendStatus, Message};

/// The version of the event protocol this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: Error,
}

/// OAuth 2.0 token response (RFC 6749 section 5.1 field names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    pub refresh_token: String,
}

/// `POST /v1/auth/token`: redeem a one-time login code with the PKCE
/// verifier whose S256 challenge was given at `/v1/auth/login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub code: String,
    pub code_verifier: String,
}

/// `POST /v1/auth/refresh` and, optionally, `POST /v1/auth/logout`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// `POST /v1/auth/dev-login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevLoginRequest {
    pub username: String,
}

/// `GET /v1/me`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub id: UserId,
    pub email: Option<String>,
    pub name: Option<String>,
    pub picture: Option<String>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

/// An event sent from the server to a connected device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerEvent {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u32,
    /// Per-user sequence number, for replay after a reconnect. Absent on
    /// events that are not stored (typing, errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub event: Event,
}

/// The events themselves, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum Event {
    #[serde(rename = "message.created")]
    MessageCreated { message: Message },
    #[serde(rename = "message.deleted")]
    MessageDeleted {
        conversation: Conversation,
        message_id: MessageId,
    },
    #[serde(rename = "friend.request")]
    FriendRequest { from: UserId },
    #[serde(rename = "friend.accepted")]
    FriendAccepted { user_id: UserId },
    #[serde(rename = "friend.removed")]
    FriendRemoved { user_id: UserId },
    #[serde(rename = "friend.status")]
    FriendStatusChanged {
        user_id: UserId,
        status: Option<FriendStatus>,
    },
    #[serde(rename = "error")]
    Error { error: Error },
}

impl ServerEvent {
    pub fn new(seq: Option<u64>, event: Event) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            seq,
            event,
        }
    }

    pub fn encode(&self) -> String {
        // Serializing these plain data types cannot fail: no maps with
        // non-string keys, no custom serializers that error.
        serde_json::to_string(self).expect("server events always serialize")
    }

    /// Decodes an event, refusing unknown versions and malformed input.
    pub fn decode(text: &str) -> Result<Self, Error> {
        let event: ServerEvent = serde_json::from_str(text)
            .map_err(|e| Error::bad_request(format!("malformed event: {e}")))?;
        if event.v != PROTOCOL_VERSION {
            return Err(Error::bad_request(format!(
                "unsupported protocol version {}",
                event.v
            )));
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;
    use time::OffsetDateTime;

    #[test]
    fn events_round_trip_with_their_type_tag() {
        let a = UserId::new();
        let b = UserId::new();
        let message = Message {
            id: MessageId::new(),
            conversation: Conversation::direct(a, b),
            sender: a,
            body: Some("hello".into()),
            client_id: None,
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            deleted_at: None,
        };
        let event = ServerEvent::new(Some(7), Event::MessageCreated { message });
        let text = event.encode();
        assert!(text.contains("\"type\":\"message.created\""), "{text}");
        assert!(text.contains("\"v\":1"), "{text}");
        assert_eq!(ServerEvent::decode(&text).unwrap(), event);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let from = UserId::new();
        let text = format!(r#"{{"v":2,"type":"friend.request","from":"{from}"}}"#);
        assert!(ServerEvent::decode(&text).is_err());
        assert!(ServerEvent::decode("{").is_err());
        assert!(ServerEvent::decode(r#"{"v":1,"type":"no.such"}"#).is_err());
    }
}
