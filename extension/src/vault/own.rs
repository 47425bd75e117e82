//! Users' own secrets (bring your own key): a user stores an API key or an OAuth
//! token under a name, as `<user id>/<NAME>` in the vault, where a plugin the
//! user consented to (`secrets.read:<NAME>`) finds it before a shared `<NAME>`
//! ([`super::plugin_secrets`]). Users never read values back; they list names.
//!
//! Writes go through `vault.create_secret` / `vault.update_secret`, so they work
//! on Spine's vault and on supabase_vault alike, and are audited there.

use crate::audit;
use crate::caller;
use crate::error::{internal, SpineError};
use crate::spi_ext::{optional_row, returning_one};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::Uuid;
use serde_json::json;
use spine_core::manifest::{self, Action};

/// Most secrets one user may keep.
const MAX_SECRETS_PER_USER: i64 = 100;

/// The calling user, or 42501: own secrets belong to a user.
fn me() -> Result<Uuid, SpineError> {
    caller::request_user()?.ok_or_else(|| {
        SpineError::PermissionDenied(
            "your own secrets belong to a user: set request.jwt.claims (sub)".into(),
        )
    })
}

/// A secret name as manifests declare them (letters, digits, `_ - .`).
fn check_name(name: &str) -> Result<(), SpineError> {
    manifest::check_resource(Action::SecretsRead, name, false).map_err(|reason| {
        SpineError::InvalidParameter {
            name: "secret name",
            reason,
        }
    })
}

/// The vault name of `owner`'s secret `name`.
pub fn vault_name(owner: Uuid, name: &str) -> String {
    format!("{owner}/{name}")
}

/// Stores (or replaces) `owner`'s secret `name`; its vault id.
pub fn set(owner: Uuid, name: &str, value: &str) -> Result<Uuid, SpineError> {
    check_name(name)?;
    if value.is_empty() {
        return Err(SpineError::InvalidParameter {
            name: "value",
            reason: "a secret must not be empty (delete it instead)".into(),
        });
    }
    if value.len() > super::MAX_SECRET_BYTES {
        return Err(SpineError::TooLarge {
            what: "secret",
            actual: value.len(),
            limit: super::MAX_SECRET_BYTES,
        });
    }
    let full = vault_name(owner, name);
    let existing = optional_row(Spi::get_one_with_args::<Uuid>(
        "SELECT id FROM vault.secrets WHERE name = $1 FOR UPDATE",
        &[full.as_str().into()],
    ))
    .map_err(internal("own secrets: find"))?
    .flatten();
    if let Some(id) = existing {
        Spi::run_with_args(
            "SELECT vault.update_secret($1, $2)",
            &[id.into(), value.into()],
        )
        .map_err(internal("own secrets: update"))?;
        return Ok(id);
    }
    let count = Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM vault.secrets WHERE starts_with(name, $1 || '/')",
        &[owner.to_string().into()],
    )
    .map_err(internal("own secrets: count"))?
    .unwrap_or(0);
    if count >= MAX_SECRETS_PER_USER {
        return Err(SpineError::TooLarge {
            what: "number of your secrets",
            actual: count as usize + 1,
            limit: MAX_SECRETS_PER_USER as usize,
        });
    }
    Spi::get_one_with_args::<Uuid>(
        "SELECT vault.create_secret($1, $2, 'a user''s own secret')",
        &[value.into(), full.as_str().into()],
    )
    .map_err(internal("own secrets: create"))?
    .ok_or_else(|| SpineError::Internal {
        context: "own secrets: create",
        message: "no id".into(),
    })
}

/// Stores or replaces one of the caller's own secrets (`<user id>/<name>` in the
/// vault), for plugins the user consents to read it; returns its vault id.
/// Audited (the name, never the value).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn set_my_secret(name: Option<&str>, value: Option<&str>) -> Result<Uuid, ErrorReport> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    let value = value.ok_or(SpineError::NullArgument("value"))?;
    Ok(set(me()?, name, value)?)
}

/// Deletes one of the caller's own secrets; false when there was none. Audited.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn delete_my_secret(name: Option<&str>) -> Result<bool, ErrorReport> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    check_name(name)?;
    let full = vault_name(me()?, name);
    let id = optional_row(returning_one::<Uuid>(
        "DELETE FROM vault.secrets WHERE name = $1 RETURNING id",
        &[full.as_str().into()],
    ))
    .map_err(internal("own secrets: delete"))?
    .flatten();
    let Some(id) = id else {
        return Ok(false);
    };
    audit::record(
        "vault.secret_deleted",
        Some(&format!("secret:{id}")),
        json!({"name": full}),
    )?;
    Ok(true)
}

/// The names of the caller's own secrets (never values), with when each was
/// stored and last changed.
#[pg_extern(security_definer, stable)]
#[search_path(pg_catalog, pg_temp)]
fn my_secrets() -> Result<
    TableIterator<
        'static,
        (
            name!(name, String),
            name!(created_at, pgrx::datum::TimestampWithTimeZone),
            name!(updated_at, pgrx::datum::TimestampWithTimeZone),
        ),
    >,
    ErrorReport,
> {
    let prefix = format!("{}/", me()?);
    let rows = Spi::connect(|client| {
        let mut out = Vec::new();
        for r in client.select(
            "SELECT substr(name, length($1) + 1), created_at, updated_at FROM vault.secrets \
              WHERE starts_with(name, $1) ORDER BY name",
            None,
            &[prefix.as_str().into()],
        )? {
            if let (Some(n), Some(c), Some(u)) = (r.get(1)?, r.get(2)?, r.get(3)?) {
                out.push((n, c, u));
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(internal("own secrets: list"))?;
    Ok(TableIterator::new(rows))
}
