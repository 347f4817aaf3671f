//! The call state machine, sans-IO in the manner of str0m: inputs carry
//! `now`, effects are polled with [`Call::poll_output`], and the next
//! deadline with [`Call::poll_timeout`]. No clock, socket or runtime here;
//! the server drives it (see also [`crate::call_queue`]).
//!
//! ```text
//!            accept                connected
//! Ringing ───────────▶ Accepted ─────────────▶ Connected
//!   │  reject / cancel / ring timeout │ hangup / lost │
//!   ▼                                 ▼               ▼
//! Ended(Rejected | Cancelled | Missed | Failed)   Ended(Answered | Failed)
//! ```
//!
//! Every call reaches `Ended` once its deadline has passed: the ring
//! timeout while it rings, the disconnect grace while a participant's
//! device is away.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::{CallId, SessionId, UserId};
use crate::model::CallOutcome;

/// Limits and timeouts of a call.
#[derive(Clone, Debug)]
pub struct CallConfig {
    /// How long a call rings before it is missed.
    pub ring_timeout: Duration,
    /// How long a participant's device may be away (its WebSocket closed)
    /// before the call ends.
    pub disconnect_grace: Duration,
    /// Signals the caller may send before the callee's device is known.
    pub max_buffered_signals: usize,
    /// Bytes of those signals.
    pub max_buffered_bytes: usize,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            ring_timeout: Duration::from_secs(30),
            disconnect_grace: Duration::from_secs(15),
            max_buffered_signals: 64,
            max_buffered_bytes: 64 * 1024,
        }
    }
}

/// A user on one of their devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Device {
    pub user: UserId,
    pub session: SessionId,
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallPhase {
    Ringing,
    Accepted,
    /// Both ends reported media flowing.
    Connected,
    Ended(CallOutcome),
}

/// Why an input was refused. Never a panic: every input in every state
/// has an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no such call")]
    NotFound,
    #[error("only the call's participants may do that")]
    NotParticipant,
    #[error("the call was already answered")]
    AlreadyAnswered,
    #[error("the call is over")]
    Over,
    #[error("not possible while the call is {0}")]
    WrongPhase(&'static str),
    #[error("you are already in a call")]
    AlreadyInCall,
    #[error("too much signaling before the call was answered")]
    SignalBufferFull,
    #[error("a call with this id is already on")]
    IdInUse,
}

/// An effect for the driver to carry out.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutput {
    /// Ring every device of the callee.
    Ring {
        call: CallId,
        caller: Device,
        callee: UserId,
        deadline: Instant,
    },
    /// `device` took the call: tell both users; the callee's other devices
    /// stop ringing.
    Accepted {
        call: CallId,
        caller: Device,
        device: Device,
    },
    /// Deliver signaling to one device.
    Relay {
        call: CallId,
        from: Device,
        to: Device,
        payload: String,
    },
    /// The call is over: tell both users, record the outcome.
    Ended {
        call: CallId,
        caller: Device,
        callee: UserId,
        outcome: CallOutcome,
        reason: &'static str,
        /// When it was answered, if it was.
        answered_at: Option<Instant>,
    },
}

/// One call.
#[derive(Debug)]
pub struct Call {
    id: CallId,
    caller: Device,
    callee: UserId,
    callee_device: Option<Device>,
    phase: CallPhase,
    ring_deadline: Instant,
    answered_at: Option<Instant>,
    /// Since when each participant's device has been away, if it is.
    caller_away: Option<Instant>,
    callee_away: Option<Instant>,
    buffered: VecDeque<String>,
    buffered_bytes: usize,
    /// Whether the [`CallOutput::Ring`] every call starts with is still
    /// to be polled. It is made when polled rather than queued in
    /// `outputs`, so a ringing call owns no heap buffer until a second
    /// output comes: a server may hold very many ringing calls.
    ring_unpolled: bool,
    outputs: VecDeque<CallOutput>,
    config: CallConfig,
}

impl Call {
    /// A new call, ringing from `now`.
    pub fn new(
        id: CallId,
        caller: Device,
        callee: UserId,
        now: Instant,
        config: CallConfig,
    ) -> Self {
        let ring_deadline = now + config.ring_timeout;
        Self {
            id,
            caller,
            callee,
            callee_device: None,
            phase: CallPhase::Ringing,
            ring_deadline,
            answered_at: None,
            caller_away: None,
            callee_away: None,
            buffered: VecDeque::new(),
            buffered_bytes: 0,
            ring_unpolled: true,
            outputs: VecDeque::new(),
            config,
        }
    }

    // Getters.

    pub fn id(&self) -> CallId {
        self.id
    }

    pub fn caller(&self) -> Device {
        self.caller
    }

    pub fn callee(&self) -> UserId {
        self.callee
    }

    pub fn callee_device(&self) -> Option<Device> {
        self.callee_device
    }

    pub fn phase(&self) -> CallPhase {
        self.phase
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.phase, CallPhase::Ended(_))
    }

    /// When the call stops ringing.
    pub fn ring_deadline(&self) -> Instant {
        self.ring_deadline
    }

    /// Whether `user` takes part (as caller or callee, on any device).
    pub fn involves(&self, user: UserId) -> bool {
        self.caller.user == user || self.callee == user
    }

    // Inputs.

    /// A device of the callee answers.
    pub fn handle_accept(&mut self, now: Instant, device: Device) -> Result<(), CallError> {
        self.handle_timeout(now);
        if device.user != self.callee {
            return Err(CallError::NotParticipant);
        }
        match self.phase {
            CallPhase::Ringing => {}
            CallPhase::Accepted | CallPhase::Connected => return Err(CallError::AlreadyAnswered),
            CallPhase::Ended(_) => return Err(CallError::Over),
        }
        self.phase = CallPhase::Accepted;
        self.callee_device = Some(device);
        self.answered_at = Some(now);
        self.outputs.push_back(CallOutput::Accepted {
            call: self.id,
            caller: self.caller,
            device,
        });
        // What the caller sent while it rang goes out first, in order.
        while let Some(payload) = self.buffered.pop_front() {
            self.outputs.push_back(CallOutput::Relay {
                call: self.id,
                from: self.caller,
                to: device,
                payload,
            });
        }
        self.buffered_bytes = 0;
        Ok(())
    }

    /// The callee declines (from any of their devices).
    pub fn handle_reject(&mut self, now: Instant, user: UserId) -> Result<(), CallError> {
        self.handle_timeout(now);
        if user != self.callee {
            return Err(CallError::NotParticipant);
        }
        match self.phase {
            CallPhase::Ringing => {
                self.end(CallOutcome::Rejected, "the callee declined");
                Ok(())
            }
            CallPhase::Accepted | CallPhase::Connected => Err(CallError::AlreadyAnswered),
            CallPhase::Ended(_) => Err(CallError::Over),
        }
    }

    /// The caller gives up while it rings.
    pub fn handle_cancel(&mut self, now: Instant, user: UserId) -> Result<(), CallError> {
        self.handle_timeout(now);
        if user != self.caller.user {
            return Err(CallError::NotParticipant);
        }
        match self.phase {
            CallPhase::Ringing => {
                self.end(CallOutcome::Cancelled, "the caller cancelled");
                Ok(())
            }
            CallPhase::Accepted | CallPhase::Connected => {
                Err(CallError::WrongPhase("answered; hang up instead"))
            }
            CallPhase::Ended(_) => Err(CallError::Over),
        }
    }

    /// Either participant ends the call. While it rings this is the
    /// caller cancelling or the callee declining.
    pub fn handle_hangup(&mut self, now: Instant, device: Device) -> Result<(), CallError> {
        self.handle_timeout(now);
        match self.phase {
            CallPhase::Ended(_) => Err(CallError::Over),
            CallPhase::Ringing if device.user == self.caller.user => {
                self.handle_cancel(now, device.user)
            }
            CallPhase::Ringing if device.user == self.callee => {
                self.handle_reject(now, device.user)
            }
            CallPhase::Ringing => Err(CallError::NotParticipant),
            CallPhase::Accepted | CallPhase::Connected => {
                if device == self.caller {
                    self.end(CallOutcome::Answered, "the caller hung up");
                    Ok(())
                } else if Some(device) == self.callee_device {
                    self.end(CallOutcome::Answered, "the callee hung up");
                    Ok(())
                } else {
                    Err(CallError::NotParticipant)
                }
            }
        }
    }

    /// A participant's device reports media flowing.
    pub fn handle_connected(&mut self, now: Instant, device: Device) -> Result<(), CallError> {
        self.handle_timeout(now);
        if !self.is_peer(device) {
            return Err(CallError::NotParticipant);
        }
        match self.phase {
            CallPhase::Accepted | CallPhase::Connected => {
                self.phase = CallPhase::Connected;
                Ok(())
            }
            CallPhase::Ringing => Err(CallError::WrongPhase("ringing")),
            CallPhase::Ended(_) => Err(CallError::Over),
        }
    }

    /// Signaling (an SDP or an ICE candidate, as JSON text) from a device,
    /// for the other participant's device. The caller's signals wait,
    /// bounded, until a device answers.
    pub fn handle_signal(
        &mut self,
        now: Instant,
        from: Device,
        payload: String,
    ) -> Result<(), CallError> {
        self.handle_timeout(now);
        if let CallPhase::Ended(_) = self.phase {
            return Err(CallError::Over);
        }
        if from == self.caller {
            match self.callee_device {
                Some(to) => self.outputs.push_back(CallOutput::Relay {
                    call: self.id,
                    from,
                    to,
                    payload,
                }),
                None => {
                    if self.buffered.len() >= self.config.max_buffered_signals
                        || self.buffered_bytes + payload.len() > self.config.max_buffered_bytes
                    {
                        return Err(CallError::SignalBufferFull);
                    }
                    self.buffered_bytes += payload.len();
                    self.buffered.push_back(payload);
                }
            }
            Ok(())
        } else if Some(from) == self.callee_device {
            self.outputs.push_back(CallOutput::Relay {
                call: self.id,
                from,
                to: self.caller,
                payload,
            });
            Ok(())
        } else {
            Err(CallError::NotParticipant)
        }
    }

    /// A device's WebSocket closed. If it is a participant's, the call
    /// waits for it for the disconnect grace, then ends.
    pub fn handle_device_away(&mut self, now: Instant, session: SessionId) {
        if self.is_ended() {
            return;
        }
        if session == self.caller.session {
            self.caller_away.get_or_insert(now);
        } else if self.callee_device.is_some_and(|d| d.session == session) {
            self.callee_away.get_or_insert(now);
        }
    }

    /// A device's WebSocket is back.
    pub fn handle_device_back(&mut self, session: SessionId) {
        if session == self.caller.session {
            self.caller_away = None;
        } else if self.callee_device.is_some_and(|d| d.session == session) {
            self.callee_away = None;
        }
    }

    /// Ends the call if a deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_ended() {
            return;
        }
        let grace = self.config.disconnect_grace;
        if self.caller_away.is_some_and(|since| now >= since + grace) {
            self.end_lost("the caller's device was lost");
        } else if self.callee_away.is_some_and(|since| now >= since + grace) {
            self.end_lost("the callee's device was lost");
        } else if self.phase == CallPhase::Ringing && now >= self.ring_deadline {
            self.end(CallOutcome::Missed, "nobody answered");
        }
    }

    // Output.

    /// The next deadline, if any: the driver calls
    /// [`Call::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_ended() {
            return None;
        }
        let grace = self.config.disconnect_grace;
        let ring = (self.phase == CallPhase::Ringing).then_some(self.ring_deadline);
        [
            ring,
            self.caller_away.map(|t| t + grace),
            self.callee_away.map(|t| t + grace),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_output(&mut self) -> Option<CallOutput> {
        // The ring comes first: every other output follows an input.
        if std::mem::take(&mut self.ring_unpolled) {
            return Some(CallOutput::Ring {
                call: self.id,
                caller: self.caller,
                callee: self.callee,
                deadline: self.ring_deadline,
            });
        }
        self.outputs.pop_front()
    }

    fn is_peer(&self, device: Device) -> bool {
        device == self.caller || Some(device) == self.callee_device
    }

    fn end_lost(&mut self, reason: &'static str) {
        let outcome = match self.phase {
            CallPhase::Ringing => CallOutcome::Cancelled,
            _ => CallOutcome::Failed,
        };
        self.end(outcome, reason);
    }

    fn end(&mut self, outcome: CallOutcome, reason: &'static str) {
        self.phase = CallPhase::Ended(outcome);
        self.buffered.clear();
        self.buffered_bytes = 0;
        self.outputs.push_back(CallOutput::Ended {
            call: self.id,
            caller: self.caller,
            callee: self.callee,
            outcome,
            reason,
            answered_at: self.answered_at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Setup {
        now: Instant,
        caller: Device,
        phone: Device,
        laptop: Device,
        call: Call,
    }

    fn device() -> Device {
        Device {
            user: UserId::new(),
            session: SessionId::new(),
        }
    }

    fn setup() -> Setup {
        let now = Instant::now();
        let caller = device();
        let phone = device();
        let laptop = Device {
            user: phone.user,
            session: SessionId::new(),
        };
        let call = Call::new(
            CallId::new(),
            caller,
            phone.user,
            now,
            CallConfig::default(),
        );
        Setup {
            now,
            caller,
            phone,
            laptop,
            call,
        }
    }

    fn drain(call: &mut Call) -> Vec<CallOutput> {
        std::iter::from_fn(|| call.poll_output()).collect()
    }

    fn ended(outputs: &[CallOutput]) -> Option<CallOutcome> {
        outputs.iter().find_map(|output| match output {
            CallOutput::Ended { outcome, .. } => Some(*outcome),
            _ => None,
        })
    }

    #[test]
    fn rings_then_one_device_answers_and_buffered_signals_follow_in_order() {
        let Setup {
            now,
            caller,
            phone,
            laptop,
            mut call,
        } = setup();
        assert!(matches!(drain(&mut call)[..], [CallOutput::Ring { .. }]));
        call.handle_signal(now, caller, "offer".into()).unwrap();
        call.handle_signal(now, caller, "candidate-1".into())
            .unwrap();
        assert_eq!(
            call.handle_signal(now, phone, "early".into()),
            Err(CallError::NotParticipant)
        );

        call.handle_accept(now + Duration::from_secs(3), phone)
            .unwrap();
        assert_eq!(
            call.handle_accept(now, laptop),
            Err(CallError::AlreadyAnswered)
        );
        let outputs = drain(&mut call);
        assert!(matches!(outputs[0], CallOutput::Accepted { device, .. } if device == phone));
        let relayed: Vec<&str> = outputs[1..]
            .iter()
            .map(|o| match o {
                CallOutput::Relay { to, payload, .. } if *to == phone => payload.as_str(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(relayed, ["offer", "candidate-1"]);

        call.handle_signal(now, phone, "answer".into()).unwrap();
        assert!(matches!(drain(&mut call)[..], [CallOutput::Relay { to, .. }] if to == caller));
        assert_eq!(
            call.handle_signal(now, laptop, "x".into()),
            Err(CallError::NotParticipant)
        );
        call.handle_connected(now, caller).unwrap();
        assert_eq!(call.phase(), CallPhase::Connected);
        call.handle_hangup(now + Duration::from_secs(60), laptop)
            .unwrap_err();
        call.handle_hangup(now + Duration::from_secs(60), phone)
            .unwrap();
        assert_eq!(ended(&drain(&mut call)), Some(CallOutcome::Answered));
        assert_eq!(call.poll_timeout(), None);
        assert_eq!(call.handle_hangup(now, caller), Err(CallError::Over));
    }

    #[test]
    fn an_unanswered_call_expires_at_its_deadline_and_cannot_be_accepted_after() {
        let Setup {
            now,
            phone,
            mut call,
            ..
        } = setup();
        let deadline = call.poll_timeout().unwrap();
        assert_eq!(deadline, now + Duration::from_secs(30));
        call.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(call.phase(), CallPhase::Ringing);
        // Accepting late expires it first, even before the timer fired.
        assert_eq!(call.handle_accept(deadline, phone), Err(CallError::Over));
        assert_eq!(call.phase(), CallPhase::Ended(CallOutcome::Missed));
    }

    #[test]
    fn reject_cancel_and_who_may_do_what() {
        let Setup {
            now,
            caller,
            phone,
            mut call,
            ..
        } = setup();
        assert_eq!(
            call.handle_reject(now, caller.user),
            Err(CallError::NotParticipant)
        );
        assert_eq!(
            call.handle_cancel(now, phone.user),
            Err(CallError::NotParticipant)
        );
        assert_eq!(
            call.handle_connected(now, caller),
            Err(CallError::WrongPhase("ringing"))
        );
        call.handle_reject(now, phone.user).unwrap();
        assert_eq!(ended(&drain(&mut call)), Some(CallOutcome::Rejected));

        let Setup {
            now,
            caller,
            mut call,
            ..
        } = setup();
        call.handle_cancel(now, caller.user).unwrap();
        assert_eq!(ended(&drain(&mut call)), Some(CallOutcome::Cancelled));
    }

    #[test]
    fn a_lost_device_ends_the_call_after_the_grace_unless_it_returns() {
        let Setup {
            now,
            caller,
            phone,
            mut call,
            ..
        } = setup();
        call.handle_accept(now, phone).unwrap();
        drain(&mut call);
        call.handle_device_away(now, phone.session);
        assert_eq!(call.poll_timeout(), Some(now + Duration::from_secs(15)));
        call.handle_device_back(phone.session);
        assert_eq!(call.poll_timeout(), None);

        call.handle_device_away(now, caller.session);
        call.handle_timeout(now + Duration::from_secs(15));
        let outputs = drain(&mut call);
        assert!(matches!(
            outputs[..],
            [CallOutput::Ended {
                outcome: CallOutcome::Failed,
                reason: "the caller's device was lost",
                ..
            }]
        ));
    }

    #[test]
    fn the_signal_buffer_is_bounded() {
        let Setup {
            now,
            caller,
            mut call,
            ..
        } = setup();
        for _ in 0..64 {
            call.handle_signal(now, caller, "c".into()).unwrap();
        }
        assert_eq!(
            call.handle_signal(now, caller, "c".into()),
            Err(CallError::SignalBufferFull)
        );
    }
}
