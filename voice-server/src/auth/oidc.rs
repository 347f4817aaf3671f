//! An OpenID Connect relying party: the [`IdentityProvider`] for Google or
//! any other OIDC issuer.
//!
//! Discovery and key fetching go through `openidconnect`, which also checks
//! the ID token's signature, `iss`, `aud`, `exp` and `nonce`. On top of that
//! this module checks `azp`, bounds `iat`, and refetches the provider's keys
//! when a token names a key id it does not know (providers rotate keys),
//! no more often than configured.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::reqwest;
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, JsonWebKey, JsonWebKeySet, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse as _,
};
use voice_core::Error;
use voice_core::auth::{IdentityProvider, LoginStart, PendingLogin};
use voice_core::model::Identity;

use crate::config::OidcConfig;

type ConfiguredClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long one HTTP call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct OidcProvider {
    http: reqwest::Client,
    issuer: String,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect_url: RedirectUrl,
    scopes: Vec<Scope>,
    metadata: RwLock<CoreProviderMetadata>,
    /// Serializes key refreshes and remembers the last one, for the rate limit.
    last_key_refresh: tokio::sync::Mutex<Instant>,
    min_key_refresh: Duration,
    clock_skew: Duration,
}

impl OidcProvider {
    /// Runs discovery against the issuer and fetches its keys.
    /// `redirect_url` is this server's callback URL.
    pub async fn discover(config: &OidcConfig, redirect_url: String) -> Result<Self, String> {
        if config.client_id.is_empty() {
            return Err("auth.oidc.client_id is required".into());
        }
        let http = reqwest::ClientBuilder::new()
            // Following redirects would open the server to SSRF.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .map_err(|e| format!("building the HTTP client failed: {e}"))?;
        let issuer_url = IssuerUrl::new(config.issuer_url.clone())
            .map_err(|e| format!("bad issuer URL: {e}"))?;
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &http)
            .await
            .map_err(|e| format!("OIDC discovery at {} failed: {e}", config.issuer_url))?;
        let redirect_url =
            RedirectUrl::new(redirect_url).map_err(|e| format!("bad callback URL: {e}"))?;
        Ok(Self {
            http,
            issuer: metadata.issuer().to_string(),
            client_id: ClientId::new(config.client_id.clone()),
            client_secret: config.client_secret.clone().map(ClientSecret::new),
            redirect_url,
            scopes: config.scopes.iter().cloned().map(Scope::new).collect(),
            metadata: RwLock::new(metadata),
            last_key_refresh: tokio::sync::Mutex::new(Instant::now()),
            min_key_refresh: Duration::from_secs(config.jwks_min_refresh_secs),
            clock_skew: Duration::from_secs(config.clock_skew_secs),
        })
    }

    fn client(&self) -> ConfiguredClient {
        let metadata = self
            .metadata
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        CoreClient::from_provider_metadata(
            metadata,
            self.client_id.clone(),
            self.client_secret.clone(),
        )
        .set_redirect_uri(self.redirect_url.clone())
    }

    fn knows_key(&self, kid: &str) -> bool {
        let metadata = self.metadata.read().unwrap_or_else(|p| p.into_inner());
        metadata
            .jwks()
            .keys()
            .iter()
            .any(|key| key.key_id().is_some_and(|id| id.as_str() == kid))
    }

    /// Refetches the provider's keys unless that was done too recently.
    async fn refresh_keys(&self) {
        let mut last = self.last_key_refresh.lock().await;
        if last.elapsed() < self.min_key_refresh {
            return;
        }
        *last = Instant::now();
        let jwks_uri = {
            let metadata = self.metadata.read().unwrap_or_else(|p| p.into_inner());
            metadata.jwks_uri().clone()
        };
        match JsonWebKeySet::fetch_async(&jwks_uri, &self.http).await {
            Ok(jwks) => {
                tracing::info!(
                    keys = jwks.keys().len(),
                    "refreshed the provider's signing keys"
                );
                let mut metadata = self.metadata.write().unwrap_or_else(|p| p.into_inner());
                *metadata = metadata.clone().set_jwks(jwks);
            }
            Err(e) => tracing::warn!(error = %e, "refreshing the provider's signing keys failed"),
        }
    }
}

/// The unverified JSON of a JWT part; used only to pick a key before
/// verification, or to read extra claims after it.
fn jwt_part(token: &str, index: usize) -> Option<serde_json::Value> {
    let part = token.split('.').nth(index)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

fn rejected(why: impl std::fmt::Display) -> Error {
    tracing::info!(reason = %why, "ID token rejected");
    Error::unauthorized(format!("sign-in could not be verified: {why}"))
}

#[async_trait]
impl IdentityProvider for OidcProvider {
    fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn begin_login(&self) -> voice_core::error::Result<LoginStart> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.client();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.scopes {
            request = request.add_scope(scope.clone());
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(LoginStart {
            authorize_url: url.to_string(),
            pending: PendingLogin {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
            },
        })
    }

    async fn finish_login(
        &self,
        pending: PendingLogin,
        code: &str,
    ) -> voice_core::error::Result<Identity> {
        let response = self
            .client()
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| {
                tracing::error!(error = %e, "the provider has no token endpoint");
                Error::internal()
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| rejected(format!("code exchange failed: {e}")))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| rejected("the provider returned no ID token"))?;
        let raw = id_token.to_string();

        let kid = jwt_part(&raw, 0).and_then(|header| {
            header
                .get("kid")
                .and_then(|k| k.as_str())
                .map(str::to_owned)
        });
        if let Some(kid) = kid.as_deref()
            && !self.knows_key(kid)
        {
            self.refresh_keys().await;
        }

        let client = self.client();
        let verifier = client.id_token_verifier();
        let nonce = Nonce::new(pending.nonce);
        let claims = id_token.claims(&verifier, &nonce).map_err(rejected)?;

        // openidconnect leaves `azp` to the client (OIDC Core 3.1.3.7, 4-5).
        let payload = jwt_part(&raw, 1).ok_or_else(|| rejected("unreadable claims"))?;
        let audiences = claims.audiences().len();
        match payload.get("azp").and_then(|v| v.as_str()) {
            Some(azp) if azp != self.client_id.as_str() => {
                return Err(rejected("authorized party is another client"));
            }
            None if audiences > 1 => {
                return Err(rejected("several audiences and no authorized party"));
            }
            _ => {}
        }
        // openidconnect accepts any `iat`; one in the future means a
        // provider clock far off or a forged token.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match payload.get("iat").and_then(|v| v.as_i64()) {
            Some(iat) if iat <= now + self.clock_skew.as_secs() as i64 => {}
            _ => return Err(rejected("issued in the future or without an issue time")),
        }

        Ok(Identity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|email| email.to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims
                .name()
                .and_then(|name| name.get(None))
                .map(|name| name.to_string()),
            picture: claims
                .picture()
                .and_then(|picture| picture.get(None))
                .map(|picture| picture.to_string()),
            hosted_domain: payload
                .get("hd")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        })
    }
}
