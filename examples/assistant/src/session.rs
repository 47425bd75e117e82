//! The user's session with `/auth/v1` (Supabase's auth API): signed in once,
//! kept in a file only the user can read, refreshed with its refresh token
//! when the access token is about to expire — as supabase-js keeps it in a
//! browser's storage.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds before expiry at which the access token is refreshed.
const REFRESH_MARGIN: u64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub expires_at: u64,
    pub user_id: String,
    pub email: String,
}

/// Where sessions live: `--session`, else `$XDG_CONFIG_HOME/spine-assistant/session.json`,
/// else `~/.config/…`.
pub fn default_path() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("spine-assistant").join("session.json")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Session {
    /// A session from `/auth/v1`'s answer (signup or token).
    fn from_answer(answer: &Value) -> Result<Self> {
        let text = |k: &str| answer[k].as_str().map(str::to_string);
        let (Some(access_token), Some(refresh_token)) =
            (text("access_token"), text("refresh_token"))
        else {
            bail!("/auth/v1 answered without a session: {answer}");
        };
        Ok(Session {
            access_token,
            refresh_token,
            expires_at: answer["expires_at"]
                .as_u64()
                .unwrap_or_else(|| now() + answer["expires_in"].as_u64().unwrap_or(3600)),
            user_id: answer["user"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            email: answer["user"]["email"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "no session at {}: sign in first (spine-assistant login)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// Written readable by the user only: it holds a refresh token.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn expiring(&self) -> bool {
        self.expires_at <= now() + REFRESH_MARGIN
    }
}

/// `/auth/v1` of one project: its base URL and anon key.
pub struct Auth<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    pub anon_key: &'a str,
}

impl Auth<'_> {
    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}/auth/v1/{path}", self.url))
            .header("apikey", self.anon_key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("reaching {}/auth/v1", self.url))?;
        let status = response.status();
        let answer: Value = serde_json::from_str(&response.text().await?).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = answer["msg"]
                .as_str()
                .or(answer["message"].as_str())
                .or(answer["error_description"].as_str())
                .unwrap_or("no message");
            bail!("/auth/v1/{path}: {status}: {message}");
        }
        Ok(answer)
    }

    pub async fn sign_up(&self, email: &str, password: &str) -> Result<Session> {
        let answer = self
            .post("signup", json!({"email": email, "password": password}))
            .await?;
        Session::from_answer(&answer)
            .context("signed up, but the project asks to confirm the email first: then `login`")
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Session> {
        let answer = self
            .post(
                "token?grant_type=password",
                json!({"email": email, "password": password}),
            )
            .await?;
        Session::from_answer(&answer)
    }

    pub async fn refresh(&self, session: &Session) -> Result<Session> {
        let answer = self
            .post(
                "token?grant_type=refresh_token",
                json!({"refresh_token": session.refresh_token}),
            )
            .await
            .context("refreshing the session (sign in again: spine-assistant login)")?;
        Session::from_answer(&answer)
    }

    pub async fn sign_out(&self, session: &Session) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/auth/v1/logout", self.url))
            .header("apikey", self.anon_key)
            .bearer_auth(&session.access_token)
            .send()
            .await?;
        if !response.status().is_success() && response.status().as_u16() != 401 {
            bail!("/auth/v1/logout: {}", response.status());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_read_from_auths_answer() {
        let s = Session::from_answer(&json!({
            "access_token": "a", "refresh_token": "r", "expires_at": 2_000_000_000u64,
            "user": {"id": "u", "email": "e@x"}}))
        .unwrap();
        assert_eq!(
            (s.access_token.as_str(), s.refresh_token.as_str()),
            ("a", "r")
        );
        assert_eq!((s.user_id.as_str(), s.email.as_str()), ("u", "e@x"));
        assert!(!s.expiring());
        // Without expires_at, expires_in counts from now.
        let s = Session::from_answer(&json!({
            "access_token": "a", "refresh_token": "r", "expires_in": 30, "user": {}}))
        .unwrap();
        assert!(s.expiring(), "30 s left is inside the refresh margin");
    }

    #[test]
    fn an_answer_without_tokens_is_no_session() {
        let err = Session::from_answer(&json!({"user": {"id": "u"}})).unwrap_err();
        assert!(err.to_string().contains("without a session"), "{err}");
    }
}
