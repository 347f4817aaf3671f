//! Signing in: dev sign-in for development servers, and the browser flow
//! for native and command-line apps (RFC 8252: a loopback redirect and
//! PKCE).
//!
//! The browser flow never lets a token through the browser: the server
//! sends the browser back to `http://127.0.0.1:<port>/callback` with a
//! one-time login code, which only this process can redeem, because only
//! it knows the PKCE verifier whose challenge the login started with. The
//! random `state` ties the redirect to this sign-in, so a page that makes
//! the browser hit the loopback port with some other code is ignored.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use voice_core::wire::{DevLoginRequest, TokenRequest, TokenResponse};

use crate::client::{Client, Session};
use crate::error::{ClientError, Result};

/// The path of the loopback redirect.
const CALLBACK_PATH: &str = "/callback";
/// Longest request head accepted on the loopback port.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long one browser connection may take to send its request.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A caller's way of showing the sign-in URL; an `Err` says why it could
/// not.
pub type OpenHook = Box<dyn FnOnce(&str) -> std::result::Result<(), String> + Send>;

/// How the sign-in URL reaches a browser.
pub enum OpenUrl {
    /// Try the system's browser (`webbrowser::open`) and print the URL to
    /// stderr, so someone on a headless machine can open it elsewhere.
    SystemBrowser,
    /// Only print the URL to stderr.
    PrintOnly,
    /// Hand the URL to the caller's function (a GUI shows it, a test
    /// drives the redirects itself). An error is logged and the flow
    /// keeps waiting: the user may still open the URL by hand.
    Custom(OpenHook),
}

impl std::fmt::Debug for OpenUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenUrl::SystemBrowser => f.write_str("SystemBrowser"),
            OpenUrl::PrintOnly => f.write_str("PrintOnly"),
            OpenUrl::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Settings of [`Client::browser_login`].
#[derive(Debug)]
pub struct BrowserLogin {
    /// How long to wait for the browser to come back.
    pub timeout: Duration,
    pub open: OpenUrl,
}

impl Default for BrowserLogin {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            open: OpenUrl::SystemBrowser,
        }
    }
}

/// A browser sign-in that has started: the loopback port is listening and
/// [`PendingLogin::url`] is the page to open.
pub struct PendingLogin {
    client: Client,
    listener: TcpListener,
    url: String,
    redirect_uri: String,
    verifier: String,
    state: String,
    timeout: Duration,
}

impl Client {
    /// `POST /v1/auth/dev-login`: signs in as `username` (1–64 characters
    /// of `a-z 0-9 . _ -`) on a development server. A server with dev
    /// sign-in off answers `404` ([`ClientError::Api`]).
    pub async fn dev_login(&self, username: &str) -> Result<Session> {
        let tokens: TokenResponse = self
            .post_public(
                "/v1/auth/dev-login",
                &DevLoginRequest {
                    username: username.to_string(),
                },
            )
            .await?;
        self.adopt_tokens(tokens).await
    }

    /// `POST /v1/auth/token`: redeems a one-time login code with the PKCE
    /// verifier of the sign-in that produced it. [`Client::browser_login`]
    /// does this itself; this is for apps that run the redirect
    /// themselves.
    pub async fn redeem_login_code(&self, code: &str, code_verifier: &str) -> Result<Session> {
        let tokens: TokenResponse = self
            .post_public(
                "/v1/auth/token",
                &TokenRequest {
                    code: code.to_string(),
                    code_verifier: code_verifier.to_string(),
                },
            )
            .await
            .map_err(|error| match error {
                ClientError::Api { error, .. } => ClientError::SignIn(format!(
                    "the server refused the login code: {}",
                    error.message
                )),
                other => other,
            })?;
        self.adopt_tokens(tokens).await
    }

    /// The whole browser sign-in: listens on a loopback port, opens the
    /// sign-in page as `options.open` says, waits for the browser to come
    /// back, and redeems the code.
    pub async fn browser_login(&self, options: BrowserLogin) -> Result<Session> {
        let pending = self.start_browser_login(options.timeout).await?;
        let url = pending.url().to_string();
        match options.open {
            OpenUrl::SystemBrowser => {
                eprintln!("To sign in, open this page in a browser:\n\n  {url}\n");
                // Text-mode browsers can block until they exit: keep that
                // off the runtime's threads, and do not wait for it.
                let opened = tokio::task::spawn_blocking(move || webbrowser::open(&url));
                match tokio::time::timeout(Duration::from_secs(3), opened).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(error))) => {
                        eprintln!(
                            "(Could not open a browser here: {error}. Open the page by hand.)"
                        );
                    }
                    Ok(Err(_)) | Err(_) => {}
                }
            }
            OpenUrl::PrintOnly => {
                eprintln!("To sign in, open this page in a browser:\n\n  {url}\n");
            }
            OpenUrl::Custom(open) => {
                if let Err(error) = open(&url) {
                    tracing::warn!(%error, "the open hook failed; waiting for the page to be opened by hand");
                }
            }
        }
        pending.finish().await
    }

    /// The first half of the browser sign-in: binds `127.0.0.1:0`, makes
    /// the PKCE pair and the state, and builds the sign-in URL. Open
    /// [`PendingLogin::url`] somehow, then call [`PendingLogin::finish`].
    pub async fn start_browser_login(&self, timeout: Duration) -> Result<PendingLogin> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| ClientError::SignIn(format!("cannot listen on a loopback port: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| ClientError::SignIn(format!("cannot read the loopback port: {e}")))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
        let verifier = random_token(32);
        let challenge = pkce_challenge(&verifier);
        let state = random_token(16);
        let url = url::Url::parse_with_params(
            &self.url("/v1/auth/login"),
            [
                ("redirect_uri", redirect_uri.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", state.as_str()),
            ],
        )
        .map_err(|e| ClientError::SignIn(format!("cannot build the sign-in URL: {e}")))?
        .to_string();
        Ok(PendingLogin {
            client: self.clone(),
            listener,
            url,
            redirect_uri,
            verifier,
            state,
            timeout,
        })
    }
}

impl std::fmt::Debug for PendingLogin {
    /// The verifier is the secret that redeems the code: not for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("url", &self.url)
            .field("redirect_uri", &self.redirect_uri)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PendingLogin {
    /// The page that starts the sign-in (`/v1/auth/login?…`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the server sends the browser back to.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the browser's redirect, then redeems the login code.
    pub async fn finish(self) -> Result<Session> {
        let deadline = Instant::now() + self.timeout;
        let code = loop {
            let accepted = tokio::time::timeout_at(deadline, self.listener.accept()).await;
            let (stream, _) = match accepted {
                Err(_) => {
                    return Err(ClientError::SignIn(format!(
                        "the browser did not come back within {} s (if the page showed an error, the server refused the sign-in)",
                        self.timeout.as_secs()
                    )));
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "accepting on the loopback port failed");
                    continue;
                }
                Ok(Ok(accepted)) => accepted,
            };
            match self.handle_connection(stream).await {
                Outcome::Code(code) => break code,
                Outcome::Failed(reason) => return Err(ClientError::SignIn(reason)),
                Outcome::KeepWaiting => {}
            }
        };
        self.client.redeem_login_code(&code, &self.verifier).await
    }

    /// Answers one connection on the loopback port.
    async fn handle_connection(&self, mut stream: TcpStream) -> Outcome {
        let head = match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_head(&mut stream)).await {
            Ok(Ok(head)) => head,
            Ok(Err(error)) => {
                tracing::debug!(%error, "unreadable request on the loopback port");
                return Outcome::KeepWaiting;
            }
            Err(_) => return Outcome::KeepWaiting,
        };
        let Some(target) = request_target(&head) else {
            respond(&mut stream, "400 Bad Request", PAGE_BAD_REQUEST).await;
            return Outcome::KeepWaiting;
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != CALLBACK_PATH {
            // Browsers also ask for /favicon.ico and the like.
            respond(&mut stream, "404 Not Found", PAGE_NOT_FOUND).await;
            return Outcome::KeepWaiting;
        }
        let mut code = None;
        let mut state = None;
        let mut error = None;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "code" => code = Some(value.into_owned()),
                "state" => state = Some(value.into_owned()),
                "error" => error = Some(value.into_owned()),
                _ => {}
            }
        }
        if state.as_deref() != Some(self.state.as_str()) {
            // Not the redirect of this sign-in: maybe another page making
            // the browser hit this port. The real one may still come.
            tracing::warn!("ignored a loopback redirect with the wrong state");
            respond(&mut stream, "400 Bad Request", PAGE_WRONG_STATE).await;
            return Outcome::KeepWaiting;
        }
        match (code, error) {
            (_, Some(error)) => {
                respond(&mut stream, "200 OK", PAGE_FAILED).await;
                Outcome::Failed(format!("the sign-in was refused: {error}"))
            }
            (Some(code), None) => {
                respond(&mut stream, "200 OK", PAGE_DONE).await;
                Outcome::Code(code)
            }
            (None, None) => {
                respond(&mut stream, "200 OK", PAGE_FAILED).await;
                Outcome::Failed("the redirect carried no login code".into())
            }
        }
    }
}

enum Outcome {
    Code(String),
    Failed(String),
    KeepWaiting,
}

/// Reads up to the end of the request head (the blank line).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(head);
        }
        head.extend_from_slice(&buffer[..read]);
        if head.windows(4).any(|window| window == b"\r\n\r\n") || head.len() >= MAX_REQUEST_HEAD {
            return Ok(head);
        }
    }
}

/// The target of a `GET <target> HTTP/1.x` request line.
fn request_target(head: &[u8]) -> Option<&str> {
    let line_end = head.windows(2).position(|window| window == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method != "GET" || !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    Some(target)
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The browser's view is a courtesy: a failed write changes nothing.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

const PAGE_DONE: &str = "<!doctype html><meta charset=utf-8><title>Signed in</title>\
<p>You are signed in to voice. You can close this tab.</p>";
const PAGE_FAILED: &str = "<!doctype html><meta charset=utf-8><title>Sign-in failed</title>\
<p>The sign-in failed. Go back to the app for details; you can close this tab.</p>";
const PAGE_WRONG_STATE: &str = "<!doctype html><meta charset=utf-8><title>Unknown sign-in</title>\
<p>This does not belong to the sign-in in progress.</p>";
const PAGE_NOT_FOUND: &str =
    "<!doctype html><meta charset=utf-8><title>Not found</title><p>Not found.</p>";
const PAGE_BAD_REQUEST: &str =
    "<!doctype html><meta charset=utf-8><title>Bad request</title><p>Bad request.</p>";

/// `bytes` random bytes, base64url without padding: 32 bytes give a
/// 43-character PKCE verifier (RFC 7636 asks for 43 to 128).
fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// The S256 challenge of a verifier: `BASE64URL(SHA256(verifier))`.
fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_the_rfc_example() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let verifier = random_token(32);
        assert_eq!(verifier.len(), 43);
        assert!(
            verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            request_target(b"GET /callback?code=x&state=y HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some("/callback?code=x&state=y")
        );
        assert_eq!(request_target(b"POST /callback HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target(b"GET /callback\r\n\r\n"), None);
        assert_eq!(request_target(b"GET /a b HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target(b"\xff\xfe\r\n"), None);
        assert_eq!(request_target(b"GET / HTTP/1.1"), None);
    }
}
