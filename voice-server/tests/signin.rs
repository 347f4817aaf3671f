//! The whole sign-in over real HTTP: a real voice server on loopback and a
//! real OpenID Connect provider (tests/common/oidc_provider.rs) beside it.

mod common;

use common::oidc_provider::{CLIENT_ID, CLIENT_SECRET, TestProvider, TestUser, Tweak};
use common::{TestServer, error_code, http, location, pkce, query_param};
use serde_json::Value;
use voice_core::wire::TokenResponse;
use voice_server::Config;
use voice_server::config::OidcConfig;

const CLIENT_REDIRECT: &str = "http://127.0.0.1:49152/callback";

fn with_provider(provider: &TestProvider, allowed: &[&str]) -> impl FnOnce(&mut Config) {
    let issuer = provider.issuer();
    let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
    move |config| {
        config.auth.oidc = Some(OidcConfig {
            issuer_url: issuer,
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            jwks_min_refresh_secs: 0,
            ..OidcConfig::default()
        });
        config.auth.allowed_emails = allowed;
    }
}

async fn setup(allowed: &[&str]) -> (TestProvider, TestServer) {
    let provider = TestProvider::start().await;
    let server = TestServer::start(with_provider(&provider, allowed)).await;
    (provider, server)
}

/// Where a sign-in stopped, for the failure cases.
#[derive(Debug)]
struct Refused {
    stage: &'static str,
    status: u16,
    code: String,
}

/// Follows the sign-in as a browser and a native client would, up to the
/// redirect that carries the login code back to the client.
async fn sign_in_to_code(
    server: &TestServer,
    redirect_uri: &str,
) -> Result<(String, String), Refused> {
    let client = http();
    let (verifier, challenge) = pkce();
    let response = client
        .get(server.url("/v1/auth/login"))
        .query(&[
            ("redirect_uri", redirect_uri),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "client-state-123"),
        ])
        .send()
        .await
        .unwrap();
    if response.status() != 303 {
        let status = response.status().as_u16();
        return Err(Refused {
            stage: "login",
            status,
            code: error_code(response).await,
        });
    }
    let authorize = location(&response);
    let response = client.get(&authorize).send().await.unwrap();
    let callback = location(&response);
    let response = client.get(&callback).send().await.unwrap();
    assert_eq!(
        response
            .headers()
            .get("referrer-policy")
            .map(|v| v.to_str().unwrap()),
        Some("no-referrer"),
        "the callback must not leak its URL"
    );
    if response.status() != 303 {
        let status = response.status().as_u16();
        return Err(Refused {
            stage: "callback",
            status,
            code: error_code(response).await,
        });
    }
    let back = location(&response);
    assert!(back.starts_with(redirect_uri), "{back}");
    assert_eq!(
        query_param(&back, "state").as_deref(),
        Some("client-state-123")
    );
    assert!(query_param(&back, "access_token").is_none());
    let code = query_param(&back, "code").expect("a login code");
    Ok((code, verifier))
}

async fn redeem(server: &TestServer, code: &str, verifier: &str) -> reqwest::Response {
    http()
        .post(server.url("/v1/auth/token"))
        .json(&serde_json::json!({ "code": code, "code_verifier": verifier }))
        .send()
        .await
        .unwrap()
}

async fn sign_in(server: &TestServer) -> Result<TokenResponse, Refused> {
    let (code, verifier) = sign_in_to_code(server, CLIENT_REDIRECT).await?;
    let response = redeem(server, &code, &verifier).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
    Ok(response.json().await.unwrap())
}

async fn me(server: &TestServer, access_token: &str) -> reqwest::Response {
    http()
        .get(server.url("/v1/me"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
}

async fn refresh(server: &TestServer, refresh_token: &str) -> reqwest::Response {
    http()
        .post(server.url("/v1/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
}

async fn user_count(server: &TestServer) -> u64 {
    server.state.store.count_users().await.unwrap()
}

#[tokio::test]
async fn happy_path_registers_once_and_issues_tokens() {
    let (provider, server) = setup(&["alice@example.com"]).await;
    let tokens = sign_in(&server).await.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 600);
    assert!(tokens.refresh_token.starts_with("vrt_"));

    let response = me(&server, &tokens.access_token).await;
    assert_eq!(response.status(), 200);
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["email"], "alice@example.com");
    assert_eq!(first["name"], "User alice-sub");
    assert_eq!(first["picture"], "https://pictures.example/alice-sub.png");

    // The same person again: same user, keyed by issuer and subject.
    let again = sign_in(&server).await.unwrap();
    let second: Value = me(&server, &again.access_token).await.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(user_count(&server).await, 1);

    // A changed email on the same subject is the same user, updated.
    let mut renamed = TestUser::new("alice-sub", "ALICE@example.com");
    renamed.name = "Alice".into();
    provider.sign_in_as(renamed);
    let third = sign_in(&server).await.unwrap();
    let updated: Value = me(&server, &third.access_token).await.json().await.unwrap();
    assert_eq!(updated["id"], first["id"]);
    assert_eq!(updated["name"], "Alice");
    server.stop().await;
}

#[tokio::test]
async fn an_allowlisted_domain_admits_its_verified_users() {
    let (provider, server) = setup(&["@corp.example"]).await;
    provider.sign_in_as(TestUser::new("bob-sub", "bob@corp.example"));
    let tokens = sign_in(&server).await.unwrap();
    let body: Value = me(&server, &tokens.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["email"], "bob@corp.example");

    provider.sign_in_as(TestUser::new("eve-sub", "eve@corp.example.evil"));
    let refused = sign_in(&server).await.unwrap_err();
    assert_eq!((refused.stage, refused.status), ("callback", 403));
    assert_eq!(user_count(&server).await, 1);
}

#[tokio::test]
async fn an_email_not_allowlisted_is_refused_and_nobody_is_created() {
    let (provider, server) = setup(&["alice@example.com"]).await;
    provider.sign_in_as(TestUser::new("mallory-sub", "mallory@example.com"));
    let refused = sign_in(&server).await.unwrap_err();
    assert_eq!(
        (refused.stage, refused.status, refused.code.as_str()),
        ("callback", 403, "forbidden")
    );
    assert_eq!(user_count(&server).await, 0);
}

#[tokio::test]
async fn an_unverified_email_is_refused() {
    let (provider, server) = setup(&["alice@example.com"]).await;
    let mut user = TestUser::new("alice-sub", "alice@example.com");
    user.email_verified = false;
    provider.sign_in_as(user);
    let refused = sign_in(&server).await.unwrap_err();
    assert_eq!((refused.stage, refused.status), ("callback", 403));
    assert_eq!(user_count(&server).await, 0);
}

#[tokio::test]
async fn id_tokens_that_do_not_verify_are_refused() {
    let (provider, server) = setup(&["alice@example.com"]).await;
    for tweak in [
        Tweak::WrongNonce,
        Tweak::WrongAudience,
        Tweak::ExtraUntrustedAudience,
        Tweak::ForeignAuthorizedParty,
        Tweak::Expired,
        Tweak::IssuedInFuture,
        Tweak::TamperedSignature,
        Tweak::UnpublishedKey,
        Tweak::WrongIssuer,
    ] {
        provider.tweak(tweak);
        let refused = sign_in(&server).await.unwrap_err();
        assert_eq!(
            (refused.stage, refused.status, refused.code.as_str()),
            ("callback", 401, "unauthorized"),
            "{tweak:?}"
        );
    }
    assert_eq!(user_count(&server).await, 0);
    provider.tweak(Tweak::None);
    sign_in(&server).await.unwrap();
}

#[tokio::test]
async fn a_rotated_provider_key_is_fetched_when_a_token_names_it() {
    let (provider, server) = setup(&["alice@example.com"]).await;
    sign_in(&server).await.unwrap();
    let fetches = provider.jwks_fetches();
    provider.rotate_key();
    sign_in(&server).await.unwrap();
    assert_eq!(provider.jwks_fetches(), fetches + 1);
    // Known now: no further fetch.
    sign_in(&server).await.unwrap();
    assert_eq!(provider.jwks_fetches(), fetches + 1);
}

#[tokio::test]
async fn a_replayed_or_unknown_state_is_refused() {
    let (_provider, server) = setup(&["alice@example.com"]).await;
    let client = http();
    let (_, challenge) = pkce();
    let response = client
        .get(server.url("/v1/auth/login"))
        .query(&[
            ("redirect_uri", CLIENT_REDIRECT),
            ("code_challenge", challenge.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let authorize = location(&response);
    let callback = location(&client.get(&authorize).send().await.unwrap());
    assert_eq!(client.get(&callback).send().await.unwrap().status(), 303);
    let replay = client.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    assert_eq!(error_code(replay).await, "bad_request");

    let unknown = client
        .get(server.url("/v1/auth/callback?code=abc&state=never-issued"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn login_codes_are_single_use_short_lived_and_bound_to_pkce() {
    let (_provider, server) = setup(&["alice@example.com"]).await;

    let (code, verifier) = sign_in_to_code(&server, CLIENT_REDIRECT).await.unwrap();
    assert_eq!(redeem(&server, &code, &verifier).await.status(), 200);
    let replay = redeem(&server, &code, &verifier).await;
    assert_eq!(replay.status(), 400);

    let (code, verifier) = sign_in_to_code(&server, CLIENT_REDIRECT).await.unwrap();
    let (wrong_verifier, _) = pkce();
    assert_eq!(redeem(&server, &code, &wrong_verifier).await.status(), 400);
    // A failed attempt burns the code.
    assert_eq!(redeem(&server, &code, &verifier).await.status(), 400);

    let provider = TestProvider::start().await;
    let expiring = TestServer::start(|config| {
        with_provider(&provider, &["alice@example.com"])(config);
        config.auth.login_code_ttl_secs = 0;
    })
    .await;
    let (code, verifier) = sign_in_to_code(&expiring, CLIENT_REDIRECT).await.unwrap();
    assert_eq!(redeem(&expiring, &code, &verifier).await.status(), 400);
}

#[tokio::test]
async fn a_redirect_target_not_allowlisted_gets_no_code() {
    let (provider, server) = setup(&["alice@example.com"]).await;
    for target in [
        "https://evil.example/steal",
        "http://localhost:49152/callback",
        "http://127.0.0.1/callback",
    ] {
        let refused = sign_in_to_code(&server, target).await.unwrap_err();
        assert_eq!((refused.stage, refused.status), ("login", 403), "{target}");
    }
    assert_eq!(provider.token_requests(), 0);

    let provider = TestProvider::start().await;
    let web = TestServer::start(|config| {
        with_provider(&provider, &["alice@example.com"])(config);
        config.auth.web_origins = vec!["https://voice.example".into()];
    })
    .await;
    sign_in_to_code(&web, "https://voice.example/signed-in")
        .await
        .unwrap();
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let (_provider, server) = setup(&["alice@example.com"]).await;
    let first = sign_in(&server).await.unwrap();

    let response = refresh(&server, &first.refresh_token).await;
    assert_eq!(response.status(), 200);
    let second: TokenResponse = response.json().await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(me(&server, &second.access_token).await.status(), 200);

    // A retry of the same rotation (its response was lost) gets the same successor.
    let retry: TokenResponse = refresh(&server, &first.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(retry.refresh_token, second.refresh_token);

    let third: TokenResponse = refresh(&server, &second.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    // Now the first token again: its successor was used, so this is theft.
    let reuse = refresh(&server, &first.refresh_token).await;
    assert_eq!(reuse.status(), 401);
    assert_eq!(refresh(&server, &third.refresh_token).await.status(), 401);
    assert_eq!(me(&server, &third.access_token).await.status(), 401);

    // Another device of the same user is untouched.
    let other = sign_in(&server).await.unwrap();
    assert_eq!(me(&server, &other.access_token).await.status(), 200);
}

#[tokio::test]
async fn reuse_after_the_grace_period_revokes_even_an_unused_successor() {
    let provider = TestProvider::start().await;
    let server = TestServer::start(|config| {
        with_provider(&provider, &["alice@example.com"])(config);
        config.auth.refresh_retry_grace_secs = 0;
    })
    .await;
    let first = sign_in(&server).await.unwrap();
    let second: TokenResponse = refresh(&server, &first.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(refresh(&server, &first.refresh_token).await.status(), 401);
    assert_eq!(refresh(&server, &second.refresh_token).await.status(), 401);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let (_provider, server) = setup(&["alice@example.com"]).await;
    let tokens = sign_in(&server).await.unwrap();
    let response = http()
        .post(server.url("/v1/auth/logout"))
        .bearer_auth(&tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(me(&server, &tokens.access_token).await.status(), 401);
    assert_eq!(refresh(&server, &tokens.refresh_token).await.status(), 401);
}
