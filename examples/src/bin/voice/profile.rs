//! Where the CLI keeps the server URL and the session between runs: one
//! JSON file, readable by its owner only (it holds a refresh token).
//! `$VOICE_CONFIG` names the file; otherwise it is `voice/config.json` in
//! the user's config directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use voice_client::client::SavedSession;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profile {
    pub server: Option<String>,
    pub session: Option<SavedSession>,
}

pub fn path() -> PathBuf {
    if let Some(path) = std::env::var_os("VOICE_CONFIG") {
        return PathBuf::from(path);
    }
    dirs::config_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("voice")
        .join("config.json")
}

pub fn load(path: &Path) -> Result<Profile, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a voice config file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profile::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes the whole file anew, created with mode 0600 and renamed into
/// place, so a crash never leaves half a token and nobody else can read it.
pub fn save(path: &Path, profile: &Profile) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let temporary = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary).map_err(fail)?;
    let json = serde_json::to_vec_pretty(profile).map_err(|e| e.to_string())?;
    file.write_all(&json).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}
