//! The keys the host accepts bearer tokens from: the project's JWT secret (HS256)
//! and a JWKS (ES256/RS256), from the environment, a file or a URL. Verification
//! itself is `spine_core::auth`, shared by every HTTP surface; this module loads
//! the keys and fetches a URL's JWKS again when a token names a key it does not
//! know, which is how a signing-key rotation reaches a running host.

pub use spine_core::auth::{sign, Claims, JwtError, Verifier, DEFAULT_LEEWAY_SECS, ROLES};

use anyhow::Context;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// `SPINE_JWKS`: the document itself.
    Inline(String),
    /// `SPINE_JWKS=@/path`: a file, read at start.
    File(std::path::PathBuf),
    /// `SPINE_JWKS_URL`: fetched at start and again on an unknown `kid`.
    Url(String),
}

/// Settings for [`Keys::load`].
#[derive(Debug, Clone, Default)]
pub struct KeySettings {
    pub secret: Option<String>,
    pub jwks: Option<JwksSource>,
    pub leeway_secs: Option<u64>,
    /// A token naming an unknown key fetches the JWKS URL again at most this
    /// often (default 30 s), so tokens with made-up `kid`s cannot turn the host
    /// into a load generator against the key server.
    pub refetch_every: Option<Duration>,
}

/// [`KeySettings::refetch_every`]'s default.
pub const DEFAULT_REFETCH_EVERY: Duration = Duration::from_secs(30);

/// The current verifier, replaced whole when the JWKS is fetched again.
pub struct Keys {
    settings: KeySettings,
    current: RwLock<Arc<Verifier>>,
    fetched_at: Mutex<Instant>,
}

impl Keys {
    /// Loads every configured key; fails if there is none or one is unusable.
    pub async fn load(settings: KeySettings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.secret.is_some() || settings.jwks.is_some(),
            "no JWT keys: set SPINE_JWT_SECRET, SPINE_JWKS or SPINE_JWKS_URL"
        );
        let verifier = build(&settings).await?;
        Ok(Keys {
            settings,
            current: RwLock::new(Arc::new(verifier)),
            fetched_at: Mutex::new(Instant::now()),
        })
    }

    /// Verifies `Authorization: Bearer <token>`.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Claims, JwtError> {
        match self.verifier().verify_header(header) {
            Err(JwtError::UnknownKey(kid)) if self.may_refetch() => {
                match build(&self.settings).await {
                    Ok(fresh) => {
                        tracing::info!(kid, "fetched the JWKS again for an unknown key");
                        *self.current.write().expect("keys lock") = Arc::new(fresh);
                    }
                    Err(e) => tracing::warn!(error = %e, "fetching the JWKS again failed"),
                }
                self.verifier().verify_header(header)
            }
            outcome => outcome,
        }
    }

    fn verifier(&self) -> Arc<Verifier> {
        self.current.read().expect("keys lock").clone()
    }

    fn may_refetch(&self) -> bool {
        if !matches!(self.settings.jwks, Some(JwksSource::Url(_))) {
            return false;
        }
        let mut at = self.fetched_at.lock().expect("keys lock");
        if at.elapsed() < self.settings.refetch_every.unwrap_or(DEFAULT_REFETCH_EVERY) {
            return false;
        }
        *at = Instant::now();
        true
    }
}

async fn build(settings: &KeySettings) -> anyhow::Result<Verifier> {
    let mut verifier = Verifier::new(settings.secret.as_deref().map(str::as_bytes))
        .with_leeway(settings.leeway_secs.unwrap_or(DEFAULT_LEEWAY_SECS));
    let document = match &settings.jwks {
        None => return Ok(verifier),
        Some(JwksSource::Inline(text)) => text.clone(),
        Some(JwksSource::File(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the JWKS file {}", path.display()))?,
        Some(JwksSource::Url(url)) => fetch(url).await?,
    };
    verifier = verifier
        .with_jwks(&document)
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(verifier)
}

async fn fetch(url: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(url)
        .send()
        .await
        .with_context(|| format!("fetching the JWKS from {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "fetching the JWKS from {url}: HTTP {}",
        response.status()
    );
    Ok(response.text().await?)
}
