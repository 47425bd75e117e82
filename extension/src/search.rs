//! Search tenant tokens: `spine.search_key()` gives the calling user a Meilisearch
//! tenant token (a JWT signed with a search API key) whose search rules filter
//! every `spine_*` index to `owner_id = auth.uid()`. Meilisearch enforces the rule,
//! so a client that searches Meilisearch directly sees only its own documents,
//! whatever filter it sends. Table in `sql/search.sql`.

use crate::audit;
use crate::caller::require_privileged;
use crate::error::{internal, SpineError};
use crate::spi_ext::optional_row;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use pgrx::datum::Interval;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;
use sha2::Sha256;

/// Index names the sink writes: `spine_<kind>`.
pub const INDEX_PATTERN: &str = "spine_*";
/// Longest a token may live.
const MAX_TTL_SECS: i64 = 24 * 3600;

/// The tenant token for `owner`, valid until `exp` (Unix seconds).
pub fn tenant_token(key_uid: &str, key: &str, owner: &str, exp: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({
        "apiKeyUid": key_uid,
        "exp": exp,
        "searchRules": {INDEX_PATTERN: {"filter": format!("owner_id = '{owner}'")}},
    });
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{body}.{sig}")
}

/// Registers where clients search and the search API key tokens are signed with
/// (what the worker's search sink calls when it starts). service_role.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn configure_search(
    url: Option<&str>,
    key_uid: Option<pgrx::Uuid>,
    key: Option<&str>,
) -> Result<bool, ErrorReport> {
    let url = url.ok_or(SpineError::NullArgument("url"))?;
    let key_uid = key_uid.ok_or(SpineError::NullArgument("key_uid"))?;
    let key = key.ok_or(SpineError::NullArgument("key"))?;
    require_privileged("configure search")?;
    let parsed = url::Url::parse(url).map_err(|e| SpineError::InvalidParameter {
        name: "url",
        reason: format!("\"{url}\": {e}"),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || key.is_empty() {
        Err(SpineError::InvalidParameter {
            name: "url",
            reason: format!("\"{url}\" must be http(s), with a non-empty key"),
        })?;
    }
    let current = optional_row(Spi::get_three::<String, pgrx::Uuid, pgrx::Uuid>(
        "SELECT url, key_uid, secret_id FROM spine.search_config",
    ))
    .map_err(internal("search: config"))?;
    let secret_id = match current {
        Some((Some(u), Some(uid), Some(secret))) if u == url && uid == key_uid => {
            let same = optional_row(Spi::get_one_with_args::<bool>(
                "SELECT decrypted_secret = $2 FROM vault.decrypted_secrets WHERE id = $1",
                &[secret.into(), key.into()],
            ))
            .map_err(internal("search: config"))?
            .flatten();
            if same == Some(true) {
                return Ok(false); // unchanged: no new secret version, no audit row
            }
            Spi::run_with_args(
                "SELECT vault.update_secret($1, $2)",
                &[secret.into(), key.into()],
            )
            .map_err(internal("search: update key"))?;
            secret
        }
        Some((_, _, Some(secret))) => {
            Spi::run_with_args(
                "SELECT vault.update_secret($1, $2)",
                &[secret.into(), key.into()],
            )
            .map_err(internal("search: update key"))?;
            secret
        }
        _ => Spi::get_one_with_args::<pgrx::Uuid>(
            "SELECT vault.create_secret($1, 'spine.search.key', 'Meilisearch search key for tenant tokens')",
            &[key.into()],
        )
        .map_err(internal("search: store key"))?
        .ok_or_else(|| SpineError::Internal {
            context: "search: store key",
            message: "vault.create_secret returned NULL".into(),
        })?,
    };
    Spi::run_with_args(
        "INSERT INTO spine.search_config (url, key_uid, secret_id) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, key_uid = EXCLUDED.key_uid, \
             secret_id = EXCLUDED.secret_id, updated_at = now()",
        &[url.into(), key_uid.into(), secret_id.into()],
    )
    .map_err(internal("search: config"))?;
    audit::record(
        "search.configured",
        Some("search"),
        json!({"url": url, "key_uid": key_uid.to_string()}),
    )?;
    Ok(true)
}

/// The search key's plaintext, decrypted (and audited) once per backend and
/// configuration: minting tokens in a loop does not flood the audit log.
fn search_key_secret(secret_id: pgrx::Uuid, stamp: &str) -> Result<String, SpineError> {
    thread_local! {
        static CACHED: std::cell::RefCell<Option<(String, String)>> = const { std::cell::RefCell::new(None) };
    }
    let stamp = format!("{secret_id}@{stamp}");
    if let Some(key) = CACHED.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(s, _)| *s == stamp)
            .map(|(_, k)| k.clone())
    }) {
        return Ok(key);
    }
    let key = optional_row(Spi::get_one_with_args::<String>(
        "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE id = $1",
        &[secret_id.into()],
    ))
    .map_err(internal("search: key"))?
    .flatten()
    .ok_or_else(|| SpineError::Unavailable("the search key is missing from the vault".into()))?;
    CACHED.with(|c| *c.borrow_mut() = Some((stamp, key.clone())));
    Ok(key)
}

/// A Meilisearch tenant token for the calling user: `{url, token, expires_at,
/// indexes}`. Searches with it see only documents whose `owner_id` is the user.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn search_key(ttl: default!(Option<Interval>, "'1 hour'")) -> Result<JsonB, ErrorReport> {
    let ttl = ttl.ok_or(SpineError::NullArgument("ttl"))?;
    let secs = i64::try_from(ttl.as_micros() / 1_000_000)
        .ok()
        .filter(|s| (1..=MAX_TTL_SECS).contains(s))
        .ok_or_else(|| SpineError::InvalidParameter {
            name: "ttl",
            reason: format!("must be between 1 second and {MAX_TTL_SECS} seconds"),
        })?;
    let owner = crate::caller::request_user()?.ok_or_else(|| {
        SpineError::PermissionDenied(
            "search tokens are per user: request.jwt.claims has no sub".into(),
        )
    })?;
    let config = Spi::connect(|client| {
        let mut rows = client.select(
            "SELECT url, key_uid, secret_id, updated_at::text FROM spine.search_config",
            None,
            &[],
        )?;
        Ok::<_, pgrx::spi::SpiError>(match rows.next() {
            Some(r) => Some((
                r.get::<String>(1)?,
                r.get::<pgrx::Uuid>(2)?,
                r.get::<pgrx::Uuid>(3)?,
                r.get::<String>(4)?,
            )),
            None => None,
        })
    })
    .map_err(internal("search: config"))?;
    let Some((Some(url), Some(key_uid), Some(secret_id), Some(stamp))) = config else {
        Err(SpineError::Unavailable(
            "search is not configured: no worker with MEILI_URL has registered a search key".into(),
        ))?
    };
    let key = search_key_secret(secret_id, &stamp)?;
    let now = Spi::get_one::<f64>("SELECT extract(epoch FROM now())::float8")
        .map_err(internal("search: now"))?
        .unwrap_or_default() as i64;
    let exp = now + secs;
    let token = tenant_token(&key_uid.to_string(), &key, &owner.to_string(), exp);
    let expires = Spi::get_one_with_args::<String>(
        "SELECT to_char(to_timestamp($1) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
        &[(exp as f64).into()],
    )
    .map_err(internal("search: expiry"))?
    .unwrap_or_default();
    Ok(JsonB(json!({
        "url": url,
        "token": token,
        "expires_at": expires,
        "indexes": INDEX_PATTERN,
    })))
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::Value;

    /// The token is a JWT whose payload Meilisearch reads: the rule filters on the
    /// owner, names the key, and expires.
    #[test]
    fn token_shape() {
        let t = tenant_token("uid-1", "k", "u-9", 1000);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"apiKeyUid": "uid-1", "exp": 1000,
                   "searchRules": {"spine_*": {"filter": "owner_id = 'u-9'"}}})
        );
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use pgrx::prelude::*;

    fn as_user(sub: &str) {
        Spi::run(&format!(
            "SELECT set_config('request.jwt.claims', '{{\"sub\":\"{sub}\"}}', true)"
        ))
        .unwrap();
    }

    /// Before a worker registered search there is no token to give.
    #[pg_test(
        error = "search is not configured: no worker with MEILI_URL has registered a search key"
    )]
    fn search_key_needs_configuration() {
        as_user("6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11");
        Spi::run("SELECT spine.search_key()").unwrap();
    }

    fn configure() {
        Spi::run(
            "SELECT spine.configure_search('http://search.example:7700', \
             '8f7d6c5b-4a39-4827-9615-0a1b2c3d4e5f', 'search-key-secret')",
        )
        .unwrap();
    }

    /// Tokens are per user.
    #[pg_test(
        error = "permission denied: search tokens are per user: request.jwt.claims has no sub"
    )]
    fn search_key_needs_a_user() {
        configure();
        Spi::run("SELECT spine.search_key()").unwrap();
    }

    /// After configuration: a token for the user, signed with the registered key,
    /// filtered to the user's documents.
    #[pg_test]
    fn search_key_for_the_user() {
        configure();
        as_user("6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11");
        let grant = Spi::get_one::<pgrx::JsonB>("SELECT spine.search_key('10 minutes')")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(grant["url"], "http://search.example:7700");
        // More tokens: the key is decrypted (and audited) once per backend.
        for _ in 0..3 {
            Spi::run("SELECT spine.search_key()").unwrap();
        }
        let decrypts = Spi::get_one::<i64>(
            "SELECT count(*) FROM spine.audit_pending WHERE action = 'vault.secret_decrypted'",
        )
        .unwrap();
        assert_eq!(decrypts, Some(1));
        let token = grant["token"].as_str().unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            claims["searchRules"]["spine_*"]["filter"],
            "owner_id = '6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11'"
        );
        assert_eq!(
            token,
            super::tenant_token(
                "8f7d6c5b-4a39-4827-9615-0a1b2c3d4e5f",
                "search-key-secret",
                "6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11",
                claims["exp"].as_i64().unwrap()
            )
        );
    }
}
