//! A real OpenID Connect provider for tests, served over HTTP on loopback:
//! discovery, JWKS, an authorization endpoint that signs in whichever test
//! user the test chose (no login form: the test is the user), and a token
//! endpoint that checks the client secret, the code, the redirect URI and
//! PKCE, and returns an RS256-signed ID token.
//!
//! Tests can make it misbehave in the ways a hostile or broken provider
//! might (`Tweak`) and rotate its signing key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "voice-test-client";
pub const CLIENT_SECRET: &str = "voice-test-client-secret";

const KEY_1: &[u8] = include_bytes!("../fixtures/provider-key-1.pem");
const KEY_2: &[u8] = include_bytes!("../fixtures/provider-key-2.pem");

/// Who signs in at the provider next.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub picture: Option<String>,
    pub hosted_domain: Option<String>,
}

impl TestUser {
    pub fn new(subject: &str, email: &str) -> Self {
        Self {
            subject: subject.into(),
            email: email.into(),
            email_verified: true,
            name: format!("User {subject}"),
            picture: Some(format!("https://pictures.example/{subject}.png")),
            hosted_domain: None,
        }
    }
}

/// Ways to make the next ID token wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tweak {
    None,
    WrongNonce,
    WrongAudience,
    ExtraUntrustedAudience,
    ForeignAuthorizedParty,
    Expired,
    IssuedInFuture,
    TamperedSignature,
    /// Signed with a key the JWKS never publishes.
    UnpublishedKey,
    WrongIssuer,
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    fn load(kid: &str, pem: &[u8]) -> Self {
        let encoding = EncodingKey::from_rsa_pem(pem).expect("test key parses");
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("RSA key to JWK");
        jwk.common.key_id = Some(kid.to_string());
        Self {
            kid: kid.to_string(),
            encoding,
            jwk,
        }
    }
}

struct IssuedCode {
    user: TestUser,
    nonce: Option<String>,
    challenge: Option<String>,
    redirect_uri: String,
}

struct Inner {
    issuer: String,
    user: TestUser,
    tweak: Tweak,
    active_key: usize,
    published: Vec<usize>,
    codes: HashMap<String, IssuedCode>,
    jwks_fetches: usize,
    token_requests: usize,
}

/// A running provider. Dropping it leaves the task running until the
/// test's runtime ends, which is when the test is over anyway.
#[derive(Clone)]
pub struct TestProvider {
    inner: Arc<Mutex<Inner>>,
    keys: Arc<Vec<SigningKey>>,
    pub addr: SocketAddr,
}

impl TestProvider {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let provider = Self {
            inner: Arc::new(Mutex::new(Inner {
                issuer: format!("http://{addr}"),
                user: TestUser::new("alice-sub", "alice@example.com"),
                tweak: Tweak::None,
                active_key: 0,
                published: vec![0],
                codes: HashMap::new(),
                jwks_fetches: 0,
                token_requests: 0,
            })),
            keys: Arc::new(vec![
                SigningKey::load("key-1", KEY_1),
                SigningKey::load("key-2", KEY_2),
            ]),
            addr,
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(provider.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        provider
    }

    pub fn issuer(&self) -> String {
        self.inner.lock().unwrap().issuer.clone()
    }

    pub fn sign_in_as(&self, user: TestUser) {
        self.inner.lock().unwrap().user = user;
    }

    pub fn tweak(&self, tweak: Tweak) {
        self.inner.lock().unwrap().tweak = tweak;
    }

    /// Starts signing with the second key and publishes both, as a
    /// provider does during rotation.
    pub fn rotate_key(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.active_key = 1;
        inner.published = vec![0, 1];
    }

    pub fn jwks_fetches(&self) -> usize {
        self.inner.lock().unwrap().jwks_fetches
    }

    pub fn token_requests(&self) -> usize {
        self.inner.lock().unwrap().token_requests
    }
}

async fn discovery(State(provider): State<TestProvider>) -> Json<Value> {
    let issuer = provider.issuer();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "email", "email_verified", "name", "picture", "hd"]
    }))
}

async fn jwks(State(provider): State<TestProvider>) -> Json<JwkSet> {
    let mut inner = provider.inner.lock().unwrap();
    inner.jwks_fetches += 1;
    let keys = inner
        .published
        .iter()
        .map(|&i| provider.keys[i].jwk.clone())
        .collect();
    Json(JwkSet { keys })
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn authorize(
    State(provider): State<TestProvider>,
    Query(query): Query<AuthorizeQuery>,
) -> Response {
    if query.response_type != "code" || query.client_id != CLIENT_ID {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    if !query.scope.split(' ').any(|s| s == "openid") {
        return (StatusCode::BAD_REQUEST, "openid scope missing").into_response();
    }
    if query.code_challenge.is_some() && query.code_challenge_method.as_deref() != Some("S256") {
        return (StatusCode::BAD_REQUEST, "only S256").into_response();
    }
    let code = URL_SAFE_NO_PAD.encode(rand_bytes());
    let mut inner = provider.inner.lock().unwrap();
    let user = inner.user.clone();
    inner.codes.insert(
        code.clone(),
        IssuedCode {
            user,
            nonce: query.nonce,
            challenge: query.code_challenge,
            redirect_uri: query.redirect_uri.clone(),
        },
    );
    let mut target = url::Url::parse(&query.redirect_uri).unwrap();
    target.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = query.state {
        target.query_pairs_mut().append_pair("state", &state);
    }
    Redirect::to(target.as_str()).into_response()
}

fn rand_bytes() -> [u8; 24] {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

fn client_authenticated(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(encoded) = value.strip_prefix("Basic ")
        && let Ok(decoded) = STANDARD.decode(encoded)
        && let Ok(text) = String::from_utf8(decoded)
        && let Some((id, secret)) = text.split_once(':')
    {
        // RFC 6749 section 2.3.1: both parts are form-urlencoded first.
        let decode = |part: &str| {
            let pair = format!("x={part}");
            url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        return decode(id) == CLIENT_ID && decode(secret) == CLIENT_SECRET;
    }
    form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
}

fn oauth_error(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response()
}

async fn token(
    State(provider): State<TestProvider>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut inner = provider.inner.lock().unwrap();
    inner.token_requests += 1;
    if !client_authenticated(&headers, &form) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_client" })),
        )
            .into_response();
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error("unsupported_grant_type");
    }
    let Some(issued) = form.get("code").and_then(|code| inner.codes.remove(code)) else {
        return oauth_error("invalid_grant");
    };
    if form.get("redirect_uri") != Some(&issued.redirect_uri) {
        return oauth_error("invalid_grant");
    }
    if let Some(challenge) = &issued.challenge {
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != *challenge {
            return oauth_error("invalid_grant");
        }
    }

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let user = &issued.user;
    let mut claims = json!({
        "iss": inner.issuer,
        "sub": user.subject,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": user.name,
    });
    if let Some(nonce) = &issued.nonce {
        claims["nonce"] = json!(nonce);
    }
    if let Some(picture) = &user.picture {
        claims["picture"] = json!(picture);
    }
    if let Some(hd) = &user.hosted_domain {
        claims["hd"] = json!(hd);
    }
    let mut key = &provider.keys[inner.active_key];
    match inner.tweak {
        Tweak::None | Tweak::TamperedSignature => {}
        Tweak::WrongNonce => claims["nonce"] = json!("not-the-nonce"),
        Tweak::WrongAudience => claims["aud"] = json!("some-other-client"),
        Tweak::ExtraUntrustedAudience => claims["aud"] = json!([CLIENT_ID, "some-other-client"]),
        Tweak::ForeignAuthorizedParty => claims["azp"] = json!("some-other-client"),
        Tweak::Expired => {
            claims["iat"] = json!(now - 3600);
            claims["exp"] = json!(now - 1800);
        }
        Tweak::IssuedInFuture => {
            claims["iat"] = json!(now + 3600);
            claims["exp"] = json!(now + 7200);
        }
        Tweak::UnpublishedKey => key = &provider.keys[1 - inner.active_key],
        Tweak::WrongIssuer => claims["iss"] = json!("https://evil.example"),
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    let mut id_token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
    if inner.tweak == Tweak::TamperedSignature {
        // Change the claims after signing: the signature no longer matches.
        let mut parts: Vec<String> = id_token.split('.').map(str::to_owned).collect();
        claims["email"] = json!("mallory@example.com");
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        id_token = parts.join(".");
    }
    Json(json!({
        "access_token": URL_SAFE_NO_PAD.encode(rand_bytes()),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}
