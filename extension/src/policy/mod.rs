//! Policy: registered plugins (their manifests), owners' consents, and
//! `spine.authorize`, the one decision point the function host and the worker ask
//! before a plugin acts. Tables and grants are in `sql/policy.sql`.
//!
//! A plugin acts for an owner (the request's `auth.uid()`) only within what its
//! manifest declares AND the owner consented to. Every decision is written to the
//! audit log in the caller's transaction: denials as `policy.denied`, uses of a
//! grant as `policy.allowed`.

pub mod consent;

use crate::audit;
use crate::error::{internal, SpineError};
use crate::spi_ext::{optional_row, returning_one};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;
use spine_core::manifest::{self, Action, Manifest};
use std::cell::RefCell;
use std::collections::HashMap;

/// A plugin as stored in `spine.plugins`.
pub struct Plugin {
    pub manifest: Manifest,
    pub enabled: bool,
}

/// Loads a registered plugin, or None when there is none of that name.
pub fn load_plugin(name: &str) -> Result<Option<Plugin>, SpineError> {
    let row = optional_row(Spi::get_two_with_args::<JsonB, bool>(
        "SELECT manifest, enabled FROM spine.plugins WHERE name = $1",
        &[name.into()],
    ))
    .map_err(internal("load plugin"))?;
    let Some((Some(manifest), Some(enabled))) = row else {
        return Ok(None);
    };
    let manifest = Manifest::parse(manifest.0).map_err(|reason| SpineError::Internal {
        context: "stored plugin manifest",
        message: reason,
    })?;
    Ok(Some(Plugin { manifest, enabled }))
}

/// Registers a plugin or replaces its manifest (a new version). Consents given to
/// an earlier version stay, but allow only what the new manifest still declares;
/// what it adds needs new consent (consents name concrete scopes, see [`consent`]).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn register_plugin(manifest: Option<JsonB>) -> Result<String, ErrorReport> {
    let manifest = manifest.ok_or(SpineError::NullArgument("manifest"))?;
    Ok(register(manifest)?)
}

/// Validates and stores a manifest (new plugin or new version), audited.
pub fn register(manifest: JsonB) -> Result<String, SpineError> {
    let parsed =
        Manifest::parse(manifest.0.clone()).map_err(|reason| SpineError::InvalidParameter {
            name: "plugin manifest",
            reason,
        })?;
    let previous = optional_row(Spi::get_one_with_args::<String>(
        "SELECT version FROM spine.plugins WHERE name = $1 FOR UPDATE",
        &[parsed.name.as_str().into()],
    ))
    .map_err(internal("register plugin"))?
    .flatten();
    Spi::run_with_args(
        "INSERT INTO spine.plugins (name, version, manifest) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE \
            SET version = EXCLUDED.version, manifest = EXCLUDED.manifest, updated_at = now()",
        &[
            parsed.name.as_str().into(),
            parsed.version.as_str().into(),
            manifest.into(),
        ],
    )
    .map_err(internal("register plugin"))?;
    let (action, details) = match previous {
        None => ("plugin.registered", json!({"version": parsed.version})),
        Some(from) => (
            "plugin.updated",
            json!({"from_version": from, "version": parsed.version}),
        ),
    };
    audit::record(action, Some(&format!("plugin:{}", parsed.name)), details)?;
    Ok(parsed.name)
}

/// Enables or disables a plugin; a disabled plugin is denied everything.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn set_plugin_enabled(name: Option<&str>, enabled: Option<bool>) -> Result<bool, ErrorReport> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    let enabled = enabled.ok_or(SpineError::NullArgument("enabled"))?;
    let found = optional_row(returning_one::<bool>(
        "UPDATE spine.plugins SET enabled = $2, updated_at = now() WHERE name = $1 RETURNING true",
        &[name.into(), enabled.into()],
    ))
    .map_err(internal("set plugin enabled"))?
    .flatten();
    if found.is_none() {
        return Err(SpineError::NotFound {
            kind: "plugin",
            name: name.into(),
        }
        .into());
    }
    if enabled {
        // A fresh start: the failures that disabled it do not count against it.
        Spi::run_with_args(
            "UPDATE spine.plugin_health SET failures_in_a_row = 0, auto_disabled_at = NULL \
              WHERE plugin = $1",
            &[name.into()],
        )
        .map_err(internal("set plugin enabled"))?;
    }
    let action = if enabled {
        "plugin.enabled"
    } else {
        "plugin.disabled"
    };
    audit::record(action, Some(&format!("plugin:{name}")), json!({}))?;
    Ok(enabled)
}

/// The outcome of one authorization, with the reason for a denial.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied(String),
}

/// Decides whether `principal` may do `action` on `resource` for the current user,
/// and records the decision in the audit log.
pub fn decide(principal: &str, action: &str, resource: &str) -> Result<Decision, SpineError> {
    let plugin_name =
        principal
            .strip_prefix("plugin:")
            .ok_or_else(|| SpineError::InvalidParameter {
                name: "principal",
                reason: format!("\"{principal}\" must be plugin:<name>"),
            })?;
    let parsed_action = Action::parse(action).ok_or_else(|| SpineError::InvalidParameter {
        name: "action",
        reason: format!(
            "\"{action}\" is not one of {}",
            Action::ALL.map(Action::name).join(", ")
        ),
    })?;
    // Hosts compare case-insensitively: decide on the lowercase form.
    let resource = &match parsed_action {
        Action::NetworkFetch => resource.to_ascii_lowercase(),
        _ => resource.to_string(),
    };
    manifest::check_resource(parsed_action, resource, false).map_err(|reason| {
        SpineError::InvalidParameter {
            name: "resource",
            reason,
        }
    })?;
    let owner = crate::caller::request_user()?;
    let decision = match load_plugin(plugin_name)? {
        None => Decision::Denied("plugin is not registered".into()),
        Some(p) if !p.enabled => Decision::Denied("plugin is disabled".into()),
        Some(p) if !p.manifest.declares(parsed_action, resource) => Decision::Denied(format!(
            "the manifest of {plugin_name} {} does not declare {action} on {resource}",
            p.manifest.version
        )),
        // A system job (service_role, no user): the operator deployed the plugin
        // and runs it; its manifest is the bound, and there is nobody to consent.
        Some(_) if owner.is_none() && crate::caller::acts_as_system()? => Decision::Allowed,
        Some(_) if owner.is_none() => Decision::Denied(
            "no user to act for (request.jwt.claims has no sub, and the role is not service_role)"
                .into(),
        ),
        Some(p) => {
            let owner = owner.expect("checked above");
            if consent::covers(owner, &p.manifest, parsed_action, resource)? {
                Decision::Allowed
            } else {
                Decision::Denied(format!(
                    "the user has not consented to {action} on {resource} for {plugin_name}"
                ))
            }
        }
    };
    let mut details = json!({"action": action, "resource": resource});
    if owner.is_none() && decision == Decision::Allowed {
        details["as"] = json!("service_role");
    }
    let audit_action = match &decision {
        Decision::Allowed => "policy.allowed",
        Decision::Denied(reason) => {
            details["reason"] = json!(reason);
            "policy.denied"
        }
    };
    audit::record(audit_action, Some(principal), details)?;
    Ok(decision)
}

thread_local! {
    /// This transaction's entity decisions for the acting plugin, so a query over
    /// many rows asks (and audits) once per kind: (transaction start, decisions).
    static KIND_DECISIONS: RefCell<(i64, HashMap<KindKey, bool>)> = RefCell::new((0, HashMap::new()));
}

/// (plugin, action, kind, user) of one memoised decision.
type KindKey = (String, &'static str, String, Option<[u8; 16]>);

/// Whether the plugin this transaction acts for (`spine.plugin`, set by the
/// function host around a function's database calls) may `action` entities of
/// `kind` for the current user: manifest AND consent, audited once per
/// transaction and kind. True outside a plugin's transaction.
pub fn allows_kind(action: Action, kind: &str) -> Result<bool, SpineError> {
    let Some(plugin) = crate::gucs::acting_plugin() else {
        return Ok(true);
    };
    // SAFETY: reads the backend's current transaction start time.
    let started = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let user = crate::caller::request_user()?.map(|u| *u.as_bytes());
    let key: KindKey = (plugin, action.name(), kind.to_string(), user);
    let known = KIND_DECISIONS.with(|d| {
        let d = d.borrow();
        (d.0 == started).then(|| d.1.get(&key).copied()).flatten()
    });
    if let Some(allowed) = known {
        return Ok(allowed);
    }
    let allowed = decide(&format!("plugin:{}", key.0), action.name(), kind)? == Decision::Allowed;
    KIND_DECISIONS.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != started {
            *d = (started, HashMap::new());
        }
        d.1.insert(key, allowed);
    });
    Ok(allowed)
}

/// [`allows_kind`], raising 42501 on a denial (for writes; reads are filtered).
pub fn require_plugin(action: Action, kind: &str) -> Result<(), SpineError> {
    if allows_kind(action, kind)? {
        return Ok(());
    }
    let plugin = crate::gucs::acting_plugin().unwrap_or_default();
    Err(SpineError::PermissionDenied(format!(
        "plugin:{plugin} may not {action} on {kind} for this caller (not declared in its manifest, or not consented to)"
    )))
}

/// Whether the acting plugin (`spine.plugin`) may `action` (`entities.read` or
/// `entities.write`) entities of `kind`; true when no plugin acts. The RLS policy
/// on `spine.entities` asks it per row (decided once per transaction and kind).
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn plugin_may(action: Option<&str>, kind: Option<&str>) -> Result<bool, ErrorReport> {
    let action = action.ok_or(SpineError::NullArgument("action"))?;
    let parsed = match Action::parse(action) {
        Some(a @ (Action::EntitiesRead | Action::EntitiesWrite)) => a,
        _ => {
            return Err(SpineError::InvalidParameter {
                name: "action",
                reason: format!("\"{action}\" is not entities.read or entities.write"),
            }
            .into())
        }
    };
    // No kind, nothing to read: NULL kinds do not exist (the column is NOT NULL).
    let Some(kind) = kind else { return Ok(false) };
    Ok(allows_kind(parsed, kind)?)
}

/// Whether `principal` (`plugin:<name>`) may do `action` (`entities.read`,
/// `entities.write`, `events.emit`, `secrets.read`, `network.fetch`) on `resource`
/// for the current user. Records the decision in the audit log.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn authorize(
    principal: Option<&str>,
    action: Option<&str>,
    resource: Option<&str>,
) -> Result<bool, ErrorReport> {
    let (principal, action, resource) = required(principal, action, resource)?;
    Ok(decide(principal, action, resource)? == Decision::Allowed)
}

/// NULL is never a principal, action or resource: 22004 rather than a NULL
/// answer a caller might mistake for "no objection".
fn required<'a>(
    principal: Option<&'a str>,
    action: Option<&'a str>,
    resource: Option<&'a str>,
) -> Result<(&'a str, &'a str, &'a str), SpineError> {
    Ok((
        principal.ok_or(SpineError::NullArgument("principal"))?,
        action.ok_or(SpineError::NullArgument("action"))?,
        resource.ok_or(SpineError::NullArgument("resource"))?,
    ))
}

/// Like `spine.authorize`, but a denial raises 42501 with the reason. The audit
/// row of a denial is rolled back with the failing transaction, so the denial is
/// also written to the server log; callers that must keep the row (the function
/// host) call `authorize` and commit before answering.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn require(
    principal: Option<&str>,
    action: Option<&str>,
    resource: Option<&str>,
) -> Result<bool, ErrorReport> {
    let (principal, action, resource) = required(principal, action, resource)?;
    match decide(principal, action, resource)? {
        Decision::Allowed => Ok(true),
        Decision::Denied(reason) => {
            pgrx::log!("spine: denied {principal} {action} on {resource}: {reason}");
            Err(SpineError::PermissionDenied(format!(
                "{principal} may not {action} on {resource}: {reason}"
            ))
            .into())
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const ALICE: &str = "6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11";

    fn as_alice() {
        Spi::run(&format!(
            "SELECT set_config('request.jwt.claims', '{{\"sub\":\"{ALICE}\"}}', true)"
        ))
        .unwrap();
    }

    fn authorize(action: &str, resource: &str) -> bool {
        Spi::get_one_with_args::<bool>(
            "SELECT spine.authorize('plugin:sms', $1, $2)",
            &[action.into(), resource.into()],
        )
        .unwrap()
        .unwrap()
    }

    /// Allowed only where the manifest declares AND the user consented; each
    /// decision is audited.
    #[pg_test]
    fn manifest_and_consent_both_required() {
        Spi::run(
            r#"SELECT spine.register_plugin('{"name":"sms","version":"1.0.0",
                 "permissions":{"secrets":["TOKEN"],"network":["api.example.com"]}}')"#,
        )
        .unwrap();
        as_alice();
        assert!(!authorize("secrets.read", "TOKEN"), "no consent yet");
        Spi::run("SELECT spine.grant_consent('sms', ARRAY['secrets.read:TOKEN'])").unwrap();
        assert!(authorize("secrets.read", "TOKEN"));
        assert!(
            !authorize("network.fetch", "api.example.com"),
            "not consented"
        );
        assert!(!authorize("secrets.read", "OTHER"), "not declared");
        Spi::run("SELECT spine.revoke_consent('sms')").unwrap();
        assert!(!authorize("secrets.read", "TOKEN"), "revoked");
        // Not committed yet: the rows wait in audit_pending for the COMMIT.
        let denied = Spi::get_one::<i64>(
            "SELECT count(*) FROM spine.audit_pending WHERE action = 'policy.denied' AND target = 'plugin:sms'",
        )
        .unwrap();
        assert_eq!(denied, Some(4));
    }
}
