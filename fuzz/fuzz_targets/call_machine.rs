//! The call state machine fed arbitrary event sequences: bytes become a
//! configuration (timeouts down to zero, small signal buffers) and a
//! sequence of requests, answers, hang-ups, signals, devices leaving and
//! coming back, and time passing, through `CallQueue` and the `Call`s in
//! it, driven as the server's driver does (the timer handled whenever a
//! deadline is due). Unlike the crate's proptest, inputs also come from
//! devices that are not in the call, to calls that ended, and from a
//! second device of the same user.
//!
//! Checked: no panic; a call ends at most once, and says nothing after it
//! ended; after the timer is handled at `now`, no deadline is at or before
//! `now`; signals reach the other device in the order sent, each once;
//! every user the queue places in a call is in it; and once every device
//! is away and every deadline has passed, no call is left and every call
//! that rang ended exactly once.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use voice_core::call::{CallConfig, CallOutput, Device};
use voice_core::call_queue::{CallQueue, Requested};
use voice_core::ids::{CallId, SessionId, UserId};

const USERS: u128 = 4;

/// Devices 0..4 are users 0..4's first sessions; 4 and 5 are second
/// sessions of users 0 and 1.
static DEVICES: LazyLock<Vec<Device>> = LazyLock::new(|| {
    (0..6u128)
        .map(|i| Device {
            user: UserId(uuid::Uuid::from_u128(1 + i % USERS)),
            session: SessionId(uuid::Uuid::from_u128(100 + i)),
        })
        .collect()
});

/// One start for every run: `Instant` has no constructor of its own.
static START: LazyLock<Instant> = LazyLock::new(Instant::now);

struct Run {
    queue: CallQueue,
    now: Instant,
    /// Every id the run has handed out, for inputs to any of them.
    ids: Vec<CallId>,
    /// Calls that rang (or joined by glare): each must end exactly once.
    started: HashSet<CallId>,
    ended: HashSet<CallId>,
    /// The last signal number relayed per (call, sender).
    relayed: HashMap<(CallId, SessionId), u64>,
    next_signal: u64,
}

impl Run {
    fn device(&self, u: &mut Unstructured) -> Result<Device> {
        Ok(DEVICES[usize::from(u.int_in_range(0..=5u8)?)])
    }

    /// The call an input goes to: the device's own call, or any id seen.
    fn target(&self, u: &mut Unstructured, device: Device) -> Result<Option<CallId>> {
        if u.ratio(3, 4)? {
            return Ok(self.queue.call_of(device.user).map(|v| v.id));
        }
        if self.ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.ids[u.choose_index(self.ids.len())?]))
    }

    fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        let device = self.device(u)?;
        let now = self.now;
        match u.int_in_range(0..=9u8)? {
            0 => {
                let callee = self.device(u)?.user;
                let id = CallId(uuid::Uuid::from_u128(1_000 + self.ids.len() as u128));
                self.ids.push(id);
                match self.queue.handle_request(now, id, device, callee) {
                    Ok(Requested::Ringing { call, deadline }) => {
                        assert_eq!(call, id);
                        assert!(deadline >= now);
                        self.started.insert(call);
                    }
                    Ok(Requested::JoinedGlare { call }) => {
                        assert!(self.started.contains(&call), "glare joins a ringing call");
                    }
                    Ok(Requested::Busy { call }) => assert_eq!(call, id),
                    Err(_) => {}
                }
            }
            op @ 1..=6 => {
                if let Some(id) = self.target(u, device)? {
                    let queue = &mut self.queue;
                    let _ = match op {
                        1 => queue.handle_accept(now, id, device),
                        2 => queue.handle_reject(now, id, device.user),
                        3 => queue.handle_cancel(now, id, device.user),
                        4 => queue.handle_hangup(now, id, device),
                        5 => queue.handle_connected(now, id, device),
                        _ => {
                            self.next_signal += 1;
                            let size = usize::from(u.int_in_range(0..=40u8)?);
                            let payload = format!("{}:{}", self.next_signal, "x".repeat(size));
                            queue.handle_signal(now, id, device, payload)
                        }
                    };
                }
            }
            7 => self.queue.handle_device_away(now, device),
            8 => self.queue.handle_device_back(device),
            _ => {
                let ms = u64::from(u.arbitrary::<u16>()?);
                self.now += Duration::from_millis(ms);
            }
        }
        self.drive();
        Ok(())
    }

    /// The driver: handle the timer if it is due, then carry out outputs.
    fn drive(&mut self) {
        if self.queue.poll_timeout().is_some_and(|t| t <= self.now) {
            self.queue.handle_timeout(self.now);
        }
        if let Some(deadline) = self.queue.poll_timeout() {
            assert!(deadline > self.now, "a deadline left overdue");
        }
        while let Some(output) = self.queue.poll_output() {
            self.check(output);
        }
        for device in DEVICES.iter() {
            if let Some(view) = self.queue.call_of(device.user) {
                assert!(
                    view.caller.user == device.user || view.callee == device.user,
                    "a user placed in a call they are not in"
                );
                assert!(!self.ended.contains(&view.id), "an ended call is live");
            }
        }
    }

    fn check(&mut self, output: CallOutput) {
        let call = match &output {
            CallOutput::Ring { call, .. }
            | CallOutput::Accepted { call, .. }
            | CallOutput::Relay { call, .. }
            | CallOutput::Ended { call, .. } => *call,
        };
        assert!(
            !self.ended.contains(&call),
            "output after the end: {output:?}"
        );
        match output {
            CallOutput::Ended { .. } => {
                self.ended.insert(call);
            }
            CallOutput::Relay {
                from, to, payload, ..
            } => {
                assert_ne!(from.user, to.user, "a signal relayed to its sender");
                let number: u64 = payload
                    .split_once(':')
                    .and_then(|(n, _)| n.parse().ok())
                    .expect("the harness's payload");
                let last = self.relayed.insert((call, from.session), number);
                assert!(
                    last.is_none_or(|last| last < number),
                    "signals relayed out of order or twice"
                );
            }
            CallOutput::Accepted { device, .. } => {
                let view = self.queue.get(call);
                if let Some(view) = view {
                    assert_eq!(view.callee, device.user);
                }
            }
            CallOutput::Ring { .. } => {}
        }
    }
}

fn config(u: &mut Unstructured) -> Result<CallConfig> {
    Ok(CallConfig {
        ring_timeout: Duration::from_millis(u64::from(u.int_in_range(0..=40u8)?) * 1_000),
        disconnect_grace: Duration::from_millis(u64::from(u.int_in_range(0..=20u8)?) * 1_000),
        max_buffered_signals: usize::from(u.int_in_range(0..=8u8)?),
        max_buffered_bytes: usize::from(u.arbitrary::<u8>()?),
    })
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let config = config(&mut u)?;
    let settle = config.ring_timeout.max(config.disconnect_grace) + Duration::from_secs(1);
    let mut run = Run {
        queue: CallQueue::new(config),
        now: *START,
        ids: Vec::new(),
        started: HashSet::new(),
        ended: HashSet::new(),
        relayed: HashMap::new(),
        next_signal: 0,
    };
    while !u.is_empty() && run.ids.len() < 200 {
        if run.step(&mut u).is_err() {
            break;
        }
    }
    // Every device goes away and every deadline passes: everything ends.
    for device in DEVICES.iter() {
        run.queue.handle_device_away(run.now, *device);
    }
    run.drive();
    run.now += settle;
    run.drive();
    assert!(run.queue.is_empty(), "calls left: {}", run.queue.len());
    assert_eq!(run.queue.poll_timeout(), None);
    for id in &run.started {
        assert!(run.ended.contains(id), "call {id:?} never ended");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
