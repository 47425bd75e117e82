//! Consents: what an owner allowed a plugin, as scopes `action:resource`
//! (`secrets.read:TWILIO_AUTH_TOKEN`, `events.emit:sms.*`). A grant may say
//! `action:*` (everything the manifest declares for that action) or `*`
//! (everything it declares); these are expanded into the manifest's concrete
//! entries when granted, so a later manifest version that asks for more gets
//! nothing more without new consent. A version that drops a permission leaves the
//! consent on record, allowing nothing, because every decision checks the manifest
//! too.

use super::load_plugin;
use crate::audit;
use crate::caller;
use crate::error::{internal, SpineError};
use crate::spi_ext::returning_one;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::Uuid;
use serde_json::json;
use spine_core::manifest::{self, Action, Manifest};

/// A parsed consent scope.
#[derive(Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// `*`: everything the manifest declares.
    Everything,
    /// `action:*` or `action:resource-or-pattern`.
    Action(Action, Option<&'a str>),
}

impl<'a> Scope<'a> {
    pub fn parse(scope: &'a str) -> Result<Scope<'a>, String> {
        if scope == "*" {
            return Ok(Scope::Everything);
        }
        let (action, resource) = scope
            .split_once(':')
            .ok_or_else(|| format!("scope \"{scope}\" must be action:resource, action:* or *"))?;
        let action = Action::parse(action)
            .ok_or_else(|| format!("scope \"{scope}\": unknown action \"{action}\""))?;
        if resource == "*" {
            return Ok(Scope::Action(action, None));
        }
        manifest::check_resource(action, resource, true)
            .map_err(|reason| format!("scope \"{scope}\": {reason}"))?;
        Ok(Scope::Action(action, Some(resource)))
    }

    /// Whether this scope allows `action` on `resource` (the manifest is checked
    /// separately).
    pub fn allows(&self, action: Action, resource: &str) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Action(a, None) => *a == action,
            Scope::Action(a, Some(pattern)) => *a == action && action.covers(pattern, resource),
        }
    }

    /// Whether the manifest declares everything this scope could allow.
    pub fn within(&self, manifest: &Manifest) -> bool {
        match self {
            Scope::Everything | Scope::Action(_, None) => true,
            Scope::Action(a, Some(resource)) => manifest.declares(*a, resource),
        }
    }
}

/// Whether `owner` has an active consent for `plugin` that allows `action` on
/// `resource`.
pub fn covers(
    owner: Uuid,
    manifest: &Manifest,
    action: Action,
    resource: &str,
) -> Result<bool, SpineError> {
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT scope FROM spine.consents \
                 WHERE owner_id = $1 AND plugin = $2 AND revoked_at IS NULL",
                None,
                &[owner.into(), manifest.name.as_str().into()],
            )
            .map_err(internal("consent lookup"))?;
        for row in rows {
            let scope: Option<String> = row.get(1).map_err(internal("consent lookup"))?;
            let allows = scope
                .as_deref()
                .and_then(|s| Scope::parse(s).ok())
                .is_some_and(|s| s.allows(action, resource));
            if allows {
                return Ok(true);
            }
        }
        Ok(false)
    })
}

fn plugin_manifest(plugin: &str) -> Result<Manifest, SpineError> {
    load_plugin(plugin)?
        .map(|p| p.manifest)
        .ok_or_else(|| SpineError::NotFound {
            kind: "plugin",
            name: plugin.into(),
        })
}

/// Most scopes in one grant or revoke.
const MAX_SCOPES: usize = 100;

/// The scopes argument: present, 1 to MAX_SCOPES entries, none NULL.
fn scope_list(scopes: Option<Vec<Option<String>>>) -> Result<Vec<String>, SpineError> {
    let scopes = scopes.ok_or(SpineError::NullArgument("scopes"))?;
    if scopes.is_empty() || scopes.len() > MAX_SCOPES {
        return Err(SpineError::InvalidParameter {
            name: "scopes",
            reason: format!("must name 1 to {MAX_SCOPES} scopes"),
        });
    }
    scopes
        .into_iter()
        .map(|s| s.ok_or(SpineError::NullArgument("a scope")))
        .collect()
}

fn parse_scope(scope: &str) -> Result<Scope<'_>, SpineError> {
    Scope::parse(scope).map_err(|reason| SpineError::InvalidParameter {
        name: "scope",
        reason,
    })
}

/// The concrete `action:pattern` scopes a requested scope stands for.
fn expand(scope: &Scope<'_>, manifest: &Manifest) -> Vec<String> {
    let actions: Vec<Action> = match scope {
        Scope::Everything => Action::ALL.to_vec(),
        Scope::Action(action, None) => vec![*action],
        Scope::Action(action, Some(resource)) => return vec![format!("{action}:{resource}")],
    };
    actions
        .into_iter()
        .flat_map(|a| manifest.declared(a).iter().map(move |p| format!("{a}:{p}")))
        .collect()
}

/// Grants `scopes` of `plugin` for the current user (or `owner`, for service_role).
/// Each scope must lie within the plugin's manifest; `*` and `action:*` are
/// expanded into what the manifest declares now. Returns how many scopes were newly
/// granted (already active ones are left as they are).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn grant_consent(
    plugin: Option<&str>,
    scopes: Option<Vec<Option<String>>>,
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<i64, ErrorReport> {
    let plugin = plugin.ok_or(SpineError::NullArgument("plugin"))?;
    let scopes = scope_list(scopes)?;
    let owner = caller::acting_owner(owner, "consents")?;
    let manifest = plugin_manifest(plugin)?;
    let mut concrete: Vec<String> = Vec::new();
    for scope in &scopes {
        let parsed = parse_scope(scope)?;
        if !parsed.within(&manifest) {
            return Err(SpineError::PermissionDenied(format!(
                "scope \"{scope}\" is not declared by the manifest of {plugin} {}",
                manifest.version
            ))
            .into());
        }
        for c in expand(&parsed, &manifest) {
            if !concrete.contains(&c) {
                concrete.push(c);
            }
        }
    }
    let granted = returning_one::<i64>(
        "WITH added AS ( \
             INSERT INTO spine.consents (owner_id, plugin, scope) \
             SELECT $1, $2, s FROM unnest($3::text[]) AS s \
             ON CONFLICT (owner_id, plugin, scope) WHERE revoked_at IS NULL DO NOTHING \
             RETURNING scope) \
         SELECT count(*) FROM added",
        &[owner.into(), plugin.into(), concrete.clone().into()],
    )
    .map_err(internal("grant consent"))?
    .unwrap_or(0);
    if granted > 0 {
        audit::record(
            "consent.granted",
            Some(&format!("plugin:{plugin}")),
            json!({"owner": owner.to_string(), "version": manifest.version, "scopes": concrete}),
        )?;
    }
    Ok(granted)
}

/// Revokes `scopes` of `plugin` (`*`, `action:*`, concrete scopes; all when NULL)
/// for the current user (or `owner`, for service_role). Returns how many active
/// scopes were revoked.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_consent(
    plugin: Option<&str>,
    scopes: default!(Option<Vec<Option<String>>>, "NULL"),
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<i64, ErrorReport> {
    let plugin = plugin.ok_or(SpineError::NullArgument("plugin"))?;
    let requested = match scopes {
        None => vec!["*".to_string()],
        some => scope_list(some)?,
    };
    let parsed: Vec<Scope<'_>> = requested
        .iter()
        .map(|s| parse_scope(s))
        .collect::<Result<_, _>>()?;
    let owner = caller::acting_owner(owner, "consents")?;
    plugin_manifest(plugin)?;
    let revoked: Vec<String> = Spi::connect_mut(|client| {
        let active = client.update(
            "SELECT id, scope FROM spine.consents \
             WHERE owner_id = $1 AND plugin = $2 AND revoked_at IS NULL FOR UPDATE",
            None,
            &[owner.into(), plugin.into()],
        )?;
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for row in active {
            let (Some(id), Some(scope)) = (row.get::<i64>(1)?, row.get::<String>(2)?) else {
                continue;
            };
            let hit = parsed.iter().any(|p| match (p, Scope::parse(&scope)) {
                (Scope::Everything, _) => true,
                (Scope::Action(a, None), Ok(Scope::Action(b, _))) => *a == b,
                _ => requested.contains(&scope),
            });
            if hit {
                ids.push(id);
                names.push(scope);
            }
        }
        client.update(
            "UPDATE spine.consents SET revoked_at = now() WHERE id = ANY ($1)",
            None,
            &[ids.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(names)
    })
    .map_err(internal("revoke consent"))?;
    if !revoked.is_empty() {
        audit::record(
            "consent.revoked",
            Some(&format!("plugin:{plugin}")),
            json!({"owner": owner.to_string(), "scopes": revoked}),
        )?;
    }
    Ok(revoked.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_parse_and_allow() {
        let s = Scope::parse("secrets.read:TOKEN").unwrap();
        assert!(s.allows(Action::SecretsRead, "TOKEN"));
        assert!(!s.allows(Action::SecretsRead, "OTHER"));
        assert!(!s.allows(Action::NetworkFetch, "TOKEN"));
        let all_emits = Scope::parse("events.emit:*").unwrap();
        assert!(all_emits.allows(Action::EventsEmit, "sms.MessageSent"));
        assert!(!all_emits.allows(Action::SecretsRead, "TOKEN"));
        assert!(Scope::parse("*")
            .unwrap()
            .allows(Action::NetworkFetch, "x.org"));
        let domain = Scope::parse("events.emit:sms.*").unwrap();
        assert!(domain.allows(Action::EventsEmit, "sms.MessageSent"));
        assert!(!domain.allows(Action::EventsEmit, "mail.MessageSent"));
        for bad in ["", "secrets.read", "db.drop:x", "network.fetch:https://x"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_must_lie_within_the_manifest() {
        let m = Manifest::parse(json!({
            "name": "sms", "version": "1.0.0",
            "permissions": {"secrets": ["TOKEN"], "events": {"emit": ["sms.*"]}}
        }))
        .unwrap();
        assert!(Scope::parse("secrets.read:TOKEN").unwrap().within(&m));
        assert!(Scope::parse("events.emit:sms.*").unwrap().within(&m));
        assert!(Scope::parse("events.emit:sms.MessageSent")
            .unwrap()
            .within(&m));
        assert!(!Scope::parse("secrets.read:OTHER").unwrap().within(&m));
        assert!(!Scope::parse("events.emit:mail.*").unwrap().within(&m));
    }

    #[test]
    fn wildcards_expand_to_what_the_manifest_declares_now() {
        let m = Manifest::parse(json!({
            "name": "sms", "version": "1.0.0",
            "permissions": {"secrets": ["TOKEN"], "events": {"emit": ["sms.*"]}}
        }))
        .unwrap();
        assert_eq!(
            expand(&Scope::parse("*").unwrap(), &m),
            ["events.emit:sms.*", "secrets.read:TOKEN"]
        );
        assert_eq!(
            expand(&Scope::parse("secrets.read:*").unwrap(), &m),
            ["secrets.read:TOKEN"]
        );
        assert_eq!(
            expand(&Scope::parse("events.emit:sms.MessageSent").unwrap(), &m),
            ["events.emit:sms.MessageSent"]
        );
    }
}
