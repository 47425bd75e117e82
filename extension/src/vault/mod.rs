//! Vault: the Supabase Vault SQL API (`vault.create_secret`, `vault.update_secret`,
//! `vault.secrets`, `vault.decrypted_secrets`) on plain PostgreSQL, plus key
//! rotation and per-plugin secret access. `sql/vault.sql` creates the `vault`
//! objects only where no `vault` schema exists yet (on Supabase, supabase_vault's
//! own objects are used and these functions stay idle).
//!
//! - [`keys`]: root keys from a file or command outside the database.
//! - [`cipher`]: XChaCha20-Poly1305 with the secret id as associated data.
//!
//! Every creation, update, decryption and rotation is written to the audit log.
//! Plaintext exists only in the calling backend's memory: it is never stored,
//! logged or put into an error message.

pub mod cipher;
pub mod keys;
pub mod own;

use crate::audit;
use crate::error::{internal, SpineError};
use crate::policy::{self, Decision};
use crate::spi_ext::{optional_row, returning_one};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use cipher::Sealed;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::Uuid;
use serde_json::json;

/// Largest secret accepted (bytes of UTF-8).
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Whether `vault.secrets` is Spine's (and not supabase_vault's).
fn spine_owns_vault() -> Result<bool, SpineError> {
    Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                  JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid \
                 WHERE e.extname = 'spine' AND d.deptype = 'e' \
                   AND d.classid = 'pg_catalog.pg_class'::regclass \
                   AND d.objid = pg_catalog.to_regclass('vault.secrets'))",
    )
    .map(|b| b.unwrap_or(false))
    .map_err(internal("vault ownership"))
}

fn require_spine_vault() -> Result<(), SpineError> {
    if spine_owns_vault()? {
        Ok(())
    } else {
        Err(SpineError::Unavailable(
            "the vault schema belongs to supabase_vault here; manage its keys with its own tools"
                .into(),
        ))
    }
}

/// supabase_vault lets callers pick a pgsodium key; Spine's vault always encrypts
/// with the newest root key version, so an explicit key is refused, not ignored.
fn refuse_key_id(key_id: Option<Uuid>) -> Result<(), ErrorReport> {
    match key_id {
        None => Ok(()),
        Some(_) => Err(ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "new_key_id is not supported: Spine's vault encrypts with its newest root key",
            "vault",
        )),
    }
}

fn check_secret(secret: &str) -> Result<(), SpineError> {
    if secret.len() > MAX_SECRET_BYTES {
        return Err(SpineError::TooLarge {
            what: "secret",
            actual: secret.len(),
            limit: MAX_SECRET_BYTES,
        });
    }
    Ok(())
}

/// Writers take the lock their INSERT/UPDATE would take anyway, but before they
/// encrypt: a running `rotate_vault_key()` (which holds a conflicting lock) is
/// waited for, so nothing is sealed under a key version it is moving away from.
fn wait_for_rotation() -> Result<(), SpineError> {
    Spi::run("LOCK TABLE vault.secrets IN ROW EXCLUSIVE MODE").map_err(internal("vault: lock"))
}

fn seal_for(id: &Uuid, plaintext: &str) -> Result<Sealed, SpineError> {
    check_secret(plaintext)?;
    let ring = keys::keyring(false)?;
    let (version, key) = ring.current();
    cipher::seal(key, version, id.as_bytes(), plaintext.as_bytes()).map_err(|message| {
        SpineError::Internal {
            context: "vault: seal",
            message,
        }
    })
}

/// Creates a secret and returns its id (behind `vault.create_secret`).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn vault_create_secret(
    secret: Option<&str>,
    name: Option<&str>,
    description: Option<&str>,
    key_id: Option<Uuid>,
) -> Result<Uuid, ErrorReport> {
    refuse_key_id(key_id)?;
    require_spine_vault()?;
    let secret = secret.ok_or(SpineError::NullArgument("new_secret"))?;
    wait_for_rotation()?;
    let id = Uuid::from_bytes(*uuid::Uuid::new_v4().as_bytes());
    let sealed = seal_for(&id, secret)?;
    Spi::run_with_args(
        "INSERT INTO vault.secrets (id, name, description, secret, key_id, nonce) \
         VALUES ($1, $2, coalesce($3, ''), $4, $5, $6)",
        &[
            id.into(),
            name.into(),
            description.into(),
            BASE64.encode(&sealed.ciphertext).into(),
            sealed.key_version.into(),
            sealed.nonce.to_vec().into(),
        ],
    )
    .map_err(internal("vault: create secret"))?;
    audit::record(
        "vault.secret_created",
        Some(&format!("secret:{id}")),
        json!({"name": name, "key_version": sealed.key_version}),
    )?;
    Ok(id)
}

/// Changes a secret's value, name or description (NULL leaves a field as it is;
/// behind `vault.update_secret`).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn vault_update_secret(
    id: Option<Uuid>,
    secret: Option<&str>,
    name: Option<&str>,
    description: Option<&str>,
    key_id: Option<Uuid>,
) -> Result<(), ErrorReport> {
    refuse_key_id(key_id)?;
    let id = id.ok_or(SpineError::NullArgument("secret_id"))?;
    require_spine_vault()?;
    wait_for_rotation()?;
    let sealed = secret.map(|s| seal_for(&id, s)).transpose()?;
    let found = optional_row(returning_one::<bool>(
        "UPDATE vault.secrets SET \
            secret = coalesce($2, secret), key_id = coalesce($3, key_id), \
            nonce = coalesce($4, nonce), name = coalesce($5, name), \
            description = coalesce($6, description), updated_at = now() \
         WHERE id = $1 RETURNING true",
        &[
            id.into(),
            sealed.as_ref().map(|s| BASE64.encode(&s.ciphertext)).into(),
            sealed.as_ref().map(|s| s.key_version).into(),
            sealed.as_ref().map(|s| s.nonce.to_vec()).into(),
            name.into(),
            description.into(),
        ],
    ))
    .map_err(internal("vault: update secret"))?
    .flatten();
    if found.is_none() {
        return Err(SpineError::NotFound {
            kind: "secret",
            name: id.to_string(),
        }
        .into());
    }
    let changed: Vec<&str> = [
        (secret.is_some(), "secret"),
        (name.is_some(), "name"),
        (description.is_some(), "description"),
    ]
    .into_iter()
    .filter_map(|(set, field)| set.then_some(field))
    .collect();
    audit::record(
        "vault.secret_updated",
        Some(&format!("secret:{id}")),
        json!({"changed": changed, "key_version": sealed.map(|s| s.key_version)}),
    )?;
    Ok(())
}

/// Decrypts one stored secret (the `decrypted_secret` column of
/// `vault.decrypted_secrets`); every call is audited. A wrong key or an altered row
/// raises XX001, never returns garbage.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn vault_decrypt(
    id: Uuid,
    secret: Option<&str>,
    key_id: Option<i32>,
    nonce: Option<&[u8]>,
) -> Result<Option<String>, ErrorReport> {
    let (Some(secret), Some(key_version), Some(nonce)) = (secret, key_id, nonce) else {
        return Ok(None);
    };
    let plaintext = decrypt(&id, secret, key_version, nonce)?;
    audit::record(
        "vault.secret_decrypted",
        Some(&format!("secret:{id}")),
        json!({"key_version": key_version}),
    )?;
    Ok(Some(plaintext))
}

fn decrypt(id: &Uuid, secret: &str, key_version: i32, nonce: &[u8]) -> Result<String, SpineError> {
    let corrupted = || {
        SpineError::Corrupted(format!(
            "secret {id} could not be decrypted with key version {key_version}: \
             the key is not the one it was encrypted with, or the row was altered"
        ))
    };
    let sealed = Sealed {
        key_version,
        nonce: nonce.try_into().map_err(|_| corrupted())?,
        ciphertext: BASE64.decode(secret).map_err(|_| corrupted())?,
    };
    let key = keys::key_of(key_version)?;
    let plaintext = cipher::open(&key, id.as_bytes(), &sealed).ok_or_else(corrupted)?;
    String::from_utf8(plaintext).map_err(|_| corrupted())
}

/// Re-encrypts every secret that is not under the newest key version (add a line
/// to the key file first). Readers keep working throughout: each row names its key
/// version, and old versions stay in the key file until this has run. Returns how
/// many secrets were re-encrypted.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn rotate_vault_key() -> Result<i64, ErrorReport> {
    require_spine_vault()?;
    // Writers wait (readers do not) until the rotation commits; see wait_for_rotation.
    Spi::run("LOCK TABLE vault.secrets IN SHARE ROW EXCLUSIVE MODE")
        .map_err(internal("vault: rotate"))?;
    let ring = keys::keyring(true)?;
    let (current, key) = ring.current();
    // Locks the rows to re-encrypt (a concurrent update_secret waits for us).
    let rows: Vec<(Uuid, String, i32, Vec<u8>)> = Spi::connect_mut(|client| {
        let mut rows = Vec::new();
        let table = client.update(
            "SELECT id, secret, key_id, nonce FROM vault.secrets \
             WHERE key_id IS DISTINCT FROM $1 ORDER BY id FOR UPDATE",
            None,
            &[current.into()],
        )?;
        for row in table {
            if let (Some(id), Some(secret), Some(version), Some(nonce)) =
                (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)
            {
                rows.push((id, secret, version, nonce));
            }
        }
        Ok::<_, pgrx::spi::SpiError>(rows)
    })
    .map_err(internal("vault: rotate"))?;
    let mut from_versions: Vec<i32> = Vec::new();
    for (id, secret, version, nonce) in &rows {
        let plaintext = decrypt(id, secret, *version, nonce)?;
        let sealed =
            cipher::seal(key, current, id.as_bytes(), plaintext.as_bytes()).map_err(|message| {
                SpineError::Internal {
                    context: "vault: rotate",
                    message,
                }
            })?;
        Spi::run_with_args(
            "UPDATE vault.secrets SET secret = $2, key_id = $3, nonce = $4 WHERE id = $1",
            &[
                (*id).into(),
                BASE64.encode(&sealed.ciphertext).into(),
                current.into(),
                sealed.nonce.to_vec().into(),
            ],
        )
        .map_err(internal("vault: rotate"))?;
        if !from_versions.contains(version) {
            from_versions.push(*version);
        }
    }
    audit::record(
        "vault.key_rotated",
        Some("vault"),
        json!({"to_version": current, "from_versions": from_versions, "secrets": rows.len()}),
    )?;
    Ok(rows.len() as i64)
}

/// Every key version the keyring holds or a secret uses: whether it is the current
/// one, whether this backend's keyring has it, and how many secrets it encrypts.
/// A version with secrets but not in the keyring means those secrets cannot be read.
#[pg_extern(security_definer, stable)]
#[search_path(pg_catalog, pg_temp)]
fn vault_key_versions() -> Result<
    TableIterator<
        'static,
        (
            name!(key_version, i32),
            name!(current, bool),
            name!(in_keyring, bool),
            name!(secrets, i64),
        ),
    >,
    ErrorReport,
> {
    require_spine_vault()?;
    let ring = keys::keyring(false)?;
    let (current, _) = ring.current();
    let rows = Spi::connect(|client| {
        let mut rows = Vec::new();
        let table = client.select(
            "SELECT v, (SELECT count(*) FROM vault.secrets s WHERE s.key_id = v) \
               FROM (SELECT unnest($1::int[]) UNION SELECT DISTINCT key_id FROM vault.secrets) AS k(v) \
              ORDER BY v",
            None,
            &[ring.versions().into()],
        )?;
        for row in table {
            let version: i32 = row.get(1)?.unwrap_or_default();
            let n: i64 = row.get(2)?.unwrap_or_default();
            rows.push((version, version == current, ring.get(version).is_some(), n));
        }
        Ok::<_, pgrx::spi::SpiError>(rows)
    })
    .map_err(internal("vault: key versions"))?;
    Ok(TableIterator::new(rows))
}

/// The secrets `plugin` may read for the current user: those its manifest
/// declares AND the user consented to (each decision audited by
/// `spine.authorize`'s rules). A user's own secret named `<user id>/<NAME>` is
/// preferred over a shared `<NAME>`. Declared secrets that are not allowed or not
/// stored are left out.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn plugin_secrets(
    plugin: Option<&str>,
) -> Result<TableIterator<'static, (name!(name, String), name!(secret, String))>, ErrorReport> {
    let plugin = plugin.ok_or(SpineError::NullArgument("plugin"))?;
    let manifest = policy::load_plugin(plugin)?
        .ok_or_else(|| SpineError::NotFound {
            kind: "plugin",
            name: plugin.into(),
        })?
        .manifest;
    let owner = crate::caller::request_user()?;
    let principal = format!("plugin:{plugin}");
    let mut out = Vec::new();
    for name in &manifest.permissions.secrets.read {
        if policy::decide(&principal, "secrets.read", name)? != Decision::Allowed {
            continue;
        }
        let mut candidates = Vec::new();
        if let Some(owner) = owner {
            candidates.push(format!("{owner}/{name}"));
        }
        candidates.push(name.clone());
        for candidate in candidates {
            let value = optional_row(Spi::get_one_with_args::<String>(
                "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = $1",
                &[candidate.as_str().into()],
            ))
            .map_err(internal("plugin secrets"))?
            .flatten();
            if let Some(value) = value {
                out.push((name.clone(), value));
                break;
            }
        }
    }
    Ok(TableIterator::new(out))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// create, read back through the view, update, and the stored text is not
    /// the plaintext.
    #[pg_test]
    fn secrets_round_trip() {
        let id = Spi::get_one::<pgrx::Uuid>(
            "SELECT vault.create_secret('s3cr3t-value', 'test_token', 'a test')",
        )
        .unwrap()
        .unwrap();
        let read = Spi::get_one_with_args::<String>(
            "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(read.as_deref(), Some("s3cr3t-value"));
        let stored = Spi::get_one_with_args::<bool>(
            "SELECT secret LIKE '%s3cr3t%' FROM vault.secrets WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(stored, Some(false));
        Spi::run_with_args("SELECT vault.update_secret($1, 'n3w-value')", &[id.into()]).unwrap();
        let read = Spi::get_one::<String>(
            "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = 'test_token'",
        )
        .unwrap();
        assert_eq!(read.as_deref(), Some("n3w-value"));
    }
}
