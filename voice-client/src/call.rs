//! Calls end to end, for apps: [`Client::place_call`] rings a friend and
//! [`Client::answer_call`] takes a ringing call. Each returns a [`Call`] that
//! follows the server's call events, runs the media through a
//! [`MediaEngine`] with the WebSocket as signaling, reports the connection
//! to the server, and hangs up.

use std::sync::Arc;
use std::time::Duration;

use voice_core::ids::{CallId, UserId};
use voice_core::model::CallOutcome;
use voice_core::wire::{CallStatus, Event};

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::events::{ClientEvent, EventStream};
use crate::media::{
    CallAudio, CallStats, MediaConfig, MediaEngine, MediaSession, MediaState, Role, Str0mEngine,
};

/// How a call's media is set up.
#[derive(Clone)]
pub struct CallOptions {
    /// ICE policy, host addresses, timeouts. Its `ice_servers` are added
    /// to what the server hands out for the call.
    pub media: MediaConfig,
    /// Use the STUN and TURN servers the server hands out (on by default).
    pub use_server_ice_servers: bool,
    pub engine: Arc<dyn MediaEngine>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            media: MediaConfig::default(),
            use_server_ice_servers: true,
            engine: Arc::new(Str0mEngine),
        }
    }
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEnd {
    pub outcome: CallOutcome,
    pub reason: String,
}

/// One call in progress, from either side.
pub struct Call {
    client: Client,
    id: CallId,
    answered: bool,
    reported_connected: bool,
    ended: Option<CallEnd>,
    events: EventStream,
    media: MediaSession,
}

impl Client {
    /// Rings `callee` (every device of theirs). The offer goes out at
    /// once; the server holds it until a device answers. Wait with
    /// [`Call::wait_answered`].
    pub async fn place_call(
        &self,
        callee: UserId,
        audio: CallAudio,
        options: CallOptions,
    ) -> Result<Call> {
        let events = self.events().await?;
        let signaling = Arc::new(self.signaling().await?);
        let started = self.start_call(callee).await?;
        let mut media_config = options.media.clone();
        if options.use_server_ice_servers {
            media_config.ice_servers.extend(started.ice_servers.clone());
        }
        let media = match options
            .engine
            .start(
                started.call_id,
                Role::Offerer,
                media_config,
                signaling,
                audio,
            )
            .await
        {
            Ok(media) => media,
            Err(e) => {
                let _ = self.cancel_call(started.call_id).await;
                return Err(e);
            }
        };
        Ok(Call {
            client: self.clone(),
            id: started.call_id,
            answered: started.status == CallStatus::Accepted,
            reported_connected: false,
            ended: None,
            events,
            media,
        })
    }

    /// Takes a ringing call on this device. Fails with `conflict` when
    /// another device took it first, `gone` when it stopped ringing.
    pub async fn answer_call(
        &self,
        call: CallId,
        audio: CallAudio,
        options: CallOptions,
    ) -> Result<Call> {
        let events = self.events().await?;
        let signaling = Arc::new(self.signaling().await?);
        let mut media_config = options.media.clone();
        if options.use_server_ice_servers {
            media_config
                .ice_servers
                .extend(self.ice_servers().await?.ice_servers);
        }
        // Media first, so the offer the server releases on accept has a
        // subscriber waiting for it.
        let media = options
            .engine
            .start(call, Role::Answerer, media_config, signaling, audio)
            .await?;
        self.accept_call(call).await?;
        Ok(Call {
            client: self.clone(),
            id: call,
            answered: true,
            reported_connected: false,
            ended: None,
            events,
            media,
        })
    }
}

impl Call {
    pub fn id(&self) -> CallId {
        self.id
    }

    /// How it ended, once it has.
    pub fn ended(&self) -> Option<&CallEnd> {
        self.ended.as_ref()
    }

    /// Caller side: waits until a device of the callee answers. Fails
    /// when the call ends first (rejected, missed, busy) or on timeout.
    pub async fn wait_answered(&mut self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.answered {
            self.check_not_ended()?;
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Err(_) => return Err(ClientError::CallEnded("nobody answered in time".into())),
                Ok(event) => self.handle_event(event),
            }
        }
        Ok(())
    }

    /// Waits until audio flows, and tells the server the call connected.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_not_ended()?;
            match self.media.state() {
                MediaState::Connected => break,
                MediaState::Failed(why) => return Err(ClientError::media(why)),
                MediaState::Closed => return Err(ClientError::media("the media closed")),
                _ => {}
            }
            let wait = tokio::time::Instant::now() + Duration::from_millis(20);
            tokio::select! {
                event = self.events.next() => self.handle_event(event),
                _ = tokio::time::sleep_until(wait.min(deadline)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::media(
                    "the call's media did not connect in time",
                ));
            }
        }
        if !self.reported_connected {
            self.reported_connected = true;
            if let Err(e) = self.client.call_connected(self.id).await {
                tracing::debug!(call = %self.id, error = %e, "could not report the connection");
            }
        }
        Ok(())
    }

    /// Waits for the first audio frame from the peer; returns how long
    /// after the media started it came.
    pub async fn wait_first_audio(&self, timeout: Duration) -> Result<Duration> {
        self.media.wait_first_audio(timeout).await
    }

    /// Waits until the call is over: the other side hung up, the server
    /// ended it, or the media failed for good.
    pub async fn wait_ended(&mut self) -> CallEnd {
        while self.ended.is_none() {
            tokio::select! {
                event = self.events.next() => self.handle_event(event),
                state = self.media.wait_ended() => {
                    let reason = match state {
                        MediaState::Failed(why) => why,
                        _ => "the media closed".into(),
                    };
                    self.ended = Some(CallEnd { outcome: CallOutcome::Failed, reason });
                }
            }
        }
        self.ended.clone().unwrap_or_else(|| CallEnd {
            outcome: CallOutcome::Failed,
            reason: "unknown".into(),
        })
    }

    pub fn set_muted(&self, muted: bool) {
        self.media.set_muted(muted);
    }

    pub fn stats(&self) -> CallStats {
        self.media.stats()
    }

    pub fn media_state(&self) -> MediaState {
        self.media.state()
    }

    /// Ends the call (cancels it while it rings) and stops the media;
    /// returns the media's final stats.
    pub async fn hangup(self) -> Result<CallStats> {
        let result = if self.ended.is_some() {
            Ok(())
        } else if self.answered {
            self.client.hangup_call(self.id).await
        } else {
            self.client.cancel_call(self.id).await
        };
        let stats = self.media.close().await;
        match result {
            // Already over on the server: nothing left to end.
            Err(e)
                if matches!(
                    e.code(),
                    Some(
                        voice_core::ErrorCode::Gone
                            | voice_core::ErrorCode::NotFound
                            | voice_core::ErrorCode::Conflict
                    )
                ) =>
            {
                Ok(stats)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(stats),
        }
    }

    /// Stops the media without telling the server (it already ended).
    pub async fn close(self) -> CallStats {
        self.media.close().await
    }

    fn check_not_ended(&self) -> Result<()> {
        match &self.ended {
            Some(end) => Err(ClientError::CallEnded(format!(
                "{:?}: {}",
                end.outcome, end.reason
            ))),
            None => Ok(()),
        }
    }

    fn handle_event(&mut self, event: Option<ClientEvent>) {
        let event = match event {
            Some(ClientEvent::Server(server)) => server.event,
            Some(ClientEvent::SessionEnded { reason })
            | Some(ClientEvent::ResyncRequired { reason, .. })
                if self.ended.is_none() =>
            {
                tracing::debug!(call = %self.id, %reason, "event stream interrupted");
                return;
            }
            None => {
                self.end(CallOutcome::Failed, "the event connection closed");
                return;
            }
            _ => return,
        };
        match event {
            Event::CallAccepted { call_id, .. } if call_id == self.id => self.answered = true,
            Event::CallRejected { call_id } if call_id == self.id => {
                self.end(CallOutcome::Rejected, "rejected")
            }
            Event::CallCancelled { call_id } if call_id == self.id => {
                self.end(CallOutcome::Cancelled, "cancelled by the caller")
            }
            Event::CallExpired { call_id } if call_id == self.id => {
                self.end(CallOutcome::Missed, "nobody answered")
            }
            Event::CallBusy { call_id, .. } if call_id == self.id => {
                self.end(CallOutcome::Busy, "busy in another call")
            }
            Event::CallAnsweredElsewhere { call_id } if call_id == self.id => {
                self.end(CallOutcome::Answered, "answered on another device")
            }
            Event::CallEnded {
                call_id,
                outcome,
                reason,
            } if call_id == self.id => self.end(outcome, &reason),
            _ => {}
        }
    }

    fn end(&mut self, outcome: CallOutcome, reason: &str) {
        if self.ended.is_none() {
            self.ended = Some(CallEnd {
                outcome,
                reason: reason.to_string(),
            });
        }
    }
}
