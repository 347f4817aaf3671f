//! `voice chat`: an interactive conversation. Lines typed are sent; the
//! conversation's incoming messages (from the event stream) print as they
//! arrive, while you type.

use std::collections::HashMap;

use tokio::io::{AsyncBufReadExt, BufReader};
use voice_client::Client;
use voice_client::events::ClientEvent;
use voice_core::ids::UserId;
use voice_core::model::{Conversation, Message};
use voice_core::wire::{Event, Recipient};

use crate::{Failure, Outcome, describe};

/// Display names of the people whose messages we print.
pub struct Names {
    by_id: HashMap<UserId, String>,
}

impl Names {
    pub async fn load(client: &Client) -> Self {
        let mut by_id = HashMap::new();
        if let Some(me) = client.user() {
            by_id.insert(me.id, "me".to_string());
        }
        if let Ok(friends) = client.friends().await {
            for friend in friends.friends {
                by_id.insert(friend.user.id, describe(&friend.user));
            }
        }
        Self { by_id }
    }

    pub fn of(&self, user: UserId) -> String {
        self.by_id
            .get(&user)
            .cloned()
            .unwrap_or_else(|| user.to_string())
    }
}

pub fn line(names: &Names, message: &Message) -> String {
    let time = format!(
        "{:02}:{:02}",
        message.created_at.hour(),
        message.created_at.minute()
    );
    match &message.body {
        Some(body) => format!("[{time}] {}: {body}", names.of(message.sender)),
        None => format!("[{time}] {}: (deleted)", names.of(message.sender)),
    }
}

pub async fn run(client: &Client, recipient: Recipient) -> Outcome {
    let me = client
        .user()
        .ok_or_else(|| Failure("not signed in".into()))?
        .id;
    let conversation = match recipient {
        Recipient::User(friend) => Conversation::direct(me, friend),
        Recipient::Group(group) => Conversation::Group(group),
    };
    let names = Names::load(client).await;
    let mut events = client.events().await?;
    // Lines go over the live socket (HTTP when it is down), in order.
    let connection = events.connection().clone();
    let recent = client.history(conversation, None, Some(10)).await?;
    for message in recent.messages.iter().rev() {
        println!("{}", line(&names, message));
    }
    println!("-- type a line and press Enter to send; Ctrl-D to quit --");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            typed = stdin.next_line() => match typed {
                Ok(Some(text)) if text.trim().is_empty() => {}
                Ok(Some(text)) => {
                    if let Err(e) = connection.send_message(recipient, text).await {
                        eprintln!("not sent: {}", Failure::from(e).0);
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(Failure(format!("cannot read the terminal: {e}"))),
            },
            event = events.next() => match event {
                Some(ClientEvent::Server(server)) => match server.event {
                    Event::MessageCreated { message } if message.conversation == conversation => {
                        println!("{}", line(&names, &message));
                    }
                    Event::MessageDeleted { conversation: c, .. } if c == conversation => {
                        println!("(a message was deleted)");
                    }
                    Event::Typing { conversation: c, user_id } if c == conversation && user_id != me => {
                        eprintln!("{} is typing…", names.of(user_id));
                    }
                    _ => {}
                },
                Some(ClientEvent::Reconnecting { reason, .. }) => eprintln!("(connection lost: {reason}; reconnecting)"),
                Some(ClientEvent::SessionEnded { reason }) => return Err(Failure(format!("session ended: {reason}"))),
                Some(_) => {}
                None => return Err(Failure("the event connection closed".into())),
            }
        }
    }
}
