//! `voice`: the command-line client. Signs in, manages friends and groups,
//! chats, and makes and takes real voice calls (str0m WebRTC, Opus) with
//! WAV files, tones, or silence as the audio. Everything goes through the
//! voice-client SDK; this file only parses arguments and prints.

mod calls;
mod chat;
mod profile;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use voice_client::login::BrowserLogin;
use voice_client::{Client, ClientError};
use voice_core::ErrorCode;
use voice_core::ids::UserId;
use voice_core::model::Conversation;
use voice_core::model::Group;
use voice_core::wire::{FriendView, Recipient, UserProfile};

#[derive(Parser)]
#[command(
    name = "voice",
    version,
    about = "Messages and voice calls with a voice server"
)]
struct Cli {
    /// The server's URL (remembered after `login`).
    #[arg(long, global = true, env = "VOICE_SERVER")]
    server: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in: through the server's provider in your browser, or with
    /// `--dev NAME` on a development server.
    Login {
        #[arg(long, value_name = "NAME")]
        dev: Option<String>,
        /// Do not open a browser; print the URL to open instead.
        #[arg(long)]
        no_browser: bool,
    },
    /// Sign out on the server and forget the session here.
    Logout,
    /// Who you are signed in as.
    Whoami,
    /// Your friends; or add, accept, decline and remove them.
    Friends {
        #[command(subcommand)]
        action: Option<FriendsAction>,
    },
    /// Send one message to a friend or a group.
    Send { to: String, text: String },
    /// Chat with a friend or a group: type lines to send them; incoming
    /// messages appear as they arrive. Ctrl-D ends.
    Chat { with: String },
    /// Your groups; or create, rename, add, remove, leave.
    Groups {
        #[command(subcommand)]
        action: Option<GroupsAction>,
    },
    /// Call history; with a friend or group, that conversation's messages.
    History {
        with: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Call a friend.
    Call {
        friend: String,
        #[command(flatten)]
        audio: calls::AudioArgs,
    },
    /// Wait for a call and answer it.
    Answer {
        /// Answer the first call without asking.
        #[arg(long)]
        auto: bool,
        /// Stop waiting for a call after this many seconds.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        #[command(flatten)]
        audio: calls::AudioArgs,
    },
}

#[derive(Subcommand)]
enum FriendsAction {
    /// Ask someone (name, email or user id) to be friends.
    Add { who: String },
    /// Accept someone's request.
    Accept { who: String },
    /// Decline someone's request.
    Decline { who: String },
    /// Stop being friends.
    Remove { who: String },
    /// Requests waiting for you, and yours waiting for others.
    Requests,
}

#[derive(Subcommand)]
enum GroupsAction {
    /// Create a group with some of your friends.
    Create { name: String, members: Vec<String> },
    /// Rename a group.
    Rename { group: String, name: String },
    /// Add a friend to a group.
    Add { group: String, who: String },
    /// Remove someone from a group.
    Remove { group: String, who: String },
    /// Leave a group.
    Leave { group: String },
    /// A group's members.
    Members { group: String },
}

/// What went wrong, said for a person at a terminal.
pub struct Failure(String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(match &e {
            ClientError::Unreachable { url, .. } => {
                format!("cannot reach the server at {url}: is it running, and is the URL right?")
            }
            ClientError::NotSignedIn(_) => "not signed in: run `voice login` first".into(),
            ClientError::Api { error, .. } if error.code == ErrorCode::Unauthorized => {
                "your session is no longer valid: run `voice login` again".into()
            }
            _ => e.to_string(),
        })
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s)
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("voice: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("voice: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    let path = profile::path();
    let stored = profile::load(&path)?;
    let server = cli
        .server
        .clone()
        .or_else(|| stored.server.clone())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());

    if let Command::Login { dev, no_browser } = &cli.command {
        let client = Client::new(&server)?;
        let session = match dev {
            Some(name) => client.dev_login(name).await?,
            None => {
                let mut options = BrowserLogin::default();
                if *no_browser {
                    options.open = voice_client::login::OpenUrl::PrintOnly;
                }
                client.browser_login(options).await?
            }
        };
        profile::save(
            &path,
            &profile::Profile {
                server: Some(server.clone()),
                session: Some(session.to_saved(&server)),
            },
        )?;
        println!("signed in to {server} as {}", describe(&session.user));
        return Ok(());
    }

    let saved = stored
        .session
        .filter(|s| s.server_url.trim_end_matches('/') == server.trim_end_matches('/'))
        .ok_or_else(|| {
            Failure(format!(
                "not signed in to {server}: run `voice login` first"
            ))
        })?;
    let client = Client::restore(&saved).await?;
    // Every refresh rotates the refresh token: keep the file current.
    let latest = Arc::new(Mutex::new(client.saved_session()));
    persist(&path, &server, latest.lock().ok().and_then(|s| s.clone()));
    {
        let (path, server, latest) = (path.clone(), server.clone(), latest.clone());
        client.on_session_change(move |session| {
            if let Ok(mut slot) = latest.lock() {
                *slot = session.cloned();
            }
            persist(&path, &server, session.cloned());
        });
    }
    let result = command(&client, cli.command).await;
    client.on_session_change(|_| {});
    result
}

fn persist(
    path: &std::path::Path,
    server: &str,
    session: Option<voice_client::client::SavedSession>,
) {
    let profile = profile::Profile {
        server: Some(server.to_string()),
        session,
    };
    if let Err(e) = profile::save(path, &profile) {
        eprintln!("voice: {e}");
    }
}

async fn command(client: &Client, command: Command) -> Outcome {
    match command {
        Command::Login { .. } => Ok(()),
        Command::Logout => {
            client.logout().await?;
            println!("signed out");
            Ok(())
        }
        Command::Whoami => {
            println!("{}", describe(&client.me().await?));
            Ok(())
        }
        Command::Friends { action } => friends(client, action).await,
        Command::Send { to, text } => {
            let recipient = recipient(client, &to).await?;
            client.send_message(recipient, text).await?;
            println!("sent");
            Ok(())
        }
        Command::Chat { with } => {
            let recipient = recipient(client, &with).await?;
            chat::run(client, recipient).await
        }
        Command::Groups { action } => groups(client, action).await,
        Command::History { with, limit } => history(client, with, limit).await,
        Command::Call { friend, audio } => {
            let friend = find_friend(client, &friend).await?;
            calls::call(client, &friend.user, audio).await
        }
        Command::Answer { auto, wait, audio } => calls::answer(client, auto, wait, audio).await,
    }
}

pub fn describe(user: &UserProfile) -> String {
    match (&user.name, &user.email) {
        (Some(name), Some(email)) => format!("{name} <{email}>"),
        (Some(name), None) => name.clone(),
        (None, Some(email)) => email.clone(),
        (None, None) => user.id.to_string(),
    }
}

fn matches_user(user: &UserProfile, who: &str) -> bool {
    user.id.to_string() == who
        || user
            .name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(who))
        || user
            .email
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(who))
}

async fn find_friend(client: &Client, who: &str) -> Result<FriendView, Failure> {
    let friends = client.friends().await?.friends;
    friends
        .into_iter()
        .find(|f| matches_user(&f.user, who))
        .ok_or_else(|| Failure(format!("{who} is not your friend (see `voice friends`)")))
}

/// Someone by id, name or email, among everyone the server lets us find.
async fn find_user(client: &Client, who: &str) -> Result<UserProfile, Failure> {
    if let Ok(id) = who.parse::<UserId>() {
        return Ok(UserProfile {
            id,
            email: None,
            name: None,
            picture: None,
        });
    }
    let found = client.search_users(who).await?.users;
    found
        .into_iter()
        .find(|u| matches_user(u, who))
        .ok_or_else(|| Failure(format!("nobody called {who} on this server")))
}

async fn find_group(client: &Client, name: &str) -> Result<Group, Failure> {
    let groups = client.groups().await?.groups;
    groups
        .into_iter()
        .find(|g| g.id.to_string() == name || g.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            Failure(format!(
                "you are in no group called {name} (see `voice groups`)"
            ))
        })
}

/// A friend or, failing that, a group.
async fn recipient(client: &Client, who: &str) -> Result<Recipient, Failure> {
    match find_friend(client, who).await {
        Ok(friend) => Ok(Recipient::User(friend.user.id)),
        Err(not_friend) => match find_group(client, who).await {
            Ok(group) => Ok(Recipient::Group(group.id)),
            Err(_) => Err(not_friend),
        },
    }
}

async fn friends(client: &Client, action: Option<FriendsAction>) -> Outcome {
    match action {
        None => {
            let friends = client.friends().await?.friends;
            if friends.is_empty() {
                println!("no friends yet: `voice friends add NAME`");
            }
            for friend in friends {
                println!(
                    "{:<40} {:?} {:?}",
                    describe(&friend.user),
                    friend.status,
                    friend.presence
                );
            }
        }
        Some(FriendsAction::Add { who }) => {
            let user = find_user(client, &who).await?;
            let status = client.send_friend_request(user.id).await?;
            println!("{who}: {:?}", status.status);
        }
        Some(FriendsAction::Accept { who }) => {
            let requests = client.friend_requests().await?.incoming;
            let from = requests
                .into_iter()
                .find(|r| matches_user(&r.user, &who))
                .ok_or_else(|| Failure(format!("no friend request from {who}")))?;
            client.accept_friend_request(from.user.id).await?;
            println!("you and {who} are friends");
        }
        Some(FriendsAction::Decline { who }) => {
            let requests = client.friend_requests().await?.incoming;
            let from = requests
                .into_iter()
                .find(|r| matches_user(&r.user, &who))
                .ok_or_else(|| Failure(format!("no friend request from {who}")))?;
            client.decline_friend_request(from.user.id).await?;
            println!("declined");
        }
        Some(FriendsAction::Remove { who }) => {
            let friend = find_friend(client, &who).await?;
            client.remove_friend(friend.user.id).await?;
            println!("removed {who}");
        }
        Some(FriendsAction::Requests) => {
            let requests = client.friend_requests().await?;
            for r in requests.incoming {
                println!(
                    "from {}  (`voice friends accept {}`)",
                    describe(&r.user),
                    r.user.name.as_deref().unwrap_or(&r.user.id.to_string())
                );
            }
            for r in requests.outgoing {
                println!("to   {}  (waiting)", describe(&r.user));
            }
        }
    }
    Ok(())
}

async fn groups(client: &Client, action: Option<GroupsAction>) -> Outcome {
    match action {
        None => {
            for g in client.groups().await?.groups {
                println!("{:<30} {}", g.name, g.id);
            }
        }
        Some(GroupsAction::Create { name, members }) => {
            let mut ids: Vec<UserId> = Vec::new();
            for member in &members {
                ids.push(find_friend(client, member).await?.user.id);
            }
            let group = client.create_group(&name, &ids).await?;
            println!("created {} ({})", group.group.name, group.group.id);
        }
        Some(GroupsAction::Rename { group, name }) => {
            let id = find_group(client, &group).await?.id;
            client.rename_group(id, &name).await?;
            println!("renamed to {name}");
        }
        Some(GroupsAction::Add { group, who }) => {
            let id = find_group(client, &group).await?.id;
            let user = find_friend(client, &who).await?.user.id;
            client
                .add_group_member(id, user, voice_core::model::GroupRole::Member)
                .await?;
            println!("added {who}");
        }
        Some(GroupsAction::Remove { group, who }) => {
            let id = find_group(client, &group).await?.id;
            let user = find_user(client, &who).await?;
            client.remove_group_member(id, user.id).await?;
            println!("removed {who}");
        }
        Some(GroupsAction::Leave { group }) => {
            let id = find_group(client, &group).await?.id;
            client.leave_group(id).await?;
            println!("left {group}");
        }
        Some(GroupsAction::Members { group }) => {
            let id = find_group(client, &group).await?.id;
            let names = chat::Names::load(client).await;
            for m in client.group_members(id).await? {
                println!("{:<40} {:?}", names.of(m.user_id), m.role);
            }
        }
    }
    Ok(())
}

async fn history(client: &Client, with: Option<String>, limit: u32) -> Outcome {
    let Some(with) = with else {
        for entry in client.call_history(None, Some(limit)).await?.calls {
            let record = &entry.record;
            let me = client.user().map(|u| u.id);
            let direction = if Some(record.caller) == me {
                "outgoing"
            } else {
                "incoming"
            };
            let outcome = record
                .outcome
                .map(|o| format!("{o:?}").to_lowercase())
                .unwrap_or_else(|| "in progress".into());
            let duration = entry
                .duration_secs
                .map(|s| format!(" {}:{:02}", s / 60, s % 60))
                .unwrap_or_default();
            println!("{}  {direction:<8} {outcome}{duration}", record.started_at);
        }
        return Ok(());
    };
    let me = client.user().map(|u| u.id);
    let conversation = match recipient(client, &with).await? {
        Recipient::User(friend) => Conversation::direct(me.unwrap_or(friend), friend),
        Recipient::Group(group) => Conversation::Group(group),
    };
    let page = client.history(conversation, None, Some(limit)).await?;
    let names = chat::Names::load(client).await;
    for message in page.messages.iter().rev() {
        println!("{}", chat::line(&names, message));
    }
    Ok(())
}
