//! The server's own credentials: access JWTs, opaque refresh tokens and
//! login codes, all derived from one server secret.
//!
//! Each kind has its own shape so none is accepted in another's place:
//! access tokens are HS256 JWTs with `typ: at+jwt`; refresh tokens start
//! with `vrt_` and login codes with `vlc_`, and each is looked up only in
//! its own table. Opaque tokens are kept as SHA-256 hashes.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use voice_core::auth::{AccessGrant, TokenIssuer};
use voice_core::{Error, SessionId, UserId};

pub const REFRESH_PREFIX: &str = "vrt_";
pub const LOGIN_CODE_PREFIX: &str = "vlc_";
/// The JWT `typ` of access tokens (RFC 9068), checked on every request so
/// that a JWT of another kind signed with the same key is refused.
const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Tolerated clock difference for `exp` and `iat`.
const LEEWAY_SECS: u64 = 5;

/// The root secret every signing key is derived from.
#[derive(Clone)]
pub struct ServerSecret([u8; 32]);

impl ServerSecret {
    /// Uses the configured secret, or reads (creating on first start) the
    /// one kept in `data_dir/server-secret` with owner-only permissions.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Self> {
        if let Some(secret) = configured {
            if secret.len() < 32 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "auth.secret must be at least 32 bytes",
                ));
            }
            return Ok(Self(Sha256::digest(secret.as_bytes()).into()));
        }
        let path = data_dir.join("server-secret");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "corrupt server-secret file",
                    )
                })?;
                let secret: [u8; 32] = bytes.try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "corrupt server-secret file",
                    )
                })?;
                Ok(Self(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut secret);
                write_private_file(&path, URL_SAFE_NO_PAD.encode(secret).as_bytes())?;
                tracing::info!(path = %path.display(), "generated a new server secret");
                Ok(Self(secret))
            }
            Err(e) => Err(e),
        }
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key for one purpose, so that no two uses share a key.
    fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A new random opaque token with the given kind prefix.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What the store keeps of an opaque token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The PKCE S256 challenge of a verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether a string is a well-formed S256 challenge: 32 bytes, base64url.
pub fn is_valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|bytes| bytes.len() == 32)
}

#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    aud: String,
    sub: UserId,
    sid: SessionId,
    iat: i64,
    exp: i64,
}

/// Issues and checks access tokens, and derives refresh-token successors.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    successor_key: [u8; 32],
    issuer: String,
    audience: String,
    access_ttl_secs: u64,
}

impl Tokens {
    pub fn new(
        secret: &ServerSecret,
        issuer: String,
        audience: String,
        access_ttl_secs: u64,
    ) -> Self {
        let signing_key = secret.derive("voice access token HS256");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(&signing_key),
            decoding: DecodingKey::from_secret(&signing_key),
            validation,
            successor_key: secret.derive("voice refresh token successor"),
            issuer,
            audience,
            access_ttl_secs,
        }
    }

    /// The refresh token that replaces `token` on rotation. It is derived,
    /// not random, so a client retrying a rotation whose response it lost
    /// can be handed the same successor although only hashes are stored.
    pub fn successor_of(&self, token: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.successor_key).expect("HMAC takes any key length");
        mac.update(token.as_bytes());
        format!(
            "{REFRESH_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }
}

impl TokenIssuer for Tokens {
    fn issue_access(
        &self,
        user_id: UserId,
        session_id: SessionId,
        now: OffsetDateTime,
    ) -> voice_core::error::Result<(String, u64)> {
        let iat = now.unix_timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id,
            sid: session_id,
            iat,
            exp: iat + self.access_ttl_secs as i64,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_string());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| {
            tracing::error!(error = %e, "signing an access token failed");
            Error::internal()
        })?;
        Ok((token, self.access_ttl_secs))
    }

    fn verify_access(&self, token: &str) -> voice_core::error::Result<AccessGrant> {
        let invalid = || Error::unauthorized("invalid or expired access token");
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|_| invalid())?;
        if data.header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(invalid());
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if data.claims.iat > now + LEEWAY_SECS as i64 {
            return Err(invalid());
        }
        let expires_at =
            OffsetDateTime::from_unix_timestamp(data.claims.exp).map_err(|_| invalid())?;
        Ok(AccessGrant {
            user_id: data.claims.sub,
            session_id: data.claims.sid,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(
            &ServerSecret::from_bytes([7; 32]),
            "https://voice.test".into(),
            "voice".into(),
            600,
        )
    }

    #[test]
    fn access_tokens_verify_and_carry_the_session() {
        let tokens = tokens();
        let (user, session) = (UserId::new(), SessionId::new());
        let (token, ttl) = tokens
            .issue_access(user, session, OffsetDateTime::now_utc())
            .unwrap();
        assert_eq!(ttl, 600);
        let grant = tokens.verify_access(&token).unwrap();
        assert_eq!((grant.user_id, grant.session_id), (user, session));
    }

    #[test]
    fn expired_foreign_and_typeless_tokens_are_refused() {
        let tokens = tokens();
        let (user, session) = (UserId::new(), SessionId::new());
        let old = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let (expired, _) = tokens.issue_access(user, session, old).unwrap();
        assert!(tokens.verify_access(&expired).is_err());

        let other = Tokens::new(
            &ServerSecret::from_bytes([8; 32]),
            "https://voice.test".into(),
            "voice".into(),
            600,
        );
        let (foreign, _) = other
            .issue_access(user, session, OffsetDateTime::now_utc())
            .unwrap();
        assert!(tokens.verify_access(&foreign).is_err());

        let other_audience = Tokens::new(
            &ServerSecret::from_bytes([7; 32]),
            "https://voice.test".into(),
            "other".into(),
            600,
        );
        let (wrong_aud, _) = other_audience
            .issue_access(user, session, OffsetDateTime::now_utc())
            .unwrap();
        assert!(tokens.verify_access(&wrong_aud).is_err());
    }

    #[test]
    fn successors_are_deterministic_and_distinct() {
        let tokens = tokens();
        let first = random_token(REFRESH_PREFIX);
        assert_eq!(tokens.successor_of(&first), tokens.successor_of(&first));
        assert_ne!(tokens.successor_of(&first), first);
        assert!(tokens.successor_of(&first).starts_with(REFRESH_PREFIX));
    }

    #[test]
    fn pkce_matches_the_rfc_7636_example() {
        // Appendix B of RFC 7636.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            pkce_challenge(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(is_valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!is_valid_challenge("short"));
    }
}
