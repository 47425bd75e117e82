//! The gateway as the signed-in user: `/rest/v1` (tables and RPC, PostgREST's
//! contract) and `/functions/v1`, each request with the anon key as `apikey`
//! and the user's access token as the bearer — what supabase-js sends.

use crate::session::{Auth, Session};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub anon_key: String,
    pub session: Session,
}

impl Api {
    /// The saved session, refreshed (and saved again) when about to expire.
    pub async fn connect(
        http: reqwest::Client,
        url: String,
        anon_key: String,
        session_file: &Path,
    ) -> Result<Self> {
        let mut session = Session::load(session_file)?;
        if session.expiring() {
            let auth = Auth {
                http: &http,
                url: &url,
                anon_key: &anon_key,
            };
            session = auth.refresh(&session).await?;
            session.save(session_file)?;
        }
        Ok(Api {
            http,
            url,
            anon_key,
            session,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("apikey", &self.anon_key)
            .bearer_auth(&self.session.access_token)
    }

    /// PostgREST's answer as JSON, or its error (`message`, `code`, `hint`) as ours.
    async fn answer(response: reqwest::Response, what: &str) -> Result<Value> {
        let status = response.status();
        let text = response.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["message"].as_str().unwrap_or(text.as_str());
            let code = body["code"].as_str().unwrap_or_default();
            let hint = body["hint"]
                .as_str()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            bail!("{what}: {status} {code} {message}{hint}");
        }
        Ok(body)
    }

    /// `POST /rest/v1/rpc/{name}` in `schema`.
    pub async fn rpc(&self, schema: &str, name: &str, args: Value) -> Result<Value> {
        let response = self
            .request(reqwest::Method::POST, &format!("/rest/v1/rpc/{name}"))
            .header("content-profile", schema)
            .header("content-type", "application/json")
            .body(args.to_string())
            .send()
            .await
            .with_context(|| format!("reaching {}", self.url))?;
        Self::answer(response, &format!("{schema}.{name}")).await
    }

    /// `GET /rest/v1/{table}?{query}` in `schema`: the rows.
    pub async fn select(&self, schema: &str, table: &str, query: &str) -> Result<Vec<Value>> {
        let response = self
            .request(reqwest::Method::GET, &format!("/rest/v1/{table}?{query}"))
            .header("accept-profile", schema)
            .send()
            .await
            .with_context(|| format!("reaching {}", self.url))?;
        let rows = Self::answer(response, &format!("{schema}.{table}")).await?;
        Ok(rows.as_array().cloned().unwrap_or_default())
    }

    /// `POST /rest/v1/{table}` (public): an insert, or with `on_conflict` an
    /// upsert that merges the given columns.
    pub async fn insert(&self, table: &str, row: Value, on_conflict: Option<&str>) -> Result<()> {
        let mut path = format!("/rest/v1/{table}");
        let mut prefer = "return=minimal".to_string();
        if let Some(columns) = on_conflict {
            path.push_str(&format!("?on_conflict={columns}"));
            prefer.push_str(",resolution=merge-duplicates");
        }
        let response = self
            .request(reqwest::Method::POST, &path)
            .header("content-type", "application/json")
            .header("prefer", prefer)
            .body(row.to_string())
            .send()
            .await
            .with_context(|| format!("reaching {}", self.url))?;
        Self::answer(response, table).await.map(|_| ())
    }

    /// `POST /functions/v1/{name}`: the response, unread (it may be a stream),
    /// or an error carrying the function's JSON error.
    pub async fn invoke(&self, name: &str, body: Value) -> Result<reqwest::Response> {
        let response = self
            .request(reqwest::Method::POST, &format!("/functions/v1/{name}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("reaching {}", self.url))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = serde_json::from_str(&response.text().await?).unwrap_or(Value::Null);
            let message = body["error"]
                .as_str()
                .or(body["message"].as_str())
                .unwrap_or_default();
            let code = body["code"].as_str().unwrap_or_default();
            bail!("function {name}: {status} {code} {message}");
        }
        Ok(response)
    }
}
