//! The `voice` command-line client. Its commands (sign-in, friends, chat,
//! calls) arrive with the client SDK issue; for now it says so plainly.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "voice {}: the command-line client is not built yet; run `voice-server` to start a server",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
