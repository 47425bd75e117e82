//! The keys the host accepts bearer tokens from: the project's JWT secret (HS256)
//! and a JWKS (ES256/RS256), from the environment, a file or a URL. Verification
//! itself is `spine_core::auth`, shared by every HTTP surface; this module loads
//! the keys and fetches a URL's JWKS again when a token names a key it does not
//! know, which is how a signing-key rotation reaches a running host.

pub use spine_core::auth::{sign, ApiKeys, Claims, JwtError, Verifier, DEFAULT_LEEWAY_SECS, ROLES};

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
#[derive(Clone, Default)]
pub struct KeySettings {
    pub secret: Option<String>,
    pub jwks: Option<JwksSource>,
    /// The JWKS of the key this process signs tokens with (the gateway's ES256
    /// key): always trusted, beside `jwks`.
    pub own_jwks: Option<String>,
    /// Opaque `sb_publishable_…` / `sb_secret_…` keys.
    pub api_keys: ApiKeys,
    pub leeway_secs: Option<u64>,
    /// A token naming an unknown key fetches the JWKS URL again at most this
    /// often (default 30 s), so tokens with made-up `kid`s cannot turn the host
    /// into a load generator against the key server.
    pub refetch_every: Option<Duration>,
}

/// Names what is configured, never a key.
impl std::fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySettings")
            .field("secret", &self.secret.as_ref().map(|_| "(set)"))
            .field("jwks", &self.jwks)
            .field("own_jwks", &self.own_jwks.is_some())
            .field(
                "api_keys",
                &[&self.api_keys.publishable, &self.api_keys.secret].map(|k| k.is_some()),
            )
            .field("leeway_secs", &self.leeway_secs)
            .field("refetch_every", &self.refetch_every)
            .finish()
    }
}

/// The token flags both HTTP processes (`spine-functions`, `spine-gateway`)
/// take besides the JWT secret, which each names its own way.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Public keys for ES256/RS256 tokens: a JWKS document, or @FILE.
    #[arg(long, env = "SPINE_JWKS", conflicts_with = "jwks_url")]
    pub jwks: Option<String>,

    /// A URL serving the JWKS (Supabase: https://<project>.supabase.co/auth/v1/.well-known/jwks.json),
    /// fetched at start and again when a token names an unknown key.
    #[arg(long, env = "SPINE_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// The least time between two fetches of SPINE_JWKS_URL, in seconds.
    #[arg(long, env = "SPINE_JWKS_REFETCH_SECS", default_value_t = 30)]
    pub jwks_refetch_secs: u64,

    /// Clock skew allowed on exp, nbf and iat, in seconds.
    #[arg(long, env = "SPINE_JWT_LEEWAY", default_value_t = DEFAULT_LEEWAY_SECS)]
    pub jwt_leeway: u64,

    /// A publishable key (`sb_publishable_…`) that acts as the anon role.
    #[arg(long, env = "SPINE_PUBLISHABLE_KEY", hide_env_values = true)]
    pub publishable_key: Option<String>,

    /// A secret key (`sb_secret_…`) that acts as the service role.
    #[arg(long, env = "SPINE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
}

impl TokenArgs {
    /// The settings for [`Keys::load`], with the process's JWT secret.
    pub fn settings(&self, secret: Option<String>) -> KeySettings {
        let jwks = match (&self.jwks, &self.jwks_url) {
            (Some(doc), _) => Some(match doc.strip_prefix('@') {
                Some(path) => JwksSource::File(path.into()),
                None => JwksSource::Inline(doc.clone()),
            }),
            (None, Some(url)) => Some(JwksSource::Url(url.clone())),
            (None, None) => None,
        };
        KeySettings {
            secret,
            jwks,
            own_jwks: None,
            api_keys: ApiKeys {
                publishable: self.publishable_key.clone(),
                secret: self.secret_key.clone(),
            },
            leeway_secs: Some(self.jwt_leeway),
            refetch_every: Some(Duration::from_secs(self.jwks_refetch_secs)),
        }
    }
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
            settings.secret.is_some() || settings.jwks.is_some() || settings.own_jwks.is_some(),
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
        let token = spine_core::auth::bearer_token(header.ok_or(JwtError::Missing)?)?;
        self.verify(token).await
    }

    /// Verifies a token (a JWT or an opaque API key); a JWT naming a key the
    /// JWKS URL did not serve fetches it again first (at most every
    /// `refetch_every`).
    pub async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        match self.verifier().verify(token) {
            Err(JwtError::UnknownKey(kid)) if self.may_refetch() => {
                match build(&self.settings).await {
                    Ok(fresh) => {
                        tracing::info!(kid, "fetched the JWKS again for an unknown key");
                        *self.current.write().expect("keys lock") = Arc::new(fresh);
                    }
                    Err(e) => tracing::warn!(error = %e, "fetching the JWKS again failed"),
                }
                self.verifier().verify(token)
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
        .with_leeway(settings.leeway_secs.unwrap_or(DEFAULT_LEEWAY_SECS))
        .with_api_keys(settings.api_keys.clone());
    if let Some(own) = &settings.own_jwks {
        verifier = verifier.with_jwks(own).map_err(|e| anyhow::anyhow!(e))?;
    }
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
