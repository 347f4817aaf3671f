//! The REST side of the SDK: [`Client`] holds the server's address and the
//! signed-in [`Session`], keeps the access token fresh, and has one typed
//! method per REST endpoint of `docs/PROTOCOL.md`.
//!
//! Token handling follows the protocol's advice for clients: the access
//! token is refreshed shortly before it expires (one refresh at a time, so
//! concurrent requests never spend the same refresh token twice), a `401`
//! gets one refresh and one retry, and a refused refresh ends the session
//! ([`ClientError::NotSignedIn`]). Every rotation is reported to the
//! listener set with [`Client::on_session_change`], so a CLI can store the
//! new refresh token before the old one is useless.

use std::fmt;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, Weak};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use voice_core::ids::{CallId, GroupId, MessageId, SessionId, UserId};
use voice_core::model::{Conversation, Group, GroupMember, GroupRole, Message};
use voice_core::wire::{
    ActiveCall, ActiveCallsResponse, AddMemberRequest, BlocksResponse, CallHistoryResponse,
    CallStarted, ConversationsResponse, CreateGroupRequest, ErrorBody, FriendRequestsResponse,
    FriendStatusResponse, FriendsResponse, GroupView, GroupsResponse, Health, IceServersResponse,
    IceStatusResponse, MarkReadRequest, MessagesPage, Recipient, RefreshRequest,
    RenameGroupRequest, SendMessageRequest, StartCallRequest, StunListResponse, StunUrlRequest,
    TokenResponse, UserProfile, UserRef, UserSearchResponse, WsTicket,
};

use crate::error::{ClientError, Result};

/// How a [`Client`] talks to the server.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bound on one whole request, answer included.
    pub request_timeout: Duration,
    /// Bound on opening the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// The access token is refreshed when it expires within this margin
    /// (or within half its lifetime, if that is shorter).
    pub refresh_margin: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(30),
        }
    }
}

/// A signed-in device: its tokens and who it is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub access_expires_at: OffsetDateTime,
    /// `GET /v1/me` as of sign-in (refreshed by [`Client::me`]).
    pub user: UserProfile,
}

impl Session {
    /// This device's session id: the `sid` claim of the access token,
    /// which calls use to name devices (`device`, `from`, `caller_device`).
    /// `None` if the token is not a JWT carrying one.
    pub fn session_id(&self) -> Option<SessionId> {
        #[derive(Deserialize)]
        struct Claims {
            sid: SessionId,
        }
        let payload = self.access_token.split('.').nth(1)?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice::<Claims>(&bytes)
            .ok()
            .map(|claims| claims.sid)
    }

    /// What a client keeps on disk to sign in again without a browser.
    pub fn to_saved(&self, server_url: &str) -> SavedSession {
        SavedSession {
            server_url: server_url.to_string(),
            refresh_token: self.refresh_token.clone(),
            user: Some(self.user.clone()),
        }
    }
}

impl fmt::Debug for Session {
    /// Tokens are credentials: they stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("access_expires_at", &self.access_expires_at)
            .field("user", &self.user)
            .finish()
    }
}

/// The part of a session worth persisting: the refresh token is enough to
/// get a new access token with [`Client::restore`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    pub server_url: String,
    pub refresh_token: String,
    #[serde(default)]
    pub user: Option<UserProfile>,
}

impl fmt::Debug for SavedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavedSession")
            .field("server_url", &self.server_url)
            .field("refresh_token", &"<redacted>")
            .field("user", &self.user)
            .finish()
    }
}

/// Called with the new [`SavedSession`] after every sign-in and token
/// rotation, and with `None` when the session ends.
pub type SessionListener = Arc<dyn Fn(Option<&SavedSession>) + Send + Sync>;

/// The session and when to refresh it. `refresh_at` is computed once, when
/// the tokens arrive, from the lifetime the server gave them.
struct Auth {
    session: Session,
    refresh_at: OffsetDateTime,
}

pub(crate) struct Inner {
    /// The server's base URL without a trailing slash.
    base: String,
    http: reqwest::Client,
    options: ClientOptions,
    auth: StdMutex<Option<Auth>>,
    /// Held for the whole of a refresh: concurrent requests wait for it
    /// and then use its result instead of spending the token again.
    refresh_lock: tokio::sync::Mutex<()>,
    listener: StdMutex<Option<SessionListener>>,
    /// The one event connection (see [`crate::events`]). Weak: the
    /// connection lives as long as its handles, not as long as the client.
    pub(crate) events: StdMutex<Weak<crate::events::Shared>>,
    /// The last event `seq` handled, shared by successive connections so
    /// a new one resumes where the last one stopped.
    pub(crate) event_cursor: Arc<StdMutex<Option<u64>>>,
}

/// A connection to one voice server, signed in or not. Cheap to clone:
/// clones share the session, the token refresh and the event connection.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.base)
            .field("signed_in", &self.is_signed_in())
            .finish()
    }
}

/// Locks a std mutex, riding over poisoning: the data behind these locks
/// is replaced whole, so a panic elsewhere cannot leave it half-written.
pub(crate) fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Client {
    /// A client for the server at `server_url` (`http://…` or `https://…`,
    /// optionally with a path prefix), not signed in yet.
    pub fn new(server_url: &str) -> Result<Client> {
        Self::with_options(server_url, ClientOptions::default())
    }

    pub fn with_options(server_url: &str, options: ClientOptions) -> Result<Client> {
        let parsed = url::Url::parse(server_url.trim()).map_err(|e| {
            ClientError::Protocol(format!("invalid server URL {server_url:?}: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::Protocol(format!(
                "the server URL must be http:// or https://, not {server_url:?}"
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ClientError::Protocol(format!(
                "the server URL must not carry a query or fragment: {server_url:?}"
            )));
        }
        let base = parsed.as_str().trim_end_matches('/').to_string();
        // No endpoint of the API answers with a redirect a client should
        // follow; following one would hand the bearer token to wherever
        // it points.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .user_agent(concat!("voice-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                base,
                http,
                options,
                auth: StdMutex::new(None),
                refresh_lock: tokio::sync::Mutex::new(()),
                listener: StdMutex::new(None),
                events: StdMutex::new(Weak::new()),
                event_cursor: Arc::new(StdMutex::new(None)),
            }),
        })
    }

    /// A client that starts signed in with a session kept from earlier.
    /// An access token that has expired (or is not valid any more) is
    /// refreshed on first use.
    pub fn with_session(server_url: &str, session: Session) -> Result<Client> {
        let client = Self::new(server_url)?;
        let refresh_at = session.access_expires_at - client.inner.options.refresh_margin;
        *lock(&client.inner.auth) = Some(Auth {
            session,
            refresh_at,
        });
        Ok(client)
    }

    /// Signs in again from a [`SavedSession`]: rotates its refresh token
    /// (so store the new one, see [`Client::on_session_change`]) and
    /// fetches the profile.
    pub async fn restore(saved: &SavedSession) -> Result<Client> {
        let client = Self::new(&saved.server_url)?;
        let tokens =
            client
                .post_refresh(&saved.refresh_token)
                .await
                .map_err(|error| match error {
                    ClientError::Api { status: 401, error } => {
                        ClientError::NotSignedIn(error.message)
                    }
                    other => other,
                })?;
        client.adopt_tokens(tokens).await?;
        Ok(client)
    }

    /// The server's base URL, as given (without a trailing slash).
    pub fn server_url(&self) -> &str {
        &self.inner.base
    }

    /// The bound on one whole request ([`ClientOptions::request_timeout`]);
    /// also the bound on waiting for a `message.send`'s answer.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// The current session, if signed in.
    pub fn session(&self) -> Option<Session> {
        lock(&self.inner.auth)
            .as_ref()
            .map(|auth| auth.session.clone())
    }

    /// What to persist to sign in again later, if signed in.
    pub fn saved_session(&self) -> Option<SavedSession> {
        self.session()
            .map(|session| session.to_saved(&self.inner.base))
    }

    pub fn is_signed_in(&self) -> bool {
        lock(&self.inner.auth).is_some()
    }

    /// The signed-in user, as of sign-in or the last [`Client::me`].
    pub fn user(&self) -> Option<UserProfile> {
        self.session().map(|session| session.user)
    }

    /// This device's session id (see [`Session::session_id`]).
    pub fn session_id(&self) -> Option<SessionId> {
        self.session().and_then(|session| session.session_id())
    }

    /// Sets the function told about every new session and token rotation
    /// (and `None` when the session ends), replacing any earlier one. It
    /// runs inside the refresh, before the new tokens are used, so what it
    /// stores is never older than what the server expects.
    pub fn on_session_change(
        &self,
        listener: impl Fn(Option<&SavedSession>) + Send + Sync + 'static,
    ) {
        *lock(&self.inner.listener) = Some(Arc::new(listener));
    }

    /// Forgets the session locally, without telling the server (see
    /// [`Client::logout`] for that).
    pub fn forget_session(&self) {
        if lock(&self.inner.auth).take().is_some() {
            self.notify(None);
        }
    }

    fn notify(&self, saved: Option<&SavedSession>) {
        let listener = lock(&self.inner.listener).clone();
        if let Some(listener) = listener {
            listener(saved);
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.base, path)
    }

    /// Takes a fresh token pair (from sign-in or restore): fetches the
    /// profile with it, then makes it the session.
    pub(crate) async fn adopt_tokens(&self, tokens: TokenResponse) -> Result<Session> {
        if !tokens.token_type.eq_ignore_ascii_case("bearer") {
            return Err(ClientError::Protocol(format!(
                "unexpected token type {:?}",
                tokens.token_type
            )));
        }
        let received = OffsetDateTime::now_utc();
        let user: UserProfile = json(
            self.send_once(Method::GET, "/v1/me", &[], None, Some(&tokens.access_token))
                .await?,
        )
        .await?;
        let session = Session {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            access_expires_at: received + Duration::from_secs(tokens.expires_in),
            user,
        };
        let refresh_at = self.refresh_time(received, tokens.expires_in);
        // Not in the middle of someone else's refresh of the old session.
        let _guard = self.inner.refresh_lock.lock().await;
        *lock(&self.inner.auth) = Some(Auth {
            session: session.clone(),
            refresh_at,
        });
        self.notify(Some(&session.to_saved(&self.inner.base)));
        Ok(session)
    }

    fn refresh_time(&self, received: OffsetDateTime, expires_in: u64) -> OffsetDateTime {
        let lifetime = Duration::from_secs(expires_in);
        let margin = self.inner.options.refresh_margin.min(lifetime / 2);
        received + lifetime - margin
    }

    /// The access token to use now, refreshed first if it is about to
    /// expire.
    async fn access_token(&self) -> Result<String> {
        let (token, due) = {
            let auth = lock(&self.inner.auth);
            let auth = auth
                .as_ref()
                .ok_or_else(|| ClientError::NotSignedIn("no session; sign in first".into()))?;
            (
                auth.session.access_token.clone(),
                OffsetDateTime::now_utc() >= auth.refresh_at,
            )
        };
        if due {
            self.refresh_after(&token).await
        } else {
            Ok(token)
        }
    }

    /// Refreshes the session whose access token is `seen`, unless another
    /// request did so while this one waited for the lock; either way
    /// returns the newest access token.
    async fn refresh_after(&self, seen: &str) -> Result<String> {
        let _guard = self.inner.refresh_lock.lock().await;
        let refresh_token = {
            let auth = lock(&self.inner.auth);
            match auth.as_ref() {
                None => return Err(ClientError::NotSignedIn("no session; sign in first".into())),
                Some(auth) if auth.session.access_token != seen => {
                    return Ok(auth.session.access_token.clone());
                }
                Some(auth) => auth.session.refresh_token.clone(),
            }
        };
        match self.post_refresh(&refresh_token).await {
            Ok(tokens) => {
                let received = OffsetDateTime::now_utc();
                let refresh_at = self.refresh_time(received, tokens.expires_in);
                let saved = {
                    let mut auth = lock(&self.inner.auth);
                    let Some(auth) = auth.as_mut() else {
                        return Err(ClientError::NotSignedIn("signed out meanwhile".into()));
                    };
                    auth.session.access_token = tokens.access_token.clone();
                    auth.session.refresh_token = tokens.refresh_token;
                    auth.session.access_expires_at =
                        received + Duration::from_secs(tokens.expires_in);
                    auth.refresh_at = refresh_at;
                    auth.session.to_saved(&self.inner.base)
                };
                self.notify(Some(&saved));
                Ok(tokens.access_token)
            }
            Err(ClientError::Api { status: 401, error }) => {
                let ended = {
                    let mut auth = lock(&self.inner.auth);
                    let same = auth
                        .as_ref()
                        .is_some_and(|auth| auth.session.refresh_token == refresh_token);
                    if same {
                        *auth = None;
                    }
                    same
                };
                if ended {
                    self.notify(None);
                }
                Err(ClientError::NotSignedIn(error.message))
            }
            Err(other) => Err(other),
        }
    }

    /// `POST /v1/auth/refresh`. A lost answer is retried with the same
    /// token: within the server's grace period that yields the same
    /// successor instead of revoking the session.
    async fn post_refresh(&self, refresh_token: &str) -> Result<TokenResponse> {
        let body = encode(&RefreshRequest {
            refresh_token: refresh_token.to_string(),
        })?;
        let mut delays = [Duration::from_millis(200), Duration::from_millis(800)].into_iter();
        loop {
            let outcome = self
                .send_once(
                    Method::POST,
                    "/v1/auth/refresh",
                    &[],
                    Some(body.clone()),
                    None,
                )
                .await;
            match outcome {
                Ok(response) => return json(response).await,
                Err(ClientError::Unreachable { url, reason }) => match delays.next() {
                    Some(delay) => {
                        tracing::debug!(%url, %reason, "refresh failed in transit; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(ClientError::Unreachable { url, reason }),
                },
                Err(other) => return Err(other),
            }
        }
    }

    /// One HTTP exchange; a non-2xx answer becomes [`ClientError::Api`].
    async fn send_once(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        bearer: Option<&str>,
    ) -> Result<reqwest::Response> {
        let url = self.url(path);
        let mut request = self.inner.http.request(method, &url);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&url, &e))?;
        check_status(response).await
    }

    /// An authenticated request: fresh token first, and one refresh and
    /// retry on a `401`.
    async fn authed(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response> {
        let token = self.access_token().await?;
        match self
            .send_once(method.clone(), path, query, body.clone(), Some(&token))
            .await
        {
            Err(ClientError::Api { status: 401, .. }) => {
                let token = self.refresh_after(&token).await?;
                self.send_once(method, path, query, body, Some(&token))
                    .await
            }
            other => other,
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        json(self.authed(Method::GET, path, query, None).await?).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        json(
            self.authed(Method::POST, path, &[], Some(encode(body)?))
                .await?,
        )
        .await
    }

    /// A request whose answer has no body worth reading (`204`).
    async fn no_content(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<()> {
        self.authed(method, path, &[], body).await.map(drop)
    }

    /// An unauthenticated `POST` (sign-in endpoints).
    pub(crate) async fn post_public<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        json(
            self.send_once(Method::POST, path, &[], Some(encode(body)?), None)
                .await?,
        )
        .await
    }

    // ---- health and auth ----

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health> {
        json(
            self.send_once(Method::GET, "/healthz", &[], None, None)
                .await?,
        )
        .await
    }

    /// `GET /v1/me`; also updates the profile kept in the session.
    pub async fn me(&self) -> Result<UserProfile> {
        let me: UserProfile = self.get("/v1/me", &[]).await?;
        if let Some(auth) = lock(&self.inner.auth).as_mut() {
            auth.session.user = me.clone();
        }
        Ok(me)
    }

    /// `POST /v1/auth/logout`: ends this device's session on the server
    /// (its WebSocket gets `session.ended`), then forgets it here.
    pub async fn logout(&self) -> Result<()> {
        let outcome = self.no_content(Method::POST, "/v1/auth/logout", None).await;
        match outcome {
            // Already over on the server: the goal is reached.
            Ok(())
            | Err(ClientError::NotSignedIn(_))
            | Err(ClientError::Api { status: 401, .. }) => {
                self.forget_session();
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// `POST /v1/ws/ticket`: a single-use ticket for `GET /v1/ws`.
    pub async fn ws_ticket(&self) -> Result<WsTicket> {
        json(
            self.authed(Method::POST, "/v1/ws/ticket", &[], None)
                .await?,
        )
        .await
    }

    // ---- users ----

    /// `GET /v1/users?q=`: users whose name or email starts with `q`.
    pub async fn search_users(&self, q: &str) -> Result<UserSearchResponse> {
        self.get("/v1/users", &[("q", q.to_string())]).await
    }

    /// The user with exactly this (verified) email, found through search.
    /// The API names users by id only; this is the way from an address.
    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<UserProfile>> {
        let email = email.trim();
        let found = self.search_users(email).await?;
        Ok(found.users.into_iter().find(|user| {
            user.email
                .as_deref()
                .is_some_and(|candidate| candidate.eq_ignore_ascii_case(email))
        }))
    }

    // ---- friends and blocks ----

    /// `GET /v1/friends`.
    pub async fn friends(&self) -> Result<FriendsResponse> {
        self.get("/v1/friends", &[]).await
    }

    /// `GET /v1/friends/requests`.
    pub async fn friend_requests(&self) -> Result<FriendRequestsResponse> {
        self.get("/v1/friends/requests", &[]).await
    }

    /// `POST /v1/friends/requests`. The answer is the caller's status
    /// afterwards: `request_sent`, or `accepted` if they had asked already.
    pub async fn send_friend_request(&self, user: UserId) -> Result<FriendStatusResponse> {
        self.post("/v1/friends/requests", &UserRef { user_id: user })
            .await
    }

    /// Finds the user with this email (see [`Client::find_user_by_email`])
    /// and asks them to be friends. `Ok(None)` when nobody has it.
    pub async fn send_friend_request_by_email(
        &self,
        email: &str,
    ) -> Result<Option<FriendStatusResponse>> {
        match self.find_user_by_email(email).await? {
            Some(user) => self.send_friend_request(user.id).await.map(Some),
            None => Ok(None),
        }
    }

    /// `POST /v1/friends/requests/{user_id}/accept`.
    pub async fn accept_friend_request(&self, from: UserId) -> Result<FriendStatusResponse> {
        json(
            self.authed(
                Method::POST,
                &format!("/v1/friends/requests/{from}/accept"),
                &[],
                None,
            )
            .await?,
        )
        .await
    }

    /// `POST /v1/friends/requests/{user_id}/decline`.
    pub async fn decline_friend_request(&self, from: UserId) -> Result<()> {
        self.no_content(
            Method::POST,
            &format!("/v1/friends/requests/{from}/decline"),
            None,
        )
        .await
    }

    /// `DELETE /v1/friends/requests/{user_id}`: withdraws the caller's own
    /// request.
    pub async fn cancel_friend_request(&self, to: UserId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/v1/friends/requests/{to}"), None)
            .await
    }

    /// `DELETE /v1/friends/{user_id}`.
    pub async fn remove_friend(&self, friend: UserId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/v1/friends/{friend}"), None)
            .await
    }

    /// `GET /v1/blocks`.
    pub async fn blocks(&self) -> Result<BlocksResponse> {
        self.get("/v1/blocks", &[]).await
    }

    /// `POST /v1/blocks`.
    pub async fn block(&self, user: UserId) -> Result<()> {
        self.no_content(
            Method::POST,
            "/v1/blocks",
            Some(encode(&UserRef { user_id: user })?),
        )
        .await
    }

    /// `DELETE /v1/blocks/{user_id}`.
    pub async fn unblock(&self, user: UserId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/v1/blocks/{user}"), None)
            .await
    }

    // ---- messages and conversations ----

    /// `POST /v1/messages` with a fresh `client_id`, so that the retries
    /// made after a network failure cannot store the message twice. To
    /// send over the open event WebSocket instead (no request per message,
    /// several in flight at once), see
    /// [`Connection::send_message`](crate::Connection::send_message).
    pub async fn send_message(&self, to: Recipient, body: impl Into<String>) -> Result<Message> {
        self.send_message_with(&with_fresh_client_id(to, body.into()))
            .await
    }

    /// `POST /v1/messages` as given. With a `client_id`, a send that fails
    /// in transit is retried (twice) with the same id: the server returns
    /// the stored message if the first attempt had arrived. Without one,
    /// nothing is retried.
    pub async fn send_message_with(&self, request: &SendMessageRequest) -> Result<Message> {
        let body = encode(request)?;
        let mut delays = if request.client_id.is_some() {
            vec![Duration::from_millis(250), Duration::from_secs(1)]
        } else {
            Vec::new()
        }
        .into_iter();
        loop {
            match self
                .authed(Method::POST, "/v1/messages", &[], Some(body.clone()))
                .await
            {
                Ok(response) => return json(response).await,
                Err(ClientError::Unreachable { url, reason }) => match delays.next() {
                    Some(delay) => {
                        tracing::debug!(%url, %reason, "send failed in transit; retrying with the same client_id");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(ClientError::Unreachable { url, reason }),
                },
                Err(other) => return Err(other),
            }
        }
    }

    /// `DELETE /v1/messages/{id}`: returns the tombstone.
    pub async fn delete_message(&self, id: MessageId) -> Result<Message> {
        json(
            self.authed(Method::DELETE, &format!("/v1/messages/{id}"), &[], None)
                .await?,
        )
        .await
    }

    /// `GET /v1/conversations`.
    pub async fn conversations(&self) -> Result<ConversationsResponse> {
        self.get("/v1/conversations", &[]).await
    }

    /// `GET /v1/conversations/{id}/messages`: one page, newest first. Pass
    /// the page's `next_before` as `before` for the next, older one.
    pub async fn history(
        &self,
        conversation: Conversation,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<MessagesPage> {
        let mut query = Vec::new();
        if let Some(before) = before {
            query.push(("before", before.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.get(
            &format!("/v1/conversations/{conversation}/messages"),
            &query,
        )
        .await
    }

    /// `POST /v1/conversations/{id}/read`: everything up to and including
    /// `message` is read.
    pub async fn mark_read(&self, conversation: Conversation, message: MessageId) -> Result<()> {
        self.no_content(
            Method::POST,
            &format!("/v1/conversations/{conversation}/read"),
            Some(encode(&MarkReadRequest {
                message_id: message,
            })?),
        )
        .await
    }

    // ---- groups ----

    /// `GET /v1/groups`.
    pub async fn groups(&self) -> Result<GroupsResponse> {
        self.get("/v1/groups", &[]).await
    }

    /// `POST /v1/groups`; `members` must be the caller's friends.
    pub async fn create_group(&self, name: &str, members: &[UserId]) -> Result<GroupView> {
        self.post(
            "/v1/groups",
            &CreateGroupRequest {
                name: name.to_string(),
                members: members.to_vec(),
            },
        )
        .await
    }

    /// `GET /v1/groups/{id}`.
    pub async fn group(&self, id: GroupId) -> Result<GroupView> {
        self.get(&format!("/v1/groups/{id}"), &[]).await
    }

    /// `PATCH /v1/groups/{id}`.
    pub async fn rename_group(&self, id: GroupId, name: &str) -> Result<Group> {
        json(
            self.authed(
                Method::PATCH,
                &format!("/v1/groups/{id}"),
                &[],
                Some(encode(&RenameGroupRequest {
                    name: name.to_string(),
                })?),
            )
            .await?,
        )
        .await
    }

    /// `GET /v1/groups/{id}/members`.
    pub async fn group_members(&self, id: GroupId) -> Result<Vec<GroupMember>> {
        self.get(&format!("/v1/groups/{id}/members"), &[]).await
    }

    /// `POST /v1/groups/{id}/members`.
    pub async fn add_group_member(
        &self,
        id: GroupId,
        user: UserId,
        role: GroupRole,
    ) -> Result<GroupMember> {
        self.post(
            &format!("/v1/groups/{id}/members"),
            &AddMemberRequest {
                user_id: user,
                role,
            },
        )
        .await
    }

    /// `DELETE /v1/groups/{id}/members/{user_id}`.
    pub async fn remove_group_member(&self, id: GroupId, user: UserId) -> Result<()> {
        self.no_content(
            Method::DELETE,
            &format!("/v1/groups/{id}/members/{user}"),
            None,
        )
        .await
    }

    /// `POST /v1/groups/{id}/leave`.
    pub async fn leave_group(&self, id: GroupId) -> Result<()> {
        self.no_content(Method::POST, &format!("/v1/groups/{id}/leave"), None)
            .await
    }

    // ---- calls ----

    /// `POST /v1/calls`: rings every device of `callee`. `status` is
    /// `accepted` instead of `ringing` on glare (see the protocol).
    pub async fn start_call(&self, callee: UserId) -> Result<CallStarted> {
        self.post("/v1/calls", &StartCallRequest { callee }).await
    }

    /// `POST /v1/calls/{id}/accept`: answers from this device.
    pub async fn accept_call(&self, id: CallId) -> Result<ActiveCall> {
        json(
            self.authed(Method::POST, &format!("/v1/calls/{id}/accept"), &[], None)
                .await?,
        )
        .await
    }

    /// `POST /v1/calls/{id}/reject`.
    pub async fn reject_call(&self, id: CallId) -> Result<()> {
        self.no_content(Method::POST, &format!("/v1/calls/{id}/reject"), None)
            .await
    }

    /// `POST /v1/calls/{id}/cancel`.
    pub async fn cancel_call(&self, id: CallId) -> Result<()> {
        self.no_content(Method::POST, &format!("/v1/calls/{id}/cancel"), None)
            .await
    }

    /// `POST /v1/calls/{id}/hangup`.
    pub async fn hangup_call(&self, id: CallId) -> Result<()> {
        self.no_content(Method::POST, &format!("/v1/calls/{id}/hangup"), None)
            .await
    }

    /// `POST /v1/calls/{id}/connected`: media flows.
    pub async fn call_connected(&self, id: CallId) -> Result<()> {
        self.no_content(Method::POST, &format!("/v1/calls/{id}/connected"), None)
            .await
    }

    /// `GET /v1/calls/active`.
    pub async fn active_calls(&self) -> Result<ActiveCallsResponse> {
        self.get("/v1/calls/active", &[]).await
    }

    /// `GET /v1/calls/history`, newest first. For the next page pass the
    /// last entry's `started_at` as `before`.
    pub async fn call_history(
        &self,
        before: Option<OffsetDateTime>,
        limit: Option<u32>,
    ) -> Result<CallHistoryResponse> {
        let mut query = Vec::new();
        if let Some(before) = before {
            let before = before
                .format(&Rfc3339)
                .map_err(|e| ClientError::Protocol(format!("cannot format {before}: {e}")))?;
            query.push(("before", before));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.get("/v1/calls/history", &query).await
    }

    // ---- ICE ----

    /// `GET /v1/ice-servers`: what WebRTC gets as `iceServers`.
    pub async fn ice_servers(&self) -> Result<IceServersResponse> {
        self.get("/v1/ice-servers", &[]).await
    }

    /// `GET /v1/admin/ice/stun` (admins only).
    pub async fn admin_stun_servers(&self) -> Result<StunListResponse> {
        self.get("/v1/admin/ice/stun", &[]).await
    }

    /// `POST /v1/admin/ice/stun` (admins only).
    pub async fn admin_add_stun_server(&self, url: &str) -> Result<StunListResponse> {
        self.post(
            "/v1/admin/ice/stun",
            &StunUrlRequest {
                url: url.to_string(),
            },
        )
        .await
    }

    /// `DELETE /v1/admin/ice/stun` (admins only).
    pub async fn admin_remove_stun_server(&self, url: &str) -> Result<()> {
        self.no_content(
            Method::DELETE,
            "/v1/admin/ice/stun",
            Some(encode(&StunUrlRequest {
                url: url.to_string(),
            })?),
        )
        .await
    }

    /// `GET /v1/admin/ice/status` (admins only).
    pub async fn admin_ice_status(&self) -> Result<IceStatusResponse> {
        self.get("/v1/admin/ice/status", &[]).await
    }
}

fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body)
        .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))
}

/// Reads a successful answer as `T`.
async fn json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let url = response.url().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(url.as_str(), &e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ClientError::Protocol(format!(
            "{} answered with a body that is not a {}: {e}",
            without_query(url.as_str()),
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("value")
        ))
    })
}

/// Turns a non-2xx answer into [`ClientError::Api`] (or `Protocol` when
/// its body is not the protocol's error body, e.g. a proxy's HTML page).
async fn check_status(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = without_query(response.url().as_str());
    let bytes = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => Err(ClientError::Api {
            status: status.as_u16(),
            error: body.error,
        }),
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes);
            let snippet: String = text.chars().take(200).collect();
            Err(ClientError::Protocol(format!(
                "{url} answered {status} without an error body: {snippet:?}"
            )))
        }
    }
}

/// A send request with a new `client_id`, so that retries of it (over
/// HTTP, or after the socket dropped) store it at most once.
pub(crate) fn with_fresh_client_id(to: Recipient, body: String) -> SendMessageRequest {
    SendMessageRequest {
        to,
        body,
        client_id: Some(uuid::Uuid::now_v7().to_string()),
    }
}

/// The URL without its query, for messages: queries may hold tickets.
fn without_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

pub(crate) fn transport_error(url: &str, error: &reqwest::Error) -> ClientError {
    let reason = error_chain(error);
    if error.is_builder() || error.is_decode() {
        ClientError::Protocol(reason)
    } else {
        ClientError::Unreachable {
            url: without_query(url),
            reason,
        }
    }
}

/// An error and its causes on one line: reqwest's own message alone
/// rarely says what went wrong ("error sending request").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
