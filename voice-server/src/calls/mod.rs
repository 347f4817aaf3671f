//! Calls: the tokio driver of voice-core's sans-IO [`CallQueue`], and the
//! REST endpoints in [`routes`].
//!
//! One task owns the queue. It takes commands from handlers and WebSocket
//! connections over a channel, sleeps until the queue's one deadline, and
//! after every input carries out what the queue asks (record history,
//! store and publish events, relay signaling) before it answers the
//! command, so a caller that got its 201 will find the call recorded and
//! the callee rung. Time comes from tokio's clock, so tests can pause it.

pub mod routes;

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use voice_core::bus::Devices;
use voice_core::call::{CallConfig, CallError, CallOutput, Device};
use voice_core::call_queue::{CallQueue, CallView, Requested};
use voice_core::model::{CallOutcome, CallRecord};
use voice_core::wire::{Event, RawJson, UserProfile};
use voice_core::{CallId, UserId};

use crate::config::CallsConfig;
use crate::notify::Notifier;

/// Commands waiting for the driver; beyond this, senders wait.
const COMMAND_QUEUE: usize = 1024;

pub fn call_config(config: &CallsConfig) -> CallConfig {
    CallConfig {
        ring_timeout: Duration::from_secs(config.ring_timeout_secs),
        disconnect_grace: Duration::from_secs(config.disconnect_grace_secs),
        max_buffered_signals: config.max_buffered_signals,
        max_buffered_bytes: config.max_buffered_bytes,
    }
}

/// `now` on tokio's clock, as the std `Instant` the queue speaks.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall-clock time of a queue deadline.
pub fn wall_clock(deadline: Instant) -> OffsetDateTime {
    let left = deadline.saturating_duration_since(now());
    OffsetDateTime::now_utc() + left
}

type Reply<T> = oneshot::Sender<Result<T, CallError>>;

enum Command {
    Request(CallId, Device, UserId, Reply<Requested>),
    Accept(CallId, Device, Reply<()>),
    Reject(CallId, UserId, Reply<()>),
    Cancel(CallId, UserId, Reply<()>),
    Hangup(CallId, Device, Reply<()>),
    Connected(CallId, Device, Reply<()>),
    Signal(CallId, Device, String, Reply<()>),
    View(UserId, oneshot::Sender<Option<CallView>>),
    DeviceAway(Device),
    DeviceBack(Device),
}

/// A cheap handle to the driver. The driver stops when the last handle is
/// dropped.
#[derive(Clone)]
pub struct Calls {
    commands: mpsc::Sender<Command>,
}

impl Calls {
    /// Starts the driver task.
    pub fn spawn(config: CallConfig, notifier: Notifier) -> Self {
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        let driver = Driver {
            queue: CallQueue::new(config),
            notifier,
        };
        tokio::spawn(driver.run(inbox));
        Self { commands }
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, CallError> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(command(reply)).await.is_err() {
            return Err(CallError::NotFound);
        }
        answer.await.unwrap_or(Err(CallError::NotFound))
    }

    pub async fn request(
        &self,
        id: CallId,
        caller: Device,
        callee: UserId,
    ) -> Result<Requested, CallError> {
        self.ask(|reply| Command::Request(id, caller, callee, reply))
            .await
    }

    pub async fn accept(&self, id: CallId, device: Device) -> Result<(), CallError> {
        self.ask(|reply| Command::Accept(id, device, reply)).await
    }

    pub async fn reject(&self, id: CallId, user: UserId) -> Result<(), CallError> {
        self.ask(|reply| Command::Reject(id, user, reply)).await
    }

    pub async fn cancel(&self, id: CallId, user: UserId) -> Result<(), CallError> {
        self.ask(|reply| Command::Cancel(id, user, reply)).await
    }

    pub async fn hangup(&self, id: CallId, device: Device) -> Result<(), CallError> {
        self.ask(|reply| Command::Hangup(id, device, reply)).await
    }

    pub async fn connected(&self, id: CallId, device: Device) -> Result<(), CallError> {
        self.ask(|reply| Command::Connected(id, device, reply))
            .await
    }

    pub async fn signal(&self, id: CallId, from: Device, payload: String) -> Result<(), CallError> {
        self.ask(|reply| Command::Signal(id, from, payload, reply))
            .await
    }

    /// The call `user` is in, if any.
    pub async fn call_of(&self, user: UserId) -> Option<CallView> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::View(user, reply)).await.ok()?;
        answer.await.ok().flatten()
    }

    pub async fn device_away(&self, device: Device) {
        let _ = self.commands.send(Command::DeviceAway(device)).await;
    }

    pub async fn device_back(&self, device: Device) {
        let _ = self.commands.send(Command::DeviceBack(device)).await;
    }
}

struct Driver {
    queue: CallQueue,
    notifier: Notifier,
}

/// A command's answer, held until the effects of the command are done.
enum Pending {
    Requested(Reply<Requested>, Result<Requested, CallError>),
    Done(Reply<()>, Result<(), CallError>),
    View(oneshot::Sender<Option<CallView>>, Option<CallView>),
    Nothing,
}

impl Driver {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        loop {
            let deadline = self
                .queue
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let pending = tokio::select! {
                command = inbox.recv() => match command {
                    Some(command) => self.apply(command),
                    None => break,
                },
                _ = sleep_until(deadline) => {
                    self.queue.handle_timeout(now());
                    Pending::Nothing
                }
            };
            while let Some(output) = self.queue.poll_output() {
                self.carry_out(output).await;
            }
            match pending {
                Pending::Requested(reply, result) => drop(reply.send(result)),
                Pending::Done(reply, result) => drop(reply.send(result)),
                Pending::View(reply, view) => drop(reply.send(view)),
                Pending::Nothing => {}
            }
        }
    }

    fn apply(&mut self, command: Command) -> Pending {
        let now = now();
        let queue = &mut self.queue;
        match command {
            Command::Request(id, caller, callee, reply) => {
                Pending::Requested(reply, queue.handle_request(now, id, caller, callee))
            }
            Command::Accept(id, device, reply) => {
                Pending::Done(reply, queue.handle_accept(now, id, device))
            }
            Command::Reject(id, user, reply) => {
                Pending::Done(reply, queue.handle_reject(now, id, user))
            }
            Command::Cancel(id, user, reply) => {
                Pending::Done(reply, queue.handle_cancel(now, id, user))
            }
            Command::Hangup(id, device, reply) => {
                Pending::Done(reply, queue.handle_hangup(now, id, device))
            }
            Command::Connected(id, device, reply) => {
                Pending::Done(reply, queue.handle_connected(now, id, device))
            }
            Command::Signal(id, from, payload, reply) => {
                Pending::Done(reply, queue.handle_signal(now, id, from, payload))
            }
            Command::View(user, reply) => Pending::View(reply, queue.call_of(user)),
            Command::DeviceAway(device) => {
                queue.handle_device_away(now, device);
                Pending::Nothing
            }
            Command::DeviceBack(device) => {
                queue.handle_device_back(device);
                Pending::Nothing
            }
        }
    }

    /// Carries out one effect. Failures are logged: the call state in
    /// memory is the truth, and the next effect may still get through.
    async fn carry_out(&self, output: CallOutput) {
        if let Err(error) = self.try_carry_out(output).await {
            tracing::error!(%error, "carrying out a call effect failed");
        }
    }

    async fn try_carry_out(&self, output: CallOutput) -> voice_core::error::Result<()> {
        let store = &self.notifier.store;
        let wall = OffsetDateTime::now_utc();
        match output {
            CallOutput::Ring {
                call,
                caller,
                callee,
                deadline,
            } => {
                store
                    .insert_call(&CallRecord {
                        id: call,
                        caller: caller.user,
                        callee,
                        started_at: wall,
                        answered_at: None,
                        ended_at: None,
                        outcome: None,
                        reason: None,
                    })
                    .await?;
                let profile = match store.get_user(caller.user).await? {
                    Some(user) => UserProfile::from(&user),
                    None => UserProfile {
                        id: caller.user,
                        email: None,
                        name: None,
                        picture: None,
                    },
                };
                self.notifier
                    .notify(vec![(
                        callee,
                        Event::CallIncoming {
                            call_id: call,
                            caller: profile,
                            expires_at: wall_clock(deadline),
                        },
                    )])
                    .await?;
            }
            CallOutput::Accepted {
                call,
                caller,
                device,
            } => {
                store.mark_call_answered(call, wall).await?;
                let accepted = Event::CallAccepted {
                    call_id: call,
                    device: device.session,
                };
                self.notifier
                    .notify(vec![
                        (caller.user, accepted.clone()),
                        (device.user, accepted),
                    ])
                    .await?;
                self.notifier
                    .publish_to_devices(
                        device.user,
                        Devices::AllBut(device.session),
                        Event::CallAnsweredElsewhere { call_id: call },
                    )
                    .await;
            }
            CallOutput::Relay {
                call,
                from,
                to,
                payload,
            } => {
                let payload = RawJson::from_text(&payload)?;
                self.notifier
                    .publish_to_devices(
                        to.user,
                        Devices::Only(to.session),
                        Event::CallSignal {
                            call_id: call,
                            from: from.session,
                            payload,
                        },
                    )
                    .await;
            }
            CallOutput::Ended {
                call,
                caller,
                callee,
                outcome,
                reason,
                answered_at,
            } => {
                if outcome == CallOutcome::Busy {
                    store
                        .insert_call(&CallRecord {
                            id: call,
                            caller: caller.user,
                            callee,
                            started_at: wall,
                            answered_at: None,
                            ended_at: Some(wall),
                            outcome: Some(outcome),
                            reason: Some(reason.to_string()),
                        })
                        .await?;
                } else {
                    store.finish_call(call, outcome, reason, wall).await?;
                }
                let event = match (answered_at, outcome) {
                    (None, CallOutcome::Rejected) => Event::CallRejected { call_id: call },
                    (None, CallOutcome::Cancelled) => Event::CallCancelled { call_id: call },
                    (None, CallOutcome::Missed) => Event::CallExpired { call_id: call },
                    (None, CallOutcome::Busy) => Event::CallBusy {
                        call_id: call,
                        callee,
                    },
                    _ => Event::CallEnded {
                        call_id: call,
                        outcome,
                        reason: reason.to_string(),
                    },
                };
                let mut told = vec![(caller.user, event.clone())];
                if outcome != CallOutcome::Busy {
                    told.push((callee, event));
                }
                self.notifier.notify(told).await?;
            }
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Closes the calls a previous run of the server left open: they were in
/// its memory only. Both sides are told, so nothing rings forever.
pub async fn close_lost_calls(notifier: &Notifier) -> voice_core::error::Result<usize> {
    let lost = notifier.store.unfinished_calls().await?;
    let reason = "the server restarted";
    for call in &lost {
        let ended = notifier
            .store
            .finish_call(
                call.id,
                CallOutcome::Failed,
                reason,
                OffsetDateTime::now_utc(),
            )
            .await?;
        if ended {
            let event = Event::CallEnded {
                call_id: call.id,
                outcome: CallOutcome::Failed,
                reason: reason.to_string(),
            };
            notifier
                .notify(vec![(call.caller, event.clone()), (call.callee, event)])
                .await?;
        }
    }
    Ok(lost.len())
}
